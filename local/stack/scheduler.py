"""Time-based delivery: EventBridge Scheduler schedules living in moto (from the template or created
at run time by our functions) and scheduled EventBridge rules. moto stores schedules but never fires
them; this module does. at() and rate() are fired, cron() is not (logged once)."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from local.stack.aws import Arn, MotoEndpoint, error_code
from local.stack.functions import ActivityTracker, FunctionPool, FunctionRuntime
from local.stack.pollers import transform_input
from local.stack.specs import RuleTargetSpec

log = logging.getLogger("local.stack")

_AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
# Failed deliveries are retried at the next polls, at most this many times (fewer when the
# schedule's RetryPolicy.MaximumRetryAttempts says so), then given up and logged.
MAX_RETRIES = 2
_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")


def parse_at(expression: str, timezone: str | None = None) -> datetime | None:
    """The UTC instant of an at(...) expression read in its ScheduleExpressionTimezone."""
    match = _AT.match(expression.strip())
    if not match:
        return None
    local = datetime.fromisoformat(match.group(1)).replace(tzinfo=ZoneInfo(timezone or "UTC"))
    return local.astimezone(UTC)


def parse_rate(expression: str) -> timedelta | None:
    match = _RATE.match(expression.strip())
    if not match:
        return None
    amount, unit = int(match.group(1)), match.group(2).rstrip("s")
    return timedelta(**{f"{unit}s": amount})


class AsyncDispatcher:
    """Asynchronous invocations (Scheduler, scheduled rules): queued, counted as activity, errors logged."""

    def __init__(self, tracker: ActivityTracker, workers: int = 8) -> None:
        self.tracker = tracker
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="async-invoke")

    def submit(self, pool: FunctionPool, event: Any, *, source: str) -> None:
        self.tracker.enter()

        def run() -> None:
            try:
                result = pool.invoke(event)
                if not result.ok:
                    log.warning(
                        "[%s] %s failed (%s); not retried locally",
                        source,
                        pool.spec.logical_id,
                        result.error_type,
                    )
            except Exception:
                log.exception("[%s] invoking %s failed", source, pool.spec.logical_id)
            finally:
                self.tracker.leave()

        self._executor.submit(run)

    def stop(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class _Deliverer:
    """Sends a payload to a function, queue, event bus or topic ARN."""

    def __init__(self, endpoint: MotoEndpoint, runtime: FunctionRuntime, dispatcher: AsyncDispatcher) -> None:
        self.endpoint = endpoint
        self.runtime = runtime
        self.dispatcher = dispatcher
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self.endpoint.client(service)
            return self._clients[service]

    def deliver(self, target: dict[str, Any], payload: str, *, source: str) -> bool:
        arn_text = str(target.get("Arn", ""))
        arn = Arn.parse(arn_text)
        if arn is None:
            log.warning("[%s] target %s is not an ARN; skipped", source, arn_text)
            return False
        if arn.service == "lambda":
            pool = self.runtime.find(arn_text)
            if pool is None:
                log.warning("[%s] target function %s is not part of this stack; skipped", source, arn_text)
                return False
            self.dispatcher.submit(pool, _json_or_text(payload), source=source)
        elif arn.service == "sqs":
            sqs = self.client("sqs")
            url = sqs.get_queue_url(QueueName=arn.resource_name, QueueOwnerAWSAccountId=arn.account)[
                "QueueUrl"
            ]
            kwargs: dict[str, Any] = {"QueueUrl": url, "MessageBody": payload}
            group = (target.get("SqsParameters") or {}).get("MessageGroupId")
            if group:
                kwargs["MessageGroupId"] = group
            sqs.send_message(**kwargs)
        elif arn.service == "events":
            params = target.get("EventBridgeParameters") or {}
            self.client("events").put_events(
                Entries=[
                    {
                        "Source": params.get("Source", "aws.scheduler"),
                        "DetailType": params.get("DetailType", "Scheduled Event"),
                        "Detail": payload,
                        "EventBusName": arn_text,
                    }
                ]
            )
        elif arn.service == "sns":
            self.client("sns").publish(TopicArn=arn_text, Message=payload)
        else:
            log.warning("[%s] %s targets are not supported locally; skipped", source, arn.service)
            return False
        return True


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class SchedulerPoller(threading.Thread):
    """Fires the schedules stored in moto's EventBridge Scheduler when they are due, once each."""

    def __init__(
        self,
        *,
        endpoint: MotoEndpoint,
        runtime: FunctionRuntime,
        dispatcher: AsyncDispatcher,
        state_file: Path,
        interval: float,
        stop: threading.Event,
        fresh: bool,
    ) -> None:
        super().__init__(name="scheduler", daemon=True)
        self.endpoint = endpoint
        self.deliverer = _Deliverer(endpoint, runtime, dispatcher)
        self.interval = interval
        self.stop_event = stop
        self.state_file = state_file
        self._lock = threading.Lock()
        self._details: dict[tuple[str, str], dict[str, Any]] = {}
        self._warned: set[str] = set()
        self.fired_count = 0
        self.failed_count = 0  # occurrences given up after MAX_RETRIES
        self.polls = 0
        self._failures: dict[str, int] = {}  # once-key -> failed attempts so far
        # What was fired survives a stack restart against an external moto; a new moto starts clean.
        self._fired: dict[str, str] = {} if fresh else self._load_state()
        self.scheduler: Any = None

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                self.poll_once()
            except Exception as exc:
                if self.stop_event.is_set():
                    break
                log.warning("[scheduler] poll failed: %s", exc)

    # -- state ------------------------------------------------------------------------------------

    def _load_state(self) -> dict[str, str]:
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(self.state_file.read_text())
            if isinstance(state, dict):
                return {str(k): str(v) for k, v in state.items()}
        return {}

    def _save_state(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._fired, indent=1, sort_keys=True))
        tmp.replace(self.state_file)

    # -- polling ----------------------------------------------------------------------------------

    def _client(self) -> Any:
        if self.scheduler is None:
            self.scheduler = self.endpoint.client("scheduler")
        return self.scheduler

    def _schedules(self) -> list[dict[str, Any]]:
        """Every enabled schedule of every group, with its details (cached per modification)."""
        scheduler = self._client()
        found: list[dict[str, Any]] = []
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        token: str | None = None
        while True:
            # Not filtered by State: an external moto stores an update without State as None, which
            # AWS reads as ENABLED (the stack's own moto is aligned, see motoproc).
            kwargs: dict[str, Any] = {"NextToken": token} if token else {}
            page = scheduler.list_schedules(**kwargs)
            for summary in page.get("Schedules", []):
                if summary.get("State") not in (None, "ENABLED"):
                    continue
                key = (summary["Arn"], str(summary.get("LastModificationDate")))
                details = self._details.get(key)
                if details is None:
                    details = self._get(summary)
                    if details is None:
                        continue  # deleted meanwhile
                seen[key] = details
                found.append(details)
            token = page.get("NextToken")
            if not token:
                self._details = seen  # forget deleted and superseded versions
                return found

    def _get(self, summary: dict[str, Any]) -> dict[str, Any] | None:
        """The schedule's current details; None once it is deleted."""
        try:
            details: dict[str, Any] = self._client().get_schedule(
                Name=summary["Name"], GroupName=summary.get("GroupName") or "default"
            )
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise
        return details

    def _due(self, details: dict[str, Any], now: datetime) -> tuple[str, datetime] | None:
        """(once-key, scheduled time) when the schedule must fire now, else None."""
        expression = str(details.get("ScheduleExpression", ""))
        identity = f"{details['Arn']}|{details.get('CreationDate')}"
        at = parse_at(expression, details.get("ScheduleExpressionTimezone"))
        if at is not None:
            key = f"{identity}|{expression}"
            return (key, at) if now >= at and key not in self._fired else None
        period = parse_rate(expression)
        if period is not None:
            start = details.get("StartDate") or details.get("CreationDate") or now
            start = start if isinstance(start, datetime) else now
            start = start if start.tzinfo else start.replace(tzinfo=UTC)
            end = details.get("EndDate")
            if isinstance(end, datetime) and now > (end if end.tzinfo else end.replace(tzinfo=UTC)):
                return None
            occurrence = int((now - start) / period)
            if occurrence < 1:
                return None
            key = f"{identity}|{expression}|{occurrence}"
            return (key, start + occurrence * period) if key not in self._fired else None
        if details["Arn"] not in self._warned:
            self._warned.add(details["Arn"])
            log.warning(
                "[scheduler] %s: %s is not fired locally (only at() and rate())", details["Name"], expression
            )
        return None

    def pending_due(self) -> bool:
        """True while a schedule is due but not fired yet (part of wait_idle)."""
        with self._lock:
            now = datetime.now(UTC)
            return any(self._due(d, now) for d in self._schedules())

    def poll_once(self) -> int:
        """Fires every due schedule; one failing target does not hold up the others."""
        with self._lock:
            now = datetime.now(UTC)
            fired = 0
            changed = False
            try:
                for details in self._schedules():
                    due = self._due(details, now)
                    if due is None:
                        continue
                    key, scheduled = due
                    try:
                        self._fire(details, scheduled, attempt=self._failures.get(key, 0) + 1)
                    except Exception as exc:
                        changed |= self._failed(details, key, now, exc)
                        continue
                    self._fired[key] = now.isoformat()
                    self._failures.pop(key, None)
                    fired += 1
                    changed = True
            finally:
                self.polls += 1
                self.fired_count += fired
                if changed:
                    self._save_state()
            return fired

    def _failed(self, details: dict[str, Any], key: str, now: datetime, exc: Exception) -> bool:
        """Counts a failed delivery; after the last attempt the occurrence is given up (remembered as
        done, so it is neither retried nor 'due' any more). True when the state changed."""
        name = f"{details.get('GroupName', 'default')}/{details.get('Name')}"
        attempts = self._failures.get(key, 0) + 1
        retries = (details.get("RetryPolicy") or {}).get("MaximumRetryAttempts", MAX_RETRIES)
        allowed = 1 + min(int(retries), MAX_RETRIES)
        if attempts < allowed:
            self._failures[key] = attempts
            log.warning(
                "[scheduler] %s: delivery failed (attempt %d of %d, retried at the next poll): %s",
                name,
                attempts,
                allowed,
                exc,
            )
            return False
        self._failures.pop(key, None)
        self._fired[key] = f"{now.isoformat()} gave up after {attempts} attempt(s): {exc}"
        self.failed_count += 1
        log.error("[scheduler] %s: delivery failed %d time(s), giving up: %s", name, attempts, exc)
        self._after_completion(details)
        return True

    def _fire(self, details: dict[str, Any], scheduled: datetime, *, attempt: int = 1) -> None:
        target = details.get("Target") or {}
        name = f"{details.get('GroupName', 'default')}/{details['Name']}"
        payload = _context_attributes(
            str(target.get("Input") if target.get("Input") is not None else "{}"), details, scheduled, attempt
        )
        log.info("[scheduler] firing %s (%s) -> %s", name, details["ScheduleExpression"], target.get("Arn"))
        self.deliverer.deliver(target, payload, source=f"schedule:{name}")
        self._after_completion(details)

    def _after_completion(self, details: dict[str, Any]) -> None:
        one_time = str(details["ScheduleExpression"]).startswith("at(")
        if one_time and details.get("ActionAfterCompletion") == "DELETE":
            with contextlib.suppress(Exception):
                self._client().delete_schedule(
                    Name=details["Name"], GroupName=details.get("GroupName", "default")
                )


def _context_attributes(text: str, details: dict[str, Any], scheduled: datetime, attempt: int = 1) -> str:
    """Scheduler's context attributes that may appear in a target's Input."""
    replacements = {
        "<aws.scheduler.schedule-arn>": str(details["Arn"]),
        "<aws.scheduler.scheduled-time>": scheduled.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "<aws.scheduler.execution-id>": str(uuid.uuid4()),
        "<aws.scheduler.attempt-number>": str(attempt),
    }
    for placeholder, value in replacements.items():
        text = text.replace(placeholder, value)
    return text


class RateTimer(threading.Thread):
    """A scheduled EventBridge rule (rate() only): sends the 'Scheduled Event' to its target."""

    def __init__(
        self,
        spec: RuleTargetSpec,
        *,
        endpoint: MotoEndpoint,
        runtime: FunctionRuntime,
        dispatcher: AsyncDispatcher,
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"rate:{spec.rule}", daemon=True)
        self.spec = spec
        self.endpoint = endpoint
        self.runtime = runtime
        self.dispatcher = dispatcher
        self.stop_event = stop
        self.period = parse_rate(spec.schedule_expression or "")

    def run(self) -> None:
        if self.period is None:
            log.warning(
                "[%s] %s is not fired locally (only rate())", self.name, self.spec.schedule_expression
            )
            return
        while not self.stop_event.wait(self.period.total_seconds()):
            self.fire()

    def fire(self) -> None:
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.endpoint.account_id,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.endpoint.region,
            "resources": [self.spec.rule_arn],
            "detail": {},
        }
        payload = transform_input(self.spec, event)
        if self.spec.function is not None:
            pool = self.runtime.find(self.spec.function)
            if pool is not None:
                self.dispatcher.submit(pool, payload, source=self.name)
        elif self.spec.queue_url is not None:
            body = payload if isinstance(payload, str) else json.dumps(payload)
            self.endpoint.client("sqs").send_message(QueueUrl=self.spec.queue_url, MessageBody=body)
