"""Broadcasts on moto + the WeChat sandbox over HTTP: estimates, dry runs, the splitter and its
checkpoint, schedules, the large-send guard, cancel, and the operator routes."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

import operator_api_handler
from tests.integration.conftest import call, json_body
from tests.support import wechat
from tests.support.broadcasts import GROUP, BroadcastWorld, broadcast_world, put_segment, read_object
from tests.support.fixtures import api_event
from tests.support.sending import SUB_TEMPLATE_ID, TEMPLATE_ID
from wxreach import container
from wxreach.aws.broadcast_io import SqsSplitQueues
from wxreach.reach import audiences
from wxreach.reach.broadcasts import BroadcastInput, BroadcastState
from wxreach.reach.messages import MessageState

APPID = wechat.APPID
ACTOR = "arn:aws:sts::123456789012:assumed-role/wxreach-operator/alice"
CONTENT = {
    "template_id": TEMPLATE_ID,
    "data": {"thing1": "{{product}}", "amount2": "{{amount}}", "character_string3": "{{order.no}}"},
}


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[BroadcastWorld]:
    with broadcast_world(monkeypatch, followers=12) as w:
        container.template_service().sync(APPID)
        yield w


def params(n: int) -> dict[str, Any]:
    return {"product": f"Latte {n}", "amount": f"¥{n}.50", "order": {"no": f"A{n:04d}"}}


def template_spec(recipients: list[dict[str, Any]] | None = None, **audience: Any) -> BroadcastInput:
    return BroadcastInput.model_validate(
        {
            "name": "Spring sale",
            "channel": "template",
            "audience": audience or {"kind": "segment", "recipients": recipients},
            "content": CONTENT,
        }
    )


def route(method: str, path: str, body: Any = None, **path_params: str) -> dict[str, Any]:
    event = api_event("send_message")
    resource = path
    concrete = path.replace("{appid}", APPID)
    for name, value in path_params.items():
        concrete = concrete.replace("{" + name + "}", value)
    event.update(
        {
            "resource": resource,
            "path": concrete,
            "httpMethod": method,
            "pathParameters": {"appid": APPID, **path_params},
            "body": None if body is None else json.dumps(body, ensure_ascii=False),
        }
    )
    return call(operator_api_handler, event)


def _with_query(event: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
    event.update(
        {
            "resource": "/accounts/{appid}/broadcasts",
            "path": f"/accounts/{APPID}/broadcasts",
            "httpMethod": "GET",
            "body": None,
            "queryStringParameters": query,
            "multiValueQueryStringParameters": {k: [v] for k, v in query.items()},
        }
    )
    return event


def inbox_counts(world: BroadcastWorld, kind: str = "template") -> Counter[str]:
    return Counter({o: len(world.sending.inbox(o, kind)) for o in world.followers})


def ledger_messages(world: BroadcastWorld, broadcast_id: str) -> list[dict[str, Any]]:
    table = world.sending.aws.tables["LedgerTable"]
    items = boto3.client("dynamodb").scan(TableName=table)["Items"]
    return [i for i in items if i["sk"]["S"] == "MESSAGE" and broadcast_id in i["origin"]["S"]]


# -- estimate, dry run, send -------------------------------------------------------------------


def test_template_segment_with_params_estimate_dry_run_and_send_agree(world: BroadcastWorld) -> None:
    openids = world.followers[:8]
    container.followers().set_following(APPID, openids[0], following=False, at=datetime.now(UTC))
    recipients = [{"openid": o, "params": params(i)} for i, o in enumerate(openids)]
    recipients[1] = {"openid": openids[1], "params": {"product": "no amount"}}  # missing parameters
    service = container.broadcast_service()
    broadcast = service.create(APPID, template_spec(recipients), actor=ACTOR)

    estimate = service.estimate(APPID, broadcast.id)
    assert estimate.recipients == 6
    assert estimate.excluded == {"not_following": 1, "invalid_parameters": 1}

    dry = service.dry_run(APPID, broadcast.id, actor=ACTOR)
    report = read_object(dry.key)
    assert len(report) == 8
    assert sum(line["would_send"] for line in report) == estimate.recipients
    assert Counter(line["reason"] for line in report if not line["would_send"]) == Counter(estimate.excluded)
    assert (
        next(line for line in report if line["openid"] == openids[3])["values"]["character_string3"]
        == "A0003"
    )
    assert sum(inbox_counts(world).values()) == 0  # a dry run sends nothing

    service.publish(APPID, broadcast.id, actor=ACTOR)
    world.pump()
    counts = inbox_counts(world)
    assert [counts[o] for o in openids] == [0, 0, 1, 1, 1, 1, 1, 1]
    received = world.sending.inbox(openids[5], "template")[0]
    assert received["data"]["thing1"] == "Latte 5"

    view = service.view(APPID, broadcast.id)
    assert view.broadcast.state is BroadcastState.SENT
    assert view.counts.recipients == 6
    assert view.counts.by_state["sent"] == 6
    assert view.counts.excluded == estimate.excluded
    messages = ledger_messages(world, broadcast.id)
    assert len(messages) == 6 and {m["state"]["S"] for m in messages} == {"sent"}


def test_segment_object_jsonl_and_csv_with_invalid_lines(world: BroadcastWorld) -> None:
    a, b, c = world.followers[:3]
    put_segment(
        f"segments/{APPID}/s1.jsonl",
        [
            json.dumps({"openid": a, "params": params(1)}),
            "not json",
            json.dumps({"openid": "bad id!"}),
            json.dumps({"openid": b, "params": params(2)}),
            json.dumps({"openid": a, "params": params(1)}),
        ],
    )
    put_segment(
        f"segments/{APPID}/s2.csv",
        ["openid,product,amount,order.no", f"{c},Mocha,¥3.00,C1", f"{a},Tea,¥1.00,C2", "only-one-column"],
    )
    service = container.broadcast_service()
    jsonl = service.create(
        APPID, template_spec(kind="segment", segment={"key": f"segments/{APPID}/s1.jsonl"}), actor=ACTOR
    )
    estimate = service.estimate(APPID, jsonl.id)
    assert estimate.recipients == 2
    assert estimate.excluded == {"invalid_recipient": 2, "duplicate": 1}
    csv_b = service.create(
        APPID,
        template_spec(kind="segment", segment={"key": f"segments/{APPID}/s2.csv", "format": "csv"}),
        actor=ACTOR,
    )
    assert service.estimate(APPID, csv_b.id).recipients == 2
    service.publish(APPID, csv_b.id, actor=ACTOR)
    world.pump()
    (got,) = world.sending.inbox(c, "template")
    assert got["data"]["character_string3"] == "C1"


def test_split_crash_between_send_batches_resumes_exactly_once(
    world: BroadcastWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audiences, "PAGE_SIZE", 3)
    recipients = [{"openid": o, "params": params(i)} for i, o in enumerate(world.followers)]
    service = container.broadcast_service()
    broadcast = service.create(APPID, template_spec(recipients), actor=ACTOR)
    service.publish(APPID, broadcast.id, actor=ACTOR)

    original = SqsSplitQueues.send_batches
    calls = {"n": 0}

    def crash_on_third(self: SqsSplitQueues, batches: Any) -> None:
        calls["n"] += 1
        original(self, batches)  # the records went out ...
        if calls["n"] == 3:
            raise RuntimeError("instance died before its checkpoint")  # ... the checkpoint did not

    monkeypatch.setattr(SqsSplitQueues, "send_batches", crash_on_third)
    world.pump()  # the failed split record comes back and resumes from the checkpoint
    counts = inbox_counts(world)
    assert set(counts.values()) == {1}, counts
    view = service.view(APPID, broadcast.id)
    assert view.counts.recipients == len(world.followers)
    assert view.counts.by_state["sent"] == len(world.followers)
    assert view.broadcast.split.runs >= 2


# -- schedules ---------------------------------------------------------------------------------


def _schedule(name: str) -> dict[str, Any] | None:
    try:
        return boto3.client("scheduler").get_schedule(Name=name, GroupName=GROUP)
    except boto3.client("scheduler").exceptions.ResourceNotFoundException:
        return None


def test_schedule_create_move_cancel_and_fire_after_cancel(world: BroadcastWorld) -> None:
    import broadcast_splitter_handler
    from tests.support.lambda_context import FakeLambdaContext

    service = container.broadcast_service()
    recipients = [{"openid": o, "params": params(i)} for i, o in enumerate(world.followers[:3])]
    broadcast = service.create(APPID, template_spec(recipients), actor=ACTOR)
    at = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    scheduled = service.publish(APPID, broadcast.id, actor=ACTOR, at=at)
    assert scheduled.state is BroadcastState.SCHEDULED
    schedule = _schedule(broadcast.id)
    assert schedule is not None
    assert schedule["ScheduleExpression"] == f"at({at.strftime('%Y-%m-%dT%H:%M:%S')})"
    assert json.loads(schedule["Target"]["Input"])["broadcast_id"] == broadcast.id

    later = at + timedelta(hours=1)
    from wxreach.reach.broadcasts import BroadcastEdit

    service.edit(APPID, broadcast.id, BroadcastEdit(scheduled_at=later), actor=ACTOR)
    moved = _schedule(broadcast.id)
    assert moved is not None and moved["ScheduleExpression"] == f"at({later.strftime('%Y-%m-%dT%H:%M:%S')})"

    cancelled = service.cancel(APPID, broadcast.id, actor=ACTOR)
    assert cancelled.state is BroadcastState.CANCELLED
    assert _schedule(broadcast.id) is None

    # A schedule that fires anyway (it was already in flight) does nothing.
    payload = json.loads(moved["Target"]["Input"])
    broadcast_splitter_handler.lambda_handler(payload, FakeLambdaContext(remaining_ms=60_000))
    world.pump()
    assert sum(inbox_counts(world).values()) == 0
    assert service.get(APPID, broadcast.id).state is BroadcastState.CANCELLED
    actions = [e.action for e in service.audit_trail(APPID, broadcast.id)]
    assert actions == ["create", "schedule", "edit", "cancel"]


def test_a_fired_schedule_sends(world: BroadcastWorld) -> None:
    import broadcast_splitter_handler
    from tests.support.lambda_context import FakeLambdaContext

    service = container.broadcast_service()
    recipients = [{"openid": o, "params": params(i)} for i, o in enumerate(world.followers[:4])]
    broadcast = service.create(APPID, template_spec(recipients), actor=ACTOR)
    service.publish(APPID, broadcast.id, actor=ACTOR, at=datetime.now(UTC) + timedelta(minutes=5))
    payload = json.loads(_schedule(broadcast.id)["Target"]["Input"])  # type: ignore[index]
    broadcast_splitter_handler.lambda_handler(payload, FakeLambdaContext(remaining_ms=60_000))
    world.pump()
    assert [inbox_counts(world)[o] for o in world.followers[:4]] == [1, 1, 1, 1]


# -- large-send guard, cancel ------------------------------------------------------------------


def test_large_send_guard_needs_the_exact_count(monkeypatch: pytest.MonkeyPatch) -> None:
    with broadcast_world(monkeypatch, followers=6, large_send_threshold="3") as world:
        container.template_service().sync(APPID)
        recipients = [{"openid": o, "params": params(i)} for i, o in enumerate(world.followers)]
        created = route(
            "POST", "/accounts/{appid}/broadcasts", {**template_spec(recipients).model_dump(mode="json")}
        )
        assert created["statusCode"] == 201, created["body"]
        bid = json_body(created)["id"]
        path = "/accounts/{appid}/broadcasts/{broadcast_id}/publish"
        refused = route("POST", path, {}, broadcast_id=bid)
        assert refused["statusCode"] == 409
        assert json_body(refused)["error"] == "confirmation_required"
        wrong = route("POST", path, {"confirm": 5}, broadcast_id=bid)
        assert json_body(wrong)["error"] == "confirmation_mismatch"
        assert sum(inbox_counts(world).values()) == 0
        ok = route("POST", path, {"confirm": 6}, broadcast_id=bid)
        assert ok["statusCode"] == 202, ok["body"]
        world.pump()
        assert set(inbox_counts(world).values()) == {1}
        trail = json_body(route("GET", "/accounts/{appid}/broadcasts/{broadcast_id}/audit", broadcast_id=bid))
        assert [e["action"] for e in trail["entries"]] == ["create", "confirm", "publish"]
        assert trail["entries"][0]["actor"] == ACTOR


def test_cancel_mid_send_reports_exactly_and_sends_nothing_after(
    world: BroadcastWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    import template_sender_handler
    from tests.support.broadcasts import _record
    from tests.support.lambda_context import FakeLambdaContext
    from wxreach.reach import splitting

    monkeypatch.setattr(splitting, "TEMPLATE_GROUP", 4)
    service = container.broadcast_service()
    recipients = [{"openid": o, "params": params(i)} for i, o in enumerate(world.followers)]
    broadcast = service.create(APPID, template_spec(recipients), actor=ACTOR)
    service.publish(APPID, broadcast.id, actor=ACTOR)
    # Split everything, then send only the first record of the send queue.
    import broadcast_splitter_handler

    sqs = boto3.client("sqs")
    split_url = world.sending.aws.queues["SplitQueue"]
    (msg,) = sqs.receive_message(QueueUrl=split_url)["Messages"]
    broadcast_splitter_handler.lambda_handler(
        {"Records": [_record(msg, split_url)]}, FakeLambdaContext(remaining_ms=60_000)
    )
    sqs.delete_message(QueueUrl=split_url, ReceiptHandle=msg["ReceiptHandle"])
    send_url = world.sending.aws.queues["SendQueue"]

    first = sqs.receive_message(QueueUrl=send_url, MaxNumberOfMessages=1)["Messages"]
    template_sender_handler.lambda_handler(
        {"Records": [_record(first[0], send_url)]}, FakeLambdaContext(remaining_ms=60_000)
    )
    sqs.delete_message(QueueUrl=send_url, ReceiptHandle=first[0]["ReceiptHandle"])
    sent_before = sum(inbox_counts(world).values())
    assert sent_before == 4

    cancelled = service.cancel(APPID, broadcast.id, actor=ACTOR)
    assert cancelled.cancel is not None
    assert cancelled.cancel.sent == sent_before
    assert cancelled.cancel.not_sent == len(world.followers) - sent_before
    assert cancelled.cancel.in_flight == 0

    world.pump()  # the rest of the records meet a cancelled broadcast
    assert sum(inbox_counts(world).values()) == sent_before
    states = Counter(m["state"]["S"] for m in ledger_messages(world, broadcast.id))
    assert states["sent"] == sent_before
    assert states["skipped"] == len(world.followers) - sent_before
    view = service.view(APPID, broadcast.id)
    assert view.broadcast.state is BroadcastState.CANCELLED
    assert view.counts.by_reason["skipped"] == {"broadcast_cancelled": len(world.followers) - sent_before}


# -- routes and refusals -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"name": "x", "channel": "mass", "audience": {"kind": "all"}, "content": CONTENT}, 422),
        ({"name": "x", "channel": "template", "audience": {"kind": "tag"}, "content": CONTENT}, 422),
        (
            {"name": "x", "channel": "template", "audience": {"kind": "credit_holders"}, "content": CONTENT},
            422,
        ),
        ({"name": "", "channel": "template", "audience": {"kind": "all"}, "content": CONTENT}, 422),
        ({"name": "x", "channel": "mass", "audience": {"kind": "all"}, "mass": {"msgtype": "text"}}, 422),
    ],
)
def test_create_refuses_inconsistent_broadcasts(
    world: BroadcastWorld, body: dict[str, Any], status: int
) -> None:
    resp = route("POST", "/accounts/{appid}/broadcasts", body)
    assert resp["statusCode"] == status, resp["body"]
    assert json_body(resp)["error"] == "invalid_request"


def test_routes_create_list_get_edit_delete_and_errors(world: BroadcastWorld) -> None:
    body = {**template_spec(kind="all").model_dump(mode="json"), "request_key": "spring-1"}
    first = route("POST", "/accounts/{appid}/broadcasts", body)
    again = route("POST", "/accounts/{appid}/broadcasts", body)
    assert first["statusCode"] == again["statusCode"] == 201
    bid = json_body(first)["id"]
    assert json_body(again)["id"] == bid  # the request key creates it once

    listed = json_body(route("GET", "/accounts/{appid}/broadcasts"))
    assert [b["id"] for b in listed["broadcasts"]] == [bid]
    for n in range(2):
        route("POST", "/accounts/{appid}/broadcasts", {**body, "request_key": f"more-{n}"})
    page1 = json_body(call(operator_api_handler, _with_query(api_event("send_message"), {"limit": "2"})))
    page2 = json_body(
        call(
            operator_api_handler,
            _with_query(api_event("send_message"), {"limit": "2", "after": page1["next"]}),
        )
    )
    assert len(page1["broadcasts"]) == 2 and len(page2["broadcasts"]) == 1 and page2["next"] is None
    assert {b["id"] for b in page1["broadcasts"] + page2["broadcasts"]} >= {bid}
    for token in ("garbage", "eyJhIjoxfQ==", "e30="):
        event_query = {"after": token}
        bad_page = call(operator_api_handler, _with_query(api_event("send_message"), event_query))
        assert bad_page["statusCode"] == 400 and json_body(bad_page)["error"] == "bad_page_token"
    item = "/accounts/{appid}/broadcasts/{broadcast_id}"
    edited = route("PATCH", item, {"name": "Spring sale II"}, broadcast_id=bid)
    assert edited["statusCode"] == 200, edited["body"]
    assert json_body(edited)["name"] == "Spring sale II"
    got = json_body(route("GET", item, broadcast_id=bid))
    assert got["broadcast"]["state"] == "draft" and got["counts"]["recipients"] == 0

    estimate = json_body(route("POST", item + "/estimate", broadcast_id=bid))
    # Everyone is listed; the content's {{params}} have no values for an "all" audience.
    assert estimate["recipients"] == 0
    assert estimate["excluded"] == {"invalid_parameters": len(world.followers)}
    plain = {**CONTENT, "data": {"thing1": "会员日", "amount2": "¥1.00", "character_string3": "X-1"}}
    edited = route("PATCH", item, {"content": plain}, broadcast_id=bid)
    assert edited["statusCode"] == 200, edited["body"]
    estimate = json_body(route("POST", item + "/estimate", broadcast_id=bid))
    assert estimate["recipients"] == len(world.followers) and estimate["excluded"] == {}

    missing = route("GET", item, broadcast_id="b" + "0" * 20)
    assert missing["statusCode"] == 404 and json_body(missing)["error"] == "unknown_broadcast"
    bad_id = route("GET", item, broadcast_id="nope")
    assert bad_id["statusCode"] == 422
    past = route("POST", item + "/publish", {"at": "2020-01-01T00:00:00Z"}, broadcast_id=bid)
    assert past["statusCode"] == 400 and json_body(past)["error"] == "time_in_past"
    drafts = json_body(
        call(operator_api_handler, _with_query(api_event("send_message"), {"state": "sending"}))
    )
    assert drafts["broadcasts"] == []
    deleted = route("DELETE", item, broadcast_id=bid)
    assert deleted["statusCode"] == 204
    assert route("GET", item, broadcast_id=bid)["statusCode"] == 404


def test_edit_and_delete_refused_once_sending(world: BroadcastWorld) -> None:
    service = container.broadcast_service()
    recipients = [{"openid": o, "params": params(i)} for i, o in enumerate(world.followers[:2])]
    broadcast = service.create(APPID, template_spec(recipients), actor=ACTOR)
    service.publish(APPID, broadcast.id, actor=ACTOR)
    item = "/accounts/{appid}/broadcasts/{broadcast_id}"
    assert (
        json_body(route("PATCH", item, {"name": "late"}, broadcast_id=broadcast.id))["error"]
        == "not_editable"
    )
    assert json_body(route("DELETE", item, broadcast_id=broadcast.id))["error"] == "not_a_draft"
    again = route("POST", item + "/publish", {}, broadcast_id=broadcast.id)
    assert again["statusCode"] == 409


# -- subscription notifications ------------------------------------------------------------------


def test_subscription_broadcast_to_everyone_with_credit(world: BroadcastWorld) -> None:
    holders = world.followers[:3]
    for openid in holders:
        world.sending.popup_accept(openid)
    spec = BroadcastInput.model_validate(
        {
            "name": "Shipped",
            "channel": "subscribe",
            "audience": {"kind": "credit_holders"},
            "content": {
                "template_id": SUB_TEMPLATE_ID,
                "data": {"thing1": "咖啡豆", "character_string2": "SF1"},
            },
        }
    )
    service = container.broadcast_service()
    broadcast = service.create(APPID, spec, actor=ACTOR)
    assert service.estimate(APPID, broadcast.id).recipients == 3
    everyone = service.create(
        APPID, spec.model_copy(update={"audience": template_spec(kind="all").audience}), actor=ACTOR
    )
    assert service.estimate(APPID, everyone.id).excluded == {
        "no_subscription_credit": len(world.followers) - 3
    }
    service.publish(APPID, broadcast.id, actor=ACTOR)
    world.pump()
    assert [len(world.sending.inbox(o, "subscription")) for o in holders] == [1, 1, 1]
    assert service.view(APPID, broadcast.id).counts.by_state["sent"] == 3
    follower = container.followers().get(APPID, holders[0])
    assert follower is not None and follower.subscriptions[0].one_time_credits == 0


def test_message_ids_do_not_depend_on_batches(world: BroadcastWorld) -> None:
    service = container.broadcast_service()
    recipients = [{"openid": o, "params": params(i)} for i, o in enumerate(world.followers[:2])]
    broadcast = service.create(APPID, template_spec(recipients), actor=ACTOR)
    service.publish(APPID, broadcast.id, actor=ACTOR)
    world.pump()
    for item in ledger_messages(world, broadcast.id):
        assert json.loads(item["origin"]["S"])["batch_id"] is None
    assert {m["state"]["S"] for m in ledger_messages(world, broadcast.id)} == {MessageState.SENT}


# -- mass ----------------------------------------------------------------------------------------


def mass_spec(audience: dict[str, Any], **mass: Any) -> BroadcastInput:
    return BroadcastInput.model_validate(
        {
            "name": "Newsletter",
            "channel": "mass",
            "audience": audience,
            "mass": mass or {"msgtype": "text", "text": "本周新品上市"},
        }
    )


def mass_counts(world: BroadcastWorld) -> Counter[str]:
    counts = world.sending.admin_call("GET", f"/accounts/{APPID}/inbox-counts?kind=mass")["counts"]
    return Counter(counts)


def batch_sizes(broadcast_id: str) -> list[int]:
    return [b.recipients for b in container.mass_batch_store().iter_batches(broadcast_id)]


@pytest.mark.parametrize(
    ("size", "expected"),
    [(2, [2]), (5, [5]), (6, [3, 3]), (7, [5, 2]), (11, [5, 3, 3]), (12, [5, 5, 2])],
)
def test_mass_batches_hold_2_to_max_openids(
    world: BroadcastWorld, monkeypatch: pytest.MonkeyPatch, size: int, expected: list[int]
) -> None:
    from wxreach.reach import splitting

    monkeypatch.setattr(splitting, "MAX_MASS_OPENIDS", 5)
    monkeypatch.setattr(audiences, "PAGE_SIZE", 4)
    recipients = [{"openid": o} for o in world.followers[:size]]
    service = container.broadcast_service()
    broadcast = service.create(APPID, mass_spec({"kind": "segment", "recipients": recipients}), actor=ACTOR)
    service.publish(APPID, broadcast.id, actor=ACTOR)
    world.pump()
    assert batch_sizes(broadcast.id) == expected
    counts = mass_counts(world)
    assert [counts[o] for o in world.followers[:size]] == [1] * size
    view = service.view(APPID, broadcast.id)
    assert view.broadcast.state is BroadcastState.SENT
    assert view.counts.by_state == {"sent": size}


def test_mass_to_one_recipient_is_refused_with_a_reason(world: BroadcastWorld) -> None:
    service = container.broadcast_service()
    broadcast = service.create(
        APPID, mass_spec({"kind": "segment", "recipients": [{"openid": world.followers[0]}]}), actor=ACTOR
    )
    resp = route("POST", "/accounts/{appid}/broadcasts/{broadcast_id}/publish", {}, broadcast_id=broadcast.id)
    assert resp["statusCode"] == 409 and json_body(resp)["error"] == "too_few_recipients"


def test_mass_crash_between_batch_and_enqueue_resumes_exactly_once(
    world: BroadcastWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wxreach.reach import splitting

    monkeypatch.setattr(splitting, "MAX_MASS_OPENIDS", 3)
    monkeypatch.setattr(audiences, "PAGE_SIZE", 2)
    original = SqsSplitQueues.enqueue_mass
    calls = {"n": 0}

    def crash_on_second(self: SqsSplitQueues, appid: str, broadcast_id: str, numbers: list[int]) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("instance died after the batch transaction")
        original(self, appid, broadcast_id, numbers)

    monkeypatch.setattr(SqsSplitQueues, "enqueue_mass", crash_on_second)
    service = container.broadcast_service()
    recipients = [{"openid": o} for o in world.followers]
    broadcast = service.create(APPID, mass_spec({"kind": "segment", "recipients": recipients}), actor=ACTOR)
    service.publish(APPID, broadcast.id, actor=ACTOR)
    world.pump()
    assert sum(batch_sizes(broadcast.id)) == len(world.followers)
    counts = mass_counts(world)
    assert [counts[o] for o in world.followers] == [1] * len(world.followers)
    jobs = world.sending.admin_call("GET", f"/accounts/{APPID}/mass-jobs")["jobs"]
    assert len(jobs) == len(batch_sizes(broadcast.id))  # one WeChat job per batch, none doubled


def test_fifth_mass_broadcast_in_a_month_is_excluded_and_filtered(world: BroadcastWorld) -> None:
    service = container.broadcast_service()
    target = world.followers[:3]
    for n in range(4):
        b = service.create(
            APPID,
            mass_spec(
                {"kind": "segment", "recipients": [{"openid": o} for o in target]},
                msgtype="text",
                text=f"第{n}期",
            ),
            actor=ACTOR,
        )
        service.publish(APPID, b.id, actor=ACTOR)
        world.pump()
    everyone = [{"openid": o} for o in world.followers]
    fifth = service.create(
        APPID,
        mass_spec({"kind": "segment", "recipients": everyone}, msgtype="text", text="第5期"),
        actor=ACTOR,
    )
    estimate = service.estimate(APPID, fifth.id)
    assert estimate.excluded == {"monthly_mass_quota": 3}
    assert estimate.recipients == len(world.followers) - 3
    dry = read_object(service.dry_run(APPID, fifth.id, actor=ACTOR).key)
    assert Counter(line.get("reason") for line in dry if not line["would_send"]) == {"monthly_mass_quota": 3}
    service.publish(APPID, fifth.id, actor=ACTOR)
    world.pump()
    counts = mass_counts(world)
    assert [counts[o] for o in target] == [4, 4, 4]  # the 5th never reached them
    assert all(counts[o] == 1 for o in world.followers[3:])


def test_mass_sendall_to_all_and_a_tag(world: BroadcastWorld) -> None:
    service = container.broadcast_service()
    broadcast = service.create(APPID, mass_spec({"kind": "all"}), actor=ACTOR)
    assert service.estimate(APPID, broadcast.id).recipients == len(world.followers)
    service.publish(APPID, broadcast.id, actor=ACTOR)
    world.pump()
    assert set(mass_counts(world).values()) == {1}
    (batch,) = container.mass_batch_store().iter_batches(broadcast.id)
    assert batch.sendall is not None and batch.sendall.is_to_all
    view = service.view(APPID, broadcast.id)
    assert view.broadcast.state is BroadcastState.SENT


def test_mass_cancel_mid_send_reports_exactly(world: BroadcastWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    import mass_sender_handler
    from tests.support.broadcasts import _record
    from tests.support.lambda_context import FakeLambdaContext
    from wxreach.reach import splitting

    monkeypatch.setattr(splitting, "MAX_MASS_OPENIDS", 4)
    service = container.broadcast_service()
    recipients = [{"openid": o} for o in world.followers]
    broadcast = service.create(APPID, mass_spec({"kind": "segment", "recipients": recipients}), actor=ACTOR)
    service.publish(APPID, broadcast.id, actor=ACTOR)
    import broadcast_splitter_handler

    sqs = boto3.client("sqs")
    split_url = world.sending.aws.queues["SplitQueue"]
    (msg,) = sqs.receive_message(QueueUrl=split_url)["Messages"]
    broadcast_splitter_handler.lambda_handler(
        {"Records": [_record(msg, split_url)]}, FakeLambdaContext(remaining_ms=60_000)
    )
    sqs.delete_message(QueueUrl=split_url, ReceiptHandle=msg["ReceiptHandle"])
    mass_url = world.sending.aws.queues["MassQueue"]
    first = sqs.receive_message(QueueUrl=mass_url, MaxNumberOfMessages=1)["Messages"]
    mass_sender_handler.lambda_handler(
        {"Records": [_record(first[0], mass_url)]}, FakeLambdaContext(remaining_ms=60_000)
    )
    sqs.delete_message(QueueUrl=mass_url, ReceiptHandle=first[0]["ReceiptHandle"])
    assert sum(mass_counts(world).values()) == 4

    cancelled = service.cancel(APPID, broadcast.id, actor=ACTOR)
    assert cancelled.cancel is not None
    assert (cancelled.cancel.sent, cancelled.cancel.not_sent) == (4, len(world.followers) - 4)
    world.pump()
    assert sum(mass_counts(world).values()) == 4
    summary = container.mass_batch_store().summary(broadcast.id)
    assert summary["recipients"] == {"sent": 4, "cancelled": len(world.followers) - 4}


def test_mass_preview_and_delete_article(world: BroadcastWorld) -> None:
    media_id = world.sending.admin_call(
        "POST", f"/accounts/{APPID}/drafts", {"articles": [{"title": "新品", "content": "<p>hi</p>"}]}
    )["media_id"]
    service = container.broadcast_service()
    broadcast = service.create(
        APPID, mass_spec({"kind": "all"}, msgtype="mpnews", media_id=media_id), actor=ACTOR
    )
    preview = route(
        "POST",
        "/accounts/{appid}/broadcasts/{broadcast_id}/preview",
        {"openid": world.followers[0]},
        broadcast_id=broadcast.id,
    )
    assert preview["statusCode"] == 200, preview["body"]
    assert [m["kind"] for m in world.sending.inbox(world.followers[0])] == ["mass_preview"]
    not_yet = route(
        "POST", "/accounts/{appid}/broadcasts/{broadcast_id}/articles/delete", {}, broadcast_id=broadcast.id
    )
    assert not_yet["statusCode"] == 409 and json_body(not_yet)["error"] == "not_sent"
    service.publish(APPID, broadcast.id, actor=ACTOR)
    world.pump()
    deleted = route(
        "POST",
        "/accounts/{appid}/broadcasts/{broadcast_id}/articles/delete",
        {"article_idx": 0},
        broadcast_id=broadcast.id,
    )
    assert deleted["statusCode"] == 200, deleted["body"]
    assert len(json_body(deleted)["deleted_articles"]) == 1
    (job,) = world.sending.admin_call("GET", f"/accounts/{APPID}/mass-jobs")["jobs"]
    assert job["msg_status"] == "DELETE"


def test_mass_daily_cap_pauses_and_resumes_next_day_without_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    import broadcast_splitter_handler
    from tests.support.lambda_context import FakeLambdaContext
    from wxreach.reach import splitting

    monkeypatch.setattr(splitting, "MAX_MASS_OPENIDS", 4)
    with broadcast_world(monkeypatch, followers=10, mass_daily_cap="6") as world:
        service = container.broadcast_service()
        recipients = [{"openid": o} for o in world.followers]
        broadcast = service.create(
            APPID, mass_spec({"kind": "segment", "recipients": recipients}), actor=ACTOR
        )
        assert service.estimate(APPID, broadcast.id).deferred_daily_cap == 4
        service.publish(APPID, broadcast.id, actor=ACTOR)
        world.pump()
        assert sum(mass_counts(world).values()) == 4  # the second batch of 4 would pass the cap of 6
        view = service.view(APPID, broadcast.id)
        assert view.broadcast.state is BroadcastState.SENDING
        assert view.broadcast.split.state == "paused"
        resume = _schedule(f"{broadcast.id}-resume")
        assert resume is not None
        until = view.broadcast.split.paused_until
        assert until is not None and (until + timedelta(hours=8)).hour == 0  # China midnight

        # The next China day: a fresh counter, and the resume schedule fires.
        table = world.sending.aws.tables["QuotaTable"]
        for item in boto3.client("dynamodb").scan(TableName=table)["Items"]:
            if item["sk"]["S"].startswith("COUNTER#mass-recipients#"):
                boto3.client("dynamodb").delete_item(
                    TableName=table, Key={"pk": item["pk"], "sk": item["sk"]}
                )
        broadcast_splitter_handler.lambda_handler(
            json.loads(resume["Target"]["Input"]), FakeLambdaContext(remaining_ms=60_000)
        )
        world.pump()
        counts = mass_counts(world)
        assert [counts[o] for o in world.followers] == [1] * 10
        assert service.view(APPID, broadcast.id).broadcast.state is BroadcastState.SENT


def test_subscription_account_mass_sends_once_a_day_to_all_or_a_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    with broadcast_world(monkeypatch, followers=4) as world:
        table = world.sending.aws.tables["QuotaTable"]
        key = {"pk": {"S": f"ACCT#{APPID}"}, "sk": {"S": "ACCOUNT"}}
        stored = boto3.client("dynamodb").get_item(TableName=table, Key=key)["Item"]["account"]["S"]
        subscription = json.dumps({**json.loads(stored), "account_type": "subscription"})
        boto3.client("dynamodb").update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET account = :a",
            ExpressionAttributeValues={":a": {"S": subscription}},
        )
        container.reset()
        assert container.accounts().get(APPID).account_type.value == "subscription"
        segment = route(
            "POST",
            "/accounts/{appid}/broadcasts",
            mass_spec({"kind": "segment", "recipients": [{"openid": o} for o in world.followers]}).model_dump(
                mode="json"
            ),
        )
        assert segment["statusCode"] == 400 and json_body(segment)["error"] == "audience_not_allowed"
        service = container.broadcast_service()
        first = service.create(APPID, mass_spec({"kind": "all"}), actor=ACTOR)
        service.publish(APPID, first.id, actor=ACTOR)
        world.pump()
        second = service.create(APPID, mass_spec({"kind": "all"}, msgtype="text", text="again"), actor=ACTOR)
        estimate = service.estimate(APPID, second.id)
        assert estimate.recipients == 0 and estimate.excluded == {"daily_mass_used": 4}


def test_template_broadcast_to_a_tag(world: BroadcastWorld) -> None:
    tagged = world.followers[:3]
    tag = world.sending.admin_call("POST", f"/accounts/{APPID}/tags", {"name": "VIP", "openids": tagged})
    container.follower_sync_service().sync_tags(APPID)
    plain = {**CONTENT, "data": {"thing1": "会员日", "amount2": "¥1.00", "character_string3": "X-1"}}
    spec = BroadcastInput.model_validate(
        {
            "name": "VIP",
            "channel": "template",
            "audience": {"kind": "tag", "tag_id": tag["id"]},
            "content": plain,
        }
    )
    service = container.broadcast_service()
    broadcast = service.create(APPID, spec, actor=ACTOR)
    assert service.estimate(APPID, broadcast.id).recipients == 3
    service.publish(APPID, broadcast.id, actor=ACTOR)
    world.pump()
    counts = inbox_counts(world)
    assert [counts[o] for o in world.followers] == [1, 1, 1] + [0] * (len(world.followers) - 3)


# -- review regressions ------------------------------------------------------------------------------


def test_a_duplicate_on_both_sides_of_a_checkpoint_is_sent_once(
    world: BroadcastWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wxreach.reach import splitting

    monkeypatch.setattr(splitting, "MAX_MASS_OPENIDS", 3)
    monkeypatch.setattr(audiences, "PAGE_SIZE", 2)
    first, *rest = world.followers[:7]
    lines = [json.dumps({"openid": o}) for o in [first, *rest[:3], first, *rest[3:]]]
    put_segment(f"segments/{APPID}/dup.jsonl", lines)
    original = SqsSplitQueues.enqueue_mass
    calls = {"n": 0}

    def crash_once(self: SqsSplitQueues, appid: str, broadcast_id: str, numbers: list[int]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("died after the first batch's transaction")
        original(self, appid, broadcast_id, numbers)

    monkeypatch.setattr(SqsSplitQueues, "enqueue_mass", crash_once)
    service = container.broadcast_service()
    spec = mass_spec({"kind": "segment", "segment": {"key": f"segments/{APPID}/dup.jsonl"}})
    broadcast = service.create(APPID, spec, actor=ACTOR)
    assert service.estimate(APPID, broadcast.id).excluded == {"duplicate": 1}
    service.publish(APPID, broadcast.id, actor=ACTOR)
    world.pump()
    counts = mass_counts(world)
    assert [counts[o] for o in world.followers[:7]] == [1] * 7
    view = service.view(APPID, broadcast.id)
    assert view.counts.excluded == {"duplicate": 1}
    assert view.broadcast.state is BroadcastState.SENT


def test_the_last_mass_batch_is_enqueued_after_a_crash_at_the_end(
    world: BroadcastWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = SqsSplitQueues.enqueue_mass
    calls = {"n": 0}

    def crash_once(self: SqsSplitQueues, appid: str, broadcast_id: str, numbers: list[int]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("died between the final commit and the queue")
        original(self, appid, broadcast_id, numbers)

    monkeypatch.setattr(SqsSplitQueues, "enqueue_mass", crash_once)
    service = container.broadcast_service()
    recipients = [{"openid": o} for o in world.followers[:4]]
    broadcast = service.create(APPID, mass_spec({"kind": "segment", "recipients": recipients}), actor=ACTOR)
    service.publish(APPID, broadcast.id, actor=ACTOR)
    world.pump()
    assert [mass_counts(world)[o] for o in world.followers[:4]] == [1] * 4


def test_big_parameters_are_cut_into_requests_sqs_accepts(world: BroadcastWorld) -> None:
    big = "x" * 3000
    recipients = [{"openid": o, "params": {**params(i), "note": big}} for i, o in enumerate(world.followers)]
    service = container.broadcast_service()
    broadcast = service.create(APPID, template_spec(recipients * 1), actor=ACTOR)
    service.publish(APPID, broadcast.id, actor=ACTOR)
    world.pump()
    assert set(inbox_counts(world).values()) == {1}


def test_segments_of_other_accounts_and_oversized_sendall_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with broadcast_world(monkeypatch, followers=4, mass_daily_cap="3") as world:
        container.template_service().sync(APPID)
        other = route(
            "POST",
            "/accounts/{appid}/broadcasts",
            template_spec(kind="segment", segment={"key": "dry-runs/wxother/x.jsonl"}).model_dump(
                mode="json"
            ),
        )
        assert other["statusCode"] == 400 and json_body(other)["error"] == "segment_outside_account"
        service = container.broadcast_service()
        everyone = service.create(APPID, mass_spec({"kind": "all"}), actor=ACTOR)
        resp = route(
            "POST", "/accounts/{appid}/broadcasts/{broadcast_id}/publish", {}, broadcast_id=everyone.id
        )
        assert resp["statusCode"] == 409 and json_body(resp)["error"] == "exceeds_daily_cap"
        assert world.queue_depth("SplitQueue") == 0


def test_cancel_of_a_draft_whose_segment_is_gone_still_reports(world: BroadcastWorld) -> None:
    service = container.broadcast_service()
    spec = template_spec(kind="segment", segment={"key": f"segments/{APPID}/gone.jsonl"})
    broadcast = service.create(APPID, spec, actor=ACTOR)
    cancelled = service.cancel(APPID, broadcast.id, actor=ACTOR)
    assert cancelled.cancel is not None and (cancelled.cancel.sent, cancelled.cancel.not_sent) == (0, 0)


def test_a_split_that_can_never_succeed_fails_the_broadcast(world: BroadcastWorld) -> None:
    put_segment(
        f"segments/{APPID}/short.jsonl", [json.dumps({"openid": world.followers[0], "params": params(0)})]
    )
    service = container.broadcast_service()
    spec = template_spec(kind="segment", segment={"key": f"segments/{APPID}/short.jsonl"})
    broadcast = service.create(APPID, spec, actor=ACTOR)
    service.publish(APPID, broadcast.id, actor=ACTOR)
    boto3.client("s3").delete_object(Bucket="test-broadcasts", Key=f"segments/{APPID}/short.jsonl")
    world.pump()
    failed = service.get(APPID, broadcast.id)
    assert failed.state is BroadcastState.FAILED and failed.failure == "segment_unreadable"
    # Nothing more will be split: its outcomes are final, it leaves the reconciler's open list.
    view = service.view(APPID, broadcast.id)
    assert view.outcomes_final and view.broadcast.outcomes_final_at is not None
    assert broadcast.id not in [b.id for b in container.broadcast_store().open_broadcasts(APPID)]


def test_scheduled_content_is_fixed_and_nothing_sent_ends_failed(world: BroadcastWorld) -> None:
    service = container.broadcast_service()
    recipients = [{"openid": o, "params": params(i)} for i, o in enumerate(world.followers[:2])]
    broadcast = service.create(APPID, template_spec(recipients), actor=ACTOR)
    service.publish(APPID, broadcast.id, actor=ACTOR, at=datetime.now(UTC) + timedelta(hours=1))
    item = "/accounts/{appid}/broadcasts/{broadcast_id}"
    resp = route("PATCH", item, {"content": CONTENT}, broadcast_id=broadcast.id)
    assert resp["statusCode"] == 409 and json_body(resp)["error"] == "scheduled_content_fixed"

    for openid in world.followers[:2]:
        container.followers().set_following(APPID, openid, following=False, at=datetime.now(UTC))
    nobody = service.create(APPID, template_spec(recipients), actor=ACTOR)
    service.publish(APPID, nobody.id, actor=ACTOR)
    world.pump()
    view = service.view(APPID, nobody.id)
    assert view.counts.excluded == {"not_following": 2}
    assert view.broadcast.state is BroadcastState.FAILED
