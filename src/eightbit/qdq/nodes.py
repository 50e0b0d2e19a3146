"""QuantizeLinear and DequantizeLinear nodes: which they are, what they store (§Q10.1).

Every reader of a QDQ model (the engine, the analysis, the moves on stored integers) asks
the same three questions of a node: is it a Q or a DQ, with which parameters, and does this
DQ read a Q (a pair: an activation stored as integers) or an integer constant (a weight).
The answers follow the ONNX operator definitions, checked against ONNX Runtime and
``onnx.reference`` in ``tests/qdq/test_nodes.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np
from onnx import TensorProto

from eightbit.errors import ConfigError, ModelError
from eightbit.graph import Graph, Node
from eightbit.quant import QuantParams, QuantType

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
# Both spellings of ONNX's own domain: a node in any other (com.microsoft's 16-bit
# QuantizeLinear) is a different operator.
_ONNX_DOMAINS = ("", "ai.onnx")
# QuantizeLinear's stored type when neither a zero point nor output_dtype says (ONNX).
_DEFAULT_QUANTIZE_TYPE = np.dtype(np.uint8)
# The stored types a QDQ model is read with: QuantParams also holds int16 (16x8 activations,
# numerics §Q17), which the integer engine reads (``WIDE_READ_TYPES``, §E.13) and the
# analysis does not yet.
READ_TYPES: tuple[QuantType, ...] = ("int8", "uint8", "int32")
WIDE_READ_TYPES: tuple[QuantType, ...] = ("int8", "uint8", "int16", "int32")
# output_dtype values of the types read.
_READ_TYPES: dict[int, np.dtype] = {
    TensorProto.INT8: np.dtype(np.int8),
    TensorProto.UINT8: np.dtype(np.uint8),
    TensorProto.INT16: np.dtype(np.int16),
    TensorProto.INT32: np.dtype(np.int32),
}
_SCALE, _ZERO_POINT = 1, 2


class OpNode(Protocol):
    """What the tests below need of a node: ``graph.Node`` and ``onnx.NodeProto`` both fit."""

    @property
    def op_type(self) -> str: ...

    @property
    def domain(self) -> str: ...


def is_quantize(node: OpNode) -> bool:
    return node.op_type == "QuantizeLinear" and node.domain in _ONNX_DOMAINS


def is_dequantize(node: OpNode) -> bool:
    return node.op_type == "DequantizeLinear" and node.domain in _ONNX_DOMAINS


def is_qdq(node: OpNode) -> bool:
    return is_quantize(node) or is_dequantize(node)


class UnreadableParams(ModelError):
    """A Q/DQ node whose parameters eightbit does not read; ``reason`` says why, in words
    that follow the node's name ("its scale is computed at run time")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def stored_type(
    node: Node, zero_point: np.ndarray | None, input_type: np.dtype | None = None
) -> np.dtype:
    """The integer type a Q writes or a DQ reads (eq. Q10.1, ONNX's rule).

    The zero point's type when there is one; otherwise, for a DequantizeLinear, the type of
    its input, and for a QuantizeLinear its ``output_dtype`` attribute (opset 21) or uint8.
    """
    if zero_point is not None:
        return zero_point.dtype
    if is_dequantize(node):
        if input_type is None:
            raise UnreadableParams("it has no zero point and the type of its input is unknown")
        return np.dtype(input_type)
    output_dtype = int(node.attrs.get("output_dtype", TensorProto.UNDEFINED))
    if output_dtype == TensorProto.UNDEFINED:
        return _DEFAULT_QUANTIZE_TYPE
    if output_dtype not in _READ_TYPES:
        known = output_dtype in TensorProto.DataType.values()
        name = TensorProto.DataType.Name(output_dtype).lower() if known else str(output_dtype)
        raise UnreadableParams(f"it stores {name}; eightbit reads {list(READ_TYPES)}")
    return _READ_TYPES[output_dtype]


def read_params(
    node: Node,
    constants: Mapping[str, np.ndarray],
    input_type: np.dtype | None = None,
    *,
    types: tuple[QuantType, ...] = READ_TYPES,
) -> QuantParams:
    """Scale, zero point, type and axis of a Q or DQ ``node`` whose parameters are constants.

    ``input_type``: the type of a DQ's input when it is not one of ``constants`` (an
    activation's integers). A scale of one element (shape ``()`` or ``(1,)``, as ONNX
    Runtime's quantizer writes a per-tensor bias) is per tensor; a longer 1-D scale is per
    axis, along ``axis`` (default 1). Raises ``UnreadableParams`` for what eightbit does not
    read: parameters computed at run time, blocked scales, types other than ``types``
    (int8, uint8 and int32; the engine adds int16, ``WIDE_READ_TYPES``), and shapes ONNX
    Runtime refuses.
    """
    scale_name = node.inputs[_SCALE] if len(node.inputs) > _SCALE else ""
    zero_name = node.inputs[_ZERO_POINT] if len(node.inputs) > _ZERO_POINT else ""
    if scale_name not in constants or (zero_name and zero_name not in constants):
        raise UnreadableParams("its scale or zero point is computed at run time")
    if node.attrs.get("block_size", 0):
        raise UnreadableParams("it uses blocked quantization (block_size)")
    if is_dequantize(node) and node.inputs[0] in constants:
        input_type = np.asarray(constants[node.inputs[0]]).dtype
    scale = np.asarray(constants[scale_name], dtype=np.float32)
    zero = np.asarray(constants[zero_name]) if zero_name else None
    dtype = stored_type(node, zero, input_type)
    if dtype.name not in types:
        raise UnreadableParams(f"it stores {dtype.name}; eightbit reads {list(types)}")
    if zero is None:
        zero = np.zeros(scale.shape, dtype=np.int64)
    if scale.size == 1 and scale.ndim <= 1 and zero.size == 1 and zero.ndim <= 1:
        scale, zero = scale.reshape(()), zero.reshape(())
    if scale.ndim > 1 or zero.shape != scale.shape:
        raise UnreadableParams(
            f"its scale has shape {scale.shape} and its zero point {zero.shape}; expected "
            "both () or both (channels,)"
        )
    axis = int(node.attrs.get("axis", 1)) if scale.ndim == 1 else None
    try:
        return QuantParams(scale, zero.astype(np.int64), dtype.name, axis)
    except ConfigError as error:  # not unsupported but broken: no reader can go on
        raise ModelError(f"{node.op_type} {node.name!r} has invalid parameters: {error}") from None


def quantize_before(graph: Graph, dequantize: Node) -> Node | None:
    """The QuantizeLinear whose output ``dequantize`` reads (the two form a pair: an
    activation stored as integers), or None."""
    producer = graph.producer(dequantize.inputs[0])
    return producer if producer is not None and is_quantize(producer) else None


def dequantizes_constant(graph: Graph, dequantize: Node) -> bool:
    """Whether ``dequantize`` reads an integer initializer (a weight or bias)."""
    return dequantize.inputs[0] in graph.initializers
