"""Scrub personal data out of free-text attribute values, offline.

Detectors (each finds spans, never keeps the text):

========== ===============================================================================
kind       how it is found
========== ===============================================================================
email      a regular expression for ``local@domain.tld``
phone      digit runs shaped like a phone number, confirmed by Google's libphonenumber
           (``phonenumbers``, metadata shipped in the package) as a *valid* number in one of
           the configured regions (numbers written with ``+CC`` are valid from any region)
iban       letters, two check digits and up to 30 characters (spaces between groups allowed),
           confirmed by the ISO 13616 mod-97 checksum and country format (``python-stdnum``)
card       13-19 digits (spaces or dashes between groups allowed) with a card-network prefix
           (Visa, Mastercard, Amex, Discover, JCB, Diners, Maestro, UnionPay) and a valid
           Luhn check digit (``python-stdnum``)
national_id ``us_ssn``: ``123-45-6789`` with the SSA's rules on area, group and serial
           numbers; ``nl_bsn``: 9 digits (or ``1234.56.789``) passing the BSN 11-check
           (both ``python-stdnum``)
name       person names from a configurable list, matched word by word (case-insensitive,
           but the first word must be capitalised, so "bill" in "the bill" is not "Bill")
========== ===============================================================================

A found span becomes ``[EMAIL]``, ``[PHONE]``, ``[IBAN]``, ``[CARD]``, ``[NATIONAL_ID]`` or
``[NAME]``. Where spans overlap, the earlier kind in :data:`KINDS` wins. Nothing is downloaded
at run time; both libraries are maintained and carry their rules in the package.

>>> s = Scrubber(ScrubSettings(phone_regions=("NL",), names=("Jan de Vries",)))
>>> text, counts = s.scrub("Jan de Vries (jan@example.org, 06-12345678) paid from "
...                        "NL91 ABNA 0417 1643 00")
>>> text
'[NAME] ([EMAIL], [PHONE]) paid from [IBAN]'
>>> counts
(('email', 1), ('iban', 1), ('name', 1), ('phone', 1))
>>> s.scrub("order 4711 shipped")
('order 4711 shipped', ())
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import phonenumbers
from stdnum import iban as _iban
from stdnum import luhn as _luhn
from stdnum.nl import bsn as _nl_bsn
from stdnum.us import ssn as _us_ssn

__all__ = ["KINDS", "NATIONAL_IDS", "Finding", "ScrubSettings", "Scrubber"]

#: Detector kinds, in priority order (an earlier kind wins an overlap).
KINDS: Final = ("email", "iban", "card", "national_id", "phone", "name")
#: National identifier schemes that can be detected.
NATIONAL_IDS: Final = ("us_ssn", "nl_bsn")
_TOKENS: Final = {k: f"[{k.upper()}]" for k in KINDS}
_PRIORITY: Final = {k: i for i, k in enumerate(KINDS)}

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
_PHONE_CANDIDATE_RE: Final = re.compile(r"(?<![\w+])(?:\+|\()?\d[\d ().\-/]{5,22}\d(?!\w)")
_WORD_RE: Final = re.compile(r"[^\W\d_]+(?:['\u2019-][^\W\d_]+)*")
_SPACE_RE: Final = re.compile(r"\s+")
_MIN_PHONE_DIGITS: Final = 7
_CACHE_LIMIT: Final = 1 << 16
_CACHE_MAX_LEN: Final = 256


class Finding(NamedTuple):
    """A span of personal data: its kind and where it is (never the text itself)."""

    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class ScrubSettings:
    """What the scrubber looks for.

    Parameters
    ----------
    kinds
        Detector kinds to run (a subset of :data:`KINDS`; default all).
    phone_regions
        ISO 3166 region codes whose national phone formats are recognised (``+CC`` numbers are
        recognised whatever the region).
    national_ids
        National id schemes (a subset of :data:`NATIONAL_IDS`).
    names
        Person names to find (``"Jan de Vries"``, ``"Maria"``).
    skip_attributes
        Attribute keys whose values are never scrubbed (codes such as ``lifecycle:transition``).
    """

    kinds: frozenset[str] = frozenset(KINDS)
    phone_regions: tuple[str, ...] = ("US",)
    national_ids: tuple[str, ...] = NATIONAL_IDS
    names: tuple[str, ...] = ()
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


class Scrubber:
    """Finds and replaces personal data in text; build once, call per value.

    Parameters
    ----------
    settings
        The :class:`ScrubSettings`.
    """

    __slots__ = ("_cache", "_max_words", "_names", "_regions", "_run", "settings")

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
        if not self._names:
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
            if any(f.start <= start and end <= f.end for f in taken):
                continue
            # One character either side lets libphonenumber reject a number glued to other
            # text, and three after let it see a time suffix ("2024-03-31 14:30" is no phone).
            base = max(0, start - 1)
            window = text[base : end + 3]
            for region in self._regions:
                found = False
                for pm in phonenumbers.PhoneNumberMatcher(window, region):
                    found = True
                    yield Finding("phone", base + pm.start, base + pm.end)
                if found:
                    break

    def _person_names(self, text: str) -> Iterable[Finding]:
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
        has_digits = sum(c.isdigit() for c in text) >= _MIN_PHONE_DIGITS
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
            found.extend(self._person_names(text))
        if not found:
            return found
        found.sort(key=lambda f: (_PRIORITY[f.kind], f.start))
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
