"""Plumbing shared by the WeChat endpoint modules: the call context, body parsing, common checks."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from local.sandbox.errors import ApiError, Code
from local.sandbox.httpio import Request
from local.sandbox.keyword_rules import Family, check_value
from local.sandbox.model import Account, AccountType, TemplateBase, User
from local.sandbox.state import SandboxState

# an odd number of backslashes before `u` + 4 hex digits is a JSON \uXXXX escape (§0: 40033)
_UNICODE_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u[0-9a-fA-F]{4}")


class Body(StrEnum):
    NONE = "none"  # GET endpoints
    REQUIRED = "required"
    OPTIONAL = "optional"


@dataclass
class Call:
    state: SandboxState
    request: Request
    now: float
    authenticated: Account | None = None  # set from ?access_token= before auth'd handlers run
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def account(self) -> Account:
        if self.authenticated is None:
            raise RuntimeError("this endpoint runs without an access token")
        return self.authenticated

    @property
    def query(self) -> dict[str, str]:
        return self.request.query


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Callable[[Call], dict[str, Any]]
    auth: bool = True  # needs ?access_token=
    body: Body = Body.REQUIRED


def parse_json_body(raw: bytes, *, required: bool) -> dict[str, Any]:
    if not raw.strip():
        if required:
            raise ApiError(Code.EMPTY_POST_DATA)
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(Code.DATA_FORMAT_ERROR) from exc
    if _UNICODE_ESCAPE.search(text):
        raise ApiError(Code.INVALID_CHARSET)
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise ApiError(Code.DATA_FORMAT_ERROR) from exc
    if not isinstance(parsed, dict):
        raise ApiError(Code.DATA_FORMAT_ERROR)
    return parsed


def ok(**fields: Any) -> dict[str, Any]:
    return {"errcode": 0, "errmsg": "ok", **fields}


def require_verified(account: Account) -> None:
    if not account.verified:
        raise ApiError(Code.API_UNAUTHORIZED)


def require_verified_service(account: Account) -> None:
    # template messages are for verified service accounts only (§2)
    if not account.verified or account.type is not AccountType.SERVICE:
        raise ApiError(Code.API_UNAUTHORIZED)


def known_user(account: Account, openid: Any) -> User:
    """40003 for an empty openid or one that never belonged to this appid."""
    user = account.users.get(openid) if isinstance(openid, str) and openid else None
    if user is None:
        raise ApiError(Code.INVALID_OPENID)
    return user


def validate_data(family: Family, template: TemplateBase, data: Any, *, iso_datetime: bool) -> dict[str, str]:
    """Check every keyword of the template in its declared order; 47003 names the first bad key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ApiError(Code.DATA_FORMAT_ERROR)
    values: dict[str, str] = {}
    for keyword in template.keywords:
        entry = data.get(keyword.name)
        raw: Any = "" if entry is None else entry.get("value", "") if isinstance(entry, dict) else None
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise ApiError(Code.ARGUMENT_INVALID, f"argument invalid! data.{keyword.name}.value invalid")
        value = raw if isinstance(raw, str) else str(raw)
        reason = check_value(family, keyword.kind, value, keyword.enum_values, iso_datetime=iso_datetime)
        if reason is not None:
            detail = "is empty" if reason == "empty" else "invalid"
            raise ApiError(Code.ARGUMENT_INVALID, f"argument invalid! data.{keyword.name}.value {detail}")
        values[keyword.name] = value
    # keys the template does not have (legacy first/remark...) are dropped silently (§2.1)
    return values


def jump_target(body: dict[str, Any], url_field: str) -> dict[str, Any] | None:
    """Where tapping the card leads: a mini program wins over a web page (§2.1, §3.2)."""
    miniprogram = body.get("miniprogram")
    url = body.get(url_field)
    if isinstance(miniprogram, dict) and miniprogram.get("appid"):
        return {"type": "miniprogram", "miniprogram": miniprogram, "fallback_url": url or None}
    if isinstance(url, str) and url:
        return {"type": "url", "url": url}
    return None


def int_field(value: Any) -> int | None:
    """Accept 123 or "123" (clients that keep 64-bit ids as strings); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None
