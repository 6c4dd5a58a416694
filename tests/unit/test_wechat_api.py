"""WeChatClient over httpx.MockTransport: wire format, the error model, transport failures, logs."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from wxreach.observability import (
    STACK_METRICS_SERVICE,
    WECHAT_BUSY_METRIC,
    forget_secrets,
    logger,
    mask_openid,
    register_secret,
)
from wxreach.wechat import api, errcodes
from wxreach.wechat.api import WeChatClient
from wxreach.wechat.errcodes import (
    AccountStopped,
    RecipientRejected,
    RetryLater,
    SendRejected,
    TokenInvalid,
    TransportError,
    UnknownApiError,
    WeChatApiError,
    error_for,
)

BASE = "https://api.weixin.test"
ACCESS_TOKEN = "ACCESS_TOKEN_8c1f0e6b2a9d4c7e5f3b1a0d9c8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e"
OPENID = "oWx1a2b3c4d5e6f7g8h9i0jKlMnO"
SECRET = "app-secret-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
BIG_MSGID = 1700827132819554304  # above 2^53: a float would round it

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(autouse=True)
def _no_registered_secrets() -> Iterator[None]:
    # A registered secret is scrubbed by the formatter and could hide a leak from these tests.
    forget_secrets()
    yield
    forget_secrets()


class Recorder:
    def __init__(self, answer: Handler | dict[str, Any] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self._answer = answer
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
        if callable(self._answer):
            return self._answer(request)
        return httpx.Response(200, json=self._answer if self._answer is not None else {"errcode": 0})


def client_for(handler: Handler, **kwargs: Any) -> WeChatClient:
    return WeChatClient(BASE, transport=httpx.MockTransport(handler), **kwargs)


def answering(status: int, content: bytes, content_type: str = "application/json") -> Handler:
    return lambda request: httpx.Response(status, content=content, headers={"Content-Type": content_type})


def template_payload() -> dict[str, Any]:
    return {
        "touser": OPENID,
        "template_id": "TPL_ORDER_PAID",
        "client_msg_id": "order-123-paid",
        "data": {"thing1": {"value": "咖啡豆 €5"}, "time3": {"value": "2024年6月1日 10:30"}},
    }


# -- wire format ------------------------------------------------------------------------------
def test_template_send_posts_raw_utf8_json_with_the_token_in_the_query() -> None:
    recorder = Recorder({"errcode": 0, "errmsg": "ok", "msgid": 200228332})
    msgid = client_for(recorder).send_template(ACCESS_TOKEN, template_payload())
    (request,) = recorder.requests
    assert msgid == "200228332"
    assert request.method == "POST"
    assert request.url.path == "/cgi-bin/message/template/send"
    assert request.url.params["access_token"] == ACCESS_TOKEN
    assert request.headers["content-type"] == "application/json"
    expected = json.dumps(template_payload(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert request.content == expected
    assert b"\\u" not in request.content  # 40033 otherwise (§0)
    assert "咖啡豆 €5".encode() in request.content


def test_big_msgid_stays_exact() -> None:
    body = b'{"errcode":0,"errmsg":"ok","msgid":1700827132819554304}'
    client = client_for(answering(200, body))
    assert client.send_template(ACCESS_TOKEN, template_payload()) == str(BIG_MSGID)
    assert client.bizsend(ACCESS_TOKEN, {"touser": OPENID}) == str(BIG_MSGID)


def test_bizsend_without_msgid_is_none_and_template_send_without_msgid_is_retryable() -> None:
    client = client_for(Recorder({"errcode": 0, "errmsg": "ok"}))
    assert client.bizsend(ACCESS_TOKEN, {"touser": OPENID, "template_id": "SUB_ONCE"}) is None
    with pytest.raises(TransportError) as raised:
        client.send_template(ACCESS_TOKEN, template_payload())
    assert raised.value.request_sent is True


def test_stable_token_posts_credentials_and_returns_token_and_expires_in() -> None:
    recorder = Recorder({"access_token": ACCESS_TOKEN, "expires_in": 5400})
    client = client_for(recorder)
    assert client.stable_token("wxapp0001", SECRET) == (ACCESS_TOKEN, 5400)
    assert client.stable_token("wxapp0001", SECRET, force_refresh=True) == (ACCESS_TOKEN, 5400)
    first, forced = recorder.requests
    assert first.url.path == forced.url.path == "/cgi-bin/stable_token"
    assert first.method == "POST"
    assert "access_token" not in first.url.params
    assert json.loads(first.content) == {
        "grant_type": "client_credential",
        "appid": "wxapp0001",
        "secret": SECRET,
        "force_refresh": False,
    }
    assert json.loads(forced.content)["force_refresh"] is True


@pytest.mark.parametrize("answer", [{"expires_in": 7200}, {"access_token": "", "expires_in": 7200}])
def test_stable_token_without_a_token_is_retryable(answer: dict[str, Any]) -> None:
    with pytest.raises(TransportError):
        client_for(Recorder(answer)).stable_token("wxapp0001", SECRET)


def test_template_listings() -> None:
    templates = [{"template_id": "T1", "title": "订单支付成功", "content": "{{thing1.DATA}}"}]
    subscription = [{"priTmplId": "S1", "title": "发货通知", "type": 2}]

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET"
        assert request.url.params["access_token"] == ACCESS_TOKEN
        if request.url.path == "/cgi-bin/template/get_all_private_template":
            return httpx.Response(200, json={"template_list": templates})
        assert request.url.path == "/wxaapi/newtmpl/gettemplate"
        return httpx.Response(200, json={"errcode": 0, "errmsg": "ok", "data": subscription})

    client = client_for(handler)
    assert client.get_all_private_template(ACCESS_TOKEN) == templates
    assert client.get_subscription_templates(ACCESS_TOKEN) == subscription


def test_generic_call_passes_params_and_returns_the_object() -> None:
    recorder = Recorder({"errcode": 0, "tags": [{"id": 100}]})
    body = client_for(recorder).call("GET", "/cgi-bin/tags/get", access_token=ACCESS_TOKEN, params={"x": "1"})
    assert body["tags"] == [{"id": 100}]
    assert dict(recorder.requests[0].url.params) == {"x": "1", "access_token": ACCESS_TOKEN}
    assert recorder.requests[0].content == b""


def test_timeouts_from_the_constructor_are_applied() -> None:
    recorder = Recorder()
    client_for(recorder, connect_timeout=1.5, read_timeout=2.5).call("GET", "/x", access_token=None)
    injected = Recorder()
    with httpx.Client(transport=httpx.MockTransport(injected)) as http:
        WeChatClient(BASE, http=http, connect_timeout=0.7, read_timeout=4.0).call(
            "GET", "/x", access_token=None
        )
    assert recorder.requests[0].extensions["timeout"] == {
        "connect": 1.5,
        "read": 2.5,
        "write": 2.5,
        "pool": 2.5,
    }
    assert injected.requests[0].extensions["timeout"] == {
        "connect": 0.7,
        "read": 4.0,
        "write": 4.0,
        "pool": 4.0,
    }


def test_own_pool_is_sized_from_max_connections() -> None:
    client = WeChatClient(BASE, max_connections=7)
    pool = client._http._transport._pool  # type: ignore[attr-defined]
    assert (pool._max_connections, pool._max_keepalive_connections) == (7, 7)
    client.close()


def test_one_client_serves_a_thread_pool() -> None:
    recorder = Recorder(lambda request: httpx.Response(200, json={"errcode": 0, "msgid": BIG_MSGID}))
    client = client_for(recorder)
    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda _: client.send_template(ACCESS_TOKEN, template_payload()), range(64)))
    assert ids == [str(BIG_MSGID)] * 64
    assert len(recorder.requests) == 64


# -- the error model --------------------------------------------------------------------------
LISTED: list[tuple[int, type[WeChatApiError], str]] = [
    (-1, RetryLater, "system_busy"),
    (45011, RetryLater, "minute_quota"),
    (42010, RetryLater, "mass_too_fast"),
    (45066, RetryLater, "clientmsgid_in_progress"),
    (40001, TokenInvalid, "token_invalid"),
    (40014, TokenInvalid, "token_malformed"),
    (42001, TokenInvalid, "token_expired"),
    (43004, RecipientRejected, "not_following"),
    (43101, RecipientRejected, "no_subscription_credit"),
    (40003, RecipientRejected, "invalid_openid"),
    (47003, RecipientRejected, "invalid_keyword_value"),
    (43117, RecipientRejected, "user_frequency_limit"),
    (40037, SendRejected, "invalid_template_id"),
    (40036, SendRejected, "invalid_template_id_size"),
    (48001, SendRejected, "api_unauthorized"),
    (45028, SendRejected, "no_mass_quota"),
    (40033, SendRejected, "unicode_escapes_in_body"),
    (47001, SendRejected, "malformed_body"),
    (44002, SendRejected, "empty_body"),
    (40130, SendRejected, "invalid_openid_list"),
    (40007, SendRejected, "invalid_media_id"),
    (40008, SendRejected, "invalid_message_type"),
    (45009, AccountStopped, "daily_quota"),
    (40164, AccountStopped, "ip_not_whitelisted"),
    (48004, AccountStopped, "api_banned"),
    (89503, AccountStopped, "risky_ip"),
]
FAMILIES = (RetryLater, TokenInvalid, RecipientRejected, SendRejected, AccountStopped)


@pytest.mark.parametrize(("errcode", "family", "reason"), LISTED)
def test_every_listed_errcode_raises_its_family_with_reason_and_rid(
    errcode: int, family: type[WeChatApiError], reason: str
) -> None:
    answer = {"errcode": errcode, "errmsg": "something went wrong rid: 6659d3a1-2b3c4d5e-6f708192"}
    client = client_for(Recorder(answer))
    with pytest.raises(WeChatApiError) as raised:
        client.send_template(ACCESS_TOKEN, template_payload())
    error = raised.value
    assert type(error) is family
    assert [f for f in FAMILIES if isinstance(error, f)] == [family]  # exactly one decision
    assert (error.errcode, error.reason, error.path) == (errcode, reason, "/cgi-bin/message/template/send")
    assert error.rid == "6659d3a1-2b3c4d5e-6f708192"
    assert error.errmsg == answer["errmsg"]


def test_unknown_errcode_is_kept_raw_and_retryable() -> None:
    error = error_for(61234, "brand new failure rid: abc", path="/cgi-bin/message/template/send")
    assert isinstance(error, UnknownApiError)
    assert isinstance(error, RetryLater)
    assert (error.errcode, error.reason, error.rid) == (61234, "wechat_61234", "abc")


def test_47003_names_the_keyword() -> None:
    invalid = error_for(47003, "argument invalid! data.thing3.value invalid rid: r1", path="/p")
    empty = error_for(47003, "argument invalid! data.character_string12.value is empty", path="/p")
    assert isinstance(invalid, RecipientRejected) and isinstance(empty, RecipientRejected)
    assert invalid.keyword == "thing3"
    assert empty.keyword == "character_string12"
    assert empty.rid is None
    unnamed = error_for(47003, "argument invalid!", path="/p")
    other = error_for(43004, "require subscribe data.thing1.value", path="/p")
    assert isinstance(unnamed, RecipientRejected) and isinstance(other, RecipientRejected)
    assert unnamed.keyword is None
    assert other.keyword is None


def test_40001_from_the_token_endpoint_is_a_wrong_appsecret_not_a_stale_token() -> None:
    client = client_for(Recorder({"errcode": 40001, "errmsg": "invalid credential rid: x"}))
    with pytest.raises(AccountStopped) as raised:
        client.stable_token("wxapp0001", SECRET)
    assert raised.value.reason == "invalid_appsecret"


@pytest.mark.parametrize(("errcode", "reason"), [(40125, "invalid_appsecret"), (40013, "invalid_appid")])
def test_refused_credentials_stop_the_account(errcode: int, reason: str) -> None:
    error = error_for(errcode, "invalid appsecret", path="/cgi-bin/stable_token")
    assert isinstance(error, AccountStopped)
    assert error.reason == reason


def test_error_text_never_carries_a_token_or_an_openid() -> None:
    register_secret(ACCESS_TOKEN)
    error = error_for(40003, f"invalid openid {OPENID} with token {ACCESS_TOKEN} rid: r", path="/p")
    text = f"{error} {error!r}"
    assert OPENID not in text
    assert ACCESS_TOKEN not in text
    assert mask_openid(OPENID) in str(error)


# -- no usable answer -------------------------------------------------------------------------
def raising(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("handler", "kind", "sent", "reason"),
    [
        (raising(httpx.ConnectError("refused")), "connect", False, "wechat_unreachable"),
        (raising(httpx.ConnectTimeout("slow connect")), "timeout", False, "wechat_timeout"),
        (raising(httpx.PoolTimeout("pool full")), "timeout", False, "wechat_timeout"),
        (raising(httpx.ReadTimeout("slow answer")), "timeout", True, "wechat_timeout"),
        (raising(httpx.RemoteProtocolError("closed")), "network", True, "wechat_connection_lost"),
        (answering(502, b"<html>bad gateway</html>", "text/html"), "http", True, "wechat_http_error"),
        (answering(503, b'{"errcode":0}'), "http", True, "wechat_http_error"),
        (
            answering(200, b"<html>not json</html>", "text/html"),
            "invalid_response",
            True,
            "wechat_invalid_response",
        ),
        (answering(200, b"[1, 2]"), "invalid_response", True, "wechat_invalid_response"),
        (answering(200, b'{"errcode":"40001"}'), "invalid_response", True, "wechat_invalid_response"),
        (answering(200, b"\xff\xfe"), "invalid_response", True, "wechat_invalid_response"),
    ],
)
def test_no_usable_answer_is_retry_later(handler: Handler, kind: str, sent: bool, reason: str) -> None:
    with pytest.raises(TransportError) as raised:
        client_for(handler).bizsend(ACCESS_TOKEN, {"touser": OPENID})
    error = raised.value
    assert isinstance(error, RetryLater)
    assert error.errcode == errcodes.TRANSPORT_ERRCODE
    assert (error.kind, error.request_sent, error.reason) == (kind, sent, reason)
    assert ACCESS_TOKEN not in str(error)


# -- logs -------------------------------------------------------------------------------------
@pytest.fixture
def raw_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record at DEBUG, before any formatter masks it."""
    previous = logger.log_level
    logger.setLevel("DEBUG")
    caplog.set_level(logging.DEBUG)
    yield caplog
    logger.setLevel(previous)


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)


def test_logs_carry_path_errcode_rid_but_never_token_secret_or_openid(
    raw_logs: pytest.LogCaptureFixture,
) -> None:
    answers = iter(
        [
            httpx.Response(200, json={"access_token": ACCESS_TOKEN, "expires_in": 7200}),
            httpx.Response(200, json={"errcode": 0, "msgid": BIG_MSGID}),
            httpx.Response(200, json={"errcode": 43004, "errmsg": "require subscribe rid: rid-43004"}),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        try:
            return next(answers)
        except StopIteration:
            raise httpx.ReadTimeout("slow") from None

    client = client_for(handler)
    client.stable_token("wxapp0001", SECRET)
    forget_secrets()  # what follows must not rely on the formatter's scrubbing
    client.send_template(ACCESS_TOKEN, template_payload())
    with pytest.raises(RecipientRejected):
        client.send_template(ACCESS_TOKEN, template_payload())
    with pytest.raises(TransportError):
        client.send_template(ACCESS_TOKEN, template_payload())

    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
    assert logging.getLogger("httpcore").getEffectiveLevel() >= logging.WARNING
    logged = everything_logged(raw_logs)
    assert ACCESS_TOKEN not in logged
    assert SECRET not in logged
    assert OPENID not in logged
    assert "access_token=" not in logged
    refused = [r for r in raw_logs.records if getattr(r, "errcode", None) == 43004]
    assert len(refused) == 1
    assert refused[0].__dict__["rid"] == "rid-43004"
    assert refused[0].__dict__["path"] == "/cgi-bin/message/template/send"
    assert refused[0].__dict__["openid"] == mask_openid(OPENID)
    assert any(getattr(r, "reason", None) == "wechat_timeout" for r in raw_logs.records)


# -- the WeChatBusy metric (docs/operations.md) -------------------------------------------------
def emitted(capsys: pytest.CaptureFixture[str], name: str) -> list[dict[str, Any]]:
    """The EMF blobs printed for metric `name` since the last read."""
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    return [b for b in blobs if any(m["Name"] == name for m in b["_aws"]["CloudWatchMetrics"][0]["Metrics"])]


MASS_PAYLOAD = {"touser": [OPENID, OPENID[:-1] + "P"], "msgtype": "text", "text": {"content": "hi"}}


@pytest.mark.parametrize(
    ("errcode", "family", "send", "path"),
    [
        (-1, RetryLater, lambda c: c.send_template(ACCESS_TOKEN, template_payload()), api.TEMPLATE_SEND_PATH),
        (45009, AccountStopped, lambda c: c.bizsend(ACCESS_TOKEN, template_payload()), api.BIZSEND_PATH),
        (42010, RetryLater, lambda c: c.mass_send(ACCESS_TOKEN, MASS_PAYLOAD), api.MASS_SEND_PATH),
    ],
)
def test_each_busy_answer_is_counted_once_with_its_errcode_and_path(
    capsys: pytest.CaptureFixture[str],
    errcode: int,
    family: type[WeChatApiError],
    send: Callable[[WeChatClient], Any],
    path: str,
) -> None:
    client = client_for(Recorder({"errcode": errcode, "errmsg": "busy rid: r-1"}))
    with pytest.raises(family):
        send(client)
    [blob] = emitted(capsys, WECHAT_BUSY_METRIC)
    assert blob[WECHAT_BUSY_METRIC] == [1.0]
    assert (blob["errcode"], blob["path"]) == (errcode, path)
    # One series for every function: the alarm's dimension, not the emitting function's.
    assert blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    assert blob["service"] == STACK_METRICS_SERVICE
    assert blob["_aws"]["CloudWatchMetrics"][0]["Namespace"] == os.environ["POWERTOOLS_METRICS_NAMESPACE"]
    assert ACCESS_TOKEN not in json.dumps(blob)


@pytest.mark.parametrize(
    "handler",
    [
        Recorder({"errcode": 0, "msgid": 1}),
        Recorder({"errcode": 43004, "errmsg": "require subscribe"}),
        Recorder({"errcode": 45011, "errmsg": "api minute-quota reach limit"}),
        answering(503, b"busy"),
        raising(httpx.ReadTimeout("slow")),
    ],
    ids=["ok", "recipient", "minute-quota", "http-503", "timeout"],
)
def test_other_answers_are_not_counted_as_busy(capsys: pytest.CaptureFixture[str], handler: Handler) -> None:
    client = client_for(handler)
    with contextlib.suppress(WeChatApiError):
        client.send_template(ACCESS_TOKEN, template_payload())
    assert emitted(capsys, WECHAT_BUSY_METRIC) == []


def test_busy_answers_from_a_thread_pool_are_each_counted(capsys: pytest.CaptureFixture[str]) -> None:
    client = client_for(Recorder({"errcode": -1, "errmsg": "system error"}))

    def send(_: int) -> None:
        with pytest.raises(RetryLater):
            client.send_template(ACCESS_TOKEN, template_payload())

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(send, range(64)))
    blobs = emitted(capsys, WECHAT_BUSY_METRIC)
    assert len(blobs) == 64
    assert {b["errcode"] for b in blobs} == {-1}
