"""Model import and normalization: the only package that touches ONNX protos directly.

``load_model`` reads a file or copies a ``ModelProto``; ``normalize`` brings it into the
form the rest of eightbit expects; ``Graph`` is the typed, read-only view the other
packages query; ``make_session`` and ``with_outputs`` run models with ONNX Runtime;
``save_model`` writes results atomically.
"""

from eightbit.graph._proto import FreshNames, graph_names
from eightbit.graph.files import load_model, save_model
from eightbit.graph.normalize import normalize
from eightbit.graph.session import exposing_session, make_session, with_outputs
from eightbit.graph.view import Graph, Node, TensorInfo

__all__ = [
    "FreshNames",
    "Graph",
    "Node",
    "TensorInfo",
    "exposing_session",
    "graph_names",
    "load_model",
    "make_session",
    "normalize",
    "save_model",
    "with_outputs",
]
