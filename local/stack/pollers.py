"""Queue consumers: SQS event source mappings (Lambda's poller) and the bridge queues through which
moto delivers EventBridge rule matches to our functions."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import threading
import time
from typing import Any

from local.stack.aws import MotoEndpoint
from local.stack.functions import FunctionPool
from local.stack.specs import RuleTargetSpec, SqsSourceSpec

log = logging.getLogger("local.stack")


class QueuePoller(threading.Thread):
    """Long-polls one queue until the stop event is set; subclasses say what to do with messages."""

    def __init__(
        self, *, name: str, endpoint: MotoEndpoint, queue_url: str, stop: threading.Event, wait_seconds: int
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.endpoint = endpoint
        self.queue_url = queue_url
        self.stop_event = stop
        self.wait_seconds = wait_seconds
        self.sqs: Any = None

    def run(self) -> None:
        self.sqs = self.endpoint.client("sqs", read_timeout=self.wait_seconds + 10)
        while not self.stop_event.is_set():
            try:
                messages = self.receive_batch()
                if messages:
                    self.handle(messages)
            except Exception as exc:
                if self.stop_event.is_set():
                    break
                log.warning("[%s] polling %s failed: %s", self.name, self.queue_url, exc)
                self.stop_event.wait(1)

    def receive(self, count: int, wait: int) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=max(1, min(10, count)),
            WaitTimeSeconds=wait,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    def receive_batch(self) -> list[dict[str, Any]]:
        return self.receive(10, self.wait_seconds)

    def delete(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            response = self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
            for failure in response.get("Failed", []):
                log.warning("[%s] could not delete a message: %s", self.name, failure)

    def handle(self, messages: list[dict[str, Any]]) -> None:
        raise NotImplementedError


def sqs_record(message: dict[str, Any], *, queue_arn: str, region: str) -> dict[str, Any]:
    """One record of the event Lambda's SQS poller builds."""
    attributes: dict[str, Any] = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        entry: dict[str, Any] = {
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value["DataType"],
        }
        if "StringValue" in value:
            entry["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            raw = value["BinaryValue"]
            entry["binaryValue"] = base64.b64encode(raw).decode() if isinstance(raw, bytes) else raw
        attributes[name] = entry
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": attributes,
        "md5OfBody": message.get("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def failed_item_ids(payload: Any, batch_ids: set[str]) -> set[str] | None:
    """The messages a ReportBatchItemFailures response reports; None when Lambda would treat the
    response as invalid (and so the whole batch as failed)."""
    if payload is None or payload == {}:
        return set()
    if not isinstance(payload, dict):
        return None
    failures = payload.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    ids: set[str] = set()
    for failure in failures:
        item = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(item, str) or not item or item not in batch_ids:
            return None
        ids.add(item)
    return ids


class SqsEventSourcePoller(QueuePoller):
    """Lambda's SQS event source mapping: batches, partial failures, and no delete on error (the
    messages reappear after the visibility timeout and moto's redrive moves them to the DLQ)."""

    def __init__(
        self,
        spec: SqsSourceSpec,
        pool: FunctionPool,
        *,
        endpoint: MotoEndpoint,
        stop: threading.Event,
        wait_seconds: int,
    ) -> None:
        super().__init__(
            name=f"sqs:{spec.logical_id}",
            endpoint=endpoint,
            queue_url=spec.queue_url,
            stop=stop,
            wait_seconds=wait_seconds,
        )
        self.spec = spec
        self.pool = pool
        self.filters = [_load_pattern(p) for p in spec.filter_patterns]

    def receive_batch(self) -> list[dict[str, Any]]:
        messages = self.receive(self.spec.batch_size, self.wait_seconds)
        if not messages or self.spec.batching_window_seconds <= 0:
            return messages
        deadline = time.monotonic() + self.spec.batching_window_seconds
        while len(messages) < self.spec.batch_size and not self.stop_event.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            messages += self.receive(self.spec.batch_size - len(messages), min(1, int(remaining + 0.999)))
        return messages

    def handle(self, messages: list[dict[str, Any]]) -> None:
        records = [
            sqs_record(m, queue_arn=self.spec.queue_arn, region=self.endpoint.region) for m in messages
        ]
        if self.filters:
            kept = [r for r in records if any(_matches(f, r) for f in self.filters)]
            dropped = [m for m, r in zip(messages, records, strict=True) if r not in kept]
            if dropped:
                self.delete(dropped)  # Lambda deletes messages that match no filter
            records = kept
            messages = [m for m in messages if m not in dropped]
            if not records:
                return
        result = self.pool.invoke({"Records": records})
        if not result.ok:
            log.warning(
                "[%s] %s failed on a batch of %d (%s); the messages return after the visibility timeout",
                self.name,
                self.spec.function,
                len(records),
                result.error_type,
            )
            return
        to_delete = messages
        if self.spec.report_batch_item_failures:
            failed = failed_item_ids(result.payload, {m["MessageId"] for m in messages})
            if failed is None:
                log.warning(
                    "[%s] invalid batchItemFailures response: whole batch treated as failed", self.name
                )
                return
            to_delete = [m for m in messages if m["MessageId"] not in failed]
            if failed:
                log.info("[%s] %d of %d record(s) reported failed", self.name, len(failed), len(messages))
        if to_delete:
            self.delete(to_delete)


def _load_pattern(pattern: str) -> Any:
    from moto.events.models import EventPattern  # moto's own EventBridge pattern matcher

    return EventPattern.load(pattern)


def _matches(pattern: Any, record: dict[str, Any]) -> bool:
    candidate = dict(record)
    with contextlib.suppress(ValueError, TypeError):
        candidate["body"] = json.loads(record["body"])  # filters see a JSON body as an object
    return bool(pattern.matches_event(candidate))


class RuleBridgePoller(QueuePoller):
    """Consumes the queue moto delivers a rule's matching events to and invokes the target function
    with the event (after the target's Input / InputPath / InputTransformer), asynchronously as
    EventBridge does: the event is consumed whatever the function's outcome."""

    def __init__(
        self,
        spec: RuleTargetSpec,
        pool: FunctionPool,
        *,
        endpoint: MotoEndpoint,
        stop: threading.Event,
        wait_seconds: int,
    ) -> None:
        assert spec.queue_url is not None
        super().__init__(
            name=f"rule:{spec.rule}",
            endpoint=endpoint,
            queue_url=spec.queue_url,
            stop=stop,
            wait_seconds=wait_seconds,
        )
        self.spec = spec
        self.pool = pool

    def handle(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            try:
                event = json.loads(message["Body"])
                event.setdefault("account", self.endpoint.account_id)  # moto leaves it out
                payload = transform_input(self.spec, event)
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("[%s] undeliverable event: %s", self.name, exc)
            else:
                result = self.pool.invoke(payload)
                if not result.ok:
                    log.warning(
                        "[%s] %s failed on an event (%s)", self.name, self.spec.function, result.error_type
                    )
            self.delete([message])


_PLACEHOLDER = re.compile(r"<([A-Za-z0-9_.\-]+)>")


def transform_input(spec: RuleTargetSpec, event: dict[str, Any]) -> Any:
    """What EventBridge passes to a target: Input (constant), InputPath, InputTransformer or the event."""
    if spec.input is not None:
        return _json_or_text(spec.input)
    if spec.input_path:
        return json_path(event, spec.input_path)
    if spec.input_transformer:
        paths = spec.input_transformer.get("InputPathsMap") or {}
        values = {name: json_path(event, path) for name, path in paths.items()}
        values |= {
            "aws.events.rule-arn": spec.rule_arn,
            "aws.events.rule-name": spec.rule_name,
            "aws.events.event.ingestion-time": event.get("time"),
            "aws.events.event": event,
            "aws.events.event.json": event,
        }
        template = str(spec.input_transformer.get("InputTemplate", ""))
        return _json_or_text(_render_template(template, values))
    return event


def _render_template(template: str, values: dict[str, Any]) -> str:
    """Fills <name> placeholders: inside a JSON string as raw text, elsewhere as JSON values."""
    out: list[str] = []
    in_string = False
    index = 0
    while index < len(template):
        char = template[index]
        if char == '"' and (index == 0 or template[index - 1] != "\\"):
            in_string = not in_string
        match = _PLACEHOLDER.match(template, index) if char == "<" else None
        if match and match.group(1) in values:
            value = values[match.group(1)]
            if in_string:
                raw = value if isinstance(value, str) else json.dumps(value)
                out.append(json.dumps(raw)[1:-1])
            else:
                out.append(json.dumps(value))
            index = match.end()
            continue
        out.append(char)
        index += 1
    return "".join(out)


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def json_path(document: Any, path: str) -> Any:
    """The simple JSONPath EventBridge accepts: $, $.a.b, $.a[0]."""
    if path in ("$", "$."):
        return document
    if not path.startswith("$."):
        raise ValueError(f"unsupported JSONPath {path!r}")
    current = document
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path[2:]):
        if part.startswith("["):
            index = int(part[1:-1])
            current = current[index] if isinstance(current, list) and index < len(current) else None
        else:
            current = current.get(part) if isinstance(current, dict) else None
        if current is None:
            return None
    return current
