"""The send queue: batch records in, retries by visibility timeout, poison records to the DLQ."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from wxreach.aws.clients import client
from wxreach.observability import logger, metrics
from wxreach.reach.journey_actions import batch_from_journey_action, is_journey_action
from wxreach.reach.messages import MessageBatch
from wxreach.reach.sending import SendService

# SQS's ceiling for a visibility timeout, counted from when the message was sent.
MAX_VISIBILITY_SECONDS = 12 * 3600
VISIBILITY_MARGIN_SECONDS = 60


def visibility_for(record: dict[str, Any], seconds: float) -> int:
    """A back-off SQS accepts: at most 12 h after the message was sent (a longer wait, such as a
    pause until China midnight, takes more than one return)."""
    sent_ms = record.get("attributes", {}).get("SentTimestamp")
    age = max(0.0, time.time() - int(sent_ms) / 1000) if sent_ms else 0.0
    ceiling = MAX_VISIBILITY_SECONDS - VISIBILITY_MARGIN_SECONDS - age
    return int(max(1, min(ceiling, seconds)))


def parse_record_body(body: str) -> MessageBatch:
    """A batch record, or a journey action delivered by the EventBridge rule; ValueError if neither."""
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("record body is not a JSON object")
    if is_journey_action(data):
        return batch_from_journey_action(data)
    return MessageBatch.model_validate(data)


class SendQueueConsumer:
    def __init__(self, service: SendService, *, queue_url: str | None, dead_letter_url: str | None) -> None:
        self._service = service
        self._queue_url = queue_url
        self._dead_letter_url = dead_letter_url

    def process(
        self, records: Sequence[dict[str, Any]], *, deadline: float | None = None
    ) -> dict[str, float | None]:
        """messageId → None when done, or seconds after which the record must come back.
        `deadline` (time.monotonic()): recipients not started by then wait for the next delivery."""
        plan: dict[str, float | None] = {}
        batches: list[tuple[dict[str, Any], MessageBatch]] = []
        for record in records:
            try:
                batches.append((record, parse_record_body(record["body"])))
            except (ValueError, ValidationError) as exc:
                # It can never succeed: park it in the DLQ now instead of after every retry.
                self._dead_letter(record, f"invalid record: {type(exc).__name__}")
                plan[record["messageId"]] = None
        results = self._service.send_batches([batch for _, batch in batches], deadline=deadline)
        for (record, _), result in zip(batches, results, strict=True):
            if result.error is not None and result.permanent:
                self._dead_letter(record, f"batch refused: {result.error}")
                plan[record["messageId"]] = None
                continue
            plan[record["messageId"]] = result.retry_after
            if result.retry_after is not None:
                self._delay(record, result.retry_after)
            for message in result.messages:
                metrics.add_metric(name=f"Message_{message.state}", unit="Count", value=1)
        return plan

    def _delay(self, record: dict[str, Any], seconds: float) -> None:
        delay_record(self._queue_url, record, seconds)

    def _dead_letter(self, record: dict[str, Any], reason: str) -> None:
        dead_letter(self._dead_letter_url, record, reason, what="send", metric="SendRecordInvalid")


def delay_record(queue_url: str | None, record: dict[str, Any], seconds: float) -> None:
    """Back-off by visibility: the record comes back after `seconds` (bounded by SQS)."""
    if not queue_url:
        return
    client("sqs").change_message_visibility(
        QueueUrl=queue_url,
        ReceiptHandle=record["receiptHandle"],
        VisibilityTimeout=visibility_for(record, seconds),
    )


def dead_letter(
    dead_letter_url: str | None, record: dict[str, Any], reason: str, *, what: str, metric: str
) -> None:
    """A record that can never succeed goes to the DLQ now, with its reason."""
    logger.error(f"{what} record refused", reason=reason, message_id=record.get("messageId"))
    metrics.add_metric(name=metric, unit="Count", value=1)
    if dead_letter_url:
        client("sqs").send_message(
            QueueUrl=dead_letter_url,
            MessageBody=record["body"],
            MessageAttributes={"error": {"DataType": "String", "StringValue": reason}},
        )


class SqsBatchQueue:
    def __init__(self, queue_url: str) -> None:
        self._url = queue_url

    def enqueue(self, batch: MessageBatch, *, delay_seconds: int = 0) -> None:
        client("sqs").send_message(
            QueueUrl=self._url,
            MessageBody=batch.model_dump_json(),
            DelaySeconds=max(0, min(900, delay_seconds)),  # SQS's ceiling; the sender backs off further
        )
