"""The `wxreach` CLI without a stack: where it sends requests (the local stack's data directory,
a CloudFormation stack on moto), how it signs them (SigV4, checked against the algorithm), and
what it prints and exits with, the operator API played by an httpx.MockTransport."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.credentials import Credentials
from moto import mock_aws
from typer.testing import CliRunner, Result

from wxreach_cli.aws import SigV4, stack_target
from wxreach_cli.client import Api, UsageProblem, local_target
from wxreach_cli.main import app

APPID = "wx1234567890abcdef"
BID = "b0123456789abcdef0123"
API_URL = "http://127.0.0.1:3999"
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(autouse=True)
def _no_operator_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WXREACH_LOCAL_API_KEY", "WXREACH_LOCAL_DATA_DIR", "WXREACH_ACCOUNT", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)


def stack_dir(tmp_path: Path, **stack: Any) -> Path:
    (tmp_path / "stack.json").write_text(json.dumps({"status": "running", "api_url": API_URL, **stack}))
    return tmp_path


def answer(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, json=body)


class FakeApi:
    """Canned answers by (method, path); records every request."""

    def __init__(self, routes: dict[tuple[str, str], Handler | httpx.Response]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes.get((request.method, request.url.path))
        if route is None:
            return answer(404, {"message": "Missing Authentication Token"})
        return route(request) if callable(route) else route

    def bodies(self, method: str, path: str) -> list[Any]:
        return [
            json.loads(r.content) if r.content else None
            for r in self.requests
            if (r.method, r.url.path) == (method, path)
        ]


def cli(api: Handler, *args: str, input: str | None = None) -> Result:
    result = CliRunner().invoke(
        app, ["--api-url", API_URL, "--api-key", "k", *args], obj=httpx.MockTransport(api), input=input
    )
    assert "Traceback" not in result.output
    return result


# -- targets -----------------------------------------------------------------------------------


def sent_headers(target: Any) -> httpx.Headers:
    seen: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda r: seen.append(r) or answer(200, {"accounts": []}))
    Api(target, transport=transport).get("accounts")
    assert str(seen[0].url).startswith(target.api_url)
    return seen[0].headers


def test_the_local_stack_is_read_from_its_data_directory(tmp_path: Path) -> None:
    target = local_target(data_dir=stack_dir(tmp_path, api_key="from-stack-json"), api_url=None, api_key=None)
    assert target.api_url == API_URL
    assert sent_headers(target)["x-api-key"] == "from-stack-json"


def test_flags_then_the_environment_then_stored_keys_choose_the_api_key(tmp_path: Path) -> None:
    data_dir = stack_dir(tmp_path)
    (tmp_path / "api-key").write_text("from-file\n")
    env = {"WXREACH_LOCAL_API_KEY": "from-env"}

    def key(api_key: str | None, environ: dict[str, str]) -> str:
        target = local_target(data_dir=data_dir, api_url=None, api_key=api_key, environ=environ)
        return sent_headers(target)["x-api-key"]

    assert key(None, {}) == "from-file"
    assert key(None, env) == "from-env"
    assert key("from-flag", env) == "from-flag"


def test_the_data_directory_comes_from_the_stacks_own_variable(tmp_path: Path) -> None:
    environ = {"WXREACH_LOCAL_DATA_DIR": str(stack_dir(tmp_path, api_key="k"))}
    assert local_target(data_dir=None, api_url=None, api_key=None, environ=environ).api_url == API_URL


def test_an_explicit_api_url_needs_no_stack_but_a_key(tmp_path: Path) -> None:
    url = "http://127.0.0.1:4000"
    target = local_target(data_dir=tmp_path, api_url=url, api_key="k", environ={})
    assert (target.api_url, sent_headers(target)["x-api-key"]) == (url, "k")
    with pytest.raises(UsageProblem, match="no API key"):
        local_target(data_dir=tmp_path, api_url=url, api_key=None, environ={})


@pytest.mark.parametrize(
    ("stack", "problem"),
    [
        (None, "stack.json does not exist"),
        ({"status": "stopped", "api_url": API_URL}, "is stopped"),
        ({"status": "running"}, "names no api_url"),
        ("{not json", "cannot read"),
    ],
)
def test_without_a_running_local_stack_the_cli_exits_2_with_a_hint(
    tmp_path: Path, stack: Any, problem: str
) -> None:
    if stack is not None:
        (tmp_path / "stack.json").write_text(stack if isinstance(stack, str) else json.dumps(stack))
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "accounts", "list"])
    assert result.exit_code == 2
    assert problem in result.stderr and "make local" in result.stderr


def test_conflicting_targets_are_usage_errors() -> None:
    assert (
        CliRunner().invoke(app, ["--stack", "prod", "--api-url", API_URL, "accounts", "list"]).exit_code == 2
    )
    assert CliRunner().invoke(app, ["--region", "eu-west-1", "accounts", "list"]).exit_code == 2


def cfn_stack(name: str, outputs: dict[str, str]) -> None:
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    boto3.client("cloudformation", region_name="eu-west-1").create_stack(
        StackName=name, TemplateBody=json.dumps(template)
    )


@mock_aws
def test_a_deployed_stack_is_found_by_its_api_url_output_and_signed_for() -> None:
    url = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod"
    cfn_stack("wxreach-prod", {"ApiUrl": url, "QuotaTableName": "quota"})
    target = stack_target("wxreach-prod", "eu-west-1")
    assert target.api_url == url
    seen: list[httpx.Request] = []
    Api(target, transport=httpx.MockTransport(lambda r: seen.append(r) or answer(200, {}))).get(
        "accounts", APPID
    )
    assert seen[0].url.path == f"/prod/accounts/{APPID}"
    assert "/eu-west-1/execute-api/aws4_request" in seen[0].headers["authorization"]
    assert "x-api-key" not in seen[0].headers


@mock_aws
def test_a_stack_that_is_not_there_or_not_wxreach_is_a_usage_problem() -> None:
    cfn_stack("other", {"Something": "else"})
    with pytest.raises(UsageProblem, match="does not exist"):
        stack_target("missing", "eu-west-1")
    with pytest.raises(UsageProblem, match="no ApiUrl output"):
        stack_target("other", "eu-west-1")


# -- SigV4 -------------------------------------------------------------------------------------

CREDENTIALS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token")
AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/(?P<date>\d{8})/eu-west-1/execute-api/aws4_request, "
    r"SignedHeaders=(?P<headers>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})"
)


def signed(body: bytes) -> httpx.Request:
    request = httpx.Request(
        "POST",
        "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/accounts/wx1234567890abcdef/broadcasts",
        params={"state": "sent", "limit": "5"},
        content=body,
        headers={"content-type": "application/json", "user-agent": "changed-by-a-proxy"},
    )
    return next(SigV4(CREDENTIALS, "eu-west-1").sync_auth_flow(request))


def signature_by_the_book(request: httpx.Request, body: bytes) -> str:
    """SigV4 as AWS documents it, for the headers the request says it signed."""
    match = AUTHORIZATION.fullmatch(request.headers["authorization"])
    assert match is not None
    names = match["headers"].split(";")
    amz_date, date = request.headers["x-amz-date"], match["date"]
    query = "&".join(sorted(f"{k}={v}" for k, v in request.url.params.multi_items()))
    canonical = "\n".join(
        [
            request.method,
            request.url.path,
            query,
            *(f"{name}:{request.headers[name].strip()}" for name in names),
            "",
            ";".join(names),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{date}/eu-west-1/execute-api/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = f"AWS4{CREDENTIALS.secret_key}".encode()
    for part in (date, "eu-west-1", "execute-api", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_sigv4_signs_method_path_query_host_and_the_body_hash() -> None:
    body = json.dumps({"name": "Spring", "channel": "template"}).encode()
    request = signed(body)

    match = AUTHORIZATION.fullmatch(request.headers["authorization"])
    assert match is not None, request.headers["authorization"]
    assert match["headers"] == "content-type;host;x-amz-date;x-amz-security-token"
    assert request.headers["x-amz-security-token"] == "session-token"
    assert re.fullmatch(r"\d{8}T\d{6}Z", request.headers["x-amz-date"])
    assert match["signature"] == signature_by_the_book(request, body)
    assert match["signature"] != signature_by_the_book(request, body + b" ")  # the body is in it
    assert request.content == body


# -- output, errors, exit codes ----------------------------------------------------------------

BROADCASTS = f"/accounts/{APPID}/broadcasts"


def broadcast(state: str = "draft", **fields: Any) -> dict[str, Any]:
    return {
        "id": BID,
        "appid": APPID,
        "name": "Spring",
        "channel": "template",
        "audience": {"kind": "all"},
        "state": state,
        "created_at": "2026-12-04T10:00:00Z",
        "updated_at": "2026-12-04T10:00:00Z",
        "created_by": "arn:aws:iam::123456789012:user/ops",
        **fields,
    }


def view(state: str, **by_state: int) -> dict[str, Any]:
    return {"broadcast": broadcast(state), "counts": {"recipients": 30, "by_state": by_state}}


def test_json_prints_the_apis_answer_and_nothing_else() -> None:
    page = {"accounts": [{"appid": APPID, "original_id": "gh_0123456789ab"}], "next": None}
    result = cli(FakeApi({("GET", "/accounts"): answer(200, page)}), "--json", "accounts", "list")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"accounts": page["accounts"]}
    assert result.stderr == ""


def test_an_api_refusal_exits_1_with_its_reason_and_message() -> None:
    api = FakeApi(
        {("GET", f"{BROADCASTS}/{BID}"): answer(404, {"error": "unknown_broadcast", "message": "no such"})}
    )
    result = cli(api, "--json", "broadcast", "show", BID, "-a", APPID)
    assert result.exit_code == 1
    assert "error: unknown_broadcast: no such" in result.stderr
    assert result.stdout == ""


def test_validation_problems_are_listed() -> None:
    problems = [
        {
            "loc": ["body", "name"],
            "type": "string_too_short",
            "msg": "String should have at least 1 character",
        }
    ]
    body = {"error": "invalid_request", "message": "request failed validation", "problems": problems}
    result = cli(
        FakeApi({("POST", BROADCASTS): answer(422, body)}), "broadcast", "create", "-a", APPID, "--name", ""
    )
    assert result.exit_code == 1
    assert "invalid_request: request failed validation" in result.stderr
    assert "body.name: String should have at least 1 character" in result.stderr


@pytest.mark.parametrize(
    ("status", "body", "hint"),
    [
        (404, {"message": "Missing Authentication Token"}, "no such route"),
        (403, {"message": "Forbidden"}, "API key"),
        (500, {"message": "Internal server error"}, "OperatorApiFunction.log"),
        (502, {"error": "wechat_error", "reason": "system", "errcode": -1, "message": "busy"}, None),
    ],
)
def test_failures_without_a_reason_get_a_hint(status: int, body: dict[str, Any], hint: str | None) -> None:
    result = cli(FakeApi({("GET", f"/accounts/{APPID}"): answer(status, body)}), "accounts", "show", APPID)
    assert result.exit_code == 1
    assert body["message"] in result.stderr
    assert ("hint:" in result.stderr) is (hint is not None)
    if hint:
        assert hint in result.stderr


def test_an_unreachable_api_suggests_starting_the_local_stack() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    result = cli(refuse, "accounts", "list")
    assert result.exit_code == 1
    assert (
        "cannot reach http://127.0.0.1:3999" in result.stderr and "is `make local` running?" in result.stderr
    )


def test_an_answer_that_is_not_json_is_a_failure_not_a_crash() -> None:
    result = cli(FakeApi({("GET", "/accounts"): httpx.Response(200, text="<html>")}), "accounts", "list")
    assert result.exit_code == 1 and "not JSON" in result.stderr


def estimate(recipients: int, needs_confirmation: bool) -> httpx.Response:
    return answer(
        200,
        {
            "recipients": recipients,
            "excluded": {},
            "needs_confirmation": needs_confirmation,
            "large_send_threshold": 20,
            "computed_at": "2026-12-04T10:00:00Z",
        },
    )


def test_a_large_publish_off_a_terminal_needs_confirm_and_sends_nothing_without_it() -> None:
    publish = f"{BROADCASTS}/{BID}/publish"
    api = FakeApi(
        {
            ("POST", f"{BROADCASTS}/{BID}/estimate"): estimate(30, True),
            ("POST", publish): answer(202, broadcast("sending", confirmed_count=30)),
        }
    )
    refused = cli(api, "broadcast", "publish", BID, "-a", APPID)
    assert refused.exit_code == 2
    assert "--confirm 30" in refused.stderr
    assert api.bodies("POST", publish) == []

    confirmed = cli(
        api, "--json", "broadcast", "publish", BID, "-a", APPID, "--confirm", "30", "--at", "2026-12-05T09:30"
    )
    assert confirmed.exit_code == 0, confirmed.stderr
    assert api.bodies("POST", publish) == [{"at": "2026-12-05T09:30:00Z", "confirm": 30}]
    assert json.loads(confirmed.stdout)["confirmed_count"] == 30


def test_a_publish_the_api_asks_to_confirm_after_a_small_estimate_still_needs_the_count() -> None:
    # The audience grew past the threshold between the estimate and the publish.
    body = {"error": "confirmation_required", "message": 'publishing to 31 needs "confirm": 31'}
    estimates = iter([estimate(19, False), estimate(31, True)])
    api = FakeApi(
        {
            ("POST", f"{BROADCASTS}/{BID}/estimate"): lambda _: next(estimates),
            ("POST", f"{BROADCASTS}/{BID}/publish"): answer(409, body),
        }
    )
    result = cli(api, "broadcast", "publish", BID, "-a", APPID)
    assert result.exit_code == 2 and "--confirm 31" in result.stderr


def test_a_small_publish_goes_straight_out() -> None:
    api = FakeApi(
        {
            ("POST", f"{BROADCASTS}/{BID}/estimate"): estimate(5, False),
            ("POST", f"{BROADCASTS}/{BID}/publish"): answer(202, broadcast("sending")),
        }
    )
    result = cli(api, "broadcast", "publish", BID, "-a", APPID)
    assert result.exit_code == 0 and "sending" in result.stdout
    assert api.bodies("POST", f"{BROADCASTS}/{BID}/publish") == [{}]


def polled(*answers: dict[str, Any]) -> Handler:
    """The answers in turn, then the last one for ever."""
    queue = list(answers)
    return lambda _: answer(200, queue.pop(0) if len(queue) > 1 else queue[0])


@pytest.mark.parametrize(
    ("final", "code"), [(view("sent", delivered=29, failed=1), 0), (view("failed", failed=30), 1)]
)
def test_watch_polls_until_a_final_state(final: dict[str, Any], code: int) -> None:
    api = FakeApi({("GET", f"{BROADCASTS}/{BID}"): polled(view("scheduled"), view("sending", sent=3), final)})
    result = cli(api, "--json", "broadcast", "watch", BID, "-a", APPID, "--interval", "0")
    assert result.exit_code == code
    assert json.loads(result.stdout) == final
    assert len(api.requests) == 3


def test_watch_gives_up_at_its_timeout() -> None:
    api = FakeApi({("GET", f"{BROADCASTS}/{BID}"): answer(200, view("sending", sent=3))})
    result = cli(api, "broadcast", "watch", BID, "-a", APPID, "--interval", "0", "--timeout", "0")
    assert result.exit_code == 1
    assert "still sending after 0 s" in result.stderr and result.stdout == ""


def sync_view(state: str, seen: int, error: str | None = None) -> dict[str, Any]:
    return {
        "job_id": "j1",
        "state": state,
        "phase": "list",
        "pages": 1,
        "seen": seen,
        "total": 30,
        "percent": None,
        "kept": 0,
        "mark_unfollowed": True,
        "marked_unfollowed": 0,
        "started_at": "2026-12-04T10:00:00Z",
        "updated_at": "2026-12-04T10:00:00Z",
        "finished_at": None,
        "error": error,
    }


def test_a_follower_sync_that_fails_exits_1_with_its_error() -> None:
    path = f"/accounts/{APPID}/followers/sync"
    api = FakeApi(
        {
            ("POST", path): answer(202, sync_view("running", 0)),
            ("GET", path): polled(sync_view("running", 10), sync_view("failed", 10, "wechat_error")),
        }
    )
    result = cli(api, "followers", "sync", "-a", APPID, "--interval", "0", "--no-mark-unfollowed")
    assert result.exit_code == 1 and "failed: wechat_error" in result.stderr
    assert api.requests[0].url.params["mark_unfollowed"] == "false"


def test_keyword_checks_go_in_requests_of_at_most_1000(tmp_path: Path) -> None:
    values = tmp_path / "values.csv"
    values.write_text("type,value,enum\n" + "thing,咖啡豆,\n" * 1500 + "phrase,已发货,已发货|已签收\n")

    def check(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["items"]
        return answer(200, {"results": [{"valid": "enum" not in item} for item in items]})

    api = FakeApi({("POST", "/keywords/check"): check})
    result = cli(api, "--json", "keywords", "check", str(values))
    assert [len(body["items"]) for body in api.bodies("POST", "/keywords/check")] == [1000, 501]
    assert api.bodies("POST", "/keywords/check")[1]["items"][-1]["enum"] == ["已发货", "已签收"]
    assert result.exit_code == 1 and "1 of 1501 values" in result.stderr


def report_of(bid: str, created: str) -> dict[str, Any]:
    return {
        "broadcast": {**broadcast("sent"), "id": bid, "created_at": created},
        "counts": {"recipients": 10, "by_state": {"delivered": 10}, "delivery": {"delivered": 10}},
        "outcomes_final": True,
        "delivery_rate": 1.0,
        "failures": [],
        "timeline": {"bucket_seconds": 300, "buckets": []},
        "scanned": 10,
        "complete": True,
        "export": None,
        "generated_at": "2026-12-05T00:00:00Z",
    }


def test_a_period_report_combines_the_broadcasts_sent_in_it(tmp_path: Path) -> None:
    listed = [  # newest first, over two pages
        ("b00000000000000000005", "2026-12-06T00:00:00Z", "sent"),  # after the period
        ("b00000000000000000004", "2026-12-04T12:00:00Z", "sent"),
        ("b00000000000000000003", "2026-12-03T12:00:00Z", "draft"),  # never sent
        ("b00000000000000000002", "2026-12-02T00:00:00Z", "cancelled"),
        ("b00000000000000000001", "2026-11-30T23:59:59Z", "sent"),  # before it: paging stops
    ]
    pages = {
        None: {"broadcasts": [broadcast(s, id=i, created_at=c) for i, c, s in listed[:3]], "next": "p2"},
        "p2": {"broadcasts": [broadcast(s, id=i, created_at=c) for i, c, s in listed[3:]], "next": "p3"},
    }
    routes: dict[tuple[str, str], Handler | httpx.Response] = {
        ("GET", BROADCASTS): lambda r: answer(200, pages[r.url.params.get("after")]),
    }
    for bid, created, _ in listed:
        routes[("GET", f"{BROADCASTS}/{bid}/report")] = answer(200, report_of(bid, created))
    api = FakeApi(routes)

    args = [
        "--json",
        "report",
        "-a",
        APPID,
        "--since",
        "2026-12-01",
        "--until",
        "2026-12-05",
        "--out",
        str(tmp_path),
    ]
    result = cli(api, *args)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert [b["id"] for b in summary["broadcasts"]] == ["b00000000000000000002", "b00000000000000000004"]
    assert (summary["recipients"], summary["delivered"]) == (20, 20)
    assert summary["title"] == f"{APPID}, 2026-12-01 – 2026-12-05"
    assert Path(summary["files"]["html"]) == tmp_path / "report.html" and (tmp_path / "report.html").exists()
    assert [r.url.params.get("after") for r in api.requests if r.url.path == BROADCASTS] == [None, "p2"]


def test_a_report_needs_a_broadcast_or_a_period() -> None:
    api = FakeApi({})
    assert cli(api, "report", "-a", APPID).exit_code == 2
    assert cli(api, "report", BID, "-a", APPID, "--since", "2026-12-01").exit_code == 2
    assert api.requests == []
