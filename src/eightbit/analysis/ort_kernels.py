"""Which nodes of a QDQ model ONNX Runtime runs outside its int8 kernels (docs/numerics.md §Q12).

ONNX Runtime fuses ``DQ → op → Q`` into a ``QLinear*`` kernel, or drops the pair around a
pure move, only for the ops and forms it knows. Everything else runs in float between a
DequantizeLinear and a QuantizeLinear: it costs the float op plus a dequantization and a
quantization, and is why an int8 model can be slower than ONNX Runtime's own int8 of it.
``float_nodes_in_ort`` reads the graph ONNX Runtime actually runs (its optimized model
file) and lists those nodes, so a test or a benchmark can say which ones and why.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import onnx

from eightbit.graph.session import Optimization, make_session

_QUANTIZE = frozenset({"QuantizeLinear", "DynamicQuantizeLinear"})
_DEQUANTIZE = "DequantizeLinear"
# Integer kernels whose names do not start with QLinear.
_INTEGER_KERNELS = frozenset(
    {"QGemm", "MatMulInteger", "ConvInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}
)
# Nodes that read a tensor's shape, not its values.
_METADATA_OPS = frozenset({"Shape", "Size"})
_INTEGER_TYPES = frozenset({onnx.TensorProto.UINT8, onnx.TensorProto.INT8, onnx.TensorProto.INT32})


@dataclass(frozen=True)
class FloatNode:
    """A node of ONNX Runtime's optimized graph that computes on float values.

    ``between_dq_and_q``: it reads a DequantizeLinear's output and its output reaches a
    QuantizeLinear: an int8 island broken by a float op (what an int8 kernel would avoid).
    """

    name: str
    op_type: str
    between_dq_and_q: bool

    def __str__(self) -> str:
        where = " between DequantizeLinear and QuantizeLinear" if self.between_dq_and_q else ""
        return f"{self.op_type} {self.name!r}{where}"


def float_nodes_in_ort(
    model: onnx.ModelProto, *, optimization: Optimization = "all"
) -> list[FloatNode]:
    """The float compute nodes of the graph ONNX Runtime runs for ``model`` (1 thread, CPU).

    Q/DQ nodes themselves, ``QLinear*``/``QGemm``-style kernels, moves on integer tensors and
    shape reads are not listed. A DequantizeLinear read directly by a QuantizeLinear (a
    requantization ONNX Runtime did not fuse) is listed as a ``DequantizeLinear`` node.
    """
    with tempfile.TemporaryDirectory(prefix="eightbit-ort-") as folder:
        path = os.path.join(folder, "optimized.onnx")
        make_session(model, threads=1, optimized_model_path=path, optimization=optimization)
        optimized = onnx.load(path, load_external_data=False)
    return _float_nodes(optimized.graph)


def _float_nodes(graph: onnx.GraphProto) -> list[FloatNode]:
    integer = _integer_tensors(graph)
    nodes = list(graph.node)  # one Python object per node: indices below refer to it
    computing = {
        index
        for index, node in enumerate(nodes)
        if node.op_type not in _QUANTIZE
        and node.op_type != _DEQUANTIZE
        and not _is_integer_kernel(node)
        and node.op_type not in _METADATA_OPS
        and any(name and name not in integer for name in node.input[:1])
    }
    after_dq, before_q = _from_dq(nodes, computing), _to_q(nodes, computing)
    found = []
    for index, node in enumerate(nodes):
        name = node.name or node.output[0]
        if node.op_type == _DEQUANTIZE and index in before_q:
            found.append(FloatNode(name, node.op_type, True))
        elif index in computing:
            found.append(FloatNode(name, node.op_type, index in after_dq and index in before_q))
    return found


def _from_dq(nodes: list[onnx.NodeProto], computing: set[int]) -> set[int]:
    """Indices of the float nodes reached from a DequantizeLinear through float nodes."""
    marked: set[str] = set()
    reached: set[int] = set()
    for index, node in enumerate(nodes):
        if node.op_type == _DEQUANTIZE:
            marked.update(node.output)
        elif index in computing and any(name in marked for name in node.input):
            reached.add(index)
            marked.update(node.output)
    return reached


def _to_q(nodes: list[onnx.NodeProto], computing: set[int]) -> set[int]:
    """Indices of the float nodes, and DequantizeLinears, whose values reach a QuantizeLinear
    through float nodes only (a DQ read directly by a Q is an unfused requantization)."""
    quantized = {node.input[0] for node in nodes if node.op_type in _QUANTIZE}
    marked = set(quantized)
    reached: set[int] = set()
    for index in reversed(range(len(nodes))):
        node = nodes[index]
        if node.op_type == _DEQUANTIZE and quantized.intersection(node.output):
            reached.add(index)
        elif index in computing and marked.intersection(node.output):
            reached.add(index)
            marked.update(node.input)
    return reached


def _is_integer_kernel(node: onnx.NodeProto) -> bool:
    return node.op_type.startswith("QLinear") or node.op_type in _INTEGER_KERNELS


def _integer_tensors(graph: onnx.GraphProto) -> set[str]:
    """Tensors holding integers: typed so, quantized, or moved from integers (in order)."""
    integer = {t.name for t in graph.initializer if t.data_type in _INTEGER_TYPES}
    for value in [*graph.input, *graph.value_info]:
        if value.type.tensor_type.elem_type in _INTEGER_TYPES:
            integer.add(value.name)
    for node in graph.node:
        first = node.input[0] if node.input else ""
        if node.op_type in _QUANTIZE or _is_integer_kernel(node):
            integer.update(node.output[:1])
        elif node.op_type != _DEQUANTIZE and first in integer:
            integer.update(node.output)
    return integer
