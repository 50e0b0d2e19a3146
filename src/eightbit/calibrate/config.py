"""Calibration settings: frozen, validated on construction, with attrs-style messages."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from eightbit.errors import ConfigError
from eightbit.validators import is_real

Method = Literal["minmax", "percentile", "entropy", "mse"]
METHODS: tuple[str, ...] = get_args(Method)
# Methods that need the value distribution, not just its extremes.
HISTOGRAM_METHODS = frozenset({"percentile", "entropy", "mse"})

Layout = Literal["nchw", "nhwc"]
LAYOUTS: tuple[str, ...] = get_args(Layout)
Channels = Literal["rgb", "bgr", "gray"]
CHANNELS: tuple[str, ...] = get_args(Channels)

# TensorRT's histogram size; fewer bins leave the entropy search too few candidates
# (docs/numerics.md §C.5).
MIN_BINS = 2048
MAX_BINS = 1 << 16
MIN_BITS, MAX_BITS = 2, 16
# Values per tensor and sample counted in histograms: 32 samples then give >= 1M values
# for every large tensor, and counting stays a fraction of the inference (§C.2).
DEFAULT_HISTOGRAM_VALUES = 1 << 15


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name!r} must be one of {list(choices)} (got {value!r})")


def check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if not _is_int(value) or value < low or (high is not None and value > high):  # type: ignore[operator]
        bound = f">= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ConfigError(f"{name!r} must be {bound} (got {value!r})")


def check_percentile(value: object) -> None:
    if not is_real(value) or not 50.0 < float(value) <= 100.0:  # type: ignore[arg-type]
        raise ConfigError(
            f"'percentile' must be a number in (50, 100] (got {value!r}); "
            "it is the share of values kept below the upper end, e.g. 99.99"
        )


@dataclass(frozen=True)
class CalibrationConfig:
    """How activations are observed and how their ranges are chosen.

    ``bins`` is the least number of histogram bins that cover a tensor's observed range
    (the histogram keeps between ``bins`` and ``2 * bins``). ``moving_average`` is the
    averaging constant of the ``minmax`` method's exponential moving average (C.1.2); None
    uses the exact extremes. ``bits`` is the width of the grid ``entropy`` and ``mse``
    optimize for. ``histogram_values_per_sample`` caps how many values of each tensor per
    sample are counted in its histogram (an evenly spread sample; the extremes always see
    every value); None counts all of them, at several times the cost.
    """

    method: Method = "percentile"
    percentile: float = 99.99
    bins: int = MIN_BINS
    batch_size: int = 16
    samples: int | None = None
    skip_nonfinite: bool = False
    moving_average: float | None = None
    bits: int = 8
    histogram_values_per_sample: int | None = DEFAULT_HISTOGRAM_VALUES

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        check_percentile(self.percentile)
        check_int("bins", self.bins, MIN_BINS, MAX_BINS)
        check_int("batch_size", self.batch_size, 1)
        if self.samples is not None:
            check_int("samples", self.samples, 1)
        if not isinstance(self.skip_nonfinite, bool):
            raise ConfigError(
                f"'skip_nonfinite' must be True or False (got {self.skip_nonfinite!r})"
            )
        average = self.moving_average
        if average is not None and (not is_real(average) or not 0.0 < average <= 1.0):
            raise ConfigError(
                f"'moving_average' must be None or a number in (0, 1] (got {average!r})"
            )
        check_int("bits", self.bits, MIN_BITS, MAX_BITS)
        if self.histogram_values_per_sample is not None:
            check_int("histogram_values_per_sample", self.histogram_values_per_sample, 1)

    @property
    def needs_histogram(self) -> bool:
        return self.method in HISTOGRAM_METHODS


def _check_real_tuple(name: str, values: object, *, positive: bool) -> None:
    ok = isinstance(values, tuple) and len(values) >= 1
    if isinstance(values, tuple):
        ok = ok and all(is_real(v) and math.isfinite(v) and (v > 0 or not positive) for v in values)
    if not ok:
        kind = "positive numbers" if positive else "finite numbers"
        raise ConfigError(f"{name!r} must be a non-empty tuple of {kind} (got {values!r})")


@dataclass(frozen=True)
class ImageOptions:
    """How a folder of images becomes model input.

    Each image is decoded, converted to ``channels``, resized (``resize_short``: the short
    side to that many pixels keeping the aspect ratio, then a centre crop to ``size``;
    otherwise straight to ``size``; ``size`` None takes the model's height and width),
    then ``x = (pixel * scale - mean) / std`` per channel, laid out as ``layout``.
    ``mean`` and ``std`` hold one value for all channels or one per channel.
    """

    size: tuple[int, int] | None = None
    resize_short: int | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1.0 / 255.0
    layout: Layout = "nchw"
    channels: Channels = "rgb"

    def __post_init__(self) -> None:
        size = self.size
        if size is not None and not (
            isinstance(size, tuple) and len(size) == 2 and all(_is_int(v) and v >= 1 for v in size)
        ):
            raise ConfigError(
                f"'size' must be None or (height, width) with positive integers (got {size!r})"
            )
        if self.resize_short is not None:
            check_int("resize_short", self.resize_short, 1)
        _check_real_tuple("mean", self.mean, positive=False)
        _check_real_tuple("std", self.std, positive=True)
        if not is_real(self.scale) or not (math.isfinite(self.scale) and self.scale > 0):
            raise ConfigError(f"'scale' must be a positive number (got {self.scale!r})")
        check_choice("layout", self.layout, LAYOUTS)
        check_choice("channels", self.channels, CHANNELS)
        count = self.channel_count
        allowed = "1 value" if count == 1 else f"1 or {count} values"
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, count):
                raise ConfigError(
                    f"{name!r} must have {allowed} for channels={self.channels!r} "
                    f"(got {len(values)}: {values!r})"
                )

    @property
    def channel_count(self) -> int:
        return 1 if self.channels == "gray" else 3
