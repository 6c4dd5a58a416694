"""§2.3 keyword value rules: the reference's examples, then one property per rule."""

from __future__ import annotations

import json
import string
import unicodedata
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wxreach.wechat.keywords import (
    KNOWN_TYPES,
    Channel,
    check_keyword,
    check_value,
    keyword_type,
    warnings_for_key,
)

T, S = Channel.TEMPLATE, Channel.SUBSCRIBE
STATUS = ("已支付", "已退款")

ACCEPTED = [
    ("thing", "iPhone 15 蓝色 256G"),
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
    ("time", "15:01:30"),
    ("time", "9:30"),
    ("time", "2019年10月1日 15:01"),
    ("time", "3月5日 9:30~11:00"),
    ("time", "15:01~16:30"),
    ("time", "2020.05.06 08:30"),
    ("time", "2023-09-12 19:43"),  # UNCONFIRMED in §2.3: tolerated
    ("time", "2023-09-12T19:43"),  # ISO 8601, same UNCONFIRMED point
    ("date", "2019年10月1日"),
    ("date", "2019年10月"),
    ("date", "10月1日"),
    ("date", "2018-01-01"),
    ("date", "2018/01/01"),
    ("date", "2018.01.01"),
    ("date", "2018-01"),
    ("date", "01-01"),
    ("date", "2月29日"),
    ("date", "2020.05.06 08:30"),
    ("date", "2019年10月1日~2019年10月3日"),
    ("amount", "¥12.50"),
    ("amount", "$100元"),
    ("amount", "￥" + "1" * 12),
    ("phone_number", "+86-0766-66888866"),
    ("car_number", "粤A8Z888挂"),
    ("car_number", "AB1234"),
    ("name", "张三"),
    ("name", "Li Lei"),
    ("name", "阿卜杜·热合曼"),
    ("name", "x" * 20),
    ("phrase", "配送中"),
    ("const", "已支付"),
    ("const", ""),  # §2.3: "(or empty string)"
]

REFUSED = [
    ("thing", "中" * 21, "21 characters, at most 20"),
    ("thing", "", "is empty"),
    ("thing", "第一行\n第二行", "control character U+000A"),
    ("number", "12a", "not a number"),
    ("number", "-5", "not a number"),
    ("number", "9" * 33, "33 digits, at most 32"),
    ("letter", "abc1", "letters only"),
    ("letter", "a" * 33, "33 characters, at most 32"),
    ("symbol", "%%%%%%", "6 characters, at most 5"),
    ("symbol", "a!", "symbols only"),
    ("character_string", "订单123", "contains Chinese characters"),
    ("character_string", "A" * 33, "33 characters, at most 32"),
    ("character_string", "has space", "letters, digits and ASCII symbols only"),
    ("time", "25:00", "24-hour"),
    ("time", "15:60", "24-hour"),
    ("time", "2019年10月1日", "every point needs a time"),
    ("time", "3pm", "not in a documented form"),
    ("time", "1:00~2:00~3:00", "a range has two points"),
    ("date", "15:01", "starts without a date"),
    ("date", "2019年13月1日", "no such date"),
    ("date", "2019年2月29日", "no such date"),
    ("date", "2018-02-30", "no such date"),
    ("date", "2月30日", "no such date"),
    ("date", "2018-01/01", "not in a documented form"),
    ("date", "yesterday", "not in a documented form"),
    ("amount", "12.50", "currency symbol"),
    ("amount", "¥¥12", "one currency symbol"),
    ("amount", "¥12.5.0", "one currency symbol"),
    ("amount", "¥" + "1" * 13, "13 digits, at most 12"),
    ("phone_number", "1" * 18, "18 characters, at most 17"),
    ("phone_number", "tel:123", "digits and ASCII symbols only"),
    ("car_number", "粤A8Z888挂1", "9 characters, at most 8"),
    ("car_number", "粤粤粤", "only the first and last may be Chinese"),
    ("name", "张" * 11, "11 characters, at most 10"),
    ("name", "张三abcdefghi", "11 characters, at most 10"),
    ("name", "x" * 21, "21 characters, at most 20"),
    ("name", "R2D2", "letters and symbols only"),
    ("name", " Li", "starts or ends with a space"),
    ("phrase", "配送中了吗啊", "6 characters, at most 5"),
    ("phrase", "ok", "Chinese characters only"),
    ("const", "已取消", "not one of the approved values"),
    ("enum", "已取消", "not one of the approved values"),
    ("enum", "", "is empty"),
]


@pytest.mark.parametrize(("kind", "value"), ACCEPTED)
def test_reference_examples_are_accepted(kind: str, value: str) -> None:
    assert check_value(kind, value, T, enum=STATUS) is None


@pytest.mark.parametrize(("kind", "value", "reason"), REFUSED)
def test_bad_values_are_refused_with_a_reason(kind: str, value: str, reason: str) -> None:
    assert reason in (check_value(kind, value, T, enum=STATUS) or "accepted")


def test_check_keyword_puts_the_key_in_front() -> None:
    assert check_keyword("thing3", "中" * 23, T) == "thing3: 23 characters, at most 20"
    assert check_keyword("thing3", "中" * 20, T) is None


@pytest.mark.parametrize(
    ("key", "channel", "reason"),
    [
        ("const2", S, "const2: keyword type const exists only for template messages"),
        ("enum2", T, "enum2: keyword type enum exists only for subscription notifications"),
    ],
)
def test_a_type_of_the_other_channel_is_refused(key: str, channel: Channel, reason: str) -> None:
    assert check_keyword(key, "已支付", channel, enum=STATUS) == reason


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("thing7", ("thing", True)),
        ("character_string12", ("character_string", True)),
        ("phone_number3", ("phone_number", True)),
        ("short_thing3", ("short_thing", False)),
        ("foo", ("foo", False)),
    ],
)
def test_keyword_type_is_the_prefix_before_the_digits(key: str, expected: tuple[str, bool]) -> None:
    assert keyword_type(key) == expected


def test_undocumented_types_are_tolerated_but_reported() -> None:
    assert check_keyword("short_thing2", "任意长度的值" * 10, T) is None
    assert check_keyword("short_thing2", "", T) == "short_thing2: is empty"
    assert warnings_for_key("short_thing2") == (
        "short_thing2: keyword type short_thing is not documented; value not checked"
    )
    assert warnings_for_key("thing2") is None


def test_booleans_and_non_finite_numbers_are_refused() -> None:
    assert check_value("thing", True, T) is not None
    assert check_value("thing", float("nan"), T) is not None
    assert check_value("number", float("inf"), T) is not None


# --- properties ------------------------------------------------------------------------------
# no per-example deadline: the tests share CPUs with parallel workers, the rules are microseconds
RELAXED = settings(deadline=None)
KINDS = sorted(KNOWN_TYPES)
PRINTABLE = st.characters(exclude_categories=("Cc", "Cs"))
CONTROL = st.characters(categories=("Cc",))
CJK = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
CURRENCY = st.characters(categories=("Sc",))
ASCII_LETTERS = st.sampled_from(string.ascii_letters)
# one value per type that the rules accept: the base for "one bad character spoils it"
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
    "short_thing": "x",
}


@RELAXED
@given(st.text(PRINTABLE, min_size=1, max_size=20))
def test_thing_of_1_to_20_code_points_is_accepted(value: str) -> None:
    assert check_value("thing", value, T) is None


@RELAXED
@given(st.text(PRINTABLE, min_size=21, max_size=60))
def test_thing_over_20_code_points_is_refused(value: str) -> None:
    assert check_value("thing", value, S) == f"{len(value)} characters, at most 20"


@RELAXED
@given(st.sampled_from(sorted(GOOD)), st.sampled_from(list(Channel)), CONTROL, st.integers(0, 20))
def test_a_control_character_is_refused_in_every_type(
    kind: str, channel: Channel, control: str, at: int
) -> None:
    base = GOOD[kind]
    value = base[:at] + control + base[at:]
    assert (
        check_value(kind, value, channel, enum=[*STATUS, value]) == f"control character U+{ord(control):04X}"
    )


@RELAXED
@given(st.text(string.ascii_letters + string.digits + "-_#", max_size=20), CJK, st.integers(0, 20))
def test_character_string_with_any_chinese_is_refused(base: str, chinese: str, at: int) -> None:
    value = base[:at] + chinese + base[at:]
    assert check_value("character_string", value, T) == "contains Chinese characters"


@RELAXED
@given(st.text(string.ascii_letters + string.digits + string.punctuation, min_size=1, max_size=32))
def test_character_string_of_ascii_up_to_32_is_accepted(value: str) -> None:
    assert check_value("character_string", value, S) is None


@RELAXED
@given(CURRENCY, st.integers(1, 16), st.integers(0, 16), st.booleans(), st.sampled_from(list(Channel)))
def test_amount_digit_limit_is_12_for_templates_and_10_for_subscriptions(
    currency: str, digits: int, decimals: int, yuan: bool, channel: Channel
) -> None:
    decimals = min(decimals, digits - 1)
    body = "7" * (digits - decimals) + ("." + "5" * decimals if decimals else "")
    value = currency + body + ("元" if yuan else "")
    limit = 12 if channel is T else 10
    reason = check_value("amount", value, channel)
    assert reason == (None if digits <= limit else f"{digits} digits, at most {limit}")


@RELAXED
@given(st.text(string.digits, min_size=1, max_size=40), st.text(string.digits, max_size=10))
def test_number_is_digits_with_optional_decimals_up_to_32(whole: str, fraction: str) -> None:
    value = whole + ("." + fraction if fraction else "")
    digits = len(whole) + len(fraction)
    assert (check_value("number", value, T) is None) == (digits <= 32)


@RELAXED
@given(
    st.text(ASCII_LETTERS, min_size=1, max_size=32), st.characters(exclude_characters=string.ascii_letters)
)
def test_letter_is_ascii_letters_only(value: str, other: str) -> None:
    assert check_value("letter", value, T) is None
    assert check_value("letter", value + other, T) is not None


@RELAXED
@given(st.text(st.characters(categories=("P", "S")), min_size=1, max_size=8))
def test_symbol_is_up_to_5_punctuation_or_symbols(value: str) -> None:
    assert (check_value("symbol", value, S) is None) == (len(value) <= 5)


@RELAXED
@given(st.text(CJK, min_size=1, max_size=8))
def test_phrase_is_up_to_5_chinese_characters(value: str) -> None:
    assert (check_value("phrase", value, S) is None) == (len(value) <= 5)


@RELAXED
@given(st.text(CJK, min_size=1, max_size=6), st.text(ASCII_LETTERS, max_size=6))
def test_name_with_chinese_counts_everything_against_10(chinese: str, latin: str) -> None:
    value = chinese + latin
    assert (check_value("name", value, T) is None) == (len(value) <= 10)


@RELAXED
@given(st.lists(st.text(ASCII_LETTERS, min_size=1, max_size=8), min_size=1, max_size=4), st.integers(0, 9))
def test_latin_name_is_up_to_20_letters_and_inner_spaces_without_digits(words: list[str], digit: int) -> None:
    value = " ".join(words)
    assert (check_value("name", value, S) is None) == (len(value) <= 20)
    assert check_value("name", value + str(digit), S) is not None


@st.composite
def dates(draw: st.DrawFn) -> tuple[date, str]:
    day = draw(st.dates(min_value=date(1900, 1, 1), max_value=date(2999, 12, 31)))
    y, m, d = day.year, day.month, day.day
    joiner = draw(st.sampled_from("-/."))
    pad = draw(st.booleans())
    mm, dd = (f"{m:02d}", f"{d:02d}") if pad else (str(m), str(d))
    form = draw(
        st.sampled_from(
            [
                f"{y}年{m}月{d}日",
                f"{y}年{m}月",
                f"{m}月{d}日",
                f"{y}{joiner}{mm}{joiner}{dd}",
                f"{y}{joiner}{mm}",
                f"{mm}{joiner}{dd}",
            ]
        )
    )
    return day, form


TIMES = st.builds(
    lambda h, mi, s, pad: (f"{h:02d}" if pad else str(h)) + f":{mi:02d}" + ("" if s is None else f":{s:02d}"),
    st.integers(0, 23),
    st.integers(0, 59),
    st.none() | st.integers(0, 59),
    st.booleans(),
)


@RELAXED
@given(dates(), st.none() | TIMES)
def test_every_documented_date_form_of_a_real_date_is_accepted(
    dated: tuple[date, str], time: str | None
) -> None:
    _, text = dated
    value = text if time is None else f"{text} {time}"
    assert check_value("date", value, T) is None


@RELAXED
@given(st.integers(2000, 2100), st.integers(1, 12), st.integers(29, 39), st.sampled_from("-/."))
def test_dates_must_exist(year: int, month: int, day: int, joiner: str) -> None:
    try:
        date(year, month, day)
        exists = True
    except ValueError:
        exists = False
    for value in (f"{year}年{month}月{day}日", f"{year}{joiner}{month:02d}{joiner}{day:02d}"):
        assert (check_value("date", value, T) is None) == exists


@RELAXED
@given(st.none() | dates(), TIMES, st.none() | TIMES)
def test_time_is_24_hour_optionally_after_a_date_and_ranges(
    dated: tuple[date, str] | None, start: str, end: str | None
) -> None:
    point = start if dated is None else f"{dated[1]} {start}"
    value = point if end is None else f"{point}~{end}"
    assert check_value("time", value, S) is None


@RELAXED
@given(st.integers(24, 99), st.integers(0, 59))
def test_time_past_23_hours_is_refused(hour: int, minute: int) -> None:
    assert check_value("time", f"{hour}:{minute:02d}", T) is not None


@RELAXED
@given(st.sampled_from(KINDS), st.sampled_from(list(Channel)))
def test_empty_is_refused_except_const(kind: str, channel: Channel) -> None:
    reason = check_value(kind, "", channel, enum=STATUS)
    assert reason == (None if kind == "const" else "is empty")


@RELAXED
@given(st.text(PRINTABLE, min_size=1, max_size=30), st.lists(st.text(PRINTABLE, max_size=25), max_size=4))
def test_const_and_enum_accept_only_approved_values(value: str, approved: list[str]) -> None:
    listed = value in approved
    assert (check_value("enum", value, S, enum=approved) is None) == listed
    assert (check_value("const", value, T, enum=approved) is None) == (listed and len(value) <= 20)


@RELAXED
@given(
    st.text(string.ascii_lowercase + "_", min_size=1, max_size=12).filter(lambda k: k not in KNOWN_TYPES),
    st.text(PRINTABLE, min_size=1, max_size=60),
)
def test_unknown_types_pass_after_the_universal_checks(kind: str, value: str) -> None:
    assert check_value(kind, value, T) is None


@RELAXED
@given(st.sampled_from(KINDS), st.integers(1, 99))
def test_keyword_type_of_a_known_type(kind: str, number: int) -> None:
    assert keyword_type(f"{kind}{number}") == (kind, True)


@RELAXED
@given(
    st.sampled_from(KINDS) | st.text(string.ascii_lowercase + "_", min_size=1, max_size=10),
    st.integers(1, 99),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=30) | st.integers() | st.floats(),
    st.sampled_from(list(Channel)),
)
def test_a_keyword_reason_always_starts_with_the_key(
    kind: str, number: int, value: str | int | float, channel: Channel
) -> None:
    key = f"{kind}{number}"
    reason = check_keyword(key, value, channel, enum=STATUS)
    assert reason is None or reason.startswith(f"{key}: ")
    if reason is None:
        assert check_value(kind, value, channel, enum=STATUS) is None


@RELAXED
@given(
    st.sampled_from(KINDS),
    st.integers(-(10**40), 10**40) | st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(list(Channel)),
)
def test_numbers_are_checked_as_their_json_text(kind: str, number: int | float, channel: Channel) -> None:
    assert check_value(kind, number, channel, enum=STATUS) == check_value(
        kind, json.dumps(number), channel, enum=STATUS
    )


def test_control_characters_are_category_cc() -> None:
    # the property tests draw from Cc; make sure the category means what the rule says
    assert {unicodedata.category(ch) for ch in "\n\t\x00\x7f\x85"} == {"Cc"}
