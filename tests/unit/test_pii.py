"""PII scrubbing: each detector, the replacement, and precision/recall on the synthetic fixture."""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from procvault.organization.policy import Scrubber, ScrubSettings

REPO = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_pii", REPO / "bench" / "pii.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_pii", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scrubber() -> Scrubber:
    return Scrubber(
        ScrubSettings(
            phone_regions=("NL", "US"),
            names=("Jan de Vries", "Maria", "Sean O'Brien", "Anne-Marie Jansen"),
        )
    )


def _kinds(s: Scrubber, text: str) -> list[tuple[str, str]]:
    return [(f.kind, text[f.start : f.end]) for f in s.find(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail jan.devries@zorg-example.nl.", [("email", "jan.devries@zorg-example.nl")]),
        (
            "a+tag@mail.example.com, b@example.org",
            [("email", "a+tag@mail.example.com"), ("email", "b@example.org")],
        ),
        ("bel 06-12345678 of 020 794 0911", [("phone", "06-12345678"), ("phone", "020 794 0911")]),
        ("call (415) 234-5678 today", [("phone", "(415) 234-5678")]),
        ("intl +44 20 7946 0958 ok", [("phone", "+44 20 7946 0958")]),
        ("IBAN NL91 ABNA 0417 1643 00 please", [("iban", "NL91 ABNA 0417 1643 00")]),
        ("to DE89370400440532013000.", [("iban", "DE89370400440532013000")]),
        ("Visa 4111 1111 1111 1111 exp", [("card", "4111 1111 1111 1111")]),
        ("amex 3782-822463-10005", [("card", "3782-822463-10005")]),
        ("SSN 536-22-8726", [("national_id", "536-22-8726")]),
        (
            "BSN 111222333 and 1112.22.333",
            [("national_id", "111222333"), ("national_id", "1112.22.333")],
        ),
        ("Jan de Vries en Maria", [("name", "Jan de Vries"), ("name", "Maria")]),
        ("met Sean O'Brien", [("name", "Sean O'Brien")]),
        ("Anne-Marie Jansen belt", [("name", "Anne-Marie Jansen")]),
    ],
)
def test_detectors_find_what_is_planted(
    scrubber: Scrubber, text: str, expected: list[tuple[str, str]]
) -> None:
    assert _kinds(scrubber, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "NL91 ABNA 0417 1643 01 has a wrong check digit",
        "test card 4111 1111 1111 1112 fails Luhn",
        "1234 5678 9012 3456 is not a card network",
        "SSN 000-12-3456 and 666-12-3456 are never issued",
        "BSN 123456789 fails the 11-check",
        "order 2024-03-31 14:30:00, invoice 4711",
        "version 10.4.2, room 12B, 37.5 C",
        "maria in lower case and the bill was paid",
        "Mariachi band",
    ],
)
def test_look_alikes_are_left_alone(scrubber: Scrubber, text: str) -> None:
    assert scrubber.find(text) == []


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("giulia.bianchi@posta.example.it", "[EMAIL]"),
        ("IT60 X054 2811 1010 0000 0123 456", "[IBAN]"),
        ("4111 1111 1111 1111", "[CARD]"),
        ("536-22-8726", "[NATIONAL_ID]"),
        ("111222333", "[NATIONAL_ID]"),
        ("+39\u00a0347\u00a0123\u00a04567", "[PHONE]"),
        ("Francesca Esposito", "[NAME]"),
    ],
)
def test_each_kind_in_a_note_with_no_name_list(value: str, token: str) -> None:
    """A user's note: a name, a +39 number and one value of each kind, no list configured."""
    s = Scrubber(ScrubSettings(phone_regions=("NL",)))
    text = f"Giulia Bianchi (+39\u00a0333\u00a01234567) ha lasciato: {value}."
    assert s.scrub(text)[0] == f"[NAME] ([PHONE]) ha lasciato: {token}."


def test_scrub_replaces_and_counts(scrubber: Scrubber) -> None:
    text = "Maria (maria@example.org) paid with 4111-1111-1111-1111 from NL91ABNA0417164300"
    clean, counts = scrubber.scrub(text)
    assert clean == "[NAME] ([EMAIL]) paid with [CARD] from [IBAN]"
    assert counts == (("card", 1), ("email", 1), ("iban", 1), ("name", 1))
    assert scrubber.scrub(text) == (clean, counts)  # cached, same answer


def test_an_iban_is_not_also_a_phone_number(scrubber: Scrubber) -> None:
    kinds = [f.kind for f in scrubber.find("NL91 ABNA 0417 1643 00 / +31 20 794 0911")]
    assert kinds == ["iban", "phone"]


def test_kinds_regions_and_ids_are_configurable() -> None:
    only_email = Scrubber(ScrubSettings(kinds=frozenset({"email"})))
    assert [f.kind for f in only_email.find("a@b.org 06-12345678")] == ["email"]
    us = Scrubber(ScrubSettings(phone_regions=("US",)))
    assert us.find("bel 06-12345678") == []  # a Dutch national number, not a US one
    assert [f.kind for f in us.find("bel +31 6 12345678")] == ["phone"]
    no_bsn = Scrubber(ScrubSettings(national_ids=("us_ssn",)))
    assert no_bsn.find("111222333") == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kinds": frozenset({"dna"})}, "unknown PII kind 'dna'"),
        ({"phone_regions": ("XX",)}, "unknown phone region 'XX'"),
        ({"national_ids": ("fr_insee",)}, "unknown national id 'fr_insee'"),
        ({"names": ("",)}, "a name must contain a word"),
    ],
)
def test_settings_are_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScrubSettings(**kwargs)


def test_scrubbing_works_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the scrubber tried to open a socket")

    monkeypatch.setattr(socket, "socket", no_network)
    s = Scrubber(ScrubSettings(phone_regions=("DE", "GB")))
    assert [f.kind for f in s.find("ruf +49 30 901820 an, mail x@y.de")] == ["phone", "email"]


# ----------------------------------------------------------------------------- the fixture
@pytest.fixture(scope="module")
def quality() -> dict[str, Any]:
    bench = _bench()
    records = bench.load_fixture()
    result: dict[str, Any] = bench.evaluate(records, Scrubber(bench.scrub_settings()))
    return result


def test_fixture_is_what_the_generator_makes() -> None:
    bench = _bench()
    assert bench.load_fixture() == bench.build_fixture()


def test_fixture_has_every_kind_planted(quality: dict[str, Any]) -> None:
    for kind, row in quality["per_kind"].items():
        assert row["planted"] >= 70, kind


def test_fixture_plants_names_of_many_languages_and_phones_of_many_regions() -> None:
    records = _bench().load_fixture()
    langs = {p["lang"] for r in records for p in r["pii"] if p["kind"] == "name"}
    assert {"it", "nl", "de", "en", "fr", "es", "zh", "ja", "ru", "el", "ar", "ko", "hi"} <= langs
    phones = [r["text"][p["start"] : p["end"]] for r in records for p in r["pii"]]
    prefixes = {t[:3] for t in phones if t.startswith("+")}
    assert {"+39", "+31", "+49", "+33", "+34", "+44", "+81", "+91"} <= prefixes


@pytest.mark.parametrize(
    ("kind", "floor"),
    [
        ("email", 0.99),
        ("phone", 0.99),  # the start commit: 0.87 (no-break spaces, card and BSN look-alikes)
        ("iban", 0.99),
        ("card", 0.99),
        ("national_id", 0.99),
        ("name", 0.88),  # the start commit: 0.0 without a name list; measured 0.92
    ],
)
def test_recall_per_kind_without_a_name_list(
    quality: dict[str, Any], kind: str, floor: float
) -> None:
    assert quality["per_kind"][kind]["recall"] >= floor


@pytest.mark.parametrize(
    ("kind", "floor"),
    [
        ("email", 0.99),
        ("phone", 0.99),
        ("iban", 0.99),
        ("card", 0.99),  # the start commit: 0.97 (international phone numbers read as cards)
        ("national_id", 0.95),  # a 9-digit batch number passes the BSN 11-check 1 time in 11
        ("name", 0.9),  # "Faith in ...", "Ruby release", "Addison crisis": measured 0.93
    ],
)
def test_precision_per_kind(quality: dict[str, Any], kind: str, floor: float) -> None:
    precision = quality["per_kind"][kind]["precision"]
    assert precision is not None and precision >= floor


@pytest.mark.parametrize("lang", ["it", "nl", "de", "en", "fr", "es", "ru", "zh", "el", "ar"])
def test_name_recall_per_language(quality: dict[str, Any], lang: str) -> None:
    assert quality["recall_by_group"][f"name/lang:{lang}"]["recall"] >= 0.9


def test_decoys_without_names_stay_clean(quality: dict[str, Any]) -> None:
    fp = quality["decoy_false_positives"]
    assert fp["activities"]["findings"] == 0
    assert fp["numbers"]["findings"] <= 2
    assert fp["medical"]["findings"] <= fp["medical"]["records"] // 5
