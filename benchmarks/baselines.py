"""Third-party quantizers and calibrators the benchmark compares eightbit against.

* ONNX Runtime ``quantize_static``: QDQ, per-channel int8 weights, uint8 activations (its
  documented setting for x86 CPUs with VNNI), methods MinMax / Percentile / Entropy with their
  default options, on the raw export and after ``quant_pre_process`` (shape inference plus
  graph optimisation, which folds BatchNorm into the convolutions).
* NNCF ``nncf.quantize`` on the ONNX model, default preset and options, ``subset_size`` equal to
  the number of calibration samples.
* ONNX Runtime's calibrators alone (``create_calibrator`` + ``collect_data`` + ``compute_data``,
  exactly the calibration step of ``quantize_static``), for the calibration benchmark.

Each function does one quantization or calibration; timing and memory are measured around it
by ``benchmarks.worker`` in a fresh process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.feeds import NpyBatches, ort_reader

ORT_METHODS = ("minmax", "percentile", "entropy")


def _ort_method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if name not in methods:
        raise ValueError(f"ORT method must be one of {sorted(methods)} (got {name!r})")
    return methods[name]


def _quiet_ort() -> None:
    # quantize_static logs a "please pre-process" warning per call; it is the point of the
    # non-pre-processed rows, not news.
    logging.getLogger().setLevel(logging.ERROR)


def ort_quantize(
    model: Path, output: Path, calibration: NpyBatches, method: str, preprocess: bool
) -> None:
    """ONNX Runtime static quantization to QDQ, optionally after its pre-processing."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    _quiet_ort()
    model, output = model.resolve(), output.resolve()
    with tempfile.TemporaryDirectory(prefix="bench-ort-") as tmp, _working_directory(tmp):
        # In the temporary folder: when its symbolic shape inference fails, quant_pre_process
        # leaves its temporary model and external-data files in the working directory.
        source = model
        if preprocess:
            source = Path(tmp) / "preprocessed.onnx"
            quant_pre_process(str(model), str(source))
        quantize_static(
            str(source),
            str(output),
            ort_reader(calibration, _input_name(model)),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=_ort_method(method),
        )


@contextlib.contextmanager
def _working_directory(path: str) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def ort_calibrate(model: Path, calibration: NpyBatches, method: str) -> Any:
    """ONNX Runtime's calibration step of ``quantize_static``, alone; returns its ranges."""
    from onnxruntime.quantization.calibrate import create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    _quiet_ort()
    # quantize_static's default: calibrate the inputs/outputs of every quantizable op type.
    op_types = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
    with tempfile.TemporaryDirectory(prefix="bench-ort-") as tmp:
        calibrator = create_calibrator(
            model,
            op_types,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=_ort_method(method),
        )
        calibrator.collect_data(ort_reader(calibration, _input_name(model)))
        return calibrator.compute_data()


def nncf_quantize(model: Path, output: Path, calibration: NpyBatches, preprocess: bool) -> None:
    """NNCF post-training quantization of the ONNX model, default preset, optionally after
    ONNX Runtime's pre-processing (which folds BatchNorm into the convolutions)."""
    import nncf
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = _input_name(model)
    with tempfile.TemporaryDirectory(prefix="bench-nncf-") as tmp:
        if preprocess:
            source = Path(tmp) / "preprocessed.onnx"
            quant_pre_process(str(model), str(source))
            onnx_model = onnx.load(str(source))
        else:
            onnx_model = onnx.load(str(model))
    # NNCF counts subset_size in dataset items; one sample per item as its examples do.
    items = (sample[None] for batch in calibration for sample in batch)
    dataset = nncf.Dataset(list(items), lambda x: {name: x})
    quantized = nncf.quantize(onnx_model, dataset, subset_size=calibration.count)
    onnx.save(quantized, str(output))


def nncf_version() -> str | None:
    try:
        import nncf
    except ImportError:
        return None
    return str(nncf.__version__)


def _input_name(model: Path) -> str:
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    return next(i.name for i in graph.input if i.name not in initializers)


def activation_mb_per_sample(model: Path) -> float:
    """Size of every float tensor the graph computes for one sample (shape inference, batch 1)."""
    import numpy as np
    import onnx
    from onnx import shape_inference

    graph = shape_inference.infer_shapes(onnx.load(str(model))).graph
    total = 0
    for info in [*graph.value_info, *graph.output]:
        tensor_type = info.type.tensor_type
        if tensor_type.elem_type != onnx.TensorProto.FLOAT:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tensor_type.shape.dim]
        total += int(np.prod(dims)) * 4
    return total / 2**20


def ort_histogram_memory_mb(model: Path, samples: int) -> float:
    """Peak memory ORT's Percentile/Entropy calibration needs: it keeps every activation of
    every sample until the end (measured: 1.2x the raw activations on MobileNetV2)."""
    return 1.3 * activation_mb_per_sample(model) * samples + 512
