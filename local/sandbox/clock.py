"""Time source of the sandbox: every rule window (token lifetime, dedupe windows, quotas) reads it.

Tests use `ManualClock` so a 24-hour window is crossed by advancing, never by sleeping. The CLI
uses `SystemClock`, which can still be pushed forward through `POST /admin/clock/advance`.
Real-time waits (callback timeouts, injected latency) deliberately do not use this clock.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Protocol

# WeChat counts days and months in China time (UTC+8, no DST), so quotas reset at 00:00 Beijing.
CHINA_TZ = timezone(timedelta(hours=8), name="Asia/Shanghai")

# 2024-06-01 00:00:00 China time: a day and month boundary, which keeps quota tests readable.
DEFAULT_MANUAL_START = 1_717_171_200.0


class Clock(Protocol):
    def now(self) -> float:
        """Unix seconds."""
        ...

    def advance(self, seconds: float) -> float:
        """Move time forward; returns the new now()."""
        ...


class SystemClock:
    """Wall clock plus an offset that only grows (advancing is allowed, going back is not)."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the clock cannot go backwards")
        with self._lock:
            self._offset += seconds
        return self.now()


class ManualClock:
    """Frozen time that moves only when told to: deterministic windows for tests.

    `ManualClock.at("2024-06-30 23:59:59")` starts at a China-time wall-clock reading, which is how
    boundary tests put themselves one second before a China day or month ends.
    """

    def __init__(self, start: float = DEFAULT_MANUAL_START) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    @classmethod
    def at(cls, moment: str | datetime) -> ManualClock:
        return cls(china_timestamp(moment))

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the clock cannot go backwards")
        with self._lock:
            self._now += seconds
            return self._now


def china_timestamp(moment: str | datetime) -> float:
    """Unix seconds of an instant; naive values ('2024-06-30 23:59:59') are read as China time."""
    parsed = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=CHINA_TZ)
    return parsed.timestamp()


def china_day(ts: float) -> str:
    """Calendar day key ('2024-06-01') used by daily quotas."""
    return datetime.fromtimestamp(ts, tz=CHINA_TZ).strftime("%Y-%m-%d")


def china_month(ts: float) -> str:
    """Calendar month key ('2024-06') used by the 4-mass-messages-per-month rule."""
    return datetime.fromtimestamp(ts, tz=CHINA_TZ).strftime("%Y-%m")


def iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")
