"""The users and tags endpoints of WeChatClient over httpx.MockTransport, and the sync job's
progress figures."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from wxreach.reach.follower_sync import SyncJob, SyncPhase, SyncState
from wxreach.wechat.api import WeChatClient
from wxreach.wechat.errcodes import SendRejected, TransportError

BASE = "https://api.weixin.test"
TOKEN = "ACCESS_TOKEN_users_0123456789abcdef"
O1, O2 = "oWx1a2b3c4d5e6f7g8h9i0jKlMnO", "oWx1a2b3c4d5e6f7g8h9i0jKlMnP"


def client(answer: dict[str, Any], seen: list[httpx.Request]) -> WeChatClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=answer)

    return WeChatClient(BASE, transport=httpx.MockTransport(handler))


def test_user_get_pages_with_next_openid() -> None:
    seen: list[httpx.Request] = []
    answer = {"total": 23000, "count": 2, "data": {"openid": [O1, O2]}, "next_openid": O2}
    assert client(answer, seen).user_get(TOKEN) == (23000, [O1, O2], O2)
    assert client(answer, seen).user_get(TOKEN, O2)[2] == O2
    first, second = seen
    assert (first.method, first.url.path) == ("GET", "/cgi-bin/user/get")
    assert "next_openid" not in first.url.params and first.url.params["access_token"] == TOKEN
    assert second.url.params["next_openid"] == O2


def test_user_get_past_the_end_has_no_data_and_an_empty_cursor() -> None:
    assert client({"total": 2, "count": 0, "next_openid": ""}, []).user_get(TOKEN, O2) == (2, [], "")


@pytest.mark.parametrize(
    "answer",
    [
        {"count": 1, "data": {"openid": [O1]}, "next_openid": O1},  # no total
        {"total": 1, "count": 1, "data": {"openid": [1]}, "next_openid": O1},
        {"total": 1, "count": 1, "data": {"openid": O1}, "next_openid": O1},
        {"total": 1, "count": 1, "data": {"openid": [O1]}, "next_openid": 5},
    ],
)
def test_unusable_listing_answers_are_retryable_transport_errors(answer: dict[str, Any]) -> None:
    with pytest.raises(TransportError) as raised:
        client(answer, []).user_get(TOKEN)
    assert raised.value.kind == "invalid_response"


def test_user_get_refused_raises_the_mapped_error() -> None:
    with pytest.raises(SendRejected) as raised:
        client({"errcode": 48001, "errmsg": "api unauthorized"}, []).user_get(TOKEN)
    assert raised.value.reason == "api_unauthorized"


def test_tags_and_tag_members() -> None:
    seen: list[httpx.Request] = []
    tags = {"tags": [{"id": 2, "name": "星标组", "count": 0}, {"id": 100, "name": "vip", "count": 2}]}
    assert client(tags, seen).tags_get(TOKEN) == tags["tags"]
    members = {"count": 2, "data": {"openid": [O1, O2]}, "next_openid": O2}
    assert client(members, seen).user_tag_get(TOKEN, 100, O1) == (2, [O1, O2], O2)
    assert client({"count": 0, "next_openid": ""}, seen).user_tag_get(TOKEN, 100, O2) == (0, [], "")
    listing, page, _ = seen
    assert (listing.method, listing.url.path) == ("GET", "/cgi-bin/tags/get")
    assert (page.method, page.url.path) == ("POST", "/cgi-bin/user/tag/get")
    assert json.loads(page.content) == {"tagid": 100, "next_openid": O1}


def job(**fields: Any) -> SyncJob:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return SyncJob(appid="wx1234567890abcdef", job_id="j", started_at=now, updated_at=now, **fields)


def test_progress_percent() -> None:
    assert job().percent is None  # no page yet: WeChat's total unknown
    assert job(seen=5000, total=20000).percent == 24.8
    assert job(seen=25000, total=20000).percent == 99.0  # followers joined during the sync
    assert job(seen=20000, total=20000, phase=SyncPhase.SWEEP).percent == 99.0
    assert job(state=SyncState.DONE, seen=3, total=2).percent == 100.0
    assert job().more and not job(state=SyncState.FAILED).more
