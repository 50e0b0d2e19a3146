"""Section "s16": 16-bit activations with 8-bit weights ("16x8", issue 18) on the integer
engine and in the generated C (docs/numerics.md §E.13, §G.8).

Two networks, each quantized twice with the same settings (affine scheme, the ``fast``
preset, all calibration samples): all-int8, and 16x8 with a few activations int16 —

* the MNIST demo CNN with the two tensors ``make mcu-check`` promotes (the first block's
  output and the residual block's), and
* MobileNetV2 with its ten residual Add outputs (the residual stream) int16.

Per model: the engine's outputs against ONNX Runtime's session on the same QDQ model
(its int8 kernels for the 8-bit nodes; it has no int16 kernels and runs the nodes between
int16 Q/DQ pairs in float, so those are ≤ 1 LSB per int16 layer, not bit-exact; neither
network has an int16 MatMul/Gemm, where its optimized session departs from its own
unoptimized result, numerics §E.13); the
logit SQNR of the engine's output against the float model; the engine's time per image
(default threads, shared machine); and the C for a Cortex-M4: flash and arena
(``arm-none-eabi-size``), as a ratio to the all-int8 model, and host gcc bit-exactness on a
few real inputs.
"""

from __future__ import annotations

import functools
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks import codegen, images, models
from benchmarks.report import Table

WORK = images.WORK_DIR / "s16"
SAMPLES = 16  # evaluation inputs for agreement and SQNR
TIMED_RUNS = 5
MNIST_INT16 = (
    "/features/features.0/features.0.2/Relu_output_0",
    "/features/features.4/Relu_output_0",
)
MOBILENET_INT16 = tuple(
    f"/features/features.{block}/Add_output_0" for block in (3, 5, 6, 8, 9, 10, 12, 13, 15, 16)
)


@dataclass(frozen=True)
class Network:
    label: str
    name: str
    model: Callable[[], str]
    calibration: Callable[[], Any]  # what eightbit.quantize takes as data
    evaluation: Callable[[], np.ndarray]  # float inputs, NCHW
    int16: tuple[str, ...]


def _mnist_calibration() -> Any:
    return {codegen._mnist_data().INPUT_NAME: codegen._mnist_splits().calib_x}


NETWORKS = (
    Network(
        "MNIST demo CNN",
        "mnist",
        lambda: str(codegen.MNIST_MODEL),
        _mnist_calibration,
        lambda: np.asarray(codegen._mnist_splits().test_x[:SAMPLES]),
        MNIST_INT16,
    ),
    Network(
        "MobileNetV2 224x224",
        "mobilenet_v2",
        lambda: str(models.mobilenet_v2()),
        lambda: np.asarray(images.calibration_set()),
        lambda: np.asarray(images.evaluation_set()[:SAMPLES]),
        MOBILENET_INT16,
    ),
)


@functools.cache
def _quantized(network: Network, wide: bool) -> Any:
    import eightbit
    from eightbit.quant import QuantConfig

    config = QuantConfig(int16=network.int16 if wide else ())
    print(f"[s16] quantizing {network.label} ({'16x8' if wide else 'int8'}) ...", flush=True)
    return eightbit.quantize(
        network.model(), network.calibration(), config, check_samples=0, improve="fast"
    )


def _sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - other) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(signal / noise)


def _measure(network: Network, wide: bool) -> dict[str, Any]:
    import onnxruntime as ort

    from eightbit.engine import execute, prepare
    from eightbit.graph.session import make_session

    quantized = _quantized(network, wide)
    program = prepare(quantized)
    inputs = network.evaluation()
    name = program.inputs[0]
    ours = np.concatenate([execute(program, {name: x[None]})[program.outputs[0]] for x in inputs])
    session = make_session(quantized.model)  # eightbit's: ONNX Runtime's exact int8 kernels
    theirs = np.concatenate([session.run(None, {name: x[None]})[0] for x in inputs])
    float_session = ort.InferenceSession(network.model(), providers=["CPUExecutionProvider"])
    expected = np.concatenate([float_session.run(None, {name: x[None]})[0] for x in inputs])
    scale = float(program.formats[_stored_name(program)].params.scale)
    lsb = np.rint(np.abs(ours - theirs) / scale).astype(np.int64)
    seconds = []
    for _ in range(TIMED_RUNS):
        start = time.perf_counter()
        execute(program, {name: inputs[:1]})
        seconds.append(time.perf_counter() - start)
    return {
        "int16": sum(f.params.dtype == "int16" for f in program.formats.values()),
        "equal": float(np.mean(lsb == 0)),
        "largest": int(lsb.max()),
        "sqnr": _sqnr_db(expected, ours),
        "ms": 1000 * statistics.median(seconds),
        "quantized": quantized,
    }


def _stored_name(program: Any) -> str:
    """The integer tensor the output is dequantized from (its last step's input)."""
    return str(program.steps[-1].inputs[0])


def _c_row(network: Network, wide: bool, quantized: Any) -> tuple[Any, ...]:
    from eightbit.codegen import generate_c

    name = f"{network.name}_{'s16' if wide else 'int8'}"
    generated = generate_c(quantized, name, source=f"{network.label} ({name})")
    folder = WORK / name
    generated.write(folder)
    cross = shutil.which(codegen.CROSS_CC) and shutil.which(codegen.CROSS_SIZE)
    sizes = codegen.cross_compile(folder, name) if cross else None
    samples = network.evaluation()[: codegen.HOST_SAMPLES]
    exact = codegen.host_bit_exact(generated, folder, samples)
    return (None if sizes is None else sizes.flash), generated.arena.size, exact


def run(networks: tuple[Network, ...] = NETWORKS) -> Table:
    table = Table(
        "16x8: int16 activations, int8 weights, on the engine and in the C (Cortex-M4)",
        [
            "model",
            "activations",
            "int16 tensors",
            "engine = ORT %",
            "max LSB",
            "logit SQNR dB",
            "engine ms / image",
            "flash B",
            "flash / int8",
            "arena B",
            "arena / int8",
            "host gcc bit-exact",
        ],
        notes=[
            "quantized with eightbit.quantize(..., improve='fast'), affine scheme; 16x8 = the "
            "same with QuantConfig(int16=...): MNIST the two tensors of make mcu-check, "
            "MobileNetV2 its ten residual Add outputs",
            f"engine = ORT: the output integers of {SAMPLES} evaluation inputs against ONNX "
            "Runtime's session as eightbit makes it (exact int8 kernels; the int16 Q/DQ "
            "pairs run in float there, §E.13); "
            "max LSB of the output; SQNR against the float model; int16 tensors: the "
            "program's int16 formats (a tensor and the moves that keep its parameters)",
            "engine ms / image: median of 5 runs of one image, default threads, on a shared "
            "machine (the lead reruns idle)",
            f"flash = text + data, arena = NAME_ARENA_BYTES; `{codegen.CROSS_CC} "
            f"{' '.join(codegen.CROSS_FLAGS)} -c`",
        ],
    )
    for network in networks:
        base: tuple[Any, ...] = (None, None)
        for wide in (False, True):
            label = "16x8" if wide else "int8"
            print(f"[s16] {network.label} {label} ...", flush=True)
            try:
                row = _measure(network, wide)
                flash, arena, exact = _c_row(network, wide, row["quantized"])
            except Exception as exc:  # one failed row must not hide the others
                table.add(network.label, label, "failed", *[None] * 9)
                table.notes.append(f"{network.label} {label}: {type(exc).__name__}: {exc}")
                continue
            if not wide:
                base = (flash, arena)
            table.add(
                network.label,
                label,
                row["int16"],
                100 * row["equal"],
                row["largest"],
                row["sqnr"],
                row["ms"],
                None if flash is None else f"{flash:,}",
                None if flash is None or base[0] is None else flash / base[0],
                f"{arena:,}",
                None if base[1] is None else arena / base[1],
                exact,
            )
    return table
