"""The webhook handler end to end on moto: every callback's effect, dedupe, rotation, refusals."""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest

import webhook_handler
from tests.integration.conftest import call, json_body
from tests.support import wechat
from tests.support.aws import AwsWorld
from tests.support.fixtures import api_event, callback_xml
from wxreach.aws import keys

NOW = int(time.time())
# Template ids as they appear in events/wechat/subscribe_msg_*.xml.
ACCEPTED_TPL = "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc"
REJECTED_TPL = "9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI"


def push(p: wechat.Push, appid: str = wechat.APPID) -> dict[str, Any]:
    return call(
        webhook_handler,
        api_event("webhook_push", path_parameters={"appid": appid}, query=p.query, body=p.body),
    )


def follower(appid: str = wechat.APPID, openid: str = wechat.OPENID) -> dict[str, Any]:
    import operator_api_handler

    resp = call(
        operator_api_handler,
        api_event("get_follower", path_parameters={"appid": appid, "openid": openid}),
    )
    assert resp["statusCode"] == 200, resp["body"]
    return json_body(resp)


def credits(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {grant["template_id"]: grant for grant in view["subscriptions"]}


def mark_long_term(world: AwsWorld, template_id: str = ACCEPTED_TPL) -> None:
    """What the template sync records for a long-term subscription template."""
    boto3.client("dynamodb").put_item(
        TableName=world.tables["QuotaTable"],
        Item={
            "pk": {"S": keys.account_pk(wechat.APPID)},
            "sk": {"S": keys.subscription_template_sk(template_id)},
            "kind": {"S": "long_term"},
        },
    )


def safe(name: str, *, create_time: int = NOW, **fields: str) -> wechat.Push:
    return wechat.safe_push(callback_xml(name, CreateTime=str(create_time), **fields))


@pytest.fixture
def plain_account(world: AwsWorld, register_account: Any) -> AwsWorld:
    register_account(encryption_mode="plaintext")
    return world


# -- URL verification ------------------------------------------------------------------------


def test_url_verification_returns_echostr_verbatim(safe_account: AwsWorld) -> None:
    p = wechat.plaintext_push("", timestamp=1714036504)
    query = {**p.query, "echostr": "4375120948345356249"}
    resp = call(webhook_handler, api_event("webhook_verify", query=query))
    assert resp["statusCode"] == 200
    assert resp["body"] == "4375120948345356249"


def test_url_verification_with_bad_signature_is_403(safe_account: AwsWorld) -> None:
    resp = call(webhook_handler, api_event("webhook_verify"))  # fixture's signature is for token AAAAA
    assert resp["statusCode"] == 403
    assert json_body(resp)["error"] == "bad_signature"


def test_url_verification_for_unknown_account_is_404(safe_account: AwsWorld) -> None:
    resp = call(webhook_handler, api_event("webhook_verify", path_parameters={"appid": "wx0000000000000000"}))
    assert resp["statusCode"] == 404
    assert json_body(resp)["error"] == "unknown_account"


# -- effects ---------------------------------------------------------------------------------


def test_follow_in_safe_mode_records_follower_scene_and_journey(safe_account: AwsWorld) -> None:
    resp = push(safe("subscribe_qrscene"))
    assert resp["statusCode"] == 200
    assert resp["body"] == "success"
    view = follower()
    assert view["following"] is True
    assert view["scene"] == "spring_campaign_42"
    assert view["followed_at"] is not None
    assert view["last_interaction_at"] is not None
    (event,) = safe_account.journey_events()
    assert event["detail-type"] == "Follower Followed"
    assert event["detail"]["appid"] == wechat.APPID
    assert event["detail"]["openid"] == wechat.OPENID
    assert event["detail"]["scene"] == "spring_campaign_42"


def test_unfollow_after_follow_clears_following(safe_account: AwsWorld) -> None:
    push(safe("subscribe", create_time=NOW - 10))
    push(safe("unsubscribe", create_time=NOW))
    view = follower()
    assert view["following"] is False
    assert view["unfollowed_at"] is not None
    kinds = [e["detail-type"] for e in safe_account.journey_events()]
    assert sorted(kinds) == ["Follower Followed", "Follower Unfollowed"]


def test_late_follow_does_not_undo_a_newer_unfollow(safe_account: AwsWorld) -> None:
    push(safe("unsubscribe", create_time=NOW))
    push(safe("subscribe", create_time=NOW - 60))
    assert follower()["following"] is False


def test_user_message_and_scan_move_last_interaction(safe_account: AwsWorld) -> None:
    push(safe("text_message", create_time=NOW - 100))
    first = follower()["last_interaction_at"]
    push(safe("scan", create_time=NOW))
    assert follower()["last_interaction_at"] > first


def test_popup_accept_grants_one_time_credit_and_reject_records_rejection(safe_account: AwsWorld) -> None:
    push(safe("subscribe_msg_popup_event"))
    grants = credits(follower())
    accepted, rejected = grants[ACCEPTED_TPL], grants[REJECTED_TPL]
    assert accepted["status"] == "accepted"
    assert accepted["one_time_credits"] == 1
    assert accepted["long_term"] is False
    assert rejected["status"] == "rejected"
    assert rejected["one_time_credits"] == 0
    kinds = sorted(e["detail-type"] for e in safe_account.journey_events())
    assert kinds == ["Subscription Accepted", "Subscription Rejected"]


def test_each_accept_adds_one_credit(safe_account: AwsWorld) -> None:
    push(safe("subscribe_msg_popup_single", create_time=NOW - 5))
    push(safe("subscribe_msg_popup_single", create_time=NOW))
    assert credits(follower())[ACCEPTED_TPL]["one_time_credits"] == 2


def test_accept_of_a_long_term_template_grants_long_term(safe_account: AwsWorld) -> None:
    mark_long_term(safe_account)
    push(safe("subscribe_msg_popup_single"))
    grant = credits(follower())[ACCEPTED_TPL]
    assert grant["long_term"] is True
    assert grant["one_time_credits"] == 0


def test_change_event_reject_revokes_long_term_grant(safe_account: AwsWorld) -> None:
    mark_long_term(safe_account)
    push(safe("subscribe_msg_popup_single", create_time=NOW - 30))
    push(safe("subscribe_msg_change_event", create_time=NOW))
    grant = credits(follower())[ACCEPTED_TPL]
    assert grant["status"] == "revoked"
    assert grant["long_term"] is False
    assert "Subscription Revoked" in [e["detail-type"] for e in safe_account.journey_events()]


@pytest.mark.parametrize(
    ("fixture", "kind"),
    [
        ("template_send_job_finish", "template_send_job_finish"),
        ("template_send_job_finish_failed", "template_send_job_finish"),
        ("mass_send_job_finish", "mass_send_job_finish"),
        ("subscribe_msg_sent_event", "subscribe_msg_sent"),
        ("publish_job_finish", "publish_job_finish"),
        ("freepublish_job_finish", "publish_job_finish"),
    ],
)
def test_delivery_events_are_queued_for_the_status_updater(
    safe_account: AwsWorld, fixture: str, kind: str
) -> None:
    resp = push(safe(fixture))
    assert resp["statusCode"] == 200
    (message,) = safe_account.queue_messages("StatusQueue")
    assert message["appid"] == wechat.APPID
    assert message["kind"] == kind
    assert message["event"]["raw"]["Event"]
    assert safe_account.journey_events() == []


def test_mass_job_finish_keeps_19_digit_msg_id_exactly(safe_account: AwsWorld) -> None:
    push(safe("mass_send_job_finish", MsgID="1700827132819554304"))
    (message,) = safe_account.queue_messages("StatusQueue")
    assert message["event"]["msg_id"] == "1700827132819554304"


def test_unknown_event_is_acknowledged_and_kept_out_of_state(safe_account: AwsWorld) -> None:
    resp = push(safe("unknown_event"))
    assert resp["statusCode"] == 200
    assert safe_account.queue_messages("StatusQueue") == []


def test_plaintext_mode_account_accepts_signed_plaintext(plain_account: AwsWorld) -> None:
    resp = push(wechat.plaintext_push(callback_xml("subscribe", CreateTime=str(NOW))))
    assert resp["statusCode"] == 200
    assert follower()["following"] is True


# -- dedupe and rotation ---------------------------------------------------------------------


def test_three_redeliveries_have_one_effect(safe_account: AwsWorld) -> None:
    xml = callback_xml("subscribe_msg_popup_single", CreateTime=str(NOW))
    for nonce in ("111", "222", "333"):  # WeChat re-signs every retry
        assert push(wechat.safe_push(xml, nonce=nonce))["body"] == "success"
    assert credits(follower())[ACCEPTED_TPL]["one_time_credits"] == 1
    assert len(safe_account.journey_events()) == 1


def test_delivery_event_redelivered_is_queued_once(safe_account: AwsWorld) -> None:
    xml = callback_xml("template_send_job_finish", CreateTime=str(NOW))
    for _ in range(3):
        push(wechat.safe_push(xml))
    assert len(safe_account.queue_messages("StatusQueue")) == 1


def test_rotation_accepts_callbacks_encrypted_with_previous_key(
    world: AwsWorld, register_account: Any
) -> None:
    register_account(
        secrets={
            "app_secret": wechat.APP_SECRET,
            "token": wechat.TOKEN,
            "encoding_aes_key": wechat.AES_KEY,
            "previous_encoding_aes_key": wechat.PREVIOUS_AES_KEY,
        }
    )
    old = wechat.safe_push(callback_xml("subscribe", CreateTime=str(NOW)), aes_key=wechat.PREVIOUS_AES_KEY)
    assert push(old)["statusCode"] == 200
    assert follower()["following"] is True


# -- refusals write nothing -----------------------------------------------------------------


def _state_sizes(world: AwsWorld) -> tuple[int, int]:
    return world.item_count("QuotaTable"), world.item_count("IdempotencyTable")


OTHER_KEY = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg"


@pytest.mark.parametrize(
    ("make_push", "status", "reason"),
    [
        (lambda xml: wechat.safe_push(xml, token="wrongToken"), 403, "bad_signature"),
        (lambda xml: wechat.safe_push(xml, aes_key=OTHER_KEY), 400, "decrypt_failed"),
        (lambda xml: wechat.safe_push(xml, appid="wxffffffffffffffff"), 403, "appid_mismatch"),
        (lambda xml: wechat.safe_push(xml, timestamp=NOW - 3600), 403, "stale_timestamp"),
        (lambda xml: wechat.plaintext_push(xml), 403, "plaintext_refused"),
        (
            lambda xml: wechat.Push(
                query={**wechat.safe_push(xml).query, "msg_signature": "0" * 40},
                body=wechat.safe_push(xml).body,
            ),
            403,
            "bad_signature",
        ),
        (
            lambda xml: wechat.Push(query=wechat.safe_push(xml).query, body="<xml><Encrypt>AAAA"),
            400,
            "malformed_xml",
        ),
        (
            lambda xml: wechat.Push(query={**wechat.safe_push(xml).query, "timestamp": "soon"}, body=xml),
            400,
            "bad_timestamp",
        ),
    ],
    ids=["token", "aes-key", "appid", "replay", "plaintext", "msg-signature", "garbage", "timestamp"],
)
def test_refused_pushes_write_nothing(
    safe_account: AwsWorld, make_push: Any, status: int, reason: str
) -> None:
    before = _state_sizes(safe_account)
    resp = push(make_push(callback_xml("subscribe", CreateTime=str(NOW))))
    assert resp["statusCode"] == status, resp["body"]
    assert json_body(resp)["error"] == reason
    assert _state_sizes(safe_account) == before
    assert safe_account.queue_messages("StatusQueue") == []
    assert safe_account.journey_events() == []


def test_plaintext_push_for_another_account_is_refused(plain_account: AwsWorld) -> None:
    resp = push(wechat.plaintext_push(callback_xml("subscribe", ToUserName="gh_otheraccount1")))
    assert resp["statusCode"] == 403
    assert json_body(resp)["error"] == "account_mismatch"


def test_push_to_unknown_account_is_404(safe_account: AwsWorld) -> None:
    resp = push(safe("subscribe"), appid="wx0000000000000000")
    assert resp["statusCode"] == 404


def test_xml_bomb_is_refused_with_400(plain_account: AwsWorld) -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
        "<xml><ToUserName>&b;</ToUserName></xml>"
    )
    resp = push(wechat.plaintext_push(bomb))
    assert resp["statusCode"] == 400
    assert json_body(resp)["error"] == "forbidden_xml"


def test_replay_window_zero_disables_the_check(
    monkeypatch: pytest.MonkeyPatch, register_account: Any
) -> None:
    from tests.support.aws import aws_world

    with aws_world(monkeypatch, replay_window_seconds="0"):
        register_account()
        resp = push(wechat.safe_push(callback_xml("subscribe", CreateTime=str(NOW)), timestamp=NOW - 86400))
        assert resp["statusCode"] == 200


def test_failure_after_state_writes_lets_the_retry_finish_without_double_grant(
    safe_account: AwsWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wxreach import container

    xml = callback_xml("subscribe_msg_popup_single", CreateTime=str(NOW))
    monkeypatch.setenv("WXREACH_JOURNEY_BUS", "no-such-bus")
    container.reset()
    with pytest.raises(Exception):  # noqa: B017 - Lambda reports it; API Gateway answers 5xx, WeChat retries
        push(wechat.safe_push(xml, nonce="1"))
    assert credits(follower())[ACCEPTED_TPL]["one_time_credits"] == 1

    monkeypatch.setenv("WXREACH_JOURNEY_BUS", safe_account.bus_name)
    container.reset()
    assert push(wechat.safe_push(xml, nonce="2"))["body"] == "success"
    assert credits(follower())[ACCEPTED_TPL]["one_time_credits"] == 1
    assert [e["detail-type"] for e in safe_account.journey_events()] == ["Subscription Accepted"]


@pytest.fixture
def compatible_account(world: AwsWorld, register_account: Any) -> AwsWorld:
    register_account(encryption_mode="compatible")
    return world


def test_compatible_mode_uses_the_encrypted_copy_and_refuses_raw(compatible_account: AwsWorld) -> None:
    xml = callback_xml("subscribe_qrscene", CreateTime=str(NOW))
    encrypted = wechat.safe_push(xml)
    # Compatible mode: plaintext fields and <Encrypt> side by side; only the encrypted copy counts.
    tampered_plain = xml.replace("qrscene_spring_campaign_42", "qrscene_forged")
    encrypt = encrypted.body.split("<Encrypt>")[1].split("</Encrypt>")[0]
    body = tampered_plain.replace("</xml>", f"<Encrypt>{encrypt}</Encrypt></xml>")
    assert push(wechat.Push(query=encrypted.query, body=body))["statusCode"] == 200
    assert follower()["scene"] == "spring_campaign_42"

    resp = push(wechat.plaintext_push(callback_xml("unsubscribe", CreateTime=str(NOW + 1))))
    assert resp["statusCode"] == 403
    assert json_body(resp)["error"] == "plaintext_refused"
    assert follower()["following"] is True


def test_plaintext_push_whose_openid_differs_from_the_url_is_refused(plain_account: AwsWorld) -> None:
    p = wechat.plaintext_push(callback_xml("subscribe", CreateTime=str(NOW)))
    resp = push(wechat.Push(query={**p.query, "openid": "oSomeoneElse0000000000000000"}, body=p.body))
    assert resp["statusCode"] == 403
    assert json_body(resp)["error"] == "openid_mismatch"
