"""The demo's stream: the bundled order-to-cash net simulated across three organizations.

The simulator gives the control flow and times (seeded, a little noise so that some cases
deviate); this module adds what real events carry and what must never leave in clear: long
order ids, clerks and drivers by name, order amounts, customers' e-mail addresses, GPS
positions, and a free-text delivery note with the recipient's name and phone number (the
carrier's policy pseudonymises drivers and scrubs the note).

>>> events = simulate_orders(cases=3, seed=5)
>>> sorted({e.case_id for e in events})
['order-05-000001', 'order-05-000002', 'order-05-000003']
>>> first = events[0]
>>> first.activity, first.attr("amount") is not None, first.resource is not None
('Create Order', True, True)
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec

from procvault.demo.bundle import Bundle
from procvault.monitor.event import Event, normalize_attributes

__all__ = [
    "ATTRIBUTE_KEYS",
    "MIN_NEEDLE",
    "needles",
    "share_sizes",
    "simulate_orders",
    "write_stream",
]

#: Shortest string the self-check looks for in clear (bytes).
MIN_NEEDLE = 6

#: Attribute keys the demo's events carry (the self-check looks for their values in clear).
ATTRIBUTE_KEYS = ("amount", "customer_email", "delivery_note", "driver", "gps_position")

_CLERKS = ("Olivia Bennett", "Lucas Moreau", "Hannah Keller", "Mateo Alvarez")
_DRIVERS = ("Ethan Walker", "Sofia Romano", "Noah Fischer", "Emma Dubois")
_RECIPIENTS = ("Grace Turner", "Daniel Schneider", "Chloe Martin", "Samuel Rossi")
_SHIP = "Ship Goods"
_CREATE = "Create Order"


def _enrich(ev: Event, n: int, seed: int, rnd: random.Random) -> Event:
    """The event with its demo identity and data (deterministic per seed)."""
    case = f"order-{seed:02d}-{n:06d}"
    attrs: dict[str, object] = {}
    if ev.activity == _CREATE:
        attrs["amount"] = rnd.choice((120, 480, 950, 2300, 5200, 7400, 12800))
        attrs["customer_email"] = f"buyer.{n:06d}@example-shop.test"
        resource = rnd.choice(_CLERKS)
    elif ev.activity == _SHIP:
        driver = rnd.choice(_DRIVERS)
        who = rnd.choice(_RECIPIENTS)
        attrs["driver"] = driver
        attrs["gps_position"] = f"41.{rnd.randrange(10**5):05d},-87.{rnd.randrange(10**5):05d}"
        attrs["delivery_note"] = (
            f"Leave with {who}, call (312) 555-{rnd.randrange(10**4):04d} before arrival"
        )
        resource = driver
    else:
        resource = rnd.choice(_CLERKS)
    return msgspec.structs.replace(
        ev, case_id=case, resource=resource, attributes=normalize_attributes(attrs)
    )


def simulate_orders(
    cases: int = 400, *, seed: int = 1, bundle: Bundle | None = None, noise: float = 0.08
) -> list[Event]:
    """``cases`` simulated orders of the bundled net (400 orders an hour, about five minutes
    per step: a busy shop, so that each hourly DP pane counts hundreds of orders), in time
    order, with the demo's identities and data; no end markers."""
    from procvault.config.models import load_model
    from procvault.generators.simulate import Simulator

    b = bundle or Bundle.default()
    model = load_model(b.model)
    sim = Simulator(
        model,
        seed=seed,
        arrival_rate=400.0,
        mean_duration=300.0,
        noise=noise,
        noise_kinds=("skip", "swap"),
        max_cases=cases,
        case_prefix="sim-",
    )
    rnd = random.Random(f"procvault.demo:{seed}")
    out = [_enrich(e, int(e.case_id.removeprefix("sim-")), seed, rnd) for e in sim]
    out.sort(key=lambda e: e.timestamp)
    return out


def write_stream(events: Iterable[Event], path: Path) -> int:
    """Write the stream as an XES log (what the agents replay and ``procvault monitor``
    reads); return the number of cases."""
    from procvault.generators.xes_write import write_xes

    return write_xes(events, path)


def share_sizes(log: Path, split_map: Path) -> dict[str, int]:
    """Per organization, how many events and end markers its agent sends of ``log`` (as
    ``procvault agent --split-map --end-markers`` splits it)."""
    from collections import Counter

    from procvault.generators.split import ActivityMapping, assign
    from procvault.generators.xes import read_xes

    events = assign(read_xes(log).replay(end_markers=True), ActivityMapping.from_file(split_map))
    return dict(Counter(e.org for e in events))


def needles(events: Sequence[Event]) -> tuple[set[bytes], set[bytes]]:
    """``(data, activities)``: every case id, resource and text attribute value of the
    stream, and every activity name, as UTF-8: what the self-check looks for in clear. Only
    strings of :data:`MIN_NEEDLE` bytes or more: shorter ones (and numbers) turn up by chance
    in megabytes of ciphertext.

    >>> ev = Event.create("order-01-000001", "Ship Goods", __import__("datetime").datetime(
    ...     2024, 1, 1, tzinfo=__import__("datetime").UTC), resource="Emma Dubois",
    ...     attributes={"amount": 5200, "driver": "Emma Dubois", "gps_position": "41.1,-87.2"})
    >>> data, acts = needles([ev])
    >>> sorted(data), sorted(acts)
    ([b'41.1,-87.2', b'Emma Dubois', b'order-01-000001'], [b'Ship Goods'])
    """
    data: set[bytes] = set()
    activities: set[bytes] = set()
    for e in events:
        data.add(e.case_id.encode())
        if len(e.activity) >= MIN_NEEDLE:
            activities.add(e.activity.encode())
        if e.resource and len(e.resource) >= MIN_NEEDLE:
            data.add(e.resource.encode())
        for _k, v in e.attributes:
            if isinstance(v, str) and len(v) >= MIN_NEEDLE:
                data.add(v.encode())
    return data, activities
