"""Shapes of the WeChat identifiers that become parts of DynamoDB keys.

Every value from a callback or a request that ends up in a key is checked against these before
any AWS call: DynamoDB refuses keys over 2 048 bytes (partition) and 1 024 bytes (sort), and an
oversize value must be the caller's 4xx, not our 5xx.
"""

from __future__ import annotations

import re

# WeChat openids are 28 characters today; the bound leaves room for other id schemes (unionid-like).
OPENID_PATTERN = r"^[A-Za-z0-9_-]{6,64}$"
# priTmplId / template_id: 43 characters today.
TEMPLATE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
# MsgID / msg_id / publish_id: 64-bit decimal numbers today; letters tolerated, length bounded.
MESSAGE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# Event names are short ASCII words (subscribe, TEMPLATESENDJOBFINISH...).
MAX_EVENT_NAME_LENGTH = 64
# Unix seconds: ASCII digits only (int() would take "１２３", "1_000" and " 12 ").
UNIX_SECONDS = re.compile(r"[0-9]{1,12}")


def parse_unix_seconds(value: object) -> int:
    """int of a decimal ASCII string (or an int); ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and UNIX_SECONDS.fullmatch(value):
        return int(value)
    raise ValueError("expected unix seconds as ASCII digits")
