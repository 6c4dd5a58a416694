"""The quota table's share of sending: credits, the repeat guard, counters, pauses, rate limit.

Every guard is one conditional write (or a transaction with a marker), so it holds across all
sender instances and a redelivered record never consumes or refunds twice.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from wxreach.aws import keys
from wxreach.aws.attributes import error_is
from wxreach.aws.clients import client
from wxreach.reach.ports import CreditOutcome, RepeatReservation

# Credit markers outlive any redelivery or reconciliation of the message they belong to.
CREDIT_MARKER_RETENTION_SECONDS = 90 * 24 * 3600
RATE_WINDOW_RETENTION_SECONDS = 120
COUNTER_RETENTION_SECONDS = 3 * 24 * 3600


def _epoch(dt: datetime) -> int:
    return int(dt.timestamp())


class DynamoSendGuards:
    def __init__(self, table: str) -> None:
        self._table = table

    def _update(self, key: dict[str, Any], **kwargs: Any) -> bool:
        try:
            client("dynamodb").update_item(TableName=self._table, Key=key, **kwargs)
        except ClientError as exc:
            if error_is(exc):
                return False
            raise
        return True

    @staticmethod
    def _account_key(appid: str, sk: str) -> dict[str, Any]:
        return {"pk": {"S": keys.account_pk(appid)}, "sk": {"S": sk}}

    @staticmethod
    def _follower_key(appid: str, openid: str, sk: str) -> dict[str, Any]:
        return {"pk": {"S": keys.follower_pk(appid, openid)}, "sk": {"S": sk}}

    # -- account pause (45009, 40164, 48004, 89503) -------------------------------------------
    def paused_until(self, appid: str, channel: str, *, now: datetime) -> tuple[datetime, str] | None:
        resp = client("dynamodb").get_item(
            TableName=self._table, Key=self._account_key(appid, keys.pause_sk(channel)), ConsistentRead=True
        )
        item = resp.get("Item")
        if not item:
            return None
        until = int(item["until"]["N"])
        if until <= _epoch(now):
            return None
        return datetime.fromtimestamp(until, UTC), item.get("reason", {}).get("S", "")

    def pause(self, appid: str, channel: str, *, until: datetime, reason: str) -> None:
        # Only ever extends a pause: two instances hitting 45009 and 40164 keep the later end.
        self._update(
            self._account_key(appid, keys.pause_sk(channel)),
            UpdateExpression="SET #until = :until, reason = :reason, expires_at = :exp",
            ConditionExpression="attribute_not_exists(#until) OR #until < :until",
            ExpressionAttributeNames={"#until": "until"},
            ExpressionAttributeValues={
                ":until": {"N": str(_epoch(until))},
                ":reason": {"S": reason},
                ":exp": {"N": str(_epoch(until) + COUNTER_RETENTION_SECONDS)},
            },
        )

    # -- per-account rate limit across instances ---------------------------------------------
    def take_rate_permit(self, appid: str, channel: str, *, per_second: int, now: float) -> bool:
        """One permit of this second's window (fixed one-second windows, one item each)."""
        second = int(now)
        return self._update(
            self._account_key(appid, keys.counter_sk(f"rate-{channel}", str(second))),
            UpdateExpression="ADD #count :one SET expires_at = :exp",
            ConditionExpression="attribute_not_exists(#count) OR #count < :limit",
            ExpressionAttributeNames={"#count": "count"},
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":limit": {"N": str(per_second)},
                ":exp": {"N": str(second + RATE_WINDOW_RETENTION_SECONDS)},
            },
        )

    # -- daily counters -----------------------------------------------------------------------
    def reserve_daily(self, appid: str, name: str, *, day: str, cap: int) -> bool:
        return self._update(
            self._account_key(appid, keys.counter_sk(name, day)),
            UpdateExpression="ADD #count :one SET expires_at = :exp",
            ConditionExpression="attribute_not_exists(#count) OR #count < :cap",
            ExpressionAttributeNames={"#count": "count"},
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":cap": {"N": str(cap)},
                ":exp": {"N": str(int(time.time()) + COUNTER_RETENTION_SECONDS)},
            },
        )

    def release_daily(self, appid: str, name: str, *, day: str) -> None:
        self._update(
            self._account_key(appid, keys.counter_sk(name, day)),
            UpdateExpression="ADD #count :minus",
            ConditionExpression="#count > :zero",
            ExpressionAttributeNames={"#count": "count"},
            ExpressionAttributeValues={":minus": {"N": "-1"}, ":zero": {"N": "0"}},
        )

    def daily_count(self, appid: str, name: str, *, day: str) -> int:
        resp = client("dynamodb").get_item(
            TableName=self._table,
            Key=self._account_key(appid, keys.counter_sk(name, day)),
            ConsistentRead=True,
        )
        return int(resp.get("Item", {}).get("count", {}).get("N", "0"))

    # -- anti-harassment repeat guard --------------------------------------------------------
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
        """Keeps the times of the last two sends of this content (`older`, `newer`); a third
        inside the window is refused (None). Idempotent per message: a redelivery finds its own
        reservation. What it replaced is kept (`undo_*`) so a release restores it exactly."""
        key = self._follower_key(appid, openid, keys.repeat_guard_sk(template_id, digest))
        ddb = client("dynamodb")
        current = ddb.get_item(TableName=self._table, Key=key, ConsistentRead=True).get("Item", {})
        newer = current.get("newer", {}).get("N")
        reservation = RepeatReservation(appid, openid, template_id, digest, newer or "", None, message_id)
        if newer is not None and current.get("newer_message", {}).get("S") == message_id:
            return reservation
        if self.repeat_blocked_by(current, now=now, window_seconds=window_seconds):
            return None
        stamp = str(_epoch(now))
        values: dict[str, Any] = {
            ":stamp": {"N": stamp},
            ":mid": {"S": message_id},
            ":older": {"N": newer or "0"},
            ":undo_older": {"N": current.get("older", {}).get("N", "0")},
            ":undo_message": {"S": current.get("newer_message", {}).get("S", "")},
            ":exp": {"N": str(_epoch(now) + window_seconds + 3600)},
        }
        condition = "attribute_not_exists(newer)" if newer is None else "newer = :older"
        if not self._update(
            key,
            UpdateExpression=(
                "SET newer = :stamp, older = :older, newer_message = :mid, undo_older = :undo_older,"
                " undo_message = :undo_message, expires_at = :exp"
            ),
            ConditionExpression=condition,
            ExpressionAttributeValues=values,
        ):
            # Someone wrote in between: another delivery of this very message (then its
            # reservation is ours too), or another send of this content (then decide again).
            return self.reserve_repeat(
                appid,
                openid,
                template_id,
                digest,
                message_id=message_id,
                now=now,
                window_seconds=window_seconds,
            )
        return RepeatReservation(appid, openid, template_id, digest, stamp, newer, message_id)

    @staticmethod
    def repeat_blocked_by(item: dict[str, Any], *, now: datetime, window_seconds: int) -> bool:
        older = item.get("older", {}).get("N")
        return older is not None and int(older) > _epoch(now) - window_seconds

    def repeat_blocked(
        self, appid: str, openid: str, template_id: str, digest: str, *, now: datetime, window_seconds: int
    ) -> bool:
        """Read-only: would a send of this content now be the third inside the window?"""
        key = self._follower_key(appid, openid, keys.repeat_guard_sk(template_id, digest))
        item = (
            client("dynamodb").get_item(TableName=self._table, Key=key, ConsistentRead=True).get("Item", {})
        )
        return self.repeat_blocked_by(item, now=now, window_seconds=window_seconds)

    def release_repeat(self, reservation: RepeatReservation) -> None:
        """Undo a reservation whose send did not happen, restoring exactly what it replaced
        (only while it is still the newest)."""
        key = self._follower_key(
            reservation.appid,
            reservation.openid,
            keys.repeat_guard_sk(reservation.template_id, reservation.digest),
        )
        self._update(
            key,
            UpdateExpression="SET newer = older, older = undo_older, newer_message = undo_message",
            ConditionExpression="newer_message = :mid",
            ExpressionAttributeValues={":mid": {"S": reservation.message_id}},
        )

    # -- subscription credits ----------------------------------------------------------------
    def consume_credit(self, appid: str, openid: str, template_id: str, message_id: str) -> CreditOutcome:
        """One one-time credit for this message, atomically with its marker; a long-term grant is
        used without consuming anything."""
        grant_key = self._follower_key(appid, openid, keys.subscription_sk(template_id))
        marker_key = self._follower_key(appid, openid, keys.credit_use_sk(message_id))
        ddb = client("dynamodb")
        grant = ddb.get_item(TableName=self._table, Key=grant_key, ConsistentRead=True).get("Item", {})
        if grant.get("long_term", {}).get("BOOL") and grant.get("status", {}).get("S") == "accepted":
            return CreditOutcome.LONG_TERM
        try:
            ddb.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": {
                                **marker_key,
                                "template_id": {"S": template_id},
                                "expires_at": {"N": str(int(time.time()) + CREDIT_MARKER_RETENTION_SECONDS)},
                            },
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": grant_key,
                            "UpdateExpression": "ADD one_time_credits :minus",
                            "ConditionExpression": "one_time_credits > :zero",
                            "ExpressionAttributeValues": {":minus": {"N": "-1"}, ":zero": {"N": "0"}},
                        }
                    },
                ]
            )
        except ClientError as exc:
            if not error_is(exc, "TransactionCanceledException"):
                raise
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if reasons and reasons[0] == "ConditionalCheckFailed":
                return CreditOutcome.ALREADY_CONSUMED  # this message took its credit before
            if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
                return CreditOutcome.NONE
            raise
        return CreditOutcome.CONSUMED

    def refund_credit(self, appid: str, openid: str, template_id: str, message_id: str) -> bool:
        """Gives this message's credit back, once: the marker's deletion is the proof."""
        try:
            client("dynamodb").transact_write_items(
                TransactItems=[
                    {
                        "Delete": {
                            "TableName": self._table,
                            "Key": self._follower_key(appid, openid, keys.credit_use_sk(message_id)),
                            "ConditionExpression": "attribute_exists(pk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": self._follower_key(appid, openid, keys.subscription_sk(template_id)),
                            "UpdateExpression": "ADD one_time_credits :one",
                            # A revoke since then withdrew every credit: nothing to give back.
                            "ConditionExpression": (
                                "attribute_exists(pk)"
                                " AND (attribute_not_exists(#status) OR #status <> :revoked)"
                            ),
                            "ExpressionAttributeNames": {"#status": "status"},
                            "ExpressionAttributeValues": {":one": {"N": "1"}, ":revoked": {"S": "revoked"}},
                        }
                    },
                ]
            )
        except ClientError as exc:
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if error_is(exc, "TransactionCanceledException") and "ConditionalCheckFailed" in reasons:
                return False  # refunded before (no marker), or revoked since
            raise  # a conflict with a concurrent write: the caller retries
        return True

    def clear_credits(self, appid: str, openid: str, template_id: str) -> None:
        """43101: WeChat says this user has no authorisation left; believe it."""
        self._update(
            self._follower_key(appid, openid, keys.subscription_sk(template_id)),
            UpdateExpression="SET one_time_credits = :zero, long_term = :false",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":zero": {"N": "0"}, ":false": {"BOOL": False}},
        )

    # -- per-account calls in any rolling minute across instances (mass API, §4.1) ----------------
    def take_minute_permit(self, appid: str, name: str, *, per_minute: int, now: float) -> bool:
        """One of `per_minute` permits in any rolling window of MINUTE_PERMIT_WINDOW_SECONDS.

        Fixed minute windows would let 2 x per_minute calls through around a minute boundary
        (a full window at :59, another at :00), which WeChat's rolling minute answers with 45011.
        So one item per account and name keeps the times of the last `per_minute` permits as a
        ring: `n` permits taken so far, `t<i>` the time of the latest permit number ≡ i (mod
        per_minute). Permit n is free once permit n - per_minute has left the window; it is taken
        by one write conditional on `n`, so no two instances get the same one.
        """
        key = self._account_key(appid, keys.counter_sk(name, "rolling"))
        now_ms = int(now * 1000)
        window_ms = int(MINUTE_PERMIT_WINDOW_SECONDS * 1000)
        ddb = client("dynamodb")
        for _ in range(MINUTE_PERMIT_CONTENTION_RETRIES):
            item = ddb.get_item(TableName=self._table, Key=key, ConsistentRead=True).get("Item", {})
            taken = int(item.get("n", {}).get("N", "0"))
            slot = f"t{taken % per_minute}"
            oldest = item.get(slot, {}).get("N")
            if oldest is not None and now_ms - int(oldest) < window_ms:
                return False  # a clock that went back also lands here: refuse rather than burst
            values: dict[str, Any] = {
                ":next": {"N": str(taken + 1)},
                ":now": {"N": str(now_ms)},
                ":exp": {"N": str(int(now) + MINUTE_PERMIT_RETENTION_SECONDS)},
            }
            if "n" in item:
                condition = "n = :taken"
                values[":taken"] = {"N": str(taken)}
            else:
                condition = "attribute_not_exists(n)"
            if self._update(
                key,
                UpdateExpression="SET n = :next, #slot = :now, expires_at = :exp",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#slot": slot},
                ExpressionAttributeValues=values,
            ):
                return True
            # Another instance took permit `taken` meanwhile: look again.
        return False


# A permit's call reaches WeChat a moment after it is taken (the claim write, the request): the
# window is a little longer than WeChat's minute so that calls per_minute apart never share one.
MINUTE_PERMIT_WINDOW_SECONDS = 61.0
MINUTE_PERMIT_RETENTION_SECONDS = 3600
MINUTE_PERMIT_CONTENTION_RETRIES = 8
