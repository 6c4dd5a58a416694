"""Template messages (§2): send, and the private template list."""

from __future__ import annotations

from typing import Any

from local.sandbox import events, limits
from local.sandbox.clock import china_day
from local.sandbox.endpoints.common import (
    Body,
    Call,
    Endpoint,
    jump_target,
    known_user,
    ok,
    require_verified_service,
    validate_data,
)
from local.sandbox.errors import ApiError, Code
from local.sandbox.keyword_rules import Family
from local.sandbox.model import InboxMessage


def send(call: Call) -> dict[str, Any]:
    account, body, state, now = call.account, call.body, call.state, call.now
    require_verified_service(account)
    user = known_user(account, body.get("touser"))
    if not user.following:
        raise ApiError(Code.REQUIRE_SUBSCRIBE)
    template_id = body.get("template_id")
    template = account.templates.get(template_id) if isinstance(template_id, str) else None
    if template is None:
        raise ApiError(Code.INVALID_TEMPLATE_ID)
    values = validate_data(
        Family.TEMPLATE, template, body.get("data"), iso_datetime=state.config.accept_iso_datetime
    )

    account.prune_windows(now)
    client_msg_id = body.get("client_msg_id")
    dedupe_key = (user.openid, client_msg_id) if isinstance(client_msg_id, str) and client_msg_id else None
    if dedupe_key is not None:
        seen = account.template_dedupe.get(dedupe_key)
        if seen is not None and now - seen[1] < limits.TEMPLATE_CLIENT_MSG_ID_WINDOW_S:
            # same openid + client_msg_id inside 10 minutes: one message only (§2.1)
            return ok(msgid=seen[0])

    quota_key = ("template", china_day(now))
    if account.daily[quota_key] >= account.template_daily_quota:
        raise ApiError(Code.DAILY_QUOTA)

    # build everything that can fail (the push is signed and maybe encrypted) before changing state
    msgid = state.ids.msgid()
    blocked = user.template_block  # accepted by the API, refused by the user (§2.4)
    message = (
        None
        if blocked
        else InboxMessage(
            inbox_id=state.ids.inbox_id(),
            kind="template",
            msgid=msgid,
            received_at=now,
            content=template.render(values),
            template_id=template.template_id,
            data=values,
            link=jump_target(body, "url"),
            client_msg_id=client_msg_id if dedupe_key else None,
        )
    )
    status = "failed:user block" if blocked else "success"
    push = state.prepare_push(
        account,
        user.openid,
        "TEMPLATESENDJOBFINISH",
        events.template_send_job_finish(account.original_id, user.openid, state.event_time(), msgid, status),
    )

    # commit: plain in-memory updates that cannot fail
    account.daily[quota_key] += 1
    if dedupe_key is not None:
        account.remember_template(dedupe_key, msgid, now)
    if message is not None:
        user.inbox.append(message)
    state.submit(push)
    return ok(msgid=msgid)


def get_all_private_template(call: Call) -> dict[str, Any]:
    return {"template_list": [t.to_wechat() for t in call.account.templates.values()]}


ENDPOINTS = [
    Endpoint("POST", "/cgi-bin/message/template/send", send),
    Endpoint("GET", "/cgi-bin/template/get_all_private_template", get_all_private_template, body=Body.NONE),
]
