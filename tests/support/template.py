"""Reads template.yaml (CloudFormation short tags kept as {"Tag": value}) and builds its AWS
resources in whatever boto3 endpoint is current (moto), so test schemas cannot drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3

from local.stack import cfn

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template as the local stack reads it (short tags in their long form)."""
    return cfn.load_template(path)


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        logical: res.get("Properties", {})
        for logical, res in template["Resources"].items()
        if res["Type"] == resource_type
    }


def create_tables(template: dict[str, Any]) -> dict[str, str]:
    """Creates every AWS::DynamoDB::Table of the template; returns logical id -> table name."""
    ddb = boto3.client("dynamodb")
    names = {}
    for logical, props in resources_of_type(template, "AWS::DynamoDB::Table").items():
        name = f"test-{logical}"
        kwargs: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if props.get("GlobalSecondaryIndexes"):
            kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        ddb.create_table(**kwargs)
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        names[logical] = name
    return names
