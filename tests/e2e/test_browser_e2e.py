"""What a person sees, in headless Chromium: the local stack's Swagger UI renders every operation of
docs/openapi.json, and a delivery report page written by the CLI renders its figures and charts."""

from __future__ import annotations

import importlib
import io
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import APPID, REPO_ROOT, System

pytestmark = pytest.mark.e2e

WINDOW = (1280, 1600)
SWAGGER_GET_BLUE = (97, 175, 254)  # #61affe: the fill of Swagger UI's GET badges
SWAGGER_POST_GREEN = (73, 204, 144)  # #49cc90: POST badges
# Nothing leaves the machine: no background services, and no host name but the loopback resolves.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--no-pings",
    "--metrics-recording-only",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--hide-scrollbars",
    "--virtual-time-budget=10000",  # let the page's scripts run before the DOM or screenshot is taken
)


@pytest.fixture(scope="module")
def chromium() -> str:
    found = next(
        (shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None
    )
    if found is None:
        pytest.skip("chromium not installed: make test installs it when apt-get is available")
    return found


def _run(chromium: str, profile: Path, url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url]
    done = subprocess.run(command, capture_output=True, timeout=120, check=False)  # noqa: S603 - the installed browser
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done


def dump_dom(chromium: str, tmp_path: Path, url: str) -> str:
    return _run(chromium, tmp_path / "dom-profile", url, "--dump-dom").stdout.decode()


def screenshot(chromium: str, tmp_path: Path, url: str) -> Image.Image:
    target = tmp_path / "screenshot.png"
    _run(
        chromium,
        tmp_path / "png-profile",
        url,
        f"--screenshot={target}",
        "--window-size={},{}".format(*WINDOW),
    )
    raw = target.read_bytes()
    assert raw.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(raw)).convert("RGB")
    assert image.size == WINDOW
    return image


def assert_not_blank(image: Image.Image) -> None:
    colours = image.getcolors(maxcolors=1 << 20) or []
    background = max(colours)[1]
    drawn = sum(count for count, colour in colours if colour != background)
    assert len(colours) > 50  # text, badges, charts: not one flat colour
    assert drawn > 0.02 * image.width * image.height


def operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, methods in document["paths"].items() for method in methods}


def test_docs_need_no_api_key_and_point_at_this_stack(system: System) -> None:
    anonymous = httpx.Client(base_url=system.stack.api_url, timeout=30, trust_env=False)
    page = anonymous.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'src="/docs/swagger-ui-bundle.min.js"' in page.text
    for asset, kind in (("swagger-ui-bundle.min.js", "javascript"), ("swagger-ui.min.css", "css")):
        served = anonymous.get(f"/docs/{asset}")
        assert served.status_code == 200 and kind in served.headers["content-type"]
        assert len(served.content) > 10_000
    document = anonymous.get("/openapi.json").json()
    committed = json.loads((REPO_ROOT / "docs" / "openapi.json").read_text())
    assert document["paths"] == committed["paths"]
    assert document["servers"] == [{"url": system.stack.api_url, "description": "this local stack"}]
    scheme = document["components"]["securitySchemes"]["localApiKey"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "x-api-key")
    assert document["security"] == [{"localApiKey": []}]
    # What "Try it out" sends: the server URL and the key header; without the key, the route refuses.
    url = document["servers"][0]["url"] + f"/accounts/{APPID}"
    assert httpx.get(url, headers={"x-api-key": system.stack.api_key}, trust_env=False).status_code == 200
    assert anonymous.get(f"/accounts/{APPID}").status_code == 403


def test_swagger_ui_renders_every_operation(system: System, chromium: str, tmp_path: Path) -> None:
    url = f"{system.stack.api_url}/docs"
    dom = dump_dom(chromium, tmp_path, url)
    rendered = {
        (method, path)
        for method, path in re.findall(r'class="opblock opblock-(\w+)[^"]*".*?data-path="([^"]+)"', dom, re.S)
    }
    committed = json.loads((REPO_ROOT / "docs" / "openapi.json").read_text())
    assert rendered == operations(committed)
    assert system.stack.api_url in dom  # the server list offers this stack
    image = screenshot(chromium, tmp_path, url)
    assert_not_blank(image)
    colours = {colour for _, colour in image.getcolors(maxcolors=1 << 20) or []}
    assert {SWAGGER_GET_BLUE, SWAGGER_POST_GREEN} <= colours  # the operation badges are on screen


def _report_module() -> Any:
    try:
        return importlib.import_module("wxreach_cli.report")
    except ImportError as exc:
        pytest.skip(f"wxreach_cli.report is not importable ({exc}): the CLI's delivery report is missing")


@pytest.fixture
def delivery_report_html(tmp_path: Path) -> Path:
    """A report page written by the CLI from a delivery report shaped by the API's own model."""
    report = _report_module()
    from wxreach.reach.report_service import BroadcastReport

    at = datetime(2026, 12, 4, 10, 0, tzinfo=UTC).isoformat()
    api_report = BroadcastReport.model_validate(
        {
            "broadcast": {
                "id": "b0123456789abcdef0123",
                "appid": APPID,
                "name": "Spring sale",
                "channel": "template",
                "audience": {"kind": "all"},
                "content": {"template_id": "TPL_SPRING", "data": {"thing1": "{{product}}"}},
                "state": "sent",
                "created_at": at,
                "updated_at": at,
                "created_by": "arn:aws:iam::123456789012:user/ops",
            },
            "counts": {
                "recipients": 40,
                "by_state": {"delivered": 30, "failed": 6, "skipped": 4},
                "by_reason": {"failed": {"user_block": 6}, "skipped": {"not_following": 4}},
                "delivery": {"awaiting_callback": 0, "delivered": 30, "failed": 6, "unknown": 0},
            },
            "outcomes_final": True,
            "delivery_rate": 30 / 36,
            "failures": [
                {"state": "failed", "reason": "user_block", "count": 6, "examples": ["oAbC…x9Yz"]},
                {"state": "skipped", "reason": "not_following", "count": 4},
            ],
            "timeline": {
                "bucket_seconds": 300,
                "buckets": [
                    {"start": at, "sent": 20, "delivered": 16, "failed": 4},
                    {"start": "2026-12-04T10:05:00+00:00", "sent": 16, "delivered": 14, "failed": 2},
                ],
            },
            "scanned": 40,
            "complete": True,
            "generated_at": "2026-12-04T10:30:00+00:00",
        }
    )
    files = report.write_report(report.normalise(api_report.model_dump(mode="json")), tmp_path / "report")
    return Path(files.html)


def test_delivery_report_page_renders(delivery_report_html: Path, chromium: str, tmp_path: Path) -> None:
    url = delivery_report_html.resolve().as_uri()
    dom = dump_dom(chromium, tmp_path, url)
    assert "Spring sale" in dom
    assert "user_block" in dom
    charts = re.findall(r'<img[^>]+src="data:image/png;base64,', dom)
    assert len(charts) == 3  # outcomes, timeline, failures: embedded, nothing fetched
    assert_not_blank(screenshot(chromium, tmp_path, url))
