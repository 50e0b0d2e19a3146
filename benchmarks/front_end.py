"""Section "pytorch": the PyTorch front end against the hand-exported ONNX model (issue 17).

MobileNetV2 (ImageNet weights) as a ``torch.nn.Module``, on
the protocol of the "quantize" section (128 calibration crops, 400 evaluation crops, the
default preset, ORT running the QDQ model with its exact int8 kernels). Two routes, and the
TorchScript-exported file of the other sections beside them for MobileNetV2:

- ``eightbit.quantize(module, crops)``: the front end (dynamo export, numerics §T);
- the same export done by hand (``torch.onnx.export(..., dynamo=True)``, dynamic batch, the
  GlobalAveragePool rewrite of §T.1), quantized from the ONNX model: the front end must give
  the same integers (every initializer of the QDQ model equal);
- the TorchScript-exported ONNX file the other sections use (opset 17, BatchNorm kept).

Top-1 agreement and SQNR are against the module's own float logits on the evaluation
crops; times are wall-clock on a shared machine (export included in the front end's).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import images, metrics, models
from benchmarks.accuracy import EVAL_THREADS
from benchmarks.report import Table

COLUMNS = [
    "model",
    "route",
    "seconds",
    "top-1 agreement",
    "SQNR dB",
    "same integers as the front end",
]


def run() -> Table:
    import torch

    table = Table("PyTorch front end vs hand-exported ONNX (issue 17)", COLUMNS)
    calibration, evaluation = images.calibration_set(), images.evaluation_set()
    for label, load in _modules():
        try:
            module = load()
        except FileNotFoundError as missing:
            table.notes.append(f"{label}: skipped ({missing})")
            continue
        with torch.no_grad():
            reference = np.concatenate(
                [
                    module(torch.from_numpy(evaluation[i : i + 50].copy())).numpy()
                    for i in range(0, len(evaluation), 50)
                ]
            )
        _rows(table, label, module, calibration, evaluation, reference)
    table.notes.append(
        "seconds: wall clock of eightbit.quantize on a shared 2-core machine (the front "
        "end's includes its export); agreement and SQNR against the module's float logits"
    )
    return table


def _modules() -> list[tuple[str, Callable[[], Any]]]:
    # One model keeps the section within a few minutes; the tests cover the other
    # architectures (tests/pytorch).
    return [("MobileNetV2", models.load_mobilenet_v2_torch)]


def _rows(
    table: Table,
    label: str,
    module: Any,
    calibration: np.ndarray,
    evaluation: np.ndarray,
    reference: np.ndarray,
) -> None:
    import eightbit

    torch_file = {"MobileNetV2": models.mobilenet_v2}
    routes: list[tuple[str, Callable[[], Any]]] = [
        ("front end: quantize(module)", lambda: eightbit.quantize(module, calibration)),
        ("hand export (dynamo) + §T.1", lambda: eightbit.quantize(_by_hand(module), calibration)),
    ]
    if label == "MobileNetV2":
        routes.append(
            ("TorchScript ONNX file", lambda: eightbit.quantize(torch_file[label](), calibration))
        )
    front: dict[str, np.ndarray] | None = None
    for route, quantize in routes:
        started = time.perf_counter()
        result = quantize()
        seconds = time.perf_counter() - started
        integers = _initializers(result.model)
        front = integers if front is None else front
        logits = _run(result.model, evaluation)
        table.add(
            label,
            route,
            seconds,
            metrics.top1_agreement(reference, logits),
            metrics.sqnr_db(reference, logits),
            "—" if integers is front else _same(integers, front),
        )


def _by_hand(module: Any) -> Any:
    """What a user would export by hand: dynamo, batch dynamic, then §T.1's rewrite."""
    import torch

    from eightbit.graph.global_pool import spatial_means_as_global_pools

    example = torch.zeros(2, 3, models.IMAGE_SIZE, models.IMAGE_SIZE)
    exported = torch.onnx.export(
        module,
        (example,),
        dynamo=True,
        verbose=False,
        dynamic_shapes=({0: torch.export.Dim.DYNAMIC},),
    )
    return spatial_means_as_global_pools(exported.model_proto)[0]


def _initializers(model: Any) -> dict[str, np.ndarray]:
    import onnx

    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[name], b[name]) for name in a)


def _run(model: Any, data: np.ndarray) -> np.ndarray:
    session = metrics.session(model, threads=EVAL_THREADS)
    name = session.get_inputs()[0].name
    return np.concatenate(
        [session.run(None, {name: data[i : i + 16]})[0] for i in range(0, len(data), 16)]
    )
