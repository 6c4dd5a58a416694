"""Customer-journey events: what happened to a follower, for journeys to react to (docs/events.md)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

SOURCE = "wxreach.webhook"
DELIVERY_SOURCE = "wxreach.status"  # outcomes of sends, from the status updater and reconciler


class JourneyDetailType(StrEnum):
    FOLLOWED = "Follower Followed"
    UNFOLLOWED = "Follower Unfollowed"
    SUBSCRIPTION_ACCEPTED = "Subscription Accepted"
    SUBSCRIPTION_REJECTED = "Subscription Rejected"
    SUBSCRIPTION_REVOKED = "Subscription Revoked"
    MESSAGE_DELIVERED = "MessageDelivered"
    MESSAGE_FAILED = "MessageFailed"
    BROADCAST_FINISHED = "BroadcastFinished"


class JourneyEvent(BaseModel):
    detail_type: JourneyDetailType
    appid: str
    openid: str | None = None  # None for account-level events (BroadcastFinished)
    occurred_at: datetime
    source: str = SOURCE
    # Follow scene (qrscene), template id, popup scene...: documented per detail type.
    attributes: dict[str, Any] = {}

    def detail(self) -> dict[str, Any]:
        return {
            "schema_version": "1",
            "appid": self.appid,
            **({"openid": self.openid} if self.openid is not None else {}),
            "occurred_at": self.occurred_at.isoformat(),
            **self.attributes,
        }
