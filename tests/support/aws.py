"""A moto-backed AWS world built from template.yaml, wired into the wxreach settings."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from botocore.client import BaseClient
from moto import mock_aws

from tests.support.template import create_tables, load_template, resources_of_type
from wxreach import container
from wxreach.observability import forget_secrets, metrics

SECRETS_PREFIX = "wxreach/test/accounts/"


@dataclass
class AwsWorld:
    tables: dict[str, str]
    queues: dict[str, str]
    bus_name: str
    bus_capture_queue: str
    env: dict[str, str] = field(default_factory=dict)

    def queue_messages(self, logical: str) -> list[dict[str, Any]]:
        """Drains a queue and returns the JSON bodies."""
        sqs = boto3.client("sqs")
        bodies = []
        while True:
            resp = sqs.receive_message(QueueUrl=self.queues[logical], MaxNumberOfMessages=10)
            msgs = resp.get("Messages", [])
            if not msgs:
                return bodies
            for msg in msgs:
                bodies.append(json.loads(msg["Body"]))
                sqs.delete_message(QueueUrl=self.queues[logical], ReceiptHandle=msg["ReceiptHandle"])

    def journey_events(self) -> list[dict[str, Any]]:
        """Every event put on the journey bus (captured by a catch-all rule to an SQS queue)."""
        sqs = boto3.client("sqs")
        events = []
        while True:
            resp = sqs.receive_message(QueueUrl=self.bus_capture_queue, MaxNumberOfMessages=10)
            msgs = resp.get("Messages", [])
            if not msgs:
                return events
            for msg in msgs:
                events.append(json.loads(msg["Body"]))
                sqs.delete_message(QueueUrl=self.bus_capture_queue, ReceiptHandle=msg["ReceiptHandle"])

    def item_count(self, logical: str) -> int:
        return boto3.client("dynamodb").scan(TableName=self.tables[logical], Select="COUNT")["Count"]


def _reset_global_state() -> None:
    container.reset()
    parameters.clear_caches()
    metrics.clear_metrics()
    forget_secrets()


_DYNAMODB_LOCK = threading.Lock()


def _serialise_dynamodb(monkeypatch: pytest.MonkeyPatch) -> None:
    """DynamoDB applies each conditional write atomically; moto's in-process backend does not
    lock, so concurrent threads can both pass one condition. One DynamoDB call at a time restores
    the guarantee (local/stack/motoproc.py does the same for the moto server)."""
    original = BaseClient._make_api_call

    def serialised(self: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
        if self.meta.service_model.service_name == "dynamodb":
            with _DYNAMODB_LOCK:
                return original(self, operation_name, api_params)
        return original(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", serialised)


@contextmanager
def aws_world(monkeypatch: pytest.MonkeyPatch, **settings: str) -> Iterator[AwsWorld]:
    _serialise_dynamodb(monkeypatch)
    with mock_aws():
        template = load_template()
        tables = create_tables(template)
        sqs = boto3.client("sqs")
        queues = {
            logical: sqs.create_queue(QueueName=f"test-{logical}")["QueueUrl"]
            for logical in resources_of_type(template, "AWS::SQS::Queue")
        }
        buses = resources_of_type(template, "AWS::Events::EventBus")
        (bus_logical,) = buses
        events = boto3.client("events")
        bus_name = f"test-{bus_logical}"
        events.create_event_bus(Name=bus_name)
        capture_url = sqs.create_queue(QueueName="test-journey-capture")["QueueUrl"]
        capture_arn = sqs.get_queue_attributes(QueueUrl=capture_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        events.put_rule(
            Name="capture-all",
            EventBusName=bus_name,
            EventPattern=json.dumps({"source": ["wxreach.webhook", "wxreach.status"]}),
        )
        events.put_targets(
            Rule="capture-all", EventBusName=bus_name, Targets=[{"Id": "q", "Arn": capture_arn}]
        )
        env = {
            "WXREACH_QUOTA_TABLE": tables["QuotaTable"],
            "WXREACH_LEDGER_TABLE": tables["LedgerTable"],
            "WXREACH_IDEMPOTENCY_TABLE": tables["IdempotencyTable"],
            "WXREACH_SECRETS_PREFIX": SECRETS_PREFIX,
            "WXREACH_STATUS_QUEUE_URL": queues["StatusQueue"],
            "WXREACH_JOURNEY_BUS": bus_name,
            **{f"WXREACH_{k.upper()}": v for k, v in settings.items()},
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        _reset_global_state()
        try:
            yield AwsWorld(
                tables=tables, queues=queues, bus_name=bus_name, bus_capture_queue=capture_url, env=env
            )
        finally:
            _reset_global_state()
