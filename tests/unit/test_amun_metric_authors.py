"""``emd_freq`` is the frequency EMD as the Amun authors compute it.

The authors' comparison (``amun/earth_movers_distance.py``, ``earth_mover_dist_freq``) reads both
logs back from XES with pm4py, takes ``pm4py.discover_dfg`` of each (absolute directly-follows
counts, no artificial start/end edges), fills the edges missing on one side with 0, lists the
values in sorted-edge order and passes the two lists to ``scipy.stats.wasserstein_distance``
(unit weights). This test recomputes that chain independently on a real release written to
XES, so a change to :func:`compare_logs` that drifts from the paper's metric is caught.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from procvault.generators.xes import read_xes
from procvault.generators.xes_write import write_xes
from procvault.monitor.amun import AnonymizeSettings, CaseLog, anonymize, compare_logs


def _authors_emd_freq(path_a: Path, path_b: Path) -> float:
    pm4py = pytest.importorskip("pm4py")
    stats = pytest.importorskip("scipy.stats")
    from pm4py.objects.log.importer.xes import importer as xes_importer

    dfgs = []
    for path in (path_a, path_b):
        log = xes_importer.apply(str(path), parameters={"show_progress_bar": False})
        dfg, _start, _end = pm4py.discover_dfg(log)
        dfgs.append(dict(dfg))
    edges = sorted(set(dfgs[0]) | set(dfgs[1]))
    return float(
        stats.wasserstein_distance(
            [dfgs[0].get(e, 0) for e in edges], [dfgs[1].get(e, 0) for e in edges]
        )
    )


@pytest.mark.parametrize(("delta", "net"), [(0.2, "prototype"), (0.4, "paper")])
def test_emd_freq_matches_the_authors_chain(
    delta: float, net: str, shared_data: Path, tmp_path: Path
) -> None:
    src = shared_data / "logs" / "sepsis_cases.xes.gz"
    if not src.exists():
        pytest.fail(f"shared data file {src} is missing (set PROCVAULT_SHARED_DATA)")
    log = CaseLog.from_events(read_xes(src).events)
    release = anonymize(log, AnonymizeSettings(delta=delta, mode="amun", seed=1, amun_net=net))
    out = tmp_path / "anon.xes.gz"
    write_xes(release.log.to_events(), out)
    ours = compare_logs(log, release.log).emd_freq
    assert ours == pytest.approx(_authors_emd_freq(src, out), rel=1e-12, abs=1e-9)
