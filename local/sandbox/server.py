"""HTTP front of the sandbox on the standard library's ThreadingHTTPServer (no framework, fast start)."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from local.sandbox.app import Sandbox
from local.sandbox.clock import Clock
from local.sandbox.config import SandboxConfig
from local.sandbox.httpio import Request, Response

log = logging.getLogger("wxsandbox")

MAX_BODY = 16 * 1024 * 1024  # 10 000 openids fit comfortably


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for a request sleeping in an injected timeout
    allow_reuse_address = True
    request_queue_size = 256  # the default backlog of 5 resets connections when many Lambdas call at once

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections like they would with WeChat
    disable_nagle_algorithm = True  # headers and body go out in two writes; avoid the 40 ms ACK stall
    server_version = "wxsandbox"
    sys_version = ""
    server: _HttpServer

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._write(Response(status=413, body=b'{"error":"body too large"}'))
            return
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=parts.path.rstrip("/") or "/",
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            body=body,
            client_ip=self.client_address[0],
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        try:
            response = self.server.sandbox.handle(request)
        except Exception:  # a sandbox bug must show up as a 500, not as a hung client
            log.exception("sandbox failed on %s %s", self.command, self.path)
            response = Response(status=500, body=b'{"error":"sandbox internal error, see its log"}')
        if response.drop:
            self.close_connection = True
            return
        self._write(response)

    def _write(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            # the client already gave up (e.g. an injected timeout longer than its own)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.sandbox.config.verbose:
            log.info("%s %s", self.address_string(), format % args)


class SandboxServer:
    """The WeChat sandbox on a real port, served from a background thread.

    >>> server = SandboxServer("127.0.0.1", port=0, seed=1).start()
    >>> server.url  # doctest: +SKIP
    'http://127.0.0.1:54321'
    >>> server.stop()
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        seed: int | str = 0,
        clock: Clock | None = None,
        config: SandboxConfig | None = None,
    ) -> None:
        self.sandbox = Sandbox(seed=seed, clock=clock, config=config)
        self._httpd = _HttpServer((host, port), self.sandbox)
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def clock(self) -> Clock:
        return self.sandbox.clock

    def start(self) -> SandboxServer:
        self.sandbox.start()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="wxsandbox-http",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Foreground variant for the CLI."""
        self.sandbox.start()
        try:
            self._httpd.serve_forever(poll_interval=0.2)
        finally:
            self.sandbox.stop()
            self._httpd.server_close()

    def request_shutdown(self) -> None:
        """Ask a foreground serve_forever() to return; safe to call from a signal handler."""
        # shutdown() blocks until the serving loop exits, so it must not run on the serving thread
        threading.Thread(target=self._httpd.shutdown, daemon=True).start()

    def stop(self) -> None:
        self.sandbox.stop()
        if self._thread is not None:  # shutdown() would wait forever for a loop that never ran
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
