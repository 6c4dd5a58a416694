"""Cold import of each Lambda handler module, timed in a fresh interpreter, against `import boto3`.

Functions, their CodeUri, layers and environment come from template.yaml, so a new function is
benchmarked without touching this file. Each measurement is one fresh `python -I -S` process whose
sys.path is set explicitly and which times only the import with time.perf_counter (interpreter
start-up is excluded). Variants and the boto3 baseline are interleaved in shuffled rounds.

Default site ("lambda"): a temporary directory of symlinks to exactly the installed distributions
that the layer's requirements.txt files pull in, plus boto3 (the runtime ships it). The project
venv also holds dev-only packages (awscrt, requests, rich, click...) that boto3, httpx and the
X-Ray patcher import when present; they are not in Lambda, so measuring on the venv overstates
cold start. `--site venv` measures on the venv's site-packages instead.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from local.stack import cfn

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
RUNTIME_PROVIDED = ("boto3",)  # the python3.12 Lambda runtime ships boto3 and its dependencies
TARGET_RATIO = 1.25
# Handlers of the sending core carry an HTTP client and the sender: their issue allows 1.5×.
TARGET_RATIOS = {"template_sender_handler": 1.5}
FIRST_PARTY = ("wxreach",)

# Runs in the child. Nothing is imported before the timer but sys and time (both built in), so
# the measured import pays for everything it needs, as in a fresh Lambda sandbox.
_CHILD = """\
import sys, time
name = sys.argv[1]
sys.path[0:0] = sys.argv[2:]
t0 = time.perf_counter()
__import__(name)
t1 = time.perf_counter()
sys.stdout.write(f"{(t1 - t0) * 1e3:.4f} {len(sys.modules)}\\n")
"""


# -- template discovery -------------------------------------------------------------------------
@dataclass
class LambdaFunction:
    logical_id: str
    module: str
    code_uri: Path
    layer_dirs: list[Path]
    environment: dict[str, str]
    memory_mb: int
    notes: list[str] = field(default_factory=list)

    @property
    def sys_path(self) -> list[Path]:
        return [self.code_uri, *self.layer_dirs]


def _resolve(value: Any, parameters: dict[str, Any], placeholder: str) -> str:
    if isinstance(value, str | int | float | bool):
        return str(value)
    if isinstance(value, dict) and set(value) == {"Ref"}:
        param = parameters.get(value["Ref"])
        if isinstance(param, dict) and "Default" in param:
            return str(param["Default"])
    # Resource references (!Ref Queue, !GetAtt, !Sub) only need to be non-empty at import time.
    return placeholder


def discover_functions(template: Path = TEMPLATE) -> list[LambdaFunction]:
    doc = cfn.load_template(template)
    resources: dict[str, Any] = doc.get("Resources", {})
    parameters: dict[str, Any] = doc.get("Parameters", {})
    defaults: dict[str, Any] = (doc.get("Globals") or {}).get("Function") or {}
    found = []
    for logical_id, resource in resources.items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties") or {}
        runtime = str(props.get("Runtime", defaults.get("Runtime", "")))
        handler = props.get("Handler", defaults.get("Handler"))
        code_uri = props.get("CodeUri", defaults.get("CodeUri"))
        if not runtime.startswith("python") or not isinstance(handler, str) or not isinstance(code_uri, str):
            continue
        notes: list[str] = []
        layer_dirs = []
        # SAM merges list globals with the function's own list (globals first).
        for layer in [*(defaults.get("Layers") or []), *(props.get("Layers") or [])]:
            target = resources.get(layer.get("Ref", "")) if isinstance(layer, dict) else None
            content = (target or {}).get("Properties", {}).get("ContentUri")
            if target and target.get("Type") == "AWS::Serverless::LayerVersion" and isinstance(content, str):
                layer_dirs.append((ROOT / content).resolve())
            else:
                notes.append(f"layer {layer!r} is not a local SAM layer: not on sys.path")
        env: dict[str, str] = {}
        for source in (defaults, props):
            variables = (source.get("Environment") or {}).get("Variables") or {}
            for key, value in variables.items():
                env[key] = _resolve(value, parameters, placeholder=f"bench-{logical_id}-{key.lower()}")
        memory = props.get("MemorySize", defaults.get("MemorySize", 128))
        found.append(
            LambdaFunction(
                logical_id=logical_id,
                module=handler.rsplit(".", 1)[0],
                code_uri=(ROOT / code_uri).resolve(),
                layer_dirs=layer_dirs,
                environment=env,
                memory_mb=int(memory) if isinstance(memory, int | str) and str(memory).isdigit() else 128,
                notes=notes,
            )
        )
    return found


# -- a Lambda-like site-packages -----------------------------------------------------------------
def _requirement_lines(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            lines.append(line)
    return lines


def _closure(roots: list[str]) -> tuple[dict[str, metadata.Distribution], list[str]]:
    """Installed distributions reachable from the root requirements, honouring extras and markers."""
    dists: dict[str, metadata.Distribution] = {}
    extras_seen: dict[str, set[str]] = defaultdict(set)
    missing = []
    queue = [Requirement(line) for line in roots]
    while queue:
        req = queue.pop()
        name = canonicalize_name(req.name)
        try:
            dist = dists.get(name) or metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            missing.append(req.name)
            continue
        if name in dists and set(req.extras) <= extras_seen[name]:
            continue
        dists[name] = dist
        extras_seen[name] |= set(req.extras)
        for spec in dist.requires or []:
            dep = Requirement(spec)
            active = extras_seen[name] | {""}
            if dep.marker is None or any(dep.marker.evaluate({"extra": extra}) for extra in active):
                queue.append(dep)
    return dists, sorted(set(missing))


def build_lambda_site(functions: list[LambdaFunction]) -> tuple[Path, list[str], list[str]]:
    """A temp dir of symlinks to the layer's dependency closure (+ runtime boto3); caller deletes it."""
    roots = list(RUNTIME_PROVIDED)
    for layer in sorted({d for fn in functions for d in fn.layer_dirs}):
        requirements = layer / "requirements.txt"
        if requirements.exists():
            roots += _requirement_lines(requirements)
    dists, missing = _closure(roots)
    site = Path(tempfile.mkdtemp(prefix="wxreach-bench-site-"))
    for dist in dists.values():
        tops = set()
        for entry in dist.files or []:
            parts = Path(entry).parts
            if not parts or parts[0] in ("..", "__pycache__") or parts[0].endswith(".pth"):
                continue
            tops.add(parts[0])
        for top in tops:
            source = Path(str(dist.locate_file(top)))
            link = site / top
            if source.exists() and not link.exists():
                link.symlink_to(source)
    names = sorted(f"{d.metadata['Name']}=={d.version}" for d in dists.values())
    return site, names, missing


# -- measurement ---------------------------------------------------------------------------------
@dataclass
class Variant:
    label: str
    module: str
    function: str
    sys_path: list[Path]
    env: dict[str, str]
    samples_ms: list[float] = field(default_factory=list)
    modules_loaded: int = 0


def lambda_environment(fn: LambdaFunction, *, tracing: bool) -> dict[str, str]:
    """What the Lambda service puts in the environment, plus the template's variables."""
    region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_LAMBDA_FUNCTION_NAME": fn.logical_id,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_mb),
        "LAMBDA_TASK_ROOT": str(fn.code_uri),
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        # Lambda points this at a link-local daemon; nothing is sent at import, loopback all the same.
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
        **fn.environment,
    }
    if not tracing:
        env["POWERTOOLS_TRACE_DISABLED"] = "true"
    return env


def _child_command(variant: Variant, *, site_mode: str, importtime: bool = False) -> list[str]:
    flags = ["-I", "-S"] if site_mode == "lambda" else ["-I"]
    if importtime:
        flags += ["-X", "importtime"]
    return [sys.executable, *flags, "-c", _CHILD, variant.module, *map(str, variant.sys_path)]


def _run_child(variant: Variant, *, site_mode: str) -> tuple[float, int]:
    proc = subprocess.run(
        _child_command(variant, site_mode=site_mode),
        env=variant.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
        raise RuntimeError(f"importing {variant.module} ({variant.label}) failed:\n{tail}")
    ms, modules = proc.stdout.split()
    return float(ms), int(modules)


def build_variants(functions: list[LambdaFunction], site: Path | None) -> list[Variant]:
    extra = [site] if site is not None else []
    baseline_fn = LambdaFunction("Baseline", "boto3", ROOT, [], {}, 512)
    layers = sorted({d for fn in functions for d in fn.layer_dirs})
    variants = [
        Variant(
            "baseline",
            "boto3",
            "-",
            [*layers, *extra],
            lambda_environment(baseline_fn, tracing=True),
        )
    ]
    for fn in functions:
        for tracing in (True, False):
            variants.append(
                Variant(
                    "as deployed" if tracing else "tracer off",
                    fn.module,
                    fn.logical_id,
                    [*fn.sys_path, *extra],
                    lambda_environment(fn, tracing=tracing),
                )
            )
    return variants


def measure(variants: list[Variant], *, rounds: int, site_mode: str, seed: int = 20240425) -> None:
    """Warm the bytecode and page caches once, then `rounds` shuffled rounds of every variant."""
    for variant in variants:
        _run_child(variant, site_mode=site_mode)
    rng = random.Random(seed)
    for _ in range(rounds):
        order = list(variants)
        rng.shuffle(order)
        for variant in order:
            ms, modules = _run_child(variant, site_mode=site_mode)
            variant.samples_ms.append(ms)
            variant.modules_loaded = modules


def summarise(variants: list[Variant]) -> list[dict[str, Any]]:
    baseline = variants[0]
    base_median = statistics.median(baseline.samples_ms)
    rows = []
    for variant in variants:
        median = statistics.median(variant.samples_ms)
        paired = statistics.median(
            v / b for v, b in zip(variant.samples_ms, baseline.samples_ms, strict=True)
        )
        rows.append(
            {
                "module": variant.module,
                "function": variant.function,
                "variant": variant.label,
                "median_ms": median,
                "min_ms": min(variant.samples_ms),
                "max_ms": max(variant.samples_ms),
                "ratio": median / base_median,
                "paired_ratio": paired,
                "modules": variant.modules_loaded,
                "samples_ms": variant.samples_ms,
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]], *, target: float = TARGET_RATIO) -> str:
    head = (
        f"{'module':<24}{'variant':<13}{'median ms':>10}{'min ms':>9}{'max ms':>9}"
        f"{'modules':>9}{'ratio':>8}{'paired':>8}  target"
    )
    lines = [head, "-" * len(head) + "-" * 16]
    for row in rows:
        if row["variant"] == "baseline":
            verdict = "(baseline)"
        else:
            goal = TARGET_RATIOS.get(row["module"], target)
            verdict = f"≤ {goal:.2f}×  " + ("meets" if row["ratio"] <= goal else "ABOVE target")
        lines.append(
            f"{row['module']:<24}{row['variant']:<13}{row['median_ms']:>10.1f}{row['min_ms']:>9.1f}"
            f"{row['max_ms']:>9.1f}{row['modules']:>9}{row['ratio']:>7.2f}×{row['paired_ratio']:>7.2f}×"
            f"  {verdict}"
        )
    return "\n".join(lines)


# -- where the import time goes -----------------------------------------------------------------
_IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")
_IMPORT_TREE = Path(__file__).resolve().parent / "import_tree.py"


def parse_importtime(stderr: str) -> dict[str, tuple[int, int]]:
    """module → (self µs, cumulative µs) from `-X importtime` output."""
    rows = {}
    for line in stderr.splitlines():
        match = _IMPORTTIME.match(line)
        if match:
            self_us, cum_us, _indent, name = match.groups()
            rows[name] = (int(self_us), int(cum_us))
    return rows


def _run_profiler(variant: Variant, command: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(command, env=variant.env, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"profiling the import of {variant.module} failed:\n{proc.stderr[-2000:]}")
    return proc


def importtime_profile(variant: Variant, *, site_mode: str, runs: int = 3) -> dict[str, dict[str, float]]:
    """Median self/cumulative ms per module over `runs` fresh `python -X importtime` imports."""
    samples: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for _ in range(runs):
        proc = _run_profiler(variant, _child_command(variant, site_mode=site_mode, importtime=True))
        for module, pair in parse_importtime(proc.stderr).items():
            samples[module].append(pair)
    return {
        module: {
            "self_ms": statistics.median(p[0] for p in pairs) / 1e3,
            "cumulative_ms": statistics.median(p[1] for p in pairs) / 1e3,
        }
        for module, pairs in samples.items()
    }


def import_tree(variant: Variant, *, site_mode: str, runs: int = 3) -> dict[str, dict[str, Any]]:
    """Who imported what (bench/import_tree.py, right for lazy imports too), median ms over runs."""
    flags = ["-I", "-S"] if site_mode == "lambda" else ["-I"]
    command = [sys.executable, *flags, str(_IMPORT_TREE), variant.module, *map(str, variant.sys_path)]
    samples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _ in range(runs):
        proc = _run_profiler(variant, command)
        for line in proc.stdout.splitlines():
            row = json.loads(line)
            samples[row["name"]].append(row)
    return {
        name: {
            "parent": rows[0]["parent"],
            "cumulative_ms": statistics.median(r["cum_us"] for r in rows) / 1e3,
            "self_ms": statistics.median(r["self_us"] for r in rows) / 1e3,
        }
        for name, rows in samples.items()
    }


def _is_first_party(module: str, handler_module: str) -> bool:
    return module.split(".")[0] in (*FIRST_PARTY, handler_module)


def imported_by(tree: dict[str, dict[str, Any]], module: str, handler_module: str) -> str:
    """`wxreach.x` when project code imported `module` itself, `wxreach.x → pkg.mod` when the
    import came in through pkg.mod (the import statement in wxreach.x to look at)."""
    via, parent = module, tree.get(module, {}).get("parent", "")
    seen = set()
    while parent and not _is_first_party(parent, handler_module) and parent not in seen:
        seen.add(parent)
        via, parent = parent, tree.get(parent, {}).get("parent", "")
    if not parent:
        return "-"
    return parent if via == module else f"{parent} → {via}"


def format_importtime(
    importtime: dict[str, dict[str, float]],
    tree: dict[str, dict[str, Any]],
    handler_module: str,
    *,
    top: int = 15,
) -> str:
    ranked = sorted(importtime.items(), key=lambda kv: kv[1]["cumulative_ms"], reverse=True)[:top]
    head = f"{'cumulative ms':>13}{'self ms':>9}  {'module':<54}imported by (first-party → via)"
    lines = [head, "-" * (len(head) + 16)]
    for module, row in ranked:
        importer = imported_by(tree, module, handler_module)
        lines.append(f"{row['cumulative_ms']:>13.1f}{row['self_ms']:>9.1f}  {module:<54}{importer}")
    return "\n".join(lines)


def format_project_imports(tree: dict[str, dict[str, Any]], handler_module: str, *, top: int = 12) -> str:
    """Other packages' modules that project code loads directly, by cumulative cost: the import
    statements to defer or drop. A module shared by several importers is charged to the first."""
    edges = [
        (name, row)
        for name, row in tree.items()
        if not _is_first_party(name, handler_module)
        and row["parent"]
        and _is_first_party(row["parent"], handler_module)
    ]
    ranked = sorted(edges, key=lambda kv: kv[1]["cumulative_ms"], reverse=True)[:top]
    head = f"{'cumulative ms':>13}  {'import statement in':<28}module"
    lines = [head, "-" * (len(head) + 50)]
    for name, row in ranked:
        lines.append(f"{row['cumulative_ms']:>13.1f}  {row['parent']:<28}{name}")
    return "\n".join(lines)


def format_beyond_baseline(
    baseline: dict[str, dict[str, Any]],
    trees: list[tuple[Variant, dict[str, dict[str, Any]]]],
    *,
    budget_ms: float,
    top: int = 14,
) -> str:
    """Self ms, by top-level package, of the modules each variant loads that `import boto3` does
    not: what has to fit in the target's headroom over boto3."""
    base_gc = baseline.get("(gc)", {}).get("self_ms", 0.0)
    columns = []
    for variant, tree in trees:
        totals: dict[str, float] = defaultdict(float)
        for module, row in tree.items():
            if not module.startswith("(") and module not in baseline:
                totals[module.split(".")[0]] += row["self_ms"]
        # Collections are not any package's fault: show how much more of them than boto3 needs.
        totals["(garbage collection)"] = tree.get("(gc)", {}).get("self_ms", 0.0) - base_gc
        columns.append((variant, totals))
    packages = {p for _, totals in columns for p in totals}
    ranked = sorted(packages, key=lambda p: max(t.get(p, 0.0) for _, t in columns), reverse=True)[:top]
    width = max(16, *(len(v.module) + 2 for v, _ in columns))
    head1 = f"{'':<26}" + "".join(f"{v.module:>{width}}" for v, _ in columns)
    head2 = f"{'package':<26}" + "".join(f"{v.label:>{width}}" for v, _ in columns)
    lines = [head1, head2, "-" * len(head2)]
    for package in ranked:
        cells = "".join(f"{t.get(package, 0.0):>{width}.1f}" for _, t in columns)
        lines.append(f"{package:<26}{cells}")
    lines.append("-" * len(head2))
    lines.append(f"{'all beyond boto3':<26}" + "".join(f"{sum(t.values()):>{width}.1f}" for _, t in columns))
    lines.append(f"{'headroom at the target':<26}" + f"{budget_ms:>{width}.1f}" * len(columns))
    return "\n".join(lines)


def remove_site(site: Path | None) -> None:
    if site is not None and site.name.startswith("wxreach-bench-site-"):
        shutil.rmtree(site, ignore_errors=True)
