"""Reconciler (scheduled): for every account, applies parked callbacks whose record appeared,
polls `/mass/get` for mass jobs that never reported, marks sent messages that never heard back
`unknown`, and settles broadcasts whose messages are all final. Reports what it changed."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from wxreach import container
from wxreach.observability import logger, metrics, tracer

COUNTED = ("unknown", "mass_polled", "parked_applied", "orphans", "broadcasts_settled")
# Left for the last account's answer and the metrics; the next run carries on.
STOP_BEFORE_TIMEOUT_SECONDS = 20.0


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    reconciler = container.reconciler()
    budget = max(1.0, context.get_remaining_time_in_millis() / 1000 - STOP_BEFORE_TIMEOUT_SECONDS)
    deadline = time.monotonic() + budget
    totals = dict.fromkeys(COUNTED, 0)
    reports = []
    after = None
    while True:
        accounts, after = container.accounts().list(limit=100, after=after)
        for account in accounts:
            report = reconciler.reconcile(account.appid, deadline=deadline)
            reports.append(report.model_dump())
            for name in COUNTED:
                totals[name] += getattr(report, name)
            if report.errors:
                logger.warning("reconcile errors", appid=account.appid, errors=report.errors)
        if after is None:
            break
    for name, value in totals.items():
        metrics.add_metric(name=f"Reconciled_{name}", unit=MetricUnit.Count, value=value)
    logger.info("reconciled", accounts=len(reports), totals=totals)
    return {"accounts": len(reports), "totals": totals, "reports": reports}
