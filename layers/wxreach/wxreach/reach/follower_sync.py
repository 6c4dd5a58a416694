"""Follower sync: WeChat's follower list (`/cgi-bin/user/get`, 10 000 a page) into the registry,
and tags (`/cgi-bin/tags/get`, `/cgi-bin/user/tag/get`). See docs/followers.md.

One job per account, resumable from its cursor. Each page is written before the cursor moves,
and the cursor moves only by a write conditional on the record's version, so a page done twice
(crash in between, duplicate delivery) changes nothing and is counted once. A newer follow or
unfollow event recorded by the webhook always wins over the list.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

from wxreach.errors import Conflict, NotFound, WxReachError
from wxreach.observability import logger
from wxreach.reach.followers import Tag
from wxreach.reach.ports import FollowerSyncJobs, FollowerSyncQueue, FollowerSyncWriter, TagCatalog
from wxreach.wechat.api import WeChatClient
from wxreach.wechat.errcodes import RetryLater, TokenInvalid, WeChatApiError
from wxreach.wechat.tokens import TokenBroker

_T = TypeVar("_T")

# A running job without progress for this long is taken as stranded (its queue message lost or
# dead-lettered): starting again re-enqueues it. Longer than the longest retry delay (900 s).
STALE_AFTER = timedelta(minutes=20)
# A run's lease outlives its deadline by this much, so a crashed run's lease is gone before SQS
# delivers its message again (the visibility timeout is far longer). No Lambda runs past 15 min.
LEASE_MARGIN = timedelta(seconds=60)
MAX_RUN = timedelta(minutes=15)
# After a complete list, profiles not seen are marked not following only when no follow, scan or
# message happened this close before the sync started (WeChat's list may lag a fresh follow).
EVIDENCE_MARGIN = timedelta(minutes=10)
SWEEP_PAGE = 5000
# Retry-later answers (busy, timeouts, no token) in a row before a job fails; the continuation
# waits RETRY_DELAY_SECONDS x 2^n (SQS delays stop at 900 s).
MAX_RETRIES = 8
RETRY_DELAY_SECONDS = 30
# sync_tags runs inside an operator request: it syncs membership only up to this many tag
# members in all (each member is one write) and within TAG_SYNC_SECONDS.
TAG_SYNC_MAX_MEMBERS = 20_000
TAG_SYNC_SECONDS = 20.0
TAG_LIST_PAGE = 2000


class SyncState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class SyncPhase(StrEnum):
    LIST = "list"  # paging user/get
    SWEEP = "sweep"  # marking profiles the list did not contain as not following


class SyncJob(BaseModel):
    model_config = ConfigDict(frozen=True)

    appid: str
    job_id: str
    state: SyncState = SyncState.RUNNING
    phase: SyncPhase = SyncPhase.LIST
    cursor: str = ""  # next_openid of the next user/get page
    pages: int = 0
    seen: int = 0
    total: int | None = None  # WeChat's follower count, from the latest page
    kept: int = 0  # profiles a newer follow/unfollow event kept as they were
    mark_unfollowed: bool = True
    sweep_shard: int = 0
    sweep_after: str | None = None
    marked_unfollowed: int = 0
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    error: str | None = None  # failed: why; running: the last retryable problem
    retries: int = 0  # retry-later answers since the last progress
    version: int = 0
    lease_owner: str | None = None
    lease_until: datetime | None = None

    @property
    def more(self) -> bool:
        return self.state is SyncState.RUNNING

    @property
    def percent(self) -> float | None:
        if self.state is SyncState.DONE:
            return 100.0
        if not self.total:
            return None
        # The sweep's share is small and unknown in advance: the list counts for 99 %.
        listed = min(99.0, 99.0 * self.seen / self.total)
        return round(listed if self.phase is SyncPhase.LIST else 99.0, 1)

    def leased_by_other(self, owner: str | None, now: datetime) -> bool:
        return (
            self.lease_owner is not None
            and self.lease_owner != owner
            and self.lease_until is not None
            and self.lease_until > now
        )


@dataclass(frozen=True)
class TagSyncResult:
    tags: list[Tag]
    stored: int
    removed: int
    members_synced: bool
    added: int = 0  # (follower, tag) pairs added to the registry
    untagged: int = 0  # (follower, tag) pairs removed
    skipped_reason: str | None = None


@dataclass
class _Run:
    job: SyncJob  # as this run last wrote it
    lost: bool = False  # another run moved the job: stop without writing


class FollowerSyncService:
    def __init__(
        self,
        *,
        jobs: FollowerSyncJobs,
        queue: FollowerSyncQueue | None,
        followers: FollowerSyncWriter,
        tags: TagCatalog,
        wechat: WeChatClient,
        tokens: TokenBroker,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        tag_sync_max_members: int = TAG_SYNC_MAX_MEMBERS,
    ) -> None:
        self._jobs = jobs
        self._queue = queue
        self._followers = followers
        self._tags = tags
        self._wechat = wechat
        self._tokens = tokens
        self._clock = clock
        self._now = now
        self._tag_sync_max_members = tag_sync_max_members

    # -- follower sync -------------------------------------------------------------------------
    def start(self, appid: str, *, mark_unfollowed: bool = True) -> SyncJob:
        """A new job, or the one already running (re-enqueued when it looks stranded)."""
        for _ in range(3):
            current = self._jobs.get(appid)
            now = self._now()
            if current is not None and current.state is SyncState.RUNNING:
                if now - current.updated_at < STALE_AFTER:
                    return current
                kicked = current.model_copy(update={"updated_at": now, "version": current.version + 1})
                if self._jobs.put(kicked, replaces=current):
                    logger.warning("follower sync looked stranded; enqueued again", appid=appid)
                    self._enqueue(kicked)
                    return kicked
                continue
            job = SyncJob(
                appid=appid,
                job_id=uuid.uuid4().hex,
                mark_unfollowed=mark_unfollowed,
                started_at=now,
                updated_at=now,
            )
            if not self._jobs.put(job, replaces=current):
                continue  # another start won: answer with its job
            try:
                self._enqueue(job)
            except Exception:
                # Without its message nothing would ever run it: do not leave it "running".
                failed = job.model_copy(
                    update={"state": SyncState.FAILED, "error": "enqueue_failed", "version": job.version + 1}
                )
                self._jobs.put(failed, replaces=job)
                raise
            logger.info("follower sync started", appid=appid, job_id=job.job_id)
            return job
        raise Conflict("the follower sync record keeps changing; try again", reason="sync_busy")

    def progress(self, appid: str) -> SyncJob | None:
        return self._jobs.get(appid)

    def run(self, appid: str, job_id: str, *, deadline: float) -> SyncJob:
        """Processes pages until done or `deadline` (this service's clock, time.monotonic() by
        default); with work left, enqueues its own continuation. A message for another job, a
        finished job, or a job another run holds changes nothing."""
        job = self._jobs.get(appid)
        if job is None:
            raise NotFound(f"no follower sync for {appid}", reason="sync_not_found")
        owner = uuid.uuid4().hex
        now = self._now()
        if job.job_id != job_id or not job.more or job.leased_by_other(owner, now):
            return job
        run_for = min(timedelta(seconds=max(0.0, deadline - self._clock())), MAX_RUN)
        lease_until = now + run_for + LEASE_MARGIN
        leased = job.model_copy(
            update={
                "lease_owner": owner,
                "lease_until": lease_until,
                "updated_at": now,
                "version": job.version + 1,
            }
        )
        if not self._jobs.put(leased, replaces=job):
            return self._jobs.get(appid) or job  # another run took it a moment ago
        run = _Run(job=leased)
        try:
            while run.job.more and not run.lost and self._clock() < deadline:
                if run.job.phase is SyncPhase.LIST:
                    self._list_page(run)
                else:
                    self._sweep_page(run)
        except RetryLater as exc:
            # Temporary (busy, timeout, no token): a delayed continuation tries again.
            retries = run.job.retries + 1
            if retries > MAX_RETRIES:
                logger.warning("follower sync gave up", appid=appid, job_id=job_id, reason=exc.reason)
                self._save(
                    run, state=SyncState.FAILED, error=exc.reason, finished_at=self._now(), release=True
                )
                return run.job
            self._save(run, error=exc.reason, retries=retries, release=True)
            if not run.lost:
                self._enqueue(run.job, delay_seconds=min(900, RETRY_DELAY_SECONDS * 2 ** (retries - 1)))
            return run.job
        except (WeChatApiError, WxReachError) as exc:
            if isinstance(exc, WxReachError) and exc.status >= 500:
                self._save(run, error=exc.reason, release=True)
                raise
            # 48001 (no permission), a refused cursor, a stopped account, no such account:
            # retrying cannot help.
            logger.warning("follower sync failed", appid=appid, job_id=job_id, reason=exc.reason)
            self._save(run, state=SyncState.FAILED, error=exc.reason, finished_at=self._now(), release=True)
            return run.job
        if run.lost:
            return self._jobs.get(appid) or run.job
        if run.job.more:
            self._save(run, release=True)
            if not run.lost:
                self._enqueue(run.job)
        logger.info(
            "follower sync run ended",
            appid=appid,
            job_id=job_id,
            state=str(run.job.state),
            phase=str(run.job.phase),
            pages=run.job.pages,
            seen=run.job.seen,
            total=run.job.total,
        )
        return run.job

    def _list_page(self, run: _Run) -> None:
        job = run.job
        fetched_at = self._now()
        total, openids, next_openid = self._with_token(
            job.appid, lambda token: self._wechat.user_get(token, job.cursor)
        )
        kept = self._followers.record_synced(job.appid, openids, fetched_at=fetched_at) if openids else 0
        update: dict[str, object] = {"total": total, "error": None, "retries": 0}
        if openids:
            update.update(pages=job.pages + 1, seen=job.seen + len(openids), kept=job.kept + kept)
        if not openids or not next_openid:
            if job.mark_unfollowed:
                update.update(phase=SyncPhase.SWEEP, sweep_shard=0, sweep_after=None)
            else:
                update.update(state=SyncState.DONE, finished_at=self._now())
        else:
            update["cursor"] = next_openid
        self._save(run, release="finished_at" in update, **update)

    def _sweep_page(self, run: _Run) -> None:
        job = run.job
        marked, after = self._followers.mark_unseen(
            job.appid,
            job.sweep_shard,
            start_after=job.sweep_after,
            limit=SWEEP_PAGE,
            synced_before=job.started_at,
            evidence_before=job.started_at - EVIDENCE_MARGIN,
        )
        update: dict[str, object] = {"marked_unfollowed": job.marked_unfollowed + marked}
        if after is not None:
            update["sweep_after"] = after
        elif job.sweep_shard + 1 < self._followers.shard_count:
            update.update(sweep_shard=job.sweep_shard + 1, sweep_after=None)
        else:
            update.update(state=SyncState.DONE, finished_at=self._now())
        self._save(run, release="finished_at" in update, **update)

    def _save(self, run: _Run, *, release: bool = False, **update: object) -> None:
        """Commits progress, conditional on the version this run last wrote; a lost race
        (another run moved the job) stops this run without touching the record."""
        if run.lost:
            return
        changes = {**update, "updated_at": self._now(), "version": run.job.version + 1}
        if release:
            changes.update(lease_owner=None, lease_until=None)
        saved = run.job.model_copy(update=changes)
        if self._jobs.put(saved, replaces=run.job):
            run.job = saved
        else:
            run.lost = True
            logger.warning("follower sync moved by another run", appid=run.job.appid, job_id=run.job.job_id)

    def _enqueue(self, job: SyncJob, *, delay_seconds: int = 0) -> None:
        if self._queue is None:
            logger.warning("no follower sync queue configured; the job waits", appid=job.appid)
            return
        self._queue.enqueue(job.appid, job.job_id, delay_seconds=delay_seconds)

    def _with_token(self, appid: str, call: Callable[[str], _T]) -> _T:
        token = self._tokens.get(appid)
        try:
            return call(token)
        except TokenInvalid:
            fresh = self._tokens.after_invalid(appid, token)
        try:
            return call(fresh)
        except TokenInvalid as again:
            raise RetryLater(again.errcode, again.errmsg, path=again.path, reason="token_rotating") from again

    # -- tags ----------------------------------------------------------------------------------
    def tags(self, appid: str) -> list[Tag]:
        return self._tags.tags(appid)

    def sync_tags(self, appid: str) -> TagSyncResult:
        """Stores the account's tags (vanished ones removed) and, when the members fit the
        synchronous bounds, makes each registry profile's `tags` equal WeChat's membership."""
        started = self._clock()
        raw = self._with_token(appid, self._wechat.tags_get)
        tags = [
            Tag(id=int(item["id"]), name=str(item.get("name", "")), count=int(item.get("count", 0) or 0))
            for item in raw
            if isinstance(item.get("id"), int)
        ]
        stored, removed = self._tags.replace_tags(appid, tags)
        result = TagSyncResult(tags=tags, stored=stored, removed=removed, members_synced=False)
        member_count = sum(tag.count for tag in tags)
        if member_count > self._tag_sync_max_members:
            logger.info("tag membership too large to sync in a request", appid=appid, members=member_count)
            return replace(result, skipped_reason="too_many_members")
        deadline = started + TAG_SYNC_SECONDS
        wanted: dict[int, set[str]] = {}
        for tag in tags:
            members = self._tag_members(appid, tag.id, deadline=deadline)
            if members is None:
                return replace(result, skipped_reason="out_of_time")
            wanted[tag.id] = members
        current = self._tagged(appid)
        if self._clock() > deadline:
            return replace(result, skipped_reason="out_of_time")
        added = untagged = 0
        for tag_id in sorted(set(wanted) | set(current)):
            add = sorted(wanted.get(tag_id, set()) - current.get(tag_id, set()))
            drop = sorted(current.get(tag_id, set()) - wanted.get(tag_id, set()))
            if add:
                self._followers.add_tag(appid, tag_id, add)
            if drop:
                self._followers.remove_tag(appid, tag_id, drop)
            added, untagged = added + len(add), untagged + len(drop)
        logger.info("tags synced", appid=appid, tags=len(tags), added=added, untagged=untagged)
        return replace(result, members_synced=True, added=added, untagged=untagged)

    def _tag_members(self, appid: str, tag_id: int, *, deadline: float) -> set[str] | None:
        """Every member of the tag on WeChat; None when the deadline came first."""
        members: set[str] = set()
        cursor = ""
        while self._clock() <= deadline:
            _, openids, next_openid = self._with_token(
                appid, partial(self._wechat.user_tag_get, tag_id=tag_id, next_openid=cursor)
            )
            members.update(openids)
            if not openids or not next_openid:
                return members
            cursor = next_openid
        return None

    def _tagged(self, appid: str) -> dict[int, set[str]]:
        """Registry membership by tag id, every shard read in parallel."""

        def read(shard: int) -> list[tuple[str, frozenset[int]]]:
            rows: list[tuple[str, frozenset[int]]] = []
            after: str | None = None
            while True:
                page, after = self._followers.list_tagged(
                    appid, shard, start_after=after, limit=TAG_LIST_PAGE
                )
                rows += [(row.openid, row.tags) for row in page]
                if after is None:
                    return rows

        current: dict[int, set[str]] = {}
        with ThreadPoolExecutor(max_workers=8) as pool:
            for rows in pool.map(read, range(self._followers.shard_count)):
                for openid, tag_ids in rows:
                    for tag_id in tag_ids:
                        current.setdefault(tag_id, set()).add(openid)
        return current
