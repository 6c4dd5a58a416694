"""HTTP framing: chunked request bodies, oversized bodies, and keep-alive connections staying in step."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import local.sandbox.server as server_module
from local.sandbox import SandboxServer

from .conftest import Service, WeChat


class Connection:
    """One raw keep-alive connection: requests are written byte for byte, answers read in order."""

    def __init__(self, server: SandboxServer) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=5)
        self.stream = self.sock.makefile("rb")

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        status_line = self.stream.readline()
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        headers: dict[str, str] = {}
        while (line := self.stream.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = self.stream.read(int(headers.get("content-length", 0)))
        return int(status_line.split()[1]), headers, body

    def closed_by_peer(self) -> bool:
        return self.stream.read(1) == b""

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


@pytest.fixture
def conn(server: SandboxServer) -> Iterator[Connection]:
    connection = Connection(server)
    yield connection
    connection.close()


def chunked(path: str, chunks: list[bytes], *, extra: str = "", trailer: bytes = b"") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: sandbox\r\nTransfer-Encoding: chunked\r\n{extra}\r\n".encode()
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return head + body + b"0\r\n" + trailer + b"\r\n"


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: sandbox\r\n\r\n".encode()


def sized(path: str, body: bytes) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: sandbox\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def payload(**fields: Any) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode()


def test_chunked_body_is_read_and_the_next_request_on_the_connection_works(
    conn: Connection, service: Service
) -> None:
    body = payload(filter={"is_to_all": True}, msgtype="text", text={"content": "分块发送"})
    path = f"/cgi-bin/message/mass/sendall?access_token={service.token}"
    conn.send(chunked(path, [body[:7], body[7:30], body[30:]], trailer=b"X-Checksum: 1\r\n"))
    status, _, answer = conn.response()
    assert status == 200 and json.loads(answer)["errcode"] == 0
    conn.send(get("/admin/health"))
    status, _, answer = conn.response()
    assert status == 200 and json.loads(answer)["ok"] is True


def test_chunk_extensions_and_upper_case_sizes(conn: Connection, wx: WeChat) -> None:
    body = payload(appid="wxchunked0001", name="x" * 300)
    raw = chunked("/admin/accounts", [body]).replace(b"%x\r\n" % len(body), b"%X;ext=1\r\n" % len(body), 1)
    conn.send(raw)
    assert conn.response()[0] == 201
    assert wx.admin("GET", "/accounts/wxchunked0001")["name"] == "x" * 300


def test_httpx_streamed_body_arrives_whole(wx: WeChat) -> None:
    parts = [b'{"appid": "wxstream00001", ', b'"name": "streamed"}']
    response = wx.http.post("/admin/accounts", content=iter(parts))
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "streamed"


def test_empty_chunked_body_counts_as_empty(conn: Connection, service: Service) -> None:
    conn.send(chunked(f"/cgi-bin/message/mass/sendall?access_token={service.token}", []))
    status, _, answer = conn.response()
    assert status == 200 and json.loads(answer)["errcode"] == 44002


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "MAX_BODY", 1024)
    monkeypatch.setattr(server_module, "MAX_DRAIN", 4096)


@pytest.mark.usefixtures("small_limit")
def test_oversized_body_is_drained_so_the_connection_stays_usable(conn: Connection) -> None:
    conn.send(sized("/admin/accounts", b"x" * 2000))
    status, headers, _ = conn.response()
    assert status == 413 and headers.get("connection") != "close"
    conn.send(get("/admin/health"))  # would be parsed from inside the old body without the drain
    assert conn.response()[0] == 200


@pytest.mark.usefixtures("small_limit")
def test_oversized_chunked_body_is_drained_too(conn: Connection) -> None:
    conn.send(chunked("/admin/accounts", [b"y" * 600, b"y" * 600]))
    assert conn.response()[0] == 413
    conn.send(get("/admin/health"))
    assert conn.response()[0] == 200


@pytest.mark.usefixtures("small_limit")
def test_body_beyond_the_drain_limit_is_refused_and_the_connection_closed(conn: Connection) -> None:
    conn.send(f"POST /admin/accounts HTTP/1.1\r\nHost: s\r\nContent-Length: {10**9}\r\n\r\n".encode())
    status, headers, _ = conn.response()
    assert (status, headers["connection"]) == (413, "close")
    assert conn.closed_by_peer()


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /admin/accounts HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        b"POST /admin/accounts HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n",
        b"POST /admin/accounts HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{}\r\n0\r\n\r\n",
        b"POST /admin/accounts HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST /admin/accounts HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"POST /admin/accounts HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    ],
    ids=["bad-size", "0x-prefix", "data-longer-than-size", "not-chunked-last", "two-lengths", "negative"],
)
def test_malformed_framing_is_400_and_closes(conn: Connection, raw: bytes) -> None:
    conn.send(raw)
    status, headers, _ = conn.response()
    assert (status, headers["connection"]) == (400, "close")
    assert conn.closed_by_peer()


def test_unsupported_transfer_coding_is_501(conn: Connection) -> None:
    conn.send(b"POST /admin/accounts HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
    assert conn.response()[0] == 501
    assert conn.closed_by_peer()


def test_chunked_wins_over_content_length_then_closes(conn: Connection, wx: WeChat) -> None:
    body = payload(appid="wxboth00000001")
    conn.send(chunked("/admin/accounts", [body], extra="Content-Length: 5\r\n"))
    status, headers, _ = conn.response()
    assert (status, headers["connection"]) == (201, "close")
    wx.admin("GET", "/accounts/wxboth00000001")


def test_client_disconnect_mid_body_does_not_break_the_server(server: SandboxServer) -> None:
    sock = socket.create_connection((server.host, server.port), timeout=5)
    sock.sendall(b"POST /admin/accounts HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
    sock.close()
    with httpx.Client(base_url=server.url, trust_env=False) as http:
        assert http.get("/admin/health").status_code == 200
