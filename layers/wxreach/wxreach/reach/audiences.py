"""Audiences as pages of candidates, and the rules that exclude a candidate (with a reason).

One reader and one set of rules serve the estimate, the dry run and the splitter, so the three
always agree. A page is read from a cursor and yields the cursor after it; resuming from a
cursor re-reads nothing already counted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from wxreach.reach.accounts import Account, AccountType
from wxreach.reach.broadcasts import AudienceKind, Broadcast, BroadcastChannel, SegmentFormat
from wxreach.reach.messages import Recipient
from wxreach.reach.rendering import content_digest, render
from wxreach.wechat.keywords import Channel

if TYPE_CHECKING:
    from wxreach.reach.ports import FollowerListing
    from wxreach.reach.templates import Template

PAGE_SIZE = 2000
MASS_MONTHLY_LIMIT = 4


class Exclusion:
    """Why a candidate gets nothing (estimate, dry run and splitter use the same words)."""

    NOT_FOLLOWING = "not_following"
    MONTHLY_MASS_QUOTA = "monthly_mass_quota"
    DAILY_MASS_USED = "daily_mass_used"  # subscription accounts: one sendall per day
    NO_CREDIT = "no_subscription_credit"
    REPEAT_GUARD = "repeat_guard"
    INVALID_PARAMETERS = "invalid_parameters"
    INVALID_RECIPIENT = "invalid_recipient"  # a segment line that is not an openid + params
    NOT_IN_TAG = "not_in_tag"  # internal: filtered, not counted
    DUPLICATE = "duplicate"  # the same openid twice in a segment


@dataclass(frozen=True)
class Candidate:
    openid: str
    params: Mapping[str, Any] = field(default_factory=dict)
    following: bool | None = None
    tags: frozenset[int] = frozenset()
    credits: int = 0
    long_term: bool = False
    known: bool = True  # False: a segment line whose openid the registry has never seen
    invalid: bool = False  # a segment line that is not an openid with params
    resume: dict[str, Any] | None = None  # the audience cursor right after this candidate


@dataclass(frozen=True)
class Decision:
    openid: str
    params: Mapping[str, Any]
    reason: str | None  # None: would be sent
    values: dict[str, str] = field(default_factory=dict)
    detail: str | None = None


@dataclass
class Page:
    candidates: list[Candidate]
    cursor: dict[str, Any] | None  # None: the audience is exhausted


class SegmentLines(Protocol):
    """Lines of a segment object, from a 0-based line number (S3 adapter)."""

    def lines(self, key: str, *, start: int) -> Iterator[str]: ...


class AudienceLookup(Protocol):
    """Follower state for explicit openids (segments): BatchGetItem, not one call per openid."""

    def lookup(self, appid: str, openids: list[str], *, template_id: str | None) -> dict[str, Candidate]: ...

    def repeat_blocked(
        self, appid: str, keys: list[tuple[str, str, str]], *, now: datetime, window_seconds: int
    ) -> set[str]: ...


class AudienceReader:
    def __init__(self, listing: FollowerListing, lookup: AudienceLookup, segments: SegmentLines) -> None:
        self._listing = listing
        self._lookup = lookup
        self._segments = segments

    def pages(self, broadcast: Broadcast, cursor: dict[str, Any] | None = None) -> Iterator[Page]:
        audience = broadcast.audience
        if audience.recipients is not None:
            yield from self._inline(broadcast, cursor)
        elif audience.segment is not None:
            yield from self._object(broadcast, cursor)
        elif audience.kind is AudienceKind.CREDIT_HOLDERS:
            yield from self._credit_holders(broadcast, cursor)
        else:
            yield from self._registry(broadcast, cursor)

    def openids_before(self, broadcast: Broadcast, cursor: dict[str, Any]) -> set[str]:
        """The openids a segment lists before `cursor` (no lookups: for duplicate detection)."""
        end = int(cursor.get("line", 0))
        audience = broadcast.audience
        if audience.recipients is not None:
            return {r.openid for r in audience.recipients[:end]}
        if audience.segment is None:
            return set()
        seen: set[str] = set()
        header: list[str] | None = None
        for number, raw in enumerate(self._segments.lines(audience.segment.key, start=0), start=1):
            if number > end:
                break
            text = raw.strip()
            if not text:
                continue
            if audience.segment.format is SegmentFormat.CSV and header is None:
                header = [name.strip() for name in _csv_row(text)]
                continue
            recipient = _parse_line(text, audience.segment.format, header)
            if recipient is not None:
                seen.add(recipient.openid)
        return seen

    # -- sources -------------------------------------------------------------------------------
    def _registry(self, broadcast: Broadcast, cursor: dict[str, Any] | None) -> Iterator[Page]:
        shard, after = (cursor or {}).get("shard", 0), (cursor or {}).get("after")
        tag = broadcast.audience.tag_id
        while shard < self._listing.shard_count:
            rows, next_after = self._listing.list_shard(
                broadcast.appid, shard, start_after=after, limit=PAGE_SIZE
            )
            candidates = [
                Candidate(
                    openid=r.openid,
                    following=r.following,
                    tags=r.tags,
                    resume={"shard": shard, "after": r.openid},
                )
                for r in rows
                if tag is None or tag in r.tags
            ]
            if broadcast.channel is BroadcastChannel.SUBSCRIBE and candidates and broadcast.template_id:
                candidates = self._with_credits(broadcast, candidates)
            if next_after is None:
                shard, after = shard + 1, None
            else:
                after = next_after
            more = shard < self._listing.shard_count
            yield Page(candidates, {"shard": shard, "after": after} if more else None)

    def _credit_holders(self, broadcast: Broadcast, cursor: dict[str, Any] | None) -> Iterator[Page]:
        assert broadcast.template_id is not None
        shard, after = (cursor or {}).get("shard", 0), (cursor or {}).get("after")
        while shard < self._listing.shard_count:
            rows, next_after = self._listing.list_credit_holders(
                broadcast.appid, broadcast.template_id, shard, start_after=after, limit=PAGE_SIZE
            )
            # Credit rows hold no follow state: a notification may go to non-followers anyway.
            candidates = [
                Candidate(
                    openid=r.openid,
                    credits=r.one_time_credits,
                    long_term=r.long_term,
                    resume={"shard": shard, "after": r.openid},
                )
                for r in rows
                if r.one_time_credits > 0 or r.long_term
            ]
            if next_after is None:
                shard, after = shard + 1, None
            else:
                after = next_after
            more = shard < self._listing.shard_count
            yield Page(candidates, {"shard": shard, "after": after} if more else None)

    def _inline(self, broadcast: Broadcast, cursor: dict[str, Any] | None) -> Iterator[Page]:
        recipients = broadcast.audience.recipients or []
        start = (cursor or {}).get("line", 0)
        for offset in range(start, len(recipients), PAGE_SIZE):
            chunk = recipients[offset : offset + PAGE_SIZE]
            end = offset + len(chunk)
            lines: list[tuple[Recipient | None, dict[str, Any]]] = [
                (r, {"line": offset + i + 1}) for i, r in enumerate(chunk)
            ]
            yield Page(self._resolve(broadcast, lines), {"line": end} if end < len(recipients) else None)

    def _object(self, broadcast: Broadcast, cursor: dict[str, Any] | None) -> Iterator[Page]:
        segment = broadcast.audience.segment
        assert segment is not None
        line_no = (cursor or {}).get("line", 0)
        header: list[str] | None = (cursor or {}).get("header")
        chunk: list[tuple[Recipient | None, dict[str, Any]]] = []
        for raw in self._segments.lines(segment.key, start=line_no):
            line_no += 1
            text = raw.strip()
            if not text:
                continue
            if segment.format is SegmentFormat.CSV and header is None:
                header = [name.strip() for name in _csv_row(text)]
                continue
            chunk.append((_parse_line(text, segment.format, header), {"line": line_no, "header": header}))
            if len(chunk) >= PAGE_SIZE:
                yield Page(self._resolve(broadcast, chunk), {"line": line_no, "header": header})
                chunk = []
        yield Page(self._resolve(broadcast, chunk), None)

    def _resolve(
        self, broadcast: Broadcast, lines: list[tuple[Recipient | None, dict[str, Any]]]
    ) -> list[Candidate]:
        if not lines:
            return []
        template_id = broadcast.template_id if broadcast.channel is BroadcastChannel.SUBSCRIBE else None
        openids = list(dict.fromkeys(r.openid for r, _ in lines if r is not None))
        known = self._lookup.lookup(broadcast.appid, openids, template_id=template_id)
        out = []
        for r, resume in lines:
            if r is None:
                out.append(Candidate(openid="", invalid=True, resume=resume))
                continue
            found = known.get(r.openid)
            out.append(
                Candidate(
                    openid=r.openid,
                    params=r.params,
                    following=found.following if found else None,
                    tags=found.tags if found else frozenset(),
                    credits=found.credits if found else 0,
                    long_term=found.long_term if found else False,
                    known=found is not None,
                    resume=resume,
                )
            )
        return out

    def _with_credits(self, broadcast: Broadcast, candidates: list[Candidate]) -> list[Candidate]:
        known = self._lookup.lookup(
            broadcast.appid, [c.openid for c in candidates], template_id=broadcast.template_id
        )
        return [
            Candidate(
                openid=c.openid,
                following=c.following,
                tags=c.tags,
                credits=known[c.openid].credits if c.openid in known else 0,
                long_term=known[c.openid].long_term if c.openid in known else False,
                resume=c.resume,
            )
            for c in candidates
        ]


def _csv_row(text: str) -> list[str]:
    import csv

    return next(csv.reader([text]))


def _parse_line(text: str, fmt: SegmentFormat, header: list[str] | None) -> Recipient | None:
    """One segment line → a recipient, or None when it is not usable."""
    try:
        if fmt is SegmentFormat.JSONL:
            data = json.loads(text)
            if not isinstance(data, dict):
                return None
            return Recipient(openid=data.get("openid"), params=data.get("params") or {})  # type: ignore[arg-type]
        row = _csv_row(text)
        columns = dict(zip(header or [], row, strict=False))
        openid = columns.pop("openid", None)
        params = _nest({k: v for k, v in columns.items() if k})
        return Recipient(openid=openid, params=params)  # type: ignore[arg-type]
    except (ValueError, ValidationError, TypeError, StopIteration):
        return None


def _nest(flat: dict[str, str]) -> dict[str, Any]:
    """CSV columns `order.no` become {"order": {"no": ...}} for {{order.no}}."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[leaf] = value
    return nested


@dataclass
class MassHistory:
    """This month's mass sends of an account, so the 4-per-month rule is known per follower
    without a counter write per recipient: sendall to all counts for everyone, a tag send for
    the tag's members, an openid batch for its openids."""

    to_all: int = 0
    by_tag: Counter[int] = field(default_factory=Counter)
    by_openid: Counter[str] = field(default_factory=Counter)
    sendall_today: bool = False

    def count(self, candidate: Candidate) -> int:
        return (
            self.to_all
            + sum(self.by_tag[t] for t in candidate.tags if t in self.by_tag)
            + self.by_openid.get(candidate.openid, 0)
        )


class Rules:
    """Every exclusion of one broadcast, decided per page."""

    def __init__(
        self,
        broadcast: Broadcast,
        account: Account,
        *,
        template: Template | None,
        lookup: AudienceLookup,
        history: MassHistory,
        now: datetime,
        repeat_window_seconds: int,
    ) -> None:
        self._b = broadcast
        self._account = account
        self._template = template
        self._lookup = lookup
        self._history = history
        self._now = now
        self._repeat_window = repeat_window_seconds
        self._seen: set[str] = set()

    def mark_seen(self, openids: set[str]) -> None:
        self._seen |= openids

    @property
    def channel(self) -> Channel | None:
        return {
            BroadcastChannel.TEMPLATE: Channel.TEMPLATE,
            BroadcastChannel.SUBSCRIBE: Channel.SUBSCRIBE,
        }.get(self._b.channel)

    def decide(self, candidates: list[Candidate]) -> list[Decision]:
        out: list[Decision] = []
        pending_repeat: list[tuple[int, str]] = []
        for candidate in candidates:
            reason, values, detail = self._decide_one(candidate)
            out.append(Decision(candidate.openid, candidate.params, reason, values, detail))
            if (
                reason is None
                and self._b.channel is BroadcastChannel.TEMPLATE
                and self._b.content is not None
            ):
                pending_repeat.append((len(out) - 1, content_digest(self._b.content.template_id, values)))
        if pending_repeat and self._repeat_window > 0:
            assert self._b.content is not None
            keys = [(out[i].openid, self._b.content.template_id, digest) for i, digest in pending_repeat]
            blocked = self._lookup.repeat_blocked(
                self._b.appid, keys, now=self._now, window_seconds=self._repeat_window
            )
            for i, _ in pending_repeat:
                if out[i].openid in blocked:
                    d = out[i]
                    out[i] = Decision(d.openid, d.params, Exclusion.REPEAT_GUARD, d.values)
        return out

    def _decide_one(self, c: Candidate) -> tuple[str | None, dict[str, str], str | None]:
        if c.invalid:
            return Exclusion.INVALID_RECIPIENT, {}, None
        if c.openid in self._seen:
            return Exclusion.DUPLICATE, {}, None
        self._seen.add(c.openid)
        channel = self._b.channel
        if channel is BroadcastChannel.MASS:
            if c.following is False:
                return Exclusion.NOT_FOLLOWING, {}, None
            if self._account.account_type is AccountType.SUBSCRIPTION and self._history.sendall_today:
                return Exclusion.DAILY_MASS_USED, {}, None
            if (
                self._account.account_type is AccountType.SERVICE
                and self._history.count(c) >= MASS_MONTHLY_LIMIT
            ):
                return Exclusion.MONTHLY_MASS_QUOTA, {}, None
            return None, {}, None
        if channel is BroadcastChannel.TEMPLATE and c.following is False:
            return Exclusion.NOT_FOLLOWING, {}, None
        if channel is BroadcastChannel.SUBSCRIBE and not (c.credits > 0 or c.long_term):
            return Exclusion.NO_CREDIT, {}, None
        assert self._b.content is not None and self.channel is not None
        if self._template is None:
            return Exclusion.INVALID_PARAMETERS, {}, "template is not on this account"
        rendering = render(self._b.content, self._template, self.channel, c.params)
        if not rendering.ok:
            problems = [*("missing " + p for p in rendering.missing_params), *rendering.violations]
            return Exclusion.INVALID_PARAMETERS, rendering.data, "; ".join(problems)[:300]
        return None, rendering.data, None
