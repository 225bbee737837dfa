"""Scrub personal data out of free-text attribute values, offline.

Detectors (each finds spans, never keeps the text):

=========== ==============================================================================
kind        how it is found
=========== ==============================================================================
email       a regular expression for ``local@domain.tld``
phone       digit runs shaped like a phone number, confirmed by Google's libphonenumber
            (``phonenumbers``, metadata shipped in the package). A number in international
            format (``+CC`` or ``00CC``) needs no region: ``+CC`` must have a possible length
            for its country, ``00CC`` must be a valid number. A national-format number must
            be *valid* in one of the configured regions.
iban        letters, two check digits and up to 30 characters (spaces between groups
            allowed), confirmed by the ISO 13616 mod-97 checksum and country format
            (``python-stdnum``)
card        13-19 digits (spaces or dashes between groups allowed) with a card-network prefix
            (Visa, Mastercard, Amex, Discover, JCB, Diners, Maestro, UnionPay) and a valid
            Luhn check digit (``python-stdnum``)
national_id ``us_ssn``: ``123-45-6789`` with the SSA's rules on area, group and serial
            numbers; ``nl_bsn``: 9 digits (or ``1234.56.789``) passing the BSN 11-check
            (both ``python-stdnum``)
name        person names, from two sources: the configured list (matched word by word,
            case-insensitive, the first word capitalised) and, with no list needed, the
            first and last names per country that Faker ships (``faker``, 80+ locales;
            Cyrillic names also transliterated), read in context: see below
=========== ==============================================================================

A found span becomes ``[EMAIL]``, ``[PHONE]``, ``[IBAN]``, ``[CARD]``, ``[NATIONAL_ID]`` or
``[NAME]``. Where spans overlap, the earlier kind in :data:`KINDS` wins, except that a phone
number written in international format beats a card or national id inside it (``+49 1512
3454469`` is a phone number, even though its digits pass a Luhn check). Nothing is downloaded at
run time: every library carries its data in the package.

**Names from the dataset** are capitalised words read in context, so that a word which is also a
name elsewhere is left alone where it is not one:

* a known first name followed by a surname (known, or any capitalised word that is not a common
  word), with middle names, initials and particles (``van den``, ``de la``, ``von``, ``di``,
  ``El``) between: ``Jan de Vries``, ``Maria Rossi``, ``Wei Zhang``;
* a known surname followed by a known first name (``Rossi Maria``, ``Tanaka Yuki``);
* a title and what follows it (``Dr. Bianchi``, ``mevr. Oosterhuis``, ``Frau Weber``), initials
  and a known surname (``J. Jansen``), a capitalised particle and a known surname
  (``De Vries``);
* a known first name alone, unless it is a month or day name, follows an article (``the Grace
  period``), or starts a sentence while also being a common word (``Will``, ``May``) or being
  followed by an article (``Mark the parcel``).

A surname alone (``Foley catheter``, ``Post``) is not a name; neither is a word in capitals
(``CRP``, ``ER``) nor a single letter.

>>> s = Scrubber(ScrubSettings(phone_regions=("NL",)))
>>> text, counts = s.scrub("Jan de Vries (jan@example.org, 06-12345678) paid from "
...                        "NL91 ABNA 0417 1643 00")
>>> text
'[NAME] ([EMAIL], [PHONE]) paid from [IBAN]'
>>> counts
(('email', 1), ('iban', 1), ('name', 1), ('phone', 1))
>>> s.scrub("chiamare Giulia Bianchi al +39 347 123 4567")[0]
'chiamare [NAME] al [PHONE]'
>>> s.scrub("Mark the parcel; Release A after ER Triage, CRP 42")
('Mark the parcel; Release A after ER Triage, CRP 42', ())
"""

from __future__ import annotations

import calendar
import functools
import importlib
import itertools
import pkgutil
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import phonenumbers
from stdnum import iban as _iban
from stdnum import luhn as _luhn
from stdnum.nl import bsn as _nl_bsn
from stdnum.us import ssn as _us_ssn

__all__ = [
    "KINDS",
    "NATIONAL_IDS",
    "Finding",
    "ScrubSettings",
    "Scrubber",
    "name_locales",
]

#: Detector kinds, in priority order (an earlier kind wins an overlap).
KINDS: Final = ("email", "iban", "card", "national_id", "phone", "name")
#: National identifier schemes that can be detected.
NATIONAL_IDS: Final = ("us_ssn", "nl_bsn")
_TOKENS: Final = {k: f"[{k.upper()}]" for k in KINDS}
_PRIORITY: Final = {k: i for i, k in enumerate(KINDS)}
#: A phone number in international format outranks a card or national id that it contains.
_INTL_PHONE_PRIORITY: Final = _PRIORITY["card"] - 0.5

_EMAIL_RE: Final = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
_IBAN_RE: Final = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}(?![A-Za-z0-9])"
)
_CARD_RE: Final = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_SSN_RE: Final = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")
_BSN_RE: Final = re.compile(r"(?<![\d.])(?:\d{9}|\d{4}\.\d{2}\.\d{3})(?!\d|\.\d)")
#: Separators people put inside phone numbers: ASCII ones, no-break and thin spaces, dashes.
#: A digit run right after "12:" is the seconds of a time ("13:33:13.103000"), not a phone.
_PHONE_SEPARATORS: Final = " ().\\-/\u00a0\u2007\u2009\u202f\u2010\u2011\u2012\u2013"
_PHONE_CANDIDATE_RE: Final = re.compile(
    rf"(?<![\w+])(?<!\d:)(?:\+|\(\+?)?\d[\d{_PHONE_SEPARATORS}]{{5,22}}\d(?!\w)"
)
_PHONE_ASCII: Final = str.maketrans(
    {"\u00a0": " ", "\u2007": " ", "\u2009": " ", "\u202f": " ", "\u2010": "-"}
    | {"\u2011": "-", "\u2012": "-", "\u2013": "-"}
)
_WORD_RE: Final = re.compile(r"[^\W\d_]+(?:['\u2019-][^\W\d_]+)*")
_SPACE_RE: Final = re.compile(r"\s+")
_MIN_PHONE_DIGITS: Final = 7
#: Matches a text with at least :data:`_MIN_PHONE_DIGITS` digits (every number kind needs them).
_DIGITS_RE: Final = re.compile(rf"(?:\D*\d){{{_MIN_PHONE_DIGITS}}}")
_CACHE_LIMIT: Final = 1 << 16
_CACHE_MAX_LEN: Final = 256


class Finding(NamedTuple):
    """A span of personal data: its kind and where it is (never the text itself)."""

    kind: str
    start: int
    end: int


# ----------------------------------------------------------------------------- name data
_FAKER_PERSON: Final = "faker.providers.person"
_FAKER_LOREM: Final = "faker.providers.lorem"
_FAKER_DATES: Final = "faker.providers.date_time"
#: Provider attributes that hold first or last names (``first_names_female``,
#: ``last_romanized_names``, ...); kana and kanji pairs are left out.
_FIRST_ATTR_RE: Final = re.compile(r"first_(?:romanized_)?names(?:_[a-z]+)*")
_LAST_ATTR_RE: Final = re.compile(r"last_(?:romanized_)?names(?:_[a-z]+)*")
#: Lorem word lists that are not a language's common words: ``la`` and ``en_PH`` are lorem
#: ipsum, and the Spanish ones are corpus frequency lists that include first names in lower
#: case ("maría", "martín"). Elsewhere a capitalised entry is a proper noun and is left out,
#: except in German, which capitalises its nouns.
_LOREM_SKIP: Final = frozenset({"la", "en_PH", "es_AR", "es_ES", "es_MX"})

#: Honorifics before a name (English, Dutch, German, French, Italian, Spanish, Portuguese),
#: compared case-folded without their dot. Words that are also common words or first names
#: ("Bay", "Pan", "Don", "Lady") are left out.
_TITLES: Final = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "miss",
        "mx",
        "dr",
        "drs",
        "prof",
        "sir",
        "dame",
        "rev",
        "fr",
        "herr",
        "frau",
        "hr",
        "dhr",
        "mevr",
        "mw",
        "mej",
        "meneer",
        "mevrouw",
        "juffrouw",
        "sig",
        "sigra",
        "signa",
        "signor",
        "signora",
        "signorina",
        "dott",
        "dottssa",
        "dottor",
        "dottore",
        "dottoressa",
        "avv",
        "ing",
        "mme",
        "mlle",
        "monsieur",
        "madame",
        "mademoiselle",
        "sr",
        "sra",
        "srta",
        "señor",
        "señora",
        "señorita",
        "senhor",
        "senhora",
        "doña",
        "dña",
    ]
)
#: Suffixes glued to an Italian title by a dot (``Sig.ra``, ``Dott.ssa``).
_TITLE_SUFFIXES: Final = frozenset({"ra", "na", "ssa"})
#: Particles inside a surname (``van den Berg``, ``de la Cruz``, ``El Amrani``, ``bin Laden``).
_PARTICLES: Final = frozenset(
    [
        "van",
        "de",
        "der",
        "den",
        "ter",
        "ten",
        "te",
        "von",
        "zu",
        "vom",
        "zum",
        "di",
        "da",
        "del",
        "della",
        "dello",
        "dei",
        "degli",
        "dal",
        "dalla",
        "do",
        "dos",
        "das",
        "du",
        "des",
        "le",
        "la",
        "el",
        "al",
        "bin",
        "binti",
        "ben",
        "ibn",
        "abu",
        "bint",
        "af",
        "av",
        "mac",
        "mc",
        "st",
    ]
)
#: Articles and determiners: a capitalised word right after one, or a sentence-initial word
#: right before one (an imperative: "Mark the parcel"), is not read as a lone first name.
_ARTICLES: Final = frozenset(
    [
        "the",
        "a",
        "an",
        "this",
        "that",
        "these",
        "those",
        "his",
        "her",
        "its",
        "our",
        "their",
        "my",
        "your",
        "de",
        "het",
        "een",
        "die",
        "der",
        "das",
        "den",
        "dem",
        "ein",
        "eine",
        "einen",
        "le",
        "la",
        "les",
        "un",
        "une",
        "il",
        "lo",
        "gli",
        "el",
        "los",
        "las",
        "uno",
        "una",
    ]
)
#: Characters after which the next word starts a sentence.
_SENTENCE_END: Final = frozenset(".!?:;\n\r\t•")


def _fold(word: str) -> str:
    """Case-folded, without accents, with a plain apostrophe: the key names are looked up by."""
    w = word.casefold().replace("\u2019", "'")
    if w.isascii():
        return w
    decomposed = unicodedata.normalize("NFKD", w)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


#: Cyrillic and Greek to Latin: the usual English spellings and their common alternatives, so
#: that "Дмитрий Смирнов" is found as "Dmitry Smirnov", "Dmitriy Smirnov" or "Dmitrii Smirnov"
#: and "Γιώργος Παπαδόπουλος" as "Giorgos Papadopoulos" or "Yiorgos Papadopoulos". Keys of two
#: letters are tried before one; Greek accents are dropped (not the marks of Cyrillic "й").
_TO_LATIN: Final[dict[str, tuple[str, ...]]] = {
    "а": ("a",), "б": ("b",), "в": ("v",), "г": ("g",), "д": ("d",), "е": ("e",),  # noqa: RUF001
    "ё": ("e", "yo"), "ж": ("zh",), "з": ("z",), "и": ("i",), "й": ("y", "i"), "к": ("k",),
    "л": ("l",), "м": ("m",), "н": ("n",), "о": ("o",), "п": ("p",), "р": ("r",), "с": ("s",),  # noqa: RUF001
    "т": ("t",), "у": ("u",), "ф": ("f",), "х": ("kh", "h"), "ц": ("ts",), "ч": ("ch",),  # noqa: RUF001
    "ш": ("sh",), "щ": ("shch",), "ъ": ("",), "ы": ("y",), "ь": ("",), "э": ("e",),
    "ю": ("yu", "iu"), "я": ("ya", "ia"), "є": ("ye",), "і": ("i",), "ї": ("yi", "i"),  # noqa: RUF001
    "ґ": ("g",), "ий": ("iy", "y", "ii"), "ый": ("y", "iy"),
    "α": ("a",), "β": ("v",), "γ": ("g",), "δ": ("d",), "ε": ("e",), "ζ": ("z",),  # noqa: RUF001
    "η": ("i",), "θ": ("th",), "ι": ("i",), "κ": ("k",), "λ": ("l",), "μ": ("m",),  # noqa: RUF001
    "ν": ("n",), "ξ": ("x", "ks"), "ο": ("o",), "π": ("p",), "ρ": ("r",), "σ": ("s",),  # noqa: RUF001
    "ς": ("s",), "τ": ("t",), "υ": ("y", "i"), "φ": ("f", "ph"), "χ": ("ch", "h"),  # noqa: RUF001
    "ψ": ("ps",), "ω": ("o",), "ου": ("ou",), "αι": ("ai", "e"), "ει": ("ei", "i"),  # noqa: RUF001
    "οι": ("oi", "i"), "μπ": ("b", "mp"), "ντ": ("d", "nt"), "γγ": ("ng",), "γκ": ("g", "gk"),  # noqa: RUF001
    "αυ": ("av", "af"), "ευ": ("ev", "ef"), "γι": ("gi", "yi"),  # noqa: RUF001
}  # fmt: skip
_MAX_VARIANTS: Final = 8
#: A locale whose first-name list is at most this long lists popular names only.
_POPULAR_LIST: Final = 2500


def _transliterations(word: str) -> set[str]:
    """Latin spellings of a Cyrillic or Greek word (folded), at most :data:`_MAX_VARIANTS`;
    none for a word in any other script.

    >>> sorted(_transliterations("Дмитрий"))
    ['dmitrii', 'dmitriy', 'dmitry']
    >>> sorted(_transliterations("Γιώργος"))
    ['giorgos', 'yiorgos']
    >>> _transliterations("Maria")
    set()
    """
    w = "".join(
        c
        if c in _TO_LATIN
        else "".join(d for d in unicodedata.normalize("NFKD", c) if not unicodedata.combining(d))
        for c in word.casefold()
    )
    parts: list[tuple[str, ...]] = []
    i = 0
    while i < len(w):
        options = _TO_LATIN.get(w[i : i + 2])
        step = 2
        if options is None:
            options, step = _TO_LATIN.get(w[i]), 1
        if options is None:
            if w[i].isalpha():
                return set()  # not Cyrillic or Greek throughout
            options = (w[i],)
        parts.append(options)
        i += step
    out: set[str] = set()
    for combo in itertools.product(*parts):
        out.add("".join(combo))
        if len(out) >= _MAX_VARIANTS:
            break
    return out


def _strings(value: Any) -> Iterator[str]:
    """Every string in a Faker name table (tuples, lists, weighted dicts, nested)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k in value:
            yield from _strings(k)
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _strings(v)


@functools.cache
def name_locales() -> tuple[str, ...]:
    """The locales whose person names the scrubber can load (Faker's person providers).

    >>> {"it_IT", "nl_NL", "de_DE", "en_US", "fr_FR", "es_ES", "ru_RU", "zh_CN"} <= set(
    ...     name_locales())
    True
    """
    package = importlib.import_module(_FAKER_PERSON)
    return tuple(
        sorted(m.name for m in pkgutil.iter_modules(package.__path__) if "_" in m.name or m.ispkg)
    )


@dataclass(frozen=True)
class _NameIndex:
    """Folded first names, surname words and common words; case-folded month and day names."""

    first: frozenset[str]
    #: First names read as a name alone: listed by two locales or more, or by a locale's list
    #: of popular names (the long lists, ``en`` and ``is_IS``, also hold rare names that are
    #: common words: "General", "Rich", "Visa").
    lone: frozenset[str]
    last: frozenset[str]
    common: frozenset[str]
    calendar: frozenset[str]
    #: First names, surname words and titles: a text with none of them has no name.
    anchors: frozenset[str]


def _add_name(entry: str, into: set[str]) -> None:
    for word in _WORD_RE.findall(entry):
        if not word[0].isupper():
            continue  # a particle ("van", "de"), or a script without capitals
        folded = _fold(word)
        into.add(folded)
        variants = _transliterations(word)
        into.update(variants)
        if "-" in folded:
            for part in folded.split("-"):
                if len(part) >= 2:
                    into.add(part)
                    into.update(_transliterations(part))


@functools.cache
def _name_index(locales: tuple[str, ...]) -> _NameIndex:
    support: dict[str, int] = {}
    popular: set[str] = set()
    last: set[str] = set()
    for loc in locales:
        provider = importlib.import_module(f"{_FAKER_PERSON}.{loc}").Provider
        first: set[str] = set()
        for attr in dir(provider):
            target = (
                first
                if _FIRST_ATTR_RE.fullmatch(attr)
                else last
                if _LAST_ATTR_RE.fullmatch(attr)
                else None
            )
            if target is None:
                continue
            value = getattr(provider, attr)
            if isinstance(value, property):
                continue
            for entry in _strings(value):
                _add_name(entry, target)
        for name in first:
            support[name] = support.get(name, 0) + 1
        if len(first) <= _POPULAR_LIST:
            popular.update(first)
    common: set[str] = set()
    lorem = importlib.import_module(_FAKER_LOREM)
    for m in pkgutil.iter_modules(lorem.__path__):
        if m.name in _LOREM_SKIP:
            continue
        words = getattr(
            importlib.import_module(f"{_FAKER_LOREM}.{m.name}").Provider, "word_list", ()
        )
        german = m.name.startswith("de_")
        common.update(
            _fold(w) for w in _strings(words) if w.isalpha() and (german or not w[0].isupper())
        )
    # Month and day names, case-folded but with their accents ("março" is not "Marco").
    cal: set[str] = {n.casefold() for n in (*calendar.month_name, *calendar.day_name) if n}
    dates = importlib.import_module(_FAKER_DATES)
    for m in pkgutil.iter_modules(dates.__path__):
        provider = importlib.import_module(f"{_FAKER_DATES}.{m.name}").Provider
        for attr in ("MONTH_NAMES", "DAY_NAMES"):
            table = getattr(provider, attr, None)
            if isinstance(table, dict):
                cal.update(v.casefold() for v in table.values() if isinstance(v, str))
    first_names = frozenset(w for w in support if len(w) >= 2)
    surnames = frozenset(w for w in last if len(w) >= 2)
    return _NameIndex(
        first=first_names,
        lone=frozenset(w for w, k in support.items() if len(w) >= 3 and (k >= 2 or w in popular)),
        last=surnames,
        common=frozenset(common),
        calendar=frozenset(cal),
        anchors=first_names | surnames | _TITLES,
    )


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class ScrubSettings:
    """What the scrubber looks for.

    Parameters
    ----------
    kinds
        Detector kinds to run (a subset of :data:`KINDS`; default all).
    phone_regions
        ISO 3166 region codes whose national phone formats are recognised (numbers in
        international format, ``+CC`` or ``00CC``, are recognised whatever the regions).
    national_ids
        National id schemes (a subset of :data:`NATIONAL_IDS`).
    names
        Person names to find (``"Jan de Vries"``, ``"Maria"``), beside the dataset.
    name_locales
        Locales of the name dataset (see :func:`name_locales`): ``None`` (default) loads every
        one, ``()`` none (then only ``names`` are found).
    skip_attributes
        Attribute keys whose values are never scrubbed (codes such as ``lifecycle:transition``).
    """

    kinds: frozenset[str] = frozenset(KINDS)
    phone_regions: tuple[str, ...] = ("US",)
    national_ids: tuple[str, ...] = NATIONAL_IDS
    names: tuple[str, ...] = ()
    name_locales: tuple[str, ...] | None = None
    skip_attributes: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        kinds = frozenset(self.kinds)
        unknown = sorted(kinds - frozenset(KINDS))
        if unknown:
            raise ValueError(f"unknown PII kind {unknown[0]!r} (known: {', '.join(KINDS)})")
        object.__setattr__(self, "kinds", kinds)
        regions = tuple(self.phone_regions)
        for r in regions:
            if not isinstance(r, str) or r not in phonenumbers.SUPPORTED_REGIONS:
                raise ValueError(f"unknown phone region {r!r} (use ISO 3166 codes like NL, US)")
        object.__setattr__(self, "phone_regions", regions)
        ids = tuple(self.national_ids)
        for i in ids:
            if i not in NATIONAL_IDS:
                raise ValueError(f"unknown national id {i!r} (known: {', '.join(NATIONAL_IDS)})")
        object.__setattr__(self, "national_ids", ids)
        names = tuple(self.names)
        for n in names:
            if not isinstance(n, str) or not _WORD_RE.search(n):
                raise ValueError(f"a name must contain a word, got {n!r}")
        object.__setattr__(self, "names", names)
        if self.name_locales is not None:
            locales = tuple(sorted(set(self.name_locales)))
            known = name_locales()
            for loc in locales:
                if loc not in known:
                    raise ValueError(
                        f"unknown name locale {loc!r} (known: {', '.join(known[:6])}, ...; "
                        "see procvault.organization.policy.pii.name_locales())"
                    )
            object.__setattr__(self, "name_locales", locales)
        object.__setattr__(self, "skip_attributes", frozenset(self.skip_attributes))


#: Card networks as (lowest prefix, highest prefix, lengths); prefixes compare as text.
_CARD_NETWORKS: Final = (
    ("4", "4", (13, 16, 19)),  # Visa
    ("51", "55", (16,)),  # Mastercard
    ("2221", "2720", (16,)),  # Mastercard 2-series
    ("34", "34", (15,)),  # American Express
    ("37", "37", (15,)),  # American Express
    ("35", "35", range(16, 20)),  # JCB
    ("30", "30", range(14, 20)),  # Diners Club
    ("36", "36", range(14, 20)),  # Diners Club
    ("38", "39", range(14, 20)),  # Diners Club
    ("50", "50", range(13, 20)),  # Maestro
    ("56", "59", range(13, 20)),  # Maestro
    ("6", "6", range(16, 20)),  # Discover, UnionPay, Maestro
)


def _card_prefix_ok(digits: str) -> bool:
    n = len(digits)
    return any(lo <= digits[: len(lo)] <= hi and n in lengths for lo, hi, lengths in _CARD_NETWORKS)


def _cut_points(text: str) -> list[int]:
    """Where a grouped number may end: at its end, then at each space or dash, longest first."""
    ends = [len(text)]
    ends.extend(i for i in range(len(text) - 1, 0, -1) if text[i] in " -")
    return ends


def _international(text: str, f: Finding) -> bool:
    """Whether a phone finding is written in international format (``+CC``, ``(+CC)``, ``00CC``)."""
    head = text[f.start : f.start + 3]
    return head.startswith(("+", "(+", "00"))


def _phone_span(text: str, start: int, end: int) -> Finding:
    """A phone finding, without an opening bracket that the number does not close
    ("(+39 333 1234567)" keeps its brackets around ``[PHONE]``)."""
    if text[start : start + 1] == "(" and ")" not in text[start:end]:
        start += 1
    return Finding("phone", start, end)


class _Word(NamedTuple):
    start: int
    end: int
    text: str
    key: str  # folded


class Scrubber:
    """Finds and replaces personal data in text; build once, call per value.

    Parameters
    ----------
    settings
        The :class:`ScrubSettings`.
    """

    __slots__ = ("_cache", "_index", "_max_words", "_names", "_regions", "_run", "settings")

    def __init__(self, settings: ScrubSettings | None = None) -> None:
        self.settings = settings = settings if settings is not None else ScrubSettings()
        kinds = settings.kinds
        self._run = {k: k in kinds for k in KINDS}
        if not settings.national_ids:
            self._run["national_id"] = False
        self._regions = settings.phone_regions
        self._names: frozenset[tuple[str, ...]] = frozenset(
            tuple(w.casefold() for w in _WORD_RE.findall(n)) for n in settings.names
        )
        self._max_words = max((len(n) for n in self._names), default=0)
        locales = name_locales() if settings.name_locales is None else settings.name_locales
        self._index: _NameIndex | None = (
            _name_index(locales) if locales and self._run["name"] else None
        )
        if not self._names and self._index is None:
            self._run["name"] = False
        self._cache: dict[str, tuple[str, tuple[tuple[str, int], ...]]] = {}

    # ------------------------------------------------------------------ detectors
    def _emails(self, text: str) -> Iterable[Finding]:
        if "@" not in text:
            return
        for m in _EMAIL_RE.finditer(text):
            yield Finding("email", m.start(), m.end())

    def _ibans(self, text: str) -> Iterable[Finding]:
        for m in _IBAN_RE.finditer(text):
            s = m.group()
            for end in _cut_points(s):
                if end < 15:
                    break
                compact = s[:end].replace(" ", "")
                if 15 <= len(compact) <= 34 and _iban.is_valid(compact):
                    yield Finding("iban", m.start(), m.start() + end)
                    break

    def _cards(self, text: str) -> Iterable[Finding]:
        for m in _CARD_RE.finditer(text):
            s = m.group()
            for end in _cut_points(s):
                digits = s[:end].replace(" ", "").replace("-", "")
                if len(digits) < 13:
                    break
                if len(digits) <= 19 and _card_prefix_ok(digits) and _luhn.is_valid(digits):
                    yield Finding("card", m.start(), m.start() + end)
                    break

    def _national_ids(self, text: str) -> Iterable[Finding]:
        ids = self.settings.national_ids
        if "us_ssn" in ids and "-" in text:
            for m in _SSN_RE.finditer(text):
                if _us_ssn.is_valid(m.group()):
                    yield Finding("national_id", m.start(), m.end())
        if "nl_bsn" in ids:
            for m in _BSN_RE.finditer(text):
                if _nl_bsn.is_valid(m.group().replace(".", "")):
                    yield Finding("national_id", m.start(), m.end())

    def _phones(self, text: str, taken: list[Finding]) -> Iterable[Finding]:
        for m in _PHONE_CANDIDATE_RE.finditer(text):
            cand = m.group()
            if sum(c.isdigit() for c in cand) < _MIN_PHONE_DIGITS:
                continue
            start, end = m.span()
            lead = cand.lstrip("(")
            intl = lead.startswith(("+", "00"))
            if any(
                f.start <= start and end <= f.end and (not intl or f.kind in ("email", "iban"))
                for f in taken
            ):
                # Inside an e-mail address or an IBAN; or a card or national id, unless written
                # in international format (then the phone number outranks it, see find()).
                continue
            # One character either side lets libphonenumber reject a number glued to other
            # text, and three after let it see a time suffix ("2024-03-31 14:30" is no phone).
            # Exotic spaces and dashes become ASCII ones of the same length (offsets hold).
            base = max(0, start - 1)
            window = text[base : end + 3].translate(_PHONE_ASCII)
            if lead.startswith("+"):
                # International format: the country code says where it is from, so no region
                # is needed, and a possible length for that country is enough.
                matches = phonenumbers.PhoneNumberMatcher(
                    window, None, leniency=phonenumbers.Leniency.POSSIBLE
                )
                for pm in matches:
                    yield _phone_span(text, base + pm.start, base + pm.end)
                continue
            if lead.startswith("00") and lead[2:3] not in ("", "0"):
                # 00 is the international prefix almost everywhere: read it as "+" (same
                # length, so offsets hold), and ask for a valid number, since order numbers
                # start with zeros too.
                at = window.index(lead)
                plus = window[:at] + " +" + window[at + 2 :]
                found = False
                for pm in phonenumbers.PhoneNumberMatcher(plus, None):
                    found = True
                    s = pm.start - 1 if plus[pm.start] == "+" and pm.start > 0 else pm.start
                    yield _phone_span(text, base + s, base + pm.end)
                if found:
                    continue
            for region in self._regions:
                found = False
                for pm in phonenumbers.PhoneNumberMatcher(window, region):
                    found = True
                    yield _phone_span(text, base + pm.start, base + pm.end)
                if found:
                    break

    def _listed_names(self, text: str) -> Iterable[Finding]:
        words = list(_WORD_RE.finditer(text))
        names, max_n = self._names, self._max_words
        i, n_words = 0, len(words)
        while i < n_words:
            first = words[i].group()
            if not first[0].isupper():
                i += 1
                continue
            for n in range(min(max_n, n_words - i), 0, -1):
                span = words[i : i + n]
                if tuple(w.group().casefold() for w in span) not in names:
                    continue
                gaps_ok = all(
                    _SPACE_RE.fullmatch(text, a.end(), b.start()) is not None
                    for a, b in itertools.pairwise(span)
                )
                if gaps_ok:
                    yield Finding("name", span[0].start(), span[-1].end())
                    i += n - 1
                    break
            i += 1

    def _dataset_names(self, text: str, index: _NameIndex) -> Iterable[Finding]:
        matches = list(_WORD_RE.finditer(text))
        anchors = index.anchors
        # Every rule needs a title, or a capitalised known first name or surname: most texts
        # have none, and cost one look-up per capitalised word.
        for m in matches:
            g = m.group()
            if g.islower():
                if g in _TITLES:
                    break
            elif g[0].isupper():
                key = _fold(g)
                if key in anchors or ("-" in key and any(p in anchors for p in key.split("-"))):
                    break
        else:
            return
        # Built as plain tuples (a NamedTuple's own constructor is slow); a lower-case ASCII
        # word is its own key.
        new, fold = tuple.__new__, _fold
        words: list[_Word] = [
            new(_Word, (m.start(), m.end(), g, g if g.islower() and g.isascii() else fold(g)))
            for m in matches
            for g in (m.group(),)
        ]
        n = len(words)
        first, lone, last = index.first, index.lone, index.last
        common, cal = index.common, index.calendar

        def shaped(w: _Word) -> bool:
            """Capitalised, two letters or more, not a word in capitals (a code)."""
            t = w.text
            return len(t) >= 2 and t[0].isupper() and not t.isupper()

        def upper_name(w: _Word) -> bool:
            return len(w.text) >= 3 and w.text.isupper()

        def is_first(w: _Word) -> bool:
            k = w.key
            if k in first:
                return True
            return "-" in k and all(p in first for p in k.split("-"))

        def is_last(w: _Word) -> bool:
            k = w.key
            if k in last or k in first:
                return True
            if "-" in k and any(p in last for p in k.split("-")):
                return True
            if "'" in k:
                tail = k.rsplit("'", 1)[1]
                return len(tail) >= 3 and tail in last
            return False

        def gap(a: _Word, b: _Word) -> str:
            return text[a.end : b.start]

        def spaced(a: _Word, b: _Word) -> bool:
            g = gap(a, b)
            return bool(g) and g.isspace()

        def dotted(a: _Word, b: _Word) -> bool:
            """``J. Jansen``, ``Dr. Rossi``, ``Dr Rossi``: a dot, then spaces."""
            g = gap(a, b)
            return g.isspace() or (g[:1] == "." and (g[1:].isspace() or g[1:] == ""))

        def joined(a: _Word, b: _Word) -> bool:
            """Words of one name: spaces between, or an initial's dot and spaces."""
            return spaced(a, b) or (len(a.text) == 1 and a.text.isupper() and dotted(a, b))

        def sentence_start(i: int) -> bool:
            before = text[: words[i].start].rstrip(" \u00a0\"'([{\u201c\u2018«")
            return not before or before[-1] in _SENTENCE_END

        def lone_first(i: int) -> bool:
            """A first name with no surname: listed by two locales or more, not a month or day,
            not after an article, and at a sentence start neither a common word nor followed
            by an article."""
            w = words[i]
            k = w.key
            listed = k in lone or ("-" in k and all(p in lone for p in k.split("-")))
            if not listed or w.text.casefold() in cal:
                return False
            if i > 0 and words[i - 1].key in _ARTICLES and words[i - 1].text.islower():
                return False  # "the Grace period"
            if sentence_start(i):
                if w.key in common:
                    return False  # "Will do", "May I"
                nxt = words[i + 1] if i + 1 < n else None
                if nxt is not None and nxt.key in _ARTICLES and nxt.text.islower():
                    return False  # "Mark the parcel"
            return True

        def initial(w: _Word, nxt: _Word | None) -> bool:
            return (
                len(w.text) == 1
                and w.text.isupper()
                and nxt is not None
                and text[w.end : w.end + 1] == "."
            )

        def surname_from(j: int) -> int:
            """End index (exclusive) of a surname that starts at word ``j``, or ``j`` if none:
            particles then a capitalised word; a known surname, or after a particle any."""
            k = j
            had_particle = False
            while (
                k < n and words[k].key in _PARTICLES and (k == j or spaced(words[k - 1], words[k]))
            ):
                if k + 1 >= n or not (spaced(words[k], words[k + 1])):
                    return j
                had_particle = True
                k += 1
            if k >= n or (k > j and not spaced(words[k - 1], words[k])):
                return j
            w = words[k]
            if not (shaped(w) or upper_name(w)):
                return j
            unknown = not is_last(w) and not (had_particle and shaped(w))
            if unknown and (not shaped(w) or w.key in common or w.text.casefold() in cal):
                return j  # an unknown surname after a known first name must look like one
            end = k + 1
            # A second surname: "García López", "Müller Lüdenscheidt".
            while (
                end < n
                and spaced(words[end - 1], words[end])
                and shaped(words[end])
                and words[end].key in last
                and words[end].key not in common
            ):
                end += 1
            return end

        i = 0
        while i < n:
            w = words[i]
            t = w.text
            nxt = words[i + 1] if i + 1 < n else None
            # A title and the capitalised words after it: "Dr. Bianchi", "mevr. Jansen".
            if (
                w.key in _TITLES
                and nxt is not None
                and dotted(w, nxt)
                and (shaped(w) or (t.islower() and text[w.end : w.end + 1] == "."))
            ):
                j = i + 1
                if words[j].key in _TITLE_SUFFIXES and gap(w, words[j]) == "." and j + 1 < n:
                    j += 1
                k = j
                while k < n and k - j < 3 and (shaped(words[k]) or words[k].key in _PARTICLES):
                    if k > j and not spaced(words[k - 1], words[k]):
                        break
                    k += 1
                while k > j and words[k - 1].key in _PARTICLES:
                    k -= 1
                if k > j and (shaped(words[j]) or words[j].key in _PARTICLES):
                    yield Finding("name", words[j].start, words[k - 1].end)
                    i = k
                    continue
            if not t[0].isupper():
                i += 1
                continue
            # Initials and a known surname: "J. Jansen", "A.B. Smith".
            if initial(w, nxt):
                k = i
                while k < n and initial(words[k], words[k + 1] if k + 1 < n else None):
                    k += 1
                if k < n and k > i and dotted(words[k - 1], words[k]):
                    end = surname_from(k)
                    if end > k and is_last(words[end - 1]):
                        yield Finding("name", w.start, words[end - 1].end)
                        i = end
                        continue
            if not shaped(w) and not upper_name(w):
                i += 1
                continue
            # A capitalised particle and a known surname: "De Vries", "Van der Berg".
            if w.key in _PARTICLES and shaped(w):
                end = surname_from(i)
                if end > i + 1 and words[end - 1].key in last and words[end - 1].key not in common:
                    yield Finding("name", w.start, words[end - 1].end)
                    i = end
                    continue
            if is_first(w) and shaped(w):
                # First name, then middle names and initials, then a surname.
                k = i + 1
                while k < n and joined(words[k - 1], words[k]):
                    mid = words[k]
                    after = words[k + 1] if k + 1 < n else None
                    if initial(mid, after):
                        k += 1
                        continue
                    if (
                        shaped(mid)
                        and is_first(mid)
                        and after is not None
                        and joined(mid, after)
                        and surname_from(k + 1) > k + 1
                    ):
                        k += 1
                        continue
                    break
                if k < n and joined(words[k - 1], words[k]):
                    end = surname_from(k)
                    if end > k:
                        yield Finding("name", w.start, words[end - 1].end)
                        i = end
                        continue
                if lone_first(i):
                    yield Finding("name", w.start, w.end)
                    i += 1
                    continue
            # An unknown given name before a known surname: "Daiki Yamamoto", "Aditi Gupta".
            if (
                nxt is not None
                and shaped(w)
                and w.key not in common
                and w.key not in _PARTICLES
                and w.key not in _TITLES
                and t.casefold() not in cal
                and spaced(w, nxt)
                and shaped(nxt)
                and nxt.key in last
                and nxt.key not in common
                and nxt.key not in first
            ):
                end = surname_from(i + 1)
                yield Finding("name", w.start, words[max(end, i + 2) - 1].end)
                i = max(end, i + 2)
                continue
            # Surname first: "Rossi Maria", "Tanaka Yuki".
            if (
                nxt is not None
                and w.key in last
                and w.key not in common
                and spaced(w, nxt)
                and shaped(nxt)
                and nxt.key in first
            ):
                yield Finding("name", w.start, nxt.end)
                i += 2
                continue
            i += 1

    # ------------------------------------------------------------------ public
    def find(self, text: str) -> list[Finding]:
        """Non-overlapping findings in ``text``, in order of position.

        >>> Scrubber().find("write to a@b.org")
        [Finding(kind='email', start=9, end=16)]
        """
        run = self._run
        found: list[Finding] = []
        if run["email"]:
            found.extend(self._emails(text))
        has_digits = _DIGITS_RE.match(text) is not None
        if has_digits:
            if run["iban"]:
                found.extend(self._ibans(text))
            if run["card"]:
                found.extend(self._cards(text))
            if run["national_id"]:
                found.extend(self._national_ids(text))
            if run["phone"]:
                found.extend(self._phones(text, found))
        if run["name"] and not text.islower():
            if self._names:
                found.extend(self._listed_names(text))
            if self._index is not None:
                found.extend(self._dataset_names(text, self._index))
        if not found:
            return found

        def rank(f: Finding) -> tuple[float, int, int]:
            p: float = _PRIORITY[f.kind]
            if f.kind == "phone" and _international(text, f):
                p = _INTL_PHONE_PRIORITY
            return (p, f.start, -f.end)

        found.sort(key=rank)
        accepted: list[Finding] = []
        for f in found:
            if all(f.end <= a.start or f.start >= a.end for a in accepted):
                accepted.append(f)
        accepted.sort(key=lambda f: f.start)
        return accepted

    def scrub(self, text: str) -> tuple[str, tuple[tuple[str, int], ...]]:
        """``text`` with each finding replaced by its token, and ``(kind, count)`` pairs found.

        Results for short texts are cached (values such as codes repeat across events).
        """
        hit = self._cache.get(text)
        if hit is not None:
            return hit
        findings = self.find(text)
        if not findings:
            result: tuple[str, tuple[tuple[str, int], ...]] = (text, ())
        else:
            parts: list[str] = []
            pos = 0
            counts: dict[str, int] = {}
            for f in findings:
                parts.append(text[pos : f.start])
                parts.append(_TOKENS[f.kind])
                pos = f.end
                counts[f.kind] = counts.get(f.kind, 0) + 1
            parts.append(text[pos:])
            result = ("".join(parts), tuple(sorted(counts.items())))
        if len(text) <= _CACHE_MAX_LEN:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[text] = result
        return result
