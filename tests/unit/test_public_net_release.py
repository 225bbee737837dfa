"""The reading side of the public net (``procvault.results.publicnet``): which released panes
are summed, the sums of their noisy values, the noise description, and the errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from procvault.monitor.errors import ConfigError, ProcvaultError
from procvault.monitor.privacy import (
    Budget,
    DeterministicReleaser,
    KnownKeys,
    OpenDPReleaser,
    PaneAggregate,
    PaneClock,
    PaneReleaser,
    PaneSettings,
    PrivacySettings,
    ReleasePlan,
    StatisticSettings,
)
from procvault.results.publicnet import ReleasedPanes, released_public_net, sum_panes

DAY = timedelta(days=1)
KNOWN = KnownKeys.build(["A", "B", "C"])
STATS = (
    StatisticSettings("directly_follows", max_keys=2),
    StatisticSettings("start_end"),
)


def _settings(
    statistics: tuple[StatisticSettings, ...] = STATS, pane_epsilon: float | None = None
) -> PrivacySettings:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return PrivacySettings(
        Budget(1.0, window=2, delta=1e-6),
        PaneSettings(DAY, start=start),
        statistics=statistics,
        max_panes_per_case=2,
        running_totals=None,
        windows=(2 * DAY,),
        pane_epsilon=pane_epsilon,
    )


def _agg(clock: PaneClock, i: int, n: int) -> PaneAggregate:
    p = clock.pane(clock.index(datetime(2024, 1, 1, tzinfo=UTC)) + i)
    return PaneAggregate(
        p.index,
        p.start,
        p.end,
        (
            ("directly_follows", ((("A", "B"), n), (("B", "C"), n))),
            ("start_end", ((("end", "C"), n), (("start", "A"), n))),
        ),
    )


def _view(settings: PrivacySettings, counts: list[int], releaser: object = None) -> ReleasedPanes:
    plan = ReleasePlan.build(settings, KNOWN)
    rel = PaneReleaser(plan, releaser or DeterministicReleaser(plan))  # type: ignore[arg-type]
    clock = PaneClock(settings.panes)
    view = ReleasedPanes()
    for i, n in enumerate(counts):
        for record in rel.release(_agg(clock, i, n)):
            view.add(record)
    return view


def test_every_released_pane_is_summed_by_default() -> None:
    view = _view(_settings(), [10, 20, 30])
    assert len(view.panes) == 3
    pub = released_public_net(view, min_count=1)
    assert pub.dfg == {("A", "B"): 60, ("B", "C"): 60}
    assert pub.start_activities == {"A": 60} and pub.end_activities == {"C": 60}
    assert pub.sound
    noise = pub.noise
    assert (noise["panes"], noise["withheld_panes"]) == (3, 0)
    assert noise["last_pane"] - noise["first_pane"] == 2
    plan = ReleasePlan.build(_settings(), KNOWN)
    for name in ("directly_follows", "start_end"):
        spec = plan.spec(name)
        got = noise["statistics"][name]
        want = (spec.scale, spec.epsilon, spec.delta, spec.threshold)
        assert (got["scale"], got["epsilon"], got["delta"], got["threshold"]) == want
        assert got["sum_sd"] == pytest.approx((3 * spec.variance) ** 0.5)
    eps = plan.spec("directly_follows").epsilon + plan.spec("start_end").epsilon
    assert noise["epsilon_per_case"] == pytest.approx(2 * eps)  # k = 2 of the 3 panes


def test_at_and_window_choose_the_panes_and_withheld_ones_are_counted() -> None:
    # 0.6 per pane of 1.0 over 2 panes: every other pane is withheld
    view = _view(_settings(pane_epsilon=0.6), [10, 20, 30, 40])
    assert sorted(view.withheld) and len(view.panes) == 2
    first = min(view.panes)
    day1 = datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert list(view.select(at=day1)) == [first]
    assert list(view.select(at=day1 + 2 * DAY, window=2)) == [first + 1, first + 2]
    assert list(view.select(window=2)) == [first + 2, first + 3]
    pub = released_public_net(view, at=day1 + 2 * DAY, window=2, min_count=1)
    assert pub.noise["panes"] == 1 and pub.noise["withheld_panes"] == 1
    assert pub.start_activities == {"A": 30}
    with pytest.raises(ProcvaultError, match="none of panes"):
        released_public_net(view, at=day1 + DAY)  # a withheld pane only
    with pytest.raises(ProcvaultError, match="no released pane holds"):
        view.select(at=day1 + 30 * DAY)
    with pytest.raises(ProcvaultError, match="no released pane was read"):
        ReleasedPanes().select()


def test_panes_without_start_end_cannot_make_a_public_net() -> None:
    view = _view(_settings((StatisticSettings("directly_follows"),)), [10])
    with pytest.raises(ConfigError, match="no start_end statistic"):
        released_public_net(view)


def test_the_default_min_count_is_three_standard_deviations_of_the_summed_noise() -> None:
    settings = _settings()
    plan = ReleasePlan.build(settings, KNOWN)
    view = _view(settings, [5000, 5000], OpenDPReleaser(plan))
    pub = released_public_net(view)
    sd = max(pub.noise["statistics"][s]["sum_sd"] for s in ("directly_follows", "start_end"))
    assert pub.min_count == max(1, -(-3 * sd // 1))
    assert pub.start_activities.keys() == {"A"} and pub.end_activities.keys() == {"C"}
    # the sums are the released noisy values, not the exact ones
    records = list(view.panes.values())
    assert pub.dfg[("A", "B")] == sum_panes(records, "directly_follows")[("A", "B")]


@pytest.mark.parametrize("as_json", [True, False])
def test_the_command_writes_the_net_and_summarises_it(
    as_json: bool,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``procvault discover --public`` on records a stand-in reader hands over (the Kafka
    path is the integration test's): the files, the summary, the exit status."""
    import json

    from procvault.cli import main
    from procvault.results.reader import ReadStats, ResultsReader
    from procvault.streams.secrets import Registry

    view = _view(_settings(), [40, 50, 60])

    async def run(self: ResultsReader, **_: Any) -> ReadStats:
        assert self.view is not None
        for record in [*view.panes.values(), *view.withheld.values()]:
            self.view.add(record)
        self.stats.shown["pane"] += len(view.panes)
        return self.stats

    class _Registry:
        identity = b"\0" * 32

    monkeypatch.setattr(ResultsReader, "run", run)
    monkeypatch.setattr(Registry, "load", classmethod(lambda cls, path: _Registry()))
    out = tmp_path / "public"
    argv = ["discover", "--public", "--from", "127.0.0.1:9", "--keys", str(tmp_path)]
    argv += ["--out", str(out), "--allow-insecure-attestation", "--min-count", "5"]
    argv += ["--json"] if as_json else ["--pictures", "svg"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "public.json").read_text())
    assert record["noise"]["panes"] == 3 and record["min_count"] == 5
    assert record["start_activities"] == [["A", 150]] and record["sound"]
    if as_json:
        summary = json.loads(printed)
        assert summary["panes"] == 3 and summary["sound"] and summary["rejected"] == 0
        assert summary["files"] == ["public.pnml", "public.json", "public.png"]  # png: default
    else:
        assert "the public net of 3 released pane(s) (0 withheld): sound" in printed
        assert (out / "public.svg").stat().st_size > 0
