"""Runs smaller than a batch (issue 20, docs/numerics.md §C.9): the same statistics.

A big model's batch runs in slices of ``samples_per_run`` samples; calibration's ranges
and histograms, and the quick check, must be exactly what whole batches give.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eightbit.analysis import quick_check as quick_check_module
from eightbit.calibrate import CalibrationConfig, Ranges, calibrate
from eightbit.calibrate import collect as collect_module
from eightbit.export import to_qdq
from eightbit.graph import Graph, normalize
from eightbit.graph import run_size as run_size_module
from eightbit.graph import session as session_module
from eightbit.graph.run_size import activation_bytes, samples_per_run, weight_bytes
from eightbit.graph.view import InitializerArrays
from eightbit.improve import float_pass
from eightbit.improve.presets import preset
from eightbit.improve.weights import bias_correction as bias_module
from eightbit.improve.weights import bias_shifts as shifts_module
from eightbit.pipeline import judging, quantize, stages
from eightbit.pipeline.state import Settings, SpilledModel, State
from eightbit.plan import make_plan
from eightbit.quant import QuantConfig, dequantize_values, quantize_values
from tests.fixtures import models

# 256 values per sample of the Conv's output, counted every 7th (coprime with 256): the
# counted positions of a sample depend on where it sits in its batch (C.9.2).
CONFIG = CalibrationConfig(batch_size=8, histogram_values_per_sample=37, bins=2048)


def _data(samples: int = 13) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((samples, 3, 8, 8)).astype(np.float32)


def _calibrated(monkeypatch: pytest.MonkeyPatch, run: int | None) -> Ranges:
    if run is not None:
        monkeypatch.setattr(collect_module, "samples_per_run", lambda *args: run)
    model = normalize(models.conv_bn_relu())
    return calibrate(model, _data(), CONFIG, normalized=True)


def _histograms(ranges: Ranges) -> dict[str, tuple[int, int, list[int], float, float]]:
    found = {}
    for name in ranges.tensors:
        h = ranges.histogram(name)
        assert h is not None
        found[name] = (h.exponent, h.offset, h.counts.tolist(), h.min, h.max)
    return found


@pytest.mark.parametrize("run", [1, 3, 5])
def test_slices_of_a_batch_give_the_ranges_and_histograms_of_whole_batches(
    monkeypatch: pytest.MonkeyPatch, run: int
) -> None:
    # Catches: the slices counting from their own first value ([::stride] instead of the
    # batch's positions, C.9.2), or a slice observed twice or not at all.
    whole = _calibrated(monkeypatch, None)
    sliced = _calibrated(monkeypatch, run)
    assert sliced.tensors == whole.tensors
    assert _histograms(sliced) == _histograms(whole)
    assert sliced.samples == whole.samples == 13


def test_calibration_runs_the_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    # Catches: calibrate ignoring the run size (the whole batch in one run).
    seen: list[int] = []
    runner = collect_module.model_runner

    def counting(*args: object) -> object:
        run = runner(*args)  # type: ignore[arg-type]

        def counted(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            seen.append(len(next(iter(batch.values()))))
            return run(batch)

        return counted

    monkeypatch.setattr(collect_module, "model_runner", counting)
    _calibrated(monkeypatch, 3)
    assert seen == [3, 3, 2, 3, 2]  # batches of 8 and 5, in runs of at most 3


def _matmul(width: int = 64) -> onnx.ModelProto:
    """x -> MatMul(W): 16 KiB of weights, 512 bytes of activations per sample."""
    weight = np.random.default_rng(3).standard_normal((width, width)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="layer")],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", width])],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_samples_per_run_fits_the_activations_beside_the_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Catches: the weights left out of the budget, or counted once (the model's copy and
    # ONNX Runtime's are both alive during a run).
    graph = Graph(normalize(_matmul()))
    assert activation_bytes(graph) == 2 * 64 * 4  # x and y, one sample each
    assert samples_per_run(graph, 16) == 16  # a small model: whole batches
    monkeypatch.setattr(run_size_module, "MIN_ACTIVATION_BYTES", 1)
    room = 2 * activation_bytes(graph) + activation_bytes(graph) // 2
    monkeypatch.setattr(run_size_module, "RUN_BYTES", 2 * weight_bytes(graph) + room)
    assert samples_per_run(graph, 16) == 2  # the weights count twice (C.9.1)
    monkeypatch.setattr(run_size_module, "RUN_BYTES", weight_bytes(graph) + room)
    assert samples_per_run(graph, 16) == 1
    monkeypatch.setattr(run_size_module, "RUN_BYTES", 0)
    assert samples_per_run(graph, 16) == 1


def test_quick_check_in_slices_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    # Catches: slices dropped or repeated in the quick check (its samples and SQNR move).
    model = normalize(models.conv_bn_relu())
    ranges = calibrate(model, _data(), CONFIG, normalized=True)
    qdq = to_qdq(model, make_plan(Graph(model), ranges, QuantConfig()))
    batches = [{"input": _data(13)[:8]}, {"input": _data(13)[8:]}]
    whole = quick_check_module.quick_check(model, qdq, batches)
    monkeypatch.setattr(quick_check_module, "samples_per_run", lambda *args: 3)
    sliced = quick_check_module.quick_check(model, qdq, batches)
    assert whole is not None and sliced is not None
    assert sliced.to_dict() == whole.to_dict()
    assert sliced.samples == 13


def test_bias_correction_measures_with_no_corrected_float_model_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Catches: a corrected float model (a copy of every weight) kept alive while the int8
    # models are measured; it is made again at the end instead.
    model = normalize(models.conv_bn_relu())
    ranges = calibrate(model, _data(), CONFIG, normalized=True)
    plan = make_plan(Graph(model), ranges, QuantConfig())
    made: list[onnx.ModelProto] = []
    held: list[int] = []
    apply, measure = bias_module._apply, bias_module.compare

    def recording(*args: object) -> onnx.ModelProto:
        made.append(apply(*args))  # type: ignore[arg-type]
        return made[-1]

    def checking(*args: object, **kwargs: object) -> object:
        # References beyond the list's, the loop's and getrefcount's own argument.
        held.append(max((sys.getrefcount(m) - 3 for m in made), default=0))
        return measure(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bias_module, "_apply", recording)
    monkeypatch.setattr(bias_module, "compare", checking)
    corrected, report = bias_module.bias_correction(model, plan, _data(), keep="always")
    assert held == [0, 0, 0]  # before, after, and the output layer's try
    assert report.after_db is not None
    assert corrected is made[-1]  # the kept correction, made again


def test_weight_shift_reads_a_big_weight_once_and_writes_over_the_stored_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Catches: the float weight converted a second time for the reference (the same model
    # before learned rounding), or a ΔW that is not the stored weight minus the float one.
    model = normalize(_matmul(width=512))  # a 1 MiB weight: converted on every access
    data = np.random.default_rng(2).standard_normal((8, 512)).astype(np.float32)
    ranges = calibrate(model, data, CalibrationConfig(method="minmax"), normalized=True)
    plan = make_plan(Graph(model), ranges, QuantConfig())
    graph = Graph(model)
    node = graph.node("layer")
    weight = graph.initializers["w"]
    params = plan.tensors["w"]
    expected = (
        dequantize_values(quantize_values(weight, params), params).astype(np.float64) - weight
    ).astype(np.float32)
    reads: list[str] = []
    read = InitializerArrays.__getitem__

    def counted(self: InitializerArrays, name: str) -> np.ndarray:
        reads.append(name)
        return read(self, name)

    monkeypatch.setattr(InitializerArrays, "__getitem__", counted)
    delta = shifts_module.weight_delta(graph, Graph(model), plan, node, np.float32)
    assert reads == ["w"]
    assert np.abs(expected).max() > 0
    np.testing.assert_array_equal(delta, expected)


def test_a_big_float_model_waits_on_disk_once_prepared_moved_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Catches: the float model kept in memory beside the prepared one (no spill), or a
    # spilled model read back as another model.
    monkeypatch.setattr(session_module, "SESSION_FILE_BYTES", 0)  # every model is "big"
    model = normalize(models.conv_bn_relu())
    other = normalize(models.conv_bn_relu(seed=1))
    settings = Settings(QuantConfig(), preset("fast"), CalibrationConfig())
    same = State(
        settings, None, model, None, None, 0, 0, True, prepared=model, planned_source=model
    )
    assert same.float_source is model  # prepared is the float model: nothing to spill
    moved = replace(same, prepared=other)
    assert isinstance(moved.float_source, SpilledModel)
    assert moved.planned_source is moved.float_source  # one model, one file
    for read in (moved.float_model, moved.planned):
        assert read is not None and read is not model
        assert _weights(read) == _weights(model)
        assert [n.SerializeToString() for n in read.graph.node] == [
            n.SerializeToString() for n in model.graph.node
        ]
    planned = replace(moved, planned_source=other, prepared=model)
    assert planned.planned_source is not None
    assert isinstance(planned.planned_source, SpilledModel)  # planned, once prepared moved on
    assert _weights(planned.planned) == _weights(other)  # type: ignore[arg-type]


def _weights(model: onnx.ModelProto) -> dict[str, bytes]:
    return {t.name: numpy_helper.to_array(t).tobytes() for t in model.graph.initializer}


def test_quantize_with_the_float_model_on_disk_makes_the_same_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Catches: the quick check or the result reading another float model than the one in
    # memory would have been (their figures and the int8 model must not move), or the
    # result loading a float model nobody asked for (issue 20: 528 MB at VGG-16's end).
    model = models.conv_bn_relu()
    data = _data(40)
    equalize = stages.equalize

    def moved(*args: object, **kwargs: object) -> tuple[onnx.ModelProto, object]:
        # A new prepared model, as equalization makes when it scales (this one has
        # nothing to scale), so that the float model waits on disk from then on.
        equalized, report = equalize(*args, **kwargs)  # type: ignore[arg-type]
        copy = onnx.ModelProto()
        copy.CopyFrom(equalized)
        return copy, report

    monkeypatch.setattr(stages, "equalize", moved)
    kept = quantize(model, data)
    monkeypatch.setattr(session_module, "SESSION_FILE_BYTES", 0)
    loads: list[object] = []
    load = SpilledModel.load

    def counted(self: SpilledModel) -> onnx.ModelProto:
        # Calibration and the check read back the model they let go of while their
        # session ran (§C.11): the prepared and int8 models, not the float model on disk.
        if sys._getframe(1).f_code.co_qualname not in ("_calibrate_from_disk", "Check.run"):
            loads.append(self)
        return load(self)

    monkeypatch.setattr(SpilledModel, "load", counted)
    spilled = quantize(model, data)
    # None: the quick check runs the file itself, the result reads it only when asked.
    assert not loads
    assert spilled.model.SerializeToString() == kept.model.SerializeToString()
    assert spilled.check is not None and kept.check is not None
    assert spilled.check.to_dict() == kept.check.to_dict()
    assert _weights(spilled.float_model) == _weights(kept.float_model)
    assert len(loads) == 1


def test_a_big_model_is_let_go_of_while_calibration_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (C.11) While calibration's session runs, the float model it was given is held by
    # nothing of ours (ONNX Runtime's copy of the weights is the only one in memory), and
    # the session reads the weights from the model's file; afterwards the steps read it
    # again, whole: the int8 model is the same as when it stayed in memory.
    model, data = models.conv_bn_relu(), _data(40)
    monkeypatch.setattr(float_pass, "SHARED_PASS_BYTES", 0)  # with calibration's tap
    kept = quantize(model, data)
    monkeypatch.setattr(session_module, "SESSION_FILE_BYTES", 0)  # every model is "big"
    given: list[onnx.ModelProto] = []
    holders: list[int] = []
    spill, observe_all = SpilledModel.of.__func__, collect_module.observe_all  # type: ignore[attr-defined]

    def spilled(cls: type[SpilledModel], model: onnx.ModelProto) -> SpilledModel:
        if not given:
            given.append(model)  # calibration's is the first model spilled
        return spill(cls, model)

    def observed(*args: object, **kwargs: object) -> None:
        holders.append(sys.getrefcount(given[0]))
        observe_all(*args, **kwargs)

    monkeypatch.setattr(SpilledModel, "of", classmethod(spilled))
    monkeypatch.setattr(collect_module, "observe_all", observed)
    result = quantize(model, data)
    # ``given`` and getrefcount's argument only: the state, the tap, the pipeline let go.
    assert holders == [2]
    assert result.model.SerializeToString() == kept.model.SerializeToString()


def test_a_big_model_is_corrected_in_place_once_its_planned_form_is_on_disk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (C.11) Bias correction of a big model writes the corrected biases into the model it
    # was given (its uncorrected form, the float model and the plan's source, waits on
    # disk), not into a copy beside it; the int8 model and the float model are the same.
    model, data = models.conv_bn_relu(), _data(40)
    improve = replace(preset("default"), bias_correction=True)  # kept even if not better
    kept = quantize(model, data, improve=improve)
    monkeypatch.setattr(session_module, "SESSION_FILE_BYTES", 0)  # every model is "big"
    applied: list[bool] = []
    apply = bias_module._apply

    def counted(*args: object, **kwargs: object) -> onnx.ModelProto:
        applied.append(bool(args[3:] and args[3]))
        return apply(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bias_module, "_apply", counted)
    result = quantize(model, data, improve=improve)
    assert applied == [True]
    assert result.model.SerializeToString() == kept.model.SerializeToString()
    assert _weights(result.float_model) == _weights(kept.float_model)


def test_a_big_int8_model_is_let_go_of_while_its_check_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (C.11) The quick check runs a big int8 model from its file while nothing of ours
    # holds the proto (ONNX Runtime's copy is the only one), then reads it back: the
    # model and the check's figures are the same.
    model, data = models.conv_bn_relu(), _data(40)
    kept = quantize(model, data, improve="fast")
    monkeypatch.setattr(session_module, "SESSION_FILE_BYTES", 0)  # every model is "big"
    made: list[onnx.ModelProto] = []
    holders: list[int] = []
    export, check = stages.to_qdq, judging.quick_check

    def exported(*args: object) -> onnx.ModelProto:
        made.append(export(*args))  # type: ignore[arg-type]
        return made[-1]

    def checked(*args: object, **kwargs: object) -> object:
        holders.append(sys.getrefcount(made[-1]))
        return check(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(stages, "to_qdq", exported)
    monkeypatch.setattr(judging, "quick_check", checked)
    result = quantize(model, data, improve="fast")
    assert holders == [2]  # ``made`` and getrefcount's argument only
    assert result.model.SerializeToString() == kept.model.SerializeToString()
    assert result.check is not None and kept.check is not None
    assert result.check.to_dict() == kept.check.to_dict()
