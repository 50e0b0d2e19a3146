"""Parameter memory float vs int8, per node and in total (§A.6).

Like MATLAB's ``estimateNetworkMetrics``: the bytes of the parameters each node reads, in
the float model and in the int8 model. Sizes come from the tensors' types and shapes, so
no weight is converted to count it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eightbit.analysis.qdq import node_label
from eightbit.graph import Graph
from eightbit.qdq import QDQ_OPS, is_dequantize

# DequantizeLinear produces float32 (the type of its scale) in every model eightbit reads.
_FLOAT_BYTES = 4


@dataclass(frozen=True)
class LayerMemory:
    node: str
    op_type: str
    float_bytes: int
    int8_bytes: int


@dataclass(frozen=True)
class MemoryUsage:
    """Parameter bytes per node and in total; file sizes when the models came from files."""

    layers: tuple[LayerMemory, ...]
    float_bytes: int
    int8_bytes: int
    float_file_bytes: int | None = None
    int8_file_bytes: int | None = None

    @property
    def saved_percent(self) -> float:
        """100 · (1 − int8 / float); 0 for a model without parameters."""
        return 100.0 * (1.0 - self.int8_bytes / self.float_bytes) if self.float_bytes else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "float_bytes": self.float_bytes,
            "int8_bytes": self.int8_bytes,
            "saved_percent": self.saved_percent,
            "float_file_bytes": self.float_file_bytes,
            "int8_file_bytes": self.int8_file_bytes,
            "layers": [
                {
                    "node": layer.node,
                    "op_type": layer.op_type,
                    "float_bytes": layer.float_bytes,
                    "int8_bytes": layer.int8_bytes,
                }
                for layer in self.layers
            ],
        }


def memory_usage(
    float_graph: Graph,
    int8_graph: Graph,
    *,
    float_path: str | os.PathLike[str] | None = None,
    int8_path: str | os.PathLike[str] | None = None,
) -> MemoryUsage:
    """Parameter bytes of every node of ``int8_graph`` that reads parameters, and totals."""
    layers = []
    for index, node in enumerate(int8_graph.nodes):
        if node.op_type in QDQ_OPS:
            continue
        float_bytes = int8_bytes = 0
        for name in dict.fromkeys(node.inputs):
            if not name:
                continue
            if name in int8_graph.initializers:
                size = _bytes(int8_graph, name)
                float_bytes, int8_bytes = float_bytes + size, int8_bytes + size
                continue
            stored = _stored_constant(int8_graph, name)
            if stored is not None:
                float_bytes += _elements(int8_graph, stored[0]) * _FLOAT_BYTES
                int8_bytes += sum(_bytes(int8_graph, part) for part in stored)
        if float_bytes:
            layers.append(
                LayerMemory(node_label(node, index), node.op_type, float_bytes, int8_bytes)
            )
    return MemoryUsage(
        layers=tuple(layers),
        float_bytes=_total(float_graph),
        int8_bytes=_total(int8_graph),
        float_file_bytes=_file_size(float_path),
        int8_file_bytes=_file_size(int8_path),
    )


def _stored_constant(graph: Graph, name: str) -> tuple[str, ...] | None:
    """(integers, scale, zero point) initializers behind a DequantizeLinear output ``name``."""
    producer = graph.producer(name)
    if producer is None or not is_dequantize(producer):
        return None
    parts = tuple(part for part in producer.inputs if part)
    return parts if all(part in graph.initializers for part in parts) else None


def _elements(graph: Graph, name: str) -> int:
    info = graph.info(name)
    if info is None or info.shape is None:
        return int(graph.initializers[name].size)
    return math.prod(int(dim) for dim in info.shape if isinstance(dim, int))


def _bytes(graph: Graph, name: str) -> int:
    info = graph.info(name)
    itemsize = info.dtype.itemsize if info is not None else graph.initializers[name].itemsize
    return _elements(graph, name) * itemsize


def _total(graph: Graph) -> int:
    return sum(_bytes(graph, name) for name in graph.initializers)


def _file_size(path: str | os.PathLike[str] | None) -> int | None:
    """Bytes of a model file and of the external data files beside it, if any."""
    if path is None:
        return None
    model = Path(path)
    size = model.stat().st_size
    data = model.with_name(model.name + ".data")
    return size + data.stat().st_size if data.is_file() else size
