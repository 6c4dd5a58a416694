"""`wxreach keywords check` and `wxreach send` (one message, or its rehearsal)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType

from wxreach_cli.accounts import Channel
from wxreach_cli.client import CliError
from wxreach_cli.inputs import keyword_items, nested, pairs
from wxreach_cli.output import fields, rows
from wxreach_cli.session import AccountOption, session

keywords = typer.Typer(help="WeChat's rules for keyword values.", no_args_is_help=True)

MAX_CHECK_ITEMS = 1000  # per request (KeywordCheckRequest)
SENT_STATES = {"queued", "sending", "sent", "delivered"}


@keywords.command("check")
def check_keywords(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            help="CSV with type and value columns (optional: channel, enum with values separated by |).",
        ),
    ],
) -> None:
    """Check keyword values against WeChat's rules; exits 1 when any value is invalid."""
    s = session(ctx)
    items = keyword_items(file)
    results: list[dict[str, Any]] = []
    for start in range(0, len(items), MAX_CHECK_ITEMS):
        chunk = items[start : start + MAX_CHECK_ITEMS]
        results += s.api.post("keywords", "check", body={"items": chunk})["results"]
    checked = [
        {"row": n, **item, **result} for n, (item, result) in enumerate(zip(items, results, strict=True), 2)
    ]
    s.out.result({"results": results}, lambda _: rows(checked, ["row", "type", "value", "valid", "reason"]))
    invalid = sum(not r["valid"] for r in results)
    if invalid:
        raise CliError(f"{invalid} of {len(results)} values break WeChat's rules")


def send(
    ctx: typer.Context,
    openid: Annotated[str, typer.Argument(help="The recipient's openid.")],
    account: AccountOption,
    template: Annotated[str, typer.Option("--template", "-t", help="The template id.")],
    data: Annotated[
        list[str], typer.Option("--data", "-d", help="KEY=VALUE per keyword (thing1={{product}}); repeat.")
    ],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="NAME=VALUE per customer parameter (order.no nests); repeat."),
    ] = None,
    channel: Annotated[Channel, typer.Option(help="Template message or subscription notification.")] = (
        Channel.TEMPLATE
    ),
    url: Annotated[str | None, typer.Option(help="Template jump: a web page.")] = None,
    page: Annotated[str | None, typer.Option(help="Subscription jump: a web page.")] = None,
    request_id: Annotated[
        str | None, typer.Option(help="Idempotency key: the same one never sends twice.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Preview the final values and checks; send nothing.")
    ] = False,
) -> None:
    """Send one message now, or preview it with --dry-run; exits 1 when it fails, is skipped
    or (dry run) would not be sent."""
    s = session(ctx)
    content = {"template_id": template, "data": pairs(data, option="--data"), "url": url, "page": page}
    content = {k: v for k, v in content.items() if v is not None}
    params = nested(pairs(param or [], option="--param"))
    base = ("accounts", account, "messages")
    if dry_run:
        sample = {"openid": openid, "params": params}
        preview = s.api.post(
            *base, "preview", body={"channel": channel, "content": content, "samples": [sample]}
        )
        s.out.result(preview, _preview)
        if not preview["samples"][0]["would_send"]:
            raise CliError("this message would not be sent")
        return
    body = {
        "channel": channel,
        "openid": openid,
        "content": content,
        "params": params,
        "request_id": request_id,
    }
    sent = s.api.post(*base, body=body)
    s.out.result(sent, _sent)
    message = sent["message"]
    if message["state"] not in SENT_STATES:
        raise CliError(f"message {message['message_id']} {message['state']}: {message.get('reason')}")


def _preview(data: dict[str, Any]) -> RenderableType:
    sample = data["samples"][0]
    values = [{"keyword": k, "value": v} for k, v in sample["values"].items()]
    lint = [{"rule": f["rule"], "keyword": f.get("keyword"), "detail": f["detail"]} for f in sample["lint"]]
    return Group(
        fields(
            [
                ("template", f"{data['template']['template_id']} {data['template'].get('title', '')}"),
                ("would send", sample["would_send"]),
                ("violations", sample["violations"]),
                ("missing params", sample["missing_params"]),
                ("warnings", sample["warnings"]),
                ("jump", sample["jump"].get("url") or sample["jump"].get("kind")),
            ]
        ),
        rows(values, ["keyword", "value"], title="Values"),
        *([rows(lint, ["rule", "keyword", "detail"], title=f"Lint ({data['lint_level']})")] if lint else []),
    )


def _sent(data: dict[str, Any]) -> RenderableType:
    message = data["message"]
    return fields(
        [
            ("message", message["message_id"]),
            ("state", message["state"]),
            ("reason", message.get("reason")),
            ("detail", message.get("detail")),
            ("queued", "WeChat asked to wait: the send queue finishes it" if data.get("queued") else None),
            ("wechat msgid", message.get("wechat_msgid")),
            ("values", message.get("values")),
        ]
    )
