"""Knobs of one sandbox instance (CLI flags map onto these)."""

from __future__ import annotations

from dataclasses import dataclass

from local.sandbox import limits


@dataclass(frozen=True)
class SandboxConfig:
    token_ttl_s: int = limits.DEFAULT_TOKEN_TTL_S  # default for new accounts
    callback_timeout_s: float = limits.CALLBACK_TIMEOUT_S
    callback_retries: int = limits.CALLBACK_RETRIES
    callback_retry_delay_s: float = 1.0  # real seconds between attempts (WeChat's spacing is unpublished)
    callback_workers: int = 4
    # ISO date-times in time/date keywords are UNCONFIRMED (§2.3): False rejects them (dates alone pass)
    accept_iso_datetime: bool = True
    # True stamps callbacks with wall-clock time, so a webhook with a replay window still accepts them
    # after the sandbox clock was advanced
    wall_clock_callbacks: bool = False
    verbose: bool = False
