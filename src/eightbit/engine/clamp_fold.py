"""A clamp on a 16-bit layer output runs as the layer's own bounds (docs/numerics.md §E.14).

A symmetric int16 grid (§Q17, z = 0) cannot absorb a Relu6 the way an 8-bit one does (§Q5):
``Q(0) = 0`` is not ``q_min``, so the exporter keeps ``Conv → Q16 → DQ → Clip → Q16 → DQ``
and Prepare makes a ``ClampStep`` after the layer. When the two Qs have the same parameters
the clamp is ``clamp(q, Q(lo), Q(hi))`` on the layer's stored integers (E.7), and a layer's
requantization already ends in a clamp to ``[low, high]``, so

    clamp(clamp(z + r, low, high), Q(lo), Q(hi)) = clamp(z + r, max(low, Q(lo)), min(high, Q(hi)))

(E.14): the layer writes the clamp's output directly, as CMSIS-NN's s16 kernels do with
their ``activation_min``/``activation_max``, and one int16 tensor is stored instead of two.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from eightbit.engine.kernels.activation import ClampStep
from eightbit.engine.kernels.conv import ConvStep
from eightbit.engine.kernels.conv_transpose import ConvTransposeStep
from eightbit.engine.kernels.gemm import MatMulStep
from eightbit.engine.kernels.requantize import Requantization
from eightbit.engine.program import Program, Step

# The layers whose requantization is their output's only rounding and clamp (no table, no
# second path): a clamp after them can become their bounds. MatMulStep runs Gemm too.
FOLDING_STEPS = (ConvStep, ConvTransposeStep, MatMulStep)


def fold_wide_clamps(program: Program) -> Program:
    """``program`` with every int16 clamp that only reads a layer's output (and keeps its
    parameters) folded into that layer's requantization bounds (E.14)."""
    steps = list(program.steps)
    reads = Counter(name for step in steps for name in step.inputs)
    writer = {name: index for index, step in enumerate(steps) for name in step.outputs}
    kept: dict[int, Step] = {}
    dropped: set[int] = set()
    formats = dict(program.formats)
    for index, step in enumerate(steps):
        if not isinstance(step, ClampStep):
            continue
        source = step.inputs[0]
        producer = writer.get(source)
        if producer is None or reads[source] != 1 or source in program.outputs:
            continue
        layer = kept.get(producer, steps[producer])
        if not _folds(layer, step, program):
            continue
        kept[producer] = _with_bounds(layer, step)
        dropped.add(index)
        formats.pop(source, None)  # the layer's own output is no longer stored
    if not dropped:
        return program
    folded = tuple(kept.get(i, s) for i, s in enumerate(steps) if i not in dropped)
    return replace(program, steps=folded, formats=formats)


def _folds(layer: Step, clamp: ClampStep, program: Program) -> bool:
    """The layer is one whose requantization is its output's clamp, writing one int16
    tensor with the clamp's output format."""
    requantization = getattr(layer, "requantization", None)
    if not isinstance(layer, FOLDING_STEPS) or not isinstance(requantization, Requantization):
        return False
    source, target = program.formats.get(clamp.inputs[0]), program.formats.get(clamp.outputs[0])
    if source is None or target is None or len(layer.outputs) != 1:
        return False
    if source.params.dtype != "int16" or source.params != target.params:
        return False
    return max(requantization.low, clamp.low) <= min(requantization.high, clamp.high)


def _with_bounds(layer: Step, clamp: ClampStep) -> Step:
    """``layer`` writing ``clamp``'s output, its bounds narrowed to the clamp's (E.14)."""
    requantization: Requantization = layer.requantization  # type: ignore[attr-defined]
    narrowed = replace(
        requantization,
        low=max(requantization.low, clamp.low),
        high=min(requantization.high, clamp.high),
    )
    return replace(layer, outputs=clamp.outputs, requantization=narrowed)  # type: ignore[call-arg]
