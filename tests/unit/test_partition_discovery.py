"""The partition engine's discovery tracker: the events the vault applies, completed with the
vault's completions, stored in the partition's records and restored at any batch boundary.

The oracle is a tracker fed the log directly (itself checked against pm4py in
``test_discovery_oracle.py``): the engine, fed the log split across three organizations and
restarted from its snapshot every few hundred frames, ends with the same counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from procvault.generators.xes import read_xes
from procvault.monitor.compliance import Compliance, DeclareRule
from procvault.monitor.discovery import DiscoveryTracker
from procvault.monitor.event import Event, EventKind
from procvault.monitor.partition import PartitionEngine, PartitionSettings
from procvault.monitor.partition.frames import EventFrame, Heartbeat, Origin
from procvault.monitor.partition.state import decode_case, decode_meta, encode_record
from procvault.monitor.vault import Vault

ORGS = ("a", "b", "c")


def _vault() -> Vault:
    return Vault(compliance=Compliance([DeclareRule("any", "existence", "x")]))


def _frames(events: Iterable[Event]) -> list[EventFrame | Heartbeat]:
    """Each event as a frame of the organization ``hash(case) % 3`` (chained per org), then
    every organization's closing heartbeat."""
    seq = dict.fromkeys(ORGS, 0)
    out: list[EventFrame | Heartbeat] = []

    def origin(org: str) -> Origin:
        s = seq[org]
        seq[org] = s + 1
        return Origin(org, "agent", 1, s, s, prev=(1, s - 1) if s else (0, 0))

    for order, ev in enumerate(events):
        org = ORGS[sum(map(ord, ev.case_id)) % 3]
        e = Event.create(ev.case_id, ev.activity, ev.timestamp, org=org, kind=ev.kind)
        out.append(EventFrame(origin(org), order, 0, e))
    for org in ORGS:
        out.append(Heartbeat(origin(org), 1 << 62, 0, closed=True))
    return out


def _run(frames: list[EventFrame | Heartbeat], restart_every: int | None) -> DiscoveryTracker:
    settings = PartitionSettings(partition=0, orgs=ORGS, source_timeout_us=None)
    engine = PartitionEngine(settings, _vault(), discovery=DiscoveryTracker())
    sent: dict[str, list[EventFrame | Heartbeat]] = {o: [] for o in ORGS}
    for i, frame in enumerate(frames):
        engine.begin(now_us=1 << 61)
        assert engine.admit(frame) is None
        sent[frame.origin.org].append(frame)
        engine.read_until(frame.origin.org, frame.origin.offset + 1)
        engine.step()
        if restart_every and i % restart_every == restart_every - 1:
            meta, cases = engine.snapshot()
            # through the bytes the worker seals
            meta = decode_meta(encode_record(meta))
            cases = [decode_case(encode_record(r)) for r in cases]
            engine = PartitionEngine.restore(
                settings,
                _vault(),
                meta,
                cases,
                discovery=lambda s: (
                    DiscoveryTracker.restore(s) if s is not None else DiscoveryTracker()
                ),
            )
            # the shell reads every organization again from where the state resumes it
            engine.begin(now_us=1 << 61)
            resume = engine.resume_offsets()
            for org, done in sent.items():
                for f in done[resume.get(org, len(done)) :]:
                    engine.admit(f)
                    engine.read_until(org, f.origin.offset + 1)
            engine.step()
    assert engine.finished
    assert engine.discovery is not None
    return engine.discovery


@pytest.mark.parametrize("restart_every", [None, 97])
def test_the_engines_tracker_equals_one_fed_the_log(shared_data: Path, restart_every: int) -> None:
    log = read_xes(shared_data / "logs" / "running-example.xes.gz")
    events = list(log.replay(end_markers=True))
    direct = DiscoveryTracker()
    for e in events:
        direct.update(e)
    got = _run(_frames(events), restart_every)
    assert got.active_cases == 0
    assert got.counts() == direct.counts()


def test_the_sepsis_log_through_the_engine_with_restarts_equals_the_direct_tracker(
    shared_data: Path,
) -> None:
    log = read_xes(shared_data / "logs" / "sepsis_cases.xes.gz")
    events = list(log.replay(end_markers=True))
    direct = DiscoveryTracker()
    for e in events:
        direct.update(e)
    got = _run(_frames(events), 1_501)
    assert got.counts() == direct.counts()
    assert got.counts().events  # not trivially empty


def test_an_event_after_completion_is_not_counted() -> None:
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    evs = [
        Event.create("c1", "A", t0),
        Event.create("c1", "B", t0 + timedelta(minutes=1)),
        Event.create("c1", "", t0 + timedelta(minutes=2), kind=EventKind.CASE_END),
        Event.create("c1", "C", t0 + timedelta(minutes=3)),  # after completion
    ]
    got = _run(_frames(evs), None)
    direct = DiscoveryTracker()
    for e in evs[:3]:
        direct.update(e)
    assert got.counts() == direct.counts()
