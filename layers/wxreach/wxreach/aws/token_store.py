"""The access-token record of each account in the quota table (`ACCT#<appid>` / `TOKEN`).

One item holds the token, the fetch lease and the force-refresh counters; every change is a
single conditional UpdateItem, so DynamoDB decides races between instances. The table is
encrypted at rest (SSE). Attributes (unix seconds as numbers):

- token, token_expires_at, refresh_at: the token and when to fetch the next one
- lease_owner, lease_until: who may fetch now
- force_day (China date), force_count, last_force_at: force_refresh use (§1.2)
- expires_at: TTL, a margin after the token's expiry (set on save, never lowered by lease or
  force writes), so the day's force counters outlive the token
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import ClientError

from wxreach.aws import keys
from wxreach.aws.clients import client
from wxreach.wechat.tokens import StoredToken

# Keeps the record (and the day's force-refresh count) well past a China day of inactivity.
TTL_MARGIN_SECONDS = 2 * 24 * 3600


def _n(value: float) -> dict[str, str]:
    return {"N": repr(float(value)) if not float(value).is_integer() else str(int(value))}


def _ttl(after: float) -> dict[str, str]:
    return {"N": str(int(after) + TTL_MARGIN_SECONDS)}


def _num(item: dict[str, Any], name: str) -> float | None:
    attr = item.get(name)
    return float(attr["N"]) if attr and "N" in attr else None


def _str(item: dict[str, Any], name: str) -> str | None:
    attr = item.get(name)
    return attr["S"] if attr and "S" in attr else None


def _record(item: dict[str, Any]) -> StoredToken:
    return StoredToken(
        token=_str(item, "token"),
        expires_at=_num(item, "token_expires_at"),
        refresh_at=_num(item, "refresh_at"),
        lease_owner=_str(item, "lease_owner"),
        lease_until=_num(item, "lease_until"),
        force_day=_str(item, "force_day"),
        force_count=int(_num(item, "force_count") or 0),
        last_force_at=_num(item, "last_force_at"),
    )


def _refused(exc: ClientError) -> bool:
    return exc.response["Error"]["Code"] == "ConditionalCheckFailedException"


class DynamoTokenStore:
    """Implements wxreach.wechat.tokens.TokenLeaseStore."""

    def __init__(self, table: str) -> None:
        self._table = table

    def _key(self, appid: str) -> dict[str, Any]:
        return {"pk": {"S": keys.account_pk(appid)}, "sk": {"S": keys.TOKEN_SK}}

    def _update(self, appid: str, **kwargs: Any) -> dict[str, Any] | None:
        """The item after a conditional update; None when the condition refused it."""
        try:
            resp = client("dynamodb").update_item(TableName=self._table, Key=self._key(appid), **kwargs)
        except ClientError as exc:
            if _refused(exc):
                return None
            raise
        return resp.get("Attributes", {})

    def read(self, appid: str) -> StoredToken | None:
        resp = client("dynamodb").get_item(TableName=self._table, Key=self._key(appid), ConsistentRead=True)
        item = resp.get("Item")
        return _record(item) if item else None

    def try_lease(self, appid: str, owner: str, *, now: float, until: float) -> StoredToken | None:
        item = self._update(
            appid,
            UpdateExpression=(
                "SET lease_owner = :owner, lease_until = :until, expires_at = if_not_exists(expires_at, :ttl)"
            ),
            ConditionExpression="attribute_not_exists(lease_until) OR lease_until <= :now",
            ExpressionAttributeValues={
                ":owner": {"S": owner},
                ":until": _n(until),
                ":now": _n(now),
                ":ttl": _ttl(max(now, until)),
            },
            ReturnValues="ALL_NEW",
        )
        return None if item is None else _record(item)

    def save(self, appid: str, owner: str, token: str, *, expires_at: float, refresh_at: float) -> bool:
        item = self._update(
            appid,
            UpdateExpression=(
                "SET #token = :token, token_expires_at = :exp, refresh_at = :refresh, "
                "expires_at = :ttl, updated_at = :now REMOVE lease_owner, lease_until"
            ),
            ConditionExpression="lease_owner = :owner",
            ExpressionAttributeNames={"#token": "token"},
            ExpressionAttributeValues={
                ":token": {"S": token},
                ":exp": _n(expires_at),
                ":refresh": _n(refresh_at),
                ":ttl": _ttl(expires_at),
                ":now": _n(time.time()),
                ":owner": {"S": owner},
            },
            ReturnValues="NONE",
        )
        return item is not None

    def release(self, appid: str, owner: str) -> None:
        self._update(
            appid,
            UpdateExpression="REMOVE lease_owner, lease_until",
            ConditionExpression="lease_owner = :owner",
            ExpressionAttributeValues={":owner": {"S": owner}},
            ReturnValues="NONE",
        )

    def record_force_refresh(
        self, appid: str, *, now: float, day: str, max_per_day: int, min_interval: float
    ) -> bool:
        values = {":day": {"S": day}, ":now": _n(now), ":cutoff": _n(now - min_interval), ":ttl": _ttl(now)}
        spaced = "(attribute_not_exists(last_force_at) OR last_force_at <= :cutoff)"
        # Same China day: one more, under the cap. A new day: start again at 1.
        same_day = self._update(
            appid,
            UpdateExpression=(
                "SET force_count = force_count + :one, last_force_at = :now, "
                "expires_at = if_not_exists(expires_at, :ttl)"
            ),
            ConditionExpression=f"force_day = :day AND force_count < :max AND {spaced}",
            ExpressionAttributeValues={**values, ":one": {"N": "1"}, ":max": {"N": str(max_per_day)}},
            ReturnValues="NONE",
        )
        if same_day is not None:
            return True
        if max_per_day < 1:
            return False
        new_day = self._update(
            appid,
            UpdateExpression=(
                "SET force_day = :day, force_count = :one, last_force_at = :now, "
                "expires_at = if_not_exists(expires_at, :ttl)"
            ),
            ConditionExpression=f"(attribute_not_exists(force_day) OR force_day <> :day) AND {spaced}",
            ExpressionAttributeValues={**values, ":one": {"N": "1"}},
            ReturnValues="NONE",
        )
        return new_day is not None
