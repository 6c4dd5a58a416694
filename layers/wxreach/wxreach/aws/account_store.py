"""Account records in the quota table and account secrets in Secrets Manager (one JSON secret
per account, read through Powertools Parameters with caching)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities import parameters
from botocore.exceptions import ClientError
from pydantic import ValidationError

from wxreach.aws import keys
from wxreach.aws.clients import client
from wxreach.errors import Conflict, NotFound, WxReachError
from wxreach.observability import register_secret
from wxreach.reach.accounts import Account, AccountSecrets

RESERVATION_TIMEOUT_SECONDS = 60


class AccountRepository:
    """Account records in the quota table (pk ACCT#<appid>, sk ACCOUNT; listed through gsi1)."""

    def __init__(self, table: str, *, cache_seconds: int = 60, clock: Any = time.monotonic) -> None:
        self._table = table
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, Account]] = {}

    def reserve(self, account: Account) -> None:
        """Claims the appid for a registration in progress (invisible to get/list until activated).

        A reservation left by a crashed registration can be taken over after a minute.
        """
        now = int(time.time())
        try:
            client("dynamodb").put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": keys.account_pk(account.appid)},
                    "sk": {"S": keys.ACCOUNT_SK},
                    "state": {"S": "pending"},
                    "reserved_at": {"N": str(now)},
                },
                ConditionExpression=(
                    "attribute_not_exists(pk) OR (#state = :pending AND reserved_at < :stale)"
                ),
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":pending": {"S": "pending"},
                    ":stale": {"N": str(now - RESERVATION_TIMEOUT_SECONDS)},
                },
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise Conflict(f"account {account.appid} already exists", reason="account_exists") from exc
            raise

    def activate(self, account: Account) -> Account:
        stored = account.model_copy(update={"created_at": account.created_at or datetime.now(UTC)})
        client("dynamodb").update_item(
            TableName=self._table,
            Key={"pk": {"S": keys.account_pk(stored.appid)}, "sk": {"S": keys.ACCOUNT_SK}},
            UpdateExpression="SET #state = :active, gsi1pk = :gpk, gsi1sk = :gsk, account = :account",
            ConditionExpression="#state = :pending",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={
                ":active": {"S": "active"},
                ":pending": {"S": "pending"},
                ":gpk": {"S": keys.ACCOUNTS_INDEX_PK},
                ":gsk": {"S": stored.appid},
                ":account": {"S": stored.model_dump_json()},
            },
        )
        return stored

    def get(self, appid: str) -> Account:
        cached = self._cache.get(appid)
        now = self._clock()
        if cached and now - cached[0] < self._cache_seconds:
            return cached[1]
        resp = client("dynamodb").get_item(
            TableName=self._table,
            Key={"pk": {"S": keys.account_pk(appid)}, "sk": {"S": keys.ACCOUNT_SK}},
        )
        if resp.get("Item", {}).get("state", {}).get("S") != "active":
            raise NotFound("unknown account", reason="unknown_account")
        account = Account.model_validate_json(resp["Item"]["account"]["S"])
        self._cache[appid] = (now, account)
        return account

    def list(self, *, limit: int = 100, after: str | None = None) -> tuple[list[Account], str | None]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "gsi1",
            "KeyConditionExpression": "gsi1pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": keys.ACCOUNTS_INDEX_PK}},
            "Limit": limit,
        }
        if after:
            kwargs["ExclusiveStartKey"] = {
                "gsi1pk": {"S": keys.ACCOUNTS_INDEX_PK},
                "gsi1sk": {"S": after},
                "pk": {"S": keys.account_pk(after)},
                "sk": {"S": keys.ACCOUNT_SK},
            }
        resp = client("dynamodb").query(**kwargs)
        accounts = [Account.model_validate_json(item["account"]["S"]) for item in resp.get("Items", [])]
        last = resp.get("LastEvaluatedKey")
        return accounts, (last["gsi1sk"]["S"] if last else None)


class SecretStore:
    """One Secrets Manager secret per account, named <prefix><appid>."""

    def __init__(self, prefix: str, *, max_age_seconds: int = 300) -> None:
        self._prefix = prefix
        self._max_age = max_age_seconds
        self._provider: parameters.SecretsProvider | None = None

    def name(self, appid: str) -> str:
        return f"{self._prefix}{appid}"

    def put(self, appid: str, secrets: AccountSecrets) -> None:
        """Creates the secret, or overwrites one left behind by an earlier, half-done registration."""
        sm = client("secretsmanager")
        try:
            sm.create_secret(
                Name=self.name(appid),
                SecretString=secrets.to_json(),
                Description=f"wxreach WeChat credentials for {appid}",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceExistsException":
                raise
            sm.put_secret_value(SecretId=self.name(appid), SecretString=secrets.to_json())

    def get(self, appid: str) -> AccountSecrets:
        if self._provider is None:
            self._provider = parameters.SecretsProvider(boto3_client=client("secretsmanager"))
        try:
            raw = self._provider.get(self.name(appid), max_age=self._max_age, transform="json")
        except (
            parameters.exceptions.GetParameterError,
            parameters.exceptions.TransformParameterError,
        ) as exc:
            raise WxReachError(f"secrets for {appid} unavailable", reason="secrets_unavailable") from exc
        try:
            secrets = AccountSecrets.model_validate(raw)
        except ValidationError as exc:
            raise WxReachError(f"secrets for {appid} are malformed", reason="secrets_malformed") from exc
        register_secret(
            *(
                v.get_secret_value()
                for v in (
                    secrets.app_secret,
                    secrets.token,
                    secrets.encoding_aes_key,
                    secrets.previous_encoding_aes_key,
                )
                if v is not None
            )
        )
        return secrets
