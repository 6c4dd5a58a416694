"""The mass sender's pure parts: clientmsgid, the errcode model, the WeChat mass calls over
httpx.MockTransport, the batch model, and the service's decisions with in-memory ports."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from wxreach.reach.mass_sending import (
    CLIENTMSGID_MAX_BYTES,
    ClaimOutcome,
    ClaimStatus,
    MassBatch,
    MassBatchRef,
    MassBatchState,
    MassBroadcast,
    MassSendPolicy,
    MassSendService,
    SendAllTarget,
    mass_clientmsgid,
    mass_request,
)
from wxreach.wechat.api import MASS_SEND_PATH, MASS_SENDALL_PATH, WeChatClient
from wxreach.wechat.errcodes import (
    AccountStopped,
    ClientMsgIdExists,
    MassRejected,
    RetryLater,
    SendRejected,
    TransportError,
    error_for,
)
from wxreach.wechat.tokens import StoredToken, TokenBroker

BASE = "https://api.weixin.test"
APPID = "wx1234567890abcdef"
BROADCAST = "b0123456789abcdef0123"
TOKEN = "ACCESS_TOKEN_mass_unit_0123456789abcdef"
BIG_MSG_ID = 1700827132819554304  # above 2^53
T0 = datetime(2024, 6, 1, 4, 0, tzinfo=UTC).timestamp()
TEXT_BODY = json.dumps({"msgtype": "text", "text": {"content": "本周上新"}, "send_ignore_reprint": 0})


def openids(n: int, prefix: str = "oMass") -> list[str]:
    return [f"{prefix}{i:023d}" for i in range(n)]


# -- clientmsgid ---------------------------------------------------------------------------------
@pytest.mark.parametrize("broadcast_id", ["b0123456789abcdef0123", "x" * 64, "a:b.c_d-e" * 14])
@pytest.mark.parametrize("number", [0, 7, 999_999])
def test_clientmsgid_is_deterministic_and_at_most_64_bytes(broadcast_id: str, number: int) -> None:
    first = mass_clientmsgid(broadcast_id, number)
    assert first == mass_clientmsgid(broadcast_id, number)
    assert len(first.encode("utf-8")) <= CLIENTMSGID_MAX_BYTES
    assert first != mass_clientmsgid(broadcast_id, number + 1)


def test_clientmsgid_stays_readable_while_it_fits_and_is_hashed_beyond() -> None:
    assert mass_clientmsgid(BROADCAST, 3) == f"{BROADCAST}-3"
    long_a, long_b = "a" * 70, "a" * 69 + "b"
    assert mass_clientmsgid(long_a, 0).startswith("h-")
    assert mass_clientmsgid(long_a, 0) != mass_clientmsgid(long_b, 0)


# -- errcodes ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("errcode", "cls", "reason"),
    [
        (45065, ClientMsgIdExists, "clientmsgid_exists"),
        (45066, RetryLater, "clientmsgid_in_progress"),
        (42010, RetryLater, "mass_too_fast"),
        (45011, RetryLater, "minute_quota"),
        (-1, RetryLater, "system_busy"),
        (45028, SendRejected, "no_mass_quota"),
        (40130, SendRejected, "invalid_openid_list"),
        (40007, SendRejected, "invalid_media_id"),
        (40008, SendRejected, "invalid_message_type"),
        (48001, SendRejected, "api_unauthorized"),
        (45067, MassRejected, "clientmsgid_too_long"),
        (40059, MassRejected, "invalid_msg_id"),
        (45009, AccountStopped, "daily_quota"),
    ],
)
def test_mass_errcodes_are_classified(errcode: int, cls: type, reason: str) -> None:
    error = error_for(errcode, "x rid: 1", path=MASS_SEND_PATH)
    assert type(error) is cls
    assert error.reason == reason
    if cls is MassRejected:
        assert isinstance(error, SendRejected)  # permanent, like the other request refusals


# -- the WeChat client's mass calls --------------------------------------------------------------
class Wire:
    """A scripted WeChat: answers in order, records requests."""

    def __init__(self, *answers: dict[str, Any] | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
            answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(200, content=json.dumps(answer).encode())

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]


def client(wire: Wire) -> WeChatClient:
    return WeChatClient(BASE, transport=httpx.MockTransport(wire))


def test_mass_send_posts_raw_utf8_and_returns_ids_as_text() -> None:
    wire = Wire(
        {"errcode": 0, "errmsg": "send job submission success", "msg_id": BIG_MSG_ID, "msg_data_id": 22}
    )
    payload = {"msgtype": "text", "text": {"content": "本周上新"}, "touser": openids(2), "clientmsgid": "c-1"}
    assert client(wire).mass_send(TOKEN, payload) == (str(BIG_MSG_ID), "22")
    (request,) = wire.requests
    assert request.url.path == MASS_SEND_PATH
    assert request.url.params["access_token"] == TOKEN
    assert "本周上新".encode() in request.content  # no \\u escapes (40033)


def test_45065_carries_the_existing_jobs_msg_id() -> None:
    wire = Wire({"errcode": 45065, "errmsg": "clientmsgid exist rid: r1", "msg_id": 3147483704})
    with pytest.raises(ClientMsgIdExists) as caught:
        client(wire).mass_sendall(TOKEN, {"msgtype": "text", "filter": {"is_to_all": True}})
    assert caught.value.msg_id == "3147483704"
    assert caught.value.path == MASS_SENDALL_PATH
    assert caught.value.rid == "r1"


def test_an_accepted_answer_without_msg_id_is_a_maybe_sent_transport_error() -> None:
    with pytest.raises(TransportError) as caught:
        client(Wire({"errcode": 0})).mass_send(TOKEN, {"msgtype": "text"})
    assert caught.value.request_sent is True


def test_a_read_timeout_is_a_retry_later_that_may_have_been_sent() -> None:
    wire = Wire(httpx.ReadTimeout("slow"))
    with pytest.raises(TransportError) as caught:
        client(wire).mass_send(TOKEN, {"msgtype": "text"})
    assert caught.value.request_sent is True and caught.value.path == MASS_SEND_PATH


def test_preview_delete_and_get_bodies() -> None:
    wire = Wire(
        {"errcode": 0, "errmsg": "preview success", "msg_id": 31},
        {"errcode": 0, "errmsg": "ok"},
        {"msg_id": 31, "msg_status": "DELETE"},
    )
    wechat = client(wire)
    assert wechat.mass_preview(TOKEN, {"msgtype": "text", "towxname": "alice"}) == "31"
    wechat.mass_delete(TOKEN, "3147483704", 2)
    assert wechat.mass_get(TOKEN, "3147483704") == "DELETE"
    assert wire.bodies()[1] == {"msg_id": 3147483704, "article_idx": 2}
    assert wire.bodies()[2] == {"msg_id": 3147483704}


# -- the batch model and the request body --------------------------------------------------------
def test_batch_openids_are_deduplicated_and_bounded() -> None:
    batch = MassBatch(broadcast_id=BROADCAST, appid=APPID, number=0, openids=[*openids(3), openids(1)[0]])
    assert batch.recipients == 3
    with pytest.raises(ValidationError):
        MassBatch(broadcast_id=BROADCAST, appid=APPID, number=0, openids=openids(10_001))
    with pytest.raises(ValidationError):
        MassBatch(
            broadcast_id=BROADCAST,
            appid=APPID,
            number=0,
            openids=openids(2),
            sendall=SendAllTarget(is_to_all=True),
        )
    with pytest.raises(ValidationError):
        SendAllTarget()


def test_the_request_body_is_the_content_plus_the_batchs_target_and_clientmsgid() -> None:
    content = {"msgtype": "text", "text": {"content": "hi"}, "touser": ["oSomeoneElse00"], "clientmsgid": "x"}
    batch = MassBatch(broadcast_id=BROADCAST, appid=APPID, number=4, openids=openids(2))
    body = mass_request(json.dumps(content), batch)
    assert body["touser"] == openids(2)
    assert body["clientmsgid"] == f"{BROADCAST}-4"
    tagged = MassBatch(broadcast_id=BROADCAST, appid=APPID, number=0, sendall=SendAllTarget(tag_id=101))
    assert mass_request(content, tagged)["filter"] == {"is_to_all": False, "tag_id": 101}
    assert "touser" not in mass_request(content, tagged)
    with pytest.raises(ValueError, match="msgtype"):
        mass_request("[]", batch)


# -- the service with in-memory ports ------------------------------------------------------------
class MemoryBatches:
    """The MassBatchRepository port with the DynamoDB store's conditions."""

    def __init__(self, state: str = "sending") -> None:
        self.meta = MassBroadcast(BROADCAST, APPID, "mass", state, TEXT_BODY)
        self.batches: dict[int, MassBatch] = {}
        self.claims: dict[int, str] = {}

    def add(self, batch: MassBatch) -> None:
        self.batches[batch.number] = batch

    def broadcast(self, broadcast_id: str) -> MassBroadcast | None:
        return self.meta if broadcast_id == BROADCAST else None

    def get(self, broadcast_id: str, number: int, *, with_openids: bool = True) -> MassBatch | None:
        return self.batches.get(number)

    def claim(
        self, broadcast_id: str, number: int, *, token: str, now: datetime, stale_before: datetime
    ) -> ClaimOutcome:
        if self.meta.state != "sending":
            return ClaimOutcome(ClaimStatus.BROADCAST_NOT_SENDING, self.meta.state)
        batch = self.batches[number]
        stale = batch.state is MassBatchState.SENDING and (batch.claimed_at or now) < stale_before
        if batch.state is not MassBatchState.QUEUED and not stale:
            return ClaimOutcome(ClaimStatus.BATCH_TAKEN)
        self.claims[number] = token
        self.batches[number] = batch.model_copy(
            update={
                "state": MassBatchState.SENDING,
                "claimed_at": now,
                "first_claimed_at": batch.first_claimed_at or now,
                "attempts": batch.attempts + 1,
            }
        )
        return ClaimOutcome(ClaimStatus.CLAIMED, "sending")

    def finish(
        self,
        broadcast_id: str,
        number: int,
        *,
        state: MassBatchState,
        claim_token: str | None = None,
        **kw: Any,
    ) -> bool:
        batch = self.batches[number]
        if claim_token is not None:
            if batch.state is not MassBatchState.SENDING or self.claims.get(number) != claim_token:
                return False
        elif batch.state is not MassBatchState.QUEUED:
            return False
        update: dict[str, Any] = {"state": state, "claimed_at": None}
        if state is MassBatchState.QUEUED:
            update["last_error"] = kw.get("reason")
        else:
            update |= {
                k: kw[k] for k in ("msg_id", "msg_data_id", "errcode", "reason") if kw.get(k) is not None
            }
        if kw.get("maybe_sent"):
            update["maybe_sent"] = True
        self.batches[number] = batch.model_copy(update=update)
        return True

    def cancel_batch(
        self, broadcast_id: str, number: int, *, now: datetime, stale_before: datetime, reason: str
    ) -> MassBatch | None:
        batch = self.batches[number]
        if batch.state is MassBatchState.QUEUED:
            self.batches[number] = batch.model_copy(
                update={"state": MassBatchState.CANCELLED, "reason": reason}
            )
        return self.batches[number]


class MemoryGuards:
    def __init__(self) -> None:
        self.permits = 0
        self.paused: dict[str, tuple[datetime, str]] = {}

    def take_minute_permit(self, appid: str, name: str, *, per_minute: int, now: float) -> bool:
        self.permits += 1
        return True

    def paused_until(self, appid: str, channel: str, *, now: datetime) -> tuple[datetime, str] | None:
        return self.paused.get(channel)

    def pause(self, appid: str, channel: str, *, until: datetime, reason: str) -> None:
        self.paused[channel] = (until, reason)


class FixedTokenStore:
    def read(self, appid: str) -> StoredToken | None:
        return StoredToken(token=TOKEN, expires_at=T0 + 7200, refresh_at=T0 + 6900)


class World:
    def __init__(self, wire: Wire, *, state: str = "sending") -> None:
        self.wire = wire
        self.now = T0
        self.store = MemoryBatches(state)
        self.guards = MemoryGuards()
        clock: Callable[[], float] = lambda: self.now  # noqa: E731
        self.service = MassSendService(
            store=self.store,
            guards=self.guards,
            wechat=client(wire),
            tokens=TokenBroker(
                store=FixedTokenStore(),  # type: ignore[arg-type]
                client=client(wire),
                secret_for=lambda appid: "unused",
                clock=clock,
            ),
            policy=MassSendPolicy(permit_poll_seconds=0.0),
            clock=clock,
            sleep=lambda s: None,
        )

    def batch(self, number: int = 0, n: int = 2) -> MassBatchRef:
        batch = MassBatch(broadcast_id=BROADCAST, appid=APPID, number=number, openids=openids(n))
        self.store.add(batch)
        return batch.ref()


def test_a_single_openid_batch_is_refused_without_calling_wechat() -> None:
    world = World(Wire({"errcode": 0, "msg_id": 1}))
    result = world.service.send(world.batch(n=1))
    assert result.batch is not None and result.batch.state is MassBatchState.FAILED
    assert result.batch.reason == "too_few_recipients"
    assert result.retry_after is None
    assert world.wire.requests == [] and world.guards.permits == 0


def test_a_batch_is_sent_once_and_a_redelivery_changes_nothing() -> None:
    world = World(Wire({"errcode": 0, "msg_id": 3147483704}))
    ref = world.batch()
    first = world.service.send(ref)
    assert first.batch is not None and first.batch.state is MassBatchState.SENT
    assert first.batch.msg_id == "3147483704"
    again = world.service.send(ref)
    assert again.batch is not None and again.batch.state is MassBatchState.SENT
    assert len(world.wire.requests) == 1
    assert world.wire.bodies()[0]["clientmsgid"] == f"{BROADCAST}-0"


def test_45065_is_adopted_as_the_batchs_job() -> None:
    world = World(Wire({"errcode": 45065, "errmsg": "clientmsgid exist", "msg_id": 77}))
    result = world.service.send(world.batch())
    assert result.batch is not None and result.batch.state is MassBatchState.SENT
    assert (result.batch.msg_id, result.batch.reason) == ("77", "adopted")


def test_45028_fails_the_batch_and_42010_backs_off_minutes() -> None:
    world = World(
        Wire({"errcode": 42010, "errmsg": "masssend fast"}, {"errcode": 45028, "errmsg": "no quota"})
    )
    ref = world.batch()
    later = world.service.send(ref)
    assert later.batch is not None and later.batch.state is MassBatchState.QUEUED
    assert later.retry_after is not None and later.retry_after >= 120
    assert later.batch.last_error == "mass_too_fast"
    failed = world.service.send(ref)
    assert failed.batch is not None and failed.batch.state is MassBatchState.FAILED
    assert (failed.batch.errcode, failed.batch.reason) == (45028, "no_mass_quota")


def test_a_cancelled_broadcast_sends_nothing_and_cancels_the_batch() -> None:
    world = World(Wire({"errcode": 0, "msg_id": 1}), state="cancelled")
    result = world.service.send(world.batch())
    assert result.batch is not None and result.batch.state is MassBatchState.CANCELLED
    assert world.wire.requests == []


def test_a_stale_claim_is_taken_over_and_a_fresh_one_is_left_alone() -> None:
    world = World(Wire({"errcode": 0, "msg_id": 5}))
    ref = world.batch()
    claimed = world.store.claim(
        BROADCAST,
        0,
        token="dead",
        now=datetime.fromtimestamp(T0, UTC),
        stale_before=datetime.fromtimestamp(0, UTC),
    )
    assert claimed.status is ClaimStatus.CLAIMED
    world.now = T0 + 60
    busy = world.service.send(ref)
    assert busy.retry_after is not None and world.wire.requests == []
    world.now = T0 + 121
    taken = world.service.send(ref)
    assert taken.batch is not None and taken.batch.state is MassBatchState.SENT
    assert len(world.wire.requests) == 1


def test_the_account_pause_holds_the_batch_back() -> None:
    world = World(Wire({"errcode": 0, "msg_id": 5}))
    until = datetime.fromtimestamp(T0, UTC) + timedelta(hours=1)
    world.guards.pause(APPID, "mass", until=until, reason="daily_quota")
    result = world.service.send(world.batch())
    assert result.retry_after == pytest.approx(3600)
    assert world.wire.requests == []
