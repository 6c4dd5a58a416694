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


# -- sending (quota table) ---------------------------------------------------------------------
TOKEN_SK = "TOKEN"  # noqa: S105 - a key name, not a secret


def template_sk(template_id: str) -> str:
    """A template message template of the account (subscription ones use subscription_template_sk)."""
    return f"TPL#{template_id}"


def counter_sk(name: str, period: str) -> str:
    return f"COUNTER#{name}#{period}"


def pause_sk(channel: str) -> str:
    return f"PAUSE#{channel}"


def credit_use_sk(message_id: str) -> str:
    """Marker of one consumed subscription credit, so a consume and a refund each happen once."""
    return f"CREDITUSE#{message_id}"


def repeat_guard_sk(template_id: str, content_digest: str) -> str:
    return f"REPEAT#{template_id}#{content_digest}"


# -- ledger table ------------------------------------------------------------------------------
MESSAGE_SK = "MESSAGE"


def message_pk(message_id: str) -> str:
    return f"MSG#{message_id}"


def wechat_msgid_index_pk(appid: str, msgid: str) -> str:
    """Finds a message from WeChat's MsgID in a delivery callback (status updater)."""
    return f"WXMSG#{appid}#{msgid}"
