"""Which cases to release, and how many copies of each: no new variants, ever (requirement R1).

Two plans, both returning a copy count per input case (0 = deleted):

* :func:`amun_plan` — the published method. Every DAFSA transition used by the log gets an
  integer noise ``ceil(Laplace(1 / ε_d))`` (``ceil(|Laplace|)`` when oversampling). While some
  transition has received less positive noise than it asked for, pick one of them (weighted
  towards the least served), draw that many cases crossing it, and credit every transition of
  their variants; then the same with negative noise and deletions. The net per variant becomes
  replicas or deletions (:func:`variant_net`). By default as the paper describes it: the whole
  net of every variant. With ``prototype_net`` as the prototype's code does it, flaws included
  (the paper's Table 6 figures come from it): a variant that only received duplications, or only
  deletions, is dropped from the net (``Series.subtract`` yields NaN), and a variant with a
  negative net loses one case, whatever the net.
* :func:`strict_plan` — each variant's count (the count of one DAFSA path: one case changes
  exactly one of them by one) goes through OpenDP's Laplace-threshold histogram; variants below
  the threshold are suppressed, the others are sampled down or replicated to their noisy count.

Examples
--------
>>> import numpy as np
>>> from procvault.monitor.amun.dafsa import Dafsa
>>> variants = (("a", "b"), ("a", "c"))
>>> d = Dafsa.build(variants)
>>> copies = amun_plan([0, 0, 1], [d.path(v) for v in variants], len(d.transitions),
...                    epsilon=1.0, rng=np.random.default_rng(1), oversampling=True)
>>> len(copies), all(c >= 1 for c in copies)
(3, True)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .noise import Releaser

__all__ = ["amun_plan", "spread_copies", "strict_plan", "variant_key", "variant_net"]

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


def _reversed_weights(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The prototype's edge weights: ``max - v`` normalised, uniform when all equal."""
    w: npt.NDArray[np.float64] = values.max() - values
    total = float(w.sum())
    if total == 0:
        return np.full(len(values), 1.0 / len(values))
    return w / total


def amun_plan(
    variant_of: Sequence[int],
    variant_paths: Sequence[Sequence[int]],
    n_transitions: int,
    *,
    epsilon: float,
    rng: np.random.Generator,
    oversampling: bool = False,
    prototype_net: bool = False,
) -> list[int]:
    """Copies per case after Amun's per-transition sampling.

    Parameters
    ----------
    variant_of
        Variant index of each case.
    variant_paths
        DAFSA transition ids of each variant.
    n_transitions
        Number of DAFSA transitions.
    epsilon
        ε_d of the per-transition Laplace noise (sensitivity 1, as published).
    rng
        Source of the noise and of every sampling choice (numpy, as the prototype).
    oversampling
        Positive noise only, no deletions (the ICPM'21 "oversampling" variant).
    prototype_net
        Turn the replications and deletions into copies as the prototype's pandas code does
        (see the module docstring) instead of as the paper describes (every variant's net count
        of replications minus deletions is applied).
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
    local = np.full(n_transitions, -1, dtype=np.int64)
    local[used] = np.arange(len(used))
    local_paths = [local[p] for p in paths]

    raw = rng.laplace(0.0, 1.0 / epsilon, size=len(used))
    noise = np.ceil(np.abs(raw) if oversampling else raw).astype(np.int64)

    def run(target: npt.NDArray[np.int64], sign: int) -> list[int]:
        picked: list[int] = []
        credit = np.zeros(len(used), dtype=np.int64)
        need = credit < target if sign > 0 else credit > target
        while need.any():
            idx = np.flatnonzero(need)
            e = int(rng.choice(idx, p=_reversed_weights(credit[idx].astype(np.float64))))
            k = int(abs(int(noise[e])))
            chosen = rng.choice(edge_cases[e], size=k, replace=True)
            for v in case_variant[chosen].tolist():
                credit[local_paths[v]] += sign
                picked.append(int(v))
            need = credit < target if sign > 0 else credit > target
        return picked

    duplicated = Counter(run(noise, +1))
    deleted: Counter[int] = Counter() if oversampling else Counter(run(noise, -1))

    by_variant: dict[int, list[int]] = {}
    for case, v in enumerate(case_variant.tolist()):
        by_variant.setdefault(v, []).append(case)
    copies = [1] * n_cases
    net = variant_net(duplicated, deleted, prototype=prototype_net and not oversampling)
    for v in sorted(net):
        members = np.asarray(by_variant[v], dtype=np.int64)
        n = net[v]
        if n > 0:
            for case in rng.choice(members, size=n, replace=True).tolist():
                copies[case] += 1
        elif n < 0 and prototype_net:
            # prototype semantics: one deletion per under-sampled variant
            copies[int(rng.choice(members))] -= 1
        elif n < 0:
            # the paper: the variant loses as many cases as its net noise asks, at most all
            for case in rng.choice(members, size=min(-n, len(members)), replace=False).tolist():
                copies[case] -= 1
    return copies


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


def spread_copies(n_members: int, target: int, rng: np.random.Generator) -> list[int]:
    """Copies of each of ``n_members`` cases so that they add up to ``target``: a random subset
    when shrinking, as even as possible (every case ⌊target/n⌋ or ⌈target/n⌉) when growing.

    >>> spread_copies(3, 7, np.random.default_rng(0))
    [2, 2, 3]
    >>> sum(spread_copies(5, 2, np.random.default_rng(0)))
    2
    """
    if n_members <= 0:
        raise ValueError("a released variant needs at least one case")
    if target < 0:
        raise ValueError(f"target must be >= 0, got {target}")
    q, r = divmod(target, n_members)
    out = [q] * n_members
    for i in rng.permutation(n_members)[:r].tolist():
        out[i] += 1
    return out


def strict_plan(
    variants: Sequence[Sequence[str]],
    variant_of: Sequence[int],
    *,
    releaser: Releaser,
    scale: float,
    threshold: int,
    rng: np.random.Generator,
) -> tuple[list[int], Mapping[int, int]]:
    """Copies per case after the thresholded per-variant histogram.

    Returns the copies per case and the noisy count of every released variant.
    """
    counts = Counter(variant_of)
    keys = {variant_key(variants[v]): v for v in counts}
    released = releaser.thresholded_counts(
        {k: counts[v] for k, v in keys.items()}, scale=scale, threshold=threshold
    )
    members: dict[int, list[int]] = {}
    for case, v in enumerate(variant_of):
        members.setdefault(v, []).append(case)
    copies = [0] * len(variant_of)
    noisy: dict[int, int] = {}
    for key in sorted(released):
        v = keys[key]
        target = max(0, released[key])
        noisy[v] = target
        for case, k in zip(members[v], spread_copies(len(members[v]), target, rng), strict=True):
            copies[case] = k
    return copies, noisy
