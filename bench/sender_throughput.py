"""Template sender throughput: `SendService.send_batches` against the WeChat sandbox with 50 ms
latency per template send, concurrent (policy concurrency C) and one call at a time, in one run.

What runs is our sending code as the template sender runs it: `SendService` (rendering, content
checks, the guards' logic, create → claim → finish in the ledger), `WeChatClient` over real HTTP
(httpx, keep-alive pool) and `TokenBroker` (stable_token, lease). The WeChat side is the sandbox
(`python -m local.sandbox --port 0 --seed 1`) in its own process, so its CPU is not ours: the
machine has 2 cores, one for the sender's GIL and one for the sandbox. A fixed 50 ms latency rule
on /cgi-bin/message/template/send stands for WeChat's answer time.

Ports (ledger, send guards, follower registry, account directory, template catalog, token lease
store) are in-memory adapters written here. Each keeps the DynamoDB adapter's items (same pk/sk
from `wxreach.aws.keys`) and applies the same conditions, under one lock per table: first writer
wins on create, claim only from queued (or the exact stale claim token), finish only by the claim
holder (or from queued without one), repeat guard keeping the last two send times per content,
daily counters and per-second rate windows (count < limit), pauses that only extend, credits
consumed/refunded once with their marker, token lease/save/release by owner. Why not moto: its
in-process DynamoDB is pure Python under the same GIL and costs milliseconds of CPU per call;
a message makes about 11 DynamoDB calls (create+read, pause, follower, repeat read+write, daily,
rate, claim, finish+read), so with moto this measures moto, not the sender. The same workload is
still run once on the real DynamoDB adapters over moto `mock_aws` (tables from template.yaml) and
printed beside, labelled as such.

The rate limit is set far above what one process reaches (it must not bind: the point is the
in-flight limit), the daily cap stays at its default. Every run uses its own origin and its own
keyword values (so neither the ledger nor the repeat guard sees a message twice); afterwards every
message must be `sent` and the sandbox must have answered errcode 0 to exactly that many calls.
The sender's logger stays at INFO (one JSON line per message, as deployed) written to /dev/null.

    .venv/bin/python -m bench.sender_throughput            # 600 followers, 3 rounds, + moto
    .venv/bin/python -m bench.sender_throughput --quick    # 200 followers, 1 round
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx

from wxreach.aws import keys
from wxreach.errors import Conflict, NotFound
from wxreach.observability import logger
from wxreach.reach.accounts import Account, EncryptionMode
from wxreach.reach.followers import (
    Follower,
    SubscriptionGrant,
    SubscriptionKind,
    SubscriptionStatus,
    WriteOutcome,
)
from wxreach.reach.messages import Message, MessageBatch, MessageState, Origin, OriginKind, Recipient
from wxreach.reach.ports import (
    AccountDirectory,
    CreditOutcome,
    FollowerRegistry,
    MessageLedger,
    RepeatReservation,
    SendGuards,
    TemplateCatalog,
)
from wxreach.reach.rendering import MessageContent
from wxreach.reach.sending import TEMPLATE_DAILY_COUNTER, SendPolicy, SendService
from wxreach.reach.template_service import TemplateService
from wxreach.reach.templates import Template
from wxreach.wechat.api import TEMPLATE_SEND_PATH, WeChatClient
from wxreach.wechat.keywords import Channel
from wxreach.wechat.tokens import StoredToken, TokenBroker, TokenLeaseStore

ROOT = Path(__file__).resolve().parent.parent

APPID = "wxb3e7c1a9d5f20468"
APP_SECRET = "b3e7c1a9d5f20468b3e7c1a9d5f20468"  # noqa: S105 - the sandbox account's fixed secret
ORIGINAL_ID = "gh_b3e7c1a9d5f2"
TEMPLATE_ID = "TPL_BENCH_ORDER_PAID"
KEYWORDS = [{"name": "thing1", "label": "商品"}, {"name": "character_string2", "label": "订单号"}]
CONTENT = MessageContent(
    template_id=TEMPLATE_ID,
    data={"thing1": "{{product}}", "character_string2": "{{order}}"},
    url="https://example.com/orders",
)
LATENCY_MS = 50.0
BATCH_SIZE = 100  # recipients per batch record (MAX_BATCH_RECIPIENTS)
RATE_PER_SECOND = 1_000_000  # far above one process: the rate limit must not bind
TARGET_OF_IDEAL = 0.8
TARGET_OVER_SEQUENTIAL = 15.0
SANDBOX_SEED = 1

Out = Callable[[str], None]


def _epoch(dt: datetime) -> int:
    return int(dt.timestamp())


def _at(seconds: int | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None


def _second(dt: datetime) -> datetime:
    """DynamoDB items hold unix seconds: what a read gives back."""
    return datetime.fromtimestamp(_epoch(dt), UTC)


# == in-memory DynamoDB-like adapters ============================================================
class MemoryTable:
    """One table: pk → sk → item (attribute → Python value), every read-decide-write of an adapter
    done under `lock`. DynamoDB makes each conditional write atomic per item; one lock for the
    table is stricter, and costs microseconds here."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._items: dict[str, dict[str, dict[str, Any]]] = {}

    def get(self, pk: str, sk: str) -> dict[str, Any] | None:
        return self._items.get(pk, {}).get(sk)

    def upsert(self, pk: str, sk: str) -> dict[str, Any]:
        """The item to update in place, created empty if missing (UpdateItem creates items)."""
        return self._items.setdefault(pk, {}).setdefault(sk, {})

    def put(self, pk: str, sk: str, item: dict[str, Any]) -> None:
        self._items.setdefault(pk, {})[sk] = item

    def delete(self, pk: str, sk: str) -> None:
        self._items.get(pk, {}).pop(sk, None)

    def query(self, pk: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        """Items of a partition in sort-key order, as Query returns them."""
        return sorted((sk, item) for sk, item in self._items.get(pk, {}).items() if sk.startswith(prefix))


class MemoryMessageLedger:
    """DynamoMessageLedger's semantics (wxreach.aws.ledger_store) on a MemoryTable."""

    def __init__(self, table: MemoryTable | None = None) -> None:
        self._table = table or MemoryTable()

    def _item(self, message_id: str) -> dict[str, Any] | None:
        return self._table.get(keys.message_pk(message_id), keys.MESSAGE_SK)

    def create(self, message: Message) -> tuple[Message, bool]:
        with self._table.lock:
            existing = self._item(message.message_id)
            if existing is not None:  # attribute_not_exists(pk) failed: first writer won
                return existing["message"].model_copy(), False
            now = _second(message.created_at or datetime.now(UTC))
            stored = Message(
                message_id=message.message_id,
                appid=message.appid,
                channel=message.channel,
                openid=message.openid,
                template_id=message.template_id,
                origin=message.origin,
                state=message.state,
                attempts=message.attempts,
                created_at=now,
                updated_at=now,
            )
            self._table.put(keys.message_pk(message.message_id), keys.MESSAGE_SK, {"message": stored})
            return stored.model_copy(), True

    def get(self, message_id: str) -> Message | None:
        with self._table.lock:
            item = self._item(message_id)
            return item["message"].model_copy() if item else None

    def claim_info(self, message_id: str) -> tuple[str | None, datetime | None]:
        with self._table.lock:
            item = self._item(message_id) or {}
            return item.get("claim_token"), _at(item.get("claimed_at"))

    def claim(
        self,
        message_id: str,
        *,
        token: str,
        now: datetime,
        take_over: str | None = None,
        gate: str | None = None,
    ) -> bool:
        with self._table.lock:
            item = self._item(message_id)
            if item is None:
                return False
            state = item["message"].state
            if take_over is None:
                if state is not MessageState.QUEUED:
                    return False
            elif state is not MessageState.SENDING or item.get("claim_token") != take_over:
                return False
            item["message"] = item["message"].model_copy(
                update={"state": MessageState.SENDING, "updated_at": _second(now)}
            )
            item["claim_token"], item["claimed_at"] = token, _epoch(now)
            return True

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
        tally: str | None = None,
        maybe_delta: int = 0,
    ) -> bool:
        with self._table.lock:
            item = self._item(message_id)
            if item is None:
                return False
            current: Message = item["message"]
            if claim_token is not None:
                if current.state is not MessageState.SENDING or item.get("claim_token") != claim_token:
                    return False
            elif current.state is not MessageState.QUEUED:
                return False
            update: dict[str, Any] = {"state": state, "updated_at": _second(now)}
            for name, value in (("reason", reason), ("detail", detail), ("wechat_msgid", wechat_msgid)):
                if value is not None:
                    update[name] = value
            if errcode is not None:
                update["errcode"] = errcode
            if values is not None:
                update["values"] = dict(sorted(values.items()))
            if state is MessageState.SENT:
                update["sent_at"] = _second(now)
                if wechat_msgid is not None and appid is not None:
                    item["gsi1pk"] = keys.wechat_msgid_index_pk(appid, wechat_msgid)
            if state is MessageState.QUEUED and count_attempt:
                update["attempts"] = current.attempts + 1
            item["message"] = current.model_copy(update=update)
            item.pop("claim_token", None)
            item.pop("claimed_at", None)
            return True


class MemorySendGuards:
    """DynamoSendGuards' semantics (wxreach.aws.send_guards) on the quota MemoryTable."""

    def __init__(self, table: MemoryTable) -> None:
        self._table = table

    # -- account pause ------------------------------------------------------------------------
    def paused_until(self, appid: str, channel: str, *, now: datetime) -> tuple[datetime, str] | None:
        with self._table.lock:
            item = self._table.get(keys.account_pk(appid), keys.pause_sk(channel))
            if not item or item["until"] <= _epoch(now):
                return None
            return datetime.fromtimestamp(item["until"], UTC), item.get("reason", "")

    def pause(self, appid: str, channel: str, *, until: datetime, reason: str) -> None:
        with self._table.lock:
            item = self._table.get(keys.account_pk(appid), keys.pause_sk(channel))
            if item is not None and "until" in item and item["until"] >= _epoch(until):
                return  # only ever extends a pause
            stored = self._table.upsert(keys.account_pk(appid), keys.pause_sk(channel))
            stored.update(until=_epoch(until), reason=reason)

    # -- counters (rate windows and daily caps) -----------------------------------------------
    def _add_below(self, pk: str, sk: str, limit: int) -> bool:
        with self._table.lock:
            item = self._table.get(pk, sk)
            count = item.get("count") if item else None
            if count is not None and count >= limit:
                return False
            self._table.upsert(pk, sk)["count"] = (count or 0) + 1
            return True

    def take_rate_permit(self, appid: str, channel: str, *, per_second: int, now: float) -> bool:
        sk = keys.counter_sk(f"rate-{channel}", str(int(now)))
        return self._add_below(keys.account_pk(appid), sk, per_second)

    def reserve_daily(self, appid: str, name: str, *, day: str, cap: int) -> bool:
        return self._add_below(keys.account_pk(appid), keys.counter_sk(name, day), cap)

    def release_daily(self, appid: str, name: str, *, day: str) -> None:
        with self._table.lock:
            item = self._table.get(keys.account_pk(appid), keys.counter_sk(name, day))
            if item is not None and item.get("count", 0) > 0:
                item["count"] -= 1

    def daily_count(self, appid: str, name: str, *, day: str) -> int:
        with self._table.lock:
            item = self._table.get(keys.account_pk(appid), keys.counter_sk(name, day)) or {}
            return int(item.get("count", 0))

    # -- repeat guard -------------------------------------------------------------------------
    @staticmethod
    def _blocked(item: Mapping[str, Any], *, now: datetime, window_seconds: int) -> bool:
        older = item.get("older")
        return older is not None and older > _epoch(now) - window_seconds

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
    ) -> RepeatReservation | None:
        pk, sk = keys.follower_pk(appid, openid), keys.repeat_guard_sk(template_id, digest)
        with self._table.lock:  # the read and the conditional write of the DynamoDB adapter, at once
            current = self._table.get(pk, sk) or {}
            older, newer = current.get("older"), current.get("newer")
            if newer is not None and current.get("newer_message") == message_id:
                previous = None if older in (None, 0) else str(older)
                return RepeatReservation(appid, openid, template_id, digest, str(newer), previous, message_id)
            if self._blocked(current, now=now, window_seconds=window_seconds):
                return None
            stamp = _epoch(now)
            item = self._table.upsert(pk, sk)
            item.update(newer=stamp, newer_message=message_id, older=0 if newer is None else newer)
            previous = None if newer is None else str(newer)
            return RepeatReservation(appid, openid, template_id, digest, str(stamp), previous, message_id)

    def repeat_blocked(
        self, appid: str, openid: str, template_id: str, digest: str, *, now: datetime, window_seconds: int
    ) -> bool:
        with self._table.lock:
            item = self._table.get(keys.follower_pk(appid, openid), keys.repeat_guard_sk(template_id, digest))
            return self._blocked(item or {}, now=now, window_seconds=window_seconds)

    def release_repeat(self, reservation: RepeatReservation) -> None:
        pk = keys.follower_pk(reservation.appid, reservation.openid)
        sk = keys.repeat_guard_sk(reservation.template_id, reservation.digest)
        with self._table.lock:
            item = self._table.get(pk, sk)
            if item is None or item.get("newer_message") != reservation.message_id:
                return  # only while it is still the newest
            if reservation.previous is None:
                for name in ("newer", "older", "newer_message"):
                    item.pop(name, None)
            else:
                item["newer"] = int(reservation.previous)
                item.pop("newer_message", None)

    # -- subscription credits -----------------------------------------------------------------
    def consume_credit(self, appid: str, openid: str, template_id: str, message_id: str) -> CreditOutcome:
        pk = keys.follower_pk(appid, openid)
        with self._table.lock:
            grant = self._table.get(pk, keys.subscription_sk(template_id)) or {}
            if grant.get("long_term") and grant.get("status") == "accepted":
                return CreditOutcome.LONG_TERM
            if self._table.get(pk, keys.credit_use_sk(message_id)) is not None:
                return CreditOutcome.ALREADY_CONSUMED  # the marker: this message took its credit
            if not grant or grant.get("one_time_credits", 0) <= 0:
                return CreditOutcome.NONE
            self._table.put(pk, keys.credit_use_sk(message_id), {"template_id": template_id})
            grant["one_time_credits"] -= 1
            return CreditOutcome.CONSUMED

    def refund_credit(self, appid: str, openid: str, template_id: str, message_id: str) -> bool:
        pk = keys.follower_pk(appid, openid)
        with self._table.lock:
            marker = self._table.get(pk, keys.credit_use_sk(message_id))
            grant = self._table.get(pk, keys.subscription_sk(template_id))
            if marker is None or grant is None or grant.get("status") == "revoked":
                return False  # the transaction is cancelled: nothing changes
            self._table.delete(pk, keys.credit_use_sk(message_id))
            grant["one_time_credits"] = grant.get("one_time_credits", 0) + 1
            return True

    def clear_credits(self, appid: str, openid: str, template_id: str) -> None:
        with self._table.lock:
            grant = self._table.get(keys.follower_pk(appid, openid), keys.subscription_sk(template_id))
            if grant is not None:
                grant.update(one_time_credits=0, long_term=False)


class MemoryFollowerRegistry:
    """FollowerStore's semantics (wxreach.aws.follower_store) on the quota MemoryTable."""

    def __init__(self, table: MemoryTable) -> None:
        self._table = table

    def set_following(
        self, appid: str, openid: str, *, following: bool, at: datetime, scene: str | None = None
    ) -> bool:
        pk, t = keys.follower_pk(appid, openid), _epoch(at)
        with self._table.lock:
            current = self._table.get(pk, keys.FOLLOWER_SK) or {}
            if current.get("follow_changed_at") is not None and current["follow_changed_at"] > t:
                return False
            item = self._table.upsert(pk, keys.FOLLOWER_SK)
            item.update(follow_changed_at=t, following=following)
            if following:
                item["followed_at"] = t
                if scene is not None:
                    item["scene"] = scene
                else:
                    item.pop("scene", None)
            else:
                item["unfollowed_at"] = t
            return True

    def touch_interaction(self, appid: str, openid: str, *, at: datetime, message: bool = False) -> None:
        t = _epoch(at)
        with self._table.lock:
            for attribute in (
                ("last_interaction_at", "last_message_at") if message else ("last_interaction_at",)
            ):
                current = self._table.get(keys.follower_pk(appid, openid), keys.FOLLOWER_SK) or {}
                if current.get(attribute) is None or current[attribute] < t:
                    self._table.upsert(keys.follower_pk(appid, openid), keys.FOLLOWER_SK)[attribute] = t

    def observe_following(self, appid: str, openid: str) -> None:
        with self._table.lock:
            current = self._table.get(keys.follower_pk(appid, openid), keys.FOLLOWER_SK) or {}
            if "follow_changed_at" not in current:
                self._table.upsert(keys.follower_pk(appid, openid), keys.FOLLOWER_SK)["following"] = True

    def grant_one_time(
        self, appid: str, openid: str, grants: Mapping[str, str], *, at: datetime
    ) -> dict[str, WriteOutcome]:
        pk, t = keys.follower_pk(appid, openid), _epoch(at)
        outcomes: dict[str, WriteOutcome] = {}
        with self._table.lock:
            for template_id, event_key in grants.items():
                grant = self._table.get(pk, keys.subscription_sk(template_id)) or {}
                if self._table.get(pk, keys.grant_event_sk(event_key)) is not None:
                    outcomes[template_id] = WriteOutcome.REPLAYED
                elif grant.get("revoked_at") is not None and grant["revoked_at"] >= t:
                    outcomes[template_id] = WriteOutcome.STALE
                else:
                    self._table.put(pk, keys.grant_event_sk(event_key), {})
                    item = self._table.upsert(pk, keys.subscription_sk(template_id))
                    item["template_id"] = template_id
                    item["one_time_credits"] = item.get("one_time_credits", 0) + 1
                    outcomes[template_id] = WriteOutcome.APPLIED
        for template_id, outcome in outcomes.items():
            if outcome is not WriteOutcome.STALE:
                self.set_status(appid, openid, template_id, status=SubscriptionStatus.ACCEPTED, at=at)
        return outcomes

    def set_status(
        self,
        appid: str,
        openid: str,
        template_id: str,
        *,
        status: SubscriptionStatus,
        at: datetime,
        long_term: bool | None = None,
    ) -> WriteOutcome:
        pk, sk, t = keys.follower_pk(appid, openid), keys.subscription_sk(template_id), _epoch(at)
        with self._table.lock:
            current = self._table.get(pk, sk) or {}
            if current.get("updated_at") is not None and current["updated_at"] > t:
                return WriteOutcome.STALE
            item = self._table.upsert(pk, sk)
            item.update(status=str(status), updated_at=t, template_id=template_id)
            if status is not SubscriptionStatus.ACCEPTED:
                long_term = False
            if long_term is not None:
                item["long_term"] = long_term
            if status is SubscriptionStatus.REVOKED:
                item.update(one_time_credits=0, revoked_at=t)
            return WriteOutcome.APPLIED

    def template_kinds(self, appid: str, template_ids: Iterable[str]) -> dict[str, SubscriptionKind]:
        kinds: dict[str, SubscriptionKind] = {}
        with self._table.lock:
            for template_id in dict.fromkeys(template_ids):
                item = self._table.get(keys.account_pk(appid), keys.subscription_template_sk(template_id))
                try:
                    kinds[template_id] = SubscriptionKind((item or {}).get("kind", ""))
                except ValueError:
                    kinds[template_id] = SubscriptionKind.UNKNOWN
        return kinds

    def get(self, appid: str, openid: str) -> Follower | None:
        with self._table.lock:
            items = self._table.query(keys.follower_pk(appid, openid))  # every item of the partition
            if not items:
                return None
            follower = Follower(appid=appid, openid=openid)
            grants: list[SubscriptionGrant] = []
            for sk, item in items:
                if sk == keys.FOLLOWER_SK:
                    follower = follower.model_copy(
                        update={
                            "following": item.get("following"),
                            "followed_at": _at(item.get("followed_at")),
                            "unfollowed_at": _at(item.get("unfollowed_at")),
                            "scene": item.get("scene"),
                            "last_interaction_at": _at(item.get("last_interaction_at")),
                            "last_message_at": _at(item.get("last_message_at")),
                        }
                    )
                elif sk.startswith("SUB#"):
                    grants.append(
                        SubscriptionGrant(
                            template_id=item["template_id"],
                            status=item.get("status", "unknown"),
                            one_time_credits=int(item.get("one_time_credits", 0)),
                            long_term=item.get("long_term", False),
                            updated_at=_at(item.get("updated_at")),
                        )
                    )
        return follower.model_copy(update={"subscriptions": grants})


class MemoryAccountDirectory:
    """AccountRepository's semantics (reserve → activate, get of active accounts only)."""

    RESERVATION_TIMEOUT_SECONDS = 60

    def __init__(self, table: MemoryTable) -> None:
        self._table = table

    def reserve(self, account: Account) -> None:
        now = int(time.time())
        with self._table.lock:
            item = self._table.get(keys.account_pk(account.appid), keys.ACCOUNT_SK)
            stale = (
                item is not None
                and item.get("state") == "pending"
                and item["reserved_at"] < now - self.RESERVATION_TIMEOUT_SECONDS
            )
            if item is not None and not stale:
                raise Conflict(f"account {account.appid} already exists", reason="account_exists")
            self._table.put(
                keys.account_pk(account.appid), keys.ACCOUNT_SK, {"state": "pending", "reserved_at": now}
            )

    def activate(self, account: Account) -> Account:
        stored = account.model_copy(update={"created_at": account.created_at or datetime.now(UTC)})
        with self._table.lock:
            item = self._table.get(keys.account_pk(stored.appid), keys.ACCOUNT_SK)
            if item is None or item.get("state") != "pending":
                raise Conflict("account is not being registered", reason="account_exists")
            item.update(state="active", account=stored)
        return stored

    def get(self, appid: str) -> Account:
        with self._table.lock:
            item = self._table.get(keys.account_pk(appid), keys.ACCOUNT_SK) or {}
        if item.get("state") != "active":
            raise NotFound("unknown account", reason="unknown_account")
        account: Account = item["account"]
        return account


class MemoryTemplateCatalog:
    """DynamoTemplateCatalog's semantics on the quota MemoryTable."""

    def __init__(self, table: MemoryTable) -> None:
        self._table = table

    @staticmethod
    def _sk(channel: Channel, template_id: str) -> str:
        return (
            keys.template_sk(template_id)
            if channel is Channel.TEMPLATE
            else keys.subscription_template_sk(template_id)
        )

    def get(self, appid: str, channel: Channel, template_id: str) -> Template | None:
        with self._table.lock:
            item = self._table.get(keys.account_pk(appid), self._sk(channel, template_id)) or {}
        template: Template | None = item.get("template")
        return template

    def templates(self, appid: str, channel: Channel | None = None) -> list[Template]:
        with self._table.lock:
            return [
                item["template"]
                for ch in ([channel] if channel is not None else list(Channel))
                for _, item in self._table.query(keys.account_pk(appid), self._sk(ch, ""))
                if "template" in item
            ]

    def replace_all(self, appid: str, channel: Channel, templates: list[Template]) -> tuple[int, int]:
        pk = keys.account_pk(appid)
        with self._table.lock:
            existing = {sk for sk, _ in self._table.query(pk, self._sk(channel, ""))}
            wanted: dict[str, dict[str, Any]] = {}
            for template in templates:
                item: dict[str, Any] = {"template": template}
                if template.kind is not None:
                    item["kind"] = str(template.kind)
                wanted[self._sk(channel, template.template_id)] = item
            for sk, item in wanted.items():
                self._table.put(pk, sk, item)
            for sk in existing - set(wanted):
                self._table.delete(pk, sk)
        return len(wanted), len(existing - set(wanted))


class MemoryTokenStore:
    """DynamoTokenStore's semantics (wxreach.aws.token_store) on the quota MemoryTable."""

    def __init__(self, table: MemoryTable) -> None:
        self._table = table

    @staticmethod
    def _record(item: Mapping[str, Any]) -> StoredToken:
        return StoredToken(
            token=item.get("token"),
            expires_at=item.get("token_expires_at"),
            refresh_at=item.get("refresh_at"),
            lease_owner=item.get("lease_owner"),
            lease_until=item.get("lease_until"),
            force_day=item.get("force_day"),
            force_count=int(item.get("force_count") or 0),
            last_force_at=item.get("last_force_at"),
        )

    def _item(self, appid: str) -> dict[str, Any] | None:
        return self._table.get(keys.account_pk(appid), keys.TOKEN_SK)

    def read(self, appid: str) -> StoredToken | None:
        with self._table.lock:
            item = self._item(appid)
            return self._record(item) if item is not None else None

    def try_lease(self, appid: str, owner: str, *, now: float, until: float) -> StoredToken | None:
        with self._table.lock:
            current = self._item(appid) or {}
            if current.get("lease_until") is not None and current["lease_until"] > now:
                return None
            item = self._table.upsert(keys.account_pk(appid), keys.TOKEN_SK)
            item.update(lease_owner=owner, lease_until=float(until))
            return self._record(item)

    def save(self, appid: str, owner: str, token: str, *, expires_at: float, refresh_at: float) -> bool:
        with self._table.lock:
            item = self._item(appid)
            if item is None or item.get("lease_owner") != owner:
                return False
            item.update(token=token, token_expires_at=float(expires_at), refresh_at=float(refresh_at))
            item.pop("lease_owner", None)
            item.pop("lease_until", None)
            return True

    def release(self, appid: str, owner: str) -> None:
        with self._table.lock:
            item = self._item(appid)
            if item is not None and item.get("lease_owner") == owner:
                item.pop("lease_owner", None)
                item.pop("lease_until", None)

    def record_force_refresh(
        self, appid: str, *, now: float, day: str, max_per_day: int, min_interval: float
    ) -> bool:
        with self._table.lock:
            current = self._item(appid) or {}
            last = current.get("last_force_at")
            if last is not None and last > now - min_interval:
                return False
            if current.get("force_day") == day:
                if current.get("force_count", 0) >= max_per_day:
                    return False
                count = current["force_count"] + 1
            elif max_per_day < 1:
                return False
            else:
                count = 1
            item = self._table.upsert(keys.account_pk(appid), keys.TOKEN_SK)
            item.update(force_day=day, force_count=count, last_force_at=float(now))
            return True


# == the two sets of adapters ====================================================================
@dataclass
class Ports:
    label: str
    accounts: AccountDirectory
    followers: FollowerRegistry
    catalog: TemplateCatalog
    ledger: MessageLedger
    guards: SendGuards
    token_store: TokenLeaseStore
    daily_count: Callable[[str], int]


def memory_ports() -> Ports:
    quota = MemoryTable()
    guards = MemorySendGuards(quota)
    return Ports(
        label="in-memory ports",
        accounts=MemoryAccountDirectory(quota),
        followers=MemoryFollowerRegistry(quota),
        catalog=MemoryTemplateCatalog(quota),
        ledger=MemoryMessageLedger(),
        guards=guards,
        token_store=MemoryTokenStore(quota),
        daily_count=lambda day: guards.daily_count(APPID, TEMPLATE_DAILY_COUNTER, day=day),
    )


def dynamo_ports(quota_table: str, ledger_table: str) -> Ports:
    from wxreach.aws.account_store import AccountRepository
    from wxreach.aws.follower_store import FollowerStore
    from wxreach.aws.ledger_store import DynamoMessageLedger
    from wxreach.aws.send_guards import DynamoSendGuards
    from wxreach.aws.template_store import DynamoTemplateCatalog
    from wxreach.aws.token_store import DynamoTokenStore

    guards = DynamoSendGuards(quota_table)
    return Ports(
        label="DynamoDB adapters on moto",
        accounts=AccountRepository(quota_table),
        followers=FollowerStore(quota_table),
        catalog=DynamoTemplateCatalog(quota_table),
        ledger=DynamoMessageLedger(ledger_table),
        guards=guards,
        token_store=DynamoTokenStore(quota_table),
        daily_count=lambda day: guards.daily_count(APPID, TEMPLATE_DAILY_COUNTER, day=day),
    )


@contextlib.contextmanager
def moto_dynamodb() -> Iterator[tuple[Ports, Counter[str]]]:
    """The real DynamoDB adapters on moto's in-process DynamoDB, tables from template.yaml.

    As in tests/support/aws.py, DynamoDB calls are serialised: moto does not apply a conditional
    write atomically, DynamoDB does. The counter counts them by operation."""
    from botocore.client import BaseClient
    from moto import mock_aws

    from tests.support.template import create_tables, load_template
    from wxreach.aws.clients import reset_clients

    calls: Counter[str] = Counter()
    lock = threading.Lock()
    original = BaseClient._make_api_call  # type: ignore[attr-defined]

    def serialised(self: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
        if self.meta.service_model.service_name == "dynamodb":
            with lock:
                calls[operation_name] += 1
                return original(self, operation_name, api_params)
        return original(self, operation_name, api_params)

    region = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = region or "us-east-1"
    BaseClient._make_api_call = serialised  # type: ignore[attr-defined]
    reset_clients()
    try:
        with mock_aws():
            tables = create_tables(load_template())
            yield dynamo_ports(tables["QuotaTable"], tables["LedgerTable"]), calls
    finally:
        reset_clients()
        BaseClient._make_api_call = original  # type: ignore[attr-defined]
        if region is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)


# == the sandbox, in its own process ============================================================
class SandboxProcess:
    """`python -m local.sandbox --port 0 --seed 1` as a child process, and its admin API."""

    def __init__(self, *, seed: int = SANDBOX_SEED, start_timeout: float = 30.0) -> None:
        self._log = tempfile.TemporaryFile(mode="w+", prefix="wxreach-bench-sandbox-")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "local.sandbox",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--seed",
                str(seed),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.pid = self._proc.pid
        try:
            self.url = self._await_url(start_timeout)
        except BaseException:
            self.stop()
            raise
        self.admin = httpx.Client(base_url=self.url, timeout=30, trust_env=False)

    def _await_url(self, timeout: float) -> str:
        lines: queue.Queue[str] = queue.Queue()
        stdout = self._proc.stdout
        assert stdout is not None

        def read(stream: IO[str]) -> None:
            for line in stream:  # drains stdout for the child's whole life
                lines.put(line)

        threading.Thread(target=read, args=(stdout,), daemon=True, name="sandbox-stdout").start()
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self._proc.poll() is not None:
                    break
                continue
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                return match.group(1)
        self._log.seek(0)
        raise RuntimeError(
            f"the sandbox did not start (exit {self._proc.poll()}): {self._log.read()[-2000:]}"
        )

    def call(self, method: str, path: str, body: Any = None) -> Any:
        resp = self.admin.request(method, "/admin" + path, json=body)
        if resp.status_code >= 300:
            raise RuntimeError(f"sandbox admin {method} {path}: HTTP {resp.status_code} {resp.text[:500]}")
        return resp.json()

    def template_sends(self) -> tuple[int, int]:
        """(calls, errcode-0 answers) of /cgi-bin/message/template/send so far."""
        paths = self.call("GET", "/counters")["paths"]
        counts = paths.get(TEMPLATE_SEND_PATH, {})
        return int(counts.get("calls", 0)), int(counts.get("errcodes", {}).get("0", 0))

    def cpu_seconds(self) -> float | None:
        """user + system CPU of the sandbox process (Linux /proc); None elsewhere."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if hasattr(self, "admin"):
            self.admin.close()
        if self._proc.poll() is None:
            self._proc.terminate()  # SIGTERM: the CLI shuts the server down
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._log.close()

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def seed_sandbox(sandbox: SandboxProcess, followers: int) -> list[str]:
    sandbox.call(
        "POST",
        "/accounts",
        {
            "appid": APPID,
            "secret": APP_SECRET,
            "original_id": ORIGINAL_ID,
            "type": "service",
            "verified": True,
            "name": "wxreach bench",
        },
    )
    openids: list[str] = sandbox.call(
        "POST", f"/accounts/{APPID}/followers", {"count": followers, "prefix": "oBench"}
    )["openids"]
    sandbox.call(
        "POST",
        f"/accounts/{APPID}/templates",
        {"template_id": TEMPLATE_ID, "title": "订单支付成功", "keywords": KEYWORDS},
    )
    sandbox.call(
        "POST",
        "/faults",
        {"path": TEMPLATE_SEND_PATH, "latency": {"kind": "fixed", "ms": LATENCY_MS}},
    )
    return openids


# == one sender container ========================================================================
@dataclass
class Sender:
    """What one template-sender container holds: ports, a WeChat client, a token broker, and one
    SendService per concurrency (each keeps its thread pool across rounds, as a warm container)."""

    ports: Ports
    wechat: WeChatClient
    services: dict[int, SendService]

    def close(self) -> None:
        self.wechat.close()
        for service in self.services.values():
            pool = getattr(service, "_pool", None)  # SendService never shuts its pool down itself
            if pool is not None:
                pool.shutdown(wait=False)


def build_sender(ports: Ports, url: str, openids: list[str], concurrencies: Iterable[int]) -> Sender:
    wechat = WeChatClient(url)
    tokens = TokenBroker(store=ports.token_store, client=wechat, secret_for=lambda appid: APP_SECRET)
    templates = TemplateService(catalog=ports.catalog, wechat=wechat, tokens=tokens)
    account = Account(
        appid=APPID, original_id=ORIGINAL_ID, name="wxreach bench", encryption_mode=EncryptionMode.PLAINTEXT
    )
    ports.accounts.reserve(account)
    ports.accounts.activate(account)
    now = datetime.now(UTC)
    for openid in openids:  # the registry knows them from their subscribe callbacks
        ports.followers.set_following(APPID, openid, following=True, at=now)
    templates.sync(APPID, [Channel.TEMPLATE])
    services = {
        c: SendService(
            accounts=ports.accounts,
            followers=ports.followers,
            templates=templates,
            ledger=ports.ledger,
            guards=ports.guards,
            wechat=wechat,
            tokens=tokens,
            policy=SendPolicy(concurrency=c, rate_per_second=RATE_PER_SECOND),
        )
        for c in concurrencies
    }
    return Sender(ports=ports, wechat=wechat, services=services)


def batches_for(openids: list[str], tag: str) -> list[MessageBatch]:
    """Batch records of up to 100 recipients, origin `bench-<tag>`, values unique to the tag."""
    return [
        MessageBatch(
            appid=APPID,
            channel=Channel.TEMPLATE,
            origin=Origin(kind=OriginKind.JOURNEY, id=f"bench-{tag}", batch_id=str(start // BATCH_SIZE)),
            content=CONTENT,
            recipients=[
                Recipient(openid=openid, params={"product": "咖啡豆", "order": f"{tag}N{start + i}"})
                for i, openid in enumerate(openids[start : start + BATCH_SIZE])
            ],
        )
        for start in range(0, len(openids), BATCH_SIZE)
    ]


@dataclass
class Run:
    label: str
    ports: str
    concurrency: int
    messages: int
    seconds: float
    states: dict[str, int]
    calls: int  # template sends the sandbox saw during the run
    accepted: int  # of which errcode 0
    retry_after: float | None
    sender_cpu_s: float
    sandbox_cpu_s: float | None
    dynamodb_calls: int | None = None

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds

    @property
    def ideal(self) -> float:
        return self.concurrency / (LATENCY_MS / 1000)

    @property
    def ok(self) -> bool:
        return (
            self.states == {"sent": self.messages}
            and self.calls == self.accepted == self.messages
            and self.retry_after is None
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "ports": self.ports,
            "concurrency": self.concurrency,
            "messages": self.messages,
            "seconds": round(self.seconds, 4),
            "msgs_per_s": round(self.msgs_per_s, 2),
            "ideal_msgs_per_s": self.ideal,
            "of_ideal": round(self.msgs_per_s / self.ideal, 4),
            "states": self.states,
            "sandbox_calls": self.calls,
            "sandbox_accepted": self.accepted,
            "retry_after": self.retry_after,
            "all_sent": self.ok,
            "sender_cpu_ms_per_msg": round(self.sender_cpu_s * 1000 / self.messages, 3),
            "sandbox_cpu_ms_per_msg": (
                round(self.sandbox_cpu_s * 1000 / self.messages, 3)
                if self.sandbox_cpu_s is not None
                else None
            ),
            "dynamodb_calls": self.dynamodb_calls,
        }


@contextlib.contextmanager
def _log_to_devnull() -> Iterator[None]:
    """The sender logs one JSON line per message at INFO, as deployed; here into /dev/null."""
    handler = logger.registered_handler
    if not isinstance(handler, logging.StreamHandler):
        yield
        return
    with open(os.devnull, "w", encoding="utf-8") as sink:
        previous = handler.setStream(sink)
        try:
            yield
        finally:
            handler.setStream(previous)


def send_run(
    sender: Sender,
    sandbox: SandboxProcess,
    *,
    label: str,
    concurrency: int,
    openids: list[str],
    tag: str,
    dynamodb: Counter[str] | None = None,
) -> Run:
    service = sender.services[concurrency]
    batches = batches_for(openids, tag)
    calls0, ok0 = sandbox.template_sends()
    ddb0 = sum(dynamodb.values()) if dynamodb is not None else 0
    sandbox0 = sandbox.cpu_seconds()
    cpu0 = time.process_time()
    started = time.perf_counter()
    results = service.send_batches(batches)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    sandbox1 = sandbox.cpu_seconds()
    calls1, ok1 = sandbox.template_sends()
    states = Counter(str(m.state) for result in results for m in result.messages)
    waits = [r.retry_after for r in results if r.retry_after is not None]
    return Run(
        label=label,
        ports=sender.ports.label,
        concurrency=concurrency,
        messages=len(openids),
        seconds=seconds,
        states=dict(states),
        calls=calls1 - calls0,
        accepted=ok1 - ok0,
        retry_after=max(waits) if waits else None,
        sender_cpu_s=cpu,
        sandbox_cpu_s=sandbox1 - sandbox0 if sandbox0 is not None and sandbox1 is not None else None,
        dynamodb_calls=sum(dynamodb.values()) - ddb0 if dynamodb is not None else None,
    )


# == the measurement =============================================================================
@dataclass
class Plan:
    followers: int = 600
    concurrency: int = 16
    sequential: int = 60
    rounds: int = 3
    moto: bool = True
    warmup: int = 0  # 0: 2 × concurrency

    @classmethod
    def quick(cls) -> Plan:
        return cls(followers=200, sequential=20, rounds=1)


def _format_row(run: Run) -> str:
    sandbox_cpu = (
        f"{run.sandbox_cpu_s * 1000 / run.messages:>9.2f}" if run.sandbox_cpu_s is not None else f"{'n/a':>9}"
    )
    states = ", ".join(f"{k} {v}" for k, v in sorted(run.states.items()))
    check = "ok" if run.ok else f"CHECK FAILED (sandbox {run.calls} calls, {run.accepted} ok)"
    ddb = f"  {run.dynamodb_calls / run.messages:.1f} DynamoDB calls/msg" if run.dynamodb_calls else ""
    return (
        f"{run.label:<30}{run.messages:>6}{run.seconds:>9.2f}{run.msgs_per_s:>9.1f}"
        f"{run.msgs_per_s / run.ideal:>8.2f}×{run.sender_cpu_s * 1000 / run.messages:>9.2f}{sandbox_cpu}"
        f"  {states}: {check}{ddb}"
    )


def _header() -> str:
    head = (
        f"{'run':<30}{'msgs':>6}{'seconds':>9}{'msgs/s':>9}{'of ideal':>9}"
        f"{'our CPU':>9}{'sandbox':>9}  states"
    )
    return head + "\n" + f"{'':<63}{'ms/msg':>9}{'ms/msg':>9}\n" + "-" * (len(head) + 30)


def _verdict(value: float, target: float) -> str:
    return "meets" if value >= target else "BELOW target"


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def measure(plan: Plan, out: Out = print) -> dict[str, Any]:
    """Runs everything, prints as it goes, returns the figures (for bench/run.py's JSON)."""
    if plan.sequential > plan.followers:
        raise ValueError("the sequential sample cannot exceed the followers")
    c = plan.concurrency
    ideal = c / (LATENCY_MS / 1000)
    warmup = plan.warmup or 2 * c
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    runs: list[Run] = []
    moto_runs: list[Run] = []
    with SandboxProcess() as sandbox, _log_to_devnull():
        openids = seed_sandbox(sandbox, plan.followers)
        out(
            f"WeChat sandbox in its own process (pid {sandbox.pid}, seed {SANDBOX_SEED}) at {sandbox.url}:\n"
            f"  a verified service account, {plan.followers} followers, template {TEMPLATE_ID} "
            f"(thing1, character_string2),\n  fixed {LATENCY_MS:g} ms latency on {TEMPLATE_SEND_PATH}. "
            f"Load average {load[0]:.2f} at the start.\n"
            f"Sender: SendService + WeChatClient (httpx, real HTTP) + TokenBroker, rate limit "
            f"{RATE_PER_SECOND}/s (does not bind);\n  ports in memory (DynamoDB adapters' semantics, "
            "bench/sender_throughput.py), batches of 100, distinct origin and values per run.\n"
            f"ideal = concurrency / latency = {c} / {LATENCY_MS / 1000:.3f} s = {ideal:.0f} msgs/s; "
            f"sequential = the same SendService at concurrency 1 over {plan.sequential} messages.\n"
            f"{plan.rounds} round(s), concurrent then sequential, after a warm-up of {warmup} + 3 "
            "messages (connections, token, template).\n"
        )
        sender = build_sender(memory_ports(), sandbox.url, openids, (c, 1))
        try:
            send_run(sender, sandbox, label="warm-up", concurrency=c, openids=openids[:warmup], tag="wc")
            send_run(sender, sandbox, label="warm-up", concurrency=1, openids=openids[:3], tag="ws")
            out(_header())
            for n in range(1, plan.rounds + 1):
                for label, conc, sample, tag in (
                    (f"concurrent C={c}, round {n}", c, openids, f"c{n}"),
                    (f"sequential C=1, round {n}", 1, openids[: plan.sequential], f"s{n}"),
                ):
                    run = send_run(sender, sandbox, label=label, concurrency=conc, openids=sample, tag=tag)
                    runs.append(run)
                    out(_format_row(run))
        finally:
            sender.close()

        if plan.moto:
            out(
                "\nSame workload once on the real DynamoDB adapters over moto mock_aws (tables from "
                "template.yaml,\nDynamoDB calls serialised as in tests/support/aws.py); moto runs in "
                "this process, under our GIL:"
            )
            with moto_dynamodb() as (ports, calls):
                sender = build_sender(ports, sandbox.url, openids, (c, 1))
                try:
                    send_run(
                        sender, sandbox, label="warm-up", concurrency=c, openids=openids[:warmup], tag="mwc"
                    )
                    send_run(sender, sandbox, label="warm-up", concurrency=1, openids=openids[:3], tag="mws")
                    for label, conc, sample, tag in (
                        (f"moto: concurrent C={c}", c, openids, "mc"),
                        ("moto: sequential C=1", 1, openids[: plan.sequential], "ms"),
                    ):
                        run = send_run(
                            sender,
                            sandbox,
                            label=label,
                            concurrency=conc,
                            openids=sample,
                            tag=tag,
                            dynamodb=calls,
                        )
                        moto_runs.append(run)
                        out(_format_row(run))
                    ops = ", ".join(f"{op} {n}" for op, n in calls.most_common())
                    out(f"  DynamoDB calls of the moto section by operation (setup included): {ops}")
                finally:
                    sender.close()

    concurrent = [r for r in runs if r.concurrency == c]
    sequential = [r for r in runs if r.concurrency == 1]
    conc_rates = [r.msgs_per_s for r in concurrent]
    seq_rates = [r.msgs_per_s for r in sequential]
    conc_med, seq_med = statistics.median(conc_rates), statistics.median(seq_rates)
    of_ideal = conc_med / ideal
    speedup = conc_med / seq_med
    paired = [a.msgs_per_s / b.msgs_per_s for a, b in zip(concurrent, sequential, strict=True)]
    all_ok = all(r.ok for r in runs + moto_runs)
    out(
        f"\nconcurrent C={c} ({len(concurrent)} × {plan.followers} msgs, in-memory ports): "
        f"min {min(conc_rates):.1f}, median {conc_med:.1f} msgs/s\n"
        f"  median / ideal {ideal:.0f} = {of_ideal:.2f}   (target ≥ {TARGET_OF_IDEAL:g})  "
        f"{_verdict(of_ideal, TARGET_OF_IDEAL)}\n"
        f"sequential C=1 ({len(sequential)} × {plan.sequential} msgs): min {min(seq_rates):.1f}, "
        f"median {seq_med:.1f} msgs/s = {1000 / seq_med:.1f} ms per message "
        f"({1000 / seq_med - LATENCY_MS:.1f} ms beyond the latency)\n"
        f"  concurrent / sequential = {speedup:.1f}×   (target ≥ {TARGET_OVER_SEQUENTIAL:g}×; "
        f"at most {c}× by construction)  {_verdict(speedup, TARGET_OVER_SEQUENTIAL)}"
        + (f"; per round {', '.join(f'{p:.1f}×' for p in paired)}" if len(paired) > 1 else "")
    )
    if moto_runs:
        mc, ms = moto_runs
        out(
            f"moto (DynamoDB adapters, for comparison, not the target's figure): concurrent "
            f"{mc.msgs_per_s:.1f} msgs/s ({mc.msgs_per_s / ideal:.2f} of ideal), sequential "
            f"{ms.msgs_per_s:.1f} msgs/s, {mc.msgs_per_s / ms.msgs_per_s:.1f}×; "
            f"{mc.sender_cpu_s * 1000 / mc.messages:.1f} ms of our CPU per message"
        )
    if not all_ok:
        out("! some messages did not end `sent` or the sandbox counts disagree (see the rows above)")
    return {
        "plan": {
            "followers": plan.followers,
            "concurrency": c,
            "sequential": plan.sequential,
            "rounds": plan.rounds,
            "latency_ms": LATENCY_MS,
            "rate_per_second": RATE_PER_SECOND,
            "batch_size": BATCH_SIZE,
        },
        "loadavg_at_start": [round(x, 2) for x in load],
        "ideal_msgs_per_s": ideal,
        "concurrent_msgs_per_s": _stats(conc_rates),
        "sequential_msgs_per_s": _stats(seq_rates),
        "of_ideal": of_ideal,
        "over_sequential": speedup,
        "over_sequential_per_round": paired,
        "targets": {"of_ideal": TARGET_OF_IDEAL, "over_sequential": TARGET_OVER_SEQUENTIAL},
        "all_sent": all_ok,
        "runs": [r.as_dict() for r in runs],
        "moto_runs": [r.as_dict() for r in moto_runs],
    }


def add_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    p = f"--{prefix}"
    parser.add_argument(f"{p}followers", type=int, default=None, help="followers (default 600, quick 200)")
    parser.add_argument(f"{p}concurrency", type=int, default=16, help="policy concurrency (default 16)")
    parser.add_argument(f"{p}sequential", type=int, default=None, help="sequential sample (60, quick 20)")
    parser.add_argument(f"{p}rounds", type=int, default=None, help="rounds (default 3, quick 1)")
    parser.add_argument(f"{p}skip-moto", action="store_true", help="skip the run on moto")


def plan_from(args: argparse.Namespace, *, quick: bool, prefix: str = "") -> Plan:
    plan = Plan.quick() if quick else Plan()
    attr = prefix.replace("-", "_")
    for name in ("followers", "concurrency", "sequential", "rounds"):
        value = getattr(args, attr + name)
        if value is not None:
            setattr(plan, name, value)
    plan.moto = not getattr(args, attr + "skip_moto")
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="200 followers, 20 sequential, 1 round")
    add_arguments(parser)
    args = parser.parse_args(argv)
    figures = measure(plan_from(args, quick=args.quick))
    return 0 if figures["all_sent"] else 1


if __name__ == "__main__":
    sys.exit(main())
