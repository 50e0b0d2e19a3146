"""Space-to-depth stems: a strided Conv on a few input channels as a stride-1 Conv.

The first Conv of an image network (ResNet's 7×7 stride-2 on 3 channels) is the slowest
int8 layer in ONNX Runtime: with 3 input channels its im2col rows are short and badly
aligned for the int8 GEMM. The same Conv reads a SpaceToDepth of its input with stride 1
(docs/numerics.md §Q11): for stride s, the input position s·i + u − p_begin is block
position i + a − m of phase u' mod s, so

    y[o, i, j] = Σ_{c, a, b, p, q} w'[o, k, a, b] · S[k, i + a − m_h, j + b − m_w],
    k = (p·s + q)·C + c

with S = SpaceToDepth(x, s), w'[o, (p·s + q)·C + c, a, b] = w[o, c, s·a + p − δ_h,
s·b + q − δ_w] (0 outside the kernel), δ = (−p_begin) mod s, m = (δ + p_begin) / s,
k' = ceil((δ + k) / s) and new pads (m, end) chosen so that the output size is unchanged.
Every product of the original sum appears once, the others are products with 0: the float
function is the same up to summation order and the int8 one is identical (the same
integers, plus zeros). Only Convs that read a graph input are rewritten, so that the move
is done once on the stored input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eightbit.graph._proto import FreshNames, graph_names
from eightbit.graph.normalize import infer_shapes
from eightbit.graph.view import Graph, Node

# Rewrite only when the input has at most this many channels (3: RGB, 1: grey, 4: RGBA)...
MAX_INPUT_CHANNELS = 4
# ... and the rewritten kernel does at most this many times the multiply-adds.
MAX_WORK_RATIO = 2.0


@dataclass(frozen=True)
class _Geometry:
    stride: int
    begin: tuple[int, int]  # m: the new Conv's leading pads
    end: tuple[int, int]
    delta: tuple[int, int]
    new_kernel: tuple[int, int]


def has_space_to_depth(model: onnx.ModelProto) -> bool:
    """Whether ``model`` holds a SpaceToDepth: a rewritten stem, or one of its own."""
    return any(node.op_type == "SpaceToDepth" for node in model.graph.node)


def space_to_depth_stems(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` with every eligible stem Conv rewritten, and their names.

    ``model`` is normalized (initializer weights, shapes inferred); it is not modified.
    """
    graph = Graph(model)
    inputs = {info.name for info in graph.inputs}
    plans: dict[str, _Geometry] = {}
    for node in graph.nodes:
        if node.op_type == "Conv" and node.inputs and node.inputs[0] in inputs:
            geometry = _geometry(graph, node)
            if geometry is not None:
                plans[node.name] = geometry
    if not plans:
        return model, []
    result = onnx.ModelProto()
    result.CopyFrom(model)
    initializers = {tensor.name: tensor for tensor in result.graph.initializer}
    fresh = FreshNames(graph_names(result.graph))
    nodes: list[onnx.NodeProto] = []
    moved: dict[tuple[str, int], str] = {}  # (input, stride) -> its SpaceToDepth output
    for node in result.graph.node:
        geometry = plans.get(node.name)
        if geometry is not None:
            key = (node.input[0], geometry.stride)
            if key not in moved:
                moved[key] = fresh(f"{node.input[0]}_space_to_depth")
                nodes.append(
                    helper.make_node(
                        "SpaceToDepth",
                        [node.input[0]],
                        [moved[key]],
                        name=fresh(f"{node.name}_space_to_depth"),
                        blocksize=geometry.stride,
                    )
                )
            _rewrite(node, geometry, moved[key], initializers)
        nodes.append(node)
    result.graph.ClearField("node")
    result.graph.node.extend(nodes)
    infer_shapes(result)  # the Convs' outputs keep their shapes; the moved inputs get theirs
    return result, list(plans)


def _geometry(graph: Graph, node: Node) -> _Geometry | None:
    """The rewrite of ``node``, or None when it does not apply or would not pay."""
    attrs = node.attrs
    if len(node.inputs) < 2 or node.inputs[1] not in graph.initializers:
        return None
    weight = graph.initializers[node.inputs[1]]
    info = graph.info(node.inputs[0])
    shape = None if info is None else info.shape
    if weight.ndim != 4 or shape is None or len(shape) != 4:
        return None
    strides = list(attrs.get("strides", [1, 1]))
    if int(attrs.get("group", 1)) != 1 or attrs.get("auto_pad", "NOTSET") != "NOTSET":
        return None
    if any(int(d) != 1 for d in attrs.get("dilations", [1, 1])) or strides[0] != strides[1]:
        return None
    stride, channels = int(strides[0]), int(weight.shape[1])
    if stride < 2 or channels > MAX_INPUT_CHANNELS:
        return None
    height, width = shape[2], shape[3]
    if not (isinstance(height, int) and isinstance(width, int)):
        return None  # symbolic spatial sizes: divisibility by the stride is unknown
    if height % stride or width % stride:
        return None
    kernel = (int(weight.shape[2]), int(weight.shape[3]))
    pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
    delta = tuple((-p) % stride for p in pads[:2])
    new_kernel = tuple(math.ceil((d + k) / stride) for d, k in zip(delta, kernel, strict=True))
    work = new_kernel[0] * new_kernel[1] * stride * stride / (kernel[0] * kernel[1])
    if min(kernel) <= stride or work > MAX_WORK_RATIO:
        return None
    begin = tuple((d + p) // stride for d, p in zip(delta, pads[:2], strict=True))
    end = []
    for axis, size in enumerate((height, width)):
        out = (size + pads[axis] + pads[axis + 2] - kernel[axis]) // stride + 1
        end.append(out + new_kernel[axis] - begin[axis] - 1 - size // stride)
    if min(end) < 0:
        return None  # the original drops trailing input the new Conv would read
    return _Geometry(
        stride,
        (begin[0], begin[1]),
        (end[0], end[1]),
        (delta[0], delta[1]),
        (new_kernel[0], new_kernel[1]),
    )


def space_to_depth_weight(weight: np.ndarray, stride: int, delta: tuple[int, int]) -> np.ndarray:
    """w' of the module docstring: (O, C, kh, kw) -> (O, s·s·C, k'h, k'w), ONNX's DCR order."""
    out_channels, channels, kh, kw = weight.shape
    new_h, new_w = math.ceil((delta[0] + kh) / stride), math.ceil((delta[1] + kw) / stride)
    padded = np.zeros((out_channels, channels, new_h * stride, new_w * stride), weight.dtype)
    padded[:, :, delta[0] : delta[0] + kh, delta[1] : delta[1] + kw] = weight
    # padded[o, c, s·a + p, s·b + q] -> w'[o, (p·s + q)·C + c, a, b]
    blocks = padded.reshape(out_channels, channels, new_h, stride, new_w, stride)
    return (
        blocks.transpose(0, 3, 5, 1, 2, 4)
        .reshape(out_channels, stride * stride * channels, new_h, new_w)
        .copy()
    )


def _rewrite(
    node: onnx.NodeProto,
    geometry: _Geometry,
    source: str,
    initializers: dict[str, onnx.TensorProto],
) -> None:
    weight_name = node.input[1]
    weight = numpy_helper.to_array(initializers[weight_name])
    rewritten = space_to_depth_weight(weight, geometry.stride, geometry.delta)
    initializers[weight_name].CopyFrom(numpy_helper.from_array(rewritten, weight_name))
    node.input[0] = source
    kept = [a for a in node.attribute if a.name not in ("kernel_shape", "strides", "pads")]
    node.ClearField("attribute")
    node.attribute.extend(kept)
    node.attribute.extend(
        [
            helper.make_attribute("kernel_shape", list(geometry.new_kernel)),
            helper.make_attribute("strides", [1, 1]),
            helper.make_attribute("pads", [*geometry.begin, *geometry.end]),
        ]
    )
