"""``calibrate``: run the float model on data and turn what it computes into ``Ranges``.

The model runs in ONNX Runtime with every requested tensor exposed as an output, one batch
at a time; then the observers fold that batch in, one tensor per task on a thread pool
(numpy releases the GIL in the heavy loops), and the batch is dropped before the next run.
Inference and observation alternate rather than overlap: each uses all cores in turn, so
neither starves the other of a core, and only one batch of activations is alive at a time.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx

from eightbit.calibrate.clipping import select_range
from eightbit.calibrate.config import CalibrationConfig, ImageOptions
from eightbit.calibrate.data import DataLike, DataSource, require_variation
from eightbit.calibrate.histogram import NonFiniteError
from eightbit.calibrate.observers import HistogramObserver, MinMaxObserver, make_observer
from eightbit.calibrate.progress import sample_progress
from eightbit.calibrate.ranges import Ranges, TensorRange
from eightbit.calibrate.sources import open_data
from eightbit.errors import ConfigError, DataError
from eightbit.graph import Graph, exposing_session, normalize
from eightbit.graph.quantized import load_float_model
from eightbit.graph.run_size import samples_per_run

Observer = HistogramObserver | MinMaxObserver
# Runs the model on one batch: input arrays in, every observed tensor out.
Run = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class Tap(Protocol):
    """What another step keeps of calibration's pass (``calibrate(tap=)``): ``tensors``
    are exposed beside the observed ones, and each run's values are shown to it with the
    index of the run's first sample, before they are dropped."""

    @property
    def tensors(self) -> Sequence[str]: ...

    def __call__(self, values: Mapping[str, np.ndarray], first: int) -> None: ...

    def held_back(self, values: Mapping[str, np.ndarray]) -> None:
        """One run of ``calibrate(held_back=)``'s samples, in order (never observed)."""


def calibrate(
    model: str | os.PathLike[str] | onnx.ModelProto,
    data: DataLike,
    config: CalibrationConfig = CalibrationConfig(),  # noqa: B008 (frozen, so sharing is safe)
    *,
    tensors: Sequence[str] | None = None,
    threads: int | None = None,
    image: ImageOptions | None = None,
    progress: bool = False,
    normalized: bool = False,
    tap: Tap | None = None,
    held_back: Iterable[Mapping[str, np.ndarray]] = (),
) -> Ranges:
    """Observe the float activations of ``model`` on ``data`` and select their ranges.

    ``data`` is anything ``open_data`` reads: a path (.npz, .npy, image folder), an array,
    a dict of arrays, or an iterable of those (one sample or one batch per item).
    ``tensors`` are the tensors to calibrate (default: every float activation, inputs
    included). The model is normalized first (eightbit.graph.normalize) unless
    ``normalized`` says it already is, so tensor names refer to the normalized graph.
    ``threads`` is the thread count of ONNX Runtime and of the observers (None: ONNX
    Runtime's own choice, and one observer thread per core). ``tap``: a step that reads
    the same pass (``Tap``) instead of running the model again (§C.10); ``held_back``:
    batches run through the same session after calibration's and shown only to
    ``tap.held_back``, never observed (the quick check's float outputs, §C.10.3).
    """
    if not isinstance(config, CalibrationConfig):
        raise ConfigError(f"'config' must be a CalibrationConfig (got {type(config).__name__})")
    run, names, source, run_size = _prepare(
        model, data, config, tensors, threads, image, normalized, () if tap is None else tap.tensors
    )
    observers = {name: make_observer(config) for name in names}
    workers = threads or os.cpu_count() or 1
    observe_all(
        source, run, observers, workers=workers, progress=progress, run_size=run_size, tap=tap
    )
    if source.used == 0:
        raise DataError(_no_samples_message(source))
    require_variation(source)
    if tap is not None:
        for batch in held_back:
            for _, part in batch_slices(dict(batch), run_size):
                tap.held_back(run(part))
    return select_ranges(observers, config, samples=source.used, skipped=source.skipped)


def _run_size(graph: Graph, names: Sequence[str], config: CalibrationConfig) -> int | None:
    """(C.9.1) Samples per run; None (whole batches) with the moving average of
    ``minmax``, which depends on how the samples are split into batches."""
    if config.moving_average is not None:
        return None
    return samples_per_run(graph, config.batch_size, names)


def _prepare(
    model: str | os.PathLike[str] | onnx.ModelProto,
    data: DataLike,
    config: CalibrationConfig,
    tensors: Sequence[str] | None,
    threads: int | None,
    image: ImageOptions | None,
    normalized: bool,
    tapped: Sequence[str] = (),
) -> tuple[Run, list[str], DataSource, int | None]:
    """The model as a function of one batch, the tensors it returns, the data, and the
    samples per run (§C.9).

    Everything is checked before the session is built; the model protos are dropped on
    return (the session holds its own copy), so they do not add to the memory in use
    while batches run.
    """
    folder = None
    if normalized and isinstance(model, onnx.ModelProto):
        prepared = model  # loaded and checked by the caller, only read here: no copy
    elif normalized:
        # (C.11) A normalized model's file: its weights are never read here; ONNX Runtime
        # reads them from beside it and holds the only copy in memory.
        folder = Path(model).parent
        prepared = onnx.load(os.fspath(model), load_external_data=False)
    else:
        prepared = normalize(load_float_model(model))
    graph = Graph(prepared)
    names = requested_tensors(graph, tensors)
    source = open_data(
        data,
        graph.inputs,
        batch_size=config.batch_size,
        image=image,
        skip_nonfinite=config.skip_nonfinite,
        limit=config.samples,
    )
    exposed = [*names, *(name for name in tapped if name not in names)]
    run_size = _run_size(graph, exposed, config)
    run = model_runner(prepared, graph, exposed, threads, folder)
    return run, names, source, run_size


def model_runner(
    prepared: onnx.ModelProto,
    graph: Graph,
    names: Sequence[str],
    threads: int | None,
    folder: Path | None = None,
) -> Run:
    """The normalized model as a function of one batch, returning the tensors ``names``
    (``folder``: where the weights ``prepared`` refers to as external data are)."""
    input_names = {info.name for info in graph.inputs}
    computed = [name for name in names if name not in input_names]
    fed = [name for name in names if name in input_names]
    session = exposing_session(prepared, computed, threads=threads, lean=True, folder=folder)

    def run(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = session.run(computed, batch) if computed else []
        values = dict(zip(computed, outputs, strict=True))
        values.update((name, batch[name]) for name in fed)
        return values

    return run


def requested_tensors(graph: Graph, tensors: Sequence[str] | None) -> list[str]:
    """The tensors to calibrate, checked: known, float, and computed at run time."""
    activations = graph.float_activations()
    if tensors is None:
        if not activations:
            raise ConfigError("the model has no float activations; there is nothing to calibrate")
        return activations
    if isinstance(tensors, str):
        raise ConfigError(f"'tensors' must be a sequence of names (got the string {tensors!r})")
    names = list(dict.fromkeys(tensors))
    runtime = set(activations)
    for name in names:
        if name in runtime:
            continue
        info = graph.info(name)
        if info is None and graph.producer(name) is None:
            close = difflib.get_close_matches(name, activations, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ConfigError(f"the model has no tensor {name!r} to calibrate{hint}")
        if graph.is_constant(name):
            raise ConfigError(
                f"tensor {name!r} is a constant; weights are quantized from their exact "
                "values and need no calibration"
            )
        if info is not None and not info.is_float:
            raise ConfigError(
                f"tensor {name!r} holds {info.dtype} values; only float tensors are calibrated"
            )
    return names


def observe_all(
    source: DataSource,
    run: Run,
    observers: dict[str, Observer],
    *,
    workers: int,
    progress: bool,
    run_size: int | None = None,
    tap: Tap | None = None,
) -> None:
    """Run every batch, then fold it into the observers on ``workers`` threads (module doc).

    ``run_size``: at most that many samples per run (§C.9; None: whole batches); the
    observers see each slice with its place in the batch, so the statistics are the same.
    """
    with (
        sample_progress(source.samples, "calibrating", show=progress) as advance,
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eightbit-observe") as pool,
    ):
        first = source.offset
        for batch in source:
            for start, part in batch_slices(batch, run_size):
                count = len(next(iter(part.values())))
                values = run(part)
                if tap is not None:
                    tap(values, first - source.offset)
                _observe(pool, observers, values, first, count, start)
                del values  # release this run's activations before the next one allocates
                first += count
                advance(count)


def batch_slices(
    batch: dict[str, np.ndarray], run_size: int | None
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """(index of the first sample in ``batch``, the slice) for slices of ``run_size``
    samples (views, not copies); the batch itself when it fits or ``run_size`` is None."""
    count = len(next(iter(batch.values())))
    if run_size is None or count <= run_size:
        yield 0, batch
        return
    for start in range(0, count, run_size):
        yield start, {name: array[start : start + run_size] for name, array in batch.items()}


def _observe(
    pool: ThreadPoolExecutor,
    observers: dict[str, Observer],
    values: dict[str, np.ndarray],
    first: int,
    count: int,
    in_batch: int = 0,
) -> None:
    # Largest tensors first, so that the last task to finish is a short one.
    order = sorted(observers, key=lambda name: -values[name].size)
    tasks = {name: pool.submit(observers[name].update, values[name], in_batch) for name in order}
    for name, task in tasks.items():
        try:
            task.result()
        except NonFiniteError:
            raise DataError(
                f"tensor {name!r} is NaN or infinite for samples {first}..{first + count - 1}: "
                "the float model overflows on this data; check its preprocessing "
                "(scale, mean, std)"
            ) from None


def select_ranges(
    observers: dict[str, Observer], config: CalibrationConfig, *, samples: int, skipped: int
) -> Ranges:
    tensors = {}
    histograms = {}
    for name, observer in observers.items():
        summary = observer.histogram if isinstance(observer, HistogramObserver) else observer
        low, high = select_range(
            summary, config.method, percentile=config.percentile, bits=config.bits
        )
        tensors[name] = TensorRange(low, high, observer.min, observer.max)
        if isinstance(observer, HistogramObserver):
            histograms[name] = observer.histogram
    options: dict[str, float] = {
        "percentile": config.percentile,
        "bits": config.bits,
        "bins": config.bins,
    }
    if config.moving_average is not None:
        options["moving_average"] = config.moving_average
    if histograms and config.histogram_values_per_sample is not None:
        options["histogram_values_per_sample"] = config.histogram_values_per_sample
    return Ranges(
        config.method,
        tensors,
        samples,
        skipped=skipped,
        histograms=histograms,
        options=options,
    )


def _no_samples_message(source: DataSource) -> str:
    if source.skipped:
        return f"all {source.skipped} samples of {source.label} contain NaN or infinity"
    if source.dropped:
        return (
            f"the model's fixed batch of {source.batch_size} needs at least that many samples; "
            f"{source.label} has {source.dropped}"
        )
    return f"{source.label} holds no samples"
