"""moto server in a child process: one private moto per LocalStack.

moto keeps its data in module-level backends, so a moto running inside the stack's own process would
share that store with every other moto in the process (a second LocalStack, `mock_aws` in tests,
which also resets it). A child process gives each stack its own store, gone when the child ends.

The child (`python -m local.stack.motoproc --host H --port P`) binds its port (0 = any free port),
prints `{"port": N}` on stdout once it listens, and runs until its stdin reaches end-of-file — which
also happens when the parent dies without stopping it, so a killed stack leaves no moto behind.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

# Backends every stack uses: loaded in the child while the parent is still busy, not on first call.
WARM_SERVICES = ("sqs", "dynamodb", "events", "scheduler", "sns", "s3")


class MotoStartError(RuntimeError):
    """The moto child did not come up (or did not answer) in time."""


class MotoProcess:
    """Starts, watches and stops one moto server child process."""

    def __init__(self, host: str, port: int, *, log_path: Path) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._lines: queue.Queue[bytes] = queue.Queue()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def launch(self) -> None:
        """Spawns the child; `wait_ready()` waits until it answers."""
        root = str(Path(__file__).resolve().parents[2])  # where the `local` package lives
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:  # the child keeps its own descriptor
            self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "local.stack.motoproc", "--host", self.host, "--port", str(self.port)],
                stdin=subprocess.PIPE,  # its end-of-file is the child's signal to exit
                stdout=subprocess.PIPE,
                stderr=log_file,
                env=env,
                close_fds=True,
            )
        stdout = self._process.stdout
        assert stdout is not None
        threading.Thread(
            target=self._read_first_line, args=(stdout,), name="moto-child-reader", daemon=True
        ).start()

    def _read_first_line(self, stdout: IO[bytes]) -> None:
        with contextlib.suppress(Exception):
            self._lines.put(stdout.readline())
        with contextlib.suppress(Exception):
            stdout.close()

    def wait_ready(self, timeout: float = 30.0) -> str:
        """Returns the URL once moto answers HTTP; raises MotoStartError (the child is stopped)."""
        process = self._process
        if process is None:
            raise MotoStartError("moto was not launched")
        deadline = time.monotonic() + timeout
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise MotoStartError(f"moto did not start within {timeout:.0f} s{self._log_tail()}") from None
        try:
            port = int(json.loads(line)["port"])
        except (ValueError, KeyError, TypeError):
            process.wait(5)
            self.stop()
            raise MotoStartError(
                f"moto exited during start-up (exit code {process.returncode}){self._log_tail()}"
            ) from None
        connect_host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        self.url = f"http://{connect_host}:{port}"
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2):  # noqa: S310 - our child
                    pass
                return self.url
            except urllib.error.HTTPError:
                return self.url  # any HTTP answer is an answer
            except OSError as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise MotoStartError(
                        f"moto at {self.url} does not answer: {exc}{self._log_tail()}"
                    ) from exc
                time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """Ends the child (end-of-file, then SIGTERM, then SIGKILL); safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)

    def _log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
            if tail:
                return "\n  " + "\n  ".join(tail)
        return ""


# -- the child ------------------------------------------------------------------------------------


def _exit_with_parent() -> None:
    """Blocks until stdin is closed — by stop() or by the parent's death — then exits at once."""
    with contextlib.suppress(Exception):
        while sys.stdin.buffer.read(4096):
            pass
    os._exit(0)


def _warm(app: Any, create_app: Any) -> None:
    for service in WARM_SERVICES:
        with contextlib.suppress(Exception), app.lock:
            if service not in app.app_instances:
                app.app_instances[service] = create_app(service)


def serialise_dynamodb(app: Any) -> Any:
    """DynamoDB applies each conditional write atomically; moto's backend does not lock, so two
    concurrent writes can both pass one condition. One DynamoDB request at a time restores the
    guarantee our conditional writes rely on; other services (SQS long polls) stay concurrent."""
    lock = threading.Lock()

    def middleware(environ: dict[str, Any], start_response: Any) -> Any:
        if str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            with lock:
                return list(app(environ, start_response))
        return app(environ, start_response)

    return middleware


def align_scheduler_updates() -> None:
    """UpdateSchedule replaces the whole schedule on AWS: an omitted State becomes ENABLED and an
    omitted ActionAfterCompletion NONE. moto stores a missing State as None (which hides the schedule
    from list_schedules(State=ENABLED)) and keeps the ActionAfterCompletion given at creation; this
    makes the child's moto answer like AWS, so code that forgets a field fails locally too."""
    from moto.scheduler.responses import EventBridgeSchedulerResponse

    original = EventBridgeSchedulerResponse.update_schedule
    if getattr(original, "aligned_with_aws", False):
        return

    def update_schedule(self: Any) -> str:
        answer = original(self)
        name = self.uri.split("?")[0].split("/")[-1]
        schedule = self.scheduler_backend.get_schedule(self._get_param("GroupName"), name)
        schedule.state = self._get_param("State") or "ENABLED"
        schedule.action_after_completion = self._get_param("ActionAfterCompletion") or "NONE"
        return str(answer)

    update_schedule.aligned_with_aws = True  # type: ignore[attr-defined]
    EventBridgeSchedulerResponse.update_schedule = update_schedule  # type: ignore[method-assign]


def snapshot_transaction_items() -> None:
    """Before each TransactWriteItems moto deep-copies every table the transaction names, to roll
    back on failure: O(table size) per transaction, minutes per thousand sends once the ledger holds
    tens of thousands of items. DynamoDB's semantics need only the named items, so this snapshots
    those, restores them on failure, and leaves the tables themselves uncopied."""
    import moto.dynamodb.models as models
    from moto.dynamodb.models import DynamoDBBackend, Table
    from moto.dynamodb.models.dynamo_type import DynamoType

    original = DynamoDBBackend.transact_write_items
    if getattr(original, "snapshots_items", False):
        return

    class _CopyButNotTables:  # the module's `copy`: a Table "copy" is the table itself
        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    models.copy = _CopyButNotTables()  # type: ignore[assignment]

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved: list[tuple[Any, Any, Any, Any]] = []
        for entry in transact_items:
            _, op = next(iter(entry.items()))
            table = self.tables.get(op.get("TableName"))
            attrs = op.get("Key") or op.get("Item") or {}
            if table is None or table.hash_key_attr not in attrs:
                continue  # the original raises the right error for it
            hash_value = DynamoType(attrs[table.hash_key_attr])
            range_value = None
            if table.range_key_attr:
                if table.range_key_attr not in attrs:
                    continue
                range_value = DynamoType(attrs[table.range_key_attr])
            saved.append(
                (table, hash_value, range_value, copy.deepcopy(table.get_item(hash_value, range_value)))
            )
        try:
            original(self, transact_items)
        except Exception:
            for table, hash_value, range_value, item in reversed(saved):
                table.delete_item(hash_value, range_value)
                if item is not None and range_value is not None:
                    table.items[hash_value][range_value] = item
                elif item is not None:
                    table.items[hash_value] = item
            raise

    transact_write_items.snapshots_items = True  # type: ignore[attr-defined]
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def child_main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import logging

    parser = argparse.ArgumentParser(prog="python -m local.stack.motoproc")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    # Ctrl-C reaches the whole process group: the stack stops moto itself, after its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, name="parent-watchdog", daemon=True).start()

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per AWS call otherwise
    align_scheduler_updates()
    snapshot_transaction_items()
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        args.host, args.port, serialise_dynamodb(app), threaded=True, request_handler=MotoRequestHandler
    )
    threading.Thread(target=_warm, args=(app, create_backend_app), name="warm", daemon=True).start()
    sys.stdout.write(json.dumps({"port": server.server_address[1], "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    with open(os.devnull, "wb") as devnull:  # the parent reads one line only
        os.dup2(devnull.fileno(), sys.stdout.fileno())
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
