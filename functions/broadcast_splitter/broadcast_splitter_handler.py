"""Broadcast splitter: turns a sending broadcast's audience into send batches, from its checkpoint.

Started by the operator API (split queue), by a one-time Scheduler schedule (a timed broadcast
firing, or a broadcast paused by the daily cap resuming) and by itself (a continuation record
when its time budget runs out)."""

from __future__ import annotations

import json
import time
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field, ValidationError

from wxreach import container
from wxreach.observability import logger, metrics, tracer
from wxreach.reach.accounts import APPID_PATTERN
from wxreach.reach.broadcasts import BROADCAST_ID_PATTERN

# Leave room to write the checkpoint and the continuation record before the timeout.
STOP_BEFORE_TIMEOUT_SECONDS = 30.0
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


class SplitRequest(BaseModel):
    action: str = Field(default="split", pattern=r"^(split|fire)$")
    appid: str = Field(pattern=APPID_PATTERN)
    broadcast_id: str = Field(pattern=BROADCAST_ID_PATTERN)


def _run(request: SplitRequest, context: LambdaContext) -> None:
    service = container.broadcast_service()
    if request.action == "fire" and not service.fire(request.appid, request.broadcast_id):
        return  # cancelled (or deleted) before its time: nothing to do
    budget = max(1.0, context.get_remaining_time_in_millis() / 1000 - STOP_BEFORE_TIMEOUT_SECONDS)
    result = service.split(request.appid, request.broadcast_id, deadline=time.monotonic() + budget)
    if result is not None and result.stopped == "budget":
        container.split_queues().start(request.appid, request.broadcast_id)
        metrics.add_metric(name="SplitContinuations", unit="Count", value=1)


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "Records" not in event:
        # A Scheduler target invokes us with the schedule's Input as the event.
        _run(SplitRequest.model_validate(event), context)
        return {"status": "ok"}

    def record_handler(record: SQSRecord) -> None:
        try:
            request = SplitRequest.model_validate(json.loads(record.body))
        except (ValueError, ValidationError):
            logger.error("unreadable split record dropped", message_id=record.message_id)
            return
        _run(request, context)

    return dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )
