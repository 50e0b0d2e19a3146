"""Settings are validated on construction, with messages naming field, rule and value."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from eightbit.calibrate import CalibrationConfig, ImageOptions
from eightbit.errors import ConfigError


def test_defaults_are_valid_and_frozen() -> None:
    config = CalibrationConfig()
    assert (config.method, config.percentile, config.bins, config.batch_size) == (
        "percentile",
        99.99,
        2048,
        16,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.method = "minmax"  # type: ignore[misc]
    assert ImageOptions().scale == pytest.approx(1 / 255)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "method",
            "minmx",
            "'method' must be one of ['minmax', 'percentile', 'entropy', 'mse'] (got 'minmx')",
        ),
        ("percentile", 40.0, "'percentile' must be a number in (50, 100] (got 40.0)"),
        ("percentile", True, "'percentile' must be a number in (50, 100] (got True)"),
        ("bins", 128, "'bins' must be an integer in [2048, 65536] (got 128)"),
        ("batch_size", 0, "'batch_size' must be >= 1 (got 0)"),
        ("batch_size", 2.0, "'batch_size' must be >= 1 (got 2.0)"),
        ("samples", 0, "'samples' must be >= 1 (got 0)"),
        ("skip_nonfinite", "yes", "'skip_nonfinite' must be True or False (got 'yes')"),
        ("moving_average", 1.5, "'moving_average' must be None or a number in (0, 1] (got 1.5)"),
        ("bits", 1, "'bits' must be an integer in [2, 16] (got 1)"),
        ("histogram_values_per_sample", 0, "'histogram_values_per_sample' must be >= 1 (got 0)"),
    ],
)
def test_invalid_calibration_settings_name_the_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        CalibrationConfig(**{field: value})
    assert str(error.value).startswith(message)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"size": (224,)}, "'size' must be None or (height, width)"),
        ({"size": (0, 4)}, "'size' must be None or (height, width)"),
        ({"resize_short": 0}, "'resize_short' must be >= 1 (got 0)"),
        ({"mean": ()}, "'mean' must be a non-empty tuple of finite numbers (got ())"),
        ({"std": (1.0, 0.0, 1.0)}, "'std' must be a non-empty tuple of positive numbers"),
        ({"mean": (0.1, 0.2)}, "'mean' must have 1 or 3 values for channels='rgb' (got 2"),
        (
            {"std": (0.5, 0.5, 0.5), "channels": "gray"},
            "'std' must have 1 value for channels='gray' (got 3",
        ),
        ({"scale": -1.0}, "'scale' must be a positive number (got -1.0)"),
        ({"layout": "chw"}, "'layout' must be one of ['nchw', 'nhwc'] (got 'chw')"),
        ({"channels": "rgba"}, "'channels' must be one of ['rgb', 'bgr', 'gray'] (got 'rgba')"),
    ],
)
def test_invalid_image_options_name_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        ImageOptions(**fields)
    assert str(error.value).startswith(message)
