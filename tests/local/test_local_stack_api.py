"""The HTTP front and the function workers, through the sample app's stack."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx

from local.stack import LocalStack
from tests.local.conftest import eventually


def get(stack: LocalStack, path: str, **kwargs: object) -> httpx.Response:
    return httpx.get(stack.api_url + path, timeout=15, **kwargs)  # type: ignore[arg-type]


def test_api_event_is_a_rest_proxy_event(sample_stack: LocalStack) -> None:
    response = get(sample_stack, "/hello/bob?x=1&x=2&y=", headers={"X-Trace": "t1"})
    assert response.status_code == 200
    assert response.headers["X-Custom"] == "yes"
    document = response.json()
    event = document["event"]
    assert document["greeting"] == "hello bob"
    assert (event["resource"], event["path"], event["httpMethod"]) == ("/hello/{name}", "/hello/bob", "GET")
    assert event["pathParameters"] == {"name": "bob"}
    assert event["queryStringParameters"] == {"x": "2", "y": ""}
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"], "y": [""]}
    assert event["headers"]["X-Trace"] == "t1"
    assert event["multiValueHeaders"]["X-Trace"] == ["t1"]
    assert (event["body"], event["isBase64Encoded"]) == (None, False)
    context = event["requestContext"]
    assert context["requestId"] == response.headers["x-amzn-RequestId"]
    assert (context["stage"], context["resourcePath"], context["httpMethod"]) == (
        "test",
        "/hello/{name}",
        "GET",
    )
    assert context["path"] == "/test/hello/bob"
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["identity"]["userArn"] is None  # an open route carries no IAM identity
    lambda_context = document["context"]
    spec = sample_stack.functions["HttpFunction"]
    assert lambda_context["function_name"] == spec.name == "wxreach-local-HttpFunction"
    assert lambda_context["invoked_function_arn"] == spec.arn
    assert lambda_context["memory_limit_in_mb"] == "256"
    assert lambda_context["aws_request_id"] == context["requestId"]
    assert 0 < lambda_context["remaining"] <= 5000  # Globals Timeout: 5


def test_bodies_text_binary_and_multi_value_headers(sample_stack: LocalStack) -> None:
    text = httpx.post(sample_stack.api_url + "/echo", content="héllo", timeout=15)
    assert text.status_code == 201
    assert text.json() == {"body": "héllo", "isBase64Encoded": False}
    assert text.headers.get_list("Set-Cookie") == ["a=1", "b=2"]
    binary = httpx.post(sample_stack.api_url + "/echo", content=b"\xff\xfe\x00", timeout=15)
    assert binary.json() == {"body": "//4A", "isBase64Encoded": True}
    encoded = httpx.post(sample_stack.api_url + "/echo?binary=1", content=b"", timeout=15)
    assert (encoded.status_code, encoded.content) == (201, b"\x00\x01binary")
    assert encoded.headers["Content-Type"] == "application/octet-stream"


def test_greedy_and_any_routes(sample_stack: LocalStack) -> None:
    readme = get(sample_stack, "/files/readme").json()
    assert readme == {"resource": "/files/readme", "method": "GET", "params": None}
    deleted = httpx.delete(sample_stack.api_url + "/files/a/b/c.txt", timeout=15).json()
    assert deleted == {"resource": "/files/{proxy+}", "method": "DELETE", "params": {"proxy": "a/b/c.txt"}}
    posted = httpx.post(sample_stack.api_url + "/files/readme", timeout=15).json()
    assert posted["resource"] == "/files/{proxy+}"  # only GET is declared on the literal path


def test_iam_routes_need_the_api_key_before_the_function_runs(sample_stack: LocalStack) -> None:
    pool = sample_stack.runtime.pools["HttpFunction"]
    before = pool.invocations
    for headers in ({}, {"x-api-key": "wrong"}):
        refused = get(sample_stack, "/admin", headers=headers)
        assert (refused.status_code, refused.json()) == (403, {"message": "Forbidden"})
    assert pool.invocations == before
    allowed = get(sample_stack, "/admin", headers={"X-Api-Key": sample_stack.api_key})
    assert allowed.status_code == 200
    assert allowed.json() == {"userArn": "arn:aws:iam::123456789012:user/local-operator"}
    assert sample_stack.api_key == "test-key"


def test_unknown_routes_are_missing_authentication_token(sample_stack: LocalStack) -> None:
    for method, path in (("GET", "/nowhere"), ("DELETE", "/echo"), ("GET", "/files")):
        response = httpx.request(method, sample_stack.api_url + path, timeout=15)
        assert (response.status_code, response.json()) == (404, {"message": "Missing Authentication Token"})


def test_implicit_api_routes_use_the_prod_stage(sample_stack: LocalStack) -> None:
    assert get(sample_stack, "/implicit").json() == {"stage": "Prod"}


def test_a_crashing_handler_is_a_502_and_the_worker_survives(sample_stack: LocalStack) -> None:
    pool = sample_stack.runtime.pools["HttpFunction"]
    crashed = get(sample_stack, "/crash")
    assert (crashed.status_code, crashed.json()) == (502, {"message": "Internal server error"})
    assert get(sample_stack, "/malformed").status_code == 502
    assert get(sample_stack, "/hello/again").status_code == 200
    assert pool.errors >= 1
    result = sample_stack.invoke("HttpFunction", {"resource": "/crash"})
    assert not result.ok
    assert result.error is not None
    assert (result.error_type, result.error["errorMessage"]) == ("RuntimeError", "boom")
    assert any("raise RuntimeError" in line for line in result.error["stackTrace"])


def test_a_timed_out_invocation_is_a_504_and_the_next_call_cold_starts(sample_stack: LocalStack) -> None:
    slow = get(sample_stack, "/slow?sleep=5")  # Timeout: 1
    assert (slow.status_code, slow.json()) == (504, {"message": "Endpoint request timed out"})
    assert get(sample_stack, "/slow").json() == {"calls": 1}  # a fresh worker: module state is new
    log = Path(sample_stack.functions["SlowFunction"].log_path).read_text()
    assert "Task timed out after 1.00 seconds" in log


def test_function_environment_is_wired_to_the_created_resources(sample_stack: LocalStack) -> None:
    document = get(sample_stack, "/env").json()
    env = document["env"]
    resources = sample_stack.resources
    assert env["WORK_QUEUE_URL"] == resources["WorkQueue"].ref == resources["WorkQueue"].url
    assert env["WORK_QUEUE_ARN"] == resources["WorkQueue"].arn
    assert env["WORK_QUEUE_NAME"] == resources["WorkQueue"].name == "wxreach-local-WorkQueue"
    assert env["BUS_NAME"] == resources["Bus"].ref == "wxreach-local-bus"
    assert env["RECORDER_ARN"] == sample_stack.functions["RecorderFunction"].arn
    assert env["SCHEDULE_GROUP"] == resources["ScheduleGroup"].ref
    assert env["RECORD_TABLE"] == resources["RecordTable"].ref  # from Globals
    assert (env["JOINED"], env["CHOSEN"], env["LITERAL"]) == ("a-hello-y", "dev-value", "${NotAVar}")
    assert env["SUBBED"] == "hello/wxreach-local/us-east-1/123456789012/aws"
    assert (env["NUMBER"], env["FLAG"]) == ("42", "true")
    assert env["AWS_ENDPOINT_URL"] == sample_stack.moto_url
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_DEFAULT_REGION"]) == ("testing", "us-east-1")
    assert env["POWERTOOLS_TRACE_DISABLED"] == "true"
    assert (env["AWS_LAMBDA_FUNCTION_NAME"], env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]) == (
        "wxreach-local-HttpFunction",
        "256",
    )
    assert env["WXREACH_WECHAT_API_BASE"] == "http://127.0.0.1:8999"
    # settings env < env-vars file Parameters < env-vars file per function < --function-env
    assert (env["EXTRA_FOR_ALL"], env["FROM_FILE_ALL"], env["FROM_FILE_HTTP"], env["FROM_CLI"]) == (
        "extra",
        "all",
        "http",
        "cli",
    )
    assert env["AWS_PROFILE"] is None and env["TZ"] == "UTC"
    code_dir = sample_stack.functions["HttpFunction"].code_dir
    layer_dir = str(Path(sample_stack.settings.template).parent / "layer")
    assert document["sys_path"][:2] == [code_dir, layer_dir]
    repo_root = str(Path(__file__).resolve().parents[2])
    assert repo_root not in document["sys_path"]
    assert document["cwd"] == code_dir
    recorder_env = sample_stack.runtime.pools["RecorderFunction"].environment
    assert "FROM_FILE_HTTP" not in recorder_env and recorder_env["FROM_FILE_ALL"] == "all"


def test_handler_output_is_kept_in_the_function_log(sample_stack: LocalStack) -> None:
    # The console side (lines prefixed with the function name) is checked through the CLI test.
    get(sample_stack, "/hello/printer")
    log = Path(sample_stack.functions["HttpFunction"].log_path)
    assert eventually(lambda: "saying hello to printer" in log.read_text(), timeout=10)


def test_concurrent_requests_are_all_served(sample_stack: LocalStack) -> None:
    statuses: list[int] = []

    def call(index: int) -> None:
        statuses.append(get(sample_stack, f"/hello/n{index}").status_code)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 8


def test_stack_json_describes_the_running_stack(sample_stack: LocalStack) -> None:
    described = json.loads((sample_stack.data_dir / "stack.json").read_text())
    assert described["status"] == "running"
    assert (described["api_url"], described["moto_url"]) == (sample_stack.api_url, sample_stack.moto_url)
    assert described["api_key"] == "test-key"
    assert described["resources"]["WorkQueue"]["url"] == sample_stack.resources["WorkQueue"].ref
    assert described["resources"]["SchedulerRole"]["emulation"] == "ignored"
    assert "ProdOnlyTable" not in described["resources"]  # Condition IsProd is false
    tables = sample_stack.client("dynamodb").list_tables()["TableNames"]
    own = [name for name in tables if name.startswith("wxreach-local-")]
    assert own == ["wxreach-local-RecordTable"]  # ProdOnlyTable's condition is false
    assert {
        "method": "GET",
        "path": "/admin",
        "function": "HttpFunction",
        "api_key_required": True,
    } in described["routes"]


def test_the_stage_prefix_of_the_deployed_url_is_accepted(sample_stack: LocalStack) -> None:
    event = get(sample_stack, "/test/hello/staged?q=1").json()["event"]
    assert (event["path"], event["requestContext"]["path"]) == ("/hello/staged", "/test/hello/staged")
    assert event["queryStringParameters"] == {"q": "1"}
    assert get(sample_stack, "/Prod/hello/staged").status_code == 404  # another API's stage


def test_outputs_resolve_against_local_resources(sample_stack: LocalStack) -> None:
    assert sample_stack.outputs == {
        "WorkQueueUrl": sample_stack.resources["WorkQueue"].ref,
        "AlertsTopic": sample_stack.resources["Alerts"].ref,
    }  # ProdOnly's condition is false
    assert sample_stack.resources["Alerts"].ref.startswith("arn:aws:sns:us-east-1:123456789012:")


def test_a_dying_worker_is_replaced(sample_stack: LocalStack) -> None:
    died = sample_stack.invoke("HttpFunction", {"resource": "/exit"})
    assert not died.ok and died.error_type == "Runtime.ExitError"
    assert get(sample_stack, "/hello/after-exit").status_code == 200


def test_a_missing_handler_fails_each_call_until_it_exists(sample_stack: LocalStack) -> None:
    assert any(
        "LateFunction: handler late_handler.handler not importable yet" in w for w in sample_stack.warnings
    )
    missing = sample_stack.invoke("LateFunction", {})
    assert not missing.ok and missing.error_type == "Runtime.ImportModuleError"
    code_dir = Path(sample_stack.functions["LateFunction"].code_dir)
    (code_dir / "late_handler.py").write_text("def handler(event, context):\n    return {'late': event}\n")
    arrived = sample_stack.invoke(sample_stack.functions["LateFunction"].arn, {"x": 1})  # by ARN
    assert (arrived.ok, arrived.payload) == (True, {"late": {"x": 1}})
