"""Bad callbacks get a clean 4xx with a machine-readable reason and write nothing (issue: three
5xx paths found by an external fuzz run)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

import webhook_handler
from tests.integration.conftest import AwsCall, call, json_body
from tests.integration.test_webhook import ACCEPTED_TPL, NOW, credits, follower, push, safe
from tests.support import wechat
from tests.support.aws import AwsWorld
from tests.support.fixtures import api_event, callback_xml
from wxreach import container
from wxreach.reach.followers import WriteOutcome

# Every AWS operation that changes state, across the services the webhook talks to.
WRITES = frozenset(
    {
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "TransactWriteItems",
        "BatchWriteItem",
        "SendMessage",
        "SendMessageBatch",
        "PutEvents",
    }
)
ENCODINGS = ["gbk", "gb2312", "big5", "shift_jis", "utf-7", "utf-32", "x-no-such-codec"]
LONG_OPENID = "o" + "A1b2" * 525  # 2 101 characters


def writes(calls: list[AwsCall]) -> list[str]:
    return [f"{c.service}:{c.operation}" for c in calls if c.operation in WRITES]


def refused(resp: dict[str, Any], status: int, reason: str) -> None:
    assert resp["statusCode"] == status, resp["body"]
    body = json_body(resp)
    assert body["error"] == reason, body
    assert "Traceback" not in resp["body"]


@pytest.fixture
def calls(safe_account: AwsWorld, aws_calls: list[AwsCall]) -> list[AwsCall]:
    aws_calls.clear()
    return aws_calls


def popup_xml(items: int, *, create_time: int = NOW, openid: str = wechat.OPENID) -> str:
    entries = "".join(
        f"<List><TemplateId><![CDATA[tpl{index:03d}_{'x' * 30}]]></TemplateId>"
        "<SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>2</PopupScene></List>"
        for index in range(items)
    )
    return (
        f"<xml><ToUserName><![CDATA[{wechat.ORIGINAL_ID}]]></ToUserName>"
        f"<FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{create_time}</CreateTime>"
        "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_popup_event]]></Event>"
        f"<SubscribeMsgPopupEvent>{entries}</SubscribeMsgPopupEvent></xml>"
    )


def declared(encoding: str, xml: str) -> str:
    return f'<?xml version="1.0" encoding="{encoding}"?>' + xml


# -- 1. XML declarations naming an encoding expat cannot read -------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_declared_encoding_in_a_plaintext_body_is_malformed(
    world: AwsWorld, register_account: Any, aws_calls: list[AwsCall], encoding: str
) -> None:
    register_account(encryption_mode="plaintext")
    aws_calls.clear()
    resp = push(wechat.plaintext_push(declared(encoding, callback_xml("subscribe", CreateTime=str(NOW)))))
    refused(resp, 400, "malformed_xml")
    assert writes(aws_calls) == []


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_declared_encoding_in_the_decrypted_xml_is_malformed(calls: list[AwsCall], encoding: str) -> None:
    resp = push(wechat.safe_push(declared(encoding, callback_xml("subscribe", CreateTime=str(NOW)))))
    refused(resp, 400, "malformed_xml")
    assert writes(calls) == []


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_declared_encoding_in_the_safe_mode_envelope_is_malformed(
    calls: list[AwsCall], encoding: str
) -> None:
    p = safe("subscribe")
    resp = push(wechat.Push(query=p.query, body=declared(encoding, p.body)))
    refused(resp, 400, "malformed_xml")
    assert writes(calls) == []


def test_utf8_declaration_is_still_accepted(calls: list[AwsCall]) -> None:
    resp = push(wechat.safe_push(declared("utf-8", callback_xml("subscribe", CreateTime=str(NOW)))))
    assert resp["statusCode"] == 200


# -- 2. Values that would become oversize DynamoDB keys ---------------------------------------


@pytest.mark.parametrize(
    "fixture", ["subscribe", "text_message", "template_send_job_finish", "unknown_event"]
)
def test_long_from_user_name_is_refused_before_any_write(calls: list[AwsCall], fixture: str) -> None:
    resp = push(safe(fixture, FromUserName=LONG_OPENID))
    refused(resp, 400, "invalid_openid")
    assert writes(calls) == []


def test_long_openid_in_the_query_is_refused_before_any_aws_call(calls: list[AwsCall]) -> None:
    p = safe("subscribe")
    resp = push(wechat.Push(query={**p.query, "openid": LONG_OPENID}, body=p.body))
    refused(resp, 400, "invalid_openid")
    assert calls == []


def test_popup_from_a_1000_character_openid_is_refused(calls: list[AwsCall]) -> None:
    resp = push(wechat.safe_push(popup_xml(1, openid="o" * 1000)))
    refused(resp, 400, "invalid_openid")
    assert writes(calls) == []


def test_long_template_id_is_refused(calls: list[AwsCall]) -> None:
    xml = callback_xml("subscribe_msg_popup_single", CreateTime=str(NOW)).replace(
        "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc", "T" * 1100
    )
    refused(push(wechat.safe_push(xml)), 400, "invalid_template_id")
    assert writes(calls) == []


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("MsgID", "9" * 2000, "invalid_msg_id"),
        ("Event", "E" * 500, "invalid_event_name"),
    ],
)
def test_other_key_fields_are_bounded(calls: list[AwsCall], field: str, value: str, reason: str) -> None:
    refused(push(safe("template_send_job_finish", **{field: value})), 400, reason)
    assert writes(calls) == []


def test_long_qr_scene_is_refused(calls: list[AwsCall]) -> None:
    refused(push(safe("subscribe_qrscene", EventKey="qrscene_" + "s" * 300)), 400, "invalid_event_key")
    assert writes(calls) == []


# -- 3. Popups with more templates than WeChat sends ------------------------------------------


@pytest.mark.parametrize("items", [6, 25, 100])
def test_popup_with_more_than_five_templates_is_refused(calls: list[AwsCall], items: int) -> None:
    refused(push(wechat.safe_push(popup_xml(items))), 400, "too_many_items")
    assert writes(calls) == []


def test_popup_work_does_not_grow_with_more_than_one_call_per_item(calls: list[AwsCall]) -> None:
    """One kinds read and one grant transaction per popup; only the status write is per item."""

    def dynamodb_calls(items: int, create_time: int) -> list[str]:
        calls.clear()
        assert push(wechat.safe_push(popup_xml(items, create_time=create_time)))["statusCode"] == 200
        return [c.operation for c in calls if c.service == "dynamodb"]

    dynamodb_calls(1, NOW - 20)  # warms the account and secret caches
    one, five = dynamodb_calls(1, NOW - 10), dynamodb_calls(5, NOW)
    assert five.count("TransactWriteItems") == one.count("TransactWriteItems") == 1
    assert five.count("BatchGetItem") == one.count("BatchGetItem") == 1
    assert len(five) - len(one) == 4  # one status write per extra template


def test_five_template_popup_grants_all_five(calls: list[AwsCall]) -> None:
    assert push(wechat.safe_push(popup_xml(5)))["statusCode"] == 200
    grants = credits(follower())
    assert len(grants) == 5
    assert {g["one_time_credits"] for g in grants.values()} == {1}
    assert {g["status"] for g in grants.values()} == {"accepted"}


def _tpl(index: int) -> str:
    return f"tpl{index:03d}_{'x' * 30}"


def test_one_grant_transaction_sorts_out_replayed_and_revoked_items(safe_account: AwsWorld) -> None:
    """Items whose condition cancels the transaction are taken out; the rest are still granted."""
    store = container.followers()
    store.grant_one_time(wechat.APPID, wechat.OPENID, {_tpl(0): "k0", _tpl(1): "k1"}, at=_at(NOW - 30))
    revoke = callback_xml("subscribe_msg_change_event", CreateTime=str(NOW - 10))
    assert push(wechat.safe_push(revoke.replace(ACCEPTED_TPL, _tpl(0))))["statusCode"] == 200

    outcomes = store.grant_one_time(
        wechat.APPID, wechat.OPENID, {_tpl(0): "k0-late", _tpl(1): "k1", _tpl(2): "k2"}, at=_at(NOW - 20)
    )
    assert outcomes == {
        _tpl(0): WriteOutcome.STALE,  # accepted before the revoke, arriving after it
        _tpl(1): WriteOutcome.REPLAYED,
        _tpl(2): WriteOutcome.APPLIED,
    }
    grants = credits(follower())
    assert [grants[_tpl(i)]["one_time_credits"] for i in range(3)] == [0, 1, 1]
    assert grants[_tpl(0)]["status"] == "revoked"


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# -- timestamps: ASCII digits only ------------------------------------------------------------


@pytest.mark.parametrize(
    "timestamp",
    ["１７１４０３６５０４", "1_714_036_504", f" {NOW} ", f"+{NOW}", "٣"],
    ids=["full-width", "underscores", "spaces", "sign", "arabic-indic"],
)
def test_query_timestamp_must_be_ascii_digits(calls: list[AwsCall], timestamp: str) -> None:
    p = safe("subscribe")
    resp = call(
        webhook_handler,
        api_event("webhook_push", query={**p.query, "timestamp": timestamp}, body=p.body),
    )
    refused(resp, 400, "bad_timestamp")
    assert writes(calls) == []
