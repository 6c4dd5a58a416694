"""The splitter: a published broadcast's audience streamed into send batches, from a checkpoint.

Exactly once across crashes and continuations:
- template / subscribe: a recipient's message id depends on the broadcast and the openid only,
  so a page emitted twice (crash after SendMessageBatch, before the checkpoint) names the same
  messages and the sender sends each once. Counts move with the cursor in one conditional write.
- mass: a batch item (its openids) and the checkpoint that covers it are one transaction; queue
  messages follow, and a resume re-enqueues every batch past `enqueued` (the sender claims a
  batch once; its clientmsgid makes even a double claim a 45065).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from wxreach.observability import logger
from wxreach.reach.accounts import Account
from wxreach.reach.audiences import AudienceReader, Candidate, Decision, Rules
from wxreach.reach.broadcasts import AudienceKind, Broadcast, BroadcastChannel, BroadcastState
from wxreach.reach.messages import MAX_BATCH_RECIPIENTS, MessageBatch, Origin, OriginKind, Recipient
from wxreach.reach.templates import Template
from wxreach.wechat.keywords import Channel

MAX_MASS_OPENIDS = 10_000
MIN_MASS_OPENIDS = 2
# Template/subscribe recipients per send-queue record: sent concurrently by one sender call.
TEMPLATE_GROUP = 50
# SQS's record limit is 256 KiB; recipients' params make records grow, so groups are also cut by size.
MAX_RECORD_BYTES = 200 * 1024  # one record; a request of several is cut at 250 KiB
MASS_DAILY_COUNTER = "mass-recipients"


@dataclass
class Checkpoint:
    version: int = 0
    cursor: dict[str, Any] | None = None
    started: bool = False
    done: bool = False
    recipients: int = 0
    batches: int = 0  # the next batch number
    enqueued: int = 0  # mass: batches below this number have a queue message
    excluded: Counter[str] = field(default_factory=Counter)
    paused_until: datetime | None = None
    runs: int = 0


@dataclass(frozen=True)
class MassBatchSpec:
    number: int
    openids: list[str] | None = None  # /mass/send
    to_all: bool = False  # /mass/sendall
    tag_id: int | None = None

    @property
    def recipients(self) -> int:
        return len(self.openids) if self.openids is not None else 0


class SplitStore(Protocol):
    def state(self, broadcast_id: str) -> BroadcastState | None: ...
    def checkpoint(self, broadcast_id: str) -> Checkpoint: ...
    def commit(self, broadcast_id: str, checkpoint: Checkpoint) -> bool:
        """Write `checkpoint` if the stored one still has version checkpoint.version - 1."""
        ...

    def commit_with_batch(
        self, broadcast: Broadcast, checkpoint: Checkpoint, batch: MassBatchSpec, *, recipients: int
    ) -> bool: ...


class SplitOutput(Protocol):
    def send_batches(self, batches: list[MessageBatch]) -> None: ...
    def enqueue_mass(self, appid: str, broadcast_id: str, numbers: list[int]) -> None: ...


class DailyReservation(Protocol):
    def reserve_many(self, appid: str, name: str, *, day: str, count: int, cap: int) -> bool: ...


class Rescheduler(Protocol):
    def resume_at(self, broadcast_id: str, appid: str, at: datetime) -> None: ...


@dataclass
class SplitResult:
    done: bool
    checkpoint: Checkpoint
    stopped: str | None = None  # cancelled / paused / budget / superseded


def broadcast_batch(broadcast: Broadcast, channel: Channel, recipients: list[Recipient]) -> MessageBatch:
    assert broadcast.content is not None
    # No batch id: a recipient's message id depends only on the broadcast, whichever batch
    # (or re-emitted page) carries it.
    return MessageBatch(
        appid=broadcast.appid,
        channel=channel,
        origin=Origin(kind=OriginKind.BROADCAST, id=broadcast.id),
        content=broadcast.content,
        recipients=recipients,
    )


class Splitter:
    def __init__(
        self,
        *,
        store: SplitStore,
        reader: AudienceReader,
        output: SplitOutput,
        daily: DailyReservation,
        rescheduler: Rescheduler,
        mass_daily_cap: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._reader = reader
        self._output = output
        self._daily = daily
        self._rescheduler = rescheduler
        self._mass_daily_cap = mass_daily_cap
        self._clock = clock

    def run(
        self,
        broadcast: Broadcast,
        account: Account,
        *,
        template: Template | None,
        rules: Rules,
        deadline: float,
        day: Callable[[], str],
        next_day: Callable[[], datetime],
    ) -> SplitResult:
        cp = self._store.checkpoint(broadcast.id)
        if cp.done:
            # The last batch may have been committed by a run that died before enqueueing it.
            if broadcast.channel is BroadcastChannel.MASS:
                self._enqueue_pending(broadcast, cp)
            return SplitResult(True, cp)
        if cp.cursor is not None and broadcast.audience.is_segment:
            # A segment may repeat an openid on both sides of the checkpoint: what the earlier
            # runs already took must stay taken.
            rules.mark_seen(self._reader.openids_before(broadcast, cp.cursor))
        cp.runs += 1
        cp.started = True
        cp.paused_until = None
        if broadcast.channel is BroadcastChannel.MASS:
            return self._run_mass(broadcast, cp, rules, deadline, day, next_day)
        return self._run_template(broadcast, cp, rules, deadline)

    # -- template / subscribe ------------------------------------------------------------------
    def _run_template(self, b: Broadcast, cp: Checkpoint, rules: Rules, deadline: float) -> SplitResult:
        channel = Channel.TEMPLATE if b.channel is BroadcastChannel.TEMPLATE else Channel.SUBSCRIBE
        for page in self._reader.pages(b, cp.cursor):
            if self._store.state(b.id) is not BroadcastState.SENDING:
                return SplitResult(False, cp, "cancelled")
            decisions = rules.decide(page.candidates)
            recipients = [
                Recipient(openid=d.openid, params=dict(d.params)) for d in decisions if d.reason is None
            ]
            groups = _groups(recipients)
            self._output.send_batches([broadcast_batch(b, channel, g) for g in groups])
            cp.recipients += len(recipients)
            cp.batches += len(groups)
            _count_excluded(cp, decisions)
            cp.cursor, cp.done = page.cursor, page.cursor is None
            if not self._commit(b, cp):
                return SplitResult(False, cp, "superseded")
            if not cp.done and time.monotonic() > deadline:
                return SplitResult(False, cp, "budget")
        if not cp.done:  # an empty audience yields no page at all
            cp.done = True
            self._commit(b, cp)
        return SplitResult(True, cp)

    # -- mass ----------------------------------------------------------------------------------
    def _run_mass(
        self,
        b: Broadcast,
        cp: Checkpoint,
        rules: Rules,
        deadline: float,
        day: Callable[[], str],
        next_day: Callable[[], datetime],
    ) -> SplitResult:
        self._enqueue_pending(b, cp)
        if b.audience.kind in (AudienceKind.ALL, AudienceKind.TAG) and not b.audience.is_segment:
            return self._run_sendall(b, cp, rules, day, next_day)
        # A day's cap smaller than a full batch would otherwise never admit one.
        size = max(MIN_MASS_OPENIDS, min(MAX_MASS_OPENIDS, self._mass_daily_cap))
        # Eligible openids with where to resume after each, and the exclusions seen before it.
        buffer: list[tuple[str, dict[str, Any] | None, int]] = []
        log: list[str] = []
        for page in self._reader.pages(b, cp.cursor):
            if self._store.state(b.id) is not BroadcastState.SENDING:
                return SplitResult(False, cp, "cancelled")
            decisions = rules.decide(page.candidates)
            for index, decision in enumerate(decisions):
                if decision.reason is not None:
                    log.append(decision.reason)
                    continue
                resume = _resume_after(page.candidates, index, page.cursor)
                buffer.append((decision.openid, resume, len(log)))
            # Keep ≥ 2 back so the last batch can never be a single openid.
            while len(buffer) >= size + MIN_MASS_OPENIDS:
                stop = self._emit(b, cp, buffer[:size], log, day, next_day)
                if stop is not None:
                    return stop
                used = buffer[size - 1][2]
                buffer, log = [(o, r, n - used) for o, r, n in buffer[size:]], log[used:]
                if time.monotonic() > deadline:
                    return SplitResult(False, cp, "budget")
            if page.cursor is None:
                break
        # The rest: one batch, or two when it is one over the maximum.
        tail = buffer
        while tail:
            cut = len(tail) if len(tail) <= size else len(tail) // 2 if len(tail) < 2 * size else size
            last = cut == len(tail)
            stop = self._emit(b, cp, tail[:cut], log, day, next_day, final=last)
            if stop is not None:
                return stop
            if last:
                break
            used = tail[cut - 1][2]
            tail, log = [(o, r, n - used) for o, r, n in tail[cut:]], log[used:]
        if not cp.done:
            cp.excluded.update(log)
            cp.cursor, cp.done = None, True
            self._commit(b, cp)
        self._enqueue_pending(b, cp)
        return SplitResult(True, cp)

    def _emit(
        self,
        b: Broadcast,
        cp: Checkpoint,
        entries: list[tuple[str, dict[str, Any] | None, int]],
        log: list[str],
        day: Callable[[], str],
        next_day: Callable[[], datetime],
        *,
        final: bool = False,
    ) -> SplitResult | None:
        if not self._daily.reserve_many(
            b.appid, MASS_DAILY_COUNTER, day=day(), count=len(entries), cap=self._mass_daily_cap
        ):
            return self._pause(b, cp, next_day())
        batch = MassBatchSpec(number=cp.batches, openids=[e[0] for e in entries])
        used = entries[-1][2] if not final else len(log)
        cp.excluded.update(log[:used])
        cp.batches += 1
        cp.recipients += len(entries)
        cp.cursor = None if final else entries[-1][1]
        cp.done = final
        if not self._commit(b, cp, batch=batch):
            return SplitResult(False, cp, "superseded")
        self._enqueue_pending(b, cp)
        return None

    def _run_sendall(
        self,
        b: Broadcast,
        cp: Checkpoint,
        rules: Rules,
        day: Callable[[], str],
        next_day: Callable[[], datetime],
    ) -> SplitResult:
        # WeChat picks the recipients; the registry tells how many we expect and who is excluded.
        eligible = 0
        excluded: Counter[str] = Counter()
        for page in self._reader.pages(b, None):
            for decision in rules.decide(page.candidates):
                if decision.reason is None:
                    eligible += 1
                else:
                    excluded[decision.reason] += 1
        if not eligible:
            cp.excluded, cp.done, cp.cursor = excluded, True, None
            self._commit(b, cp)
            return SplitResult(True, cp)
        # One sendall cannot be split: above the whole cap it is refused at publish.
        if eligible <= self._mass_daily_cap and not self._daily.reserve_many(
            b.appid, MASS_DAILY_COUNTER, day=day(), count=eligible, cap=self._mass_daily_cap
        ):
            return self._pause(b, cp, next_day())
        batch = MassBatchSpec(number=0, to_all=b.audience.kind is AudienceKind.ALL, tag_id=b.audience.tag_id)
        cp.excluded = excluded
        cp.recipients, cp.batches, cp.done, cp.cursor = eligible, 1, True, None
        if not self._commit(b, cp, batch=batch, recipients=eligible):
            return SplitResult(False, cp, "superseded")
        self._enqueue_pending(b, cp)
        return SplitResult(True, cp)

    # -- shared --------------------------------------------------------------------------------
    def _pause(self, b: Broadcast, cp: Checkpoint, until: datetime) -> SplitResult:
        cp.paused_until = until
        self._commit(b, cp)
        self._rescheduler.resume_at(b.id, b.appid, until)
        logger.info("broadcast paused by the daily cap", broadcast=b.id, until=until.isoformat())
        return SplitResult(False, cp, "paused")

    def _commit(
        self, b: Broadcast, cp: Checkpoint, *, batch: MassBatchSpec | None = None, recipients: int = 0
    ) -> bool:
        cp.version += 1
        if batch is None:
            ok = self._store.commit(b.id, cp)
        else:
            ok = self._store.commit_with_batch(b, cp, batch, recipients=recipients or batch.recipients)
        if not ok:
            logger.warning("split checkpoint moved under us: another run holds it", broadcast=b.id)
        return ok

    def _enqueue_pending(self, b: Broadcast, cp: Checkpoint) -> None:
        if cp.enqueued >= cp.batches:
            return
        self._output.enqueue_mass(b.appid, b.id, list(range(cp.enqueued, cp.batches)))
        cp.enqueued = cp.batches
        cp.version += 1
        if not self._store.commit(b.id, cp):
            cp.version -= 1  # harmless: a resume re-enqueues and the sender claims once


def _count_excluded(cp: Checkpoint, decisions: list[Decision]) -> None:
    for decision in decisions:
        if decision.reason is not None:
            cp.excluded[decision.reason] += 1


def _resume_after(
    candidates: list[Candidate], index: int, page_cursor: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The cursor that continues right after candidates[index]."""
    candidate = candidates[index]
    if candidate.resume is not None:
        return candidate.resume
    return page_cursor if index == len(candidates) - 1 else None


def _groups(recipients: list[Recipient]) -> list[list[Recipient]]:
    groups: list[list[Recipient]] = []
    current: list[Recipient] = []
    size = 0
    for r in recipients:
        encoded = len(r.model_dump_json()) + 8
        if current and (
            len(current) >= min(TEMPLATE_GROUP, MAX_BATCH_RECIPIENTS) or size + encoded > MAX_RECORD_BYTES
        ):
            groups.append(current)
            current, size = [], 0
        current.append(r)
        size += encoded
    if current:
        groups.append(current)
    return groups


def utc_now(clock: Callable[[], float]) -> datetime:
    return datetime.fromtimestamp(clock(), UTC)
