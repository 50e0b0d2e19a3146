"""Per-slice and per-part verdicts (§A.9) against a direct numpy oracle."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from eightbit.analysis.outputs import OutputTally
from eightbit.analysis.slices import (
    SILENT_MEAN_SQUARE,
    Part,
    Probability,
    judged_axes,
    output_parts,
    output_probabilities,
    output_spatial_axes,
    slice_verdict,
)
from eightbit.graph import Graph, normalize
from tests.fixtures.joins import BOXES, CLASSES, large_small_concat, levels_head


def _oracle(reference: np.ndarray, quantized: np.ndarray, axis: int) -> np.ndarray:
    """SQNR of each slice along ``axis``, one slice at a time with np.take."""
    values = []
    for index in range(reference.shape[axis]):
        ref = np.take(reference, index, axis=axis).astype(np.float64)
        out = np.take(quantized, index, axis=axis).astype(np.float64)
        noise = float(np.sum((ref - out) ** 2))
        signal = float(np.sum(ref**2))
        values.append(math.inf if noise == 0 else 10 * math.log10(signal / noise))
    return np.array(values)


def _pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    reference = rng.standard_normal((7, 5, 3, 11)) * rng.uniform(0.1, 10, size=(1, 5, 1, 1))
    quantized = reference + rng.standard_normal(reference.shape) * 0.05
    return reference, quantized


def test_worst_slice_matches_the_numpy_oracle_on_both_judged_axes() -> None:
    reference, quantized = _pair()
    verdict = slice_verdict(reference, quantized)
    assert verdict is not None
    per_axis = {axis: _oracle(reference, quantized, axis) for axis in judged_axes(4)}
    assert set(per_axis) == {1, 3}
    axis, sqnrs = min(per_axis.items(), key=lambda item: item[1].min())
    assert verdict.worst_axis == axis
    assert verdict.worst_index == int(np.argmin(sqnrs))
    assert verdict.worst_sqnr_db == pytest.approx(sqnrs.min(), abs=1e-9)
    assert verdict.slices == 5 + 11
    assert verdict.collapsed == ()


def test_batches_accumulate_to_the_whole_array_verdict() -> None:
    reference, quantized = _pair(1)
    tally = OutputTally("out", parts=(Part("a", 1, 0, 2), Part("b", 1, 2, 5)))
    for start in range(0, 7, 3):
        tally.update(reference[start : start + 3], quantized[start : start + 3])
    streamed = tally.result().slices
    whole = slice_verdict(reference, quantized, tally.parts)
    assert streamed is not None and whole is not None
    assert streamed.worst_sqnr_db == pytest.approx(whole.worst_sqnr_db, abs=1e-9)
    for part, start, stop in zip(streamed.parts, (0, 2), (2, 5), strict=True):
        block = (slice(None), slice(start, stop))
        ref, out = reference[block], quantized[block]
        expected = 10 * math.log10(np.sum(ref**2) / np.sum((ref - out) ** 2))
        assert part.sqnr_db == pytest.approx(expected, abs=1e-9)


def test_a_slice_int8_sets_to_a_constant_is_collapsed() -> None:
    reference, quantized = _pair(2)
    quantized[:, 2] = 0.0  # slice 2 of axis 1 carries no signal
    verdict = slice_verdict(reference, quantized)
    assert verdict is not None and verdict.has_collapse
    assert (1, 2) in verdict.collapsed
    assert verdict.worst_sqnr_db == pytest.approx(0.0, abs=1e-9)
    # A float slice that is constant itself is not a collapse when int8 keeps it exactly.
    reference[:, 2] = quantized[:, 2] = 0.5
    assert not slice_verdict(reference, quantized).has_collapse  # type: ignore[union-attr]


def test_a_constant_int8_slice_with_some_signal_left_is_still_collapsed() -> None:
    reference = np.linspace(0.9, 1.1, 40).reshape(4, 2, 5)
    quantized = np.ones_like(reference)  # SQNR ~ 30 dB, but every value the same
    verdict = slice_verdict(reference, quantized)
    assert verdict is not None and verdict.worst_sqnr_db > 20
    assert verdict.has_collapse


def test_output_parts_follow_the_concat_head() -> None:
    graph = Graph(normalize(large_small_concat()))
    (parts,) = output_parts(graph).values()
    assert [(p.name, p.axis, p.start, p.stop) for p in parts] == [
        ("boxes", 1, 0, BOXES),
        ("scores", 1, BOXES, BOXES + CLASSES),
    ]


def test_an_output_with_samples_only_has_no_slices() -> None:
    assert slice_verdict(np.ones(5), np.ones(5)) is None


def test_a_slice_whose_int8_error_exceeds_its_signal_is_collapsed() -> None:
    reference, quantized = _pair(3)
    quantized[:, 1] = -reference[:, 1]  # varies, but the error is twice the signal: -6 dB
    verdict = slice_verdict(reference, quantized)
    assert verdict is not None and (1, 1) in verdict.collapsed
    assert verdict.worst_sqnr_db == pytest.approx(10 * math.log10(0.25), abs=1e-9)


def test_constancy_is_judged_over_every_batch_not_the_last() -> None:
    rng = np.random.default_rng(4)
    tally = OutputTally("out")
    for level in (5.0, 10.0):
        reference = level + 0.1 * rng.standard_normal((4, 3))
        tally.update(reference, np.full_like(reference, level))  # constant within a batch only
    verdict = tally.result().slices
    assert verdict is not None and not verdict.has_collapse


def test_an_output_whose_shape_changes_between_batches_is_judged_whole() -> None:
    tally = OutputTally("tokens")
    for length in (3, 5):
        reference = np.ones((2, length))
        tally.update(reference, reference)
    result = tally.result()
    assert result.slices is None and result.sqnr_db == math.inf


def _scores(seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (samples, 6 classes) rounded to the 8-bit [0, 1] grid; class 4
    never fires (values ~1e-3, all rounded to 0)."""
    rng = np.random.default_rng(seed)
    reference = rng.uniform(0.0, 1.0, size=(50, 6))
    reference[:, 4] = rng.uniform(0.0, 1.5e-3, size=50)
    return reference, np.round(reference * 255) / 255


def test_a_probability_slice_that_never_fires_is_silent_not_collapsed() -> None:
    reference, quantized = _scores()
    plain = slice_verdict(reference, quantized)
    assert plain is not None and (1, 4) in plain.collapsed  # judged without the graph's help
    verdict = slice_verdict(reference, quantized, probabilities=(Probability(),))
    assert verdict is not None and not verdict.has_collapse
    assert verdict.silent == 1 and verdict.worst_index != 4
    assert verdict.worst_sqnr_db > 20


def test_a_probability_slice_that_fires_is_judged_even_when_rare() -> None:
    reference, quantized = _scores()
    reference[7, 4] = 0.9  # one confident sample: mean square 0.016, far above the bound
    assert np.mean(reference[:, 4] ** 2) > SILENT_MEAN_SQUARE
    quantized[:, 4] = 0.0  # int8 lost the class
    verdict = slice_verdict(reference, quantized, probabilities=(Probability(),))
    assert verdict is not None and (1, 4) in verdict.collapsed and verdict.silent == 0


def test_only_the_probability_part_of_a_join_may_be_silent() -> None:
    reference, quantized = _scores()
    boxes = np.zeros((50, 2))
    boxes[:, 0] = np.linspace(0, 300, 50)
    boxes[:, 1] = 1e-3  # a tiny box column int8 loses: a real collapse, not a silence
    reference = np.concatenate([boxes, reference], axis=1)
    quantized = np.concatenate([np.round(boxes / 1.2) * 1.2, quantized], axis=1)
    spans = (Probability(1, 2, 8),)
    verdict = slice_verdict(reference, quantized, probabilities=spans)
    assert verdict is not None and verdict.collapsed == ((1, 1),)
    assert verdict.silent == 1  # class 4, at index 6


def test_output_probabilities_follow_sigmoids_through_moves_and_joins() -> None:
    (spans,) = output_probabilities(Graph(normalize(large_small_concat()))).values()
    assert spans == (Probability(1, BOXES, BOXES + CLASSES),)
    flat = output_probabilities(Graph(normalize(large_small_concat(flatten=True))))
    assert list(flat.values()) == [(Probability(1, BOXES, BOXES + CLASSES),)]


def _written_softmax(same_exp: bool = True) -> onnx.ModelProto:
    """logits -> Exp(logits - max) / Expand(Reshape(ReduceSum)), as jax2tf writes a softmax."""
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["x", "m"], ["d"]),
        helper.make_node("Exp", ["d"], ["e"]),
        helper.make_node("ReduceSum", ["e", "axes"], ["s"], keepdims=0),
        helper.make_node("Reshape", ["s", "column"], ["r"]),
        helper.make_node("Expand", ["r", "wide"], ["b"]),
        helper.make_node("Exp", ["x"], ["other"]),
        helper.make_node("Div", ["e" if same_exp else "other", "b"], ["p"]),
    ]
    constants = [
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
        numpy_helper.from_array(np.array([-1, 1], np.int64), "column"),
        numpy_helper.from_array(np.array([1, 6], np.int64), "wide"),
    ]
    graph = helper.make_graph(
        nodes,
        "written_softmax",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("p", onnx.TensorProto.FLOAT, ["N", 6])],
        constants,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_softmax_written_as_elementary_ops_is_a_probability() -> None:
    assert output_probabilities(Graph(_written_softmax())) == {"p": (Probability(),)}
    # exp(d) / sum(exp(d)) only: another exponential over that sum may exceed 1
    assert output_probabilities(Graph(_written_softmax(same_exp=False))) == {}


def test_output_parts_are_found_through_the_moves_of_a_levels_head() -> None:
    """(A.9) The Concat of box and objectness is two Reshapes, a Concat of levels and a
    Transpose away from the output: the levels are parts along axis 1, box and objectness
    along axis 2."""
    graph = Graph(normalize(levels_head()))
    (parts,) = output_parts(graph).values()
    assert [(p.axis, p.start, p.stop) for p in parts] == [
        (1, 0, 64),
        (1, 64, 80),
        (2, 0, BOXES),
        (2, BOXES, BOXES + 1),
    ]
    (spans,) = output_probabilities(graph).values()
    assert spans == (Probability(2, BOXES, BOXES + 1),)


def test_a_detector_output_is_judged_along_its_score_axis_alone() -> None:
    """(A.9) Beside probability parts, the other axis holds anchor positions: a quiet
    anchor's noisy box values are not the output's worst slice."""
    rng = np.random.default_rng(0)
    reference = rng.uniform(0.5, 1.0, (20, 30, 5))
    quantized = reference + rng.normal(0, 0.01, reference.shape)
    reference[:, 7, :] *= 1e-2  # a quiet anchor: its error is as large as its values
    spans = (Probability(2, 4, 5),)
    verdict = slice_verdict(reference, quantized, probabilities=spans)
    assert verdict is not None and verdict.worst_axis == 2
    assert verdict.slices == 5 and not verdict.collapsed
    whole = slice_verdict(reference, quantized)
    assert whole is not None and whole.worst_axis == 1 and whole.collapsed == ((1, 7),)


def _probability_map(channels_last: bool = False) -> onnx.ModelProto:
    """x [N, 3, 8, 12] -> Conv (2 maps) -> Mul by a constant -> Sigmoid: a detector's
    probability map [N, 2, 8, 12]; ``channels_last``: then Transposed to [N, 8, 12, 2]."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((2, 3, 3, 3)).astype(np.float32), "w")
    scale = numpy_helper.from_array(np.array(0.5, np.float32), "k")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["k", "c"], ["s"]),
        helper.make_node("Sigmoid", ["s"], ["p" if not channels_last else "q"]),
    ]
    shape = ["N", 2, 8, 12]
    if channels_last:
        nodes.append(helper.make_node("Transpose", ["q"], ["p"], perm=[0, 2, 3, 1]))
        shape = ["N", 8, 12, 2]
    graph = helper.make_graph(
        nodes,
        "probability_map",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 12])],
        [helper.make_tensor_value_info("p", onnx.TensorProto.FLOAT, shape)],
        [weight, scale],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_map_written_by_a_convolution_has_spatial_axes() -> None:
    assert output_spatial_axes(Graph(normalize(_probability_map()))) == {"p": (2, 3)}
    # Moved to channels last, the layout is no longer the convolution's: judged as before.
    assert output_spatial_axes(Graph(normalize(_probability_map(channels_last=True)))) == {}
    assert output_spatial_axes(Graph(normalize(large_small_concat()))) == {}


def test_a_maps_rows_and_columns_are_not_judged() -> None:
    """(A.9) A text detector's map whose last column holds almost no text: judged along
    its width, that column would be the worst slice; judged by channel, it is not."""
    rng = np.random.default_rng(3)
    reference = rng.uniform(0.2, 1.0, size=(4, 2, 8, 12))
    reference[..., -1] = 1e-3  # a stripe of background
    quantized = reference + rng.normal(0, 0.01, size=reference.shape)
    by_width = slice_verdict(reference, quantized)
    by_channel = slice_verdict(reference, quantized, spatial=(2, 3))
    assert by_width is not None and by_channel is not None
    assert by_width.worst_axis == 3 and by_width.worst_index == 11
    assert by_channel.worst_axis == 1 and by_channel.slices == 2
    assert by_channel.worst_sqnr_db == pytest.approx(_oracle(reference, quantized, 1).min())


def test_the_quick_check_judges_a_map_by_its_channels() -> None:
    import eightbit

    model = _probability_map()
    data = {"x": np.random.default_rng(1).standard_normal((40, 3, 8, 12)).astype(np.float32)}
    check = eightbit.quantize(model, data, improve="fast").check
    assert check is not None
    (output,) = check.outputs
    assert output.slices is not None and output.slices.worst_axis == 1
    assert output.slices.slices == 2  # the two maps, no row or column
