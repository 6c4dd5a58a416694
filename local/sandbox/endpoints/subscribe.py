"""Subscription notifications (§3): bizsend and the private template list."""

from __future__ import annotations

from typing import Any

from local.sandbox import events
from local.sandbox.endpoints.common import (
    Body,
    Call,
    Endpoint,
    jump_target,
    known_user,
    ok,
    require_verified,
    validate_data,
)
from local.sandbox.errors import ApiError, Code
from local.sandbox.keyword_rules import Family
from local.sandbox.model import InboxMessage, SubscriptionKind


def bizsend(call: Call) -> dict[str, Any]:
    account, body, state, now = call.account, call.body, call.state, call.now
    require_verified(account)
    # non-followers are fine here: they receive it under "Service Notifications" (§3)
    user = known_user(account, body.get("touser"))
    template_id = body.get("template_id")
    template = account.subscription_templates.get(template_id) if isinstance(template_id, str) else None
    if template is None:
        raise ApiError(Code.INVALID_TEMPLATE_ID)
    # validate before touching the grant, so a rejected request never burns the user's authorisation
    values = validate_data(
        Family.SUBSCRIPTION, template, body.get("data"), iso_datetime=state.config.accept_iso_datetime
    )
    grant = user.grants.get(template.pri_tmpl_id)
    if template.kind is SubscriptionKind.LONG_TERM:
        if grant is None or not grant.long_term_accepted:
            raise ApiError(Code.SUBSCRIPTION_REFUSED)
    elif grant is None or grant.credits <= 0:
        raise ApiError(Code.SUBSCRIPTION_REFUSED)

    # build everything that can fail (the push) before the grant is consumed
    msgid = state.ids.msgid()
    message = InboxMessage(
        inbox_id=state.ids.inbox_id(),
        kind="subscription",
        msgid=msgid,
        received_at=now,
        content=template.render(values),
        channel="chat" if user.following else "service_notifications",
        template_id=template.pri_tmpl_id,
        data=values,
        link=jump_target(body, "page"),
    )
    push = state.prepare_push(
        account,
        user.openid,
        "subscribe_msg_sent_event",
        events.subscribe_msg_sent(
            account.original_id,
            user.openid,
            state.event_time(),
            [(template.pri_tmpl_id, msgid, 0, "success")],
        ),
    )

    # commit: plain in-memory updates that cannot fail
    if template.kind is SubscriptionKind.ONE_TIME:
        grant.credits -= 1  # one accept = exactly one send (§3)
    grant.history.append({"at": int(now), "action": "sent", "msgid": msgid})
    user.inbox.append(message)
    state.submit(push)
    return ok(msgid=msgid)


def gettemplate(call: Call) -> dict[str, Any]:
    return ok(data=[t.to_wechat() for t in call.account.subscription_templates.values()])


ENDPOINTS = [
    Endpoint("POST", "/cgi-bin/message/subscribe/bizsend", bizsend),
    Endpoint("GET", "/wxaapi/newtmpl/gettemplate", gettemplate, body=Body.NONE),
]
