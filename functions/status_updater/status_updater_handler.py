"""Status updater: consumes the status queue (delivery callbacks from the webhook) with partial
batch failures. Each callback is applied at most once (conditional writes from `sent`); one that
names no record yet, or that we cannot read, is parked, never dropped and never a failure."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from wxreach import container
from wxreach.observability import logger, metrics, tracer

container.load_delivery_stack()
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord) -> None:
    try:
        body: Any = json.loads(record.body)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"kind": "unparsed", "raw_body": record.body[:10_000]}
    applied = container.delivery_service().apply(body)
    for outcome, count in applied.outcomes.items():
        metrics.add_metric(name=f"Delivery_{outcome}", unit=MetricUnit.Count, value=count)
    if applied.newly_parked and applied.parked is not None:
        metrics.add_metric(name=f"CallbackParked_{applied.parked}", unit=MetricUnit.Count, value=1)
    if applied.refunds:
        metrics.add_metric(name="CreditRefunded", unit=MetricUnit.Count, value=applied.refunds)


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )
