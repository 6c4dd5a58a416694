"""All mutable sandbox state behind one re-entrant lock, plus the helpers every endpoint shares."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from typing import Any

from local.sandbox import events
from local.sandbox.callbacks import CallbackDispatcher, CallbackRecord, signed_url
from local.sandbox.clock import Clock
from local.sandbox.config import SandboxConfig
from local.sandbox.errors import ApiError, Code
from local.sandbox.ids import IdSource
from local.sandbox.model import AccessToken, Account, EncryptionMode
from local.sandbox.wxcrypto import encrypt_message, sha1_signature


class CallCounters:
    """Per-endpoint call counts and outcomes (errcode, or the injected fault)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paths: dict[str, dict[str, Any]] = {}

    def _entry(self, path: str) -> dict[str, Any]:
        return self._paths.setdefault(path, {"calls": 0, "errcodes": Counter(), "injected": Counter()})

    def call(self, path: str) -> None:
        with self._lock:
            self._entry(path)["calls"] += 1

    def result(self, path: str, errcode: int) -> None:
        with self._lock:
            self._entry(path)["errcodes"][str(errcode)] += 1

    def injected(self, path: str, label: str) -> None:
        with self._lock:
            self._entry(path)["injected"][label] += 1

    def reset(self) -> None:
        with self._lock:
            self._paths.clear()

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                path: {"calls": e["calls"], "errcodes": dict(e["errcodes"]), "injected": dict(e["injected"])}
                for path, e in sorted(self._paths.items())
            }


class SandboxState:
    def __init__(
        self, *, seed: int | str, clock: Clock, config: SandboxConfig, dispatcher: CallbackDispatcher
    ):
        self.lock = threading.RLock()
        self.seed = seed
        self.clock = clock
        self.config = config
        self.dispatcher = dispatcher
        self.ids = IdSource(seed)
        self.accounts: dict[str, Account] = {}
        self.tokens: dict[str, AccessToken] = {}

    def reset(self) -> None:
        with self.lock:
            self.ids = IdSource(self.seed)
            self.accounts.clear()
            self.tokens.clear()

    # lookups ---------------------------------------------------------------------------------
    def authenticate(self, token: str | None, now: float) -> Account:
        if not token:
            raise ApiError(Code.ACCESS_TOKEN_MISSING)
        record = self.tokens.get(token)
        if record is None:
            raise ApiError(Code.INVALID_CREDENTIAL)
        failure = record.failure(now)
        if failure is not None:
            raise ApiError(failure)
        account = self.accounts.get(record.appid)
        if account is None:
            raise ApiError(Code.INVALID_CREDENTIAL)
        return account

    def new_token(self, account: Account, family: str, now: float) -> AccessToken:
        token = AccessToken(
            value=self.ids.access_token(),
            appid=account.appid,
            family=family,
            issued_at=now,
            expires_at=now + account.token_ttl_s,
        )
        self.tokens[token.value] = token
        return token

    # callbacks -------------------------------------------------------------------------------
    def event_time(self) -> int:
        return int(time.time() if self.config.wall_clock_callbacks else self.clock.now())

    def push(self, account: Account, openid: str, event: str, xml: str) -> None:
        """Build one push and hand it to the async dispatcher at once."""
        self.submit(self.prepare_push(account, openid, event, xml))

    def prepare_push(self, account: Account, openid: str, event: str, xml: str) -> CallbackRecord:
        """Sign (and maybe encrypt) one push without queueing it (§5.2, §5.4).

        Handlers call this before they change any state and `submit()` after, so a push that cannot
        be built (say, a broken EncodingAESKey) fails the call before anything was delivered.
        """
        timestamp = str(self.event_time())
        nonce = self.ids.nonce()
        query = {
            "signature": sha1_signature(account.token, timestamp, nonce),
            "timestamp": timestamp,
            "nonce": nonce,
            "openid": openid,
        }
        body = xml
        if account.encryption_mode is not EncryptionMode.PLAINTEXT:
            encrypt = encrypt_message(
                xml,
                encoding_aes_key=account.encoding_aes_key,
                appid=account.appid,
                random16=self.ids.random_bytes(16),
            )
            query["encrypt_type"] = "aes"
            query["msg_signature"] = sha1_signature(account.token, timestamp, nonce, encrypt)
            if account.encryption_mode is EncryptionMode.SAFE:
                body = events.xml_document([("ToUserName", account.original_id), ("Encrypt", encrypt)])
            else:  # compatible: the plaintext fields and the ciphertext side by side
                body = xml[: -len("</xml>")] + f"<Encrypt>{events.cdata(encrypt)}</Encrypt></xml>"
        record = CallbackRecord(
            id=self.dispatcher.next_id(),
            appid=account.appid,
            event=event,
            openid=openid,
            create_time=int(timestamp),
            url=signed_url(account.webhook_url, query) if account.webhook_url else None,
            query=query,
            xml=xml,
            body=body,
            mode=account.encryption_mode.value,
        )
        return record

    def submit(self, record: CallbackRecord) -> None:
        self.dispatcher.submit(record)


def system_openid(appid: str) -> str:
    """FromUserName of account-level events (MASSSENDJOBFINISH): stable per account, openid-shaped."""
    return ("oSYS" + hashlib.sha256(appid.encode()).hexdigest())[:28]
