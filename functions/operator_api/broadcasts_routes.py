"""Operator routes for broadcasts: create, edit, list, get, estimate, dry run, publish, cancel,
preview, delete an article, audit trail, delivery report. Included by operator_api_handler (AWS_IAM)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from api_errors import JSON_BODY, UNKNOWN_ACCOUNT, UNKNOWN_BROADCAST, WECHAT, Reasons, responses
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from pydantic import BaseModel, Field, model_validator

from wxreach import container
from wxreach.reach.accounts import APPID_PATTERN
from wxreach.reach.broadcast_service import BroadcastView, DryRunResult, Estimate
from wxreach.reach.broadcasts import (
    BROADCAST_ID_PATTERN,
    ORIGIN_KEY_PATTERN,
    AuditEntry,
    Broadcast,
    BroadcastEdit,
    BroadcastInput,
    BroadcastState,
)
from wxreach.reach.messages import Recipient
from wxreach.reach.report_service import BroadcastReport
from wxreach.wechat.identifiers import OPENID_PATTERN

router = Router()

AppId = Annotated[str, Path(pattern=APPID_PATTERN, description="The account's AppID")]
BroadcastId = Annotated[str, Path(pattern=BROADCAST_ID_PATTERN, description="A broadcast id (b + 20 hex)")]
WXNAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{5,19}$"
# Refused by the account's type or the segment object's place.
ACCOUNT_RULES: Reasons = {400: "audience_not_allowed, channel_not_allowed, segment_outside_account"}
# Reading the audience: a segment object that cannot be read.
AUDIENCE: Reasons = {400: "segment_unreadable"}


class ReportFormat(StrEnum):
    CSV = "csv"


class CreateBroadcast(BroadcastInput):
    request_key: str | None = Field(
        default=None,
        pattern=ORIGIN_KEY_PATTERN,
        description="Idempotency key: the same key creates the broadcast once",
    )


class BroadcastPage(BaseModel):
    broadcasts: list[Broadcast]
    next: str | None = None


class PublishRequest(BaseModel):
    at: datetime | None = Field(default=None, description="Send at this time (ISO 8601); absent: now")
    confirm: int | None = Field(
        default=None, ge=0, description="The estimate's exact recipient count (large sends)"
    )


class PreviewRequest(BaseModel):
    openid: str | None = Field(default=None, pattern=OPENID_PATTERN)
    wxname: str | None = Field(default=None, pattern=WXNAME_PATTERN, description="WeChat ID (mass only)")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Customer parameters (template/subscribe)"
    )

    @model_validator(mode="after")
    def _someone(self) -> PreviewRequest:
        if self.openid is None and self.wxname is None:
            raise ValueError("give an openid or a wxname")
        Recipient._bounded_text(self.params)  # the same size limit as a broadcast's recipients
        return self


class DeleteArticleRequest(BaseModel):
    article_idx: int = Field(default=0, ge=0, le=8, description="1-based; 0 deletes every article")
    msg_id: str | None = Field(default=None, pattern=r"^\d{1,20}$", description="One send; absent: all")


class AuditTrail(BaseModel):
    entries: list[AuditEntry]


def _actor() -> str:
    """The IAM caller from the request context (API Gateway fills it for AWS_IAM routes)."""
    context = router.current_event.raw_event.get("requestContext") or {}
    identity = context.get("identity") or {}
    return str(identity.get("userArn") or identity.get("caller") or identity.get("apiKeyId") or "unknown")


def _json(status: int, body: BaseModel) -> Response[Any]:
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body=body.model_dump(mode="json")
    )


@router.post(
    "/accounts/<appid>/broadcasts",
    summary="Create a broadcast (draft)",
    responses=responses(
        JSON_BODY,
        UNKNOWN_ACCOUNT,
        ACCOUNT_RULES,
        ok={201: "Created (or the one this request_key created before)"},
    ),
)
def create_broadcast(appid: AppId, request: CreateBroadcast) -> Response[Broadcast]:
    spec = BroadcastInput.model_validate(request.model_dump(exclude={"request_key"}))
    broadcast = container.broadcast_service().create(
        appid, spec, actor=_actor(), request_key=request.request_key
    )
    return _json(201, broadcast)


@router.get(
    "/accounts/<appid>/broadcasts",
    summary="List broadcasts, newest first",
    responses=responses(UNKNOWN_ACCOUNT, {400: "bad_page_token"}),
)
def list_broadcasts(
    appid: AppId,
    state: Annotated[BroadcastState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    after: Annotated[str | None, Query(max_length=2048)] = None,
) -> BroadcastPage:
    broadcasts, next_key = container.broadcast_service().list_broadcasts(
        appid, state=state, limit=limit, after=after
    )
    return BroadcastPage(broadcasts=broadcasts, next=next_key)


@router.post(
    "/accounts/<appid>/broadcasts/estimate",
    summary="Estimate a proposed broadcast (nothing stored)",
    # Estimates look an unknown template up on WeChat once: its refusal is the answer.
    responses=responses(JSON_BODY, UNKNOWN_ACCOUNT, ACCOUNT_RULES, AUDIENCE, WECHAT),
)
def estimate_proposed(appid: AppId, request: BroadcastInput) -> Estimate:
    return container.broadcast_service().estimate_proposed(appid, request)


@router.get(
    "/accounts/<appid>/broadcasts/<broadcast_id>",
    summary="A broadcast with counts by state and reason",
    responses=responses(UNKNOWN_BROADCAST),
)
def get_broadcast(appid: AppId, broadcast_id: BroadcastId) -> BroadcastView:
    return container.broadcast_service().view(appid, broadcast_id)


@router.patch(
    "/accounts/<appid>/broadcasts/<broadcast_id>",
    summary="Edit a draft or scheduled broadcast",
    responses=responses(
        JSON_BODY,
        UNKNOWN_BROADCAST,
        {400: "invalid_broadcast"},
        ACCOUNT_RULES,
        {
            400: "time_in_past",
            409: "not_editable, not_scheduled, scheduled_content_fixed, concurrent_change",
        },
    ),
)
def edit_broadcast(appid: AppId, broadcast_id: BroadcastId, request: BroadcastEdit) -> Broadcast:
    return container.broadcast_service().edit(appid, broadcast_id, request, actor=_actor())


@router.delete(
    "/accounts/<appid>/broadcasts/<broadcast_id>",
    summary="Delete a draft",
    responses=responses(
        UNKNOWN_BROADCAST, {409: "not_a_draft, concurrent_change"}, ok={204: "Deleted (no body)"}
    ),
)
def delete_broadcast(appid: AppId, broadcast_id: BroadcastId) -> Response[None]:
    container.broadcast_service().delete(appid, broadcast_id, actor=_actor())
    return Response(status_code=204)


@router.post(
    "/accounts/<appid>/broadcasts/<broadcast_id>/estimate",
    summary="Exact recipients and exclusions",
    responses=responses(UNKNOWN_BROADCAST, AUDIENCE, WECHAT),
)
def estimate_broadcast(appid: AppId, broadcast_id: BroadcastId) -> Estimate:
    return container.broadcast_service().estimate(appid, broadcast_id)


@router.post(
    "/accounts/<appid>/broadcasts/<broadcast_id>/dry-run",
    summary="Who would get what, and who is skipped and why, as an S3 report; sends nothing",
    responses=responses(UNKNOWN_BROADCAST, AUDIENCE, WECHAT),
)
def dry_run_broadcast(appid: AppId, broadcast_id: BroadcastId) -> DryRunResult:
    return container.broadcast_service().dry_run(appid, broadcast_id, actor=_actor())


@router.post(
    "/accounts/<appid>/broadcasts/<broadcast_id>/publish",
    summary="Send now or at a time (large sends need confirm)",
    responses=responses(
        JSON_BODY,
        UNKNOWN_BROADCAST,
        {400: "unknown_template, time_in_past"},
        AUDIENCE,
        {
            409: "not_a_draft, too_few_recipients, exceeds_daily_cap, confirmation_required, "
            "confirmation_mismatch, concurrent_change"
        },
        WECHAT,
        ok={202: "Sending or scheduled"},
    ),
)
def publish_broadcast(
    appid: AppId, broadcast_id: BroadcastId, request: PublishRequest
) -> Response[Broadcast]:
    broadcast = container.broadcast_service().publish(
        appid, broadcast_id, actor=_actor(), at=request.at, confirm=request.confirm
    )
    return _json(202, broadcast)


@router.post(
    "/accounts/<appid>/broadcasts/<broadcast_id>/cancel",
    summary="Cancel; the answer says exactly how many were sent before and how many never will be",
    # A draft's or scheduled broadcast's "never will be" is its estimate, which may consult WeChat.
    responses=responses(UNKNOWN_BROADCAST, {409: "already_final, concurrent_change"}, WECHAT),
)
def cancel_broadcast(appid: AppId, broadcast_id: BroadcastId) -> Broadcast:
    return container.broadcast_service().cancel(appid, broadcast_id, actor=_actor())


@router.post(
    "/accounts/<appid>/broadcasts/<broadcast_id>/preview",
    summary="Send to one follower: /mass/preview for mass, a real send for template/subscribe",
    responses=responses(
        JSON_BODY,
        UNKNOWN_BROADCAST,
        {
            400: "openid_required; mass: WeChat's refusal (not_following, invalid_media_id, …)",
            429: "rate_limit (mass calls at their per-minute limit)",
            502: "wechat_error",
            503: "WeChat's reason the send or the mass call could not go now (system_busy, …)",
        },
    ),
)
def preview_broadcast(appid: AppId, broadcast_id: BroadcastId, request: PreviewRequest) -> dict[str, Any]:
    return container.broadcast_service().preview(
        appid, broadcast_id, openid=request.openid, wxname=request.wxname, params=request.params
    )


@router.post(
    "/accounts/<appid>/broadcasts/<broadcast_id>/articles/delete",
    summary="Delete a sent article (/mass/delete); article_idx 0 = all",
    responses=responses(
        JSON_BODY,
        UNKNOWN_BROADCAST,
        {
            400: "not_mass, not_an_article, or WeChat's refusal (invalid_media_id, …)",
            404: "unknown_msg_id",
            409: "not_sent",
            503: "WeChat's reason the call could not go now (system_busy, token_unavailable, …)",
        },
    ),
)
def delete_article(appid: AppId, broadcast_id: BroadcastId, request: DeleteArticleRequest) -> Broadcast:
    return container.broadcast_service().delete_article(
        appid, broadcast_id, article_idx=request.article_idx, msg_id=request.msg_id, actor=_actor()
    )


@router.get(
    "/accounts/<appid>/broadcasts/<broadcast_id>/audit",
    summary="Who did what, when",
    responses=responses(UNKNOWN_BROADCAST),
)
def audit_trail(appid: AppId, broadcast_id: BroadcastId) -> AuditTrail:
    return AuditTrail(entries=container.broadcast_service().audit_trail(appid, broadcast_id))


@router.get(
    "/accounts/<appid>/broadcasts/<broadcast_id>/report",
    summary="Delivery report: counts, failure reasons with examples, delivery over time, CSV export",
    responses=responses(UNKNOWN_BROADCAST),
)
def broadcast_report(
    appid: AppId,
    broadcast_id: BroadcastId,
    bucket_seconds: Annotated[
        int | None, Query(ge=60, le=86400, description="Timeline bucket width (default: at most 48 buckets)")
    ] = None,
    export: Annotated[
        ReportFormat | None, Query(description="`csv`: also write per-recipient outcomes to S3")
    ] = None,
) -> BroadcastReport:
    return container.report_service().report(
        appid, broadcast_id, bucket_seconds=bucket_seconds, export=export is ReportFormat.CSV
    )
