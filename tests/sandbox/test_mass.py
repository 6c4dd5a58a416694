"""§4 mass send: recipients, clientmsgid rules, quotas, rate limit, payloads, job events."""

from __future__ import annotations

import re

import pytest

from .conftest import Receiver, Service, WeChat

SENDALL = "/cgi-bin/message/mass/sendall"
SEND = "/cgi-bin/message/mass/send"


def text(content: str = "本周上新") -> dict:
    return {"msgtype": "text", "text": {"content": content}}


def job_fields(xml: str) -> dict[str, str]:
    return dict(
        re.findall(
            r"<(MsgID|Status|TotalCount|FilterCount|SentCount|ErrorCount)>(?:<!\[CDATA\[)?([^<\]]*)", xml
        )
    )


def test_sendall_to_everyone_delivers_and_reports(wx: WeChat, service: Service, receiver: Receiver) -> None:
    wx.account(service.appid, webhook_url=receiver.url)
    result = wx.post(SENDALL, service.token, {"filter": {"is_to_all": True}, **text()})
    assert result["errcode"] == 0
    assert result["errmsg"] == "send job submission success"
    assert "msg_data_id" not in result  # only mpnews carries one
    for openid in service.openids:
        (message,) = wx.inbox(service.appid, openid, kind="mass")
        assert message["msgid"] == result["msg_id"] and message["content"] == "本周上新"
    wx.flush()
    (push,) = receiver.requests
    assert job_fields(push.body) == {
        "MsgID": str(result["msg_id"]),
        "Status": "send success",
        "TotalCount": "5",
        "FilterCount": "5",
        "SentCount": "5",
        "ErrorCount": "0",
    }
    assert wx.post("/cgi-bin/message/mass/get", service.token, {"msg_id": result["msg_id"]}) == {
        "msg_id": result["msg_id"],
        "msg_status": "SEND_SUCCESS",
    }


def test_sendall_by_tag(wx: WeChat, service: Service) -> None:
    tag = wx.admin("POST", f"/accounts/{service.appid}/tags", {"name": "vip", "openids": service.openids[:2]})
    result = wx.post(SENDALL, service.token, {"filter": {"is_to_all": False, "tag_id": tag["id"]}, **text()})
    assert result["errcode"] == 0
    assert [len(wx.inbox(service.appid, o)) for o in service.openids] == [1, 1, 0, 0, 0]
    bad = wx.post(SENDALL, service.token, {"filter": {"is_to_all": False, "tag_id": 999}, **text("x")})
    assert bad["errcode"] == 45159


def test_send_needs_at_least_two_openids(wx: WeChat, service: Service) -> None:
    result = wx.post(SEND, service.token, {"touser": service.openids[:1], **text()})
    assert result["errcode"] == 40130
    assert "at least two openid" in result["errmsg"]
    duplicates = wx.post(SEND, service.token, {"touser": [service.openids[0]] * 2, **text()})
    assert duplicates["errcode"] == 40130


def test_send_refuses_more_than_10000_openids(wx: WeChat, service: Service) -> None:
    touser = [f"o{n:027d}" for n in range(10_001)]
    result = wx.post(SEND, service.token, {"touser": touser, **text()})
    assert result["errcode"] == 40130
    assert "at most 10000 openid" in result["errmsg"]
    ok = wx.post(SEND, service.token, {"touser": touser[:10_000], **text()})
    assert ok["errcode"] == 0


def test_repeated_clientmsgid_within_a_minute_is_45066(wx: WeChat, service: Service) -> None:
    body = {"touser": service.openids, "clientmsgid": "campaign-7-batch-1", **text()}
    assert wx.post(SEND, service.token, body)["errcode"] == 0
    wx.advance(59)
    assert wx.post(SEND, service.token, body)["errcode"] == 45066


def test_repeated_clientmsgid_within_24h_is_45065_with_the_existing_msg_id(
    wx: WeChat, service: Service
) -> None:
    body = {"touser": service.openids, "clientmsgid": "campaign-7-batch-1", **text()}
    first = wx.post(SEND, service.token, body)
    wx.advance(3600)
    repeat = wx.post(SEND, service.token, {**body, **text("different content, same id")})
    assert repeat["errcode"] == 45065
    assert repeat["msg_id"] == first["msg_id"]
    assert repeat["errmsg"].startswith("clientmsgid exist rid: ")
    assert len(wx.inbox(service.appid, service.openids[0])) == 1
    wx.advance(23 * 3600)  # the window is 24 h
    service.token = wx.token(service.appid)
    assert wx.post(SEND, service.token, body)["errcode"] == 0


def test_clientmsgid_over_64_bytes_is_45067(wx: WeChat, service: Service) -> None:
    too_long = "批" * 22  # 22 characters but 66 bytes
    result = wx.post(SEND, service.token, {"touser": service.openids, "clientmsgid": too_long, **text()})
    assert result["errcode"] == 45067
    just_fits = "a" * 64
    assert (
        wx.post(SEND, service.token, {"touser": service.openids, "clientmsgid": just_fits, **text()})[
            "errcode"
        ]
        == 0
    )


def test_identical_resend_without_clientmsgid_is_refused_too(wx: WeChat, service: Service) -> None:
    body = {"touser": service.openids, **text()}
    first = wx.post(SEND, service.token, body)
    wx.advance(120)
    repeat = wx.post(SEND, service.token, body)
    assert (repeat["errcode"], repeat["msg_id"]) == (45065, first["msg_id"])
    assert wx.post(SEND, service.token, {"touser": service.openids, **text("other")})["errcode"] == 0


def test_four_mass_messages_per_follower_per_month(wx: WeChat, service: Service, receiver: Receiver) -> None:
    heavy = service.openids[:2]
    for n in range(4):
        assert wx.post(SEND, service.token, {"touser": heavy, **text(f"news {n}")})["errcode"] == 0
    wx.account(service.appid, webhook_url=receiver.url)
    result = wx.post(SENDALL, service.token, {"filter": {"is_to_all": True}, **text("fifth")})
    assert result["errcode"] == 0  # accepted; the capped followers are filtered
    assert [len(wx.inbox(service.appid, o, kind="mass")) for o in service.openids] == [4, 4, 1, 1, 1]
    wx.flush()
    fields = job_fields(receiver.requests[-1].body)
    assert (fields["TotalCount"], fields["FilterCount"], fields["SentCount"], fields["ErrorCount"]) == (
        "5",
        "3",
        "3",
        "0",
    )
    # a new calendar month (China time) resets the cap
    wx.advance(30 * 24 * 3600)
    service.token = wx.token(service.appid)
    wx.post(SEND, service.token, {"touser": heavy, **text("june is over")})
    assert [len(wx.inbox(service.appid, o, kind="mass")) for o in heavy] == [5, 5]


def test_non_followers_are_filtered_and_unknown_openids_errored(
    wx: WeChat, service: Service, receiver: Receiver
) -> None:
    wx.account(service.appid, webhook_url=receiver.url)
    wx.admin("POST", f"/accounts/{service.appid}/users/{service.openids[1]}/unfollow")
    touser = [service.openids[0], service.openids[1], "oUNKNOWNxxxxxxxxxxxxxxxxxxxx"]
    assert wx.post(SEND, service.token, {"touser": touser, **text()})["errcode"] == 0
    wx.flush()
    fields = job_fields(next(r for r in receiver.requests if "MASSSENDJOBFINISH" in r.body).body)
    assert (fields["TotalCount"], fields["FilterCount"], fields["SentCount"], fields["ErrorCount"]) == (
        "3",
        "2",
        "1",
        "1",
    )


def test_subscription_account_gets_one_sendall_per_day(wx: WeChat) -> None:
    wx.account("wxsubscribe001", type="subscription", verified=True)
    wx.followers("wxsubscribe001", 3)
    token = wx.token("wxsubscribe001")
    assert wx.post(SENDALL, token, {"filter": {"is_to_all": True}, **text("a")})["errcode"] == 0
    second = wx.post(SENDALL, token, {"filter": {"is_to_all": True}, **text("b")})
    assert second["errcode"] == 45028
    assert second["errmsg"].startswith("has no masssend quota")
    wx.advance(24 * 3600)
    token = wx.token("wxsubscribe001")
    assert wx.post(SENDALL, token, {"filter": {"is_to_all": True}, **text("c")})["errcode"] == 0


def test_service_account_sends_to_all_once_a_day_but_to_tags_freely(wx: WeChat, service: Service) -> None:
    assert wx.post(SENDALL, service.token, {"filter": {"is_to_all": True}, **text("a")})["errcode"] == 0
    second = wx.post(SENDALL, service.token, {"filter": {"is_to_all": True}, **text("b")})
    assert second["errcode"] == 45028
    assert second["errmsg"].startswith("has no masssend quota")
    tag = wx.admin("POST", f"/accounts/{service.appid}/tags", {"name": "vip", "openids": service.openids[:2]})
    by_tag = {"filter": {"is_to_all": False, "tag_id": tag["id"]}}
    # is_to_all=false sends stay out of the history list and are not capped (§4.1)
    assert [wx.post(SENDALL, service.token, {**by_tag, **text(f"tag {n}")})["errcode"] for n in range(3)] == [
        0,
        0,
        0,
    ]
    wx.advance(24 * 3600)
    service.token = wx.token(service.appid)
    assert wx.post(SENDALL, service.token, {"filter": {"is_to_all": True}, **text("c")})["errcode"] == 0


def test_service_account_sends_to_all_four_times_a_calendar_month(wx: WeChat, service: Service) -> None:
    for day in range(4):  # June 1 to 4
        assert (
            wx.post(SENDALL, service.token, {"filter": {"is_to_all": True}, **text(f"{day}")})["errcode"] == 0
        )
        wx.advance(24 * 3600)
        service.token = wx.token(service.appid)
    fifth = wx.post(SENDALL, service.token, {"filter": {"is_to_all": True}, **text("june 5")})
    assert fifth["errcode"] == 45028  # a new day, but the month's four are used
    assert wx.post(SEND, service.token, {"touser": service.openids[:2], **text("list")})["errcode"] == 0
    wx.advance(26 * 24 * 3600)  # July 1
    service.token = wx.token(service.appid)
    assert wx.post(SENDALL, service.token, {"filter": {"is_to_all": True}, **text("july")})["errcode"] == 0


def test_console_send_to_all_shares_the_history_quota(wx: WeChat, service: Service) -> None:
    console = wx.admin(
        "POST", f"/accounts/{service.appid}/console-mass", {"content": "控制台群发"}, expect=201
    )
    assert (console["sent"], console["filtered"]) == (5, 0)
    assert wx.inbox(service.appid, service.openids[0], kind="mass")[0]["content"] == "控制台群发"
    assert wx.post(SENDALL, service.token, {"filter": {"is_to_all": True}, **text("api")})["errcode"] == 45028
    again = wx.admin("POST", f"/accounts/{service.appid}/console-mass", {}, expect=409)
    assert "45028" in again["error"]
    wx.advance(24 * 3600)
    service.token = wx.token(service.appid)
    assert wx.post(SENDALL, service.token, {"filter": {"is_to_all": True}, **text("api")})["errcode"] == 0
    wx.admin("POST", f"/accounts/{service.appid}/console-mass", {}, expect=409)  # the API used today's
    # console sends count towards each follower's 4 per month too, and are no API job
    user = wx.admin("GET", f"/accounts/{service.appid}/users/{service.openids[0]}")
    assert user["mass_by_month"] == {"2024-06": 2}
    assert len(wx.admin("GET", f"/accounts/{service.appid}/mass-jobs")["jobs"]) == 1


def test_review_failure_uses_no_history_quota(wx: WeChat, service: Service) -> None:
    wx.account(service.appid, mass_job_status="err(20001)")
    assert wx.post(SENDALL, service.token, {"filter": {"is_to_all": True}, **text("a")})["errcode"] == 0
    wx.account(service.appid, mass_job_status="send success")
    assert wx.post(SENDALL, service.token, {"filter": {"is_to_all": True}, **text("b")})["errcode"] == 0


def test_one_hundred_mass_jobs_a_day(wx: WeChat, service: Service) -> None:
    refused = wx.post(SEND, service.token, {"touser": service.openids[:1], **text("too few")})
    assert refused["errcode"] == 40130  # refused calls do not count towards the cap
    for n in range(100):
        if n == 50:
            wx.advance(60)  # stay under 60 mass calls per minute
        assert wx.post(SEND, service.token, {"touser": service.openids, **text(f"{n}")})["errcode"] == 0
    over = wx.post(SENDALL, service.token, {"filter": {"is_to_all": True}, **text("101st")})
    assert over["errcode"] == 45009  # sendall and send share the cap
    assert over["errmsg"].startswith("reach max api daily quota limit")
    assert wx.post(SEND, service.token, {"touser": service.openids, **text("101st")})["errcode"] == 45009
    preview = {"touser": service.openids[0], **text("preview")}  # previews are not part of the cap
    assert wx.post("/cgi-bin/message/mass/preview", service.token, preview)["errcode"] == 0
    assert len(wx.admin("GET", f"/accounts/{service.appid}/mass-jobs")["jobs"]) == 100


def test_clientmsgid_records_are_pruned_after_24_hours(wx: WeChat, service: Service, server) -> None:
    account = server.sandbox.state.accounts[service.appid]
    body = {"touser": service.openids, **text()}
    assert wx.post(SEND, service.token, {**body, "clientmsgid": "a"})["errcode"] == 0
    wx.advance(12 * 3600)
    service.token = wx.token(service.appid)
    assert wx.post(SEND, service.token, {**body, "clientmsgid": "b"})["errcode"] == 0
    assert list(account.mass_by_clientmsgid) == ["a", "b"]
    wx.advance(12 * 3600)  # "a" is 24 h old: it can no longer refuse anything
    service.token = wx.token(service.appid)
    assert wx.post(SEND, service.token, {**body, "clientmsgid": "c"})["errcode"] == 0
    assert list(account.mass_by_clientmsgid) == ["b", "c"]
    assert wx.post(SEND, service.token, {**body, "clientmsgid": "b"})["errcode"] == 45065  # still known


def test_sixty_mass_calls_per_minute(wx: WeChat, service: Service) -> None:
    for n in range(60):
        assert (
            wx.post(SEND, service.token, {"touser": service.openids[:1], **text(str(n))})["errcode"] == 40130
        )
    limited = wx.post(SEND, service.token, {"touser": service.openids, **text("61st")})
    assert limited["errcode"] == 45011
    wx.advance(60)
    assert wx.post(SEND, service.token, {"touser": service.openids, **text("next minute")})["errcode"] == 0


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"msgtype": "news", "news": {}}, 40008),
        ({}, 40008),
        ({"msgtype": "text"}, 47001),
        ({"msgtype": "text", "text": {"content": ""}}, 44004),
        ({"msgtype": "mpnews", "mpnews": {"media_id": "no-such-draft"}}, 40007),
        ({"msgtype": "voice", "voice": {}}, 40007),
        ({"msgtype": "image", "images": {"media_ids": []}}, 40007),
        ({"msgtype": "mpvideo", "mpvideo": {"media_id": ""}}, 40007),
        ({"msgtype": "wxcard", "wxcard": {}}, 47001),
    ],
)
def test_payload_validation(wx: WeChat, service: Service, body: dict, errcode: int) -> None:
    assert wx.post(SEND, service.token, {"touser": service.openids, **body})["errcode"] == errcode


@pytest.mark.parametrize(
    "payload",
    [
        {"msgtype": "voice", "voice": {"media_id": "VOICE_MEDIA"}},
        {"msgtype": "image", "images": {"media_ids": ["IMG1", "IMG2"], "recommend": "看看"}},
        {"msgtype": "mpvideo", "mpvideo": {"media_id": "VIDEO", "title": "发布会"}},
        {"msgtype": "wxcard", "wxcard": {"card_id": "pFS7Fjg"}},
    ],
)
def test_other_payload_types_are_accepted(wx: WeChat, service: Service, payload: dict) -> None:
    assert wx.post(SEND, service.token, {"touser": service.openids, **payload})["errcode"] == 0


def test_mpnews_carries_msg_data_id_urls_and_can_be_deleted(
    wx: WeChat, service: Service, receiver: Receiver
) -> None:
    wx.account(service.appid, webhook_url=receiver.url)
    draft = wx.admin(
        "POST",
        f"/accounts/{service.appid}/drafts",
        {"articles": [{"title": "夏季新品", "content": "<p>hi</p>"}, {"title": "会员日"}]},
    )
    result = wx.post(
        SENDALL, service.token, {"filter": {"is_to_all": True}, "msgtype": "mpnews", "mpnews": draft}
    )
    assert result["errcode"] == 0 and isinstance(result["msg_data_id"], int)
    assert wx.inbox(service.appid, service.openids[0])[0]["content"] == "夏季新品 | 会员日"
    wx.flush()
    body = receiver.requests[0].body
    assert "<ArticleUrlResult><Count>2</Count>" in body
    assert "<CopyrightCheckResult><Count>2</Count>" in body
    msg_id = result["msg_id"]
    assert (
        wx.post("/cgi-bin/message/mass/delete", service.token, {"msg_id": msg_id, "article_idx": 2})[
            "errcode"
        ]
        == 0
    )
    assert (
        wx.post("/cgi-bin/message/mass/get", service.token, {"msg_id": msg_id})["msg_status"]
        == "SEND_SUCCESS"
    )
    assert wx.post("/cgi-bin/message/mass/delete", service.token, {"msg_id": str(msg_id)})["errcode"] == 0
    assert wx.post("/cgi-bin/message/mass/get", service.token, {"msg_id": msg_id})["msg_status"] == "DELETE"


def test_unknown_msg_id_and_undeletable_jobs_are_40059(wx: WeChat, service: Service) -> None:
    assert wx.post("/cgi-bin/message/mass/get", service.token, {"msg_id": 1})["errcode"] == 40059
    assert wx.post("/cgi-bin/message/mass/delete", service.token, {"msg_id": 1})["errcode"] == 40059
    sent = wx.post(SEND, service.token, {"touser": service.openids, **text()})
    assert (
        wx.post("/cgi-bin/message/mass/delete", service.token, {"msg_id": sent["msg_id"]})["errcode"] == 40059
    )


def test_simulated_review_failure(wx: WeChat, service: Service, receiver: Receiver) -> None:
    wx.account(service.appid, webhook_url=receiver.url, mass_job_status="err(20001)")
    result = wx.post(SENDALL, service.token, {"filter": {"is_to_all": True}, **text()})
    assert result["errcode"] == 0
    assert wx.inbox(service.appid, service.openids[0]) == []
    wx.flush()
    assert job_fields(receiver.requests[0].body)["Status"] == "err(20001)"
    assert (
        wx.post("/cgi-bin/message/mass/get", service.token, {"msg_id": result["msg_id"]})["msg_status"]
        == "SEND_FAIL"
    )


def test_preview_reaches_one_user_without_using_the_monthly_cap(wx: WeChat, service: Service) -> None:
    user = service.openids[0]
    wx.admin("POST", f"/accounts/{service.appid}/users/{user}", {"wxname": "zhang_san"})
    result = wx.post(
        "/cgi-bin/message/mass/preview", service.token, {"towxname": "zhang_san", **text("预览")}
    )
    assert result["errcode"] == 0 and result["errmsg"] == "preview success"
    by_openid = wx.post("/cgi-bin/message/mass/preview", service.token, {"touser": user, **text("预览2")})
    assert by_openid["errcode"] == 0
    assert [m["kind"] for m in wx.inbox(service.appid, user)] == ["mass_preview", "mass_preview"]
    assert wx.admin("GET", f"/accounts/{service.appid}/users/{user}")["mass_by_month"] == {}


def test_speed_get_and_set(wx: WeChat, service: Service) -> None:
    speed = "/cgi-bin/message/mass/speed"
    assert wx.post(speed + "/get", service.token, {}) == {"speed": 0, "realspeed": 80}
    assert wx.post(speed + "/set", service.token, {"speed": 3})["errcode"] == 0
    assert wx.post(speed + "/get", service.token, {}) == {"speed": 3, "realspeed": 30}
    assert wx.post(speed + "/set", service.token, {"speed": 5})["errcode"] == 45083
    assert wx.post(speed + "/set", service.token, {})["errcode"] == 45084
