"""The only place the benchmark calls eightbit.

eightbit's quantizer is being written while this harness is, so each eightbit row goes through
one small function here. When eightbit's API is missing (ImportError) or not finished
(NotImplementedError), the function raises ``Unavailable`` and the runner prints the row as
"not available" with the reason instead of failing the whole benchmark.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from benchmarks.feeds import NpyBatches

EIGHTBIT_METHODS = ("minmax", "percentile", "entropy", "mse")


class Unavailable(RuntimeError):
    """eightbit does not provide what this row needs yet."""


def eightbit_version() -> str | None:
    try:
        import eightbit
    except ImportError:
        return None
    return str(getattr(eightbit, "__version__", "unknown"))


def _config(method: str, samples: int, batch_size: int) -> Any:
    try:
        from eightbit.calibrate import CalibrationConfig
    except ImportError as exc:
        raise Unavailable(f"eightbit.calibrate API not importable: {exc}") from exc
    return CalibrationConfig(method=cast(Any, method), samples=samples, batch_size=batch_size)


def eightbit_calibrate(
    model: Path, data: NpyBatches, method: str, samples: int, threads: int
) -> Any:
    """``eightbit calibrate``: the activations quantization reads; returns its ``Ranges``."""
    config = _config(method, samples, data.batch_size)
    from eightbit.calibrate import calibrate
    from eightbit.graph import Graph, load_model, normalize
    from eightbit.plan import activation_tensors_to_calibrate
    from eightbit.quant import QuantConfig

    prepared = normalize(load_model(str(model)))
    tensors = activation_tensors_to_calibrate(Graph(prepared), QuantConfig())
    try:
        return calibrate(prepared, data, config, tensors=tensors, threads=threads, normalized=True)
    except NotImplementedError as exc:
        raise Unavailable(f"eightbit calibrate({method!r}) not implemented: {exc}") from exc


def eightbit_quantize(
    model: Path,
    output: Path,
    calibration: NpyBatches,
    method: str,
    threads: int,
    preset: str = "default",
    min_sqnr: float | None = None,
    max_latency: float | None = None,
) -> list[tuple[str, float]]:
    """Quantize ``model`` to a QDQ ONNX file at ``output`` with eightbit's defaults.

    The default ``QuantConfig`` matches the baselines' setting: per-channel int8 weights,
    uint8 affine activations (docs/numerics.md §Q1). This is the one call users make
    (``eightbit.quantize``), with the quick check off so that every sample calibrates, as
    the baselines' do. ``preset``: the improvement steps; ``min_sqnr``/``max_latency``: the
    fallback budget and its latency cap, if any. Returns (step, seconds) of each step.
    """
    config = _config(method, calibration.count, calibration.batch_size)
    try:
        import eightbit
        from eightbit.improve.presets import preset as improve_preset
    except ImportError as exc:
        raise Unavailable(f"eightbit not importable: {exc}") from exc
    result = eightbit.quantize(
        str(model),
        calibration,
        calibration=config,
        check_samples=0,
        threads=threads,
        improve=improve_preset(preset, min_sqnr=min_sqnr, max_latency=max_latency),
    )
    result.save(output)
    return [(step.name, step.seconds) for step in result.plan.steps]


def eightbit_default(
    model: Path, output: Path, calibration: NpyBatches, threads: int
) -> dict[str, Any]:
    """``eightbit.quantize`` exactly as a user calls it: the model and the .npy file of
    samples, every option at its default (preset ``default``; the quick check holds back its
    share of the samples, which eightbit can only do for data of known length). Returns the
    steps' times and the quick check's verdict, so that the zoo can set what eightbit said
    beside what it measured.
    """
    try:
        import eightbit
    except ImportError as exc:
        raise Unavailable(f"eightbit not importable: {exc}") from exc
    if calibration.count != calibration.shape[0]:
        raise ValueError(f"{calibration.path}: the zoo gives eightbit whole files of samples")
    result = eightbit.quantize(str(model), str(calibration.path), threads=threads)
    result.save(output)
    check = result.check.to_dict() if result.check is not None else None
    return {"steps": [(step.name, step.seconds) for step in result.plan.steps], "check": check}
