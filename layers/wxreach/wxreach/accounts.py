"""The account registry: which Official Accounts wxreach serves, and their secrets.

Account records live in the quota table; secrets live in Secrets Manager (one JSON secret per
account) and are read through Powertools Parameters with caching.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from aws_lambda_powertools.utilities import parameters
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from wxreach import keys
from wxreach.aws import client
from wxreach.errors import Conflict, InvalidInput, NotFound, WxReachError
from wxreach.observability import register_secret

APPID_PATTERN = r"^wx[0-9A-Za-z]{16}$"
ORIGINAL_ID_PATTERN = r"^gh_[0-9A-Za-z]{6,32}$"
# WeChat's console accepts a 3-32 character token of letters and digits.
TOKEN_PATTERN = r"^[A-Za-z0-9]{3,32}$"  # noqa: S105 - a pattern, not a secret
AES_KEY_PATTERN = r"^[A-Za-z0-9]{43}$"
RESERVATION_TIMEOUT_SECONDS = 60


def _matching(value: Any, pattern: str, expected: str) -> Any:
    if isinstance(value, str) and not re.fullmatch(pattern, value):
        raise ValueError(f"must be {expected}")
    return value


class AccountType(StrEnum):
    SERVICE = "service"
    SUBSCRIPTION = "subscription"


class EncryptionMode(StrEnum):
    PLAINTEXT = "plaintext"
    COMPATIBLE = "compatible"
    SAFE = "safe"


class Account(BaseModel):
    """What an operator may see about an account: never any secret."""

    model_config = ConfigDict(frozen=True)

    appid: str = Field(pattern=APPID_PATTERN, examples=["wx1234567890abcdef"])
    original_id: str = Field(pattern=ORIGINAL_ID_PATTERN, examples=["gh_3f1a2b3c4d5e"])
    name: str = Field(default="", max_length=64)
    account_type: AccountType = AccountType.SERVICE
    verified: bool = True
    encryption_mode: EncryptionMode = EncryptionMode.SAFE
    created_at: datetime | None = None


class AccountSecrets(BaseModel):
    model_config = ConfigDict(frozen=True)

    app_secret: SecretStr = Field(min_length=16, max_length=64)
    token: SecretStr = Field(description="Callback Token: 3-32 letters or digits")
    encoding_aes_key: SecretStr | None = Field(default=None, description="43 letters or digits")
    previous_encoding_aes_key: SecretStr | None = Field(default=None, description="43 letters or digits")

    # Patterns checked before the value is wrapped (pydantic cannot apply a pattern to SecretStr).
    @field_validator("token", mode="before")
    @classmethod
    def _token_shape(cls, value: Any) -> Any:
        return _matching(value, TOKEN_PATTERN, "3-32 letters or digits")

    @field_validator("encoding_aes_key", "previous_encoding_aes_key", mode="before")
    @classmethod
    def _aes_key_shape(cls, value: Any) -> Any:
        return None if value is None else _matching(value, AES_KEY_PATTERN, "43 letters or digits")

    def to_json(self) -> str:
        def reveal(value: SecretStr | None) -> str | None:
            return value.get_secret_value() if value is not None else None

        return json.dumps(
            {
                "app_secret": reveal(self.app_secret),
                "token": reveal(self.token),
                "encoding_aes_key": reveal(self.encoding_aes_key),
                "previous_encoding_aes_key": reveal(self.previous_encoding_aes_key),
            }
        )


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


class AccountRegistration(Account):
    """What an operator sends to register an account: the public fields plus its secrets."""

    secrets: AccountSecrets


def register_account(
    registration: AccountRegistration, repo: AccountRepository, store: SecretStore
) -> Account:
    account = Account.model_validate(registration.model_dump(exclude={"secrets", "created_at"}))
    if (
        account.encryption_mode is not EncryptionMode.PLAINTEXT
        and registration.secrets.encoding_aes_key is None
    ):
        raise InvalidInput(
            "encoding_aes_key is required unless encryption_mode is plaintext", reason="missing_aes_key"
        )
    # Reserve, then store the secret, then activate: concurrent registrations of one appid
    # cannot swap each other's secrets, and no active account ever lacks them.
    repo.reserve(account)
    store.put(account.appid, registration.secrets)
    return repo.activate(account)
