"""The WeChat Official Account API over httpx: one pooled keep-alive client per container.

Every answer is JSON with HTTP 200; a non-zero `errcode` raises the exception `error_for` picks
(reference §0). The access_token travels in the query string, so URLs are never logged: httpx's
and httpcore's own loggers are held at WARNING, and our lines carry the path only. Busy and
throttling answers are counted as the `WeChatBusy` metric (docs/operations.md).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, TypeGuard

import httpx

from wxreach.observability import (
    WECHAT_BUSY_METRIC,
    count_stack_event,
    logger,
    mask_openid,
    register_secret,
)
from wxreach.wechat.errcodes import TransportError, error_for

# httpx logs "HTTP Request: POST <url with access_token>" at INFO.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

STABLE_TOKEN_PATH = "/cgi-bin/stable_token"  # noqa: S105 (a path, not a password)
TEMPLATE_SEND_PATH = "/cgi-bin/message/template/send"
BIZSEND_PATH = "/cgi-bin/message/subscribe/bizsend"
PRIVATE_TEMPLATES_PATH = "/cgi-bin/template/get_all_private_template"
SUBSCRIPTION_TEMPLATES_PATH = "/wxaapi/newtmpl/gettemplate"

_USER_AGENT = "wxreach/0.1"
# WeChat pushing back (system busy, daily API quota, mass too fast): counted for the busy alarm.
WECHAT_BUSY_ERRCODES = frozenset({-1, 45009, 42010})


def encode_json(body: dict[str, Any]) -> bytes:
    """Raw UTF-8 JSON: WeChat refuses \\uXXXX escapes with 40033 (§0)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class WeChatClient:
    """Thread-safe: one instance serves a whole thread pool through its connection pool."""

    def __init__(
        self,
        base_url: str,
        *,
        http: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        max_connections: int = 64,
    ) -> None:
        self._base = base_url.rstrip("/")
        # Passed on every request, so an injected client gets the same budgets.
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self._owns_http = http is None
        if http is None:
            limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
            if transport is None:
                # retries=1 only repeats failed connects, which never reached WeChat.
                transport = httpx.HTTPTransport(limits=limits, retries=1)
            http = httpx.Client(
                transport=transport,
                limits=limits,
                timeout=self._timeout,
                headers={"User-Agent": _USER_AGENT},
                follow_redirects=False,
            )
        self._http = http

    # -- the generic call -------------------------------------------------------------------
    def call(
        self,
        method: str,
        path: str,
        *,
        access_token: str | None,
        json_body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The answer's JSON object when errcode is absent or 0; otherwise raises (errcodes.py)."""
        query: dict[str, Any] = dict(params or {})
        if access_token is not None:
            query["access_token"] = access_token
        content = encode_json(json_body) if json_body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        fields: dict[str, Any] = {"method": method, "path": path}
        touser = (json_body or {}).get("touser")
        if isinstance(touser, str) and touser:
            fields["openid"] = mask_openid(touser)
        started = time.monotonic()
        try:
            response = self._http.request(
                method,
                self._base + path,
                params=query,
                content=content,
                headers=headers,
                timeout=self._timeout,
            )
        except httpx.RequestError as exc:
            failure = _transport_error(exc, path)
            logger.warning(
                "wechat call failed",
                **fields,
                reason=failure.reason,
                error=type(exc).__name__,
                elapsed_ms=_ms(started),
            )
            raise failure from exc
        body = self._parse(response, path, fields, started)
        errcode = body.get("errcode", 0)
        if errcode != 0:
            errmsg = str(body.get("errmsg", ""))
            error = error_for(errcode, errmsg, path=path)
            logger.info(
                "wechat call refused",
                **fields,
                errcode=errcode,
                reason=error.reason,
                rid=error.rid,
                elapsed_ms=_ms(started),
            )
            raise error
        logger.debug("wechat call ok", **fields, errcode=0, elapsed_ms=_ms(started))
        return body

    def _parse(
        self, response: httpx.Response, path: str, fields: dict[str, Any], started: float
    ) -> dict[str, Any]:
        problem: str | None = None
        body: Any = None
        if response.status_code != 200:
            problem = f"HTTP {response.status_code}"
        else:
            try:
                # Python's json keeps big integers exact: msgids exceed 2^53 (§0).
                body = json.loads(response.content)
            except ValueError:
                problem = "answer is not JSON"
            else:
                if not isinstance(body, dict):
                    problem = "answer is not a JSON object"
                elif not _is_int(body.get("errcode", 0)):
                    problem = "errcode is not an integer"
        if problem is None:
            # Every answer passes here (call() and the mass calls), so each busy one counts once.
            errcode = body.get("errcode", 0)
            if errcode in WECHAT_BUSY_ERRCODES:
                count_stack_event(WECHAT_BUSY_METRIC, errcode=errcode, path=path)
            return body  # type: ignore[no-any-return]
        error = TransportError(
            problem,
            path=path,
            kind="http" if response.status_code != 200 else "invalid_response",
            request_sent=True,
            http_status=response.status_code,
        )
        logger.warning(
            "wechat call failed",
            **fields,
            reason=error.reason,
            http_status=response.status_code,
            elapsed_ms=_ms(started),
        )
        raise error

    # -- endpoints --------------------------------------------------------------------------
    def stable_token(self, appid: str, secret: str, *, force_refresh: bool = False) -> tuple[str, int]:
        """(access_token, expires_in) from POST /cgi-bin/stable_token (§1.2). Never /cgi-bin/token:
        each classic call invalidates the token other instances hold."""
        register_secret(secret)
        body = self.call(
            "POST",
            STABLE_TOKEN_PATH,
            access_token=None,
            json_body={
                "grant_type": "client_credential",
                "appid": appid,
                "secret": secret,
                "force_refresh": force_refresh,
            },
        )
        token, expires_in = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not token or not _is_int(expires_in) or expires_in <= 0:
            raise TransportError(
                "stable_token answer without access_token/expires_in",
                path=STABLE_TOKEN_PATH,
                kind="invalid_response",
                request_sent=True,
            )
        register_secret(token)
        return token, expires_in

    def send_template(self, access_token: str, payload: dict[str, Any]) -> str:
        """The msgid (as a string: it may exceed 2^53) of a template message (§2.1)."""
        body = self.call("POST", TEMPLATE_SEND_PATH, access_token=access_token, json_body=payload)
        msgid = body.get("msgid")
        if msgid is None or isinstance(msgid, bool | float):
            # Sent, but unidentifiable; a resend with the same client_msg_id is deduped by WeChat.
            raise TransportError(
                "template send answer without msgid",
                path=TEMPLATE_SEND_PATH,
                kind="invalid_response",
                request_sent=True,
            )
        return str(msgid)

    def bizsend(self, access_token: str, payload: dict[str, Any]) -> str | None:
        """The msgid of a subscription notification when WeChat returns one (§3.2: UNCONFIRMED)."""
        body = self.call("POST", BIZSEND_PATH, access_token=access_token, json_body=payload)
        msgid = body.get("msgid")
        return None if msgid is None or isinstance(msgid, bool | float) else str(msgid)

    def get_all_private_template(self, access_token: str) -> list[dict[str, Any]]:
        body = self.call("GET", PRIVATE_TEMPLATES_PATH, access_token=access_token)
        return list(body.get("template_list") or [])

    def get_subscription_templates(self, access_token: str) -> list[dict[str, Any]]:
        body = self.call("GET", SUBSCRIPTION_TEMPLATES_PATH, access_token=access_token)
        return list(body.get("data") or [])

    # -- mass (§4.2) ---------------------------------------------------------------------------
    def mass_send(self, access_token: str, payload: dict[str, Any]) -> tuple[str, str | None]:
        """(msg_id, msg_data_id) of a job to `touser` (2..10 000 openids). 45065 raises
        ClientMsgIdExists carrying the earlier job's msg_id."""
        return _mass_job(self._mass_call(MASS_SEND_PATH, access_token, payload), MASS_SEND_PATH)

    def mass_sendall(self, access_token: str, payload: dict[str, Any]) -> tuple[str, str | None]:
        """(msg_id, msg_data_id) of a job to everyone or a tag (`filter`); same errors as mass_send."""
        return _mass_job(self._mass_call(MASS_SENDALL_PATH, access_token, payload), MASS_SENDALL_PATH)

    def mass_preview(self, access_token: str, payload: dict[str, Any]) -> str | None:
        """The preview's msg_id (`touser` openid or `towxname`; towxname wins if both)."""
        body = self.call("POST", MASS_PREVIEW_PATH, access_token=access_token, json_body=payload)
        return _id_text(body.get("msg_id"))

    def mass_delete(self, access_token: str, msg_id: str, article_idx: int = 0) -> None:
        """Deletes article `article_idx` (1-based; 0 = all) of a sent mpnews/video job."""
        self.call(
            "POST",
            MASS_DELETE_PATH,
            access_token=access_token,
            json_body={"msg_id": _id_value(msg_id), "article_idx": article_idx},
        )

    def mass_get(self, access_token: str, msg_id: str) -> str:
        """SEND_SUCCESS / SENDING / SEND_FAIL / DELETE (or whatever new status WeChat names)."""
        body = self.call(
            "POST", MASS_GET_PATH, access_token=access_token, json_body={"msg_id": _id_value(msg_id)}
        )
        return str(body.get("msg_status") or "UNKNOWN")

    def _mass_call(self, path: str, access_token: str, payload: dict[str, Any]) -> dict[str, Any]:
        """call(), except that a 45065 keeps its answer's msg_id (call() raises without the body)."""
        from wxreach.wechat.errcodes import ClientMsgIdExists

        fields: dict[str, Any] = {"method": "POST", "path": path}
        started = time.monotonic()
        try:
            response = self._http.request(
                "POST",
                self._base + path,
                params={"access_token": access_token},
                content=encode_json(payload),
                headers={"Content-Type": "application/json"},
                timeout=self._timeout,
            )
        except httpx.RequestError as exc:
            failure = _transport_error(exc, path)
            logger.warning(
                "wechat call failed",
                **fields,
                reason=failure.reason,
                error=type(exc).__name__,
                elapsed_ms=_ms(started),
            )
            raise failure from exc
        body = self._parse(response, path, fields, started)
        errcode = body.get("errcode", 0)
        if errcode == 0:
            logger.debug("wechat call ok", **fields, errcode=0, elapsed_ms=_ms(started))
            return body
        error = error_for(errcode, str(body.get("errmsg", "")), path=path)
        if isinstance(error, ClientMsgIdExists):
            error.msg_id = _id_text(body.get("msg_id"))
        logger.info(
            "wechat call refused",
            **fields,
            errcode=errcode,
            reason=error.reason,
            rid=error.rid,
            elapsed_ms=_ms(started),
        )
        raise error

    # -- users and tags -----------------------------------------------------------------------
    def user_get(self, access_token: str, next_openid: str = "") -> tuple[int, list[str], str]:
        """(total followers, up to 10 000 openids after `next_openid`, the cursor of the next
        page). The page after the last one has no openids and next_openid ""."""
        params = {"next_openid": next_openid} if next_openid else None
        body = self.call("GET", USER_GET_PATH, access_token=access_token, params=params)
        openids, cursor = _openid_page(body, USER_GET_PATH)
        total = body.get("total")
        if not _is_int(total):
            raise TransportError(
                "user/get answer without total",
                path=USER_GET_PATH,
                kind="invalid_response",
                request_sent=True,
            )
        return total, openids, cursor

    def tags_get(self, access_token: str) -> list[dict[str, Any]]:
        """The account's tags: [{id, name, count}]."""
        body = self.call("GET", TAGS_GET_PATH, access_token=access_token)
        return [tag for tag in body.get("tags") or [] if isinstance(tag, dict)]

    def user_tag_get(
        self, access_token: str, tag_id: int, next_openid: str = ""
    ) -> tuple[int, list[str], str]:
        """(count on this page, up to 10 000 member openids after `next_openid`, next cursor)."""
        body = self.call(
            "POST",
            USER_TAG_GET_PATH,
            access_token=access_token,
            json_body={"tagid": tag_id, "next_openid": next_openid},
        )
        openids, cursor = _openid_page(body, USER_TAG_GET_PATH)
        return len(openids), openids, cursor

    def close(self) -> None:
        """Closes the pool this client created; an injected httpx.Client stays its owner's."""
        if self._owns_http:
            self._http.close()


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def _transport_error(exc: httpx.RequestError, path: str) -> TransportError:
    # Only a failed connect or a pool wait proves the request never reached WeChat.
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        kind, sent = "timeout", False
    elif isinstance(exc, httpx.ConnectError):
        kind, sent = "connect", False
    elif isinstance(exc, httpx.TimeoutException):
        kind, sent = "timeout", True
    else:
        kind, sent = "network", True
    return TransportError(f"{type(exc).__name__} calling WeChat", path=path, kind=kind, request_sent=sent)


# -- mass (§4.2) -------------------------------------------------------------------------------
MASS_SEND_PATH = "/cgi-bin/message/mass/send"
MASS_SENDALL_PATH = "/cgi-bin/message/mass/sendall"
MASS_PREVIEW_PATH = "/cgi-bin/message/mass/preview"
MASS_DELETE_PATH = "/cgi-bin/message/mass/delete"
MASS_GET_PATH = "/cgi-bin/message/mass/get"


def _id_text(value: Any) -> str | None:
    """A WeChat id as text (ints may exceed 2^53; floats and booleans are no ids)."""
    if _is_int(value) or (isinstance(value, str) and value):
        return str(value)
    return None


def _id_value(msg_id: str) -> int | str:
    # WeChat documents msg_id as a number; keep anything else as given.
    return int(msg_id) if msg_id.isascii() and msg_id.isdigit() else msg_id


def _mass_job(body: dict[str, Any], path: str) -> tuple[str, str | None]:
    msg_id = _id_text(body.get("msg_id"))
    if msg_id is None:
        # Accepted but unidentifiable: a resend with the same clientmsgid answers 45065 + msg_id.
        raise TransportError(
            "mass answer without msg_id", path=path, kind="invalid_response", request_sent=True
        )
    return msg_id, _id_text(body.get("msg_data_id"))


# -- users and tags ----------------------------------------------------------------------------
USER_GET_PATH = "/cgi-bin/user/get"
TAGS_GET_PATH = "/cgi-bin/tags/get"
USER_TAG_GET_PATH = "/cgi-bin/user/tag/get"


def _openid_page(body: dict[str, Any], path: str) -> tuple[list[str], str]:
    """`data.openid` (absent on an empty page) and `next_openid` of a follower or tag listing."""
    data = body.get("data") or {}
    openids = data.get("openid") if isinstance(data, dict) else None
    cursor = body.get("next_openid") or ""
    if openids is None:
        openids = []
    if not isinstance(openids, list) or not all(isinstance(o, str) and o for o in openids):
        raise TransportError(
            "openid list is not a list of openids", path=path, kind="invalid_response", request_sent=True
        )
    if not isinstance(cursor, str):
        raise TransportError(
            "next_openid is not a string", path=path, kind="invalid_response", request_sent=True
        )
    return openids, cursor
