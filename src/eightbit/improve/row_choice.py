"""Which products' inputs take per-row scales in dynamic mode (docs/numerics.md §D.9).

Per-row scales (§D.4) follow each token's range but cost ONNX Runtime a handful of small
nodes per input and per product; one scale per tensor (§D.1) is ONNX Runtime's own fused
kernel and costs nothing beside the integer product. On calibration samples, each input
read by int8 products is quantized both ways (as dynamic mode would at run time, one batch
at a time) and its readers' output SQNR compared: an input keeps per-row scales only where
one scale per tensor gives less than ``TENSOR_FLOOR_DB`` and per-row scales gain at least
``ROW_GAIN_DB`` over it.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import onnx

from eightbit.calibrate.data import DataLike
from eightbit.graph import Graph
from eightbit.improve.measure import channel_rows, read_samples
from eightbit.ops.embedding import DynamicWeight, dynamic_products
from eightbit.steps import StepReport

# An input keeps per-row scales when one scale per tensor leaves its readers' outputs
# below this SQNR and per-row scales gain at least ROW_GAIN_DB over it.
TENSOR_FLOOR_DB = 36.0
ROW_GAIN_DB = 3.0
# Samples the errors are measured on, and at most this many rows of each input.
ROW_SAMPLES = 32
ERROR_ROWS = 2048
# Int8 levels: per-row symmetric codes (eq. D.4), per-tensor uint8 codes (eq. D.1).
ROW_LEVELS = 127
TENSOR_LEVELS = 255


def tensor_scale_products(
    model: onnx.ModelProto,
    samples: DataLike,
    exclude: tuple[str, ...] = (),
    threads: int | None = None,
) -> tuple[tuple[str, ...], dict[str, tuple[float, float]]]:
    """The products whose input takes one scale per tensor (sorted), and for each input
    read by products its readers' output SQNR (dB) with one scale per tensor and per row."""
    graph = Graph(model)
    readers: dict[str, list[DynamicWeight]] = defaultdict(list)
    for product in dynamic_products(graph, exclude):
        readers[product.data].append(product)
    if not readers:
        return (), {}
    names = sorted(readers)
    batches = read_samples(samples, graph, ROW_SAMPLES)
    collected: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = defaultdict(list)
    for name, rows in channel_rows(model, names, batches, threads):
        rows = rows.astype(np.float32)  # float32 sums: exact enough for 30-50 dB, and fast
        collected[name].append((rows, per_tensor(rows), per_row(rows)))
    chosen: list[str] = []
    measured: dict[str, tuple[float, float]] = {}
    for name in names:
        parts = collected.get(name)
        if not parts:
            continue
        picked = _evenly(len(np.concatenate([p[0] for p in parts])), ERROR_ROWS)
        exact, tensor, row = (np.concatenate([p[i] for p in parts])[picked] for i in range(3))
        weights = [_weight(graph, product) for product in readers[name]]
        tensor_db, row_db = _sqnr_db(exact, tensor, weights), _sqnr_db(exact, row, weights)
        measured[name] = (tensor_db, row_db)
        if not needs_rows(tensor_db, row_db):
            chosen += [product.node for product in readers[name]]
    return tuple(sorted(chosen)), measured


def choose_row_scales(
    model: onnx.ModelProto,
    samples: DataLike,
    exclude: tuple[str, ...] = (),
    threads: int | None = None,
) -> tuple[tuple[str, ...], StepReport]:
    """``tensor_scale_products`` and its report."""
    started = time.perf_counter()
    products, measured = tensor_scale_products(model, samples, exclude, threads)
    kept = sum(1 for dbs in measured.values() if needs_rows(*dbs))
    note = (
        f"{kept} of {len(measured)} product input(s) quantized per row (one scale per "
        f"tensor under {TENSOR_FLOOR_DB:g} dB and per-row scales at least {ROW_GAIN_DB:g} "
        f"dB better), {len(products)} product(s) with one scale per tensor (ONNX Runtime's "
        "fused kernel)"
    )
    details = tuple(
        f"{name}: {tensor_db:.1f} dB per tensor, {row_db:.1f} dB per row"
        for name, (tensor_db, row_db) in measured.items()
    )
    report = StepReport(
        "row_scales", time.perf_counter() - started, None, None, (), (note, *details)
    )
    return products, report


def needs_rows(tensor_db: float, row_db: float) -> bool:
    """Per-row scales for an input whose readers' SQNR is ``tensor_db`` with one scale per
    tensor and ``row_db`` with per-row scales."""
    return tensor_db < TENSOR_FLOOR_DB and row_db - tensor_db >= ROW_GAIN_DB


def per_tensor(rows: np.ndarray) -> np.ndarray:
    """``rows`` through one asymmetric uint8 scale (eq. D.1), dequantized."""
    lo, hi = min(0.0, float(rows.min())), max(0.0, float(rows.max()))
    scale = (hi - lo) / TENSOR_LEVELS if hi > lo else 1.0
    zero = np.clip(np.round(-lo / scale), 0, TENSOR_LEVELS)
    codes = np.clip(np.round(rows / scale) + zero, 0, TENSOR_LEVELS)
    return ((codes - zero) * scale).astype(np.float32)


def per_row(rows: np.ndarray) -> np.ndarray:
    """``rows`` through one symmetric scale per row (eq. D.4), dequantized."""
    magnitude = np.maximum(np.max(np.abs(rows), axis=-1, keepdims=True), 1e-30)
    return (np.round(rows / magnitude * ROW_LEVELS) * (magnitude / ROW_LEVELS)).astype(np.float32)


def _weight(graph: Graph, product: DynamicWeight) -> np.ndarray:
    """The product's weight as [K, N], through symmetric int8 per output column."""
    weight = np.asarray(graph.initializers[product.weight], np.float32)
    weight = weight.T if product.transposed else weight
    scale = np.max(np.abs(weight), axis=0) / ROW_LEVELS
    scale = np.where(scale > 0, scale, 1.0)
    return (np.round(weight / scale) * scale).astype(np.float32)


def _sqnr_db(exact: np.ndarray, quantized: np.ndarray, weights: list[np.ndarray]) -> float:
    outputs = [(exact @ w, quantized @ w) for w in weights]
    signal = sum(float(np.sum(np.square(y, dtype=np.float64))) for y, _ in outputs)
    noise = sum(float(np.sum(np.square(y - q, dtype=np.float64))) for y, q in outputs)
    return 10.0 * np.log10(signal / noise) if noise > 0 and signal > 0 else float("inf")


def _evenly(total: int, most: int) -> np.ndarray:
    return np.linspace(0, total - 1, min(total, most)).astype(int)
