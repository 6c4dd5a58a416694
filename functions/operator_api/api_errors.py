"""The operator API's error answers as its OpenAPI document shows them: the one body every error
has, and the `responses` a route declares (its successes, then each error status it can answer
with the `error` reasons it gives)."""

from __future__ import annotations

from http import HTTPStatus

from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel, Field

# Status → the `error` reasons a route answers it with, in words.
Reasons = dict[int, str]


class Problem(BaseModel):
    loc: list[str | int] = Field(description="Where: body / query / path, then the field")
    type: str
    msg: str


class ErrorBody(BaseModel):
    """Every error the operator function answers (the handler's exception handlers build it)."""

    error: str = Field(description="Machine-readable reason: the ones the status lists")
    message: str
    problems: list[Problem] | None = Field(default=None, description="invalid_request: what failed")
    reason: str | None = Field(default=None, description="wechat_error: WeChat's refusal, in a word")
    errcode: int | None = Field(default=None, description="wechat_error: WeChat's errcode")


class GatewayRefusal(BaseModel):
    """API Gateway's own answer when the caller's credentials are missing or refused."""

    message: str | None = None
    Message: str | None = Field(default=None, description="The spelling of an IAM policy's denial")


# Every route: the gateway's check of the caller, then the resolver's validation.
_FORBIDDEN: OpenAPIResponse = {
    "description": "Forbidden: API Gateway refused the credentials (SigV4; x-api-key on the local stack)",
    "content": {"application/json": {"model": GatewayRefusal}},
}
ALWAYS: Reasons = {422: "invalid_request (with problems)"}
JSON_BODY: Reasons = {400: "malformed_json", 415: "unsupported_media_type"}
UNKNOWN_ACCOUNT: Reasons = {404: "unknown_account"}
UNKNOWN_BROADCAST: Reasons = {404: "unknown_broadcast"}
WECHAT: Reasons = {
    502: "wechat_error (WeChat refused the call)",
    503: "wechat_error (WeChat asked to retry later, or no access token could be had)",
}


def responses(*groups: Reasons, ok: dict[int, str] | None = None) -> dict[int, OpenAPIResponse]:
    """A route's `responses`: `ok` (200 by default; the body is the route's return type, none for
    204), 403, and the error statuses of ALWAYS and `groups`, their reasons joined (a 404 also
    names not_found)."""
    answers: dict[int, OpenAPIResponse] = {
        status: {"description": description, **({"content": {}} if status == 204 else {})}
        for status, description in (ok or {200: "OK"}).items()
    }
    reasons: dict[int, list[str]] = {}
    for group in (ALWAYS, *groups):
        for status, words in group.items():
            reasons.setdefault(status, []).append(words)
    if 404 in reasons:  # every route with path parameters
        reasons[404].append("not_found (a path parameter with characters no route takes)")
    answers[403] = _FORBIDDEN
    for status in sorted(reasons):
        answers[status] = _error(status, ", ".join(reasons[status]))
    return answers


def _error(status: int, reasons: str) -> OpenAPIResponse:
    return {
        "description": f"{HTTPStatus(status).phrase}: {reasons}",
        "content": {"application/json": {"model": ErrorBody}},
    }
