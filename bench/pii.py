"""PII scrubbing: precision and recall per kind on a generated fixture, false positives on the
shared logs, and events/s.

Prints one JSON object. The fixture (``tests/fixtures/pii_freetext.jsonl``, 1,000 records,
seeded, regenerated with ``--write-fixture``) is free text in English, Dutch, Italian, German,
French and Spanish with planted values, each record listing its planted spans:

* person names from 14 languages (Italian, Dutch, German, English, French, Spanish, Turkish,
  and transliterated Chinese, Japanese, Russian, Greek, Arabic, Korean and Hindi), written in
  full, as a first name alone, after a title, as initials and surname, or surname first. The
  name lists below are written by hand for this bench, not taken from the scrubber's dataset
  (Faker), so recall measures the dataset and the rules, not a copy of them;
* phone numbers from 14 regions in international format (``+CC``, ``00CC``, ``(+CC)``, with
  spaces, dashes, dots or no-break spaces) and, for the configured regions (NL, US), in
  national format, all valid for libphonenumber;
* e-mail addresses, IBANs (NL, DE, BE, IT, FR, ES), card numbers (Visa, Mastercard, Amex),
  national ids (US SSN, NL BSN);
* decoys without personal data, by class: words that are also names ("Mark the parcel",
  "Grace period", "in May"), the shared logs' activity names, medical terms and eponyms
  ("Foley catheter", "Parkinson's disease"), numbers (wrong IBAN and Luhn digits, order,
  batch and tracking numbers, dates, times, amounts, postcodes, versions).

A finding is a true positive when it overlaps a planted span of the same kind (each planted span
counts once). Scrubbing runs with ``phone_regions: [NL, US]`` and **no name list**.

False positives on the shared logs: every distinct activity, resource and attribute value of
Sepsis, helpdesk and receipt (numbers as they print), scanned with scrubbing on.

Throughput: every fixture text becomes the ``note`` attribute of one event, run through a policy
stage that scrubs (fresh engine per run, so no cached results), median of ``--runs``.

``--baseline DIR`` (a git worktree of an earlier commit with its own ``.venv``) adds, from the
same run: this bench's quality figures with DIR's scrubber, and ``bench/policy.py`` run
alternately with DIR's interpreter and this one (``--policy-rounds`` times each; medians).

    .venv/bin/python bench/pii.py [--runs 3] [--repeat 4] [--baseline /tmp/base-pii]
    .venv/bin/python bench/pii.py --write-fixture   # regenerate the fixture (deterministic)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("PM4PY_SHOW_PROGRESS_BAR", "false")

import phonenumbers
from stdnum import iban as std_iban
from stdnum import luhn
from stdnum.nl import bsn as std_bsn
from stdnum.us import ssn as std_ssn

from procvault.monitor.event import Event
from procvault.organization.policy import PolicyEngine, Scrubber, ScrubSettings, parse_policy

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "pii_freetext.jsonl"
SHARED = Path(os.environ.get("PROCVAULT_SHARED_DATA", ROOT.parent / "shared" / "data"))
LOGS = ("sepsis_cases", "helpdesk", "receipt")
KINDS = ("email", "phone", "iban", "card", "national_id", "name")
PHONE_REGIONS = ("NL", "US")
N_RECORDS = 1000
SEED = 22


# ----------------------------------------------------------------------------- names (by hand)
# (first names, surnames) per language; surnames of Russian women take -a.
def _words(text: str) -> list[str]:
    """Names separated by ``|`` (when a name has spaces) or by spaces."""
    return text.split("|") if "|" in text else text.split()


NAMES: dict[str, tuple[list[str], list[str]]] = {
    "it": (
        _words(
            "Giulia Francesca Chiara Alessandro Lorenzo Matteo Giuseppe Federica Martina Davide "
            "Simone Elena Riccardo Valentina Giovanni Beatrice"
        ),
        _words(
            "Rossi|Russo|Ferrari|Esposito|Bianchi|Romano|Colombo|Ricci|Marino|Greco|Bruno|Gallo|"
            "Conti|De Luca|Mancini|Costa|Giordano|Rizzo|Lombardi|Moretti"
        ),
    ),
    "nl": (
        _words(
            "Daan Sem Lieke Sanne Bram Thijs Femke Joris Noor Ruud Marieke Willem Annelies Pieter "
            "Jeroen Maaike"
        ),
        _words(
            "de Jong|Jansen|de Vries|van den Berg|van Dijk|Bakker|Visser|Smit|Meijer|de Boer|"
            "Mulder|"
            "de Groot|Bos|Vos|Peters|Hendriks|van Leeuwen|Dekker|Brouwer|van der Meer"
        ),
    ),
    "de": (
        _words(
            "Lukas Leon Maximilian Hannah Lena Jonas Felix Anna-Lena Katharina Jürgen Uwe Sabine "
            "Stefanie Dieter Matthias Ursula"
        ),
        _words(
            "Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Schäfer "
            "Koch Bauer Richter Klein Wolf Schröder Neumann Schwarz Zimmermann"
        ),
    ),
    "en": (
        _words(
            "Oliver Emily Jack Charlotte Harry Amelia George Olivia James Jessica Thomas Sophie "
            "William Hannah Michael Sarah"
        ),
        _words(
            "Smith Jones Williams Taylor Brown Davies Evans Wilson Thomas Johnson Roberts Walker "
            "Wright Robinson Thompson White Hughes Edwards Green Hall"
        ),
    ),
    "fr": (
        _words(
            "Camille Léa Chloé Manon Hugo Louis Gabriel Arthur Jules Inès Théo Mathilde Baptiste "
            "Aurélie Élodie Guillaume"
        ),
        _words(
            "Martin Bernard Dubois Durand Lefebvre Moreau Laurent Simon Michel Leroy Roux Fournier "
            "Girard Bonnet Dupont Lambert Fontaine Rousseau Vincent Mercier"
        ),
    ),
    "es": (
        _words(
            "Lucía Martina Pablo Alejandro Daniel Javier Carmen Sergio Paula Álvaro Marta Raúl "
            "Nuria Iker Ainhoa Rocío"
        ),
        _words(
            "García Rodríguez González Fernández López Martínez Sánchez Pérez Gómez Martín Jiménez "
            "Ruiz Hernández Díaz Moreno Muñoz Álvarez Romero Navarro Torres"
        ),
    ),
    "tr": (
        _words("Mehmet Ayşe Mustafa Emine Ahmet Fatma Elif Burak Zeynep Emre Can Selin"),
        _words("Yılmaz Kaya Demir Şahin Çelik Yıldız Yıldırım Öztürk Aydın Özdemir Arslan Doğan"),  # noqa: RUF001
    ),
    "zh": (
        _words("Wei Fang Xiuying Na Min Jing Lei Yang Jun Yong Jie Tao Ming Chao Xia Hui"),
        _words(
            "Wang Li Zhang Liu Chen Yang Huang Zhao Wu Zhou Xu Sun Ma Zhu Hu Guo He Lin Gao Luo"
        ),
    ),
    "ja": (
        _words(
            "Haruto Yuto Sota Yui Hina Aoi Riku Sakura Kenji Takeshi Yuki Naoko Hiroshi Akiko "
            "Daiki Mei"
        ),
        _words(
            "Sato Suzuki Takahashi Tanaka Watanabe Ito Yamamoto Nakamura Kobayashi Kato Yoshida "
            "Yamada Sasaki Yamaguchi Matsumoto Inoue Kimura Hayashi Shimizu Yamazaki"
        ),
    ),
    "ru": (
        _words(
            "Dmitry Sergey Aleksandr Olga Natalya Ekaterina Ivan Mikhail Anastasia Yulia Andrei "
            "Tatiana Vladimir Svetlana Nikolai Irina"
        ),
        _words(
            "Ivanov Smirnov Kuznetsov Popov Vasiliev Petrov Sokolov Mikhailov Novikov Fedorov "
            "Morozov Volkov Alekseev Lebedev Semenov Egorov Pavlov Kozlov Stepanov Nikolaev"
        ),
    ),
    "el": (
        _words(
            "Giorgos Dimitris Konstantinos Nikos Eleni Katerina Vasiliki Ioannis Panagiotis "
            "Christos Angeliki Spyros Despina Stavros"
        ),
        _words(
            "Papadopoulos Papadakis Georgiou Nikolaidis Pappas Oikonomou Karagiannis Vlachos "
            "Antoniou Dimitriou Ioannou Christodoulou Konstantinidis Makris Alexiou"
        ),
    ),
    "ar": (
        _words(
            "Mohammed Ahmed Fatima Aisha Omar Youssef Khadija Hassan Ali Layla Karim Samira "
            "Ibrahim "
            "Nour Rania Tariq"
        ),
        _words(
            "Al-Farsi|Haddad|El Amrani|Benali|Khalil|Mansour|Nasser|Saleh|Hamdan|Aziz|Rahman|"
            "Hussein|Abdullah|Qasim|Darwish|El Idrissi|Bouzid|Chaouki|Mahmoud|Al-Sayed"
        ),
    ),
    "ko": (
        _words(
            "Min-jun Seo-yeon Ji-woo Ha-eun Do-yun Ji-ho Su-bin Ye-jin Hyun-woo Eun-ji Jae-won "
            "Soo-ah"
        ),
        _words("Kim Lee Park Choi Jung Kang Cho Yoon Jang Lim Han Oh Seo Shin Kwon"),
    ),
    "hi": (
        _words(
            "Priya Rahul Ananya Arjun Aditi Vikram Sneha Rohan Pooja Amit Kavya Sanjay Neha Ravi "
            "Divya Karan"
        ),
        _words(
            "Sharma Verma Gupta Singh Kumar Patel Reddy Iyer Nair Mehta Joshi Chopra Malhotra "
            "Kapoor "
            "Bose Rao Das Mishra Agarwal Banerjee"
        ),
    ),
}
RU_FEMALE = {"Olga", "Natalya", "Ekaterina", "Anastasia", "Yulia", "Tatiana", "Svetlana", "Irina"}
#: Languages whose names are often written surname first.
SURNAME_FIRST = {"zh", "ja", "ko", "it"}
TITLES = {
    "it": ["Sig.", "Sig.ra", "Dott.", "Dott.ssa"],
    "nl": ["dhr.", "mevr.", "mw."],
    "de": ["Herr", "Frau", "Dr."],
    "en": ["Mr", "Mrs", "Ms", "Dr"],
    "fr": ["Mme", "Monsieur", "Madame"],
    "es": ["Sr.", "Sra.", "Dra."],
}
DOMAINS = [
    "example.org",
    "mail.example.com",
    "zorg-example.nl",
    "example.co.uk",
    "posta.example.it",
]

# ----------------------------------------------------------------------------- phones
#: Regions whose numbers are planted in international format (national format for the
#: configured regions only).
INTL_REGIONS = ["IT", "NL", "DE", "FR", "ES", "GB", "BE", "US", "CH", "PL", "IN", "BR", "JP", "AU"]

# ----------------------------------------------------------------------------- templates
TEMPLATES = [
    "Patient {name} called from {phone} about the appointment.",
    "Refund to {iban} requested by {email}.",
    "Card {card} declined; customer asked to call back on {phone}.",
    "Contact {name} <{email}> for the invoice.",
    "BSN {bsn} checked at registration by the front desk.",
    "SSN {ssn} on file for {name}.",
    "Terugbellen naar {phone} ({name}).",
    "Betaling ontvangen van {iban}, omschrijving factuur 2024-{small}.",
    "{name} asked to send the contract to {email} before Friday.",
    "Paid with {card} at 14:{minute}, receipt {order}.",
    "Driver {name} reachable on {phone}; delivery window 09:00-12:00.",
    "Please update IBAN to {iban} for supplier {order}.",
    "ID check: {bsn}; guardian {name}, phone {phone}.",
    "Escalated by {email}: customer {name} disputes charge on {card}.",
    "Il paziente {name} ha chiamato dal numero {phone}.",
    "Chiamare {name} al {phone} per il referto.",
    "Rückruf an {name} unter {phone} erbeten.",
    "Termin mit {name} verschoben, Tel. {phone}.",
    "Rappeler {name} au {phone} avant midi.",
    "Llamar a {name} al {phone} mañana.",
    "{name} belde over de uitslag; nummer {phone}.",
    "Seen in ER Triage by {name}; family contact {phone}.",
    "Visit of {name} ({phone}) after Admission IC.",
    "Note from {name}: please mail {email}.",
    "{name} and {name} share room {small}.",
    "Overdracht aan {name}, bereikbaar via {email}.",
]
DECOYS: dict[str, list[str]] = {
    "name_words": [
        "Mark the parcel as fragile and keep it upright.",
        "Bill sent to the customer on {day} March.",
        "Grace period of {small} days granted.",
        "Will call back after the lab results.",
        "Rose ward closed for cleaning until {day} May.",
        "Hope to resolve the ticket before June.",
        "Summer schedule starts in July; the Dawn shift moves to 06:00.",
        "Follow-up planned for April {day}.",
        "Sunny weather delayed the Amber alert test.",
        "Frank discussion with the supplier about the invoice.",
        "Faith in the new process is low.",
        "Ruby release notes sent to the Customer contact group.",
        "Victoria line closed; courier took the Florence route.",
        "Jack the car and change the tyre.",
        "Sterling prices rose by {small} percent.",
    ],
    "activities": [
        "ER Registration, then ER Triage and ER Sepsis Triage.",
        "Admission NC after IV Liquid and IV Antibiotics.",
        "Release A, Release B and Return ER.",
        "Take in charge ticket; Resolve SW anomaly; Closed.",
        "Assign seriousness, Wait, Require upgrade.",
        "T02 Check confirmation of receipt by Group {small}.",
        "T06 Determine necessity of stop advice (case:channel Desk).",
        "Insert ticket for Value {small}, product Value {digit}.",
        "Schedule intervention with Resource{small}.",
        "Confirmation of receipt via Internet, department General.",
    ],
    "medical": [
        "Foley catheter placed; Leucocytes {small}.{digit}, CRP {small}.",
        "History of Parkinson's disease and Crohn's disease.",
        "Glasgow Coma Scale {digit}, Apgar score {digit}.",
        "Gram stain negative; LacticAcid {digit}.{digit}.",
        "Suspected Graves' disease, Addison crisis ruled out.",
        "Hodgkin lymphoma in remission; Down syndrome noted.",
        "Hypotensie en Oligurie bij opname, SIRS criteria 2 or more.",
        "Whipple procedure planned; Babinski sign absent.",
        "Alzheimer screening: MMSE {small}.",
        "DiagnosticBlood, DiagnosticECG and DiagnosticXthorax requested.",
    ],
    "numbers": [
        "Order {order} shipped on 2024-03-{day} 14:{minute}, {small} boxes, total EUR {amount}.",
        "Tracking number 1Z{order}{small} handed to the carrier.",
        "Invoice {order} paid; reference {bigorder}.",
        "Room {small}B, bed {digit}; ward closed 2024-11-{day} 22:00 until 06:00.",
        "Version 10.{small}.{digit} installed on terminal {order}.",
        "Deliver to 1012 AB Amsterdam, dock {small}.",
        "Old account NL12 ABNA 0123 4567 89 closed (wrong number).",
        "Test card 4111 1111 1111 1112 rejected by validation.",
        "Batch {nine} released; lot {order}.",
        "Call centre queue {small}: average wait {digit} min at 08:{minute}.",
        "Temperature 37.{digit} C at 2024-05-{day} 10:{minute}; CRP {small}.",
        "Price change +{small}.{digit}% since 2023-01-{day}.",
    ],
}


# ----------------------------------------------------------------------------- fixture
def _digits(r: random.Random, n: int) -> str:
    return "".join(r.choice("0123456789") for _ in range(n))


def _random_number(r: random.Random, region: str) -> phonenumbers.PhoneNumber:
    """A valid number of ``region``: an example number with its last digits redrawn."""
    kind = r.choice([phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE])
    example = phonenumbers.example_number_for_type(region, kind)
    assert example is not None
    national = phonenumbers.national_significant_number(example)
    for tries in range(10_000):
        keep = 4 if tries < 200 else 3  # redraw more digits if the last four never do
        body = national[:keep] + _digits(r, len(national) - keep)
        num = phonenumbers.parse(f"+{example.country_code}{body}", None)
        if phonenumbers.is_valid_number(num):
            return num
    raise RuntimeError(f"no valid {region} number drawn")


def _phone(r: random.Random) -> tuple[str, str]:
    """A phone number as text, and its form (``intl`` or ``national``)."""
    fmt = phonenumbers.PhoneNumberFormat
    if r.random() < 0.3:
        region = r.choice(PHONE_REGIONS)
        num = _random_number(r, region)
        text = phonenumbers.format_number(num, fmt.NATIONAL)
        if region == "NL" and r.random() < 0.5:
            text = text.replace(" ", "-", 1)
        return text, "national"
    region = r.choice(INTL_REGIONS)
    num = _random_number(r, region)
    text = phonenumbers.format_number(num, fmt.INTERNATIONAL)
    style = r.randrange(6)
    if style == 1:
        text = phonenumbers.format_number(num, fmt.E164)
    elif style == 2:
        text = "00" + text[1:]
    elif style == 3:
        cc = str(num.country_code)
        text = f"(+{cc}) " + text[len(cc) + 2 :]
    elif style == 4:
        text = text.replace(" ", "\u00a0")
    elif style == 5:
        text = text.replace(" ", "-" if r.random() < 0.5 else ".")
    return text, "intl"


def _iban(r: random.Random) -> str:
    while True:
        cc = r.choice(["NL", "DE", "BE", "IT", "FR", "ES"])
        if cc == "NL":
            bban = r.choice(["ABNA", "RABO", "INGB"]) + _digits(r, 10)
        elif cc == "DE":
            bban = _digits(r, 18)
        elif cc == "BE":
            bban = _digits(r, 12)
        elif cc == "IT":
            bban = r.choice("ABCDEFGHIJ") + _digits(r, 10) + _digits(r, 12)
        elif cc == "FR":
            bban = _digits(r, 23)
        else:
            bban = _digits(r, 20)
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


def _surname(lang: str, first: str, last: str) -> str:
    if lang == "ru" and first in RU_FEMALE:
        return last + "a"
    return last


def _name(r: random.Random, sentence_start: bool) -> tuple[str, str, str]:
    """A person name as text, its language and its form."""
    lang = r.choice(sorted(NAMES))
    firsts, lasts = NAMES[lang]
    first, last = r.choice(firsts), r.choice(lasts)
    last = _surname(lang, first, last)
    roll = r.random()
    if roll < 0.45:
        text, form = f"{first} {last}", "full"
    elif roll < 0.62:
        text, form = first, "first"
    elif roll < 0.72 and lang in TITLES:
        text, form = f"{r.choice(TITLES[lang])} {last}", "title"
    elif roll < 0.80:
        text, form = f"{first[0]}. {last}", "initial"
    elif roll < 0.90 and lang in SURNAME_FIRST:
        text, form = f"{last} {first}", "surname_first"
    else:
        middle = r.choice(firsts)
        text, form = (
            (f"{first} {middle} {last}", "middle")
            if middle != first
            else (
                f"{first} {last}",
                "full",
            )
        )
    if sentence_start and text[0].islower():
        text = text[0].upper() + text[1:]
    return text, lang, form


def _email(r: random.Random) -> str:
    lang = r.choice(sorted(NAMES))
    firsts, lasts = NAMES[lang]
    first = r.choice(firsts).lower()
    last = r.choice(lasts).lower().replace(" ", "").replace("'", "")
    local = f"{first}.{last}{r.choice(['', str(r.randint(1, 99))])}"
    ascii_local = "".join(c for c in local if c.isascii())
    return f"{ascii_local}@{r.choice(DOMAINS)}"


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
        span: dict[str, Any] | None = None
        if field == "name":
            value, lang, form = _name(r, sentence_start=pos == 0)
            span = {"kind": "name", "lang": lang, "form": form}
        elif field == "phone":
            value, form = _phone(r)
            span = {"kind": "phone", "form": form}
        elif field in ("iban", "email", "card"):
            value = {"iban": _iban, "email": _email, "card": _card}[field](r)
            span = {"kind": field}
        elif field in ("ssn", "bsn"):
            value = _ssn(r) if field == "ssn" else _bsn(r)
            span = {"kind": "national_id", "form": field}
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
        if span is not None:
            span.update(start=pos, end=pos + len(value))
            spans.append(span)
        out.append(value)
        pos += len(value)
    out.append(rest)
    return "".join(out), spans


def build_fixture(n: int = N_RECORDS, seed: int = SEED) -> list[dict[str, Any]]:
    """``n`` deterministic records: two thirds with planted PII, one third decoys only."""
    r = random.Random(seed)
    classes = sorted(DECOYS)
    records = []
    for i in range(n):
        if i % 3:
            text, spans = _fill(r.choice(TEMPLATES), r)
            records.append({"id": i, "text": text, "pii": spans})
        else:
            cls = classes[(i // 3) % len(classes)]
            text, spans = _fill(r.choice(DECOYS[cls]), r)
            assert not spans
            records.append({"id": i, "text": text, "pii": [], "decoy": cls})
    return records


def write_fixture() -> None:
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    with FIXTURE.open("w", encoding="utf-8") as fh:
        for rec in build_fixture():
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------- evaluation
def load_fixture(path: Path = FIXTURE) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def scrub_settings() -> ScrubSettings:
    """The bench's settings: NL and US national formats, no name list."""
    return ScrubSettings(phone_regions=PHONE_REGIONS)


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def evaluate(records: list[dict[str, Any]], scrubber: Scrubber) -> dict[str, Any]:
    """Precision and recall per kind (overlap with a planted span of the same kind), recall of
    names per language and form and of phones per form, false positives per decoy class."""
    tp = dict.fromkeys(KINDS, 0)
    fp = dict.fromkeys(KINDS, 0)
    fn = dict.fromkeys(KINDS, 0)
    groups: dict[str, list[int]] = {}  # "name:lang:it" -> [found, planted]
    decoy_fp: dict[str, dict[str, int]] = {c: {"records": 0, "findings": 0} for c in DECOYS}
    missed: dict[str, list[str]] = {k: [] for k in KINDS}
    false: dict[str, list[str]] = {k: [] for k in KINDS}
    for rec in records:
        text = rec["text"]
        planted = rec["pii"]
        matched = [False] * len(planted)
        findings = scrubber.find(text)
        if rec.get("decoy"):
            row = decoy_fp[rec["decoy"]]
            row["records"] += 1
            row["findings"] += len(findings)
        for f in findings:
            hit = next(
                (
                    i
                    for i, p in enumerate(planted)
                    if not matched[i]
                    and p["kind"] == f.kind
                    and f.start < p["end"]
                    and p["start"] < f.end
                ),
                None,
            )
            if hit is None:
                fp[f.kind] += 1
                if len(false[f.kind]) < 8:
                    false[f.kind].append(text[f.start : f.end])
            else:
                matched[hit] = True
                tp[f.kind] += 1
        for p, m in zip(planted, matched, strict=True):
            if not m:
                fn[p["kind"]] += 1
                if len(missed[p["kind"]]) < 8:
                    missed[p["kind"]].append(text[p["start"] : p["end"]])
            keys = []
            if p["kind"] == "name":
                keys = [f"lang:{p['lang']}", f"form:{p['form']}"]
            elif p["kind"] == "phone":
                keys = [f"form:{p['form']}"]
            for key in keys:
                g = groups.setdefault(f"{p['kind']}/{key}", [0, 0])
                g[0] += int(m)
                g[1] += 1

    per_kind = {
        k: {
            "planted": tp[k] + fn[k],
            "found": tp[k] + fp[k],
            "tp": tp[k],
            "fp": fp[k],
            "fn": fn[k],
            "precision": _ratio(tp[k], tp[k] + fp[k]),
            "recall": _ratio(tp[k], tp[k] + fn[k]),
        }
        for k in KINDS
    }
    t, p, n = sum(tp.values()), sum(fp.values()), sum(fn.values())
    return {
        "per_kind": per_kind,
        "overall": {"precision": _ratio(t, t + p), "recall": _ratio(t, t + n)},
        "recall_by_group": {
            k: {"found": v[0], "planted": v[1], "recall": _ratio(v[0], v[1])}
            for k, v in sorted(groups.items())
        },
        "decoy_false_positives": decoy_fp,
        "examples_missed": {k: v for k, v in missed.items() if v},
        "examples_false": {k: v for k, v in false.items() if v},
    }


def log_values(name: str) -> list[str]:
    """Every distinct activity, resource, timestamp and attribute value of a shared log, as
    text (numbers and dates as Python prints them)."""
    from procvault.generators.xes import read_xes

    values: set[str] = set()
    for ev in read_xes(SHARED / "logs" / f"{name}.xes.gz").replay():
        values.add(ev.activity)
        if ev.resource:
            values.add(ev.resource)
        values.add(str(ev.timestamp))
        for _, v in ev.attributes:
            if not isinstance(v, bool):
                values.add(str(v))
    return sorted(values)


def log_false_positives(scrubber: Scrubber) -> dict[str, Any]:
    """Findings in the shared logs' values (none of which is personal data)."""
    out: dict[str, Any] = {}
    for name in LOGS:
        if not (SHARED / "logs" / f"{name}.xes.gz").exists():
            out[name] = {"missing": str(SHARED / "logs" / f"{name}.xes.gz")}
            continue
        values = log_values(name)
        kinds: dict[str, int] = {}
        flagged: list[str] = []
        for v in values:
            found = scrubber.find(v)
            for f in found:
                kinds[f.kind] = kinds.get(f.kind, 0) + 1
            if found and len(flagged) < 10:
                flagged.append(v)
        out[name] = {
            "values": len(values),
            "values_flagged": sum(1 for v in values if scrubber.find(v)),
            "findings_by_kind": kinds,
            "examples": flagged,
        }
    return out


# ----------------------------------------------------------------------------- throughput
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


def throughput(records: list[dict[str, Any]], runs: int, repeat: int) -> dict[str, Any]:
    policy = parse_policy(
        {
            "policy": "pii-bench",
            "version": 1,
            "org": "org",
            "mode": "denylist",
            "consent": {"scope": "bench"},
            "scrub": {"phone_regions": list(PHONE_REGIONS)},
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


# ----------------------------------------------------------------------------- baseline
def _run_json(python: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [str(python), *args], capture_output=True, text=True, check=False, timeout=1800
    )
    if proc.returncode != 0:
        raise SystemExit(f"{python} {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def policy_before_after(baseline: Path, rounds: int) -> dict[str, Any]:
    """``bench/policy.py`` alternately with the baseline's interpreter and this one."""
    script = str(ROOT / "bench" / "policy.py")
    pythons = {"baseline": baseline / ".venv" / "bin" / "python", "current": Path(sys.executable)}
    modes = ("scrub_off", "scrub_on", "scrub_on_free_text")
    rates: dict[str, dict[str, list[int]]] = {k: {m: [] for m in modes} for k in pythons}
    cpu: dict[str, dict[str, list[int]]] = {k: {m: [] for m in modes} for k in pythons}
    for _ in range(rounds):
        for label, python in pythons.items():
            out = _run_json(python, script, "--runs", "3", "--repeat", "2")
            for m in modes:
                rates[label][m].append(out[m]["events_per_s_median"])
                cpu[label][m].append(out[m].get("events_per_cpu_s_median", 0))
    result: dict[str, Any] = {"baseline_dir": str(baseline), "rounds": rounds}
    for m in modes:
        b = statistics.median(rates["baseline"][m])
        c = statistics.median(rates["current"][m])
        bc = statistics.median(cpu["baseline"][m])
        cc = statistics.median(cpu["current"][m])
        result[m] = {
            "baseline_events_per_s_median": round(b),
            "current_events_per_s_median": round(c),
            "ratio_current_over_baseline": round(c / b, 3) if b else None,
            "baseline_cpu_events_per_s_median": round(bc),
            "current_cpu_events_per_s_median": round(cc),
            "cpu_ratio_current_over_baseline": round(cc / bc, 3) if bc else None,
            "baseline_runs": rates["baseline"][m],
            "current_runs": rates["current"][m],
        }
    return result


def quality(records: list[dict[str, Any]]) -> dict[str, Any]:
    scrubber = Scrubber(scrub_settings())
    return {**evaluate(records, scrubber), "shared_logs": log_false_positives(scrubber)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=4, help="fixture passes per timed run")
    ap.add_argument("--write-fixture", action="store_true", help="regenerate the fixture")
    ap.add_argument("--quality-only", action="store_true", help="skip the throughput runs")
    ap.add_argument("--baseline", type=Path, help="worktree of an earlier commit, with .venv")
    ap.add_argument("--policy-rounds", type=int, default=3, help="bench/policy.py runs each")
    args = ap.parse_args()
    if args.write_fixture:
        write_fixture()
    records = load_fixture()
    start = time.perf_counter()
    q = quality(records)
    out: dict[str, Any] = {
        "load_average": round(os.getloadavg()[0], 2),
        "fixture": str(FIXTURE.relative_to(ROOT)),
        "records": len(records),
        "records_with_pii": sum(1 for r in records if r["pii"]),
        "names_configured": 0,
        "phone_regions": list(PHONE_REGIONS),
        "national_ids": ["us_ssn", "nl_bsn"],
        **q,
        "quality_seconds": round(time.perf_counter() - start, 2),
    }
    if not args.quality_only:
        out["throughput_scrub_on"] = throughput(records, args.runs, args.repeat)
    if args.baseline is not None:
        base_python = args.baseline / ".venv" / "bin" / "python"
        base = _run_json(base_python, str(Path(__file__).resolve()), "--quality-only")
        out["baseline_quality"] = {
            "per_kind": {
                k: {m: v[m] for m in ("tp", "fp", "fn", "precision", "recall")}
                for k, v in base["per_kind"].items()
            },
            "recall_by_group": base["recall_by_group"],
            "shared_logs": {
                k: {m: v[m] for m in ("values", "values_flagged") if m in v}
                for k, v in base["shared_logs"].items()
            },
        }
        out["policy_stage_before_after"] = policy_before_after(args.baseline, args.policy_rounds)
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
