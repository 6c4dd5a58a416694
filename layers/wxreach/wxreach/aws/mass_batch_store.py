"""Mass batches in the ledger table, next to their broadcast record (`pk = BCAST#<id>`).

- `BATCH#<n>`: the batch's target, state and outcome: small, so listings, summaries and
  state changes stay cheap whatever the batch's size.
- `BATCHRCPT#<n>#<part>`: its openids, zlib-compressed newline-joined UTF-8 in a Binary
  attribute, PART_OPENIDS per item: even 10 000 openids of the longest accepted shape (64
  characters, ~650 KB raw) stay far under DynamoDB's 400 KB item limit; 28-character WeChat
  openids take ~20 bytes each (10 000 → ~2 x 99 KB).

A batch is created once (every item conditional on not existing, in one transaction), claimed
once (queued → sending, in a transaction that checks the broadcast is still `sending`), and
finished only by its claim's holder.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from wxreach.aws import keys
from wxreach.aws.attributes import error_is, from_unix_seconds, unix_seconds
from wxreach.aws.clients import client
from wxreach.reach.mass_sending import (
    ClaimOutcome,
    ClaimStatus,
    MassBatch,
    MassBatchState,
    MassBroadcast,
    MassJobResult,
    SendAllTarget,
)

PART_OPENIDS = 5_000
# The openids are only needed to send; they go long after any resend could happen.
RECIPIENTS_RETENTION_SECONDS = 400 * 24 * 3600
MAX_DETAIL_CHARS = 500
_TARGET_OPENIDS = "openids"
_TARGET_SENDALL = "sendall"


def encode_openids(openids: list[str]) -> bytes:
    return zlib.compress("\n".join(openids).encode("utf-8"), 6)


def decode_openids(blob: bytes) -> list[str]:
    text = zlib.decompress(blob).decode("utf-8")
    return text.split("\n") if text else []


def _parts(openids: list[str]) -> list[list[str]]:
    return [openids[i : i + PART_OPENIDS] for i in range(0, len(openids), PART_OPENIDS)]


class DynamoMassBatchStore:
    def __init__(self, table: str) -> None:
        self._table = table

    def _key(self, broadcast_id: str, number: int) -> dict[str, Any]:
        return {"pk": {"S": keys.broadcast_pk(broadcast_id)}, "sk": {"S": keys.batch_sk(number)}}

    def _meta_key(self, broadcast_id: str) -> dict[str, Any]:
        return {"pk": {"S": keys.broadcast_pk(broadcast_id)}, "sk": {"S": keys.BROADCAST_META_SK}}

    # -- creating ------------------------------------------------------------------------------
    def transact_put_items(self, batch: MassBatch, *, now: datetime) -> list[dict[str, Any]]:
        return batch_put_entries(self._table, batch, now=now)

    def put_batches(self, batches: list[MassBatch], *, now: datetime) -> int:
        """Creates each batch that does not exist yet; one that does (a resumed split re-putting
        it) is left exactly as it is, whatever its state. One request per batch (its items in one
        transaction, each conditional). Returns how many were created."""
        created = 0
        ddb = client("dynamodb")
        for batch in batches:
            try:
                ddb.transact_write_items(TransactItems=self.transact_put_items(batch, now=now))
            except ClientError as exc:
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if error_is(exc, "TransactionCanceledException") and "ConditionalCheckFailed" in reasons:
                    continue  # already there
                raise
            created += 1
        return created

    # -- reading -------------------------------------------------------------------------------
    def broadcast(self, broadcast_id: str) -> MassBroadcast | None:
        item = (
            client("dynamodb")
            .get_item(
                TableName=self._table,
                Key=self._meta_key(broadcast_id),
                ConsistentRead=True,
                ProjectionExpression="appid, channel, #state, mass_body",
                ExpressionAttributeNames={"#state": "state"},
            )
            .get("Item")
        )
        if not item:
            return None
        return MassBroadcast(
            broadcast_id=broadcast_id,
            appid=item.get("appid", {}).get("S", ""),
            channel=item.get("channel", {}).get("S", ""),
            state=item.get("state", {}).get("S", ""),
            mass_body=item.get("mass_body", {}).get("S"),
        )

    def get(self, broadcast_id: str, number: int, *, with_openids: bool = True) -> MassBatch | None:
        item = (
            client("dynamodb")
            .get_item(TableName=self._table, Key=self._key(broadcast_id, number), ConsistentRead=True)
            .get("Item")
        )
        if not item:
            return None
        openids = self._openids(broadcast_id, number) if with_openids and _is_openid_batch(item) else None
        return _from_item(item, openids)

    def _openids(self, broadcast_id: str, number: int) -> list[str]:
        openids: list[str] = []
        for item in self._query(
            "pk = :pk AND begins_with(sk, :prefix)",
            {
                ":pk": {"S": keys.broadcast_pk(broadcast_id)},
                ":prefix": {"S": keys.batch_recipients_prefix(number)},
            },
        ):
            openids.extend(decode_openids(item["openids_z"]["B"]))
        return openids

    def iter_batches(self, broadcast_id: str, *, with_openids: bool = False) -> Iterator[MassBatch]:
        """Every batch of the broadcast in number order (paged Query); openids only when asked
        (one more Query per batch)."""
        for item in self._query(
            "pk = :pk AND begins_with(sk, :prefix)",
            {":pk": {"S": keys.broadcast_pk(broadcast_id)}, ":prefix": {"S": keys.BATCH_SK_PREFIX}},
        ):
            number = int(item["number"]["N"])
            openids = self._openids(broadcast_id, number) if with_openids and _is_openid_batch(item) else None
            yield _from_item(item, openids)

    def _query(self, condition: str, values: dict[str, Any]) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ConsistentRead": True,
        }
        ddb = client("dynamodb")
        while True:
            resp = ddb.query(**kwargs)
            yield from resp.get("Items", [])
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def sent_openids(self, broadcast_id: str) -> Iterator[str]:
        """The openids of every sent `/mass/send` batch (sendall batches have none)."""
        for batch in self.iter_batches(broadcast_id):
            if batch.state is MassBatchState.SENT and not batch.is_sendall:
                yield from self._openids(broadcast_id, batch.number)

    def msg_ids(self, broadcast_id: str) -> list[str]:
        """WeChat's msg_id of every sent batch, in batch order."""
        return [
            b.msg_id for b in self.iter_batches(broadcast_id) if b.state is MassBatchState.SENT and b.msg_id
        ]

    def summary(self, broadcast_id: str) -> dict[str, Any]:
        """Counts per state: `batches` and `recipients` ({state: n}), `reasons` (recipients,
        {state: {reason: n}}) and `batch_reasons` (batches, same shape), and the totals."""
        batches: Counter[str] = Counter()
        recipients: Counter[str] = Counter()
        reasons: dict[str, Counter[str]] = {}
        batch_reasons: dict[str, Counter[str]] = {}
        wechat: Counter[str] = Counter()  # MASSSENDJOBFINISH totals of the finished jobs
        jobs: Counter[str] = Counter()  # sent batches by job outcome (`pending`: not reported yet)
        job_recipients: Counter[str] = Counter()  # their recipients, by the same outcome
        for batch in self.iter_batches(broadcast_id):
            state = str(batch.state)
            batches[state] += 1
            if batch.state is MassBatchState.SENT:
                jobs[batch.job.outcome if batch.job else "pending"] += 1
                job_recipients[batch.job.outcome if batch.job else "pending"] += batch.recipients
                if batch.job is not None:
                    for name, value in (
                        ("total", batch.job.total_count),
                        ("filtered", batch.job.filter_count),
                        ("sent", batch.job.sent_count),
                        ("errors", batch.job.error_count),
                    ):
                        wechat[name] += value or 0
            recipients[state] += batch.recipients
            if batch.reason:
                reasons.setdefault(state, Counter())[batch.reason] += batch.recipients
                batch_reasons.setdefault(state, Counter())[batch.reason] += 1
        return {
            "wechat": dict(wechat),
            "jobs": dict(jobs),
            "job_recipients": dict(job_recipients),
            "batches": dict(batches),
            "recipients": dict(recipients),
            "reasons": {state: dict(c) for state, c in reasons.items()},
            "batch_reasons": {state: dict(c) for state, c in batch_reasons.items()},
            "total_batches": sum(batches.values()),
            "total_recipients": sum(recipients.values()),
        }

    # -- state changes -------------------------------------------------------------------------
    def claim(
        self, broadcast_id: str, number: int, *, token: str, now: datetime, stale_before: datetime
    ) -> ClaimOutcome:
        """queued (or sending with a claim older than `stale_before`) → sending under `token`,
        only while the broadcast record says `sending`: one transaction, so a cancel that flipped
        the broadcast first leaves no window for a batch to start."""
        try:
            client("dynamodb").transact_write_items(
                TransactItems=[
                    {
                        "ConditionCheck": {
                            "TableName": self._table,
                            "Key": self._meta_key(broadcast_id),
                            "ConditionExpression": "#state = :sending",
                            "ExpressionAttributeNames": {"#state": "state"},
                            "ExpressionAttributeValues": {":sending": {"S": "sending"}},
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": self._key(broadcast_id, number),
                            "UpdateExpression": (
                                "SET #state = :sending, claim_token = :token, claimed_at = :now,"
                                " updated_at = :now, first_claimed_at = if_not_exists(first_claimed_at, :now)"
                                " ADD attempts :one"
                            ),
                            "ConditionExpression": (
                                "#state = :queued OR (#state = :sending AND claimed_at < :stale)"
                            ),
                            "ExpressionAttributeNames": {"#state": "state"},
                            "ExpressionAttributeValues": {
                                ":sending": {"S": MassBatchState.SENDING},
                                ":queued": {"S": MassBatchState.QUEUED},
                                ":token": {"S": token},
                                ":now": unix_seconds(now),
                                ":stale": unix_seconds(stale_before),
                                ":one": {"N": "1"},
                            },
                        }
                    },
                ]
            )
        except ClientError as exc:
            if not error_is(exc, "TransactionCanceledException"):
                raise
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if reasons and reasons[0] == "ConditionalCheckFailed":
                meta = self.broadcast(broadcast_id)
                return ClaimOutcome(ClaimStatus.BROADCAST_NOT_SENDING, meta.state if meta else None)
            # The batch is not claimable, or a concurrent write on it (TransactionConflict).
            return ClaimOutcome(ClaimStatus.BATCH_TAKEN)
        return ClaimOutcome(ClaimStatus.CLAIMED, "sending")

    def finish(
        self,
        broadcast_id: str,
        number: int,
        *,
        state: MassBatchState,
        now: datetime,
        claim_token: str | None = None,
        appid: str | None = None,
        msg_id: str | None = None,
        msg_data_id: str | None = None,
        errcode: int | None = None,
        reason: str | None = None,
        detail: str | None = None,
        maybe_sent: bool = False,
    ) -> bool:
        """Moves the batch to a final state, or back to queued (then `reason`/`errcode` say why
        it waits, as `last_error`). With claim_token only that claim's holder may; without, only
        from queued (a decision taken before any claim)."""
        sets = ["#state = :to", "updated_at = :now"]
        removes = ["claim_token", "claimed_at"]
        values: dict[str, Any] = {":to": {"S": state}, ":now": unix_seconds(now)}
        if state is MassBatchState.QUEUED:
            if reason is not None:
                sets.append("last_error = :last_error")
                values[":last_error"] = {"S": reason}
            if errcode is not None:
                sets.append("last_errcode = :last_errcode")
                values[":last_errcode"] = {"N": str(errcode)}
        else:
            for name, value in (
                ("reason", reason),
                ("detail", detail[:MAX_DETAIL_CHARS] if detail else None),
                ("msg_id", msg_id),
                ("msg_data_id", msg_data_id),
            ):
                if value is not None:
                    sets.append(f"{name} = :{name}")
                    values[f":{name}"] = {"S": value}
            if errcode is not None:
                sets.append("errcode = :errcode")
                values[":errcode"] = {"N": str(errcode)}
        if state is MassBatchState.SENT:
            sets.append("sent_at = :now")
            if msg_id is not None and appid is not None:
                # MASSSENDJOBFINISH names the job by its msg_id only (status updater).
                sets += ["gsi1pk = :gpk", "gsi1sk = :gsk"]
                values[":gpk"] = {"S": keys.mass_msgid_index_pk(appid, msg_id)}
                values[":gsk"] = {"S": f"{keys.broadcast_pk(broadcast_id)}#{keys.batch_sk(number)}"}
                # Listed until its job outcome is known (the reconciler polls /mass/get).
                sets += ["gsi2pk = :apk", "gsi2sk = :ask"]
                values[":apk"] = {"S": keys.mass_awaiting_pk(appid)}
                values[":ask"] = {"S": keys.awaiting_sk(int(now.timestamp()), f"{broadcast_id}/{number}")}
        if maybe_sent:
            # Never cleared: once an attempt may have been accepted, every later one knows.
            sets.append("maybe_sent = :true")
            values[":true"] = {"BOOL": True}
        if claim_token is not None:
            condition = "#state = :sending AND claim_token = :claim"
            values[":sending"] = {"S": MassBatchState.SENDING}
            values[":claim"] = {"S": claim_token}
        else:
            condition = "#state = :queued"
            values[":queued"] = {"S": MassBatchState.QUEUED}
        return self._update(
            broadcast_id,
            number,
            UpdateExpression="SET " + ", ".join(sets) + " REMOVE " + ", ".join(removes),
            ConditionExpression=condition,
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues=values,
        )

    # -- job outcomes (the status updater and the reconciler) ----------------------------------
    def find_by_msg_id(self, appid: str, msg_id: str) -> MassBatch | None:
        resp = client("dynamodb").query(
            TableName=self._table,
            IndexName="gsi1",
            KeyConditionExpression="gsi1pk = :pk",
            ExpressionAttributeValues={":pk": {"S": keys.mass_msgid_index_pk(appid, msg_id)}},
            Limit=1,
        )
        items = resp.get("Items", [])
        if not items:
            return None
        return self.get(items[0]["broadcast_id"]["S"], int(items[0]["number"]["N"]), with_openids=False)

    def record_job(self, broadcast_id: str, number: int, job: MassJobResult) -> bool:
        """The job's outcome on a sent batch, once: a redelivered callback finds it recorded. A
        poll's answer (status only) gives way to the callback's fuller one, never the reverse."""
        condition = "#state = :sent AND attribute_not_exists(job)"
        values: dict[str, Any] = {
            ":job": {"S": job.model_dump_json()},
            ":source": {"S": job.source},
            ":sent": {"S": MassBatchState.SENT},
        }
        if job.source == "callback":
            condition = "#state = :sent AND (attribute_not_exists(job) OR job_source = :poll)"
            values[":poll"] = {"S": "poll"}
        return self._update(
            broadcast_id,
            number,
            UpdateExpression="SET job = :job, job_source = :source REMOVE gsi2pk, gsi2sk",
            ConditionExpression=condition,
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues=values,
        )

    def awaiting_jobs(self, appid: str, *, sent_before: datetime, limit: int = 100) -> list[MassBatch]:
        """Sent batches of the account whose job outcome is not known, sent before the time."""
        resp = client("dynamodb").query(
            TableName=self._table,
            IndexName="gsi2",
            KeyConditionExpression="gsi2pk = :pk AND gsi2sk < :bound",
            ExpressionAttributeValues={
                ":pk": {"S": keys.mass_awaiting_pk(appid)},
                ":bound": {"S": keys.awaiting_sk(int(sent_before.timestamp()), "")},
            },
            Limit=limit,
        )
        return [_from_item(item, None) for item in resp.get("Items", [])]

    def cancel_batch(
        self, broadcast_id: str, number: int, *, now: datetime, stale_before: datetime, reason: str
    ) -> MassBatch | None:
        """A batch of a broadcast that will not send: queued → cancelled. One left `sending` by
        a dead instance may have reached WeChat and must not be resent: failed (outcome_unknown).
        A fresh claim is left to its holder. Returns the batch as it is now."""
        if not self._cancel_queued_one(broadcast_id, number, now=now, reason=reason):
            self._update(
                broadcast_id,
                number,
                UpdateExpression=(
                    "SET #state = :failed, reason = :reason, detail = :detail, updated_at = :now"
                    " REMOVE claim_token, claimed_at"
                ),
                ConditionExpression="#state = :sending AND claimed_at < :stale",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":failed": {"S": MassBatchState.FAILED},
                    ":sending": {"S": MassBatchState.SENDING},
                    ":reason": {"S": "outcome_unknown"},
                    ":detail": {"S": f"interrupted during the WeChat call, not resent ({reason})"},
                    ":now": unix_seconds(now),
                    ":stale": unix_seconds(stale_before),
                },
            )
        return self.get(broadcast_id, number, with_openids=False)

    def cancel_queued(
        self, broadcast_id: str, *, now: datetime | None = None, reason: str = "cancelled"
    ) -> tuple[int, int]:
        """Every queued batch → cancelled (each one conditional on still being queued, so a batch
        a sender claimed meanwhile is not touched). (cancelled batches, their recipients)."""
        now = now or datetime.now(UTC)
        batches = recipients = 0
        for batch in self.iter_batches(broadcast_id):
            if batch.state is MassBatchState.QUEUED and self._cancel_queued_one(
                broadcast_id, batch.number, now=now, reason=reason
            ):
                batches += 1
                recipients += batch.recipients
        return batches, recipients

    def _cancel_queued_one(self, broadcast_id: str, number: int, *, now: datetime, reason: str) -> bool:
        return self._update(
            broadcast_id,
            number,
            UpdateExpression="SET #state = :cancelled, reason = :reason, updated_at = :now",
            ConditionExpression="#state = :queued",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={
                ":cancelled": {"S": MassBatchState.CANCELLED},
                ":queued": {"S": MassBatchState.QUEUED},
                ":reason": {"S": reason},
                ":now": unix_seconds(now),
            },
        )

    def _update(self, broadcast_id: str, number: int, **kwargs: Any) -> bool:
        try:
            client("dynamodb").update_item(
                TableName=self._table, Key=self._key(broadcast_id, number), **kwargs
            )
        except ClientError as exc:
            if error_is(exc):
                return False
            raise
        return True


def batch_put_entries(table: str, batch: MassBatch, *, now: datetime) -> list[dict[str, Any]]:
    """TransactWriteItems entries creating `batch` (its item and openid parts, ≤ 3 entries), each
    only if absent: the splitter adds them to its checkpoint transaction, put_batches sends them
    alone."""
    if batch.openids is None and batch.sendall is None:
        raise ValueError("a mass batch to create needs openids or a sendall target")
    pk = keys.broadcast_pk(batch.broadcast_id)
    item: dict[str, Any] = {
        "pk": {"S": pk},
        "sk": {"S": keys.batch_sk(batch.number)},
        "broadcast_id": {"S": batch.broadcast_id},
        "appid": {"S": batch.appid},
        "number": {"N": str(batch.number)},
        "recipients": {"N": str(batch.recipients)},
        "state": {"S": MassBatchState.QUEUED},
        "attempts": {"N": "0"},
        "created_at": unix_seconds(now),
        "updated_at": unix_seconds(now),
    }
    puts: list[dict[str, Any]] = []
    if batch.sendall is not None:
        item["target"] = {"S": _TARGET_SENDALL}
        item["is_to_all"] = {"BOOL": batch.sendall.is_to_all}
        if batch.sendall.tag_id is not None:
            item["tag_id"] = {"N": str(batch.sendall.tag_id)}
    else:
        assert batch.openids is not None
        parts = _parts(batch.openids)
        item["target"] = {"S": _TARGET_OPENIDS}
        item["parts"] = {"N": str(len(parts))}
        expires = str(int(now.timestamp()) + RECIPIENTS_RETENTION_SECONDS)
        for index, part in enumerate(parts):
            puts.append(
                {
                    "pk": {"S": pk},
                    "sk": {"S": keys.batch_recipients_sk(batch.number, index)},
                    "openids_z": {"B": encode_openids(part)},
                    "count": {"N": str(len(part))},
                    "expires_at": {"N": expires},
                }
            )
    return [
        {"Put": {"TableName": table, "Item": it, "ConditionExpression": "attribute_not_exists(pk)"}}
        for it in (item, *puts)
    ]


def _is_openid_batch(item: dict[str, Any]) -> bool:
    return item.get("target", {}).get("S") == _TARGET_OPENIDS


def _from_item(item: dict[str, Any], openids: list[str] | None) -> MassBatch:
    def s(name: str) -> str | None:
        return item[name]["S"] if name in item else None

    def n(name: str) -> int | None:
        return int(item[name]["N"]) if name in item else None

    sendall = None
    if item.get("target", {}).get("S") == _TARGET_SENDALL:
        sendall = SendAllTarget.model_construct(
            is_to_all=item.get("is_to_all", {}).get("BOOL", False), tag_id=n("tag_id")
        )
    # Our own record: no re-validation (10 000 openids), the invariants held when it was created.
    return MassBatch.model_construct(
        broadcast_id=item["broadcast_id"]["S"],
        appid=item["appid"]["S"],
        number=int(item["number"]["N"]),
        openids=openids,
        sendall=sendall,
        recipients=n("recipients") or 0,
        state=MassBatchState(item["state"]["S"]),
        msg_id=s("msg_id"),
        msg_data_id=s("msg_data_id"),
        errcode=n("errcode"),
        reason=s("reason"),
        detail=s("detail"),
        last_error=s("last_error"),
        attempts=n("attempts") or 0,
        maybe_sent=item.get("maybe_sent", {}).get("BOOL", False),
        job=MassJobResult.model_validate_json(item["job"]["S"]) if "job" in item else None,
        claimed_at=from_unix_seconds(item.get("claimed_at")),
        first_claimed_at=from_unix_seconds(item.get("first_claimed_at")),
        sent_at=from_unix_seconds(item.get("sent_at")),
        created_at=from_unix_seconds(item.get("created_at")),
        updated_at=from_unix_seconds(item.get("updated_at")),
    )
