"""Writes docs/openapi.json from the operator API's routes (the code is the source of truth).

`--check` exits 1 when the committed document is out of date.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "openapi.json"


def render() -> str:
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "wxreach")
    sys.path[:0] = [str(ROOT / "layers" / "wxreach"), str(ROOT / "functions" / "operator_api")]
    import operator_api_handler

    schema = operator_api_handler.app.get_openapi_json_schema(
        title="wxreach operator API",
        version="0.1.0",
        description="Operator routes (AWS_IAM-signed when deployed; x-api-key on the local stack).",
    )
    return json.dumps(json.loads(schema), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    wanted = render()
    if "--check" in sys.argv:
        if not TARGET.exists() or TARGET.read_text() != wanted:
            print("docs/openapi.json is out of date: run make openapi", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
