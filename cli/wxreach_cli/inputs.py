"""Turning what an operator types or keeps in files into API bodies: `key=value` pairs,
dotted parameter names, recipient and keyword files (CSV or JSON lines)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

DATETIME_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]


def pairs(values: Iterable[str], *, option: str) -> dict[str, str]:
    """`--data thing1={{product}}` → {"thing1": "{{product}}"}."""
    found: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{value!r} is not KEY=VALUE", param_hint=option)
        found[key] = rest
    return found


def nested(flat: dict[str, Any]) -> dict[str, Any]:
    """`order.no=E-1` → {"order": {"no": "E-1"}}: templates read {{order.no}} as a path."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise typer.BadParameter(f"{key!r}: {part!r} is both a value and a group")
            node = child
        node[leaf] = value
    return tree


def utc(moment: datetime) -> str:
    """ISO 8601 in UTC; a time typed without a zone is UTC."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


def recipients(path: Path) -> list[dict[str, Any]]:
    """A recipients file: JSON lines of {"openid", "params"}, or CSV with an openid column whose
    other columns are the parameters (`order.no` nests)."""
    if path.suffix.lower() == ".csv":
        found = []
        for line, row in _csv_rows(path, required=("openid",)):
            openid = row.pop("openid")
            if not openid:
                raise typer.BadParameter(f"{path}:{line}: no openid")
            found.append({"openid": openid, "params": nested(row)} if row else {"openid": openid})
        return found
    return [_json_line(path, n, line) for n, line in enumerate(_lines(path), start=1) if line.strip()]


def keyword_items(path: Path) -> list[dict[str, Any]]:
    """A keyword check file: CSV with `type` and `value` columns, optionally `channel` and `enum`
    (approved values separated by |)."""
    items = []
    for _, row in _csv_rows(path, required=("type", "value")):
        item: dict[str, Any] = {"type": row["type"], "value": row["value"]}
        if row.get("channel"):
            item["channel"] = row["channel"]
        if row.get("enum"):
            item["enum"] = row["enum"].split("|")
        items.append(item)
    if not items:
        raise typer.BadParameter(f"{path} holds no rows")
    return items


def json_file(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"{path}: {exc}") from None
    if not isinstance(body, dict):
        raise typer.BadParameter(f"{path} is not a JSON object")
    return body


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"{path}: {exc}") from None


def _csv_rows(path: Path, *, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(_lines(path))
    missing = [column for column in required if column not in (reader.fieldnames or [])]
    if missing:
        raise typer.BadParameter(f"{path} has no {', '.join(missing)} column")
    return [(n, {k: (v or "").strip() for k, v in row.items() if k}) for n, row in enumerate(reader, start=2)]


def _json_line(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise typer.BadParameter(f"{path}:{number}: {exc}") from None
    if not isinstance(row, dict) or "openid" not in row:
        raise typer.BadParameter(f"{path}:{number}: not an object with an openid")
    return row
