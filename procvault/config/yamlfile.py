"""The one YAML loader of procvault's files: safe, line-aware, refusing a key given twice.

Mappings load as :class:`LineDict` (a ``dict`` with the line of the mapping and of each key),
sequences as :class:`LineList` (a ``list`` with the line of each item). A key that appears twice
in one mapping is an error (PyYAML would silently keep the last one).

>>> doc = load_yaml_text("a: 1\\nb:\\n  - x\\n  - y\\n", "p.yaml")
>>> doc, doc.lines["b"], doc["b"].lines
({'a': 1, 'b': ['x', 'y']}, 2, [3, 4])
>>> load_yaml_text("a: 1\\na: 2\\n", "p.yaml")
Traceback (most recent call last):
...
procvault.monitor.errors.ConfigError: p.yaml:2: key 'a' appears twice
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from procvault.monitor.errors import ConfigError

__all__ = ["LineDict", "LineList", "line_of", "load_yaml_file", "load_yaml_text"]


class LineDict(dict[Any, Any]):
    """A mapping from YAML: ``line`` is where it starts, ``lines[key]`` where each key is."""

    line: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[Any, int] = {}


class LineList(list[Any]):
    """A sequence from YAML: ``line`` is where it starts, ``lines[i]`` where item ``i`` is."""

    line: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[int] = []


class _Problem(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message, line)
        self.message, self.line = message, line


class _Loader(yaml.SafeLoader):
    """A safe loader whose mappings and sequences carry line numbers."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    own = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)
    merged = len(node.value) - own  # merge (<<) pairs come first: own keys override them
    out = LineDict()
    out.line = node.start_mark.line + 1
    mine: set[Any] = set()
    for i, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, bool):  # YAML 1.1 reads on/off/yes/no as booleans: keep the word
            key = key_node.value
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            raise _Problem("a mapping key must be a plain value", line) from None
        if key in mine:
            raise _Problem(f"key {key!r} appears twice", line)
        if i >= merged:
            mine.add(key)
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = line
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList()
    out.line = node.start_mark.line + 1
    for child in node.value:
        out.append(loader.construct_object(child, deep=True))
        out.lines.append(child.start_mark.line + 1)
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml_text(text: str, source: str) -> Any:
    """Parse ``text`` (named ``source`` in errors) into line-aware dicts and lists.

    Raises :class:`ConfigError` with one line ``SOURCE:LINE: problem`` on a syntax error, a
    duplicate key or an unhashable key.
    """
    try:
        return yaml.load(text, Loader=_Loader)
    except _Problem as exc:
        raise ConfigError(f"{source}:{exc.line}: {exc.message}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise ConfigError(f"{source}{line}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: YAML error: {' '.join(str(exc).split())}") from None


def load_yaml_file(path: str | os.PathLike[str], what: str) -> Any:
    """Read and parse ``path``; one-line :class:`ConfigError` (naming the file and the line)
    when it cannot be read or parsed."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such {what} file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read the {what}: {exc}") from None
    return load_yaml_text(text, str(file))


def line_of(node: object, default: object = None) -> int | None:
    """The line a mapping or sequence from :func:`load_yaml_text` started on (else
    ``default``, when it is a line number)."""
    line = getattr(node, "line", None)
    if isinstance(line, int) and line:
        return line
    return default if isinstance(default, int) else None
