"""Broadcast splitter: a segment of N recipients (default 1 000 000) split for a mass broadcast and
for a template broadcast, with every AWS request counted, beside the floor, in one run.

What runs is the product's code as the splitter function runs it: `container.broadcast_service()`
→ `BroadcastService.split` → `Splitter` with the real adapters (`S3Segments`, `AudienceReader` +
`DynamoAudienceLookup`, `Rules`, `DynamoBroadcastStore` checkpoints, mass batch items written with
the checkpoint, `SqsSplitQueues`, `DynamoBroadcastCounters`). AWS is a moto server in a child
process (`local.stack.motoproc`), so `time.process_time()` of this process is our CPU, not moto's;
moto's own CPU is read from /proc and printed beside. Tables come from template.yaml
(tests/support/template.py); the account is registered with `container.register_account`
(Secrets Manager on moto) and its template synced from the WeChat sandbox (`local.sandbox`,
in-process, stopped before anything is measured).

The segment is one S3 JSON-lines object `{openid, params}` (28-character openids drawn at random
from WeChat's alphabet, unknown to the registry; params fill the template's three keywords). The
same object feeds both broadcasts. A broadcast is created by `BroadcastService.create` and moved to
`sending` by the store (publishing would first walk the whole audience for the estimate); the
split runs with a Lambda-like budget (`--budget`, default 870 s) and continues itself as the
function does, so "runs" says how many invocations it needed here.

Every AWS request is counted by a botocore `before-call.*.*` hook on the clients of
`wxreach.aws.clients` (and HTTP attempts by `before-send`, so retries show). The floor, measured
in the same run before and after each split: read the same object (GetObject, 1 MiB chunks),
`json.loads` each line and, for mass, cut the same batches of ≤ 10 000 openids and compress them
with `encode_openids` in parts as the batch store does; for template, the same `MessageBatch`
records of 50 recipients serialised with `model_dump_json` (models built without validation).
The floor's output is checked against what the splitter wrote (the batch items in DynamoDB, the
SendMessageBatch bodies): the same batches, byte for byte. Nothing fails on a target. moto's SQS
slows down with the queue's length, so the send queue is purged (uncounted) every 1 000 records;
nothing reads it. CPU spent in garbage collection during the split is printed too.

    .venv/bin/python -m bench.splitter                     # 1 000 000 recipients
    .venv/bin/python -m bench.splitter --recipients 20000  # quick check
    .venv/bin/python -m bench.splitter --profile           # + cProfile of each split (slower)
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import hashlib
import io
import json
import logging
import os
import pstats
import random
import string
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
from boto3.s3.transfer import TransferConfig

APPID = "wx5b1e7c3a9d2f4086"
APP_SECRET = "5b1e7c3a9d2f40865b1e7c3a9d2f4086"  # noqa: S105 - the sandbox account's fixed secret
ORIGINAL_ID = "gh_5b1e7c3a9d2f"
CALLBACK_TOKEN = "wxreachBench2026"  # noqa: S105 - sandbox only
TEMPLATE_ID = "TPL_BENCH_SPLIT"
TEMPLATE_KEYWORDS = [
    {"name": "thing1", "label": "商品"},
    {"name": "amount2", "label": "金额"},
    {"name": "character_string3", "label": "订单号"},
]
CONTENT = {
    "template_id": TEMPLATE_ID,
    "data": {"thing1": "{{product}}", "amount2": "{{amount}}", "character_string3": "{{order.no}}"},
}
MASS_CONTENT = {"msgtype": "text", "text": "春季新品上市，本周全场八折。"}
BUCKET = "bench-broadcasts"
SEGMENT_KEY = f"segments/{APPID}/bench.jsonl"  # an account reads only its own prefix
OPENID_ALPHABET = string.ascii_letters + string.digits + "-_"
SEED = 20261203
READ_CHUNK = 1 << 20
DEFAULT_RECIPIENTS = 1_000_000
# A 15-minute function stopping 30 s early (functions/broadcast_splitter STOP_BEFORE_TIMEOUT_SECONDS).
DEFAULT_BUDGET_SECONDS = 870.0
TARGET_CPU_OVER_FLOOR = 2.0
TARGET_MASS_REQUESTS_PER_1000 = 50.0
ACTOR = "arn:aws:sts::123456789012:assumed-role/wxreach-operator/bench"
COUNTED_SERVICES = ("dynamodb", "sqs", "s3", "scheduler", "secretsmanager")
PURGE_EVERY = 1000  # queue records
CHANNELS = ("mass", "template")

Out = Callable[[str], None]


# == AWS request counting ========================================================================
@dataclass
class RequestCounter:
    """API calls per service:operation (`before-call`), HTTP attempts (`before-send`), and the
    SendMessageBatch bodies (kept by reference, to check the output afterwards)."""

    enabled: bool = False
    calls: Counter[str] = field(default_factory=Counter)
    attempts: int = 0
    send_bodies: dict[str, list[str]] = field(default_factory=dict)
    accepted: Counter[str] = field(default_factory=Counter)  # queue URL → records SQS took
    # moto's SQS does O(queue length) work per message sent: a send queue left to grow to 20 000
    # records makes each SendMessageBatch take seconds. Emptied (uncounted) every PURGE_EVERY.
    purge: Callable[[str], object] | None = None
    _queue_url: str = ""
    _since_purge: int = 0
    purges: int = 0

    def reset(self) -> None:
        self.calls.clear()
        self.attempts = 0
        self.send_bodies = {}
        self.accepted.clear()
        self.purges = 0

    def before_call(self, model: Any, **_: Any) -> None:
        if self.enabled:
            self.calls[f"{model.service_model.service_name}:{model.name}"] += 1

    def before_send(self, **_: Any) -> None:
        if self.enabled:
            self.attempts += 1

    def before_parameter_build(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if self.enabled and model.name == "SendMessageBatch":
            self._queue_url = params["QueueUrl"]
            bodies = self.send_bodies.setdefault(self._queue_url, [])
            bodies.extend(entry["MessageBody"] for entry in params["Entries"])

    def after_call(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if not (self.enabled and model.name == "SendMessageBatch"):
            return
        taken = len(parsed.get("Successful", []))
        self.accepted[self._queue_url] += taken
        self._since_purge += taken
        if self.purge is not None and self._since_purge >= PURGE_EVERY:
            self.purge(self._queue_url)
            self._since_purge = 0
            self.purges += 1

    def install(self) -> None:
        """Hooks on every client the adapters use (wxreach.aws.clients builds each once)."""
        from wxreach.aws import clients

        for service in COUNTED_SERVICES:
            events = clients.client(service).meta.events
            events.register("before-call.*.*", self.before_call, unique_id="bench-splitter-call")
            events.register("before-send.*.*", self.before_send, unique_id="bench-splitter-send")
            events.register(
                "before-parameter-build.*.*", self.before_parameter_build, unique_id="bench-splitter-params"
            )
            events.register("after-call.*.*", self.after_call, unique_id="bench-splitter-after")

    def check_installed(self) -> list[str]:
        """Clients created after install() would not be counted: name them."""
        from wxreach.aws import clients

        return sorted(set(clients._clients) - set(COUNTED_SERVICES))


# == the world: moto in a child process, tables, queues, bucket, account, template ===============
@dataclass
class World:
    moto_pid: int
    moto_url: str
    tables: dict[str, str]
    queues: dict[str, str]
    recipients: int
    segment_bytes: int
    openid_digest: str


def _child_cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc (Linux), in seconds; NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def segment_line(rng: random.Random, n: int) -> tuple[str, str]:
    openid = "o" + "".join(rng.choices(OPENID_ALPHABET, k=27))
    params = {"product": f"Latte {n % 97}", "amount": f"¥{n % 90 + 10}.50", "order": {"no": f"A{n:07d}"}}
    return openid, json.dumps({"openid": openid, "params": params}, ensure_ascii=False)


def write_segment(path: Path, count: int) -> tuple[int, str]:
    """The JSON-lines file and a digest of its openids in order (for the exactly-once check)."""
    rng = random.Random(SEED)
    digest = hashlib.sha256()
    seen: set[str] = set()
    with path.open("w", encoding="utf-8") as f:
        n = 0
        while n < count:
            openid, line = segment_line(rng, n)
            if openid in seen:  # 64^27 makes this theoretical; keep the segment duplicate-free anyway
                continue
            seen.add(openid)
            digest.update(openid.encode() + b"\n")
            f.write(line + "\n")
            n += 1
    return path.stat().st_size, digest.hexdigest()


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in [*values, "AWS_PROFILE"]}
    os.environ.pop("AWS_PROFILE", None)
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _seed_sandbox_and_register(out: Out) -> None:
    """Account on the sandbox and in wxreach, template synced into the catalog, sandbox stopped."""
    from local.sandbox import SandboxServer
    from wxreach import container
    from wxreach.reach.accounts import AccountRegistration

    with SandboxServer("127.0.0.1", 0, seed=1) as sandbox:
        os.environ["WXREACH_WECHAT_API_BASE"] = sandbox.url
        container.reset()
        with httpx.Client(base_url=sandbox.url + "/admin", timeout=10, trust_env=False) as admin:
            for path, body in (
                (
                    "/accounts",
                    {
                        "appid": APPID,
                        "secret": APP_SECRET,
                        "original_id": ORIGINAL_ID,
                        "type": "service",
                        "verified": True,
                        "token": CALLBACK_TOKEN,
                    },
                ),
                (
                    f"/accounts/{APPID}/templates",
                    {"template_id": TEMPLATE_ID, "title": "订单支付成功", "keywords": TEMPLATE_KEYWORDS},
                ),
            ):
                resp = admin.post(path, json=body)
                resp.raise_for_status()
        container.register_account(
            AccountRegistration.model_validate(
                {
                    "appid": APPID,
                    "original_id": ORIGINAL_ID,
                    "name": "Bench Coffee",
                    "encryption_mode": "plaintext",
                    "secrets": {"app_secret": APP_SECRET, "token": CALLBACK_TOKEN},
                }
            )
        )
        container.template_service().sync(APPID)
        container.wechat().close()
    out(f"  account {APPID} registered (Secrets Manager + QuotaTable), template {TEMPLATE_ID} synced")


@contextlib.contextmanager
def aws_world(recipients: int, workdir: Path, out: Out) -> Iterator[World]:
    from local.stack.motoproc import MotoProcess
    from tests.support.template import create_tables, load_template, resources_of_type

    moto = MotoProcess("127.0.0.1", 0, log_path=workdir / "moto.log")
    # The send queue is emptied more often than AWS's one purge a minute (RequestCounter.purge).
    with _environment({"MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR": "false"}):
        moto.launch()
    try:
        url = moto.wait_ready()
        assert moto.pid is not None
        base_env = {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",  # moto's dummy credentials
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        with _environment(base_env):
            template = load_template()
            tables = create_tables(template)
            sqs = boto3.client("sqs")
            queues = {
                logical: sqs.create_queue(QueueName=f"bench-{logical}")["QueueUrl"]
                for logical in resources_of_type(template, "AWS::SQS::Queue")
            }
            s3 = boto3.client("s3")
            s3.create_bucket(Bucket=BUCKET)
            started = time.perf_counter()
            segment = workdir / "segment.jsonl"
            size, digest = write_segment(segment, recipients)
            s3.upload_file(
                str(segment),
                BUCKET,
                SEGMENT_KEY,
                Config=TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20),
            )
            segment.unlink()
            out(
                f"  segment s3://{BUCKET}/{SEGMENT_KEY}: {recipients} JSON lines, {size / 1e6:.1f} MB "
                f"(written and uploaded in {time.perf_counter() - started:.0f} s)"
            )
            wx_env = {
                "WXREACH_QUOTA_TABLE": tables["QuotaTable"],
                "WXREACH_LEDGER_TABLE": tables["LedgerTable"],
                "WXREACH_IDEMPOTENCY_TABLE": tables["IdempotencyTable"],
                "WXREACH_SECRETS_PREFIX": "wxreach/bench/accounts/",
                "WXREACH_SEND_QUEUE_URL": queues["SendQueue"],
                "WXREACH_MASS_QUEUE_URL": queues["MassQueue"],
                "WXREACH_SPLIT_QUEUE_URL": queues["SplitQueue"],
                "WXREACH_BROADCAST_BUCKET": BUCKET,
                # Every run splits N again: the daily mass cap (1 000 000) must not pause a rerun.
                "WXREACH_MASS_DAILY_CAP": str(10**12),
                "WXREACH_LARGE_SEND_THRESHOLD": str(10**12),
                # Set to the sandbox while it runs; never the real WeChat API.
                "WXREACH_WECHAT_API_BASE": "http://127.0.0.1:9",
            }
            with _environment(wx_env):
                _seed_sandbox_and_register(out)
                yield World(
                    moto_pid=moto.pid,
                    moto_url=url,
                    tables=tables,
                    queues=queues,
                    recipients=recipients,
                    segment_bytes=size,
                    openid_digest=digest,
                )
    finally:
        from wxreach import container

        container.reset()
        moto.stop()


# == the floor ===================================================================================
def segment_lines(s3: Any) -> Iterator[bytes]:
    body = s3.get_object(Bucket=BUCKET, Key=SEGMENT_KEY)["Body"]
    pending = b""
    for chunk in body.iter_chunks(READ_CHUNK):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        yield from lines
    if pending:
        yield pending
    body.close()


@dataclass
class FloorResult:
    cpu_s: float
    wall_s: float
    recipients: int
    batches: int
    output_bytes: int
    digest: str  # of the batches' openids (mass) or bodies (template), in order


def floor_mass(s3: Any) -> FloorResult:
    """Openids read and cut into the splitter's batches (10 000, never a 1-openid tail), each
    compressed in the batch store's parts."""
    from wxreach.aws.mass_batch_store import PART_OPENIDS, encode_openids
    from wxreach.reach.splitting import MAX_MASS_OPENIDS, MIN_MASS_OPENIDS

    digest = hashlib.sha256()
    stats = {"batches": 0, "bytes": 0, "recipients": 0}

    def emit(batch: list[str]) -> None:
        for start in range(0, len(batch), PART_OPENIDS):
            stats["bytes"] += len(encode_openids(batch[start : start + PART_OPENIDS]))
        digest.update("\n".join(batch).encode() + b"\n\x00")
        stats["batches"] += 1
        stats["recipients"] += len(batch)

    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    buffer: list[str] = []
    loads = json.loads
    for raw in segment_lines(s3):
        if raw:
            buffer.append(loads(raw)["openid"])
            if len(buffer) >= MAX_MASS_OPENIDS + MIN_MASS_OPENIDS:
                emit(buffer[:MAX_MASS_OPENIDS])
                buffer = buffer[MAX_MASS_OPENIDS:]
    while buffer:
        size = len(buffer) if len(buffer) <= MAX_MASS_OPENIDS else len(buffer) // 2
        emit(buffer[:size])
        buffer = buffer[size:]
    return FloorResult(
        time.process_time() - cpu,
        time.perf_counter() - wall,
        stats["recipients"],
        stats["batches"],
        stats["bytes"],
        digest.hexdigest(),
    )


def floor_template(s3: Any, broadcast_id: str) -> FloorResult:
    """Lines read and serialised as the splitter's send-queue records (MessageBatch JSON of 50
    recipients, cut per audience page as the splitter cuts them), models built without validation."""
    from wxreach.reach.audiences import PAGE_SIZE
    from wxreach.reach.messages import MessageBatch, Origin, OriginKind, Recipient
    from wxreach.reach.rendering import MessageContent
    from wxreach.reach.splitting import TEMPLATE_GROUP
    from wxreach.wechat.keywords import Channel

    content = MessageContent.model_validate(CONTENT)
    origin = Origin(kind=OriginKind.BROADCAST, id=broadcast_id)
    digest = hashlib.sha256()
    stats = {"batches": 0, "bytes": 0, "recipients": 0}

    def flush(page: list[Recipient]) -> None:
        for start in range(0, len(page), TEMPLATE_GROUP):
            body = MessageBatch.model_construct(
                appid=APPID,
                channel=Channel.TEMPLATE,
                origin=origin,
                content=content,
                recipients=page[start : start + TEMPLATE_GROUP],
            ).model_dump_json()
            encoded = body.encode()
            digest.update(encoded + b"\x00")
            stats["bytes"] += len(encoded)
            stats["batches"] += 1
        stats["recipients"] += len(page)

    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    page: list[Recipient] = []
    loads, construct = json.loads, Recipient.model_construct
    for raw in segment_lines(s3):
        if raw:
            data = loads(raw)
            page.append(construct(openid=data["openid"], params=data["params"]))
            if len(page) >= PAGE_SIZE:
                flush(page)
                page = []
    if page:
        flush(page)
    return FloorResult(
        time.process_time() - cpu,
        time.perf_counter() - wall,
        stats["recipients"],
        stats["batches"],
        stats["bytes"],
        digest.hexdigest(),
    )


# == the split ===================================================================================
@dataclass
class GcTime:
    """CPU spent inside garbage collections, by generation (gc.callbacks)."""

    collections: Counter[int] = field(default_factory=Counter)
    cpu_s: dict[int, float] = field(default_factory=lambda: dict.fromkeys((0, 1, 2), 0.0))
    _started: float = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.collections[info["generation"]] += 1
            self.cpu_s[info["generation"]] += time.process_time() - self._started


@dataclass
class SplitFigures:
    channel: str
    broadcast_id: str
    cpu_s: float
    wall_s: float
    moto_cpu_s: float
    runs: int
    done: bool
    stopped: str | None
    recipients: int
    batches: int
    excluded: dict[str, int]
    calls: Counter[str]
    attempts: int
    check: str = ""
    ok: bool = False
    output_bytes: int = 0
    digest: str = ""
    profile: str = ""
    gc: GcTime | None = None

    @property
    def requests(self) -> int:
        return sum(self.calls.values())


def create_sending(channel: str) -> Any:
    """A broadcast to the segment, created through the service, then `sending` (what publish
    writes; publish itself would first walk the whole audience for its estimate)."""
    from wxreach import container
    from wxreach.reach.broadcasts import BroadcastInput, BroadcastState

    spec: dict[str, Any] = {
        "name": f"bench {channel} {datetime.now(UTC).strftime('%H%M%S.%f')}",
        "channel": channel,
        "audience": {"kind": "segment", "segment": {"key": SEGMENT_KEY}},
    }
    spec["mass" if channel == "mass" else "content"] = MASS_CONTENT if channel == "mass" else CONTENT
    service = container.broadcast_service()
    broadcast = service.create(APPID, BroadcastInput.model_validate(spec), actor=ACTOR)
    now = datetime.now(UTC)
    sending = container.broadcast_store().set_state(
        broadcast.id,
        from_states={BroadcastState.DRAFT},
        to=BroadcastState.SENDING,
        update={"published_at": now, "published_by": ACTOR, "started_at": now, "updated_at": now},
    )
    assert sending is not None, "the broadcast did not move to sending"
    return sending


def run_split(
    world: World, counter: RequestCounter, broadcast: Any, *, budget_s: float, profile: bool
) -> SplitFigures:
    from wxreach import container

    service = container.broadcast_service()
    # CPU timer: time waiting on moto's answers is not ours.
    profiler = cProfile.Profile(time.process_time) if profile else None
    counter.reset()
    gc.collect()
    counter.enabled = True
    moto_cpu = _child_cpu_seconds(world.moto_pid)
    cpu, wall = time.process_time(), time.perf_counter()
    runs = 0
    result = None
    collections = GcTime()
    gc.callbacks.append(collections)
    try:
        if profiler is not None:
            profiler.enable()
        while True:
            runs += 1
            result = service.split(APPID, broadcast.id, deadline=time.monotonic() + budget_s)
            if result is None or result.stopped != "budget":
                break
            container.split_queues().start(APPID, broadcast.id)  # the function continues itself
    finally:
        if profiler is not None:
            profiler.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        counter.enabled = False
        gc.callbacks.remove(collections)
    moto_cpu = _child_cpu_seconds(world.moto_pid) - moto_cpu
    assert result is not None, "split found no sending broadcast"
    cp = result.checkpoint
    figures = SplitFigures(
        channel=str(broadcast.channel),
        broadcast_id=broadcast.id,
        cpu_s=cpu,
        wall_s=wall,
        moto_cpu_s=moto_cpu,
        runs=runs,
        done=result.done,
        stopped=result.stopped,
        recipients=cp.recipients,
        batches=cp.batches,
        excluded=dict(cp.excluded),
        calls=Counter(counter.calls),
        attempts=counter.attempts,
        gc=collections,
    )
    if profiler is not None:
        figures.profile = _profile_text(profiler)
    return figures


def check_mass(world: World, figures: SplitFigures, floor: FloorResult) -> None:
    """The stored batches, in order, against the floor's batches and the segment's openids."""
    from wxreach import container

    store = container.mass_batch_store()
    digest, openid_digest = hashlib.sha256(), hashlib.sha256()
    sizes: list[int] = []
    total = 0
    for batch in store.iter_batches(figures.broadcast_id):
        full = store.get(figures.broadcast_id, batch.number, with_openids=True)
        assert full is not None and full.openids is not None
        sizes.append(len(full.openids))
        total += len(full.openids)
        digest.update("\n".join(full.openids).encode() + b"\n\x00")
        for openid in full.openids:
            openid_digest.update(openid.encode() + b"\n")
    queued = _queue_depth(world.queues["MassQueue"])
    problems = []
    if not figures.done:
        problems.append(f"split not done (stopped: {figures.stopped})")
    if total != world.recipients or figures.recipients != world.recipients:
        problems.append(
            f"{total} openids stored, checkpoint {figures.recipients}, segment {world.recipients}"
        )
    if openid_digest.hexdigest() != world.openid_digest:
        problems.append("the stored openids are not the segment's, each once, in order")
    if digest.hexdigest() != floor.digest:
        problems.append("the stored batches differ from the floor's")
    if sizes and ((min(sizes) < 2 and len(sizes) > 1) or max(sizes) > 10_000):
        problems.append(f"batch sizes out of 2..10 000: {min(sizes)}..{max(sizes)}")
    figures.ok = not problems
    figures.check = "; ".join(problems) or (
        f"{len(sizes)} batch items, {min(sizes)}..{max(sizes)} openids, every segment openid once in "
        f"order, same batches as the floor; mass queue holds {queued} references"
    )


def check_template(world: World, counter: RequestCounter, figures: SplitFigures, floor: FloorResult) -> None:
    bodies = counter.send_bodies.get(world.queues["SendQueue"], [])
    digest, openid_digest = hashlib.sha256(), hashlib.sha256()
    recipients = 0
    size = 0
    for body in bodies:
        encoded = body.encode()
        size += len(encoded)
        digest.update(encoded + b"\x00")
        for recipient in json.loads(body)["recipients"]:
            openid_digest.update(recipient["openid"].encode() + b"\n")
            recipients += 1
    figures.output_bytes = size
    problems = []
    if not figures.done:
        problems.append(f"split not done (stopped: {figures.stopped})")
    if recipients != world.recipients or figures.recipients != world.recipients:
        problems.append(f"{recipients} recipients queued, checkpoint {figures.recipients}")
    accepted = counter.accepted[world.queues["SendQueue"]]
    if accepted != len(bodies):
        problems.append(f"SQS took {accepted} of {len(bodies)} records")
    if openid_digest.hexdigest() != world.openid_digest:
        problems.append("the queued openids are not the segment's, each once, in order")
    if digest.hexdigest() != floor.digest:
        problems.append("the queued records differ from the floor's")
    figures.ok = not problems
    figures.check = "; ".join(problems) or (
        f"{len(bodies)} send-queue records ({size / 1e6:.1f} MB), all taken by SQS, every segment openid "
        f"once in order, byte for byte the floor's records (queue emptied {counter.purges}× on the way)"
    )
    counter.send_bodies = {}


def _queue_depth(url: str) -> int:
    attrs = boto3.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"])


# Where the splitter's CPU goes: inclusive CPU of these functions (they overlap: botocore's total
# is inside the lookups and writes), from the profile.
PROFILE_AREAS = (
    ("S3 segment lines (S3Segments.lines)", "wxreach/aws/broadcast_io.py", "lines"),
    ("line → Recipient (audiences._parse_line)", "wxreach/reach/audiences.py", "_parse_line"),
    ("  of which Recipient params check (json.dumps)", "wxreach/reach/messages.py", "_bounded_text"),
    ("registry lookup (DynamoAudienceLookup.lookup)", "wxreach/aws/audience_store.py", "lookup"),
    ("repeat-guard read (repeat_blocked)", "wxreach/aws/audience_store.py", "repeat_blocked"),
    ("rules per candidate (Rules._decide_one)", "wxreach/reach/audiences.py", "_decide_one"),
    ("  of which render()", "wxreach/reach/rendering.py", "render"),
    ("group cutting (_groups, model_dump_json per recipient)", "wxreach/reach/splitting.py", "_groups"),
    ("send-queue records (broadcast_batch)", "wxreach/reach/splitting.py", "broadcast_batch"),
    ("SendMessageBatch (SqsSplitQueues.send_batches)", "wxreach/aws/broadcast_io.py", "send_batches"),
    ("mass batch + checkpoint (Splitter._emit)", "wxreach/reach/splitting.py", "_emit"),
    ("state read per page (DynamoBroadcastStore.state)", "wxreach/aws/broadcast_store.py", "state"),
    ("checkpoint writes (Splitter._commit)", "wxreach/reach/splitting.py", "_commit"),
    ("every AWS call (botocore BaseClient._make_api_call)", "botocore/client.py", "_make_api_call"),
    ("  of which request validation (botocore validate)", "botocore/validate.py", "validate"),
    (
        "  of which request serialisation (botocore serialize)",
        "botocore/serialize.py",
        "serialize_to_request",
    ),
    ("  of which response parsing (botocore parsers)", "botocore/parsers.py", "parse"),
)


def _profile_text(profiler: cProfile.Profile, top: int = 20) -> str:
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = max(ct for (_, _, name), (_, _, _, ct, _) in raw.items() if name == "split") or float("nan")
    lines = [f"CPU by area, inclusive, of {total:.2f} s in BroadcastService.split (areas overlap):"]
    for label, path, name in PROFILE_AREAS:
        found = [(nc, ct) for (f, _, n), (_, nc, _, ct, _) in raw.items() if n == name and f.endswith(path)]
        if found:
            calls, cpu = sum(c for c, _ in found), sum(t for _, t in found)
            lines.append(f"  {label:<58} {cpu:7.2f} s {100 * cpu / total:5.1f} %  {calls:>9} calls")
    stats.sort_stats(pstats.SortKey.TIME).print_stats(top)
    text = stream.getvalue()
    lines.append(f"Top {top} by own CPU:")
    lines += [
        line
        for line in text.splitlines()
        if line.strip()
        and not line.lstrip().startswith(("Ordered", "List reduced"))
        and "function calls" not in line
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def _log_to_devnull() -> Iterator[None]:
    """The splitter logs at INFO as deployed; here into /dev/null."""
    from wxreach.observability import logger

    handler = logger.registered_handler
    if not isinstance(handler, logging.StreamHandler):
        yield
        return
    with open(os.devnull, "w", encoding="utf-8") as sink:
        previous = handler.setStream(sink)
        try:
            yield
        finally:
            handler.setStream(previous)


# == report ======================================================================================
def _per_1000(n: float, recipients: int) -> float:
    return 1000 * n / recipients if recipients else float("nan")


def format_split(f: SplitFigures, floor_cpu: float, out: Out) -> None:
    ratio = f.cpu_s / floor_cpu if floor_cpu else float("nan")
    out(
        f"  {f.channel}: {f.recipients} recipients in {f.batches} batches, {f.runs} run(s), "
        f"done={f.done}{'' if f.stopped is None else f' stopped={f.stopped}'}"
        + (f", excluded {f.excluded}" if f.excluded else "")
    )
    out(
        f"    wall {f.wall_s:.1f} s, our CPU {f.cpu_s:.2f} s ({1e6 * f.cpu_s / max(1, f.recipients):.1f} µs "
        f"per recipient), moto's CPU {f.moto_cpu_s:.1f} s; CPU / floor {ratio:.2f}×"
    )
    if f.gc is not None:
        out(
            f"    of our CPU, garbage collection {sum(f.gc.cpu_s.values()):.2f} s "
            f"({f.gc.collections[2]} full collections: {f.gc.cpu_s[2]:.2f} s)"
        )
    out(
        f"    AWS requests {f.requests} = {_per_1000(f.requests, f.recipients):.2f} per 1 000 recipients "
        f"({f.attempts} HTTP attempts)"
    )
    for op, n in f.calls.most_common():
        out(f"      {op:<34} {n:>8}  {_per_1000(n, f.recipients):8.3f} / 1 000")
    out(f"    check: {'OK' if f.ok else 'FAILED'}: {f.check}")


def _verdict(value: float, target: float) -> str:
    return "met" if value <= target else "NOT MET"


def _measure_channel(
    world: World, counter: RequestCounter, floor_s3: Any, channel: str, budget_s: float, out: Out
) -> tuple[SplitFigures, FloorResult, FloorResult]:
    """Floor, split, floor again, then the output checked against the floor's."""
    broadcast = create_sending(channel)

    def floor(broadcast_id: str = broadcast.id, channel: str = channel) -> FloorResult:
        return floor_mass(floor_s3) if channel == "mass" else floor_template(floor_s3, broadcast_id)

    before = floor()
    figures = run_split(world, counter, broadcast, budget_s=budget_s, profile=False)
    after = floor()
    if channel == "mass":
        check_mass(world, figures, before)
    else:
        check_template(world, counter, figures, before)
    if after.digest != before.digest:
        figures.ok, figures.check = False, "the floor gave two different outputs"
    out(
        f"\n{channel}: floor {before.cpu_s:.2f} s CPU before the split, "
        f"{after.cpu_s:.2f} s after "
        f"({before.batches} batches, {before.output_bytes / 1e6:.1f} MB out, wall "
        f"{before.wall_s:.1f} / {after.wall_s:.1f} s)"
    )
    format_split(figures, min(before.cpu_s, after.cpu_s), out)
    return figures, before, after


def measure(
    recipients: int,
    *,
    budget_s: float = DEFAULT_BUDGET_SECONDS,
    profile: bool = False,
    channels: tuple[str, ...] = CHANNELS,
    out: Out = print,
) -> dict[str, Any]:
    """Builds the world, runs floor / split / floor for mass then template, prints, returns figures."""
    from wxreach import container

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    started = time.perf_counter()
    out(
        f"Splitter on the real adapters against moto in a child process; {recipients} recipients; "
        f"load average {load[0]:.2f} at the start."
    )
    counter = RequestCounter()
    results: dict[str, Any] = {"recipients": recipients, "loadavg_at_start": [round(x, 2) for x in load]}
    with (
        tempfile.TemporaryDirectory(prefix="wxreach-bench-splitter-") as tmp,
        _log_to_devnull(),
        aws_world(recipients, Path(tmp), out) as world,
    ):
        out(f"  moto server pid {world.moto_pid} at {world.moto_url}; tables from template.yaml")
        counter.install()
        floor_s3 = boto3.client("s3")  # not counted: the floor's own client
        purger = boto3.client("sqs")  # not counted either
        counter.purge = lambda url: purger.purge_queue(QueueUrl=url)
        rows: list[tuple[SplitFigures, FloorResult, FloorResult]] = []
        failed: list[str] = []
        for channel in channels:
            try:
                rows.append(_measure_channel(world, counter, floor_s3, channel, budget_s, out))
            except Exception:  # code mid-edit must not cost the other broadcast its figures
                traceback.print_exc()
                out(f"! the {channel} split could not be measured (see above)")
                failed.append(channel)
        unexpected = counter.check_installed()
        if unexpected:
            out(f"! clients created after the hooks were installed (not counted): {unexpected}")
        if profile:
            out("\ncProfile of a second split of each (fresh broadcast; the profiler inflates small calls):")
            for channel in channels:
                broadcast = create_sending(channel)
                profiled = run_split(world, counter, broadcast, budget_s=budget_s, profile=True)
                out(f"\n-- {channel}: {profiled.cpu_s:.1f} s CPU under the profiler")
                out(profiled.profile)
        container.reset()

    out(f"\nSummary ({recipients} recipients; floor = the lower of its two measurements):")
    out("| broadcast | batches | wall s | CPU s | floor CPU s | CPU / floor | AWS req | req / 1 000 |")
    out("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    summary: list[dict[str, Any]] = []
    for figures, before, after in rows:
        floor_cpu = min(before.cpu_s, after.cpu_s)
        ratio = figures.cpu_s / floor_cpu if floor_cpu else float("nan")
        per_1000 = _per_1000(figures.requests, figures.recipients)
        out(
            f"| {figures.channel} | {figures.batches} | {figures.wall_s:.1f} | {figures.cpu_s:.2f} | "
            f"{floor_cpu:.2f} | {ratio:.2f}× | {figures.requests} | {per_1000:.2f} |"
        )
        summary.append(
            {
                "channel": figures.channel,
                "recipients": figures.recipients,
                "batches": figures.batches,
                "runs": figures.runs,
                "wall_s": figures.wall_s,
                "cpu_s": figures.cpu_s,
                "moto_cpu_s": figures.moto_cpu_s,
                "floor_cpu_s": [before.cpu_s, after.cpu_s],
                "cpu_over_floor": ratio,
                "requests": figures.requests,
                "requests_per_1000": per_1000,
                "calls": dict(figures.calls),
                "http_attempts": figures.attempts,
                "gc_cpu_s": dict(figures.gc.cpu_s) if figures.gc else None,
                "gc_collections": dict(figures.gc.collections) if figures.gc else None,
                "ok": figures.ok,
                "check": figures.check,
            }
        )
    for item in summary:
        out(
            f"  {item['channel']}: CPU / floor {item['cpu_over_floor']:.2f}× "
            f"(target ≤ {TARGET_CPU_OVER_FLOOR:g}×) "
            f"{_verdict(item['cpu_over_floor'], TARGET_CPU_OVER_FLOOR)}"
            + (
                f"; {item['requests_per_1000']:.2f} requests / 1 000 "
                f"(target ≤ {TARGET_MASS_REQUESTS_PER_1000:g}) "
                f"{_verdict(item['requests_per_1000'], TARGET_MASS_REQUESTS_PER_1000)}"
                if item["channel"] == "mass"
                else f"; {item['requests_per_1000']:.2f} requests / 1 000 (reported, no target)"
            )
        )
    elapsed = time.perf_counter() - started
    out(f"Splitter bench time {elapsed:.0f} s.")
    ok = not failed and all(s["ok"] for s in summary)
    results.update({"splits": summary, "elapsed_s": elapsed, "failed": failed, "all_ok": ok})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--recipients", type=int, default=DEFAULT_RECIPIENTS, help="segment size (default 1 000 000)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET_SECONDS,
        help="seconds per splitter run before it continues itself (default 870: 15 min - 30 s)",
    )
    parser.add_argument("--profile", action="store_true", help="also cProfile a second split of each")
    parser.add_argument(
        "--channels",
        default=",".join(CHANNELS),
        help="broadcasts to split, comma-separated (default mass,template)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.recipients < 1:
        parser.error("--recipients must be at least 1")
    channels = tuple(c.strip() for c in args.channels.split(",") if c.strip())
    if not channels or set(channels) - set(CHANNELS):
        parser.error(f"--channels takes {', '.join(CHANNELS)}")
    figures = measure(args.recipients, budget_s=args.budget, profile=args.profile, channels=channels)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n", encoding="utf-8")
    # Non-zero only when the output is wrong (or nothing could be measured), never for a target.
    return 0 if figures["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
