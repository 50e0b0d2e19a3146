"""Matrix products: Gemm and MatMul (constant weight, or two activations).

Gemm's weight B is ``[K, N]``, or ``[N, K]`` with ``transB = 1``: the output-channel axis
is 1, resp. 0. ONNX Runtime turns a QDQ Gemm into ``QGemm`` and a QDQ MatMul into
``QLinearMatMul``; the latter takes per-channel scales for a 2-D weight but only a
per-tensor scale for a batched (>= 3-D) one, so those are quantized per tensor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from eightbit.ops.spec import Contraction, OpSpec, PerTensor, WeightLayout, attr, optional_input

if TYPE_CHECKING:
    from eightbit.graph import Graph, Node


def _gemm_axis(node: Node, shape: tuple[int, ...]) -> int | PerTensor:
    return 0 if attr(node, "transB", 0) else 1


def _gemm_check(node: Node, graph: Graph) -> str | None:
    if attr(node, "transA", 0):
        return "Gemm with transA=1 is not quantized (the input is not in row-major form)"
    if attr(node, "alpha", 1.0) != 1.0:
        return "Gemm with alpha != 1 is not quantized (QGemm's bias unit assumes alpha = 1)"
    bias = optional_input(node, 2)
    if bias is not None and attr(node, "beta", 1.0) != 1.0:
        return "Gemm with beta != 1 is not quantized (the int32 bias is added unscaled)"
    weight = optional_input(node, 1)
    if bias is not None and weight is not None and weight in graph.initializers:
        # Shapes from the protos' dims: a big weight is not converted to read its shape.
        channels = _shape(graph, weight)[0 if attr(node, "transB", 0) else 1]
        if _shape(graph, bias) != (channels,):
            return f"Gemm bias C must have shape ({channels},) to be stored as int32 per channel"
    return None


def _shape(graph: Graph, constant: str) -> tuple[int, ...]:
    info = graph.info(constant)
    if info is not None and info.shape is not None:
        return tuple(int(d) for d in info.shape)  # type: ignore[arg-type]
    return tuple(np.asarray(graph.initializers[constant]).shape)


def _matmul_axis(node: Node, shape: tuple[int, ...]) -> int | PerTensor:
    if len(shape) != 2:
        return PerTensor(
            "batched MatMul weight: ONNX Runtime fuses it into QLinearMatMul only per tensor"
        )
    return 1


def _gemm_layout(attrs: Mapping[str, Any], shape: tuple[int, ...]) -> WeightLayout | None:
    if attrs.get("transA", 0):
        return None  # A is [K, M]: its axis 1 is M, not the input channels
    if attrs.get("transB", 0):
        return WeightLayout(out_axis=0, in_axis=1)  # B is [N, K]
    return WeightLayout(out_axis=1, in_axis=0)  # B is [K, N]


def _matmul_layout(attrs: Mapping[str, Any], shape: tuple[int, ...]) -> WeightLayout:
    """B is [K, N], or a batch of them [..., K, N]."""
    rank = max(len(shape), 2)
    return WeightLayout(out_axis=rank - 1, in_axis=rank - 2)


GEMM = OpSpec(
    "Gemm",
    weight_port=1,
    bias_port=2,
    weight_channel_axis=_gemm_axis,
    absorbs_activation=True,
    check=_gemm_check,
    contraction=Contraction.MATRIX,
    weight_layout=_gemm_layout,
    runtime_quantizes_float=True,
)
MATMUL = OpSpec(
    "MatMul",
    weight_port=1,
    weight_may_be_activation=True,
    weight_channel_axis=_matmul_axis,
    absorbs_activation=True,
    contraction=Contraction.MATRIX,
    weight_layout=_matmul_layout,
)

SPECS = (GEMM, MATMUL)
