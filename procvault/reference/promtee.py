"""ProMTEE's Rego + FSM compliance rules, evaluated event by event as ProMTEE does (reference path).

ProMTEE (``dave0909/Preserving-event-streams-secrecy-in-distributed-process-monitoring``) keeps a
compliance rule as two files: ``<rule>.rego``, an OPA policy whose package emits per-trace
transition objects such as ``InitToTemporaryViolated[trace_id]`` (``{trace_id: true}``), and
``<rule>.yaml``, a finite-state machine (``initial_state``, ``states``, ``transitions`` with
``from``/``to``/``event``). This module loads such a folder unchanged and evaluates it through
``regopy`` (the rego-cpp interpreter) the way ProMTEE's Go runtime drives it:

* **Input document.** Per event ProMTEE builds ``{"events": [...]}``: the *kept* events of the
  same case, then the current event. An event is kept (appended to the history after it was
  evaluated) only if its activity is a key of the extraction manifest's
  ``attribute_extraction``; each entry holds ``trace_concept_name``, ``concept_name``,
  ``timestamp`` and the attributes the manifest lists for that activity (when the event has
  them). Events of other cases are never passed.
* **Timestamps** are RFC 3339 with whole seconds (Go's ``time.RFC3339`` drops fractions; we
  truncate too). We write them in UTC with a numeric ``+00:00`` offset: rego-cpp's
  ``time.parse_rfc3339_ns`` refuses the ``Z`` form (it returns undefined), and the instant is
  the same.
* **End of case.** ProMTEE's stream generator sends, after the last event of each trace, an event
  named ``__END__`` with a *fixed* timestamp, ``2014-05-19T20:05:46+02:00``
  (:data:`PROMTEE_END_TIMESTAMP`) and no attributes. A ``CASE_END`` marker becomes that event
  (pass ``end_timestamp=None`` to use the marker's own time instead).
* **FSM driving** (``EvaluateEventLog`` in ProMTEE's ``complianceCheckingLogic.go``): every
  rule is evaluated on every event. With ``s0`` the case's state before the event (``Init``
  for a new case), for each target ``t`` listed for ``s0`` in the YAML, *in file order and with
  repetitions*, the rule output named ``<current>To<t>`` is read, where ``<current>`` is the
  state *now* (it may have changed earlier in the same loop); if it holds the case with
  ``true``, the case moves to ``t``. One pass only (ProMTEE's ``transitionFound`` stays false).
  A rule whose evaluation fails leaves every state unchanged (ProMTEE prints the error).
* **State names** are ProMTEE's six: Init, Pending, Violated, Satisfied, TemporarySatisfied,
  TemporaryViolated. A folder rule without a YAML file gets ProMTEE's default machine.

Known differences between rego-cpp and the OPA Go library ProMTEE ran, handled here:

* ``opa_compat=True`` (default): a line whose first character is ``(`` starts a new
  expression in OPA, but rego-cpp reads it as a call on the previous line's last term
  ("Function not found: ...most_recent_event.trace_concept_name"). Such lines get ``true;``
  put in front, which gives OPA's reading. Only ``trafficFines/case_start.rego`` has them;
  without this, every evaluation of that rule fails and every case stays ``Init``.
  Also, rego-cpp's ``time.parse_rfc3339_ns`` is undefined on the ``Z`` designator, which OPA
  accepts: timestamp literals ending in ``Z`` in a module become ``+00:00`` (``case_start``'s
  ``2000-01-01T00:00:00Z``; otherwise that rule can never leave ``Init``).
* rego-cpp refuses some modules OPA accepts (BPIC 2012 ``R25``: "Invalid bracket argument"
  at ``cannot_coexist[_]``). :func:`load_promtee_rules` raises :class:`ConfigError` with the
  file, line and reason, or, with ``skip_invalid=True``, leaves the rule out and lists it in
  :attr:`PromteeRuleSet.skipped`.
* ProMTEE's optional sliding window (delete the oldest ``W - 50`` kept events, of all cases,
  when the history reaches ``W``) is off by default (``sliding_window=None``).

The path is slow (hundreds of events per second) and rego-cpp's memory grows with use and is not
given back; :func:`evaluate_cases` runs long evaluations in worker processes that are replaced
every few cases.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NamedTuple

import yaml

from procvault.monitor.errors import ConfigError, InputError
from procvault.monitor.event import Event, EventKind

__all__ = [
    "PROMTEE_END_TIMESTAMP",
    "PROMTEE_STATES",
    "Manifest",
    "PromteeRule",
    "PromteeRuleSet",
    "RegoEvaluator",
    "RegoTransition",
    "evaluate_cases",
    "load_manifest",
    "load_promtee_rules",
]

#: ProMTEE's state enumeration (``statesMap`` of its compiler), in its order.
PROMTEE_STATES: Final = (
    "Init",
    "Pending",
    "Violated",
    "Satisfied",
    "TemporarySatisfied",
    "TemporaryViolated",
)

#: The timestamp ProMTEE's stream generator puts on every ``__END__`` event.
PROMTEE_END_TIMESTAMP: Final = datetime(2014, 5, 19, 18, 5, 46, tzinfo=UTC)

_END: Final = "__END__"
#: ProMTEE's machine for a rule without YAML (``default_fsm.yaml``).
_DEFAULT_FSM: Final = {"Init": ("Pending",), "Pending": ("Violated", "Init")}
_PAREN_LINE = re.compile(r"^(\s*)\(")
_Z_LITERAL = re.compile(r'"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z"')
_ENDS_EXPR = re.compile(r"[\w\"'\])]\s*$")


@dataclass(frozen=True)
class Manifest:
    """A ProMTEE extraction manifest: which attributes each activity carries into the history.

    Attributes
    ----------
    path
        The file it came from.
    extraction
        Activity -> attribute keys (``attribute_extraction``).
    """

    path: Path
    extraction: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class PromteeRule:
    """One ProMTEE rule: its Rego source and its state machine.

    Attributes
    ----------
    name
        The file name without ``.rego`` (ProMTEE's constraint name), e.g. ``appeal_notcollect``.
    package
        The Rego package the module declares.
    path
        The ``.rego`` file.
    source
        The module text evaluated (after the ``opa_compat`` rewrite, if any).
    transitions
        State -> target states, in YAML order with repetitions.
    rewritten
        Whether ``opa_compat`` changed the source.
    """

    name: str
    package: str
    path: Path
    source: str
    transitions: Mapping[str, tuple[str, ...]]
    rewritten: bool = False


@dataclass(frozen=True)
class PromteeRuleSet:
    """The rules of a folder, and those left out (with ``skip_invalid``) with the reason."""

    folder: Path
    rules: tuple[PromteeRule, ...]
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The rule names, in ProMTEE's order (sorted file names)."""
        return tuple(r.name for r in self.rules)


class RegoTransition(NamedTuple):
    """A state change of one rule for one case, caused by one event."""

    rule: str
    case_id: str
    old: str
    new: str
    activity: str
    timestamp: datetime


# ----------------------------------------------------------------------------- loading
def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read a ProMTEE ``extraction_manifest_*.json``.

    >>> load_manifest("no/such.json")
    Traceback (most recent call last):
    ...
    procvault.monitor.errors.InputError: no/such.json: file not found
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: file not found")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    extraction = raw.get("attribute_extraction") if isinstance(raw, dict) else None
    if not isinstance(extraction, dict):
        raise ConfigError(f"{p}: no 'attribute_extraction' object")
    out: dict[str, tuple[str, ...]] = {}
    for activity, keys in extraction.items():
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ConfigError(f"{p}: attribute_extraction[{activity!r}] must be a list of names")
        out[str(activity)] = tuple(keys)
    return Manifest(p, out)


def _load_fsm(path: Path) -> dict[str, tuple[str, ...]]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("transitions"), list):
        raise ConfigError(f"{path}: a ProMTEE FSM needs a 'transitions' list")
    if raw.get("initial_state", "Init") != "Init":
        # ProMTEE's runtime starts every case at its Init constant, whatever the YAML says.
        raise ConfigError(f"{path}: initial_state must be Init (ProMTEE ignores any other)")
    table: dict[str, list[str]] = {}
    for i, t in enumerate(raw["transitions"]):
        if not isinstance(t, dict) or "from" not in t or "to" not in t:
            raise ConfigError(f"{path}: transition #{i + 1} needs 'from' and 'to'")
        for key in ("from", "to"):
            if t[key] not in PROMTEE_STATES:
                raise ConfigError(
                    f"{path}: transition #{i + 1}: unknown state {t[key]!r} "
                    f"(ProMTEE knows {', '.join(PROMTEE_STATES)})"
                )
        table.setdefault(t["from"], []).append(t["to"])
    return {k: tuple(v) for k, v in table.items()}


class _CapturedOutput:
    """Capture what a C library writes on file descriptors 1 and 2 (rego-cpp prints errors)."""

    def __enter__(self) -> _CapturedOutput:
        self._tmp = tempfile.TemporaryFile(mode="w+b")
        self._saved = [os.dup(1), os.dup(2)]
        os.dup2(self._tmp.fileno(), 1)
        os.dup2(self._tmp.fileno(), 2)
        self.text = ""
        return self

    def __exit__(self, *exc: object) -> None:
        for fd, saved in zip((1, 2), self._saved, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        self._tmp.seek(0)
        self.text = self._tmp.read().decode("utf-8", "replace")
        self._tmp.close()


def _compile_error(path: Path, name: str, source: str) -> str | None:
    """The reason rego-cpp refuses ``source`` (with its line), or None if it evaluates."""
    from regopy import Interpreter  # type: ignore[import-untyped]
    from regopy.rego_shared import RegoError  # type: ignore[import-untyped]

    probe = {
        "events": [
            {
                "trace_concept_name": "c",
                "concept_name": _END,
                "timestamp": _rfc3339(datetime.now(UTC)),
            }
        ]
    }
    with _CapturedOutput() as cap:
        rg = Interpreter()
        try:
            rg.add_module(name, source)
        except RegoError as exc:
            return (
                f"{path}{_parse_error_location(str(exc), source)}: does not compile in rego-cpp: "
                + (_parse_error_message(str(exc)))
            )
        rg.set_input(probe)
        bundle = rg.build(f"x := data.{_package(path, source)}")
        built = bundle.ok()
        ok = False
        if built:
            try:
                out = rg.query_bundle(bundle)
                ok = out.ok() and bool(out.results)
            except json.JSONDecodeError:
                # rego-cpp reports run-time errors (not compile errors) as non-JSON output:
                # the module compiled. Rules like that fail per event and are counted.
                ok = True
    if ok:
        return None
    text = cap.text
    where = re.search(rf"--\s*{re.escape(name)}:(\d+):(\d+)", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    reason = lines[1] if len(lines) > 1 and lines[0].startswith("Errors") else "rego-cpp refused it"
    line = f":{where.group(1)}:{where.group(2)}" if where else ""
    return f"{path}{line}: does not compile in rego-cpp: {reason}"


def _opa_compat(text: str) -> str:
    """Rewrite what rego-cpp reads differently from OPA (see the module docstring)."""
    text = _Z_LITERAL.sub(r'"\1+00:00"', text)
    lines = text.split("\n")
    previous = ""
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if _PAREN_LINE.match(line) and _ENDS_EXPR.search(previous.split("#", maxsplit=1)[0]):
            lines[i] = _PAREN_LINE.sub(r"\1true; (", line, count=1)
        previous = line
    return "\n".join(lines)


def _parse_error_location(text: str, source: str) -> str:
    """``:line:column`` from rego-cpp's ``(error N:name|offset|length`` form, if present."""
    m = re.search(r"\|(\d+)\|\d+", text)
    if m is None:
        return ""
    offset = int(m.group(1))
    line = source.count("\n", 0, offset) + 1
    column = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return f":{line}:{column}"


def _parse_error_message(text: str) -> str:
    m = re.search(r"\(errormsg \d+:([^)]*)\)", text)
    return m.group(1).strip() if m else "rego-cpp refused it"


def _package(path: Path, source: str) -> str:
    m = re.search(r"^\s*package\s+([A-Za-z_][\w.]*)", source, re.MULTILINE)
    if m is None:
        raise ConfigError(f"{path}:1: no 'package' declaration")
    return m.group(1)


def load_promtee_rules(
    folder: str | os.PathLike[str],
    *,
    opa_compat: bool = True,
    skip_invalid: bool = False,
) -> PromteeRuleSet:
    """Load every ``*.rego`` of a ProMTEE rule folder with its FSM (``<name>.yaml``).

    Each module is compiled once here, so a rule that rego-cpp refuses fails now, with its
    file, line and reason (or is skipped, with ``skip_invalid``). See the module docstring for
    ``opa_compat``.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    files = sorted(p for p in root.iterdir() if p.suffix == ".rego")
    if not files:
        raise ConfigError(f"{root}: no .rego files")
    rules: list[PromteeRule] = []
    skipped: list[tuple[str, str]] = []
    for path in files:
        name = path.name.split(".")[0]  # ProMTEE: file.split(".")[0]
        text = path.read_text(encoding="utf-8")
        source = _opa_compat(text) if opa_compat else text
        package = _package(path, source)
        fsm_path = path.with_suffix(".yaml")
        fsm = _load_fsm(fsm_path) if fsm_path.exists() else dict(_DEFAULT_FSM)
        problem = _compile_error(path, name, source)
        if problem is not None:
            if skip_invalid:
                skipped.append((name, problem))
                continue
            raise ConfigError(problem)
        rules.append(PromteeRule(name, package, path, source, fsm, rewritten=source != text))
    return PromteeRuleSet(root, tuple(rules), tuple(skipped))


# ----------------------------------------------------------------------------- evaluation
def _rfc3339(ts: datetime) -> str:
    """Go's ``time.RFC3339`` (whole seconds), in UTC with a numeric offset (see module doc)."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return _rfc3339(value)
    return value


@dataclass
class _Compiled:
    rule: PromteeRule
    interpreter: Any
    bundle: Any
    states: dict[str, str] = field(default_factory=dict)


class RegoEvaluator:
    """ProMTEE's compliance checking, one event at a time, through regopy.

    Parameters
    ----------
    rules
        From :func:`load_promtee_rules`.
    manifest
        From :func:`load_manifest`.
    sliding_window
        ProMTEE's global history bound ``W`` (``None``: unbounded, the default).
    end_timestamp
        The timestamp of ``__END__`` events (ProMTEE's constant by default; ``None``: the
        marker's own time).
    """

    def __init__(
        self,
        rules: PromteeRuleSet,
        manifest: Manifest,
        *,
        sliding_window: int | None = None,
        end_timestamp: datetime | None = PROMTEE_END_TIMESTAMP,
    ) -> None:
        from regopy import Interpreter

        if sliding_window is not None and sliding_window <= 50:
            raise ValueError("sliding_window must be > 50 (ProMTEE keeps the last 50 events)")
        self.rules: Final = rules
        self.manifest: Final = manifest
        self.sliding_window: Final = sliding_window
        self.end_timestamp: Final = end_timestamp
        self._compiled: list[_Compiled] = []
        for rule in rules.rules:
            rg = Interpreter()
            rg.add_module(rule.name, rule.source)
            bundle = rg.build(f"x := data.{rule.package}")
            self._compiled.append(_Compiled(rule, rg, bundle))
        #: The kept history, per case (ProMTEE keeps one list for all cases and filters it).
        self._history: dict[str, list[dict[str, Any]]] = {}
        self._global: list[tuple[str, dict[str, Any]]] = []
        #: Failed evaluations per rule (ProMTEE prints the error and leaves the state).
        self.errors: dict[str, int] = {r.name: 0 for r in rules.rules}
        self.evaluations = 0

    def _entry(self, event: Event) -> tuple[dict[str, Any], bool]:
        if event.kind == EventKind.CASE_END:
            ts = self.end_timestamp or event.timestamp
            return {
                "trace_concept_name": event.case_id,
                "concept_name": _END,
                "timestamp": _rfc3339(ts),
            }, False
        entry: dict[str, Any] = {
            "trace_concept_name": event.case_id,
            "concept_name": event.activity,
            "timestamp": _rfc3339(event.timestamp),
        }
        keys = self.manifest.extraction.get(event.activity)
        if keys is None:
            return entry, False
        for key in keys:
            value = event.resource if key == "org:resource" else event.attr(key, _MISSING)  # type: ignore[arg-type]
            if value is not _MISSING and value is not None:
                entry[key] = _json_value(value)
        return entry, True

    def update(self, event: Event) -> tuple[RegoTransition, ...]:
        """Evaluate every rule on ``event`` and drive the FSMs; return the state changes."""
        if event.kind not in (EventKind.ACTIVITY, EventKind.CASE_END):
            return ()
        case_id = event.case_id
        entry, keep = self._entry(event)
        history = self._history.setdefault(case_id, [])
        doc = {"events": [*history, entry]}
        out: list[RegoTransition] = []
        for c in self._compiled:
            self.evaluations += 1
            c.interpreter.set_input(doc)
            try:
                result = c.interpreter.query_bundle(c.bundle)
            except json.JSONDecodeError:
                self.errors[c.rule.name] += 1
                continue
            if not result.results:
                self.errors[c.rule.name] += 1
                continue
            value = result.results[0].bindings.get("x")
            if not isinstance(value, dict):
                self.errors[c.rule.name] += 1
                continue
            states = c.states
            start = states.setdefault(case_id, "Init")
            for target in c.rule.transitions.get(start, ()):
                current = states[case_id]
                fired = value.get(f"{current}To{target}")
                if isinstance(fired, dict):
                    for cid, flag in fired.items():
                        if flag is True:
                            old = states.get(cid, "Init")
                            states[cid] = target
                            out.append(
                                RegoTransition(
                                    c.rule.name,
                                    cid,
                                    old,
                                    target,
                                    entry["concept_name"],
                                    event.timestamp,
                                )
                            )
        if keep:
            history.append(entry)
            if self.sliding_window is not None:
                self._global.append((case_id, entry))
                if len(self._global) == self.sliding_window:
                    drop = self._global[: self.sliding_window - 50]
                    del self._global[: self.sliding_window - 50]
                    for cid, e in drop:
                        h = self._history.get(cid)
                        if h and h[0] is e:
                            h.pop(0)
        return tuple(out)

    def states(self, case_id: str) -> dict[str, str]:
        """Each rule's state for ``case_id`` (``Init`` when never seen)."""
        return {c.rule.name: c.states.get(case_id, "Init") for c in self._compiled}

    def forget(self, case_id: str) -> dict[str, str]:
        """Return :meth:`states` and drop the case's history and states (ProMTEE keeps them)."""
        final = self.states(case_id)
        self._history.pop(case_id, None)
        for c in self._compiled:
            c.states.pop(case_id, None)
        return final


_MISSING: Final = object()


# ----------------------------------------------------------------------------- worker processes
_WORKER: dict[str, Any] = {}


def _worker_run(
    args: tuple[str, str, dict[str, Any], list[tuple[str, list[Event]]]],
) -> tuple[list[tuple[str, dict[str, str]]], dict[str, int]]:
    folder, manifest_path, options, cases = args
    key = f"{folder}|{manifest_path}|{sorted(options.items())}"
    if _WORKER.get("key") != key:
        rules = load_promtee_rules(
            folder, opa_compat=options.get("opa_compat", True), skip_invalid=True
        )
        _WORKER["key"] = key
        _WORKER["rules"] = rules
        _WORKER["manifest"] = load_manifest(manifest_path)
    ev = RegoEvaluator(
        _WORKER["rules"],
        _WORKER["manifest"],
        end_timestamp=options.get("end_timestamp", PROMTEE_END_TIMESTAMP),
    )
    results = []
    for case_id, events in cases:
        for e in events:
            ev.update(e)
        ev.update(
            Event.case_end(case_id, events[-1].timestamp if events else PROMTEE_END_TIMESTAMP)
        )
        results.append((case_id, ev.forget(case_id)))
    return results, dict(ev.errors)


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def evaluate_cases(
    folder: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    cases: Iterable[tuple[str, Sequence[Event]]],
    *,
    workers: int = 2,
    cases_per_task: int = 25,
    opa_compat: bool = True,
    end_timestamp: datetime | None = PROMTEE_END_TIMESTAMP,
) -> tuple[dict[str, dict[str, str]], dict[str, int]]:
    """Final ProMTEE states of whole cases, evaluated in worker processes.

    Each case is evaluated on its own events followed by ``__END__``, as ProMTEE's stream
    generator sends a trace. Workers are replaced after each task of ``cases_per_task`` cases,
    which bounds rego-cpp's memory growth. Rules rego-cpp refuses are skipped. Returns the
    states per case (rule -> state) and the failed evaluations per rule.
    """
    options = {"opa_compat": opa_compat, "end_timestamp": end_timestamp}
    tasks = [
        (str(folder), str(manifest), options, chunk)
        for chunk in _chunks([(c, list(evs)) for c, evs in cases], cases_per_task)
    ]
    states: dict[str, dict[str, str]] = {}
    errors: dict[str, int] = {}
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, max_tasks_per_child=1) as pool:
        for results, errs in pool.map(_worker_run, tasks):
            states.update(results)
            for k, n in errs.items():
                errors[k] = errors.get(k, 0) + n
    return states, errors
