"""`wxreach report`: one broadcast's delivery report, or an account's over a period (its
broadcasts' reports combined); key figures here, HTML and PNG charts with --out."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Group, RenderableType

from wxreach_cli.client import Api
from wxreach_cli.inputs import DATETIME_FORMATS
from wxreach_cli.output import fields, rows
from wxreach_cli.session import AccountOption, session

if TYPE_CHECKING:
    from wxreach_cli.report import Summary

UNSENT_STATES = {"draft", "scheduled"}


class ExportFormat(StrEnum):
    CSV = "csv"


def report(
    ctx: typer.Context,
    account: AccountOption,
    broadcast_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="A broadcast; or give --since for a period.")
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(
            formats=DATETIME_FORMATS, help="Period: broadcasts created from then (UTC unless given)."
        ),
    ] = None,
    until: Annotated[
        datetime | None,
        typer.Option(formats=DATETIME_FORMATS, help="Period: … until then, exclusive (default now)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(file_okay=False, help="Write report.html and the charts (PNG) here.")
    ] = None,
    export: Annotated[
        ExportFormat | None, typer.Option(help="Also a per-recipient CSV in the bucket; prints its URL.")
    ] = None,
    bucket_seconds: Annotated[
        int | None, typer.Option(min=60, max=86400, help="Timeline resolution (default: at most 48 points).")
    ] = None,
) -> None:
    """Delivery report: who got it, who did not and why, over time."""
    if (broadcast_id is None) == (since is None):
        raise typer.BadParameter("give a broadcast ID, or --since (and --until) for a period")
    if until is not None and since is None:
        raise typer.BadParameter("--until goes with --since")
    # matplotlib takes a second to import: only this command needs it.
    from wxreach_cli import report as charts

    s = session(ctx)
    params = {"bucket_seconds": bucket_seconds, "export": export}
    if broadcast_id is not None:
        raw = s.api.get("accounts", account, "broadcasts", broadcast_id, "report", params=params)
        summary, data = charts.normalise(raw), raw
    else:
        assert since is not None
        start, end = _aware(since), _aware(until or datetime.now(UTC))
        ids = [b["id"] for b in _created_between(s.api, account, start, end)]
        if not ids:
            s.out.note(
                f"no broadcast was sent from {account} between {start:%Y-%m-%d %H:%M} and"
                f" {end:%Y-%m-%d %H:%M} UTC"
            )
        reports = [s.api.get("accounts", account, "broadcasts", i, "report", params=params) for i in ids]
        summary = charts.combine(reports, title=f"{account}, {start:%Y-%m-%d} – {end:%Y-%m-%d}")
        data = dict(summary)
    files = charts.write_report(summary, out) if out is not None else None
    if files is not None:
        data = {**data, "files": files.as_json()}
    s.out.result(data, lambda _: _key_figures(summary))
    for e in summary["exports"]:
        s.out.link(f"CSV of {e['broadcast_id']} ({e['rows']} rows):", e["url"] or f"s3 key {e['key']}")
    if files is not None:
        s.out.note(f"report: {files.html}")
        for path in files.pngs.values():
            s.out.note(f"chart:  {path}")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _created_between(api: Api, account: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Sent broadcasts created in [start, end), oldest first (the list is newest first)."""
    found: list[dict[str, Any]] = []
    after = None
    while True:
        page = api.get("accounts", account, "broadcasts", params={"limit": 100, "after": after})
        for b in page["broadcasts"]:
            created = datetime.fromisoformat(b["created_at"])
            if created < start:
                return found[::-1]
            if created < end and b["state"] not in UNSENT_STATES:
                found.append(b)
        after = page.get("next")
        if not after:
            return found[::-1]


def _key_figures(summary: Summary) -> RenderableType:
    rate = summary["delivery_rate"]
    one = summary["broadcasts"][0] if len(summary["broadcasts"]) == 1 else None
    caveats = [
        "outcomes are not final yet (callbacks still due)" if not summary["outcomes_final"] else None,
        f"only the first {summary['scanned']} messages were read" if not summary["complete"] else None,
    ]
    parts: list[RenderableType] = [
        fields(
            [
                ("report", summary["title"]),
                ("broadcast", one and f"{one['name']} ({one['id']}, {one['channel']}, {one['state']})"),
                ("broadcasts", None if one else len(summary["broadcasts"])),
                ("recipients", summary["recipients"]),
                ("accepted by WeChat", summary["accepted"]),
                ("delivered", summary["delivered"]),
                ("failed", summary["failed"]),
                ("delivery rate", None if rate is None else f"{rate:.1%}"),
                ("note", [c for c in caveats if c]),
                ("generated at", summary["generated_at"]),
            ]
        ),
    ]
    if not one and summary["broadcasts"]:
        parts.append(rows(summary["broadcasts"], ["id", "name", "channel", "state"], title="Broadcasts"))
    if summary["failures"]:
        parts.append(
            rows(summary["failures"], ["state", "reason", "count", "meaning", "examples"], title="Failures")
        )
    return Group(*parts)
