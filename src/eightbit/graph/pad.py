"""A constant zero ``Pad`` before a Conv becomes the Conv's own ``pads`` (docs/numerics.md §Q12).

TensorFlow's "same" padding with a stride exports as an explicit ``Pad`` in front of the
Conv (EfficientNet-Lite writes 17 of them before its depthwise Convs). Conv already pads
its input with zeros, so when ``Pad`` adds zeros on the spatial axes only,

    Conv(Pad(x, p), pads=c) = Conv(x, pads=c + p)

exactly: the Conv reads the same values at the same positions. One node fewer, and in the
int8 model ONNX Runtime sees ``DQ → Conv → Q`` (one ``QLinearConv``) instead of a float
``Pad`` between a DequantizeLinear and a QuantizeLinear.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eightbit.graph._proto import attribute_value

# Readers whose zero padding is the same as Pad's constant 0 (MaxPool pads with -inf).
_ZERO_PADDING_READERS = frozenset({"Conv"})


def fold_zero_pads(model: onnx.ModelProto) -> list[str]:
    """Fold every eligible Pad into the Conv(s) reading it (in place); return the Pads' names.

    Eligible: mode ``constant``, value 0 (or absent), pads and axes constant (initializers),
    nothing added or removed on the batch and channel axes, no negative pad, every reader a
    Conv with explicit pads (``auto_pad`` NOTSET or VALID) that reads it as its data input,
    and the padded tensor not a graph output.
    """
    graph = model.graph
    constants = {tensor.name: tensor for tensor in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in dict.fromkeys(node.input):
            readers.setdefault(name, []).append(node)
    outputs = {value.name for value in graph.output}
    folded: list[str] = []
    kept: list[onnx.NodeProto] = []
    for node in graph.node:
        amounts = _pad_amounts(node, constants) if node.op_type == "Pad" else None
        convs = readers.get(node.output[0], []) if amounts is not None else []
        spatial = _conv_pads(amounts, convs, node.output[0], constants)
        if spatial is None or node.output[0] in outputs:
            kept.append(node)
            continue
        for conv in convs:
            _add_pads(conv, spatial)
            conv.input[0] = node.input[0]
        folded.append(node.name)
    if folded:
        graph.ClearField("node")
        graph.node.extend(kept)
    return folded


def _pad_amounts(
    node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]
) -> dict[int, tuple[int, int]] | None:
    """axis -> (begin, end) of a constant-zero Pad with constant pads; None otherwise.

    Axes are as the node gives them (opset >= 18 ``axes`` may be negative); without
    ``axes`` every axis is listed from 0.
    """
    attrs = {a.name: attribute_value(a) for a in node.attribute}
    if _text(attrs.get("mode", "constant")) != "constant":
        return None
    inputs = list(node.input) + [""] * (4 - len(node.input))
    if "pads" in attrs:  # opset < 11: pads and value are attributes
        pads = [int(p) for p in attrs["pads"]]
        value = float(attrs.get("value", 0.0))
    else:
        if any(name and name not in constants for name in inputs[1:4]) or not inputs[1]:
            return None
        pads = [int(p) for p in _array(constants, inputs[1])]
        value = float(_array(constants, inputs[2])[0]) if inputs[2] else 0.0
    if value != 0.0 or len(pads) % 2 or min(pads, default=0) < 0:
        return None
    count = len(pads) // 2
    axes = [int(a) for a in _array(constants, inputs[3])] if inputs[3] else list(range(count))
    if len(axes) != count:
        return None
    return {axis: (pads[i], pads[count + i]) for i, axis in enumerate(axes)}


def _conv_pads(
    amounts: dict[int, tuple[int, int]] | None,
    convs: list[onnx.NodeProto],
    tensor: str,
    constants: dict[str, onnx.TensorProto],
) -> list[int] | None:
    """The pads to add to every reader (begins then ends), or None when one cannot take them."""
    if amounts is None or not convs:
        return None
    ranks = {_conv_rank(conv, tensor, constants) for conv in convs}
    if len(ranks) != 1 or None in ranks:
        return None
    rank = ranks.pop()
    assert rank is not None
    full = [(0, 0)] * rank
    for axis, pair in amounts.items():
        if not -rank <= axis < rank:
            return None
        full[axis % rank] = pair
    if any(full[0]) or any(full[1]):
        return None  # a pad on the batch or channel axis is not a Conv pad
    spatial = full[2:]
    return [begin for begin, _ in spatial] + [end for _, end in spatial]


def _conv_rank(
    conv: onnx.NodeProto, tensor: str, constants: dict[str, onnx.TensorProto]
) -> int | None:
    """The input rank of a Conv that reads ``tensor`` as data and can absorb a zero pad."""
    if conv.op_type not in _ZERO_PADDING_READERS or conv.domain not in ("", "ai.onnx"):
        return None
    if conv.input[0] != tensor or tensor in conv.input[1:]:
        return None
    attrs = {a.name: attribute_value(a) for a in conv.attribute}
    if _text(attrs.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
        return None  # SAME_* pads depend on the input size, which the Pad changes
    if "kernel_shape" in attrs:
        return len(attrs["kernel_shape"]) + 2
    weight = constants.get(conv.input[1])
    return None if weight is None else len(weight.dims)


def _array(constants: dict[str, onnx.TensorProto], name: str) -> np.ndarray:
    return numpy_helper.to_array(constants[name]).reshape(-1)


def _text(value: object) -> object:
    return value.decode() if isinstance(value, bytes) else value


def _add_pads(conv: onnx.NodeProto, spatial: list[int]) -> None:
    attrs = {a.name: attribute_value(a) for a in conv.attribute}
    current = [int(p) for p in attrs.get("pads", [0] * len(spatial))]
    if _text(attrs.get("auto_pad", "NOTSET")) == "VALID":
        current = [0] * len(spatial)  # VALID means no padding
    summed = np.add(current, spatial).tolist()
    kept = [a for a in conv.attribute if a.name not in ("pads", "auto_pad")]
    conv.ClearField("attribute")
    conv.attribute.extend([*kept, helper.make_attribute("pads", [int(p) for p in summed])])
