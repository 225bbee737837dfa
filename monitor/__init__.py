"""procvault's engine: pure Python, deterministic, no I/O."""

from .event import AttrValue, Event, EventKind

__all__ = ["AttrValue", "Event", "EventKind"]
