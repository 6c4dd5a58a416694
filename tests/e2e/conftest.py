"""The whole product over HTTP: the local stack (moto server + function workers) and the WeChat
sandbox, both on free ports, started once for the e2e tests."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from local.sandbox.server import SandboxServer
from local.stack import LocalStack, Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
APPID = "wxe2e0000000000001"
ORIGINAL_ID = "gh_e2e000000001"
TOKEN = "e2eToken2026"
AES_KEY = "E2eKeyE2eKeyE2eKeyE2eKeyE2eKeyE2eKeyE2eKeyZ"
APP_SECRET = "e2e0123456789abcdef0123456789abc"
SUB_TEMPLATE = "SUB_E2E_SHIPPED"


@dataclass
class System:
    sandbox: SandboxServer
    stack: LocalStack
    wechat: httpx.Client
    api: httpx.Client

    @property
    def admin(self) -> str:
        return f"/admin/accounts/{APPID}"

    def settle(self) -> None:
        assert self.wechat.post("/admin/callbacks/flush", json={"timeout": 30}).json()["flushed"]
        self.stack.wait_idle(timeout=30)

    def follower(self, openid: str) -> httpx.Response:
        return self.api.get(f"/accounts/{APPID}/followers/{openid}")


# Module scope: the stack's threads must be gone before other suites patch botocore (mock_aws).
@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    data_dir: Path = tmp_path_factory.mktemp("local-stack")
    with SandboxServer("127.0.0.1", port=0, seed=11) as sandbox:
        settings = Settings(
            template=REPO_ROOT / "template.yaml",
            port=0,
            moto_port=0,
            data_dir=data_dir,
            wechat_api_base=sandbox.url,
            api_key=secrets.token_urlsafe(12),
        )
        with LocalStack(settings) as stack:
            wechat = httpx.Client(base_url=sandbox.url, timeout=30, trust_env=False)
            api = httpx.Client(
                base_url=stack.api_url, timeout=30, headers={"x-api-key": stack.api_key}, trust_env=False
            )
            account = {
                "appid": APPID,
                "original_id": ORIGINAL_ID,
                "name": "E2E",
                "account_type": "service",
                "verified": True,
                "encryption_mode": "safe",
            }
            created = wechat.post(
                "/admin/accounts",
                json={
                    **{k: v for k, v in account.items() if k not in ("account_type",)},
                    "type": "service",
                    "secret": APP_SECRET,
                    "token": TOKEN,
                    "encoding_aes_key": AES_KEY,
                    "webhook_url": f"{stack.api_url}/wechat/{APPID}",
                },
            )
            assert created.status_code in (200, 201), created.text
            registered = api.post(
                "/accounts",
                json={
                    **account,
                    "secrets": {"app_secret": APP_SECRET, "token": TOKEN, "encoding_aes_key": AES_KEY},
                },
            )
            assert registered.status_code == 201, registered.text
            sub = wechat.post(
                f"/admin/accounts/{APPID}/subscription-templates",
                json={
                    "pri_tmpl_id": SUB_TEMPLATE,
                    "title": "发货通知",
                    "type": "one_time",
                    "keywords": ["thing1"],
                },
            )
            assert sub.status_code == 201, sub.text
            yield System(sandbox=sandbox, stack=stack, wechat=wechat, api=api)
            wechat.close()
            api.close()
