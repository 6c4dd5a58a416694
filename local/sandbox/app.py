"""The sandbox core: routes a `Request` to a WeChat endpoint or the admin API and returns a `Response`.

Independent of the HTTP server so that the whole pipeline (faults → token → body → rule checks →
counters) reads top to bottom in `_handle_wechat`.
"""

from __future__ import annotations

import logging
import threading

from local.sandbox.admin import AdminApi
from local.sandbox.callbacks import CallbackDispatcher
from local.sandbox.clock import Clock, SystemClock
from local.sandbox.config import SandboxConfig
from local.sandbox.endpoints import ENDPOINTS
from local.sandbox.endpoints.common import Body, Call, Endpoint, parse_json_body
from local.sandbox.errors import ApiError, Code
from local.sandbox.faults import FaultInjector
from local.sandbox.httpio import Request, Response, json_response
from local.sandbox.state import CallCounters, SandboxState

log = logging.getLogger("wxsandbox")

_HTTP_FAULT_BODIES = {500: b"<html><body>500 Internal Server Error</body></html>"}


class Sandbox:
    def __init__(
        self, *, seed: int | str = 0, clock: Clock | None = None, config: SandboxConfig | None = None
    ):
        self.seed = seed
        self.clock: Clock = clock or SystemClock()
        self.config = config or SandboxConfig()
        self.dispatcher = CallbackDispatcher(
            timeout_s=self.config.callback_timeout_s,
            retries=self.config.callback_retries,
            retry_delay_s=self.config.callback_retry_delay_s,
            workers=self.config.callback_workers,
        )
        self.state = SandboxState(seed=seed, clock=self.clock, config=self.config, dispatcher=self.dispatcher)
        self.faults = FaultInjector(seed)
        self.counters = CallCounters()
        self.admin = AdminApi(self)
        self._routes: dict[str, dict[str, Endpoint]] = {}
        for endpoint in ENDPOINTS:
            self._routes.setdefault(endpoint.path, {})[endpoint.method] = endpoint
        self._stopping = threading.Event()  # wakes injected sleeps on shutdown

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._stopping.clear()
        self.dispatcher.start()

    def stop(self) -> None:
        self._stopping.set()
        self.dispatcher.stop()

    def reset(self) -> None:
        self.state.reset()
        self.dispatcher.clear()
        self.faults.clear()
        self.counters.reset()

    @property
    def paths(self) -> list[str]:
        return sorted(self._routes)

    # dispatch --------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        if request.path == "/admin" or request.path.startswith("/admin/"):
            return self.admin.handle(request)
        return self._handle_wechat(request)

    def _error(self, path: str, error: ApiError) -> Response:
        self.counters.result(path, error.errcode)
        with self.state.lock:
            rid = self.state.ids.rid(self.clock.now())
        return json_response(
            {"errcode": error.errcode, "errmsg": f"{error.errmsg} rid: {rid}", **error.extra}
        )

    def _handle_wechat(self, request: Request) -> Response:
        path = request.path
        by_method = self._routes.get(path)
        if by_method is None:
            return json_response(
                {"errcode": -1, "errmsg": f"sandbox: {path} is not modelled (see docs/sandbox.md)"},
                status=404,
            )
        self.counters.call(path)
        endpoint = by_method.get(request.method)
        if endpoint is None:
            return self._error(path, ApiError(Code.REQUIRE_POST if "POST" in by_method else Code.REQUIRE_GET))

        decision = self.faults.decide(path)
        if decision is not None:
            if decision.latency_s:
                self._stopping.wait(decision.latency_s)
            if decision.label:
                self.counters.injected(path, decision.label)
            if decision.errcode is not None:
                return self._error(path, ApiError(decision.errcode))
            if decision.http_status is not None:
                body = _HTTP_FAULT_BODIES.get(
                    decision.http_status, f"<html><body>{decision.http_status} error</body></html>".encode()
                )
                return Response(status=decision.http_status, body=body, content_type="text/html")
            if decision.timeout_s is not None:
                self._stopping.wait(decision.timeout_s)
                if not decision.process_after_timeout:
                    return Response(drop=True)
                # otherwise the request is processed after the client gave up: WeChat did the work
                # and the caller never learned it (the case client_msg_id/clientmsgid exist for)

        try:
            with self.state.lock:
                call = Call(state=self.state, request=request, now=self.clock.now())
                if endpoint.auth:
                    call.authenticated = self.state.authenticate(request.query.get("access_token"), call.now)
                if endpoint.body is not Body.NONE:
                    call.body = parse_json_body(request.body, required=endpoint.body is Body.REQUIRED)
                result = endpoint.handler(call)
        except ApiError as error:
            return self._error(path, error)
        except Exception:
            # A sandbox bug. Handlers build everything that can fail (the signed, maybe encrypted push
            # included) before they change state, so nothing was delivered or counted: answer like
            # WeChat's "system error", which clients retry, rather than an HTTP 500 they may not.
            log.exception("sandbox failed on %s %s", request.method, path)
            return self._error(
                path, ApiError(Code.SYSTEM_BUSY, "system error (sandbox internal error, see its log)")
            )
        self.counters.result(path, int(result.get("errcode", 0)))
        return json_response(result)
