"""Follower state and subscription consent: the models and outcomes the registry speaks in.

WeChat may deliver callbacks late or out of order; the store (wxreach.aws.follower_store) makes
every write conditional on the event time, so an older event never overwrites a newer state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel


class WriteOutcome(StrEnum):
    APPLIED = "applied"
    REPLAYED = "replayed"  # this very event was applied before
    STALE = "stale"  # a newer decision is recorded; nothing changed


class SubscriptionKind(StrEnum):
    ONE_TIME = "one_time"
    LONG_TERM = "long_term"
    UNKNOWN = "unknown"


class SubscriptionStatus(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    REVOKED = "revoked"


class SubscriptionGrant(BaseModel):
    template_id: str
    status: SubscriptionStatus | str
    one_time_credits: int = 0
    long_term: bool = False
    updated_at: datetime | None = None


class Follower(BaseModel):
    appid: str
    openid: str
    # None: no follow/unfollow seen yet (the user followed before wxreach was connected).
    following: bool | None = None
    followed_at: datetime | None = None
    unfollowed_at: datetime | None = None
    scene: str | None = None
    last_interaction_at: datetime | None = None
    last_message_at: datetime | None = None
    subscriptions: list[SubscriptionGrant] = []


# -- follower listing (audiences) and tags -----------------------------------------------------
@dataclass(frozen=True)
class FollowerRow:
    """One follower as the sharded listing gives it (no grants: see CreditRow)."""

    openid: str
    following: bool | None = None
    followed_at: datetime | None = None
    unfollowed_at: datetime | None = None
    tags: frozenset[int] = frozenset()


@dataclass(frozen=True)
class CreditRow:
    """One subscription grant of a template. The index keeps grants whose credits are used up
    (or revoked): the caller skips rows with no one-time credit and no long-term grant. Follow
    state lives on the profile, not here."""

    openid: str
    one_time_credits: int = 0
    long_term: bool = False


class Tag(BaseModel):
    """A WeChat user tag (`/cgi-bin/tags/get`); `count` as WeChat last reported it."""

    id: int
    name: str
    count: int = 0
