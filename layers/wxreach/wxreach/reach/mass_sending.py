"""The mass sender: one `/mass/send` (or `/mass/sendall`) per batch of a mass broadcast, once.

Per batch record: the batch and its broadcast → refusals that need no call (a single openid,
a broadcast no longer sending) → the account's mass pause → an access token → a mass permit (at
most `calls_per_minute` mass calls per account in any rolling minute, across all instances) →
claim (one transaction that also checks the broadcast is still `sending`: once a cancel has
flipped it, no batch can start) → the WeChat call → sent | failed | back to queued.

Exactly once (docs/broadcasts-mass.md): the request carries a clientmsgid derived from broadcast
and batch. WeChat refuses a clientmsgid it accepted in the last 24 h with 45065 and that job's
msg_id, which we adopt as the batch's outcome. So a batch whose answer we lost (a timeout after
the request left, a crash before the ledger write) is simply sent again inside that window.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from wxreach.errors import InvalidInput, WxReachError
from wxreach.observability import logger, mask_openid
from wxreach.reach.accounts import APPID_PATTERN
from wxreach.reach.messages import ORIGIN_ID_PATTERN
from wxreach.reach.sending import backoff_seconds, next_china_midnight
from wxreach.wechat.api import (
    MASS_SEND_PATH,
    MASS_SENDALL_PATH,
    STABLE_TOKEN_PATH,
    WeChatClient,
)
from wxreach.wechat.errcodes import (
    AccountStopped,
    ClientMsgIdExists,
    RecipientRejected,
    RetryLater,
    SendRejected,
    TokenInvalid,
    TransportError,
    WeChatApiError,
)
from wxreach.wechat.keywords import Channel
from wxreach.wechat.tokens import TokenBroker

MASS_MIN_OPENIDS = 2  # fewer → 40130 (§4.2)
MASS_MAX_OPENIDS = 10_000
CLIENTMSGID_MAX_BYTES = 64  # longer → 45067
# WeChat remembers a clientmsgid for 24 h (§4.2): a batch that may have been sent is resent only
# well inside that, measured from its first claim.
CLIENTMSGID_SAFE_SECONDS = 23 * 3600
# 45066: the same clientmsgid again within a minute of its submission; after that it is a 45065.
CLIENTMSGID_TOO_FAST_RETRY_SECONDS = 65.0
MASS_PERMIT_NAME = "mass-api"
MASS_PAUSE_CHANNEL = "mass"
# The broadcast is not sending (not yet, or paused): look again later.
NOT_SENDING_RETRY_SECONDS = 900.0
NO_PERMIT_RETRY_SECONDS = 5.0
INTERNAL_ERROR_RETRY_SECONDS = 30.0
# Broadcast states in which a batch will never be sent (anything else: wait).
NEVER_SENDING_STATES = frozenset({"cancelled", "cancelling", "sent", "partially_sent", "failed"})
REQUEST_FIELDS_OWNED = ("touser", "towxname", "filter", "clientmsgid")
# The calls that may have created a job when their answer is lost.
MASS_CALL_PATHS = frozenset({MASS_SEND_PATH, MASS_SENDALL_PATH})


class MassBatchState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"  # WeChat accepted the job (msg_id); delivery comes with MASSSENDJOBFINISH
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_MASS_STATES = frozenset({MassBatchState.SENT, MassBatchState.FAILED, MassBatchState.CANCELLED})


class SendAllTarget(BaseModel):
    """`/mass/sendall`'s filter: every follower, or one WeChat tag."""

    model_config = ConfigDict(frozen=True)

    is_to_all: bool = False
    tag_id: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _someone(self) -> SendAllTarget:
        if not self.is_to_all and self.tag_id is None:
            raise ValueError("a sendall target needs is_to_all or a tag_id")
        return self

    def wechat_filter(self) -> dict[str, Any]:
        if self.is_to_all:
            return {"is_to_all": True}
        return {"is_to_all": False, "tag_id": self.tag_id}


class MassBatchRef(BaseModel):
    """A mass-queue record: which batch to send. The batch itself lives in the ledger."""

    schema_version: int = 1
    appid: str = Field(pattern=APPID_PATTERN)
    broadcast_id: str = Field(pattern=ORIGIN_ID_PATTERN)
    batch: int = Field(ge=0)


class MassJobResult(BaseModel):
    """What WeChat reported about a sent batch's job: MASSSENDJOBFINISH, or `/mass/get` when no
    callback came (then only the status is known)."""

    source: str = Field(description="`callback` or `poll`")
    status: str = Field(description="WeChat's raw Status (callback) or msg_status (poll)")
    outcome: str = Field(description="sent | send_failed | review_failed | deleted | unknown")
    review_error: int | None = Field(default=None, description="N of err(N)")
    review_meaning: str | None = None
    total_count: int | None = None
    filter_count: int | None = None
    sent_count: int | None = None
    error_count: int | None = None
    article_urls: list[dict[str, Any]] = Field(default_factory=list)
    copyright_check: dict[str, Any] | None = None
    finished_at: datetime | None = None


class MassBatch(BaseModel):
    """One WeChat mass call of a broadcast: up to 10 000 openids, or a sendall filter.

    Openids are deduplicated (WeChat counts a repeated openid once). Loaded without its openids
    (listings), an openid batch has `openids=None` and only `recipients`.
    """

    broadcast_id: str = Field(pattern=ORIGIN_ID_PATTERN)
    appid: str = Field(pattern=APPID_PATTERN)
    number: int = Field(ge=0)
    openids: list[str] | None = Field(default=None, description="/mass/send recipients")
    sendall: SendAllTarget | None = Field(default=None, description="/mass/sendall filter")
    recipients: int = Field(default=0, ge=0, description="Openids, or the expected sendall audience")
    state: MassBatchState = MassBatchState.QUEUED
    msg_id: str | None = None
    msg_data_id: str | None = None
    errcode: int | None = None
    reason: str | None = None
    detail: str | None = None
    last_error: str | None = Field(default=None, description="Why the last attempt was retried later")
    attempts: int = 0
    maybe_sent: bool = False
    job: MassJobResult | None = Field(default=None, description="The job's outcome, once WeChat reported it")
    claimed_at: datetime | None = None
    first_claimed_at: datetime | None = None
    sent_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @model_validator(mode="after")
    def _one_target(self) -> MassBatch:
        if self.openids is not None and self.sendall is not None:
            raise ValueError("a mass batch has openids or a sendall target, not both")
        if self.openids is not None:
            unique = list(dict.fromkeys(self.openids))
            if not 1 <= len(unique) <= MASS_MAX_OPENIDS:
                raise ValueError(f"a mass batch has 1..{MASS_MAX_OPENIDS} openids, not {len(unique)}")
            self.openids = unique
            self.recipients = len(unique)
        return self

    @property
    def is_sendall(self) -> bool:
        return self.sendall is not None

    @property
    def clientmsgid(self) -> str:
        return mass_clientmsgid(self.broadcast_id, self.number)

    def ref(self) -> MassBatchRef:
        return MassBatchRef(appid=self.appid, broadcast_id=self.broadcast_id, batch=self.number)


@dataclass(frozen=True)
class MassBroadcast:
    """What the sender reads of a broadcast record (written by the broadcast service)."""

    broadcast_id: str
    appid: str
    channel: str
    state: str
    mass_body: str | None  # JSON of the request body without touser / filter / clientmsgid


class ClaimStatus(StrEnum):
    CLAIMED = "claimed"
    BROADCAST_NOT_SENDING = "broadcast_not_sending"
    BATCH_TAKEN = "batch_taken"  # not queued (finished, or another delivery holds a fresh claim)


@dataclass(frozen=True)
class ClaimOutcome:
    status: ClaimStatus
    broadcast_state: str | None = None


@dataclass
class MassSendResult:
    batch: MassBatch | None
    # Seconds after which the record must be delivered again; None when it is done with.
    retry_after: float | None = None
    # The record can never be processed (no such batch): park it in the dead-letter queue.
    error: str | None = None


class MassBatchRepository(Protocol):
    def broadcast(self, broadcast_id: str) -> MassBroadcast | None: ...
    def get(self, broadcast_id: str, number: int, *, with_openids: bool = True) -> MassBatch | None: ...
    def claim(
        self, broadcast_id: str, number: int, *, token: str, now: datetime, stale_before: datetime
    ) -> ClaimOutcome: ...
    def finish(
        self,
        broadcast_id: str,
        number: int,
        *,
        state: MassBatchState,
        now: datetime,
        claim_token: str | None = None,
        appid: str | None = None,
        msg_id: str | None = None,
        msg_data_id: str | None = None,
        errcode: int | None = None,
        reason: str | None = None,
        detail: str | None = None,
        maybe_sent: bool = False,
    ) -> bool: ...
    def cancel_batch(
        self, broadcast_id: str, number: int, *, now: datetime, stale_before: datetime, reason: str
    ) -> MassBatch | None: ...


class MassGuards(Protocol):
    """The quota table's share: the cross-instance mass permit and the account's mass pause."""

    def take_minute_permit(self, appid: str, name: str, *, per_minute: int, now: float) -> bool: ...
    def paused_until(self, appid: str, channel: str, *, now: datetime) -> tuple[datetime, str] | None: ...
    def pause(self, appid: str, channel: str, *, until: datetime, reason: str) -> None: ...


@dataclass(frozen=True)
class MassSendPolicy:
    calls_per_minute: int = 60
    claim_seconds: int = 120
    permit_wait_seconds: float = 20.0
    permit_poll_seconds: float = 1.0
    # Previews answer an operator request: wait less for a permit.
    preview_permit_wait_seconds: float = 3.0
    max_attempts: int = 12
    pause_seconds: int = 900


class _NoPermit(Exception):
    """No mass permit inside the wait bound."""


def mass_clientmsgid(broadcast_id: str, number: int) -> str:
    """Deterministic per (broadcast, batch) and at most 64 bytes (§4.2, 45067 beyond)."""
    plain = f"{broadcast_id}-{number}"
    text = plain if len(plain.encode("utf-8")) <= CLIENTMSGID_MAX_BYTES else _hashed(plain)
    assert len(text.encode("utf-8")) <= CLIENTMSGID_MAX_BYTES
    return text


def _hashed(plain: str) -> str:
    return "h-" + hashlib.sha256(plain.encode("utf-8")).hexdigest()[:60]


def mass_request(mass_body: str | dict[str, Any], batch: MassBatch) -> dict[str, Any]:
    """The WeChat request body: the broadcast's content plus this batch's target and clientmsgid.
    ValueError when the content is not a JSON object with a msgtype."""
    body = json.loads(mass_body) if isinstance(mass_body, str) else dict(mass_body)
    if not isinstance(body, dict) or not isinstance(body.get("msgtype"), str):
        raise ValueError("mass_body must be a JSON object with a msgtype")
    # The target and the idempotency key are the sender's, whatever the content carried.
    body = {k: v for k, v in body.items() if k not in REQUEST_FIELDS_OWNED}
    if batch.sendall is not None:
        body["filter"] = batch.sendall.wechat_filter()
    elif batch.openids is not None:
        body["touser"] = batch.openids
    else:
        raise ValueError("the batch was loaded without its openids")
    body["clientmsgid"] = batch.clientmsgid
    return body


def mass_backoff_seconds(attempts: int, error: WeChatApiError) -> float:
    if error.errcode == 45066:
        # Our earlier submission is under a minute old: it was accepted; ask again for its msg_id.
        return CLIENTMSGID_TOO_FAST_RETRY_SECONDS
    return backoff_seconds(attempts, error)


class MassSendService:
    def __init__(
        self,
        *,
        store: MassBatchRepository,
        guards: MassGuards,
        wechat: WeChatClient,
        tokens: TokenBroker,
        policy: MassSendPolicy,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._store = store
        self._guards = guards
        self._wechat = wechat
        self._tokens = tokens
        self._policy = policy
        self._clock = clock
        self._sleep = sleep

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # -- batches -----------------------------------------------------------------------------
    def send(self, ref: MassBatchRef, *, deadline: float | None = None) -> MassSendResult:
        """Sends one batch (or decides it). `deadline` (time.monotonic()): stop waiting for a
        permit by then."""
        try:
            return self._send(ref, deadline)
        except Exception as exc:
            # Type only: a repr could carry openids. A claim left behind is taken over once stale.
            logger.error(
                "mass batch failed unexpectedly",
                error=type(exc).__name__,
                broadcast=ref.broadcast_id,
                batch=ref.batch,
            )
            return MassSendResult(
                None, retry_after=max(INTERNAL_ERROR_RETRY_SECONDS, self._policy.claim_seconds + 1)
            )

    def _send(self, ref: MassBatchRef, deadline: float | None) -> MassSendResult:
        batch = self._store.get(ref.broadcast_id, ref.batch)
        if batch is None:
            return MassSendResult(None, error="batch_missing")
        if batch.appid != ref.appid:
            return MassSendResult(batch, error="appid_mismatch")
        if batch.state in TERMINAL_MASS_STATES:
            return MassSendResult(batch)  # a redelivery of something decided
        now = self._now()
        if batch.state is MassBatchState.SENDING:
            age = (now - batch.claimed_at).total_seconds() if batch.claimed_at else float("inf")
            if age < self._policy.claim_seconds:
                return MassSendResult(batch, retry_after=self._policy.claim_seconds - age + 1)
            # Stale: its instance died during the call. The claim below takes it over.
        broadcast = self._store.broadcast(ref.broadcast_id)
        if broadcast is None or broadcast.appid != batch.appid or broadcast.channel != "mass":
            return MassSendResult(batch, error="not_a_mass_broadcast")
        if broadcast.state != "sending":
            return self._not_sending(batch, broadcast.state)
        if batch.openids is not None and len(batch.openids) < MASS_MIN_OPENIDS:
            # WeChat answers 40130 below two openids and preview is no real send: the splitter
            # never makes such a batch (it merges remainders); one that exists anyway fails here.
            return self._decide(batch, MassBatchState.FAILED, reason="too_few_recipients")
        try:
            body = mass_request(broadcast.mass_body or "", batch)
        except ValueError as exc:
            return self._decide(batch, MassBatchState.FAILED, reason="invalid_mass_body", detail=str(exc))

        paused = self._guards.paused_until(batch.appid, MASS_PAUSE_CHANNEL, now=now)
        if paused is not None:
            return MassSendResult(batch, retry_after=max(1.0, (paused[0] - now).total_seconds()))
        # Everything that can fail without WeChat having sent anything happens before the claim,
        # so a claim found stale later really was interrupted during the call.
        try:
            token = self._tokens.get(batch.appid)
            self._wait_for_permit(batch.appid, self._policy.permit_wait_seconds, deadline)
        except _NoPermit:
            return MassSendResult(
                batch, retry_after=NO_PERMIT_RETRY_SECONDS + secrets.randbelow(10_000) / 1000
            )
        except AccountStopped as exc:
            return MassSendResult(batch, retry_after=self._stop_account(batch.appid, exc))
        except RetryLater as exc:
            return MassSendResult(batch, retry_after=backoff_seconds(batch.attempts + 1, exc))

        claim = secrets.token_hex(8)
        now = self._now()
        stale_before = now - timedelta(seconds=self._policy.claim_seconds)
        outcome = self._store.claim(
            batch.broadcast_id, batch.number, token=claim, now=now, stale_before=stale_before
        )
        if outcome.status is ClaimStatus.BROADCAST_NOT_SENDING:
            return self._not_sending(batch, outcome.broadcast_state)
        if outcome.status is ClaimStatus.BATCH_TAKEN:
            current = self._store.get(batch.broadcast_id, batch.number, with_openids=False)
            if current is None or current.state in TERMINAL_MASS_STATES:
                return MassSendResult(current)
            return MassSendResult(current, retry_after=float(self._policy.claim_seconds))
        return self._call_claimed(batch, body, token, claim, deadline)

    def _call_claimed(
        self, batch: MassBatch, body: dict[str, Any], token: str, claim: str, deadline: float | None
    ) -> MassSendResult:
        attempts = batch.attempts + 1
        # A stale claim we took over, or a release after an answer we never got: WeChat may
        # have the job. Within its 24 h clientmsgid window a resend is answered 45065.
        maybe_sent = batch.maybe_sent or batch.state is MassBatchState.SENDING
        first = batch.first_claimed_at
        since_first = (self._now() - first).total_seconds() if first is not None else 0.0
        if maybe_sent and since_first >= CLIENTMSGID_SAFE_SECONDS:
            return self._finish(
                batch,
                MassBatchState.FAILED,
                claim=claim,
                reason="outcome_unknown",
                detail="an earlier attempt may have been accepted; WeChat's clientmsgid window is over",
            )

        def release(exc: WeChatApiError | None, *, maybe: bool, reason: str) -> None:
            self._store.finish(
                batch.broadcast_id,
                batch.number,
                state=MassBatchState.QUEUED,
                now=self._now(),
                claim_token=claim,
                errcode=exc.errcode if exc else None,
                reason=reason,
                maybe_sent=maybe,
            )

        try:
            msg_id, msg_data_id = self._call(batch.appid, body, token, deadline)
        except ClientMsgIdExists as exc:
            # Our own earlier submission (§4.2): it is this batch's job.
            logger.warning(
                "mass batch adopted an earlier job",
                broadcast=batch.broadcast_id,
                batch=batch.number,
                msg_id=exc.msg_id,
                rid=exc.rid,
            )
            return self._finish(
                batch, MassBatchState.SENT, claim=claim, msg_id=exc.msg_id, reason="adopted", errcode=45065
            )
        except (SendRejected, RecipientRejected) as exc:
            return self._finish(
                batch,
                MassBatchState.FAILED,
                claim=claim,
                errcode=exc.errcode,
                reason=exc.reason,
                detail=str(exc),
            )
        except _NoPermit:
            release(None, maybe=maybe_sent, reason="rate_limit")
            return self._reloaded(batch, retry_after=NO_PERMIT_RETRY_SECONDS)
        except AccountStopped as exc:
            release(exc, maybe=maybe_sent, reason=exc.reason)
            return self._reloaded(batch, retry_after=self._stop_account(batch.appid, exc))
        except RetryLater as exc:
            # A timeout after the request left may have been accepted: resending the same
            # clientmsgid is safe (45065 with the msg_id, adopted above). 45066 says it was.
            maybe = (
                maybe_sent
                or exc.errcode == 45066
                or (isinstance(exc, TransportError) and exc.request_sent and exc.path in MASS_CALL_PATHS)
            )
            if attempts >= self._policy.max_attempts:
                return self._finish(
                    batch,
                    MassBatchState.FAILED,
                    claim=claim,
                    errcode=exc.errcode,
                    reason="outcome_unknown" if maybe else exc.reason,
                    detail=f"gave up after {attempts} attempts: {exc}",
                    maybe_sent=maybe,
                )
            release(exc, maybe=maybe, reason=exc.reason)
            return self._reloaded(batch, retry_after=mass_backoff_seconds(attempts, exc))
        finished = self._finish(
            batch, MassBatchState.SENT, claim=claim, msg_id=msg_id, msg_data_id=msg_data_id
        )
        logger.info(
            "mass batch sent",
            broadcast=batch.broadcast_id,
            batch=batch.number,
            recipients=batch.recipients,
            msg_id=msg_id,
        )
        return finished

    def _call(
        self, appid: str, body: dict[str, Any], token: str, deadline: float | None
    ) -> tuple[str, str | None]:
        send = self._wechat.mass_sendall if "filter" in body else self._wechat.mass_send
        try:
            return send(token, body)
        except TokenInvalid:
            # Someone rotated the token: the broker re-reads or refreshes once; we retry once,
            # and the retry is another mass call, so it needs its own permit.
            fresh = self._tokens.after_invalid(appid, token)
        self._wait_for_permit(appid, self._policy.permit_wait_seconds, deadline)
        try:
            return send(fresh, body)
        except TokenInvalid as again:
            raise RetryLater(again.errcode, again.errmsg, path=again.path, reason="token_rotating") from again

    def _not_sending(self, batch: MassBatch, state: str | None) -> MassSendResult:
        if state is None:
            return MassSendResult(batch, error="broadcast_missing")
        if state in NEVER_SENDING_STATES:
            now = self._now()
            cancelled = self._store.cancel_batch(
                batch.broadcast_id,
                batch.number,
                now=now,
                stale_before=now - timedelta(seconds=self._policy.claim_seconds),
                reason=f"broadcast_{state}",
            )
            logger.info("mass batch not sent", broadcast=batch.broadcast_id, batch=batch.number, state=state)
            return MassSendResult(cancelled or batch)
        # Not sending yet, or paused: the broadcast service decides; look again later.
        return MassSendResult(batch, retry_after=NOT_SENDING_RETRY_SECONDS)

    def _decide(
        self, batch: MassBatch, state: MassBatchState, *, reason: str, detail: str | None = None
    ) -> MassSendResult:
        """A decision taken without a claim (nothing was sent): only from queued."""
        self._store.finish(
            batch.broadcast_id, batch.number, state=state, now=self._now(), reason=reason, detail=detail
        )
        logger.warning("mass batch refused", broadcast=batch.broadcast_id, batch=batch.number, reason=reason)
        return self._reloaded(batch)

    def _finish(
        self,
        batch: MassBatch,
        state: MassBatchState,
        *,
        claim: str,
        msg_id: str | None = None,
        msg_data_id: str | None = None,
        errcode: int | None = None,
        reason: str | None = None,
        detail: str | None = None,
        maybe_sent: bool = False,
    ) -> MassSendResult:
        self._store.finish(
            batch.broadcast_id,
            batch.number,
            state=state,
            now=self._now(),
            claim_token=claim,
            appid=batch.appid,
            msg_id=msg_id,
            msg_data_id=msg_data_id,
            errcode=errcode,
            reason=reason,
            detail=detail[:500] if detail else None,
            maybe_sent=maybe_sent,
        )
        return self._reloaded(batch)

    def _reloaded(self, batch: MassBatch, *, retry_after: float | None = None) -> MassSendResult:
        current = self._store.get(batch.broadcast_id, batch.number, with_openids=False)
        return MassSendResult(current or batch, retry_after=retry_after)

    def _stop_account(self, appid: str, exc: AccountStopped) -> float:
        """45009 (for mass: 100 jobs per China day) pauses mass sending until China midnight,
        other stops for a while. Returns the seconds to wait."""
        now = self._now()
        until = (
            next_china_midnight(now)
            if exc.errcode == 45009
            else now + timedelta(seconds=self._policy.pause_seconds)
        )
        # A stop from the token endpoint is the account's, not the channel's.
        channels = (
            [MASS_PAUSE_CHANNEL, *(str(c) for c in Channel)]
            if exc.path == STABLE_TOKEN_PATH
            else [MASS_PAUSE_CHANNEL]
        )
        for channel in channels:
            self._guards.pause(appid, channel, until=until, reason=exc.reason)
        logger.warning("mass sending paused", appid=appid, reason=exc.reason, until=until.isoformat())
        return max(1.0, (until - now).total_seconds())

    def _wait_for_permit(self, appid: str, wait_seconds: float, deadline: float | None) -> None:
        """A mass permit, waiting at most `wait_seconds` (and never past `deadline`)."""
        stop = time.monotonic() + wait_seconds
        if deadline is not None:
            stop = min(stop, deadline)
        while True:
            if self._guards.take_minute_permit(
                appid, MASS_PERMIT_NAME, per_minute=self._policy.calls_per_minute, now=self._clock()
            ):
                return
            if time.monotonic() >= stop:
                raise _NoPermit
            # Jitter, so waiting instances do not ask at the same moment.
            self._sleep(self._policy.permit_poll_seconds * (0.5 + secrets.randbelow(1000) / 1000))

    # -- preview, delete, status (operator routes) --------------------------------------------
    def preview(
        self, appid: str, mass_body: dict[str, Any], *, openid: str | None = None, wxname: str | None = None
    ) -> dict[str, Any]:
        """`/mass/preview` to one follower (by WeChat ID when given: it wins over the openid).
        A preview is a mass call: it takes a permit."""
        if not openid and not wxname:
            raise InvalidInput("a preview needs an openid or a WeChat ID", reason="missing_recipient")
        if not isinstance(mass_body.get("msgtype"), str):
            raise InvalidInput("mass content needs a msgtype", reason="invalid_mass_body")
        # Never a batch's clientmsgid: a preview carrying it would make the real send a 45065.
        body = {k: v for k, v in mass_body.items() if k not in REQUEST_FIELDS_OWNED}
        if wxname:
            body["towxname"] = wxname
        else:
            body["touser"] = openid
        try:
            self._wait_for_permit(appid, self._policy.preview_permit_wait_seconds, None)
        except _NoPermit as exc:
            raise WxReachError(
                "mass calls are at their per-minute limit", reason="rate_limit", status=429
            ) from exc
        msg_id = self._with_token(appid, lambda token: self._wechat.mass_preview(token, body), permit=True)
        logger.info(
            "mass preview sent",
            appid=appid,
            to="wxname" if wxname else "openid",
            openid=mask_openid(openid) if openid and not wxname else None,
            msg_id=msg_id,
        )
        return {"msg_id": msg_id, "to": "wxname" if wxname else "openid"}

    def delete(self, appid: str, msg_id: str, article_idx: int = 0) -> None:
        """`/mass/delete`: article `article_idx` (1-based; 0 = all) of a sent mpnews/video job."""
        if article_idx < 0:
            raise InvalidInput(
                "article_idx is 0 (all) or a 1-based article number", reason="invalid_article_idx"
            )
        self._with_token(appid, lambda token: self._wechat.mass_delete(token, msg_id, article_idx))
        logger.info("mass article deleted", appid=appid, msg_id=msg_id, article_idx=article_idx)

    def get_status(self, appid: str, msg_id: str) -> str:
        """`/mass/get`: SEND_SUCCESS / SENDING / SEND_FAIL / DELETE."""
        return self._with_token(appid, lambda token: self._wechat.mass_get(token, msg_id))

    def _with_token[T](self, appid: str, call: Callable[[str], T], *, permit: bool = False) -> T:
        """One call with the account's token, retried once after a token rotation; WeChat's
        refusals become domain errors for the operator routes."""
        try:
            token = self._tokens.get(appid)
            try:
                return call(token)
            except TokenInvalid:
                fresh = self._tokens.after_invalid(appid, token)
            if permit:
                self._wait_for_permit(appid, self._policy.preview_permit_wait_seconds, None)
            return call(fresh)
        except _NoPermit as exc:
            raise WxReachError(
                "mass calls are at their per-minute limit", reason="rate_limit", status=429
            ) from exc
        except (SendRejected, RecipientRejected) as exc:
            raise InvalidInput(str(exc), reason=exc.reason, status=400) from exc
        except WeChatApiError as exc:
            # Retry-later answers, stops, a token that keeps failing: try again later.
            raise WxReachError(str(exc), reason=exc.reason, status=503) from exc
