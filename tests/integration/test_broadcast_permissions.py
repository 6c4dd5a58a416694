"""Every AWS call the broadcast paths make is allowed by the calling function's policy (operator
API, splitter, template sender, mass sender): the calls are recorded at botocore's boundary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient

import operator_api_handler
from tests.integration import test_permissions as perms
from tests.integration.conftest import AwsCall, call
from tests.integration.test_broadcasts import APPID, mass_spec, params, route, template_spec
from tests.support.broadcasts import BUCKET, GROUP, ROLE_ARN, BroadcastWorld, broadcast_world, put_segment
from tests.support.lambda_context import FakeLambdaContext
from wxreach import container

Grant = tuple[str, str, str | None]


def granted(function: str) -> set[Grant]:
    grants: set[Grant] = set()
    for policy in perms.TEMPLATE["Resources"][function]["Properties"]["Policies"]:
        for name, params_ in policy.items():
            if name != "Statement":
                actions, target = perms.POLICY_TEMPLATES[name]
                grants |= {(a, target(params_), None) for a in actions}
                continue
            for st in params_:
                actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
                resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
                for resource in resources:
                    text = resource.get("Fn::Sub", "") if isinstance(resource, dict) else ""
                    if "schedule/${BroadcastScheduleGroup}" in text:
                        logical: tuple[str, str | None] = ("BroadcastScheduleGroup", None)
                    elif text.startswith("${BroadcastBucket.Arn}/"):
                        logical = ("BroadcastBucket", text.removeprefix("${BroadcastBucket.Arn}/"))
                    else:
                        logical = perms._resource(resource)
                    grants |= {(a, *logical) for a in actions}
    return grants


def used(calls: list[AwsCall], world: BroadcastWorld) -> set[Grant]:
    rest: list[AwsCall] = []
    needed: set[Grant] = set()
    for c in calls:
        if c.service == "s3":
            assert c.params["Bucket"] == BUCKET
            needed.add((f"s3:{c.operation}", "BroadcastBucket", c.params["Key"]))
        elif c.service == "scheduler":
            assert c.params["GroupName"] == GROUP
            needed.add((f"scheduler:{c.operation}", "BroadcastScheduleGroup", None))
            if "Target" in c.params:
                assert c.params["Target"]["RoleArn"] == ROLE_ARN
                needed.add(("iam:PassRole", "SchedulerInvokeRole", None))
        elif c.service == "dynamodb" and c.operation == "TransactWriteItems":
            tables = {name: logical for logical, name in world.sending.aws.tables.items()}
            for item in c.params["TransactItems"]:
                ((kind, body),) = item.items()
                action = {
                    "Put": "PutItem",
                    "Update": "UpdateItem",
                    "Delete": "DeleteItem",
                    "ConditionCheck": "ConditionCheckItem",
                }[kind]
                needed.add((f"dynamodb:{action}", tables[body["TableName"]], None))
        else:
            rest.append(c)
    return needed | perms.used(rest, world.sending.aws)


def missing(needed: set[Grant], function: str) -> list[Grant]:
    grants = granted(function)
    out = []
    for action, logical, detail in needed:
        if logical == "BroadcastBucket":
            prefixes = [d for a, lg, d in grants if a == action and lg == logical]
            if not any(p == "*" or (p and detail and detail.startswith(p.rstrip("*"))) for p in prefixes):
                out.append((action, logical, detail))
        elif (action, logical, detail) not in grants:
            out.append((action, logical, detail))
    return sorted(out, key=str)


@pytest.fixture
def aws_calls(monkeypatch: pytest.MonkeyPatch) -> list[AwsCall]:
    """Every AWS call from any thread: the senders call from their thread pools."""
    calls: list[AwsCall] = []
    original = BaseClient._make_api_call

    def recording(self: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
        calls.append(AwsCall(self.meta.service_model.service_name, operation_name, api_params))
        return original(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)
    return calls


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, aws_calls: list[AwsCall]) -> Iterator[BroadcastWorld]:
    with broadcast_world(monkeypatch, followers=6, mass_daily_cap="3") as w:
        container.template_service().sync(APPID)
        aws_calls.clear()
        yield w


def _deliver(world: BroadcastWorld, logical: str, handler: Any, calls: list[AwsCall]) -> list[AwsCall]:
    """Runs the queue's records through the handler; the calls the handler made (not ours)."""
    from tests.support.broadcasts import _record

    sqs = boto3.client("sqs")
    url = world.sending.aws.queues[logical]
    made: list[AwsCall] = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        calls.clear()
        handler.lambda_handler(
            {"Records": [_record(m, url) for m in messages]}, FakeLambdaContext(remaining_ms=60_000)
        )
        made.extend(calls)
        for m in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return made


def test_broadcast_paths_are_all_granted(world: BroadcastWorld, aws_calls: list[AwsCall]) -> None:
    import broadcast_splitter_handler
    import mass_sender_handler
    import template_sender_handler

    # Operator: create, list, estimate, dry run, schedule, move, cancel, publish now, preview.
    put_segment(
        f"segments/{APPID}/p.jsonl",
        [json.dumps({"openid": o, "params": params(i)}) for i, o in enumerate(world.followers)],
    )
    created = route(
        "POST",
        "/accounts/{appid}/broadcasts",
        template_spec(kind="segment", segment={"key": f"segments/{APPID}/p.jsonl"}).model_dump(mode="json"),
    )
    bid = json.loads(created["body"])["id"]
    item = "/accounts/{appid}/broadcasts/{broadcast_id}"
    route("GET", "/accounts/{appid}/broadcasts")
    route("POST", item + "/estimate", broadcast_id=bid)
    route("POST", item + "/dry-run", broadcast_id=bid)
    at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert route("POST", item + "/publish", {"at": at}, broadcast_id=bid)["statusCode"] == 202
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    assert route("PATCH", item, {"scheduled_at": later}, broadcast_id=bid)["statusCode"] == 200
    assert route("POST", item + "/cancel", broadcast_id=bid)["statusCode"] == 200
    mass = route(
        "POST",
        "/accounts/{appid}/broadcasts",
        mass_spec({"kind": "segment", "recipients": [{"openid": o} for o in world.followers]}).model_dump(
            mode="json"
        ),
    )
    mid = json.loads(mass["body"])["id"]
    route("POST", item + "/preview", {"openid": world.followers[0]}, broadcast_id=mid)
    assert route("POST", item + "/publish", {}, broadcast_id=mid)["statusCode"] == 202
    route("GET", item + "/audit", broadcast_id=mid)
    tpl = call(
        operator_api_handler,
        {
            **_post_event(
                template_spec([{"openid": o, "params": params(i)} for i, o in enumerate(world.followers)])
            ),
        },
    )
    tid = json.loads(tpl["body"])["id"]
    assert route("POST", item + "/publish", {}, broadcast_id=tid)["statusCode"] == 202
    gaps = missing(used(aws_calls, world), "OperatorApiFunction")
    assert not gaps, f"OperatorApiFunction lacks {gaps}"

    # Splitter: a template segment and a mass segment that hits the daily cap (resume schedule).
    needed = used(_deliver(world, "SplitQueue", broadcast_splitter_handler, aws_calls), world)
    assert ("scheduler:CreateSchedule", "BroadcastScheduleGroup", None) in needed
    gaps = missing(needed, "BroadcastSplitterFunction")
    assert not gaps, f"BroadcastSplitterFunction lacks {gaps}"

    needed = used(_deliver(world, "SendQueue", template_sender_handler, aws_calls), world)
    assert ("dynamodb:UpdateItem", "LedgerTable", None) in needed
    gaps = missing(needed, "TemplateSenderFunction")
    assert not gaps, f"TemplateSenderFunction lacks {gaps}"

    gaps = missing(
        used(_deliver(world, "MassQueue", mass_sender_handler, aws_calls), world), "MassSenderFunction"
    )
    assert not gaps, f"MassSenderFunction lacks {gaps}"

    # Cancelling a sending mass broadcast, and a view that settles it.
    aws_calls.clear()
    route("POST", item + "/cancel", broadcast_id=mid)
    route("GET", item, broadcast_id=tid)
    gaps = missing(used(aws_calls, world), "OperatorApiFunction")
    assert not gaps, f"OperatorApiFunction lacks {gaps}"


def _post_event(spec: Any) -> dict[str, Any]:
    from tests.support.fixtures import api_event

    event = api_event("send_message")
    event.update(
        {
            "resource": "/accounts/{appid}/broadcasts",
            "path": f"/accounts/{APPID}/broadcasts",
            "body": json.dumps(spec.model_dump(mode="json"), ensure_ascii=False),
        }
    )
    return event
