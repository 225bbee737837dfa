"""The minimal DAFSA of a log's trace variants, and the annotation of events with its states.

A DAFSA (deterministic acyclic finite-state automaton) accepts exactly the variants of a log.
The *minimal* one shares both common prefixes (as a trie does) and common suffixes, so every
state stands for a set of histories that are indistinguishable from there on. Amun annotates
each event with the transition ``(source state, activity, target state)`` it takes in this
automaton; events on the same transition form a *transition group*: they share their prefix
class and their suffix class, which is what attack h1 targets.

Construction: a trie of the variants, then one bottom-up pass that merges trie nodes with the
same right language (same finality and the same labelled edges to already-merged children), the
classic minimisation of an acyclic automaton. States are numbered breadth-first from the source
(state 0), edges visited in label order, so the numbering depends only on the set of variants.

Examples
--------
>>> d = Dafsa.build([("a", "b", "c"), ("a", "c"), ("b", "c")])
>>> d.n_states, len(d.transitions)
(4, 5)
>>> [tuple(d.transitions[t]) for t in d.path(("a", "b", "c"))]
[(0, 'a', 1), (1, 'b', 2), (2, 'c', 3)]
>>> d.accepts(("a", "c")), d.accepts(("a",))
(True, False)
>>> d.count_words()
3
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["Dafsa", "Transition"]


class Transition(NamedTuple):
    """One edge of the automaton."""

    #: State the edge leaves.
    source: int
    #: The activity.
    label: str
    #: State the edge enters.
    target: int


@dataclass(frozen=True)
class Dafsa:
    """A minimal DAFSA; build it with :meth:`build`.

    Attributes
    ----------
    n_states
        Number of states; state 0 is the source.
    transitions
        Every edge, indexed by transition id, in breadth-first order of their source state.
    finals
        The accepting states.
    """

    n_states: int
    transitions: tuple[Transition, ...]
    finals: frozenset[int]
    _delta: dict[tuple[int, str], int] = field(repr=False, compare=False)

    @classmethod
    def build(cls, variants: Iterable[Sequence[str]]) -> Dafsa:
        """The minimal DAFSA accepting exactly ``variants`` (duplicates are ignored).

        >>> Dafsa.build([]).n_states
        1
        """
        # 1. trie: node -> {label: child}
        children: list[dict[str, int]] = [{}]
        final: list[bool] = [False]
        for variant in variants:
            node = 0
            for label in variant:
                nxt = children[node].get(label)
                if nxt is None:
                    nxt = len(children)
                    children[node][label] = nxt
                    children.append({})
                    final.append(False)
                node = nxt
            final[node] = True

        # 2. bottom-up register of right languages (iterative post-order: no recursion limit).
        cls_of = [-1] * len(children)
        register: dict[tuple[bool, tuple[tuple[str, int], ...]], int] = {}
        stack: list[tuple[int, bool]] = [(0, False)]
        while stack:
            node, expanded = stack.pop()
            if not expanded:
                stack.append((node, True))
                stack.extend((child, False) for child in children[node].values())
                continue
            signature = (
                final[node],
                tuple(sorted((label, cls_of[c]) for label, c in children[node].items())),
            )
            cls_of[node] = register.setdefault(signature, len(register))

        # 3. number the classes breadth-first from the root's class, edges in label order.
        edges_of: dict[int, tuple[tuple[str, int], ...]] = {}
        final_cls: set[int] = set()
        for (is_final, edges), cid in register.items():
            edges_of[cid] = edges
            if is_final:
                final_cls.add(cid)
        number: dict[int, int] = {cls_of[0]: 0}
        order = [cls_of[0]]
        transitions: list[Transition] = []
        delta: dict[tuple[int, str], int] = {}
        i = 0
        while i < len(order):
            cid = order[i]
            src = number[cid]
            for label, child in edges_of[cid]:
                if child not in number:
                    number[child] = len(order)
                    order.append(child)
                delta[(src, label)] = len(transitions)
                transitions.append(Transition(src, label, number[child]))
            i += 1
        return cls(
            n_states=len(order),
            transitions=tuple(transitions),
            finals=frozenset(number[c] for c in final_cls),
            _delta=delta,
        )

    def step(self, state: int, label: str) -> int | None:
        """The id of the transition leaving ``state`` on ``label``, or None."""
        return self._delta.get((state, label))

    def path(self, variant: Sequence[str]) -> tuple[int, ...]:
        """Transition ids taken by ``variant``; ``KeyError`` if the automaton rejects it."""
        state = 0
        out: list[int] = []
        for label in variant:
            tid = self._delta.get((state, label))
            if tid is None:
                raise KeyError(f"variant {tuple(variant)!r} is not accepted")
            out.append(tid)
            state = self.transitions[tid].target
        if state not in self.finals:
            raise KeyError(f"variant {tuple(variant)!r} is not accepted")
        return tuple(out)

    def accepts(self, variant: Sequence[str]) -> bool:
        """True if ``variant`` is one of the variants the automaton was built from."""
        try:
            self.path(variant)
        except KeyError:
            return False
        return True

    def count_words(self) -> int:
        """How many distinct variants the automaton accepts (paths from 0 to a final state)."""
        out_edges: list[list[int]] = [[] for _ in range(self.n_states)]
        for t in self.transitions:
            out_edges[t.source].append(t.target)
        memo: dict[int, int] = {}
        # states are numbered breadth-first, but a DAG may still reach a lower number later:
        # evaluate in reverse topological order with an explicit stack.
        stack: list[tuple[int, bool]] = [(0, False)]
        while stack:
            s, expanded = stack.pop()
            if s in memo:
                continue
            if not expanded:
                stack.append((s, True))
                stack.extend((t, False) for t in out_edges[s] if t not in memo)
                continue
            memo[s] = int(s in self.finals) + sum(memo[t] for t in out_edges[s])
        return memo[0]
