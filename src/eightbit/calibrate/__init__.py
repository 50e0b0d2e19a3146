"""Calibration: observe a float model's activations on sample data and choose their ranges.

``calibrate(model, data, config)`` returns ``Ranges`` (saved as JSON plus a histogram
sidecar, reloaded by ``eightbit quantize --ranges``). The math is in
docs/numerics.md; each module implements one part of it:

- ``sources``, ``arrays``, ``images``, ``data``: data sources as batches of model inputs;
- ``histogram``, ``observers``: bounded-memory summaries that update and merge exactly;
- ``selection``: min/max, percentile, entropy (KL) and MSE range selection;
- ``ranges``: the result, its files, and reselection from stored histograms;
- ``runner``: running the model in ONNX Runtime and feeding the observers.
"""

from eightbit.calibrate.clipping import (
    entropy_range,
    minmax_range,
    mse_range,
    percentile_range,
    select_range,
)
from eightbit.calibrate.collect import calibrate
from eightbit.calibrate.config import METHODS, CalibrationConfig, ImageOptions
from eightbit.calibrate.data import DataSource
from eightbit.calibrate.histogram import Histogram
from eightbit.calibrate.observers import MinMaxObserver
from eightbit.calibrate.ranges import Ranges, TensorRange
from eightbit.calibrate.sources import open_data

__all__ = [
    "METHODS",
    "CalibrationConfig",
    "DataSource",
    "Histogram",
    "ImageOptions",
    "MinMaxObserver",
    "Ranges",
    "TensorRange",
    "calibrate",
    "entropy_range",
    "minmax_range",
    "mse_range",
    "open_data",
    "percentile_range",
    "select_range",
]
