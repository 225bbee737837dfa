"""What changed between two periods' discovered models.

:func:`diff` compares two :class:`~procvault.monitor.discovery.DiscoveredModel` values (say,
last month's and this month's): activities that appeared or disappeared, directly-follows arcs
added, removed and with a changed count, start and end activities whose counts changed, arcs of
the heuristics net added or removed, and Declare constraints kept in one model and not the
other. :func:`render_diff` prints it for a terminal.

Examples
--------
>>> from datetime import UTC, datetime, timedelta
>>> from procvault.monitor.event import Event
>>> from procvault.monitor.discovery import DiscoveryTracker, build_model
>>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
>>> def model(traces):
...     tracker = DiscoveryTracker()
...     for i, acts in enumerate(traces):
...         for j, act in enumerate(acts):
...             tracker.update(Event.create(f"c{i}", act, t0 + timedelta(minutes=j)))
...     tracker.flush()
...     return build_model(tracker.counts())
>>> d = diff(model(["ABC", "ABC"]), model(["ABC", "ABD", "AD"]))
>>> d.activities_added, [(c.source, c.target, c.after) for c in d.arcs_added]
(('D',), [('A', 'D', 1), ('B', 'D', 1)])
>>> [(c.source, c.target, c.before, c.after) for c in d.arcs_changed]
[('B', 'C', 2, 1)]
>>> print(render_diff(d).splitlines()[0])
cases 2 -> 3 (+1), events 6 -> 8 (+2)
"""

from __future__ import annotations

import msgspec

from procvault.monitor.discovery import DiscoveredModel

__all__ = ["ArcChange", "CountChange", "ModelDiff", "diff", "render_diff"]


class ArcChange(msgspec.Struct, frozen=True, array_like=True):
    """A directly-follows arc whose count went from ``before`` to ``after`` (0: absent)."""

    source: str
    target: str
    before: int
    after: int


class CountChange(msgspec.Struct, frozen=True, array_like=True):
    """An activity whose count (start or end cases) went from ``before`` to ``after``."""

    name: str
    before: int
    after: int


class ModelDiff(msgspec.Struct, frozen=True, kw_only=True):
    """Two models compared (``before`` is the first argument of :func:`diff`); every list is
    sorted."""

    cases_before: int
    cases_after: int
    events_before: int
    events_after: int
    activities_added: tuple[str, ...]
    activities_removed: tuple[str, ...]
    arcs_added: tuple[ArcChange, ...]
    arcs_removed: tuple[ArcChange, ...]
    arcs_changed: tuple[ArcChange, ...]
    arcs_unchanged: int
    start_changed: tuple[CountChange, ...]
    end_changed: tuple[CountChange, ...]
    heuristics_added: tuple[tuple[str, str], ...]
    heuristics_removed: tuple[tuple[str, str], ...]
    declare_added: tuple[tuple[str, tuple[str, ...]], ...]
    declare_removed: tuple[tuple[str, tuple[str, ...]], ...]

    @property
    def unchanged(self) -> bool:
        """Whether nothing but the volumes' totals differ."""
        return not (
            self.activities_added
            or self.activities_removed
            or self.arcs_added
            or self.arcs_removed
            or self.arcs_changed
            or self.start_changed
            or self.end_changed
            or self.heuristics_added
            or self.heuristics_removed
            or self.declare_added
            or self.declare_removed
        )


def _changes(a: dict[str, int], b: dict[str, int]) -> tuple[CountChange, ...]:
    return tuple(
        CountChange(k, a.get(k, 0), b.get(k, 0))
        for k in sorted(set(a) | set(b))
        if a.get(k, 0) != b.get(k, 0)
    )


def diff(before: DiscoveredModel, after: DiscoveredModel) -> ModelDiff:
    """Compare two models (see the module docstring)."""
    ca, cb = before.counts, after.counts
    acts_a, acts_b = set(ca.activity_counts()), set(cb.activity_counts())
    da, db = ca.dfg(), cb.dfg()
    added, removed, changed = [], [], []
    same = 0
    for s, t in sorted(set(da) | set(db)):
        x, y = da.get((s, t), 0), db.get((s, t), 0)
        if x == y:
            same += 1
        elif not x:
            added.append(ArcChange(s, t, x, y))
        elif not y:
            removed.append(ArcChange(s, t, x, y))
        else:
            changed.append(ArcChange(s, t, x, y))
    ha = {(a.source, a.target) for a in before.heuristics.arcs}
    hb = {(a.source, a.target) for a in after.heuristics.arcs}
    ra = {
        (c.template, c.activities) for c in (before.declare.constraints if before.declare else ())
    }
    rb = {(c.template, c.activities) for c in (after.declare.constraints if after.declare else ())}
    return ModelDiff(
        cases_before=ca.cases_completed,
        cases_after=cb.cases_completed,
        events_before=ca.events,
        events_after=cb.events,
        activities_added=tuple(sorted(acts_b - acts_a)),
        activities_removed=tuple(sorted(acts_a - acts_b)),
        arcs_added=tuple(added),
        arcs_removed=tuple(removed),
        arcs_changed=tuple(changed),
        arcs_unchanged=same,
        start_changed=_changes(ca.start_activities(), cb.start_activities()),
        end_changed=_changes(ca.end_activities(), cb.end_activities()),
        heuristics_added=tuple(sorted(hb - ha)),
        heuristics_removed=tuple(sorted(ha - hb)),
        declare_added=tuple(sorted(rb - ra)),
        declare_removed=tuple(sorted(ra - rb)),
    )


def _signed(x: int) -> str:
    return f"{x:+,}"


def render_diff(d: ModelDiff, *, limit: int = 20) -> str:
    """The diff as text lines (at most ``limit`` entries per section)."""
    cases = _signed(d.cases_after - d.cases_before)
    events = _signed(d.events_after - d.events_before)
    lines = [
        f"cases {d.cases_before:,} -> {d.cases_after:,} ({cases}), "
        f"events {d.events_before:,} -> {d.events_after:,} ({events})",
        f"activities: {len(d.activities_added)} added, {len(d.activities_removed)} removed",
        f"directly-follows arcs: {len(d.arcs_added)} added, {len(d.arcs_removed)} removed, "
        f"{len(d.arcs_changed)} changed, {d.arcs_unchanged} unchanged",
        f"heuristics net arcs: {len(d.heuristics_added)} added, "
        f"{len(d.heuristics_removed)} removed",
        f"Declare constraints: {len(d.declare_added)} added, {len(d.declare_removed)} removed",
    ]

    def section(title: str, items: list[str]) -> None:
        if items:
            lines.append(f"{title}:")
            lines.extend(f"  {x}" for x in items[:limit])
            if len(items) > limit:
                lines.append(f"  ... {len(items) - limit} more")

    section("activities added", list(d.activities_added))
    section("activities removed", list(d.activities_removed))
    section("arcs added", [f"{c.source} -> {c.target}: {c.after:,}" for c in d.arcs_added])
    section("arcs removed", [f"{c.source} -> {c.target}: {c.before:,}" for c in d.arcs_removed])
    section(
        "arcs changed",
        [
            f"{c.source} -> {c.target}: {c.before:,} -> {c.after:,} ({_signed(c.after - c.before)})"
            for c in sorted(d.arcs_changed, key=lambda c: -abs(c.after - c.before))
        ],
    )
    section(
        "start activities changed",
        [f"{c.name}: {c.before:,} -> {c.after:,}" for c in d.start_changed],
    )
    section(
        "end activities changed", [f"{c.name}: {c.before:,} -> {c.after:,}" for c in d.end_changed]
    )
    section("heuristics arcs added", [f"{s} -> {t}" for s, t in d.heuristics_added])
    section("heuristics arcs removed", [f"{s} -> {t}" for s, t in d.heuristics_removed])
    section("Declare added", [f"{t}({', '.join(a)})" for t, a in d.declare_added])
    section("Declare removed", [f"{t}({', '.join(a)})" for t, a in d.declare_removed])
    return "\n".join(lines)
