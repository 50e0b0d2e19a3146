"""AIMET (aimet-onnx 2.42) post-training quantization, run in a venv of its own.

aimet-onnx wants its own torch/torchvision stack, so it lives in ``benchmarks/_work/aimet-venv``
(created by ``ensure_venv``) and runs through ``benchmarks.worker`` under that interpreter.
The recipe is AIMET's documented PTQ one: fold BatchNorm into weights, cross-layer
equalization, then a QuantizationSimModel with the per-channel config
(``default_config_per_channel.json``), ``tf_enhanced`` ranges, int8 weights and uint8
activations, exported as QDQ ONNX.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import side_venv
from benchmarks.feeds import NpyBatches
from benchmarks.models import WORK_DIR

VENV = WORK_DIR / "aimet-venv"
PYTHON = VENV / "bin" / "python"
REQUIREMENT = "aimet-onnx==2.42.0"
# aimet-onnx's requirements, less torch and torchvision: as declared they resolve to torch's
# CUDA build (6 GB here); the CPU torch this machine has serves AIMET's ONNX path, which
# never imports torchvision. onnx2torch (which declares torchvision) is installed alone.
DEPENDENCIES = (
    "torch==2.13.0",
    "Jinja2",
    "PyYAML",
    "bokeh>=3.3.0",
    "hvplot>=0.10.0",
    "jsonschema",
    "numpy",
    "onnx",
    "onnx_ir>=0.1.16",
    "onnxruntime>=1.19",
    "onnxscript>=0.4.0",
    "osqp",
    "pandas",
    "psutil",
    "pybind11",
    "scikit-learn",
    "scipy",
    "tqdm",
)
WITHOUT_DEPENDENCIES = ("onnx2torch", REQUIREMENT)
CONFIG = "common/quantsim_config/default_config_per_channel.json"


def ensure_venv() -> str | None:
    """Create the AIMET venv when missing; return None when ready, else why it is not."""
    return side_venv.ensure(
        VENV, REQUIREMENT, DEPENDENCIES, WITHOUT_DEPENDENCIES, "aimet_onnx.quantsim"
    )


def quantize(model: Path, output: Path, calibration: NpyBatches) -> None:
    """AIMET's PTQ recipe on ``model``; writes the QDQ model to ``output``."""
    import aimet_onnx
    import onnx
    from aimet_onnx.batch_norm_fold import fold_all_batch_norms_to_weight
    from aimet_onnx.common.defs import QuantScheme
    from aimet_onnx.cross_layer_equalization import equalize_model
    from aimet_onnx.quantsim import QuantizationSimModel

    proto = onnx.load(str(model))
    name = next(i.name for i in proto.graph.input if i.name not in _initializers(proto))
    fold_all_batch_norms_to_weight(proto)
    equalize_model(proto)
    config = Path(next(iter(aimet_onnx.__path__))) / CONFIG
    sim = QuantizationSimModel(
        proto,
        param_type="int8",
        activation_type="int8",
        quant_scheme=QuantScheme.post_training_tf_enhanced,
        config_file=str(config),
    )
    sim.compute_encodings([{name: batch} for batch in calibration])
    onnx.save(sim.to_onnx_qdq(force_activation_as="unsigned"), str(output))


def _initializers(proto: object) -> set[str]:
    return {t.name for t in proto.graph.initializer}  # type: ignore[attr-defined]
