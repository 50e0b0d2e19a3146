"""Conv sums on PyTorch's oneDNN direct convolution, when torch is importable (§E.3b).

The fast Conv kernel computes Σ_k x'_k · w'_k with |x'_k| <= 128 (``gemm.SHIFTED_BOUND``) in
float32. numpy's BLAS may be pinned to slower kernels than the CPU offers (for example
``OPENBLAS_CORETYPE=Haswell`` on an AVX-512 machine) and needs an im2col copy first;
oneDNN's direct convolution picks its kernels by CPU and reads the padded input itself.
It is exact for the reason the BLAS path is: when 128 · Σ_k |w'[c, k]| <= 2^24 over the
terms summed in float32, every partial sum, in any order and with or without FMA, is an
integer of magnitude <= 2^24. Output channels that meet the bound over their whole
reduction form one convolution; the others are cut along the input channels
(``exact_ends`` over |w'| summed over the taps), each cut its own convolution, the cuts
added in float64 (exact below 2^53).

Used only when torch imports with oneDNN, for 1-D and 2-D convolutions, while torch's
float32 convolutions run at full precision (no bf16/tf32 "fpmath" setting), and after
canary convolutions whose sums need all 24 bits came out exact through the same
operators. Otherwise the numpy path runs; both give the same integers. The thread count
is torch's: OpenMP, which threadpoolctl's ``threadpool_limits`` sets along with numpy's
BLAS for the libraries loaded when it is entered, so Prepare imports torch (``load``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eightbit.engine.kernels.gemm import FLOAT32_EXACT, SHIFTED_BOUND, exact_ends

# Settings under which torch's float32 convolutions round nothing but the sums themselves.
_FULL_PRECISION = ("none", "ieee", "highest")
# Input shapes whose packed weights a Conv keeps (a model usually runs on one).
_SHAPES_KEPT = 4

Pair = tuple[int, int]


@functools.cache
def _import_torch() -> Any | None:
    try:
        import torch
    except Exception:  # absent, or an install that fails to load: the numpy path runs
        return None
    mkldnn = getattr(torch.backends, "mkldnn", None)
    if mkldnn is None or not mkldnn.is_available():
        return None
    return torch


def load() -> bool:
    """Import torch now, if it is installed (Prepare's call: see the module doc)."""
    return _import_torch() is not None


def _full_precision(torch: Any) -> bool:
    """Whether torch's float32 convolutions currently compute in float32 (not bf16/tf32)."""
    mkldnn = torch.backends.mkldnn
    settings = [
        getattr(torch.backends, "fp32_precision", "none"),
        getattr(mkldnn, "fp32_precision", "none"),
        getattr(getattr(mkldnn, "conv", None), "fp32_precision", "none"),
        torch.get_float32_matmul_precision(),
    ]
    return all(str(setting) in _FULL_PRECISION for setting in settings)


def torch_or_none() -> Any | None:
    """The torch module when its oneDNN convolution may be used now, else None."""
    torch = _import_torch()
    if torch is None or not _full_precision(torch) or not _passes_canary():
        return None
    return torch


def canary_operands() -> tuple[np.ndarray, np.ndarray]:
    """A 1x1 convolution (x' (1, C, 1, 2), w' (1, C, 1, 1)) whose exact sums are odd and
    lie between 2^23 and 2^24 (so they need every one of float32's 24 bits), with
    128 · Σ |w'| <= 2^24."""
    channels = 1031
    k = np.arange(channels)
    signs = np.where(k % 4 == 1, -1, 1)
    weight = signs * (127 - k % 2)  # w'_0 = 127 is odd
    x = np.stack([signs * (128 - k % 3), signs * (127 - k % 5)], axis=-1)
    for column in range(2):
        if (weight @ x[:, column]) % 2 == 0:
            x[0, column] -= 1  # moves the sum by the odd w'_0
    return x.reshape(1, channels, 1, 2), weight.reshape(1, channels, 1, 1)


@functools.cache
def _passes_canary() -> bool:
    """The canary through both operators ``_convolve`` uses (one group, and two)."""
    torch = _import_torch()
    if torch is None:
        return False
    x, weight = canary_operands()
    expected = np.einsum("nchw,oc->nohw", x, weight[:, :, 0, 0])
    for group in (1, 2):
        source = np.concatenate([x] * group, axis=1).astype(np.float32)
        weights = np.concatenate([weight] * group, axis=0).astype(np.float32)
        try:
            packed = _pack(torch, weights, source.shape, (1, 1), (1, 1), group)
            got = _convolve(torch, torch.from_numpy(source), packed, (1, 1), (1, 1), group)
            sums = got.numpy().astype(np.int64)
        except Exception:  # a torch without these operators: the numpy path runs
            return False
        if not all(np.array_equal(sums[:, [g]], expected) for g in range(group)):
            return False
    return True


def _convolve(
    torch: Any, x: Any, packed_weight: Any, strides: Pair, dilations: Pair, group: int
) -> Any:
    """oneDNN's direct convolution of an unpadded input: without a group, the inference
    operator (channels-last kernels, and weights packed for them stay packed: oneDNN
    would reorder a large weight on every call otherwise); with groups (depthwise), the
    plain one, which keeps the input's layout and is faster there."""
    args = (x, packed_weight, None, [0, 0], list(strides), list(dilations), group)
    if group == 1:
        return torch.ops.mkldnn._convolution_pointwise(*args, "none", [], "")
    return torch.mkldnn_convolution(*args)


def _pack(
    torch: Any,
    weight: np.ndarray,
    input_shape: tuple[int, ...],
    strides: Pair,
    dilations: Pair,
    group: int,
) -> Any:
    """A float32 weight in the layout oneDNN chooses for an input of ``input_shape``."""
    return torch._C._nn.mkldnn_reorder_conv2d_weight(
        torch.from_numpy(weight).to_mkldnn(),
        [0, 0],
        list(strides),
        list(dilations),
        group,
        list(input_shape),
    )


@dataclass(frozen=True, eq=False)
class _Rows:
    """Some output channels' weights cut along the input channels, and their oneDNN
    packing for each input shape seen (oneDNN's preferred layout depends on it)."""

    rows: np.ndarray  # output channel indices
    channel_ends: tuple[int, ...]
    weights: tuple[np.ndarray, ...]  # float32 (rows, a cut of C_in/G, kh, kw), one per cut
    packed: dict[tuple[int, ...], tuple[Any, ...]] = field(default_factory=dict)

    def sums(self, torch: Any, x: Any, conv: TorchConv) -> np.ndarray:
        """float32 for one cut, else the cuts added in float64."""
        total: np.ndarray | None = None
        start = 0
        for end, weight in zip(self.channel_ends, self._packed(torch, x.shape, conv), strict=True):
            cut = x if len(self.weights) == 1 else x[:, start:end]
            part = _convolve(torch, cut, weight, conv.strides, conv.dilations, conv.group)
            values = part.numpy()
            total = values if total is None else np.add(total, values, dtype=np.float64)
            start = end
        assert total is not None
        return total

    def _packed(self, torch: Any, shape: tuple[int, ...], conv: TorchConv) -> tuple[Any, ...]:
        key = tuple(int(size) for size in shape)
        packed = self.packed.get(key)
        if packed is None:
            if len(self.packed) >= _SHAPES_KEPT:
                self.packed.clear()
            starts = (0, *self.channel_ends[:-1])
            packed = self.packed[key] = tuple(
                _pack(
                    torch,
                    weight,
                    (key[0], key[1] if len(self.weights) == 1 else end - start, *key[2:]),
                    conv.strides,
                    conv.dilations,
                    conv.group,
                )
                for weight, start, end in zip(self.weights, starts, self.channel_ends, strict=True)
            )
        return packed


@dataclass(frozen=True, eq=False)
class TorchConv:
    """A Conv's centred weights prepared for oneDNN, by exactness of their sums.

    Called on the shifted, already padded float32 input (N, C, spatial...), it returns the
    sums (N, C_out, out...): float32 when one convolution does it all, else float64.
    """

    parts: tuple[_Rows, ...]
    out_channels: int
    strides: Pair
    dilations: Pair
    group: int

    @classmethod
    def prepare(
        cls, weight: np.ndarray, strides: tuple[int, ...], dilations: tuple[int, ...], group: int
    ) -> TorchConv | None:
        """From the centred int64 weight (C_out, C_in/G, kernel...); None when torch is not
        usable, the convolution is not 1-D or 2-D, or no cut keeps every sum exact; also
        for a 1x1 stride-1 convolution, whose input is already numpy's GEMM operand (no
        im2col to save, and oneDNN is slower on some such shapes, e.g. 16 channels)."""
        torch = torch_or_none()
        if torch is None or weight.ndim not in (3, 4) or weight.size == 0:
            return None
        if all(k == 1 for k in weight.shape[2:]) and all(s == 1 for s in strides):
            return None
        if weight.ndim == 3:  # 1-D as height 1
            weight = weight[:, :, None, :]
            strides, dilations = (1, *strides), (1, *dilations)
        per_channel = np.abs(weight).sum(axis=(2, 3))  # (C_out, C_in/G)
        limit = FLOAT32_EXACT // SHIFTED_BOUND
        whole = per_channel.sum(axis=1) <= limit
        if group != 1 and not whole.all():
            return None  # neither a subset of rows nor a cut is one slice of a grouped Conv
        row_sets = [np.flatnonzero(whole), np.flatnonzero(~whole)]
        cuts = [(rows, exact_ends(per_channel[rows])) for rows in row_sets if rows.size]
        for rows, ends in cuts:
            starts = (0, *ends[:-1])
            if any(
                per_channel[rows, s:e].sum(axis=1).max() > limit
                for s, e in zip(starts, ends, strict=True)
            ):
                return None  # one channel's taps alone may pass 2^24
        parts = tuple(_Rows(rows, ends, _cut(weight[rows], ends)) for rows, ends in cuts)
        stride2: Pair = (int(strides[0]), int(strides[1]))
        dilation2: Pair = (int(dilations[0]), int(dilations[1]))
        return cls(parts, weight.shape[0], stride2, dilation2, group)

    def __call__(self, source: np.ndarray) -> np.ndarray | None:
        """The sums over ``source``; None when torch may not be used now (then the caller
        runs the numpy path)."""
        torch = torch_or_none()
        if torch is None:
            return None
        flat = source.ndim == 3
        x = torch.from_numpy(source[:, :, None, :] if flat else source)
        try:
            if len(self.parts) == 1:
                total = self.parts[0].sums(torch, x, self)
            else:
                sums = [part.sums(torch, x, self) for part in self.parts]
                total = np.empty((sums[0].shape[0], self.out_channels, *sums[0].shape[2:]))
                for part, values in zip(self.parts, sums, strict=True):
                    total[:, part.rows] = values
        except RuntimeError:
            # oneDNN may refuse a shape ("could not create a primitive descriptor", seen
            # once under memory pressure): the numpy path computes the same integers.
            return None
        return total[:, :, 0, :] if flat else total


def _cut(weight: np.ndarray, ends: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """``weight`` (C_out, C_in/G, ...) cut at the input channels ``ends``, as float32."""
    starts = (0, *ends[:-1])
    return tuple(
        np.ascontiguousarray(weight[:, s:e], dtype=np.float32)
        for s, e in zip(starts, ends, strict=True)
    )
