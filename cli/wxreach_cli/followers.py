"""`wxreach followers sync`: WeChat's follower list into wxreach's registry, with progress."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import RenderableType

from wxreach_cli.client import CliError
from wxreach_cli.output import fields
from wxreach_cli.session import AccountOption, session
from wxreach_cli.watch import Meter, poll

followers = typer.Typer(help="The follower registry.", no_args_is_help=True)


@followers.command("sync")
def sync(
    ctx: typer.Context,
    account: AccountOption,
    mark_unfollowed: Annotated[
        bool, typer.Option(help="At the end, mark followers WeChat no longer lists as not following.")
    ] = True,
    interval: Annotated[float, typer.Option(min=0, help="Seconds between polls.")] = 1.0,
    timeout: Annotated[float, typer.Option(min=0, help="Give up (exit 1) after this many seconds.")] = 3600.0,
) -> None:
    """Start a sync and follow it until it is done (exits 1 when it fails or times out)."""
    s = session(ctx)
    path = ("accounts", account, "followers", "sync")
    s.api.post(*path, params={"mark_unfollowed": str(mark_unfollowed).lower()})
    with Meter(s.out, ["seen"]) as meter:
        view, final = poll(
            lambda: s.api.get(*path),
            lambda view: view["state"] != "running",
            interval=interval,
            timeout=timeout,
            seen=lambda view: meter.update(
                f"follower sync {view['job_id']}: {view['phase']}", view, view["total"]
            ),
        )
    if not final:
        raise CliError(
            f"follower sync {view['job_id']} still running after {timeout:g} s",
            hint="`wxreach followers sync` again follows the running job",
        )
    s.out.result(view, _summary)
    if view["state"] == "failed":
        raise CliError(f"follower sync {view['job_id']} failed: {view.get('error')}")


def _summary(view: dict[str, Any]) -> RenderableType:
    return fields(
        [
            ("job", view["job_id"]),
            ("state", view["state"]),
            ("seen", view["seen"]),
            ("WeChat's count", view["total"]),
            ("pages", view["pages"]),
            ("kept (newer event)", view["kept"]),
            ("marked unfollowed", view["marked_unfollowed"] if view["mark_unfollowed"] else None),
            ("finished at", view.get("finished_at")),
            ("error", view.get("error")),
        ]
    )
