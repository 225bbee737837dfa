"""The vault's partition engine: one pure, typed state machine per partition (see
:mod:`.engine`), the frames it takes (:mod:`.frames`) and its state as versioned values
(:mod:`.state`)."""

from .engine import Effects, PartitionEngine, PartitionSettings
from .frames import EventFrame, Frame, Heartbeat, Origin, RevocationFrame
from .state import CaseRecord, EngineCounters, PartitionMeta, decode_case, decode_meta

__all__ = [
    "CaseRecord",
    "Effects",
    "EngineCounters",
    "EventFrame",
    "Frame",
    "Heartbeat",
    "Origin",
    "PartitionEngine",
    "PartitionMeta",
    "PartitionSettings",
    "RevocationFrame",
    "decode_case",
    "decode_meta",
]
