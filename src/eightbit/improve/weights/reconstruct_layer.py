"""Layer-wise reconstruction of one layer: the math of docs/numerics.md §I.8.

A layer arrives as normal equations over its rows (``LayerSums``): ``H = Σ x̂₁ x̂₁ᵀ`` and
``Σ x̂₁ yᵀ`` per group, where ``x̂₁ = [x̂, 1]`` is an input row as the quantized network
computes it (with a one for the bias) and ``y`` the float layer's output on the float
network's input. ``solve_layer`` finds the weights and bias that map the quantized inputs
to the float outputs (ridge least squares, damped toward the float weights, eq. I.11),
rounds the weights onto the plan's per-channel grid with GPTQ's error feedback (eq. I.12),
and keeps the result only when its row error is below nearest rounding's (eq. I.13).
numpy only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from threadpoolctl import ThreadpoolController

from eightbit.improve.weights.row_errors import RowErrors

_BLAS = ThreadpoolController()


@contextlib.contextmanager
def blas_threads_for(groups: int) -> Iterator[None]:
    """One BLAS thread for a layer of many groups (a depthwise one), the BLAS's own choice
    otherwise: numpy runs its G small products as G BLAS calls, and each call that starts
    threads pays for waking them. The same bits either way (§I.8.1)."""
    if groups <= 1:
        yield
        return
    with _BLAS.limit(limits=1, user_api="blas"):
        yield


@dataclass(eq=False)
class LayerSums:
    """Running sums over a layer's rows, canonical layout: G groups, C channels, K inputs.

    ``gram`` [G, K+1, K+1] = Σ x̂₁ x̂₁ᵀ, ``cross`` [G, K+1, C] = Σ x̂₁ yᵀ, ``targets`` [G] =
    Σ ‖y‖², all in float64.
    """

    gram: np.ndarray
    cross: np.ndarray
    targets: np.ndarray

    @classmethod
    def zeros(cls, groups: int, channels: int, width: int) -> LayerSums:
        return cls(
            gram=np.zeros((groups, width + 1, width + 1)),
            cross=np.zeros((groups, width + 1, channels)),
            targets=np.zeros(groups),
        )

    def add(
        self,
        inputs: np.ndarray,
        outputs: np.ndarray,
        keep: np.ndarray | None = None,
        *,
        with_bias: bool = True,
    ) -> None:
        """Fold rows: ``inputs`` [M, G, K], ``outputs`` [M, G, C], ``keep`` [M, G] bool.

        ``with_bias=False`` (a layer without a bias input): the bias column reads zeros,
        so the solution keeps the bias at its prior, zero.
        """
        mask = np.ones(inputs.shape[:2]) if keep is None else keep.astype(np.float64)
        one = np.full((*inputs.shape[:2], 1), 1.0 if with_bias else 0.0)
        extended = np.concatenate([inputs.astype(np.float64), one], axis=2) * mask[..., None]
        targets = outputs.astype(np.float64) * mask[..., None]
        grouped = np.ascontiguousarray(np.transpose(extended, (1, 2, 0)))  # [G, K+1, M]
        self.gram += np.matmul(grouped, np.transpose(grouped, (0, 2, 1)))
        self.cross += np.matmul(grouped, np.transpose(targets, (1, 0, 2)))
        self.targets += np.sum(np.square(targets), axis=(0, 2))

    def error(self, weight: np.ndarray, bias: np.ndarray) -> float:
        """Σ over the rows of ‖x̂ Wᵀ + b − y‖² (eq. I.13), from the sums."""
        augmented = np.concatenate([weight, bias[..., None]], axis=2).astype(np.float64)
        quadratic = float(np.sum(np.matmul(augmented, self.gram) * augmented))
        linear = float(np.sum(augmented * np.transpose(self.cross, (0, 2, 1))))
        return max(float(quadratic - 2.0 * linear + np.sum(self.targets)), 0.0)


@dataclass(frozen=True, eq=False)
class LayerGrid:
    """The plan's grid of one layer: ``scale`` and ``bound`` [G, C, 1] (B of eq. R.1);
    ``pinned`` [G, C, K]: the weights that keep ±B (the largest of each scale group, whose
    integer fixes the scale, R.2) with their signs, 0 elsewhere."""

    scale: np.ndarray
    bound: np.ndarray
    pinned: np.ndarray


@dataclass(frozen=True, eq=False)
class LayerSolution(RowErrors):
    """Integers [G, C, K], float bias [G, C], and the row errors of eq. I.13."""

    q: np.ndarray
    bias: np.ndarray
    nearest_error: float
    error: float
    signal: float
    reconstructed: bool


def nearest(weight: np.ndarray, grid: LayerGrid) -> np.ndarray:
    """Round to nearest on the grid (eq. R.1), divided in float32 as the export does."""
    ratio = weight.astype(np.float32) / grid.scale.astype(np.float32)
    return np.clip(np.rint(ratio), -grid.bound, grid.bound).astype(np.int64)


def least_squares(
    sums: LayerSums,
    weight: np.ndarray,
    bias: np.ndarray,
    damping: float,
    inverse: np.ndarray | None = None,
) -> np.ndarray:
    """[W | b] of eq. I.11: argmin ‖X̂₁ Aᵀ − Y‖² + λ‖A − A_f‖², per group; [G, C, K+1].

    λ = damping · mean of the Gram diagonal over the weight inputs (a tiny floor keeps a
    group whose inputs were all zero at its float weights). ``inverse``: (H + λI)⁻¹ when
    the caller has it (``solve_layer`` computes it once for this and ``gptq_round``; the
    damping keeps H + λI well conditioned, so a product with it is as good as a solve).
    """
    width = weight.shape[2]
    prior = np.concatenate([weight, bias[..., None]], axis=2).astype(np.float64)
    damped = _damped(sums, damping, width)
    rhs = sums.cross + damped.lam[:, None, None] * np.transpose(prior, (0, 2, 1))
    if inverse is None:
        return np.transpose(np.linalg.solve(damped.gram, rhs), (0, 2, 1))
    return np.transpose(np.matmul(inverse, rhs), (0, 2, 1))


# Columns rounded between two updates of the columns after them (GPTQ's lazy batches).
GPTQ_BLOCK = 128


def gptq_round(
    target: np.ndarray,
    gram: np.ndarray,
    grid: LayerGrid,
    block: int = GPTQ_BLOCK,
    inverse: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Integers and bias from the unrounded [W | b] ``target`` [G, C, K+1] (eq. I.12).

    Columns are rounded in order; each column's rounding error is spread over the columns
    not yet rounded through the upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU), which keeps
    ``(A − target) H (A − target)ᵀ`` small (Frantar et al. 2022). The bias column comes
    last and is never rounded (int32), so it takes what the weights could not.

    The updates are those of the column-by-column loop, applied lazily (GPTQ's §4, "lazy
    batch updates"): within a block of ``block`` columns each error updates the block's
    later columns at once, and the columns after the block receive the whole block's
    errors in one matrix product. Column j's value when it is rounded is the same sum of
    the same terms either way (only the order of the additions differs), and one product
    per block instead of one pass over the remaining columns per column is what makes a
    4 608-input layer take seconds rather than tens of them. ``inverse``: H⁻¹ when the
    caller has it.
    """
    groups, channels, columns = target.shape
    width = columns - 1
    inverse = np.linalg.inv(gram) if inverse is None else inverse
    upper = np.transpose(np.linalg.cholesky(inverse), (0, 2, 1))  # H⁻¹ = UᵀU
    work = target.astype(np.float64).copy()
    q = np.zeros((groups, channels, width), np.int64)
    scale = grid.scale[:, :, 0].astype(np.float64)
    bound = grid.bound[:, :, 0]
    for start in range(0, width, block):
        end = min(start + block, width)
        errors = np.zeros((groups, channels, end - start))
        for j in range(start, end):
            column = work[:, :, j]
            rounded = np.clip(np.rint(column / scale), -bound, bound)
            pinned = grid.pinned[:, :, j]
            rounded = np.where(pinned != 0, pinned * bound, rounded)
            q[:, :, j] = rounded
            error = (column - scale * rounded) / upper[:, None, j, j]
            errors[:, :, j - start] = error
            work[:, :, j + 1 : end] -= error[:, :, None] * upper[:, None, j, j + 1 : end]
        work[:, :, end:] -= np.matmul(errors, upper[:, start:end, end:])
    return q, work[:, :, width]


def solve_layer(
    sums: LayerSums, weight: np.ndarray, bias: np.ndarray, grid: LayerGrid, damping: float
) -> LayerSolution:
    """Reconstruct one layer (eqs. I.11, I.12), kept only when it beats nearest (I.13).

    ``weight`` [G, C, K] and ``bias`` [G, C] are the float layer's (the prior of the
    damping, and the fallback).
    """
    damped = _damped(sums, damping, weight.shape[2]).gram
    inverse = np.linalg.inv(damped)  # one inverse for both (§I.8.3)
    target = least_squares(sums, weight, bias, damping, inverse)
    q, new_bias = gptq_round(target, damped, grid, inverse=inverse)
    scale = grid.scale.astype(np.float64)
    nearest_q = nearest(weight, grid)
    nearest_error = sums.error(scale * nearest_q, bias.astype(np.float64))
    error = sums.error(scale * q, new_bias)
    better = error < nearest_error
    return LayerSolution(
        q=q if better else nearest_q,
        bias=new_bias if better else bias.astype(np.float64),
        nearest_error=nearest_error,
        error=error if better else nearest_error,
        signal=float(np.sum(sums.targets)),
        reconstructed=bool(better),
    )


def trimmed(residual: np.ndarray, keep_share: float) -> np.ndarray:
    """Rows to keep [M, G]: per group, those whose ‖residual‖² is within the ``keep_share``
    quantile (eq. I.10)."""
    norms = np.sum(np.square(residual.astype(np.float64)), axis=2)  # [M, G]
    if keep_share >= 1.0:
        return np.ones(norms.shape, bool)
    limit = np.quantile(norms, keep_share, axis=0, keepdims=True)
    return np.asarray(norms <= limit)


@dataclass(frozen=True, eq=False)
class _Damped:
    gram: np.ndarray
    lam: np.ndarray


def _damped(sums: LayerSums, damping: float, width: int) -> _Damped:
    diagonal = np.einsum("gkk->gk", sums.gram)[:, :width]
    mean = np.mean(diagonal, axis=1) if width else np.zeros(len(diagonal))
    lam = damping * mean + 1e-9 * max(float(np.max(np.einsum("gkk->gk", sums.gram))), 1.0)
    identity = np.eye(width + 1)[None]
    return _Damped(gram=sums.gram + lam[:, None, None] * identity, lam=lam)
