"""Differentially private release of an event log from a guessing-advantage bound δ.

:func:`anonymize` turns a :class:`~procvault.monitor.amun.cases.CaseLog` into another one whose
cases carry fresh random ids, only activities and timestamps, only variants of the input
(requirement R1), and noisy timestamps. Two modes:

``Mode.AMUN``
    The published method (Elkoumy, Pankova, Dumas 2023), for comparison: minimal DAFSA, per-event
    priors and ε_t from the raw log, per-transition Laplace sampling with ε_d, floating-point
    noise from numpy, timestamp compression. Reproducible from ``seed``.
``Mode.STRICT`` (default)
    The same goal with the flaws fixed: a per-case budget ε = 2 ln((1+δ)/(1-δ)) split between
    control flow and time, the variant counts (sensitivity 1 per case) released through OpenDP's
    Laplace-threshold histogram, timestamps with OpenDP discrete Laplace scaled by each case's
    length and copies, nothing calibrated on raw data. ``seed`` fixes the sampling choices and
    ids; the noise is fresh on every run.

See ``docs/anonymize.md`` for what each mode guarantees and what it does not.

Examples
--------
>>> from datetime import datetime, UTC, timedelta
>>> from procvault.monitor.event import Event
>>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
>>> evs = [Event.create(f"c{i}", a, t0 + timedelta(hours=i, minutes=j))
...        for i in range(40) for j, a in enumerate(("R", "V", "D") if i % 2 else ("R", "D"))]
>>> s = AnonymizeSettings(delta=0.2, mode="amun", seed=7)
>>> out = anonymize(CaseLog.from_events(evs), s)
>>> set(out.log.variants) <= {("R", "V", "D"), ("R", "D")}
True
>>> out.log == anonymize(CaseLog.from_events(evs), s).log
True
>>> AnonymizeSettings(delta=1.5)
Traceback (most recent call last):
...
ValueError: delta (the guessing-advantage bound) must be in (0, 1), got 1.5
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .calibration import check_delta, epsilon_worst_case
from .cases import Case, CaseLog
from .dafsa import Dafsa
from .noise import OpenDPReleaser, Releaser
from .priors import CasePriors, amun_event_epsilons, case_priors, high_risk_cases
from .sampling import amun_plan, strict_plan
from .timestamps import amun_times, strict_times

__all__ = ["AnonymizeSettings", "Mode", "Release", "ReleaseReport", "Strategy", "anonymize"]

_US = 1_000_000


class Mode(enum.StrEnum):
    """Which method to run."""

    #: Per-case DP with the published method's flaws fixed (default).
    STRICT = "strict"
    #: The published method, reproduced for comparison.
    AMUN = "amun"


class Strategy(enum.StrEnum):
    """How case counts are perturbed."""

    #: Replicate and delete cases (Amun_s).
    SAMPLING = "sampling"
    #: Drop high-risk cases (``p_k + δ >= 1``) first, then sample (Amun_f). Amun mode only.
    FILTERING = "filtering"
    #: Positive noise only, replicas but no deletions (Amun_o). Amun mode only.
    OVERSAMPLING = "oversampling"


@dataclass(frozen=True, kw_only=True)
class AnonymizeSettings:
    """Every setting of one release, checked once here.

    Parameters
    ----------
    delta
        Bound on the attacker's guessing advantage, in (0, 1).
    mode
        :class:`Mode` (or its name).
    strategy
        :class:`Strategy` (or its name); strict mode supports ``sampling`` only.
    seed
        Seeds the sampling choices and new case ids (and, in amun mode, the noise).
    start_precision
        Seconds. Amun: the attacker's precision for case starts (paper: 1 day). Strict: the
        distance within which two start times of a case are ε-indistinguishable.
    relative_precision
        Seconds. The same for the time between consecutive events (paper: 10 s).
    time_share
        Strict: the share of ε spent on timestamps (the rest goes to the variant counts).
    suppression_delta
        Strict: the δ of the variant threshold (probability that a variant of one case shows).
    amun_net
        Amun: how the per-transition replications and deletions become copies per variant.
        ``"paper"``: every variant's net (replications minus deletions) is applied.
        ``"prototype"``: as the prototype's pandas code does it: a variant only replicated or
        only deleted is left alone, and a negative net deletes one case. The paper's Table 6
        figures were produced by the prototype (see ``docs/anonymize.md``).
    """

    delta: float
    mode: Mode | str = Mode.STRICT
    strategy: Strategy | str = Strategy.SAMPLING
    seed: int = 0
    start_precision: float = 86_400.0
    relative_precision: float = 10.0
    time_share: float = 0.5
    suppression_delta: float = 1e-6
    amun_net: str = "paper"

    def __post_init__(self) -> None:
        check_delta(self.delta)
        try:
            object.__setattr__(self, "mode", Mode(self.mode))
        except ValueError:
            raise ValueError(
                f"mode must be one of {[m.value for m in Mode]}, got {self.mode!r}"
            ) from None
        try:
            object.__setattr__(self, "strategy", Strategy(self.strategy))
        except ValueError:
            raise ValueError(
                f"strategy must be one of {[s.value for s in Strategy]}, got {self.strategy!r}"
            ) from None
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        for name in ("start_precision", "relative_precision"):
            value = getattr(self, name)
            if not value > 0 or math.isinf(value):
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")
        if not 0.0 < self.time_share < 1.0:
            raise ValueError(f"time_share must be in (0, 1), got {self.time_share}")
        if self.amun_net not in ("paper", "prototype"):
            raise ValueError(f"amun_net must be 'paper' or 'prototype', got {self.amun_net!r}")
        if not 0.0 < self.suppression_delta < 1.0:
            raise ValueError(f"suppression_delta must be in (0, 1), got {self.suppression_delta}")
        if self.mode is Mode.STRICT and self.strategy is not Strategy.SAMPLING:
            raise ValueError(
                f"strict mode supports strategy 'sampling' only: '{self.strategy}' is not "
                "differentially private (filtering drops cases by a test on other cases' data, "
                "oversampling never lowers a count); use mode 'amun' to reproduce it"
            )

    @property
    def epsilon(self) -> float:
        """The per-case ε that bounds the advantage of any attacker by δ (worst-case prior)."""
        return epsilon_worst_case(self.delta)


@dataclass(frozen=True)
class ReleaseReport:
    """What happened, for the operator (never written into the released log).

    In amun mode ``epsilon_time`` is the median per-event ε_t, which depends on the raw data.
    """

    mode: str
    strategy: str
    cases_in: int
    events_in: int
    variants_in: int
    dafsa_states: int
    dafsa_transitions: int
    cases_out: int
    events_out: int
    variants_out: int
    cases_filtered: int
    epsilon_control_flow: float
    epsilon_time: float
    threshold: int | None
    suppression_delta: float | None


@dataclass(frozen=True)
class Release:
    """The anonymized log and the report."""

    log: CaseLog
    report: ReleaseReport


def _fresh_ids(n: int, taken: set[str], rng: np.random.Generator) -> list[str]:
    out: list[str] = []
    seen = set(taken)
    while len(out) < n:
        for word in rng.integers(0, 2**63 - 1, size=n - len(out), dtype=np.int64).tolist():
            cid = f"{word:016x}"
            if cid not in seen:
                seen.add(cid)
                out.append(cid)
    return out


def anonymize(
    log: CaseLog,
    settings: AnonymizeSettings,
    *,
    releaser: Releaser | None = None,
    progress: Callable[[str], None] | None = None,
) -> Release:
    """Release ``log`` under ``settings``.

    Parameters
    ----------
    log
        The input cases.
    settings
        Checked settings.
    releaser
        Noise source for strict mode; default :class:`OpenDPReleaser`. Tests pass a seeded
        stand-in. Ignored in amun mode.
    progress
        Called with the name of each stage as it starts.

    Raises
    ------
    ValueError
        If the log has fewer than two cases, or filtering would remove every case.
    """
    step = progress or (lambda _stage: None)
    if len(log.cases) < 2:
        raise ValueError(
            f"the log has {len(log.cases)} case(s): a release that protects each case "
            "needs at least 2"
        )
    rng = np.random.default_rng(settings.seed)
    step("dafsa")
    dafsa = Dafsa.build(log.variants)
    paths = [dafsa.path(v) for v in log.variants]
    if settings.mode is Mode.AMUN:
        out_cases, report_extra = _amun(log, dafsa, paths, settings, rng, step)
    else:
        out_cases, report_extra = _strict(log, settings, releaser or OpenDPReleaser(), rng, step)
    step("ids")
    ids = _fresh_ids(len(out_cases), {c.case_id for c in log.cases}, rng)
    renamed = [Case(cid, acts, times) for cid, (acts, times) in zip(ids, out_cases, strict=True)]
    renamed.sort(key=lambda c: (c.times[0], c.case_id))
    out = CaseLog.from_cases(renamed)
    report = ReleaseReport(
        mode=str(settings.mode),
        strategy=str(settings.strategy),
        cases_in=len(log.cases),
        events_in=log.n_events,
        variants_in=len(log.variants),
        dafsa_states=dafsa.n_states,
        dafsa_transitions=len(dafsa.transitions),
        cases_out=len(out.cases),
        events_out=out.n_events,
        variants_out=len(out.variants),
        cases_filtered=report_extra.cases_filtered,
        epsilon_control_flow=report_extra.epsilon_control_flow,
        epsilon_time=report_extra.epsilon_time,
        threshold=report_extra.threshold,
        suppression_delta=report_extra.suppression_delta,
    )
    return Release(out, report)


@dataclass(frozen=True)
class _Extra:
    cases_filtered: int
    epsilon_control_flow: float
    epsilon_time: float
    threshold: int | None
    suppression_delta: float | None


def _amun(
    log: CaseLog,
    dafsa: Dafsa,
    paths: list[tuple[int, ...]],
    settings: AnonymizeSettings,
    rng: np.random.Generator,
    step: Callable[[str], None],
) -> tuple[list[tuple[tuple[str, ...], tuple[int, ...]]], _Extra]:
    delta = settings.delta
    step("priors")
    cases = log.cases
    variant_of = list(log.variant_of)

    def priors(selected: tuple[Case, ...], sel_variants: list[int]) -> CasePriors:
        return case_priors(
            [c.times for c in selected],
            [paths[v] for v in sel_variants],
            delta=delta,
            start_precision=settings.start_precision,
            relative_precision=settings.relative_precision,
        )

    table = priors(cases, variant_of)
    filtered = 0
    if settings.strategy is Strategy.FILTERING:
        risky = high_risk_cases(table.prior, delta)
        keep = [i for i, r in enumerate(risky) if not r]
        if not keep:
            raise ValueError("filtering would remove every case: no release is possible")
        filtered = len(cases) - len(keep)
        cases = tuple(cases[i] for i in keep)
        variant_of = [variant_of[i] for i in keep]
        table = priors(cases, variant_of)
    eps_per_case = [amun_event_epsilons(p, delta) for p in table.prior]

    step("sampling")
    eps_d = epsilon_worst_case(delta)
    # re-index the variants present after filtering
    copies = amun_plan(
        variant_of,
        paths,
        len(dafsa.transitions),
        epsilon=eps_d,
        rng=rng,
        oversampling=settings.strategy is Strategy.OVERSAMPLING,
        prototype_net=settings.amun_net == "prototype",
    )
    step("timestamps")
    times = amun_times(
        [c.times for c in cases], eps_per_case, table.span, copies, table.starts_range, rng
    )
    acts = [c.activities for c, k in zip(cases, copies, strict=True) for _ in range(max(k, 0))]
    extra = _Extra(
        cases_filtered=filtered,
        epsilon_control_flow=eps_d,
        epsilon_time=float(np.median(np.concatenate(eps_per_case))),
        threshold=None,
        suppression_delta=None,
    )
    return list(zip(acts, times, strict=True)), extra


def _strict(
    log: CaseLog,
    settings: AnonymizeSettings,
    releaser: Releaser,
    rng: np.random.Generator,
    step: Callable[[str], None],
) -> tuple[list[tuple[tuple[str, ...], tuple[int, ...]]], _Extra]:
    eps = settings.epsilon
    eps_time = eps * settings.time_share
    eps_cf = eps - eps_time
    step("calibration")
    if isinstance(releaser, OpenDPReleaser):
        threshold = releaser.threshold_for(epsilon=eps_cf, delta=settings.suppression_delta)
    else:
        threshold = OpenDPReleaser().threshold_for(epsilon=eps_cf, delta=settings.suppression_delta)
    step("sampling")
    copies, _ = strict_plan(
        log.variants,
        log.variant_of,
        releaser=releaser,
        scale=1.0 / eps_cf,
        threshold=threshold,
        rng=rng,
    )
    step("timestamps")
    times = strict_times(
        [c.times for c in log.cases],
        copies,
        releaser,
        epsilon=eps_time,
        start_unit=settings.start_precision,
        gap_unit=settings.relative_precision,
    )
    acts = [c.activities for c, k in zip(log.cases, copies, strict=True) for _ in range(k)]
    extra = _Extra(
        cases_filtered=0,
        epsilon_control_flow=eps_cf,
        epsilon_time=eps_time,
        threshold=threshold,
        suppression_delta=settings.suppression_delta,
    )
    return list(zip(acts, times, strict=True)), extra
