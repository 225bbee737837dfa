"""Process discovery through the real pipeline: Sepsis split across three organizations,
through agents, one or two vault workers with ``--discover`` and ``procvault models``, read by
each organization with ``procvault discover --from``. The exact consortium models equal pm4py's
discovery on the centralized log: ``discover_dfg`` (with start and end activities),
``discover_heuristics_net`` (dependency matrix, nodes, arcs) and ``discover_declare``, with
pm4py's defaults; and each organization's model equals that of one tracker fed the log."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pipeline_harness import ORGS, Deployment, procvault

from procvault.discovery.convert import heuristics_net, to_declare
from procvault.discovery.files import read_model
from procvault.generators._pm4py import import_pm4py
from procvault.generators.xes import read_xes
from procvault.monitor.discovery import DiscoveryTracker, build_model

pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_consortium_models_through_the_pipeline_equal_pm4py_on_the_whole_log(
    kafka_bootstrap: str, tmp_path: Path, sepsis_log: Path, workers: int
) -> None:
    dep = Deployment(kafka_bootstrap, tmp_path / "deploy", partitions=4)
    try:
        vaults = [
            dep.vault("--discover", "--discover-every", "2", worker=f"vault-{i + 1}")
            for i in range(workers)
        ]
        agents = [dep.agent(org, sepsis_log) for org in ORGS]
        for a in agents:
            a.wait(300)
        models = subprocess.run(
            procvault(
                "models",
                "--kafka",
                kafka_bootstrap,
                "--keys",
                str(dep.keys),
                "--topic-prefix",
                dep.prefix,
                "--once",
            ),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert models.returncode == 0, models.stderr[-3000:]
        assert "1 release(s); refused 0" in models.stderr, models.stderr[-2000:]
        read = {}
        for org in ORGS:
            out = tmp_path / f"models-{org}"
            shown = subprocess.run(
                procvault(
                    "discover",
                    "--from",
                    kafka_bootstrap,
                    "--org",
                    org,
                    "--keys",
                    str(dep.keys),
                    "--topic-prefix",
                    dep.prefix,
                    "--allow-insecure-attestation",
                    "--out",
                    str(out),
                    "--pictures",
                    "none",
                    "--json",
                ),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert shown.returncode == 0, shown.stderr[-3000:]
            summary = json.loads(shown.stdout)
            assert summary["finished"] and summary["partitions"] == 4, summary
            read[org] = read_model(out / "model.json")
        for v in vaults:
            v.stop()
    finally:
        dep.stop_all()

    direct = DiscoveryTracker()
    for e in read_xes(sepsis_log).replay(end_markers=True):
        direct.update(e)
    expected = build_model(direct.counts())
    for org, model in read.items():
        assert model == expected, org
    pm4py = import_pm4py()
    df = pm4py.read_xes(str(sepsis_log))
    dfg, start, end = pm4py.discover_dfg(df)
    counts = read[ORGS[0]].counts
    assert counts.dfg() == dict(dfg)
    assert counts.start_activities() == dict(start)
    assert counts.end_activities() == dict(end)
    assert counts.events == len(df)
    assert counts.cases_completed == df["case:concept:name"].nunique()
    # the heuristics net (pm4py's defaults) and the Declare model (pm4py's automatic ratios)
    ours, theirs = heuristics_net(read[ORGS[0]]), pm4py.discover_heuristics_net(df)
    assert ours.dependency_matrix == theirs.dependency_matrix
    assert {n: x.node_occ for n, x in ours.nodes.items()} == {
        n: x.node_occ for n, x in theirs.nodes.items()
    }
    assert _arcs(ours) == _arcs(theirs)
    declare = read[ORGS[0]].declare
    assert declare is not None
    assert to_declare(declare) == pm4py.discover_declare(df)


def _arcs(net: Any) -> dict[tuple[str, str], list[tuple[float, int]]]:
    out: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for name, node in net.nodes.items():
        for other, edges in node.output_connections.items():
            for e in edges:
                out.setdefault((name, other.node_name), []).append(
                    (e.dependency_value, e.dfg_value)
                )
    return out
