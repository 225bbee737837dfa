"""A DP process map from a released record: post-processing of public values only.

:func:`build_map` turns a verified :class:`~procvault.monitor.privacy.records.PaneRecord` or
:class:`~procvault.monitor.privacy.records.WindowRecord` into a :class:`ProcessMap`:

* **nodes**: the activities (``activity`` statistic: cases that executed the activity), with
  the cases that had a missing-token deviation there (``deviation``), if released;
* **edges**: the directly-follows pairs (``directly_follows``) whose noisy count reaches the
  display threshold ``min_count``; the others are counted as hidden, not drawn;
* **conformance**: the rate of fitting cases among the completed cases checked against the
  model, ``fit / (fit + unfit)`` from the ``cases`` statistic, and the mean missing and
  remaining tokens per checked case (``tokens``);
* **violations**: per rule, the cases violating it (``violation``) and that count per case
  completed in the same pane or window.

Everything here reads the released (noisy) values and nothing else: a negative noisy value is
*shown* as 0 (the released value is kept in :attr:`Node.count`/:attr:`Edge.count`), a rate's
numerator and denominator are clamped at 0 before dividing and the rate to ``[0, 1]``; no value
is ever corrected from exact data, which this module never sees. Being post-processing of DP
releases, none of it costs privacy budget.

**Display threshold.** Every known key is released, zeros included, so pairs that never
occurred show up with noise-level counts. By default (``min_count=None``) a key is shown when
its noisy count reaches three times the standard deviation of its noise, from the record's
(data-independent) mechanism: a discrete Laplace draw of scale ``b`` has variance
``2 e^(-1/b) / (1 - e^(-1/b))²``, and a window sums ``panes - withheld_panes`` independent
draws. A window record carries no mechanisms: pass those of any pane record of the same
release (:func:`build_map`'s ``mechanisms``); without them the default threshold is 1.

:func:`render_map` gives a ``rich`` renderable for the terminal, :func:`layout` a deterministic
layered layout (longest path over the shown edges, cycles broken by a depth-first search) and
:func:`write_graph` draws the map as PNG or SVG with matplotlib (no graphviz needed).

Examples
--------
>>> from datetime import UTC, datetime
>>> from procvault.monitor.privacy.records import Entry, StatisticRelease, WindowRecord
>>> t = datetime(2024, 1, 1, tzinfo=UTC)
>>> def stat(name, values):
...     entries = tuple(Entry(tuple(k.split(">")), v) for k, v in values.items())
...     return StatisticRelease(name, entries)
>>> record = WindowRecord(
...     first_pane=0, last_pane=1, start=t, end=t, panes=2, withheld_panes=0,
...     statistics=(
...         stat("activity", {"A": 40, "B": 31, "C": -3}),
...         stat("directly_follows", {"A>B": 29, "B>A": 2, "A>C": -1}),
...         stat("cases", {"completed_fit": 18, "completed_unfit": 6}),
...         stat("violation", {"R1": 3}),
...     ),
... )
>>> pm = build_map(record, min_count=5)
>>> [(n.name, n.count, n.shown) for n in pm.nodes]
[('A', 40, 40), ('B', 31, 31), ('C', -3, 0)]
>>> [(e.source, e.target, e.shown) for e in pm.edges], pm.hidden_edges
([('A', 'B', 29)], 2)
>>> pm.conformance.rate, pm.violations[0].rate
(0.75, 0.125)
>>> layout(pm)
{'A': (0, 0), 'B': (1, 0)}
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from procvault.monitor.event import PLACEHOLDER_ACTIVITY

if TYPE_CHECKING:
    from procvault.monitor.privacy.intervals import Rate
    from procvault.monitor.privacy.records import MechanismInfo, PaneRecord, WindowRecord

__all__ = [
    "GRAPH_FORMATS",
    "Conformance",
    "Edge",
    "Node",
    "ProcessMap",
    "RuleRate",
    "build_map",
    "graph_format",
    "layout",
    "noise_sd",
    "render_map",
    "write_graph",
]

#: File extensions :func:`write_graph` writes.
GRAPH_FORMATS: Final = ("png", "svg")
#: The default display threshold in noise standard deviations.
SIGMAS: Final = 3.0

Key = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Node:
    """An activity. ``count`` is the released value (``None``: not released, e.g. an activity
    seen only in a released pair); ``visible``: drawn in the graph (count at the threshold,
    or an endpoint of a shown edge)."""

    name: str
    count: int | None
    deviations: int | None = None
    visible: bool = True

    @property
    def shown(self) -> int:
        """The count as displayed: negative noisy values as 0."""
        return max(self.count or 0, 0)


@dataclass(frozen=True, slots=True)
class Edge:
    """A directly-follows pair with its released noisy ``count``; ``known``: a known key
    (every one is released), else a key that passed the release's DP threshold."""

    source: str
    target: str
    count: int
    known: bool = True

    @property
    def shown(self) -> int:
        """The count as displayed (never negative)."""
        return max(self.count, 0)


@dataclass(frozen=True, slots=True)
class Conformance:
    """The ``cases`` statistic (released values) and what follows from it.

    ``rate`` is ``fit / (fit + unfit)`` over the completed cases checked against the model,
    each clamped at 0 (``None`` when that is 0); ``missing``/``remaining`` the mean missing
    and remaining tokens per checked case (``None`` without ``tokens``).
    """

    started: int | None
    fit: int | None
    unfit: int | None
    unchecked: int | None
    rate: float | None
    missing: float | None = None
    remaining: float | None = None
    #: the rate with its 95% interval (``None``: the noise is not known, no mechanisms)
    interval: Rate | None = None

    @property
    def completed(self) -> int:
        """Completed cases as displayed (each released value clamped at 0)."""
        return sum(max(v or 0, 0) for v in (self.fit, self.unfit, self.unchecked))

    @property
    def checked(self) -> int:
        """Completed cases checked against the model, as displayed."""
        return sum(max(v or 0, 0) for v in (self.fit, self.unfit))


@dataclass(frozen=True, slots=True)
class RuleRate:
    """A rule's violating cases (released value) per case completed in the same pane or
    window (``None`` when no completion was released; the rate can exceed 1 in a pane, where
    a case may violate a rule before the pane it completes in, and is then shown as is)."""

    rule: str
    count: int
    rate: float | None
    #: the rate with its 95% interval (``None``: the noise is not known)
    interval: Rate | None = None

    @property
    def shown(self) -> int:
        """The count as displayed (never negative)."""
        return max(self.count, 0)


@dataclass(frozen=True, slots=True)
class ProcessMap:
    """What :func:`build_map` makes of a record (all values released ones)."""

    kind: Literal["pane", "window"]
    title: str
    start: datetime
    end: datetime
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    hidden_edges: int
    min_count: int
    node_min_count: int
    conformance: Conformance | None = None
    violations: tuple[RuleRate, ...] = ()
    totals: tuple[tuple[Key, int], ...] = ()
    notes: tuple[str, ...] = ()
    #: Released count of placeholders (events withheld at their source), if published.
    withheld: int | None = None
    #: Per statistic, the half-width of its values' 95% noise interval (from the mechanisms)
    noise: tuple[tuple[str, int], ...] = ()

    def plus_minus(self, statistic: str) -> str:
        """``±h`` of ``statistic``'s 95% noise interval (empty when not known)."""
        h = dict(self.noise).get(statistic)
        return "" if h is None else f" ±{h:,}"

    def outgoing(self, name: str, top: int | None = None) -> list[Edge]:
        """The shown edges leaving ``name`` (self-loop included), strongest first."""
        out = [e for e in self.edges if e.source == name]
        return out if top is None else out[:top]

    @property
    def max_edge(self) -> int:
        """The largest shown edge count (0 without edges)."""
        return max((e.shown for e in self.edges), default=0)

    @property
    def max_node(self) -> int:
        """The largest shown node count (0 without nodes)."""
        return max((n.shown for n in self.nodes), default=0)


# ----------------------------------------------------------------------------- the model
def noise_sd(mechanisms: Iterable[MechanismInfo], statistic: str, panes: int = 1) -> float | None:
    """The standard deviation of the noise of ``statistic`` summed over ``panes`` panes
    (``None`` if no mechanism of that name is given).

    >>> from procvault.monitor.privacy.records import MechanismInfo
    >>> m = MechanismInfo("activity", "discrete_laplace", 10.0, 2, 2, 1, 0.2, 0.0, None)
    >>> round(noise_sd([m], "activity"), 2), round(noise_sd([m], "activity", panes=4), 2)
    (14.14, 28.27)
    """
    for m in mechanisms:
        if m.name == statistic:
            if m.scale <= 0 or panes <= 0:
                return 0.0
            q = math.exp(-1.0 / m.scale)
            return math.sqrt(2.0 * q / (1.0 - q) ** 2 * panes)
    return None


def _threshold(sd: float | None) -> int:
    return 1 if sd is None else max(1, math.ceil(SIGMAS * sd))


def _values(record: PaneRecord | WindowRecord, name: str) -> dict[Key, tuple[int, bool]] | None:
    for s in record.statistics:
        if s.name == name:
            out = {e.key: (e.value, True) for e in s.known}
            out.update({e.key: (e.value, False) for e in s.other})
            return out
    return None


def _when(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M")


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def build_map(
    record: PaneRecord | WindowRecord,
    *,
    min_count: int | None = None,
    mechanisms: Sequence[MechanismInfo] | None = None,
    notes: Sequence[str] = (),
) -> ProcessMap:
    """The process map of a pane or window record.

    Parameters
    ----------
    record
        A verified pane or window record.
    min_count
        Show a pair (and draw an activity) when its noisy count is at least this (and > 0);
        ``None``: three times the noise standard deviation of its statistic (see the module).
    mechanisms
        For a window record: the mechanisms of a pane record of the same release (for the
        default threshold). A pane record uses its own.
    notes
        Extra lines for the header (the caller's, e.g. "pane 12 withheld").
    """
    from procvault.monitor.privacy.records import PaneRecord

    if isinstance(record, PaneRecord):
        kind: Literal["pane", "window"] = "pane"
        mechs: Sequence[MechanismInfo] = record.mechanisms
        panes = 1
        title = (
            f"pane {record.pane.index}  {_when(record.pane.start)} → {_when(record.pane.end)}"
            f"  ε={record.epsilon:.4g} per case"
        )
        start, end = record.pane.start, record.pane.end
    else:
        kind = "window"
        mechs = mechanisms or ()
        panes = record.panes - record.withheld_panes
        title = (
            f"window of {record.panes} panes ({record.first_pane}..{record.last_pane})  "
            f"{_when(record.start)} → {_when(record.end)}"
            + (f"  {record.withheld_panes} withheld" if record.withheld_panes else "")
        )
        start, end = record.start, record.end
    from procvault.monitor.privacy.intervals import mechanism_half_width, rate

    noise = tuple(
        (name, h)
        for name in ("activity", "directly_follows", "deviation", "cases", "violation")
        if (h := mechanism_half_width(mechs, name, panes=panes)) is not None
    )

    def h975(name: str) -> int | None:  # for rates: both counts at 97.5%, jointly >= 95%
        return mechanism_half_width(mechs, name, panes=panes, level=0.975)

    if min_count is None:
        edge_min = _threshold(noise_sd(mechs, "directly_follows", panes))
        node_min = _threshold(noise_sd(mechs, "activity", panes))
    else:
        edge_min = node_min = max(min_count, 1)

    df = _values(record, "directly_follows") or {}
    all_edges = [
        Edge(k[0], k[1], v, known)
        for k, (v, known) in df.items()
        if len(k) == 2  # a pair; anything else is not ours to draw
    ]
    edges = sorted(
        (e for e in all_edges if e.count >= edge_min),
        key=lambda e: (-e.count, e.source, e.target),
    )
    acts = _values(record, "activity") or {}
    withheld = acts.pop((PLACEHOLDER_ACTIVITY,), None)  # no step of the process: not a node
    devs = _values(record, "deviation")
    endpoints = {e.source for e in edges} | {e.target for e in edges}
    names = {k[0] for k in acts if len(k) == 1} | {
        n for e in all_edges for n in (e.source, e.target)
    }
    nodes = []
    for name in names:
        count = acts.get((name,), (None, True))[0]
        dev = None if devs is None else max(devs.get((name,), (0, True))[0], 0)
        visible = name in endpoints or (count is not None and count >= node_min)
        nodes.append(Node(name, count, dev, visible))
    nodes.sort(key=lambda n: (-n.shown, n.name))

    conformance = None
    cases = _values(record, "cases")
    if cases is not None:

        def case(key: str) -> int | None:
            got = cases.get((key,))
            return None if got is None else got[0]

        fit, unfit = case("completed_fit"), case("completed_unfit")
        checked = max(fit or 0, 0) + max(unfit or 0, 0)
        rate_ = _ratio(max(fit or 0, 0), checked)
        tokens = _values(record, "tokens")
        missing = remaining = None
        if tokens is not None:
            missing = _ratio(max(tokens.get(("missing",), (0, True))[0], 0), checked)
            remaining = _ratio(max(tokens.get(("remaining",), (0, True))[0], 0), checked)
        hc = h975("cases")
        interval = None
        if hc is not None:
            # checked = fit + unfit: two draws, so twice the half-width (a sound bound)
            interval = rate(max(fit or 0, 0), checked, hc, 2 * hc, upper=1.0)
        conformance = Conformance(
            case("started"),
            fit,
            unfit,
            case("completed_unchecked"),
            None if rate_ is None else min(rate_, 1.0),
            missing,
            remaining,
            interval,
        )

    violations: list[RuleRate] = []
    viol = _values(record, "violation")
    if viol is not None:
        completed = conformance.completed if conformance is not None else 0
        hv, hc = h975("violation"), h975("cases")
        for key, (v, _known) in sorted(viol.items()):
            interval = None
            if hv is not None and hc is not None:  # completed sums three draws
                interval = rate(v, completed, hv, 3 * hc)
            violations.append(RuleRate("/".join(key), v, _ratio(max(v, 0), completed), interval))
        violations.sort(key=lambda r: (-r.count, r.rule))

    totals: tuple[tuple[Key, int], ...] = ()
    if isinstance(record, PaneRecord) and record.totals is not None:
        totals = tuple((e.key, e.value) for e in record.totals.entries)
        notes = (*notes, f"running totals after {record.totals.panes} panes")

    return ProcessMap(
        kind=kind,
        title=title,
        start=start,
        end=end,
        nodes=tuple(nodes),
        edges=tuple(edges),
        hidden_edges=len(all_edges) - len(edges),
        min_count=edge_min,
        node_min_count=node_min,
        conformance=conformance,
        violations=tuple(violations),
        totals=totals,
        notes=tuple(notes),
        withheld=None if withheld is None else withheld[0],
        noise=noise,
    )


# ----------------------------------------------------------------------------- layout
def layout(pm: ProcessMap) -> dict[str, tuple[int, int]]:
    """A deterministic layered layout of the visible nodes: ``name -> (layer, row)``.

    Cycles are broken by a depth-first search along the shown edges (strongest first), from
    the most source-like node first (largest share of outgoing over incoming flow; ties by
    count, then name); each remaining (forward) edge goes at least one layer down (longest
    path); rows within a layer follow a few barycenter sweeps. Self-loops are ignored.
    """
    visible = [n for n in pm.nodes if n.visible]
    names = [n.name for n in visible]
    count = {n.name: n.shown for n in visible}
    edges = [
        e for e in pm.edges if e.source != e.target and e.source in count and e.target in count
    ]
    succ: dict[str, list[str]] = {n: [] for n in names}
    flow_in = dict.fromkeys(names, 0)
    flow_out = dict.fromkeys(names, 0)
    for e in edges:  # strongest first: pm.edges is sorted
        succ[e.source].append(e.target)
        flow_out[e.source] += e.shown
        flow_in[e.target] += e.shown

    def source_score(n: str) -> tuple[float, int, str]:
        total = flow_in[n] + flow_out[n]
        share = (flow_in[n] - flow_out[n]) / total if total else 0.0
        return (share, -count[n], n)

    # depth-first search: the edges into a node on the stack are back edges
    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    back: set[tuple[str, str]] = set()
    for root in sorted(names, key=source_score):
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        order.append(root)
        while stack:
            node, i = stack.pop()
            if i < len(succ[node]):
                stack.append((node, i + 1))
                nxt = succ[node][i]
                s = state.get(nxt)
                if s is None:
                    state[nxt] = 1
                    order.append(nxt)
                    stack.append((nxt, 0))
                elif s == 1:
                    back.add((node, nxt))
            else:
                state[node] = 2
    # longest path over the forward edges, in a topological order
    forward = [(e.source, e.target) for e in edges if (e.source, e.target) not in back]
    preds: dict[str, list[str]] = {n: [] for n in names}
    indeg = dict.fromkeys(names, 0)
    fsucc: dict[str, list[str]] = {n: [] for n in names}
    for a, b in forward:
        preds[b].append(a)
        fsucc[a].append(b)
        indeg[b] += 1
    rank = {n: i for i, n in enumerate(order)}
    ready = sorted((n for n in names if indeg[n] == 0), key=rank.__getitem__)
    layer = dict.fromkeys(names, 0)
    while ready:
        n = ready.pop(0)
        for m in fsucc[n]:
            layer[m] = max(layer[m], layer[n] + 1)
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
                ready.sort(key=rank.__getitem__)
    # rows: discovery order, then barycenter sweeps (down with predecessors, up with successors)
    layers: dict[int, list[str]] = {}
    for n in order:
        layers.setdefault(layer[n], []).append(n)
    row = {n: i for members in layers.values() for i, n in enumerate(members)}
    undirected_pred: dict[str, list[str]] = {n: [] for n in names}
    undirected_succ: dict[str, list[str]] = {n: [] for n in names}
    for e in edges:
        a, b = e.source, e.target
        if layer[a] < layer[b]:
            undirected_pred[b].append(a)
            undirected_succ[a].append(b)
        elif layer[b] < layer[a]:
            undirected_pred[a].append(b)
            undirected_succ[b].append(a)
    depth = sorted(layers)
    for sweep in range(4):
        seq = depth if sweep % 2 == 0 else depth[::-1]
        nbrs = undirected_pred if sweep % 2 == 0 else undirected_succ
        for d in seq:
            members = layers[d]

            def bary(n: str, nb: Mapping[str, list[str]] = nbrs) -> tuple[float, int]:
                ns = nb[n]
                return (sum(row[m] for m in ns) / len(ns) if ns else float(row[n]), row[n])

            members.sort(key=bary)
            for i, n in enumerate(members):
                row[n] = i
    return {n: (layer[n], row[n]) for n in sorted(names, key=lambda n: (layer[n], row[n]))}


# ----------------------------------------------------------------------------- terminal
def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


def _num(value: int | None) -> str:
    return "-" if value is None else f"{max(value, 0):,}"


def _rate_text(r: float | None, interval: Rate | None) -> str:
    """A rate with its 95% interval, or withheld when the noise is wider than the rate."""
    if interval is None:
        return _pct(r) + ("" if r is None else " (noise unknown)")
    return interval.text()


def render_map(pm: ProcessMap | None, *, top: int = 3, empty: str = "no pane record yet") -> Any:
    """A ``rich`` renderable of the map: header, activities with their strongest next
    activities (in flow order), conformance and violation rates."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    if pm is None:
        return Text(empty, style="dim")
    parts: list[Any] = [Text(f"DP process map · {pm.title}", style="bold")]
    parts += [Text(note, style="yellow") for note in pm.notes if "running totals" not in note]
    pos = layout(pm)
    ordered = sorted(
        pm.nodes,
        key=lambda n: (0, *pos[n.name]) if n.name in pos else (1, -n.shown, 0),
    )
    acts = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    acts.add_column("activity")
    acts.add_column("cases", justify="right")
    has_dev = any(n.deviations is not None for n in pm.nodes)
    if has_dev:
        acts.add_column("deviations", justify="right")
    pair_pm = pm.plus_minus("directly_follows")
    acts.add_column(
        f"strongest next (pairs ≥ {pm.min_count:,}" + (f", each{pair_pm}" if pair_pm else "") + ")"
    )
    for n in ordered:
        nxt = pm.outgoing(n.name, top)
        more = len(pm.outgoing(n.name)) - len(nxt)
        follow = ", ".join(f"{'↺' if e.target == n.name else e.target} {e.shown:,}" for e in nxt)
        if more > 0:
            follow += f", +{more}"
        style = "" if n.visible else "dim"
        cells = [n.name, _num(n.count) + ("" if n.count is None else pm.plus_minus("activity"))]
        if has_dev:
            cells.append(_num(n.deviations))
        cells.append(follow)
        acts.add_row(*cells, style=style)
    parts.append(acts)
    c = pm.conformance
    if c is not None:
        cases_pm = pm.plus_minus("cases")
        line = (
            f"conformance {_rate_text(c.rate, c.interval)} fit ({_num(c.fit)}{cases_pm} of "
            f"{c.checked:,} checked completed cases; {_num(c.unchecked)}{cases_pm} unchecked; "
            f"{_num(c.started)}{cases_pm} started)"
        )
        if c.missing is not None and c.remaining is not None:
            line += f"; tokens per checked case: {c.missing:.2f} missing, {c.remaining:.2f} left"
        parts.append(Text(line))
    if pm.withheld is not None and pm.withheld >= pm.node_min_count:
        parts.append(Text(f"withheld at the source (placeholders): {pm.withheld:,}"))
    if pm.violations:
        viol = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        viol.add_column("rule")
        viol.add_column("violating cases", justify="right")
        viol.add_column("per completed case", justify="right")
        for r in pm.violations:
            viol.add_row(
                r.rule, f"{r.shown:,}{pm.plus_minus('violation')}", _rate_text(r.rate, r.interval)
            )
        parts.append(viol)
    if pm.totals:
        totals = "  ".join(f"{'/'.join(k)}={max(v, 0):,}" for k, v in pm.totals)
        parts.append(Text(f"since start: {totals}", style="dim"))
    parts.append(
        Text(
            "noisy (DP) values, ± their 95% noise interval; negatives shown as 0; "
            f"{pm.hidden_edges:,} pairs below "
            f"{pm.min_count:,} hidden; activities below {pm.node_min_count:,} dimmed",
            style="dim",
        )
    )
    return Group(*parts)


# ----------------------------------------------------------------------------- graph image
def graph_format(path: str | os.PathLike[str]) -> str:
    """``"png"`` or ``"svg"`` from the file name; ``ValueError`` for anything else."""
    ext = Path(path).suffix.lower().lstrip(".")
    if ext not in GRAPH_FORMATS:
        raise ValueError(
            f"cannot write a graph to {os.fspath(path)!r}: the file name must end in "
            + " or ".join(f".{f}" for f in GRAPH_FORMATS)
        )
    return ext


_CHAR: Final = 0.078  # inches per character at 9 pt (DejaVu Sans, roughly)
_NODE_H: Final = 0.62
_ROW: Final = 1.05
_GAP: Final = 1.1


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def write_graph(pm: ProcessMap, path: str | os.PathLike[str], *, dpi: int = 150) -> Path:
    """Draw the map (visible nodes, shown edges) as PNG or SVG at ``path``; the file is
    replaced atomically. Deterministic: the same map gives the same SVG bytes."""
    fmt = graph_format(path)
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    lines: list[str] = []
    c = pm.conformance
    if c is not None:
        lines.append(
            f"conformance: {_rate_text(c.rate, c.interval)} fit ({_num(c.fit)}"
            f"{pm.plus_minus('cases')} of {c.checked:,} checked completed cases)"
        )
    shown = pm.violations[:5]
    if shown:
        lines.append(
            "violations per completed case: "
            + ", ".join(f"{r.rule} {_rate_text(r.rate, r.interval)} ({r.shown:,})" for r in shown)
            + (f", +{len(pm.violations) - 5} more" if len(pm.violations) > 5 else "")
        )
    pos = layout(pm)
    nodes = {n.name: n for n in pm.nodes if n.name in pos}
    n_layers = max((p[0] for p in pos.values()), default=-1) + 1
    rows = [0] * n_layers
    width = [1.0] * n_layers
    for name, (lay, _r) in pos.items():
        rows[lay] += 1
        label = max(len(name), len(f"{nodes[name].shown:,}"))
        width[lay] = max(width[lay], label * _CHAR + 0.35)
    max_rows = max(rows, default=1)
    xs: list[float] = []
    x = 0.0
    for w in width:
        xs.append(x + w / 2)
        x += w + _GAP
    graph_w = max(x - _GAP, 1.0)
    graph_h = max_rows * _ROW
    header = 0.95
    footer = 0.3 + 0.22 * len(lines)
    fig_w = max(graph_w + 1.0, 6.5)
    fig_h = graph_h + header + footer + 0.5
    fig_w, fig_h = min(fig_w, 60.0), min(fig_h, 60.0)
    left = (fig_w - graph_w) / 2
    center: dict[str, tuple[float, float]] = {}
    for name, (lay, r) in pos.items():
        offset = (max_rows - rows[lay]) * _ROW / 2
        y = footer + 0.25 + graph_h - offset - (r + 0.5) * _ROW
        center[name] = (left + xs[lay], y)

    with matplotlib.rc_context(
        {"svg.hashsalt": "procvault", "svg.fonttype": "path", "font.size": 9}
    ):
        fig = Figure(figsize=(fig_w, fig_h))
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.set_xlim(0, fig_w)
        ax.set_ylim(0, fig_h)
        ax.set_aspect("equal")
        ax.axis("off")
        cmap = matplotlib.colormaps["Blues"]
        boxes: dict[str, Any] = {}
        top_node = max(pm.max_node, 1)
        for name, (cx, cy) in center.items():
            node = nodes[name]
            w = width[pos[name][0]]
            t = node.shown / top_node
            face = cmap(_lerp(0.12, 0.8, t))
            box = FancyBboxPatch(
                (cx - w / 2, cy - _NODE_H / 2),
                w,
                _NODE_H,
                boxstyle="round,pad=0,rounding_size=0.12",
                facecolor=face,
                edgecolor="#2b4c7e",
                linewidth=1.0,
                zorder=3,
            )
            ax.add_patch(box)
            boxes[name] = box
            ink = "white" if t > 0.55 else "#102040"
            count = "-" if node.count is None else f"{node.shown:,}"
            ax.text(cx, cy + 0.09, name, ha="center", va="center", color=ink, zorder=4)
            ax.text(cx, cy - 0.14, count, ha="center", va="center", color=ink, fontsize=8, zorder=4)
        top_edge = max(pm.max_edge, 1)
        pairs = {(e.source, e.target) for e in pm.edges}
        for e in sorted(pm.edges, key=lambda e: (e.shown, e.source, e.target)):
            if e.source not in center or e.target not in center:
                continue
            t = e.shown / top_edge
            lw = _lerp(0.6, 5.0, t)
            color = matplotlib.colors.to_hex((_lerp(0.7, 0.15, t),) * 3)
            (x1, y1), (x2, y2) = center[e.source], center[e.target]
            if e.source == e.target:
                # below the node (back edges arc above): from right to left, bulging down
                a = (x1 + 0.2, y1 - _NODE_H / 2)
                b = (x1 - 0.2, y1 - _NODE_H / 2)
                arrow = FancyArrowPatch(
                    a,
                    b,
                    connectionstyle="arc3,rad=-1.1",
                    arrowstyle="-|>,head_length=4,head_width=2.5",
                    mutation_scale=1.5,
                    linewidth=lw,
                    color=color,
                    zorder=2,
                )
                ax.add_patch(arrow)
                lx, ly = x1, y1 - _NODE_H / 2 - 0.5 * 1.1 * 0.4
            else:
                l1, l2 = pos[e.source][0], pos[e.target][0]
                if l2 == l1 + 1 and (e.target, e.source) not in pairs:
                    rad = 0.0
                elif l2 > l1:
                    rad = 0.12 if l2 == l1 + 1 else 0.2
                else:  # back edge or same layer: a wider arc (above, when right to left)
                    rad = 0.35
                # an arc bulges rad * length / 2: at most ~0.6 in, to stay in the picture
                rad = min(rad, 1.2 / max(math.hypot(x2 - x1, y2 - y1), 0.1))
                arrow = FancyArrowPatch(
                    (x1, y1),
                    (x2, y2),
                    patchA=boxes[e.source],
                    patchB=boxes[e.target],
                    connectionstyle=f"arc3,rad={rad}",
                    arrowstyle="-|>,head_length=4,head_width=2.5",
                    mutation_scale=1.5,
                    linewidth=lw,
                    color=color,
                    zorder=2,
                )
                ax.add_patch(arrow)
                # the midpoint of the quadratic Bézier arc3 draws
                cxp, cyp = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)
                lx = 0.25 * x1 + 0.5 * cxp + 0.25 * x2
                ly = 0.25 * y1 + 0.5 * cyp + 0.25 * y2
            ax.text(
                lx,
                ly,
                f"{e.shown:,}",
                ha="center",
                va="center",
                fontsize=7,
                color="#303030",
                zorder=2.5,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
            )
        if not center:
            ax.text(
                fig_w / 2,
                footer + graph_h / 2,
                f"no activity or pair at or above the display threshold ({pm.min_count:,})",
                ha="center",
                va="center",
                color="#606060",
            )
        ax.text(0.2, fig_h - 0.3, f"DP process map · {pm.title}", fontsize=10, weight="bold")
        sub = "; ".join(n for n in pm.notes if "running totals" not in n)
        ax.text(
            0.2,
            fig_h - 0.55,
            (sub + " · " if sub else "")
            + "noisy (DP) values"
            + (
                f" (95% noise: activities{pm.plus_minus('activity')}, pairs"
                f"{pm.plus_minus('directly_follows')})"
                if pm.noise
                else ""
            )
            + f", negatives shown as 0; pairs ≥ {pm.min_count:,} "
            f"({pm.hidden_edges:,} hidden), activities ≥ {pm.node_min_count:,}",
            fontsize=7.5,
            color="#505050",
        )
        for i, line in enumerate(lines):
            ax.text(0.2, 0.2 + 0.22 * (len(lines) - 1 - i), line, fontsize=8, color="#202020")

        target = Path(path)
        # beside the target (same file system), created with the usual permissions (umask)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            metadata: dict[str, Any] = (
                {"Date": None, "Creator": "procvault"} if fmt == "svg" else {"Software": None}
            )
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return target
