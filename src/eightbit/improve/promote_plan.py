"""What a promotion re-plans (docs/numerics.md §R.11): the candidates, their 16-bit ranges,
and the opset-21 model int16 Q/DQ need. Kept apart from ``eightbit.rebuild``, which glues
them to the pipeline's rebuilds."""

from __future__ import annotations

import onnx

from eightbit.calibrate import Ranges, TensorRange
from eightbit.export.qdq import INT16_QDQ_OPSET
from eightbit.graph import Graph
from eightbit.graph.normalize import default_opset, upgrade_opset
from eightbit.ops.node_selection import Calibrated, select
from eightbit.plan import QuantPlan

__all__ = ["at_int16_opset", "extremes_for", "promotion_candidates"]


def at_int16_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` at opset 21, where int16 Q/DQ exist (§Q17), upgraded once for every
    promotion rebuild: the converter's new Constant nodes (an opset-13 ``axes`` input, ...)
    become initializers and any other new node gets a name, so the plan has a decision for
    every node."""
    if (default_opset(model) or 0) >= INT16_QDQ_OPSET:
        return model
    upgraded = onnx.ModelProto()
    upgraded.CopyFrom(model)
    upgrade_opset(upgraded, INT16_QDQ_OPSET)
    kept = []
    for index, node in enumerate(upgraded.graph.node):
        # The converter's constants: an unnamed node with a tensor ``value`` and no input.
        value = [a for a in node.attribute if a.name == "value" and a.HasField("t")]
        if not node.name and not node.input and value:
            constant = onnx.TensorProto()
            constant.CopyFrom(value[0].t)
            constant.name = node.output[0]
            upgraded.graph.initializer.append(constant)
            continue
        if not node.name:
            node.name = f"{node.op_type}_opset{INT16_QDQ_OPSET}_{index}"
        kept.append(node)
    del upgraded.graph.node[:]
    upgraded.graph.node.extend(kept)
    return upgraded


def promotion_candidates(plan: QuantPlan, ranges: Ranges, graph: Graph) -> list[str]:
    """The 8-bit activation tensors of ``plan`` (on ``graph``) with a calibrated range of
    their own: what ``QuantConfig.int16`` may name (§Q17)."""
    sources = select(graph, plan.config).sources
    # A layer folded with its activation is calibrated on the activation's output (§Q5).
    calibrated = {
        named
        for name, source in sources.items()
        if isinstance(source, Calibrated)
        for named in (name, source.tensor)
    }
    return [
        name
        for name, params in plan.tensors.items()
        if params.dtype in ("int8", "uint8")
        and name in ranges
        and name in calibrated
        and name not in plan.config.int16
    ]


def extremes_for(ranges: Ranges, tensors: frozenset[str]) -> Ranges:
    """``ranges`` with ``tensors`` at the extremes calibration observed: a 16-bit grid has
    256 times the steps of an 8-bit one, so it needs no clipping to resolve the bulk."""
    if not tensors:
        return ranges
    chosen = {
        name: (
            TensorRange(r.observed_min, r.observed_max, r.observed_min, r.observed_max)
            if name in tensors
            else r
        )
        for name, r in ranges.tensors.items()
    }
    histograms = {name: h for name in ranges if (h := ranges.histogram(name)) is not None}
    return Ranges(
        ranges.method, chosen, ranges.samples, skipped=ranges.skipped,
        histograms=histograms, options=ranges.options,
    )  # fmt: skip
