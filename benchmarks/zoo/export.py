"""torch -> ONNX the way a user exports: eval mode, the TorchScript exporter's defaults
(constant folding on, so BatchNorm after Conv is fused), dynamic batch, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def export(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int = 17) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with torch.no_grad():
        torch.onnx.export(
            model.eval(),
            (example,),
            str(tmp),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    os.replace(tmp, path)
    return path
