"""bench/pipeline.py's feeder: a keyring and pre-produced agent topics, in one tree's format.

Run under the import folder of the tree whose vault is measured (this tree's or the base
commit's), so that the keyring, the envelopes and the agents' frames are that tree's own:

    python bench/_pipeline_feed.py BOOTSTRAP KEYS_DIR LOG SPLIT_MAP REPEAT PARTITIONS ORGS

It makes the keyring (``init_keyring``, once: ``KEYS_DIR`` must not exist yet), reads ``LOG``
x ``REPEAT`` with end-of-case markers, splits it with ``SPLIT_MAP`` among ``ORGS``
(comma-separated) and prints ``{"events": N}`` (every organization's share, markers included)
as one JSON line. Then, for each topic prefix it reads on stdin (one per line), the
organizations' agents (``procvault.organization.agent.Agent``, keys from the keyring: no
attestation round) publish their whole shares on ``PARTITIONS`` partitions under that prefix,
one organization after the other, and it prints ``{"prefix", "events", "seconds"}``. It exits
at the end of its input. An agent whose new topic the broker does not list yet (a
``KafkaSetupError`` at its start, seen on a loaded machine) is started again, at most twice:
it resumes after what its predecessor committed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PM4PY_SHOW_PROGRESS_BAR", "false")


def shares(log: Path, split: Path, repeat: int, orgs: list[str]) -> dict[str, list[Any]]:
    """Each organization's share of ``log`` x ``repeat`` (end markers included), in the order
    its agent sends it."""
    from procvault.generators.split import ActivityMapping, assign
    from procvault.generators.xes import read_xes
    from procvault.organization.agent import ordered_share

    events = list(
        assign(
            read_xes(log).replay(end_markers=True, repeat=repeat), ActivityMapping.from_file(split)
        )
    )
    return {org: list(ordered_share(events, org)) for org in orgs}


async def produce(
    bootstrap: str, keys: Path, prefix: str, partitions: int, parts: dict[str, list[Any]]
) -> None:
    from procvault.organization.agent import Agent, AgentSettings
    from procvault.streams.frames import Topics
    from procvault.streams.secrets import OrgKeys, VaultSecrets

    vault_pub = VaultSecrets.load(keys / "vault.json").current.public()
    for org, share in parts.items():
        for attempt in range(3):
            agent = Agent(
                AgentSettings(bootstrap, partitions, Topics(prefix)),
                OrgKeys.load(keys / f"org-{org}.json"),
                vault_pub,
            )
            try:
                await agent.run(share)
                break
            except Exception as exc:
                # a topic the agent just created may not be in the broker's metadata yet on a
                # loaded machine (KafkaSetupError at start-up); a new agent resumes after what
                # its predecessor committed, as a restarted agent does
                if type(exc).__name__ != "KafkaSetupError" or attempt == 2:
                    raise
                print(f"{org}: {exc}; again", file=sys.stderr, flush=True)
                await asyncio.sleep(1.0)


def main(argv: list[str]) -> None:
    bootstrap, keys_dir, log, split, repeat, partitions, org_list = argv
    from procvault.streams.secrets import init_keyring

    keys = Path(keys_dir)
    orgs = org_list.split(",")
    init_keyring(keys, orgs)
    parts = shares(Path(log), Path(split), int(repeat), orgs)
    print(json.dumps({"events": sum(len(s) for s in parts.values())}), flush=True)
    for line in sys.stdin:
        prefix = line.strip()
        if not prefix:
            continue
        t0 = time.perf_counter()
        asyncio.run(produce(bootstrap, keys, prefix, int(partitions), parts))
        out = {
            "prefix": prefix,
            "events": sum(len(s) for s in parts.values()),
            "seconds": round(time.perf_counter() - t0, 2),
        }
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
