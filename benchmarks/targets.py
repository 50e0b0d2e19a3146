"""Section "targets": each ``--target`` on the ResNet-18-style network and MobileNetV2.

Per target (docs/targets.md): top-1 agreement and logit SQNR against the float model on
evaluation crops (ONNX Runtime, exact int8 kernels), the activation QuantizeLinear nodes
that are int8 with zero point 0 (TensorRT's only form), file size, batch-1 one-thread latency
in ONNX Runtime and in OpenVINO's CPU plugin (each interleaved with the float model), with
the count of Convolution/FullyConnected ops OpenVINO's runtime graph runs in u8/i8. Each
agreement is also given as its difference from ``ort``'s (for ``tensorrt`` the issue asks
for at most 0.01). The default preset throughout.
"""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import images, metrics, models
from benchmarks.report import Table

CALIBRATION_SAMPLES = 64
EVALUATION_SAMPLES = 400
EVAL_THREADS = 2
TARGETS = ("ort", "tensorrt", "openvino", "mcu", "fpga")


def run() -> list[Table]:
    calibration = np.asarray(images.calibration_set()[:CALIBRATION_SAMPLES])
    evaluation = np.asarray(images.evaluation_set()[:EVALUATION_SAMPLES])
    networks = {
        "ResNet-18-style (random weights)": models.resnet18_style(),
        "MobileNetV2 (ImageNet weights)": models.mobilenet_v2(),
    }
    # The quantized models are scratch: a folder of this run's own, so runs never share one.
    with tempfile.TemporaryDirectory(prefix="targets_", dir=_scratch_parent()) as scratch:
        return [
            _table(title, path, calibration, evaluation, Path(scratch))
            for title, path in networks.items()
        ]


def _scratch_parent() -> Path:
    models.WORK_DIR.mkdir(parents=True, exist_ok=True)
    return models.WORK_DIR


def _table(
    title: str, model: Path, calibration: np.ndarray, evaluation: np.ndarray, scratch: Path
) -> Table:
    has_openvino = importlib.util.find_spec("openvino") is not None
    table = Table(
        f"{title}: each --target (default preset)",
        [
            "target",
            "top-1 agr.",
            "vs ort",
            "SQNR dB",
            "act. Q int8 z=0",
            "int8 MB",
            "ORT int8/fp32",
            "ORT int8 ms",
            "OpenVINO int8/fp32",
            "OpenVINO int8 Conv+FC",
            "quantize s",
        ],
        notes=[
            f"calibration: {len(calibration)} crops; evaluation: {len(evaluation)} other crops; "
            "agreement = same arg-max as the float model, run in ONNX Runtime (exact int8 "
            "kernels, docs/numerics.md §1.9)",
            f"latency: batch 1, 1 intra-op thread, median of {metrics.LATENCY_RUNS} runs "
            "interleaved with fp32, on a machine shared with other jobs",
            "'vs ort': top-1 agreement minus the ort target's; 'OpenVINO int8 Conv+FC': "
            "u8/i8 Convolution+FullyConnected ops of its runtime graph / all of them",
            "'act. Q int8 z=0': activation QuantizeLinear nodes with an int8 zero point of 0 "
            "/ all of them; tensorrt centres its non-negative tensors (docs/numerics.md §Q16.1)",
        ],
    )
    if not has_openvino:
        table.notes.append("openvino is not installed: its columns are empty")
    reference = metrics.run_batches(model, evaluation, threads=EVAL_THREADS)
    sample = evaluation[:1]
    ort_agreement: float | None = None
    for target in TARGETS:
        print(f"[targets] {model.stem} {target} ...", flush=True)
        output, seconds = _quantize(model, calibration, target, scratch)
        logits = metrics.run_batches(output, evaluation, threads=EVAL_THREADS)
        agreement = metrics.top1_agreement(reference, logits)
        if target == "ort":
            ort_agreement = agreement
        int8_ms, fp32_ms = metrics.interleaved_latency_ms([output, model], sample)
        vino_ratio, vino_int8 = None, None
        if has_openvino:
            vino_int8 = _openvino_int8_layers(output)
            vino_ms, vino_fp32_ms = _openvino_latency_ms([output, model], sample)
            vino_ratio = vino_ms / vino_fp32_ms
        table.add(
            target,
            agreement,
            None if ort_agreement is None else agreement - ort_agreement,
            metrics.sqnr_db(reference, logits),
            _symmetric_activation_qs(output),
            metrics.file_size(output) / 2**20,
            int8_ms / fp32_ms,
            int8_ms,
            vino_ratio,
            vino_int8,
            seconds,
        )
    return table


def _quantize(
    model: Path, calibration: np.ndarray, target: str, scratch: Path
) -> tuple[Path, float]:
    from eightbit.pipeline import quantize
    from eightbit.quant import QuantConfig

    output = scratch / f"{model.stem}_{target}.onnx"
    started = time.perf_counter()
    result = quantize(model, {models.INPUT_NAME: calibration}, QuantConfig.for_target(target))
    seconds = time.perf_counter() - started
    result.save(output)
    return output, seconds


def _symmetric_activation_qs(path: Path) -> str:
    """'int8 with zero point 0 / all' activation QuantizeLinear nodes (weights excluded)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    zero_points = [
        constants.get(node.input[2]) if len(node.input) > 2 else None
        for node in model.graph.node
        if node.op_type == "QuantizeLinear" and node.input[0] not in constants
    ]
    symmetric = sum(1 for z in zero_points if z is not None and z.dtype == np.int8 and not z.any())
    return f"{symmetric} / {len(zero_points)}"


def _openvino_compiled(path: Path) -> Any:
    import openvino as ov

    core = ov.Core()
    # f32 where Q/DQ does not say int8: on a CPU with bf16 units OpenVINO's default is bf16,
    # which would make the "fp32" side of the ratio a bf16 one.
    config = {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32"}
    return core.compile_model(core.read_model(str(path)), "CPU", config)


def _openvino_int8_layers(path: Path) -> str:
    """'int8 / all' Convolution and FullyConnected ops of OpenVINO's runtime graph."""
    layers = [
        (info["layerType"].astype(str), info["runtimePrecision"].astype(str))
        for op in _openvino_compiled(path).get_runtime_model().get_ordered_ops()
        for info in [op.get_rt_info()]
        if info["layerType"].astype(str) in ("Convolution", "FullyConnected")
    ]
    int8 = sum(1 for _, precision in layers if precision in ("u8", "i8"))
    return f"{int8} / {len(layers)}"


def _openvino_latency_ms(paths: list[Path], sample: np.ndarray, warmup: int = 5) -> list[float]:
    """Median batch-1 latency of each model in OpenVINO (1 thread), runs interleaved."""
    requests = [_openvino_compiled(path).create_infer_request() for path in paths]
    feed = np.ascontiguousarray(sample[:1])
    for request in requests:
        for _ in range(warmup):
            request.infer([feed])
    times: list[list[float]] = [[] for _ in requests]
    for _ in range(metrics.LATENCY_RUNS):
        for i, request in enumerate(requests):
            start = time.perf_counter()
            request.infer([feed])
            times[i].append(time.perf_counter() - start)
    return [1000.0 * statistics.median(t) for t in times]
