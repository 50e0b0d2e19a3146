"""One serialization helper for the frozen dataclasses: round trips, and JSON the old code wrote."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from eightbit.errors import ConfigError
from eightbit.improve.presets import DEFAULT_FINETUNE_STEPS, PRESETS, ImproveConfig, preset
from eightbit.plan import NodeDecision, QuantPlan
from eightbit.quant import QuantConfig, QuantParams
from eightbit.serialize import check_fields, to_dict
from eightbit.steps import LayerGain, StepReport

FIXTURES = Path(__file__).parent / "fixtures" / "json"


def _through_json(data: dict[str, object]) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(json.dumps(data, allow_nan=False))
    return loaded


@pytest.mark.parametrize(
    "value",
    [
        LayerGain("conv", -math.inf, math.inf),
        StepReport("x", 0.25, None, math.inf, (LayerGain("a", 1.0, 2.0),), ("n1", "n2")),
        NodeDecision("relu", "Relu", False, "why", None, "conv"),
        QuantConfig(scheme="pow2", exclude=("a", "b"), op_types=("Conv",)),
        QuantConfig(),
        *PRESETS.values(),
        preset("accurate", max_drop=0.01, max_latency=0.8),
    ],
    ids=lambda value: type(value).__name__,
)
def test_each_type_round_trips_through_json(value: object) -> None:
    data = _through_json(value.to_dict())  # type: ignore[attr-defined]
    assert data == value.to_dict()  # type: ignore[attr-defined]  # JSON-ready: lists, "inf"
    assert type(value).from_dict(data) == value  # type: ignore[attr-defined]
    # Field order is declaration order, so that a saved file reads like the dataclass
    # (QuantConfig leaves out its later fields at their defaults: plans keep their old bytes).
    assert list(data) == [name for name in to_dict(value) if name in data]
    assert set(to_dict(value)) - set(data) <= {
        "target",
        "int16",
        "mode",
        "row_scales",
        "tensor_scales",
    }


def test_a_plan_written_by_the_old_code_loads_and_writes_back_the_same() -> None:
    # plan_v2.json was written by the hand-written to_dict methods before this helper
    # (commit 0612e2e): pow2, an exclusion, a fallback step's layers and an exact match.
    text = (FIXTURES / "plan_v2.json").read_text()
    plan = QuantPlan.from_dict(json.loads(text))
    assert plan.config == QuantConfig(
        scheme="pow2", exclude=("first",), op_types=("Conv", "Relu"), mode="static"
    )
    assert plan.steps[-1].after_db == math.inf and plan.steps[-1].layers[0].after_db == math.inf
    assert json.dumps(plan.to_dict(), indent=1) + "\n" == text


def test_an_improve_config_written_by_the_old_code_loads_the_same() -> None:
    data = json.loads((FIXTURES / "improve.json").read_text())
    config = ImproveConfig.from_dict(data)
    assert config == preset("accurate", max_drop=0.01, max_latency=0.8)
    # Fields added since (the clipping choice, SmoothQuant, the outlier split, centring,
    # fine-tuning) take their defaults; the rest reads back as is.
    added = {
        "choose_clipping": True,
        "smooth_quant": True,
        "outlier_channels": True,
        "centre": True,
        "finetune": False,
        "finetune_steps": DEFAULT_FINETUNE_STEPS,
    }
    assert config.to_dict() == {**data, **added}


def test_quant_params_keep_their_own_format() -> None:
    params = QuantParams(np.array([0.5, 0.25], np.float32), np.zeros(2, np.int64), "int8", 0)
    assert QuantParams.from_dict(_through_json(params.to_dict())) == params


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "a thing must be an object"),
        ({"a": 1, "z": 2}, r"a thing has unknown field\(s\) \['z'\]; expected \['a', 'b'\]"),
        ({"b": 1}, r"a thing needs the field\(s\) \['a'\]"),
    ],
)
def test_fields_are_checked_with_one_wording(data: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_fields("a thing", data, ("a", "b"), ("a",))


@pytest.mark.parametrize(
    ("cls", "what"),
    [
        (QuantConfig, "quantization config"),
        (ImproveConfig, "improve config"),
        (NodeDecision, "a plan node"),
        (StepReport, "a plan step"),
        (LayerGain, "a layer gain"),
    ],
)
def test_unknown_fields_are_named_for_every_type(cls: type, what: str) -> None:
    with pytest.raises(ConfigError, match=f"{what} has unknown field"):
        cls.from_dict({"turbo": True})  # type: ignore[attr-defined]
