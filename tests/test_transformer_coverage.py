"""Transformers in the static int8 path (issue 16): the decomposed LayerNorm, GELU and
Softmax forms of torch and tf2onnx exports recognized as units; a small BERT encoder
(token ids in, the padding mask computed from them) quantized with its attention MatMuls on
ONNX Runtime's int8 kernels, its integer inputs and mask left alone, and SmoothQuant
applied to its LayerNorm outputs (docs/numerics.md §Q12, §I.11)."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from torch import nn

import eightbit
from eightbit.analysis.ort_kernels import float_nodes_in_ort
from eightbit.graph import normalize
from eightbit.graph.patterns import find_patterns
from eightbit.quant import QuantConfig
from tests.export.helpers import make_model
from tests.fixtures.models import torch_export

VOCAB, HIDDEN, HEADS, LENGTH, LAYERS = 50, 32, 4, 12, 2


def _n(op: str, inputs: list[str], output: str, **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=f"{op}_{output}", **attrs)


def _softmax_without_max() -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    """Softmax as Exp, ReduceSum, Div (tf2onnx's and some torch exports: no max taken out)."""
    return [
        _n("Exp", ["x"], "e"),
        _n("ReduceSum", ["e", "axes"], "total", keepdims=1),
        _n("Div", ["e", "total"], "y"),
    ], {"axes": np.array([-1], np.int64)}


def _gelu_erf_torch() -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    """torch's nn.GELU at opset < 20: Div by sqrt 2, Erf, Add 1, Mul x, Mul 0.5."""
    return [
        _n("Div", ["x", "sqrt2"], "scaled"),
        _n("Erf", ["scaled"], "erf"),
        _n("Add", ["erf", "one"], "erf1"),
        _n("Mul", ["x", "erf1"], "xerf"),
        _n("Mul", ["xerf", "half"], "y"),
    ], {
        "sqrt2": np.array(math.sqrt(2), np.float32),
        "one": np.array(1.0, np.float32),
        "half": np.array(0.5, np.float32),
    }


def _gelu_tanh_tf2onnx() -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    """tf.nn.gelu(approximate=True) through tf2onnx: Pow 3, Mul 0.044715, Add, Mul
    sqrt(2/pi), Tanh, Add 1, Mul 0.5, Mul x."""
    return [
        _n("Pow", ["x", "three"], "cube"),
        _n("Mul", ["cube", "coef"], "cube_c"),
        _n("Add", ["x", "cube_c"], "inner"),
        _n("Mul", ["inner", "k"], "arg"),
        _n("Tanh", ["arg"], "t"),
        _n("Add", ["t", "one"], "t1"),
        _n("Mul", ["t1", "half"], "ht"),
        _n("Mul", ["x", "ht"], "y"),
    ], {
        "three": np.array(3.0, np.float32),
        "coef": np.array(0.044715, np.float32),
        "k": np.array(math.sqrt(2 / math.pi), np.float32),
        "one": np.array(1.0, np.float32),
        "half": np.array(0.5, np.float32),
    }


FORMS = {
    "softmax_exp_reducesum_div": (_softmax_without_max, "Softmax"),
    "gelu_erf_torch": (_gelu_erf_torch, "GELU"),
    "gelu_tanh_tf2onnx": (_gelu_tanh_tf2onnx, "GELU-tanh"),
}


@pytest.mark.parametrize("name", FORMS)
def test_each_decomposed_form_is_recognized_as_one_unit(name):
    builder, kind = FORMS[name]
    nodes, arrays = builder()
    rng = np.random.default_rng(0)
    arrays |= {
        w: (rng.standard_normal((HIDDEN, HIDDEN)) / math.sqrt(HIDDEN)).astype(np.float32)
        for w in ("w_in", "w_out")
    }
    nodes = [
        helper.make_node("MatMul", ["inp", "w_in"], ["x"], name="matmul_in"),
        *nodes,
        helper.make_node("MatMul", ["y", "w_out"], ["out"], name="matmul_out"),
    ]
    shape = [1, LENGTH, HIDDEN]
    model = onnx.shape_inference.infer_shapes(
        make_model(nodes, [("inp", shape)], [("out", shape)], arrays, 13)
    )
    (match,) = find_patterns(model)
    assert (match.kind, match.source, match.output) == (kind, "x", "y")
    assert len(match.nodes) == len(nodes) - 2


class _Encoder(nn.Module):
    """A 2-layer post-LN BERT on token ids, as the zoo's MiniLM (random weights): the mask
    from padding id 0, LayerNorm and GELU written out at opset 14, Softmax one op."""

    def __init__(self) -> None:
        super().__init__()
        self.words = nn.Embedding(VOCAB, HIDDEN)
        self.positions = nn.Embedding(LENGTH, HIDDEN)
        self.ln = nn.LayerNorm(HIDDEN)
        self.qkv = nn.ModuleList(nn.Linear(HIDDEN, 3 * HIDDEN) for _ in range(LAYERS))
        self.out = nn.ModuleList(nn.Linear(HIDDEN, HIDDEN) for _ in range(LAYERS))
        self.up = nn.ModuleList(nn.Linear(HIDDEN, 4 * HIDDEN) for _ in range(LAYERS))
        self.down = nn.ModuleList(nn.Linear(4 * HIDDEN, HIDDEN) for _ in range(LAYERS))
        self.ln1 = nn.ModuleList(nn.LayerNorm(HIDDEN) for _ in range(LAYERS))
        self.ln2 = nn.ModuleList(nn.LayerNorm(HIDDEN) for _ in range(LAYERS))
        with torch.no_grad():  # an outlier channel, as trained BERTs have
            self.ln.weight[3] = 12.0
            for norm in (*self.ln1, *self.ln2):
                norm.weight[3] = 12.0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != 0).to(torch.float32)
        bias = (1.0 - mask)[:, None, None, :] * -10000.0
        x = self.ln(self.words(ids) + self.positions.weight[None])
        b, t, d = x.shape
        for i in range(LAYERS):
            q, k, v = self.qkv[i](x).split(HIDDEN, -1)

            def heads(y: torch.Tensor) -> torch.Tensor:
                return y.view(b, t, HEADS, d // HEADS).transpose(1, 2)

            scores = heads(q) @ heads(k).transpose(2, 3) / math.sqrt(d // HEADS)
            context = (scores + bias).softmax(-1) @ heads(v)
            x = self.ln1[i](x + self.out[i](context.transpose(1, 2).reshape(b, t, d)))
            x = self.ln2[i](x + self.down[i](nn.functional.gelu(self.up[i](x))))
        return x[:, 0]


def _ids(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (count, LENGTH))
    lengths = rng.integers(4, LENGTH + 1, count)
    ids[np.arange(LENGTH)[None] >= lengths[:, None]] = 0
    return ids.astype(np.int64)


@pytest.fixture(scope="module")
def encoder() -> onnx.ModelProto:
    torch.manual_seed(0)
    example = torch.from_numpy(_ids(1, 0))
    return torch_export(_Encoder().eval(), example, opset=14)


def test_the_encoder_functions_are_units(encoder):
    kinds = sorted(match.kind for match in find_patterns(normalize(encoder)))
    assert kinds == ["GELU"] * LAYERS + ["LayerNorm"] * (1 + 2 * LAYERS)


def test_the_encoder_quantizes_with_int8_attention_and_its_ids_untouched(encoder, tmp_path):
    result = eightbit.quantize(encoder, _ids(48, 1), QuantConfig(), check_samples=0)
    steps = {step.name: step for step in result.plan.steps}
    assert "smooth_quant" in steps
    # Every LayerNorm but the last (read by the output's Gather, no matrix product) and
    # every GELU (a float unit before the down projection) smoothed.
    assert steps["smooth_quant"].notes[0].startswith(f"{3 * LAYERS} of {3 * LAYERS}")
    model = result.model
    graph_input = model.graph.input[0]
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.INT64
    quantized_inputs = {
        node.input[0] for node in model.graph.node if node.op_type == "QuantizeLinear"
    }
    assert graph_input.name not in quantized_inputs
    decisions = {d.name: d for d in result.plan.nodes}
    # The mask is computed from the ids in float and never quantized.
    assert not decisions["/Equal"].quantized
    # Every MatMul, the two-activation ones of attention included, runs on int8 kernels.
    float_ops = {node.op_type for node in float_nodes_in_ort(model)}
    assert "MatMul" not in float_ops and "Gemm" not in float_ops
    assert "QLinearMatMul" not in float_ops
    float_out = _run(encoder, _ids(16, 2))
    int8_out = _run(model, _ids(16, 2))
    sqnr = 10 * math.log10(np.sum(float_out**2) / np.sum((float_out - int8_out) ** 2))
    assert sqnr > 15


def _run(model: onnx.ModelProto, ids: np.ndarray) -> np.ndarray:
    from eightbit.graph import make_session

    session = make_session(model)
    return np.asarray(session.run(None, {session.get_inputs()[0].name: ids})[0], np.float64)
