"""The zoo's metrics and feature extraction, on tiny hand-made arrays (no model is loaded)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from benchmarks import run
from benchmarks.report import Table
from benchmarks.worker import Result
from benchmarks.zoo import magika, measures, minilm, section


def _collapsed_concat() -> tuple[np.ndarray, np.ndarray]:
    """A [0, 300] channel and a [0, 0.5] channel quantized with one uint8 scale (300/255)."""
    rng = np.random.default_rng(0)
    reference = np.stack([rng.uniform(0, 300, 500), rng.uniform(0, 0.5, 500)], axis=1)
    step = 300 / 255
    return reference, np.round(reference / step) * step


def test_worst_slice_shows_the_collapse_the_whole_tensor_sqnr_hides() -> None:
    reference, candidate = _collapsed_concat()
    assert measures.sqnr_db(reference, candidate) > 30
    assert not candidate[:, 1].any()  # the small channel is all zero
    assert measures.worst_slice_sqnr_db(reference, candidate, axis=1) == pytest.approx(0.0)
    assert measures.worst_slice_sqnr_db(reference, reference + 1e-6, axis=1) > 100


def test_slices_without_signal_or_noise() -> None:
    reference = np.zeros((3, 2))
    reference[:, 0] = 1.0
    assert measures.slice_sqnrs_db(reference, reference, 1).tolist() == [np.inf, np.inf]
    noisy = reference.copy()
    noisy[0, 1] = 0.1
    assert measures.slice_sqnrs_db(reference, noisy, 1)[1] == -np.inf


def test_worst_slice_can_count_only_the_classes_some_sample_predicts() -> None:
    reference = np.array([[0.9, 0.1, 1e-6], [0.2, 0.8, 1e-6]])
    candidate = np.array([[0.9, 0.1, 0.004], [0.2, 0.8, 0.0]])  # class 2: one int8 step
    assert measures.worst_slice_sqnr_db(reference, candidate, 1) < -20
    assert measures.worst_slice_sqnr_db(reference, candidate, 1, predicted_only=True) == np.inf


def _detections() -> np.ndarray:
    """(1, 4 + 3 classes, 4 anchors): anchors 0 and 1 detect class 2 and 0; 2 and 3 nothing."""
    out = np.zeros((1, 7, 4))
    out[0, :4] = 100.0
    out[0, 4:, 0] = [0.1, 0.0, 0.9]
    out[0, 4:, 1] = [0.5, 0.2, 0.0]
    out[0, 4:, 2] = [0.1, 0.2, 0.1]
    return out


def test_detection_agreement_counts_float_detections_only() -> None:
    reference = _detections()
    assert measures.detection_class_agreement(reference, reference) == 1.0
    swapped = reference.copy()
    swapped[0, 4:, 1] = [0.2, 0.5, 0.0]  # anchor 1 now says class 1
    swapped[0, 4:, 2] = [0.0, 0.0, 0.2]  # not a float detection: does not count
    assert measures.detection_class_agreement(reference, swapped) == 0.5


def test_detection_agreement_is_zero_when_scores_collapse() -> None:
    reference = _detections()
    collapsed = reference.copy()
    collapsed[0, 4:] = 0.0  # every score squeezed to the zero point: class 0 "wins" anchor 1
    assert measures.detection_class_agreement(reference, collapsed) == 0.0
    with pytest.raises(ValueError, match="threshold"):
        measures.detection_class_agreement(collapsed, collapsed)


def _one_hot(indices: list[list[int]], classes: int = 5) -> np.ndarray:
    return np.eye(classes)[np.array(indices)]


def test_ctc_decoding_merges_repeats_and_drops_blanks() -> None:
    assert measures.ctc_greedy(_one_hot([[1, 1, 0, 1, 2, 2, 0]])) == [[1, 1, 2]]


def test_character_agreement_is_one_minus_the_edit_rate() -> None:
    reference = _one_hot([[1, 0, 2, 0, 3, 0, 4], [2, 2, 0, 0, 0, 0, 0]])
    candidate = _one_hot([[1, 0, 2, 0, 1, 0, 4], [2, 2, 0, 3, 0, 0, 0]])  # a sub, an insert
    assert measures.character_agreement(reference, candidate) == pytest.approx(1 - 2 / 5)
    assert measures.edit_distance([1, 2, 3], [2, 3, 4]) == 2
    assert measures.edit_distance([], [1, 2]) == 2


def test_pitch_agreement_has_a_50_cent_tolerance_on_voiced_frames() -> None:
    def frames(bins: list[int], peak: float = 0.9) -> np.ndarray:
        out = np.zeros((len(bins), 360))
        out[np.arange(len(bins)), bins] = peak
        return out

    reference = frames([100, 200, 300])
    assert measures.pitch_agreement(reference, frames([102, 198, 300])) == 1.0  # 40 cents off
    assert measures.pitch_agreement(reference, frames([102, 203, 300])) == pytest.approx(
        2 / 3
    )  # 60
    unvoiced = frames([100, 200, 300], peak=0.2)
    unvoiced[0, 100] = 0.9
    assert measures.pitch_agreement(unvoiced, frames([100, 50, 60])) == 1.0


def test_retrieval_agreement_compares_nearest_neighbours() -> None:
    reference = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert measures.retrieval_agreement(reference, reference * 3) == 1.0
    moved = reference.copy()
    moved[1] = [0.2, 0.8]  # sample 1's nearest is now 3; the others keep theirs
    assert measures.retrieval_agreement(reference, moved) == pytest.approx(0.75)


def test_mask_iou() -> None:
    a = np.array([[0.9, 0.9, 0.1, 0.1]])
    assert measures.mask_iou(a, np.array([[0.9, 0.1, 0.9, 0.1]]), 0.5) == pytest.approx(1 / 3)
    assert measures.mask_iou(a * 0, a * 0, 0.5) == 1.0


def test_magika_features_strip_whitespace_and_pad_both_halves() -> None:
    # As magika does: the beginning loses leading whitespace only, the end trailing only.
    row = magika.features(b"  \n" + b"ab" + b"\n\n")
    assert row.shape == (2048,) and row.dtype == np.int32
    assert row[:4].tolist() == [97, 98, 10, 10] and set(row[4:2043].tolist()) == {magika.PAD}
    assert row[2043:].tolist() == [32, 32, 10, 97, 98]
    long = magika.features(bytes(range(65, 91)) * 200)
    assert magika.PAD not in long


def test_generated_files_are_deterministic_and_of_every_type() -> None:
    first, second = magika.data(14, 14), magika.data(14, 14)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert len({row.tobytes() for row in first[0]}) == 14


def test_wordpiece_splits_punctuation_and_unknown_words(tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "rain", "##y", ".", "sun"]))
    tokenizer = minilm.WordPiece(vocab)
    assert tokenizer.encode("Rainy sun. Xyz", 8).tolist() == [2, 4, 5, 7, 6, 1, 3, 0]


def _measured(tool: str, agreement: float, sqnr: float, worst: float, latency: float) -> object:
    m = section.Measured(tool, Result(ok=True), Path())
    m.agreement, m.sqnr, m.worst_slice, m.latency = agreement, sqnr, worst, latency
    return m


def test_goal_row_compares_eightbit_with_the_best_other_tool() -> None:
    from benchmarks.zoo.catalog import ZOO

    goals = Table("t", ["model", "a", "s", "w", "l", "all"])
    rows = [
        _measured("eightbit", 0.95, 21.0, 12.0, 0.5),
        _measured("NNCF", 0.95, 20.0, 3.0, 0.9),
        _measured("ONNX Runtime", 0.90, 15.0, 3.0, 0.48),
    ]
    section._goal_row(goals, ZOO[0], rows)  # type: ignore[arg-type]
    assert goals.rows[0][1:] == [
        "0.95 (0.95) yes",
        "21 (21) yes",
        "12 yes",
        "0.5 (0.504) yes",
        "yes",
    ]
    rows[0].sqnr = 20.9  # type: ignore[attr-defined]
    section._goal_row(goals, ZOO[0], rows)  # type: ignore[arg-type]
    assert goals.rows[1][2].endswith("no") and goals.rows[1][-1] == "no"
    rows[0].sqnr, rows[0].latency = 21.0, 0.55  # type: ignore[attr-defined]
    section._goal_row(goals, ZOO[0], rows)  # type: ignore[arg-type]
    assert goals.rows[2][4] == "0.55 (0.504) no"  # slower than ORT's 0.48 x 1.05


def test_run_selects_the_zoo_and_its_models() -> None:
    args = run.parse_args(
        ["--only", "zoo", "--zoo-models", "yolov8n_faces,magika", "--tools", "AIMET"]
    )
    assert args.only == {"zoo"} and args.zoo_models == {"yolov8n_faces", "magika"}
    with pytest.raises(SystemExit):
        run.parse_args(["--zoo-models", "resnet"])


def test_fallback_reads_returned_nodes_and_notes_from_the_plan(tmp_path: Path) -> None:
    import json

    from benchmarks.zoo import fallback

    plan = {
        "steps": [
            {"name": "equalize", "layers": [{"node": "a"}], "notes": ["3 pairs"]},
            {"name": "fallback", "layers": [{"node": "b"}, {"node": "c"}], "notes": ["9 rebuilds"]},
        ]
    }
    (tmp_path / "m.plan.json").write_text(json.dumps(plan))
    assert fallback._fallback_step(str(tmp_path / "m.onnx")) == (2, "9 rebuilds")


def test_reuse_reads_the_measurements_recorded_beside_a_model(tmp_path: Path) -> None:
    import json
    from dataclasses import asdict

    model = tmp_path / "m_ort_quantize.onnx"
    model.write_bytes(b"")
    bare = section._reused("NNCF", model)
    assert bare.result.ok and bare.notes == ["reused; quantize s not recorded"]
    record = {"result": asdict(Result(ok=True, seconds=12.5)), "notes": ["pre-processing failed"]}
    model.with_suffix(".result.json").write_text(json.dumps(record))
    reused = section._reused("ONNX Runtime", model)
    assert reused.result.seconds == 12.5 and reused.notes == ["pre-processing failed", "reused"]


def _yolox_raw(boxes: list[tuple[int, float, float, float]]) -> np.ndarray:
    """A (3549, 6) raw YOLOX head at 416 with ``(anchor, dx, log_w, score)`` detections:
    objectness 1, class score ``score``, everything else 0."""
    raw = np.zeros((3549, 6), dtype=np.float32)
    for anchor, dx, log_w, score in boxes:
        raw[anchor] = (dx, 0.0, log_w, log_w, 1.0, score)
    return raw


def test_yolox_agreement_matches_decoded_boxes_by_iou() -> None:
    # anchor 0 (stride 8, cell (0, 0)); anchor 2704 (first stride-16 cell)
    reference = np.stack([_yolox_raw([(0, 0.0, 2.0, 0.9), (2704 + 100, 0.0, 2.0, 0.8)])])
    same = reference.copy()
    moved = np.stack([_yolox_raw([(0, 0.0, 2.0, 0.9), (2704 + 100, 3.0, 2.0, 0.8)])])
    weak = np.stack([_yolox_raw([(0, 0.0, 2.0, 0.9), (2704 + 100, 0.0, 2.0, 0.05)])])
    assert measures.yolox_detection_agreement(reference, same) == 1.0
    assert measures.yolox_detection_agreement(reference, moved) == 0.5  # IoU < 0.5
    assert measures.yolox_detection_agreement(reference, weak) == 0.5  # under the threshold


def test_yolox_agreement_keeps_one_box_per_object_and_matches_one_to_one() -> None:
    # two overlapping float boxes of one object: NMS keeps one; int8's single box matches it
    reference = np.stack([_yolox_raw([(0, 0.0, 2.0, 0.9), (1, -1.0, 2.0, 0.85)])])
    candidate = np.stack([_yolox_raw([(0, 0.0, 2.0, 0.9)])])
    assert measures.yolox_detection_agreement(reference, candidate) == 1.0
    with pytest.raises(ValueError, match="anchors"):
        measures.yolox_detection_agreement(reference[:, :100], candidate[:, :100])
    with pytest.raises(ValueError, match="no float detection"):
        measures.yolox_detection_agreement(np.zeros_like(reference), candidate)


def test_captcha_model_copy_has_a_dynamic_batch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from benchmarks.zoo import captcha

    if importlib.util.find_spec(captcha.PACKAGE) is None:  # importing it needs opencv
        pytest.skip("ddddocr is not installed (make bench installs it)")

    monkeypatch.setattr(captcha, "ZOO_DIR", tmp_path)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(captcha.model()), providers=["CPUExecutionProvider"])
    x = np.full((2, 3, 416, 416), 114.0, dtype=np.float32)
    assert sess.run(None, {"images": x})[0].shape == (2, 3549, 6)


def test_yolox_agreement_lets_one_int8_box_match_one_float_box() -> None:
    log_w = float(np.log(12.5))  # 100-pixel boxes at stride 8
    # float boxes x in [0, 100] and [40, 140] (IoU 0.43: NMS keeps both); int8 has only
    # [20, 120], IoU 0.67 with each: it finds one of the two
    reference = np.stack([_yolox_raw([(0, 6.25, log_w, 0.9), (1, 10.25, log_w, 0.8)])])
    candidate = np.stack([_yolox_raw([(2, 6.75, log_w, 0.9)])])
    assert measures.yolox_detection_agreement(reference, candidate) == 0.5


def _counted_data(calibration: int, evaluation: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((calibration, 2)), np.ones((evaluation, 2))


def test_cached_zoo_data_is_regenerated_when_its_sample_count_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functools import partial

    from benchmarks.zoo import spec

    monkeypatch.setattr(spec, "ZOO_DIR", tmp_path)
    monkeypatch.setattr(spec, "data_paths", lambda name: (tmp_path / "c.npy", tmp_path / "e.npy"))
    assert spec.cached_arrays("m", partial(_counted_data, 2, 3))[1].shape == (3, 2)
    assert spec.cached_arrays("m", partial(_counted_data, 2, 5))[1].shape == (5, 2)
    assert spec.cached_arrays("m", partial(_counted_data, 2, 5))[1].shape == (5, 2)
