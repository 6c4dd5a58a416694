"""Identifiers that look like WeChat's, drawn from a seeded generator so runs are reproducible."""

from __future__ import annotations

import itertools
import random
import string

_B64URL = string.ascii_letters + string.digits + "-_"
_ALNUM = string.ascii_letters + string.digits
OPENID_LEN = 28


class IdSource:
    """Callers hold the sandbox state lock, so one Random is enough."""

    def __init__(self, seed: int | str) -> None:
        self._rng = random.Random(f"{seed}:ids")
        self._seq = itertools.count(1)
        self._mass_seq = itertools.count(1)
        self._inbox_seq = itertools.count(1)

    def rng(self) -> random.Random:
        return self._rng

    def _chars(self, alphabet: str, n: int) -> str:
        return "".join(self._rng.choice(alphabet) for _ in range(n))

    def msgid(self) -> int:
        # 19 digits, above 2**53 on purpose (§0): clients must not squeeze them through a float
        return 1_700_000_000_000_000_000 + next(self._seq) * 1_000 + self._rng.randrange(1_000)

    def mass_msg_id(self) -> int:
        # 10 digits, above 2**31 like the documented sample 3147483704
        return 3_147_483_000 + next(self._mass_seq)

    def msg_data_id(self) -> int:
        return 2_247_484_000 + next(self._mass_seq)

    def inbox_id(self) -> int:
        return next(self._inbox_seq)

    def openid(self, prefix: str) -> str:
        return prefix + self._chars(_B64URL, OPENID_LEN - len(prefix))

    def access_token(self) -> str:
        # real tokens are ~136-160 chars; callers must reserve 512 (§1.1)
        return f"{next(self._seq)}_" + self._chars(_B64URL, 140)

    def template_id(self) -> str:
        return self._chars(_B64URL, 43)

    def media_id(self) -> str:
        return self._chars(_B64URL, 43)

    def article_id(self) -> str:
        return self._chars(_B64URL, 43)

    def secret(self) -> str:
        return self._chars("0123456789abcdef", 32)

    def original_id(self) -> str:
        return "gh_" + self._chars("0123456789abcdef", 12)

    def token(self) -> str:
        return self._chars(_ALNUM, 16)

    def ticket(self) -> str:
        return "gQ" + self._chars(_B64URL, 62) + "=="

    def rid(self, now: float) -> str:
        return f"{int(now):08x}-{self._rng.getrandbits(32):08x}-{self._rng.getrandbits(32):08x}"

    def nonce(self) -> str:
        return str(self._rng.randrange(1_000_000_000, 9_999_999_999))

    def random_bytes(self, n: int) -> bytes:
        return self._rng.randbytes(n)
