"""Streams through the vault worker's DP path, for neighbouring-stream tests.

:func:`run` drives a set of organizations' streams through what a vault worker does with
them — one :class:`~procvault.monitor.partition.PartitionEngine` per partition (merge, guard,
completion, revocations, the DP accumulator on the public clock), the closed panes as
:func:`~procvault.monitor.privacy.combiner.split_partials` records, a
:class:`~procvault.monitor.privacy.combiner.PaneCombiner` completing the panes as the release
stage does — and returns the exact, pre-noise panes the release stage would noise.

The deployment is a live one: the wall clock (``now``) moves by a fixed public step per batch,
starting at the policy's public start. Each organization's agent sends its events in merge-key
order when they happen (an event ``ahead`` minutes future-dated is sent that much before its
time), one chain of frames per partition, and a heartbeat to every partition each batch
promising ``now`` (everything due by then is sent); at batch ``close`` it closes its streams
and sends nothing more.
Everything about the schedule (steps, start, close, partitions, placement by case id) is public:
two neighbouring streams differ in the frames of one case only.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from seqnet import sequence_net

from procvault.monitor.compliance import Compliance, DeclareRule
from procvault.monitor.event import Event, EventKind
from procvault.monitor.partition import (
    EventFrame,
    Heartbeat,
    Origin,
    PartitionEngine,
    PartitionSettings,
    RevocationFrame,
)
from procvault.monitor.privacy.budget import Budget
from procvault.monitor.privacy.combiner import PaneCombiner, split_partials
from procvault.monitor.privacy.panes import PaneAccumulator, PaneAggregate
from procvault.monitor.privacy.plan import ReleasePlan
from procvault.monitor.privacy.settings import (
    KnownKeys,
    PaneSettings,
    PrivacySettings,
    RunningTotals,
    StatisticSettings,
)
from procvault.monitor.revocation import Revoked
from procvault.monitor.vault import Vault, VaultSettings

#: The public start of the schedule (and of the wall clock).
START = datetime(2030, 1, 1, tzinfo=UTC)
MINUTE_US = 60_000_000
NET = sequence_net("ABC")
RULES = [DeclareRule("has_b", "existence", "B"), DeclareRule("c_after_a", "response", "A", "C")]
KNOWN = KnownKeys.build(NET.labels, rules=[r.name for r in RULES])
ORGS = ("a", "b")
#: k = 2 panes per case, windows of w = 3 panes of 10 minutes
DP = PrivacySettings(
    Budget(1.0, window=3, delta=1e-6),
    PaneSettings(timedelta(minutes=10), timedelta(minutes=2), start=START),
    statistics=(
        StatisticSettings("activity", max_keys=2),
        StatisticSettings("directly_follows", max_keys=2),
        StatisticSettings("cases"),
        StatisticSettings("deviation", max_keys=1),
        StatisticSettings("violation", max_keys=1),
        StatisticSettings("tokens", clamp=3),
        StatisticSettings("case_duration", clamp=5, unit=timedelta(minutes=10)),
        StatisticSettings("df_duration", clamp=2, max_keys=2, unit=timedelta(minutes=5)),
    ),
    max_panes_per_case=2,
    running_totals=RunningTotals(("cases", "activity"), levels=8, share=0.2),
    windows=(timedelta(minutes=10), timedelta(minutes=30)),
)
PLAN = ReleasePlan.build(DP, KNOWN)


@dataclass(frozen=True)
class Ev:
    """One record of a case: an activity, a placeholder (``activity=None``) or a marker."""

    case: str
    org: str
    minute: int  # event time, minutes after START
    activity: str | None = "A"
    kind: EventKind = EventKind.ACTIVITY
    ahead: int = 0  # sent this many minutes before its time (future-dated)


@dataclass(frozen=True)
class Revoke:
    """A revocation of a whole case by ``org``, sent at ``minute``."""

    case: str
    org: str
    minute: int


@dataclass(frozen=True)
class Deployment:
    """The public part: partitions, the batch step, when the agents close, the policy."""

    partitions: int = 2
    step: int = 3  # minutes of wall clock per batch
    batches: int = 40
    close: int | None = 30  # the batch whose heartbeats close the streams (None: never)
    idle_timeout: int | None = 15  # minutes
    max_skew: int | None = 5  # minutes
    settings: PrivacySettings = DP
    #: a partition a case is copied to as well (a copy across partitions: the placement a
    #: misbehaving agent might use); by default every case lives on its keyed partition
    copies: tuple[tuple[str, int], ...] = ()


def place(case: str, partitions: int) -> int:
    """The partition of a case (a public function of its id)."""
    return zlib.crc32(case.encode()) % partitions


def _event(e: Ev) -> Event:
    ts = START + timedelta(minutes=e.minute)
    if e.kind == EventKind.CASE_END:
        return Event(e.case, "", ts, e.org, None, (), e.kind)
    if e.kind == EventKind.PLACEHOLDER or e.activity is None:
        return Event(e.case, "pv:withheld", ts, e.org, None, (), EventKind.PLACEHOLDER)
    return Event(e.case, e.activity, ts, e.org, None, (), EventKind.ACTIVITY)


class _Lane:
    """One organization's chain of frames to one partition."""

    def __init__(self, org: str) -> None:
        self.org = org
        self.seq = 0
        self.offset = 0
        self.prev = (0, 0)
        self.promise = -1

    def origin(self) -> Origin:
        o = Origin(self.org, f"agent-{self.org}", 1, self.seq, self.offset, prev=self.prev)
        self.prev = (1, self.seq)
        self.seq += 1
        self.offset += 1
        return o


def run(
    events: Sequence[Ev],
    revocations: Iterable[Revoke] = (),
    deployment: Deployment = Deployment(),
    *,
    check_placement: bool = True,
) -> dict[int, PaneAggregate]:
    """The exact panes the release stage completes, by index (``check_placement``: the
    partitions refuse a case placed elsewhere, as the vault does)."""
    d = deployment
    settings = d.settings
    plan = (PLAN if settings is DP else ReleasePlan.build(settings, KNOWN)).fingerprint()
    vs = VaultSettings(
        idle_timeout=None if d.idle_timeout is None else timedelta(minutes=d.idle_timeout)
    )
    skew = None if d.max_skew is None else d.max_skew * MINUTE_US
    engines = [
        PartitionEngine(
            PartitionSettings(
                partition=p,
                orgs=ORGS,
                partitions=d.partitions,
                source_timeout_us=None,
                max_skew_us=skew,
            ),
            Vault(NET, vs, compliance=Compliance(RULES)),
            PaneAccumulator(settings, KNOWN),
            place=(lambda case, n=d.partitions: place(case, n)) if check_placement else None,
        )
        for p in range(d.partitions)
    ]
    lanes = {(org, p): _Lane(org) for org in ORGS for p in range(d.partitions)}
    copies: dict[str, list[int]] = {}
    for case, p in d.copies:
        copies.setdefault(case, []).append(p % d.partitions)
    # each organization's records in merge-key order (order: the position in the source)
    order = {id(e): i for i, e in enumerate(events)}
    per_org = {
        org: sorted((e for e in events if e.org == org), key=lambda e: (e.minute, order[id(e)]))
        for org in ORGS
    }
    revs = sorted(revocations, key=lambda r: r.minute)
    combiner = PaneCombiner(engines[0].accumulator.clock, plan)  # type: ignore[union-attr]
    out: dict[int, PaneAggregate] = {}
    start_us = int(START.timestamp()) * 1_000_000
    sent_upto = -(1 << 40)
    rev_id = 0
    for b in range(d.batches):
        now_min = b * d.step
        now_us = start_us + now_min * MINUTE_US
        frames: dict[int, list[object]] = {p: [] for p in range(d.partitions)}
        for org in ORGS:
            stream = per_org[org]
            if lanes[(org, 0)].promise == -2:
                continue  # its agent closed its streams: it sends nothing more
            for e in stream:
                due = e.minute - e.ahead
                if not sent_upto < due <= now_min:
                    continue
                targets = [place(e.case, d.partitions), *copies.get(e.case, ())]
                for p in dict.fromkeys(targets):
                    o = lanes[(org, p)].origin()
                    frames[p].append(EventFrame(o, order[id(e)] * 256, 0, _event(e)))
            for r in revs:
                if r.org == org and sent_upto < r.minute <= now_min:
                    rev_id += 1
                    for p in range(d.partitions):
                        lane = lanes[(org, p)]
                        o = Origin(org, f"agent-{org}", 1, 1_000_000 + rev_id, lane.offset)
                        lane.offset += 1
                        revoked = Revoked(f"r{rev_id}", "case", org, r.case)
                        frames[p].append(RevocationFrame(o, revoked))
            closing = d.close is not None and b >= d.close
            # everything due by now has been sent: promise now (or just below the next
            # event, if one dated earlier is still to come)
            upcoming = [e.minute for e in stream if e.minute - e.ahead > now_min]
            promise = start_us + now_min * MINUTE_US
            if upcoming and min(upcoming) <= now_min:
                promise = start_us + min(upcoming) * MINUTE_US - 1
            for p in range(d.partitions):
                lane = lanes[(org, p)]
                if lane.promise == -2:
                    continue
                if promise > lane.promise:
                    frames[p].append(Heartbeat(lane.origin(), promise, 1 << 62, closed=False))
                    lane.promise = promise
                if closing:
                    frames[p].append(Heartbeat(lane.origin(), 0, 0, closed=True))
                    lane.promise = -2
        sent_upto = now_min
        for p, eng in enumerate(engines):
            eng.begin(now_us)
            for f in frames[p]:
                eng.admit(f)  # type: ignore[arg-type]
            eff = eng.step()
            if eff.panes:
                acc = eng.accumulator
                assert acc is not None
                for partial in split_partials(p, d.partitions, plan, eff.panes, acc.first_pane):
                    combiner.add(partial)
        for agg in combiner.drain():
            assert agg.index not in out
            out[agg.index] = agg
    return out


def without(events: Sequence[Ev], case: str) -> list[Ev]:
    """The neighbour: the same streams without any record of ``case``."""
    return [e for e in events if e.case != case]


def shifted(e: Ev, **changes: object) -> Ev:
    """``e`` with some fields changed."""
    return replace(e, **changes)  # type: ignore[arg-type]


def sensitivity_violations(
    a: dict[int, PaneAggregate],
    b: dict[int, PaneAggregate],
    settings: PrivacySettings = DP,
) -> list[str]:
    """Every way the pre-noise panes of two neighbouring streams differ by more than one case
    may move them: per pane and statistic at most ``m`` keys, each by at most ``c`` (L1 at most
    ``m * c``); at most ``k`` panes in all (so at most ``min(k, w)`` in any ``w`` consecutive
    panes); running totals at most ``min(m, |known keys|)`` first contributions per statistic
    over the whole stream; and the same panes released (the schedule is public)."""
    problems: list[str] = []
    if sorted(a) != sorted(b):
        only_a = sorted(set(a) - set(b))
        only_b = sorted(set(b) - set(a))
        problems.append(f"other panes released: only with the case {only_a}, only without {only_b}")
    stats = {s.name: s for s in settings.statistics}
    moved: set[int] = set()
    life: dict[str, int] = {}
    for idx in sorted(set(a) | set(b)):
        pa, pb = a.get(idx), b.get(idx)
        for name, s in stats.items():
            va = pa.statistic(name) if pa else {}
            vb = pb.statistic(name) if pb else {}
            diff = {k: abs(va.get(k, 0) - vb.get(k, 0)) for k in {*va, *vb}}
            diff = {k: v for k, v in diff.items() if v}
            if not diff:
                continue
            moved.add(idx)
            if len(diff) > s.m or max(diff.values()) > s.c or sum(diff.values()) > s.m * s.c:
                problems.append(f"pane {idx}, {name}: moved by {sorted(diff.items())}")
        for name in stats:
            fa = pa.first_contributions(name) if pa else {}
            fb = pb.first_contributions(name) if pb else {}
            d1 = sum(abs(fa.get(k, 0) - fb.get(k, 0)) for k in {*fa, *fb})
            if d1:  # (running totals: capped over the case's life, not by k)
                life[name] = life.get(name, 0) + d1
    if len(moved) > settings.max_panes_per_case:
        problems.append(f"the case moved {len(moved)} panes: {sorted(moved)}")
    totals = settings.running_totals
    if totals is not None:
        for name in totals.statistics:
            cap = min(stats[name].m, len(KNOWN.keys(name)))
            got = life.get(name, 0)
            if got > cap:
                problems.append(f"running totals of {name} moved by {got} > {cap}")
    return problems
