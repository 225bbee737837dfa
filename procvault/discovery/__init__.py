"""Discovered models on the reading side: pm4py objects, files, pictures, the public net, diffs.

The pure engine (:mod:`procvault.monitor.discovery`) counts and derives; this package turns a
:class:`~procvault.monitor.discovery.DiscoveredModel` into what people use:

* :mod:`.convert`: pm4py's DFG, ``HeuristicsNet`` and its Petri net, the Declare dictionary;
* :mod:`.files`: ``model.json``, PNML, BPMN, ``declare.json``, pm4py's ``.dfg`` and pictures
  (:func:`write_models`), and :func:`read_model`;
* :mod:`.draw`: PNG/SVG pictures (graphviz);
* :mod:`.public`: the public net, pm4py's inductive miner on a noisy directly-follows graph
  (post-processing of DP values), with its soundness and its noise;
* :mod:`.changes`: what changed between two periods' models.

See ``docs/discovery.md``.
"""

from procvault.discovery.changes import ModelDiff, diff, render_diff
from procvault.discovery.convert import (
    heuristics_net,
    heuristics_petri_net,
    to_declare,
    to_dfg,
    to_pm4py_dfg,
)
from procvault.discovery.files import DeclareFile, read_model, write_declare, write_models
from procvault.discovery.public import PublicNet, public_net, write_public_net

__all__ = [
    "DeclareFile",
    "ModelDiff",
    "PublicNet",
    "diff",
    "heuristics_net",
    "heuristics_petri_net",
    "public_net",
    "read_model",
    "render_diff",
    "to_declare",
    "to_dfg",
    "to_pm4py_dfg",
    "write_declare",
    "write_models",
    "write_public_net",
]
