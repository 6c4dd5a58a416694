"""Keyword value rules of §2.3, for template messages and subscription notifications.

A keyword's type is the prefix of its key (`thing7` → thing). `check_value` answers None when the
value is acceptable, otherwise the reason WeChat reports ("empty" or "invalid").
"""

from __future__ import annotations

import re
import string
import unicodedata
from datetime import date
from enum import StrEnum

from local.sandbox import limits


class Family(StrEnum):
    TEMPLATE = "template"
    SUBSCRIPTION = "subscription"


_COMMON_TYPES = frozenset(
    {
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
    }
)
# const exists only for template messages, enum only for subscription notifications (§2.3).
TYPES: dict[Family, frozenset[str]] = {
    Family.TEMPLATE: _COMMON_TYPES | {"const"},
    Family.SUBSCRIPTION: _COMMON_TYPES | {"enum"},
}
ENUMERATED_TYPES = frozenset({"const", "enum"})

_KEY = re.compile(r"^([a-z_]+?)(\d+)$")
_ASCII_DIGITS = frozenset(string.digits)
_ASCII_LETTERS = frozenset(string.ascii_letters)
_ASCII_SYMBOLS = frozenset(string.punctuation)
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# date forms of the product manual (§2.3), longest first: match() takes the first that fits
_DATES_CN = (
    re.compile(r"(?P<y>[0-9]{4})年(?P<m>[0-9]{1,2})月(?P<d>[0-9]{1,2})日"),
    re.compile(r"(?P<y>[0-9]{4})年(?P<m>[0-9]{1,2})月"),
    re.compile(r"(?P<m>[0-9]{1,2})月(?P<d>[0-9]{1,2})日"),
)
_DATES_JOINED = (
    re.compile(r"(?P<y>[0-9]{4})(?P<sep>[-/.])(?P<m>[0-9]{1,2})(?P=sep)(?P<d>[0-9]{1,2})"),
    re.compile(r"(?P<y>[0-9]{4})(?P<sep>[-/.])(?P<m>[0-9]{1,2})"),
    re.compile(r"(?P<m>[0-9]{1,2})(?P<sep>[-/.])(?P<d>[0-9]{1,2})"),
)
_LEAP_YEAR = 2000  # a month-day date has no year; 2月29日 exists
_TIME = re.compile(r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?")


def keyword_type(key: str) -> str | None:
    """`character_string12` → `character_string`; None when the key has no trailing number."""
    match = _KEY.match(key)
    return match.group(1) if match else None


def is_chinese(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF  # CJK Unified Ideographs
        or 0x3400 <= cp <= 0x4DBF  # Extension A
        or 0xF900 <= cp <= 0xFAFF  # Compatibility Ideographs
        or 0x20000 <= cp <= 0x323AF  # Extensions B..H (and the compatibility supplement)
    )


def is_symbol(ch: str) -> bool:
    """Punctuation or symbol (Unicode P*/S*): no letters, digits, spaces or control characters."""
    return unicodedata.category(ch)[0] in "PS"


def _decimal_digits(text: str) -> int | None:
    """Digit count of a plain decimal (`12.50` → 4), None when it is not one."""
    if not _DECIMAL.fullmatch(text):
        return None
    return sum(ch in _ASCII_DIGITS for ch in text)


def _valid_date(y: str | None, m: str, d: str | None) -> bool:
    try:
        date(int(y) if y else _LEAP_YEAR, int(m), int(d) if d else 1)
    except ValueError:
        return False
    return True


def _match_date(text: str) -> tuple[re.Match[str], bool] | None:
    """The date at the start of `text` and whether it is Chinese (年月日), None when there is none."""
    for pattern in _DATES_CN:
        match = pattern.match(text)
        if match:
            return match, True
    for pattern in _DATES_JOINED:
        match = pattern.match(text)
        if match:
            return match, False
    return None


def _time_after_date(match: re.Match[str], chinese: bool, rest: str, *, iso: bool) -> str | None:
    """What must be a time after a date: `10月1日15:01` needs no space, `2020.05.06 08:30` does."""
    if chinese:
        return rest.lstrip(" ")
    hyphen = match.groupdict().get("sep") == "-"
    if hyphen and not iso:
        return None  # `2023-09-12 19:43` is UNCONFIRMED (§2.3): refused when strict
    if rest.startswith(" "):
        return rest.lstrip(" ")
    if rest.startswith("T") and hyphen and match.groupdict().get("y") and match.groupdict().get("d"):
        return rest[1:]  # ISO 8601 `2023-09-12T19:43`, as UNCONFIRMED as the space form
    return None


def _parse_point(text: str, *, iso: bool) -> tuple[bool, bool] | None:
    """One date/time point → (has_date, has_time), None when malformed."""
    text = text.strip(" ")  # spaces around `~` and the point
    rest: str | None = text
    has_date = False
    found = _match_date(text)
    if found:
        match, chinese = found
        fields = match.groupdict()
        if not _valid_date(fields.get("y"), fields["m"], fields.get("d")):
            return None
        has_date, rest = True, text[match.end() :]
        if rest:
            rest = _time_after_date(match, chinese, rest, iso=iso)
            if rest is None:
                return None
    if not rest:
        return (True, False) if has_date else None
    time_match = _TIME.fullmatch(rest)
    if not time_match:
        return None
    hour, minute, second = time_match.groups()
    if int(hour) > 23 or int(minute) > 59 or (second is not None and int(second) > 59):
        return None
    return has_date, True


def _check_datetime(value: str, *, need: str, iso: bool) -> bool:
    """time: every point carries a time; date: the first point carries a date. `~` joins a range."""
    parts = value.split("~")
    if len(parts) > 2:
        return False
    points = [_parse_point(part, iso=iso) for part in parts]
    if any(point is None for point in points):
        return False
    if need == "time":
        return all(point is not None and point[1] for point in points)
    first = points[0]
    return first is not None and first[0]


def _check_amount(value: str, max_digits: int) -> bool:
    # exactly one leading currency symbol, then digits (decimals allowed), optionally ending with 元
    if len(value) < 2 or unicodedata.category(value[0]) != "Sc":
        return False
    body = value[1:]
    if body.endswith("元"):
        body = body[:-1]
    digits = _decimal_digits(body)
    return digits is not None and digits <= max_digits


def _check_name(value: str) -> bool:
    if any(is_chinese(ch) for ch in value):
        # mixed Chinese + letters counts as Chinese: ≤ 10 characters in total
        allowed = all(is_chinese(ch) or ch in _ASCII_LETTERS or is_symbol(ch) for ch in value)
        return allowed and len(value) <= limits.NAME_MAX_CHINESE
    # Latin names: letters and symbols; inner spaces accepted ("Li Lei") as a sandbox choice
    allowed = all(ch in _ASCII_LETTERS or is_symbol(ch) or ch == " " for ch in value)
    has_letter = any(ch in _ASCII_LETTERS for ch in value)
    return allowed and has_letter and value == value.strip() and len(value) <= limits.NAME_MAX_LATIN


def _check_car_number(value: str) -> bool:
    if len(value) > limits.CAR_NUMBER_MAX:
        return False
    middle = value
    if middle and is_chinese(middle[0]):
        middle = middle[1:]
    if middle and is_chinese(middle[-1]):
        middle = middle[:-1]
    return bool(middle) and all(ch in _ASCII_LETTERS or ch in _ASCII_DIGITS for ch in middle)


def check_value(
    family: Family,
    kind: str,
    value: str,
    enum_values: tuple[str, ...] = (),
    *,
    iso_datetime: bool = True,
) -> str | None:
    """None if `value` satisfies type `kind`; otherwise "empty" or "invalid".

    `iso_datetime=False` refuses a `-`-joined date followed by a time (`2023-09-12 19:43`, UNCONFIRMED).
    """
    if value == "":
        # const alone accepts the empty string (§2.3 table); everything else reports "is empty"
        return None if kind == "const" else "empty"
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        return "invalid"  # no newline, tab or other control character in any type (§2.3)
    ok: bool
    match kind:
        case "thing":
            ok = len(value) <= limits.THING_MAX
        case "number":
            digits = _decimal_digits(value)
            ok = digits is not None and digits <= limits.NUMBER_MAX_DIGITS
        case "letter":
            ok = len(value) <= limits.LETTER_MAX and all(ch in _ASCII_LETTERS for ch in value)
        case "symbol":
            ok = len(value) <= limits.SYMBOL_MAX and all(is_symbol(ch) for ch in value)
        case "character_string":
            ok = len(value) <= limits.CHARACTER_STRING_MAX and all(
                ch in _ASCII_LETTERS or ch in _ASCII_DIGITS or ch in _ASCII_SYMBOLS for ch in value
            )
        case "time" | "date":
            ok = _check_datetime(value, need=kind, iso=iso_datetime)
        case "amount":
            max_digits = (
                limits.AMOUNT_MAX_DIGITS_TEMPLATE
                if family is Family.TEMPLATE
                else limits.AMOUNT_MAX_DIGITS_SUBSCRIPTION
            )
            ok = _check_amount(value, max_digits)
        case "phone_number":
            ok = (
                len(value) <= limits.PHONE_NUMBER_MAX
                and all(ch in _ASCII_DIGITS or ch in _ASCII_SYMBOLS for ch in value)
                and any(ch in _ASCII_DIGITS for ch in value)
            )
        case "car_number":
            ok = _check_car_number(value)
        case "name":
            ok = _check_name(value)
        case "phrase":
            ok = len(value) <= limits.PHRASE_MAX and all(is_chinese(ch) for ch in value)
        case "const":
            ok = len(value) <= limits.CONST_MAX and value in enum_values
        case "enum":
            ok = value in enum_values
        case _:
            ok = False
    return None if ok else "invalid"
