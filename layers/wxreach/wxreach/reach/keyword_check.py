"""POST /keywords/check: values checked before anything is sent (a form, a CSV import)."""

from __future__ import annotations

from pydantic import BaseModel, Field, StrictFloat, StrictInt, StrictStr

from wxreach.wechat.keywords import Channel, check_value

MAX_ITEMS = 1000


class KeywordCheckItem(BaseModel):
    type: str = Field(min_length=1, max_length=32, examples=["thing"])
    channel: Channel = Channel.TEMPLATE
    value: StrictStr | StrictInt | StrictFloat = Field(description="A JSON string or number")
    enum: list[str] | None = Field(default=None, max_length=200, description="Approved values (const, enum)")


class KeywordCheckRequest(BaseModel):
    items: list[KeywordCheckItem] = Field(min_length=1, max_length=MAX_ITEMS)


class KeywordCheckResult(BaseModel):
    valid: bool
    reason: str | None = None


class KeywordCheckResponse(BaseModel):
    results: list[KeywordCheckResult]


def check_items(request: KeywordCheckRequest) -> KeywordCheckResponse:
    results = []
    for item in request.items:
        reason = check_value(item.type, item.value, item.channel, enum=item.enum or ())
        results.append(KeywordCheckResult(valid=reason is None, reason=reason))
    return KeywordCheckResponse(results=results)
