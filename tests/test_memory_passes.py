"""One float pass for a big model's measuring steps (issue 20, docs/numerics.md §C.10).

On a model past ``SHARED_PASS_BYTES`` the clipping choice and bias correction read what
calibration's pass kept instead of running the float model again; below it they run their
own passes. The fixtures are small: the threshold is lowered to make them "big".
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eightbit.analysis import quick_check as quick_check_module
from eightbit.calibrate import CalibrationConfig, calibrate
from eightbit.calibrate import collect as collect_module
from eightbit.export import to_qdq
from eightbit.graph import Graph, normalize
from eightbit.graph import session as session_module
from eightbit.graph.files import write_for_session
from eightbit.improve import clipping_choice as clipping_module
from eightbit.improve import float_pass
from eightbit.improve import measure as measure_module
from eightbit.improve.measure import OutputReference, compare, read_samples
from eightbit.improve.presets import preset
from eightbit.improve.weights import bias_correction as bias_module
from eightbit.improve.weights import bias_shifts as shifts_module
from eightbit.pipeline import quantize, stages
from eightbit.pipeline.state import Settings, State
from eightbit.plan import make_plan, rebias
from eightbit.quant import QuantConfig
from tests.fixtures import models


def _data(samples: int = 40) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((samples, 3, 8, 8)).astype(np.float32)


def _float_passes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each float pass the measuring steps run: the clipping choice's reference
    session and bias correction's comparisons (each runs the float model)."""
    passes: list[str] = []
    session, comparison = measure_module.make_session, bias_module.compare

    def counted_session(model: object, **kwargs: object) -> object:
        if isinstance(model, onnx.ModelProto) and not any(
            node.op_type == "QuantizeLinear" for node in model.graph.node
        ):
            passes.append("reference")
        return session(model, **kwargs)  # type: ignore[arg-type]

    def counted_comparison(*args: object, **kwargs: object) -> object:
        passes.append("comparison")
        return comparison(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(measure_module, "make_session", counted_session)
    monkeypatch.setattr(bias_module, "compare", counted_comparison)
    return passes


def _digest(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString()).hexdigest()


def test_a_big_models_measuring_steps_run_no_float_pass_of_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Catches: the tap's values not handed to the clipping choice or to bias correction
    # (a float pass of their own each), and a small model's passes changed.
    model = models.opset12_model()
    passes = _float_passes(monkeypatch)
    # Scored on as many samples as a big model's choice (C.10.2), to compare the numbers.
    monkeypatch.setattr(clipping_module, "SAMPLES", clipping_module.BIG_MODEL_SAMPLES)
    small = quantize(model, _data())
    assert passes == ["reference", "comparison", "comparison"]  # before and after
    passes.clear()
    monkeypatch.setattr(float_pass, "SHARED_PASS_BYTES", 0)  # every model is "big"
    int8_runs: list[str] = []
    run_int8 = float_pass.int8_outputs

    def counted_int8(*args: object, **kwargs: object) -> np.ndarray:
        int8_runs.append("int8")
        return run_int8(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bias_module, "int8_outputs", counted_int8)
    big = quantize(model, _data())
    assert passes == []
    # The uncorrected model was scored by the clipping choice: only the corrected one runs.
    assert int8_runs == ["int8"]
    # Same decisions, same model; the output SQNRs to float32 sums.
    assert _digest(big.model) == _digest(small.model)
    for mine, theirs in zip(big.plan.steps, small.plan.steps, strict=True):
        assert mine.name == theirs.name
        pairs = ((mine.before_db, theirs.before_db), (mine.after_db, theirs.after_db))
        for value, expected in pairs:
            assert (value is None) == (expected is None)
            if value is not None:
                assert value == pytest.approx(expected, abs=1e-4)
    correction = next(step for step in big.plan.steps if step.name == "bias_correction")
    assert any("§C.10" in note for note in correction.notes)


@pytest.mark.parametrize("run", [None, 3])
def test_the_tap_keeps_what_the_steps_own_passes_compute(
    monkeypatch: pytest.MonkeyPatch, run: int | None
) -> None:
    # Catches: the tap indexing samples by run within a batch rather than from the first
    # calibration sample (runs of 3 in batches of 8), or means summed over other samples.
    if run is not None:
        monkeypatch.setattr(collect_module, "samples_per_run", lambda *args: run)
    model = normalize(models.opset12_model())
    graph = Graph(model)
    inputs = float_pass.layer_inputs(graph)
    tap = float_pass.FloatTap(model, 20, inputs, 11)
    config = CalibrationConfig(batch_size=8)
    ranges = calibrate(model, _data(), config, normalized=True, tap=tap)
    shared = tap.result()
    batches = read_samples(_data(), graph, 20)
    reference = OutputReference(model, batches, None)
    np.testing.assert_allclose(shared.output, reference.values, rtol=1e-6, atol=1e-6)
    qdq = to_qdq(model, make_plan(graph, ranges, QuantConfig()))
    compared = compare(model, qdq, read_samples(_data(), graph, 11), {}, inputs)
    assert shared.mean_samples == 11
    for name in inputs:
        np.testing.assert_allclose(shared.means[name], compared.means[name], rtol=1e-5, atol=1e-6)


def test_a_pass_of_another_model_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # Catches: the shared pass read for a model calibration did not run (a rewrite after
    # calibration makes a new model object): its own passes run instead.
    model = normalize(models.opset12_model())
    other = normalize(models.opset12_model())
    graph = Graph(model)
    tap = float_pass.FloatTap(other, 16, float_pass.layer_inputs(graph), 16)
    ranges = calibrate(other, _data(), CalibrationConfig(), normalized=True, tap=tap)
    shared = tap.result()
    assert shared.serves(other, 16, float_pass.layer_inputs(graph))
    assert not shared.serves(model, 16)
    assert not shared.serves(other, 17)
    passes = _float_passes(monkeypatch)
    plan = make_plan(graph, ranges, QuantConfig())
    bias_module.bias_correction(model, plan, _data(), shared=shared)
    assert passes.count("comparison") == 2
    passes.clear()
    clipping_module.choose_clipping(model, ranges, _data(), QuantConfig(), shared=shared)
    assert passes == ["reference"]


def test_bias_correction_reads_the_clipping_choices_int8_output_only_for_its_ranges() -> None:
    # Catches: the clipping choice's int8 output handed to bias correction after a later
    # step (centring, refinement) made new ranges, so that "before" measured another plan.
    model = normalize(models.opset12_model())
    ranges = calibrate(model, _data(), CalibrationConfig(), normalized=True)
    kept = np.zeros((16, 10), np.float32)
    shared = float_pass.SharedFloat(model, "y", kept, {}, 16, ranges, kept)
    settings = Settings(QuantConfig(), preset("default"), CalibrationConfig())
    state = State(
        settings, None, model, None, None, 0, 0, False, prepared=model, ranges=ranges,
        shared_float=shared,
    )  # fmt: skip
    assert stages._shared_for(state) is shared
    moved = stages._shared_for(replace(state, ranges=ranges.extremes()))
    assert moved is not None and moved.int8_before(ranges, 16) is None
    assert moved.output is kept  # the float pass still serves


def _gemm(transposed: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(5)
    shape = (24, 40) if transposed else (40, 24)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=int(transposed))],
        "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 24])],
        [
            numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), "w"),
            numpy_helper.from_array(rng.standard_normal(24).astype(np.float32), "b"),
        ],
    )
    return normalize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


@pytest.mark.parametrize("transposed", [False, True])
def test_a_big_gemms_shift_summed_by_rows_is_the_layers_run_on_the_mean(
    monkeypatch: pytest.MonkeyPatch, transposed: bool
) -> None:
    # Catches: rows of ΔW paired with the wrong part of the mean or of the per-channel
    # scales (slices of 7 rows of 40 or 24), or B read untransposed.
    model = _gemm(transposed)
    graph = Graph(model)
    data = np.random.default_rng(6).standard_normal((16, 40)).astype(np.float32) + 0.5
    ranges = calibrate(model, data, CalibrationConfig(method="minmax"), normalized=True)
    plan = make_plan(graph, ranges, QuantConfig())
    means = {"x": data.mean(axis=0)}
    in_session = shifts_module.empirical_shifts(graph, graph, plan, ["fc"], means, None)
    monkeypatch.setattr(shifts_module, "SHIFT_SESSION_BYTES", 0)
    monkeypatch.setattr(shifts_module, "SHIFT_ROW_ELEMENTS", 7 * 40)
    assert shifts_module._by_rows(graph, graph, "fc")
    by_rows = shifts_module.empirical_shifts(graph, graph, plan, ["fc"], means, None)
    assert np.abs(in_session["fc"]).max() > 0
    np.testing.assert_allclose(by_rows["fc"], in_session["fc"], rtol=1e-5, atol=1e-7)


def test_a_correction_is_exported_from_biases_shifted_in_place_and_put_back() -> None:
    # Catches: the biases left shifted in the model (every later step would read a
    # corrected model as the planned one), or a QDQ model other than the copy's.
    model = normalize(models.opset12_model())
    graph = Graph(model)
    ranges = calibrate(model, _data(), CalibrationConfig(), normalized=True)
    plan = make_plan(graph, ranges, QuantConfig())
    layers, _ = bias_module.corrected_layers(graph, plan)
    shifts = {
        name: np.linspace(-0.3, 0.3, graph.info(graph.node(name).outputs[0]).shape[1])  # type: ignore[index]
        for name in layers
    }
    before = _digest(model)
    copied = bias_module._apply(model, graph, shifts)
    expected = to_qdq(copied, rebias(Graph(copied), plan))
    made = bias_module._corrected_qdq(model, graph, shifts, plan)
    assert _digest(model) == before
    assert _digest(made) == _digest(expected)
    assert _digest(made) != _digest(to_qdq(model, plan))


def test_a_float_model_checked_from_its_file_is_not_prepacked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Catches: the float weights of a big model's check packed into a copy beside the
    # mapped file (C.9.3), or a small model's check losing its packed session.
    model = normalize(models.opset12_model())
    ranges = calibrate(model, _data(), CalibrationConfig(), normalized=True)
    qdq = to_qdq(model, make_plan(Graph(model), ranges, QuantConfig()))
    path = tmp_path / "float.onnx"
    write_for_session(model, path)
    made: list[bool] = []
    make = quick_check_module.make_session

    def recording(source: object, **kwargs: object) -> object:
        made.append(bool(kwargs.get("prepack", True)))
        return make(source, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(quick_check_module, "make_session", recording)
    batches = [{"input": _data(8)}]
    in_memory = quick_check_module.quick_check(model, qdq, batches)
    assert made == [True, True]
    made.clear()
    from_file = quick_check_module.quick_check(model, qdq, batches, float_file=path)
    assert made == [False, True]  # the float session, then the int8 one
    assert in_memory is not None and from_file is not None
    assert from_file.outputs[0].sqnr_db == pytest.approx(in_memory.outputs[0].sqnr_db, abs=1e-3)


def _int8_samples(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records, per int8 session the measuring steps open, the samples it runs."""
    runs: list[int] = []
    session = float_pass.handed_session

    class Counted:
        def __init__(self, inner: object) -> None:
            self.inner = inner
            runs.append(0)

        def run(self, names: object, feeds: dict[str, np.ndarray]) -> object:
            runs[-1] += len(next(iter(feeds.values())))
            return self.inner.run(names, feeds)  # type: ignore[attr-defined]

    def counted(model: object, **kwargs: object) -> object:
        made = session(model, **kwargs)  # type: ignore[arg-type]
        quantized = isinstance(model, onnx.ModelProto) and any(
            node.op_type == "QuantizeLinear" for node in model.graph.node
        )
        return Counted(made) if quantized else made

    monkeypatch.setattr(float_pass, "handed_session", counted)
    return runs


def test_a_big_models_clipping_choice_scores_on_bias_corrections_samples(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Catches (C.10.2): a big model's two candidates scored on all 64 samples again (128
    # int8 sample runs of VGG-16 instead of 32), or a small model's on fewer than 64.
    model = normalize(models.opset12_model())
    data = _data(80)
    ranges = calibrate(model, data, CalibrationConfig(), normalized=True)
    runs = _int8_samples(monkeypatch)
    clipping_module.choose_clipping(model, ranges, data, QuantConfig())
    assert runs == [clipping_module.SAMPLES] * 2 == [64, 64]
    runs.clear()
    monkeypatch.setattr(float_pass, "SHARED_PASS_BYTES", 0)  # every model is "big"
    tap = float_pass.FloatTap(model, 16)
    calibrate(model, data, CalibrationConfig(), normalized=True, tap=tap)
    _, report, shared = clipping_module.choose_clipping(
        model, ranges, data, QuantConfig(), shared=tap.result()
    )
    assert runs == [bias_module.DEFAULT_SAMPLES] * 2 == [16, 16]
    # Its chosen candidate's output is still bias correction's "before" on its samples.
    assert shared is not None and shared.int8_before(shared.int8_ranges, 16) is not None
    assert report.notes and "calibration samples" in report.notes[0]


@pytest.mark.parametrize("preset_name", ["fast", "default"])
def test_a_big_models_check_reads_calibrations_float_outputs(
    monkeypatch: pytest.MonkeyPatch, preset_name: str
) -> None:
    # Catches (C.10.3): the quick check of a big model opening a float session of its own
    # (a file of the weights written and a session built), its float outputs taken from
    # other samples than the held-back ones, or a small model's check changed.
    model = models.opset12_model()
    small = quantize(model, _data(), improve=preset_name)
    assert small.check is not None
    opened: list[bool] = []
    make = quick_check_module.make_session

    def recording(source: object, **kwargs: object) -> object:
        quantized = isinstance(source, onnx.ModelProto) and any(
            node.op_type == "QuantizeLinear" for node in source.graph.node
        )
        opened.append(quantized)
        return make(source, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(quick_check_module, "make_session", recording)
    monkeypatch.setattr(float_pass, "SHARED_PASS_BYTES", 0)  # every model is "big"
    monkeypatch.setattr(clipping_module, "BIG_MODEL_SAMPLES", clipping_module.SAMPLES)
    big = quantize(model, _data(), improve=preset_name)
    assert opened == [True]  # the int8 model's session only
    assert big.check is not None and big.check.samples == small.check.samples == 8
    assert _digest(big.model) == _digest(small.model)
    for mine, theirs in zip(big.check.outputs, small.check.outputs, strict=True):
        assert mine.sqnr_db == pytest.approx(theirs.sqnr_db, abs=1e-3)
        assert mine.top1_agreement == theirs.top1_agreement


def test_the_measuring_steps_int8_models_are_let_go_of_before_their_sessions_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (C.11) On a big model the clipping choice's and bias correction's int8 models are
    # held by nothing of ours when ONNX Runtime opens their session (its copy, and the
    # packed weights it makes as it opens, are then the only ones): each is made in the
    # call that measures it, handed on, written to the session's file and let go.
    monkeypatch.setattr(float_pass, "SHARED_PASS_BYTES", 0)  # read calibration's pass
    monkeypatch.setattr(session_module, "SESSION_FILE_BYTES", 0)  # sessions from files
    written: list[onnx.ModelProto] = []
    holders: list[int] = []
    write, open_ = session_module.write_for_session, session_module._open

    def writing(model: onnx.ModelProto, *args: Any) -> None:
        written.append(model)
        write(model, *args)

    def opening(*args: Any) -> Any:
        if written and any(n.op_type == "QuantizeLinear" for n in written[-1].graph.node):
            holders.append(sys.getrefcount(written[-1]))  # ``written``, the argument
        written.clear()
        return open_(*args)

    monkeypatch.setattr(session_module, "write_for_session", writing)
    monkeypatch.setattr(session_module, "_open", opening)
    model = models.conv_bn_relu()
    improve = replace(preset("default"), bias_correction=True)  # its int8 runs too
    quantize(model, _data(), improve=improve, check_samples=0)
    assert len(holders) >= 3  # the clipping choice's two candidates, bias correction's after
    assert set(holders) == {2}
