"""Follower registry and subscription credits in the quota table.

WeChat may deliver callbacks late or out of order, so every write is conditional on the event
time: an older event never overwrites a newer state. Each one-time credit is granted in a
transaction with a marker item named after the accepting event, so no redelivery (even one
that slipped past dedupe) can grant it twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from wxreach.aws import keys
from wxreach.aws.attributes import error_is, from_unix_seconds, unix_seconds
from wxreach.aws.clients import client
from wxreach.errors import WxReachError
from wxreach.reach.followers import (
    CreditRow,
    Follower,
    FollowerRow,
    SubscriptionGrant,
    SubscriptionKind,
    SubscriptionStatus,
    WriteOutcome,
)

_T = TypeVar("_T")
_R = TypeVar("_R")

# Grant markers only need to outlive WeChat's retries and our dedupe window, with margin.
GRANT_EVENT_RETENTION_SECONDS = 7 * 24 * 3600
_BATCH_GET_ATTEMPTS = 5
# Every profile write keeps the listing index (followers of an account, sharded) in step.
_IDENTITY_SETS = ("gsi1pk = :gpk", "gsi1sk = :gsk", "appid = :appid", "openid = :openid")
# Grant writes that can leave a usable grant put it in the template's credit index; kept once set.
_CREDIT_INDEX_SETS = ("gsi1pk = if_not_exists(gsi1pk, :cpk)", "gsi1sk = if_not_exists(gsi1sk, :csk)")
_BATCH_GET_KEYS = 100


class FollowerStore:
    # Read by the audience reader: one listing per shard, in parallel or one after another.
    shard_count = keys.FOLLOWER_INDEX_SHARDS

    def __init__(self, table: str, *, workers: int = 16) -> None:
        self._table = table
        self._workers = workers

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
                            "UpdateExpression": "SET template_id = :tid, "
                            + ", ".join(_CREDIT_INDEX_SETS)
                            + " ADD one_time_credits :one",
                            "ConditionExpression": "attribute_not_exists(revoked_at) OR revoked_at < :t",
                            "ExpressionAttributeValues": {
                                ":tid": {"S": template_id},
                                ":one": {"N": "1"},
                                ":t": unix_seconds(at),
                                **self._credit_index(appid, openid, template_id),
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
        if status is SubscriptionStatus.ACCEPTED:
            sets += _CREDIT_INDEX_SETS
            values.update(self._credit_index(appid, openid, template_id))
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
            ":gpk": {"S": keys.followers_index_pk(appid, keys.follower_shard(openid))},
            ":gsk": {"S": openid},
            ":appid": {"S": appid},
            ":openid": {"S": openid},
        }

    @staticmethod
    def _credit_index(appid: str, openid: str, template_id: str) -> dict[str, Any]:
        return {
            ":cpk": {"S": keys.credits_index_pk(appid, template_id, keys.follower_shard(openid))},
            ":csk": {"S": openid},
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

    # -- follower listing (audiences): one eventually consistent index Query page per call ---------
    def list_shard(
        self, appid: str, shard: int, *, start_after: str | None, limit: int
    ) -> tuple[list[FollowerRow], str | None]:
        items, after = self._index_page(
            keys.followers_index_pk(appid, shard),
            keys.FOLLOWER_SK,
            appid,
            start_after=start_after,
            limit=limit,
            projection="gsi1sk, following, followed_at, unfollowed_at, #tags",
            names={"#tags": "tags"},
        )
        return [_follower_row(item) for item in items], after

    def list_credit_holders(
        self, appid: str, template_id: str, shard: int, *, start_after: str | None, limit: int
    ) -> tuple[list[CreditRow], str | None]:
        items, after = self._index_page(
            keys.credits_index_pk(appid, template_id, shard),
            keys.subscription_sk(template_id),
            appid,
            start_after=start_after,
            limit=limit,
            projection="gsi1sk, one_time_credits, long_term",
        )
        rows = [
            CreditRow(
                openid=item["gsi1sk"]["S"],
                one_time_credits=int(item.get("one_time_credits", {}).get("N", "0")),
                long_term=bool(item.get("long_term", {}).get("BOOL", False)),
            )
            for item in items
        ]
        return rows, after

    def list_tagged(
        self, appid: str, shard: int, *, start_after: str | None, limit: int
    ) -> tuple[list[FollowerRow], str | None]:
        """Like list_shard, only rows carrying a tag (the filter saves transfer, not reads)."""
        items, after = self._index_page(
            keys.followers_index_pk(appid, shard),
            keys.FOLLOWER_SK,
            appid,
            start_after=start_after,
            limit=limit,
            projection="gsi1sk, following, #tags",
            names={"#tags": "tags"},
            filter_expression="attribute_exists(#tags)",
        )
        return [_follower_row(item) for item in items], after

    def _index_page(
        self,
        index_pk: str,
        item_sk: str,
        appid: str,
        *,
        start_after: str | None,
        limit: int,
        projection: str,
        names: dict[str, str] | None = None,
        filter_expression: str | None = None,
        values: dict[str, Any] | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "gsi1",
            "KeyConditionExpression": "gsi1pk = :ipk",
            "ExpressionAttributeValues": {":ipk": {"S": index_pk}, **(values or {})},
            "ProjectionExpression": projection,
            "Limit": limit,
        }
        if names:
            kwargs["ExpressionAttributeNames"] = names
        if filter_expression:
            kwargs["FilterExpression"] = filter_expression
        if start_after is not None:
            # A GSI start key also names the table key; both follow from the openid.
            kwargs["ExclusiveStartKey"] = {
                "gsi1pk": {"S": index_pk},
                "gsi1sk": {"S": start_after},
                "pk": {"S": keys.follower_pk(appid, start_after)},
                "sk": {"S": item_sk},
            }
        resp = client("dynamodb").query(**kwargs)
        last = resp.get("LastEvaluatedKey")
        return resp.get("Items", []), (last["gsi1sk"]["S"] if last else None)

    # -- follower sync (reach.follower_sync) ----------------------------------------------------
    def record_synced(self, appid: str, openids: Sequence[str], *, fetched_at: datetime) -> int:
        """Marks a page of WeChat's follower list as following, idempotently; returns how many
        profiles a newer follow or unfollow event kept as they were.

        A follow change recorded at or after the page's fetch second wins (WeChat's list may
        predate it); nothing here counts as a follow event. Absent profiles (the usual case on a
        first sync) are created by a PutItem conditional on absence; existing ones, or one the
        webhook created meanwhile, get a conditional UpdateItem that keeps every other attribute.
        """
        existing = self._existing_profiles(appid, openids)
        fetched = unix_seconds(fetched_at)

        def write(openid: str) -> bool:
            if openid not in existing:
                try:
                    client("dynamodb").put_item(
                        TableName=self._table,
                        Item={
                            **self._profile_key(appid, openid),
                            "following": {"BOOL": True},
                            "synced_at": fetched,
                            "gsi1pk": {"S": keys.followers_index_pk(appid, keys.follower_shard(openid))},
                            "gsi1sk": {"S": openid},
                            "appid": {"S": appid},
                            "openid": {"S": openid},
                        },
                        ConditionExpression="attribute_not_exists(pk)",
                    )
                    return True
                except ClientError as exc:
                    if not error_is(exc):
                        raise
            return self._update(
                self._profile_key(appid, openid),
                UpdateExpression="SET following = :t, synced_at = :s, " + ", ".join(_IDENTITY_SETS),
                ConditionExpression="attribute_not_exists(follow_changed_at) OR follow_changed_at < :s",
                ExpressionAttributeValues={
                    ":t": {"BOOL": True},
                    ":s": fetched,
                    **self._identity(appid, openid),
                },
            )

        applied = self._parallel(write, list(dict.fromkeys(openids)))
        return sum(1 for done in applied if not done)

    def _existing_profiles(self, appid: str, openids: Sequence[str]) -> set[str]:
        """Which of `openids` have a profile (BatchGetItem, 100 keys a call, key only)."""
        wanted = list(dict.fromkeys(openids))
        chunks = [wanted[i : i + _BATCH_GET_KEYS] for i in range(0, len(wanted), _BATCH_GET_KEYS)]
        prefix = keys.follower_pk(appid, "")

        def present(chunk: list[str]) -> set[str]:
            request: dict[str, Any] = {
                self._table: {
                    "Keys": [self._profile_key(appid, openid) for openid in chunk],
                    "ProjectionExpression": "pk",
                }
            }
            found: set[str] = set()
            for attempt in range(_BATCH_GET_ATTEMPTS):
                if attempt:
                    time.sleep(0.05 * 2**attempt)
                resp = client("dynamodb").batch_get_item(RequestItems=request)
                for item in resp.get("Responses", {}).get(self._table, []):
                    found.add(item["pk"]["S"].removeprefix(prefix))
                request = resp.get("UnprocessedKeys") or {}
                if not request:
                    return found
            raise WxReachError("DynamoDB left keys unprocessed", reason="store_busy", status=503)

        return set().union(*self._parallel(present, chunks)) if chunks else set()

    def mark_unseen(
        self,
        appid: str,
        shard: int,
        *,
        start_after: str | None,
        limit: int,
        synced_before: datetime,
        evidence_before: datetime,
    ) -> tuple[int, str | None]:
        """After a complete sync: profiles on one index page that still count as following but
        that the sync did not see (`synced_at` before it started), and that show no follow, scan
        or message since `evidence_before`, become not following. No follow event is invented:
        `follow_changed_at` stays as it was, so any real event still decides. Returns how many
        changed and the start_after of the next page."""
        candidate = (
            "(attribute_not_exists(following) OR following = :t)"
            " AND (attribute_not_exists(synced_at) OR synced_at < :since)"
        )
        items, after = self._index_page(
            keys.followers_index_pk(appid, shard),
            keys.FOLLOWER_SK,
            appid,
            start_after=start_after,
            limit=limit,
            projection="gsi1sk",
            filter_expression=candidate,
            values={":t": {"BOOL": True}, ":since": unix_seconds(synced_before)},
        )
        evidence = unix_seconds(evidence_before)

        def unmark(openid: str) -> bool:
            return self._update(
                self._profile_key(appid, openid),
                UpdateExpression="SET following = :f, unseen_by_sync_at = :since",
                ConditionExpression=candidate
                + " AND (attribute_not_exists(follow_changed_at) OR follow_changed_at < :ev)"
                " AND (attribute_not_exists(last_interaction_at) OR last_interaction_at < :ev)",
                ExpressionAttributeValues={
                    ":t": {"BOOL": True},
                    ":f": {"BOOL": False},
                    ":since": unix_seconds(synced_before),
                    ":ev": evidence,
                },
            )

        changed = self._parallel(unmark, [item["gsi1sk"]["S"] for item in items])
        return sum(changed), after

    # -- tag membership ------------------------------------------------------------------------
    def add_tag(self, appid: str, tag_id: int, openids: Sequence[str]) -> None:
        """WeChat lists only followers in a tag: a member the registry has not met yet gets a
        profile (follow state unknown until a sync or event)."""
        self._parallel(
            lambda openid: self._update(
                self._profile_key(appid, openid),
                UpdateExpression="SET " + ", ".join(_IDENTITY_SETS) + " ADD #tags :tag",
                ExpressionAttributeNames={"#tags": "tags"},
                ExpressionAttributeValues={":tag": {"NS": [str(tag_id)]}, **self._identity(appid, openid)},
            ),
            list(dict.fromkeys(openids)),
        )

    def remove_tag(self, appid: str, tag_id: int, openids: Sequence[str]) -> None:
        self._parallel(
            lambda openid: self._update(
                self._profile_key(appid, openid),
                UpdateExpression="DELETE #tags :tag",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#tags": "tags"},
                ExpressionAttributeValues={":tag": {"NS": [str(tag_id)]}},
            ),
            list(dict.fromkeys(openids)),
        )

    def _parallel(self, work: Callable[[_T], _R], items: list[_T]) -> list[_R]:
        if len(items) <= 1 or self._workers <= 1:
            return [work(item) for item in items]
        # Imported here: the webhook loads this module at cold start and never needs a pool.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(self._workers, len(items))) as pool:
            return list(pool.map(work, items))


def _follower_row(item: dict[str, Any]) -> FollowerRow:
    return FollowerRow(
        openid=item["gsi1sk"]["S"],
        following=item["following"]["BOOL"] if "following" in item else None,
        followed_at=from_unix_seconds(item.get("followed_at")),
        unfollowed_at=from_unix_seconds(item.get("unfollowed_at")),
        tags=frozenset(int(tag) for tag in item.get("tags", {}).get("NS", [])),
    )
