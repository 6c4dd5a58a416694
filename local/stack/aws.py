"""boto3 clients for the stack's own calls to moto (never the environment's endpoint or credentials)."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


@dataclass(frozen=True)
class MotoEndpoint:
    url: str
    region: str
    account_id: str
    _session: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def client(self, service: str, *, read_timeout: float = 30.0) -> Any:
        """A fresh client; pollers each get their own so long polls do not share a connection pool."""
        config = Config(
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=5,
            read_timeout=read_timeout,
            max_pool_connections=20,
        )
        # One session for all clients: its loader caches the service models (a new session per
        # client costs ~0.5 s); client creation from a shared session is not thread-safe, hence the lock.
        with self._lock:
            session = self._session.get("session")
            if session is None:
                # Explicit credentials ignore AWS_PROFILE / AWS_ENDPOINT_URL of whoever started the stack.
                session = self._session["session"] = boto3.session.Session(
                    aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                    aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                    aws_session_token=FAKE_CREDENTIALS["AWS_SESSION_TOKEN"],
                    region_name=self.region,
                )
            return session.client(service, endpoint_url=self.url, config=config)  # type: ignore[call-overload]


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


_ARN = re.compile(
    r"^arn:(?P<partition>[^:]+):(?P<service>[^:]+):(?P<region>[^:]*):(?P<account>[^:]*):(?P<resource>.+)$"
)


@dataclass(frozen=True)
class Arn:
    partition: str
    service: str
    region: str
    account: str
    resource: str

    @classmethod
    def parse(cls, text: str) -> Arn | None:
        match = _ARN.match(text or "")
        return cls(**match.groupdict()) if match else None

    @property
    def resource_name(self) -> str:
        """The last path element: queue name, function name, bus name..."""
        resource = self.resource
        if self.service == "lambda" and resource.startswith("function:"):
            return resource.split(":")[1]
        return re.split(r"[:/]", resource)[-1]
