"""Section "dynamic": MiniLM (all-MiniLM-L6-v2, real weights) in dynamic mode (issue 16).

Rows: ONNX Runtime's ``quantize_dynamic`` (per-channel weights, its best), eightbit
``--mode dynamic`` without data (per-row scales, int8 tables), the same with the 64
calibration sentences (outlier channels in float, numerics §D.5), and eightbit's default
(``--mode`` not given: the automatic choice of §D.6). Retrieval agreement and embedding SQNR
on 200 held-out sentences against the float model; latency int8/fp32 at batch 1 and 16 with
one intra-op thread: the least time of interleaved runs (a shared machine's load only ever
adds time); size: the .onnx file against the float one (embeddings included).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.models import WORK_DIR
from benchmarks.report import Table
from benchmarks.zoo import measures, minilm

OUT_DIR = WORK_DIR / "dynamic"
ROUNDS = {1: 25, 16: 8}  # interleaved rounds per batch size, 3 runs of each model per round
COLUMNS = [
    "tool",
    "setting",
    "retrieval agreement",
    "SQNR dB",
    "latency b1 int8/fp32",
    "latency b16 int8/fp32",
    "size int8/fp32",
    "quantize s",
]


def run() -> list[Table]:
    source = minilm.model()
    calibration, evaluation = minilm.data()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    table = Table("MiniLM-L6 sentence encoder: dynamic mode (issue 16)", COLUMNS)
    float_session = _session(source)
    reference = _outputs(float_session, evaluation)
    for tool, setting, make in _variants(source, calibration):
        print(f"[dynamic] {tool} {setting} ...", flush=True)
        started = time.perf_counter()
        path = make()
        seconds = time.perf_counter() - started
        session = _session(path)
        got = _outputs(session, evaluation)
        b1, b16 = (_latency(float_session, session, evaluation[:b], b) for b in (1, 16))
        table.add(
            tool, setting, measures.retrieval_agreement(reference, got), _sqnr(reference, got),
            b1, b16, os.path.getsize(path) / os.path.getsize(source), seconds,
        )  # fmt: skip
    table.notes.append(
        "latency: one intra-op thread, least time of interleaved runs on a shared 2-core "
        "machine (rerun on an idle one for the record); sessions set "
        "session.x64quantprecision as eightbit's do"
    )
    return [table]


def _variants(source: Path, calibration: np.ndarray) -> list[tuple[str, str, Callable[[], Path]]]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from eightbit import QuantConfig, quantize

    def ours(name: str, config: QuantConfig, data: dict[str, np.ndarray] | None) -> Path:
        path = OUT_DIR / f"{name}.onnx"
        quantize(str(source), data, config).save(path)
        return path

    def ort_dynamic() -> Path:
        path = OUT_DIR / "ort_dynamic.onnx"
        quantize_dynamic(str(source), str(path), per_channel=True, weight_type=QuantType.QInt8)
        return path

    data = {"input": calibration}
    dynamic, auto = QuantConfig(mode="dynamic"), QuantConfig(mode="auto")
    return [
        ("ONNX Runtime", "quantize_dynamic per-channel", ort_dynamic),
        ("eightbit", "--mode dynamic, no data", lambda: ours("dyn", dynamic, None)),
        ("eightbit", "--mode dynamic, 64 sentences", lambda: ours("dyn_data", dynamic, data)),
        ("eightbit", "default (automatic mode)", lambda: ours("auto", auto, data)),
    ]


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _outputs(session: ort.InferenceSession, ids: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    parts = [session.run(None, {name: ids[i : i + 16]})[0] for i in range(0, len(ids), 16)]
    return np.concatenate(parts)


def _sqnr(reference: np.ndarray, got: np.ndarray) -> float:
    noise = np.sum((reference.astype(np.float64) - got) ** 2)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / noise))


def _latency(
    float_session: ort.InferenceSession, session: ort.InferenceSession, ids: np.ndarray, batch: int
) -> float:
    feeds = {session.get_inputs()[0].name: ids}
    best = {id(float_session): np.inf, id(session): np.inf}
    for _ in range(ROUNDS[batch]):
        for current in (float_session, session):
            for _ in range(3):
                started = time.perf_counter()
                current.run(None, feeds)
                best[id(current)] = min(best[id(current)], time.perf_counter() - started)
    return float(best[id(session)] / best[id(float_session)])
