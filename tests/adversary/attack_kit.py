"""What the adversary tests share: the attacker's Kafka access (read every record, produce any
bytes to any topic and partition) and genuine sources (an organization's own keys, sealing
frames the way its agent does), so that each test can say which records were genuine.

The attacker never touches a key: it copies, re-produces and forges bytes. A *curious
organization* (``Source`` used by a test to misbehave) holds only its own organization's keys.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline_harness import SEPSIS_MODEL, SEPSIS_RULES, SHARED, Deployment, Proc

from procvault.monitor.errors import KafkaSetupError
from procvault.monitor.event import Event
from procvault.organization.progress import best_progress
from procvault.streams import codec
from procvault.streams.envelope import ProducerSession
from procvault.streams.frames import FrameChain, placement
from procvault.streams.secrets import OrgKeys, VaultSecrets

#: An attacker's record: ``(topic, key, value, partition)``.
Record = tuple[str, bytes | None, bytes | None, int]

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)

#: Sepsis activities by organization (examples/sepsis_orgs.yaml).
EMERGENCY = ("ER Registration", "ER Triage", "ER Sepsis Triage", "IV Liquid", "IV Antibiotics")
LAB = ("Leucocytes", "CRP", "LacticAcid")
WARD = ("Admission NC", "Release A")
#: One case's trace: (organization, activity) in time order.
TRACE: tuple[tuple[str, str], ...] = (
    ("emergency", "ER Registration"),
    ("lab", "Leucocytes"),
    ("lab", "CRP"),
    ("emergency", "ER Triage"),
    ("emergency", "ER Sepsis Triage"),
    ("lab", "LacticAcid"),
    ("emergency", "IV Liquid"),
    ("emergency", "IV Antibiotics"),
    ("ward", "Admission NC"),
    ("ward", "Release A"),
)


# ----------------------------------------------------------------------------- the attacker
async def _produce(bootstrap: str, records: Iterable[Record]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value, partition in records:
            await producer.send(topic, value, key=key, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


def produce(bootstrap: str, records: Iterable[Record]) -> None:
    """Write ``records`` as they are (no transaction, no key of the deployment)."""
    asyncio.run(_produce(bootstrap, list(records)))


def read(bootstrap: str, topic: str, *, committed: bool = True) -> list[Any]:
    """Every record of ``topic`` (committed ones, or all with ``committed=False``)."""
    from procvault.streams.kafka_io import read_topic

    return asyncio.run(read_topic(bootstrap, topic, committed=committed, idle_timeout=2.0))


def copies(records: Iterable[Any], *, partition: int | None = None) -> list[Record]:
    """The attacker's copies of records read from the broker (to ``partition`` if given)."""
    return [
        (r.topic, r.key, r.value, r.partition if partition is None else partition) for r in records
    ]


# ----------------------------------------------------------------------------- genuine sources
@dataclass
class Source:
    """An organization's producer, sealing frames with its own keys exactly as its agent does
    (``prev`` chains per partition, merge keys strictly increasing)."""

    dep: Deployment
    org: str
    producer: str = "agent-1"
    generation: int | None = None
    heads: Sequence[tuple[int, int]] = ()
    epoch: int | None = None
    position: int = 0
    sent: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        secrets = VaultSecrets.load(self.dep.keys / "vault.json")
        vault = secrets.epochs[self.epoch] if self.epoch is not None else secrets.current
        self.keys = OrgKeys.load(self.dep.keys / f"org-{self.org}.json")
        self.session = ProducerSession(
            vault.public(),
            self.keys.sender,
            org=self.org,
            producer=self.producer,
            generation=self.generation,
        )
        self.chain = FrameChain(self.dep.partitions, self.heads)
        self.topic = self.dep.topics.events(self.org)

    @classmethod
    def resume(cls, dep: Deployment, org: str, **kw: Any) -> Source:
        """A new session of ``org``'s agent-1 that continues the chains its committed
        progress recorded (as a restarted agent does)."""
        recs = read(dep.bootstrap, dep.topics.progress)
        key = f"{org}/agent-1".encode()
        mac = OrgKeys.load(dep.keys / f"org-{org}.json").progress_key
        best, _ = best_progress([r.value for r in recs if r.key == key], mac, org, "agent-1")
        assert best is not None, f"no progress of {org}"
        heads = [tuple(h) for h in best.heads]
        gen = max(best.generation + 1, time.time_ns() // 1000)
        return cls(dep, org, generation=gen, heads=heads, position=best.position + 1, **kw)  # type: ignore[arg-type]

    def partition_of(self, case_id: str) -> int:
        return placement(self.keys.placement_key, case_id, self.dep.partitions)

    def event(self, ev: Event, *, partition: int | None = None, genuine: bool = True) -> Record:
        """The record of one event (its case's partition unless told)."""
        p = self.partition_of(ev.case_id) if partition is None else partition
        self.position += 1
        value = self.chain.event(
            self.session,
            self.position * 256,
            time.time_ns() // 1000,
            codec.encode(ev),
            topic=self.topic,
            partition=p,
        )
        if genuine:
            self.sent.append(ev)
        return (self.topic, None, value, p)

    def heartbeat(self, promise: datetime, *, closed: bool = False) -> list[Record]:
        """One heartbeat per partition promising nothing at or before ``promise``."""
        us = int(promise.timestamp() * 1e6)
        order = (1 << 62) if closed else self.position * 256 + 255
        return [
            (
                self.topic,
                None,
                self.chain.heartbeat(
                    self.session,
                    order,
                    time.time_ns() // 1000,
                    us,
                    closed=closed,
                    topic=self.topic,
                    partition=p,
                ),
                p,
            )
            for p in range(self.dep.partitions)
        ]


def trace_events(
    case_id: str, start: datetime, trace: Sequence[tuple[str, str]] = TRACE, *, end: bool = True
) -> list[Event]:
    """A case's events (one every 5 minutes from ``start``), with its end marker (sent by the
    organization of its last event) unless ``end`` is false."""
    out = [
        Event.create(case_id, activity, start + timedelta(minutes=5 * i), org=org)
        for i, (org, activity) in enumerate(trace)
    ]
    if end:
        last = out[-1]
        out.append(Event.case_end(case_id, last.timestamp, org=last.org))
    return out


def send_cases(
    sources: dict[str, Source], events: Iterable[Event], *, close: bool = True
) -> list[Record]:
    """The genuine records of ``events`` (each by its organization's source, in time order)
    followed by every source's closing (or, with ``close=False``, promising) heartbeats."""
    evs = sorted(events, key=lambda e: e.timestamp)
    out = [sources[e.org].event(e) for e in evs]
    last = evs[-1].timestamp if evs else T0
    for s in sources.values():
        out.extend(s.heartbeat(last + timedelta(seconds=1), closed=close))
    return out


def reference(events: Iterable[Event]) -> dict[str, dict[str, Any]]:
    """What ``procvault monitor`` computes in-process from ``events``, per case."""
    from pipeline_harness import in_process_results

    return in_process_results(events, SHARED / SEPSIS_MODEL, SEPSIS_RULES)


def case_results(dep: Deployment, cases: Iterable[str], timeout: float = 90.0) -> dict[str, Any]:
    """Per case of ``cases``, the case result the organizations received (waits for all)."""
    want = set(cases)
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = dep.case_results(wait_for=0)
        except KafkaSetupError:  # (the results topics do not exist yet)
            found = {}
        got = {c: r for c, r in found.items() if c in want}
        if set(got) == want or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def strip_reference(ref: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The in-process results in the shape :func:`case_results` returns."""
    out = {}
    for case, found in ref.items():
        item = dict(found)
        for name in ("sent_us", "own_events", "silent_sources"):
            item.pop(name, None)
        out[case] = item
    return out


# ----------------------------------------------------------------------------- the vault's word
def metrics_url(proc: Proc, timeout: float = 30.0) -> str:
    """The ``/metrics`` address a ``procvault vault --metrics-port 0`` printed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(r"metrics at (\S+)", proc.stderr())
        if m:
            return m.group(1)
        time.sleep(0.1)
    raise AssertionError(f"no metrics address:\n{proc.stderr()[-2000:]}")


def scrape(url: str) -> dict[str, float]:
    """The samples of a Prometheus text page, by ``name{labels}``."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def wait_until(check: Any, what: str, timeout: float = 60.0, poll: float = 0.3) -> None:
    """Wait until ``check()`` is true (asking every ``poll`` seconds)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)
