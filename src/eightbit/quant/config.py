"""``QuantConfig``: the quantization scheme a user chooses (mirrored by the CLI's flags)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from eightbit.errors import ConfigError
from eightbit.ops import supported_op_types
from eightbit.quant.targets import QuantTarget, TargetName, check_target, profile
from eightbit.serialize import from_dict, to_dict

Scheme = Literal["affine", "pow2"]
ActivationType = Literal["uint8", "int8"]
Mode = Literal["static", "dynamic", "auto"]
SCHEMES: tuple[Scheme, ...] = get_args(Scheme)
ACTIVATION_TYPES: tuple[ActivationType, ...] = get_args(ActivationType)
MODES: tuple[Mode, ...] = get_args(Mode)


@dataclass(frozen=True)
class QuantConfig:
    """How tensors are quantized and which nodes are.

    - ``scheme``: ``"affine"`` (scales from the range, asymmetric activations) or ``"pow2"``
      (every scale a power of two, symmetric int8 activations: shift-only targets).
    - ``activations``: ``"uint8"`` (the fast u8 × s8 path of x86 VNNI) or ``"int8"``. Left
      as None it resolves to the scheme's type: uint8 for affine, int8 for pow2; pow2 with
      an explicit ``"uint8"`` is an error, not a silent change.
    - ``per_channel``: one weight scale per output channel (else one per tensor).
    - ``exclude``: names of nodes kept in float.
    - ``op_types``: if given, only nodes of these op types are quantized.
    - ``space_to_depth_stem``: rewrite a strided Conv on a graph input with at most 4
      channels (an image network's stem) as SpaceToDepth + a stride-1 Conv: the same
      integers, and ONNX Runtime's int8 kernels run it faster (docs/numerics.md §Q11).
      Turn off for targets that pay for the extra zero weights (a microcontroller).
    - ``target``: where the model will run (docs/targets.md): ``"ort"`` (the default),
      ``"tensorrt"``, ``"openvino"``, ``"mcu"`` or ``"fpga"``. A setting the target cannot
      run is refused, naming the rule; ``for_target`` fills in the target's defaults.
    - ``int16``: activation tensors stored as int16 (symmetric, zero point 0) while the
      weights stay int8: "16x8" for the tensors 8 bits are too few for (numerics §Q17).
    - ``mode``: ``"static"`` (activation ranges calibrated once) or ``"dynamic"`` (int8
      weights of MatMul/Gemm, activations quantized at run time from their own range: no
      calibration data; numerics §D). Dynamic mode runs on ONNX Runtime (target ``ort``)
      with the affine scheme. ``"auto"``, the default of the API and the CLI: static,
      unless the graph is a transformer and dynamic mode gives the better SQNR on the
      held-back samples at no more than 5% more latency (§D.6); the plan records the mode
      that ran.
    - ``row_scales``: in dynamic mode, one activation scale per row (per token), computed
      in the graph (§D.4); False: one per tensor (``DynamicQuantizeLinear``, §D.1).
    - ``tensor_scales``: in dynamic mode with ``row_scales``, the products (node names)
      whose input takes one scale per tensor all the same: where per-row scales gain little,
      ONNX Runtime's fused kernel is faster (§D.9; chosen on calibration data by default).
    """

    scheme: Scheme = "affine"
    activations: ActivationType | None = None
    per_channel: bool = True
    exclude: tuple[str, ...] = ()
    op_types: tuple[str, ...] | None = None
    space_to_depth_stem: bool = True
    target: TargetName = "ort"
    int16: tuple[str, ...] = ()
    mode: Mode = "auto"
    row_scales: bool = True
    tensor_scales: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _one_of("scheme", self.scheme, SCHEMES)
        _one_of("mode", self.mode, MODES)
        activations = self.activations
        if activations is None:
            chosen = profile(self.target).default_activations(self.scheme)
            activations = cast(ActivationType, chosen)
        _one_of("activations", activations, ACTIVATION_TYPES)
        if self.scheme == "pow2" and activations != "int8":
            raise ConfigError(
                f"'activations' must be 'int8' when 'scheme' is 'pow2': power-of-two "
                f"activations are symmetric int8 (got {activations!r})"
            )
        object.__setattr__(self, "activations", activations)
        for name in ("per_channel", "space_to_depth_stem", "row_scales"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name!r} must be True or False (got {getattr(self, name)!r})")
        object.__setattr__(self, "exclude", _names("exclude", self.exclude))
        object.__setattr__(self, "int16", _names("int16", self.int16))
        object.__setattr__(self, "tensor_scales", _names("tensor_scales", self.tensor_scales))
        if self.op_types is not None:
            op_types = _names("op_types", self.op_types)
            if not op_types:
                raise ConfigError("'op_types' must name at least one op type, or be None for all")
            _check_supported(op_types)
            object.__setattr__(self, "op_types", op_types)
        check_target(self)
        _check_dynamic(self)

    @classmethod
    def for_target(cls, target: str, **settings: Any) -> QuantConfig:
        """The configuration of ``target`` (docs/targets.md), with ``settings`` on top.

        The target's defaults fill what ``settings`` leaves out (its first scheme, its
        activation type, its SpaceToDepth choice); a setting it cannot run is refused.
        ``for_target("ort")`` is ``QuantConfig()``.
        """
        chosen = profile(target)
        settings.setdefault("scheme", chosen.schemes[0])
        settings.setdefault("space_to_depth_stem", chosen.space_to_depth_stem)
        return cls(target=chosen.name, **settings)

    @property
    def profile(self) -> QuantTarget:
        """What the target runs (``eightbit.quant.targets``)."""
        return profile(self.target)

    @property
    def activation_type(self) -> ActivationType:
        """The resolved activation storage type (never None after construction)."""
        return cast(ActivationType, self.activations)

    @property
    def symmetric_activations(self) -> bool:
        """Every activation has zero point 0: pow2 (§Q4) or a symmetric target (§Q16)."""
        return self.scheme == "pow2" or self.profile.symmetric_activations

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON; ``target`` and ``int16`` only when not their defaults, so a
        default plan is byte for byte the plan of the code before them (no target means
        ONNX Runtime, no int16 means all 8-bit)."""
        data = to_dict(self)
        for name, default in _LATER_FIELDS.items():
            if data[name] == default:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantConfig:
        # A plan records the mode that ran; one without it predates modes: static.
        return from_dict(cls, "quantization config", {"mode": "static", **data})


# Fields added after plans were first saved, with the value a plan without them means.
_LATER_FIELDS: dict[str, object] = {
    "target": "ort",
    "int16": [],
    "mode": "static",
    "row_scales": True,
    "tensor_scales": [],
}


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name!r} must be one of {list(allowed)} (got {value!r})")


def _check_dynamic(config: QuantConfig) -> None:
    """Dynamic mode writes ONNX Runtime's run-time quantization ops (numerics §D)."""
    if config.mode != "dynamic":
        return
    if config.target != "ort" or config.scheme != "affine" or config.int16:
        raise ConfigError(
            f"'mode' 'dynamic' runs on ONNX Runtime with affine scales and 8-bit activations "
            f"(got target {config.target!r}, scheme {config.scheme!r}, int16 "
            f"{list(config.int16)}); use mode 'static' for those settings"
        )


def _names(name: str, values: Iterable[str] | str) -> tuple[str, ...]:
    """A tuple of non-empty strings from any iterable of strings (a bare string is refused)."""
    if isinstance(values, str):
        raise ConfigError(f"{name!r} must be a list of names, not one string (got {values!r})")
    try:
        names = tuple(values)
    except TypeError as exc:
        raise ConfigError(f"{name!r} must be a list of names (got {values!r})") from exc
    for item in names:
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{name!r} must hold non-empty strings (got {item!r})")
    return names


def _check_supported(op_types: tuple[str, ...]) -> None:
    supported = supported_op_types()
    unknown = [op for op in op_types if op not in supported]
    if unknown:
        raise ConfigError(
            f"'op_types' must be op types eightbit quantizes, {list(supported)} (got {unknown})"
        )
