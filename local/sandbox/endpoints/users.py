"""Follower lists, tags, drafts and published articles (read-only views of admin-created data)."""

from __future__ import annotations

from typing import Any

from local.sandbox import limits
from local.sandbox.endpoints.common import Body, Call, Endpoint, int_field
from local.sandbox.errors import ApiError, Code
from local.sandbox.model import Account, Draft, Publication


def _page(openids: list[str], next_openid: str) -> tuple[list[str], str]:
    """10 000 per page after `next_openid`; an exhausted list answers count 0 and next_openid ""."""
    start = 0
    if next_openid:
        try:
            start = openids.index(next_openid) + 1
        except ValueError as exc:
            raise ApiError(Code.INVALID_OPENID) from exc
    page = openids[start : start + limits.USER_PAGE_SIZE]
    return page, (page[-1] if page else "")


def _listing(total: int | None, page: list[str], next_openid: str) -> dict[str, Any]:
    out: dict[str, Any] = {} if total is None else {"total": total}
    out["count"] = len(page)
    if page:  # like WeChat, `data` is absent on an empty page
        out["data"] = {"openid": page}
    out["next_openid"] = next_openid
    return out


def user_get(call: Call) -> dict[str, Any]:
    followers = [u.openid for u in call.account.followers()]
    page, next_openid = _page(followers, call.query.get("next_openid", ""))
    return _listing(len(followers), page, next_openid)


def tags_get(call: Call) -> dict[str, Any]:
    return {
        "tags": [
            {"id": tag.id, "name": tag.name, "count": len(tag.members)} for tag in call.account.tags.values()
        ]
    }


def user_tag_get(call: Call) -> dict[str, Any]:
    tag_id = int_field(call.body.get("tagid"))
    tag = call.account.tags.get(tag_id) if tag_id is not None else None
    if tag is None:
        raise ApiError(Code.INVALID_TAG_ID)
    next_openid = call.body.get("next_openid") or ""
    page, next_openid = _page(list(tag.members), str(next_openid))
    return _listing(None, page, next_openid)


def _window(body: dict[str, Any]) -> tuple[int, int, bool]:
    offset = int_field(body.get("offset", 0))
    count = int_field(body.get("count", limits.BATCHGET_MAX))
    if offset is None or count is None or count < 1 or count > limits.BATCHGET_MAX:
        raise ApiError(Code.DATA_FORMAT_ERROR)
    return offset, count, body.get("no_content") in (1, True, "1")


def _news_items(articles: list[dict[str, Any]], no_content: bool, urls: list[str] | None = None) -> list[Any]:
    items = []
    for idx, article in enumerate(articles):
        item = {k: v for k, v in article.items() if not (no_content and k == "content")}
        if urls is not None:
            item["url"] = urls[idx]
            item["is_deleted"] = False
        items.append(item)
    return items


def _newest_first(account: Account) -> tuple[list[Draft], list[Publication]]:
    drafts = sorted(account.drafts.values(), key=lambda d: d.updated_at, reverse=True)
    pubs = sorted(account.publications.values(), key=lambda p: p.updated_at, reverse=True)
    return drafts, pubs


def draft_batchget(call: Call) -> dict[str, Any]:
    offset, count, no_content = _window(call.body)
    drafts, _ = _newest_first(call.account)
    window = drafts[offset : offset + count]
    return {
        "total_count": len(drafts),
        "item_count": len(window),
        "item": [
            {
                "media_id": d.media_id,
                "content": {"news_item": _news_items(d.articles, no_content)},
                "update_time": int(d.updated_at),
            }
            for d in window
        ],
    }


def freepublish_batchget(call: Call) -> dict[str, Any]:
    offset, count, no_content = _window(call.body)
    _, pubs = _newest_first(call.account)
    window = pubs[offset : offset + count]
    return {
        "total_count": len(pubs),
        "item_count": len(window),
        "item": [
            {
                "article_id": p.article_id,
                "content": {
                    "news_item": _news_items(
                        p.articles,
                        no_content,
                        [
                            f"https://mp.weixin.sandbox.invalid/s/{p.article_id}_{i}"
                            for i in range(len(p.articles))
                        ],
                    )
                },
                "update_time": int(p.updated_at),
            }
            for p in window
        ],
    }


ENDPOINTS = [
    Endpoint("GET", "/cgi-bin/user/get", user_get, body=Body.NONE),
    Endpoint("GET", "/cgi-bin/tags/get", tags_get, body=Body.NONE),
    Endpoint("POST", "/cgi-bin/user/tag/get", user_tag_get),
    Endpoint("POST", "/cgi-bin/draft/batchget", draft_batchget),
    Endpoint("POST", "/cgi-bin/freepublish/batchget", freepublish_batchget),
]
