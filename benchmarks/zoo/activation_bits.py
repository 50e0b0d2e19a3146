"""Is a zoo model limited by 8-bit activations? The same ranges on a 16-bit grid, and the
first layers in float, against eightbit's int8 (a one-off measurement, not part of
``make bench``; benchmarks/RESULTS.md records what it printed).

    .venv/bin/python -m benchmarks.zoo.activation_bits ppocr_rec

Each activation Q/DQ pair of eightbit's model (uint8, range [lo, hi]) is rewritten as
uint16 over the same [lo, hi], so folded Relu/Clip bounds stay; weights stay int8.
ONNX Runtime runs 16-bit Q/DQ from its com.microsoft domain (opset-independent) as float
arithmetic: the accuracy is the 16x8 scheme's, the latency is not an integer kernel's.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

import eightbit
from benchmarks import metrics
from benchmarks.zoo import catalog, measures
from benchmarks.zoo.spec import ZOO_DIR, ZooModel
from eightbit.analysis.latency import interleaved_medians_ms
from eightbit.calibrate import CalibrationConfig
from eightbit.quant import QuantConfig

QDQ = ("QuantizeLinear", "DequantizeLinear")


def activations_16bit(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every uint8 activation Q/DQ on a uint16 grid over the same range."""
    widened = onnx.ModelProto()
    widened.CopyFrom(model)
    initializers = {init.name: init for init in widened.graph.initializer}
    # A DQ of a stored uint8 constant keeps its grid (the constant is not re-quantized).
    constant_zero_points = {
        node.input[2]
        for node in widened.graph.node
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers
    }
    pairs: set[tuple[str, str]] = set()
    for node in widened.graph.node:
        if node.op_type not in QDQ or len(node.input) < 3:
            continue
        zero_point = initializers.get(node.input[2])
        if zero_point is None or zero_point.data_type != TensorProto.UINT8:
            continue  # int8 weights stay as they are
        if node.input[2] in constant_zero_points:
            continue
        node.domain = "com.microsoft"
        pairs.add((node.input[1], node.input[2]))
    for scale_name, zero_name in pairs:
        scale = numpy_helper.to_array(initializers[scale_name]).astype(np.float64)
        zero = numpy_helper.to_array(initializers[zero_name]).astype(np.float64)
        low, high = -zero * scale, (255 - zero) * scale
        wide = (high - low) / 65535
        wide_zero = np.clip(np.round(-low / wide), 0, 65535).astype(np.uint16)
        initializers[scale_name].CopyFrom(
            numpy_helper.from_array(wide.astype(np.float32), scale_name)
        )
        initializers[zero_name].CopyFrom(numpy_helper.from_array(wide_zero, zero_name))
    widened.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return widened


def _quantize(model: ZooModel, data: Path, **options: object) -> onnx.ModelProto:
    result = eightbit.quantize(str(model.build()), str(data), threads=1, **options)  # type: ignore[arg-type]
    return result.model


@dataclass(frozen=True)
class _Float:
    """The float model, its evaluation samples and its outputs on them: what every row
    compares against, computed once."""

    zoo: ZooModel
    model: onnx.ModelProto
    evaluation: np.ndarray
    outputs: np.ndarray


def _row(name: str, base: _Float, int8: onnx.ModelProto) -> list[object]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(int8, path)
        candidate = metrics.run_batches(path, base.evaluation)
    feed = {base.model.graph.input[0].name: base.evaluation[:1]}
    float_ms, int8_ms = interleaved_medians_ms([base.model, int8], feed, runs=20, warmup=3)
    return [
        name,
        f"{base.zoo.metric(base.outputs, candidate):.3f}",
        f"{measures.sqnr_db(base.outputs, candidate):.2f}",
        f"{int8_ms / float_ms:.2f}",
    ]


def main(key: str) -> None:
    model = next(m for m in catalog.ZOO if m.key == key)
    calibration_data, evaluation = model.data()
    evaluation = evaluation[:64]
    base = _Float(
        model, onnx.load(model.build()), evaluation, metrics.run_batches(model.build(), evaluation)
    )
    calibration = ZOO_DIR / f"{key}_cal_tmp.npy"
    np.save(calibration, calibration_data)
    default = _quantize(model, calibration)
    minmax = _quantize(
        model, calibration, calibration=CalibrationConfig(method="minmax"), improve="fast"
    )
    fast = eightbit.quantize(str(model.build()), str(calibration), improve="fast", threads=1)
    nodes = [decision.name for decision in fast.plan.nodes]
    convs = [i for i, decision in enumerate(fast.plan.nodes) if decision.op_type == "Conv"]
    rows = [
        _row("eightbit default (8-bit activations)", base, default),
        _row("same, activations on 16-bit grids", base, activations_16bit(default)),
        _row("minmax ranges, 16-bit activations", base, activations_16bit(minmax)),
    ]
    for count in (8, 16):
        config = QuantConfig(exclude=tuple(nodes[: convs[count]]))
        prefix = _quantize(model, calibration, config=config, improve="fast")
        rows.append(_row(f"first {count} Convs (and all before) in float", base, prefix))
    print(f"| {key} | agreement | SQNR dB | latency / fp32 (ORT, 1 thread) |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "ppocr_rec")
