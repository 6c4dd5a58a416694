"""Logger, Tracer and Metrics for every function, configured once.

Every log line passes through a formatter that masks openids and registered secrets, so a
careless `logger.info(event)` cannot leak them.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer, single_metric
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.logging.types import PowertoolsLogRecord
from aws_lambda_powertools.metrics import MetricUnit

# WeChat openids: 28 characters of [A-Za-z0-9_-], starting with "o" for official accounts.
_OPENID = re.compile(r"(?<![A-Za-z0-9_-])o[A-Za-z0-9_-]{27}(?![A-Za-z0-9_-])")
_MIN_SECRET_LEN = 6

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secret_pattern: re.Pattern[str] | None = None


def mask_openid(openid: str) -> str:
    """A stable, non-reversible stand-in for an openid: logs stay correlatable, never identifying."""
    return "oid:" + hashlib.sha256(openid.encode()).hexdigest()[:12]


def register_secret(*values: str | None) -> None:
    """Remember secret values (AppSecret, Token, EncodingAESKey, access tokens) to scrub from logs."""
    global _secret_pattern
    fresh = {v for v in values if v and len(v) >= _MIN_SECRET_LEN} - _secrets
    if not fresh:
        return
    with _secrets_lock:
        _secrets.update(fresh)
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(s) for s in ordered))


def forget_secrets() -> None:
    """For tests: start from an empty registry so one test cannot pass on another's secrets."""
    global _secret_pattern
    with _secrets_lock:
        _secrets.clear()
        _secret_pattern = None


def scrub(text: str) -> str:
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub("***", text)
    return _OPENID.sub(lambda m: mask_openid(m.group(0)), text)


class MaskingFormatter(LambdaPowertoolsFormatter):
    def serialize(self, log: dict[str, Any] | PowertoolsLogRecord) -> str:
        return scrub(super().serialize(log))


logger = Logger(logger_formatter=MaskingFormatter())
# Patch only what a function calls: X-Ray's patch_all also imports httpx, http.client and sqlite3
# (~20 ms of cold start). Senders that call WeChat add httpx through the environment.
TRACED_MODULES = tuple(
    m.strip() for m in os.environ.get("WXREACH_TRACED_MODULES", "botocore").split(",") if m.strip()
)
tracer = Tracer(patch_modules=TRACED_MODULES)
metrics = Metrics()

# Signals about WeChat itself, alarmed across every function (template.yaml, docs/operations.md).
WECHAT_BUSY_METRIC = "WeChatBusy"
TOKEN_REFRESH_FAILED_METRIC = "TokenRefreshFailed"  # noqa: S105 (a metric name)
# Their fixed `service` dimension: with each function's own, one alarm could not cover them all.
STACK_METRICS_SERVICE = "wxreach"


def count_stack_event(name: str, **metadata: str | int | bool) -> None:
    """Counts one `name` event now, as its own EMF line in the functions' namespace: thread-safe
    (senders call WeChat from a pool), exact metadata per event, and counted even if the
    invocation later times out. Outside a function (no namespace configured) nothing is emitted."""
    namespace = metrics.provider.namespace
    if not namespace:
        return
    with single_metric(
        name=name,
        unit=MetricUnit.Count,
        value=1,
        namespace=namespace,
        default_dimensions={"service": STACK_METRICS_SERVICE},
    ) as metric:
        for key, value in metadata.items():
            metric.add_metadata(key=key, value=value)
