"""The fuzz run's three 5xx causes, replayed over HTTP against the local stack's webhook: each is
now a 4xx with a machine-readable reason (the in-process checks are in tests/integration)."""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import AES_KEY, APPID, ORIGINAL_ID, TOKEN, System
from wxreach.wechat.crypto import CallbackCipher, msg_signature, plain_signature

pytestmark = pytest.mark.e2e


def _safe_push(system: System, xml: str, **query: str) -> tuple[int, dict]:
    ts, nonce = str(int(time.time())), "e2e-refusal"
    encrypt = CallbackCipher(APPID, AES_KEY).encrypt(xml)
    params = {
        "signature": plain_signature(TOKEN, ts, nonce),
        "timestamp": ts,
        "nonce": nonce,
        "openid": "oE2eRefusal0000000000000001",
        "encrypt_type": "aes",
        "msg_signature": msg_signature(TOKEN, ts, nonce, encrypt),
        **query,
    }
    body = (
        f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName>"
        f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    )
    resp = system.api.post(f"/wechat/{APPID}", params=params, content=body)
    return resp.status_code, resp.json() if resp.headers.get("content-type", "").startswith(
        "application/json"
    ) else {}


def _event(openid: str, items: int = 1) -> str:
    lists = "".join(
        f"<List><TemplateId><![CDATA[T{n:02d}xxxxxxxx]]></TemplateId>"
        "<SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>2</PopupScene></List>"
        for n in range(items)
    )
    return (
        f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[subscribe_msg_popup_event]]></Event><SubscribeMsgPopupEvent>{lists}"
        "</SubscribeMsgPopupEvent></xml>"
    )


@pytest.mark.parametrize("encoding", ["gbk", "big5", "utf-7", "no-such-codec"])
def test_declared_encodings_are_400(system: System, encoding: str) -> None:
    status, body = _safe_push(system, f'<?xml version="1.0" encoding="{encoding}"?>' + _event("o" * 28))
    assert (status, body.get("error")) == (400, "malformed_xml")


def test_2100_character_openid_is_400(system: System) -> None:
    status, body = _safe_push(system, _event("o" * 2100))
    assert (status, body.get("error")) == (400, "invalid_openid")
    status, body = _safe_push(system, _event("o" * 28), openid="o" * 2100)
    assert (status, body.get("error")) == (400, "invalid_openid")


@pytest.mark.parametrize("items", [6, 100])
def test_popup_with_too_many_templates_is_400(system: System, items: int) -> None:
    status, body = _safe_push(system, _event("oE2eRefusal0000000000000002", items))
    assert (status, body.get("error")) == (400, "too_many_items")


def test_five_template_popup_is_accepted_and_granted(system: System) -> None:
    openid = "oE2eRefusal0000000000000003"
    status, _ = _safe_push(system, _event(openid, 5))
    assert status == 200
    view = system.follower(openid).json()
    assert sorted(g["template_id"] for g in view["subscriptions"]) == [f"T{n:02d}xxxxxxxx" for n in range(5)]
