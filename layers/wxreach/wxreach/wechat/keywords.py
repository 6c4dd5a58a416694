"""Keyword value rules of template messages and subscription notifications (reference §2.3).

The engine checks every value before it calls WeChat, so a value WeChat would refuse with 47003
fails the recipient with a precise reason instead of costing a call. It runs per recipient: plain
string scans and precompiled patterns, no I/O.

Where the reference marks a point UNCONFIRMED, the check tolerates it: a value refused here can
never be sent, a value wrongly accepted costs one 47003.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Sequence
from datetime import date
from enum import StrEnum
from functools import lru_cache
from typing import Final


class Channel(StrEnum):
    TEMPLATE = "template"  # 模板消息
    SUBSCRIBE = "subscribe"  # 订阅通知 (bizsend)


# --- every limit of §2.3, in code points -------------------------------------------------------
THING_MAX_CHARS: Final = 20
NUMBER_MAX_DIGITS: Final = 32
LETTER_MAX_CHARS: Final = 32
SYMBOL_MAX_CHARS: Final = 5
CHARACTER_STRING_MAX_CHARS: Final = 32
AMOUNT_MAX_DIGITS: Final = {Channel.TEMPLATE: 12, Channel.SUBSCRIBE: 10}
PHONE_NUMBER_MAX_CHARS: Final = 17
CAR_NUMBER_MAX_CHARS: Final = 8
NAME_MAX_CHINESE_CHARS: Final = 10  # any Chinese character makes the whole name count as Chinese
NAME_MAX_LATIN_CHARS: Final = 20
PHRASE_MAX_CHARS: Final = 5
CONST_MAX_CHARS: Final = 20
YEAR_DIGITS: Final = 4
MAX_RANGE_POINTS: Final = 2  # `a~b`
LEAP_YEAR: Final = 2000  # m月d日 has no year: 2月29日 exists
# CJK Unified Ideographs (+ Ext A..H) and the compatibility blocks; unassigned gaps count as Chinese.
CHINESE_RANGES: Final = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x323AF))

_COMMON_TYPES: Final = frozenset(
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
KNOWN_TYPES: Final = _COMMON_TYPES | {"const", "enum"}
CHANNEL_TYPES: Final = {
    Channel.TEMPLATE: _COMMON_TYPES | {"const"},
    Channel.SUBSCRIBE: _COMMON_TYPES | {"enum"},
}
_CHANNEL_NAMES: Final = {
    Channel.TEMPLATE: "template messages",
    Channel.SUBSCRIBE: "subscription notifications",
}

_ASCII_LETTERS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_ASCII_DIGITS: Final = frozenset("0123456789")
_ASCII_SYMBOLS: Final = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_DECIMAL: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_AMOUNT_BODY: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)元?")

# Date and time points. [0-9], never \d (which takes any script's digits).
_TIME: Final = r"(?P<hh>[0-9]{1,2}):(?P<mi>[0-9]{2})(?::(?P<ss>[0-9]{2}))?"
_CHINESE_DATES: Final = (
    r"(?P<y>[0-9]{4})年(?P<m>[0-9]{1,2})月(?P<d>[0-9]{1,2})日",
    r"(?P<y>[0-9]{4})年(?P<m>[0-9]{1,2})月",
    r"(?P<m>[0-9]{1,2})月(?P<d>[0-9]{1,2})日",
)
_JOINED_DATES: Final = (
    r"(?P<y>[0-9]{4})(?P<j>[-/.])(?P<m>[0-9]{1,2})(?P=j)(?P<d>[0-9]{1,2})",
    r"(?P<y>[0-9]{4})(?P<j>[-/.])(?P<m>[0-9]{1,2})",
    r"(?P<m>[0-9]{1,2})(?P<j>[-/.])(?P<d>[0-9]{1,2})",
)
# A Chinese date may run straight into its time (`10月1日15:01`); a joined date needs a space.
_POINTS: Final = (
    *(re.compile(f"{form}(?: *{_TIME})?") for form in _CHINESE_DATES),
    *(re.compile(f"{form}(?: +{_TIME})?") for form in _JOINED_DATES),
    # ISO 8601 `2023-09-12T19:43`: UNCONFIRMED like `2023-09-12 19:43` (§2.3), tolerated
    re.compile(f"(?P<y>[0-9]{{4}})-(?P<m>[0-9]{{1,2}})-(?P<d>[0-9]{{1,2}})T{_TIME}"),
    re.compile(_TIME),
)

TIME_FORMS: Final = "HH:MM or HH:MM:SS, optionally after a date; a range a~b"
DATE_FORMS: Final = "y年m月d日, y年m月, m月d日, 2018-01-01, 2018/01/01, 2018.01.01, 2018-01, 01-01"


def describe_rule(kind: str, channel: Channel) -> str:
    """The rule of a keyword type on a channel, in words, for operators (template detail)."""
    rules = {
        "thing": f"up to {THING_MAX_CHARS} characters of any kind",
        "number": f"digits only (decimals allowed), up to {NUMBER_MAX_DIGITS}",
        "letter": f"up to {LETTER_MAX_CHARS} ASCII letters",
        "symbol": f"up to {SYMBOL_MAX_CHARS} punctuation or symbol characters",
        "character_string": (
            f"up to {CHARACTER_STRING_MAX_CHARS} ASCII letters, digits and symbols; no Chinese"
        ),
        "time": TIME_FORMS,
        "date": DATE_FORMS + "; optionally a 24-hour time; a range a~b",
        "amount": f"one currency symbol, then up to {AMOUNT_MAX_DIGITS[channel]} digits (decimals allowed), "
        "optionally ending in 元",
        "phone_number": f"up to {PHONE_NUMBER_MAX_CHARS} digits and symbols",
        "car_number": f"up to {CAR_NUMBER_MAX_CHARS} characters; first and last may be Chinese, the rest "
        "letters and digits",
        "name": f"up to {NAME_MAX_CHINESE_CHARS} characters with Chinese, else up to {NAME_MAX_LATIN_CHARS} "
        "letters and symbols",
        "phrase": f"up to {PHRASE_MAX_CHARS} Chinese characters",
        "const": f"one of the approved values (up to {CONST_MAX_CHARS} characters), or empty",
        "enum": "one of the template's enumerated values",
    }
    if kind in rules and kind not in CHANNEL_TYPES[channel]:
        return f"not a keyword type of {_CHANNEL_NAMES[channel]}"
    text = rules.get(kind, "undocumented type: only 'not empty' and 'no control characters' are checked")
    return text + ("; never empty" if kind != "const" else "") + "; no control characters"


def is_chinese(ch: str) -> bool:
    cp = ord(ch)
    return any(low <= cp <= high for low, high in CHINESE_RANGES)


def _is_symbol(ch: str) -> bool:
    """Punctuation or symbol (Unicode P*/S*): never a letter, digit, space or control character."""
    return unicodedata.category(ch)[0] in "PS"


@lru_cache(maxsize=1024)
def keyword_type(key: str) -> tuple[str, bool]:
    """`thing7` -> ("thing", True); `short_thing3` -> ("short_thing", False); `foo` -> ("foo", False).
    The prefix before the trailing digits is the type; unknown prefixes are tolerated (known=False)."""
    kind = key.rstrip("0123456789")
    return kind, kind in KNOWN_TYPES


def warnings_for_key(key: str) -> str | None:
    """A line for the log when a key's type is not in §2.3 (its values pass unchecked)."""
    kind, known = keyword_type(key)
    if known:
        return None
    return f"{key}: keyword type {kind} is not documented; value not checked"


def check_keyword(
    key: str, value: str | int | float, channel: Channel, *, enum: Sequence[str] = ()
) -> str | None:
    """`check_value` for the key's type, with the key in front: "thing3: 23 characters, at most 20".
    Also refuses a type that does not exist on the channel (const is template-only, enum
    subscribe-only)."""
    kind, known = keyword_type(key)
    if known and kind not in CHANNEL_TYPES[channel]:
        other = next(c for c in Channel if kind in CHANNEL_TYPES[c])
        return f"{key}: keyword type {kind} exists only for {_CHANNEL_NAMES[other]}"
    reason = check_value(kind, value, channel, enum=enum)
    return None if reason is None else f"{key}: {reason}"


def check_value(
    kind: str, value: str | int | float, channel: Channel, *, enum: Sequence[str] = ()
) -> str | None:
    """None when `value` is acceptable for keyword type `kind`, else the reason (without the key).
    Numbers are checked as the JSON text WeChat receives; unknown types pass the universal checks
    (not empty, no control characters) and nothing else."""
    if isinstance(value, bool):
        return "is a boolean, not text or a number"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return "not a finite number (JSON has no NaN or Infinity)"
        text = json.dumps(value)
    else:
        text = value
    if not text:
        return None if kind == "const" else "is empty"
    for ch in text:
        category = unicodedata.category(ch)
        if category == "Cc":
            return f"control character U+{ord(ch):04X}"
        if category == "Cs":
            return f"not valid Unicode (lone surrogate U+{ord(ch):04X})"
    rule = _RULES.get(kind)
    if rule is None:
        return None  # undocumented type (short_thing...): UNCONFIRMED, tolerated
    return rule(text, channel, enum)


# --- one function per type; `text` is non-empty and free of control characters -----------------
def _too_long(text: str, limit: int) -> str | None:
    return f"{len(text)} characters, at most {limit}" if len(text) > limit else None


def _thing(text: str, channel: Channel, enum: Sequence[str]) -> str | None:
    return _too_long(text, THING_MAX_CHARS)


def _number(text: str, channel: Channel, enum: Sequence[str]) -> str | None:
    if not _DECIMAL.fullmatch(text):
        return "not a number: digits only, decimals allowed"
    digits = len(text) - text.count(".")
    return f"{digits} digits, at most {NUMBER_MAX_DIGITS}" if digits > NUMBER_MAX_DIGITS else None


def _letter(text: str, channel: Channel, enum: Sequence[str]) -> str | None:
    if not _ASCII_LETTERS.issuperset(text):
        return "letters only (A-Z, a-z)"
    return _too_long(text, LETTER_MAX_CHARS)


def _symbol(text: str, channel: Channel, enum: Sequence[str]) -> str | None:
    if not all(_is_symbol(ch) for ch in text):
        return "symbols only (no letters, digits, Chinese or spaces)"
    return _too_long(text, SYMBOL_MAX_CHARS)


_CHARACTER_STRING_CHARS: Final = _ASCII_LETTERS | _ASCII_DIGITS | _ASCII_SYMBOLS


def _character_string(text: str, channel: Channel, enum: Sequence[str]) -> str | None:
    if not _CHARACTER_STRING_CHARS.issuperset(text):
        if any(is_chinese(ch) for ch in text):
            return "contains Chinese characters"
        return "letters, digits and ASCII symbols only (no spaces)"
    return _too_long(text, CHARACTER_STRING_MAX_CHARS)


def _date_exists(year: str | None, month: str, day: str | None) -> bool:
    try:
        date(int(year) if year else LEAP_YEAR, int(month), int(day) if day else 1)
    except ValueError:
        return False
    return True


def _point(text: str) -> tuple[bool, bool] | str:
    """One date/time point -> (has_date, has_time), or the reason it is malformed."""
    text = text.strip(" ")
    for pattern in _POINTS:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        fields = match.groupdict()
        has_date = "m" in fields
        if has_date and not _date_exists(fields.get("y"), fields["m"], fields.get("d")):
            return "no such date"
        has_time = fields["hh"] is not None
        if has_time and (int(fields["hh"]) > 23 or int(fields["mi"]) > 59 or int(fields["ss"] or 0) > 59):
            return "hour, minute or second out of range (24-hour time)"
        return has_date, has_time
    return ""


def _points(text: str, forms: str) -> list[tuple[bool, bool]] | str:
    parts = text.split("~")
    if len(parts) > MAX_RANGE_POINTS:
        return f"a range has two points ({forms})"
    points: list[tuple[bool, bool]] = []
    for part in parts:
        point = _point(part)
        if isinstance(point, str):
            return point or f"not in a documented form ({forms})"
        points.append(point)
    return points


def _time(text: str, channel: Channel, enum: Sequence[str]) -> str | None:
    points = _points(text, TIME_FORMS)
    if isinstance(points, str):
        return points
    if not all(has_time for _, has_time in points):
        return f"every point needs a time ({TIME_FORMS})"
    return None


def _date(text: str, channel: Channel, enum: Sequence[str]) -> str | None:
    points = _points(text, DATE_FORMS)
    if isinstance(points, str):
        return points
    if not points[0][0]:
        return f"starts without a date ({DATE_FORMS})"
    return None


def _amount(text: str, channel: Channel, enum: Sequence[str]) -> str | None:
    if unicodedata.category(text[0]) != "Sc":
        return "must start with a currency symbol (¥, $, …)"
    match = _AMOUNT_BODY.fullmatch(text, 1)
    if match is None:
        return "one currency symbol, then digits with optional decimals, optionally ending with 元"
    digits = len(match.group(1)) - match.group(1).count(".")
    limit = AMOUNT_MAX_DIGITS[channel]
    return f"{digits} digits, at most {limit}" if digits > limit else None


_PHONE_CHARS: Final = _ASCII_DIGITS | _ASCII_SYMBOLS


def _phone_number(text: str, channel: Channel, enum: Sequence[str]) -> str | None:
    if not _PHONE_CHARS.issuperset(text):
        return "digits and ASCII symbols only"
    if _ASCII_DIGITS.isdisjoint(text):
        return "has no digit"  # reference silent; a phone number without a digit is not one
    return _too_long(text, PHONE_NUMBER_MAX_CHARS)


_PLATE_CHARS: Final = _ASCII_LETTERS | _ASCII_DIGITS


def _car_number(text: str, channel: Channel, enum: Sequence[str]) -> str | None:
    too_long = _too_long(text, CAR_NUMBER_MAX_CHARS)
    if too_long:
        return too_long
    start = 1 if is_chinese(text[0]) else 0
    end = len(text) - 1 if len(text) > start and is_chinese(text[-1]) else len(text)
    middle = text[start:end]
    if not middle or not _PLATE_CHARS.issuperset(middle):
        return "letters and digits, only the first and last may be Chinese"
    return None


def _name(text: str, channel: Channel, enum: Sequence[str]) -> str | None:
    if any(is_chinese(ch) for ch in text):
        if not all(is_chinese(ch) or ch in _ASCII_LETTERS or _is_symbol(ch) for ch in text):
            return "Chinese, letters and symbols only"
        return _too_long(text, NAME_MAX_CHINESE_CHARS)
    # inner spaces (`Li Lei`): the reference is silent; a Latin name needs them
    if not all(ch in _ASCII_LETTERS or ch == " " or _is_symbol(ch) for ch in text):
        return "letters and symbols only"
    if _ASCII_LETTERS.isdisjoint(text):
        return "has no letter"
    if text != text.strip(" "):
        return "starts or ends with a space"
    return _too_long(text, NAME_MAX_LATIN_CHARS)


def _phrase(text: str, channel: Channel, enum: Sequence[str]) -> str | None:
    if not all(is_chinese(ch) for ch in text):
        return "Chinese characters only"
    return _too_long(text, PHRASE_MAX_CHARS)


def _const(text: str, channel: Channel, enum: Sequence[str]) -> str | None:
    return _too_long(text, CONST_MAX_CHARS) or _enumerated(text, channel, enum)


def _enumerated(text: str, channel: Channel, enum: Sequence[str]) -> str | None:
    return None if text in enum else "not one of the approved values"


_RULES: Final = {
    "thing": _thing,
    "number": _number,
    "letter": _letter,
    "symbol": _symbol,
    "character_string": _character_string,
    "time": _time,
    "date": _date,
    "amount": _amount,
    "phone_number": _phone_number,
    "car_number": _car_number,
    "name": _name,
    "phrase": _phrase,
    "const": _const,
    "enum": _enumerated,
}
