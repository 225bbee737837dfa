"""Signed release records for ``results.aggregates``.

A record (:mod:`procvault.monitor.privacy.records`) travels as a small JSON envelope::

    {"v": 1, "epoch": 3, "record": "<the record's JSON, as a string>", "signature": "<hex>"}

The Ed25519 signature (the epoch's vault key, :meth:`VaultKeys.sign`) covers
``b"procvault-aggregates-v1" ‖ epoch (4 bytes, big-endian) ‖ record JSON``, so a record cannot
be replayed under another epoch or mistaken for another kind of signed message. The record is
kept as the exact bytes that were signed; readers verify before they parse.

:func:`record_key` gives the Kafka key: a pane and its withholding share one key, so a
republished record (after a restart) replaces itself on a compacted topic.

>>> from datetime import UTC, datetime
>>> from procvault.monitor.privacy.records import PaneInfo, WithheldRecord
>>> from procvault.streams.envelope import VaultKeys
>>> keys = VaultKeys.generate(epoch=3)
>>> t = datetime(2024, 1, 1, tzinfo=UTC)
>>> signed = sign_record(WithheldRecord(pane=PaneInfo(7, t, t), reason="budget"), keys)
>>> verify_record(signed, {3: keys.public()}).pane.index
7
>>> verify_record(signed.replace(b'"epoch":3', b'"epoch":4'), {4: keys.public()})
Traceback (most recent call last):
...
procvault.streams.release.ReleaseSignatureError: bad signature on an aggregates record
>>> record_key(WithheldRecord(pane=PaneInfo(7, t, t), reason="budget"))
b'pane/7'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

import msgspec

from procvault.monitor.errors import SecurityError
from procvault.monitor.privacy.records import (
    PaneRecord,
    Record,
    WindowRecord,
    WithheldRecord,
    decode_record,
    encode_record,
)

from .envelope import VaultKeys, VaultPublicKeys, verify_signature

__all__ = [
    "ReleaseSignatureError",
    "envelope_bytes",
    "record_key",
    "sign_record",
    "verify_record",
]

SIGNED_VERSION: Final = 1
_ENVELOPE: Final = msgspec.json.Encoder()
_DOMAIN: Final = b"procvault-aggregates-v1"


class ReleaseSignatureError(SecurityError):
    """A record envelope that is malformed, from an unknown epoch, or badly signed."""


def _signed_bytes(epoch: int, record_json: bytes) -> bytes:
    return _DOMAIN + epoch.to_bytes(4, "big") + record_json


def sign_record(record: Record, keys: VaultKeys) -> bytes:
    """The signed envelope of ``record`` (the value to publish)."""
    body = encode_record(record)
    signature = keys.sign(_signed_bytes(keys.epoch, body))
    return envelope_bytes(keys.epoch, body.decode(), signature.hex())


def envelope_bytes(epoch: int, record: str, signature: str) -> bytes:
    """The envelope's bytes: the same as ``json.dumps`` of it with ``separators=(",", ":")``
    and ``ensure_ascii=False`` (what earlier versions wrote, so a record republished after an
    upgrade keeps its bytes), by msgspec's encoder (a few times faster)."""
    return _ENVELOPE.encode(
        {"v": SIGNED_VERSION, "epoch": epoch, "record": record, "signature": signature}
    )


def verify_record(data: bytes, keys: Mapping[int, VaultPublicKeys]) -> Record:
    """Verify an envelope against the announced keys per epoch, then parse the record."""
    try:
        envelope = json.loads(data)
        version, epoch = envelope["v"], envelope["epoch"]
        body = envelope["record"].encode()
        signature = bytes.fromhex(envelope["signature"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ReleaseSignatureError(f"malformed aggregates envelope: {exc}") from None
    except RecursionError:  # (JSON nested deeper than the interpreter's stack)
        raise ReleaseSignatureError("malformed aggregates envelope: nested too deeply") from None
    if version != SIGNED_VERSION:
        raise ReleaseSignatureError(f"unsupported envelope version {version!r}")
    public = keys.get(epoch) if isinstance(epoch, int) else None
    if public is None:
        raise ReleaseSignatureError(f"no announced keys for epoch {epoch!r}")
    if not verify_signature(public.ed25519, _signed_bytes(epoch, body), signature):
        raise ReleaseSignatureError("bad signature on an aggregates record")
    try:
        return decode_record(body)
    except ValueError as exc:
        raise ReleaseSignatureError(f"signed, but not a valid record: {exc}") from None


def record_key(record: Record) -> bytes:
    """The Kafka key of a record: ``pane/<index>`` or ``window/<panes>/<last pane>``."""
    if isinstance(record, PaneRecord | WithheldRecord):
        return f"pane/{record.pane.index}".encode()
    if isinstance(record, WindowRecord):
        return f"window/{record.panes}/{record.last_pane}".encode()
    raise TypeError(f"not a record: {type(record).__name__}")
