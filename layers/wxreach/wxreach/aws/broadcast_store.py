"""Broadcasts in the ledger table: the record (META), the splitter's checkpoint (SPLIT), the
audit trail (AUDIT#…) and message-outcome counters (COUNT#<shard>), all under BCAST#<id>.

The record's state and version are plain attributes so every transition is one conditional
write; the rest of the record is one JSON document.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from wxreach.aws import keys
from wxreach.aws.attributes import error_is, unix_seconds
from wxreach.aws.clients import client
from wxreach.errors import InvalidInput
from wxreach.reach.broadcasts import OUTCOME_STATES, AuditEntry, Broadcast, BroadcastState, SplitProgress
from wxreach.reach.splitting import Checkpoint, MassBatchSpec

RETENTION_SECONDS = 400 * 24 * 3600
TRANSACTION_CANCELLED = "TransactionCanceledException"


def _doc(broadcast: Broadcast) -> str:
    return broadcast.model_dump_json(exclude={"split", "state", "version"})


def _meta_item(broadcast: Broadcast) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": {"S": keys.broadcast_pk(broadcast.id)},
        "sk": {"S": keys.BROADCAST_META_SK},
        "broadcast_id": {"S": broadcast.id},
        "appid": {"S": broadcast.appid},
        "channel": {"S": str(broadcast.channel)},
        "state": {"S": str(broadcast.state)},
        "version": {"N": str(broadcast.version)},
        "doc": {"S": _doc(broadcast)},
        "gsi1pk": {"S": keys.broadcasts_index_pk(broadcast.appid)},
        "gsi1sk": {"S": f"{broadcast.created_at.strftime('%Y-%m-%dT%H:%M:%S')}#{broadcast.id}"},
        "updated_at": unix_seconds(broadcast.updated_at),
        "expires_at": {"N": str(int(broadcast.created_at.timestamp()) + RETENTION_SECONDS)},
    }
    if broadcast.state is BroadcastState.SENDING or (
        broadcast.state in OUTCOME_STATES and broadcast.outcomes_final_at is None
    ):
        item["gsi2pk"] = {"S": keys.open_broadcasts_pk(broadcast.appid)}
        item["gsi2sk"] = {"S": broadcast.id}
    if broadcast.mass is not None:
        # Read by the mass sender as it is: the WeChat body without touser / filter / clientmsgid.
        item["mass_body"] = {"S": json.dumps(broadcast.mass.wechat_body(), ensure_ascii=False)}
    return item


def _from_meta(item: dict[str, Any]) -> Broadcast:
    data = json.loads(item["doc"]["S"])
    data["state"] = item["state"]["S"]
    data["version"] = int(item["version"]["N"])
    return Broadcast.model_validate(data)


def _checkpoint_from(item: dict[str, Any] | None) -> Checkpoint:
    if not item:
        return Checkpoint()
    data = json.loads(item["doc"]["S"])
    paused = data.get("paused_until")
    return Checkpoint(
        version=int(item["version"]["N"]),
        cursor=data.get("cursor"),
        started=data.get("started", False),
        done=data.get("done", False),
        recipients=data.get("recipients", 0),
        batches=data.get("batches", 0),
        enqueued=data.get("enqueued", 0),
        excluded=Counter(data.get("excluded", {})),
        paused_until=datetime.fromisoformat(paused) if paused else None,
        runs=data.get("runs", 0),
    )


def _checkpoint_doc(cp: Checkpoint) -> str:
    return json.dumps(
        {
            "cursor": cp.cursor,
            "started": cp.started,
            "done": cp.done,
            "recipients": cp.recipients,
            "batches": cp.batches,
            "enqueued": cp.enqueued,
            "excluded": dict(cp.excluded),
            "paused_until": cp.paused_until.isoformat() if cp.paused_until else None,
            "runs": cp.runs,
        },
        separators=(",", ":"),
    )


def progress_of(cp: Checkpoint, finished_at: datetime | None = None) -> SplitProgress:
    state = "done" if cp.done else "paused" if cp.paused_until else "running" if cp.started else "pending"
    return SplitProgress(
        state=state,  # type: ignore[arg-type]
        recipients=cp.recipients,
        batches=cp.batches,
        excluded=dict(cp.excluded),
        paused_until=cp.paused_until,
        runs=cp.runs,
        finished_at=finished_at,
    )


def _page_token(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode()


def _page_key(token: str, index_pk: str) -> dict[str, Any]:
    """The start key a page token names, only if it belongs to this listing."""
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
        ok = (
            isinstance(key, dict)
            and set(key) == {"pk", "sk", "gsi1pk", "gsi1sk"}
            and all(isinstance(v, dict) and set(v) == {"S"} and isinstance(v["S"], str) for v in key.values())
            and key["gsi1pk"]["S"] == index_pk
            and key["pk"]["S"].startswith("BCAST#")
        )
    except (ValueError, TypeError, AttributeError, binascii.Error):
        ok = False
    if not ok:
        raise InvalidInput("`after` is not a page token of this listing", reason="bad_page_token")
    return dict(key)


class DynamoBroadcastStore:
    def __init__(self, table: str) -> None:
        self._table = table

    def _key(self, broadcast_id: str, sk: str) -> dict[str, Any]:
        return {"pk": {"S": keys.broadcast_pk(broadcast_id)}, "sk": {"S": sk}}

    # -- the record ----------------------------------------------------------------------------
    def create(self, broadcast: Broadcast) -> tuple[Broadcast, bool]:
        try:
            client("dynamodb").put_item(
                TableName=self._table,
                Item=_meta_item(broadcast),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if not error_is(exc):
                raise
            existing = self.get(broadcast.id)
            assert existing is not None
            return existing, False
        return broadcast, True

    def get(self, broadcast_id: str) -> Broadcast | None:
        resp = client("dynamodb").get_item(
            TableName=self._table, Key=self._key(broadcast_id, keys.BROADCAST_META_SK), ConsistentRead=True
        )
        item = resp.get("Item")
        if not item:
            return None
        broadcast = _from_meta(item)
        cp = self.checkpoint(broadcast_id)
        return broadcast.model_copy(update={"split": progress_of(cp, broadcast.finished_at)})

    def state(self, broadcast_id: str) -> BroadcastState | None:
        resp = client("dynamodb").get_item(
            TableName=self._table,
            Key=self._key(broadcast_id, keys.BROADCAST_META_SK),
            ConsistentRead=True,
            ProjectionExpression="#s",
            ExpressionAttributeNames={"#s": "state"},
        )
        item = resp.get("Item")
        return BroadcastState(item["state"]["S"]) if item else None

    def save(
        self, broadcast: Broadcast, *, expected_version: int, expected_states: set[BroadcastState]
    ) -> bool:
        """Replace the record if it still has that version and one of those states."""
        names = {f":s{i}": {"S": str(s)} for i, s in enumerate(sorted(expected_states))}
        try:
            client("dynamodb").put_item(
                TableName=self._table,
                Item=_meta_item(broadcast),
                ConditionExpression=f"version = :v AND #s IN ({', '.join(names)})",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={":v": {"N": str(expected_version)}, **names},
            )
        except ClientError as exc:
            if error_is(exc):
                return False
            raise
        return True

    def delete(self, broadcast_id: str, *, expected_version: int) -> bool:
        try:
            client("dynamodb").delete_item(
                TableName=self._table,
                Key=self._key(broadcast_id, keys.BROADCAST_META_SK),
                ConditionExpression="version = :v AND #s = :draft",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={
                    ":v": {"N": str(expected_version)},
                    ":draft": {"S": str(BroadcastState.DRAFT)},
                },
            )
        except ClientError as exc:
            if error_is(exc):
                return False
            raise
        return True

    def list_broadcasts(
        self, appid: str, *, state: BroadcastState | None, limit: int, after: str | None
    ) -> tuple[list[Broadcast], str | None]:
        found: list[Broadcast] = []
        start = _page_key(after, keys.broadcasts_index_pk(appid)) if after else None
        while len(found) < limit:
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": "gsi1",
                "KeyConditionExpression": "gsi1pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": keys.broadcasts_index_pk(appid)}},
                "ScanIndexForward": False,
                "Limit": limit - len(found),
            }
            if state is not None:
                kwargs["FilterExpression"] = "#s = :s"
                kwargs["ExpressionAttributeNames"] = {"#s": "state"}
                kwargs["ExpressionAttributeValues"][":s"] = {"S": str(state)}
            if start:
                kwargs["ExclusiveStartKey"] = start
            resp = client("dynamodb").query(**kwargs)
            found.extend(_from_meta(item) for item in resp.get("Items", []))
            start = resp.get("LastEvaluatedKey")
            if not start:
                break
        return found, _page_token(start) if start else None

    def open_broadcasts(self, appid: str) -> Iterator[Broadcast]:
        """Sending, or final with outcomes still to come (a sparse index: cheap however many
        broadcasts the account has)."""
        start: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": "gsi2",
                "KeyConditionExpression": "gsi2pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": keys.open_broadcasts_pk(appid)}},
            }
            if start:
                kwargs["ExclusiveStartKey"] = start
            resp = client("dynamodb").query(**kwargs)
            for item in resp.get("Items", []):
                broadcast = self.get(item["broadcast_id"]["S"])  # the index lags the record
                if broadcast is not None:
                    yield broadcast
            start = resp.get("LastEvaluatedKey")
            if not start:
                return

    def month_mass(self, appid: str, since: datetime) -> list[Broadcast]:
        """The account's broadcasts created since `since` (mass history of the month)."""
        out: list[Broadcast] = []
        start: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": "gsi1",
                "KeyConditionExpression": "gsi1pk = :pk AND gsi1sk >= :since",
                "FilterExpression": "channel = :mass",
                "ExpressionAttributeValues": {
                    ":pk": {"S": keys.broadcasts_index_pk(appid)},
                    ":since": {"S": since.strftime("%Y-%m-%dT%H:%M:%S")},
                    ":mass": {"S": "mass"},
                },
            }
            if start:
                kwargs["ExclusiveStartKey"] = start
            resp = client("dynamodb").query(**kwargs)
            out.extend(_from_meta(item) for item in resp.get("Items", []))
            start = resp.get("LastEvaluatedKey")
            if not start:
                return out

    # -- audit ---------------------------------------------------------------------------------
    def audit(self, broadcast_id: str, entry: AuditEntry) -> None:
        at = entry.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        client("dynamodb").put_item(
            TableName=self._table,
            Item={
                **self._key(broadcast_id, keys.audit_sk(at, secrets.token_hex(4))),
                "doc": {"S": entry.model_dump_json()},
                "expires_at": {"N": str(int(entry.at.timestamp()) + RETENTION_SECONDS)},
            },
        )

    def audit_trail(self, broadcast_id: str) -> list[AuditEntry]:
        items = self._query_prefix(broadcast_id, "AUDIT#")
        return [AuditEntry.model_validate_json(item["doc"]["S"]) for item in items]

    def _query_prefix(self, broadcast_id: str, prefix: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
                "ExpressionAttributeValues": {
                    ":pk": {"S": keys.broadcast_pk(broadcast_id)},
                    ":p": {"S": prefix},
                },
                "ConsistentRead": True,
            }
            if start:
                kwargs["ExclusiveStartKey"] = start
            resp = client("dynamodb").query(**kwargs)
            items.extend(resp.get("Items", []))
            start = resp.get("LastEvaluatedKey")
            if not start:
                return items

    # -- counters (written by the template sender with each message's final state) -----------
    def message_counts(self, broadcast_id: str) -> Counter[str]:
        """Summed counter shards: `state` and `state:reason` → messages."""
        total: Counter[str] = Counter()
        for item in self._query_prefix(broadcast_id, "COUNT#"):
            for name, value in item.items():
                if name.startswith("n:") and "N" in value:
                    total[name[2:]] += int(value["N"])
        return total

    def close_gate(self, broadcast_id: str) -> None:
        """Every counter shard refuses new claims from now on (the template sender's gate)."""
        for shard in range(keys.BROADCAST_COUNTER_SHARDS):
            for attempt in range(6):
                try:
                    client("dynamodb").update_item(
                        TableName=self._table,
                        Key=self._key(broadcast_id, keys.broadcast_counter_sk(shard)),
                        UpdateExpression="SET closed = :t",
                        ExpressionAttributeValues={":t": {"BOOL": True}},
                    )
                    break
                except ClientError as exc:
                    if not error_is(exc, "TransactionConflictException") or attempt == 5:
                        raise
                    time.sleep(0.02 * 2**attempt)

    # -- the splitter's checkpoint -------------------------------------------------------------
    def checkpoint(self, broadcast_id: str) -> Checkpoint:
        resp = client("dynamodb").get_item(
            TableName=self._table, Key=self._key(broadcast_id, keys.BROADCAST_SPLIT_SK), ConsistentRead=True
        )
        return _checkpoint_from(resp.get("Item"))

    def _checkpoint_put(self, broadcast_id: str, cp: Checkpoint) -> dict[str, Any]:
        put: dict[str, Any] = {
            "TableName": self._table,
            "Item": {
                **self._key(broadcast_id, keys.BROADCAST_SPLIT_SK),
                "version": {"N": str(cp.version)},
                "doc": {"S": _checkpoint_doc(cp)},
                "expires_at": {"N": str(int(datetime.now(UTC).timestamp()) + RETENTION_SECONDS)},
            },
        }
        if cp.version <= 1:
            put["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            put["ConditionExpression"] = "version = :prev"
            put["ExpressionAttributeValues"] = {":prev": {"N": str(cp.version - 1)}}
        return put

    def commit(self, broadcast_id: str, checkpoint: Checkpoint) -> bool:
        try:
            client("dynamodb").put_item(**self._checkpoint_put(broadcast_id, checkpoint))
        except ClientError as exc:
            if error_is(exc):
                return False
            raise
        return True

    def commit_with_batch(
        self, broadcast: Broadcast, checkpoint: Checkpoint, batch: MassBatchSpec, *, recipients: int
    ) -> bool:
        from wxreach.aws.mass_batch_store import batch_put_entries  # the mass sender owns the format
        from wxreach.reach.mass_sending import MassBatch, SendAllTarget

        put = self._checkpoint_put(broadcast.id, checkpoint)
        batch_entries = batch_put_entries(
            self._table,
            MassBatch(
                broadcast_id=broadcast.id,
                appid=broadcast.appid,
                number=batch.number,
                openids=batch.openids,
                sendall=None
                if batch.openids is not None
                else SendAllTarget(is_to_all=batch.to_all, tag_id=batch.tag_id),
                recipients=recipients,
            ),
            now=datetime.now(UTC),
        )
        try:
            client("dynamodb").transact_write_items(TransactItems=[{"Put": put}, *batch_entries])
        except ClientError as exc:
            if error_is(exc, TRANSACTION_CANCELLED):
                return False
            raise
        return True

    def set_state(
        self,
        broadcast_id: str,
        *,
        from_states: set[BroadcastState],
        to: BroadcastState,
        update: dict[str, Any] | None = None,
        when: Callable[[Broadcast], bool] | None = None,
    ) -> Broadcast | None:
        """One conditional transition; the document's fields in `update` change with it. With
        `when`, only while the current record satisfies it (checked again on every retry)."""
        for _ in range(5):
            current = self.get(broadcast_id)
            if current is None or current.state not in from_states or (when and not when(current)):
                return None
            changed = current.model_copy(
                update={**(update or {}), "state": to, "version": current.version + 1}
            )
            if self.save(changed, expected_version=current.version, expected_states=from_states):
                return changed
        return None
