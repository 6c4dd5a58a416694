"""The sharded follower index and the credit index on moto: where the webhook's writes land and
how audiences page through them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.support import wechat
from tests.support.aws import AwsWorld, aws_world
from wxreach import container
from wxreach.aws import keys
from wxreach.reach.followers import CreditRow, SubscriptionStatus

APPID = wechat.APPID
TPL, OTHER_TPL = "SUB_ORDER_SHIPPED", "SUB_OTHER"


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsWorld]:
    with aws_world(monkeypatch) as w:
        yield w


def openid(n: int) -> str:
    return f"oIdx{n:024d}"


def whole_shard(shard: int, *, limit: int) -> list[str]:
    store = container.followers()
    listed: list[str] = []
    after: str | None = None
    while True:
        rows, after = store.list_shard(APPID, shard, start_after=after, limit=limit)
        listed += [row.openid for row in rows]
        if after is None:
            return listed


def credit_holders(template_id: str, *, limit: int = 100) -> dict[str, CreditRow]:
    store = container.followers()
    found: dict[str, CreditRow] = {}
    for shard in range(store.shard_count):
        after: str | None = None
        while True:
            rows, after = store.list_credit_holders(APPID, template_id, shard, start_after=after, limit=limit)
            for row in rows:
                assert row.openid not in found
                assert keys.follower_shard(row.openid) == shard
                found[row.openid] = row
            if after is None:
                break
    return found


def test_every_profile_write_lands_in_its_openids_shard_and_pages_cover_it_once(world: AwsWorld) -> None:
    store = container.followers()
    now = datetime.now(UTC)
    written = [openid(n) for n in range(120)]
    for n, o in enumerate(written):
        if n % 3 == 0:
            store.set_following(APPID, o, following=True, at=now, scene="spring")
        elif n % 3 == 1:
            store.touch_interaction(APPID, o, at=now, message=True)
        else:
            store.observe_following(APPID, o)
    by_shard: dict[int, list[str]] = {}
    for o in written:
        by_shard.setdefault(keys.follower_shard(o), []).append(o)
    assert len(by_shard) > 16  # 120 openids spread over most of the 32 shards
    for shard in range(store.shard_count):
        # Pages of 2 in openid order, each one once, exactly this shard's openids.
        assert whole_shard(shard, limit=2) == sorted(by_shard.get(shard, []))
    rows, _ = store.list_shard(APPID, keys.follower_shard(written[0]), start_after=None, limit=100)
    first = next(r for r in rows if r.openid == written[0])
    assert first.following is True and first.followed_at is not None and first.tags == frozenset()


def test_credit_index_lists_every_grant_of_a_template_with_its_credits(world: AwsWorld) -> None:
    store = container.followers()
    now = datetime.now(UTC)
    twice, once, long_term, revoked, elsewhere = (openid(n) for n in range(5))
    store.grant_one_time(APPID, twice, {TPL: "e1"}, at=now)
    store.grant_one_time(APPID, twice, {TPL: "e2"}, at=now + timedelta(seconds=1))
    store.grant_one_time(APPID, once, {TPL: "e3", OTHER_TPL: "e4"}, at=now)
    store.set_status(APPID, long_term, TPL, status=SubscriptionStatus.ACCEPTED, at=now, long_term=True)
    store.grant_one_time(APPID, revoked, {TPL: "e5"}, at=now)
    store.set_status(APPID, revoked, TPL, status=SubscriptionStatus.REVOKED, at=now + timedelta(seconds=5))
    store.grant_one_time(APPID, elsewhere, {OTHER_TPL: "e6"}, at=now)
    # A reject alone never made a grant usable: not indexed.
    store.set_status(APPID, openid(9), TPL, status=SubscriptionStatus.REJECTED, at=now)

    holders = credit_holders(TPL, limit=1)
    assert holders == {
        twice: CreditRow(openid=twice, one_time_credits=2, long_term=False),
        once: CreditRow(openid=once, one_time_credits=1, long_term=False),
        long_term: CreditRow(openid=long_term, one_time_credits=0, long_term=True),
        # Used up or revoked grants stay in the index: callers skip them.
        revoked: CreditRow(openid=revoked, one_time_credits=0, long_term=False),
    }
    assert set(credit_holders(OTHER_TPL)) == {once, elsewhere}
