"""One-time EventBridge Scheduler schedules created, moved and deleted at run time by a function, the
way timed broadcasts use them: a schedule group and a role from the template, a Lambda target that
is a template function, ActionAfterCompletion DELETE."""

from __future__ import annotations

import json
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from local.stack import LocalStack
from local.stack.aws import MotoEndpoint, error_code
from local.stack.model import load_sam_template
from local.stack.motoproc import MotoProcess
from local.stack.provision import Provisioner
from tests.local.conftest import eventually, stack_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
SHANGHAI = ZoneInfo("Asia/Shanghai")

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.12
    Timeout: 10
    Environment:
      Variables:
        FIRED_TABLE: !Ref FiredTable
Resources:
  FiredTable:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - {AttributeName: pk, AttributeType: S}
      KeySchema:
        - {AttributeName: pk, KeyType: HASH}
  Broadcasts:
    Type: AWS::Scheduler::ScheduleGroup
  InvokeRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Statement:
          - {Effect: Allow, Principal: {Service: scheduler.amazonaws.com}, Action: sts:AssumeRole}
  SplitterFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fns/splitter
      Handler: splitter_handler.handler
  PlannerFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fns/planner
      Handler: planner_handler.handler
      Environment:
        Variables:
          SCHEDULE_GROUP: !Ref Broadcasts
          SCHEDULER_ROLE_ARN: !GetAtt InvokeRole.Arn
          SPLITTER_ARN: !GetAtt SplitterFunction.Arn
"""

SPLITTER_HANDLER = """\
import json
import os
import time

import boto3


def handler(event, context):
    boto3.client("dynamodb").put_item(TableName=os.environ["FIRED_TABLE"], Item={
        "pk": {"S": event["broadcast_id"] + "#" + context.aws_request_id},
        "at": {"N": repr(time.time())},
        "event": {"S": json.dumps(event)},
        "arn": {"S": context.invoked_function_arn},
    })
    return {"split": event["broadcast_id"]}
"""

# What the broadcast code does: create / move / cancel a one-time schedule named by broadcast id.
PLANNER_HANDLER = """\
import json
import os

import boto3


def handler(event, context):
    scheduler = boto3.client("scheduler")
    group, name = os.environ["SCHEDULE_GROUP"], event["name"]
    if event["op"] == "delete":
        scheduler.delete_schedule(Name=name, GroupName=group)
        return {"deleted": name}
    arguments = {
        "Name": name,
        "GroupName": group,
        "ScheduleExpression": "at(" + event["at"] + ")",
        "FlexibleTimeWindow": {"Mode": "OFF"},
        "Target": {
            "Arn": os.environ["SPLITTER_ARN"] + event.get("qualifier", ""),
            "RoleArn": os.environ["SCHEDULER_ROLE_ARN"],
            "Input": json.dumps({"broadcast_id": name, "reason": event["op"]}),
        },
    }
    if event.get("timezone"):
        arguments["ScheduleExpressionTimezone"] = event["timezone"]
    if event.get("after"):
        arguments["ActionAfterCompletion"] = event["after"]
    if event.get("state"):
        arguments["State"] = event["state"]
    call = scheduler.create_schedule if event["op"] == "create" else scheduler.update_schedule
    call(**arguments)
    schedule = scheduler.get_schedule(Name=name, GroupName=group)
    return {k: schedule.get(k) for k in ("GroupName", "ScheduleExpression", "ScheduleExpressionTimezone",
                                         "State", "ActionAfterCompletion", "Target")}
"""


def write_app(root: Path) -> Path:
    files = {
        "template.yaml": TEMPLATE,
        "fns/splitter/splitter_handler.py": SPLITTER_HANDLER,
        "fns/planner/planner_handler.py": PLANNER_HANDLER,
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "template.yaml"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    template = write_app(tmp_path_factory.mktemp("scheduler-app"))
    settings = stack_settings(template, tmp_path_factory.mktemp("scheduler-data"), scheduler_interval=0.1)
    with LocalStack(settings) as local:
        yield local


Fired = Callable[[str], list[dict[str, Any]]]


@pytest.fixture
def fired(stack: LocalStack) -> Fired:
    """What the splitter recorded for one broadcast id (one entry per invocation)."""

    def find(broadcast_id: str) -> list[dict[str, Any]]:
        items = stack.client("dynamodb").scan(TableName=stack.resources["FiredTable"].ref)["Items"]
        return [
            {"at": float(i["at"]["N"]), "event": json.loads(i["event"]["S"]), "arn": i["arn"]["S"]}
            for i in items
            if i["pk"]["S"].split("#", 1)[0] == broadcast_id
        ]

    return find


def broadcast_id() -> str:
    return f"b-{uuid.uuid4().hex[:12]}"


def at(seconds_from_now: float) -> tuple[str, float]:
    """An at() time (whole seconds, UTC) and its epoch."""
    instant = (datetime.now(UTC) + timedelta(seconds=seconds_from_now)).replace(microsecond=0)
    return instant.strftime("%Y-%m-%dT%H:%M:%S"), instant.timestamp()


def plan(stack: LocalStack, **event: Any) -> dict[str, Any]:
    result = stack.invoke("PlannerFunction", event)
    assert result.ok, result.error
    answer: dict[str, Any] = result.payload
    return answer


def schedule_exists(stack: LocalStack, name: str) -> bool:
    try:
        stack.client("scheduler").get_schedule(Name=name, GroupName=stack.resources["Broadcasts"].ref)
    except Exception as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return False
        raise
    return True


def settle_after(stack: LocalStack, instant: float, polls: int = 3) -> None:
    """Returns once `instant` is past and the scheduler has polled `polls` more times since."""
    assert eventually(lambda: time.time() > instant, timeout=30)
    scheduler = stack.scheduler
    assert scheduler is not None
    start = scheduler.polls
    assert eventually(lambda: scheduler.polls >= start + polls, timeout=30)
    stack.wait_idle(20)


def test_a_schedule_created_at_run_time_fires_once_at_its_time_and_is_deleted(
    stack: LocalStack, fired: Fired
) -> None:
    name = broadcast_id()
    when, epoch = at(1)
    schedule = plan(stack, op="create", name=name, at=when, after="DELETE")
    assert schedule["GroupName"] == stack.resources["Broadcasts"].ref  # not the default group
    assert schedule["Target"]["RoleArn"] == stack.resources["InvokeRole"].arn
    assert schedule["ActionAfterCompletion"] == "DELETE"

    [run] = eventually(lambda: fired(name), timeout=30)
    assert run["at"] >= epoch  # recorded by the splitter: not before its time
    assert run["event"] == {"broadcast_id": name, "reason": "create"}  # the schedule's Input
    assert run["arn"] == stack.functions["SplitterFunction"].arn  # the template function's worker
    assert eventually(lambda: not schedule_exists(stack, name), timeout=10)  # DELETE after completion
    settle_after(stack, epoch)
    assert len(fired(name)) == 1


def test_moving_a_schedule_fires_it_at_the_new_time_only(stack: LocalStack, fired: Fired) -> None:
    name = broadcast_id()
    first, first_epoch = at(2)
    plan(stack, op="create", name=name, at=first, after="DELETE")
    later, _ = at(3600)
    assert (
        plan(stack, op="update", name=name, at=later, after="DELETE")["ScheduleExpression"] == f"at({later})"
    )
    settle_after(stack, first_epoch)
    assert fired(name) == []  # the old time passed: nothing fired
    assert schedule_exists(stack, name)

    # moved again, a second ahead, written in China time: fires then, once
    china = (datetime.now(SHANGHAI) + timedelta(seconds=1)).replace(microsecond=0)
    plan(
        stack,
        op="update",
        name=name,
        at=china.strftime("%Y-%m-%dT%H:%M:%S"),
        timezone="Asia/Shanghai",
        after="DELETE",
    )
    [run] = eventually(lambda: fired(name), timeout=30)
    assert run["at"] >= china.timestamp()
    assert run["event"]["reason"] == "update"
    assert eventually(lambda: not schedule_exists(stack, name), timeout=10)
    settle_after(stack, china.timestamp())
    assert len(fired(name)) == 1


def test_a_schedule_deleted_before_its_time_never_fires(stack: LocalStack, fired: Fired) -> None:
    name = broadcast_id()
    when, epoch = at(2)
    plan(stack, op="create", name=name, at=when, after="DELETE")
    plan(stack, op="delete", name=name)
    assert not schedule_exists(stack, name)
    settle_after(stack, epoch)
    assert fired(name) == []


def test_an_update_that_omits_optional_fields_reads_like_aws(stack: LocalStack, fired: Fired) -> None:
    # UpdateSchedule replaces the schedule: without State it is ENABLED, without
    # ActionAfterCompletion it is NONE (kept after firing) — broadcast code must repeat DELETE.
    name = broadcast_id()
    later, _ = at(3600)
    plan(stack, op="create", name=name, at=later, after="DELETE", state="DISABLED")
    past, _ = at(-60)
    schedule = plan(stack, op="update", name=name, at=past)
    assert (schedule["State"], schedule["ActionAfterCompletion"]) == ("ENABLED", "NONE")
    assert len(eventually(lambda: fired(name), timeout=30)) == 1
    settle_after(stack, time.time())
    assert len(fired(name)) == 1  # a kept one-time schedule never fires twice
    assert schedule_exists(stack, name)


def test_a_disabled_schedule_does_not_fire(stack: LocalStack, fired: Fired) -> None:
    name = broadcast_id()
    past, _ = at(-60)
    plan(stack, op="create", name=name, at=past, after="DELETE", state="DISABLED")
    settle_after(stack, time.time())
    assert fired(name) == []
    assert schedule_exists(stack, name)


def test_a_name_reused_after_delete_is_a_new_schedule(stack: LocalStack, fired: Fired) -> None:
    # a broadcast cancelled and published again reuses its id as the schedule name
    name = broadcast_id()
    past, _ = at(-60)
    plan(stack, op="create", name=name, at=past, after="DELETE")
    assert len(eventually(lambda: fired(name), timeout=30)) == 1
    assert eventually(lambda: not schedule_exists(stack, name), timeout=10)
    plan(stack, op="create", name=name, at=past, after="DELETE", qualifier=":$LATEST")  # qualified ARN
    assert len(eventually(lambda: len(fired(name)) == 2 and fired(name), timeout=30)) == 2


def test_schedule_group_and_role_of_template_yaml(tmp_path: Path) -> None:
    moto = MotoProcess("127.0.0.1", 0, log_path=tmp_path / "moto.log")
    moto.launch()
    try:
        endpoint = MotoEndpoint(moto.wait_ready(), "us-east-1", "123456789012")
        template = load_sam_template(
            REPO_ROOT / "template.yaml",
            stack_name="wxreach-local",
            region="us-east-1",
            account_id="123456789012",
        )
        provisioned = Provisioner(template, endpoint, logs_dir=tmp_path / "logs").run()
        group = provisioned.resources["BroadcastScheduleGroup"]
        assert group.ref == "wxreach-local-BroadcastScheduleGroup"
        assert endpoint.client("scheduler").get_schedule_group(Name=group.ref)["Arn"] == group.arn
        role_arn = provisioned.resources["SchedulerInvokeRole"].arn
        assert role_arn == "arn:aws:iam::123456789012:role/wxreach-local-SchedulerInvokeRole"
        for spec in provisioned.functions.values():  # Globals: every function can schedule
            assert spec.environment["WXREACH_SCHEDULE_GROUP"] == group.ref
            assert spec.environment["WXREACH_SCHEDULER_ROLE_ARN"] == role_arn
        # the schedules' target ARN is spelled out in the template: it must name a local worker
        targets = {s.environment.get("WXREACH_SPLITTER_ARN") for s in provisioned.functions.values()} - {None}
        assert targets and targets <= {s.arn for s in provisioned.functions.values()}
    finally:
        moto.stop()
