"""C emitters, one module per op family, mirroring ``eightbit.engine.kernels``.

``EMITTERS`` maps each engine ``Step`` class to the function that writes its C layer. A
step without an emitter is refused by ``emitter_for`` with the list of what is supported.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from eightbit.codegen.emit.activation import emit_clamp, emit_lookup
from eightbit.codegen.emit.base import Argument, Context, Emitter, Layer
from eightbit.codegen.emit.concat import emit_concat
from eightbit.codegen.emit.conv import emit_conv
from eightbit.codegen.emit.elementwise import emit_elementwise
from eightbit.codegen.emit.gemm import emit_matmul
from eightbit.codegen.emit.layout import emit_layout
from eightbit.codegen.emit.pool import emit_pool
from eightbit.codegen.emit.resize import emit_resize
from eightbit.engine import Step
from eightbit.engine.kernels.activation import ClampStep, LookupStep
from eightbit.engine.kernels.concat import ConcatStep
from eightbit.engine.kernels.conv import ConvStep
from eightbit.engine.kernels.conv_transpose import ConvTransposeStep
from eightbit.engine.kernels.elementwise import AddStep, MulStep
from eightbit.engine.kernels.gemm import MatMulStep
from eightbit.engine.kernels.layout import LayoutStep
from eightbit.engine.kernels.pool import AveragePoolStep, MaxPoolStep
from eightbit.engine.kernels.resize import ResizeStep
from eightbit.errors import ModelError

EMITTERS: Mapping[type[Step], Emitter] = MappingProxyType(
    {
        ConvStep: emit_conv,
        ConvTransposeStep: emit_conv,
        MatMulStep: emit_matmul,
        AddStep: emit_elementwise,
        MulStep: emit_elementwise,
        ConcatStep: emit_concat,
        MaxPoolStep: emit_pool,
        AveragePoolStep: emit_pool,
        LookupStep: emit_lookup,
        ClampStep: emit_clamp,
        LayoutStep: emit_layout,
        ResizeStep: emit_resize,
    }
)


def supported_kinds() -> list[str]:
    return sorted({cls.kind for cls in EMITTERS})


def emitter_for(step: Step) -> Emitter:
    # A subclass of a step kind runs the same arithmetic: its kind's emitter writes it.
    emitter = next((EMITTERS[c] for c in type(step).__mro__ if c in EMITTERS), None)
    if emitter is None:
        raise ModelError(
            f"no C emitter for step {step.node!r} ({step.kind}); generated C supports "
            f"{', '.join(supported_kinds())}"
        )
    return emitter


__all__ = ["EMITTERS", "Argument", "Context", "Layer", "emitter_for", "supported_kinds"]
