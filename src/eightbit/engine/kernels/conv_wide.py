"""The fast Conv sums of a 16-bit input (docs/numerics.md §E.13), exact in float64.

The 8-bit fast path (``conv``) cuts its reductions so that float32 stays exact; with
|x − z_x| <= 32768 a float32 chunk would hold 4 terms. float64 needs no cut: every partial
sum of a row, in any order BLAS adds, is an integer of magnitude at most
Σ_k |x_k − z_x| · |w'_k| <= K · 2^22, and Prepare proved K · 2^22 < 2^39 (``fits_wide``),
far below 2^53 where float64 stops holding every integer. So one float64 GEMM per group
(im2col, tap-major as in ``conv``) gives the int64 sums of the definition bit for bit, and a
depthwise Conv one float64 multiply-add per tap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eightbit.engine.kernels.window import Window, padded, tap_views


@dataclass(frozen=True, eq=False)
class WideConv:
    """The centred weights w' = w − z_w as float64, laid out once for the sums."""

    matrix: np.ndarray  # (G, C_out/G, taps · C_in/G), tap-major
    depthwise: np.ndarray | None  # (C, taps) when every group is one channel

    @classmethod
    def of(cls, weight: np.ndarray, group: int) -> WideConv:
        """From the centred int64 weight (C_out, C_in/G, kernel...)."""
        out_channels, group_channels = weight.shape[:2]
        flat = weight.reshape(out_channels, group_channels, -1).astype(np.float64)
        depthwise = None
        if group_channels == 1 and out_channels == group:
            depthwise = np.ascontiguousarray(flat[:, 0, :])
        tap_major = np.swapaxes(flat, 1, 2).reshape(group, out_channels // group, -1)
        return cls(np.ascontiguousarray(tap_major), depthwise)

    def sums(self, x: np.ndarray, x_zero: int, window: Window, group: int) -> np.ndarray:
        """Σ_k (x_k − z_x) · w'_k for every output, (N, C_out, out...) float64, exact."""
        pads, out_shape = window.resolve(x.shape[2:])
        source = padded(x.astype(np.float64) - x_zero, pads, 0.0)  # a pad cell is real 0
        taps = [cells for _, cells in tap_views(source, window, out_shape)]
        batch, channels = x.shape[:2]
        if self.depthwise is not None:
            total = np.zeros((batch, channels, *out_shape))
            column_shape = (channels, *([1] * len(out_shape)))
            for index, cells in enumerate(taps):
                total += cells * self.depthwise[:, index].reshape(column_shape)
            return total
        group_channels = channels // group
        positions = int(np.prod(out_shape))
        columns = np.empty((batch, group, len(taps), group_channels, positions))
        for index, cells in enumerate(taps):
            columns[:, :, index] = cells.reshape(batch, group, group_channels, positions)
        flat = columns.reshape(batch, group, len(taps) * group_channels, positions)
        return np.matmul(self.matrix, flat).reshape(batch, -1, *out_shape)
