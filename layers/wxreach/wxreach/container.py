"""Composition root: adapters built lazily, once per container, and shared by handlers.

Tests call `reset()` so each moto context gets fresh clients and caches.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from wxreach.aws.account_store import AccountRepository, SecretStore
from wxreach.aws.clients import reset_clients
from wxreach.aws.follower_store import FollowerStore
from wxreach.errors import WxReachError
from wxreach.reach.accounts import Account, AccountRegistration
from wxreach.settings import get_settings

if TYPE_CHECKING:
    from wxreach.reach.callbacks import CallbackService


@functools.cache
def accounts() -> AccountRepository:
    settings = get_settings()
    return AccountRepository(settings.quota_table, cache_seconds=settings.account_cache_seconds)


@functools.cache
def secrets() -> SecretStore:
    settings = get_settings()
    return SecretStore(settings.secrets_prefix, max_age_seconds=settings.secrets_max_age_seconds)


@functools.cache
def followers() -> FollowerStore:
    return FollowerStore(get_settings().quota_table)


def load_callback_stack() -> None:
    """Imports (creates nothing) what callback_service() needs: the webhook calls this during
    init, so its first callback does not pay for crypto, XML, the event models and the adapters."""
    import wxreach.aws.dedupe
    import wxreach.aws.journey_bus
    import wxreach.aws.status_queue
    import wxreach.reach.callbacks  # noqa: F401


@functools.cache
def callback_service() -> CallbackService:
    # Imported here so functions that never receive callbacks (operator API) do not load
    # crypto, XML parsing and the event models at cold start.
    from wxreach.aws.dedupe import CallbackDeduper
    from wxreach.aws.journey_bus import EventBridgeJourneyPublisher
    from wxreach.aws.status_queue import SqsDeliveryEventQueue
    from wxreach.reach.callbacks import CallbackService

    settings = get_settings()
    if not settings.status_queue_url or not settings.journey_bus:
        raise WxReachError(
            "WXREACH_STATUS_QUEUE_URL and WXREACH_JOURNEY_BUS must be set", reason="misconfigured"
        )
    return CallbackService(
        accounts=accounts(),
        secrets=secrets(),
        followers=followers(),
        deduper=CallbackDeduper(settings.idempotency_table, ttl_seconds=settings.dedupe_ttl_seconds),
        deliveries=SqsDeliveryEventQueue(settings.status_queue_url),
        journeys=EventBridgeJourneyPublisher(settings.journey_bus),
        replay_window_seconds=settings.replay_window_seconds,
        max_callback_bytes=settings.max_callback_bytes,
    )


def register_account(registration: AccountRegistration) -> Account:
    from wxreach.reach.accounts import register_account as register

    return register(registration, accounts(), secrets())


def reset() -> None:
    for factory in (accounts, secrets, followers, callback_service, get_settings):
        factory.cache_clear()
    reset_clients()
