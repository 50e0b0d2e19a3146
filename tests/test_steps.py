"""Step reports and how the plan records them (plan version 2; version 1 still loads)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from eightbit.errors import ConfigError
from eightbit.plan import PLAN_VERSION, QuantPlan
from eightbit.quant import QuantConfig
from eightbit.steps import LayerGain, StepReport

REPORT = StepReport(
    name="bias_correction",
    seconds=1.5,
    before_db=17.25,
    after_db=math.inf,
    layers=(LayerGain("conv", 20.0, 22.5), LayerGain("gemm", -math.inf, 3.0)),
    notes=("kept",),
)


def test_report_round_trips_through_json_with_infinities() -> None:
    text = json.dumps(REPORT.to_dict(), allow_nan=False)  # JSON has no inf: written as text
    again = StepReport.from_dict(json.loads(text))
    assert again == REPORT
    assert again.gain_db == math.inf
    assert StepReport("x", 0.0, None, 2.0).gain_db is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"seconds": 1.0}, "needs the field"),
        ({"name": "x", "seconds": 1.0, "extra": 1}, "unknown field"),
        ({"name": "x", "seconds": "fast"}, "'seconds' must be a number"),
        ({"name": "x", "seconds": 1.0, "notes": "one"}, "'notes' must be a list"),
        ({"name": "", "seconds": 1.0}, "non-empty string"),
        ({"name": "x", "seconds": 1.0, "layers": [{"layer": "a"}]}, "needs the field"),
    ],
)
def test_malformed_reports_are_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StepReport.from_dict(data)


def test_plan_records_steps_and_loads_version_1(tmp_path: Path) -> None:
    plan = QuantPlan(config=QuantConfig(), tensors={}, nodes=(), steps=(REPORT,))
    path = tmp_path / "plan.json"
    plan.save(path)
    document = json.loads(path.read_text())
    assert document["version"] == PLAN_VERSION == 2
    assert document["steps"][0]["name"] == "bias_correction"
    assert QuantPlan.load(path) == plan

    document["version"] = 1  # a plan written before steps existed
    del document["steps"]
    path.write_text(json.dumps(document))
    assert QuantPlan.load(path).steps == ()
