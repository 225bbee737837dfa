"""The DP process map: model (threshold, clamping, rates), layout, terminal and graph output,
and ``procvault results --map/--graph`` fed with signed records (no Kafka)."""

from __future__ import annotations

import math
import struct
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from procvault.cli import main
from procvault.monitor.privacy import (
    Budget,
    DeterministicReleaser,
    KnownKeys,
    PaneAggregate,
    PaneClock,
    PaneRecord,
    PaneReleaser,
    PaneSettings,
    PrivacySettings,
    ReleasePlan,
    WindowRecord,
)
from procvault.monitor.privacy.records import (
    BudgetInfo,
    Entry,
    MechanismInfo,
    PaneInfo,
    StatisticRelease,
    WithheldRecord,
)
from procvault.processmap.draw import (
    ProcessMap,
    build_map,
    graph_format,
    layout,
    noise_sd,
    render_map,
    write_graph,
)
from procvault.results.mapview import MapView
from procvault.results.reader import ResultsReader
from procvault.streams.envelope import VaultKeys
from procvault.streams.release import record_key, sign_record

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _stat(name: str, known: dict[str, int], other: dict[str, int] | None = None) -> Any:
    def entries(values: dict[str, int]) -> tuple[Entry, ...]:
        return tuple(Entry(tuple(k.split(">")), v) for k, v in sorted(values.items()))

    return StatisticRelease(name, entries(known), entries(other or {}))


def _mech(name: str, scale: float) -> MechanismInfo:
    return MechanismInfo(name, "discrete_laplace", scale, 2, 2, 1, 0.1, 0.0, None)


BUDGET = BudgetInfo(1.0, 1e-6, 4, None, "case", "uniform", 4, 0.0)


def _pane(*stats: Any, index: int = 7, mechanisms: Sequence[MechanismInfo] = ()) -> PaneRecord:
    return PaneRecord(
        pane=PaneInfo(index, T0 + index * HOUR, T0 + (index + 1) * HOUR),
        epsilon=0.25,
        delta=1e-7,
        budget=BUDGET,
        mechanisms=tuple(mechanisms),
        statistics=tuple(stats),
    )


def _window(*stats: Any, panes: int = 4, withheld: int = 0, last: int = 9) -> WindowRecord:
    return WindowRecord(
        first_pane=last - panes + 1,
        last_pane=last,
        start=T0,
        end=T0 + panes * HOUR,
        panes=panes,
        withheld_panes=withheld,
        statistics=tuple(stats),
    )


# A hand-built pane: a chain A → B → C with a loop back C → A, a self-loop on B, noise-level
# pairs, one negative activity count, a pair not known in advance (``other``).
HAND = _pane(
    _stat("activity", {"A": 50, "B": 44, "C": 30, "D": -4}),
    _stat(
        "directly_follows",
        {"A>B": 40, "B>C": 28, "C>A": 9, "B>B": 12, "A>C": 2, "A>D": -3, "D>A": 0},
        {"C>X": 15},
    ),
    _stat("cases", {"started": 20, "completed_fit": 9, "completed_unfit": 3}),
    _stat("deviation", {"A": -2, "B": 5, "C": 0, "D": 1}),
    _stat("violation", {"R1": 3, "R2": -1}, {"R9": 6}),
    _stat("tokens", {"missing": 6, "remaining": -2}),
)


# ----------------------------------------------------------------------------- the model
def test_threshold_hides_noise_level_pairs() -> None:
    pm = build_map(HAND, min_count=5)
    assert [(e.source, e.target, e.count) for e in pm.edges] == [
        ("A", "B", 40),
        ("B", "C", 28),
        ("C", "X", 15),
        ("B", "B", 12),
        ("C", "A", 9),
    ]
    assert pm.hidden_edges == 3 and pm.min_count == 5 == pm.node_min_count
    assert [e.known for e in pm.edges] == [True, True, False, True, True]
    assert [n.name for n in pm.nodes if not n.visible] == ["D"]
    assert [e.target for e in pm.outgoing("B")] == ["C", "B"]
    assert [e.target for e in pm.outgoing("B", top=1)] == ["C"]
    # a higher threshold hides more, min_count 0 shows everything above 0
    assert len(build_map(HAND, min_count=20).edges) == 2
    assert {(e.source, e.target) for e in build_map(HAND, min_count=0).edges} >= {("A", "C")}
    assert all(e.count >= 1 for e in build_map(HAND, min_count=0).edges)


def test_negative_values_are_shown_as_zero_never_corrected() -> None:
    pm = build_map(HAND, min_count=1)
    d = next(n for n in pm.nodes if n.name == "D")
    assert (d.count, d.shown, d.deviations) == (-4, 0, 1)
    a = next(n for n in pm.nodes if n.name == "A")
    assert (a.count, a.deviations) == (50, 0)  # deviation -2 displayed as 0
    x = next(n for n in pm.nodes if n.name == "X")  # only in a released pair
    assert (x.count, x.shown, x.visible) == (None, 0, True)
    r2 = next(r for r in pm.violations if r.rule == "R2")
    assert (r2.count, r2.shown, r2.rate) == (-1, 0, 0.0)
    # the raw released values are kept; the same record gives the same map
    assert build_map(HAND, min_count=1) == pm


def test_conformance_and_violation_rates() -> None:
    pm = build_map(HAND, min_count=5)
    c = pm.conformance
    assert c is not None
    assert (c.started, c.fit, c.unfit, c.unchecked) == (20, 9, 3, None)
    assert c.rate == 0.75 and c.checked == 12 and c.completed == 12
    assert c.missing == 0.5 and c.remaining == 0.0
    assert [(r.rule, r.count, r.rate) for r in pm.violations] == [
        ("R9", 6, 0.5),
        ("R1", 3, 0.25),
        ("R2", -1, 0.0),
    ]
    # clamped before dividing: a negative unfit count makes every checked case fit
    neg = build_map(_pane(_stat("cases", {"completed_fit": 4, "completed_unfit": -2})))
    assert neg.conformance is not None and neg.conformance.rate == 1.0
    # nothing completed: no rate
    none = build_map(
        _pane(
            _stat("cases", {"completed_fit": -1, "completed_unfit": 0}),
            _stat("violation", {"R": 2}),
        )
    )
    assert none.conformance is not None and none.conformance.rate is None
    assert none.violations[0].rate is None
    # statistics not released: no conformance, no violations
    bare = build_map(_pane(_stat("activity", {"A": 3})))
    assert bare.conformance is None and bare.violations == () and bare.edges == ()


def test_default_threshold_comes_from_the_noise() -> None:
    mechs = [_mech("activity", 4.0), _mech("directly_follows", 10.0)]
    record = _pane(*HAND.statistics, mechanisms=mechs)
    df_sd = noise_sd(mechs, "directly_follows")
    act_sd = noise_sd(mechs, "activity")
    assert df_sd is not None and act_sd is not None
    assert df_sd == pytest.approx(math.sqrt(2) * 10, rel=0.01)
    pm = build_map(record)
    assert pm.min_count == math.ceil(3 * df_sd) == 43
    assert pm.node_min_count == math.ceil(3 * act_sd)
    assert pm.edges == ()  # every pair is within the noise at this scale
    # a window sums the noise of its released panes; without mechanisms the default is 1
    win = _window(*HAND.statistics[:2], panes=5, withheld=1)
    assert build_map(win, mechanisms=mechs).min_count == math.ceil(3 * df_sd * 2)
    assert build_map(win).min_count == 1
    assert build_map(_window(panes=2, withheld=2), mechanisms=mechs).min_count == 1
    assert noise_sd(mechs, "violation") is None


def test_a_record_of_the_releaser() -> None:
    known = KnownKeys.build("ABC", rules=["R1"])
    s = PrivacySettings(Budget(1.0, window=4), PaneSettings(HOUR), windows=(2 * HOUR,))
    plan = ReleasePlan.build(s, known)
    rel = PaneReleaser(plan, DeterministicReleaser(plan, offset=-2))
    clock = PaneClock(s.panes)
    records = []
    for i, scale in enumerate((1, 3)):
        p = clock.pane(i)
        values = (
            ("activity", ((("A",), 10 * scale), (("B",), 8 * scale), (("C",), 1))),
            ("directly_follows", ((("A", "B"), 7 * scale), (("B", "C"), 1))),
            ("cases", ((("completed_fit",), 6 * scale), (("completed_unfit",), 4))),
            ("violation", ((("R1",), 3),)),
        )
        records += rel.release(PaneAggregate(p.index, p.start, p.end, values))
    pane, window = records[-2], records[-1]
    assert isinstance(pane, PaneRecord) and isinstance(window, WindowRecord)
    pm = build_map(pane, min_count=3)
    nodes = {n.name: (n.count, n.shown) for n in pm.nodes}
    assert nodes == {"A": (28, 28), "B": (22, 22), "C": (-1, 0)}  # exact + offset -2
    assert [(e.source, e.target, e.count) for e in pm.edges] == [("A", "B", 19)]
    c = pm.conformance
    assert c is not None and (c.fit, c.unfit) == (16, 2) and c.rate == pytest.approx(16 / 18)
    assert pm.violations[0].count == 1 and pm.violations[0].rate == pytest.approx(1 / 18)
    # the window: the sum of the two noisy panes, thresholded from the panes' mechanisms
    wm = build_map(window, mechanisms=pane.mechanisms)
    sd = noise_sd(pane.mechanisms, "directly_follows", panes=2)
    assert sd is not None and wm.min_count == max(1, math.ceil(3 * sd))
    assert next(n for n in wm.nodes if n.name == "A").count == 8 + 28
    assert wm.kind == "window" and "window of 2 panes" in wm.title


counts = st.integers(min_value=-50, max_value=200)


@settings(max_examples=60, deadline=None)
@given(
    acts=st.dictionaries(st.sampled_from("ABCDE"), counts, min_size=1),
    pairs=st.dictionaries(st.tuples(st.sampled_from("ABCDE"), st.sampled_from("ABCDE")), counts),
    cases=st.tuples(counts, counts, counts),
    rules=st.dictionaries(st.sampled_from(["R1", "R2", "R3"]), counts),
    min_count=st.one_of(st.none(), st.integers(0, 60)),
)
def test_post_processing_properties(
    acts: dict[str, int],
    pairs: dict[tuple[str, str], int],
    cases: tuple[int, int, int],
    rules: dict[str, int],
    min_count: int | None,
) -> None:
    record = _pane(
        _stat("activity", acts),
        _stat("directly_follows", {f"{a}>{b}": v for (a, b), v in pairs.items()}),
        _stat(
            "cases", dict(zip(("completed_fit", "completed_unfit", "started"), cases, strict=True))
        ),
        _stat("violation", rules),
        mechanisms=[_mech("activity", 3.0), _mech("directly_follows", 5.0)],
    )
    pm = build_map(record, min_count=min_count)
    assert all(n.shown >= 0 and n.shown == max(n.count or 0, 0) for n in pm.nodes)
    assert all(e.count >= max(pm.min_count, 1) for e in pm.edges)
    assert len(pm.edges) + pm.hidden_edges == len(pairs)
    assert pm.conformance is not None
    assert pm.conformance.rate is None or 0.0 <= pm.conformance.rate <= 1.0
    assert all(r.rate is None or r.rate >= 0 for r in pm.violations)
    pos = layout(pm)
    assert set(pos) == {n.name for n in pm.nodes if n.visible}
    assert len(set(pos.values())) == len(pos)  # one node per (layer, row)


# ----------------------------------------------------------------------------- layout
def test_layout_is_layered_along_the_flow() -> None:
    pm = build_map(HAND, min_count=5)
    pos = layout(pm)
    assert pos == {"A": (0, 0), "B": (1, 0), "C": (2, 0), "X": (3, 0)}
    assert layout(build_map(HAND, min_count=5)) == pos  # deterministic
    # two branches from one source share a layer
    branchy = build_map(
        _pane(
            _stat("activity", {"S": 30, "L": 10, "R": 20, "E": 30}),
            _stat("directly_follows", {"S>L": 10, "S>R": 20, "L>E": 10, "R>E": 20}),
        ),
        min_count=1,
    )
    pos = layout(branchy)
    assert pos["S"][0] == 0 and pos["L"][0] == pos["R"][0] == 1 and pos["E"][0] == 2
    # a node without shown edges but above the node threshold is still placed
    lone = build_map(_pane(_stat("activity", {"A": 9, "B": 9})), min_count=5)
    assert set(layout(lone)) == {"A", "B"}


# ----------------------------------------------------------------------------- terminal
def _text(renderable: Any, width: int = 140) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_render_map_in_the_terminal() -> None:
    text = _text(render_map(build_map(HAND, min_count=5, notes=["pane 9 was withheld"])))
    assert "DP process map · pane 7" in text and "pane 9 was withheld" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert lines["A"].split()[1:3] == ["50", "0"] and "B 40" in lines["A"]
    assert "C 28" in lines["B"] and "↺ 12" in lines["B"]
    assert lines["D"].split()[1] == "0"
    assert "conformance 75.0% (noise unknown) fit (9 of 12 checked completed cases" in text
    assert "R9" in lines and "50.0%" in lines["R9"] and "25.0%" in lines["R1"]
    assert "3 pairs below 5 hidden" in text
    assert "C 28, +1" in _text(render_map(build_map(HAND, min_count=5), top=1))
    assert "no pane record yet" in _text(render_map(None))


# ----------------------------------------------------------------------------- graph image
def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_write_graph_png_and_svg(tmp_path: Path) -> None:
    pm = build_map(HAND, min_count=5)
    png = write_graph(pm, tmp_path / "map.png", dpi=100)
    width, height = _png_size(png.read_bytes())
    assert 600 <= width <= 3000 and 300 <= height <= 2000 and width > height
    assert png.stat().st_size > 5_000
    svg = write_graph(pm, tmp_path / "map.SVG")
    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert float(root.attrib["width"].removesuffix("pt")) > 100
    assert len(root.findall(".//{http://www.w3.org/2000/svg}path")) > 20
    first = svg.read_bytes()
    assert write_graph(pm, tmp_path / "map.SVG").read_bytes() == first  # deterministic
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.SVG", "map.png"]  # no temp left
    # nothing above the threshold: still an image, saying so
    empty = write_graph(build_map(HAND, min_count=10_000), tmp_path / "empty.png", dpi=50)
    assert _png_size(empty.read_bytes())[0] > 0


def test_graph_format_rejects_other_extensions(tmp_path: Path) -> None:
    assert graph_format("a.PNG") == "png" and graph_format(Path("x/y.svg")) == "svg"
    for bad in ("map.gif", "map", "map.png.txt"):
        with pytest.raises(ValueError, match=r"must end in \.png or \.svg"):
            graph_format(bad)
    with pytest.raises(ValueError):
        write_graph(build_map(HAND), tmp_path / "map.pdf")
    assert not (tmp_path / "map.pdf").exists()


# ----------------------------------------------------------------------------- the view
def test_map_view_keeps_the_latest_records(tmp_path: Path) -> None:
    console = Console(width=140, record=True, color_system=None)
    view = MapView(window=4, min_count=5, graph=tmp_path / "m.svg", console=console)
    assert view.current() is None and view.finish() is not None  # nothing read: no graph
    assert not (tmp_path / "m.svg").exists()
    later = _pane(*HAND.statistics, index=12)
    view.add(later)
    view.add(HAND)  # older: ignored
    pm = view.current()
    assert isinstance(pm, ProcessMap) and "pane 12" in pm.title
    assert any("no window record of 4 panes" in n for n in pm.notes)
    view.add(_window(*HAND.statistics, panes=2, last=12))  # other size: ignored
    view.add(_window(*HAND.statistics, panes=4, last=11))
    view.add(WithheldRecord(pane=PaneInfo(13, T0, T0), reason="budget"))
    pm = view.current()
    assert pm is not None and pm.kind == "window" and "(8..11)" in pm.title
    assert "pane 13 was withheld (privacy budget)" in pm.notes
    view.tick(now=100.0)
    assert view.graphs_written == 1
    view.tick(now=100.5)  # unchanged
    view.add(_window(*HAND.statistics, panes=4, last=12))
    view.tick(now=101.0)  # changed, but too soon
    assert view.graphs_written == 1
    assert view.finish() is None and view.graphs_written == 2
    assert "window of 4 panes (9..12)" in console.export_text()
    assert ET.parse(tmp_path / "m.svg").getroot().tag.endswith("svg")


# ----------------------------------------------------------------------------- the command
KEYS = VaultKeys.generate(epoch=1)


def _records() -> list[Any]:
    return [
        WithheldRecord(pane=PaneInfo(6, T0, T0), reason="budget"),
        HAND,
        _window(*HAND.statistics, panes=2, last=7),
    ]


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """``ResultsReader.run`` replaced by one that verifies these signed records."""
    records: list[Any] = _records()

    async def run(self: Any, *, follow: bool = False, timeout: float = 30.0) -> Any:
        self.epochs[KEYS.epoch] = KEYS.public()
        for offset, rec in enumerate(records):
            self.add_aggregate(0, offset, record_key(rec), sign_record(rec, KEYS))
        self.add_aggregate(0, 99, b"pane/1", b"tampered")
        if follow and self.view is not None:
            self.view.tick()
        return self.stats

    monkeypatch.setattr(ResultsReader, "run", run)
    return records


def _main(tmp_path: Path, *argv: str) -> int:
    from procvault.streams.secrets import init_keyring

    keys = tmp_path / "keys"  # results reads the pinned vault identity from its registry
    if not keys.exists():
        init_keyring(keys, ["lab"])
    base = ["results", "--kafka", "127.0.0.1:1", "--keys", str(keys)]
    return main([*base, *argv])


def test_results_map_and_graph(
    fake_kafka: list[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "map.png"
    code = _main(tmp_path, "--map", "--min-count", "5", "--graph", str(png))
    out, err = capsys.readouterr()
    assert code == 1  # the tampered record
    assert "DP process map · pane 7" in out and "conformance 75.0% (noise unknown) fit" in out
    assert "was withheld" not in out  # pane 6, before the pane shown: no note
    assert "withheld (budget)" not in out  # no per-record text with --map
    assert f"process map written to {png}" in err and "1 rejected" in err
    assert _png_size(png.read_bytes())[0] > 0
    # --window N, --follow (live display), SVG
    svg = tmp_path / "map.svg"
    code = _main(tmp_path, "--map", "--window", "2", "--follow", "--graph", str(svg))
    out, err = capsys.readouterr()
    assert "window of 2 panes (6..7)" in out
    assert ET.parse(svg).getroot().tag.endswith("svg")
    # --graph without --map: the records are shown as before
    code = _main(tmp_path, "--graph", str(png), "--window", "3")
    out, err = capsys.readouterr()
    assert "pane 7" in out and "window 6..7" in out and "withheld (budget)" in out
    assert f"process map written to {png}" in err


def test_results_graph_without_a_pane_record(
    fake_kafka: list[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    del fake_kafka[1:]  # only a withheld pane
    png = tmp_path / "map.png"
    code = _main(tmp_path, "--graph", str(png))
    _out, err = capsys.readouterr()
    assert code == 1
    assert "procvault: error: --graph: no pane record was read from results.aggregates" in err
    assert "results: 1 withheld" in err and not png.exists()
    code = _main(tmp_path, "--map")
    out, _err = capsys.readouterr()
    assert "no pane record yet (pane 6 was withheld: privacy budget)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--graph", "map.gif"], "--graph: cannot write a graph to 'map.gif'"),
        (["--graph", "nowhere/map.png"], "--graph: folder 'nowhere' does not exist"),
        (["--map", "--json"], "choose --map or --json"),
        (["--window", "4"], "--window needs --map or --graph"),
        (["--min-count", "3"], "--min-count needs --map or --graph"),
    ],
)
def test_results_option_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)

    async def never(self: Any, **kw: Any) -> Any:  # pragma: no cover - must not be reached
        raise AssertionError("read before the options were checked")

    monkeypatch.setattr(ResultsReader, "run", never)
    assert _main(tmp_path, *argv) == 2
    assert message in capsys.readouterr().err


def test_results_min_count_must_not_be_negative(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        _main(tmp_path, "--map", "--min-count", "-1")
    assert exc.value.code == 2 and "must be >= 0" in capsys.readouterr().err
