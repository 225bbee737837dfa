"""Match clauses of a privacy policy: an exact name or a regular expression.

A policy names activities, resources, attribute keys and attribute values either exactly
(``"ER Triage"``) or with a regular expression (``{regex: "Release [A-E]"}``). A regular
expression must match the *whole* text (:func:`re.fullmatch`): write ``.*HIV.*`` to find a
word inside a value.

>>> m = Matcher((Pattern("ER Triage"), Pattern(regex="Release [A-E]")))
>>> m("ER Triage"), m("Release B"), m("Release BB"), m("ER")
(True, True, False, False)
>>> Pattern(regex="Release [A-E")
Traceback (most recent call last):
...
ValueError: regex 'Release [A-E' does not compile: unterminated character set at position 8
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["Matcher", "Pattern", "value_text"]


@dataclass(frozen=True)
class Pattern:
    """One match clause: ``exact`` text or a ``regex`` that must match the whole text.

    Parameters
    ----------
    exact
        The text to match exactly (case-sensitive).
    regex
        A Python regular expression, matched with :func:`re.fullmatch`; compiled here, so a
        pattern that does not compile is refused at construction.
    """

    exact: str | None = None
    regex: str | None = None
    compiled: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.exact is None) == (self.regex is None):
            raise ValueError("a pattern is either an exact name or a regex")
        if self.exact is not None and not isinstance(self.exact, str):
            raise TypeError("an exact pattern must be a string")
        if self.regex is not None:
            if not isinstance(self.regex, str):
                raise TypeError("a regex must be a string")
            try:
                compiled = re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from None
            object.__setattr__(self, "compiled", compiled)

    def matches(self, text: str) -> bool:
        """Whether ``text`` matches this clause."""
        if self.compiled is None:
            return text == self.exact
        return self.compiled.fullmatch(text) is not None

    def describe(self) -> str:
        """The clause as written: ``'name'`` or ``/regex/``."""
        return repr(self.exact) if self.regex is None else f"/{self.regex}/"


class Matcher:
    """Any-of over several patterns: a set lookup for exact names, then each regex in turn."""

    __slots__ = ("_exact", "_fullmatch", "_regexes", "patterns")

    def __init__(self, patterns: Iterable[Pattern]) -> None:
        self.patterns: tuple[Pattern, ...] = tuple(patterns)
        self._exact = frozenset(p.exact for p in self.patterns if p.exact is not None)
        self._regexes = tuple(p.compiled for p in self.patterns if p.compiled is not None)
        # One alternation is one C call per text; patterns with global inline flags such as
        # "(?i)" cannot be joined, and are then tried one by one.
        self._fullmatch: Any = None
        if len(self._regexes) == 1:
            self._fullmatch = self._regexes[0].fullmatch
        elif self._regexes:
            try:
                joined = re.compile("|".join(f"(?:{r.pattern})" for r in self._regexes))
            except re.error:
                joined = None
            if joined is not None:
                self._fullmatch = joined.fullmatch

    def __call__(self, text: str) -> bool:
        """True when any pattern matches ``text``."""
        if text in self._exact:
            return True
        if self._fullmatch is not None:
            return self._fullmatch(text) is not None
        return any(r.fullmatch(text) is not None for r in self._regexes)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"Matcher({', '.join(p.describe() for p in self.patterns)})"


def value_text(value: Any) -> str:
    """The text a value pattern is matched against.

    Strings as they are; ``true``/``false`` for booleans; ISO 8601 for dates; ``""`` for a
    missing value; ``str()`` for numbers.

    >>> value_text(True), value_text(7), value_text(2.5), value_text(None)
    ('true', '7', '2.5', '')
    """
    if value.__class__ is str:
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
