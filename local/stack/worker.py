"""The inside of one worker process: one Lambda execution environment for one function.

Started with multiprocessing 'spawn', so it begins from a fresh interpreter; it imports nothing but
the standard library before the handler module, which keeps the handler's cold start honest.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import signal
import site
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

from local.stack.specs import FunctionSpec

Handler = Callable[[Any, Any], Any]

# Inherited from whoever runs the stack; anything else (AWS_PROFILE, PYTHONPATH...) is not Lambda's.
_KEPT_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "USER", "SYSTEMROOT")


class LambdaContext:
    """The attributes of the Python runtime's context object that handlers and Powertools read."""

    def __init__(self, spec: FunctionSpec, request_id: str, timeout_seconds: float) -> None:
        self.function_name = spec.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = spec.arn
        # The real runtime passes the env var through, so this is a str there too.
        self.memory_limit_in_mb = str(spec.memory_size)
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{spec.name}"
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def __repr__(self) -> str:
        return f"LambdaContext({self.function_name}, {self.aws_request_id})"


def worker_main(conn: Connection, spec: FunctionSpec, environment: dict[str, str]) -> None:
    # Ctrl-C reaches the whole process group; the stack stops workers itself, after in-flight work.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    console = os.dup(1)
    pump = _capture_output(spec, console)
    _isolate(spec, environment)
    handler, init_error = _load_handler(spec.handler)
    conn.send({"type": "ready", "init_error": init_error})
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break  # the stack went away
        if message.get("type") == "stop":
            break
        if handler is None:
            handler, init_error = _load_handler(spec.handler)  # like Lambda, init is retried per invoke
        reply = (
            _invoke(handler, spec, message)
            if handler is not None
            else {"ok": False, "error": dict(init_error or {}, requestId=message["request_id"])}
        )
        sys.stdout.flush()
        sys.stderr.flush()
        conn.send(reply)
    sys.stdout.flush()
    sys.stderr.flush()
    # Pointing 1/2 back at the console closes the pipe, so the pump sees EOF and writes the tail.
    os.dup2(console, 1)
    os.dup2(console, 2)
    pump.join(timeout=2)


def _capture_output(spec: FunctionSpec, console: int) -> threading.Thread:
    """Sends fd 1/2 (so C-level writes too) through a pipe to the console, prefixed, and the log file."""
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 1)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    with contextlib.suppress(AttributeError, io.UnsupportedOperation):
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    prefix = f"[{spec.logical_id}] ".encode()

    def pump() -> None:
        log_file = open(spec.log_path, "ab") if spec.log_path else None  # noqa: SIM115 - lives with the thread
        with os.fdopen(read_fd, "rb") as pipe:
            for line in pipe:
                if not line.endswith(b"\n"):
                    line += b"\n"
                if spec.echo:
                    with contextlib.suppress(OSError):
                        os.write(console, prefix + line)
                if log_file is not None:
                    log_file.write(line)
                    log_file.flush()
        if log_file is not None:
            log_file.close()

    thread = threading.Thread(target=pump, name="output-pump", daemon=True)
    thread.start()
    return thread


def _runtime_paths() -> list[str]:
    """Standard library and installed packages of this interpreter: what the Lambda image provides."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    with contextlib.suppress(Exception):
        roots.add(site.getusersitepackages())
    kept = []
    for entry in sys.path:
        absolute = os.path.abspath(entry) if entry else ""
        if absolute and any(absolute == r or absolute.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
            kept.append(absolute)
    return kept


def _exit_with_parent(interval: float = 0.5) -> None:
    """A stack killed outright (SIGKILL) cannot stop its workers, and a worker busy importing its
    handler or running a long invocation does not notice its pipe closing: it leaves when its parent
    is gone (it is then re-parented, so its parent pid changes)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _isolate(spec: FunctionSpec, environment: dict[str, str]) -> None:
    kept = {name: os.environ[name] for name in _KEPT_VARIABLES if name in os.environ}
    os.environ.clear()
    os.environ.update(kept)
    os.environ.update(environment)
    if hasattr(time, "tzset"):
        time.tzset()  # Lambda runs in UTC
    # The function sees its CodeUri, its layers and the runtime's packages; never the repo's test paths.
    sys.path[:] = [spec.code_dir, *spec.layer_dirs, *_runtime_paths()]
    importlib.invalidate_caches()
    os.chdir(spec.code_dir)


def _load_handler(handler: str) -> tuple[Handler | None, dict[str, Any] | None]:
    module_name, _, function_name = handler.rpartition(".")
    module_name = module_name.replace("/", ".")
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as exc:
        return None, _init_error(
            "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {exc}"
        )
    except ImportError as exc:
        return None, _init_error(
            "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}"
        )
    except Exception as exc:
        traceback.print_exc()
        return None, _init_error(type(exc).__name__, str(exc))
    function = getattr(module, function_name, None)
    if not callable(function):
        return None, _init_error(
            "Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'"
        )
    return function, None


def _init_error(error_type: str, message: str) -> dict[str, Any]:
    print(f"[ERROR] {error_type}: {message}", file=sys.stderr)
    return {"errorMessage": message, "errorType": error_type, "stackTrace": []}


def _invoke(handler: Handler, spec: FunctionSpec, message: dict[str, Any]) -> dict[str, Any]:
    request_id = str(message["request_id"])
    context = LambdaContext(spec, request_id, float(message["timeout"]))
    started = time.monotonic()
    print(f"START RequestId: {request_id} Version: $LATEST")
    try:
        event = json.loads(message["event"])
        result = handler(event, context)
    except BaseException as exc:
        print(f"[ERROR] {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc()
        reply: dict[str, Any] = {
            "ok": False,
            "error": {
                "errorMessage": str(exc),
                "errorType": type(exc).__name__,
                "requestId": request_id,
                "stackTrace": traceback.format_tb(exc.__traceback__),
            },
        }
    else:
        try:
            reply = {"ok": True, "payload": json.dumps(result)}
        except (TypeError, ValueError) as exc:
            reply = {
                "ok": False,
                "error": {
                    "errorMessage": f"Unable to marshal response: {exc}",
                    "errorType": "Runtime.MarshalError",
                    "requestId": request_id,
                    "stackTrace": [],
                },
            }
    duration = (time.monotonic() - started) * 1000
    print(f"END RequestId: {request_id}")
    print(f"REPORT RequestId: {request_id}\tDuration: {duration:.2f} ms\tMemory Size: {spec.memory_size} MB")
    reply["duration_ms"] = duration
    return reply


def log_stream_name() -> str:
    return f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
