"""Activations. Relu and Clip are clamps: they keep their input's parameters and can be
folded into the op before them (docs/numerics.md §Q5). LeakyRelu, Sigmoid, HardSigmoid and
HardSwish are curves with their own calibrated output range (lookup tables on integers).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from eightbit.ops.spec import OpSpec, OutputParams, attr, optional_input

if TYPE_CHECKING:
    from eightbit.graph import Graph, Node


def _relu_bounds(node: Node, graph: Graph) -> tuple[float, float] | None:
    return 0.0, math.inf


def _clip_bounds(node: Node, graph: Graph) -> tuple[float, float] | None:
    """Clip's [min, max]: attributes before opset 11, optional constant inputs after."""
    bounds = [attr(node, "min", -math.inf), attr(node, "max", math.inf)]
    for i, port in enumerate((1, 2)):
        name = optional_input(node, port)
        if name is None:
            continue
        if name not in graph.initializers:
            return None
        value = np.asarray(graph.initializers[name])
        if value.size != 1:
            return None
        bounds[i] = float(value.reshape(-1)[0])
    return float(bounds[0]), float(bounds[1])


def _clip_check(node: Node, graph: Graph) -> str | None:
    if _clip_bounds(node, graph) is None:
        return "Clip bounds are not constant scalars"
    return None


RELU = OpSpec("Relu", output_params=OutputParams.SAME_AS_INPUT, clamp_bounds=_relu_bounds)
CLIP = OpSpec(
    "Clip",
    output_params=OutputParams.SAME_AS_INPUT,
    clamp_bounds=_clip_bounds,
    check=_clip_check,
)
LEAKY_RELU = OpSpec("LeakyRelu")
SIGMOID = OpSpec("Sigmoid")
HARD_SIGMOID = OpSpec("HardSigmoid")
HARD_SWISH = OpSpec("HardSwish")

SPECS = (RELU, CLIP, LEAKY_RELU, SIGMOID, HARD_SIGMOID, HARD_SWISH)
