"""The local stack on the project's own template.yaml: everything it declares exists in moto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.stack import LocalStack, StackError
from local.stack.cfn import load_template
from tests.local.conftest import eventually, stack_settings
from tests.local.sample_app import write_sample_app

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "template.yaml"


def declared(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        k: r.get("Properties") or {} for k, r in template["Resources"].items() if r["Type"] == resource_type
    }


@pytest.fixture(scope="module")
def real_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(stack_settings(TEMPLATE, tmp_path_factory.mktemp("real-data"))) as stack:
        yield stack


def assert_tables_match(stack: LocalStack, template: dict[str, Any]) -> None:
    ddb = stack.client("dynamodb")
    tables = declared(template, "AWS::DynamoDB::Table")
    assert tables, "the template declares tables"
    for logical_id, props in tables.items():
        name = stack.resources[logical_id].ref
        table = ddb.describe_table(TableName=name)["Table"]
        assert table["KeySchema"] == props["KeySchema"], logical_id
        assert {i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])} == {
            i["IndexName"] for i in props.get("GlobalSecondaryIndexes", [])
        }
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            description = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            assert description["AttributeName"] == ttl["AttributeName"], logical_id
            assert description["TimeToLiveStatus"] == "ENABLED"


def assert_queues_match(stack: LocalStack, template: dict[str, Any]) -> None:
    sqs = stack.client("sqs")
    queues = declared(template, "AWS::SQS::Queue")
    assert queues, "the template declares queues"
    for logical_id, props in queues.items():
        attributes = sqs.get_queue_attributes(
            QueueUrl=stack.resources[logical_id].ref, AttributeNames=["All"]
        )["Attributes"]
        assert attributes["QueueArn"] == stack.resources[logical_id].arn
        if "VisibilityTimeout" in props:
            assert attributes["VisibilityTimeout"] == str(props["VisibilityTimeout"])
        if "RedrivePolicy" in props:
            redrive = json.loads(attributes["RedrivePolicy"])
            dlq = props["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
            assert redrive["deadLetterTargetArn"] == stack.resources[dlq].arn
            assert int(redrive["maxReceiveCount"]) == int(props["RedrivePolicy"]["maxReceiveCount"])


def test_every_table_queue_and_bus_of_the_template_exists_in_moto(real_stack: LocalStack) -> None:
    template = load_template(TEMPLATE)
    assert_tables_match(real_stack, template)
    assert_queues_match(real_stack, template)
    events = real_stack.client("events")
    buses = declared(template, "AWS::Events::EventBus")
    assert buses
    for logical_id in buses:
        name = real_stack.resources[logical_id].ref
        assert events.describe_event_bus(Name=name)["Name"] == name
    # JourneyBus is !Sub "${AWS::StackName}-journey"
    assert real_stack.resources["JourneyBus"].ref == "wxreach-local-journey"
    assert real_stack.outputs["StatusQueueUrl"] == real_stack.resources["StatusQueue"].ref
    assert real_stack.outputs["QuotaTableName"] == real_stack.resources["QuotaTable"].ref


def test_every_api_event_is_routed_with_its_auth(real_stack: LocalStack) -> None:
    template = load_template(TEMPLATE)
    expected = set()
    for function, props in declared(template, "AWS::Serverless::Function").items():
        for event in (props.get("Events") or {}).values():
            if event["Type"] == "Api":
                p = event["Properties"]
                expected.add(
                    (
                        function,
                        p["Method"].upper(),
                        p["Path"],
                        (p.get("Auth") or {}).get("Authorizer") != "NONE",
                    )
                )
    routed = {(r.function, r.method, r.path, r.needs_api_key) for r in real_stack.routes}
    assert routed == expected
    for function, method, path, guarded in expected:
        concrete = path.replace("{appid}", "wx0000000000000001").replace("{openid}", "o-test")
        pool = real_stack.runtime.pools[function]
        before = pool.invocations
        response = httpx.request(method, real_stack.api_url + concrete, timeout=15)
        if guarded:
            assert (response.status_code, response.json()) == (403, {"message": "Forbidden"}), (method, path)
            assert pool.invocations == before
            keyed = httpx.request(
                method, real_stack.api_url + concrete, headers={"x-api-key": real_stack.api_key}, timeout=15
            )
            assert keyed.status_code != 403, (method, path)
        # Whatever the handler answers (the webhook itself says 404 to unknown accounts), it ran.
        assert pool.invocations == before + 1, (method, path)


def test_function_environment_resolves_to_the_created_resources(real_stack: LocalStack) -> None:
    env = real_stack.runtime.pools["WebhookFunction"].environment
    resources = real_stack.resources
    assert env["WXREACH_STATUS_QUEUE_URL"] == resources["StatusQueue"].ref
    assert env["WXREACH_JOURNEY_BUS"] == "wxreach-local-journey"
    assert env["WXREACH_QUOTA_TABLE"] == resources["QuotaTable"].ref  # Globals, merged
    assert env["WXREACH_IDEMPOTENCY_TABLE"] == resources["IdempotencyTable"].ref
    assert env["WXREACH_SECRETS_PREFIX"] == "wxreach/wxreach-local/accounts/"
    assert env["WXREACH_REPLAY_WINDOW_SECONDS"] == "300"
    assert env["POWERTOOLS_SERVICE_NAME"] == "wxreach-webhook"  # the function's value beats Globals
    assert env["AWS_ENDPOINT_URL"] == real_stack.moto_url
    assert env["WXREACH_WECHAT_API_BASE"] == "http://127.0.0.1:8900"
    layer = real_stack.functions["WebhookFunction"].layer_dirs
    assert layer == (str(REPO_ROOT / "layers" / "wxreach"),)  # BuildMethod python3.12: package at ContentUri


def absolute_copy(target_dir: Path, extra_resources: dict[str, Any]) -> Path:
    """template.yaml as JSON (still valid YAML, tags in long form) with absolute code paths."""
    document = load_template(TEMPLATE)
    for resource in document["Resources"].values():
        props = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str):
                props[key] = str(REPO_ROOT / props[key])
    document["Resources"].update(extra_resources)
    path = target_dir / "template.json"
    path.write_text(json.dumps(document, indent=1))
    return path


def test_resources_come_from_the_template_itself(tmp_path: Path) -> None:
    extra = {
        "ExtraTable": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
            },
        },
        "ExtraQueue": {"Type": "AWS::SQS::Queue", "Properties": {"VisibilityTimeout": 42}},
    }
    template = absolute_copy(tmp_path, extra)
    settings = stack_settings(
        template,
        tmp_path / "data",
        stack_name="derived",
        parameter_overrides={"ReplayWindowSeconds": "0"},
        function_env={"WebhookFunction": {"WXREACH_DEDUPE_TTL_SECONDS": "61"}},
    )
    with LocalStack(settings) as stack:
        document = load_template(template)
        assert_tables_match(stack, document)
        assert_queues_match(stack, document)
        assert stack.resources["ExtraTable"].ref == "derived-ExtraTable"
        assert "derived-ExtraTable" in stack.client("dynamodb").list_tables()["TableNames"]
        env = stack.runtime.pools["WebhookFunction"].environment
        assert env["WXREACH_REPLAY_WINDOW_SECONDS"] == "0"  # parameter override
        assert env["WXREACH_DEDUPE_TTL_SECONDS"] == "61"  # per-function override
        assert env["WXREACH_SECRETS_PREFIX"] == "wxreach/derived/accounts/"


def test_an_unsupported_resource_stops_the_start(tmp_path: Path) -> None:
    template = absolute_copy(tmp_path, {"Clicks": {"Type": "AWS::Kinesis::Stream", "Properties": {}}})
    with pytest.raises(StackError, match=r"Clicks: resource type AWS::Kinesis::Stream is not supported"):
        LocalStack(stack_settings(template, tmp_path / "data")).start()


def test_restarting_on_an_external_moto_reuses_resources_and_never_refires(tmp_path: Path) -> None:
    from local.stack.motoproc import MotoProcess

    moto = MotoProcess("127.0.0.1", 0, log_path=tmp_path / "moto.log")  # outlives the stacks below
    moto.launch()
    try:
        url = moto.wait_ready()
        template = write_sample_app(tmp_path / "app")
        polling = stack_settings(template, tmp_path / "data", moto_url=url, scheduler_interval=0.1)
        # A first run that never polls the Scheduler: it only creates the resources.
        creating = polling.with_overrides(scheduler_interval=3600)

        def template_schedule_runs(stack: LocalStack) -> int:
            items = stack.client("dynamodb").scan(TableName=stack.resources["RecordTable"].ref)["Items"]
            return sum(1 for i in items if i["pk"]["S"].startswith("recorder#template-schedule"))

        def states(stack: LocalStack) -> dict[str, str]:
            scheduler = stack.client("scheduler")
            return {
                logical_id: scheduler.get_schedule(Name=stack.resources[logical_id].ref)["State"]
                for logical_id in ("TemplateOnce", "RecorderFunctionTick")
            }

        with LocalStack(creating) as first:
            assert first.moto_url == url
            assert template_schedule_runs(first) == 0
            assert states(first) == {"TemplateOnce": "ENABLED", "RecorderFunctionTick": "ENABLED"}
        # Same moto, same data dir: every resource exists already and is updated in place.
        with LocalStack(polling) as second:
            assert states(second) == {"TemplateOnce": "ENABLED", "RecorderFunctionTick": "ENABLED"}
            second.wait_idle(20)
            assert template_schedule_runs(second) == 1  # due and not fired yet: it fires after the restart
            assert second.resources["WorkQueue"].ref == first.resources["WorkQueue"].ref
        with LocalStack(polling) as third:
            assert states(third) == {"TemplateOnce": "ENABLED", "RecorderFunctionTick": "ENABLED"}
            third.wait_idle(20)
            scheduler = third.scheduler
            assert scheduler is not None
            polls = scheduler.polls
            assert eventually(lambda: scheduler.polls >= polls + 3)
            third.wait_idle(20)
            assert template_schedule_runs(third) == 1  # fired before the restart: never again
        with pytest.raises(StackError, match="cannot be restarted"):
            first.start()
    finally:
        moto.stop()


def test_the_real_template_has_no_start_up_warning_about_visibility_timeouts(real_stack: LocalStack) -> None:
    assert not [w for w in real_stack.warnings if "VisibilityTimeout" in w]
