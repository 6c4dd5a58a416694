"""The sending use case: a batch record (or a single send) becomes messages, exactly once.

Per recipient: create the ledger record (first writer wins) → render and validate → guards
(account pause, following, repeat guard and daily cap for template messages; one credit for
subscription notifications) → a rate permit → claim (queued → sending) → the WeChat call →
sent | failed | skipped. Every guard is idempotent per message, so a redelivered record reuses
what its first delivery reserved instead of taking it twice.

Crash safety (docs/sending.md): a record found `sending` with a stale claim was left by an
instance that died during the WeChat call. A template message is resent under the same
`client_msg_id` while WeChat still dedupes it (10 minutes); a subscription notification has no
idempotency key and is marked `unknown`, never resent.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from wxreach.errors import InvalidInput, WxReachError
from wxreach.observability import logger, mask_openid
from wxreach.reach.accounts import Account
from wxreach.reach.compliance import LintFinding, LintLevel, lint
from wxreach.reach.messages import (
    TERMINAL_STATES,
    BroadcastClosed,
    Message,
    MessageBatch,
    MessageState,
    OriginKind,
    Recipient,
)
from wxreach.reach.ports import (
    AccountDirectory,
    BatchQueue,
    CreditOutcome,
    FollowerRegistry,
    MessageLedger,
    RepeatReservation,
    SendGuards,
)
from wxreach.reach.rendering import (
    JumpTarget,
    MessageContent,
    Rendering,
    content_digest,
    render,
    wechat_payload,
)
from wxreach.reach.template_service import TemplateService
from wxreach.reach.templates import Template
from wxreach.wechat.api import BIZSEND_PATH, STABLE_TOKEN_PATH, TEMPLATE_SEND_PATH, WeChatClient
from wxreach.wechat.errcodes import (
    AccountStopped,
    RecipientRejected,
    RetryLater,
    SendRejected,
    TokenInvalid,
    TransportError,
    WeChatApiError,
)
from wxreach.wechat.keywords import Channel
from wxreach.wechat.tokens import TokenBroker, china_day

CHINA = timedelta(hours=8)
# WeChat dedupes template client_msg_id for 10 minutes (§2.1); resend only well inside that.
CLIENT_MSG_ID_SAFE_SECONDS = 9 * 60
TEMPLATE_DAILY_COUNTER = "template-sends"
# How long one recipient may wait for a rate permit before the record is retried later.
MAX_PERMIT_WAIT_SECONDS = 20.0
# A single send first queues a copy this far ahead (SQS's longest delay) as its safety net.
SAFETY_NET_DELAY_SECONDS = 900
INTERNAL_ERROR_RETRY_SECONDS = 30.0
GATE_CACHE_SECONDS = 1.0
# A message that may have reached WeChat: only these calls can deliver.
SEND_PATHS = frozenset({TEMPLATE_SEND_PATH, BIZSEND_PATH})


@dataclass(frozen=True)
class SendPolicy:
    concurrency: int = 16
    rate_per_second: int = 50
    template_daily_cap: int = 100_000
    repeat_window_seconds: int = 24 * 3600
    max_attempts: int = 8
    claim_seconds: int = 120
    pause_seconds: int = 900
    permit_wait_seconds: float = MAX_PERMIT_WAIT_SECONDS


@dataclass
class BatchResult:
    messages: list[Message] = field(default_factory=list)
    # Seconds after which the record must be delivered again (some recipients are waiting).
    retry_after: float | None = None
    # The batch could not be started at all: why, and whether retrying can ever help.
    error: str | None = None
    permanent: bool = False


@dataclass
class PreviewResult:
    openid: str
    values: dict[str, str]
    violations: list[str]
    missing_params: list[str]
    warnings: list[str]
    lint: list[LintFinding]
    jump: JumpTarget
    would_send: bool


class _Later(Exception):
    """This recipient is not finished: deliver the record again after `delay` seconds."""

    def __init__(self, delay: float, reason: str) -> None:
        super().__init__(reason)
        self.delay = delay
        self.reason = reason


def next_china_midnight(at: datetime) -> datetime:
    local = at.astimezone(UTC) + CHINA
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - CHINA


def backoff_seconds(attempts: int, error: WeChatApiError | None = None) -> float:
    if error is not None and error.errcode == 45011:
        return 60.0  # per-minute limit: the next minute
    if error is not None and error.errcode == 42010:
        return max(120.0, 30.0 * 2**attempts)  # "masssend fast": back off minutes
    return float(min(900, 5 * 2**attempts))


class SendService:
    def __init__(
        self,
        *,
        accounts: AccountDirectory,
        followers: FollowerRegistry,
        templates: TemplateService,
        ledger: MessageLedger,
        guards: SendGuards,
        wechat: WeChatClient,
        tokens: TokenBroker,
        policy: SendPolicy,
        queue: BatchQueue | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._accounts = accounts
        self._followers = followers
        self._templates = templates
        self._ledger = ledger
        self._guards = guards
        self._wechat = wechat
        self._tokens = tokens
        self._policy = policy
        self._queue = queue
        self._clock = clock
        self._sleep = sleep
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._gates: dict[str, tuple[bool, float]] = {}

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self._policy.concurrency, thread_name_prefix="send"
                )
            return self._pool

    # -- batches -----------------------------------------------------------------------------
    def send_batches(
        self, batches: list[MessageBatch], *, deadline: float | None = None
    ) -> list[BatchResult]:
        """Every recipient of every batch, at most `concurrency` WeChat calls in flight. A batch
        that cannot be started (unknown account, WeChat down during a template sync) gets its
        own error; nothing one batch does can fail another."""
        results = [BatchResult() for _ in batches]
        contexts: list[_BatchContext | None] = []
        for index, batch in enumerate(batches):
            try:
                contexts.append(self._context(batch))
            except WxReachError as exc:
                results[index].error, results[index].permanent = exc.reason, exc.status < 500
                contexts.append(None)
            except RetryLater as exc:
                results[index].error, results[index].retry_after = exc.reason, backoff_seconds(1, exc)
                contexts.append(None)
        # The same message twice in one invocation (an action published twice, a record
        # redelivered next to itself) is worked on once; each copy's batch gets the outcome.
        copies: dict[str, list[int]] = {}
        jobs: list[tuple[int, Recipient]] = []
        for index, batch in enumerate(batches):
            if contexts[index] is None:
                continue
            for recipient in batch.recipients:
                message_id = batch.message_id(recipient.openid)
                if message_id not in copies:
                    copies[message_id] = []
                    jobs.append((index, recipient))
                if index not in copies[message_id]:
                    copies[message_id].append(index)

        def run(job: tuple[int, Recipient]) -> tuple[int, Message | _Later]:
            index, recipient = job
            context = contexts[index]
            assert context is not None
            if deadline is not None and time.monotonic() > deadline:
                # Not started before the invocation's budget ran out: the record comes back.
                return index, _Later(1.0, "time budget")
            try:
                return index, self._send_one(context, recipient)
            except _Later as later:
                return index, later
            except Exception as exc:
                # Type only: a repr may carry customer parameters.
                logger.error("send failed unexpectedly", error=type(exc).__name__, appid=context.batch.appid)
                return index, _Later(INTERNAL_ERROR_RETRY_SECONDS, "internal_error")

        # One recipient (a single send) needs no thread; map() waits for every job.
        outcomes: Iterable[tuple[int, Message | _Later]] = (
            [run(jobs[0])] if len(jobs) == 1 else list(self._executor().map(run, jobs))
        )
        for (index, recipient), (_, outcome) in zip(jobs, outcomes, strict=True):
            batch = batches[index]
            for copy in copies[batch.message_id(recipient.openid)]:
                result = results[copy]
                if isinstance(outcome, _Later):
                    result.retry_after = max(result.retry_after or 0.0, outcome.delay)
                else:
                    result.messages.append(outcome)
        return results

    def send_batch(self, batch: MessageBatch) -> BatchResult:
        return self.send_batches([batch])[0]

    def send_now(self, batch: MessageBatch) -> tuple[list[Message], bool]:
        """Synchronous send (operator route). A delayed copy of the batch is queued first, so a
        request killed mid-way (timeout) is still finished by the template sender; recipients
        WeChat or a guard asked to wait are queued again with their delay. Nothing is lost:
        (the records, True when some are waiting)."""
        if self._queue is None:
            raise InvalidInput("no send queue configured", reason="misconfigured", status=500)
        self._queue.enqueue(batch, delay_seconds=SAFETY_NET_DELAY_SECONDS)
        result = self.send_batch(batch)
        if result.error is not None:
            raise WxReachError(f"cannot send: {result.error}", reason=result.error, status=503)
        if result.retry_after is None:
            return result.messages, False
        self._queue.enqueue(batch, delay_seconds=int(result.retry_after))
        decided = {m.openid for m in result.messages}
        waiting = [
            self._ledger.get(batch.message_id(r.openid)) for r in batch.recipients if r.openid not in decided
        ]
        return [*result.messages, *(m for m in waiting if m is not None)], True

    def get_message(self, appid: str, message_id: str) -> Message | None:
        message = self._ledger.get(message_id)
        return message if message is not None and message.appid == appid else None

    # -- dry run and preview -----------------------------------------------------------------
    def preview(
        self, appid: str, channel: Channel, content: MessageContent, samples: list[Recipient]
    ) -> tuple[Template | None, list[PreviewResult]]:
        """What each sample recipient would get, every violation and lint finding; sends nothing,
        writes nothing."""
        account = self._accounts.get(appid)
        template = self._templates.resolve(appid, channel, content.template_id)
        if template is None:
            return None, []
        results = []
        for sample in samples:
            rendering = render(content, template, channel, sample.params)
            findings = lint(template, rendering.data, channel)
            blocked = bool(findings) and _lint_level(account) is LintLevel.BLOCK
            results.append(
                PreviewResult(
                    openid=sample.openid,
                    values=rendering.data,
                    violations=list(rendering.violations),
                    missing_params=list(rendering.missing_params),
                    warnings=list(rendering.warnings),
                    lint=findings,
                    jump=rendering.jump,
                    would_send=rendering.ok and not blocked,
                )
            )
        return template, results

    def dry_run(self, batch: MessageBatch) -> list[Message]:
        """The messages a send would produce, guards checked read-only; nothing written or sent."""
        context = self._context(batch)
        return [self._decide_dry(context, recipient) for recipient in batch.recipients]

    # -- one recipient -----------------------------------------------------------------------
    def _context(self, batch: MessageBatch) -> _BatchContext:
        account = self._accounts.get(batch.appid)
        template = self._templates.resolve(batch.appid, batch.channel, batch.content.template_id)
        return _BatchContext(batch=batch, account=account, template=template)

    def _new_message(self, context: _BatchContext, recipient: Recipient) -> Message:
        batch = context.batch
        return Message(
            message_id=batch.message_id(recipient.openid),
            appid=batch.appid,
            channel=batch.channel,
            openid=recipient.openid,
            template_id=batch.content.template_id,
            origin=batch.origin,
            state=MessageState.QUEUED,
            created_at=self._now(),
        )

    def _content_problem(
        self, context: _BatchContext, rendering: Rendering | None
    ) -> tuple[str, str | None] | None:
        """(reason, detail) when this recipient's content cannot be sent."""
        if context.template is None or rendering is None:
            return "template_unknown", f"template {context.batch.content.template_id} is not on this account"
        if rendering.missing_params:
            return "missing_parameter", "missing customer parameter: " + ", ".join(rendering.missing_params)
        if rendering.violations:
            return "invalid_value", "; ".join(rendering.violations)
        if _lint_level(context.account) is LintLevel.BLOCK:
            findings = lint(context.template, rendering.data, context.batch.channel)
            if findings:
                return "compliance_blocked", "; ".join(f"{f.rule}: {f.detail}" for f in findings)
        return None

    def _render(self, context: _BatchContext, recipient: Recipient) -> Rendering | None:
        if context.template is None:
            return None
        return render(context.batch.content, context.template, context.batch.channel, recipient.params)

    def _decide_dry(self, context: _BatchContext, recipient: Recipient) -> Message:
        message = self._new_message(context, recipient)
        rendering = self._render(context, recipient)
        values = rendering.data if rendering else {}
        problem = self._content_problem(context, rendering)
        if problem is not None:
            return message.model_copy(
                update={"state": MessageState.FAILED, "reason": problem[0], "detail": problem[1]}
            )
        skip = self._skip_reason_read_only(context, recipient, values)
        if skip is not None:
            return message.model_copy(
                update={"state": MessageState.SKIPPED, "reason": skip, "values": values}
            )
        paused = self._guards.paused_until(context.batch.appid, str(context.batch.channel), now=self._now())
        detail = f"would wait: account paused until {paused[0].isoformat()} ({paused[1]})" if paused else None
        return message.model_copy(update={"values": values, "detail": detail})

    def _skip_reason_read_only(
        self, context: _BatchContext, recipient: Recipient, values: dict[str, str]
    ) -> str | None:
        batch, now = context.batch, self._now()
        follower = self._followers.get(batch.appid, recipient.openid)
        if batch.channel is Channel.TEMPLATE:
            if follower is not None and follower.following is False:
                return "not_following"
            digest = content_digest(batch.content.template_id, values)
            if self._guards.repeat_blocked(
                batch.appid,
                recipient.openid,
                batch.content.template_id,
                digest,
                now=now,
                window_seconds=self._policy.repeat_window_seconds,
            ):
                return "repeat_guard"
            return None
        grants = {g.template_id: g for g in (follower.subscriptions if follower else [])}
        grant = grants.get(batch.content.template_id)
        if grant is None or not (
            grant.one_time_credits > 0 or (grant.long_term and grant.status == "accepted")
        ):
            return "no_subscription_credit"
        return None

    def _send_one(self, context: _BatchContext, recipient: Recipient) -> Message:
        batch = context.batch
        rendering = self._render(context, recipient)
        values = rendering.data if rendering else {}
        message, _ = self._ledger.create(self._new_message(context, recipient))
        mid = message.message_id
        if message.state in TERMINAL_STATES:
            return message  # a redelivery of something already decided
        take_over: str | None = None
        if message.state is MessageState.SENDING:
            take_over, done = self._stale_claim(message)
            if done:
                return self._reload(mid)
        elif self._resend_unsafe(message):
            return self._finish(
                message,
                MessageState.UNKNOWN,
                reason="outcome_unknown",
                detail="an earlier attempt may have been delivered and WeChat's client_msg_id window is over",
            )

        gate = _gate(batch)
        if gate is not None and take_over is None and not self._gate_open(gate):
            return self._cancelled(message, values)
        problem = self._content_problem(context, rendering)
        if problem is not None:
            return self._finish(
                message,
                MessageState.FAILED,
                claim=take_over,
                reason=problem[0],
                detail=problem[1],
                values=values,
            )
        assert rendering is not None

        paused = self._guards.paused_until(batch.appid, str(batch.channel), now=self._now())
        if paused is not None:
            until, why = paused
            raise _Later(max(1.0, (until - self._now()).total_seconds()), f"account paused: {why}")

        reservation: RepeatReservation | None = None
        day = china_day(self._clock())
        if take_over is None:
            if batch.channel is Channel.TEMPLATE:
                follower = self._followers.get(batch.appid, recipient.openid)
                if follower is not None and follower.following is False:
                    return self._finish(message, MessageState.SKIPPED, reason="not_following", values=values)
                reservation = self._guards.reserve_repeat(
                    batch.appid,
                    recipient.openid,
                    batch.content.template_id,
                    content_digest(batch.content.template_id, values),
                    message_id=mid,
                    now=self._now(),
                    window_seconds=self._policy.repeat_window_seconds,
                )
                if reservation is None:
                    return self._finish(message, MessageState.SKIPPED, reason="repeat_guard", values=values)
                if not self._guards.reserve_daily(
                    batch.appid, TEMPLATE_DAILY_COUNTER, day=day, cap=self._policy.template_daily_cap
                ):
                    self._guards.release_repeat(reservation)
                    until = next_china_midnight(self._now())
                    self._guards.pause(batch.appid, str(batch.channel), until=until, reason="daily_cap")
                    raise _Later((until - self._now()).total_seconds(), "daily template cap reached")
            else:
                credit = self._guards.consume_credit(
                    batch.appid, recipient.openid, batch.content.template_id, mid
                )
                if credit is CreditOutcome.NONE:
                    return self._finish(
                        message, MessageState.SKIPPED, reason="no_subscription_credit", values=values
                    )

        def undo_guards(*, refund: bool) -> None:
            if batch.channel is Channel.TEMPLATE:
                if take_over is None:
                    self._guards.release_daily(batch.appid, TEMPLATE_DAILY_COUNTER, day=day)
                if reservation is not None and refund:
                    self._guards.release_repeat(reservation)
            elif refund:
                self._guards.refund_credit(batch.appid, recipient.openid, batch.content.template_id, mid)

        # Everything that can fail without WeChat having sent anything happens before the claim,
        # so a claimed message that is found later really was interrupted during the send call.
        try:
            self._wait_for_permit(batch.appid, batch.channel)
            token = self._tokens.get(batch.appid)
        except _Later:
            undo_guards(refund=False)
            raise
        except AccountStopped as exc:
            undo_guards(refund=False)
            raise self._stop_account(batch, exc) from exc
        except RetryLater as exc:
            undo_guards(refund=False)
            raise _Later(backoff_seconds(message.attempts + 1, exc), exc.reason) from exc

        claim = secrets.token_hex(8)
        try:
            claimed = self._ledger.claim(
                mid, token=claim, now=self._now(), take_over=take_over, gate=_gate(batch)
            )
        except BroadcastClosed:
            if take_over is not None:
                # An earlier attempt was on the wire and may have been delivered: never "not sent".
                return self._finish(
                    message,
                    MessageState.UNKNOWN,
                    claim=take_over,
                    reason="interrupted_during_send",
                    detail="the broadcast was cancelled after an attempt that may have been delivered",
                    values=values,
                )
            undo_guards(refund=True)
            return self._cancelled(message, values)
        if not claimed:
            return self._reload(mid)  # another delivery of this record holds it
        payload = wechat_payload(
            recipient.openid,
            batch.content,
            rendering,
            batch.channel,
            client_msg_id=mid if batch.channel is Channel.TEMPLATE else None,
        )

        def fail(exc: WeChatApiError, state: MessageState = MessageState.FAILED) -> Message:
            return self._finish(
                message,
                state,
                claim=claim,
                reason=exc.reason,
                detail=str(exc),
                errcode=exc.errcode,
                values=values,
            )

        try:
            msgid = self._call(batch.appid, batch.channel, payload, token)
        except RecipientRejected as exc:
            # The ledger first: a failing side effect must not leave the message claimed.
            finished = fail(exc)
            if exc.errcode == 43004:
                self._followers.set_following(batch.appid, recipient.openid, following=False, at=self._now())
            if exc.errcode == 43101:
                self._guards.clear_credits(batch.appid, recipient.openid, batch.content.template_id)
            undo_guards(refund=exc.errcode != 43101)
            return finished
        except SendRejected as exc:
            finished = fail(exc)
            undo_guards(refund=True)
            return finished
        except AccountStopped as exc:
            self._ledger.finish(
                mid,
                state=MessageState.QUEUED,
                now=self._now(),
                claim_token=claim,
                tally=_gate(batch),
                count_attempt=False,
            )
            undo_guards(refund=False)
            raise self._stop_account(batch, exc) from exc
        except RetryLater as exc:
            # Only a send call that may have reached WeChat is "maybe sent"; a token refresh is not.
            maybe_sent = isinstance(exc, TransportError) and exc.request_sent and exc.path in SEND_PATHS
            if maybe_sent and batch.channel is Channel.SUBSCRIBE:
                # bizsend has no idempotency key: WeChat may have sent it; never send it again.
                return fail(exc, MessageState.UNKNOWN)
            attempts = message.attempts + 1
            if attempts >= self._policy.max_attempts:
                if maybe_sent or message.maybe_sent:
                    return fail(exc, MessageState.UNKNOWN)
                finished = fail(exc)
                undo_guards(refund=True)
                return finished
            self._ledger.finish(
                mid,
                state=MessageState.QUEUED,
                now=self._now(),
                claim_token=claim,
                tally=_gate(batch),
                maybe_sent=maybe_sent,
                maybe_delta=1 if maybe_sent and not message.maybe_sent else 0,
            )
            if not (maybe_sent or message.maybe_sent):
                undo_guards(refund=False)
            raise _Later(backoff_seconds(attempts, exc), exc.reason) from exc
        finished = self._finish(message, MessageState.SENT, claim=claim, wechat_msgid=msgid, values=values)
        logger.info(
            "message sent", channel=str(batch.channel), openid=mask_openid(recipient.openid), msgid=msgid
        )
        return finished

    def _stop_account(self, batch: MessageBatch, exc: AccountStopped) -> _Later:
        """45009 pauses the account until the next China midnight, other stops for a while."""
        now = self._now()
        until = (
            next_china_midnight(now)
            if exc.errcode == 45009
            else now + timedelta(seconds=self._policy.pause_seconds)
        )
        # The access token is the account's, not the channel's: a stop there blocks both channels.
        channels = list(Channel) if exc.path == STABLE_TOKEN_PATH else [batch.channel]
        for channel in channels:
            self._guards.pause(batch.appid, str(channel), until=until, reason=exc.reason)
        logger.warning(
            "account sending paused", appid=batch.appid, reason=exc.reason, until=until.isoformat()
        )
        return _Later((until - now).total_seconds(), exc.reason)

    def _resend_unsafe(self, message: Message) -> bool:
        """A template message an earlier attempt may have delivered is resent only while WeChat
        still dedupes its client_msg_id (measured from the first claim, never reset)."""
        if not message.maybe_sent or message.first_claimed_at is None:
            return False
        return (self._now() - message.first_claimed_at).total_seconds() >= CLIENT_MSG_ID_SAFE_SECONDS

    def _stale_claim(self, message: Message) -> tuple[str | None, bool]:
        """(claim token to take over, done). Left `sending` by a dead instance: a template
        message is taken over while its client_msg_id still dedupes; otherwise it is `unknown`."""
        state, token, claimed_at = self._ledger.claim_info(message.message_id)
        if state in TERMINAL_STATES:
            return None, True
        if state is not MessageState.SENDING or token is None:
            return None, False  # released meanwhile: start again as a queued message
        age = (self._now() - claimed_at).total_seconds() if claimed_at else float("inf")
        if age < self._policy.claim_seconds:
            raise _Later(self._policy.claim_seconds - age + 1, "another delivery is sending it")
        first = message.first_claimed_at or claimed_at
        since_first = (self._now() - first).total_seconds() if first else float("inf")
        if message.channel is Channel.TEMPLATE and since_first < CLIENT_MSG_ID_SAFE_SECONDS:
            return token, False  # WeChat still dedupes the same client_msg_id: resending is safe
        self._ledger.finish(
            message.message_id,
            state=MessageState.UNKNOWN,
            now=self._now(),
            claim_token=token,
            tally=message.origin.id if message.origin.kind is OriginKind.BROADCAST else None,
            maybe_delta=-1 if message.maybe_sent else 0,
            reason="interrupted_during_send",
            detail="the sender stopped during the WeChat call; not resent (no idempotency key)",
        )
        return None, True

    def _wait_for_permit(self, appid: str, channel: Channel) -> None:
        deadline = self._clock() + self._policy.permit_wait_seconds
        while True:
            now = self._clock()
            if self._guards.take_rate_permit(
                appid, str(channel), per_second=self._policy.rate_per_second, now=now
            ):
                return
            if now >= deadline:
                # Each return to the queue counts towards maxReceiveCount: come back later.
                raise _Later(5.0 + secrets.randbelow(10_000) / 1000, "rate limit")
            # The next one-second window, with jitter so waiting threads do not collide.
            self._sleep(1.0 - (now % 1.0) + secrets.randbelow(50) / 1000)

    def _call(self, appid: str, channel: Channel, payload: dict[str, Any], token: str) -> str | None:
        send = self._wechat.send_template if channel is Channel.TEMPLATE else self._wechat.bizsend
        try:
            return send(token, payload)
        except TokenInvalid:
            # Someone rotated the token: the broker re-reads or refreshes once; we retry once.
            fresh = self._tokens.after_invalid(appid, token)
        try:
            return send(fresh, payload)
        except TokenInvalid as again:
            # Still rotating somewhere: not this message's fault, try again later.
            raise RetryLater(again.errcode, again.errmsg, path=again.path, reason="token_rotating") from again

    def _finish(
        self,
        message: Message,
        state: MessageState,
        *,
        claim: str | None = None,
        reason: str | None = None,
        detail: str | None = None,
        errcode: int | None = None,
        wechat_msgid: str | None = None,
        values: dict[str, str] | None = None,
    ) -> Message:
        self._ledger.finish(
            message.message_id,
            state=state,
            now=self._now(),
            tally=message.origin.id if message.origin.kind is OriginKind.BROADCAST else None,
            maybe_delta=-1 if message.maybe_sent and state in TERMINAL_STATES else 0,
            claim_token=claim,
            reason=reason,
            detail=detail[:500] if detail else None,
            errcode=errcode,
            wechat_msgid=wechat_msgid,
            values=values,
            appid=message.appid,
        )
        return self._reload(message.message_id)

    def _gate_open(self, broadcast_id: str) -> bool:
        """Whether the broadcast still sends; read at most once a second per broadcast (the
        claim itself is the authoritative check)."""
        now = time.monotonic()
        with self._pool_lock:
            cached = self._gates.get(broadcast_id)
        if cached is not None and now - cached[1] < GATE_CACHE_SECONDS:
            return cached[0]
        is_open = self._ledger.broadcast_sending(broadcast_id)
        with self._pool_lock:
            self._gates[broadcast_id] = (is_open, now)
        return is_open

    def _cancelled(self, message: Message, values: dict[str, str]) -> Message:
        if message.maybe_sent:
            # An earlier attempt may have been delivered: WeChat may have it, so never "not sent".
            return self._finish(
                message,
                MessageState.UNKNOWN,
                reason="maybe_sent_before_cancel",
                detail="cancelled while an attempt that may have been delivered waited for its retry",
                values=values,
            )
        return self._finish(
            message,
            MessageState.SKIPPED,
            reason="broadcast_cancelled",
            detail="the broadcast was cancelled before this message was sent",
            values=values,
        )

    def _reload(self, message_id: str) -> Message:
        message = self._ledger.get(message_id)
        if message is None:  # pragma: no cover - the record was created above
            raise InvalidInput("message vanished", reason="internal_error", status=500)
        return message


@dataclass(frozen=True)
class _BatchContext:
    batch: MessageBatch
    account: Account
    template: Template | None


def _gate(batch: MessageBatch) -> str | None:
    return batch.origin.id if batch.origin.kind is OriginKind.BROADCAST else None


def _lint_level(account: Account) -> LintLevel:
    return account.compliance_lint
