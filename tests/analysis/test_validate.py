"""``validate`` end to end: results, JSON, thresholds, dynamic ranges, latency."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from eightbit.analysis import (
    RunOptions,
    check_thresholds,
    dynamic_ranges,
    validate,
)
from eightbit.analysis.latency import Latency
from eightbit.analysis.metrics import accuracy, sqnr_db
from eightbit.errors import ConfigError
from tests.analysis.helpers import classifier, images, quantize
from tests.fixtures.models import run_onnxruntime

DATA = images(20, seed=7)
LABELS = np.arange(20) % 10


@pytest.fixture(scope="module")
def quantized():  # type: ignore[no-untyped-def]
    return quantize(classifier(), images(32))


def test_output_metrics_match_onnxruntime(quantized) -> None:  # type: ignore[no-untyped-def]
    result = validate(
        quantized.float_model,
        quantized.qdq,
        {"input": DATA},
        labels=LABELS,
        metric={"mean_shift": lambda r, q: float(np.mean(q - r))},
        what_if=2,
        latency_runs=3,
        options=RunOptions(batch_size=6),
    )
    reference = run_onnxruntime(quantized.float_model, {"input": DATA})[0]
    int8 = run_onnxruntime(quantized.qdq, {"input": DATA})[0]
    (logits,) = result.outputs
    assert result.samples == logits.samples == 20
    # Batches of 6 against one of 20: the float kernels may sum in another order.
    assert logits.sqnr_db == pytest.approx(sqnr_db(reference, int8), abs=1e-4)
    assert logits.float_accuracy == accuracy(reference, LABELS)
    assert logits.int8_accuracy == accuracy(int8, LABELS)
    assert logits.custom["mean_shift"] == pytest.approx(float(np.mean(int8 - reference)), abs=1e-6)
    assert result.layers is not None and len(result.layers.what_if) == 2
    assert result.latency is not None and result.latency.float_ms > 0
    encoded = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert encoded["outputs"][0]["name"] == "logits"
    assert encoded["layers"]["worst"][0] == result.layers.ranked()[0].name


def test_thresholds(quantized) -> None:  # type: ignore[no-untyped-def]
    result = validate(quantized.float_model, quantized.qdq, {"input": DATA}, layers=False)
    sqnr = result.outputs[0].sqnr_db
    assert check_thresholds(result, min_agreement=0.0, min_sqnr=sqnr - 1) == ()
    failures = check_thresholds(result, min_sqnr=sqnr + 1)
    assert len(failures) == 1 and failures[0].startswith("output 'logits': SQNR")
    with pytest.raises(ConfigError, match=r"fraction in \[0, 1\].*0\.99"):
        check_thresholds(result, min_agreement=99.0)
    with pytest.raises(ConfigError, match="finite"):
        check_thresholds(result, min_sqnr=math.nan)


def test_int8_slower_than_float_is_a_warning_not_a_failure(quantized) -> None:  # type: ignore[no-untyped-def]
    result = validate(quantized.float_model, quantized.qdq, {"input": DATA}, layers=False)
    slower = replace(result, latency=Latency(float_ms=0.05, int8_ms=0.08, runs=20))
    (finding,) = slower.findings()
    assert finding.level == "warning" and "1.60x" in finding.message
    assert slower.to_dict()["findings"] == [finding.to_dict()]
    sqnr = result.outputs[0].sqnr_db
    assert check_thresholds(slower, min_sqnr=sqnr - 1) == ()
    faster = replace(result, latency=Latency(float_ms=0.08, int8_ms=0.05, runs=20))
    assert faster.findings() == ()


def test_dynamic_ranges_cover_every_8_bit_tensor(quantized) -> None:  # type: ignore[no-untyped-def]
    ranges = dynamic_ranges(quantized.float_model, quantized.qdq, {"input": DATA})
    names = [r.tensor for r in ranges]
    assert names == ["input", "r1", "r2", "sum", "pooled", "flat", "logits", "w1", "w2", "fc_w"]
    first = ranges[0]
    assert first.total == DATA.size
    assert first.minimum == float(DATA.min()) and first.maximum == float(DATA.max())


def test_labels_need_a_classification_output() -> None:
    model = classifier(classes=1)
    quantized = quantize(model, images(32))
    with pytest.raises(ConfigError, match="no output has the shape \\(samples, classes\\)"):
        validate(model, quantized.qdq, {"input": DATA}, labels=LABELS, layers=False)


def test_bad_options_are_config_errors(quantized) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="'what_if' must be an integer >= 0"):
        validate(quantized.float_model, quantized.qdq, {"input": DATA}, what_if=-1)
