"""Every AWS call of the follower-sync function and of the follower/tag routes is allowed by the
function's policy in template.yaml (calls recorded at botocore's boundary, as in test_permissions)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

import follower_sync_handler
import operator_api_handler
from tests.integration.conftest import AwsCall, call
from tests.integration.test_permissions import granted, used
from tests.support import wechat
from tests.support.fixtures import api_event
from tests.support.lambda_context import FakeLambdaContext
from tests.support.sending import SendingWorld, sending_world
from wxreach import container

APPID = wechat.APPID


@pytest.fixture
def sync(monkeypatch: pytest.MonkeyPatch, aws_calls: list[AwsCall]) -> Iterator[SendingWorld]:
    with sending_world(monkeypatch, followers=4) as world:
        monkeypatch.setenv("WXREACH_FOLLOWER_SYNC_QUEUE_URL", world.aws.queues["FollowerSyncQueue"])
        container.reset()
        yield world


def deliver(world: SendingWorld, aws_calls: list[AwsCall]) -> None:
    messages = world.aws.queue_messages("FollowerSyncQueue")
    aws_calls.clear()  # the test's own queue reads are not the function's
    for body in messages:
        event = {"Records": [{"messageId": "m1", "receiptHandle": "r", "body": json.dumps(body)}]}
        follower_sync_handler.lambda_handler(event, FakeLambdaContext(remaining_ms=900_000))


def test_follower_sync_function_calls_are_all_granted(sync: SendingWorld, aws_calls: list[AwsCall]) -> None:
    # A profile the list will not contain, so the sweep writes too.
    container.followers().set_following(
        APPID, "o" + "Z" * 27, following=True, at=datetime.now(UTC) - timedelta(days=2)
    )
    container.follower_sync_service().start(APPID)
    deliver(sync, aws_calls)
    needed = used(aws_calls, sync.aws)
    # A retry-later answer: the delayed continuation goes back on the queue.
    container.follower_sync_service().start(APPID)
    sync.faults({"path": "/cgi-bin/user/get", "errcodes": {"-1": 1.0}})
    deliver(sync, aws_calls)
    needed |= used(aws_calls, sync.aws)
    assert ("dynamodb:Query", "QuotaTable", "gsi1") in needed  # the sweep ran
    assert ("sqs:SendMessage", "FollowerSyncQueue", None) in needed
    missing = needed - granted("FollowerSyncFunction")
    assert not missing, f"FollowerSyncFunction lacks {sorted(missing)}"


def test_follower_and_tag_routes_calls_are_all_granted(sync: SendingWorld, aws_calls: list[AwsCall]) -> None:
    f = sync.followers
    tag = sync.admin_call("POST", f"/accounts/{APPID}/tags", {"name": "vip", "openids": f[:2]})["id"]
    container.followers().add_tag(APPID, tag, [f[3]])  # to be removed by the sync
    aws_calls.clear()
    for route in ("start_follower_sync", "follower_sync_progress", "sync_tags", "list_tags"):
        response = call(operator_api_handler, api_event(route))
        assert response["statusCode"] < 300, (route, response["body"])
    needed = used(aws_calls, sync.aws)
    assert ("sqs:SendMessage", "FollowerSyncQueue", None) in needed
    missing = needed - granted("OperatorApiFunction")
    assert not missing, f"OperatorApiFunction lacks {sorted(missing)}"
