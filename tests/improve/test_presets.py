"""``ImproveConfig`` validation and the documented contents of the presets."""

from __future__ import annotations

import pytest

from eightbit.errors import ConfigError
from eightbit.improve.presets import PRESETS, ImproveConfig, preset


def test_presets_hold_what_their_documentation_says() -> None:
    fast, default, accurate = PRESETS["fast"], PRESETS["default"], PRESETS["accurate"]
    assert (fast.equalize, fast.refine_ranges, fast.adaround, fast.bias_correction) == (
        False, False, False, False,
    )  # fmt: skip
    assert (default.equalize, default.refine_ranges, default.adaround) == (True, False, False)
    assert default.bias_correction is None  # kept where it helps
    assert accurate.equalize and accurate.refine_ranges and accurate.reconstruct
    assert not accurate.adaround  # slower and no better on MobileNetV2 (§I.6)
    assert not any(p.fallback for p in PRESETS.values())
    # Only fast leaves joins int8 and the safety net off (§Q13, §I.9).
    assert not fast.separate_joins and not fast.safety_net
    assert default.separate_joins and default.safety_net
    assert accurate.separate_joins and accurate.safety_net


def test_asking_for_one_weight_chooser_replaces_the_presets_other() -> None:
    assert preset("accurate", adaround=True).reconstruct is False
    assert preset("accurate", adaround=True).adaround is True
    assert preset("default", reconstruct=True).adaround is False
    with pytest.raises(ConfigError, match="both choose the weights"):
        preset("accurate", adaround=True, reconstruct=True)


def test_overrides_replace_only_given_fields() -> None:
    config = preset("fast", bias_correction=True, equalize=None, max_drop=0.01)
    assert config.bias_correction is True and config.equalize is False
    assert config.max_drop == 0.01 and config.fallback
    assert ImproveConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"equalize": 1}, "'equalize' must be True or False"),
        ({"bias_correction": "yes"}, "'bias_correction' must be True, False or None"),
        ({"adaround_iters": 0}, "'adaround_iters' must be an integer >= 1"),
        ({"max_drop": -0.1}, "'max_drop' must be a number >= 0"),
        ({"min_sqnr": float("nan")}, "'min_sqnr' must be a finite number"),
        ({"reconstruct": "on"}, "'reconstruct' must be True or False"),
        ({"safety_net": 1}, "'safety_net' must be True or False"),
        ({"separate_joins": None}, "'separate_joins' must be True or False"),
        ({"adaround": True, "reconstruct": True}, "both choose the weights: enable one"),
    ],
)
def test_bad_values_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ImproveConfig(**kwargs)  # type: ignore[arg-type]


def test_unknown_presets_and_fields() -> None:
    with pytest.raises(ConfigError, match=r"'preset' must be one of \['fast', 'default'"):
        preset("fastest")
    with pytest.raises(ConfigError, match="unknown improve option"):
        preset("fast", turbo=True)
    with pytest.raises(ConfigError, match="unknown field"):
        ImproveConfig.from_dict({"turbo": True})
