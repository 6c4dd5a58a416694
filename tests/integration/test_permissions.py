"""Every AWS call a handler really makes is allowed by that function's policy in template.yaml.

moto accepts any call, so a missing permission would only show up after deployment; this test
records the calls at botocore's boundary and checks them against the template.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

import operator_api_handler
import webhook_handler
from tests.integration.conftest import AwsCall, call
from tests.integration.test_sending import sqs_event, sub_batch, template_batch
from tests.integration.test_webhook import NOW, push, safe
from tests.support import wechat
from tests.support.aws import SECRETS_PREFIX, AwsWorld
from tests.support.fixtures import api_event, callback_xml
from tests.support.lambda_context import FakeLambdaContext
from tests.support.sending import SUB_TEMPLATE_ID, SendingWorld, sending_world
from tests.support.template import load_template
from wxreach.reach.messages import MessageBatch

TEMPLATE = load_template()
ACCOUNT_SECRETS = "AccountSecrets"
# What SAM's policy templates expand to (only the ones the template uses).
POLICY_TEMPLATES: dict[str, tuple[list[str], Callable[[Any], str]]] = {
    "SQSSendMessagePolicy": (
        ["sqs:SendMessage", "sqs:SendMessageBatch"],
        lambda p: p["QueueName"]["Fn::GetAtt"][0],
    ),
    "EventBridgePutEventsPolicy": (["events:PutEvents"], lambda p: p["EventBusName"]["Ref"]),
}

Grant = tuple[str, str, str | None]  # (action, logical resource, index)


def _resource(value: Any) -> tuple[str, str | None]:
    if "Fn::GetAtt" in value:
        return value["Fn::GetAtt"][0], None
    text = value["Fn::Sub"]
    if ":secret:wxreach/" in text:
        return ACCOUNT_SECRETS, None
    logical = text.split("${")[1].split(".")[0]
    return logical, text.rsplit("/index/", 1)[1] if "/index/" in text else None


def granted(function: str) -> set[Grant]:
    grants: set[Grant] = set()
    for policy in TEMPLATE["Resources"][function]["Properties"]["Policies"]:
        for name, params in policy.items():
            if name == "Statement":
                for st in params:
                    actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
                    resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
                    grants |= {(a, *_resource(r)) for a in actions for r in resources}
            else:
                actions, target = POLICY_TEMPLATES[name]
                grants |= {(a, target(params), None) for a in actions}
    return grants


def used(calls: list[AwsCall], world: AwsWorld) -> set[Grant]:
    tables = {name: logical for logical, name in world.tables.items()}
    queues = {url: logical for logical, url in world.queues.items()}
    needed: set[Grant] = set()
    for c in calls:
        if c.service == "dynamodb" and c.operation == "TransactWriteItems":
            for item in c.params["TransactItems"]:
                ((kind, body),) = item.items()
                action = {
                    "Put": "PutItem",
                    "Update": "UpdateItem",
                    "Delete": "DeleteItem",
                    "ConditionCheck": "ConditionCheckItem",
                }[kind]
                needed.add((f"dynamodb:{action}", tables[body["TableName"]], None))
        elif c.service == "dynamodb" and c.operation in ("BatchGetItem", "BatchWriteItem"):
            needed |= {(f"dynamodb:{c.operation}", tables[name], None) for name in c.params["RequestItems"]}
        elif c.service == "dynamodb":
            needed.add((f"dynamodb:{c.operation}", tables[c.params["TableName"]], c.params.get("IndexName")))
        elif c.service == "sqs":
            needed.add((f"sqs:{c.operation}", queues[c.params["QueueUrl"]], None))
        elif c.service == "events":
            buses = {e.get("EventBusName") for e in c.params["Entries"]}
            assert buses == {world.bus_name}
            needed.add((f"events:{c.operation}", "JourneyBus", None))
        elif c.service == "secretsmanager":
            name = c.params.get("SecretId") or c.params.get("Name")
            assert name.startswith(SECRETS_PREFIX)
            needed.add((f"secretsmanager:{c.operation}", ACCOUNT_SECRETS, None))
        else:
            pytest.fail(f"unexpected AWS call {c.service}:{c.operation}")
    return needed


def test_operator_api_calls_are_all_granted(
    world: AwsWorld, aws_calls: list[AwsCall], register_account: Any
) -> None:
    register_account()
    for name in ("list_accounts", "get_account", "get_follower"):
        call(operator_api_handler, api_event(name))
    missing = used(aws_calls, world) - granted("OperatorApiFunction")
    assert not missing, f"OperatorApiFunction lacks {sorted(missing)}"


def test_webhook_calls_are_all_granted(
    world: AwsWorld, aws_calls: list[AwsCall], register_account: Any
) -> None:
    register_account()
    aws_calls.clear()
    p = wechat.plaintext_push("", timestamp=NOW)
    call(webhook_handler, api_event("webhook_verify", query={**p.query, "echostr": "1"}))
    for fixture in (
        "subscribe_qrscene",
        "unsubscribe",
        "text_message",
        "subscribe_msg_popup_event",
        "subscribe_msg_change_event",
        "template_send_job_finish",
        "mass_send_job_finish",
    ):
        assert push(safe(fixture))["statusCode"] == 200
    push(wechat.safe_push(callback_xml("subscribe", CreateTime=str(NOW))))  # a duplicate
    needed = used(aws_calls, world)
    assert ("dynamodb:PutItem", "QuotaTable", None) in needed  # the grant transaction ran
    missing = needed - granted("WebhookFunction")
    assert not missing, f"WebhookFunction lacks {sorted(missing)}"


@pytest.fixture
def sending(monkeypatch: pytest.MonkeyPatch, aws_calls: list[AwsCall]) -> Iterator[SendingWorld]:
    with sending_world(monkeypatch) as world:
        aws_calls.clear()
        yield world


def _one(batch: MessageBatch) -> str:
    return batch.model_dump_json()


def test_template_sender_calls_are_all_granted(sending: SendingWorld, aws_calls: list[AwsCall]) -> None:
    import template_sender_handler

    openid = sending.followers[0]
    sending.popup_accept(openid)
    aws_calls.clear()
    template = template_batch([openid], "perm-t")
    subscribe = sub_batch([openid], "perm-s")
    url = sending.aws.queues["SendQueue"]
    sqs = boto3.client("sqs")
    sqs.send_message(QueueUrl=url, MessageBody="x")
    receipt = sqs.receive_message(QueueUrl=url)["Messages"][0]["ReceiptHandle"]
    aws_calls.clear()
    for body in (_one(template), _one(subscribe), "{not json"):
        event = sqs_event([body])
        event["Records"][0]["receiptHandle"] = receipt
        template_sender_handler.lambda_handler(event, FakeLambdaContext())
    sending.faults({"path": "/cgi-bin/message/template/send", "errcodes": {"-1": 1.0}})
    event = sqs_event([_one(template_batch([sending.followers[1]], "perm-busy"))])
    event["Records"][0]["receiptHandle"] = receipt
    template_sender_handler.lambda_handler(event, FakeLambdaContext())
    needed = used(aws_calls, sending.aws)
    assert ("dynamodb:UpdateItem", "LedgerTable", None) in needed
    assert ("sqs:ChangeMessageVisibility", "SendQueue", None) in needed
    missing = needed - granted("TemplateSenderFunction")
    assert not missing, f"TemplateSenderFunction lacks {sorted(missing)}"


def test_operator_api_sending_calls_are_all_granted(sending: SendingWorld, aws_calls: list[AwsCall]) -> None:
    openid = sending.followers[0]
    sending.popup_accept(openid)
    aws_calls.clear()
    call(operator_api_handler, api_event("sync_templates"))
    call(operator_api_handler, api_event("list_templates"))
    call(operator_api_handler, api_event("check_keywords"))
    call(operator_api_handler, api_event("preview_message"))
    body = json.loads(api_event("send_message")["body"])
    for channel, content in (
        ("template", body["content"]),
        ("subscribe", {"template_id": SUB_TEMPLATE_ID, "data": {"thing1": "x", "character_string2": "y"}}),
    ):
        sent = call(
            operator_api_handler,
            api_event(
                "send_message", body={**body, "openid": openid, "channel": channel, "content": content}
            ),
        )
        assert sent["statusCode"] == 200, sent["body"]
    sending.faults({"path": "/cgi-bin/message/template/send", "errcodes": {"-1": 1.0}})
    queued = call(
        operator_api_handler,
        api_event("send_message", body={**body, "openid": sending.followers[1], "request_id": "perm-q"}),
    )
    assert queued["statusCode"] == 202
    needed = used(aws_calls, sending.aws)
    assert ("sqs:SendMessage", "SendQueue", None) in needed
    missing = needed - granted("OperatorApiFunction")
    assert not missing, f"OperatorApiFunction lacks {sorted(missing)}"
