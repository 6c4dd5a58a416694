"""Fixtures of the local-stack tests: the sample app's stack, started once per test module.

Module scope, not session: a stack must not keep running (threads polling its moto) while later
modules run — other suites patch botocore with mock_aws.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


@pytest.fixture(scope="module")
def sample_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_app(tmp_path_factory.mktemp("sample-app"))


@pytest.fixture(scope="module")
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
            {"pk": i["pk"]["S"], "at": float(i["at"]["S"]), **json.loads(i["data"]["S"])}
            for i in items
            if i["pk"]["S"].startswith(prefix)
        ]
        return sorted(found, key=lambda item: item["pk"])

    return find


def process_gone(pid: int) -> bool:
    """True once the process has exited (a zombie left for a non-reaping init counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        try:
            return "\nState:\tZ" in status.read_text()
        except OSError:
            return True
    return False


def children_of(pid: int) -> dict[int, str]:
    """The direct child processes of pid and their command lines (Linux /proc; skips elsewhere)."""
    proc = Path("/proc")
    if not proc.is_dir():
        pytest.skip("needs /proc")
    children: dict[int, str] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == pid:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                children[int(entry.name)] = command
        except (OSError, ValueError, IndexError):
            continue
    return children


def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.1) -> Any:
    """Polls until check() returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def launch(*args: str, data_dir: Path) -> subprocess.Popen[str]:
    """`python -m local.stack` as `make local` runs it, on free ports, output captured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXREACH_LOCAL_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "local.stack",
            "--port",
            "0",
            "--moto-port",
            "0",
            "--data-dir",
            str(data_dir),
            *args,
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_running(process: subprocess.Popen[str], stack_file: Path, timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"stack exited early:\n{process.communicate()[0]}")
        if stack_file.exists():
            described = json.loads(stack_file.read_text())
            if described.get("status") == "running":
                return described
        time.sleep(0.1)
    process.kill()
    raise AssertionError("stack did not start")
