"""§2.3 keyword value rules as pure functions (the HTTP tests cover the 47003 wiring)."""

from __future__ import annotations

import pytest

from local.sandbox.keyword_rules import Family, check_value, keyword_type

T, S = Family.TEMPLATE, Family.SUBSCRIPTION

VALID = [
    ("thing", "iPhone 15 Pro 256G 蓝色，含运费"[:20]),
    ("thing", "中" * 20),
    ("number", "12345"),
    ("number", "3.14"),
    ("number", "9" * 32),
    ("letter", "abcXYZ"),
    ("symbol", "%$#"),
    ("symbol", "！？"),
    ("character_string", "ORD-2024_06/01#9"),
    ("character_string", "A" * 32),
    ("time", "15:01"),
    ("time", "2019年10月1日 15:01"),
    ("time", "15:01~16:30"),
    ("time", "2023-09-12 19:43"),
    ("time", "2023-09-12T19:43"),
    ("time", "15:01:30"),
    ("time", "3月5日 9:30~11:00"),
    ("time", "2020.05.06 08:30"),
    ("time", "2019年10月1日15:01"),
    ("date", "2019年10月1日"),
    ("date", "2019年10月1日 15:01"),
    ("date", "2019年10月1日~2019年10月3日"),
    ("date", "2019年10月"),
    ("date", "10月1日"),
    ("date", "2月29日"),
    ("date", "2018-01-01"),
    ("date", "2018/01/01"),
    ("date", "2018.01.01"),
    ("date", "2018-01"),
    ("date", "01-01"),
    ("date", "2018/1/1"),
    ("date", "2020.05.06 08:30"),
    ("date", "2019年10月1日 08:00~10:00"),
    ("amount", "¥12.50"),
    ("amount", "$100元"),
    ("amount", "￥" + "1" * 12),
    ("phone_number", "+86-0766-66888866"),
    ("car_number", "粤A8Z888挂"),
    ("car_number", "AB1234"),
    ("name", "张三"),
    ("name", "Li Lei"),
    ("name", "x" * 20),
    ("phrase", "配送中"),
]

INVALID = [
    ("thing", "中" * 21),
    ("number", "12a"),
    ("number", "-5"),
    ("number", "9" * 33),
    ("letter", "abc1"),
    ("letter", "a" * 33),
    ("symbol", "%%%%%%"),
    ("symbol", "a!"),
    ("symbol", "\n"),
    ("character_string", "订单123"),
    ("character_string", "A" * 33),
    ("character_string", "has space"),
    ("time", "25:00"),
    ("time", "2019年10月1日"),
    ("time", "3pm"),
    ("date", "15:01"),
    ("date", "2019年13月1日"),
    ("date", "yesterday"),
    ("date", "2019年2月29日"),
    ("date", "2月30日"),
    ("date", "2018-02-30"),
    ("date", "2018-01/01"),
    ("date", "2018.01.0110:00"),
    ("date", "2018/01/01T10:00"),
    ("time", "15:01~16:00~17:00"),
    ("time", "15:61"),
    ("time", "15:01:60"),
    ("amount", "12.50"),
    ("amount", "¥¥12"),
    ("amount", "¥12.5.0"),
    ("amount", "¥" + "1" * 13),
    ("phone_number", "1" * 18),
    ("phone_number", "tel:123"),
    ("car_number", "粤A8Z888挂1"),
    ("car_number", "粤粤粤"),
    ("name", "张" * 11),
    ("name", "张三abcdefghi"),
    ("name", "x" * 21),
    ("name", "R2D2"),
    ("phrase", "配送中了吗啊"),
    ("phrase", "ok"),
]


@pytest.mark.parametrize(("kind", "value"), VALID)
def test_valid_values_pass(kind: str, value: str) -> None:
    assert check_value(T, kind, value) is None


@pytest.mark.parametrize(("kind", "value"), INVALID)
def test_invalid_values_fail(kind: str, value: str) -> None:
    assert check_value(T, kind, value) == "invalid"


@pytest.mark.parametrize("kind", ["thing", "number", "time", "amount", "phrase", "enum"])
def test_empty_value_is_reported_as_empty(kind: str) -> None:
    assert check_value(S, kind, "", ("a",)) == "empty"


def test_amount_allows_12_digits_for_templates_but_10_for_subscriptions() -> None:
    eleven = "¥" + "1" * 11
    assert check_value(T, "amount", eleven) is None
    assert check_value(S, "amount", eleven) == "invalid"
    assert check_value(S, "amount", "¥" + "1" * 10) is None


def test_const_accepts_only_its_enumeration_or_empty() -> None:
    values = ("已支付", "已退款")
    assert check_value(T, "const", "已支付", values) is None
    assert check_value(T, "const", "", values) is None  # §2.3: "(or empty string)"
    assert check_value(T, "const", "已取消", values) == "invalid"


def test_enum_accepts_only_its_values() -> None:
    assert check_value(S, "enum", "已发货", ("待发货", "已发货")) is None
    assert check_value(S, "enum", "已签收", ("待发货", "已发货")) == "invalid"


def test_iso_datetimes_can_be_refused_but_iso_dates_cannot() -> None:
    # `2018-01-01` is a documented form; a `-`-joined date followed by a time is UNCONFIRMED (§2.3)
    for value in ("2023-09-12", "2023-09", "09-12", "2023/09/12 19:43"):
        assert check_value(T, "date", value, iso_datetime=False) is None
    for value in ("2023-09-12 19:43", "2023-09-12T19:43", "09-12 19:43"):
        assert check_value(T, "date", value, iso_datetime=True) is None
        assert check_value(T, "date", value, iso_datetime=False) == "invalid"
        assert check_value(T, "time", value, iso_datetime=False) == "invalid"


GOOD = {
    "thing": "咖啡豆",
    "number": "12",
    "letter": "abc",
    "symbol": "%#",
    "character_string": "ORD-1",
    "time": "15:01",
    "date": "2019年10月1日",
    "amount": "¥8",
    "phone_number": "+86-0766",
    "car_number": "粤A8Z888",
    "name": "Li Lei",
    "phrase": "配送中",
    "const": "已支付",
    "enum": "已支付",
}


@pytest.mark.parametrize("kind", sorted(GOOD))
@pytest.mark.parametrize("control", ["\n", "\t", "\r", "\x00", "\x7f", "\x85"])
def test_control_characters_are_refused_in_every_type(kind: str, control: str) -> None:
    family = S if kind == "enum" else T
    good = GOOD[kind]
    assert check_value(family, kind, good, (good,)) is None
    for value in (good + control, control + good, good[:1] + control + good[1:]):
        assert check_value(family, kind, value, (good, value)) == "invalid", repr(value)


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("thing7", "thing"),
        ("character_string12", "character_string"),
        ("phone_number3", "phone_number"),
        ("x", None),
    ],
)
def test_keyword_type_is_the_prefix(key: str, kind: str | None) -> None:
    assert keyword_type(key) == kind
