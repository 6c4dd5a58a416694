from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from matplotlib.image import imread

from wxreach.reach.broadcast_service import BroadcastCounts
from wxreach.reach.broadcasts import (
    Audience,
    AudienceKind,
    Broadcast,
    BroadcastChannel,
    BroadcastState,
    MassContent,
)
from wxreach.reach.rendering import MessageContent
from wxreach_cli.report import NO_REASON, _quiet_gaps, combine, normalise, write_report

APPID = "wx1234567890abcdef"
TEMPLATE_ID = "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc"
HOSTILE_NAME = 'Spring sale <script>alert("x")</script> & more'
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
AT = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


def broadcast_json(broadcast_id: str, name: str, channel: BroadcastChannel) -> dict[str, Any]:
    """The Broadcast model as the API dumps it."""
    mass = channel is BroadcastChannel.MASS
    return Broadcast(
        id=broadcast_id,
        appid=APPID,
        name=name,
        channel=channel,
        audience=Audience(kind=AudienceKind.ALL),
        content=None if mass else MessageContent(template_id=TEMPLATE_ID, data={"thing1": "{{product}}"}),
        mass=MassContent(msgtype="text", text="hello") if mass else None,
        state=BroadcastState.SENT,
        created_at=AT,
        updated_at=AT,
        created_by="arn:aws:iam::123456789012:user/ops",
    ).model_dump(mode="json")


def template_report(name: str = HOSTILE_NAME) -> dict[str, Any]:
    counts = BroadcastCounts(
        recipients=100,
        excluded={"unfollowed": 3},
        by_state={"delivered": 80, "sent": 5, "failed": 10, "skipped": 3, "unknown": 2, "queued": 0},
        by_reason={
            "failed": {"user_block": 6, "system": 4},
            "skipped": {"not_following": 3},
            "unknown": {"no_callback": 2},
        },
        delivery={"awaiting_callback": 5, "delivered": 80, "failed": 4, "unknown": 2},
    )
    return {
        "broadcast": broadcast_json("b0123456789abcdef0123", name, BroadcastChannel.TEMPLATE),
        "counts": counts.model_dump(mode="json"),
        "outcomes_final": False,
        "delivery_rate": 80 / 91,
        "failures": [
            {
                "state": "failed",
                "reason": "user_block",
                "count": 6,
                "meaning": "The follower refuses the account's messages",
                "examples": ["oAbC…x9Yz", "oDeF…w8Vu", "oGhI…t7St"],
            },
            {
                "state": "failed",
                "reason": "system",
                "count": 4,
                "meaning": None,
                "examples": ["oJkL…s6Rq", "oEfG…h4Ij"],
            },
            {"state": "skipped", "reason": "not_following", "count": 3, "meaning": None, "examples": []},
            {"state": "unknown", "reason": "no_callback", "count": 2, "meaning": None, "examples": []},
        ],
        "timeline": {
            "bucket_seconds": 300,
            "buckets": [
                {"start": "2026-12-04T10:00:00Z", "sent": 40, "delivered": 35, "failed": 2},
                {"start": "2026-12-04T10:05:00Z", "sent": 50, "delivered": 40, "failed": 6},
                {"start": "2026-12-04T10:20:00Z", "sent": 5, "delivered": 5, "failed": 2},
            ],
        },
        "scanned": 100,
        "complete": True,
        "export": {
            "key": "reports/b0123456789abcdef0123/outcomes.csv",
            "url": "https://bucket.s3.amazonaws.com/reports/b0123456789abcdef0123/outcomes.csv?X-Amz-Signature=ab&x=1",
            "rows": 100,
        },
        "generated_at": "2026-12-04T10:30:00Z",
    }


def mass_report() -> dict[str, Any]:
    counts = BroadcastCounts(
        recipients=20000,
        by_state={"sent": 19000, "failed": 1000},
        by_reason={"failed": {"too_few_recipients": 1000}},
        batches={"batches": {"sent": 19, "failed": 1}},
        delivery={"total": 19000, "filtered": 18800, "sent": 18700, "errors": 100, "jobs_pending": 0},
    )
    return {
        "broadcast": broadcast_json("b00000000000000000aaa", "Newsletter", BroadcastChannel.MASS),
        "counts": counts.model_dump(mode="json"),
        "outcomes_final": True,
        "delivery_rate": 18700 / 19000,
        "failures": [
            {
                "state": "failed",
                "reason": "too_few_recipients",
                "count": 1000,
                "meaning": None,
                "examples": [],
            },
            {
                "state": "filtered",
                "reason": "wechat_filter",
                "count": 200,
                "meaning": None,
                "examples": ["oMnO…p1Qr"],
            },
            {
                "state": "failed",
                "reason": "system",
                "count": 100,
                "meaning": "WeChat failed the send",
                "examples": ["oStU…v2Wx", "oJkL…s6Rq", "oYzA…b3Cd"],
            },
        ],
        "timeline": {
            "bucket_seconds": 900,
            "buckets": [
                {"start": "2026-12-04T10:00:00Z", "sent": 10000, "delivered": 9900, "failed": 50},
                {"start": "2026-12-04T10:15:00Z", "sent": 8800, "delivered": 8800, "failed": 50},
            ],
        },
        "scanned": 20000,
        "complete": False,
        "export": None,
        "generated_at": "2026-12-04T11:00:00Z",
    }


def empty_report() -> dict[str, Any]:
    return {
        "broadcast": broadcast_json("b0000000000000000e000", "Nobody yet", BroadcastChannel.TEMPLATE),
        "counts": BroadcastCounts(recipients=0).model_dump(mode="json"),
        "outcomes_final": True,
        "delivery_rate": None,
        "failures": [],
        "timeline": {"bucket_seconds": 300, "buckets": []},
        "scanned": 0,
        "complete": True,
        "export": None,
        "generated_at": "2026-12-04T10:30:00Z",
    }


def assert_png(path: Path) -> Any:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 2000
    pixels = imread(path)
    assert pixels.shape[:2] == (400, 800)
    assert (pixels[..., :3] < 0.5).any(), "the chart draws something dark (bars, lines or its note)"
    return pixels


def test_template_key_figures_count_what_wechat_accepted() -> None:
    summary = normalise(template_report())

    assert (summary["recipients"], summary["delivered"], summary["failed"]) == (100, 80, 10)
    assert summary["accepted"] == 5 + 80 + 4 + 2
    assert summary["delivery_rate"] == pytest.approx(80 / 91)
    assert summary["outcomes"]["failed"] == {"user_block": 6, "system": 4}
    assert summary["outcomes"]["delivered"] == {NO_REASON: 80}
    assert summary["outcomes"]["excluded"] == {"unfollowed": 3}
    assert "queued" not in summary["outcomes"]


def test_mass_key_figures_use_wechats_job_totals() -> None:
    summary = normalise(mass_report())

    assert summary["accepted"] == 19000
    assert summary["delivered"] == 18700
    assert summary["failed"] == 100 + 1000
    assert summary["delivery_rate"] == pytest.approx(18700 / 19000)
    assert summary["outcomes"] == {"sent": {NO_REASON: 19000}, "failed": {"too_few_recipients": 1000}}


def test_charts_are_pngs_of_what_the_report_holds(tmp_path: Path) -> None:
    files = write_report(normalise(template_report()), tmp_path / "out")

    assert set(files.pngs) == {"outcomes", "timeline", "failures"}
    for name, path in files.pngs.items():
        assert path == tmp_path / "out" / f"{name}.png"
        assert_png(path)
    failures = files.series["failures"]
    assert failures.labels == [
        "failed: user_block",
        "failed: system",
        "skipped: not_following",
        "unknown: no_callback",
    ]
    assert failures.values == {"count": [6, 4, 3, 2]}
    timeline = files.series["timeline"]
    assert timeline.labels == ["2026-12-04T10:00:00Z", "2026-12-04T10:05:00Z", "2026-12-04T10:20:00Z"]
    assert timeline.values == {"sent": [40, 50, 5], "delivered": [35, 40, 5], "failed": [2, 6, 2]}
    outcomes = files.series["outcomes"]
    assert outcomes.labels == ["delivered", "sent", "failed", "unknown", "skipped", "excluded"]
    assert outcomes.values["user_block"] == [0, 0, 6, 0, 0, 0]
    assert outcomes.values[NO_REASON] == [80, 5, 0, 0, 0, 0]
    assert json.loads(json.dumps(files.as_json()))["series"]["failures"]["values"] == {"count": [6, 4, 3, 2]}


def test_html_is_self_contained_and_escapes_the_operators_strings(tmp_path: Path) -> None:
    files = write_report(normalise(template_report()), tmp_path)
    page = files.html.read_text(encoding="utf-8")

    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [base64.b64decode(data) for data in embedded] == [
        files.pngs[name].read_bytes() for name in ("outcomes", "timeline", "failures")
    ]
    assert "<script" not in page
    assert "Spring sale &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in page
    assert not re.search(r'(src|href)="(?!data:|https://bucket\.s3)', page), "nothing fetched but the export"
    assert (
        'href="https://bucket.s3.amazonaws.com/reports/b0123456789abcdef0123/outcomes.csv?X-Amz-Signature=ab&amp;x=1"'
        in page
    )
    for figure in ("<b>100</b>", "<b>80</b>", "<b>10</b>", "<b>87.9%</b>"):
        assert figure in page
    assert "oAbC…x9Yz, oDeF…w8Vu, oGhI…t7St" in page
    assert "Outcomes are not final yet" in page


@pytest.mark.parametrize("url", ["javascript:alert(1)", None])
def test_an_export_without_a_web_url_names_its_key_and_is_not_a_link(tmp_path: Path, url: str | None) -> None:
    report = template_report()
    report["export"]["url"] = url

    page = write_report(normalise(report), tmp_path).html.read_text(encoding="utf-8")

    assert "href=" not in page
    assert "javascript" not in page
    assert (
        "CSV, 100 rows in the broadcast bucket at <code>reports/b0123456789abcdef0123/outcomes.csv</code>"
        in page
    )


def test_an_empty_report_still_renders_every_chart(tmp_path: Path) -> None:
    files = write_report(normalise(empty_report()), tmp_path)

    for path in files.pngs.values():
        pixels = assert_png(path)
        assert (pixels[150:250, 200:600, :3] < 0.5).any(), "the note sits in the middle"
    assert all(not s.labels for s in files.series.values())
    page = files.html.read_text(encoding="utf-8")
    assert "<b>—</b>" in page
    assert page.count("data:image/png;base64,") == 3


def test_combine_sums_counts_merges_failures_and_rebuckets_timelines() -> None:
    summary = combine([template_report(), mass_report()], title="wx1234567890abcdef, December")

    assert summary["title"] == "wx1234567890abcdef, December"
    assert [b["id"] for b in summary["broadcasts"]] == ["b0123456789abcdef0123", "b00000000000000000aaa"]
    assert (summary["recipients"], summary["accepted"]) == (20100, 91 + 19000)
    assert (summary["delivered"], summary["failed"]) == (80 + 18700, 10 + 1100)
    assert summary["delivery_rate"] == pytest.approx((80 + 18700) / (91 + 19000))
    assert summary["outcomes"]["failed"] == {"user_block": 6, "system": 4, "too_few_recipients": 1000}
    assert summary["outcomes"]["sent"] == {NO_REASON: 5 + 19000}
    system = next(f for f in summary["failures"] if (f["state"], f["reason"]) == ("failed", "system"))
    assert system["count"] == 104
    assert system["meaning"] == "WeChat failed the send"
    assert system["examples"] == ["oJkL…s6Rq", "oEfG…h4Ij", "oStU…v2Wx"]  # no repeat, at most 3
    assert [f["count"] for f in summary["failures"]] == [1000, 200, 104, 6, 3, 2]
    assert summary["timeline"] == {
        "bucket_seconds": 900,
        "buckets": [
            {"start": "2026-12-04T10:00:00Z", "sent": 10090, "delivered": 9975, "failed": 58},
            {"start": "2026-12-04T10:15:00Z", "sent": 8805, "delivered": 8805, "failed": 52},
        ],
    }
    assert summary["generated_at"] == "2026-12-04T11:00:00Z"
    assert (summary["outcomes_final"], summary["complete"], summary["scanned"]) == (False, False, 20100)
    assert [e["broadcast_id"] for e in summary["exports"]] == ["b0123456789abcdef0123"]


def test_combined_report_renders(tmp_path: Path) -> None:
    files = write_report(
        combine([template_report(), mass_report(), empty_report()], title="December"), tmp_path
    )

    for path in files.pngs.values():
        assert_png(path)
    assert files.series["timeline"].labels == ["2026-12-04T10:00:00Z", "2026-12-04T10:15:00Z"]
    assert files.series["outcomes"].values["too_few_recipients"][:3] == [0, 0, 1000]
    page = files.html.read_text(encoding="utf-8")
    assert page.count("<tr><td>") == 3 + 6  # the broadcasts, then the merged failures
    assert "Nobody yet" in page
    assert "One point per 15 min." in page
    assert "The scan stopped at its limit (20,100 read)" in page


def test_timeline_lines_drop_to_zero_across_buckets_the_report_leaves_out() -> None:
    day = 1 / 288  # a 5-minute bucket in matplotlib's days

    assert _quiet_gaps([0, day], [4, 5], day) == ([0, day], [4, 5])
    xs, ys = _quiet_gaps([0, 4 * day], [4, 5], day)
    assert xs == pytest.approx([0, day, 3 * day, 4 * day])
    assert ys == [4, 0, 0, 5]
