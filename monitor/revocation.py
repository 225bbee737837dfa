"""Revocations honoured by the engine: an organization takes back a case, a resource or a period.

A :class:`Revocations` set sits in front of a :class:`~procvault.monitor.vault.Vault` (and its
:class:`~procvault.monitor.privacy.panes.PaneAccumulator`). :meth:`Revocations.drops` says,
per event, whether a revocation covers it; the caller skips such an event before the vault and
the accumulator see it, so no later deviation, alert, case result, pane or window includes it.
:func:`apply_revocation` adds a revocation and drops the state it covers:

* a **case** (by the id the vault knows, i.e. the pseudonym the policy stage emitted): its
  replay, rule states and pane bookkeeping are dropped without a result, and every later event
  of the case, from any organization, is dropped and counted;
* a **resource** (optionally of one organization): every later event it performed is dropped;
  the cases it worked on go on without those events;
* a **period** ``[start, end)`` of event time (optionally of one organization): every later
  event in it is dropped (issued ahead, it stops collection for that period).

"Later" is the order in which the caller applies events: what the engine already counted in
a released pane stays released (see ``docs/privacy-policy.md``: a published DP aggregate is a
promise about any one case, and withdrawing it would reveal more than it protects). A case's
contributions to panes that are still open stay too, under the same guarantee; everything
after the revocation is excluded.

Nothing here depends on the data released: the set is the vault's own state (seal it), and
only what was revoked (ids, kinds) and how many events were dropped are reported.

Examples
--------
>>> from datetime import datetime, UTC
>>> from procvault.monitor.compliance import Compliance, DeclareRule
>>> from procvault.monitor.event import Event
>>> from procvault.monitor.vault import Vault
>>> t = datetime(2024, 1, 1, tzinfo=UTC)
>>> vault = Vault(compliance=Compliance([DeclareRule("has_a", "existence", "A")]))
>>> revs = Revocations()
>>> _ = vault.update(Event.create("c1", "B", t))
>>> apply_revocation(Revoked.of_case("r1", "c1"), revs, vault)
RevocationOutcome(new=True, forgot=True)
>>> ev = Event.create("c1", "A", t)
>>> revs.drops(ev), revs.drops(Event.create("c2", "A", t)), revs.dropped
(True, False, 1)
>>> apply_revocation(Revoked.of_resource("r2", "r_anna", org="lab"), revs, vault)
RevocationOutcome(new=True, forgot=False)
>>> revs.drops(Event.create("c2", "A", t, org="lab", resource="r_anna"))
True
>>> revs.drops(Event.create("c2", "A", t, org="ward", resource="r_anna"))
False
>>> Revocations(revs.snapshot()).drops(ev)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal, NamedTuple

import msgspec

from .event import Event, to_utc

if TYPE_CHECKING:
    from .privacy.panes import PaneAccumulator
    from .vault import Vault

__all__ = [
    "RevocationOutcome",
    "RevocationState",
    "Revocations",
    "Revoked",
    "RevokedKind",
    "apply_revocation",
]

RevokedKind = Literal["case", "resource", "period"]


@dataclass(frozen=True, slots=True)
class Revoked:
    """One revocation as the engine sees it (already verified by the caller).

    Parameters
    ----------
    id
        Its unique id: a repeat with the same id changes nothing.
    kind
        ``"case"``, ``"resource"`` or ``"period"``.
    org
        The organization whose events a resource or period revocation covers (``None``:
        every organization's). A case is revoked whole.
    case, resource
        The case id or the resource, as the vault sees them.
    start, end
        The revoked period of event time, ``start`` included, ``end`` excluded.
    """

    id: str
    kind: RevokedKind
    org: str | None = None
    case: str | None = None
    resource: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("a revocation needs an id")
        if self.kind == "case" and not self.case:
            raise ValueError("a case revocation needs a case")
        elif self.kind == "resource" and not self.resource:
            raise ValueError("a resource revocation needs a resource")
        elif self.kind == "period":
            if self.start is None or self.end is None:
                raise ValueError("a period revocation needs start and end")
            start, end = to_utc(self.start), to_utc(self.end)
            if not start < end:
                raise ValueError("a period revocation needs start < end")
            object.__setattr__(self, "start", start)
            object.__setattr__(self, "end", end)
        elif self.kind not in ("case", "resource", "period"):
            raise ValueError(f"unknown revocation kind {self.kind!r}")

    @classmethod
    def of_case(cls, id: str, case: str) -> Revoked:
        """Revoke a case."""
        return cls(id, "case", case=case)

    @classmethod
    def of_resource(cls, id: str, resource: str, *, org: str | None = None) -> Revoked:
        """Revoke what a resource did (in ``org``'s events, or everyone's)."""
        return cls(id, "resource", org=org, resource=resource)

    @classmethod
    def of_period(
        cls,
        id: str,
        start: datetime,
        end: datetime,
        *,
        org: str | None = None,
    ) -> Revoked:
        """Revoke ``[start, end)`` of event time (of ``org``'s events, or everyone's)."""
        return cls(id, "period", org=org, start=start, end=end)


class RevocationOutcome(NamedTuple):
    """What :func:`apply_revocation` did: ``new`` is False for a repeated id; ``forgot`` is
    True when the vault or the accumulator held state of a revoked case."""

    new: bool
    forgot: bool


class RevocationState(msgspec.Struct, frozen=True):
    """A :class:`Revocations` set as a value (names cases: seal it before storing)."""

    ids: tuple[str, ...] = ()
    cases: tuple[str, ...] = ()
    resources: tuple[tuple[str, str | None], ...] = ()
    periods: tuple[tuple[datetime, datetime, str | None], ...] = ()
    dropped: int = 0
    version: int = 1


class Revocations:
    """The revoked cases, resources and periods, and how many events they dropped.

    Parameters
    ----------
    state
        A snapshot to resume from (:meth:`snapshot`).
    """

    __slots__ = ("_cases", "_ids", "_periods", "_resources", "dropped")

    def __init__(self, state: RevocationState | None = None) -> None:
        self._ids: set[str] = set()
        self._cases: set[str] = set()
        # resource -> organizations it is revoked for (None: all)
        self._resources: dict[str, set[str | None]] = {}
        self._periods: list[tuple[datetime, datetime, str | None]] = []
        #: Events dropped because a revocation covered them.
        self.dropped = 0
        if state is not None:
            if state.version != 1:
                raise ValueError(f"unsupported revocation state version {state.version}")
            self._ids = set(state.ids)
            self._cases = set(state.cases)
            for resource, org in state.resources:
                self._resources.setdefault(resource, set()).add(org)
            self._periods = list(state.periods)
            self.dropped = state.dropped

    def __bool__(self) -> bool:
        """Whether anything is revoked (callers skip :meth:`drops` otherwise)."""
        return bool(self._cases or self._resources or self._periods)

    def __contains__(self, revocation_id: object) -> bool:
        return revocation_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, revoked: Revoked) -> bool:
        """Record ``revoked``; False if its id was already recorded (nothing changes)."""
        if revoked.id in self._ids:
            return False
        self._ids.add(revoked.id)
        if revoked.kind == "case":
            assert revoked.case is not None
            self._cases.add(revoked.case)
        elif revoked.kind == "resource":
            assert revoked.resource is not None
            self._resources.setdefault(revoked.resource, set()).add(revoked.org)
        else:
            assert revoked.start is not None and revoked.end is not None
            self._periods.append((revoked.start, revoked.end, revoked.org))
        return True

    def covers(self, event: Event) -> bool:
        """Whether a revocation covers ``event`` (markers of a revoked case included)."""
        if event.case_id in self._cases:
            return True
        resource = event.resource
        if resource is not None and self._resources:
            orgs = self._resources.get(resource)
            if orgs is not None and (None in orgs or event.org in orgs):
                return True
        if self._periods:
            ts = event.timestamp
            org = event.org
            for start, end, p_org in self._periods:
                if start <= ts < end and (p_org is None or p_org == org):
                    return True
        return False

    def drops(self, event: Event) -> bool:
        """:meth:`covers`, counting the events it drops."""
        if self.covers(event):
            self.dropped += 1
            return True
        return False

    def snapshot(self) -> RevocationState:
        """The set as a value."""
        return RevocationState(
            tuple(sorted(self._ids)),
            tuple(sorted(self._cases)),
            tuple(
                sorted(
                    ((r, o) for r, orgs in self._resources.items() for o in orgs),
                    key=lambda ro: (ro[0], ro[1] or ""),
                )
            ),
            tuple(self._periods),
            self.dropped,
        )


def apply_revocation(
    revoked: Revoked,
    revocations: Revocations,
    vault: Vault,
    accumulator: PaneAccumulator | None = None,
) -> RevocationOutcome:
    """Record ``revoked`` in ``revocations`` and drop the state it covers: a revoked case
    leaves ``vault`` (:meth:`~procvault.monitor.vault.Vault.forget`) and ``accumulator``
    (:meth:`~procvault.monitor.privacy.panes.PaneAccumulator.forget`) without a result.

    From then on, skip every event for which ``revocations.drops(event)`` is True.
    """
    if not revocations.add(revoked):
        return RevocationOutcome(False, False)
    forgot = False
    if revoked.kind == "case":
        assert revoked.case is not None
        forgot = vault.forget(revoked.case)
        if accumulator is not None and accumulator.forget(revoked.case):
            forgot = True
    return RevocationOutcome(True, forgot)
