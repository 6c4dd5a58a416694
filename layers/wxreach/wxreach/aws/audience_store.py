"""Audience reads in bulk (BatchGetItem, 100 keys a call) and the daily counters of broadcasts.

The splitter and the estimate read follower state for thousands of openids at once; one
GetItem per openid would cost a request per recipient.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from wxreach.aws import keys
from wxreach.aws.attributes import error_is
from wxreach.aws.clients import client
from wxreach.aws.send_guards import COUNTER_RETENTION_SECONDS, DynamoSendGuards
from wxreach.reach.audiences import Candidate

BATCH_GET_KEYS = 100
MAX_UNPROCESSED_ROUNDS = 8


class DynamoAudienceLookup:
    def __init__(self, table: str) -> None:
        self._table = table

    def _batch_get(
        self, keys_: list[dict[str, Any]], projection: str, names: dict[str, str]
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for start in range(0, len(keys_), BATCH_GET_KEYS):
            request: dict[str, Any] = {
                self._table: {
                    "Keys": keys_[start : start + BATCH_GET_KEYS],
                    "ProjectionExpression": projection,
                    "ExpressionAttributeNames": names,
                }
            }
            for attempt in range(MAX_UNPROCESSED_ROUNDS):
                resp = client("dynamodb").batch_get_item(RequestItems=request)
                items.extend(resp.get("Responses", {}).get(self._table, []))
                request = resp.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(min(1.0, 0.05 * 2**attempt))
            else:
                raise RuntimeError("DynamoDB kept keys unprocessed; try again later")
        return items

    def lookup(self, appid: str, openids: list[str], *, template_id: str | None) -> dict[str, Candidate]:
        """Known followers among `openids` (profile; with the grant for `template_id`)."""
        if not openids:
            return {}
        wanted = [
            {"pk": {"S": keys.follower_pk(appid, o)}, "sk": {"S": keys.FOLLOWER_SK}}
            for o in dict.fromkeys(openids)
        ]
        if template_id is not None:
            wanted += [
                {"pk": {"S": keys.follower_pk(appid, o)}, "sk": {"S": keys.subscription_sk(template_id)}}
                for o in dict.fromkeys(openids)
            ]
        items = self._batch_get(
            wanted,
            "pk, sk, openid, following, #tags, one_time_credits, long_term",
            {"#tags": "tags"},
        )
        profiles: dict[str, dict[str, Any]] = {}
        grants: dict[str, dict[str, Any]] = {}
        prefix = keys.follower_pk(appid, "")
        for item in items:
            openid = item["pk"]["S"].removeprefix(prefix)
            (profiles if item["sk"]["S"] == keys.FOLLOWER_SK else grants)[openid] = item
        found: dict[str, Candidate] = {}
        for openid in set(profiles) | set(grants):
            profile, grant = profiles.get(openid, {}), grants.get(openid, {})
            found[openid] = Candidate(
                openid=openid,
                following=profile["following"]["BOOL"] if "following" in profile else None,
                tags=frozenset(int(t) for t in profile.get("tags", {}).get("NS", [])),
                credits=int(grant.get("one_time_credits", {}).get("N", "0")),
                long_term=bool(grant.get("long_term", {}).get("BOOL", False)),
            )
        return found

    def repeat_blocked(
        self, appid: str, keys_: list[tuple[str, str, str]], *, now: datetime, window_seconds: int
    ) -> set[str]:
        """openids for which this content would be the third inside the window (read-only)."""
        if not keys_:
            return set()
        wanted = [
            {"pk": {"S": keys.follower_pk(appid, o)}, "sk": {"S": keys.repeat_guard_sk(t, d)}}
            for o, t, d in keys_
        ]
        items = self._batch_get(wanted, "pk, older", {})
        prefix = keys.follower_pk(appid, "")
        return {
            item["pk"]["S"].removeprefix(prefix)
            for item in items
            if DynamoSendGuards.repeat_blocked_by(item, now=now, window_seconds=window_seconds)
        }


class DynamoBroadcastCounters:
    """Per-account daily counters shared with the senders (COUNTER#<name>#<China day>)."""

    def __init__(self, table: str) -> None:
        self._table = table

    def _key(self, appid: str, name: str, day: str) -> dict[str, Any]:
        return {"pk": {"S": keys.account_pk(appid)}, "sk": {"S": keys.counter_sk(name, day)}}

    def daily_used(self, appid: str, name: str, *, day: str) -> int:
        item = (
            client("dynamodb")
            .get_item(TableName=self._table, Key=self._key(appid, name, day), ConsistentRead=True)
            .get("Item", {})
        )
        return int(item.get("count", {}).get("N", "0"))

    def reserve_many(self, appid: str, name: str, *, day: str, count: int, cap: int) -> bool:
        """Take `count` of today's cap in one conditional write, or nothing."""
        if count <= 0:
            return True
        if count > cap:
            return False
        try:
            client("dynamodb").update_item(
                TableName=self._table,
                Key=self._key(appid, name, day),
                UpdateExpression="ADD #count :n SET expires_at = :exp",
                ConditionExpression="attribute_not_exists(#count) OR #count <= :room",
                ExpressionAttributeNames={"#count": "count"},
                ExpressionAttributeValues={
                    ":n": {"N": str(count)},
                    ":room": {"N": str(cap - count)},
                    ":exp": {"N": str(int(time.time()) + COUNTER_RETENTION_SECONDS)},
                },
            )
        except ClientError as exc:
            if error_is(exc):
                return False
            raise
        return True
