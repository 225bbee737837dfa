"""95% noise intervals beside every released number (procvault.monitor.privacy.intervals,
the text form of ``procvault results``, the process map's rates)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from procvault.monitor.privacy.intervals import half_width, rate
from procvault.monitor.privacy.mechanisms import opendp
from procvault.monitor.privacy.records import (
    BudgetInfo,
    Entry,
    MechanismInfo,
    PaneInfo,
    PaneRecord,
    StatisticRelease,
    WindowRecord,
)
from procvault.processmap.draw import build_map, render_map
from procvault.results.text import render_record

T0 = datetime(2024, 1, 1, tzinfo=UTC)
BUDGET = BudgetInfo(1.0, 1e-6, 4, None, "case", "uniform", 4, 0.0)


def _stat(name: str, values: dict[str, int]) -> StatisticRelease:
    return StatisticRelease(name, tuple(Entry(tuple(k.split(">")), v) for k, v in values.items()))


def _mechs(scale: float) -> tuple[MechanismInfo, ...]:
    return tuple(
        MechanismInfo(n, "discrete_laplace", scale, 2, 2, 1, 0.1, 0.0, None)
        for n in ("activity", "directly_follows", "cases", "violation")
    )


def _pane(scale: float, **stats: dict[str, int]) -> PaneRecord:
    return PaneRecord(
        pane=PaneInfo(3, T0, T0 + timedelta(hours=1)),
        epsilon=0.25,
        delta=0.0,
        budget=BUDGET,
        mechanisms=_mechs(scale),
        statistics=tuple(_stat(k, v) for k, v in stats.items()),
    )


def _empirical(scale: float, panes: int, draws: int = 20_000) -> float:
    """The share of |sum of ``panes`` OpenDP draws| within :func:`half_width`."""
    dp = opendp()
    space = dp.vector_domain(dp.atom_domain(T=dp.i64)), dp.l1_distance(T=dp.i64)
    meas = space >> dp.m.then_laplace(scale=scale)
    noise = [0] * draws
    for _ in range(panes):
        noise = [a + b for a, b in zip(noise, meas([0] * draws), strict=True)]
    h = half_width(scale, panes=panes)
    return sum(abs(x) <= h for x in noise) / draws


def test_the_interval_covers_95_percent_of_opendp_noise_and_no_more() -> None:
    for scale, panes in ((4.0, 1), (4.0, 6)):
        share = _empirical(scale, panes)
        assert 0.94 <= share <= 0.96, (scale, panes, share)
    # a window sums its panes' draws: wider, about with the square root of the panes
    assert half_width(10.0, panes=4) / half_width(10.0) == pytest_approx(2.0, 0.15)


def pytest_approx(value: float, rel: float) -> object:
    import pytest

    return pytest.approx(value, rel=rel)


def test_a_rate_wider_than_itself_is_withheld() -> None:
    assert rate(80, 100, 3, 5, upper=1.0).withheld is False
    assert rate(2, 3, 30, 30, upper=1.0).withheld is True
    assert rate(5, 0, 1, 1).withheld is True  # nothing to divide by
    r = rate(80, 100, 3, 5, upper=1.0)
    assert r.low <= 0.8 <= r.high <= 1.0


def test_plain_results_show_each_value_with_its_interval_and_clamp_negatives() -> None:
    rec = _pane(10.0, activity={"A": 632, "B": -70})
    text = render_record(rec)
    h = half_width(10.0)
    assert f"A=632±{h}" in text and f"B=0*±{h}" in text and "-70" not in text
    assert "below 0, shown as 0" in text
    window = WindowRecord(
        first_pane=0,
        last_pane=3,
        start=T0,
        end=T0 + timedelta(hours=4),
        panes=4,
        withheld_panes=0,
        statistics=(_stat("activity", {"A": 900}),),
    )
    assert f"A=900±{half_width(10.0, panes=4)}" in render_record(window, rec.mechanisms)


def test_the_map_withholds_a_conformance_rate_the_noise_swamps() -> None:
    # "100.0% fit (59 of 59)" at noise scale 135 says nothing: withheld, with the interval
    noisy = _pane(135.0, cases={"completed_fit": 59, "completed_unfit": -3, "started": 2})
    pm = build_map(noisy)
    assert pm.conformance is not None and pm.conformance.interval is not None
    assert pm.conformance.interval.withheld
    from rich.console import Console

    console = Console(width=160, record=True)
    console.print(render_map(pm))
    out = console.export_text()
    assert "withheld (noise wider than the rate)" in out and "100.0%" not in out
    # the same rate on large counts at small noise is shown with its interval
    clear = _pane(2.0, cases={"completed_fit": 900, "completed_unfit": 100})
    c = build_map(clear).conformance
    assert c is not None and c.interval is not None and not c.interval.withheld
    assert c.interval.low < 0.9 < c.interval.high and c.interval.high - c.interval.low < 0.05
    assert math.isclose(c.interval.value or 0, 0.9)


def test_map_at_picks_the_pane_and_window_holding_the_time() -> None:
    from procvault.results.mapview import MapView

    def pane(i: int, n: int) -> PaneRecord:
        return PaneRecord(
            pane=PaneInfo(i, T0 + i * timedelta(hours=1), T0 + (i + 1) * timedelta(hours=1)),
            epsilon=0.25,
            delta=0.0,
            budget=BUDGET,
            mechanisms=_mechs(2.0),
            statistics=(_stat("activity", {"A": n}),),
        )

    def window(last: int) -> WindowRecord:
        return WindowRecord(
            first_pane=last - 1,
            last_pane=last,
            start=T0 + (last - 1) * timedelta(hours=1),
            end=T0 + (last + 1) * timedelta(hours=1),
            panes=2,
            withheld_panes=0,
            statistics=(_stat("activity", {"A": 100 + last}),),
        )

    at = T0 + timedelta(hours=3, minutes=30)
    view = MapView(show=False, at=at)
    latest = MapView(show=False)
    windows = MapView(show=False, at=at, window=2)
    for i in range(8):
        for v in (view, latest):
            v.add(pane(i, 10 * i))
        windows.add(pane(i, 10 * i))
        if i:
            windows.add(window(i))
    assert view.pane is not None and view.pane.pane.index == 3
    assert latest.pane is not None and latest.pane.pane.index == 7
    assert windows.window_record is not None and windows.window_record.last_pane == 3
    pm = windows.current()
    assert pm is not None and pm.kind == "window" and dict(pm.noise)["activity"] > 0
    assert MapView(show=False, at=T0 - timedelta(days=1))._empty().startswith("no pane record")
