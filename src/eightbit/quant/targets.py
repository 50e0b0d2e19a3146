"""Targets: where the model will run, as data (docs/targets.md).

A ``QuantTarget`` states what a runtime can run (schemes, activation types, zero points,
whether a bias is quantized, whether a node may stay float) and, for each rule, the
target's own document that says so. ``QuantConfig`` reads its target's profile to fill its
defaults (``QuantConfig.for_target``) and to refuse what the target cannot run
(``check_target``), so the rules live here once and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, get_args

from eightbit.errors import ConfigError

if TYPE_CHECKING:
    from eightbit.quant.config import QuantConfig

TargetName = Literal["ort", "tensorrt", "openvino", "mcu", "fpga"]
TARGETS: tuple[TargetName, ...] = get_args(TargetName)

_TENSORRT_DOCS = "TensorRT docs, 'Working with Quantized Types' and 'Explicit Quantization'"
_OPENVINO_DOCS = "OpenVINO docs, 'Low Precision Transformations' and 'Low Precision IR'"
_TFLITE_SPEC = "TensorFlow Lite 8-bit quantization specification (CMSIS-NN's s8 kernels)"


@dataclass(frozen=True)
class Rule:
    """One thing a target requires, and the document that says so."""

    says: str
    source: str

    def refuse(self, target: str, got: str, fix: str) -> ConfigError:
        """The one-line error for a setting that breaks this rule."""
        return ConfigError(
            f"target {target!r} cannot run {got}: {self.says} ({self.source}); {fix}"
        )


@dataclass(frozen=True)
class QuantTarget:
    """What one runtime runs (docs/targets.md).

    - ``schemes``: the scale schemes it runs; the first is its default.
    - ``activation_types``: the activation storage types it runs; None leaves the choice
      to the scheme (uint8 for affine, int8 for pow2), as the default target always did.
    - ``symmetric_activations``: every activation has zero point 0 (numerics §Q16).
    - ``float_bias``: a bias stays a float initializer, with no Q/DQ (TensorRT).
    - ``activation_reads_float``: a Relu/Clip that cannot fold into its layer's output
      (zero point 0, numerics §Q16) reads the layer's float output, so no Q/DQ separates
      them and the runtime fuses the pair (TensorRT); otherwise a redundant pair with the
      activation's own parameters sits between them.
    - ``float_nodes``: the runtime has float kernels, so the plan may keep nodes in float
      (fallback, safety net, ``exclude``); False for a microcontroller build.
    - ``int16_activations``: it runs 16-bit activations with 8-bit weights (numerics §Q17).
    - ``space_to_depth_stem``: the default of ``QuantConfig.space_to_depth_stem`` (the
      rewrite pays in ONNX Runtime's kernels only, numerics §Q11).
    - ``rules``: the rule behind each restriction, keyed by the setting it restricts.
    """

    name: TargetName
    title: str
    schemes: tuple[str, ...]
    activation_types: tuple[str, ...] | None
    symmetric_activations: bool
    float_bias: bool
    activation_reads_float: bool
    float_nodes: bool
    int16_activations: bool
    space_to_depth_stem: bool
    rules: Mapping[str, Rule]

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", MappingProxyType(dict(self.rules)))

    def default_activations(self, scheme: str) -> str:
        """The activation type when none was asked for."""
        if scheme == "pow2":
            return "int8"  # power-of-two activations are symmetric int8 (§Q4)
        return "uint8" if self.activation_types is None else self.activation_types[0]


PROFILES: Mapping[str, QuantTarget] = MappingProxyType(
    {
        "ort": QuantTarget(
            name="ort",
            title="ONNX Runtime CPU (uint8 affine activations, int8 per-channel weights)",
            schemes=("affine", "pow2"),
            activation_types=None,
            symmetric_activations=False,
            float_bias=False,
            activation_reads_float=False,
            float_nodes=True,
            int16_activations=True,
            space_to_depth_stem=True,
            rules={},
        ),
        "tensorrt": QuantTarget(
            name="tensorrt",
            title="TensorRT explicit quantization (int8 symmetric, no Q/DQ on bias)",
            schemes=("affine",),
            activation_types=("int8",),
            symmetric_activations=True,
            float_bias=True,
            activation_reads_float=True,
            float_nodes=True,
            int16_activations=False,
            space_to_depth_stem=False,
            rules={
                "activations": Rule(
                    "TensorRT reads int8 activations with zero point 0 only "
                    "(symmetric quantization)",
                    _TENSORRT_DOCS,
                ),
                "int16": Rule(
                    "TensorRT's quantized types are INT8, FP8 and INT4/FP4 (weights): no "
                    "16-bit integer activations",
                    _TENSORRT_DOCS,
                ),
                "scheme": Rule(
                    "TensorRT's scales are calibrated float32 (amax/127), not powers of two",
                    _TENSORRT_DOCS,
                ),
            },
        ),
        "openvino": QuantTarget(
            name="openvino",
            title="OpenVINO CPU plugin (FakeQuantize on data and weights, u8/i8)",
            schemes=("affine",),
            activation_types=("uint8", "int8"),
            symmetric_activations=False,
            float_bias=False,
            activation_reads_float=False,
            float_nodes=True,
            int16_activations=False,
            space_to_depth_stem=False,
            rules={
                "int16": Rule(
                    "OpenVINO's low precision transformations run u8/i8 activations only",
                    _OPENVINO_DOCS,
                ),
                "scheme": Rule(
                    "OpenVINO's low precision transformations take calibrated float32 "
                    "FakeQuantize intervals; power-of-two scales are a shift-only target's",
                    _OPENVINO_DOCS,
                ),
            },
        ),
        "mcu": QuantTarget(
            name="mcu",
            title="microcontroller, TFLite Micro / CMSIS-NN int8 (no float nodes)",
            schemes=("affine", "pow2"),
            activation_types=("int8",),
            symmetric_activations=False,
            float_bias=False,
            activation_reads_float=False,
            float_nodes=False,
            int16_activations=True,
            space_to_depth_stem=False,
            rules={
                "activations": Rule(
                    "activations are int8 with a zero point in [-128, 127]",
                    _TFLITE_SPEC,
                ),
                "float_nodes": Rule(
                    "a microcontroller build has no float kernels: every node runs in int8",
                    _TFLITE_SPEC,
                ),
            },
        ),
        "fpga": QuantTarget(
            name="fpga",
            title="shift-only fabric (power-of-two scales everywhere)",
            schemes=("pow2",),
            activation_types=("int8",),
            symmetric_activations=True,
            float_bias=False,
            activation_reads_float=False,
            float_nodes=True,
            int16_activations=True,
            space_to_depth_stem=False,
            rules={
                "scheme": Rule(
                    "requantization on shift-only fabric is a shift: every scale a power of two",
                    "docs/numerics.md §Q4 (Xilinx DNNDK / Vitis AI DPU)",
                ),
                "activations": Rule(
                    "power-of-two activations are symmetric int8", "docs/numerics.md §Q4"
                ),
            },
        ),
    }
)


def profile(name: str) -> QuantTarget:
    """The profile of target ``name``; a ConfigError listing the targets otherwise."""
    if name not in PROFILES:
        raise ConfigError(f"'target' must be one of {list(TARGETS)} (got {name!r})")
    return PROFILES[name]


def check_target(config: QuantConfig) -> None:
    """Refuse a configuration its target cannot run, naming the rule and its source."""
    target = profile(config.target)
    name = target.name
    if config.scheme not in target.schemes:
        raise target.rules["scheme"].refuse(
            name, f"scheme {config.scheme!r}", f"use scheme {target.schemes[0]!r}"
        )
    allowed = target.activation_types
    if allowed is not None and config.activations not in allowed:
        raise target.rules["activations"].refuse(
            name,
            f"{config.activations} activations",
            f"use activations {' or '.join(repr(a) for a in allowed)}, or another target",
        )
    if config.int16 and not target.int16_activations:
        raise target.rules["int16"].refuse(
            name, f"int16 activations ({', '.join(config.int16)})", "quantize them to 8 bits"
        )
    if target.float_nodes:
        return
    rule = target.rules["float_nodes"]
    if config.exclude:
        raise rule.refuse(name, f"nodes kept in float (exclude {list(config.exclude)})", _NO_FLOAT)
    if config.op_types is not None:
        raise rule.refuse(name, "an op-type selection (the rest would be float)", _NO_FLOAT)


_NO_FLOAT = "quantize every node, or choose a target with float kernels"


def refuse_float_nodes(target_name: str, float_nodes: Mapping[str, str | None]) -> None:
    """Refuse a plan with float nodes (node -> why float) for a target without float kernels."""
    target = profile(target_name)
    if target.float_nodes or not float_nodes:
        return
    shown = "; ".join(f"{node} ({why or 'float'})" for node, why in list(float_nodes.items())[:5])
    more = f" and {len(float_nodes) - 5} more" if len(float_nodes) > 5 else ""
    raise target.rules["float_nodes"].refuse(
        target.name,
        f"{len(float_nodes)} float node(s): {shown}{more}",
        "these nodes need an int8 kernel before this model can run there",
    )
