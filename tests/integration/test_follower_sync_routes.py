"""Follower-sync and tag routes through the operator handler, with the sync function consuming
its queue (moto + the WeChat sandbox over HTTP)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import follower_sync_handler
import operator_api_handler
from tests.integration.conftest import call, json_body
from tests.support import wechat
from tests.support.fixtures import API_EVENTS_DIR, api_event
from tests.support.lambda_context import FakeLambdaContext
from tests.support.sending import SendingWorld, sending_world
from wxreach import container

APPID = wechat.APPID
UNKNOWN = {"appid": "wx00000000000000ff"}


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[SendingWorld]:
    with sending_world(monkeypatch, followers=7) as w:
        monkeypatch.setenv("WXREACH_FOLLOWER_SYNC_QUEUE_URL", w.aws.queues["FollowerSyncQueue"])
        container.reset()
        yield w


def api(name: str, **overrides: Any) -> dict[str, Any]:
    return call(operator_api_handler, api_event(name, **overrides))


def run_sync_function(world: SendingWorld) -> None:
    """The follower-sync function consumes its queue, as Lambda's SQS poller would deliver it."""
    event = json.loads((API_EVENTS_DIR.parent / "sqs" / "follower_sync.json").read_text(encoding="utf-8"))
    while messages := world.aws.queue_messages("FollowerSyncQueue"):
        for body in messages:
            event["Records"][0]["body"] = json.dumps(body)
            response = follower_sync_handler.lambda_handler(event, FakeLambdaContext(remaining_ms=900_000))
            assert response == {"batchItemFailures": []}


def test_start_sync_and_follow_its_progress(world: SendingWorld) -> None:
    assert api("follower_sync_progress")["statusCode"] == 404
    started = api("start_follower_sync")
    assert started["statusCode"] == 202, started["body"]
    job = json_body(started)
    assert (job["state"], job["seen"], job["percent"]) == ("running", 0, None)
    assert "cursor" not in job and "lease_owner" not in job  # an openid and internals stay inside

    again = json_body(api("start_follower_sync"))
    assert again["job_id"] == job["job_id"]

    run_sync_function(world)
    progress = api("follower_sync_progress")
    assert progress["statusCode"] == 200
    done = json_body(progress)
    assert done["job_id"] == job["job_id"]
    assert (done["state"], done["phase"], done["seen"], done["total"], done["pages"], done["percent"]) == (
        "done",
        "sweep",
        7,
        7,
        1,
        100.0,
    )
    assert (
        json_body(api("start_follower_sync", query={"mark_unfollowed": "false"}))["job_id"] != job["job_id"]
    )


def test_tag_routes(world: SendingWorld) -> None:
    world.admin_call("POST", f"/accounts/{APPID}/tags", {"name": "vip", "openids": world.followers[:2]})
    assert json_body(api("list_tags")) == {"tags": []}
    synced = api("sync_tags")
    assert synced["statusCode"] == 200, synced["body"]
    body = json_body(synced)
    assert (body["stored"], body["members_synced"], body["added"]) == (1, True, 2)
    assert json_body(api("list_tags")) == {"tags": [{"id": 100, "name": "vip", "count": 2}]}


def test_wechat_refusals_and_unknown_accounts_map_to_error_responses(world: SendingWorld) -> None:
    for route in ("start_follower_sync", "follower_sync_progress", "sync_tags", "list_tags"):
        response = api(route, path_parameters=UNKNOWN)
        assert response["statusCode"] == 404, (route, response["body"])
    world.faults({"path": "/cgi-bin/tags/get", "errcodes": {"48001": 1.0}})
    refused = api("sync_tags")
    assert refused["statusCode"] == 502
    assert json_body(refused)["reason"] == "api_unauthorized"
