"""Tensors whose readers are flat outside a window: their range needs only the window
(docs/numerics.md §Q18).

HardSigmoid ``clip(αx + β, 0, 1)`` is constant below ``−β/α`` and above ``(1 − β)/α``;
HardSwish ``x·clip(x/6 + 1/2, 0, 1)`` is 0 below −3. A tensor read only by such functions
(an op, or the function written as elementary ops, graph/patterns.py) gives its readers the
same values when it saturates at the window's edges, so its grid need not cover the rest:
MobileNetV3-style backbones put a Conv's signed output (down to −15) before a HardSwish,
and squeeze-excitation gates a Conv output of ±80 before a HardSigmoid that reads ±2.5.
"""

from __future__ import annotations

import math

from eightbit.graph.patterns import Match, recognized_functions
from eightbit.graph.view import Graph, Node

Window = tuple[float, float]

HARD_SWISH_FLOOR = -3.0  # x·clip(x/6 + 1/2, 0, 1) = 0 for every x <= -3
_DEFAULT_HARD_SIGMOID = (0.2, 0.5)  # ONNX's default alpha, beta


def reader_windows(graph: Graph) -> dict[str, Window]:
    """tensor -> the window its readers can tell apart, for every tensor (not a graph
    output) all of whose readers are flat outside a window: the union of theirs."""
    functions = recognized_functions(graph)
    outputs = {info.name for info in graph.outputs}
    windows: dict[str, Window] = {}
    for tensor in _read_tensors(graph):
        readers = graph.consumers(tensor)
        if tensor in outputs or not readers:
            continue
        found = [_window(graph, node, tensor, functions) for node in readers]
        if all(w is not None for w in found):
            windows[tensor] = _union([w for w in found if w is not None])
    return windows


def _read_tensors(graph: Graph) -> list[str]:
    names = dict.fromkeys(name for node in graph.nodes for name in node.inputs if name)
    return [name for name in names if name not in graph.initializers]


def _window(graph: Graph, node: Node, tensor: str, functions: tuple[Match, ...]) -> Window | None:
    """The window of ``tensor`` outside which ``node``'s output does not change, if any."""
    if node.domain not in ("", "ai.onnx") or node.inputs[:1] != (tensor,):
        return _function_window(node, tensor, functions)
    if node.op_type == "HardSigmoid":
        alpha = float(node.attrs.get("alpha", _DEFAULT_HARD_SIGMOID[0]))
        beta = float(node.attrs.get("beta", _DEFAULT_HARD_SIGMOID[1]))
        return _hard_sigmoid_window(alpha, beta)
    if node.op_type == "HardSwish":
        return (HARD_SWISH_FLOOR, math.inf)
    return _function_window(node, tensor, functions)


def _function_window(node: Node, tensor: str, functions: tuple[Match, ...]) -> Window | None:
    """``node`` is part of a HardSwish or HardSigmoid written as elementary ops on ``tensor``."""
    for match in functions:
        if match.source != tensor or node.name not in match.nodes:
            continue
        if match.kind == "HardSwish":
            return (HARD_SWISH_FLOOR, math.inf)
        alpha = match.params.get("alpha")
        if match.kind == "HardSigmoid" and isinstance(alpha, float | int):
            return _hard_sigmoid_window(float(alpha), 0.5)
    return None


def _hard_sigmoid_window(alpha: float, beta: float) -> Window | None:
    if alpha <= 0:
        return None  # flat everywhere or decreasing: not the curve this rule is for
    return (-beta / alpha, (1.0 - beta) / alpha)


def _union(windows: list[Window]) -> Window:
    return (min(w[0] for w in windows), max(w[1] for w in windows))
