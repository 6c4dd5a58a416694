"""Mass sender: consumes the mass queue, one `/mass/send` or `/mass/sendall` per batch record,
with partial batch failures."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from wxreach import container
from wxreach.observability import logger, metrics, tracer

# Every invocation sends: load the sender, the WeChat client and the stores during init.
container.load_mass_stack()
# Stop starting a batch well before the timeout: a call cut off mid-way is only resolved by a
# redelivery after the claim goes stale.
STOP_BEFORE_TIMEOUT_SECONDS = 15.0
# A record waiting (permit, back-off, pause) is a normal outcome, not a function error.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


class RetryLater(Exception):
    """The record goes back to the queue; its visibility was set to the back-off already."""


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    budget = max(1.0, context.get_remaining_time_in_millis() / 1000 - STOP_BEFORE_TIMEOUT_SECONDS)
    plan = container.mass_queue_consumer().process(
        event.get("Records", []), deadline=time.monotonic() + budget
    )

    def record_handler(record: SQSRecord) -> None:
        if plan.get(record.message_id) is not None:
            raise RetryLater(record.message_id)

    return dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )
