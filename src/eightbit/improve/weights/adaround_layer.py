"""Learned rounding of one layer: the math of docs/numerics.md §R.1, §R.4, §R.5.

A layer arrives as a ``LayerProblem``: its weights in the canonical layout
``[groups, channels per group, inputs per channel]``, their scales and bounds, and a pool
of input rows with their float targets (``adaround_rows`` builds it from a model).
``solve_layer`` optimizes the soft rounding variables with Adam in torch and returns the
integers to store, never worse than nearest rounding on the pool (§R.5). torch is imported
only inside ``solve_layer``: it is an optional extra.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from eightbit.errors import ConfigError
from eightbit.improve.weights.row_errors import RowErrors
from eightbit.validators import (
    is_finite,
    is_real,
    require_at_least_zero,
    require_int,
    require_positive,
)

# Rectified sigmoid stretch (eq. R.4): h reaches exactly 0 and 1.
ZETA = 1.1
GAMMA = -0.1
# Iterations timed before the time budget may shorten the schedule (§R.6), after a few
# untimed ones (the first steps allocate and start threads), and how often it is re-checked.
PROBE_ITERATIONS = 10
_UNTIMED_ITERATIONS = 2
_CHECK_EVERY = 100
# Rows per chunk when the error is summed in float64 over the whole pool.
_ERROR_CHUNK = 4096


@dataclass(frozen=True)
class AdaRoundOptions:
    """How hard learned rounding works on each layer (docs/numerics.md §R.4, §R.6).

    - ``iterations``: Adam steps per layer; ``batch_rows``: rows per step;
    - ``samples``: calibration samples the layers' rows are drawn from (the first ones);
    - ``rows``: rows in each layer's pool (patches for a Conv, samples for a Gemm);
    - ``layer_seconds``: time budget of one layer's optimization; the schedule is shortened
      to fit it (None: no limit);
    - ``learning_rate``, ``regularization`` (λ), ``beta`` (start, end), ``warm_start``
      (share of iterations without the regularizer): the schedule of eq. R.5;
    - ``seed``: row sampling and batch order, so a run can be repeated exactly.
    """

    iterations: int = 1000
    batch_rows: int = 128
    samples: int = 128
    rows: int = 8192
    layer_seconds: float | None = 20.0
    learning_rate: float = 1e-2
    regularization: float = 0.01
    beta: tuple[float, float] = (20.0, 2.0)
    warm_start: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_rows", "samples", "rows"):
            require_int(name, getattr(self, name), 1)
        if self.layer_seconds is not None:
            no_limit = ", or None for no limit"
            require_positive("layer_seconds", self.layer_seconds, "a number of seconds", no_limit)
        require_positive("learning_rate", self.learning_rate)
        require_at_least_zero("regularization", self.regularization)
        start, end = self.beta
        if not (_positive(start) and _positive(end) and start >= end):
            raise ConfigError(
                f"'beta' must be (start, end) with start >= end > 0 (got {self.beta!r})"
            )
        if not (is_real(self.warm_start) and 0.0 <= self.warm_start < 1.0):
            raise ConfigError(
                f"'warm_start' must be a fraction in [0, 1) (got {self.warm_start!r})"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"'seed' must be an integer (got {self.seed!r})")


@dataclass(frozen=True, eq=False)
class LayerProblem:
    """One layer as rows (§R.3), canonical layout: G groups, C channels each, K inputs each.

    ``weight`` [G, C, K], ``scale`` [G, C, 1] and ``bound`` [G, C, 1] (B of eq. R.1) describe
    the weights; ``bias`` [G, C] or None; ``inputs`` [M, G, K] are the quantized network's
    input rows (x̂), ``targets`` [M, G, C] the float layer's outputs (y); ``clamp`` is the
    folded activation's [min, max], None for none. ``pinned`` [G, C, K] marks weights that
    keep nearest rounding: the largest of each scale group, whose integer fixes the scale.
    """

    weight: np.ndarray
    scale: np.ndarray
    bound: np.ndarray
    bias: np.ndarray | None
    inputs: np.ndarray
    targets: np.ndarray
    clamp: tuple[float, float] | None = None
    pinned: np.ndarray | None = None

    def __post_init__(self) -> None:
        groups, channels, width = self.weight.shape
        expected = {
            "scale": (self.scale.shape, (groups, channels, 1)),
            "bound": (self.bound.shape, (groups, channels, 1)),
            "inputs": (self.inputs.shape[1:], (groups, width)),
            "targets": (self.targets.shape[1:], (groups, channels)),
        }
        if self.bias is not None:
            expected["bias"] = (self.bias.shape, (groups, channels))
        if self.pinned is not None:
            expected["pinned"] = (self.pinned.shape, (groups, channels, width))
        for name, (got, want) in expected.items():
            if tuple(got) != want:
                raise ValueError(f"layer problem: {name} has shape {got}, expected {want}")
        if self.inputs.shape[0] != self.targets.shape[0] or self.inputs.shape[0] == 0:
            raise ValueError("layer problem: inputs and targets need the same, non-zero row count")


@dataclass(frozen=True, eq=False)
class LayerSolution(RowErrors):
    """The integers chosen for one layer and what they cost (§R.5).

    ``q`` [G, C, K] int64; ``learned`` is False when nearest rounding was kept because the
    learned rounding was not better on the pool; ``iterations`` is the schedule length
    actually run (shorter than asked when the time budget cut it).
    """

    q: np.ndarray
    nearest_error: float
    error: float
    signal: float
    learned: bool
    iterations: int
    seconds: float


def grid_of(
    weight: np.ndarray, scale: np.ndarray, bound: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(⌊r⌋, r − ⌊r⌋, nearest q) of eq. R.1, with r = w / s divided in float32 as the export."""
    ratio = weight.astype(np.float32) / scale.astype(np.float32)
    floor = np.floor(ratio)
    nearest = np.clip(np.rint(ratio), -bound, bound).astype(np.int64)
    return floor.astype(np.int64), (ratio - floor).astype(np.float64), nearest


def reconstruction_error(problem: LayerProblem, q: np.ndarray) -> float:
    """E(q) of eq. R.7: Σ over the pool of ‖a(x̂ (s·q)ᵀ + b) − y‖², in float64."""
    weights = problem.scale.astype(np.float64) * q  # [G, C, K]
    transposed = np.transpose(weights, (0, 2, 1))  # [G, K, C]
    total = 0.0
    for start in range(0, problem.inputs.shape[0], _ERROR_CHUNK):
        rows = np.transpose(problem.inputs[start : start + _ERROR_CHUNK], (1, 0, 2))
        output = np.matmul(rows.astype(np.float64), transposed)  # [G, m, C]
        if problem.bias is not None:
            output += problem.bias.astype(np.float64)[:, None, :]
        if problem.clamp is not None:
            output = np.clip(output, *problem.clamp)
        target = np.transpose(problem.targets[start : start + _ERROR_CHUNK], (1, 0, 2))
        total += float(np.sum(np.square(output - target)))
    return total


def solve_layer(problem: LayerProblem, options: AdaRoundOptions) -> LayerSolution:
    """Learned rounding of one layer (eqs. R.4-R.6), kept only when it beats nearest (R.7)."""
    started = time.perf_counter()
    floor, rest, nearest = grid_of(problem.weight, problem.scale, problem.bound)
    choices, iterations = _optimize(problem, floor, rest, nearest, options)
    learned_q = np.clip(floor + choices, -problem.bound, problem.bound)
    if problem.pinned is not None:
        learned_q = np.where(problem.pinned, nearest, learned_q)
    nearest_error = reconstruction_error(problem, nearest)
    learned_error = reconstruction_error(problem, learned_q)
    learned = learned_error < nearest_error
    signal = float(np.sum(np.square(problem.targets.astype(np.float64))))
    return LayerSolution(
        q=learned_q if learned else nearest,
        nearest_error=nearest_error,
        error=learned_error if learned else nearest_error,
        signal=signal,
        learned=learned,
        iterations=iterations,
        seconds=time.perf_counter() - started,
    )


def _optimize(
    problem: LayerProblem,
    floor: np.ndarray,
    rest: np.ndarray,
    nearest: np.ndarray,
    options: AdaRoundOptions,
) -> tuple[np.ndarray, int]:
    """Adam on V (eq. R.5); returns the hard choices h ∈ {0, 1} (eq. R.6) and the iterations."""
    torch: Any = importlib.import_module("torch")
    generator = torch.Generator().manual_seed(options.seed)
    inputs = torch.from_numpy(np.ascontiguousarray(problem.inputs, dtype=np.float32))
    targets = torch.from_numpy(np.ascontiguousarray(problem.targets, dtype=np.float32))
    scale = torch.from_numpy(problem.scale.astype(np.float32))
    low = torch.from_numpy(-problem.bound.astype(np.float32))
    high = torch.from_numpy(problem.bound.astype(np.float32))
    base = torch.from_numpy(floor.astype(np.float32))
    bias = None if problem.bias is None else torch.from_numpy(problem.bias.astype(np.float32))
    pinned = None
    if problem.pinned is not None:
        # A pinned weight is stored at nearest: its choice h = q_n − ⌊r⌋ is fixed.
        fixed = nearest - floor
        pinned = (torch.from_numpy(problem.pinned), torch.from_numpy(fixed.astype(np.float32)))
    share = np.clip((rest - GAMMA) / (ZETA - GAMMA), 1e-6, 1.0 - 1e-6)
    v = torch.from_numpy(np.log(share / (1.0 - share)).astype(np.float32)).requires_grad_(True)
    optimizer = torch.optim.Adam([v], lr=options.learning_rate)
    rows = inputs.shape[0]
    batch = min(options.batch_rows, rows)
    total = options.iterations
    started = timed = time.perf_counter()
    step = 0
    while step < total:
        if step == _UNTIMED_ITERATIONS:
            timed = time.perf_counter()
        if options.layer_seconds is not None and _checkpoint(step):
            total = _affordable(step, total, started, timed, options.layer_seconds)
        index = torch.randint(0, rows, (batch,), generator=generator)
        h = torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)
        if pinned is not None:
            h = torch.where(pinned[0], pinned[1], h)
        weights = scale * torch.minimum(torch.maximum(base + h, low), high)
        output = _layer_output(torch, inputs[index], weights)
        if bias is not None:
            output = output + bias
        if problem.clamp is not None:
            output = torch.clamp(output, problem.clamp[0], problem.clamp[1])
        loss = torch.square(output - targets[index]).sum(dim=(1, 2)).mean()
        beta = _beta(step, total, options)
        if beta is not None and options.regularization > 0:
            decided = torch.pow(torch.abs(2.0 * h - 1.0), beta)
            loss = loss + options.regularization * torch.sum(1.0 - decided)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
    choices = (v.detach().numpy() >= 0.0).astype(np.int64)  # h(V) >= 1/2 (eq. R.6)
    return choices, total


def _checkpoint(step: int) -> bool:
    return step == PROBE_ITERATIONS or (step > PROBE_ITERATIONS and step % _CHECK_EVERY == 0)


def _affordable(step: int, total: int, started: float, timed: float, seconds: float) -> int:
    """The schedule length that fits ``seconds`` at the pace measured so far (never longer)."""
    now = time.perf_counter()
    per_step = (now - timed) / (step - _UNTIMED_ITERATIONS)
    left = seconds - (now - started)
    return max(PROBE_ITERATIONS, step, min(total, step + int(left / per_step)))


def _layer_output(torch: Any, rows: Any, weights: Any) -> Any:
    """Rows [M, G, K] times weights [G, C, K] per group: outputs [M, G, C].

    Depthwise layers (C = 1) are an elementwise product and a sum: a batched matrix
    product of G tiny matrices is several times slower.
    """
    groups, channels, _ = weights.shape
    if channels == 1:
        return (rows * weights[:, 0, :]).sum(dim=2, keepdim=True)
    if groups == 1:
        return torch.matmul(rows[:, 0, :], weights[0].T)[:, None, :]
    return torch.einsum("mgk,gck->mgc", rows, weights)


def _beta(step: int, total: int, options: AdaRoundOptions) -> float | None:
    """β of the regularizer at ``step`` (None during the warm start): linear decay (§R.4)."""
    warm = int(options.warm_start * total)
    if step < warm:
        return None
    start, end = options.beta
    progress = (step - warm) / max(total - warm, 1)
    return end + (start - end) * (1.0 - progress)


def _positive(value: object) -> bool:
    return is_finite(value) and value > 0  # type: ignore[operator]
