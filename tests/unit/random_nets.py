"""Random sound workflow nets for property tests: process trees drawn by Hypothesis.

Trees mix sequence, choice, parallelism and loops with silent leaves and repeated labels, so
their Petri nets have chains and choices of silent transitions and duplicate labels.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

ALPHABET = "abcdef"


def trees(depth: int) -> st.SearchStrategy[Any]:
    """A tree spec: a label (``None`` = silent) or ``(operator, [children])``."""
    leaf = st.sampled_from([*ALPHABET, None])
    if depth == 0:
        return leaf
    sub = trees(depth - 1)
    op = st.sampled_from(["->", "X", "+", "*"])
    return st.one_of(leaf, st.tuples(op, st.lists(sub, min_size=2, max_size=3)))


def process_tree(spec: Any, parent: Any = None) -> Any:
    """The pm4py ``ProcessTree`` of a spec (a bare leaf becomes ``-> (leaf, a)``)."""
    from pm4py.objects.process_tree.obj import Operator, ProcessTree

    if parent is None and not isinstance(spec, tuple):
        spec = ("->", [spec, "a"])
    if not isinstance(spec, tuple):
        return ProcessTree(label=spec, parent=parent)
    op, children = spec
    operator = {
        "->": Operator.SEQUENCE,
        "X": Operator.XOR,
        "+": Operator.PARALLEL,
        "*": Operator.LOOP,
    }[op]
    node = ProcessTree(operator=operator, parent=parent)
    node.children = [process_tree(c, node) for c in (children[:2] if op == "*" else children)]
    return node
