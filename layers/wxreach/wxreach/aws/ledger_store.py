"""Messages in the ledger table: one item per message, every state change a conditional write.

First writer wins: a message is created once (redeliveries read the existing record), claimed
once (queued → sending with a claim token), and finished only by the claim's holder.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from wxreach.aws import keys
from wxreach.aws.attributes import error_is, from_unix_seconds, unix_seconds
from wxreach.aws.clients import client
from wxreach.reach.messages import TERMINAL_STATES, BroadcastClosed, Message, MessageState, Origin, OriginKind
from wxreach.reach.reports import RecipientOutcome
from wxreach.wechat.keywords import Channel

NO_CALLBACK = "no_callback"  # the reconciler's reason for `unknown` (a late callback may still come)
# Records of single sends and journey actions outlive the status updater's reconciliation.
MESSAGE_RETENTION_SECONDS = 400 * 24 * 3600
MAX_STORED_VALUE_CHARS = 256
TRANSACTION_CANCELLED = "TransactionCanceledException"
TRANSACTION_ATTEMPTS = 6


def counter_shard(message_id: str) -> int:
    return int(message_id[1:9], 16) % keys.BROADCAST_COUNTER_SHARDS


def _cancel_reasons(exc: ClientError) -> list[str]:
    return [r.get("Code", "") for r in exc.response.get("CancellationReasons", [])]


def _transact(items: list[dict[str, Any]]) -> None:
    """TransactWriteItems, again after a conflict with another transaction on the same counter
    shard (DynamoDB cancels one of two concurrent transactions on an item)."""
    for attempt in range(TRANSACTION_ATTEMPTS):
        try:
            client("dynamodb").transact_write_items(TransactItems=items)
            return
        except ClientError as exc:
            conflict = error_is(exc, TRANSACTION_CANCELLED) and "TransactionConflict" in _cancel_reasons(exc)
            if (
                not (conflict or error_is(exc, "TransactionConflictException"))
                or attempt == TRANSACTION_ATTEMPTS - 1
            ):
                raise
            time.sleep(random.uniform(0.005, 0.05 * 2**attempt))  # noqa: S311 - jitter, not a secret


def _to_item(message: Message) -> dict[str, Any]:
    now = message.created_at or datetime.now(UTC)
    item: dict[str, Any] = {
        "pk": {"S": keys.message_pk(message.message_id)},
        "sk": {"S": keys.MESSAGE_SK},
        "message_id": {"S": message.message_id},
        "appid": {"S": message.appid},
        "channel": {"S": str(message.channel)},
        "openid": {"S": message.openid},
        "template_id": {"S": message.template_id},
        "origin": {"S": message.origin.model_dump_json()},
        "state": {"S": str(message.state)},
        "attempts": {"N": str(message.attempts)},
        "created_at": unix_seconds(now),
        "updated_at": unix_seconds(now),
        "expires_at": {"N": str(int(now.timestamp()) + MESSAGE_RETENTION_SECONDS)},
    }
    if message.origin.kind is OriginKind.BROADCAST:
        item["gsi3pk"] = {
            "S": keys.broadcast_messages_pk(message.origin.id, counter_shard(message.message_id))
        }
        item["gsi3sk"] = {"S": message.message_id}
    return item


def _from_item(item: dict[str, Any]) -> Message:
    def s(name: str) -> str | None:
        return item[name]["S"] if name in item else None

    errcode = item.get("errcode", {}).get("N")
    return Message(
        message_id=item["message_id"]["S"],
        appid=item["appid"]["S"],
        channel=Channel(item["channel"]["S"]),
        openid=item["openid"]["S"],
        template_id=item["template_id"]["S"],
        origin=Origin.model_validate_json(item["origin"]["S"]),
        state=MessageState(item["state"]["S"]),
        reason=s("reason"),
        detail=s("detail"),
        wechat_msgid=s("wechat_msgid"),
        errcode=int(errcode) if errcode is not None else None,
        attempts=int(item.get("attempts", {}).get("N", "0")),
        values=json.loads(item["values"]["S"]) if "values" in item else {},
        maybe_sent=item.get("maybe_sent", {}).get("BOOL", False),
        first_claimed_at=from_unix_seconds(item.get("first_claimed_at")),
        created_at=from_unix_seconds(item.get("created_at")),
        updated_at=from_unix_seconds(item.get("updated_at")),
        sent_at=from_unix_seconds(item.get("sent_at")),
        delivery_status=s("delivery_status"),
        delivered_at=from_unix_seconds(item.get("delivered_at")),
    )


class DynamoMessageLedger:
    def __init__(self, table: str) -> None:
        self._table = table

    def _key(self, message_id: str) -> dict[str, Any]:
        return {"pk": {"S": keys.message_pk(message_id)}, "sk": {"S": keys.MESSAGE_SK}}

    def create(self, message: Message) -> tuple[Message, bool]:
        """(the stored record, True when this call created it)."""
        try:
            client("dynamodb").put_item(
                TableName=self._table,
                Item=_to_item(message),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if not error_is(exc):
                raise
            existing = self.get(message.message_id)
            if existing is None:  # pragma: no cover - deleted between the two calls
                raise
            return existing, False
        stored = self.get(message.message_id)
        assert stored is not None
        return stored, True

    def get(self, message_id: str) -> Message | None:
        item = self._get_item(message_id)
        return _from_item(item) if item else None

    def _get_item(self, message_id: str) -> dict[str, Any] | None:
        resp = client("dynamodb").get_item(
            TableName=self._table, Key=self._key(message_id), ConsistentRead=True
        )
        item: dict[str, Any] | None = resp.get("Item")
        return item

    def broadcast_sending(self, broadcast_id: str) -> bool:
        resp = client("dynamodb").get_item(
            TableName=self._table,
            Key={"pk": {"S": keys.broadcast_pk(broadcast_id)}, "sk": {"S": keys.BROADCAST_META_SK}},
            ConsistentRead=True,
            ProjectionExpression="#s",
            ExpressionAttributeNames={"#s": "state"},
        )
        return bool(resp.get("Item", {}).get("state", {}).get("S") == "sending")

    def claim_info(self, message_id: str) -> tuple[MessageState | None, str | None, datetime | None]:
        """(state, claim token, claimed at), read consistently."""
        item = self._get_item(message_id) or {}
        state = MessageState(item["state"]["S"]) if "state" in item else None
        return state, item.get("claim_token", {}).get("S"), from_unix_seconds(item.get("claimed_at"))

    def claim(
        self,
        message_id: str,
        *,
        token: str,
        now: datetime,
        take_over: str | None = None,
        gate: str | None = None,
    ) -> bool:
        """queued → sending under `token`; or, with take_over, a sending claim left by a dead
        instance (that exact claim token) re-claimed. False when someone else holds it.

        With `gate` (a broadcast id) the claim holds only while that broadcast is sending, in one
        transaction: once a cancel has flipped it, no message of it can start (BroadcastClosed)."""
        values: dict[str, Any]
        if take_over is None:
            condition, values = "#state = :queued", {":queued": {"S": MessageState.QUEUED}}
        else:
            condition = "#state = :sending AND claim_token = :old"
            values = {":sending": {"S": MessageState.SENDING}, ":old": {"S": take_over}}
        update = {
            "TableName": self._table,
            "Key": self._key(message_id),
            "UpdateExpression": (
                "SET #state = :to, claim_token = :token, claimed_at = :now, updated_at = :now,"
                " first_claimed_at = if_not_exists(first_claimed_at, :now)"
            ),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#state": "state"},
            "ExpressionAttributeValues": {
                **values,
                ":to": {"S": MessageState.SENDING},
                ":token": {"S": token},
                ":now": unix_seconds(now),
            },
        }
        if gate is not None:
            # A take-over inherits the dead claim's count: claims − releases stays exact.
            return self._gated_claim(update, gate, count=take_over is None)
        try:
            client("dynamodb").update_item(**update)
        except ClientError as exc:
            if error_is(exc):
                return False
            raise
        return True

    def _gated_claim(self, update: dict[str, Any], broadcast_id: str, *, count: bool) -> bool:
        """The claim and the message's counter shard in one transaction. The shard carries the
        broadcast's gate (`closed`, set on every shard by a cancel), so no claim after a cancel
        can succeed, and no single item is in every sender's transaction."""
        message_id = update["Key"]["pk"]["S"].removeprefix("MSG#")
        shard: dict[str, Any] = {
            "TableName": self._table,
            "Key": {
                "pk": {"S": keys.broadcast_pk(broadcast_id)},
                "sk": {"S": keys.broadcast_counter_sk(counter_shard(message_id))},
            },
            "ConditionExpression": "attribute_not_exists(closed)",
        }
        if count:
            shard.update(
                UpdateExpression="ADD #claims :one",
                ExpressionAttributeNames={"#claims": "n:claims"},
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
        gate = {"Update": shard} if count else {"ConditionCheck": shard}
        try:
            _transact([{"Update": update}, gate])
        except ClientError as exc:
            if not error_is(exc, TRANSACTION_CANCELLED):
                raise
            reasons = _cancel_reasons(exc)
            if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
                raise BroadcastClosed(broadcast_id) from exc
            if reasons and reasons[0] == "ConditionalCheckFailed":
                return False
            raise
        return True

    def finish(
        self,
        message_id: str,
        *,
        state: MessageState,
        now: datetime,
        claim_token: str | None = None,
        reason: str | None = None,
        detail: str | None = None,
        wechat_msgid: str | None = None,
        errcode: int | None = None,
        values: dict[str, str] | None = None,
        appid: str | None = None,
        count_attempt: bool = True,
        maybe_sent: bool = False,
        tally: str | None = None,
        maybe_delta: int = 0,
    ) -> bool:
        """Moves the message to a terminal state (or back to queued), once.

        With claim_token: only the holder of that claim may. Without: only from queued (a
        decision taken before any claim, e.g. skipped or invalid). With `tally` (a broadcast id)
        a terminal state is counted on one of the broadcast's counter shards in the same
        transaction, so the counts always equal the sum of the messages.
        """
        sets = ["#state = :to", "updated_at = :now"]
        removes = ["claim_token", "claimed_at"]
        attr_values: dict[str, Any] = {":to": {"S": state}, ":now": unix_seconds(now)}
        for name, value in (("reason", reason), ("detail", detail), ("wechat_msgid", wechat_msgid)):
            if value is not None:
                sets.append(f"{name} = :{name}")
                attr_values[f":{name}"] = {"S": value}
        if errcode is not None:
            sets.append("errcode = :errcode")
            attr_values[":errcode"] = {"N": str(errcode)}
        if values is not None:
            sets.append("#values = :values")
            # Bounded, and ASCII-escaped so no odd code point can make the write fail.
            stored = {key: value[:MAX_STORED_VALUE_CHARS] for key, value in values.items()}
            attr_values[":values"] = {"S": json.dumps(stored, sort_keys=True)}
        if state is MessageState.SENT:
            sets.append("sent_at = :now")
            if wechat_msgid is not None and appid is not None:
                # Delivery callbacks name the message by WeChat's MsgID.
                sets += ["gsi1pk = :gpk", "gsi1sk = :gsk"]
                attr_values[":gpk"] = {"S": keys.wechat_msgid_index_pk(appid, wechat_msgid)}
                attr_values[":gsk"] = {"S": message_id}
            if appid is not None:
                # Listed until its delivery outcome (the reconciler's "no callback"), also when
                # WeChat gave no msgid to match a callback with.
                sets += ["gsi2pk = :apk", "gsi2sk = :ask"]
                attr_values[":apk"] = {"S": keys.awaiting_pk(appid, counter_shard(message_id))}
                attr_values[":ask"] = {"S": keys.awaiting_sk(int(now.timestamp()), message_id)}
        if maybe_sent:
            # Never cleared: once an attempt may have been delivered, every later one knows.
            sets.append("maybe_sent = :true")
            attr_values[":true"] = {"BOOL": True}
        if state is MessageState.QUEUED and count_attempt:
            sets.append("attempts = attempts + :one")
            attr_values[":one"] = {"N": "1"}
        if claim_token is not None:
            condition = "#state = :sending AND claim_token = :claim"
            attr_values[":sending"] = {"S": MessageState.SENDING}
            attr_values[":claim"] = {"S": claim_token}
        else:
            condition = "#state = :queued"
            attr_values[":queued"] = {"S": MessageState.QUEUED}
        update = {
            "TableName": self._table,
            "Key": self._key(message_id),
            "UpdateExpression": "SET " + ", ".join(sets) + " REMOVE " + ", ".join(removes),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {
                "#state": "state",
                **({"#values": "values"} if values is not None else {}),
            },
            "ExpressionAttributeValues": attr_values,
        }
        if tally is not None and (state in TERMINAL_STATES or claim_token is not None):
            return self._finish_counted(
                update,
                tally,
                message_id,
                state if state in TERMINAL_STATES else None,
                reason,
                claim_token,
                maybe_delta,
            )
        try:
            client("dynamodb").update_item(**update)
        except ClientError as exc:
            if error_is(exc):
                return False
            raise
        return True

    def _finish_counted(
        self,
        update: dict[str, Any],
        broadcast_id: str,
        message_id: str,
        state: MessageState | None,
        reason: str | None,
        claim_token: str | None,
        maybe_delta: int = 0,
    ) -> bool:
        """The message's transition and its broadcast's counts in one transaction: terminal
        states by reason, `releases` of claims (claims − releases = sends on the wire) and
        `maybe` (queued messages an earlier attempt may have delivered)."""
        names: dict[str, str] = {}
        if state is not None:
            names["#st"] = f"n:{state}"
            if reason:
                names["#re"] = f"n:{state}:{reason}"
        if claim_token is not None:
            names["#rel"] = "n:releases"
        expression = "ADD " + ", ".join(f"{name} :one" for name in names)
        values = {":one": {"N": "1"}}
        if maybe_delta:
            names["#mb"] = "n:maybe"
            expression += ", #mb :maybe"
            values[":maybe"] = {"N": str(maybe_delta)}
        return self._update_counted(update, broadcast_id, message_id, expression, names, values)

    def _update_counted(
        self,
        update: dict[str, Any],
        broadcast_id: str,
        message_id: str,
        expression: str,
        names: dict[str, str],
        values: dict[str, Any],
    ) -> bool:
        """The message's update and its counter shard's ADDs in one transaction; False when the
        message's condition failed (someone moved it first)."""
        counter = {
            "TableName": self._table,
            "Key": {
                "pk": {"S": keys.broadcast_pk(broadcast_id)},
                "sk": {"S": keys.broadcast_counter_sk(counter_shard(message_id))},
            },
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        try:
            _transact([{"Update": update}, {"Update": counter}])
        except ClientError as exc:
            if error_is(exc, TRANSACTION_CANCELLED) and _cancel_reasons(exc)[:1] == [
                "ConditionalCheckFailed"
            ]:
                return False
            raise
        return True

    # -- delivery outcomes (the status updater and the reconciler) -------------------------------
    def find_by_wechat_msgid(self, appid: str, msgid: str) -> Message | None:
        resp = client("dynamodb").query(
            TableName=self._table,
            IndexName="gsi1",
            KeyConditionExpression="gsi1pk = :pk",
            ExpressionAttributeValues={":pk": {"S": keys.wechat_msgid_index_pk(appid, msgid)}},
            Limit=1,
        )
        items = resp.get("Items", [])
        if not items:
            return None
        # The index is eventually consistent: read the record itself.
        return self.get(items[0]["message_id"]["S"])

    def record_delivery(
        self,
        message: Message,
        *,
        state: MessageState,
        now: datetime,
        reason: str | None = None,
        status: str | None = None,
    ) -> bool:
        """sent → delivered | failed | unknown, once (False when it has moved on already); or a
        late callback's truth over the reconciler's `unknown` (no_callback). A broadcast's message
        moves its count from the old state to the new one in the same transaction;
        `n:delivery:<state>` counts what moved after being sent (the cancel report needs it)."""
        late = message.state is MessageState.UNKNOWN and message.reason == NO_CALLBACK
        if late and state is MessageState.UNKNOWN:
            return False
        sets = ["#state = :to", "updated_at = :now", "delivered_at = :now"]
        values: dict[str, Any] = {":to": {"S": state}, ":now": unix_seconds(now)}
        if late:
            condition = "#state = :from AND reason = :no_callback"
            values[":from"] = {"S": MessageState.UNKNOWN}
            values[":no_callback"] = {"S": NO_CALLBACK}
        else:
            condition = "#state = :from"
            values[":from"] = {"S": MessageState.SENT}
        removes = ["gsi2pk", "gsi2sk"]
        if reason is not None:
            sets.append("reason = :reason")
            values[":reason"] = {"S": reason}
        else:
            removes.append("reason")
        if status is not None:
            sets.append("delivery_status = :status")
            values[":status"] = {"S": status[:MAX_STORED_VALUE_CHARS]}
        update = {
            "TableName": self._table,
            "Key": self._key(message.message_id),
            "UpdateExpression": "SET " + ", ".join(sets) + " REMOVE " + ", ".join(removes),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#state": "state"},
            "ExpressionAttributeValues": values,
        }
        if message.origin.kind is not OriginKind.BROADCAST:
            try:
                client("dynamodb").update_item(**update)
            except ClientError as exc:
                if error_is(exc):
                    return False
                raise
            return True
        names = {"#st": f"n:{state}", "#dl": f"n:delivery:{state}"}
        expression = "ADD #st :one, #dl :one"
        if late:
            names |= {"#old": "n:unknown", "#oldre": "n:unknown:no_callback", "#olddl": "n:delivery:unknown"}
            expression += ", #old :minus, #oldre :minus, #olddl :minus"
        else:
            names["#sent"] = "n:sent"
            expression += ", #sent :minus"
        if reason:
            names["#re"] = f"n:{state}:{reason}"
            expression += ", #re :one"
        return self._update_counted(
            update,
            message.origin.id,
            message.message_id,
            expression,
            names,
            {":one": {"N": "1"}, ":minus": {"N": "-1"}},
        )

    def awaiting(self, appid: str, *, sent_before: datetime, limit: int = 500) -> list[Message]:
        """Sent messages of the account whose callback has not come, sent before the time."""
        found: list[Message] = []
        bound = keys.awaiting_sk(int(sent_before.timestamp()), "")
        for shard in range(keys.BROADCAST_COUNTER_SHARDS):  # counter_shard() picks the shard
            resp = client("dynamodb").query(
                TableName=self._table,
                IndexName="gsi2",
                KeyConditionExpression="gsi2pk = :pk AND gsi2sk < :bound",
                ExpressionAttributeValues={
                    ":pk": {"S": keys.awaiting_pk(appid, shard)},
                    ":bound": {"S": bound},
                },
                Limit=max(1, limit - len(found)),
            )
            found += [_from_item(item) for item in resp.get("Items", [])]
            if len(found) >= limit:
                break
        return found

    def broadcast_outcomes(self, broadcast_id: str) -> Iterator[RecipientOutcome]:
        """Every message of a broadcast, shard by shard (gsi3: only what a report reads)."""
        for shard in range(keys.BROADCAST_COUNTER_SHARDS):
            start: dict[str, Any] | None = None
            while True:
                kwargs: dict[str, Any] = {
                    "TableName": self._table,
                    "IndexName": "gsi3",
                    "KeyConditionExpression": "gsi3pk = :pk",
                    "ExpressionAttributeValues": {
                        ":pk": {"S": keys.broadcast_messages_pk(broadcast_id, shard)}
                    },
                }
                if start:
                    kwargs["ExclusiveStartKey"] = start
                resp = client("dynamodb").query(**kwargs)
                for item in resp.get("Items", []):
                    errcode = item.get("errcode", {}).get("N")
                    yield RecipientOutcome(
                        openid=item["openid"]["S"],
                        state=item["state"]["S"],
                        reason=item.get("reason", {}).get("S"),
                        delivery_status=item.get("delivery_status", {}).get("S"),
                        errcode=int(errcode) if errcode is not None else None,
                        sent_at=from_unix_seconds(item.get("sent_at")),
                        delivered_at=from_unix_seconds(item.get("delivered_at")),
                        updated_at=from_unix_seconds(item.get("updated_at")),
                    )
                start = resp.get("LastEvaluatedKey")
                if not start:
                    break
