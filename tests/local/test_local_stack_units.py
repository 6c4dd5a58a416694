"""The local stack's pure parts: template reading, intrinsics, routing, event shapes, settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from local.stack.api import Router, map_result
from local.stack.cfn import (
    NO_VALUE,
    Intrinsics,
    TemplateError,
    load_template,
    references,
    resolve_parameters,
)
from local.stack.functions import InvocationResult
from local.stack.model import IGNORED_TYPES, load_sam_template, merge_globals
from local.stack.pollers import failed_item_ids, json_path, transform_input
from local.stack.scheduler import parse_at, parse_rate
from local.stack.settings import Settings
from local.stack.specs import RouteSpec, RuleTargetSpec

REPO_ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(text)
    return path


def evaluator(**resources: dict[str, Any]) -> Intrinsics:
    """Intrinsics over fake resources: {"Queue": {"Ref": url, "Arn": arn}}."""

    def ref(name: str) -> Any:
        if name not in resources:
            raise TemplateError(f"unknown {name}")
        return resources[name]["Ref"]

    def get_att(name: str, attribute: str) -> Any:
        return resources[name][attribute]

    return Intrinsics(
        parameters={"Stage": "prod", "Count": "3"},
        pseudo={
            "AWS::StackName": "st",
            "AWS::Region": "eu-west-1",
            "AWS::AccountId": "111",
            "AWS::Partition": "aws",
        },
        conditions={
            "IsProd": {"Fn::Equals": [{"Ref": "Stage"}, "prod"]},
            "IsDev": {"Fn::Not": [{"Condition": "IsProd"}]},
        },
        mappings={"Sizes": {"prod": {"memory": 1024}}},
        ref=ref,
        get_att=get_att,
    )


def test_short_tags_load_into_their_long_form(tmp_path: Path) -> None:
    document = load_template(
        write(
            tmp_path,
            """
Resources:
  R:
    Type: X
    Properties:
      A: !Ref Thing
      B: !GetAtt Queue.Arn
      C: !Sub "${AWS::StackName}-x"
      D: !Sub ["${p}", {p: !Ref Thing}]
      E: !Join [",", [a, b]]
      F: !Select [0, !Split [",", "a,b"]]
      G: !If [Cond, 1, 2]
      H: !Equals [a, b]
      I: !Condition Cond
      J: 2024-01-01
""",
        )
    )
    props = document["Resources"]["R"]["Properties"]
    assert props["A"] == {"Ref": "Thing"}
    assert props["B"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    assert props["C"] == {"Fn::Sub": "${AWS::StackName}-x"}
    assert props["D"] == {"Fn::Sub": ["${p}", {"p": {"Ref": "Thing"}}]}
    assert props["E"] == {"Fn::Join": [",", ["a", "b"]]}
    assert props["F"] == {"Fn::Select": [0, {"Fn::Split": [",", "a,b"]}]}
    assert props["G"] == {"Fn::If": ["Cond", 1, 2]}
    assert props["H"] == {"Fn::Equals": ["a", "b"]}
    assert props["I"] == {"Condition": "Cond"}
    assert props["J"] == "2024-01-01"  # CloudFormation keeps unquoted dates as text


def test_intrinsics_resolve_like_cloudformation() -> None:
    ev = evaluator(Queue={"Ref": "https://q/url", "Arn": "arn:aws:sqs:eu-west-1:111:q", "QueueName": "q"})
    node = {
        "url": {"Ref": "Queue"},
        "arn": {"Fn::GetAtt": ["Queue", "Arn"]},
        "sub": {"Fn::Sub": "${AWS::StackName}/${Stage}/${Queue}/${Queue.QueueName}/${!Literal}"},
        "sub_vars": {"Fn::Sub": ["${a}-${AWS::Region}", {"a": {"Ref": "Count"}}]},
        "join": {"Fn::Join": ["-", ["x", {"Ref": "Stage"}, {"Fn::Select": [1, ["p", "q"]]}]]},
        "split": {"Fn::Split": [",", "a,b,c"]},
        "if": {"Fn::If": ["IsDev", "dev", "prod"]},
        "map": {"Fn::FindInMap": ["Sizes", {"Ref": "Stage"}, "memory"]},
        "gone": {"Fn::If": ["IsDev", "x", {"Ref": "AWS::NoValue"}]},
        "list": ["a", {"Ref": "AWS::NoValue"}, "b"],
        "policy": {"Condition": {"StringEquals": {"k": "v"}}},  # data, not an intrinsic
    }
    assert ev.resolve(node) == {
        "url": "https://q/url",
        "arn": "arn:aws:sqs:eu-west-1:111:q",
        "sub": "st/prod/https://q/url/q/${Literal}",
        "sub_vars": "3-eu-west-1",
        "join": "x-prod-q",
        "split": ["a", "b", "c"],
        "if": "prod",
        "map": 1024,
        "list": ["a", "b"],
        "policy": {"Condition": {"StringEquals": {"k": "v"}}},
    }
    assert ev.ref("AWS::NoValue") is NO_VALUE


def test_conditions_combine() -> None:
    ev = evaluator()
    assert ev.condition("IsProd") is True
    assert ev.condition("IsDev") is False
    assert ev.evaluate_condition(
        {"Fn::And": [{"Condition": "IsProd"}, {"Fn::Equals": ["3", {"Ref": "Count"}]}]}
    )
    assert ev.evaluate_condition({"Fn::Or": [{"Condition": "IsDev"}, False]}) is False
    with pytest.raises(TemplateError, match="unknown condition"):
        ev.condition("Nope")


def test_unknown_reference_and_unsupported_function_fail_loudly() -> None:
    ev = evaluator()
    with pytest.raises(TemplateError, match="unknown Missing"):
        ev.resolve({"Ref": "Missing"})
    with pytest.raises(TemplateError, match="Fn::ImportValue"):
        ev.resolve({"Fn::ImportValue": "x"})


def test_references_lists_every_mentioned_name() -> None:
    node = {
        "a": {"Ref": "Table"},
        "b": [{"Fn::GetAtt": ["Queue", "Arn"]}, {"Fn::GetAtt": "Dlq.Arn"}],
        "c": {"Fn::Sub": ["${Bus}-${local}-${Fn.Arn}-${!Skip}", {"local": {"Ref": "Param"}}]},
    }
    assert references(node) == {"Table", "Queue", "Dlq", "Bus", "Fn", "Param"}


def test_parameters_use_defaults_overrides_and_validate() -> None:
    declared = {
        "Stage": {"Type": "String", "Default": "prod", "AllowedPattern": "[a-z]+"},
        "Level": {"Type": "String", "Default": "INFO", "AllowedValues": ["INFO", "DEBUG"]},
        "Window": {"Type": "Number", "Default": 300, "MinValue": 0},
        "Names": {"Type": "CommaDelimitedList", "Default": "a,b"},
    }
    assert resolve_parameters(declared, {"Window": "0"}, where="t") == {
        "Stage": "prod",
        "Level": "INFO",
        "Window": "0",
        "Names": ["a", "b"],
    }
    for overrides, message in [
        ({"Level": "TRACE"}, "not one of"),
        ({"Stage": "Prod1"}, "does not match"),
        ({"Window": "-1"}, "below MinValue"),
        ({"Window": "soon"}, "not a number"),
        ({"Unknown": "1"}, "undeclared"),
    ]:
        with pytest.raises(TemplateError, match=message):
            resolve_parameters(declared, overrides, where="t")


def test_globals_merge_like_sam() -> None:
    merged = merge_globals(
        {
            "Timeout": 10,
            "Layers": ["g"],
            "Environment": {"Variables": {"A": "1", "B": "1"}},
            "Ref": {"Ref": "X"},
        },
        {"Timeout": 4, "Layers": ["f"], "Environment": {"Variables": {"B": "2"}}, "Ref": {"Ref": "Y"}},
    )
    assert merged == {
        "Timeout": 4,
        "Layers": ["g", "f"],
        "Environment": {"Variables": {"A": "1", "B": "2"}},
        "Ref": {"Ref": "Y"},
    }


BASE = """
Transform: AWS::Serverless-2016-10-31
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: .
      Handler: app.handler
      Runtime: python3.12
"""


def test_unsupported_resource_type_names_its_logical_id(tmp_path: Path) -> None:
    template = write(tmp_path, BASE + "  Clicks:\n    Type: AWS::Kinesis::Stream\n")
    with pytest.raises(TemplateError) as caught:
        load_sam_template(template, stack_name="s", region="us-east-1", account_id="1")
    assert "Clicks: resource type AWS::Kinesis::Stream is not supported" in str(caught.value)


def test_unsupported_event_type_names_the_function_event(tmp_path: Path) -> None:
    text = BASE + "      Events:\n        Stream:\n          Type: DynamoDB\n          Properties: {}\n"
    with pytest.raises(TemplateError, match=r"Fn\.Events\.Stream: event type DynamoDB"):
        load_sam_template(write(tmp_path, text), stack_name="s", region="us-east-1", account_id="1")


def test_ignored_types_load_and_sam_events_expand(tmp_path: Path) -> None:
    text = (
        BASE
        + """      Events:
        Q:
          Type: SQS
          Properties: {Queue: !GetAtt Queue.Arn, BatchSize: 3}
        Nightly:
          Type: ScheduleV2
          Properties: {ScheduleExpression: rate(1 day)}
        Followed:
          Type: EventBridgeRule
          Properties: {Pattern: {source: [x]}}
        Get:
          Type: Api
          Properties: {Path: /x, Method: get}
  Queue:
    Type: AWS::SQS::Queue
  Alarm:
    Type: AWS::CloudWatch::Alarm
  Role:
    Type: AWS::IAM::Role
"""
    )
    template = load_sam_template(write(tmp_path, text), stack_name="s", region="us-east-1", account_id="1")
    types = {k: r.type for k, r in template.resources.items()}
    assert types["FnQ"] == "AWS::Lambda::EventSourceMapping"
    assert types["FnNightly"] == "AWS::Scheduler::Schedule"
    assert types["FnFollowed"] == "AWS::Events::Rule"
    assert types["ServerlessRestApi"] == "AWS::Serverless::Api"  # implicit API for RestApiId-less events
    assert types["FnRole"] == "AWS::IAM::Role"
    assert template.resources["Alarm"].emulation == "ignored"
    assert template.resources["FnQ"].properties["BatchSize"] == 3
    assert [(r.function, r.event, r.api) for r in template.routes] == [("Fn", "Get", "ServerlessRestApi")]
    assert {"AWS::IAM::Role", "AWS::CloudWatch::Alarm", "AWS::Lambda::Permission"} <= set(IGNORED_TYPES)


def test_real_template_expands_without_problems() -> None:
    template = load_sam_template(
        REPO_ROOT / "template.yaml", stack_name="wxreach-local", region="us-east-1", account_id="123456789012"
    )
    declared = load_template(REPO_ROOT / "template.yaml")["Resources"]
    # Conditional resources (the alarm e-mail subscription) are off with default parameters.
    assert {name for name, body in declared.items() if "Condition" not in body} <= set(template.resources)
    api_events = {
        (fn, name)
        for fn, body in declared.items()
        for name, event in (body.get("Properties", {}).get("Events") or {}).items()
        if event["Type"] == "Api"
    }
    assert {(r.function, r.event) for r in template.routes} == api_events


def route(path: str, method: str = "GET") -> RouteSpec:
    return RouteSpec(method, path, "Fn", path, "Api", "id", "prod", iam_auth=False, api_key_required=False)


def test_router_prefers_the_most_specific_route() -> None:
    router = Router(
        [
            route("/files/{proxy+}", "ANY"),
            route("/files/readme"),
            route("/files/{name}"),
            route("/files/{name}", "ANY"),
            route("/"),
        ]
    )

    def found(method: str, path: str) -> tuple[str, str, dict[str, str]] | None:
        hit = router.find(method, path)
        return None if hit is None else (hit[0].path, hit[0].method, hit[1])

    assert found("GET", "/files/readme") == ("/files/readme", "GET", {})
    assert found("GET", "/files/other") == ("/files/{name}", "GET", {"name": "other"})
    assert found("POST", "/files/other") == ("/files/{name}", "ANY", {"name": "other"})
    assert found("GET", "/files/a/b%20c") == ("/files/{proxy+}", "ANY", {"proxy": "a/b c"})
    assert found("GET", "/files") is None  # {proxy+} needs at least one segment
    assert found("GET", "/") == ("/", "GET", {})
    assert found("GET", "/nothing") is None


def test_malformed_proxy_responses_become_502() -> None:
    def result(payload: Any) -> InvocationResult:
        return InvocationResult("Fn", "r", ok=True, payload=payload)

    assert map_result(result({"statusCode": 200, "body": {"x": 1}}), "r").status == 502
    assert map_result(result("text"), "r").status == 502
    assert map_result(result({"statusCode": 200, "body": "!", "isBase64Encoded": True}), "r").status == 502
    ok = map_result(result({"statusCode": 204}), "r")
    assert (ok.status, ok.body) == (204, b"")
    failed = InvocationResult("Fn", "r", ok=False, error={"errorType": "X"})
    assert map_result(failed, "r").status == 502
    timed_out = InvocationResult("Fn", "r", ok=False, error={}, timed_out=True)
    assert map_result(timed_out, "r").status == 504


def test_batch_item_failures_are_read_like_lambda_does() -> None:
    ids = {"a", "b"}
    assert failed_item_ids(None, ids) == set()
    assert failed_item_ids({"batchItemFailures": []}, ids) == set()
    assert failed_item_ids({"batchItemFailures": [{"itemIdentifier": "a"}]}, ids) == {"a"}
    # An unknown or empty identifier makes Lambda treat the whole batch as failed.
    assert failed_item_ids({"batchItemFailures": [{"itemIdentifier": "zzz"}]}, ids) is None
    assert failed_item_ids({"batchItemFailures": [{"itemIdentifier": ""}]}, ids) is None
    assert failed_item_ids("nonsense", ids) is None


def rule_target(**transform: Any) -> RuleTargetSpec:
    return RuleTargetSpec("Rule", "rule", "arn:rule", "t", "Fn", "url", None, **transform)


def test_rule_target_input_transformations() -> None:
    event = {"id": "1", "source": "s", "detail": {"marker": "m", "n": 2, "items": [{"k": "v"}]}}
    assert transform_input(rule_target(), event) is event
    assert transform_input(rule_target(input='{"fixed": true}'), event) == {"fixed": True}
    assert transform_input(rule_target(input_path="$.detail"), event) == event["detail"]
    transformer = {
        "InputPathsMap": {"m": "$.detail.marker", "n": "$.detail.n", "k": "$.detail.items[0].k"},
        "InputTemplate": '{"text": "<m>-<n>", "number": <n>, "marker": <m>, '
        '"rule": "<aws.events.rule-name>", "k": "<k>"}',
    }
    assert transform_input(rule_target(input_transformer=transformer), event) == {
        "text": "m-2",
        "number": 2,
        "marker": "m",
        "rule": "rule",
        "k": "v",
    }
    assert json_path(event, "$.detail.missing") is None


def test_schedule_expressions() -> None:
    assert parse_at("at(2030-01-02T03:04:05)") == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_at("at(2030-01-02T08:00:00)", "Asia/Shanghai") == datetime(2030, 1, 2, 0, 0, tzinfo=UTC)
    assert parse_at("rate(1 minute)") is None
    assert parse_rate("rate(5 minutes)") == timedelta(minutes=5)
    assert parse_rate("rate(1 day)") == timedelta(days=1)
    assert parse_rate("cron(0 12 * * ? *)") is None


def test_settings_precedence_defaults_env_then_flags() -> None:
    environ = {
        "WXREACH_LOCAL_PORT": "4000",
        "WXREACH_LOCAL_MOTO_PORT": "5500",
        "WXREACH_LOCAL_API_KEY": "from-env",
        "WXREACH_LOCAL_WECHAT_API_BASE": "",
        "WXREACH_LOCAL_PARAMETER_OVERRIDES": "Stage=dev LogLevel=DEBUG",
    }
    settings = Settings.from_args(
        [
            "--port",
            "4100",
            "--env",
            "A=1",
            "--function-env",
            "WebhookFunction:WXREACH_REPLAY_WINDOW_SECONDS=0",
            "--parameter-overrides",
            "Stage=qa",
        ],
        environ,
    )
    assert settings.port == 4100  # flag beats env
    assert settings.moto_port == 5500  # env beats default
    assert settings.api_key == "from-env"
    assert settings.wechat_api_base == ""  # explicitly unset
    assert settings.parameter_overrides == {"Stage": "qa", "LogLevel": "DEBUG"}
    assert settings.env == {"A": "1"}
    assert settings.function_env == {"WebhookFunction": {"WXREACH_REPLAY_WINDOW_SECONDS": "0"}}
    defaults = Settings.from_args([], {})
    assert (defaults.port, defaults.moto_port, defaults.stack_name) == (3000, 5000, "wxreach-local")
    assert (defaults.data_dir, defaults.wechat_api_base) == (Path(".local-data"), "http://127.0.0.1:8900")


def test_env_vars_file_format(tmp_path: Path) -> None:
    from local.stack.settings import load_env_vars_file

    path = tmp_path / "env.json"
    path.write_text(json.dumps({"WebhookFunction": {"WXREACH_REPLAY_WINDOW_SECONDS": 0, "FLAG": True}}))
    assert load_env_vars_file(path) == {
        "WebhookFunction": {"WXREACH_REPLAY_WINDOW_SECONDS": "0", "FLAG": "true"}
    }
    path.write_text("[1]")
    with pytest.raises(ValueError, match="expected"):
        load_env_vars_file(path)


def _offline_poller(tmp_path: Path) -> tuple[Any, Any]:
    """A scheduler poller with no moto behind it, for its due/retry logic alone."""
    import threading

    from local.stack.aws import MotoEndpoint
    from local.stack.functions import ActivityTracker, FunctionRuntime
    from local.stack.scheduler import AsyncDispatcher, SchedulerPoller

    dispatcher = AsyncDispatcher(ActivityTracker())
    poller = SchedulerPoller(
        endpoint=MotoEndpoint("http://127.0.0.1:1", "us-east-1", "123456789012"),
        runtime=FunctionRuntime(),
        dispatcher=dispatcher,
        state_file=tmp_path / "fired.json",
        interval=1,
        stop=threading.Event(),
        fresh=True,
    )
    return dispatcher, poller


def test_scheduler_due_logic_fires_at_once_and_rate_per_period(tmp_path: Path) -> None:
    dispatcher, poller = _offline_poller(tmp_path)
    created = datetime(2030, 1, 1, tzinfo=UTC)

    def schedule(name: str, expression: str) -> dict[str, Any]:
        return {
            "Arn": f"arn:s/{name}",
            "Name": name,
            "CreationDate": created,
            "ScheduleExpression": expression,
        }

    once = schedule("once", "at(2030-01-01T00:10:00)")
    assert poller._due(once, created + timedelta(minutes=9)) is None
    due = poller._due(once, created + timedelta(minutes=10))
    assert due is not None and due[1] == datetime(2030, 1, 1, 0, 10, tzinfo=UTC)
    poller._fired[due[0]] = "fired"
    assert poller._due(once, created + timedelta(hours=1)) is None  # never twice

    rate = schedule("rate", "rate(5 minutes)")
    assert poller._due(rate, created + timedelta(minutes=4)) is None
    first = poller._due(rate, created + timedelta(minutes=6))
    assert first is not None and first[1] == created + timedelta(minutes=5)
    poller._fired[first[0]] = "fired"
    assert poller._due(rate, created + timedelta(minutes=7)) is None
    second = poller._due(rate, created + timedelta(minutes=11))
    assert second is not None and second[1] == created + timedelta(minutes=10)
    cron = schedule("cron", "cron(0 * * * ? *)")
    assert poller._due(cron, created + timedelta(days=1)) is None  # not fired locally (documented)
    dispatcher.stop()


def test_sqs_filter_criteria_match_on_the_json_body() -> None:
    from local.stack.pollers import _load_pattern, _matches

    pattern = _load_pattern(json.dumps({"body": {"kind": ["status"]}}))
    record = {"messageId": "1", "body": json.dumps({"kind": "status"}), "attributes": {}}
    assert _matches(pattern, record)
    assert not _matches(pattern, dict(record, body=json.dumps({"kind": "other"})))
    assert not _matches(pattern, dict(record, body="not json"))


def test_new_settings_have_flags_and_variables() -> None:
    environ = {
        "WXREACH_LOCAL_POLL_WAIT_SECONDS": "3",
        "WXREACH_LOCAL_INIT_TIMEOUT": "12.5",
        "WXREACH_LOCAL_ECHO_FUNCTION_OUTPUT": "false",
    }
    from_env = Settings.from_args([], environ)
    assert (from_env.poll_wait_seconds, from_env.init_timeout, from_env.echo_function_output) == (
        3,
        12.5,
        False,
    )
    flags = Settings.from_args(
        ["--poll-wait-seconds", "5", "--init-timeout", "9", "--echo-function-output"], environ
    )
    assert (flags.poll_wait_seconds, flags.init_timeout, flags.echo_function_output) == (5, 9.0, True)
    assert Settings.from_args(["--no-echo-function-output"], {}).echo_function_output is False
    defaults = Settings.from_args([], {})
    assert (defaults.poll_wait_seconds, defaults.init_timeout, defaults.echo_function_output) == (
        1,
        60.0,
        True,
    )
    with pytest.raises(SystemExit, match="ECHO_FUNCTION_OUTPUT"):
        Settings.from_env({"WXREACH_LOCAL_ECHO_FUNCTION_OUTPUT": "maybe"})


def test_a_failing_schedule_is_retried_then_given_up_without_holding_up_the_others(tmp_path: Path) -> None:
    dispatcher, poller = _offline_poller(tmp_path)

    def schedule(name: str, **extra: Any) -> dict[str, Any]:
        return {
            "Arn": f"arn:aws:scheduler:us-east-1:123456789012:schedule/default/{name}",
            "Name": name,
            "CreationDate": datetime(2020, 1, 1, tzinfo=UTC),
            "ScheduleExpression": "at(2020-01-01T00:00:00)",
            "Target": {"Arn": f"arn:aws:sqs:us-east-1:123456789012:{name}"},
            **extra,
        }

    schedules = [
        schedule("broken"),
        schedule("fine"),
        schedule("fragile", RetryPolicy={"MaximumRetryAttempts": 0}),
    ]
    delivered: list[str] = []

    def deliver(target: dict[str, Any], payload: str, *, source: str) -> bool:
        if not target["Arn"].endswith(":fine"):
            raise RuntimeError("queue does not exist")
        delivered.append(source)
        return True

    poller._schedules = lambda: schedules  # type: ignore[method-assign]
    poller.deliverer.deliver = deliver  # type: ignore[method-assign]
    try:
        assert poller.poll_once() == 1  # "broken" failed first, "fine" still fired in the same poll
        assert delivered == ["schedule:default/fine"]
        state = json.loads((tmp_path / "fired.json").read_text())  # saved despite the failures
        assert [key.split("/")[-1].split("|")[0] for key in state] == ["fine", "fragile"]
        assert "gave up after 1 attempt(s)" in next(v for k, v in state.items() if "fragile" in k)
        assert poller.pending_due()  # "broken" is retried at the next polls
        assert poller.poll_once() == 0
        assert poller.pending_due()
        assert poller.poll_once() == 0  # third attempt: given up, remembered, no longer due
        assert not poller.pending_due()
        state = json.loads((tmp_path / "fired.json").read_text())
        assert "gave up after 3 attempt(s): queue does not exist" in next(
            v for k, v in state.items() if "broken" in k
        )
        assert (poller.failed_count, poller.fired_count, poller.polls) == (2, 1, 3)
        assert poller.poll_once() == 0 and delivered == ["schedule:default/fine"]  # never twice
    finally:
        dispatcher.stop()


def test_the_http_front_listens_with_a_deep_backlog_and_no_nagle(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    import httpx

    from local.stack.api import ApiFront, _RequestHandler
    from local.stack.functions import FunctionRuntime

    backlogs: list[int] = []
    real_listen = socket.socket.listen

    def listen(self: socket.socket, backlog: int = 0) -> None:
        backlogs.append(backlog)
        real_listen(self, backlog)

    nodelay: list[int] = []
    real_setup = _RequestHandler.setup

    def setup(self: _RequestHandler) -> None:
        real_setup(self)
        nodelay.append(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    monkeypatch.setattr(socket.socket, "listen", listen)
    monkeypatch.setattr(_RequestHandler, "setup", setup)
    front = ApiFront(
        host="127.0.0.1", port=0, routes=[], runtime=FunctionRuntime(), api_key="k", account_id="123456789012"
    )
    front.start()
    try:
        assert httpx.get(front.url + "/nowhere", timeout=10).status_code == 404
    finally:
        front.stop()
    assert backlogs == [256]  # not socketserver's 5: a burst of callers is queued, not reset
    assert nodelay and all(nodelay)
