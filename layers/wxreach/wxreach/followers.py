"""Follower registry and subscription credits in the quota table.

WeChat may deliver callbacks late or out of order, so every write is conditional on the event
time: an older event never overwrites a newer state. Credit grants also carry the callback's
dedupe key so a redelivered event that slipped past dedupe cannot grant twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel

from wxreach import keys
from wxreach.aws import client


class SubscriptionKind(StrEnum):
    ONE_TIME = "one_time"
    LONG_TERM = "long_term"
    UNKNOWN = "unknown"


class SubscriptionStatus(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    REVOKED = "revoked"


class SubscriptionGrant(BaseModel):
    template_id: str
    status: SubscriptionStatus | str
    one_time_credits: int = 0
    long_term: bool = False
    updated_at: datetime | None = None


class Follower(BaseModel):
    appid: str
    openid: str
    following: bool = False
    followed_at: datetime | None = None
    unfollowed_at: datetime | None = None
    scene: str | None = None
    last_interaction_at: datetime | None = None
    subscriptions: list[SubscriptionGrant] = []


def _ts(dt: datetime) -> dict[str, str]:
    return {"N": str(int(dt.timestamp()))}


def _dt(attr: dict[str, str] | None) -> datetime | None:
    return datetime.fromtimestamp(int(attr["N"]), UTC) if attr else None


def _stale(exc: ClientError) -> bool:
    return exc.response["Error"]["Code"] == "ConditionalCheckFailedException"


class FollowerStore:
    def __init__(self, table: str) -> None:
        self._table = table

    def _update(self, key: dict[str, Any], **kwargs: Any) -> bool:
        """Conditional UpdateItem; False when the condition says the write is stale or repeated."""
        try:
            client("dynamodb").update_item(TableName=self._table, Key=key, **kwargs)
        except ClientError as exc:
            if _stale(exc):
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
        names = {"#changed": "follow_changed_at"}
        values: dict[str, Any] = {
            ":t": _ts(at),
            ":f": {"BOOL": following},
            ":gpk": {"S": keys.followers_index_pk(appid)},
            ":gsk": {"S": openid},
            ":appid": {"S": appid},
            ":openid": {"S": openid},
        }
        sets = [
            "#changed = :t",
            "following = :f",
            "gsi1pk = :gpk",
            "gsi1sk = :gsk",
            "appid = :appid",
            "openid = :openid",
        ]
        if following:
            sets.append("followed_at = :t")
            if scene is not None:
                values[":scene"] = {"S": scene}
                sets.append("scene = :scene")
        else:
            sets.append("unfollowed_at = :t")
        return self._update(
            self._profile_key(appid, openid),
            UpdateExpression="SET " + ", ".join(sets),
            ConditionExpression="attribute_not_exists(#changed) OR #changed <= :t",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def touch_interaction(self, appid: str, openid: str, *, at: datetime) -> bool:
        """Moves last_interaction_at forward (the 48 h customer-service window starts there)."""
        return self._update(
            self._profile_key(appid, openid),
            UpdateExpression="SET last_interaction_at = :t, appid = :appid, openid = :openid",
            ConditionExpression="attribute_not_exists(last_interaction_at) OR last_interaction_at < :t",
            ExpressionAttributeValues={":t": _ts(at), ":appid": {"S": appid}, ":openid": {"S": openid}},
        )

    def grant_one_time(
        self, appid: str, openid: str, template_id: str, *, at: datetime, event_key: str
    ) -> bool:
        return self._update(
            self._grant_key(appid, openid, template_id),
            UpdateExpression=(
                "SET #status = :accepted, updated_at = :t, last_event = :key, template_id = :tid "
                "ADD one_time_credits :one"
            ),
            ConditionExpression="attribute_not_exists(last_event) OR last_event <> :key",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":accepted": {"S": SubscriptionStatus.ACCEPTED},
                ":t": _ts(at),
                ":key": {"S": event_key},
                ":tid": {"S": template_id},
                ":one": {"N": "1"},
            },
        )

    def set_status(
        self,
        appid: str,
        openid: str,
        template_id: str,
        *,
        status: SubscriptionStatus,
        at: datetime,
        long_term: bool | None = None,
    ) -> bool:
        sets = ["#status = :status", "updated_at = :t", "template_id = :tid"]
        values: dict[str, Any] = {
            ":status": {"S": status},
            ":t": _ts(at),
            ":tid": {"S": template_id},
        }
        if long_term is not None:
            sets.append("long_term = :lt")
            values[":lt"] = {"BOOL": long_term}
        return self._update(
            self._grant_key(appid, openid, template_id),
            UpdateExpression="SET " + ", ".join(sets),
            ConditionExpression="attribute_not_exists(updated_at) OR updated_at <= :t",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=values,
        )

    def template_kind(self, appid: str, template_id: str) -> SubscriptionKind:
        """Kind of a subscription template as last synced from WeChat (unknown until synced)."""
        resp = client("dynamodb").get_item(
            TableName=self._table,
            Key={
                "pk": {"S": keys.account_pk(appid)},
                "sk": {"S": keys.subscription_template_sk(template_id)},
            },
            ProjectionExpression="kind",
        )
        kind = resp.get("Item", {}).get("kind", {}).get("S")
        try:
            return SubscriptionKind(kind) if kind else SubscriptionKind.UNKNOWN
        except ValueError:
            return SubscriptionKind.UNKNOWN

    def get(self, appid: str, openid: str) -> Follower | None:
        resp = client("dynamodb").query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": keys.follower_pk(appid, openid)}},
            ConsistentRead=True,
        )
        items = resp.get("Items", [])
        if not items:
            return None
        follower = Follower(appid=appid, openid=openid)
        grants: list[SubscriptionGrant] = []
        for item in items:
            sk = item["sk"]["S"]
            if sk == keys.FOLLOWER_SK:
                follower = follower.model_copy(
                    update={
                        "following": item.get("following", {}).get("BOOL", False),
                        "followed_at": _dt(item.get("followed_at")),
                        "unfollowed_at": _dt(item.get("unfollowed_at")),
                        "scene": item.get("scene", {}).get("S"),
                        "last_interaction_at": _dt(item.get("last_interaction_at")),
                    }
                )
            elif sk.startswith("SUB#"):
                grants.append(
                    SubscriptionGrant(
                        template_id=item["template_id"]["S"],
                        status=item.get("status", {}).get("S", "unknown"),
                        one_time_credits=int(item.get("one_time_credits", {}).get("N", "0")),
                        long_term=item.get("long_term", {}).get("BOOL", False),
                        updated_at=_dt(item.get("updated_at")),
                    )
                )
        return follower.model_copy(update={"subscriptions": grants})
