"""Follower sync: runs a sync job from the follower-sync queue (`{appid, job_id}`) until the
time budget is nearly spent; the service enqueues the continuation itself."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ValidationError

from wxreach import container
from wxreach.observability import logger, metrics, tracer

# Room for the page in progress (10 000 profile writes) and the continuation, before the timeout.
STOP_BEFORE_TIMEOUT_SECONDS = 60.0
processor = BatchProcessor(event_type=EventType.SQS)


class FollowerSyncMessage(BaseModel):
    appid: str
    job_id: str


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000 - STOP_BEFORE_TIMEOUT_SECONDS

    def record_handler(record: SQSRecord) -> None:
        try:
            message = FollowerSyncMessage.model_validate_json(record.body)
        except ValidationError:
            # It can never succeed: drop it rather than retry it into the DLQ.
            logger.error("invalid follower sync message", message_id=record.message_id)
            metrics.add_metric(name="FollowerSyncMessageInvalid", unit="Count", value=1)
            return
        job = container.follower_sync_service().run(message.appid, message.job_id, deadline=deadline)
        metrics.add_metric(name=f"FollowerSync_{job.state}", unit="Count", value=1)

    return dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )
