"""Journey events onto the custom EventBridge bus (schemas: docs/events.md)."""

from __future__ import annotations

import json

from wxreach.aws.clients import client
from wxreach.errors import WxReachError
from wxreach.reach.journey import JourneyEvent

# PutEvents takes at most 10 entries per call.
_PUT_EVENTS_MAX = 10


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
                        "Source": event.source,
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
