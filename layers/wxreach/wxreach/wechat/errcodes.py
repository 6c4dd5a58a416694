"""WeChat error codes → one exception tree the senders decide on (reference §0, §1.3, §2.1, §3.2, §6).

- `RetryLater`: try the same call again later (busy, rate limits, no usable answer, unknown codes).
- `TokenInvalid`: the access token is dead; get a fresh one and retry once.
- `RecipientRejected`: this recipient cannot get this message; fail it, keep sending to others.
- `SendRejected`: the request itself is wrong (template, body, permission); fail it, do not retry.
- `AccountStopped`: the whole account cannot send right now (quota, IP, ban, credentials).

`reason` is a stable machine-readable name the ledger stores; unknown codes give `wechat_<code>`.
"""

from __future__ import annotations

import re
from typing import ClassVar

from wxreach.observability import scrub

# Sentinels for failures that have no WeChat errcode (WeChat's own codes are -1 and >= 0).
TRANSPORT_ERRCODE = -2  # no usable answer: connect/read failure, timeout, HTTP non-200, non-JSON
TOKEN_UNAVAILABLE_ERRCODE = -3  # no valid access token could be obtained right now

TOKEN_PATHS = frozenset({"/cgi-bin/stable_token", "/cgi-bin/token"})

_RID = re.compile(r"\brid:\s*([0-9A-Za-z_-]+)")
_KEYWORD = re.compile(r"\bdata\.([A-Za-z_]+[0-9]*)\.value\b")


class WeChatApiError(Exception):
    """A WeChat answer with a non-zero errcode (or a sentinel for no usable answer)."""

    REASONS: ClassVar[dict[int, str]] = {}

    def __init__(
        self, errcode: int, errmsg: str, *, path: str, rid: str | None = None, reason: str | None = None
    ) -> None:
        super().__init__(errcode, errmsg)
        self.errcode = errcode
        self.errmsg = errmsg
        self.path = path
        self.rid = rid if rid is not None else parse_rid(errmsg)
        self._reason = reason

    @property
    def reason(self) -> str:
        return self._reason or self.REASONS.get(self.errcode) or f"wechat_{self.errcode}"

    def __str__(self) -> str:
        # errmsg is WeChat's text; scrub it in case it ever echoes a token or an openid.
        return f"WeChat {self.path} errcode {self.errcode} ({self.reason}): {scrub(self.errmsg)}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(errcode={self.errcode}, reason={self.reason!r}, path={self.path!r})"


class RetryLater(WeChatApiError):
    REASONS: ClassVar[dict[int, str]] = {
        -1: "system_busy",
        45011: "minute_quota",
        42010: "mass_too_fast",
        45066: "clientmsgid_in_progress",
    }


class TransportError(RetryLater):
    """No usable WeChat answer. `request_sent` is False only when the request surely never left
    (connect failure, pool timeout): bizsend, which has no idempotency key, must not resend otherwise."""

    KINDS: ClassVar[dict[str, str]] = {
        "connect": "wechat_unreachable",
        "timeout": "wechat_timeout",
        "network": "wechat_connection_lost",
        "http": "wechat_http_error",
        "invalid_response": "wechat_invalid_response",
    }

    def __init__(
        self,
        errmsg: str,
        *,
        path: str,
        kind: str,
        request_sent: bool,
        http_status: int | None = None,
    ) -> None:
        reason = self.KINDS.get(kind, "wechat_transport_error")
        super().__init__(TRANSPORT_ERRCODE, errmsg, path=path, reason=reason)
        self.kind = kind
        self.request_sent = request_sent
        self.http_status = http_status


class UnknownApiError(RetryLater):
    """A code this module does not know: kept raw, retried a bounded number of times by senders."""

    REASONS: ClassVar[dict[int, str]] = {}


class TokenUnavailable(RetryLater):
    """No access token right now (lease held too long, force-refresh limits); try again later."""

    def __init__(self, message: str, *, appid: str, reason: str = "token_unavailable") -> None:
        super().__init__(TOKEN_UNAVAILABLE_ERRCODE, message, path="token_broker", reason=reason)
        self.appid = appid


class TokenInvalid(WeChatApiError):
    REASONS: ClassVar[dict[int, str]] = {
        40001: "token_invalid",
        40014: "token_malformed",
        42001: "token_expired",
    }


class RecipientRejected(WeChatApiError):
    REASONS: ClassVar[dict[int, str]] = {
        43004: "not_following",
        43101: "no_subscription_credit",
        40003: "invalid_openid",
        47003: "invalid_keyword_value",
        43117: "user_frequency_limit",
        50002: "user_restricted",  # §6: the user is restricted; retrying will not help
    }

    @property
    def keyword(self) -> str | None:
        """The keyword WeChat names in a 47003 ("argument invalid! data.thing3.value invalid")."""
        if self.errcode != 47003:
            return None
        match = _KEYWORD.search(self.errmsg)
        return match.group(1) if match else None


class SendRejected(WeChatApiError):
    REASONS: ClassVar[dict[int, str]] = {
        40037: "invalid_template_id",
        40036: "invalid_template_id_size",
        48001: "api_unauthorized",
        45028: "no_mass_quota",
        40033: "unicode_escapes_in_body",
        47001: "malformed_body",
        44002: "empty_body",
        40130: "invalid_openid_list",
        40007: "invalid_media_id",
        40008: "invalid_message_type",
    }


class AccountStopped(WeChatApiError):
    REASONS: ClassVar[dict[int, str]] = {
        45009: "daily_quota",
        40164: "ip_not_whitelisted",
        48004: "api_banned",
        89503: "risky_ip",
        # Credentials refused by the token endpoints (§1.3): no token, so nothing can be sent.
        40013: "invalid_appid",
        40125: "invalid_appsecret",
        40243: "appsecret_frozen",
    }


_CLASSES: tuple[type[WeChatApiError], ...] = (
    RetryLater,
    TokenInvalid,
    RecipientRejected,
    SendRejected,
    AccountStopped,
)
_BY_CODE: dict[int, type[WeChatApiError]] = {code: cls for cls in _CLASSES for code in cls.REASONS}


def parse_rid(errmsg: str) -> str | None:
    match = _RID.search(errmsg or "")
    return match.group(1) if match else None


def error_for(errcode: int, errmsg: str, *, path: str) -> WeChatApiError:
    """The exception for a non-zero errcode answered on `path` (path only, never the query)."""
    if errcode == 40001 and path in TOKEN_PATHS:
        # On the token endpoints 40001 means a wrong AppSecret (§1.3), not a stale token.
        return AccountStopped(errcode, errmsg, path=path, reason="invalid_appsecret")
    cls = _BY_CODE.get(errcode, UnknownApiError)
    return cls(errcode, errmsg, path=path)


# -- mass (§4.2) -------------------------------------------------------------------------------
# Already classified above: 45066 / 42010 / 45011 retry later; 45028, 40130, 40007, 40008, 48001
# are SendRejected; 45009 stops the account (for mass: the 100 jobs/day API cap).
class ClientMsgIdExists(WeChatApiError):
    """45065: a job with this clientmsgid was accepted within the last 24 h. Not a failure: the
    answer carries that job's `msg_id` (WeChatClient's mass calls copy it here)."""

    REASONS: ClassVar[dict[int, str]] = {45065: "clientmsgid_exists"}
    msg_id: str | None = None


class MassRejected(SendRejected):
    """Mass requests WeChat refuses however often they are sent."""

    REASONS: ClassVar[dict[int, str]] = {
        45067: "clientmsgid_too_long",
        40059: "invalid_msg_id",
        45159: "invalid_tag_id",
        44004: "empty_content",
    }


_BY_CODE.update({code: cls for cls in (ClientMsgIdExists, MassRejected) for code in cls.REASONS})
