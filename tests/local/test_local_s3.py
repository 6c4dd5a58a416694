"""AWS::S3::Bucket in the local stack: created in moto from the template, Ref/GetAtt resolved, and
pre-signed URLs made inside a function worker downloadable from the host."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.stack import LocalStack, StackError
from local.stack.aws import MotoEndpoint
from local.stack.cfn import TemplateError, load_template
from local.stack.model import load_sam_template
from local.stack.motoproc import MotoProcess
from local.stack.provision import Provisioner
from local.stack.s3 import bucket_name, check_bucket_name, lifecycle_rule, plan_bucket
from tests.local.conftest import stack_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_NAME = "S3Test-Stack"  # upper case on purpose: bucket names must come out lower case

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.12
    Timeout: 10
    Environment:
      Variables:
        REPORTS_BUCKET: !Ref Reports
        REPORTS_ARN: !GetAtt Reports.Arn
        REPORTS_DOMAIN: !GetAtt Reports.DomainName
        REPORTS_REGIONAL_DOMAIN: !GetAtt Reports.RegionalDomainName
        NAMED_BUCKET: !Ref Named
Resources:
  Reports:
    Type: AWS::S3::Bucket
    DeletionPolicy: Delete
    Properties:
      BucketEncryption:
        ServerSideEncryptionConfiguration:
          - ServerSideEncryptionByDefault:
              SSEAlgorithm: AES256
      PublicAccessBlockConfiguration:
        BlockPublicAcls: true
        BlockPublicPolicy: true
        IgnorePublicAcls: true
        RestrictPublicBuckets: true
      OwnershipControls:
        Rules:
          - ObjectOwnership: BucketOwnerEnforced
      VersioningConfiguration:
        Status: Enabled
      LifecycleConfiguration:
        Rules:
          - Id: ExpireDryRuns
            Status: Enabled
            Prefix: dry-runs/
            ExpirationInDays: 30
          - Id: ExpireSegments
            Status: Enabled
            Prefix: segments/
            ExpirationInDays: 90
      Tags:
        - Key: app
          Value: !Sub "${AWS::StackName}-reports"
      LoggingConfiguration: {}
  ReportsPolicy:
    Type: AWS::S3::BucketPolicy
    Properties:
      Bucket: !Ref Reports
      PolicyDocument:
        Statement:
          - Effect: Deny
            Principal: "*"
            Action: "s3:*"
            Resource: !Sub "${Reports.Arn}/*"
            Condition: {Bool: {aws:SecureTransport: "false"}}
  Named:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: !Sub "s3test-${AWS::Region}.named"
  ReportFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fns/report
      Handler: report_handler.handler
Outputs:
  ReportsBucketName:
    Value: !Ref Reports
"""

# What the broadcast code does with a dry-run report: write it, hand out a pre-signed GET URL.
REPORT_HANDLER = """\
import os

import boto3


def handler(event, context):
    s3 = boto3.client("s3")
    bucket = os.environ["REPORTS_BUCKET"]
    put = s3.put_object(Bucket=bucket, Key=event["key"], Body=event["body"].encode("utf-8"),
                        ContentType="application/x-ndjson")
    get_url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": event["key"]}, ExpiresIn=900)
    missing_url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": event["key"] + ".missing"}, ExpiresIn=900)
    put_url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": event["upload_key"]}, ExpiresIn=900)
    return {"get_url": get_url, "missing_url": missing_url, "put_url": put_url,
            "sse": put.get("ServerSideEncryption"),
            "env": {k: v for k, v in os.environ.items() if k.startswith(("REPORTS_", "NAMED_"))}}
"""


def write_app(root: Path) -> Path:
    files = {"template.yaml": TEMPLATE, "fns/report/report_handler.py": REPORT_HANDLER}
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "template.yaml"


@pytest.fixture(scope="module")
def s3_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    template = write_app(tmp_path_factory.mktemp("s3-app"))
    settings = stack_settings(template, tmp_path_factory.mktemp("s3-data"), stack_name=STACK_NAME)
    with LocalStack(settings) as stack:
        yield stack


def report(stack: LocalStack, body: str) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    result = stack.invoke(
        "ReportFunction",
        {"key": f"dry-runs/{tag}/räport 1.jsonl", "body": body, "upload_key": f"segments/{tag}.csv"},
    )
    assert result.ok, result.error
    payload: dict[str, Any] = result.payload
    return payload


# -- the bucket in moto ----------------------------------------------------------------------------


def test_buckets_get_deterministic_names_and_their_configuration(s3_stack: LocalStack) -> None:
    reports = s3_stack.resources["Reports"]
    assert reports.ref == "s3test-stack-reports"  # <stack>-<LogicalId>, lower case
    assert s3_stack.resources["Named"].ref == "s3test-us-east-1.named"  # BucketName wins
    s3 = s3_stack.client("s3")
    assert {"s3test-stack-reports", "s3test-us-east-1.named"} <= {
        b["Name"] for b in s3.list_buckets()["Buckets"]
    }

    [rule] = s3.get_bucket_encryption(Bucket=reports.ref)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket=reports.ref)["PublicAccessBlockConfiguration"]
    assert block == dict.fromkeys(
        ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"), True
    )
    ownership = s3.get_bucket_ownership_controls(Bucket=reports.ref)["OwnershipControls"]["Rules"]
    assert ownership == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert s3.get_bucket_versioning(Bucket=reports.ref)["Status"] == "Enabled"
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=reports.ref)["Rules"]}
    assert {k: (r["Filter"], r["Expiration"]["Days"]) for k, r in rules.items()} == {
        "ExpireDryRuns": ({"Prefix": "dry-runs/"}, 30),
        "ExpireSegments": ({"Prefix": "segments/"}, 90),
    }
    assert s3.get_bucket_tagging(Bucket=reports.ref)["TagSet"] == [
        {"Key": "app", "Value": f"{STACK_NAME}-reports"}
    ]
    # a property with no local effect is named, not silently dropped
    assert any("Reports: LoggingConfiguration not applied locally" in w for w in s3_stack.warnings)
    assert s3_stack.resources["ReportsPolicy"].emulation == "ignored"


def test_ref_and_getatt_give_what_cloudformation_gives(s3_stack: LocalStack) -> None:
    env = s3_stack.functions["ReportFunction"].environment
    assert env["REPORTS_BUCKET"] == "s3test-stack-reports"
    assert env["REPORTS_ARN"] == "arn:aws:s3:::s3test-stack-reports"
    assert env["REPORTS_DOMAIN"] == "s3test-stack-reports.s3.amazonaws.com"
    assert env["REPORTS_REGIONAL_DOMAIN"] == "s3test-stack-reports.s3.us-east-1.amazonaws.com"
    assert env["NAMED_BUCKET"] == "s3test-us-east-1.named"
    assert s3_stack.outputs["ReportsBucketName"] == "s3test-stack-reports"


# -- pre-signed URLs -------------------------------------------------------------------------------


def test_a_presigned_get_url_from_a_function_downloads_on_the_host(s3_stack: LocalStack) -> None:
    body = '{"openid": "o-1", "would_receive": true}\n{"openid": "o-2", "skipped": "not_following"}\n'
    made = report(s3_stack, body)
    assert made["get_url"].startswith(s3_stack.moto_url + "/s3test-stack-reports/dry-runs/")
    assert made["sse"] == "AES256"  # the bucket's default encryption applied to the function's put

    response = httpx.get(made["get_url"], timeout=10, trust_env=False)
    assert response.status_code == 200
    assert response.text == body
    assert response.headers["content-type"] == "application/x-ndjson"

    missing = httpx.get(made["missing_url"], timeout=10, trust_env=False)
    assert missing.status_code == 404


def test_a_presigned_put_url_uploads_from_the_host(s3_stack: LocalStack) -> None:
    made = report(s3_stack, "{}\n")
    segment = "openid,name\no-1,张三\n".encode()
    assert httpx.put(made["put_url"], content=segment, timeout=10, trust_env=False).status_code == 200
    key = made["put_url"].split("/s3test-stack-reports/", 1)[1].split("?", 1)[0]
    stored = s3_stack.client("s3").get_object(Bucket="s3test-stack-reports", Key=key)
    assert stored["Body"].read() == segment


# -- translation and refusals ----------------------------------------------------------------------


def test_bucket_names_are_valid_and_stable() -> None:
    assert bucket_name("wxreach-local", "BroadcastBucket") == "wxreach-local-broadcastbucket"
    long_name = bucket_name("a-very-long-stack-name-for-a-developer-machine", "BroadcastReportsBucket")
    assert long_name == bucket_name(
        "a-very-long-stack-name-for-a-developer-machine", "BroadcastReportsBucket"
    )
    assert len(long_name) <= 63 and long_name == long_name.lower()
    check_bucket_name(long_name)  # does not raise
    assert long_name != bucket_name("a-very-long-stack-name-for-a-developer-machine", "BroadcastOtherBucket")
    for bad in ("Upper", "ab", "-dash", "dots..twice", "192.168.1.1", "x" * 64):
        with pytest.raises(TemplateError, match="not a valid S3 bucket name"):
            check_bucket_name(bad)


def test_lifecycle_rules_translate_to_the_api_shape() -> None:
    rule = lifecycle_rule(
        {
            "Id": "Old",
            "Status": "Enabled",
            "Prefix": "reports/",
            "TagFilters": [{"Key": "kind", "Value": "dry-run"}],
            "ExpirationInDays": "30",
            "NoncurrentVersionExpiration": {"NoncurrentDays": 3},
            "Transitions": [{"StorageClass": "GLACIER", "TransitionInDays": 7}],
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2},
        }
    )
    assert rule == {
        "ID": "Old",
        "Status": "Enabled",
        "Filter": {"And": {"Prefix": "reports/", "Tags": [{"Key": "kind", "Value": "dry-run"}]}},
        "Expiration": {"Days": 30},
        "Transitions": [{"StorageClass": "GLACIER", "Days": 7}],
        "NoncurrentVersionExpiration": {"NoncurrentDays": 3},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2},
    }
    assert lifecycle_rule({"Status": "Enabled", "ExpirationInDays": 1})["Filter"] == {"Prefix": ""}


def test_event_notifications_stop_the_start(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="NotificationConfiguration: S3 event notifications"):
        plan_bucket({"NotificationConfiguration": {"LambdaConfigurations": []}})
    template = tmp_path / "template.yaml"
    template.write_text(
        "Resources:\n  Uploads:\n    Type: AWS::S3::Bucket\n    Properties:\n"
        "      NotificationConfiguration:\n"
        "        EventBridgeConfiguration:\n          EventBridgeEnabled: true\n"
    )
    with pytest.raises(StackError, match=r"Uploads \(AWS::S3::Bucket\): NotificationConfiguration"):
        LocalStack(stack_settings(template, tmp_path / "data")).start()


# -- the project's template ------------------------------------------------------------------------


def test_the_broadcast_bucket_of_template_yaml(tmp_path: Path) -> None:
    document = load_template(REPO_ROOT / "template.yaml")
    declared = document["Resources"]["BroadcastBucket"]["Properties"]
    moto = MotoProcess("127.0.0.1", 0, log_path=tmp_path / "moto.log")
    moto.launch()
    try:
        endpoint = MotoEndpoint(moto.wait_ready(), "us-east-1", "123456789012")
        template = load_sam_template(
            REPO_ROOT / "template.yaml",
            stack_name="wxreach-local",
            region="us-east-1",
            account_id="123456789012",
        )
        provisioned = Provisioner(template, endpoint, logs_dir=tmp_path / "logs").run()
        name = provisioned.resources["BroadcastBucket"].ref
        assert name == "wxreach-local-broadcastbucket"
        s3 = endpoint.client("s3")
        lifecycle = s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
        expected = [lifecycle_rule(rule) for rule in declared["LifecycleConfiguration"]["Rules"]]
        assert sorted(lifecycle, key=lambda r: r["ID"]) == sorted(expected, key=lambda r: r["ID"])
        expiring = {
            r["Filter"].get("Prefix"): r["Expiration"]["Days"] for r in lifecycle if "Expiration" in r
        }
        assert expiring == {"dry-runs/": 30, "reports/": 30, "segments/": 90}
        [sse] = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
        assert sse["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        assert all(s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"].values())
        ownership = s3.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"]["Rules"]
        assert ownership == [{"ObjectOwnership": "BucketOwnerEnforced"}]
        for spec in provisioned.functions.values():  # Globals: every function knows the bucket
            assert spec.environment["WXREACH_BROADCAST_BUCKET"] == name
        assert provisioned.outputs["BroadcastBucketName"] == name
    finally:
        moto.stop()
