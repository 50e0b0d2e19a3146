"""``normalize``: bring any exported model into the one form the rest of eightbit expects.

After normalization every node has a unique name, every weight is an initializer (none
hides in a Constant node, behind an Identity, or in a constant subexpression), foldable
BatchNormalization is gone, the opset is at least ``min_opset``, and every tensor has an
inferred type and shape (symbolic batch dimensions stay symbolic). A zero Pad before a
Conv is part of the Conv. The steps run
automatically in a fixed order; each one logs what it did.
"""

from __future__ import annotations

import logging
import re
from functools import partial

import onnx
from onnx import GraphProto, ModelProto, helper, version_converter

from eightbit.errors import ModelError
from eightbit.graph._proto import (
    DEFAULT_DOMAINS,
    FreshNames,
    default_opset,
    one_line,
    sort_nodes,
)
from eightbit.graph._skeleton import apply_to_skeleton
from eightbit.graph.batchnorm import fold_batchnorms, fold_bias_adds
from eightbit.graph.cleanup import drop_stale_value_info, remove_dead, remove_passthrough
from eightbit.graph.fold import FoldResult, fold_constants
from eightbit.graph.pad import fold_zero_pads
from eightbit.graph.patterns import fuse_patterns

log = logging.getLogger("eightbit.graph")

# Per-channel QuantizeLinear/DequantizeLinear (the ``axis`` attribute) arrived in opset 13.
PER_CHANNEL_OPSET = 13
_FIRST_IR_WITHOUT_WEIGHT_INPUTS = 4

# The converter raises ConvertError (onnx >= 1.16) or RuntimeError from C++ assertions.
_CONVERTER_ERRORS: tuple[type[Exception], ...] = (
    RuntimeError,
    ValueError,
    onnx.checker.ValidationError,
    *([version_converter.ConvertError] if hasattr(version_converter, "ConvertError") else []),
)


def normalize(
    model: ModelProto, *, min_opset: int = PER_CHANNEL_OPSET, in_place: bool = False
) -> ModelProto:
    """A normalized copy of ``model`` with the same outputs; ``model`` itself is not changed
    (``in_place``: ``model`` itself is normalized and returned, for a caller that gives it
    up: a big model's weights are then not held twice, §C.11).

    In order: sort and name the nodes; treat inputs that have an initializer as constants;
    fold constants (Constant nodes and constant-only subexpressions become initializers);
    remove Identity and inference Dropout; upgrade to ``min_opset`` when below it; fold
    constant zero Pads into the Conv that reads them (graph/pad.py); drop dead nodes and
    weights; infer shapes; fold constant bias Adds after a Conv, then BatchNormalization;
    infer shapes again; fuse functions written as elementary ops into the op the opset has
    (graph/patterns.py).
    Raises ``ModelError`` when onnx's converter cannot upgrade the model.
    """
    work = model if in_place else ModelProto()
    if not in_place:
        work.CopyFrom(model)
    graph = work.graph
    sort_nodes(graph)
    _report("named %d unnamed or duplicate nodes", name_nodes(graph))
    _report("treated %d graph inputs with initializers as constants", _constant_inputs(work))
    _report_fold(fold_constants(work))
    _report("removed %d Identity/Dropout nodes", remove_passthrough(work))

    opset = default_opset(work)
    if opset is not None and opset < min_opset:
        upgrade_opset(work, min_opset)
        log.info("upgraded opset %d to %d", opset, min_opset)
        name_nodes(graph)  # the converter adds unnamed nodes
        _report_fold(fold_constants(work))

    pads = fold_zero_pads(work)
    if pads:
        log.info("folded %d zero Pad nodes into their Conv: %s", len(pads), ", ".join(pads))
    _report_dead(remove_dead(work))
    infer_shapes(work)
    biases = fold_bias_adds(work)
    if biases:
        log.info("folded %d bias Add nodes into their Conv: %s", len(biases), ", ".join(biases))
    folded = fold_batchnorms(work)
    if folded:
        log.info("folded %d BatchNormalization nodes: %s", len(folded), ", ".join(folded))
    if biases or folded:
        _report_dead(remove_dead(work))
        infer_shapes(work)
    fused = fuse_patterns(work)
    if fused:
        for match in fused:
            log.info("fused %s into one node", match.describe())
        _report_dead(remove_dead(work))
        infer_shapes(work)
    return work


def name_nodes(graph: GraphProto) -> int:
    """Give unnamed nodes ``<op_type>_<index>`` and repeated names a suffix; return how many.

    Names depend only on the node order, so the same model always gets the same names
    (users exclude nodes from quantization by name).
    """
    fresh = FreshNames(node.name for node in graph.node if node.name)
    seen: set[str] = set()
    changed = 0
    for index, node in enumerate(graph.node):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        node.name = fresh(node.name or f"{node.op_type}_{index}")
        seen.add(node.name)
        changed += 1
    return changed


def _constant_inputs(model: ModelProto) -> int:
    """Drop graph inputs that have an initializer; return how many.

    IR < 4 models list every weight as an input, and some exporters still do. Quantizing
    needs weights to be constants, so such an input is treated as one and is no longer
    fed at run time. Initializers that are not inputs need IR 4, so the IR rises to it.
    """
    graph = model.graph
    initializers = {tensor.name for tensor in graph.initializer}
    constant = [i for i, value in enumerate(graph.input) if value.name in initializers]
    for index in reversed(constant):
        del graph.input[index]
    if constant:
        model.ir_version = max(model.ir_version, _FIRST_IR_WITHOUT_WEIGHT_INPUTS)
    return len(constant)


def upgrade_opset(model: ModelProto, target: int) -> None:
    """Convert ``model`` (in place) to default-domain opset ``target`` with onnx's converter."""
    current = default_opset(model)
    for node in model.graph.node:
        if node.domain in DEFAULT_DOMAINS and not onnx.defs.has(node.op_type):
            raise ModelError(
                f"cannot upgrade the model from opset {current} to {target}: node {node.name!r} "
                f"uses {node.op_type!r}, which is not a standard ONNX operator; re-export the "
                f"model at opset {target} or later"
            )
    try:
        apply_to_skeleton(model, partial(version_converter.convert_version, target_version=target))
    except _CONVERTER_ERRORS as error:
        message = one_line(error)
        op_types = sorted({node.op_type for node in model.graph.node})
        named = [
            op for op in op_types if re.search(rf"(?<![A-Za-z]){re.escape(op)}(?![a-z])", message)
        ]
        culprit = f" (it fails on {', '.join(named)})" if named else ""
        raise ModelError(
            f"the ONNX version converter cannot upgrade the model from opset {current} to "
            f"{target}{culprit}: {message}; re-export the model at opset {target} or later"
        ) from None
    # Newer opsets need newer IR versions.
    minimum_ir = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    model.ir_version = max(model.ir_version, minimum_ir)


def infer_shapes(model: ModelProto) -> None:
    """Record the type and shape of every tensor in ``model.graph.value_info`` (in place).

    Inference runs in non-strict mode: an op it does not know (a custom domain) leaves its
    outputs untyped instead of failing.
    """
    drop_stale_value_info(model.graph)
    # Data propagation (shapes computed through Shape/Gather/Concat) finds more static
    # dims but is the less mature part of onnx's inference; without it is the fallback.
    for data_prop in (True, False):
        try:
            apply_to_skeleton(
                model, partial(onnx.shape_inference.infer_shapes, data_prop=data_prop)
            )
            return
        except (onnx.shape_inference.InferenceError, RuntimeError, ValueError) as error:
            failure = one_line(error)
    log.warning("shape inference failed, tensor shapes stay unknown: %s", failure)


def _report(message: str, count: int) -> None:
    if count:
        log.info(message, count)


def _report_fold(result: FoldResult) -> None:
    _report("turned %d Constant nodes into initializers", result.constants_moved)
    _report("folded %d constant-only nodes into initializers", result.nodes_folded)


def _report_dead(counts: tuple[int, int]) -> None:
    _report("removed %d nodes whose outputs nothing reads", counts[0])
    _report("removed %d unused initializers", counts[1])
