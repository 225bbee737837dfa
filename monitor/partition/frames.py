"""What the partition engine takes in: opened frames, each with where it came from.

The shell opens a record (checks its tags, decrypts, decodes) and hands the engine a frame:

* :class:`EventFrame`: an event of the organization — an activity, a placeholder or an
  end-of-case marker (its ``kind``);
* :class:`Heartbeat`: the organization's promise that nothing later of it sorts at or below
  ``(promise_us, promise_order)``; ``closed``: its stream has ended;
* :class:`RevocationFrame`: a verified revocation the organization issued.

Every frame carries its :class:`Origin`: the organization (its topic's), the producer, the
producer session's ``generation`` and the frame's ``sequence`` in it, the key epoch it was
sealed under (all authenticated by the envelope), the ``(generation, sequence)`` of the
frame the producer sent to this partition before it (``prev``: authenticated, inside the
frame; ``(0, 0)`` for its first), and the record's offset in the organization's topic
partition. The ``prev`` links make each organization's frames in a partition a **chain**:
a frame that does not continue it shows that something before it is missing.

>>> from datetime import datetime, UTC
>>> from procvault.monitor.event import Event
>>> o = Origin("lab", "agent-1", generation=5, sequence=0, offset=12, prev=(4, 17))
>>> e = Event.create("c1", "A", datetime(2024, 1, 1, tzinfo=UTC), org="lab")
>>> f = EventFrame(o, order=256, sent_us=0, event=e)
>>> f.origin.org, f.event.activity
('lab', 'A')
"""

from __future__ import annotations

from typing import NamedTuple

from ..event import Event
from ..revocation import Revoked

__all__ = ["EventFrame", "Frame", "Heartbeat", "Origin", "RevocationFrame"]


class Origin(NamedTuple):
    """Where a frame came from (authenticated by the envelope, except ``offset``)."""

    #: the organization (of the topic and of the record's header)
    org: str
    #: the producer within it (one agent at a time per organization)
    producer: str
    #: the producer session's generation: greater for every later session of the producer
    generation: int
    #: the frame's number in its session, from 0
    sequence: int
    #: the record's offset in the organization's topic partition
    offset: int
    #: ``(generation, sequence)`` of the producer's previous frame in this partition
    #: (``(0, 0)``: none; revocations are not chained)
    prev: tuple[int, int] = (0, 0)
    #: the key epoch the record was sealed under
    epoch: int = 1


class EventFrame(NamedTuple):
    """An event, a placeholder or an end-of-case marker."""

    origin: Origin
    #: breaks timestamp ties: position in the shared source * 256 + output index
    order: int
    #: the agent's wall clock (µs) when it sent the record (latency only)
    sent_us: int
    event: Event


class Heartbeat(NamedTuple):
    """A promise about the organization's stream (see the module docstring)."""

    origin: Origin
    promise_us: int
    promise_order: int
    closed: bool
    sent_us: int = 0


class RevocationFrame(NamedTuple):
    """A revocation, verified by the shell with the organization's registered key."""

    origin: Origin
    revoked: Revoked


Frame = EventFrame | Heartbeat | RevocationFrame
