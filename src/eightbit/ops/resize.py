"""Resize: nearest and linear keep the input's parameters (docs/numerics.md §Q6).

Linear interpolation is a convex combination of input values, so it stays inside the input
range; cubic interpolation can overshoot it and stays in float.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eightbit.ops.spec import OpSpec, OutputParams, attr

if TYPE_CHECKING:
    from eightbit.graph import Graph, Node


def _resize_check(node: Node, graph: Graph) -> str | None:
    mode = attr(node, "mode", "nearest")
    if mode not in ("nearest", "linear"):
        return f"Resize mode {mode!r} can overshoot the input range; only nearest and linear are"
    return None


RESIZE = OpSpec("Resize", output_params=OutputParams.SAME_AS_INPUT, check=_resize_check)

SPECS = (RESIZE,)
