"""WeChat callback endpoint: GET /wechat/{appid} (URL verification), POST (message/event push).

Two fixed routes of a wire protocol, not a REST API: dispatching them by hand keeps the
Event Handler's import cost out of the webhook's cold start (see docs/benchmarks.md).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field, ValidationError

from wxreach import container
from wxreach.errors import InvalidInput, WxReachError
from wxreach.observability import logger, metrics, tracer

# Every invocation needs the callback stack: load it during init.
container.load_callback_stack()


class WebhookRequest(BaseModel):
    """The parts of an API Gateway proxy event the webhook reads."""

    http_method: str = Field(alias="httpMethod")
    path_parameters: dict[str, str] = Field(alias="pathParameters")
    query: dict[str, str] | None = Field(default=None, alias="queryStringParameters")
    body: str | None = None
    is_base64_encoded: bool = Field(default=False, alias="isBase64Encoded")

    @property
    def appid(self) -> str:
        return self.path_parameters.get("appid", "")

    def raw_body(self) -> bytes:
        if not self.body:
            return b""
        return base64.b64decode(self.body) if self.is_base64_encoded else self.body.encode()


def _text(status: int, body: str) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"Content-Type": "text/plain; charset=utf-8"}, "body": body}


def _error(exc: WxReachError) -> dict[str, Any]:
    if exc.status >= 500:
        # Ours, not the caller's: WeChat retries on 5xx.
        logger.error("callback failed", reason=exc.reason, status=exc.status)
        metrics.add_metric(name="CallbackFailed", unit=MetricUnit.Count, value=1)
    else:
        logger.warning("callback refused", reason=exc.reason, status=exc.status)
        metrics.add_metric(name="CallbackRefused", unit=MetricUnit.Count, value=1)
    return {
        "statusCode": exc.status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"error": exc.reason, "message": exc.message}),
    }


def handle(request: WebhookRequest) -> dict[str, Any]:
    service = container.callback_service()
    query = request.query or {}
    if request.http_method == "GET":
        return _text(200, service.verify_url(request.appid, query))
    if request.http_method == "POST":
        fresh = service.receive(request.appid, query, request.raw_body())
        metrics.add_metric(
            name="CallbackProcessed" if fresh else "CallbackDuplicate", unit=MetricUnit.Count, value=1
        )
        # WeChat treats "success" as an acknowledgement with no passive reply.
        return _text(200, "success")
    raise InvalidInput(f"method {request.http_method} not allowed", reason="method_not_allowed", status=405)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        request = WebhookRequest.model_validate(event)
    except ValidationError:
        return _error(InvalidInput("not an API Gateway proxy event", reason="bad_request"))
    try:
        container.callback_service().register_lambda_context(context)
        return handle(request)
    except WxReachError as exc:
        return _error(exc)
