"""Options with one meaning in several commands, declared once here, and the wiring they share.

Each has one environment variable for every command that has it (``PROCVAULT_KAFKA`` is the
bootstrap server of ``vault``, ``agent``, ``release``, ``results`` and ``revoke`` alike); every
other option's variable is named after its command (:func:`procvault.cli.options.env_name`).
No command imports another command's module: what two commands share lives here.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from procvault.cli.options import add_option, positive

__all__ = [
    "INSECURE_ENV",
    "add_attestation_options",
    "add_connection_options",
    "add_observability_options",
    "add_plan_options",
    "add_policy_key_option",
    "attestation_verifier",
    "kafka_address",
    "serve_metrics",
]

INSECURE_ENV = "PROCVAULT_ALLOW_INSECURE_ATTESTATION"


def add_connection_options(
    p: argparse.ArgumentParser,
    *,
    required: bool = True,
    partitions: bool = True,
    bootstrap_alias: bool = False,
) -> None:
    """``--kafka``, ``--topic-prefix``, ``--partitions`` (of the event topics) and ``--keys``."""
    flags = ("--kafka", "--bootstrap") if bootstrap_alias else ("--kafka",)
    add_option(
        p,
        *flags,
        env="PROCVAULT_KAFKA",
        required=required,
        metavar="HOST:PORT",
        help="Kafka bootstrap server",
    )
    add_option(
        p,
        "--topic-prefix",
        env="PROCVAULT_TOPIC_PREFIX",
        default="",
        metavar="PREFIX",
        help="prefix of every topic name (one deployment per prefix)",
    )
    if partitions:
        add_option(
            p,
            "--partitions",
            env="PROCVAULT_PARTITIONS",
            type=positive(int),
            default=3,
            help="partitions of the event topics (the same for every organization and the vault)",
        )
    add_option(
        p,
        "--keys",
        env="PROCVAULT_KEYS",
        required=required,
        metavar="DIR",
        help="the keyring folder (procvault keys init); each command reads what it needs: "
        "vault.json, registry.json, org-ORG.json",
    )


def add_plan_options(p: argparse.ArgumentParser, *, dp_required: bool = False) -> None:
    """``--model``, ``--rules``, ``--final-marking`` and ``--dp-policy``: what the vault workers
    and the release stage must agree on."""
    add_option(
        p,
        "--model",
        env="PROCVAULT_MODEL",
        help="the .pnml or .bpmn model (its activities are known keys of the DP panes)",
    )
    add_option(
        p,
        "--rules",
        env="PROCVAULT_RULES",
        metavar="FILE_OR_DIR",
        help="native compliance rules (their ids are known keys of the DP panes)",
    )
    add_option(
        p,
        "--final-marking",
        env="PROCVAULT_FINAL_MARKING",
        metavar="PLACE",
        help="final place when the model has none",
    )
    add_option(
        p,
        "--dp-policy",
        env="PROCVAULT_DP_POLICY",
        required=dp_required,
        metavar="FILE",
        help="the DP release policy (YAML): the vault workers send pane partials under it, "
        "the release stage noises them (both need the same)",
    )


def add_policy_key_option(p: argparse.ArgumentParser) -> None:
    """``--key-file``: the organization's own pseudonym key for its policy (agent, revoke)."""
    add_option(
        p,
        "--key-file",
        env="PROCVAULT_POLICY_KEY_FILE",
        metavar="FILE",
        help="with --policy: the organization's own key for pseudonyms of resources and "
        "attributes (default: $PROCVAULT_POLICY_KEY, else the consortium's pseudonym key in "
        "DIR/org-ORG.json); case ids always use the consortium's key, so that a case crossing "
        "organizations keeps one pseudonym",
    )


def add_observability_options(p: argparse.ArgumentParser) -> None:
    """``--metrics-port``, ``--metrics-host``, ``--metrics-detail`` and ``--run-dir``."""
    add_option(
        p,
        "--metrics-port",
        env="PROCVAULT_METRICS_PORT",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on this port (0: any free port, printed)",
    )
    add_option(
        p,
        "--metrics-host",
        env="PROCVAULT_METRICS_HOST",
        default="127.0.0.1",
        help="address of the metrics endpoint (0.0.0.0 inside a container)",
    )
    add_option(
        p,
        "--metrics-detail",
        env="PROCVAULT_METRICS_DETAIL",
        action="store_true",
        help="also export counts that describe the data (events applied, cases, alerts, late "
        "events, per-event latencies): OUTSIDE the DP guarantee, for the TEE's own operator",
    )
    add_option(
        p,
        "--run-dir",
        env="PROCVAULT_RUN_DIR",
        metavar="DIR",
        help="record memory and latency here (procvault report)",
    )


def serve_metrics(args: argparse.Namespace, metrics: Any, name: str) -> Any:
    """Start the metrics endpoint if asked; returns the server (or None)."""
    if metrics is None:
        return None
    from procvault.metrics.exporters import serve

    server = serve(metrics.registry, args.metrics_port, host=args.metrics_host)
    print(f"procvault {name}: metrics at {server.url}", file=sys.stderr)
    return server


def kafka_address(text: str) -> str:
    """``HOST:PORT`` from a ``--kafka`` value (``kafka://`` accepted); a clear error otherwise.

    >>> kafka_address("kafka://127.0.0.1:9092/")
    '127.0.0.1:9092'
    """
    from procvault.monitor.errors import ConfigError

    host_port = text.removeprefix("kafka://").rstrip("/")
    if ":" not in host_port or "/" in host_port:
        raise ConfigError(f"--kafka wants HOST:PORT (or kafka://HOST:PORT), got {text!r}")
    return host_port


def add_attestation_options(p: argparse.ArgumentParser, *, timeout: bool = True) -> None:
    """How a process that trusts the vault (agent, results, revoke) verifies its evidence."""
    add_option(
        p,
        "--allow-insecure-attestation",
        env=INSECURE_ENV,
        action="store_true",
        help="accept SIMULATED evidence: the vault's announcements must still chain to the "
        "identity pinned in registry.json, but nothing about its code is proven (development "
        "only; said loudly once when it happens)",
    )
    add_option(
        p,
        "--attestation-policy",
        env="PROCVAULT_ATTESTATION_POLICY",
        metavar="FILE",
        help="verify hardware evidence (SGX or TDX DCAP quotes) with dcap-qvl against this "
        "attestation policy (YAML: kind, measurements, tcb_statuses, allow_debug, collateral; "
        "see docs/security.md)",
    )
    if timeout:
        add_option(
            p,
            "--attestation-timeout",
            env="PROCVAULT_ATTESTATION_TIMEOUT",
            type=positive(float),
            default=60.0,
            help="seconds to wait for a valid answer of the vault",
        )


def attestation_verifier(
    args: argparse.Namespace, identity: bytes, prog: str, metrics: Any = None
) -> Any:
    """The :class:`~procvault.streams.attestation.EvidenceVerifier` the options ask for; it
    prints one warning, the first time it trusts simulated evidence."""
    from procvault.streams.attestation import EvidenceVerifier
    from procvault.streams.attestation_hw import load_attestation_policy

    hardware = None
    if args.attestation_policy:
        hardware = load_attestation_policy(args.attestation_policy)
        if hardware.policy.verify_at is not None:
            print(
                f"procvault {prog}: WARNING: {args.attestation_policy} verifies quotes as of "
                f"{hardware.policy.verify_at:.0f} (collateral.verify_at), not now: expired "
                "collateral is accepted (offline tests only)",
                file=sys.stderr,
            )
    env = os.environ.get(INSECURE_ENV, "")
    from_env = env.lower() in ("1", "true", "yes", "on")  # the option's default came from it

    def on_insecure() -> None:
        how = (
            f"{INSECURE_ENV}={env} in the environment"
            if from_env
            else "--allow-insecure-attestation"
        )
        print(
            f"procvault {prog}: WARNING: trusting SIMULATED attestation evidence "
            f"(simulated-INSECURE, accepted because of {how}): the vault's identity is "
            "checked, its code and hardware are not (development only)",
            file=sys.stderr,
        )
        if metrics is not None and hasattr(metrics, "set_attestation_insecure"):
            metrics.set_attestation_insecure(True)

    return EvidenceVerifier(
        identity,
        allow_insecure=args.allow_insecure_attestation,
        hardware=hardware,
        on_insecure=on_insecure,
    )
