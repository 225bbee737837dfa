"""What the demo shows while it runs: read, as the organizations and the public would.

:class:`Watch` follows the deployment's topics with ``read_committed``: the vault's key
announcements (only those chained to the pinned identity give keys), each organization's
sealed results (opened with that organization's key, the vault's signature checked), the
agents' MACed progress records and the signed DP aggregates (verified). :meth:`Watch.render`
is the live terminal view (``rich``), :meth:`Watch.plain` one line of text for a log.

The 95% noise half-width of a count released with the discrete Laplace mechanism of scale
``b`` (``q = e^(-1/b)``, ``P(|X| >= k) = 2 q^k / (1 + q)``) is the smallest ``k`` with
``P(|X| > k) <= 0.05``:

>>> noise_95(0.0), noise_95(1.0), noise_95(10.0)
(0, 3, 30)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Watch", "noise_95"]


def noise_95(scale: float) -> int:
    """The 95% half-width of discrete Laplace noise of ``scale`` (see the module)."""
    if scale <= 0:
        return 0
    q = math.exp(-1.0 / scale)
    # P(|X| > k) = P(|X| >= k + 1) = 2 q^(k+1) / (1 + q) <= 0.05
    k = math.log(0.025 * (1.0 + q)) / math.log(q) - 1.0
    return max(0, math.ceil(k - 1e-9))


@dataclass
class OrgView:
    """What one organization has received so far."""

    items: Counter[str] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    rejected: int = 0


class Watch:
    """Follows a deployment's topics (see the module docstring).

    Parameters
    ----------
    bootstrap
        Kafka ``host:port``.
    topics
        The deployment's :class:`~procvault.streams.frames.Topics`.
    keys
        The keyring folder (``registry.json`` and every ``org-<org>.json``).
    orgs
        The organizations to read the results of.
    shares
        Per organization, the events (and end markers) of its share: its agent's 100%.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Any,
        keys: Path,
        orgs: Sequence[str],
        shares: Mapping[str, int],
    ) -> None:
        from procvault.streams.attestation import AnnouncedKeys, EvidenceVerifier
        from procvault.streams.secrets import OrgKeys, Registry

        self.bootstrap = bootstrap
        self.topics = topics
        self.orgs = tuple(orgs)
        self.shares = dict(shares)
        registry = Registry.load(keys / "registry.json")
        # the demo's vault is simulated: its evidence is trusted as the demo says it is
        self._announced = AnnouncedKeys(
            registry.identity, EvidenceVerifier(registry.identity, allow_insecure=True)
        )
        self._org_keys = {o: OrgKeys.load(keys / f"org-{o}.json") for o in self.orgs}
        self.views: dict[str, OrgView] = {o: OrgView() for o in self.orgs}
        self.progress: dict[str, int] = dict.fromkeys(self.orgs, 0)
        self.finished: dict[str, bool] = dict.fromkeys(self.orgs, False)
        self.panes: dict[int, Any] = {}
        self.windows: dict[tuple[int, int], Any] = {}
        self.withheld = 0
        self.aggregates_rejected = 0
        self._batches: set[tuple[str, int, int, int]] = set()
        self._progress_raw: dict[str, list[bytes]] = {o: [] for o in self.orgs}

    # -- reading ---------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Follow the topics until ``stop`` is set (waits for them to exist)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from procvault.streams.kafka_io import _stop_consumer

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id="procvault-demo-view",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            metadata_max_age_ms=1000,
        )
        await consumer.start()
        try:
            names = [
                self.topics.keys,
                self.topics.progress,
                self.topics.aggregates,
                *(self.topics.alerts(o) for o in self.orgs),
            ]
            assigned: set[str] = set()
            while not stop.is_set():
                missing = [n for n in names if n not in assigned]
                if missing:
                    existing = await consumer.topics()
                    ready = [n for n in missing if n in existing]
                    if ready:
                        tps = list(consumer.assignment())
                        new = [
                            TopicPartition(n, p)
                            for n in ready
                            for p in sorted(consumer.partitions_for_topic(n) or {0})
                        ]
                        consumer.assign(tps + new)
                        await consumer.seek_to_beginning(*new)
                        assigned.update(ready)
                batch = await consumer.getmany(timeout_ms=300, max_records=2000)
                # keys first: a result sealed under an epoch needs its announcement
                for tp in [tp for tp in batch if tp.topic == self.topics.keys]:
                    for rec in batch.pop(tp):
                        self._announced.add(rec.value)
                for tp, recs in batch.items():
                    for rec in recs:
                        self._add(tp.topic, rec.key, rec.value)
                self._update_progress()
        finally:
            with contextlib.suppress(Exception):
                await _stop_consumer(consumer)

    def _add(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            return
        if topic == self.topics.progress:
            org = (key or b"").decode(errors="replace").partition("/")[0]
            if org in self._progress_raw:
                self._progress_raw[org].append(value)
            return
        if topic == self.topics.aggregates:
            self._add_aggregate(value)
            return
        for org in self.orgs:
            if topic == self.topics.alerts(org):
                self._add_results(org, topic, value)
                return

    def _update_progress(self) -> None:
        from procvault.organization.progress import best_progress

        for org, raw in self._progress_raw.items():
            if not raw:
                continue
            best, _bad = best_progress(raw, self._org_keys[org].progress_key, org, "agent-1")
            if best is not None:
                self.progress[org] = max(self.progress[org], best.position)
            del raw[:-1]

    def _add_results(self, org: str, topic: str, value: bytes) -> None:
        from procvault.monitor.errors import CodecError
        from procvault.monitor.findings import decode_batch, finding_to_dict
        from procvault.streams.envelope import RejectedRecord
        from procvault.streams.frames import open_result

        view = self.views[org]
        try:
            plain = open_result(
                self._org_keys[org].alerts, value, topic=topic, keys=self._announced.epochs
            )
            batch = decode_batch(plain)
        except (RejectedRecord, CodecError):
            view.rejected += 1
            return
        ident = (org, batch.partition, batch.commit, batch.chunk)
        if ident in self._batches:
            return  # a record read again (a worker's replayed batch)
        self._batches.add(ident)
        for finding in batch.items:
            item = finding_to_dict(finding)
            kind = item["type"]
            view.items[kind] += 1
            if kind == "case":
                view.cases[item["case"]] = item
            elif kind == "alert" and item.get("new") == "Violated":
                view.rules[item["rule"]] += 1
            elif kind == "notice":
                view.notices.append(f"{item['kind']} {item['org']} (partition {item['partition']})")

    def _add_aggregate(self, value: bytes) -> None:
        from procvault.monitor.privacy.records import PaneRecord, WindowRecord, WithheldRecord
        from procvault.streams.release import ReleaseSignatureError, verify_record

        try:
            record = verify_record(value, self._announced.epochs)
        except ReleaseSignatureError:
            self.aggregates_rejected += 1
            return
        if isinstance(record, PaneRecord):
            self.panes[record.pane.index] = record
        elif isinstance(record, WindowRecord):
            self.windows[(record.panes, record.last_pane)] = record
        elif isinstance(record, WithheldRecord):
            self.withheld += 1

    # -- what to show ----------------------------------------------------------------------
    def case_results(self) -> list[dict[str, Any]]:
        """Every case result item any organization received."""
        return [c for v in self.views.values() for c in v.cases.values()]

    def map_record(self) -> Any:
        """The record the map shows: the latest window of the most panes, else the latest
        pane (``None`` before the first)."""
        if self.windows:
            longest = max(n for n, _ in self.windows)
            last = max(p for n, p in self.windows if n == longest)
            return self.windows[(longest, last)]
        return self.panes[max(self.panes)] if self.panes else None

    def noise_lines(self) -> list[str]:
        """The noise of what the map shows: per statistic, the 95% half-width per pane (and
        per window of the map record)."""
        if not self.panes:
            return []
        from procvault.processmap.draw import noise_sd

        pane = self.panes[max(self.panes)]
        record = self.map_record()
        n = getattr(record, "panes", 1) - getattr(record, "withheld_panes", 0)
        parts = []
        for m in pane.mechanisms:
            half = noise_95(m.scale)
            text = f"{m.name} ±{half}"
            if n > 1:
                sd = noise_sd(pane.mechanisms, m.name, panes=n) or 0.0
                text += f" (window of {n}: ±{math.ceil(1.96 * sd)})"
            parts.append(text)
        eps = f"ε={pane.epsilon:g} per pane, per case over {pane.budget.window} panes"
        return [
            f"noise (95%, discrete Laplace; {eps}): " + ", ".join(parts),
            "every count above is a noisy release: read it as ± that much",
        ]

    def percent(self, org: str) -> int:
        """How much of its share ``org``'s agent has committed, in percent (100 when done)."""
        if self.finished[org]:
            return 100
        return min(100, 100 * self.progress[org] // max(1, self.shares.get(org, 0)))

    def plain(self) -> str:
        """One line: agents' progress, results per organization, panes released."""
        sent = " ".join(f"{o} {self.percent(o)}%" for o in self.orgs)
        res = " ".join(
            f"{o}: {len(v.cases)} cases {sum(v.rules.values())} violations"
            for o, v in self.views.items()
        )
        return f"agents {sent} | {res} | DP panes {len(self.panes)}"

    def render(self) -> Any:
        """The live view: a ``rich`` renderable."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        from procvault.processmap.draw import build_map, render_map

        table = Table(title="procvault demo: the confidential pipeline", expand=False)
        for col in ("organization", "agent sent", "cases", "alerts", "deviations", "violations"):
            table.add_column(col, justify="right" if col != "organization" else "left")
        for org in self.orgs:
            v = self.views[org]
            pct = self.percent(org)
            table.add_row(
                org,
                f"{pct}%" + (" done" if self.finished[org] else ""),
                str(len(v.cases)),
                str(v.items["alert"]),
                str(v.items["deviation"]),
                str(sum(v.rules.values())),
            )
        parts: list[Any] = [table]
        notices = [n for v in self.views.values() for n in v.notices]
        if notices:
            parts.append(Text("notices: " + "; ".join(sorted(set(notices))), style="yellow"))
        record = self.map_record()
        if record is not None:
            pane = self.panes[max(self.panes)] if self.panes else None
            mech = pane.mechanisms if pane is not None else None
            parts.append(render_map(build_map(record, mechanisms=mech)))
            parts += [Text(line, style="dim") for line in self.noise_lines()]
        else:
            parts.append(Text("DP process map: no pane released yet", style="dim"))
        return Group(*parts)


def summarize(views: Mapping[str, OrgView]) -> list[str]:
    """Per organization: cases, alerts, deviations, the most violated rules."""
    out = []
    for org, v in views.items():
        rules = ", ".join(f"{r} {n}" for r, n in v.rules.most_common(3)) or "none"
        out.append(
            f"  {org}: {len(v.cases)} case results, {v.items['alert']} rule alerts, "
            f"{v.items['deviation']} deviations; violations: {rules}"
        )
    return out
