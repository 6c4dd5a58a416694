"""A broadcast after its sends: outcomes that come later refine its state until every one is
known (then BroadcastFinished, once), the reconciler finds open broadcasts through a sparse
index, and the operator's report route (failures, timeline, CSV export) agrees with the counts."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import reconciler_handler

import operator_api_handler
from tests.integration.conftest import call
from tests.integration.test_status_updater import (
    mass_broadcast,
    mass_finish,
    of_type,
    push,
    status_records,
    template_broadcast,
    template_finish,
    update,
)
from tests.support import wechat
from tests.support.broadcasts import BUCKET, BroadcastWorld, broadcast_world
from tests.support.fixtures import api_event
from tests.support.lambda_context import FakeLambdaContext
from wxreach import container


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[BroadcastWorld]:
    with broadcast_world(monkeypatch, followers=6, unknown_after_seconds="3600") as w:
        container.template_service().sync(wechat.APPID)
        yield w


def open_ids() -> list[str]:
    return [b.id for b in container.broadcast_store().open_broadcasts(wechat.APPID)]


def report(bid: str, **query: str) -> tuple[int, dict[str, Any]]:
    event = api_event("send_message")
    path = f"/accounts/{wechat.APPID}/broadcasts/{bid}/report"
    event.update(
        {
            "resource": "/accounts/{appid}/broadcasts/{broadcast_id}/report",
            "path": path,
            "httpMethod": "GET",
            "pathParameters": {"appid": wechat.APPID, "broadcast_id": bid},
            "body": None,
            "queryStringParameters": query or None,
            "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} or None,
        }
    )
    resp = call(operator_api_handler, event)
    return resp["statusCode"], json.loads(resp["body"])


def test_a_review_failure_after_the_broadcast_settled_makes_it_failed_then_finished_once(
    world: BroadcastWorld,
) -> None:
    bid, (job,) = mass_broadcast(world, world.followers[:4])
    service = container.broadcast_service()
    view = service.view(wechat.APPID, bid)
    # Sent, as far as sending goes; WeChat has not said what became of the job.
    assert (view.broadcast.state.value, view.outcomes_final) == ("sent", False)
    assert bid in open_ids()
    assert of_type(world.sending.aws.journey_events(), "BroadcastFinished") == []

    push(mass_finish("mass_send_job_finish_review_failed", str(job["msg_id"]), Status="err(20001)"))
    update(status_records(world))
    view = service.view(wechat.APPID, bid)
    assert (view.broadcast.state.value, view.outcomes_final) == ("failed", True)
    assert view.counts.by_state["failed"] == 4 and view.counts.by_state["sent"] == 0
    assert view.counts.by_reason["failed"] == {"review_failed": 4}
    (finished,) = of_type(world.sending.aws.journey_events(), "BroadcastFinished")
    assert (finished["detail"]["broadcast_id"], finished["detail"]["state"]) == (bid, "failed")
    assert bid not in open_ids()
    service.view(wechat.APPID, bid)
    assert of_type(world.sending.aws.journey_events(), "BroadcastFinished") == []


def test_the_reconciler_settles_open_broadcasts_it_finds_in_the_sparse_index(world: BroadcastWorld) -> None:
    bid, messages = template_broadcast(world)
    assert open_ids() == [bid]
    for message in messages:
        push(template_finish(message, "success"))
    update(status_records(world))
    # Nobody reads the broadcast: the reconciler's pass is what finishes it.
    assert reconciler_handler.lambda_handler({}, FakeLambdaContext())["totals"]["broadcasts_settled"] == 1
    assert open_ids() == []
    broadcast = container.broadcast_store().get(bid)
    assert broadcast is not None and broadcast.outcomes_final_at is not None
    (finished,) = of_type(world.sending.aws.journey_events(), "BroadcastFinished")
    delivery = finished["detail"]["delivery"]
    assert delivery == {"awaiting_callback": 0, "delivered": 6, "failed": 0, "unknown": 0}
    assert reconciler_handler.lambda_handler({}, FakeLambdaContext())["totals"]["broadcasts_settled"] == 0


def test_the_report_of_a_template_broadcast_agrees_with_its_messages_and_exports_them(
    world: BroadcastWorld,
) -> None:
    bid, messages = template_broadcast(world)
    refused = {m.openid for m in messages[:2]}
    for message in messages:
        push(template_finish(message, "failed:user block" if message.openid in refused else "success"))
    update(status_records(world))

    status, body = report(bid, export="csv")
    assert status == 200, body
    assert body["counts"]["by_state"] == {"delivered": 4, "failed": 2, "queued": 0, "sent": 0}
    assert body["outcomes_final"] is True and body["complete"] is True and body["scanned"] == 6
    assert body["delivery_rate"] == round(4 / 6, 4)
    (failure,) = body["failures"]
    assert (failure["state"], failure["reason"], failure["count"]) == ("failed", "user_block", 2)
    assert len(failure["examples"]) == 2
    assert not set(failure["examples"]) & refused  # masked
    assert {e[:4] + e[-4:] for e in failure["examples"]} == {o[:4] + o[-4:] for o in refused}
    buckets = body["timeline"]["buckets"]
    assert sum(b["sent"] for b in buckets) == 6
    assert (sum(b["delivered"] for b in buckets), sum(b["failed"] for b in buckets)) == (4, 2)

    export = body["export"]
    assert export["rows"] == 6 and export["url"]
    raw = boto3.client("s3").get_object(Bucket=BUCKET, Key=export["key"])
    assert raw["ContentType"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(raw["Body"].read().decode())))
    assert {r["openid"]: r["state"] for r in rows} == {
        m.openid: "failed" if m.openid in refused else "delivered" for m in messages
    }
    assert {r["reason"] for r in rows if r["state"] == "failed"} == {"user_block"}
    assert all(r["sent_at"] and r["delivered_at"] for r in rows)


def test_the_report_of_a_mass_broadcast_names_the_review_failure(world: BroadcastWorld) -> None:
    ok_bid, (ok_job,) = mass_broadcast(world, world.followers[:4])
    bad_bid, (bad_job,) = mass_broadcast(world, world.followers[4:6])
    push(
        mass_finish(
            "mass_send_job_finish",
            str(ok_job["msg_id"]),
            Status="send success",
            TotalCount="4",
            FilterCount="3",  # left after WeChat's filtering: one filtered out
            SentCount="3",
            ErrorCount="0",
        )
    )
    push(mass_finish("mass_send_job_finish_review_failed", str(bad_job["msg_id"]), Status="err(20001)"))
    update(status_records(world))

    status, ok = report(ok_bid)
    assert status == 200, ok
    assert ok["delivery_rate"] == 0.75 and ok["export"] is None
    failures = [(f["state"], f["reason"], f["count"]) for f in ok["failures"]]
    assert failures == [("filtered", "wechat_filter", 1)]
    assert sum(b["delivered"] for b in ok["timeline"]["buckets"]) == 3

    status, bad = report(bad_bid, export="csv")
    assert status == 200, bad
    (failure,) = bad["failures"]
    assert (failure["reason"], failure["count"], failure["meaning"]) == ("review_failed", 2, "politics")
    raw = boto3.client("s3").get_object(Bucket=BUCKET, Key=bad["export"]["key"])["Body"].read().decode()
    rows = list(csv.DictReader(io.StringIO(raw)))
    assert sorted(r["openid"] for r in rows) == sorted(world.followers[4:6])
    assert {(r["batch_state"], r["job_outcome"], r["job_status"]) for r in rows} == {
        ("sent", "review_failed", "err(20001)")
    }


def test_report_refusals_are_4xx_with_a_reason(world: BroadcastWorld) -> None:
    bid, _ = template_broadcast(world)
    assert report("b" + "0" * 20)[0] == 404
    assert report("b" + "0" * 20)[1]["error"] == "unknown_broadcast"
    for query in ({"bucket_seconds": "5"}, {"export": "pdf"}, {"bucket_seconds": "soon"}):
        status, body = report(bid, **query)
        assert (status, body["error"]) == (422, "invalid_request"), (query, body)
