"""Access tokens (§1): classic `GET /cgi-bin/token` and `POST /cgi-bin/stable_token`."""

from __future__ import annotations

from typing import Any

from local.sandbox import limits
from local.sandbox.clock import china_day
from local.sandbox.endpoints.common import Body, Call, Endpoint
from local.sandbox.errors import ApiError, Code
from local.sandbox.model import Account


def _credentials(call: Call, grant_type: Any, appid: Any, secret: Any) -> Account:
    if grant_type != "client_credential":
        raise ApiError(Code.INVALID_GRANT_TYPE)
    if not appid:
        raise ApiError(Code.APPID_MISSING)
    account = call.state.accounts.get(appid) if isinstance(appid, str) else None
    if account is None:
        raise ApiError(Code.INVALID_APPID)
    if not secret:
        raise ApiError(Code.APPSECRET_MISSING)
    if secret != account.secret:
        raise ApiError(Code.INVALID_APPSECRET)
    ip = call.request.client_ip
    if account.ip_whitelist is not None and ip not in account.ip_whitelist:
        raise ApiError(Code.IP_NOT_WHITELISTED, f"invalid ip {ip} ipv6 ::ffff:{ip}, not in whitelist")
    return account


def get_token(call: Call) -> dict[str, Any]:
    q = call.query
    account = _credentials(call, q.get("grant_type"), q.get("appid"), q.get("secret"))
    account.prune_windows(call.now)
    day_key = ("token", china_day(call.now))
    if account.daily[day_key] >= account.token_daily_limit:
        raise ApiError(Code.DAILY_QUOTA)
    account.daily[day_key] += 1
    # every call issues a new token; the previous one keeps working for 5 more minutes (§1.1)
    previous = call.state.tokens.get(account.classic_token or "")
    if previous is not None:
        previous.supersede(call.now, limits.TOKEN_OVERLAP_S)
    token = call.state.new_token(account, "classic", call.now)
    account.classic_token = token.value
    return {"access_token": token.value, "expires_in": account.token_ttl_s}


def _force_refresh_allowed(account: Account, now: float) -> bool:
    today = china_day(now)
    used_today = sum(1 for t in account.stable_force_times if china_day(t) == today)
    last = account.stable_force_times[-1] if account.stable_force_times else None
    return used_today < limits.STABLE_FORCE_REFRESH_PER_DAY and (
        last is None or now - last >= limits.STABLE_FORCE_REFRESH_MIN_INTERVAL_S
    )


def stable_token(call: Call) -> dict[str, Any]:
    body = call.body
    account = _credentials(call, body.get("grant_type"), body.get("appid"), body.get("secret"))
    now = call.now
    account.prune_windows(now)
    current = call.state.tokens.get(account.stable_token or "")
    if body.get("force_refresh") is True and _force_refresh_allowed(account, now):
        account.stable_force_times.append(now)
        if current is not None:
            current.dies_at = now  # force_refresh invalidates the previous token at once (§1.2)
        current = None
    # over the force-refresh limits the call simply does not refresh (§1.2) and falls through here
    if (
        current is not None
        and current.failure(now) is None
        and current.expires_at - now > limits.STABLE_ROTATE_BEFORE_EXPIRY_S
    ):
        return {"access_token": current.value, "expires_in": int(current.expires_at - now)}
    if current is not None:
        current.supersede(now, limits.TOKEN_OVERLAP_S)
    token = call.state.new_token(account, "stable", now)
    account.stable_token = token.value
    return {"access_token": token.value, "expires_in": account.token_ttl_s}


ENDPOINTS = [
    Endpoint("GET", "/cgi-bin/token", get_token, auth=False, body=Body.NONE),
    Endpoint("POST", "/cgi-bin/stable_token", stable_token, auth=False),
]
