"""int16 tensors in a model below opset 21 (numerics §Q17): the upgrade's new nodes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from eightbit.graph.normalize import default_opset
from eightbit.pipeline import quantize
from eightbit.quant import QuantConfig
from tests.dynamic.encoder import encoder, token_ids


def test_int16_names_in_an_opset_14_model_whose_upgrade_adds_nodes() -> None:
    """The encoder's ReduceMean reads its axes from an input from opset 18 on, so the
    version converter adds Constant nodes without names; the plan must know them."""
    model = encoder()
    assert default_opset(model) == 14
    config = QuantConfig(mode="static", int16=("hidden",))
    result = quantize(model, {"ids": token_ids(40)}, config, improve="fast")
    assert default_opset(result.model) == 21
    assert result.plan.tensors["hidden"].dtype == "int16"
    session = ort.InferenceSession(result.model.SerializeToString())
    ids = token_ids(4, seed=3)
    assert np.isfinite(session.run(None, {"ids": ids})[0]).all()
