"""``eightbit.quantize`` on PyTorch modules: export, data kinds, dynamic batch, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import eightbit
from eightbit.cli import main
from eightbit.errors import ConfigError, ModelError
from eightbit.graph import make_session
from eightbit.graph.global_pool import spatial_means_as_global_pools
from eightbit.pipeline import QuantizedModel

torch = pytest.importorskip("torch")
nn = torch.nn


class TinyNet(nn.Module):
    """Conv, BatchNorm, ReLU, pool, Linear: the shape of a small image classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.bn(self.conv(image)))
        return self.fc(nn.functional.adaptive_avg_pool2d(features, 1).flatten(1))


class Masked(nn.Module):
    """Two inputs, the second optional: matched by name from dicts and keywords."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        pooled = torch.relu(self.conv(image)).mean((2, 3))
        if mask is not None:
            pooled = pooled * mask
        return self.fc(pooled)


class Bessel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.bessel_j0(x)  # no ONNX translation in either exporter


class Unexportable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.body = nn.Sequential(nn.ReLU(), Bessel())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.body(self.conv(image))


class DataDependent(nn.Module):
    """Python control flow on a tensor's value: torch.export refuses, TorchScript traces."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.conv(image)
        if out.sum() > 0:
            out = out * 2
        return torch.relu(out).flatten(1)


class TrainingBranch(TinyNet):
    """Computes something else in training mode: the export must see eval mode."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = super().forward(image)
        return out * 0.0 if self.training else out


class Pairs(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """(image, label) samples, as an image Dataset gives them."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], index % 5


def _net(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    net = TinyNet()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _images(count: int = 40, seed: int = 1) -> torch.Tensor:
    return torch.randn(count, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _integers(result: QuantizedModel) -> dict[str, np.ndarray]:
    """Every initializer of the QDQ model (stored integers, scales, zero points) by name."""
    return {t.name: onnx.numpy_helper.to_array(t) for t in result.model.graph.initializer}


def _assert_same_integers(a: QuantizedModel, b: QuantizedModel) -> None:
    left, right = _integers(a), _integers(b)
    assert left.keys() == right.keys()
    for name, array in left.items():
        np.testing.assert_array_equal(array, right[name], err_msg=name)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return make_session(model).run(None, feeds)[0]


class FlatHead(nn.Module):
    """Conv, BatchNorm, ReLU, Flatten, Linear: what the exporters write the same way."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(image))).flatten(1))


def _hand_exported(net: nn.Module) -> onnx.ModelProto:
    return torch.onnx.export(
        net, (_images(2),), dynamo=True, verbose=False,
        dynamic_shapes={"image": {0: torch.export.Dim.DYNAMIC}},
    ).model_proto  # fmt: skip


def test_module_gives_the_same_integers_as_its_hand_exported_onnx() -> None:
    torch.manual_seed(0)
    net, images = FlatHead().eval(), _images()
    from_onnx = eightbit.quantize(_hand_exported(net), images.numpy(), improve="fast")
    from_module = eightbit.quantize(net, images, improve="fast")
    _assert_same_integers(from_module, from_onnx)
    assert from_module.plan.steps[0].name == "pytorch-export"


def test_spatial_mean_is_quantized_as_a_global_pool() -> None:
    """The exporter's ReduceMean (kept in float) becomes GlobalAveragePool (int8)."""
    net, images = _net(), _images()
    hand = _hand_exported(net)
    assert "ReduceMean" in {node.op_type for node in hand.graph.node}
    from_module = eightbit.quantize(net, images, improve="fast")
    ops = {node.op_type for node in from_module.model.graph.node}
    assert "GlobalAveragePool" in ops and "ReduceMean" not in ops
    assert not from_module.plan.fallbacks()
    assert "1 spatial ReduceMean written as GlobalAveragePool" in from_module.plan.steps[0].notes
    pooled, _ = spatial_means_as_global_pools(hand)
    _assert_same_integers(from_module, eightbit.quantize(pooled, images, improve="fast"))


def test_batch_is_dynamic_and_the_module_is_left_in_training_mode() -> None:
    net = TrainingBranch()
    net.load_state_dict(_net().state_dict())
    net.train()
    result = eightbit.quantize(net, _images(), improve="fast")
    assert net.training  # exported in eval mode, then given back as it was
    batch = result.model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value
    for rows in (1, 3, 7):
        assert _run(result.model, {"image": _images(rows).numpy()}).shape == (rows, 5)
    # eval mode: the float model is the module's inference function, BatchNorm on statistics
    float_out = _run(result.float_model, {"image": _images(3).numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(float_out, net.eval()(_images(3)).numpy(), atol=1e-5)


def test_dataset_gives_the_integers_of_its_tensor_labels_left_out() -> None:
    net, images = _net(), _images()
    reference = eightbit.quantize(net, images, improve="fast")
    _assert_same_integers(eightbit.quantize(net, Pairs(images), improve="fast"), reference)


def test_shuffling_dataloader_is_read_once_in_one_order() -> None:
    """Calibration and the held-back check must see one order, the loader's first pass."""
    net, images = _net(), _images()

    def loader() -> torch.utils.data.DataLoader:  # type: ignore[type-arg]
        shuffled = torch.Generator().manual_seed(5)
        return torch.utils.data.DataLoader(
            Pairs(images), batch_size=7, shuffle=True, generator=shuffled
        )

    first_pass = torch.cat([batch[0] for batch in loader()])
    from_loader = eightbit.quantize(net, loader(), improve="fast")
    _assert_same_integers(from_loader, eightbit.quantize(net, first_pass, improve="fast"))
    assert from_loader.check is not None and from_loader.check.samples == 8


def test_dict_inputs_are_matched_by_forward_parameter_names() -> None:
    torch.manual_seed(0)
    net = Masked().eval()
    images, masks = _images(), torch.rand(40, 4)
    # Keys in another order than forward's, and a label the model does not take.
    data = [
        {"mask": masks[i : i + 8], "label": torch.zeros(8), "image": images[i : i + 8]}
        for i in range(0, 40, 8)
    ]
    result = eightbit.quantize(net, data, improve="fast")
    assert [i.name for i in result.float_model.graph.input] == ["image", "mask"]
    feeds = {"image": images[:3].numpy(), "mask": masks[:3].numpy()}
    with torch.no_grad():
        expected = net(images[:3], mask=masks[:3]).numpy()
    np.testing.assert_allclose(_run(result.float_model, feeds), expected, atol=1e-5)


def test_keyword_example_inputs_export_the_keyword_input() -> None:
    torch.manual_seed(0)
    net = Masked().eval()
    images, masks = _images(), torch.rand(40, 4)
    example = {"image": images[:1], "mask": masks[:1]}  # batch 1: still a dynamic batch
    data = {"image": images, "mask": masks}
    result = eightbit.quantize(net, data, example_inputs=example, improve="fast")
    assert [i.name for i in result.model.graph.input] == ["image", "mask"]
    assert result.plan.steps[0].notes[0].startswith("dynamo exporter")  # batch 1 exported
    out = _run(result.model, {"image": images[:6].numpy(), "mask": masks[:6].numpy()})
    assert out.shape == (6, 3)
    # Without the keyword, forward(image) is exported and mask is not an input.
    plain = eightbit.quantize(net, images, improve="fast")
    assert [i.name for i in plain.model.graph.input] == ["image"]


def test_export_failure_names_the_module_and_the_op() -> None:
    with pytest.raises(ModelError) as caught:
        eightbit.quantize(Unexportable(), _images(), improve="fast")
    message = str(caught.value)
    assert "\n" not in message
    assert "module 'body.1' (Bessel)" in message
    assert "bessel_j0" in message
    assert "TorchScript exporter failed too" in message


def test_dynamo_failure_falls_back_to_torchscript_with_a_note() -> None:
    torch.manual_seed(0)
    result = eightbit.quantize(DataDependent(), _images(), improve="fast")
    export = result.plan.steps[0]
    assert export.name == "pytorch-export"
    assert export.notes[0].startswith("torchscript exporter")
    assert len(export.notes) == 2 and "\n" not in export.notes[1]
    assert "dynamo exporter failed" in export.notes[1]
    assert _run(result.model, {"image": _images(5).numpy()}).shape == (5, 144)


def _saved_program(module: nn.Module, path: Path) -> Path:
    program = torch.export.export(
        module.eval(), (_images(2),), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)
    )
    torch.export.save(program, path)
    return path


def test_cli_quantizes_a_saved_exported_program(tmp_path: Path) -> None:
    program = _saved_program(_net(), tmp_path / "net.pt2")
    data = tmp_path / "data.npz"
    np.savez(data, image=_images().numpy())
    out = tmp_path / "net.int8.onnx"
    before = program.read_bytes()
    result = CliRunner().invoke(
        main, ["quantize", str(program), "-d", str(data), "-o", str(out), "--preset", "fast"]
    )
    assert result.exit_code == 0, result.output
    assert program.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "data.npz", "net.int8.onnx", "net.int8.plan.json", "net.pt2",
    ]  # fmt: skip
    # The same integers as the module quantized through the API on the same data.
    direct = eightbit.quantize(_net(), _images(), improve="fast")
    written = onnx.load(str(out))
    for tensor in written.graph.initializer:
        np.testing.assert_array_equal(
            onnx.numpy_helper.to_array(tensor), _integers(direct)[tensor.name], tensor.name
        )


@pytest.mark.parametrize("content", [None, b"not a zip archive"])
def test_cli_refuses_a_missing_or_broken_pt2_in_one_line(
    tmp_path: Path, content: bytes | None
) -> None:
    program = tmp_path / "net.pt2"
    if content is not None:
        program.write_bytes(content)
    data = tmp_path / "data.npz"
    np.savez(data, image=_images().numpy())
    result = CliRunner().invoke(
        main, ["quantize", str(program), "-d", str(data), "-o", str(tmp_path / "o.onnx")]
    )
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert "net.pt2" in result.output


def test_cli_names_the_module_and_op_a_saved_program_cannot_export(tmp_path: Path) -> None:
    program = _saved_program(Unexportable(), tmp_path / "odd.pt2")
    data = tmp_path / "data.npz"
    np.savez(data, image=_images().numpy())
    result = CliRunner().invoke(
        main, ["quantize", str(program), "-d", str(data), "-o", str(tmp_path / "o.onnx")]
    )
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert "module 'body.1' (Bessel) uses op" in result.output
    assert not (tmp_path / "o.onnx").exists()


def test_without_torch_the_message_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    program = tmp_path / "net.pt2"
    program.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(ConfigError, match=r"needs PyTorch: pip install 'eightbit\[torch\]'"):
        eightbit.quantize(program, np.zeros((4, 3, 8, 8), np.float32))


def test_example_inputs_for_an_onnx_model_is_refused() -> None:
    with pytest.raises(ConfigError, match="example_inputs is for a PyTorch model"):
        eightbit.quantize(_hand_exported(_net()), _images().numpy(), example_inputs=_images(2))


def test_tensor_data_for_an_onnx_model() -> None:
    hand = _hand_exported(_net())
    from_tensor = eightbit.quantize(hand, _images(), improve="fast")
    from_arrays = eightbit.quantize(hand, _images().numpy(), improve="fast")
    _assert_same_integers(from_tensor, from_arrays)
