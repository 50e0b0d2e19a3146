"""A YOLOv8-style head (boxes 0-320 joined with sigmoid scores of 80 classes) in int8.

Measures, on one synthetic detector (random He-initialised weights, a 320x320 input, a
10x10 grid: output (1, 84, 100) like YOLOv8's (1, 84, 8400)), what each way of handling
the joining Concat costs and keeps (docs/numerics.md §Q13, §I.9):

    .venv/bin/python -m benchmarks.joins

Prints a markdown table: whole-output SQNR, worst-slice SQNR, the class-score part's
SQNR, class agreement on float detections (score > 0.25), collapse, int8/fp32 latency
(1 thread, batch 1, interleaved medians) and quantize time.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import eightbit
from eightbit.analysis.latency import LatencyRatio
from eightbit.analysis.slices import slice_verdict
from eightbit.graph import make_session
from eightbit.improve.presets import PRESETS

SIZE, STRIDE, CLASSES, BOXES = 320, 32, 80, 4
GRID = SIZE // STRIDE
DETECTION = 0.25


def yolo_like_head(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(name: str, source: str, cin: int, cout: int, k: int, s: int, gain: float,
             bias: float = 0.0) -> str:  # fmt: skip
        w = rng.standard_normal((cout, cin, k, k)) * gain * np.sqrt(2.0 / (cin * k * k))
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"{name}_w"))
        inits.append(numpy_helper.from_array(np.full(cout, bias, np.float32), f"{name}_b"))
        inputs = [source, f"{name}_w", f"{name}_b"]
        pads = [k // 2] * 4
        node = helper.make_node("Conv", inputs, [f"{name}_y"], name=name, strides=[s, s], pads=pads)
        nodes.append(node)
        return f"{name}_y"

    def relu(source: str) -> str:
        nodes.append(helper.make_node("Relu", [source], [f"{source}_r"], name=f"{source}_relu"))
        return f"{source}_r"

    x, channels = "images", 3
    for index, width in enumerate((8, 16, 32, 64, 64)):
        x = relu(conv(f"c{index}", x, channels, width, 3, 2, 1.0))
        channels = width
    dist = relu(conv("box", x, channels, BOXES, 1, 1, 1.0))
    # YOLOv8's prior on the class bias: log(5 / 80 / (640 / 32)^2) ~ -8.8; -4.6 here so
    # that random weights give some detections.
    logits = conv("cls", x, channels, CLASSES, 1, 1, 3.0, bias=-4.6)
    ys, xs = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
    grid = np.stack([xs, ys, xs, ys])[None].astype(np.float32)
    inits += [
        numpy_helper.from_array(grid, "grid"),
        numpy_helper.from_array(np.array(float(STRIDE), np.float32), "stride"),
        numpy_helper.from_array(np.array([1, BOXES, GRID * GRID], np.int64), "box_shape"),
        numpy_helper.from_array(np.array([1, CLASSES, GRID * GRID], np.int64), "cls_shape"),
    ]
    nodes += [
        helper.make_node("Add", [dist, "grid"], ["cells"], name="box_grid"),
        helper.make_node("Mul", ["cells", "stride"], ["pixels"], name="box_stride"),
        helper.make_node("Reshape", ["pixels", "box_shape"], ["boxes"], name="box_flat"),
        helper.make_node("Sigmoid", [logits], ["probs"], name="cls_sigmoid"),
        helper.make_node("Reshape", ["probs", "cls_shape"], ["scores"], name="cls_flat"),
        helper.make_node("Concat", ["boxes", "scores"], ["output0"], name="head", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "yolo_like_head",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 84, GRID * GRID])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def images(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, size=(count, 1, 3, SIZE, SIZE)).astype(np.float32)


def run(model: onnx.ModelProto, batches: np.ndarray) -> np.ndarray:
    session = make_session(model, threads=1)
    return np.concatenate([session.run(None, {"images": batch})[0] for batch in batches])


def ort_int8(model: onnx.ModelProto, calibration: np.ndarray) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    logging.getLogger().setLevel(logging.ERROR)

    class Reader:
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        onnx.save(model, source)
        quantize_static(
            str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
        return onnx.load(str(target))


def row(name: str, model: onnx.ModelProto, reference: np.ndarray, held: np.ndarray,
        timer: LatencyRatio, seconds: float) -> str:  # fmt: skip
    out = run(model, held)
    verdict = slice_verdict(reference, out)
    assert verdict is not None
    whole = 10 * np.log10(np.sum(reference**2) / np.sum((reference - out) ** 2))
    ref_s, out_s = reference[:, BOXES:], out[:, BOXES:]
    scores = 10 * np.log10(np.sum(ref_s**2) / max(np.sum((ref_s - out_s) ** 2), 1e-30))
    detected = ref_s.max(axis=1) > DETECTION
    agree = np.argmax(ref_s, axis=1)[detected] == np.argmax(out_s, axis=1)[detected]
    kept = (out_s.max(axis=1) > DETECTION)[detected]
    return (
        f"| {name} | {whole:.1f} | {verdict.worst_sqnr_db:.1f} | {scores:.1f} | "
        f"{np.mean(agree & kept):.3f} ({detected.sum()}) | "
        f"{'yes' if verdict.has_collapse else 'no'} | {timer(model):.3f} | {seconds:.1f} |"
    )


def main() -> None:
    model = yolo_like_head()
    calibration, held = images(64, 1), images(32, 2)
    data = {"images": np.concatenate([calibration, held])[:, 0]}
    reference = run(model, held)
    timer = LatencyRatio(model, {"images": held[0]}, runs=100)
    print("| setting | SQNR dB | worst slice dB | scores dB | class agr. (detections) |"
          " collapse | int8/fp32 | quantize s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    settings = {
        "eightbit fast (Concat int8)": "fast",
        "eightbit default (float join §Q13, safety net §I.9)": "default",
        "eightbit default, no safety net (float join only)": replace(
            PRESETS["default"], safety_net=False
        ),
        "eightbit default, joins int8 + safety net": replace(
            PRESETS["default"], separate_joins=False
        ),
        "eightbit default, joins int8, no safety net": replace(
            PRESETS["default"], separate_joins=False, safety_net=False
        ),
    }
    for name, improve in settings.items():
        started = time.perf_counter()
        result = eightbit.quantize(model, data, improve=improve, check_samples=32)
        seconds = time.perf_counter() - started
        print(row(name, result.model, reference, held, timer, seconds))
    started = time.perf_counter()
    ort = ort_int8(model, calibration)
    print(row("ORT quantize_static", ort, reference, held, timer, time.perf_counter() - started))


if __name__ == "__main__":
    main()
