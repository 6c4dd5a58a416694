"""§3 subscription notifications: grants from popups, bizsend consumption, events."""

from __future__ import annotations

from .conftest import Receiver, Service, WeChat

BIZSEND = "/cgi-bin/message/subscribe/bizsend"


def popup(wx: WeChat, svc: Service, openid: str, accept=(), reject=(), scene: int = 2) -> dict:
    body = {"accept": list(accept), "reject": list(reject), "scene": scene}
    return wx.admin("POST", f"/accounts/{svc.appid}/users/{openid}/popup", body)


def bizsend(
    wx: WeChat, svc: Service, openid: str, template_id: str | None = None, data: dict | None = None
) -> dict:
    body = {
        "touser": openid,
        "template_id": template_id or svc.sub_one_time,
        "page": "https://shop.example/o/1",
        "data": data or {"thing1": {"value": "您的订单"}, "enum2": {"value": "已发货"}},
    }
    return wx.post(BIZSEND, svc.token, body)


def test_one_accept_allows_exactly_one_send(wx: WeChat, service: Service) -> None:
    user = service.openids[0]
    assert bizsend(wx, service, user)["errcode"] == 43101  # nothing granted yet
    popup(wx, service, user, accept=[service.sub_one_time])
    first = bizsend(wx, service, user)
    assert first["errcode"] == 0 and first["msgid"] > 0
    second = bizsend(wx, service, user)
    assert second["errcode"] == 43101
    assert second["errmsg"].startswith("user refuse to accept the msg rid: ")
    inbox = wx.inbox(service.appid, user, kind="subscription")
    assert [m["msgid"] for m in inbox] == [first["msgid"]]


def test_two_accepts_allow_two_sends(wx: WeChat, service: Service) -> None:
    user = service.openids[0]
    popup(wx, service, user, accept=[service.sub_one_time])
    popup(wx, service, user, accept=[service.sub_one_time])
    assert bizsend(wx, service, user)["errcode"] == 0
    assert bizsend(wx, service, user)["errcode"] == 0
    assert bizsend(wx, service, user)["errcode"] == 43101


def test_rejected_popup_grants_nothing(wx: WeChat, service: Service) -> None:
    user = service.openids[0]
    popup(wx, service, user, reject=[service.sub_one_time])
    assert bizsend(wx, service, user)["errcode"] == 43101


def test_invalid_data_does_not_consume_the_grant(wx: WeChat, service: Service) -> None:
    user = service.openids[0]
    popup(wx, service, user, accept=[service.sub_one_time])
    bad = bizsend(wx, service, user, data={"thing1": {"value": "x"}, "enum2": {"value": "已签收"}})
    assert bad["errcode"] == 47003
    assert "data.enum2.value invalid" in bad["errmsg"]
    assert bizsend(wx, service, user)["errcode"] == 0


def test_subscription_amount_is_limited_to_10_digits(wx: WeChat, service: Service) -> None:
    user = service.openids[0]
    popup(wx, service, user, accept=[service.sub_long_term])
    eleven = {"thing1": {"value": "x"}, "amount2": {"value": "¥12345678901"}}
    result = bizsend(wx, service, user, service.sub_long_term, eleven)
    assert result["errcode"] == 47003
    assert "data.amount2.value invalid" in result["errmsg"]
    ten = {"thing1": {"value": "x"}, "amount2": {"value": "¥1234567890"}}
    assert bizsend(wx, service, user, service.sub_long_term, ten)["errcode"] == 0


def test_long_term_grant_is_not_consumed_until_settings_reject(
    wx: WeChat, service: Service, receiver: Receiver
) -> None:
    wx.account(service.appid, webhook_url=receiver.url)
    user = service.openids[0]
    data = {"thing1": {"value": "就诊提醒"}, "amount2": {"value": "¥10"}}
    popup(wx, service, user, accept=[service.sub_long_term])
    for _ in range(3):
        assert bizsend(wx, service, user, service.sub_long_term, data)["errcode"] == 0
    wx.admin(
        "POST",
        f"/accounts/{service.appid}/users/{user}/subscription-settings",
        {"reject": [service.sub_long_term]},
    )
    assert bizsend(wx, service, user, service.sub_long_term, data)["errcode"] == 43101
    wx.flush()
    change = [r for r in receiver.requests if "subscribe_msg_change_event" in r.body]
    assert len(change) == 1
    assert (
        "<SubscribeMsgChangeEvent><List><TemplateId><![CDATA[SUB_LONG]]></TemplateId>"
        "<SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString></List></SubscribeMsgChangeEvent>"
    ) in change[0].body


def test_settings_reject_revokes_unused_one_time_grants(wx: WeChat, service: Service) -> None:
    user = service.openids[0]
    popup(wx, service, user, accept=[service.sub_one_time])
    wx.admin(
        "POST",
        f"/accounts/{service.appid}/users/{user}/subscription-settings",
        {"reject": [service.sub_one_time]},
    )
    assert bizsend(wx, service, user)["errcode"] == 43101


def test_unknown_template_is_40037_and_unknown_user_is_40003(wx: WeChat, service: Service) -> None:
    user = service.openids[0]
    assert bizsend(wx, service, user, template_id="nope")["errcode"] == 40037
    assert bizsend(wx, service, "oNOBODYxxxxxxxxxxxxxxxxxxxxx")["errcode"] == 40003


def test_non_follower_receives_it_in_service_notifications(wx: WeChat, service: Service) -> None:
    stranger = "oH5visitor0000000000000000001"
    popup(wx, service, stranger, accept=[service.sub_one_time], scene=1)
    assert bizsend(wx, service, stranger)["errcode"] == 0
    (message,) = wx.inbox(service.appid, stranger)
    assert message["channel"] == "service_notifications"
    assert message["content"] == "thing1:您的订单\nenum2:已发货"


def test_popup_and_sent_events_are_pushed(wx: WeChat, service: Service, receiver: Receiver) -> None:
    wx.account(service.appid, webhook_url=receiver.url)
    user = service.openids[0]
    wx.sub_template(service.appid, ["thing1"], pri_tmpl_id="SUB_OTHER")
    popup(wx, service, user, accept=[service.sub_one_time], reject=["SUB_OTHER"])
    msgid = bizsend(wx, service, user)["msgid"]
    wx.flush()
    bodies = {r.body.split("<Event><![CDATA[")[1].split("]]>")[0]: r.body for r in receiver.requests}
    assert (
        "<SubscribeMsgPopupEvent>"
        "<List><TemplateId><![CDATA[SUB_ONCE]]></TemplateId><SubscribeStatusString><![CDATA[accept]]>"
        "</SubscribeStatusString><PopupScene>2</PopupScene></List>"
        "<List><TemplateId><![CDATA[SUB_OTHER]]></TemplateId><SubscribeStatusString><![CDATA[reject]]>"
        "</SubscribeStatusString><PopupScene>2</PopupScene></List>"
        "</SubscribeMsgPopupEvent>"
    ) in bodies["subscribe_msg_popup_event"]
    assert (
        f"<SubscribeMsgSentEvent><List><TemplateId><![CDATA[SUB_ONCE]]></TemplateId><MsgID>{msgid}</MsgID>"
        "<ErrorCode>0</ErrorCode><ErrorStatus><![CDATA[success]]></ErrorStatus></List></SubscribeMsgSentEvent>"
    ) in bodies["subscribe_msg_sent_event"]


def test_popup_cannot_mix_one_time_and_long_term(wx: WeChat, service: Service) -> None:
    body = {"accept": [service.sub_one_time, service.sub_long_term]}
    wx.admin("POST", f"/accounts/{service.appid}/users/{service.openids[0]}/popup", body, expect=400)


def test_gettemplate_lists_types(wx: WeChat, service: Service) -> None:
    result = wx.get("/wxaapi/newtmpl/gettemplate", service.token)
    assert result["errcode"] == 0
    by_id = {t["priTmplId"]: t for t in result["data"]}
    assert by_id["SUB_ONCE"]["type"] == 2
    assert by_id["SUB_LONG"]["type"] == 3
    assert by_id["SUB_ONCE"]["content"] == "thing1:{{thing1.DATA}}\nenum2:{{enum2.DATA}}"
    assert set(by_id["SUB_LONG"]) == {"priTmplId", "title", "content", "example", "type"}
