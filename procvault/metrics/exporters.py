"""Prometheus metrics of procvault's long-running processes, one small class per process kind.

Each class owns a dedicated :class:`~prometheus_client.CollectorRegistry` (plus the process
collector, so ``process_resident_memory_bytes`` is there) and exposes one explicit method per
thing the process reports. Metrics are created once, in the constructor; the loop only calls
methods.

**No data in labels.** Label values come from fixed enumerations (``reason``, ``stage``,
``kind``, ``outcome``) or from configuration (``org``: the registered organizations; ``rule``:
the configured rule ids; ``partition``: a partition number). A value outside its enumeration
raises :class:`ValueError` (a programming error), except ``org``: an organization that is not
registered (which an unauthenticated header can claim) is counted as ``"unregistered"``, so a
forged header cannot create a series. Case ids, activities and attribute values never appear.

**Cheap on the hot path.** ``prometheus_client``'s ``Histogram.observe`` costs ~1 µs a call
(``Counter.inc`` ~0.35 µs) on the project's machines. The histograms here are our own
:class:`Histogram`: ``observe`` is a ``bisect`` into the bucket bounds (~0.15 µs), and
``observe_many`` takes a whole batch (numpy above a few dozen values: ~10-20 ns a value) in any
time unit (``unit=1e-9`` for ``perf_counter_ns`` deltas), so a vault records a batch's engine
times and latencies with one call each. Counters are ``prometheus_client`` counters
incremented once per batch by the batch's count.

>>> m = VaultMetrics(orgs=["hospital", "lab"], detailed=True)
>>> m.records_in("hospital", 3)
>>> m.events_applied(3)
>>> m.records_rejected("replay")
>>> m.observe_engine([2_500, 4_000, 12_000], unit=1e-9)  # perf_counter_ns deltas
>>> text = exposition(m.registry)
>>> 'procvault_records_in_total{org="hospital"} 3.0' in text
True
>>> 'procvault_engine_seconds_bucket{le="5e-06"} 2.0' in text
True
>>> m.records_rejected("case-42")
Traceback (most recent call last):
...
ValueError: reason must be one of bad_signature, bad_tag, future, ...; got 'case-42'
>>> "procvault_events_applied" in exposition(VaultMetrics(orgs=["lab"]).registry)
False
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from http.server import ThreadingHTTPServer
from typing import Any, Final

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import MetricsHandler, generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = [
    "AGENT_STATES",
    "AGENT_WITHHELD_REASONS",
    "ANNOUNCEMENT_REFUSALS",
    "ATTESTATION_REQUEST_OUTCOMES",
    "DATA_REASONS",
    "LATENCY_BUCKETS",
    "LATENCY_STAGES",
    "PANE_OUTCOMES",
    "REJECT_REASONS",
    "RELEASE_KINDS",
    "SECURITY_REASONS",
    "SOURCE_NOTICES",
    "TRUST_STATES",
    "UNREGISTERED_ORG",
    "AgentMetrics",
    "Histogram",
    "MetricsServer",
    "ReleaseMetrics",
    "VaultMetrics",
    "exposition",
    "label_values",
    "serve",
]

#: Histogram bucket upper bounds in seconds: 1-2-5 steps from 1 µs to 10 s (22 buckets, then
#: +Inf), fit for per-event engine times (~1-10 µs) up to end-to-end latencies of seconds.
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    *(float(f"{m}e{e}") for e in range(-6, 1) for m in (1, 2, 5)),
    10.0,
)

#: Why the vault refused a record for a security reason
#: (``procvault_records_rejected_total{reason}``, always exported).
SECURITY_REASONS: Final = frozenset(
    {
        "malformed",
        "unknown_org",
        "unknown_epoch",
        "bad_tag",
        "replay",
        "gap",
        "old_epoch",
        "resent",
        "bad_signature",
    }
)
#: Refusals that describe the data (an event ahead of the clock, naming another
#: organization): exported in detailed mode only.
DATA_REASONS: Final = frozenset({"future", "wrong_org", "misplaced"})
#: Every reason.
REJECT_REASONS: Final = SECURITY_REASONS | DATA_REASONS
#: ``procvault_source_notices_total{kind}``.
SOURCE_NOTICES: Final = frozenset(
    {"source_silent", "source_back", "waiting_for_source", "source_gap"}
)
#: Latency stages: source send → applied in the vault (the vault's metric) / included in a
#: release (the release stage's).
LATENCY_STAGES: Final = frozenset({"applied", "released"})
#: What the release stage published per pane: a pane, a window, or a withholding.
RELEASE_KINDS: Final = frozenset({"pane", "window", "withheld"})
#: Why an agent withheld an event: the policy's event-level reason codes (lower case; see
#: ``procvault.organization.policy.reserved.Reason``), ``review_dropped`` (a reviewer dropped it,
#: ``procvault review drop``) and ``revoked`` (a signed revocation).
AGENT_WITHHELD_REASONS: Final = frozenset(
    {
        "activity_denied",
        "resource_denied",
        "value_denied",
        "outside_window",
        "other_org",
        "review_dropped",
        "revoked",
    }
)
#: An agent's states (``procvault_agent_state{state}``; see ``procvault.organization.control``).
AGENT_STATES: Final = ("observing", "paused", "outside_hours", "restricted")
#: What a vault's attestation responder did with a request (the same set as
#: ``procvault.streams.provisioning.REQUEST_OUTCOMES``).
ATTESTATION_REQUEST_OUTCOMES: Final = frozenset(
    {"answered", "rate_limited", "repeated", "malformed", "provider_error"}
)
#: Why an agent refused a key announcement (``procvault.streams.attestation.REFUSAL_REASONS``).
ANNOUNCEMENT_REFUSALS: Final = frozenset(
    {"malformed", "wrong_nonce", "not_pinned", "bad_signature", "stale", "evidence", "conflict"}
)
#: An agent's trust in the vault (``procvault.organization.trust.TrustState``).
TRUST_STATES: Final = ("pending", "trusted", "distrusted")
#: Keys of the released ``cases`` statistic (noisy values of the last released pane).
PANE_OUTCOMES: Final = frozenset(
    {"started", "completed_fit", "completed_unfit", "completed_unchecked"}
)
#: The ``org`` label of events whose claimed organization is not registered.
UNREGISTERED_ORG: Final = "unregistered"

#: A batch of observations.
_Values = Sequence[float] | np.ndarray[Any, Any]
#: Batches at least this long are binned with numpy; shorter ones with ``bisect``.
_NUMPY_MIN: Final = 32


def _check(kind: str, value: str, allowed: frozenset[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{kind} must be one of {', '.join(sorted(allowed))}; got {value!r}")
    return value


# ----------------------------------------------------------------------------- histogram
class _HistogramChild:
    """One label combination's bucket counts and sum (written by one thread)."""

    __slots__ = ("_bounds", "_counts", "_np_bounds", "_scaled", "_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._np_bounds = np.asarray(bounds, dtype=np.float64)
        self._counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._scaled: dict[float, tuple[list[float], np.ndarray[Any, Any]]] = {}

    def observe(self, value: float) -> None:
        """Count one value (seconds)."""
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def observe_many(self, values: _Values, *, unit: float = 1.0) -> None:
        """Count a batch of values measured in ``unit`` seconds (``1e-9``: nanoseconds)."""
        n = len(values)
        if n == 0:
            return
        if unit == 1.0:
            bounds, np_bounds = self._bounds, self._np_bounds
        else:
            scaled = self._scaled.get(unit)
            if scaled is None:
                # 12 significant digits: 5e-6 s / 1e-9 is 5000 ns, not 5000.000000000001.
                in_unit = [float(f"{b / unit:.12g}") for b in self._bounds]
                scaled = (in_unit, np.asarray(in_unit, dtype=np.float64))
                self._scaled[unit] = scaled
            bounds, np_bounds = scaled  # type: ignore[assignment]
        counts = self._counts
        if n >= _NUMPY_MIN or isinstance(values, np.ndarray):
            arr = np.asarray(values, dtype=np.float64)
            binned = np.bincount(
                np.searchsorted(np_bounds, arr, side="left"), minlength=len(counts)
            )
            for i, c in enumerate(binned.tolist()):
                if c:
                    counts[i] += c
            total = float(arr.sum())
        else:
            total = 0.0
            for v in values:
                counts[bisect_left(bounds, v)] += 1
                total += v
        self._sum += total * unit

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        """Cumulative ``(le, count)`` pairs and the sum, consistent among themselves."""
        counts = self._counts[:]  # one C-level copy: a consistent view under the GIL
        out: list[tuple[str, float]] = []
        acc = 0
        for bound, c in zip((*self._bounds, float("inf")), counts, strict=True):
            acc += c
            out.append((floatToGoString(bound), float(acc)))  # type: ignore[no-untyped-call]
        return out, self._sum


class Histogram(Collector):
    """A Prometheus histogram with cheap single and batch observations.

    Exposed exactly as ``prometheus_client``'s histogram (``_bucket{le}``, ``_count``,
    ``_sum``). Every allowed label combination exists from the start (with zero counts), so
    queries over it are never empty. Observe from one thread; scrapes may come from any.

    >>> from prometheus_client import CollectorRegistry
    >>> h = Histogram("demo_seconds", "A demo.", labelname="stage", labelvalues=["a", "b"],
    ...               registry=CollectorRegistry())
    >>> h.labels("a").observe_many([1.5e-6, 3e-3, 20.0])
    >>> h.labels("a").snapshot()[0][:2], h.labels("a").snapshot()[0][-1]
    ([('1e-06', 0.0), ('2e-06', 1.0)], ('+Inf', 3.0))
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        *,
        registry: CollectorRegistry,
        buckets: Sequence[float] = LATENCY_BUCKETS,
        labelname: str | None = None,
        labelvalues: Iterable[str] = (),
    ) -> None:
        bounds = tuple(float(b) for b in buckets)
        if not bounds or list(bounds) != sorted(set(bounds)) or bounds[-1] == float("inf"):
            raise ValueError("buckets must be finite, strictly increasing and not empty")
        self.name = name
        self.documentation = documentation
        self.labelname = labelname
        values = tuple(labelvalues)
        if (labelname is None) != (not values):
            raise ValueError("give both labelname and labelvalues, or neither")
        keys = values or ("",)
        self._children = {k: _HistogramChild(bounds) for k in keys}
        self._default = self._children[keys[0]]
        registry.register(self)

    def labels(self, value: str) -> _HistogramChild:
        """The child for one label value (raises ``ValueError`` outside the enumeration)."""
        try:
            return self._children[value]
        except KeyError:
            allowed = frozenset(self._children)
            raise ValueError(
                f"{self.labelname} must be one of {', '.join(sorted(allowed))}; got {value!r}"
            ) from None

    def observe(self, value: float) -> None:
        """Count one value (unlabelled histogram)."""
        self._default.observe(value)

    def observe_many(self, values: _Values, *, unit: float = 1.0) -> None:
        """Count a batch of values in ``unit`` seconds (unlabelled histogram)."""
        self._default.observe_many(values, unit=unit)

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self._label_list())]

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self._label_list())
        for key, child in self._children.items():
            buckets, total = child.snapshot()
            family.add_metric([key] if self.labelname else [], buckets, total)
        return [family]

    def _label_list(self) -> list[str]:
        return [self.labelname] if self.labelname else []


# ----------------------------------------------------------------------------- registries
def _registry(given: CollectorRegistry | None) -> CollectorRegistry:
    """``given``, or a new registry with the process collector (RSS, CPU, open fds).

    Also turns off prometheus_client's ``*_created`` series (a process-wide switch): they
    double the series count and no dashboard uses them.
    """
    disable_created_metrics()  # type: ignore[no-untyped-call]
    if given is not None:
        return given
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    return registry


class VaultMetrics:
    """The vault worker's metrics.

    By default only what the Kafka operator sees anyway or what signals an attack: records
    read per organization's topic, records refused for a security reason, batches and their
    durations, consumer lag, rollbacks detected, silent sources and the attestation mode.
    Counts that describe the data (events applied, cases completed or active, alerts, late
    or future events, per-event engine times: a histogram's count is an exact event count)
    exist only with ``detailed=True``, which the vault announces at start as outside the DP
    guarantee.

    Parameters
    ----------
    orgs
        The registered organizations (configuration): the ``org`` label's values.
    detailed
        Also export the data-describing counts (see above).
    registry
        Where to register (default: a new registry with the process collector).
    """

    def __init__(
        self,
        *,
        orgs: Iterable[str],
        detailed: bool = False,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = r = _registry(registry)
        self.detailed = detailed
        org_names = sorted({str(o) for o in orgs} | {UNREGISTERED_ORG})
        self._in = Counter(
            "procvault_records_in_total",
            "Records read from the event topics, by the topic's organization.",
            ["org"],
            registry=r,
        )
        self._in_by_org = {o: self._in.labels(org=o) for o in org_names}
        self._in_other = self._in_by_org[UNREGISTERED_ORG]
        rejected = Counter(
            "procvault_records_rejected_total",
            "Records refused (never applied), by reason.",
            ["reason"],
            registry=r,
        )
        reasons = SECURITY_REASONS | (DATA_REASONS if detailed else frozenset())
        self._rejected = {k: rejected.labels(reason=k) for k in sorted(reasons)}
        self._lag = Gauge(
            "procvault_consumer_lag",
            "Records behind the partition's end, per assigned partition.",
            ["partition"],
            registry=r,
        )
        self._lag_by_partition: dict[int, Any] = {}
        self._batches = Counter(
            "procvault_batches_total", "Transactions committed (one per batch).", registry=r
        )
        self._batch_seconds = Histogram(
            "procvault_batch_seconds", "Wall time per batch, read to commit.", registry=r
        )
        self._insecure = Gauge(
            "procvault_attestation_insecure",
            "1 when the vault runs on simulated (INSECURE) attestation.",
            registry=r,
        )
        self._rollbacks = Counter(
            "procvault_rollbacks_total",
            "Partitions refused because their sealed state was older than their last commit.",
            registry=r,
        )
        requests = Counter(
            "procvault_attestation_requests_total",
            "Attestation requests (nonces on vault.attest), by what the responder did.",
            ["outcome"],
            registry=r,
        )
        self._requests = {
            k: requests.labels(outcome=k) for k in sorted(ATTESTATION_REQUEST_OUTCOMES)
        }
        notices = Counter(
            "procvault_source_notices_total",
            "Organizations that went silent, came back, or are waited for.",
            ["kind"],
            registry=r,
        )
        self._notices = {k: notices.labels(kind=k) for k in sorted(SOURCE_NOTICES)}
        self._detail: dict[str, Any] = {}
        if detailed:
            d = self._detail
            d["applied"] = Counter(
                "procvault_events_applied_total", "Events applied to case state.", registry=r
            )
            d["engine"] = Histogram(
                "procvault_engine_seconds", "Engine time per applied event.", registry=r
            )
            d["latency"] = Histogram(
                "procvault_latency_seconds",
                "Source send (agent wall clock) to applied in the vault.",
                registry=r,
                labelname="stage",
                labelvalues=["applied"],
            )
            d["active"] = Gauge(
                "procvault_active_cases", "Cases with state held in the vault.", registry=r
            )
            d["alerts"] = Counter(
                "procvault_alerts_total", "Per-case alerts sent to organizations.", registry=r
            )
            d["completed"] = Counter(
                "procvault_cases_completed_total", "Cases completed.", registry=r
            )

    def records_in(self, org: str, n: int = 1) -> None:
        """``n`` records read from ``org``'s topic."""
        self._in_by_org.get(org, self._in_other).inc(n)

    def records_rejected(self, reason: str, n: int = 1) -> None:
        """``n`` records refused for ``reason`` (a data-describing reason only counts in
        detailed mode)."""
        child = self._rejected.get(reason)
        if child is not None:
            child.inc(n)
        else:
            _check("reason", reason, SECURITY_REASONS | DATA_REASONS)

    def events_applied(self, n: int = 1) -> None:
        """``n`` events applied (detailed mode)."""
        if self.detailed and n:
            self._detail["applied"].inc(n)

    def observe_engine(self, values: _Values, *, unit: float = 1.0) -> None:
        """A batch of per-event engine times in ``unit`` seconds (detailed mode)."""
        if self.detailed:
            self._detail["engine"].observe_many(values, unit=unit)

    def observe_latency(self, stage: str, values: _Values, *, unit: float = 1.0) -> None:
        """A batch of latencies for ``stage`` (``applied``; detailed mode)."""
        if self.detailed:
            self._detail["latency"].labels(stage).observe_many(values, unit=unit)

    def set_active_cases(self, n: int) -> None:
        """Cases held in state (detailed mode)."""
        if self.detailed:
            self._detail["active"].set(n)

    def alerts_sent(self, n: int = 1) -> None:
        """``n`` alerts sent (detailed mode)."""
        if self.detailed and n:
            self._detail["alerts"].inc(n)

    def cases_completed(self, n: int = 1) -> None:
        """``n`` cases completed (detailed mode)."""
        if self.detailed and n:
            self._detail["completed"].inc(n)

    def set_consumer_lag(self, partition: int, lag: int) -> None:
        """Records behind the end of ``partition``."""
        child = self._lag_by_partition.get(partition)
        if child is None:
            child = self._lag.labels(partition=str(int(partition)))
            self._lag_by_partition[partition] = child
        child.set(lag)

    def forget_partition(self, partition: int) -> None:
        """Drop a revoked partition's lag series."""
        if self._lag_by_partition.pop(partition, None) is not None:
            self._lag.remove(str(int(partition)))

    def batch_done(self, seconds: float) -> None:
        """One batch committed, taking ``seconds``."""
        self._batches.inc()
        self._batch_seconds.observe(seconds)

    def set_attestation_insecure(self, insecure: bool) -> None:
        """Whether the vault's attestation evidence is simulated (INSECURE)."""
        self._insecure.set(1 if insecure else 0)

    def rollback_detected(self) -> None:
        """A partition's sealed state was refused as older than its last commit."""
        self._rollbacks.inc()

    def attestation_requests(self, outcome: str, n: int = 1) -> None:
        """``n`` attestation requests with ``outcome`` (:data:`ATTESTATION_REQUEST_OUTCOMES`)."""
        child = self._requests.get(outcome)
        if child is None:
            _check("outcome", outcome, ATTESTATION_REQUEST_OUTCOMES)
        else:
            child.inc(n)

    def source_notice(self, kind: str) -> None:
        """An organization went silent, came back, or is waited for."""
        child = self._notices.get(kind)
        if child is None:
            _check("kind", kind, SOURCE_NOTICES)
        else:
            child.inc()


class AgentMetrics:
    """An organization agent's metrics (the ``org`` is the agent's; Prometheus adds
    ``instance``)."""

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = _registry(registry)
        self._read = Counter(
            "procvault_agent_events_read_total", "Events read from the source.", registry=r
        )
        self._sent = Counter(
            "procvault_agent_events_sent_total", "Events encrypted and sent.", registry=r
        )
        withheld = Counter(
            "procvault_agent_events_withheld_total",
            "Events withheld by the organization's policy, by reason.",
            ["reason"],
            registry=r,
        )
        self._withheld = {k: withheld.labels(reason=k) for k in sorted(AGENT_WITHHELD_REASONS)}
        self._heartbeats = Counter(
            "procvault_agent_heartbeats_total", "Watermark heartbeats sent.", registry=r
        )
        self._paused = Gauge("procvault_agent_paused", "1 while the agent is paused.", registry=r)
        state = Gauge(
            "procvault_agent_state",
            "The agent's state: 1 for the current one, 0 for the others.",
            ["state"],
            registry=r,
        )
        self._state = {k: state.labels(state=k) for k in AGENT_STATES}
        self._state["observing"].set(1)
        self._insecure = Gauge(
            "procvault_agent_attestation_insecure",
            "1 when the agent trusts the vault on simulated (INSECURE) evidence.",
            registry=r,
        )
        trust = Gauge(
            "procvault_agent_vault_trust",
            "The agent's trust in the vault: 1 for the current state, 0 for the others.",
            ["state"],
            registry=r,
        )
        self._trust = {k: trust.labels(state=k) for k in TRUST_STATES}
        self._trust["pending"].set(1)
        refused = Counter(
            "procvault_agent_announcements_refused_total",
            "Key announcements the agent refused, by reason.",
            ["reason"],
            registry=r,
        )
        self._refused = {k: refused.labels(reason=k) for k in sorted(ANNOUNCEMENT_REFUSALS)}
        self._send = Histogram(
            "procvault_agent_send_seconds",
            "Wall time per send (one event or one batch, as the agent reports it).",
            registry=r,
        )

    def events_read(self, n: int = 1) -> None:
        """``n`` events read from the source."""
        self._read.inc(n)

    def events_sent(self, n: int = 1) -> None:
        """``n`` events sent."""
        self._sent.inc(n)

    def events_withheld(self, reason: str, n: int = 1) -> None:
        """``n`` events withheld; ``reason`` is a policy reason code (any case) or ``revoked``."""
        key = reason.lower()
        child = self._withheld.get(key)
        if child is None:
            _check("reason", key, AGENT_WITHHELD_REASONS)
        else:
            child.inc(n)

    def heartbeats(self, n: int = 1) -> None:
        """``n`` heartbeats sent."""
        self._heartbeats.inc(n)

    def set_paused(self, paused: bool) -> None:
        """Whether the agent is paused."""
        self._paused.set(1 if paused else 0)

    def set_state(self, state: str) -> None:
        """The agent's state (one of :data:`AGENT_STATES`); also sets the paused gauge.

        >>> m = AgentMetrics()
        >>> m.set_state("paused")
        >>> 'procvault_agent_state{state="paused"} 1.0' in exposition(m.registry)
        True
        """
        _check("state", state, frozenset(AGENT_STATES))
        for name, child in self._state.items():
            child.set(1 if name == state else 0)
        self._paused.set(1 if state == "paused" else 0)

    def set_attestation_insecure(self, insecure: bool) -> None:
        """Whether the agent trusts the vault on simulated (INSECURE) evidence."""
        self._insecure.set(1 if insecure else 0)

    def set_vault_trust(self, state: str) -> None:
        """The agent's trust in the vault (one of :data:`TRUST_STATES`).

        >>> m = AgentMetrics()
        >>> m.set_vault_trust("distrusted")
        >>> 'procvault_agent_vault_trust{state="distrusted"} 1.0' in exposition(m.registry)
        True
        """
        _check("state", state, frozenset(TRUST_STATES))
        for name, child in self._trust.items():
            child.set(1 if name == state else 0)

    def announcements_refused(self, reason: str, n: int = 1) -> None:
        """``n`` key announcements refused for ``reason`` (:data:`ANNOUNCEMENT_REFUSALS`)."""
        child = self._refused.get(reason)
        if child is None:
            _check("reason", reason, ANNOUNCEMENT_REFUSALS)
        else:
            child.inc(n)

    def observe_send(self, seconds: float) -> None:
        """One send's wall time."""
        self._send.observe(seconds)

    def observe_sends(self, values: _Values, *, unit: float = 1.0) -> None:
        """A batch of send times in ``unit`` seconds."""
        self._send.observe_many(values, unit=unit)


class ReleaseMetrics:
    """The release stage's metrics.

    Parameters
    ----------
    rules
        The configured compliance rule ids (configuration): the ``rule`` label's values of
        ``procvault_released_pane_violations``.
    detailed
        Also export the send → release latency histogram (its count is the exact number of
        panes that held events: outside the DP guarantee).

    Everything else follows the public pane schedule or is a published (noisy) value.
    """

    def __init__(
        self,
        *,
        rules: Iterable[str] = (),
        detailed: bool = False,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = r = _registry(registry)
        self.detailed = detailed
        self._rejected_partials = Counter(
            "procvault_partials_rejected_total",
            "Pane partials refused (not sealed by this vault, or made under another DP plan).",
            registry=r,
        )
        releases = Counter(
            "procvault_releases_total",
            "Records published on results.aggregates, by kind.",
            ["kind"],
            registry=r,
        )
        self._releases = {k: releases.labels(kind=k) for k in sorted(RELEASE_KINDS)}
        self._spent = Gauge(
            "procvault_privacy_epsilon_spent",
            "Epsilon spent over the current w-pane window (privacy ledger).",
            registry=r,
        )
        self._remaining = Gauge(
            "procvault_privacy_epsilon_remaining",
            "Epsilon left over the current w-pane window (privacy ledger).",
            registry=r,
        )
        self._e2e = (
            Histogram(
                "procvault_latency_seconds",
                "Source send (agent wall clock) of a pane's latest event to its release.",
                registry=r,
                labelname="stage",
                labelvalues=["released"],
            )
            if detailed
            else None
        )
        self._latency = Histogram(
            "procvault_release_latency_seconds",
            "Pane close (event time watermark passed its end) to signed record published.",
            registry=r,
        )
        cases = Gauge(
            "procvault_released_pane_cases",
            "Noisy case counts of the last released pane (public DP values), by outcome.",
            ["outcome"],
            registry=r,
        )
        self._cases = {k: cases.labels(outcome=k) for k in sorted(PANE_OUTCOMES)}
        violations = Gauge(
            "procvault_released_pane_violations",
            "Noisy violation counts of the last released pane (public DP values), by rule.",
            ["rule"],
            registry=r,
        )
        self._violations = {k: violations.labels(rule=k) for k in sorted({str(x) for x in rules})}

    def partial_rejected(self, n: int = 1) -> None:
        """``n`` pane partials refused (not sealed by this vault, or another DP plan)."""
        self._rejected_partials.inc(n)

    def released(self, kind: str, n: int = 1) -> None:
        """``n`` records of ``kind`` (``pane``, ``window``, ``withheld``) published."""
        child = self._releases.get(kind)
        if child is None:
            _check("kind", kind, RELEASE_KINDS)
        else:
            child.inc(n)

    def set_budget(self, *, spent: float, remaining: float) -> None:
        """The ledger's ε spent and remaining over the current window."""
        self._spent.set(spent)
        self._remaining.set(remaining)

    def observe_released(self, seconds: float) -> None:
        """End-to-end: a pane's latest event sent by its agent → the pane published
        (detailed mode)."""
        if self._e2e is not None:
            self._e2e.labels("released").observe(seconds)

    def observe_release_latency(self, seconds: float) -> None:
        """One release's latency."""
        self._latency.observe(seconds)

    def set_pane_values(
        self, *, cases: Mapping[str, int] | None = None, violations: Mapping[str, int] | None = None
    ) -> None:
        """The last released pane's noisy ``cases`` values (by outcome) and violations (by
        rule id). Keys outside the enumerations raise ``ValueError``."""
        for key, value in (cases or {}).items():
            child = self._cases.get(key)
            if child is None:
                _check("outcome", key, PANE_OUTCOMES)
            else:
                child.set(value)
        for key, value in (violations or {}).items():
            child = self._violations.get(key)
            if child is None:
                _check("rule", key, frozenset(self._violations))
            else:
                child.set(value)


# ----------------------------------------------------------------------------- exposition
def exposition(registry: CollectorRegistry) -> str:
    """The registry in Prometheus' text format (what ``/metrics`` serves)."""
    return generate_latest(registry).decode()


class MetricsServer:
    """A running ``/metrics`` endpoint (see :func:`serve`); :meth:`close` stops it."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.host: str = str(httpd.server_address[0])
        self.port: int = int(httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving (a second call is harmless)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True


def serve(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``registry`` on ``http://host:port/metrics`` from a daemon thread.

    ``port=0`` picks a free port; the returned server's ``port`` is the bound one. Listens on
    the loopback interface unless told otherwise (``0.0.0.0`` in containers).

    >>> from urllib.request import urlopen
    >>> m = AgentMetrics()
    >>> m.events_sent(5)
    >>> with serve(m.registry, 0) as server:
    ...     body = urlopen(server.url, timeout=5).read().decode()
    >>> "procvault_agent_events_sent_total 5.0" in body
    True
    """
    handler = MetricsHandler.factory(registry)
    httpd = _QuietServer((host, port), handler)
    thread = threading.Thread(
        target=httpd.serve_forever, name=f"metrics-{httpd.server_address[1]}", daemon=True
    )
    thread.start()
    return MetricsServer(httpd, thread)


def label_values(registry: CollectorRegistry) -> Iterator[tuple[str, str, str]]:
    """Every ``(sample name, label name, label value)`` the registry exposes (for tests)."""
    for family in registry.collect():
        for sample in family.samples:
            for k, v in sample.labels.items():
                yield sample.name, k, v
