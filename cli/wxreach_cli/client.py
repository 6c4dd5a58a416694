"""Where the operator API is and how to call it: the local stack (`x-api-key`) or a deployed
CloudFormation stack (SigV4, in `wxreach_cli.aws`), over httpx; failures as `CliError`s."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

API_KEY_HEADER = "x-api-key"
API_KEY_ENV = "WXREACH_LOCAL_API_KEY"
DATA_DIR_ENV = "WXREACH_LOCAL_DATA_DIR"
DEFAULT_DATA_DIR = Path(".local-data")
START_LOCAL = "start it with `make local`, or pass --api-url and --api-key, or --stack NAME"


class CliError(Exception):
    """A failure the CLI explains in a line (and a hint), then exits with `exit_code`."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageProblem(CliError):
    """Something the operator must give or fix first (no stack to talk to, a missing
    confirmation): exit 2, like a bad argument."""

    exit_code = 2


class ApiError(CliError):
    """The API answered 4xx/5xx; `error` is its machine-readable reason when the body has one."""

    def __init__(self, status: int, body: Any, *, hint: str | None) -> None:
        fields = body if isinstance(body, dict) else {}
        self.error: str | None = fields.get("error")
        detail = fields.get("message") or (body if isinstance(body, str) else "")
        reason = self.error or f"HTTP {status}"
        super().__init__(f"{reason}: {detail}" if detail else reason, hint=hint)
        self.problems: list[str] = [
            f"{'.'.join(str(p) for p in problem.get('loc', []))}: {problem.get('msg')}"
            for problem in fields.get("problems") or []
            if isinstance(problem, dict)
        ]


@dataclass(frozen=True)
class Target:
    """An operator API: its base URL, how requests are authorised, and what to suggest on failure."""

    api_url: str
    auth: httpx.Auth
    local: bool
    unreachable_hint: str
    forbidden_hint: str
    failure_hint: str


class ApiKey(httpx.Auth):
    """The local stack's stand-in for SigV4 on AWS_IAM routes."""

    def __init__(self, key: str) -> None:
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Any:
        request.headers[API_KEY_HEADER] = self._key
        yield request


def local_target(
    *,
    data_dir: Path | None,
    api_url: str | None,
    api_key: str | None,
    environ: Mapping[str, str] = os.environ,
) -> Target:
    """The local stack as `make local` left it in its data directory (stack.json, api-key);
    --api-url / --api-key / WXREACH_LOCAL_API_KEY override what is stored there."""
    data_dir = data_dir or Path(environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)
    running = _running_stack(data_dir) if api_url is None else {}
    url = api_url or str(running["api_url"])
    key = api_key or environ.get(API_KEY_ENV) or running.get("api_key") or _key_file(data_dir)
    if not key:
        raise UsageProblem(
            f"no API key for {url}",
            hint=f"pass --api-key, set {API_KEY_ENV} or keep it in {data_dir}/api-key",
        )
    return Target(
        api_url=url,
        auth=ApiKey(str(key)),
        local=True,
        unreachable_hint="is `make local` running?",
        forbidden_hint=f"the API key is not this stack's: see {data_dir}/stack.json or `make local`'s banner",
        failure_hint=f"the operator API failed: {data_dir}/logs/OperatorApiFunction.log says why",
    )


def _running_stack(data_dir: Path) -> dict[str, Any]:
    stack_file = data_dir / "stack.json"
    try:
        stack = json.loads(stack_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageProblem(f"no local stack: {stack_file} does not exist", hint=START_LOCAL) from None
    except (OSError, ValueError) as exc:
        raise UsageProblem(f"cannot read {stack_file}: {exc}", hint=START_LOCAL) from None
    if not isinstance(stack, dict) or not stack.get("api_url"):
        raise UsageProblem(f"{stack_file} names no api_url", hint=START_LOCAL)
    if stack.get("status") != "running":
        raise UsageProblem(f"the local stack in {data_dir} is {stack.get('status')}", hint=START_LOCAL)
    return stack


def _key_file(data_dir: Path) -> str | None:
    try:
        return (data_dir / "api-key").read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


class Api:
    """JSON over HTTP to one operator API; every failure becomes a `CliError`."""

    def __init__(
        self, target: Target, *, transport: httpx.BaseTransport | None = None, timeout: float = 60.0
    ) -> None:
        self.target = target
        # A proxy from the environment has no business between us and a stack on this machine.
        self._http = httpx.Client(
            base_url=target.api_url,
            auth=target.auth,
            transport=transport,
            timeout=timeout,
            trust_env=not target.local,
        )

    def get(self, *path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, *path: str, body: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("POST", path, body=body, params=params)

    def request(
        self, method: str, path: tuple[str, ...], *, body: Any = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        url = "/" + "/".join(quote(segment, safe="") for segment in path)
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, url, json=body, params=query)
        except httpx.TimeoutException:
            raise CliError(
                f"{method} {url}: no answer from {self.target.api_url} in time",
                hint=self.target.unreachable_hint,
            ) from None
        except httpx.TransportError as exc:
            raise CliError(
                f"cannot reach {self.target.api_url}: {exc}", hint=self.target.unreachable_hint
            ) from None
        if response.status_code >= 400:
            body = _body(response)
            raise ApiError(response.status_code, body, hint=self._hint(response.status_code, body))
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(f"{method} {url}: the API answered something that is not JSON") from None

    def _hint(self, status: int, body: Any) -> str | None:
        reason = body.get("error") if isinstance(body, dict) else None
        if status == 403:
            return self.target.forbidden_hint
        if status == 404 and reason is None:
            return "this API has no such route: is the stack up to date?"
        if status >= 500 and reason != "wechat_error":
            return self.target.failure_hint
        return None

    def close(self) -> None:
        self._http.close()


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text.strip() or None
