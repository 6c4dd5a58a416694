"""Follower registry and subscription credits in the quota table.

WeChat may deliver callbacks late or out of order, so every write is conditional on the event
time: an older event never overwrites a newer state. Each one-time credit is granted in a
transaction with a marker item named after the accepting event, so no redelivery (even one
that slipped past dedupe) can grant it twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from wxreach.aws import keys
from wxreach.aws.attributes import error_is, from_unix_seconds, unix_seconds
from wxreach.aws.clients import client
from wxreach.errors import WxReachError
from wxreach.reach.followers import (
    Follower,
    SubscriptionGrant,
    SubscriptionKind,
    SubscriptionStatus,
    WriteOutcome,
)

# Grant markers only need to outlive WeChat's retries and our dedupe window, with margin.
GRANT_EVENT_RETENTION_SECONDS = 7 * 24 * 3600
_BATCH_GET_ATTEMPTS = 5
# Every profile write keeps the listing index (followers of an account) in step.
_IDENTITY_SETS = ("gsi1pk = :gpk", "gsi1sk = :gsk", "appid = :appid", "openid = :openid")


class FollowerStore:
    def __init__(self, table: str) -> None:
        self._table = table

    def _update(self, key: dict[str, Any], **kwargs: Any) -> bool:
        """Conditional UpdateItem; False when the condition says the write is stale or repeated."""
        try:
            client("dynamodb").update_item(TableName=self._table, Key=key, **kwargs)
        except ClientError as exc:
            if error_is(exc):
                return False
            raise
        return True

    def _profile_key(self, appid: str, openid: str) -> dict[str, Any]:
        return {"pk": {"S": keys.follower_pk(appid, openid)}, "sk": {"S": keys.FOLLOWER_SK}}

    def _grant_key(self, appid: str, openid: str, template_id: str) -> dict[str, Any]:
        return {"pk": {"S": keys.follower_pk(appid, openid)}, "sk": {"S": keys.subscription_sk(template_id)}}

    def set_following(
        self, appid: str, openid: str, *, following: bool, at: datetime, scene: str | None = None
    ) -> bool:
        """True unless a newer follow change is recorded (a replay of the same event applies again)."""
        values: dict[str, Any] = {
            ":t": unix_seconds(at),
            ":f": {"BOOL": following},
            **self._identity(appid, openid),
        }
        sets = ["follow_changed_at = :t", "following = :f", *_IDENTITY_SETS]
        removes: list[str] = []
        if following:
            sets.append("followed_at = :t")
            if scene is not None:
                values[":scene"] = {"S": scene}
                sets.append("scene = :scene")
            else:
                removes.append("scene")  # a plain re-follow must not keep an old campaign's scene
        else:
            sets.append("unfollowed_at = :t")
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        return self._update(
            self._profile_key(appid, openid),
            UpdateExpression=expression,
            ConditionExpression="attribute_not_exists(follow_changed_at) OR follow_changed_at <= :t",
            ExpressionAttributeValues=values,
        )

    def touch_interaction(self, appid: str, openid: str, *, at: datetime, message: bool = False) -> None:
        """Moves last_interaction_at (any user action) and, for messages the user sent,
        last_message_at (start of the 48 h customer-service window) forward, never back."""
        for attribute in ("last_interaction_at", "last_message_at") if message else ("last_interaction_at",):
            self._update(
                self._profile_key(appid, openid),
                UpdateExpression=f"SET {attribute} = :t, " + ", ".join(_IDENTITY_SETS),
                ConditionExpression=f"attribute_not_exists({attribute}) OR {attribute} < :t",
                ExpressionAttributeValues={":t": unix_seconds(at), **self._identity(appid, openid)},
            )

    def observe_following(self, appid: str, openid: str) -> None:
        """A SCAN or a message proves the user follows; recorded only while no follow or unfollow
        event was ever seen, so a real one (even an older one arriving late) still decides."""
        self._update(
            self._profile_key(appid, openid),
            UpdateExpression="SET following = :t, " + ", ".join(_IDENTITY_SETS),
            ConditionExpression="attribute_not_exists(follow_changed_at)",
            ExpressionAttributeValues={":t": {"BOOL": True}, **self._identity(appid, openid)},
        )

    def grant_one_time(
        self, appid: str, openid: str, grants: Mapping[str, str], *, at: datetime
    ) -> dict[str, WriteOutcome]:
        """+1 one-time credit per template (`grants`: template id → accepting event's key),
        exactly once per accepting event and never after a later revoke.

        One transaction holds every grant, so a popup costs the same number of calls whatever
        its size; an item whose condition fails (replayed, or revoked since) is taken out and the
        rest retried, at most once per item.
        """
        pk = keys.follower_pk(appid, openid)
        expires_at = {"N": str(int(time.time()) + GRANT_EVENT_RETENTION_SECONDS)}
        outcomes: dict[str, WriteOutcome] = {}
        pending = list(grants.items())
        while pending:
            items: list[dict[str, Any]] = []
            for template_id, event_key in pending:
                items.append(
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": {
                                "pk": {"S": pk},
                                "sk": {"S": keys.grant_event_sk(event_key)},
                                "expires_at": expires_at,
                            },
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    }
                )
                items.append(
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": self._grant_key(appid, openid, template_id),
                            "UpdateExpression": "SET template_id = :tid ADD one_time_credits :one",
                            "ConditionExpression": "attribute_not_exists(revoked_at) OR revoked_at < :t",
                            "ExpressionAttributeValues": {
                                ":tid": {"S": template_id},
                                ":one": {"N": "1"},
                                ":t": unix_seconds(at),
                            },
                        }
                    }
                )
            try:
                client("dynamodb").transact_write_items(TransactItems=items)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                failed: dict[str, WriteOutcome] = {}
                for index, (template_id, _) in enumerate(pending):
                    marker, grant = reasons[2 * index : 2 * index + 2] or (None, None)
                    if marker == "ConditionalCheckFailed":
                        failed[template_id] = WriteOutcome.REPLAYED
                    elif grant == "ConditionalCheckFailed":
                        failed[template_id] = WriteOutcome.STALE
                if not failed:
                    raise
                outcomes.update(failed)
                pending = [(tid, key) for tid, key in pending if tid not in failed]
                continue
            outcomes.update(dict.fromkeys((tid for tid, _ in pending), WriteOutcome.APPLIED))
            break
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
        """Records the user's latest decision; an older decision never overwrites a newer one.

        A revoke (service-notification settings) also withdraws every one-time credit, as WeChat
        does; a popup reject leaves earlier one-time accepts usable.
        """
        sets = ["#status = :status", "updated_at = :t", "template_id = :tid"]
        values: dict[str, Any] = {
            ":status": {"S": status},
            ":t": unix_seconds(at),
            ":tid": {"S": template_id},
        }
        if status is not SubscriptionStatus.ACCEPTED:
            long_term = False
        if long_term is not None:
            sets.append("long_term = :lt")
            values[":lt"] = {"BOOL": long_term}
        if status is SubscriptionStatus.REVOKED:
            sets += ["one_time_credits = :zero", "revoked_at = :t"]
            values[":zero"] = {"N": "0"}
        applied = self._update(
            self._grant_key(appid, openid, template_id),
            UpdateExpression="SET " + ", ".join(sets),
            ConditionExpression="attribute_not_exists(updated_at) OR updated_at <= :t",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=values,
        )
        return WriteOutcome.APPLIED if applied else WriteOutcome.STALE

    @staticmethod
    def _identity(appid: str, openid: str) -> dict[str, Any]:
        return {
            ":gpk": {"S": keys.followers_index_pk(appid)},
            ":gsk": {"S": openid},
            ":appid": {"S": appid},
            ":openid": {"S": openid},
        }

    def template_kinds(self, appid: str, template_ids: Iterable[str]) -> dict[str, SubscriptionKind]:
        """Kind of each subscription template as last synced from WeChat (unknown until synced);
        one BatchGetItem for up to 100 templates."""
        wanted = list(dict.fromkeys(template_ids))
        kinds = dict.fromkeys(wanted, SubscriptionKind.UNKNOWN)
        account_pk = keys.account_pk(appid)
        for start in range(0, len(wanted), 100):
            request: dict[str, Any] = {
                self._table: {
                    "Keys": [
                        {"pk": {"S": account_pk}, "sk": {"S": keys.subscription_template_sk(tid)}}
                        for tid in wanted[start : start + 100]
                    ],
                    "ProjectionExpression": "sk, kind",
                }
            }
            for attempt in range(_BATCH_GET_ATTEMPTS):
                if attempt:
                    time.sleep(0.05 * 2**attempt)
                resp = client("dynamodb").batch_get_item(RequestItems=request)
                for item in resp.get("Responses", {}).get(self._table, []):
                    template_id = item["sk"]["S"].removeprefix(keys.subscription_template_sk(""))
                    try:
                        kinds[template_id] = SubscriptionKind(item.get("kind", {}).get("S", ""))
                    except ValueError:
                        kinds[template_id] = SubscriptionKind.UNKNOWN
                request = resp.get("UnprocessedKeys") or {}
                if not request:
                    break
            else:
                raise WxReachError("DynamoDB left keys unprocessed", reason="store_busy", status=503)
        return kinds

    def get(self, appid: str, openid: str) -> Follower | None:
        # The partition also holds markers and guards that grow with history: read only the
        # profile and the grants (paged), never the whole partition.
        ddb = client("dynamodb")
        pk = keys.follower_pk(appid, openid)
        profile = ddb.get_item(
            TableName=self._table, Key={"pk": {"S": pk}, "sk": {"S": keys.FOLLOWER_SK}}, ConsistentRead=True
        ).get("Item")
        items: list[dict[str, Any]] = [profile] if profile else []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :sub)",
            "ExpressionAttributeValues": {":pk": {"S": pk}, ":sub": {"S": keys.subscription_sk("")}},
            "ConsistentRead": True,
        }
        while True:
            resp = ddb.query(**kwargs)
            items += resp.get("Items", [])
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        if not items:
            return None
        follower = Follower(appid=appid, openid=openid)
        grants: list[SubscriptionGrant] = []
        for item in items:
            sk = item["sk"]["S"]
            if sk == keys.FOLLOWER_SK:
                follower = follower.model_copy(
                    update={
                        "following": item.get("following", {}).get("BOOL"),
                        "followed_at": from_unix_seconds(item.get("followed_at")),
                        "unfollowed_at": from_unix_seconds(item.get("unfollowed_at")),
                        "scene": item.get("scene", {}).get("S"),
                        "last_interaction_at": from_unix_seconds(item.get("last_interaction_at")),
                        "last_message_at": from_unix_seconds(item.get("last_message_at")),
                    }
                )
            elif sk.startswith("SUB#"):
                grants.append(
                    SubscriptionGrant(
                        template_id=item["template_id"]["S"],
                        status=item.get("status", {}).get("S", "unknown"),
                        one_time_credits=int(item.get("one_time_credits", {}).get("N", "0")),
                        long_term=item.get("long_term", {}).get("BOOL", False),
                        updated_at=from_unix_seconds(item.get("updated_at")),
                    )
                )
        return follower.model_copy(update={"subscriptions": grants})
