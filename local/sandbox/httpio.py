"""Transport-neutral request/response values, so the sandbox logic does not depend on http.server."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

JSON_CONTENT_TYPE = "application/json; encoding=utf-8"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: bytes = b""
    client_ip: str = "127.0.0.1"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = JSON_CONTENT_TYPE
    drop: bool = False  # close the connection without any answer (injected timeout)


def dump_json(payload: Any) -> bytes:
    # raw UTF-8 like WeChat; 64-bit ids stay exact because Python ints are not floats
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(status=status, body=dump_json(payload))
