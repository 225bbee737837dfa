"""The agent's review path against a recording stand-in for the Kafka producer: head of line,
heartbeats that never pass a held item, and a restart that keeps decisions.

``Agent.run`` connects to Kafka; the same path on the real broker is in
``tests/integration/test_agent_review_status.py``. Here the publishing coroutine is driven
directly with a producer that records what each committed transaction held.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from procvault.generators.pacing import AsFastAsPossible
from procvault.monitor.event import Event
from procvault.organization.agent import Agent, AgentSettings
from procvault.organization.progress import open_progress
from procvault.organization.review import ReviewQueue
from procvault.streams import codec
from procvault.streams.envelope import SessionOpener
from procvault.streams.frames import EVENT, decode_frame, decode_heartbeat
from procvault.streams.secrets import OrgKeys, Registry, VaultSecrets, init_keyring

SLOTS = 256  # merge-key orders per source item (the agent's _SLOTS)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
ORDERS = (0, 1, 3, 4, 6, 7)  # the organization's share of a shared source


class RecordingProducer:
    """begin/send/commit like aiokafka's transactional producer; keeps committed records."""

    def __init__(self) -> None:
        self.open: list[tuple[str, bytes, bytes | None, int | None]] | None = None
        self.committed: list[list[tuple[str, bytes, bytes | None, int | None]]] = []

    async def begin_transaction(self) -> None:
        assert self.open is None
        self.open = []

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> None:
        assert self.open is not None
        self.open.append((topic, value, key, partition))

    async def commit_transaction(self) -> None:
        assert self.open is not None
        self.committed.append(self.open)
        self.open = None
        await asyncio.sleep(0)


def _source() -> list[tuple[int, Event]]:
    return [
        (o, Event.create(f"c{o % 2}", "A", T0 + timedelta(seconds=o), org="shop")) for o in ORDERS
    ]


def _key(order: int) -> tuple[int, int]:
    """The merge key of the first output of source item ``order``."""
    return (int((T0 + timedelta(seconds=order)).timestamp()) * 1_000_000, order * SLOTS)


class Reader:
    def __init__(self, keys: Path) -> None:
        senders = Registry.load(keys / "registry.json").sender
        self.opener = SessionOpener(VaultSecrets.load(keys / "vault.json").epochs, senders)
        self.progress_key = OrgKeys.load(keys / "org-shop.json").progress_key

    def read(self, producer: RecordingProducer) -> tuple[list[int], list[Any], int]:
        """Committed (source positions of the events, heartbeat (key, closed), last progress
        position)."""
        events, beats, position = [], [], 0
        for txn in producer.committed:
            for topic, value, key, partition in txn:
                if topic.endswith("agent.progress"):
                    position = open_progress(self.progress_key, value).position
                    continue
                assert key is None and partition is not None  # no record key: placement only
                _, plain = self.opener.open(value, topic=topic, partition=partition)
                kind, order, _, _prev, body = decode_frame(plain)
                if kind == EVENT:
                    events.append((order // SLOTS, codec.decode(body)))
                else:
                    wm, closed = decode_heartbeat(body)
                    beats.append(((wm, order), closed))
        return [o for o, _ in events], beats, position


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_head_of_line_heartbeats_and_restart(tmp_path: Path) -> None:
    init_keyring(tmp_path / "keys", ["shop"])
    keys = OrgKeys.load(tmp_path / "keys" / "org-shop.json")
    vault = VaultSecrets.load(tmp_path / "keys" / "vault.json").current.public()
    settings = AgentSettings("127.0.0.1:1", 2, batch_events=2)
    reader = Reader(tmp_path / "keys")
    queue = ReviewQueue.create(tmp_path / "review", org="shop", producer="agent-1")
    first = RecordingProducer()
    agent = Agent(settings, keys, vault, review=queue)
    task = asyncio.create_task(agent._publish_reviewed(first, _source(), AsFastAsPossible(), 0))
    try:
        await _until(lambda: sum(queue.counts().values()) == len(ORDERS))
        await asyncio.sleep(0.3)
        events, beats, position = reader.read(first)
        assert events == [] and position == 0 and agent.waiting_for == 0
        assert beats and all(key < _key(0) for key, _ in beats)  # never past the held item

        queue.release([0, 1], actor="alice")
        queue.drop([3], actor="alice")
        await _until(lambda: reader.read(first)[2] == 3)
        await asyncio.sleep(0.3)
        events, beats, position = reader.read(first)
        assert events == [0, 1, 3] and agent.waiting_for == 4
        assert all(key < _key(4) for key, _ in beats) and not any(c for _, c in beats)
        assert [it.published for it in queue.items(state=None)] == [True] * 3 + [False] * 3
    finally:
        task.cancel()  # the agent dies here
        await asyncio.gather(task, return_exceptions=True)
        queue.close()

    # restarted at the committed position: decisions kept, the rest released, nothing twice
    queue = ReviewQueue.create(tmp_path / "review", org="shop", producer="agent-1")
    try:
        queue.release(everything=True, actor="bob")
        second = RecordingProducer()
        agent = Agent(settings, keys, vault, review=queue)
        await asyncio.wait_for(
            agent._publish_reviewed(second, _source(), AsFastAsPossible(), position), 10
        )
        events, beats, final = reader.read(second)
        assert events == [4, 6, 7] and final == len(ORDERS)
        assert beats[-1][1] is True  # the stream is closed
        assert agent.stats.read == 3 and agent.stats.sent == 3
        assert queue.counts() == {"held": 0, "released": 5, "dropped": 1}
        assert all(it.published for it in queue.items(state=None))
    finally:
        queue.close()
    ph = [ev for o, ev in _decoded(reader, first) if o == 3]
    assert ph[0].activity == "pv:withheld" and ph[0].attr("pv:reason") == "REVIEW_DROPPED"


def partitioned_frames(
    reader: Reader, producer: RecordingProducer
) -> list[tuple[int, int, int, bytes]]:
    """``(partition, kind, order, body)`` of every committed event and heartbeat frame, in
    order."""
    out = []
    for txn in producer.committed:
        for topic, value, _key, partition in txn:
            if topic.endswith("agent.progress"):
                continue
            _, plain = reader.opener.open(value, topic=topic, partition=partition)
            kind, order, _, _prev, body = decode_frame(plain)
            out.append((partition, kind, order, body))
    return out


def frames(reader: Reader, producer: RecordingProducer) -> list[tuple[int, int, bytes]]:
    """``(kind, order, body)`` of every committed event and heartbeat frame, in order."""
    return [(kind, order, body) for _p, kind, order, body in partitioned_frames(reader, producer)]


def _decoded(reader: Reader, producer: RecordingProducer) -> list[tuple[int, Event]]:
    return [(o // SLOTS, codec.decode(b)) for k, o, b in frames(reader, producer) if k == EVENT]
