"""Checks of the project's wiring: template security rules and generated files in sync."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from tests.support.template import ROOT, load_template

TEMPLATE = load_template()
FUNCTIONS = {
    name: res["Properties"]
    for name, res in TEMPLATE["Resources"].items()
    if res["Type"] == "AWS::Serverless::Function"
}


def _api_events(props: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: ev["Properties"] for name, ev in props.get("Events", {}).items() if ev["Type"] == "Api"}


def test_operator_routes_are_iam_authorised_and_only_the_callback_is_open() -> None:
    api = TEMPLATE["Resources"]["Api"]["Properties"]
    assert api["Auth"]["DefaultAuthorizer"] == "AWS_IAM"
    open_routes = {
        (ev["Method"], ev["Path"])
        for props in FUNCTIONS.values()
        for ev in _api_events(props).values()
        if ev.get("Auth", {}).get("Authorizer") == "NONE"
    }
    assert open_routes == {("GET", "/wechat/{appid}"), ("POST", "/wechat/{appid}")}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_function_policies_have_no_wildcard_actions_or_resources(name: str) -> None:
    for policy in FUNCTIONS[name].get("Policies", []):
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert all("*" not in action for action in actions), (name, actions)
            assert statement["Resource"] != "*", name


def test_tables_are_encrypted_on_demand_with_ttl_and_the_ledger_has_pitr() -> None:
    tables = {
        n: r["Properties"] for n, r in TEMPLATE["Resources"].items() if r["Type"] == "AWS::DynamoDB::Table"
    }
    assert set(tables) >= {"QuotaTable", "LedgerTable", "IdempotencyTable"}
    for props in tables.values():
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert props["TimeToLiveSpecification"]["Enabled"] is True
    assert tables["LedgerTable"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert tables["IdempotencyTable"]["TimeToLiveSpecification"]["AttributeName"] == "expiration"


def test_every_queue_has_a_dead_letter_queue_or_is_one() -> None:
    queues = {n: r["Properties"] for n, r in TEMPLATE["Resources"].items() if r["Type"] == "AWS::SQS::Queue"}
    dlqs = {
        q["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for q in queues.values()
        if "RedrivePolicy" in q
    }
    assert dlqs
    assert set(queues) == dlqs | {n for n, q in queues.items() if "RedrivePolicy" in q}


def test_layer_is_built_by_sam_for_python312() -> None:
    layer = TEMPLATE["Resources"]["DomainLayer"]
    assert layer["Metadata"]["BuildMethod"] == "python3.12"
    assert not (ROOT / "layers" / "wxreach" / "python").exists()


@pytest.mark.parametrize("script", ["export_layer_requirements.py", "export_openapi.py"])
def test_generated_files_are_in_sync(script: str) -> None:
    result = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(ROOT / "scripts" / script), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
