"""Delivery reports on disk: report JSON (GET .../broadcasts/{id}/report) in, one self-contained
HTML page and its three PNG charts out.

One broadcast's report goes through `normalise`, several (an account over a period) through
`combine`; both give a `Summary`, the only shape `write_report` renders.

The key figures, per channel (counts.delivery differs):
- template / subscribe: accepted by WeChat = awaiting_callback + delivered + failed + unknown
  (every message WeChat took, whatever came after); delivered = delivered; failed = the messages
  in state `failed` (refused at the send or failed after it).
- mass: accepted = total (WeChat's TotalCount over the finished jobs); delivered = sent (its
  SentCount); failed = errors (its ErrorCount) + the recipients of batches WeChat refused.
delivery_rate = delivered / accepted, None while nothing is accepted: the API's definition,
recomputed here from those sums for one report as for many, so both read the same way.
"""

from __future__ import annotations

import base64
import html
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypedDict

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure

NO_REASON = "(none)"
MAX_EXAMPLES = 3
# Bars in this order, then any other state alphabetically.
STATE_ORDER = ("delivered", "sent", "failed", "unknown", "skipped", "filtered", "queued", "sending")
FIGURE_INCHES = (8.0, 4.0)
DPI = 100


class BroadcastRef(TypedDict):
    id: str
    name: str
    channel: str
    state: str


class Failure(TypedDict):
    state: str
    reason: str
    count: int
    meaning: str | None
    examples: list[str]


class Bucket(TypedDict):
    start: str
    sent: int
    delivered: int
    failed: int


class Timeline(TypedDict):
    bucket_seconds: int
    buckets: list[Bucket]


class Export(TypedDict):
    broadcast_id: str
    key: str
    url: str | None  # None when the API could not pre-sign one
    rows: int


class Summary(TypedDict):
    title: str
    generated_at: str
    broadcasts: list[BroadcastRef]
    recipients: int
    accepted: int
    delivered: int
    failed: int
    delivery_rate: float | None
    outcomes: dict[str, dict[str, int]]  # state → reason → count; excluded recipients as "excluded"
    failures: list[Failure]
    timeline: Timeline
    outcomes_final: bool
    complete: bool
    scanned: int
    exports: list[Export]


@dataclass(frozen=True)
class ChartSeries:
    """What a chart plots: one value per label in each named series (a stack, a line, the bars)."""

    labels: list[str]
    values: dict[str, list[int]]


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    pngs: dict[str, Path]
    series: dict[str, ChartSeries]

    def as_json(self) -> dict[str, Any]:
        return {
            "html": str(self.html),
            "pngs": {name: str(path) for name, path in self.pngs.items()},
            "series": {name: {"labels": s.labels, "values": s.values} for name, s in self.series.items()},
        }


# -- report JSON → Summary -----------------------------------------------------------------------
def normalise(report: Mapping[str, Any]) -> Summary:
    broadcast, counts = report["broadcast"], report["counts"]
    delivery: Mapping[str, int] = counts.get("delivery", {})
    by_state: Mapping[str, int] = counts.get("by_state", {})
    if broadcast["channel"] == "mass":
        accepted = delivery.get("total", 0)
        delivered = delivery.get("sent", 0)
        failed = delivery.get("errors", 0) + by_state.get("failed", 0)
    else:
        accepted = sum(delivery.get(k, 0) for k in ("awaiting_callback", "delivered", "failed", "unknown"))
        delivered = delivery.get("delivered", 0)
        failed = by_state.get("failed", 0)
    export = report.get("export")
    timeline = report.get("timeline") or {}
    return {
        "title": broadcast["name"],
        "generated_at": report["generated_at"],
        "broadcasts": [
            {
                "id": broadcast["id"],
                "name": broadcast["name"],
                "channel": broadcast["channel"],
                "state": broadcast["state"],
            }
        ],
        "recipients": counts.get("recipients", 0),
        "accepted": accepted,
        "delivered": delivered,
        "failed": failed,
        "delivery_rate": _rate(delivered, accepted),
        "outcomes": _outcomes(by_state, counts.get("by_reason", {}), counts.get("excluded", {})),
        "failures": _merge_failures([report.get("failures", [])]),
        "timeline": {
            "bucket_seconds": timeline.get("bucket_seconds", 0),
            "buckets": [
                {"start": b["start"], "sent": b["sent"], "delivered": b["delivered"], "failed": b["failed"]}
                for b in timeline.get("buckets", [])
            ],
        },
        "outcomes_final": report.get("outcomes_final", True),
        "complete": report.get("complete", True),
        "scanned": report.get("scanned", 0),
        "exports": [
            {
                "broadcast_id": broadcast["id"],
                "key": export["key"],
                "url": export.get("url"),
                "rows": export["rows"],
            }
        ]
        if export
        else [],
    }


def combine(reports: list[dict[str, Any]], *, title: str) -> Summary:
    """Several broadcasts' reports as one: counts summed, failures merged by (state, reason),
    timelines on the grid of the coarsest bucket, the rate recomputed from the sums."""
    parts = [normalise(r) for r in reports]
    accepted = sum(p["accepted"] for p in parts)
    delivered = sum(p["delivered"] for p in parts)
    outcomes: dict[str, Counter[str]] = {}
    for part in parts:
        for state, reasons in part["outcomes"].items():
            outcomes.setdefault(state, Counter()).update(reasons)
    return {
        "title": title,
        "generated_at": max((p["generated_at"] for p in parts), default=""),
        "broadcasts": [b for p in parts for b in p["broadcasts"]],
        "recipients": sum(p["recipients"] for p in parts),
        "accepted": accepted,
        "delivered": delivered,
        "failed": sum(p["failed"] for p in parts),
        "delivery_rate": _rate(delivered, accepted),
        "outcomes": {state: dict(reasons) for state, reasons in outcomes.items()},
        "failures": _merge_failures(p["failures"] for p in parts),
        "timeline": _merge_timelines([p["timeline"] for p in parts]),
        "outcomes_final": all(p["outcomes_final"] for p in parts),
        "complete": all(p["complete"] for p in parts),
        "scanned": sum(p["scanned"] for p in parts),
        "exports": [e for p in parts for e in p["exports"]],
    }


def _rate(delivered: int, accepted: int) -> float | None:
    return delivered / accepted if accepted else None


def _outcomes(
    by_state: Mapping[str, int], by_reason: Mapping[str, Mapping[str, int]], excluded: Mapping[str, int]
) -> dict[str, dict[str, int]]:
    """state → reason → count; what a state's reasons leave unexplained goes under NO_REASON."""
    outcomes: dict[str, dict[str, int]] = {}
    for state in {*by_state, *by_reason}:
        reasons = {r: n for r, n in by_reason.get(state, {}).items() if n > 0}
        rest = by_state.get(state, 0) - sum(reasons.values())
        if rest > 0:
            reasons[NO_REASON] = rest
        if reasons:
            outcomes[state] = reasons
    if any(n > 0 for n in excluded.values()):
        outcomes["excluded"] = {r: n for r, n in excluded.items() if n > 0}
    return outcomes


def _merge_failures(lists: Iterable[Iterable[Mapping[str, Any]]]) -> list[Failure]:
    merged: dict[tuple[str, str], Failure] = {}
    for failures in lists:
        for f in failures:
            key = (f["state"], f["reason"])
            into = merged.setdefault(
                key, {"state": key[0], "reason": key[1], "count": 0, "meaning": None, "examples": []}
            )
            into["count"] += f["count"]
            into["meaning"] = into["meaning"] or f.get("meaning")
            for example in f.get("examples", []):
                if len(into["examples"]) < MAX_EXAMPLES and example not in into["examples"]:
                    into["examples"].append(example)
    return sorted(merged.values(), key=lambda f: (-f["count"], f["state"], f["reason"]))


def _merge_timelines(timelines: list[Timeline]) -> Timeline:
    """Each bucket lands in the coarsest grid's bucket holding its start; the grid is anchored on
    the first bucket of a timeline with that bucket size, so that timeline keeps its buckets."""
    seconds = max((t["bucket_seconds"] for t in timelines if t["buckets"]), default=0)
    if not seconds:
        return {"bucket_seconds": max((t["bucket_seconds"] for t in timelines), default=0), "buckets": []}
    anchor = next(
        _parse(t["buckets"][0]["start"]) for t in timelines if t["buckets"] and t["bucket_seconds"] == seconds
    )
    grid: dict[datetime, Counter[str]] = {}
    for timeline in timelines:
        for bucket in timeline["buckets"]:
            steps = (_parse(bucket["start"]) - anchor) // timedelta(seconds=seconds)
            slot = grid.setdefault(anchor + timedelta(seconds=seconds * steps), Counter())
            slot.update(sent=bucket["sent"], delivered=bucket["delivered"], failed=bucket["failed"])
    return {
        "bucket_seconds": seconds,
        "buckets": [
            {
                "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "sent": c["sent"],
                "delivered": c["delivered"],
                "failed": c["failed"],
            }
            for start, c in sorted(grid.items())
        ],
    }


def _parse(moment: str) -> datetime:
    parsed = datetime.fromisoformat(moment)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- Summary → files ------------------------------------------------------------------------------
def write_report(report: Summary, out_dir: Path) -> ReportFiles:
    """report.html (charts embedded as data URIs, nothing fetched) and the charts as PNGs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    series = {
        "outcomes": _outcomes_chart(report["outcomes"]),
        "timeline": _timeline_series(report["timeline"]),
        "failures": _failures_series(report["failures"]),
    }
    drawers: dict[str, tuple[str, str, Callable[[Axes, ChartSeries], None]]] = {
        "outcomes": ("Outcomes by state", "no recipients yet", _draw_outcomes),
        "timeline": (
            "Delivery over time (UTC)",
            "no sends in the timeline",
            partial(_draw_timeline, bucket_seconds=report["timeline"]["bucket_seconds"]),
        ),
        "failures": ("Failure reasons", "no failures", _draw_failures),
    }
    pngs: dict[str, Path] = {}
    for name, chart in series.items():
        figure = Figure(figsize=FIGURE_INCHES, dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)  # Agg explicitly: files only, never a display
        title, empty, draw = drawers[name]
        ax = figure.add_subplot()
        ax.set_title(title)
        if chart.labels:
            draw(ax, chart)
        else:
            ax.text(0.5, 0.5, f"Nothing to show: {empty}", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        pngs[name] = out_dir / f"{name}.png"
        figure.savefig(pngs[name], format="png", dpi=DPI)
    page = out_dir / "report.html"
    page.write_text(_html(report, {name: path.read_bytes() for name, path in pngs.items()}), encoding="utf-8")
    return ReportFiles(html=page, pngs=pngs, series=series)


def _state_key(state: str) -> tuple[int, str]:
    return (STATE_ORDER.index(state) if state in STATE_ORDER else len(STATE_ORDER), state)


def _outcomes_chart(outcomes: Mapping[str, Mapping[str, int]]) -> ChartSeries:
    states = sorted(outcomes, key=_state_key)
    reasons = sorted({r for s in states for r in outcomes[s]}, key=lambda r: (r == NO_REASON, r))
    return ChartSeries(states, {r: [outcomes[s].get(r, 0) for s in states] for r in reasons})


def _timeline_series(timeline: Timeline) -> ChartSeries:
    buckets = timeline["buckets"]
    return ChartSeries(
        [b["start"] for b in buckets], {k: [b[k] for b in buckets] for k in ("sent", "delivered", "failed")}
    )


def _failures_series(failures: list[Failure]) -> ChartSeries:
    return ChartSeries(
        [f"{f['state']}: {f['reason']}" for f in failures], {"count": [f["count"] for f in failures]}
    )


def _draw_outcomes(ax: Axes, chart: ChartSeries) -> None:
    bottoms = [0] * len(chart.labels)
    for reason, values in chart.values.items():
        grey = "#bbbbbb" if reason == NO_REASON else None
        ax.bar(chart.labels, values, bottom=bottoms, label=reason, color=grey)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    ax.set_ylabel("recipients")
    ax.legend(title="reason", fontsize="small", loc="upper left", bbox_to_anchor=(1, 1))


def _draw_timeline(ax: Axes, chart: ChartSeries, *, bucket_seconds: int) -> None:
    starts = [float(x) for x in date2num([_parse(label) for label in chart.labels])]
    step = max(bucket_seconds, 60) / 86400  # matplotlib dates count days
    for name, color in (("sent", "tab:blue"), ("delivered", "tab:green"), ("failed", "tab:red")):
        xs, ys = _quiet_gaps(starts, chart.values[name], step)
        ax.plot(xs, ys, marker="o", markersize=3, label=name, color=color)
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    # Half a bucket either side: a lone bucket would otherwise get an axis of years.
    ax.set_xlim(starts[0] - step / 2, starts[-1] + step / 2)
    ax.set_ylabel("messages per bucket")
    ax.legend(fontsize="small")


def _quiet_gaps(starts: list[float], values: list[int], step: float) -> tuple[list[float], list[int]]:
    """Zeros at both ends of a gap: a bucket left out had no sends, and a straight line across
    it would draw some."""
    xs: list[float] = []
    ys: list[int] = []
    for x, y in zip(starts, values, strict=True):
        if xs and x - xs[-1] > step * 1.5:
            xs += [xs[-1] + step, x - step]
            ys += [0, 0]
        xs.append(x)
        ys.append(y)
    return xs, ys


def _draw_failures(ax: Axes, chart: ChartSeries) -> None:
    bars = ax.barh(chart.labels, chart.values["count"], color="tab:red")
    ax.bar_label(bars, fmt="{:,.0f}", padding=3)  # small counts beside a large one stay readable
    ax.invert_yaxis()  # the largest on top
    ax.set_xlabel("recipients")


# -- HTML ------------------------------------------------------------------------------------------
STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}
.figures{display:flex;gap:1rem}.figures div{border:1px solid #ccc;padding:.5rem 1rem}
.figures b{display:block;font-size:1.6rem}.note{color:#a60}img{max-width:100%}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _html(report: Summary, pngs: Mapping[str, bytes]) -> str:
    def image(name: str, alt: str) -> str:
        data = base64.b64encode(pngs[name]).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'

    rate = report["delivery_rate"]
    figures = [
        ("recipients", f"{report['recipients']:,}"),
        ("delivered", f"{report['delivered']:,}"),
        ("failed", f"{report['failed']:,}"),
        ("delivery rate", "—" if rate is None else f"{rate:.1%}"),
    ]
    notes = []
    if not report["outcomes_final"]:
        notes.append("Outcomes are not final yet: some messages still await WeChat's result.")
    if not report["complete"]:
        notes.append(
            f"The scan stopped at its limit ({report['scanned']:,} read): failures and the timeline "
            "cover part of the audience."
        )
    broadcasts = "".join(
        f"<tr><td>{_e(b['name'])}</td><td><code>{_e(b['id'])}</code></td>"
        f"<td>{_e(b['channel'])}</td><td>{_e(b['state'])}</td></tr>"
        for b in report["broadcasts"]
    )
    failures = "".join(
        f"<tr><td>{_e(f['state'])}</td><td>{_e(f['reason'])}</td><td>{f['count']:,}</td>"
        f"<td>{_e(f['meaning'] or '')}</td><td>{', '.join(_e(x) for x in f['examples'])}</td></tr>"
        for f in report["failures"]
    )
    exports = "".join(
        f"<li><code>{_e(x['broadcast_id'])}</code>: {_export_link(x)}</li>" for x in report["exports"]
    )
    timeline = report["timeline"]
    bucket_note = (
        f"<p>One point per {_duration(timeline['bucket_seconds'])}.</p>" if timeline["buckets"] else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(report["title"])}</title><style>{STYLE}</style></head>
<body>
<h1>{_e(report["title"])}</h1>
<p>Generated at {_e(report["generated_at"])}</p>
{"".join(f'<p class="note">{_e(n)}</p>' for n in notes)}
<table><tr><th>broadcast</th><th>id</th><th>channel</th><th>state</th></tr>{broadcasts}</table>
<div class="figures">{"".join(f"<div>{_e(label)}<b>{_e(value)}</b></div>" for label, value in figures)}</div>
<h2>Outcomes by state</h2>
{image("outcomes", "Outcomes by state, stacked by reason")}
<h2>Delivery over time</h2>
{image("timeline", "Sent, delivered and failed per bucket")}
{bucket_note}
<h2>Failure reasons</h2>
{image("failures", "Failures by reason")}
<table><tr><th>state</th><th>reason</th><th>count</th><th>meaning</th><th>examples (masked)</th></tr>
{failures}</table>
{f"<h2>Export</h2><ul>{exports}</ul>" if exports else ""}
</body></html>
"""


def _duration(seconds: int) -> str:
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _export_link(export: Export) -> str:
    text = f"CSV, {export['rows']:,} rows"
    url = export["url"] or ""
    # Only web links become links: an href of another scheme could run script.
    if url.startswith(("https://", "http://")):
        return f'<a href="{_e(url)}">{_e(text)}</a>'
    return f"{_e(text)} in the broadcast bucket at <code>{_e(export['key'])}</code>"
