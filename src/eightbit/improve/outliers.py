"""Outlier input channels of dynamic mode's products kept in float (docs/numerics.md §D.5).

A transformer's hidden state carries a few channels tens of times larger than the rest, in
every token. One scale per row must cover them, so the other channels keep only a few
levels. On calibration samples, a channel whose largest magnitude is over ``OUTLIER_RATIO``
times the median channel's is an outlier (at most ``MAX_OUTLIER_CHANNELS`` per product);
the product is split exactly, ``x·W = (x ⊙ m)·W_m + x[:, o]·W[o, :]``: the int8 product
reads the input with the outliers zeroed (mask ``m``) and the outlier rows ``o`` of the
weight zeroed, and a small float product adds the outliers' part. The float model's
function is unchanged; the side product has fewer than ``MIN_INT8_DEPTH`` inputs, so
dynamic mode leaves it float (``ops.embedding.dynamic_weight``).
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eightbit.calibrate.data import DataLike
from eightbit.graph import FreshNames, Graph, graph_names
from eightbit.improve._onnx import Reduction
from eightbit.improve.measure import read_samples, run_reductions
from eightbit.ops.embedding import DynamicWeight, dynamic_products, dynamic_weight
from eightbit.steps import StepReport

OUTLIER_RATIO = 6.0
MAX_OUTLIER_CHANNELS = 8
# Samples the channel magnitudes are observed on.
OUTLIER_SAMPLES = 128


def outlier_channels(
    model: onnx.ModelProto,
    samples: DataLike,
    exclude: tuple[str, ...] = (),
    threads: int | None = None,
) -> dict[str, tuple[int, ...]]:
    """Product node -> its input's outlier channels, for every product with any (§D.5)."""
    graph = Graph(model)
    products = dynamic_products(graph, exclude)
    ranks = {p.data: _rank(graph, p.data) for p in products}
    reductions = [
        Reduction(data, "max_abs", axis=rank - 1, rank=rank)
        for data, rank in ranks.items()
        if rank is not None
    ]
    if not reductions:
        return {}
    batches = read_samples(samples, graph, OUTLIER_SAMPLES)
    totals = run_reductions(model, reductions, batches, threads)
    found: dict[str, tuple[int, ...]] = {}
    for product in products:
        magnitudes = totals.get(f"{product.data}|max_abs")
        if magnitudes is None:
            continue
        median = float(np.median(magnitudes))
        if median <= 0:
            continue
        large = np.flatnonzero(magnitudes > OUTLIER_RATIO * median)
        largest_first = large[np.argsort(-magnitudes[large], kind="stable")]
        if largest_first.size:
            found[product.node] = tuple(
                sorted(int(c) for c in largest_first[:MAX_OUTLIER_CHANNELS])
            )
    return found


def split_outliers(model: onnx.ModelProto, channels: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """A copy of ``model`` whose products of ``channels`` compute their outlier channels in a
    float side product (the same function, eq. D.5)."""
    graph = Graph(model)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    splitter = _Splitter(graph, result.graph)
    body: list[onnx.NodeProto] = []
    for proto, node in zip(result.graph.node, graph.nodes, strict=True):
        product = dynamic_weight(node, graph) if node.name in channels else None
        if product is None:
            body.append(proto)
        else:
            body += splitter.split(proto, product, np.asarray(channels[node.name], np.int64))
    result.graph.ClearField("node")
    result.graph.node.extend(body)
    return result


class _Splitter:
    """Rewrites products of one graph; products reading one input (query, key, value)
    share its mask and gather, their outliers being the same channels of that input."""

    def __init__(self, graph: Graph, proto: onnx.GraphProto) -> None:
        self.graph, self.proto = graph, proto
        self.names = FreshNames(graph_names(proto))
        self.initializers = {t.name: t for t in proto.initializer}
        self.readers = Counter(name for node in proto.node for name in set(node.input))
        self.inputs: dict[tuple[str, tuple[int, ...]], tuple[str, str]] = {}

    def split(
        self, proto: onnx.NodeProto, product: DynamicWeight, outliers: np.ndarray
    ) -> list[onnx.NodeProto]:
        """``proto`` reading the masked input and weight, then its float side product."""
        base = f"{proto.name}_outlier"
        depth = self.graph.initializers[product.weight].shape[1 if product.transposed else 0]
        nodes, (masked, picked) = self._input(product.data, depth, outliers, base)
        rows = self._weight(proto, product, outliers)
        side_rows = self._constant(f"{base}_rows", np.ascontiguousarray(rows))
        output, main, side = proto.output[0], self.names(f"{base}_main"), self.names(f"{base}_side")
        _replace_input(proto, product.data, masked)
        proto.output[0] = main
        make = helper.make_node
        return [
            *nodes,
            proto,
            make("MatMul", [picked, side_rows], [side], name=self.names(f"{base}_product")),
            make("Add", [main, side], [output], name=self.names(f"{base}_add")),
        ]

    def _input(
        self, data: str, depth: int, outliers: np.ndarray, base: str
    ) -> tuple[list[onnx.NodeProto], tuple[str, str]]:
        """The input with its outliers zeroed and the outliers alone (shared), and the nodes
        that make them the first time."""
        key = (data, tuple(int(c) for c in outliers))
        if key in self.inputs:
            return [], self.inputs[key]
        mask = np.ones(depth, np.float32)
        mask[outliers] = 0
        masked, picked = self.names(f"{base}_masked"), self.names(f"{base}_picked")
        self.inputs[key] = (masked, picked)
        mask_name = self._constant(f"{base}_mask", mask)
        index = self._constant(f"{base}_index", outliers)
        nodes = [
            helper.make_node("Mul", [data, mask_name], [masked], name=self.names(f"{base}_mask")),
            helper.make_node("Gather", [data, index], [picked], axis=-1,
                             name=self.names(f"{base}_gather")),
        ]  # fmt: skip
        return nodes, (masked, picked)

    def _weight(
        self, proto: onnx.NodeProto, product: DynamicWeight, outliers: np.ndarray
    ) -> np.ndarray:
        """The weight with its outlier rows zeroed, written back (or to a copy when another
        node reads it too); returns those rows, [k, N]."""
        weight = np.array(self.graph.initializers[product.weight])  # a writable copy
        rows = weight.T[outliers] if product.transposed else weight[outliers]
        if product.transposed:
            weight[:, outliers] = 0
        else:
            weight[outliers] = 0
        if self.readers[product.weight] == 1:
            stored = numpy_helper.from_array(weight, product.weight)
            self.initializers[product.weight].CopyFrom(stored)
        else:
            copy = self._constant(f"{proto.name}_outlier_weight", weight)
            _replace_input(proto, product.weight, copy)
        return rows

    def _constant(self, base: str, value: np.ndarray) -> str:
        name = self.names(base)
        self.proto.initializer.append(numpy_helper.from_array(value, name))
        return name


def keep_outliers_float(
    model: onnx.ModelProto,
    samples: DataLike,
    exclude: tuple[str, ...] = (),
    threads: int | None = None,
) -> tuple[onnx.ModelProto, StepReport]:
    """``split_outliers`` of the channels ``outlier_channels`` finds, and its report."""
    started = time.perf_counter()
    channels = outlier_channels(model, samples, exclude, threads)
    split = split_outliers(model, channels) if channels else model
    total = sum(len(c) for c in channels.values())
    note = (
        f"{total} outlier input channel(s) (over {OUTLIER_RATIO:g}x the median channel's "
        f"magnitude) of {len(channels)} product(s) computed in float beside the int8 product"
    )
    report = StepReport("outlier_channels", time.perf_counter() - started, None, None, (), (note,))
    return split, report


def _rank(graph: Graph, name: str) -> int | None:
    info = graph.info(name)
    return None if info is None or info.shape is None else len(info.shape)


def _replace_input(proto: onnx.NodeProto, old: str, new: str) -> None:
    for port, name in enumerate(proto.input):
        if name == old:
            proto.input[port] = new
