"""`wxreach accounts …` and `wxreach templates …`."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType

from wxreach_cli.output import fields, rows
from wxreach_cli.session import AccountOption, session

accounts = typer.Typer(help="Official Accounts registered with wxreach.", no_args_is_help=True)
templates = typer.Typer(help="Template-message and subscription templates.", no_args_is_help=True)

ACCOUNT_COLUMNS = ["appid", "original_id", "name", "account_type", "verified", "encryption_mode"]


class AccountType(StrEnum):
    SERVICE = "service"
    SUBSCRIPTION = "subscription"


class EncryptionMode(StrEnum):
    PLAINTEXT = "plaintext"
    COMPATIBLE = "compatible"
    SAFE = "safe"


class LintLevel(StrEnum):
    WARN = "warn"
    BLOCK = "block"


class Channel(StrEnum):
    TEMPLATE = "template"
    SUBSCRIBE = "subscribe"


def account_fields(account: dict[str, Any]) -> RenderableType:
    return fields(
        [(column.replace("_", " "), account.get(column)) for column in [*ACCOUNT_COLUMNS, "compliance_lint"]]
        + [("created at", account.get("created_at"))]
    )


@accounts.command("add")
def add_account(
    ctx: typer.Context,
    appid: Annotated[str, typer.Argument(help="The AppID (wx + 16 characters).")],
    original_id: Annotated[str, typer.Option(help="The original id (gh_…).")],
    app_secret: Annotated[
        str | None, typer.Option(envvar="WXREACH_APP_SECRET", help="The AppSecret (asked for when absent).")
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="WXREACH_TOKEN", help="The callback Token (asked for when absent).")
    ] = None,
    encoding_aes_key: Annotated[
        str | None,
        typer.Option(
            envvar="WXREACH_ENCODING_AES_KEY",
            help="The EncodingAESKey (43 characters); asked for unless --encryption-mode plaintext.",
        ),
    ] = None,
    name: Annotated[str, typer.Option(help="A name for operators.")] = "",
    account_type: Annotated[AccountType, typer.Option("--type")] = AccountType.SERVICE,
    verified: Annotated[bool, typer.Option(help="WeChat-verified (needed for template messages).")] = True,
    encryption_mode: Annotated[EncryptionMode, typer.Option()] = EncryptionMode.SAFE,
    compliance_lint: Annotated[LintLevel, typer.Option(help="Ban-risk wording: warn, or block the send.")] = (
        LintLevel.WARN
    ),
) -> None:
    """Register an account (its secrets go to Secrets Manager and never come back)."""
    # Typed at hidden prompts (on stderr: stdout stays the result), not kept in shell history.
    app_secret = app_secret or typer.prompt("AppSecret", hide_input=True, err=True)
    token = token or typer.prompt("Token", hide_input=True, err=True)
    if encoding_aes_key is None and encryption_mode is not EncryptionMode.PLAINTEXT:
        encoding_aes_key = typer.prompt("EncodingAESKey", hide_input=True, err=True)
    body = {
        "appid": appid,
        "original_id": original_id,
        "name": name,
        "account_type": account_type,
        "verified": verified,
        "encryption_mode": encryption_mode,
        "compliance_lint": compliance_lint,
        "secrets": {"app_secret": app_secret, "token": token, "encoding_aes_key": encoding_aes_key},
    }
    s = session(ctx)
    s.out.result(s.api.post("accounts", body=body), account_fields)


@accounts.command("list")
def list_accounts(ctx: typer.Context) -> None:
    """Every registered account."""
    s = session(ctx)
    found: list[dict[str, Any]] = []
    after = None
    while True:
        page = s.api.get("accounts", params={"limit": 100, "after": after})
        found += page["accounts"]
        after = page.get("next")
        if not after:
            break
    s.out.result({"accounts": found}, lambda data: rows(data["accounts"], ACCOUNT_COLUMNS))


@accounts.command("show")
def show_account(ctx: typer.Context, appid: Annotated[str, typer.Argument(help="The AppID.")]) -> None:
    """One account (never its secrets)."""
    s = session(ctx)
    s.out.result(s.api.get("accounts", appid), account_fields)


@templates.command("sync")
def sync_templates(ctx: typer.Context, account: AccountOption) -> None:
    """Fetch the account's templates from WeChat."""
    s = session(ctx)
    synced = s.api.post("accounts", account, "templates", "sync")
    s.out.result(synced, lambda data: rows(data["results"], ["channel", "stored", "removed"]))


@templates.command("list")
def list_templates(
    ctx: typer.Context,
    account: AccountOption,
    channel: Annotated[Channel | None, typer.Option(help="Only this channel.")] = None,
) -> None:
    """The account's templates as last synced."""
    s = session(ctx)
    found = s.api.get("accounts", account, "templates", params={"channel": channel})

    def render(data: dict[str, Any]) -> RenderableType:
        listed = [{**t, "keywords": [k["name"] for k in t.get("keywords", [])]} for t in data["templates"]]
        return rows(listed, ["channel", "template_id", "title", "keywords", "synced_at"])

    s.out.result(found, render)


@templates.command("show")
def show_template(
    ctx: typer.Context,
    template_id: Annotated[str, typer.Argument(help="The template id.")],
    account: AccountOption,
    channel: Annotated[Channel, typer.Option(help="Its channel.")] = Channel.TEMPLATE,
) -> None:
    """One template: its keywords, their types and WeChat's rule for each."""
    s = session(ctx)
    found = s.api.get("accounts", account, "templates", channel, template_id)

    def render(data: dict[str, Any]) -> RenderableType:
        keywords = [{**k, "rule": data["rules"].get(k["name"])} for k in data.get("keywords", [])]
        return Group(
            fields(
                [
                    (k.replace("_", " "), data.get(k))
                    for k in ("template_id", "channel", "title", "kind", "synced_at")
                ]
            ),
            fields([("content", data.get("content")), ("example", data.get("example"))]),
            rows(keywords, ["name", "type", "rule"], title="Keywords"),
        )

    s.out.result(found, render)
