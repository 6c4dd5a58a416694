"""Follower sync end to end: moto for AWS, the WeChat sandbox's follower list over real HTTP.

The sandbox's follower list is the truth; the registry listing (every shard of the index) must
hold each of them exactly once, whatever interruptions happened on the way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from botocore.client import BaseClient

import follower_sync_handler
from tests.support import wechat
from tests.support.lambda_context import FakeLambdaContext
from tests.support.sending import SendingWorld, sending_world
from wxreach import container
from wxreach.aws import keys
from wxreach.reach.follower_sync import FollowerSyncService, SyncJob, SyncPhase, SyncState
from wxreach.reach.followers import FollowerRow
from wxreach.wechat.api import USER_GET_PATH, WeChatClient

APPID = wechat.APPID
# A Lambda run with time to spare: the handler stops 60 s before the end.
LONG_RUN_MS = 900_000


@contextmanager
def sync_world(monkeypatch: pytest.MonkeyPatch, *, followers: int) -> Iterator[SendingWorld]:
    with sending_world(monkeypatch, followers=followers) as world:
        monkeypatch.setenv("WXREACH_FOLLOWER_SYNC_QUEUE_URL", world.aws.queues["FollowerSyncQueue"])
        container.reset()
        yield world


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[SendingWorld]:
    with sync_world(monkeypatch, followers=5) as w:
        yield w


def sandbox_followers(world: SendingWorld) -> list[str]:
    return list(world.admin_call("GET", f"/accounts/{APPID}/followers?following=true")["openids"])


def registry() -> dict[str, FollowerRow]:
    """Every profile of the account, read shard by shard from the index (as audiences read it)."""
    store = container.followers()
    rows: dict[str, FollowerRow] = {}
    for shard in range(store.shard_count):
        after: str | None = None
        while True:
            page, after = store.list_shard(APPID, shard, start_after=after, limit=5000)
            for row in page:
                assert row.openid not in rows, "listed twice"
                assert keys.follower_shard(row.openid) == shard
                rows[row.openid] = row
            if after is None:
                break
    return rows


def sqs_event(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m{time.monotonic_ns()}",
                "receiptHandle": "r",
                "body": json.dumps(body),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:test-FollowerSyncQueue",
                "awsRegion": "us-east-1",
            }
        ]
    }


def drain(world: SendingWorld, *, remaining_ms: int = LONG_RUN_MS) -> int:
    """Delivers every follower-sync message (continuations included) to the function."""
    runs = 0
    while messages := world.aws.queue_messages("FollowerSyncQueue"):
        for body in messages:
            response = follower_sync_handler.lambda_handler(
                sqs_event(body), FakeLambdaContext(remaining_ms=remaining_ms)
            )
            assert response == {"batchItemFailures": []}
            runs += 1
    return runs


class PageHook(httpx.BaseTransport):
    """Real HTTP to the sandbox; counts user/get pages and can act right after page `at`
    arrived (before wxreach stores it)."""

    def __init__(self, at: int = 0, action: Callable[[list[str]], None] | None = None) -> None:
        self._inner = httpx.HTTPTransport()
        self.pages = 0
        self._at = at
        self._action = action

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if request.url.path == USER_GET_PATH:
            self.pages += 1
            if self.pages == self._at and self._action is not None:
                response.read()
                self._action(json.loads(response.content).get("data", {}).get("openid", []))
        return response


def sync_service(
    world: SendingWorld,
    *,
    transport: httpx.BaseTransport | None = None,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FollowerSyncService:
    """Another instance of the sync: our adapters, its own WeChat client and clocks."""
    base = container.follower_sync_service()
    return FollowerSyncService(
        jobs=base._jobs,
        queue=base._queue,
        followers=base._followers,
        tags=base._tags,
        wechat=WeChatClient(world.sandbox.url, transport=transport) if transport else container.wechat(),
        tokens=container.tokens(),
        clock=clock,
        now=now,
    )


def started(world: SendingWorld, **kwargs: Any) -> SyncJob:
    """A started job whose start message was taken off the queue (the test runs it itself)."""
    job = container.follower_sync_service().start(APPID, **kwargs)
    assert world.aws.queue_messages("FollowerSyncQueue") == [{"appid": APPID, "job_id": job.job_id}]
    return job


def webhook_unfollow(world: SendingWorld, openid: str) -> None:
    """The user unfollows on WeChat's side and wxreach's webhook records it."""
    world.admin_call("POST", f"/accounts/{APPID}/users/{openid}/unfollow")
    assert container.followers().set_following(APPID, openid, following=False, at=datetime.now(UTC))


# -- the big one ----------------------------------------------------------------------------------
def test_sync_of_50000_followers_interrupted_and_resumed_lists_everyone_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with sync_world(monkeypatch, followers=50_000) as world:
        unfollowed: list[str] = []

        def unfollow_one(page: list[str]) -> None:
            # After WeChat listed page 2 and before wxreach stored it: the webhook's newer
            # unfollow must survive the sync's write of that page.
            unfollowed.append(page[1234])
            webhook_unfollow(world, page[1234])

        hook = PageHook(at=2, action=unfollow_one)
        # The sweep after the list reads every shard once more (moto: about 1 s a shard at this
        # size); test_sync_respects_newer_events_... covers it.
        job = started(world, mark_unfollowed=False)
        # The time budget runs out once two pages are stored: the run stops and continues itself.
        first = sync_service(world, transport=hook, clock=lambda: 0.0 if hook.pages < 2 else 10.0).run(
            APPID, job.job_id, deadline=5.0
        )
        assert (first.state, first.phase, first.pages, first.seen) == (
            SyncState.RUNNING,
            SyncPhase.LIST,
            2,
            20_000,
        )
        assert first.lease_owner is None

        started_at = time.perf_counter()
        assert drain(world) == 1
        resumed_seconds = time.perf_counter() - started_at

        done = container.follower_sync_service().progress(APPID)
        assert done is not None
        assert (done.state, done.pages, done.seen, done.total) == (SyncState.DONE, 5, 50_000, 49_999)
        assert done.kept == 1  # the newer unfollow
        assert done.percent == 100.0

        rows = registry()
        following = {openid for openid, row in rows.items() if row.following}
        assert following == set(sandbox_followers(world))
        assert set(rows) == set(world.followers)  # nobody doubled (registry() checks), nobody missed
        assert rows[unfollowed[0]].following is False
        print(f"\n50 000-follower sync: the resumed run (3 pages) took {resumed_seconds:.1f} s")


# -- resumption and exactness ---------------------------------------------------------------------
def test_a_crash_between_storing_a_page_and_moving_the_cursor_counts_the_page_once(
    world: SendingWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = started(world)
    original = BaseClient._make_api_call
    crashes = {"left": 1}

    def crash_on_first_progress(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        item = params.get("Item", {})
        if (
            operation == "PutItem"
            and item.get("sk", {}).get("S") == keys.FOLLOWER_SYNC_SK
            and json.loads(item["job"]["S"])["pages"] == 1
            and crashes["left"]
        ):
            crashes["left"] -= 1
            raise SystemExit("instance died")  # not an Exception: nothing of ours may catch it
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", crash_on_first_progress)
    with pytest.raises(SystemExit):
        sync_service(world).run(APPID, job.job_id, deadline=time.monotonic() + 600)
    assert set(registry()) == set(world.followers)  # the page was stored, the cursor not moved

    stuck = container.follower_sync_service().progress(APPID)
    assert stuck is not None and (stuck.pages, stuck.seen, stuck.cursor) == (0, 0, "")
    # A duplicate delivery while the dead run's lease lasts does nothing and enqueues nothing.
    assert sync_service(world).run(APPID, job.job_id, deadline=time.monotonic() + 600) == stuck
    assert world.aws.queue_messages("FollowerSyncQueue") == []

    # SQS redelivers after the visibility timeout, long after the lease ran out.
    later = sync_service(world, now=lambda: datetime.now(UTC) + timedelta(minutes=20))
    done = later.run(APPID, job.job_id, deadline=time.monotonic() + 600)
    assert (done.state, done.pages, done.seen, done.total) == (SyncState.DONE, 1, 5, 5)
    assert {o for o, r in registry().items() if r.following} == set(world.followers)


def test_sync_respects_newer_events_and_marks_the_unlisted_as_not_following(world: SendingWorld) -> None:
    store = container.followers()
    stale_unfollow, newer_unfollow = world.followers[0], world.followers[1]
    missed, scanned, fresh = "o" + "G" * 27, "o" + "H" * 27, "o" + "R" * 27
    # Unfollowed a day ago per the webhook, but WeChat lists them now: they came back.
    store.set_following(APPID, stale_unfollow, following=False, at=datetime.now(UTC) - timedelta(days=1))
    # An unfollow recorded after WeChat's list was taken (clock skew, a late page write).
    store.set_following(APPID, newer_unfollow, following=False, at=datetime.now(UTC) + timedelta(hours=1))
    # Followed per old events, not in WeChat's list: an unfollow the webhook never received.
    store.set_following(APPID, missed, following=True, at=datetime.now(UTC) - timedelta(days=30))
    store.observe_following(APPID, scanned)  # a SCAN, no follow event ever
    # Followed a minute before the sync: WeChat's list may not show them yet; left alone.
    store.set_following(APPID, fresh, following=True, at=datetime.now(UTC) - timedelta(minutes=1))

    container.follower_sync_service().start(APPID)
    drain(world)

    job = container.follower_sync_service().progress(APPID)
    assert job is not None and job.state is SyncState.DONE
    assert (job.seen, job.kept, job.marked_unfollowed) == (5, 1, 2)
    rows = registry()
    assert rows[stale_unfollow].following is True
    assert rows[newer_unfollow].following is False
    assert rows[missed].following is False
    assert rows[scanned].following is False
    assert rows[fresh].following is True
    # No follow event was invented: the webhook's own history is what it was.
    follower = store.get(APPID, missed)
    assert follower is not None and follower.followed_at is not None and follower.unfollowed_at is None


def test_starting_while_a_job_runs_returns_it_and_a_finished_job_is_replaced(world: SendingWorld) -> None:
    service = container.follower_sync_service()
    first = service.start(APPID)
    again = service.start(APPID)
    assert again.job_id == first.job_id
    assert len(world.aws.queue_messages("FollowerSyncQueue")) == 1  # only the first start enqueued
    service.run(APPID, first.job_id, deadline=time.monotonic() + 600)
    second = service.start(APPID)
    assert second.job_id != first.job_id and second.seen == 0
    # The old job's message, delivered late, changes nothing.
    assert service.run(APPID, first.job_id, deadline=time.monotonic() + 600) == service.progress(APPID)


def test_a_stranded_running_job_is_enqueued_again_on_start(world: SendingWorld) -> None:
    job = started(world)
    later = sync_service(world, now=lambda: datetime.now(UTC) + timedelta(minutes=21))
    kicked = later.start(APPID)
    assert kicked.job_id == job.job_id
    assert world.aws.queue_messages("FollowerSyncQueue") == [{"appid": APPID, "job_id": job.job_id}]


def test_retry_later_answers_continue_after_a_delay_and_permanent_ones_fail_the_job(
    world: SendingWorld,
) -> None:
    job = started(world)
    world.faults({"path": USER_GET_PATH, "errcodes": {"-1": 1.0}})
    waiting = container.follower_sync_service().run(APPID, job.job_id, deadline=time.monotonic() + 600)
    assert (waiting.state, waiting.error, waiting.retries) == (SyncState.RUNNING, "system_busy", 1)
    assert world.aws.queue_messages("FollowerSyncQueue") == []  # delayed: not visible yet

    world.faults({"path": USER_GET_PATH, "errcodes": {"48001": 1.0}})
    failed = container.follower_sync_service().run(APPID, job.job_id, deadline=time.monotonic() + 600)
    assert (failed.state, failed.error) == (SyncState.FAILED, "api_unauthorized")
    assert failed.finished_at is not None
