"""The presets by what they do: the steps each runs, joins, the safety net, their help text."""

from __future__ import annotations

import pytest

import eightbit
from eightbit.cli.quantize import PRESET_HELP
from eightbit.errors import ConfigError
from eightbit.improve.presets import PRESET_DESCRIPTIONS, PRESETS, ImproveConfig, preset
from tests.fixtures import models
from tests.fixtures.joins import inputs, large_small_concat

# What a preset runs, as the plan records it, and the words its description uses for it.
STEP_WORDS = {
    "equalize": "equalization",
    "clipping": "clipping choice",
    "refine_ranges": "range refinement",
    "reconstruct": "reconstruction",
    "adaround": "AdaRound",
    "bias_correction": "bias correction",
    "finetune": "fine-tuning",
}
EXPECTED_STEPS = {
    "fast": [],
    "default": ["equalize", "clipping", "bias_correction"],
    "accurate": ["equalize", "clipping", "refine_ranges", "reconstruct", "bias_correction"],
    "finetune": ["equalize", "clipping", "bias_correction", "finetune"],
}
# Steps a preset runs only when a rule holds (§I.8.3): the model of ``steps_run`` is
# accurate enough that they do not; their description names them all the same.
CONDITIONAL = {("default", "reconstruct")}


@pytest.fixture(scope="module")
def steps_run() -> dict[str, list[str]]:
    model = models.conv_bn_relu()
    data = models.random_inputs(model, n=40, seed=1)
    return {
        name: [step.name for step in eightbit.quantize(model, data, improve=name).plan.steps]
        for name in PRESETS
    }


@pytest.mark.parametrize("name", list(EXPECTED_STEPS))
def test_each_preset_runs_its_steps_in_order(name: str, steps_run: dict[str, list[str]]) -> None:
    assert steps_run[name] == EXPECTED_STEPS[name]


def test_every_preset_is_described_and_the_description_names_what_it_runs(
    steps_run: dict[str, list[str]],
) -> None:
    assert set(PRESET_DESCRIPTIONS) == set(PRESETS) == set(EXPECTED_STEPS)
    for name, description in PRESET_DESCRIPTIONS.items():
        for step, words in STEP_WORDS.items():
            wanted = step in steps_run[name] or (name, step) in CONDITIONAL
            assert (words in description) == wanted, (name, step)
        # The --preset help is built from the descriptions, not written a second time.
        assert f"{name} ({description})" in PRESET_HELP


def test_only_fast_leaves_wide_joins_int8_and_the_safety_net_off() -> None:
    data = inputs()
    for name in PRESETS:
        plan = eightbit.quantize(large_small_concat(), data, improve=name).plan
        assert plan.decision("head_concat").quantized == (name == "fast"), name
        # Joins left int8 collapse the head: the safety net repairs it where the preset has one.
        joined = preset(name, separate_joins=False)
        steps = eightbit.quantize(large_small_concat(), data, improve=joined).plan.steps
        assert ("safety_net" in [step.name for step in steps]) == (name != "fast"), name


def test_no_preset_sets_an_accuracy_budget() -> None:
    # The fallback runs only when the user gives --max-drop or --min-sqnr.
    assert not any(config.fallback for config in PRESETS.values())


def test_the_latency_cap_needs_a_budget() -> None:
    with pytest.raises(ConfigError, match="give 'max_drop' or 'min_sqnr' too"):
        ImproveConfig(max_latency=0.6)
    with pytest.raises(ConfigError, match="'max_latency' must be a ratio > 0"):
        ImproveConfig(min_sqnr=25.0, max_latency=0.0)
    assert ImproveConfig(min_sqnr=25.0, max_latency=0.6).max_latency == 0.6


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
        ({"reconstruct": "on"}, "'reconstruct' must be True, False or None"),
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
