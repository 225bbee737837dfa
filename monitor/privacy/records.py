"""The published records: a versioned schema, as frozen values with a documented JSON form.

Three kinds of record go to ``results.aggregates`` (their JSON is ``msgspec``'s encoding of
these structs; ``kind`` tells them apart, ``schema`` names the version):

``pane``
    One pane's noisy statistics (:class:`PaneRecord`): every known key with its noisy value,
    zeros included, and the keys not known in advance whose noisy count passed the threshold;
    the running totals; and the (data-independent) mechanisms and budget that produced them.
``window``
    A sliding window (:class:`WindowRecord`): the sum of its panes' noisy values (no new noise,
    no budget), with the number of withheld panes it lacks.
``withheld``
    A pane the ledger did not release (:class:`WithheldRecord`), with the reason.

No record contains a case id, an exact count, the number of keys that were suppressed, or an ε
that depends on the data. JSON example (abridged)::

    {"kind": "pane", "schema": "procvault.aggregates/1",
     "pane": {"index": 386390, "start": "2014-01-29T14:00:00Z", "end": "2014-01-29T15:00:00Z"},
     "epsilon": 0.1125, "delta": 1.25e-07,
     "budget": {"epsilon": 1.0, "delta": 1e-06, "window": 24, "advantage": null,
                "unit": "case", "allocation": "uniform", "max_panes_per_case": 8,
                "totals_epsilon": 0.1},
     "mechanisms": [{"name": "activity", "mechanism": "discrete_laplace", "scale": 62.22,
                     "sensitivity": 2, "max_keys": 2, "linf": 1, "epsilon": 0.0321,
                     "delta": 6.25e-08, "threshold": 1033}, ...],
     "statistics": [{"name": "activity", "known": [[["ER Registration"], 12], ...],
                     "other": [[["Phone call"], 1101]]}, ...],
     "totals": {"panes": 17, "entries": [[["cases", "started"], 180], ...]}}

Entries are ``[key, value]`` pairs; a key is a list of strings (``[activity]``, ``[from, to]``,
``[rule_id]``, ``["started"]``; running totals prefix the statistic's name).

Examples
--------
>>> from datetime import UTC, datetime
>>> t = datetime(2024, 1, 1, tzinfo=UTC)
>>> rec = WithheldRecord(pane=PaneInfo(7, t, t), reason="budget")
>>> encode_record(rec)[:60]
b'{"kind":"withheld","schema":"procvault.aggregates/1","pane":'
>>> decode_record(encode_record(rec)) == rec
True
>>> decode_record(b'{"kind": "pane"}')
Traceback (most recent call last):
...
ValueError: not a procvault.aggregates record: Object missing required field `pane`
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

import msgspec

__all__ = [
    "SCHEMA",
    "BudgetInfo",
    "Entry",
    "MechanismInfo",
    "PaneInfo",
    "PaneRecord",
    "Record",
    "StatisticRelease",
    "TotalsRelease",
    "WindowRecord",
    "WithheldRecord",
    "decode_record",
    "encode_record",
]

#: The schema name and version every record carries.
SCHEMA: Final = "procvault.aggregates/1"


class Entry(msgspec.Struct, frozen=True, array_like=True):
    """One released value: JSON ``[key, value]``."""

    key: tuple[str, ...]
    value: int


class PaneInfo(msgspec.Struct, frozen=True):
    """A pane: its index and ``[start, end)`` (RFC 3339, UTC)."""

    index: int
    start: datetime
    end: datetime


class BudgetInfo(msgspec.Struct, frozen=True):
    """The configured budget (never data-dependent).

    ``epsilon``/``delta`` hold per case over any ``window`` consecutive panes; ``advantage`` is
    the guessing advantage ε was set from, if it was; ``unit`` is always ``"case"``;
    ``allocation`` is ``"uniform"`` or ``"fixed"`` (an explicit ε per pane);
    ``max_panes_per_case`` caps the panes one case contributes to; ``totals_epsilon`` is the ε
    the running totals spend over a case's whole life.
    """

    epsilon: float
    delta: float
    window: int
    advantage: float | None
    unit: Literal["case"]
    allocation: Literal["uniform", "fixed"]
    max_panes_per_case: int
    totals_epsilon: float


class MechanismInfo(msgspec.Struct, frozen=True):
    """How a statistic was noised (from the plan: data-independent).

    ``scale`` is the discrete Laplace scale (noise standard deviation ≈ ``scale·√2``);
    ``sensitivity`` the L1 distance one case can move the statistic, from ``max_keys`` keys by
    at most ``linf`` each; ``epsilon``/``delta`` what it spends per pane (running totals: per
    case lifetime); ``threshold`` the smallest noisy count of a key not known in advance that
    is released (``null``: such keys are never released).
    """

    name: str
    mechanism: Literal["discrete_laplace"]
    scale: float
    sensitivity: int
    max_keys: int
    linf: int
    epsilon: float
    delta: float
    threshold: int | None


class StatisticRelease(msgspec.Struct, frozen=True):
    """One statistic's noisy values: ``known`` (every known key, sorted, zeros included) and
    ``other`` (keys not known in advance that passed the threshold, sorted)."""

    name: str
    known: tuple[Entry, ...]
    other: tuple[Entry, ...] = ()


class TotalsRelease(msgspec.Struct, frozen=True):
    """Noisy running totals (distinct cases per key since the first pane) after ``panes``
    panes; keys are ``[statistic, *key]``."""

    panes: int
    entries: tuple[Entry, ...]


class PaneRecord(msgspec.Struct, frozen=True, kw_only=True, tag="pane", tag_field="kind"):
    """One released pane. ``epsilon``/``delta`` are what this pane charged to every case's
    budget (the same for every pane under the uniform allocation)."""

    schema: str = SCHEMA
    pane: PaneInfo
    epsilon: float
    delta: float
    budget: BudgetInfo
    mechanisms: tuple[MechanismInfo, ...]
    statistics: tuple[StatisticRelease, ...]
    totals: TotalsRelease | None = None

    @property
    def kind(self) -> Literal["pane"]:
        """The record kind (the JSON tag)."""
        return "pane"


class WindowRecord(msgspec.Struct, frozen=True, kw_only=True, tag="window", tag_field="kind"):
    """A sliding window: the sum of the noisy values of ``panes`` panes ending at
    ``last_pane`` (post-processing: no extra budget). ``withheld_panes`` of them were not
    released and add nothing."""

    schema: str = SCHEMA
    first_pane: int
    last_pane: int
    start: datetime
    end: datetime
    panes: int
    withheld_panes: int
    statistics: tuple[StatisticRelease, ...]

    @property
    def kind(self) -> Literal["window"]:
        """The record kind (the JSON tag)."""
        return "window"


class WithheldRecord(msgspec.Struct, frozen=True, kw_only=True, tag="withheld", tag_field="kind"):
    """A pane the ledger withheld: releasing it would have exceeded the budget of some
    ``window`` consecutive panes."""

    schema: str = SCHEMA
    pane: PaneInfo
    reason: Literal["budget"]

    @property
    def kind(self) -> Literal["withheld"]:
        """The record kind (the JSON tag)."""
        return "withheld"


#: Any published record.
Record = PaneRecord | WindowRecord | WithheldRecord

_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(Record)


def encode_record(record: Record) -> bytes:
    """The record's JSON (deterministic: the same record always gives the same bytes)."""
    return _ENCODER.encode(record)


def decode_record(data: bytes | str) -> Record:
    """Parse and validate a record's JSON; ``ValueError`` if it is not one of ours."""
    try:
        record: Record = _DECODER.decode(data)
    except msgspec.ValidationError as exc:
        raise ValueError(f"not a procvault.aggregates record: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if record.schema != SCHEMA:
        raise ValueError(f"unsupported schema {record.schema!r} (this reader: {SCHEMA})")
    return record
