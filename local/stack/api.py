"""The HTTP front: API Gateway REST API (proxy integration, payload 1.0) in front of the workers,
like `sam local start-api`. Routes come from the functions' Api events; AWS_IAM routes are guarded
by a local API key (SigV4 is not verified locally). Paths no route takes may be the operator API's
docs (apidocs.py)."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from local.stack.apidocs import ApiDocs
from local.stack.functions import FunctionRuntime, InvocationResult
from local.stack.specs import RouteSpec

log = logging.getLogger("local.stack")

API_KEY_HEADER = "x-api-key"
LOCAL_OPERATOR = "local-operator"
_HOP_BY_HOP = frozenset({"connection", "content-length", "transfer-encoding", "keep-alive"})


@dataclass(frozen=True)
class CompiledRoute:
    spec: RouteSpec
    segments: tuple[str, ...]

    @classmethod
    def of(cls, spec: RouteSpec) -> CompiledRoute:
        return cls(spec, tuple(part for part in spec.path.split("/") if part))

    def match(self, parts: list[str]) -> tuple[tuple[int, ...], dict[str, str]] | None:
        """(rank, path parameters) when the path fits; a lower rank is more specific."""
        params: dict[str, str] = {}
        rank: list[int] = []
        for index, segment in enumerate(self.segments):
            if segment.startswith("{") and segment.endswith("+}"):
                if index != len(self.segments) - 1 or index >= len(parts):
                    return None
                params[segment[1:-2]] = "/".join(parts[index:])
                rank.append(2)
                return (*rank, 1 if self.spec.method == "ANY" else 0), params
            if index >= len(parts):
                return None
            if segment.startswith("{") and segment.endswith("}"):
                params[segment[1:-1]] = parts[index]
                rank.append(1)
            elif segment == parts[index]:
                rank.append(0)
            else:
                return None
        if len(parts) != len(self.segments):
            return None
        return (*rank, 1 if self.spec.method == "ANY" else 0), params


class Router:
    def __init__(self, routes: list[RouteSpec]) -> None:
        self.routes = [CompiledRoute.of(route) for route in routes]

    def find(self, method: str, path: str) -> tuple[RouteSpec, dict[str, str]] | None:
        parts = [unquote(part) for part in path.split("/") if part]
        best: tuple[tuple[int, ...], RouteSpec, dict[str, str]] | None = None
        for route in self.routes:
            if route.spec.method not in (method, "ANY"):
                continue
            found = route.match(parts)
            if found is not None and (best is None or found[0] < best[0]):
                best = (found[0], route.spec, found[1])
        return None if best is None else (best[1], best[2])


def build_event(
    *,
    route: RouteSpec,
    method: str,
    raw_path: str,
    path_parameters: dict[str, str],
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
    account_id: str,
    request_id: str,
) -> dict[str, Any]:
    """An API Gateway REST proxy event (payload format 1.0)."""
    split = urlsplit(raw_path)
    path = unquote(split.path) or "/"
    query = parse_qsl(split.query, keep_blank_values=True)
    single_headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for name, value in headers:
        single_headers[name] = value  # API Gateway keeps the last value of a repeated header
        multi_headers.setdefault(name, []).append(value)
    single_query: dict[str, str] = {}
    multi_query: dict[str, list[str]] = {}
    for name, value in query:
        single_query[name] = value
        multi_query.setdefault(name, []).append(value)
    text: str | None
    if not body:
        text, is_base64 = None, False
    else:
        try:
            text, is_base64 = body.decode("utf-8"), False
        except UnicodeDecodeError:
            text, is_base64 = base64.b64encode(body).decode("ascii"), True
    now = time.time()
    user_agent = next((v for k, v in headers if k.lower() == "user-agent"), None)
    identity: dict[str, Any] = {
        "accessKey": None,
        "accountId": None,
        "apiKey": None,
        "apiKeyId": None,
        "caller": None,
        "cognitoAuthenticationProvider": None,
        "cognitoAuthenticationType": None,
        "cognitoIdentityId": None,
        "cognitoIdentityPoolId": None,
        "principalOrgId": None,
        "sourceIp": source_ip,
        "user": None,
        "userAgent": user_agent,
        "userArn": None,
    }
    if route.iam_auth:
        # What a SigV4-signed call carries; the local API key stands for one local operator.
        identity |= {
            "accessKey": "ASIALOCALOPERATOR",
            "accountId": account_id,
            "caller": f"AIDALOCAL:{LOCAL_OPERATOR}",
            "user": f"AIDALOCAL:{LOCAL_OPERATOR}",
            "userArn": f"arn:aws:iam::{account_id}:user/{LOCAL_OPERATOR}",
        }
    host = single_headers.get("Host") or next((v for k, v in headers if k.lower() == "host"), "localhost")
    return {
        "resource": route.path,
        "path": path,
        "httpMethod": method,
        "headers": single_headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": single_query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": path_parameters or None,
        "stageVariables": None,
        "requestContext": {
            "accountId": account_id,
            "apiId": route.api_id,
            "domainName": host,
            "domainPrefix": host.split(".")[0],
            "extendedRequestId": request_id,
            "httpMethod": method,
            "identity": identity,
            "path": f"/{route.stage}{path}",
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000),
            "resourceId": route.event.lower()[:6],
            "resourcePath": route.path,
            "stage": route.stage,
        },
        "body": text,
        "isBase64Encoded": is_base64,
    }


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def json_response(status: int, document: dict[str, Any], request_id: str) -> HttpResponse:
    headers = [
        ("Content-Type", "application/json"),
        ("x-amzn-RequestId", request_id),
        ("x-amzn-ErrorType", _error_type(status)),
    ]
    return HttpResponse(status, headers, json.dumps(document).encode())


def _error_type(status: int) -> str:
    return {
        403: "ForbiddenException",
        404: "MissingAuthenticationTokenException",
        502: "InternalServerErrorException",
        504: "IntegrationTimeoutException",
    }.get(status, "Exception")


def map_result(result: InvocationResult, request_id: str) -> HttpResponse:
    """The function's proxy response as API Gateway would send it (502 when it is malformed)."""
    if result.timed_out:
        return json_response(504, {"message": "Endpoint request timed out"}, request_id)
    if not result.ok:
        return json_response(502, {"message": "Internal server error"}, request_id)
    payload = result.payload
    problem = _malformed(payload)
    if problem:
        log.warning("[api] %s: malformed Lambda proxy response: %s", result.function, problem)
        return json_response(502, {"message": "Internal server error"}, request_id)
    headers: list[tuple[str, str]] = []
    multi = payload.get("multiValueHeaders") or {}
    for name, values in multi.items():
        headers.extend((name, str(value)) for value in values)
    for name, value in (payload.get("headers") or {}).items():
        if name.lower() not in {n.lower() for n in multi}:
            headers.append((name, str(value)))
    headers = [(n, v) for n, v in headers if n.lower() not in _HOP_BY_HOP]
    headers.append(("x-amzn-RequestId", request_id))
    raw = payload.get("body")
    body = b""
    if raw is not None:
        if payload.get("isBase64Encoded"):
            try:
                body = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                log.warning("[api] %s: isBase64Encoded body is not base64", result.function)
                return json_response(502, {"message": "Internal server error"}, request_id)
        else:
            body = str(raw).encode("utf-8")
    if not any(n.lower() == "content-type" for n, _ in headers):
        headers.append(("Content-Type", "application/json"))  # API Gateway's default
    return HttpResponse(int(payload.get("statusCode", 200)), headers, body)


def _malformed(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return f"expected an object, got {type(payload).__name__}"
    allowed = {"statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded", "cookies"}
    extra = set(payload) - allowed
    if extra:
        return f"unexpected keys {sorted(extra)}"
    try:
        int(payload.get("statusCode", 200))
    except (TypeError, ValueError):
        return f"statusCode {payload.get('statusCode')!r} is not a number"
    if payload.get("body") is not None and not isinstance(payload["body"], str):
        return "body must be a string"
    if not isinstance(payload.get("headers") or {}, dict) or not isinstance(
        payload.get("multiValueHeaders") or {}, dict
    ):
        return "headers must be objects"
    return None


class _FrontServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 resets connections under a burst of clients


class ApiFront:
    """ThreadingHTTPServer serving every route; one thread per connection."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        routes: list[RouteSpec],
        runtime: FunctionRuntime,
        api_key: str,
        account_id: str,
    ) -> None:
        self.router = Router(routes)
        self.stages = sorted({route.stage for route in routes})
        self.runtime = runtime
        self.api_key = api_key
        self.account_id = account_id
        self.docs = ApiDocs(api_key_header=API_KEY_HEADER)
        self.server = _FrontServer((host, port), _RequestHandler)
        self.server.front = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, name="api-front", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def handle(
        self, method: str, raw_path: str, headers: list[tuple[str, str]], body: bytes, source_ip: str
    ) -> HttpResponse:
        request_id = str(uuid.uuid4())
        path = urlsplit(raw_path).path or "/"
        found = self.router.find(method, path)
        if found is None:
            # The deployed URL carries the stage (.../prod/wechat/...); accept it as an alias.
            for stage in self.stages:
                prefix = f"/{stage}"
                if path.startswith(prefix + "/"):
                    staged = self.router.find(method, path[len(prefix) :])
                    if staged is not None and staged[0].stage == stage:
                        found, raw_path = staged, raw_path[len(prefix) :]
                        break
        if found is None:
            return self._docs(method, path, headers, request_id) or json_response(
                404, {"message": "Missing Authentication Token"}, request_id
            )
        route, params = found
        if route.needs_api_key:
            given = next((v for k, v in headers if k.lower() == API_KEY_HEADER), "")
            if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                return json_response(403, {"message": "Forbidden"}, request_id)
        event = build_event(
            route=route,
            method=method,
            raw_path=raw_path,
            path_parameters=params,
            headers=headers,
            body=body,
            source_ip=source_ip,
            account_id=self.account_id,
            request_id=request_id,
        )
        pool = self.runtime.find(route.function)
        if pool is None:  # provisioning guarantees it; a clear answer beats a stack trace
            return json_response(502, {"message": "Internal server error"}, request_id)
        result = pool.invoke(event, request_id=request_id)
        if not result.ok:
            log.warning("[api] %s %s -> %s failed: %s", method, path, route.function, result.error)
        return map_result(result, request_id)

    def _docs(
        self, method: str, path: str, headers: list[tuple[str, str]], request_id: str
    ) -> HttpResponse | None:
        """The Swagger UI and its document: local only, no API key (a template route wins)."""
        host = next((v for k, v in headers if k.lower() == "host"), "") or self.url.removeprefix("http://")
        page = self.docs.serve(method, path, host)
        if page is None:
            return None
        cache = "max-age=3600" if page.cache else "no-store"
        response_headers = [
            ("Content-Type", page.content_type),
            ("Cache-Control", cache),
            ("x-amzn-RequestId", request_id),
        ]
        return HttpResponse(page.status, response_headers, page.body)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; avoid the 40 ms ACK stall
    server_version = "wxreach-local-apigw"

    def _serve(self) -> None:
        started = time.monotonic()
        front: ApiFront = self.server.front  # type: ignore[attr-defined]
        try:
            body = self._read_body()
        except ValueError as exc:
            self.send_error(400, str(exc))
            return
        headers = list(self.headers.items())
        response = front.handle(self.command, self.path, headers, body, self.client_address[0])
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)
        log.info(
            "[api] %s %s -> %d (%.0f ms)",
            self.command,
            self.path,
            response.status,
            (time.monotonic() - started) * 1000,
        )

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        if not length.isdigit():
            raise ValueError("bad Content-Length")
        return self.rfile.read(int(length))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("[api] " + format, *args)
