"""boto3 clients created lazily, once per container (never at import: that defeats moto and
slows cold starts). Tests call `reset_clients()` between moto contexts."""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

from wxreach.settings import get_settings

_clients: dict[str, Any] = {}
# A sender's thread pool asks for clients all at once on a cold start: build each one once.
_lock = threading.Lock()


def client(service: str) -> Any:
    found = _clients.get(service)
    if found is not None:
        return found
    with _lock:
        if service not in _clients:
            settings = get_settings()
            config = Config(
                connect_timeout=settings.aws_connect_timeout_seconds,
                read_timeout=settings.aws_read_timeout_seconds,
                retries={"max_attempts": settings.aws_max_attempts, "mode": "standard"},
                max_pool_connections=max(10, settings.send_concurrency),
            )
            _clients[service] = boto3.session.Session().client(service, config=config)  # type: ignore[call-overload]
        return _clients[service]


def reset_clients() -> None:
    with _lock:
        _clients.clear()
