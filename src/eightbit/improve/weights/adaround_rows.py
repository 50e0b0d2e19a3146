"""Layers as rows for learned rounding (docs/numerics.md §R.1-§R.3).

``layer_of`` reads what learned rounding needs about one quantized node: its weight,
bias, input, geometry and folded clamp, or why it cannot take part. ``LayerShape`` maps
weights between the ONNX layout and the canonical ``[groups, channels, inputs]`` layout,
and extracts input rows at sampled positions: im2col patches for a Conv (pads, strides,
dilations and groups as the node says), flattened rows for a Gemm or MatMul.
``stored_weights`` writes the chosen integers back as float weights on the grid (R.2).
numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from eightbit.graph import Graph, Node
from eightbit.ops import Contraction, lookup
from eightbit.ops.node_selection import clamp_bounds
from eightbit.ops.spec import optional_input
from eightbit.plan import QuantPlan
from eightbit.quant import QuantParams, quantize_values

Layout = Literal["conv", "rows_nk", "rows_kn"]
# The layers learned rounding writes as rows: a convolution's im2col patches, a matrix
# product's input rows. A transposed convolution scatters instead, and stays at nearest.
ROW_CONTRACTIONS = (Contraction.CONVOLUTION, Contraction.MATRIX)


@dataclass(frozen=True)
class LayerShape:
    """One layer learned rounding can handle.

    ``layout``: ``conv`` (weight [C_out, C_in/G, k...]), ``rows_nk`` (Gemm transB=1: weight
    [N, K]) or ``rows_kn`` (Gemm transB=0, MatMul: weight [K, N]). ``pads`` hold the begin
    pads then the end pads of each spatial axis, ``auto_pad`` already resolved.
    """

    node: str
    op_type: str
    weight: str
    bias: str | None
    input: str
    layout: Layout
    weight_shape: tuple[int, ...]
    groups: int = 1
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    auto_pad: str = "NOTSET"
    pads: tuple[int, ...] = ()
    clamp: tuple[float, float] | None = None

    @property
    def channels(self) -> int:
        """Output channels per group."""
        if self.layout == "conv":
            return self.weight_shape[0] // self.groups
        return self.weight_shape[0 if self.layout == "rows_nk" else 1]

    def canonical(self, weight: np.ndarray) -> np.ndarray:
        """``weight`` in the [G, C, K] layout (a view where possible)."""
        if self.layout == "conv":
            return weight.reshape(self.groups, self.channels, -1)
        matrix = weight if self.layout == "rows_nk" else weight.T
        return matrix.reshape(1, *matrix.shape)

    def original(self, canonical: np.ndarray) -> np.ndarray:
        """The inverse of ``canonical``: [G, C, K] back to the ONNX layout."""
        if self.layout == "conv":
            return canonical.reshape(self.weight_shape)
        matrix = canonical[0]
        return np.ascontiguousarray(matrix if self.layout == "rows_nk" else matrix.T)

    def canonical_scale(self, params: QuantParams) -> np.ndarray:
        """The weight's scales broadcast to [G, C, 1] (per channel or per tensor)."""
        shape = (self.groups, self.channels, 1)
        scale = params.scale.astype(np.float32)
        # Per channel: the scales are in output-channel order, channel = group · C + c.
        return scale.reshape(shape) if params.per_channel else np.full(shape, scale, np.float32)

    def canonical_bias(self, bias: np.ndarray | None) -> np.ndarray | None:
        return None if bias is None else np.asarray(bias).reshape(self.groups, self.channels)

    def sample_positions(
        self, input_shape: tuple[int, ...], per_sample: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """(sample index, flat output position) of ``per_sample`` rows of each sample."""
        samples = input_shape[0]
        places = math.prod(self._output_spatial(input_shape)) if self.layout == "conv" else 1
        if self.layout != "conv" and len(input_shape) > 2:
            places = math.prod(input_shape[1:-1])
        count = min(per_sample, places)
        chosen = [np.sort(rng.choice(places, size=count, replace=False)) for _ in range(samples)]
        sample_index = np.repeat(np.arange(samples), count)
        return sample_index, np.concatenate(chosen) if chosen else np.zeros(0, np.int64)

    def rows(self, values: np.ndarray, positions: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """Input rows [M, G, K] of ``values`` (the layer's input) at ``positions``."""
        sample_index, flat = positions
        if self.layout != "conv":
            width = values.shape[-1]
            grouped = values.reshape(values.shape[0], -1, width)
            return grouped[sample_index, flat].reshape(len(flat), 1, width)
        return self._patches(values, sample_index, flat)

    def _output_spatial(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        begin, end = self._pads(input_shape)
        return tuple(
            (size + b + e - d * (k - 1) - 1) // s + 1
            for size, b, e, k, s, d in zip(
                input_shape[2:], begin, end, self.kernel, self.strides, self.dilations, strict=True
            )
        )

    def _pads(self, input_shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Begin and end pads per spatial axis, ``auto_pad`` resolved as ONNX defines it."""
        spatial = len(self.kernel)
        if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            begin, end = [], []
            for size, k, s, d in zip(
                input_shape[2:], self.kernel, self.strides, self.dilations, strict=True
            ):
                out = -(-size // s)
                total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
                small = total // 2
                first = small if self.auto_pad == "SAME_UPPER" else total - small
                begin.append(first)
                end.append(total - first)
            return tuple(begin), tuple(end)
        if self.auto_pad == "VALID" or not self.pads:
            return (0,) * spatial, (0,) * spatial
        return self.pads[:spatial], self.pads[spatial:]

    def _patches(
        self, values: np.ndarray, sample_index: np.ndarray, flat: np.ndarray
    ) -> np.ndarray:
        """im2col at the sampled output positions only (eq. R.3)."""
        spatial = len(self.kernel)
        begin, end = self._pads(values.shape)
        padded = np.pad(values, [(0, 0), (0, 0), *zip(begin, end, strict=True)])
        coordinates = np.unravel_index(flat, self._output_spatial(values.shape))
        count, channels = len(flat), values.shape[1]
        ones = (1,) * spatial
        index: list[np.ndarray] = [
            sample_index.reshape(count, 1, *ones),
            np.arange(channels).reshape(1, channels, *ones),
        ]
        for axis in range(spatial):
            taps = [1] * spatial
            taps[axis] = self.kernel[axis]
            offsets = (np.arange(self.kernel[axis]) * self.dilations[axis]).reshape(1, 1, *taps)
            start = (coordinates[axis] * self.strides[axis]).reshape(count, 1, *ones)
            index.append(start + offsets)
        patches = padded[tuple(index)]  # [M, C_in, k...]
        return patches.reshape(count, self.groups, -1)


def layer_of(graph: Graph, node: Node, plan: QuantPlan) -> LayerShape | str:
    """The node as a learned-rounding layer, or why it is left at nearest rounding."""
    spec = lookup(node.op_type, node.domain)
    port = None if spec is None else spec.weight_port
    weight = None if port is None else optional_input(node, port)
    quantized_constant = weight in graph.initializers and weight in plan.tensors
    if spec is None or weight is None or not quantized_constant:
        return "its weight is not a quantized constant"
    values = graph.initializers[weight]
    shape = tuple(int(d) for d in values.shape)
    if values.dtype != np.float32:
        return f"its weight is {values.dtype}; learned rounding writes float32 weights"
    if [reader.name for reader in graph.consumers(weight)] != [node.name]:
        return "its weight is also read by other nodes"
    decision = plan.decision(node.name)
    clamp = None
    if decision.fused_activation is not None:
        clamp = clamp_bounds(graph, graph.node(decision.fused_activation))
    bias = None if spec.bias_port is None else optional_input(node, spec.bias_port)
    found = None if spec.weight_layout is None else spec.weight_layout(node.attrs, shape)
    if found is not None and spec.window is not None:
        if len(shape) < 3:
            return f"{node.op_type} weight of shape {shape} has no spatial axes"
        window = spec.window(node.attrs, shape)
        return LayerShape(
            node.name,
            node.op_type,
            weight,
            bias,
            input=node.inputs[0],
            layout="conv",
            weight_shape=shape,
            groups=found.groups,
            kernel=window.kernel,
            strides=window.strides,
            dilations=window.dilations,
            auto_pad=window.auto_pad,
            pads=window.pads,
            clamp=clamp,
        )
    if found is not None and spec.contraction is Contraction.MATRIX and len(shape) == 2:
        layout: Layout = "rows_nk" if found.out_axis == 0 else "rows_kn"
        return LayerShape(
            node.name, node.op_type, weight, bias, node.inputs[0], layout, shape, clamp=clamp
        )
    return f"{node.op_type} with a weight of shape {shape} is not supported by learned rounding"


def group_bounds(
    shape: LayerShape, weight: np.ndarray, params: QuantParams
) -> tuple[np.ndarray, np.ndarray]:
    """(B, m) of eq. R.1 per scale group, as [G, C, 1]: the bound and the largest |w|."""
    canonical = np.abs(shape.canonical(np.asarray(weight, dtype=np.float32)))
    if params.per_channel:
        largest = np.max(canonical, axis=2, keepdims=True)
    else:
        largest = np.full((*canonical.shape[:2], 1), np.max(canonical), dtype=np.float32)
    scale = shape.canonical_scale(params)
    # Divided in float32 as the export does, so that B is the integer it stores for m.
    bound = np.minimum(np.abs(np.rint(largest / scale)), params.qmax).astype(np.int64)
    return bound, largest.astype(np.float32)


def stored_weights(
    shape: LayerShape, q: np.ndarray, params: QuantParams, largest: np.ndarray, bound: np.ndarray
) -> np.ndarray:
    """Float weights that ``quantize_values`` turns back into exactly ``q`` (eq. R.2).

    Raises AssertionError if an element does not: that would be a bug, not bad input.
    """
    scale = shape.canonical_scale(params)
    on_grid = (scale * q.astype(np.float32)).astype(np.float32)
    at_bound = (np.abs(q) == bound) & (bound > 0)
    values = np.where(at_bound, np.sign(q) * largest, on_grid).astype(np.float32)
    weights = shape.original(values)
    stored = quantize_values(weights, params).astype(np.int64)
    if not np.array_equal(stored, shape.original(q)):
        wrong = int(np.sum(stored != shape.original(q)))
        raise AssertionError(f"{wrong} learned weights of {shape.node!r} do not re-quantize")
    return weights
