"""Which variants to release, and how many cases of each: no new variants, ever (requirement R1).

* :func:`amun_plan` — the published method (Sect. 3.6, Algorithm 1). Every DAFSA transition used
  by the log gets an integer noise ``ceil(Laplace(1 / ε_d))`` (``ceil(|Laplace|)`` when
  oversampling). While some transition has received less positive noise than it asked for, pick
  one of them, with the transitions' occurrence frequencies (their counts in the contingency
  table) as weights (Algorithm 1, line 12), draw as many cases crossing it as its noise
  (line 17), and credit every transition of their variants; then the same with negative noise
  and deletions. The net per variant becomes replicas or deletions (:func:`variant_net`). With
  ``prototype`` the prototype's code instead, flaws included (the paper's Table 6 figures come
  from it): the transition is picked with weights ``max(credit) - credit`` (the least served
  first), a variant that only received duplications, or only deletions, is dropped from the net
  (``Series.subtract`` yields NaN), and a variant with a negative net loses one case, whatever
  the net.
* :func:`strict_counts` — each variant's count (the count of one DAFSA path: one case changes
  exactly one of them by one) goes through OpenDP's Laplace-threshold histogram; variants below
  the threshold are suppressed, the others are released with their noisy count.

Examples
--------
>>> import numpy as np
>>> from procvault.monitor.amun.dafsa import Dafsa
>>> variants = (("a", "b"), ("a", "c"))
>>> d = Dafsa.build(variants)
>>> plan = amun_plan([0, 0, 1], [d.path(v) for v in variants], len(d.transitions),
...                  epsilon=1.0, rng=np.random.default_rng(1), oversampling=True)
>>> len(plan.copies), all(c >= 1 for c in plan.copies)
(3, True)
>>> transition_pick_weights([3, 3, 5, 2, 2, 2], [1, 2, 3])
[0.3, 0.5, 0.2]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .noise import Releaser

__all__ = [
    "AmunPlan",
    "amun_plan",
    "strict_counts",
    "transition_pick_weights",
    "variant_key",
    "variant_net",
]

_SEP = "\x1f"


def variant_key(activities: Sequence[str]) -> str:
    """A variant as one string key (activities joined by the ASCII unit separator).

    >>> variant_key(("a", "b")) == "a\\x1fb"
    True
    """
    for a in activities:
        if _SEP in a:
            raise ValueError(f"activity {a!r} contains the reserved character U+001F")
    return _SEP.join(activities)


def transition_pick_weights(counts: Sequence[int], needing: Sequence[int]) -> list[float]:
    """Algorithm 1, line 12: the chance of picking each transition in ``needing`` next is
    proportional to its occurrence frequency ``counts[t]`` (its cell of the contingency table).

    >>> transition_pick_weights([4, 1], [0, 1])
    [0.8, 0.2]
    """
    w = [float(counts[t]) for t in needing]
    total = sum(w)
    if total <= 0:
        raise ValueError("every transition that needs noise has a count of zero")
    return [x / total for x in w]


def _prototype_weights(credit: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The prototype's edge weights: ``max - credit`` normalised, uniform when all equal."""
    w: npt.NDArray[np.float64] = credit.max() - credit
    total = float(w.sum())
    if total == 0:
        return np.full(len(credit), 1.0 / len(credit))
    return w / total


@dataclass(frozen=True)
class AmunPlan:
    """What Amun's sampling did.

    Attributes
    ----------
    counts
        The DAFSA transition contingency table (Def. 3.10): cases crossing each used transition.
    noise
        The needed noise of every used transition (transition id → integer).
    picks
        The transitions picked, in order, as ``(transition id, sign)``: ``+1`` in the
        replication pass, ``-1`` in the deletion pass.
    replicated, deleted
        Per variant, how many of the drawn cases were marked for replication or deletion.
    copies
        Copies per input case (0 = deleted).
    """

    counts: dict[int, int]
    noise: dict[int, int]
    picks: tuple[tuple[int, int], ...]
    replicated: dict[int, int]
    deleted: dict[int, int]
    copies: list[int]


def amun_plan(
    variant_of: Sequence[int],
    variant_paths: Sequence[Sequence[int]],
    n_transitions: int,
    *,
    epsilon: float,
    rng: np.random.Generator,
    oversampling: bool = False,
    prototype: bool = False,
    noise: Mapping[int, int] | None = None,
) -> AmunPlan:
    """Amun's per-transition sampling (Algorithm 1).

    Parameters
    ----------
    variant_of
        Variant index of each case.
    variant_paths
        DAFSA transition ids of each variant.
    n_transitions
        Number of DAFSA transitions.
    epsilon
        ε_d of the per-transition Laplace noise (sensitivity 1, as Algorithm 1 and Lemma A.8).
    rng
        Source of the noise and of every sampling choice (numpy, as the prototype).
    oversampling
        Positive noise only, no deletions (the ICPM'21 "oversampling" variant).
    prototype
        The prototype's pick weights and net per variant instead of the paper's (see the module
        docstring).
    noise
        The needed noise per transition id instead of drawing it (the paper's Table 4 gives
        one such vector); transitions left out get 0.
    """
    case_variant = np.asarray(variant_of, dtype=np.int64)
    n_cases = len(case_variant)
    paths = [np.asarray(p, dtype=np.int64) for p in variant_paths]
    # cases crossing each transition (a DAFSA is acyclic: a path crosses an edge at most once)
    per_edge: list[list[int]] = [[] for _ in range(n_transitions)]
    for case, v in enumerate(case_variant.tolist()):
        for t in paths[v].tolist():
            per_edge[t].append(case)
    used = np.flatnonzero([len(c) > 0 for c in per_edge])
    edge_cases = [np.asarray(per_edge[t], dtype=np.int64) for t in used.tolist()]
    counts = [len(c) for c in edge_cases]
    local = np.full(n_transitions, -1, dtype=np.int64)
    local[used] = np.arange(len(used))
    local_paths = [local[p] for p in paths]

    if noise is None:
        raw = rng.laplace(0.0, 1.0 / epsilon, size=len(used))
        need = np.ceil(np.abs(raw) if oversampling else raw).astype(np.int64)
    else:
        need = np.asarray([int(noise.get(int(t), 0)) for t in used.tolist()], dtype=np.int64)
        if oversampling and (need < 0).any():
            raise ValueError("oversampling takes positive noise only")
    picks: list[tuple[int, int]] = []

    def run(sign: int) -> list[int]:
        picked: list[int] = []
        credit = np.zeros(len(used), dtype=np.int64)
        needs = credit < need if sign > 0 else credit > need
        while needs.any():
            idx = np.flatnonzero(needs)
            if prototype:
                weights = _prototype_weights(credit[idx].astype(np.float64))
            else:
                weights = np.asarray(transition_pick_weights(counts, idx.tolist()))
            e = int(rng.choice(idx, p=weights))
            picks.append((int(used[e]), sign))
            k = int(abs(int(need[e])))
            chosen = rng.choice(edge_cases[e], size=k, replace=True)
            for v in case_variant[chosen].tolist():
                credit[local_paths[v]] += sign
                picked.append(int(v))
            needs = credit < need if sign > 0 else credit > need
        return picked

    duplicated = Counter(run(+1))
    deleted: Counter[int] = Counter() if oversampling else Counter(run(-1))

    by_variant: dict[int, list[int]] = {}
    for case, v in enumerate(case_variant.tolist()):
        by_variant.setdefault(v, []).append(case)
    copies = [1] * n_cases
    net = variant_net(duplicated, deleted, prototype=prototype and not oversampling)
    for v in sorted(net):
        members = np.asarray(by_variant[v], dtype=np.int64)
        n = net[v]
        if n > 0:
            for case in rng.choice(members, size=n, replace=True).tolist():
                copies[case] += 1
        elif n < 0 and prototype:
            # prototype semantics: one deletion per under-sampled variant
            copies[int(rng.choice(members))] -= 1
        elif n < 0:
            # the paper: the variant loses as many cases as its net noise asks, at most all
            for case in rng.choice(members, size=min(-n, len(members)), replace=False).tolist():
                copies[case] -= 1
    return AmunPlan(
        counts={int(t): c for t, c in zip(used.tolist(), counts, strict=True)},
        noise={int(t): int(z) for t, z in zip(used.tolist(), need.tolist(), strict=True)},
        picks=tuple(picks),
        replicated=dict(duplicated),
        deleted=dict(deleted),
        copies=copies,
    )


def variant_net(
    duplicated: Mapping[int, int], deleted: Mapping[int, int], *, prototype: bool
) -> dict[int, int]:
    """Net replications (positive) or deletions (negative) per variant.

    ``prototype=False`` is the paper: replications minus deletions for every variant touched.
    ``prototype=True`` is the prototype's ``duplicated_counts.subtract(deleted_counts)``: a
    variant missing from either series gets NaN and is left out.

    >>> variant_net({0: 3, 1: 1}, {1: 4, 2: 2}, prototype=False)
    {0: 3, 1: -3, 2: -2}
    >>> variant_net({0: 3, 1: 1}, {1: 4, 2: 2}, prototype=True)
    {1: -3}
    """
    if prototype:
        return {v: duplicated[v] - deleted[v] for v in sorted(duplicated) if v in deleted}
    keys = sorted(set(duplicated) | set(deleted))
    return {v: duplicated.get(v, 0) - deleted.get(v, 0) for v in keys}


def strict_counts(
    variants: Sequence[Sequence[str]],
    variant_of: Sequence[int],
    *,
    releaser: Releaser,
    scale: float,
    threshold: int,
) -> dict[int, int]:
    """The released variants (by index) and their noisy counts, from the thresholded histogram.

    Every released count is at least ``threshold`` (so positive); a variant whose noisy count
    falls below it is not released at all.
    """
    counts = Counter(variant_of)
    keys = {variant_key(variants[v]): v for v in counts}
    released = releaser.thresholded_counts(
        {k: counts[v] for k, v in keys.items()}, scale=scale, threshold=threshold
    )
    return {keys[k]: max(0, released[k]) for k in sorted(released) if released[k] > 0}
