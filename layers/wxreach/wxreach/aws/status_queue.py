"""Delivery callbacks (job-finish events) are handed to the status updater through SQS."""

from __future__ import annotations

import json
from typing import Any

from wxreach.aws.clients import client


class SqsDeliveryEventQueue:
    """Delivery callbacks go to the status queue; the status updater consumes them."""

    def __init__(self, queue_url: str) -> None:
        self._url = queue_url

    def enqueue(self, message: dict[str, Any]) -> None:
        client("sqs").send_message(
            QueueUrl=self._url,
            MessageBody=json.dumps(message, ensure_ascii=False, default=str),
            MessageAttributes={"kind": {"DataType": "String", "StringValue": str(message["kind"])}},
        )
