"""In-memory entities of the sandbox. Mutated only while holding `SandboxState.lock`."""

from __future__ import annotations

import re
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from local.sandbox import limits
from local.sandbox.clock import china_day, china_month


def drop_expired[K, V](
    entries: OrderedDict[K, V], now: float, window_s: float, stamp: Callable[[V], float]
) -> None:
    """Forget entries at least `window_s` old.

    Writers re-insert at the end, so entries stay oldest first and the expired ones are a prefix:
    the cost is one step per entry ever dropped (OrderedDict, unlike dict, pops its front in O(1)).
    """
    while entries:
        key = next(iter(entries))
        if now - stamp(entries[key]) < window_s:
            return
        del entries[key]


class AccountType(StrEnum):
    SERVICE = "service"
    SUBSCRIPTION = "subscription"


class EncryptionMode(StrEnum):
    PLAINTEXT = "plaintext"
    COMPATIBLE = "compatible"
    SAFE = "safe"


class SubscriptionKind(StrEnum):
    ONE_TIME = "one_time"  # gettemplate type 2
    LONG_TERM = "long_term"  # gettemplate type 3

    @property
    def wechat_type(self) -> int:
        return 2 if self is SubscriptionKind.ONE_TIME else 3


@dataclass
class Keyword:
    name: str  # e.g. thing1; the prefix is the type
    kind: str
    label: str
    enum_values: tuple[str, ...] = ()
    example: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.kind, "label": self.label}
        if self.enum_values:
            out["enum"] = list(self.enum_values)
        if self.example:
            out["example"] = self.example
        return out


_PLACEHOLDER = re.compile(r"\{\{([A-Za-z_]+\d+)\.DATA\}\}")


@dataclass
class TemplateBase:
    title: str
    keywords: list[Keyword]

    @property
    def content(self) -> str:
        # the `{{thing1.DATA}}` placeholder form is what clients parse to learn keys (§2.2)
        return "\n".join(f"{kw.label}:{{{{{kw.name}.DATA}}}}" for kw in self.keywords)

    @property
    def example(self) -> str:
        return "\n".join(f"{kw.label}:{kw.example}" for kw in self.keywords if kw.example)

    def render(self, values: dict[str, str]) -> str:
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), self.content)


@dataclass
class MessageTemplate(TemplateBase):
    template_id: str = ""
    primary_industry: str = "IT科技"
    deputy_industry: str = "互联网|电子商务"

    def to_wechat(self) -> dict[str, Any]:
        return {
            "template_id": self.template_id,
            "title": self.title,
            "primary_industry": self.primary_industry,
            "deputy_industry": self.deputy_industry,
            "content": self.content,
            "example": self.example,
        }


@dataclass
class SubscriptionTemplate(TemplateBase):
    pri_tmpl_id: str = ""
    kind: SubscriptionKind = SubscriptionKind.ONE_TIME

    def to_wechat(self) -> dict[str, Any]:
        return {
            "priTmplId": self.pri_tmpl_id,
            "title": self.title,
            "content": self.content,
            "example": self.example,
            "type": self.kind.wechat_type,
        }


@dataclass
class SubscriptionGrant:
    """What one user allowed for one subscription template."""

    credits: int = 0  # one-time accepts not used yet
    long_term_accepted: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "credits": self.credits,
            "long_term_accepted": self.long_term_accepted,
            "history": self.history,
        }


@dataclass
class InboxMessage:
    inbox_id: int
    kind: str  # template | subscription | mass | mass_preview
    msgid: int
    received_at: float
    content: str
    channel: str = "chat"  # non-followers get subscription notifications in service_notifications
    template_id: str | None = None
    data: dict[str, str] | None = None
    link: dict[str, Any] | None = None
    msgtype: str | None = None
    client_msg_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "inbox_id": self.inbox_id,
            "kind": self.kind,
            "msgid": self.msgid,
            "received_at": int(self.received_at),
            "channel": self.channel,
            "content": self.content,
            "template_id": self.template_id,
            "data": self.data,
            "link": self.link,
            "msgtype": self.msgtype,
            "client_msg_id": self.client_msg_id,
        }


@dataclass
class User:
    openid: str
    following: bool
    followed_at: float | None = None
    wxname: str | None = None
    template_block: bool = False  # user refuses this account's template messages
    inbox: list[InboxMessage] = field(default_factory=list)
    grants: dict[str, SubscriptionGrant] = field(default_factory=dict)
    mass_by_month: Counter[str] = field(default_factory=Counter)

    def grant(self, template_id: str) -> SubscriptionGrant:
        return self.grants.setdefault(template_id, SubscriptionGrant())

    def to_json(self, tags: list[int]) -> dict[str, Any]:
        return {
            "openid": self.openid,
            "following": self.following,
            "followed_at": int(self.followed_at) if self.followed_at is not None else None,
            "wxname": self.wxname,
            "template_block": self.template_block,
            "tags": tags,
            "inbox_count": len(self.inbox),
            "mass_by_month": dict(self.mass_by_month),
            "grants": {tid: g.to_json() for tid, g in self.grants.items()},
        }


@dataclass
class Tag:
    id: int
    name: str
    members: dict[str, None] = field(default_factory=dict)  # insertion-ordered set of openids


@dataclass
class Draft:
    media_id: str
    articles: list[dict[str, Any]]
    updated_at: float


@dataclass
class Publication:
    article_id: str
    media_id: str
    articles: list[dict[str, Any]]
    updated_at: float


@dataclass
class MassJob:
    msg_id: int
    appid: str
    kind: str  # sendall | send
    msgtype: str
    payload: dict[str, Any]
    clientmsgid: str
    clientmsgid_explicit: bool
    created_at: float
    msg_data_id: int | None = None
    status: str = "SEND_SUCCESS"  # /mass/get msg_status
    event_status: str = "send success"  # MASSSENDJOBFINISH Status
    total: int = 0
    filter_count: int = 0
    sent: int = 0
    errors: int = 0
    filtered_openids: list[str] = field(default_factory=list)
    error_openids: list[str] = field(default_factory=list)
    article_urls: list[str] = field(default_factory=list)
    deleted_articles: set[int] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {
            "msg_id": self.msg_id,
            "msg_data_id": self.msg_data_id,
            "kind": self.kind,
            "msgtype": self.msgtype,
            "clientmsgid": self.clientmsgid,
            "created_at": int(self.created_at),
            "msg_status": self.status,
            "event_status": self.event_status,
            "total": self.total,
            "filter_count": self.filter_count,
            "sent": self.sent,
            "errors": self.errors,
            "filtered_openids": self.filtered_openids,
            "error_openids": self.error_openids,
            "article_urls": self.article_urls,
            "deleted_articles": sorted(self.deleted_articles),
        }


@dataclass
class AccessToken:
    value: str
    appid: str
    family: str  # classic | stable (the two never invalidate each other, §1.2)
    issued_at: float
    expires_at: float
    dies_at: float | None = None  # set when superseded: usable until then (5-min overlap)

    def failure(self, now: float) -> int | None:
        """None when usable; 42001 once expired, 40001 once superseded and past its overlap."""
        if now >= self.expires_at and (self.dies_at is None or self.expires_at <= self.dies_at):
            return 42001
        if self.dies_at is not None and now >= self.dies_at:
            return 40001
        return None

    def supersede(self, now: float, overlap_s: float) -> None:
        deadline = now + overlap_s
        self.dies_at = deadline if self.dies_at is None else min(self.dies_at, deadline)


@dataclass
class Account:
    appid: str
    secret: str
    original_id: str
    type: AccountType = AccountType.SERVICE
    verified: bool = True
    name: str = ""
    token: str = ""
    encoding_aes_key: str = ""
    encryption_mode: EncryptionMode = EncryptionMode.PLAINTEXT
    webhook_url: str | None = None
    template_daily_quota: int = limits.TEMPLATE_DAILY_QUOTA
    token_daily_limit: int = limits.TOKEN_DAILY_LIMIT
    token_ttl_s: int = limits.DEFAULT_TOKEN_TTL_S
    ip_whitelist: list[str] | None = None  # None = any caller may fetch tokens
    mass_job_status: str = "send success"  # admin override to simulate review failures (§4.3)

    users: dict[str, User] = field(default_factory=dict)
    tags: dict[int, Tag] = field(default_factory=dict)
    next_tag_id: int = 100  # 0, 1, 2 are WeChat's reserved tags
    templates: dict[str, MessageTemplate] = field(default_factory=dict)
    subscription_templates: dict[str, SubscriptionTemplate] = field(default_factory=dict)
    drafts: dict[str, Draft] = field(default_factory=dict)
    publications: dict[str, Publication] = field(default_factory=dict)
    mass_jobs: dict[int, MassJob] = field(default_factory=dict)
    # idempotency windows, oldest first and pruned by age (24 h and 10 min): see remember_*()
    mass_by_clientmsgid: OrderedDict[str, MassJob] = field(default_factory=OrderedDict)
    template_dedupe: OrderedDict[tuple[str, str], tuple[int, float]] = field(default_factory=OrderedDict)
    daily: Counter[tuple[str, str]] = field(default_factory=Counter)  # (what, china day) -> count
    monthly: Counter[tuple[str, str]] = field(default_factory=Counter)  # (what, china month) -> count
    mass_call_times: deque[float] = field(default_factory=deque)
    mass_speed: int = limits.DEFAULT_MASS_SPEED
    classic_token: str | None = None
    stable_token: str | None = None
    stable_force_times: list[float] = field(default_factory=list)

    def prune_windows(self, now: float) -> None:
        """Drop records that can no longer change an answer: idempotency entries past their window,
        and quota counters of earlier China days and months."""
        drop_expired(self.template_dedupe, now, limits.TEMPLATE_CLIENT_MSG_ID_WINDOW_S, lambda e: e[1])
        drop_expired(self.mass_by_clientmsgid, now, limits.MASS_CLIENTMSGID_WINDOW_S, lambda j: j.created_at)
        today, month = china_day(now), china_month(now)
        for key in [k for k in self.daily if k[1] != today]:
            del self.daily[key]
        for key in [k for k in self.monthly if k[1] != month]:
            del self.monthly[key]
        # forced stable refreshes: today's count, and the last one for the 30-s spacing (§1.2)
        self.stable_force_times[:-1] = [t for t in self.stable_force_times[:-1] if china_day(t) == today]

    def remember_template(self, key: tuple[str, str], msgid: int, now: float) -> None:
        self.template_dedupe.pop(key, None)  # re-insert at the end: the dict stays oldest first
        self.template_dedupe[key] = (msgid, now)

    def remember_mass(self, job: MassJob) -> None:
        self.mass_by_clientmsgid.pop(job.clientmsgid, None)
        self.mass_by_clientmsgid[job.clientmsgid] = job

    def tags_of(self, openid: str) -> list[int]:
        return [tag.id for tag in self.tags.values() if openid in tag.members]

    def followers(self) -> list[User]:
        return [user for user in self.users.values() if user.following]

    def to_json(self) -> dict[str, Any]:
        return {
            "appid": self.appid,
            "secret": self.secret,
            "original_id": self.original_id,
            "type": self.type.value,
            "verified": self.verified,
            "name": self.name,
            "token": self.token,
            "encoding_aes_key": self.encoding_aes_key,
            "encryption_mode": self.encryption_mode.value,
            "webhook_url": self.webhook_url,
            "template_daily_quota": self.template_daily_quota,
            "token_daily_limit": self.token_daily_limit,
            "token_ttl_s": self.token_ttl_s,
            "ip_whitelist": self.ip_whitelist,
            "mass_job_status": self.mass_job_status,
            "mass_speed": self.mass_speed,
            "counts": {
                "users": len(self.users),
                "followers": sum(1 for u in self.users.values() if u.following),
                "tags": len(self.tags),
                "templates": len(self.templates),
                "subscription_templates": len(self.subscription_templates),
                "drafts": len(self.drafts),
                "mass_jobs": len(self.mass_jobs),
            },
        }
