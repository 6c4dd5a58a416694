"""Each stack runs its own moto in a child process: private data, gone with the stack (or its parent)."""

from __future__ import annotations

import json
import signal
import textwrap
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto import mock_aws

from local.stack import LocalStack
from tests.local.conftest import eventually, launch, process_gone, stack_settings, wait_running

TINY = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Resources:
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: tiny-table
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - {AttributeName: pk, AttributeType: S}
      KeySchema:
        - {AttributeName: pk, KeyType: HASH}
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: tiny-queue
"""


def tiny_template(root: Path, text: str = TINY) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "template.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def keys(stack: LocalStack) -> set[str]:
    items = stack.client("dynamodb").scan(TableName="tiny-table")["Items"]
    return {item["pk"]["S"] for item in items}


def put(stack: LocalStack, key: str) -> None:
    stack.client("dynamodb").put_item(TableName="tiny-table", Item={"pk": {"S": key}})
    stack.client("sqs").send_message(QueueUrl=stack.resources["Queue"].ref, MessageBody=key)


def bodies(stack: LocalStack) -> set[str]:
    messages = stack.client("sqs").receive_message(
        QueueUrl=stack.resources["Queue"].ref, MaxNumberOfMessages=10, VisibilityTimeout=0
    )
    return {message["Body"] for message in messages.get("Messages", [])}


def test_stacks_in_one_process_do_not_share_data(tmp_path: Path) -> None:
    template = tiny_template(tmp_path / "app")
    first = LocalStack(stack_settings(template, tmp_path / "first")).start()
    try:
        put(first, "first")
        # Same template, same names: a second stack started after the first one sees none of its data.
        with LocalStack(stack_settings(template, tmp_path / "second")) as second:
            assert second.moto_url != first.moto_url and second.moto_pid != first.moto_pid
            assert (keys(second), bodies(second)) == (set(), set())
            put(second, "second")
            assert (keys(first), bodies(first)) == ({"first"}, {"first"})
            assert (keys(second), bodies(second)) == ({"second"}, {"second"})
    finally:
        first.stop()
    # The first stack's data went with it; a new stack starts empty.
    with LocalStack(stack_settings(template, tmp_path / "third")) as third:
        assert (keys(third), bodies(third)) == (set(), set())


def test_a_stopped_stack_takes_its_moto_with_it(tmp_path: Path) -> None:
    stack = LocalStack(stack_settings(tiny_template(tmp_path / "app"), tmp_path / "data")).start()
    pid, url = stack.moto_pid, stack.moto_url
    assert pid is not None
    assert json.loads((tmp_path / "data" / "stack.json").read_text())["moto_pid"] == pid
    stack.stop()
    assert stack.moto_pid is None
    assert eventually(lambda: process_gone(pid), timeout=10)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/moto-api/", timeout=2)


def test_mock_aws_in_the_same_process_leaves_the_stack_alone(tmp_path: Path) -> None:
    with LocalStack(stack_settings(tiny_template(tmp_path / "app"), tmp_path / "data")) as stack:
        put(stack, "kept")
        with mock_aws():  # resets moto's in-process store when it starts: the stack's is elsewhere
            local = boto3.client("dynamodb", region_name="us-east-1")
            assert local.list_tables()["TableNames"] == []
        assert keys(stack) == {"kept"}


def test_moto_dies_with_a_killed_stack(tmp_path: Path) -> None:
    template = tiny_template(tmp_path / "app")
    process = launch("--template", str(template), data_dir=tmp_path / "data")
    try:
        described = wait_running(process, tmp_path / "data" / "stack.json")
        moto_pid = described["moto_pid"]
        assert isinstance(moto_pid, int) and not process_gone(moto_pid)
        process.send_signal(signal.SIGKILL)  # no clean-up in the parent at all
        process.communicate(timeout=20)
        assert eventually(lambda: process_gone(moto_pid), timeout=15), "moto outlived its stack"
    finally:
        if process.poll() is None:
            process.kill()


def test_a_queue_hiding_messages_shorter_than_the_function_runs_is_warned_about(tmp_path: Path) -> None:
    template = tiny_template(
        tmp_path / "app",
        TINY
        + textwrap.indent(
            textwrap.dedent("""\
                Consumer:
                  Type: AWS::Serverless::Function
                  Properties:
                    Runtime: python3.12
                    CodeUri: fn
                    Handler: consumer.handler
                    Timeout: 30
                    Events:
                      Work:
                        Type: SQS
                        Properties:
                          Queue: !GetAtt Queue.Arn
                """),
            "  ",
        ),
    )
    (tmp_path / "app" / "fn").mkdir()
    (tmp_path / "app" / "fn" / "consumer.py").write_text("def handler(event, context):\n    return None\n")
    with LocalStack(stack_settings(template, tmp_path / "data")) as stack:
        # The queue keeps SQS's default VisibilityTimeout (30 s): equal to the Timeout is accepted.
        assert not [w for w in stack.warnings if "VisibilityTimeout" in w]
    text = template.read_text().replace(
        "QueueName: tiny-queue", "QueueName: tiny-queue\n      VisibilityTimeout: 10"
    )
    template.write_text(text)
    with LocalStack(stack_settings(template, tmp_path / "data2")) as stack:
        [warning] = [w for w in stack.warnings if "VisibilityTimeout" in w]
        assert warning.startswith("ConsumerWork: queue tiny-queue has VisibilityTimeout 10 s")
        assert "Consumer's Timeout 30 s" in warning and "refuses" in warning


SET_KEPT_TO_TWO = {
    "Update": {
        "TableName": "tiny-table",
        "Key": {"pk": {"S": "kept"}},
        "UpdateExpression": "SET n = :two",
        "ExpressionAttributeValues": {":two": {"N": "2"}},
    }
}


def numbers(dynamodb: Any) -> dict[str, str]:
    return {item["pk"]["S"]: item["n"]["N"] for item in dynamodb.scan(TableName="tiny-table")["Items"]}


def test_a_cancelled_transaction_leaves_every_named_item_as_it_was(tmp_path: Path) -> None:
    # The stack's moto snapshots only the items a transaction names (not whole tables): a
    # transaction whose last condition fails must still undo the writes made before it.
    with LocalStack(stack_settings(tiny_template(tmp_path / "app"), tmp_path / "data")) as stack:
        dynamodb = stack.client("dynamodb")
        dynamodb.put_item(TableName="tiny-table", Item={"pk": {"S": "kept"}, "n": {"N": "1"}})
        dynamodb.put_item(TableName="tiny-table", Item={"pk": {"S": "other"}, "n": {"N": "7"}})
        with pytest.raises(dynamodb.exceptions.TransactionCanceledException):
            dynamodb.transact_write_items(
                TransactItems=[
                    SET_KEPT_TO_TWO,
                    {"Put": {"TableName": "tiny-table", "Item": {"pk": {"S": "new"}}}},
                    {"Delete": {"TableName": "tiny-table", "Key": {"pk": {"S": "other"}}}},
                    {
                        "ConditionCheck": {
                            "TableName": "tiny-table",
                            "Key": {"pk": {"S": "absent"}},
                            "ConditionExpression": "attribute_exists(pk)",
                        }
                    },
                ]
            )
        items = numbers(dynamodb)
        assert items == {"kept": "1", "other": "7"}
        dynamodb.transact_write_items(
            TransactItems=[
                SET_KEPT_TO_TWO,
                {"Delete": {"TableName": "tiny-table", "Key": {"pk": {"S": "other"}}}},
            ]
        )
        items = numbers(dynamodb)
        assert items == {"kept": "2"}
