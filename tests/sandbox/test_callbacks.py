"""§5 pushes: signing, plaintext/compatible/safe bodies, async delivery, retries, user events."""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import threading

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from local.sandbox.wxcrypto import encrypt_message, sha1_signature

from .conftest import Receiver, Service, WeChat

AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
TOKEN = "sandboxToken42"


def expected_signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()  # noqa: S324 - WeChat's protocol


def decrypt(encrypt: str, appid: str) -> str:
    """Independent safe-mode decryption, straight from §5.4."""
    key = base64.b64decode(AES_KEY + "=")
    ciphertext = base64.b64decode(encrypt)
    assert len(ciphertext) % 32 == 0  # padded to 32-byte blocks
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    plain = decryptor.update(ciphertext) + decryptor.finalize()
    pad = plain[-1]
    assert 1 <= pad <= 32 and plain[-pad:] == bytes([pad]) * pad
    plain = plain[:-pad]
    (length,) = struct.unpack(">I", plain[16:20])
    assert plain[20 + length :].decode() == appid
    return plain[20 : 20 + length].decode("utf-8")


def event_name(xml: str) -> str:
    found = re.search(r"<Event><!\[CDATA\[(\w+)", xml)
    assert found, xml
    return found.group(1)


def send_template(wx: WeChat, svc: Service) -> int:
    data = {"thing1": {"value": "测试]]>注入"}, "amount2": {"value": "¥1"}, "time3": {"value": "09:00"}}
    body = {"touser": svc.openids[0], "template_id": svc.template_id, "data": data}
    return wx.post("/cgi-bin/message/template/send", svc.token, body)["msgid"]


def test_signature_matches_the_reference_vector() -> None:
    assert sha1_signature("AAAAA", "1714036504", "1514711492") == "f464b24fc39322e44b38aa78f5edd27bd1441696"


def test_encryption_uses_the_key_prefix_as_iv() -> None:
    # a wrong IV only garbles the random first block, which receivers discard: check that block too
    random16 = bytes(range(16))
    encrypt = encrypt_message("<xml>中</xml>", encoding_aes_key=AES_KEY, appid="wxappid", random16=random16)
    key = base64.b64decode(AES_KEY + "=")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    plain = decryptor.update(base64.b64decode(encrypt)) + decryptor.finalize()
    assert plain[:16] == random16
    assert plain[16:20] == struct.pack(">I", len("<xml>中</xml>".encode()))  # length counts bytes
    assert decrypt(encrypt, "wxappid") == "<xml>中</xml>"


def test_plaintext_push_is_signed(wx: WeChat, service: Service, receiver: Receiver) -> None:
    wx.account(service.appid, webhook_url=receiver.url, token=TOKEN)
    msgid = send_template(wx, service)
    wx.flush()
    (push,) = receiver.requests
    q = push.query
    assert push.path == "/wechat/callback"
    assert set(q) == {"signature", "timestamp", "nonce", "openid"}
    assert q["signature"] == expected_signature(TOKEN, q["timestamp"], q["nonce"])
    assert q["timestamp"] == str(int(wx.admin("GET", "/clock")["now"]))
    assert q["openid"] == service.openids[0]
    assert push.body == (
        f"<xml><ToUserName><![CDATA[{service.original_id}]]></ToUserName>"
        f"<FromUserName><![CDATA[{service.openids[0]}]]></FromUserName>"
        f"<CreateTime>{q['timestamp']}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>{msgid}</MsgID>"
        "<Status><![CDATA[success]]></Status></xml>"
    )
    (record,) = wx.callbacks(appid=service.appid)
    assert record["outcome"] == "delivered"
    assert record["attempts"][0]["status"] == 200


def test_safe_mode_push_decrypts_to_the_event(wx: WeChat, service: Service, receiver: Receiver) -> None:
    wx.account(
        service.appid, webhook_url=receiver.url, token=TOKEN, encoding_aes_key=AES_KEY, encryption_mode="safe"
    )
    msgid = send_template(wx, service)
    wx.flush()
    (push,) = receiver.requests
    q = push.query
    assert q["encrypt_type"] == "aes"
    assert q["signature"] == expected_signature(TOKEN, q["timestamp"], q["nonce"])
    match = re.fullmatch(
        r"<xml><ToUserName><!\[CDATA\[(gh_\w+)\]\]></ToUserName><Encrypt><!\[CDATA\[([A-Za-z0-9+/=]+)\]\]></Encrypt></xml>",
        push.body,
    )
    assert match, push.body
    assert match.group(1) == service.original_id
    encrypt = match.group(2)
    assert q["msg_signature"] == expected_signature(TOKEN, q["timestamp"], q["nonce"], encrypt)
    xml = decrypt(encrypt, service.appid)
    assert f"<MsgID>{msgid}</MsgID>" in xml
    assert "<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>" in xml
    assert xml == wx.callbacks(appid=service.appid)[0]["xml"]


def test_compatible_mode_carries_plaintext_and_ciphertext(
    wx: WeChat, service: Service, receiver: Receiver
) -> None:
    wx.account(
        service.appid,
        webhook_url=receiver.url,
        token=TOKEN,
        encoding_aes_key=AES_KEY,
        encryption_mode="compatible",
    )
    send_template(wx, service)
    wx.flush()
    (push,) = receiver.requests
    assert "<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>" in push.body
    found = re.search(r"<Encrypt><!\[CDATA\[(.+?)\]\]></Encrypt></xml>$", push.body)
    assert found, push.body
    encrypt = found.group(1)
    assert push.query["msg_signature"] == expected_signature(
        TOKEN, push.query["timestamp"], push.query["nonce"], encrypt
    )
    assert push.body.startswith(decrypt(encrypt, service.appid)[: -len("</xml>")])


def test_cdata_terminator_in_values_is_escaped(wx: WeChat, service: Service, receiver: Receiver) -> None:
    wx.account(service.appid, webhook_url=receiver.url)
    wx.admin("POST", f"/accounts/{service.appid}/users/{service.openids[0]}/message", {"content": "a]]>b"})
    wx.flush()
    assert "<Content><![CDATA[a]]]]><![CDATA[>b]]></Content>" in receiver.requests[0].body


def test_failed_deliveries_are_retried_three_more_times(
    wx: WeChat, service: Service, receiver: Receiver
) -> None:
    wx.account(service.appid, webhook_url=receiver.url)
    receiver.script.extend([(500, 0), (502, 0)])
    send_template(wx, service)
    wx.flush()
    assert len(receiver.requests) == 3
    assert len({r.body for r in receiver.requests}) == 1  # retries are identical
    assert len({r.query["nonce"] for r in receiver.requests}) == 1
    (record,) = wx.callbacks()
    assert record["outcome"] == "delivered"
    assert [a["status"] for a in record["attempts"]] == [500, 502, 200]


def test_gives_up_after_four_attempts(wx: WeChat, service: Service, receiver: Receiver) -> None:
    wx.account(service.appid, webhook_url=receiver.url)
    receiver.script.extend([(503, 0)] * 10)
    send_template(wx, service)
    wx.flush()
    assert len(receiver.requests) == 4
    assert wx.callbacks(outcome="failed")[0]["attempts"][-1]["status"] == 503


def test_api_answers_while_its_push_is_still_in_flight(
    wx: WeChat, service: Service, receiver: Receiver
) -> None:
    wx.account(service.appid, webhook_url=receiver.url)
    receiver.gate = threading.Event()  # the webhook holds its answer until the test opens the gate
    try:
        msgid = send_template(wx, service)  # would wait for the webhook if pushes ran on this thread
        assert msgid > 0
        receiver.wait_for(1)
        (record,) = wx.callbacks()
        assert (record["outcome"], record["attempts"]) == ("pending", [])
        assert wx.admin("GET", "/callbacks")["pending"] == 1
    finally:
        receiver.gate.set()
    wx.flush()
    (record,) = wx.callbacks()
    assert record["outcome"] == "delivered" and len(record["attempts"]) == 1


def test_slow_webhook_counts_as_timeout(wx: WeChat, service: Service, receiver: Receiver) -> None:
    wx.account(service.appid, webhook_url=receiver.url)
    receiver.script.append((200, 0.8))  # longer than the 0.5 s callback timeout of the test config
    send_template(wx, service)
    wx.flush()
    (record,) = wx.callbacks()
    assert record["outcome"] == "delivered"
    assert record["attempts"][0]["error"].startswith("timeout")
    assert record["attempts"][1]["status"] == 200


def test_flush_times_out_with_504(wx: WeChat, service: Service, receiver: Receiver) -> None:
    wx.account(service.appid, webhook_url=receiver.url)
    receiver.gate = threading.Event()
    try:
        send_template(wx, service)
        response = wx.http.post("/admin/callbacks/flush", json={"timeout": 0.05})
        assert response.status_code == 504
        assert response.json() == {"flushed": False, "pending": 1}
    finally:
        receiver.gate.set()
    wx.flush()


def test_without_webhook_pushes_are_recorded_as_skipped(wx: WeChat, service: Service) -> None:
    send_template(wx, service)
    wx.flush()
    (record,) = wx.callbacks()
    assert record["outcome"] == "skipped" and record["url"] is None
    assert record["event"] == "TEMPLATESENDJOBFINISH"


def test_follow_unfollow_and_scan_events(wx: WeChat, service: Service, receiver: Receiver) -> None:
    wx.account(service.appid, webhook_url=receiver.url)
    newcomer = "oNEWCOMER0000000000000000001"
    base = f"/accounts/{service.appid}/users/{newcomer}"
    wx.admin("POST", base + "/follow", {"qrscene": "spring_42", "ticket": "TICKET1"})
    wx.admin("POST", base + "/follow", {"qrscene": "1024", "ticket": "TICKET2"})  # already following → SCAN
    wx.admin("POST", base + "/follow", {}, expect=409)
    wx.admin("POST", base + "/unfollow")
    wx.flush()
    by_event = {event_name(r.body): r.body for r in receiver.requests}
    subscribe, scan, unsubscribe = by_event["subscribe"], by_event["SCAN"], by_event["unsubscribe"]
    assert (
        "<Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[qrscene_spring_42]]></EventKey>" in subscribe
    )
    assert "<Ticket><![CDATA[TICKET1]]></Ticket>" in subscribe
    assert "<Event><![CDATA[SCAN]]></Event><EventKey><![CDATA[1024]]></EventKey>" in scan
    assert "<Event><![CDATA[unsubscribe]]></Event>" in unsubscribe
    token = wx.token(service.appid)
    assert newcomer not in wx.get("/cgi-bin/user/get", token)["data"]["openid"]


def test_user_text_message_carries_a_msgid(wx: WeChat, service: Service, receiver: Receiver) -> None:
    wx.account(service.appid, webhook_url=receiver.url)
    result = wx.admin(
        "POST", f"/accounts/{service.appid}/users/{service.openids[0]}/message", {"content": "你好"}
    )
    wx.flush()
    body = receiver.requests[0].body
    assert "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好]]></Content>" in body
    assert f"<MsgId>{result['MsgId']}</MsgId>" in body


def test_webhook_verification_handshake(wx: WeChat, service: Service, receiver: Receiver) -> None:
    wx.account(service.appid, webhook_url=receiver.url, token=TOKEN)
    result = wx.admin("POST", f"/accounts/{service.appid}/verify-webhook")
    assert result["ok"] is True
    (request,) = receiver.requests
    q = request.query
    assert set(q) == {"signature", "timestamp", "nonce", "echostr"}
    assert q["signature"] == expected_signature(TOKEN, q["timestamp"], q["nonce"])
    receiver.verify_reply = lambda query: f'"{query["echostr"]}"\n'  # not verbatim: WeChat refuses it
    assert wx.admin("POST", f"/accounts/{service.appid}/verify-webhook")["ok"] is False


def test_push_log_filters_and_limit(wx: WeChat, service: Service) -> None:
    for _ in range(3):
        send_template(wx, service)
    wx.admin("POST", f"/accounts/{service.appid}/users/{service.openids[0]}/message", {"content": "hi"})
    all_pushes = wx.callbacks()
    assert [r["event"] for r in all_pushes] == ["TEMPLATESENDJOBFINISH"] * 3 + ["text"]
    recent = wx.callbacks(event="TEMPLATESENDJOBFINISH", limit="2")
    assert [r["id"] for r in recent] == [r["id"] for r in all_pushes[1:3]]
    wx.admin("GET", "/callbacks?limit=many", expect=400)
