"""An agent's committed source position on ``agent.progress``: MACed, typed, never trusted blindly.

Each transaction of an agent ends with a :class:`Progress` record under the key
``org/producer``: how many source items it has published, its producer session's generation
and sequence, and per partition the ``(generation, sequence)`` of the last frame it sent there
(the **heads** of its chains: the next session's first frame in each partition names it, see
:mod:`procvault.streams.frames`). The value is MessagePack followed by an HMAC-SHA256 tag under
the organization's progress key, so a Kafka writer without the key cannot forge one (a forged
``{"position": 999999}`` would make the agent skip its whole source); what does not verify is
counted and named in one line, and nothing it reads can crash it.

**Where a restarted agent resumes.** Its local progress file decides (:func:`save_local`,
:func:`load_local`): before each commit the agent writes the progress it is about to commit
as *pending*, after it as *committed*. On a restart, a pending progress counts only if
``agent.progress`` holds that very record (the commit went through before the crash), else
the committed one does. The highest valid record on Kafka is *not* trusted when a file
exists: a genuine record of an aborted transaction can be shown as committed by whoever
serves the topic, and resuming after it would skip that batch (counterexample F2 of
``docs/formal.md``). Without a file (a new machine), the highest valid record is used. Either
way a wrong choice cannot lose or repeat an event silently: the vault finds the first frame's
chain link does not fit, holds the stream and says so; an agent resending events the vault
already applied has them refused (their merge keys are not new).

>>> key = b"k" * 32
>>> rec = Progress("lab", "agent-1", position=42, generation=7, sequence=9, heads=((7, 9),))
>>> open_progress(key, seal_progress(key, rec)) == rec
True
>>> best, bad = best_progress([seal_progress(key, rec), b'{"position": 999999}'], key, "lab",
...                           "agent-1")
>>> best.position, best.heads, bad
(42, ((7, 9),), 1)
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
    "LocalProgress",
    "Progress",
    "best_progress",
    "load_local",
    "open_progress",
    "resume_point",
    "save_local",
    "seal_progress",
    "valid_progress",
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
    #: per partition, ``(generation, sequence)`` of the last frame sent there (``(0, 0)``:
    #: none)
    heads: tuple[tuple[int, int], ...] = ()
    format: int = 3


class LocalProgress(msgspec.Struct, frozen=True):
    """The agent's local progress file: the last committed progress and, while a commit is
    under way, the one being committed."""

    committed: Progress | None
    pending: Progress | None = None


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
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        raise RejectedRecord("malformed", "not a progress record of format 3") from None
    if progress.format != 3 or progress.position < 0:
        raise RejectedRecord("malformed", "progress record of another format")
    return progress


def valid_progress(
    values: Iterable[bytes | None], key: bytes, org: str, producer: str
) -> tuple[list[Progress], int]:
    """The valid progress records of ``org``/``producer`` among ``values``, and how many
    values did not verify."""
    found: list[Progress] = []
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
        found.append(p)
    return found, bad


def best_progress(
    values: Iterable[bytes | None], key: bytes, org: str, producer: str
) -> tuple[Progress | None, int]:
    """The valid progress of ``org``/``producer`` with the highest position (then generation)
    among ``values``, and how many values did not verify."""
    found, bad = valid_progress(values, key, org, producer)
    best = max(found, key=lambda p: (p.position, p.generation), default=None)
    return best, bad


def resume_point(found: Iterable[Progress], local: LocalProgress | None) -> Progress | None:
    """Where a restarted agent resumes (see the module docstring): ``found`` are the valid
    records on ``agent.progress``, ``local`` the local file (``None``: none).

    >>> a = Progress("lab", "a", 10, 1, 5, ((1, 5),))
    >>> b = Progress("lab", "a", 20, 2, 9, ((2, 9),))
    >>> resume_point([a, b], None).position  # no file: the highest valid record
    20
    >>> resume_point([a, b], LocalProgress(a)).position  # b's commit is not the file's word
    10
    >>> resume_point([a, b], LocalProgress(a, pending=b)).position  # b did commit
    20
    >>> resume_point([a], LocalProgress(a, pending=b)).position  # b did not
    10
    """
    found = list(found)
    if local is None:
        return max(found, key=lambda p: (p.position, p.generation), default=None)
    if local.pending is not None and local.pending in found:
        return local.pending
    return local.committed


def save_local(path: Path, local: LocalProgress) -> None:
    """Write the local progress file (atomically: a new file fsynced, then renamed; mode
    0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    data = json.dumps(msgspec.to_builtins(local)).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_local(path: Path) -> LocalProgress | None:
    """What :func:`save_local` wrote (``None`` if there is no file); a one-line
    :class:`~procvault.monitor.errors.ConfigError` if the file is unreadable or of an older
    procvault."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the agent's progress file: {exc}") from None
    try:
        local = msgspec.convert(json.loads(raw), LocalProgress)
    except (ValueError, msgspec.ValidationError):
        raise ConfigError(
            f"{path}: not an agent progress file of this procvault (remove it to resume from "
            "Kafka's record)"
        ) from None
    for p in (local.committed, local.pending):
        if p is not None and p.format != 3:
            raise ConfigError(f"{path}: a progress file of format {p.format}, not 3")
    return local
