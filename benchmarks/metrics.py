"""What the benchmark measures: agreement of logits, SQNR, ONNX Runtime latency, file size."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from eightbit.graph.session import EXACT_INT8_ENTRY, default_int8_kernels_saturate

LATENCY_RUNS = 50


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Fraction of rows whose arg-max class is the same in both (N, classes) logit arrays."""
    _check_pair(reference, candidate)
    return float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))


def top5_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Fraction of rows whose reference top-1 class is among the candidate's top 5."""
    _check_pair(reference, candidate)
    top5 = np.argpartition(-candidate, 5, axis=1)[:, :5]
    return float(np.mean(np.any(top5 == reference.argmax(axis=1)[:, None], axis=1)))


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio over all logits: 10·log10(Σf² / Σ(f−q)²)."""
    _check_pair(reference, candidate)
    f = reference.astype(np.float64)
    noise = float(np.sum((f - candidate.astype(np.float64)) ** 2))
    if noise == 0.0:
        return float("inf")
    return float(10.0 * np.log10(float(np.sum(f * f)) / noise))


def _check_pair(reference: np.ndarray, candidate: np.ndarray) -> None:
    if reference.shape != candidate.shape or reference.ndim != 2:
        raise ValueError(
            f"expected two (N, classes) arrays of equal shape, got {reference.shape} and "
            f"{candidate.shape}"
        )


def session(model: str | Path | Any, threads: int = 1, exact: bool = True) -> Any:
    """A CPU ONNX Runtime session with ``threads`` intra-op threads, sequential execution.

    ``model``: a path or a ModelProto. ``exact=False`` leaves ONNX Runtime's default int8
    kernels, which saturate on x86 CPUs without VNNI (docs/numerics.md §1.9).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if exact and default_int8_kernels_saturate():  # elsewhere it only slows int8 (§1.9)
        options.add_session_config_entry(*EXACT_INT8_ENTRY)
    source = str(model) if isinstance(model, str | Path) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_batches(
    model: str | Path, data: np.ndarray, batch_size: int = 16, threads: int = 1
) -> np.ndarray:
    """Run ``model`` on ``data`` batch by batch; return the concatenated first output."""
    sess = session(model, threads)
    name = sess.get_inputs()[0].name  # type: ignore[attr-defined]
    outputs = [
        sess.run(None, {name: np.ascontiguousarray(data[i : i + batch_size])})[0]  # type: ignore[attr-defined]
        for i in range(0, len(data), batch_size)
    ]
    return np.concatenate(outputs)


def interleaved_latency_ms(
    models: list[str | Path],
    sample: np.ndarray,
    runs: int = LATENCY_RUNS,
    warmup: int = 5,
    threads: int = 1,
) -> list[float]:
    """Median batch-1 latency of each model, their runs interleaved.

    The machine is shared, so load drifts during a measurement; alternating the models run by
    run exposes them to the same drift and keeps their ratio honest.
    """
    sessions = [session(m, threads) for m in models]
    feeds = [{s.get_inputs()[0].name: np.ascontiguousarray(sample[:1])} for s in sessions]  # type: ignore[attr-defined]
    for sess, feed in zip(sessions, feeds, strict=True):
        for _ in range(warmup):
            sess.run(None, feed)  # type: ignore[attr-defined]
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(runs):
        for i, (sess, feed) in enumerate(zip(sessions, feeds, strict=True)):
            start = time.perf_counter()
            sess.run(None, feed)  # type: ignore[attr-defined]
            times[i].append(time.perf_counter() - start)
    return [1000.0 * statistics.median(t) for t in times]


def available_memory_mb() -> float:
    """MemAvailable from /proc/meminfo (what can be allocated without swapping)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def file_size(path: str | Path, extra: Iterable[str | Path] = ()) -> int:
    """Bytes of an ONNX file plus any external-data files that belong to it."""
    return os.path.getsize(path) + sum(os.path.getsize(p) for p in extra)
