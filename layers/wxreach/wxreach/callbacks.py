"""The WeChat callback use case: verify, decrypt, parse, dedupe, apply effects.

Everything a callback does is a few conditional DynamoDB writes plus at most one SQS and one
EventBridge call, so the webhook answers WeChat well inside its 5 s budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from wxreach.accounts import Account, AccountRepository, AccountSecrets, EncryptionMode, SecretStore
from wxreach.callback_events import (
    CallbackEvent,
    EventKind,
    PopupSubscription,
    SubscribeDecision,
    SubscribeEvent,
    SubscribeMsgChangeEvent,
    SubscribeMsgPopupEvent,
    parse_event,
)
from wxreach.callback_xml import parse_callback_xml
from wxreach.crypto import CallbackCipher, verify_msg_signature, verify_plain_signature
from wxreach.dedupe import CallbackDeduper
from wxreach.errors import CallbackRejected, InvalidInput
from wxreach.followers import FollowerStore, SubscriptionKind, SubscriptionStatus
from wxreach.journey import JourneyDetailType, JourneyEvent, JourneyPublisher
from wxreach.observability import logger, mask_openid
from wxreach.status_queue import DeliveryEventQueue

# Events that open or extend the 48 h customer-service window.
INTERACTION_KINDS = frozenset({EventKind.USER_MESSAGE, EventKind.SUBSCRIBE, EventKind.SCAN})
# Menu and location events are user actions too; they arrive as unknown events here.
INTERACTION_EVENTS = frozenset(
    {
        "click",
        "view",
        "scancode_push",
        "scancode_waitmsg",
        "pic_sysphoto",
        "pic_photo_or_album",
        "pic_weixin",
        "location_select",
        "view_miniprogram",
        "location",
    }
)
DELIVERY_KINDS = frozenset(
    {
        EventKind.TEMPLATE_SEND_JOB_FINISH,
        EventKind.MASS_SEND_JOB_FINISH,
        EventKind.SUBSCRIBE_MSG_SENT,
        EventKind.PUBLISH_JOB_FINISH,
    }
)


def _required(query: Mapping[str, str], name: str) -> str:
    value = query.get(name)
    if not value:
        raise InvalidInput(f"query parameter {name} is required", reason="missing_parameter")
    return value


class CallbackService:
    def __init__(
        self,
        *,
        accounts: AccountRepository,
        secrets: SecretStore,
        followers: FollowerStore,
        deduper: CallbackDeduper,
        deliveries: DeliveryEventQueue,
        journeys: JourneyPublisher,
        replay_window_seconds: int = 300,
        max_callback_bytes: int = 64 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._accounts = accounts
        self._secrets = secrets
        self._followers = followers
        self._deduper = deduper
        self._deliveries = deliveries
        self._journeys = journeys
        self._replay_window = replay_window_seconds
        self._max_bytes = max_callback_bytes
        self._clock = clock
        self._ciphers: dict[tuple[str, str, str | None], CallbackCipher] = {}

    def register_lambda_context(self, context: Any) -> None:
        self._deduper.register_lambda_context(context)

    # -- URL verification -------------------------------------------------------------------
    def verify_url(self, appid: str, query: Mapping[str, str]) -> str:
        """Returns echostr when the signature is valid (WeChat wants it back verbatim)."""
        self._accounts.get(appid)
        secrets = self._secrets.get(appid)
        timestamp, nonce = _required(query, "timestamp"), _required(query, "nonce")
        echostr = _required(query, "echostr")
        verify_plain_signature(secrets.token.get_secret_value(), timestamp, nonce, query.get("signature", ""))
        return echostr

    # -- message and event push -------------------------------------------------------------
    def receive(self, appid: str, query: Mapping[str, str], body: bytes) -> bool:
        """Processes one push; False when it was a redelivery (already processed)."""
        account = self._accounts.get(appid)
        secrets = self._secrets.get(appid)
        event = self._authenticate(account, secrets, query, body)
        return self._deduper.once(f"{appid}:{event.dedupe_key}", lambda: self._apply(account, event))

    def _authenticate(
        self, account: Account, secrets: AccountSecrets, query: Mapping[str, str], body: bytes
    ) -> CallbackEvent:
        token = secrets.token.get_secret_value()
        timestamp, nonce = _required(query, "timestamp"), _required(query, "nonce")
        self._check_fresh(timestamp)
        verify_plain_signature(token, timestamp, nonce, query.get("signature", ""))
        fields = parse_callback_xml(body, max_bytes=self._max_bytes)
        encrypt_type = (query.get("encrypt_type") or "raw").lower()
        if encrypt_type == "aes":
            encrypt = fields.get("Encrypt")
            if not isinstance(encrypt, str) or not encrypt:
                raise CallbackRejected(
                    "encrypted push without <Encrypt>", reason="missing_encrypt", status=400
                )
            verify_msg_signature(token, timestamp, nonce, encrypt, query.get("msg_signature", ""))
            decrypted = self._cipher(account, secrets).decrypt(encrypt)
            if decrypted.used_previous_key:
                logger.warning("callback decrypted with the previous EncodingAESKey", appid=account.appid)
            fields = parse_callback_xml(decrypted.xml, max_bytes=self._max_bytes)
        elif encrypt_type != "raw":
            raise CallbackRejected(
                f"unsupported encrypt_type {encrypt_type}", reason="bad_encrypt_type", status=400
            )
        elif account.encryption_mode is EncryptionMode.SAFE:
            # A safe-mode account never receives plaintext from WeChat: someone is replaying or probing.
            raise CallbackRejected("plaintext push to a safe-mode account", reason="plaintext_refused")
        if fields.get("ToUserName") and fields["ToUserName"] != account.original_id:
            raise CallbackRejected("push addressed to another account", reason="account_mismatch")
        return parse_event(fields)

    def _check_fresh(self, timestamp: str) -> None:
        try:
            sent_at = int(timestamp)
        except ValueError as exc:
            raise InvalidInput("timestamp must be unix seconds", reason="bad_timestamp") from exc
        if self._replay_window and abs(self._clock() - sent_at) > self._replay_window:
            raise CallbackRejected("timestamp outside the replay window", reason="stale_timestamp")

    def _cipher(self, account: Account, secrets: AccountSecrets) -> CallbackCipher:
        if secrets.encoding_aes_key is None:
            raise CallbackRejected("safe mode is not configured for this account", reason="no_aes_key")
        previous = secrets.previous_encoding_aes_key
        cache_key = (
            account.appid,
            secrets.encoding_aes_key.get_secret_value(),
            previous.get_secret_value() if previous else None,
        )
        cipher = self._ciphers.get(cache_key)
        if cipher is None:
            cipher = CallbackCipher(account.appid, cache_key[1], cache_key[2])
            self._ciphers = {cache_key: cipher}  # keys rotate: keep only the newest
        return cipher

    # -- effects ----------------------------------------------------------------------------
    def _apply(self, account: Account, event: CallbackEvent) -> dict[str, Any]:
        appid, openid = account.appid, event.openid
        at = datetime.fromtimestamp(event.create_time, UTC)
        journeys: list[JourneyEvent] = []

        def journey(detail_type: JourneyDetailType, **attributes: Any) -> None:
            attributes["event_id"] = f"{appid}:{event.dedupe_key}"
            journeys.append(
                JourneyEvent(
                    detail_type=detail_type, appid=appid, openid=openid, occurred_at=at, attributes=attributes
                )
            )

        kind = event.kind
        if isinstance(event, SubscribeEvent):
            scene = event.scene
            if self._followers.set_following(appid, openid, following=True, at=at, scene=scene):
                journey(JourneyDetailType.FOLLOWED, scene=scene)
        elif kind is EventKind.UNSUBSCRIBE:
            if self._followers.set_following(appid, openid, following=False, at=at):
                journey(JourneyDetailType.UNFOLLOWED)
        elif isinstance(event, SubscribeMsgPopupEvent):
            for choice in event.items:
                self._apply_popup_choice(appid, openid, choice, at, event.dedupe_key, journey)
        elif isinstance(event, SubscribeMsgChangeEvent):
            for item in event.items:
                if item.decision is SubscribeDecision.REJECT:
                    if self._followers.set_status(
                        appid,
                        openid,
                        item.template_id,
                        status=SubscriptionStatus.REVOKED,
                        at=at,
                        long_term=False,
                    ):
                        journey(JourneyDetailType.SUBSCRIPTION_REVOKED, template_id=item.template_id)
                else:
                    logger.info("subscription change ignored", status=str(item.status))
        elif kind in DELIVERY_KINDS:
            self._deliveries.enqueue(
                {
                    "appid": appid,
                    "kind": str(kind),
                    "dedupe_key": event.dedupe_key,
                    "received_at": datetime.now(UTC).isoformat(),
                    "event": event.model_dump(mode="json"),
                }
            )

        if kind in INTERACTION_KINDS or (
            kind is EventKind.UNKNOWN and str(event.raw.get("Event", "")).lower() in INTERACTION_EVENTS
        ):
            self._followers.touch_interaction(appid, openid, at=at)
        if journeys:
            self._journeys.publish(journeys)
        logger.info("callback processed", kind=str(kind), openid=mask_openid(openid), journeys=len(journeys))
        return {"kind": str(kind), "journeys": len(journeys)}

    def _apply_popup_choice(
        self,
        appid: str,
        openid: str,
        item: PopupSubscription,
        at: datetime,
        dedupe_key: str,
        journey: Callable[..., None],
    ) -> None:
        scene = item.popup_scene
        if item.decision is SubscribeDecision.ACCEPT:
            kind = self._followers.template_kind(appid, item.template_id)
            if kind is SubscriptionKind.LONG_TERM:
                self._followers.set_status(
                    appid, openid, item.template_id, status=SubscriptionStatus.ACCEPTED, at=at, long_term=True
                )
            else:
                self._followers.grant_one_time(
                    appid, openid, item.template_id, at=at, event_key=f"{dedupe_key}:{item.template_id}"
                )
            journey(
                JourneyDetailType.SUBSCRIPTION_ACCEPTED,
                template_id=item.template_id,
                subscription_kind=str(kind),
                popup_scene=scene,
            )
        elif item.decision is SubscribeDecision.REJECT:
            self._followers.set_status(
                appid, openid, item.template_id, status=SubscriptionStatus.REJECTED, at=at
            )
            journey(JourneyDetailType.SUBSCRIPTION_REJECTED, template_id=item.template_id, popup_scene=scene)
        else:
            logger.warning("unknown popup status ignored", status=item.status)
