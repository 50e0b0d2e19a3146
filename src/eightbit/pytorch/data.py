"""PyTorch data as the arrays calibration reads (numerics §T.2).

``read_batches`` turns a ``DataLoader``, a ``Dataset``, a tensor, a tuple of tensors, a dict
of tensors or a list of such items into a list of batches, each a tuple of positional
inputs or a dict of keyword inputs. It reads the data once, in order: a shuffling loader
would otherwise give calibration and the held-back quick check different samples on each
pass. ``as_arrays`` names each batch's tensors after the ONNX model's inputs, which the
exporter names after ``forward``'s parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from eightbit.errors import DataError

__all__ = ["DATASET_BATCH", "Batch", "as_arrays", "example_of", "is_torch_data", "read_batches"]

# Samples a Dataset is collated into per batch (any size serves: calibration regroups).
DATASET_BATCH = 64

# One batch: positional inputs in ``forward``'s order, or keyword inputs by name.
Batch = tuple[Any, ...] | dict[str, Any]


def is_torch_data(data: object) -> bool:
    """Whether ``data`` holds torch objects (never imports torch to find out)."""
    torch = __import__("sys").modules.get("torch")
    if torch is None:
        return False
    kinds = (torch.Tensor, torch.utils.data.Dataset, torch.utils.data.DataLoader)
    if isinstance(data, kinds):
        return True
    if isinstance(data, Mapping):
        return any(isinstance(value, torch.Tensor) for value in data.values())
    if isinstance(data, (tuple, list)) and data:
        return is_torch_data(data[0])
    return False


def read_batches(torch: Any, data: object) -> list[Batch]:
    """Every batch of ``data``, in order; see the module docstring for the kinds read."""
    loader = torch.utils.data
    if isinstance(data, loader.Dataset) and not isinstance(data, loader.IterableDataset):
        data = loader.DataLoader(data, batch_size=DATASET_BATCH, shuffle=False)
    if isinstance(data, (torch.Tensor, np.ndarray, Mapping, tuple)):
        return [_batch(torch, data, 0)]
    if not isinstance(data, Iterable):
        raise DataError(
            "PyTorch data must be a DataLoader, a Dataset, a tensor, a tuple or dict of "
            f"tensors, or a list of them (got {type(data).__name__})"
        )
    batches = [_batch(torch, item, index) for index, item in enumerate(data)]
    if not batches:
        raise DataError("the PyTorch data holds no samples")
    return batches


def _batch(torch: Any, item: object, index: int) -> Batch:
    if isinstance(item, (torch.Tensor, np.ndarray)):
        return (item,)
    if isinstance(item, Mapping):
        return {str(name): value for name, value in item.items()}
    if isinstance(item, (tuple, list)):
        return tuple(item)
    raise DataError(
        f"item {index} of the PyTorch data is a {type(item).__name__}; give tensors, tuples "
        "of tensors (forward's positional inputs) or dicts (forward's parameter names)"
    )


def example_of(
    batch: Batch, parameters: Sequence[str], required: int
) -> tuple[Any, ...] | dict[str, Any]:
    """The example call ``forward`` is exported with, from the first batch.

    A dict keeps the entries named after ``forward``'s ``parameters``, in their order (a
    label is not an input). A tuple is read as positional inputs up to the ``required``
    parameters (those without a default): a Dataset's ``(image, label)`` then exports
    ``forward(image)``.
    """
    if isinstance(batch, dict):
        return {name: batch[name] for name in parameters if name in batch}
    return batch[: max(required, 1)]


def as_arrays(torch: Any, batches: Sequence[Batch], names: Sequence[str]) -> list[dict[str, Any]]:
    """Each batch as ``{ONNX input name: array}``: dicts by name, tuples by position.

    Entries past the model's inputs (labels, unused keyword inputs) are left out; a
    missing input is left to calibration, which names it.
    """
    arrays = []
    for batch in batches:
        if isinstance(batch, dict):
            named = {name: batch[name] for name in names if name in batch}
            if not named:
                raise DataError(
                    f"the PyTorch data's dicts have keys {sorted(batch)} but the model's "
                    f"inputs are {list(names)} (forward's parameter names)"
                )
        else:
            named = dict(zip(names, batch, strict=False))
        arrays.append({name: _numpy(torch, value) for name, value in named.items()})
    return arrays


def _numpy(torch: Any, value: object) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)
