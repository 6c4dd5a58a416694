"""SQS event source mappings, EventBridge rules and EventBridge Scheduler, through the sample app."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.stack import LocalStack
from tests.local.conftest import eventually

Records = Callable[[str], list[dict[str, Any]]]


def tag() -> str:
    return uuid.uuid4().hex[:8]


def queue_counts(stack: LocalStack, logical_id: str) -> tuple[int, int]:
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.resources[logical_id].ref,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def drain(stack: LocalStack, logical_id: str) -> list[str]:
    sqs = stack.client("sqs")
    url = stack.resources[logical_id].ref
    bodies: list[str] = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def post(stack: LocalStack, path: str, document: dict[str, Any]) -> httpx.Response:
    response = httpx.post(stack.api_url + path, json=document, timeout=15)
    assert response.status_code == 200, response.text
    return response


# -- SQS -------------------------------------------------------------------------------------------


def test_partial_batch_failures_retry_only_the_reported_records(
    sample_stack: LocalStack, records: Records
) -> None:
    t = tag()
    sample_stack.client("sqs").send_message_batch(
        QueueUrl=sample_stack.resources["WorkQueue"].ref,
        Entries=[
            {
                "Id": "ok",
                "MessageBody": f"ok-{t}",
                "MessageAttributes": {"kind": {"DataType": "String", "StringValue": "a"}},
            },
            {"Id": "flaky", "MessageBody": f"flaky-{t}"},
            {"Id": "poison", "MessageBody": f"poison-{t}"},
        ],
    )
    sample_stack.wait_idle(30)
    done = {item["pk"]: item for item in records("sqs#") if t in item["pk"]}
    assert set(done) == {f"sqs#ok-{t}", f"sqs#flaky-{t}"}
    assert done[f"sqs#ok-{t}"]["count"] == 1  # succeeded first time: deleted, never redelivered
    assert (
        done[f"sqs#flaky-{t}"]["count"] == 2
    )  # reported failed once: came back after the visibility timeout
    # maxReceiveCount 2: moto's redrive moved the always-failing record to the DLQ.
    assert f"poison-{t}" in drain(sample_stack, "WorkDlq")
    assert queue_counts(sample_stack, "WorkQueue") == (0, 0)

    record = done[f"sqs#ok-{t}"]["record"]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == sample_stack.resources["WorkQueue"].arn
    assert record["awsRegion"] == "us-east-1"
    assert record["body"] == f"ok-{t}"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "ApproximateFirstReceiveTimestamp"} <= set(record["attributes"])
    assert record["messageAttributes"]["kind"]["stringValue"] == "a"
    assert record["messageAttributes"]["kind"]["dataType"] == "String"
    assert record["messageId"] and record["receiptHandle"] and record["md5OfBody"]


def test_a_handler_error_deletes_nothing(sample_stack: LocalStack, records: Records) -> None:
    t = tag()
    sample_stack.client("sqs").send_message(
        QueueUrl=sample_stack.resources["WorkQueue"].ref, MessageBody=f"crash-{t}"
    )
    sample_stack.wait_idle(30)
    [item] = [i for i in records("sqs#") if t in i["pk"]]
    assert item["count"] == 2  # the failed batch was retried whole, after the visibility timeout
    assert queue_counts(sample_stack, "WorkQueue") == (0, 0)


# -- EventBridge -----------------------------------------------------------------------------------


def put_event(stack: LocalStack, source: str, detail_type: str, detail: dict[str, Any]) -> None:
    response = stack.client("events").put_events(
        Entries=[
            {
                "Source": source,
                "DetailType": detail_type,
                "Detail": json.dumps(detail),
                "EventBusName": stack.resources["Bus"].ref,
            }
        ]
    )
    assert response["FailedEntryCount"] == 0


def test_rule_matches_invoke_the_target_function(sample_stack: LocalStack, records: Records) -> None:
    t = tag()
    put_event(sample_stack, "test.app", "Followed", {"marker": f"follow-{t}"})
    put_event(sample_stack, "test.app", "Unfollowed", {"marker": f"other-{t}"})  # pattern does not match
    sample_stack.wait_idle(20)
    assert [i["marker"] for i in records(f"recorder#other-{t}")] == []
    [item] = records(f"recorder#follow-{t}")
    event = item["event"]
    assert (event["source"], event["detail-type"], event["detail"]) == (
        "test.app",
        "Followed",
        {"marker": f"follow-{t}"},
    )
    assert event["account"] == "123456789012" and event["region"] == "us-east-1"
    assert {"id", "time", "version", "resources"} <= set(event)


def test_events_put_by_a_function_reach_rules(sample_stack: LocalStack, records: Records) -> None:
    t = tag()
    post(
        sample_stack,
        "/publish",
        {"source": "test.app", "detail_type": "Followed", "detail": {"marker": f"fn-{t}"}},
    )
    sample_stack.wait_idle(20)
    assert len(records(f"recorder#fn-{t}")) == 1


def test_input_transformer_shapes_what_the_function_gets(sample_stack: LocalStack, records: Records) -> None:
    t = tag()
    put_event(sample_stack, "test.transform", "Anything", {"marker": t})
    sample_stack.wait_idle(20)
    [item] = records(f"recorder#{t}-transformed")
    assert item["event"] == {"marker": f"{t}-transformed", "source": "test.transform"}


def test_template_rule_delivers_to_a_queue_and_a_function(sample_stack: LocalStack, records: Records) -> None:
    t = tag()
    put_event(sample_stack, "test.audit", "Audit", {"marker": f"audit-{t}"})
    sample_stack.wait_idle(20)
    assert len(records(f"recorder#audit-{t}")) == 1
    [body] = [b for b in drain(sample_stack, "AuditQueue") if t in b]
    assert json.loads(body)["detail"] == {"marker": f"audit-{t}"}


def test_sns_topic_subscriptions_deliver_to_queues(sample_stack: LocalStack) -> None:
    t = tag()
    sample_stack.client("sns").publish(TopicArn=sample_stack.resources["Alerts"].ref, Message=f"alert-{t}")
    [body] = eventually(lambda: [b for b in drain(sample_stack, "AuditQueue") if t in b])
    assert json.loads(body)["Message"] == f"alert-{t}"


# -- EventBridge Scheduler -------------------------------------------------------------------------


def schedule_names(stack: LocalStack) -> set[str]:
    return {s["Name"] for s in stack.client("scheduler").list_schedules()["Schedules"]}


def test_one_time_schedule_created_by_a_function_fires_once_and_is_deleted(
    sample_stack: LocalStack, records: Records
) -> None:
    t = tag()
    post(sample_stack, "/schedule", {"name": f"once-{t}", "input": {"marker": f"sched-{t}", "n": 1}})
    sample_stack.wait_idle(20)
    [item] = records(f"recorder#sched-{t}")
    assert item["event"] == {"marker": f"sched-{t}", "n": 1}  # the schedule's Input is the event
    assert f"once-{t}" not in schedule_names(sample_stack)  # ActionAfterCompletion DELETE


def test_a_kept_one_time_schedule_never_fires_twice(sample_stack: LocalStack, records: Records) -> None:
    t = tag()
    post(sample_stack, "/schedule", {"name": f"kept-{t}", "input": {"marker": f"kept-{t}"}, "after": "NONE"})
    sample_stack.wait_idle(20)
    scheduler = sample_stack.scheduler
    assert scheduler is not None
    polls = scheduler.polls
    assert eventually(lambda: scheduler.polls >= polls + 5, timeout=20)  # five more scheduler polls
    sample_stack.wait_idle(20)
    assert len(records(f"recorder#kept-{t}")) == 1
    assert f"kept-{t}" in schedule_names(sample_stack)


def test_a_future_schedule_waits_for_its_time(sample_stack: LocalStack, records: Records) -> None:
    t = tag()
    due = post(
        sample_stack, "/schedule", {"name": f"later-{t}", "input": {"marker": f"later-{t}"}, "in_seconds": 6}
    ).json()["at"]
    sample_stack.wait_idle(20)  # not due yet: idle does not wait for it
    assert records(f"recorder#later-{t}") == []  # 6 s ahead: far from due yet
    [item] = eventually(lambda: records(f"recorder#later-{t}"), timeout=30)
    assert item["at"] >= due  # recorded by the function: it did not run before its time


def test_a_failing_schedule_target_does_not_hold_up_the_others(
    sample_stack: LocalStack, records: Records
) -> None:
    t = tag()
    scheduler = sample_stack.scheduler
    assert scheduler is not None
    failed = scheduler.failed_count
    missing_queue = sample_stack.resources["WorkQueue"].arn + f"-missing-{t}"
    client = sample_stack.client("scheduler")
    for name, arn in (
        (f"broken-{t}", missing_queue),
        (f"fine-{t}", sample_stack.functions["RecorderFunction"].arn),
    ):
        client.create_schedule(
            Name=name,
            ScheduleExpression="at(2020-01-01T00:00:00)",  # due at once, both in the same poll
            FlexibleTimeWindow={"Mode": "OFF"},
            Target={
                "Arn": arn,
                "RoleArn": "arn:aws:iam::123456789012:role/s",
                "Input": json.dumps({"marker": name}),
            },
        )
    sample_stack.wait_idle(20)  # the failing one is retried, then given up: nothing stays due
    assert len(records(f"recorder#fine-{t}")) == 1
    assert scheduler.failed_count == failed + 1
    fired = json.loads((sample_stack.data_dir / "scheduler-fired.json").read_text())
    [outcome] = [v for k, v in fired.items() if f"broken-{t}" in k]
    assert "gave up after 3 attempt(s)" in outcome


def test_a_schedule_can_target_a_queue(sample_stack: LocalStack, records: Records) -> None:
    t = tag()
    post(sample_stack, "/schedule", {"name": f"q-{t}", "input": f"ok-scheduled-{t}", "target": "queue"})
    sample_stack.wait_idle(20)
    [item] = records(f"sqs#ok-scheduled-{t}")  # the worker function consumed it from the queue
    assert item["record"]["body"] == f"ok-scheduled-{t}"


def test_template_schedules(sample_stack: LocalStack, records: Records) -> None:
    # The template's at() schedule is in the past: it fired once at start-up.
    [item] = records("recorder#template-schedule")
    assert item["event"] == {"marker": "template-schedule"}
    scheduler = sample_stack.client("scheduler")
    tick = scheduler.get_schedule(Name="RecorderFunctionTick")  # the function's ScheduleV2 event
    assert tick["ScheduleExpression"] == "rate(1 hour)"
    assert tick["Target"]["Arn"] == sample_stack.functions["RecorderFunction"].arn
    assert json.loads(tick["Target"]["Input"]) == {"marker": "tick"}


def test_a_scheduled_rule_sends_a_scheduled_event(sample_stack: LocalStack, records: Records) -> None:
    from local.stack.scheduler import AsyncDispatcher, RateTimer
    from local.stack.specs import RuleTargetSpec

    t = tag()
    spec = RuleTargetSpec(
        "Nightly",
        "nightly",
        "arn:aws:events:us-east-1:123456789012:rule/nightly",
        "t",
        "RecorderFunction",
        None,
        "rate(1 day)",
        input_transformer={"InputPathsMap": {"id": "$.id"}, "InputTemplate": f'{{"marker": "{t}"}}'},
    )
    dispatcher = AsyncDispatcher(sample_stack.runtime.tracker)
    timer = RateTimer(
        spec,
        endpoint=sample_stack.endpoint,
        runtime=sample_stack.runtime,
        dispatcher=dispatcher,
        stop=threading.Event(),
    )
    assert timer.period is not None and timer.period.total_seconds() == 86400
    timer.fire()  # what the timer does once per period
    sample_stack.wait_idle(10)
    dispatcher.stop()
    [item] = records(f"recorder#{t}")
    assert item["event"] == {"marker": t}


def test_wait_idle_reports_what_is_busy(sample_stack: LocalStack, tmp_path: Path) -> None:
    release = tmp_path / "release"
    answers: list[httpx.Response] = []
    caller = threading.Thread(
        target=lambda: answers.append(httpx.get(f"{sample_stack.api_url}/wait?file={release}", timeout=15))
    )
    caller.start()
    try:
        # The function runs until the file exists: busy for as long as the test needs.
        assert eventually(lambda: sample_stack.runtime.tracker.in_progress, timeout=10)
        with pytest.raises(TimeoutError, match="invocation"):
            sample_stack.wait_idle(0.2)
    finally:
        release.touch()
        caller.join()
    assert answers[0].json() == {"released": True}
    sample_stack.wait_idle(5)
