"""Admin API: seeding, inspection, reset, clock, validation, and the CLI entry point."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from .conftest import SECRET, TLS, Service, WeChat

ROOT = Path(__file__).resolve().parents[2]


def test_bulk_followers_get_unique_28_char_openids(wx: WeChat) -> None:
    wx.account("wxbulk0000001")
    openids = wx.followers("wxbulk0000001", 5000, prefix="oSbx")
    assert len(openids) == len(set(openids)) == 5000
    assert all(len(o) == 28 and o.startswith("oSbx") and re.fullmatch(r"[A-Za-z0-9_-]+", o) for o in openids)
    listing = wx.admin("GET", "/accounts/wxbulk0000001/followers?following=true")
    assert listing["total"] == 5000


def test_explicit_followers_and_non_followers(wx: WeChat) -> None:
    wx.account("wxbulk0000001")
    result = wx.admin(
        "POST",
        "/accounts/wxbulk0000001/followers",
        {"followers": [{"openid": "oAlice", "wxname": "alice"}, {"openid": "oBob", "following": False}]},
    )
    assert result == {"created": 2, "updated": 0, "openids": ["oAlice", "oBob"]}
    assert wx.admin("GET", "/accounts/wxbulk0000001/users/oBob")["following"] is False
    assert wx.admin("GET", "/accounts/wxbulk0000001/users/oAlice")["wxname"] == "alice"


def test_seeding_is_deterministic_per_seed(wx: WeChat, server) -> None:
    wx.account("wxbulk0000001")
    first = wx.followers("wxbulk0000001", 3)
    wx.admin("POST", "/reset")
    wx.account("wxbulk0000001")
    assert wx.followers("wxbulk0000001", 3) == first


def test_inbox_proves_exactly_once(wx: WeChat, service: Service) -> None:
    data = {"thing1": {"value": "a"}, "amount2": {"value": "¥1"}, "time3": {"value": "10:00"}}
    for _ in range(3):
        body = {
            "touser": service.openids[0],
            "template_id": service.template_id,
            "data": data,
            "client_msg_id": "x",
        }
        wx.post("/cgi-bin/message/template/send", service.token, body)
    counts = wx.admin("GET", f"/accounts/{service.appid}/inbox-counts?kind=template")
    assert counts == {"kind": "template", "users": 1, "messages": 1, "counts": {service.openids[0]: 1}}


def test_counters_and_reset(wx: WeChat, service: Service) -> None:
    wx.get("/cgi-bin/tags/get", service.token)
    wx.get("/cgi-bin/tags/get", "bad-token")
    counters = wx.admin("GET", "/counters")["paths"]
    assert counters["/cgi-bin/tags/get"] == {"calls": 2, "errcodes": {"0": 1, "40001": 1}, "injected": {}}
    assert counters["/cgi-bin/token"]["calls"] == 1
    wx.admin("POST", "/counters/reset")
    assert wx.admin("GET", "/counters")["paths"] == {}
    wx.admin("POST", "/reset")
    assert wx.admin("GET", "/accounts") == {"accounts": []}
    assert wx.get("/cgi-bin/tags/get", service.token)["errcode"] == 40001


def test_clock_advance(wx: WeChat) -> None:
    before = wx.admin("GET", "/clock")
    assert before["china_time"] == "2024-06-01T00:00:00+08:00"
    after = wx.admin("POST", "/clock/advance", {"seconds": 90})
    assert after["now"] == before["now"] + 90
    wx.admin("POST", "/clock/advance", {"seconds": -1}, expect=400)


def test_account_validation(wx: WeChat) -> None:
    wx.admin("POST", "/accounts", {"secret": "x"}, expect=400)
    wx.admin("POST", "/accounts", {"appid": "wxa", "type": "enterprise"}, expect=400)
    wx.admin("POST", "/accounts", {"appid": "wxa", "encryption_mode": "safe"}, expect=400)
    wx.admin("POST", "/accounts", {"appid": "wxa", "encoding_aes_key": "short"}, expect=400)
    wx.admin("POST", "/accounts", {"appid": "wxa", "webhook_url": "ftp://x"}, expect=400)
    created = wx.admin("POST", "/accounts", {"appid": "wxa"}, expect=201)
    assert created["original_id"].startswith("gh_") and len(created["secret"]) == 32
    updated = wx.admin("POST", "/accounts", {"appid": "wxa", "name": "Demo"}, expect=200)
    assert updated["secret"] == created["secret"] and updated["name"] == "Demo"
    wx.admin("GET", "/accounts/nope", expect=404)
    wx.admin("GET", "/nothing-here", expect=404)
    wx.admin("DELETE", "/accounts", expect=405)


def test_template_validation(wx: WeChat) -> None:
    wx.account("wxa")
    wx.admin("POST", "/accounts/wxa/templates", {"keywords": ["enum1"]}, expect=400)  # subscription-only type
    wx.admin("POST", "/accounts/wxa/templates", {"keywords": ["const1"]}, expect=400)  # needs an enumeration
    wx.admin("POST", "/accounts/wxa/templates", {"keywords": ["thing1", "thing1"]}, expect=400)
    wx.admin("POST", "/accounts/wxa/subscription-templates", {"keywords": ["const1"]}, expect=400)
    wx.admin("POST", "/accounts/wxa/subscription-templates", {"keywords": ["thing1"], "type": 9}, expect=400)


def test_unknown_wechat_path_is_404(wx: WeChat) -> None:
    response = wx.http.get("/cgi-bin/message/custom/send")
    assert response.status_code == 404
    assert "not modelled" in response.json()["errmsg"]


def test_cli_serves_on_a_free_port() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "local.sandbox", "--port", "0", "--seed", "3"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"listening on (http://\S+) \(seed 3\)", line)
        assert match, line
        with httpx.Client(base_url=match.group(1), trust_env=False, verify=TLS) as http:
            assert http.get("/admin/health").json()["seed"] == 3
            http.post("/admin/accounts", json={"appid": "wxcli", "secret": SECRET})
            token = http.get(
                "/cgi-bin/token",
                params={"grant_type": "client_credential", "appid": "wxcli", "secret": SECRET},
            ).json()
            assert token["expires_in"] == 7200
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0
