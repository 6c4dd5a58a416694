"""Operator API: accounts, followers, templates, keyword checks, previews and single sends.
IAM-authorised when deployed."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Annotated, Any

from api_errors import JSON_BODY, UNKNOWN_ACCOUNT, WECHAT, responses
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from broadcasts_routes import router as broadcasts_router
from followers_routes import router as followers_router
from wxreach import container
from wxreach.errors import NotFound, WxReachError
from wxreach.observability import logger, metrics, tracer
from wxreach.reach.accounts import APPID_PATTERN, Account, AccountRegistration
from wxreach.reach.compliance import LintFinding, LintLevel
from wxreach.reach.followers import Follower
from wxreach.reach.keyword_check import KeywordCheckRequest, KeywordCheckResponse, check_items
from wxreach.reach.messages import (
    MESSAGE_ID_PATTERN,
    ORIGIN_ID_PATTERN,
    Message,
    MessageBatch,
    Origin,
    OriginKind,
    Recipient,
)
from wxreach.reach.rendering import JumpTarget, MessageContent
from wxreach.reach.templates import Template
from wxreach.wechat.errcodes import RetryLater, WeChatApiError
from wxreach.wechat.identifiers import OPENID_PATTERN, TEMPLATE_ID_PATTERN
from wxreach.wechat.keywords import Channel, describe_rule

app = APIGatewayRestResolver(enable_validation=True)
app.include_router(broadcasts_router)
app.include_router(followers_router)


AppId = Annotated[str, Path(pattern=APPID_PATTERN, description="The account's AppID")]
OpenId = Annotated[str, Path(pattern=OPENID_PATTERN, description="A follower's openid")]


MessageId = Annotated[str, Path(pattern=MESSAGE_ID_PATTERN, description="A message id (m + 31 hex)")]
TemplateId = Annotated[str, Path(pattern=TEMPLATE_ID_PATTERN, description="template_id / priTmplId")]
MAX_PREVIEW_SAMPLES = 20


class AccountPage(BaseModel):
    accounts: list[Account]
    next: str | None = None


class TemplateSyncResult(BaseModel):
    channel: Channel
    stored: int
    removed: int


class TemplateSyncResponse(BaseModel):
    results: list[TemplateSyncResult]


class TemplateList(BaseModel):
    templates: list[Template]


class TemplateDetail(Template):
    rules: dict[str, str] = Field(description="Each keyword's value rule, in words")


class PreviewRequest(BaseModel):
    channel: Channel
    content: MessageContent
    samples: list[Recipient] = Field(min_length=1, max_length=MAX_PREVIEW_SAMPLES)


class PreviewSample(BaseModel):
    openid: str
    values: dict[str, str]
    violations: list[str]
    missing_params: list[str]
    warnings: list[str]
    lint: list[LintFinding]
    jump: JumpTarget
    would_send: bool


class PreviewResponse(BaseModel):
    template: Template
    lint_level: LintLevel
    samples: list[PreviewSample]


class SendRequest(BaseModel):
    channel: Channel
    openid: str = Field(pattern=OPENID_PATTERN)
    content: MessageContent
    params: dict[str, Any] = Field(default_factory=dict, description="Customer parameters for {{name}}")
    request_id: str | None = Field(
        default=None,
        pattern=ORIGIN_ID_PATTERN,
        description="Idempotency key: the same request_id never sends twice (one is generated when absent)",
    )
    dry_run: bool = Field(
        default=False, description="Render, validate and apply the guards read-only; send nothing"
    )


class SendResponse(BaseModel):
    message: Message
    dry_run: bool = False
    queued: bool = Field(
        default=False, description="WeChat or a guard asked to wait: the send queue finishes it"
    )


@app.post(
    "/accounts",
    summary="Register an Official Account",
    responses=responses(JSON_BODY, {400: "missing_aes_key", 409: "account_exists"}, ok={201: "Created"}),
)
def create_account(registration: AccountRegistration) -> Response[Account]:
    account = container.register_account(registration)
    logger.info("account registered", appid=account.appid)
    return Response(status_code=201, content_type=content_types.APPLICATION_JSON, body=account)


@app.get("/accounts", summary="List accounts", responses=responses())
def list_accounts(
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    after: Annotated[str | None, Query(pattern=APPID_PATTERN)] = None,
) -> AccountPage:
    accounts, next_key = container.accounts().list(limit=limit, after=after)
    return AccountPage(accounts=accounts, next=next_key)


@app.get(
    "/accounts/<appid>",
    summary="Get an account (secrets are never returned)",
    responses=responses(UNKNOWN_ACCOUNT),
)
def get_account(appid: AppId) -> Account:
    return container.accounts().get(appid)


@app.get(
    "/accounts/<appid>/followers/<openid>",
    summary="Follower state and subscription credits",
    responses=responses(UNKNOWN_ACCOUNT, {404: "unknown_follower"}),
)
def get_follower(appid: AppId, openid: OpenId) -> Follower:
    container.accounts().get(appid)
    follower = container.followers().get(appid, openid)
    if follower is None:
        raise NotFound("no record of this follower", reason="unknown_follower")
    return follower


@app.post(
    "/keywords/check",
    summary="Check keyword values against WeChat's rules (up to 1 000)",
    responses=responses(JSON_BODY),
)
def check_keywords(request: KeywordCheckRequest) -> KeywordCheckResponse:
    return check_items(request)


@app.post(
    "/accounts/<appid>/templates/sync",
    summary="Sync the account's templates from WeChat",
    responses=responses(UNKNOWN_ACCOUNT, WECHAT),
)
def sync_templates(appid: AppId) -> TemplateSyncResponse:
    container.accounts().get(appid)
    results = container.template_service().sync(appid)
    return TemplateSyncResponse(
        results=[TemplateSyncResult(channel=r.channel, stored=r.stored, removed=r.removed) for r in results]
    )


@app.get(
    "/accounts/<appid>/templates",
    summary="List the account's synced templates",
    responses=responses(UNKNOWN_ACCOUNT),
)
def list_templates(appid: AppId, channel: Annotated[Channel | None, Query()] = None) -> TemplateList:
    container.accounts().get(appid)
    return TemplateList(templates=container.template_service().list(appid, channel))


@app.get(
    "/accounts/<appid>/templates/<channel>/<template_id>",
    summary="One template: keywords with types and rules",
    responses=responses(UNKNOWN_ACCOUNT, {404: "unknown_template"}),
)
def get_template(appid: AppId, channel: Channel, template_id: TemplateId) -> TemplateDetail:
    container.accounts().get(appid)
    template = container.template_service().get(appid, channel, template_id)
    if template is None:
        raise NotFound("no such template on this account (sync first?)", reason="unknown_template")
    return TemplateDetail(
        **template.model_dump(), rules={k.name: describe_rule(k.type, channel) for k in template.keywords}
    )


@app.post(
    "/accounts/<appid>/messages/preview",
    summary="Final values, violations and lint for samples",
    # An unknown template is looked for on WeChat once: its refusal is the answer.
    responses=responses(JSON_BODY, UNKNOWN_ACCOUNT, {404: "unknown_template"}, WECHAT),
)
def preview_message(appid: AppId, request: PreviewRequest) -> PreviewResponse:
    account = container.accounts().get(appid)
    template, results = container.send_service().preview(
        appid, request.channel, request.content, request.samples
    )
    if template is None:
        raise NotFound("no such template on this account, even after a sync", reason="unknown_template")
    return PreviewResponse(
        template=template,
        lint_level=account.compliance_lint,
        samples=[PreviewSample(**vars(result)) for result in results],
    )


@app.post(
    "/accounts/<appid>/messages",
    summary="Send one message to one openid, synchronously (or a dry run)",
    responses=responses(
        JSON_BODY,
        UNKNOWN_ACCOUNT,
        {
            502: "wechat_error (WeChat refused the call)",
            503: "wechat_error (a dry run), or WeChat's reason the send could not start (system_busy, …)",
        },
        ok={
            200: "Sent (the message says how WeChat answered), or the dry run's outcome",
            202: "Accepted: WeChat asked to wait; the send queue finishes it",
        },
    ),
)
def send_message(appid: AppId, request: SendRequest) -> Response[SendResponse]:
    container.accounts().get(appid)
    batch = MessageBatch(
        appid=appid,
        channel=request.channel,
        origin=Origin(kind=OriginKind.SINGLE, id=request.request_id or uuid.uuid4().hex),
        content=request.content,
        recipients=[Recipient(openid=request.openid, params=request.params)],
    )
    service = container.send_service()
    if request.dry_run:
        (message,) = service.dry_run(batch)
        return _json(200, SendResponse(message=message, dry_run=True))
    messages, queued = service.send_now(batch)
    return _json(202 if queued else 200, SendResponse(message=messages[0], queued=queued))


@app.get(
    "/accounts/<appid>/messages/<message_id>",
    summary="A message's record and state",
    responses=responses({404: "unknown_message"}),
)
def get_message(appid: AppId, message_id: MessageId) -> Message:
    message = container.send_service().get_message(appid, message_id)
    if message is None:
        raise NotFound("no such message on this account", reason="unknown_message")
    return message


def _json(status: int, body: BaseModel) -> Response[Any]:
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body=body.model_dump(mode="json")
    )


@app.exception_handler(WeChatApiError)
def wechat_error(exc: WeChatApiError) -> Response:
    # WeChat's answer, not our failure: 503 when it asks to retry later, 502 otherwise.
    return Response(
        status_code=503 if isinstance(exc, RetryLater) else 502,
        content_type=content_types.APPLICATION_JSON,
        body={"error": "wechat_error", "reason": exc.reason, "errcode": exc.errcode, "message": str(exc)},
    )


@app.exception_handler(WxReachError)
def domain_error(exc: WxReachError) -> Response:
    return Response(
        status_code=exc.status,
        content_type=content_types.APPLICATION_JSON,
        body={"error": exc.reason, "message": exc.message},
    )


@app.not_found
def no_route(_: Exception) -> Response:
    # API Gateway routed it, so a path parameter holds characters the resolver's routes do not take.
    return Response(
        status_code=404,
        content_type=content_types.APPLICATION_JSON,
        body={"error": "not_found", "message": "no route takes this path; check its parameters"},
    )


def _media_type() -> str:
    headers = {k.lower(): v for k, v in (app.current_event.headers or {}).items()}
    return headers.get("content-type", "").split(";")[0].strip().lower()


def _unsupported_media_type() -> Response:
    return Response(
        status_code=415,
        content_type=content_types.APPLICATION_JSON,
        body={"error": "unsupported_media_type", "message": "send JSON with content-type: application/json"},
    )


@app.exception_handler(RequestUnsupportedContentType)
def not_json(_: RequestUnsupportedContentType) -> Response:
    # text/plain and the other types Powertools does not parse: not its own {statusCode, detail}.
    return _unsupported_media_type()


@app.exception_handler(RequestValidationError)
def invalid_request(exc: RequestValidationError) -> Response:
    if app.current_event.body and _media_type() not in ("", "application/json"):
        # A form-encoded body (curl -d without a content type) reads as "every field missing".
        return _unsupported_media_type()
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


def _unreadable_body(event: dict[str, Any]) -> dict[str, Any] | None:
    """A JSON body Python cannot hold (nesting too deep, a number over 4 300 digits, a lone
    surrogate) is the caller's 400, before the resolver trips over it. Plain syntax errors are
    left to the resolver's validation (422 / 415)."""
    body = event.get("body")
    if not body:
        return None
    try:
        raw = base64.b64decode(body) if event.get("isBase64Encoded") else body
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        return None
    except (ValueError, RecursionError, binascii.Error):
        parsed = _UNREADABLE
    if parsed is not _UNREADABLE:
        try:
            json.dumps(parsed, ensure_ascii=False).encode("utf-8")
            return None
        except (ValueError, RecursionError):
            pass
    return {
        "statusCode": 400,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(
            {
                "error": "malformed_json",
                "message": "the body is not JSON wxreach can read (nesting, size or text)",
            }
        ),
    }


_UNREADABLE = object()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    refused = _unreadable_body(event)
    if refused is not None:
        return refused
    return app.resolve(event, context)
