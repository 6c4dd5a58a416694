"""One access token per account, shared by every instance (reference §1.2, §1.3).

Only `stable_token` is used: with `force_refresh=false` it returns the same token while it is
valid, so concurrent fetches cannot invalidate each other. The token lives in a shared store
with a lease: a conditional write lets one cold instance fetch while the others poll the store
for its result. Each container keeps it in memory until `refresh_ahead_seconds` before expiry.

On 40001/40014/42001 `after_invalid` re-reads the store (someone may have rotated it already),
then fetches normally, and only if WeChat still returns the failing token uses
`force_refresh=true` — at most 20 per China day and 30 s apart per account, counted in the store.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from wxreach.observability import TOKEN_REFRESH_FAILED_METRIC, count_stack_event, logger, register_secret
from wxreach.wechat.errcodes import TokenUnavailable, WeChatApiError

# §1.2: force_refresh is allowed 20 times per day, at least 30 s apart.
FORCE_REFRESH_PER_DAY = 20
FORCE_REFRESH_MIN_INTERVAL_SECONDS = 30.0
CHINA_UTC_OFFSET_SECONDS = 8 * 3600
# A token that already needs refreshing when fetched (refresh_ahead above WeChat's 300 s
# rotation point) is still reused this long, so instances do not refetch on every call.
MIN_REUSE_SECONDS = 60.0
# A token borrowed while another instance refreshes it is re-checked this often.
BORROW_SECONDS = 1.0
# After a failed recovery, callers with the same dead token fail fast for this long.
NEGATIVE_CACHE_SECONDS = 5.0


def china_day(unix_seconds: float) -> str:
    """WeChat counts daily limits in China time (UTC+8): the day starts at 16:00 UTC."""
    return time.strftime("%Y-%m-%d", time.gmtime(unix_seconds + CHINA_UTC_OFFSET_SECONDS))


@dataclass(frozen=True)
class StoredToken:
    """The account's token record as the store holds it (all times unix seconds)."""

    token: str | None = None
    expires_at: float | None = None
    refresh_at: float | None = None
    lease_owner: str | None = None
    lease_until: float | None = None
    force_day: str | None = None
    force_count: int = 0
    last_force_at: float | None = None

    def usable(self, now: float, *, not_token: str | None = None) -> bool:
        return bool(self.token) and self.token != not_token and (self.expires_at or 0) > now

    def fresh(self, now: float, *, not_token: str | None = None) -> bool:
        return self.usable(now, not_token=not_token) and (self.refresh_at or 0) > now


class TokenLeaseStore(Protocol):
    """The shared token record of each account (DynamoDB in production)."""

    def read(self, appid: str) -> StoredToken | None:
        """The record, strongly consistent; None when there is none."""
        ...

    def try_lease(self, appid: str, owner: str, *, now: float, until: float) -> StoredToken | None:
        """Takes the fetch lease unless another owner holds one that runs past `now` (one
        conditional write); the record as it stands afterwards, or None when someone else holds it."""
        ...

    def save(self, appid: str, owner: str, token: str, *, expires_at: float, refresh_at: float) -> bool:
        """Stores the token and releases the lease, only while `owner` holds it; False otherwise."""
        ...

    def release(self, appid: str, owner: str) -> None:
        """Gives up the lease if `owner` still holds it (a failed fetch)."""
        ...

    def record_force_refresh(
        self, appid: str, *, now: float, day: str, max_per_day: int, min_interval: float
    ) -> bool:
        """Counts one force refresh atomically, only if fewer than `max_per_day` happened on `day`
        and the last one is at least `min_interval` old; False when the limits forbid it."""
        ...


class StableTokenSource(Protocol):
    def stable_token(self, appid: str, secret: str, *, force_refresh: bool = False) -> tuple[str, int]: ...


@dataclass(frozen=True)
class _Cached:
    token: str
    expires_at: float
    recheck_at: float


class TokenBroker:
    """`get(appid)` for every call; `after_invalid(appid, token)` when WeChat said it is dead."""

    def __init__(
        self,
        *,
        store: TokenLeaseStore,
        client: StableTokenSource,
        secret_for: Callable[[str], str],
        refresh_ahead_seconds: float = 300,
        lease_seconds: float = 10,
        wait_seconds: float = 5.0,
        poll_seconds: float = 0.1,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        force_refresh_per_day: int = FORCE_REFRESH_PER_DAY,
        force_refresh_min_interval_seconds: float = FORCE_REFRESH_MIN_INTERVAL_SECONDS,
    ) -> None:
        self._store = store
        self._client = client
        self._secret_for = secret_for
        self._refresh_ahead = refresh_ahead_seconds
        self._lease_seconds = lease_seconds
        self._wait_seconds = wait_seconds
        self._poll_seconds = poll_seconds
        self._clock = clock
        self._sleep = sleep
        self._force_per_day = force_refresh_per_day
        self._force_interval = force_refresh_min_interval_seconds
        self._cache: dict[str, _Cached] = {}
        # appid → (dead token, until, reason, message) of the last failed recovery
        self._dead: dict[str, tuple[str, float, str, str]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def get(self, appid: str) -> str:
        cached = self._cache.get(appid)
        if cached is not None and self._clock() < cached.recheck_at:
            return cached.token
        with self._lock(appid):
            # Another thread of this container may have refreshed it while we waited.
            cached = self._cache.get(appid)
            if cached is not None and self._clock() < cached.recheck_at:
                return cached.token
            return self._obtain(appid, failing=None)

    def after_invalid(self, appid: str, failing_token: str) -> str:
        """A token other than `failing_token` (which WeChat answered 40001/40014/42001 to)."""
        with self._lock(appid):
            now = self._clock()
            cached = self._cache.get(appid)
            if cached is not None and cached.token != failing_token and now < cached.expires_at:
                return cached.token  # another thread already recovered
            if cached is not None and cached.token == failing_token:
                del self._cache[appid]
            dead = self._dead.get(appid)
            if dead is not None and dead[0] == failing_token and now < dead[1]:
                raise TokenUnavailable(dead[3], appid=appid, reason=dead[2])
            try:
                return self._obtain(appid, failing=failing_token)
            except TokenUnavailable as exc:
                until = self._clock() + NEGATIVE_CACHE_SECONDS
                self._dead[appid] = (failing_token, until, exc.reason, exc.errmsg)
                raise

    # -- internals ---------------------------------------------------------------------------
    def _lock(self, appid: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(appid, threading.Lock())

    def _obtain(self, appid: str, *, failing: str | None) -> str:
        deadline = self._clock() + self._wait_seconds
        while True:
            now = self._clock()
            stored = self._store.read(appid)
            if stored is not None and stored.fresh(now, not_token=failing):
                return self._keep(appid, stored)
            owner = uuid.uuid4().hex
            leased = self._store.try_lease(appid, owner, now=now, until=now + self._lease_seconds)
            if leased is not None:
                if leased.fresh(now, not_token=failing):
                    # Saved by the previous lease holder between our read and our lease.
                    self._store.release(appid, owner)
                    return self._keep(appid, leased)
                return self._fetch(appid, owner, failing=failing)
            if stored is not None and stored.usable(now, not_token=failing):
                # Still valid while the lease holder refreshes it: use it, look again soon.
                return self._keep(
                    appid, stored, recheck_at=min(now + BORROW_SECONDS, stored.expires_at or now)
                )
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise TokenUnavailable(
                    "another instance holds the token lease; no token within the wait",
                    appid=appid,
                    reason="token_wait_timeout",
                )
            self._sleep(min(self._poll_seconds, remaining))

    def _fetch(self, appid: str, owner: str, *, failing: str | None) -> str:
        saved = False
        try:
            secret = self._secret_for(appid)
            register_secret(secret)
            started = self._clock()
            token, expires_in = self._client.stable_token(appid, secret)
            forced = False
            if failing is not None and token == failing:
                # WeChat still hands out the token it refuses: only force_refresh replaces it.
                started = self._clock()
                token, expires_in = self._force_refresh(appid, secret, failing)
                forced = True
            register_secret(token)
            # From before the call, so network time never extends the token's life.
            expires_at = started + expires_in
            refresh_at = max(
                expires_at - self._refresh_ahead, min(started + MIN_REUSE_SECONDS, expires_at - 1)
            )
            saved = self._store.save(appid, owner, token, expires_at=expires_at, refresh_at=refresh_at)
            logger.info(
                "access token fetched",
                appid=appid,
                expires_in=expires_in,
                forced=forced,
                after_invalid=failing is not None,
                stored=saved,
            )
            return self._keep(appid, StoredToken(token=token, expires_at=expires_at, refresh_at=refresh_at))
        except Exception as exc:
            # Secret, WeChat or force-refresh limits: this account cannot send until a fetch works.
            count_stack_event(
                TOKEN_REFRESH_FAILED_METRIC,
                appid=appid,
                reason=exc.reason if isinstance(exc, WeChatApiError) else type(exc).__name__,
                after_invalid=failing is not None,
            )
            raise
        finally:
            if not saved:
                self._store.release(appid, owner)

    def _force_refresh(self, appid: str, secret: str, failing: str) -> tuple[str, int]:
        now = self._clock()
        allowed = self._store.record_force_refresh(
            appid,
            now=now,
            day=china_day(now),
            max_per_day=self._force_per_day,
            min_interval=self._force_interval,
        )
        if not allowed:
            logger.warning("access token force refresh refused by limits", appid=appid)
            raise TokenUnavailable(
                f"token rejected and force_refresh limited ({self._force_per_day}/day, "
                f"{self._force_interval:g} s apart)",
                appid=appid,
                reason="force_refresh_limited",
            )
        token, expires_in = self._client.stable_token(appid, secret, force_refresh=True)
        if token == failing:
            # WeChat applies the same limits and then just does not refresh (§1.2).
            raise TokenUnavailable(
                "force_refresh returned the rejected token", appid=appid, reason="force_refresh_refused"
            )
        return token, expires_in

    def _keep(self, appid: str, record: StoredToken, *, recheck_at: float | None = None) -> str:
        token, expires_at = record.token or "", record.expires_at or 0.0
        register_secret(token)
        self._cache[appid] = _Cached(
            token=token,
            expires_at=expires_at,
            recheck_at=recheck_at if recheck_at is not None else (record.refresh_at or 0.0),
        )
        return token
