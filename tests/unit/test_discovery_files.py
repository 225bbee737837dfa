"""The reading side of discovery: files pm4py reads back, pictures, the public net from a noisy
DFG (sound, with its noise), the diff of two periods, and ``procvault discover``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from procvault.cli import main
from procvault.discovery import (
    diff,
    heuristics_petri_net,
    public_net,
    read_model,
    render_diff,
    to_dfg,
    write_models,
    write_public_net,
)
from procvault.discovery.draw import draw_heuristics
from procvault.discovery.files import decode_declare
from procvault.discovery.public import check_soundness
from procvault.generators._pm4py import import_pm4py
from procvault.generators.xes import read_xes
from procvault.monitor.discovery import DiscoveredModel, DiscoveryTracker, build_model
from procvault.monitor.errors import ConfigError, InputError

PNG = b"\x89PNG\r\n\x1a\n"


def _model(path: Path, *, keep: Any = None) -> DiscoveredModel:
    tracker = DiscoveryTracker()
    for e in read_xes(path).replay(end_markers=True):
        if keep is None or keep(e.case_id):
            tracker.update(e)
    return build_model(tracker.counts())


@pytest.fixture(scope="module")
def running_model(running_example_log: Path) -> DiscoveredModel:
    return _model(running_example_log)


def test_written_files_read_back_with_pm4py(running_model: DiscoveredModel, tmp_path: Path) -> None:
    pm4py = import_pm4py()
    written = write_models(running_model, tmp_path, pictures=("png", "svg"))
    names = {p.name for p in written}
    assert names == {
        "model.json",
        "dfg.dfg",
        "heuristics.pnml",
        "heuristics.bpmn",
        "declare.json",
        *(f"{stem}.{fmt}" for stem in ("dfg", "heuristics", "heuristics-petri", "heuristics-bpmn")
          for fmt in ("png", "svg")),
    }  # fmt: skip
    assert read_model(tmp_path) == running_model == read_model(tmp_path / "model.json")
    dfg, start, end = pm4py.read_dfg(str(tmp_path / "dfg.dfg"))
    assert (dict(dfg), dict(start), dict(end)) == to_dfg(running_model)
    net, _, _ = pm4py.read_pnml(str(tmp_path / "heuristics.pnml"))
    ours, _, _ = heuristics_petri_net(running_model)
    assert len(net.transitions) == len(ours.transitions) and len(net.places) == len(ours.places)
    labels = {t.label for t in net.transitions if t.label}
    assert labels == set(running_model.counts.activity_counts())
    bpmn = pm4py.read_bpmn(str(tmp_path / "heuristics.bpmn"))
    assert {n.get_name() for n in bpmn.get_nodes() if n.get_name()} >= labels
    decl = decode_declare((tmp_path / "declare.json").read_bytes())
    assert running_model.declare is not None
    assert decl.cases == running_model.declare.cases == 6
    assert [(c.template, c.activities, c.support, c.confidence) for c in decl.constraints] == [
        (c.template, c.activities, c.support, c.confidence)
        for c in running_model.declare.constraints
    ]
    for stem in ("dfg", "heuristics", "heuristics-petri", "heuristics-bpmn"):
        assert (tmp_path / f"{stem}.png").read_bytes().startswith(PNG)
        assert b"<svg" in (tmp_path / f"{stem}.svg").read_bytes()[:1000]
    assert not list(tmp_path.glob(".*")), "no temporary file is left behind"


def test_the_heuristics_picture_shows_every_node_and_arc(
    running_model: DiscoveredModel, tmp_path: Path
) -> None:
    svg = draw_heuristics(running_model, tmp_path / "h.svg").read_text()
    for node in running_model.heuristics.nodes:
        assert f">{node.name}</text>" in svg
    assert svg.count('class="edge"') == len(running_model.heuristics.arcs) + sum(
        (n.starts > 0) + (n.ends > 0) for n in running_model.heuristics.nodes
    )


def test_bad_picture_formats_and_unreadable_models(
    running_model: DiscoveredModel, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"not \['gif'\]"):
        write_models(running_model, tmp_path, pictures=("gif",))
    with pytest.raises(ConfigError, match=r"pictures are .png or .svg, not .pdf"):
        draw_heuristics(running_model, tmp_path / "h.pdf")
    with pytest.raises(InputError, match="file not found"):
        read_model(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"schema": "procvault.discovery/1"}')
    with pytest.raises(InputError, match=r"bad\.json: not a procvault\.discovery model"):
        read_model(tmp_path / "bad.json")


# ------------------------------------------------------------------------------ public net
def _noisy(values: dict[Any, int], scale: float) -> dict[Any, int]:
    """``values`` plus discrete Laplace noise drawn by OpenDP (never seeded: OpenDP's rule)."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    keys = sorted(values)
    meas = dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=scale
    )
    return dict(zip(keys, meas([values[k] for k in keys]), strict=True))


def test_public_net_from_a_noisy_dfg_is_sound_and_carries_its_noise(
    sepsis_log: Path, tmp_path: Path
) -> None:
    """Every known pair released with noise (zeros included, as the DP release does), at
    several scales and display thresholds: the miner always runs and its net is sound."""
    model = _model(sepsis_log)
    dfg, start, end = to_dfg(model)
    acts = sorted(model.counts.activity_counts())
    full = {(a, b): dfg.get((a, b), 0) for a in acts for b in acts}
    pm4py = import_pm4py()
    for draw in range(20):
        scale = (1.0, 5.0, 20.0)[draw % 3]
        min_count = (1, 15, 40, 5)[draw % 4]
        noise = {"mechanism": "discrete_laplace", "scale": scale, "epsilon": 2 / scale}
        pub = public_net(
            _noisy(full, scale),
            _noisy({a: start.get(a, 0) for a in acts}, scale),
            _noisy({a: end.get(a, 0) for a in acts}, scale),
            noise=noise,
            min_count=min_count,
        )
        assert pub.sound, (scale, min_count)
        assert pub.noise == noise and pub.min_count == min_count
        assert all(n >= min_count for n in pub.dfg.values())
        assert {t.label for t in pub.net.transitions if t.label} <= set(acts)
    written = write_public_net(pub, tmp_path, pictures=("svg",))
    assert [p.name for p in written] == ["public.pnml", "public.json", "public.svg"]
    record = json.loads((tmp_path / "public.json").read_text())
    assert record["schema"] == "procvault.public-net/1"
    assert record["noise"] == noise and record["sound"] is True
    assert check_soundness(*pm4py.read_pnml(str(tmp_path / "public.pnml")))


def test_public_net_refuses_what_it_cannot_mine() -> None:
    noise = {"scale": 1.0}
    with pytest.raises(ConfigError, match="no start activity has a noisy count >= 5"):
        public_net({("A", "B"): 9}, {"A": 2}, {"B": 9}, noise=noise, min_count=5)
    with pytest.raises(ConfigError, match="no path from a start to an end activity"):
        public_net({("A", "B"): 1}, {"A": 9}, {"B": 9}, noise=noise, min_count=5)
    with pytest.raises(ConfigError, match="no path from a start to an end activity"):
        public_net({("A", "B"): 9}, {"B": 9}, {"A": 9}, noise=noise, min_count=5)
    with pytest.raises(ConfigError, match="is not a number"):
        public_net({("A", "B"): "9"}, {"A": 9}, {"B": 9}, noise=noise)  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="noise must describe"):
        public_net({("A", "B"): 9}, {"A": 9}, {"B": 9}, noise=1.0)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ diff
def test_diff_of_two_periods(sepsis_log: Path) -> None:
    early = _model(sepsis_log, keep=lambda c: c < "M")
    late = _model(sepsis_log, keep=lambda c: c >= "M")
    d = diff(early, late)
    da, db = early.counts.dfg(), late.counts.dfg()
    assert {(c.source, c.target) for c in d.arcs_added} == set(db) - set(da)
    assert {(c.source, c.target) for c in d.arcs_removed} == set(da) - set(db)
    changed = {k for k in set(da) & set(db) if da[k] != db[k]}
    assert {(c.source, c.target) for c in d.arcs_changed} == changed
    assert d.arcs_unchanged == len(set(da) & set(db)) - len(changed)
    assert (d.cases_before, d.cases_after) == (
        early.counts.cases_completed,
        late.counts.cases_completed,
    )
    assert not d.unchanged
    text = render_diff(d)
    assert f"{len(d.arcs_changed)} changed" in text
    same = diff(late, late)
    assert same.unchanged and same.arcs_unchanged == len(db)


# ------------------------------------------------------------------------------ CLI
def test_cli_discover_and_compare(
    running_example_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m"
    rc = main(["discover", str(running_example_log), "--out", str(out), "--pictures", "svg",
               "--json", "--progress", "off"])  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["events"] == 42 and summary["cases"] == 6
    assert "heuristics.pnml" in summary["files"] and "dfg.svg" in summary["files"]
    assert read_model(out).heuristics.settings.dependency_threshold == 0.5
    out2 = tmp_path / "m2"
    rc = main(["discover", str(running_example_log), "--out", str(out2), "--pictures", "none",
               "--dependency-threshold", "0.9", "--templates", "response,precedence",
               "--min-support-ratio", "0"])  # fmt: skip
    assert rc == 0
    m2 = read_model(out2)
    assert m2.heuristics.settings.dependency_threshold == 0.9
    assert m2.declare is not None
    assert {c.template for c in m2.declare.constraints} == {"response", "precedence"}
    assert not list(out2.glob("*.png"))
    capsys.readouterr()
    assert main(["discover", "--compare", str(out), str(out2), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["arcs_added"] == [] and d["heuristics_removed"]
    assert main(["discover", "--compare", str(out), str(out)]) == 0
    assert "0 added, 0 removed, 0 changed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["discover", "LOG"], 2, "give LOG and --out DIR"),
        (["discover", "--compare", "A", "B", "--out", "X"], 2, "--compare takes two models"),
        (["discover", "--compare", "nowhere", "nowhere"], 2, "nowhere/model.json: file not found"),
        (["discover", "LOG", "--out", "X", "--pictures", "gif"], 2, "--pictures takes png, svg"),
        (["discover", "LOG", "--out", "X", "--templates", "nope"], 2, "unknown Declare templates"),
        (["discover", "LOG", "--out", "X", "--no-declare", "--templates", "init"], 2, "need the"),
        (["discover", "missing.xes", "--out", "X"], 2, "missing.xes: file not found"),
        (["discover", "--public", "--out", "X", "--keys", "K"], 2, "--public reads the DP"),
        (["discover", "--public", "--from", "h:1", "--org", "lab", "--out", "X"], 2, "no LOG or"),
        (["discover", "--public", "--from", "h:1", "--out", "X"], 2, "--public needs --keys"),
        (["discover", "LOG", "--out", "X", "--window", "3"], 2, "--window needs --public"),
        (["discover", "LOG", "--out", "X", "--at", "2014-01-01"], 2, "--at needs --public"),
    ],
)
def test_cli_errors_are_one_line(
    argv: list[str],
    code: int,
    message: str,
    running_example_log: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nowhere").mkdir()
    argv = [str(running_example_log) if a == "LOG" else a for a in argv]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse usage errors
        rc = int(exc.code or 0)
    err = capsys.readouterr().err
    assert rc == code
    assert message in err
    assert "Traceback" not in err
