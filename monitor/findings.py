"""What an organization receives from the vault: typed, versioned findings, scoped by policy.

The vault sends each organization a stream of :class:`ResultBatch` records on
``results.alerts.<org>`` (signed by the vault's epoch key and sealed to the organization). A
batch holds findings, each a tagged struct whose ``type`` says what it is:

``deviation`` (:class:`DeviationFinding`)
    One of the organization's own events did not fit: ``missing_tokens`` (the activity was not
    enabled; ``missing_places`` lacked tokens, ``transition`` fired anyway), ``unknown_activity``
    (the model has no transition for it) or ``after_completion`` (its case had completed; the
    event was not applied).
``alert`` (:class:`AlertFinding`)
    A compliance rule of a case changed state (``old`` → ``new``: ``Satisfied``,
    ``TempSatisfied``, ``TempViolated``, ``Violated``). ``activity`` and ``timestamp`` name the
    event that caused it when that event is the organization's own; otherwise they are ``None``.
``case`` (:class:`CaseFinding`)
    A case the organization took part in completed: its verdict, with the fields the
    consortium's :class:`ResultsPolicy` grants (others ``None``).
``revocation`` (:class:`RevocationFinding`)
    The vault's acknowledgement of one of the organization's revocations in one partition.
``notice`` (:class:`NoticeFinding`)
    Something about the streams: an organization went silent (``source_silent``: its records
    stopped holding the merge back, later ones are applied late) or came back
    (``source_back``), to every organization; to the organization alone, that a record of its
    stream in this partition is missing (``source_gap``: one did not continue its chain; its
    stream waits there while the vault reads its topic again).

``sent_us`` (when given) is the agent's send time of the event that caused the finding: the
organization measures its alert latency with it.

>>> from datetime import datetime, UTC
>>> t = datetime(2024, 1, 1, tzinfo=UTC)
>>> batch = ResultBatch(partition=0, commit=7, chunk=0, items=[
...     DeviationFinding("c1", "B", t, "missing_tokens", "B", ("p1",)),
...     CaseFinding("c1", "end_marker", is_fit=False, fitness=0.5)])
>>> back = decode_batch(encode_batch(batch))
>>> back == batch, [type(i).__name__ for i in back.items]
(True, ['DeviationFinding', 'CaseFinding'])
>>> finding_to_dict(back.items[1])
{'type': 'case', 'case': 'c1', 'completed_by': 'end_marker', 'is_fit': False, 'fitness': 0.5}
>>> decode_batch(b"[]")
Traceback (most recent call last):
...
procvault.monitor.errors.CodecError: not a result batch of format 2 (a record of an older ...)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import msgspec

from .errors import CodecError, ConfigError

__all__ = [
    "FULL_VERDICT",
    "RESULTS_FORMAT",
    "VERDICT_FIELDS",
    "AlertFinding",
    "CaseFinding",
    "DeviationFinding",
    "Finding",
    "NoticeFinding",
    "ResultBatch",
    "ResultsPolicy",
    "RevocationFinding",
    "decode_batch",
    "encode_batch",
    "finding_to_dict",
]

#: The format of :class:`ResultBatch` records this version writes and reads.
RESULTS_FORMAT: Final = 2


class DeviationFinding(
    msgspec.Struct, tag="deviation", tag_field="type", frozen=True, omit_defaults=True
):
    """A deviation found by one of the organization's events (see the module docstring)."""

    case: str
    activity: str
    timestamp: datetime
    kind: Literal["missing_tokens", "unknown_activity", "after_completion"]
    transition: str | None = None
    missing_places: tuple[str, ...] = ()
    sent_us: int = 0


class AlertFinding(msgspec.Struct, tag="alert", tag_field="type", frozen=True, omit_defaults=True):
    """A rule's state change for a case the organization took part in."""

    case: str
    rule: str
    old: str
    new: str
    activity: str | None = None
    timestamp: datetime | None = None
    sent_us: int = 0


class CaseFinding(msgspec.Struct, tag="case", tag_field="type", frozen=True, omit_defaults=True):
    """The verdict of a completed case the organization took part in.

    Attributes
    ----------
    case
        The case id (as the organization's agent sent it).
    completed_by
        ``end_marker``, ``final_marking``, ``idle`` or ``flush``.
    is_fit, fitness, missing, remaining
        pm4py's token-replay diagnostics of the whole case (all organizations' events).
    produced, consumed, events, unknown_activities
        The same diagnostics' counters; they count every organization's events, so the
        default policy does not grant them.
    own_events
        How many of the case's events were the organization's own.
    alignment_cost
        The optimal prefix-alignment cost (a vault with alignments).
    rules
        Each rule's final state.
    silent_sources
        Organizations that were silent (timed out) while the case ran: its verdict may miss
        their events.
    """

    case: str
    completed_by: str
    is_fit: bool | None = None
    fitness: float | None = None
    missing: int | None = None
    remaining: int | None = None
    produced: int | None = None
    consumed: int | None = None
    events: int | None = None
    unknown_activities: int | None = None
    own_events: int | None = None
    alignment_cost: int | None = None
    rules: dict[str, str] | None = None
    silent_sources: tuple[str, ...] = ()
    sent_us: int = 0


class RevocationFinding(
    msgspec.Struct, tag="revocation", tag_field="type", frozen=True, omit_defaults=True
):
    """The vault's answer to one of the organization's revocations, in one partition.

    ``status``: ``applied``, ``repeated`` (the same id again: nothing changed) or ``refused``
    (``reason`` says why, e.g. ``not_a_participant``: an organization can revoke only a case
    it took part in).
    """

    id: str
    status: Literal["applied", "repeated", "refused"]
    partition: int
    partitions: int
    state_dropped: bool = False
    case: str | None = None
    resource: str | None = None
    time_from: datetime | None = None
    time_to: datetime | None = None
    reason: str | None = None


class NoticeFinding(
    msgspec.Struct, tag="notice", tag_field="type", frozen=True, omit_defaults=True
):
    """A note about the organizations' streams (see the module docstring)."""

    kind: Literal["source_silent", "source_back", "waiting_for_source", "source_gap"]
    org: str
    partition: int


Finding = DeviationFinding | AlertFinding | CaseFinding | RevocationFinding | NoticeFinding


class ResultBatch(msgspec.Struct, frozen=True, tag="results", tag_field="format_name"):
    """One record of an organization's results topic.

    ``(partition, commit, chunk)`` identifies it: ``commit`` is the partition's commit version
    (it grows with every vault transaction that writes state), ``chunk`` numbers the records of
    one commit. A reader that has shown a ``(partition, commit, chunk)`` drops it when it comes
    again (a replay).
    """

    partition: int
    commit: int
    chunk: int
    items: list[Finding]
    format: int = RESULTS_FORMAT


_ENC: Final = msgspec.msgpack.Encoder()
_DEC: Final = msgspec.msgpack.Decoder(ResultBatch)
_JSON: Final = msgspec.json.Encoder()


def encode_batch(batch: ResultBatch) -> bytes:
    """The record body of ``batch`` (MessagePack)."""
    return _ENC.encode(batch)


def decode_batch(body: bytes) -> ResultBatch:
    """The batch in ``body``; :class:`~.errors.CodecError` (one line) for anything else."""
    try:
        batch = _DEC.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        raise CodecError(
            f"not a result batch of format {RESULTS_FORMAT} (a record of an older procvault, "
            "or not a result record)"
        ) from None
    if batch.format != RESULTS_FORMAT:
        raise CodecError(f"result batch of format {batch.format}; this procvault reads format 2")
    return batch


def finding_to_dict(finding: Finding) -> dict[str, Any]:
    """A finding as a JSON-ready dict (``type`` first; ``None`` and empty fields left out)."""
    out: dict[str, Any] = msgspec.json.decode(_JSON.encode(finding))
    return out


#: Every field of :class:`CaseFinding` a policy may grant.
VERDICT_FIELDS: Final = (
    "is_fit",
    "fitness",
    "missing",
    "remaining",
    "produced",
    "consumed",
    "events",
    "unknown_activities",
    "own_events",
    "alignment_cost",
    "rules",
)
#: Every verdict field (the ``full`` preset).
FULL_VERDICT: Final = frozenset(VERDICT_FIELDS)
_DEFAULT_VERDICT: Final = frozenset(
    {"is_fit", "fitness", "missing", "remaining", "own_events", "alignment_cost", "rules"}
)


@dataclass(frozen=True)
class ResultsPolicy:
    """What each organization receives: the consortium's results policy.

    Parameters
    ----------
    verdict
        The :class:`CaseFinding` fields every organization that took part in a case receives
        (default: the token-replay verdict, its own event count, the alignment cost and the
        rules' final states; not the counters of all organizations' events).
    deviations
        ``own`` (default): an organization receives the deviations its own events caused;
        ``participants``: every participant of the case receives them (with the other
        organizations' activities and timestamps).
    rule_changes
        ``participants`` (default): every participant receives a case's rule state changes,
        the activity and time only when the event was its own; ``own``: only the organization
        whose event caused the change (deadline changes go to every participant).

    >>> ResultsPolicy().grants("fitness"), ResultsPolicy().grants("events")
    (True, False)
    >>> ResultsPolicy.from_mapping({"verdict": "full"}).grants("events")
    True
    >>> ResultsPolicy.from_mapping({"verdict": ["fitness", "colour"]})
    Traceback (most recent call last):
    ...
    procvault.monitor.errors.ConfigError: verdict: unknown field 'colour' (known: is_fit, ...)
    """

    verdict: frozenset[str] = _DEFAULT_VERDICT
    deviations: Literal["own", "participants"] = "own"
    rule_changes: Literal["own", "participants"] = "participants"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.verdict) - FULL_VERDICT)
        if unknown:
            known = ", ".join(VERDICT_FIELDS)
            raise ConfigError(f"verdict: unknown field {unknown[0]!r} (known: {known})")
        if self.deviations not in ("own", "participants"):
            raise ConfigError(
                f"deviations: must be 'own' or 'participants', got {self.deviations!r}"
            )
        if self.rule_changes not in ("own", "participants"):
            raise ConfigError(
                f"rule_changes: must be 'own' or 'participants', got {self.rule_changes!r}"
            )

    @classmethod
    def full(cls) -> ResultsPolicy:
        """Every organization receives everything about the cases it took part in."""
        return cls(FULL_VERDICT, "participants", "participants")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ResultsPolicy:
        """From a parsed policy file's ``results`` section (see docs/pipeline.md)."""
        raw = data.get("verdict", "default")
        verdict: Iterable[str]
        if raw == "default":
            verdict = _DEFAULT_VERDICT
        elif raw == "full":
            verdict = FULL_VERDICT
        elif isinstance(raw, list | tuple) and all(isinstance(x, str) for x in raw):
            verdict = raw
        else:
            raise ConfigError("verdict: must be 'default', 'full' or a list of field names")
        return cls(
            frozenset(verdict),
            data.get("deviations", "own"),
            data.get("rule_changes", "participants"),
        )

    def grants(self, field: str) -> bool:
        """Whether participants receive verdict field ``field``."""
        return field in self.verdict
