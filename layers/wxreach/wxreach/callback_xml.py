"""Safe parsing of WeChat callback XML into plain dicts (reference §5.2, §3.3).

Refusal reasons (all `MalformedCallback`, HTTP 400): `oversize`, `forbidden_xml` (DTD, entity
declarations, external references) and `malformed_xml` (empty, not XML, root other than <xml>,
nesting deeper than any WeChat payload).
"""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import Element, ParseError

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
    if not raw.strip():
        raise MalformedCallback("callback body is empty", reason="malformed_xml")
    try:
        root = safe_et.fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise MalformedCallback(
            f"callback XML uses a forbidden construct: {type(exc).__name__}", reason="forbidden_xml"
        ) from exc
    except ParseError as exc:
        raise MalformedCallback(
            f"callback body is not well-formed XML: {exc}", reason="malformed_xml"
        ) from exc
    if root.tag != "xml":
        raise MalformedCallback("callback root element is not <xml>", reason="malformed_xml")
    return _children(root, depth=1)


def _children(element: Element, *, depth: int) -> dict[str, Any]:
    if depth > _MAX_DEPTH:
        raise MalformedCallback("callback XML nests too deeply", reason="malformed_xml")
    grouped: dict[str, list[XmlValue]] = {}
    for child in element:
        grouped.setdefault(child.tag, []).append(_value(child, depth=depth + 1))
    return {
        tag: values if len(values) > 1 or tag in _ALWAYS_LIST else values[0]
        for tag, values in grouped.items()
    }


def _value(element: Element, *, depth: int) -> XmlValue:
    if len(element) == 0:
        # Expat has already unwrapped CDATA; an empty element has text None.
        return element.text or ""
    return _children(element, depth=depth)
