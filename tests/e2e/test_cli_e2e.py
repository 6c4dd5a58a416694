"""The `wxreach` CLI as an operator runs it, against the local stack and the WeChat sandbox:
every command, --json output, exit codes (0, 1 on the API's refusals, 2 on usage), the
large-send confirmation (typed on a real terminal), watching a broadcast to its end, reports."""

from __future__ import annotations

import csv
import json
import os
import pty
import re
import secrets
import select
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from local.sandbox.server import SandboxServer
from local.stack import LocalStack, Settings
from wxreach_cli.main import app

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
CONSOLE_SCRIPT = REPO_ROOT / ".venv" / "bin" / "wxreach"
APPID = "wxe2ecli0000000001"
ORIGINAL_ID = "gh_e2ecli000001"
SECRET = "e2ecli456789abcdef0123456789abc1"
TOKEN = "e2eCliToken1"
AES_KEY = "CliKeyCliKeyCliKeyCliKeyCliKeyCliKeyCliKey0"
TEMPLATE = "TPL_CLI_SHIPPED"
FOLLOWERS = 30
THRESHOLD = 20  # LargeSendThreshold: a broadcast to every follower needs its count confirmed
REPORTED = 5
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


class Operator:
    """The CLI pointed at the local stack (--api-url/--api-key), and the sandbox to check on."""

    def __init__(self, sandbox: SandboxServer, stack: LocalStack, openids: list[str]) -> None:
        self.sandbox, self.stack, self.openids = sandbox, stack, openids
        self.wechat = httpx.Client(base_url=sandbox.url, timeout=30, trust_env=False)
        self.target = ["--api-url", stack.api_url, "--api-key", stack.api_key]
        self.runner = CliRunner()

    def run(self, *args: str, input: str | None = None) -> Result:
        result = self.runner.invoke(app, [*self.target, *args], input=input)
        assert "Traceback" not in result.output, result.output
        return result

    def json(self, *args: str) -> Any:
        result = self.run("--json", *args)
        assert result.exit_code == 0, (result.exit_code, result.stderr)
        return json.loads(result.stdout)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        resp = self.wechat.request(method, f"/admin{path}", json=body)
        assert resp.status_code < 300, resp.text
        return resp.json()

    def create(self, name: str, value: str, *args: str) -> str:
        created = self.json(
            "broadcast", "create", "-a", APPID, "--name", name,
            "--template", TEMPLATE, "--data", f"thing1={value}", "--data", "character_string2=CLI-1", *args,
        )  # fmt: skip
        assert created["state"] == "draft"
        return str(created["id"])


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {state: n for state, n in counts.items() if n}


def wait_for(fetch: Any, done: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        current = fetch()
        if done(current) or time.monotonic() > deadline:
            return current
        time.sleep(0.5)


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    with SandboxServer("127.0.0.1", port=0, seed=23) as sandbox:
        settings = Settings(
            template=REPO_ROOT / "template.yaml",
            port=0,
            moto_port=0,
            data_dir=tmp_path_factory.mktemp("local-stack"),
            wechat_api_base=sandbox.url,
            api_key=secrets.token_urlsafe(12),
            echo_function_output=False,
            parameter_overrides={"LargeSendThreshold": str(THRESHOLD)},
        )
        with LocalStack(settings) as stack:
            wechat = httpx.Client(base_url=sandbox.url, timeout=30, trust_env=False)
            api = httpx.Client(
                base_url=stack.api_url, timeout=30, headers={"x-api-key": stack.api_key}, trust_env=False
            )
            # WeChat's side: the account pushes its callbacks (deliveries) to the stack's webhook.
            account = {"appid": APPID, "secret": SECRET, "original_id": ORIGINAL_ID, "type": "service"}
            wechat_account = {
                **account,
                "verified": True,
                "token": TOKEN,
                "encoding_aes_key": AES_KEY,
                "encryption_mode": "safe",
                "webhook_url": f"{stack.api_url}/wechat/{APPID}",
            }
            assert wechat.post("/admin/accounts", json=wechat_account).status_code in (200, 201)
            keywords = ["thing1", "character_string2"]
            template = {"template_id": TEMPLATE, "title": "发货通知", "keywords": keywords}
            assert wechat.post(f"/admin/accounts/{APPID}/templates", json=template).status_code == 201
            created = wechat.post(
                f"/admin/accounts/{APPID}/followers", json={"count": FOLLOWERS, "prefix": "oCli"}
            )
            openids = created.json()["openids"]
            # wxreach's side: registered, templates synced, followers listed from WeChat.
            secrets_ = {"app_secret": SECRET, "token": TOKEN, "encoding_aes_key": AES_KEY}
            registered = api.post(
                "/accounts", json={"appid": APPID, "original_id": ORIGINAL_ID, "secrets": secrets_}
            )
            assert registered.status_code == 201, registered.text
            assert api.post(f"/accounts/{APPID}/templates/sync").status_code == 200
            assert api.post(f"/accounts/{APPID}/followers/sync").status_code == 202
            synced = wait_for(
                lambda: api.get(f"/accounts/{APPID}/followers/sync").json(),
                lambda view: view["state"] != "running",
                timeout=60,
            )
            assert (synced["state"], synced["seen"]) == ("done", FOLLOWERS), synced
            api.close()
            wechat.close()
            operator = Operator(sandbox, stack, openids)
            yield operator
            operator.wechat.close()


def test_usage_errors_exit_2(operator: Operator, tmp_path: Path) -> None:
    assert operator.run("broadcast", "show", "-a", APPID).exit_code == 2  # no ID
    assert operator.run("broadcast", "list").exit_code == 2  # no account
    assert operator.run("report", "-a", APPID).exit_code == 2  # neither an ID nor a period
    assert operator.run("broadcast", "publish", "b0", "-a", APPID, "--confirm", "-1").exit_code == 2
    assert CliRunner().invoke(app, ["--region", "eu-west-1", "accounts", "list"]).exit_code == 2

    no_stack = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "accounts", "list"])
    assert no_stack.exit_code == 2
    assert "stack.json does not exist" in no_stack.stderr and "make local" in no_stack.stderr


def test_api_errors_exit_1_with_the_reason_and_a_hint(operator: Operator) -> None:
    unknown = operator.run("broadcast", "show", "b" + "0" * 20, "-a", APPID)
    assert unknown.exit_code == 1
    assert "unknown_broadcast" in unknown.stderr and unknown.stdout == ""

    invalid = operator.run("broadcast", "show", "not-an-id", "-a", APPID)
    assert invalid.exit_code == 1 and "invalid_request" in invalid.stderr

    forbidden = CliRunner().invoke(
        app, ["--api-url", operator.stack.api_url, "--api-key", "wrong", "accounts", "list"]
    )
    assert forbidden.exit_code == 1
    assert "Forbidden" in forbidden.stderr and "API key" in forbidden.stderr

    refused = CliRunner().invoke(
        app, ["--api-url", "http://127.0.0.1:9", "--api-key", "k", "accounts", "list"]
    )
    assert refused.exit_code == 1
    assert "cannot reach" in refused.stderr and "make local" in refused.stderr
    assert "Traceback" not in refused.output


def test_accounts_add_list_show(operator: Operator) -> None:
    other = "wxe2ecli0000000002"
    operator.admin("POST", "/accounts", {"appid": other, "secret": SECRET, "type": "subscription"})
    add = [
        "accounts", "add", other, "--original-id", "gh_e2ecli000002", "--name", "Second",
        "--type", "subscription", "--encryption-mode", "plaintext", "--token", TOKEN,
    ]  # fmt: skip
    # The AppSecret is typed at its (hidden) prompt, not on the command line.
    added = operator.run("--json", *add, input=SECRET + "\n")
    assert added.exit_code == 0, added.stderr
    assert SECRET not in added.output
    account = json.loads(added.stdout)
    assert (account["appid"], account["account_type"], account["name"]) == (other, "subscription", "Second")

    again = operator.run(*add, "--app-secret", SECRET)
    assert again.exit_code == 1 and "account_exists" in again.stderr

    listed = operator.json("accounts", "list")
    assert {a["appid"] for a in listed["accounts"]} >= {APPID, other}
    assert operator.json("accounts", "show", APPID)["original_id"] == ORIGINAL_ID
    table = operator.run("accounts", "list")
    assert table.exit_code == 0 and APPID in table.stdout and "Second" in table.stdout
    missing = operator.run("accounts", "show", "wxe2ecli000000000f")
    assert missing.exit_code == 1 and "unknown_account" in missing.stderr


def test_templates_sync_list_show(operator: Operator) -> None:
    synced = operator.json("templates", "sync", "-a", APPID)
    assert {"channel": "template", "stored": 1, "removed": 0} in synced["results"]
    listed = operator.json("templates", "list", "-a", APPID, "--channel", "template")
    assert [t["template_id"] for t in listed["templates"]] == [TEMPLATE]
    shown = operator.json("templates", "show", TEMPLATE, "-a", APPID)
    assert set(shown["rules"]) == {"thing1", "character_string2"}
    human = operator.run("templates", "show", TEMPLATE, "-a", APPID)
    assert human.exit_code == 0 and "character_string2" in human.stdout
    missing = operator.run("templates", "show", "TPL_NONE", "-a", APPID)
    assert missing.exit_code == 1 and "unknown_template" in missing.stderr


def test_keywords_check_a_csv(operator: Operator, tmp_path: Path) -> None:
    checks = tmp_path / "values.csv"
    with checks.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["type", "value", "channel"])
        writer.writerow(["thing", "咖啡豆", "template"])
        writer.writerow(["character_string", "not allowed: 中文", "template"])
        writer.writerow(["amount", "¥88.00", ""])
    result = operator.run("--json", "keywords", "check", str(checks))
    assert result.exit_code == 1  # one value breaks the rules
    assert [r["valid"] for r in json.loads(result.stdout)["results"]] == [True, False, True]
    assert "1 of 3 values" in result.stderr

    valid = tmp_path / "valid.csv"
    valid.write_text("type,value\nthing,咖啡豆\n", encoding="utf-8")
    table = operator.run("keywords", "check", str(valid))
    assert table.exit_code == 0 and "咖啡豆" in table.stdout

    no_value = tmp_path / "bad.csv"
    no_value.write_text("type\nthing\n", encoding="utf-8")
    assert operator.run("keywords", "check", str(no_value)).exit_code == 2


def test_send_one_message_and_its_dry_run(operator: Operator) -> None:
    openid = operator.openids[0]
    message = [
        "-a",
        APPID,
        "-t",
        TEMPLATE,
        "-d",
        "thing1={{product}}",
        "-d",
        "character_string2={{order.no}}",
    ]
    preview = operator.json(
        "send", openid, *message, "-p", "product=咖啡豆", "-p", "order.no=CLI-7", "--dry-run"
    )
    assert preview["samples"][0]["would_send"] is True
    assert preview["samples"][0]["values"] == {"thing1": "咖啡豆", "character_string2": "CLI-7"}
    missing = operator.run("send", openid, *message, "-p", "product=咖啡豆", "--dry-run")
    assert missing.exit_code == 1 and "would not be sent" in missing.stderr
    assert "order.no" in missing.stdout  # the missing parameter, in the preview's table

    sent = operator.json("send", openid, *message, "-p", "product=咖啡豆", "-p", "order.no=CLI-7")
    assert sent["message"]["state"] == "sent", sent
    inbox = operator.admin("GET", f"/accounts/{APPID}/users/{openid}/inbox?kind=template")["messages"]
    assert [m["data"] for m in inbox] == [{"thing1": "咖啡豆", "character_string2": "CLI-7"}]

    nobody = operator.run(
        "send", "oNobodyAtAll0000000000000000", *message, "-p", "product=x", "-p", "order.no=1"
    )
    assert nobody.exit_code == 1 and re.search(r"(failed|skipped): \w+", nobody.stderr), nobody.stderr


def test_followers_sync_to_done(operator: Operator) -> None:
    view = operator.json("followers", "sync", "-a", APPID, "--interval", "0.5")
    assert (view["state"], view["seen"], view["total"]) == ("done", FOLLOWERS, FOLLOWERS)
    human = operator.run("followers", "sync", "-a", APPID, "--interval", "0.5")
    assert human.exit_code == 0 and "done" in human.stdout


def test_broadcast_to_every_follower_confirmed_and_watched(operator: Operator) -> None:
    bid = operator.create("Everyone", "新品到店")
    estimate = operator.json("broadcast", "estimate", bid, "-a", APPID)
    assert (estimate["recipients"], estimate["needs_confirmation"]) == (FOLLOWERS, True)
    dry = operator.json("broadcast", "dry-run", bid, "-a", APPID)
    assert dry["estimate"]["recipients"] == FOLLOWERS and all(line["would_send"] for line in dry["sample"])

    unconfirmed = operator.run("broadcast", "publish", bid, "-a", APPID)  # not a terminal: no prompt
    assert unconfirmed.exit_code == 2 and f"--confirm {FOLLOWERS}" in unconfirmed.stderr
    wrong = operator.run("broadcast", "publish", bid, "-a", APPID, "--confirm", str(FOLLOWERS - 1))
    assert wrong.exit_code == 1 and "confirmation_mismatch" in wrong.stderr
    published = operator.json("broadcast", "publish", bid, "-a", APPID, "--confirm", str(FOLLOWERS))
    assert published["confirmed_count"] == FOLLOWERS

    watched = operator.json("broadcast", "watch", bid, "-a", APPID, "--interval", "1", "--timeout", "120")
    assert watched["broadcast"]["state"] == "sent", watched
    assert sum(watched["counts"]["by_state"].values()) == FOLLOWERS
    inboxes = operator.admin("GET", f"/accounts/{APPID}/inbox-counts?kind=template")["counts"]
    assert all(inboxes.get(o, 0) >= 1 for o in operator.openids)

    # Once WeChat's delivery callbacks are in, every message is delivered.
    assert operator.admin("POST", "/callbacks/flush", {"timeout": 30})["flushed"]
    operator.stack.wait_idle(timeout=60, ignore_delayed=True)
    shown = operator.json("broadcast", "show", bid, "-a", APPID)
    assert nonzero(shown["counts"]["by_state"]) == {"delivered": FOLLOWERS}, shown["counts"]
    human = operator.run("broadcast", "watch", bid, "-a", APPID, "--interval", "0")
    assert human.exit_code == 0 and "delivered" in human.stdout and "Everyone" in human.stdout
    listed = operator.json("broadcast", "list", "-a", APPID, "--state", "sent")
    assert bid in [b["id"] for b in listed["broadcasts"]]


def test_report_of_a_broadcast_and_of_the_period(operator: Operator, tmp_path: Path) -> None:
    segment = tmp_path / "segment.csv"
    segment.write_text("openid\n" + "\n".join(operator.openids[:REPORTED]) + "\n", encoding="utf-8")
    bid = operator.create("Reported", "会员日", "--recipients", str(segment))
    operator.json("broadcast", "publish", bid, "-a", APPID)
    watched = operator.json("broadcast", "watch", bid, "-a", APPID, "--interval", "0.5", "--timeout", "60")
    assert watched["broadcast"]["state"] == "sent"
    assert operator.admin("POST", "/callbacks/flush", {"timeout": 30})["flushed"]
    operator.stack.wait_idle(timeout=60, ignore_delayed=True)

    report = operator.json("report", bid, "-a", APPID)
    assert report["broadcast"]["id"] == bid
    assert nonzero(report["counts"]["by_state"]) == {"delivered": REPORTED}
    assert (report["delivery_rate"], report["outcomes_final"], report["complete"]) == (1.0, True, True)
    assert report["failures"] == [] and report["export"] is None
    assert sum(b["delivered"] for b in report["timeline"]["buckets"]) == REPORTED

    out = tmp_path / "report"
    figures = operator.run("report", bid, "-a", APPID, "--out", str(out))
    assert figures.exit_code == 0, figures.stderr
    assert "100.0%" in figures.stdout and str(out / "report.html") in figures.stderr
    assert {p.name for p in out.iterdir()} >= {"report.html", "outcomes.png", "timeline.png", "failures.png"}

    exported = operator.json("report", bid, "-a", APPID, "--export", "csv")
    rows = list(csv.reader(httpx.get(exported["export"]["url"], trust_env=False).text.splitlines()))
    assert rows[0][:3] == ["openid", "state", "reason"] and len(rows) == 1 + REPORTED

    today = datetime.now(UTC).strftime("%Y-%m-%d")
    period = operator.json("report", "-a", APPID, "--since", today, "--out", str(tmp_path / "period"))
    assert bid in [b["id"] for b in period["broadcasts"]]
    assert period["delivered"] >= REPORTED and period["files"]["html"].endswith("report.html")


def test_publish_prompts_for_the_count_on_a_terminal_then_cancel(operator: Operator) -> None:
    bid = operator.create("Scheduled", "周末特惠")
    at = (datetime.now(UTC) + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S")
    publish = [str(CONSOLE_SCRIPT), *operator.target, "broadcast", "publish", bid, "-a", APPID, "--at", at]

    code, screen = on_terminal(publish, typed=str(FOLLOWERS - 1))
    assert code == 1, screen
    assert f"Type {FOLLOWERS} to confirm" in screen and "nothing was published" in screen
    assert operator.json("broadcast", "show", bid, "-a", APPID)["broadcast"]["state"] == "draft"

    code, screen = on_terminal(publish, typed=str(FOLLOWERS))
    assert code == 0, screen
    assert "scheduled" in screen
    shown = operator.json("broadcast", "show", bid, "-a", APPID)["broadcast"]
    assert (shown["state"], shown["confirmed_count"]) == ("scheduled", FOLLOWERS)

    cancelled = operator.json("broadcast", "cancel", bid, "-a", APPID)
    assert cancelled["state"] == "cancelled"
    again = operator.run("broadcast", "cancel", bid, "-a", APPID)
    assert again.exit_code == 1


def on_terminal(args: list[str], *, typed: str, timeout: float = 60) -> tuple[int, str]:
    """Run the console script on a pseudo-terminal, type `typed` at its prompt: its exit code
    and what the terminal showed (escape sequences removed)."""
    master, slave = pty.openpty()
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120"}
    process = subprocess.Popen(  # noqa: S603 - our own console script
        args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
    )
    os.close(slave)
    screen, answered = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            screen += chunk
            if not answered and b"to confirm" in screen:
                os.write(master, typed.encode() + b"\r")
                answered = True
        code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    return code, ANSI.sub("", screen.decode(errors="replace")).replace("\r", "")
