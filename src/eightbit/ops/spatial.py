"""Which axes of an output are positions in a map, not features (docs/numerics.md §A.9).

ONNX's convolutions, pools and resizes write ``[N, C, spatial...]``, and what follows them
value by value (an activation, a scale or bias by a constant) keeps that layout. A slice of
such an output along a spatial axis is a row or a column of a map (a text detector's
probability map): its SQNR follows how much signal that stripe of the input happens to
hold, not whether int8 kept a feature, so the per-slice verdicts judge only the channel
axis there.
"""

from __future__ import annotations

from eightbit.graph.view import Graph

# Ops whose output is [N, C, spatial...] (ONNX's layout for all of them).
_MAP_OPS = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "MaxPool",
        "AveragePool",
        "LpPool",
        "BatchNormalization",
        "InstanceNormalization",
        "Resize",
        "Upsample",
    }
)
# Ops that act value by value on their one data input: the layout passes through them.
_VALUE_BY_VALUE = frozenset(
    {
        "Sigmoid",
        "HardSigmoid",
        "Relu",
        "LeakyRelu",
        "PRelu",
        "Clip",
        "Tanh",
        "Elu",
        "Selu",
        "Softplus",
        "HardSwish",
        "Identity",
        "Cast",
    }
)
# Value-by-value with a second input; the layout passes through the one that is not a
# constant (a constant scale or bias broadcast over the map).
_WITH_A_CONSTANT = frozenset({"Add", "Sub", "Mul", "Div"})


def spatial_axes(graph: Graph, tensor: str) -> tuple[int, ...]:
    """The spatial axes (2 and on) of ``tensor`` when a convolution, pool or resize writes
    it, through value-by-value ops; empty otherwise (or when its rank is unknown)."""
    info = graph.info(tensor)
    if info is None or info.shape is None or len(info.shape) < 3:
        return ()
    name = tensor
    for _ in range(len(graph.nodes) + 1):
        node = graph.producer(name)
        if node is None or node.domain not in ("", "ai.onnx") or not node.inputs:
            return ()
        if node.op_type in _MAP_OPS:
            return tuple(range(2, len(info.shape)))
        if node.op_type in _VALUE_BY_VALUE:
            name = node.inputs[0]
        elif node.op_type in _WITH_A_CONSTANT and len(node.inputs) == 2:
            data = [i for i in node.inputs if not graph.is_constant(i)]
            if len(data) != 1:
                return ()
            name = data[0]
        else:
            return ()
    return ()
