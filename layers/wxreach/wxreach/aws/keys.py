"""Every DynamoDB key format of the quota table, in one place (see docs/data-model.md)."""

from __future__ import annotations

import hashlib

ACCOUNTS_INDEX_PK = "ACCOUNTS"
ACCOUNT_SK = "ACCOUNT"
FOLLOWER_SK = "PROFILE"
# The follower and credit listings are split over this many index partitions (docs/data-model.md:
# 10 million followers must be written by the sync and read by the splitter in parallel). Changing
# it re-homes every follower: the value is part of the stored data.
FOLLOWER_INDEX_SHARDS = 32
FOLLOWER_SYNC_SK = "SYNC#followers"


def account_pk(appid: str) -> str:
    return f"ACCT#{appid}"


def follower_pk(appid: str, openid: str) -> str:
    return f"FOLLOWER#{appid}#{openid}"


def follower_shard(openid: str) -> int:
    """Stable across processes and Python versions (hash() is salted per process)."""
    digest = hashlib.sha256(openid.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % FOLLOWER_INDEX_SHARDS


def followers_index_pk(appid: str, shard: int) -> str:
    return f"FOLLOWERS#{appid}#{shard}"


def credits_index_pk(appid: str, template_id: str, shard: int) -> str:
    """Grant items (`SUB#<tpl>`) of one template, sharded like the followers index."""
    return f"CREDITS#{appid}#{template_id}#{shard}"


TAG_SK_PREFIX = "TAG#"


def tag_sk(tag_id: int) -> str:
    return f"{TAG_SK_PREFIX}{tag_id}"


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


def awaiting_pk(appid: str, shard: int) -> str:
    """Sent messages still waiting for their delivery callback (gsi2; the reconciler's list)."""
    return f"AWAIT#{appid}#{shard}"


def awaiting_sk(sent_epoch: int, item_id: str) -> str:
    return f"{sent_epoch:011d}#{item_id}"


def mass_awaiting_pk(appid: str) -> str:
    """Sent mass batches without MASSSENDJOBFINISH yet (gsi2; polled with /mass/get)."""
    return f"AWAITMASS#{appid}"


def parked_pk(appid: str, shard: int) -> str:
    """Delivery callbacks that matched no record yet: the reconciler retries them."""
    return f"PARKED#{appid}#{shard}"


def kept_pk(appid: str, shard: int) -> str:
    """Callbacks kept for people, not retried: unparsed, unknown kinds, orphans."""
    return f"KEPTCB#{appid}#{shard}"


def publish_pk(appid: str, publish_id: str) -> str:
    return f"PUBLISH#{appid}#{publish_id}"


PUBLISH_SK = "PUBLISH"


# -- broadcasts (ledger table) -----------------------------------------------------------------
BROADCAST_META_SK = "META"
BROADCAST_SPLIT_SK = "SPLIT"
BROADCAST_COUNTER_SHARDS = 32


def broadcast_pk(broadcast_id: str) -> str:
    return f"BCAST#{broadcast_id}"


def batch_sk(number: int) -> str:
    return f"BATCH#{number:06d}"


def broadcasts_index_pk(appid: str) -> str:
    """Lists an account's broadcasts, newest first (gsi1sk = `<created_at>#<id>`)."""
    return f"BCASTS#{appid}"


def open_broadcasts_pk(appid: str) -> str:
    """Broadcasts sending, or final with outcomes still to come (gsi2; the reconciler settles
    them). Sparse: a broadcast leaves it once every outcome is known."""
    return f"OPENBCAST#{appid}"


def broadcast_messages_pk(broadcast_id: str, shard: int) -> str:
    """A broadcast's messages (gsi3, sharded like its counters; the report reads them)."""
    return f"BMSG#{broadcast_id}#{shard}"


def broadcast_counter_sk(shard: int) -> str:
    """One of BROADCAST_COUNTER_SHARDS counter items: message outcomes by state and reason."""
    return f"COUNT#{shard}"


def audit_sk(at_iso: str, suffix: str) -> str:
    return f"AUDIT#{at_iso}#{suffix}"


# -- mass batches (ledger table; the mass sender's store) --------------------------------------
BATCH_SK_PREFIX = "BATCH#"  # every batch_sk(n); batch_recipients_sk items do not share it


def batch_recipients_sk(number: int, part: int) -> str:
    """One part of a mass batch's openids (kept apart so the batch item stays small)."""
    return f"BATCHRCPT#{number:06d}#{part:02d}"


def batch_recipients_prefix(number: int) -> str:
    return f"BATCHRCPT#{number:06d}#"


def mass_msgid_index_pk(appid: str, msg_id: str) -> str:
    """Finds a mass batch from WeChat's msg_id in MASSSENDJOBFINISH (status updater)."""
    return f"WXMASS#{appid}#{msg_id}"
