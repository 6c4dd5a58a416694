"""The operator API against its own document (docs/openapi.json), over HTTP on the local stack:
every documented operation is routed, every error status it answers is reached by a known request,
and schemathesis' generated requests get no 5xx, documented bodies and documented statuses."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import utils as conjecture_utils
from schemathesis import DataGenerationMethod
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests.e2e.conftest import APP_SECRET, APPID, REPO_ROOT, System

pytestmark = pytest.mark.e2e

# Powertools writes OpenAPI 3.1, which schemathesis 3 validates behind this switch.
schemathesis.experimental.OPEN_API_3_1.enable()
# /wechat/{appid} (WeChat's callbacks, not an operator route) has its own fuzz tests: never here.
SCHEMA = schemathesis.from_path(REPO_ROOT / "docs" / "openapi.json")
OPERATIONS = [
    (method.upper(), path)
    for path, methods in SCHEMA.raw_schema["paths"].items()
    for method in methods
    if not path.startswith("/wechat/")
]
TEMPLATE = "TPL_CONTRACT_PAID"
OPENID = "oContractFollower00000000001"
QUIET_APPID = "wxc0ntract0000000q"  # registered in wxreach only: no sync ever ran, unknown to WeChat
CONTENT = {"template_id": TEMPLATE, "data": {"thing1": "{{product}}", "amount2": "¥88.00"}}
DRAFT = {
    "channel": "template",
    "audience": {"kind": "segment", "recipients": [{"openid": OPENID, "params": {"product": "豆"}}]},
    "content": CONTENT,
}
TOKEN_PATH = "/cgi-bin/stable_token"
FUZZ = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time; the report names the input
    report_multiple_bugs=False,
    suppress_health_check=list(HealthCheck),
)

# Records the fixture creates; generated path parameters are often swapped for them, so requests
# get past "unknown account" to the records they act on.
KNOWN: dict[str, str] = {"appid": APPID, "openid": OPENID, "channel": "template", "template_id": TEMPLATE}


@dataclass
class Contract:
    system: System
    ids: dict[str, str]  # the fixture's broadcasts by role

    @property
    def base_url(self) -> str:
        return self.system.stack.api_url

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.system.stack.api_key}


def _registration(appid: str) -> dict[str, Any]:
    """An account WeChat does not know: every call it makes to WeChat is refused."""
    return {
        "appid": appid,
        "original_id": "gh_" + appid[2:],
        "encryption_mode": "plaintext",
        "secrets": {"app_secret": APP_SECRET, "token": "contractToken1"},
    }


def _draft(system: System, name: str, appid: str = APPID, **spec: Any) -> str:
    created = system.api.post(f"/accounts/{appid}/broadcasts", json={**DRAFT, "name": name, **spec})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _fresh(system: System) -> dict[str, str]:
    """A new account WeChat does not know, with a template draft: its first template lookup goes
    to WeChat (the next ones within a minute would not), so each case that needs one gets its own."""
    appid = "wxc0ntract" + secrets.token_hex(4)
    registered = system.api.post("/accounts", json=_registration(appid))
    assert registered.status_code == 201, registered.text
    return {"fresh": appid, "fresh_draft": _draft(system, "contract-fresh", appid)}


@contextmanager
def _token_fault(system: System, errcode: int | None) -> Iterator[None]:
    """Meanwhile WeChat answers every access-token request with `errcode`."""
    if errcode is None:
        yield
        return
    rule = system.wechat.post("/admin/faults", json={"path": TOKEN_PATH, "errcodes": {str(errcode): 1.0}})
    assert rule.status_code == 200, rule.text
    try:
        yield
    finally:
        system.wechat.post("/admin/faults/clear", json={"path": TOKEN_PATH})


@pytest.fixture(scope="module")
def contract(system: System) -> Contract:
    template = system.wechat.post(
        f"{system.admin}/templates",
        json={"template_id": TEMPLATE, "title": "订单支付成功", "keywords": ["thing1", "amount2"]},
    )
    assert template.status_code == 201, template.text
    assert system.api.post(f"/accounts/{APPID}/templates/sync").status_code == 200
    assert system.wechat.post(f"{system.admin}/users/{OPENID}/follow", json={}).status_code == 200
    system.settle()
    assert system.follower(OPENID).status_code == 200
    sent = system.api.post(
        f"/accounts/{APPID}/messages",
        json={"channel": "template", "openid": OPENID, "content": CONTENT, "params": {"product": "豆"}},
    )
    assert sent.status_code == 200, sent.text
    quiet = system.api.post("/accounts", json=_registration(QUIET_APPID))
    assert quiet.status_code == 201, quiet.text
    cancelled = _draft(system, "contract-cancelled")
    assert system.api.post(f"/accounts/{APPID}/broadcasts/{cancelled}/cancel").status_code == 200
    KNOWN["message_id"] = sent.json()["message"]["message_id"]
    return Contract(
        system,
        {
            "draft": _draft(system, "contract-draft"),
            "errors": _draft(system, "contract-errors"),  # a template draft only the error table uses
            "cancelled": cancelled,
            "mass": _draft(
                system,
                "contract-mass",
                channel="mass",
                audience={"kind": "all"},
                content=None,
                mass={"msgtype": "mpnews", "media_id": "contract_media_1"},
            ),
            "unreadable": _draft(  # its segment object was never uploaded
                system,
                "contract-unreadable",
                audience={"kind": "segment", "segment": {"key": f"segments/{APPID}/contract-missing.jsonl"}},
            ),
        },
    )


def _operator_routes(contract: Contract) -> set[tuple[str, str]]:
    routes = contract.system.stack.routes
    return {(route.method, route.path) for route in routes if route.function == "OperatorApiFunction"}


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_documented_operation_is_a_route_of_the_template(contract: Contract, method: str, path: str) -> None:
    assert (method, path) in _operator_routes(contract)


def test_every_operator_route_is_documented(contract: Contract) -> None:
    assert _operator_routes(contract) - set(OPERATIONS) == set()


@dataclass(frozen=True)
class ErrorCase:
    """A request and the status (and `error` reason) the operator API answers it with."""

    method: str
    path: str  # the document's path
    params: dict[str, str]  # path parameters; {draft} etc. name the fixture's records
    status: int
    reason: str | None = None
    query: dict[str, str] | None = None
    body: Any = None
    raw: bytes | None = None  # sent as is instead of body
    content_type: str = "application/json"
    api_key: bool = True
    fresh: bool = False  # {fresh} and {fresh_draft} name an account of the case's own (_fresh)
    fault: int | None = None  # WeChat answers every access-token request with this errcode meanwhile

    @property
    def id(self) -> str:
        sent_as = "" if self.content_type == "application/json" else f" as {self.content_type}"
        return f"{self.status} {self.method} {self.path} {self.reason or ''}{sent_as}".strip()


def _invalid_request(method: str, path: str) -> ErrorCase:
    """A 422 for any operation: a malformed AppID, or a bad query or body where there is none."""
    has_body = "requestBody" in SCHEMA.raw_schema["paths"][path][method.lower()]
    params = {name: "x" for name in _path_names(path)} | (
        {"appid": "not-an-appid"} if "{appid}" in path else {}
    )
    if params:
        return ErrorCase(method, path, params, 422, "invalid_request", body={} if has_body else None)
    if has_body:
        return ErrorCase(method, path, {}, 422, "invalid_request", body={})
    return ErrorCase(method, path, {}, 422, "invalid_request", query={"limit": "0"})


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


BROADCAST = "/accounts/{appid}/broadcasts/{broadcast_id}"
A, Q = {"appid": APPID}, {"appid": QUIET_APPID}
UNKNOWN = {"appid": "wx0000000000000000", "broadcast_id": "b" + "0" * 20, "message_id": "m" + "0" * 31}
# A body each operation under an account accepts, so a request gets past validation.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/accounts/{appid}/broadcasts"): {**DRAFT, "name": "contract"},
    ("POST", "/accounts/{appid}/broadcasts/estimate"): {**DRAFT, "name": "contract"},
    ("PATCH", BROADCAST): {"name": "contract"},
    ("POST", BROADCAST + "/publish"): {},
    ("POST", BROADCAST + "/preview"): {"openid": OPENID},
    ("POST", BROADCAST + "/articles/delete"): {},
    ("POST", "/accounts/{appid}/messages/preview"): {
        "channel": "template",
        "content": CONTENT,
        "samples": [{"openid": OPENID}],
    },
    ("POST", "/accounts/{appid}/messages"): {"channel": "template", "openid": OPENID, "content": CONTENT},
}
MALFORMED = b"[" * 100_000 + b"]" * 100_000  # deeper than Python's json can hold


def _has_body(method: str, path: str) -> bool:
    return "requestBody" in SCHEMA.raw_schema["paths"][path][method.lower()]


def _unknown_params(path: str) -> dict[str, str]:
    return {name: UNKNOWN.get(name) or KNOWN[name] for name in _path_names(path)}


def _generic(method: str, path: str) -> list[ErrorCase]:
    """What any operation answers: 403 without the key; under an account, 404 for an unknown
    account (broadcast, message); with a JSON body, 400 for one Python cannot read and 415 for one
    that is not JSON."""
    params = _unknown_params(path)
    cases = [ErrorCase(method, path, params, 403, api_key=False)]
    if "{appid}" in path:
        body = BODIES[(method, path)] if _has_body(method, path) else None
        reason = (
            "unknown_broadcast"
            if "{broadcast_id}" in path
            else "unknown_message"
            if "{message_id}" in path
            else "unknown_account"
        )
        cases.append(ErrorCase(method, path, params, 404, reason, body=body))
    if _has_body(method, path):
        cases += [
            ErrorCase(method, path, params, 400, "malformed_json", raw=MALFORMED),
            ErrorCase(
                method, path, params, 415, "unsupported_media_type", raw=b"{}", content_type="text/plain"
            ),
        ]
    return cases


FRESH = {"appid": "{fresh}", "broadcast_id": "{fresh_draft}"}
# Each looks its draft's (or body's) template up on WeChat: for an account WeChat does not know
# (502), or while WeChat answers every token request with "system busy" (503, the reason the
# route gives for it).
RESOLVING = [
    ("POST", "/accounts/{appid}/messages/preview", "wechat_error"),
    ("POST", "/accounts/{appid}/messages", "system_busy"),
    ("POST", "/accounts/{appid}/broadcasts/estimate", "wechat_error"),
    ("POST", BROADCAST + "/estimate", "wechat_error"),
    ("POST", BROADCAST + "/dry-run", "wechat_error"),
    ("POST", BROADCAST + "/publish", "wechat_error"),
    ("POST", BROADCAST + "/cancel", "wechat_error"),
    ("POST", BROADCAST + "/preview", "system_busy"),
]
# Every status the code answers besides success and the generic ones, with the request that reaches it.
KNOWN_ERRORS = [
    ErrorCase(
        "GET",
        "/accounts/{appid}/followers/{openid}",
        A | {"openid": "oNeverFollowed0000000000001"},
        404,
        "unknown_follower",
    ),
    ErrorCase(
        "GET",
        "/accounts/{appid}/templates/{channel}/{template_id}",
        A | {"channel": "template", "template_id": "TPL_NOT_THERE"},
        404,
        "unknown_template",
    ),
    ErrorCase("GET", "/accounts/{appid}/followers/sync", Q, 404, "sync_not_found"),
    ErrorCase("GET", "/accounts/{appid}", {"appid": "%F3%9C%BC%98"}, 404, "not_found"),  # U+DCF18: no word
    ErrorCase("GET", "/accounts/{appid}/broadcasts", A, 400, "bad_page_token", query={"after": "zzz"}),
    ErrorCase(
        "POST", BROADCAST + "/articles/delete", A | {"broadcast_id": "{errors}"}, 400, "not_mass", body={}
    ),
    ErrorCase(
        "POST",
        BROADCAST + "/preview",
        A | {"broadcast_id": "{errors}"},
        400,
        "openid_required",
        body={"wxname": "someone01"},
    ),
    *(
        ErrorCase("POST", BROADCAST + action, A | {"broadcast_id": "{unreadable}"}, 400, "segment_unreadable")
        for action in ("/estimate", "/dry-run")
    ),
    ErrorCase(
        "POST",
        "/accounts",
        {},
        415,
        "unsupported_media_type",
        raw=b"appid=wx1",
        content_type="application/x-www-form-urlencoded",
    ),
    ErrorCase("POST", "/accounts", {}, 409, "account_exists", body=_registration(QUIET_APPID)),
    ErrorCase("POST", BROADCAST + "/cancel", A | {"broadcast_id": "{cancelled}"}, 409, "already_final"),
    ErrorCase(
        "POST", BROADCAST + "/publish", A | {"broadcast_id": "{cancelled}"}, 409, "not_a_draft", body={}
    ),
    ErrorCase("DELETE", BROADCAST, A | {"broadcast_id": "{cancelled}"}, 409, "not_a_draft"),
    ErrorCase(
        "PATCH", BROADCAST, A | {"broadcast_id": "{cancelled}"}, 409, "not_editable", body={"name": "x"}
    ),
    ErrorCase(
        "POST", BROADCAST + "/articles/delete", A | {"broadcast_id": "{mass}"}, 409, "not_sent", body={}
    ),
    # WeChat does not know this AppID, or is busy: its answer, not our 500.
    ErrorCase("POST", "/accounts/{appid}/templates/sync", Q, 502, "wechat_error"),
    ErrorCase("POST", "/accounts/{appid}/templates/sync", Q, 503, "wechat_error", fault=-1),
    ErrorCase("POST", "/accounts/{appid}/tags/sync", Q, 502, "wechat_error"),
    ErrorCase("POST", "/accounts/{appid}/tags/sync", Q, 503, "wechat_error", fault=-1),
    *(
        ErrorCase(
            method,
            path,
            {name: FRESH[name] for name in _path_names(path)},
            status,
            reason if fault else "wechat_error",
            body=BODIES.get((method, path)),
            fresh=True,
            fault=fault,
        )
        for method, path, reason in RESOLVING
        for status, fault in ((502, None), (503, -1))
    ),
]
ERROR_CASES = (
    [_invalid_request(method, path) for method, path in OPERATIONS]
    + [case for method, path in OPERATIONS for case in _generic(method, path)]
    + KNOWN_ERRORS
)
# Documented statuses no request here reaches on demand, and what reaching one takes.
UNREACHED = {
    ("POST", BROADCAST + "/preview", 429): "60 mass calls of the account in the minute before",
    ("POST", BROADCAST + "/articles/delete", 503): "a sent mass article, then WeChat failing",
    ("POST", "/accounts/{appid}/followers/sync", 409): "losing the race for the sync record three times",
}


def _documented(method: str, path: str, status: int) -> bool:
    return str(status) in SCHEMA.raw_schema["paths"][path][method.lower()]["responses"]


def test_every_documented_error_status_has_a_case() -> None:
    covered = {(case.method, case.path, case.status) for case in ERROR_CASES}
    documented = {
        (method, path, int(status))
        for method, path in OPERATIONS
        for status in SCHEMA.raw_schema["paths"][path][method.lower()]["responses"]
        if status.isdigit() and int(status) >= 400
    }
    assert {unreached for unreached in UNREACHED if not _documented(*unreached)} == set()
    assert documented - covered - UNREACHED.keys() == set()
    assert len({case.id for case in ERROR_CASES}) == len(ERROR_CASES)


def _send(contract: Contract, case: ErrorCase, params: dict[str, str]) -> requests.Response:
    url = contract.base_url + case.path.format(**params)
    headers = {"content-type": case.content_type} | (contract.headers if case.api_key else {})
    data = case.raw if case.raw is not None else None if case.body is None else json.dumps(case.body)
    with _token_fault(contract.system, case.fault):
        return requests.request(case.method, url, params=case.query, data=data, headers=headers, timeout=30)


@pytest.mark.parametrize("error", [pytest.param(c, id=c.id) for c in ERROR_CASES])
def test_error_status_is_reached_and_documented(contract: Contract, error: ErrorCase) -> None:
    ids = contract.ids | (_fresh(contract.system) if error.fresh else {})
    params = {name: value.format(**ids) for name, value in error.params.items()}
    response = _send(contract, error, params)
    assert response.status_code == error.status, response.text
    if error.reason is not None:
        assert response.json().get("error") == error.reason, response.text
    case = SCHEMA[error.path][error.method].make_case(path_parameters=params or None, query=error.query)
    case.validate_response(response, checks=(status_code_conformance, response_schema_conformance))


def test_deleting_a_draft_answers_as_documented(contract: Contract) -> None:
    params = {"appid": APPID, "broadcast_id": _draft(contract.system, "contract-deleted")}
    response = _send(contract, ErrorCase("DELETE", BROADCAST, params, 204), params)
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert contract.system.api.get(BROADCAST.format(**params)).status_code == 404
    case = SCHEMA[BROADCAST]["DELETE"].make_case(path_parameters=params)
    case.validate_response(response, checks=(status_code_conformance, response_schema_conformance))


@SCHEMA.hook
def flatmap_path_parameters(context: Any, parameters: dict[str, Any] | None) -> st.SearchStrategy[Any]:
    if not parameters:
        return st.just(parameters)
    # A DELETE keeps its generated id: a deleted draft would not replay (deletion has its own test).
    known = KNOWN if context.operation.method == "delete" else KNOWN | {"broadcast_id": KNOWN["draft"]}
    # The fixture's records first: the first example of a derandomized run is the first choice.
    return st.sampled_from([{name: known.get(name, v) for name, v in parameters.items()}, parameters])


# hypothesis-jsonschema 0.23 (schemathesis' object generator) calls many.more(), which hypothesis
# 6.170.10 removed: every request body would fail to generate. One test fails; the fuzzing skips.
FUZZ_BROKEN = (
    None
    if hasattr(conjecture_utils.many, "more")
    else "hypothesis >= 6.170.10 breaks hypothesis-jsonschema 0.23: pin hypothesis<6.170.10"
)


def test_schemathesis_can_generate_request_bodies() -> None:
    assert FUZZ_BROKEN is None, FUZZ_BROKEN


def _fuzz(
    contract: Contract, method: str, path: str, how: DataGenerationMethod, checks: tuple[Any, ...]
) -> None:
    if FUZZ_BROKEN:
        pytest.skip(FUZZ_BROKEN)
    KNOWN["draft"] = contract.ids["draft"]

    @FUZZ
    @given(case=SCHEMA[path][method].as_strategy(data_generation_method=how))
    def run(case: Any) -> None:
        case.call_and_validate(base_url=contract.base_url, headers=contract.headers, checks=checks)

    run()


@pytest.mark.parametrize("how", [DataGenerationMethod.positive, DataGenerationMethod.negative], ids=str)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_generated_requests_get_no_server_error_and_documented_bodies(
    contract: Contract, method: str, path: str, how: DataGenerationMethod
) -> None:
    _fuzz(contract, method, path, how, (not_a_server_error, response_schema_conformance))


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_generated_requests_get_documented_statuses(contract: Contract, method: str, path: str) -> None:
    _fuzz(contract, method, path, DataGenerationMethod.positive, (status_code_conformance,))
