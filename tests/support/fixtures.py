"""The one loader of named payloads under events/: WeChat callback XML and API Gateway proxy events."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

REPO_ROOT = Path(__file__).resolve().parents[2]
WECHAT_EVENTS_DIR = REPO_ROOT / "events" / "wechat"
API_EVENTS_DIR = REPO_ROOT / "events" / "api"

# Markup tokens of the small XML subset the fixtures use; CDATA first so "<" inside it is skipped.
_TOKEN = re.compile(
    r"<!\[CDATA\[.*?\]\]>|<!--.*?-->|<\?.*?\?>|<(?P<close>/)?(?P<tag>[A-Za-z_][\w.-]*)[^>]*?(?P<empty>/)?>",
    re.DOTALL,
)
_CDATA = re.compile(r"\s*<!\[CDATA\[(?P<text>.*?)\]\]>\s*", re.DOTALL)


def callback_xml(name: str, **fields: str) -> str:
    """events/wechat/<name>.xml with the text of the given top-level elements replaced.

    A value inside CDATA stays in CDATA; a bare value is XML-escaped. Unknown or non-leaf
    fields raise, so a typo cannot silently leave the fixture unchanged.
    """
    xml = (WECHAT_EVENTS_DIR / f"{name}.xml").read_text(encoding="utf-8")
    for field, value in fields.items():
        start, end = _top_level_text_span(xml, field)
        xml = xml[:start] + _replacement(xml[start:end], value, field) + xml[end:]
    return xml


def _top_level_text_span(xml: str, field: str) -> tuple[int, int]:
    """Start and end of the content of the root's child <field>, which must be a leaf."""
    depth = 0
    content_start: int | None = None
    for token in _TOKEN.finditer(xml):
        tag = token.group("tag")
        if tag is None or token.group("empty"):
            continue
        if token.group("close"):
            depth -= 1
            if content_start is not None:
                return content_start, token.start()
            continue
        depth += 1
        if content_start is not None:
            raise ValueError(f"<{field}> in the fixture has child elements; only leaves can be replaced")
        if depth == 2 and tag == field:
            content_start = token.end()
    raise KeyError(f"fixture has no top-level <{field}>")


def _replacement(current: str, value: str, field: str) -> str:
    if _CDATA.fullmatch(current):
        if "]]>" in value:
            raise ValueError(f"value for <{field}> cannot contain ']]>' inside CDATA")
        return f"<![CDATA[{value}]]>"
    return escape(value)


def api_event(name: str, **overrides: Any) -> dict[str, Any]:
    """events/api/<name>.json with shallow overrides.

    `path_parameters`, `query`, `body` (dicts are JSON-dumped) and `headers` (merged) use the
    shorthand names; any other key must already exist in the event and is replaced as given.
    The multi-value twins of query and headers are kept in step, as Powertools reads them.
    """
    event: dict[str, Any] = json.loads((API_EVENTS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    for key, value in overrides.items():
        if key == "path_parameters":
            event["pathParameters"] = value
            # Routing reads the path, not pathParameters: rebuild it from the resource template.
            path = event.get("resource")
            if path is not None:
                for param, param_value in (value or {}).items():
                    path = path.replace("{" + param + "}", param_value)
                event["path"] = path
        elif key == "query":
            event["queryStringParameters"] = value
            if "multiValueQueryStringParameters" in event:
                event["multiValueQueryStringParameters"] = (
                    None if value is None else {k: [v] for k, v in value.items()}
                )
        elif key == "headers":
            _merge_headers(event, value)
        elif key == "body":
            event["body"] = (
                value if value is None or isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            )
        elif key in event:
            event[key] = value
        else:
            raise KeyError(f"api event {name!r} has no key {key!r}")
    return event


def _merge_headers(event: dict[str, Any], headers: dict[str, str]) -> None:
    # Header names are case-insensitive: an override replaces any spelling of the same name.
    overridden = {name.lower() for name in headers}

    def kept(current: dict[str, Any] | None) -> dict[str, Any]:
        return {k: v for k, v in (current or {}).items() if k.lower() not in overridden}

    event["headers"] = {**kept(event.get("headers")), **headers}
    if "multiValueHeaders" in event:
        event["multiValueHeaders"] = {
            **kept(event["multiValueHeaders"]),
            **{name: [value] for name, value in headers.items()},
        }
