"""Intermediate-feature distillation (numerics §T.7): the float teacher, the on-grid values
the student collects, the loss, and its place in the training objective."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from eightbit.graph import make_session
from tests.fixtures.finetune import images as _images
from tests.fixtures.finetune import post_training as _post_training

torch = pytest.importorskip("torch")

from eightbit.improve.finetune_features import FloatFeatures, feature_loss  # noqa: E402
from eightbit.improve.finetune_net import FakeQuantNet  # noqa: E402
from eightbit.improve.finetune_train import Schedule, _loss, distillation_loss  # noqa: E402
from tests.fixtures.threads import one_torch_thread  # noqa: E402, F401 (autouse)


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    exposed.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
    return exposed


def test_the_loss_is_the_mean_of_the_normalized_errors() -> None:
    t = {"a": torch.full((2, 3), 4.0), "b": torch.full((5,), 1e-3)}
    # Twice the target in every tensor: each term is 1, whatever the tensor's scale.
    student = {name: 2 * value for name, value in t.items()}
    assert float(feature_loss(student, t)) == pytest.approx(1.0)
    # One exact tensor, one with error 1: the mean, not the sum.
    student["b"] = t["b"].clone()
    assert float(feature_loss(student, t)) == pytest.approx(0.5)
    assert float(feature_loss({}, t)) == 0.0


def test_the_teacher_gives_the_float_model_s_values() -> None:
    start = _post_training()
    assert start.prepared_model is not None and start.ranges is not None
    net = FakeQuantNet(start.prepared_model, start.plan, start.ranges)
    names = net.feature_names()
    assert names and not set(names) & {"x", "logits"}  # inside the network only
    x = _images(8, seed=3)
    values = FloatFeatures(start.prepared_model, names)(torch.from_numpy(x))
    assert set(values) == set(names)
    session = make_session(_with_outputs(start.prepared_model, names))
    expected = session.run(names, {"x": x})
    for name, reference in zip(names, expected, strict=True):
        np.testing.assert_allclose(values[name].numpy(), reference, rtol=1e-4, atol=1e-5)
        assert not values[name].requires_grad


def test_the_student_collects_its_on_grid_values() -> None:
    start = _post_training()
    net = FakeQuantNet(start.prepared_model, start.plan, start.ranges)  # type: ignore[arg-type]
    names = net.feature_names()
    net.captured, net.captured_names = {}, frozenset(names)
    net(torch.from_numpy(_images(8, seed=4)))
    assert set(net.captured) == set(names)
    for name, value in net.captured.items():
        grid = net.activations[name]
        stored = value.detach() / net.scale_of(name).detach() + grid.zero_point
        np.testing.assert_allclose(stored.numpy(), np.round(stored.numpy()), atol=1e-3)
        assert value.requires_grad  # the term trains the layers before it


def test_the_objective_adds_lambda_times_the_feature_term() -> None:
    start = _post_training()
    net = FakeQuantNet(start.prepared_model, start.plan, start.ranges)  # type: ignore[arg-type]
    x = _images(16, seed=5)
    rows = [torch.from_numpy(x)]
    targets = [torch.from_numpy(make_session(start.float_model).run(None, {"x": x})[0])]
    features = FloatFeatures(start.prepared_model, net.feature_names())
    plain = Schedule(1, 16, 0.0, 0.0, 0.0, 1, 1, 0)
    weighted = Schedule(1, 16, 0.0, 0.0, 0.0, 1, 1, 0, feature_weight=3.0)
    with torch.no_grad():
        outputs_only = float(_loss(net, rows, targets, plain, features))
        both = float(_loss(net, rows, targets, weighted, features))
        assert net.captured is None  # collecting stops with the step
        assert outputs_only == pytest.approx(float(distillation_loss((net(*rows),), targets)))
        net.captured, net.captured_names = {}, features.names
        net(*rows)
        term = float(feature_loss(net.captured, features(*rows)))
        net.captured = None
    assert term > 0
    assert both == pytest.approx(outputs_only + 3.0 * term, rel=1e-5)
