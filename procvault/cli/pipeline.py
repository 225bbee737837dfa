"""``procvault keys``, ``procvault vault`` and ``procvault agent``: the confidential pipeline."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from procvault.cli.options import add_option as _add
from procvault.cli.options import add_settings, settings_from
from procvault.cli.options import positive as _positive
from procvault.cli.shared import (
    add_attestation_options,
    add_connection_options,
    add_observability_options,
    add_plan_options,
    add_policy_key_option,
    attestation_verifier,
    kafka_address,
    serve_metrics,
)
from procvault.organization.agent import AgentSettings
from procvault.organization.trust import TrustSettings
from procvault.streams.vault_worker import WorkerSettings

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``keys``, ``vault`` and ``agent`` subcommands."""
    p = sub.add_parser(
        "keys",
        help="create, rotate or upgrade the key material of a local deployment",
        description="'init DIR --orgs a,b,c' writes, in a folder created 0700, vault.json (the "
        "vault's long-term identity, its state master key and the certified keys of epoch 1), "
        "org-<name>.json per organization (alert, signing and sender keys, the consortium "
        "pseudonym key), all 0600, and registry.json (the vault identity's public key, which "
        "every agent and reader pins, and the organizations' public keys). In production each "
        "organization makes its own file and registers only its public keys. 'rotate DIR' "
        "starts a new epoch in vault.json, certified by the identity: vault workers started "
        "afterwards announce it, and keep accepting the --keep newest older epochs (the grace "
        "period) until rotated again; 'rotate DIR --state' adds a new state master key instead "
        "(older key ids stay, to read what they sealed). 'upgrade DIR' brings a keyring written "
        "by an older procvault to the current format (adds the vault identity, sender keys, "
        "certificates; agents must then use the new registry.json) and gives vault.json the "
        "consortium's placement key from the organizations' files (with it, every partition "
        "refuses a case's records that come in another partition than the case's own).",
    )
    p.add_argument("action", choices=("init", "rotate", "upgrade"))
    p.add_argument("dir", help="the keyring folder")
    _add(p, "--orgs", help="comma-separated organization names (init)")
    _add(
        p,
        "--keep",
        type=int,
        default=1,
        help="rotate: older epochs still accepted (0: retire them at once; records sealed "
        "under a retired epoch that the vault has still to read, or to read again after a "
        "restart, are then refused and their organization's stream stalls: keep an epoch until "
        "every agent has moved on)",
    )
    _add(
        p,
        "--state",
        action="store_true",
        help="rotate: add a new state master key (instead of a new epoch)",
    )
    _add(
        p,
        "--if-missing",
        action="store_true",
        help="init: keep a whole keyring for exactly these organizations that is already "
        "there (exit 0; a partial one or one for other organizations is still an error)",
    )
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser(
        "vault",
        help="run a vault worker: decrypt, monitor, commit exactly once",
        description="A consumer-group member over every registered organization's event "
        "topic: opens the encrypted events, merges the organizations' streams in event-time "
        "order, checks them against the model and rules, and commits sealed state, "
        "encrypted results and offsets in one Kafka transaction per batch. Answers agents' "
        "attestation challenges. Several workers with the same --topic-prefix share the "
        "partitions. Prints its counters as JSON on stderr when stopped (SIGTERM, Ctrl-C).",
    )
    add_connection_options(p)
    add_plan_options(p)
    _add(
        p,
        "--results-policy",
        metavar="FILE",
        help="what each organization receives (policies/consortium/*.yaml; default: its own "
        "deviations and the verdicts of the cases it took part in)",
    )
    _add(
        p,
        "--complete-on-final-marking",
        action="store_true",
        help="complete a case when it reaches the final marking",
    )
    _add(
        p,
        "--idle-timeout",
        type=_positive(float),
        metavar="SECONDS",
        help="complete a case after this much event time without events",
    )
    add_settings(p, WorkerSettings)
    _add(
        p,
        "--attestation",
        choices=ATTESTATION_MODES,
        default="simulated",
        help="evidence provider: 'simulated' (the identity's signature: INSECURE, for "
        "development), 'gramine-sgx' (DCAP quotes from Gramine's /dev/attestation), 'tdx' or "
        "'sev-snp' (reports from configfs-tsm, /sys/kernel/config/tsm/report; SEV-SNP reports are "
        "not verified by agents yet)",
    )
    _add(
        p,
        "--attestation-dir",
        metavar="DIR",
        help="the device interface of --attestation (default: /dev/attestation for "
        "gramine-sgx, /sys/kernel/config/tsm/report for tdx and sev-snp)",
    )
    _add(
        p,
        "--attestation-rate",
        type=_positive(float),
        default=10.0,
        help="attestation requests answered per second at most (bursts of twice as many; "
        "repeated nonces are answered once; what is dropped is counted)",
    )
    add_observability_options(p)
    p.set_defaults(func=cmd_vault)

    p = sub.add_parser(
        "agent",
        help="an organization's agent: verify the vault, apply the policy, encrypt, publish",
        description="'run' (the default) verifies the vault's attestation (challenge on "
        "vault.attest, answer on vault.keys), then replays its organization's share of a log, "
        "applies the organization's privacy policy, seals every event for the vault and "
        "publishes it in Kafka transactions with its source position, so a restarted agent "
        "resumes without re-sending or skipping; it needs --kafka, --keys and --from, and "
        "prints its counters as JSON on stderr at the end. With --review DIR its events wait "
        "in a local queue until released with 'procvault review'. 'status' prints a running "
        "agent's state (observing, paused, outside_hours, restricted) from its control "
        "directory and exits 3 if no agent is running there; 'pause' and 'resume' ask it to "
        "stop sending at the end of its current transaction, or to go on.",
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=("run", "status", "pause", "resume"),
        default="run",
        help="run the agent (default), or show, pause or resume a running one",
    )
    add_connection_options(p, required=False)
    _add(p, "--org", required=True, help="this organization (its keys: DIR/org-ORG.json)")
    _add(p, "--from", dest="source", metavar="LOG", help="the .xes(.gz) log (run)")
    _add(p, "--split-map", metavar="FILE", help="activity -> organization mapping of the log")
    _add(p, "--split-hash", metavar="ORGS", help="organizations chosen per case by hash")
    _add(p, "--end-markers", action="store_true", help="send an end-of-case marker per case")
    _add(p, "--policy", metavar="FILE", help="the organization's privacy policy")
    add_policy_key_option(p)
    _add(
        p,
        "--control-dir",
        metavar="DIR",
        help="where the running agent keeps its state and reads pause/resume (default: "
        "$PROCVAULT_HOME/agents/<topic prefix><org>/<producer>, PROCVAULT_HOME defaulting to "
        "~/.cache/procvault)",
    )
    _add(
        p,
        "--review",
        metavar="DIR",
        help="hold the policy stage's outputs in a review queue in DIR (procvault review "
        "list|show|redact|drop|release); the agent publishes in source order and waits at "
        "the first item still held",
    )
    _add(
        p,
        "--hold",
        type=_positive(float),
        metavar="SECONDS",
        help="with --review: release items nobody reviewed this long after they were read",
    )
    _add(
        p,
        "--audit-log",
        metavar="FILE",
        help="with --review: append every review decision (reviewers' and the hold "
        "period's) to this hash-chained audit log (recorded in the queue for procvault review)",
    )
    _add(p, "--json", action="store_true", help="status: print the state as JSON")
    _add(
        p,
        "--wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="pause/resume: how long to wait for the running agent to acknowledge",
    )
    add_settings(p, AgentSettings)
    _add(
        p,
        "--rate",
        type=_positive(float),
        help="fixed rate of the whole log, events per second: each organization's agent "
        "sends its events when their position in the log is due, so agents stay in step",
    )
    _add(
        p,
        "--speed",
        type=_positive(float),
        help="original timing divided by SPEED (from the log's first event)",
    )
    _add(
        p,
        "--start-at",
        type=float,
        metavar="UNIX_TIME",
        help="wall-clock time at which the log's first event is due (give every agent of a "
        "run the same one; default: now, from this agent's first event)",
    )
    _add(p, "--limit", type=_positive(int), help="only the first N events of the log")
    _add(
        p,
        "--repeat",
        type=_positive(int),
        default=1,
        help="replay the log N times (case ids suffixed, time shifted past the previous round)",
    )
    add_attestation_options(p)
    add_settings(p, TrustSettings)
    add_observability_options(p)
    p.set_defaults(func=cmd_agent)


ATTESTATION_MODES = ("simulated", "gramine-sgx", "tdx", "sev-snp")


def _attestation_provider(args: argparse.Namespace, secrets: Any) -> Any:
    """The vault's evidence provider for ``--attestation``, checked once (one quote)."""
    from procvault.streams.attestation import SimulatedProvider, report_data
    from procvault.streams.attestation_hw import (
        DEFAULT_CONFIGFS_TSM,
        DEFAULT_GRAMINE,
        ConfigfsTsmProvider,
        GramineSgxProvider,
    )

    mode = args.attestation
    if mode == "simulated":
        if args.attestation_dir:
            from procvault.monitor.errors import ConfigError

            raise ConfigError("--attestation-dir goes with a hardware --attestation mode")
        return SimulatedProvider(secrets.identity)
    provider: Any
    if mode == "gramine-sgx":
        provider = GramineSgxProvider(Path(args.attestation_dir or DEFAULT_GRAMINE))
    else:
        expect = "tdx_guest" if mode == "tdx" else "sev_guest"
        root = Path(args.attestation_dir or DEFAULT_CONFIGFS_TSM)
        provider = ConfigfsTsmProvider(root, expect=expect)
    provider.evidence(
        report_data(secrets.current.public(), os.urandom(16), secrets.identity_public)
    )
    return provider


def cmd_keys(args: argparse.Namespace) -> int:
    """``procvault keys init|rotate|upgrade``."""
    from procvault.monitor.errors import ConfigError
    from procvault.streams.secrets import VaultSecrets, init_keyring, upgrade_keyring

    if args.action == "upgrade":
        added = upgrade_keyring(Path(args.dir))
        for line in added:
            print(f"procvault keys: {line}", file=sys.stderr)
        print(
            f"procvault keys: {args.dir} is current"
            + (" (give every agent and reader the new registry.json)" if added else ""),
            file=sys.stderr,
        )
        return 0
    if args.action == "rotate":
        if args.keep < 0:
            raise ConfigError("--keep must be >= 0")
        path = Path(args.dir) / "vault.json"
        secrets = VaultSecrets.load(path)
        if args.state:
            rotated = secrets.rotate_state()
            rotated.save(path)
            print(
                f"state key id {rotated.state_key_id} is current; kept for reading: "
                f"{sorted(rotated.state_keys)} (restart the vault workers)",
                file=sys.stderr,
            )
            return 0
        rotated = secrets.rotate(keep=args.keep)
        rotated.save(path)
        print(
            f"epoch {rotated.current_epoch} is current; accepted: {sorted(rotated.epochs)} "
            "(restart the vault workers)",
            file=sys.stderr,
        )
        return 0
    if args.state:
        raise ConfigError("--state goes with rotate")
    if not args.orgs:
        raise ConfigError("keys init needs --orgs")
    orgs = [o.strip() for o in args.orgs.split(",") if o.strip()]
    if args.if_missing:
        from procvault.streams.secrets import keyring_exists

        if keyring_exists(Path(args.dir), orgs):
            print(
                f"keyring for {', '.join(orgs)} in {args.dir} kept (--if-missing)", file=sys.stderr
            )
            return 0
    init_keyring(Path(args.dir), orgs)
    print(f"keyring for {', '.join(orgs)} written to {args.dir}", file=sys.stderr)
    return 0


def _tune_gc() -> None:
    """The cyclic garbage collector for a worker that allocates a few small objects per
    event: every object alive at start-up (imported modules, the model, the rules: some
    170,000) is frozen out of its scans, and its young generation is collected every 50,000
    allocations instead of 700, so the full collections stop rescanning the growing case state
    every few thousand events. Measured on bench/pipeline.py's Sepsis x7 (one worker,
    113,848 events, two runs each): the collector's CPU time went from 1.01 s and 0.98 s to
    0.43 s and 0.39 s, the collection before the freeze included."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def cmd_vault(args: argparse.Namespace) -> int:
    """``procvault vault``."""
    from procvault.config.engines import load_engines
    from procvault.monitor.compliance import Compliance
    from procvault.monitor.errors import ConfigError
    from procvault.monitor.vault import Vault, VaultSettings
    from procvault.streams.frames import Topics
    from procvault.streams.provisioning import AttestationResponder
    from procvault.streams.secrets import Registry, VaultSecrets
    from procvault.streams.vault_worker import VaultWorker

    if not (args.model or args.rules):
        raise ConfigError("give --model, --rules or both")
    keys = Path(args.keys)
    secrets = VaultSecrets.load(keys / "vault.json")
    registry = Registry.load(keys / "registry.json")
    if registry.identity != secrets.identity_public:
        raise ConfigError(
            f"{keys / 'registry.json'} pins another vault identity than {keys / 'vault.json'} "
            "holds (two keyrings mixed?)"
        )
    provider = _attestation_provider(args, secrets)
    engines = load_engines(args.model, args.rules, args.final_marking)
    net, rules = engines.net, engines.rules
    settings = VaultSettings(
        complete_on_final_marking=args.complete_on_final_marking,
        idle_timeout=None if args.idle_timeout is None else timedelta(seconds=args.idle_timeout),
    )

    def make_vault() -> Vault:
        return Vault(net, settings, compliance=Compliance(rules) if rules is not None else None)

    make_acc = None
    plan = None
    if args.dp_policy:
        from procvault.config.dp import load_dp_policy
        from procvault.monitor.privacy import PaneAccumulator
        from procvault.monitor.privacy.plan import ReleasePlan

        dp = load_dp_policy(args.dp_policy, require_start=True)
        known = engines.known()
        plan = ReleasePlan.build(dp, known).fingerprint()

        def make_acc(state: Any) -> PaneAccumulator:
            return PaneAccumulator(dp, known, state)

    topics = Topics(args.topic_prefix)
    bootstrap = kafka_address(args.kafka)
    metrics = recorder = None
    if args.metrics_port is not None:
        from procvault.metrics.exporters import VaultMetrics

        metrics = VaultMetrics(orgs=registry.orgs, detailed=args.metrics_detail)
        if args.metrics_detail:
            print(
                "procvault vault: WARNING: --metrics-detail exports counts that describe the "
                "data (events, cases, alerts): they are OUTSIDE the DP guarantee",
                file=sys.stderr,
            )
        metrics.set_attestation_insecure(args.attestation == "simulated")
    if args.run_dir:
        from procvault.reports.recorder import RunRecorder

        recorder = RunRecorder(args.run_dir, args.worker_id)
    results = None
    if args.results_policy:
        from procvault.config.consortium import load_results_policy

        results = load_results_policy(args.results_policy)
    worker = VaultWorker(
        settings_from(
            WorkerSettings, args, bootstrap=bootstrap, partitions=args.partitions, topics=topics
        ),
        secrets,
        registry,
        make_vault,
        make_accumulator=make_acc,
        plan=plan,
        results=results,
        metrics=metrics,
        recorder=recorder,
    )
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("procvault vault: %(message)s"))
    vault_log = logging.getLogger("procvault.vault")
    vault_log.addHandler(handler)
    vault_log.setLevel(logging.INFO)
    from procvault.cli.options import quiet_kafka_client_logs

    quiet_kafka_client_logs()
    if args.attestation == "simulated":
        print(
            "procvault vault: WARNING: attestation is SIMULATED (INSECURE: signed by the vault "
            "identity, proving nothing about the code): agents must opt in to trust this vault",
            file=sys.stderr,
        )
    else:
        print(f"procvault vault: attestation: {args.attestation}", file=sys.stderr)
    rate = args.attestation_rate
    responder = AttestationResponder(
        bootstrap,
        topics,
        secrets,
        provider,
        rate=rate,
        burst=max(1, int(2 * rate)),
        metrics=metrics,
        log=vault_log.warning,
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        answering = asyncio.create_task(responder.run())
        try:
            await worker.run(ready=lambda: print("procvault vault: ready", file=sys.stderr))
        finally:
            answering.cancel()
            with contextlib.suppress(BaseException):
                await answering

    server = serve_metrics(args, metrics, "vault")
    started = time.monotonic()
    _tune_gc()
    try:
        asyncio.run(main())
    finally:
        if recorder is not None:
            recorder.close()
        if server is not None:
            server.close()
    stats = worker.stats.as_dict()
    stats["attestation_requests"] = dict(sorted(responder.counts.items()))
    stats["seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(stats), file=sys.stderr)
    return 0


def _control_dir(args: argparse.Namespace) -> Path:
    from procvault.organization.control import default_control_dir

    if args.control_dir:
        return Path(args.control_dir)
    return default_control_dir(args.org, args.producer, args.topic_prefix)


def cmd_agent_control(args: argparse.Namespace) -> int:
    """``procvault agent status|pause|resume``: exit 0 if a running agent answered, 3 if none
    runs (no state, or its process is gone)."""
    from procvault.organization.control import ControlDir, pid_alive

    control = ControlDir(_control_dir(args))
    if args.action in ("pause", "resume"):
        paused = args.action == "pause"
        seq = control.request(paused=paused)
        status = control.read_state()
        if status is None or not status.running or not pid_alive(status.pid):
            print(
                f"procvault agent: no agent is running with control directory {control.path}; "
                f"recorded: an agent started there {'starts paused' if paused else 'runs'}",
                file=sys.stderr,
            )
            return 3
        deadline = time.monotonic() + max(0.0, args.wait)
        while True:
            status = control.read_state()
            acked = status is not None and status.command_seq >= seq
            if acked and status is not None and (status.state == "paused") == paused:
                break
            if status is None or not pid_alive(status.pid) or time.monotonic() > deadline:
                from procvault.monitor.errors import ProcvaultError

                raise ProcvaultError(
                    f"the agent (pid {status.pid if status else '?'}) did not "
                    f"{'pause' if paused else 'resume'} within {args.wait:g} s "
                    f"(the request stays in {control.command_file})"
                )
            time.sleep(0.1)
        print(status.describe(alive=True))
        return 0
    status = control.read_state()
    if status is None:
        print(
            f"procvault agent: no agent state in {control.path} (is an agent running with "
            f"--org {args.org} --producer {args.producer}"
            + (f" --topic-prefix {args.topic_prefix}" if args.topic_prefix else "")
            + "?)",
            file=sys.stderr,
        )
        return 3
    alive = status.running and pid_alive(status.pid)
    if args.json:
        print(json.dumps({**status.to_dict(), "alive": alive}))
    else:
        print(status.describe(alive=alive))
    return 0 if alive else 3


def cmd_agent(args: argparse.Namespace) -> int:
    """``procvault agent``."""
    if args.action != "run":
        return cmd_agent_control(args)
    from procvault.cli.options import fail_usage as _fail_usage
    from procvault.generators.pacing import parse_pacing
    from procvault.generators.run import first_events
    from procvault.generators.split import ActivityMapping, CaseHash, assign
    from procvault.generators.xes import read_xes
    from procvault.monitor.errors import ConfigError
    from procvault.organization.agent import Agent, ordered_share
    from procvault.organization.control import AgentControl
    from procvault.organization.trust import VaultTrust, run_while_trusted
    from procvault.streams.frames import Topics
    from procvault.streams.secrets import OrgKeys, Registry

    missing = [
        f
        for f, v in (("--kafka", args.kafka), ("--keys", args.keys), ("--from", args.source))
        if not v
    ]
    if missing:
        _fail_usage(f"agent run needs {', '.join(missing)}")
    if args.split_map and args.split_hash:
        raise ConfigError("choose one of --split-map and --split-hash")
    if (args.hold is not None or args.audit_log) and not args.review:
        raise ConfigError("--hold and --audit-log belong to review: give --review DIR too")
    org_keys = OrgKeys.load(Path(args.keys) / f"org-{args.org}.json")
    if org_keys.org != args.org:
        raise ConfigError(f"the keys file is for {org_keys.org!r}, not {args.org!r}")
    registry = Registry.load(Path(args.keys) / "registry.json")
    if args.org not in registry.orgs:
        raise ConfigError(f"{args.org!r} is not registered in {args.keys}/registry.json")
    log = read_xes(args.source)
    replay = {"end_markers": args.end_markers, "repeat": args.repeat}
    events: Any = log.replay(org=args.org, **replay)
    if args.split_map:
        mapping = ActivityMapping.from_file(args.split_map)
        mapping.check_covers(log.activities, args.split_map)
        events = assign(log.replay(**replay), mapping)
    elif args.split_hash:
        orgs = [o.strip() for o in args.split_hash.split(",") if o.strip()]
        events = assign(log.replay(**replay), CaseHash(orgs))
    if args.limit:
        events = first_events(events, args.limit)
    share = ordered_share(events, args.org)
    pacing = parse_pacing(rate=args.rate, speed=args.speed)
    if log.events:
        pacing.due(0, log.events[0])  # the log's clock starts at its first event
    transform = None
    policy = None
    granularity = 1  # µs: the times the agent may promise (the policy's coarsest truncation)
    if args.policy:
        from procvault.organization.policy import PolicyEngine

        engine = PolicyEngine.for_organization(
            args.policy, args.org, org_keys.pseudonym_key, key_file=args.key_file
        )
        policy = engine.policy
        transform = engine.apply
        granularity = engine.time_granularity_us
    topics = Topics(args.topic_prefix)
    bootstrap = kafka_address(args.kafka)
    metrics = None
    if args.metrics_port is not None:
        from procvault.metrics.exporters import AgentMetrics

        metrics = AgentMetrics()
    verifier = attestation_verifier(args, registry.identity, "agent", metrics)
    trust = VaultTrust(
        bootstrap,
        topics,
        registry.identity,
        verifier,
        settings_from(TrustSettings, args, timeout=args.attestation_timeout),
        metrics=metrics,
        log=lambda line: print(f"procvault agent: {line}", file=sys.stderr),
    )
    control = AgentControl(
        _control_dir(args),
        org=args.org,
        producer=args.producer,
        restricted=policy is not None and policy.mode == "allowlist",
        windows=policy.windows if policy is not None else (),
        metrics=metrics,
        on_change=lambda state: print(f"procvault agent: {state}", file=sys.stderr),
    )
    review = None
    if args.review:
        from procvault.organization.review import ReviewQueue

        review = ReviewQueue.create(
            args.review,
            org=args.org,
            producer=args.producer,
            hold=args.hold,
            audit_log=args.audit_log,
        )
    server = serve_metrics(args, metrics, "agent")
    recorder: Any = None
    on_batch: Any = None
    if args.run_dir:
        from procvault.reports.recorder import RunRecorder

        recorder = rec = RunRecorder(args.run_dir, f"agent-{args.org}"[:64])
        counted = [0]

        def count_sent(stats: Any) -> None:  # memory and events sent, for procvault report
            rec.count(stats.sent - counted[0])
            counted[0] = stats.sent

        on_batch = count_sent

    async def main() -> Any:
        async with trust:
            return await run_while_trusted(trust, publish(trust.current))

    async def publish(vault_keys: Any) -> Any:
        agent = Agent(
            settings_from(
                AgentSettings, args, bootstrap=bootstrap, partitions=args.partitions, topics=topics
            ),
            org_keys,
            vault_keys,
            transform=transform,
            metrics=metrics,
            on_batch=on_batch,
            start_at=args.start_at,
            control=control,
            review=review,
            time_granularity_us=granularity,
            progress_file=_control_dir(args) / "progress.json",
            vault_keys=lambda: trust.current,
        )
        return await agent.run(share, pacing)

    try:
        stats = asyncio.run(main())
    finally:
        if review is not None:
            review.close()
        if server is not None:
            server.close()
        if recorder is not None:
            recorder.close()
    print(json.dumps({"org": args.org, **stats.as_dict()}), file=sys.stderr)
    return 0
