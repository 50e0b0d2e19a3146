"""Big generated models: stacks of Gemm + Relu layers of any size, written without holding them.

``gemm_stack(size_mb)`` writes ``layers`` square Gemm layers (``WIDTH`` x ``WIDTH`` float32
weights, seeded He-scaled values) so that the weights add up to about ``size_mb``; a model
past ``EXTERNAL_MB`` (all of ``SIZES_MB``) keeps its weights in ONNX external data
(``<name>.onnx.data``), as any model over protobuf's 2 GiB limit must. The weights are
written one layer at a time, so building a 2.5 GB model takes one layer's memory.
Activations stay tiny (a batch of ``WIDTH`` values), so what a quantizer holds beyond the
weights shows.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from benchmarks.models import WORK_DIR

WIDTH = 8192
LAYER_MB = WIDTH * WIDTH * 4 / 2**20  # 256 MB
SIZES_MB = (768, 1280, 2560)  # 3, 5 and 10 layers
EXTERNAL_MB = 500  # every model here keeps its weights in external data, as a 2.5 GB one must
OPSET = 17
SAMPLES = 80


def layers_for(size_mb: float) -> int:
    return max(1, round(size_mb / LAYER_MB))


def gemm_stack(size_mb: float, folder: Path = WORK_DIR / "big", seed: int = 0) -> tuple[Path, Path]:
    """The model of about ``size_mb`` MB and an .npy of ``SAMPLES`` inputs, cached in ``folder``."""
    layers = layers_for(size_mb)
    path = folder / f"gemm{layers}x{WIDTH}.onnx"
    data = folder / f"gemm_{WIDTH}_inputs.npy"
    folder.mkdir(parents=True, exist_ok=True)
    if not data.exists():
        rng = np.random.default_rng(seed)
        np.save(data, rng.standard_normal((SAMPLES, WIDTH)).astype(np.float32))
    if not path.exists():
        write_gemm_stack(path, layers, seed, external=layers * LAYER_MB > EXTERNAL_MB)
    return path, data


def write_gemm_stack(path: Path, layers: int, seed: int, *, external: bool) -> None:
    """Write the model (and its data file when ``external``); both appear complete or not at all."""
    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    data_name = path.name + ".data"
    data_tmp = path.with_name(data_name + ".tmp")
    current = "input"
    with open(data_tmp, "wb") if external else open(os.devnull, "wb") as data_file:
        for index in range(layers):
            weight = rng.standard_normal((WIDTH, WIDTH), np.float32) * np.float32(
                np.sqrt(2.0 / WIDTH)
            )
            bias = rng.uniform(-0.05, 0.05, WIDTH).astype(np.float32)
            w_name, b_name = f"fc{index}.weight", f"fc{index}.bias"
            if external:
                offset = data_file.tell()
                data_file.write(weight.tobytes())
                tensor = TensorProto(name=w_name, data_type=TensorProto.FLOAT, dims=weight.shape)
                tensor.data_location = TensorProto.EXTERNAL
                for key, value in (("location", data_name), ("offset", offset),
                                   ("length", weight.nbytes)):  # fmt: skip
                    entry = tensor.external_data.add()
                    entry.key, entry.value = key, str(value)
                initializers.append(tensor)
            else:
                initializers.append(numpy_helper.from_array(weight, w_name))
            del weight
            initializers.append(numpy_helper.from_array(bias, b_name))
            out = f"fc{index}" if index == layers - 1 else f"fc{index}_out"
            nodes.append(helper.make_node("Gemm", [current, w_name, b_name], [out],
                                          name=f"fc{index}", transB=1))  # fmt: skip
            current = out
            if index < layers - 1:
                nodes.append(helper.make_node("Relu", [out], [f"relu{index}"], name=f"relu{index}"))
                current = f"relu{index}"
    graph = helper.make_graph(
        nodes,
        "gemm_stack",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["batch", WIDTH])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(model.SerializeToString())
    if external:
        data_tmp.replace(path.with_name(data_name))  # the data first: the model never dangles
    tmp.replace(path)


if __name__ == "__main__":
    for size in SIZES_MB:
        print(gemm_stack(size))
