"""A broadcast's delivery report: failure reasons with masked examples, delivery over time, and
the rows of its per-recipient CSV export. The counts come from the broadcast's counters; this
module reads the messages (or mass batches) once for everything the counters do not hold."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

EXAMPLES_PER_REASON = 3
MAX_BUCKETS = 48  # when the caller picks no width
MAX_REQUESTED_BUCKETS = 2000  # a width too fine for the span is widened to fit
# Bucket widths a person reads at a glance: 1, 5, 15, 30 min, 1, 3, 6, 12 h, 1 day.
NICE_BUCKETS = (60, 300, 900, 1800, 3600, 10800, 21600, 43200, 86400)
TEMPLATE_CSV_COLUMNS = ("openid", "state", "reason", "delivery_status", "errcode", "sent_at", "delivered_at")
MASS_CSV_COLUMNS = ("openid", "batch", "batch_state", "job_outcome", "job_status")


@dataclass(frozen=True)
class RecipientOutcome:
    """One message of a broadcast, as the report reads it."""

    openid: str
    state: str
    reason: str | None = None
    delivery_status: str | None = None
    errcode: int | None = None
    sent_at: datetime | None = None
    delivered_at: datetime | None = None
    updated_at: datetime | None = None


class FailureGroup(BaseModel):
    state: str = Field(
        description="failed, skipped, unknown, cancelled, excluded (before the split) or filtered (by WeChat)"
    )
    reason: str
    count: int
    meaning: str | None = Field(default=None, description="What WeChat's code or status means")
    examples: list[str] = Field(default_factory=list, description="Masked openids (first and last 4)")


class TimeBucket(BaseModel):
    start: datetime
    sent: int = 0
    delivered: int = 0
    failed: int = 0


class Timeline(BaseModel):
    bucket_seconds: int
    buckets: list[TimeBucket] = Field(default_factory=list)


class ReportExport(BaseModel):
    key: str = Field(description="The CSV object in the broadcast bucket")
    url: str | None = Field(default=None, description="Pre-signed download URL (1 hour)")
    rows: int


def display_openid(openid: str) -> str:
    """Enough for a person to find the row in the export, not enough to identify anyone."""
    return f"{openid[:4]}…{openid[-4:]}" if len(openid) > 10 else "…"


def csv_line(values: Iterable[Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(["" if v is None else v for v in values])
    return out.getvalue()


def _iso(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if at else ""


def template_csv_row(outcome: RecipientOutcome) -> str:
    return csv_line(
        (
            outcome.openid,
            outcome.state,
            outcome.reason,
            outcome.delivery_status,
            outcome.errcode,
            _iso(outcome.sent_at),
            _iso(outcome.delivered_at),
        )
    )


class ReportBuilder:
    """Collects failures and timed events while the caller walks the broadcast once."""

    def __init__(self, *, bucket_seconds: int | None = None) -> None:
        self._bucket_seconds = bucket_seconds
        self._groups: dict[tuple[str, str], FailureGroup] = {}
        self._events: list[tuple[int, str, int]] = []  # (epoch, sent|delivered|failed, n)

    def failure(
        self,
        state: str,
        reason: str,
        count: int = 1,
        *,
        openid: str | None = None,
        meaning: str | None = None,
    ) -> None:
        if count <= 0:
            return
        group = self._groups.setdefault((state, reason), FailureGroup(state=state, reason=reason, count=0))
        group.count += count
        if meaning and not group.meaning:
            group.meaning = meaning
        if openid and len(group.examples) < EXAMPLES_PER_REASON:
            group.examples.append(display_openid(openid))

    def event(self, at: datetime | None, kind: str, count: int = 1) -> None:
        if at is not None and count > 0:
            self._events.append((int(at.timestamp()), kind, count))

    def template_message(self, outcome: RecipientOutcome, *, meaning: str | None = None) -> None:
        self.event(outcome.sent_at, "sent")
        if outcome.state == "delivered":
            self.event(outcome.delivered_at, "delivered")
        elif outcome.state == "failed":
            # After the send: the delivery callback's time; before it: when the send failed.
            self.event(outcome.delivered_at or outcome.updated_at, "failed")
        if outcome.state in ("failed", "skipped", "unknown"):
            self.failure(
                outcome.state, outcome.reason or "unspecified", openid=outcome.openid, meaning=meaning
            )

    def failures(self) -> list[FailureGroup]:
        return sorted(self._groups.values(), key=lambda g: (-g.count, g.state, g.reason))

    def timeline(self) -> Timeline:
        if not self._events:
            return Timeline(bucket_seconds=self._bucket_seconds or NICE_BUCKETS[0])
        first = min(at for at, _, _ in self._events)
        last = max(at for at, _, _ in self._events)
        width = self._bucket_seconds or _nice_width(last - first, MAX_BUCKETS)
        if (last - first) // width >= MAX_REQUESTED_BUCKETS:
            width = _nice_width(last - first, MAX_REQUESTED_BUCKETS)
        origin = first - first % width
        buckets = [
            TimeBucket(start=datetime.fromtimestamp(origin + i * width, UTC))
            for i in range((last - origin) // width + 1)
        ]
        for at, kind, count in self._events:
            bucket = buckets[(at - origin) // width]
            setattr(bucket, kind, getattr(bucket, kind) + count)
        return Timeline(bucket_seconds=width, buckets=buckets)


def _nice_width(span: int, buckets: int) -> int:
    fitting = (w for w in NICE_BUCKETS if span // w < buckets)
    return next(fitting, max(NICE_BUCKETS[-1], span // buckets + 1))
