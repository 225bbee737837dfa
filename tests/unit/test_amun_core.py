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
from procvault.monitor.amun.priors import amun_event_epsilons, prior_knowledge
from procvault.monitor.amun.timestamps import strict_times
from procvault.monitor.event import Event

R, V, B, H, D = "Register", "Visit", "Blood Test", "Hospitalize", "Discharge"


# ----------------------------------------------------------------------------- running example
def test_running_example_dafsa_states_and_transitions() -> None:
    log = running_example()
    assert log.variants == ((R, V, B, D), (R, H, B, V, D), (R, V, D), (R, H, V, D))
    dafsa = Dafsa.build(log.variants)
    # Hand-derived minimal DAFSA: suffixes "Discharge", "Visit Discharge" and the states after
    # "Register Visit" / "Register Hospitalize Blood Test" are shared.
    assert dafsa.n_states == 7
    assert [tuple(t) for t in dafsa.transitions] == [
        (0, R, 1),
        (1, H, 2),
        (1, V, 3),
        (2, B, 4),
        (2, V, 5),
        (3, B, 5),
        (3, D, 6),
        (4, V, 5),
        (5, D, 6),
    ]
    assert dafsa.finals == frozenset({6})
    assert dafsa.count_words() == 4


def test_running_example_transition_groups() -> None:
    log = running_example()
    dafsa = Dafsa.build(log.variants)
    groups: dict[int, list[str]] = {}
    for case, v in zip(log.cases, log.variant_of, strict=True):
        for tid in dafsa.path(log.variants[v]):
            groups.setdefault(tid, []).append(case.case_id)
    assert groups == {
        0: ["1", "2", "3", "4", "5", "6"],  # (s0, Register, s1): every case start
        1: ["2", "5", "6"],
        2: ["1", "3", "4"],
        3: ["2", "5"],
        4: ["6"],
        5: ["1", "3"],
        6: ["4"],
        7: ["2", "5"],
        8: ["1", "2", "3", "5", "6"],  # (s5, Discharge, s6): the shared suffix
    }


def test_running_example_filtering_drops_the_cases_a_prior_already_exposes() -> None:
    # At delta = 0.5 a case is dropped when one of its events has p_k >= 0.5. By hand: on
    # (s3, Blood Test, s5) the relative times are 720 s (case 1) and 1800 s (case 3); within
    # 10 s of 1800 s lies half of the group, so p = 0.5 for case 3. Likewise case 2 on
    # (s4, Visit, s5) and case 5 on (s2, Blood Test, s4). The single-event groups of cases 4
    # and 6 get the worst-case prior (1 - 0.5) / 2 = 0.25 and stay.
    log = running_example()
    out = anonymize(log, AnonymizeSettings(delta=0.5, mode="amun", strategy="filtering", seed=3))
    assert out.report.cases_filtered == 3
    kept = {
        log.variants[v]
        for c, v in zip(log.cases, log.variant_of, strict=True)
        if c.case_id in {"1", "4", "6"}
    }
    assert set(out.log.variants) <= kept


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


def test_strict_time_noise_scales_with_case_length_and_copies() -> None:
    rel = SeededReleaser(0)
    times = [(0, 10_000_000, 20_000_000), (0, 5_000_000)]
    out = strict_times(times, [2, 1], rel, epsilon=0.5, start_unit=100.0, gap_unit=10.0)
    assert len(out) == 3  # two copies of the first case, one of the second
    scales = sorted({round(s, 6) for _, s, _ in rel.calls})
    # case 1: 3 events x 2 copies / 0.5 = 12; case 2: 2 x 1 / 0.5 = 4
    assert scales == [40.0, 120.0, 400.0, 1200.0]
    for row in out:
        assert list(row) == sorted(row)  # gaps never negative: order within a case is kept


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
