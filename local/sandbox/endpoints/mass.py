"""Mass send (§4): sendall, send, preview, delete, get, speed."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from local.sandbox import events, limits
from local.sandbox.clock import china_day, china_month
from local.sandbox.endpoints.common import Body, Call, Endpoint, int_field, known_user, ok, require_verified
from local.sandbox.errors import ApiError, Code
from local.sandbox.model import Account, AccountType, Draft, InboxMessage, MassJob, User
from local.sandbox.state import SandboxState, system_openid

# msgtype -> name of the payload object in the body (§4.2)
PAYLOAD_FIELD = {
    "mpnews": "mpnews",
    "text": "text",
    "voice": "voice",
    "image": "images",
    "mpvideo": "mpvideo",
    "wxcard": "wxcard",
}
DELETABLE_TYPES = frozenset({"mpnews", "mpvideo"})
ARTICLE_HOST = "https://mp.weixin.sandbox.invalid"  # .invalid never resolves: nothing leaves the sandbox


def _rate_limit(account: Account, now: float) -> None:
    """60 mass calls per account in any 60-second window (§4.1) → 45011."""
    window = account.mass_call_times
    while window and now - window[0] >= 60:
        window.popleft()
    if len(window) >= limits.MASS_CALLS_PER_MINUTE:
        raise ApiError(Code.MINUTE_QUOTA)
    window.append(now)


def _payload(account: Account, body: dict[str, Any]) -> tuple[str, dict[str, Any], Draft | None]:
    msgtype = body.get("msgtype")
    if not isinstance(msgtype, str) or msgtype not in PAYLOAD_FIELD:
        raise ApiError(Code.INVALID_MESSAGE_TYPE)
    payload = body.get(PAYLOAD_FIELD[msgtype])
    if not isinstance(payload, dict):
        raise ApiError(Code.DATA_FORMAT_ERROR)
    draft = None
    match msgtype:
        case "mpnews":
            draft = account.drafts.get(payload.get("media_id", ""))
            if draft is None:
                raise ApiError(Code.INVALID_MEDIA_ID)
        case "text":
            content = payload.get("content")
            if not isinstance(content, str) or not content:
                raise ApiError(Code.EMPTY_CONTENT)
        case "voice" | "mpvideo":
            if not isinstance(payload.get("media_id"), str) or not payload["media_id"]:
                raise ApiError(Code.INVALID_MEDIA_ID)
        case "image":
            media_ids = payload.get("media_ids")
            if (
                not isinstance(media_ids, list)
                or not media_ids
                or not all(isinstance(m, str) and m for m in media_ids)
            ):
                raise ApiError(Code.INVALID_MEDIA_ID)
        case "wxcard":
            if not isinstance(payload.get("card_id"), str) or not payload["card_id"]:
                raise ApiError(Code.DATA_FORMAT_ERROR)
    return msgtype, payload, draft


def _describe(msgtype: str, payload: dict[str, Any], draft: Draft | None) -> str:
    match msgtype:
        case "text":
            return str(payload["content"])
        case "mpnews":
            assert draft is not None
            return " | ".join(str(a.get("title", "")) for a in draft.articles)
        case "image":
            return "[image] " + ",".join(payload["media_ids"])
        case "mpvideo":
            return f"[video] {payload.get('title') or payload['media_id']}"
        case "voice":
            return f"[voice] {payload['media_id']}"
        case _:
            return f"[card] {payload.get('card_id')}"


def _clientmsgid(
    body: dict[str, Any], kind: str, audience: Any, msgtype: str, payload: Any
) -> tuple[str, bool]:
    explicit = body.get("clientmsgid")
    if explicit is not None and explicit != "":
        text = str(explicit)
        if len(text.encode("utf-8")) > limits.MASS_CLIENTMSGID_MAX_BYTES:
            raise ApiError(Code.CLIENTMSGID_TOO_LONG)
        return text, True
    # omitted: WeChat derives one from recipients + content, so identical resends are refused too (§4.2)
    digest_source = json.dumps([kind, audience, msgtype, payload], sort_keys=True, ensure_ascii=False)
    return "derived:" + hashlib.sha256(digest_source.encode()).hexdigest()[:40], False


def _check_duplicate(account: Account, clientmsgid: str, now: float) -> None:
    previous = account.mass_by_clientmsgid.get(clientmsgid)
    if previous is None or now - previous.created_at >= limits.MASS_CLIENTMSGID_WINDOW_S:
        return
    if now - previous.created_at < limits.MASS_CLIENTMSGID_TOO_FAST_S:
        raise ApiError(Code.CLIENTMSGID_TOO_FAST)
    raise ApiError(Code.CLIENTMSGID_EXIST, msg_id=previous.msg_id)


def _article_urls(appid: str, msg_data_id: int, draft: Draft) -> list[str]:
    urls = []
    for idx, _article in enumerate(draft.articles, start=1):
        sn = hashlib.sha1(f"{appid}:{msg_data_id}:{idx}".encode()).hexdigest()  # noqa: S324 - not security
        urls.append(f"{ARTICLE_HOST}/s?__biz={appid}&mid={msg_data_id}&idx={idx}&sn={sn}")
    return urls


QuotaUse = tuple[str, str, bool]  # (counter, China day or month, is a monthly counter)


def _api_quota(account: Account, now: float) -> QuotaUse:
    """The "高级群发接口" cap (§4.1): 100 accepted sendall/send jobs per account per China day → 45009."""
    day = china_day(now)
    if account.daily[("mass_api", day)] >= limits.MASS_API_CALLS_PER_DAY:
        raise ApiError(Code.DAILY_QUOTA)
    return ("mass_api", day, False)


def history_quota(account: Account, now: float) -> list[QuotaUse]:
    """What one send to the history list uses (§4.1); 45028 "has no masssend quota" when used up.

    Subscription accounts: 1 successful sendall (to all or to a tag) per China day. Service accounts:
    is_to_all sends, 1 per China day and 4 per China calendar month, console sends included.
    """
    day, month = china_day(now), china_month(now)
    if account.type is AccountType.SUBSCRIPTION:
        if account.daily[("sendall", day)] >= limits.SUBSCRIPTION_ACCOUNT_SENDALL_PER_DAY:
            raise ApiError(Code.NO_MASSSEND_QUOTA)
        return [("sendall", day, False)]
    if (
        account.daily[("to_all", day)] >= limits.SERVICE_TO_ALL_PER_DAY
        or account.monthly[("to_all", month)] >= limits.SERVICE_TO_ALL_PER_MONTH
    ):
        raise ApiError(Code.NO_MASSSEND_QUOTA)
    return [("to_all", day, False), ("to_all", month, True)]


def use_quota(account: Account, uses: list[QuotaUse]) -> None:
    for what, period, monthly in uses:
        (account.monthly if monthly else account.daily)[(what, period)] += 1


def _audience(account: Account, recipients: list[str], month: str) -> tuple[list[User], list[str], list[str]]:
    """Split recipients into (eligible users, filtered openids, error openids)."""
    eligible: list[User] = []
    filtered: list[str] = []
    errors: list[str] = []
    for openid in recipients:
        user = account.users.get(openid)
        if user is None:
            errors.append(openid)  # unknown to this appid: passes the filter, fails to send
        elif not user.following or user.mass_by_month[month] >= limits.MASS_PER_FOLLOWER_PER_MONTH:
            filtered.append(openid)  # not a follower, or over the 4-per-month cap (§4.1)
        else:
            eligible.append(user)
    return eligible, filtered, errors


def _submit(
    call: Call,
    kind: str,
    recipients: list[str],
    audience: Any,
    msgtype: str,
    payload: dict[str, Any],
    draft: Draft | None,
) -> dict[str, Any]:
    account, state, now = call.account, call.state, call.now
    account.prune_windows(now)
    clientmsgid, explicit = _clientmsgid(call.body, kind, audience, msgtype, payload)
    _check_duplicate(account, clientmsgid, now)
    api_use = _api_quota(account, now)
    enters_history = kind == "sendall" and (
        account.type is AccountType.SUBSCRIPTION or audience.get("is_to_all") is True
    )
    history_uses = history_quota(account, now) if enters_history else []

    # build the whole job and its push first: nothing below the commit line can fail
    job = MassJob(
        msg_id=state.ids.mass_msg_id(),
        appid=account.appid,
        kind=kind,
        msgtype=msgtype,
        payload=payload,
        clientmsgid=clientmsgid,
        clientmsgid_explicit=explicit,
        created_at=now,
        total=len(recipients),
    )
    if draft is not None:
        job.msg_data_id = state.ids.msg_data_id()
        job.article_urls = _article_urls(account.appid, job.msg_data_id, draft)

    month = china_month(now)
    eligible, job.filtered_openids, job.error_openids = _audience(account, recipients, month)
    job.filter_count = len(eligible) + len(job.error_openids)
    delivered = account.mass_job_status == "send success"
    messages: list[tuple[User, InboxMessage]] = []
    if delivered:
        content = _describe(msgtype, payload, draft)
        messages = [
            (
                user,
                InboxMessage(
                    inbox_id=state.ids.inbox_id(),
                    kind="mass",
                    msgid=job.msg_id,
                    received_at=now,
                    content=content,
                    msgtype=msgtype,
                    client_msg_id=clientmsgid if explicit else None,
                ),
            )
            for user in eligible
        ]
        job.sent, job.errors = len(eligible), len(job.error_openids)
    else:
        # simulated review failure (err(N) / send fail): nothing reaches anyone
        job.status, job.event_status = "SEND_FAIL", account.mass_job_status
        job.sent, job.errors = 0, job.filter_count
    sender = system_openid(account.appid)
    push = state.prepare_push(
        account,
        sender,
        "MASSSENDJOBFINISH",
        events.mass_send_job_finish(account.original_id, sender, state.event_time(), job),
    )

    # commit: plain in-memory updates that cannot fail
    for user, message in messages:
        user.mass_by_month[month] += 1
        user.inbox.append(message)
    # every accepted job uses the API cap; only delivered ones use the history quota
    use_quota(account, [api_use, *history_uses] if delivered else [api_use])
    account.mass_jobs[job.msg_id] = job
    account.remember_mass(job)
    state.submit(push)
    response = {"errcode": 0, "errmsg": "send job submission success", "msg_id": job.msg_id}
    if job.msg_data_id is not None:
        response["msg_data_id"] = job.msg_data_id
    return response


def console_sendall(state: SandboxState, account: Account, content: str, now: float) -> dict[str, Any]:
    """A text send-to-all made in the web console (admin simulation, not an API call).

    It shares the history quota with API send-to-all jobs (§4.1) and each follower's 4-per-month cap,
    but is no API job: no msg_id for /mass/get, no MASSSENDJOBFINISH push, no API cap.
    """
    uses = history_quota(account, now)  # 45028 when used up
    msg_id = state.ids.mass_msg_id()
    month = china_month(now)
    eligible, filtered, _ = _audience(account, [u.openid for u in account.followers()], month)
    for user in eligible:
        user.mass_by_month[month] += 1
        user.inbox.append(
            InboxMessage(
                inbox_id=state.ids.inbox_id(),
                kind="mass",
                msgid=msg_id,
                received_at=now,
                content=content,
                msgtype="text",
            )
        )
    use_quota(account, uses)
    return {"msg_id": msg_id, "sent": len(eligible), "filtered": len(filtered)}


def sendall(call: Call) -> dict[str, Any]:
    account = call.account
    require_verified(account)
    _rate_limit(account, call.now)
    msgtype, payload, draft = _payload(account, call.body)
    flt = call.body.get("filter")
    if not isinstance(flt, dict):
        raise ApiError(Code.DATA_FORMAT_ERROR)
    if flt.get("is_to_all") is True:
        recipients = [u.openid for u in account.followers()]
        audience: Any = {"is_to_all": True}
    else:
        tag_id = int_field(flt.get("tag_id"))
        tag = account.tags.get(tag_id) if tag_id is not None else None
        if tag is None:
            raise ApiError(Code.INVALID_TAG_ID)
        recipients = list(tag.members)
        audience = {"tag_id": tag.id}
    return _submit(call, "sendall", recipients, audience, msgtype, payload, draft)


def send(call: Call) -> dict[str, Any]:
    account = call.account
    require_verified(account)
    _rate_limit(account, call.now)
    msgtype, payload, draft = _payload(account, call.body)
    touser = call.body.get("touser")
    if not isinstance(touser, list) or not all(isinstance(o, str) for o in touser):
        raise ApiError(Code.DATA_FORMAT_ERROR)
    recipients = list(dict.fromkeys(touser))  # duplicates count once
    if len(recipients) < limits.MASS_MIN_RECIPIENTS:
        raise ApiError(Code.OPENID_LIST_SIZE)
    if len(recipients) > limits.MASS_MAX_RECIPIENTS:
        # documented maximum is 10 000 (§4.2); the sandbox reuses 40130 with an explicit message
        raise ApiError(Code.OPENID_LIST_SIZE, "invalid openid list size, at most 10000 openid")
    return _submit(call, "send", recipients, sorted(recipients), msgtype, payload, draft)


def preview(call: Call) -> dict[str, Any]:
    account, state, now = call.account, call.state, call.now
    require_verified(account)
    _rate_limit(account, now)
    msgtype, payload, draft = _payload(account, call.body)
    towxname = call.body.get("towxname")
    if isinstance(towxname, str) and towxname:  # towxname wins over touser (§4.2)
        user = next((u for u in account.users.values() if u.wxname == towxname), None)
        if user is None:
            raise ApiError(Code.INVALID_OPENID, "invalid towxname")
        quota_key = ("preview_towxname", china_day(now))
        if account.daily[quota_key] >= limits.PREVIEW_TOWXNAME_PER_DAY:
            raise ApiError(Code.DAILY_QUOTA)
        account.daily[quota_key] += 1
    else:
        user = known_user(account, call.body.get("touser"))
    if not user.following:
        raise ApiError(Code.REQUIRE_SUBSCRIBE)
    msg_id = state.ids.mass_msg_id()
    # previews do not count against the 4-per-month cap and push no job-finish event
    user.inbox.append(
        InboxMessage(
            inbox_id=state.ids.inbox_id(),
            kind="mass_preview",
            msgid=msg_id,
            received_at=now,
            content=_describe(msgtype, payload, draft),
            msgtype=msgtype,
        )
    )
    return {"errcode": 0, "errmsg": "preview success", "msg_id": msg_id}


def _job(account: Account, raw_msg_id: Any) -> MassJob:
    msg_id = int_field(raw_msg_id)
    job = account.mass_jobs.get(msg_id) if msg_id is not None else None
    if job is None:
        raise ApiError(Code.INVALID_MSG_ID)
    return job


def delete(call: Call) -> dict[str, Any]:
    account, body = call.account, call.body
    if body.get("msg_id") not in (None, "", 0):
        job = _job(account, body.get("msg_id"))
    else:
        url = body.get("url")
        by_url = next((j for j in account.mass_jobs.values() if url and url in j.article_urls), None)
        if by_url is None:
            raise ApiError(Code.INVALID_MSG_ID)
        job = by_url
    if job.msgtype not in DELETABLE_TYPES or job.status not in ("SEND_SUCCESS", "DELETE"):
        raise ApiError(Code.INVALID_MSG_ID, "invalid msg id, only sent mpnews/mpvideo can be deleted")
    article_idx = int_field(body.get("article_idx", 0))
    if article_idx is None or article_idx < 0 or article_idx > max(1, len(job.article_urls)):
        raise ApiError(Code.ARGUMENT_INVALID, "argument invalid! article_idx out of range")
    if article_idx == 0:
        job.deleted_articles.update(range(1, max(1, len(job.article_urls)) + 1))
    else:
        job.deleted_articles.add(article_idx)
    if len(job.deleted_articles) >= max(1, len(job.article_urls)):
        job.status = "DELETE"
    return ok()


def get(call: Call) -> dict[str, Any]:
    job = _job(call.account, call.body.get("msg_id"))
    return {"msg_id": job.msg_id, "msg_status": job.status}


def speed_get(call: Call) -> dict[str, Any]:
    speed = call.account.mass_speed
    return {"speed": speed, "realspeed": limits.MASS_SPEEDS[speed]}


def speed_set(call: Call) -> dict[str, Any]:
    raw = call.body.get("speed")
    if raw is None:
        raise ApiError(Code.SPEED_MISSING)
    speed = int_field(raw)
    if speed is None or speed not in limits.MASS_SPEEDS:
        raise ApiError(Code.SPEED_OUT_OF_RANGE)
    call.account.mass_speed = speed
    return ok()


ENDPOINTS = [
    Endpoint("POST", "/cgi-bin/message/mass/sendall", sendall),
    Endpoint("POST", "/cgi-bin/message/mass/send", send),
    Endpoint("POST", "/cgi-bin/message/mass/preview", preview),
    Endpoint("POST", "/cgi-bin/message/mass/delete", delete),
    Endpoint("POST", "/cgi-bin/message/mass/get", get),
    Endpoint("POST", "/cgi-bin/message/mass/speed/get", speed_get, body=Body.OPTIONAL),
    Endpoint("POST", "/cgi-bin/message/mass/speed/set", speed_set, body=Body.OPTIONAL),
]
