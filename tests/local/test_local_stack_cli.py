"""`python -m local.stack` as `make local` runs it: summary, prefixed function output, clean stop."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.local.conftest import children_of, eventually, launch, process_gone, wait_running
from tests.local.sample_app import write_sample_app


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
        "Resources:\n", "Resources:\n  Clicks:\n    Type: AWS::Kinesis::Stream\n", 1
    )
    template.write_text(text)
    process = launch("--template", str(template), data_dir=tmp_path / "data")
    try:
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 2
    assert "Clicks: resource type AWS::Kinesis::Stream is not supported by the local stack" in output


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


SLOW_INIT = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Resources:
  Queue:
    Type: AWS::SQS::Queue
  Stuck:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.12
      CodeUri: fn
      Handler: stuck.handler
"""

STUCK_HANDLER = """\
import os
import time

with open(os.environ["MARKER"], "w") as marker:  # the stack is now waiting for this import
    marker.write(str(os.getpid()))
time.sleep(120)


def handler(event, context):
    return None
"""


def launch_stuck(tmp_path: Path) -> tuple[subprocess.Popen[str], dict[int, str]]:
    """A CLI whose start-up waits for a worker stuck in its handler's import; its child processes."""
    (tmp_path / "app" / "fn").mkdir(parents=True)
    (tmp_path / "app" / "template.yaml").write_text(SLOW_INIT)
    (tmp_path / "app" / "fn" / "stuck.py").write_text(STUCK_HANDLER)
    marker = tmp_path / "importing"
    process = launch(
        "--template",
        str(tmp_path / "app" / "template.yaml"),
        "--function-env",
        f"Stuck:MARKER={marker}",
        data_dir=tmp_path / "data",
    )
    try:
        assert eventually(lambda: marker.exists() and marker.read_text(), timeout=30), "worker never started"
        started = children_of(process.pid)
        assert any("local.stack.motoproc" in command for command in started.values()), started
        assert int(marker.read_text()) in started  # the worker, stuck in its handler's import
    except BaseException:
        process.kill()
        raise
    return process, started


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_start_up_aborts_it_and_stops_what_started(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    process, started = launch_stuck(tmp_path)
    try:
        process.send_signal(stop_signal)
        output, _ = process.communicate(timeout=20)  # not the 60 s init timeout
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + stop_signal, output
    assert "start-up aborted" in output
    assert "ready in" not in output
    for pid in started:
        assert eventually(lambda pid=pid: process_gone(pid), timeout=10), f"{started[pid]} outlived the stack"


def test_a_killed_stack_leaves_no_process_behind(tmp_path: Path) -> None:
    process, started = launch_stuck(tmp_path)
    try:
        process.send_signal(signal.SIGKILL)  # no clean-up in the stack at all
        process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    for pid in started:  # moto notices its closed stdin, the worker its new parent
        assert eventually(lambda pid=pid: process_gone(pid), timeout=15), f"{started[pid]} outlived the stack"
