"""Tags from the WeChat sandbox (tags/get, user/tag/get over HTTP) into the registry on moto."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import wechat
from tests.support.sending import SendingWorld, sending_world
from wxreach import container
from wxreach.aws.follower_sync_store import DynamoTagCatalog
from wxreach.reach.follower_sync import FollowerSyncService
from wxreach.reach.followers import Tag
from wxreach.settings import get_settings

APPID = wechat.APPID


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[SendingWorld]:
    with sending_world(monkeypatch, followers=6) as w:
        yield w


def registry_tags(openids: list[str]) -> dict[str, frozenset[int]]:
    store = container.followers()
    found: dict[str, frozenset[int]] = {}
    for shard in range(store.shard_count):
        after: str | None = None
        while True:
            rows, after = store.list_shard(APPID, shard, start_after=after, limit=100)
            found.update({row.openid: row.tags for row in rows})
            if after is None:
                break
    return {o: found.get(o, frozenset()) for o in openids}


def test_tags_and_membership_equal_wechats_after_each_sync(world: SendingWorld) -> None:
    f = world.followers
    vip = world.admin_call("POST", f"/accounts/{APPID}/tags", {"name": "vip", "openids": f[0:3]})["id"]
    new = world.admin_call("POST", f"/accounts/{APPID}/tags", {"name": "new", "openids": f[2:4]})["id"]
    # What the registry believed before: a tag WeChat no longer has, and a wrong membership.
    DynamoTagCatalog(get_settings().quota_table).replace_tags(APPID, [Tag(id=999, name="old", count=1)])
    container.followers().add_tag(APPID, 999, [f[4]])
    container.followers().add_tag(APPID, new, [f[0]])

    service = container.follower_sync_service()
    first = service.sync_tags(APPID)
    assert first.members_synced and (first.stored, first.removed) == (2, 1)
    assert service.tags(APPID) == [Tag(id=vip, name="vip", count=3), Tag(id=new, name="new", count=2)]
    assert registry_tags(f) == {
        f[0]: frozenset({vip}),
        f[1]: frozenset({vip}),
        f[2]: frozenset({vip, new}),
        f[3]: frozenset({new}),
        f[4]: frozenset(),
        f[5]: frozenset(),
    }

    world.admin_call("POST", f"/accounts/{APPID}/tags/{vip}/members", {"add": [f[5]], "remove": [f[1]]})
    second = service.sync_tags(APPID)
    assert (second.added, second.untagged) == (1, 1)
    tags = registry_tags(f)
    assert tags[f[1]] == frozenset() and tags[f[5]] == frozenset({vip})


def test_membership_beyond_the_synchronous_bound_is_left_and_said_so(world: SendingWorld) -> None:
    world.admin_call("POST", f"/accounts/{APPID}/tags", {"name": "vip", "openids": world.followers[:3]})
    base = container.follower_sync_service()
    bounded = FollowerSyncService(
        jobs=base._jobs,
        queue=None,
        followers=base._followers,
        tags=base._tags,
        wechat=container.wechat(),
        tokens=container.tokens(),
        tag_sync_max_members=2,
    )
    result = bounded.sync_tags(APPID)
    assert (result.members_synced, result.skipped_reason, result.stored) == (False, "too_many_members", 1)
    assert set(registry_tags(world.followers).values()) == {frozenset()}
