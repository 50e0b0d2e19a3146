"""Static mode stores embedding tables as int8 rows too (numerics §D.3)."""

from __future__ import annotations

import numpy as np
import onnx

from eightbit.engine import execute, prepare
from eightbit.export.embedding import TABLE_REASON
from eightbit.graph import make_session
from eightbit.pipeline import quantize
from eightbit.quant import QuantConfig
from tests.dynamic.encoder import encoder, token_ids


def test_static_mode_reads_int8_rows_and_the_engine_runs_it() -> None:
    result = quantize(encoder(), {"ids": token_ids(80)}, QuantConfig(mode="static"), improve="fast")
    tables = [t for t in result.model.graph.initializer if t.name.startswith("table")]
    assert {t.data_type for t in tables} == {onnx.TensorProto.INT8, onnx.TensorProto.FLOAT}
    assert not any(t.name == "table" for t in tables)  # the float table is gone
    added = [d for d in result.plan.nodes if d.reason == TABLE_REASON]
    assert {d.op_type for d in added} == {"Gather", "Cast", "Mul"}
    assert result.plan.tensors["table"].axis == 0
    ids = token_ids(8, seed=5)
    expected = make_session(result.model).run(None, {"ids": ids})[0]
    got = execute(prepare(result), {"ids": ids})["pooled"]
    # A few output steps apart: the float islands (Softmax, the attention MatMuls) run on
    # onnx.reference in the engine and on fused kernels in ONNX Runtime, as they do with a
    # float table.
    assert np.allclose(got, expected, atol=0.03)
    assert result.check is not None and result.check.outputs[0].sqnr_db > 25


def test_an_excluded_lookup_keeps_its_float_table() -> None:
    config = QuantConfig(exclude=("embed",))
    result = quantize(encoder(), {"ids": token_ids(80)}, config, improve="fast")
    assert any(t.name == "table" for t in result.model.graph.initializer)
    assert not any(d.reason == TABLE_REASON for d in result.plan.nodes)
