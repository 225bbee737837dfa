"""Pictures of discovered models (PNG or SVG, chosen by the file's suffix), drawn by graphviz.

The directly-follows graph, Petri nets and BPMN diagrams are drawn by pm4py's visualisers; the
heuristics net is drawn here (pm4py's own heuristics-net picture needs ``pydotplus``, which
procvault does not install): one box per node with its events, one arc per dependency with its
measure and count (dashed: the arcs of length-two loops), start and end activities linked to a
start and an end circle with their case counts. graphviz's ``dot`` program must be installed
(Debian: ``apt-get install graphviz``; ``scripts/setup.sh`` does it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Final

from procvault.discovery._io import atomic, atomic_bytes
from procvault.generators._pm4py import import_pm4py
from procvault.monitor.discovery import DiscoveredModel
from procvault.monitor.errors import ConfigError

__all__ = [
    "FORMATS",
    "draw_bpmn",
    "draw_dfg",
    "draw_heuristics",
    "draw_petri_net",
    "picture_format",
]

#: The picture formats (file suffixes) procvault draws.
FORMATS: Final = ("png", "svg")


def picture_format(path: str | os.PathLike[str]) -> str:
    """``"png"`` or ``"svg"`` from the file's suffix; ``ConfigError`` for anything else."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ConfigError(f"{path}: pictures are .png or .svg, not {Path(path).suffix or 'none'}")
    return fmt


def _need_dot() -> None:
    if shutil.which("dot") is None:
        raise ConfigError("graphviz's 'dot' is not installed (Debian: apt-get install graphviz)")


def draw_dfg(model: DiscoveredModel, path: str | os.PathLike[str]) -> Path:
    """The directly-follows graph with its counts (pm4py's ``save_vis_dfg``)."""
    picture_format(path)
    _need_dot()
    pm4py = import_pm4py()
    c = model.counts
    return atomic(
        path,
        lambda tmp: pm4py.save_vis_dfg(c.dfg(), c.start_activities(), c.end_activities(), tmp),
    )


def draw_petri_net(net: Any, im: Any, fm: Any, path: str | os.PathLike[str]) -> Path:
    """An accepting Petri net (pm4py's ``save_vis_petri_net``)."""
    picture_format(path)
    _need_dot()
    pm4py = import_pm4py()
    return atomic(path, lambda tmp: pm4py.save_vis_petri_net(net, im, fm, tmp))


def draw_bpmn(bpmn: Any, path: str | os.PathLike[str]) -> Path:
    """A BPMN diagram (pm4py's ``save_vis_bpmn``)."""
    picture_format(path)
    _need_dot()
    pm4py = import_pm4py()
    return atomic(path, lambda tmp: pm4py.save_vis_bpmn(bpmn, tmp))


def _fmt(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".") if x == x else "nan"  # noqa: PLR0124 (NaN test)


def draw_heuristics(model: DiscoveredModel, path: str | os.PathLike[str]) -> Path:
    """The heuristics net: nodes with their events, arcs with dependency and count."""
    fmt = picture_format(path)
    _need_dot()
    import graphviz  # type: ignore[import-untyped]

    h = model.heuristics
    g = graphviz.Digraph("heuristics", format=fmt)
    g.attr(rankdir="LR", fontname="Helvetica", bgcolor="white")
    g.attr("node", shape="box", style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica")
    g.attr("edge", fontname="Helvetica", fontsize="10")
    ids = {n.name: f"n{i}" for i, n in enumerate(h.nodes)}
    for n in h.nodes:
        g.node(ids[n.name], f"{n.name}\n{n.occurrences:,}")
    g.node("start", "", shape="circle", style="filled", fillcolor="#5cb85c", width="0.3")
    g.node("end", "", shape="doublecircle", style="filled", fillcolor="#d9534f", width="0.3")
    for n in h.nodes:
        if n.starts:
            g.edge("start", ids[n.name], label=f"{n.starts:,}", style="dotted")
        if n.ends:
            g.edge(ids[n.name], "end", label=f"{n.ends:,}", style="dotted")
    for a in h.arcs:
        if a.source in ids and a.target in ids:
            g.edge(
                ids[a.source],
                ids[a.target],
                label=f"{_fmt(a.dependency)} ({a.count:,})",
                style="dashed" if a.kind == "loop_two" else "solid",
            )
    return atomic_bytes(path, g.pipe(format=fmt))
