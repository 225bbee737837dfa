"""Differentially private release of an event log from a guessing-advantage bound δ.

:func:`anonymize` turns a :class:`~procvault.monitor.amun.cases.CaseLog` into another one whose
cases carry fresh random ids, only activities and timestamps, only variants of the input
(requirement R1), in a random order. Two modes:

``Mode.STRICT`` (default)
    (ε, δ_s)-differential privacy for adding or removing one case, ε = 2 ln((1+δ)/(1-δ)): the
    variant counts (sensitivity 1 per case) through OpenDP's Laplace-threshold histogram; the
    released variants filled with synthetic cases whose timestamps are sampled from two noisy
    histograms (case starts over a public window, gaps per directly-follows edge over a public
    grid); no real case's timestamps are released. Noise from OpenDP, every other random choice
    (synthetic times, ids, order) from the OS CSPRNG: ``seed`` plays no part.
``Mode.AMUN``
    The published method (Elkoumy, Pankova, Dumas 2023), for comparison: minimal DAFSA, per-event
    priors and ε_t from the raw log (all case starts as one group), per-transition Laplace
    sampling with ε_d (Algorithm 1), floating-point noise from numpy, timestamp compression by
    Eq. (4). Reproducible from ``seed``.

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
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .calibration import check_delta, epsilon_worst_case
from .cases import Case, CaseLog
from .dafsa import Dafsa
from .noise import OpenDPReleaser, Releaser
from .priors import CasePriors, amun_event_epsilons, case_priors, high_risk_cases
from .sampling import amun_plan, strict_counts
from .timestamps import amun_times, release_time_histograms, synthesize_times

__all__ = ["AnonymizeSettings", "Mode", "Release", "ReleaseReport", "Strategy", "anonymize"]

_US = 1_000_000

#: Strict mode: the share of the timestamp budget spent on the start histogram (the rest goes to
#: the gap histograms, whose sensitivity is a case's number of gaps).
START_SHARE = 0.25


class Mode(enum.StrEnum):
    """Which method to run."""

    #: Add/remove-one-case DP: thresholded variant histogram, synthetic timestamps (default).
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
        Amun mode only: seeds its noise, its sampling choices, its new ids and its output
        order, so that a comparison run can be repeated. Strict mode ignores it: its noise comes
        from OpenDP and every other choice from the OS CSPRNG (tests pass a seeded
        :class:`Releaser` instead).
    start_precision
        Seconds. Amun: the attacker's precision for case starts (paper: 1 day). Strict: the
        narrowest bin of the released start histogram.
    relative_precision
        Seconds. Amun: the same for the time between consecutive events (paper: 10 s).
        Strict: the first bin of the gap grid ``0, u, 2u, 4u, ...``.
    time_share
        Strict: the share of ε spent on timestamps (the rest goes to the variant counts).
    suppression_delta
        Strict: the δ of the variant threshold (probability that a variant of one case shows).
    window
        Strict: ``(first, last)`` case start in µs since the epoch, public; starts are released
        over it. ``None``: the input's first and last case start (rounded out to whole
        ``start_precision``), which are then taken as public, as the paper's attack model does,
        and are not protected.
    amun_net
        Amun: ``"paper"`` samples as Algorithm 1 says (transitions picked by occurrence
        frequency; every variant's net count of replications minus deletions applied).
        ``"prototype"``: as the prototype's code does (the least-served transition first; a
        variant only replicated or only deleted is left alone, a negative net deletes one
        case). The paper's Table 6 figures were produced by the prototype (see
        ``docs/anonymize.md``).
    """

    delta: float
    mode: Mode | str = Mode.STRICT
    strategy: Strategy | str = Strategy.SAMPLING
    seed: int = 0
    start_precision: float = 86_400.0
    relative_precision: float = 10.0
    time_share: float = 0.5
    suppression_delta: float = 1e-6
    window: tuple[int, int] | None = None
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
        if self.window is not None:
            lo, hi = self.window
            if not (isinstance(lo, int) and isinstance(hi, int)) or hi < lo:
                raise ValueError(
                    f"window must be (first, last) in µs since the epoch, first <= last, "
                    f"got {self.window!r}"
                )
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
    ``window`` (µs) is the public window strict mode released starts over, and
    ``window_from_log`` says whether it was read from the input (then not protected).
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
    window: tuple[int, int] | None = None
    window_from_log: bool = False


@dataclass(frozen=True)
class Release:
    """The anonymized log and the report."""

    log: CaseLog
    report: ReleaseReport


def _seeded_ids(n: int, taken: set[str], rng: np.random.Generator) -> list[str]:
    out: list[str] = []
    seen = set(taken)
    while len(out) < n:
        for word in rng.integers(0, 2**63 - 1, size=n - len(out), dtype=np.int64).tolist():
            cid = f"{word:016x}"
            if cid not in seen:
                seen.add(cid)
                out.append(cid)
    return out


def _random_ids(n: int, coins: random.Random) -> list[str]:
    """``n`` distinct 64-bit ids in hex from ``coins`` (the OS CSPRNG in the shipped path)."""
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        cid = f"{coins.getrandbits(64):016x}"
        if cid not in seen:
            seen.add(cid)
            out.append(cid)
    return out


_Rows = list[tuple[tuple[str, ...], tuple[int, ...]]]


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
        Strict mode's source of noise and coins; default :class:`OpenDPReleaser` (OpenDP noise,
        ``os.urandom`` coins). Tests pass a seeded stand-in. Ignored in amun mode.
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
    step("dafsa")
    dafsa = Dafsa.build(log.variants)
    paths = [dafsa.path(v) for v in log.variants]
    if settings.mode is Mode.AMUN:
        rng = np.random.default_rng(settings.seed)
        rows, extra = _amun(log, dafsa, paths, settings, rng, step)
        step("ids")
        ids = _seeded_ids(len(rows), {c.case_id for c in log.cases}, rng)
        order = rng.permutation(len(rows)).tolist()
    else:
        source = releaser or OpenDPReleaser()
        rows, extra = _strict(log, settings, source, step)
        step("ids")
        coins = source.coins()
        ids = _random_ids(len(rows), coins)
        order = list(range(len(rows)))
        coins.shuffle(order)
    # Prop. A.5: shuffle all cases and give them new ids (the ids are drawn in a fresh order)
    cases = [Case(ids[i], *rows[j]) for i, j in enumerate(order)]
    out = CaseLog.from_cases(cases)
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
        cases_filtered=extra.cases_filtered,
        epsilon_control_flow=extra.epsilon_control_flow,
        epsilon_time=extra.epsilon_time,
        threshold=extra.threshold,
        suppression_delta=extra.suppression_delta,
        window=extra.window,
        window_from_log=extra.window_from_log,
    )
    return Release(out, report)


@dataclass(frozen=True)
class _Extra:
    cases_filtered: int
    epsilon_control_flow: float
    epsilon_time: float
    threshold: int | None
    suppression_delta: float | None
    window: tuple[int, int] | None = None
    window_from_log: bool = False


def _amun(
    log: CaseLog,
    dafsa: Dafsa,
    paths: list[tuple[int, ...]],
    settings: AnonymizeSettings,
    rng: np.random.Generator,
    step: Callable[[str], None],
) -> tuple[_Rows, _Extra]:
    delta = settings.delta
    step("priors")
    cases = log.cases
    variant_of = list(log.variant_of)
    # Eq. (4)'s original range: the input log's first and last case start (public, Sect. 3.1)
    first_start = min(c.times[0] for c in log.cases)
    starts_range = (max(c.times[0] for c in log.cases) - first_start) / _US

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
    plan = amun_plan(
        variant_of,
        paths,
        len(dafsa.transitions),
        epsilon=eps_d,
        rng=rng,
        oversampling=settings.strategy is Strategy.OVERSAMPLING,
        prototype=settings.amun_net == "prototype",
    )
    copies = plan.copies
    step("timestamps")
    times = amun_times(
        [c.times for c in cases],
        eps_per_case,
        table.span,
        copies,
        first_start=first_start,
        starts_range=starts_range,
        rng=rng,
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


def default_window(log: CaseLog, unit: float) -> tuple[int, int]:
    """The input's first and last case start (µs), rounded out to whole ``unit`` seconds.

    >>> log = CaseLog.from_cases([Case("a", ("x",), (90_000_000_000,)),
    ...                           Case("b", ("x",), (200_000_000_000,))])
    >>> default_window(log, 86_400.0)
    (86400000000, 259200000000)
    """
    u = max(1, math.ceil(unit))
    first = min(c.times[0] for c in log.cases) // _US
    last = max(c.times[0] for c in log.cases) // _US
    lo = (first // u) * u
    hi = max(-(-last // u) * u, lo + u)
    return lo * _US, hi * _US


def _strict(
    log: CaseLog,
    settings: AnonymizeSettings,
    releaser: Releaser,
    step: Callable[[str], None],
) -> tuple[_Rows, _Extra]:
    eps = settings.epsilon
    eps_time = eps * settings.time_share
    eps_cf = eps - eps_time
    step("calibration")
    prover = releaser if isinstance(releaser, OpenDPReleaser) else OpenDPReleaser()
    threshold = prover.threshold_for(epsilon=eps_cf, delta=settings.suppression_delta)
    step("sampling")
    counts = strict_counts(
        log.variants, log.variant_of, releaser=releaser, scale=1.0 / eps_cf, threshold=threshold
    )
    step("timestamps")
    from_log = settings.window is None
    window = (
        settings.window
        if settings.window is not None
        else default_window(log, settings.start_precision)
    )
    rows: _Rows = []
    if counts:
        released = [log.variants[v] for v in sorted(counts)]
        hist = release_time_histograms(
            [(c.activities, c.times) for c in log.cases],
            set(released),
            releaser=releaser,
            window=(window[0] // _US, window[1] // _US),
            start_unit=settings.start_precision,
            gap_unit=settings.relative_precision,
            epsilon_start=eps_time * START_SHARE,
            epsilon_gap=eps_time * (1 - START_SHARE),
            n_released=sum(counts.values()),
        )
        coins = releaser.coins()
        for v in sorted(counts):
            acts = log.variants[v]
            rows.extend((acts, synthesize_times(hist, acts, coins)) for _ in range(counts[v]))
    extra = _Extra(
        cases_filtered=0,
        epsilon_control_flow=eps_cf,
        epsilon_time=eps_time,
        threshold=threshold,
        suppression_delta=settings.suppression_delta,
        window=window,
        window_from_log=from_log,
    )
    return rows, extra
