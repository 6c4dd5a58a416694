"""Fixtures: a sandbox on a free port with a manual clock, a WeChat-ish client, a webhook receiver."""

from __future__ import annotations

import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from local.sandbox import ManualClock, SandboxConfig, SandboxServer

SECRET = "s3cr3t-sandbox"
# one TLS context for every client: loading the CA bundle per test costs ~40 ms (the sandbox is plain http)
TLS = ssl.create_default_context()


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> ManualClock:
    """2024-06-01 00:00 China time, or the China-time instant given by indirect parametrisation:
    `@pytest.mark.parametrize("clock", ["2024-06-30 23:59:59"], indirect=True)`."""
    start = getattr(request, "param", None)
    return ManualClock() if start is None else ManualClock.at(start)


@pytest.fixture
def config() -> SandboxConfig:
    # short webhook timeout and no retry spacing keep callback tests fast
    return SandboxConfig(callback_timeout_s=0.5, callback_retry_delay_s=0.0, callback_workers=2)


@pytest.fixture
def server(clock: ManualClock, config: SandboxConfig) -> Iterator[SandboxServer]:
    srv = SandboxServer("127.0.0.1", 0, seed=1, clock=clock, config=config).start()
    yield srv
    srv.stop()


@pytest.fixture
def http(server: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10, trust_env=False, verify=TLS) as client:
        yield client


class WeChat:
    """Thin helper over the sandbox's admin API and WeChat endpoints."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    # admin
    def admin(self, method: str, path: str, body: Any = None, expect: int | None = None) -> Any:
        response = self.http.request(method, "/admin" + path, json=body)
        if expect is not None:
            assert response.status_code == expect, response.text
        else:
            assert response.status_code < 300, response.text
        return response.json()

    def account(self, appid: str = "wxsandbox0001", **fields: Any) -> dict[str, Any]:
        return self.admin("POST", "/accounts", {"appid": appid, "secret": SECRET, **fields})

    def followers(self, appid: str, count: int, **extra: Any) -> list[str]:
        return self.admin("POST", f"/accounts/{appid}/followers", {"count": count, **extra})["openids"]

    def template(self, appid: str, keywords: list[Any], **extra: Any) -> str:
        body = {"keywords": keywords, **extra}
        return self.admin("POST", f"/accounts/{appid}/templates", body)["template_id"]

    def sub_template(self, appid: str, keywords: list[Any], kind: str = "one_time", **extra: Any) -> str:
        body = {"keywords": keywords, "type": kind, **extra}
        return self.admin("POST", f"/accounts/{appid}/subscription-templates", body)["priTmplId"]

    def inbox(self, appid: str, openid: str, kind: str | None = None) -> list[dict[str, Any]]:
        suffix = f"?kind={kind}" if kind else ""
        return self.admin("GET", f"/accounts/{appid}/users/{openid}/inbox{suffix}")["messages"]

    def advance(self, seconds: float) -> None:
        self.admin("POST", "/clock/advance", {"seconds": seconds})

    def flush(self) -> None:
        assert self.admin("POST", "/callbacks/flush", {"timeout": 10})["flushed"] is True

    def callbacks(self, **filters: str) -> list[dict[str, Any]]:
        return self.admin("GET", "/callbacks?" + "&".join(f"{k}={v}" for k, v in filters.items()))[
            "callbacks"
        ]

    # WeChat
    def token(self, appid: str = "wxsandbox0001", secret: str = SECRET) -> str:
        body = self.http.get(
            "/cgi-bin/token", params={"grant_type": "client_credential", "appid": appid, "secret": secret}
        ).json()
        assert "access_token" in body, body
        return body["access_token"]

    def get(self, path: str, token: str, **params: Any) -> dict[str, Any]:
        response = self.http.get(path, params={"access_token": token, **params})
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(path, params={"access_token": token}, json=body)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def wx(http: httpx.Client) -> WeChat:
    return WeChat(http)


@dataclass
class Service:
    """A verified service account with followers and one template of each family."""

    appid: str
    token: str
    openids: list[str]
    template_id: str
    sub_one_time: str
    sub_long_term: str
    original_id: str


@pytest.fixture
def service(wx: WeChat) -> Service:
    account = wx.account("wxservice00001", type="service", verified=True)
    openids = wx.followers("wxservice00001", 5)
    template_id = wx.template(
        "wxservice00001",
        [
            {"name": "thing1", "label": "商品"},
            {"name": "amount2", "label": "金额"},
            {"name": "time3", "label": "时间"},
        ],
        template_id="TPL_ORDER_PAID",
        title="订单支付成功",
    )
    one_time = wx.sub_template(
        "wxservice00001", ["thing1", {"name": "enum2", "enum": ["待发货", "已发货"]}], pri_tmpl_id="SUB_ONCE"
    )
    long_term = wx.sub_template(
        "wxservice00001", ["thing1", "amount2"], kind="long_term", pri_tmpl_id="SUB_LONG"
    )
    return Service(
        appid="wxservice00001",
        token=wx.token("wxservice00001"),
        openids=openids,
        template_id=template_id,
        sub_one_time=one_time,
        sub_long_term=long_term,
        original_id=account["original_id"],
    )


# --- a webhook that records what WeChat (the sandbox) pushes -----------------------------------
@dataclass
class Received:
    path: str
    query: dict[str, str]
    body: str


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    # scripted answers, consumed in order: (status, delay seconds); default (200, 0)
    script: deque[tuple[int, float]] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # reply to the GET verification handshake; echoes echostr verbatim by default (§5.1)
    verify_reply: Callable[[dict[str, str]], str] = lambda query: query.get("echostr", "")
    # when set, POSTs are recorded at once but answered only after the test opens the gate
    gate: threading.Event | None = None

    def wait_for(self, n: int, timeout: float = 5.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.01)
        raise AssertionError(f"expected {n} pushes, got {len(self.requests)}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8")
            parts = urlsplit(self.path)
            with state.lock:
                state.requests.append(Received(parts.path, dict(parse_qsl(parts.query)), body))
                status, delay = state.script.popleft() if state.script else (200, 0.0)
            if state.gate is not None:
                state.gate.wait(10)
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "7")
                self.end_headers()
                self.wfile.write(b"success")
            except OSError:
                pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query))
            with state.lock:
                state.requests.append(Received(parts.path, query, ""))
            reply = state.verify_reply(query).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/wechat/callback"
    yield state
    httpd.shutdown()
    httpd.server_close()
