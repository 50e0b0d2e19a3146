"""What the op-rule tests share: a model quantized with no improvement step, judged on
new samples by numpy."""

from __future__ import annotations

import numpy as np
import onnx

import eightbit
from eightbit.graph import make_session


def fast_int8_sqnr(model: onnx.ModelProto, calibration: np.ndarray, test: np.ndarray) -> float:
    """SQNR (dB) of output ``y`` of ``model`` quantized with ``improve="fast"`` on
    ``calibration`` (input ``x``), measured on ``test``."""
    result = eightbit.quantize(model, calibration, improve="fast", check_samples=0)
    float_y = make_session(model).run(["y"], {"x": test})[0]
    int8_y = make_session(result.model).run(["y"], {"x": test})[0]
    return float(10 * np.log10(np.sum(float_y**2) / np.sum((float_y - int8_y) ** 2)))
