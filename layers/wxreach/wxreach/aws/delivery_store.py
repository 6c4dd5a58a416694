"""Parked delivery callbacks and publish records in the ledger table (docs/data-model.md).

Parked callbacks are spread over PARK_SHARDS partitions per account: another tool sending from
the same account makes every one of its callbacks unmatched here, at its own sending rate.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from wxreach.aws import keys
from wxreach.aws.attributes import error_is, from_unix_seconds, unix_seconds
from wxreach.aws.clients import client
from wxreach.reach.delivery import ParkedCallback, ParkReason

PARK_SHARDS = 8
PARKED_RETENTION_SECONDS = 30 * 24 * 3600
PUBLISH_RETENTION_SECONDS = 400 * 24 * 3600


def _shard(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:2], "big") % PARK_SHARDS


class DynamoCallbackParking:
    """`unmatched` callbacks wait in PARKED partitions, the only ones the reconciler reads; the
    rest (unparsed, unknown kinds, orphans) are kept apart, so neither slows the other."""

    def __init__(self, table: str) -> None:
        self._table = table

    def _key(self, callback: ParkedCallback, *, kept: bool | None = None) -> dict[str, Any]:
        shard = _shard(callback.key)
        if kept is None:
            kept = callback.reason is not ParkReason.UNMATCHED
        pk = keys.kept_pk(callback.appid, shard) if kept else keys.parked_pk(callback.appid, shard)
        return {"pk": {"S": pk}, "sk": {"S": f"CB#{callback.key}"}}

    def _item(self, callback: ParkedCallback, **extra: Any) -> dict[str, Any]:
        return {
            **self._key(callback, kept=extra.pop("kept", None)),
            "appid": {"S": callback.appid},
            "key": {"S": callback.key},
            "reason": {"S": callback.reason},
            "parked_at": unix_seconds(callback.parked_at),
            "message": {"S": json.dumps(callback.message, ensure_ascii=False, default=str)},
            "expires_at": {"N": str(int(callback.parked_at.timestamp()) + PARKED_RETENTION_SECONDS)},
            **extra,
        }

    def park(self, callback: ParkedCallback) -> bool:
        """Keeps the callback; False when it was kept already (a redelivery is the same callback)."""
        try:
            client("dynamodb").put_item(
                TableName=self._table,
                Item=self._item(callback),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if error_is(exc):
                return False
            raise
        return True

    def parked(self, appid: str, *, limit: int = 200) -> Iterator[ParkedCallback]:
        """Callbacks waiting for their record, oldest first per shard."""
        yield from self._list(keys.parked_pk, appid, limit)

    def kept(self, appid: str, *, limit: int = 200) -> Iterator[ParkedCallback]:
        """Callbacks kept for people: unparsed, unknown kinds, orphans."""
        yield from self._list(keys.kept_pk, appid, limit)

    def _list(self, pk: Any, appid: str, limit: int) -> Iterator[ParkedCallback]:
        ddb = client("dynamodb")
        seen = 0
        for shard in range(PARK_SHARDS):
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": pk(appid, shard)}},
            }
            while True:
                resp = ddb.query(**kwargs)
                for item in resp.get("Items", []):
                    yield _from_item(item)
                    seen += 1
                    if seen >= limit:
                        return
                if "LastEvaluatedKey" not in resp:
                    break
                kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def unpark(self, callback: ParkedCallback) -> None:
        client("dynamodb").delete_item(TableName=self._table, Key=self._key(callback))

    def mark_orphan(self, callback: ParkedCallback) -> bool:
        """Moves a callback nobody claimed to the kept partitions (flagged `orphan`), once."""
        try:
            client("dynamodb").transact_write_items(
                TransactItems=[
                    {
                        "Delete": {
                            "TableName": self._table,
                            "Key": self._key(callback),
                            "ConditionExpression": "attribute_exists(pk)",
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": self._item(callback, kept=True, orphan={"BOOL": True}),
                        }
                    },
                ]
            )
        except ClientError as exc:
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if error_is(exc, "TransactionCanceledException") and "ConditionalCheckFailed" in reasons:
                return False
            raise
        return True

    def save_publish(self, appid: str, publish_id: str, record: dict[str, Any]) -> None:
        finished = datetime.fromisoformat(str(record["finished_at"]))
        client("dynamodb").put_item(
            TableName=self._table,
            Item={
                "pk": {"S": keys.publish_pk(appid, publish_id)},
                "sk": {"S": keys.PUBLISH_SK},
                "appid": {"S": appid},
                "record": {"S": json.dumps(record, ensure_ascii=False)},
                "expires_at": {"N": str(int(finished.timestamp()) + PUBLISH_RETENTION_SECONDS)},
            },
        )

    def publish_record(self, appid: str, publish_id: str) -> dict[str, Any] | None:
        item = (
            client("dynamodb")
            .get_item(
                TableName=self._table,
                Key={"pk": {"S": keys.publish_pk(appid, publish_id)}, "sk": {"S": keys.PUBLISH_SK}},
                ConsistentRead=True,
            )
            .get("Item")
        )
        return json.loads(item["record"]["S"]) if item else None


def _from_item(item: dict[str, Any]) -> ParkedCallback:
    parked_at = from_unix_seconds(item.get("parked_at"))
    assert parked_at is not None
    return ParkedCallback(
        appid=item["appid"]["S"],
        key=item["key"]["S"],
        reason=ParkReason(item["reason"]["S"]),
        parked_at=parked_at,
        message=json.loads(item["message"]["S"]),
        orphan=item.get("orphan", {}).get("BOOL", False),
    )
