"""The demo's self-check: what the pipeline produced against what it must.

Two checks, each a :class:`Check` with a verdict and one line of detail:

* :func:`compare_cases`: per case, the result the vault sent the organizations equals the
  in-process ``procvault monitor`` result on the same stream (every field, for every case);
* :func:`scan_topics`: no case id, resource or attribute value of the stream is in clear in
  any record (key or value, committed or aborted) of any topic, and no activity name either
  outside the DP aggregates (which publish activity names by design).

>>> ref = {"c1": {"case": "c1", "fitness": 1.0}, "c2": {"case": "c2", "fitness": 0.5}}
>>> compare_cases(ref, dict(ref)).ok
True
>>> bad = compare_cases(ref, {"c1": {"case": "c1", "fitness": 0.9}})
>>> bad.ok, bad.detail
(False, '2 cases differ or are missing of 2 (first: c1)')
>>> scan = scan_bytes({"t.events": [b"\\x93\\x01order-1"]}, {b"order-1"}, set(), "t.agg")
>>> scan.ok, scan.detail
(False, 'in clear: order-1 in t.events (1 of 1 values found; 1 topics, 1 records)')
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "IGNORED_FIELDS",
    "Check",
    "compare_cases",
    "read_case_results",
    "scan_bytes",
    "scan_topics",
]

#: Fields of a vault case result that the in-process monitor has no notion of: the agent's
#: send time, the organization's own event count, the sources silent meanwhile.
IGNORED_FIELDS = ("sent_us", "own_events", "silent_sources", "type")


@dataclass(frozen=True)
class Check:
    """One self-check verdict."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        """``PASS name: detail`` or ``FAIL name: detail``."""
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def read_case_results(path: Path) -> dict[str, dict[str, Any]]:
    """The per-case results ``procvault monitor --case-results FILE`` wrote."""
    out: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            out[item["case"]] = item
    return out


def vault_case_results(items: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per case, the case result among an organization's result items (without
    :data:`IGNORED_FIELDS`); the same case seen by several organizations must agree (a
    disagreement raises ``ValueError``)."""
    out: dict[str, dict[str, Any]] = {}
    for raw in items:
        if raw.get("type") != "case":
            continue
        item = {k: v for k, v in raw.items() if k not in IGNORED_FIELDS}
        prev = out.setdefault(item["case"], item)
        if prev != item:
            raise ValueError(f"case {item['case']}: two organizations got different results")
    return out


def compare_cases(
    reference: Mapping[str, Mapping[str, Any]], got: Mapping[str, Mapping[str, Any]]
) -> Check:
    """Every case of ``reference`` (the in-process monitor) has exactly that result in
    ``got`` (the pipeline), and ``got`` has no other case."""
    wrong = sorted(c for c in reference if got.get(c) != reference[c])
    extra = sorted(set(got) - set(reference))
    if not wrong and not extra:
        fitting = sum(1 for r in reference.values() if r.get("fitness") == 1.0)
        return Check(
            "cases",
            True,
            f"all {len(reference)} per-case results equal procvault monitor's ({fitting} fitting)",
        )
    first = (wrong or extra)[0]
    detail = f"{len(wrong)} cases differ or are missing of {len(reference)} (first: {first})"
    if extra:
        detail += f"; {len(extra)} cases the monitor does not know"
    return Check("cases", False, detail)


def scan_bytes(
    topics: Mapping[str, list[bytes]],
    data: set[bytes],
    activities: set[bytes],
    aggregates: str,
) -> Check:
    """Look for every needle in every record of every topic (``data`` everywhere,
    ``activities`` everywhere but the ``aggregates`` topic)."""
    found: dict[bytes, str] = {}
    records = 0
    for topic, blobs in sorted(topics.items()):
        records += len(blobs)
        blob = b"\n".join(blobs)
        wanted = data if topic == aggregates else data | activities
        for needle in wanted:
            if needle not in found and needle in blob:
                found[needle] = topic
    where = f"{len(topics)} topics, {records} records"
    if not found:
        return Check(
            "in-clear",
            True,
            f"none of {len(data)} case ids, names and values, nor any of {len(activities)} "
            f"activity names outside the DP aggregates, in {where}",
        )
    needle, topic = min(found.items())
    return Check(
        "in-clear",
        False,
        f"in clear: {needle.decode(errors='replace')} in {topic} "
        f"({len(found)} of {len(data | activities)} values found; {where})",
    )


async def topic_bytes(bootstrap: str, names: Iterable[str]) -> dict[str, list[bytes]]:
    """The raw key and value of every record (aborted ones too) of each topic."""
    from procvault.streams.kafka_io import read_topic

    out: dict[str, list[bytes]] = {}
    for name in names:
        records = await read_topic(bootstrap, name, idle_timeout=2.0)
        out[name] = [(r.key or b"") + b"|" + (r.value or b"") for r in records]
    return out


async def list_topics(bootstrap: str) -> list[str]:
    """Every topic of the broker."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return sorted(await admin.list_topics())
    finally:
        await admin.close()


async def scan_topics(
    bootstrap: str,
    names: Iterable[str],
    data: set[bytes],
    activities: set[bytes],
    aggregates: str,
) -> Check:
    """:func:`scan_bytes` over the topics ``names`` read from the broker."""
    return scan_bytes(await topic_bytes(bootstrap, names), data, activities, aggregates)
