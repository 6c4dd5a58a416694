"""What the reach domain needs from the outside world. Adapters (wxreach.aws) implement these;
tests may pass in-memory ones. The domain imports only these, never an adapter."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from wxreach.reach.accounts import Account, AccountSecrets
    from wxreach.reach.followers import Follower, SubscriptionKind, SubscriptionStatus, WriteOutcome
    from wxreach.reach.journey import JourneyEvent


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
