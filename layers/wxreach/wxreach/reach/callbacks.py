"""The WeChat callback use case: verify, decrypt, parse, dedupe, apply effects.

Everything a callback does is a few conditional DynamoDB writes plus at most one SQS and one
EventBridge call, so the webhook answers WeChat well inside its 5 s budget.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from wxreach.errors import CallbackRejected, InvalidInput, MalformedCallback, NotFound
from wxreach.observability import logger, mask_openid
from wxreach.reach.accounts import APPID_PATTERN, Account, AccountSecrets, EncryptionMode
from wxreach.reach.followers import SubscriptionKind, SubscriptionStatus, WriteOutcome
from wxreach.reach.journey import JourneyDetailType, JourneyEvent
from wxreach.reach.ports import (
    AccountDirectory,
    CallbackOnce,
    DeliveryEventQueue,
    FollowerRegistry,
    JourneyPublisher,
    SecretVault,
)
from wxreach.wechat.callback_events import (
    CallbackEvent,
    EventKind,
    SubscribeDecision,
    SubscribeEvent,
    SubscribeMsgChangeEvent,
    SubscribeMsgPopupEvent,
    parse_event,
)
from wxreach.wechat.callback_xml import parse_callback_xml
from wxreach.wechat.crypto import CallbackCipher, verify_msg_signature, verify_plain_signature
from wxreach.wechat.identifiers import OPENID_PATTERN, parse_unix_seconds

_APPID = re.compile(APPID_PATTERN)
_OPENID = re.compile(OPENID_PATTERN)
# How far ahead of our clock a CreateTime may be (WeChat's clock and ours differ a little).
MAX_CLOCK_SKEW_SECONDS = 300
UNPARSED_KIND = "unparsed"
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
        accounts: AccountDirectory,
        secrets: SecretVault,
        followers: FollowerRegistry,
        deduper: CallbackOnce,
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
        secrets = self._load(appid)[1]
        timestamp, nonce = _required(query, "timestamp"), _required(query, "nonce")
        echostr = _required(query, "echostr")
        verify_plain_signature(secrets.token.get_secret_value(), timestamp, nonce, query.get("signature", ""))
        return echostr

    # -- message and event push -------------------------------------------------------------
    def receive(self, appid: str, query: Mapping[str, str], body: bytes) -> bool:
        """Processes one push; False when it was a redelivery (already processed)."""
        url_openid = query.get("openid") or None
        if url_openid is not None and not _OPENID.fullmatch(url_openid):
            raise InvalidInput("openid in the URL is not an openid", reason="invalid_openid")
        account, secrets = self._load(appid)
        fields = self._authenticate(account, secrets, query, body)
        try:
            event = parse_event(fields)
        except MalformedCallback as exc:
            # Authentic but not what our models expect: keep it for the status updater and
            # acknowledge, or WeChat retries it three times and then alarms the admins.
            return self._keep_unparsed(account, fields, exc)
        self._check_create_time(event)
        if account.encryption_mode is EncryptionMode.PLAINTEXT and url_openid not in (None, event.openid):
            raise CallbackRejected("openid in the URL does not match the push", reason="openid_mismatch")
        return self._deduper.once(f"{appid}:{event.dedupe_key}", lambda: self._apply(account, event))

    def _load(self, appid: str) -> tuple[Account, AccountSecrets]:
        if not _APPID.fullmatch(appid):
            # Refused before any AWS call: the path is attacker-controlled.
            raise NotFound("unknown account", reason="unknown_account")
        return self._accounts.get(appid), self._secrets.get(appid)

    def _authenticate(
        self, account: Account, secrets: AccountSecrets, query: Mapping[str, str], body: bytes
    ) -> dict[str, Any]:
        token = secrets.token.get_secret_value()
        timestamp, nonce = _required(query, "timestamp"), _required(query, "nonce")
        self._check_fresh(timestamp)
        verify_plain_signature(token, timestamp, nonce, query.get("signature", ""))
        encrypt_type = (query.get("encrypt_type") or "raw").lower()
        if encrypt_type not in ("aes", "raw"):
            raise CallbackRejected(
                f"unsupported encrypt_type {encrypt_type}", reason="bad_encrypt_type", status=400
            )
        if encrypt_type == "raw" and account.encryption_mode is not EncryptionMode.PLAINTEXT:
            # WeChat encrypts every push in safe and compatible mode; `signature` does not cover the
            # body, so a raw push here is someone replaying a signed URL with a body of their own.
            raise CallbackRejected("plaintext push to an encrypting account", reason="plaintext_refused")
        fields = parse_callback_xml(body, max_bytes=self._max_bytes)
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
        if fields.get("ToUserName") and fields["ToUserName"] != account.original_id:
            raise CallbackRejected("push addressed to another account", reason="account_mismatch")
        return fields

    def _check_fresh(self, timestamp: str) -> None:
        try:
            sent_at = parse_unix_seconds(timestamp)
        except ValueError as exc:
            raise InvalidInput("timestamp must be unix seconds", reason="bad_timestamp") from exc
        if self._replay_window and abs(self._clock() - sent_at) > self._replay_window:
            raise CallbackRejected("timestamp outside the replay window", reason="stale_timestamp")

    def _check_create_time(self, event: CallbackEvent) -> None:
        # Every state write is ordered by CreateTime: one event dated in the future would freeze
        # the follower's state, so it is refused. Late events (retries) are fine.
        if not 0 < event.create_time <= self._clock() + MAX_CLOCK_SKEW_SECONDS:
            raise InvalidInput("CreateTime is not a plausible unix time", reason="bad_create_time")

    def _keep_unparsed(self, account: Account, fields: dict[str, Any], exc: MalformedCallback) -> bool:
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        event_name = str(fields.get("Event") or fields.get("MsgType") or "")

        def enqueue() -> dict[str, Any]:
            logger.warning(
                "authentic callback not understood; queued raw", event=event_name, error=exc.message
            )
            self._deliveries.enqueue(
                {
                    "appid": account.appid,
                    "kind": UNPARSED_KIND,
                    "dedupe_key": f"raw:{digest}",
                    "received_at": datetime.now(UTC).isoformat(),
                    "parse_error": exc.message,
                    "event": {"raw": fields},
                }
            )
            return {"kind": UNPARSED_KIND}

        return self._deduper.once(f"{account.appid}:raw:{digest}", enqueue)

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
            # One callback may carry several decisions (one per template): each is its own event.
            item = attributes.get("template_id")
            attributes["event_id"] = f"{appid}:{event.dedupe_key}" + (f":{item}" if item else "")
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
            self._apply_popup(appid, openid, event, at, journey)
        elif isinstance(event, SubscribeMsgChangeEvent):
            for change in event.items:
                if change.decision is not SubscribeDecision.REJECT:
                    logger.info("subscription change ignored", status=change.status)
                    continue
                revoked = self._followers.set_status(
                    appid, openid, change.template_id, status=SubscriptionStatus.REVOKED, at=at
                )
                if revoked is WriteOutcome.APPLIED:
                    journey(JourneyDetailType.SUBSCRIPTION_REVOKED, template_id=change.template_id)
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
            self._followers.touch_interaction(appid, openid, at=at, message=kind is EventKind.USER_MESSAGE)
        if kind in (EventKind.SCAN, EventKind.USER_MESSAGE):
            # Only followers can scan into or write to the account.
            self._followers.observe_following(appid, openid)
        if journeys:
            self._journeys.publish(journeys)
        logger.info("callback processed", kind=str(kind), openid=mask_openid(openid), journeys=len(journeys))
        return {"kind": str(kind), "journeys": len(journeys)}

    def _apply_popup(
        self,
        appid: str,
        openid: str,
        event: SubscribeMsgPopupEvent,
        at: datetime,
        journey: Callable[..., None],
    ) -> None:
        """One read of the template kinds and one transaction for every one-time grant, then one
        status write per decision: bounded work for a popup of up to MAX_POPUP_ITEMS templates."""
        accepted = [c.template_id for c in event.items if c.decision is SubscribeDecision.ACCEPT]
        kinds = self._followers.template_kinds(appid, accepted) if accepted else {}
        one_time = {
            template_id: f"{event.dedupe_key}:{template_id}"
            for template_id in accepted
            if kinds[template_id] is not SubscriptionKind.LONG_TERM
        }
        grants = self._followers.grant_one_time(appid, openid, one_time, at=at) if one_time else {}
        for choice in event.items:
            template_id, scene = choice.template_id, choice.popup_scene
            if choice.decision is SubscribeDecision.ACCEPT:
                kind = kinds[template_id]
                if kind is SubscriptionKind.LONG_TERM:
                    outcome = self._followers.set_status(
                        appid, openid, template_id, status=SubscriptionStatus.ACCEPTED, at=at, long_term=True
                    )
                else:
                    outcome = grants[template_id]
                # A replay publishes again (consumers dedupe on event_id); a stale accept does not.
                if outcome is not WriteOutcome.STALE:
                    journey(
                        JourneyDetailType.SUBSCRIPTION_ACCEPTED,
                        template_id=template_id,
                        subscription_kind=str(kind),
                        popup_scene=scene,
                    )
            elif choice.decision is SubscribeDecision.REJECT:
                outcome = self._followers.set_status(
                    appid, openid, template_id, status=SubscriptionStatus.REJECTED, at=at
                )
                if outcome is not WriteOutcome.STALE:
                    journey(
                        JourneyDetailType.SUBSCRIPTION_REJECTED, template_id=template_id, popup_scene=scene
                    )
            else:
                logger.warning("unknown popup status ignored", status=choice.status)
