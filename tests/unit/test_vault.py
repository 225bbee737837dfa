"""The Vault façade: lifecycle, bad input, bounded memory, and the `procvault monitor` CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from seqnet import sequence_petri

from procvault.cli import main
from procvault.config.models import load_model
from procvault.generators._pm4py import import_pm4py
from procvault.generators.xes import read_xes
from procvault.monitor.event import Event
from procvault.monitor.petri import CompiledNet, ModelError, compile_net
from procvault.monitor.tbr import TokenReplay
from procvault.monitor.vault import Vault, VaultSettings

pm4py = import_pm4py()
T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def seq() -> CompiledNet:
    return compile_net(*sequence_petri())


def _ev(case: str, act: str, minutes: float = 0) -> Event:
    return Event.create(case, act, T0 + timedelta(minutes=minutes))


def test_fitting_case(seq: CompiledNet) -> None:
    v = Vault(seq)
    assert not any(v.update(_ev("c", a)) for a in "ABC")
    (r,) = v.update(Event.case_end("c", T0)).completed
    assert (r.events, r.produced, r.consumed, r.missing, r.remaining, r.is_fit, r.fitness) == (
        3,
        4,
        4,
        0,
        0,
        True,
        1.0,
    )
    assert r.completed_by == "end_marker"
    assert v.state().active_cases == 0


def test_unknown_activity_is_reported_and_skipped(seq: CompiledNet) -> None:
    v = Vault(seq)
    (dev,) = v.update(_ev("c", "Z")).deviations
    assert dev.kind == "unknown_activity" and dev.case_id == "c" and dev.transition is None
    for a in "ABC":
        v.update(_ev("c", a))
    (r,) = v.flush()
    assert r.is_fit and r.events == 4 and r.unknown_activities == 1 and r.completed_by == "flush"


def test_events_after_completion_are_reported_not_applied(seq: CompiledNet) -> None:
    v = Vault(seq, VaultSettings(complete_on_final_marking=True))
    ups = [v.update(_ev("c", a)) for a in "ABC"]
    assert ups[-1].completed[0].completed_by == "final_marking"
    (dev,) = v.update(_ev("c", "A")).deviations
    assert dev.kind == "after_completion"
    assert not v.is_active("c")
    assert v.update(Event.case_end("c", T0)) == v.update(Event.case_end("never-seen", T0))


def test_remembered_completions_are_bounded(seq: CompiledNet) -> None:
    v = Vault(seq, VaultSettings(remember_completed=2))
    for i in range(5):
        v.update(_ev(f"c{i}", "A"))
        v.update(Event.case_end(f"c{i}", T0))
    assert v.state().remembered_completed == 2
    assert v.update(_ev("c4", "A")).deviations[0].kind == "after_completion"
    assert not v.update(_ev("c0", "A"))  # forgotten: starts afresh


def test_idle_timeout_in_event_time(seq: CompiledNet) -> None:
    v = Vault(seq, VaultSettings(idle_timeout=timedelta(minutes=30)))
    v.update(_ev("old", "A", 0))
    v.update(_ev("busy", "A", 10))
    up = v.update(_ev("busy", "B", 35))  # watermark 35: "old" has been idle since 0
    assert [r.case_id for r in up.completed] == ["old"]
    assert up.completed[0].completed_by == "idle"
    assert not v.update(_ev("new", "A", 31))  # late but within the timeout; watermark stays 35
    # in the order of their own completion times: "new" at 61, "busy" at 65
    done = v.advance(T0 + timedelta(minutes=70))
    assert [(r.case_id, r.completed_at) for r in done] == [
        ("new", T0 + timedelta(minutes=61)),
        ("busy", T0 + timedelta(minutes=65)),
    ]
    assert v.state().active_cases == 0


def test_results_do_not_depend_on_cache_size(shared_data: Path) -> None:
    m = load_model(shared_data / "models/promtee/pnml/sepsis.pnml")
    net = compile_net(m.net, m.initial_marking, m.final_marking)
    events = list(read_xes(shared_data / "logs/sepsis_cases.xes.gz").replay(end_markers=True))
    big, tiny = Vault(net), Vault(net, VaultSettings(cache_size=3))
    a = [r for e in events for r in big.update(e).completed]
    b = [r for e in events for r in tiny.update(e).completed]
    assert a == b
    assert tiny.state().cached_markings <= 3 < big.state().cached_markings


def test_snapshot_restore_round_trip(seq: CompiledNet) -> None:
    a, b = TokenReplay(seq), TokenReplay(seq)
    a.update("c", "A")
    a.update("c", "C")  # a deviation: tokens inserted
    b.restore("c", a.snapshot("c"))
    assert b.snapshot("c") == a.snapshot("c")
    assert b.complete("c") == a.complete("c")


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        ("weight", "weight 2"),
        ("empty_im", "initial marking is empty"),
        ("empty_fm", "final marking is empty"),
    ],
)
def test_models_we_refuse(mutate: str, match: str) -> None:
    from pm4py.objects.petri_net.obj import Marking

    net, im, fm = sequence_petri()
    if mutate == "weight":
        next(iter(net.arcs)).weight = 2
    elif mutate == "empty_im":
        im = Marking()
    else:
        fm = Marking()
    with pytest.raises(ModelError, match=match):
        compile_net(net, im, fm)


def test_a_net_that_is_not_a_workflow_net_still_replays_like_pm4py(make_pm4py_log: Any) -> None:
    """Two source places, a transition without input (always enabled) and a dead end."""
    from pm4py.objects.petri_net.obj import Marking, PetriNet
    from pm4py.objects.petri_net.utils.petri_utils import add_arc_from_to

    net = PetriNet("odd")
    s1, s2, mid, sink, dead = (PetriNet.Place(n) for n in ("s1", "s2", "mid", "sink", "dead"))
    for p in (s1, s2, mid, sink, dead):
        net.places.add(p)
    a, b, gen, stop = (PetriNet.Transition(n, n) for n in ("A", "B", "GEN", "STOP"))
    for t in (a, b, gen, stop):
        net.transitions.add(t)
    for x, y in (
        (s1, a),
        (s2, a),
        (a, mid),
        (mid, b),
        (b, sink),
        (gen, mid),
        (mid, stop),
        (stop, dead),
    ):
        add_arc_from_to(x, y, net)
    im, fm = Marking({s1: 1, s2: 1}), Marking({sink: 1})
    traces = [["A", "B"], ["GEN", "B", "B"], ["STOP"], ["A", "STOP", "B"], []]
    log = make_pm4py_log(traces)
    expected = pm4py.conformance_diagnostics_token_based_replay(log, net, im, fm)
    v = Vault(compile_net(net, im, fm))
    for i, acts in enumerate(traces):
        for x in acts:
            v.update(_ev(f"c{i}", x))
    got = {r.case_id: r for r in v.flush()}
    for i, d in enumerate(expected):
        if not traces[i]:
            continue  # an empty case never starts in a stream
        r = got[f"c{i}"]
        assert (r.produced, r.consumed, r.missing, r.remaining, r.is_fit) == (
            d["produced_tokens"],
            d["consumed_tokens"],
            d["missing_tokens"],
            d["remaining_tokens"],
            d["trace_is_fit"],
        )


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="idle_timeout"):
        VaultSettings(idle_timeout=timedelta(0))
    with pytest.raises(ValueError, match="cache_size"):
        VaultSettings(cache_size=0)


def test_cli_monitor_json_and_case_results(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cases.jsonl"
    code = main(
        [
            "monitor",
            str(shared_data / "logs/sepsis_cases.xes.gz"),
            "--model",
            str(shared_data / "models/promtee/pnml/sepsis.pnml"),
            "--case-results",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["events"] == 15_214 and summary["cases"] == 1_050
    assert summary["final_marking_source"] == "sink place"
    assert (
        summary["events_per_second"] > 0
        and summary["latency_us"]["p99"] >= summary["latency_us"]["p50"]
    )
    assert summary["peak_rss_mb"] > 0 and summary["seconds"] > 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1_050
    assert {
        "case",
        "events",
        "produced",
        "consumed",
        "missing",
        "remaining",
        "fitness",
        "is_fit",
    } <= set(rows[0])
    assert sum(r["events"] for r in rows) == 15_214


def test_cli_monitor_bad_model(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "m.pnml"
    bad.write_text("<pnml>")
    code = main(["monitor", str(shared_data / "logs/running-example.xes.gz"), "--model", str(bad)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("procvault: error: ") and str(bad) in err and len(err.splitlines()) == 1


def test_cli_monitor_alignment_mode_equals_pm4py(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import warnings

    log_path = shared_data / "logs/roadtraffic100traces.xes.gz"
    model_path = shared_data / "models/pm4py/roadtraffic.pnml"
    out = tmp_path / "cases.jsonl"
    code = main(
        [
            "monitor",
            str(log_path),
            "--model",
            str(model_path),
            "--mode",
            "alignments",
            "--case-results",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["mode"] == "alignments"
    ours = {r["case"]: r["alignment_cost"] for r in map(json.loads, out.read_text().splitlines())}
    m = load_model(model_path)
    log = pm4py.read_xes(str(log_path), return_legacy_log_object=True)
    with warnings.catch_warnings():  # pm4py's soundness check trips numpy deprecations
        warnings.simplefilter("ignore")
        diag = pm4py.conformance_diagnostics_alignments(
            log, m.net, m.initial_marking, m.final_marking
        )
    expected = {
        t.attributes["concept:name"]: d["cost"] // 10_000 for t, d in zip(log, diag, strict=True)
    }
    assert ours == expected
