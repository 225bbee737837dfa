"""The faust-streaming baseline of bench/pipeline.py: the vault's per-event work on faust.

A faust agent per organization's event topic does, per record, what the vault worker's hot
path does before its engine runs: open the envelope, decode the frame and the event, and
write the case's state (here: its replay guard, the last sequence applied) to a table with a
changelog. Run by bench/pipeline.py as

    python bench/faust_baseline.py BOOTSTRAP PREFIX KEYS_DIR ORGS PARTITIONS TOTAL OUT_JSON DATA

It stops itself once TOTAL events were handled and writes ``{"events", "seconds"}`` (first
to last event) to OUT_JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> None:
    import faust

    from procvault.streams import codec
    from procvault.streams.envelope import SessionOpener
    from procvault.streams.frames import EVENT, Topics, decode_frame
    from procvault.streams.secrets import Registry, VaultSecrets

    bootstrap, prefix, keys_dir, orgs_s, parts_s, total_s, out, data = argv
    orgs, partitions, total = orgs_s.split(","), int(parts_s), int(total_s)
    secrets = VaultSecrets.load(Path(keys_dir) / "vault.json")
    registry = Registry.load(Path(keys_dir) / "registry.json")
    senders = {org: registry.sender[org] for org in orgs}
    opener = SessionOpener(dict(secrets.epochs), senders=senders)
    topics = Topics(prefix)
    app = faust.App(
        prefix + "faust-baseline",
        broker="kafka://" + bootstrap,
        store="memory://",
        datadir=data,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=partitions,
        producer_linger=0.05,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        worker_redirect_stdouts=False,
    )
    table = app.Table(
        "guards",
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        use_partitioner=True,
    )
    seen = {"n": 0, "first": 0.0, "last": 0.0}

    def done() -> None:
        Path(out).write_text(
            json.dumps({"events": seen["n"], "seconds": seen["last"] - seen["first"]})
        )
        os._exit(0)

    def make_agent(org: str) -> None:
        topic = app.topic(topics.events(org), partitions=partitions, value_serializer="raw")
        name = topics.events(org)

        async def handle(stream: Any) -> None:
            async for event in stream.events():
                header, plain = opener.open(
                    event.value, topic=name, partition=event.message.partition
                )
                kind, _order, _sent, _prev, body = decode_frame(plain)
                if kind != EVENT:
                    continue
                codec.decode(body)
                table[event.key] = header.sequence.to_bytes(8, "big")
                n = seen["n"] = seen["n"] + 1
                now = time.perf_counter()
                if n == 1:
                    seen["first"] = now
                seen["last"] = now
                if n >= total:
                    await asyncio.sleep(0.5)  # let the table's changelog writes go out
                    done()

        app.agent(topic, name=f"baseline-{org}")(handle)

    for org in orgs:
        make_agent(org)
    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    sys.argv = [sys.argv[0], "worker"]
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:])
