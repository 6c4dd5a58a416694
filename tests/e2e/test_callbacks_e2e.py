"""WeChat (the sandbox) → API front → webhook worker → moto, all over real HTTP."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import APPID, SUB_TEMPLATE, System

pytestmark = pytest.mark.e2e


def _last_push(system: System, event: str) -> dict:
    pushes = system.wechat.get("/admin/callbacks", params={"appid": APPID, "event": event}).json()[
        "callbacks"
    ]
    assert pushes, f"no {event} push recorded"
    return pushes[-1]


def test_url_verification_handshake(system: System) -> None:
    result = system.wechat.post(f"{system.admin}/verify-webhook", json={}).json()
    assert result["ok"] is True
    assert result["status"] == 200


def test_follow_reaches_the_registry_through_a_signed_encrypted_callback(system: System) -> None:
    openid = "oE2eFollower000000000000001"
    openid += "x" * (28 - len(openid))
    assert system.follower(openid).status_code == 404
    resp = system.wechat.post(f"{system.admin}/users/{openid}/follow", json={"qrscene": "poster_7"})
    assert resp.status_code == 200, resp.text
    system.settle()

    push = _last_push(system, "subscribe")
    assert push["encryption_mode"] == "safe"
    assert push["outcome"] == "delivered"
    assert "msg_signature" in push["query"]
    assert "<Encrypt>" in push["body"] and openid not in push["body"]

    view = system.follower(openid)
    assert view.status_code == 200
    body = view.json()
    assert body["following"] is True
    assert body["scene"] == "poster_7"


def test_tampered_callbacks_are_refused_and_change_nothing(system: System) -> None:
    openid = "oE2eTamper"
    openid += "t" * (28 - len(openid))
    system.wechat.post(f"{system.admin}/users/{openid}/follow", json={})
    system.settle()
    push = _last_push(system, "subscribe")
    webhook = f"/wechat/{APPID}"

    # Flip one character of the ciphertext: msg_signature no longer matches.
    body = push["body"]
    start = body.index("<Encrypt><![CDATA[") + len("<Encrypt><![CDATA[")
    flipped = body[:start] + ("B" if body[start] != "B" else "C") + body[start + 1 :]
    resp = system.api.post(webhook, params=push["query"], content=flipped)
    assert resp.status_code == 403
    assert resp.json()["error"] == "bad_signature"

    # A forged signature on an otherwise genuine callback.
    forged = {**push["query"], "signature": "0" * 40}
    resp = system.api.post(webhook, params=forged, content=body)
    assert resp.status_code == 403

    # Plaintext sent to a safe-mode account, correctly signed query or not.
    plain_query = {k: v for k, v in push["query"].items() if k not in ("encrypt_type", "msg_signature")}
    resp = system.api.post(
        webhook, params=plain_query, content=push["xml"].replace("subscribe", "unsubscribe")
    )
    assert resp.status_code == 403
    assert system.follower(openid).json()["following"] is True


def test_redelivered_popup_grants_one_credit(system: System) -> None:
    openid = "oE2ePopup"
    openid += "p" * (28 - len(openid))
    system.wechat.post(f"{system.admin}/users/{openid}/follow", json={})
    system.wechat.post(f"{system.admin}/users/{openid}/popup", json={"scene": 2, "accept": [SUB_TEMPLATE]})
    system.settle()
    push = _last_push(system, "subscribe_msg_popup_event")
    for _ in range(2):  # WeChat's retries of the very same push
        resp = system.api.post(f"/wechat/{APPID}", params=push["query"], content=push["body"])
        assert resp.status_code == 200
        assert resp.text == "success"
    grants = {g["template_id"]: g for g in system.follower(openid).json()["subscriptions"]}
    assert grants[SUB_TEMPLATE]["one_time_credits"] == 1


def test_operator_routes_need_the_api_key_and_unknown_accounts_are_404(system: System) -> None:
    with httpx.Client(base_url=system.stack.api_url, timeout=30, trust_env=False) as anonymous:
        assert anonymous.get("/accounts").status_code == 403
        wrong = anonymous.get("/accounts", headers={"x-api-key": "nope"})
    assert wrong.status_code == 403
    assert system.api.get("/accounts").status_code == 200
    assert system.api.get("/accounts/wx0000000000000000").status_code == 404
    resp = system.api.post(
        "/wechat/wx0000000000000000", params={"timestamp": "1", "nonce": "1"}, content="<xml/>"
    )
    assert resp.status_code == 404
