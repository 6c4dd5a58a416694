"""Broadcast I/O adapters: segment objects and dry-run reports in S3, one-time EventBridge
Scheduler schedules, and the queues the splitter writes to."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from wxreach.aws.clients import client
from wxreach.errors import InvalidInput
from wxreach.reach.mass_sending import MassBatchRef
from wxreach.reach.messages import MessageBatch

PRESIGNED_SECONDS = 3600
SQS_BATCH = 10
# SendMessageBatch's payload limit (all records together) is 256 KiB.
MAX_REQUEST_BYTES = 250 * 1024
MAX_SEND_ROUNDS = 8


class S3Segments:
    """Segment objects (JSON lines or CSV) streamed line by line, never loaded whole."""

    def __init__(self, bucket: str | None) -> None:
        self._bucket = bucket

    def lines(self, key: str, *, start: int) -> Iterator[str]:
        if not self._bucket:
            raise InvalidInput("no broadcast bucket is configured", reason="no_bucket", status=500)
        try:
            body = client("s3").get_object(Bucket=self._bucket, Key=key)["Body"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404", "AccessDenied"):
                raise InvalidInput(
                    f"segment object {key} cannot be read", reason="segment_unreadable"
                ) from exc
            raise
        for number, raw in enumerate(body.iter_lines()):
            if number < start:
                continue
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                yield ""  # an unreadable line counts as invalid, in its place
        body.close()

    def exists(self, key: str) -> bool:
        if not self._bucket:
            return False
        try:
            client("s3").head_object(Bucket=self._bucket, Key=key)
        except ClientError:
            return False
        return True


class S3Reports:
    def __init__(self, bucket: str | None) -> None:
        self._bucket = bucket

    def write_lines(
        self, key: str, lines: Iterator[str], *, content_type: str = "application/x-ndjson; charset=utf-8"
    ) -> None:
        if not self._bucket:
            raise InvalidInput("no broadcast bucket is configured", reason="no_bucket", status=500)
        body = "".join(line + "\n" for line in lines).encode("utf-8")
        client("s3").put_object(Bucket=self._bucket, Key=key, Body=body, ContentType=content_type)

    def url(self, key: str) -> str | None:
        if not self._bucket:
            return None
        url: str = client("s3").generate_presigned_url(
            "get_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=PRESIGNED_SECONDS
        )
        return url


class SchedulerSchedules:
    """One-time schedules named by the broadcast id, deleted by Scheduler after they fire."""

    def __init__(
        self,
        *,
        group: str | None,
        target_arn: str | None,
        role_arn: str | None,
        dead_letter_arn: str | None = None,
    ) -> None:
        self._group = group or "default"
        self._target = target_arn
        self._role = role_arn
        self._dead_letter = dead_letter_arn

    def _request(self, name: str, at: datetime, payload: dict[str, Any]) -> dict[str, Any]:
        if not self._target or not self._role:
            raise InvalidInput("scheduling is not configured", reason="no_scheduler", status=500)
        return {
            "Name": name,
            "GroupName": self._group,
            "ScheduleExpression": f"at({at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S')})",
            "ScheduleExpressionTimezone": "UTC",
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "ActionAfterCompletion": "DELETE",
            "Target": {
                "Arn": self._target,
                "RoleArn": self._role,
                "Input": json.dumps(payload),
                "RetryPolicy": {"MaximumRetryAttempts": 10, "MaximumEventAgeInSeconds": 3600},
                **({"DeadLetterConfig": {"Arn": self._dead_letter}} if self._dead_letter else {}),
            },
        }

    def create(self, name: str, at: datetime, payload: dict[str, Any]) -> None:
        try:
            client("scheduler").create_schedule(**self._request(name, at, payload))
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConflictException":
                raise
            self.move(name, at, payload)

    def move(self, name: str, at: datetime, payload: dict[str, Any]) -> None:
        try:
            client("scheduler").update_schedule(**self._request(name, at, payload))
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            client("scheduler").create_schedule(**self._request(name, at, payload))

    def delete(self, name: str) -> bool:
        try:
            client("scheduler").delete_schedule(Name=name, GroupName=self._group)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                return False
            raise
        return True


def _send_all(queue_url: str, bodies: list[str]) -> None:
    """SendMessageBatch of at most 10 records and MAX_REQUEST_BYTES; entries SQS refuses are
    sent again, then it is an error."""
    for chunk in _chunks(bodies):
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)]
        for _ in range(MAX_SEND_ROUNDS):
            resp = client("sqs").send_message_batch(QueueUrl=queue_url, Entries=entries)
            failed = {f["Id"] for f in resp.get("Failed", [])}
            entries = [e for e in entries if e["Id"] in failed]
            if not entries:
                break
        else:
            raise RuntimeError(f"SQS refused {len(entries)} batch records")


def _chunks(bodies: list[str]) -> list[list[str]]:
    chunks: list[list[str]] = []
    current: list[str] = []
    size = 0
    for body in bodies:
        length = len(body.encode("utf-8"))
        if current and (len(current) == SQS_BATCH or size + length > MAX_REQUEST_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append(body)
        size += length
    if current:
        chunks.append(current)
    return chunks


class SqsSplitQueues:
    """Where the splitter writes: template/subscribe batches to the send queue, mass batch
    references to the mass queue, and its own continuations to the split queue."""

    def __init__(
        self, *, send_queue_url: str | None, mass_queue_url: str | None, split_queue_url: str | None
    ) -> None:
        self._send = send_queue_url
        self._mass = mass_queue_url
        self._split = split_queue_url

    def send_batches(self, batches: list[MessageBatch]) -> None:
        if batches:
            assert self._send, "WXREACH_SEND_QUEUE_URL is not set"
            _send_all(self._send, [b.model_dump_json() for b in batches])

    def enqueue_mass(self, appid: str, broadcast_id: str, numbers: list[int]) -> None:
        if numbers:
            assert self._mass, "WXREACH_MASS_QUEUE_URL is not set"
            # The mass sender's record format, from its model.
            bodies = [
                MassBatchRef(appid=appid, broadcast_id=broadcast_id, batch=n).model_dump_json()
                for n in numbers
            ]
            _send_all(self._mass, bodies)

    def start(self, appid: str, broadcast_id: str, *, delay_seconds: int = 0) -> None:
        assert self._split, "WXREACH_SPLIT_QUEUE_URL is not set"
        client("sqs").send_message(
            QueueUrl=self._split,
            MessageBody=json.dumps({"action": "split", "appid": appid, "broadcast_id": broadcast_id}),
            DelaySeconds=min(900, max(0, delay_seconds)),
        )


class SplitResumer:
    """A broadcast paused by the daily cap resumes by a one-time schedule at China midnight."""

    def __init__(self, schedules: SchedulerSchedules) -> None:
        self._schedules = schedules

    def resume_at(self, broadcast_id: str, appid: str, at: datetime) -> None:
        payload = {"action": "split", "appid": appid, "broadcast_id": broadcast_id}
        self._schedules.create(f"{broadcast_id}-resume", at, payload)
