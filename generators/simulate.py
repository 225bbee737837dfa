"""A seeded, reproducible stream of events simulated from an accepting Petri net.

:class:`Simulator` plays the token game on a net compiled once to integers: places become
indices, a marking is a tuple of token counts, and each transition is a pair of
``(place, tokens)`` tuples to consume and to produce. Markings already seen map to their enabled
transitions and successor markings in a small bounded cache, so a step usually costs two dict
lookups and a random draw. Cases arrive as a Poisson process and interleave through a heap keyed
by (time, sequence number); only active cases are held in memory.

Every random choice comes from one of five ``random.Random`` streams derived from ``seed``
(arrivals, control flow, durations, noise, resources). So the noise settings change neither
which activities a case performs nor when: with the same seed, a stream with noise is the
noise-free stream with events dropped, swapped or inserted.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from procvault.config.models import LoadedModel
from procvault.monitor.errors import ConfigError
from procvault.monitor.event import Event

__all__ = ["NOISE_KINDS", "SimulationRun", "SimulationStats", "Simulator"]

#: The noise operations :class:`Simulator` knows.
NOISE_KINDS: Final = frozenset({"skip", "swap", "insert"})

_DEFAULT_START: Final = datetime(2024, 1, 1, tzinfo=UTC)
_US_PER_HOUR: Final = 3_600_000_000
# Bound on the marking → successors cache, so an unbounded net cannot grow memory forever.
_CACHE_LIMIT: Final = 1 << 16
# How a case ended (indices into the counters).
_FINAL: Final = 0
_DEADLOCK: Final = 1
_TRUNCATED: Final = 2
# Noise operations as small ints, in a fixed order.
_SKIP: Final = 1
_SWAP: Final = 2
_INSERT: Final = 3
_NOISE_CODES: Final = {"skip": _SKIP, "swap": _SWAP, "insert": _INSERT}

Marking = tuple[int, ...]
# For one marking: is it final, then per enabled transition its label and the next marking.
_Successors = tuple[bool, tuple[str | None, ...], tuple[Marking, ...]]


@dataclass(frozen=True)
class SimulationStats:
    """What a :class:`SimulationRun` has produced so far.

    Parameters
    ----------
    cases_started
        Cases that have arrived.
    cases_completed
        Cases that reached the final marking.
    cases_deadlocked
        Cases that stopped because no transition was enabled outside the final marking.
    cases_truncated
        Cases that stopped after ``max_case_length`` steps.
    events
        Activity events yielded, inserted noise included, end markers excluded.
    noise_skipped, noise_swapped, noise_inserted
        Noise operations applied. A swap drawn for the last event of a case has no next event
        to swap with: it is not applied and not counted.
    """

    cases_started: int
    cases_completed: int
    cases_deadlocked: int
    cases_truncated: int
    events: int
    noise_skipped: int
    noise_swapped: int
    noise_inserted: int

    @property
    def noise_applied(self) -> int:
        """All noise operations applied."""
        return self.noise_skipped + self.noise_swapped + self.noise_inserted


class _Counters:
    """The mutable counters behind :class:`SimulationStats`."""

    __slots__ = ("ended", "events", "inserted", "skipped", "started", "swapped")

    def __init__(self) -> None:
        self.started = 0
        self.ended = [0, 0, 0]  # indexed by _FINAL, _DEADLOCK, _TRUNCATED
        self.events = 0
        self.skipped = 0
        self.swapped = 0
        self.inserted = 0


class _CompiledNet:
    """A Petri net as integers, with a bounded cache of successor markings.

    Places and transitions are put in a canonical order that depends on the structure, the
    labels and the markings, with names only as the last tie-break: pm4py's BPMN conversion
    names some transitions with random UUIDs, and the same seed must give the same stream in
    every process.
    """

    def __init__(self, model: LoadedModel) -> None:
        net = model.net
        places, transitions = _canonical_order(net, model.initial_marking, model.final_marking)
        index = {place: i for i, place in enumerate(places)}
        consume: list[tuple[tuple[int, int], ...]] = []
        produce: list[tuple[tuple[int, int], ...]] = []
        for t in transitions:
            if t.label == "":
                raise ConfigError(
                    f"transition {t.name!r} has an empty label; a silent one has label None"
                )
            consume.append(_arc_counts(index, t.in_arcs, "source"))
            produce.append(_arc_counts(index, t.out_arcs, "target"))
        self.place_names: tuple[str, ...] = tuple(p.name for p in places)
        self.labels: tuple[str | None, ...] = tuple(t.label for t in transitions)
        self.consume = tuple(consume)
        self.produce = tuple(produce)
        self.initial = _to_tuple(index, model.initial_marking, "initial")
        self.final = _to_tuple(index, model.final_marking, "final")
        self.cache: dict[Marking, _Successors] = {}

    def successors(self, marking: Marking) -> _Successors:
        """Whether ``marking`` is final, and its enabled transitions' labels and next markings."""
        found = self.cache.get(marking)
        if found is not None:
            return found
        labels: list[str | None] = []
        nexts: list[Marking] = []
        for label, consume, produce in zip(self.labels, self.consume, self.produce, strict=True):
            if all(marking[p] >= n for p, n in consume):
                after = list(marking)
                for p, n in consume:
                    after[p] -= n
                for p, n in produce:
                    after[p] += n
                labels.append(label)
                nexts.append(tuple(after))
        result = (marking == self.final, tuple(labels), tuple(nexts))
        if len(self.cache) < _CACHE_LIMIT:
            self.cache[marking] = result
        return result


def _arc_counts(index: Mapping[Any, int], arcs: Any, end: str) -> tuple[tuple[int, int], ...]:
    """``(place index, tokens)`` pairs of a transition's input or output arcs."""
    counts: dict[int, int] = {}
    for arc in arcs:
        if arc.properties.get("arctype") is not None:
            raise ConfigError(f"{arc.properties['arctype']} arcs are not supported")
        weight = arc.weight
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
            raise ConfigError(f"arc weight {weight!r} is not a positive integer")
        place = index[getattr(arc, end)]
        counts[place] = counts.get(place, 0) + weight
    return tuple(sorted(counts.items()))


def _to_tuple(index: Mapping[Any, int], marking: Any, which: str) -> Marking:
    """A pm4py ``Marking`` as a tuple of token counts."""
    out = [0] * len(index)
    for place, tokens in marking.items():
        if place not in index:
            raise ConfigError(f"the {which} marking holds place {place.name!r} not in the net")
        out[index[place]] = int(tokens)
    if not any(out):
        raise ConfigError(f"the {which} marking is empty")
    return tuple(out)


def _canonical_order(net: Any, im: Any, fm: Any) -> tuple[list[Any], list[Any]]:
    """Places and transitions sorted by colour refinement (Weisfeiler-Lehman), then by name.

    Items still tied after refinement have the same label and the same arcs to equally
    coloured nodes; they are ordered by name, which only matters when their names differ.
    """
    places = list(net.places)
    transitions = list(net.transitions)
    place_rank = _ranks({p: (im.get(p, 0), fm.get(p, 0)) for p in places})
    trans_rank = _ranks({t: (t.label is not None, t.label or "") for t in transitions})
    classes = -1
    for _ in range(len(places) + len(transitions) + 1):
        trans_rank = _ranks(
            {
                t: (
                    trans_rank[t],
                    sorted((place_rank[a.source], a.weight) for a in t.in_arcs),
                    sorted((place_rank[a.target], a.weight) for a in t.out_arcs),
                )
                for t in transitions
            }
        )
        place_rank = _ranks(
            {
                p: (
                    place_rank[p],
                    sorted((trans_rank[a.source], a.weight) for a in p.in_arcs),
                    sorted((trans_rank[a.target], a.weight) for a in p.out_arcs),
                )
                for p in places
            }
        )
        now = len(set(place_rank.values())) + len(set(trans_rank.values()))
        if now == classes:
            break
        classes = now
    places.sort(key=lambda p: (place_rank[p], str(p.name)))
    transitions.sort(key=lambda t: (trans_rank[t], str(t.name)))
    return places, transitions


def _ranks(signatures: Mapping[Any, Any]) -> dict[Any, int]:
    """Replace each signature by its rank among the distinct signatures."""
    rank = {sig: i for i, sig in enumerate(sorted({_freeze(s) for s in signatures.values()}))}
    return {item: rank[_freeze(sig)] for item, sig in signatures.items()}


def _freeze(value: Any) -> Any:
    """Lists to tuples, recursively, so that signatures are hashable."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


class Simulator:
    """An endless or bounded, seeded stream of events from an accepting Petri net.

    Each iteration starts afresh: iterating twice gives the same events, and two simulators
    with the same model and settings give the same stream, in any process.

    Cases arrive as a Poisson process. A case starts in the initial marking and, at each step,
    fires one of its enabled transitions chosen uniformly at random. A silent transition
    (label ``None``) fires without an event; a visible one yields an :class:`Event` with its
    label. The first event of a case happens when the case arrives; each later event comes an
    exponentially distributed time after the previous event of the case, with the mean duration
    of its own activity. A case ends at the final marking, when no transition is enabled, or
    after ``max_case_length`` steps (silent ones included). Events of all cases are yielded in
    non-decreasing timestamp order, with microsecond precision.

    Parameters
    ----------
    model
        The net to simulate, from :func:`~procvault.config.models.load_model`.
    seed
        Seeds every random choice.
    arrival_rate
        New cases per hour of simulated time.
    mean_duration
        Mean time in seconds before an activity's event, after the previous event of the case:
        one value for all activities, or a mapping with an entry for every visible label.
    start
        Timezone-aware time of the first arrival (converted to UTC).
    noise
        Probability that one noise operation hits an event of the model.
    noise_kinds
        The noise operations to choose from, uniformly: ``"skip"`` drops the event, ``"swap"``
        exchanges it with the next event of its case (timestamps stay in place), ``"insert"``
        adds, just before it, an event whose activity is drawn from ``noise_alphabet``.
    noise_alphabet
        Activities for inserted events; none may be a label of the model.
    max_cases
        Stop after this many cases have arrived and ended; ``None`` for no limit.
    max_events
        Stop right after this many activity events (end markers do not count); ``None`` for no
        limit. With both limits ``None`` the stream never ends.
    max_case_length
        Steps (transition firings) after which a case is cut off, to bound livelocks.
    org
        The ``org`` of every event.
    end_markers
        Also yield :meth:`Event.case_end` right after each ended case's last event, with the
        same timestamp. A case cut off by ``max_events`` gets none.
    case_prefix
        Case ids are this prefix followed by 1, 2, 3, ...
    resources
        If not empty, each activity event gets a resource drawn uniformly from this pool.

    Raises
    ------
    ConfigError
        A setting is out of range or of the wrong type, or the net cannot be simulated.

    See Also
    --------
    SimulationRun : what iterating yields, with running statistics.

    Examples
    --------
    A net built in code: ``register``, then either ``approve`` or a silent skip, then ``close``.

    >>> from pm4py.objects.petri_net.obj import Marking, PetriNet
    >>> from pm4py.objects.petri_net.utils.petri_utils import add_arc_from_to
    >>> net = PetriNet("tiny")
    >>> p = [PetriNet.Place(f"p{i}") for i in range(4)]
    >>> t = [PetriNet.Transition(name, label) for name, label in
    ...      [("t0", "register"), ("t1", "approve"), ("t2", None), ("t3", "close")]]
    >>> for node in p + t:
    ...     _ = (net.places if node in p else net.transitions).add(node)
    >>> for a, b in [(0, 0), (1, 1), (1, 2), (2, 3)]:   # place a -> transition b
    ...     _ = add_arc_from_to(p[a], t[b], net)
    >>> for a, b in [(0, 1), (1, 2), (2, 2), (3, 3)]:   # transition a -> place b
    ...     _ = add_arc_from_to(t[a], p[b], net)
    >>> model = LoadedModel(net, Marking({p[0]: 1}), Marking({p[3]: 1}), "option", None)
    >>> sim = Simulator(model, seed=7, arrival_rate=2.0, mean_duration=600.0, max_cases=2,
    ...                 end_markers=True)
    >>> for e in sim:
    ...     print(e.case_id, e.activity or "<end>", e.timestamp.isoformat())
    sim-1 register 2024-01-01T00:00:00+00:00
    sim-1 approve 2024-01-01T00:00:28.108955+00:00
    sim-1 close 2024-01-01T00:05:09.037663+00:00
    sim-1 <end> 2024-01-01T00:05:09.037663+00:00
    sim-2 register 2024-01-01T00:19:55.121441+00:00
    sim-2 close 2024-01-01T00:23:17.274521+00:00
    sim-2 <end> 2024-01-01T00:23:17.274521+00:00
    >>> run = iter(sim)
    >>> [e.activity for e in run if not e.is_marker] == [e.activity for e in sim if e.activity]
    True
    >>> run.stats.cases_completed, run.stats.events
    (2, 5)
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        seed: int,
        arrival_rate: float,
        mean_duration: float | Mapping[str, float],
        start: datetime = _DEFAULT_START,
        noise: float = 0.0,
        noise_kinds: Collection[str] = ("skip", "swap", "insert"),
        noise_alphabet: Sequence[str] = ("NOISE",),
        max_cases: int | None = None,
        max_events: int | None = None,
        max_case_length: int = 500,
        org: str = "",
        end_markers: bool = False,
        case_prefix: str = "sim-",
        resources: Sequence[str] = (),
    ) -> None:
        if not isinstance(model, LoadedModel):
            raise ConfigError(f"model must be a LoadedModel, not {type(model).__name__}")
        self._net = _CompiledNet(model)
        labels = model.visible_labels
        if not labels:
            raise ConfigError("the model has no visible transition, so it yields no events")
        self._model = model
        self._seed = _check_int("seed", seed, minimum=None)
        self._rate_per_us = _check_positive("arrival_rate", arrival_rate) / _US_PER_HOUR
        self._mean_us = _check_durations(mean_duration, labels)
        if not isinstance(start, datetime) or start.utcoffset() is None:
            raise ConfigError(f"start must be a timezone-aware datetime, not {start!r}")
        self._start = start.astimezone(UTC)
        if isinstance(noise, bool) or not isinstance(noise, int | float):
            raise ConfigError(f"noise must be a probability, not {noise!r}")
        if not 0.0 <= noise <= 1.0:
            raise ConfigError(f"noise must be between 0 and 1, not {noise!r}")
        self._noise = float(noise)
        if isinstance(noise_kinds, str) or not set(noise_kinds) <= NOISE_KINDS:
            raise ConfigError(
                f"noise_kinds must be a subset of {sorted(NOISE_KINDS)}, not {noise_kinds!r}"
            )
        if not noise_kinds:
            raise ConfigError("noise_kinds must not be empty")
        self._noise_kinds = tuple(sorted(_NOISE_CODES[k] for k in set(noise_kinds)))
        if self._noise == 1.0 and self._noise_kinds == (_SKIP,):
            raise ConfigError("noise 1 with only 'skip' would drop every event")
        self._noise_alphabet = _check_names("noise_alphabet", noise_alphabet)
        if not self._noise_alphabet:
            raise ConfigError("noise_alphabet must not be empty")
        clash = sorted(set(self._noise_alphabet) & labels)
        if clash:
            raise ConfigError(f"noise_alphabet holds activities of the model: {clash}")
        self._max_cases = None if max_cases is None else _check_int("max_cases", max_cases)
        self._max_events = None if max_events is None else _check_int("max_events", max_events)
        self._max_case_length = _check_int("max_case_length", max_case_length, minimum=1)
        if not isinstance(org, str):
            raise ConfigError(f"org must be a string, not {org!r}")
        self._org = org
        if not isinstance(end_markers, bool):
            raise ConfigError(f"end_markers must be True or False, not {end_markers!r}")
        self._end_markers = end_markers
        if not isinstance(case_prefix, str):
            raise ConfigError(f"case_prefix must be a string, not {case_prefix!r}")
        self._case_prefix = case_prefix
        self._resources = _check_names("resources", resources)

    @property
    def model(self) -> LoadedModel:
        """The model being simulated."""
        return self._model

    def __iter__(self) -> SimulationRun:
        """Start a new run from the first arrival."""
        return SimulationRun(self)

    def _events(self, counters: _Counters) -> Iterator[Event]:
        """The event stream; the hot loop, with every attribute bound to a local."""
        successors = self._net.successors
        cached = self._net.cache.get
        initial = self._net.initial
        max_len = self._max_case_length
        start = self._start
        org = self._org
        prefix = self._case_prefix
        mean_us = self._mean_us
        end_markers = self._end_markers
        noise = self._noise
        kinds = self._noise_kinds
        alphabet = self._noise_alphabet
        pool = self._resources
        case_limit = -1 if self._max_cases is None else self._max_cases
        event_limit = -1 if self._max_events is None else self._max_events
        seed = self._seed
        arrival_rnd = random.Random(f"procvault.simulate:{seed}:arrivals").random
        flow_rnd = random.Random(f"procvault.simulate:{seed}:flow").random
        time_rnd = random.Random(f"procvault.simulate:{seed}:durations").random
        noise_rnd = random.Random(f"procvault.simulate:{seed}:noise").random
        resource_rnd = random.Random(f"procvault.simulate:{seed}:resources").random
        inv_rate = 1.0 / self._rate_per_us
        log = math.log
        push = heapq.heappush
        pop = heapq.heappop
        td = timedelta
        ended = counters.ended

        def advance(marking: Marking, steps: int) -> tuple[str | None, Marking, int, int]:
            """Fire transitions up to and including the next visible one, if any."""
            while True:
                is_final, labels, nexts = cached(marking) or successors(marking)
                if is_final:
                    return None, marking, steps, _FINAL
                k = len(labels)
                if k == 0:
                    return None, marking, steps, _DEADLOCK
                if steps >= max_len:
                    return None, marking, steps, _TRUNCATED
                i = int(flow_rnd() * k) if k > 1 else 0
                marking = nexts[i]
                steps += 1
                label = labels[i]
                if label is not None:
                    return label, marking, steps, -1

        if event_limit == 0 or case_limit == 0:
            return
        heap: list[tuple[int, int, list[Any]]] = []
        seq = 0
        emitted = 0
        arrivals_open = True
        next_arrival = 0
        while True:
            if arrivals_open and (not heap or next_arrival <= heap[0][0]):
                # A new case: find its first activity; the event happens at arrival.
                counters.started += 1
                case_id = prefix + str(counters.started)
                label, marking, steps, how = advance(initial, 0)
                if label is None:  # nothing visible ever happens in this case
                    ended[how] += 1
                    if end_markers:
                        yield Event.case_end(
                            case_id, start + td(microseconds=next_arrival), org=org
                        )
                else:
                    seq += 1
                    push(heap, (next_arrival, seq, [case_id, marking, label, steps]))
                if counters.started == case_limit:
                    arrivals_open = False
                else:
                    next_arrival += int(-log(1.0 - arrival_rnd()) * inv_rate + 0.5)
                continue
            if not heap:
                return
            now, _, case = pop(heap)
            case_id, marking, label, steps = case
            # Advance first: a swap needs the next activity, and noise never alters the process.
            nxt, marking, steps, how = advance(marking, steps)
            if nxt is not None:
                # The delay belongs to the next activity of the process, even if noise swaps it.
                delay = int(-log(1.0 - time_rnd()) * mean_us[nxt] + 0.5)
            ts = start + td(microseconds=now)
            if noise and noise_rnd() < noise:
                op = kinds[int(noise_rnd() * len(kinds))]
                if op == _SKIP:
                    counters.skipped += 1
                    label = None
                elif op == _SWAP:
                    if nxt is not None:
                        counters.swapped += 1
                        label, nxt = nxt, label
                else:
                    counters.inserted += 1
                    foreign = alphabet[int(noise_rnd() * len(alphabet))]
                    resource = pool[int(resource_rnd() * len(pool))] if pool else None
                    yield Event(case_id, foreign, ts, org, resource)
                    emitted += 1
                    counters.events = emitted
                    if emitted == event_limit:
                        return
            if label is not None:
                resource = pool[int(resource_rnd() * len(pool))] if pool else None
                # The fields are valid by construction, so skip Event.create's checks.
                yield Event(case_id, label, ts, org, resource)
                emitted += 1
                counters.events = emitted
                if emitted == event_limit:
                    return
            if nxt is None:
                ended[how] += 1
                if end_markers:
                    yield Event.case_end(case_id, ts, org=org)
            else:
                case[1] = marking
                case[2] = nxt
                case[3] = steps
                seq += 1
                push(heap, (now + delay, seq, case))


class SimulationRun(Iterator[Event]):
    """One pass over a :class:`Simulator`'s stream, with running statistics.

    Create it with ``iter(simulator)``; iterating a simulator in a ``for`` loop does this.
    """

    __slots__ = ("_counters", "_events")

    def __init__(self, simulator: Simulator) -> None:
        self._counters = _Counters()
        self._events = simulator._events(self._counters)

    def __iter__(self) -> SimulationRun:
        return self

    def __next__(self) -> Event:
        return next(self._events)

    @property
    def stats(self) -> SimulationStats:
        """The counts so far, as an immutable snapshot."""
        c = self._counters
        return SimulationStats(
            cases_started=c.started,
            cases_completed=c.ended[_FINAL],
            cases_deadlocked=c.ended[_DEADLOCK],
            cases_truncated=c.ended[_TRUNCATED],
            events=c.events,
            noise_skipped=c.skipped,
            noise_swapped=c.swapped,
            noise_inserted=c.inserted,
        )


def _check_int(name: str, value: object, *, minimum: int | None = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}")
    return value


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, not {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be positive and finite, not {value}")
    return float(value)


def _check_duration(name: str, value: object) -> float:
    """A mean duration in seconds as microseconds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number of seconds, not {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be finite and not negative, not {value}")
    return float(value) * 1e6


def _check_durations(
    mean_duration: float | Mapping[str, float], labels: frozenset[str]
) -> dict[str, float]:
    """Mean duration in microseconds per visible label."""
    if not isinstance(mean_duration, Mapping):
        mean = _check_duration("mean_duration", mean_duration)
        return dict.fromkeys(labels, mean)
    unknown = sorted(set(mean_duration) - labels)
    if unknown:
        raise ConfigError(f"mean_duration names activities not in the model: {unknown}")
    missing = sorted(labels - set(mean_duration))
    if missing:
        raise ConfigError(f"mean_duration has no entry for activities {missing}")
    return {
        label: _check_duration(f"mean_duration[{label!r}]", value)
        for label, value in mean_duration.items()
    }


def _check_names(name: str, values: object) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise ConfigError(f"{name} must be a sequence of strings, not {values!r}")
    for value in values:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{name} must hold non-empty strings, not {value!r}")
    return tuple(values)
