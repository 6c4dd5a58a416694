"""Parent side of the function workers: one pool of spawned processes per function, invocations
with Lambda's timeout and error semantics, and a tracker that tells when nothing is running."""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing import spawn
from multiprocessing.connection import Connection
from typing import Any

from local.stack.specs import FunctionSpec
from local.stack.worker import log_stream_name, worker_main

log = logging.getLogger("local.stack")

_SPAWN = multiprocessing.get_context("spawn")
_TIMEOUT_GRACE_SECONDS = 0.5
_WORKER_PREFIX = "wxreach-local:"
_original_preparation_data = spawn.get_preparation_data


def _preparation_data(name: str) -> dict[str, Any]:
    """spawn re-runs the parent's __main__ in every child (a script without a __main__ guard would
    start a stack per worker, and pytest's would be imported for nothing); our workers need none."""
    data: dict[str, Any] = _original_preparation_data(name)
    if name.startswith(_WORKER_PREFIX):
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
    return data


spawn.get_preparation_data = _preparation_data


@dataclass(frozen=True)
class InvocationResult:
    """What Lambda's Invoke API would tell: a payload, or a function error."""

    function: str
    request_id: str
    ok: bool
    payload: Any = None
    error: dict[str, Any] | None = None
    duration_ms: float = 0.0
    timed_out: bool = False

    @property
    def error_type(self) -> str | None:
        return None if self.error is None else str(self.error.get("errorType"))


class ActivityTracker:
    """Counts work in progress (invocations and deliveries queued for them) for wait_idle."""

    def __init__(self) -> None:
        self._busy = 0
        self._lock = threading.Lock()
        self.completed = 0

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
                self.completed += 1

    def enter(self) -> None:
        with self._lock:
            self._busy += 1

    def leave(self) -> None:
        with self._lock:
            self._busy -= 1

    @property
    def in_progress(self) -> int:
        with self._lock:
            return self._busy


class WorkerDied(Exception):
    pass


class WorkerProcess:
    """One spawned worker: a Pipe to send events, replies come back on it."""

    def __init__(self, spec: FunctionSpec, environment: dict[str, str], index: int) -> None:
        self.spec = spec
        parent_end, child_end = _SPAWN.Pipe()
        self.conn: Connection = parent_end
        env = dict(environment, AWS_LAMBDA_LOG_STREAM_NAME=log_stream_name())
        self.process = _SPAWN.Process(
            target=worker_main,
            args=(child_end, spec, env),
            name=f"{_WORKER_PREFIX}{spec.logical_id}-{index}",
            daemon=True,  # never outlive the stack
        )
        self.process.start()
        child_end.close()
        self.ready = False
        self.init_error: dict[str, Any] | None = None
        self._send_lock = threading.Lock()  # invoke and stop may be sent from different threads

    def wait_ready(self, timeout: float) -> None:
        if self.ready:
            return
        if not self.conn.poll(timeout):
            raise WorkerDied(f"{self.spec.logical_id}: worker not ready after {timeout:.0f} s")
        try:
            message = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise WorkerDied(
                f"{self.spec.logical_id}: worker exited during init ({self.process.exitcode})"
            ) from exc
        self.ready = True
        self.init_error = message.get("init_error")

    def send(self, message: dict[str, Any]) -> None:
        try:
            with self._send_lock:
                self.conn.send(message)
        except (BrokenPipeError, OSError) as exc:
            raise WorkerDied(str(exc)) from exc

    def receive(self, timeout: float) -> dict[str, Any] | None:
        """The reply, or None when the timeout passed; WorkerDied if the process went away."""
        if not self.conn.poll(timeout):
            return None
        try:
            reply: dict[str, Any] = self.conn.recv()
        except (EOFError, OSError) as exc:
            self.process.join(1)
            raise WorkerDied(f"exit status {self.process.exitcode}") from exc
        return reply

    def request_stop(self) -> None:
        with contextlib.suppress(Exception), self._send_lock:
            self.conn.send({"type": "stop"})

    def finish_stop(self, grace: float) -> None:
        # A worker still importing its handler cannot read "stop" and runs nothing: no grace for it.
        self.process.join(grace if self.ready else 0)
        if self.process.is_alive():
            self.kill()
        with contextlib.suppress(Exception):
            self.conn.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.join(2)


class FunctionPool:
    """Warm workers of one function. Each worker runs one invocation at a time, as Lambda does;
    up to `max_workers` run concurrently, further callers wait for a free one."""

    def __init__(
        self,
        spec: FunctionSpec,
        environment: dict[str, str],
        *,
        max_workers: int,
        tracker: ActivityTracker,
        init_timeout: float,
    ) -> None:
        self.spec = spec
        self.environment = environment
        self.max_workers = max(1, max_workers)
        self.tracker = tracker
        self.init_timeout = init_timeout
        self._idle: list[WorkerProcess] = []
        self._all: list[WorkerProcess] = []
        self._spawned = 0
        self._cond = threading.Condition()
        self._stopped = False
        self.invocations = 0
        self.errors = 0

    def start(self) -> WorkerProcess:
        with self._cond:
            worker = self._spawn()
            self._idle.append(worker)
            return worker

    def _spawn(self) -> WorkerProcess:
        self._spawned += 1
        worker = WorkerProcess(self.spec, self.environment, self._spawned)
        self._all.append(worker)
        return worker

    def _acquire(self) -> WorkerProcess:
        with self._cond:
            while True:
                if self._stopped:
                    raise WorkerDied("the stack is stopping")
                if self._idle:
                    return self._idle.pop()
                if len(self._all) < self.max_workers:
                    return self._spawn()
                self._cond.wait()

    def _release(self, worker: WorkerProcess, *, healthy: bool) -> None:
        with self._cond:
            if healthy and not self._stopped:
                self._idle.append(worker)
            elif worker in self._all:
                self._all.remove(worker)
            self._cond.notify()

    def invoke(self, event: Any, *, request_id: str | None = None) -> InvocationResult:
        request_id = request_id or str(uuid.uuid4())
        with self.tracker.busy():
            result = self._invoke(json.dumps(event), request_id)
        self.invocations += 1
        if not result.ok:
            self.errors += 1
        return result

    def _invoke(self, event_json: str, request_id: str) -> InvocationResult:
        name = self.spec.logical_id
        try:
            worker = self._acquire()
        except WorkerDied as exc:
            return self._failure(request_id, "Runtime.Unavailable", str(exc))
        healthy = False
        started = time.monotonic()
        try:
            worker.wait_ready(self.init_timeout)
            worker.send(
                {
                    "type": "invoke",
                    "request_id": request_id,
                    "event": event_json,
                    "timeout": self.spec.timeout,
                }
            )
            reply = worker.receive(self.spec.timeout + _TIMEOUT_GRACE_SECONDS)
            if reply is None:
                # Lambda freezes and discards the environment; so do we (the next call cold-starts).
                worker.kill()
                message = (
                    f"{datetime_now()} {request_id} Task timed out after {self.spec.timeout:.2f} seconds"
                )
                self._log_line(message)
                return InvocationResult(
                    name,
                    request_id,
                    ok=False,
                    error={"errorMessage": message, "errorType": "Sandbox.Timedout"},
                    duration_ms=(time.monotonic() - started) * 1000,
                    timed_out=True,
                )
            healthy = True
        except WorkerDied as exc:
            worker.kill()
            message = f"RequestId: {request_id} Error: Runtime exited with error: {exc}"
            self._log_line(message)
            return self._failure(request_id, "Runtime.ExitError", message)
        finally:
            self._release(worker, healthy=healthy)
        duration = float(reply.get("duration_ms", (time.monotonic() - started) * 1000))
        if reply.get("ok"):
            return InvocationResult(
                name, request_id, ok=True, payload=json.loads(reply["payload"]), duration_ms=duration
            )
        return InvocationResult(name, request_id, ok=False, error=reply.get("error"), duration_ms=duration)

    def _log_line(self, message: str) -> None:
        """A line the runtime (not the handler) writes, to the console and the function's log."""
        if self.spec.echo:
            print(f"[{self.spec.logical_id}] {message}", flush=True)
        if self.spec.log_path:
            with contextlib.suppress(OSError), open(self.spec.log_path, "a", encoding="utf-8") as log_file:
                log_file.write(message + "\n")

    def _failure(self, request_id: str, error_type: str, message: str) -> InvocationResult:
        return InvocationResult(
            self.spec.logical_id,
            request_id,
            ok=False,
            error={"errorMessage": message, "errorType": error_type},
        )

    def stop(self) -> list[WorkerProcess]:
        """Asks every worker to stop; the caller joins them (all pools in parallel)."""
        with self._cond:
            self._stopped = True
            workers = list(self._all)
            self._cond.notify_all()
        for worker in workers:
            worker.request_stop()
        return workers


def datetime_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())


@dataclass
class FunctionRuntime:
    """All function pools of the stack, by logical id, function name and ARN."""

    pools: dict[str, FunctionPool] = field(default_factory=dict)
    tracker: ActivityTracker = field(default_factory=ActivityTracker)

    def find(self, name: str) -> FunctionPool | None:
        """By logical id, function name or (possibly qualified) ARN."""
        if name in self.pools:
            return self.pools[name]
        for pool in self.pools.values():
            if name in (pool.spec.name, pool.spec.arn) or name.startswith(pool.spec.arn + ":"):
                return pool
        return None

    def invoke(self, name: str, event: Any) -> InvocationResult:
        pool = self.find(name)
        if pool is None:
            raise KeyError(f"no function {name!r} in this stack")
        return pool.invoke(event)

    def stop(self, grace: float = 3.0) -> None:
        workers = [worker for pool in self.pools.values() for worker in pool.stop()]
        deadline = time.monotonic() + grace
        for worker in workers:
            worker.finish_stop(max(0.1, deadline - time.monotonic()))
