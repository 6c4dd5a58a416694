"""Customer-journey events: what happened to a follower, for journeys to react to (docs/events.md)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

SOURCE = "wxreach.webhook"


class JourneyDetailType(StrEnum):
    FOLLOWED = "Follower Followed"
    UNFOLLOWED = "Follower Unfollowed"
    SUBSCRIPTION_ACCEPTED = "Subscription Accepted"
    SUBSCRIPTION_REJECTED = "Subscription Rejected"
    SUBSCRIPTION_REVOKED = "Subscription Revoked"


class JourneyEvent(BaseModel):
    detail_type: JourneyDetailType
    appid: str
    openid: str
    occurred_at: datetime
    # Follow scene (qrscene), template id, popup scene...: documented per detail type.
    attributes: dict[str, Any] = {}

    def detail(self) -> dict[str, Any]:
        return {
            "schema_version": "1",
            "appid": self.appid,
            "openid": self.openid,
            "occurred_at": self.occurred_at.isoformat(),
            **self.attributes,
        }
