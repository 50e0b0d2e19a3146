"""eightbit: exact, inspectable int8 quantization for edge deployment.

``eightbit.quantize(model, data, config)`` is the main job; the packages below it are the
stages (see docs/design.md): ``fixed``, ``graph``, ``calibrate``, ``quant``/``ops``/``plan``,
``export``, ``engine``, ``analysis``, ``report``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["CalibrationConfig", "QuantConfig", "QuantizedModel", "__version__", "quantize"]

if TYPE_CHECKING:
    from eightbit.calibrate import CalibrationConfig
    from eightbit.pipeline import QuantizedModel, quantize
    from eightbit.quant import QuantConfig


def __getattr__(name: str) -> Any:
    # Lazy: `eightbit fi` and `import eightbit` should not pay for onnx and onnxruntime.
    if name in ("quantize", "QuantizedModel"):
        from eightbit import pipeline

        return getattr(pipeline, name)
    if name == "QuantConfig":
        from eightbit.quant import QuantConfig

        return QuantConfig
    if name == "CalibrationConfig":
        from eightbit.calibrate import CalibrationConfig

        return CalibrationConfig
    raise AttributeError(f"module 'eightbit' has no attribute {name!r}")
