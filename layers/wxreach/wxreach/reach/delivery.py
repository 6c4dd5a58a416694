"""Delivery outcomes: WeChat's job-finish callbacks turned into message, batch and broadcast
results (the status updater), and the reconciler for what never reported back.

Every change is a conditional write from `sent`, so a redelivered callback changes nothing twice.
A callback that names no record we know is parked, not dropped: WeChat can report before the
sender has written the msgid, and the reconciler applies it once the record exists.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, Field, ValidationError

from wxreach.errors import WxReachError
from wxreach.observability import logger, mask_openid
from wxreach.reach.journey import DELIVERY_SOURCE, JourneyDetailType, JourneyEvent
from wxreach.reach.mass_sending import MassBatch, MassJobResult
from wxreach.reach.messages import Message, MessageState
from wxreach.reach.ports import JourneyPublisher
from wxreach.wechat.callback_events import (
    EventKind,
    MassSendJobFinishEvent,
    MassSendOutcome,
    PublishJobFinishEvent,
    SubscribeMsgDelivery,
    SubscribeMsgSentEvent,
    TemplateSendJobFinishEvent,
)
from wxreach.wechat.errcodes import WeChatApiError
from wxreach.wechat.keywords import Channel

UNPARSED_KIND = "unparsed"
INVALID_MSG_ID = 40059  # /mass/get: WeChat does not know this msg_id

# err(N) of MASSSENDJOBFINISH (reference §4.3); other codes keep their number only.
REVIEW_ERRORS = {
    10001: "advertising",
    20001: "politics",
    20002: "pornography",
    20004: "society",
    20006: "crime",
    20008: "fraud",
    20013: "copyright",
    22000: "mutual promotion",
    21000: "other",
    30003: "originality check",
}


class DeliveryReason(StrEnum):
    USER_BLOCK = "user_block"  # the follower refuses the account's messages
    SYSTEM = "system"  # any other failure WeChat reports; the raw status is kept
    NO_CALLBACK = "no_callback"  # the reconciler gave up waiting


class ParkReason(StrEnum):
    UNMATCHED = "unmatched"  # names a msgid we have no record of (yet)
    UNPARSED = "unparsed"  # an authentic callback our models could not read
    UNKNOWN = "unknown"  # a kind the status updater does not handle


class DeliveryMessage(BaseModel):
    """A status-queue record as the webhook writes it (docs/events.md)."""

    appid: str
    kind: str
    dedupe_key: str = Field(max_length=512)
    received_at: datetime | None = None
    event: dict[str, Any] = Field(default_factory=dict)
    parse_error: str | None = None


@dataclass(frozen=True)
class ParkedCallback:
    appid: str
    key: str
    reason: ParkReason
    parked_at: datetime
    message: dict[str, Any]
    orphan: bool = False


@dataclass
class Applied:
    """What one callback changed: counted into metrics by the handler."""

    outcomes: Counter[str] = field(default_factory=Counter)
    parked: ParkReason | None = None  # not applied: waiting for its record, or kept for people
    newly_parked: bool = False  # False for a redelivery of a callback parked before
    refunds: int = 0


class DeliveryLedger(Protocol):
    def find_by_wechat_msgid(self, appid: str, msgid: str) -> Message | None: ...
    def get(self, message_id: str) -> Message | None: ...
    def record_delivery(
        self,
        message: Message,
        *,
        state: MessageState,
        now: datetime,
        reason: str | None = None,
        status: str | None = None,
    ) -> bool: ...
    def awaiting(self, appid: str, *, sent_before: datetime, limit: int = 500) -> list[Message]: ...


class MassJobs(Protocol):
    def find_by_msg_id(self, appid: str, msg_id: str) -> MassBatch | None: ...
    def record_job(self, broadcast_id: str, number: int, job: MassJobResult) -> bool: ...
    def awaiting_jobs(self, appid: str, *, sent_before: datetime, limit: int = 100) -> list[MassBatch]: ...


class CallbackParking(Protocol):
    def park(self, callback: ParkedCallback) -> bool: ...
    def parked(self, appid: str, *, limit: int = 200) -> Iterator[ParkedCallback]:
        """Only `unmatched` callbacks that still wait (not orphans, not kept ones)."""
        ...

    def unpark(self, callback: ParkedCallback) -> None: ...
    def mark_orphan(self, callback: ParkedCallback) -> bool: ...
    def save_publish(self, appid: str, publish_id: str, record: dict[str, Any]) -> None: ...


class CreditRefunds(Protocol):
    def refund_credit(self, appid: str, openid: str, template_id: str, message_id: str) -> bool: ...


class MassStatus(Protocol):
    def get_status(self, appid: str, msg_id: str) -> str: ...


class BroadcastSettler(Protocol):
    def settle_open(self, appid: str) -> int: ...


@dataclass(frozen=True)
class ReconcilePolicy:
    unknown_after_seconds: int = 6 * 3600  # a sent message with no callback by then is `unknown`
    mass_poll_after_seconds: int = 40 * 60  # past WeChat's mass send protection (30 min)
    orphan_after_seconds: int = 3600  # a parked callback no record claimed by then is an orphan
    batch_limit: int = 500  # per query page; the sweep goes on page after page until its deadline
    mass_polls_per_run: int = 20  # /mass/get calls, of WeChat's 60 mass calls per minute


class DeliveryService:
    def __init__(
        self,
        *,
        ledger: DeliveryLedger,
        mass_jobs: MassJobs,
        parking: CallbackParking,
        credits: CreditRefunds,
        journey: JourneyPublisher | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = ledger
        self._mass_jobs = mass_jobs
        self._parking = parking
        self._credits = credits
        self._journey = journey
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # -- the status updater ----------------------------------------------------------------------
    def apply(self, body: dict[str, Any], *, parked: ParkedCallback | None = None) -> Applied:
        """One status-queue record. Raises only for transient trouble (the record is retried)."""
        try:
            message = DeliveryMessage.model_validate(body)
        except ValidationError:
            appid = str(body.get("appid") or "unknown")[:64]
            digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
            return self._park(appid, f"invalid:{digest[:32]}", ParkReason.UNPARSED, body)
        kind = message.kind
        try:
            if kind == EventKind.TEMPLATE_SEND_JOB_FINISH:
                return self._template(
                    message, TemplateSendJobFinishEvent.model_validate(message.event), parked
                )
            if kind == EventKind.SUBSCRIBE_MSG_SENT:
                return self._subscribe(message, SubscribeMsgSentEvent.model_validate(message.event), parked)
            if kind == EventKind.MASS_SEND_JOB_FINISH:
                return self._mass(message, MassSendJobFinishEvent.model_validate(message.event), parked)
            if kind == EventKind.PUBLISH_JOB_FINISH:
                return self._publish(message, PublishJobFinishEvent.model_validate(message.event))
        except ValidationError as exc:
            logger.warning("delivery callback not understood; parked", kind=kind, errors=exc.error_count())
            return self._park(message.appid, message.dedupe_key, ParkReason.UNPARSED, body)
        reason = ParkReason.UNPARSED if kind == UNPARSED_KIND else ParkReason.UNKNOWN
        return self._park(message.appid, message.dedupe_key, reason, body)

    def _park(self, appid: str, key: str, reason: ParkReason, body: dict[str, Any]) -> Applied:
        new = self._parking.park(
            ParkedCallback(appid=appid, key=key, reason=reason, parked_at=self._now(), message=body)
        )
        return Applied(parked=reason, newly_parked=new)

    def _template(
        self, message: DeliveryMessage, event: TemplateSendJobFinishEvent, parked: ParkedCallback | None
    ) -> Applied:
        record = self._ledger.find_by_wechat_msgid(message.appid, event.msg_id)
        if record is None or record.channel is not Channel.TEMPLATE:
            return self._unmatched(message, parked)
        if event.delivered:
            state, reason = MessageState.DELIVERED, None
        else:
            blocked = (event.failure_reason or "").lower().replace(" ", "") == "userblock"
            state = MessageState.FAILED
            reason = DeliveryReason.USER_BLOCK if blocked else DeliveryReason.SYSTEM
        return self._record(record, state, reason, event.status)

    def _subscribe(
        self, message: DeliveryMessage, event: SubscribeMsgSentEvent, parked: ParkedCallback | None
    ) -> Applied:
        applied = Applied()
        missing: list[SubscribeMsgDelivery] = []
        for item in event.items:
            record = self._ledger.find_by_wechat_msgid(message.appid, item.msg_id)
            if record is None or record.channel is not Channel.SUBSCRIBE:
                missing.append(item)
                continue
            status = f"{item.error_code} {item.error_status}".strip()
            if item.delivered:
                one = self._record(record, MessageState.DELIVERED, None, status)
            else:
                one = self._record(record, MessageState.FAILED, DeliveryReason.SYSTEM, status)
                # Also on a redelivery (the state was recorded, the refund maybe not): the refund
                # itself happens once.
                if one.outcomes or self._failed_by_callback(record.message_id):
                    one.refunds += self._refund(record)
            applied.outcomes += one.outcomes
            applied.refunds += one.refunds
        if missing:
            # Only the items we could not match wait: the others are applied already.
            rest = message.model_copy(
                update={
                    "event": {
                        **message.event,
                        "items": [i.model_dump(mode="json") for i in missing],
                    }
                }
            )
            applied.parked = self._unmatched(rest, parked).parked
        return applied

    def _failed_by_callback(self, message_id: str) -> bool:
        fresh = self._ledger.get(message_id)
        return fresh is not None and fresh.state is MessageState.FAILED and fresh.delivered_at is not None

    def _refund(self, record: Message) -> int:
        """The failed delivery's one-time credit back; exactly once however often the callback
        comes (the consumption marker's deletion is the proof), also after a crash between the
        state change and the refund."""
        if record.channel is not Channel.SUBSCRIBE:
            return 0
        refunded = self._credits.refund_credit(
            record.appid, record.openid, record.template_id, record.message_id
        )
        return 1 if refunded else 0

    def _record(
        self, record: Message, state: MessageState, reason: str | None, status: str | None
    ) -> Applied:
        applied = Applied()
        now = self._now()
        moved = self._ledger.record_delivery(record, state=state, now=now, reason=reason, status=status)
        if not moved:
            fresh = self._ledger.get(record.message_id)
            if fresh is None:
                return applied
            if fresh.state is MessageState.UNKNOWN and fresh.reason == DeliveryReason.NO_CALLBACK:
                # The reconciler gave up on it between our read and our write: the callback
                # still tells the truth.
                record = fresh
                moved = self._ledger.record_delivery(
                    fresh, state=state, now=now, reason=reason, status=status
                )
            elif fresh.state is state and fresh.delivered_at is not None:
                # Recorded by an earlier delivery of this callback, which may have stopped before
                # its event went out: again (at least once; consumers dedupe on event_id).
                self._announce(fresh, state, fresh.reason, fresh.delivered_at)
                return applied
        if moved:
            applied.outcomes[str(state)] += 1
            self._announce(record, state, reason, now)
        return applied

    def _announce(self, record: Message, state: MessageState, reason: str | None, now: datetime) -> None:
        """MessageDelivered / MessageFailed. A failure to publish raises: the record comes back
        and the event goes out then."""
        if self._journey is None or state is MessageState.UNKNOWN:
            return
        detail_type = (
            JourneyDetailType.MESSAGE_DELIVERED
            if state is MessageState.DELIVERED
            else JourneyDetailType.MESSAGE_FAILED
        )
        attributes: dict[str, Any] = {
            "event_id": f"{record.appid}:message:{record.message_id}:{state}",
            "message_id": record.message_id,
            "channel": str(record.channel),
            "template_id": record.template_id,
            "origin": record.origin.model_dump(mode="json"),
        }
        if reason is not None:
            attributes["reason"] = reason
        self._journey.publish(
            [
                JourneyEvent(
                    detail_type=detail_type,
                    appid=record.appid,
                    openid=record.openid,
                    occurred_at=now,
                    source=DELIVERY_SOURCE,
                    attributes=attributes,
                )
            ]
        )

    def _mass(
        self, message: DeliveryMessage, event: MassSendJobFinishEvent, parked: ParkedCallback | None
    ) -> Applied:
        batch = self._mass_jobs.find_by_msg_id(message.appid, event.msg_id)
        if batch is None:
            return self._unmatched(message, parked)
        review = event.review_error_code
        job = MassJobResult(
            source="callback",
            status=event.status,
            outcome=str(event.outcome),
            review_error=review,
            review_meaning=REVIEW_ERRORS.get(review) if review is not None else None,
            total_count=event.total_count,
            filter_count=event.filter_count,
            sent_count=event.sent_count,
            error_count=event.error_count,
            article_urls=[u.model_dump(mode="json") for u in event.article_urls],
            copyright_check=event.copyright_check,
            finished_at=self._now(),
        )
        applied = Applied()
        if self._mass_jobs.record_job(batch.broadcast_id, batch.number, job):
            applied.outcomes[f"mass_{job.outcome}"] += 1
        return applied

    def _publish(self, message: DeliveryMessage, event: PublishJobFinishEvent) -> Applied:
        self._parking.save_publish(
            message.appid,
            event.publish_id,
            {
                "publish_id": event.publish_id,
                "publish_status": event.publish_status,
                "published": event.published,
                "article_id": event.article_id,
                "article_urls": [u.model_dump(mode="json") for u in event.article_urls],
                "fail_idx": event.fail_idx,
                "event": event.event,
                "finished_at": self._now().isoformat(),
            },
        )
        return Applied(outcomes=Counter({"publish": 1}))

    def _unmatched(self, message: DeliveryMessage, parked: ParkedCallback | None) -> Applied:
        if parked is not None:  # the reconciler retrying it: it stays where it is
            return Applied(parked=ParkReason.UNMATCHED)
        logger.info("delivery callback before (or without) its record; parked", kind=message.kind)
        return self._park(
            message.appid, message.dedupe_key, ParkReason.UNMATCHED, message.model_dump(mode="json")
        )


class ReconcileReport(BaseModel):
    appid: str
    unknown: int = Field(default=0, description="Sent messages marked unknown: no callback in time")
    mass_polled: int = Field(default=0, description="Mass jobs answered by /mass/get")
    mass_still_sending: int = 0
    parked_applied: int = Field(default=0, description="Parked callbacks whose record has appeared")
    parked_waiting: int = 0
    orphans: int = Field(default=0, description="Parked callbacks no record ever claimed")
    broadcasts_settled: int = 0
    errors: list[str] = Field(default_factory=list)


class Reconciler:
    """The scheduled sweep: parked callbacks applied, silent mass jobs polled, messages that never
    heard back marked `unknown`, broadcasts whose messages are all final settled.

    One item's trouble (an AWS error, a WeChat refusal) is reported and skipped, never the run's
    end: the next item, step and account still get their turn."""

    def __init__(
        self,
        *,
        delivery: DeliveryService,
        ledger: DeliveryLedger,
        mass_jobs: MassJobs,
        parking: CallbackParking,
        mass_status: MassStatus,
        broadcasts: BroadcastSettler,
        policy: ReconcilePolicy,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._delivery = delivery
        self._ledger = ledger
        self._mass_jobs = mass_jobs
        self._parking = parking
        self._mass_status = mass_status
        self._broadcasts = broadcasts
        self._policy = policy
        self._clock = clock
        self._monotonic = monotonic

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def reconcile(self, appid: str, *, deadline: float | None = None) -> ReconcileReport:
        report = ReconcileReport(appid=appid)
        until = deadline if deadline is not None else self._monotonic() + 60
        steps: list[tuple[str, Callable[[str, ReconcileReport, float], None]]] = [
            ("parked", self._parked),
            ("mass", self._mass),
            ("silent", self._silent),
            ("settle", self._settle),
        ]
        for name, step in steps:
            if self._monotonic() > until:
                report.errors.append(f"{name}: out of time, next run")
                continue
            try:
                step(appid, report, until)
            except Exception as exc:
                self._failed(report, name, exc)
        return report

    @staticmethod
    def _failed(report: ReconcileReport, where: str, exc: Exception) -> None:
        reason = exc.reason if isinstance(exc, WxReachError | WeChatApiError) else type(exc).__name__
        logger.warning("reconcile step failed", step=where, appid=report.appid, reason=reason)
        report.errors.append(f"{where}: {reason}")

    def _parked(self, appid: str, report: ReconcileReport, until: float) -> None:
        orphan_before = self._now() - timedelta(seconds=self._policy.orphan_after_seconds)
        for callback in self._parking.parked(appid, limit=self._policy.batch_limit):
            if self._monotonic() > until:
                return
            try:
                applied = self._delivery.apply(callback.message, parked=callback)
                if applied.parked is None:
                    self._parking.unpark(callback)
                    report.parked_applied += 1
                elif callback.parked_at < orphan_before:
                    if self._parking.mark_orphan(callback):
                        report.orphans += 1
                else:
                    report.parked_waiting += 1
            except Exception as exc:
                self._failed(report, "parked", exc)

    def _mass(self, appid: str, report: ReconcileReport, until: float) -> None:
        before = self._now() - timedelta(seconds=self._policy.mass_poll_after_seconds)
        # /mass/get shares WeChat's per-minute budget with the mass sender: a few per run.
        batches = self._mass_jobs.awaiting_jobs(
            appid, sent_before=before, limit=self._policy.mass_polls_per_run
        )
        for batch in batches:
            if batch.msg_id is None or self._monotonic() > until:
                continue
            try:
                self._poll(appid, batch, report)
            except Exception as exc:
                self._failed(report, "mass", exc)

    def _poll(self, appid: str, batch: MassBatch, report: ReconcileReport) -> None:
        assert batch.msg_id is not None
        try:
            status = self._mass_status.get_status(appid, batch.msg_id)
        except WeChatApiError as exc:
            if exc.errcode != INVALID_MSG_ID:
                raise
            status = f"errcode {exc.errcode}"  # WeChat does not know the job (any more)
        outcome = {
            "SEND_SUCCESS": str(MassSendOutcome.SENT),
            "SEND_FAIL": str(MassSendOutcome.SEND_FAILED),
            "DELETE": "deleted",
        }.get(status.upper(), "unknown" if status.startswith("errcode") else None)
        if outcome is None:  # SENDING, or a status we do not know: ask again next time
            report.mass_still_sending += 1
            return
        job = MassJobResult(source="poll", status=status, outcome=outcome, finished_at=self._now())
        if self._mass_jobs.record_job(batch.broadcast_id, batch.number, job):
            report.mass_polled += 1

    def _silent(self, appid: str, report: ReconcileReport, until: float) -> None:
        before = self._now() - timedelta(seconds=self._policy.unknown_after_seconds)
        while self._monotonic() <= until:
            page = self._ledger.awaiting(appid, sent_before=before, limit=self._policy.batch_limit)
            moved = 0
            for message in page:
                try:
                    if self._ledger.record_delivery(
                        message,
                        state=MessageState.UNKNOWN,
                        now=self._now(),
                        reason=DeliveryReason.NO_CALLBACK,
                    ):
                        moved += 1
                        logger.info(
                            "no delivery callback; marked unknown",
                            message_id=message.message_id,
                            openid=mask_openid(message.openid),
                        )
                except Exception as exc:
                    self._failed(report, "silent", exc)
            report.unknown += moved
            if moved == 0:
                return  # an empty page, or nothing moved (raced or failing): no endless loop

    def _settle(self, appid: str, report: ReconcileReport, until: float) -> None:
        report.broadcasts_settled += self._broadcasts.settle_open(appid)
