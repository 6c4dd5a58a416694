"""The mass queue: one record per mass batch (`MassBatchRef`), retries by visibility timeout,
records that can never be processed to the DLQ."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from wxreach.aws.clients import client
from wxreach.aws.send_queue import dead_letter, delay_record
from wxreach.observability import metrics
from wxreach.reach.mass_sending import MassBatchRef, MassSendService

# SQS's ceiling for a visibility timeout.
SQS_BATCH = 10
ENQUEUE_ATTEMPTS = 5


class MassQueueConsumer:
    def __init__(
        self, service: MassSendService, *, queue_url: str | None, dead_letter_url: str | None
    ) -> None:
        self._service = service
        self._queue_url = queue_url
        self._dead_letter_url = dead_letter_url

    def process(
        self, records: Sequence[dict[str, Any]], *, deadline: float | None = None
    ) -> dict[str, float | None]:
        """messageId → None when done, or seconds after which the record must come back."""
        plan: dict[str, float | None] = {}
        for record in records:
            try:
                ref = MassBatchRef.model_validate_json(record["body"])
            except (ValueError, ValidationError) as exc:
                # It can never succeed: park it in the DLQ now instead of after every retry.
                self._dead_letter(record, f"invalid record: {type(exc).__name__}")
                plan[record["messageId"]] = None
                continue
            if deadline is not None and time.monotonic() > deadline:
                plan[record["messageId"]] = 1.0  # not started inside the budget: comes back
                continue
            result = self._service.send(ref, deadline=deadline)
            if result.error is not None:
                self._dead_letter(record, f"batch refused: {result.error}")
                plan[record["messageId"]] = None
                continue
            plan[record["messageId"]] = result.retry_after
            if result.retry_after is not None:
                self._delay(record, result.retry_after)
            elif result.batch is not None:
                metrics.add_metric(name=f"MassBatch_{result.batch.state}", unit="Count", value=1)
        return plan

    def _delay(self, record: dict[str, Any], seconds: float) -> None:
        delay_record(self._queue_url, record, seconds)

    def _dead_letter(self, record: dict[str, Any], reason: str) -> None:
        dead_letter(self._dead_letter_url, record, reason, what="mass", metric="MassRecordInvalid")


class SqsMassQueue:
    def __init__(self, queue_url: str) -> None:
        self._url = queue_url

    def enqueue_many(self, refs: list[MassBatchRef], *, delay_seconds: int = 0) -> None:
        """SendMessageBatch, 10 per request; entries SQS did not take are sent again. Raises
        if some still fail (the caller resumes from its checkpoint: a duplicate record is
        harmless, the sender claims a batch once)."""
        sqs = client("sqs")
        for start in range(0, len(refs), SQS_BATCH):
            pending = {str(i): ref for i, ref in enumerate(refs[start : start + SQS_BATCH])}
            for attempt in range(ENQUEUE_ATTEMPTS):
                resp = sqs.send_message_batch(
                    QueueUrl=self._url,
                    Entries=[
                        {
                            "Id": entry_id,
                            "MessageBody": ref.model_dump_json(),
                            "DelaySeconds": max(0, min(900, delay_seconds)),
                        }
                        for entry_id, ref in pending.items()
                    ],
                )
                failed = {f["Id"] for f in resp.get("Failed", [])}
                pending = {entry_id: ref for entry_id, ref in pending.items() if entry_id in failed}
                if not pending:
                    break
                time.sleep(min(2.0, 0.1 * 2**attempt))
            if pending:
                raise RuntimeError(
                    f"SQS refused {len(pending)} mass records after {ENQUEUE_ATTEMPTS} attempts"
                )
