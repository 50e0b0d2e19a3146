"""Functions written as elementary ops (docs/numerics.md §Q12): int8 every op, a float
island, or the fused ONNX op. Output SQNR and int8/fp32 latency of a small model holding
one function between two MatMuls, per form.

    PYTHONPATH=src .venv/bin/python -m benchmarks.patterns
"""

from __future__ import annotations

import sys

import numpy as np
from tests.graph import pattern_models

import eightbit
from eightbit.analysis.latency import interleaved_medians_ms
from eightbit.graph import make_session
from eightbit.quant import QuantConfig

WIDTH, TOKENS, SAMPLES = 256, 128, 48
SPREAD = 1.0  # log-normal spread of the feature scales


def _sqnr(reference: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum((reference - got) ** 2))
    return 10 * np.log10(float(np.sum(reference**2)) / noise) if noise else float("inf")


def _measure(model, data, test):
    result = eightbit.quantize(model, data, QuantConfig(), check_samples=0, improve="fast")
    float_session = make_session(model, threads=1)
    int8_session = make_session(result.model, threads=1)
    want = np.concatenate([float_session.run(None, {"inp": x[None]})[0] for x in test])
    got = np.concatenate([int8_session.run(None, {"inp": x[None]})[0] for x in test])
    int8_ms, float_ms = interleaved_medians_ms(
        [result.model, model], {"inp": test[:1]}, runs=200, warmup=10
    )
    return _sqnr(want, got), int8_ms / float_ms, int8_ms


def main() -> None:
    pattern_models.FEATURES = WIDTH
    patterns = sys.modules["eightbit.graph.patterns"]
    rng = np.random.default_rng(0)
    # Transformer activations: a few features far larger than the rest.
    spread = np.exp(rng.standard_normal(WIDTH) * SPREAD).astype(np.float32)
    data = rng.standard_normal((SAMPLES, TOKENS, WIDTH)).astype(np.float32) * spread
    test = rng.standard_normal((16, TOKENS, WIDTH)).astype(np.float32) * spread
    print("| function | form | output SQNR dB | int8/fp32 | int8 ms |")
    print("| --- | --- | --- | --- | --- |")
    islands = patterns.ISLAND_KINDS
    for name, (builder, kind) in pattern_models.BUILDERS.items():
        forms = [("int8 every op", 13, frozenset()), ("float island", 13, islands)]
        if kind in patterns.FUSED_OPS:
            forms.append((f"fused {patterns.FUSED_OPS[kind][0]}", 20, islands))
        for form, opset, kinds in forms:
            patterns.ISLAND_KINDS = kinds
            patterns._ISLANDS.clear()
            model = pattern_models.wrap(builder, opset=opset, tokens=TOKENS)
            sqnr, ratio, ms = _measure(model, data, test)
            print(f"| {name} | {form} | {sqnr:.1f} | {ratio:.2f} | {ms:.3f} |", flush=True)
    patterns.ISLAND_KINDS = islands


if __name__ == "__main__":
    main()
