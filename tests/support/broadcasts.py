"""A broadcast world: the sending world plus the broadcast bucket, the schedule group, the
split and mass queues, followers known to the registry, and a pump that runs the queues through
the real handlers (splitter, template sender, mass sender) until nothing is left."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from tests.support import wechat
from tests.support.lambda_context import FakeLambdaContext
from tests.support.sending import SendingWorld, sending_world
from wxreach import container

BUCKET = "test-broadcasts"
GROUP = "test-broadcast-schedules"
ROLE_ARN = "arn:aws:iam::123456789012:role/test-scheduler"
SPLITTER_ARN = "arn:aws:lambda:us-east-1:123456789012:function:test-broadcast-splitter"


@dataclass
class BroadcastWorld:
    sending: SendingWorld

    @property
    def followers(self) -> list[str]:
        return self.sending.followers

    def queue_depth(self, logical: str) -> int:
        attrs = boto3.client("sqs").get_queue_attributes(
            QueueUrl=self.sending.aws.queues[logical],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def pump(
        self, *, rounds: int = 200, on_split: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, int]:
        """Deliver every queued record to its handler until the queues are empty."""
        import broadcast_splitter_handler
        import template_sender_handler

        handlers: dict[str, Any] = {
            "SplitQueue": broadcast_splitter_handler.lambda_handler,
            "SendQueue": template_sender_handler.lambda_handler,
        }
        try:
            import mass_sender_handler

            handlers["MassQueue"] = mass_sender_handler.lambda_handler
        except ImportError:  # pragma: no cover - the mass sender is optional for template tests
            pass
        sqs = boto3.client("sqs")
        delivered = dict.fromkeys(handlers, 0)
        for _ in range(rounds):
            busy = False
            for logical, handler in handlers.items():
                url = self.sending.aws.queues[logical]
                resp = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])
                messages = resp.get("Messages", [])
                if not messages:
                    continue
                busy = True
                records = [_record(m, url) for m in messages]
                if logical == "SplitQueue" and on_split is not None:
                    for record in records:
                        on_split(json.loads(record["body"]))
                result = handler({"Records": records}, FakeLambdaContext(remaining_ms=60_000))
                failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
                for message in messages:
                    if message["MessageId"] not in failed:
                        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                    else:  # time passes: the record is due again (its back-off or timeout is over)
                        sqs.change_message_visibility(
                            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                        )
                delivered[logical] += len(messages) - len(failed)
            if not busy and not any(self.queue_depth(q) for q in handlers):
                return delivered
        return delivered


def _record(message: dict[str, Any], url: str) -> dict[str, Any]:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {},
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:" + url.rsplit("/", 1)[-1],
        "awsRegion": "us-east-1",
    }


@contextmanager
def broadcast_world(
    monkeypatch: pytest.MonkeyPatch, *, followers: int = 10, registered: bool = True, **settings: str
) -> Iterator[BroadcastWorld]:
    with sending_world(monkeypatch, followers=followers, **settings) as world:
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        boto3.client("scheduler").create_schedule_group(Name=GROUP)
        queues = world.aws.queues
        for name, value in {
            "WXREACH_BROADCAST_BUCKET": BUCKET,
            "WXREACH_SCHEDULE_GROUP": GROUP,
            "WXREACH_SCHEDULER_ROLE_ARN": ROLE_ARN,
            "WXREACH_SPLITTER_ARN": SPLITTER_ARN,
            "WXREACH_SPLIT_QUEUE_URL": queues["SplitQueue"],
            **({"WXREACH_MASS_QUEUE_URL": queues["MassQueue"]} if "MassQueue" in queues else {}),
        }.items():
            monkeypatch.setenv(name, value)
        container.reset()
        if registered:
            now = datetime.now(UTC)
            for openid in world.followers:
                container.followers().set_following(wechat.APPID, openid, following=True, at=now)
        yield BroadcastWorld(sending=world)


def put_segment(key: str, lines: list[str]) -> None:
    boto3.client("s3").put_object(Bucket=BUCKET, Key=key, Body=("\n".join(lines) + "\n").encode())


def read_object(key: str) -> list[dict[str, Any]]:
    body = boto3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines() if line]
