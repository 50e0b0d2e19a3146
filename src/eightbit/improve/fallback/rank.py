"""Which nodes a fallback returns to float first (docs/numerics.md §R.8).

``rank_nodes`` orders the returnable nodes most harmful first, by one of four scores:
``build`` (one rebuild per candidate, the exact model), ``added`` (one measured pass: the
noise each node adds), ``what_if`` (one what-if model per candidate) and ``own`` (one
pass: the activation's own rounding noise). ``auto`` picks ``build`` for a few candidates
and ``added`` for many, so that ranking never costs a rebuild per node on a large model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import onnx

from eightbit.analysis.models import DataLike, ModelPair, load_pair
from eightbit.analysis.side_by_side import measure, measure_variants, own_sqnrs
from eightbit.analysis.variants import without_quantization
from eightbit.calibrate import DataSource, open_data
from eightbit.errors import ConfigError
from eightbit.graph import Graph, Node
from eightbit.improve.measure import Sqnrs, SqnrsOn, local_sqnrs
from eightbit.ops import lookup
from eightbit.plan import PlannedModel, QuantPlan

Ranking = Literal["auto", "build", "added", "what_if", "own"]
RANKINGS: tuple[Ranking, ...] = ("auto", "build", "added", "what_if", "own")
# ``auto`` ranks by rebuilding (the exact score) up to this many candidates, and by the
# added noise of one measured pass beyond: MobileNetV2 has 66, a text recognizer ~700.
BUILD_RANKING_LIMIT = 96


# What ``build`` returns: a QDQ model and its plan (``QuantizedModel`` is one).
Built = PlannedModel


Build = Callable[[frozenset[str]], Built]


def rank_nodes(
    float_model: onnx.ModelProto,
    base: Built,
    data: DataLike,
    ranking: Ranking = "auto",
    samples: int = 64,
    *,
    build: Build | None = None,
    threads: int | None = None,
    progress: bool = False,
    sqnrs: SqnrsOn | None = None,
) -> tuple[str, ...]:
    """Quantized nodes a fallback can return, most harmful first (§R.8), on ``samples``.

    ``build``: by the first output's SQNR of ``build({node})`` (the node and its folded
    Relu/Clip in float), highest first. ``added``: by the noise-to-signal ratio the node
    adds to its inputs' (eq. R.11), from one pass. ``what_if``: by the first output's SQNR
    in the validate analysis' what-if model (the node's activation and weights back in
    float), ties by the activation's own SQNR; ``own``: by own SQNR alone. ``auto``:
    ``build`` up to ``BUILD_RANKING_LIMIT`` candidates (when ``build`` is given), else
    ``added``. The last two rank the nodes that compute a quantized activation; ``build``
    and ``added`` rank every returnable node. ``sqnrs``: how ``build`` scores its
    candidates (default: here, on ``threads``).
    """
    graph = Graph(float_model)
    source = open_data(data, graph.inputs, batch_size=16, limit=samples)
    ranking = resolve_ranking(ranking, base.plan, build)
    if ranking == "build":
        if build is None:
            raise ConfigError("ranking='build' needs the 'build' function")
        scorer = (sqnrs or local_sqnrs(threads))(float_model, [dict(b) for b in source])
        return _rank_by_build(base.plan, build, scorer)
    pair = load_pair(float_model, base.model, plan=base.plan, find_plan=False)
    if ranking == "added":
        return _rank_by_added_noise(pair, base.plan, source, threads, progress)
    returnable = set(returnable_nodes(base.plan))
    own = own_sqnrs(pair, source, threads=threads, progress=progress)
    candidates = [
        activation
        for activation in pair.qdq.activations
        if activation.producer in returnable and activation.name in own
    ]
    if ranking == "own":
        # Lowest own SQNR first; ties keep graph order (a stable sort).
        ordered = sorted(candidates, key=lambda activation: own[activation.name])
        return tuple(dict.fromkeys(str(activation.producer) for activation in ordered))
    variants = [
        without_quantization(pair.int8_model, activation, pair.qdq, pair.float_graph)
        for activation in candidates
    ]
    results = measure_variants(pair, source, variants, threads=threads, progress=progress)
    scored = sorted(
        zip(candidates, results, strict=True),
        key=lambda item: (-item[1][0].sqnr_db, _or_inf(own[item[0].name])),
    )
    return tuple(dict.fromkeys(str(activation.producer) for activation, _ in scored))


def resolve_ranking(ranking: Ranking, plan: QuantPlan, build: Build | None) -> Ranking:
    """``auto`` made concrete: ``build`` for a few candidates, ``added`` for many."""
    if ranking != "auto":
        return ranking
    if build is not None and len(returnable_nodes(plan)) <= BUILD_RANKING_LIMIT:
        return "build"
    return "added"


def ranking_rebuilds(ranking: Ranking, plan: QuantPlan, build: Build | None) -> int:
    """How many ``build`` calls the ranking makes: one per candidate for ``build``."""
    if resolve_ranking(ranking, plan, build) == "build":
        return len(returnable_nodes(plan))
    return 0


def _rank_by_build(plan: QuantPlan, build: Build, sqnrs: Sqnrs) -> tuple[str, ...]:
    """Returnable nodes by the first output's SQNR with each alone back in float (§R.8).

    Each score is a real ``build``: exactly the model the search would make, whatever the
    export does around a float node. The models are built as ``sqnrs`` asks for them.
    """
    folded = folded_clamps(plan)
    nodes = returnable_nodes(plan)
    alone = (frozenset([node, folded[node]] if node in folded else [node]) for node in nodes)
    values = sqnrs(build(excluded).model for excluded in alone)
    scores = sorted(
        (-value, index, node) for index, (value, node) in enumerate(zip(values, nodes, strict=True))
    )
    return tuple(node for _, _, node in scores)


def _rank_by_added_noise(
    pair: ModelPair,
    plan: QuantPlan,
    source: DataSource,
    threads: int | None,
    progress: bool,
) -> tuple[str, ...]:
    """Returnable nodes by the noise-to-signal ratio each adds (eq. R.11), highest first.

    One pass compares every quantized activation of the int8 model with the float one; a
    node's score is its output's noise-to-signal ratio less the largest of its inputs'.
    The rounding of a node's output goes only when its readers are float too, so each node
    is followed by the returnable nodes that read it. A node whose output was not measured
    (no float counterpart, e.g. a rewritten stem) ranks first, in plan order: unknown is
    not harmless, and the search's trim drops it again when the budget does not need it.
    """
    measured = measure(pair, source, compare=True, threads=threads, progress=progress)
    ratio = {
        report.name: _noise_ratio(report.sqnr_accumulated_db) for report in measured.activations
    }
    by_int8_name = {a.int8_name: ratio.get(a.name) for a in pair.qdq.activations}
    candidates = returnable_nodes(plan)
    owner = {node: node for node in candidates}
    owner.update({clamp: node for node, clamp in folded_clamps(plan).items()})
    output_ratio: dict[str, float] = {}
    for activation in pair.qdq.activations:
        node = owner.get(str(activation.producer))
        if node is not None and ratio.get(activation.name) is not None:
            output_ratio[node] = max(output_ratio.get(node, 0.0), ratio[activation.name] or 0.0)
    int8_graph = Graph(pair.int8_model)
    int8_nodes = {node.name: node for node in int8_graph.nodes}
    scores = []
    for index, node in enumerate(candidates):
        if node not in output_ratio:
            scores.append((-math.inf, index, node))
            continue
        inputs = int8_nodes[node].inputs if node in int8_nodes else ()
        carried = max((by_int8_name.get(name) or 0.0 for name in inputs), default=0.0)
        scores.append((-(output_ratio[node] - carried), index, node))
    readers = _returnable_readers(int8_graph, candidates, owner)
    ranked: dict[str, None] = {}
    for _, _, node in sorted(scores):
        ranked.update(dict.fromkeys([node, *readers.get(node, ())]))
    return tuple(ranked)


def _returnable_readers(
    graph: Graph, candidates: list[str], owner: dict[str, str]
) -> dict[str, list[str]]:
    """Candidate -> the candidates that read its output in the int8 model: through the
    Quantize/DequantizeLinear pair, its folded Relu/Clip, and value-preserving ops (a
    Flatten, a MaxPool: §Q6), which pass the rounded values on unchanged."""
    readers: dict[str, list[str]] = {}
    for node in graph.nodes:
        writer = owner.get(node.name)
        if writer is None:
            continue
        pending, seen = list(node.outputs), set()
        while pending:
            for consumer in graph.consumers(pending.pop()):
                reader = owner.get(consumer.name)
                if reader is not None and reader != writer:
                    readers.setdefault(writer, []).append(reader)
                elif consumer.name not in seen and (
                    reader == writer or (reader is None and _passes_on(consumer))
                ):
                    seen.add(consumer.name)
                    pending.extend(consumer.outputs)
    return readers


def _passes_on(node: Node) -> bool:
    spec = lookup(node.op_type)
    return node.op_type in _QDQ or (spec is not None and spec.same_as_input)


_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})


def _noise_ratio(sqnr_db: float | None) -> float | None:
    """Noise-to-signal power ratio of an SQNR in dB (0 for an exact match)."""
    if sqnr_db is None or math.isnan(sqnr_db):
        return None
    return 0.0 if sqnr_db == math.inf else 10.0 ** (-sqnr_db / 10.0)


def folded_clamps(plan: QuantPlan) -> dict[str, str]:
    """Node -> the Relu/Clip folded into it."""
    return {d.name: d.fused_activation for d in plan.nodes if d.fused_activation is not None}


def returnable_nodes(plan: QuantPlan) -> list[str]:
    """Quantized nodes a fallback can return.

    A folded Relu/Clip goes with its producer; a value-preserving op (Flatten, MaxPool, a
    Relu of its own) only rounds nothing and stays quantized just while a neighbour is
    (§Q6), so returning it buys nothing.
    """
    returnable = []
    for decision in plan.quantized_nodes():
        spec = lookup(decision.op_type)
        if decision.fused_into is None and not (spec is not None and spec.same_as_input):
            returnable.append(decision.name)
    return returnable


def _or_inf(value: float | None) -> float:
    return math.inf if value is None else value
