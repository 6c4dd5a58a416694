"""Follower lists, tags, drafts and published articles."""

from __future__ import annotations

from .conftest import Service, WeChat


def test_user_get_pages_10000_at_a_time(wx: WeChat) -> None:
    wx.account("wxbig00000001")
    created = wx.followers("wxbig00000001", 12_000)
    token = wx.token("wxbig00000001")
    first = wx.get("/cgi-bin/user/get", token)
    assert (first["total"], first["count"]) == (12_000, 10_000)
    assert first["data"]["openid"] == created[:10_000]
    assert first["next_openid"] == created[9_999]
    second = wx.get("/cgi-bin/user/get", token, next_openid=first["next_openid"])
    assert (second["total"], second["count"]) == (12_000, 2_000)
    assert second["data"]["openid"] == created[10_000:]
    last = wx.get("/cgi-bin/user/get", token, next_openid=second["next_openid"])
    assert last == {"total": 12_000, "count": 0, "next_openid": ""}


def test_user_get_lists_only_followers(wx: WeChat, service: Service) -> None:
    wx.admin("POST", f"/accounts/{service.appid}/users/{service.openids[2]}/unfollow")
    listing = wx.get("/cgi-bin/user/get", service.token)
    assert listing["total"] == 4
    assert service.openids[2] not in listing["data"]["openid"]
    assert wx.get("/cgi-bin/user/get", service.token, next_openid="oBOGUS")["errcode"] == 40003


def test_tags_and_tag_members(wx: WeChat, service: Service) -> None:
    vip = wx.admin("POST", f"/accounts/{service.appid}/tags", {"name": "vip", "openids": service.openids[:3]})
    assert vip["id"] == 100  # 0-2 are WeChat's reserved tags
    wx.admin("POST", f"/accounts/{service.appid}/tags/{vip['id']}/members", {"remove": [service.openids[0]]})
    assert wx.get("/cgi-bin/tags/get", service.token) == {"tags": [{"id": 100, "name": "vip", "count": 2}]}
    members = wx.post("/cgi-bin/user/tag/get", service.token, {"tagid": 100, "next_openid": ""})
    assert members == {
        "count": 2,
        "data": {"openid": service.openids[1:3]},
        "next_openid": service.openids[2],
    }
    assert wx.post("/cgi-bin/user/tag/get", service.token, {"tagid": 7})["errcode"] == 45159
    wx.admin("POST", f"/accounts/{service.appid}/users/{service.openids[1]}/unfollow")
    assert wx.get("/cgi-bin/tags/get", service.token)["tags"][0]["count"] == 1  # unfollow drops tags


def test_bulk_followers_can_carry_a_tag(wx: WeChat, service: Service) -> None:
    tag = wx.admin("POST", f"/accounts/{service.appid}/tags", {"name": "campaign"})
    openids = wx.followers(service.appid, 50, tags=[tag["id"]], prefix="oCmp")
    assert all(o.startswith("oCmp") for o in openids)
    members = wx.post("/cgi-bin/user/tag/get", service.token, {"tagid": tag["id"]})
    assert members["data"]["openid"] == openids


def test_draft_and_freepublish_batchget(wx: WeChat, service: Service) -> None:
    first = wx.admin(
        "POST", f"/accounts/{service.appid}/drafts", {"articles": [{"title": "一", "content": "<p>1</p>"}]}
    )
    wx.advance(10)
    second = wx.admin(
        "POST", f"/accounts/{service.appid}/drafts", {"articles": [{"title": "二", "content": "<p>2</p>"}]}
    )
    drafts = wx.post("/cgi-bin/draft/batchget", service.token, {"offset": 0, "count": 20, "no_content": 1})
    assert (drafts["total_count"], drafts["item_count"]) == (2, 2)
    assert [d["media_id"] for d in drafts["item"]] == [second["media_id"], first["media_id"]]  # newest first
    assert "content" not in drafts["item"][0]["content"]["news_item"][0]
    assert (
        wx.post("/cgi-bin/draft/batchget", service.token, {"offset": 1, "count": 1})["item"][0]["media_id"]
        == (first["media_id"])
    )
    assert wx.post("/cgi-bin/draft/batchget", service.token, {"offset": 0, "count": 21})["errcode"] == 47001

    published = wx.admin("POST", f"/accounts/{service.appid}/publications", {"media_id": first["media_id"]})
    listing = wx.post("/cgi-bin/freepublish/batchget", service.token, {"offset": 0, "count": 10})
    assert listing["total_count"] == 1
    item = listing["item"][0]
    assert item["article_id"] == published["article_id"]
    assert item["content"]["news_item"][0]["title"] == "一"
    assert item["content"]["news_item"][0]["content"] == "<p>1</p>"
