"""A refused or failed call changes nothing: admin bodies are validated whole before anything is
applied, and WeChat endpoints build their push (signed, maybe encrypted) before they deliver,
count quota or consume a grant. A sandbox bug answers errcode -1 over HTTP 200, never HTTP 500."""

from __future__ import annotations

from typing import Any

import pytest

import local.sandbox.state as state_module

from .conftest import SECRET, Service, WeChat

AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
TEMPLATE_SEND = "/cgi-bin/message/template/send"


def template_body(svc: Service, **extra: Any) -> dict[str, Any]:
    data = {"thing1": {"value": "咖啡豆"}, "amount2": {"value": "¥1"}, "time3": {"value": "10:00"}}
    return {"touser": svc.openids[0], "template_id": svc.template_id, "data": data, **extra}


@pytest.fixture
def broken_push(monkeypatch: pytest.MonkeyPatch, wx: WeChat, service: Service) -> None:
    """Safe mode on, and every encryption raises: the push of any WeChat call cannot be built."""
    wx.account(service.appid, encoding_aes_key=AES_KEY, encryption_mode="safe")

    def boom(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("simulated sandbox bug")

    monkeypatch.setattr(state_module, "encrypt_message", boom)


def assert_system_error(response: dict[str, Any]) -> None:
    assert response["errcode"] == -1
    assert response["errmsg"].startswith("system error")


# --- admin: validate the whole body, then apply --------------------------------------------------
def test_refused_account_update_changes_no_field(wx: WeChat, service: Service) -> None:
    before = wx.admin("GET", f"/accounts/{service.appid}")
    refused = wx.admin(
        "POST",
        "/accounts",
        {"appid": service.appid, "name": "Renamed", "secret": "other", "encryption_mode": "safe"},
        expect=400,
    )
    assert "encoding_aes_key" in refused["error"]
    wx.admin("POST", "/accounts", {"appid": service.appid, "name": "X", "webhook_url": "ftp://x"}, expect=400)
    wx.admin("POST", "/accounts", {"appid": service.appid, "secret": "other", "token_ttl_s": 0}, expect=400)
    assert wx.admin("GET", f"/accounts/{service.appid}") == before
    # the reviewer's case: a send after the refused update works, over HTTP 200
    response = wx.http.post(
        TEMPLATE_SEND, params={"access_token": service.token}, json=template_body(service)
    )
    assert response.status_code == 200 and response.json()["errcode"] == 0
    assert wx.token(service.appid, SECRET)


def test_refused_account_creation_creates_nothing_and_draws_no_ids(wx: WeChat) -> None:
    wx.admin("POST", "/accounts", {"appid": "wxnew00000001", "encryption_mode": "compatible"}, expect=400)
    wx.admin("GET", "/accounts/wxnew00000001", expect=404)
    created = wx.admin("POST", "/accounts", {"appid": "wxnew00000001"}, expect=201)
    wx.admin("POST", "/reset")
    assert (
        wx.admin("POST", "/accounts", {"appid": "wxnew00000001"}, expect=201)["secret"] == created["secret"]
    )


def test_key_and_mode_may_arrive_together_or_key_first(wx: WeChat, service: Service) -> None:
    wx.account(service.appid, encryption_mode="safe", encoding_aes_key=AES_KEY)
    wx.account(service.appid, encryption_mode="plaintext", encoding_aes_key="")
    wx.account(service.appid, encoding_aes_key=AES_KEY)
    assert wx.account(service.appid, encryption_mode="compatible")["encryption_mode"] == "compatible"
    wx.admin("POST", "/accounts", {"appid": service.appid, "encoding_aes_key": ""}, expect=400)
    assert wx.admin("GET", f"/accounts/{service.appid}")["encoding_aes_key"] == AES_KEY


def test_refused_followers_batch_creates_nobody(wx: WeChat) -> None:
    wx.account("wxbatch000001")
    followers = [{"openid": "oGood"}, {"openid": "bad openid!"}]
    wx.admin("POST", "/accounts/wxbatch000001/followers", {"followers": followers}, expect=400)
    followers = [{"openid": "oGood"}, {"openid": "oOther", "tags": [999]}]
    wx.admin("POST", "/accounts/wxbatch000001/followers", {"followers": followers}, expect=400)
    assert wx.admin("GET", "/accounts/wxbatch000001/followers")["total"] == 0


def test_refused_tag_calls_change_no_tag(wx: WeChat, service: Service) -> None:
    wx.admin("POST", f"/accounts/{service.appid}/users/{service.openids[1]}/unfollow")
    members = [service.openids[0], service.openids[1]]
    wx.admin("POST", f"/accounts/{service.appid}/tags", {"name": "vip", "openids": members}, expect=409)
    assert wx.get("/cgi-bin/tags/get", service.token) == {"tags": []}
    tag = wx.admin("POST", f"/accounts/{service.appid}/tags", {"name": "vip", "openids": members[:1]})
    add = {"add": [service.openids[2], service.openids[1]]}
    wx.admin("POST", f"/accounts/{service.appid}/tags/{tag['id']}/members", add, expect=409)
    assert wx.get("/cgi-bin/tags/get", service.token)["tags"][0]["count"] == 1


def test_refused_user_update_changes_nothing(wx: WeChat, service: Service) -> None:
    path = f"/accounts/{service.appid}/users/{service.openids[0]}"
    wx.admin("POST", path, {"wxname": "alice", "template_block": "yes"}, expect=400)
    assert wx.admin("GET", path)["wxname"] is None


def test_refused_settings_reject_revokes_nothing(wx: WeChat, service: Service) -> None:
    user = f"/accounts/{service.appid}/users/{service.openids[0]}"
    wx.admin("POST", user + "/popup", {"accept": [service.sub_one_time]})
    wx.admin("POST", user + "/subscription-settings", {"reject": [service.sub_one_time, "NOPE"]}, expect=404)
    assert wx.admin("GET", user)["grants"][service.sub_one_time]["credits"] == 1


# --- WeChat endpoints: an internal error leaves no partial state ----------------------------------
@pytest.mark.usefixtures("broken_push")
def test_template_send_that_cannot_push_delivers_and_counts_nothing(
    wx: WeChat, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    wx.account(service.appid, template_daily_quota=1)
    body = template_body(service, client_msg_id="order-1")
    response = wx.http.post(TEMPLATE_SEND, params={"access_token": service.token}, json=body)
    assert response.status_code == 200
    assert_system_error(response.json())
    assert wx.inbox(service.appid, service.openids[0]) == []
    assert wx.callbacks() == []
    counters = wx.admin("GET", "/counters")["paths"][TEMPLATE_SEND]
    assert counters["errcodes"] == {"-1": 1}
    monkeypatch.undo()  # the bug is fixed: the retry is the first real send
    retry = wx.post(TEMPLATE_SEND, service.token, body)
    assert retry["errcode"] == 0  # quota 1 was not used, client_msg_id was not recorded
    assert [m["msgid"] for m in wx.inbox(service.appid, service.openids[0])] == [retry["msgid"]]


@pytest.mark.usefixtures("broken_push")
def test_bizsend_that_cannot_push_keeps_the_grant(
    wx: WeChat, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    openid = service.openids[0]
    monkeypatch.undo()
    wx.admin("POST", f"/accounts/{service.appid}/users/{openid}/popup", {"accept": [service.sub_one_time]})
    monkeypatch.setattr(state_module, "encrypt_message", lambda *a, **k: 1 / 0)
    body = {
        "touser": openid,
        "template_id": service.sub_one_time,
        "data": {"thing1": {"value": "订单"}, "enum2": {"value": "已发货"}},
    }
    assert_system_error(wx.post("/cgi-bin/message/subscribe/bizsend", service.token, body))
    user = wx.admin("GET", f"/accounts/{service.appid}/users/{openid}")
    assert user["grants"][service.sub_one_time]["credits"] == 1
    assert user["inbox_count"] == 0
    monkeypatch.undo()
    assert wx.post("/cgi-bin/message/subscribe/bizsend", service.token, body)["errcode"] == 0


@pytest.mark.usefixtures("broken_push")
def test_mass_send_that_cannot_push_creates_no_job(
    wx: WeChat, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"filter": {"is_to_all": True}, "msgtype": "text", "text": {"content": "hi"}, "clientmsgid": "c1"}
    assert_system_error(wx.post("/cgi-bin/message/mass/sendall", service.token, body))
    assert wx.admin("GET", f"/accounts/{service.appid}/mass-jobs")["jobs"] == []
    user = wx.admin("GET", f"/accounts/{service.appid}/users/{service.openids[0]}")
    assert (user["inbox_count"], user["mass_by_month"]) == (0, {})
    monkeypatch.undo()
    # neither the clientmsgid nor the once-a-day send-to-all quota was used
    assert wx.post("/cgi-bin/message/mass/sendall", service.token, body)["errcode"] == 0


@pytest.mark.usefixtures("broken_push")
def test_simulated_follow_that_cannot_push_changes_nobody(wx: WeChat, service: Service) -> None:
    response = wx.http.post(f"/admin/accounts/{service.appid}/users/oNewcomer/follow", json={})
    assert response.status_code == 500
    wx.admin("GET", f"/accounts/{service.appid}/users/oNewcomer", expect=404)
    response = wx.http.post(f"/admin/accounts/{service.appid}/users/{service.openids[0]}/unfollow")
    assert response.status_code == 500
    assert wx.admin("GET", f"/accounts/{service.appid}/users/{service.openids[0]}")["following"] is True
