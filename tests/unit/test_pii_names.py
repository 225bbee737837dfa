"""Person names found without a configured list, in several languages, and the words that are
left alone: each look-alike sits beside a real name, so a test fails both when the name is
missed and when the look-alike is taken for one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from procvault.organization.policy import Scrubber, ScrubSettings, parse_policy

SHARED = Path(os.environ.get("PROCVAULT_SHARED_DATA", Path(__file__).parents[3] / "shared/data"))


@pytest.fixture(scope="module")
def scrubber() -> Scrubber:
    return Scrubber(ScrubSettings(phone_regions=("NL", "US")))


def _names(s: Scrubber, text: str) -> list[str]:
    return [text[f.start : f.end] for f in s.find(text) if f.kind == "name"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Italian, Dutch, German, English, French, Spanish
        ("Il paziente Giulia Bianchi ha chiamato", ["Giulia Bianchi"]),
        ("Chiamare Rossi Maria al reparto", ["Rossi Maria"]),
        (
            "Terugbellen: Pieter van den Berg en Sanne de Vries",
            ["Pieter van den Berg", "Sanne de Vries"],
        ),
        ("Rückruf an Jürgen Müller erbeten", ["Jürgen Müller"]),
        ("Contact Oliver Thompson for the invoice", ["Oliver Thompson"]),
        ("Rappeler Camille Dubois avant midi", ["Camille Dubois"]),
        ("Llamar a María José García López mañana", ["María José García López"]),
        # transliterated: Chinese, Japanese, Russian (from Cyrillic), Greek (from Greek), Arabic,
        # Hindi
        ("Visit of Wei Zhang after Admission IC", ["Wei Zhang"]),
        ("Seen by Yuki Tanaka in ER Triage", ["Yuki Tanaka"]),
        ("Escalated: customer Dmitry Smirnov and Olga Ivanova", ["Dmitry Smirnov", "Olga Ivanova"]),
        ("Note from Giorgos Papadopoulos", ["Giorgos Papadopoulos"]),
        ("Driver Mohammed Al-Farsi reachable", ["Mohammed Al-Farsi"]),
        ("Overdracht aan Priya Sharma", ["Priya Sharma"]),
        ("Visit of Min-jun Seo after Admission IC", ["Min-jun Seo"]),
        # forms: first name alone, title, initials, particle and surname, capitals
        ("Emma called back about the results", ["Emma"]),
        ("Seen by Dr. Bianchi; Sig.ra Esposito waiting", ["Bianchi", "Esposito"]),
        ("Afspraak met mevr. Oosterhuis verzet", ["Oosterhuis"]),
        ("Signed by J. Jansen and A.B. Smith", ["J. Jansen", "A.B. Smith"]),
        ("De Vries belde over de uitslag", ["De Vries"]),
        ("Referente: Mario ROSSI", ["Mario ROSSI"]),
    ],
)
def test_names_are_found_without_a_list(scrubber: Scrubber, text: str, expected: list[str]) -> None:
    assert _names(scrubber, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a name that is also a word: imperative before an article, common word at a sentence
        # start, after an article, month and day names
        ("Mark the parcel for Giulia Bianchi", ["Giulia Bianchi"]),
        ("Will call Jan de Vries tomorrow", ["Jan de Vries"]),
        ("Bill sent to Emma Johnson", ["Emma Johnson"]),
        ("the Grace period for Sanne Bakker ends", ["Sanne Bakker"]),
        ("Follow-up in May with Lukas Weber on Monday", ["Lukas Weber"]),
        # rare names in the long lists only, not read alone
        ("Visa 4111 1111 1111 1111 of Emma", ["Emma"]),
        ("General ward, nurse Sophie", ["Sophie"]),
        # a surname alone, eponyms, activities, codes in capitals, single letters
        ("Foley catheter placed by Maria Garcia", ["Maria Garcia"]),
        ("History of Parkinson's disease; seen by Daan Visser", ["Daan Visser"]),
        ("Release A after ER Sepsis Triage, CRP 42, for Pieter Smit", ["Pieter Smit"]),
        ("T02 Check confirmation of receipt, Group 12, Desk: Chiara Conti", ["Chiara Conti"]),
        ("Diagnose A, org:group B, Resource01 with Thomas Müller", ["Thomas Müller"]),
        ("Customer contact via Post by Léa Martin", ["Léa Martin"]),
        # titles that are also words are not titles
        ("Bay Area office: ING Bank, HR Manager Anna Visser", ["Anna Visser"]),
    ],
)
def test_look_alikes_are_left_alone_beside_real_names(
    scrubber: Scrubber, text: str, expected: list[str]
) -> None:
    assert _names(scrubber, text) == expected


def test_name_dataset_can_be_limited_or_turned_off() -> None:
    text = "Chiamare Giulia Bianchi e Wei Zhang"
    assert _names(Scrubber(ScrubSettings(name_locales=("it_IT",))), text) == ["Giulia Bianchi"]
    off = Scrubber(ScrubSettings(name_locales=(), names=("Wei Zhang",)))
    assert _names(off, text) == ["Wei Zhang"]
    assert Scrubber(ScrubSettings(kinds=frozenset({"email"}))).find(text) == []


def test_name_locales_are_checked_and_loaded_from_a_policy() -> None:
    from procvault.organization.policy.pii import name_locales

    with pytest.raises(ValueError, match="unknown name locale 'xx_XX'"):
        ScrubSettings(name_locales=("xx_XX",))
    assert {"it_IT", "nl_NL", "de_DE", "en_US", "fr_FR", "es_ES", "ru_RU"} <= set(name_locales())
    base = {"policy": "p", "version": 1, "org": "o", "mode": "denylist", "consent": {"scope": "s"}}
    policy = parse_policy({**base, "scrub": {"name_locales": ["nl_NL", "it_IT"]}})
    assert policy.scrub.name_locales == ("it_IT", "nl_NL")
    assert parse_policy({**base, "scrub": {"name_locales": "none"}}).scrub.name_locales == ()
    assert parse_policy({**base, "scrub": {"name_locales": "all"}}).scrub.name_locales is None


@pytest.mark.parametrize("log", ["sepsis_cases", "helpdesk", "receipt"])
def test_shared_log_values_are_not_personal_data(scrubber: Scrubber, log: str) -> None:
    """Every activity, resource, timestamp and attribute value of the shared logs (as text),
    followed by a real name: the name is the only finding."""
    from procvault.generators.xes import read_xes

    path = SHARED / "logs" / f"{log}.xes.gz"
    if not path.exists():
        pytest.skip(f"{path} not found (set PROCVAULT_SHARED_DATA)")
    values: set[str] = set()
    for ev in read_xes(path).replay():
        values.add(ev.activity)
        values.add(str(ev.timestamp))
        if ev.resource:
            values.add(ev.resource)
        values.update(str(v) for _, v in ev.attributes if not isinstance(v, bool))
    assert len(values) > 100
    flagged = [
        v for v in sorted(values) if _names(scrubber, f"{v}; Giulia Bianchi") != ["Giulia Bianchi"]
    ]
    assert flagged == []
    assert [v for v in sorted(values) if scrubber.find(v)] == []
