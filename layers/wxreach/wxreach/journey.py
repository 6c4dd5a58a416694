"""Customer-journey events published to the custom EventBridge bus (schemas: docs/events.md)."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel

from wxreach.aws import client
from wxreach.errors import WxReachError

SOURCE = "wxreach.webhook"
# PutEvents takes at most 10 entries per call.
_PUT_EVENTS_MAX = 10


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


class JourneyPublisher(Protocol):
    def publish(self, events: list[JourneyEvent]) -> None: ...


class EventBridgeJourneyPublisher:
    def __init__(self, bus_name: str) -> None:
        self._bus = bus_name

    def publish(self, events: list[JourneyEvent]) -> None:
        for start in range(0, len(events), _PUT_EVENTS_MAX):
            chunk = events[start : start + _PUT_EVENTS_MAX]
            resp = client("events").put_events(
                Entries=[
                    {
                        "EventBusName": self._bus,
                        "Source": SOURCE,
                        "DetailType": str(event.detail_type),
                        "Time": event.occurred_at,
                        "Detail": json.dumps(event.detail(), ensure_ascii=False),
                    }
                    for event in chunk
                ]
            )
            if resp.get("FailedEntryCount"):
                # Raising makes WeChat redeliver; the state writes before this are idempotent.
                raise WxReachError("journey events were not all accepted", reason="journey_publish_failed")
