"""What to send, and how it becomes one recipient's WeChat request body.

A `MessageContent` is written once for many recipients: its values may hold customer parameters,
`{{name}}` or dotted `{{order.no}}`, filled from each recipient's `params`. `render` fills them and
checks every value against the template's keyword rules (wxreach.wechat.keywords), so a value
WeChat would refuse fails that recipient, with a reason, before any call.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wxreach.reach.templates import Template
from wxreach.wechat.identifiers import OPENID_PATTERN, TEMPLATE_ID_PATTERN
from wxreach.wechat.keywords import Channel, check_keyword, warnings_for_key

KEYWORD_KEY_PATTERN = r"^[a-z_]+\d+$"
MINIPROGRAM_APPID_PATTERN = r"^wx[0-9A-Za-z]{16}$"
JUMP_URL_PATTERN = r"^https?://[^\s\x00-\x1f\x7f]+$"
MAX_KEYWORDS = 20  # templates hold at most 5 today; room without unbounded records
# Raw values may be longer than the 20-32 characters WeChat allows: placeholders shrink or grow
# when filled, and the final value is checked per recipient.
MAX_RAW_VALUE_CHARS = 1000
MAX_URL_CHARS = 2048
MAX_PAGEPATH_CHARS = 1024
ENUMERATED_TYPES = frozenset({"const", "enum"})

# `{{ name }}`, `{{order.no}}`; WeChat's own `{{thing1.DATA}}` is excluded where it is matched.
_PARAM = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*\}\}")
_WECHAT_PLACEHOLDER = re.compile(r"[A-Za-z_]+\d*\.DATA")

Value = str | int | float


class MiniProgram(BaseModel):
    model_config = ConfigDict(frozen=True)

    appid: str = Field(pattern=MINIPROGRAM_APPID_PATTERN, examples=["wx1234567890abcdef"])
    pagepath: str = Field(default="", max_length=MAX_PAGEPATH_CHARS, pattern=r"^[^\s\x00-\x1f\x7f]*$")


class MessageContent(BaseModel):
    """Template id, keyword values and jump target; the same for every recipient of a send."""

    model_config = ConfigDict(frozen=True)

    template_id: str = Field(pattern=TEMPLATE_ID_PATTERN)
    data: dict[str, Value] = Field(
        min_length=1,
        max_length=MAX_KEYWORDS,
        description="Keyword values by key (thing1...); strings may hold {{param}} placeholders",
        examples=[{"thing1": "{{product}}", "character_string2": "{{order.no}}"}],
    )
    url: str | None = Field(
        default=None, max_length=MAX_URL_CHARS, pattern=JUMP_URL_PATTERN, description="Template jump"
    )
    page: str | None = Field(
        default=None, max_length=MAX_URL_CHARS, pattern=JUMP_URL_PATTERN, description="Subscription jump"
    )
    miniprogram: MiniProgram | None = None

    @field_validator("data", mode="before")
    @classmethod
    def _values_are_text_or_numbers(cls, data: Any) -> Any:
        # Before pydantic's coercion, which would take True as 1.
        if not isinstance(data, Mapping):
            return data
        for key, value in data.items():
            if not isinstance(key, str) or not re.fullmatch(KEYWORD_KEY_PATTERN, key):
                raise ValueError(f"{key!r}: keyword keys look like thing1 or character_string2")
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise ValueError(f"{key}: a value is text or a number")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{key}: not a finite number")
            if isinstance(value, str) and len(value) > MAX_RAW_VALUE_CHARS:
                raise ValueError(f"{key}: at most {MAX_RAW_VALUE_CHARS} characters")
        return data


class JumpTarget(BaseModel):
    """Where tapping the card leads. A mini program wins over a web page (reference §2.1, §3.2);
    template messages keep the url as the fallback for clients without mini programs."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["miniprogram", "url", "none"]
    url: str | None = None
    miniprogram: MiniProgram | None = None


class Rendering(BaseModel):
    """One recipient's content: the final values and everything that stops or concerns its send."""

    data: dict[str, str]
    violations: list[str] = Field(default_factory=list)
    missing_params: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    jump: JumpTarget

    @property
    def ok(self) -> bool:
        return not self.violations and not self.missing_params


def jump_target(content: MessageContent, channel: Channel) -> tuple[JumpTarget, list[str]]:
    """The jump of `content` on `channel`, and warnings for fields that channel ignores."""
    warnings: list[str] = []
    if channel is Channel.TEMPLATE:
        link = content.url
        if content.page is not None:
            warnings.append("page is for subscription notifications; template messages jump to url")
    else:
        link = content.page
        if content.url is not None:
            warnings.append("url is for template messages; subscription notifications jump to page")
    if content.miniprogram is not None:
        if channel is Channel.SUBSCRIBE and link is not None:
            warnings.append("page ignored: the mini program wins")
            link = None
        return JumpTarget(kind="miniprogram", url=link, miniprogram=content.miniprogram), warnings
    if link is not None:
        return JumpTarget(kind="url", url=link), warnings
    return JumpTarget(kind="none"), warnings


def render(
    content: MessageContent, template: Template, channel: Channel, params: Mapping[str, Any]
) -> Rendering:
    """Fill the customer parameters of `content` from `params` and check the result.

    Never raises for a recipient's data: a parameter `params` lacks (or holds null) lands in
    `missing_params`, a broken keyword rule in `violations`. Keys the content has but the template
    lacks are warnings only (WeChat drops them).
    """
    violations: list[str] = []
    missing: list[str] = []
    jump, warnings = jump_target(content, channel)
    if template.template_id != content.template_id:
        violations.append(f"content is for template {content.template_id}, not {template.template_id}")
    if template.channel != channel:
        violations.append(f"template {template.template_id} is a {template.channel} template, not {channel}")

    data: dict[str, str] = {}
    incomplete: set[str] = set()
    for key, raw in content.data.items():
        value, value_missing, value_problems = _fill(key, raw, params)
        data[key] = value
        violations.extend(value_problems)
        for name in value_missing:
            if name not in missing:
                missing.append(name)
        if value_missing or value_problems:
            incomplete.add(key)
        if isinstance(raw, str):
            warnings.extend(
                f"{key}: {literal} is WeChat's template syntax, not a parameter; sent as it is"
                for literal in _wechat_placeholders(raw)
            )

    for keyword in template.keywords:
        if keyword.name in incomplete:
            continue  # already failed; checking a half-filled value would only add noise
        value = data.get(keyword.name, "")
        enum: tuple[str, ...] | list[str] = keyword.enum
        if keyword.type in ENUMERATED_TYPES and not keyword.enum:
            enum = (value,)  # not supplied by the operator: check everything but membership
            warnings.append(f"{keyword.name}: allowed values unknown; not checked")
        problem = check_keyword(keyword.name, value, channel, enum=enum)
        if problem is not None:
            violations.append(problem)
        note = warnings_for_key(keyword.name)
        if note is not None:
            warnings.append(note)
    for key in data:
        if template.keyword(key) is None:
            warnings.append(f"{key}: not a keyword of template {template.template_id}; WeChat drops it")
    return Rendering(data=data, violations=violations, missing_params=missing, warnings=warnings, jump=jump)


def wechat_payload(
    openid: str,
    content: MessageContent,
    rendering: Rendering,
    channel: Channel,
    *,
    client_msg_id: str | None = None,
) -> dict[str, Any]:
    """The JSON body of /cgi-bin/message/template/send (§2.1) or /cgi-bin/message/subscribe/bizsend
    (§3.2). bizsend has no idempotency key: `client_msg_id` is left out there. ValueError when the
    rendering must not be sent (a programming error: the caller checks `rendering.ok`)."""
    if not rendering.ok:
        raise ValueError("this rendering has violations or missing parameters; it cannot be sent")
    if not re.fullmatch(OPENID_PATTERN, openid):
        raise ValueError("not an openid")
    body: dict[str, Any] = {"touser": openid, "template_id": content.template_id}
    jump = rendering.jump
    if jump.url is not None:
        body["url" if channel is Channel.TEMPLATE else "page"] = jump.url
    if jump.miniprogram is not None:
        miniprogram = {"appid": jump.miniprogram.appid}
        if jump.miniprogram.pagepath:
            miniprogram["pagepath"] = jump.miniprogram.pagepath
        body["miniprogram"] = miniprogram
    if channel is Channel.TEMPLATE and client_msg_id is not None:
        body["client_msg_id"] = client_msg_id
    body["data"] = {key: {"value": value} for key, value in rendering.data.items()}
    return body


def content_digest(template_id: str, data: Mapping[str, str]) -> str:
    """16 hex characters over the template and its final values, independent of key order: the
    repeat guard's "same template, same content"."""
    canonical = json.dumps([template_id, sorted(data.items())], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def parameter_text(value: Any) -> str | None:
    """A parameter as keyword text: strings as they are, numbers (and booleans) as their JSON
    text; None for what has no text form (objects, lists, NaN)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int):
        return json.dumps(value)
    if isinstance(value, float):
        return json.dumps(value) if math.isfinite(value) else None
    return None


_ABSENT = object()


def _lookup(params: Mapping[str, Any], path: str) -> Any:
    node: Any = params
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _wechat_placeholders(raw: str) -> list[str]:
    return [match.group(0) for match in _PARAM.finditer(raw) if _WECHAT_PLACEHOLDER.fullmatch(match.group(1))]


def _fill(key: str, raw: Value, params: Mapping[str, Any]) -> tuple[str, list[str], list[str]]:
    """(final text, missing parameter names, problems) of one value."""
    if not isinstance(raw, str):
        return parameter_text(raw) or "", [], []
    missing: list[str] = []
    problems: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        path = match.group(1)
        if _WECHAT_PLACEHOLDER.fullmatch(path):
            return match.group(0)
        found = _lookup(params, path)
        if found is _ABSENT or found is None:
            missing.append(path)
            return match.group(0)
        text = parameter_text(found)
        if text is None:
            problems.append(f"{key}: parameter {path} is {_kind_of(found)}, not text or a number")
            return match.group(0)
        return text

    # re.sub does not rescan what it inserts: a parameter holding "{{x}}" stays literal.
    return _PARAM.sub(substitute, raw), missing, problems


def _kind_of(value: Any) -> str:
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, float):
        return "not a finite number"
    return f"a {type(value).__name__}"
