"""The pipeline as data: which steps apply to which settings, and in what order."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, replace

import pytest

from eightbit.calibrate import CalibrationConfig
from eightbit.graph import normalize
from eightbit.improve.presets import ImproveConfig, preset
from eightbit.pipeline import steps
from eightbit.pipeline.judging import SafetyNet
from eightbit.pipeline.stages import (
    BiasCorrection,
    Equalize,
    Export,
    Fallback,
    LearnedWeights,
    SpaceToDepthStem,
)
from eightbit.pipeline.state import Settings, State
from eightbit.pipeline.tables import Int8Tables
from eightbit.quant import QuantConfig
from tests.fixtures import models


def _settings(improve: ImproveConfig, **config: object) -> Settings:
    return Settings(QuantConfig(**config), improve, CalibrationConfig())  # type: ignore[arg-type]


def _applied(improve: ImproveConfig, **config: object) -> list[str]:
    settings = _settings(improve, **config)
    names = []
    for step in steps():
        if step.applies(settings):
            learned = getattr(step, "learned", None)
            suffix = "" if learned is None else ("(learned)" if learned else "(nearest)")
            names.append(type(step).__name__ + suffix)
    return names


FRAME = ["SpaceToDepthStem", "Equalize", "Calibrate", "ChooseClipping", "RefineRanges", "Plan"]


@pytest.mark.parametrize(
    ("improve", "expected"),
    [
        (preset("fast"), ["Calibrate", "Plan", "Export(nearest)", "Int8Tables", "Check"]),
        (
            preset("default"),
            ["Equalize", "SmoothQuant", "OutlierChannels", "Calibrate", "ChooseClipping", "Plan",
             "BiasCorrection(nearest)", "Export(nearest)", "AutoReconstruct", "Int8Tables",
             "Check", "SafetyNet", "Int8Tables"],
        ),
        (
            preset("default", min_sqnr=30.0),
            ["Equalize", "SmoothQuant", "OutlierChannels", "Calibrate", "ChooseClipping", "Plan",
             "BiasCorrection(nearest)", "Export(nearest)", "Fallback", "AutoReconstruct",
             "Int8Tables", "Check"],
        ),
        # Learned weights without a fallback: the nearest model would be thrown away.
        (
            preset("accurate"),
            ["Equalize", "SmoothQuant", "OutlierChannels", "Calibrate", "ChooseClipping",
             "RefineRanges", "Plan", "LearnedWeights", "BiasCorrection(learned)",
             "Export(learned)", "Int8Tables", "Check", "SafetyNet", "Int8Tables"],
        ),
        # With one, the fallback judges the nearest model, then the weights are learned.
        (
            preset("accurate", max_drop=0.01, bias_correction=False),
            ["Equalize", "SmoothQuant", "OutlierChannels", "Calibrate", "ChooseClipping",
             "RefineRanges", "Plan", "Export(nearest)", "Fallback",
             "LearnedWeights", "Export(learned)", "Int8Tables", "Check"],
        ),
    ],
    ids=["fast", "default", "fallback", "learned", "learned+fallback"],
)  # fmt: skip
def test_the_steps_that_apply_to_each_setting(improve: ImproveConfig, expected: list[str]) -> None:
    assert _applied(improve, space_to_depth_stem=False) == expected


def test_the_ordering_rule_fallback_before_learned_weights() -> None:
    order = [type(step) for step in steps()]
    assert order.index(Fallback) < order.index(LearnedWeights)
    nearest = [i for i, s in enumerate(steps()) if getattr(s, "learned", None) is False]
    learned = [i for i, s in enumerate(steps()) if getattr(s, "learned", None) is True]
    assert max(nearest) < order.index(Fallback) < order.index(LearnedWeights) < min(learned)
    assert isinstance(steps()[0], SpaceToDepthStem) and isinstance(steps()[-2], SafetyNet)
    assert steps()[-1] == Int8Tables(after_safety_net=True)  # the tables of a rebuilt model


def test_bias_correction_and_export_follow_the_weights() -> None:
    learned = _settings(preset("accurate"))
    assert not BiasCorrection(learned=False).applies(learned)
    assert not Export(learned=False).applies(learned)
    assert BiasCorrection(learned=True).applies(learned) and Export(learned=True).applies(learned)
    nearest = _settings(preset("default"))
    assert BiasCorrection(learned=False).applies(nearest)
    assert not BiasCorrection(learned=True).applies(nearest)
    off = _settings(preset("accurate", bias_correction=False, min_sqnr=30.0))
    assert not BiasCorrection(learned=False).applies(off)
    assert not BiasCorrection(learned=True).applies(off)


def test_a_step_returns_a_new_state_and_leaves_its_input_alone() -> None:
    model = normalize(models.conv_bn_relu())
    settings = _settings(preset("fast"))
    # Ranges from a file: equalization reports itself skipped.
    state = State(settings, model, model, None, None, 0, 0, True, prepared=model)
    with pytest.raises(FrozenInstanceError):
        state.reports = ()  # type: ignore[misc]
    after = Equalize().run(state)
    assert after is not state and state.reports == ()
    assert [report.name for report in after.reports] == ["equalize"]
    assert after.reports[0].notes == ("skipped: the ranges from a file describe the model as is",)
    assert replace(after, reports=()) == state
