"""The follower index shard: stored in every profile and grant, so it must never change."""

from __future__ import annotations

from collections import Counter

import pytest

from wxreach.aws import keys

APPID = "wx1234567890abcdef"


@pytest.mark.parametrize(
    ("openid", "shard"),
    [
        ("oWx1a2b3c4d5e6f7g8h9i0jKlMnO", 19),
        ("oFollow000000000000000000000", 12),
        ("o6_bmjrPTlm6_2sgVt7hMZOPfL2M", 25),
    ],
)
def test_shard_of_an_openid_is_pinned(openid: str, shard: int) -> None:
    # Pinned (hash() would differ per process): another value strands every stored follower.
    assert keys.follower_shard(openid) == shard


def test_shards_cover_the_range_evenly() -> None:
    counts = Counter(keys.follower_shard(f"o{n:027d}") for n in range(32_000))
    assert set(counts) == set(range(keys.FOLLOWER_INDEX_SHARDS))
    # 1 000 expected per shard; a skewed hash would make one partition hot again.
    assert min(counts.values()) >= 900 and max(counts.values()) <= 1100


def test_index_keys() -> None:
    assert keys.FOLLOWER_INDEX_SHARDS == 32
    assert keys.followers_index_pk(APPID, 7) == f"FOLLOWERS#{APPID}#7"
    assert keys.credits_index_pk(APPID, "TPL", 31) == f"CREDITS#{APPID}#TPL#31"
    assert keys.tag_sk(100) == "TAG#100"
    assert keys.FOLLOWER_SYNC_SK == "SYNC#followers"
