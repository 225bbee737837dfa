"""``procvault revoke``, ``procvault review`` and ``procvault agent-ctl``: the organization
keeps control of what it shares (consent, review before sharing, the agent's state)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from procvault.cli.options import add_option as _add
from procvault.cli.shared import (
    add_attestation_options,
    add_connection_options,
    add_policy_key_option,
    attestation_verifier,
    kafka_address,
)

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``revoke``, ``review`` and ``agent-ctl`` subcommands."""
    p = sub.add_parser(
        "revoke",
        help="take back consent: a case, a resource or a period, signed and sent to the vault",
        description="Signs a revocation with the organization's Ed25519 key (DIR/org-ORG.json) "
        "and publishes it, sealed for the attested vault, in the organization's event topic: "
        "to the case's partition for a case, to every partition for a resource or a period. "
        "The vault verifies it against the registry, drops the matching state, leaves the "
        "matching later events out of every result, pane and window, and acknowledges it in "
        "the organization's results topic. Give the case id and the resource as the agent "
        "reads them; with --policy they are pseudonymised as the policy stage does "
        "(with the agent's keys: the consortium's for case ids, --key-file or "
        "$PROCVAULT_POLICY_KEY for resources). Prints the revocation as JSON.",
    )
    _add(p, "--org", required=True, help="the revoking organization")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--case", metavar="ID", help="revoke this case")
    what.add_argument("--resource", metavar="R", help="revoke what this resource did")
    what.add_argument("--from", dest="time_from", metavar="T", help="revoke a period from T")
    _add(p, "--to", dest="time_to", metavar="T", help="... to T (excluded; ISO 8601)")
    _add(p, "--policy", metavar="FILE", help="the organization's privacy policy (pseudonyms)")
    add_policy_key_option(p)
    _add(p, "--reason", default="", help="for the organization's records (no personal data)")
    add_connection_options(p)
    add_attestation_options(p)
    p.set_defaults(func=cmd_revoke)


def _when(text: str, flag: str) -> datetime:
    from procvault.monitor.errors import ConfigError

    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{flag}: not an ISO 8601 time: {text!r}") from None
    if ts.tzinfo is None:
        raise ConfigError(f"{flag}: give a time zone (e.g. {text}+00:00)")
    return ts.astimezone(UTC)


def build_revocation(args: argparse.Namespace) -> tuple[Any, int | None, Any]:
    """``(revocation, the case's partition or None for every partition, org keys)`` from the
    arguments."""
    from procvault.monitor.errors import ConfigError
    from procvault.streams.frames import placement
    from procvault.streams.revocation import Revocation
    from procvault.streams.secrets import OrgKeys

    org_keys = OrgKeys.load(Path(args.keys) / f"org-{args.org}.json")
    if org_keys.org != args.org:
        raise ConfigError(f"the keys file is for {org_keys.org!r}, not {args.org!r}")
    engine = None
    policy_id = args.org
    if args.policy:
        from procvault.organization.policy import PolicyEngine

        engine = PolicyEngine.for_organization(
            args.policy, args.org, org_keys.pseudonym_key, key_file=args.key_file
        )
        policy_id = engine.policy.id
    now = datetime.now(UTC)
    partition: int | None = None
    if args.case is not None:
        case = engine.pseudonym_case(args.case) if engine is not None else args.case
        rev = Revocation.for_case(
            args.org, case, policy=policy_id, issued_at=now, reason=args.reason
        )
        # the partition the agents place the case on (from the id they send: the vault
        # checks it)
        partition = placement(org_keys.placement_key, case, args.partitions)
    elif args.resource is not None:
        res = engine.pseudonym_resource(args.resource) if engine is not None else args.resource
        rev = Revocation.for_resource(
            args.org, res, policy=policy_id, issued_at=now, reason=args.reason
        )
    else:
        if args.time_to is None:
            raise ConfigError("--from needs --to")
        rev = Revocation.for_period(
            args.org,
            _when(args.time_from, "--from"),
            _when(args.time_to, "--to"),
            policy=policy_id,
            issued_at=now,
            reason=args.reason,
        )
    if args.time_to is not None and args.time_from is None:
        raise ConfigError("--to goes with --from")
    return rev, partition, org_keys


async def publish_revocation(
    bootstrap: str,
    topics: Any,
    partitions: int,
    vault_keys: Any,
    org_keys: Any,
    wire: bytes,
    partition: int | None,
) -> None:
    """Seal ``wire`` in a ``REVOKE`` frame and publish it to ``partition`` (or to every
    partition), without a record key."""
    from aiokafka import AIOKafkaProducer

    from procvault.monitor.errors import KafkaSetupError
    from procvault.streams.envelope import ProducerSession
    from procvault.streams.frames import REVOKE, encode_frame
    from procvault.streams.kafka_io import ensure_topics

    topic = topics.events(org_keys.org)
    await ensure_topics(bootstrap, [topic], partitions=partitions)
    session = ProducerSession(vault_keys, org_keys.sender, org=org_keys.org, producer="revoke")
    frame = encode_frame(REVOKE, 0, time.time_ns() // 1000, wire, prev=(0, 0))  # (unchained)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    try:
        await producer.start()
    except Exception as exc:
        raise KafkaSetupError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    try:
        for p in [partition] if partition is not None else range(partitions):
            record = session.seal(frame, topic=topic, partition=p)
            await producer.send_and_wait(topic, record, partition=p)
    finally:
        await producer.stop()


def cmd_revoke(args: argparse.Namespace) -> int:
    """``procvault revoke``."""
    from procvault.streams.frames import Topics
    from procvault.streams.provisioning import attest_vault
    from procvault.streams.revocation import sign_revocation
    from procvault.streams.secrets import Registry

    rev, partition, org_keys = build_revocation(args)
    wire = sign_revocation(rev, org_keys.signing)
    topics = Topics(args.topic_prefix)
    bootstrap = kafka_address(args.kafka)
    identity = Registry.load(Path(args.keys) / "registry.json").identity
    verifier = attestation_verifier(args, identity, "revoke")

    async def main() -> None:
        vault_keys = await attest_vault(
            bootstrap,
            topics,
            identity,
            verifier,
            timeout=args.attestation_timeout,
            warn=lambda line: print(f"procvault revoke: {line}", file=sys.stderr),
        )
        await publish_revocation(
            bootstrap, topics, args.partitions, vault_keys, org_keys, wire, partition
        )

    asyncio.run(main())
    print(json.dumps(rev.to_dict()))
    print(
        f"procvault revoke: revocation {rev.id} sent "
        f"({'one partition' if partition is not None else f'{args.partitions} partitions'})",
        file=sys.stderr,
    )
    return 0
