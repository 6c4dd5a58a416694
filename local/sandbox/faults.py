"""Fault and latency injection per WeChat endpoint, reproducible from the seed.

Each rule owns `random.Random(f"{seed}:{path}")`, created when the rule is set, so the n-th call to
an endpoint always gets the same outcome for the same seed, whatever other endpoints are doing.
One draw picks the outcome (errcodes, then HTTP statuses, then timeout, by cumulative probability);
a second draw picks the latency.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from local.sandbox.errors import AdminError

WILDCARD = "*"
RECENT_LATENCIES = 50  # drawn latencies kept per rule for GET /admin/faults


@dataclass(frozen=True)
class Latency:
    kind: str  # fixed | uniform
    min_ms: float
    max_ms: float

    def draw_ms(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.min_ms
        return rng.uniform(self.min_ms, self.max_ms)

    def to_json(self) -> dict[str, Any]:
        if self.kind == "fixed":
            return {"kind": "fixed", "ms": self.min_ms}
        return {"kind": "uniform", "min_ms": self.min_ms, "max_ms": self.max_ms}


@dataclass(frozen=True)
class FaultDecision:
    latency_s: float = 0.0
    errcode: int | None = None
    http_status: int | None = None
    timeout_s: float | None = None
    process_after_timeout: bool = True

    @property
    def label(self) -> str | None:
        if self.errcode is not None:
            return f"errcode:{self.errcode}"
        if self.http_status is not None:
            return f"http:{self.http_status}"
        if self.timeout_s is not None:
            return "timeout"
        return None


@dataclass
class FaultRule:
    path: str
    errcodes: dict[int, float]
    http_statuses: dict[int, float]
    timeout_rate: float
    timeout_s: float
    timeout_then: str  # process | drop
    latency: Latency | None
    rng: random.Random
    calls: int = 0
    injected: dict[str, int] = field(default_factory=dict)
    # what the latency draws gave, most recent last: tests check them against the seeded generator
    recent_latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_LATENCIES))

    def decide(self) -> FaultDecision:
        self.calls += 1
        draw = self.rng.random()
        latency_s = 0.0
        if self.latency:
            latency_ms = self.latency.draw_ms(self.rng)
            self.recent_latency_ms.append(latency_ms)
            latency_s = latency_ms / 1000
        decision = FaultDecision(latency_s=latency_s)
        edge = 0.0
        for code, rate in self.errcodes.items():
            edge += rate
            if draw < edge:
                decision = FaultDecision(latency_s=latency_s, errcode=code)
                break
        else:
            for status, rate in self.http_statuses.items():
                edge += rate
                if draw < edge:
                    decision = FaultDecision(latency_s=latency_s, http_status=status)
                    break
            else:
                if draw < edge + self.timeout_rate:
                    decision = FaultDecision(
                        latency_s=latency_s,
                        timeout_s=self.timeout_s,
                        process_after_timeout=self.timeout_then == "process",
                    )
        if decision.label:
            self.injected[decision.label] = self.injected.get(decision.label, 0) + 1
        return decision

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "errcodes": {str(k): v for k, v in self.errcodes.items()},
            "http_statuses": {str(k): v for k, v in self.http_statuses.items()},
            "timeout": {"rate": self.timeout_rate, "sleep_s": self.timeout_s, "then": self.timeout_then},
            "latency": self.latency.to_json() if self.latency else None,
            "calls": self.calls,
            "injected": self.injected,
            "recent_latency_ms": list(self.recent_latency_ms),
        }


def _rates(raw: Any, what: str, *, allowed: range | None = None) -> dict[int, float]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise AdminError(400, f"{what} must be an object of code -> probability")
    out: dict[int, float] = {}
    for key, value in raw.items():
        try:
            code = int(key)
            rate = float(value)
        except (TypeError, ValueError) as exc:
            raise AdminError(400, f"{what}: bad entry {key!r}: {value!r}") from exc
        if allowed is not None and code not in allowed:
            raise AdminError(400, f"{what}: {code} is not an HTTP error status")
        if not 0.0 <= rate <= 1.0:
            raise AdminError(400, f"{what}: probability {rate} outside 0..1")
        out[code] = rate
    # a stable order keeps the cumulative draw reproducible whatever the JSON key order was
    return dict(sorted(out.items()))


def _latency(raw: Any) -> Latency | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise AdminError(400, "latency must be an object")
    kind = raw.get("kind", "fixed")
    try:
        if kind == "fixed":
            ms = float(raw["ms"])
            latency = Latency("fixed", ms, ms)
        elif kind == "uniform":
            latency = Latency("uniform", float(raw["min_ms"]), float(raw["max_ms"]))
        else:
            raise AdminError(400, "latency.kind must be fixed or uniform")
    except (KeyError, TypeError, ValueError) as exc:
        raise AdminError(400, f"latency: {exc!r}") from exc
    if latency.min_ms < 0 or latency.max_ms < latency.min_ms:
        raise AdminError(400, "latency: need 0 <= min_ms <= max_ms")
    return latency


class FaultInjector:
    def __init__(self, seed: int | str) -> None:
        self._seed = seed
        self._rules: dict[str, FaultRule] = {}
        self._wildcard: dict[str, Any] | None = None
        self._wildcard_rules: dict[str, FaultRule] = {}  # per path, each with its own seeded rng
        self._lock = threading.Lock()

    def _build(self, spec: dict[str, Any], path: str) -> FaultRule:
        errcodes = _rates(spec.get("errcodes"), "errcodes")
        http_statuses = _rates(spec.get("http_statuses"), "http_statuses", allowed=range(400, 600))
        timeout = spec.get("timeout") or {}
        if not isinstance(timeout, dict):
            raise AdminError(400, "timeout must be an object")
        try:
            timeout_rate = float(timeout.get("rate", 0.0))
            timeout_s = float(timeout.get("sleep_s", 10.0))
        except (TypeError, ValueError) as exc:
            raise AdminError(400, f"timeout: {exc}") from exc
        timeout_then = str(timeout.get("then", "process"))
        if timeout_then not in ("process", "drop"):
            raise AdminError(400, "timeout.then must be process or drop")
        if not 0.0 <= timeout_rate <= 1.0 or timeout_s < 0:
            raise AdminError(400, "timeout: rate must be 0..1 and sleep_s >= 0")
        total = sum(errcodes.values()) + sum(http_statuses.values()) + timeout_rate
        if total > 1.0 + 1e-9:
            raise AdminError(400, f"probabilities add up to {total} > 1")
        return FaultRule(
            path=path,
            errcodes=errcodes,
            http_statuses=http_statuses,
            timeout_rate=timeout_rate,
            timeout_s=timeout_s,
            timeout_then=timeout_then,
            latency=_latency(spec.get("latency")),
            rng=random.Random(f"{self._seed}:{path}"),
        )

    def set_rule(self, spec: dict[str, Any]) -> dict[str, Any]:
        path = spec.get("path")
        if not isinstance(path, str) or not (path == WILDCARD or path.startswith("/")):
            raise AdminError(400, "path must be an endpoint path such as /cgi-bin/token, or '*'")
        rule = self._build(spec, path)  # validates even the wildcard spec up front
        with self._lock:
            if path == WILDCARD:
                self._wildcard = dict(spec)
                self._wildcard_rules.clear()
            else:
                self._rules[path] = rule
        return rule.to_json()

    def clear(self, path: str | None = None) -> None:
        with self._lock:
            if path is None or path == WILDCARD:
                self._wildcard = None
                self._wildcard_rules.clear()
            if path is None:
                self._rules.clear()
            else:
                self._rules.pop(path, None)

    def decide(self, path: str) -> FaultDecision | None:
        with self._lock:
            rule = self._rules.get(path)
            if rule is None and self._wildcard is not None:
                rule = self._wildcard_rules.get(path)
                if rule is None:
                    rule = self._wildcard_rules[path] = self._build(self._wildcard, path)
            return rule.decide() if rule else None

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "rules": [rule.to_json() for rule in self._rules.values()],
                "wildcard": self._wildcard,
                "wildcard_paths": [rule.to_json() for rule in self._wildcard_rules.values()],
            }
