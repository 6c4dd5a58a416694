"""Broadcasts: one content to an audience on one channel (template, subscribe, mass), and their
lifecycle. The splitter (reach/splitting.py) turns a published broadcast into batches.

    draft ──publish(at)──► scheduled ──fires──► sending ──► sent | partially_sent | failed
      │                       │                    │
      └──────cancel───────────┴──────cancel────────┴──► cancelled
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from wxreach.reach.accounts import APPID_PATTERN
from wxreach.reach.messages import Recipient
from wxreach.reach.rendering import MessageContent

BROADCAST_ID_PATTERN = r"^b[0-9a-f]{20}$"
ORIGIN_KEY_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
MAX_INLINE_RECIPIENTS = 1000
# The broadcast record holds inline recipients: DynamoDB items stop at 400 KB.
MAX_INLINE_BYTES = 200 * 1024
MAX_NAME_CHARS = 120
S3_KEY_PATTERN = r"^[A-Za-z0-9!_.*'()/=-]{1,1024}$"
MEDIA_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
MAX_MASS_TEXT_BYTES = 2048  # WeChat's limit for text mass content (UNCONFIRMED, so generous)


class BroadcastChannel(StrEnum):
    TEMPLATE = "template"
    SUBSCRIBE = "subscribe"
    MASS = "mass"


class BroadcastState(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    SENT = "sent"
    PARTIALLY_SENT = "partially_sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


EDITABLE_STATES = frozenset({BroadcastState.DRAFT, BroadcastState.SCHEDULED})
FINAL_STATES = frozenset(
    {BroadcastState.SENT, BroadcastState.PARTIALLY_SENT, BroadcastState.FAILED, BroadcastState.CANCELLED}
)
# Final states that delivery outcomes arriving later may still refine (a mass job WeChat rejected
# in review); a cancelled broadcast keeps its cancel report.
OUTCOME_STATES = frozenset({BroadcastState.SENT, BroadcastState.PARTIALLY_SENT, BroadcastState.FAILED})


class AudienceKind(StrEnum):
    ALL = "all"  # every follower (mass: sendall is_to_all)
    TAG = "tag"  # a WeChat tag (mass: sendall tag_id)
    SEGMENT = "segment"  # openids inline, or an S3 object of JSON lines / CSV with params
    CREDIT_HOLDERS = "credit_holders"  # subscribe only: remaining credit or long-term grant


class SegmentFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


class SegmentObject(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str = Field(pattern=S3_KEY_PATTERN, description="Object key in the broadcast bucket")
    format: SegmentFormat = SegmentFormat.JSONL


class Audience(BaseModel):
    """Who receives a broadcast. A segment is `recipients` (inline) or `segment` (S3), never both;
    `credit_holders` may narrow a segment to those holding a credit."""

    model_config = ConfigDict(frozen=True)

    kind: AudienceKind
    tag_id: int | None = Field(default=None, ge=0, le=2**31)
    recipients: list[Recipient] | None = Field(default=None, min_length=1, max_length=MAX_INLINE_RECIPIENTS)
    segment: SegmentObject | None = None

    @model_validator(mode="after")
    def _shape(self) -> Audience:
        has_segment = self.recipients is not None or self.segment is not None
        if self.recipients is not None and self.segment is not None:
            raise ValueError("give recipients inline or a segment object, not both")
        if self.kind is AudienceKind.TAG and self.tag_id is None:
            raise ValueError("a tag audience needs tag_id")
        if self.kind is not AudienceKind.TAG and self.tag_id is not None:
            raise ValueError("tag_id belongs to a tag audience")
        if self.kind is AudienceKind.SEGMENT and not has_segment:
            raise ValueError("a segment audience needs recipients or a segment object")
        if self.kind in (AudienceKind.ALL, AudienceKind.TAG) and has_segment:
            raise ValueError(f"an audience of kind {self.kind} takes no recipients")
        if self.recipients is not None:
            size = sum(len(r.model_dump_json()) for r in self.recipients)
            if size > MAX_INLINE_BYTES:
                raise ValueError(
                    f"inline recipients take {size} bytes, at most {MAX_INLINE_BYTES}: use a segment"
                )
        return self

    @property
    def is_segment(self) -> bool:
        return self.recipients is not None or self.segment is not None


MassType = Literal["mpnews", "text", "image", "voice", "mpvideo"]


class MassContent(BaseModel):
    """A mass message: a draft article (mpnews), text, images, voice or video (§4.2)."""

    model_config = ConfigDict(frozen=True)

    msgtype: MassType
    media_id: str | None = Field(default=None, pattern=MEDIA_ID_PATTERN, description="mpnews/voice/mpvideo")
    text: str | None = Field(default=None, min_length=1, max_length=MAX_MASS_TEXT_BYTES)
    media_ids: list[str] | None = Field(default=None, min_length=1, max_length=20, description="image")
    title: str | None = Field(default=None, max_length=64)
    description: str | None = Field(default=None, max_length=120)
    recommend: str | None = Field(default=None, max_length=300)
    need_open_comment: bool = False
    only_fans_can_comment: bool = False
    send_ignore_reprint: bool = Field(
        default=False, description="Go on when an mpnews article is judged a reprint that allows it"
    )

    @model_validator(mode="after")
    def _payload_present(self) -> MassContent:
        needs = {"mpnews": "media_id", "voice": "media_id", "mpvideo": "media_id", "text": "text"}
        if self.msgtype == "image":
            if not self.media_ids:
                raise ValueError("an image mass message needs media_ids")
        elif getattr(self, needs[self.msgtype]) is None:
            raise ValueError(f"a {self.msgtype} mass message needs {needs[self.msgtype]}")
        if self.text is not None and len(self.text.encode("utf-8")) > MAX_MASS_TEXT_BYTES:
            raise ValueError(f"text is over {MAX_MASS_TEXT_BYTES} bytes")
        return self

    def wechat_body(self) -> dict[str, Any]:
        """The request body without touser / filter / clientmsgid."""
        payload: dict[str, Any]
        if self.msgtype == "text":
            payload = {"content": self.text}
        elif self.msgtype == "image":
            payload = {
                "media_ids": list(self.media_ids or []),
                "need_open_comment": int(self.need_open_comment),
                "only_fans_can_comment": int(self.only_fans_can_comment),
            }
            if self.recommend:
                payload["recommend"] = self.recommend
        elif self.msgtype == "mpvideo":
            payload = {"media_id": self.media_id}
            payload.update({k: v for k, v in (("title", self.title), ("description", self.description)) if v})
        else:
            payload = {"media_id": self.media_id}
            if self.msgtype == "mpnews":
                payload["need_open_comment"] = int(self.need_open_comment)
                payload["only_fans_can_comment"] = int(self.only_fans_can_comment)
        name = "images" if self.msgtype == "image" else self.msgtype
        return {
            "msgtype": self.msgtype,
            name: payload,
            "send_ignore_reprint": int(self.send_ignore_reprint),
        }


class BroadcastInput(BaseModel):
    """What an operator writes: create takes all of it, edit any subset (see BroadcastEdit)."""

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    channel: BroadcastChannel
    audience: Audience
    content: MessageContent | None = Field(default=None, description="template / subscribe channels")
    mass: MassContent | None = Field(default=None, description="mass channel")

    @model_validator(mode="after")
    def _consistent(self) -> BroadcastInput:
        check_shape(self.channel, self.audience, self.content, self.mass)
        return self


class BroadcastEdit(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_CHARS)
    audience: Audience | None = None
    content: MessageContent | None = None
    mass: MassContent | None = None
    scheduled_at: datetime | None = Field(default=None, description="Move a scheduled broadcast")


def check_shape(
    channel: BroadcastChannel, audience: Audience, content: MessageContent | None, mass: MassContent | None
) -> None:
    if channel is BroadcastChannel.MASS:
        if mass is None or content is not None:
            raise ValueError("a mass broadcast takes `mass` content, not `content`")
    elif content is None or mass is not None:
        raise ValueError(f"a {channel} broadcast takes `content` (template id and values), not `mass`")
    if audience.kind is AudienceKind.CREDIT_HOLDERS and channel is not BroadcastChannel.SUBSCRIBE:
        raise ValueError("credit_holders audiences are for subscription notifications")


class SplitProgress(BaseModel):
    """What the splitter has done so far (its checkpoint, as operators see it)."""

    state: Literal["pending", "running", "paused", "done"] = "pending"
    recipients: int = Field(default=0, description="Recipients put in batches")
    batches: int = 0
    excluded: dict[str, int] = Field(default_factory=dict, description="Dropped recipients by reason")
    deferred: int = Field(default=0, description="Waiting for tomorrow's daily cap")
    paused_until: datetime | None = None
    runs: int = 0
    finished_at: datetime | None = None


class CancelReport(BaseModel):
    """sent + failed + not_sent = the broadcast's audience at the cancel."""

    cancelled_at: datetime
    sent: int = Field(description="Recipients whose send reached WeChat before the cancel")
    failed: int = Field(default=0, description="Recipients WeChat refused before the cancel")
    not_sent: int = Field(description="Recipients that will never be sent")
    in_flight: int = Field(default=0, description="Sends that were on the wire at the cancel")


class DeletedArticle(BaseModel):
    msg_id: str
    article_idx: int
    deleted_at: datetime
    by: str


class Broadcast(BaseModel):
    id: str = Field(pattern=BROADCAST_ID_PATTERN)
    appid: str = Field(pattern=APPID_PATTERN)
    name: str
    channel: BroadcastChannel
    audience: Audience
    content: MessageContent | None = None
    mass: MassContent | None = None
    state: BroadcastState = BroadcastState.DRAFT
    version: int = 1
    scheduled_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    created_by: str
    published_at: datetime | None = None
    published_by: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outcomes_final_at: datetime | None = Field(
        default=None,
        description="When every delivery outcome was known (no callback or mass job result awaited)",
    )
    cancel: CancelReport | None = None
    confirmed_count: int | None = Field(default=None, description="The estimate the publisher confirmed")
    split: SplitProgress = Field(default_factory=SplitProgress)
    failure: str | None = Field(default=None, description="Why the broadcast failed as a whole")
    deleted_articles: list[DeletedArticle] = Field(default_factory=list)

    @property
    def template_id(self) -> str | None:
        return self.content.template_id if self.content else None


class AuditEntry(BaseModel):
    at: datetime
    actor: str = Field(description="The IAM caller (user ARN) or the scheduler")
    action: Literal["create", "edit", "publish", "schedule", "cancel", "delete", "confirm", "delete_article"]
    changes: dict[str, Any] = Field(default_factory=dict)


def new_broadcast_id(appid: str, request_key: str) -> str:
    return "b" + hashlib.sha256(f"{appid}\x1f{request_key}".encode()).hexdigest()[:20]
