"""TokenBroker + DynamoTokenStore on moto's quota table (from template.yaml) + the WeChat sandbox
over HTTP: one stable_token fetch for many cold instances, recovery after a rotation without a
refresh storm, and the force-refresh counters."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import httpx
import pytest
from botocore.client import BaseClient

from local.sandbox import ManualClock, SandboxConfig, SandboxServer
from tests.support.aws import AwsWorld
from wxreach.aws import keys
from wxreach.aws.clients import client
from wxreach.aws.token_store import TTL_MARGIN_SECONDS, DynamoTokenStore
from wxreach.wechat.api import WeChatClient
from wxreach.wechat.errcodes import TokenInvalid, TokenUnavailable
from wxreach.wechat.tokens import TokenBroker, china_day

APPID = "wxtokens000001"
SECRET = "s3cr3t-token-broker"
STABLE = "/cgi-bin/stable_token"
PROBE = "/cgi-bin/template/get_all_private_template"


@pytest.fixture(autouse=True)
def _dynamodb_writes_are_atomic(monkeypatch: pytest.MonkeyPatch) -> None:
    # DynamoDB applies each conditional write atomically; moto's in-process backend does not
    # lock, so threads could interleave inside one UpdateItem. Serialise calls at the SDK boundary.
    lock = threading.Lock()
    original = BaseClient._make_api_call  # type: ignore[attr-defined]

    def serialised(self: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
        with lock:
            return original(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", serialised)


@pytest.fixture
def sandbox_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sandbox(sandbox_clock: ManualClock) -> Iterator[SandboxServer]:
    server = SandboxServer("127.0.0.1", 0, seed=1, clock=sandbox_clock, config=SandboxConfig()).start()
    yield server
    server.stop()


@pytest.fixture
def admin(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, timeout=10, trust_env=False) as http:
        response = http.post("/admin/accounts", json={"appid": APPID, "secret": SECRET, "type": "service"})
        assert response.status_code in (200, 201), response.text
        yield http


@pytest.fixture
def clock(sandbox_clock: ManualClock) -> Callable[[], float]:
    """The broker's clock: the sandbox's, plus real time so polling waits still end."""
    started = time.monotonic()
    return lambda: sandbox_clock.now() + (time.monotonic() - started)


@pytest.fixture
def table(world: AwsWorld) -> str:
    client("dynamodb")  # built once, as at a container's init, not by 20 racing threads
    return world.tables["QuotaTable"]


class Instance:
    """What one Lambda container holds: its own WeChatClient and TokenBroker."""

    def __init__(self, url: str, table: str, clock: Callable[[], float]) -> None:
        self.wechat = WeChatClient(url, connect_timeout=2, read_timeout=5)
        self.tokens = TokenBroker(
            store=DynamoTokenStore(table),
            client=self.wechat,
            secret_for=lambda appid: SECRET,
            refresh_ahead_seconds=300,
            lease_seconds=10,
            wait_seconds=5.0,
            poll_seconds=0.1,
            clock=clock,
        )


@pytest.fixture
def instances(
    sandbox: SandboxServer, table: str, clock: Callable[[], float]
) -> Iterator[Callable[[int], list[Instance]]]:
    made: list[Instance] = []

    def make(n: int) -> list[Instance]:
        fresh = [Instance(sandbox.url, table, clock) for _ in range(n)]
        made.extend(fresh)
        return fresh

    yield make
    for instance in made:
        instance.wechat.close()


def stable_calls(admin: httpx.Client) -> int:
    counters = admin.get("/admin/counters").json()["paths"]
    return int(counters.get(STABLE, {}).get("calls", 0))


def reset_counters(admin: httpx.Client) -> None:
    assert admin.post("/admin/counters/reset").status_code == 200


def token_item(table: str) -> dict[str, Any]:
    key = {"pk": {"S": keys.account_pk(APPID)}, "sk": {"S": keys.TOKEN_SK}}
    return boto3.client("dynamodb").get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]


def concurrently(n: int, work: Callable[[int], Any]) -> list[Any]:
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def test_twenty_cold_instances_fetch_the_token_once(
    admin: httpx.Client, instances: Callable[[int], list[Instance]], table: str, clock: Callable[[], float]
) -> None:
    cold = instances(20)
    tokens = concurrently(20, lambda i: cold[i].tokens.get(APPID))
    assert len(set(tokens)) == 1
    assert stable_calls(admin) == 1
    assert cold[0].wechat.get_all_private_template(tokens[0]) == []  # WeChat accepts it

    item = token_item(table)
    assert item["token"]["S"] == tokens[0]
    token_expires_at = float(item["token_expires_at"]["N"])
    assert token_expires_at == pytest.approx(clock() + 7200, abs=5)  # expires_in from WeChat
    assert float(item["refresh_at"]["N"]) == pytest.approx(token_expires_at - 300, abs=0.01)
    assert int(item["expires_at"]["N"]) == int(token_expires_at) + TTL_MARGIN_SECONDS  # TTL
    assert "lease_owner" not in item
    assert "lease_until" not in item

    # Warm: nothing more reaches WeChat, from old or new instances.
    concurrently(20, lambda i: cold[i].tokens.get(APPID))
    assert {i.tokens.get(APPID) for i in instances(5)} == {tokens[0]}
    assert stable_calls(admin) == 1


def test_a_token_rotated_on_wechats_side_recovers_with_one_fetch(
    admin: httpx.Client, instances: Callable[[int], list[Instance]], table: str
) -> None:
    warm = instances(10)
    failing = warm[0].tokens.get(APPID)
    assert {i.tokens.get(APPID) for i in warm} == {failing}
    # Someone force-refreshes on WeChat: the old token dies at once (§1.2).
    body = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET, "force_refresh": True}
    rotated = admin.post(STABLE, json=body).json()["access_token"]
    assert rotated != failing
    reset_counters(admin)

    def call_with_dead_token(i: int) -> list[dict[str, Any]]:
        instance = warm[i % 10]  # two threads per instance
        with pytest.raises(TokenInvalid):
            instance.wechat.get_all_private_template(failing)
        return instance.wechat.get_all_private_template(instance.tokens.after_invalid(APPID, failing))

    results = concurrently(20, call_with_dead_token)
    assert results == [[]] * 20
    assert stable_calls(admin) == 1  # one normal fetch, no force, no storm
    counters = admin.get("/admin/counters").json()["paths"][PROBE]
    assert counters["errcodes"]["40001"] == 20  # every caller saw the dead token once...
    assert counters["errcodes"]["0"] == 20  # ...and succeeded with the new one
    assert {i.tokens.get(APPID) for i in warm} == {rotated}
    item = token_item(table)
    assert item["token"]["S"] == rotated
    assert "force_count" not in item


def test_force_refresh_only_when_wechat_keeps_the_rejected_token_and_counted(
    admin: httpx.Client,
    instances: Callable[[int], list[Instance]],
    table: str,
    sandbox_clock: ManualClock,
    clock: Callable[[], float],
) -> None:
    first, second, third = instances(3)
    token = first.tokens.get(APPID)
    # WeChat says 40001 although stable_token still hands out this token: only force helps.
    fault = {"path": PROBE, "errcodes": {"40001": 1.0}}
    assert admin.post("/admin/faults", json=fault).status_code < 300
    reset_counters(admin)
    failing = first.tokens.get(APPID)
    with pytest.raises(TokenInvalid):
        first.wechat.get_all_private_template(failing)
    recovered = first.tokens.after_invalid(APPID, failing)
    assert recovered != token
    assert stable_calls(admin) == 2  # normal, then force_refresh=true
    item = token_item(table)
    assert (item["token"]["S"], item["force_count"]["N"], item["force_day"]["S"]) == (
        recovered,
        "1",
        china_day(clock()),
    )
    assert float(item["last_force_at"]["N"]) == pytest.approx(clock(), abs=5)
    admin.post("/admin/faults/clear", json={})
    assert first.wechat.get_all_private_template(recovered) == []

    # Another container hits a (faulted) 40001 on the new token within 30 s: the counter refuses.
    with pytest.raises(TokenUnavailable) as raised:
        second.tokens.after_invalid(APPID, recovered)
    assert raised.value.reason == "force_refresh_limited"
    assert stable_calls(admin) == 3  # its normal fetch only; no forced call
    assert token_item(table)["force_count"]["N"] == "1"
    assert "lease_owner" not in token_item(table)

    sandbox_clock.advance(30)  # both clocks: WeChat's own spacing applies too
    again = third.tokens.after_invalid(APPID, recovered)
    assert again not in (recovered, token)
    assert token_item(table)["force_count"]["N"] == "2"
    assert third.wechat.get_all_private_template(again) == []


def test_store_counts_force_refreshes_per_china_day(table: str, sandbox_clock: ManualClock) -> None:
    store = DynamoTokenStore(table)
    start = sandbox_clock.now()  # 2024-06-01 00:00 China time

    def force(now: float, day: str) -> bool:
        return store.record_force_refresh(APPID, now=now, day=day, max_per_day=20, min_interval=30.0)

    for n in range(20):
        now = start + 31 * n
        assert force(now, china_day(now))
    last = start + 31 * 19
    assert not force(last + 31, china_day(last + 31))
    assert not force(last + 10, china_day(last + 10))
    next_day = start + 24 * 3600
    assert china_day(next_day) != china_day(start)
    assert force(next_day, china_day(next_day))
    assert not force(next_day + 29, china_day(next_day))
    record = store.read(APPID)
    assert record is not None
    assert (record.force_day, record.force_count, record.last_force_at) == (china_day(next_day), 1, next_day)


def test_store_lease_is_exclusive_until_it_expires(table: str) -> None:
    store = DynamoTokenStore(table)
    assert store.read(APPID) is None
    leased = store.try_lease(APPID, "a", now=1000.0, until=1010.0)
    assert leased is not None and leased.lease_owner == "a"
    assert store.try_lease(APPID, "b", now=1005.0, until=1015.0) is None
    assert not store.save(APPID, "b", "TOKEN_B", expires_at=9000, refresh_at=8700)
    store.release(APPID, "b")  # not the holder: no effect
    assert store.try_lease(APPID, "c", now=1009.0, until=1019.0) is None
    taken = store.try_lease(APPID, "c", now=1010.0, until=1020.0)  # a's lease ran out
    assert taken is not None and taken.lease_owner == "c"
    assert not store.save(APPID, "a", "TOKEN_A", expires_at=9000, refresh_at=8700)
    assert store.save(APPID, "c", "TOKEN_C", expires_at=9000.5, refresh_at=8700.5)
    record = store.read(APPID)
    assert record is not None
    assert (record.token, record.expires_at, record.refresh_at, record.lease_owner) == (
        "TOKEN_C",
        9000.5,
        8700.5,
        None,
    )
    assert store.try_lease(APPID, "d", now=1011.0, until=1021.0) is not None  # released by save
