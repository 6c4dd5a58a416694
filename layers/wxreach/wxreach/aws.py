"""boto3 clients created lazily, once per container (never at import: that defeats moto and
slows cold starts). Tests call `reset_clients()` between moto contexts."""

from __future__ import annotations

import functools
from typing import Any

import boto3
from botocore.config import Config

# Short timeouts: the webhook must answer WeChat well inside 5 s.
_CONFIG = Config(connect_timeout=2, read_timeout=3, retries={"max_attempts": 3, "mode": "standard"})


@functools.cache
def client(service: str) -> Any:
    return boto3.session.Session().client(service, config=_CONFIG)  # type: ignore[call-overload]


def reset_clients() -> None:
    client.cache_clear()
