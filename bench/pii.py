"""PII scrubbing: precision and recall per kind on a synthetic fixture, and events/s.

Prints one JSON object. The fixture (``tests/fixtures/pii_freetext.jsonl``) is free text with
planted e-mail addresses, phone numbers (NL and US formats), IBANs (NL, DE, BE), card numbers
(Visa, Mastercard, Amex), national ids (US SSN, NL BSN) and person names, next to decoys that
look alike: wrong IBAN or Luhn check digits, order and tracking numbers, dates and times,
amounts, postcodes, and words that are also names ("Mark the parcel"). Each record lists the
planted spans. A finding is a true positive when it overlaps a planted span of the same kind
(each planted span counts once).

Throughput: every fixture text becomes the ``note`` attribute of one event, run through a policy
stage that scrubs (fresh engine per run, so no cached results), median of ``--runs``.

    .venv/bin/python bench/pii.py [--runs 3] [--repeat 4]
    .venv/bin/python bench/pii.py --write-fixture   # regenerate the fixture (deterministic)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import phonenumbers
from stdnum import iban as std_iban
from stdnum import luhn
from stdnum.nl import bsn as std_bsn
from stdnum.us import ssn as std_ssn

from procvault.monitor.event import Event
from procvault.organization.policy import PolicyEngine, Scrubber, ScrubSettings, parse_policy

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "pii_freetext.jsonl"
NAMES_FILE = ROOT / "tests" / "fixtures" / "pii_names.txt"
KINDS = ("email", "phone", "iban", "card", "national_id", "name")
PHONE_REGIONS = ("NL", "US")

FIRST = [
    "Jan",
    "Maria",
    "Emma",
    "Noah",
    "Sophie",
    "Daan",
    "Lucas",
    "Julia",
    "Sanne",
    "Pieter",
    "Mark",
    "Rose",
    "Carlos",
    "Aisha",
    "Wei",
    "Olga",
    "Bill",
    "Grace",
    "Tom",
    "Fatima",
]
LAST = [
    "de Vries",
    "Jansen",
    "Bakker",
    "Visser",
    "Smith",
    "Garcia",
    "van den Berg",
    "Mulder",
    "Johnson",
    "Nguyen",
    "Kowalski",
    "El Amrani",
    "Peters",
    "O'Brien",
    "Dijkstra",
]
DOMAINS = ["example.org", "mail.example.com", "zorg-example.nl", "example.co.uk"]

TEMPLATES = [
    "Patient {name} called from {phone} about the appointment.",
    "Refund to {iban} requested by {email}.",
    "Card {card} declined; customer asked to call back on {phone}.",
    "Contact {name} <{email}> for the invoice.",
    "BSN {bsn} checked at registration by the front desk.",
    "SSN {ssn} on file for {name}.",
    "Terugbellen naar {phone} (mevr. {name}).",
    "Betaling ontvangen van {iban}, omschrijving factuur 2024-{small}.",
    "{name} asked to send the contract to {email} before Friday.",
    "Paid with {card} at 14:{minute}, receipt {order}.",
    "Driver {name} reachable on {phone}; delivery window 09:00-12:00.",
    "Please update IBAN to {iban} for supplier {order}.",
    "ID check: {bsn}; guardian {name}, phone {phone}.",
    "Escalated by {email}: customer {name} disputes charge on {card}.",
]
DECOYS = [
    "Order {order} shipped on 2024-03-{day} 14:{minute}, {small} boxes, total EUR {amount}.",
    "Tracking number 1Z{order}{small} handed to the carrier.",
    "Invoice {order} paid; reference {bigorder}.",
    "Room {small}B, bed {digit}; ward closed 2024-11-{day} 22:00 until 06:00.",
    "Version 10.{small}.{digit} installed on terminal {order}.",
    "Deliver to 1012 AB Amsterdam, dock {small}.",
    "Old account NL12 ABNA 0123 4567 89 closed (wrong number).",
    "Test card 4111 1111 1111 1112 rejected by validation.",
    "Batch {nine} released; lot {order}.",
    "Mark the parcel as fragile and keep it upright.",
    "Bill sent to the customer on {day} March.",
    "Call centre queue {small}: average wait {digit} min at 08:{minute}.",
    "Temperature 37.{digit} C at 2024-05-{day} 10:{minute}; CRP {small}.",
    "Grace period of {small} days granted.",
]


# ----------------------------------------------------------------------------- fixture
def _digits(r: random.Random, n: int) -> str:
    return "".join(r.choice("0123456789") for _ in range(n))


def _phone(r: random.Random) -> str:
    while True:
        kind = r.randrange(5)
        if kind == 0:
            s = f"06-{r.randint(1, 9)}{_digits(r, 7)}"
        elif kind == 1:
            s = f"+31 6 {r.randint(1, 9)}{_digits(r, 3)} {_digits(r, 4)}"
        elif kind == 2:
            s = f"020 {r.randint(2, 9)}{_digits(r, 2)} {_digits(r, 4)}"
        elif kind == 3:
            area = r.choice(["212", "415", "312", "617"])
            s = f"({area}) {r.randint(2, 9)}{_digits(r, 2)}-{_digits(r, 4)}"
        else:
            area = r.choice(["202", "646", "503"])
            s = f"+1 {area} {r.randint(2, 9)}{_digits(r, 2)} {_digits(r, 4)}"
        region = "US" if s.startswith(("(", "+1")) else "NL"
        if phonenumbers.is_valid_number(phonenumbers.parse(s, region)):
            return s


def _iban(r: random.Random) -> str:
    while True:
        cc = r.choice(["NL", "DE", "BE"])
        if cc == "NL":
            bban = r.choice(["ABNA", "RABO", "INGB"]) + _digits(r, 10)
        elif cc == "DE":
            bban = _digits(r, 18)
        else:
            bban = _digits(r, 12)
        check = std_iban.calc_check_digits(f"{cc}00{bban}")
        compact = f"{cc}{check}{bban}"
        if std_iban.is_valid(compact):
            if r.random() < 0.7:
                return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
            return compact


def _card(r: random.Random) -> str:
    kind = r.randrange(3)
    if kind == 0:
        body = "4" + _digits(r, 14)
    elif kind == 1:
        body = str(r.randint(51, 55)) + _digits(r, 13)
    else:
        body = r.choice(["34", "37"]) + _digits(r, 12)
    number = body + luhn.calc_check_digit(body)
    sep = r.choice([" ", "-", ""])
    if len(number) == 15:
        return sep.join([number[:4], number[4:10], number[10:]])
    return sep.join(number[i : i + 4] for i in range(0, 16, 4))


def _ssn(r: random.Random) -> str:
    while True:
        s = f"{r.randint(1, 899):03d}-{r.randint(1, 99):02d}-{r.randint(1, 9999):04d}"
        if std_ssn.is_valid(s):
            return s


def _bsn(r: random.Random) -> str:
    while True:
        body = _digits(r, 8)
        total = sum(int(d) * (9 - i) for i, d in enumerate(body))
        check = total % 11
        if check < 10 and body[0] != "0":
            number = body + str(check)
            if std_bsn.is_valid(number):
                return number if r.random() < 0.6 else f"{number[:4]}.{number[4:6]}.{number[6:]}"


def _name(r: random.Random) -> str:
    return r.choice(FIRST) + ("" if r.random() < 0.2 else " " + r.choice(LAST))


def _email(r: random.Random) -> str:
    first = r.choice(FIRST).lower()
    last = r.choice(LAST).lower().replace(" ", "").replace("'", "")
    return f"{first}.{last}{r.choice(['', str(r.randint(1, 99))])}@{r.choice(DOMAINS)}"


_PLANTERS = {
    "name": ("name", _name),
    "phone": ("phone", _phone),
    "iban": ("iban", _iban),
    "email": ("email", _email),
    "card": ("card", _card),
    "ssn": ("national_id", _ssn),
    "bsn": ("national_id", _bsn),
}


def _fill(template: str, r: random.Random) -> tuple[str, list[dict[str, Any]]]:
    """Fill a template left to right, recording where each planted value lands."""
    out: list[str] = []
    spans: list[dict[str, Any]] = []
    pos = 0
    rest = template
    while "{" in rest:
        before, _, tail = rest.partition("{")
        field, _, rest = tail.partition("}")
        out.append(before)
        pos += len(before)
        if field in _PLANTERS:
            kind, make = _PLANTERS[field]
            value = make(r)
            spans.append({"kind": kind, "start": pos, "end": pos + len(value)})
        else:
            value = {
                "small": lambda: str(r.randint(2, 99)),
                "digit": lambda: str(r.randint(1, 9)),
                "minute": lambda: f"{r.randint(0, 59):02d}",
                "day": lambda: f"{r.randint(10, 28)}",
                "order": lambda: str(r.randint(10000, 999999)),
                "bigorder": lambda: _digits(r, 12),
                "nine": lambda: _digits(r, 9),
                "amount": lambda: f"{r.randint(1, 9)},{r.randint(100, 999)}.{r.randint(10, 99)}",
            }[field]()
        out.append(value)
        pos += len(value)
    out.append(rest)
    return "".join(out), spans


def build_fixture(n: int = 600, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` deterministic records: two thirds with planted PII, one third decoys only."""
    r = random.Random(seed)
    records = []
    for i in range(n):
        template = r.choice(TEMPLATES) if i % 3 else r.choice(DECOYS)
        text, spans = _fill(template, r)
        records.append({"id": i, "text": text, "pii": spans})
    return records


def names_list() -> list[str]:
    """The configured person names: every first name, alone and with every last name."""
    return sorted({*FIRST, *(f"{f} {last}" for f in FIRST for last in LAST)})


def write_fixture() -> None:
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    with FIXTURE.open("w", encoding="utf-8") as fh:
        for rec in build_fixture():
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    NAMES_FILE.write_text(
        "# person names for the PII fixture (bench/pii.py --write-fixture)\n"
        + "\n".join(names_list())
        + "\n",
        encoding="utf-8",
    )


# ----------------------------------------------------------------------------- evaluation
def load_fixture(path: Path = FIXTURE) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_names(path: Path = NAMES_FILE) -> tuple[str, ...]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple(ln.strip() for ln in lines if ln.strip() and not ln.startswith("#"))


def scrub_settings(names: tuple[str, ...]) -> ScrubSettings:
    return ScrubSettings(phone_regions=PHONE_REGIONS, names=names)


def evaluate(records: list[dict[str, Any]], scrubber: Scrubber) -> dict[str, Any]:
    """Precision and recall per kind (overlap with a planted span of the same kind)."""
    tp = dict.fromkeys(KINDS, 0)
    fp = dict.fromkeys(KINDS, 0)
    fn = dict.fromkeys(KINDS, 0)
    for rec in records:
        planted = [(p["kind"], p["start"], p["end"]) for p in rec["pii"]]
        matched = [False] * len(planted)
        for f in scrubber.find(rec["text"]):
            hit = next(
                (
                    i
                    for i, (k, s, e) in enumerate(planted)
                    if not matched[i] and k == f.kind and f.start < e and s < f.end
                ),
                None,
            )
            if hit is None:
                fp[f.kind] += 1
            else:
                matched[hit] = True
                tp[f.kind] += 1
        for (k, _, _), m in zip(planted, matched, strict=True):
            if not m:
                fn[k] += 1

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    per_kind = {
        k: {
            "planted": tp[k] + fn[k],
            "found": tp[k] + fp[k],
            "tp": tp[k],
            "fp": fp[k],
            "fn": fn[k],
            "precision": ratio(tp[k], tp[k] + fp[k]),
            "recall": ratio(tp[k], tp[k] + fn[k]),
        }
        for k in KINDS
    }
    t, p, n = sum(tp.values()), sum(fp.values()), sum(fn.values())
    return {
        "per_kind": per_kind,
        "overall": {"precision": ratio(t, t + p), "recall": ratio(t, t + n)},
    }


def _events(records: list[dict[str, Any]], repeat: int) -> list[Event]:
    t0 = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
    out = []
    for k in range(repeat):
        for rec in records:
            # A round marker keeps every text distinct, so no run hits the scrubber's cache.
            out.append(
                Event.create(
                    f"case-{rec['id']}",
                    "Note",
                    t0 + timedelta(seconds=rec["id"]),
                    org="org",
                    attributes={"note": f"{rec['text']} #{k}", "status": "open"},
                )
            )
    return out


def throughput(
    records: list[dict[str, Any]], names: tuple[str, ...], runs: int, repeat: int
) -> dict[str, Any]:
    policy = parse_policy(
        {
            "policy": "pii-bench",
            "version": 1,
            "org": "org",
            "mode": "denylist",
            "consent": {"scope": "bench"},
            "scrub": {"phone_regions": list(PHONE_REGIONS), "names": list(names)},
        }
    )
    events = _events(records, repeat)
    rates = []
    for _ in range(runs):
        engine = PolicyEngine(policy, scrub=True)
        apply = engine.apply
        start = time.perf_counter()
        for ev in events:
            apply(ev)
        rates.append(len(events) / (time.perf_counter() - start))
    return {
        "events": len(events),
        "events_per_s_median": round(statistics.median(rates)),
        "events_per_s_runs": [round(x) for x in rates],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=4, help="fixture passes per timed run")
    ap.add_argument("--write-fixture", action="store_true", help="regenerate the fixture")
    args = ap.parse_args()
    if args.write_fixture:
        write_fixture()
    records = load_fixture()
    names = load_names()
    quality = evaluate(records, Scrubber(scrub_settings(names)))
    out = {
        "load_average": round(os.getloadavg()[0], 2),
        "fixture": str(FIXTURE.relative_to(ROOT)),
        "records": len(records),
        "records_with_pii": sum(1 for r in records if r["pii"]),
        "names_configured": len(names),
        "phone_regions": list(PHONE_REGIONS),
        "national_ids": ["us_ssn", "nl_bsn"],
        **quality,
        "throughput_scrub_on": throughput(records, names, args.runs, args.repeat),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
