"""``finetune``: quantization-aware fine-tuning by distillation (docs/numerics.md §T.5).

Starts from the post-training result (the prepared float model, its ranges and plan),
trains the weights and the activation scales through the plan's grids against the float
model's outputs on the calibration samples, and writes the result back as a float model,
ranges and a plan that ``to_qdq`` exports in the usual QDQ form. The exported model is
judged on samples held back from training; it replaces the start only when it is better
there. torch is an optional extra, imported only when the step runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx

from eightbit.analysis.metrics import sqnr_db
from eightbit.calibrate import Ranges
from eightbit.calibrate.data import DataLike
from eightbit.errors import ConfigError
from eightbit.export import to_qdq
from eightbit.graph import Graph, make_session
from eightbit.improve.measure import read_samples
from eightbit.improve.presets import DEFAULT_FINETUNE_STEPS
from eightbit.improve.progress import layer_progress
from eightbit.plan import QuantPlan, make_plan
from eightbit.steps import StepReport
from eightbit.validators import require_int

if TYPE_CHECKING:
    from eightbit.improve.finetune_net import FakeQuantNet
    from eightbit.improve.finetune_train import Trained

__all__ = [
    "DEFAULT_FINETUNE_STEPS",
    "NO_TORCH",
    "FinetuneOptions",
    "Finetuned",
    "finetune",
    "require_torch_for_finetune",
]

NO_TORCH = "fine-tuning (--finetune) needs PyTorch: pip install 'eightbit[torch]'"
# Every this many samples, at least one batch, is held back from training (§T.5).
HELD_BACK_EVERY = 8


@dataclass(frozen=True)
class FinetuneOptions:
    """The schedule of §T.5: ``steps`` batches of ``batch`` samples at most (early stop after
    ``patience`` measurements every ``eval_every`` steps without a held-back gain); Adam's
    steps for the weights, affine scales (relative to their start) and pow2 exponents;
    ``samples``: how many calibration samples to read (None: all); ``warmup``: the fraction
    of the steps the rates rise over; ``feature_weight``: λ of the intermediate features'
    term (T.7), 0 for the outputs alone."""

    steps: int = DEFAULT_FINETUNE_STEPS
    batch: int = 16
    weight_lr: float = 0.003
    scale_lr: float = 1e-2
    exponent_lr: float = 1e-2
    eval_every: int = 10
    patience: int = 5
    samples: int | None = None
    seed: int = 0
    warmup: float = 0.1
    feature_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "eval_every", "patience"):
            require_int(name, getattr(self, name), 1)
        if self.samples is not None:
            require_int("samples", self.samples, 2)
        if not isinstance(self.warmup, (int, float)) or not 0 <= self.warmup <= 1:
            raise ConfigError(f"'warmup' must be a number in [0, 1] (got {self.warmup!r})")
        for name in ("weight_lr", "scale_lr", "exponent_lr", "feature_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"'{name}' must be a number >= 0 (got {value!r})")


@dataclass(frozen=True)
class Finetuned:
    """The step's result: the float ``model``, its ``ranges``, ``plan`` and ``qdq`` model
    (the ones given when training did not beat them), and its ``report``."""

    model: onnx.ModelProto
    ranges: Ranges
    plan: QuantPlan
    qdq: onnx.ModelProto
    report: StepReport


def require_torch_for_finetune() -> None:
    """ConfigError naming the install command when torch is not installed."""
    if importlib.util.find_spec("torch") is None:
        raise ConfigError(NO_TORCH)


def finetune(
    model: onnx.ModelProto,
    float_model: onnx.ModelProto,
    plan: QuantPlan,
    ranges: Ranges,
    qdq: onnx.ModelProto,
    data: DataLike,
    options: FinetuneOptions = FinetuneOptions(),
    *,
    separate_joins: bool = True,
    threads: int | None = None,
    progress: bool = False,
) -> Finetuned:
    """Fine-tune ``model`` (prepared, with ``plan``, ``ranges`` and its export ``qdq``)
    toward ``float_model``'s outputs on ``data`` (§T.5).

    ``threads``: torch's and ONNX Runtime's (None: their defaults). The report gives the
    first output's SQNR of the exported models on the held-back samples before and after.
    """
    require_torch_for_finetune()
    started = time.perf_counter()
    start = Finetuned(model, ranges, plan, qdq, StepReport("finetune", 0.0, None, None))
    inputs, names = _read_inputs(data, model, options)
    count = len(inputs[0])
    if count < 2:
        return _done(start, started, None, None, ("skipped: fewer than 2 calibration samples",))
    held_back = _held_back(count, options.batch)
    targets = _run(float_model, names, inputs, threads)
    before = _sqnr(qdq, names, inputs, targets, held_back, threads)
    with _torch_threads(threads):
        trained, summary = _train(
            model, plan, ranges, inputs, targets, held_back, options, progress
        )
    new_model, new_ranges = trained.trained_model(), trained.learned_ranges(ranges)
    new_plan = make_plan(Graph(new_model), new_ranges, plan.config, separate_joins=separate_joins)
    new_qdq = to_qdq(new_model, new_plan)
    after = _sqnr(new_qdq, names, inputs, targets, held_back, threads)
    notes = [
        f"{summary.steps} steps of {options.batch} on {count - len(held_back)} samples, "
        f"{len(held_back)} held back; best at step {summary.best_step}"
        + (" (stopped early)" if summary.stopped_early else "")
    ]
    if not after > before:
        notes.append(
            f"kept the starting plan: the fine-tuned model gave {after:.2f} dB on the "
            f"held-back samples, the start {before:.2f} dB"
        )
        return _done(start, started, before, before, tuple(notes))
    result = Finetuned(new_model, new_ranges, new_plan, new_qdq, start.report)
    return _done(result, started, before, after, tuple(notes))


def _train(
    model: onnx.ModelProto,
    plan: QuantPlan,
    ranges: Ranges,
    inputs: list[np.ndarray],
    targets: list[np.ndarray],
    held_back: np.ndarray,
    options: FinetuneOptions,
    progress: bool,
) -> tuple[FakeQuantNet, Trained]:
    from eightbit.improve.finetune_features import FloatFeatures  # torch: only when it runs
    from eightbit.improve.finetune_net import FakeQuantNet
    from eightbit.improve.finetune_train import Schedule, train

    net = FakeQuantNet(model, plan, ranges)
    schedule = Schedule(
        options.steps, options.batch, options.weight_lr, options.scale_lr,
        options.exponent_lr, options.eval_every, options.patience, options.seed,
        options.warmup, options.feature_weight,
    )  # fmt: skip
    features = FloatFeatures(model, net.feature_names()) if options.feature_weight else None
    with layer_progress(options.steps, progress, "fine-tuning") as advance:
        summary = train(net, inputs, targets, held_back, schedule, advance, features)
    return net, summary


def _read_inputs(
    data: DataLike, model: onnx.ModelProto, options: FinetuneOptions
) -> tuple[list[np.ndarray], list[str]]:
    graph = Graph(model)
    batches = read_samples(data, graph, options.samples or 2**31)
    names = [info.name for info in graph.inputs]
    arrays = [np.concatenate([batch[name] for batch in batches]) for name in names]
    return arrays, names


def _held_back(count: int, batch: int) -> np.ndarray:
    """The last eighth of the samples (at least one batch, at most half): never trained on."""
    size = min(max(count // HELD_BACK_EVERY, min(batch, count // 2)), count // 2)
    return np.arange(count - max(size, 1), count)


def _run(
    model: onnx.ModelProto, names: list[str], inputs: list[np.ndarray], threads: int | None
) -> list[np.ndarray]:
    session = make_session(model, threads=threads)
    outputs: list[list[np.ndarray]] = []
    for start in range(0, len(inputs[0]), 32):
        feed = {name: array[start : start + 32] for name, array in zip(names, inputs, strict=True)}
        outputs.append([np.asarray(o, np.float32) for o in session.run(None, feed)])
    return [np.concatenate(parts) for parts in zip(*outputs, strict=True)]


def _sqnr(
    qdq: onnx.ModelProto,
    names: list[str],
    inputs: list[np.ndarray],
    targets: list[np.ndarray],
    held_back: np.ndarray,
    threads: int | None,
) -> float:
    """The first output's SQNR of the exported ``qdq`` on the held-back samples."""
    held = [array[held_back] for array in inputs]
    return sqnr_db(targets[0][held_back], _run(qdq, names, held, threads)[0])


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _done(
    result: Finetuned,
    started: float,
    before: float | None,
    after: float | None,
    notes: tuple[str, ...],
) -> Finetuned:
    seconds = time.perf_counter() - started
    report = StepReport("finetune", seconds, before, after, notes=notes)
    return Finetuned(result.model, result.ranges, result.plan, result.qdq, report)
