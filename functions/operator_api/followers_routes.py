"""Operator routes for the follower sync (start, progress) and tags (sync, list). Included by
operator_api_handler (AWS_IAM); errors map through its WxReachError / WeChatApiError handlers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from api_errors import UNKNOWN_ACCOUNT, WECHAT, responses
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from pydantic import BaseModel, Field

from wxreach import container
from wxreach.errors import NotFound
from wxreach.reach.accounts import APPID_PATTERN
from wxreach.reach.follower_sync import SyncJob, SyncPhase, SyncState
from wxreach.reach.followers import Tag

router = Router()

AppId = Annotated[str, Path(pattern=APPID_PATTERN, description="The account's AppID")]


class FollowerSyncView(BaseModel):
    job_id: str
    state: SyncState
    phase: SyncPhase = Field(description="list: paging WeChat's follower list; sweep: marking the unseen")
    pages: int = Field(description="Pages of up to 10 000 followers stored")
    seen: int = Field(description="Followers listed by WeChat so far")
    total: int | None = Field(description="WeChat's follower count (latest page)")
    percent: float | None
    kept: int = Field(description="Profiles a newer follow/unfollow event kept as they were")
    mark_unfollowed: bool
    marked_unfollowed: int = Field(description="Profiles not in WeChat's list, now not following")
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    error: str | None

    @classmethod
    def of(cls, job: SyncJob) -> FollowerSyncView:
        return cls(**job.model_dump(include=set(cls.model_fields) - {"percent"}), percent=job.percent)


class TagList(BaseModel):
    tags: list[Tag]


class TagSyncResponse(BaseModel):
    tags: list[Tag]
    stored: int
    removed: int = Field(description="Tags gone from WeChat, removed here")
    members_synced: bool = Field(description="Whether each follower's tags now equal WeChat's")
    added: int = Field(description="(follower, tag) memberships added")
    untagged: int = Field(description="(follower, tag) memberships removed")
    skipped_reason: str | None = Field(description="too_many_members | out_of_time when not synced")


@router.post(
    "/accounts/<appid>/followers/sync",
    summary="Start a follower sync (or get the one running)",
    responses=responses(
        UNKNOWN_ACCOUNT,
        {409: "sync_busy (the sync record kept changing)"},
        ok={202: "Accepted: the job runs in the background (or the one running)"},
    ),
)
def start_follower_sync(
    appid: AppId,
    mark_unfollowed: Annotated[
        bool, Query(description="At the end, mark profiles WeChat no longer lists as not following")
    ] = True,
) -> Response[FollowerSyncView]:
    container.accounts().get(appid)
    job = container.follower_sync_service().start(appid, mark_unfollowed=mark_unfollowed)
    return Response(
        status_code=202,
        content_type=content_types.APPLICATION_JSON,
        body=FollowerSyncView.of(job),
    )


@router.get(
    "/accounts/<appid>/followers/sync",
    summary="Progress of the latest follower sync",
    responses=responses(UNKNOWN_ACCOUNT, {404: "sync_not_found"}),
)
def follower_sync_progress(appid: AppId) -> FollowerSyncView:
    container.accounts().get(appid)
    job = container.follower_sync_service().progress(appid)
    if job is None:
        raise NotFound("no follower sync has run for this account", reason="sync_not_found")
    return FollowerSyncView.of(job)


@router.post(
    "/accounts/<appid>/tags/sync",
    summary="Sync tags and their members from WeChat",
    responses=responses(UNKNOWN_ACCOUNT, WECHAT, {503: "store_busy"}),
)
def sync_tags(appid: AppId) -> TagSyncResponse:
    container.accounts().get(appid)
    result = container.follower_sync_service().sync_tags(appid)
    return TagSyncResponse(
        tags=result.tags,
        stored=result.stored,
        removed=result.removed,
        members_synced=result.members_synced,
        added=result.added,
        untagged=result.untagged,
        skipped_reason=result.skipped_reason,
    )


@router.get(
    "/accounts/<appid>/tags",
    summary="The account's tags as last synced",
    responses=responses(UNKNOWN_ACCOUNT),
)
def list_tags(appid: AppId) -> TagList:
    container.accounts().get(appid)
    return TagList(tags=container.follower_sync_service().tags(appid))
