"""`wxreach`, the operator CLI: the Typer app, its global options (which API, --json) and exit
codes — 0 done, 1 the operation failed (the API refused, a broadcast failed, a wait timed out),
2 usage (bad arguments, no stack to talk to, a large send not confirmed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from typer.core import TyperGroup

from wxreach_cli import accounts, broadcasts, followers, messages, reporting
from wxreach_cli.client import CliError, Target, local_target
from wxreach_cli.output import Output, print_error
from wxreach_cli.session import Session


class WxReachGroup(TyperGroup):
    """Every command's failures end here: a line, a hint and an exit code, never a traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as exc:
            print_error(exc)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=WxReachGroup,
    help="Operate wxreach: accounts, templates, sends, broadcasts and their reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(accounts.accounts, name="accounts")
app.add_typer(accounts.templates, name="templates")
app.add_typer(messages.keywords, name="keywords")
app.command("send")(messages.send)
app.add_typer(broadcasts.broadcast, name="broadcast")
app.add_typer(followers.followers, name="followers")
app.command("report")(reporting.report)


@app.callback()
def options(
    ctx: typer.Context,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the API's JSON (or a JSON summary) and nothing else.")
    ] = False,
    local: Annotated[
        bool, typer.Option("--local", help="The local stack of `make local` (the default).")
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="WXREACH_LOCAL_DATA_DIR", file_okay=False, help="The local stack's data directory."
        ),
    ] = None,
    api_url: Annotated[str | None, typer.Option(help="This API instead of the local stack's.")] = None,
    api_key: Annotated[str | None, typer.Option(help="Its x-api-key (default: the local stack's).")] = None,
    stack: Annotated[
        str | None, typer.Option(help="A deployed CloudFormation stack; requests are SigV4-signed.")
    ] = None,
    region: Annotated[
        str | None, typer.Option(help="The stack's region (default: AWS configuration).")
    ] = None,
) -> None:
    """Targets: the local stack (default; its URL and key from the data directory), --api-url and
    --api-key, or --stack NAME [--region R] with your AWS credentials."""
    if stack is not None and (local or api_url or api_key or data_dir):
        raise typer.BadParameter("--stack goes without --local, --api-url, --api-key and --data-dir")
    if region is not None and stack is None:
        raise typer.BadParameter("--region goes with --stack")

    def resolve() -> Target:
        if stack is None:
            return local_target(data_dir=data_dir, api_url=api_url, api_key=api_key)
        # boto3 takes half a second to import: only a deployed stack needs it.
        from wxreach_cli.aws import stack_target

        return stack_target(stack, region)

    # Tests hand in an httpx transport as the context object; users never do.
    transport = ctx.obj if isinstance(ctx.obj, httpx.BaseTransport) else None
    current = Session(Output(json_mode=json_output), resolve, transport)
    ctx.obj = current
    ctx.call_on_close(current.close)


def main() -> None:
    app()
