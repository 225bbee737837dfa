"""Split one stream across several organizations.

Two ways to decide which organization owns an event:

* :class:`ActivityMapping` — by activity, from a mapping file, as in a supply chain where one
  case crosses organizations (the supplier ships, the carrier transports, the customer pays);
* :class:`CaseHash` — by a stable hash of the case id, so each case stays within one
  organization (several hospitals, each with its own patients).

:func:`assign` sets ``org`` on every event and changes nothing else, so the union of the
per-organization streams is exactly the original stream, and the streams are disjoint.

>>> from datetime import datetime, UTC
>>> from procvault.monitor.event import Event
>>> t = datetime(2024, 1, 1, tzinfo=UTC)
>>> evs = [Event.create("c1", "Ship", t), Event.create("c1", "Pay", t)]
>>> m = ActivityMapping({"Ship": "carrier"}, default="customer")
>>> [e.org for e in assign(evs, m)]
['carrier', 'customer']
>>> CaseHash(["a", "b", "c"]).org_of(evs[0]) == CaseHash(["a", "b", "c"]).org_of(evs[1])
True
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from procvault.monitor.errors import ConfigError, InputError
from procvault.monitor.event import Event

__all__ = ["ActivityMapping", "CaseHash", "OrgAssigner", "assign", "split"]

_ORG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _check_org(name: object, where: str) -> str:
    if not isinstance(name, str) or not _ORG_NAME.match(name):
        raise ConfigError(
            f"{where}: organization name {name!r} must be 1-63 characters of letters, digits, "
            "'.', '_' or '-' (it becomes part of a Kafka topic name)"
        )
    return name


class OrgAssigner(Protocol):
    """Chooses the organization that owns an event."""

    @property
    def orgs(self) -> Sequence[str]:
        """Every organization this assigner can return."""
        ...

    def org_of(self, event: Event) -> str:
        """The organization that owns ``event``."""
        ...


@dataclass(frozen=True)
class ActivityMapping:
    """Activity → organization, with an optional default for unmapped activities."""

    mapping: Mapping[str, str]
    default: str | None = None

    def __post_init__(self) -> None:
        for org in self.mapping.values():
            _check_org(org, "activity mapping")
        if self.default is not None:
            _check_org(self.default, "activity mapping default")

    @property
    def orgs(self) -> Sequence[str]:
        """The organizations named in the mapping (and the default), sorted."""
        names = set(self.mapping.values())
        if self.default is not None:
            names.add(self.default)
        return sorted(names)

    def org_of(self, event: Event) -> str:
        """The mapped organization; a :class:`ConfigError` for an unmapped activity."""
        org = self.mapping.get(event.activity, self.default)
        if org is None:
            raise ConfigError(
                f"activity {event.activity!r} is not in the organization mapping "
                "and the mapping has no default"
            )
        return org

    def check_covers(self, activities: Iterable[str], source: str = "mapping") -> None:
        """Fail up front, naming them, if some ``activities`` would have no organization."""
        if self.default is not None:
            return
        missing = sorted(set(activities) - set(self.mapping))
        if missing:
            shown = ", ".join(repr(a) for a in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise ConfigError(
                f"{source}: no organization for activities {shown}{more} "
                "(map them or set 'default')"
            )

    @classmethod
    def from_file(cls, path: str | Path) -> ActivityMapping:
        """Load a YAML or JSON mapping file.

        Format::

            default: customer          # optional
            activities:
              Create Order: customer
              Ship: carrier
        """
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(f"{p}: file not found") from None
        except OSError as exc:
            raise InputError(f"{p}: cannot read: {exc.strerror or exc}") from None
        try:
            data: Any = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (yaml.YAMLError, json.JSONDecodeError) as exc:
            first = str(exc).splitlines()[0]
            raise InputError(f"{p}: not valid YAML/JSON: {first}") from None
        if not isinstance(data, dict) or not isinstance(data.get("activities"), dict):
            raise ConfigError(f"{p}: expected a mapping with an 'activities' table")
        unknown = set(data) - {"activities", "default"}
        if unknown:
            raise ConfigError(f"{p}: unknown keys {sorted(unknown)}")
        acts = data["activities"]
        for act, org in acts.items():
            _check_org(org, f"{p}: activity {act!r}")
        default = data.get("default")
        if default is not None:
            _check_org(default, f"{p}: default")
        return cls({str(k): v for k, v in acts.items()}, default)


@dataclass(frozen=True)
class CaseHash:
    """Each case belongs wholly to one of ``orgs``, chosen by a stable hash of its id.

    The hash is BLAKE2b of the UTF-8 case id, so the assignment is the same on every run and
    every machine (unlike Python's salted ``hash``).
    """

    org_names: Sequence[str]

    def __post_init__(self) -> None:
        if not self.org_names:
            raise ConfigError("case-hash split needs at least one organization")
        for org in self.org_names:
            _check_org(org, "case-hash split")
        if len(set(self.org_names)) != len(self.org_names):
            raise ConfigError("case-hash split: organization names must be distinct")

    @property
    def orgs(self) -> Sequence[str]:
        """The organizations, in the given order."""
        return tuple(self.org_names)

    def org_of(self, event: Event) -> str:
        """The organization of the event's case."""
        digest = hashlib.blake2b(event.case_id.encode(), digest_size=8).digest()
        return self.org_names[int.from_bytes(digest, "big") % len(self.org_names)]


def assign(events: Iterable[Event], assigner: OrgAssigner) -> Iterator[Event]:
    """Yield each event with its organization set by ``assigner``; nothing else changes.

    An end-of-case marker goes to the organization of its case's last event (the one who
    handled the case last knows it ended). Only cases seen since their last marker are
    remembered, so memory is bounded by active cases when the stream carries markers.
    """
    last_org: dict[str, str] = {}
    for ev in events:
        if ev.is_marker:
            org = last_org.pop(ev.case_id, None)
            yield ev.with_org(org if org is not None else assigner.org_of(ev))
        else:
            org = assigner.org_of(ev)
            last_org[ev.case_id] = org
            yield ev.with_org(org)


def split(events: Iterable[Event], assigner: OrgAssigner) -> dict[str, list[Event]]:
    """The per-organization streams, each in the original order."""
    out: dict[str, list[Event]] = {org: [] for org in assigner.orgs}
    for ev in assign(events, assigner):
        out.setdefault(ev.org, []).append(ev)
    return out
