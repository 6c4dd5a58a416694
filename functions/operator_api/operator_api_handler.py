"""Operator API: account registry and follower lookup. IAM-authorised when deployed."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from wxreach import container
from wxreach.errors import NotFound, WxReachError
from wxreach.observability import logger, metrics, tracer
from wxreach.reach.accounts import APPID_PATTERN, Account, AccountRegistration
from wxreach.reach.followers import Follower
from wxreach.wechat.identifiers import OPENID_PATTERN

app = APIGatewayRestResolver(enable_validation=True)


AppId = Annotated[str, Path(pattern=APPID_PATTERN, description="The account's AppID")]
OpenId = Annotated[str, Path(pattern=OPENID_PATTERN, description="A follower's openid")]


class AccountPage(BaseModel):
    accounts: list[Account]
    next: str | None = None


@app.post("/accounts", summary="Register an Official Account", responses={201: {"description": "Created"}})
def create_account(registration: AccountRegistration) -> Response[Account]:
    account = container.register_account(registration)
    logger.info("account registered", appid=account.appid)
    return Response(status_code=201, content_type=content_types.APPLICATION_JSON, body=account)


@app.get("/accounts", summary="List accounts")
def list_accounts(
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    after: Annotated[str | None, Query(pattern=APPID_PATTERN)] = None,
) -> AccountPage:
    accounts, next_key = container.accounts().list(limit=limit, after=after)
    return AccountPage(accounts=accounts, next=next_key)


@app.get("/accounts/<appid>", summary="Get an account (secrets are never returned)")
def get_account(appid: AppId) -> Account:
    return container.accounts().get(appid)


@app.get("/accounts/<appid>/followers/<openid>", summary="Follower state and subscription credits")
def get_follower(appid: AppId, openid: OpenId) -> Follower:
    container.accounts().get(appid)
    follower = container.followers().get(appid, openid)
    if follower is None:
        raise NotFound("no record of this follower", reason="unknown_follower")
    return follower


@app.exception_handler(WxReachError)
def domain_error(exc: WxReachError) -> Response:
    return Response(
        status_code=exc.status,
        content_type=content_types.APPLICATION_JSON,
        body={"error": exc.reason, "message": exc.message},
    )


def _media_type() -> str:
    headers = {k.lower(): v for k, v in (app.current_event.headers or {}).items()}
    return headers.get("content-type", "").split(";")[0].strip().lower()


@app.exception_handler(RequestValidationError)
def invalid_request(exc: RequestValidationError) -> Response:
    if app.current_event.body and _media_type() not in ("", "application/json"):
        # A form-encoded body (curl -d without a content type) reads as "every field missing".
        return Response(
            status_code=415,
            content_type=content_types.APPLICATION_JSON,
            body={
                "error": "unsupported_media_type",
                "message": "send JSON with content-type: application/json",
            },
        )
    # Drop the offending input values: a bad AppSecret must not be echoed back or logged.
    problems = [
        {"loc": list(err.get("loc", ())), "type": err.get("type"), "msg": err.get("msg")}
        for err in exc.errors()
    ]
    return Response(
        status_code=422,
        content_type=content_types.APPLICATION_JSON,
        body={"error": "invalid_request", "message": "request failed validation", "problems": problems},
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
