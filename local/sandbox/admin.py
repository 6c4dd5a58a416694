"""Admin API (`/admin/...`, JSON): seed accounts and users, simulate user actions, inspect everything.

Admin calls are not WeChat calls: they are never counted, never fault-injected, and answer plain
HTTP statuses (`{"error": ...}` with 400/404/409) rather than errcodes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx

from local.sandbox import events
from local.sandbox.callbacks import signed_url, tls_context
from local.sandbox.clock import CHINA_TZ
from local.sandbox.endpoints import mass
from local.sandbox.errors import AdminError, ApiError
from local.sandbox.httpio import Request, Response, json_response
from local.sandbox.keyword_rules import ENUMERATED_TYPES, TYPES, Family, keyword_type
from local.sandbox.model import (
    Account,
    AccountType,
    Draft,
    EncryptionMode,
    Keyword,
    MessageTemplate,
    Publication,
    SubscriptionKind,
    SubscriptionTemplate,
    Tag,
    User,
)
from local.sandbox.wxcrypto import sha1_signature

if TYPE_CHECKING:
    from local.sandbox.app import Sandbox

_OPENID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PREFIX = re.compile(r"^[A-Za-z0-9_-]{0,20}$")
_AES_KEY = re.compile(r"^[A-Za-z0-9]{43}$")
MAX_BULK_FOLLOWERS = 100_000
MAX_POPUP_TEMPLATES = 5  # one subscribe component holds at most 5 templates (§3)


@dataclass
class AdminCall:
    sandbox: Sandbox
    request: Request
    params: dict[str, str]
    body: dict[str, Any]

    @property
    def query(self) -> dict[str, str]:
        return self.request.query


Handler = Callable[[AdminCall], Any]


# --- small validators -------------------------------------------------------------------------
def _str(body: dict[str, Any], key: str, *, required: bool = False, default: str | None = None) -> str | None:
    value = body.get(key, default)
    if value is None:
        if required:
            raise AdminError(400, f"{key} is required")
        return None
    if not isinstance(value, str) or (required and not value):
        raise AdminError(400, f"{key} must be a non-empty string")
    return value


def _int(body: dict[str, Any], key: str, *, minimum: int = 0) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise AdminError(400, f"{key} must be an integer >= {minimum}")
    return value


def _bool(body: dict[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise AdminError(400, f"{key} must be true or false")
    return value


def _str_list(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise AdminError(400, f"{key} must be a list of non-empty strings")
    return value


def _account(call: AdminCall) -> Account:
    account = call.sandbox.state.accounts.get(call.params["appid"])
    if account is None:
        raise AdminError(404, f"no account {call.params['appid']}")
    return account


def _user(account: Account, openid: str) -> User:
    user = account.users.get(openid)
    if user is None:
        raise AdminError(404, f"no user {openid} in {account.appid}")
    return user


def _china_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=CHINA_TZ).isoformat()


# --- clock, reset, health ---------------------------------------------------------------------
def health(call: AdminCall) -> Any:
    sb = call.sandbox
    return {"ok": True, "seed": sb.seed, "now": sb.clock.now(), "wechat_paths": sb.paths}


def reset(call: AdminCall) -> Any:
    call.sandbox.reset()
    return {"ok": True}


def clock_get(call: AdminCall) -> Any:
    now = call.sandbox.clock.now()
    return {"now": now, "china_time": _china_time(now)}


def clock_advance(call: AdminCall) -> Any:
    seconds = call.body.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise AdminError(400, "seconds must be a number >= 0")
    now = call.sandbox.clock.advance(float(seconds))
    return {"now": now, "china_time": _china_time(now)}


# --- accounts ---------------------------------------------------------------------------------
def _account_fields(body: dict[str, Any]) -> dict[str, Any]:
    """Validate every account field of the body; returns attribute -> new value, changing nothing."""
    fields: dict[str, Any] = {}
    for key in ("secret", "name", "token", "mass_job_status"):
        if (value := _str(body, key)) is not None:
            fields[key] = value
    if (original_id := _str(body, "original_id")) is not None:
        if not original_id.startswith("gh_"):
            raise AdminError(400, "original_id must look like gh_…")
        fields["original_id"] = original_id
    if "type" in body:
        try:
            fields["type"] = AccountType(body["type"])
        except ValueError as exc:
            raise AdminError(400, "type must be service or subscription") from exc
    if (verified := _bool(body, "verified")) is not None:
        fields["verified"] = verified
    if "encoding_aes_key" in body:
        key = body["encoding_aes_key"] or ""
        if key and not (isinstance(key, str) and _AES_KEY.match(key)):
            raise AdminError(400, "encoding_aes_key must be 43 characters of [A-Za-z0-9]")
        fields["encoding_aes_key"] = key
    if "encryption_mode" in body:
        try:
            fields["encryption_mode"] = EncryptionMode(body["encryption_mode"])
        except ValueError as exc:
            raise AdminError(400, "encryption_mode must be plaintext, compatible or safe") from exc
    if "webhook_url" in body:
        url = body["webhook_url"]
        if url is not None and not (isinstance(url, str) and re.match(r"^https?://", url)):
            raise AdminError(400, "webhook_url must be an http(s) URL or null")
        fields["webhook_url"] = url or None
    for key in ("template_daily_quota", "token_daily_limit"):
        if (number := _int(body, key)) is not None:
            fields[key] = number
    if (ttl := _int(body, "token_ttl_s", minimum=1)) is not None:
        fields["token_ttl_s"] = ttl
    if "ip_whitelist" in body:
        whitelist = body["ip_whitelist"]
        fields["ip_whitelist"] = None if whitelist is None else list(_str_list(whitelist, "ip_whitelist"))
    return fields


def account_upsert(call: AdminCall) -> Any:
    """Create or update an account: the whole body is validated first, then applied at once, so a
    400 leaves the account exactly as it was."""
    body, state = call.body, call.sandbox.state
    appid = _str(body, "appid", required=True)
    assert appid is not None
    fields = _account_fields(body)
    account = state.accounts.get(appid)
    # the combination the account would end up with must be valid too
    mode = fields.get("encryption_mode", account.encryption_mode if account else EncryptionMode.PLAINTEXT)
    aes_key = fields.get("encoding_aes_key", account.encoding_aes_key if account else "")
    if mode is not EncryptionMode.PLAINTEXT and not aes_key:
        raise AdminError(400, "compatible/safe mode needs an encoding_aes_key")

    created = account is None
    if account is None:
        # ids are drawn only once the body is known to be good, so a refused call changes no sequence
        account = Account(
            appid=appid,
            secret=fields.pop("secret", None) or state.ids.secret(),
            original_id=fields.pop("original_id", None) or state.ids.original_id(),
            token=fields.pop("token", None) or state.ids.token(),
            token_ttl_s=state.config.token_ttl_s,
        )
    for key, value in fields.items():
        setattr(account, key, value)
    state.accounts[appid] = account
    return (201 if created else 200), account.to_json()


def account_list(call: AdminCall) -> Any:
    return {"accounts": [a.to_json() for a in call.sandbox.state.accounts.values()]}


def account_get(call: AdminCall) -> Any:
    return _account(call).to_json()


# --- followers, users, tags -------------------------------------------------------------------
def _tag_ids(account: Account, raw: Any) -> list[Tag]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise AdminError(400, "tags must be a list of tag ids")
    tags = []
    for tag_id in raw:
        tag = account.tags.get(tag_id) if isinstance(tag_id, int) else None
        if tag is None:
            raise AdminError(400, f"unknown tag {tag_id!r}")
        tags.append(tag)
    return tags


def followers_create(call: AdminCall) -> Any:
    account, body, state = _account(call), call.body, call.sandbox.state
    now = state.clock.now()
    following_default = _bool(body, "following")
    shared_tags = _tag_ids(account, body.get("tags"))
    specs: list[dict[str, Any]] = []
    if "count" in body:
        count = _int(body, "count", minimum=1) or 0
        if count > MAX_BULK_FOLLOWERS:
            raise AdminError(400, f"at most {MAX_BULK_FOLLOWERS} followers per call")
        prefix = _str(body, "prefix", default="o") or ""
        if not _PREFIX.match(prefix):
            raise AdminError(400, "prefix: up to 20 characters of [A-Za-z0-9_-]")
        for _ in range(count):
            generated = state.ids.openid(prefix)
            while generated in account.users:  # astronomically rare, but openids must stay unique
                generated = state.ids.openid(prefix)
            specs.append({"openid": generated})
    elif "openids" in body:
        specs = [{"openid": o} for o in _str_list(body["openids"], "openids")]
    elif "followers" in body:
        if not isinstance(body["followers"], list) or not all(isinstance(f, dict) for f in body["followers"]):
            raise AdminError(400, "followers must be a list of objects")
        specs = body["followers"]
    else:
        raise AdminError(400, "give count (+prefix), openids, or followers")
    # validate every entry before the first user changes: a 400 must leave the account as it was
    plan: list[tuple[str, bool, dict[str, Any], list[Tag]]] = []
    for spec in specs:
        openid = spec.get("openid")
        if not isinstance(openid, str) or not _OPENID.match(openid):
            raise AdminError(400, f"bad openid {openid!r}")
        if "wxname" in spec and spec["wxname"] is not None and not isinstance(spec["wxname"], str):
            raise AdminError(400, f"{openid}: wxname must be a string or null")
        following = spec.get("following", following_default if following_default is not None else True)
        plan.append((openid, bool(following), spec, [*shared_tags, *_tag_ids(account, spec.get("tags"))]))
    created = updated = 0
    openids: list[str] = []
    for openid, following, spec, tags in plan:
        user = account.users.get(openid)
        if user is None:
            user = account.users[openid] = User(openid=openid, following=following)
            created += 1
        else:
            user.following = following
            updated += 1
        user.followed_at = now if user.following else user.followed_at
        if "wxname" in spec:
            user.wxname = spec["wxname"]
        if "template_block" in spec:
            user.template_block = bool(spec["template_block"])
        for tag in tags:
            if user.following:
                tag.members[openid] = None
        if not user.following:
            _untag(account, openid)
        openids.append(openid)
    return 201, {"created": created, "updated": updated, "openids": openids}


def followers_list(call: AdminCall) -> Any:
    account = _account(call)
    want = call.query.get("following")
    users = [
        u
        for u in account.users.values()
        if want is None or u.following == (want.lower() in ("1", "true", "yes"))
    ]
    return {"total": len(users), "openids": [u.openid for u in users]}


def _untag(account: Account, openid: str) -> None:
    # unfollowing drops the user's tags, which keeps tag lists == following members
    for tag in account.tags.values():
        tag.members.pop(openid, None)


def user_get(call: AdminCall) -> Any:
    account = _account(call)
    user = _user(account, call.params["openid"])
    return user.to_json(account.tags_of(user.openid))


def user_update(call: AdminCall) -> Any:
    account = _account(call)
    user = _user(account, call.params["openid"])
    wxname = _str(call.body, "wxname")  # validate both fields before changing either
    block = _bool(call.body, "template_block")
    if "wxname" in call.body:
        user.wxname = wxname
    if block is not None:
        user.template_block = block
    return user.to_json(account.tags_of(user.openid))


def user_inbox(call: AdminCall) -> Any:
    account = _account(call)
    user = _user(account, call.params["openid"])
    kind = call.query.get("kind")
    messages = [m.to_json() for m in user.inbox if kind is None or m.kind == kind]
    return {"openid": user.openid, "count": len(messages), "messages": messages}


def inbox_counts(call: AdminCall) -> Any:
    account = _account(call)
    kind = call.query.get("kind")
    counts = {}
    for user in account.users.values():
        n = sum(1 for m in user.inbox if kind is None or m.kind == kind)
        if n:
            counts[user.openid] = n
    return {"kind": kind, "users": len(counts), "messages": sum(counts.values()), "counts": counts}


def tag_create(call: AdminCall) -> Any:
    account = _account(call)
    name = _str(call.body, "name", required=True)
    assert name is not None
    if any(t.name == name for t in account.tags.values()):
        raise AdminError(409, f"tag {name!r} exists")
    members = _members_to_add(account, call.body.get("openids") or [])  # before the tag exists
    tag = Tag(id=account.next_tag_id, name=name)
    account.next_tag_id += 1
    account.tags[tag.id] = tag
    tag.members.update(dict.fromkeys(members))
    return 201, {"id": tag.id, "name": tag.name, "count": len(tag.members)}


def _members_to_add(account: Account, add: Any) -> list[str]:
    openids = _str_list(add, "add/openids") if add else []
    for openid in openids:
        if not _user(account, openid).following:
            raise AdminError(409, f"{openid} is not following; only followers carry tags")
    return openids


def tag_members(call: AdminCall) -> Any:
    account = _account(call)
    tag = account.tags.get(int(call.params["tag_id"]))
    if tag is None:
        raise AdminError(404, "no such tag")
    add = _members_to_add(account, call.body.get("add"))
    remove = _str_list(call.body["remove"], "remove") if call.body.get("remove") else []
    tag.members.update(dict.fromkeys(add))
    for openid in remove:
        tag.members.pop(openid, None)
    return {"id": tag.id, "name": tag.name, "count": len(tag.members)}


# --- templates, drafts ------------------------------------------------------------------------
def _keywords(raw: Any, family: Family) -> list[Keyword]:
    if not isinstance(raw, list) or not raw:
        raise AdminError(400, "keywords must be a non-empty list")
    keywords: list[Keyword] = []
    for item in raw:
        spec = {"name": item} if isinstance(item, str) else item
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise AdminError(400, f"bad keyword {item!r}")
        name = spec["name"]
        kind = keyword_type(name)
        if kind not in TYPES[family]:
            raise AdminError(400, f"{name}: type {kind!r} is not a {family.value} keyword type")
        enum_values = tuple(spec.get("enum") or ())
        if kind in ENUMERATED_TYPES and (not enum_values or not all(isinstance(v, str) for v in enum_values)):
            raise AdminError(400, f"{name}: {kind} keywords need an 'enum' list of strings")
        if any(k.name == name for k in keywords):
            raise AdminError(400, f"duplicate keyword {name}")
        keywords.append(
            Keyword(
                name=name,
                kind=kind,
                label=str(spec.get("label") or name),
                enum_values=enum_values,
                example=str(spec.get("example") or ""),
            )
        )
    return keywords


def template_create(call: AdminCall) -> Any:
    account, body = _account(call), call.body
    template = MessageTemplate(
        title=_str(body, "title", default="sandbox template") or "",
        keywords=_keywords(body.get("keywords"), Family.TEMPLATE),
        template_id=_str(body, "template_id") or call.sandbox.state.ids.template_id(),
        primary_industry=_str(body, "primary_industry", default="IT科技") or "",
        deputy_industry=_str(body, "deputy_industry", default="互联网|电子商务") or "",
    )
    account.templates[template.template_id] = template
    return 201, {**template.to_wechat(), "keywords": [k.to_json() for k in template.keywords]}


def subscription_template_create(call: AdminCall) -> Any:
    account, body = _account(call), call.body
    raw_kind = body.get("type", "one_time")
    kinds = {"one_time": SubscriptionKind.ONE_TIME, 2: SubscriptionKind.ONE_TIME}
    kinds |= {"long_term": SubscriptionKind.LONG_TERM, 3: SubscriptionKind.LONG_TERM}
    if raw_kind not in kinds:
        raise AdminError(400, "type must be one_time (2) or long_term (3)")
    template = SubscriptionTemplate(
        title=_str(body, "title", default="sandbox notification") or "",
        keywords=_keywords(body.get("keywords"), Family.SUBSCRIPTION),
        pri_tmpl_id=_str(body, "pri_tmpl_id") or call.sandbox.state.ids.template_id(),
        kind=kinds[raw_kind],
    )
    account.subscription_templates[template.pri_tmpl_id] = template
    return 201, {**template.to_wechat(), "keywords": [k.to_json() for k in template.keywords]}


def draft_create(call: AdminCall) -> Any:
    account, state = _account(call), call.sandbox.state
    articles = call.body.get("articles")
    if not isinstance(articles, list) or not articles or not all(isinstance(a, dict) for a in articles):
        raise AdminError(400, "articles must be a non-empty list of objects")
    if len(articles) > 8:
        raise AdminError(400, "a draft holds at most 8 articles")
    normalised = [
        {
            "title": str(a.get("title", "")),
            "author": str(a.get("author", "")),
            "digest": str(a.get("digest", "")),
            "content": str(a.get("content", "")),
            "content_source_url": str(a.get("content_source_url", "")),
            "thumb_media_id": str(a.get("thumb_media_id", "")),
            "need_open_comment": int(a.get("need_open_comment", 0)),
            "only_fans_can_comment": int(a.get("only_fans_can_comment", 0)),
        }
        for a in articles
    ]
    draft = Draft(media_id=state.ids.media_id(), articles=normalised, updated_at=state.clock.now())
    account.drafts[draft.media_id] = draft
    return 201, {"media_id": draft.media_id}


def publication_create(call: AdminCall) -> Any:
    account, state = _account(call), call.sandbox.state
    draft = account.drafts.get(_str(call.body, "media_id", required=True) or "")
    if draft is None:
        raise AdminError(404, "no such draft media_id")
    publication = Publication(
        article_id=state.ids.article_id(),
        media_id=draft.media_id,
        articles=[dict(a) for a in draft.articles],
        updated_at=state.clock.now(),
    )
    account.publications[publication.article_id] = publication
    return 201, {"article_id": publication.article_id}


def mass_jobs(call: AdminCall) -> Any:
    return {"jobs": [job.to_json() for job in _account(call).mass_jobs.values()]}


# --- user simulations (each pushes the real callback) -----------------------------------------
def simulate_follow(call: AdminCall) -> Any:
    account, state = _account(call), call.sandbox.state
    openid = call.params["openid"]
    scene = call.body.get("qrscene")
    scene = None if scene is None else str(scene)
    ticket = _str(call.body, "ticket") or (state.ids.ticket() if scene is not None else None)
    user = account.users.get(openid)
    t = state.event_time()
    if user is not None and user.following:
        if scene is None:
            raise AdminError(409, f"{openid} already follows")
        # scanning a parametric QR code while following is a SCAN event, not a subscribe (§5.2)
        state.push(
            account, openid, "SCAN", events.user_scan(account.original_id, openid, t, scene, ticket or "")
        )
        return {"event": "SCAN", "openid": openid}
    # the push is built before the user changes, so a push that cannot be built changes nothing
    push = state.prepare_push(
        account, openid, "subscribe", events.user_subscribe(account.original_id, openid, t, scene, ticket)
    )
    if user is None:
        user = account.users[openid] = User(openid=openid, following=True)
    user.following, user.followed_at = True, state.clock.now()
    state.submit(push)
    return {"event": "subscribe", "openid": openid}


def simulate_unfollow(call: AdminCall) -> Any:
    account, state = _account(call), call.sandbox.state
    user = _user(account, call.params["openid"])
    if not user.following:
        raise AdminError(409, f"{user.openid} does not follow")
    t = state.event_time()
    push = state.prepare_push(
        account, user.openid, "unsubscribe", events.user_unsubscribe(account.original_id, user.openid, t)
    )
    user.following = False
    _untag(account, user.openid)
    state.submit(push)
    return {"event": "unsubscribe", "openid": user.openid}


def _decisions(body: dict[str, Any]) -> list[tuple[str, str]]:
    if "decisions" in body:
        raw = body["decisions"]
        if not isinstance(raw, list) or not all(isinstance(d, dict) for d in raw):
            raise AdminError(400, "decisions must be a list of {template_id, status}")
        pairs = [(str(d.get("template_id")), str(d.get("status"))) for d in raw]
    else:
        pairs = [(tid, "accept") for tid in _str_list(body.get("accept") or [], "accept")]
        pairs += [(tid, "reject") for tid in _str_list(body.get("reject") or [], "reject")]
    if not pairs:
        raise AdminError(400, "give decisions, or accept/reject lists of template ids")
    for _, status in pairs:
        if status not in ("accept", "reject"):
            raise AdminError(400, "status must be accept or reject")
    return pairs


def simulate_popup(call: AdminCall) -> Any:
    account, state = _account(call), call.sandbox.state
    openid = call.params["openid"]
    scene = call.body.get("scene", 2)
    if scene not in (1, 2):
        raise AdminError(400, "scene must be 1 (H5 page) or 2 (article)")
    pairs = _decisions(call.body)
    if len(pairs) > MAX_POPUP_TEMPLATES:
        raise AdminError(400, f"a subscribe component holds at most {MAX_POPUP_TEMPLATES} templates")
    templates = []
    for tid, _ in pairs:
        template = account.subscription_templates.get(tid)
        if template is None:
            raise AdminError(404, f"no subscription template {tid}")
        templates.append(template)
    if len({t.kind for t in templates}) > 1:
        raise AdminError(400, "one component cannot mix one-time and long-term templates (§3)")
    xml = events.subscribe_msg_popup(
        account.original_id, openid, state.event_time(), [(tid, status, scene) for tid, status in pairs]
    )
    push = state.prepare_push(account, openid, "subscribe_msg_popup_event", xml)
    # a non-follower can subscribe from an H5 page or article: create them as non-following
    user = account.users.get(openid) or account.users.setdefault(openid, User(openid=openid, following=False))
    now = state.clock.now()
    for template, (tid, status) in zip(templates, pairs, strict=True):
        grant = user.grant(tid)
        if template.kind is SubscriptionKind.LONG_TERM:
            grant.long_term_accepted = status == "accept"
        elif status == "accept":
            grant.credits += 1
        # a one-time "reject" in a popup adds nothing and keeps earlier, unused accepts
        grant.history.append({"at": int(now), "action": f"popup_{status}", "scene": scene})
    state.submit(push)
    return {"event": "subscribe_msg_popup_event", "openid": openid, "grants": _grants(user)}


def simulate_settings_reject(call: AdminCall) -> Any:
    account, state = _account(call), call.sandbox.state
    user = _user(account, call.params["openid"])
    template_ids = _str_list(call.body.get("reject"), "reject")
    for tid in template_ids:  # every id is checked before the first grant changes
        if tid not in account.subscription_templates:
            raise AdminError(404, f"no subscription template {tid}")
    xml = events.subscribe_msg_change(
        account.original_id, user.openid, state.event_time(), [(tid, "reject") for tid in template_ids]
    )
    push = state.prepare_push(account, user.openid, "subscribe_msg_change_event", xml)
    now = state.clock.now()
    for tid in template_ids:
        grant = user.grant(tid)
        # turning a template off in the settings page revokes everything granted for it
        grant.credits, grant.long_term_accepted = 0, False
        grant.history.append({"at": int(now), "action": "settings_reject"})
    state.submit(push)
    return {"event": "subscribe_msg_change_event", "openid": user.openid, "grants": _grants(user)}


def simulate_text(call: AdminCall) -> Any:
    account, state = _account(call), call.sandbox.state
    user = _user(account, call.params["openid"])
    content = _str(call.body, "content", required=True) or ""
    msg_id = state.ids.msgid()
    xml = events.text_message(account.original_id, user.openid, state.event_time(), content, msg_id)
    state.push(account, user.openid, "text", xml)
    return {"event": "text", "openid": user.openid, "MsgId": msg_id}


def simulate_console_mass(call: AdminCall) -> Any:
    """A send-to-all from the web console: uses the history quota the API shares (§4.1)."""
    account, state = _account(call), call.sandbox.state
    content = _str(call.body, "content", default="console broadcast") or "console broadcast"
    try:
        return 201, mass.console_sendall(state, account, content, state.clock.now())
    except ApiError as error:
        raise AdminError(409, f"{error.errmsg} ({error.errcode}): the history quota is used up") from error


def _grants(user: User) -> dict[str, Any]:
    return {tid: g.to_json() for tid, g in user.grants.items()}


def verify_webhook(call: AdminCall) -> Any:
    """Run WeChat's URL verification handshake (§5.1) against the account's webhook."""
    sb = call.sandbox
    with sb.state.lock:
        account = _account(call)
        if not account.webhook_url:
            raise AdminError(409, "the account has no webhook_url")
        timestamp = str(sb.state.event_time())
        nonce = sb.state.ids.nonce()
        echostr = str(sb.state.ids.rng().randrange(10**18, 10**19))
        query = {
            "signature": sha1_signature(account.token, timestamp, nonce),
            "timestamp": timestamp,
            "nonce": nonce,
            "echostr": echostr,
        }
        url = signed_url(account.webhook_url, query)
    # network I/O happens outside the state lock
    try:
        with httpx.Client(
            timeout=sb.config.callback_timeout_s, trust_env=False, verify=tls_context()
        ) as client:
            response = client.get(url)
    except httpx.HTTPError as exc:
        return {"ok": False, "url": url, "error": f"{type(exc).__name__}: {exc}"}
    # the reply must be echostr verbatim: no quotes, no newline
    ok = response.status_code == 200 and response.text == echostr
    return {
        "ok": ok,
        "url": url,
        "status": response.status_code,
        "body": response.text[:200],
        "echostr": echostr,
    }


# --- observability and faults -----------------------------------------------------------------
def counters_get(call: AdminCall) -> Any:
    return {"paths": call.sandbox.counters.to_json()}


def counters_reset(call: AdminCall) -> Any:
    call.sandbox.counters.reset()
    return {"ok": True}


def callbacks_list(call: AdminCall) -> Any:
    q = call.query
    limit = q.get("limit")
    if limit is not None and not limit.isdigit():
        raise AdminError(400, "limit must be a non-negative integer")
    records = call.sandbox.dispatcher.records(
        appid=q.get("appid"),
        event=q.get("event"),
        outcome=q.get("outcome"),
        limit=int(limit) if limit is not None else None,
    )
    return {"pending": call.sandbox.dispatcher.pending(), "count": len(records), "callbacks": records}


def callbacks_flush(call: AdminCall) -> Any:
    timeout = call.body.get("timeout", 10)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        raise AdminError(400, "timeout must be seconds >= 0")
    flushed = call.sandbox.dispatcher.flush(float(timeout))
    pending = call.sandbox.dispatcher.pending()
    return (200 if flushed else 504), {"flushed": flushed, "pending": pending}


def faults_get(call: AdminCall) -> Any:
    return call.sandbox.faults.to_json()


def faults_set(call: AdminCall) -> Any:
    return call.sandbox.faults.set_rule(call.body)


def faults_clear(call: AdminCall) -> Any:
    call.sandbox.faults.clear(_str(call.body, "path"))
    return call.sandbox.faults.to_json()


# --- routing ----------------------------------------------------------------------------------
_A = r"/admin/accounts/(?P<appid>[^/]+)"
_U = _A + r"/users/(?P<openid>[^/]+)"
# (method, pattern, handler, takes the state lock)
ROUTES: list[tuple[str, str, Handler, bool]] = [
    ("GET", r"/admin/health", health, False),
    ("POST", r"/admin/reset", reset, False),
    ("GET", r"/admin/clock", clock_get, False),
    ("POST", r"/admin/clock/advance", clock_advance, True),
    ("GET", r"/admin/accounts", account_list, True),
    ("POST", r"/admin/accounts", account_upsert, True),
    ("GET", _A, account_get, True),
    ("POST", _A + r"/followers", followers_create, True),
    ("GET", _A + r"/followers", followers_list, True),
    ("POST", _A + r"/tags", tag_create, True),
    ("POST", _A + r"/tags/(?P<tag_id>\d+)/members", tag_members, True),
    ("POST", _A + r"/templates", template_create, True),
    ("POST", _A + r"/subscription-templates", subscription_template_create, True),
    ("POST", _A + r"/drafts", draft_create, True),
    ("POST", _A + r"/publications", publication_create, True),
    ("GET", _A + r"/mass-jobs", mass_jobs, True),
    ("GET", _A + r"/inbox-counts", inbox_counts, True),
    ("GET", _U, user_get, True),
    ("POST", _U, user_update, True),
    ("GET", _U + r"/inbox", user_inbox, True),
    ("POST", _U + r"/follow", simulate_follow, True),
    ("POST", _U + r"/unfollow", simulate_unfollow, True),
    ("POST", _U + r"/popup", simulate_popup, True),
    ("POST", _U + r"/subscription-settings", simulate_settings_reject, True),
    ("POST", _U + r"/message", simulate_text, True),
    ("POST", _A + r"/console-mass", simulate_console_mass, True),
    ("POST", _A + r"/verify-webhook", verify_webhook, False),  # locks itself, not during the HTTP call
    ("GET", r"/admin/counters", counters_get, False),
    ("POST", r"/admin/counters/reset", counters_reset, False),
    ("GET", r"/admin/callbacks", callbacks_list, False),
    ("POST", r"/admin/callbacks/flush", callbacks_flush, False),  # must not hold the lock while waiting
    ("GET", r"/admin/faults", faults_get, False),
    ("POST", r"/admin/faults", faults_set, False),
    ("POST", r"/admin/faults/clear", faults_clear, False),
]


class AdminApi:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox
        self._routes = [(m, re.compile(p + "$"), h, locked) for m, p, h, locked in ROUTES]

    def routes(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p, _, _ in ROUTES]

    def handle(self, request: Request) -> Response:
        matched_path = False
        for method, pattern, handler, locked in self._routes:
            match = pattern.match(request.path)
            if not match:
                continue
            matched_path = True
            if method != request.method:
                continue
            try:
                body = _admin_body(request.body)
                call = AdminCall(self._sandbox, request, match.groupdict(), body)
                if locked:
                    with self._sandbox.state.lock:
                        result = handler(call)
                else:
                    result = handler(call)
            except AdminError as error:
                return json_response({"error": error.message}, status=error.status)
            status, payload = result if isinstance(result, tuple) else (200, result)
            return json_response(payload, status=status)
        if matched_path:
            return json_response({"error": f"method {request.method} not allowed"}, status=405)
        return json_response({"error": f"no admin route {request.path}"}, status=404)


def _admin_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AdminError(400, f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise AdminError(400, "body must be a JSON object")
    return body
