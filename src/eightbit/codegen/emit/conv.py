"""Conv (grouped, depthwise, 1-D and 2-D) and ConvTranspose (engine: ``kernels/conv.py``, §E.3).

    acc[c, p] = bias[c] + Σ_{i, k} (x[i, p·stride + k·dilation − pad] − z_x) · (w[c, i, k] − z_w[c])
    y[c, p]   = clamp(z_y + rescale(acc, M_c, t_c))

A padded cell holds z_x and adds nothing, so the loops skip taps outside the input. The
accumulator is int32 where Prepare proved the sum fits (``fits_int32``), else int64 with
a check that returns ``EB_ERROR_OVERFLOW`` where the engine raises. A 1-D convolution is
the 2-D one with a height of 1. ConvTranspose is written as a gather: output cell ``o``
receives input cell ``i`` through tap ``k`` when ``i·stride + k·dilation = o + crop``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eightbit.codegen.c import Code, c_type, linear, literal, plus, shape_text
from eightbit.codegen.emit.base import (
    Argument,
    Context,
    Layer,
    Store,
    as_2d,
    centered,
    store,
    tensor_line,
)
from eightbit.engine import Step
from eightbit.engine.kernels.conv import ConvStep
from eightbit.engine.kernels.conv_transpose import ConvTransposeStep, TransposeGeometry
from eightbit.engine.kernels.gemm import fits_int32
from eightbit.errors import ModelError


@dataclass(frozen=True)
class _Plane:
    """2-D geometry: (height, width) pairs; a 1-D op gets height 1."""

    size: tuple[int, int]
    out: tuple[int, int]
    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    begin: tuple[int, int]  # padding before (Conv) or crop (ConvTranspose)
    padded: tuple[bool, bool]  # whether some tap falls outside the input on that axis


def _spatial_rank(step: Step, shape: tuple[int, ...]) -> int:
    rank = len(shape) - 2
    if rank not in (1, 2):
        raise ModelError(
            f"{step.kind} {step.node!r} is {rank}-D; generated C runs 1-D and 2-D convolutions"
        )
    return rank


@dataclass(frozen=True)
class _Channel:
    """What every output channel reads: accumulator type and start, weight zero point."""

    acc_type: str
    checked: bool  # the accumulator may leave int32: int64 and a check
    start: str  # the bias of channel c, or 0
    w_zero: str | None  # None when every weight zero point is 0
    stage: Store


def _channel_constants(
    step: ConvStep | ConvTransposeStep, terms: int, context: Context, code: Code
) -> _Channel:
    """Declare the layer's tables (weights, bias, zero points, multipliers) once."""
    weights = context.table(
        "weight", step.weight.dtype.name, step.weight, f"weights {shape_text(step.weight.shape)}"
    )
    code.line(f"const {c_type(step.weight.dtype.name)} *const weight = {weights};")
    bounded = fits_int32(terms, step.bound, step.bias)
    acc_type = "int32_t" if bounded else "int64_t"
    # A 16x8 sum: Prepare proved |acc| < 2^39 (fits_wide), so int64 needs no check.
    checked = not bounded and not step.requantization.rescale.wide
    start = "0"
    if step.bias is not None:
        start = f"{context.table('bias', 'int32', step.bias, 'bias in units of s_x * s_w[c]')}[c]"
    zero = np.asarray(step.weight_zero, dtype=np.int64)
    w_zero = None
    if np.any(zero):
        w_zero = literal(int(zero)) if zero.ndim == 0 else "wz"
        if zero.ndim:
            zeros = context.table("weight_zero", "int32", zero, "weight zero points")
            code.line(f"const int32_t *const weight_zero = {zeros};")
    return _Channel(acc_type, checked, start, w_zero, store(step.requantization, context))


def _per_channel(code: Code, channel: _Channel, zero_index: str) -> Store:
    """Declarations at the top of channel c's loop; the output stage to use there."""
    code.line(f"const {channel.acc_type} start = {channel.start};")
    if channel.w_zero == "wz":
        code.line(f"const int32_t wz = weight_zero[{zero_index}];")
    return channel.stage.hoisted(code)


def _close(code: Code, checked: bool, y_type: str, stage: Store) -> None:
    if checked:
        with code.block("if (acc < INT32_MIN || acc > INT32_MAX)"):
            code.line("return EB_ERROR_OVERFLOW;")
    code.line(f"*out++ = ({y_type}){stage('acc')};")


def _product(x_value: str, x_zero: int, w_value: str, w_zero: str | None) -> str:
    weight = w_value if w_zero is None else f"((int32_t){w_value} - {w_zero})"
    return f"{centered(x_value, x_zero)} * {weight}"


def emit_conv(step: Step, context: Context) -> Layer:
    if isinstance(step, ConvTransposeStep):
        return _emit_conv_transpose(step, context)
    assert isinstance(step, ConvStep)
    (x,), (y,) = step.inputs, step.outputs
    x_shape = context.shape(x)
    plane = _plane_of(step, x_shape)
    batch, channels = x_shape[:2]
    out_channels, group_channels = step.weight.shape[:2]
    per_group = out_channels // step.group
    (h, w), (kh, kw) = plane.size, plane.kernel
    (sh, sw), (dh, dw), (bh, bw) = plane.strides, plane.dilations, plane.begin
    taps = group_channels * kh * kw
    code = Code()
    channel = _channel_constants(step, taps, context, code)
    acc_type, checked, w_zero, stage = (
        channel.acc_type,
        channel.checked,
        channel.w_zero,
        channel.stage,
    )
    code.line(f"{context.ctype(y)} *out = y;")
    with code.loops([("n", batch), ("c", out_channels)], keep=("c",)) as (n, c):
        group = "0" if step.group == 1 else (c if per_group == 1 else f"({c} / {per_group})")
        first = linear([(n, channels * h * w), (group, group_channels * h * w)])
        code.line(f"const {context.ctype(x)} *const xg = {plus('x', first)};")
        weight_type = c_type(step.weight.dtype.name)
        code.line(f"const {weight_type} *const wc = {plus('weight', linear([(c, taps)]))};")
        channel_stage = _per_channel(code, channel, c)
        with code.loops([("oy", plane.out[0]), ("ox", plane.out[1])]) as (oy, ox):
            code.line(f"{acc_type} acc = start;")
            with code.loops([("ky", kh)]) as (ky,):
                _bounds(code, "iy", linear([(oy, sh), (ky, dh)], -bh), h, plane.padded[0])
                with code.loops([("kx", kw)]) as (kx,):
                    _bounds(code, "ix", linear([(ox, sw), (kx, dw)], -bw), w, plane.padded[1])
                    with code.loops([("i", group_channels)]) as (i,):
                        x_value = f"xg[{linear([(i, h * w), ('iy', w), ('ix', 1)])}]"
                        w_value = f"wc[{linear([(i, kh * kw), (ky, kw), (kx, 1)])}]"
                        code.line(f"acc += {_product(x_value, step.x_zero, w_value, w_zero)};")
            _close(code, checked, context.ctype(y), channel_stage)
    kind = "depthwise, " if step.group == channels and group_channels == 1 else ""
    comment = [
        f"Conv '{step.node}' ({kind}group {step.group}): kernel {kh}x{kw}, stride {sh}x{sw}, "
        f"dilation {dh}x{dw}, padding before {bh}x{bw}",
        tensor_line("x", x, context, f"zero point {step.x_zero}"),
        f"w: {shape_text(step.weight.shape)} {step.weight.dtype.name}, "
        + ("zero point 0" if w_zero is None else f"zero point {w_zero}"),
        f"bias: {'none' if step.bias is None else f'({step.bias.size},) int32'}; "
        f"accumulator {acc_type}" + (" (checked)" if checked else ""),
        tensor_line("y", y, context),
        stage.text,
    ]
    arguments = [Argument(x, "x", False), Argument(y, "y", True)]
    return context.layer(arguments, comment, code.text(), checks=checked)


def _plane_of(step: ConvStep, x_shape: tuple[int, ...]) -> _Plane:
    rank = _spatial_rank(step, x_shape)
    pads, out = step.window.resolve(x_shape[2:])
    padded = tuple(bool(pads[i] or pads[i + rank]) for i in range(rank))
    return _Plane(
        size=as_2d(tuple(x_shape[2:]), 1),
        out=as_2d(tuple(out), 1),
        kernel=as_2d(step.window.kernel, 1),
        strides=as_2d(step.window.strides, 1),
        dilations=as_2d(step.window.dilations, 1),
        begin=as_2d(tuple(pads[:rank]), 0),
        padded=(False, padded[0]) if rank == 1 else (padded[0], padded[1]),
    )


def _bounds(code: Code, axis: str, coordinate: str, size: int, padded: bool) -> None:
    code.line(f"const int32_t {axis} = {coordinate};")
    if padded:
        code.line(f"if ({axis} < 0 || {axis} >= {size}) continue;")


def _emit_conv_transpose(step: ConvTransposeStep, context: Context) -> Layer:
    (x,), (y,) = step.inputs, step.outputs
    x_shape = context.shape(x)
    rank = _spatial_rank(step, x_shape)
    kernel = tuple(int(k) for k in step.weight.shape[2:])
    geometry = TransposeGeometry.of(step.attrs, kernel, tuple(x_shape[2:]))
    batch, channels = x_shape[:2]
    per_group = int(step.weight.shape[1])
    out_channels = per_group * step.group
    group_channels = channels // step.group
    (h, w), (kh, kw) = as_2d(tuple(x_shape[2:]), 1), as_2d(kernel, 1)
    (sh, sw), (dh, dw) = as_2d(geometry.strides, 1), as_2d(geometry.dilations, 1)
    (bh, bw), out = as_2d(geometry.begin, 0), as_2d(geometry.out_shape, 1)
    code = Code()
    terms = group_channels * kh * kw
    channel = _channel_constants(step, terms, context, code)
    acc_type, checked, w_zero, stage = (
        channel.acc_type,
        channel.checked,
        channel.w_zero,
        channel.stage,
    )
    code.line(f"{context.ctype(y)} *out = y;")
    with code.loops([("n", batch), ("c", out_channels)], keep=("c",)) as (n, c):
        code.line(f"const int32_t g = {c} / {per_group}, j = {c} % {per_group};")
        first = linear([(n, channels * h * w), ("g", group_channels * h * w)])
        code.line(f"const {context.ctype(x)} *const xg = {plus('x', first)};")
        channel_stage = _per_channel(code, channel, "j")
        with code.loops([("oy", out[0]), ("ox", out[1])]) as (oy, ox):
            code.line(f"{acc_type} acc = start;")
            with code.loops([("ky", kh)]) as (ky,):
                _landing(code, "iy", linear([(oy, 1), (ky, -dh)], bh), sh, h)
                with code.loops([("kx", kw)]) as (kx,):
                    _landing(code, "ix", linear([(ox, 1), (kx, -dw)], bw), sw, w)
                    with code.loops([("i", group_channels)]) as (i,):
                        x_value = f"xg[{linear([(i, h * w), ('iy', w), ('ix', 1)])}]"
                        pair = linear([("g", group_channels * per_group), (i, per_group), ("j", 1)])
                        tap = linear([(ky, kw), (kx, 1)])
                        w_value = f"weight[({pair}) * {kh * kw} + {tap}]"
                        code.line(f"acc += {_product(x_value, step.x_zero, w_value, w_zero)};")
            _close(code, checked, context.ctype(y), channel_stage)
    comment = [
        f"ConvTranspose '{step.node}' (group {step.group}): kernel {kh}x{kw}, stride {sh}x{sw}, "
        f"dilation {dh}x{dw}, crop {bh}x{bw}" + ("" if rank == 2 else " (1-D as height 1)"),
        tensor_line("x", x, context, f"zero point {step.x_zero}"),
        f"w: {shape_text(step.weight.shape)} {step.weight.dtype.name}, "
        + ("zero point 0" if w_zero is None else f"zero point {w_zero}"),
        f"accumulator {acc_type}" + (" (checked)" if checked else ""),
        tensor_line("y", y, context),
        stage.text,
    ]
    arguments = [Argument(x, "x", False), Argument(y, "y", True)]
    return context.layer(arguments, comment, code.text(), checks=checked)


def _landing(code: Code, axis: str, numerator: str, stride: int, size: int) -> None:
    """``axis`` = the input cell whose tap lands here, or skip the tap (no such cell)."""
    if stride == 1:
        code.line(f"const int32_t {axis} = {numerator};")
        code.line(f"if ({axis} < 0 || {axis} >= {size}) continue;")
        return
    code.line(f"const int32_t {axis}_at = {numerator};")
    code.line(f"if ({axis}_at < 0 || {axis}_at % {stride} != 0) continue;")
    code.line(f"const int32_t {axis} = {axis}_at / {stride};")
    code.line(f"if ({axis} >= {size}) continue;")
