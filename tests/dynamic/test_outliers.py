"""Outlier input channels in float (numerics §D.5): found on data, the function unchanged,
the planted channel's range out of the int8 product."""

from __future__ import annotations

import numpy as np
import onnx

from eightbit.graph import Graph, make_session, normalize
from eightbit.improve.outliers import outlier_channels, split_outliers
from eightbit.pipeline import quantize
from eightbit.quant import QuantConfig
from tests.dynamic.encoder import encoder, token_ids


def _run(model: onnx.ModelProto, ids: np.ndarray, name: str = "pooled") -> np.ndarray:
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    if name not in [o.name for o in exposed.graph.output]:
        exposed.graph.output.extend([onnx.helper.make_empty_tensor_value_info(name)])
    session = make_session(exposed)
    return np.asarray(session.run([name], {"ids": ids})[0])


def _sqnr(reference: np.ndarray, got: np.ndarray) -> float:
    noise = np.sum((reference.astype(np.float64) - got) ** 2)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / noise))


def test_the_planted_channel_is_found_and_the_function_kept() -> None:
    model = normalize(encoder(outlier=40.0))
    ids = token_ids(32)
    channels = outlier_channels(model, {"ids": ids})
    assert channels == {"gemm": (3,)}  # the hidden channel the planted column makes large
    split = split_outliers(model, channels)
    assert np.allclose(_run(model, ids), _run(split, ids), rtol=1e-4, atol=1e-4)
    # The int8 product now reads the input with the outlier zeroed: its range is the rest's.
    main_input = next(n for n in split.graph.node if n.name == "gemm").input[0]
    masked, hidden = _run(split, ids, main_input), _run(model, ids, "rows")
    assert np.all(masked[:, 3] == 0) and np.abs(masked).max() < np.abs(hidden[:, 3]).max() / 6
    gemm = Graph(split).initializers["w2"]
    assert np.all(gemm[:, 3] == 0)  # the weight's outlier column (transB) is zeroed too


def test_outliers_in_float_raise_the_output_sqnr() -> None:
    ids, check = token_ids(64, seed=2), token_ids(32, seed=3)
    float_model = encoder(outlier=40.0)
    without = quantize(float_model, None, QuantConfig(mode="dynamic"))
    with_data = quantize(float_model, {"ids": ids}, QuantConfig(mode="dynamic"), check_samples=0)
    reference = _run(float_model, check)
    gain = _sqnr(reference, _run(with_data.model, check)) - _sqnr(
        reference, _run(without.model, check)
    )
    assert gain > 6
