"""Operator routes of the sending core on moto + the WeChat sandbox over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

import operator_api_handler
from tests.integration.conftest import call, json_body
from tests.support import wechat
from tests.support.fixtures import api_event
from tests.support.sending import SUB_TEMPLATE_ID, TEMPLATE_ID, SendingWorld, sending_world
from wxreach.wechat.keywords import Channel, describe_rule


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[SendingWorld]:
    with sending_world(monkeypatch) as w:
        yield w


def api(name: str, **overrides: Any) -> dict[str, Any]:
    return call(operator_api_handler, api_event(name, **overrides))


def body_of(name: str) -> dict[str, Any]:
    return json.loads(api_event(name)["body"])


def test_keyword_check_answers_in_order_with_reasons(world: SendingWorld) -> None:
    resp = api("check_keywords")
    assert resp["statusCode"] == 200, resp["body"]
    results = json_body(resp)["results"]
    assert [r["valid"] for r in results] == [True, False, False, True]
    assert results[0]["reason"] is None
    assert results[1]["reason"] and results[2]["reason"]


@pytest.mark.parametrize(
    "body",
    [
        {"items": []},
        {"items": [{"type": "thing", "value": True}]},
        {"items": [{"type": "thing", "value": "x"}] * 1001},
        {"items": [{"type": "thing", "channel": "mass", "value": "x"}]},
    ],
)
def test_keyword_check_refuses_bad_bodies_with_422(world: SendingWorld, body: dict[str, Any]) -> None:
    resp = api("check_keywords", body=body)
    assert resp["statusCode"] == 422
    assert json_body(resp)["error"] == "invalid_request"


def test_template_sync_list_and_get(world: SendingWorld) -> None:
    resp = api("sync_templates")
    assert resp["statusCode"] == 200, resp["body"]
    assert {r["channel"]: r["stored"] for r in json_body(resp)["results"]} == {"template": 1, "subscribe": 1}
    listed = json_body(api("list_templates"))["templates"]
    assert {t["template_id"] for t in listed} == {TEMPLATE_ID, SUB_TEMPLATE_ID}
    got = json_body(api("get_template"))
    assert [(k["name"], k["type"]) for k in got["keywords"]] == [
        ("thing1", "thing"),
        ("amount2", "amount"),
        ("character_string3", "character_string"),
    ]
    assert "no Chinese" in got["rules"]["character_string3"]
    assert "12 digits" in got["rules"]["amount2"]
    sub = api(
        "get_template",
        path_parameters={"appid": wechat.APPID, "channel": "subscribe", "template_id": SUB_TEMPLATE_ID},
    )
    assert json_body(sub)["kind"] == "one_time"
    assert "10 digits" in describe_rule("amount", Channel.SUBSCRIBE)


def test_templates_deleted_in_wechat_disappear_on_the_next_sync(world: SendingWorld) -> None:
    api("sync_templates")
    world.sandbox.sandbox.state.accounts[wechat.APPID].templates.pop(TEMPLATE_ID)
    api("sync_templates")
    missing = api("get_template")
    assert missing["statusCode"] == 404
    assert json_body(missing)["error"] == "unknown_template"


def test_preview_shows_final_values_violations_and_jump(world: SendingWorld) -> None:
    resp = api("preview_message")
    assert resp["statusCode"] == 200, resp["body"]
    body = json_body(resp)
    good, missing = body["samples"]
    assert good["values"] == {"thing1": "咖啡豆", "amount2": "¥88.00", "character_string3": "A-1001"}
    assert good["would_send"] is True and good["violations"] == []
    assert good["jump"]["kind"] == "url"
    assert missing["would_send"] is False
    assert "product" in missing["missing_params"]
    assert body["lint_level"] == "warn"


def test_preview_lints_marketing_wording(world: SendingWorld) -> None:
    body = body_of("preview_message")
    body["content"]["data"]["thing1"] = "限时秒杀优惠券"
    samples = json_body(api("preview_message", body=body))["samples"]
    assert "marketing_wording" in {f["rule"] for f in samples[0]["lint"]}


def test_single_send_answers_the_final_state_and_is_idempotent(world: SendingWorld) -> None:
    body = body_of("send_message")
    body["openid"] = world.followers[0]
    first = api("send_message", body=body)
    assert first["statusCode"] == 200, first["body"]
    message = json_body(first)["message"]
    assert message["state"] == "sent" and message["wechat_msgid"]
    again = json_body(api("send_message", body=body))["message"]
    assert again["message_id"] == message["message_id"]
    assert len(world.inbox(world.followers[0], "template")) == 1
    got = api("get_message", path_parameters={"appid": wechat.APPID, "message_id": message["message_id"]})
    assert json_body(got)["state"] == "sent"


def test_dry_run_sends_and_writes_nothing(world: SendingWorld) -> None:
    body = {**body_of("send_message"), "openid": world.followers[1], "dry_run": True}
    resp = json_body(api("send_message", body=body))
    assert resp["dry_run"] is True
    assert resp["message"]["state"] == "queued"
    assert resp["message"]["values"]["thing1"] == "咖啡豆"
    assert world.inbox(world.followers[1], "template") == []
    got = api(
        "get_message", path_parameters={"appid": wechat.APPID, "message_id": resp["message"]["message_id"]}
    )
    assert got["statusCode"] == 404


def test_single_send_wechat_asks_to_wait_is_queued_not_lost(
    world: SendingWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.faults({"path": "/cgi-bin/message/template/send", "errcodes": {"-1": 1.0}})
    body = {**body_of("send_message"), "openid": world.followers[2]}
    resp = api("send_message", body=body)
    assert resp["statusCode"] == 202, resp["body"]
    assert json_body(resp)["queued"] is True
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=world.aws.queues["SendQueue"], AttributeNames=["All"]
    )["Attributes"]
    waiting = int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesDelayed"]
    )
    assert waiting == 2  # the safety net queued first, and the retry after WeChat's back-off
    message = json_body(resp)["message"]
    assert (message["state"], message["attempts"]) == ("queued", 1)


def test_unknown_message_and_bad_ids_are_4xx(world: SendingWorld) -> None:
    assert api("get_message")["statusCode"] == 404
    bad = api("get_message", path_parameters={"appid": wechat.APPID, "message_id": "not-a-message-id"})
    assert bad["statusCode"] == 422


def test_synced_long_term_template_makes_the_webhooks_grant_long_term(world: SendingWorld) -> None:
    import time

    import webhook_handler
    from tests.support.fixtures import callback_xml

    world.admin_call(
        "POST",
        f"/accounts/{wechat.APPID}/subscription-templates",
        {"pri_tmpl_id": "SUB_GOV_NOTICE", "title": "办事进度", "type": "long_term", "keywords": ["thing1"]},
    )
    assert api("sync_templates")["statusCode"] == 200
    xml = callback_xml("subscribe_msg_popup_single", CreateTime=str(int(time.time()))).replace(
        "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc", "SUB_GOV_NOTICE"
    )
    push = wechat.plaintext_push(xml)
    resp = call(webhook_handler, api_event("webhook_push", query=push.query, body=push.body))
    assert resp["statusCode"] == 200, resp["body"]
    view = json_body(api("get_follower"))
    (grant,) = [g for g in view["subscriptions"] if g["template_id"] == "SUB_GOV_NOTICE"]
    assert grant["long_term"] is True and grant["one_time_credits"] == 0


@pytest.mark.parametrize(
    "raw",
    [
        '{"items": ' + "[" * 5000 + "]" * 5000 + "}",
        '{"items": [{"type": "number", "value": ' + "9" * 5000 + "}]}",
        '{"items": [{"type": "thing", "value": "\\ud800"}]}',
    ],
    ids=["deep-nesting", "huge-integer", "lone-surrogate"],
)
def test_bodies_python_cannot_hold_are_400_not_5xx(world: SendingWorld, raw: str) -> None:
    event = api_event("check_keywords")
    event["body"] = raw
    resp = call(operator_api_handler, event)
    assert resp["statusCode"] == 400, resp["body"]
    assert json_body(resp)["error"] == "malformed_json"


def test_keyword_check_refuses_lone_surrogates() -> None:
    from wxreach.wechat.keywords import check_value

    assert check_value("thing", "好\ud800", Channel.TEMPLATE) is not None
