"""Writes layers/wxreach/requirements.txt from pyproject.toml (the single source of dependencies).

boto3 is left out: the Lambda runtime ships it. `--check` exits 1 when the file is out of date.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "layers" / "wxreach" / "requirements.txt"
PROVIDED_BY_RUNTIME = {"boto3", "botocore"}


def render() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [
        dep
        for dep in project["dependencies"]
        if dep.split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip() not in PROVIDED_BY_RUNTIME
    ]
    header = "# Generated from pyproject.toml by scripts/export_layer_requirements.py; do not edit.\n"
    return header + "\n".join(lines) + "\n"


def main() -> int:
    wanted = render()
    if "--check" in sys.argv:
        if not TARGET.exists() or TARGET.read_text() != wanted:
            print(f"{TARGET.relative_to(ROOT)} is out of date: run make requirements", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
