"""One template-sender instance as its own process (for the cross-process rate-limit test):
reads a batch record from argv[1], sends it with the real container against the local stack's
moto server and the sandbox (both from the environment), prints the states as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from wxreach import container
from wxreach.reach.messages import MessageBatch


def main() -> int:
    batch = MessageBatch.model_validate_json(Path(sys.argv[1]).read_text(encoding="utf-8"))
    result = container.send_service().send_batch(batch)
    print(json.dumps({"states": [m.state for m in result.messages], "retry_after": result.retry_after}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
