"""The mass sender end to end: moto for AWS (tables and queues from template.yaml), the WeChat
sandbox over real HTTP. The sandbox's inboxes and mass jobs are the truth: who received a batch,
and how many jobs WeChat accepted for it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import httpx
import pytest
from botocore.client import BaseClient

from tests.integration.conftest import AwsCall
from tests.integration.test_permissions import granted, used
from tests.integration.test_sending import CrashAfterSend, sqs_event
from tests.support import wechat
from tests.support.lambda_context import FakeLambdaContext
from tests.support.sending import SendingWorld, sending_world
from wxreach import container
from wxreach.aws import keys
from wxreach.aws.mass_batch_store import PART_OPENIDS
from wxreach.aws.send_guards import MINUTE_PERMIT_WINDOW_SECONDS, DynamoSendGuards
from wxreach.errors import InvalidInput
from wxreach.reach.mass_sending import (
    MASS_PERMIT_NAME,
    MassBatch,
    MassBatchRef,
    MassBatchState,
    MassSendPolicy,
    MassSendService,
    SendAllTarget,
)
from wxreach.wechat.api import MASS_PREVIEW_PATH, MASS_SEND_PATH, MASS_SENDALL_PATH, WeChatClient

BROADCAST = "b00000000000000000001"
TEXT = {"msgtype": "text", "text": {"content": "本周上新：夏季限定"}, "send_ignore_reprint": 0}


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[SendingWorld]:
    with mass_world(monkeypatch, followers=24) as w:
        yield w


def mass_world(monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> Any:
    class _World:
        def __enter__(self) -> SendingWorld:
            self._cm = sending_world(monkeypatch, **kwargs)
            w = self._cm.__enter__()
            monkeypatch.setenv("WXREACH_MASS_QUEUE_URL", w.aws.queues["MassQueue"])
            monkeypatch.setenv("WXREACH_MASS_DEAD_LETTER_URL", w.aws.queues["MassDeadLetterQueue"])
            container.reset()
            return w

        def __exit__(self, *exc: Any) -> None:
            self._cm.__exit__(*exc)

    return _World()


def ledger(world: SendingWorld) -> str:
    return world.aws.tables["LedgerTable"]


def put_meta(
    world: SendingWorld, broadcast_id: str = BROADCAST, *, state: str = "sending", body: Any = TEXT
) -> None:
    """The broadcast record as the broadcast service writes it."""
    boto3.client("dynamodb").put_item(
        TableName=ledger(world),
        Item={
            "pk": {"S": keys.broadcast_pk(broadcast_id)},
            "sk": {"S": keys.BROADCAST_META_SK},
            "appid": {"S": wechat.APPID},
            "channel": {"S": "mass"},
            "state": {"S": state},
            "mass_body": {"S": json.dumps(body, ensure_ascii=False)},
        },
    )


def set_state(world: SendingWorld, state: str, broadcast_id: str = BROADCAST) -> None:
    boto3.client("dynamodb").update_item(
        TableName=ledger(world),
        Key={"pk": {"S": keys.broadcast_pk(broadcast_id)}, "sk": {"S": keys.BROADCAST_META_SK}},
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":s": {"S": state}},
    )


def put_batch(
    number: int,
    openids: list[str] | None = None,
    *,
    sendall: SendAllTarget | None = None,
    broadcast_id: str = BROADCAST,
) -> MassBatchRef:
    batch = MassBatch(
        broadcast_id=broadcast_id, appid=wechat.APPID, number=number, openids=openids, sendall=sendall
    )
    container.mass_batch_store().put_batches([batch], now=datetime.now(UTC))
    return batch.ref()


def batch(number: int, broadcast_id: str = BROADCAST) -> MassBatch:
    found = container.mass_batch_store().get(broadcast_id, number)
    assert found is not None
    return found


def service(
    world: SendingWorld,
    *,
    clock: Callable[[], float] = time.time,
    transport: httpx.BaseTransport | None = None,
    read_timeout: float = 5.0,
    **policy: Any,
) -> MassSendService:
    """Another mass-sender instance: our real adapters, its own WeChat client and clock."""
    return MassSendService(
        store=container.mass_batch_store(),
        guards=DynamoSendGuards(world.aws.tables["QuotaTable"]),
        wechat=WeChatClient(world.sandbox.url, transport=transport, read_timeout=read_timeout),
        tokens=container.tokens(),
        policy=MassSendPolicy(**{"permit_poll_seconds": 0.05, **policy}),
        clock=clock,
    )


def calls(world: SendingWorld, path: str = MASS_SEND_PATH) -> int:
    return int(world.counters().get(path, {}).get("calls", 0))


def errcodes(world: SendingWorld, path: str = MASS_SEND_PATH) -> dict[str, int]:
    return dict(world.counters().get(path, {}).get("errcodes", {}))


def jobs(world: SendingWorld) -> list[dict[str, Any]]:
    return world.admin_call("GET", f"/accounts/{wechat.APPID}/mass-jobs")["jobs"]


def mass_inbox_counts(world: SendingWorld) -> dict[str, int]:
    return world.admin_call("GET", f"/accounts/{wechat.APPID}/inbox-counts?kind=mass")["counts"]


def advance_sandbox(world: SendingWorld, seconds: float) -> None:
    world.admin_call("POST", "/clock/advance", {"seconds": seconds})


def record(ref: MassBatchRef, world: SendingWorld) -> dict[str, Any]:
    """An SQS record of the mass queue, with a real receipt handle (visibility changes work)."""
    sqs = boto3.client("sqs")
    url = world.aws.queues["MassQueue"]
    sqs.send_message(QueueUrl=url, MessageBody=ref.model_dump_json())
    message = sqs.receive_message(QueueUrl=url, VisibilityTimeout=30)["Messages"][0]
    event = sqs_event([message["Body"]])
    event["Records"][0]["receiptHandle"] = message["ReceiptHandle"]
    event["Records"][0]["eventSourceARN"] = "arn:aws:sqs:us-east-1:123456789012:test-MassQueue"
    return event


# -- sending -------------------------------------------------------------------------------------
def test_a_batch_of_10_000_openids_is_sent_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import mass_sender_handler

    with mass_world(monkeypatch, followers=10_000) as world:
        put_meta(world)
        ref = put_batch(0, world.followers)
        parts = boto3.client("dynamodb").query(
            TableName=ledger(world),
            KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
            ExpressionAttributeValues={
                ":pk": {"S": keys.broadcast_pk(BROADCAST)},
                ":p": {"S": keys.batch_recipients_prefix(0)},
            },
        )["Items"]
        assert len(parts) == 10_000 // PART_OPENIDS
        # 28-character openids: ~100 KB per 5 000, far under DynamoDB's 400 KB per item.
        assert all(len(p["openids_z"]["B"]) < 150_000 for p in parts)

        for _ in range(2):  # the second delivery is a redelivery of the same record
            response = mass_sender_handler.lambda_handler(record(ref, world), FakeLambdaContext())
            assert response == {"batchItemFailures": []}
        sent = batch(0)
        assert sent.state is MassBatchState.SENT and sent.recipients == 10_000
        assert calls(world) == 1
        (job,) = jobs(world)
        assert str(job["msg_id"]) == sent.msg_id and job["clientmsgid"] == f"{BROADCAST}-0"
        counts = mass_inbox_counts(world)
        assert len(counts) == 10_000 and set(counts.values()) == {1}


def test_a_timeout_after_the_request_left_is_resolved_by_adopting_45065(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with mass_world(monkeypatch, followers=4) as world:
        put_meta(world)
        ref = put_batch(0, world.followers[:3])
        sender = service(world, read_timeout=0.5)
        # WeChat takes the job but answers too late: our call times out.
        world.faults({"path": MASS_SEND_PATH, "timeout": {"rate": 1.0, "sleep_s": 1.5, "then": "process"}})
        first = sender.send(ref)
        assert first.retry_after is not None
        waiting = batch(0)
        assert (waiting.state, waiting.maybe_sent, waiting.last_error) == (
            MassBatchState.QUEUED,
            True,
            "wechat_timeout",
        )
        world.clear_faults()
        time.sleep(1.5)  # the sandbox finishes processing the timed-out request
        assert len(jobs(world)) == 1
        # Within a minute of the submission WeChat answers 45066: wait, it was accepted.
        early = sender.send(ref)
        assert early.retry_after is not None and early.retry_after >= 60
        assert batch(0).state is MassBatchState.QUEUED
        advance_sandbox(world, 61)
        adopted = sender.send(ref)
        assert adopted.retry_after is None and adopted.batch is not None
        (job,) = jobs(world)
        assert adopted.batch.state is MassBatchState.SENT
        assert (adopted.batch.msg_id, adopted.batch.reason) == (str(job["msg_id"]), "adopted")
        assert errcodes(world) == {"0": 1, "45066": 1, "45065": 1}  # one job, accepted once
        assert all(len(world.inbox(o, "mass")) == 1 for o in world.followers[:3])


def test_a_crash_after_wechat_answered_is_taken_over_once_stale_and_adopted(world: SendingWorld) -> None:
    put_meta(world)
    ref = put_batch(0, world.followers[:2])
    crashing = service(world, transport=CrashAfterSend(MASS_SEND_PATH))
    with pytest.raises(SystemExit):
        crashing.send(ref)
    assert batch(0).state is MassBatchState.SENDING  # the ledger never heard of the job
    # A redelivery while the claim is fresh leaves it to its (presumed live) holder.
    busy = service(world).send(ref)
    assert busy.retry_after is not None and calls(world) == 1
    advance_sandbox(world, 61)
    later = service(world, clock=lambda: time.time() + 121)
    taken = later.send(ref)
    assert taken.batch is not None and taken.batch.state is MassBatchState.SENT
    assert taken.batch.reason == "adopted" and taken.batch.attempts == 2
    assert len(jobs(world)) == 1
    assert all(len(world.inbox(o, "mass")) == 1 for o in world.followers[:2])


def test_no_mass_quota_fails_the_batch_with_its_reason(world: SendingWorld) -> None:
    put_meta(world)
    # Today's send-to-all was used in the web console: WeChat has no history quota left (45028).
    world.admin_call("POST", f"/accounts/{wechat.APPID}/console-mass", {"content": "早安"})
    ref = put_batch(0, sendall=SendAllTarget(is_to_all=True))
    result = service(world).send(ref)
    assert result.retry_after is None
    failed = batch(0)
    assert (failed.state, failed.errcode, failed.reason) == (MassBatchState.FAILED, 45028, "no_mass_quota")
    assert calls(world, MASS_SENDALL_PATH) == 1 and jobs(world) == []


def test_sendall_to_a_tag_reaches_the_tag_only(world: SendingWorld) -> None:
    put_meta(world)
    tag = world.admin_call(
        "POST", f"/accounts/{wechat.APPID}/tags", {"name": "vip", "openids": world.followers[:3]}
    )
    result = service(world).send(put_batch(0, sendall=SendAllTarget(tag_id=tag["id"])))
    assert result.batch is not None and result.batch.state is MassBatchState.SENT
    assert set(mass_inbox_counts(world)) == set(world.followers[:3])


def test_42010_and_system_busy_are_retried_later_with_back_off(world: SendingWorld) -> None:
    import mass_sender_handler

    put_meta(world)
    ref = put_batch(0, world.followers[:2])
    world.faults({"path": MASS_SEND_PATH, "errcodes": {"42010": 1.0}})
    event = record(ref, world)
    response = mass_sender_handler.lambda_handler(event, FakeLambdaContext())
    assert response == {"batchItemFailures": [{"itemIdentifier": "msg-0"}]}
    waiting = batch(0)
    assert (waiting.state, waiting.attempts, waiting.last_error) == (
        MassBatchState.QUEUED,
        1,
        "mass_too_fast",
    )
    # The record's visibility was pushed out by minutes: it does not come back now.
    assert "Messages" not in boto3.client("sqs").receive_message(QueueUrl=world.aws.queues["MassQueue"])
    world.faults({"path": MASS_SEND_PATH, "errcodes": {"-1": 1.0}})
    busy = service(world).send(ref)
    assert busy.retry_after == 20.0  # 5 s x 2^attempts
    assert batch(0).last_error == "system_busy"
    world.clear_faults()
    sent = service(world).send(ref)
    assert sent.batch is not None and sent.batch.state is MassBatchState.SENT
    assert sent.batch.attempts == 3 and len(jobs(world)) == 1


def test_a_batch_gives_up_after_max_attempts(world: SendingWorld) -> None:
    put_meta(world)
    ref = put_batch(0, world.followers[:2])
    world.faults({"path": MASS_SEND_PATH, "errcodes": {"-1": 1.0}})
    sender = service(world, max_attempts=2)
    assert sender.send(ref).retry_after is not None
    assert sender.send(ref).retry_after is None
    failed = batch(0)
    assert (failed.state, failed.reason, failed.errcode) == (MassBatchState.FAILED, "system_busy", -1)


# -- cancel --------------------------------------------------------------------------------------
def test_a_cancelled_broadcast_sends_nothing_and_its_batch_is_cancelled(world: SendingWorld) -> None:
    put_meta(world, state="cancelled")
    result = service(world).send(put_batch(0, world.followers[:2]))
    assert result.retry_after is None
    cancelled = batch(0)
    assert (cancelled.state, cancelled.reason) == (MassBatchState.CANCELLED, "broadcast_cancelled")
    assert calls(world) == 0


def test_a_cancel_just_before_the_claim_still_stops_the_batch(
    world: SendingWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broadcast was `sending` when the sender read it; the cancel lands before the claim:
    the claim's transaction sees it."""
    put_meta(world)
    ref = put_batch(0, world.followers[:2])
    original = BaseClient._make_api_call

    def cancel_first(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if operation == "TransactWriteItems" and any("ConditionCheck" in i for i in params["TransactItems"]):
            original(
                self,
                "UpdateItem",
                {
                    "TableName": ledger(world),
                    "Key": {"pk": {"S": keys.broadcast_pk(BROADCAST)}, "sk": {"S": keys.BROADCAST_META_SK}},
                    "UpdateExpression": "SET #s = :s",
                    "ExpressionAttributeNames": {"#s": "state"},
                    "ExpressionAttributeValues": {":s": {"S": "cancelled"}},
                },
            )
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", cancel_first)
    result = service(world).send(ref)
    assert result.batch is not None and result.batch.state is MassBatchState.CANCELLED
    assert calls(world) == 0


def test_cancel_queued_and_the_summary_count_batches_and_recipients(world: SendingWorld) -> None:
    put_meta(world)
    refs = [put_batch(n, world.followers[n * 4 : n * 4 + 4]) for n in range(4)]
    sender = service(world)
    assert sender.send(refs[0]).batch.state is MassBatchState.SENT  # type: ignore[union-attr]
    world.faults({"path": MASS_SEND_PATH, "errcodes": {"40007": 1.0}})
    assert sender.send(refs[1]).batch.state is MassBatchState.FAILED  # type: ignore[union-attr]
    world.clear_faults()
    set_state(world, "cancelled")
    store = container.mass_batch_store()
    assert store.cancel_queued(BROADCAST) == (2, 8)
    assert store.cancel_queued(BROADCAST) == (0, 0)
    summary = store.summary(BROADCAST)
    assert (summary["total_batches"], summary["total_recipients"]) == (4, 16)
    assert summary["batches"] == {"sent": 1, "failed": 1, "cancelled": 2}
    assert summary["recipients"] == {"sent": 4, "failed": 4, "cancelled": 8}
    assert summary["reasons"] == {"failed": {"invalid_media_id": 4}, "cancelled": {"cancelled": 8}}
    assert summary["batch_reasons"] == {"failed": {"invalid_media_id": 1}, "cancelled": {"cancelled": 2}}
    # Nothing is sent after the cancel, whatever the queue still delivers.
    assert sender.send(refs[2]).retry_after is None
    assert calls(world) == 2
    assert store.msg_ids(BROADCAST) == [batch(0).msg_id]
    assert sorted(store.sent_openids(BROADCAST)) == sorted(world.followers[:4])


def test_re_putting_batches_never_resets_one_and_costs_one_request_each(
    world: SendingWorld, aws_calls: list[AwsCall]
) -> None:
    put_meta(world)
    store = container.mass_batch_store()
    batches = [
        MassBatch(
            broadcast_id=BROADCAST, appid=wechat.APPID, number=n, openids=world.followers[n * 2 : n * 2 + 2]
        )
        for n in range(3)
    ]
    aws_calls.clear()
    assert store.put_batches(batches, now=datetime.now(UTC)) == 3
    assert [c.operation for c in aws_calls] == ["TransactWriteItems"] * 3
    service(world).send(batches[0].ref())
    # A resumed split puts them again (even with other content): nothing changes.
    again = [b.model_copy(update={"openids": world.followers[10:12]}) for b in batches]
    assert store.put_batches(again, now=datetime.now(UTC)) == 0
    first = batch(0)
    assert first.state is MassBatchState.SENT and first.openids == world.followers[:2]
    assert batch(1).state is MassBatchState.QUEUED


# -- preview, delete, status ---------------------------------------------------------------------
def test_preview_by_openid_and_by_wechat_id_which_wins(world: SendingWorld) -> None:
    alice, bob = world.followers[0], world.followers[1]
    world.admin_call("POST", f"/accounts/{wechat.APPID}/users/{alice}", {"wxname": "alice_wx"})
    mass = container.mass_send_service()
    assert mass.preview(wechat.APPID, TEXT, openid=bob)["to"] == "openid"
    assert mass.preview(wechat.APPID, TEXT, openid=bob, wxname="alice_wx")["to"] == "wxname"
    assert len(world.inbox(bob, "mass_preview")) == 1
    assert len(world.inbox(alice, "mass_preview")) == 1
    assert world.inbox(bob, "mass") == []  # a preview is no mass send
    world.admin_call("POST", f"/accounts/{wechat.APPID}/users/{world.followers[2]}/unfollow")
    with pytest.raises(InvalidInput) as refused:
        mass.preview(wechat.APPID, TEXT, openid=world.followers[2])
    assert (refused.value.reason, refused.value.status) == ("not_following", 400)
    # Previews are mass calls: each took a permit of the shared limiter.
    permits = boto3.client("dynamodb").get_item(
        TableName=world.aws.tables["QuotaTable"],
        Key={
            "pk": {"S": keys.account_pk(wechat.APPID)},
            "sk": {"S": keys.counter_sk(MASS_PERMIT_NAME, "rolling")},
        },
    )["Item"]
    assert permits["n"]["N"] == "3" and calls(world, MASS_PREVIEW_PATH) == 3


def test_delete_an_article_of_a_sent_mpnews_batch(world: SendingWorld) -> None:
    draft = world.admin_call(
        "POST",
        f"/accounts/{wechat.APPID}/drafts",
        {
            "articles": [
                {"title": "夏季新品", "content": "<p>a</p>"},
                {"title": "门店", "content": "<p>b</p>"},
            ]
        },
    )
    put_meta(
        world, body={"msgtype": "mpnews", "mpnews": {"media_id": draft["media_id"]}, "send_ignore_reprint": 1}
    )
    sent = service(world).send(put_batch(0, world.followers[:2])).batch
    assert sent is not None and sent.state is MassBatchState.SENT and sent.msg_data_id is not None
    assert sent.msg_id is not None
    mass = container.mass_send_service()
    assert mass.get_status(wechat.APPID, sent.msg_id) == "SEND_SUCCESS"
    mass.delete(wechat.APPID, sent.msg_id, 2)
    assert mass.get_status(wechat.APPID, sent.msg_id) == "SEND_SUCCESS"
    mass.delete(wechat.APPID, sent.msg_id, 0)
    assert mass.get_status(wechat.APPID, sent.msg_id) == "DELETE"


# -- the limiter ---------------------------------------------------------------------------------
def test_minute_permits_hold_in_every_rolling_window(world: SendingWorld) -> None:
    guards = DynamoSendGuards(world.aws.tables["QuotaTable"])

    def take(at: float) -> bool:
        return guards.take_minute_permit(wechat.APPID, "unit-test", per_minute=5, now=at)

    t0 = 1_717_171_230.0  # mid-minute: a fixed-window limiter would reset at the next :00
    assert [take(t0 + i) for i in range(6)] == [True] * 5 + [False]
    assert not take(t0 + 40)  # the next minute started; the rolling window has not moved on
    assert not take(t0 + MINUTE_PERMIT_WINDOW_SECONDS - 0.1)
    assert take(t0 + MINUTE_PERMIT_WINDOW_SECONDS)  # permit 1 left the window
    assert take(t0 + MINUTE_PERMIT_WINDOW_SECONDS + 1)
    assert not take(t0 + MINUTE_PERMIT_WINDOW_SECONDS + 1.5)


# -- permissions ---------------------------------------------------------------------------------
@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch, aws_calls: list[AwsCall]) -> Iterator[SendingWorld]:
    with mass_world(monkeypatch, followers=6) as w:
        aws_calls.clear()
        yield w


def test_mass_sender_calls_are_all_granted(recorded: SendingWorld, aws_calls: list[AwsCall]) -> None:
    import mass_sender_handler

    world = recorded
    put_meta(world)
    refs = [put_batch(n, world.followers[n * 2 : n * 2 + 2]) for n in range(3)]
    events = [record(ref, world) for ref in refs]
    aws_calls.clear()
    mass_sender_handler.lambda_handler(events[0], FakeLambdaContext())  # sent
    world.faults({"path": MASS_SEND_PATH, "errcodes": {"-1": 1.0}})
    mass_sender_handler.lambda_handler(events[1], FakeLambdaContext())  # retried later
    set_state(world, "cancelled")
    mass_sender_handler.lambda_handler(events[2], FakeLambdaContext())  # cancelled
    bad = sqs_event(["{not json"])
    mass_sender_handler.lambda_handler(bad, FakeLambdaContext())  # dead-lettered
    # test_permissions names a transaction's ConditionCheck after its entry; IAM calls it ConditionCheckItem.
    needed = {
        ("dynamodb:ConditionCheckItem", *rest) if action == "dynamodb:ConditionCheck" else (action, *rest)
        for action, *rest in used(aws_calls, world.aws)
    }
    assert ("dynamodb:ConditionCheckItem", "LedgerTable", None) in needed
    assert ("sqs:ChangeMessageVisibility", "MassQueue", None) in needed
    assert ("sqs:SendMessage", "MassDeadLetterQueue", None) in needed
    missing = needed - granted("MassSenderFunction")
    assert not missing, f"MassSenderFunction lacks {sorted(missing)}"


def test_enqueue_many_sends_every_record_in_batches_of_ten(
    world: SendingWorld, aws_calls: list[AwsCall]
) -> None:
    from wxreach.aws.mass_queue import SqsMassQueue

    refs = [MassBatchRef(appid=wechat.APPID, broadcast_id=BROADCAST, batch=n) for n in range(23)]
    aws_calls.clear()
    SqsMassQueue(world.aws.queues["MassQueue"]).enqueue_many(refs)
    assert [c.operation for c in aws_calls] == ["SendMessageBatch"] * 3
    bodies = world.aws.queue_messages("MassQueue")
    assert sorted(b["batch"] for b in bodies) == list(range(23))
    assert all(MassBatchRef.model_validate(b).broadcast_id == BROADCAST for b in bodies)
