"""``run``, ``prepare`` and the dump: finding the plan, strict integer mode, formats on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from eightbit.engine import execute, prepare, run
from eightbit.errors import ConfigError, ModelError
from eightbit.graph import save_model
from eightbit.plan import plan_path_for
from eightbit.quant import QuantConfig, dequantize_values
from tests.export.helpers import Quantized, quantize
from tests.export.helpers import session as ort_session
from tests.fixtures.models import conv_bn_relu, random_inputs


def _quantized(scheme: str = "affine", **config: object) -> tuple[Quantized, dict[str, np.ndarray]]:
    model = conv_bn_relu()
    feeds = random_inputs(model, n=8, seed=7)
    return quantize(model, feeds, QuantConfig(scheme=scheme, **config)), feeds  # type: ignore[arg-type]


def _saved(folder: Path, quantized: Quantized) -> Path:
    path = folder / "model_int8.onnx"
    save_model(quantized.qdq, path)
    quantized.plan.save(plan_path_for(path))
    return path


class _Result:
    """Stands for ``eightbit.quantize``'s result: anything with ``.model`` and ``.plan``."""

    def __init__(self, quantized: Quantized) -> None:
        self.model = quantized.qdq
        self.plan = quantized.plan


def test_a_saved_model_finds_its_plan_path_for_it(tmp_path: Path) -> None:
    quantized, feeds = _quantized()
    path = _saved(tmp_path, quantized)
    assert plan_path_for(path).name == "model_int8.plan.json"
    from_file = run(path, feeds)
    from_object = run(_Result(quantized), feeds)
    from_array = run(_Result(quantized), feeds["input"])  # one input: a bare array
    for name, values in from_file.items():
        np.testing.assert_array_equal(values, from_object[name])
        np.testing.assert_array_equal(values, from_array[name])


def test_a_missing_plan_names_the_expected_file(tmp_path: Path) -> None:
    quantized, _ = _quantized()
    path = tmp_path / "alone.onnx"
    save_model(quantized.qdq, path)
    with pytest.raises(ConfigError, match=r"alone\.plan\.json"):
        prepare(path)


def test_a_plan_from_another_model_is_refused() -> None:
    quantized, _ = _quantized()
    other, _ = _quantized("pow2")
    with pytest.raises(ModelError, match="plan"):
        prepare(_Result(Quantized(quantized.float_model, other.plan, quantized.qdq)))


def test_strict_integer_refuses_float_nodes_and_lists_them() -> None:
    quantized, feeds = _quantized(exclude=("pool",))
    run(_Result(quantized), feeds)  # runs without strict mode
    with pytest.raises(ModelError, match=r"pool \(GlobalAveragePool\): excluded"):
        run(_Result(quantized), feeds, strict_integer=True)
    clean, _ = _quantized()
    run(_Result(clean), feeds, strict_integer=True)


def test_every_step_is_integer_except_the_boundary() -> None:
    quantized, _ = _quantized()
    program = prepare(_Result(quantized))
    kinds = [(step.kind, step.integer) for step in program.steps]
    assert kinds[0] == ("Quantize", False) and kinds[-1] == ("Dequantize", False)
    assert all(integer for _, integer in kinds[1:-1]), kinds


@pytest.mark.parametrize("scheme", ["affine", "pow2"])
def test_the_dump_holds_every_integer_tensor_and_its_format(tmp_path: Path, scheme: str) -> None:
    quantized, feeds = _quantized(scheme)
    program = prepare(_Result(quantized))
    seen: dict[str, np.ndarray] = {}
    outputs = execute(program, feeds, observe=seen.__setitem__)
    run(_Result(quantized), feeds, dump=tmp_path / "dump")
    document = json.loads((tmp_path / "dump" / "formats.json").read_text())
    tensors = document["tensors"]
    assert document["format"] == "eightbit-dump"
    assert len(tensors) == len(seen)
    assert {"input", "relu_out", "pool_out", "flat", "logits"} <= set(tensors)
    for name, integers in seen.items():
        entry = tensors[program.formats[name].tensor]
        stored = np.load(tmp_path / "dump" / entry["file"])
        np.testing.assert_array_equal(stored, integers)
        assert entry["dtype"] == str(stored.dtype) and entry["word_length"] == 8
        if scheme == "pow2":  # scale = 2^-f, the fixed-point reading of the integers
            assert entry["scale"] == 2.0 ** -entry["fraction_length"] and entry["zero_point"] == 0
        else:
            assert entry["fraction_length"] is None
    logits = tensors["logits"]
    params = quantized.plan.tensors["logits"]
    real = dequantize_values(np.load(tmp_path / "dump" / logits["file"]), params)
    np.testing.assert_array_equal(real, outputs["logits"])


def test_a_quantize_of_a_dequantize_becomes_an_integer_table() -> None:
    """Q(DQ(q)) with other parameters (a foreign QDQ model) is requantized on integers."""
    quantized, feeds = _quantized()
    model = quantized.qdq
    relu_q = next(n for n in model.graph.node if n.output and n.output[0] == "relu_out_quantized")
    model_copy = type(model)()
    model_copy.CopyFrom(model)
    graph = model_copy.graph
    scale = next(t for t in graph.initializer if t.name == relu_q.input[1])
    extra = helper.make_node(
        "QuantizeLinear", ["relu_out", "half_scale", relu_q.input[2]], ["requantized"], "extra"
    )
    back = helper.make_node(
        "DequantizeLinear", ["requantized", "half_scale", relu_q.input[2]], ["extra_out"], "back"
    )
    half = numpy_helper.to_array(scale) * np.float32(2)
    graph.initializer.append(numpy_helper.from_array(half, "half_scale"))
    graph.node.extend([extra, back])
    graph.output.append(helper.make_tensor_value_info("extra_out", TensorProto.FLOAT, None))
    program = prepare(_Result(Quantized(quantized.float_model, quantized.plan, model_copy)))
    step = next(s for s in program.steps if s.node == "extra")
    assert step.integer and step.kind == "Lookup"
    ours = execute(program, feeds)["extra_out"]
    names = [value.name for value in model_copy.graph.output]
    theirs = ort_session(model_copy, optimized=False).run(names, feeds)[names.index("extra_out")]
    np.testing.assert_array_equal(ours, theirs)
