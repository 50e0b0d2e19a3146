"""Convolutions: Conv (grouped and depthwise included) and ConvTranspose.

Weight layouts: Conv ``[C_out, C_in/group, k...]`` (output channels on axis 0),
ConvTranspose ``[C_in, C_out/group, k...]`` (axis 1). Bias ``[C_out]`` is int32 with scale
``s_x · s_w`` (docs/numerics.md §Q3).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from eightbit.ops.spec import Contraction, OpSpec, PerTensor, WeightLayout, Window, attr

if TYPE_CHECKING:
    from eightbit.graph import Node


def _conv_axis(node: Node, shape: tuple[int, ...]) -> int | PerTensor:
    return 0


def _conv_transpose_axis(node: Node, shape: tuple[int, ...]) -> int | PerTensor:
    if attr(node, "group", 1) != 1:
        # Axis 1 holds C_out/group channels: one scale would serve a channel of every group.
        return PerTensor("grouped ConvTranspose: weight axis 1 does not index output channels")
    return 1


def _conv_layout(attrs: Mapping[str, Any], shape: tuple[int, ...]) -> WeightLayout:
    return WeightLayout(out_axis=0, in_axis=1, groups=int(attrs.get("group", 1)))


def _conv_transpose_layout(attrs: Mapping[str, Any], shape: tuple[int, ...]) -> WeightLayout:
    groups = int(attrs.get("group", 1))
    return WeightLayout(out_axis=1, in_axis=0, groups=groups, groups_on_out_axis=False)


def _conv_window(attrs: Mapping[str, Any], shape: tuple[int, ...]) -> Window:
    """Defaults of ONNX Conv: the weight's kernel, stride and dilation 1, no pads."""
    spatial = len(shape) - 2
    auto_pad = attrs.get("auto_pad", "NOTSET")
    return Window(
        kernel=tuple(int(k) for k in attrs.get("kernel_shape", shape[2:])),
        strides=tuple(int(s) for s in attrs.get("strides", (1,) * spatial)),
        dilations=tuple(int(d) for d in attrs.get("dilations", (1,) * spatial)),
        pads=tuple(int(p) for p in attrs.get("pads", (0,) * (2 * spatial))),
        auto_pad=auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad),
    )


CONV = OpSpec(
    "Conv",
    weight_port=1,
    bias_port=2,
    weight_channel_axis=_conv_axis,
    absorbs_activation=True,
    contraction=Contraction.CONVOLUTION,
    weight_layout=_conv_layout,
    window=_conv_window,
    runtime_quantizes_float=True,
)
CONV_TRANSPOSE = OpSpec(
    "ConvTranspose",
    weight_port=1,
    bias_port=2,
    weight_channel_axis=_conv_transpose_axis,
    absorbs_activation=True,
    contraction=Contraction.TRANSPOSED_CONVOLUTION,
    weight_layout=_conv_transpose_layout,
    runtime_quantizes_float=True,
)

SPECS = (CONV, CONV_TRANSPOSE)
