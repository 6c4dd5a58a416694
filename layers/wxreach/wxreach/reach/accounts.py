"""Official Accounts wxreach serves: their public record, their secrets, and registration.

Where they are stored is the adapters' business (wxreach.aws.account_store).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from wxreach.errors import InvalidInput
from wxreach.reach.compliance import LintLevel
from wxreach.reach.ports import AccountDirectory, SecretVault

APPID_PATTERN = r"^wx[0-9A-Za-z]{16}$"
ORIGINAL_ID_PATTERN = r"^gh_[0-9A-Za-z]{6,32}$"
# WeChat's console accepts a 3-32 character token of letters and digits.
TOKEN_PATTERN = r"^[A-Za-z0-9]{3,32}$"  # noqa: S105 - a pattern, not a secret
AES_KEY_PATTERN = r"^[A-Za-z0-9]{43}$"


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
    compliance_lint: LintLevel = Field(
        default=LintLevel.WARN,
        description="Ban-risk wording in template messages: warn in previews, or block the send",
    )
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


class AccountRegistration(Account):
    """What an operator sends to register an account: the public fields plus its secrets."""

    secrets: AccountSecrets


def register_account(
    registration: AccountRegistration, repo: AccountDirectory, store: SecretVault
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
