"""`python -m local.stack` as `make local` runs it: summary, prefixed function output, clean stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.local.sample_app import write_sample_app

REPO_ROOT = Path(__file__).resolve().parents[2]


def launch(*args: str, data_dir: Path) -> subprocess.Popen[str]:
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


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_cli_serves_until_a_signal_then_exits_zero(tmp_path: Path, stop_signal: signal.Signals) -> None:
    template = write_sample_app(tmp_path / "app")
    data_dir = tmp_path / "data"
    process = launch("--template", str(template), "--api-key", "cli-key", data_dir=data_dir)
    try:
        described = wait_running(process, data_dir / "stack.json")
        response = httpx.get(f"{described['api_url']}/hello/cli", timeout=15)
        assert response.json()["greeting"] == "hello cli"
        guarded = httpx.get(f"{described['api_url']}/admin", headers={"x-api-key": "cli-key"}, timeout=15)
        assert guarded.status_code == 200
        process.send_signal(stop_signal)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "ready in" in output and "x-api-key: cli-key" in output
    assert "/hello/{name}" in output  # the route table of the summary
    assert "[HttpFunction] saying hello to cli" in output  # worker output, prefixed
    assert "local stack stopped." in output
    assert json.loads((data_dir / "stack.json").read_text())["status"] == "stopped"
    assert (data_dir / "logs" / "HttpFunction.log").exists()


def test_cli_fails_loudly_on_an_unsupported_resource(tmp_path: Path) -> None:
    template = write_sample_app(tmp_path / "app")
    text = template.read_text().replace(
        "Resources:\n", "Resources:\n  Uploads:\n    Type: AWS::S3::Bucket\n", 1
    )
    template.write_text(text)
    process = launch("--template", str(template), data_dir=tmp_path / "data")
    try:
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 2
    assert "Uploads: resource type AWS::S3::Bucket is not supported by the local stack" in output


def test_cli_refuses_a_busy_port(tmp_path: Path) -> None:
    template = write_sample_app(tmp_path / "app")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = launch("--template", str(template), "--moto-port", str(port), data_dir=tmp_path / "data")
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 2
    assert f"moto port 127.0.0.1:{port} is not free" in output
