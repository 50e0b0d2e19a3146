"""The fine-tuning schedule's options (numerics §T.5, §T.7): the warm-up as a fraction of
the steps, and the checks on the new options."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from eightbit.errors import ConfigError
from eightbit.graph import make_session
from eightbit.improve.finetune import FinetuneOptions
from tests.fixtures.finetune import images, post_training

torch = pytest.importorskip("torch")

from eightbit.improve import finetune_train  # noqa: E402
from eightbit.improve.finetune_net import FakeQuantNet  # noqa: E402
from eightbit.improve.finetune_train import Schedule  # noqa: E402
from tests.fixtures.threads import one_torch_thread  # noqa: E402, F401 (autouse)


@pytest.mark.parametrize(
    ("name", "value"), [("warmup", 1.5), ("warmup", -0.1), ("feature_weight", -1.0)]
)
def test_bad_options_are_config_errors(name: str, value: float) -> None:
    with pytest.raises(ConfigError, match=name):
        FinetuneOptions(**{name: value})  # type: ignore[arg-type]


def test_the_rates_rise_over_the_warm_up_then_decay() -> None:
    rates = [finetune_train._rate(step, 5, 20) for step in range(20)]
    np.testing.assert_allclose(rates[:5], [0.2, 0.4, 0.6, 0.8, 1.0])
    assert rates[5] == 1.0
    assert all(later < earlier for earlier, later in itertools.pairwise(rates[5:]))


def test_train_warms_up_over_the_schedule_s_fraction(monkeypatch: pytest.MonkeyPatch) -> None:
    warmups: list[int] = []
    original = finetune_train._rate

    def spy(step: int, warmup: int, steps: int) -> float:
        warmups.append(warmup)
        return original(step, warmup, steps)

    monkeypatch.setattr(finetune_train, "_rate", spy)
    start = post_training()
    net = FakeQuantNet(start.prepared_model, start.plan, start.ranges)  # type: ignore[arg-type]
    inputs = [images(32, seed=1)]
    targets = [make_session(start.float_model).run(None, {"x": inputs[0]})[0]]
    schedule = Schedule(4, 8, 0.0, 0.0, 0.0, 4, 9, 0, warmup=0.5)
    finetune_train.train(net, inputs, targets, np.arange(24, 32), schedule, lambda text: None)
    assert warmups and set(warmups) == {2}  # half of 4 steps, not a tenth
