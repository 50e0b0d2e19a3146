"""Fine-tuning (numerics §T.5) on a small ResNet-style network: the fake-quantized module is
the exported model, learned scales go back into the plan (powers of two stay so), the step
never returns a model worse than its start on the samples it held back, and the flags.

(The straight-through and LSQ gradients against finite differences are tests/pytorch/
test_fake_quant.py's.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import eightbit
from eightbit.cli import main
from eightbit.engine import run as run_engine
from eightbit.errors import ConfigError
from eightbit.graph import make_session, save_model
from eightbit.improve.finetune import NO_TORCH, FinetuneOptions, finetune
from eightbit.improve.presets import preset
from eightbit.plan import QuantPlan
from eightbit.quant import QuantConfig
from tests.fixtures.finetune import images as _images
from tests.fixtures.finetune import post_training as _post_training
from tests.fixtures.targets import residual_net

torch = pytest.importorskip("torch")

from eightbit.improve.finetune_net import FakeQuantNet  # noqa: E402 (needs torch)
from eightbit.improve.finetune_train import Schedule, train  # noqa: E402
from tests.fixtures.threads import one_torch_thread  # noqa: E402, F401 (autouse)

# Large steps (a twentieth of a grid step for the weights): the tiny network moves within a few
# dozen batches.
QUICK = FinetuneOptions(steps=40, batch=16, weight_lr=0.05, scale_lr=1e-2, exponent_lr=0.2)


def _finetuned(start: eightbit.QuantizedModel, options: FinetuneOptions = QUICK):  # type: ignore[no-untyped-def]
    assert start.prepared_model is not None and start.ranges is not None
    return finetune(
        start.prepared_model, start.float_model, start.plan, start.ranges, start.model,
        {"x": _images(64, seed=1)}, options,
    )  # fmt: skip


def _stored(model: object, x: np.ndarray, scale: float, zero: int, optimization: str) -> np.ndarray:
    output = make_session(model, optimization=optimization).run(None, {"x": x})[0]  # type: ignore[arg-type]
    return np.round(output / scale).astype(np.int64) + zero


def test_the_trained_module_is_the_exported_model_to_the_last_integer() -> None:
    start = _post_training()
    result = _finetuned(start)
    assert result.report.after_db > result.report.before_db  # it trained and was kept
    # The module as training left it (learned scales, trained weights) against the export.
    net = FakeQuantNet(start.prepared_model, start.plan, start.ranges)  # type: ignore[arg-type]
    x = _images(32, seed=2)
    schedule = Schedule(QUICK.steps, 16, QUICK.weight_lr, QUICK.scale_lr, 0.2, 10, 99, 0)
    inputs = [_images(64, seed=1)]
    targets = [make_session(start.float_model).run(None, {"x": inputs[0]})[0]]
    train(net, inputs, targets, np.arange(48, 64), schedule, lambda text: None)
    trained = finetune_export(net, start)
    with torch.no_grad():
        module = net(torch.from_numpy(x)).numpy()
    params = trained.plan.tensors["logits"]
    scale, zero = float(params.scale), int(params.zero_point)
    expected = np.round(module / scale).astype(np.int64) + zero
    for optimization in ("none", "all"):  # float kernels on DQ values, and ORT's int8 kernels
        np.testing.assert_array_equal(
            _stored(trained.model, x, scale, zero, optimization), expected
        )
    # The integer engine requantizes with fixed-point multipliers: within one step.
    engine = run_engine(trained, {"x": x})["logits"]
    on_engine = np.round(engine / scale).astype(np.int64) + zero
    assert np.abs(on_engine - expected).max() <= 1


class _Export:
    """What the engine runs: ``.model`` (the QDQ model) and ``.plan``."""

    def __init__(self, model: onnx.ModelProto, plan: QuantPlan) -> None:
        self.model, self.plan = model, plan


def finetune_export(net: FakeQuantNet, start: eightbit.QuantizedModel) -> _Export:
    """The module's weights and learned scales written back and exported, as the step does."""
    from eightbit.export import to_qdq
    from eightbit.graph import Graph
    from eightbit.plan import make_plan

    assert start.ranges is not None
    model, ranges = net.trained_model(), net.learned_ranges(start.ranges)
    plan = make_plan(Graph(model), ranges, start.plan.config)
    return _Export(to_qdq(model, plan), plan)


def test_learned_scales_go_back_into_the_plan() -> None:
    start = _post_training()
    result = _finetuned(start)
    moved = 0
    for name, params in result.plan.tensors.items():
        if name in start.ranges and params.dtype == "uint8":  # type: ignore[operator]
            before = float(start.plan.tensors[name].scale)
            moved += not np.isclose(float(params.scale), before, rtol=1e-6)
            # Each learned range gives back its zero point (Q.4).
            assert int(params.zero_point) == int(start.plan.tensors[name].zero_point), name
    assert moved > 0


def test_power_of_two_scales_stay_powers_of_two() -> None:
    start = _post_training(QuantConfig(scheme="pow2"))
    net = FakeQuantNet(start.prepared_model, start.plan, start.ranges)  # type: ignore[arg-type]
    exponents = {name: float(torch.log2(net.scale_of(name))) for name in net.activations}
    inputs = [_images(64, seed=1)]
    targets = [make_session(start.float_model).run(None, {"x": inputs[0]})[0]]
    # Exponent steps of 0.3 move the real exponent past .5 within the run.
    schedule = Schedule(30, 16, 0.05, 1e-2, 0.3, 10, 99, 0)
    train(net, inputs, targets, np.arange(48, 64), schedule, lambda text: None)
    raw = [float(s.raw.detach()) for s in net.learned_scales()]
    assert any(abs(r - round(r)) > 1e-3 for r in raw)  # the real exponents did move
    for name in net.activations:
        scale = float(net.scale_of(name).detach())
        mantissa, _ = np.frexp(scale)
        assert mantissa == 0.5, (name, scale)
    # and the plan written back is on powers of two too
    exported = finetune_export(net, start)
    for name, params in exported.plan.tensors.items():
        mantissa, _ = np.frexp(np.asarray(params.scale))
        assert np.all(mantissa == 0.5), name
    assert exponents  # the network has activations on the grid


def test_a_worse_model_is_never_returned() -> None:
    start = _post_training()
    # Steps this large wreck the weights: the step must hand back its start.
    wrecked = FinetuneOptions(steps=20, batch=16, weight_lr=1e3, scale_lr=1.0, eval_every=5)
    result = _finetuned(start, wrecked)
    assert result.qdq is start.model and result.plan is start.plan
    assert result.report.after_db == result.report.before_db
    assert any("kept the starting plan" in note for note in result.report.notes)


def test_training_keeps_its_best_state() -> None:
    start = _post_training()
    net = FakeQuantNet(start.prepared_model, start.plan, start.ranges)  # type: ignore[arg-type]
    inputs = [_images(64, seed=1)]
    targets = [make_session(start.float_model).run(None, {"x": inputs[0]})[0]]
    schedule = Schedule(20, 16, 1.0, 1.0, 0.2, 5, 99, 0)  # wrecks the weights
    summary = train(net, inputs, targets, np.arange(48, 64), schedule, lambda text: None)
    from eightbit.improve.finetune_train import held_back_sqnr

    assert summary.best_step == 0 and summary.best_db == summary.start_db
    assert held_back_sqnr(net, inputs, targets, np.arange(48, 64), 16) == summary.start_db


def test_the_pipeline_records_the_step() -> None:
    improve = preset("finetune", finetune_steps=20)
    result = eightbit.quantize(residual_net(), {"x": _images(80)}, improve=improve)
    names = [step.name for step in result.plan.steps]
    assert names[-1] == "finetune"
    report = result.plan.steps[-1]
    assert report.seconds > 0 and report.before_db is not None and report.after_db is not None
    assert report.after_db >= report.before_db


def test_without_torch_one_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "torch" else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigError, match=r"eightbit\[torch\]"):
        eightbit.quantize(residual_net(), {"x": _images(40)}, improve="finetune")
    assert "--finetune" in NO_TORCH


def _cli(tmp_path: Path, *extra: str) -> tuple[int, str, Path]:
    model, data, out = tmp_path / "m.onnx", tmp_path / "d.npy", tmp_path / "q.onnx"
    save_model(residual_net(), model)
    np.save(data, _images(48))
    result = CliRunner().invoke(
        main, ["quantize", str(model), "-d", str(data), "-o", str(out), *extra]
    )
    return result.exit_code, result.output, out


def test_cli_finetune(tmp_path: Path) -> None:
    code, text, out = _cli(tmp_path, "--finetune", "--finetune-steps", "10", "--json")
    assert code == 0, text
    assert out.exists() and "finetune" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--finetune", "--finetune-steps", "0"], "'finetune_steps' must be an integer >= 1"),
        (["--finetune-steps", "10"], "--finetune-steps needs --finetune"),
    ],
)
def test_cli_bad_finetune_steps_exit_2_with_one_line(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    code, text, out = _cli(tmp_path, *extra)
    assert code == 2, text
    assert message in text and "Traceback" not in text
    assert len(text.strip().splitlines()) == 1
    assert not out.exists()
