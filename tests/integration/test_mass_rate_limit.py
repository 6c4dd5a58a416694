"""At most 60 mass calls per account in any rolling minute, across two sender processes.

Two processes (spawned, each with its own container) send the batches of one broadcast against
one moto server (a child process: the shared DynamoDB) and one WeChat sandbox. Both read the
sandbox's manual clock, which this test moves only while no call is being made, so a minute
passes only when the limiter holds every sender back. The sandbox enforces WeChat's own rolling
60-per-minute rule (45011) and stamps every accepted job with its clock: the verdict is WeChat's.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from local.sandbox import ManualClock, SandboxServer
from local.stack.motoproc import MotoProcess
from tests.support import wechat
from tests.support.template import create_tables, load_template
from wxreach import container
from wxreach.aws import keys
from wxreach.reach.accounts import AccountRegistration
from wxreach.reach.mass_sending import MassBatch, MassBatchRef
from wxreach.wechat.api import MASS_SEND_PATH

BROADCAST = "b000000000000000000ra"
BATCHES = 90  # more than a minute's worth, under the sandbox's 100 jobs per day
LIMIT = 60


def _sender(numbers: list[int], sandbox_url: str, out: str) -> None:
    """One mass-sender instance: the real container, the sandbox's clock; a batch told to come
    back later is simply tried again (what the queue's redelivery does)."""
    from wxreach.aws.send_guards import DynamoSendGuards
    from wxreach.reach.mass_sending import MassSendPolicy, MassSendService
    from wxreach.settings import get_settings

    http = httpx.Client(base_url=sandbox_url, timeout=10, trust_env=False)

    def sandbox_now() -> float:
        return float(http.get("/admin/clock").json()["now"])

    service = MassSendService(
        store=container.mass_batch_store(),
        guards=DynamoSendGuards(get_settings().quota_table),
        wechat=container.wechat(),
        tokens=container.tokens(),
        policy=MassSendPolicy(permit_wait_seconds=120, permit_poll_seconds=0.05),
        clock=sandbox_now,
    )
    pending, states = deque(numbers), {}
    give_up = time.monotonic() + 150
    while pending and time.monotonic() < give_up:
        number = pending.popleft()
        result = service.send(MassBatchRef(appid=wechat.APPID, broadcast_id=BROADCAST, batch=number))
        if result.retry_after is not None or result.batch is None:
            pending.append(number)
            time.sleep(0.05)
            continue
        states[number] = str(result.batch.state)
    Path(out).write_text(json.dumps(states), encoding="utf-8")


def _max_in_any_window(times: list[float], window: float = 60.0) -> int:
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t < start + window) for i, start in enumerate(times))


@pytest.fixture
def shared_aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    moto = MotoProcess("127.0.0.1", 0, log_path=tmp_path / "moto.log")
    moto.launch()
    try:
        url = moto.wait_ready()
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        tables = create_tables(load_template())
        monkeypatch.setenv("WXREACH_QUOTA_TABLE", tables["QuotaTable"])
        monkeypatch.setenv("WXREACH_LEDGER_TABLE", tables["LedgerTable"])
        monkeypatch.setenv("WXREACH_SECRETS_PREFIX", "wxreach/test-rate/accounts/")
        monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
        container.reset()
        yield tables
    finally:
        container.reset()
        moto.stop()


def test_sixty_mass_calls_per_rolling_minute_across_two_sender_processes(
    shared_aws: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SandboxServer("127.0.0.1", 0, seed=3, clock=ManualClock()) as sandbox:
        admin = httpx.Client(base_url=sandbox.url, timeout=10, trust_env=False)
        account = {"appid": wechat.APPID, "secret": wechat.APP_SECRET, "type": "service", "verified": True}
        assert admin.post("/admin/accounts", json=account).status_code < 300
        followers = admin.post(
            f"/admin/accounts/{wechat.APPID}/followers", json={"count": 2 * BATCHES, "prefix": "oRate"}
        ).json()["openids"]
        monkeypatch.setenv("WXREACH_WECHAT_API_BASE", sandbox.url)
        container.reset()
        container.register_account(
            AccountRegistration.model_validate(
                {
                    "appid": wechat.APPID,
                    "original_id": wechat.ORIGINAL_ID,
                    "encryption_mode": "plaintext",
                    "secrets": {"app_secret": wechat.APP_SECRET, "token": wechat.TOKEN},
                }
            )
        )
        boto3.client("dynamodb").put_item(
            TableName=shared_aws["LedgerTable"],
            Item={
                "pk": {"S": keys.broadcast_pk(BROADCAST)},
                "sk": {"S": keys.BROADCAST_META_SK},
                "appid": {"S": wechat.APPID},
                "channel": {"S": "mass"},
                "state": {"S": "sending"},
                "mass_body": {"S": json.dumps({"msgtype": "text", "text": {"content": "限时"}})},
            },
        )
        container.mass_batch_store().put_batches(
            [
                MassBatch(
                    broadcast_id=BROADCAST,
                    appid=wechat.APPID,
                    number=n,
                    openids=followers[2 * n : 2 * n + 2],
                )
                for n in range(BATCHES)
            ],
            now=datetime.now(UTC),
        )

        spawn = multiprocessing.get_context("spawn")
        outs = [tmp_path / f"sender{i}.json" for i in range(2)]
        processes = [
            spawn.Process(target=_sender, args=(list(range(i, BATCHES, 2)), sandbox.url, str(out)))
            for i, out in enumerate(outs)
        ]
        for process in processes:
            process.start()
        # WeChat's minute moves on only while nobody is calling: the senders are held back.
        last, give_up = -1, time.monotonic() + 180
        while any(p.is_alive() for p in processes) and time.monotonic() < give_up:
            time.sleep(0.3)
            made = admin.get("/admin/counters").json()["paths"].get(MASS_SEND_PATH, {}).get("calls", 0)
            if made == last:
                admin.post("/admin/clock/advance", json={"seconds": 5})
            last = made
        for process in processes:
            process.join(10)
            assert process.exitcode == 0

        states = [json.loads(out.read_text(encoding="utf-8")) for out in outs]
        assert all(len(s) == BATCHES // 2 and set(s.values()) == {"sent"} for s in states)
        counted = admin.get("/admin/counters").json()["paths"][MASS_SEND_PATH]
        # Not one 45011: WeChat's rolling minute never saw a 61st call. On a loaded machine a
        # call may time out after WeChat took it: its retry is answered 45065/45066, never sent.
        errcodes = counted["errcodes"]
        assert errcodes["0"] == BATCHES and set(errcodes) <= {"0", "45065", "45066"}, errcodes
        assert counted["calls"] == sum(errcodes.values())
        created = [
            float(j["created_at"])
            for j in admin.get(f"/admin/accounts/{wechat.APPID}/mass-jobs").json()["jobs"]
        ]
        assert len(created) == BATCHES
        assert _max_in_any_window(created) == LIMIT  # the limit was reached, never passed
        assert max(created) - min(created) >= 60  # the last 30 waited for the window to move
        counts = admin.get(f"/admin/accounts/{wechat.APPID}/inbox-counts?kind=mass").json()["counts"]
        assert len(counts) == 2 * BATCHES and set(counts.values()) == {1}
        admin.close()
