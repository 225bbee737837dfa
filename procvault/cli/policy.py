"""``procvault policy check|apply`` and ``procvault audit verify``: the organization's privacy
policy stage from the command line.

* ``policy check FILE`` validates a policy (YAML, or a ProMTEE extraction manifest) and prints
  what it does.
* ``policy apply LOG --policy FILE --to TARGET`` replays a log (``.xes``, ``.xes.gz`` or a
  ``.jsonl`` of events) through the policy stage into a sink; with ``--audit-log`` every decision
  is appended to a hash-chained audit log.
* ``audit verify LOG`` checks such a log and names the first broken entry.

The pseudonym key comes from ``--key-file`` or the ``PROCVAULT_POLICY_KEY`` environment
variable, never from the command line, and is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from procvault.cli.options import add_option as _add
from procvault.cli.options import positive as _positive

__all__ = ["cmd_audit_verify", "cmd_policy_apply", "cmd_policy_check", "register"]

#: Exit code of ``audit verify`` for an empty log (nothing broken, nothing proven either).
EXIT_EMPTY = 3

#: Environment variable with the shared case-id key (when it differs from the org's key).
CASE_KEY_ENV = "PROCVAULT_POLICY_CASE_KEY"


def register(sub: Any) -> None:
    """Add the ``policy`` and ``audit`` subcommands to the CLI's subparsers."""
    p = sub.add_parser(
        "policy",
        help="check or apply an organization's privacy policy",
        description="An organization's privacy policy (policies/orgs/<org>.yaml, schema in "
        "docs/privacy-policy.md): check a policy file, or apply it to a log.",
    )
    actions = p.add_subparsers(dest="policy_action", required=True, metavar="ACTION")

    c = actions.add_parser(
        "check",
        help="validate a policy file and summarise it",
        description="Validate a policy (YAML, or a ProMTEE extraction manifest .json) and print "
        "what it does. Errors name the file, the line and the key.",
    )
    c.add_argument("file", help="the policy .yaml (or a ProMTEE manifest .json)")
    _add(c, "--json", action="store_true", help="print the summary as JSON")
    c.set_defaults(func=cmd_policy_check)

    a = actions.add_parser(
        "apply",
        help="replay a log through the policy stage",
        description="Replay a log through the policy stage: each event leaves as the policy "
        "allows, or as a placeholder that says where and why it was withheld (never what). "
        "The pseudonym key comes from --key-file or $PROCVAULT_POLICY_KEY.",
    )
    a.add_argument("log", help="a .xes/.xes.gz log or a .jsonl file of events")
    _add(
        a,
        "--policy",
        required=True,  # unless its environment variable gives it
        metavar="FILE",
        help="the policy file",
    )
    _add(
        a,
        "--key-file",
        metavar="FILE",
        help="the organization's pseudonym key (default: $PROCVAULT_POLICY_KEY)",
    )
    _add(
        a,
        "--case-key-file",
        metavar="FILE",
        help="the case-id key shared by the organizations of a cross-organization process "
        f"(default: ${CASE_KEY_ENV}, else the organization's key)",
    )
    _add(a, "--scrub", action="store_true", help="scrub personal data from free text")
    _add(a, "--audit-log", metavar="FILE", help="append every decision to this audit log")
    _add(a, "--actor", default="policy-engine", help="who decides (on placeholders and audits)")
    _add(
        a,
        "--to",
        default="stdout",
        metavar="TARGET",
        help="kafka://HOST:PORT/TOPIC, a .jsonl file, 'stdout' or 'null'",
    )
    _add(a, "--end-markers", action="store_true", help="XES: add an end-of-case marker per case")
    _add(a, "--limit", type=_positive(int), help="stop after this many input events")
    a.set_defaults(func=cmd_policy_apply)

    au = sub.add_parser(
        "audit",
        help="check a policy audit log",
        description="Tools for the policy stage's hash-chained audit log.",
    )
    au_actions = au.add_subparsers(dest="audit_action", required=True, metavar="ACTION")
    v = au_actions.add_parser(
        "verify",
        help="verify the hash chain and name the first broken entry",
        description="Check every entry's hash, the chain of prev hashes, the sequence numbers "
        "and that each session is closed; exit 0 if intact, 1 naming the first broken entry, "
        f"{EXIT_EMPTY} for an empty log (no entries: not 'intact', nothing is proven).",
    )
    v.add_argument("log", help="the audit log (JSON lines)")
    _add(v, "--head", metavar="HASH", help="the head hash kept elsewhere; it must match")
    _add(v, "--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=cmd_audit_verify)


# ----------------------------------------------------------------------------- policy check
def _describe(summary: dict[str, Any]) -> list[str]:
    def listed(items: list[str] | None) -> str:
        return "-" if items is None else (", ".join(items) if items else "(none)")

    s = summary
    verb = "allowed" if s["mode"] == "allowlist" else "denied"
    p = s["pseudonymise"]
    pseudo = [n for n, on in (("case ids", p["case_id"]), ("resources", p["resource"])) if on]
    pseudo += [f"attribute {a}" for a in p["attributes"]]
    sc = s["scrub"]
    m = s["minimise"]
    return [
        f"policy {s['policy']} v{s['version']} (org {s['org'] or '-'}): {s['mode']}, "
        f"{s['clauses']} clauses, consent scope {s['scope']!r}",
        f"  activities {verb}: {listed(s['activities'])}",
        f"  resources {verb}: {listed(s['resources'])}",
        f"  attributes {verb}: {listed(s['attributes'])}",
        f"  collection windows: {listed(s['windows'])}",
        f"  minimisation: {m['activities']} activities listed, others {m['default']}"
        + (f" (from {m['source']})" if m["source"] else ""),
        f"  generalisation: timestamps {s['generalise']['timestamps']}, "
        f"numbers bucketed: {listed(s['generalise']['numbers'])}",
        f"  pseudonyms: {', '.join(pseudo) if pseudo else 'none'}"
        + (" (needs the organization's key)" if p["needs_key"] else ""),
        f"  placeholders: timestamps {s['placeholder_timestamps']}",
        f"  PII scrubbing: {'on' if sc['enabled'] else 'off (--scrub turns it on)'}; "
        f"kinds {', '.join(sc['kinds'])}; phone regions {', '.join(sc['phone_regions'])}; "
        f"national ids {', '.join(sc['national_ids']) or '-'}; {sc['names']} names",
        f"  digest: sha256:{s['digest']}",
    ]


def cmd_policy_check(args: argparse.Namespace) -> int:
    """Run ``procvault policy check``."""
    from procvault.organization.policy import load_policy

    policy = load_policy(args.file)
    summary = policy.summary()
    if args.json:
        print(json.dumps({"file": str(args.file), "ok": True, **summary}))
    else:
        print(f"{args.file}: OK")
        for line in _describe(summary):
            print(line)
    return 0


# ----------------------------------------------------------------------------- policy apply
def _read_jsonl(path: Path) -> Iterator[Any]:
    from procvault.monitor.errors import CodecError, InputError
    from procvault.streams.codec import from_json

    try:
        fh = path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield from_json(line)
            except CodecError as exc:
                raise InputError(f"{path}:{n}: {exc}") from None


def _events(args: argparse.Namespace) -> Iterable[Any]:
    from procvault.monitor.errors import InputError

    path = Path(args.log)
    name = path.name.lower()
    if name.endswith(".jsonl"):
        if not path.exists():
            raise InputError(f"{path}: no such file")
        events: Iterable[Any] = _read_jsonl(path)
    elif name.endswith(".xes") or name.endswith(".xes.gz"):
        from procvault.generators.xes import read_xes

        events = read_xes(path).replay(end_markers=args.end_markers)
    else:
        raise InputError(f"{path}: expected a .xes, .xes.gz or .jsonl file")
    if args.limit is not None:
        events = _take(events, args.limit)
    return events


def _take(events: Iterable[Any], n: int) -> Iterator[Any]:
    for i, ev in enumerate(events):
        if i >= n:
            return
        yield ev


def _keys(args: argparse.Namespace) -> tuple[Any, Any]:
    from procvault.organization.policy import PseudonymKey

    key = (
        PseudonymKey.from_file(args.key_file)
        if args.key_file
        else PseudonymKey.from_env("PROCVAULT_POLICY_KEY")
    )
    case_key = (
        PseudonymKey.from_file(args.case_key_file)
        if args.case_key_file
        else PseudonymKey.from_env(CASE_KEY_ENV)
    )
    return key, case_key


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {n:,}" for k, n in sorted(d.items(), key=lambda kv: -kv[1]))


def cmd_policy_apply(args: argparse.Namespace) -> int:
    """Run ``procvault policy apply``."""
    from procvault.generators.pacing import AsFastAsPossible
    from procvault.generators.run import run_to_sink
    from procvault.organization.policy import AuditLog, PolicyEngine, load_policy
    from procvault.streams.sinks import open_sink

    policy = load_policy(args.policy)
    key, case_key = _keys(args)
    engine = PolicyEngine(
        policy,
        key=key,
        case_key=case_key,
        scrub=True if args.scrub else None,
        actor=args.actor,
    )
    events = _events(args)
    sink = open_sink(args.to)
    audit = AuditLog(args.audit_log) if args.audit_log else None
    started = time.perf_counter()
    try:
        if audit is not None:
            audit.open_session(
                {
                    "policy": policy.id,
                    "policy_version": policy.version,
                    "policy_digest": policy.digest,
                    "org": policy.org,
                    "actor": engine.actor,
                    "key_id": engine.key_id,
                    "case_key_id": engine.case_key_id,
                    "scrub": engine.scrub_enabled,
                    "source": str(args.log),
                }
            )
            record = audit.record
            decide = engine.decide

            def stream() -> Iterator[Any]:
                for ev in events:
                    decision = decide(ev)
                    record(decision)
                    yield decision.event

            out: Iterable[Any] = stream()
        else:
            apply = engine.apply
            out = (o for ev in events for o in apply(ev))
        run = asyncio.run(run_to_sink(out, sink, AsFastAsPossible(), count_cases=False))
    finally:
        if audit is not None:
            audit.close()
    seconds = time.perf_counter() - started
    stats = engine.stats
    n_in = stats.events + stats.markers
    lines = [
        f"policy {policy.id} v{policy.version}: {stats.events:,} events in, "
        f"{stats.emitted:,} emitted, {stats.placeholders:,} placeholders"
        + (f" ({_counts(stats.withheld)})" if stats.withheld else "")
        + (f", {stats.markers:,} markers" if stats.markers else ""),
    ]
    if stats.fields:
        lines.append(f"  fields withheld: {_counts(stats.fields)}")
    if engine.scrub_enabled:
        lines.append(f"  PII scrubbed: {_counts(stats.scrubbed) or 'nothing found'}")
    lines.append(
        f"  {run.events + run.markers:,} events to {sink.describe()} in {seconds:.2f} s "
        f"({n_in / seconds if seconds > 0 else 0:,.0f} events/s)"
    )
    if audit is not None:
        entries, head = audit.head
        lines.append(f"  audit log {args.audit_log}: {entries:,} entries, head {head}")
    for line in lines:
        print(line, file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- audit verify
def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Run ``procvault audit verify``; a broken log raises ``TamperError`` (exit code 1)."""
    from procvault.organization.policy import verify_audit_log

    report = verify_audit_log(args.log, expect_head=args.head)
    if args.json:
        print(
            json.dumps(
                {
                    "log": str(report.path),
                    "ok": report.intact,
                    "status": report.status,
                    "entries": report.entries,
                    "sessions": report.sessions,
                    "decisions": report.decisions,
                    "outcomes": dict(report.outcomes),
                    "withheld": dict(report.reasons),
                    "head": report.head,
                }
            )
        )
    elif not report.intact:
        print(
            f"{report.path}: empty: no entries, nothing to verify (a log whose entries were "
            "all removed looks the same; check the head recorded elsewhere with --head)"
        )
    else:
        outcomes = ", ".join(f"{n:,} {k}" for k, n in sorted(report.outcomes.items()))
        print(
            f"{report.path}: intact: {report.entries:,} entries, {report.sessions:,} sessions, "
            f"{report.decisions:,} decisions ({outcomes or 'none'}); head {report.head}"
        )
    return 0 if report.intact else EXIT_EMPTY
