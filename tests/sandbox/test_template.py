"""§2 template messages: recipient and template checks, keyword rules, dedupe, quota, delivery."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .conftest import TLS, Receiver, Service, WeChat

SEND = "/cgi-bin/message/template/send"


def good_data() -> dict:
    return {
        "thing1": {"value": "咖啡豆 1kg"},
        "amount2": {"value": "¥88.00"},
        "time3": {"value": "2024年6月1日 10:30"},
    }


def send(wx: WeChat, svc: Service, **overrides) -> dict:
    body = {"touser": svc.openids[0], "template_id": svc.template_id, "data": good_data(), **overrides}
    return wx.post(SEND, svc.token, body)


def test_send_returns_a_64_bit_msgid_and_delivers_the_rendered_message(wx: WeChat, service: Service) -> None:
    result = send(wx, service, url="https://shop.example/orders/1")
    assert result["errcode"] == 0 and result["errmsg"] == "ok"
    assert result["msgid"] > 2**53  # ids above 2^53 on purpose (§0)
    inbox = wx.inbox(service.appid, service.openids[0])
    assert len(inbox) == 1
    assert inbox[0]["msgid"] == result["msgid"]
    assert inbox[0]["content"] == "商品:咖啡豆 1kg\n金额:¥88.00\n时间:2024年6月1日 10:30"
    assert inbox[0]["link"] == {"type": "url", "url": "https://shop.example/orders/1"}
    assert wx.inbox(service.appid, service.openids[1]) == []


def test_miniprogram_wins_over_url(wx: WeChat, service: Service) -> None:
    send(wx, service, url="https://a.example", miniprogram={"appid": "wxmini", "pagepath": "index?x=1"})
    link = wx.inbox(service.appid, service.openids[0])[0]["link"]
    assert link["type"] == "miniprogram"
    assert link["miniprogram"]["pagepath"] == "index?x=1"


def test_unknown_openid_is_40003(wx: WeChat, service: Service) -> None:
    assert send(wx, service, touser="oNOBODYxxxxxxxxxxxxxxxxxxxxx")["errcode"] == 40003
    assert send(wx, service, touser="")["errcode"] == 40003


def test_follower_of_another_account_is_40003(wx: WeChat, service: Service) -> None:
    wx.account("wxother000001")
    stranger = wx.followers("wxother000001", 1)[0]
    assert send(wx, service, touser=stranger)["errcode"] == 40003


def test_unfollowed_user_is_43004(wx: WeChat, service: Service) -> None:
    wx.admin("POST", f"/accounts/{service.appid}/users/{service.openids[0]}/unfollow")
    result = send(wx, service)
    assert result["errcode"] == 43004
    assert result["errmsg"].startswith("require subscribe rid: ")
    assert wx.inbox(service.appid, service.openids[0]) == []


def test_unknown_template_is_40037(wx: WeChat, service: Service) -> None:
    assert send(wx, service, template_id="nope")["errcode"] == 40037
    wx.account("wxother000001")
    foreign = wx.template("wxother000001", ["thing1"])
    assert send(wx, service, template_id=foreign)["errcode"] == 40037


# one violation per keyword type of §2.3 (template-message family)
VIOLATIONS = [
    ("thing1", "超" * 21),
    ("number1", "12元"),
    ("letter1", "abc1"),
    ("symbol1", "%%%%%%"),
    ("character_string1", "订单A1"),
    ("time1", "明天下午"),
    ("date1", "2024年2月30日"),
    ("amount1", "88.00"),
    ("amount1", "¥1234567890123"),
    ("phone_number1", "1" * 18),
    ("car_number1", "粤A12345678"),
    ("name1", "欧阳" * 6),
    ("phrase1", "已经配送完成"),
    ("const1", "已取消"),
]


@pytest.mark.parametrize(("key", "value"), VIOLATIONS)
def test_each_keyword_type_violation_is_47003_naming_the_key(
    wx: WeChat, service: Service, key: str, value: str
) -> None:
    spec = {"name": key, "enum": ["已支付", "已退款"]} if key.startswith("const") else key
    template_id = wx.template(service.appid, ["thing9", spec])
    body = {"thing9": {"value": "ok"}, key: {"value": value}}
    result = send(wx, service, template_id=template_id, data=body)
    assert result["errcode"] == 47003
    assert result["errmsg"].startswith(f"argument invalid! data.{key}.value invalid rid: ")
    assert wx.inbox(service.appid, service.openids[0]) == []


def test_empty_and_missing_values_are_47003(wx: WeChat, service: Service) -> None:
    data = good_data()
    data["amount2"] = {"value": ""}
    assert "data.amount2.value is empty" in send(wx, service, data=data)["errmsg"]
    data = good_data()
    del data["time3"]
    assert "data.time3.value is empty" in send(wx, service, data=data)["errmsg"]


def test_the_first_bad_key_in_template_order_is_named(wx: WeChat, service: Service) -> None:
    data = {"thing1": {"value": "x" * 21}, "amount2": {"value": "free"}, "time3": {"value": "10:00"}}
    assert "data.thing1.value invalid" in send(wx, service, data=data)["errmsg"]


def test_const_values_from_the_enumeration_pass(wx: WeChat, service: Service) -> None:
    template_id = wx.template(service.appid, [{"name": "const1", "enum": ["已支付", "已退款"]}])
    assert send(wx, service, template_id=template_id, data={"const1": {"value": "已退款"}})["errcode"] == 0


def test_legacy_first_and_remark_keys_are_dropped(wx: WeChat, service: Service) -> None:
    data = {**good_data(), "first": {"value": "您好"}, "remark": {"value": "谢谢"}}
    assert send(wx, service, data=data)["errcode"] == 0
    assert wx.inbox(service.appid, service.openids[0])[0]["data"] == {
        "thing1": "咖啡豆 1kg",
        "amount2": "¥88.00",
        "time3": "2024年6月1日 10:30",
    }


def test_client_msg_id_dedupes_for_ten_minutes(wx: WeChat, service: Service) -> None:
    first = send(wx, service, client_msg_id="order-1-paid")
    wx.advance(599)
    again = send(wx, service, client_msg_id="order-1-paid")
    assert again == {"errcode": 0, "errmsg": "ok", "msgid": first["msgid"]}
    assert len(wx.inbox(service.appid, service.openids[0])) == 1
    other_user = send(wx, service, touser=service.openids[1], client_msg_id="order-1-paid")
    assert other_user["msgid"] != first["msgid"]  # the key is openid + client_msg_id
    wx.advance(1)
    later = send(wx, service, client_msg_id="order-1-paid")
    assert later["msgid"] != first["msgid"]
    assert len(wx.inbox(service.appid, service.openids[0])) == 2


def test_daily_quota_is_45009_and_resets_next_day(wx: WeChat, service: Service) -> None:
    wx.account(service.appid, template_daily_quota=2)
    assert send(wx, service)["errcode"] == 0
    assert send(wx, service)["errcode"] == 0
    over = send(wx, service)
    assert over["errcode"] == 45009
    assert over["errmsg"].startswith("reach max api daily quota limit")
    assert len(wx.inbox(service.appid, service.openids[0])) == 2
    wx.advance(24 * 3600)
    service.token = wx.token(service.appid)  # the old one expired meanwhile
    assert send(wx, service)["errcode"] == 0


def test_dedupe_hit_does_not_use_quota(wx: WeChat, service: Service) -> None:
    wx.account(service.appid, template_daily_quota=1)
    first = send(wx, service, client_msg_id="k")
    assert send(wx, service, client_msg_id="k")["msgid"] == first["msgid"]


def test_unverified_or_subscription_accounts_get_48001(wx: WeChat, service: Service) -> None:
    wx.account(service.appid, verified=False)
    assert send(wx, service)["errcode"] == 48001
    wx.account(service.appid, verified=True, type="subscription")
    assert send(wx, service)["errcode"] == 48001


def test_success_pushes_templatesendjobfinish(wx: WeChat, service: Service, receiver: Receiver) -> None:
    wx.account(service.appid, webhook_url=receiver.url)
    msgid = send(wx, service)["msgid"]
    wx.flush()
    (push,) = receiver.requests
    assert push.query["openid"] == service.openids[0]
    assert "<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>" in push.body
    assert f"<MsgID>{msgid}</MsgID>" in push.body
    assert "<Status><![CDATA[success]]></Status>" in push.body


def test_user_block_is_reported_as_failed_status(wx: WeChat, service: Service, receiver: Receiver) -> None:
    wx.account(service.appid, webhook_url=receiver.url)
    wx.admin("POST", f"/accounts/{service.appid}/users/{service.openids[0]}", {"template_block": True})
    assert send(wx, service)["errcode"] == 0
    wx.flush()
    assert "<Status><![CDATA[failed:user block]]></Status>" in receiver.requests[0].body
    assert wx.inbox(service.appid, service.openids[0]) == []


def test_private_template_list_uses_data_placeholders(wx: WeChat, service: Service) -> None:
    listing = wx.get("/cgi-bin/template/get_all_private_template", service.token)["template_list"]
    (template,) = listing
    assert template["template_id"] == "TPL_ORDER_PAID"
    assert template["title"] == "订单支付成功"
    assert template["content"] == "商品:{{thing1.DATA}}\n金额:{{amount2.DATA}}\n时间:{{time3.DATA}}"


def test_get_on_a_post_endpoint_is_43002(wx: WeChat, service: Service) -> None:
    assert wx.get(SEND, service.token)["errcode"] == 43002
    assert (
        wx.http.post(
            "/cgi-bin/template/get_all_private_template", params={"access_token": service.token}
        ).json()["errcode"]
        == 43001
    )


def test_concurrent_sends_with_one_client_msg_id_deliver_once(wx: WeChat, service: Service, server) -> None:
    body = {
        "touser": service.openids[0],
        "template_id": service.template_id,
        "data": good_data(),
        "client_msg_id": "c",
    }

    def fire(_: int) -> int:
        with httpx.Client(base_url=server.url, trust_env=False, verify=TLS) as client:
            return client.post(SEND, params={"access_token": service.token}, json=body).json()["msgid"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        msgids = set(pool.map(fire, range(32)))
    assert len(msgids) == 1
    assert len(wx.inbox(service.appid, service.openids[0])) == 1


def test_client_msg_id_records_are_pruned_after_ten_minutes(wx: WeChat, service: Service, server) -> None:
    account = server.sandbox.state.accounts[service.appid]
    first = send(wx, service, client_msg_id="a")
    wx.advance(300)
    send(wx, service, client_msg_id="b")
    assert [key for _, key in account.template_dedupe] == ["a", "b"]
    wx.advance(300)  # "a" is 10 minutes old: it can no longer dedupe anything
    resent = send(wx, service, client_msg_id="a")
    assert resent["msgid"] != first["msgid"]
    assert [key for _, key in account.template_dedupe] == ["b", "a"]  # re-recorded as the newest
    wx.advance(300)  # "b" expires while the younger "a" stays
    send(wx, service, client_msg_id="c")
    assert [key for _, key in account.template_dedupe] == ["a", "c"]
    assert send(wx, service, client_msg_id="a")["msgid"] == resent["msgid"]
