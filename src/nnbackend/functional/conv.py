"""Convolutions (``conv1d``, ``conv2d``) and their backward passes, by im2col and batched GEMMs.

Semantics are PyTorch's (``torch.nn.functional.conv1d``/``conv2d``): cross-correlation, layouts
NCL / NCHW (or unbatched CL / CHW), weight (out, in/groups, k) / (out, in/groups, kh, kw), bias
(out,). With the padded input x̃ (zeros around x), the output is::

    y[n, o, p, q] = b[o] + Σ_{c, i, j} W[o, c, i, j] · x̃[n, g·C_g + c, p·s_h + i·d_h, q·s_w + j·d_w]

where g = o // O_g is the group of output channel o, C_g = C / groups and O_g = out / groups.
Output size per axis: ⌊(H + pad_before + pad_after − d·(k − 1) − 1) / s⌋ + 1. ``padding`` is an
int, a tuple (one per axis), ``"valid"`` (no padding) or ``"same"`` (output size = input size;
refused with a stride > 1, as PyTorch refuses it; an odd total padding d·(k − 1) puts the
extra row/column at the bottom/right, as PyTorch does). A 1-D convolution is the 2-D one with
height 1.

im2col (Chainer's ``im2col_cpu``) and the products
--------------------------------------------------
The columns are built by one strided basic slice of x̃ per kernel offset (i, j) (a slice never
repeats an index; NumPy copies all offsets at once from ``sliding_window_view``, see
:func:`nnbackend._native.windows_into`), channel-major, c samples side by side::

    cols[m, g, (c', i, j), (s, p, q)] = x̃[m·c + s, g·C_g + c', p·s_h + i·d_h, q·s_w + j·d_w]
    shape (N/c, groups, K_g = C_g·kh·kw, c·OH·OW)

and every product is one batched matmul over the N/c chunks (and the groups)::

    y     = W_g · cols           (groups, O_g, K_g) @ (N/c, groups, K_g, c·P)
    ∂L/∂Wᵀ = Σ_m cols · δᵀ       (N/c, groups, K_g, c·P) @ (N/c, groups, c·P, O_g)
    ∂L/∂b = Σ_{n, p} δ
    ∂L/∂x = col2im(W_gᵀ · δ)  or  the convolution of δ with the flipped kernel

With c = 1 (the usual choice, :func:`chunk_size`) the products are per sample and y comes out
NCHW as it is; c = N (a sample's product too small for OpenBLAS to thread, yet compute-bound:
LeNet's second convolution) makes each product one GEMM over the batch, and y and δ change
layout once.

∂L/∂x, three ways (:func:`_input_grad_method`): with stride 1 and O·H·W ≤ C·OH·OW (the
"same" convolutions) as the convolution of δ, zero-padded by d·(k − 1) − pad, with the kernel
flipped and its channel axes swapped (im2col again and one batched matmul, no scatter);
otherwise col2im adds each offset's columns back through its slice (``+=`` on a view where the
library has mutable views, an assignment where arrays are writeable, ``array_api_extra.at(...)
.add`` where they are immutable, as on JAX): for stride 1 in whole padded rows (one contiguous
slice per offset and plane, δ widened by zero columns), else clipped per offset.

The forward/backward convention
-------------------------------
:func:`conv2d_forward` (and :func:`conv1d_forward`) return ``(y, saved)``: ``saved`` is a
:class:`ConvSaved` holding the columns, the weight and the geometry, so that
:func:`conv2d_backward` computes ∂L/∂W from the forward's columns without building them again;
it is spent by the backward. :func:`conv2d` / :func:`conv1d` return y alone. A
:class:`ConvWorkspace` passed to the forward lends it reusable buffers (the padded input, the
columns, and in the backward the padded or widened δ and its columns, which take the forward's
column buffer back) on libraries with mutable arrays, so a layer that trains step after step
allocates its big buffers once (the fresh allocations cost a 3×3 16→16 convolution ~20 % more).
On JAX each kernel (forward, backward) runs compiled once per geometry
(:func:`nnbackend._native.fused`).

Columns too large to keep (:func:`recompute_block`: mutable arrays, one product per sample,
more than :data:`KEPT_COLUMNS_BYTES` for the batch) are not kept: ``saved.cols`` holds the
zero-padded input instead (``saved.block`` > 0), and the columns are built a block of samples
at a time into one small buffer, for the forward's products and again for ∂L/∂W in the
backward (∂L/∂x by the flipped kernel runs in blocks too). The residual block's 3×3 16→16
convolutions (18.9 MB of columns each) then keep 2.3 MB each: its training step's peak RSS
growth fell from 58.0 to 34.4 MiB (PyTorch: 25.5 MiB), while its CPU time on one thread stayed
within 1 % (39.6 against 40.0 ms; a block's columns are still in cache for its product). On
two threads the rebuilding is a serial pass beside GEMMs that use both cores: 6–11 % more
time per step (alternating steps, quantiles 0–10 %, loaded machine). Blocks of 2, 4, 10 and
20 MiB cost the same there (the pass, not the number of products, is the cost).

With stride 1 the rebuilt columns are taken in whole padded rows (:func:`_rows_of_columns`):
each kernel offset's columns are one run of OH·Wp values of the flattened padded plane, one
long copy instead of OH runs of OW, and the products run over the Wp − OW extra columns, whose
outputs are dropped (δ is zero there for ∂L/∂W). The blocks then run in parts, one per core,
each on its own Python thread with BLAS on one thread (:func:`_row_column_products`,
:func:`nnbackend._native.run_parts`): a part writes its samples into the zero border, builds
their columns, multiplies and narrows the products into y (or ∂L/∂x) block by block. On an
AMD EPYC virtual machine (OpenBLAS Haswell kernels, 2 threads), where the 32-value window runs
had made im2col half of the residual block's step and a two-thread BLAS woke its second thread
for each small product, the block's training step went from 62–70 ms to 23–30 ms (PyTorch
13–20 ms on the same runs).

Only the kw column shifts of the padded rows are copied (row-shifted columns, Hp·Wp values per
channel and shift): kernel row i's columns are then the submatrix from row offset i·d_h·Wp,
read in place. ∂L/∂W takes one product per kernel row; the forward and the flipped-kernel
∂L/∂x take one product with the kernel rows' weights stacked (kh·O rows) and add its row
blocks shifted by i·d_h·Wp (:func:`_shifted_sum`). The copies fall from kh·kw runs to kw
planes per sample; on the AMD EPYC machine the residual block's training step went from
26.6–33.1 to 24.2–29.0 ms (medians of 60 alternated steps, two runs).

Measurements (NumPy 2.4, OpenBLAS 0.3.31 SkylakeX kernels, float32, ms)
------------------------------------------------------------------------
The products of one convolution (forward, ∂L/∂W, ∂L/∂cols) in three orientations, 2 threads,
idle machine: M = N·OH·OW rows of K = C·kh·kw::

    shape                        (M, K)·(K, O)       (O, K)·(K, M)       per sample
    3×3 16→16 (32, 16, 32, 32)   1.98 / 1.86 / 0.97  2.13 / 2.64 / 1.51  2.03 / 2.84 / 2.18
    5×5 1→6 (64, 1, 28, 28)      0.23 / 0.58 / 0.19  0.40 / 1.02 / 0.25  0.15 / 0.16 / 0.19
    5×5 6→16 (64, 6, 14, 14)     0.20 / 0.30 / 0.20  0.22 / 0.46 / 0.25  0.29 / 0.80 / 0.32

(∂L/∂W per sample as cols · δᵀ: 2.6 instead of 4.3 ms for the first, 0.45 instead of 0.78 for
the last, one thread.) The (M, K) orientation's products are the fastest, but its columns are
channels-last: from NCHW they cost a layout change of x, y, δ and ∂L/∂x and an im2col whose
runs are C long (one thread, the first case: 0.8 + 1.26 + 3·0.34 ms, against 0.12 + 1.0-1.4
ms here), which more than eats the gain; the channel-major columns need no transpose at all.
The whole layer, forward and backward (∂L/∂x but for the second case), 2 threads, idle
machine, against ``torch.nn.Conv2d`` (oneDNN) on the same 2 threads: 3×3 16→16 9.3-9.9 (PyTorch
2.9-3.1), 5×5 1→6 0.77 (0.69), 5×5 6→16 2.5-2.9 (1.12): im2col's memory traffic and
OpenBLAS on these thin products (55-80 GFLOP/s) against oneDNN's direct convolution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import array_api_compat
import array_api_extra as xpx

from .._checks import namespace_of
from .._libraries import library_of
from .._native import (
    fused,
    into_kernels,
    matmul_into,
    parallel_parts,
    run_parts,
    sum_into,
    summed,
    summer,
    windows_into,
)
from .._typing import Array, Namespace

__all__ = [
    "ConvGeometry",
    "ConvSaved",
    "ConvWorkspace",
    "chunk_size",
    "conv1d",
    "conv1d_backward",
    "conv1d_forward",
    "conv2d",
    "conv2d_backward",
    "conv2d_forward",
    "conv_geometry",
]

Pair = tuple[int, int]


# --------------------------------------------------------------------------------------------
# Geometry: the arguments, checked once, and every size the math needs


@dataclass(frozen=True)
class ConvGeometry:
    """The sizes of one convolution, in 2-D form (a 1-D convolution has height 1).

    Attributes
    ----------
    input_shape : tuple of int
        The input's shape as given: (N, C, H, W), (C, H, W), (N, C, L) or (C, L).
    batch, in_channels, out_channels, groups : int
    in_size, kernel, stride, dilation, out_size : (int, int)
        (height, width) each; height 1, kernel 1, stride 1 for a 1-D convolution.
    padding : ((int, int), (int, int))
        ((top, bottom), (left, right)) zeros around the input.
    is_2d : bool
        False for a 1-D convolution.
    chunk : int
        Samples per product, a divisor of the batch (:func:`chunk_size`).
    """

    input_shape: tuple[int, ...]
    batch: int
    in_channels: int
    out_channels: int
    groups: int
    in_size: Pair
    kernel: Pair
    stride: Pair
    dilation: Pair
    padding: tuple[Pair, Pair]
    out_size: Pair
    is_2d: bool = True
    chunk: int = 1

    @property
    def padded_size(self) -> Pair:
        """(H + top + bottom, W + left + right)."""
        (top, bottom), (left, right) = self.padding
        return self.in_size[0] + top + bottom, self.in_size[1] + left + right

    @property
    def output_shape(self) -> tuple[int, ...]:
        """y's shape, in the input's form (batched or not, 1-D or 2-D)."""
        lead = self.input_shape[:-self.spatial - 1]
        return (*lead, self.out_channels, *self.out_size[2 - self.spatial:])

    @property
    def spatial(self) -> int:
        """2 for conv2d, 1 for conv1d (whose height, kernel height and strides are 1)."""
        return 2 if self.is_2d else 1


_THREADED_MACS = 2**18
"""Multiply-adds from which OpenBLAS runs a GEMM on several threads (its
``GEMM_MULTITHREAD_THRESHOLD`` of 4·2¹⁶); a smaller per-sample product runs on one core."""

_SMALL_WEIGHTS = 2**10
"""O_g·K_g below which a product is memory-bound (few multiply-adds per column read), so
a sample's columns kept in cache beat one GEMM over the batch."""


def chunk_size(batch: int, rows: int, inner: int, columns: int) -> int:
    """Samples per product (rows × inner) · (inner × chunk·columns): 1 (one product per
    sample, batched) or the whole batch (one GEMM).

    One product per sample keeps its columns in cache and gives NCHW without a transpose;
    it is the choice unless a sample's product is too small for OpenBLAS to thread
    (< ``_THREADED_MACS``) while its weights are large enough for the product to be
    compute-bound (≥ ``_SMALL_WEIGHTS``): then one GEMM over the batch. Measured on 2 threads
    (NumPy 2.4, OpenBLAS 0.3.31, float32 forward + backward of the layer, ms, against
    chunks of 4, 8 and the batch): LeNet's 5×5 6→16 (64, 6, 14, 14) 2.5-2.9 with the batch
    against 2.9-3.3 per sample; its 5×5 1→6 (64, 1, 28, 28) 0.77 per sample against 0.9 (4, 8)
    and 1.8-2.1 (batch); the 3×3 16→16 (32, 16, 32, 32) 9.3-9.9 per sample, 9.4-10.9 in
    chunks.
    """
    if rows * inner * columns >= _THREADED_MACS or rows * inner < _SMALL_WEIGHTS:
        return 1
    return batch


def _ints(value: Any, spatial: int, *, caller: str, name: str, minimum: int) -> tuple[int, ...]:
    """An int or a tuple of ``spatial`` ints, each ≥ ``minimum``, as a tuple."""
    items = (value,) * spatial if isinstance(value, int) else value
    wanted = "positive" if minimum == 1 else "non-negative"
    if (not isinstance(items, tuple | list) or len(items) != spatial
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in items)
            or isinstance(value, bool)):
        msg = (f"{caller}: {name} must be a {wanted} integer or a tuple of {spatial} "
               f"{wanted} integers, got {value!r}")
        raise TypeError(msg)
    if any(v < minimum for v in items):
        msg = f"{caller}: {name} must be {wanted}, got {value!r}"
        raise ValueError(msg)
    return tuple(items)


def _padding(padding: Any, kernel: Sequence[int], stride: Sequence[int],
             dilation: Sequence[int], spatial: int, caller: str) -> tuple[Pair, ...]:
    """(before, after) zeros per spatial axis, PyTorch's reading of ``padding``."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * spatial
        if padding == "same":
            if any(s != 1 for s in stride):
                msg = (f"{caller}: padding='same' is not supported for strided convolutions "
                       f"(stride={tuple(stride)}), as in PyTorch; give the padding as numbers")
                raise ValueError(msg)
            totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
            return tuple((t // 2, t - t // 2) for t in totals)  # the extra one after
        msg = (f"{caller}: padding must be 'valid', 'same', a non-negative integer or a tuple "
               f"of {spatial}, got {padding!r}")
        raise ValueError(msg)
    return tuple((p, p) for p in _ints(padding, spatial, caller=caller, name="padding",
                                       minimum=0))


def conv_geometry(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: Any = 1,
    spatial: int,
    caller: str,
    bias_shape: Sequence[int] | None = None,
) -> ConvGeometry:
    """Check the arguments of a ``spatial``-D convolution and compute its sizes.

    Every error names ``caller`` (a function or a layer's repr) and the shapes: the input's rank
    (N, C, *size) or unbatched (C, *size), its channel count against the weight's and
    ``groups``, a kernel (dilated) larger than the padded input, a non-positive stride or
    dilation, a groups count that does not divide the channels, a bias of the wrong shape.
    """
    input_shape, weight_shape = tuple(input_shape), tuple(weight_shape)
    if len(weight_shape) != spatial + 2:
        msg = (f"{caller}: weight must have shape (out_channels, in_channels/groups, "
               f"{'kh, kw' if spatial == 2 else 'k'}), got {weight_shape}")
        raise ValueError(msg)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        msg = f"{caller}: groups must be a positive integer, got {groups!r}"
        raise ValueError(msg)
    if len(input_shape) not in (spatial + 1, spatial + 2):
        axes = "H, W" if spatial == 2 else "L"
        c = weight_shape[1] * groups
        msg = (f"{caller} expected input of shape (N, {c}, {axes}) or ({c}, {axes}), got "
               f"{input_shape}")
        raise ValueError(msg)
    stride_ = _ints(stride, spatial, caller=caller, name="stride", minimum=1)
    dilation_ = _ints(dilation, spatial, caller=caller, name="dilation", minimum=1)
    kernel_ = weight_shape[2:]
    pad = _padding(padding, kernel_, stride_, dilation_, spatial, caller)
    out_channels, per_group = weight_shape[0], weight_shape[1]
    if out_channels % groups:
        msg = (f"{caller}: groups={groups} must divide the weight's {out_channels} output "
               f"channels (weight {weight_shape})")
        raise ValueError(msg)
    batched = len(input_shape) == spatial + 2
    channels = input_shape[1 if batched else 0]
    if channels != per_group * groups:
        msg = (f"{caller} expected input with {per_group * groups} channels (weight "
               f"{weight_shape}, groups={groups}), got input of shape {input_shape}")
        raise ValueError(msg)
    size = input_shape[-spatial:]
    padded = [n + before + after for n, (before, after) in zip(size, pad, strict=True)]
    reach = [d * (k - 1) + 1 for k, d in zip(kernel_, dilation_, strict=True)]
    if any(r > n for r, n in zip(reach, padded, strict=True)):
        dilated = "" if all(d == 1 for d in dilation_) else f" (dilated: {tuple(reach)})"
        msg = (f"{caller}: kernel size {tuple(kernel_)}{dilated} is larger than the padded "
               f"input {tuple(padded)} (input of shape {input_shape}, padding "
               f"{padding!r})")
        raise ValueError(msg)
    if bias_shape is not None and tuple(bias_shape) != (out_channels,):
        msg = f"{caller}: bias must have shape ({out_channels},), got {tuple(bias_shape)}"
        raise ValueError(msg)
    out = [(n - r) // s + 1 for n, r, s in zip(padded, reach, stride_, strict=True)]
    batch = input_shape[0] if batched else 1
    chunk = chunk_size(batch, out_channels // groups, per_group * math.prod(kernel_),
                       math.prod(out))
    if spatial == 1:
        return ConvGeometry(input_shape, batch, channels, out_channels, groups, (1, size[0]),
                            (1, kernel_[0]), (1, stride_[0]), (1, dilation_[0]),
                            ((0, 0), pad[0]), (1, out[0]), is_2d=False, chunk=chunk)
    return ConvGeometry(input_shape, batch, channels, out_channels, groups,
                        (size[0], size[1]), (kernel_[0], kernel_[1]), (stride_[0], stride_[1]),
                        (dilation_[0], dilation_[1]), (pad[0], pad[1]), (out[0], out[1]),
                        chunk=chunk)


# --------------------------------------------------------------------------------------------
# Buffers


class ConvWorkspace:
    """Buffers a convolution may reuse from one step to the next (a layer owns one).

    The forward takes its padded input and its columns from here, the backward gives them
    back once ∂L/∂W is computed (and takes and returns its own: the padded δ, the columns of
    δ), so a layer trained on same-shaped batches allocates each big buffer once. Buffers are
    kept by role and shape: a zero-bordered buffer (the padded input, the padded δ) only ever
    has its interior written, so its border stays zero. Only libraries with mutable arrays use
    it; a forward whose backward never runs simply leaves its buffers to the garbage collector.
    """

    __slots__ = ("_free",)

    _KEPT = 8  # distinct (role, shape, dtype, device) kept at most

    def __init__(self) -> None:
        self._free: dict[tuple[Any, ...], list[Array]] = {}

    def take(self, role: str, shape: tuple[int, ...], like: Array, xp: Namespace, *,
             zeros: bool = False) -> Array:
        """A buffer of ``shape`` with ``like``'s type, dtype and device: a returned one if
        there is one, else a new one (zero-filled when ``zeros``: its border must stay zero)."""
        device = array_api_compat.device(like)
        free = self._free.get((role, shape, type(like), like.dtype, device))
        if free:
            return free.pop()
        make = xp.zeros if zeros else xp.empty
        return make(shape, dtype=like.dtype, device=device)

    def give(self, role: str, buffer: Array) -> None:
        """Hand ``buffer`` back for the next :meth:`take` of the same role and shape."""
        key = (role, tuple(buffer.shape), type(buffer), buffer.dtype,
               array_api_compat.device(buffer))
        free = self._free.setdefault(key, [])
        if len(free) < 2:
            free.append(buffer)
        while len(self._free) > self._KEPT:
            del self._free[next(iter(self._free))]

    def clear(self) -> None:
        """Drop every buffer (the memory returns to the library's allocator)."""
        self._free.clear()


@dataclass
class ConvSaved:
    """What the backward pass needs from the forward (the second value of ``conv*_forward``).

    Attributes
    ----------
    cols : array
        The im2col columns (N, groups, C_g·kh·kw, OH·OW) (see the module docstring).
    weight : array
        W as the forward used it.
    geometry : ConvGeometry
        Every size of the convolution.
    has_bias : bool
        Whether the forward added a bias (then the backward returns ∂L/∂b).
    workspace : ConvWorkspace or None
        Where ``cols`` came from and goes back to after the backward.
    """

    cols: Array
    weight: Array
    geometry: ConvGeometry
    has_bias: bool
    workspace: ConvWorkspace | None = None
    owns_cols: bool = True  # False when cols is the input itself (or a reshape of it)
    block: int = 0
    """0: ``cols`` are the columns. > 0: ``cols`` is the zero-padded input (N, C, Hp, Wp)
    instead, and the backward rebuilds the columns ``block`` samples at a time
    (:func:`recompute_block`)."""

    def release(self) -> None:
        """Give the columns (or the padded input) back to the workspace (the backward does; an
        inference forward that keeps nothing calls it at once). ``cols`` is None afterwards."""
        if self.workspace is not None and self.owns_cols and self.cols is not None:
            self.workspace.give("xpad" if self.block else "cols", self.cols)
        self.cols = None


# --------------------------------------------------------------------------------------------
# The public functions


def conv2d(input: Array, weight: Array, bias: Array | None = None, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1, groups: int = 1, *,
           xp: Namespace | None = None) -> Array:
    """2-D convolution (cross-correlation) as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    input : array
        (N, C, H, W), or (C, H, W) for one sample.
    weight : array
        (out_channels, C / groups, kh, kw).
    bias : array, optional
        (out_channels,).
    stride, dilation : int or (int, int)
        Positive.
    padding : int, (int, int), "valid" or "same"
        Zeros around the input on each side ("same": d·(k − 1) in total per axis, the odd one
        at the bottom/right; stride 1 only).
    groups : int
        Divides C and out_channels: each group of C / groups input channels feeds its own
        out_channels / groups outputs (``groups = C``: depthwise).
    xp : namespace, optional
        The arrays' namespace (looked up when omitted).

    Returns
    -------
    y : array
        (N, out_channels, OH, OW) (or (out_channels, OH, OW)), in input's dtype and device;
        OH = ⌊(H + pad_top + pad_bottom − d_h·(kh − 1) − 1) / s_h⌋ + 1, likewise OW.
    """
    return conv2d_forward(input, weight, bias, stride, padding, dilation, groups, xp=xp)[0]


def conv1d(input: Array, weight: Array, bias: Array | None = None, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1, groups: int = 1, *,
           xp: Namespace | None = None) -> Array:
    """1-D convolution as ``torch.nn.functional.conv1d``: input (N, C, L) or (C, L), weight
    (out_channels, C / groups, k), bias (out_channels,); y (N, out_channels, OL) with
    OL = ⌊(L + pad_left + pad_right − d·(k − 1) − 1) / s⌋ + 1. Arguments as :func:`conv2d`'s,
    one number per argument."""
    return conv1d_forward(input, weight, bias, stride, padding, dilation, groups, xp=xp)[0]


def conv2d_forward(
    input: Array, weight: Array, bias: Array | None = None, stride: Any = 1, padding: Any = 0,
    dilation: Any = 1, groups: int = 1, *, xp: Namespace | None = None,
    workspace: ConvWorkspace | None = None,
) -> tuple[Array, ConvSaved]:
    """:func:`conv2d` and what :func:`conv2d_backward` needs: ``(y, saved)``.

    ``workspace`` (a :class:`ConvWorkspace`) lends reusable buffers where arrays are mutable.
    """
    geometry = conv_geometry(
        input.shape, weight.shape, stride=stride, padding=padding, dilation=dilation,
        groups=groups, spatial=2, caller="conv2d",
        bias_shape=None if bias is None else bias.shape)
    return conv_forward(input, weight, bias, geometry,
                        xp=namespace_of(input) if xp is None else xp, workspace=workspace)


def conv1d_forward(
    input: Array, weight: Array, bias: Array | None = None, stride: Any = 1, padding: Any = 0,
    dilation: Any = 1, groups: int = 1, *, xp: Namespace | None = None,
    workspace: ConvWorkspace | None = None,
) -> tuple[Array, ConvSaved]:
    """:func:`conv1d` and what :func:`conv1d_backward` needs: ``(y, saved)``."""
    geometry = conv_geometry(
        input.shape, weight.shape, stride=stride, padding=padding, dilation=dilation,
        groups=groups, spatial=1, caller="conv1d",
        bias_shape=None if bias is None else bias.shape)
    return conv_forward(input, weight, bias, geometry,
                        xp=namespace_of(input) if xp is None else xp, workspace=workspace)


def conv2d_backward(
    grad_output: Array, saved: ConvSaved, *, input_grad: bool = True, weight_grad: bool = True,
    bias_grad: bool = True, xp: Namespace | None = None, weight_grad_out: Array | None = None,
    bias_grad_out: Array | None = None,
) -> tuple[Array | None, Array | None, Array | None]:
    """Gradients of :func:`conv2d_forward`'s y given δ = ∂L/∂y (y's shape).

    Returns ``(dx, dW, db)``: ∂L/∂x (input's shape; None unless ``input_grad``), ∂L/∂W
    (weight's shape; None unless ``weight_grad``), ∂L/∂b (None without a bias or unless
    ``bias_grad``). ``weight_grad_out`` / ``bias_grad_out`` (arrays of W's / b's shape) receive
    ∂L/∂W / ∂L/∂b where the library can write a result into an array (then they are returned).
    ``saved`` is spent: its buffers go back to the workspace.
    """
    return conv_backward(grad_output, saved, input_grad=input_grad, weight_grad=weight_grad,
                         bias_grad=bias_grad,
                         xp=namespace_of(grad_output) if xp is None else xp,
                         weight_grad_out=weight_grad_out, bias_grad_out=bias_grad_out)


def conv1d_backward(
    grad_output: Array, saved: ConvSaved, *, input_grad: bool = True, weight_grad: bool = True,
    bias_grad: bool = True, xp: Namespace | None = None, weight_grad_out: Array | None = None,
    bias_grad_out: Array | None = None,
) -> tuple[Array | None, Array | None, Array | None]:
    """Gradients of :func:`conv1d_forward`'s y given δ = ∂L/∂y: as :func:`conv2d_backward`."""
    return conv2d_backward(grad_output, saved, input_grad=input_grad, weight_grad=weight_grad,
                           bias_grad=bias_grad, xp=xp, weight_grad_out=weight_grad_out,
                           bias_grad_out=bias_grad_out)


# --------------------------------------------------------------------------------------------
# The math, for a checked geometry


def conv_forward(x: Array, weight: Array, bias: Array | None, g: ConvGeometry, *,
                 xp: Namespace, workspace: ConvWorkspace | None = None
                 ) -> tuple[Array, ConvSaved]:
    """y and the saved columns for a geometry :func:`conv_geometry` checked (layers call this
    directly with a cached geometry)."""
    workspace = workspace if library_of(xp).mutable_views else None
    block = recompute_block(g, x.dtype, xp)
    y, cols = fused(_forward_kernel, xp, static=_STATIC)(
        x, weight, bias, g=g, xp=xp, workspace=workspace, block=block)
    # the padded input is ours when there is padding (or the spare row of whole rows)
    padded = _rows_of_columns(g) or g.padding != ((0, 0), (0, 0))
    owns = padded if block else not _input_is_cols(g)
    return y, ConvSaved(cols, weight, g, bias is not None, workspace, owns, block)


def conv_backward(
    dy: Array, saved: ConvSaved, *, input_grad: bool, weight_grad: bool = True,
    bias_grad: bool = True, xp: Namespace, weight_grad_out: Array | None = None,
    bias_grad_out: Array | None = None,
) -> tuple[Array | None, Array | None, Array | None]:
    """(dx, dW, db) for the saved forward (see :func:`conv2d_backward`)."""
    g, cols = saved.geometry, saved.cols
    if cols is None:
        msg = "conv backward: this forward's saved columns were used (or released) already"
        raise RuntimeError(msg)
    if tuple(dy.shape) != g.output_shape:
        msg = (f"conv backward: the gradient has shape {tuple(dy.shape)}, the output had "
               f"{g.output_shape}")
        raise ValueError(msg)
    saved.cols = None  # the backward gives them back to the workspace itself
    if not library_of(xp).mutable_views:
        weight_grad_out = bias_grad_out = None  # nothing is written into arrays there
    return fused(_backward_kernel, xp, static=_STATIC_BACKWARD)(
        dy, cols, saved.weight, weight_grad_out, bias_grad_out, g=g, xp=xp,
        workspace=saved.workspace, owns_cols=saved.owns_cols,
        flags=(input_grad, weight_grad, bias_grad and saved.has_bias),
        method=_input_grad_method(g) if input_grad else "", block=saved.block)


# The kernels' arguments that are not arrays (see _native.fused: compiled once per value on JAX).
_STATIC = ("g", "xp", "workspace", "block")
_STATIC_BACKWARD = (*_STATIC, "owns_cols", "flags", "method")

KEPT_COLUMNS_BYTES = 8 * 2**20
"""Columns of a whole batch up to this size are kept from the forward for ∂L/∂W; larger ones
are rebuilt in the backward from the padded input, a block of samples at a time (see
:func:`recompute_block`)."""

BLOCK_BYTES = 4 * 2**20
"""The size of one block of rebuilt columns (at least one sample's)."""


def recompute_block(g: ConvGeometry, dtype: Any, xp: Namespace) -> int:
    """Samples per block of columns when the columns are rebuilt rather than kept, or 0.

    The columns of a 3×3 convolution are 9× its input (the residual block's 18.9 MB for a
    2 MB input): kept from the forward until the backward, two such convolutions hold 38 MB
    through the step, more than all the rest of it (PyTorch's whole step grows its process
    by ~26 MiB). Where arrays are mutable, one product per sample (chunk 1) and the whole
    batch's columns above :data:`KEPT_COLUMNS_BYTES`, the forward keeps the padded input
    (1/9 of the columns) instead and builds the columns :data:`BLOCK_BYTES` at a time into one
    reused buffer, for its products and again for ∂L/∂W in the backward; ∂L/∂x by the
    flipped kernel runs in the same blocks. A block's columns stay in cache between im2col
    and the product, so the rebuilding costs less than a second im2col of the whole batch.
    """
    if g.chunk != 1 or _input_is_cols(g) or not library_of(xp).mutable_views:
        return 0
    (kh, kw), (OH, OW) = g.kernel, g.out_size
    per_sample = g.in_channels * kh * kw * OH * OW * (int(xp.finfo(dtype).bits) // 8)
    if per_sample * g.batch <= KEPT_COLUMNS_BYTES:
        return 0
    return max(1, min(g.batch, BLOCK_BYTES // per_sample))


def _input_is_cols(g: ConvGeometry) -> bool:
    """A 1×1 kernel with stride 1 and no padding, one sample per product: x is its columns."""
    return (g.chunk == 1 and g.kernel == (1, 1) and g.stride == (1, 1)
            and g.padding == ((0, 0), (0, 0)))


def _forward_kernel(x: Array, weight: Array, bias: Array | None, *, g: ConvGeometry,
                    xp: Namespace, workspace: ConvWorkspace | None, block: int
                    ) -> tuple[Array, Array]:
    """(y, cols), or (y, the padded input) when ``block`` (columns rebuilt in blocks)."""
    N, C, Co, G, c = g.batch, g.in_channels, g.out_channels, g.groups, g.chunk
    (H, W), (kh, kw), (OH, OW) = g.in_size, g.kernel, g.out_size
    P, K = OH * OW, (C // G) * kh * kw
    x4 = xp.reshape(x, (N, C, H, W))
    if block and _rows_of_columns(g):
        padded = _bordered((N, C, H, W), _with_spare_row(g.padding), x, xp, workspace, "xpad")
        (top, _), (left, _) = g.padding
        Wp = padded.shape[3]
        y = xp.empty((N, Co, OH, OW), dtype=x.dtype, device=array_api_compat.device(x))
        y5 = xp.reshape(y, (N, G, Co // G, OH, OW))
        stacked = _row_stacked(xp.reshape(weight, (G, Co // G, C // G, kh, kw)), xp)

        def fill(a: int, b: int) -> None:  # the block's samples into the zero border
            padded[a:b, :, top:top + H, left:left + W] = x4[a:b]

        def product(a: int, b: int, cols: Array, wide: Array) -> None:
            _shifted_sum(stacked, cols, wide, kh, g.dilation[0] * Wp, Wp, y5[a:b], xp)
            if bias is not None:
                y[a:b] += xp.reshape(bias, (Co, 1, 1))

        length = (padded.shape[2] - 1) * Wp  # the row-shifted columns' (Hp·Wp)
        _row_column_products(padded, G, g.kernel, g.dilation, block, xp, workspace, product,
                             fill=fill, side=("rowsout", (kh * Co, length), False))
        return xp.reshape(y, g.output_shape), padded
    if block:
        padded = _pad(x4, g.padding, xp, workspace, "xpad")
        y = xp.empty((N, Co, P), dtype=x.dtype, device=array_api_compat.device(x))
        for start, cols in _column_blocks(padded, g.groups, g.kernel, g.stride, g.dilation,
                                          g.out_size, block, xp, workspace):
            _grouped_product(weight, cols, y[start:start + cols.shape[0]], xp)
        if bias is not None:
            y += xp.reshape(bias, (Co, 1))
        return xp.reshape(y, g.output_shape), padded
    if _input_is_cols(g):
        cols = xp.reshape(x4, (N, G, C // G, H * W))
    else:
        padded = _pad(x4, g.padding, xp, workspace, "xpad")
        cols = _im2col(padded, G, g.kernel, g.stride, g.dilation, (OH, OW), c, xp, workspace)
        if workspace is not None and padded is not x4:
            workspace.give("xpad", padded)
    if G == 1:
        y = xp.matmul(xp.reshape(weight, (Co, K)), xp.reshape(cols, (N // c, K, c * P)))
    else:
        y = xp.matmul(xp.reshape(weight, (G, Co // G, K)), cols)
    y = _unchunked(xp.reshape(y, (N // c, Co, c * P)), c, xp)
    if bias is not None:
        y += xp.reshape(bias, (Co, 1))  # y is ours: in place (rebound on JAX)
    return xp.reshape(y, g.output_shape), cols


def _backward_kernel(
    dy: Array, cols: Array, weight: Array, weight_grad_out: Array | None,
    bias_grad_out: Array | None, *, g: ConvGeometry, xp: Namespace,
    workspace: ConvWorkspace | None, owns_cols: bool, flags: tuple[bool, bool, bool],
    method: str, block: int,
) -> tuple[Array | None, Array | None, Array | None]:
    """(dx, dW, db): the backward's math; ``flags`` = (input_grad, weight_grad, bias_grad),
    ``method`` how ∂L/∂x is computed (:func:`_input_grad_method`); with ``block``, ``cols``
    is the padded input, the columns rebuilt ``block`` samples at a time."""
    input_grad, weight_grad, bias_grad = flags
    N, Co, G, c = g.batch, g.out_channels, g.groups, g.chunk
    P = g.out_size[0] * g.out_size[1]
    dy3 = xp.reshape(dy, (N, Co, P))
    db = None
    if bias_grad:
        per_sample = summer(xp)(dy3, axis=2)
        if bias_grad_out is not None and sum_into(per_sample, bias_grad_out, axis=0, xp=xp):
            db = bias_grad_out
        else:
            db = summed(per_sample, 0, xp)
    dyc = xp.reshape(_chunked(dy3, c, xp), (N // c, G, Co // G, c * P))
    dW = None
    if weight_grad:
        # ∂L/∂Wᵀ = cols · δᵀ, (N/c, G, K_g, O_g): the same multiply-adds as δ · colsᵀ, in the
        # operand order OpenBLAS runs faster for these shapes (one thread: 2.6 against 4.3 ms
        # for the 3×3 16→16 block's, 0.45 against 0.78 ms for LeNet's 5×5 6→16)
        products = xp.matmul(cols, dyc.mT) if not block else _blocked_weight_products(
            cols, dyc, g, block, xp, workspace)
        grad_t = None if weight_grad_out is None else xp.reshape(
            weight_grad_out, (G, Co // G, products.shape[2])).mT
        if grad_t is not None and sum_into(products, grad_t, axis=0, xp=xp):
            dW = weight_grad_out
        else:
            dW = xp.reshape(_copy(summed(products, 0, xp).mT, xp), weight.shape)
    if workspace is not None and owns_cols:
        workspace.give("xpad" if block else "cols", cols)  # δ's columns may take its buffer
    if not input_grad:
        return None, dW, db
    if method == "flipped":
        dx = _input_grad_flipped(dy3, weight, g, xp, workspace, block)
    elif method == "rows":
        dx = _input_grad_col2im_rows(dyc, weight, g, xp, workspace)
    else:
        dx = _input_grad_col2im(dyc, weight, g, xp)
    return xp.reshape(dx, g.input_shape), dW, db


def _input_grad_method(g: ConvGeometry) -> str:
    """How ∂L/∂x is computed: "flipped" (a convolution of δ), "rows" (col2im in whole rows,
    stride 1) or "strided" (col2im clipped per offset)."""
    if _flipped_is_cheaper(g):
        return "flipped"
    return "rows" if g.stride == (1, 1) else "strided"


def _chunked(a: Array, c: int, xp: Namespace) -> Array:
    """(N, X, P) → (N/c, X, c·P): each chunk of c samples side by side (a copy when c > 1)."""
    if c == 1:
        return a
    N, X, P = a.shape
    moved = xp.permute_dims(xp.reshape(a, (N // c, c, X, P)), (0, 2, 1, 3))
    return xp.reshape(_copy(moved, xp), (N // c, X, c * P))


def _unchunked(a: Array, c: int, xp: Namespace) -> Array:
    """(N/c, X, c·P) → (N, X, P), the inverse of :func:`_chunked`."""
    if c == 1:
        return a
    Nc, X, cP = a.shape
    moved = xp.permute_dims(xp.reshape(a, (Nc, X, c, cP // c)), (0, 2, 1, 3))
    return xp.reshape(_copy(moved, xp), (Nc * c, X, cP // c))


def _flipped_is_cheaper(g: ConvGeometry) -> bool:
    """∂L/∂x as a convolution of δ with the flipped kernel (stride 1, padding ≤ reach − 1)
    when its columns (O·H·W per kernel offset) are no more than col2im's (C·OH·OW): the
    "same" convolutions. Measured on the 3×3 16→16 (32, 16, 32, 32) case, NumPy: im2col of
    δ 1.0 ms against col2im 3.9 ms (NumPy's inner loops run one output row each)."""
    if g.stride != (1, 1):
        return False
    reach = [d * (k - 1) for k, d in zip(g.kernel, g.dilation, strict=True)]
    if any(p > r for (before, after), r in zip(g.padding, reach, strict=True)
           for p in (before, after)):
        return False
    (H, W), (OH, OW) = g.in_size, g.out_size
    return g.out_channels * H * W <= g.in_channels * OH * OW


def _input_grad_flipped(dy3: Array, weight: Array, g: ConvGeometry, xp: Namespace,
                        workspace: ConvWorkspace | None, block: int = 0) -> Array:
    """∂L/∂x[n, c] = Σ_{o, i, j} W[o, c, i, j] δ̃[n, o, · + (k−1−i)·d], δ̃ = δ padded by
    d·(k − 1) − pad: a stride-1 convolution of δ with the kernel flipped, channels swapped
    (its columns built ``block`` samples at a time when ``block``)."""
    N, C, Co, G = g.batch, g.in_channels, g.out_channels, g.groups
    (H, W), (kh, kw), (OH, OW) = g.in_size, g.kernel, g.out_size
    (dh, dw), ((top, bottom), (left, right)) = g.dilation, g.padding
    Cg, Og, kk = C // G, Co // G, kh * kw
    rh, rw = dh * (kh - 1), dw * (kw - 1)
    pad = ((rh - top, rh - bottom), (rw - left, rw - right))
    dy4 = xp.reshape(dy3, (N, Co, OH, OW))
    # the kernel flipped, (i, j) → (k−1−i, k−1−j), its channel axes swapped: (G, C_g, O_g, kh, kw)
    flipped = xp.permute_dims(xp.flip(xp.reshape(weight, (G, Og, Cg, kh, kw)), axis=(3, 4)),
                              (0, 2, 1, 3, 4))
    c = chunk_size(N, Cg, Og * kk, H * W)
    if block and c == 1 and 4 * rw <= W:  # δ padded is W + d_w·(k_w − 1) wide, outputs W
        padded = _bordered((N, Co, OH, OW), _with_spare_row(pad), dy3, xp, workspace, "dypad")
        (top_, _), (left_, _) = pad
        Wp = padded.shape[3]
        dx = xp.empty((N, C, H, W), dtype=dy3.dtype, device=array_api_compat.device(dy3))
        dx5 = xp.reshape(dx, (N, G, Cg, H, W))
        stacked = _row_stacked(flipped, xp)

        def fill(a: int, b: int) -> None:
            padded[a:b, :, top_:top_ + OH, left_:left_ + OW] = dy4[a:b]

        def product(a: int, b: int, cols: Array, wide: Array) -> None:
            _shifted_sum(stacked, cols, wide, kh, dh * Wp, Wp, dx5[a:b], xp)

        length = (padded.shape[2] - 1) * Wp
        _row_column_products(padded, G, g.kernel, g.dilation, block, xp, workspace, product,
                             fill=fill, side=("rowsout", (kh * C, length), False))
        if workspace is not None:
            workspace.give("dypad", padded)
        return xp.reshape(dx, (N, C, H * W))
    w = xp.reshape(flipped, (G, Cg, Og * kk))  # one row per input channel: (o, i, j) flipped
    padded = _pad(dy4, pad, xp, workspace, "dypad")
    if block and c == 1:
        dx = xp.empty((N, C, H * W), dtype=dy3.dtype, device=array_api_compat.device(dy3))
        for start, cols in _column_blocks(padded, G, g.kernel, (1, 1), g.dilation, (H, W),
                                          block, xp, workspace):
            _grouped_product(w, cols, dx[start:start + cols.shape[0]], xp)
        if workspace is not None and padded is not dy4:
            workspace.give("dypad", padded)
        return dx
    cols = _im2col(padded, G, g.kernel, (1, 1), g.dilation, (H, W), c, xp, workspace)
    if workspace is not None and padded is not dy4:
        workspace.give("dypad", padded)
    if G == 1:
        dx = xp.matmul(w[0, ...], xp.reshape(cols, (N // c, Og * kk, c * H * W)))
    else:
        dx = xp.matmul(w, cols)  # (N/c, G, C_g, c·H·W)
    if workspace is not None:
        workspace.give("cols", cols)
    return _unchunked(xp.reshape(dx, (N // c, C, c * H * W)), c, xp)


def _input_grad_col2im(dyc: Array, weight: Array, g: ConvGeometry, xp: Namespace) -> Array:
    """∂L/∂x = col2im(W_gᵀ δ): each kernel offset's columns added back through its slice of x
    (clipped to the unpadded input, so no padded buffer is needed)."""
    N, C, c = g.batch, g.in_channels, g.chunk
    (H, W), (kh, kw), (OH, OW) = g.in_size, g.kernel, g.out_size
    dx = xp.zeros((N // c, c, C, H, W), dtype=dyc.dtype, device=array_api_compat.device(dyc))
    (sh, sw), (dh, dw), ((top, _), (left, _)) = g.stride, g.dilation, g.padding
    for i in range(kh):  # one kernel row's columns at a time: 1/kh of them held at once
        rows = _clipped(i * dh - top, sh, OH, H)
        if rows is None:
            continue
        dcols = xp.reshape(_kernel_row_product(weight, dyc, g, i, xp),
                           (N // c, C, kw, c, OH, OW))
        for j in range(kw):
            cols = _clipped(j * dw - left, sw, OW, W)
            if cols is None:
                continue
            v = xp.permute_dims(dcols[:, :, j, :, rows[1], cols[1]], (0, 2, 1, 3, 4))
            dx = _add_into(dx, (slice(None),) * 3 + (rows[0], cols[0]), v, xp)
    return xp.reshape(dx, (N, C, H, W))


def _kernel_row_product(weight: Array, dy: Array, g: ConvGeometry, i: int,
                        xp: Namespace) -> Array:
    """Kernel row i's columns of ∂L/∂cols = W_gᵀ δ, (N/c, G, C_g·kw, P) for δ (N/c, G, O_g, P):
    col2im needs one kernel row's at a time, so only they are held (LeNet's second
    convolution: 1.1 instead of 5.4 MB at the backward's peak), in kh products of C_g·kw rows
    instead of one of C_g·kh·kw."""
    G, Og, Cg = g.groups, g.out_channels // g.groups, g.in_channels // g.groups
    kh, kw = g.kernel
    row = xp.reshape(weight, (G, Og, Cg, kh, kw))[:, :, :, i, :]  # (G, O_g, C_g, kw)
    return xp.matmul(xp.reshape(row, (G, Og, Cg * kw)).mT, dy)


def _input_grad_col2im_rows(dyc: Array, weight: Array, g: ConvGeometry, xp: Namespace,
                            workspace: ConvWorkspace | None) -> Array:
    """col2im for stride 1, in whole padded rows: with δ widened to the padded width Wp (zeros
    in its last Wp − OW columns), the columns of kernel offset (i, j) are one contiguous run
    of the flattened padded plane, from i·d_h·Wp + j·d_w, so each offset is one slice-add of
    (OH − 1)·Wp + OW elements per (sample, channel) instead of OH rows of OW; the zero columns
    add nothing where they wrap into the next row. The products grow by Wp / OW; on NumPy,
    whose loops pay per row, LeNet's 5×5 6→16 case (64, 6, 14, 14) takes 0.8 ms instead of
    1.55 ms for col2im."""
    N, C, Co, G, c = g.batch, g.in_channels, g.out_channels, g.groups, g.chunk
    (H, W), (kh, kw), (OH, OW), (Hp, Wp) = g.in_size, g.kernel, g.out_size, g.padded_size
    (dh, dw), ((top, _), (left, _)) = g.dilation, g.padding
    Og = Co // G
    if Wp == OW:
        wide = dyc
    else:
        shape = (N // c, G, Og, c, OH, Wp)
        if workspace is not None:  # its zero columns stay zero: only the others are written
            wide = workspace.take("dywide", shape, dyc, xp, zeros=True)
        else:
            wide = xp.zeros(shape, dtype=dyc.dtype, device=array_api_compat.device(dyc))
        columns = (slice(None),) * 5 + (slice(0, OW),)
        rows = xp.reshape(dyc, (N // c, G, Og, c, OH, OW))
        if array_api_compat.is_writeable_array(wide):
            wide[columns] = rows
        else:
            wide = xpx.at(wide)[columns].set(rows)
    dy_wide = xp.reshape(wide, (N // c, G, Og, c * OH * Wp))
    plane = xp.zeros((N // c, c, C, Hp * Wp), dtype=dyc.dtype,
                     device=array_api_compat.device(dyc))
    run = (OH - 1) * Wp + OW  # ends at Hp·Wp exactly for the last offset
    for i in range(kh):  # one kernel row's columns at a time: 1/kh of them held at once
        dcols = xp.reshape(_kernel_row_product(weight, dy_wide, g, i, xp),
                           (N // c, C, kw, c, OH * Wp))
        for j in range(kw):
            start = i * dh * Wp + j * dw
            v = xp.permute_dims(dcols[:, :, j, :, :run], (0, 2, 1, 3))
            plane = _add_into(plane, (slice(None),) * 3 + (slice(start, start + run),), v, xp)
    if workspace is not None and wide is not dyc:
        workspace.give("dywide", wide)
    padded = xp.reshape(plane, (N, C, Hp, Wp))
    if (Hp, Wp) == (H, W):
        return padded
    return _copy(padded[:, :, top:top + H, left:left + W], xp)


def _add_into(a: Array, index: tuple[slice, ...], v: Array, xp: Namespace) -> Array:
    """a[index] += v: in place through the view where arrays have mutable views, by
    assignment where they are writeable, ``array_api_extra.at`` where they are immutable."""
    if library_of(xp).mutable_views:
        target = a[index]
        target += v
    elif array_api_compat.is_writeable_array(a):
        a[index] = a[index] + v
    else:
        a = xpx.at(a)[index].add(v)
    return a


def _copy(x: Array, xp: Namespace) -> Array:
    """A C-contiguous copy of a strided view (``asarray(copy=True)`` may keep its strides)."""
    if not library_of(xp).mutable_views:
        return x  # no views there: slices and permutations are new arrays already
    out = xp.empty(x.shape, dtype=x.dtype, device=array_api_compat.device(x))
    out[...] = x
    return out


def _clipped(offset: int, stride: int, n_out: int, n_in: int) -> tuple[slice, slice] | None:
    """The positions offset + stride·p (0 ≤ p < n_out) inside [0, n_in): (their slice of the
    input, their slice of p), or None when there are none."""
    first = max(0, -(offset // stride))  # the least p with offset + stride·p ≥ 0
    last = min(n_out - 1, (n_in - 1 - offset) // stride)
    if first > last:
        return None
    start = offset + stride * first
    return slice(start, start + stride * (last - first) + 1, stride), slice(first, last + 1)


def _pad(x: Array, padding: tuple[Pair, Pair], xp: Namespace, workspace: ConvWorkspace | None,
         role: str) -> Array:
    """x (N, C, H, W) inside a zero border ((top, bottom), (left, right)); x itself without one."""
    ((top, bottom), (left, right)) = padding
    if not (top or bottom or left or right):
        return x
    N, C, H, W = x.shape
    out = _bordered((N, C, H, W), padding, x, xp, workspace, role)
    index = (slice(None), slice(None), slice(top, top + H), slice(left, left + W))
    if array_api_compat.is_writeable_array(out):
        out[index] = x
        return out
    return xpx.at(out)[index].set(x)


def _im2col(padded: Array, groups: int, kernel: Pair, stride: Pair, dilation: Pair,
            out_size: Pair, chunk: int, xp: Namespace, workspace: ConvWorkspace | None
            ) -> Array:
    """cols (N/chunk, groups, (C/groups)·kh·kw, chunk·OH·OW) of the padded input
    (N, C, Hp, Wp): one strided basic slice per kernel offset (one copy of a window view on
    NumPy), each chunk's samples side by side."""
    N, C = padded.shape[0], padded.shape[1]
    (kh, kw), (sh, sw), (dh, dw), (OH, OW) = kernel, stride, dilation, out_size
    Nc = N // chunk
    grouped = (Nc, groups, C // groups * kh * kw, chunk * OH * OW)

    def window(i: int, j: int) -> Array:  # (N/chunk, C, chunk, OH, OW)
        w = padded[:, :, i * dh:i * dh + sh * (OH - 1) + 1:sh, j * dw:j * dw + sw * (OW - 1) + 1:sw]
        if chunk == 1:
            return xp.reshape(w, (Nc, C, 1, OH, OW))
        return xp.permute_dims(xp.reshape(w, (Nc, chunk, C, OH, OW)), (0, 2, 1, 3, 4))

    if not library_of(xp).mutable_views:  # no buffer to write into: stack the windows
        stacked = xp.stack([window(i, j) for i in range(kh) for j in range(kw)], axis=2)
        return xp.reshape(stacked, grouped)
    if workspace is not None:
        cols = workspace.take("cols", grouped, padded, xp)
    else:
        cols = xp.empty(grouped, dtype=padded.dtype, device=array_api_compat.device(padded))
    view = xp.reshape(cols, (Nc, C, kh, kw, chunk, OH, OW))
    if not windows_into(padded, kernel, stride, dilation, out_size, chunk, view, xp):
        for i in range(kh):
            for j in range(kw):
                view[:, :, i, j] = window(i, j)
    return cols


def _column_blocks(padded: Array, groups: int, kernel: Pair, stride: Pair, dilation: Pair,
                   out_size: Pair, block: int, xp: Namespace, workspace: ConvWorkspace | None
                   ) -> Iterator[tuple[int, Array]]:
    """(first sample, its block's columns (n, groups, K_g, OH·OW)) for each block of ``block``
    samples of the padded input, in one reused buffer: a block's columns are valid until the
    next one is asked for."""
    N = padded.shape[0]
    for start in range(0, N, block):
        cols = _im2col(padded[start:start + block], groups, kernel, stride, dilation, out_size,
                       1, xp, workspace)
        yield start, cols
        if workspace is not None:
            workspace.give("cols", cols)


def _blocked_weight_products(padded: Array, dyc: Array, g: ConvGeometry, block: int,
                             xp: Namespace, workspace: ConvWorkspace | None) -> Array:
    """cols · δᵀ per sample, (N, groups, K_g, O_g), the columns rebuilt block by block from
    the padded input."""
    N, G, Og = g.batch, g.groups, g.out_channels // g.groups
    K = (g.in_channels // G) * g.kernel[0] * g.kernel[1]
    products = xp.empty((N, G, K, Og), dtype=dyc.dtype, device=array_api_compat.device(dyc))
    if _rows_of_columns(g):
        (OH, OW), Wp, Co = g.out_size, padded.shape[3], g.out_channels
        (kh, kw), dh, Cg = g.kernel, g.dilation[0], g.in_channels // G
        run = OH * Wp
        dy4 = xp.reshape(dyc, (N, Co, OH, OW))
        by_offset = xp.reshape(products, (N, G, Cg, kh, kw, Og))

        def product(a: int, b: int, cols: Array, wide: Array) -> None:
            # δ in whole rows of Wp, zero in the Wp − OW columns the products add (the
            # buffer's zeros: only the first OW of each row are ever written)
            n = b - a
            xp.reshape(wide, (n, Co, OH, Wp))[:, :, :, :OW] = dy4[a:b]
            dyt = xp.reshape(wide, (n, G, Og, run)).mT
            for i in range(kh):  # kernel row i: the columns from row offset i·d_h
                shifted = cols[:, :, :, i * dh * Wp:i * dh * Wp + run]
                by_offset[a:b, :, :, i] = xp.reshape(xp.matmul(shifted, dyt),
                                                     (n, G, Cg, kw, Og))

        _row_column_products(padded, G, g.kernel, g.dilation, block, xp, workspace, product,
                             side=("dyrows", (Co, run), True))
        return products
    for start, cols in _column_blocks(padded, G, g.kernel, g.stride, g.dilation, g.out_size,
                                      block, xp, workspace):
        stop = start + cols.shape[0]
        _matmul_to(cols, dyc[start:stop].mT, products[start:stop], xp)
    return products


# --------------------------------------------------------------------------------------------
# Columns in whole padded rows (stride 1, rebuilt in blocks)


def _rows_of_columns(g: ConvGeometry) -> bool:
    """Whether rebuilt columns are taken in whole padded rows: stride 1, and the padded width
    Wp adds at most a quarter to the OW output columns.

    With stride 1 the window of kernel offset (i, j) over the flattened padded plane (Hp·Wp)
    is one contiguous run from i·d_h·Wp + j·d_w, so its columns are OH·Wp consecutive values
    per channel: ``cols[n, (c, i, j), p·Wp + q] = x̃[n, c, p + i·d_h, q + j·d_w]``, right for
    q < OW; the q ≥ OW columns read on into the next row (only the kw shifts by j·d_w are
    copied: :func:`_row_column_products`). The products run over those Wp − OW extra
    columns too, whose outputs are dropped (and whose δ is zero in ∂L/∂W), but the copy
    moves runs of OH·Wp values instead of OW: on the
    residual block's 3×3 16→16 (32, 16, 32, 32), where the 32-value runs of the windows made
    im2col the step's largest cost, its forward and backward took 14–15 ms instead of 19–38
    (AMD EPYC, OpenBLAS Haswell kernels, 2 threads; PyTorch 11–13 ms).
    """
    (_, Wp), OW = g.padded_size, g.out_size[1]
    return g.stride == (1, 1) and 4 * (Wp - OW) <= OW


def _with_spare_row(padding: tuple[Pair, Pair]) -> tuple[Pair, Pair]:
    """The padding with one more zero row at the bottom: the last offset's run of OH·Wp
    values ends (k_w − 1)·d_w values past the padded plane (still inside the spare row)."""
    (top, bottom), cols = padding
    return (top, bottom + 1), cols


def _row_column_products(
    padded: Array, groups: int, kernel: Pair, dilation: Pair, block: int, xp: Namespace,
    workspace: ConvWorkspace | None, product: Callable[[int, int, Array, Array], None], *,
    fill: Callable[[int, int], None] | None = None,
    side: tuple[str, tuple[int, ...], bool],
) -> None:
    """``product(start, stop, cols, out)`` for each block of at most ``block`` samples of the
    padded input (N, C, Hp + 1, Wp) (a spare zero row at the bottom): ``cols`` the block's
    row-shifted columns (n, groups, C_g·kw, Hp·Wp), ``out`` a buffer (n, *shape) for
    ``side = (role, shape, zeros)``, both valid during the call. ``fill(start, stop)``, when
    given, first writes the block's samples into ``padded``.

    With stride 1, kernel offset (i, j)'s columns in whole rows (:func:`_rows_of_columns`) are
    the run of OH·Wp values of each channel's flattened plane from i·d_h·Wp + j·d_w. Only the
    kw shifts by j·d_w are copied: ``cols[n, (c, j), t] = x̃[n, c, j·d_w + t]`` for
    t < Hp·Wp, and kernel row i's columns are then the plain submatrix
    ``cols[n, :, i·d_h·Wp : i·d_h·Wp + OH·Wp]`` (its rows one shifted plane apart), which BLAS
    reads in place. The copies are kw planes instead of kh·kw runs; the products are taken
    per kernel row (∂L/∂W) or for every kernel row at once and summed shifted
    (:func:`_shifted_sum`).

    The blocks run in parts, one per core, each part with its own buffers
    (:func:`nnbackend._native.parallel_parts`): a part fills, copies, multiplies and writes
    the results of its own samples only, so the whole pass (the zero-bordered copy of the
    input and the narrowing of the products included) runs on every core, a block's data
    still in that core's cache.
    """
    N, C, rows, Wp = padded.shape
    kw, dw = kernel[1], dilation[1]
    length = (rows - 1) * Wp  # ends (kw − 1)·d_w values into the spare row at most
    plane = xp.reshape(padded, (N, C, rows * Wp))
    parts = parallel_parts(N, xp)
    largest = min(block, -(-N // parts))
    role, shape, zeros = side
    buffers = [(_buffer("rowcols", (largest, groups, C // groups * kw, length), padded, xp,
                        workspace),
                _buffer(role, (largest, *shape), padded, xp, workspace, zeros=zeros))
               for _ in range(parts)]

    def blocks(lo: int, hi: int, part: int) -> None:
        cols_buffer, out_buffer = buffers[part]
        count = -(-(hi - lo) // largest)
        for k in range(count):  # blocks of equal size, within one
            start, stop = lo + (hi - lo) * k // count, lo + (hi - lo) * (k + 1) // count
            if fill is not None:
                fill(start, stop)
            cols = cols_buffer[:stop - start]
            view = xp.reshape(cols, (stop - start, C, kw, length))
            for j in range(kw):
                view[:, :, j, :] = plane[start:stop, :, j * dw:j * dw + length]
            product(start, stop, cols, out_buffer[:stop - start])

    run_parts(blocks, N, parts)
    if workspace is not None:
        for cols_buffer, out_buffer in buffers:
            workspace.give("rowcols", cols_buffer)
            workspace.give(role, out_buffer)


def _row_stacked(weight: Array, xp: Namespace) -> Array:
    """(G, M, K_c, kh, kw) → (G, kh·M, K_c·kw): the kernel rows' weights stacked, each row i a
    block of M output rows over the row-shifted columns' (c, j) (:func:`_shifted_sum`)."""
    G, M, Kc, kh, kw = weight.shape
    return xp.reshape(xp.permute_dims(weight, (0, 3, 1, 2, 4)), (G, kh * M, Kc * kw))


def _shifted_sum(stacked: Array, cols: Array, wide: Array, kh: int, shift: int, Wp: int,
                 out: Array, xp: Namespace) -> None:
    """out ← Σ_i W_i · cols[..., i·shift : i·shift + OH·Wp], narrowed to out's width: a
    convolution's products in whole rows of Wp, summed over the kernel rows.

    ``stacked`` (G, kh·M, K) holds the kernel rows' weights W_i (:func:`_row_stacked`),
    ``cols`` (n, G, K, L) the row-shifted columns (:func:`_row_column_products`), ``wide``
    (n, G·kh·M, L) takes Z = [W_0; …; W_{kh−1}] · cols, one product with kh·M rows instead of
    kh with M; kernel row i's products are Z's rows i·M… shifted by i·shift values. ``out``
    (n, G, M, OH, OW) receives their sum in kh − 1 passes that also narrow each row from Wp to
    OW (into ``out`` itself where the library writes there: no temporary, no separate
    narrowing copy).
    """
    n, G, _, L = cols.shape
    M, OH, OW = stacked.shape[1] // kh, out.shape[3], out.shape[4]
    _grouped_product(stacked, cols, wide, xp)
    z = xp.reshape(wide, (n, G, kh * M, L))

    def row(i: int) -> Array:  # kernel row i's products, (n, G, M, OH, OW)
        block = z[:, :, i * M:(i + 1) * M, i * shift:i * shift + OH * Wp]
        return xp.reshape(block, (n, G, M, OH, Wp))[..., :OW]

    if kh == 1:
        out[...] = row(0)
        return
    kernels = into_kernels(xp)
    kernels.add(row(0), row(1), out=out)
    for i in range(2, kh):
        kernels.add(out, row(i), out=out)


def _buffer(role: str, shape: tuple[int, ...], like: Array, xp: Namespace,
            workspace: ConvWorkspace | None, *, zeros: bool = False) -> Array:
    """A buffer of ``shape`` like ``like``: the workspace's, else a new one."""
    if workspace is not None:
        return workspace.take(role, shape, like, xp, zeros=zeros)
    make = xp.zeros if zeros else xp.empty
    return make(shape, dtype=like.dtype, device=array_api_compat.device(like))


def _bordered(shape: tuple[int, int, int, int], padding: tuple[Pair, Pair], like: Array,
              xp: Namespace, workspace: ConvWorkspace | None, role: str) -> Array:
    """A zero buffer (N, C, H + top + bottom, W + left + right) for an (N, C, H, W) array
    inside the border ((top, bottom), (left, right)); only its interior is ever written, so
    a workspace's buffer keeps its zero border."""
    N, C, H, W = shape
    ((top, bottom), (left, right)) = padding
    return _buffer(role, (N, C, H + top + bottom, W + left + right), like, xp, workspace,
                   zeros=True)


def _grouped_product(weight: Array, cols: Array, out: Array, xp: Namespace) -> None:
    """out (n, O, P) ← W_g · cols per sample and group, for cols (n, G, K_g, P) and any
    ``weight`` holding (G, O_g, K_g) (one 2-D weight when G = 1)."""
    n, G, K, P = cols.shape
    Co = out.shape[1]
    if G == 1:
        _matmul_to(xp.reshape(weight, (Co, K)), xp.reshape(cols, (n, K, P)), out, xp)
    else:
        _matmul_to(xp.reshape(weight, (G, Co // G, K)), cols,
                   xp.reshape(out, (n, G, Co // G, P)), xp)


def _matmul_to(a: Array, b: Array, out: Array, xp: Namespace) -> None:
    """out[...] ← a @ b (straight into ``out`` where the library can write a product there)."""
    if not matmul_into(a, b, out, xp):
        out[...] = xp.matmul(a, b)
