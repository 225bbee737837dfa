"""A readable form of a verified record, every value with its 95% noise interval."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from procvault.monitor.privacy.records import Record, StatisticRelease

__all__ = ["render_record"]

_MAX_ENTRIES = 8
_NOTE_NEGATIVE = "  * noisy value below 0, shown as 0 (the released value is in --json)"


def _count(v: int) -> str:
    return f"{v:,}" if v >= 0 else "0*"


def _entries(stat: StatisticRelease, h: int | None) -> str:
    items = [(" → ".join(e.key), e.value) for e in (*stat.known, *stat.other)]
    items.sort(key=lambda kv: -kv[1])
    pm = "" if h is None else f"±{h:,}"
    shown = "  ".join(f"{k}={_count(v)}{pm}" for k, v in items[:_MAX_ENTRIES])
    more = len(items) - _MAX_ENTRIES
    return shown + (f"  (+{more} more)" if more > 0 else "")


def _negative(stats: Any) -> bool:
    return any(
        e.value < 0
        for s in stats
        for e in sorted((*s.known, *s.other), key=lambda e: -e.value)[:_MAX_ENTRIES]
    )


def _when(ts: Any) -> str:
    return str(ts.strftime("%Y-%m-%d %H:%M:%S"))


def render_record(record: Record, mechanisms: Any = None) -> str:
    """A readable form of a verified record (noisy values, largest first), each value with
    the half-width of its 95% noise interval (``±h``, from the record's mechanisms; a window
    uses ``mechanisms``, those of a pane record of the same release); negative noisy values
    are shown as 0, with a note."""
    from procvault.monitor.privacy.intervals import mechanism_half_width
    from procvault.monitor.privacy.plan import TOTALS
    from procvault.monitor.privacy.records import PaneRecord, WindowRecord

    if isinstance(record, PaneRecord):
        mechs = record.mechanisms
        lines = [
            f"pane {record.pane.index}  {_when(record.pane.start)} → {_when(record.pane.end)}"
            f"  ε={record.epsilon:.4g}  (±: 95% noise interval)"
        ]
        lines += [
            f"  {s.name:<17} {_entries(s, mechanism_half_width(mechs, s.name))}"
            for s in record.statistics
        ]
        negative = _negative(record.statistics)
        if record.totals is not None:
            steps = bin(record.totals.panes).count("1")  # noisy tree nodes summed
            h = mechanism_half_width(mechs, TOTALS, panes=max(steps, 1))
            pm = "" if h is None else f"±{h:,}"
            entries = record.totals.entries[:_MAX_ENTRIES]
            totals = "  ".join(f"{'/'.join(e.key)}={_count(e.value)}{pm}" for e in entries)
            negative = negative or any(e.value < 0 for e in entries)
            lines.append(f"  {'totals':<17} {totals}  (after {record.totals.panes} panes)")
        if negative:
            lines.append(_NOTE_NEGATIVE)
        return "\n".join(lines)
    if isinstance(record, WindowRecord):
        m = record.panes - record.withheld_panes
        lines = [
            f"window {record.first_pane}..{record.last_pane}  {_when(record.start)} → "
            f"{_when(record.end)}  ({record.panes} panes, {record.withheld_panes} withheld)"
            + ("  (±: 95% noise interval)" if mechanisms else "")
        ]
        lines += [
            f"  {s.name:<17} "
            + _entries(s, mechanism_half_width(mechanisms or (), s.name, panes=m))
            for s in record.statistics
        ]
        if _negative(record.statistics):
            lines.append(_NOTE_NEGATIVE)
        return "\n".join(lines)
    return (
        f"pane {record.pane.index}  {_when(record.pane.start)} → {_when(record.pane.end)}"
        f"  withheld ({record.reason})"
    )
