"""Pushing events to webhooks the way WeChat does (§5.2-§5.4), off the request thread.

API handlers only build a `CallbackRecord` (signed, maybe encrypted) and enqueue it; worker threads
POST it, retry up to `retries` more times on timeout / non-2xx, and keep every attempt for the admin
API. `flush()` waits until nothing is queued or in flight, which makes tests deterministic.
"""

from __future__ import annotations

import functools
import itertools
import logging
import queue
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

from local.sandbox.clock import iso_utc

log = logging.getLogger("wxsandbox.callbacks")

_RESPONSE_SNIPPET = 200
MAX_RECORDS = 100_000  # the push log keeps the most recent pushes so a long demo cannot grow it forever


@dataclass
class CallbackRecord:
    id: int
    appid: str
    event: str  # Event name, or MsgType for user messages
    openid: str
    create_time: int
    url: str | None  # full URL with the signed query; None when the account has no webhook
    query: dict[str, str]
    xml: str  # the plaintext event, whatever the encryption mode
    body: str  # what is actually POSTed
    mode: str
    outcome: str = "pending"  # pending | delivered | failed | skipped
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "appid": self.appid,
            "event": self.event,
            "openid": self.openid,
            "create_time": self.create_time,
            "url": self.url,
            "query": self.query,
            "encryption_mode": self.mode,
            "xml": self.xml,
            "body": self.body,
            "outcome": self.outcome,
            "attempts": self.attempts,
        }


class CallbackDispatcher:
    def __init__(self, *, timeout_s: float, retries: int, retry_delay_s: float, workers: int) -> None:
        self._timeout_s = timeout_s
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        self._workers = max(1, workers)
        self._queue: queue.Queue[CallbackRecord | None] = queue.Queue()
        self._records: deque[CallbackRecord] = deque(maxlen=MAX_RECORDS)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._stopping.clear()
        for n in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"wxsandbox-callback-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=2)
        self._threads.clear()

    # producer side ---------------------------------------------------------------------------
    def next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def submit(self, record: CallbackRecord) -> None:
        with self._lock:
            self._records.append(record)
            if record.url is None:
                record.outcome = "skipped"
                return
            self._pending += 1
        self._queue.put(record)

    def flush(self, timeout_s: float) -> bool:
        """Block until every queued push has finished (delivered or given up)."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def pending(self) -> int:
        with self._lock:
            return self._pending

    def records(
        self,
        *,
        appid: str | None = None,
        event: str | None = None,
        outcome: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Matching pushes, oldest first; `limit` keeps only the most recent ones."""
        with self._lock:
            matching = [
                r
                for r in self._records
                if (appid is None or r.appid == appid)
                and (event is None or r.event == event)
                and (outcome is None or r.outcome == outcome)
            ]
            if limit is not None:
                matching = matching[-limit:] if limit else []
            return [r.to_json() for r in matching]

    def clear(self) -> None:
        """Forget history and drop queued pushes (in-flight ones finish but are no longer listed)."""
        with self._lock:
            self._records.clear()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self._done(item, "dropped")

    # worker side -----------------------------------------------------------------------------
    def _work(self) -> None:
        client: httpx.Client | None = None  # created on first push: building its TLS context is slow
        try:
            while True:
                record = self._queue.get()
                if record is None:
                    return
                if client is None:
                    client = httpx.Client(timeout=self._timeout_s, trust_env=False, verify=tls_context())
                try:
                    outcome = self._deliver(client, record)
                except Exception as exc:  # a worker must survive anything a webhook does
                    log.exception("callback %s crashed", record.id)
                    record.attempts.append({"n": len(record.attempts) + 1, "error": repr(exc)})
                    outcome = "failed"
                self._done(record, outcome)
        finally:
            if client is not None:
                client.close()

    def _done(self, record: CallbackRecord, outcome: str) -> None:
        with self._idle:
            record.outcome = outcome
            self._pending -= 1
            if not self._pending:
                self._idle.notify_all()

    def _deliver(self, client: httpx.Client, record: CallbackRecord) -> str:
        assert record.url is not None
        for n in range(1, self._retries + 2):
            if self._stopping.is_set():
                return "failed"
            started = time.monotonic()
            attempt: dict[str, Any] = {"n": n, "at": iso_utc(time.time())}
            try:
                # WeChat re-sends the identical request on retry (same timestamp, nonce and body)
                response = client.post(
                    record.url, content=record.body.encode("utf-8"), headers={"Content-Type": "text/xml"}
                )
                attempt["status"] = response.status_code
                attempt["response"] = response.text[:_RESPONSE_SNIPPET]
                ok = 200 <= response.status_code < 300
            except httpx.TimeoutException:
                attempt["error"] = f"timeout after {self._timeout_s}s"
                ok = False
            except httpx.HTTPError as exc:
                attempt["error"] = f"{type(exc).__name__}: {exc}"
                ok = False
            attempt["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
            with self._lock:
                record.attempts.append(attempt)
            if ok:
                return "delivered"
            if n <= self._retries and self._retry_delay_s > 0:
                self._stopping.wait(self._retry_delay_s)
        return "failed"


@functools.cache
def tls_context() -> ssl.SSLContext:
    # loading the CA bundle costs ~40 ms; share one context across workers and sandboxes
    return ssl.create_default_context()


def signed_url(webhook_url: str, query: dict[str, str]) -> str:
    separator = "&" if "?" in webhook_url else "?"
    return webhook_url + separator + urlencode(query)
