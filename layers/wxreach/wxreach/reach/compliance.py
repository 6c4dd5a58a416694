"""Compliance lint of rendered keyword values: what WeChat's operating rules forbid or frown on.

Template messages are service notifications only (reference §2): marketing wording can cost the
template or the account its messaging rights. The lint is text analysis, not WeChat's review;
the account's `LintLevel` decides whether findings are only reported (WARN) or stop the send
(BLOCK), so every rule is written to stay quiet on ordinary notifications.

Rules:
- `marketing_wording` (template messages only): a word of the `marketing` list in
  compliance_words.json (shipped with the package; extend it there).
- `link_in_value`: `http(s)://`, `www.` or a bare domain (`example.com/xyz`) in a value. Values
  are not clickable; a link belongs in the jump (url / page / miniprogram).
- `unrelated_to_title`: see `_unrelated_to_title`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from enum import StrEnum
from functools import cache
from importlib.resources import files
from itertools import pairwise
from typing import Literal

from pydantic import BaseModel, ConfigDict

from wxreach.reach.templates import Template
from wxreach.wechat.keywords import Channel, keyword_type

WORDS_RESOURCE = "compliance_words.json"

Rule = Literal["marketing_wording", "link_in_value", "unrelated_to_title"]


class LintLevel(StrEnum):
    """An account's policy for findings."""

    WARN = "warn"  # reported in previews and logs, the message is sent
    BLOCK = "block"  # the recipient fails with the findings as the reason


class LintFinding(BaseModel):
    model_config = ConfigDict(frozen=True)

    rule: Rule
    keyword: str | None
    detail: str


_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RUN = re.compile(f"[{_CJK}]+")
_LATIN_WORD = re.compile(r"[a-z][a-z0-9]{2,}")
_ANY_LATIN_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_PUNCTUATION = frozenset("，。！？；!?;")

_TLDS = (
    "com|cn|net|org|info|biz|io|co|me|cc|tv|top|xyz|vip|shop|site|online|app|link|club|ltd|store|tech"
    "|live|hk|tw|mo|jp|us|uk|de"
)
_LINK = re.compile(
    r"https?://\S+"
    r"|www\.\S+"
    # a bare domain; not part of an e-mail address or a longer word
    rf"|(?<![a-z0-9@.-])(?:[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?\.)+(?:{_TLDS})(?![a-z0-9-])(?:[/:?#]\S*)?"
)

# unrelated_to_title: thresholds of "reads as free text" (a thing value holds at most 20 characters).
PROSE_MIN_CJK = 10
PROSE_MIN_CJK_WITH_PUNCTUATION = 6
PROSE_MIN_LATIN_WORDS = 4
# Keywords whose label announces free text (备注, 温馨提示...) may say anything.
FREE_TEXT_LABEL_WORDS = ("备注", "说明", "提示", "原因", "内容", "详情", "留言", "remark", "note", "comment")


@cache
def marketing_words() -> tuple[str, ...]:
    """The `marketing` list of compliance_words.json, read from the package (works in a layer zip)."""
    raw = json.loads(files("wxreach.reach").joinpath(WORDS_RESOURCE).read_text(encoding="utf-8"))
    words = raw.get("marketing") if isinstance(raw, dict) else None
    if not isinstance(words, list) or not all(isinstance(word, str) and word.strip() for word in words):
        raise ValueError(f"{WORDS_RESOURCE}: 'marketing' must be a list of non-empty strings")
    return tuple(dict.fromkeys(_normalise(word).strip() for word in words))


@cache
def _marketing_pattern() -> tuple[re.Pattern[str], tuple[str, ...]]:
    """One alternation of every word, group wN for word N: a match names the list entry, not the
    spelling found (flash-sale → flash sale). Longest first, so 优惠券 wins over 优惠."""
    words = tuple(sorted(marketing_words(), key=len, reverse=True))
    alternatives = [f"(?P<w{index}>{_word_pattern(word)})" for index, word in enumerate(words)]
    return re.compile("|".join(alternatives)), words


def _word_pattern(word: str) -> str:
    if not word.isascii():
        return re.escape(word)
    pieces = re.split(r"[\s-]+", word)
    body = re.escape(pieces[0])
    for previous, piece in pairwise(pieces):
        glued = previous[-1].isalnum() and piece[0].isalnum()
        body += (r"[\s-]+" if glued else r"\s*") + re.escape(piece)
    left = r"(?<![a-z0-9])" if word[0].isalnum() else ""
    right = r"(?![a-z0-9])" if word[-1].isalnum() else ""
    return f"{left}{body}{right}"


def lint(template: Template, rendering_data: Mapping[str, str], channel: Channel) -> list[LintFinding]:
    """Findings for one recipient's final values (`Rendering.data`) on `channel`."""
    values = {key: _normalise(value) for key, value in rendering_data.items()}
    findings: list[LintFinding] = []
    if channel is Channel.TEMPLATE:
        pattern, listed = _marketing_pattern()
        for key, value in values.items():
            words = list(
                dict.fromkeys(listed[int(str(match.lastgroup)[1:])] for match in pattern.finditer(value))
            )
            if words:
                findings.append(
                    _finding("marketing_wording", key, f"{key} holds promotion wording: {', '.join(words)}")
                )
    for key, value in values.items():
        links = [match.group(0) for match in _LINK.finditer(value)]
        if links:
            findings.append(_finding("link_in_value", key, f"{key} holds a link: {', '.join(links)}"))
    unrelated = _unrelated_to_title(template, values)
    if unrelated is not None:
        findings.append(_finding("unrelated_to_title", None, unrelated))
    return findings


def _unrelated_to_title(template: Template, values: Mapping[str, str]) -> str | None:
    """The content does not look like the notification the title announces.

    Conservative on purpose (an order-shipped card's product name, carrier and tracking number
    share no word with "订单发货通知", and that is fine). It reports only when all hold:
    1. the title yields words: CJK bigrams (a lone CJK character counts alone) or Latin words of
       three letters or more;
    2. the content has `thing` values (the free-text type) under labels that do not announce free
       text (备注, 温馨提示... may say anything), and every one of them reads as free text: at
       least 10 CJK characters, 6 with sentence punctuation, or 4 Latin words;
    3. no value at all shares a word with the title or with any keyword label.
    """
    reference = _words(template.title)
    if not reference:
        return None
    free_text: list[str] = []
    for key in values:
        keyword = template.keyword(key)
        kind = keyword.type if keyword is not None else keyword_type(key)[0]
        label = _normalise(keyword.label) if keyword is not None else ""
        if kind == "thing" and not any(word in label for word in FREE_TEXT_LABEL_WORDS):
            free_text.append(key)
    if not free_text or not all(_reads_as_free_text(values[key]) for key in free_text):
        return None
    reference |= {word for keyword in template.keywords for word in _words(keyword.label)}
    if any(_words(value) & reference for value in values.values()):
        return None
    return (
        f"no value shares a word with the title {template.title!r} or its keyword labels, "
        f"and {', '.join(free_text)} read as free text"
    )


def _reads_as_free_text(value: str) -> bool:
    cjk = sum(len(run) for run in _CJK_RUN.findall(value))
    if cjk >= PROSE_MIN_CJK:
        return True
    if cjk >= PROSE_MIN_CJK_WITH_PUNCTUATION and not _SENTENCE_PUNCTUATION.isdisjoint(value):
        return True
    return len(_ANY_LATIN_WORD.findall(value)) >= PROSE_MIN_LATIN_WORDS


def _words(text: str) -> set[str]:
    text = _normalise(text)
    words: set[str] = set(_LATIN_WORD.findall(text))
    for run in _CJK_RUN.findall(text):
        words |= _bigrams(run)
    return words


def _bigrams(run: str) -> set[str]:
    return {run} if len(run) == 1 else {run[index : index + 2] for index in range(len(run) - 1)}


def _normalise(text: str) -> str:
    # Full-width letters/digits (ＳＡＬＥ, ５０％) and case must not dodge a rule.
    return unicodedata.normalize("NFKC", text).casefold()


def _finding(rule: Rule, keyword: str | None, detail: str) -> LintFinding:
    return LintFinding(rule=rule, keyword=keyword, detail=detail)
