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
    from wxreach.aws.broadcast_io import SqsSplitQueues
    from wxreach.aws.broadcast_store import DynamoBroadcastStore
    from wxreach.aws.mass_batch_store import DynamoMassBatchStore
    from wxreach.aws.mass_queue import MassQueueConsumer
    from wxreach.aws.send_queue import SendQueueConsumer
    from wxreach.reach.broadcast_service import BroadcastService
    from wxreach.reach.callbacks import CallbackService
    from wxreach.reach.delivery import DeliveryService, Reconciler
    from wxreach.reach.mass_sending import MassSendService
    from wxreach.reach.ports import JourneyPublisher
    from wxreach.reach.report_service import ReportService
    from wxreach.reach.sending import SendService
    from wxreach.reach.template_service import TemplateService
    from wxreach.wechat.api import WeChatClient
    from wxreach.wechat.tokens import TokenBroker


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


# -- sending: imported lazily so the webhook never loads httpx or the sender ---------------------
def load_sending_stack() -> None:
    """Imports (creates nothing) what send_queue_consumer() needs, for the sender's init."""
    import wxreach.aws.ledger_store
    import wxreach.aws.send_guards
    import wxreach.aws.send_queue
    import wxreach.aws.template_store
    import wxreach.aws.token_store
    import wxreach.reach.sending  # noqa: F401


@functools.cache
def wechat() -> WeChatClient:
    from wxreach.wechat.api import WeChatClient

    settings = get_settings()
    return WeChatClient(
        settings.wechat_api_base,
        connect_timeout=settings.wechat_connect_timeout_seconds,
        read_timeout=settings.wechat_read_timeout_seconds,
        max_connections=settings.wechat_max_connections,
    )


@functools.cache
def tokens() -> TokenBroker:
    from wxreach.aws.token_store import DynamoTokenStore
    from wxreach.wechat.tokens import TokenBroker

    settings = get_settings()
    return TokenBroker(
        store=DynamoTokenStore(settings.quota_table),
        client=wechat(),
        secret_for=lambda appid: secrets().get(appid).app_secret.get_secret_value(),
        refresh_ahead_seconds=settings.token_refresh_ahead_seconds,
        lease_seconds=settings.token_lease_seconds,
        wait_seconds=settings.token_wait_seconds,
    )


@functools.cache
def template_service() -> TemplateService:
    from wxreach.aws.template_store import DynamoTemplateCatalog
    from wxreach.reach.template_service import TemplateService

    return TemplateService(
        catalog=DynamoTemplateCatalog(get_settings().quota_table), wechat=wechat(), tokens=tokens()
    )


@functools.cache
def send_service() -> SendService:
    from wxreach.aws.ledger_store import DynamoMessageLedger
    from wxreach.aws.send_guards import DynamoSendGuards
    from wxreach.aws.send_queue import SqsBatchQueue
    from wxreach.reach.sending import SendPolicy, SendService

    settings = get_settings()
    return SendService(
        accounts=accounts(),
        followers=followers(),
        templates=template_service(),
        ledger=DynamoMessageLedger(settings.ledger_table),
        guards=DynamoSendGuards(settings.quota_table),
        wechat=wechat(),
        tokens=tokens(),
        policy=SendPolicy(
            concurrency=settings.send_concurrency,
            rate_per_second=settings.send_rate_per_second,
            template_daily_cap=settings.template_daily_cap,
            repeat_window_seconds=settings.repeat_guard_window_seconds,
            max_attempts=settings.max_send_attempts,
            claim_seconds=settings.sending_claim_seconds,
            pause_seconds=settings.account_pause_seconds,
            permit_wait_seconds=settings.permit_wait_seconds,
        ),
        queue=SqsBatchQueue(settings.send_queue_url) if settings.send_queue_url else None,
    )


@functools.cache
def send_queue_consumer() -> SendQueueConsumer:
    from wxreach.aws.send_queue import SendQueueConsumer

    settings = get_settings()
    return SendQueueConsumer(
        send_service(), queue_url=settings.send_queue_url, dead_letter_url=settings.send_dead_letter_url
    )


def register_account(registration: AccountRegistration) -> Account:
    from wxreach.reach.accounts import register_account as register

    return register(registration, accounts(), secrets())


def reset() -> None:
    """Forget every adapter and service built so far (tests, between moto contexts)."""
    if wechat.cache_info().currsize:
        wechat().close()
    for factory in list(globals().values()):
        if (
            callable(factory)
            and hasattr(factory, "cache_clear")
            and getattr(factory, "__module__", "")
            in (
                __name__,
                "wxreach.settings",
            )
        ):
            factory.cache_clear()
    get_settings.cache_clear()
    reset_clients()


# -- broadcasts ----------------------------------------------------------------------------------
@functools.cache
def broadcast_store() -> DynamoBroadcastStore:
    from wxreach.aws.broadcast_store import DynamoBroadcastStore

    return DynamoBroadcastStore(get_settings().ledger_table)


@functools.cache
def split_queues() -> SqsSplitQueues:
    from wxreach.aws.broadcast_io import SqsSplitQueues

    settings = get_settings()
    return SqsSplitQueues(
        send_queue_url=settings.send_queue_url,
        mass_queue_url=settings.mass_queue_url,
        split_queue_url=settings.split_queue_url,
    )


@functools.cache
def broadcast_service() -> BroadcastService:
    from wxreach.aws.audience_store import DynamoAudienceLookup, DynamoBroadcastCounters
    from wxreach.aws.broadcast_io import S3Reports, S3Segments, SchedulerSchedules, SplitResumer
    from wxreach.reach.audiences import AudienceReader
    from wxreach.reach.broadcast_service import BroadcastPolicy, BroadcastService
    from wxreach.reach.splitting import Splitter

    settings = get_settings()
    lookup = DynamoAudienceLookup(settings.quota_table)
    reader = AudienceReader(followers(), lookup, S3Segments(settings.broadcast_bucket))
    counters = DynamoBroadcastCounters(settings.quota_table)
    schedules = SchedulerSchedules(
        group=settings.schedule_group,
        target_arn=settings.splitter_arn,
        role_arn=settings.scheduler_role_arn,
        dead_letter_arn=settings.split_dead_letter_arn,
    )
    store = broadcast_store()
    splitter = Splitter(
        store=store,
        reader=reader,
        output=split_queues(),
        daily=counters,
        rescheduler=SplitResumer(schedules),
        mass_daily_cap=settings.mass_daily_cap,
    )
    return BroadcastService(
        store=store,
        accounts=accounts(),
        templates=template_service(),
        reader=reader,
        lookup=lookup,
        splitter=splitter,
        trigger=split_queues(),
        schedules=schedules,
        reports=S3Reports(settings.broadcast_bucket),
        daily=counters,
        mass_batches=mass_batch_store(),
        mass=mass_send_service(),
        sender=send_service(),
        policy=BroadcastPolicy(
            large_send_threshold=settings.large_send_threshold,
            mass_daily_cap=settings.mass_daily_cap,
            template_daily_cap=settings.template_daily_cap,
            repeat_window_seconds=settings.repeat_guard_window_seconds,
            cancel_settle_seconds=settings.cancel_settle_seconds,
        ),
        journey=journey_publisher(),
    )


@functools.cache
def report_service() -> ReportService:
    from wxreach.aws.broadcast_io import S3Reports
    from wxreach.aws.ledger_store import DynamoMessageLedger
    from wxreach.reach.report_service import ReportService

    return ReportService(
        broadcasts=broadcast_service(),
        outcomes=DynamoMessageLedger(get_settings().ledger_table),
        mass_batches=mass_batch_store(),
        sink=S3Reports(get_settings().broadcast_bucket),
    )


@functools.cache
def journey_publisher() -> JourneyPublisher | None:
    from wxreach.aws.journey_bus import EventBridgeJourneyPublisher

    bus = get_settings().journey_bus
    return EventBridgeJourneyPublisher(bus) if bus else None


# -- mass sender: imported lazily so other functions never load it --------------------------------
def load_mass_stack() -> None:
    """Imports (creates nothing) what mass_queue_consumer() needs, for the mass sender's init."""
    import wxreach.aws.mass_batch_store
    import wxreach.aws.mass_queue
    import wxreach.aws.send_guards
    import wxreach.aws.token_store
    import wxreach.reach.mass_sending  # noqa: F401


@functools.cache
def mass_batch_store() -> DynamoMassBatchStore:
    from wxreach.aws.mass_batch_store import DynamoMassBatchStore

    return DynamoMassBatchStore(get_settings().ledger_table)


@functools.cache
def mass_send_service() -> MassSendService:
    from wxreach.aws.send_guards import DynamoSendGuards
    from wxreach.reach.mass_sending import MassSendPolicy, MassSendService

    settings = get_settings()
    return MassSendService(
        store=mass_batch_store(),
        guards=DynamoSendGuards(settings.quota_table),
        wechat=wechat(),
        tokens=tokens(),
        policy=MassSendPolicy(
            calls_per_minute=settings.mass_calls_per_minute,
            claim_seconds=settings.mass_claim_seconds,
            permit_wait_seconds=settings.mass_permit_wait_seconds,
            max_attempts=settings.mass_max_attempts,
            pause_seconds=settings.account_pause_seconds,
        ),
    )


@functools.cache
def mass_queue_consumer() -> MassQueueConsumer:
    from wxreach.aws.mass_queue import MassQueueConsumer

    settings = get_settings()
    return MassQueueConsumer(
        mass_send_service(), queue_url=settings.mass_queue_url, dead_letter_url=settings.mass_dead_letter_url
    )


# -- follower sync and tags: imported lazily (only the operator API and the sync function) ---------
if TYPE_CHECKING:
    from wxreach.reach.follower_sync import FollowerSyncService


@functools.cache
def follower_sync_service() -> FollowerSyncService:
    from wxreach.aws.follower_sync_store import DynamoSyncJobs, DynamoTagCatalog, SqsFollowerSyncQueue
    from wxreach.reach.follower_sync import FollowerSyncService

    settings = get_settings()
    return FollowerSyncService(
        jobs=DynamoSyncJobs(settings.quota_table),
        queue=SqsFollowerSyncQueue(settings.follower_sync_queue_url)
        if settings.follower_sync_queue_url
        else None,
        # Its own store: a page's writes use the sync's pool size, not the webhook's.
        followers=FollowerStore(settings.quota_table, workers=settings.follower_sync_concurrency),
        tags=DynamoTagCatalog(settings.quota_table),
        wechat=wechat(),
        tokens=tokens(),
        tag_sync_max_members=settings.tag_sync_max_members,
    )


# -- delivery outcomes: the status updater and the reconciler -------------------------------------
def load_delivery_stack() -> None:
    """Imports (creates nothing) what delivery_service() needs, for the status updater's init."""
    import wxreach.aws.delivery_store
    import wxreach.aws.ledger_store
    import wxreach.aws.mass_batch_store
    import wxreach.aws.send_guards
    import wxreach.reach.delivery  # noqa: F401


@functools.cache
def delivery_service() -> DeliveryService:
    from wxreach.aws.delivery_store import DynamoCallbackParking
    from wxreach.aws.ledger_store import DynamoMessageLedger
    from wxreach.aws.send_guards import DynamoSendGuards
    from wxreach.reach.delivery import DeliveryService

    settings = get_settings()
    return DeliveryService(
        ledger=DynamoMessageLedger(settings.ledger_table),
        mass_jobs=mass_batch_store(),
        parking=DynamoCallbackParking(settings.ledger_table),
        credits=DynamoSendGuards(settings.quota_table),
        journey=journey_publisher(),
    )


@functools.cache
def reconciler() -> Reconciler:
    from wxreach.aws.delivery_store import DynamoCallbackParking
    from wxreach.aws.ledger_store import DynamoMessageLedger
    from wxreach.reach.delivery import ReconcilePolicy, Reconciler

    settings = get_settings()
    return Reconciler(
        delivery=delivery_service(),
        ledger=DynamoMessageLedger(settings.ledger_table),
        mass_jobs=mass_batch_store(),
        parking=DynamoCallbackParking(settings.ledger_table),
        mass_status=mass_send_service(),
        broadcasts=broadcast_service(),
        policy=ReconcilePolicy(
            unknown_after_seconds=settings.unknown_after_seconds,
            mass_poll_after_seconds=settings.mass_poll_after_seconds,
            orphan_after_seconds=settings.orphan_after_seconds,
        ),
    )
