"""AIMET's QAT row: what runs without its venv (the venv itself is `make bench`'s)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterator
from types import ModuleType

import numpy as np
import pytest
from benchmarks import aimet_qat, distill, worker

PROBE = "torchvision_stub_probe"


def test_the_worker_knows_the_aimet_qat_kind() -> None:
    task = worker.Task(kind="aimet_qat", model="w.pth", data="crops.npy", samples=8, steps=3)
    assert task.steps == 3


@pytest.fixture
def stub() -> Iterator[ModuleType]:
    """``TORCHVISION_STUB`` loaded under another name (a real torchvision stays untouched)."""
    spec = importlib.util.spec_from_loader(PROBE, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[PROBE] = module
    exec(aimet_qat.TORCHVISION_STUB, module.__dict__)
    yield module
    for name in [n for n in sys.modules if n == PROBE or n.startswith(PROBE + ".")]:
        del sys.modules[name]


def test_the_torchvision_stub_names_what_aimet_torch_imports(stub: ModuleType) -> None:
    ops = importlib.import_module(f"{PROBE}.ops")
    transforms = importlib.import_module(f"{PROBE}.transforms")
    importlib.import_module(f"{PROBE}.datasets")
    assert isinstance(transforms.Resize, type) and isinstance(ops.RoIPool, type)  # dict keys
    assert {transforms.Resize: ["Resize"], ops.RoIPool: ["MaxRoiPool"]}


def test_the_torchvision_stub_raises_on_use(stub: ModuleType) -> None:
    for use in (
        lambda: stub.ops.roi_align(None, None, 7),
        lambda: stub.ops.nms(None, None, 0.5),
        lambda: stub.transforms.Resize(224),
        lambda: stub.ops.RoIPool(7, 1.0),
    ):
        with pytest.raises(RuntimeError, match="stub"):
            use()


def test_distillation_moves_the_student_toward_the_teacher() -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    teacher, student = torch.nn.Linear(6, 4), torch.nn.Linear(6, 4)
    crops = np.random.default_rng(1).standard_normal((40, 6)).astype(np.float32)
    targets = distill.teacher_logits(teacher, crops)

    def loss() -> float:
        with torch.no_grad():
            return float(torch.mean((student(torch.from_numpy(crops)) - targets) ** 2))

    before = loss()
    distill.distill(student, targets, crops, steps=50)
    assert loss() < before * 0.999
