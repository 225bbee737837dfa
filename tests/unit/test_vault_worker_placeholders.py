"""A case the vault keeps no state for (only placeholders so far) still has its replay guard in
the changelog: placeholders count in the DP panes, so after a restart the records read again
must be recognised as applied, not counted twice (in-process, no broker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from aiokafka import TopicPartition

from procvault.monitor.compliance import Compliance, DeclareRule
from procvault.monitor.event import PLACEHOLDER_ACTIVITY, Event, EventKind
from procvault.monitor.privacy import (
    Budget,
    KnownKeys,
    PaneAccumulator,
    PaneSettings,
    PrivacySettings,
)
from procvault.monitor.vault import Vault
from procvault.streams import codec
from procvault.streams.envelope import ProducerSession
from procvault.streams.frames import EVENT, Topics, encode_frame, encode_heartbeat
from procvault.streams.secrets import Registry, VaultSecrets, init_keyring
from procvault.streams.vault_worker import VaultWorker, WorkerSettings

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
TOPICS = Topics("t.")
PANE = timedelta(hours=1)
DP = PrivacySettings(
    budget=Budget(1.0, window=4, delta=1e-6), panes=PaneSettings(PANE), windows=(2 * PANE,)
)
KNOWN = KnownKeys.build(("A", "B"))


class Rec(NamedTuple):
    offset: int
    value: bytes
    key: bytes | None = None


def _worker(keys: Path) -> VaultWorker:
    worker = VaultWorker(
        WorkerSettings("localhost:1", 1, TOPICS, source_timeout=None),
        VaultSecrets.load(keys / "vault.json"),
        Registry.load(keys / "registry.json"),
        lambda: Vault(compliance=Compliance([DeclareRule("has_b", "existence", "B")])),
        make_accumulator=lambda state: PaneAccumulator(DP, KNOWN, state),
    )
    worker.shards[0] = worker._new_shard(0)
    return worker


def _withheld(partials: list[Any]) -> int:
    return sum(p.aggregate.statistic("activity").get((PLACEHOLDER_ACTIVITY,), 0) for p in partials)


def test_a_placeholder_only_case_is_not_counted_twice_after_a_restart(tmp_path: Path) -> None:
    init_keyring(tmp_path, ["lab"])
    worker = _worker(tmp_path)
    session = ProducerSession(worker.secrets.current.public(), org="lab", producer="a")
    topic = TOPICS.events("lab")

    def seal(order: int, ev: Event) -> bytes:
        return session.seal(encode_frame(EVENT, order, 0, codec.encode(ev)), topic=topic)

    def placeholder(i: int, case: str) -> Event:
        attrs = {"pv:reason": "ACTIVITY_DENIED", "pv:position": i + 1}
        ts = T0 + timedelta(minutes=i)
        return Event.create(
            case, PLACEHOLDER_ACTIVITY, ts, org="lab", attributes=attrs, kind=EventKind.PLACEHOLDER
        )

    first = [seal(0, placeholder(0, "hidden")), seal(1, placeholder(1, "hidden"))]
    tp = TopicPartition(topic, 0)
    worker.process({tp: [Rec(i, v) for i, v in enumerate(first)]})
    assert worker.stats.applied == 2
    changelog = {k: v for _, k, v in worker.state_records()}
    assert worker._case_key("hidden") in changelog  # the guard of a case without vault state

    # a restart from that commit: the two records are read again (offsets are not committed
    # past the merge buffer), then the stream goes on and closes the pane
    restarted = _worker(tmp_path)
    restarted.shards[0] = restarted._rebuild(0, changelog)
    more = Event.create("seen", "A", T0 + timedelta(minutes=90), org="lab")
    again = [
        *first,
        seal(2, more),
        session.seal(encode_heartbeat(9, 0, 1 << 60, closed=True), topic=topic),
    ]
    out = restarted.process({tp: [Rec(i, v) for i, v in enumerate(again)]})
    stats = restarted.stats
    assert stats.applied == 1 and stats.redelivered + stats.rejected["replay"] == 2

    # the same as a run without the restart
    straight = _worker(tmp_path)
    ref = straight.process({tp: [Rec(i, v) for i, v in enumerate(again)]})
    assert straight.stats.applied == 3
    assert [p.aggregate for p in out.partials] == [p.aggregate for p in ref.partials]
    assert _withheld(ref.partials) >= 1


def test_a_placeholder_only_case_ends_at_its_marker_in_memory_and_in_the_changelog(
    tmp_path: Path,
) -> None:
    init_keyring(tmp_path, ["lab"])
    worker = _worker(tmp_path)
    session = ProducerSession(worker.secrets.current.public(), org="lab", producer="a")
    topic = TOPICS.events("lab")
    attrs = {"pv:reason": "ACTIVITY_DENIED", "pv:position": 1}
    events = [
        Event.create(
            "hidden",
            PLACEHOLDER_ACTIVITY,
            T0,
            org="lab",
            attributes=attrs,
            kind=EventKind.PLACEHOLDER,
        ),
        Event.case_end("hidden", T0 + timedelta(minutes=1), org="lab"),
    ]
    values = [
        *(
            session.seal(encode_frame(EVENT, i, 0, codec.encode(e)), topic=topic)
            for i, e in enumerate(events)
        ),
        session.seal(encode_heartbeat(9, 0, 1 << 60, closed=True), topic=topic),
    ]
    worker.process({TopicPartition(topic, 0): [Rec(i, v) for i, v in enumerate(values)]})
    shard = worker.shards[0]
    assert worker.stats.applied == 2
    assert shard.acc is not None and shard.acc.counters().active_cases == 0
    changelog = {k: v for _, k, v in worker.state_records()}
    assert "hidden" not in shard.cases  # nothing kept in memory once written
    key = worker._case_key("hidden")
    case_id, state, seqs, _, done, _ = worker._unseal(key, changelog[key])
    assert (case_id, state, done) == ("hidden", None, True) and seqs
    back = _worker(tmp_path)._rebuild(0, changelog)
    assert back.vault.state().remembered_completed == 1  # as in the uninterrupted worker
    assert shard.vault.state().remembered_completed == 1


def test_an_event_after_its_case_completed_keeps_it_completed_across_a_restart(
    tmp_path: Path,
) -> None:
    init_keyring(tmp_path, ["lab"])
    worker = _worker(tmp_path)
    tp = TopicPartition(TOPICS.events("lab"), 0)
    first = ProducerSession(worker.secrets.current.public(), org="lab", producer="a")
    second = ProducerSession(worker.secrets.current.public(), org="lab", producer="a")

    def seal(session: ProducerSession, order: int, ev: Event) -> bytes:
        frame = encode_frame(EVENT, order, 0, codec.encode(ev))
        return session.seal(frame, topic=tp.topic)

    done = [
        seal(first, 0, Event.create("c", "B", T0, org="lab")),
        seal(first, 1, Event.case_end("c", T0 + timedelta(minutes=1), org="lab")),
    ]
    worker.process({tp: [Rec(i, v) for i, v in enumerate(done)]})
    worker.state_records()
    # a later agent session sends an event of the case: after its completion
    late = seal(second, 2, Event.create("c", "B", T0 + timedelta(minutes=2), org="lab"))
    out = worker.process({tp: [Rec(2, late)]})
    assert [i["kind"] for i in out.per_org["lab"] if i["type"] == "deviation"] == [
        "after_completion"
    ]
    changelog = {k: v for _, k, v in worker.state_records()}
    key = worker._case_key("c")
    assert worker._unseal(key, changelog[key])[4] is True  # still ended
    back = _worker(tmp_path)._rebuild(0, changelog)
    assert back.vault.is_completed("c")
