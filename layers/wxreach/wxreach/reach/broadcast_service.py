"""The broadcast use cases: create, edit, estimate, dry run, publish (now or at a time), cancel,
preview, delete an article, and the splitter's entry point. Every operator action is audited."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import BaseModel, Field

from wxreach.errors import Conflict, InvalidInput, NotFound, WxReachError
from wxreach.observability import logger
from wxreach.reach.accounts import Account, AccountType
from wxreach.reach.audiences import AudienceReader, Candidate, MassHistory, Rules
from wxreach.reach.broadcasts import (
    EDITABLE_STATES,
    FINAL_STATES,
    OUTCOME_STATES,
    AudienceKind,
    AuditEntry,
    Broadcast,
    BroadcastChannel,
    BroadcastEdit,
    BroadcastInput,
    BroadcastState,
    CancelReport,
    DeletedArticle,
    check_shape,
    new_broadcast_id,
)
from wxreach.reach.journey import DELIVERY_SOURCE, JourneyDetailType, JourneyEvent
from wxreach.reach.messages import Message, MessageBatch, Origin, OriginKind, Recipient
from wxreach.reach.ports import AccountDirectory, JourneyPublisher
from wxreach.reach.splitting import MASS_DAILY_COUNTER, Checkpoint, SplitResult, Splitter
from wxreach.reach.template_service import TemplateService
from wxreach.reach.templates import Template
from wxreach.wechat.keywords import Channel
from wxreach.wechat.tokens import china_day

CHINA = timedelta(hours=8)
TEMPLATE_DAILY_COUNTER = "template-sends"
DRY_RUN_SAMPLE = 20
FAILED_JOB_OUTCOMES = ("send_failed", "review_failed")  # MassJobResult.outcome


class BroadcastPolicy(BaseModel):
    large_send_threshold: int = 10_000
    mass_daily_cap: int = 1_000_000
    template_daily_cap: int = 100_000
    repeat_window_seconds: int = 24 * 3600
    cancel_settle_seconds: float = 8.0
    # The WeChat clientmsgid window: a mass batch re-sent after this could be sent twice.
    schedule_min_lead_seconds: int = 60


# -- ports -------------------------------------------------------------------------------------
class BroadcastRepository(Protocol):
    def create(self, broadcast: Broadcast) -> tuple[Broadcast, bool]: ...
    def get(self, broadcast_id: str) -> Broadcast | None: ...
    def save(
        self, broadcast: Broadcast, *, expected_version: int, expected_states: set[BroadcastState]
    ) -> bool: ...
    def delete(self, broadcast_id: str, *, expected_version: int) -> bool: ...
    def list_broadcasts(
        self, appid: str, *, state: BroadcastState | None, limit: int, after: str | None
    ) -> tuple[list[Broadcast], str | None]: ...
    def open_broadcasts(self, appid: str) -> Iterator[Broadcast]: ...
    def month_mass(self, appid: str, since: datetime) -> list[Broadcast]: ...
    def audit(self, broadcast_id: str, entry: AuditEntry) -> None: ...
    def audit_trail(self, broadcast_id: str) -> list[AuditEntry]: ...
    def message_counts(self, broadcast_id: str) -> Counter[str]: ...
    def checkpoint(self, broadcast_id: str) -> Checkpoint: ...
    def close_gate(self, broadcast_id: str) -> None: ...
    def set_state(
        self,
        broadcast_id: str,
        *,
        from_states: set[BroadcastState],
        to: BroadcastState,
        update: dict[str, Any] | None = None,
        when: Callable[[Broadcast], bool] | None = None,
    ) -> Broadcast | None: ...


class MassBatches(Protocol):
    """The mass sender's batch records (wxreach.aws.mass_batch_store)."""

    def summary(self, broadcast_id: str) -> dict[str, Any]: ...
    def cancel_queued(self, broadcast_id: str) -> tuple[int, int]: ...
    def sent_openids(self, broadcast_id: str) -> Iterator[str]: ...
    def msg_ids(self, broadcast_id: str) -> list[str]: ...


class MassOperations(Protocol):
    def preview(
        self, appid: str, mass_body: dict[str, Any], *, openid: str | None = None, wxname: str | None = None
    ) -> dict[str, Any]: ...
    def delete(self, appid: str, msg_id: str, article_idx: int = 0) -> None: ...


class Schedules(Protocol):
    def create(self, name: str, at: datetime, payload: dict[str, Any]) -> None: ...
    def move(self, name: str, at: datetime, payload: dict[str, Any]) -> None: ...
    def delete(self, name: str) -> bool: ...


class SplitTrigger(Protocol):
    def start(self, appid: str, broadcast_id: str) -> None: ...


class ReportSink(Protocol):
    def write_lines(self, key: str, lines: Iterator[str], *, content_type: str = ...) -> None: ...
    def url(self, key: str) -> str | None: ...


class DailyCounts(Protocol):
    def daily_used(self, appid: str, name: str, *, day: str) -> int: ...


class SingleSender(Protocol):
    def send_now(self, batch: MessageBatch) -> tuple[list[Message], bool]: ...


# -- answers -----------------------------------------------------------------------------------
class Estimate(BaseModel):
    recipients: int = Field(description="Exactly how many would receive it now")
    excluded: dict[str, int] = Field(description="Left out, by reason")
    deferred_daily_cap: int = Field(
        default=0, description="Beyond today's remaining daily cap: sent tomorrow"
    )
    needs_confirmation: bool = Field(description="Publishing needs `confirm: recipients`")
    large_send_threshold: int
    computed_at: datetime


class DryRunResult(BaseModel):
    estimate: Estimate
    key: str = Field(description="The report object (JSON lines) in the broadcast bucket")
    url: str | None = Field(default=None, description="Pre-signed download URL (1 hour)")
    sample: list[dict[str, Any]] = Field(description=f"The first {DRY_RUN_SAMPLE} lines of the report")


class BroadcastCounts(BaseModel):
    recipients: int = Field(description="Put in batches by the splitter")
    excluded: dict[str, int] = Field(default_factory=dict)
    by_state: dict[str, int] = Field(
        default_factory=dict, description="Messages (or mass recipients) by state"
    )
    by_reason: dict[str, dict[str, int]] = Field(default_factory=dict, description="state → reason → count")
    in_flight: int = 0
    batches: dict[str, Any] = Field(default_factory=dict, description="Mass batches by state")
    delivery: dict[str, int] = Field(
        default_factory=dict,
        description=(
            "Template/subscribe: outcomes after WeChat accepted the message (awaiting_callback,"
            " delivered, failed, unknown); mass: the job-finish totals (total, filtered, sent, errors)"
        ),
    )


class BroadcastView(BaseModel):
    broadcast: Broadcast
    counts: BroadcastCounts
    outcomes_final: bool = Field(
        default=False,
        description="Every message (mass: every job) has its delivery outcome; the counts no longer move",
    )


@dataclass
class _Settled:
    state: BroadcastState
    counts: BroadcastCounts
    outcomes_final: bool = False


class BroadcastService:
    def __init__(
        self,
        *,
        store: BroadcastRepository,
        accounts: AccountDirectory,
        templates: TemplateService,
        reader: AudienceReader,
        lookup: Any,
        splitter: Splitter,
        trigger: SplitTrigger,
        schedules: Schedules,
        reports: ReportSink,
        daily: DailyCounts,
        mass_batches: MassBatches,
        mass: MassOperations,
        sender: SingleSender,
        policy: BroadcastPolicy,
        journey: JourneyPublisher | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._journey = journey
        self._store = store
        self._accounts = accounts
        self._templates = templates
        self._reader = reader
        self._lookup = lookup
        self._splitter = splitter
        self._trigger = trigger
        self._schedules = schedules
        self._reports = reports
        self._daily = daily
        self._mass_batches = mass_batches
        self._mass = mass
        self._sender = sender
        self._policy = policy
        self._clock = clock
        self._sleep = sleep

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # -- records -------------------------------------------------------------------------------
    def create(
        self, appid: str, spec: BroadcastInput, *, actor: str, request_key: str | None = None
    ) -> Broadcast:
        account = self._accounts.get(appid)
        _check_account_rules(account, spec.channel, spec.audience.kind)
        _check_segment_key(appid, spec.audience)
        now = self._now()
        broadcast = Broadcast(
            id=new_broadcast_id(appid, request_key or uuid.uuid4().hex),
            appid=appid,
            name=spec.name,
            channel=spec.channel,
            audience=spec.audience,
            content=spec.content,
            mass=spec.mass,
            created_at=now,
            updated_at=now,
            created_by=actor,
        )
        stored, created = self._store.create(broadcast)
        if created:
            self._audit(stored.id, actor, "create", {"name": spec.name, "channel": str(spec.channel)})
        elif stored.appid != appid:
            raise Conflict("that request key names another account's broadcast", reason="request_key_reused")
        return stored

    def get(self, appid: str, broadcast_id: str) -> Broadcast:
        broadcast = self._store.get(broadcast_id)
        if broadcast is None or broadcast.appid != appid:
            raise NotFound("no such broadcast on this account", reason="unknown_broadcast")
        return broadcast

    def view(self, appid: str, broadcast_id: str) -> BroadcastView:
        return self._refresh(self.get(appid, broadcast_id))

    def _refresh(self, broadcast: Broadcast) -> BroadcastView:
        """The counts, and the state they imply: sending → final once every message is final; a
        final state refined by outcomes that came later (a mass job rejected in review), until
        every outcome is known (`outcomes_final_at`, then BroadcastFinished, once)."""
        settled = self._settle(broadcast)
        is_open = broadcast.state is BroadcastState.SENDING or (
            broadcast.state in OUTCOME_STATES and broadcast.outcomes_final_at is None
        )
        if not is_open:
            return BroadcastView(broadcast=broadcast, counts=settled.counts, outcomes_final=True)
        now, update = self._now(), {}
        if settled.state is not broadcast.state:
            update["updated_at"] = now
            if broadcast.state is BroadcastState.SENDING:
                update["finished_at"] = now
        closes = settled.state is not BroadcastState.SENDING and settled.outcomes_final
        if closes:
            update["outcomes_final_at"] = now
        if update:
            moved = self._store.set_state(
                broadcast.id,
                from_states={broadcast.state},
                to=settled.state,
                update=update,
                when=lambda current: current.outcomes_final_at is None,
            )
            if moved is not None and closes:
                self._announce_finished(moved, settled.counts)
            broadcast = moved or self.get(broadcast.appid, broadcast.id)
        return BroadcastView(
            broadcast=broadcast,
            counts=settled.counts,
            outcomes_final=broadcast.outcomes_final_at is not None,
        )

    def settle_open(self, appid: str) -> int:
        """Refreshes the account's open broadcasts (sending, or outcomes still to come): the
        reconciler's step; reading one through the API does the same. Returns how many changed
        state or became final."""
        changed = 0
        for broadcast in self._store.open_broadcasts(appid):
            view = self._refresh(broadcast)
            if view.broadcast.state is not broadcast.state or view.outcomes_final:
                changed += 1
        return changed

    def _announce_finished(self, broadcast: Broadcast, counts: BroadcastCounts) -> None:
        """BroadcastFinished, by whoever recorded that every outcome is known (once)."""
        if self._journey is None:
            return
        event = JourneyEvent(
            detail_type=JourneyDetailType.BROADCAST_FINISHED,
            appid=broadcast.appid,
            occurred_at=self._now(),
            source=DELIVERY_SOURCE,
            attributes={
                "event_id": f"{broadcast.appid}:broadcast:{broadcast.id}:finished",
                "broadcast_id": broadcast.id,
                "channel": str(broadcast.channel),
                "state": str(broadcast.state),
                "recipients": counts.recipients,
                "by_state": counts.by_state,
                "by_reason": counts.by_reason,
                "excluded": counts.excluded,
                "delivery": counts.delivery,
            },
        )
        try:
            self._journey.publish([event])
        except Exception as exc:  # the state is recorded; a read must not fail on the event
            reason = exc.reason if isinstance(exc, WxReachError) else type(exc).__name__
            logger.warning("BroadcastFinished not published", broadcast_id=broadcast.id, reason=reason)

    def list_broadcasts(
        self, appid: str, *, state: BroadcastState | None, limit: int, after: str | None
    ) -> tuple[list[Broadcast], str | None]:
        self._accounts.get(appid)
        return self._store.list_broadcasts(appid, state=state, limit=limit, after=after)

    def audit_trail(self, appid: str, broadcast_id: str) -> list[AuditEntry]:
        self.get(appid, broadcast_id)
        return self._store.audit_trail(broadcast_id)

    def edit(self, appid: str, broadcast_id: str, edit: BroadcastEdit, *, actor: str) -> Broadcast:
        current = self.get(appid, broadcast_id)
        if current.state not in EDITABLE_STATES:
            raise Conflict(f"a {current.state} broadcast cannot be edited", reason="not_editable")
        changes = edit.model_dump(exclude_none=True, mode="json")
        if not changes:
            return current
        if edit.scheduled_at is not None and current.state is not BroadcastState.SCHEDULED:
            raise Conflict("only a scheduled broadcast has a time to move", reason="not_scheduled")
        if current.state is BroadcastState.SCHEDULED and (edit.audience or edit.content or edit.mass):
            # Its estimate was confirmed at publish: a new audience or content needs a new publish.
            raise Conflict(
                "a scheduled broadcast's audience and content are fixed; cancel it and publish a new one",
                reason="scheduled_content_fixed",
            )
        updated = current.model_copy(
            update={
                **{
                    k: getattr(edit, k)
                    for k in ("name", "audience", "content", "mass")
                    if getattr(edit, k) is not None
                },
                "updated_at": self._now(),
                "version": current.version + 1,
            }
        )
        try:
            check_shape(updated.channel, updated.audience, updated.content, updated.mass)
        except ValueError as exc:
            raise InvalidInput(str(exc), reason="invalid_broadcast") from exc
        _check_account_rules(self._accounts.get(appid), updated.channel, updated.audience.kind)
        _check_segment_key(appid, updated.audience)
        if edit.scheduled_at is not None:
            at = self._future(edit.scheduled_at)
            updated = updated.model_copy(update={"scheduled_at": at})
            self._schedules.move(broadcast_id, at, _fire_payload(updated))
        if not self._store.save(updated, expected_version=current.version, expected_states={current.state}):
            raise Conflict("the broadcast changed meanwhile; read it again", reason="concurrent_change")
        self._audit(broadcast_id, actor, "edit", changes)
        return updated

    def delete(self, appid: str, broadcast_id: str, *, actor: str) -> None:
        current = self.get(appid, broadcast_id)
        if current.state is not BroadcastState.DRAFT:
            raise Conflict("only a draft can be deleted; cancel it instead", reason="not_a_draft")
        if not self._store.delete(broadcast_id, expected_version=current.version):
            raise Conflict("the broadcast changed meanwhile; read it again", reason="concurrent_change")
        self._audit(broadcast_id, actor, "delete", {})

    # -- estimate and dry run ------------------------------------------------------------------
    def estimate(self, appid: str, broadcast_id: str) -> Estimate:
        return self._estimate(self.get(appid, broadcast_id))

    def estimate_proposed(self, appid: str, spec: BroadcastInput) -> Estimate:
        account = self._accounts.get(appid)
        _check_account_rules(account, spec.channel, spec.audience.kind)
        _check_segment_key(appid, spec.audience)
        now = self._now()
        draft = Broadcast(
            id=new_broadcast_id(appid, "proposed"),
            appid=appid,
            name=spec.name,
            channel=spec.channel,
            audience=spec.audience,
            content=spec.content,
            mass=spec.mass,
            created_at=now,
            updated_at=now,
            created_by="estimate",
        )
        return self._estimate(draft)

    def _estimate(self, broadcast: Broadcast, sink: list[str] | None = None) -> Estimate:
        rules = self.rules_for(broadcast)
        eligible = 0
        excluded: Counter[str] = Counter()
        for page in self._reader.pages(broadcast):
            for candidate, decision in zip(page.candidates, rules.decide(page.candidates), strict=True):
                if decision.reason is None:
                    eligible += 1
                else:
                    excluded[decision.reason] += 1
                if sink is not None:
                    sink.append(_report_line(candidate, decision.reason, decision.values, decision.detail))
        deferred = max(0, eligible - self._remaining_cap(broadcast))
        return Estimate(
            recipients=eligible,
            excluded=dict(excluded),
            deferred_daily_cap=deferred,
            needs_confirmation=eligible > self._policy.large_send_threshold,
            large_send_threshold=self._policy.large_send_threshold,
            computed_at=self._now(),
        )

    def dry_run(self, appid: str, broadcast_id: str, *, actor: str) -> DryRunResult:
        broadcast = self.get(appid, broadcast_id)
        lines: list[str] = []
        estimate = self._estimate(broadcast, lines)
        key = f"dry-runs/{appid}/{broadcast_id}/{self._now().strftime('%Y%m%dT%H%M%SZ')}.jsonl"
        self._reports.write_lines(key, iter(lines))
        return DryRunResult(
            estimate=estimate,
            key=key,
            url=self._reports.url(key),
            sample=[json.loads(line) for line in lines[:DRY_RUN_SAMPLE]],
        )

    def _remaining_cap(self, broadcast: Broadcast) -> int:
        day = china_day(self._clock())
        if broadcast.channel is BroadcastChannel.MASS:
            used = self._daily.daily_used(broadcast.appid, MASS_DAILY_COUNTER, day=day)
            return max(0, self._policy.mass_daily_cap - used)
        if broadcast.channel is BroadcastChannel.TEMPLATE:
            used = self._daily.daily_used(broadcast.appid, TEMPLATE_DAILY_COUNTER, day=day)
            return max(0, self._policy.template_daily_cap - used)
        return 2**62

    def rules_for(self, broadcast: Broadcast) -> Rules:
        account = self._accounts.get(broadcast.appid)
        template: Template | None = None
        if broadcast.content is not None:
            channel = (
                Channel.TEMPLATE if broadcast.channel is BroadcastChannel.TEMPLATE else Channel.SUBSCRIBE
            )
            template = self._templates.resolve(broadcast.appid, channel, broadcast.content.template_id)
        history = (
            self._mass_history(broadcast) if broadcast.channel is BroadcastChannel.MASS else MassHistory()
        )
        return Rules(
            broadcast,
            account,
            template=template,
            lookup=self._lookup,
            history=history,
            now=self._now(),
            repeat_window_seconds=self._policy.repeat_window_seconds,
        )

    def _mass_history(self, broadcast: Broadcast) -> MassHistory:
        """This calendar month's (Asia/Shanghai) mass sends of the account, other than this one."""
        china_now = self._now() + CHINA
        month_start = china_now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) - CHINA
        today_start = china_now.replace(hour=0, minute=0, second=0, microsecond=0) - CHINA
        history = MassHistory()
        month = month_start.replace(tzinfo=UTC)
        # Created up to a month before, started in this month.
        for other in self._store.month_mass(broadcast.appid, month - timedelta(days=31)):
            if other.id == broadcast.id or other.started_at is None or other.started_at < month:
                continue
            if other.state in (BroadcastState.CANCELLED, BroadcastState.FAILED) and not other.cancel:
                continue
            if other.audience.is_segment:
                history.by_openid.update(self._mass_batches.sent_openids(other.id))
            elif other.audience.kind is AudienceKind.ALL:
                history.to_all += 1
            elif other.audience.tag_id is not None:
                history.by_tag[other.audience.tag_id] += 1
            if not other.audience.is_segment and other.started_at >= today_start.replace(tzinfo=UTC):
                history.sendall_today = True
        return history

    # -- publish, schedule, cancel -------------------------------------------------------------
    def publish(
        self,
        appid: str,
        broadcast_id: str,
        *,
        actor: str,
        at: datetime | None = None,
        confirm: int | None = None,
    ) -> Broadcast:
        current = self.get(appid, broadcast_id)
        if current.state is not BroadcastState.DRAFT:
            raise Conflict(f"a {current.state} broadcast cannot be published", reason="not_a_draft")
        if current.content is not None:
            channel = Channel.TEMPLATE if current.channel is BroadcastChannel.TEMPLATE else Channel.SUBSCRIBE
            if self._templates.resolve(appid, channel, current.content.template_id) is None:
                raise InvalidInput(
                    "the template is not on this account, even after a sync", reason="unknown_template"
                )
        estimate = self._estimate(current)
        if (
            current.channel is BroadcastChannel.MASS
            and current.audience.is_segment
            and estimate.recipients == 1
        ):
            raise Conflict(
                "WeChat mass-sends to at least 2 openids; send to one follower with the preview route",
                reason="too_few_recipients",
            )
        if (
            current.channel is BroadcastChannel.MASS
            and not current.audience.is_segment
            and estimate.recipients > self._policy.mass_daily_cap
        ):
            raise Conflict(
                f"one sendall reaches {estimate.recipients} followers, above the daily mass cap of "
                f"{self._policy.mass_daily_cap}: raise MassDailyCap or send to segments",
                reason="exceeds_daily_cap",
            )
        if estimate.recipients > self._policy.large_send_threshold and confirm != estimate.recipients:
            raise Conflict(
                f"this broadcast reaches {estimate.recipients} recipients: publish again with "
                f'"confirm": {estimate.recipients}',
                reason="confirmation_required" if confirm is None else "confirmation_mismatch",
            )
        now = self._now()
        common = {
            "published_at": now,
            "published_by": actor,
            "updated_at": now,
            "confirmed_count": confirm,
            "version": current.version + 1,
        }
        if confirm is not None:
            self._audit(broadcast_id, actor, "confirm", {"confirm": confirm, "estimate": estimate.recipients})
        if at is not None:
            when = self._future(at)
            scheduled = current.model_copy(
                update={**common, "state": BroadcastState.SCHEDULED, "scheduled_at": when}
            )
            self._schedules.create(broadcast_id, when, _fire_payload(scheduled))
            if not self._store.save(
                scheduled, expected_version=current.version, expected_states={BroadcastState.DRAFT}
            ):
                self._schedules.delete(broadcast_id)
                raise Conflict("the broadcast changed meanwhile; read it again", reason="concurrent_change")
            self._audit(broadcast_id, actor, "schedule", {"scheduled_at": when.isoformat()})
            return scheduled
        sending = current.model_copy(update={**common, "state": BroadcastState.SENDING, "started_at": now})
        if not self._store.save(
            sending, expected_version=current.version, expected_states={BroadcastState.DRAFT}
        ):
            raise Conflict("the broadcast changed meanwhile; read it again", reason="concurrent_change")
        try:
            self._trigger.start(appid, broadcast_id)
        except Exception:
            # Without its split request it would stay "sending" for ever: back to a draft.
            self._store.save(
                current, expected_version=sending.version, expected_states={BroadcastState.SENDING}
            )
            raise
        self._audit(broadcast_id, actor, "publish", {"recipients": estimate.recipients})
        return sending

    def _future(self, at: datetime) -> datetime:
        when = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).replace(microsecond=0)
        if when < self._now() + timedelta(seconds=self._policy.schedule_min_lead_seconds):
            raise InvalidInput(
                f"a scheduled time must be at least {self._policy.schedule_min_lead_seconds} s ahead",
                reason="time_in_past",
            )
        return when

    def fire(self, appid: str, broadcast_id: str) -> bool:
        """A schedule fired: start sending if the broadcast is still scheduled (a cancel wins)."""
        moved = self._store.set_state(
            broadcast_id,
            from_states={BroadcastState.SCHEDULED},
            to=BroadcastState.SENDING,
            update={"started_at": self._now(), "updated_at": self._now()},
        )
        if moved is None:
            state = self._store.get(broadcast_id)
            logger.info(
                "schedule fired for a broadcast that is not scheduled",
                broadcast=broadcast_id,
                state=str(state.state) if state else None,
            )
            return bool(state and state.state is BroadcastState.SENDING)
        self._audit(broadcast_id, "scheduler", "publish", {"fired_at": self._now().isoformat()})
        return True

    def cancel(self, appid: str, broadcast_id: str, *, actor: str) -> Broadcast:
        current = self.get(appid, broadcast_id)
        if current.state in FINAL_STATES:
            raise Conflict(f"a {current.state} broadcast cannot be cancelled", reason="already_final")
        now = self._now()
        moved = self._store.set_state(
            broadcast_id,
            from_states={current.state},
            to=BroadcastState.CANCELLED,
            update={"updated_at": now, "finished_at": now},
        )
        if moved is None:
            raise Conflict("the broadcast changed meanwhile; try again", reason="concurrent_change")
        if current.state is BroadcastState.SCHEDULED:
            self._schedules.delete(broadcast_id)
        if current.state is BroadcastState.SENDING:
            report = self._cancel_report(moved, now)
        else:
            report = CancelReport(cancelled_at=now, sent=0, failed=0, not_sent=self._safe_estimate(current))
        final = self._store.set_state(
            broadcast_id,
            from_states={BroadcastState.CANCELLED},
            to=BroadcastState.CANCELLED,
            update={"cancel": report},
        )
        self._audit(
            broadcast_id, actor, "cancel", {"from": str(current.state), **report.model_dump(mode="json")}
        )
        return final or moved

    def _cancel_report(self, broadcast: Broadcast, now: datetime) -> CancelReport:
        """From here on nothing starts (the senders' claims are gated on the state); wait for the
        sends on the wire to land, then count: sent + failed + not_sent = the audience."""
        self._store.close_gate(broadcast.id)
        if broadcast.channel is BroadcastChannel.MASS:
            self._mass_batches.cancel_queued(broadcast.id)
            recipients = self._mass_batches.summary(broadcast.id).get("recipients", {})
            in_flight = int(recipients.get("sending", 0))
            sent = int(recipients.get("sent", 0)) + in_flight
            failed = int(recipients.get("failed", 0))
            split = sum(int(v) for v in recipients.values())
        else:
            deadline = time.monotonic() + self._policy.cancel_settle_seconds
            counts = self._store.message_counts(broadcast.id)
            while counts["claims"] - counts["releases"] > 0 and time.monotonic() < deadline:
                self._sleep(0.25)
                counts = self._store.message_counts(broadcast.id)
            in_flight = max(0, counts["claims"] - counts["releases"])
            # "unknown" may have been delivered: it counts as sent, never as not sent; a delivery
            # failure reported by WeChat (delivery:failed) was sent.
            sent = (
                counts["sent"]
                + counts["delivered"]
                + counts["delivery:failed"]
                + counts["unknown"]
                + in_flight
                + max(0, counts["maybe"])
            )
            failed = counts["failed"] - counts["delivery:failed"]
            split = self._store.checkpoint(broadcast.id).recipients
        cp = self._store.checkpoint(broadcast.id)
        unsplit = 0 if cp.done else self._remaining(broadcast, cp)
        return CancelReport(
            cancelled_at=now,
            sent=sent,
            failed=failed,
            not_sent=max(0, split - sent - failed) + unsplit,
            in_flight=in_flight,
        )

    def _remaining(self, broadcast: Broadcast, cp: Checkpoint) -> int:
        """Eligible recipients the splitter had not reached (it stops at its next page)."""
        try:
            rules = self.rules_for(broadcast)
            if cp.cursor is not None and broadcast.audience.is_segment:
                rules.mark_seen(self._reader.openids_before(broadcast, cp.cursor))
            return sum(
                1
                for page in self._reader.pages(broadcast, cp.cursor)
                for decision in rules.decide(page.candidates)
                if decision.reason is None
            )
        except WxReachError:
            return 0

    def _safe_estimate(self, broadcast: Broadcast) -> int:
        try:
            return self._estimate(broadcast).recipients
        except WxReachError:
            return broadcast.confirmed_count or 0

    # -- splitting (the splitter function) -------------------------------------------------------
    def split(self, appid: str, broadcast_id: str, *, deadline: float) -> SplitResult | None:
        broadcast = self._store.get(broadcast_id)
        if broadcast is None or broadcast.appid != appid:
            logger.warning("split requested for an unknown broadcast", broadcast=broadcast_id)
            return None
        if broadcast.state is not BroadcastState.SENDING:
            logger.info(
                "split skipped: broadcast not sending", broadcast=broadcast_id, state=str(broadcast.state)
            )
            return None
        try:
            result = self._splitter.run(
                broadcast,
                self._accounts.get(appid),
                template=None,
                rules=self.rules_for(broadcast),
                deadline=deadline,
                day=lambda: china_day(self._clock()),
                next_day=self._next_china_midnight,
            )
        except WxReachError as exc:
            if exc.status >= 500:
                raise
            # It can never succeed (the segment object is gone, the account was removed...).
            logger.error("broadcast failed while splitting", broadcast=broadcast_id, reason=exc.reason)
            self._store.set_state(
                broadcast_id,
                from_states={BroadcastState.SENDING},
                to=BroadcastState.FAILED,
                update={"failure": exc.reason, "finished_at": self._now(), "updated_at": self._now()},
            )
            return None
        logger.info(
            "split run",
            broadcast=broadcast_id,
            done=result.done,
            stopped=result.stopped,
            recipients=result.checkpoint.recipients,
            batches=result.checkpoint.batches,
        )
        return result

    def _next_china_midnight(self) -> datetime:
        china = self._now() + CHINA
        return (china.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1) - CHINA).replace(
            second=5
        )

    # -- final state and counts ----------------------------------------------------------------
    def _settle(self, broadcast: Broadcast) -> _Settled:
        cp = self._store.checkpoint(broadcast.id)
        counts = BroadcastCounts(recipients=cp.recipients, excluded=dict(cp.excluded))
        # A split that failed splits nothing more: what it queued still decides the outcomes.
        split_over = cp.done or broadcast.failure is not None
        if broadcast.channel is BroadcastChannel.MASS:
            summary = self._mass_batches.summary(broadcast.id)
            counts.batches = summary
            counts.by_state = {k: int(v) for k, v in summary.get("recipients", {}).items()}
            # A copy: the failed jobs below must not change the batches block (summary["reasons"]).
            counts.by_reason = {state: dict(r) for state, r in summary.get("reasons", {}).items()}
            counts.delivery = {
                **summary.get("wechat", {}),
                "jobs_pending": int(summary.get("jobs", {}).get("pending", 0)),
            }
            open_batches = sum(int(summary.get("batches", {}).get(s, 0)) for s in ("queued", "sending"))
            # A job WeChat failed or rejected in review reached nobody: its recipients failed.
            for outcome in FAILED_JOB_OUTCOMES:
                lost = int(summary.get("job_recipients", {}).get(outcome, 0))
                if lost:
                    counts.by_state["sent"] = counts.by_state.get("sent", 0) - lost
                    counts.by_state["failed"] = counts.by_state.get("failed", 0) + lost
                    failed_reasons = counts.by_reason.setdefault("failed", {})
                    failed_reasons[outcome] = failed_reasons.get(outcome, 0) + lost
            done = cp.done and open_batches == 0
            outcomes_final = split_over and open_batches == 0 and counts.delivery["jobs_pending"] == 0
            sent = counts.by_state.get("sent", 0)
            failed = counts.by_state.get("failed", 0)
        else:
            raw = self._store.message_counts(broadcast.id)
            by_state: dict[str, int] = {}
            by_reason: dict[str, dict[str, int]] = {}
            for name, value in raw.items():
                if name in ("claims", "releases", "maybe") or name.startswith("delivery:"):
                    continue
                if ":" in name:
                    state, reason = name.split(":", 1)
                    by_reason.setdefault(state, {})[reason] = value
                else:
                    by_state[name] = value
            finished = sum(by_state.values())
            by_state["queued"] = max(0, cp.recipients - finished)
            counts.by_state, counts.by_reason = by_state, by_reason
            counts.in_flight = max(0, raw["claims"] - raw["releases"])
            done = cp.done and finished >= cp.recipients
            # Outcomes after the send (delivery callbacks, reconciliation) do not undo the send.
            after_failed, after_unknown = raw["delivery:failed"], raw["delivery:unknown"]
            counts.delivery = {
                "awaiting_callback": by_state.get("sent", 0),
                "delivered": by_state.get("delivered", 0),
                "failed": after_failed,
                "unknown": after_unknown,
            }
            outcomes_final = (
                split_over
                and finished >= cp.recipients
                and by_state.get("sent", 0) == 0
                and counts.in_flight == 0
            )
            sent = by_state.get("sent", 0) + by_state.get("delivered", 0) + after_failed + after_unknown
            failed = by_state.get("failed", 0) - after_failed + by_state.get("unknown", 0) - after_unknown
        state = broadcast.state
        if (broadcast.state is BroadcastState.SENDING or broadcast.state in OUTCOME_STATES) and done:
            if sent == 0:
                state = BroadcastState.FAILED  # nobody got it, whatever the reasons
            elif failed == 0:
                state = BroadcastState.SENT
            else:
                state = BroadcastState.PARTIALLY_SENT
        return _Settled(state, counts, outcomes_final)

    # -- preview and articles ------------------------------------------------------------------
    def preview(
        self, appid: str, broadcast_id: str, *, openid: str | None, wxname: str | None, params: dict[str, Any]
    ) -> dict[str, Any]:
        broadcast = self.get(appid, broadcast_id)
        if broadcast.mass is not None:
            return self._mass.preview(appid, broadcast.mass.wechat_body(), openid=openid, wxname=wxname)
        if openid is None:
            raise InvalidInput(
                "a template or subscription preview goes to an openid", reason="openid_required"
            )
        assert broadcast.content is not None
        channel = Channel.TEMPLATE if broadcast.channel is BroadcastChannel.TEMPLATE else Channel.SUBSCRIBE
        batch = MessageBatch(
            appid=appid,
            channel=channel,
            origin=Origin(kind=OriginKind.SINGLE, id=f"preview.{broadcast_id}.{uuid.uuid4().hex[:12]}"),
            content=broadcast.content,
            recipients=[Recipient(openid=openid, params=params)],
        )
        messages, queued = self._sender.send_now(batch)
        return {"message": messages[0].model_dump(mode="json"), "queued": queued}

    def delete_article(
        self, appid: str, broadcast_id: str, *, article_idx: int, msg_id: str | None, actor: str
    ) -> Broadcast:
        broadcast = self.get(appid, broadcast_id)
        if broadcast.channel is not BroadcastChannel.MASS or broadcast.mass is None:
            raise InvalidInput("only mass broadcasts have articles", reason="not_mass")
        if broadcast.mass.msgtype not in ("mpnews", "mpvideo"):
            raise InvalidInput(
                "only article (mpnews) and video sends can be deleted", reason="not_an_article"
            )
        known = self._mass_batches.msg_ids(broadcast_id)
        if not known:
            raise Conflict("nothing of this broadcast was sent yet", reason="not_sent")
        targets = [msg_id] if msg_id else known
        if msg_id and msg_id not in known:
            raise NotFound("that msg_id is not one of this broadcast's sends", reason="unknown_msg_id")
        now = self._now()
        for target in targets:
            self._mass.delete(appid, target, article_idx)
        deleted = [
            DeletedArticle(msg_id=t, article_idx=article_idx, deleted_at=now, by=actor) for t in targets
        ]
        for _ in range(5):
            current = self.get(appid, broadcast_id)
            updated = current.model_copy(
                update={
                    "deleted_articles": [*current.deleted_articles, *deleted],
                    "version": current.version + 1,
                    "updated_at": now,
                }
            )
            if self._store.save(updated, expected_version=current.version, expected_states={current.state}):
                break
        self._audit(broadcast_id, actor, "delete_article", {"msg_ids": targets, "article_idx": article_idx})
        return self.get(appid, broadcast_id)

    def _audit(self, broadcast_id: str, actor: str, action: str, changes: dict[str, Any]) -> None:
        self._store.audit(
            broadcast_id,
            AuditEntry(at=self._now(), actor=actor, action=action, changes=changes),  # type: ignore[arg-type]
        )


def _check_segment_key(appid: str, audience: Any) -> None:
    segment = audience.segment
    if segment is not None and not segment.key.startswith(f"segments/{appid}/"):
        raise InvalidInput(
            f"segment objects of this account live under segments/{appid}/", reason="segment_outside_account"
        )


def _check_account_rules(account: Account, channel: BroadcastChannel, kind: AudienceKind) -> None:
    if (
        channel is BroadcastChannel.MASS
        and account.account_type is AccountType.SUBSCRIPTION
        and kind not in (AudienceKind.ALL, AudienceKind.TAG)
    ):
        raise InvalidInput(
            "a subscription account mass-sends to all followers or a tag only", reason="audience_not_allowed"
        )
    if channel is BroadcastChannel.TEMPLATE and account.account_type is AccountType.SUBSCRIPTION:
        raise InvalidInput("template messages need a service account", reason="channel_not_allowed")


def _fire_payload(broadcast: Broadcast) -> dict[str, Any]:
    return {"action": "fire", "appid": broadcast.appid, "broadcast_id": broadcast.id}


def _report_line(candidate: Candidate, reason: str | None, values: dict[str, str], detail: str | None) -> str:
    line: dict[str, Any] = {"openid": candidate.openid, "would_send": reason is None}
    if reason is not None:
        line["reason"] = reason
    if values:
        line["values"] = values
    if detail:
        line["detail"] = detail
    return json.dumps(line, ensure_ascii=False)
