"""One test per finding of issue 21 that this module defends (items 1-3 and 6, the threshold's
δ, and a crash one case could cause), each on the vault worker's DP path (:mod:`neighbours`)
or on the piece that had the bug.

The other findings have their tests where their code is: exact counts beside the noise
(item 4) in ``test_metrics.py::test_by_default_nothing_exported_counts_the_data``; released
once (item 5) in ``test_release_engine.py`` (``..._noised_once_and_republished_with_the_same
_bytes_after_a_restart``, ``..._state_was_lost_continues_after_what_was_published``) and the
integration tests of the release stage; strict mode (item 7) in
``test_amun_strict_privacy.py``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from neighbours import DP, KNOWN, START, Deployment, Ev, run

from procvault.config.dp import load_dp_policy
from procvault.monitor.errors import ConfigError
from procvault.monitor.event import Event, EventKind
from procvault.monitor.privacy.budget import Budget
from procvault.monitor.privacy.mechanisms import threshold_delta, threshold_measurement
from procvault.monitor.privacy.panes import PaneAggregate, PaneClock
from procvault.monitor.privacy.plan import ReleasePlan
from procvault.monitor.privacy.settings import (
    KnownKeys,
    PaneSettings,
    PrivacySettings,
    StatisticSettings,
)
from procvault.monitor.vault import Vault, VaultSettings

END = EventKind.CASE_END
PLACEHOLDER = EventKind.PLACEHOLDER


def _total(panes: dict[int, PaneAggregate], statistic: str, key: tuple[str, ...]) -> int:
    return sum(p.statistic(statistic).get(key, 0) for p in panes.values())


def _touched(panes: dict[int, PaneAggregate]) -> list[int]:
    return sorted(i for i, p in panes.items() if p.values)


# -- 1. caps no case escapes ----------------------------------------------------------------
def test_placeholders_after_a_cases_completion_open_no_fresh_case() -> None:
    """The audit: with k = 2, placeholders after the case's marker reached 8 panes and
    counted ``started`` 4 times. Now whatever arrives after completion counts nothing."""
    events = [
        Ev("t", "a", 3, "A"),
        Ev("t", "a", 5, None, END),
        *(Ev("t", "ab"[m % 2], m, None, PLACEHOLDER) for m in (15, 25, 35, 45, 55, 65)),
        Ev("t", "b", 75, None, END),
    ]
    panes = run(events, (), Deployment(close=35))
    assert _total(panes, "cases", ("started",)) == 1
    assert _total(panes, "activity", ("pv:withheld",)) == 0
    assert len(_touched(panes)) <= DP.max_panes_per_case


# -- 2. a case's contribution depends on that case alone ------------------------------------
def test_idle_completions_are_filed_at_their_cases_own_time() -> None:
    """The audit: one event of the target filed 50 other cases' completions one pane earlier
    (completions went under the time that moved the clock). Each completion is filed in the
    pane of its case's last event plus the idle timeout, however far the clock moved in one
    step (here 30 minutes: both cases complete in the same step, in two panes)."""
    idle = 15
    deployment = Deployment(step=30, batches=6, close=None, idle_timeout=idle)
    clock = PaneClock(DP.panes)
    others = [Ev("o1", "a", 2, "A"), Ev("o2", "a", 8, "A")]
    for events in (others, [*others, Ev("t", "a", 29, "A")]):
        panes = run(events, (), deployment)
        for e in others:
            due = clock.index(START + timedelta(minutes=e.minute + idle))
            assert panes[due].statistic("cases").get(("completed_unfit",)) == 1, due
        assert _total(panes, "cases", ("completed_unfit",)) == len(events)


def test_an_event_dated_beyond_the_skew_is_refused_and_moves_nothing() -> None:
    """The audit: one future-dated event dropped 45 of 50 other events and closed 101 panes
    instead of 4. It is refused (counted as ``future``); the others count; the same panes
    are released."""
    crowd = [Ev(f"o{i}", "a", 27 + i % 3, "B") for i in range(10)]
    far = Ev("t", "a", 24 * 60, "A", ahead=24 * 60 - 20)  # a day ahead, sent at minute 20
    with_it, without_it = run([*crowd, far]), run(crowd)
    assert sorted(with_it) == sorted(without_it)
    assert with_it == without_it  # refused: it counts nowhere
    assert _total(with_it, "activity", ("B",)) == 10


def test_an_event_dated_ahead_within_the_skew_does_not_refuse_other_cases_events() -> None:
    """Within the skew an event is taken, but its merge key must not move the organization's
    stream on: before the fix, the ten other cases' events of the next minutes were refused
    as ``resent``."""
    crowd = [Ev(f"o{i}", "a", 27 + i % 3, "B") for i in range(10)]
    near = Ev("t", "a", 30, "A", ahead=4)  # sent at minute 26, dated 30 (skew: 5 minutes)
    with_it = run([*crowd, near])
    assert _total(with_it, "activity", ("B",)) == 10
    assert _total(with_it, "activity", ("A",)) == 1


@pytest.mark.parametrize("idle", [15, None])
def test_the_end_of_a_finite_stream_releases_the_same_panes_with_or_without_a_late_case(
    idle: int | None,
) -> None:
    """The audit: the flush filed every remaining completion under the latest event, and it
    released panes up to the latest observation, so the target's last event moved them. The
    flush closes panes up to the clock plus the idle timeout: a public bound."""
    others = [Ev("c1", "a", 1, "A"), Ev("c1", "b", 8, "B"), Ev("c2", "a", 20, "A")]
    target = [Ev("t", "a", 84, "A"), Ev("t", "b", 88, "B")]
    deployment = Deployment(partitions=1, close=30, idle_timeout=idle)
    with_it, without_it = run([*others, *target], (), deployment), run(others, (), deployment)
    assert sorted(with_it) == sorted(without_it)
    clock = PaneClock(DP.panes)
    # the clock stops at the agents' last promise: the wall clock when they close (minute 90)
    last = clock.index(START + timedelta(minutes=30 * 3 + (idle or 0)))
    assert max(with_it) == last
    assert min(with_it) == clock.index(START)


def test_a_case_with_two_events_at_its_last_time_completes_once() -> None:
    """Found by the neighbouring-stream suite: a case whose last two events share a time was
    due twice for its idle completion, and the vault crashed on the second (``KeyError``)."""
    from seqnet import sequence_net

    vault = Vault(sequence_net("ABC"), VaultSettings(idle_timeout=timedelta(minutes=10)))
    for _ in range(2):
        vault.update(Event.create("c0", "A", START + timedelta(minutes=1)))
    done = vault.tick(START + timedelta(minutes=30)).completed
    assert [r.case_id for r in done] == ["c0"]


# -- 3. a public pane schedule --------------------------------------------------------------
def test_the_schedule_starts_at_the_public_start_whatever_the_first_event() -> None:
    """Which panes exist depends on the schedule only: from the policy's start, empty panes
    included, however late the first event comes."""
    clock = PaneClock(DP.panes)
    early, late = run([Ev("c", "a", 1, "A")]), run([Ev("c", "a", 61, "A")])
    assert sorted(early) == sorted(late)
    assert min(early) == clock.index(START)
    assert sorted(early) == list(range(min(early), max(early) + 1))


def test_the_vault_and_the_release_stage_need_a_public_start(tmp_path: Path) -> None:
    """``panes.start: auto`` (the first pane with data) is refused where it would be
    released; offline evaluations may still use it."""
    text = (
        "version: 1\nbudget: {epsilon: 1.0, window: 4}\n"
        "panes: {length: 1h, max_panes_per_case: 2}\nstatistics: {cases: {}}\n"
        "running_totals: null\nwindows: [1h]\n"
    )
    policy = tmp_path / "dp.yaml"
    policy.write_text(text)
    assert load_dp_policy(policy).panes.start is None
    with pytest.raises(ConfigError, match=r"^dp.yaml: panes.start: required by the vault"):
        load_dp_policy(policy, require_start=True)
    policy.write_text(text.replace("case: 2}", "case: 2, start: 2024-01-01T00:00:00Z}"))
    assert load_dp_policy(policy, require_start=True).panes.start is not None
    for shipped in ("default.yaml", "process_map.yaml"):
        path = Path(__file__).parents[2] / "policies" / "dp" / shipped
        assert load_dp_policy(path, require_start=True).panes.start is not None


# -- 6. one plan ------------------------------------------------------------------------------
def test_the_plan_fingerprint_changes_with_every_cap_and_nothing_else() -> None:
    """A vault with larger caps than the release stage's must be refused: the fingerprint the
    partials carry covers the caps, the pane length, the statistics and the known keys."""
    base = ReleasePlan.build(DP, KNOWN).fingerprint()
    assert ReleasePlan.build(DP, KNOWN).fingerprint() == base
    variants = [
        replace(DP, max_panes_per_case=3),
        replace(DP, panes=replace(DP.panes, length=timedelta(minutes=5))),
        replace(
            DP,
            statistics=tuple(
                replace(s, max_keys=3) if s.name == "activity" else s for s in DP.statistics
            ),
        ),
        replace(DP, statistics=tuple(s for s in DP.statistics if s.name != "df_duration")),
        replace(DP, budget=Budget(2.0, window=3, delta=1e-6)),
    ]
    prints = {ReleasePlan.build(v, KNOWN).fingerprint() for v in variants}
    prints.add(ReleasePlan.build(DP, KnownKeys.build(["A", "B"])).fingerprint())
    assert base not in prints and len(prints) == len(variants) + 1


# -- the thresholds' δ ---------------------------------------------------------------------
def test_opendps_threshold_map_understates_delta_and_the_plan_uses_the_exact_one() -> None:
    """OpenDP keeps a noisy count equal to the threshold but leaves that mass out of its δ:
    measured with its own sampler, a key of count 1 at scale 1 and τ = 3 survives at
    e^-2 / (1 + e^-1) = 0.0989, not the 0.0364 its map reports. The plan's thresholds meet the
    exact δ (before, they were the smallest OpenDP's map accepts: one lower)."""
    meas = threshold_measurement(1.0, 3)
    n = 20_000
    kept = len(meas({f"k{i}": 1 for i in range(n)}))
    rate = kept / n
    exact = math.exp(-2) / (1 + math.exp(-1))
    se = math.sqrt(exact * (1 - exact) / n)
    assert abs(rate - exact) < 6 * se
    assert float(meas.map((1, 1, 1))[1]) < exact - 6 * se  # OpenDP's own δ is too small
    assert threshold_delta(1.0, 3, (1, 1, 1)) == pytest.approx(exact, rel=1e-9)
    settings = PrivacySettings(
        Budget(1.0, window=24, delta=1e-6),
        PaneSettings(timedelta(hours=1)),
        statistics=(StatisticSettings("activity", max_keys=2), StatisticSettings("cases")),
        running_totals=None,
    )
    plan = ReleasePlan.build(settings, KnownKeys.build(["A", "B"]))
    spec = plan.spec("activity")
    assert spec.threshold is not None
    d_in = (spec.max_keys, spec.sensitivity, spec.linf)
    q = math.exp(-1 / spec.scale)

    def exact_delta(tau: int) -> float:
        p = q ** (tau - spec.linf) / (1 + q)
        return 1 - (1 - p) ** spec.max_keys

    assert exact_delta(spec.threshold) <= spec.delta < exact_delta(spec.threshold - 1)
    assert threshold_delta(spec.scale, spec.threshold, d_in) <= spec.delta
