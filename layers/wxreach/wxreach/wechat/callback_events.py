"""Typed WeChat callback events (reference §2.4, §3.3, §4.3, §4.4, §5.2, §5.3).

`parse_event` takes the dict from `parse_callback_xml`. Status strings WeChat may extend are kept
raw and interpreted by properties, so a new value never fails parsing; every field as received
stays in `raw`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from wxreach.errors import InvalidInput, MalformedCallback
from wxreach.wechat.identifiers import (
    MAX_EVENT_NAME_LENGTH,
    MESSAGE_ID_PATTERN,
    OPENID_PATTERN,
    TEMPLATE_ID_PATTERN,
    parse_unix_seconds,
)


class EventKind(StrEnum):
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    SCAN = "scan"
    SUBSCRIBE_MSG_POPUP = "subscribe_msg_popup"
    SUBSCRIBE_MSG_CHANGE = "subscribe_msg_change"
    SUBSCRIBE_MSG_SENT = "subscribe_msg_sent"
    TEMPLATE_SEND_JOB_FINISH = "template_send_job_finish"
    MASS_SEND_JOB_FINISH = "mass_send_job_finish"
    PUBLISH_JOB_FINISH = "publish_job_finish"
    USER_MESSAGE = "user_message"
    UNKNOWN = "unknown"


class SubscribeDecision(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    UNKNOWN = "unknown"


class MassSendOutcome(StrEnum):
    SENT = "sent"  # "send success": the job ran; some users may still have failed
    SEND_FAILED = "send_failed"
    REVIEW_FAILED = "review_failed"  # "err(N)"
    UNKNOWN = "unknown"


# Most <List> items one subscription event may carry (more is refused with 400 too_many_items).
# A popup offers at most 5 templates per subscribe component (reference §3); a settings change
# and a delivery report are not documented, so their bounds are generous.
MAX_POPUP_ITEMS = 5
MAX_CHANGE_ITEMS = 20
MAX_SENT_ITEMS = 50
# WeChat's own bounds: a QR scene_str is 1-64 characters, a menu key at most 128 bytes.
MAX_EVENT_KEY_LENGTH = 128

USER_MESSAGE_TYPES = frozenset({"text", "image", "voice", "video", "shortvideo", "location", "link"})

_REVIEW_ERROR = re.compile(r"\s*err\(\s*(-?\d+)\s*\)\s*", re.IGNORECASE)
_FAILED_PREFIX = re.compile(r"\s*failed\s*:?\s*", re.IGNORECASE)


def _blank_to_none(value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value


def _blank_to_zero(value: Any) -> Any:
    return 0 if _blank_to_none(value) is None else value


def _int_or_none(value: Any) -> int | None:
    # For informational numbers (PopupScene, ArticleIdx) a garbled value must not reject the callback.
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _as_items(container: Any, key: str) -> list[dict[str, Any]]:
    """The `key` children of a container, one or many, skipping empty elements."""
    if not isinstance(container, Mapping):
        return []
    items = container.get(key)
    if isinstance(items, Mapping):
        items = [items]
    if not isinstance(items, list):
        return []
    return [dict(item) for item in items if isinstance(item, Mapping)]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


OptionalText = Annotated[str | None, BeforeValidator(_blank_to_none)]
Count = Annotated[int, BeforeValidator(_blank_to_zero)]
LenientInt = Annotated[int | None, BeforeValidator(_int_or_none)]
UnixSeconds = Annotated[int, BeforeValidator(parse_unix_seconds)]
OpenId = Annotated[str, Field(pattern=OPENID_PATTERN)]
TemplateId = Annotated[str, Field(pattern=TEMPLATE_ID_PATTERN)]
MessageId = Annotated[str, Field(pattern=MESSAGE_ID_PATTERN)]
_MSG_ID = AliasChoices("MsgID", "MsgId")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, coerce_numbers_to_str=True)


class CallbackEvent(_Model):
    """Fields every push carries; subclasses add the ones of their type."""

    KIND: ClassVar[EventKind] = EventKind.UNKNOWN

    # Observed empty on MASSSENDJOBFINISH (reference §4.3).
    to_user_name: str = Field(default="", validation_alias="ToUserName")
    from_user_name: OpenId = Field(validation_alias="FromUserName")
    create_time: UnixSeconds = Field(validation_alias="CreateTime")
    msg_type: str = Field(validation_alias="MsgType", min_length=1, max_length=MAX_EVENT_NAME_LENGTH)
    event: str = Field(default="", validation_alias="Event", max_length=MAX_EVENT_NAME_LENGTH)
    raw: dict[str, Any] = Field(default_factory=dict)

    @property
    def kind(self) -> EventKind:
        return self.KIND

    @property
    def openid(self) -> str:
        return self.from_user_name

    @property
    def dedupe_key(self) -> str:
        """Key under which a WeChat retry of this push is recognised (§5.3).

        WeChat's advice (FromUserName + CreateTime) merges two different events of one user in
        the same second (two popups answered quickly); a retry repeats the whole body, so a
        digest of the fields keeps retries equal and tells distinct events apart.
        """
        digest = hashlib.sha256(json.dumps(self.raw, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        return f"evt:{self.from_user_name}:{self.create_time}:{self.event}:{digest[:16]}"


class SubscribeEvent(CallbackEvent):
    KIND: ClassVar[EventKind] = EventKind.SUBSCRIBE

    event_key: str = Field(default="", validation_alias="EventKey", max_length=MAX_EVENT_KEY_LENGTH)
    ticket: OptionalText = Field(default=None, validation_alias="Ticket")

    @property
    def scene(self) -> str | None:
        """The QR scene when the user followed through a parametric QR code."""
        prefix = "qrscene_"
        return self.event_key[len(prefix) :] if self.event_key.startswith(prefix) else None


class UnsubscribeEvent(CallbackEvent):
    KIND: ClassVar[EventKind] = EventKind.UNSUBSCRIBE


class ScanEvent(CallbackEvent):
    """An existing follower scanned a parametric QR code."""

    KIND: ClassVar[EventKind] = EventKind.SCAN

    event_key: str = Field(default="", validation_alias="EventKey", max_length=MAX_EVENT_KEY_LENGTH)
    ticket: OptionalText = Field(default=None, validation_alias="Ticket")

    @property
    def scene(self) -> str:
        return self.event_key


class _SubscribeItem(_Model):
    template_id: TemplateId = Field(validation_alias="TemplateId")


class PopupSubscription(_SubscribeItem):
    status: str = Field(validation_alias="SubscribeStatusString")
    popup_scene: LenientInt = Field(default=None, validation_alias="PopupScene")  # 1 = H5 page, 2 = article

    @property
    def decision(self) -> SubscribeDecision:
        return _decision(self.status)


class SubscriptionChange(_SubscribeItem):
    status: str = Field(validation_alias="SubscribeStatusString")

    @property
    def decision(self) -> SubscribeDecision:
        return _decision(self.status)


class SubscribeMsgDelivery(_SubscribeItem):
    msg_id: MessageId = Field(validation_alias=_MSG_ID)
    error_code: int = Field(validation_alias="ErrorCode")
    error_status: str = Field(default="", validation_alias="ErrorStatus")

    @property
    def delivered(self) -> bool:
        return self.error_code == 0


def _decision(status: str) -> SubscribeDecision:
    try:
        return SubscribeDecision(status.strip().lower())
    except ValueError:
        return SubscribeDecision.UNKNOWN


class _SubscribeMsgEvent(CallbackEvent):
    """The three subscription events share a container of one or more <List> items."""

    CONTAINER: ClassVar[str]

    @model_validator(mode="before")
    @classmethod
    def _unwrap_items(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "items" not in data:
            return {**data, "items": _as_items(data.get(cls.CONTAINER), "List")}
        return data


class SubscribeMsgPopupEvent(_SubscribeMsgEvent):
    KIND: ClassVar[EventKind] = EventKind.SUBSCRIBE_MSG_POPUP
    CONTAINER: ClassVar[str] = "SubscribeMsgPopupEvent"

    items: list[PopupSubscription] = Field(max_length=MAX_POPUP_ITEMS)


class SubscribeMsgChangeEvent(_SubscribeMsgEvent):
    KIND: ClassVar[EventKind] = EventKind.SUBSCRIBE_MSG_CHANGE
    CONTAINER: ClassVar[str] = "SubscribeMsgChangeEvent"

    items: list[SubscriptionChange] = Field(max_length=MAX_CHANGE_ITEMS)


class SubscribeMsgSentEvent(_SubscribeMsgEvent):
    KIND: ClassVar[EventKind] = EventKind.SUBSCRIBE_MSG_SENT
    CONTAINER: ClassVar[str] = "SubscribeMsgSentEvent"

    items: list[SubscribeMsgDelivery] = Field(max_length=MAX_SENT_ITEMS)


class _JobFinishEvent(CallbackEvent):
    msg_id: MessageId = Field(validation_alias=_MSG_ID)
    status: str = Field(validation_alias="Status")

    @property
    def dedupe_key(self) -> str:
        return f"job:{self.event.upper()}:{self.msg_id}"


class TemplateSendJobFinishEvent(_JobFinishEvent):
    KIND: ClassVar[EventKind] = EventKind.TEMPLATE_SEND_JOB_FINISH

    @property
    def delivered(self) -> bool:
        return self.status.strip() == "success"

    @property
    def failure_reason(self) -> str | None:
        """`user block` for `failed:user block`; an unrecognised status is its own reason."""
        if self.delivered:
            return None
        match = _FAILED_PREFIX.match(self.status)
        if match is None:
            return self.status
        return self.status[match.end() :].strip() or None


class ArticleUrl(_Model):
    idx: LenientInt = None
    url: str = ""


class MassSendJobFinishEvent(_JobFinishEvent):
    KIND: ClassVar[EventKind] = EventKind.MASS_SEND_JOB_FINISH

    total_count: Count = Field(default=0, validation_alias="TotalCount")
    filter_count: Count = Field(default=0, validation_alias="FilterCount")
    sent_count: Count = Field(default=0, validation_alias="SentCount")
    error_count: Count = Field(default=0, validation_alias="ErrorCount")
    copyright_check: dict[str, Any] | None = None
    article_urls: list[ArticleUrl] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _unwrap_results(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        extra: dict[str, Any] = {}
        if "copyright_check" not in data:
            check = data.get("CopyrightCheckResult")
            extra["copyright_check"] = dict(check) if isinstance(check, Mapping) else None
        if "article_urls" not in data:
            result = data.get("ArticleUrlResult")
            result_list = result.get("ResultList") if isinstance(result, Mapping) else None
            extra["article_urls"] = [
                {"idx": item.get("ArticleIdx"), "url": item.get("ArticleUrl") or ""}
                for item in _as_items(result_list, "item")
            ]
        return {**data, **extra}

    @property
    def review_error_code(self) -> int | None:
        """N of an `err(N)` status: the content review refused the broadcast."""
        match = _REVIEW_ERROR.fullmatch(self.status)
        return int(match.group(1)) if match else None

    @property
    def outcome(self) -> MassSendOutcome:
        normalised = " ".join(self.status.lower().split())
        if normalised == "send success":
            return MassSendOutcome.SENT
        if normalised == "send fail":
            return MassSendOutcome.SEND_FAILED
        if self.review_error_code is not None:
            return MassSendOutcome.REVIEW_FAILED
        return MassSendOutcome.UNKNOWN


class PublishJobFinishEvent(CallbackEvent):
    """PUBLISHJOBFINISH, also seen as FREEPUBLISHJOBFINISH (§4.4)."""

    KIND: ClassVar[EventKind] = EventKind.PUBLISH_JOB_FINISH

    publish_id: MessageId
    publish_status: int  # 0 ok, 1 publishing, 2 originality, 3 regular fail, 4 review, 5/6 deleted/banned
    article_id: OptionalText = None
    article_urls: list[ArticleUrl] = Field(default_factory=list)
    fail_idx: list[int] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _unwrap_info(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or "publish_id" in data:
            return data
        info = data.get("PublishEventInfo")
        if not isinstance(info, Mapping):
            return data  # publish_id then reports as missing
        return {
            **data,
            "publish_id": info.get("publish_id"),
            "publish_status": info.get("publish_status"),
            "article_id": info.get("article_id"),
            "article_urls": [
                {"idx": item.get("idx"), "url": item.get("article_url") or ""}
                for item in _as_items(info.get("article_detail"), "item")
            ],
            "fail_idx": [idx for idx in map(_int_or_none, _as_list(info.get("fail_idx"))) if idx is not None],
        }

    @property
    def published(self) -> bool:
        return self.publish_status == 0

    @property
    def dedupe_key(self) -> str:
        return f"publish:{self.publish_id}"


class UserMessage(CallbackEvent):
    """A message the follower sent; type-specific fields (PicUrl, MediaId, Location_X...) stay in raw."""

    KIND: ClassVar[EventKind] = EventKind.USER_MESSAGE

    msg_id: MessageId = Field(validation_alias=_MSG_ID)
    content: str | None = Field(default=None, validation_alias="Content")

    @property
    def dedupe_key(self) -> str:
        return f"msg:{self.msg_id}"


class UnknownEvent(CallbackEvent):
    """An Event or MsgType this code does not know yet; kept whole in raw for reporting."""

    KIND: ClassVar[EventKind] = EventKind.UNKNOWN

    @property
    def dedupe_key(self) -> str:
        msg_id = self.raw.get("MsgId") or self.raw.get("MsgID")
        if self.msg_type.lower() != "event" and isinstance(msg_id, str) and msg_id:
            return f"msg:{msg_id}"
        return super().dedupe_key


_EVENT_MODELS: dict[str, type[CallbackEvent]] = {
    "subscribe": SubscribeEvent,
    "unsubscribe": UnsubscribeEvent,
    "scan": ScanEvent,
    "subscribe_msg_popup_event": SubscribeMsgPopupEvent,
    "subscribe_msg_change_event": SubscribeMsgChangeEvent,
    "subscribe_msg_sent_event": SubscribeMsgSentEvent,
    "templatesendjobfinish": TemplateSendJobFinishEvent,
    "masssendjobfinish": MassSendJobFinishEvent,
    "publishjobfinish": PublishJobFinishEvent,
    "freepublishjobfinish": PublishJobFinishEvent,
}


def _model_for(fields: Mapping[str, Any]) -> type[CallbackEvent]:
    msg_type = fields.get("MsgType")
    if not isinstance(msg_type, str):
        return UnknownEvent  # validation then reports MsgType
    msg_type = msg_type.strip().lower()
    if msg_type == "event":
        event = fields.get("Event")
        name = event.strip().lower() if isinstance(event, str) else ""
        return _EVENT_MODELS.get(name, UnknownEvent)
    return UserMessage if msg_type in USER_MESSAGE_TYPES else UnknownEvent


def _detached(value: Any) -> Any:
    """copy.deepcopy for what parse_callback_xml produces (str, dict, list) at a fraction of its cost."""
    kind = type(value)
    if kind is dict:
        return {key: item if type(item) is str else _detached(item) for key, item in value.items()}
    if kind is list:
        return [item if type(item) is str else _detached(item) for item in value]
    return value if kind is str else copy.deepcopy(value)


# Fields whose malformed value is refused (400) rather than kept as an unparsed callback: they
# become parts of keys or decide ordering, and WeChat never sends them in another shape.
_REFUSED_FIELDS = {
    "FromUserName": "invalid_openid",
    "CreateTime": "bad_create_time",
    "MsgType": "invalid_event_name",
    "Event": "invalid_event_name",
    "EventKey": "invalid_event_key",
    "TemplateId": "invalid_template_id",
    "MsgID": "invalid_msg_id",
    "MsgId": "invalid_msg_id",
    "publish_id": "invalid_msg_id",
    "items": "too_many_items",
}


def parse_event(fields: Mapping[str, Any]) -> CallbackEvent:
    """Classify and validate a parsed callback.

    A present but malformed identifier raises InvalidInput (400, reason per field); anything else
    unusable raises MalformedCallback(reason="invalid_event").
    """
    model = _model_for(fields)
    # raw must not change when the caller later mutates its fields.
    raw = {key: item if type(item) is str else _detached(item) for key, item in fields.items()}
    try:
        return model.model_validate({**fields, "raw": raw})
    except ValidationError as exc:
        errors = exc.errors()
        # Locations and error types only: input values may hold openids.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['type']}" for error in errors
        )
        for error in errors:
            names = [part for part in error["loc"] if isinstance(part, str)]
            reason = _REFUSED_FIELDS.get(names[-1]) if names else None
            # Absent or empty stays "invalid_event" (kept unparsed); present but malformed is refused.
            if reason is not None and error["type"] != "missing" and error.get("input") != "":
                raise InvalidInput(f"{model.__name__} callback refused ({problems})", reason=reason) from exc
        raise MalformedCallback(
            f"{model.__name__} callback is invalid ({problems})", reason="invalid_event"
        ) from exc
