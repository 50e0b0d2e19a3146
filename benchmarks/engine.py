"""Section "engine": eightbit's integer engine against ONNX Runtime (issue 6).

Exactness. The engine and ONNX Runtime run the same QDQ model (eightbit's, 128 calibration
crops) on the first 16 evaluation crops; outputs are compared as stored integers, so a
difference is counted in LSB of the output scale:

* end to end: the engine's integers against ORT's output quantized with the same parameters
  (ORT's default optimizations, i.e. its int8 kernels: QLinearConv, QLinearAdd, ...);
* per node: every integer step of the engine fed ORT's own integers for its inputs, against
  ORT's integers for its outputs, over every quantized tensor of the network (ORT runs a copy
  of the model that also returns those tensors; that it still computes the same output is
  checked and noted);
* reference: ORT's float QDQ path (optimizations off: DequantizeLinear, float op,
  QuantizeLinear) against its own int8 kernels, on the same model and crops. In deep affine
  networks a 1-LSB near-tie difference early on grows layer by layer (docs/numerics.md
  §E.11); this row shows ORT diverging from itself the same way.

Speed. ResNet-18-style and MobileNetV2, batch 1, one thread (threadpoolctl limits numpy's
BLAS; ORT gets ``intra_op_num_threads=1``): the engine's whole ``execute`` (float input to
float output) against ORT's fp32 model and ORT running the QDQ model, runs interleaved so that
load drifts hit all three alike.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from benchmarks import images, metrics, models
from benchmarks.report import Table

ROOT = Path(__file__).resolve().parent.parent
SCHEMES = ("affine", "pow2")
SAMPLES = 16  # evaluation crops compared for exactness
BATCH = 4  # crops per engine/ORT call in the exactness runs
SPEED_RUNS = 21
SPEED_WARMUP = 3
EXACT_GOAL = 0.999  # fraction of output elements exactly equal (issue 6)
LSB_GOAL = 1  # largest difference allowed, in LSB of the output scale
SPEED_GOAL = 3.0  # engine latency / ORT fp32 latency, ResNet-18-style, 1 thread
MODELS: dict[str, Callable[[], Path]] = {
    "ResNet-18-style": models.resnet18_style,
    "MobileNetV2": models.mobilenet_v2,
}


class Unavailable(RuntimeError):
    """eightbit (or a tool a row needs) cannot be imported."""


# --------------------------------------------------------------------------------------------
# Quantized models (shared with the codegen section, quantized once per run)
# --------------------------------------------------------------------------------------------


@functools.cache
def quantized(model: Path, scheme: str) -> Any:
    """eightbit's ``QuantizedModel`` of ``model``: all 128 calibration crops, eightbit's
    default calibration (what a user gets; the method is named in the table notes)."""
    try:
        import eightbit
        from eightbit.calibrate import CalibrationConfig
        from eightbit.quant import QuantConfig
    except ImportError as exc:
        raise Unavailable(f"eightbit not importable: {exc}") from exc
    print(f"[engine] quantizing {model.name} ({scheme}) ...", flush=True)
    return eightbit.quantize(
        str(model),
        np.asarray(images.calibration_set()),
        QuantConfig(scheme=scheme),  # type: ignore[arg-type]
        calibration=CalibrationConfig(),
        check_samples=0,
        threads=os.cpu_count() or 1,
    )


# --------------------------------------------------------------------------------------------
# Exactness
# --------------------------------------------------------------------------------------------


@dataclass
class Agreement:
    """Stored integers of two runs: how many are equal, and the largest difference."""

    equal: int = 0
    total: int = 0
    largest: int = 0
    worst: str = ""  # the tensor where ``largest`` was first seen

    def add(self, ours: np.ndarray, theirs: np.ndarray, tensor: str) -> None:
        if ours.shape != theirs.shape:
            raise ValueError(f"{tensor}: shapes {ours.shape} and {theirs.shape} differ")
        difference = np.abs(ours.astype(np.int64) - theirs.astype(np.int64))
        self.equal += int(np.count_nonzero(difference == 0))
        self.total += int(difference.size)
        largest = int(difference.max()) if difference.size else 0
        if largest > self.largest:
            self.largest, self.worst = largest, tensor

    @property
    def exact(self) -> float:
        return self.equal / self.total if self.total else 1.0

    def meets_goal(self) -> bool:
        return self.largest <= LSB_GOAL and self.exact >= EXACT_GOAL


def percent(agreement: Agreement) -> str:
    """Enough digits to see a handful of differences among millions of elements."""
    if agreement.equal == agreement.total:
        return "100%"
    return f"{100.0 * agreement.exact:.5f}%"


def _default_method() -> str:
    try:
        from eightbit.calibrate import CalibrationConfig
    except ImportError:
        return "unknown"
    return str(CalibrationConfig().method)


def _batches(data: np.ndarray, count: int, size: int) -> Iterator[np.ndarray]:
    for start in range(0, count, size):
        yield np.ascontiguousarray(data[start : min(start + size, count)])


def _output_formats(program: Any) -> dict[str, tuple[str, Any]]:
    """Each model output -> (the integer tensor its boundary dequantizes, its parameters)."""
    from eightbit.engine.floats import DequantizeStep

    found = {}
    for step in program.steps:
        if isinstance(step, DequantizeStep) and step.outputs[0] in program.outputs:
            found[step.outputs[0]] = (step.inputs[0], step.params)
    missing = set(program.outputs) - set(found)
    if missing:
        raise ValueError(f"outputs {sorted(missing)} are not dequantized integers")
    return found


def _stored(values: np.ndarray, params: Any) -> np.ndarray:
    """ORT's float output back to stored integers: y = s·(q − z) in float32, so y / s in
    float64 is within 1e-6 of the integer q − z and rounds back to it exactly."""
    scale = np.float64(params.scale)
    return np.rint(values.astype(np.float64) / scale).astype(np.int64) + int(params.zero_point)


@dataclass
class Exactness:
    end_to_end: Agreement
    per_node: Agreement
    ort_float_vs_int8: Agreement
    exposed_output_unchanged: bool
    nodes: int  # integer steps compared per node


def _session(model: Any, optimization: Literal["all", "none"]) -> Any:
    """ORT on one thread; "all" is its default level (int8 kernels), "none" the float path."""
    from eightbit.graph import make_session

    return make_session(model, threads=1, optimization=optimization)


def measure_exactness(model: Path, scheme: str, samples: int = SAMPLES) -> Exactness:
    """Engine vs ONNX Runtime on the first ``samples`` evaluation crops (see module doc)."""
    from eightbit.engine import execute, prepare
    from eightbit.graph import with_outputs

    result = quantized(model, scheme)
    program = prepare(result)
    outputs = _output_formats(program)
    integer_tensors = program.integer_tensors()
    int8_kernels = _session(result.model, "all")
    float_qdq = _session(result.model, "none")
    exposed = _session(with_outputs(result.model, integer_tensors), "all")
    input_name = program.inputs[0]
    names = [o.name for o in exposed.get_outputs()]

    measured = Exactness(Agreement(), Agreement(), Agreement(), True, 0)
    for batch in _batches(images.evaluation_set(), samples, BATCH):
        feeds = {input_name: batch}
        ours: dict[str, np.ndarray] = {}
        execute(program, feeds, observe=ours.__setitem__)
        theirs = dict(zip(names, exposed.run(None, feeds), strict=True))
        int8_out = dict(zip(program.outputs, int8_kernels.run(None, feeds), strict=True))
        float_out = dict(zip(program.outputs, float_qdq.run(None, feeds), strict=True))
        for output, (tensor, params) in outputs.items():
            reference = _stored(int8_out[output], params)
            measured.end_to_end.add(ours[tensor], reference, tensor)
            measured.ort_float_vs_int8.add(_stored(float_out[output], params), reference, tensor)
            if not np.array_equal(theirs[output], int8_out[output]):
                measured.exposed_output_unchanged = False
        measured.nodes = _compare_nodes(program, feeds, theirs, measured.per_node)
    return measured


def _compare_nodes(
    program: Any, feeds: dict[str, np.ndarray], theirs: dict[str, np.ndarray], into: Agreement
) -> int:
    """Run every integer-writing step on ORT's values for its inputs; compare its outputs."""
    available: dict[str, Any] = {**program.constants, **feeds, **theirs}
    compared = 0
    for step in program.steps:
        written = [name for name in step.outputs if name in program.formats]
        if not written:
            continue  # the output boundary (DequantizeStep) writes floats
        missing = [name for name in step.inputs if name and name not in available]
        if missing:  # a float fallback node's value: ORT has no integers to feed
            raise ValueError(f"step {step.node!r} reads {missing}, which ORT does not expose")
        args = [available[name] if name else None for name in step.inputs]
        for name, value in zip(step.outputs, step.run(*args), strict=True):
            if name in program.formats:
                into.add(np.asarray(value), theirs[name], f"{step.node} -> {name}")
        compared += 1
    return compared


def exactness_table(models_by_name: dict[str, Callable[[], Path]] = MODELS) -> Table:
    table = Table(
        f"Integer engine vs ONNX Runtime on eightbit's QDQ model ({SAMPLES} evaluation crops)",
        [
            "model",
            "scheme",
            "comparison",
            "exactly equal",
            "max LSB",
            "differing",
            "elements",
            "goal met",
        ],
        notes=[
            f"goal (issue 6): every element within {LSB_GOAL} LSB and >= {EXACT_GOAL:.1%} "
            "exactly equal; LSB = one step of the stored integers (output scale)",
            "end to end: the engine's output integers vs ORT's output (default optimizations: "
            "int8 kernels) quantized back with the output's scale and zero point",
            "per node: each integer step of the engine fed ORT's integers for its inputs; "
            "elements = every quantized tensor of the network (input quantization included)",
            "ORT float QDQ vs int8: ORT with optimizations off (DequantizeLinear, float op, "
            "QuantizeLinear) vs on, same model and crops; a reference, no goal",
            f"quantization: eightbit's default calibration ({_default_method()}) on the 128 "
            "calibration crops; affine = uint8 activations, per-channel int8 weights; pow2 = "
            "int8, every scale 2^-f",
        ],
    )
    for model_name, build in models_by_name.items():
        for scheme in SCHEMES:
            print(f"[engine] exactness {model_name} {scheme} ...", flush=True)
            try:
                m = measure_exactness(build(), scheme)
            except Unavailable as exc:
                table.add(model_name, scheme, "all", "not available", *[None] * 4)
                table.notes.append(f"{model_name} {scheme}: {exc}")
                continue
            rows = [
                ("end to end: engine vs ORT int8", m.end_to_end, True),
                (f"per node: {m.nodes} steps on ORT's inputs", m.per_node, True),
                ("ORT float QDQ vs ORT int8", m.ort_float_vs_int8, False),
            ]
            for label, agreement, judged in rows:
                table.add(
                    model_name,
                    scheme,
                    label,
                    percent(agreement),
                    agreement.largest,
                    agreement.total - agreement.equal,
                    agreement.total,
                    agreement.meets_goal() if judged else None,
                )
            if m.per_node.largest > 0:
                table.notes.append(
                    f"{model_name} {scheme}: largest per-node difference first at "
                    f"{m.per_node.worst}"
                )
            if not m.exposed_output_unchanged:
                table.notes.append(
                    f"{model_name} {scheme}: exposing the integer tensors changed ORT's output "
                    "(the per-node row compares against that run)"
                )
    return table


# --------------------------------------------------------------------------------------------
# Speed
# --------------------------------------------------------------------------------------------


def interleaved_seconds(
    runners: list[Callable[[], object]], runs: int, warmup: int
) -> list[list[float]]:
    """Wall times of each runner, the runners called in turn run after run."""
    for runner in runners:
        for _ in range(warmup):
            runner()
    times: list[list[float]] = [[] for _ in runners]
    for _ in range(runs):
        for index, runner in enumerate(runners):
            start = time.perf_counter()
            runner()
            times[index].append(time.perf_counter() - start)
    return times


@dataclass(frozen=True)
class Speed:
    """Median batch-1 milliseconds, and the ratio of the fastest runs."""

    engine_ms: float
    fp32_ms: float
    int8_ms: float
    fastest_ratio: float  # fastest engine run / fastest ORT fp32 run: least disturbed by load

    @property
    def ratio(self) -> float:
        return self.engine_ms / self.fp32_ms


def measure_speed(model: Path, scheme: str, runs: int = SPEED_RUNS) -> Speed:
    """The engine, ORT fp32 and ORT on the QDQ model, batch 1, one thread each."""
    from threadpoolctl import threadpool_limits

    from eightbit.engine import execute, prepare

    result = quantized(model, scheme)
    program = prepare(result)
    feeds = {program.inputs[0]: np.ascontiguousarray(images.evaluation_set()[:1])}
    fp32 = metrics.session(model, threads=1)
    int8 = _session(result.model, "all")
    with threadpool_limits(limits=1):
        engine_s, fp32_s, int8_s = interleaved_seconds(
            [
                lambda: execute(program, feeds),
                lambda: fp32.run(None, feeds),  # type: ignore[attr-defined]
                lambda: int8.run(None, feeds),
            ],
            runs,
            SPEED_WARMUP,
        )
    ms = [1000.0 * statistics.median(t) for t in (engine_s, fp32_s, int8_s)]
    return Speed(ms[0], ms[1], ms[2], min(engine_s) / min(fp32_s))


def _blas() -> str:
    """numpy's BLAS and the kernels it picked (OpenBLAS chooses by CPU, e.g. Haswell)."""
    from threadpoolctl import threadpool_info

    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            return f"{pool.get('internal_api')} {pool.get('version')} ({pool.get('architecture')})"
    return "unknown"


def speed_table(models_by_name: dict[str, Callable[[], Path]] = MODELS) -> Table:
    table = Table(
        "Integer engine speed (224x224, batch 1, 1 thread)",
        [
            "model",
            "scheme",
            "engine ms",
            "ORT fp32 ms",
            "engine / ORT fp32",
            "fastest runs ratio",
            "ORT int8 ms",
            "goal",
            "met",
        ],
        notes=[
            f"median of {SPEED_RUNS} runs of each, interleaved (engine, ORT fp32, ORT on the QDQ "
            f"model), after {SPEED_WARMUP} warm-up runs; engine = eightbit.engine.execute from "
            "float input to float output (fast kernels); fastest runs ratio = fastest engine "
            "run / fastest ORT fp32 run, the least disturbed by other jobs",
            f"one thread: threadpoolctl limits numpy's BLAS ({_blas()}); ORT "
            "intra_op_num_threads=1, default optimizations",
            f"goal (issue 6): engine <= {SPEED_GOAL:g}x ORT fp32 (medians) on ResNet-18-style "
            "(affine); other rows for information",
        ],
    )
    for model_name, build in models_by_name.items():
        for scheme in SCHEMES:
            print(f"[engine] speed {model_name} {scheme} ...", flush=True)
            try:
                speed = measure_speed(build(), scheme)
            except Unavailable as exc:
                table.add(model_name, scheme, "not available", *[None] * 6)
                table.notes.append(f"{model_name} {scheme}: {exc}")
                continue
            _speed_row(table, model_name, scheme, speed, judged=_judged(model_name, scheme))
    _native_blas_row(table, models_by_name)
    return table


def _judged(model_name: str, scheme: str) -> bool:
    return model_name == "ResNet-18-style" and scheme == "affine"


def _speed_row(table: Table, model_name: str, scheme: str, speed: Speed, judged: bool) -> None:
    table.add(
        model_name,
        scheme,
        speed.engine_ms,
        speed.fp32_ms,
        speed.ratio,
        speed.fastest_ratio,
        speed.int8_ms,
        f"<= {SPEED_GOAL:g}" if judged else None,
        speed.ratio <= SPEED_GOAL if judged else None,
    )


# Some machines set OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE to work around old OpenBLAS builds;
# they pin numpy to slower kernels (Haswell/AVX2 on an AVX-512 CPU that ONNX Runtime uses in
# full). The engine's time is mostly float32 GEMMs, so the row below measures it once more in
# a process with both unset, as on a machine without the workaround. The GEMMs are exact, so
# the kernel choice changes no result (checked by the output digest).
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
SPEED_PREFIX = "SPEED "


def _native_blas_row(table: Table, models_by_name: dict[str, Callable[[], Path]]) -> None:
    """ResNet-18-style affine once more, with OpenBLAS choosing its own kernels."""
    model_name, scheme = "ResNet-18-style", "affine"
    if model_name not in models_by_name or not _openblas_overridden():
        return
    print(f"[engine] speed {model_name} {scheme} with OpenBLAS's own kernels ...", flush=True)
    command = [sys.executable, "-m", "benchmarks.engine", model_name, scheme]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k not in OPENBLAS_OVERRIDES},
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(SPEED_PREFIX)]
    if not lines:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        table.notes.append(f"AVX-512 row failed (exit {done.returncode}): {tail}")
        return
    reported = json.loads(lines[-1][len(SPEED_PREFIX) :])
    same = reported.pop("output_digest") == output_digest(models_by_name[model_name](), scheme)
    label = f"{scheme}, OpenBLAS's own kernels"
    _speed_row(table, model_name, label, Speed(**reported), judged=True)
    overrides = ", ".join(f"{k}={os.environ[k]}" for k in OPENBLAS_OVERRIDES if k in os.environ)
    table.notes.append(
        f"{label}: a separate process without this machine's {overrides} (which pin numpy's "
        "OpenBLAS to older kernels); engine output bit-identical to the other row's: "
        f"{'yes' if same else 'NO'}"
    )


def _openblas_overridden() -> bool:
    """True when numpy's BLAS is OpenBLAS and the environment pins its core type."""
    from threadpoolctl import threadpool_info

    blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    openblas = bool(blas) and blas[0].get("internal_api") == "openblas"
    return openblas and any(k in os.environ for k in OPENBLAS_OVERRIDES)


def run() -> list[Table]:
    return [exactness_table(), speed_table()]


def output_digest(model: Path, scheme: str) -> str:
    """SHA-256 of the engine's output on the speed sample (to compare BLAS kernel choices)."""
    from eightbit.engine import execute, prepare

    program = prepare(quantized(model, scheme))
    feeds = {program.inputs[0]: np.ascontiguousarray(images.evaluation_set()[:1])}
    outputs = execute(program, feeds)
    return hashlib.sha256(b"".join(outputs[name].tobytes() for name in program.outputs)).hexdigest()


def main(argv: list[str]) -> int:
    """``python -m benchmarks.engine MODEL SCHEME``: one speed row, as ``SPEED {json}``."""
    model_name, scheme = argv
    model = MODELS[model_name]()
    measured = asdict(measure_speed(model, scheme))
    measured["output_digest"] = output_digest(model, scheme)
    print(SPEED_PREFIX + json.dumps(measured), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
