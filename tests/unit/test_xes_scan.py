"""The scanning XES reader (the default) against lxml's reader, which it falls back to.

Two guarantees: on every file the scanner reads, the replay (events, order, values, types,
dropped counts) and the error are exactly lxml's reader's; and every construct outside the
scanner's subset makes it hand the file to lxml's reader (``read_columns`` returns ``None``)
rather than read it differently. pm4py's reader stays the reference of
``tests/unit/test_xes_reader.py``, which runs the default (this) reader against it.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import msgspec
import pytest
from test_xes_reader import BAD, TYPED, _log_path, _shared_logs, _xes

from procvault.generators import xes_scan
from procvault.generators.xes import read_xes
from procvault.monitor.errors import InputError
from procvault.streams import codec


def _replay(path: Path, reader: str) -> tuple[list[str], dict[str, int]]:
    log = read_xes(path, reader=reader)  # type: ignore[arg-type]
    return [codec.to_json(e) for e in log.replay(end_markers=True)], dict(log.dropped_attributes)


def _scanned(path: Path) -> bool:
    """Whether the scanner read the file itself (a problem with a trace included)."""
    try:
        return xes_scan.read_columns(path) is not None
    except InputError:
        return True


def _same_as_lxml(path: Path) -> None:
    try:
        want = _replay(path, "lxml")
    except InputError as exc:
        with pytest.raises(InputError) as info:
            _replay(path, "scan")
        assert str(info.value) == str(exc)
        return
    assert _replay(path, "scan") == want


def _trace(*events: str, attrs: str = "") -> str:
    return f'<trace><string key="concept:name" value="c1"/>{attrs}{"".join(events)}</trace>'


def _event(body: str = "", ts: str = "2024-01-01T00:00:00+01:00") -> str:
    return (
        f'<event><string key="concept:name" value="A"/>'
        f'<date key="time:timestamp" value="{ts}"/>{body}</event>'
    )


@pytest.mark.parametrize("name", _shared_logs())
def test_every_shared_log_is_scanned_and_read_as_lxml_reads_it(name: str) -> None:
    path = _log_path(name)
    assert _scanned(path), f"{name} fell back to lxml's reader"
    _same_as_lxml(path)


#: Inside the subset, with something the scanner has to get right.
INSIDE = {
    "entities and character references": _xes(
        _trace(_event('<string key="k&amp;" value="a &lt;&gt;&quot;&apos; &#233;&#x6F22; &#9;"/>'))
    ),
    "values as pm4py converts them": _xes(
        _trace(
            _event(
                '<int key="i" value=" 7 "/><int key="big" value="123456789012345678901234567890"/>'
                '<float key="f" value="-0.0"/><float key="n" value="NaN"/>'
                '<boolean key="b" value="TRUE"/><id key="u" value="x"/>'
                '<date key="d" value="2024-02-29T23:00:00-01:00"/>'
            ),
            _event(ts="2024-01-01T00:00:00Z"),
            _event(ts="2024-01-01T00:00:00"),
        )
    ),
    "last occurrence wins, a bad value never": _xes(
        _trace(
            _event(
                '<string key="dup" value="first"/><string key="dup" value="last"/>'
                '<int key="keep" value="1"/><int key="keep" value="oops"/>'
                '<int key="bad" value="seven"/><date key="baddate" value="yesterday"/>'
            )
        )
    ),
    "a timestamp written twice": _xes(
        _trace(_event('<date key="time:timestamp" value="2024-01-02T00:00:00+00:00"/>'))
    ),
    "whitespace inside tags, trace attributes after events": _xes(
        '<trace >\n\t<string  key="concept:name"\n value="c1" />'
        + _event()
        + '<string key="creator" value="x"/><event\n>'
        '<string key="concept:name" value="B"/>'
        '<date key="time:timestamp" value="2024-01-01T00:00:01+00:00"/></event >\n</trace\t>'
    ),
    "log attributes between traces": _xes(
        _trace(_event()) + '<string key="origin" value="x"/>' + _trace(_event()).replace("c1", "c2")
    ),
    "an integer activity and resource": _xes(
        '<trace><string key="concept:name" value="c1"/><event><int key="concept:name" value="5"/>'
        '<int key="org:resource" value="7"/>'
        '<date key="time:timestamp" value="2024-01-01T00:00:00+00:00"/></event></trace>'
    ),
    "an event attribute that is also a trace attribute": _xes(
        _trace(_event('<string key="case:x" value="1"/>'), attrs='<string key="x" value="2"/>')
    ),
    "an empty trace": _xes(_trace() + _trace(_event()).replace("c1", "c2")),
    "a date at the edge of the range": _xes(
        _trace(_event(ts="0001-01-01T00:30:00+01:00"), _event(ts="9999-12-31T23:00:00-01:00"))
    ),
}


@pytest.mark.parametrize("kind", sorted(INSIDE))
def test_the_subset_is_read_as_lxml_reads_it(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "in.xes"
    path.write_text(INSIDE[kind], encoding="utf-8")
    assert _scanned(path)
    _same_as_lxml(path)


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_gives_lxml_readers_error(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.xes"
    path.write_text(BAD[kind][0], encoding="utf-8")
    _same_as_lxml(path)


#: Outside the subset: each must make the scanner fall back.
OUTSIDE = {
    "comment among traces": _xes(_trace(_event()) + "<!-- x -->"),
    "comment after the log": _xes(_trace(_event())) + "<!-- x -->\n",
    "CDATA": _xes(_trace(_event("<![CDATA[x]]>"))),
    "text among attributes": _xes(_trace(_event("text"))),
    "text after an end tag": _xes(_trace(_event() + "text")),
    "a literal tab in a value": _xes(_trace(_event('<string key="t" value="a\tb"/>'))),
    "a line break in a value": _xes(_trace(_event('<string key="t" value="a\nb"/>'))),
    "single quotes": _xes(_trace(_event("<string key='t' value='x'/>"))),
    "value before key": _xes(_trace(_event('<string value="x" key="t"/>'))),
    "an attribute without a value": _xes(_trace(_event('<string key="t"/>'))),
    "a list": _xes(_trace(_event('<list key="l"/>'))),
    "a nested attribute": _xes(
        _trace(_event('<string key="n" value="v"><string key="c" value="d"/></string>'))
    ),
    "an unknown element": _xes(_trace(_event('<meta key="m" value="v"/>'))),
    "a prefixed tag": _xes(_trace(_event('<xes:string key="t" value="x"/>'))).replace(
        "<log ", '<log xmlns:xes="http://www.xes-standard.org/" '
    ),
    "an empty event": _xes(_trace(_event(), "<event/>")),
    "an undefined entity": _xes(_trace(_event('<string key="t" value="&nbsp;"/>'))),
    "a character reference to a non-character": _xes(
        _trace(_event('<string key="t" value="&#0;"/>'))
    ),
    "a control character": _xes(_trace(_event('<string key="t" value="a\x01b"/>'))),
    "a control character in a timestamp": _xes(_trace(_event(ts="2024-01-01\x0100:00:00"))),
    "a DOCTYPE": _xes(_trace(_event())).replace(
        "<log ", '<!DOCTYPE log [<!ATTLIST string value CDATA "d">]>\n<log '
    ),
    "mismatched end tag": _xes(_trace(_event()).replace("</trace>", "</event></trace>")),
    "truncated": _xes(_trace(_event(), _event()))[:-40],
    "no end of log": _xes(_trace(_event())).replace("</log>", ""),
    "an event outside a trace": _xes(_trace(_event()) + _event()),
    "a trace in a trace": _xes(_trace(_trace(_event()))),
    "two roots": _xes(_trace(_event())) + "<log/>",
    "a comment hiding the first trace": _xes("<!-- <trace> -->" + _trace(_event())),
    "not XES": '<?xml version="1.0"?><catalog><trace/></catalog>',
}


@pytest.mark.parametrize("kind", sorted(OUTSIDE))
def test_outside_the_subset_the_scanner_falls_back(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "out.xes"
    path.write_text(OUTSIDE[kind], encoding="utf-8")
    assert not _scanned(path)
    _same_as_lxml(path)


def test_invalid_utf8_falls_back(tmp_path: Path) -> None:
    path = tmp_path / "latin1.xes"
    path.write_bytes(_xes(_trace(_event('<string key="t" value="caf\xe9"/>'))).encode("latin-1"))
    assert not _scanned(path)
    _same_as_lxml(path)


def test_the_typed_log_falls_back_and_reads_as_lxml_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "typed.xes"
    path.write_text(TYPED, encoding="utf-8")
    assert not _scanned(path)  # a literal tab and a nested attribute
    _same_as_lxml(path)


def test_truncated_gzip_falls_back_to_the_same_error(tmp_path: Path, sepsis_log: Path) -> None:
    path = tmp_path / "cut.xes.gz"
    path.write_bytes(sepsis_log.read_bytes()[:50_000])
    assert not _scanned(path)
    _same_as_lxml(path)


def test_chunk_boundaries_and_a_full_cache_change_nothing(
    sepsis_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    want = _replay(sepsis_log, "lxml")
    plain = tmp_path / "sepsis.xes"
    plain.write_bytes(gzip.decompress(sepsis_log.read_bytes()))
    monkeypatch.setattr(xes_scan, "_CHUNK", 997)  # cuts inside elements and UTF-8 sequences
    monkeypatch.setattr(xes_scan, "_CACHE_MAX", 64)
    assert _scanned(plain)
    assert _replay(plain, "scan") == want


def test_progress_reaches_the_file_size(sepsis_log: Path) -> None:
    seen: list[tuple[int, int]] = []
    assert xes_scan.read_columns(sepsis_log, lambda d, t: seen.append((d, t))) is not None
    size = sepsis_log.stat().st_size
    assert seen[-1] == (size, size) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_replay_without_attributes_leaves_only_them_out(running_example_log: Path) -> None:
    log = read_xes(running_example_log)
    full = list(log.replay(end_markers=True))
    bare = list(log.replay(end_markers=True, attributes=False))
    assert any(e.attributes for e in full)
    assert bare == [msgspec.structs.replace(e, attributes=()) for e in full]
