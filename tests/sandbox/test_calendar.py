"""Days and months are China-time calendar periods (UTC+8): every quota resets at 00:00 Beijing.

Each boundary test starts the sandbox clock one second before a period ends and steps across it:
23:59:59 → 00:00:00 China time is 15:59:59 → 16:00:00 UTC, where the UTC day does not change, so a
sandbox that counted in UTC would still refuse. The negative cases step across 00:00 UTC
(07:59:59 → 08:00:00 China time), where the UTC day or month changes but the China one does not.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from local.sandbox.clock import ManualClock, china_day, china_month, china_timestamp

from .conftest import SECRET, Service, WeChat

SEND = "/cgi-bin/message/mass/send"
SENDALL = "/cgi-bin/message/mass/sendall"
TEMPLATE_SEND = "/cgi-bin/message/template/send"

LAST_SECOND_OF_JUNE = "2024-06-30 23:59:59"  # China time = 2024-06-30 15:59:59 UTC
BEFORE_UTC_MIDNIGHT = "2024-06-30 07:59:59"  # China time = 2024-06-29 23:59:59 UTC
BEFORE_UTC_MONTH_END = "2024-07-01 07:59:59"  # China time = 2024-06-30 23:59:59 UTC


def starting_at(moment: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("clock", [moment], indirect=True, ids=[moment])


def text(content: str) -> dict:
    return {"msgtype": "text", "text": {"content": content}}


def template_send(wx: WeChat, svc: Service) -> dict:
    data = {"thing1": {"value": "咖啡豆"}, "amount2": {"value": "¥1"}, "time3": {"value": "10:00"}}
    body = {"touser": svc.openids[0], "template_id": svc.template_id, "data": data}
    return wx.post(TEMPLATE_SEND, svc.token, body)


def token_errcode(wx: WeChat, appid: str) -> int:
    params = {"grant_type": "client_credential", "appid": appid, "secret": SECRET}
    return wx.http.get("/cgi-bin/token", params=params).json().get("errcode", 0)


def mass_counts(wx: WeChat, svc: Service, openids: list[str]) -> list[int]:
    return [len(wx.inbox(svc.appid, o, kind="mass")) for o in openids]


# --- the clock helpers --------------------------------------------------------------------------
def test_manual_clock_starts_at_a_china_time_instant() -> None:
    clock = ManualClock.at(LAST_SECOND_OF_JUNE)
    assert datetime.fromtimestamp(clock.now(), tz=UTC).isoformat() == "2024-06-30T15:59:59+00:00"
    assert ManualClock.at("2024-06-30T15:59:59+00:00").now() == clock.now()  # aware values keep their zone
    assert ManualClock().now() == china_timestamp("2024-06-01 00:00:00")


def test_day_and_month_keys_switch_at_china_midnight() -> None:
    before = china_timestamp(LAST_SECOND_OF_JUNE)
    assert (china_day(before), china_month(before)) == ("2024-06-30", "2024-06")
    assert (china_day(before + 1), china_month(before + 1)) == ("2024-07-01", "2024-07")
    utc_midnight = china_timestamp(BEFORE_UTC_MONTH_END) + 1
    assert (china_day(utc_midnight - 1), china_day(utc_midnight)) == ("2024-07-01", "2024-07-01")


@starting_at(LAST_SECOND_OF_JUNE)
def test_the_clock_fixture_takes_a_start(wx: WeChat) -> None:
    assert wx.admin("GET", "/clock")["china_time"] == "2024-06-30T23:59:59+08:00"


# --- the 4-per-calendar-month mass cap per follower (§4.1) ----------------------------------------
@starting_at(LAST_SECOND_OF_JUNE)
def test_monthly_mass_cap_resets_at_china_midnight(wx: WeChat, service: Service) -> None:
    pair = service.openids[:2]
    for n in range(4):
        assert wx.post(SEND, service.token, {"touser": pair, **text(f"june {n}")})["errcode"] == 0
    assert mass_counts(wx, service, pair) == [4, 4]
    capped = wx.post(SEND, service.token, {"touser": pair, **text("june 5")})
    assert capped["errcode"] == 0  # accepted, but both users are filtered
    assert mass_counts(wx, service, pair) == [4, 4]
    wx.advance(1)  # 2024-07-01 00:00:00 China time, still 2024-06-30 in UTC
    assert wx.post(SEND, service.token, {"touser": pair, **text("july 1")})["errcode"] == 0
    assert mass_counts(wx, service, pair) == [5, 5]
    user = wx.admin("GET", f"/accounts/{service.appid}/users/{pair[0]}")
    assert user["mass_by_month"] == {"2024-06": 4, "2024-07": 1}


@starting_at(BEFORE_UTC_MONTH_END)
def test_monthly_mass_cap_ignores_the_utc_month_change(wx: WeChat, service: Service) -> None:
    pair = service.openids[:2]
    for n in range(4):
        assert wx.post(SEND, service.token, {"touser": pair, **text(f"july {n}")})["errcode"] == 0
    wx.advance(1)  # 2024-07-01 00:00:00 UTC: a new UTC month, the same China month
    assert wx.post(SEND, service.token, {"touser": pair, **text("july 5")})["errcode"] == 0
    assert mass_counts(wx, service, pair) == [4, 4]


# --- daily limits -----------------------------------------------------------------------------
@starting_at(LAST_SECOND_OF_JUNE)
def test_template_daily_quota_resets_at_china_midnight(wx: WeChat, service: Service) -> None:
    wx.account(service.appid, template_daily_quota=2)
    assert [template_send(wx, service)["errcode"] for _ in range(3)] == [0, 0, 45009]
    wx.advance(1)
    assert template_send(wx, service)["errcode"] == 0


@starting_at(BEFORE_UTC_MIDNIGHT)
def test_template_daily_quota_ignores_utc_midnight(wx: WeChat, service: Service) -> None:
    wx.account(service.appid, template_daily_quota=2)
    assert [template_send(wx, service)["errcode"] for _ in range(2)] == [0, 0]
    wx.advance(1)  # 00:00:00 UTC: a new UTC day, the same China day
    assert template_send(wx, service)["errcode"] == 45009


@starting_at(LAST_SECOND_OF_JUNE)
def test_token_daily_limit_resets_at_china_midnight(wx: WeChat) -> None:
    wx.account("wxcalendar0001", token_daily_limit=2)
    assert [token_errcode(wx, "wxcalendar0001") for _ in range(3)] == [0, 0, 45009]
    wx.advance(1)
    assert token_errcode(wx, "wxcalendar0001") == 0


@starting_at(BEFORE_UTC_MIDNIGHT)
def test_token_daily_limit_ignores_utc_midnight(wx: WeChat) -> None:
    wx.account("wxcalendar0001", token_daily_limit=2)
    assert [token_errcode(wx, "wxcalendar0001") for _ in range(2)] == [0, 0]
    wx.advance(1)
    assert token_errcode(wx, "wxcalendar0001") == 45009


def subscription_account(wx: WeChat) -> str:
    wx.account("wxcalendarsub1", type="subscription", verified=True)
    wx.followers("wxcalendarsub1", 3)
    return wx.token("wxcalendarsub1")


@starting_at(LAST_SECOND_OF_JUNE)
def test_subscription_sendall_resets_at_china_midnight(wx: WeChat) -> None:
    token = subscription_account(wx)
    to_all = {"filter": {"is_to_all": True}}
    assert wx.post(SENDALL, token, {**to_all, **text("a")})["errcode"] == 0
    assert wx.post(SENDALL, token, {**to_all, **text("b")})["errcode"] == 45028
    wx.advance(1)
    assert wx.post(SENDALL, token, {**to_all, **text("c")})["errcode"] == 0


@starting_at(BEFORE_UTC_MIDNIGHT)
def test_subscription_sendall_ignores_utc_midnight(wx: WeChat) -> None:
    token = subscription_account(wx)
    assert wx.post(SENDALL, token, {"filter": {"is_to_all": True}, **text("a")})["errcode"] == 0
    wx.advance(1)
    assert wx.post(SENDALL, token, {"filter": {"is_to_all": True}, **text("b")})["errcode"] == 45028


# --- service-account send-to-all: 1 per China day, 4 per China month (§4.1) ------------------------
@starting_at("2024-06-27 12:00:00")
def test_service_send_to_all_day_and_month_reset_at_china_midnight(wx: WeChat, service: Service) -> None:
    to_all = {"filter": {"is_to_all": True}}
    for day in range(4):  # June 27, 28, 29 and 30, at noon
        if day:
            wx.advance(24 * 3600)
            service.token = wx.token(service.appid)
        assert wx.post(SENDALL, service.token, {**to_all, **text(f"day {day}")})["errcode"] == 0
    wx.advance(12 * 3600 - 1)  # 2024-06-30 23:59:59: today's send and the month's four are used
    service.token = wx.token(service.appid)
    assert wx.post(SENDALL, service.token, {**to_all, **text("late")})["errcode"] == 45028
    wx.advance(1)  # July in China, still June 30 in UTC (where noon's send was made)
    assert wx.post(SENDALL, service.token, {**to_all, **text("july")})["errcode"] == 0


@starting_at(BEFORE_UTC_MIDNIGHT)
def test_service_send_to_all_ignores_utc_midnight(wx: WeChat, service: Service) -> None:
    assert wx.post(SENDALL, service.token, {"filter": {"is_to_all": True}, **text("a")})["errcode"] == 0
    wx.advance(1)
    assert wx.post(SENDALL, service.token, {"filter": {"is_to_all": True}, **text("b")})["errcode"] == 45028


# --- the "高级群发接口" cap: 100 accepted sendall/send jobs per China day (§4.1) ----------------------
def fill_mass_api_cap(wx: WeChat, svc: Service) -> None:
    for n in range(100):
        if n == 50:
            wx.advance(60)  # stay under 60 mass calls per minute
        assert wx.post(SEND, svc.token, {"touser": svc.openids, **text(f"batch {n}")})["errcode"] == 0


@starting_at("2024-06-30 23:57:00")
def test_mass_api_cap_resets_at_china_midnight(wx: WeChat, service: Service) -> None:
    fill_mass_api_cap(wx, service)
    wx.advance(119)  # 23:59:59
    over = wx.post(SEND, service.token, {"touser": service.openids, **text("101st")})
    assert over["errcode"] == 45009
    assert over["errmsg"].startswith("reach max api daily quota limit")
    wx.advance(1)
    assert wx.post(SEND, service.token, {"touser": service.openids, **text("next day")})["errcode"] == 0


@starting_at("2024-06-30 07:57:00")
def test_mass_api_cap_ignores_utc_midnight(wx: WeChat, service: Service) -> None:
    fill_mass_api_cap(wx, service)
    wx.advance(120)  # 08:00:00 China time = 00:00:00 UTC
    assert wx.post(SEND, service.token, {"touser": service.openids, **text("101st")})["errcode"] == 45009
