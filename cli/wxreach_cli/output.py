"""What the CLI prints: the API's JSON with --json, otherwise Rich tables (colours only on a
terminal, never with NO_COLOR: Rich decides); errors, hints and progress go to stderr."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import typer
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from wxreach_cli.client import ApiError, CliError

PIPE_WIDTH = 200


class Output:
    def __init__(self, *, json_mode: bool) -> None:
        self.json_mode = json_mode
        self.console = Console(highlight=False, width=_width(sys.stdout))
        self.errors = Console(stderr=True, highlight=False, width=_width(sys.stderr))

    def result(self, data: Any, render: Callable[[Any], RenderableType]) -> None:
        """`data` as JSON, or as `render` shows it."""
        if self.json_mode:
            typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
        else:
            self.console.print(render(data))

    def link(self, label: str, url: str) -> None:
        """A URL on a line of its own, never folded or cut (to copy it whole); silent with --json."""
        if not self.json_mode:
            self.console.print(Text.assemble((label, "bold"), " ", url), soft_wrap=True)

    def note(self, message: str) -> None:
        """A human remark (stderr, so stdout stays the result); silent with --json."""
        if not self.json_mode:
            self.errors.print(Text(message, style="dim"), soft_wrap=True)


def _width(stream: Any) -> int | None:
    """Off a terminal (a pipe, a file, grep) lines are not folded at Rich's default 80 columns."""
    return None if stream.isatty() or "COLUMNS" in os.environ else PIPE_WIDTH


def print_error(exc: CliError) -> None:
    errors = Console(stderr=True, highlight=False)
    errors.print(Text.assemble(("error", "bold red"), ": ", exc.message), soft_wrap=True)
    if isinstance(exc, ApiError):
        for problem in exc.problems:
            errors.print(Text(f"  {problem}"), soft_wrap=True)
    if exc.hint:
        errors.print(Text.assemble(("hint", "yellow"), ": ", exc.hint), soft_wrap=True)


def fields(rows: Iterable[tuple[str, Any]], *, title: str | None = None) -> Table:
    """A two-column table of name → value, leaving out what is absent."""
    table = Table(show_header=False, title=title, title_justify="left", box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in rows:
        if value not in (None, "", [], {}):
            table.add_row(name, text(value))
    return table


def rows(items: Iterable[Mapping[str, Any]], columns: Sequence[str], *, title: str | None = None) -> Table:
    """One row per item, one column per key."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column.replace("_", " "), overflow="fold")
    for item in items:
        table.add_row(*(text(item.get(column)) for column in columns))
    return table


def counter(counts: Mapping[str, Any], *, title: str, key: str = "state") -> Table:
    """A {name: count} map as a table, largest first, without the zeros."""
    ordered = sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: (-kv[1], kv[0]))
    return rows([{key: k, "count": v} for k, v in ordered], [key, "count"], title=title)


def text(value: Any) -> Text:
    if value is None:
        return Text("—", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no", style="green" if value else "red")
    if isinstance(value, Mapping):
        return Text(", ".join(f"{k} {v}" for k, v in value.items()))
    if isinstance(value, list):
        return Text(", ".join(str(v) for v in value))
    return Text(str(value))
