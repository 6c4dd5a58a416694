"""`wxreach broadcast …`: drafts, estimates, dry runs, publishing (with the large-send guard),
cancelling, and watching one go out."""

from __future__ import annotations

import sys
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType

from wxreach_cli.client import ApiError, CliError, UsageProblem
from wxreach_cli.inputs import DATETIME_FORMATS, json_file, pairs, recipients, utc
from wxreach_cli.output import Output, counter, fields, rows
from wxreach_cli.session import AccountOption, session
from wxreach_cli.watch import Meter, poll

broadcast = typer.Typer(
    help="Broadcasts: template, subscription and mass sends to an audience.", no_args_is_help=True
)

FINAL_STATES = {"sent", "partially_sent", "failed", "cancelled"}
WATCHED = ("sent", "delivered", "failed", "skipped")
IdArgument = Annotated[str, typer.Argument(metavar="ID", help="The broadcast id (b + 20 hex).")]


class BroadcastChannel(StrEnum):
    TEMPLATE = "template"
    SUBSCRIBE = "subscribe"
    MASS = "mass"


class BroadcastState(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    SENT = "sent"
    PARTIALLY_SENT = "partially_sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


class MassType(StrEnum):
    MPNEWS = "mpnews"
    TEXT = "text"
    IMAGE = "image"
    VOICE = "voice"
    MPVIDEO = "mpvideo"


class SegmentFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


@broadcast.command("create")
def create(
    ctx: typer.Context,
    account: AccountOption,
    name: Annotated[str | None, typer.Option(help="What operators call it.")] = None,
    channel: Annotated[BroadcastChannel | None, typer.Option(help="Default: template.")] = None,
    tag: Annotated[int | None, typer.Option(help="Audience: a WeChat tag id.")] = None,
    segment: Annotated[
        str | None, typer.Option(help="Audience: a segment object's key in the bucket.")
    ] = None,
    segment_format: Annotated[SegmentFormat, typer.Option(help="The segment object's format.")] = (
        SegmentFormat.JSONL
    ),
    recipients_file: Annotated[
        Path | None,
        typer.Option(
            "--recipients",
            exists=True,
            dir_okay=False,
            help="Audience: up to 1 000 recipients inline, from JSON lines or CSV (openid + parameters).",
        ),
    ] = None,
    credit_holders: Annotated[
        bool, typer.Option("--credit-holders", help="Subscribe: only followers holding a credit.")
    ] = False,
    template: Annotated[str | None, typer.Option("--template", "-t", help="Template id.")] = None,
    data: Annotated[
        list[str] | None, typer.Option("--data", "-d", help="KEY=VALUE per keyword; repeat.")
    ] = None,
    url: Annotated[str | None, typer.Option(help="Template jump: a web page.")] = None,
    page: Annotated[str | None, typer.Option(help="Subscription jump: a web page.")] = None,
    text: Annotated[str | None, typer.Option(help="Mass: a text message.")] = None,
    media_id: Annotated[str | None, typer.Option(help="Mass: a draft (mpnews) or media id.")] = None,
    msgtype: Annotated[MassType | None, typer.Option(help="Mass: the media's type (default mpnews).")] = None,
    request_key: Annotated[str | None, typer.Option(help="Idempotency key: creates it once.")] = None,
    spec: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="A CreateBroadcast JSON body; the options above win."),
    ] = None,
) -> None:
    """Create a draft. The audience is every follower unless --tag, --segment, --recipients or
    --credit-holders narrows it."""
    body = json_file(spec) if spec else {}
    body["channel"] = channel or body.get("channel") or BroadcastChannel.TEMPLATE
    for key, value in (("name", name), ("request_key", request_key)):
        if value is not None:
            body[key] = value
    body["audience"] = _audience(
        body.get("audience"), tag, segment, segment_format, recipients_file, credit_holders
    )
    if template or data or url or page:
        content = {**body.get("content", {}), "template_id": template, "url": url, "page": page}
        if data:
            content["data"] = pairs(data, option="--data")
        body["content"] = {k: v for k, v in content.items() if v is not None}
    if text is not None:
        body["mass"] = {"msgtype": MassType.TEXT, "text": text}
    elif media_id is not None:
        body["mass"] = {"msgtype": msgtype or MassType.MPNEWS, "media_id": media_id}
    s = session(ctx)
    s.out.result(s.api.post("accounts", account, "broadcasts", body=body), broadcast_fields)


def _audience(
    given: dict[str, Any] | None,
    tag: int | None,
    segment: str | None,
    segment_format: SegmentFormat,
    recipients_file: Path | None,
    credit_holders: bool,
) -> dict[str, Any]:
    chosen = [
        option
        for option, value in (("--tag", tag), ("--segment", segment), ("--recipients", recipients_file))
        if value is not None
    ]
    if len(chosen) > 1:
        raise typer.BadParameter(f"give one audience, not {' and '.join(chosen)}")
    if tag is not None:
        return {"kind": "tag", "tag_id": tag}
    members: dict[str, Any] = {}
    if segment is not None:
        members = {"segment": {"key": segment, "format": segment_format}}
    elif recipients_file is not None:
        members = {"recipients": recipients(recipients_file)}
    if credit_holders:
        return {"kind": "credit_holders", **members}
    if members:
        return {"kind": "segment", **members}
    return given or {"kind": "all"}


@broadcast.command("list")
def list_broadcasts(
    ctx: typer.Context,
    account: AccountOption,
    state: Annotated[BroadcastState | None, typer.Option(help="Only in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="At most this many.")] = 20,
    after: Annotated[str | None, typer.Option(help="Continue after this cursor.")] = None,
) -> None:
    """Broadcasts, newest first."""
    s = session(ctx)
    page = s.api.get(
        "accounts", account, "broadcasts", params={"state": state, "limit": limit, "after": after}
    )
    s.out.result(
        page,
        lambda data: rows(
            data["broadcasts"], ["id", "name", "channel", "state", "created_at", "scheduled_at"]
        ),
    )
    if page.get("next"):
        s.out.note(f"more: --after {page['next']}")


@broadcast.command("show")
def show(ctx: typer.Context, broadcast_id: IdArgument, account: AccountOption) -> None:
    """A broadcast, its counts by state and reason."""
    s = session(ctx)
    s.out.result(s.api.get("accounts", account, "broadcasts", broadcast_id), view_summary)


@broadcast.command("estimate")
def estimate(ctx: typer.Context, broadcast_id: IdArgument, account: AccountOption) -> None:
    """Exactly how many it would reach now, and who is left out and why."""
    s = session(ctx)
    s.out.result(s.api.post("accounts", account, "broadcasts", broadcast_id, "estimate"), estimate_fields)


@broadcast.command("dry-run")
def dry_run(ctx: typer.Context, broadcast_id: IdArgument, account: AccountOption) -> None:
    """Who would get what (a report in the bucket, its first lines here); sends nothing."""
    s = session(ctx)

    def render(data: dict[str, Any]) -> RenderableType:
        return Group(
            estimate_fields(data["estimate"]),
            fields([("report", data["key"])]),
            rows(data["sample"], ["openid", "would_send", "reason", "values", "detail"], title="First lines"),
        )

    rehearsed = s.api.post("accounts", account, "broadcasts", broadcast_id, "dry-run")
    s.out.result(rehearsed, render)
    if rehearsed.get("url"):
        s.out.link("download (1 hour):", rehearsed["url"])


@broadcast.command("publish")
def publish(
    ctx: typer.Context,
    broadcast_id: IdArgument,
    account: AccountOption,
    at: Annotated[
        datetime | None, typer.Option(formats=DATETIME_FORMATS, help="Send at this time (UTC unless given).")
    ] = None,
    confirm: Annotated[
        int | None,
        typer.Option(min=0, help="The estimate's exact recipient count (needed above the threshold)."),
    ] = None,
) -> None:
    """Send now or at a time. Above the large-send threshold the exact count must be confirmed:
    typed at the prompt on a terminal, else given with --confirm."""
    s = session(ctx)
    path = ("accounts", account, "broadcasts", broadcast_id)
    body: dict[str, Any] = {"at": utc(at)} if at else {}
    if confirm is None:
        proposed = s.api.post(*path, "estimate")
        if proposed["needs_confirmation"]:
            confirm = _confirmed(s.out, broadcast_id, proposed)
    try:
        published = s.api.post(*path, "publish", body=_with_confirm(body, confirm))
    except ApiError as exc:
        if exc.error != "confirmation_required" or confirm is not None:
            raise
        # The audience grew past the threshold since the estimate.
        confirm = _confirmed(s.out, broadcast_id, s.api.post(*path, "estimate"))
        published = s.api.post(*path, "publish", body=_with_confirm(body, confirm))
    s.out.result(published, broadcast_fields)


def _with_confirm(body: dict[str, Any], confirm: int | None) -> dict[str, Any]:
    return body if confirm is None else {**body, "confirm": confirm}


def _confirmed(out: Output, broadcast_id: str, proposed: dict[str, Any]) -> int:
    count = int(proposed["recipients"])
    needed = f"{count} recipients is over the large-send threshold ({proposed['large_send_threshold']})"
    if not sys.stdin.isatty():
        raise UsageProblem(
            f"publishing to {needed}: confirm the count",
            hint=f"check `wxreach broadcast estimate {broadcast_id}`, then pass --confirm {count}",
        )
    out.errors.print(estimate_fields(proposed))
    typed = typer.prompt(
        f"Publishing to {needed}. Type {count} to confirm", err=True, default="", show_default=False
    )
    if typed.strip() != str(count):
        raise CliError(f"typed {typed.strip()!r}, not {count}: nothing was published")
    return count


@broadcast.command("cancel")
def cancel(ctx: typer.Context, broadcast_id: IdArgument, account: AccountOption) -> None:
    """Stop a scheduled or sending broadcast; says exactly what was sent before the cancel."""
    s = session(ctx)
    s.out.result(s.api.post("accounts", account, "broadcasts", broadcast_id, "cancel"), broadcast_fields)


@broadcast.command("watch")
def watch(
    ctx: typer.Context,
    broadcast_id: IdArgument,
    account: AccountOption,
    interval: Annotated[float, typer.Option(min=0, help="Seconds between polls.")] = 2.0,
    timeout: Annotated[float, typer.Option(min=0, help="Give up (exit 1) after this many seconds.")] = 3600.0,
) -> None:
    """Follow a broadcast until it is sent, partially sent, failed or cancelled; exits 1 when it
    failed or the timeout comes first."""
    s = session(ctx)
    path = ("accounts", account, "broadcasts", broadcast_id)
    with Meter(s.out, WATCHED) as meter:

        def seen(view: dict[str, Any]) -> None:
            counts = view["counts"]
            meter.update(_status(view), counts.get("by_state", {}), counts.get("recipients") or None)

        view, final = poll(
            lambda: s.api.get(*path),
            lambda view: view["broadcast"]["state"] in FINAL_STATES,
            interval=interval,
            timeout=timeout,
            seen=seen,
        )
    state = view["broadcast"]["state"]
    if not final:
        raise CliError(
            f"broadcast {broadcast_id} is still {state} after {timeout:g} s", hint="watch it again later"
        )
    s.out.result(view, view_summary)
    if state == "failed":
        raise CliError(f"broadcast {broadcast_id} failed: {view['broadcast'].get('failure')}")


def _status(view: dict[str, Any]) -> str:
    b, counts = view["broadcast"], view["counts"]
    split = b.get("split") or {}
    split_state, in_flight = split.get("state", "pending"), counts.get("in_flight", 0)
    return f"{b['name']} ({b['id']}): {b['state']}, split {split_state}, in flight {in_flight}"


def _audience_text(audience: dict[str, Any]) -> str:
    kind = audience["kind"]
    if audience.get("tag_id") is not None:
        return f"{kind} {audience['tag_id']}"
    if audience.get("segment"):
        return f"{kind} s3:{audience['segment']['key']}"
    if audience.get("recipients"):
        return f"{kind}, {len(audience['recipients'])} inline"
    return kind


def broadcast_fields(b: dict[str, Any]) -> RenderableType:
    cancelled = b.get("cancel") or {}
    return fields(
        [
            ("id", b["id"]),
            ("name", b["name"]),
            ("channel", b["channel"]),
            ("state", b["state"]),
            ("audience", _audience_text(b["audience"])),
            ("template", (b.get("content") or {}).get("template_id")),
            ("mass", (b.get("mass") or {}).get("msgtype")),
            ("scheduled at", b.get("scheduled_at")),
            ("confirmed", b.get("confirmed_count")),
            ("published", b.get("published_at") and f"{b['published_at']} by {b.get('published_by')}"),
            ("finished at", b.get("finished_at")),
            ("failure", b.get("failure")),
            (
                "cancel",
                cancelled and {k: cancelled.get(k) for k in ("sent", "failed", "not_sent", "in_flight")},
            ),
        ]
    )


def view_summary(view: dict[str, Any]) -> RenderableType:
    counts = view["counts"]
    by_reason = [
        {"state": state, "reason": reason, "count": n}
        for state, reasons in counts.get("by_reason", {}).items()
        for reason, n in reasons.items()
    ]
    parts: list[RenderableType] = [
        broadcast_fields(view["broadcast"]),
        fields(
            [
                ("recipients", counts["recipients"]),
                ("in flight", counts.get("in_flight")),
                ("delivery", counts.get("delivery")),
            ]
        ),
        counter(counts.get("by_state", {}), title="By state"),
    ]
    if by_reason:
        parts.append(rows(by_reason, ["state", "reason", "count"], title="By reason"))
    if counts.get("excluded"):
        parts.append(counter(counts["excluded"], title="Excluded", key="reason"))
    return Group(*parts)


def estimate_fields(e: dict[str, Any]) -> RenderableType:
    return fields(
        [
            ("recipients", e["recipients"]),
            ("excluded", e.get("excluded")),
            ("after today's cap", e.get("deferred_daily_cap")),
            ("needs confirmation", e["needs_confirmation"]),
            ("threshold", e.get("large_send_threshold")),
            ("computed at", e.get("computed_at")),
        ]
    )
