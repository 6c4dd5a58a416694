"""Delivery outcomes end to end: messages sent to the WeChat sandbox over HTTP, then the real
callback shapes (events/wechat fixtures, with the sent msgids) pushed through the webhook handler
onto the status queue (moto) and consumed by the status updater; the reconciler for what never
reports back."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
import reconciler_handler
import status_updater_handler

import webhook_handler
from tests.integration.conftest import AwsCall, call
from tests.integration.test_broadcast_permissions import missing, used
from tests.support import wechat
from tests.support.broadcasts import BroadcastWorld, broadcast_world
from tests.support.fixtures import WECHAT_EVENTS_DIR, api_event, callback_xml
from tests.support.lambda_context import FakeLambdaContext
from tests.support.sending import SUB_TEMPLATE_ID, TEMPLATE_ID
from wxreach import container
from wxreach.aws.delivery_store import DynamoCallbackParking
from wxreach.reach.messages import Message, MessageBatch, MessageState, Origin, OriginKind, Recipient
from wxreach.reach.rendering import MessageContent
from wxreach.wechat.keywords import Channel

ORDER = {"thing1": "{{product}}", "amount2": "¥{{order.total}}", "character_string3": "{{order.no}}"}
SUB_DATA = {"thing1": "{{product}}", "character_string2": "SF{{order.no}}"}


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[BroadcastWorld]:
    with broadcast_world(monkeypatch, followers=6, unknown_after_seconds="3600") as w:
        container.template_service().sync(wechat.APPID)
        yield w


def params(n: int) -> dict[str, Any]:
    return {"product": f"咖啡豆{n}号", "order": {"total": f"{n}.50", "no": f"A-{n}"}}


def send(openids: list[str], channel: Channel = Channel.TEMPLATE, origin: str = "j1") -> list[Message]:
    content = (
        MessageContent(template_id=TEMPLATE_ID, data=ORDER)
        if channel is Channel.TEMPLATE
        else MessageContent(template_id=SUB_TEMPLATE_ID, data=SUB_DATA)
    )
    batch = MessageBatch(
        appid=wechat.APPID,
        channel=channel,
        origin=Origin(kind=OriginKind.JOURNEY, id=origin, batch_id="0"),
        content=content,
        recipients=[Recipient(openid=o, params=params(i)) for i, o in enumerate(openids)],
    )
    messages, _ = container.send_service().send_now(batch)
    assert {m.state for m in messages} == {MessageState.SENT}, messages
    return messages


def push(xml: str) -> None:
    p = wechat.plaintext_push(xml)
    # WeChat puts the sender's openid in the URL too; the webhook checks they agree.
    p.query["openid"] = xml.split("<FromUserName><![CDATA[", 1)[1].split("]]>", 1)[0]
    resp = call(
        webhook_handler,
        api_event("webhook_push", path_parameters={"appid": wechat.APPID}, query=p.query, body=p.body),
    )
    assert resp["statusCode"] == 200, resp


def template_finish(message: Message, status: str) -> str:
    return callback_xml(
        "template_send_job_finish",
        FromUserName=message.openid,
        CreateTime=str(int(time.time())),
        MsgID=str(message.wechat_msgid),
        Status=status,
    )


def subscribe_sent(message: Message, code: int, status: str) -> str:
    xml = (WECHAT_EVENTS_DIR / "subscribe_msg_sent_event.xml").read_text(encoding="utf-8")
    xml = xml.replace("oWx1a2b3c4d5e6f7g8h9i0jKlMnO", message.openid)
    xml = xml.replace("1714130455", str(int(time.time())))
    xml = xml.replace("VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc", message.template_id)
    xml = xml.replace("2906548178359271425", str(message.wechat_msgid))
    xml = xml.replace("<ErrorCode>0</ErrorCode>", f"<ErrorCode>{code}</ErrorCode>")
    return xml.replace("<![CDATA[success]]>", f"<![CDATA[{status}]]>")


def status_records(world: BroadcastWorld) -> list[dict[str, Any]]:
    """Everything on the status queue, removed from it, as Lambda records."""
    sqs, url = boto3.client("sqs"), world.sending.aws.queues["StatusQueue"]
    records: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return records
        for m in messages:
            records.append({"messageId": m["MessageId"], "body": m["Body"], "eventSource": "aws:sqs"})
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def update(records: list[dict[str, Any]]) -> dict[str, Any]:
    result = status_updater_handler.lambda_handler({"Records": records}, FakeLambdaContext())
    assert result == {"batchItemFailures": []}, result
    return dict(result)


def reload(message: Message) -> Message:
    fresh = container.send_service()._ledger.get(message.message_id)
    assert fresh is not None
    return fresh


def of_type(events: list[dict[str, Any]], detail_type: str) -> list[dict[str, Any]]:
    return [e for e in events if e["detail-type"] == detail_type]


def credits(openid: str) -> int:
    follower = container.followers().get(wechat.APPID, openid)
    grants = {g.template_id: g for g in (follower.subscriptions if follower else [])}
    return grants[SUB_TEMPLATE_ID].one_time_credits if SUB_TEMPLATE_ID in grants else 0


def parked(appid: str = wechat.APPID) -> list[Any]:
    """Callbacks waiting for their record."""
    return list(DynamoCallbackParking(container.get_settings().ledger_table).parked(appid))


def kept(appid: str = wechat.APPID) -> list[Any]:
    """Callbacks kept for people: unparsed, unknown kinds, orphans."""
    return list(DynamoCallbackParking(container.get_settings().ledger_table).kept(appid))


def test_template_outcomes_by_prefix_each_applied_once_with_journey_events(world: BroadcastWorld) -> None:
    a, b, c, d = send(world.followers[:4])
    push(template_finish(a, "success"))
    push(template_finish(b, "failed:user block"))
    push(template_finish(c, "failed: system failed"))
    push(template_finish(d, "failed:freq limit"))
    records = status_records(world)
    assert len(records) == 4
    update(records)
    update(records)  # SQS redelivers the whole batch: nothing changes twice
    states = [(m.state, m.reason, m.delivery_status) for m in map(reload, (a, b, c, d))]
    assert states == [
        (MessageState.DELIVERED, None, "success"),
        (MessageState.FAILED, "user_block", "failed:user block"),
        (MessageState.FAILED, "system", "failed: system failed"),
        (MessageState.FAILED, "system", "failed:freq limit"),
    ]
    events = world.sending.aws.journey_events()  # drains the capture queue
    delivered = of_type(events, "MessageDelivered")
    failed = of_type(events, "MessageFailed")
    # At least once (the redelivery publishes again), one event id per outcome.
    assert {e["detail"]["event_id"] for e in delivered} == {
        f"{wechat.APPID}:message:{a.message_id}:delivered"
    }
    reasons = {e["detail"]["message_id"]: e["detail"]["reason"] for e in failed}
    assert reasons == {b.message_id: "user_block", c.message_id: "system", d.message_id: "system"}
    assert {e["source"] for e in delivered + failed} == {"wxreach.status"}


def test_a_failed_subscription_delivery_refunds_the_credit_once_under_redelivery(
    world: BroadcastWorld,
) -> None:
    openid = world.followers[0]
    world.sending.popup_accept(openid)
    world.sending.popup_accept(openid)
    assert credits(openid) == 2
    (message,) = send([openid], Channel.SUBSCRIBE)
    assert credits(openid) == 1
    push(subscribe_sent(message, 43101, "fail"))
    records = status_records(world)
    for _ in range(3):  # the same record delivered three times
        update(records)
    assert (reload(message).state, reload(message).reason) == (MessageState.FAILED, "system")
    assert credits(openid) == 2


def test_a_callback_before_its_record_is_parked_then_applied_by_the_reconciler(world: BroadcastWorld) -> None:
    ledger = container.send_service()._ledger
    (sent,) = send(world.followers[:1])
    # The same record one step earlier: claimed, WeChat answered, the ledger write not done yet.
    early = Message(
        message_id="m" + "e" * 31,
        appid=wechat.APPID,
        channel=Channel.TEMPLATE,
        openid=world.followers[1],
        template_id=TEMPLATE_ID,
        origin=Origin(kind=OriginKind.SINGLE, id="race"),
        state=MessageState.QUEUED,
    )
    ledger.create(early)
    now = datetime.now(UTC)
    assert ledger.claim(early.message_id, token="t1", now=now)
    msgid = "4000000000000000001"
    push(template_finish(early.model_copy(update={"wechat_msgid": msgid}), "success"))
    update(status_records(world))
    assert [p.reason for p in parked()] == ["unmatched"]
    assert reload(early).state is MessageState.SENDING
    ledger.finish(
        early.message_id,
        state=MessageState.SENT,
        now=now,
        claim_token="t1",
        wechat_msgid=msgid,
        appid=wechat.APPID,
    )
    report = reconciler_handler.lambda_handler({}, FakeLambdaContext())
    assert report["totals"]["parked_applied"] == 1
    assert reload(early).state is MessageState.DELIVERED
    assert parked() == []
    assert reload(sent).state is MessageState.SENT  # untouched: its callback has not come


def test_callbacks_for_msgids_never_sent_and_unreadable_ones_are_kept_and_counted(
    world: BroadcastWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    stranger = Message(
        message_id="m" + "f" * 31,
        appid=wechat.APPID,
        channel=Channel.TEMPLATE,
        openid=world.followers[0],
        template_id=TEMPLATE_ID,
        origin=Origin(kind=OriginKind.SINGLE, id="x"),
        state=MessageState.SENT,
        wechat_msgid="5000000000000000001",
    )
    push(template_finish(stranger, "success"))
    records = status_records(world)
    garbage = {"messageId": "g1", "body": "not json", "eventSource": "aws:sqs"}
    odd = {
        "messageId": "g2",
        "body": json.dumps({"appid": wechat.APPID, "kind": "something_new", "dedupe_key": "k1", "event": {}}),
    }
    update([*records, garbage, odd])
    assert [p.reason for p in parked()] == ["unmatched"]
    assert [p.reason for p in kept()] == ["unknown"]
    # A record naming no account is kept under "unknown" (and counted by the handler's metric).
    unattributed = kept("unknown")
    assert [(p.reason, p.message["raw_body"]) for p in unattributed] == [("unparsed", "not json")]
    monkeypatch.setenv("WXREACH_ORPHAN_AFTER_SECONDS", "1")
    container.reset()
    time.sleep(1.1)
    report = reconciler_handler.lambda_handler({}, FakeLambdaContext())
    assert report["totals"]["orphans"] == 1
    assert parked() == []  # the orphan is no longer retried...
    assert sorted((p.reason, p.orphan) for p in kept()) == [
        ("unknown", False),
        ("unmatched", True),
    ]  # ...but kept


def test_no_callback_ends_unknown_and_a_late_callback_still_tells_the_truth(
    world: BroadcastWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = send(world.followers[:2])
    monkeypatch.setenv("WXREACH_UNKNOWN_AFTER_SECONDS", "1")
    container.reset()
    time.sleep(2.1)  # the awaiting list is ordered by whole seconds
    report = reconciler_handler.lambda_handler({}, FakeLambdaContext())
    assert report["totals"]["unknown"] == 2
    assert {(reload(m).state, reload(m).reason) for m in (a, b)} == {(MessageState.UNKNOWN, "no_callback")}
    again = reconciler_handler.lambda_handler({}, FakeLambdaContext())
    assert again["totals"]["unknown"] == 0
    push(template_finish(a, "success"))
    update(status_records(world))
    assert reload(a).state is MessageState.DELIVERED
    assert reload(b).state is MessageState.UNKNOWN


# -- broadcasts: counts equal the sum of the messages -------------------------------------------
def template_broadcast(world: BroadcastWorld) -> tuple[str, list[Message]]:
    """A template broadcast to every follower, sent: its id and its messages (all `sent`)."""
    from wxreach.reach.broadcasts import BroadcastInput

    service = container.broadcast_service()
    spec = BroadcastInput.model_validate(
        {
            "name": "Restock",
            "channel": "template",
            "audience": {"kind": "all"},
            "content": {
                "template_id": TEMPLATE_ID,
                "data": {"thing1": "咖啡", "amount2": "¥1", "character_string3": "X"},
            },
        }
    )
    created = service.create(wechat.APPID, spec, actor="test")
    service.publish(wechat.APPID, created.id, actor="test")
    world.pump()
    ledger = container.send_service()._ledger
    messages = [
        m for m in (ledger.find_by_wechat_msgid(wechat.APPID, i) for i in _sandbox_msgids(world)) if m
    ]
    assert len(messages) == len(world.followers)
    return created.id, messages


def test_late_callbacks_after_unknown_move_the_broadcast_counts_back(
    world: BroadcastWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    bid, messages = template_broadcast(world)
    monkeypatch.setenv("WXREACH_UNKNOWN_AFTER_SECONDS", "1")
    container.reset()
    time.sleep(2.1)
    assert reconciler_handler.lambda_handler({}, FakeLambdaContext())["totals"]["unknown"] == 6
    for i, message in enumerate(messages[:4]):
        push(template_finish(message, "success" if i % 2 else "failed:user block"))
    records = status_records(world)
    update(records)
    update(records)
    view = container.broadcast_service().view(wechat.APPID, bid)
    assert view.counts.by_state == {"delivered": 2, "failed": 2, "unknown": 2, "sent": 0, "queued": 0}
    assert view.counts.by_reason == {"failed": {"user_block": 2}, "unknown": {"no_callback": 2}}
    assert view.counts.delivery == {"awaiting_callback": 0, "delivered": 2, "failed": 2, "unknown": 2}


def test_concurrent_callbacks_keep_the_counts_equal_to_the_messages(world: BroadcastWorld) -> None:
    import threading

    bid, messages = template_broadcast(world)
    for i, message in enumerate(messages):
        push(template_finish(message, "success" if i % 3 else "failed: system failed"))
    records = status_records(world)
    # Each callback applied by two updaters at once (an SQS redelivery racing the first delivery).
    threads = [threading.Thread(target=update, args=([r],)) for r in records for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    view = container.broadcast_service().view(wechat.APPID, bid)
    states = Counter(str(reload(m).state) for m in messages)
    assert states == Counter({"delivered": 4, "failed": 2})
    assert {k: v for k, v in view.counts.by_state.items() if v} == dict(states)


def test_template_broadcast_counts_follow_the_callbacks_and_it_finishes_once(world: BroadcastWorld) -> None:
    bid, messages = template_broadcast(world)
    service = container.broadcast_service()
    view = service.view(wechat.APPID, bid)
    assert view.counts.by_state.get("sent") == 6
    assert len(messages) == 6
    for i, message in enumerate(messages):
        push(template_finish(message, "success" if i % 3 else "failed:user block"))
    update(status_records(world))
    view = service.view(wechat.APPID, bid)
    assert view.counts.by_state == {"delivered": 4, "failed": 2, "queued": 0, "sent": 0}
    assert view.counts.by_reason["failed"] == {"user_block": 2}
    assert view.counts.delivery == {"awaiting_callback": 0, "delivered": 4, "failed": 2, "unknown": 0}
    assert sum(1 for m in messages if reload(m).state is MessageState.DELIVERED) == 4
    assert view.broadcast.state.value == "sent"  # sent to all six; two were refused by the users
    finished = of_type(world.sending.aws.journey_events(), "BroadcastFinished")
    assert [e["detail"]["broadcast_id"] for e in finished] == [bid]
    service.view(wechat.APPID, bid)
    assert of_type(world.sending.aws.journey_events(), "BroadcastFinished") == []  # once


def _sandbox_msgids(world: BroadcastWorld) -> list[str]:
    msgids = []
    for openid in world.followers:
        for item in world.sending.inbox(openid, "template"):
            msgids.append(str(item["msgid"]))
    return msgids


# -- mass jobs -----------------------------------------------------------------------------------
def mass_broadcast(world: BroadcastWorld, openids: list[str]) -> tuple[str, list[dict[str, Any]]]:
    from wxreach.reach.broadcasts import BroadcastInput

    service = container.broadcast_service()
    spec = BroadcastInput.model_validate(
        {
            "name": "Newsletter",
            "channel": "mass",
            "audience": {"kind": "segment", "recipients": [{"openid": o} for o in openids]},
            "mass": {"msgtype": "text", "text": "本周新品上市"},
        }
    )
    created = service.create(wechat.APPID, spec, actor="test")
    service.publish(wechat.APPID, created.id, actor="test")
    world.pump()
    jobs = world.sending.admin_call("GET", f"/accounts/{wechat.APPID}/mass-jobs")["jobs"]
    return created.id, [j for j in jobs if str(j["clientmsgid"]).startswith(f"{created.id}-")]


def mass_finish(name: str, msg_id: str, **fields: str) -> str:
    return callback_xml(name, CreateTime=str(int(time.time())), MsgID=msg_id, **fields)


def test_mass_job_finish_records_totals_and_a_review_failure_once(world: BroadcastWorld) -> None:
    bid, (job,) = mass_broadcast(world, world.followers[:4])
    push(
        mass_finish(
            "mass_send_job_finish",
            str(job["msg_id"]),
            Status="send success",
            TotalCount="4",
            FilterCount="3",
            SentCount="3",
            ErrorCount="0",
        )
    )
    records = status_records(world)
    update(records)
    update(records)
    batch = container.mass_batch_store().get(bid, 0, with_openids=False)
    assert batch is not None and batch.job is not None
    assert (batch.job.source, batch.job.outcome, batch.job.total_count, batch.job.sent_count) == (
        "callback",
        "sent",
        4,
        3,
    )
    summary = container.mass_batch_store().summary(bid)
    assert summary["wechat"] == {"total": 4, "filtered": 3, "sent": 3, "errors": 0}
    assert summary["jobs"] == {"sent": 1}

    bid2, (job2,) = mass_broadcast(world, world.followers[4:6])
    push(mass_finish("mass_send_job_finish_review_failed", str(job2["msg_id"]), Status="err(20001)"))
    update(status_records(world))
    failed = container.mass_batch_store().get(bid2, 0, with_openids=False)
    assert failed is not None and failed.job is not None
    assert (failed.job.outcome, failed.job.review_error, failed.job.review_meaning) == (
        "review_failed",
        20001,
        "politics",
    )
    assert failed.job.copyright_check is not None


def test_a_mass_job_whose_callback_never_came_is_asked_about(
    world: BroadcastWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    bid, (job,) = mass_broadcast(world, world.followers[:3])
    assert container.mass_batch_store().summary(bid)["jobs"] == {"pending": 1}
    monkeypatch.setenv("WXREACH_MASS_POLL_AFTER_SECONDS", "1")
    container.reset()
    time.sleep(2.1)
    report = reconciler_handler.lambda_handler({}, FakeLambdaContext())
    assert report["totals"]["mass_polled"] == 1
    batch = container.mass_batch_store().get(bid, 0, with_openids=False)
    assert batch is not None and batch.job is not None
    assert (batch.job.source, batch.job.status, batch.job.outcome) == ("poll", "SEND_SUCCESS", "sent")
    # The callback, late, replaces the poll's status-only answer with its counts; then nothing more.
    push(mass_finish("mass_send_job_finish", str(job["msg_id"]), Status="send success", SentCount="3"))
    update(status_records(world))
    batch = container.mass_batch_store().get(bid, 0, with_openids=False)
    assert batch is not None and batch.job is not None
    assert (batch.job.source, batch.job.sent_count) == ("callback", 3)
    assert reconciler_handler.lambda_handler({}, FakeLambdaContext())["totals"]["mass_polled"] == 0


# -- least privilege -----------------------------------------------------------------------------
def test_every_call_of_the_status_updater_and_the_reconciler_is_granted(
    world: BroadcastWorld, monkeypatch: pytest.MonkeyPatch, aws_calls: list[AwsCall]
) -> None:

    first, second = world.followers[:2]
    world.sending.popup_accept(second)
    (tpl,) = send([first])
    (sub,) = send([second], Channel.SUBSCRIBE, origin="j2")
    _, (job,) = mass_broadcast(world, world.followers[2:5])
    push(template_finish(tpl, "failed:user block"))
    push(subscribe_sent(sub, 43101, "fail"))
    push(mass_finish("mass_send_job_finish", str(job["msg_id"]), Status="send success"))
    push(template_finish(tpl.model_copy(update={"wechat_msgid": "6000000000000000001"}), "success"))
    records = status_records(world)

    calls = aws_calls
    calls.clear()
    update(records)
    needed = used(list(calls), world)
    assert ("dynamodb:DeleteItem", "QuotaTable", None) in needed  # the credit refund ran
    assert not (gaps := missing(needed, "StatusUpdaterFunction")), f"StatusUpdaterFunction lacks {gaps}"

    (late,) = send([world.followers[5]], origin="j3")
    monkeypatch.setenv("WXREACH_UNKNOWN_AFTER_SECONDS", "1")
    monkeypatch.setenv("WXREACH_MASS_POLL_AFTER_SECONDS", "1")
    monkeypatch.setenv("WXREACH_ORPHAN_AFTER_SECONDS", "1")
    container.reset()
    _, (_silent,) = mass_broadcast(world, world.followers[:2])
    time.sleep(2.1)
    calls.clear()
    report = reconciler_handler.lambda_handler({}, FakeLambdaContext())
    assert report["totals"]["unknown"] == 1 and report["totals"]["mass_polled"] == 1, report
    assert reload(late).state is MessageState.UNKNOWN
    needed = used(list(calls), world)
    assert not (gaps := missing(needed, "ReconcilerFunction")), f"ReconcilerFunction lacks {gaps}"
