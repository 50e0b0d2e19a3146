"""Default's reconstruction rule (§I.8.3): it runs when, and only when, the output SQNR on
calibration samples is under the quality level and the predicted work is within its
bound; its result is kept unless it lowered that SQNR (eq. I.22); ``reconstruct=False``
and ``--preset fast`` never run it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import eightbit
from eightbit.calibrate import CalibrationConfig
from eightbit.improve.presets import ImproveConfig, preset
from eightbit.improve.weights import reconstruct_rule
from eightbit.improve.weights.reconstruct_rule import ROW_SECONDS, Cost, decide
from eightbit.pipeline import stages
from eightbit.pipeline.auto_reconstruct import AutoReconstruct
from eightbit.pipeline.state import Settings
from eightbit.quant import QuantConfig
from eightbit.steps import StepReport
from tests.fixtures import models

RULE = "eightbit.improve.weights.reconstruct_rule"
NEAREST = preset("default", reconstruct=False)
Case = tuple[onnx.ModelProto, dict[str, np.ndarray], float]


@pytest.fixture(scope="module")
def case() -> Case:
    """A small CNN, its samples, and its output SQNR on them as default measures it before
    the rule (the nearest model's)."""
    model = models.conv_bn_relu()
    data = models.random_inputs(model, n=40, seed=1)
    steps = eightbit.quantize(model, data, improve=NEAREST).plan.steps
    measured = reconstruct_rule.measured_sqnr(steps)
    assert measured is not None
    return model, data, measured


def reconstruct_steps(case: Case, improve: ImproveConfig | str) -> list[StepReport]:
    model, data, _ = case
    steps = eightbit.quantize(model, data, improve=improve).plan.steps
    return [step for step in steps if step.name == "reconstruct"]


def test_runs_under_the_quality_level(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{RULE}.RECONSTRUCT_BELOW_DB", case[2] + 1.0)
    monkeypatch.setattr(f"{RULE}.RECONSTRUCT_MAX_SECONDS", 1e6)  # the work bound holds
    (step,) = reconstruct_steps(case, "default")
    assert step.seconds > 0 and step.after_db is not None and step.layers
    assert any("default's rule" in note for note in step.notes)


def test_does_not_run_at_or_over_the_quality_level(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(f"{RULE}.RECONSTRUCT_BELOW_DB", case[2] - 1.0)
    assert reconstruct_steps(case, "default") == []


def test_a_good_output_is_declined_before_the_layers_are_counted(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    def counted(*_: object) -> None:
        raise AssertionError("the layers were counted for an output over the level")

    monkeypatch.setattr(f"{RULE}.RECONSTRUCT_BELOW_DB", case[2] - 1.0)
    monkeypatch.setattr("eightbit.pipeline.auto_reconstruct.weight_layers", counted)
    assert reconstruct_steps(case, "default") == []


def test_over_the_work_bound_it_is_recorded_as_skipped(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(f"{RULE}.RECONSTRUCT_BELOW_DB", case[2] + 1.0)
    monkeypatch.setattr(f"{RULE}.RECONSTRUCT_MAX_SECONDS", 0.0)
    (step,) = reconstruct_steps(case, "default")
    assert step.seconds == 0.0 and not step.layers
    assert step.notes[0].startswith("skipped: predicted")


@pytest.mark.parametrize("improve", [preset("default", reconstruct=False), "fast"])
def test_off_and_fast_never_run_it(
    case: Case, improve: ImproveConfig | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(f"{RULE}.RECONSTRUCT_BELOW_DB", 1000.0)
    assert reconstruct_steps(case, improve) == []


@pytest.mark.parametrize(
    ("sqnr", "operations", "runs", "poor"),
    [
        (19.9, 2e10, True, True),  # full bound; 20 s of rows and 20 s of arithmetic, bound 40 s
        (19.9, 2.1e10, False, True),  # 41 s against 40 s
        (30.0, 0.0, True, True),  # 10 dB over the full bound's level: 20 s against 20 s
        (30.0, 1e9, False, True),  # 21 s against 20 s
        (39.9, 0.0, False, True),  # 20 s against 10 s
        (40.0, 0.0, False, False),  # at the level: good enough
        (None, 1e9, False, False),  # nothing measured
        (19.9, None, False, True),  # no layer it can reconstruct: no rows, no arithmetic
    ],
)
def test_decide_at_its_boundaries(
    sqnr: float | None,
    operations: float | None,
    runs: bool,
    poor: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(f"{RULE}.RECONSTRUCT_MAX_SECONDS", 40.0)
    monkeypatch.setattr(f"{RULE}.RECONSTRUCT_BELOW_DB", 40.0)
    monkeypatch.setattr(f"{RULE}.FULL_BUDGET_BELOW_DB", 20.0)
    monkeypatch.setattr(f"{RULE}.BUDGET_HALVES_EVERY_DB", 10.0)
    monkeypatch.setattr(f"{RULE}.REFERENCE_RATE", 1e9)
    cost = Cost(0.0, 0.0) if operations is None else Cost(20.0 / ROW_SECONDS, operations)
    decision = decide(sqnr, cost)
    assert (decision.runs, decision.poor) == (runs, poor)
    assert decision.predicted_seconds == pytest.approx(cost.seconds())


def test_the_decision_reads_no_clock(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same model and samples give the same decision however fast the machine: here
    no time passes at all, which a rule weighing the seconds spent would refuse."""
    monkeypatch.setattr(f"{RULE}.RECONSTRUCT_BELOW_DB", case[2] + 1.0)
    monkeypatch.setattr(f"{RULE}.RECONSTRUCT_MAX_SECONDS", 1e6)
    monkeypatch.setattr("time.perf_counter", lambda: 0.0)
    (step,) = reconstruct_steps(case, "default")
    assert any("default's rule" in note for note in step.notes)


def test_a_reconstruction_that_lowers_the_output_is_not_kept(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eq. I.22: a reconstruction whose output SQNR on its samples fell leaves the nearest
    model, byte for byte, with a note saying so."""
    monkeypatch.setattr(f"{RULE}.RECONSTRUCT_BELOW_DB", case[2] + 1.0)
    monkeypatch.setattr(f"{RULE}.RECONSTRUCT_MAX_SECONDS", 1e6)
    real = stages.reconstruct

    def worse(*args: object, **kwargs: object) -> tuple[onnx.ModelProto, StepReport]:
        model, report = real(*args, **kwargs)
        spoiled = onnx.ModelProto()
        spoiled.CopyFrom(model)
        weight = spoiled.graph.initializer[0]  # any constant: the model now differs
        values = numpy_helper.to_array(weight)
        weight.CopyFrom(numpy_helper.from_array(values * 2 + 1, weight.name))
        assert report.before_db is not None
        return spoiled, replace(report, after_db=report.before_db - 3.0)

    monkeypatch.setattr(stages, "reconstruct", worse)
    model, data, _ = case
    result = eightbit.quantize(model, data)
    (step,) = [step for step in result.plan.steps if step.name == "reconstruct"]
    assert step.notes[-1].startswith("not kept")
    nearest = eightbit.quantize(model, data, improve=NEAREST)
    assert result.model.SerializeToString() == nearest.model.SerializeToString()


@pytest.mark.parametrize(("lead", "runs"), [(2.9, True), (3.0, False)])
def test_a_rival_mode_out_of_reach_stops_it(lead: float, runs: bool) -> None:
    """Eq. I.23: auto mode's dynamic model leading static's nearest one by
    ``OUT_OF_REACH_DB`` or more: the step could not change the choice, so it does not run."""
    level = reconstruct_rule.OUT_OF_REACH_DB
    decision = decide(20.0, Cost(1.0, 0.0), rival_db=20.0 + lead * level / 3.0)
    assert (decision.runs, decision.poor) == (runs, True)
    assert runs or decision.reason.startswith("dynamic mode reached")


def test_fine_tuning_starts_from_nearest_rounding() -> None:
    """Fine-tuning learns the weights itself: default's rule leaves them to it (§I.8.3)."""

    def settings(improve: ImproveConfig) -> Settings:
        return Settings(QuantConfig(), improve, CalibrationConfig())

    assert AutoReconstruct().applies(settings(preset("default")))
    assert not AutoReconstruct().applies(settings(preset("finetune")))
