"""Builds WeChat-side callback requests (signed, optionally encrypted) for the webhook tests."""

from __future__ import annotations

import time
from dataclasses import dataclass

from wxreach.wechat.crypto import CallbackCipher, msg_signature, plain_signature

APPID = "wx1234567890abcdef"
ORIGINAL_ID = "gh_3f1a2b3c4d5e"
TOKEN = "wxreachToken2026"
APP_SECRET = "0123456789abcdef0123456789abcdef"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
PREVIOUS_AES_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut"
OPENID = "oWx1a2b3c4d5e6f7g8h9i0jKlMnO"


@dataclass(frozen=True)
class Push:
    query: dict[str, str]
    body: str


def plaintext_push(
    xml: str, *, token: str = TOKEN, timestamp: int | None = None, nonce: str = "1514711492"
) -> Push:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return Push(
        query={
            "signature": plain_signature(token, ts, nonce),
            "timestamp": ts,
            "nonce": nonce,
            "openid": OPENID,
        },
        body=xml,
    )


def safe_push(
    xml: str,
    *,
    appid: str = APPID,
    aes_key: str = AES_KEY,
    token: str = TOKEN,
    timestamp: int | None = None,
    nonce: str = "1514711492",
) -> Push:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    encrypt = CallbackCipher(appid, aes_key).encrypt(xml)
    return Push(
        query={
            "signature": plain_signature(token, ts, nonce),
            "timestamp": ts,
            "nonce": nonce,
            "openid": OPENID,
            "encrypt_type": "aes",
            "msg_signature": msg_signature(token, ts, nonce, encrypt),
        },
        body=f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>",
    )
