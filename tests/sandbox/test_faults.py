"""Fault and latency injection: reproducible from the seed, per endpoint, without side effects."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from local.sandbox import ManualClock, SandboxServer

from .conftest import TLS, Service, WeChat

RULE = {
    "path": "/cgi-bin/tags/get",
    "errcodes": {"-1": 0.2, "45009": 0.1, "42010": 0.1},
    "http_statuses": {"500": 0.1, "502": 0.1},
}


@contextmanager
def sandbox(seed: int) -> Iterator[WeChat]:
    with (
        SandboxServer(seed=seed, clock=ManualClock()) as srv,
        httpx.Client(base_url=srv.url, trust_env=False, verify=TLS) as http,
    ):
        yield WeChat(http)


def outcomes(wx: WeChat, n: int = 40, path: str = "/cgi-bin/tags/get") -> list[str]:
    wx.account("wxfaulty00001")
    token = wx.token("wxfaulty00001")
    wx.admin("POST", "/faults", {**RULE, "path": path})
    seen = []
    for _ in range(n):
        response = wx.http.get(path, params={"access_token": token})
        seen.append(
            f"http {response.status_code}"
            if response.status_code != 200
            else str(response.json().get("errcode", 0))
        )
    return seen


def test_same_seed_same_sequence_different_seed_different_sequence() -> None:
    with sandbox(7) as a:
        first = outcomes(a)
    with sandbox(7) as b:
        again = outcomes(b)
    with sandbox(8) as c:
        other = outcomes(c)
    assert first == again
    assert first != other
    assert {"-1", "45009", "42010", "http 500", "http 502", "0"} <= set(first)


def test_each_endpoint_has_its_own_generator(wx: WeChat) -> None:
    with sandbox(7) as a:
        baseline = outcomes(a, 20)
    with sandbox(7) as b:
        b.account("wxfaulty00001")
        token = b.token("wxfaulty00001")
        b.admin("POST", "/faults", {**RULE, "path": "/cgi-bin/user/get"})
        for _ in range(7):  # traffic on another faulty endpoint must not shift this one's sequence
            b.http.get("/cgi-bin/user/get", params={"access_token": token})
        assert outcomes(b, 20) == baseline


def test_injected_errcode_has_the_wechat_shape_and_no_side_effect(wx: WeChat, service: Service) -> None:
    wx.admin("POST", "/faults", {"path": "/cgi-bin/message/template/send", "errcodes": {"-1": 1.0}})
    body = {"touser": service.openids[0], "template_id": service.template_id, "data": {}}
    result = wx.post("/cgi-bin/message/template/send", service.token, body)
    assert result["errcode"] == -1
    assert result["errmsg"].startswith("system error rid: ")
    assert wx.inbox(service.appid, service.openids[0]) == []
    counters = wx.admin("GET", "/counters")["paths"]["/cgi-bin/message/template/send"]
    assert counters == {"calls": 1, "errcodes": {"-1": 1}, "injected": {"errcode:-1": 1}}


@pytest.mark.parametrize("status", [500, 502])
def test_http_errors(wx: WeChat, service: Service, status: int) -> None:
    wx.admin("POST", "/faults", {"path": "/cgi-bin/user/get", "http_statuses": {str(status): 1.0}})
    response = wx.http.get("/cgi-bin/user/get", params={"access_token": service.token})
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")


def test_dropped_timeout_never_answers(wx: WeChat, service: Service) -> None:
    wx.admin(
        "POST",
        "/faults",
        {"path": "/cgi-bin/user/get", "timeout": {"rate": 1.0, "sleep_s": 0.3, "then": "drop"}},
    )
    with pytest.raises(httpx.TimeoutException):
        wx.http.get("/cgi-bin/user/get", params={"access_token": service.token}, timeout=0.1)


def test_timeout_then_process_still_sends(wx: WeChat, service: Service) -> None:
    """The nasty case: the caller times out but WeChat did deliver; client_msg_id makes the retry safe."""
    rule = {
        "path": "/cgi-bin/message/template/send",
        "timeout": {"rate": 1.0, "sleep_s": 0.3, "then": "process"},
    }
    wx.admin("POST", "/faults", rule)
    data = {"thing1": {"value": "a"}, "amount2": {"value": "¥1"}, "time3": {"value": "10:00"}}
    body = {
        "touser": service.openids[0],
        "template_id": service.template_id,
        "data": data,
        "client_msg_id": "k1",
    }
    with pytest.raises(httpx.TimeoutException):
        wx.http.post(
            "/cgi-bin/message/template/send", params={"access_token": service.token}, json=body, timeout=0.1
        )
    deadline = time.monotonic() + 3
    while not (inbox := wx.inbox(service.appid, service.openids[0])) and time.monotonic() < deadline:
        time.sleep(0.02)  # the server finishes the request after its injected sleep
    (delivered,) = inbox
    wx.admin("POST", "/faults/clear", {})
    retry = wx.post("/cgi-bin/message/template/send", service.token, body)
    assert retry["msgid"] == delivered["msgid"]
    assert len(wx.inbox(service.appid, service.openids[0])) == 1


def timed_get(wx: WeChat, token: str) -> float:
    started = time.monotonic()
    assert wx.get("/cgi-bin/tags/get", token) == {"tags": []}
    return time.monotonic() - started


def recent_latencies(wx: WeChat) -> list[float]:
    (rule,) = wx.admin("GET", "/faults")["rules"]
    return rule["recent_latency_ms"]


def test_fixed_latency_delays_every_call(wx: WeChat, service: Service) -> None:
    wx.admin("POST", "/faults", {"path": "/cgi-bin/tags/get", "latency": {"kind": "fixed", "ms": 120}})
    elapsed = [timed_get(wx, service.token) for _ in range(2)]
    assert recent_latencies(wx) == [120.0, 120.0]
    assert all(e >= 0.12 for e in elapsed)  # a lower bound: the call waited at least that long


def test_uniform_latency_follows_the_seeded_generator(wx: WeChat, service: Service) -> None:
    rule = {"path": "/cgi-bin/tags/get", "latency": {"kind": "uniform", "min_ms": 30, "max_ms": 60}}
    wx.admin("POST", "/faults", rule)
    elapsed = [timed_get(wx, service.token) for _ in range(3)]
    # the rule's generator is random.Random("<seed>:<path>"): one outcome draw, then one latency draw
    rng = random.Random("1:/cgi-bin/tags/get")
    expected = []
    for _ in range(3):
        rng.random()
        expected.append(rng.uniform(30, 60))
    assert recent_latencies(wx) == expected
    assert all(30 <= ms <= 60 for ms in expected)
    assert all(e >= ms / 1000 for e, ms in zip(elapsed, expected, strict=True))


def test_wildcard_rule_applies_to_every_endpoint(wx: WeChat, service: Service) -> None:
    wx.admin("POST", "/faults", {"path": "*", "errcodes": {"45009": 1.0}})
    assert wx.get("/cgi-bin/tags/get", service.token)["errcode"] == 45009
    assert wx.post("/cgi-bin/message/mass/get", service.token, {"msg_id": 1})["errcode"] == 45009
    wx.admin("POST", "/faults/clear", {})
    assert wx.get("/cgi-bin/tags/get", service.token) == {"tags": []}


@pytest.mark.parametrize(
    "rule",
    [
        {"path": "/cgi-bin/token", "errcodes": {"-1": 0.7}, "http_statuses": {"500": 0.5}},
        {"path": "/cgi-bin/token", "http_statuses": {"200": 0.5}},
        {"path": "cgi-bin/token"},
        {"path": "/cgi-bin/token", "latency": {"kind": "gaussian"}},
    ],
)
def test_bad_fault_rules_are_refused(wx: WeChat, rule: dict) -> None:
    wx.admin("POST", "/faults", rule, expect=400)
