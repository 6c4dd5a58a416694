"""Polling a long-running operation (a broadcast, a follower sync) with live progress bars."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType

from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.text import Text

from wxreach_cli.output import Output


def poll[T](
    fetch: Callable[[], T],
    is_final: Callable[[T], bool],
    *,
    interval: float,
    timeout: float,
    seen: Callable[[T], None],
) -> tuple[T, bool]:
    """Fetch until `is_final` or `timeout` seconds: the last answer and whether it was final."""
    deadline = time.monotonic() + timeout
    while True:
        current = fetch()
        seen(current)
        if is_final(current):
            return current, True
        left = deadline - time.monotonic()
        if left <= 0:
            return current, False
        time.sleep(min(interval, left))


class Meter:
    """A status line and one bar per count, on stderr; nothing with --json (or off a terminal,
    where Rich draws the last state once, at the end)."""

    def __init__(self, out: Output, names: Sequence[str]) -> None:
        self._status = Text()
        self._progress = Progress(
            TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), console=out.errors
        )
        self._bars = {name: self._progress.add_task(name, total=None) for name in names}
        self._live = (
            None
            if out.json_mode
            else Live(Group(self._status, self._progress), console=out.errors, refresh_per_second=4)
        )

    def __enter__(self) -> Meter:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.stop()

    def update(self, status: str, counts: Mapping[str, int], total: int | None) -> None:
        self._status.plain = status
        for name, bar in self._bars.items():
            self._progress.update(bar, completed=counts.get(name, 0), total=total)
        if self._live is not None:
            self._live.refresh()
