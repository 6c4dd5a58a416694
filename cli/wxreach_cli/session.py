"""What every command gets from the global options: the output, and the API client, resolved
on first use (so `--help` works without a stack)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import httpx
import typer

from wxreach_cli.client import Api, Target
from wxreach_cli.output import Output

AccountOption = Annotated[
    str, typer.Option("--account", "-a", envvar="WXREACH_ACCOUNT", help="The Official Account's AppID.")
]


class Session:
    def __init__(
        self, out: Output, resolve: Callable[[], Target], transport: httpx.BaseTransport | None
    ) -> None:
        self.out = out
        self._resolve = resolve
        self._transport = transport
        self._api: Api | None = None

    @property
    def api(self) -> Api:
        if self._api is None:
            self._api = Api(self._resolve(), transport=self._transport)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()


def session(ctx: typer.Context) -> Session:
    found = ctx.find_object(Session)
    assert found is not None, "the app's callback sets it"
    return found
