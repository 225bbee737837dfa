"""What an agent promises the vault when its policy coarsens times.

The vault merges organizations by ``(time, order)``; each record and heartbeat of an
organization promises that nothing of it sorts earlier. A policy that truncates times (or
rounds placeholders to the hour) must not break that promise, nor leak finer times through
heartbeats than its outputs carry.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

from test_agent_review_path import Reader, RecordingProducer, frames, partitioned_frames

from procvault.generators.pacing import AsFastAsPossible, FixedRate
from procvault.monitor.event import Event
from procvault.organization.agent import Agent, AgentSettings, _monotone
from procvault.organization.policy import PolicyEngine, PseudonymKey, is_placeholder, parse_policy
from procvault.organization.review import ReviewQueue
from procvault.streams import codec
from procvault.streams.frames import EVENT, decode_heartbeat
from procvault.streams.secrets import OrgKeys, VaultSecrets, init_keyring

T0 = datetime(2024, 1, 1, 10, tzinfo=UTC)
HOUR_US = 3_600_000_000


def _us(ts: datetime) -> int:
    return int(ts.timestamp()) * 1_000_000 + ts.microsecond


def _engine(**extra: object) -> PolicyEngine:
    doc = {
        "policy": "p",
        "version": 1,
        "org": "shop",
        "mode": "denylist",
        "consent": {"scope": "monitoring"},
        "activities": ["Refund"],
        **extra,
    }
    return PolicyEngine(
        parse_policy(doc, source="p.yaml"), key=PseudonymKey(b"test key: thirty-two bytes long!")
    )


def _source() -> list[tuple[int, Event]]:
    """Every 7 minutes an event; every third one is denied (a placeholder at the hour)."""
    out = []
    for i in range(30):
        act = "Refund" if i % 3 == 2 else "Pay"
        out.append((i, Event.create(f"c{i % 4}", act, T0 + timedelta(minutes=7 * i), org="shop")))
    return out


Record = tuple[str, tuple[int, int], Event | None, bool]


def _stream(producer: RecordingProducer, reader: Reader) -> list[Record]:
    """The committed records in order: ``("event", (time, order), event, False)`` or
    ``("beat", key, None, closed)``."""
    out: list[Record] = []
    for kind, order, body in frames(reader, producer):
        if kind == EVENT:
            ev = codec.decode(body)
            out.append(("event", (_us(ev.timestamp), order), ev, False))
        else:
            wm, closed = decode_heartbeat(body)
            out.append(("beat", (wm, order), None, closed))
    return out


def _run(tmp_path: Path, engine: PolicyEngine, *, paced: bool) -> list[Record]:
    init_keyring(tmp_path / "keys", ["shop"])
    keys = OrgKeys.load(tmp_path / "keys" / "org-shop.json")
    vault = VaultSecrets.load(tmp_path / "keys" / "vault.json").current.public()
    agent = Agent(
        AgentSettings("127.0.0.1:1", 2, batch_events=4),
        keys,
        vault,
        transform=engine.apply,
        time_granularity_us=engine.time_granularity_us,
    )
    producer = RecordingProducer()
    pacing = FixedRate(2000.0) if paced else AsFastAsPossible()
    asyncio.run(agent._publish(producer, _source(), pacing, 0))
    return _stream(producer, Reader(tmp_path / "keys"))


def _check_promises(stream: list[Record]) -> None:
    """Every record sorts above every promise before it (records and heartbeats)."""
    promised = (-(2**63), 0)
    for what, key, _, _ in stream:
        if what == "event":
            assert key > promised, (key, promised)
        promised = max(promised, key)


def test_placeholders_rounded_to_the_hour_never_go_back_in_time(tmp_path: Path) -> None:
    for paced in (False, True):
        stream = _run(tmp_path / str(paced), _engine(), paced=paced)
        events = [ev for what, _, ev, _ in stream if ev is not None]
        assert len(events) == 30 and sum(is_placeholder(e) for e in events) == 10
        _check_promises(stream)
        times = [e.timestamp for e in events]
        assert times == sorted(times)
        # a placeholder carries its hour or, if an earlier output is later, that output's time
        for prev, ev in itertools.pairwise(events):
            if is_placeholder(ev):
                assert ev.timestamp in (prev.timestamp, ev.timestamp.replace(minute=0))


def test_heartbeats_are_no_finer_than_the_policy_times(tmp_path: Path) -> None:
    engine = _engine(generalise={"timestamps": "hour"})
    stream = _run(tmp_path, engine, paced=True)
    _check_promises(stream)
    beats = [key for what, key, _, closed in stream if what == "beat" and not closed]
    assert beats
    for wm, _order in beats:
        assert (wm + 1) % HOUR_US == 0 or wm % HOUR_US == 0, wm


def test_monotone_replaces_only_what_goes_back() -> None:
    a = Event.create("c", "A", T0 + timedelta(minutes=30))
    b = Event.create("c", "B", T0)
    out = _monotone([a, b], -1)
    assert out[0] is a and out[1].timestamp == a.timestamp and out[1].activity == "B"
    same = [a]
    assert _monotone(same, _us(T0)) is same


def test_every_partition_hears_where_the_stream_ended_before_it_closes(tmp_path: Path) -> None:
    """Before its closing heartbeats (which move no position), the agent promises its last
    event's key on every partition, so every partition's end-of-stream flush reaches the same
    clock (and closes the same DP panes), also one that got none of the last events."""
    init_keyring(tmp_path / "keys", ["shop"])
    keys = OrgKeys.load(tmp_path / "keys" / "org-shop.json")
    vault = VaultSecrets.load(tmp_path / "keys" / "vault.json").current.public()
    for reviewed in (False, True):
        review = None
        if reviewed:
            (tmp_path / "review").mkdir()
            review = ReviewQueue(tmp_path / "review")
        agent = Agent(AgentSettings("127.0.0.1:1", 3, batch_events=4), keys, vault, review=review)
        producer = RecordingProducer()
        asyncio.run(agent._publish(producer, _source(), AsFastAsPossible(), 0))
        reader = Reader(tmp_path / "keys")
        last: tuple[int, int] = (-1, 0)
        promised: dict[int, tuple[int, int]] = {}
        closed: set[int] = set()
        for partition, kind, order, body in partitioned_frames(reader, producer):
            if kind == EVENT:
                last = max(last, (_us(codec.decode(body).timestamp), order))
                continue
            wm, is_closed = decode_heartbeat(body)
            if is_closed:
                closed.add(partition)
            else:
                assert partition not in closed
                promised[partition] = (wm, order)
        assert closed == {0, 1, 2}
        assert promised == dict.fromkeys((0, 1, 2), last), (reviewed, promised, last)
