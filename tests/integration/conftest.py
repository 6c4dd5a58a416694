from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.client import BaseClient

from tests.support import wechat
from tests.support.aws import AwsWorld, aws_world
from tests.support.fixtures import api_event
from tests.support.lambda_context import FakeLambdaContext


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsWorld]:
    with aws_world(monkeypatch) as w:
        yield w


def call(handler_module: Any, event: dict[str, Any]) -> dict[str, Any]:
    response = handler_module.lambda_handler(event, FakeLambdaContext())
    assert "Traceback" not in (response.get("body") or "")
    return response


def json_body(response: dict[str, Any]) -> Any:
    return json.loads(response["body"])


@pytest.fixture
def register_account() -> Callable[..., dict[str, Any]]:
    import operator_api_handler

    def register(**overrides: Any) -> dict[str, Any]:
        body = {
            "appid": wechat.APPID,
            "original_id": wechat.ORIGINAL_ID,
            "name": "Demo Coffee",
            "account_type": "service",
            "verified": True,
            "encryption_mode": "safe",
            "secrets": {
                "app_secret": wechat.APP_SECRET,
                "token": wechat.TOKEN,
                "encoding_aes_key": wechat.AES_KEY,
            },
        }
        body.update(overrides)
        response = call(operator_api_handler, api_event("create_account", body=body))
        assert response["statusCode"] == 201, response["body"]
        return json_body(response)

    return register


@pytest.fixture
def safe_account(world: AwsWorld, register_account: Callable[..., dict[str, Any]]) -> AwsWorld:
    register_account()
    return world


@dataclass(frozen=True)
class AwsCall:
    service: str
    operation: str
    params: dict[str, Any]


@pytest.fixture
def aws_calls(monkeypatch: pytest.MonkeyPatch) -> list[AwsCall]:
    """Every AWS API call botocore makes from here on (the SDK boundary, not our code)."""
    calls: list[AwsCall] = []
    original = BaseClient._make_api_call
    test_thread = threading.get_ident()

    def recording(self: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
        # Only this test's calls: a local stack started by other tests polls from its own threads.
        if threading.get_ident() == test_thread:
            calls.append(AwsCall(self.meta.service_model.service_name, operation_name, api_params))
        return original(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)
    return calls
