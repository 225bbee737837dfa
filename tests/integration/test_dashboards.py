"""Every Grafana panel query, evaluated by the real Prometheus (the Debian package).

Prometheus runs exactly as ``procvault observe`` runs it (:class:`LocalPrometheus`, the shared
``compose/prometheus/prometheus.yml``) and scrapes three endpoints serving the vault's, an
agent's and the release stage's metrics while a feeder keeps observing. Each query of each
panel of each dashboard in ``compose/grafana/dashboards`` must return a non-empty instant vector
of finite values.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from procvault.metrics.exporters import (
    AGENT_WITHHELD_REASONS,
    PANE_OUTCOMES,
    REJECT_REASONS,
    RELEASE_KINDS,
    AgentMetrics,
    ReleaseMetrics,
    VaultMetrics,
    serve,
)
from procvault.metrics.prometheus import LocalPrometheus, Target

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(120)]

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
DASHBOARDS = sorted((COMPOSE / "grafana" / "dashboards").glob("*.json"))


def _panel_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))

    for panel in walk(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"{panel['title']} [{target['refId']}]", target["expr"]


QUERIES = [q for path in DASHBOARDS for q in _panel_queries(json.loads(path.read_text()))]


class _Feeder:
    """Three metric endpoints and a thread that keeps every series moving."""

    def __init__(self) -> None:
        # detailed mode: the panels marked --metrics-detail have data too
        self.vault = VaultMetrics(orgs=["hospital", "lab", "ward"], detailed=True)
        self.agent = AgentMetrics()
        self.release = ReleaseMetrics(rules=["R1", "R2"], detailed=True)
        self.servers = [serve(m.registry, 0) for m in (self.vault, self.agent, self.release)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def targets(self) -> list[Target]:
        roles = ("vault", "agent", "release")
        return [Target(f"127.0.0.1:{s.port}", r) for s, r in zip(self.servers, roles, strict=True)]

    def _run(self) -> None:
        rng = random.Random(7)
        v, a, r = self.vault, self.agent, self.release
        v.set_attestation_insecure(True)
        step = 0
        while not self._stop.wait(0.05):
            step += 1
            for org in ("hospital", "lab", "ward"):
                v.records_in(org, 30)
            v.events_applied(85)
            v.records_rejected(rng.choice(sorted(REJECT_REASONS)))
            v.observe_engine([rng.lognormvariate(-12, 0.5) for _ in range(85)])
            v.observe_latency("applied", [rng.lognormvariate(-5, 1) for _ in range(85)])
            for p in range(3):
                v.set_consumer_lag(p, rng.randrange(100))
            v.set_active_cases(200 + step % 50)
            v.batch_done(rng.uniform(0.005, 0.03))
            v.alerts_sent(1)
            v.cases_completed(2)
            a.events_read(90)
            a.events_sent(85)
            a.events_withheld(rng.choice(sorted(AGENT_WITHHELD_REASONS)))
            a.heartbeats(1)
            a.set_paused(False)
            a.observe_sends([rng.lognormvariate(-8, 0.5) for _ in range(85)])
            r.released(sorted(RELEASE_KINDS)[step % 3])
            r.set_budget(spent=0.1 * (step % 10), remaining=1 - 0.1 * (step % 10))
            r.observe_release_latency(rng.uniform(0.01, 0.2))
            r.observe_released(rng.lognormvariate(3, 0.5))
            r.set_pane_values(
                cases={k: rng.randrange(1, 50) for k in sorted(PANE_OUTCOMES)},
                violations={"R1": rng.randrange(5), "R2": rng.randrange(5)},
            )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for s in self.servers:
            s.close()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrometheus]:
    import shutil

    if shutil.which("prometheus") is None:
        pytest.fail("the Debian prometheus package is missing: run scripts/setup.sh")
    feeder = _Feeder()
    prom = LocalPrometheus(
        data_dir=tmp_path_factory.mktemp("prometheus"), targets=feeder.targets, port=0
    )
    try:
        prom.start(timeout=30)
        prom.wait_for_targets(timeout=30)
        # rate() needs two scrapes of each target inside its window.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            probe = (
                "count(rate(procvault_agent_events_sent_total[1m]) > 0)"
                " + count(rate(procvault_events_applied_total[1m]) > 0)"
                " + count(rate(procvault_releases_total[1m]) > 0)"
            )
            result = prom.query(probe)["result"]
            if result and float(result[0]["value"][1]) >= 3:
                break
            time.sleep(0.5)
        yield prom
    finally:
        prom.stop()
        feeder.close()


def test_there_are_dashboards_with_queries() -> None:
    assert DASHBOARDS, "no dashboard JSON in compose/grafana/dashboards"
    assert len(QUERIES) >= 20


@pytest.mark.parametrize(("panel", "expr"), QUERIES, ids=[q[0] for q in QUERIES])
def test_every_panel_query_returns_data(prometheus: LocalPrometheus, panel: str, expr: str) -> None:
    data = prometheus.query(expr)
    assert data["resultType"] == "vector", (panel, expr, data["resultType"])
    assert data["result"], f"{panel}: no series for {expr}"
    values = [float(s["value"][1]) for s in data["result"]]
    assert all(math.isfinite(x) for x in values), (panel, expr, values)
