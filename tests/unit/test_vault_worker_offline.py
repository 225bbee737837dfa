"""The vault worker's shell without a broker: records in, the records one commit writes out,
and a restart from those (placeholders, completion, revocations, stale state)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from aiokafka import TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from procvault.monitor.compliance import Compliance, DeclareRule
from procvault.monitor.event import PLACEHOLDER_ACTIVITY, Event, EventKind
from procvault.monitor.findings import DeviationFinding, decode_batch
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
from procvault.streams.changelog import RollbackError, StateCodec
from procvault.streams.envelope import ProducerSession
from procvault.streams.frames import (
    REVOKE,
    FrameChain,
    Topics,
    encode_frame,
    open_partials,
    open_result,
)
from procvault.streams.revocation import Revocation, sign_revocation
from procvault.streams.secrets import OrgKeys, Registry, VaultSecrets, init_keyring
from procvault.streams.vault_worker import VaultWorker, WorkerSettings

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
NOW_NS = 1_900_000_000 * 10**9
TOPICS = Topics("t.")
PANE = timedelta(hours=1)
DP = PrivacySettings(
    budget=Budget(1.0, window=4, delta=1e-6), panes=PaneSettings(PANE), windows=(2 * PANE,)
)
KNOWN = KnownKeys.build(("A", "B", "C"), rules=["has_b"])
PLAN = ReleasePlan.build(DP, KNOWN).fingerprint()


class Rec(NamedTuple):
    offset: int
    value: bytes
    key: bytes | None = None


class Agent:
    """Seals frames as one organization's agent session would."""

    def __init__(
        self,
        keys: Path,
        org: str,
        vault: VaultSecrets,
        generation: int = 1,
        chain: FrameChain | None = None,
    ) -> None:
        self.org = org
        self.keys = OrgKeys.load(keys / f"org-{org}.json")
        self.session = ProducerSession(
            vault.current.public(), self.keys.sender, org=org, producer="a", generation=generation
        )
        self.topic = TOPICS.events(org)
        self.chain = chain if chain is not None else FrameChain(1)  # (a later session goes on)
        self.pos = 0

    def event(self, ev: Event) -> bytes:
        self.pos += 1
        return self.chain.event(
            self.session, self.pos * 256, 0, codec.encode(ev), topic=self.topic, partition=0
        )

    def close(self) -> bytes:
        return self.chain.heartbeat(
            self.session, 0, 0, 1 << 60, closed=True, topic=self.topic, partition=0
        )

    def revoke(self, rev: Revocation, key: Ed25519PrivateKey) -> bytes:  # (not chained)
        frame = encode_frame(REVOKE, 0, 0, sign_revocation(rev, key), prev=(0, 0))
        return self.session.seal(frame, topic=self.topic, partition=0)


def _worker(keys: Path, *, dp: bool = True) -> VaultWorker:
    worker = VaultWorker(
        WorkerSettings("localhost:1", 1, TOPICS, source_timeout=None),
        VaultSecrets.load(keys / "vault.json"),
        Registry.load(keys / "registry.json"),
        lambda: Vault(compliance=Compliance([DeclareRule("has_b", "existence", "B")])),
        make_accumulator=(lambda state: PaneAccumulator(DP, KNOWN, state)) if dp else None,
        plan=PLAN if dp else None,
        clock=lambda: NOW_NS,
    )
    worker.restore_partition(0, [], [])
    return worker


#: ``(key, value)`` of the changelog and commit records, in the order they were written
Log = list[tuple[bytes, bytes | None]]
COMMIT_KEY = StateCodec.commit_key(0)


def _restore(worker: VaultWorker, log: Log) -> None:
    """Restore partition 0 from what :func:`_commit` kept (its commit records included)."""
    worker.restore_partition(
        0, [(k, v) for k, v in log if k != COMMIT_KEY], [v for k, v in log if k == COMMIT_KEY]
    )


def _commit(
    worker: VaultWorker,
    changelog: Log,
    values: list[bytes],
    start: int = 0,
    org: str = "lab",
) -> list[Any]:
    """Process ``values`` (offsets from ``start``) and apply what the commit writes to
    ``changelog`` (the changelog and commit records, in order); returns the outputs."""
    tp = TopicPartition(TOPICS.events(org), 0)
    effects = worker.process({tp: [Rec(start + i, v) for i, v in enumerate(values)]})
    out = worker.outputs(effects)
    for topic, key, value, _partition in out:
        if topic in (TOPICS.changelog, TOPICS.commits) and key is not None:
            changelog.append((key, value))
    return out


def _findings(worker: VaultWorker, keys: Path, out: list[Any], org: str = "lab") -> list[Any]:
    org_keys = OrgKeys.load(keys / f"org-{org}.json")
    announced = {e: k.public() for e, k in worker.secrets.epochs.items()}
    topic = TOPICS.alerts(org)
    items = []
    for t, _k, v, _p in out:
        if t == topic:
            items.extend(
                decode_batch(open_result(org_keys.alerts, v, topic=topic, keys=announced)).items
            )
    return items


def _panes(worker: VaultWorker, out: list[Any]) -> list[Any]:
    return [
        agg
        for t, k, v, _p in out
        if t == TOPICS.partials
        for agg in open_partials(worker.state_keys, k, v, plan=PLAN).panes
    ]


def _placeholder(i: int, case: str) -> Event:
    attrs = {"pv:reason": "ACTIVITY_DENIED", "pv:position": i + 1}
    ts = T0 + timedelta(minutes=i)
    return Event.create(
        case, PLACEHOLDER_ACTIVITY, ts, org="lab", attributes=attrs, kind=EventKind.PLACEHOLDER
    )


def test_a_placeholder_only_case_is_not_counted_twice_after_a_restart(tmp_path: Path) -> None:
    init_keyring(tmp_path, ["lab"])
    worker = _worker(tmp_path)
    agent = Agent(tmp_path, "lab", worker.secrets)
    first = [agent.event(_placeholder(0, "hidden")), agent.event(_placeholder(1, "hidden"))]
    changelog: Log = []
    _commit(worker, changelog, first)
    assert worker.stats.applied == 2
    assert worker.codec.case_key("hidden") in dict(changelog)
    # a restart from that commit: the records are read again, then the stream goes on
    more = agent.event(Event.create("seen", "A", T0 + timedelta(minutes=90), org="lab"))
    end = agent.close()
    restarted = _worker(tmp_path)
    _restore(restarted, changelog)
    out = _commit(restarted, list(changelog), [*first, more, end])
    assert restarted.stats.applied == 1
    assert restarted.stats.redelivered + restarted.stats.rejected["replay"] == 2
    straight = _worker(tmp_path)
    ref = _commit(straight, [], [*first, more, end])
    assert straight.stats.applied == 3
    # (no pane had closed before the restart: the restarted run closes them all)
    assert _panes(restarted, out) == _panes(straight, ref)
    withheld = [
        p.statistic("activity").get((PLACEHOLDER_ACTIVITY,), 0) for p in _panes(straight, ref)
    ]
    assert withheld[0] == 1  # the case's placeholders counted once: not again after the restart


def test_a_placeholder_only_case_ends_at_its_marker_in_memory_and_in_the_changelog(
    tmp_path: Path,
) -> None:
    init_keyring(tmp_path, ["lab"])
    worker = _worker(tmp_path)
    agent = Agent(tmp_path, "lab", worker.secrets)
    values = [
        agent.event(_placeholder(0, "hidden")),
        agent.event(Event.case_end("hidden", T0 + timedelta(minutes=1), org="lab")),
        agent.close(),
    ]
    changelog: Log = []
    _commit(worker, changelog, values)
    engine = worker.engines[0]
    assert worker.stats.applied == 2 and engine.active_cases() == 0
    assert engine.accumulator is not None and engine.accumulator.counters().active_cases == 0
    back = _worker(tmp_path)
    _restore(back, changelog)
    assert back.engines[0].vault.is_completed("hidden")


def test_an_event_after_its_case_completed_keeps_it_completed_across_a_restart(
    tmp_path: Path,
) -> None:
    init_keyring(tmp_path, ["lab"])
    worker = _worker(tmp_path)
    first = Agent(tmp_path, "lab", worker.secrets, generation=1)
    changelog: Log = []
    _commit(
        worker,
        changelog,
        [
            first.event(Event.create("c", "B", T0, org="lab")),
            first.event(Event.case_end("c", T0 + timedelta(minutes=1), org="lab")),
        ],
    )
    second = Agent(tmp_path, "lab", worker.secrets, generation=2, chain=first.chain)  # later
    second.pos = first.pos
    late = second.event(Event.create("c", "B", T0 + timedelta(minutes=2), org="lab"))
    out = _commit(worker, changelog, [late, second.close()], start=2)
    found = _findings(worker, tmp_path, out)
    kinds = [f.kind for f in found if isinstance(f, DeviationFinding)]
    assert kinds == ["after_completion"]
    back = _worker(tmp_path)
    _restore(back, changelog)
    assert back.engines[0].vault.is_completed("c")


def test_a_revoked_case_leaves_the_vault_and_the_ack_reaches_its_org(tmp_path: Path) -> None:
    init_keyring(tmp_path, ["lab"])
    lab = OrgKeys.load(tmp_path / "org-lab.json")
    assert lab.signing is not None
    worker = _worker(tmp_path, dp=False)
    agent = Agent(tmp_path, "lab", worker.secrets)

    def ev(i: int, case: str, act: str, resource: str | None = None) -> bytes:
        e = Event.create(case, act, T0 + timedelta(minutes=i), org="lab", resource=resource)
        return agent.event(e)

    good = Revocation.for_case("lab", "victim", policy="p", issued_at=T0)
    by_resource = Revocation.for_resource("lab", "rx", policy="p", issued_at=T0)
    forged = Revocation.for_case("lab", "other", policy="p", issued_at=T0)
    stranger = Revocation.for_case("lab", "never-here", policy="p", issued_at=T0)
    # the first batch's events are merged before the revocations come (a case's revocation
    # applies at the point the merge has reached when it is read)
    first = [ev(0, "victim", "A"), ev(1, "other", "A")]
    values = [
        agent.revoke(good, lab.signing),
        agent.revoke(by_resource, lab.signing),
        agent.revoke(forged, Ed25519PrivateKey.generate()),  # not the registered key
        agent.revoke(stranger, lab.signing),  # a case lab never took part in
        ev(2, "victim", "B"),
        ev(3, "other", "B", resource="rx"),
        ev(4, "other", "C"),
        agent.revoke(good, lab.signing),  # a repeat
        agent.close(),
    ]
    changelog: Log = []
    out = _commit(worker, changelog, first)
    out += _commit(worker, changelog, values, start=len(first))
    stats = worker.stats
    assert stats.rejected["bad_signature"] == 1
    assert stats.revocations == 2 and stats.revoked_events == 2
    assert stats.revocations_refused == 1  # the stranger's (counted, not only answered)
    assert stats.applied == 3  # victim's A (before the revocation), other's A and C
    items = _findings(worker, tmp_path, out)
    acks = [i for i in items if type(i).__name__ == "RevocationFinding"]
    assert [(a.id, a.status) for a in acks] == [
        (good.id, "applied"),
        (by_resource.id, "applied"),
        (stranger.id, "refused"),
        (good.id, "repeated"),
    ]
    assert acks[0].case == "victim" and acks[0].state_dropped is True
    assert acks[2].reason == "not_a_participant"
    cases = {i.case: i for i in items if type(i).__name__ == "CaseFinding"}
    assert set(cases) == {"other"} and cases["other"].own_events == 2  # rx's B was dropped
    assert dict(changelog)[worker.codec.case_key("victim")] is not None  # a sealed deletion
    restored = _worker(tmp_path, dp=False)
    _restore(restored, changelog)
    revs = restored.engines[0].revocations
    assert good.id in revs and by_resource.id in revs
    assert revs.covers(Event.create("victim", "C", T0))


def test_an_older_sealed_value_reproduced_is_set_aside_and_a_hidden_one_refused(
    tmp_path: Path,
) -> None:
    init_keyring(tmp_path, ["lab"])
    worker = _worker(tmp_path)
    agent = Agent(tmp_path, "lab", worker.secrets)
    changelog: Log = []
    _commit(worker, changelog, [agent.event(Event.create("c", "A", T0, org="lab"))])
    old = list(changelog)
    _commit(worker, changelog, [agent.event(Event.create("c", "B", T0, org="lab"))], start=1)
    key = worker.codec.case_key("c")
    meta = worker.codec.meta_key(0)
    # older sealed values re-produced after the newer ones: harmless, counted
    back = _worker(tmp_path)
    _restore(back, [*changelog, (key, dict(old)[key]), (meta, dict(old)[meta])])
    assert back.stats.stale_state == 2 and back.stats.rollbacks == 0
    assert back.engines[0].vault.snapshot_case("c").events == 2  # A and B: the newest state
    # the newest values hidden (the broker serves only the older ones): refused
    newest = changelog[len(old) :]
    for hidden in ((key, meta), (key,), (meta,)):
        served = old + [r for r in newest if r[0] not in hidden]
        refusing = _worker(tmp_path)
        with pytest.raises(RollbackError, match=r"hidden or (was|were) removed"):
            _restore(refusing, served)
        assert refusing.stats.rollbacks == 1
    _restore(_worker(tmp_path), changelog)  # the real one restores


def test_a_transaction_shown_committed_in_the_changelog_alone_is_set_aside(
    tmp_path: Path,
) -> None:
    init_keyring(tmp_path, ["lab"])
    worker = _worker(tmp_path)
    agent = Agent(tmp_path, "lab", worker.secrets)
    committed: Log = []
    _commit(worker, committed, [agent.event(Event.create("c", "A", T0, org="lab"))])
    # the next transaction aborted; the broker flips the changelog's abort marker only
    aborted: Log = []
    _commit(worker, aborted, [agent.event(Event.create("c", "B", T0, org="lab"))], start=1)
    resurrected = committed + [(k, v) for k, v in aborted if k != COMMIT_KEY]
    back = _worker(tmp_path)
    _restore(back, resurrected)
    assert back.stats.stale_state == 2  # the case record and the metadata of version 2
    assert back.engines[0].vault.snapshot_case("c").events == 1  # only what committed
    # ... or hides the changelog's newest records while the commit record shows them
    hidden = committed + [(k, v) for k, v in aborted if k == COMMIT_KEY]
    with pytest.raises(RollbackError, match="hidden or were removed"):
        _restore(_worker(tmp_path), hidden)
    # no state at all, where a commit record says there was some
    with pytest.raises(RollbackError, match="no metadata"):
        _restore(_worker(tmp_path), [(k, v) for k, v in committed if k == COMMIT_KEY])
    # state without any commit record
    with pytest.raises(RollbackError, match="without a commit record"):
        _restore(_worker(tmp_path), [(k, v) for k, v in committed if k != COMMIT_KEY])


def _feed(worker: VaultWorker, records: list[tuple[int, bytes]], org: str = "lab") -> Any:
    """Process records at the given offsets (as the broker serves them) in one batch."""
    tp = TopicPartition(TOPICS.events(org), 0)
    return worker.process({tp: [Rec(o, v) for o, v in records]})


def test_a_missing_record_stalls_its_stream_until_it_is_read_again(tmp_path: Path) -> None:
    init_keyring(tmp_path, ["lab"])
    worker = _worker(tmp_path, dp=False)
    agent = Agent(tmp_path, "lab", worker.secrets)
    a, b, c = (
        agent.event(Event.create("c", x, T0 + timedelta(minutes=i), org="lab"))
        for i, x in enumerate("ABC")
    )
    end = agent.close()
    # the broker hides B (offset 1): what comes after it does not continue lab's chain
    effects = _feed(worker, [(0, a), (2, c), (3, end)])
    assert worker.stats.rejected["gap"] == 2
    assert worker.stats.applied == 1  # A only: nothing after the gap is taken
    notices = [f for f in effects[0].findings.get("lab", []) if type(f).__name__ == "NoticeFinding"]
    assert [n.kind for n in notices] == ["source_gap"]
    assert worker.due_rereads(0.0) == []  # (after a back-off)
    assert worker.due_rereads(time.monotonic() + 1) == [(0, "lab", 1)]  # from after A
    effects = _feed(worker, [(1, b), (2, c), (3, end)])  # served this time
    cases = [f for f in effects[0].findings["lab"] if type(f).__name__ == "CaseFinding"]
    assert [(f.case, f.rules) for f in cases] == [("c", {"has_b": "Satisfied"})]
    assert worker.stats.applied == 3 and worker.stats.rejected["replay"] == 0


def test_once_a_stream_moved_to_a_newer_epoch_the_older_one_is_refused(tmp_path: Path) -> None:
    init_keyring(tmp_path, ["lab"])
    old = VaultSecrets.load(tmp_path / "vault.json")
    rotated = old.rotate(keep=1)  # epoch 2 current, epoch 1 still accepted
    worker = VaultWorker(
        WorkerSettings("localhost:1", 1, TOPICS, source_timeout=None),
        rotated,
        Registry.load(tmp_path / "registry.json"),
        lambda: Vault(compliance=Compliance([DeclareRule("has_b", "existence", "B")])),
        clock=lambda: NOW_NS,
    )
    worker.restore_partition(0, [], [])
    first = Agent(tmp_path, "lab", old, generation=1)  # epoch 1
    second = Agent(tmp_path, "lab", rotated, generation=2, chain=first.chain)  # epoch 2
    a = first.event(Event.create("c", "A", T0, org="lab"))
    b = second.event(Event.create("c", "B", T0 + timedelta(minutes=1), org="lab"))
    # someone holding epoch 1's key seals a frame that continues the chain, in a new session
    leaked = Agent(tmp_path, "lab", old, generation=3, chain=second.chain)
    forged = leaked.event(Event.create("c", "X", T0 + timedelta(minutes=2), org="lab"))
    _feed(worker, [(0, a), (1, b), (2, forged)])
    assert worker.stats.rejected["old_epoch"] == 1
    assert worker.engines[0].lane_epoch("lab") == 2


class _Consumer:
    """What ``_mark_lagging`` asks the consumer: its fetch position and the last stable offset
    of each partition (and, for the code before it, the high watermark)."""

    def __init__(self, position: int, lso: int) -> None:
        self.pos, self.lso = position, lso

    async def position(self, tp: TopicPartition) -> int:
        return self.pos

    def last_stable_offset(self, tp: TopicPartition) -> int:
        return self.lso

    def highwater(self, tp: TopicPartition) -> int:
        return self.lso


async def _lagging(worker: VaultWorker) -> None:
    import inspect

    done = worker._mark_lagging()
    if inspect.isawaitable(done):
        await done


@pytest.mark.parametrize(
    ("position", "lso", "batches", "silent"),
    [
        (2, 2, [1] * 8, True),  # lab's event (offset 0) and its commit marker (1) read
        (1, 5, [1] * 8, False),  # committed records not fetched yet: catching up
        (1, 5, [6], False),  # ... also when the worker's next batch came late
    ],
)
async def test_an_org_whose_partition_ends_in_a_commit_marker_can_go_silent(
    tmp_path: Path, position: int, lso: int, batches: list[int], silent: bool
) -> None:
    """A transactional agent's partition always ends with a marker no consumer receives as a
    record: only what the consumer could still fetch keeps an organization from going silent."""
    init_keyring(tmp_path, ["lab", "ward"])
    now = [NOW_NS]
    worker = VaultWorker(
        WorkerSettings("localhost:1", 1, TOPICS, source_timeout=5.0),
        VaultSecrets.load(tmp_path / "vault.json"),
        Registry.load(tmp_path / "registry.json"),
        lambda: Vault(compliance=Compliance([DeclareRule("has_b", "existence", "B")])),
        clock=lambda: now[0],
    )
    worker.restore_partition(0, [], [])
    worker._consumer = _Consumer(position, lso)  # type: ignore[assignment]
    agent = Agent(tmp_path, "lab", worker.secrets)
    tp = TopicPartition(TOPICS.events("lab"), 0)
    worker.process({tp: [Rec(0, agent.event(Event.create("c", "A", T0, org="lab")))]})
    notices = []
    for seconds in batches:  # past the source timeout
        now[0] += seconds * 10**9
        await _lagging(worker)
        effects = worker.process({})
        found = effects[0].findings.get("ward", []) if effects else []
        notices += [(f.kind, f.org) for f in found if type(f).__name__ == "NoticeFinding"]
    assert notices == ([("source_silent", "lab")] if silent else [])
