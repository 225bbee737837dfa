"""An agent's committed source position on ``agent.progress``: MACed, typed, never trusted blindly.

Each transaction of an agent ends with a :class:`Progress` record under the key
``org/producer``: how many source items it has published, its producer session's generation
and sequence. The value is MessagePack followed by an HMAC-SHA256 tag under the
organization's progress key, so a Kafka writer without the key cannot forge one (a forged
``{"position": 999999}`` would make the agent skip its whole source). A restarted agent takes
the highest valid position it finds (:func:`best_progress`) and never one below its local
state file; what does not verify is counted and named in one line, and nothing it reads can
crash it. A replayed older record cannot move it back past the newest one, and an agent whose
whole history was rolled back resends events the vault already applied: the vault refuses
them as replays (their merge keys are not new), so nothing is applied twice.

>>> key = b"k" * 32
>>> rec = Progress("lab", "agent-1", position=42, generation=7, sequence=9)
>>> open_progress(key, seal_progress(key, rec)) == rec
True
>>> best_progress([seal_progress(key, rec), b'{"position": 999999}'], key, "lab", "agent-1")
(Progress(org='lab', producer='agent-1', position=42, generation=7, sequence=9, format=2), 1)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import msgspec

from procvault.monitor.errors import ConfigError
from procvault.streams.envelope import RejectedRecord

__all__ = [
    "Progress",
    "best_progress",
    "load_local",
    "open_progress",
    "save_local",
    "seal_progress",
]

_TAG: Final = 32
_ENC: Final = msgspec.msgpack.Encoder()
_DEC: Final = msgspec.msgpack.Decoder()


class Progress(msgspec.Struct, frozen=True):
    """What an agent had published when a transaction committed."""

    org: str
    producer: str
    #: source items published (the next run skips this many)
    position: int
    #: the producer session's generation, and its last sequence number used
    generation: int
    sequence: int
    format: int = 2


def seal_progress(key: bytes, progress: Progress) -> bytes:
    """The ``agent.progress`` value of ``progress``."""
    body = _ENC.encode(progress)
    return body + hmac.new(key, body, hashlib.sha256).digest()


def open_progress(key: bytes, value: bytes) -> Progress:
    """The progress in ``value``; :class:`~procvault.streams.envelope.RejectedRecord` if it
    does not verify or is not a progress record of this version."""
    if not isinstance(value, bytes | bytearray) or len(value) <= _TAG:
        raise RejectedRecord("malformed", "progress record is truncated")
    body, tag = bytes(value[:-_TAG]), bytes(value[-_TAG:])
    if not hmac.compare_digest(tag, hmac.new(key, body, hashlib.sha256).digest()):
        raise RejectedRecord("bad_tag", "progress record does not verify")
    try:
        progress = msgspec.convert(_DEC.decode(body), Progress)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise RejectedRecord("malformed", "not a progress record of format 2") from None
    if progress.format != 2 or progress.position < 0:
        raise RejectedRecord("malformed", "progress record of another format")
    return progress


def best_progress(
    values: Iterable[bytes | None], key: bytes, org: str, producer: str
) -> tuple[Progress | None, int]:
    """The valid progress of ``org``/``producer`` with the highest position (then generation)
    among ``values``, and how many values did not verify."""
    best: Progress | None = None
    bad = 0
    for value in values:
        if value is None:
            continue
        try:
            p = open_progress(key, value)
        except RejectedRecord:
            bad += 1
            continue
        if (p.org, p.producer) != (org, producer):
            bad += 1
            continue
        if best is None or (p.position, p.generation) > (best.position, best.generation):
            best = p
    return best, bad


def save_local(path: Path, progress: Progress) -> None:
    """Keep ``progress`` in a local file too (atomically, mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    data = json.dumps(msgspec.to_builtins(progress)).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_local(path: Path) -> Progress | None:
    """The progress :func:`save_local` wrote (``None`` if there is none); a one-line
    :class:`~procvault.monitor.errors.ConfigError` if the file is unreadable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the agent's progress file: {exc}") from None
    try:
        return msgspec.convert(json.loads(raw), Progress)
    except (ValueError, msgspec.ValidationError):
        raise ConfigError(
            f"{path}: not an agent progress file (remove it to resume from Kafka's record)"
        ) from None
