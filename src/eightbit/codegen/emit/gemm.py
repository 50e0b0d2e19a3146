"""MatMul and Gemm (engine: ``kernels/gemm.py``, §E.3).

    acc[b, m, n] = bias[n] + Σ_k (a[b, m, k] − z_a) · (w[b, k, n] − z_w[n])
    y[b, m, n]   = clamp(z_y + rescale(acc, M_n, t_n))

A constant weight is stored transposed, (N, K) per batch, so the reduction reads both
operands contiguously (a Gemm with transB gets its ONNX layout back). Batch dimensions
broadcast as numpy's matmul; a 1-D operand is a matrix of one row (A) or one column (B).
"""

from __future__ import annotations

import numpy as np

from eightbit.codegen.c import Code, c_type, linear, literal, plus, shape_text
from eightbit.codegen.emit.base import Argument, Context, Layer, centered, store, tensor_line
from eightbit.codegen.emit.walk import linear_stride
from eightbit.engine import Step
from eightbit.engine.kernels.gemm import MatMulStep, fits_int32


def _batch_offset(
    batch: tuple[int, ...], out_batch: tuple[int, ...], block: int, context: Context, name: str
) -> tuple[int, str | None]:
    """An operand's offset for output batch ``bi``: ``bi · stride``, or a table (name)."""
    count = int(np.prod(batch, dtype=np.int64))
    own = np.arange(count, dtype=np.int64).reshape(batch)
    offsets = np.broadcast_to(own, out_batch).reshape(-1) * block
    stride = linear_stride(offsets)
    if stride is not None:
        return stride, None
    return 0, context.table(name, "int32", offsets, "offset of each batch")


def _offset(bi: str, offset: tuple[int, str | None]) -> str:
    stride, table = offset
    return f"{table}[{bi}]" if table is not None else linear([(bi, stride)])


def emit_matmul(step: Step, context: Context) -> Layer:
    assert isinstance(step, MatMulStep)
    a, y = step.inputs[0], step.outputs[0]
    a_shape = context.shape(a)
    if step.transpose_a:
        a_shape = (*a_shape[:-2], a_shape[-1], a_shape[-2])
    if len(a_shape) == 1:
        a_shape = (1, a_shape[0])
    constant = step.weight is not None
    b_shape = tuple(step.weight.shape) if step.weight is not None else context.shape(step.inputs[1])
    if len(b_shape) == 1:
        b_shape = (b_shape[0], 1)
    rows, depth = int(a_shape[-2]), int(a_shape[-1])
    columns = int(b_shape[-1])
    out_batch = tuple(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    batches = int(np.prod(out_batch, dtype=np.int64))
    a_offset = _batch_offset(a_shape[:-2], out_batch, rows * depth, context, "a_offset")
    b_offset = _batch_offset(b_shape[:-2], out_batch, depth * columns, context, "b_offset")

    weight_type = ""
    if step.weight is not None:
        weight_type = c_type(step.weight.dtype.name)
        stored = np.swapaxes(step.weight.reshape(b_shape), -1, -2)
        name = context.table(
            "weight", step.weight.dtype.name, stored, f"weights {shape_text(stored.shape)}, (N, K)"
        )
        b_ref = name

    bounded = fits_int32(depth, step.bound, step.bias)
    acc_type = "int32_t" if bounded else "int64_t"
    # A 16x8 sum: Prepare proved |acc| < 2^39 (fits_wide), so int64 needs no check.
    checked = not bounded and not step.requantization.rescale.wide
    start = "0"
    if step.bias is not None:
        bias = np.asarray(step.bias).reshape(-1)
        if bias.size == 1:
            start = literal(int(bias[0]))
        else:
            start = f"{context.table('bias', 'int32', bias, 'bias in units of s_a * s_w[n]')}[n]"
    zero = np.asarray(step.weight_zero, dtype=np.int64)
    w_zero = None
    if np.any(zero):
        w_zero = (
            literal(int(zero))
            if zero.ndim == 0
            else f"{context.table('weight_zero', 'int32', zero)}[n]"
        )
    stage = store(step.requantization, context, "n")

    code = Code()
    if step.weight is not None:
        code.line(f"const {weight_type} *const weight = {b_ref};")
    code.line(f"{context.ctype(y)} *out = y;")
    with code.loops([("bi", batches)], keep=("bi",) if batches > 1 else ()) as (bi,):
        a_start, b_start = _offset(bi, a_offset), _offset(bi, b_offset)
        code.line(f"const {context.ctype(a)} *const ab = {plus('a', a_start)};")
        if constant:
            code.line(f"const {weight_type} *const wb = {plus('weight', b_start)};")
        else:
            code.line(f"const {context.ctype(step.inputs[1])} *const bb = {plus('b', b_start)};")
        with code.loops([("m", rows), ("n", columns)], keep=("n",)) as (m, n):
            code.line(f"{acc_type} acc = {start};")
            with code.loops([("k", depth)]) as (k,):
                if step.transpose_a:
                    a_value = f"ab[{linear([(k, rows), (m, 1)])}]"
                else:
                    a_value = f"ab[{linear([(m, depth), (k, 1)])}]"
                if constant:
                    b_value = f"wb[{linear([(n, depth), (k, 1)])}]"
                else:
                    b_value = f"bb[{linear([(k, columns), (n, 1)])}]"
                right = b_value if w_zero is None else f"((int32_t){b_value} - {w_zero})"
                code.line(f"acc += {centered(a_value, step.a_zero)} * {right};")
            if checked:
                with code.block("if (acc < INT32_MIN || acc > INT32_MAX)"):
                    code.line("return EB_ERROR_OVERFLOW;")
            code.line(f"*out++ = ({context.ctype(y)}){stage('acc')};")
    kind = "Gemm/MatMul" if constant else "MatMul of two activations"
    comment = [
        f"{kind} '{step.node}': {batches} x ({rows} x {depth}) @ ({depth} x {columns})"
        + (", A transposed" if step.transpose_a else ""),
        tensor_line("a", a, context, f"zero point {step.a_zero}"),
        (
            f"w: {shape_text(step.weight.shape)} {step.weight.dtype.name} (K, N)"
            if step.weight is not None
            else tensor_line("b", step.inputs[1], context)
        )
        + (", zero point 0" if w_zero is None else ", zero points per column"),
        f"bias: {'none' if step.bias is None else f'({np.size(step.bias)},) int32'}; "
        f"accumulator {acc_type}" + ("" if bounded else " (checked)"),
        tensor_line("y", y, context),
        stage.text,
    ]
    arguments = [Argument(a, "a", False)]
    if not constant:
        arguments.append(Argument(step.inputs[1], "b", False))
    arguments.append(Argument(y, "y", True))
    return context.layer(arguments, comment, code.text(), checks=checked)
