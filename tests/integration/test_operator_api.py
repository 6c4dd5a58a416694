"""Operator API on moto: account registry and follower lookup."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import boto3

import operator_api_handler
import webhook_handler
from tests.integration.conftest import call, json_body
from tests.support import wechat
from tests.support.aws import SECRETS_PREFIX, AwsWorld
from tests.support.fixtures import api_event, callback_xml
from wxreach.observability import logger


def test_register_account_stores_secrets_in_secrets_manager_only(
    world: AwsWorld, register_account: Any
) -> None:
    account = register_account()
    assert account["appid"] == wechat.APPID
    assert "secrets" not in account
    secret = boto3.client("secretsmanager").get_secret_value(SecretId=f"{SECRETS_PREFIX}{wechat.APPID}")
    stored = json.loads(secret["SecretString"])
    assert stored["app_secret"] == wechat.APP_SECRET
    assert stored["encoding_aes_key"] == wechat.AES_KEY
    items = boto3.client("dynamodb").scan(TableName=world.tables["QuotaTable"])["Items"]
    assert wechat.APP_SECRET not in json.dumps(items)
    assert wechat.TOKEN not in json.dumps(items)


def test_get_and_list_accounts_never_return_secrets(world: AwsWorld, register_account: Any) -> None:
    register_account()
    register_account(appid="wxabcdefabcdefabcd", original_id="gh_aaaaaaaaaaaa", account_type="subscription")
    got = call(operator_api_handler, api_event("get_account"))
    assert got["statusCode"] == 200
    assert json_body(got)["original_id"] == wechat.ORIGINAL_ID
    listed = call(operator_api_handler, api_event("list_accounts"))
    assert listed["statusCode"] == 200
    body = json_body(listed)
    assert sorted(a["appid"] for a in body["accounts"]) == ["wx1234567890abcdef", "wxabcdefabcdefabcd"]
    for response in (got, listed):
        assert wechat.APP_SECRET not in response["body"]
        assert wechat.AES_KEY not in response["body"]


def test_list_accounts_pages(world: AwsWorld, register_account: Any) -> None:
    appids = [f"wx{i:016d}" for i in range(3)]
    for i, appid in enumerate(appids):
        register_account(appid=appid, original_id=f"gh_00000000000{i}")
    first = json_body(call(operator_api_handler, api_event("list_accounts", query={"limit": "2"})))
    assert len(first["accounts"]) == 2
    second = json_body(
        call(operator_api_handler, api_event("list_accounts", query={"limit": "2", "after": first["next"]}))
    )
    assert [a["appid"] for a in first["accounts"] + second["accounts"]] == appids


def test_duplicate_registration_is_409(world: AwsWorld, register_account: Any) -> None:
    register_account()
    resp = call(operator_api_handler, api_event("create_account"))
    assert resp["statusCode"] == 409
    assert json_body(resp)["error"] == "account_exists"


def test_invalid_registration_is_422_and_does_not_echo_secrets(world: AwsWorld) -> None:
    body = json.loads(api_event("create_account")["body"])
    body["appid"] = "not-an-appid"
    body["secrets"]["encoding_aes_key"] = "short-secret-value"
    resp = call(operator_api_handler, api_event("create_account", body=body))
    assert resp["statusCode"] == 422
    problems = json_body(resp)["problems"]
    assert {tuple(p["loc"])[-1] for p in problems} >= {"appid", "encoding_aes_key"}
    assert "short-secret-value" not in resp["body"]
    assert world.item_count("QuotaTable") == 0


def test_safe_mode_without_aes_key_is_400(world: AwsWorld) -> None:
    body = json.loads(api_event("create_account")["body"])
    del body["secrets"]["encoding_aes_key"]
    resp = call(operator_api_handler, api_event("create_account", body=body))
    assert resp["statusCode"] == 400
    assert json_body(resp)["error"] == "missing_aes_key"


def test_unknown_account_and_follower_are_404(world: AwsWorld, register_account: Any) -> None:
    resp = call(
        operator_api_handler, api_event("get_account", path_parameters={"appid": "wx0000000000000000"})
    )
    assert resp["statusCode"] == 404
    register_account()
    resp = call(operator_api_handler, api_event("get_follower"))
    assert resp["statusCode"] == 404
    assert json_body(resp)["error"] == "unknown_follower"


def test_malformed_json_body_is_4xx(world: AwsWorld) -> None:
    event = api_event("create_account")
    event["body"] = "{not json"
    resp = call(operator_api_handler, event)
    assert 400 <= resp["statusCode"] < 500


def test_a_registration_in_flight_blocks_another_until_it_goes_stale(world: AwsWorld) -> None:
    from wxreach import container
    from wxreach.reach.accounts import Account

    container.accounts().reserve(Account(appid=wechat.APPID, original_id=wechat.ORIGINAL_ID))
    resp = call(operator_api_handler, api_event("create_account"))
    assert resp["statusCode"] == 409
    assert call(operator_api_handler, api_event("get_account"))["statusCode"] == 404  # pending is invisible

    boto3.client("dynamodb").update_item(
        TableName=world.tables["QuotaTable"],
        Key={"pk": {"S": f"ACCT#{wechat.APPID}"}, "sk": {"S": "ACCOUNT"}},
        UpdateExpression="SET reserved_at = :old",
        ExpressionAttributeValues={":old": {"N": "1"}},
    )
    assert call(operator_api_handler, api_event("create_account"))["statusCode"] == 201
    assert call(operator_api_handler, api_event("get_account"))["statusCode"] == 200


def test_secrets_read_by_the_webhook_never_reach_the_logs(world: AwsWorld, register_account: Any) -> None:
    register_account()
    stream = io.StringIO()
    handler = logger.registered_handler
    previous = handler.setStream(stream)  # the real handler and formatter, writing where we can read
    try:
        p = wechat.safe_push(callback_xml("subscribe", CreateTime=str(int(time.time()))), token="wrong0")
        resp = call(webhook_handler, api_event("webhook_push", query=p.query, body=p.body))
        logger.info("debug dump", token=wechat.TOKEN, key=wechat.AES_KEY, who=wechat.OPENID)
    finally:
        handler.setStream(previous)
    assert resp["statusCode"] == 403
    out = stream.getvalue()
    assert "callback refused" in out
    assert "debug dump" in out
    for secret in (wechat.TOKEN, wechat.AES_KEY, wechat.APP_SECRET, wechat.OPENID):
        assert secret not in out


def test_a_body_that_is_not_json_is_415_with_a_hint(world: AwsWorld) -> None:
    for content_type in ("application/x-www-form-urlencoded", "text/plain"):
        resp = call(operator_api_handler, api_event("create_account", headers={"Content-Type": content_type}))
        assert resp["statusCode"] == 415, content_type
        assert json_body(resp) == {
            "error": "unsupported_media_type",
            "message": "send JSON with content-type: application/json",
        }
    charset = api_event("create_account", headers={"Content-Type": "application/json; charset=utf-8"})
    assert call(operator_api_handler, charset)["statusCode"] == 201
