"""boto3 clients created lazily, once per container (never at import: that defeats moto and
slows cold starts). Tests call `reset_clients()` between moto contexts."""

from __future__ import annotations

import functools
from typing import Any

import boto3
from botocore.config import Config

from wxreach.settings import get_settings


@functools.cache
def client(service: str) -> Any:
    settings = get_settings()
    config = Config(
        connect_timeout=settings.aws_connect_timeout_seconds,
        read_timeout=settings.aws_read_timeout_seconds,
        retries={"max_attempts": settings.aws_max_attempts, "mode": "standard"},
    )
    return boto3.session.Session().client(service, config=config)  # type: ignore[call-overload]


def reset_clients() -> None:
    client.cache_clear()
