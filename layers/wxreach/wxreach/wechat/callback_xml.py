"""Safe parsing of WeChat callback XML into plain dicts (reference §5.2, §3.3).

Refusal reasons (all `MalformedCallback`, HTTP 400): `oversize`, `forbidden_xml` (DTD, entity
declarations, external references) and `malformed_xml` (empty, not XML, root other than <xml>,
nesting deeper than any WeChat payload, an XML declaration naming an encoding expat cannot read).

A document without a DTD is parsed by the standard library's C parser (expat): with no DTD there
is nothing defusedxml guards against, and it is several times faster. Anything else goes through
defusedxml, which refuses DTDs, entity declarations and external references.
"""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import Element, ParseError
from xml.etree.ElementTree import fromstring as _c_fromstring

import defusedxml.ElementTree as safe_et
from defusedxml import DefusedXmlException

from wxreach.errors import MalformedCallback

MAX_CALLBACK_BYTES = 64 * 1024
# WeChat payloads nest four levels at most (xml/ArticleUrlResult/ResultList/item/field).
_MAX_DEPTH = 16
# Containers whose children WeChat may send once or many times; always lists so callers need one code path.
_ALWAYS_LIST = frozenset({"List", "item"})

type XmlValue = str | dict[str, Any] | list[Any]


def parse_callback_xml(body: bytes | str, *, max_bytes: int = MAX_CALLBACK_BYTES) -> dict[str, Any]:
    """The root's children as a dict: leaves → text, nested → dict, repeated tags → list."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    if len(raw) > max_bytes:
        raise MalformedCallback(f"callback body over {max_bytes} bytes", reason="oversize")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if not raw.strip():
        raise MalformedCallback("callback body is empty", reason="malformed_xml")
    try:
        root = _parse(raw, text)
    except DefusedXmlException as exc:
        raise MalformedCallback(
            f"callback XML uses a forbidden construct: {type(exc).__name__}", reason="forbidden_xml"
        ) from exc
    except ParseError as exc:
        raise MalformedCallback(
            f"callback body is not well-formed XML: {exc}", reason="malformed_xml"
        ) from exc
    except (ValueError, LookupError) as exc:
        # expat refuses multi-byte declared encodings (gbk, big5, utf-7...) with ValueError and
        # unknown codec names with LookupError; WeChat only ever sends UTF-8.
        raise MalformedCallback(
            f"callback XML declares an unsupported encoding: {exc}", reason="malformed_xml"
        ) from exc
    if root.tag != "xml":
        raise MalformedCallback("callback root element is not <xml>", reason="malformed_xml")
    return _children(root, 1)


def _parse(raw: bytes, text: str) -> Element:
    # No "<!DOCTYPE" (case-sensitive) means no DTD: no entity can be declared, expat refuses undeclared ones.
    # NUL-free, because expat sniffs BOM-less UTF-16 from NULs even in a str; declarations keep their reading.
    if text and "<!DOCTYPE" not in text and "\x00" not in text and "<?xml" not in text:
        return _c_fromstring(text)  # noqa: S314 - DTD-free, see above
    return safe_et.fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)


def _children(element: Element, depth: int) -> dict[str, Any]:
    if depth > _MAX_DEPTH:
        raise MalformedCallback("callback XML nests too deeply", reason="malformed_xml")
    fields: dict[str, Any] = {}
    for child in element:
        tag = child.tag
        # Expat has already unwrapped CDATA; an empty element has text None.
        value = _children(child, depth + 1) if len(child) else child.text or ""
        if tag in _ALWAYS_LIST:
            fields.setdefault(tag, []).append(value)
        elif tag not in fields:
            fields[tag] = value
        elif type(previous := fields[tag]) is list:
            previous.append(value)
        else:
            fields[tag] = [previous, value]
    return fields
