"""§1 access tokens: classic and stable families, lifetimes, overlaps and credential errors."""

from __future__ import annotations

import httpx
import pytest

from local.sandbox import ManualClock, SandboxConfig, SandboxServer

from .conftest import SECRET, TLS, WeChat

APPID = "wxsandbox0001"


def stable(http: httpx.Client, force: bool = False, appid: str = APPID) -> dict:
    body = {"grant_type": "client_credential", "appid": appid, "secret": SECRET, "force_refresh": force}
    return http.post("/cgi-bin/stable_token", json=body).json()


def probe(wx: WeChat, token: str) -> int:
    """errcode of a harmless authenticated call."""
    return wx.get("/cgi-bin/tags/get", token).get("errcode", 0)


def test_classic_token_shape(wx: WeChat) -> None:
    wx.account(APPID)
    body = wx.http.get(
        "/cgi-bin/token", params={"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    ).json()
    assert body["expires_in"] == 7200
    assert 100 < len(body["access_token"]) <= 512


@pytest.mark.parametrize(
    ("params", "errcode"),
    [
        ({"grant_type": "password", "appid": APPID, "secret": SECRET}, 40002),
        ({"appid": APPID, "secret": SECRET}, 40002),
        ({"grant_type": "client_credential", "secret": SECRET}, 41002),
        ({"grant_type": "client_credential", "appid": "wxnobody", "secret": SECRET}, 40013),
        ({"grant_type": "client_credential", "appid": APPID}, 41004),
        ({"grant_type": "client_credential", "appid": APPID, "secret": "wrong"}, 40125),
    ],
)
def test_credential_errors(wx: WeChat, params: dict, errcode: int) -> None:
    wx.account(APPID)
    body = wx.http.get("/cgi-bin/token", params=params).json()
    assert body["errcode"] == errcode
    assert " rid: " in body["errmsg"]


def test_new_classic_token_kills_previous_after_five_minutes(wx: WeChat) -> None:
    wx.account(APPID)
    first = wx.token(APPID)
    wx.advance(60)
    second = wx.token(APPID)
    assert first != second
    wx.advance(299)  # 299 s after the second fetch: both work
    assert probe(wx, first) == 0
    assert probe(wx, second) == 0
    wx.advance(1)  # exactly 5 minutes: the old one is dead, "not latest"
    assert probe(wx, first) == 40001
    assert probe(wx, second) == 0


def test_expired_token_is_42001_and_unknown_is_40001_and_missing_is_41001(wx: WeChat) -> None:
    wx.account(APPID)
    token = wx.token(APPID)
    wx.advance(7199)
    assert probe(wx, token) == 0
    wx.advance(1)
    assert probe(wx, token) == 42001
    assert probe(wx, "not-a-token") == 40001
    assert wx.http.get("/cgi-bin/tags/get").json()["errcode"] == 41001


def test_token_lifetime_is_configurable_per_account(wx: WeChat) -> None:
    wx.account(APPID, token_ttl_s=600)
    body = wx.http.get(
        "/cgi-bin/token", params={"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    ).json()
    assert body["expires_in"] == 600
    wx.advance(600)
    assert probe(wx, body["access_token"]) == 42001


def test_server_default_token_lifetime(clock: ManualClock) -> None:
    config = SandboxConfig(token_ttl_s=900)
    with (
        SandboxServer(seed=1, clock=clock, config=config) as srv,
        httpx.Client(base_url=srv.url, verify=TLS) as http,
    ):
        WeChat(http).account(APPID)
        assert stable(http)["expires_in"] == 900


def test_stable_token_is_the_same_while_valid_and_rotates_five_minutes_before_expiry(wx: WeChat) -> None:
    wx.account(APPID)
    first = stable(wx.http)
    wx.advance(3600)
    again = stable(wx.http)
    assert again["access_token"] == first["access_token"]
    assert again["expires_in"] == 3600
    wx.advance(3300)  # 300 s left: the platform rotates now
    rotated = stable(wx.http)
    assert rotated["access_token"] != first["access_token"]
    assert rotated["expires_in"] == 7200
    assert probe(wx, first["access_token"]) == 0  # old and new overlap until the old expires
    wx.advance(300)
    assert probe(wx, first["access_token"]) == 42001
    assert probe(wx, rotated["access_token"]) == 0


def test_stable_force_refresh_rotates_at_once_and_is_rate_limited(wx: WeChat) -> None:
    wx.account(APPID)
    first = stable(wx.http)["access_token"]
    forced = stable(wx.http, force=True)["access_token"]
    assert forced != first
    assert probe(wx, first) == 40001  # invalidated immediately
    wx.advance(10)
    assert stable(wx.http, force=True)["access_token"] == forced  # < 30 s apart: no refresh
    tokens = {forced}
    for _ in range(19):
        wx.advance(30)
        tokens.add(stable(wx.http, force=True)["access_token"])
    assert len(tokens) == 20  # 20 forced refreshes today
    wx.advance(30)
    assert stable(wx.http, force=True)["access_token"] in tokens  # the 21st does not refresh


def test_token_families_are_independent(wx: WeChat) -> None:
    wx.account(APPID)
    stable_token = stable(wx.http)["access_token"]
    wx.token(APPID)
    wx.token(APPID)
    wx.advance(301)
    wx.token(APPID)
    assert probe(wx, stable_token) == 0
    classic = wx.token(APPID)
    stable(wx.http, force=True)
    assert probe(wx, classic) == 0


def test_stable_token_requires_post(wx: WeChat) -> None:
    wx.account(APPID)
    assert wx.http.get("/cgi-bin/stable_token").json()["errcode"] == 43002


def test_classic_token_daily_limit(wx: WeChat) -> None:
    wx.account(APPID, token_daily_limit=2)
    wx.token(APPID)
    wx.token(APPID)
    params = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    assert wx.http.get("/cgi-bin/token", params=params).json()["errcode"] == 45009
    wx.advance(24 * 3600)
    assert "access_token" in wx.http.get("/cgi-bin/token", params=params).json()


def test_ip_whitelist(wx: WeChat) -> None:
    wx.account(APPID, ip_whitelist=["10.9.8.7"])
    params = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    body = wx.http.get("/cgi-bin/token", params=params).json()
    assert body["errcode"] == 40164
    assert "127.0.0.1" in body["errmsg"]
    wx.account(APPID, ip_whitelist=["127.0.0.1"])
    assert "access_token" in wx.http.get("/cgi-bin/token", params=params).json()


def test_unicode_escapes_empty_bodies_and_bad_json(wx: WeChat) -> None:
    wx.account(APPID)
    token = wx.token(APPID)
    url = "/cgi-bin/message/template/send"
    escaped = wx.http.post(url, params={"access_token": token}, content=b'{"touser":"\\u4e2d"}').json()
    assert escaped["errcode"] == 40033
    # an escaped backslash followed by "u1234" is not an escape sequence
    literal = wx.http.post(url, params={"access_token": token}, content=b'{"touser":"\\\\u4e2d"}').json()
    assert literal["errcode"] == 40003
    assert wx.http.post(url, params={"access_token": token}, content=b"").json()["errcode"] == 44002
    assert wx.http.post(url, params={"access_token": token}, content=b"{nope").json()["errcode"] == 47001
    raw = '{"touser":"中文"}'.encode()
    assert wx.http.post(url, params={"access_token": token}, content=raw).json()["errcode"] == 40003
