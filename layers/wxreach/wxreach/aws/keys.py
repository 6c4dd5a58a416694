"""Every DynamoDB key format of the quota table, in one place (see docs/data-model.md)."""

from __future__ import annotations

ACCOUNTS_INDEX_PK = "ACCOUNTS"
ACCOUNT_SK = "ACCOUNT"
FOLLOWER_SK = "PROFILE"


def account_pk(appid: str) -> str:
    return f"ACCT#{appid}"


def follower_pk(appid: str, openid: str) -> str:
    return f"FOLLOWER#{appid}#{openid}"


def followers_index_pk(appid: str) -> str:
    return f"FOLLOWERS#{appid}"


def subscription_sk(template_id: str) -> str:
    return f"SUB#{template_id}"


def grant_event_sk(event_key: str) -> str:
    return f"GRANTEVT#{event_key}"


def subscription_template_sk(template_id: str) -> str:
    return f"SUBTPL#{template_id}"
