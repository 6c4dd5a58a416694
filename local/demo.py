"""`make demo`: wxreach end to end on this machine, through public HTTP interfaces only.

Starts the WeChat sandbox and the local stack, registers a safe-mode service account, lets
followers follow (some through a QR scene), accept or reject a subscription popup, send a
message and unfollow; then reads wxreach's follower registry back and compares it with what
the sandbox (WeChat's side) knows, sends template messages and subscription notifications, and
broadcasts on the three channels (a scheduled mass send, a template segment, everyone with a
subscription credit, a cancel mid-send), comparing every count with the sandbox's inboxes; then
checks that WeChat's delivery callbacks left every message in one final state.
Exits 1 when the two disagree.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import string
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx

from local.sandbox.server import SandboxServer
from local.stack import LocalStack, Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
APPID = "wxd3m0c0ffee000001"
ORIGINAL_ID = "gh_d3m0c0ffee01"
SUB_TEMPLATE = "SUB_ORDER_SHIPPED"
TEMPLATE = "TPL_ORDER_PAID"
OTHER_SUB_TEMPLATE = "SUB_COUPON_EXPIRY"
QR_SCENE = "spring_42"


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def section(self, title: str) -> None:
        self.lines += ["", title, "-" * len(title)]

    def say(self, text: str) -> None:
        self.lines.append(text)

    def check(self, ok: bool, text: str) -> None:
        self.lines.append(("  ok    " if ok else "  WRONG ") + text)
        if not ok:
            self.problems.append(text)


def _alnum(n: int, rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))


@contextmanager
def running_system(data_dir: Path, seed: int) -> Iterator[tuple[SandboxServer, LocalStack]]:
    with SandboxServer("127.0.0.1", port=0, seed=seed) as sandbox:
        settings = Settings(
            template=REPO_ROOT / "template.yaml",
            port=0,
            moto_port=0,
            data_dir=data_dir,
            wechat_api_base=sandbox.url,
            api_key=secrets.token_urlsafe(16),
            echo_function_output=False,
        )
        with LocalStack(settings) as stack:
            yield sandbox, stack


def _epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp())


def _ok(resp: httpx.Response, what: str) -> Any:
    if resp.status_code >= 300:
        raise SystemExit(f"demo: {what} failed: HTTP {resp.status_code} {resp.text[:300]}")
    return resp.json() if resp.content else None


def play(
    sandbox: SandboxServer, stack: LocalStack, *, followers: int, seed: int, report_dir: Path | None = None
) -> Report:
    rng = random.Random(seed)
    report = Report()
    # trust_env=False: a configured HTTP proxy must not capture calls to 127.0.0.1.
    wechat = httpx.Client(base_url=sandbox.url, timeout=30, trust_env=False)
    api = httpx.Client(
        base_url=stack.api_url, timeout=30, headers={"x-api-key": stack.api_key}, trust_env=False
    )
    anonymous = httpx.Client(base_url=stack.api_url, timeout=30, trust_env=False)
    admin = f"/admin/accounts/{APPID}"
    token, aes_key, app_secret = "demoToken" + _alnum(8, rng), _alnum(43, rng), _alnum(32, rng)

    # 1. The brand's account exists on WeChat's side and is registered with wxreach.
    _ok(
        wechat.post(
            "/admin/accounts",
            json={
                "appid": APPID,
                "secret": app_secret,
                "original_id": ORIGINAL_ID,
                "type": "service",
                "verified": True,
                "name": "Demo Coffee",
                "token": token,
                "encoding_aes_key": aes_key,
                "encryption_mode": "safe",
                "webhook_url": f"{stack.api_url}/wechat/{APPID}",
            },
        ),
        "creating the sandbox account",
    )
    registered = _ok(
        api.post(
            "/accounts",
            json={
                "appid": APPID,
                "original_id": ORIGINAL_ID,
                "name": "Demo Coffee",
                "account_type": "service",
                "verified": True,
                "encryption_mode": "safe",
                "secrets": {"app_secret": app_secret, "token": token, "encoding_aes_key": aes_key},
            },
        ),
        "registering the account with wxreach",
    )
    handshake = _ok(wechat.post(f"{admin}/verify-webhook", json={}), "URL verification")
    for template_id, title in ((SUB_TEMPLATE, "发货通知"), (OTHER_SUB_TEMPLATE, "优惠券到期提醒")):
        _ok(
            wechat.post(
                f"{admin}/subscription-templates",
                json={
                    "pri_tmpl_id": template_id,
                    "title": title,
                    "type": "one_time",
                    "keywords": ["thing1", "time2"],
                },
            ),
            "creating a subscription template",
        )

    _ok(
        wechat.post(
            f"{admin}/templates",
            json={
                "template_id": TEMPLATE,
                "title": "订单支付成功",
                "keywords": [
                    {"name": "thing1", "label": "商品"},
                    {"name": "amount2", "label": "金额"},
                    {"name": "character_string3", "label": "订单号"},
                ],
            },
        ),
        "creating a template message template",
    )

    report.section("Account")
    report.say(f"  {registered['name']} ({APPID}, {registered['account_type']}, safe mode)")
    report.check(handshake["ok"], "WeChat's URL verification handshake answered with the echostr")
    report.check("secrets" not in registered, "wxreach never returns the account's secrets")

    # 2. Followers act in WeChat; every action reaches wxreach as a signed, encrypted callback.
    openids = [f"oDemo{_alnum(23, rng)}" for _ in range(followers)]
    via_qr = set(openids[: followers * 3 // 4])
    accepters = set(openids[: followers * 2 // 5])
    rejecters = set(openids[followers * 2 // 5 : followers // 2])
    double_accept = set(sorted(accepters)[:3])
    leavers = set(openids[-max(1, followers // 10) :])
    talker = openids[1]
    for openid in openids:
        body = {"qrscene": QR_SCENE} if openid in via_qr else {}
        _ok(wechat.post(f"{admin}/users/{openid}/follow", json=body), "follow")
    for openid in accepters | rejecters:
        choice = {"accept": [SUB_TEMPLATE]} if openid in accepters else {"reject": [SUB_TEMPLATE]}
        _ok(wechat.post(f"{admin}/users/{openid}/popup", json={"scene": 2, **choice}), "popup")
    for openid in double_accept:
        _ok(
            wechat.post(f"{admin}/users/{openid}/popup", json={"scene": 1, "accept": [SUB_TEMPLATE]}), "popup"
        )
    _ok(wechat.post(f"{admin}/users/{talker}/message", json={"content": "你好，请问今天营业吗？"}), "message")
    for openid in leavers:
        _ok(wechat.post(f"{admin}/users/{openid}/unfollow", json={}), "unfollow")

    started = time.monotonic()
    flushed = _ok(wechat.post("/admin/callbacks/flush", json={"timeout": 60}), "waiting for callbacks")
    stack.wait_idle(timeout=60)
    pushes = _ok(wechat.get("/admin/callbacks", params={"appid": APPID}), "reading the push log")["callbacks"]

    report.section("Callbacks WeChat pushed to the webhook")
    by_event = Counter(p["event"] for p in pushes)
    outcomes = Counter(p["outcome"] for p in pushes)
    report.say("  " + ", ".join(f"{event} ×{n}" for event, n in sorted(by_event.items())))
    report.say(f"  outcomes: {dict(outcomes)}  (drained in {time.monotonic() - started:.1f} s)")
    report.check(
        flushed["flushed"] and set(outcomes) == {"delivered"}, "every push acknowledged with 'success'"
    )
    report.check(all(p["encryption_mode"] == "safe" for p in pushes), "every push was encrypted (safe mode)")

    # 3. wxreach's follower registry must say what WeChat knows.
    views = {}
    for openid in openids:
        views[openid] = _ok(api.get(f"/accounts/{APPID}/followers/{openid}"), "reading a follower")
    truth = {o: _ok(wechat.get(f"{admin}/users/{o}"), "reading the sandbox user") for o in openids}

    report.section("Follower registry (wxreach) vs WeChat")
    following = sum(v["following"] for v in views.values())
    report.say(f"  followers: {followers} followed, {len(leavers)} unfollowed → {following} following")
    report.check(
        all(views[o]["following"] == truth[o]["following"] for o in openids),
        "following state matches for everyone",
    )
    scenes = Counter(v["scene"] for v in views.values() if v["scene"])
    report.say(f"  QR scenes: {dict(scenes)}")
    report.check(
        scenes == Counter({QR_SCENE: len(via_qr)}), f"{len(via_qr)} follows attributed to scene {QR_SCENE}"
    )
    message_push = next(p for p in pushes if p["event"] == "text")
    report.check(
        views[talker]["last_message_at"] is not None
        and _epoch(views[talker]["last_message_at"]) == message_push["create_time"]
        and all(views[o]["last_message_at"] is None for o in openids if o != talker),
        "only the follower who wrote a message has a customer-service window (last_message_at)",
    )

    def credit(openid: str) -> dict[str, Any] | None:
        return next((g for g in views[openid]["subscriptions"] if g["template_id"] == SUB_TEMPLATE), None)

    total_credits = sum((credit(o) or {}).get("one_time_credits", 0) for o in openids)
    wechat_credits = sum(truth[o].get("grants", {}).get(SUB_TEMPLATE, {}).get("credits", 0) for o in openids)
    rejected = sum(1 for o in openids if (credit(o) or {}).get("status") == "rejected")
    report.say(
        f"  subscription '{SUB_TEMPLATE}': {len(accepters)} accepted ({len(double_accept)} twice), "
        f"{len(rejecters)} rejected"
    )
    report.say(
        f"  one-time credits: wxreach {total_credits}, WeChat {wechat_credits}; rejections: {rejected}"
    )
    report.check(
        total_credits == wechat_credits == len(accepters) + len(double_accept), "credits match, none doubled"
    )
    report.check(rejected == len(rejecters), "every rejection recorded")

    # A timed mass broadcast is published now (the API wants it at least 60 s ahead) and fires
    # while the acts below run; its section comes at the end.
    scheduled = _schedule_mass(api)

    # 4. A forged callback (someone who does not know the Token) is refused and changes nothing.
    victim = sorted(leavers)[0]
    forged = anonymous.post(
        f"/wechat/{APPID}",
        params={
            "signature": "0" * 40,
            "timestamp": str(int(time.time())),
            "nonce": "1",
            "encrypt_type": "aes",
        },
        content=f"<xml><ToUserName>{ORIGINAL_ID}</ToUserName><Encrypt>AAAA</Encrypt></xml>",
    )
    after = _ok(api.get(f"/accounts/{APPID}/followers/{victim}"), "reading a follower")
    report.section("Security")
    report.check(
        forged.status_code == 403, f"forged callback refused (HTTP {forged.status_code} {forged.text})"
    )
    report.check(after["following"] is False, "the forged callback changed nothing")
    report.check(
        anonymous.get("/accounts").status_code == 403,
        "operator routes refuse calls without credentials",
    )

    single = _play_sending(
        report,
        wechat,
        api,
        stack,
        openids=openids,
        leavers=leavers,
        accepters=accepters,
        rejecters=rejecters,
        double_accept=double_accept,
        rng=rng,
    )

    played = _play_broadcasts(
        report, wechat, api, stack, scheduled, openids=openids, leavers=leavers, rng=rng
    )
    reports = _play_delivery(report, wechat, api, stack, single, played)
    if report_dir is not None:
        _write_delivery_report(report, reports, report_dir)
    return report


def _play_sending(
    report: Report,
    wechat: httpx.Client,
    api: httpx.Client,
    stack: LocalStack,
    *,
    openids: list[str],
    leavers: set[str],
    accepters: set[str],
    rejecters: set[str],
    double_accept: set[str],
    rng: random.Random,
) -> list[str]:
    """Templates synced, template messages with customer parameters, subscription notifications
    and a journey action; every ledger record checked against the sandbox's inboxes."""
    admin = f"/admin/accounts/{APPID}"
    report.section("Templates (synced from WeChat)")
    synced = _ok(api.post(f"/accounts/{APPID}/templates/sync"), "syncing templates")["results"]
    report.say("  " + ", ".join(f"{r['channel']}: {r['stored']} stored" for r in synced))
    report.check(
        {r["channel"]: r["stored"] for r in synced} == {"template": 1, "subscribe": 2},
        "1 template message and 2 subscription templates",
    )

    def inbox(openid: str, kind: str) -> list[dict[str, Any]]:
        return _ok(wechat.get(f"{admin}/users/{openid}/inbox", params={"kind": kind}), "reading an inbox")[
            "messages"
        ]

    sent: dict[str, dict[str, Any]] = {}  # message_id -> ledger record

    # 1. A template message with per-customer parameters to a handful of followers (one left).
    report.section("Template messages")
    leaver = sorted(leavers)[0]
    customers = [*[o for o in openids if o not in leavers][:5], leaver]
    content = {
        "template_id": TEMPLATE,
        "data": {"thing1": "{{product}}", "amount2": "¥{{order.total}}", "character_string3": "{{order.no}}"},
        "url": "https://shop.example.com/orders",
    }
    for n, openid in enumerate(customers):
        order = {
            "product": rng.choice(["咖啡豆", "挂耳咖啡", "冷萃咖啡"]),
            "order": {"total": f"{rng.randint(20, 300)}.00", "no": f"A-{2000 + n}"},
        }
        body = {
            "channel": "template",
            "openid": openid,
            "content": content,
            "params": order,
            "request_id": f"order-{2000 + n}-paid",
        }
        message = _ok(api.post(f"/accounts/{APPID}/messages", json=body), "sending a template message")[
            "message"
        ]
        sent[message["message_id"]] = message
    states = Counter(m["state"] for m in sent.values())
    report.say(f"  {len(customers)} customers: {dict(states)}")
    by_openid = {m["openid"]: m for m in sent.values()}
    report.check(
        by_openid[leaver]["state"] == "skipped" and by_openid[leaver]["reason"] == "not_following",
        "the follower who left is skipped (not_following), WeChat not called",
    )
    report.check(
        all(by_openid[o]["state"] in ACCEPTED for o in customers[:-1]), "every follower's message was sent"
    )
    again = _ok(
        api.post(
            f"/accounts/{APPID}/messages",
            json={
                "channel": "template",
                "openid": customers[0],
                "content": content,
                "params": {"product": "咖啡豆", "order": {"total": "1.00", "no": "A-2000"}},
                "request_id": "order-2000-paid",
            },
        ),
        "resending",
    )["message"]
    report.check(
        again["message_id"] == by_openid[customers[0]]["message_id"]
        and len(inbox(customers[0], "template")) == 1,
        "the same request_id again sends nothing twice",
    )

    # 2. A subscription notification to everyone who accepted the popup (and one who rejected).
    report.section("Subscription notifications")
    targets = sorted(accepters) + sorted(rejecters)[:1]
    unlucky = sorted(accepters - double_accept)[0]

    def credits(openid: str) -> tuple[int, int]:
        view = _ok(api.get(f"/accounts/{APPID}/followers/{openid}"), "reading a follower")
        ours = next(
            (g["one_time_credits"] for g in view["subscriptions"] if g["template_id"] == SUB_TEMPLATE), 0
        )
        theirs = (
            _ok(wechat.get(f"{admin}/users/{openid}"), "reading a user")["grants"]
            .get(SUB_TEMPLATE, {})
            .get("credits", 0)
        )
        return ours, theirs

    before = {o: credits(o) for o in targets}
    sub_content = {
        "template_id": SUB_TEMPLATE,
        "data": {"thing1": "您的咖啡已发货", "time2": "2026年12月3日 15:30"},
        "page": "https://shop.example.com/track",
    }
    _ok(
        wechat.post(
            "/admin/faults", json={"path": "/cgi-bin/message/subscribe/bizsend", "errcodes": {"40037": 1.0}}
        ),
        "injecting a fault",
    )
    failing = _ok(
        api.post(
            f"/accounts/{APPID}/messages",
            json={
                "channel": "subscribe",
                "openid": unlucky,
                "content": sub_content,
                "request_id": "ship-fail",
            },
        ),
        "a failing send",
    )["message"]
    _ok(wechat.post("/admin/faults/clear", json={}), "clearing faults")
    sent[failing["message_id"]] = failing
    report.check(
        credits(unlucky) == before[unlucky], "the failed send left that user's credit intact (both sides)"
    )
    for openid in targets:
        message = _ok(
            api.post(
                f"/accounts/{APPID}/messages",
                json={
                    "channel": "subscribe",
                    "openid": openid,
                    "content": sub_content,
                    "request_id": f"ship-{openid[-8:]}",
                },
            ),
            "a subscription notification",
        )["message"]
        sent[message["message_id"]] = message
    after = {o: credits(o) for o in targets}
    sub_states = Counter(
        m["state"]
        for m in sent.values()
        if m["channel"] == "subscribe" and m["message_id"] != failing["message_id"]
    )
    report.say(
        f"  {len(targets)} users: {dict(sub_states)}; one send failed in WeChat first ({failing['reason']})"
    )
    report.check(failing["state"] == "failed", "the send WeChat refused is failed with its reason")
    report.check(
        all(after[o][0] == before[o][0] - 1 and after[o][1] == before[o][1] - 1 for o in accepters),
        "each accepted user's credit consumed exactly once (wxreach and WeChat agree)",
    )
    report.check(
        all(after[o] == before[o] for o in targets if o in rejecters),
        "the user who rejected is skipped; nothing consumed",
    )

    # 3. A journey action on the bus reaches the same sender through the send queue.
    report.section("Journey action (EventBridge)")
    events = boto3.client(
        "events",
        endpoint_url=stack.moto_url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - moto's local credentials
    )
    welcome = [o for o in openids if o not in leavers][7]
    action = {
        "action_id": f"welcome-{welcome}",
        "appid": APPID,
        "openid": welcome,
        "content": content,
        "params": {"product": "新人礼包", "order": {"total": "0.00", "no": "W-1"}},
    }
    for _ in range(2):  # an action published twice is sent once
        events.put_events(
            Entries=[
                {
                    "EventBusName": stack.outputs["JourneyBusName"],
                    "Source": "demo.journeys",
                    "DetailType": "SendTemplateMessage",
                    "Detail": json.dumps(action, ensure_ascii=False),
                }
            ]
        )
    stack.wait_idle(timeout=60, ignore_delayed=True)  # single sends queue a safety-net copy 15 min ahead
    report.check(
        len(inbox(welcome, "template")) == 1,
        "a SendTemplateMessage action published twice reached the follower once",
    )

    # 4. The ledger must say what WeChat's inboxes say.
    report.section("Ledger (wxreach) vs WeChat inboxes")
    records = [_ok(api.get(f"/accounts/{APPID}/messages/{mid}"), "reading a message") for mid in sent]
    received = {}
    for record in records:
        kind = "template" if record["channel"] == "template" else "subscription"
        received[record["message_id"]] = [
            m for m in inbox(record["openid"], kind) if str(m["msgid"]) == str(record.get("wechat_msgid"))
        ]
    agree = all((len(received[r["message_id"]]) == 1) == (r["state"] in ACCEPTED) for r in records)
    report.say(
        f"  {len(records)} messages: "
        + ", ".join(f"{state} ×{n}" for state, n in sorted(Counter(r["state"] for r in records).items()))
    )
    report.check(agree, "every message WeChat accepted is in exactly one inbox, and nothing else is")
    return list(sent)


# -- broadcasts ------------------------------------------------------------------------------
SCHEDULE_LEAD_SECONDS = 65  # the API takes a time at least 60 s ahead
FINAL_STATES = {"sent", "partially_sent", "failed", "cancelled"}
# WeChat accepted the message: still waiting for its delivery callback, or delivered.
ACCEPTED = {"sent", "delivered"}


def _accepted(counts: dict[str, Any]) -> int:
    """Messages WeChat accepted (template/subscribe), or mass recipients put in sent jobs; a
    delivery failure reported afterwards was still sent."""
    by_state = counts["by_state"]
    delivery = counts.get("delivery", {})
    after = delivery.get("failed", 0) + delivery.get("unknown", 0) if "awaiting_callback" in delivery else 0
    return int(by_state.get("sent", 0) + by_state.get("delivered", 0) + after)


BROADCASTS = f"/accounts/{APPID}/broadcasts"


@dataclass
class ScheduledMass:
    broadcast_id: str
    at: datetime
    estimate: dict[str, Any]
    state: str


def _schedule_mass(api: httpx.Client) -> ScheduledMass:
    """A newsletter to every follower (`sendall` is_to_all), timed a little over a minute ahead."""
    created = _ok(
        api.post(
            BROADCASTS,
            json={
                "name": "Weekly newsletter",
                "channel": "mass",
                "audience": {"kind": "all"},
                "mass": {"msgtype": "text", "text": "本周新品：冷萃咖啡上市，第二杯半价。"},
            },
        ),
        "creating a mass broadcast",
    )
    bid = created["id"]
    estimate = _ok(api.post(f"{BROADCASTS}/{bid}/estimate"), "estimating a broadcast")
    at = (datetime.now(UTC) + timedelta(seconds=SCHEDULE_LEAD_SECONDS)).replace(microsecond=0)
    published = _ok(api.post(f"{BROADCASTS}/{bid}/publish", json={"at": at.isoformat()}), "scheduling")
    return ScheduledMass(bid, at, estimate, published["state"])


def _wait_final(api: httpx.Client, bid: str, timeout: float) -> dict[str, Any]:
    """Reading a broadcast settles its state once every message or batch is final."""
    deadline = time.monotonic() + timeout
    while True:
        view = _ok(api.get(f"{BROADCASTS}/{bid}"), "reading a broadcast")
        if view["broadcast"]["state"] in FINAL_STATES or time.monotonic() > deadline:
            return dict(view)
        time.sleep(0.5)


def _excluded(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items())) or "none"


def _play_broadcasts(
    report: Report,
    wechat: httpx.Client,
    api: httpx.Client,
    stack: LocalStack,
    scheduled: ScheduledMass,
    *,
    openids: list[str],
    leavers: set[str],
    rng: random.Random,
) -> list[tuple[str, str, int]]:
    """Broadcasts on the three channels, and a cancel mid-send; every count wxreach reports is
    compared with what the sandbox's inboxes hold."""
    admin = f"/admin/accounts/{APPID}"
    s3 = stack.client("s3")
    bucket = stack.outputs["BroadcastBucketName"]
    following = [o for o in openids if o not in leavers]
    played: list[tuple[str, str, int]] = []

    def messages(openid: str, kind: str) -> list[dict[str, Any]]:
        got = _ok(wechat.get(f"{admin}/users/{openid}/inbox", params={"kind": kind}), "reading an inbox")
        return list(got["messages"])

    def counts(kind: str) -> Counter[str]:
        got = _ok(wechat.get(f"{admin}/inbox-counts", params={"kind": kind}), "reading inbox counts")
        return Counter(got["counts"])

    def create(body: dict[str, Any]) -> str:
        return str(_ok(api.post(BROADCASTS, json=body), "creating a broadcast")["id"])

    def estimate(bid: str) -> dict[str, Any]:
        return dict(_ok(api.post(f"{BROADCASTS}/{bid}/estimate"), "estimating a broadcast"))

    def publish(bid: str) -> None:
        _ok(api.post(f"{BROADCASTS}/{bid}/publish", json={}), "publishing a broadcast")

    def line(name: str, view: dict[str, Any], received: int, extra: str = "") -> None:
        c = view["counts"]
        report.say(
            f"  {name} [{view['broadcast']['state']}]: wxreach recipients {c['recipients']}, "
            f"sent {_accepted(c)}, excluded: {_excluded(c['excluded'])}{extra}"
        )
        report.say(f"    WeChat inboxes: {received} received it")
        played.append((name, view["broadcast"]["id"], received))

    report.section("Broadcasts")
    report.say(
        f"  'Weekly newsletter' (mass, all followers) published for {scheduled.at:%H:%M:%S} UTC "
        f"({SCHEDULE_LEAD_SECONDS} s ahead): {scheduled.state}; the acts below run meanwhile"
    )

    # 1. A template message with per-customer parameters to a segment uploaded to the bucket.
    customers = following[:12]
    rows: list[dict[str, Any]] = [
        {
            "openid": o,
            "params": {
                "product": rng.choice(["咖啡豆", "挂耳咖啡", "冷萃咖啡"]),
                "order": {"no": f"BC-{300 + n}"},
            },
        }
        for n, o in enumerate(customers)
    ]
    rows.append({"openid": sorted(leavers)[-1], "params": {"product": "咖啡豆", "order": {"no": "BC-399"}}})
    rows.append({"openid": following[12], "params": {"product": "咖啡豆"}})  # no order number
    key = f"segments/{APPID}/order-shipped.jsonl"
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body="".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode(),
    )
    before = counts("template")
    bid = create(
        {
            "name": "Order shipped",
            "channel": "template",
            "audience": {"kind": "segment", "segment": {"key": key}},
            "content": {
                "template_id": TEMPLATE,
                "data": {"thing1": "{{product}}", "amount2": "¥0.00", "character_string3": "{{order.no}}"},
            },
        }
    )
    guess = estimate(bid)
    publish(bid)
    view = _wait_final(api, bid, timeout=60)
    after = counts("template")
    got = {o: after[o] - before[o] for o in set(after) | set(before)}
    rendered = all(
        any(
            m["data"].get("character_string3") == r["params"]["order"]["no"]
            for m in messages(r["openid"], "template")
        )
        for r in rows[: len(customers)]
    )
    line(f"'Order shipped' (template, S3 segment of {len(rows)})", view, sum(got.values()))
    report.check(
        guess["recipients"]
        == view["counts"]["recipients"]
        == _accepted(view["counts"])
        == sum(got.values())
        == len(customers)
        and set(o for o, n in got.items() if n) == set(customers)
        and max(got.values()) == 1,
        "estimate, wxreach's counts and the inboxes agree: each customer once",
    )
    report.check(
        view["counts"]["excluded"] == guess["excluded"] == {"not_following": 1, "invalid_parameters": 1},
        "excluded: the follower who left (not_following), the line without an order number"
        " (invalid_parameters)",
    )
    report.check(rendered, "every customer's own order number arrived rendered")

    # 2. A subscription notification to everyone who still holds a credit for the template.
    def wechat_credits(openid: str) -> int:
        user = _ok(wechat.get(f"{admin}/users/{openid}"), "reading a user")
        return int(user.get("grants", {}).get(SUB_TEMPLATE, {}).get("credits", 0))

    holders = {o for o in openids if wechat_credits(o) > 0}
    before = counts("subscription")
    bid = create(
        {
            "name": "Delivery reminder",
            "channel": "subscribe",
            "audience": {"kind": "credit_holders"},
            "content": {
                "template_id": SUB_TEMPLATE,
                "data": {"thing1": "您的咖啡明天送达", "time2": "2026年12月4日 10:00"},
            },
        }
    )
    guess = estimate(bid)
    publish(bid)
    view = _wait_final(api, bid, timeout=60)
    after = counts("subscription")
    got = {o: after[o] - before[o] for o in set(after) | set(before)}
    line("'Delivery reminder' (subscription, everyone with a credit)", view, sum(got.values()))
    report.say(f"    WeChat says {len(holders)} users hold a credit for {SUB_TEMPLATE}")
    report.check(
        guess["recipients"] == _accepted(view["counts"]) == len(holders) == sum(got.values())
        and {o for o, n in got.items() if n} == holders,
        "every credit holder got it once, nobody else",
    )
    report.check(all(wechat_credits(o) == 0 for o in holders), "their credits are used up on WeChat's side")

    # 3. A mass message sent now to a segment (/mass/send).
    segment = [*following[:10], sorted(leavers)[0]]
    bid = create(
        {
            "name": "Tasting invitation",
            "channel": "mass",
            "audience": {"kind": "segment", "recipients": [{"openid": o} for o in segment]},
            "mass": {"msgtype": "text", "text": "周六下午门店品鉴会，欢迎光临。"},
        }
    )
    guess = estimate(bid)
    publish(bid)
    view = _wait_final(api, bid, timeout=60)

    def mass_received(broadcast_id: str, among: list[str]) -> Counter[str]:
        return Counter(
            o
            for o in among
            for m in messages(o, "mass")
            if str(m.get("client_msg_id") or "").startswith(f"{broadcast_id}-")
        )

    got_mass = mass_received(bid, openids)
    line(f"'Tasting invitation' (mass, segment of {len(segment)}, now)", view, sum(got_mass.values()))
    report.check(
        guess["recipients"] == _accepted(view["counts"]) == sum(got_mass.values()) == 10
        and set(got_mass) == set(following[:10])
        and set(got_mass.values()) == {1}
        and view["counts"]["excluded"] == {"not_following": 1},
        "10 followers got it once; the one who left was excluded",
    )

    # 4. A promotion to 200 customers who followed before wxreach was connected, cancelled mid-send.
    imported = _ok(
        wechat.post(f"{admin}/followers", json={"count": 200, "prefix": "oShop"}), "seeding followers"
    )["openids"]
    bid = create(
        {
            "name": "Flash sale",
            "channel": "template",
            "audience": {
                "kind": "segment",
                "recipients": [
                    {"openid": o, "params": {"product": "冷萃咖啡", "order": {"no": f"FS-{n}"}}}
                    for n, o in enumerate(imported)
                ],
            },
            "content": {
                "template_id": TEMPLATE,
                "data": {"thing1": "{{product}}", "amount2": "¥9.90", "character_string3": "{{order.no}}"},
            },
        }
    )
    # WeChat answers slowly (1 s a call), so the cancel lands while sends are on the wire.
    _ok(
        wechat.post(
            "/admin/faults",
            json={"path": "/cgi-bin/message/template/send", "latency": {"kind": "fixed", "ms": 1000}},
        ),
        "slowing WeChat down",
    )
    try:
        publish(bid)

        def received() -> int:
            c = counts("template")
            return sum(c[o] for o in imported)

        deadline = time.monotonic() + 60
        while received() < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        cancelled = _ok(api.post(f"{BROADCASTS}/{bid}/cancel"), "cancelling")
        at_answer = received()
        stack.wait_idle(timeout=120, ignore_delayed=True)
    finally:
        _ok(wechat.post("/admin/faults/clear", json={}), "clearing faults")
    cancel = cancelled["cancel"]
    view = _ok(api.get(f"{BROADCASTS}/{bid}"), "reading a broadcast")
    skipped = view["counts"]["by_reason"].get("skipped", {}).get("broadcast_cancelled", 0)
    line(
        f"'Flash sale' (template, {len(imported)} imported customers, cancelled mid-send)",
        view,
        received(),
        f", skipped after the cancel {skipped}",
    )
    report.say(
        f"    cancel answer: sent {cancel['sent']}, not sent {cancel['not_sent']}, "
        f"in flight {cancel['in_flight']}; inboxes at the answer {at_answer}, now {received()}"
    )
    report.check(
        cancelled["state"] == "cancelled" and 0 < cancel["sent"] < len(imported),
        "the cancel landed mid-send",
    )
    report.check(
        cancel["sent"] == at_answer == received() == _accepted(view["counts"])
        and cancel["sent"] + cancel.get("failed", 0) + cancel["not_sent"] == len(imported),
        "the cancel's report equals what WeChat delivered; nothing arrived after its answer",
    )

    # 5. The timed newsletter: the Scheduler fired it while the acts above ran.
    wait = max(0.0, (scheduled.at - datetime.now(UTC)).total_seconds())
    started = time.monotonic()
    view = _wait_final(api, scheduled.broadcast_id, timeout=wait + 90)
    waited = time.monotonic() - started
    got_mass = mass_received(scheduled.broadcast_id, openids)
    # sendall reaches every follower WeChat has, the 200 imported ones too: the registry only
    # knows them after a follower sync, so wxreach's estimate counted the 36 it knew.
    everyone = mass_received(scheduled.broadcast_id, openids + imported)
    trail = _ok(api.get(f"{BROADCASTS}/{scheduled.broadcast_id}/audit"), "reading the audit trail")["entries"]
    line(
        "'Weekly newsletter' (mass, all followers, scheduled)",
        view,
        sum(everyone.values()),
        f" (waited {waited:.0f} s for its time)",
    )
    report.say(
        f"    of them {sum(got_mass.values())} followers wxreach knew and"
        f" {sum(everyone.values()) - sum(got_mass.values())} imported ones it has not synced yet"
    )
    report.check(
        scheduled.estimate["recipients"]
        == view["counts"]["recipients"]
        == sum(got_mass.values())
        == len(following)
        and set(got_mass) == set(following)
        and set(got_mass.values()) == {1}
        and view["broadcast"]["state"] == "sent",
        f"every follower ({len(following)}) got the newsletter once, at its time",
    )
    report.check(
        trail[-1]["action"] == "publish" and trail[-1]["actor"] == "scheduler",
        "the schedule fired it (audit: publish by the scheduler)",
    )
    return played


def _play_delivery(
    report: Report,
    wechat: httpx.Client,
    api: httpx.Client,
    stack: LocalStack,
    single: list[str],
    played: list[tuple[str, str, int]],
) -> list[dict[str, Any]]:
    """Once WeChat's delivery callbacks are all in, every message is in one final state and each
    broadcast's counts are the sum of its messages, equal to what the inboxes hold."""
    report.section("Delivery outcomes (status updater)")
    _ok(wechat.post("/admin/callbacks/flush", json={"timeout": 60}), "flushing callbacks")
    stack.wait_idle(timeout=120, ignore_delayed=True)
    records = [_ok(api.get(f"/accounts/{APPID}/messages/{mid}"), "reading a message") for mid in single]
    states = Counter(r["state"] for r in records)
    report.say(f"  single sends: {', '.join(f'{k} ×{v}' for k, v in sorted(states.items()))}")
    report.check(
        not (states.keys() & {"queued", "sending", "sent"}),
        "every single send is final: delivered, failed, skipped or unknown, none still waiting",
    )
    reports = []
    for name, bid, received in played:
        view = _ok(api.get(f"{BROADCASTS}/{bid}"), "reading a broadcast")
        counts, delivery = view["counts"], view["counts"].get("delivery", {})
        short = name.split("'")[1] if "'" in name else name
        if view["broadcast"]["channel"] == "mass":
            report.say(
                f"  {short}: WeChat's job reports sent {delivery.get('sent', 0)}, errors"
                f" {delivery.get('errors', 0)}, jobs without a report {delivery.get('jobs_pending', 0)};"
                f" inboxes {received}"
            )
            agree = delivery.get("jobs_pending", 0) == 0 and delivery.get("sent", 0) == received
        else:
            by_state = counts["by_state"]
            total = sum(v for k, v in by_state.items() if k != "queued")
            report.say(
                f"  {short}: "
                + ", ".join(f"{k} {v}" for k, v in sorted(by_state.items()) if v)
                + f" (sum {total} of {counts['recipients']}); inboxes {received}"
            )
            agree = (
                by_state.get("sent", 0) == 0
                and by_state.get("queued", 0) == 0
                and total == counts["recipients"]
                and by_state.get("delivered", 0) == received
            )
        report.check(agree, f"{short}: every message final, the counts add up, delivered = inboxes")
        reports.append(_check_report(report, api, bid, short, view))
    return reports


def _write_delivery_report(report: Report, reports: list[dict[str, Any]], out_dir: Path) -> None:
    """The operator's delivery report of the demo's broadcasts (what `wxreach report` writes)."""
    from wxreach_cli.report import combine, write_report

    files = write_report(combine(reports, title="wxreach demo: every broadcast"), out_dir)
    report.section("Delivery report")
    report.say(f"  {files.html.resolve()} (charts: {', '.join(sorted(p.name for p in files.pngs.values()))})")


def _check_report(
    report: Report, api: httpx.Client, bid: str, short: str, view: dict[str, Any]
) -> dict[str, Any]:
    """The report route tells the same story as the broadcast's counts."""
    body = _ok(api.get(f"{BROADCASTS}/{bid}/report"), "reading a delivery report")
    delivered = sum(b["delivered"] for b in body["timeline"]["buckets"])
    delivery = view["counts"].get("delivery", {})
    mass = view["broadcast"]["channel"] == "mass"
    expected = delivery.get("sent", 0) if mass else delivery.get("delivered", 0)
    rate = "n/a" if body["delivery_rate"] is None else f"{body['delivery_rate']:.0%}"
    reasons = ", ".join(f"{f['state']}/{f['reason']} ×{f['count']}" for f in body["failures"][:3]) or "none"
    report.say(f"    report: delivery rate {rate}, failures {reasons}")
    report.check(
        body["outcomes_final"] and body["complete"] and delivered == expected,
        f"{short}: the report is final and its timeline adds up to the delivered count ({delivered})",
    )
    return dict(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--followers", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", type=Path, default=Path(".local-data/demo"))
    args = parser.parse_args(argv)
    if args.followers < 10:
        parser.error("--followers must be at least 10")
    print("Starting the WeChat sandbox and the local stack…", flush=True)
    with running_system(args.data_dir, args.seed) as (sandbox, stack):
        print(f"  sandbox {sandbox.url}   API {stack.api_url}   moto {stack.moto_url}", flush=True)
        report = play(
            sandbox,
            stack,
            followers=args.followers,
            seed=args.seed,
            report_dir=args.data_dir / "delivery-report",
        )
    print("\nwxreach demo report" + "\n".join(report.lines))
    if report.problems:
        print(f"\n{len(report.problems)} check(s) failed.", file=sys.stderr)
        return 1
    print("\nAll checks passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
