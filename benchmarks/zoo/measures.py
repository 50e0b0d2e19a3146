"""What each zoo family's users look at, float output against int8 output of the same samples.

Every function takes the float model's output first and the int8 model's second, both as
(samples, ...) arrays of one output, and returns a fraction in [0, 1] (or dB for the SQNRs).
The formulas are in benchmarks/README.md ("zoo").
"""

from __future__ import annotations

import numpy as np

CENTS_PER_BIN = 20.0  # CREPE's 360 bins cover C1..B7 in 20-cent steps


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """10·log10(Σf² / Σ(f−q)²) over the whole output."""
    f, q = _pair(reference, candidate)
    noise = float(np.sum((f - q) ** 2))
    return float("inf") if noise == 0.0 else float(10 * np.log10(float(np.sum(f * f)) / noise))


def slice_sqnrs_db(reference: np.ndarray, candidate: np.ndarray, axis: int) -> np.ndarray:
    """SQNR of every slice along ``axis`` (a channel or feature), over all other positions.

    A slice whose float values are all zero has no signal to lose: it gets +inf when int8 is
    zero there too and -inf otherwise.
    """
    f, q = _pair(reference, candidate)
    f, q = np.moveaxis(f, axis, -1), np.moveaxis(q, axis, -1)
    f, q = f.reshape(-1, f.shape[-1]), q.reshape(-1, q.shape[-1])
    signal, noise = np.sum(f * f, axis=0), np.sum((f - q) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(noise == 0, np.inf, signal / np.where(noise == 0, 1, noise))
        return np.where(signal == 0, np.where(noise == 0, np.inf, -np.inf), 10 * np.log10(ratio))


def worst_slice_sqnr_db(
    reference: np.ndarray, candidate: np.ndarray, axis: int, predicted_only: bool = False
) -> float:
    """The lowest per-slice SQNR: a collapsed channel shows here, not in the whole-tensor SQNR.

    ``predicted_only``, for outputs read through an arg-max over ``axis`` (class
    probabilities, CTC characters, pitch bins): only the slices that are the float arg-max
    somewhere count. A class that no sample predicts has probabilities near 0, below one int8
    step of the output, and its SQNR is noise about nothing a user reads.
    """
    sqnrs = slice_sqnrs_db(reference, candidate, axis)
    if predicted_only:
        sqnrs = sqnrs[np.unique(reference.argmax(axis=axis))]
    return float(np.min(sqnrs))


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Fraction of samples whose arg-max over the last axis is the same."""
    _pair(reference, candidate)
    return float(np.mean(reference.argmax(axis=-1) == candidate.argmax(axis=-1)))


def detection_class_agreement(
    reference: np.ndarray, candidate: np.ndarray, box_channels: int = 4, threshold: float = 0.25
) -> float:
    """YOLO-style (N, 4 + classes, anchors) outputs: of the anchors where the float model
    detects something (best class score >= ``threshold``), the fraction where int8 detects the
    same class with a score of at least half the threshold (a detection that survives)."""
    _pair(reference, candidate)
    ref_scores, int8_scores = reference[:, box_channels:], candidate[:, box_channels:]
    detected = ref_scores.max(axis=1) >= threshold
    if not detected.any():
        raise ValueError(f"no float detection reaches the score threshold {threshold}")
    same = ref_scores.argmax(axis=1) == int8_scores.argmax(axis=1)
    survives = int8_scores.max(axis=1) >= threshold / 2
    return float(np.mean((same & survives)[detected]))


def ctc_greedy(probabilities: np.ndarray, blank: int = 0) -> list[list[int]]:
    """Greedy CTC decoding of (N, time, classes): best class per step, repeats merged, blanks
    dropped."""
    decoded = []
    for best in probabilities.argmax(axis=-1):
        keep = np.ones(len(best), dtype=bool)
        keep[1:] = best[1:] != best[:-1]
        decoded.append([int(c) for c in best[keep] if c != blank])
    return decoded


def edit_distance(a: list[int], b: list[int]) -> int:
    """Levenshtein distance (insertions, deletions and substitutions cost 1)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def character_agreement(reference: np.ndarray, candidate: np.ndarray, blank: int = 0) -> float:
    """1 − (edit distance between the decoded strings) / (float string length), over all
    samples: the share of the float model's characters that int8 reads the same."""
    _pair(reference, candidate)
    ref, int8 = ctc_greedy(reference, blank), ctc_greedy(candidate, blank)
    total = sum(len(r) for r in ref)
    if total == 0:
        raise ValueError("the float model reads no character: nothing to agree on")
    errors = sum(edit_distance(r, c) for r, c in zip(ref, int8, strict=True))
    return max(0.0, 1.0 - errors / total)


def mask_iou(reference: np.ndarray, candidate: np.ndarray, threshold: float) -> float:
    """Intersection over union of the pixels above ``threshold`` (e.g. DB's text mask)."""
    _pair(reference, candidate)
    a, b = reference > threshold, candidate > threshold
    union = int(np.sum(a | b))
    return 1.0 if union == 0 else float(np.sum(a & b)) / union


def pitch_agreement(
    reference: np.ndarray, candidate: np.ndarray, cents: float = 50.0, voiced: float = 0.5
) -> float:
    """CREPE-style (N, 360) bin activations: of the frames the float model calls voiced
    (best activation >= ``voiced``, CREPE's usual threshold), the fraction whose pitch (the
    activation-weighted mean of the bins around the best one, as CREPE decodes it) is within
    ``cents`` of the float model's."""
    _pair(reference, candidate)
    kept = reference.max(axis=1) >= voiced
    if not kept.any():
        raise ValueError(f"no frame reaches the voicing threshold {voiced}")
    close = np.abs(_pitch_cents(reference) - _pitch_cents(candidate)) <= cents
    return float(np.mean(close[kept]))


def _pitch_cents(activation: np.ndarray, half_window: int = 4) -> np.ndarray:
    best = activation.argmax(axis=1)
    bins = np.arange(activation.shape[1])
    window = np.abs(bins[None, :] - best[:, None]) <= half_window
    weights = np.where(window, activation, 0.0).astype(np.float64)
    total = np.maximum(weights.sum(axis=1), 1e-12)
    return CENTS_PER_BIN * (weights @ bins) / total


def retrieval_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Sentence embeddings (N, dims): the fraction of samples whose nearest other sample by
    cosine similarity is the same in both."""
    _pair(reference, candidate)
    return float(np.mean(_nearest(reference) == _nearest(candidate)))


def _nearest(embeddings: np.ndarray) -> np.ndarray:
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity.argmax(axis=1)


def _pair(reference: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if reference.shape != candidate.shape:
        raise ValueError(f"outputs differ in shape: {reference.shape} vs {candidate.shape}")
    return reference.astype(np.float64), candidate.astype(np.float64)


def yolox_detection_agreement(
    reference: np.ndarray,
    candidate: np.ndarray,
    size: int = 416,
    threshold: float = 0.1,
    nms_iou: float = 0.45,
    match_iou: float = 0.5,
) -> float:
    """YOLOX (N, anchors, 4 + 1 + classes) raw outputs, decoded the way YOLOX and ddddocr
    decode them (strides 8, 16, 32; score = objectness x class score; greedy NMS): of the
    float model's boxes with score >= ``threshold``, the fraction that int8 finds too, as a
    box of the same class with IoU >= ``match_iou`` (each int8 box matches one float box)."""
    _pair(reference, candidate)
    found = total = 0
    for f, q in zip(reference, candidate, strict=True):
        ref_boxes, ref_classes = _yolox_detections(f, size, threshold, nms_iou)
        int8_boxes, int8_classes = _yolox_detections(q, size, threshold, nms_iou)
        total += len(ref_boxes)
        found += _matched(ref_boxes, ref_classes, int8_boxes, int8_classes, match_iou)
    if total == 0:
        raise ValueError(f"no float detection reaches the score threshold {threshold}")
    return found / total


def _yolox_grid(size: int, anchors: int) -> tuple[np.ndarray, np.ndarray]:
    cells, strides = [], []
    for step in (8, 16, 32):
        n = size // step
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        cells.append(np.stack((xs.ravel(), ys.ravel()), 1))
        strides.append(np.full(n * n, step))
    grid, stride = np.concatenate(cells), np.concatenate(strides)
    if len(grid) != anchors:
        raise ValueError(f"{anchors} anchors do not fit a {size}x{size} YOLOX input")
    return grid, stride


def _yolox_detections(
    raw: np.ndarray, size: int, threshold: float, nms_iou: float
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (x1, y1, x2, y2) and classes kept by NMS, one sample."""
    grid, stride = _yolox_grid(size, raw.shape[0])
    centre = (raw[:, :2] + grid) * stride[:, None]
    extent = np.exp(np.minimum(raw[:, 2:4], 20.0)) * stride[:, None]  # no overflow in noise
    scores = raw[:, 4:5] * raw[:, 5:]
    classes, best = scores.argmax(1), scores.max(1)
    keep = best >= threshold
    boxes = np.concatenate((centre - extent / 2, centre + extent / 2), 1)[keep]
    order = np.argsort(-best[keep], kind="stable")
    chosen: list[int] = []
    for i in order:
        if all(_iou(boxes[i], boxes[j]) <= nms_iou for j in chosen):
            chosen.append(int(i))
    return boxes[chosen], classes[keep][chosen]


def _matched(
    ref_boxes: np.ndarray,
    ref_classes: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    match_iou: float,
) -> int:
    used = np.zeros(len(boxes), dtype=bool)
    found = 0
    for box, cls in zip(ref_boxes, ref_classes, strict=True):
        ious = np.array([_iou(box, b) for b in boxes]) if len(boxes) else np.zeros(0)
        ious[used | (classes != cls)] = 0.0
        if len(ious) and ious.max() >= match_iou:
            used[int(ious.argmax())] = True
            found += 1
    return found


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
