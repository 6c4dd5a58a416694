"""The layer's dependency rule: the domain and the WeChat protocol never import an adapter."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "layers" / "wxreach" / "wxreach"
FORBIDDEN = {
    "reach": ("wxreach.aws", "wxreach.container", "boto3", "botocore", "httpx"),
    "wechat": ("wxreach.aws", "wxreach.reach", "wxreach.container", "boto3", "botocore"),
}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("subpackage", sorted(FORBIDDEN))
def test_subpackage_never_imports_what_sits_above_it(subpackage: str) -> None:
    files = sorted((PACKAGE / subpackage).glob("*.py"))
    assert files
    offending = {
        f"{path.name} imports {name}"
        for path in files
        for name in imports(path)
        if name.startswith(FORBIDDEN[subpackage])
    }
    assert not offending
