"""Amun engine: DAFSA, calibration, priors, filtering, sampling, timestamps, metrics."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from test_amun_support import SeededReleaser, running_example

from procvault.monitor.amun import (
    AnonymizeSettings,
    Case,
    CaseLog,
    Dafsa,
    OpenDPReleaser,
    anonymize,
    compare_logs,
    epsilon_for_prior,
    epsilon_worst_case,
    guessing_advantage,
)
from procvault.monitor.amun.priors import (
    amun_event_epsilons,
    case_priors,
    high_risk_cases,
    prior_knowledge,
    relative_seconds,
)
from procvault.monitor.amun.sampling import amun_plan
from procvault.monitor.amun.timestamps import release_time_histograms, synthesize_times
from procvault.monitor.event import Event

A, B, C, D, E = "A", "B", "C", "D", "E"
R = "R"  # an activity the running example does not have

# The running example (tests/fixtures/amun_table1.xes, the paper's Table 1): six cases, four
# variants.
#   1: A B C      2: D A E C      3: A B C      4: D A B C      5: A E C      6: A B C
# Relative times (seconds): a case's first event counts from the earliest case start (case 1),
# every other event from the previous event of its case.
START = {"1": 0, "2": 8_220, "3": 97_800, "4": 103_200, "5": 111_900, "6": 283_200}
GAPS = {
    "1": [1_800, 19_500],
    "2": [7_200, 1_800, 19_440],
    "3": [1_500, 25_200],
    "4": [7_200, 2_400, 19_500],
    "5": [1_800, 108_000],
    "6": [1_620, 22_680],
}
# The minimal DAFSA, derived by hand: the histories "A" and "D A" have the same future
# ({B C, E C}), and every history ending before the final C has the future {C}, so
#   s0 -A-> s1, s0 -D-> s2, s2 -A-> s1, s1 -B-> s3, s1 -E-> s3, s3 -C-> s4 (final).
DAFSA_EDGES = [(0, A, 1), (0, D, 2), (1, B, 3), (1, E, 3), (2, A, 1), (3, C, 4)]
# Prior p_k of every event at delta 0.2 (1 day precision on starts, 10 s on relative times), by
# hand. Every case start is in one group (Sect. 3.5.1): {0, 8220, 97800, 103200, 111900,
# 283200}; within a day of 0 and of 8220 lie two starts (1/3), of the three on the 9th three
# (1/2), of 283200 only itself (1/6). (s2,A,s1) gaps {7200, 7200} and (s1,E,s3) {1800, 1800} are
# constant: the worst-case prior (1 - 0.2)/2 = 0.4. (s1,B,s3) {1800, 1500, 2400, 1620}: all
# further apart than 10 s, 1/4. (s3,C,s4) {19500, 19440, 25200, 19500, 108000, 22680}: cases 1
# and 4 share 19500 (1/3), the others are alone (1/6).
PRIORS = {
    "1": [1 / 3, 1 / 4, 1 / 3],
    "2": [1 / 3, 0.4, 0.4, 1 / 6],
    "3": [1 / 2, 1 / 4, 1 / 6],
    "4": [1 / 2, 0.4, 1 / 4, 1 / 3],
    "5": [1 / 2, 0.4, 1 / 6],
    "6": [1 / 6, 1 / 4, 1 / 6],
}


# ----------------------------------------------------------------------------- running example
def test_running_example_is_the_papers_log() -> None:
    log = running_example()
    assert [c.case_id for c in log.cases] == ["1", "2", "3", "4", "5", "6"]
    assert log.variants == ((A, B, C), (D, A, E, C), (D, A, B, C), (A, E, C))
    assert log.variant_of == (0, 1, 0, 2, 3, 0)
    rel, starts_range = relative_seconds([c.times for c in log.cases])
    for case, r in zip(log.cases, rel, strict=True):
        assert r.tolist() == [START[case.case_id], *GAPS[case.case_id]]
    assert starts_range == 283_200


def test_running_example_dafsa_states_and_transitions() -> None:
    log = running_example()
    dafsa = Dafsa.build(log.variants)
    assert dafsa.n_states == 5
    assert [tuple(t) for t in dafsa.transitions] == DAFSA_EDGES
    assert dafsa.finals == frozenset({4})
    assert dafsa.count_words() == 4
    # every event annotated with (source state, activity, target state)
    annotated = {
        case.case_id: [tuple(dafsa.transitions[t]) for t in dafsa.path(case.activities)]
        for case in log.cases
    }
    assert annotated["2"] == [(0, D, 2), (2, A, 1), (1, E, 3), (3, C, 4)]
    assert annotated["5"] == [(0, A, 1), (1, E, 3), (3, C, 4)]


def test_running_example_transition_groups() -> None:
    log = running_example()
    dafsa = Dafsa.build(log.variants)
    groups: dict[tuple[int, str, int], list[str]] = {}
    for case in log.cases:
        for tid in dafsa.path(case.activities):
            groups.setdefault(dafsa.transitions[tid], []).append(case.case_id)
    assert groups == {
        (0, A, 1): ["1", "3", "5", "6"],  # cases that start with A
        (0, D, 2): ["2", "4"],
        (2, A, 1): ["2", "4"],
        (1, B, 3): ["1", "3", "4", "6"],  # B after A or after D A: one group
        (1, E, 3): ["2", "5"],
        (3, C, 4): ["1", "2", "3", "4", "5", "6"],  # the shared suffix C
    }


def _priors(log: CaseLog, delta: float) -> list[list[float]]:
    dafsa = Dafsa.build(log.variants)
    table = case_priors(
        [c.times for c in log.cases],
        [dafsa.path(c.activities) for c in log.cases],
        delta=delta,
        start_precision=86_400.0,
        relative_precision=10.0,
    )
    return [p.tolist() for p in table.prior]


def test_running_example_priors_and_event_epsilons() -> None:
    log = running_example()
    priors = _priors(log, 0.2)
    assert priors == [pytest.approx(PRIORS[c.case_id]) for c in log.cases]
    # Eq. (3) per event, r = 1 on the min-max normalised range
    eps = amun_event_epsilons(np.array(PRIORS["4"]), 0.2)
    assert eps.tolist() == pytest.approx([epsilon_for_prior(0.2, p) for p in PRIORS["4"]])
    assert eps.round(4).tolist() == [0.8473, 0.8109, 0.8979, 0.8267]


@pytest.mark.parametrize(
    ("delta", "dropped"),
    [
        (0.2, set()),  # highest prior 1/2: 1/2 + 0.2 < 1
        (0.4, set()),
        (0.5, {"3", "4", "5"}),  # every case with an event of prior 1/2 (their starts)
        (0.6, {"3", "4", "5"}),
        (0.7, {"1", "2", "3", "4", "5"}),  # 1/3 + 0.7 >= 1; case 6's highest prior is 1/4
        # every case has an event with p_k >= 1/4: the prototype then drops only p_k = 1 cases
        (0.75, set()),
    ],
)
def test_running_example_case_filtering(delta: float, dropped: set[str]) -> None:
    log = running_example()
    risky = high_risk_cases([np.array(p) for p in _priors(log, delta)], delta)
    assert {c.case_id for c, r in zip(log.cases, risky, strict=True) if r} == dropped
    out = anonymize(log, AnonymizeSettings(delta=delta, mode="amun", strategy="filtering", seed=1))
    assert out.report.cases_filtered == len(dropped)
    kept = {c.activities for c in log.cases if c.case_id not in dropped}
    assert set(out.log.variants) <= kept


@pytest.mark.parametrize("strategy", ["sampling", "filtering", "oversampling"])
@pytest.mark.parametrize("seed", range(5))
def test_running_example_release_r1_fresh_ids_same_seed(strategy: str, seed: int) -> None:
    log = running_example()
    settings = AnonymizeSettings(delta=0.3, mode="amun", strategy=strategy, seed=seed)
    out = anonymize(log, settings)
    assert set(out.log.variants) <= set(log.variants)  # R1
    ids = [c.case_id for c in out.log.cases]
    assert len(ids) == len(set(ids))
    assert not set(ids) & {c.case_id for c in log.cases}
    assert all(len(i) == 16 for i in ids)
    assert anonymize(log, settings).log == out.log
    for c in out.log.cases:
        assert list(c.times) == sorted(c.times)


# ----------------------------------------------------------------------------- calibration
@pytest.mark.parametrize("delta", [0.05, 0.2, 0.3, 0.4, 0.9])
def test_worst_case_epsilon_is_the_minimum_over_priors(delta: float) -> None:
    eps = epsilon_worst_case(delta)
    assert eps == pytest.approx(epsilon_for_prior(delta, (1 - delta) / 2))
    for p in np.linspace(0.01, 0.99, 99):
        assert epsilon_for_prior(delta, float(p)) >= eps - 1e-12
        assert guessing_advantage(eps, float(p)) <= delta + 1e-12


def test_paper_epsilons() -> None:
    # the epsilons SaCoFa/PRIPEL were run with in the paper's comparison for delta 0.2/0.3/0.4
    assert [round(epsilon_worst_case(d), 3) for d in (0.2, 0.3, 0.4)] == [0.811, 1.238, 1.695]


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_delta_outside_open_unit_interval_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match=r"delta .* must be in \(0, 1\)"):
        AnonymizeSettings(delta=bad)


def test_settings_refuse_nondp_strategies_in_strict_mode() -> None:
    with pytest.raises(ValueError, match="strict mode supports strategy 'sampling' only"):
        AnonymizeSettings(delta=0.2, strategy="filtering")
    with pytest.raises(ValueError, match="mode must be one of"):
        AnonymizeSettings(delta=0.2, mode="lax")
    with pytest.raises(ValueError, match="time_share"):
        AnonymizeSettings(delta=0.2, time_share=1.0)


def test_single_case_log_is_refused() -> None:
    t = datetime(2024, 1, 1, tzinfo=UTC)
    log = CaseLog.from_events([Event.create("only", "A", t), Event.create("only", "B", t)])
    for mode in ("strict", "amun"):
        with pytest.raises(ValueError, match="needs at least 2"):
            anonymize(log, AnonymizeSettings(delta=0.2, mode=mode))


# ----------------------------------------------------------------------------- priors
def test_prior_of_constant_group_is_worst_case_and_epsilon_corner_cases() -> None:
    table = prior_knowledge(
        np.array([5.0, 5.0, 5.0]), np.zeros(3, dtype=np.int64), np.full(3, 10.0), delta=0.3
    )
    assert table.prior.tolist() == pytest.approx([0.35] * 3)
    eps = amun_event_epsilons(np.array([0.35, 0.0, 0.7]), 0.3)
    assert eps[0] == pytest.approx(epsilon_worst_case(0.3))
    assert eps[1:].tolist() == [10.0, 0.7]  # prototype constants for p = 0 and p + delta >= 1


# ----------------------------------------------------------------------------- strict mode
def test_strict_threshold_is_proved_by_opendp() -> None:
    out = anonymize(running_example(), AnonymizeSettings(delta=0.3), releaser=SeededReleaser(1))
    r = out.report
    assert r.epsilon_control_flow + r.epsilon_time == pytest.approx(epsilon_worst_case(0.3))
    assert r.threshold is not None
    eps, dlt = OpenDPReleaser().histogram_privacy(
        scale=1 / r.epsilon_control_flow, threshold=r.threshold
    )
    assert eps <= r.epsilon_control_flow * (1 + 1e-9)
    assert dlt <= 1e-6
    # six cases cannot clear a threshold of that size: strict mode releases nothing here
    assert out.log.cases == ()


def test_strict_time_histograms_scale_with_the_longest_released_variant() -> None:
    rel = SeededReleaser(0)
    t0 = 1_700_000_000
    cases = [
        ((A, B, C), (t0 * 1_000_000, (t0 + 60) * 1_000_000, (t0 + 660) * 1_000_000)),
        ((A, C), (t0 * 1_000_000, (t0 + 30) * 1_000_000)),
        ((D, E, A, B, C), tuple((t0 + 10 * i) * 1_000_000 for i in range(5))),  # not released
    ]
    hist = release_time_histograms(
        cases,
        {(A, B, C), (A, C)},
        releaser=rel,
        window=(t0, t0 + 86_400),
        start_unit=86_400.0,
        gap_unit=10.0,
        epsilon_start=0.25,
        epsilon_gap=0.5,
    )
    # starts: one count per case, scale 1/0.25; gaps: the longest released variant has 2 gaps,
    # so one case moves the gap histograms by 2 in L1: scale 2/0.5
    assert [(kind, scale) for kind, scale, _ in rel.calls] == [("vector", 4.0), ("vector", 4.0)]
    assert hist.start_scale == 4.0 and hist.gap_scale == 4.0
    assert set(hist.gap_counts) == {(A, B), (B, C), (A, C)}  # edges of released variants only
    assert rel.calls[1][2] == 3 * (len(hist.gap_edges) - 1)
    times = synthesize_times(hist, (A, B, C), rel.coins())
    assert len(times) == 3 and list(times) == sorted(times)
    assert all(t % 1_000_000 == 0 for t in times)  # whole seconds


def test_strict_release_with_opendp_on_a_log_with_frequent_variants() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    events = [
        Event.create(f"c{i}", a, t0 + timedelta(days=i % 30, minutes=10 * j))
        for i in range(300)
        for j, a in enumerate(("A", "B", "C") if i % 3 else ("A", "C"))
    ]
    log = CaseLog.from_events(events)
    out = anonymize(log, AnonymizeSettings(delta=0.4, seed=5))
    assert set(out.log.variants) <= set(log.variants)
    assert 150 < len(out.log.cases) < 450
    assert not {c.case_id for c in out.log.cases} & {c.case_id for c in log.cases}


# ----------------------------------------------------------------------------- metrics
def test_compare_identity_and_r1_detection() -> None:
    log = running_example()
    same = compare_logs(log, log)
    assert (same.emd_freq, same.emd_time, same.mae_freq, same.mae_time_hours) == (0, 0, 0, 0)
    assert same.variants_lost == 0 and same.r1_holds
    odd = CaseLog.from_cases([Case("x", (R, D), (0, 1))])
    report = compare_logs(log, odd)
    assert report.new_variants == 1 and not report.r1_holds
    assert report.variants_lost == 4


# ----------------------------------------------------------------------------- sampling net
def test_amun_net_paper_applies_the_whole_net_prototype_at_most_one_deletion() -> None:
    variants = (("a", "b", "c"), ("a", "c"), ("b", "c"))
    dafsa = Dafsa.build(variants)
    paths = [dafsa.path(v) for v in variants]
    variant_of = [i % 3 for i in range(90)]
    most_lost = {True: 0, False: 0}
    for seed in range(20):
        for proto in (True, False):
            copies = amun_plan(
                variant_of,
                paths,
                len(dafsa.transitions),
                epsilon=0.1,
                rng=np.random.default_rng(seed),
                prototype=proto,
            ).copies
            zero = [v for c, v in zip(copies, variant_of, strict=True) if c == 0]
            lost = [zero.count(k) for k in range(3)]
            most_lost[proto] = max(most_lost[proto], *lost)
    assert most_lost[True] <= 1  # the prototype deletes one case per under-sampled variant
    assert most_lost[False] >= 2  # the paper deletes as many as the net asks


def test_amun_net_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="amun_net must be 'paper' or 'prototype'"):
        AnonymizeSettings(delta=0.2, mode="amun", amun_net="pandas")
