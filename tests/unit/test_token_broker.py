"""TokenBroker against an in-memory store and a scripted stable_token: cache, refresh-ahead,
lease, recovery after 40001, force-refresh limits."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from wxreach.observability import (
    STACK_METRICS_SERVICE,
    TOKEN_REFRESH_FAILED_METRIC,
    WECHAT_BUSY_METRIC,
    forget_secrets,
    logger,
    scrub,
)
from wxreach.wechat.api import WeChatClient
from wxreach.wechat.errcodes import AccountStopped, RetryLater, TokenUnavailable
from wxreach.wechat.tokens import StoredToken, TokenBroker, china_day

APPID = "wxapp0001"
SECRET = "app-secret-for-wxapp0001"
# 2024-06-01 12:00 China time
T0 = datetime(2024, 6, 1, 4, 0, tzinfo=UTC).timestamp()


class MemoryTokenStore:
    """The TokenLeaseStore port with DynamoDB's semantics: each method is one atomic step."""

    def __init__(self) -> None:
        self.records: dict[str, StoredToken] = {}
        self.lock = threading.Lock()
        self.reads = 0

    def read(self, appid: str) -> StoredToken | None:
        with self.lock:
            self.reads += 1
            return self.records.get(appid)

    def try_lease(self, appid: str, owner: str, *, now: float, until: float) -> StoredToken | None:
        with self.lock:
            record = self.records.get(appid, StoredToken())
            if record.lease_until is not None and record.lease_until > now:
                return None
            record = dataclasses.replace(record, lease_owner=owner, lease_until=until)
            self.records[appid] = record
            return record

    def save(self, appid: str, owner: str, token: str, *, expires_at: float, refresh_at: float) -> bool:
        with self.lock:
            record = self.records.get(appid)
            if record is None or record.lease_owner != owner:
                return False
            self.records[appid] = dataclasses.replace(
                record,
                token=token,
                expires_at=expires_at,
                refresh_at=refresh_at,
                lease_owner=None,
                lease_until=None,
            )
            return True

    def release(self, appid: str, owner: str) -> None:
        with self.lock:
            record = self.records.get(appid)
            if record is not None and record.lease_owner == owner:
                self.records[appid] = dataclasses.replace(record, lease_owner=None, lease_until=None)

    def record_force_refresh(
        self, appid: str, *, now: float, day: str, max_per_day: int, min_interval: float
    ) -> bool:
        with self.lock:
            record = self.records.get(appid, StoredToken())
            if record.last_force_at is not None and now - record.last_force_at < min_interval:
                return False
            count = record.force_count if record.force_day == day else 0
            if count >= max_per_day:
                return False
            self.records[appid] = dataclasses.replace(
                record, force_day=day, force_count=count + 1, last_force_at=now
            )
            return True

    def put_token(self, token: str, *, expires_at: float, refresh_at: float | None = None) -> None:
        with self.lock:
            record = self.records.get(APPID, StoredToken())
            self.records[APPID] = dataclasses.replace(
                record, token=token, expires_at=expires_at, refresh_at=refresh_at or expires_at - 300
            )


class FakeWeChat:
    """stable_token as WeChat answers it: the current token while valid; force rotates it."""

    def __init__(self, clock: Callable[[], float], *, expires_in: int = 7200, delay: float = 0.0) -> None:
        self.clock = clock
        self.expires_in = expires_in
        self.delay = delay
        self.calls: list[bool] = []  # force_refresh of each call
        self.lock = threading.Lock()
        self.serial = 0
        self.current: tuple[str, float] | None = None
        self.failure: Exception | None = None
        self.refuse_force = False

    def _new(self) -> tuple[str, float]:
        self.serial += 1
        return (f"ACCESS_TOKEN_{self.serial:04d}_" + "x" * 100, self.clock() + self.expires_in)

    def rotate(self) -> str:
        """Someone else rotated it on WeChat's side (a force refresh elsewhere)."""
        with self.lock:
            self.current = self._new()
            return self.current[0]

    def stable_token(self, appid: str, secret: str, *, force_refresh: bool = False) -> tuple[str, int]:
        assert (appid, secret) == (APPID, SECRET)
        with self.lock:
            self.calls.append(force_refresh)
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            if self.failure is not None:
                raise self.failure
            now = self.clock()
            if (
                (force_refresh and not self.refuse_force)
                or self.current is None
                or self.current[1] - now <= 300
            ):
                self.current = self._new()
            token, expires_at = self.current
            return token, int(expires_at - now)


class FakeClock:
    def __init__(self, start: float = T0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[], None] | None = None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep()

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def _fresh_secrets() -> Iterator[None]:
    forget_secrets()
    yield
    forget_secrets()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> MemoryTokenStore:
    return MemoryTokenStore()


@pytest.fixture
def wechat(clock: FakeClock) -> FakeWeChat:
    return FakeWeChat(clock)


def make_broker(
    store: MemoryTokenStore,
    wechat: FakeWeChat,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    **kwargs: float,
) -> TokenBroker:
    options: dict[str, float] = {"refresh_ahead_seconds": 300, "lease_seconds": 10, "wait_seconds": 5.0}
    options.update(kwargs)
    return TokenBroker(
        store=store,
        client=wechat,
        secret_for=lambda appid: SECRET,
        clock=clock,
        sleep=sleep,
        poll_seconds=0.1,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def broker(store: MemoryTokenStore, wechat: FakeWeChat, clock: FakeClock) -> TokenBroker:
    return make_broker(store, wechat, clock, clock.sleep)


# -- cache and refresh-ahead ------------------------------------------------------------------
def test_token_is_fetched_once_stored_and_cached_in_process(
    broker: TokenBroker, store: MemoryTokenStore, wechat: FakeWeChat, clock: FakeClock
) -> None:
    token = broker.get(APPID)
    reads = store.reads
    clock.advance(3600)
    assert broker.get(APPID) == token
    assert wechat.calls == [False]
    assert store.reads == reads  # served from memory
    record = store.records[APPID]
    assert (record.token, record.expires_at, record.lease_owner) == (token, T0 + 7200, None)


def test_another_container_reads_the_stored_token_without_fetching(
    broker: TokenBroker, store: MemoryTokenStore, wechat: FakeWeChat, clock: FakeClock
) -> None:
    token = broker.get(APPID)
    other = make_broker(store, wechat, clock, clock.sleep)
    assert other.get(APPID) == token
    assert wechat.calls == [False]


@pytest.mark.parametrize("expires_in", [7200, 1800])
def test_refreshes_ahead_of_expiry_from_expires_in(
    store: MemoryTokenStore, clock: FakeClock, expires_in: int
) -> None:
    wechat = FakeWeChat(clock, expires_in=expires_in)
    broker = make_broker(store, wechat, clock, clock.sleep, refresh_ahead_seconds=300)
    first = broker.get(APPID)
    clock.advance(expires_in - 301)
    assert broker.get(APPID) == first
    assert len(wechat.calls) == 1
    clock.advance(2)  # 299 s left: inside the refresh-ahead window
    second = broker.get(APPID)
    assert second != first
    assert wechat.calls == [False, False]
    assert store.records[APPID].expires_at == clock.now + expires_in


def test_refresh_ahead_beyond_wechats_rotation_point_does_not_refetch_on_every_call(
    store: MemoryTokenStore, wechat: FakeWeChat, clock: FakeClock
) -> None:
    broker = make_broker(store, wechat, clock, clock.sleep, refresh_ahead_seconds=900)
    broker.get(APPID)
    clock.advance(7200 - 600)  # due for refresh, but WeChat still answers the same token (600 s left)
    broker.get(APPID)
    for _ in range(20):
        clock.advance(1)
        broker.get(APPID)
    assert wechat.calls == [False, False]


def test_tokens_are_registered_as_secrets_and_never_logged(
    broker: TokenBroker, wechat: FakeWeChat, caplog: pytest.LogCaptureFixture
) -> None:
    previous = logger.log_level
    logger.setLevel("DEBUG")
    caplog.set_level(logging.DEBUG)
    try:
        token = broker.get(APPID)
        rotated = wechat.rotate()
        assert broker.after_invalid(APPID, token) == rotated
    finally:
        logger.setLevel(previous)
    assert scrub(f"t={token} r={rotated} s={SECRET}") == "t=*** r=*** s=***"
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "access token fetched" in logged
    assert token not in logged
    assert rotated not in logged
    assert SECRET not in logged


# -- the lease ---------------------------------------------------------------------------------
def test_a_cold_instance_waits_for_the_lease_holder_and_uses_its_token(
    broker: TokenBroker, store: MemoryTokenStore, wechat: FakeWeChat, clock: FakeClock
) -> None:
    assert store.try_lease(APPID, "other-instance", now=clock.now, until=clock.now + 10) is not None

    def holder_finishes() -> None:
        if len(clock.sleeps) == 3:
            store.save(
                APPID,
                "other-instance",
                "TOKEN_FROM_OTHER",
                expires_at=clock.now + 7000,
                refresh_at=clock.now + 6700,
            )

    clock.on_sleep = holder_finishes
    assert broker.get(APPID) == "TOKEN_FROM_OTHER"
    assert wechat.calls == []
    assert clock.sleeps == [0.1, 0.1, 0.1]


def test_waiting_is_bounded_by_wait_seconds(
    broker: TokenBroker, store: MemoryTokenStore, wechat: FakeWeChat, clock: FakeClock
) -> None:
    store.try_lease(APPID, "stuck-instance", now=clock.now, until=clock.now + 10)
    with pytest.raises(TokenUnavailable) as raised:
        broker.get(APPID)
    assert raised.value.reason == "token_wait_timeout"
    assert isinstance(raised.value, RetryLater)
    assert sum(clock.sleeps) == pytest.approx(5.0, abs=1e-3)
    assert wechat.calls == []


def test_an_expired_lease_is_taken_over(
    broker: TokenBroker, store: MemoryTokenStore, wechat: FakeWeChat, clock: FakeClock
) -> None:
    store.try_lease(APPID, "crashed-instance", now=clock.now - 20, until=clock.now - 10)
    assert broker.get(APPID).startswith("ACCESS_TOKEN_0001")
    assert wechat.calls == [False]


def test_a_still_valid_token_is_used_while_another_instance_refreshes_it(
    broker: TokenBroker, store: MemoryTokenStore, wechat: FakeWeChat, clock: FakeClock
) -> None:
    store.put_token("OLD_BUT_VALID", expires_at=clock.now + 200, refresh_at=clock.now - 100)
    store.try_lease(APPID, "refreshing-instance", now=clock.now, until=clock.now + 10)
    assert broker.get(APPID) == "OLD_BUT_VALID"
    assert clock.sleeps == []
    assert wechat.calls == []


def test_a_failed_fetch_releases_the_lease(
    broker: TokenBroker, store: MemoryTokenStore, wechat: FakeWeChat, clock: FakeClock
) -> None:
    wechat.failure = RetryLater(-1, "system busy rid: r", path="/cgi-bin/stable_token")
    with pytest.raises(RetryLater):
        broker.get(APPID)
    assert store.records[APPID].lease_owner is None
    wechat.failure = None
    assert broker.get(APPID)
    assert clock.sleeps == []  # no wait for a lease nobody holds


def test_concurrent_cold_instances_fetch_once(store: MemoryTokenStore) -> None:
    wechat = FakeWeChat(time.time, delay=0.05)
    brokers = [make_broker(store, wechat, wait_seconds=3.0) for _ in range(12)]
    barrier = threading.Barrier(len(brokers))

    def cold_start(broker: TokenBroker) -> str:
        barrier.wait()
        return broker.get(APPID)

    with ThreadPoolExecutor(len(brokers)) as pool:
        tokens = set(pool.map(cold_start, brokers))
    assert len(tokens) == 1
    assert wechat.calls == [False]


def test_threads_of_one_container_fetch_once(store: MemoryTokenStore) -> None:
    wechat = FakeWeChat(time.time, delay=0.05)
    broker = make_broker(store, wechat)
    with ThreadPoolExecutor(12) as pool:
        tokens = set(pool.map(lambda _: broker.get(APPID), range(48)))
    assert len(tokens) == 1
    assert wechat.calls == [False]


# -- after 40001 / 40014 / 42001 --------------------------------------------------------------
def test_after_invalid_uses_a_newer_stored_token_without_fetching(
    broker: TokenBroker, store: MemoryTokenStore, wechat: FakeWeChat, clock: FakeClock
) -> None:
    failing = broker.get(APPID)
    store.put_token("ROTATED_BY_ANOTHER_INSTANCE", expires_at=clock.now + 7000)
    assert broker.after_invalid(APPID, failing) == "ROTATED_BY_ANOTHER_INSTANCE"
    assert broker.get(APPID) == "ROTATED_BY_ANOTHER_INSTANCE"
    assert wechat.calls == [False]


def test_after_invalid_fetches_normally_when_wechat_already_has_a_new_token(
    broker: TokenBroker, store: MemoryTokenStore, wechat: FakeWeChat
) -> None:
    failing = broker.get(APPID)
    rotated = wechat.rotate()
    assert broker.after_invalid(APPID, failing) == rotated
    assert wechat.calls == [False, False]  # no force_refresh needed
    assert store.records[APPID].token == rotated
    assert store.records[APPID].force_count == 0


def test_after_invalid_forces_a_refresh_only_when_wechat_returns_the_failing_token(
    broker: TokenBroker, store: MemoryTokenStore, wechat: FakeWeChat, clock: FakeClock
) -> None:
    failing = broker.get(APPID)
    recovered = broker.after_invalid(APPID, failing)
    assert recovered != failing
    assert wechat.calls == [False, False, True]
    record = store.records[APPID]
    assert (record.token, record.force_day, record.force_count, record.last_force_at) == (
        recovered,
        "2024-06-01",
        1,
        clock.now,
    )
    assert broker.get(APPID) == recovered


def test_force_refresh_at_least_30_seconds_apart(
    broker: TokenBroker, store: MemoryTokenStore, wechat: FakeWeChat, clock: FakeClock
) -> None:
    first = broker.after_invalid(APPID, broker.get(APPID))
    clock.advance(29)
    with pytest.raises(TokenUnavailable) as raised:
        broker.after_invalid(APPID, first)
    assert raised.value.reason == "force_refresh_limited"
    assert store.records[APPID].force_count == 1
    assert store.records[APPID].lease_owner is None
    clock.advance(1)  # 30 s after the first: another container may force again
    other = make_broker(store, wechat, clock, clock.sleep)
    assert other.after_invalid(APPID, first) != first
    assert store.records[APPID].force_count == 2


def test_force_refresh_at_most_20_per_china_day(
    store: MemoryTokenStore, wechat: FakeWeChat, clock: FakeClock
) -> None:
    clock.now = datetime(2024, 6, 1, 15, 0, tzinfo=UTC).timestamp()  # 23:00 China time
    broker = make_broker(store, wechat, clock, clock.sleep)
    token = broker.get(APPID)
    for _ in range(20):
        token = broker.after_invalid(APPID, token)
        clock.advance(31)
    assert store.records[APPID].force_count == 20
    forced_calls = wechat.calls.count(True)
    with pytest.raises(TokenUnavailable) as raised:
        broker.after_invalid(APPID, token)
    assert raised.value.reason == "force_refresh_limited"
    assert wechat.calls.count(True) == forced_calls
    # 00:00 China time is 16:00 UTC: a new day, a new allowance
    clock.now = datetime(2024, 6, 1, 16, 0, tzinfo=UTC).timestamp()
    assert broker.after_invalid(APPID, token) != token
    assert (store.records[APPID].force_day, store.records[APPID].force_count) == ("2024-06-02", 1)


def test_china_day_turns_at_16_utc() -> None:
    assert china_day(datetime(2024, 6, 1, 15, 59, 59, tzinfo=UTC).timestamp()) == "2024-06-01"
    assert china_day(datetime(2024, 6, 1, 16, 0, 0, tzinfo=UTC).timestamp()) == "2024-06-02"


def test_force_refresh_that_wechat_declines_is_token_unavailable(
    broker: TokenBroker, store: MemoryTokenStore, wechat: FakeWeChat
) -> None:
    failing = broker.get(APPID)
    wechat.refuse_force = True  # WeChat's own limits: the call just does not refresh (§1.2)
    with pytest.raises(TokenUnavailable) as raised:
        broker.after_invalid(APPID, failing)
    assert raised.value.reason == "force_refresh_refused"
    assert store.records[APPID].token == failing  # nothing better to store
    assert store.records[APPID].lease_owner is None


def test_callers_with_a_token_that_cannot_be_replaced_fail_fast(
    broker: TokenBroker, store: MemoryTokenStore, wechat: FakeWeChat, clock: FakeClock
) -> None:
    first = broker.after_invalid(APPID, broker.get(APPID))
    calls = len(wechat.calls)
    with pytest.raises(TokenUnavailable):
        broker.after_invalid(APPID, first)  # within 30 s: limited
    with pytest.raises(TokenUnavailable):
        broker.after_invalid(APPID, first)  # remembered: no second trip to WeChat
    assert len(wechat.calls) == calls + 1


def test_concurrent_callers_with_the_same_failing_token_trigger_one_fetch(store: MemoryTokenStore) -> None:
    wechat = FakeWeChat(time.time, delay=0.05)
    brokers = [make_broker(store, wechat, wait_seconds=3.0) for _ in range(10)]
    failing = brokers[0].get(APPID)
    for broker in brokers[1:]:
        assert broker.get(APPID) == failing
    rotated = wechat.rotate()
    wechat.calls.clear()
    barrier = threading.Barrier(len(brokers) * 2)

    def recover(broker: TokenBroker) -> str:
        barrier.wait()
        return broker.after_invalid(APPID, failing)

    with ThreadPoolExecutor(len(brokers) * 2) as pool:
        recovered = set(pool.map(recover, brokers * 2))  # two threads per container
    assert recovered == {rotated}
    assert wechat.calls == [False]


# -- the TokenRefreshFailed metric (docs/operations.md) -----------------------------------------
def emitted(capsys: pytest.CaptureFixture[str]) -> dict[str, list[dict[str, Any]]]:
    """The EMF blobs printed since the last read, by metric name."""
    found: dict[str, list[dict[str, Any]]] = {}
    for line in capsys.readouterr().out.splitlines():
        if line.startswith('{"_aws"'):
            blob = json.loads(line)
            for metric in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                found.setdefault(metric["Name"], []).append(blob)
    return found


def wechat_answering(answer: dict[str, Any]) -> WeChatClient:
    return WeChatClient(
        "https://api.weixin.test",
        transport=httpx.MockTransport(lambda request: httpx.Response(200, json=answer)),
    )


@pytest.mark.parametrize(
    ("answer", "family", "reason", "busy"),
    [
        ({"errcode": 40125, "errmsg": "invalid appsecret"}, AccountStopped, "invalid_appsecret", 0),
        # A busy token endpoint is both: WeChat pushing back, and an account without a token.
        ({"errcode": -1, "errmsg": "system error"}, RetryLater, "system_busy", 1),
    ],
)
def test_a_failed_fetch_is_counted_with_its_appid_and_reason(
    capsys: pytest.CaptureFixture[str],
    store: MemoryTokenStore,
    clock: FakeClock,
    answer: dict[str, Any],
    family: type[Exception],
    reason: str,
    busy: int,
) -> None:
    broker = TokenBroker(
        store=store, client=wechat_answering(answer), secret_for=lambda appid: SECRET, clock=clock
    )
    with pytest.raises(family):
        broker.get(APPID)
    metrics = emitted(capsys)
    [blob] = metrics[TOKEN_REFRESH_FAILED_METRIC]
    assert (blob["appid"], blob["reason"], blob["after_invalid"]) == (APPID, reason, False)
    assert blob["service"] == STACK_METRICS_SERVICE
    assert SECRET not in json.dumps(blob)
    assert len(metrics.get(WECHAT_BUSY_METRIC, [])) == busy


def test_a_refused_force_refresh_counts_once_and_its_fast_failures_do_not(
    capsys: pytest.CaptureFixture[str], broker: TokenBroker
) -> None:
    first = broker.after_invalid(APPID, broker.get(APPID))
    assert TOKEN_REFRESH_FAILED_METRIC not in emitted(capsys)  # fetches that worked count nothing
    for _ in range(3):
        with pytest.raises(TokenUnavailable):
            broker.after_invalid(APPID, first)  # within 30 s: limited, then remembered
    [blob] = emitted(capsys)[TOKEN_REFRESH_FAILED_METRIC]
    assert (blob["reason"], blob["after_invalid"]) == ("force_refresh_limited", True)
