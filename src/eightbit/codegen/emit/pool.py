"""MaxPool, AveragePool and GlobalAveragePool (engine: ``kernels/pool.py``, §E.6).

    max:      y = max of the window's stored integers (padding never wins)
    average:  acc = Σ_window (q − z_x),   y = clamp(z_y + rescale(acc, M[n], t[n]))

``n`` is the number of cells the engine counts for the window (``window_counts``: input
cells, plus explicit padding with count_include_pad). It is a product of one count per
axis, so the C reads ``count_h[oy] · count_w[ox]`` from two small tables and picks the
multiplier Prepare made for that n: one rounding, no division.
"""

from __future__ import annotations

import numpy as np

from eightbit.codegen.c import Code, linear, literal, plus, smallest_type
from eightbit.codegen.emit.base import (
    Argument,
    Context,
    Layer,
    as_2d,
    centered,
    shifts,
    tensor_line,
)
from eightbit.engine import Step
from eightbit.engine.kernels.pool import AveragePoolStep, MaxPoolStep, window_counts
from eightbit.engine.kernels.window import Window
from eightbit.errors import ModelError

_LOWEST = {"int8": -128, "uint8": 0, "int16": -32768}


def _range_of(dtype: str) -> tuple[int, int]:
    """The stored range of an output type (8 or 16 bits)."""
    width = 65535 if dtype == "int16" else 255
    return _LOWEST[dtype], _LOWEST[dtype] + width


def _geometry(step: Step, window: Window, spatial: tuple[int, ...]) -> dict[str, tuple[int, int]]:
    rank = len(spatial)
    if rank not in (1, 2):
        raise ModelError(
            f"{step.kind} {step.node!r} is {rank}-D; generated C runs 1-D and 2-D pools"
        )
    pads, out = window.resolve(spatial)
    padded = [int(bool(pads[i] or pads[i + rank])) for i in range(rank)]
    return {
        "size": as_2d(spatial, 1),
        "out": as_2d(out, 1),
        "kernel": as_2d(window.kernel, 1),
        "strides": as_2d(window.strides, 1),
        "dilations": as_2d(window.dilations, 1),
        "begin": as_2d(pads[:rank], 0),
        "padded": as_2d(padded, 0),
    }


def _window_loops(
    code: Code, geometry: dict[str, tuple[int, int]], at: tuple[str, str], body: str
) -> None:
    """Loops over the taps of the window at output (oy, ox) = ``at`` that fall on input
    cells; ``body`` reads the cell at (iy, ix)."""
    with code.loops([("ky", geometry["kernel"][0])]) as (ky,):
        _coordinate(code, geometry, 0, at[0], ky, "iy")
        with code.loops([("kx", geometry["kernel"][1])]) as (kx,):
            _coordinate(code, geometry, 1, at[1], kx, "ix")
            code.line(body)


def _coordinate(
    code: Code, geometry: dict[str, tuple[int, int]], axis: int, out: str, tap: str, name: str
) -> None:
    stride, begin = geometry["strides"][axis], geometry["begin"][axis]
    dilation = geometry["dilations"][axis]
    code.line(f"const int32_t {name} = {linear([(out, stride), (tap, dilation)], -begin)};")
    if geometry["padded"][axis]:
        code.line(f"if ({name} < 0 || {name} >= {geometry['size'][axis]}) continue;")


def _describe(step: Step, geometry: dict[str, tuple[int, int]]) -> str:
    (kh, kw), (sh, sw) = geometry["kernel"], geometry["strides"]
    (bh, bw), (dh, dw) = geometry["begin"], geometry["dilations"]
    return (
        f"{step.kind} '{step.node}': kernel {kh}x{kw}, stride {sh}x{sw}, dilation {dh}x{dw}, "
        f"padding before {bh}x{bw}"
    )


def emit_pool(step: Step, context: Context) -> Layer:
    if isinstance(step, MaxPoolStep):
        return _emit_max(step, context)
    assert isinstance(step, AveragePoolStep)
    if step.window is None:
        return _emit_global(step, context)
    return _emit_average(step, step.window, context)


def _emit_max(step: MaxPoolStep, context: Context) -> Layer:
    (x,), (y,) = step.inputs, step.outputs
    x_shape = context.shape(x)
    geometry = _geometry(step, step.window, x_shape[2:])
    (h, w) = geometry["size"]
    code = Code()
    code.line(f"{context.ctype(y)} *out = y;")
    with code.loops([("p", x_shape[0] * x_shape[1])]) as (p,):
        code.line(f"const {context.ctype(x)} *const xp = {plus('x', linear([(p, h * w)]))};")
        with code.loops([("oy", geometry["out"][0]), ("ox", geometry["out"][1])]) as (oy, ox):
            code.line(f"int32_t best = {_LOWEST[context.dtype(x)]};")
            cell = f"xp[{linear([('iy', w), ('ix', 1)])}]"
            _window_loops(code, geometry, (oy, ox), f"if ({cell} > best) best = {cell};")
            code.line(f"*out++ = ({context.ctype(y)})best;")
    comment = [
        _describe(step, geometry),
        tensor_line("x", x, context),
        tensor_line("y", y, context, "the input's parameters"),
    ]
    return context.layer([Argument(x, "x", False), Argument(y, "y", True)], comment, code.text())


def _axis_counts(
    step: AveragePoolStep, window: Window, spatial: tuple[int, ...], axis: int
) -> np.ndarray:
    """The engine's window counts along one axis (its ``window_counts`` on a 1-D window)."""
    rank = len(spatial)
    pads, out = window.resolve(spatial)
    explicit = window.pads or (0,) * (2 * rank)
    one = Window((window.kernel[axis],), (window.strides[axis],), (window.dilations[axis],), None)
    return window_counts(
        one,
        (spatial[axis],),
        (pads[axis], pads[axis + rank]),
        (out[axis],),
        step.include_pad,
        (explicit[axis], explicit[axis + rank]),
    )


def _emit_average(step: AveragePoolStep, window: Window, context: Context) -> Layer:
    (x,), (y,) = step.inputs, step.outputs
    x_shape = context.shape(x)
    spatial = tuple(x_shape[2:])
    geometry = _geometry(step, window, spatial)
    (h, w) = geometry["size"]
    counts = [_axis_counts(step, window, spatial, axis) for axis in range(len(spatial))]
    pads, out = window.resolve(spatial)
    explicit = window.pads or (0,) * (2 * len(spatial))
    full = window_counts(window, spatial, pads, out, step.include_pad, explicit)
    grid = counts[0] if len(counts) == 1 else np.multiply.outer(counts[0], counts[1])
    assert np.array_equal(grid, full), "window counts are not a product of per-axis counts"
    if len(counts) == 1:
        counts = [np.ones(1, dtype=np.int64), counts[0]]
    count_h = context.table("count_h", smallest_type(counts[0]), counts[0], "cells counted per row")
    count_w = context.table(
        "count_w", smallest_type(counts[1]), counts[1], "cells counted per column"
    )
    multipliers = context.table(
        "multiplier", "int32", step.by_count.multiplier, "M[n], n = cells counted"
    )
    t_table = context.table("shift", "int8", shifts(step.by_count), "t[n] = 24 - shift")
    low, high = _range_of(step.dtype)
    code = Code()
    code.line(f"{context.ctype(y)} *out = y;")
    with code.loops([("p", x_shape[0] * x_shape[1])]) as (p,):
        code.line(f"const {context.ctype(x)} *const xp = {plus('x', linear([(p, h * w)]))};")
        with code.loops([("oy", geometry["out"][0]), ("ox", geometry["out"][1])]) as (oy, ox):
            code.line("int32_t acc = 0;")
            cell = f"xp[{linear([('iy', w), ('ix', 1)])}]"
            _window_loops(code, geometry, (oy, ox), f"acc += {centered(cell, step.x_zero)};")
            code.line(f"const int32_t n = {count_h}[{oy}] * {count_w}[{ox}];")
            code.line(
                f"*out++ = ({context.ctype(y)})eb_requantize(acc, {multipliers}[n], {t_table}[n], "
                f"{literal(step.zero_point)}, {low}, {high});"
            )
    comment = [
        _describe(step, geometry) + f", count_include_pad {int(step.include_pad)}",
        tensor_line("x", x, context, f"zero point {step.x_zero}"),
        tensor_line("y", y, context, f"zero point {step.zero_point}"),
        "y = clamp(z_y + round_half_even(round24(round24(acc) * M[n]) / 2^t[n])), "
        "M[n] / 2^t[n] = s_x / (s_y * n)",
    ]
    return context.layer([Argument(x, "x", False), Argument(y, "y", True)], comment, code.text())


def _emit_global(step: AveragePoolStep, context: Context) -> Layer:
    (x,), (y,) = step.inputs, step.outputs
    x_shape = context.shape(x)
    cells = int(np.prod(x_shape[2:], dtype=np.int64))
    if cells >= step.by_count.multiplier.size or step.by_count.multiplier[cells] == 0:
        raise ModelError(f"GlobalAveragePool {step.node!r} was not prepared for {cells} cells")
    multiplier = int(step.by_count.multiplier[cells])
    t = int(shifts(step.by_count)[cells])
    low, high = _range_of(step.dtype)
    code = Code()
    with code.loops([("p", x_shape[0] * x_shape[1])]) as (p,):
        code.line(f"const {context.ctype(x)} *const xp = {plus('x', linear([(p, cells)]))};")
        code.line("int32_t acc = 0;")
        with code.loops([("i", cells)]) as (i,):
            code.line(f"acc += {centered(f'xp[{i}]', step.x_zero)};")
        code.line(
            f"y[{p}] = ({context.ctype(y)})eb_requantize(acc, {multiplier}, {t}, "
            f"{literal(step.zero_point)}, {low}, {high});"
        )
    comment = [
        f"GlobalAveragePool '{step.node}': mean of {cells} cells per channel",
        tensor_line("x", x, context, f"zero point {step.x_zero}"),
        tensor_line("y", y, context, f"zero point {step.zero_point}"),
        "y = clamp(z_y + round_half_even(round24(round24(acc) * M) / 2^t)); "
        f"M = {multiplier}, t = {t} "
        f"(s_x / (s_y * {cells}))",
    ]
    return context.layer([Argument(x, "x", False), Argument(y, "y", True)], comment, code.text())
