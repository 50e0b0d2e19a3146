"""The quick check of ``quantize``: int8 against float on samples held back from calibration.

Top-1 agreement and SQNR of every output, with the per-slice verdict (§A.9) and its
error-level findings: a user sees at once whether int8 kept the network's behaviour.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from eightbit.analysis.metrics import json_number, sqnr_db, topk_agreement
from eightbit.analysis.slices import (
    Finding,
    SliceVerdict,
    collapse_finding,
    output_parts,
    output_probabilities,
    output_spatial_axes,
    slice_verdict,
)
from eightbit.calibrate.collect import batch_slices
from eightbit.graph import Graph, make_session
from eightbit.graph.run_size import samples_per_run

# Samples per run at most, whatever the batches (the quick check's are calibration's).
_LARGEST_RUN = 1 << 16


@dataclass(frozen=True)
class OutputCheck:
    """Float vs int8 on one output over the held-back samples.

    ``slices``: the worst slice, the collapsed slices and the parts (§A.9); None for an
    output with no axis besides the samples.
    """

    name: str
    sqnr_db: float
    top1_agreement: float | None  # None when the output is not (samples, classes)
    slices: SliceVerdict | None = None

    @property
    def worst_slice_sqnr_db(self) -> float:
        """The worst slice's SQNR, or the whole output's when it has no slices."""
        return self.sqnr_db if self.slices is None else self.slices.worst_sqnr_db

    @property
    def collapsed(self) -> bool:
        return self.slices is not None and self.slices.has_collapse

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "sqnr_db": json_number(self.sqnr_db),
            "top1_agreement": self.top1_agreement,
            "worst_slice_sqnr_db": json_number(self.worst_slice_sqnr_db),
            "collapsed": self.collapsed,
            "slices": None if self.slices is None else self.slices.to_dict(),
        }


@dataclass(frozen=True)
class QuickCheck:
    samples: int
    outputs: tuple[OutputCheck, ...]

    def findings(self) -> tuple[Finding, ...]:
        """Error-level findings: every output with a collapsed slice or part (§A.9)."""
        return tuple(
            collapse_finding(output.name, output.slices)
            for output in self.outputs
            if output.collapsed and output.slices is not None
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "samples": self.samples,
            "outputs": [output.to_dict() for output in self.outputs],
            "findings": [finding.to_dict() for finding in self.findings()],
        }


def quick_check(
    float_model: onnx.ModelProto,
    int8_model: onnx.ModelProto | str | os.PathLike[str],
    batches: Iterable[Mapping[str, np.ndarray]],
    threads: int | None = None,
    float_file: str | os.PathLike[str] | None = None,
    float_outputs: Mapping[str, np.ndarray] | None = None,
) -> QuickCheck | None:
    """Top-1 agreement, SQNR and the per-slice verdict (§A.9) of every output, int8 vs
    float, on ``batches``. ``float_file``: the float model's file, when it is on disk: the
    session reads it there, and ``float_model`` may be its weightless skeleton.
    ``float_outputs``: every output of the float model on all of ``batches``, in order,
    computed already (§C.10.3): the float model is not run. ``int8_model`` may be the int8
    model's file (§C.11)."""
    # The batches are read twice (kept in a list if they can be read once).
    feeds_list = batches if iter(batches) is not batches else list(batches)
    # Runs of at most ``run_size`` samples (§C.9): each output row is the same.
    run_size = samples_per_run(Graph(float_model), _LARGEST_RUN)
    feeds_list = [part for batch in feeds_list for _, part in batch_slices(dict(batch), run_size)]
    samples = sum(len(next(iter(batch.values()))) for batch in feeds_list)
    if samples == 0:
        return None
    if float_outputs is not None:
        held = {len(values) for values in float_outputs.values()}
        if held != {samples}:
            raise ValueError(f"float_outputs hold {sorted(held)} samples, the batches {samples}")
        outputs = _beside_float(float_outputs, int8_model, feeds_list, threads)
    elif float_file is None:
        outputs = batch_outputs(float_model, int8_model, feeds_list, threads)
    else:  # (C.9.3) its weights read where they are in the file, not prepacked
        outputs = batch_outputs(float_file, int8_model, feeds_list, threads, float_prepack=False)
    return judged_batches(float_model, outputs, samples)


# Per batch: output name -> its float and int8 values.
BatchOutputs = dict[str, tuple[np.ndarray, np.ndarray]]


def batch_outputs(
    float_model: onnx.ModelProto | str | os.PathLike[str],
    int8_model: onnx.ModelProto | str | os.PathLike[str],
    batches: Sequence[Mapping[str, np.ndarray]],
    threads: int | None,
    *,
    float_prepack: bool = True,
) -> list[BatchOutputs]:
    """Every output's float and int8 values on each of ``batches`` (``float_model``: the
    model, or its file). One session at a time: a large model's float and int8 weights are
    not held by ONNX Runtime at once. ``float_prepack=False``: the float session leaves
    its weights unpacked (§C.9.3)."""
    floats = every_output(float_model, batches, threads, prepack=float_prepack)
    return paired_outputs(floats, every_output(int8_model, batches, threads))


def every_output(
    model: onnx.ModelProto | str | os.PathLike[str],
    batches: Sequence[Mapping[str, np.ndarray]],
    threads: int | None,
    *,
    prepack: bool = True,
) -> list[dict[str, np.ndarray]]:
    """Every output of ``model`` on each of ``batches``, from one session, let go on return."""
    session = make_session(model, threads=threads, prepack=prepack)
    names = [output.name for output in session.get_outputs()]
    return [
        {
            name: np.asarray(value)
            for name, value in zip(names, session.run(names, dict(batch)), strict=True)
        }
        for batch in batches
    ]


def paired_outputs(
    floats: Sequence[Mapping[str, np.ndarray]], int8s: Sequence[Mapping[str, np.ndarray]]
) -> list[BatchOutputs]:
    """Per batch, each output's float and int8 values side by side."""
    return [
        {name: (values[name], found[name]) for name in values}
        for values, found in zip(floats, int8s, strict=True)
    ]


def _beside_float(
    float_outputs: Mapping[str, np.ndarray],
    int8_model: onnx.ModelProto | str | os.PathLike[str],
    batches: Sequence[Mapping[str, np.ndarray]],
    threads: int | None,
) -> list[BatchOutputs]:
    """``batch_outputs`` with the float values given: only the int8 model runs."""
    counts = [len(next(iter(batch.values()))) for batch in batches]
    ends = np.cumsum(counts)
    floats = [
        {name: values[end - count : end] for name, values in float_outputs.items()}
        for count, end in zip(counts, ends, strict=True)
    ]
    int8s = every_output(int8_model, batches, threads)
    return [
        {name: (values[name], found[name]) for name in found}
        for values, found in zip(floats, int8s, strict=True)
    ]


def judged_batches(
    float_model: onnx.ModelProto, per_batch: Sequence[BatchOutputs], samples: int
) -> QuickCheck | None:
    """``judged`` of outputs computed batch by batch (``batch_outputs``, wherever it ran),
    the batches in sample order."""
    if not per_batch:
        return None
    outputs = {
        name: (
            np.concatenate([batch[name][0] for batch in per_batch]),
            np.concatenate([batch[name][1] for batch in per_batch]),
        )
        for name in per_batch[0]
    }
    return judged(float_model, outputs, samples)


def judged(
    float_model: onnx.ModelProto,
    outputs: Mapping[str, tuple[np.ndarray, np.ndarray]],
    samples: int,
) -> QuickCheck:
    """The quick check of the float and int8 values of every output (name -> the two, all
    held-back samples in order), wherever they were computed."""
    graph = Graph(float_model)
    parts, probabilities = output_parts(graph), output_probabilities(graph)
    spatial = output_spatial_axes(graph)
    checks = []
    for name, (ref, out) in outputs.items():
        layout = (parts.get(name, ()), probabilities.get(name, ()), spatial.get(name, ()))
        classes = ref.ndim == 2 and ref.shape[1] > 1 and np.issubdtype(ref.dtype, np.floating)
        checks.append(
            OutputCheck(
                name=name,
                sqnr_db=sqnr_db(ref, out),
                top1_agreement=topk_agreement(ref, out, 1) if classes else None,
                slices=slice_verdict(ref, out, *layout),
            )
        )
    return QuickCheck(samples=samples, outputs=tuple(checks))
