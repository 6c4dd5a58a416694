"""Broadcasts over HTTP, as an operator runs them: segments uploaded to the local stack's broadcast
bucket, the operator routes (estimate, publish now or at a time, cancel), the local Scheduler
firing a one-time schedule, the splitter, the mass and template senders, and the WeChat sandbox,
whose inboxes prove who received what and how many times."""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.sandbox.server import SandboxServer
from local.stack import LocalStack, Settings

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
APPID = "wxe2e0000000000007"
SECRET = "e2e0123456789abcdef0123456789ab7"
TEMPLATE = "TPL_E2E_SHIPPED"
CONTENT = {"template_id": TEMPLATE, "data": {"thing1": "{{product}}", "character_string2": "{{order.no}}"}}
FINAL = {"sent", "partially_sent", "failed", "cancelled"}
TEMPLATE_SEND = "/cgi-bin/message/template/send"
# The API accepts a time at least 60 s ahead; the margin covers the request itself.
SCHEDULE_LEAD_SECONDS = 70
TIMEOUT_SLEEP_SECONDS = 4


class System:
    def __init__(self, sandbox: SandboxServer, stack: LocalStack) -> None:
        self.sandbox, self.stack = sandbox, stack
        self.wechat = httpx.Client(base_url=sandbox.url, timeout=30, trust_env=False)
        self.api = httpx.Client(
            base_url=stack.api_url, timeout=60, headers={"x-api-key": stack.api_key}, trust_env=False
        )
        self.s3 = stack.client("s3")
        self.bucket = stack.outputs["BroadcastBucketName"]

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        resp = self.wechat.request(method, f"/admin{path}", json=body)
        assert resp.status_code < 300, resp.text
        return resp.json()

    def followers(self, prefix: str, count: int) -> list[str]:
        created = self.admin("POST", f"/accounts/{APPID}/followers", {"count": count, "prefix": prefix})
        return list(created["openids"])

    def inbox_counts(self, kind: str) -> Counter[str]:
        return Counter(self.admin("GET", f"/accounts/{APPID}/inbox-counts?kind={kind}")["counts"])

    def put_segment(self, key: str, rows: list[dict[str, Any]]) -> dict[str, str]:
        body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body.encode())
        return {"key": key, "format": "jsonl"}

    def route(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return self.api.request(method, f"/accounts/{APPID}/broadcasts{path}", json=body)

    def create(self, body: dict[str, Any]) -> str:
        resp = self.route("POST", "", body)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["id"])

    def estimate(self, bid: str) -> dict[str, Any]:
        resp = self.route("POST", f"/{bid}/estimate")
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def publish(self, bid: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = self.route("POST", f"/{bid}/publish", body or {})
        assert resp.status_code == 202, resp.text
        return dict(resp.json())

    def view(self, bid: str) -> dict[str, Any]:
        resp = self.route("GET", f"/{bid}")
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def wait_final(self, bid: str, timeout: float) -> dict[str, Any]:
        """GET the broadcast until its state is final (reading it settles it)."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.view(bid)
            if view["broadcast"]["state"] in FINAL or time.monotonic() > deadline:
                return view
            time.sleep(1)

    def wait_received(self, openids: list[str], kind: str, total: int, timeout: float) -> int:
        """Poll the sandbox (cheap) rather than the API: the sender and moto need the CPU."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.inbox_counts(kind)
            received = sum(counts[o] for o in openids)
            if received >= total or time.monotonic() > deadline:
                return received
            time.sleep(1)

    def mass_jobs(self, bid: str) -> list[dict[str, Any]]:
        jobs = self.admin("GET", f"/accounts/{APPID}/mass-jobs")["jobs"]
        return [j for j in jobs if str(j["clientmsgid"]).startswith(f"{bid}-")]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with SandboxServer("127.0.0.1", port=0, seed=17) as sandbox:
        # Injected timeouts sleep TIMEOUT_SLEEP_SECONDS: the sender must give up on them first.
        sender_env = {"WXREACH_WECHAT_READ_TIMEOUT_SECONDS": "3"}
        settings = Settings(
            template=REPO_ROOT / "template.yaml",
            port=0,
            moto_port=0,
            data_dir=tmp_path_factory.mktemp("local-stack"),
            wechat_api_base=sandbox.url,
            api_key=secrets.token_urlsafe(12),
            echo_function_output=False,
            # moto on a shared 2-core machine can take seconds per call; DynamoDB does not.
            env={"WXREACH_AWS_READ_TIMEOUT_SECONDS": "20"},
            function_env={"TemplateSenderFunction": sender_env},
        )
        with LocalStack(settings) as stack:
            system = System(sandbox, stack)
            # No webhook: the delivery callbacks of thousands of sends are not under test here.
            system.admin(
                "POST", "/accounts", {"appid": APPID, "secret": SECRET, "type": "service", "verified": True}
            )
            system.admin(
                "POST",
                f"/accounts/{APPID}/templates",
                {"template_id": TEMPLATE, "title": "发货通知", "keywords": ["thing1", "character_string2"]},
            )
            registered = system.api.post(
                "/accounts",
                json={
                    "appid": APPID,
                    "original_id": "gh_e2e000000007",
                    "encryption_mode": "plaintext",
                    "secrets": {"app_secret": SECRET, "token": "e2eToken2026"},
                },
            )
            assert registered.status_code == 201, registered.text
            assert system.api.post(f"/accounts/{APPID}/templates/sync").status_code == 200
            yield system
            system.wechat.close()
            system.api.close()


def mass_body(name: str, audience: dict[str, Any], text: str) -> dict[str, Any]:
    return {"name": name, "channel": "mass", "audience": audience, "mass": {"msgtype": "text", "text": text}}


def params(n: int) -> dict[str, Any]:
    return {"product": f"咖啡豆{n}号", "order": {"no": f"E2E-{n:05d}"}}


def test_scheduled_mass_broadcast_to_20000_followers_then_the_fifth_of_the_month_is_filtered(
    system: System,
) -> None:
    openids = system.followers("oMass", 20_000)
    segment = system.put_segment(f"segments/{APPID}/mass-20000.jsonl", [{"openid": o} for o in openids])
    bid = system.create(
        mass_body("Summer newsletter", {"kind": "segment", "segment": segment}, "夏季新品上市")
    )

    estimate = system.estimate(bid)
    assert (estimate["recipients"], estimate["excluded"]) == (20_000, {})
    assert estimate["needs_confirmation"] is True
    at = (datetime.now(UTC) + timedelta(seconds=SCHEDULE_LEAD_SECONDS)).replace(microsecond=0)
    unconfirmed = system.route("POST", f"/{bid}/publish", {"at": at.isoformat()})
    assert unconfirmed.status_code == 409 and unconfirmed.json()["error"] == "confirmation_required"
    scheduled = system.publish(bid, {"at": at.isoformat(), "confirm": 20_000})
    assert scheduled["state"] == "scheduled"

    scheduler = system.stack.client("scheduler")
    group = system.stack.resources["BroadcastScheduleGroup"].ref
    schedule = scheduler.get_schedule(Name=bid, GroupName=group)
    assert schedule["ScheduleExpression"] == f"at({at.strftime('%Y-%m-%dT%H:%M:%S')})"
    assert sum(system.inbox_counts("mass").values()) == 0  # nothing before its time

    view = system.wait_final(bid, timeout=SCHEDULE_LEAD_SECONDS + 120)
    assert view["broadcast"]["state"] == "sent", view
    counts = system.inbox_counts("mass")
    assert len(counts) == 20_000 and set(counts.values()) == {1}  # each follower once, nobody else
    assert set(counts) == set(openids)
    assert view["counts"]["recipients"] == 20_000
    assert view["counts"]["by_state"] == {"sent": 20_000}
    assert view["counts"]["excluded"] == {}
    jobs = system.mass_jobs(bid)
    assert sorted(j["total"] for j in jobs) == [10_000, 10_000]  # one WeChat job per batch
    with pytest.raises(scheduler.exceptions.ResourceNotFoundException):
        scheduler.get_schedule(Name=bid, GroupName=group)  # deleted once it fired
    trail = system.route("GET", f"/{bid}/audit").json()["entries"]
    assert [(e["action"], e["actor"]) for e in trail][-1] == ("publish", "scheduler")
    assert [e["action"] for e in trail] == ["create", "confirm", "schedule", "publish"]

    # Three more this month for 20 of them: they have had their four.
    saturated, others = openids[:20], openids[20:40]
    for n in range(3):
        inline = {"kind": "segment", "recipients": [{"openid": o} for o in saturated]}
        extra = system.create(mass_body(f"Flash sale {n}", inline, f"限时特惠第{n + 1}期"))
        system.publish(extra)
        assert system.wait_final(extra, timeout=60)["broadcast"]["state"] == "sent"
    assert [system.inbox_counts("mass")[o] for o in saturated] == [4] * 20

    audience = system.put_segment(
        f"segments/{APPID}/fifth.jsonl", [{"openid": o} for o in saturated + others]
    )
    fifth = system.create(mass_body("Fifth", {"kind": "segment", "segment": audience}, "本月第五期"))
    fifth_estimate = system.estimate(fifth)
    assert (fifth_estimate["recipients"], fifth_estimate["excluded"]) == (20, {"monthly_mass_quota": 20})
    system.publish(fifth)
    fifth_view = system.wait_final(fifth, timeout=60)
    assert fifth_view["broadcast"]["state"] == "sent", fifth_view
    assert fifth_view["counts"]["by_state"] == {"sent": 20}
    assert fifth_view["counts"]["excluded"] == {"monthly_mass_quota": 20}
    after = system.inbox_counts("mass")
    assert [after[o] for o in saturated] == [4] * 20  # unchanged
    assert [after[o] for o in others] == [2] * 20
    (job,) = system.mass_jobs(fifth)
    assert job["total"] == 20  # wxreach left them out; WeChat had nothing to filter
    assert sum(after.values()) == 20_000 + 3 * 20 + 20


def test_template_broadcast_with_parameters_to_2000_followers_through_faults(system: System) -> None:
    openids = system.followers("oTpl", 2_000)
    rows = [{"openid": o, "params": params(n)} for n, o in enumerate(openids)]
    segment = system.put_segment(f"segments/{APPID}/template-2000.jsonl", rows)
    bid = system.create(
        {
            "name": "Order shipped",
            "channel": "template",
            "audience": {"kind": "segment", "segment": segment},
            "content": CONTENT,
        }
    )
    assert system.estimate(bid)["recipients"] == 2_000
    # 10 % of the calls fail: 5 % system busy (-1), 5 % time out after WeChat processed them.
    system.admin(
        "POST",
        "/faults",
        {
            "path": TEMPLATE_SEND,
            "errcodes": {"-1": 0.05},
            "timeout": {"rate": 0.05, "sleep_s": TIMEOUT_SLEEP_SECONDS},
        },
    )
    try:
        system.publish(bid)
        system.wait_received(openids, "template", 2_000, timeout=900)
        system.stack.wait_idle(timeout=300, ignore_delayed=True)
        view = system.wait_final(bid, timeout=30)
        rule = next(r for r in system.admin("GET", "/faults")["rules"] if r["path"] == TEMPLATE_SEND)
    finally:
        system.admin("POST", "/faults/clear", {})
    assert view["broadcast"]["state"] == "sent", view
    injected = rule["injected"]
    assert injected.get("errcode:-1", 0) >= 50 and injected.get("timeout", 0) >= 50, injected

    counts = system.inbox_counts("template")
    assert [counts[o] for o in openids] == [1] * 2_000
    assert view["counts"]["recipients"] == 2_000
    assert view["counts"]["by_state"]["sent"] == 2_000
    assert sum(n for state, n in view["counts"]["by_state"].items() if state != "sent") == 0
    for n, openid in enumerate(openids):
        (received,) = system.admin("GET", f"/accounts/{APPID}/users/{openid}/inbox?kind=template")["messages"]
        assert received["data"] == {"thing1": f"咖啡豆{n}号", "character_string2": f"E2E-{n:05d}"}


def test_cancel_mid_send_reports_what_the_sandbox_received(system: System) -> None:
    openids = system.followers("oCancel", 600)
    recipients = [{"openid": o, "params": params(n)} for n, o in enumerate(openids)]
    bid = system.create(
        {
            "name": "Cancelled promo",
            "channel": "template",
            "audience": {"kind": "segment", "recipients": recipients},
            "content": CONTENT,
        }
    )
    # Slow WeChat down so the cancel lands mid-send: ~16 calls in flight, 1 s each.
    system.admin("POST", "/faults", {"path": TEMPLATE_SEND, "latency": {"kind": "fixed", "ms": 1000}})
    try:
        system.publish(bid)

        def received() -> int:
            counts = system.inbox_counts("template")
            return sum(counts[o] for o in openids)

        deadline = time.monotonic() + 60
        while received() < 40 and time.monotonic() < deadline:
            time.sleep(0.2)
        resp = system.route("POST", f"/{bid}/cancel")
        at_answer = received()
        assert resp.status_code == 200, resp.text
        system.stack.wait_idle(timeout=120, ignore_delayed=True)
    finally:
        system.admin("POST", "/faults/clear", {})
    cancelled = resp.json()
    report = cancelled["cancel"]
    assert cancelled["state"] == "cancelled"
    assert 40 <= report["sent"] < len(openids), report
    assert report["sent"] == at_answer == received()  # nothing arrived after the answer
    assert report["sent"] + report["failed"] + report["not_sent"] == len(openids)
    counts = system.inbox_counts("template")
    assert max(counts[o] for o in openids) == 1

    view = system.view(bid)
    assert view["broadcast"]["state"] == "cancelled"
    assert view["counts"]["by_state"]["sent"] == report["sent"]
    assert view["counts"]["by_reason"]["skipped"] == {"broadcast_cancelled": report["not_sent"]}


def test_cancel_after_timed_out_sends_never_reports_delivered_messages_as_not_sent(system: System) -> None:
    """Every call times out on our side after WeChat delivered it: those messages wait for their
    retry (maybe sent) when the cancel lands. WeChat has them, so they are not "not sent"."""
    openids = system.followers("oMaybe", 300)
    recipients = [{"openid": o, "params": params(n)} for n, o in enumerate(openids)]
    bid = system.create(
        {
            "name": "Cancelled after timeouts",
            "channel": "template",
            "audience": {"kind": "segment", "recipients": recipients},
            "content": CONTENT,
        }
    )
    timeout = {"rate": 1.0, "sleep_s": TIMEOUT_SLEEP_SECONDS, "then": "process"}
    system.admin("POST", "/faults", {"path": TEMPLATE_SEND, "timeout": timeout})
    try:
        system.publish(bid)
        system.wait_received(openids, "template", 20, timeout=60)
        resp = system.route("POST", f"/{bid}/cancel")
        assert resp.status_code == 200, resp.text
        system.stack.wait_idle(timeout=120, ignore_delayed=True)
        time.sleep(TIMEOUT_SLEEP_SECONDS + 1)  # calls still sleeping in WeChat land by now
    finally:
        system.admin("POST", "/faults/clear", {})
    report = resp.json()["cancel"]
    counts = system.inbox_counts("template")
    delivered = sum(counts[o] for o in openids)
    assert delivered >= 20 and max(counts[o] for o in openids) == 1
    assert report["sent"] >= delivered, (report, delivered)
    assert report["sent"] + report["failed"] + report["not_sent"] == len(openids)
    view = system.view(bid)
    skipped = view["counts"]["by_reason"].get("skipped", {}).get("broadcast_cancelled", 0)
    assert skipped <= len(openids) - delivered, (view["counts"], delivered)
