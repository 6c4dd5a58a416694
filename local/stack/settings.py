"""Settings of the local stack: defaults < WXREACH_LOCAL_* environment variables < CLI flags."""

from __future__ import annotations

import argparse
import json
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ENV_PREFIX = "WXREACH_LOCAL_"


@dataclass(frozen=True)
class Settings:
    template: Path = Path("template.yaml")
    host: str = "127.0.0.1"
    port: int = 3000  # HTTP front (0 picks a free port)
    moto_port: int = 5000  # the stack's own moto server, a child process (0 picks a free port)
    moto_url: str | None = None  # use an already-running moto server instead
    data_dir: Path = Path(".local-data")
    stack_name: str = "wxreach-local"
    region: str = "us-east-1"
    account_id: str = "123456789012"
    parameter_overrides: Mapping[str, str] = field(default_factory=dict)
    api_key: str | None = None  # None: reuse <data_dir>/api-key or generate one
    wechat_api_base: str = "http://127.0.0.1:8900"  # exported as WXREACH_WECHAT_API_BASE ('' = not set)
    env: Mapping[str, str] = field(default_factory=dict)  # extra variables for every function
    function_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # by logical id or name
    env_vars_file: Path | None = None  # `sam local --env-vars` format
    concurrency: int = 1  # worker processes per function
    scheduler_interval: float = 0.5  # seconds between polls of moto's Scheduler
    poll_wait_seconds: int = 1  # SQS long-poll wait (also bounds how long stop() takes)
    init_timeout: float = 60.0  # seconds a worker may take to import its handler
    echo_function_output: bool = True  # False: function output goes to <data_dir>/logs only

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = environ.get(ENV_PREFIX + name)
            return value if value not in (None, "") else None

        changes: dict[str, Any] = {}
        for name, key, kind in _ENV_SETTINGS:
            value = get(name)
            if value is not None:
                changes[key] = kind(value)
        if (wechat := environ.get(ENV_PREFIX + "WECHAT_API_BASE")) is not None:
            changes["wechat_api_base"] = wechat  # '' is meaningful here: do not set it
        if (overrides := get("PARAMETER_OVERRIDES")) is not None:
            changes["parameter_overrides"] = parse_assignments(
                shlex.split(overrides), what="parameter override"
            )
        return cls(**changes)

    @classmethod
    def from_args(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        return cls.from_namespace(build_parser().parse_args(argv), environ)

    @classmethod
    def from_namespace(cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
        base = cls.from_env(environ)
        changes: dict[str, Any] = {}
        for key in (
            "template",
            "host",
            "port",
            "moto_port",
            "moto_url",
            "data_dir",
            "stack_name",
            "region",
            "api_key",
            "wechat_api_base",
            "env_vars_file",
            "concurrency",
            "scheduler_interval",
            "poll_wait_seconds",
            "init_timeout",
            "echo_function_output",
        ):
            value = getattr(args, key)
            if value is not None:
                changes[key] = value
        if args.parameter_overrides:
            changes["parameter_overrides"] = dict(base.parameter_overrides) | parse_assignments(
                args.parameter_overrides, what="parameter override"
            )
        if args.env:
            changes["env"] = dict(base.env) | parse_assignments(args.env, what="--env")
        if args.function_env:
            per_function: dict[str, dict[str, str]] = {k: dict(v) for k, v in base.function_env.items()}
            for item in args.function_env:
                function, sep, assignment = item.partition(":")
                if not sep:
                    raise SystemExit(f"--function-env {item!r}: expected FUNCTION:KEY=VALUE")
                per_function.setdefault(function, {}).update(
                    parse_assignments([assignment], what="--function-env")
                )
            changes["function_env"] = per_function
        return replace(base, **changes)


_ENV_SETTINGS: tuple[tuple[str, str, Any], ...] = (
    ("TEMPLATE", "template", Path),
    ("HOST", "host", str),
    ("PORT", "port", int),
    ("MOTO_PORT", "moto_port", int),
    ("MOTO_URL", "moto_url", str),
    ("DATA_DIR", "data_dir", Path),
    ("STACK_NAME", "stack_name", str),
    ("REGION", "region", str),
    ("API_KEY", "api_key", str),
    ("ENV_VARS", "env_vars_file", Path),
    ("CONCURRENCY", "concurrency", int),
    ("SCHEDULER_INTERVAL", "scheduler_interval", float),
    ("POLL_WAIT_SECONDS", "poll_wait_seconds", int),
    ("INIT_TIMEOUT", "init_timeout", float),
    ("ECHO_FUNCTION_OUTPUT", "echo_function_output", lambda text: parse_flag(text, "ECHO_FUNCTION_OUTPUT")),
)


def parse_flag(text: str, name: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"{ENV_PREFIX}{name}={text!r}: expected true or false")


def parse_assignments(items: Sequence[str], *, what: str) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{what} {item!r}: expected KEY=VALUE")
        parsed[key] = value
    return parsed


def load_env_vars_file(path: Path) -> dict[str, dict[str, str]]:
    """`sam local --env-vars` JSON: {"Parameters": {...all functions...}, "<Function>": {...}}."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"env vars file {path}: {exc}") from exc
    if not isinstance(document, dict) or not all(isinstance(v, dict) for v in document.values()):
        raise ValueError(f'env vars file {path}: expected {{"FunctionName": {{"VAR": "value"}}}}')
    return {str(fn): {str(k): _env_text(v) for k, v in values.items()} for fn, values in document.items()}


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m local.stack",
        description="Run the SAM template locally without Docker: moto for AWS services, "
        "worker processes for the functions, an API Gateway-like HTTP front, "
        "SQS/EventBridge/Scheduler pollers.",
        epilog=f"Every flag also reads {ENV_PREFIX}<NAME> from the environment (e.g. {ENV_PREFIX}PORT). "
        "See docs/local-stack.md.",
    )
    add = parser.add_argument
    add("--template", type=Path, help="SAM template (default template.yaml)")
    add("--host", help="address the HTTP front and moto listen on (default 127.0.0.1)")
    add("--port", type=int, help="HTTP front port (default 3000; 0 = any free port)")
    add("--moto-port", type=int, help="port of the stack's own moto server (default 5000; 0 = any free port)")
    add("--moto-url", help="use this running moto server instead of starting one")
    add("--data-dir", type=Path, help="logs, api-key and stack.json (default .local-data)")
    add("--stack-name", help="AWS::StackName (default wxreach-local)")
    add("--region", help="AWS::Region (default us-east-1)")
    add("--api-key", help="x-api-key value required on AWS_IAM routes (default: generated and kept)")
    add(
        "--wechat-api-base", help="WXREACH_WECHAT_API_BASE for every function (default http://127.0.0.1:8900)"
    )
    add("--parameter-overrides", nargs="+", metavar="KEY=VALUE", help="template parameter values")
    add("--env", action="append", metavar="KEY=VALUE", help="extra variable for every function (repeatable)")
    add(
        "--function-env",
        action="append",
        metavar="FUNCTION:KEY=VALUE",
        help="variable for one function, by logical id or function name (repeatable)",
    )
    add("--env-vars", dest="env_vars_file", type=Path, help="JSON file like `sam local --env-vars`")
    add("--concurrency", type=int, help="worker processes per function (default 1)")
    add("--scheduler-interval", type=float, help="seconds between Scheduler polls (default 0.5)")
    add(
        "--poll-wait-seconds",
        type=int,
        help="SQS long-poll wait of the pollers, 1-20 s (default 1; also bounds how long a stop takes)",
    )
    add("--init-timeout", type=float, help="seconds a worker may take to import its handler (default 60)")
    add(
        "--echo-function-output",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="print function output on the console, prefixed [Function] (default yes; "
        "--no-echo-function-output: only <data-dir>/logs/<Function>.log)",
    )
    add("--verbose", "-v", action="store_true", help="debug logging")
    return parser
