"""LocalStack: the whole Docker-free stack (moto, function workers, HTTP front, pollers) as one object."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from local.stack.api import API_KEY_HEADER, ApiFront
from local.stack.aws import FAKE_CREDENTIALS, MotoEndpoint
from local.stack.cfn import TemplateError
from local.stack.functions import FunctionPool, FunctionRuntime, InvocationResult
from local.stack.model import load_sam_template
from local.stack.motoproc import MotoProcess, MotoStartError
from local.stack.pollers import QueuePoller, RuleBridgePoller, SqsEventSourcePoller
from local.stack.provision import Provisioned, Provisioner
from local.stack.scheduler import AsyncDispatcher, RateTimer, SchedulerPoller
from local.stack.settings import Settings, load_env_vars_file
from local.stack.specs import FunctionSpec, Resource, RouteSpec

log = logging.getLogger("local.stack")


class StackError(RuntimeError):
    """The stack could not start (bad template, port in use, moto unreachable...)."""


class LocalStack:
    """Start with `.start()` (or `with LocalStack(settings) as stack:`), stop with `.stop()`."""

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        settings = settings or Settings()
        self.settings = settings.with_overrides(**overrides) if overrides else settings
        self.data_dir = Path(self.settings.data_dir).resolve()
        self.logs_dir = self.data_dir / "logs"
        self.stack_file = self.data_dir / "stack.json"
        self.runtime = FunctionRuntime()
        self.provisioned = Provisioned()
        self.api_key = ""
        self.moto_url = ""
        self.api_url = ""
        self.startup_seconds = 0.0
        self.warnings: list[str] = []
        self._endpoint: MotoEndpoint | None = None
        self._moto_process: MotoProcess | None = None
        self._front: ApiFront | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._queue_pollers: list[QueuePoller] = []
        self._scheduler: SchedulerPoller | None = None
        self._dispatcher: AsyncDispatcher | None = None
        self._log_handler: logging.Handler | None = None
        self._idle_sqs: Any = None
        self._running = False

    # -- public view ------------------------------------------------------------------------------

    @property
    def resources(self) -> dict[str, Resource]:
        """Logical id -> what was created (ref = what !Ref returns: table name, queue URL, ...)."""
        return self.provisioned.resources

    @property
    def outputs(self) -> dict[str, Any]:
        """The template's Outputs resolved against the local resources."""
        return self.provisioned.outputs

    @property
    def functions(self) -> dict[str, FunctionSpec]:
        return self.provisioned.functions

    @property
    def routes(self) -> list[RouteSpec]:
        return self.provisioned.routes

    @property
    def scheduler(self) -> SchedulerPoller | None:
        """The Scheduler poller (`polls`, `fired_count`, `failed_count`); None before start."""
        return self._scheduler

    @property
    def endpoint(self) -> MotoEndpoint:
        if self._endpoint is None:
            raise StackError("the stack is not started")
        return self._endpoint

    def client(self, service: str) -> Any:
        """A boto3 client on the stack's moto (fake credentials, the stack's region)."""
        return self.endpoint.client(service)

    def invoke(self, function: str, event: Any) -> InvocationResult:
        """Synchronous invocation by logical id, function name or ARN (like `sam local invoke`)."""
        return self.runtime.invoke(function, event)

    # -- lifecycle --------------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> LocalStack:
        if self._running:
            return self
        if self._stop.is_set():
            raise StackError("a stopped LocalStack cannot be restarted; create a new one")
        started = time.monotonic()
        settings = self.settings
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._attach_log_file()
        try:
            self._launch_moto()  # first: the child's imports overlap with the template's loading
            template = load_sam_template(
                Path(settings.template),
                stack_name=settings.stack_name,
                region=settings.region,
                account_id=settings.account_id,
                parameter_overrides=dict(settings.parameter_overrides),
            )
            function_env = self._function_env_overrides()
            fresh_moto = self._wait_moto()
            self._endpoint = MotoEndpoint(self.moto_url, settings.region, settings.account_id)
            self.provisioned = Provisioner(
                template, self._endpoint, logs_dir=self.logs_dir, echo_output=settings.echo_function_output
            ).run()
            self.warnings.extend(self.provisioned.warnings)
            self.api_key = self._load_api_key()
            self._start_functions(function_env)
            self._start_pollers(fresh_moto)
            self._start_front()
        except TemplateError as exc:
            self.stop()
            raise StackError(str(exc)) from exc
        except BaseException:
            self.stop()
            raise
        self._running = True
        self.startup_seconds = time.monotonic() - started
        self._write_stack_file("running")
        for warning in self.warnings:
            log.warning("%s", warning)
        log.debug("local stack %s started in %.1f s", settings.stack_name, self.startup_seconds)
        return self

    def stop(self) -> None:
        """Stops the front, pollers, workers and moto; safe to call twice or after a failed start."""
        self._stop.set()
        if self._front is not None:
            with contextlib.suppress(Exception):
                self._front.stop()
            self._front = None
        for thread in self._threads:
            thread.join(self.settings.poll_wait_seconds + 5)
        self._threads = []
        if self._dispatcher is not None:
            self._dispatcher.stop()
            self._dispatcher = None
        self.runtime.stop()
        if self._moto_process is not None:
            with contextlib.suppress(Exception):
                self._moto_process.stop()
            self._moto_process = None
        if self._running:
            self._write_stack_file("stopped")
        self._running = False
        if self._log_handler is not None:
            log.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    # -- start-up steps ---------------------------------------------------------------------------

    def _attach_log_file(self) -> None:
        handler = logging.FileHandler(self.logs_dir / "stack.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler.setLevel(logging.DEBUG)
        log.addHandler(handler)
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)
        self._log_handler = handler

    def _function_env_overrides(self) -> dict[str, dict[str, str]]:
        overrides: dict[str, dict[str, str]] = {}
        if self.settings.env_vars_file is not None:
            try:
                overrides = load_env_vars_file(Path(self.settings.env_vars_file))
            except ValueError as exc:
                raise StackError(str(exc)) from exc
        for function, values in self.settings.function_env.items():
            overrides.setdefault(function, {}).update(values)
        return overrides

    @property
    def moto_pid(self) -> int | None:
        """The process id of the stack's own moto (None with --moto-url or when stopped)."""
        return self._moto_process.pid if self._moto_process is not None else None

    def _launch_moto(self) -> None:
        """Spawns the stack's own moto child process, unless a moto URL is given."""
        settings = self.settings
        if settings.moto_url:
            return
        _ensure_port_free(settings.host, settings.moto_port, "moto")
        self._moto_process = MotoProcess(
            settings.host, settings.moto_port, log_path=self.logs_dir / "moto.log"
        )
        self._moto_process.launch()
        log.debug("moto child process %s launched", self._moto_process.pid)

    def _wait_moto(self) -> bool:
        """Waits until moto answers; True when it is the stack's own (so it started empty)."""
        settings = self.settings
        if self._moto_process is None:
            self.moto_url = (settings.moto_url or "").rstrip("/")
            try:
                MotoEndpoint(self.moto_url, settings.region, settings.account_id).client("sqs").list_queues()
            except Exception as exc:
                raise StackError(f"moto at {self.moto_url} is not reachable: {exc}") from exc
            return False
        try:
            self.moto_url = self._moto_process.wait_ready(timeout=30)
        except MotoStartError as exc:
            raise StackError(f"moto on {settings.host}:{settings.moto_port}: {exc}") from exc
        log.debug("moto (pid %s) answers on %s", self._moto_process.pid, self.moto_url)
        return True

    def _load_api_key(self) -> str:
        if self.settings.api_key:
            return self.settings.api_key
        key_file = self.data_dir / "api-key"
        with contextlib.suppress(OSError):
            existing = key_file.read_text().strip()
            if existing:
                return existing
        key = secrets.token_urlsafe(24)
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
        return key

    def function_environment(
        self, spec: FunctionSpec, overrides: dict[str, dict[str, str]]
    ) -> dict[str, str]:
        """Template variables, then the local wiring, then settings, then per-function overrides."""
        settings = self.settings
        env = dict(spec.environment)
        env |= FAKE_CREDENTIALS
        env |= {
            "AWS_ENDPOINT_URL": self.moto_url,
            "AWS_DEFAULT_REGION": settings.region,
            "AWS_REGION": settings.region,
            "AWS_SAM_LOCAL": "true",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_size),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "LAMBDA_TASK_ROOT": spec.code_dir,
            "_HANDLER": spec.handler,
            "TZ": "UTC",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "PYTHONUNBUFFERED": "1",
        }
        if settings.wechat_api_base:
            env["WXREACH_WECHAT_API_BASE"] = settings.wechat_api_base
        env |= dict(settings.env)
        env |= overrides.get("Parameters", {})
        for key in (spec.name, spec.logical_id):
            env |= overrides.get(key, {})
        return env

    def _start_functions(self, overrides: dict[str, dict[str, str]]) -> None:
        known = {"Parameters"} | set(self.functions) | {f.name for f in self.functions.values()}
        for unknown in sorted(set(overrides) - known):
            self.warnings.append(f"environment overrides for {unknown!r}: no such function")
        starting = []
        for logical_id, spec in self.functions.items():
            pool = FunctionPool(
                spec,
                self.function_environment(spec, overrides),
                max_workers=self.settings.concurrency,
                tracker=self.runtime.tracker,
                init_timeout=self.settings.init_timeout,
            )
            self.runtime.pools[logical_id] = pool
            starting.append((spec, pool.start()))  # all spawn at once; their imports overlap
        for spec, worker in starting:
            try:
                worker.wait_ready(self.settings.init_timeout)
            except Exception as exc:
                raise StackError(f"{spec.logical_id}: worker did not start: {exc}") from exc
            if worker.init_error:
                self.warnings.append(
                    f"{spec.logical_id}: handler {spec.handler} not importable yet "
                    f"({worker.init_error.get('errorMessage')}); invocations fail until it is"
                )

    def _start_pollers(self, fresh_moto: bool) -> None:
        endpoint = self.endpoint
        self._dispatcher = AsyncDispatcher(self.runtime.tracker)
        wait = self.settings.poll_wait_seconds
        for source in self.provisioned.sqs_sources:
            pool = self.runtime.pools[source.function]
            self._queue_pollers.append(
                SqsEventSourcePoller(source, pool, endpoint=endpoint, stop=self._stop, wait_seconds=wait)
            )
        for target in self.provisioned.rule_targets:
            if target.schedule_expression:
                self._threads.append(
                    RateTimer(
                        target,
                        endpoint=endpoint,
                        runtime=self.runtime,
                        dispatcher=self._dispatcher,
                        stop=self._stop,
                    )
                )
            elif target.function is not None:
                pool = self.runtime.pools[target.function]
                self._queue_pollers.append(
                    RuleBridgePoller(target, pool, endpoint=endpoint, stop=self._stop, wait_seconds=wait)
                )
        self._scheduler = SchedulerPoller(
            endpoint=endpoint,
            runtime=self.runtime,
            dispatcher=self._dispatcher,
            state_file=self.data_dir / "scheduler-fired.json",
            interval=self.settings.scheduler_interval,
            stop=self._stop,
            fresh=fresh_moto,
        )
        self._threads.extend(self._queue_pollers)
        self._threads.append(self._scheduler)
        for thread in self._threads:
            thread.start()

    def _start_front(self) -> None:
        try:
            self._front = ApiFront(
                host=self.settings.host,
                port=self.settings.port,
                routes=self.routes,
                runtime=self.runtime,
                api_key=self.api_key,
                account_id=self.settings.account_id,
            )
        except OSError as exc:
            raise StackError(
                f"HTTP front cannot listen on {self.settings.host}:{self.settings.port}: {exc}"
            ) from exc
        self._front.start()
        port = self._front.server.server_address[1]
        self.api_url = f"http://{_client_host(self.settings.host)}:{port}"

    # -- idleness ---------------------------------------------------------------------------------

    def busy_reasons(self, *, ignore_delayed: bool = False) -> list[str]:
        """What keeps the stack from being idle right now (empty list: idle)."""
        reasons = []
        if self.runtime.tracker.in_progress:
            reasons.append(f"{self.runtime.tracker.in_progress} invocation(s) running or queued")
        sqs = self._idle_client()
        for poller in self._queue_pollers:
            attributes = sqs.get_queue_attributes(
                QueueUrl=poller.queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
            counts = {k.removeprefix("ApproximateNumberOf"): int(v) for k, v in attributes.items() if int(v)}
            if ignore_delayed:
                counts.pop("MessagesDelayed", None)
            if counts:
                reasons.append(f"{poller.name}: {counts}")
        if self._scheduler is not None and self._scheduler.pending_due():
            reasons.append("a schedule is due")
        return reasons

    def _idle_client(self) -> Any:
        if self._idle_sqs is None:
            self._idle_sqs = self.endpoint.client("sqs")
        return self._idle_sqs

    def wait_idle(self, timeout: float = 30.0, *, poll: float = 0.05, ignore_delayed: bool = False) -> None:
        """Returns once no invocation runs, the polled queues hold no visible, in-flight or delayed
        message and no schedule is due, twice in a row; raises TimeoutError naming what is busy.
        ignore_delayed: messages deliberately sent for later (back-offs, the send queue's safety
        net copies of single sends, up to 15 min ahead) do not count."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while True:
            reasons = self.busy_reasons(ignore_delayed=ignore_delayed)
            quiet = quiet + 1 if not reasons else 0
            if quiet >= 2:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"stack not idle after {timeout:.1f} s: {'; '.join(reasons)}")
            time.sleep(poll)

    # -- description ------------------------------------------------------------------------------

    def describe(self, status: str = "running") -> dict[str, Any]:
        """What stack.json holds: URLs, key, resources, functions and routes."""
        return {
            "status": status,
            "pid": os.getpid(),
            "stack_name": self.settings.stack_name,
            "region": self.settings.region,
            "account_id": self.settings.account_id,
            "template": str(Path(self.settings.template).resolve()),
            "api_url": self.api_url,
            "moto_url": self.moto_url,
            "moto_pid": self.moto_pid,
            "api_key": self.api_key,
            "api_key_header": API_KEY_HEADER,
            "wechat_api_base": self.settings.wechat_api_base,
            "startup_seconds": round(self.startup_seconds, 3),
            "resources": {k: r.describe() for k, r in self.resources.items()},
            "outputs": self.outputs,
            "functions": {
                k: {
                    "name": f.name,
                    "arn": f.arn,
                    "handler": f.handler,
                    "code_dir": f.code_dir,
                    "log": f.log_path,
                }
                for k, f in self.functions.items()
            },
            "routes": [
                {
                    "method": r.method,
                    "path": r.path,
                    "function": r.function,
                    "api_key_required": r.needs_api_key,
                }
                for r in self.routes
            ],
            "sqs_event_sources": [
                {"function": s.function, "queue_url": s.queue_url, "batch_size": s.batch_size}
                for s in self.provisioned.sqs_sources
            ],
            "rule_targets": [
                {"rule": t.rule, "function": t.function, "schedule": t.schedule_expression}
                for t in self.provisioned.rule_targets
            ],
            "warnings": self.warnings,
        }

    def _write_stack_file(self, status: str) -> None:
        tmp = self.stack_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.describe(status), indent=2, default=str))
        tmp.replace(self.stack_file)

    def summary(self) -> str:
        """The start-up summary the CLI prints."""
        lines = [
            f"wxreach local stack '{self.settings.stack_name}' ready in {self.startup_seconds:.1f} s",
            f"  API         {self.api_url}",
            f"  API key     {API_KEY_HEADER}: {self.api_key}   (AWS_IAM routes)",
            f"  moto        {self.moto_url}",
            f"  WeChat API  {self.settings.wechat_api_base or '(not set)'}",
            f"  data        {self.stack_file}  logs: {self.logs_dir}",
            "  routes:",
        ]
        for route in sorted(self.routes, key=lambda r: (r.path, r.method)):
            guard = API_KEY_HEADER if route.needs_api_key else "open"
            lines.append(f"    {route.method:<7} {route.path:<40} {route.function:<28} {guard}")
        lines.append("  resources:")
        for logical_id, resource in self.resources.items():
            if resource.emulation == "ignored":
                continue
            lines.append(f"    {logical_id:<32} {resource.type:<32} {resource.ref}")
        ignored = sorted(k for k, r in self.resources.items() if r.emulation == "ignored")
        if ignored:
            lines.append(f"  not emulated: {', '.join(ignored)}")
        for source in self.provisioned.sqs_sources:
            lines.append(f"  SQS {source.queue_url} -> {source.function} (batch {source.batch_size})")
        for target in self.provisioned.rule_targets:
            what = target.schedule_expression or "event pattern"
            lines.append(f"  rule {target.rule_name} ({what}) -> {target.function or target.queue_url}")
        lines.extend(f"  ! {warning}" for warning in self.warnings)
        return "\n".join(lines)


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _ensure_port_free(host: str, port: int, what: str) -> None:
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise StackError(f"{what} port {host}:{port} is not free ({exc.strerror}); pick another") from exc
