"""The follower-sync job record and the account's tags (quota table), and the sync queue.

Job: `ACCT#<appid>` / `SYNC#followers`, the whole job as JSON in `job` plus `job_id`, `version`
and `state` for the conditions. Tags: `ACCT#<appid>` / `TAG#<id>` with `name` and `count`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from botocore.exceptions import ClientError

from wxreach.aws import keys
from wxreach.aws.attributes import error_is
from wxreach.aws.clients import client
from wxreach.errors import WxReachError
from wxreach.reach.follower_sync import SyncJob
from wxreach.reach.followers import Tag

_BATCH_WRITE_ROUNDS = 8


class DynamoSyncJobs:
    def __init__(self, table: str) -> None:
        self._table = table

    def _key(self, appid: str) -> dict[str, Any]:
        return {"pk": {"S": keys.account_pk(appid)}, "sk": {"S": keys.FOLLOWER_SYNC_SK}}

    def get(self, appid: str) -> SyncJob | None:
        item = (
            client("dynamodb")
            .get_item(TableName=self._table, Key=self._key(appid), ConsistentRead=True)
            .get("Item")
        )
        if not item or "job" not in item:
            return None
        return SyncJob.model_validate_json(item["job"]["S"])

    def put(self, job: SyncJob, *, replaces: SyncJob | None) -> bool:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "Item": {
                **self._key(job.appid),
                "job_id": {"S": job.job_id},
                "version": {"N": str(job.version)},
                "state": {"S": str(job.state)},
                "job": {"S": job.model_dump_json()},
            },
        }
        if replaces is None:
            kwargs["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            kwargs["ConditionExpression"] = "job_id = :jid AND version = :v"
            kwargs["ExpressionAttributeValues"] = {
                ":jid": {"S": replaces.job_id},
                ":v": {"N": str(replaces.version)},
            }
        try:
            client("dynamodb").put_item(**kwargs)
        except ClientError as exc:
            if error_is(exc):
                return False
            raise
        return True


class DynamoTagCatalog:
    def __init__(self, table: str) -> None:
        self._table = table

    def _items(self, appid: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {
                ":pk": {"S": keys.account_pk(appid)},
                ":prefix": {"S": keys.TAG_SK_PREFIX},
            },
        }
        while True:
            resp = client("dynamodb").query(**kwargs)
            items += resp.get("Items", [])
            if "LastEvaluatedKey" not in resp:
                return items
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def tags(self, appid: str) -> list[Tag]:
        tags = [
            Tag(
                id=int(item["tag_id"]["N"]),
                name=item.get("name", {}).get("S", ""),
                count=int(item.get("count", {}).get("N", "0")),
            )
            for item in self._items(appid)
            if "tag_id" in item
        ]
        return sorted(tags, key=lambda tag: tag.id)

    def replace_tags(self, appid: str, tags: list[Tag]) -> tuple[int, int]:
        """Stores WeChat's tag list; tags deleted there disappear. (stored, removed)."""
        pk = keys.account_pk(appid)
        existing = {item["sk"]["S"] for item in self._items(appid)}
        wanted = {
            keys.tag_sk(tag.id): {
                "pk": {"S": pk},
                "sk": {"S": keys.tag_sk(tag.id)},
                "tag_id": {"N": str(tag.id)},
                "name": {"S": tag.name},
                "count": {"N": str(tag.count)},
            }
            for tag in tags
        }
        requests = [{"PutRequest": {"Item": item}} for item in wanted.values()]
        requests += [
            {"DeleteRequest": {"Key": {"pk": {"S": pk}, "sk": {"S": sk}}}}
            for sk in sorted(existing - set(wanted))
        ]
        for start in range(0, len(requests), 25):
            pending: dict[str, Any] = {self._table: requests[start : start + 25]}
            for attempt in range(_BATCH_WRITE_ROUNDS):
                if attempt:
                    time.sleep(min(1.0, 0.05 * 2**attempt))
                pending = (
                    client("dynamodb").batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
                )
                if not pending:
                    break
            else:
                raise WxReachError("DynamoDB left tag writes unprocessed", reason="store_busy", status=503)
        return len(wanted), len(existing - set(wanted))


class SqsFollowerSyncQueue:
    """Messages `{appid, job_id}` for the follower-sync function (start and continuations)."""

    def __init__(self, queue_url: str) -> None:
        self._url = queue_url

    def enqueue(self, appid: str, job_id: str, *, delay_seconds: int = 0) -> None:
        client("sqs").send_message(
            QueueUrl=self._url,
            MessageBody=json.dumps({"appid": appid, "job_id": job_id}),
            DelaySeconds=max(0, min(900, delay_seconds)),
        )
