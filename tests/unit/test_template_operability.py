"""template.yaml's operability: every queue has a dead-letter queue, every dead-letter queue and
every function is alarmed into the alarm topic, the WeChat alarms watch metrics the code emits,
and the dashboard shows the whole pipeline. Functions and queues are found generically, so a new
one without its alarms fails here (how to add them: docs/operations.md)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from local.stack.cfn import sub_variables
from tests.support.template import ROOT, load_template, resources_of_type
from wxreach.observability import STACK_METRICS_SERVICE, TOKEN_REFRESH_FAILED_METRIC, WECHAT_BUSY_METRIC

TEMPLATE = load_template()
RESOURCES: dict[str, dict[str, Any]] = TEMPLATE["Resources"]
FUNCTIONS = sorted(resources_of_type(TEMPLATE, "AWS::Serverless::Function"))
QUEUES = resources_of_type(TEMPLATE, "AWS::SQS::Queue")
ALARMS = resources_of_type(TEMPLATE, "AWS::CloudWatch::Alarm")
NAMESPACE = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
ALARM_TOPIC = {"Ref": "AlarmTopic"}
SOURCES = ROOT / "layers" / "wxreach" / "wxreach", ROOT / "functions"


def target(node: Any) -> str | None:
    """The logical id a `!Ref X` / `!GetAtt X.Attr` names."""
    if isinstance(node, dict) and "Ref" in node:
        return str(node["Ref"])
    if isinstance(node, dict) and "Fn::GetAtt" in node:
        att = node["Fn::GetAtt"]
        return str(att[0] if isinstance(att, list) else att.split(".")[0])
    return None


def dead_letter_configs(node: Any) -> Iterator[str]:
    """Queues named as the DLQ of anything other than a queue (rule targets, schedules, events)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "DeadLetterConfig" and isinstance(value, dict):
                for ref in (value.get("Arn"), value.get("Destination")):
                    if target(ref) is not None:
                        yield str(target(ref))
            else:
                yield from dead_letter_configs(value)
    elif isinstance(node, list):
        for item in node:
            yield from dead_letter_configs(item)


REDRIVE_TARGETS = {
    str(target(props["RedrivePolicy"]["deadLetterTargetArn"]))
    for props in QUEUES.values()
    if "RedrivePolicy" in props
}
DEAD_LETTER_QUEUES = sorted(REDRIVE_TARGETS | set(dead_letter_configs(RESOURCES)))


def watched(alarm: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(namespace, metric, {dimension: value}) of each metric an alarm reads."""
    stats = [q["MetricStat"]["Metric"] for q in alarm.get("Metrics", []) if "MetricStat" in q]
    if "MetricName" in alarm:
        stats.append(alarm)
    for metric in stats:
        dims = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
        yield metric["Namespace"], metric["MetricName"], dims


def alarms_on(namespace: str, metric: str, **dims: Any) -> dict[str, dict[str, Any]]:
    return {
        name: alarm
        for name, alarm in ALARMS.items()
        if any(
            (ns, m) == (namespace, metric) and all(d.get(k) == v for k, v in dims.items())
            for ns, m, d in watched(alarm)
        )
    }


def notifies(alarm: dict[str, Any]) -> bool:
    return ALARM_TOPIC in alarm.get("AlarmActions", [])


# -- queues --------------------------------------------------------------------------------------
def test_the_template_declares_queues_and_functions() -> None:
    assert len(QUEUES) >= 2
    assert FUNCTIONS


@pytest.mark.parametrize("queue", sorted(set(QUEUES) - set(DEAD_LETTER_QUEUES)))
def test_every_queue_that_is_not_a_dead_letter_queue_redrives_to_one(queue: str) -> None:
    redrive = QUEUES[queue].get("RedrivePolicy")
    assert redrive, f"{queue} has no RedrivePolicy: give it a dead-letter queue"
    dlq = target(redrive["deadLetterTargetArn"])
    assert dlq in QUEUES and dlq != queue
    assert "RedrivePolicy" not in QUEUES[dlq], f"{dlq} is a dead-letter queue with its own redrive"
    assert int(redrive["maxReceiveCount"]) >= 1


@pytest.mark.parametrize("dlq", DEAD_LETTER_QUEUES)
def test_every_dead_letter_queue_has_a_depth_alarm_to_the_alarm_topic(dlq: str) -> None:
    depth = alarms_on(
        "AWS/SQS", "ApproximateNumberOfMessagesVisible", QueueName={"Fn::GetAtt": [dlq, "QueueName"]}
    )
    assert depth, f"no alarm on {dlq}'s ApproximateNumberOfMessagesVisible"
    for name, alarm in depth.items():
        assert notifies(alarm), f"{name} does not notify the AlarmTopic"
        # One message waiting is already a failure someone has to look at.
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold"), name


# -- functions -----------------------------------------------------------------------------------
@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_function_has_an_error_rate_alarm(function: str) -> None:
    fn = {"FunctionName": {"Ref": function}}
    errors, invocations = (
        alarms_on("AWS/Lambda", "Errors", **fn),
        alarms_on("AWS/Lambda", "Invocations", **fn),
    )
    rate_alarms = set(errors) & set(invocations)
    assert rate_alarms, f"no Errors / Invocations alarm for {function} (docs/operations.md)"
    for name in rate_alarms:
        queries = ALARMS[name]["Metrics"]
        ids = {
            q["MetricStat"]["Metric"]["MetricName"]: q["Id"]
            for q in queries
            if "MetricStat" in q and q["MetricStat"]["Metric"]["Dimensions"][0]["Value"] == {"Ref": function}
        }
        [watched_expression] = [q["Expression"] for q in queries if q.get("ReturnData", True)]
        # A rate, not a count: errors divided by invocations.
        assert re.search(rf"\b{ids['Errors']}\s*/\s*{ids['Invocations']}\b", watched_expression), name
        assert notifies(ALARMS[name]), name


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_function_has_a_throttle_alarm(function: str) -> None:
    throttles = alarms_on("AWS/Lambda", "Throttles", FunctionName={"Ref": function})
    assert throttles, f"no Throttles alarm for {function} (docs/operations.md)"
    assert all(notifies(alarm) for alarm in throttles.values())


# -- WeChat ----------------------------------------------------------------------------------------
def emitted_in_code(text: str) -> bool:
    return any(text in path.read_text() for root in SOURCES for path in root.rglob("*.py"))


@pytest.mark.parametrize("metric", [WECHAT_BUSY_METRIC, TOKEN_REFRESH_FAILED_METRIC])
def test_the_wechat_alarms_watch_metrics_the_code_emits(metric: str) -> None:
    found = alarms_on(NAMESPACE, metric, service=STACK_METRICS_SERVICE)
    assert found, f"no alarm on {NAMESPACE}/{metric} with service={STACK_METRICS_SERVICE}"
    assert all(notifies(alarm) for alarm in found.values())
    # Renaming either side fails here: the name is spelled once in the layer's code.
    assert emitted_in_code(f'"{metric}"'), f"{metric} is not a metric name in the code"


def test_the_alarm_topic_subscription_is_an_optional_parameter() -> None:
    assert TEMPLATE["Parameters"]["AlarmEmail"]["Default"] == ""
    subscriptions = resources_of_type(TEMPLATE, "AWS::SNS::Subscription")
    [(name, props)] = [(n, p) for n, p in subscriptions.items() if p["TopicArn"] == ALARM_TOPIC]
    assert props["Endpoint"] == {"Ref": "AlarmEmail"}
    condition = RESOURCES[name]["Condition"]
    assert TEMPLATE["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}


# -- dashboard -------------------------------------------------------------------------------------
def dashboard() -> tuple[dict[str, Any], list[str]]:
    """The dashboard body parsed with each ${...} replaced by its name, and those names."""
    [props] = resources_of_type(TEMPLATE, "AWS::CloudWatch::Dashboard").values()
    sub = props["DashboardBody"]["Fn::Sub"]
    text = sub if isinstance(sub, str) else sub[0]
    names = sub_variables(text)
    body = json.loads(re.sub(r"\$\{([^!}][^}]*)\}", lambda m: f"sub:{m.group(1).strip()}", text))
    return body, names


BODY, SUBSTITUTED = dashboard()
WIDGET_METRICS = [row for w in BODY["widgets"] if w["type"] == "metric" for row in w["properties"]["metrics"]]
SEARCHES = [
    item["expression"]
    for row in WIDGET_METRICS
    for item in row
    if isinstance(item, dict) and "expression" in item
]


def plotted(namespace: str, metric: str) -> set[str]:
    """The dimension values a dashboard plots `namespace`/`metric` for."""
    return {
        str(row[3]) for row in WIDGET_METRICS if isinstance(row[0], str) and row[:2] == [namespace, metric]
    }


def test_every_substitution_in_the_dashboard_resolves() -> None:
    known = set(RESOURCES) | set(TEMPLATE["Parameters"])
    for name in SUBSTITUTED:
        assert name.startswith("AWS::") or name.split(".")[0] in known, name


def test_the_dashboard_shows_every_queue_age_and_dead_letter_depth() -> None:
    ages = plotted("AWS/SQS", "ApproximateAgeOfOldestMessage")
    assert {f"sub:{q}.QueueName" for q in QUEUES} <= ages, "add the missing queues' age to the dashboard"
    depths = plotted("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert {f"sub:{q}.QueueName" for q in DEAD_LETTER_QUEUES} <= depths


def test_the_dashboard_shows_every_functions_errors_and_throttles() -> None:
    for metric in ("Errors", "Throttles"):
        missing = {f"sub:{f}" for f in FUNCTIONS} - plotted("AWS/Lambda", metric)
        assert not missing, f"{metric} of {sorted(missing)} missing from the dashboard"


def test_the_dashboard_lists_every_alarm() -> None:
    [listed] = [w["properties"]["alarms"] for w in BODY["widgets"] if w["type"] == "alarm"]
    assert set(listed) == {f"sub:{name}.Arn" for name in ALARMS}


def test_the_dashboards_own_metrics_are_in_the_functions_namespace_and_emitted() -> None:
    names = [n for expression in SEARCHES for n in re.findall(r'MetricName=\\?"([A-Za-z_]+)\\?"', expression)]
    for expected in ("CallbackProcessed", "Message_sent", "MassBatch_sent", "Delivery_delivered"):
        assert expected in names
    assert all(expression.startswith(f"SEARCH('{{{NAMESPACE},service}} ") for expression in SEARCHES)
    for row in WIDGET_METRICS:
        if isinstance(row[0], str) and not row[0].startswith("AWS/"):
            assert row[0] == NAMESPACE, row
            names.append(row[1])
    for name in names:
        # Literal names, or the prefix of names built from a state (f"Message_{state}").
        prefix = name.split("_")[0]
        assert emitted_in_code(f'"{name}"') or emitted_in_code(f'f"{prefix}_{{'), name
