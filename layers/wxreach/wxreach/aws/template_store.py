"""An account's templates in the quota table, as last synced from WeChat.

Template messages: `ACCT#<appid>` / `TPL#<id>`; subscription templates: `ACCT#<appid>` /
`SUBTPL#<id>`, whose `kind` attribute is what the webhook reads to tell long-term grants.
"""

from __future__ import annotations

from typing import Any

from wxreach.aws import keys
from wxreach.aws.clients import client
from wxreach.reach.templates import Template
from wxreach.wechat.keywords import Channel


def _sk(channel: Channel, template_id: str) -> str:
    return (
        keys.template_sk(template_id)
        if channel is Channel.TEMPLATE
        else keys.subscription_template_sk(template_id)
    )


def _prefix(channel: Channel) -> str:
    return _sk(channel, "")


class DynamoTemplateCatalog:
    def __init__(self, table: str) -> None:
        self._table = table

    def get(self, appid: str, channel: Channel, template_id: str) -> Template | None:
        resp = client("dynamodb").get_item(
            TableName=self._table,
            Key={"pk": {"S": keys.account_pk(appid)}, "sk": {"S": _sk(channel, template_id)}},
        )
        item = resp.get("Item")
        if not item or "template" not in item:
            return None
        return Template.model_validate_json(item["template"]["S"])

    def _items(self, appid: str, channel: Channel) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {
                ":pk": {"S": keys.account_pk(appid)},
                ":prefix": {"S": _prefix(channel)},
            },
        }
        while True:
            resp = client("dynamodb").query(**kwargs)
            items += resp.get("Items", [])
            if "LastEvaluatedKey" not in resp:
                return items
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def templates(self, appid: str, channel: Channel | None = None) -> list[Template]:
        channels = [channel] if channel is not None else list(Channel)
        return [
            Template.model_validate_json(item["template"]["S"])
            for ch in channels
            for item in self._items(appid, ch)
            if "template" in item
        ]

    def replace_all(self, appid: str, channel: Channel, templates: list[Template]) -> tuple[int, int]:
        """Stores the synced list; templates deleted in WeChat disappear. (stored, removed)."""
        existing = {item["sk"]["S"] for item in self._items(appid, channel)}
        wanted: dict[str, dict[str, Any]] = {}
        for template in templates:
            sk = _sk(channel, template.template_id)
            item: dict[str, Any] = {
                "pk": {"S": keys.account_pk(appid)},
                "sk": {"S": sk},
                "template": {"S": template.model_dump_json()},
            }
            if template.kind is not None:
                item["kind"] = {"S": str(template.kind)}
            wanted[sk] = item
        requests = [{"PutRequest": {"Item": item}} for item in wanted.values()]
        requests += [
            {"DeleteRequest": {"Key": {"pk": {"S": keys.account_pk(appid)}, "sk": {"S": sk}}}}
            for sk in sorted(existing - set(wanted))
        ]
        ddb = client("dynamodb")
        for start in range(0, len(requests), 25):
            pending: dict[str, Any] = {self._table: requests[start : start + 25]}
            for _ in range(8):
                resp = ddb.batch_write_item(RequestItems=pending)
                pending = resp.get("UnprocessedItems") or {}
                if not pending:
                    break
        return len(wanted), len(existing - set(wanted))
