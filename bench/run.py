"""wxreach benchmarks (`make bench`): handler cold import vs `import boto3`, per-event webhook
work vs wechatpy, and the template sender's throughput against the WeChat sandbox. Figures and
targets are printed side by side; nothing here fails on a target (performance is measured, not
asserted). See docs/benchmarks.md.

    .venv/bin/python -m bench.run            # full run, about three and a half minutes on 2 shared cores
    .venv/bin/python -m bench.run --quick    # smoke run: fewer rounds, iterations and messages
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import cold_import, sender_throughput, webhook_events

ROOT = Path(__file__).resolve().parent.parent


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _banner(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 96 - len(title)))


def _environment() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in load],
        "versions": {
            d: _version(d)
            for d in (
                "boto3",
                "botocore",
                "aws-lambda-powertools",
                "aws-xray-sdk",
                "pydantic",
                "cryptography",
                "defusedxml",
                "wechatpy",
                "xmltodict",
            )
        },
    }


def run_cold_import(args: argparse.Namespace, report: dict[str, Any]) -> None:
    functions = cold_import.discover_functions()
    site = None
    site_mode = args.site
    if site_mode == "lambda":
        site, dists, missing = cold_import.build_lambda_site(functions)
        if missing:
            print(f"! not installed in the venv, so missing from the Lambda-like site: {', '.join(missing)}")
        print(f"sys.path per function: CodeUri, layer dir(s), then a Lambda-like site of {len(dists)} dists:")
        print("  " + " ".join(dists))
    else:
        print(
            "sys.path per function: CodeUri, layer dir(s), then the venv's site-packages (dev packages too)"
        )
    for fn in functions:
        layers = ", ".join(str(d.relative_to(ROOT)) for d in fn.layer_dirs) or "none"
        print(f"  {fn.logical_id}: {fn.module} from {fn.code_uri.relative_to(ROOT)} + layers {layers}")
        for note in fn.notes:
            print(f"    ! {note}")
    try:
        variants = cold_import.build_variants(functions, site)
        started = time.perf_counter()
        cold_import.measure(variants, rounds=args.rounds, site_mode=site_mode)
        rows = cold_import.summarise(variants)
        flags = "-I -S" if site else "-I"
        elapsed = time.perf_counter() - started
        print(
            f"\n{args.rounds} interleaved rounds (+1 warm-up) of fresh `python {flags}` processes, "
            f"perf_counter around the import only; {elapsed:.0f} s.\n"
            "as deployed = the Lambda environment (LAMBDA_TASK_ROOT...): Powertools' Tracer is on and\n"
            "  X-Ray patches WXREACH_TRACED_MODULES (botocore); tracer off: POWERTOOLS_TRACE_DISABLED.\n"
            "ratio = median / boto3 median; paired = median of the per-round ratios.\n"
        )
        print(cold_import.format_table(rows))
        report["cold_import"] = {"site": site_mode, "rounds": args.rounds, "rows": rows}

        runs = args.importtime_runs
        trees = {id(v): cold_import.import_tree(v, site_mode=site_mode, runs=runs) for v in variants}
        baseline = variants[0]
        budget = (cold_import.TARGET_RATIO - 1) * rows[0]["median_ms"]
        base_gc = trees[id(baseline)].get("(gc)", {}).get("self_ms", 0.0)
        print(
            f"\nWhat each handler loads beyond `import boto3`: self ms by package of the modules boto3 does "
            f"not load\n(bench/import_tree.py, median of {runs}); garbage collection during the import is "
            f"its own row (boto3 alone: {base_gc:.1f} ms).\nThe target leaves "
            f"{cold_import.TARGET_RATIO - 1:.0%} of boto3's median for all of it:\n"
        )
        print(
            cold_import.format_beyond_baseline(
                trees[id(baseline)], [(v, trees[id(v)]) for v in variants[1:]], budget_ms=budget
            )
        )
        for variant in variants[1:]:
            if variant.label != "as deployed":
                continue
            print(
                f"\nImports made directly by project code, {variant.module} as deployed, by cumulative ms "
                "(the first importer pays):"
            )
            print(cold_import.format_project_imports(trees[id(variant)], variant.module))

        wanted = args.importtime_module
        target = next(
            (v for v in variants if v.module == wanted and v.label == "as deployed"),
            next((v for v in variants if v.label == "as deployed"), None),
        )
        if target is not None:
            importtime = cold_import.importtime_profile(target, site_mode=site_mode, runs=runs)
            print(
                f"\nTop 15 cumulative import costs, {target.module} as deployed "
                f"(python -X importtime, median of {runs}; importtime adds\nits own overhead; "
                "'imported by' is from bench/import_tree.py):"
            )
            print(cold_import.format_importtime(importtime, trees[id(target)], target.module))
        report["import_trees"] = {f"{v.module} ({v.label})": trees[id(v)] for v in variants}
        if target is not None:
            report["importtime"] = {"module": target.module, "modules": importtime}
    finally:
        cold_import.remove_site(site)


def run_events(args: argparse.Namespace, report: dict[str, Any]) -> None:
    pushes = webhook_events.load_pushes()
    print(
        f"{len(pushes)} fixtures from events/wechat/, each as a safe-mode push "
        "(fixed EncodingAESKey, appid, token).\n"
        "wxreach:  parse_callback_xml(envelope) + verify_msg_signature + CallbackCipher.decrypt\n"
        "          (cipher built once) + parse_callback_xml(xml) + parse_event(fields)\n"
        "wechatpy: WeChatCrypto(...).decrypt_message(body, msg_signature, timestamp, nonce)\n"
        "          (built once) + parse_message(xml)"
    )
    started = time.perf_counter()
    results = webhook_events.compare(pushes, iterations=args.iterations, repeats=args.repeats)
    print(
        f"{args.iterations} calls × {args.repeats} repeats per library and event, interleaved "
        f"(who goes first alternates);\nµs per call = median of repeats; "
        f"speedup = median of the per-pair ratios; {time.perf_counter() - started:.0f} s\n"
    )
    print(webhook_events.format_comparison(results))
    report["events"] = [
        {
            "event": r.name,
            "wxreach_us": r.wxreach_us,
            "wechatpy_us": r.wechatpy_us,
            "speedup": r.speedup if r.comparable else None,
            "wxreach_model": r.check.wxreach_kind,
            "wechatpy_class": r.check.wechatpy_class,
            "wxreach_error": r.check.wxreach_error,
            "wechatpy_error": r.check.wechatpy_error,
        }
        for r in results
    ]
    comparable = [r.speedup for r in results if r.comparable]
    report["events_geomean_speedup"] = webhook_events.geometric_mean(comparable)

    _banner("(c) where wxreach's per-event time goes")
    stage_iterations = max(100, args.iterations // 4)
    table = webhook_events.stage_breakdown(pushes, iterations=stage_iterations, repeats=3)
    print(f"Each stage alone, µs per call (best of 3 × {stage_iterations}):\n")
    print(webhook_events.format_stages(table))
    report["stages_us"] = table
    profile_iterations = max(20, args.iterations // 10)
    print(
        f"\ncProfile of the whole wxreach pipeline, {profile_iterations} × every event "
        "(profiler overhead inflates small Python calls):\n"
    )
    print(webhook_events.hot_spots(pushes, iterations=profile_iterations))


def run_sender(args: argparse.Namespace, report: dict[str, Any]) -> None:
    plan = sender_throughput.plan_from(args, quick=args.quick, prefix="sender-")
    figures = sender_throughput.measure(plan)
    report["sender_throughput"] = figures
    if not figures["all_sent"]:
        raise RuntimeError("not every message ended `sent`: the throughput figures are not valid")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 3 rounds, 300 calls × 3 repeats, 200 messages"
    )
    parser.add_argument("--rounds", type=int, default=9, help="cold-import rounds per variant (default 9)")
    parser.add_argument("--iterations", type=int, default=1000, help="calls per timing repeat (default 1000)")
    parser.add_argument("--repeats", type=int, default=10, help="timing repeats per event (default 10)")
    parser.add_argument("--importtime-runs", type=int, default=3, help="-X importtime runs (default 3)")
    parser.add_argument("--importtime-module", default="webhook_handler", help="module to break down")
    parser.add_argument(
        "--site",
        choices=("lambda", "venv"),
        default="lambda",
        help="cold-import site-packages: the layer's dependency closure (default) or the whole venv",
    )
    parser.add_argument("--skip-import", action="store_true", help="skip the cold-import section")
    parser.add_argument("--skip-events", action="store_true", help="skip the per-event section")
    parser.add_argument("--skip-sender", action="store_true", help="skip the sender throughput section")
    sender_throughput.add_arguments(parser, prefix="sender-")
    parser.add_argument("--json", type=Path, help="also write the raw figures to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.iterations, args.repeats, args.importtime_runs = 3, 300, 3, 1

    started = time.perf_counter()
    env = _environment()
    report: dict[str, Any] = {"environment": env}
    print("wxreach benchmarks: figures are measured, targets are printed beside them, nothing fails on them.")
    print(
        f"Python {env['python']} ({env['implementation']}, {env['machine']}), {env['cpus']} CPUs, "
        f"load average {env['loadavg'][0]:.2f} {env['loadavg'][1]:.2f} {env['loadavg'][2]:.2f}"
    )
    print("  " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()))

    failed = []
    sections = [
        (
            args.skip_import,
            "(a) cold import of each handler vs `import boto3` (target ≤ 1.25×)",
            run_cold_import,
        ),
        (
            args.skip_events,
            "(b) per-event webhook work: wxreach vs wechatpy (target ≥ 2× faster)",
            run_events,
        ),
        (
            args.skip_sender,
            "(d) template sender at 50 ms per call: vs in-flight ÷ latency (≥ 0.8), vs sequential (≥ 15×)",
            run_sender,
        ),
    ]
    for skipped, title, section in sections:
        if skipped:
            continue
        _banner(title)
        try:
            section(args, report)
        except Exception:  # a module mid-edit must not cost the other section its figures
            traceback.print_exc()
            print(f"! section {title.split()[0]} could not run (see above)")
            failed.append(title.split()[0])

    elapsed = time.perf_counter() - started
    print(f"\nTotal bench time {elapsed:.0f} s.")
    if args.json:
        report["elapsed_s"] = elapsed
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"Raw figures written to {args.json}")
    # Non-zero only when the bench could not measure something, never because a target is missed.
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
