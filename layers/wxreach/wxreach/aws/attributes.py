"""DynamoDB attribute and error helpers shared by the stores."""

from __future__ import annotations

from datetime import UTC, datetime

from botocore.exceptions import ClientError

CONDITION_FAILED = "ConditionalCheckFailedException"


def unix_seconds(dt: datetime) -> dict[str, str]:
    return {"N": str(int(dt.timestamp()))}


def from_unix_seconds(attr: dict[str, str] | None) -> datetime | None:
    return datetime.fromtimestamp(int(attr["N"]), UTC) if attr else None


def error_is(exc: ClientError, code: str = CONDITION_FAILED) -> bool:
    return bool(exc.response["Error"]["Code"] == code)
