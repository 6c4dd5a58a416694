"""Property-based fuzzing of the webhook on moto: whatever WeChat, a broken proxy or an attacker
sends, the answer is never a 5xx, never shows a traceback or a secret, and a refused request
changes no state.

Mutations are applied to real fixture callbacks and then, most of the time, correctly signed and
encrypted, so they get past authentication and reach the parser, the models and the stores.
WXREACH_FUZZ_EXAMPLES sets the example count (default 300; derandomised, so CI is repeatable).
"""

from __future__ import annotations

import base64
import os
import re
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import webhook_handler
from tests.integration.conftest import AwsCall, call
from tests.integration.test_webhook_refusals import WRITES
from tests.support import wechat
from tests.support.aws import AwsWorld
from tests.support.fixtures import WECHAT_EVENTS_DIR, api_event
from wxreach.wechat.crypto import CallbackCipher, msg_signature, plain_signature

PLAIN_APPID = "wxfedcba9876543210"
FIXTURES = {path.stem: path.read_text(encoding="utf-8") for path in sorted(WECHAT_EVENTS_DIR.glob("*.xml"))}
SECRETS = (wechat.TOKEN, wechat.AES_KEY, wechat.APP_SECRET)
ENCODINGS = [
    "utf-8",
    "UTF-8",
    "gbk",
    "gb2312",
    "big5",
    "shift_jis",
    "utf-7",
    "utf-16",
    "latin-1",
    "ascii",
    "bogus",
]
_LEAF = re.compile(r"(<(?P<tag>[A-Za-z]+)>)(<!\[CDATA\[)?(?P<text>[^<\]]*)(\]\]>)?(</(?P=tag)>)")

# Text that exercises shape checks: long ids, full-width digits, control characters, markup.
awkward_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789１２３_ +-", max_size=14),
    st.builds(
        lambda ch, n: ch * n, st.sampled_from(["o", "9", "好", "\x00", "<", "]]>"]), st.integers(0, 2200)
    ),
)


@st.composite
def mutated_xml(draw: st.DrawFn) -> bytes:
    xml = FIXTURES[draw(st.sampled_from(sorted(FIXTURES)))]
    kind = draw(
        st.sampled_from(
            ["leaf", "declaration", "repeat_list", "dtd", "nest", "truncate", "flip", "insert", "as_is"]
        )
    )
    if kind == "leaf":
        leaves = list(_LEAF.finditer(xml))
        if leaves:
            leaf = draw(st.sampled_from(leaves))
            xml = xml[: leaf.start("text")] + draw(awkward_text) + xml[leaf.end("text") :]
    elif kind == "declaration":
        xml = f'<?xml version="1.0" encoding="{draw(st.sampled_from(ENCODINGS))}"?>' + xml
    elif kind == "repeat_list":
        match = re.search(r"<List>.*?</List>", xml, re.DOTALL)
        if match:
            xml = xml.replace(match.group(0), match.group(0) * draw(st.integers(2, 120)), 1)
    elif kind == "dtd":
        xml = '<!DOCTYPE xml [<!ENTITY e "boom">]>' + xml.replace("<xml>", "<xml><Evil>&e;</Evil>", 1)
    elif kind == "nest":
        depth = draw(st.integers(1, 400))
        xml = xml.replace("</xml>", "<a>" * depth + "x" + "</a>" * depth + "</xml>", 1)
    raw = xml.encode("utf-8")
    if kind == "truncate":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            index = draw(st.integers(0, len(raw) - 1))
            raw = raw[:index] + bytes([raw[index] ^ (1 << draw(st.integers(0, 7)))]) + raw[index + 1 :]
    elif kind == "insert":
        index = draw(st.integers(0, len(raw)))
        raw = raw[:index] + draw(st.binary(max_size=64)) + raw[index:]
    return raw


@st.composite
def callbacks(draw: st.DrawFn) -> tuple[str, dict[str, str], bytes]:
    inner = draw(mutated_xml())
    mode = draw(st.sampled_from(["safe", "safe", "plain", "envelope", "random_body"]))
    ts = str(int(time.time()))
    nonce = draw(st.sampled_from(["1514711492", "n0nce", ""]))
    query = {
        "signature": plain_signature(wechat.TOKEN, ts, nonce),
        "timestamp": ts,
        "nonce": nonce,
        "openid": wechat.OPENID,
    }
    appid = wechat.APPID
    if mode == "plain":
        appid, body = PLAIN_APPID, inner
    elif mode == "random_body":
        body = draw(st.binary(max_size=512))
    else:
        encrypt = CallbackCipher(wechat.APPID, wechat.AES_KEY).encrypt(inner)
        query |= {"encrypt_type": "aes", "msg_signature": msg_signature(wechat.TOKEN, ts, nonce, encrypt)}
        body = (
            f"<xml><ToUserName><![CDATA[{wechat.ORIGINAL_ID}]]></ToUserName>"
            f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        ).encode()
        if mode == "envelope":
            body = draw(mutated_envelope(body))
    if draw(st.integers(0, 4)) == 0:  # a query or path mutation on top
        target = draw(st.sampled_from([*query, "appid", "extra"]))
        value = draw(awkward_text)
        if target == "appid":
            appid = value
        elif draw(st.booleans()):
            query[target] = value
        else:
            query.pop(target, None)
    return appid, query, body


@st.composite
def mutated_envelope(draw: st.DrawFn, body: bytes) -> bytes:
    choice = draw(st.sampled_from(["declaration", "flip", "truncate", "garbage_encrypt"]))
    if choice == "declaration":
        return f'<?xml version="1.0" encoding="{draw(st.sampled_from(ENCODINGS))}"?>'.encode() + body
    if choice == "truncate":
        return body[: draw(st.integers(0, len(body)))]
    if choice == "garbage_encrypt":
        return re.sub(
            rb"<!\[CDATA\[[A-Za-z0-9+/=]+\]\]>", b"<![CDATA[" + draw(st.binary(max_size=80)) + b"]]>", body
        )
    index = draw(st.integers(0, len(body) - 1))
    return body[:index] + bytes([body[index] ^ 0x20]) + body[index + 1 :]


@pytest.fixture
def accounts(world: AwsWorld, register_account: Any, aws_calls: list[AwsCall]) -> list[AwsCall]:
    register_account()
    register_account(appid=PLAIN_APPID, encryption_mode="plaintext")
    return aws_calls


@settings(
    max_examples=int(os.environ.get("WXREACH_FUZZ_EXAMPLES", "300")),
    derandomize=True,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(request=callbacks())
def test_no_callback_gets_a_5xx_leaks_or_changes_state_when_refused(
    accounts: list[AwsCall], request: tuple[str, dict[str, str], bytes]
) -> None:
    appid, query, body = request
    accounts.clear()
    event = api_event("webhook_push", path_parameters={"appid": appid}, query=query)
    event["body"] = base64.b64encode(body).decode()
    event["isBase64Encoded"] = True
    resp = call(webhook_handler, event)
    assert resp["statusCode"] < 500, resp["body"]
    text = resp.get("body") or ""
    assert not any(secret in text for secret in SECRETS)
    if resp["statusCode"] != 200:
        writes = [f"{c.service}:{c.operation}" for c in accounts if c.operation in WRITES]
        assert writes == [], (resp["statusCode"], text, writes)
