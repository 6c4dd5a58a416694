"""HTTP front of the sandbox on the standard library's ThreadingHTTPServer (no framework, fast start)."""

from __future__ import annotations

import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from local.sandbox.app import Sandbox
from local.sandbox.clock import Clock
from local.sandbox.config import SandboxConfig
from local.sandbox.httpio import Request, Response, json_response

log = logging.getLogger("wxsandbox")

MAX_BODY = 16 * 1024 * 1024  # 10 000 openids fit comfortably
# An oversized body up to this size is still read and thrown away, so the client gets its 413 (instead
# of a reset while it is still sending) and the keep-alive connection stays in step. Beyond: 413 + close.
MAX_DRAIN = 4 * MAX_BODY
_MAX_LINE = 64 * 1024  # chunk-size and trailer lines
_MAX_TRAILERS = 100
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_COPY = 64 * 1024


class _BodyError(Exception):
    """The request body cannot be used: answer `status`; `keep_alive` when the body was fully read."""

    def __init__(self, status: int, message: str, *, keep_alive: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.keep_alive = keep_alive


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
        try:
            body = self._read_body()
        except _BodyError as error:
            if not error.keep_alive:
                self.close_connection = True  # the rest of the stream cannot be trusted to be a request
            self._write(json_response({"error": error.message}, status=error.status))
            return
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

    # request bodies (RFC 9112 §6) ------------------------------------------------------------
    def _read_body(self) -> bytes:
        codings = [
            c.strip().lower()
            for value in self.headers.get_all("Transfer-Encoding") or []
            for c in value.split(",")
            if c.strip()
        ]
        if codings:
            if codings[-1] != "chunked":  # the length of such a body cannot be known (§6.3)
                raise _BodyError(400, "Transfer-Encoding must end with chunked")
            if codings != ["chunked"]:
                raise _BodyError(501, f"unsupported Transfer-Encoding {', '.join(codings)}")
            if self.headers.get("Content-Length") is not None:
                self.close_connection = True  # both headers: chunked wins, then close (§6.3)
            return self._read_chunked()
        lengths = {v.strip() for v in self.headers.get_all("Content-Length") or []}
        if not lengths:
            return b""
        value = lengths.pop()
        if lengths or not (value.isascii() and value.isdigit()):  # two different values, or not a number
            raise _BodyError(400, "bad Content-Length")
        length = int(value)
        if length > MAX_BODY:
            if length > MAX_DRAIN:
                raise _BodyError(413, "body too large")
            self._discard(length)
            raise _BodyError(413, "body too large", keep_alive=True)
        return self._read_exactly(length)

    def _read_exactly(self, n: int) -> bytes:
        data = self.rfile.read(n) if n else b""
        if len(data) != n:
            raise _BodyError(400, "body shorter than announced")
        return data

    def _discard(self, n: int) -> None:
        while n > 0:
            n -= len(self._read_exactly(min(n, _COPY)))

    def _line(self) -> bytes:
        line = self.rfile.readline(_MAX_LINE + 1)
        if not line.endswith(b"\n"):
            raise _BodyError(400, "malformed chunked body")
        return line.rstrip(b"\r\n")

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_field = self._line().split(b";", 1)[0].strip()  # chunk extensions are ignored
            if not _CHUNK_SIZE.fullmatch(size_field):
                raise _BodyError(400, "malformed chunk size")
            size = int(size_field, 16)
            if size == 0:
                break
            total += size
            if total > MAX_DRAIN:
                raise _BodyError(413, "body too large")
            if total > MAX_BODY:
                chunks.clear()  # keep reading, to answer 413 with the stream still in step
                self._discard(size)
            else:
                chunks.append(self._read_exactly(size))
            if self._line():
                raise _BodyError(400, "chunk data longer than its size")
        for _ in range(_MAX_TRAILERS + 1):
            if not self._line():  # the empty line that ends the trailer section
                break
        else:
            raise _BodyError(400, "too many trailer fields")
        if total > MAX_BODY:
            raise _BodyError(413, "body too large", keep_alive=True)
        return b"".join(chunks)

    def _write(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
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
