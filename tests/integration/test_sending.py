"""The sending core end to end: moto for AWS, the WeChat sandbox over real HTTP for WeChat.

The sandbox's inboxes are the truth: what a user received, and how many times.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest

from tests.support import wechat
from tests.support.lambda_context import FakeLambdaContext
from tests.support.sending import SUB_TEMPLATE_ID, TEMPLATE_ID, SendingWorld, sending_world
from wxreach import container
from wxreach.aws import keys
from wxreach.reach.messages import MessageBatch, MessageState, Origin, OriginKind, Recipient
from wxreach.reach.rendering import MessageContent
from wxreach.reach.sending import SendPolicy, SendService
from wxreach.wechat.api import WeChatClient
from wxreach.wechat.keywords import Channel
from wxreach.wechat.tokens import TokenBroker

ORDER = {"thing1": "{{product}}", "amount2": "¥{{order.total}}", "character_string3": "{{order.no}}"}


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[SendingWorld]:
    with sending_world(monkeypatch) as w:
        container.template_service().sync(wechat.APPID)
        yield w


def params(n: int = 1) -> dict[str, Any]:
    return {"product": f"咖啡豆{n}号", "order": {"total": f"{n * 10}.50", "no": f"A-{1000 + n}"}}


def template_batch(
    openids: list[str], origin_id: str = "b1", data: dict[str, Any] | None = None
) -> MessageBatch:
    return MessageBatch(
        appid=wechat.APPID,
        channel=Channel.TEMPLATE,
        origin=Origin(kind=OriginKind.JOURNEY, id=origin_id, batch_id="0"),
        content=MessageContent(template_id=TEMPLATE_ID, data=data or ORDER, url="https://example.com/o"),
        recipients=[Recipient(openid=o, params=params(i)) for i, o in enumerate(openids)],
    )


def sub_batch(openids: list[str], origin_id: str = "s1") -> MessageBatch:
    return MessageBatch(
        appid=wechat.APPID,
        channel=Channel.SUBSCRIBE,
        origin=Origin(kind=OriginKind.JOURNEY, id=origin_id, batch_id="0"),
        content=MessageContent(
            template_id=SUB_TEMPLATE_ID, data={"thing1": "{{product}}", "character_string2": "SF{{order.no}}"}
        ),
        recipients=[Recipient(openid=o, params=params(i)) for i, o in enumerate(openids)],
    )


def credits(openid: str, template_id: str = SUB_TEMPLATE_ID) -> int:
    follower = container.followers().get(wechat.APPID, openid)
    grants = {g.template_id: g for g in (follower.subscriptions if follower else [])}
    return grants[template_id].one_time_credits if template_id in grants else 0


class CrashAfterSend(httpx.BaseTransport):
    """The instance dies after WeChat answered and before the ledger heard of it."""

    def __init__(self, path: str, times: int = 1) -> None:
        self._inner = httpx.HTTPTransport()
        self._path = path
        self.left = times

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if request.url.path == self._path and self.left > 0:
            self.left -= 1
            response.read()
            raise SystemExit("instance crashed")  # not an Exception: nothing of ours may catch it
        return response


def service(
    world: SendingWorld,
    *,
    transport: httpx.BaseTransport | None = None,
    clock: Any = time.time,
    read_timeout: float | None = None,
    tokens: TokenBroker | None = None,
    **policy: Any,
) -> SendService:
    """A second sender instance: our real adapters, its own WeChat client, an injectable clock."""
    base = container.send_service()
    client = (
        WeChatClient(world.sandbox.url, transport=transport, read_timeout=read_timeout or 5.0)
        if transport or read_timeout
        else container.wechat()
    )
    return SendService(
        accounts=container.accounts(),
        followers=container.followers(),
        templates=container.template_service(),
        ledger=base._ledger,
        guards=base._guards,
        wechat=client,
        tokens=tokens or container.tokens(),
        policy=SendPolicy(**policy),
        clock=clock,
    )


# -- template messages -----------------------------------------------------------------------


def test_template_message_with_customer_parameters_reaches_each_follower_once(world: SendingWorld) -> None:
    openids = world.followers[:3]
    (result,) = container.send_service().send_batches([template_batch(openids)])
    assert result.retry_after is None
    assert {m.state for m in result.messages} == {MessageState.SENT}
    for index, openid in enumerate(openids):
        (received,) = world.inbox(openid, "template")
        message = next(m for m in result.messages if m.openid == openid)
        assert (
            received["msgid"] == int(message.wechat_msgid) or str(received["msgid"]) == message.wechat_msgid
        )
        assert received["data"] == {
            "thing1": f"咖啡豆{index}号",
            "amount2": f"¥{index * 10}.50",
            "character_string3": f"A-{1000 + index}",
        }
        assert received["client_msg_id"] == message.message_id


def test_redelivered_batch_sends_nothing_again(world: SendingWorld) -> None:
    batch = template_batch(world.followers[:2])
    first = container.send_service().send_batch(batch)
    again = container.send_service().send_batch(batch)
    assert [m.message_id for m in first.messages] == [m.message_id for m in again.messages]
    assert all(len(world.inbox(o, "template")) == 1 for o in world.followers[:2])


def test_crash_after_the_wechat_call_does_not_deliver_twice(world: SendingWorld) -> None:
    now = [time.time()]
    crashed = service(world, transport=CrashAfterSend("/cgi-bin/message/template/send"), clock=lambda: now[0])
    batch = template_batch(world.followers[:1])
    with pytest.raises(SystemExit):
        crashed.send_batch(batch)
    (stuck,) = [container.send_service().get_message(wechat.APPID, m) for m in _ids(batch)]
    assert stuck is not None and stuck.state is MessageState.SENDING
    assert len(world.inbox(world.followers[0], "template")) == 1  # WeChat did send it

    now[0] += 121  # the claim is stale: SQS redelivers to another instance
    (message,) = service(world, clock=lambda: now[0]).send_batch(batch).messages
    assert message.state is MessageState.SENT
    assert len(world.inbox(world.followers[0], "template")) == 1  # same client_msg_id: deduped


def test_unfollowed_follower_is_skipped_without_calling_wechat(world: SendingWorld) -> None:
    from datetime import UTC, datetime

    openid = world.followers[0]
    container.followers().set_following(wechat.APPID, openid, following=False, at=datetime.now(UTC))
    before = world.counters().get("/cgi-bin/message/template/send", {}).get("calls", 0)
    (message,) = container.send_service().send_batch(template_batch([openid])).messages
    assert (message.state, message.reason) == (MessageState.SKIPPED, "not_following")
    assert world.counters().get("/cgi-bin/message/template/send", {}).get("calls", 0) == before


def test_never_observed_non_follower_is_tried_and_43004_marks_them(world: SendingWorld) -> None:
    (stranger,) = world.admin_call(
        "POST", f"/accounts/{wechat.APPID}/followers", {"count": 1, "prefix": "oGone", "following": False}
    )["openids"]
    (message,) = container.send_service().send_batch(template_batch([stranger])).messages
    assert (message.state, message.reason, message.errcode) == (MessageState.FAILED, "not_following", 43004)
    follower = container.followers().get(wechat.APPID, stranger)
    assert follower is not None and follower.following is False


def test_invalid_value_and_missing_parameter_fail_per_recipient(world: SendingWorld) -> None:
    batch = template_batch(world.followers[:2], data={**ORDER, "character_string3": "订单{{order.no}}"})
    messages = container.send_service().send_batch(batch).messages
    assert {(m.state, m.reason) for m in messages} == {(MessageState.FAILED, "invalid_value")}
    assert all("character_string3" in (m.detail or "") for m in messages)
    missing = MessageBatch(
        **{
            **template_batch([world.followers[2]], "b2").model_dump(),
            "recipients": [{"openid": world.followers[2]}],
        }
    )
    (message,) = container.send_service().send_batch(missing).messages
    assert (message.state, message.reason) == (MessageState.FAILED, "missing_parameter")
    assert "product" in (message.detail or "")
    assert all(world.inbox(o, "template") == [] for o in world.followers[:3])


def test_47003_from_wechat_is_permanent_for_that_recipient(world: SendingWorld) -> None:
    world.faults({"path": "/cgi-bin/message/template/send", "errcodes": {"47003": 1.0}})
    (message,) = container.send_service().send_batch(template_batch(world.followers[:1])).messages
    assert (message.state, message.errcode) == (MessageState.FAILED, 47003)


def test_repeat_guard_skips_the_third_identical_message(world: SendingWorld) -> None:
    openid = world.followers[0]
    same = {"thing1": "会员日", "amount2": "¥1.00", "character_string3": "X-1"}
    states = [
        container.send_service().send_batch(template_batch([openid], f"r{n}", data=same)).messages[0]
        for n in range(3)
    ]
    assert [(m.state, m.reason) for m in states] == [
        (MessageState.SENT, None),
        (MessageState.SENT, None),
        (MessageState.SKIPPED, "repeat_guard"),
    ]
    different = container.send_service().send_batch(
        template_batch([openid], "r9", data={**same, "character_string3": "X-2"})
    )
    assert different.messages[0].state is MessageState.SENT
    assert len(world.inbox(openid, "template")) == 3


def test_system_busy_is_retried_later_then_sent_once(world: SendingWorld) -> None:
    world.faults({"path": "/cgi-bin/message/template/send", "errcodes": {"-1": 1.0}})
    batch = template_batch(world.followers[:2])
    result = container.send_service().send_batch(batch)
    assert result.retry_after is not None and result.retry_after >= 1
    assert result.messages == []
    stored = [container.send_service().get_message(wechat.APPID, m) for m in _ids(batch)]
    assert all(m is not None and (m.state, m.attempts) == (MessageState.QUEUED, 1) for m in stored)
    world.clear_faults()
    again = container.send_service().send_batch(batch)
    assert again.retry_after is None
    assert {m.state for m in again.messages} == {MessageState.SENT}
    assert all(len(world.inbox(o, "template")) == 1 for o in world.followers[:2])


def test_unknown_codes_are_retried_a_bounded_number_of_times_then_failed_raw(world: SendingWorld) -> None:
    world.faults({"path": "/cgi-bin/message/template/send", "errcodes": {"61234": 1.0}})
    fast = service(world, max_attempts=2)
    batch = template_batch(world.followers[:1])
    assert fast.send_batch(batch).retry_after is not None
    (message,) = fast.send_batch(batch).messages
    assert (message.state, message.errcode, message.attempts) == (MessageState.FAILED, 61234, 1)
    assert message.reason == "wechat_61234"


def test_daily_quota_pauses_the_account_and_leaves_messages_queued(world: SendingWorld) -> None:
    world.faults({"path": "/cgi-bin/message/template/send", "errcodes": {"45009": 1.0}})
    first = container.send_service().send_batch(template_batch(world.followers[:1], "q1"))
    assert first.retry_after is not None and first.retry_after > 60
    world.clear_faults()
    calls = world.counters()["/cgi-bin/message/template/send"]["calls"]
    later = container.send_service().send_batch(template_batch(world.followers[1:2], "q2"))
    assert later.retry_after is not None  # paused: WeChat not called again
    assert world.counters()["/cgi-bin/message/template/send"]["calls"] == calls
    for batch in (template_batch(world.followers[:1], "q1"), template_batch(world.followers[1:2], "q2")):
        (message,) = [container.send_service().get_message(wechat.APPID, m) for m in _ids(batch)]
        assert message is not None and (message.state, message.attempts) == (MessageState.QUEUED, 0)
    # After the pause (China midnight) the same records are sent.
    tomorrow = [time.time() + 26 * 3600]
    resumed = service(world, clock=lambda: tomorrow[0]).send_batch(template_batch(world.followers[:1], "q1"))
    assert resumed.messages[0].state is MessageState.SENT


def test_daily_cap_of_our_own_is_enforced_before_sending(world: SendingWorld) -> None:
    capped = service(world, template_daily_cap=2)
    result = capped.send_batch(template_batch(world.followers[:3]))
    assert len([m for m in result.messages if m.state is MessageState.SENT]) == 2
    assert result.retry_after is not None
    assert sum(len(world.inbox(o, "template")) for o in world.followers[:3]) == 2


def test_template_unknown_syncs_once_then_fails_clearly(world: SendingWorld) -> None:
    batch = MessageBatch(
        **{
            **template_batch(world.followers[:1]).model_dump(),
            "content": {"template_id": "TPL_NOPE", "data": {"thing1": "x"}},
        }
    )
    before = world.counters().get("/cgi-bin/template/get_all_private_template", {}).get("calls", 0)
    (message,) = container.send_service().send_batch(batch).messages
    assert (message.state, message.reason) == (MessageState.FAILED, "template_unknown")
    assert world.counters()["/cgi-bin/template/get_all_private_template"]["calls"] == before + 1


def test_rate_limit_holds_across_two_sender_instances(world: SendingWorld) -> None:
    followers = world.admin_call(
        "POST", f"/accounts/{wechat.APPID}/followers", {"count": 24, "prefix": "oRate"}
    )["openids"]
    senders = [
        service(world, rate_per_second=4, concurrency=8),
        service(world, rate_per_second=4, concurrency=8),
    ]
    halves = [followers[:12], followers[12:]]
    threads = [
        threading.Thread(target=s.send_batch, args=(template_batch(h, f"rate{i}"),))
        for i, (s, h) in enumerate(zip(senders, halves, strict=True))
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    windows = _rate_windows(world)
    assert sum(windows.values()) == 24
    assert max(windows.values()) <= 4
    assert elapsed >= 24 / 4 - 1.5  # six windows at least, whatever the split
    assert sum(len(world.inbox(o, "template")) for o in followers) == 24


# -- subscription notifications --------------------------------------------------------------


def test_subscription_notification_consumes_exactly_one_credit(world: SendingWorld) -> None:
    accepted, other = world.followers[0], world.followers[1]
    world.popup_accept(accepted)
    world.popup_accept(accepted)
    messages = container.send_service().send_batch(sub_batch([accepted, other])).messages
    by_openid = {m.openid: m for m in messages}
    assert by_openid[accepted].state is MessageState.SENT
    assert (by_openid[other].state, by_openid[other].reason) == (
        MessageState.SKIPPED,
        "no_subscription_credit",
    )
    assert credits(accepted) == 1
    assert world.user(accepted)["grants"][SUB_TEMPLATE_ID]["credits"] == 1
    assert len(world.inbox(accepted, "subscription")) == 1
    container.send_service().send_batch(sub_batch([accepted, other]))  # redelivery
    assert credits(accepted) == 1


def test_failed_subscription_send_leaves_the_credit(world: SendingWorld) -> None:
    openid = world.followers[0]
    world.popup_accept(openid)
    world.faults({"path": "/cgi-bin/message/subscribe/bizsend", "errcodes": {"40037": 1.0}})
    (message,) = container.send_service().send_batch(sub_batch([openid])).messages
    assert message.state is MessageState.FAILED
    assert credits(openid) == 1
    assert world.user(openid)["grants"][SUB_TEMPLATE_ID]["credits"] == 1


def test_invalid_value_never_costs_a_credit(world: SendingWorld) -> None:
    openid = world.followers[0]
    world.popup_accept(openid)
    batch = MessageBatch(
        **{**sub_batch([openid]).model_dump(), "recipients": [{"openid": openid, "params": {}}]}
    )
    (message,) = container.send_service().send_batch(batch).messages
    assert (message.state, message.reason) == (MessageState.FAILED, "missing_parameter")
    assert credits(openid) == 1


def test_43101_records_no_credit(world: SendingWorld) -> None:
    openid = world.followers[0]
    world.popup_accept(openid)
    world.faults({"path": "/cgi-bin/message/subscribe/bizsend", "errcodes": {"43101": 1.0}})
    (message,) = container.send_service().send_batch(sub_batch([openid])).messages
    assert (message.state, message.errcode) == (MessageState.FAILED, 43101)
    assert credits(openid) == 0


def test_non_followers_receive_subscription_notifications(world: SendingWorld) -> None:
    (visitor,) = world.admin_call(
        "POST", f"/accounts/{wechat.APPID}/followers", {"count": 1, "prefix": "oVisit", "following": False}
    )["openids"]
    world.popup_accept(visitor)
    (message,) = container.send_service().send_batch(sub_batch([visitor])).messages
    assert message.state is MessageState.SENT
    (received,) = world.inbox(visitor, "subscription")
    assert received["channel"] == "service_notifications"


def test_crash_during_bizsend_is_never_resent(world: SendingWorld) -> None:
    openid = world.followers[0]
    world.popup_accept(openid)
    world.popup_accept(openid)
    now = [time.time()]
    crashed = service(
        world, transport=CrashAfterSend("/cgi-bin/message/subscribe/bizsend"), clock=lambda: now[0]
    )
    batch = sub_batch([openid])
    with pytest.raises(SystemExit):
        crashed.send_batch(batch)
    now[0] += 121
    (message,) = service(world, clock=lambda: now[0]).send_batch(batch).messages
    assert (message.state, message.reason) == (MessageState.UNKNOWN, "interrupted_during_send")
    assert len(world.inbox(openid, "subscription")) == 1
    assert credits(openid) == 1  # one consumed by the send that did happen


# -- the template sender function ------------------------------------------------------------


def sqs_event(bodies: list[str]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"msg-{i}",
                "receiptHandle": f"rh-{i}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:test-SendQueue",
                "awsRegion": "us-east-1",
            }
            for i, body in enumerate(bodies)
        ]
    }


def test_sender_function_reports_partial_failures_and_parks_invalid_records(
    world: SendingWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    import template_sender_handler

    sqs = boto3.client("sqs")
    url = world.aws.queues["SendQueue"]
    sqs.send_message(QueueUrl=url, MessageBody="x")
    receipt = sqs.receive_message(QueueUrl=url)["Messages"][0]["ReceiptHandle"]
    good = template_batch(world.followers[:1], "ok").model_dump_json()
    event = sqs_event([good, "{not json", template_batch(world.followers[1:2], "busy").model_dump_json()])
    event["Records"][2]["receiptHandle"] = receipt
    # The first record was sent before (a redelivery); the third meets WeChat's "system busy".
    container.send_service().send_batch(template_batch(world.followers[:1], "ok"))
    world.faults({"path": "/cgi-bin/message/template/send", "errcodes": {"-1": 1.0}})
    response = template_sender_handler.lambda_handler(event, FakeLambdaContext())
    assert response == {"batchItemFailures": [{"itemIdentifier": "msg-2"}]}
    dead = sqs.receive_message(
        QueueUrl=world.aws.queues["SendDeadLetterQueue"], MessageAttributeNames=["All"]
    )
    assert dead["Messages"][0]["Body"] == "{not json"
    assert len(world.inbox(world.followers[0], "template")) == 1


def test_journey_action_through_the_sender_sends_once(world: SendingWorld) -> None:
    import template_sender_handler

    action = {
        "version": "0",
        "id": "e1",
        "detail-type": "SendTemplateMessage",
        "source": "acme.journeys",
        "detail": {
            "action_id": "welcome-42",
            "appid": wechat.APPID,
            "openid": world.followers[3],
            "content": {"template_id": TEMPLATE_ID, "data": ORDER},
            "params": params(3),
        },
    }
    for _ in range(2):
        response = template_sender_handler.lambda_handler(
            sqs_event([json.dumps(action)]), FakeLambdaContext()
        )
        assert response == {"batchItemFailures": []}
    assert len(world.inbox(world.followers[3], "template")) == 1


def _ids(batch: MessageBatch) -> list[str]:
    return [batch.message_id(r.openid) for r in batch.recipients]


def _rate_windows(world: SendingWorld) -> dict[str, int]:
    items = boto3.client("dynamodb").query(
        TableName=world.aws.tables["QuotaTable"],
        KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
        ExpressionAttributeValues={
            ":pk": {"S": keys.account_pk(wechat.APPID)},
            ":prefix": {"S": keys.counter_sk("rate-template", "")},
        },
    )["Items"]
    return {item["sk"]["S"]: int(item["count"]["N"]) for item in items}


def test_a_batch_whose_every_record_waits_is_not_a_function_error(world: SendingWorld) -> None:
    import template_sender_handler

    world.faults({"path": "/cgi-bin/message/template/send", "errcodes": {"45009": 1.0}})
    url = world.aws.queues["SendQueue"]
    sqs = boto3.client("sqs")
    sqs.send_message(QueueUrl=url, MessageBody="x")
    receipt = sqs.receive_message(QueueUrl=url)["Messages"][0]["ReceiptHandle"]
    event = sqs_event([template_batch(world.followers[:1], "all-wait").model_dump_json()])
    event["Records"][0]["receiptHandle"] = receipt
    response = template_sender_handler.lambda_handler(event, FakeLambdaContext())
    assert response == {"batchItemFailures": [{"itemIdentifier": "msg-0"}]}


# -- review findings: crash windows, guard releases, isolation --------------------------------


def test_timed_out_template_send_is_resent_only_inside_the_client_msg_id_window(world: SendingWorld) -> None:
    """WeChat sent it but we timed out: a retry within WeChat's dedupe window is deduped, one
    after it would deliver twice, so it becomes unknown instead."""
    world.faults(
        {"path": "/cgi-bin/message/template/send", "timeout": {"rate": 1.0, "sleep_s": 1, "then": "process"}}
    )
    now = [time.time()]
    early, late = world.followers[0], world.followers[1]
    impatient = service(world, clock=lambda: now[0], read_timeout=0.3)
    for openid, origin in ((early, "t-early"), (late, "t-late")):
        assert impatient.send_batch(template_batch([openid], origin)).retry_after is not None
    time.sleep(1.2)  # the sandbox finishes both sends after our timeouts
    world.clear_faults()
    assert [len(world.inbox(o, "template")) for o in (early, late)] == [1, 1]

    now[0] += 60
    (message,) = service(world, clock=lambda: now[0]).send_batch(template_batch([early], "t-early")).messages
    assert message.state is MessageState.SENT and message.maybe_sent is True
    now[0] += 700
    (message,) = service(world, clock=lambda: now[0]).send_batch(template_batch([late], "t-late")).messages
    assert (message.state, message.reason) == (MessageState.UNKNOWN, "outcome_unknown")
    assert [len(world.inbox(o, "template")) for o in (early, late)] == [1, 1]


def test_token_endpoint_timeout_is_not_mistaken_for_a_maybe_sent_bizsend(
    world: SendingWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wxreach.aws.token_store import DynamoTokenStore

    openid = world.followers[0]
    world.popup_accept(openid)
    boto3.client("dynamodb").delete_item(
        TableName=world.aws.tables["QuotaTable"],
        Key={"pk": {"S": keys.account_pk(wechat.APPID)}, "sk": {"S": keys.TOKEN_SK}},
    )
    cold = TokenBroker(
        store=DynamoTokenStore(world.aws.tables["QuotaTable"]),
        client=WeChatClient(world.sandbox.url, read_timeout=0.3),
        secret_for=lambda appid: wechat.APP_SECRET,
        wait_seconds=0.5,
    )
    world.faults({"path": "/cgi-bin/stable_token", "timeout": {"rate": 1.0, "sleep_s": 1, "then": "drop"}})
    result = service(world, tokens=cold).send_batch(sub_batch([openid]))
    world.clear_faults()
    assert result.retry_after is not None and result.messages == []
    (stored,) = [container.send_service().get_message(wechat.APPID, m) for m in _ids(sub_batch([openid]))]
    assert stored is not None and stored.state is MessageState.QUEUED and not stored.maybe_sent
    (message,) = container.send_service().send_batch(sub_batch([openid])).messages
    assert message.state is MessageState.SENT
    assert len(world.inbox(openid, "subscription")) == 1
    assert credits(openid) == 0  # one accept, one notification


def test_a_released_repeat_reservation_restores_the_window(world: SendingWorld) -> None:
    openid = world.followers[0]
    same = {"thing1": "会员日", "amount2": "¥1.00", "character_string3": "X-1"}
    first = container.send_service().send_batch(template_batch([openid], "g1", data=same)).messages[0]
    world.faults({"path": "/cgi-bin/message/template/send", "errcodes": {"40037": 1.0}})
    refused = container.send_service().send_batch(template_batch([openid], "g2", data=same)).messages[0]
    world.clear_faults()
    later = [
        container.send_service().send_batch(template_batch([openid], f"g{n}", data=same)).messages[0]
        for n in (3, 4)
    ]
    assert [m.state for m in (first, refused, *later)] == [
        MessageState.SENT,
        MessageState.FAILED,
        MessageState.SENT,  # the refused send did not count
        MessageState.SKIPPED,  # this is the third real one
    ]
    assert len(world.inbox(openid, "template")) == 2


def test_a_bad_record_does_not_fail_its_neighbours(world: SendingWorld) -> None:
    import template_sender_handler

    stranger = template_batch(world.followers[:1], "stranger").model_dump()
    stranger["appid"] = "wx0000000000000000"  # not registered
    good = template_batch(world.followers[1:2], "neighbour").model_dump_json()
    huge = template_batch(world.followers[2:3], "huge").model_dump()
    huge["appid"] = "wx" + "0" * 3000
    event = sqs_event([json.dumps(stranger), good, json.dumps(huge)])
    response = template_sender_handler.lambda_handler(event, FakeLambdaContext())
    assert response == {"batchItemFailures": []}
    dead = boto3.client("sqs").receive_message(
        QueueUrl=world.aws.queues["SendDeadLetterQueue"], MaxNumberOfMessages=10
    )["Messages"]
    assert len(dead) == 2
    assert len(world.inbox(world.followers[1], "template")) == 1


def test_recipient_params_are_bounded_and_valid_unicode() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Recipient(openid=wechat.OPENID, params={"note": "x" * 10_000})
    with pytest.raises(ValidationError):
        Recipient(openid=wechat.OPENID, params={"name": "\ud800"})


def test_a_stop_from_the_token_endpoint_pauses_both_channels(world: SendingWorld) -> None:
    boto3.client("dynamodb").delete_item(
        TableName=world.aws.tables["QuotaTable"],
        Key={"pk": {"S": keys.account_pk(wechat.APPID)}, "sk": {"S": keys.TOKEN_SK}},
    )
    container.reset()
    world.faults({"path": "/cgi-bin/stable_token", "errcodes": {"40164": 1.0}})
    assert container.send_service().send_batch(template_batch(world.followers[:1], "ip")).retry_after
    world.clear_faults()
    guards = container.send_service()._guards
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    assert guards.paused_until(wechat.APPID, "template", now=now) is not None
    assert guards.paused_until(wechat.APPID, "subscribe", now=now) is not None
    (dry,) = container.send_service().dry_run(template_batch(world.followers[1:2], "ip-dry"))
    assert dry.state is MessageState.QUEUED and "account paused" in (dry.detail or "")
