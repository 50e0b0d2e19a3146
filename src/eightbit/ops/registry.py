"""The registry: op type -> ``OpSpec``, collected from the family modules' ``SPECS``."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType

from eightbit.ops import activation, concat, conv, elementwise, gemm, layout, pool, resize
from eightbit.ops.spec import OpSpec

_FAMILIES = (conv, gemm, elementwise, concat, pool, activation, resize, layout)


def _build_registry() -> MappingProxyType[str, OpSpec]:
    registry: dict[str, OpSpec] = {}
    for family in _FAMILIES:
        for spec in family.SPECS:
            if spec.op_type in registry:
                raise RuntimeError(f"op type {spec.op_type!r} is declared twice in eightbit.ops")
            registry[spec.op_type] = spec
    return MappingProxyType(registry)


_REGISTRY = _build_registry()


def lookup(op_type: str, domain: str = "") -> OpSpec | None:
    """The spec of an ONNX op type (default domain), or None when eightbit keeps it in float."""
    if domain not in ("", "ai.onnx"):
        return None
    return _REGISTRY.get(op_type)


def supported_op_types() -> tuple[str, ...]:
    """Op types eightbit quantizes, sorted."""
    return tuple(sorted(_REGISTRY))


def op_types_where(fact: Callable[[OpSpec], bool]) -> frozenset[str]:
    """Op types whose spec states ``fact`` (e.g. ``lambda spec: spec.is_layer``)."""
    return frozenset(op_type for op_type, spec in _REGISTRY.items() if fact(spec))
