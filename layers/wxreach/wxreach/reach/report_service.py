"""The operator's delivery report of a broadcast (GET …/broadcasts/{id}/report)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel, Field

from wxreach.reach.broadcast_service import BroadcastCounts, BroadcastService, ReportSink
from wxreach.reach.broadcasts import Broadcast, BroadcastChannel
from wxreach.reach.mass_sending import MassBatch
from wxreach.reach.reports import (
    MASS_CSV_COLUMNS,
    TEMPLATE_CSV_COLUMNS,
    FailureGroup,
    RecipientOutcome,
    ReportBuilder,
    ReportExport,
    Timeline,
    csv_line,
    template_csv_row,
)

# Read at most this many messages (or mass recipients) per report; beyond, `complete` is false.
SCAN_LIMIT = 200_000
SCAN_SECONDS = 20.0  # inside API Gateway's 29 s


class BroadcastOutcomes(Protocol):
    def broadcast_outcomes(self, broadcast_id: str) -> Iterator[RecipientOutcome]: ...


class MassBatchReader(Protocol):
    def iter_batches(self, broadcast_id: str, *, with_openids: bool = False) -> Iterator[MassBatch]: ...


class BroadcastReport(BaseModel):
    broadcast: Broadcast
    counts: BroadcastCounts
    outcomes_final: bool = Field(description="No message awaits its callback, no mass job its result")
    delivery_rate: float | None = Field(
        description="Delivered ÷ accepted by WeChat (template: sent, delivered, failed or unknown after"
        " the send; mass: the jobs' sent ÷ total); null before anything was accepted"
    )
    failures: list[FailureGroup] = Field(description="By state and reason, most frequent first")
    timeline: Timeline = Field(description="Sent, delivered and failed per time bucket")
    scanned: int = Field(description="Messages (mass: recipients) read for failures and the timeline")
    complete: bool = Field(description="False when the read stopped at its limit")
    export: ReportExport | None = Field(default=None, description="The per-recipient CSV, when asked")
    generated_at: datetime


def _rate(delivered: int, accepted: int) -> float | None:
    return round(delivered / accepted, 4) if accepted else None


class ReportService:
    def __init__(
        self,
        *,
        broadcasts: BroadcastService,
        outcomes: BroadcastOutcomes,
        mass_batches: MassBatchReader,
        sink: ReportSink,
        clock: Callable[[], float] = time.time,
        scan_limit: int = SCAN_LIMIT,
    ) -> None:
        self._broadcasts = broadcasts
        self._outcomes = outcomes
        self._mass_batches = mass_batches
        self._sink = sink
        self._clock = clock
        self._scan_limit = scan_limit

    def report(
        self, appid: str, broadcast_id: str, *, bucket_seconds: int | None = None, export: bool = False
    ) -> BroadcastReport:
        view = self._broadcasts.view(appid, broadcast_id)
        builder = ReportBuilder(bucket_seconds=bucket_seconds)
        rows: list[str] = []
        if view.broadcast.channel is BroadcastChannel.MASS:
            scanned, complete = self._mass(view.broadcast, builder, rows if export else None)
            delivery = view.counts.delivery
            rate = _rate(int(delivery.get("sent", 0)), int(delivery.get("total", 0)))
        else:
            scanned, complete = self._template(view.broadcast, builder, rows if export else None)
            d = view.counts.delivery
            accepted = sum(int(d.get(k, 0)) for k in ("awaiting_callback", "delivered", "failed", "unknown"))
            rate = _rate(int(d.get("delivered", 0)), accepted)
        for reason, count in view.counts.excluded.items():
            builder.failure("excluded", reason, count)
        exported = None
        if export:
            exported = self._export(view.broadcast, rows)
        return BroadcastReport(
            broadcast=view.broadcast,
            counts=view.counts,
            outcomes_final=view.outcomes_final,
            delivery_rate=rate,
            failures=builder.failures(),
            timeline=builder.timeline(),
            scanned=scanned,
            complete=complete,
            export=exported,
            generated_at=datetime.fromtimestamp(self._clock(), UTC),
        )

    def _template(
        self, broadcast: Broadcast, builder: ReportBuilder, rows: list[str] | None
    ) -> tuple[int, bool]:
        deadline = time.monotonic() + SCAN_SECONDS
        scanned = 0
        for outcome in self._outcomes.broadcast_outcomes(broadcast.id):
            if scanned >= self._scan_limit or time.monotonic() > deadline:
                return scanned, False
            scanned += 1
            meaning = outcome.delivery_status or (f"errcode {outcome.errcode}" if outcome.errcode else None)
            builder.template_message(outcome, meaning=meaning)
            if rows is not None:
                rows.append(template_csv_row(outcome))
        return scanned, True

    def _mass(self, broadcast: Broadcast, builder: ReportBuilder, rows: list[str] | None) -> tuple[int, bool]:
        """Mass results are per job (WeChat reports counts, not recipients): each batch's
        recipients share its batch state and job outcome."""
        deadline = time.monotonic() + SCAN_SECONDS
        scanned = 0
        for batch in self._mass_batches.iter_batches(broadcast.id, with_openids=True):
            if scanned >= self._scan_limit or time.monotonic() > deadline:
                return scanned, False
            scanned += batch.recipients
            job = batch.job
            example = batch.openids[0] if batch.openids else None
            builder.event(batch.sent_at, "sent", batch.recipients if batch.sent_at else 0)
            if batch.reason and str(batch.state) != "sent":
                builder.failure(str(batch.state), batch.reason, batch.recipients, openid=example)
            if job is not None:
                finished = job.finished_at or batch.updated_at
                if job.outcome in ("send_failed", "review_failed"):
                    meaning = job.review_meaning or job.status
                    builder.failure("failed", job.outcome, batch.recipients, openid=example, meaning=meaning)
                    builder.event(finished, "failed", batch.recipients)
                else:
                    builder.event(finished, "delivered", job.sent_count or 0)
                    builder.event(finished, "failed", job.error_count or 0)
                    builder.failure("failed", "wechat_error", job.error_count or 0)
                    # FilterCount is what was left to send after WeChat's filtering.
                    if job.total_count is not None and job.filter_count is not None:
                        builder.failure("filtered", "wechat_filter", job.total_count - job.filter_count)
            if rows is not None:
                rows.extend(self._mass_rows(batch))
        return scanned, True

    @staticmethod
    def _mass_rows(batch: MassBatch) -> Iterator[str]:
        job: dict[str, Any] = {"outcome": batch.job.outcome, "status": batch.job.status} if batch.job else {}
        tail = (batch.number, str(batch.state), job.get("outcome"), job.get("status"))
        if batch.openids is None:  # sendall: WeChat picks the recipients
            yield csv_line(("", *tail))
            return
        for openid in batch.openids:
            yield csv_line((openid, *tail))

    def _export(self, broadcast: Broadcast, rows: list[str]) -> ReportExport:
        columns = MASS_CSV_COLUMNS if broadcast.channel is BroadcastChannel.MASS else TEMPLATE_CSV_COLUMNS
        key = f"reports/{broadcast.id}/outcomes.csv"
        self._sink.write_lines(key, iter([csv_line(columns), *rows]), content_type="text/csv; charset=utf-8")
        return ReportExport(key=key, url=self._sink.url(key), rows=len(rows))
