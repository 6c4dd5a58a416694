"""Retries, races and out-of-order delivery: nothing lost, nothing applied twice, never backwards."""

from __future__ import annotations

import time

import pytest
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig

from tests.integration.conftest import AwsCall
from tests.integration.test_webhook import (
    ACCEPTED_TPL,
    NOW,
    REJECTED_TPL,
    credits,
    follower,
    mark_long_term,
    push,
    safe,
)
from tests.support import wechat
from tests.support.aws import AwsWorld
from tests.support.fixtures import callback_xml
from wxreach import container
from wxreach.aws.dedupe import KEY_PREFIX
from wxreach.wechat.callback_events import parse_event
from wxreach.wechat.callback_xml import parse_callback_xml


def _break_journeys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WXREACH_JOURNEY_BUS", "no-such-bus")
    container.reset()


def _mend_journeys(monkeypatch: pytest.MonkeyPatch, world: AwsWorld) -> None:
    monkeypatch.setenv("WXREACH_JOURNEY_BUS", world.bus_name)
    container.reset()


def test_each_decision_of_one_popup_has_its_own_event_id(safe_account: AwsWorld) -> None:
    push(safe("subscribe_msg_popup_event"))
    events = safe_account.journey_events()
    ids = [e["detail"]["event_id"] for e in events]
    assert len(ids) == 2
    assert len(set(ids)) == 2
    assert {i.rsplit(":", 1)[1] for i in ids} == {ACCEPTED_TPL, REJECTED_TPL}


def test_dedupe_holds_across_instances(safe_account: AwsWorld) -> None:
    xml = callback_xml("subscribe_msg_popup_single", CreateTime=str(NOW))
    for nonce in ("1", "2", "3"):
        container.reset()  # a fresh container: nothing remembered in memory
        assert push(wechat.safe_push(xml, nonce=nonce))["statusCode"] == 200
    assert credits(follower())[ACCEPTED_TPL]["one_time_credits"] == 1
    assert len(safe_account.journey_events()) == 1


def test_redelivery_while_the_first_is_in_progress_asks_wechat_to_retry(safe_account: AwsWorld) -> None:
    xml = callback_xml("subscribe_msg_popup_single", CreateTime=str(NOW))
    event = parse_event(parse_callback_xml(xml))
    layer = DynamoDBPersistenceLayer(table_name=safe_account.tables["IdempotencyTable"])
    layer.configure(IdempotencyConfig(event_key_jmespath="dedupe_key"), key_prefix=KEY_PREFIX)
    layer.save_inprogress(
        data={"dedupe_key": f"{wechat.APPID}:{event.dedupe_key}"}, remaining_time_in_millis=60_000
    )

    resp = push(wechat.safe_push(xml))
    assert resp["statusCode"] == 503
    assert safe_account.journey_events() == []


def test_the_same_accept_retried_after_another_accept_still_grants_once(
    safe_account: AwsWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = callback_xml("subscribe_msg_popup_single", CreateTime=str(NOW - 20))
    second = callback_xml("subscribe_msg_popup_single", CreateTime=str(NOW - 10))
    _break_journeys(monkeypatch)
    with pytest.raises(Exception):  # noqa: B017 - the publish fails after the credit was written
        push(wechat.safe_push(first, nonce="1"))
    _mend_journeys(monkeypatch, safe_account)
    push(wechat.safe_push(second, nonce="2"))
    push(wechat.safe_push(first, nonce="3"))  # WeChat's retry of the first accept
    assert credits(follower())[ACCEPTED_TPL]["one_time_credits"] == 2


def test_revoke_withdraws_credits_and_a_late_accept_does_not_restore_them(safe_account: AwsWorld) -> None:
    push(safe("subscribe_msg_popup_single", create_time=NOW - 60))
    push(safe("subscribe_msg_change_event", create_time=NOW - 30))
    push(safe("subscribe_msg_popup_single", create_time=NOW - 45))  # accepted before the revoke, arrives late
    grant = credits(follower())[ACCEPTED_TPL]
    assert grant["status"] == "revoked"
    assert grant["one_time_credits"] == 0
    kinds = [e["detail-type"] for e in safe_account.journey_events()]
    assert kinds.count("Subscription Accepted") == 1
    assert kinds.count("Subscription Revoked") == 1


def test_a_reject_ends_a_long_term_grant(safe_account: AwsWorld) -> None:
    mark_long_term(safe_account)
    push(safe("subscribe_msg_popup_single", create_time=NOW - 30))
    assert credits(follower())[ACCEPTED_TPL]["long_term"] is True
    reject = callback_xml("subscribe_msg_popup_single", CreateTime=str(NOW)).replace(
        "<![CDATA[accept]]>", "<![CDATA[reject]]>"
    )
    push(wechat.safe_push(reject))
    grant = credits(follower())[ACCEPTED_TPL]
    assert grant["status"] == "rejected"
    assert grant["long_term"] is False


def test_a_stale_long_term_accept_neither_changes_state_nor_publishes(safe_account: AwsWorld) -> None:
    mark_long_term(safe_account)
    push(safe("subscribe_msg_change_event", create_time=NOW))
    push(safe("subscribe_msg_popup_single", create_time=NOW - 100))
    grant = credits(follower())[ACCEPTED_TPL]
    assert grant["status"] == "revoked"
    assert grant["long_term"] is False
    assert [e["detail-type"] for e in safe_account.journey_events()] == ["Subscription Revoked"]


def test_older_interactions_never_move_the_clock_back(safe_account: AwsWorld) -> None:
    push(safe("text_message", create_time=NOW))
    push(safe("scan", create_time=NOW - 500))
    view = follower()
    assert view["last_interaction_at"] == view["last_message_at"]
    push(safe("scan", create_time=NOW + 1))
    view = follower()
    assert view["last_interaction_at"] > view["last_message_at"]  # a scan is not a message


def test_refollow_without_a_scene_forgets_the_old_campaign(safe_account: AwsWorld) -> None:
    push(safe("subscribe_qrscene", create_time=NOW - 20))
    push(safe("unsubscribe", create_time=NOW - 10))
    push(safe("subscribe", create_time=NOW))
    view = follower()
    assert view["following"] is True
    assert view["scene"] is None


def test_events_dated_in_the_future_are_refused(safe_account: AwsWorld) -> None:
    for create_time in (int(time.time()) + 3600, 99_999_999_999_999):
        before = safe_account.item_count("QuotaTable")
        resp = push(safe("subscribe", create_time=create_time))
        assert resp["statusCode"] == 400, resp["body"]
        assert "bad_create_time" in resp["body"]
        assert safe_account.item_count("QuotaTable") == before


def test_two_job_finish_events_of_one_second_are_both_queued(safe_account: AwsWorld) -> None:
    push(safe("template_send_job_finish", MsgID="200000001"))
    push(safe("template_send_job_finish", MsgID="200000002"))
    messages = safe_account.queue_messages("StatusQueue")
    assert sorted(m["event"]["msg_id"] for m in messages) == ["200000001", "200000002"]


def test_unknown_event_changes_no_state_but_a_menu_click_is_an_interaction(safe_account: AwsWorld) -> None:
    before = safe_account.item_count("QuotaTable")
    push(safe("unknown_event"))
    assert safe_account.item_count("QuotaTable") == before
    assert safe_account.journey_events() == []
    click = callback_xml("unknown_event", CreateTime=str(NOW), Event="CLICK")
    push(wechat.safe_push(click))
    assert follower()["last_interaction_at"] is not None


def test_authentic_event_our_models_reject_is_kept_and_acknowledged(safe_account: AwsWorld) -> None:
    odd = callback_xml("subscribe_msg_sent_event", CreateTime=str(NOW)).replace(
        "<ErrorCode>0</ErrorCode>", "<ErrorCode>n/a</ErrorCode>"
    )
    assert "<ErrorCode>n/a</ErrorCode>" in odd
    resp = push(wechat.safe_push(odd))
    assert resp["statusCode"] == 200
    assert resp["body"] == "success"
    (message,) = safe_account.queue_messages("StatusQueue")
    assert message["kind"] == "unparsed"
    assert message["event"]["raw"]["Event"] == "subscribe_msg_sent_event"
    assert message["parse_error"]


def test_malformed_appid_is_404_without_touching_aws(
    safe_account: AwsWorld, aws_calls: list[AwsCall]
) -> None:
    aws_calls.clear()
    resp = push(safe("subscribe"), appid="wx" + "0" * 3000)
    assert resp["statusCode"] == 404
    assert aws_calls == []
    assert "000000" not in resp["body"]  # the input is not echoed back


def test_a_follower_known_only_from_a_scan_is_following_until_a_real_event_decides(
    safe_account: AwsWorld,
) -> None:
    push(safe("scan", create_time=NOW - 50))
    assert follower()["following"] is True  # only followers can scan into the account
    push(safe("unsubscribe", create_time=NOW - 100))  # older, but the first real follow event
    assert follower()["following"] is False
    push(safe("text_message", create_time=NOW))
    assert follower()["following"] is False  # a real event was seen: observations no longer decide


def test_a_profile_without_follow_events_reports_unknown(safe_account: AwsWorld) -> None:
    push(safe("unknown_event", Event="CLICK"))
    assert follower()["following"] is None
