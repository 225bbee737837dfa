"""The lxml XES reader against pm4py's reader and against the pm4py-based replay it replaced.

Oracles: ``pm4py.read_xes`` (``reader="pm4py"``, the same columns filled from pm4py's objects),
and ``_legacy_events`` below, the replay procvault had before the columnar reader (pm4py's legacy
``EventLog`` turned into ``Event.create`` objects, sorted by ``(timestamp, case, event)``), kept
here verbatim in substance so that order, values, types and time zones are checked against it.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from procvault.cli import main
from procvault.generators._pm4py import import_pm4py
from procvault.generators.xes import read_xes
from procvault.monitor.errors import ConfigError, InputError
from procvault.monitor.event import Event
from procvault.streams import codec

#: The shared data folder, as conftest finds it (needed at collection time, for the ids).
SHARED_DATA = Path(
    os.environ.get(
        "PROCVAULT_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"
    )
)


def _shared_logs() -> list[str]:
    return sorted(p.name for p in (SHARED_DATA / "logs").glob("*.xes*"))


def _log_path(name: str) -> Path:
    return SHARED_DATA / "logs" / name


#: A model per shared log for the monitor comparison (helpdesk has none: any net will do, the
#: per-case results are compared, not judged).
MODELS = {
    "sepsis_cases.xes.gz": "models/promtee/pnml/sepsis.pnml",
    "roadtraffic100traces.xes.gz": "models/pm4py/roadtraffic.pnml",
    "running-example.xes.gz": "models/pm4py/running-example.pnml",
    "receipt.xes.gz": "models/pm4py/receipt.bpmn",
    "helpdesk.xes.gz": "models/pm4py/running-example.pnml",
}


def _legacy_events(path: Path) -> list[Event]:
    """Replay order and events exactly as procvault built them before the columnar reader."""
    pm4py = import_pm4py()
    log = pm4py.read_xes(str(path), variant="iterparse", return_legacy_log_object=True)
    keyed = []
    for ci, trace in enumerate(log):
        case_id = str(trace.attributes["concept:name"])
        case_attrs = [
            ("case:" + k, v.astimezone(UTC) if isinstance(v, datetime) else v)
            for k, v in trace.attributes.items()
            if k != "concept:name"
        ]
        for ei, raw in enumerate(trace):
            ts = raw["time:timestamp"]
            resource = raw.get("org:resource")
            attrs = list(case_attrs) + [
                (k, v.astimezone(UTC) if isinstance(v, datetime) else v)
                for k, v in raw.items()
                if k not in ("concept:name", "time:timestamp", "org:resource")
            ]
            event = Event.create(
                case_id,
                str(raw["concept:name"]),
                ts,
                resource=None if resource is None else str(resource),
                attributes=attrs,
            )
            keyed.append((event.timestamp, ci, ei, event))
    keyed.sort(key=lambda k: (k[0], k[1], k[2]))
    return [k[3] for k in keyed]


def _xes(body: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<log xes.version="1.0">\n{body}\n</log>\n'


# ------------------------------------------------------------------ against the oracles
@pytest.mark.parametrize("name", _shared_logs())
def test_replay_equals_the_pm4py_based_replay_it_replaced(name: str) -> None:
    path = _log_path(name)
    legacy = _legacy_events(path)
    log = read_xes(path)
    assert [codec.to_json(e) for e in log.replay()] == [codec.to_json(e) for e in legacy]
    assert list(log.events) == legacy  # the Sequence view builds the same events
    assert log.events[0] == legacy[0] and log.events[-1] == legacy[-1]
    assert log.dropped_attributes == {}


@pytest.mark.parametrize("name", _shared_logs())
@pytest.mark.parametrize("markers", [False, True])
def test_cli_replay_writes_identical_bytes_with_either_reader(
    name: str, markers: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _log_path(name)
    outs = {}
    for reader in ("scan", "lxml", "pm4py"):
        monkeypatch.setenv("PROCVAULT_XES_READER", reader)
        out = tmp_path / f"{reader}.jsonl"
        argv = ["replay", str(path), "--to", str(out)] + (["--end-markers"] if markers else [])
        assert main(argv) == 0
        outs[reader] = out.read_bytes()
    assert outs["scan"] == outs["lxml"] == outs["pm4py"]
    assert outs["lxml"].count(b"\n") > 0


@pytest.mark.parametrize("name", _shared_logs())
def test_monitor_case_results_identical_with_either_reader(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = {}
    for reader in ("scan", "lxml", "pm4py"):
        monkeypatch.setenv("PROCVAULT_XES_READER", reader)
        out = tmp_path / f"{reader}.jsonl"
        model = str(SHARED_DATA / MODELS[name])
        argv = ["monitor", str(_log_path(name)), "--model", model, "--case-results", str(out)]
        assert main(argv) == 0
        results[reader] = out.read_text()
    assert results["scan"] == results["lxml"] == results["pm4py"]
    assert len(results["lxml"].splitlines()) == read_xes(_log_path(name)).n_cases


# ------------------------------------------------------------------ values and types
TYPED = _xes("""
<trace>
  <string key="concept:name" value="c&amp;1"/>
  <date key="admitted" value="2024-03-01T10:00:00.123456+05:30"/>
  <int key="age" value="70"/>
  <event>
    <string key="concept:name" value="A"/>
    <date key="time:timestamp" value="2024-03-01T10:00:00Z"/>
    <string key="org:resource" value="Pete"/>
    <int key="big" value="123456789012345678901234567890"/>
    <int key="neg" value="-9223372036854775808"/>
    <float key="nan" value="NaN"/>
    <float key="negzero" value="-0.0"/>
    <float key="inf" value="-INF"/>
    <float key="exp" value="1e-300"/>
    <boolean key="yes" value="TRUE"/>
    <boolean key="no" value="0"/>
    <id key="uuid" value="3f2a"/>
    <string key="text" value="tab&#9;here &lt;b&gt; &quot;q&quot; é 漢"/>
    <string key="spaces" value="a	b
c"/>
    <string key="novalue"/>
    <list key="emptylist"/>
    <list key="list"><values><string key="x" value="1"/></values></list>
    <string key="nested" value="n"><string key="child" value="c"/></string>
    <int key="badint" value="seven"/>
    <date key="baddate" value="yesterday"/>
    <string key="dup" value="first"/>
    <string key="dup" value="last"/>
    <int key="keep" value="1"/>
    <int key="keep" value="oops"/>
  </event>
  <event>
    <string key="concept:name" value="B"/>
    <date key="time:timestamp" value="2024-03-01T10:00:00"/>
    <date key="when" value="2024-02-29T23:00:00-01:00"/>
  </event>
</trace>
<trace>
  <string key="concept:name" value="c2"/>
  <event>
    <string key="concept:name" value="C"/>
    <date key="time:timestamp" value="2024-03-01T09:59:59.999999+00:00"/>
  </event>
</trace>""")


def test_values_types_and_time_zones_match_pm4py_and_the_legacy_replay(tmp_path: Path) -> None:
    path = tmp_path / "typed.xes"
    path.write_text(TYPED, encoding="utf-8")
    lxml_log = read_xes(path)
    pm4py_log = read_xes(path, reader="pm4py")
    legacy = _legacy_events_lenient(path)
    as_json = [codec.to_json(e) for e in lxml_log.replay(end_markers=True)]
    assert as_json == [codec.to_json(e) for e in pm4py_log.replay(end_markers=True)]
    assert [codec.to_json(e) for e in lxml_log.replay()] == [codec.to_json(e) for e in legacy]
    c, a, b = lxml_log.events
    assert (c.case_id, a.case_id, b.case_id) == ("c2", "c&1", "c&1")  # 09:59:59.999999 first
    attrs = a.attributes_dict()
    assert attrs["big"] == 123456789012345678901234567890 and attrs["neg"] == -(2**63)
    assert str(attrs["nan"]) == "nan" and str(attrs["negzero"]) == "-0.0"
    assert attrs["inf"] == float("-inf") and attrs["exp"] == 1e-300
    assert (attrs["yes"], attrs["no"]) == (True, False)
    assert attrs["text"] == 'tab\there <b> "q" é 漢'
    assert attrs["spaces"] == "a b c"  # XML attribute-value normalisation
    assert attrs["novalue"] is None and attrs["emptylist"] is None
    assert (attrs["dup"], attrs["keep"]) == ("last", 1)  # last wins; a bad value never does
    assert attrs["case:admitted"] == datetime(2024, 3, 1, 4, 30, 0, 123456, tzinfo=UTC)
    assert attrs["case:age"] == 70 and a.resource == "Pete"
    assert b.attr("when") == datetime(2024, 3, 1, 0, 0, tzinfo=UTC)
    assert b.timestamp == a.timestamp  # naive is taken as UTC, like "Z"
    for missing in ("list", "nested", "badint", "baddate", "concept:name", "time:timestamp"):
        assert missing not in attrs
    # nested and list values are dropped and counted by both readers; unparseable ones too
    assert pm4py_log.dropped_attributes == {"list": 1, "nested": 1}
    assert lxml_log.dropped_attributes == {"baddate": 1, "badint": 1, "list": 1, "nested": 1}


def _legacy_events_lenient(path: Path) -> list[Event]:
    """:func:`_legacy_events`, leaving out the values the legacy replay dropped as unsupported."""
    pm4py = import_pm4py()
    log = pm4py.read_xes(str(path), variant="iterparse", return_legacy_log_object=True)
    for trace in log:
        for ev in trace:
            for key in [k for k, v in ev.items() if isinstance(v, dict)]:
                del ev[key]
    return _legacy_events_from(log)


def _legacy_events_from(log: Any) -> list[Event]:
    keyed = []
    for ci, trace in enumerate(log):
        case_id = str(trace.attributes["concept:name"])
        case_attrs = [("case:" + k, v) for k, v in trace.attributes.items() if k != "concept:name"]
        for ei, raw in enumerate(trace):
            resource = raw.get("org:resource")
            attrs = list(case_attrs) + [
                (k, v)
                for k, v in raw.items()
                if k not in ("concept:name", "time:timestamp", "org:resource")
            ]
            event = Event.create(
                case_id,
                str(raw["concept:name"]),
                raw["time:timestamp"],
                resource=None if resource is None else str(resource),
                attributes=attrs,
            )
            keyed.append((event.timestamp, ci, ei, event))
    keyed.sort(key=lambda k: (k[0], k[1], k[2]))
    return [k[3] for k in keyed]


def test_namespaced_xes_reads_like_plain_xes(tmp_path: Path) -> None:
    body = (
        '<trace><string key="concept:name" value="c"/><event>'
        '<string key="concept:name" value="A"/>'
        '<date key="time:timestamp" value="2024-01-01T00:00:00+00:00"/></event></trace>'
    )
    plain, spaced = tmp_path / "plain.xes", tmp_path / "ns.xes.gz"
    plain.write_text(_xes(body))
    spaced.write_bytes(
        gzip.compress(
            _xes(body).replace("<log ", '<log xmlns="http://www.xes-standard.org/" ').encode()
        )
    )
    assert list(read_xes(plain).replay()) == list(read_xes(spaced).replay())


def test_repeat_shifts_rounds_and_renames_cases(running_example_log: Path) -> None:
    log = read_xes(running_example_log)
    one = list(log.replay(end_markers=True))
    three = list(log.replay(end_markers=True, repeat=3, org="x"))
    assert len(three) == 3 * len(one)
    assert {e.org for e in three} == {"x"}
    ts = [e.timestamp for e in three]
    assert ts == sorted(ts)
    assert three[len(one)].case_id.endswith("#1") and three[-1].case_id.endswith("#2")
    assert [e.activity for e in three[: len(one)]] == [e.activity for e in one]


def test_unknown_reader_is_a_config_error(
    running_example_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROCVAULT_XES_READER", "fast")
    with pytest.raises(ConfigError, match=r"PROCVAULT_XES_READER: unknown XES reader 'fast'"):
        read_xes(running_example_log)


# ------------------------------------------------------------------ bad input
def _one_event(ts_element: str) -> str:
    return _xes(
        '<trace><string key="concept:name" value="c1"/><event>'
        f'<string key="concept:name" value="A"/>{ts_element}</event></trace>'
    )


BAD = {
    "non-XES XML": (
        '<?xml version="1.0"?><catalog><book id="1"/></catalog>',
        "not an XES log: the root element is <catalog>, not <log>",
    ),
    "unparseable timestamp": (
        _one_event('<date key="time:timestamp" value="22/10/2014 11:15"/>'),
        "event #1 of case 'c1' has an unparseable timestamp '22/10/2014 11:15' (time:timestamp)",
    ),
    "timestamp not a date": (
        _one_event('<string key="time:timestamp" value="2014-10-22T11:15:00"/>'),
        "event #1 of case 'c1' has a string time:timestamp ('2014-10-22T11:15:00'), not a date",
    ),
    "truncated XML": (
        _one_event('<date key="time:timestamp" value="2014-10-22T11:15:00"/>').split("</event>")[0],
        "not a valid XES log: Premature end of data in tag event",
    ),
    "event in event": (
        _xes('<trace><string key="concept:name" value="c1"/><event><event/></event></trace>'),
        "not a valid XES log: file contains <event> in another <event> tag",
    ),
    "trace in trace": (
        _xes("<trace><trace/></trace>"),
        "not a valid XES log: file contains <trace> in another <trace> tag",
    ),
    "event outside a trace": (
        _xes("<event/>"),
        "not a valid XES log: file contains an <event> outside a <trace>",
    ),
    "first event without a timestamp": (
        _one_event(""),
        "event #1 of case 'c1' has no timestamp (time:timestamp)",
    ),
    "duplicate case": (
        _xes(
            '<trace><string key="concept:name" value="c1"/></trace>'
            '<trace><string key="concept:name" value="c1"/></trace>'
        ),
        "case id 'c1' appears in more than one trace",
    ),
    "empty document": ("", "not a valid XES log"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_is_one_input_error_naming_the_file(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, message = BAD[kind]
    path = tmp_path / "bad.xes"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_xes(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert len(str(info.value).splitlines()) == 1
    assert main(["replay", str(path), "--to", "null"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"procvault: error: {info.value}"]


MALFORMED = {
    "not XML": "this is not XML",
    "truncated": _one_event("<date/>")[:60],
    "mismatched tags": _xes("<trace></event></trace>"),
    "undefined entity": _xes('<trace><string key="a" value="&nbsp;"/></trace>'),
    "two roots": _xes("") + "<log/>",
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_xml_gives_the_same_message_as_the_pm4py_reader(
    kind: str, tmp_path: Path
) -> None:
    path = tmp_path / "malformed.xes"
    path.write_text(MALFORMED[kind])
    messages = []
    for reader in ("scan", "lxml", "pm4py"):
        with pytest.raises(InputError) as info:
            read_xes(path, reader=reader)  # type: ignore[arg-type]
        messages.append(str(info.value))
    assert messages[0] == messages[1] == messages[2]
    assert messages[0].startswith(f"{path}: not a valid XES log: ")


def test_pm4py_reader_names_non_xes_xml_too(tmp_path: Path) -> None:
    # (pm4py takes any element whose name ends in "log", <catalog> too, for the log.)
    path = tmp_path / "books.xes"
    path.write_text('<?xml version="1.0"?><books><book id="1"/></books>')
    with pytest.raises(InputError, match=r"books.xes: not an XES log: no <log> element"):
        read_xes(path, reader="pm4py")


def test_a_malformed_file_is_reported_before_a_bad_trace(tmp_path: Path) -> None:
    # As pm4py read the whole file first: the XML error wins over the missing timestamp.
    path = tmp_path / "both.xes"
    path.write_text(_one_event("")[:-10])
    with pytest.raises(InputError, match=r"both\.xes: not a valid XES log: "):
        read_xes(path)


# ------------------------------------------------------------------ resources
def _synthetic(path: Path, n_cases: int, events_per_case: int) -> None:
    out = ['<?xml version="1.0" encoding="UTF-8"?>', "<log>"]
    for c in range(n_cases):
        out.append(f'<trace><string key="concept:name" value="case {c}"/>')
        for e in range(events_per_case):
            out.append(
                f'<event><string key="concept:name" value="act {e % 7}"/>'
                f'<date key="time:timestamp" value="2024-01-01T00:{e // 60 % 60:02d}:'
                f'{e % 60:02d}.{c:06d}+00:00"/><int key="n" value="{e}"/>'
                f'<float key="x" value="{e / 7}"/><string key="org:resource" value="r{c % 3}"/>'
                "</event>"
            )
        out.append("</trace>")
    out.append("</log>")
    path.write_text("\n".join(out))


def test_a_read_log_holds_columns_not_an_object_per_event(tmp_path: Path) -> None:
    path = tmp_path / "many.xes"
    _synthetic(path, n_cases=40, events_per_case=1_000)
    tracemalloc.start()
    try:
        log = read_xes(path)
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    per_event = held / log.n_events
    # 4 + 4 + 4 + 8 (case, activity, resource, timestamp), 8 + 8 (order, CSR start), 2 attributes
    # of 13 bytes, 8 per float and array slack: well under 120 bytes. An Event object per event
    # (struct, datetime, attribute tuples and values) costs several hundred.
    assert log.n_events == 40_000
    assert per_event < 120, f"{per_event:.0f} bytes per event held"


def test_replay_does_not_import_pm4py(tmp_path: Path) -> None:
    path = tmp_path / "small.xes"
    _synthetic(path, n_cases=2, events_per_case=3)
    code = (
        "import sys; from procvault.cli import main; "
        f"rc = main(['replay', {str(path)!r}, '--to', 'null']); "
        "print(json.dumps([rc, 'pm4py' in sys.modules]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", "import json; " + code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(proc.stdout) == [0, False]


def test_progress_reports_the_bytes_read_up_to_the_file_size(sepsis_log: Path) -> None:
    seen: list[tuple[int, int]] = []
    read_xes(sepsis_log, progress=lambda done, total: seen.append((done, total)))
    size = sepsis_log.stat().st_size
    assert seen and seen[-1] == (size, size)
    assert all(t == size for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
