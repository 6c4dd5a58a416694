"""WeChat callback endpoint: GET /wechat/{appid} (URL verification), POST (message/event push)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from wxreach import container
from wxreach.errors import WxReachError
from wxreach.observability import logger, metrics, tracer

app = APIGatewayRestResolver()


def _query() -> dict[str, str]:
    return dict(app.current_event.query_string_parameters or {})


@app.get("/wechat/<appid>")
def verify_url(appid: str) -> Response:
    echostr = container.callback_service().verify_url(appid, _query())
    return Response(status_code=200, content_type=content_types.TEXT_PLAIN, body=echostr)


@app.post("/wechat/<appid>")
def receive_push(appid: str) -> Response:
    body = (app.current_event.decoded_body or "").encode()
    fresh = container.callback_service().receive(appid, _query(), body)
    metrics.add_metric(
        name="CallbackProcessed" if fresh else "CallbackDuplicate", unit=MetricUnit.Count, value=1
    )
    # WeChat treats "success" as an acknowledgement with no passive reply.
    return Response(status_code=200, content_type=content_types.TEXT_PLAIN, body="success")


@app.exception_handler(WxReachError)
def refuse(exc: WxReachError) -> Response:
    logger.warning("callback refused", reason=exc.reason, status=exc.status)
    metrics.add_metric(name="CallbackRefused", unit=MetricUnit.Count, value=1)
    return Response(
        status_code=exc.status,
        content_type=content_types.APPLICATION_JSON,
        body={"error": exc.reason, "message": exc.message},
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    container.callback_service().register_lambda_context(context)
    return app.resolve(event, context)
