"""One message to one recipient on one channel, and the batch records the senders consume.

A message's id is derived from its origin (a single send, a journey action, a broadcast batch)
and its recipient, so every redelivery of the same request names the same ledger record; for
template messages it is also WeChat's `client_msg_id`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wxreach.reach.accounts import APPID_PATTERN
from wxreach.reach.rendering import MessageContent
from wxreach.wechat.identifiers import OPENID_PATTERN
from wxreach.wechat.keywords import Channel

ORIGIN_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
MESSAGE_ID_PATTERN = r"^m[0-9a-f]{31}$"
# Recipients of one batch record: sent concurrently by one invocation.
MAX_BATCH_RECIPIENTS = 100
MAX_PARAMS_BYTES = 8 * 1024


class MessageState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"  # WeChat accepted it (msgid); its delivery callback moves it on
    DELIVERED = "delivered"  # the delivery callback said so (the status updater)
    FAILED = "failed"
    SKIPPED = "skipped"  # a rule of ours decided not to send (not following, no credit, repeat guard)
    # Claimed by an instance that died during the WeChat call of a channel without an
    # idempotency key (bizsend): never resent; the status updater reconciles it.
    UNKNOWN = "unknown"


# Final for the senders: nothing more to send. SENT still waits for its delivery callback.
TERMINAL_STATES = frozenset(
    {
        MessageState.SENT,
        MessageState.DELIVERED,
        MessageState.FAILED,
        MessageState.SKIPPED,
        MessageState.UNKNOWN,
    }
)
# States a delivery outcome moves a SENT message to (each at most once).
DELIVERY_STATES = frozenset({MessageState.DELIVERED, MessageState.FAILED, MessageState.UNKNOWN})


class BroadcastClosed(Exception):
    """The message's broadcast is no longer sending (cancelled): it must not be claimed."""


class OriginKind(StrEnum):
    SINGLE = "single"  # POST /accounts/{appid}/messages
    JOURNEY = "journey"  # an EventBridge journey action
    BROADCAST = "broadcast"  # a batch of a broadcast (the splitter)


class Origin(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: OriginKind
    id: str = Field(pattern=ORIGIN_ID_PATTERN, description="Request, action or broadcast id")
    batch_id: str | None = Field(default=None, pattern=ORIGIN_ID_PATTERN)


class Recipient(BaseModel):
    model_config = ConfigDict(frozen=True)

    openid: str = Field(pattern=OPENID_PATTERN)
    params: dict[str, Any] = Field(default_factory=dict, description="Customer parameters for {{name}}")

    @field_validator("params")
    @classmethod
    def _bounded_text(cls, params: dict[str, Any]) -> dict[str, Any]:
        # Stored and queued as UTF-8 JSON: lone surrogates cannot be, and size is bounded.
        encoded = json.dumps(params, ensure_ascii=False).encode("utf-8")
        if len(encoded) > MAX_PARAMS_BYTES:
            raise ValueError(f"params are {len(encoded)} bytes as JSON, at most {MAX_PARAMS_BYTES}")
        return params


class MessageBatch(BaseModel):
    """A send-queue record: one content to up to MAX_BATCH_RECIPIENTS recipients."""

    schema_version: int = 1
    appid: str = Field(pattern=APPID_PATTERN)
    channel: Channel
    origin: Origin
    content: MessageContent
    recipients: list[Recipient] = Field(min_length=1, max_length=MAX_BATCH_RECIPIENTS)

    def message_id(self, openid: str) -> str:
        return message_id_for(self.appid, self.channel, self.origin, openid)


class Message(BaseModel):
    """The ledger's record of one message (docs/data-model.md)."""

    message_id: str
    appid: str
    channel: Channel
    openid: str
    template_id: str
    origin: Origin
    state: MessageState
    reason: str | None = Field(default=None, description="Why it failed or was skipped")
    detail: str | None = None
    wechat_msgid: str | None = None
    errcode: int | None = None
    attempts: int = 0
    values: dict[str, str] = Field(default_factory=dict, description="The keyword values as sent")
    maybe_sent: bool = Field(default=False, description="An attempt may have reached WeChat (timeout)")
    first_claimed_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    sent_at: datetime | None = None
    delivery_status: str | None = Field(default=None, description="WeChat's raw delivery status")
    delivered_at: datetime | None = Field(default=None, description="When the delivery outcome was recorded")


def message_id_for(appid: str, channel: Channel, origin: Origin, openid: str) -> str:
    """32 characters: a valid client_msg_id, the same for every redelivery of one request."""
    source = "\x1f".join((appid, str(channel), str(origin.kind), origin.id, origin.batch_id or "", openid))
    return "m" + hashlib.sha256(source.encode()).hexdigest()[:31]
