"""AIMET's quantization-aware training (aimet-torch 2.42) on MobileNetV2, in a venv of its own.

aimet-torch ships its own ``aimet_common`` package, as aimet-onnx does, so it cannot share
``benchmarks/_work/aimet-venv`` (``benchmarks.zoo.aimet``); it lives in
``benchmarks/_work/aimet-torch-venv`` (created by ``ensure_venv``) and runs through
``benchmarks.worker`` (task kind ``aimet_qat``) under that interpreter.

torchvision is not installed: aimet-torch declares it, but the registry's build pulls a CUDA
torch of several GB and the local build fails to import. aimet-torch imports it at import
time only to name a few of its classes (``transforms.Resize``, ``ops.RoIPool``, in a table of
ONNX op types) and to call ``ops.roi_align`` / ``ops.nms`` inside two custom modules MobileNetV2
does not contain; ``TORCHVISION_STUB``, written into that venv alone, provides those names and
raises on any use, so a model that needed torchvision would fail loudly rather than quietly.

The recipe is AIMET's documented PTQ-then-QAT one: fold BatchNorm into the weights, a
QuantizationSimModel with the per-channel config (int8 weights per channel, 8-bit
activations), ``compute_encodings`` on the calibration crops, then training ``sim.model``
(here: ``benchmarks.distill``, the loss, steps, batch, crops, seed and learning rate NNCF's
QAT gets; every parameter, weights and the quantizers' ranges alike, as AIMET's v2
quantizers hold their ranges as parameters), exported as QDQ ONNX by
``aimet_torch.onnx.export``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from benchmarks import side_venv
from benchmarks.feeds import NpyBatches
from benchmarks.models import IMAGE_SIZE, INPUT_NAME, OPSET, OUTPUT_NAME, WORK_DIR

VENV = WORK_DIR / "aimet-torch-venv"
PYTHON = VENV / "bin" / "python"
REQUIREMENT = "aimet-torch==2.42.0"
# aimet-torch's requirements less torchvision (see the module's docstring) and with the CPU
# torch this machine has (as declared, torch resolves to its CUDA build).
DEPENDENCIES = (
    "torch==2.13.0",
    "Jinja2>=3.0.3",
    "PyYAML",
    "bokeh>=3.3.0,<=3.6.3",
    "cvxpy",
    "holoviews",
    "hvplot>=0.10.0",
    "jsonschema",
    "matplotlib>=3",
    "networkx",
    "numpy",
    "onnx",
    "onnx_ir>=0.1.16",
    "onnxscript>=0.2.0",
    "osqp",
    "pandas",
    "psutil",
    "pybind11",
    "safetensors",
    "scikit-learn",
    "scipy",
    "tensorboard",
    "tqdm",
    "onnxruntime",  # the worker imports it before every task
)
CONFIG = "common/quantsim_config/default_config_per_channel.json"
IMPORTED = "aimet_torch.quantsim"
TORCHVISION_STUB = '''"""Not torchvision: a stub for aimet-torch's import-time names
(benchmarks/aimet_qat.py). Every function and class here raises when used."""
import sys
import types


def _missing(name):
    def fail(*args, **kwargs):
        raise RuntimeError(f"torchvision.{name}: torchvision is a stub in this venv")

    return fail


class _Missing:
    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"torchvision.{type(self).__name__}: torchvision is a stub in this venv")


def _submodule(name, **members):
    module = types.ModuleType(f"{__name__}.{name}")
    module.__dict__.update(members)
    sys.modules[module.__name__] = module
    return module


ops = _submodule(
    "ops",
    roi_align=_missing("ops.roi_align"),
    nms=_missing("ops.nms"),
    RoIPool=type("RoIPool", (_Missing,), {}),
)
transforms = _submodule("transforms", Resize=type("Resize", (_Missing,), {}))
datasets = _submodule("datasets")
'''


def ensure_venv() -> str | None:
    """Create the venv when missing; return None when ready, else why it is not."""
    return side_venv.ensure(VENV, REQUIREMENT, DEPENDENCIES, (REQUIREMENT,), IMPORTED, _write_stub)


def _write_stub() -> None:
    site = subprocess.run(
        [str(PYTHON), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout.strip()
    package = Path(site) / "torchvision"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text(TORCHVISION_STUB)


def qat(weights: Path, output: Path, calibration: NpyBatches, steps: int, threads: int) -> None:
    """AIMET's QAT of MobileNetV2 (``weights``: its state dict) on every crop of
    ``calibration``'s file, calibrated on the rows ``calibration`` reads; writes the QDQ model
    to ``output``."""
    import numpy as np
    import torch

    from benchmarks import distill

    torch.set_num_threads(threads)
    module = _mobilenet_v2(weights)
    crops = np.load(calibration.path)
    teacher = distill.teacher_logits(module, crops)
    sim = _calibrated_sim(module, calibration)
    distill.distill(sim.model, teacher, crops, steps)
    _export(sim, output)


def _mobilenet_v2(weights: Path) -> Any:
    import torch

    from benchmarks import models

    module = models._build_mobilenet_v2()  # the bench's plain-torch MobileNetV2
    module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return module.eval()


def _calibrated_sim(module: Any, calibration: NpyBatches) -> Any:
    """BatchNorm folded, then the simulation with the per-channel config, calibrated."""
    import aimet_torch
    import torch
    from aimet_torch.batch_norm_fold import fold_all_batch_norms
    from aimet_torch.common.defs import QuantScheme
    from aimet_torch.quantsim import QuantizationSimModel

    example = torch.from_numpy(next(iter(calibration))[:1].copy())
    fold_all_batch_norms(module, input_shapes=tuple(example.shape), dummy_input=example)
    sim = QuantizationSimModel(
        module,
        dummy_input=example,
        quant_scheme=QuantScheme.training_range_learning_with_tf_init,
        default_output_bw=8,
        default_param_bw=8,
        config_file=str(Path(next(iter(aimet_torch.__path__))) / CONFIG),
    )

    def forward(model: Any) -> None:
        with torch.no_grad():
            for batch in calibration:
                model(torch.from_numpy(batch.copy()))

    sim.compute_encodings(forward)
    return sim


def _export(sim: Any, output: Path) -> None:
    import torch
    from aimet_torch import onnx as aimet_onnx

    example = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    aimet_onnx.export(
        sim.model,
        (example,),
        str(output),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
        opset_version=OPSET,
        dynamo=False,
    )
