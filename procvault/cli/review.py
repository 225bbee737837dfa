"""``procvault review list|show|redact|drop|release``: a person's side of review before sharing.

An agent started with ``--review DIR`` holds its policy-stage outputs in a queue in ``DIR``
(:mod:`procvault.organization.review`) and publishes them in source order once released. These
commands inspect the held items and decide: redact fields, drop items (each leaves a placeholder)
or release them. Every decision names its ``--actor`` and, when the queue has an audit log
(the agent's ``--audit-log``, or ``--audit-log`` here), is appended to it.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from procvault.cli.options import add_option as _add
from procvault.cli.options import positive as _positive

__all__ = ["cmd_review", "register"]


def register(sub: Any) -> None:
    """Add the ``review`` subcommand."""
    p = sub.add_parser(
        "review",
        help="inspect, redact, drop or release what an agent holds for review",
        description="The review queue of an agent started with --review DIR: list and show "
        "held items, redact fields (the value becomes a placeholder naming the reason, the "
        "policy version and the actor), drop items (each becomes a placeholder event, reason "
        "REVIEW_DROPPED) or release them. Ids are the items' positions in the source "
        "('review list' shows them). Decisions apply to held items only and go to the "
        "queue's audit log when it has one.",
    )
    actions = p.add_subparsers(dest="review_action", required=True, metavar="ACTION")

    def common(a: argparse.ArgumentParser) -> None:
        _add(a, "--review", required=True, metavar="DIR", help="the agent's review folder")

    def deciding(a: argparse.ArgumentParser) -> None:
        common(a)
        _add(a, "--actor", required=True, help="who decides (recorded on placeholders and audits)")
        _add(
            a,
            "--audit-log",
            metavar="FILE",
            help="append the decision to this audit log (default: the one the agent was "
            "given with --audit-log, if any)",
        )

    a = actions.add_parser(
        "list", help="list items (held ones by default)", description="Items in source order."
    )
    common(a)
    _add(
        a,
        "--state",
        choices=("held", "released", "dropped", "all"),
        default="held",
        help="which items",
    )
    _add(a, "--case", help="only this case (as it leaves the organization)")
    _add(a, "--limit", type=_positive(int), help="at most this many")
    _add(a, "--json", action="store_true", help="one JSON object per item")
    a.set_defaults(func=cmd_review)

    a = actions.add_parser(
        "show", help="show one item's events", description="An item and its events as they leave."
    )
    common(a)
    a.add_argument("id", type=int, help="the item's id")
    _add(a, "--json", action="store_true", help="print JSON")
    a.set_defaults(func=cmd_review)

    a = actions.add_parser(
        "redact",
        help="redact fields of a held item",
        description="Replace attribute values by a placeholder value "
        "(pv:redacted;reason=REVIEW_REDACTED;policy_version=V;actor=NAME); 'resource' removes "
        "the resource. The event's pv:withheld counts REVIEW_REDACTED fields.",
    )
    deciding(a)
    a.add_argument("id", type=int, help="the item's id")
    a.add_argument(
        "--field",
        dest="fields",
        action="append",
        required=True,
        metavar="KEY",
        help="an attribute key, or 'resource' (repeat for several)",
    )
    a.set_defaults(func=cmd_review)

    a = actions.add_parser(
        "drop",
        help="drop held items (each leaves a placeholder)",
        description="Each event becomes a placeholder (pv:withheld, reason REVIEW_DROPPED, "
        "the actor); its content is deleted from the queue.",
    )
    deciding(a)
    a.add_argument("ids", type=int, nargs="*", metavar="ID", help="the items' ids")
    _add(a, "--case", help="every held item of this case")
    a.set_defaults(func=cmd_review)

    a = actions.add_parser(
        "release",
        help="release held items",
        description="The agent publishes released items in source order.",
    )
    deciding(a)
    a.add_argument("ids", type=int, nargs="*", metavar="ID", help="the items' ids")
    _add(a, "--case", help="every held item of this case")
    _add(a, "--all", dest="everything", action="store_true", help="every held item")
    a.set_defaults(func=cmd_review)


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _event_dict(ev: Any) -> dict[str, Any]:
    from procvault.streams import codec

    out = codec.to_dict(ev)
    out["timestamp"] = ev.timestamp.isoformat()
    return out


def cmd_review(args: argparse.Namespace) -> int:
    """Run ``procvault review ACTION``."""
    from procvault.organization.review import ReviewQueue

    with ReviewQueue.open(args.review) as queue:
        if getattr(args, "audit_log", None):
            from pathlib import Path

            queue.meta["audit_log"] = str(Path(args.audit_log).resolve())
        action = args.review_action
        if action == "list":
            state = None if args.state == "all" else args.state
            items = queue.items(state=state, case=args.case, limit=args.limit)
            if args.json:
                for it in items:
                    print(json.dumps(it.summary()))
            else:
                print(f"{'ID':>8}  {'STATE':8}  {'CASE':26}  {'ACTIVITY':24}  HELD SINCE (UTC)")
                for it in items:
                    print(
                        f"{it.order:>8}  {it.state:8}  {it.case[:26]:26}  {it.activity[:24]:24}  "
                        f"{_when(it.held_at)}"
                        + (f"  redacted: {','.join(it.redacted)}" if it.redacted else "")
                    )
                counts = queue.counts()
                hold = queue.hold
                print(
                    f"{counts['held']:,} held, {counts['released']:,} released, "
                    f"{counts['dropped']:,} dropped"
                    + (f"; unreviewed items are released after {hold:g} s" if hold else ""),
                    file=sys.stderr,
                )
            return 0
        if action == "show":
            it = queue.item(args.id)
            if args.json:
                print(json.dumps({**it.summary(), "events": [_event_dict(e) for e in it.events]}))
            else:
                s = it.summary()
                print(
                    f"item {it.order}: {it.state}, case {it.case}, position {it.position}, "
                    f"held since {_when(it.held_at)}"
                    + (f", {it.state} by {it.actor} at {_when(it.decided_at)}" if it.actor else "")
                    + (f" ({it.reason})" if s["reason"] else "")
                )
                for ev in it.events:
                    print(json.dumps(_event_dict(ev), indent=2))
                if it.published and not it.events:
                    print("published: the queue no longer keeps its content")
            return 0
        if action == "redact":
            it = queue.redact(args.id, args.fields, actor=args.actor)
            print(f"item {it.order}: redacted {', '.join(args.fields)} (still held)")
            return 0
        if action == "drop":
            n = queue.drop(args.ids, case=args.case, actor=args.actor)
            print(f"dropped {n:,} item(s): each leaves a placeholder (REVIEW_DROPPED)")
            return 0
        n = queue.release(args.ids, case=args.case, everything=args.everything, actor=args.actor)
        print(f"released {n:,} item(s)")
        return 0
