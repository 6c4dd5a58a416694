"""WeChat error codes and messages as the sandbox reports them (§1.3, §2.1, §3.2, §4.2, §6)."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class Code(IntEnum):
    SYSTEM_BUSY = -1
    OK = 0
    INVALID_CREDENTIAL = 40001
    INVALID_GRANT_TYPE = 40002
    INVALID_OPENID = 40003
    INVALID_MEDIA_ID = 40007
    INVALID_MESSAGE_TYPE = 40008
    INVALID_APPID = 40013
    INVALID_CHARSET = 40033
    INVALID_TEMPLATE_ID = 40037
    INVALID_MSG_ID = 40059
    INVALID_APPSECRET = 40125
    OPENID_LIST_SIZE = 40130
    IP_NOT_WHITELISTED = 40164
    ACCESS_TOKEN_MISSING = 41001
    APPID_MISSING = 41002
    APPSECRET_MISSING = 41004
    ACCESS_TOKEN_EXPIRED = 42001
    MASSSEND_TOO_FAST = 42010
    REQUIRE_GET = 43001
    REQUIRE_POST = 43002
    REQUIRE_SUBSCRIBE = 43004
    SUBSCRIPTION_REFUSED = 43101
    EMPTY_POST_DATA = 44002
    EMPTY_CONTENT = 44004
    DAILY_QUOTA = 45009
    MINUTE_QUOTA = 45011
    NO_MASSSEND_QUOTA = 45028
    CLIENTMSGID_EXIST = 45065
    CLIENTMSGID_TOO_FAST = 45066
    CLIENTMSGID_TOO_LONG = 45067
    SPEED_OUT_OF_RANGE = 45083
    SPEED_MISSING = 45084
    INVALID_TAG_ID = 45159
    DATA_FORMAT_ERROR = 47001
    ARGUMENT_INVALID = 47003
    API_UNAUTHORIZED = 48001


MESSAGES: dict[int, str] = {
    Code.SYSTEM_BUSY: "system error",
    Code.INVALID_CREDENTIAL: "invalid credential, access_token is invalid or not latest",
    Code.INVALID_GRANT_TYPE: "invalid grant_type",
    Code.INVALID_OPENID: "invalid openid",
    Code.INVALID_MEDIA_ID: "invalid media_id",
    Code.INVALID_MESSAGE_TYPE: "invalid message type",
    Code.INVALID_APPID: "invalid appid",
    Code.INVALID_CHARSET: "invalid charset. please check your request, if include \\uxxxx will create fail!",
    Code.INVALID_TEMPLATE_ID: "invalid template_id",
    Code.INVALID_MSG_ID: "invalid msg id",
    Code.INVALID_APPSECRET: "invalid appsecret",
    Code.OPENID_LIST_SIZE: "invalid openid list size, at least two openid",
    Code.IP_NOT_WHITELISTED: "invalid ip, not in whitelist",
    Code.ACCESS_TOKEN_MISSING: "access_token missing",
    Code.APPID_MISSING: "appid missing",
    Code.APPSECRET_MISSING: "appsecret missing",
    Code.ACCESS_TOKEN_EXPIRED: "access_token expired",
    Code.MASSSEND_TOO_FAST: "masssend fast, retry again",
    Code.REQUIRE_GET: "require GET method",
    Code.REQUIRE_POST: "require POST method",
    Code.REQUIRE_SUBSCRIBE: "require subscribe",
    Code.SUBSCRIPTION_REFUSED: "user refuse to accept the msg",
    Code.EMPTY_POST_DATA: "empty post data",
    Code.EMPTY_CONTENT: "empty content",
    Code.DAILY_QUOTA: "reach max api daily quota limit",
    Code.MINUTE_QUOTA: "api minute-quota reach limit, must slower, retry next minute",
    Code.NO_MASSSEND_QUOTA: "has no masssend quota",
    Code.CLIENTMSGID_EXIST: "clientmsgid exist",
    Code.CLIENTMSGID_TOO_FAST: "same clientmsgid retry too fast",
    Code.CLIENTMSGID_TOO_LONG: "clientmsgid size out of limit",
    Code.SPEED_OUT_OF_RANGE: "the speed out of range",
    Code.SPEED_MISSING: "no speed message",
    Code.INVALID_TAG_ID: "invalid tag id",
    Code.DATA_FORMAT_ERROR: "data format error",
    Code.ARGUMENT_INVALID: "argument invalid!",
    Code.API_UNAUTHORIZED: "api unauthorized",
}


def message_for(errcode: int) -> str:
    return MESSAGES.get(errcode, f"sandbox injected error {errcode}")


class ApiError(Exception):
    """A WeChat-style error: becomes `{"errcode", "errmsg": "... rid: …", **extra}` with HTTP 200."""

    def __init__(self, errcode: int, errmsg: str | None = None, **extra: Any) -> None:
        self.errcode = int(errcode)
        self.errmsg = errmsg if errmsg is not None else message_for(errcode)
        self.extra = extra
        super().__init__(f"{self.errcode} {self.errmsg}")


class AdminError(Exception):
    """A bad admin request: becomes `{"error": message}` with the given HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)
