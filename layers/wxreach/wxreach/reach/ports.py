"""What the reach domain needs from the outside world. Adapters (wxreach.aws) implement these;
tests may pass in-memory ones. The domain imports only these, never an adapter."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from wxreach.reach.accounts import Account, AccountSecrets
    from wxreach.reach.followers import Follower, SubscriptionKind, SubscriptionStatus, WriteOutcome
    from wxreach.reach.journey import JourneyEvent
    from wxreach.reach.messages import Message, MessageBatch, MessageState
    from wxreach.reach.templates import Template
    from wxreach.wechat.keywords import Channel


class AccountDirectory(Protocol):
    def reserve(self, account: Account) -> None: ...
    def activate(self, account: Account) -> Account: ...
    def get(self, appid: str) -> Account: ...


class SecretVault(Protocol):
    def put(self, appid: str, secrets: AccountSecrets) -> None: ...
    def get(self, appid: str) -> AccountSecrets: ...


class FollowerRegistry(Protocol):
    def set_following(
        self, appid: str, openid: str, *, following: bool, at: datetime, scene: str | None = None
    ) -> bool: ...
    def touch_interaction(self, appid: str, openid: str, *, at: datetime, message: bool = False) -> None: ...
    def observe_following(self, appid: str, openid: str) -> None: ...
    def grant_one_time(
        self, appid: str, openid: str, grants: Mapping[str, str], *, at: datetime
    ) -> dict[str, WriteOutcome]: ...
    def set_status(
        self,
        appid: str,
        openid: str,
        template_id: str,
        *,
        status: SubscriptionStatus,
        at: datetime,
        long_term: bool | None = None,
    ) -> WriteOutcome: ...
    def template_kinds(self, appid: str, template_ids: Iterable[str]) -> dict[str, SubscriptionKind]: ...
    def get(self, appid: str, openid: str) -> Follower | None: ...


class CallbackOnce(Protocol):
    """Runs an action once per key across instances (WeChat redelivers)."""

    def register_lambda_context(self, context: Any) -> None: ...
    def once(self, dedupe_key: str, action: Callable[[], dict[str, Any]]) -> bool: ...


class DeliveryEventQueue(Protocol):
    def enqueue(self, message: dict[str, Any]) -> None: ...


class JourneyPublisher(Protocol):
    def publish(self, events: list[JourneyEvent]) -> None: ...


# -- sending -----------------------------------------------------------------------------------
class CreditOutcome(StrEnum):
    CONSUMED = "consumed"
    ALREADY_CONSUMED = "already_consumed"  # by this same message, on an earlier delivery
    LONG_TERM = "long_term"  # a long-term grant: nothing to consume
    NONE = "none"


@dataclass(frozen=True)
class RepeatReservation:
    appid: str
    openid: str
    template_id: str
    digest: str
    stamp: str
    previous: str | None
    message_id: str


class MessageLedger(Protocol):
    def create(self, message: Message) -> tuple[Message, bool]: ...
    def get(self, message_id: str) -> Message | None: ...
    def claim_info(self, message_id: str) -> tuple[MessageState | None, str | None, datetime | None]: ...
    def claim(
        self,
        message_id: str,
        *,
        token: str,
        now: datetime,
        take_over: str | None = None,
        gate: str | None = None,
    ) -> bool: ...
    def broadcast_sending(self, broadcast_id: str) -> bool: ...
    def finish(
        self,
        message_id: str,
        *,
        state: MessageState,
        now: datetime,
        claim_token: str | None = None,
        reason: str | None = None,
        detail: str | None = None,
        wechat_msgid: str | None = None,
        errcode: int | None = None,
        values: dict[str, str] | None = None,
        appid: str | None = None,
        count_attempt: bool = True,
        maybe_sent: bool = False,
        tally: str | None = None,
        maybe_delta: int = 0,
    ) -> bool: ...


class SendGuards(Protocol):
    def paused_until(self, appid: str, channel: str, *, now: datetime) -> tuple[datetime, str] | None: ...
    def pause(self, appid: str, channel: str, *, until: datetime, reason: str) -> None: ...
    def take_rate_permit(self, appid: str, channel: str, *, per_second: int, now: float) -> bool: ...
    def reserve_daily(self, appid: str, name: str, *, day: str, cap: int) -> bool: ...
    def release_daily(self, appid: str, name: str, *, day: str) -> None: ...
    def reserve_repeat(
        self,
        appid: str,
        openid: str,
        template_id: str,
        digest: str,
        *,
        message_id: str,
        now: datetime,
        window_seconds: int,
    ) -> RepeatReservation | None: ...
    def repeat_blocked(
        self, appid: str, openid: str, template_id: str, digest: str, *, now: datetime, window_seconds: int
    ) -> bool: ...
    def release_repeat(self, reservation: RepeatReservation) -> None: ...
    def consume_credit(self, appid: str, openid: str, template_id: str, message_id: str) -> CreditOutcome: ...
    def refund_credit(self, appid: str, openid: str, template_id: str, message_id: str) -> bool: ...
    def clear_credits(self, appid: str, openid: str, template_id: str) -> None: ...


class TemplateCatalog(Protocol):
    def get(self, appid: str, channel: Channel, template_id: str) -> Template | None: ...
    def templates(self, appid: str, channel: Channel | None = None) -> list[Template]: ...
    def replace_all(self, appid: str, channel: Channel, templates: list[Template]) -> tuple[int, int]: ...


class BatchQueue(Protocol):
    """Where a batch goes to be sent (again) later by the template sender."""

    def enqueue(self, batch: MessageBatch, *, delay_seconds: int = 0) -> None: ...


# -- follower listing (audiences) --------------------------------------------------------------
if TYPE_CHECKING:
    from collections.abc import Sequence

    from wxreach.reach.follower_sync import SyncJob
    from wxreach.reach.followers import CreditRow, FollowerRow, Tag


class FollowerListing(Protocol):
    """The registry's followers and credit holders, split in `shard_count` index partitions
    that can be read in parallel. Each call is one eventually consistent page in openid order;
    the second value is the `start_after` of the next page (None: the shard is exhausted)."""

    shard_count: int

    def list_shard(
        self, appid: str, shard: int, *, start_after: str | None, limit: int
    ) -> tuple[list[FollowerRow], str | None]: ...

    def list_credit_holders(
        self, appid: str, template_id: str, shard: int, *, start_after: str | None, limit: int
    ) -> tuple[list[CreditRow], str | None]:
        """Every grant of the template, used up ones included: the caller skips rows with no
        one-time credit and no long-term grant."""
        ...


# -- follower sync and tags --------------------------------------------------------------------
class FollowerSyncWriter(FollowerListing, Protocol):
    def record_synced(self, appid: str, openids: Sequence[str], *, fetched_at: datetime) -> int: ...
    def mark_unseen(
        self,
        appid: str,
        shard: int,
        *,
        start_after: str | None,
        limit: int,
        synced_before: datetime,
        evidence_before: datetime,
    ) -> tuple[int, str | None]: ...
    def list_tagged(
        self, appid: str, shard: int, *, start_after: str | None, limit: int
    ) -> tuple[list[FollowerRow], str | None]: ...
    def add_tag(self, appid: str, tag_id: int, openids: Sequence[str]) -> None: ...
    def remove_tag(self, appid: str, tag_id: int, openids: Sequence[str]) -> None: ...


class FollowerSyncJobs(Protocol):
    """The account's one follower-sync job record."""

    def get(self, appid: str) -> SyncJob | None: ...

    def put(self, job: SyncJob, *, replaces: SyncJob | None) -> bool:
        """Writes `job` only while the stored record is still `replaces` (same job id and
        version; None: no record); False when someone else wrote in between."""
        ...


class FollowerSyncQueue(Protocol):
    def enqueue(self, appid: str, job_id: str, *, delay_seconds: int = 0) -> None: ...


class TagCatalog(Protocol):
    def tags(self, appid: str) -> list[Tag]: ...
    def replace_tags(self, appid: str, tags: list[Tag]) -> tuple[int, int]: ...
