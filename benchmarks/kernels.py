"""Section "kernels": what ONNX Runtime's default int8 kernels do to an int8 model on this CPU.

On x86 CPUs without VNNI, ONNX Runtime's default u8 x s8 kernels add pairs of products in 16
bits with saturation (docs/numerics.md §1.9). eightbit measures every figure in sessions with
``session.x64quantprecision=1`` (exact u8 x u8 kernels there). This section shows, for the
default int8 models of the ResNet-18-style network and MobileNetV2, the accuracy and latency of
both sessions, and one way to make the default kernels exact without the option: per-channel
weight scales widened until no same-sign pair of neighbouring weights (in the kernel's K order)
sums past 128, so that 255 x the pair fits 16 bits (an experiment, not an eightbit feature).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

import eightbit
from benchmarks import images, metrics, models
from benchmarks.report import Table
from eightbit.graph.session import default_int8_kernels_saturate

CALIBRATION = 64
EVALUATION = 200
RUNS = 40
PAIR_LIMIT = 128  # 255 x 128 = 32,640 <= 32,767


def _outputs(session: Any, data: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate(
        [session.run(None, {name: data[i : i + 16]})[0] for i in range(0, len(data), 16)]
    )


def _latencies_ms(sessions: list[Any], sample: np.ndarray) -> list[float]:
    feeds = [{s.get_inputs()[0].name: sample[:1]} for s in sessions]
    times: list[list[float]] = [[] for _ in sessions]
    for run in range(RUNS + 5):
        for i, (session, feed) in enumerate(zip(sessions, feeds, strict=True)):
            start = time.perf_counter()
            session.run(None, feed)
            if run >= 5:
                times[i].append(time.perf_counter() - start)
    return [1000.0 * statistics.median(t) for t in times]


def _pair_sums(rows: np.ndarray) -> np.ndarray:
    """Per row, the largest |a| + |b| over same-sign neighbour pairs (a, b) along K."""
    q = rows.astype(np.int32)
    even = q.shape[1] // 2 * 2
    a, b = q[:, 0:even:2], q[:, 1:even:2]
    sums = np.where(a * b > 0, np.abs(a) + np.abs(b), 0)
    return sums.max(axis=1) if sums.size else np.zeros(len(q), np.int32)


def _k_rows(weight: np.ndarray, op_type: str, trans_b: bool) -> tuple[np.ndarray, bool]:
    """The weight as (output channel, K) in the kernel's K order, and whether it is Conv."""
    if op_type == "Conv":  # K runs over (kernel position, input channel), channels fastest
        return np.moveaxis(weight, 1, -1).reshape(weight.shape[0], -1), True
    return (weight if trans_b else weight.T), False


def widen_for_16bit_pairs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose Conv/Gemm/MatMul weights cannot saturate 16-bit pair sums."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        attrs = {a.name: a.i for a in node.attribute}
        dq = producer.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            continue
        weight = numpy_helper.to_array(inits[dq.input[0]])
        if weight.dtype != np.int8 or (node.op_type == "Conv" and weight.shape[1] == 1):
            continue  # depthwise kernels multiply in 16 bits and add in 32: exact
        scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
        rows, is_conv = _k_rows(weight, node.op_type, bool(attrs.get("transB", 0)))
        old = np.broadcast_to(scale, (rows.shape[0],)).copy()
        real = rows.astype(np.float64) * old[:, None]
        new, q = old.copy(), rows.astype(np.float64)
        for _ in range(8):
            sums = _pair_sums(q)
            over = sums > PAIR_LIMIT
            if not over.any():
                break
            grow = np.where(over, sums / PAIR_LIMIT * 1.0001, 1.0)
            new = new * (grow if scale.ndim else grow.max())
            q = np.clip(np.round(real / new[:, None]), -127, 127)
        stored = (
            np.moveaxis(q.reshape(weight.shape[0], *weight.shape[2:], weight.shape[1]), -1, 1)
            if is_conv
            else (q if attrs.get("transB", 0) else q.T)
        )
        inits[dq.input[0]].CopyFrom(numpy_helper.from_array(stored.astype(np.int8), dq.input[0]))
        written = new.astype(np.float32) if scale.ndim else np.float32(new[0])
        inits[dq.input[1]].CopyFrom(numpy_helper.from_array(np.asarray(written), dq.input[1]))
        _rescale_bias(node, producer, inits, new / old)
    return result


def _rescale_bias(
    node: onnx.NodeProto,
    producer: dict[str, onnx.NodeProto],
    inits: dict[str, onnx.TensorProto],
    gain: np.ndarray,
) -> None:
    """The int32 bias follows its weight scale (s_x·s_w): same real value, new integers."""
    dq = producer.get(node.input[2]) if len(node.input) > 2 else None
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
        return
    stored = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
    new_scale = scale * (gain if scale.ndim else gain.max())
    integers = np.round(stored * scale / new_scale).astype(np.int32)
    inits[dq.input[0]].CopyFrom(numpy_helper.from_array(integers, dq.input[0]))
    inits[dq.input[1]].CopyFrom(
        numpy_helper.from_array(np.asarray(new_scale, np.float32), dq.input[1])
    )


def run() -> Table:
    calibration = np.asarray(images.calibration_set()[:CALIBRATION])
    evaluation = np.asarray(images.evaluation_set()[:EVALUATION])
    table = Table(
        "ONNX Runtime's default int8 kernels vs its exact ones on this CPU (eightbit default)",
        ["model", "int8 weights", "session", "top-1 agreement", "SQNR dB", "latency int8/fp32"],
        notes=[
            f"this CPU's default u8 x s8 kernels saturate: {default_int8_kernels_saturate()}",
            f"{CALIBRATION} calibration crops, {EVALUATION} evaluation crops; latency batch 1, "
            f"1 thread, median of {RUNS} runs interleaved with fp32",
            "exact = session.x64quantprecision=1 where the default kernels saturate (what "
            "eightbit measures with there); where they do not, both rows run the default "
            "session, the faster one there (numerics §1.9); widened = per-channel weight "
            "scales grown until no same-sign neighbour pair sums past 128",
        ],
    )
    for name, path in (
        ("ResNet-18-style", models.resnet18_style()),
        ("MobileNetV2", models.mobilenet_v2()),
    ):
        _add_model(table, name, path, calibration, evaluation)
    return table


def _add_model(
    table: Table, name: str, path: Path, calibration: np.ndarray, evaluation: np.ndarray
) -> None:
    print(f"[kernels] {name} ...", flush=True)
    input_name = onnx.load(str(path), load_external_data=False).graph.input[0].name
    quantized = eightbit.quantize(str(path), {input_name: calibration}, check_samples=0).model
    float_session = metrics.session(str(path), exact=True)
    reference = _outputs(float_session, evaluation)
    for weights, model in (("eightbit", quantized), ("widened", widen_for_16bit_pairs(quantized))):
        sessions = [metrics.session(model, exact=False), metrics.session(model, exact=True)]
        fp32, *int8 = _latencies_ms([float_session, *sessions], evaluation)
        for label, session, ms in zip(("default", "exact"), sessions, int8, strict=True):
            output = _outputs(session, evaluation)
            table.add(
                name,
                weights,
                label,
                metrics.top1_agreement(reference, output),
                metrics.sqnr_db(reference, output),
                ms / fp32,
            )
