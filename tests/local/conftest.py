"""Fixtures of the local-stack tests: the sample app's stack, started once for the session."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from local.stack import LocalStack, Settings
from tests.local.sample_app import write_sample_app

REPO_ROOT = Path(__file__).resolve().parents[2]


def stack_settings(template: Path, data_dir: Path, **changes: Any) -> Settings:
    """Free ports and a private data dir, so stacks never collide with `make local` or each other."""
    return Settings(template=template, data_dir=data_dir, port=0, moto_port=0, **changes)


@pytest.fixture(scope="session")
def sample_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_app(tmp_path_factory.mktemp("sample-app"))


@pytest.fixture(scope="session")
def sample_stack(sample_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    data_dir = tmp_path_factory.mktemp("sample-data")
    env_file = data_dir / "env.json"
    env_file.write_text(
        json.dumps({"Parameters": {"FROM_FILE_ALL": "all"}, "HttpFunction": {"FROM_FILE_HTTP": "http"}})
    )
    settings = stack_settings(
        sample_template,
        data_dir,
        api_key="test-key",
        wechat_api_base="http://127.0.0.1:8999",
        env={"EXTRA_FOR_ALL": "extra"},
        env_vars_file=env_file,
        function_env={"HttpFunction": {"FROM_CLI": "cli"}},
        scheduler_interval=0.2,
    )
    with LocalStack(settings) as stack:
        stack.wait_idle(20)  # the template's past at() schedule fires at start
        yield stack


@pytest.fixture
def records(sample_stack: LocalStack) -> Callable[[str], list[dict[str, Any]]]:
    """Items the sample handlers recorded whose key starts with a prefix."""
    table = sample_stack.resources["RecordTable"].ref
    ddb = sample_stack.client("dynamodb")

    def find(prefix: str) -> list[dict[str, Any]]:
        items = ddb.scan(TableName=table)["Items"]
        found = [
            {"pk": i["pk"]["S"], **json.loads(i["data"]["S"])}
            for i in items
            if i["pk"]["S"].startswith(prefix)
        ]
        return sorted(found, key=lambda item: item["pk"])

    return find


def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.1) -> Any:
    """Polls until check() returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
