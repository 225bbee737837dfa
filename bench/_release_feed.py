"""bench/release.py's feeder: a keyring and the vault's pane partials, in one tree's format.

Run under the import folder of the tree whose release stage is measured (this tree's or the
base commit's), so that the keyring and the sealed partials are that tree's own:

    python bench/_release_feed.py BOOTSTRAP PREFIX KEYS_DIR AGGREGATES POLICY MODEL

``AGGREGATES`` (written by bench/release.py) holds each vault partition's exact pane
aggregates of the log (msgpack). Every partition reports each pane it counted anything in, its
first report starting at the log's first pane and its last ending at the log's last pane, as
the vault workers do while they catch up; records go in pane order over the partitions. Prints
``{"records", "bytes", "first", "last"}`` as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

ORGS = ["emergency", "lab", "ward"]


def _reports(parts: list[list[Any]], first: int, last: int) -> list[tuple[int, int, int, Any]]:
    """``(through, partition, first, aggregates)`` per report, in write order."""
    out = []
    for p, aggs in enumerate(parts):
        prev = first - 1
        for agg in aggs:
            out.append((agg.index, p, prev + 1, (agg,)))
            prev = agg.index
        if prev < last:
            out.append((last, p, prev + 1, ()))
    out.sort(key=lambda r: (r[0], r[1]))
    return out


def main(argv: list[str]) -> None:
    bootstrap, prefix, keys_dir, agg_path, policy, model = argv
    from procvault.monitor.privacy.panes import PaneAggregate
    from procvault.streams import frames
    from procvault.streams.secrets import VaultSecrets, init_keyring

    keys = Path(keys_dir)
    init_keyring(keys, ORGS)
    secrets = VaultSecrets.load(keys / "vault.json")
    raw = msgspec.msgpack.decode(Path(agg_path).read_bytes())
    parts = [msgspec.convert(p, list[PaneAggregate]) for p in raw["partitions"]]
    first, last = raw["first"], raw["last"]
    n = len(parts)
    records: list[tuple[bytes, bytes]] = []
    if hasattr(frames, "seal_partials"):  # this tree: PanePartials over pane ranges
        from procvault.config.dp import load_dp_policy
        from procvault.config.engines import load_engines
        from procvault.monitor.privacy.combiner import PanePartials
        from procvault.monitor.privacy.plan import ReleasePlan
        from procvault.streams.changelog import StateKeys

        plan = ReleasePlan.build(load_dp_policy(policy), load_engines(model, None).known())
        fp = plan.fingerprint()
        sk = StateKeys(secrets)
        for through, p, start, aggs in _reports(parts, first, last):
            report = PanePartials(p, n, fp, start, through, aggs, opens=start == first)
            records.append(frames.seal_partials(sk, report))
    else:  # the faust stage (3c2a35b): one Partial per pane with anything counted
        empty = msgspec.convert(raw["last_empty"], PaneAggregate)
        for _through, p, _start, aggs in _reports(parts, first, last):
            # no aggregate: the partition's frontier reaches the last pane, an empty report
            agg = aggs[0] if aggs else empty
            partial = frames.Partial(p, n, agg)
            records.append(frames.seal_partial(secrets.state_key, partial))
    topics = frames.Topics(prefix)
    asyncio.run(_produce(bootstrap, topics.partials, topics.aggregates, records))
    print(
        json.dumps(
            {
                "records": len(records),
                "bytes": sum(len(v) for _, v in records),
                "first": first,
                "last": last,
            }
        )
    )


async def _produce(
    bootstrap: str, topic: str, aggregates: str, records: list[tuple[bytes, bytes]]
) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1), NewTopic(aggregates, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=1 << 20,
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await producer.flush()
        for fut in futures:
            await fut
    finally:
        await producer.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
