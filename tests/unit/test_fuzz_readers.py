"""Hostile bytes against every reader of Kafka records (issue 20 item 8).

Each reader is fed, for at least 2,000 Hypothesis examples, random bytes and mutations of
genuine records (bit flips, truncation, extension, header fields swapped in from other genuine
records, a known session with another tag, a new session with a random tag) and genuine
envelopes around garbage bodies sealed with the real keys. None may raise anything uncaught:
each counts and skips what it cannot verify, saying so in at most one line per kind.

Readers covered here: the vault worker's record path (:meth:`VaultWorker.process`, envelope,
frames, events, heartbeats, revocations), the release stage's partials (``_receive``) and its
state (:meth:`StateStore.load`) and its read-back of ``results.aggregates``
(:func:`verify_record`), the agent's ``agent.progress`` reader (:func:`valid_progress`) and its
trust in ``vault.keys`` (:meth:`TrustCore.offer`), ``procvault results``' readers of
aggregates and alerts, and ``procvault revoke``'s reader of the vault's attestation answer
(:class:`Challenge`). The ``vault.keys`` parsers themselves are fuzzed in
``test_attestation.py`` and ``test_attestation_trust.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import pytest
from aiokafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from procvault.monitor.compliance import Compliance, DeclareRule
from procvault.monitor.event import Event
from procvault.monitor.findings import ResultBatch, encode_batch
from procvault.monitor.privacy import (
    Budget,
    KnownKeys,
    PaneAccumulator,
    PaneSettings,
    PrivacySettings,
)
from procvault.monitor.privacy.plan import ReleasePlan
from procvault.monitor.vault import Vault
from procvault.streams import codec
from procvault.streams.changelog import StateKeys
from procvault.streams.envelope import ProducerSession, parse_header
from procvault.streams.frames import (
    EVENT,
    HEARTBEAT,
    REVOKE,
    FrameChain,
    Topics,
    encode_frame,
    seal_result,
)
from procvault.streams.revocation import Revocation, sign_revocation
from procvault.streams.secrets import OrgKeys, Registry, VaultSecrets, init_keyring
from procvault.streams.vault_worker import REASONS, VaultWorker, WorkerSettings

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
NOW_NS = 1_900_000_000 * 10**9
WALL = 1_700_000_000.0  # the wall clock of announcements (fixed: their sizes do not vary)
TOPICS = Topics("f.")
PANE = timedelta(hours=1)
DP = PrivacySettings(
    budget=Budget(1.0, window=4, delta=1e-6), panes=PaneSettings(PANE), windows=(2 * PANE,)
)
KNOWN = KnownKeys.build(("A", "B", "C"), rules=["has_b"])
PLAN = ReleasePlan.build(DP, KNOWN).fingerprint()
#: Envelope-level refusals: what a record sealed without the organization's keys ends as.
ENVELOPE_REASONS = frozenset({"malformed", "unknown_org", "unknown_epoch", "bad_tag"})


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz-keys") / "keys"
    init_keyring(path, ["lab", "ward"])
    return path


class Rec(NamedTuple):
    offset: int
    value: Any
    key: bytes | None = None


# ----------------------------------------------------------------------------- mutations
def _flip(data: st.DataObject, raw: bytes) -> bytes:
    b = bytearray(raw)
    for i in data.draw(st.lists(st.integers(0, len(b) - 1), min_size=1, max_size=4, unique=True)):
        b[i] ^= data.draw(st.integers(1, 255))
    return bytes(b)


def _mutate(data: st.DataObject, raw: bytes, others: list[bytes]) -> bytes:
    """A mutation of ``raw`` that differs from it (``others``: records to splice from)."""
    how = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice", "random"]))
    if how == "flip" or not raw:
        return _flip(data, raw) if raw else b"\x00"
    if how == "truncate":
        return raw[: data.draw(st.integers(0, len(raw) - 1))]
    if how == "extend":
        return raw + data.draw(st.binary(min_size=1, max_size=64))
    if how == "splice" and others:
        other = data.draw(st.sampled_from(others))
        cut = data.draw(st.integers(0, min(len(raw), len(other))))
        spliced = raw[:cut] + other[cut:]
        return spliced if spliced != raw else _flip(data, raw)
    return data.draw(st.binary(max_size=300).filter(lambda b: b != raw))


def _swap_fields(data: st.DataObject, record: bytes, other: bytes) -> bytes:
    """``record`` with one header field taken from ``other``, or re-tagged under a new or a
    known session: a record no genuine producer sealed."""
    _, pos = parse_header(record)
    _, opos = parse_header(other)
    head, tag, body = record[:pos], record[pos : pos + 16], record[pos + 16 :]
    fixed = pos - 16 - 8 - 32 - 8  # where the session id starts
    field = data.draw(
        st.sampled_from(
            ["session", "generation", "ephemeral", "sequence", "tag", "body", "new_session"]
        )
    )
    if field == "session":
        head = head[:fixed] + other[opos - 64 : opos - 48] + head[fixed + 16 :]
    elif field == "generation":
        head = head[: fixed + 16] + other[opos - 48 : opos - 40] + head[fixed + 24 :]
    elif field == "ephemeral":
        head = head[: fixed + 24] + other[opos - 40 : opos - 8] + head[fixed + 56 :]
    elif field == "sequence":
        head = head[: fixed + 56] + other[opos - 8 : opos]
    elif field == "tag":  # a known session, a wrong tag
        tag = data.draw(st.binary(min_size=16, max_size=16))
    elif field == "body":
        body = other[opos + 16 :]
    else:  # a new session id, a random tag
        head = head[:fixed] + data.draw(st.binary(min_size=16, max_size=16)) + head[fixed + 16 :]
        tag = data.draw(st.binary(min_size=16, max_size=16))
    forged = head + tag + body
    return forged if forged != record else _flip(data, record)


_JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # (what MessagePack can carry)
    | st.floats(allow_nan=True)
    | st.text(max_size=12),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=12,
)
#: Byte strings a parser of JSON or MessagePack must survive (deep nesting included).
_NASTY = st.sampled_from(
    [
        b"[" * 5_000,  # (deeper than the interpreter's recursion limit)
        b'{"a":' * 5_000,
        b"\x91" * 5_000,  # MessagePack: nested one-element arrays
        b"\x81\xa1a" * 5_000,  # MessagePack: nested maps
        b"\xff" * 64,
        b"",
        b"null",
        b"1e999999",
        b'"\\ud800"',
    ]
)


@contextlib.contextmanager
def _logged(name: str) -> Iterator[list[str]]:
    """The messages logged to ``name`` (INFO and up) while the block runs."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger(name)
    handler, level = Keep(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# ----------------------------------------------------------------------------- the vault worker
class _World:
    """Secrets, registry and genuine agents shared by the examples (a worker per example)."""

    def __init__(self, keys: Path) -> None:
        self.keys = keys
        self.secrets = VaultSecrets.load(keys / "vault.json")
        self.registry = Registry.load(keys / "registry.json")
        self.lab = OrgKeys.load(keys / "org-lab.json")
        self.ward = OrgKeys.load(keys / "org-ward.json")
        self.state_keys = StateKeys(self.secrets)
        self._cache: dict[str, bytes] = {}
        self.mallory = VaultSecrets.generate()  # an impersonator: its own identity and keys
        #: genuine pane partials of partitions 0 and 1 (P = 2)
        self.partials = [
            _partials(self, 0, 0, 1),
            _partials(self, 1, 0, 0),
            _partials(self, 1, 1, 2),
        ]
        #: a genuine record of the ward (read from the lab's topic: another organization's)
        self.ward_record = self.session(self.ward).seal(
            b"\0" * 40, topic=TOPICS.events("ward"), partition=0
        )

    def cached(self, name: str, make: Callable[[], bytes]) -> bytes:
        """A genuine record made once (sealing and signing cost more than the reading)."""
        if name not in self._cache:
            self._cache[name] = make()
        return self._cache[name]

    def worker(self) -> VaultWorker:
        worker = VaultWorker(
            WorkerSettings("localhost:1", 1, TOPICS, source_timeout=None),
            self.secrets,
            self.registry,
            lambda: Vault(compliance=Compliance([DeclareRule("has_b", "existence", "B")])),
            make_accumulator=lambda state: PaneAccumulator(DP, KNOWN, state),
            plan=PLAN,
            clock=lambda: NOW_NS,
        )
        worker.restore_partition(0, [], [])
        return worker

    def session(self, org: OrgKeys, generation: int = 1) -> ProducerSession:
        return ProducerSession(
            self.secrets.current.public(),
            org.sender,
            org=org.org,
            producer="a",
            generation=generation,
        )


_WORLD: dict[Path, _World] = {}


def _world(keys: Path) -> _World:
    if keys not in _WORLD:
        _WORLD[keys] = _World(keys)
    return _WORLD[keys]


_STREAMS: dict[tuple[Path, int], list[bytes]] = {}


def _genuine_stream(world: _World, n: int) -> list[bytes]:
    """``n`` genuine lab records (events of two cases, then a closing heartbeat); the same
    for every example (each has a fresh worker)."""
    if (world.keys, n) not in _STREAMS:
        _STREAMS[(world.keys, n)] = _seal_stream(world, n)
    return _STREAMS[(world.keys, n)]


def _seal_stream(world: _World, n: int) -> list[bytes]:
    session, chain, topic = world.session(world.lab), FrameChain(1), TOPICS.events("lab")
    out = []
    for i in range(n):
        ev = Event.create(f"c{i % 2}", "ABC"[i % 3], T0 + timedelta(minutes=i), org="lab")
        out.append(
            chain.event(session, (i + 1) * 256, 0, codec.encode(ev), topic=topic, partition=0)
        )
    out.append(chain.heartbeat(session, 0, 0, 1 << 60, closed=True, topic=topic, partition=0))
    return out


_EXTREME_TIMES = st.sampled_from(
    [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        T0,
    ]
)


def _garbage_event(data: st.DataObject) -> bytes:
    """The wire form of an event with arbitrary fields (what a broken or hostile agent holding
    the organization's keys could send): MessagePack shaped like an event, or not."""
    if data.draw(st.booleans()):
        fields = [
            data.draw(st.text(max_size=8)),
            data.draw(st.text(max_size=8)),
            data.draw(_EXTREME_TIMES | st.datetimes(timezones=st.just(UTC))),
            data.draw(st.sampled_from(["lab", "ward", "", "x"])),
            data.draw(st.none() | st.text(max_size=5)),
            data.draw(
                st.lists(st.tuples(st.text(max_size=5), _JSONISH), max_size=3)
                | st.just([["b", 1], ["a", 2]])
            ),
            data.draw(st.integers(-3, 5)),
        ]
        cut = data.draw(st.integers(0, len(fields)))
        return bytes([1]) + msgspec.msgpack.encode(fields[: cut or len(fields)])
    return data.draw(st.binary(max_size=120) | _NASTY)


def _garbage_revocation(data: st.DataObject, world: _World) -> bytes:
    assert world.lab.signing is not None
    good = sign_revocation(
        Revocation.for_case(
            "lab", data.draw(st.text(min_size=1, max_size=6)), policy="p", issued_at=T0
        ),
        world.lab.signing,
    )
    kind = data.draw(st.sampled_from(["good", "mutated", "json", "nasty", "other_org"]))
    if kind == "good":
        return good
    if kind == "mutated":
        return _mutate(data, good, [])
    if kind == "json":
        return json.dumps(data.draw(_JSONISH)).encode()
    if kind == "other_org":
        assert world.ward.signing is not None
        return sign_revocation(
            Revocation.for_case("ward", "c0", policy="p", issued_at=T0), world.ward.signing
        )
    return data.draw(_NASTY)


def _real_key_garbage(data: st.DataObject, world: _World) -> bytes:
    """A genuine envelope (the lab's real keys) around a garbage or odd frame."""
    session = world.session(world.lab, generation=data.draw(st.integers(0, 2**64 - 1)))
    topic = TOPICS.events("lab")
    what = data.draw(st.sampled_from(["bytes", "event", "heartbeat", "revoke", "kind"]))
    order = data.draw(st.integers(0, 2**64 - 1))
    prev = (data.draw(st.integers(0, 2**64 - 1)), data.draw(st.integers(0, 2**64 - 1)))
    if what == "bytes":
        plain = data.draw(st.binary(max_size=80))
    elif what == "event":
        plain = encode_frame(EVENT, order, 0, _garbage_event(data), prev=prev)
    elif what == "heartbeat":
        body = data.draw(st.binary(min_size=9, max_size=9) | st.binary(max_size=12))
        plain = encode_frame(HEARTBEAT, order, 0, body, prev=prev)
    elif what == "revoke":
        plain = encode_frame(REVOKE, order, 0, _garbage_revocation(data, world), prev=prev)
    else:
        plain = encode_frame(data.draw(st.integers(3, 255)), order, 0, b"", prev=prev)
    return session.seal(plain, topic=topic, partition=data.draw(st.sampled_from([0, 0, 0, 1])))


@settings(max_examples=2000, deadline=None)
@given(st.data())
def test_fuzz_vault_worker_counts_and_skips_whatever_it_reads(
    keyring: Path, data: st.DataObject
) -> None:
    world = _world(keyring)
    genuine = _genuine_stream(world, data.draw(st.integers(1, 4)))
    ward = world.ward_record
    values: list[Any] = []
    sealed: set[bytes] = set()
    for _ in range(data.draw(st.integers(1, 6))):
        kind = data.draw(
            st.sampled_from(["genuine", "mutated", "swapped", "random", "real_key", "odd"])
        )
        if kind == "genuine":
            values.append(data.draw(st.sampled_from(genuine)))
        elif kind == "mutated":
            values.append(_mutate(data, data.draw(st.sampled_from(genuine)), [*genuine, ward]))
        elif kind == "swapped":
            a, b = data.draw(st.sampled_from(genuine)), data.draw(st.sampled_from([*genuine, ward]))
            values.append(_swap_fields(data, a, b))
        elif kind == "random":
            values.append(data.draw(st.binary(max_size=400) | _NASTY))
        elif kind == "real_key":
            values.append(_real_key_garbage(data, world))
            sealed.add(values[-1])
        else:  # not bytes at all (a tombstone), or a ward record in the lab's topic
            values.append(data.draw(st.sampled_from([None, ward])))
    # what no genuine producer of the lab sealed (a splice may give back a genuine record)
    forged = sum(1 for v in values if v not in sealed and v not in genuine)
    worker = world.worker()
    tp = TopicPartition(TOPICS.events("lab"), 0)
    with _logged("procvault.vault") as lines:
        effects = worker.process({tp: [Rec(i, v) for i, v in enumerate(values)]})
        worker.outputs(effects)  # what the commit would write is built too
        effects = worker.process({tp: [Rec(len(values) + i, v) for i, v in enumerate(values)]})
        worker.outputs(effects)  # (and all of it again: replays of everything)
    stats = worker.stats
    assert stats.records == 2 * len(values)
    assert set(stats.rejected) <= set(REASONS)
    assert sum(stats.rejected.get(r, 0) for r in ENVELOPE_REASONS) >= 2 * forged
    assert all("\n" not in line for line in lines)
    refusals = [line for line in lines if line.startswith("refused") and "revocation" not in line]
    kinds = {r for r, n in stats.rejected.items() if n} - {"bad_signature"}
    assert len(refusals) == len(kinds)  # one line per kind, not one per record


# ----------------------------------------------------------------------------- the release stage
_STAGES: dict[Path, Any] = {}


def _stage(world: _World) -> Any:
    """The release stage of ``world``, made once (its plan searches thresholds, its releaser
    sets up OpenDP); what it logged so far is forgotten."""
    from procvault.monitor.privacy.mechanisms import OpenDPReleaser
    from procvault.streams.release_stage import ReleaseStage, ReleaseStageSettings

    stage = _STAGES.get(world.keys)
    if stage is None:
        plan = ReleasePlan.build(DP, KNOWN)
        stage = _STAGES[world.keys] = ReleaseStage(
            ReleaseStageSettings("localhost:1", TOPICS), world.secrets, plan, OpenDPReleaser(plan)
        )
    stage._problems.clear()
    return stage


def _partials(world: _World, partition: int, first: int, through: int) -> tuple[bytes, bytes]:
    from procvault.monitor.privacy.combiner import PanePartials
    from procvault.monitor.privacy.panes import PaneAggregate, PaneClock
    from procvault.streams.frames import seal_partials

    clock = PaneClock(DP.panes)
    pane = clock.pane(through)
    agg = PaneAggregate(pane.index, pane.start, pane.end, (("activity", ((("A",), 2),)),))
    partials = PanePartials(partition, 2, PLAN, first, through, (agg,), opens=first == 0)
    return seal_partials(world.state_keys, partials)


def _garbage_partials(data: st.DataObject, world: _World) -> tuple[bytes | None, bytes]:
    """Sealed with the vault's real partials key and bound to its key: a body that is no
    partial, or a partial with arbitrary fields."""
    from procvault.monitor.privacy.combiner import PanePartials
    from procvault.monitor.privacy.panes import PaneAggregate
    from procvault.streams.frames import partials_key

    partition = data.draw(st.integers(-5, 2**32 - 1))
    key = partials_key(partition) if 0 <= partition < 2**32 else b"\0\0\0\0"
    big = st.integers(-(2**63), 2**63 - 1)
    when = _EXTREME_TIMES | st.datetimes(timezones=st.just(UTC))
    if data.draw(st.booleans()):
        body = data.draw(st.binary(max_size=80) | _NASTY)
    else:
        aggs = data.draw(
            st.lists(
                st.builds(
                    PaneAggregate,
                    big,
                    when,
                    when,
                    st.just((("activity", ((("A",), 1),)),))
                    | st.lists(st.tuples(st.text(max_size=4), st.just(((("x",), -3),)))).map(tuple),
                ),
                max_size=3,
            )
        )
        partials = PanePartials(
            int.from_bytes(key, "big"),
            data.draw(st.integers(-2, 2**40) | st.just(2)),
            data.draw(st.just(PLAN) | st.text(max_size=4)),
            data.draw(big | st.just(0)),
            data.draw(big | st.just(3)),
            tuple(aggs),
            tuple(data.draw(st.lists(st.tuples(big, big), max_size=2))),
            data.draw(st.just(2) | st.integers(-1, 5)),
            data.draw(st.booleans()),
        )
        body = msgspec.msgpack.encode(partials)
    context = b"procvault-partials-v2|" + key + PLAN.encode()
    return key, world.state_keys.seal("partials", body, context=context)


@settings(max_examples=2000, deadline=None)
@given(data=st.data())
def test_fuzz_release_stage_partials_reader_counts_and_skips(
    keyring: Path, data: st.DataObject
) -> None:
    from procvault.monitor.privacy.stage import ReleaseEngine

    world = _world(keyring)
    genuine = world.partials
    records: list[Rec] = []
    for i in range(data.draw(st.integers(1, 6))):
        kind = data.draw(st.sampled_from(["genuine", "mutated", "random", "real_key", "moved"]))
        if kind == "genuine":
            key, value = data.draw(st.sampled_from(genuine))
        elif kind == "mutated":
            key, value = data.draw(st.sampled_from(genuine))
            value = _mutate(data, value, [v for _, v in genuine])
        elif kind == "random":
            key = data.draw(st.none() | st.binary(max_size=6))
            value = data.draw(st.none() | st.binary(max_size=200) | _NASTY)
        elif kind == "real_key":
            key, value = _garbage_partials(data, world)
        else:  # a genuine partial under another record key (another partition)
            key, value = genuine[0][0][:3] + b"\x01", genuine[0][1]
        records.append(Rec(i, value, key))
    stage = _stage(world)
    engine = ReleaseEngine(stage.plan, stage.releaser)
    with _logged("procvault.release") as lines:
        for r in records:
            stage._receive(engine, r)
        if data.draw(st.booleans()):
            engine.release()  # whatever was taken can be noised
    assert engine.offset == len(records)
    assert all("\n" not in line for line in lines)
    assert len(lines) <= len(stage._problems)


@settings(max_examples=2000, deadline=None)
@given(data=st.data())
def test_fuzz_release_stage_state_reader_opens_or_refuses_in_one_line(
    keyring: Path, data: st.DataObject
) -> None:
    """``release.state`` (compacted): what does not open is a one-line ConfigError (the stage
    does not start on state it cannot trust: setting the head aside would roll it back)."""
    from procvault.monitor.errors import ConfigError
    from procvault.monitor.privacy.records import PaneInfo, WithheldRecord
    from procvault.monitor.privacy.stage import ReleaseEngine

    world = _world(keyring)
    stage = _stage(world)
    store = stage.store
    engine = ReleaseEngine(stage.plan, stage.releaser)
    head_key, head = store.head(engine.head())
    withheld = WithheldRecord(pane=PaneInfo(3, T0, T0 + PANE), reason="budget")
    pane_key, pane = store.pane(withheld)
    records: dict[bytes, bytes | None] = {head_key: head, pane_key: pane}
    for _ in range(data.draw(st.integers(0, 3))):
        key = data.draw(st.sampled_from([head_key, pane_key, b"pane/0", b"x"]))
        kind = data.draw(st.sampled_from(["mutated", "random", "swapped", "real_key", "none"]))
        if kind == "mutated":
            records[key] = _mutate(data, records.get(key) or head, [head, pane])
        elif kind == "random":
            records[key] = data.draw(st.binary(max_size=200) | _NASTY)
        elif kind == "swapped":
            records[key] = pane if key == head_key else head
        elif kind == "real_key":
            records[key] = store.seal(key, data.draw(st.binary(max_size=80) | _NASTY))
        else:
            records[key] = None
    try:
        store.load(records)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("release.state:")


@settings(max_examples=2000, deadline=None)
@given(data=st.data())
def test_fuzz_aggregates_verifier_raises_only_its_own_error(
    keyring: Path, data: st.DataObject
) -> None:
    """:func:`verify_record`: the release stage's read-back of ``results.aggregates`` and
    ``procvault results``' check of every aggregate."""
    from procvault.streams.release import ReleaseSignatureError, sign_record, verify_record

    world = _world(keyring)
    keys = world.secrets.current
    announced = {keys.epoch: keys.public()}
    value = _aggregate_value(data, world)
    try:
        verify_record(value, announced)
    except ReleaseSignatureError as exc:
        assert "\n" not in str(exc)
    del sign_record


def _aggregate_value(data: st.DataObject, world: _World) -> Any:
    """A ``results.aggregates`` value: genuine, mutated, another shape, or a garbage record
    signed with the vault's real key."""
    from procvault.monitor.privacy.records import PaneInfo, WithheldRecord
    from procvault.streams.release import _signed_bytes, sign_record

    keys = world.secrets.current
    genuine = world.cached(
        "aggregate",
        lambda: sign_record(WithheldRecord(pane=PaneInfo(7, T0, T0 + PANE), reason="budget"), keys),
    )
    kind = data.draw(st.sampled_from(["genuine", "mutated", "field", "random", "real_key"]))
    if kind == "genuine":
        return genuine
    if kind == "mutated":
        return _mutate(data, genuine, [])
    if kind == "field":
        doc = json.loads(genuine)
        doc[data.draw(st.sampled_from(sorted(doc)))] = data.draw(_JSONISH)
        return json.dumps(doc).encode()
    if kind == "random":
        return data.draw(st.none() | st.binary(max_size=200) | _NASTY)
    body = data.draw(
        st.binary(max_size=60).map(lambda b: b.decode("latin-1")) | st.just("[" * 5000)
    )
    epoch = data.draw(st.just(keys.epoch) | st.integers(-1, 3))
    signature = keys.sign(_signed_bytes(keys.epoch, body.encode())).hex()
    return json.dumps({"v": 1, "epoch": epoch, "record": body, "signature": signature}).encode()


# ----------------------------------------------------------------------------- procvault results
def _reader(world: _World, org: bool) -> Any:
    from procvault.results.reader import ResultsReader
    from procvault.streams.attestation import SimulatedVerifier

    identity = world.secrets.identity_public
    reader = ResultsReader(
        "127.0.0.1:9",
        TOPICS,
        identity=identity,
        verifier=SimulatedVerifier(identity, allow_insecure=True),
        org_keys=world.lab if org else None,
        out=io.StringIO(),
    )
    keys = world.secrets.current
    reader._announced.epochs[keys.epoch] = keys.public()  # (as if read from vault.keys)
    return reader


def _alert_value(data: st.DataObject, world: _World) -> Any:
    """A ``results.alerts.lab`` value: genuine, mutated, an all-zero ephemeral key, another
    organization's, or a garbage batch signed and sealed with the real keys."""
    keys = world.secrets.current
    topic = TOPICS.alerts("lab")
    batch = encode_batch(ResultBatch(partition=0, commit=1, chunk=0, items=()))
    genuine = world.cached(
        "alert", lambda: seal_result(world.lab.alerts_public, batch, topic=topic, keys=keys)
    )
    kind = data.draw(
        st.sampled_from(["genuine", "mutated", "zero_key", "random", "other_org", "real_key"])
    )
    if kind == "genuine":
        return genuine
    if kind == "mutated":
        return _mutate(data, genuine, [])
    if kind == "zero_key":
        return genuine[:4] + b"\0" * 32 + data.draw(st.binary(min_size=28, max_size=80))
    if kind == "random":
        return data.draw(st.none() | st.binary(max_size=200) | _NASTY)
    if kind == "other_org":
        return world.cached(
            "ward_alert",
            lambda: seal_result(
                world.ward.alerts_public, batch, topic=TOPICS.alerts("ward"), keys=keys
            ),
        )
    body = data.draw(st.binary(max_size=80) | _NASTY)
    return seal_result(world.lab.alerts_public, body, topic=topic, keys=keys)


@settings(max_examples=2000, deadline=None)
@given(data=st.data())
def test_fuzz_procvault_results_readers_of_aggregates_and_alerts(
    keyring: Path, data: st.DataObject
) -> None:
    """Whatever ``results.aggregates`` and ``results.alerts.<org>`` carry, ``procvault
    results`` shows what verifies and counts the rest, one stderr line per record (the
    ``vault.keys`` reader is fuzzed in ``test_attestation.py``)."""
    from procvault.results.reader import _epoch_of

    world = _world(keyring)
    reader = _reader(world, org=True)
    err = io.StringIO()
    refused = 0
    with contextlib.redirect_stderr(err):
        for i in range(data.draw(st.integers(1, 4))):
            alert = data.draw(st.booleans())
            value = _alert_value(data, world) if alert else _aggregate_value(data, world)
            if value is None:  # (what _handle does with a tombstone)
                reader._reject(TOPICS.aggregates, 0, i, "malformed")
                refused += 1
                continue
            _epoch_of(value, alert=alert)
            if alert:
                refused += not reader.add_alert(0, i, value)
            else:
                key = data.draw(st.none() | st.binary(max_size=8))
                refused += not reader.add_aggregate(0, i, key, value)
    stats = reader.stats
    lines = err.getvalue().splitlines()
    assert stats.rejected == refused
    assert len([line for line in lines if "record rejected" in line]) == refused
    shown = reader.out.getvalue()
    assert "Traceback" not in shown and "Traceback" not in err.getvalue()


# ----------------------------------------------------------------------------- agent.progress
@settings(max_examples=2000, deadline=None)
@given(data=st.data())
def test_fuzz_agent_progress_reader_counts_and_skips(keyring: Path, data: st.DataObject) -> None:
    """The agent's reader of ``agent.progress`` (:func:`valid_progress`, what
    ``Agent.committed_progress`` calls): only records MACed with the organization's progress
    key and of this agent count; every other value is counted, nothing raised."""
    import hashlib
    import hmac

    from procvault.organization.progress import (
        Progress,
        best_progress,
        seal_progress,
        valid_progress,
    )

    world = _world(keyring)
    key = world.lab.progress_key
    mine = Progress("lab", "a", position=42, generation=7, sequence=9, heads=((7, 9),))
    genuine = [
        seal_progress(key, mine),
        seal_progress(key, Progress("lab", "a", 50, 8, 3, ((8, 3),))),
        seal_progress(key, Progress("lab", "other", 90, 8, 3, ())),  # another agent's
        seal_progress(world.ward.progress_key, Progress("ward", "a", 99, 1, 1, ())),
    ]
    values: list[Any] = []
    for _ in range(data.draw(st.integers(1, 6))):
        kind = data.draw(st.sampled_from(["genuine", "mutated", "random", "real_key", "typed"]))
        if kind == "genuine":
            values.append(data.draw(st.sampled_from(genuine)))
        elif kind == "mutated":
            values.append(_mutate(data, data.draw(st.sampled_from(genuine)), genuine))
        elif kind == "random":
            values.append(
                data.draw(
                    st.none() | st.binary(max_size=200) | _NASTY | st.just(b'{"position": 999999}')
                )
            )
        else:  # MACed with the real key: a body that is not a progress record, or an odd one
            if kind == "typed":
                body = msgspec.msgpack.encode(
                    {
                        "org": data.draw(st.sampled_from(["lab", "ward", 1])),
                        "producer": "a",
                        "position": data.draw(st.integers(-(2**63), 2**64 - 1)),
                        "generation": data.draw(_JSONISH),
                        "sequence": data.draw(st.integers(-5, 5)),
                        "heads": data.draw(_JSONISH),
                        "format": data.draw(st.sampled_from([3, 2, "3"])),
                    }
                )
            else:
                body = data.draw(st.binary(max_size=80) | _NASTY)
            values.append(body + hmac.new(key, body, hashlib.sha256).digest())
    found, bad = valid_progress(values, key, "lab", "a")
    assert len(found) + bad == sum(1 for v in values if v is not None)
    for p in found:
        assert (p.org, p.producer, p.format) == ("lab", "a", 3) and p.position >= 0
        assert isinstance(p.generation, int) and all(len(h) == 2 for h in p.heads)
    best, _ = best_progress(values, key, "lab", "a")
    assert (best is None) == (not found)
    if genuine[0] in values:
        assert mine in found
    assert not any(p.org != "lab" or p.producer != "a" for p in found)


# ----------------------------------------------------------------------------- vault.keys answers
def _answers(data: st.DataObject, world: _World, nonce: bytes) -> tuple[bytes, list[bytes | None]]:
    """``vault.keys`` records during a round of ``nonce``: the vault's genuine answer, byte-
    and field-level mutations of it (still naming our nonce), an impersonator's answer to our
    nonce, other rounds' answers and garbage."""
    from procvault.streams.attestation import KeyAnnouncement, SimulatedProvider

    ours = KeyAnnouncement.create(
        world.secrets, SimulatedProvider(world.secrets.identity), nonce=nonce, now=WALL
    ).to_bytes()
    mallory = world.mallory
    out: list[bytes | None] = []
    for _ in range(data.draw(st.integers(1, 5))):
        kind = data.draw(
            st.sampled_from(["mutated", "field", "mallory", "other_nonce", "random", "ours"])
        )
        if kind == "ours":
            out.append(ours)
        elif kind == "mutated":
            out.append(_mutate(data, ours, []))
        elif kind == "field":
            outer = json.loads(ours)
            payload = json.loads(outer["payload"])
            where = data.draw(st.sampled_from(["payload", "certificate", "evidence", "issued_at"]))
            if where == "issued_at":
                payload["issued_at"] = data.draw(_JSONISH)
            else:
                target = payload if where == "payload" else payload[where]
                target[data.draw(st.sampled_from(sorted(target)))] = data.draw(_JSONISH)
            outer["payload"] = json.dumps(payload)
            out.append(json.dumps(outer).encode())
        elif kind == "mallory":
            out.append(
                KeyAnnouncement.create(
                    mallory, SimulatedProvider(mallory.identity), nonce=nonce, now=WALL
                ).to_bytes()
            )
        elif kind == "other_nonce":
            out.append(
                KeyAnnouncement.create(
                    world.secrets, SimulatedProvider(world.secrets.identity), nonce=b"o" * 16
                ).to_bytes()
            )
        else:
            out.append(data.draw(st.none() | st.binary(max_size=300) | _NASTY))
    return ours, out


@settings(max_examples=2000, deadline=None)
@given(data=st.data())
def test_fuzz_revoke_and_agent_readers_of_the_vaults_answer(
    keyring: Path, data: st.DataObject
) -> None:
    """``procvault revoke``'s (and every ``attest_vault`` caller's) reader of the answer to its
    nonce (:class:`Challenge`), and the agent's :meth:`TrustCore.offer` (first round and a
    re-verification): mutations of the vault's own answer to our nonce, an impersonator's, and
    garbage never raise, never fail the round, and never give other keys than the vault's."""
    from procvault.organization.trust import TrustCore, TrustSettings, TrustState
    from procvault.streams.attestation import SimulatedVerifier
    from procvault.streams.provisioning import Challenge

    world = _world(keyring)
    identity = world.secrets.identity_public
    verifier = SimulatedVerifier(identity, allow_insecure=True)
    vault = world.secrets.current.public()
    # procvault revoke: one round
    round_ = Challenge(identity, verifier, started=0.0, nonce=b"r" * 16)
    ours, answers = _answers(data, world, round_.nonce)
    got = [round_.offer(a, now=WALL) for a in answers]
    assert all(k is None or k == vault for k in got)
    assert vault in got or ours not in answers
    # the agent: a first round, then a re-verification round
    core = TrustCore(identity, verifier, TrustSettings(reattest_interval=60, timeout=10))
    for mono in (0.0, 60.0):
        nonce = core.due(mono)
        assert nonce is not None
        for i, a in enumerate(_answers(data, world, nonce)[1]):
            core.offer(a, mono=mono + i / 10, wall=WALL)
        assert core.first_failure is None and core.state is not TrustState.DISTRUSTED
        assert core.keys in (None, vault)
        if core.round is not None:  # no genuine answer came: answer now
            from procvault.streams.attestation import KeyAnnouncement, SimulatedProvider

            genuine = KeyAnnouncement.create(
                world.secrets, SimulatedProvider(world.secrets.identity), nonce=nonce, now=WALL
            )
            core.offer(genuine.to_bytes(), mono=mono + 1, wall=WALL)
        assert core.state is TrustState.TRUSTED and core.keys == vault
    assert set(core.refused) <= {"malformed", "not_pinned", "bad_signature", "wrong_nonce"}


# ----------------------------------------------------------------------------- regressions
#: JSON and MessagePack nested deeper than the interpreter's stack, and invalid UTF-8: inputs
#: the fuzz tests above found crashing a reader (each case below failed before its fix).
_DEEP_JSON = b"[" * 5_000
_DEEP_MSGPACK = b"\x81\xa1a" * 5_000
_BAD_UTF8 = b"\xa2\x00\x80"  # MessagePack: a 2-byte string that is not UTF-8


@pytest.mark.parametrize("value", [_DEEP_JSON, b'{"v":1,"epoch":' + b"[" * 5_000])
def test_regression_deep_json_on_results_aggregates_is_refused_not_raised(
    keyring: Path, value: bytes
) -> None:
    """Any Kafka writer: a deeply nested JSON value on ``results.aggregates`` raised
    RecursionError out of ``procvault results`` and the release stage's start."""
    from procvault.results.reader import _epoch_of
    from procvault.streams.release import ReleaseSignatureError, verify_record

    world = _world(keyring)
    with pytest.raises(ReleaseSignatureError, match="malformed aggregates envelope"):
        verify_record(value, {1: world.secrets.current.public()})
    assert _epoch_of(value, alert=False) is None
    reader = _reader(world, org=False)
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert reader.add_aggregate(0, 5, None, value) is False
    assert err.getvalue() == f"warning: {TOPICS.aggregates}[0]@5: record rejected (malformed)\n"


@pytest.mark.parametrize("body", [_DEEP_JSON, b'"\x80"'])
def test_regression_revocation_parser_refuses_deep_or_non_utf8_json(body: bytes) -> None:
    """An organization's agent (its sender key): a REVOKE frame whose body was deep JSON or not
    UTF-8 raised out of :meth:`VaultWorker.process`, stopping the vault."""
    from procvault.monitor.errors import InputError
    from procvault.streams.revocation import verify_revocation

    with pytest.raises(InputError, match="revocation: not JSON"):
        verify_revocation(body, {})


@pytest.mark.parametrize("body", [_DEEP_JSON, b'"\x80"'])
def test_regression_vault_worker_counts_a_bad_revocation_body(keyring: Path, body: bytes) -> None:
    world = _world(keyring)
    session = world.session(world.lab)
    frame = encode_frame(REVOKE, 0, 0, body, prev=(0, 0))
    record = session.seal(frame, topic=TOPICS.events("lab"), partition=0)
    worker = world.worker()
    tp = TopicPartition(TOPICS.events("lab"), 0)
    with _logged("procvault.vault") as lines:
        worker.process({tp: [Rec(0, record), Rec(1, record)]})
    assert {r: n for r, n in worker.stats.rejected.items() if n} == {"malformed": 2}
    assert [line for line in lines if line.startswith("refused")] == [
        "refused 2 record(s) of the event topics (malformed); further ones of this kind are "
        "counted (worker stats, metrics), not logged"
    ]


@pytest.mark.parametrize("body", [_DEEP_MSGPACK, b"\x81\xa4plan" + _BAD_UTF8])
def test_regression_partials_and_release_state_refuse_deep_or_non_utf8_bodies(
    keyring: Path, body: bytes
) -> None:
    """The vault's partials (or state) key: a sealed body nested too deeply or with invalid
    UTF-8 raised out of the release stage's reader of ``vault.partials`` and ``release.state``."""
    from procvault.monitor.errors import ConfigError
    from procvault.streams.envelope import RejectedRecord
    from procvault.streams.frames import open_partials, partials_key

    world = _world(keyring)
    key = partials_key(0)
    sealed = world.state_keys.seal(
        "partials", body, context=b"procvault-partials-v2|" + key + PLAN.encode()
    )
    with pytest.raises(RejectedRecord, match="malformed"):
        open_partials(world.state_keys, key, sealed, plan=PLAN)
    store = _stage(world).store
    with pytest.raises(ConfigError, match=r"^release.state: the head does not open"):
        store.load({b"head": store.seal(b"head", body)})


def test_regression_a_partial_with_a_pane_out_of_the_clocks_range_is_refused(
    keyring: Path,
) -> None:
    """A pane index no date can have raised OverflowError out of the combiner (the stage)."""
    from procvault.monitor.privacy.combiner import PaneCombiner, PanePartials
    from procvault.monitor.privacy.panes import PaneAggregate, PaneClock

    clock = PaneClock(DP.panes)
    huge = 2**62
    agg = PaneAggregate(huge, T0, T0)
    combiner = PaneCombiner(clock, PLAN)
    with pytest.raises(ValueError, match=f"pane {huge} of partition 0 is out of range"):
        combiner.add(PanePartials(0, 1, PLAN, 0, huge, (agg,), opens=True))
    world = _world(keyring)
    stage = _stage(world)
    from procvault.monitor.privacy.stage import ReleaseEngine
    from procvault.streams.frames import seal_partials

    engine = ReleaseEngine(stage.plan, stage.releaser)
    key, value = seal_partials(
        world.state_keys, PanePartials(0, 1, PLAN, 0, huge, (agg,), opens=True)
    )
    with _logged("procvault.release") as lines:
        stage._receive(engine, Rec(0, value, key))
    assert engine.rejected == 1 and len(lines) == 1


@pytest.mark.parametrize("body", [_DEEP_MSGPACK, b"\x91" * 5_000, _BAD_UTF8])
def test_regression_alerts_and_progress_refuse_deep_or_non_utf8_bodies(
    keyring: Path, body: bytes
) -> None:
    """Sealed and signed by the vault (an alert), or MACed with the organization's progress
    key: a body nested too deeply or not UTF-8 raised out of ``procvault results --org`` and
    out of the agent's reader of ``agent.progress``."""
    import hashlib
    import hmac

    from procvault.monitor.errors import CodecError
    from procvault.monitor.findings import decode_batch
    from procvault.organization.progress import valid_progress

    with pytest.raises(CodecError):
        decode_batch(body)
    world = _world(keyring)
    reader = _reader(world, org=True)
    value = seal_result(
        world.lab.alerts_public, body, topic=TOPICS.alerts("lab"), keys=world.secrets.current
    )
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert reader.add_alert(0, 3, value) is False
    assert "record rejected (malformed)" in err.getvalue()
    key = world.lab.progress_key
    maced = body + hmac.new(key, body, hashlib.sha256).digest()
    assert valid_progress([maced], key, "lab", "a") == ([], 1)


# ----------------------------------------------------------------------------- vault.changelog
def _committed_log(world: _World) -> tuple[list[tuple[bytes, bytes | None]], list[bytes]]:
    """What one commit of the lab's genuine stream wrote: ``(changelog, commit records)``."""
    worker = world.worker()
    tp = TopicPartition(TOPICS.events("lab"), 0)
    effects = worker.process({tp: [Rec(i, v) for i, v in enumerate(_genuine_stream(world, 3))]})
    changelog, commits = [], []
    for topic, key, value, _p in worker.outputs(effects):
        if topic == TOPICS.commits and value is not None:
            commits.append(value)
        elif topic == TOPICS.changelog and key is not None:
            changelog.append((key, value))
    return changelog, commits


_LOGS: dict[Path, tuple[list[tuple[bytes, bytes | None]], list[bytes]]] = {}


@settings(max_examples=2000, deadline=None)
@given(data=st.data())
def test_fuzz_vault_restore_sets_aside_or_refuses_in_one_line(
    keyring: Path, data: st.DataObject
) -> None:
    """The vault's reader of ``vault.changelog`` and ``vault.commits`` (restore on assignment):
    what the vault did not seal is set aside and counted; state that is not what the
    partition last committed is refused with a one-line :class:`RollbackError`."""
    from procvault.streams.changelog import RollbackError

    world = _world(keyring)
    if keyring not in _LOGS:
        _LOGS[keyring] = _committed_log(world)
    changelog, commits = _LOGS[keyring]
    values: list[tuple[Any, Any]] = list(changelog)
    for _ in range(data.draw(st.integers(0, 4))):
        kind = data.draw(st.sampled_from(["mutated", "random", "moved", "dropped", "real_key"]))
        key, value = data.draw(st.sampled_from(changelog))
        if kind == "mutated":
            values.append((key, _mutate(data, value or b"", [v or b"" for _, v in changelog])))
        elif kind == "random":
            values.append(
                (
                    data.draw(st.none() | st.binary(max_size=20) | st.sampled_from([key, b"p"])),
                    data.draw(st.none() | st.binary(max_size=200) | _NASTY),
                )
            )
        elif kind == "moved":  # a genuine value under another genuine key
            other = data.draw(st.sampled_from(changelog))[0]
            values.append((other, value))
        elif kind == "dropped" and len(values) > 1:
            values.pop(data.draw(st.integers(0, len(values) - 1)))
        else:  # sealed with the real state key for this key and partition: garbage inside
            context = b"procvault-state-v2|" + key + b"|" + (0).to_bytes(4, "big")
            values.append(
                (key, world.state_keys.seal("state-seal", data.draw(_NASTY), context=context))
            )
    records = list(commits)
    if data.draw(st.booleans()):
        records.append(data.draw(st.none() | st.binary(max_size=120) | _NASTY))
    if data.draw(st.booleans()):
        records = [_mutate(data, r, []) for r in records]
    worker = world.worker()
    with _logged("procvault.vault") as lines:
        try:
            worker.restore_partition(0, values, records)
        except RollbackError as exc:
            assert "\n" not in str(exc) and worker.stats.rollbacks == 1
    assert all("\n" not in line for line in lines)
