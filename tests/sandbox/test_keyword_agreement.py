"""wxreach's keyword validator and the sandbox (WeChat's side, written independently) agree on §2.3.

Every value goes over real HTTP: template/send to a follower, bizsend with a granted one-time
credit. Where wxreach accepts a value the sandbox must not answer 47003; where it refuses, the
sandbox must answer 47003 naming that key (or 40033 when the JSON text itself needs a `\\uXXXX`
escape: the body is refused before any value is read, §0).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local.sandbox import SandboxConfig
from wxreach.wechat.keywords import Channel, check_value

from .conftest import WeChat

APPID = "wxagreement0001"
STATUS = ["已支付", "已退款", "ok 1"]
# one key per §2.3 type; the last one is the channel's enumerated type
COMMON = [
    "thing",
    "number",
    "letter",
    "symbol",
    "character_string",
    "time",
    "date",
    "amount",
    "phone_number",
    "car_number",
    "name",
    "phrase",
]
KEYS = {
    Channel.TEMPLATE: {kind: f"{kind}{n}" for n, kind in enumerate([*COMMON, "const"], start=1)},
    Channel.SUBSCRIBE: {kind: f"{kind}{n}" for n, kind in enumerate([*COMMON, "enum"], start=1)},
}
GOOD = {
    "thing": "咖啡豆",
    "number": "12.5",
    "letter": "abc",
    "symbol": "%#",
    "character_string": "ORD-1",
    "time": "15:01",
    "date": "2019年10月1日",
    "amount": "¥88.00",
    "phone_number": "+86-0766",
    "car_number": "粤A8Z888",
    "name": "张三",
    "phrase": "配送中",
    "const": STATUS[0],
    "enum": STATUS[0],
}
ENDPOINTS = {
    Channel.TEMPLATE: "/cgi-bin/message/template/send",
    Channel.SUBSCRIBE: "/cgi-bin/message/subscribe/bizsend",
}

TRICKY = [
    *("", " ", "  ", "\n", "\t", "\r\n", "\x00", "\x1f", "\x7f", "\x85", "\u3000", "\u200b", "\u2028"),
    *("abc", "Abc Def", " Li", "Li ", "Li  Lei", "R2D2", "张 三", "张三Li", "阿卜杜·热合曼", "x" * 21),
    *("中" * 5, "中" * 6, "中" * 10, "中" * 11, "中" * 20, "中" * 21, "𠀀", "\U00031350", "\U000323af"),
    *("12", "3.14", "-5", "+5", "1e5", ".5", "5.", "1,000", "９", "٣", "9" * 32, "9" * 33),
    *("%", "%%%%%", "%%%%%%", "！？", "¥", "·", "a!", "%a", "% %"),
    *("ORD-1", "ORD 1", "订单1", "A" * 32, "A" * 33, "ÄBC", "~`|\\"),
    *("15:01", "9:30", "09:30", "15:01:30", "24:00", "23:60", "23:59:60", "1501", "15:1", "１５:０１"),
    *("15:01~16:30", "15:01 ~ 16:30", "15:01~", "~15:01", "1:00~2:00~3:00", "15:01～16:30"),
    *(
        "2019年10月1日",
        "2019年10月",
        "10月1日",
        "2019年10月1日 15:01",
        "2019年10月1日15:01",
        "3月5日 9:30~11:00",
    ),
    *("2019年2月29日", "2020年2月29日", "2月29日", "2月30日", "2019年13月1日", "0000年1月1日", "2019年10月1"),
    *("2018-01-01", "2018/01/01", "2018.01.01", "2018-01", "01-01", "2018/1/1", "12.5", "13-01"),
    *("2018-01/01", "2018-02-30", "2020.05.06 08:30", "2020.05.0608:30", "2020/05/06T08:30"),
    *("2023-09-12 19:43", "2023-09-12T19:43", "2023-09-12T19:43:00Z", "2023-09-12 19:43:05", "2023-9-1T9:05"),
    *("2019年10月1日~2019年10月3日", "2019年10月1日 08:00~10:00", "15:00~2019年10月1日"),
    *("¥12.50", "$100元", "€1", "12.50", "¥¥12", "¥12.5.0", "¥元", "¥12元元", "元12", "¥ 12", "¥-1"),
    *("¥" + "1" * 10, "¥" + "1" * 11, "¥" + "1" * 12, "¥" + "1" * 13, "¥12345678.901"),
    *("+86-0766-66888866", "1" * 17, "1" * 18, "---", "tel:123", "(0766) 6688"),
    *("粤A8Z888挂", "粤A8Z888挂1", "AB1234", "粤", "粤A", "粤粤粤", "粤A-123", "a1"),
    *("配送中", "配送中了吗啊", "ok", "配送 中"),
    *("已支付", "已退款", "ok 1", "已支付 ", "已取消"),
]
NUMBERS: list[int | float | bool] = [0, 7, 12, -1, 3.5, 1e16, 1e20, -0.0, 10**33, True, False]

# what hypothesis draws from: the characters the rules care about, and every kind of filler
ALPHABET = "0123456789:-/.~ T年月日元¥$€，!#%aZx中粤挂配送\n\t\x7f\u3000é·"
TOKENS = st.sampled_from(
    [
        *("2019", "2020", "10", "1", "02", "29", "30", "13", "23", "24", "59", "60"),
        *("年", "月", "日", ":", "-", "/", ".", " ", "~", "T", "¥", "元", "中", "A"),
    ]
)
VALUES: st.SearchStrategy[Any] = st.one_of(
    st.lists(TOKENS, min_size=1, max_size=10).map("".join),
    st.text(ALPHABET, max_size=24),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=24),
    st.sampled_from(TRICKY),
    st.integers(-(10**12), 10**35) | st.floats(allow_nan=False, allow_infinity=False),
)
KINDS = st.sampled_from([*COMMON, "enum_or_const"])


@pytest.fixture
def config() -> SandboxConfig:
    # ISO `2023-09-12 19:43` is UNCONFIRMED (§2.3): wxreach tolerates it, so the sandbox must accept
    # it too (its default; --strict-datetime would refuse it and the two would disagree on purpose)
    return SandboxConfig(callback_timeout_s=0.5, callback_retry_delay_s=0.0, accept_iso_datetime=True)


class Channels:
    """One account, one follower, one template per channel covering every type."""

    def __init__(self, wx: WeChat) -> None:
        self.wx = wx
        wx.account(APPID, type="service", verified=True)
        self.openid = wx.followers(APPID, 1)[0]
        self.template = {
            Channel.TEMPLATE: wx.template(APPID, self._keywords(Channel.TEMPLATE), template_id="TPL_ALL"),
            Channel.SUBSCRIBE: wx.sub_template(
                APPID, self._keywords(Channel.SUBSCRIBE), pri_tmpl_id="SUB_ALL"
            ),
        }
        self.token = wx.token(APPID)
        self._grant()

    @staticmethod
    def _keywords(channel: Channel) -> list[Any]:
        return [
            {"name": key, "enum": STATUS} if kind in ("const", "enum") else key
            for kind, key in KEYS[channel].items()
        ]

    def _grant(self) -> None:
        sub = self.template[Channel.SUBSCRIBE]
        self.wx.admin("POST", f"/accounts/{APPID}/users/{self.openid}/popup", {"accept": [sub], "scene": 2})

    def send(self, channel: Channel, kind: str, value: Any) -> tuple[dict[str, Any], str]:
        """Every keyword gets a good value except `kind`; returns the answer and the body's JSON text."""
        data = {key: {"value": GOOD[k]} for k, key in KEYS[channel].items()}
        data[KEYS[channel][kind]] = {"value": value}
        body = {"touser": self.openid, "template_id": self.template[channel], "data": data}
        text = json.dumps(body, ensure_ascii=False)  # raw UTF-8, as the engine sends it (§0)
        response = self.wx.http.post(
            ENDPOINTS[channel],
            params={"access_token": self.token},
            content=text.encode("utf-8"),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        if channel is Channel.SUBSCRIBE and answer["errcode"] == 0:
            self._grant()  # the send used the one-time credit; 47003 never does
        return answer, text


@pytest.fixture
def channels(wx: WeChat) -> Channels:
    return Channels(wx)


def assert_agree(channels: Channels, channel: Channel, kind: str, value: Any) -> None:
    if kind == "enum_or_const":
        kind = "const" if channel is Channel.TEMPLATE else "enum"
    key = KEYS[channel][kind]
    reason = check_value(kind, value, channel, enum=STATUS)
    answer, text = channels.send(channel, kind, value)
    where = f"{channel} {key}={value!r}: wxreach says {reason!r}, sandbox {answer}"
    if reason is None:
        assert answer["errcode"] == 0, where
    elif "\\u" in text:
        assert answer["errcode"] == 40033, where  # C0 control characters travel as \u00XX escapes
    else:
        assert answer["errcode"] == 47003, where
        detail = "is empty" if reason == "is empty" else "invalid"
        assert answer["errmsg"].startswith(f"argument invalid! data.{key}.value {detail}"), where


def test_good_values_pass_on_both_channels(channels: Channels) -> None:
    for channel in Channel:
        answer, _ = channels.send(channel, "thing", GOOD["thing"])
        assert answer["errcode"] == 0, answer
    # the fixture's credit came back after the subscription send
    assert channels.send(Channel.SUBSCRIBE, "thing", GOOD["thing"])[0]["errcode"] == 0


@pytest.mark.parametrize("channel", list(Channel))
def test_tricky_values_agree_for_every_type(channels: Channels, channel: Channel) -> None:
    for kind in [*COMMON, "enum_or_const"]:
        for value in [*TRICKY, *NUMBERS]:
            assert_agree(channels, channel, kind, value)


@pytest.mark.parametrize("channel", list(Channel))
@settings(
    max_examples=60,
    deadline=None,
    database=None,
    # the sandbox and its account are shared by the examples on purpose: sends only add inbox entries
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(kind=KINDS, value=VALUES)
def test_generated_values_agree(channels: Channels, channel: Channel, kind: str, value: Any) -> None:
    assert_agree(channels, channel, kind, value)
