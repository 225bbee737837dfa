"""Statistical and privacy properties of what is published.

OpenDP draws from the operating system's CSPRNG and cannot be seeded (by design: a seed would
let its holder subtract the noise), so the statistical checks use many fresh draws and
tolerances of 6 standard errors: a correct mechanism fails one of them with probability below
1e-8.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from procvault.monitor.event import Event
from procvault.monitor.privacy import (
    Budget,
    DeterministicReleaser,
    KnownKeys,
    OpenDPReleaser,
    PaneAccumulator,
    PaneAggregate,
    PaneClock,
    PaneRecord,
    PaneReleaser,
    PaneSettings,
    PrivacySettings,
    ReleasePlan,
    RunningTotals,
    WindowRecord,
    encode_record,
)
from procvault.monitor.privacy.plan import MechanismSpec
from procvault.monitor.vault import CaseResult

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
KNOWN = KnownKeys.build("ABCD", rules=["R1", "R2"])
SIGMAS = 6.0


@cache
def _plan(eps: float = 1.0, w: int = 4, delta: float = 1e-6) -> ReleasePlan:
    s = PrivacySettings(
        Budget(eps, window=w, delta=delta),
        PaneSettings(HOUR),
        running_totals=RunningTotals(("cases", "activity"), levels=12),
        windows=(2 * HOUR,),
    )
    return ReleasePlan.build(s, KNOWN)


def _check_noise(samples: list[int], spec: MechanismSpec) -> None:
    n = len(samples)
    mean = sum(samples) / n
    var = sum((x - mean) ** 2 for x in samples) / (n - 1)
    sd = math.sqrt(spec.variance)
    assert abs(mean) <= SIGMAS * sd / math.sqrt(n), (spec.name, mean)
    # discrete Laplace: excess kurtosis ≈ 3, so Var(s²) ≈ σ⁴ (κ - 1) / n = 5 σ⁴ / n
    assert abs(var - spec.variance) <= SIGMAS * spec.variance * math.sqrt(5 / n), (
        spec.name,
        var,
        spec.variance,
    )


def test_every_mechanism_draws_the_configured_noise() -> None:
    plan = _plan()
    releaser = OpenDPReleaser(plan)
    for spec in plan.mechanisms():
        _check_noise(releaser.vector(spec.name, [0] * 20_000), spec)


def test_released_panes_carry_the_configured_noise_per_statistic() -> None:
    """Empty panes through the whole engine: every released value is pure noise, whose
    variance must match its statistic's mechanism. A running total after pane t is the total
    after pane t - 2^i (i: t's lowest set bit) plus the node drawn fresh at t."""
    plan = _plan()
    rel = PaneReleaser(plan, OpenDPReleaser(plan))
    clock = PaneClock(plan.settings.panes)
    noise: dict[str, list[int]] = {s.name: [] for s in plan.statistics}
    totals: dict[int, list[int]] = {0: [0] * len(plan.totals_keys)}
    for i in range(1500):
        (rec, *_) = rel.release(PaneAggregate.empty(clock.pane(i)))
        assert isinstance(rec, PaneRecord)
        for stat in rec.statistics:
            noise[stat.name].extend(e.value for e in stat.known)
            assert not stat.other  # no key appears out of nothing
        assert rec.totals is not None
        totals[rec.totals.panes] = [e.value for e in rec.totals.entries]
    for spec in plan.statistics:
        _check_noise(noise[spec.name], spec)
    assert plan.totals is not None
    fresh = [
        now - before
        for t in range(1, len(totals))
        for now, before in zip(totals[t], totals[t - (t & -t)], strict=True)
    ]
    _check_noise(fresh, plan.totals)


def test_the_threshold_releases_with_the_right_probability() -> None:
    plan = _plan(eps=40.0, w=1, delta=1e-3)
    spec = plan.spec("activity")
    assert spec.threshold is not None
    tau, q = spec.threshold, math.exp(-1.0 / spec.scale)
    releaser = OpenDPReleaser(plan)
    n = 20_000
    for count in (tau - 3, tau, tau + 2):
        released = releaser.threshold("activity", {f"k{i}": count for i in range(n)})
        k = tau - count  # P(count + Z >= tau) = P(Z >= k)
        p = q**k / (1 + q) if k > 0 else 1 - q ** (1 - k) / (1 + q)
        assert abs(len(released) / n - p) <= SIGMAS * math.sqrt(p * (1 - p) / n)
        assert all(v >= tau for v in released.values())


# ---------------------------------------------------------------------------- privacy
_case_ids = st.text("0123456789abcdef", min_size=12, max_size=12).map(lambda s: f"case-{s}")
_stream = st.lists(
    st.tuples(
        _case_ids,
        st.sampled_from(["A", "B", "C", "D", "Xq", "Yq"]),
        st.integers(0, 5 * 60),
        st.booleans(),
    ),
    min_size=1,
    max_size=80,
)

_FIELDS = {
    "kind",
    "schema",
    "pane",
    "index",
    "start",
    "end",
    "epsilon",
    "delta",
    "budget",
    "window",
    "advantage",
    "unit",
    "allocation",
    "max_panes_per_case",
    "totals_epsilon",
    "mechanisms",
    "name",
    "mechanism",
    "scale",
    "sensitivity",
    "max_keys",
    "linf",
    "threshold",
    "statistics",
    "known",
    "other",
    "totals",
    "panes",
    "entries",
    "first_pane",
    "last_pane",
    "withheld_panes",
    "reason",
}


def _field_names(doc: Any) -> set[str]:
    if isinstance(doc, dict):
        return set(doc) | {n for v in doc.values() for n in _field_names(v)}
    if isinstance(doc, list):
        return {n for v in doc for n in _field_names(v)}
    return set()


def _publish(raw: list[tuple[str, str, int, bool]], releaser: Any, plan: ReleasePlan) -> list[Any]:
    acc = PaneAccumulator(plan.settings, plan.known)
    rel = PaneReleaser(plan, releaser)
    out: list[Any] = []
    seen: set[str] = set()
    for case, act, minute, violates in sorted(raw, key=lambda r: r[2]):
        ts = T0 + timedelta(minutes=minute)
        for agg in acc.observe_event(Event.create(case, act, ts)):
            out.extend(rel.release(agg))
        if violates:
            acc.observe_violation("R1", case, ts)
        seen.add(case)
    for case in sorted(seen):
        acc.observe_completed(CaseResult(case, 1, 1, 1, 0, 0, 1.0, True, 0, "flush"), ts)
    for agg in acc.flush():
        out.extend(rel.release(agg))
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_stream)
def test_no_record_holds_a_case_id_a_raw_count_or_a_data_dependent_epsilon(
    raw: list[tuple[str, str, int, bool]],
) -> None:
    plan = _plan()
    records = _publish(raw, OpenDPReleaser(plan), plan)
    reference = _publish([("case-000000000000", "A", 0, False)], DeterministicReleaser(plan), plan)
    privacy = {
        (
            json.dumps(r["epsilon"]),
            json.dumps(r["delta"]),
            json.dumps(r["budget"]),
            json.dumps(r["mechanisms"]),
        )
        for r in (json.loads(encode_record(x)) for x in reference)
        if r["kind"] == "pane"
    }
    thresholds = {m.name: m.threshold for m in plan.statistics}
    for record in records:
        blob = encode_record(record)
        assert not any(case.encode() in blob for case, *_ in raw), "a case id was published"
        doc = json.loads(blob)
        assert _field_names(doc) <= _FIELDS  # no per-event epsilon, no count of suppressed keys
        if isinstance(record, PaneRecord):
            key = (
                json.dumps(doc["epsilon"]),
                json.dumps(doc["delta"]),
                json.dumps(doc["budget"]),
                json.dumps(doc["mechanisms"]),
            )
            assert key in privacy  # identical for any data
            for stat in record.statistics:
                tau = thresholds[stat.name]
                assert tau is not None or not stat.other
                assert all(tau is not None and e.value >= tau for e in stat.other)


@settings(max_examples=40, deadline=None)
@given(_stream)
def test_every_published_number_went_through_the_releaser(
    raw: list[tuple[str, str, int, bool]],
) -> None:
    """With a stand-in that adds 10^9 to every draw, no published count can be below 10^9:
    nothing exact bypasses the noise (and a key not known in advance appears only after its
    threshold test)."""
    plan = _plan()
    offset = 10**9
    for record in _publish(raw, DeterministicReleaser(plan, offset=offset), plan):
        if isinstance(record, PaneRecord | WindowRecord):
            for stat in record.statistics:
                assert all(e.value >= offset for e in stat.known + stat.other)
        if isinstance(record, PaneRecord) and record.totals is not None:
            assert all(e.value >= offset for e in record.totals.entries)
