"""Templates an account may send: template messages (§2.2) and subscription notifications (§3.1).

WeChat describes a template by its `content`, a text with one `{{thing1.DATA}}` placeholder per
keyword; the key names the keyword and its prefix the value type (wxreach.wechat.keywords).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from wxreach.reach.followers import SubscriptionKind
from wxreach.wechat.identifiers import TEMPLATE_ID_PATTERN
from wxreach.wechat.keywords import Channel, keyword_type

# Only numbered keys are keywords: the legacy `{{first.DATA}}` / `{{remark.DATA}}` that old
# template contents still show are dropped by WeChat since 2023 (reference §2.1).
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+\d+)\.DATA\s*\}\}")
_LABEL_TRAILER = " \t:："
# gettemplate's `type` (reference §3.1).
_SUBSCRIPTION_TYPES = {2: SubscriptionKind.ONE_TIME, 3: SubscriptionKind.LONG_TERM}


class TemplateKeyword(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[a-z_]+\d+$", max_length=64, examples=["thing1"])
    type: str = Field(examples=["thing"])
    known_type: bool
    label: str = Field(default="", max_length=64, examples=["商品名称"])
    # Allowed values of a const (template) or enum (subscription) keyword; WeChat's template list
    # does not carry them, the operator supplies them.
    enum: list[str] = Field(default_factory=list, max_length=100)


class Template(BaseModel):
    model_config = ConfigDict(frozen=True)

    appid: str
    channel: Channel
    template_id: str = Field(pattern=TEMPLATE_ID_PATTERN)
    title: str = Field(default="", max_length=128)
    content: str = Field(default="", max_length=4096)
    example: str = Field(default="", max_length=4096)
    keywords: list[TemplateKeyword] = Field(default_factory=list, max_length=50)
    kind: SubscriptionKind | None = Field(default=None, description="Subscription templates only")
    synced_at: datetime | None = None

    @model_validator(mode="after")
    def _kind_only_for_subscriptions(self) -> Template:
        if self.channel is Channel.TEMPLATE and self.kind is not None:
            raise ValueError("kind applies to subscription templates only")
        return self

    def keyword(self, name: str) -> TemplateKeyword | None:
        return next((keyword for keyword in self.keywords if keyword.name == name), None)

    def with_enums(self, enums: Mapping[str, Sequence[str]]) -> Template:
        """A copy whose keywords carry the operator's enumerations; ValueError for a key it lacks."""
        unknown = sorted(set(enums) - {keyword.name for keyword in self.keywords})
        if unknown:
            raise ValueError(f"template {self.template_id} has no keyword {', '.join(unknown)}")
        keywords = [
            keyword.model_copy(update={"enum": list(enums[keyword.name])})
            if keyword.name in enums
            else keyword
            for keyword in self.keywords
        ]
        return self.model_copy(update={"keywords": keywords})


def parse_keywords(content: str) -> list[TemplateKeyword]:
    """The keywords of a template's content, in order of appearance, each once.

    A keyword's label is the text between the start of its line (or the previous placeholder on
    the same line) and its placeholder, without the colon: `商品名称：{{thing1.DATA}}` → 商品名称.
    """
    keywords: list[TemplateKeyword] = []
    seen: set[str] = set()
    for line in content.splitlines():
        label_start = 0
        for match in _PLACEHOLDER.finditer(line):
            name = match.group(1)
            label = line[label_start : match.start()].strip().rstrip(_LABEL_TRAILER).strip()
            label_start = match.end()
            if name in seen:
                continue
            seen.add(name)
            value_type, known = keyword_type(name)
            keywords.append(TemplateKeyword(name=name, type=value_type, known_type=known, label=label[:64]))
    return keywords


def subscription_kind(wechat_type: Any) -> SubscriptionKind:
    """gettemplate's `type`: 2 one-time, 3 long-term; anything else (or a new code) UNKNOWN."""
    if isinstance(wechat_type, str) and wechat_type.isascii() and wechat_type.isdigit():
        wechat_type = int(wechat_type)
    if isinstance(wechat_type, bool) or not isinstance(wechat_type, int):
        return SubscriptionKind.UNKNOWN
    return _SUBSCRIPTION_TYPES.get(wechat_type, SubscriptionKind.UNKNOWN)


def template_from_wechat(
    appid: str, channel: Channel, item: Mapping[str, Any], *, synced_at: datetime | None = None
) -> Template:
    """One entry of get_all_private_template (template messages) or gettemplate (subscriptions).

    Template messages: `{template_id, title, primary_industry, deputy_industry, content, example}`;
    subscriptions: `{priTmplId, title, content, example, type}`. Industries are not kept.
    """
    content = _text(item.get("content"))
    if channel is Channel.SUBSCRIBE:
        template_id = item.get("priTmplId") or item.get("template_id")
        kind: SubscriptionKind | None = subscription_kind(item.get("type"))
    else:
        template_id = item.get("template_id")
        kind = None
    if not isinstance(template_id, str) or not template_id:
        raise ValueError("template entry without a template id")
    return Template(
        appid=appid,
        channel=channel,
        template_id=template_id,
        title=_text(item.get("title")),
        content=content,
        example=_text(item.get("example")),
        keywords=parse_keywords(content),
        kind=kind,
        synced_at=synced_at,
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
