"""Journey actions: EventBridge events on the wxreach bus asking for one message (docs/events.md).

`SendTemplateMessage` and `SendSubscribeNotification` become a one-recipient batch whose origin
is the action's own id, so a redelivered or replayed action sends once.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from wxreach.reach.accounts import APPID_PATTERN
from wxreach.reach.messages import ORIGIN_ID_PATTERN, MessageBatch, Origin, OriginKind, Recipient
from wxreach.reach.rendering import MessageContent
from wxreach.wechat.identifiers import OPENID_PATTERN
from wxreach.wechat.keywords import Channel

ACTION_CHANNELS = {
    "SendTemplateMessage": Channel.TEMPLATE,
    "SendSubscribeNotification": Channel.SUBSCRIBE,
}


class JourneyAction(BaseModel):
    """The `detail` of a journey action event."""

    model_config = ConfigDict(extra="ignore")

    action_id: str = Field(pattern=ORIGIN_ID_PATTERN, description="Idempotency key of this action")
    appid: str = Field(pattern=APPID_PATTERN)
    openid: str = Field(pattern=OPENID_PATTERN)
    content: MessageContent
    params: dict[str, Any] = Field(default_factory=dict)


def is_journey_action(body: dict[str, Any]) -> bool:
    return "detail-type" in body and "detail" in body


def batch_from_journey_action(event: dict[str, Any]) -> MessageBatch:
    """ValueError (pydantic's) when the event is not a valid action."""
    channel = ACTION_CHANNELS.get(str(event.get("detail-type")))
    if channel is None:
        raise ValueError(f"not a journey action: {event.get('detail-type')!r}")
    action = JourneyAction.model_validate(event["detail"])
    return MessageBatch(
        appid=action.appid,
        channel=channel,
        origin=Origin(kind=OriginKind.JOURNEY, id=action.action_id),
        content=action.content,
        recipients=[Recipient(openid=action.openid, params=action.params)],
    )
