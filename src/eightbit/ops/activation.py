"""Activations. Relu and Clip are clamps: they keep their input's parameters and can be
folded into the op before them (docs/numerics.md §Q5). LeakyRelu, Sigmoid, HardSigmoid and
HardSwish are curves with their own calibrated output range (lookup tables on integers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from eightbit.ops.spec import OpSpec, OutputParams, attr

if TYPE_CHECKING:
    from eightbit.graph import Graph, Node


def _relu_bounds(node: Node, given: Sequence[np.ndarray | None]) -> tuple[float, float]:
    return 0.0, math.inf


def _clip_bounds(node: Node, given: Sequence[np.ndarray | None]) -> tuple[float, float] | None:
    """Clip's [min, max]: attributes before opset 11, optional inputs 1 and 2 after.

    ``given``: the constant value at each input port (None where the port is empty). The
    one reading of them, for node selection and the integer engine alike.
    """
    bounds = [attr(node, "min", -math.inf), attr(node, "max", math.inf)]
    for i, port in enumerate((1, 2)):
        value = given[port] if port < len(given) else None
        if value is None:
            continue
        if value.size != 1:
            return None
        bounds[i] = float(value.reshape(-1)[0])
    return float(bounds[0]), float(bounds[1])


def _clip_check(node: Node, graph: Graph) -> str | None:
    if CLIP.clamp_bounds(node, graph) is None:
        return "Clip bounds are not constant scalars"
    return None


# Relu and Clip with a lower bound of 0 or none are positively homogeneous up to their upper
# bound, which equalization scales with the channel (docs/numerics.md §I.2.3); LeakyRelu is.
RELU = OpSpec(
    "Relu", output_params=OutputParams.SAME_AS_INPUT, clamp=_relu_bounds, homogeneous=True
)
CLIP = OpSpec(
    "Clip",
    output_params=OutputParams.SAME_AS_INPUT,
    clamp=_clip_bounds,
    clamp_max_port=2,
    check=_clip_check,
    homogeneous=True,
)
LEAKY_RELU = OpSpec("LeakyRelu", homogeneous=True)
SIGMOID = OpSpec("Sigmoid")
HARD_SIGMOID = OpSpec("HardSigmoid")
HARD_SWISH = OpSpec("HardSwish")

SPECS = (RELU, CLIP, LEAKY_RELU, SIGMOID, HARD_SIGMOID, HARD_SWISH)
