"""The public net: pm4py's inductive miner on a differentially private directly-follows graph.

The vault releases the directly-follows counts with OpenDP noise (``directly_follows`` in the
aggregate records, :mod:`procvault.monitor.privacy`). Anything computed from released values
alone is post-processing and costs no privacy budget, so anyone may turn them into a process
model: :func:`public_net` keeps the arcs and start/end activities whose noisy count reaches
``min_count`` (rounded to integers: pm4py's miner counts), then only the activities on a path
from a kept start activity to a kept end activity (noise leaves stray arcs; pm4py's miner fails
on a graph with an activity no start activity reaches), runs pm4py's inductive miner on that
graph (``discover_petri_net_inductive`` on a typed ``DFG``, with ``noise_threshold``), checks
the result with pm4py's ``check_soundness`` (:func:`check_soundness`) and returns it with the
noise description it was given, so the net always travels with the noise it was built from. It
never sees exact data.

:func:`write_public_net` writes ``public.pnml``, ``public.json`` (:class:`PublicNetRecord`:
the noise, the thresholds, the graph used, the soundness) and the pictures.

Examples
--------
>>> noisy = {("A", "B"): 41.6, ("B", "C"): 37.2, ("A", "C"): -2.1, ("C", "A"): 0.4}
>>> pub = public_net(noisy, {"A": 40.2, "C": -1.0}, {"C": 39.0, "B": 0.2},
...                  noise={"mechanism": "discrete_laplace", "scale": 2.0, "epsilon": 1.0})
>>> pub.sound, sorted(t.label for t in pub.net.transitions if t.label)
(True, ['A', 'B', 'C'])
>>> pub.dfg, pub.start_activities, pub.end_activities
({('A', 'B'): 42, ('B', 'C'): 37}, {'A': 40}, {'C': 39})
>>> pub.record().noise["scale"]
2.0
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from procvault.discovery._io import atomic, atomic_bytes
from procvault.discovery.draw import FORMATS, draw_petri_net
from procvault.generators._pm4py import import_pm4py
from procvault.monitor.errors import ConfigError

__all__ = [
    "PUBLIC_SCHEMA",
    "PublicNet",
    "PublicNetRecord",
    "check_soundness",
    "public_net",
    "write_public_net",
]

#: The schema of ``public.json``.
PUBLIC_SCHEMA: Final = "procvault.public-net/1"


class PublicNetRecord(msgspec.Struct, frozen=True, kw_only=True):
    """``public.json``: how the public net was built. ``dfg`` entries are ``[source, target,
    count]``; ``noise`` is the description passed in, as given."""

    schema: str = PUBLIC_SCHEMA
    noise: dict[str, Any]
    min_count: float
    noise_threshold: float
    dfg: tuple[tuple[str, str, int], ...]
    start_activities: tuple[tuple[str, int], ...]
    end_activities: tuple[tuple[str, int], ...]
    sound: bool
    places: int
    transitions: int


@dataclass(frozen=True)
class PublicNet:
    """A net discovered from a noisy directly-follows graph, with its soundness and noise.

    Attributes
    ----------
    net, initial_marking, final_marking
        pm4py's accepting Petri net.
    sound
        pm4py's ``check_soundness`` verdict (a sound workflow net).
    dfg, start_activities, end_activities
        The graph the miner ran on (after ``min_count``).
    noise
        The noise description the graph's values were released with.
    min_count, noise_threshold
        The post-processing settings.
    """

    net: Any
    initial_marking: Any
    final_marking: Any
    sound: bool
    dfg: dict[tuple[str, str], int]
    start_activities: dict[str, int]
    end_activities: dict[str, int]
    noise: Mapping[str, Any]
    min_count: float
    noise_threshold: float

    def record(self) -> PublicNetRecord:
        """The net's description as written to ``public.json``."""
        return PublicNetRecord(
            noise=dict(self.noise),
            min_count=self.min_count,
            noise_threshold=self.noise_threshold,
            dfg=tuple((a, b, n) for (a, b), n in sorted(self.dfg.items())),
            start_activities=tuple(sorted(self.start_activities.items())),
            end_activities=tuple(sorted(self.end_activities.items())),
            sound=self.sound,
            places=len(self.net.places),
            transitions=len(self.net.transitions),
        )


def _kept(values: Mapping[Any, float], min_count: float, what: str) -> dict[Any, int]:
    out = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ConfigError(f"{what} {key!r}: the count {value!r} is not a number")
        n = round(value)
        if n >= min_count and n > 0:
            out[key] = n
    return out


def check_soundness(net: Any, im: Any, fm: Any) -> bool:
    """Whether the accepting net is a sound workflow net: pm4py's ``check_soundness`` (its
    WOFLAN, with the same parameters), called directly because pm4py marks that wrapper as
    deprecated. WOFLAN's place invariants need an integer program; pm4py calls its scipy
    solution "unstable" and uses PuLP when installed (a procvault dependency)."""
    import_pm4py()
    from pm4py.algo.analysis.woflan import algorithm as woflan

    with warnings.catch_warnings():
        # WOFLAN builds numpy matrices and PuLP variables the old way (deprecation warnings
        # of numpy and PuLP about pm4py's code, not ours)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        sound, _ = woflan.apply(
            net,
            im,
            fm,
            parameters={
                "return_asap_when_not_sound": True,
                "return_diagnostics": True,
                "print_diagnostics": False,
            },
        )
    return bool(sound)


def _reach(seeds: set[str], step: dict[str, set[str]]) -> set[str]:
    seen = set(seeds)
    todo = list(seeds)
    while todo:
        for y in step.get(todo.pop(), ()):
            if y not in seen:
                seen.add(y)
                todo.append(y)
    return seen


def _connected(
    graph: dict[tuple[str, str], int], start: dict[str, int], end: dict[str, int]
) -> tuple[dict[tuple[str, str], int], dict[str, int], dict[str, int]]:
    """The part of the graph on paths from a start activity to an end activity."""
    succ: dict[str, set[str]] = {}
    pred: dict[str, set[str]] = {}
    for a, b in graph:
        succ.setdefault(a, set()).add(b)
        pred.setdefault(b, set()).add(a)
    keep = _reach(set(start), succ) & _reach(set(end), pred)
    return (
        {(a, b): n for (a, b), n in graph.items() if a in keep and b in keep},
        {a: n for a, n in start.items() if a in keep},
        {a: n for a, n in end.items() if a in keep},
    )


def public_net(
    dfg: Mapping[tuple[str, str], float],
    start_activities: Mapping[str, float],
    end_activities: Mapping[str, float],
    *,
    noise: Mapping[str, Any],
    min_count: float = 1.0,
    noise_threshold: float = 0.0,
) -> PublicNet:
    """Discover a Petri net from released (noisy) counts; see the module docstring.

    Parameters
    ----------
    dfg, start_activities, end_activities
        Noisy counts: ``(source, target) -> count`` and ``activity -> cases``.
    noise
        How those values were noised (mechanism, scale, ε, δ, panes...): returned and written
        with the net, never interpreted.
    min_count
        Keep a value when its rounded count is at least this (and positive).
    noise_threshold
        pm4py's inductive-miner ``noise_threshold`` (0: the plain inductive miner).

    Raises
    ------
    ConfigError
        A count is not a number, a setting is out of range, or no start or end activity, or no
        arc when there are several activities, is left (also once the graph is cut to the
        paths from start to end activities).
    """
    if not isinstance(noise, Mapping):
        raise ConfigError("noise must describe the mechanism as a mapping (name -> value)")
    if not 0.0 <= noise_threshold <= 1.0:
        raise ConfigError(f"noise_threshold must be in [0, 1], not {noise_threshold}")
    graph = _kept(dfg, min_count, "arc")
    start = _kept(start_activities, min_count, "start activity")
    end = _kept(end_activities, min_count, "end activity")
    if not start or not end:
        raise ConfigError(
            f"no {'start' if not start else 'end'} activity has a noisy count >= {min_count}: "
            "nothing to discover a net from"
        )
    graph, start, end = _connected(graph, start, end)
    acts = {a for arc in graph for a in arc} | set(start) | set(end)
    if not start or not end or (len(acts) > 1 and not graph):
        raise ConfigError(
            f"no path from a start to an end activity has noisy counts >= {min_count}: "
            "nothing to discover a net from"
        )
    pm4py = import_pm4py()
    from pm4py.objects.dfg.obj import DFG

    net, im, fm = pm4py.discover_petri_net_inductive(
        DFG(graph, start, end), noise_threshold=noise_threshold
    )
    return PublicNet(
        net=net,
        initial_marking=im,
        final_marking=fm,
        sound=check_soundness(net, im, fm),
        dfg=graph,
        start_activities=start,
        end_activities=end,
        noise=dict(noise),
        min_count=min_count,
        noise_threshold=noise_threshold,
    )


def write_public_net(
    pub: PublicNet, out_dir: str | os.PathLike[str], *, pictures: Sequence[str] = ("png",)
) -> list[Path]:
    """Write ``public.pnml``, ``public.json`` and ``public.<fmt>`` pictures into ``out_dir``."""
    bad = sorted(set(pictures) - set(FORMATS))
    if bad:
        raise ConfigError(f"picture formats are {list(FORMATS)}, not {bad}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pm4py = import_pm4py()
    written = [
        atomic(
            out / "public.pnml",
            lambda tmp: pm4py.write_pnml(pub.net, pub.initial_marking, pub.final_marking, tmp),
        ),
        atomic_bytes(out / "public.json", msgspec.json.encode(pub.record())),
    ]
    for fmt in pictures:
        written.append(
            draw_petri_net(pub.net, pub.initial_marking, pub.final_marking, out / f"public.{fmt}")
        )
    return written
