"""One float pass for a big model's measuring steps: calibration's (docs/numerics.md §C.10).

The clipping choice (§I.10) scores its int8 candidates against the float model's first
output on the first calibration samples, and bias correction (§I.3) needs the per-position
means of its layers' float inputs on the first of them and compares its int8 models with
the same float output. Calibration computes all of these already: every activation of the
float model on every calibration sample. On a big model, where one float pass over a few
dozen samples costs tens of seconds, ``FloatTap`` keeps them as calibration runs
(``calibrate(tap=)``) and the steps read ``SharedFloat`` instead of running the float
model again: the clipping choice one float pass less, bias correction three.

What a small model's steps measure is unchanged: they run their own passes, which also
give bias correction its per-layer SQNRs (the shared pass has only the output's).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from eightbit.analysis.metrics import sqnr_db
from eightbit.calibrate.data import Batch
from eightbit.graph import Graph
from eightbit.graph.run_size import weight_bytes
from eightbit.graph.session import handed_session
from eightbit.ops import lookup
from eightbit.ops.spec import optional_input

# (C.10) Past these float weight bytes, the measuring steps read calibration's pass: a
# float pass then costs seconds per sample run (VGG-16, 528 MB: ~0.3 s a sample on 2
# cores), more than the per-layer report it would also buy. MobileNetV2 (14 MB) keeps its
# own passes, its results and report as they were.
SHARED_PASS_BYTES = 256 * 2**20


def shares_float_pass(graph: Graph) -> bool:
    """(C.10) Whether the measuring steps of ``graph``'s model read calibration's pass."""
    return weight_bytes(graph) > SHARED_PASS_BYTES


def layer_inputs(graph: Graph) -> list[str]:
    """The float inputs of the layers bias correction may correct (a weight and a bias
    port, the weight a constant): the tensors whose means it reads."""
    found = []
    for node in graph.nodes:
        spec = lookup(node.op_type, node.domain)
        if spec is None or not spec.is_layer or spec.weight_port is None:
            continue
        if spec.bias_port is None or optional_input(node, spec.weight_port) is None:
            continue
        if node.inputs[spec.weight_port] in graph.initializers:
            found.append(node.inputs[0])
    return list(dict.fromkeys(found))


@dataclass(frozen=True)
class SharedFloat:
    """What calibration's pass kept: the first output on the first ``len(output)``
    samples, and the per-position means of ``means``' tensors on the first
    ``mean_samples``. ``model``: the float model it ran (the steps check it is theirs)."""

    model: onnx.ModelProto = field(repr=False)
    output_name: str
    output: np.ndarray = field(repr=False)
    means: Mapping[str, np.ndarray] = field(repr=False)
    mean_samples: int
    # The clipping choice's int8 first output of the model planned with ``int8_ranges``
    # (the chosen ranges, that object) on the same first samples: bias correction's
    # "before" when its plan is made from them (§C.10).
    int8_ranges: object | None = field(default=None, repr=False)
    int8_output: np.ndarray | None = field(default=None, repr=False)
    # (C.10.3) Every output of the model on the held-back samples, in order, when the
    # quick check compares with it: calibration's session ran them after its own.
    held_back: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False)

    def serves(self, model: onnx.ModelProto, samples: int, tensors: Sequence[str] = ()) -> bool:
        """Whether this pass is ``model``'s on its first ``samples`` samples (and, for
        ``tensors``, holds their means over exactly those samples)."""
        if model is not self.model or len(self.output) < samples:
            return False
        return not tensors or (
            self.mean_samples == samples and all(t in self.means for t in tensors)
        )

    def int8_before(self, ranges: object, samples: int) -> np.ndarray | None:
        """The int8 output of the model planned with ``ranges`` on the first ``samples``
        samples, when the clipping choice computed it (else None)."""
        if self.int8_output is None or ranges is not self.int8_ranges:
            return None
        return self.int8_output[:samples] if len(self.int8_output) >= samples else None


class FloatTap:
    """``calibrate``'s ``Tap``: keeps the first output of the first ``output_samples``
    samples and sums ``mean_tensors`` (float64) over the first ``mean_samples``; with
    ``check``, every output of the held-back samples (§C.10.3)."""

    def __init__(
        self,
        model: onnx.ModelProto,
        output_samples: int,
        mean_tensors: Sequence[str] = (),
        mean_samples: int = 0,
        *,
        check: bool = False,
    ) -> None:
        self.model, self.output_name = model, model.graph.output[0].name
        self.mean_tensors = list(mean_tensors) if mean_samples else []
        self.check_outputs = [output.name for output in model.graph.output] if check else []
        names = [self.output_name, *self.mean_tensors, *self.check_outputs]
        self.tensors = list(dict.fromkeys(names))
        self.output_samples, self.mean_samples = output_samples, mean_samples
        self._outputs: list[np.ndarray] = []
        self._held_back: dict[str, list[np.ndarray]] = {name: [] for name in self.check_outputs}
        self._sums: dict[str, np.ndarray] = {}
        self._summed = 0

    def __call__(self, values: Mapping[str, np.ndarray], first: int) -> None:
        kept = max(0, min(len(values[self.output_name]), self.output_samples - first))
        if kept:
            self._outputs.append(np.array(values[self.output_name][:kept]))
        summed = max(0, min(len(values[self.output_name]), self.mean_samples - first))
        if not summed:
            return
        for name in self.mean_tensors:
            part = np.asarray(np.sum(values[name][:summed], axis=0, dtype=np.float64))
            previous = self._sums.get(name)
            self._sums[name] = part if previous is None else previous + part
        self._summed += summed

    def held_back(self, values: Mapping[str, np.ndarray]) -> None:
        for name, kept in self._held_back.items():
            kept.append(np.array(values[name]))

    def result(self) -> SharedFloat:
        output = np.concatenate(self._outputs) if self._outputs else np.zeros((0,), np.float32)
        count = self._summed
        means = {name: total / count for name, total in self._sums.items()} if count else {}
        held_back = {name: np.concatenate(kept) for name, kept in self._held_back.items() if kept}
        return SharedFloat(self.model, self.output_name, output, means, count, held_back=held_back)


def int8_outputs(
    model: onnx.ModelProto, batches: Iterable[Batch], name: str, threads: int | None
) -> np.ndarray:
    """The output ``name`` of ``model`` on every batch, in order (one session, let go).
    A caller that hands ``model`` over (holds no reference) lets a big one go while its
    session runs (§C.11)."""
    given = [model]
    del model
    session = handed_session(given.pop(), threads=threads)
    values = [np.asarray(session.run([name], dict(batch))[0]) for batch in batches]
    del session
    return np.concatenate(values)


def output_shift(reference: np.ndarray, values: np.ndarray) -> np.ndarray | None:
    """The mean of (int8 − float) per channel (axis 1) of an output of rank >= 2."""
    if reference.ndim < 2:
        return None
    axes = tuple(axis for axis in range(reference.ndim) if axis != 1)
    difference = values.astype(np.float64) - reference.astype(np.float64)
    elements = math.prod(reference.shape) // reference.shape[1]
    return np.asarray(difference.sum(axis=axes) / elements)


def output_sqnr(reference: np.ndarray, values: np.ndarray) -> float:
    return sqnr_db(reference, values)
