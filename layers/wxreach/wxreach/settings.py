"""Settings parsed once from the environment (WXREACH_* variables set by template.yaml)."""

from __future__ import annotations

import functools
import os

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    quota_table: str = "wxreach-quota"
    ledger_table: str = "wxreach-ledger"
    idempotency_table: str = "wxreach-idempotency"
    secrets_prefix: str = "wxreach/accounts/"
    status_queue_url: str | None = None
    journey_bus: str | None = None
    # Callbacks whose timestamp is further than this from now are refused; 0 disables the check.
    replay_window_seconds: int = Field(default=300, ge=0)
    dedupe_ttl_seconds: int = Field(default=900, ge=60)
    max_callback_bytes: int = Field(default=64 * 1024, ge=1024)
    # Secrets and account records are cached per container; rotation shows up within this time.
    secrets_max_age_seconds: int = Field(default=300, ge=0)
    account_cache_seconds: int = Field(default=60, ge=0)
    wechat_api_base: str = "https://api.weixin.qq.com"
    # AWS SDK budget per call: the webhook must answer WeChat inside 5 s whatever hangs.
    aws_connect_timeout_seconds: float = Field(default=2.0, gt=0)
    aws_read_timeout_seconds: float = Field(default=3.0, gt=0)
    aws_max_attempts: int = Field(default=3, ge=1)
    send_queue_url: str | None = None
    send_dead_letter_url: str | None = None
    # -- broadcasts: dry-run reports and segments (S3), one-time schedules (EventBridge Scheduler)
    broadcast_bucket: str | None = None
    schedule_group: str | None = None
    scheduler_role_arn: str | None = None
    # -- broadcasts: the splitter, the large-send guard, the daily mass cap --------------------
    split_queue_url: str | None = None
    split_dead_letter_arn: str | None = None
    splitter_arn: str | None = None
    # Publishing to more recipients than this needs `confirm: <the estimate's count>`.
    large_send_threshold: int = Field(default=10_000, ge=0)
    # Mass recipients per account per China day (our cap, on top of WeChat's own quotas).
    mass_daily_cap: int = Field(default=1_000_000, ge=1)
    # How long a cancel waits for the sends already on the wire before it reports.
    cancel_settle_seconds: float = Field(default=8.0, ge=0)
    # -- delivery outcomes: the reconciler's patience ------------------------------------------
    unknown_after_seconds: int = Field(default=6 * 3600, ge=1)
    mass_poll_after_seconds: int = Field(default=40 * 60, ge=1)
    orphan_after_seconds: int = Field(default=3600, ge=1)
    # WeChat API calls (httpx): per-call budgets and the connection pool.
    wechat_connect_timeout_seconds: float = Field(default=3.0, gt=0)
    wechat_read_timeout_seconds: float = Field(default=5.0, gt=0)
    wechat_max_connections: int = Field(default=64, ge=1)
    # Access tokens: refreshed this long before WeChat's expires_in runs out; a cold instance
    # that lost the lease race waits up to token_wait_seconds for the winner's token.
    token_refresh_ahead_seconds: int = Field(default=300, ge=0)
    token_lease_seconds: int = Field(default=10, ge=1)
    token_wait_seconds: float = Field(default=5.0, gt=0)
    # Sending: calls in flight per invocation, per-account calls per second across all
    # instances, the daily template cap, the repeat guard window, retry-later bounds.
    send_concurrency: int = Field(default=16, ge=1, le=256)
    send_rate_per_second: int = Field(default=50, ge=1)
    template_daily_cap: int = Field(default=100_000, ge=1)
    repeat_guard_window_seconds: int = Field(default=24 * 3600, ge=0)
    max_send_attempts: int = Field(default=8, ge=1)
    # A message claimed ("sending") longer ago than this is taken as left by a crashed instance.
    sending_claim_seconds: int = Field(default=120, ge=10)
    # How long an account-level stop (40164, 48004, 89503) pauses an account's sending.
    account_pause_seconds: int = Field(default=900, ge=1)
    # How long one recipient waits for a rate permit before its record is retried later (the
    # operator API's synchronous sends wait less: WXREACH_PERMIT_WAIT_SECONDS in template.yaml).
    permit_wait_seconds: float = Field(default=20.0, gt=0)
    # -- mass sender --------------------------------------------------------------------------
    mass_queue_url: str | None = None
    mass_dead_letter_url: str | None = None
    # Mass API calls (send, sendall, preview) per account in any rolling minute, all instances (§4.1).
    mass_calls_per_minute: int = Field(default=60, ge=1, le=60)
    # A batch claimed ("sending") longer ago than this was left by a crashed instance: taken over.
    mass_claim_seconds: int = Field(default=120, ge=30)
    # How long one batch waits for a mass permit before its record comes back later.
    mass_permit_wait_seconds: float = Field(default=20.0, gt=0)
    # Retry-later answers (-1, 42010, timeouts...) a batch gets before it is failed.
    mass_max_attempts: int = Field(default=12, ge=1)
    # -- follower sync and tags ----------------------------------------------------------------
    follower_sync_queue_url: str | None = None
    # Profile writes in flight while the sync stores one 10 000-follower page.
    follower_sync_concurrency: int = Field(default=16, ge=1, le=64)
    # A synchronous tag sync (operator request) updates membership up to this many members.
    tag_sync_max_members: int = Field(default=20_000, ge=0)

    @model_validator(mode="after")
    def _dedupe_outlives_replay_window(self) -> Settings:
        # A captured push may be replayed for as long as the window admits it; its dedupe record
        # must still exist by then, or the replay would be processed again.
        if self.replay_window_seconds and self.dedupe_ttl_seconds < self.replay_window_seconds + 60:
            raise ValueError("dedupe_ttl_seconds must be at least replay_window_seconds + 60")
        return self

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values = {
            name: env[f"WXREACH_{name.upper()}"]
            for name in cls.model_fields
            if env.get(f"WXREACH_{name.upper()}") not in (None, "")
        }
        return cls.model_validate(values)


@functools.cache
def get_settings() -> Settings:
    return Settings.from_environ()
