"""A sending world: moto (tables from template.yaml) plus the WeChat sandbox over real HTTP, with
one service account registered on both sides, a template message template and a one-time
subscription template."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from local.sandbox import ManualClock, SandboxConfig, SandboxServer
from tests.support import wechat
from tests.support.aws import AwsWorld, aws_world
from wxreach import container
from wxreach.reach.accounts import AccountRegistration

TEMPLATE_ID = "TPL_ORDER_PAID"
SUB_TEMPLATE_ID = "SUB_ORDER_SHIPPED"
TEMPLATE_KEYWORDS = [
    {"name": "thing1", "label": "商品"},
    {"name": "amount2", "label": "金额"},
    {"name": "character_string3", "label": "订单号"},
]
SUB_KEYWORDS = [{"name": "thing1", "label": "商品"}, {"name": "character_string2", "label": "单号"}]


@dataclass
class SendingWorld:
    aws: AwsWorld
    sandbox: SandboxServer
    admin: httpx.Client
    followers: list[str]

    def admin_call(self, method: str, path: str, body: Any = None) -> Any:
        resp = self.admin.request(method, "/admin" + path, json=body)
        assert resp.status_code < 300, resp.text
        return resp.json()

    def inbox(self, openid: str, kind: str | None = None) -> list[dict[str, Any]]:
        suffix = f"?kind={kind}" if kind else ""
        return self.admin_call("GET", f"/accounts/{wechat.APPID}/users/{openid}/inbox{suffix}")["messages"]

    def user(self, openid: str) -> dict[str, Any]:
        return self.admin_call("GET", f"/accounts/{wechat.APPID}/users/{openid}")

    def faults(self, rule: dict[str, Any]) -> None:
        self.admin_call("POST", "/faults", rule)

    def clear_faults(self) -> None:
        self.admin_call("POST", "/faults/clear", {})

    def counters(self) -> dict[str, Any]:
        return self.admin_call("GET", "/counters")["paths"]

    def popup_accept(self, openid: str, template_id: str = SUB_TEMPLATE_ID) -> None:
        """The user accepts on WeChat's side; wxreach's webhook would record it: do that here."""
        self.admin_call(
            "POST", f"/accounts/{wechat.APPID}/users/{openid}/popup", {"scene": 2, "accept": [template_id]}
        )
        container.followers().grant_one_time(
            wechat.APPID,
            openid,
            {template_id: f"test-accept-{openid}-{datetime.now(UTC).timestamp()}"},
            at=datetime.now(UTC),
        )


@contextmanager
def sending_world(
    monkeypatch: pytest.MonkeyPatch, *, followers: int = 5, **settings: str
) -> Iterator[SendingWorld]:
    config = SandboxConfig(callback_timeout_s=0.5, callback_retry_delay_s=0.0, callback_workers=2)
    with (
        SandboxServer("127.0.0.1", 0, seed=7, clock=ManualClock(), config=config) as sandbox,
        aws_world(monkeypatch, wechat_api_base=sandbox.url, **settings) as aws,
    ):
        monkeypatch.setenv("WXREACH_SEND_QUEUE_URL", aws.queues["SendQueue"])
        monkeypatch.setenv("WXREACH_SEND_DEAD_LETTER_URL", aws.queues["SendDeadLetterQueue"])
        container.reset()
        admin = httpx.Client(base_url=sandbox.url, timeout=10, trust_env=False)
        world = SendingWorld(aws=aws, sandbox=sandbox, admin=admin, followers=[])
        world.admin_call(
            "POST",
            "/accounts",
            {
                "appid": wechat.APPID,
                "secret": wechat.APP_SECRET,
                "original_id": wechat.ORIGINAL_ID,
                "type": "service",
                "verified": True,
                "token": wechat.TOKEN,
            },
        )
        world.followers = world.admin_call(
            "POST", f"/accounts/{wechat.APPID}/followers", {"count": followers, "prefix": "oFollow"}
        )["openids"]
        world.admin_call(
            "POST",
            f"/accounts/{wechat.APPID}/templates",
            {"template_id": TEMPLATE_ID, "title": "订单支付成功", "keywords": TEMPLATE_KEYWORDS},
        )
        world.admin_call(
            "POST",
            f"/accounts/{wechat.APPID}/subscription-templates",
            {
                "pri_tmpl_id": SUB_TEMPLATE_ID,
                "title": "发货通知",
                "type": "one_time",
                "keywords": SUB_KEYWORDS,
            },
        )
        container.register_account(
            AccountRegistration.model_validate(
                {
                    "appid": wechat.APPID,
                    "original_id": wechat.ORIGINAL_ID,
                    "name": "Demo Coffee",
                    "encryption_mode": "plaintext",
                    "secrets": {"app_secret": wechat.APP_SECRET, "token": wechat.TOKEN},
                }
            )
        )
        try:
            yield world
        finally:
            admin.close()
