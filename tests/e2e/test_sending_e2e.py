"""Sending over HTTP: the operator API, the send queue and the template sender of the local stack
against the WeChat sandbox. The sandbox's inboxes prove how many times a user received a message."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from local.sandbox.server import SandboxServer
from local.stack import LocalStack, Settings
from wxreach.reach.messages import Origin, OriginKind, message_id_for
from wxreach.wechat.keywords import Channel

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
APPID = "wxe2e0000000000002"
SECRET = "e2e0123456789abcdef0123456789abd"
TEMPLATE = "TPL_E2E_PAID"
CONTENT = {"template_id": TEMPLATE, "data": {"thing1": "{{product}}", "character_string2": "{{no}}"}}
RATE = 3


class System:
    def __init__(self, sandbox: SandboxServer, stack: LocalStack) -> None:
        self.sandbox, self.stack = sandbox, stack
        self.wechat = httpx.Client(base_url=sandbox.url, timeout=30, trust_env=False)
        self.api = httpx.Client(
            base_url=stack.api_url, timeout=30, headers={"x-api-key": stack.api_key}, trust_env=False
        )

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        resp = self.wechat.request(method, f"/admin{path}", json=body)
        assert resp.status_code < 300, resp.text
        return resp.json()

    def inbox(self, openid: str) -> list[dict[str, Any]]:
        return self.admin("GET", f"/accounts/{APPID}/users/{openid}/inbox?kind=template")["messages"]

    def send(self, openid: str, request_id: str, **params: str) -> httpx.Response:
        body = {
            "channel": "template",
            "openid": openid,
            "content": CONTENT,
            "params": params,
            "request_id": request_id,
        }
        return self.api.post(f"/accounts/{APPID}/messages", json=body)

    def wait_state(self, message_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            record = self.api.get(f"/accounts/{APPID}/messages/{message_id}").json()
            if record.get("state") == state or time.monotonic() > deadline:
                return record
            time.sleep(0.5)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with SandboxServer("127.0.0.1", port=0, seed=12) as sandbox:
        sender_env = {"WXREACH_WECHAT_READ_TIMEOUT_SECONDS": "1", "WXREACH_SEND_RATE_PER_SECOND": str(RATE)}
        settings = Settings(
            template=REPO_ROOT / "template.yaml",
            port=0,
            moto_port=0,
            data_dir=tmp_path_factory.mktemp("local-stack"),
            wechat_api_base=sandbox.url,
            api_key=secrets.token_urlsafe(12),
            echo_function_output=False,
            function_env={"TemplateSenderFunction": sender_env, "OperatorApiFunction": sender_env},
        )
        with LocalStack(settings) as stack:
            system = System(sandbox, stack)
            system.admin(
                "POST", "/accounts", {"appid": APPID, "secret": SECRET, "type": "service", "verified": True}
            )
            system.admin(
                "POST",
                f"/accounts/{APPID}/templates",
                {
                    "template_id": TEMPLATE,
                    "title": "订单支付成功",
                    "keywords": ["thing1", "character_string2"],
                },
            )
            registered = system.api.post(
                "/accounts",
                json={
                    "appid": APPID,
                    "original_id": "gh_e2e000000002",
                    "encryption_mode": "plaintext",
                    "secrets": {"app_secret": SECRET, "token": "e2eToken2026"},
                },
            )
            assert registered.status_code == 201, registered.text
            assert system.api.post(f"/accounts/{APPID}/templates/sync").status_code == 200
            yield system


def followers(system: System, prefix: str, count: int) -> list[str]:
    return system.admin("POST", f"/accounts/{APPID}/followers", {"count": count, "prefix": prefix})["openids"]


def test_single_send_is_sent_once_and_its_record_says_so(system: System) -> None:
    (openid,) = followers(system, "oOnce", 1)
    first = system.send(openid, "e2e-once", product="咖啡豆", no="A-1")
    assert first.status_code == 200, first.text
    message = first.json()["message"]
    assert message["state"] == "sent"
    assert system.send(openid, "e2e-once", product="咖啡豆", no="A-1").json()["message"]["state"] == "sent"
    (received,) = system.inbox(openid)
    assert str(received["msgid"]) == message["wechat_msgid"]
    assert received["data"] == {"thing1": "咖啡豆", "character_string2": "A-1"}


def test_wechat_processing_a_call_we_timed_out_on_is_not_a_second_delivery(system: System) -> None:
    """The nasty case: WeChat sent it, our client never heard back, SQS brings it back later."""
    (openid,) = followers(system, "oSlow", 1)
    system.admin(
        "POST",
        "/faults",
        {"path": "/cgi-bin/message/template/send", "timeout": {"rate": 1.0, "sleep_s": 2, "then": "process"}},
    )
    try:
        resp = system.send(openid, "e2e-slow", product="冷萃", no="S-1")
    finally:
        system.admin("POST", "/faults/clear", {})
    assert resp.status_code == 202, resp.text
    message = resp.json()["message"]
    assert message["state"] == "queued"
    final = system.wait_state(message["message_id"], "sent")
    assert final["state"] == "sent", final
    assert len(system.inbox(openid)) == 1


def test_system_busy_is_retried_through_the_queue_and_sent_once(system: System) -> None:
    (openid,) = followers(system, "oBusy", 1)
    system.admin("POST", "/faults", {"path": "/cgi-bin/message/template/send", "errcodes": {"-1": 1.0}})
    try:
        resp = system.send(openid, "e2e-busy", product="挂耳", no="B-1")
    finally:
        system.admin("POST", "/faults/clear", {})
    assert resp.status_code == 202, resp.text
    final = system.wait_state(resp.json()["message"]["message_id"], "sent")
    assert final["state"] == "sent" and final["attempts"] == 1
    assert len(system.inbox(openid)) == 1


def test_journey_action_on_the_bus_is_sent_once(system: System) -> None:
    (openid,) = followers(system, "oJourney", 1)
    events = boto3.client(
        "events",
        endpoint_url=system.stack.moto_url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    detail = {
        "action_id": f"welcome-{openid}",
        "appid": APPID,
        "openid": openid,
        "content": CONTENT,
        "params": {"product": "新人礼", "no": "W-1"},
    }
    for _ in range(2):
        events.put_events(
            Entries=[
                {
                    "EventBusName": system.stack.outputs["JourneyBusName"],
                    "Source": "e2e",
                    "DetailType": "SendTemplateMessage",
                    "Detail": json.dumps(detail),
                }
            ]
        )
    deadline = time.monotonic() + 30
    while not system.inbox(openid) and time.monotonic() < deadline:
        time.sleep(0.3)
    system.stack.wait_idle(timeout=30, ignore_delayed=True)
    origin = Origin(kind=OriginKind.JOURNEY, id=detail["action_id"])
    record = system.api.get(
        f"/accounts/{APPID}/messages/{message_id_for(APPID, Channel.TEMPLATE, origin, openid)}"
    )
    assert record.json()["state"] == "sent", record.text
    assert len(system.inbox(openid)) == 1


def test_rate_limit_holds_across_two_sender_processes(system: System, tmp_path: Path) -> None:
    openids = followers(system, "oRate", 18)
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": system.stack.moto_url,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
        "WXREACH_QUOTA_TABLE": system.stack.outputs["QuotaTableName"],
        "WXREACH_LEDGER_TABLE": system.stack.outputs["LedgerTableName"],
        "WXREACH_SECRETS_PREFIX": f"wxreach/{system.stack.settings.stack_name}/accounts/",
        "WXREACH_WECHAT_API_BASE": system.sandbox.url,
        "WXREACH_SEND_RATE_PER_SECOND": str(RATE),
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO_ROOT / "layers" / "wxreach"),
    }
    processes = []
    for n, half in enumerate((openids[:9], openids[9:])):
        batch = {
            "appid": APPID,
            "channel": "template",
            "origin": {"kind": "journey", "id": "e2e-rate", "batch_id": str(n)},
            "content": CONTENT,
            "recipients": [
                {"openid": o, "params": {"product": "豆", "no": f"R-{i}"}} for i, o in enumerate(half)
            ],
        }
        path = tmp_path / f"batch{n}.json"
        path.write_text(json.dumps(batch, ensure_ascii=False), encoding="utf-8")
        processes.append(
            subprocess.Popen(  # noqa: S603 - our own interpreter and script
                [sys.executable, str(Path(__file__).with_name("sender_process.py")), str(path)],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in processes]
    assert all(set(o["states"]) == {"sent"} and len(o["states"]) == 9 for o in outputs), outputs
    ddb = boto3.client(
        "dynamodb",
        endpoint_url=system.stack.moto_url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    windows = ddb.query(
        TableName=system.stack.outputs["QuotaTableName"],
        KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
        ExpressionAttributeValues={":pk": {"S": f"ACCT#{APPID}"}, ":prefix": {"S": "COUNTER#rate-template#"}},
    )["Items"]
    assert sum(int(item["count"]["N"]) for item in windows) >= len(openids)
    inboxes = [system.inbox(o) for o in openids]
    assert all(len(inbox) == 1 for inbox in inboxes)
    # WeChat's side of the clock: without one limit shared by both processes, 18 sends at 50 ms
    # take well under a second; at 3/s across both they fill six one-second windows, so (whole
    # seconds, a permit's send may land in the next second) they spread over at least 4 s.
    received = sorted(inbox[0]["received_at"] for inbox in inboxes)
    assert received[-1] - received[0] >= len(openids) / RATE - 2
