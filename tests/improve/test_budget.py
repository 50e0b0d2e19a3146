"""One budget: ``ImproveConfig`` and the fallback's ``Budget`` check the same limits with
the same words; one evaluator: ``OutputReference`` measures what a budget reads, and the
fallback measures with the scorer its caller gives."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
import pytest

from eightbit.analysis.metrics import sqnr_db, topk_agreement
from eightbit.calibrate import CalibrationConfig, calibrate
from eightbit.errors import ConfigError
from eightbit.export import to_qdq
from eightbit.graph import Graph, make_session, normalize
from eightbit.improve.budget import Budget, Measured
from eightbit.improve.fallback.driver import fallback
from eightbit.improve.measure import OutputReference, read_samples
from eightbit.improve.presets import ImproveConfig
from eightbit.plan import QuantPlan, activation_tensors_to_calibrate, make_plan
from eightbit.quant import QuantConfig
from tests.analysis.helpers import classifier, images

BAD_LIMITS = [
    ("max_drop", {"max_drop": -0.1}),
    ("max_drop", {"max_drop": math.nan}),
    ("max_drop", {"max_drop": math.inf}),
    ("max_drop", {"max_drop": True}),
    ("min_sqnr", {"min_sqnr": math.inf}),
    ("min_sqnr", {"min_sqnr": math.nan, "max_drop": 0.1}),
    ("max_latency", {"min_sqnr": 20.0, "max_latency": 0.0}),
    ("max_latency", {"min_sqnr": 20.0, "max_latency": -1.0}),
    ("max_latency", {"min_sqnr": 20.0, "max_latency": math.inf}),
]


@pytest.mark.parametrize(("field", "limits"), BAD_LIMITS, ids=lambda value: repr(value))
def test_the_config_and_the_budget_refuse_a_limit_in_the_same_words(
    field: str, limits: dict[str, float]
) -> None:
    with pytest.raises(ConfigError) as from_config:
        ImproveConfig(**limits)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as from_budget:
        Budget(**limits)
    assert str(from_config.value) == str(from_budget.value)
    assert str(from_budget.value).startswith(f"{field!r} must be a ")
    assert f"(got {limits[field]!r})" in str(from_budget.value)


def test_the_config_makes_its_budget() -> None:
    config = ImproveConfig(max_drop=0.02, min_sqnr=25.0, max_latency=0.7)
    assert config.budget() == Budget(max_drop=0.02, min_sqnr=25.0, max_latency=0.7)
    assert config.budget(abs).metric is abs
    with pytest.raises(ConfigError, match="needs 'max_drop' or 'min_sqnr'"):
        ImproveConfig().budget()


@dataclass(frozen=True)
class _Built:
    model: onnx.ModelProto
    plan: QuantPlan


class _Build:
    def __init__(self) -> None:
        self.model = normalize(classifier(seed=3))
        graph = Graph(self.model)
        needed = activation_tensors_to_calibrate(graph, QuantConfig())
        calibration = CalibrationConfig(method="minmax")
        data = {"input": images(32, seed=4)}
        self.ranges = calibrate(self.model, data, calibration, tensors=needed)

    def __call__(self, excluded: frozenset[str]) -> _Built:
        config = QuantConfig(exclude=tuple(sorted(excluded)))
        plan = make_plan(Graph(self.model), self.ranges, config)
        return _Built(to_qdq(self.model, plan), plan)


DATA = {"input": images(40, seed=9)}


def test_the_evaluator_measures_what_the_budget_reads() -> None:
    build = _Build()
    int8 = build(frozenset()).model
    batches = read_samples(DATA, Graph(build.model), 40)
    assert len(batches) == 3  # 16 + 16 + 8: the tallies add over batches
    closeness = lambda f, q: -float(np.abs(f - q).mean())  # noqa: E731
    reference = OutputReference(build.model, batches, None, metric=closeness)
    float_out = make_session(build.model).run(["logits"], DATA)[0]
    int8_out = make_session(int8).run(["logits"], DATA)[0]
    measured = reference.measure(int8)
    assert reference.samples == 40
    assert measured.sqnr_db == pytest.approx(sqnr_db(float_out, int8_out), abs=1e-6)
    assert measured.sqnr_db == pytest.approx(reference.sqnr(int8), abs=1e-6)
    assert measured.agreement == topk_agreement(float_out, int8_out)
    assert measured.metric_drop == pytest.approx(-closeness(float_out, int8_out), rel=1e-5)
    itself = reference.measure(build.model)
    assert itself.sqnr_db == math.inf and itself.agreement == 1.0 and itself.metric_drop == 0.0


class _Perfect:
    """A scorer that finds every model perfect, and counts the models it measured."""

    samples = 7

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, quantized_model: onnx.ModelProto) -> Measured:
        self.calls += 1
        return Measured(math.inf, 1.0)


def test_the_fallback_measures_with_the_callers_scorer() -> None:
    build = _Build()
    score = _Perfect()
    # No int8 model reaches 500 dB; the caller's scorer says this one does.
    result = fallback(build.model, build, DATA, Budget(min_sqnr=500.0), score=score, latency_runs=0)
    assert score.calls == 1 and result.met and result.returned == ()
    assert "measured on 7 samples" in result.report.notes[1]
