"""How many samples one ONNX Runtime run of a model may hold (docs/numerics.md §C.9).

A batch's activations grow with the batch and the image, not with the weights: VGG-16's
float activations are 109 MB per sample, so a batch of 16 with every tensor exposed holds
1.75 GB beside the 528 MB of weights. The steps that run many activations at once
(calibration, the measuring steps, the quick check) split each batch into runs of
``samples_per_run`` samples; every sample is computed alone by ONNX Runtime, so the
outputs are the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from onnx import TensorProto

from eightbit.graph._proto import np_dtype, tensor_byte_size, uses_external_data
from eightbit.graph.view import Graph

# Weights, twice, plus one run's activations (C.9.1).
RUN_BYTES = 2**30
# A model whose weights alone pass RUN_BYTES still gets this much for its activations.
MIN_ACTIVATION_BYTES = 128 * 2**20
# While a run's activations are alive, the weights are held twice: by the model the
# step reads (a proto, or arrays) and by ONNX Runtime's session (C.9.1).
WEIGHT_COPIES = 2


def activation_bytes(graph: Graph, tensors: Sequence[str] | None = None) -> int:
    """The bytes of one sample of ``tensors`` (default: every float activation), from their
    shapes without the batch axis; a tensor of unknown shape counts as nothing."""
    total = 0
    for name in graph.float_activations() if tensors is None else tensors:
        info = graph.info(name)
        if info is None or info.shape is None or not info.shape:
            continue
        sample = [d for d in info.shape[1:] if isinstance(d, int) and d > 0]
        total += math.prod(sample) * info.dtype.itemsize
    return total


def weight_bytes(graph: Graph) -> int:
    """The bytes of the model's weights, those it keeps in a file (external data, §C.11)
    counted from their shapes, as the session that reads them will hold them."""
    return sum(_loaded_bytes(tensor) for tensor in graph.model.graph.initializer)


def _loaded_bytes(tensor: TensorProto) -> int:
    dtype = np_dtype(tensor.data_type)
    if not uses_external_data(tensor) or dtype is None:
        return tensor_byte_size(tensor)
    return math.prod(tensor.dims) * dtype.itemsize


def samples_per_run(graph: Graph, batch_size: int, tensors: Sequence[str] | None = None) -> int:
    """(C.9.1) The samples of a ``batch_size`` batch one run holds: as many as fit in what
    ``RUN_BYTES`` leaves beside the weights' two copies (at least
    ``MIN_ACTIVATION_BYTES``), 1 to ``batch_size``."""
    per_sample = activation_bytes(graph, tensors)
    if per_sample == 0:
        return batch_size
    budget = max(RUN_BYTES - WEIGHT_COPIES * weight_bytes(graph), MIN_ACTIVATION_BYTES)
    return max(1, min(batch_size, budget // per_sample))
