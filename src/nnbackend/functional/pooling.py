"""Max, average and adaptive average pooling and their backward passes (Array API only), as
``torch.nn.functional.max_pool1d/2d``, ``avg_pool1d/2d`` and ``adaptive_avg_pool2d``.

Layouts as PyTorch's: (N, C, L) or (C, L) for the 1-d functions, (N, C, H, W) or (C, H, W) for
the 2-d ones; the output keeps the input's rank. Along each spatial axis of size n, with kernel
k, stride s (default k), padding p and dilation d, PyTorch's arithmetic::

    e   = d (k − 1) + 1                                    (the effective kernel)
    out = ⌊(n + 2p − e + [ceil_mode] (s − 1)) / s⌋ + 1,
          less one in ceil mode when the last window would start at or past n + p
    window o covers the padded positions o·s + j·d, j = 0 … k − 1 (padded index i ↔ input i − p)

Padding is at most half the kernel (⌊k / 2⌋, whatever the dilation), as PyTorch requires, and
a window never lies wholly in the padding. Max pooling reads the padding as −∞; average pooling
as 0, divided by::

    divisor_override                        when given,
    |window ∩ [−p, n + p)|  (per axis, multiplied)   with count_include_pad (PyTorch's default),
    |window ∩ [0, n)|                                 without it.

Max pooling's choice (where ∂L/∂y goes) is PyTorch's CPU kernel's: the first maximum in scan
order (row by row, then along the row), a NaN over any number, and of several NaNs the last;
padding is never chosen (a window whose values are all −∞ gives −∞ and its first element
inside the input). Adaptive average pooling splits an axis of n into ``out`` windows
[⌊o n / out⌋, ⌈(o + 1) n / out⌉), overlapping when out does not divide n, each averaged.

Backward, δ = ∂L/∂y: max pooling passes δ to the chosen element of each window (elements chosen
by several windows add up); average pooling adds δ / divisor to every element of the window;
adaptive pooling is linear, y = A_H x A_Wᵀ with the window-averaging matrices, so
∂L/∂x = A_Hᵀ δ A_W. A non-finite δ spreads NaN over its window's other elements (the backward
masks by multiplying, 0 · ∞ = NaN, where PyTorch's scatter leaves exact zeros).

How it is computed
------------------
One strided basic slice of the (padded) input per kernel offset (k_H · k_W views, no
``as_strided``): max pooling (inference) is the ``maximum`` of the slices, average pooling their
sum. For a backward pass, max pooling's forward copies the slices once into contiguous columns
(k_H·k_W, N, C, OH, OW), kept for the backward (k_H·k_W values per output, where PyTorch keeps
one int64 index): on NumPy a strided slice costs several times a contiguous array of its size.
The backward recomputes the choice column by column from them (column k beats those before it
where it exceeds their maximum, or is NaN; the choice is the last column that beats those
before it) and masks δ with the boolean choice of each offset: no scatter. The gradient is
written slice by slice: assigned where the windows do not overlap (the common 2 × 2 stride 2;
on NumPy multiplied straight into the slice, :func:`nnbackend._native.masked_into`),
accumulated otherwise, in place where arrays are mutable and through ``array_api_extra.at``
(JAX) where they are not. Adaptive pooling with non-dividing sizes is two matrix products with
the averaging matrices, built on the input's device from ``arange``; with dividing sizes it is
average pooling with kernel = stride = n / out. Average pooling over disjoint windows that tile
the input, of more than four elements each (global pooling), is one sum over the window axes of
the (N, C, OH, kH, OW, kW) view instead.

Nothing is read back to the host, except on NumPy (where reading costs no synchronisation) one
check that the output holds no NaN, which lets the backward skip testing each column for NaN
(:func:`nnbackend._native.nan_free`). On JAX each kernel (the array work of one forward or
backward, for one geometry) runs compiled by ``jax.jit`` (:func:`nnbackend._native.fused`):
eager JAX would compile each of its dozens of operations separately.

Conventions of this module
--------------------------
Each forward function returns y, as PyTorch's does. Its ``*_forward`` twin returns
``(y, saved)``, where ``saved`` (:class:`PoolSaved`) holds what the ``*_backward`` function
needs (the window geometry, and for max pooling the columns and y; for adaptive pooling the
averaging matrices): ``*_backward(dy, saved) -> dx``, dx of the input's shape. Errors in the
arguments or the input's shape are :class:`PoolingError` (a ValueError) or TypeError, naming the
function.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import array_api_compat
import array_api_extra as xpx

from .._checks import check_floating, namespace_of
from .._libraries import library_of
from .._native import fused, masked, masked_into, nan_free
from .._typing import Array, Namespace

__all__ = [
    "PoolSaved",
    "PoolingError",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "adaptive_avg_pool2d_forward",
    "avg_pool1d",
    "avg_pool1d_backward",
    "avg_pool1d_forward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "avg_pool2d_forward",
    "max_pool1d",
    "max_pool1d_backward",
    "max_pool1d_forward",
    "max_pool2d",
    "max_pool2d_backward",
    "max_pool2d_forward",
]

_Pair = tuple[int, int]
_Index = tuple[Any, ...]


class PoolingError(ValueError):
    """An input (or argument) a pooling function cannot take; ``caller`` names the function
    (or the layer), ``detail`` says what was wrong."""

    def __init__(self, caller: str, detail: str) -> None:
        super().__init__(f"{caller}: {detail}")
        self.caller, self.detail = caller, detail


# --------------------------------------------------------------------------------------------
# Arguments


@dataclass(frozen=True)
class PoolArgs:
    """Parsed, checked pooling arguments, always for two spatial axes (1-d pooling is 2-d
    pooling of (N, C, 1, L) with a kernel (1, k)). Hashable: the window geometry is cached per
    (arguments, input shape)."""

    caller: str
    kind: str  # "max" or "avg"
    dims: int  # the caller's spatial axes: 1 or 2
    kernel: _Pair
    stride: _Pair
    padding: _Pair
    dilation: _Pair
    ceil_mode: bool
    count_include_pad: bool = True
    divisor_override: int | None = None

    def show(self, pair: _Pair) -> str:
        """A pair as the caller gave it: one number for 1-d pooling, else a tuple."""
        return str(pair[1]) if self.dims == 1 else str(pair)


def _ints(value: Any, dims: int, *, caller: str, name: str, minimum: int) -> tuple[int, ...]:
    """An int or a sequence of ``dims`` ints (a list too: JSON configs), each ≥ ``minimum``."""
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    if len(items) == 1 and not isinstance(value, Sequence):
        items = items * dims
    wanted = "a positive integer" if minimum == 1 else "a non-negative integer"
    shape = f"an int or a tuple of {dims} ints" if dims > 1 else "an int or a tuple of one int"
    if len(items) != dims:
        msg = f"{caller}: {name} must be {shape}, got {value!r}"
        raise TypeError(msg)
    out = []
    for item in items:
        if isinstance(item, bool):
            msg = f"{caller}: {name} must be {shape}, got {value!r}"
            raise TypeError(msg)
        try:
            number = operator.index(item)
        except TypeError:
            msg = f"{caller}: {name} must be {shape}, got {value!r}"
            raise TypeError(msg) from None
        if number < minimum:
            msg = f"{caller}: {name} must be {wanted} (or a tuple of them), got {value!r}"
            raise ValueError(msg)
        out.append(number)
    return tuple(out)


def _pair(value: Any, dims: int, *, caller: str, name: str, minimum: int, unit: int) -> _Pair:
    numbers = _ints(value, dims, caller=caller, name=name, minimum=minimum)
    return (unit, numbers[0]) if dims == 1 else (numbers[0], numbers[1])


def pool_args(
    caller: str, kind: str, dims: int, kernel_size: Any, stride: Any, padding: Any,
    dilation: Any = 1, ceil_mode: bool = False, count_include_pad: bool = True,
    divisor_override: Any = None,
) -> PoolArgs:
    """Check and parse the arguments of a pooling call as PyTorch does (kernel, stride and
    dilation positive, padding at most half the kernel: ⌊k / 2⌋, also with dilation, as
    PyTorch's kernels with indices and its 1-d kernel check), raising errors naming ``caller``."""
    kernel = _pair(kernel_size, dims, caller=caller, name="kernel_size", minimum=1, unit=1)
    strides = kernel if stride is None or (isinstance(stride, Sequence) and not stride) else \
        _pair(stride, dims, caller=caller, name="stride", minimum=1, unit=1)
    pads = _pair(padding, dims, caller=caller, name="padding", minimum=0, unit=0)
    dilations = _pair(dilation, dims, caller=caller, name="dilation", minimum=1, unit=1)
    for flag, name in ((ceil_mode, "ceil_mode"), (count_include_pad, "count_include_pad")):
        if not isinstance(flag, bool):
            msg = f"{caller}: {name} must be a bool, got {flag!r}"
            raise TypeError(msg)
    divisor = None
    if divisor_override is not None:
        if isinstance(divisor_override, bool) or not isinstance(divisor_override, int):
            msg = f"{caller}: divisor_override must be a non-zero int or None, got " \
                  f"{divisor_override!r}"
            raise TypeError(msg)
        if divisor_override == 0:
            msg = f"{caller}: divisor_override must not be zero"
            raise ValueError(msg)
        divisor = int(divisor_override)
    args = PoolArgs(caller, kind, dims, kernel, strides, pads, dilations, ceil_mode,
                    count_include_pad, divisor)
    if any(p > k // 2 for p, k in zip(pads, kernel, strict=True)):  # the kernel, not d (k − 1) + 1
        msg = (
            f"{caller}: padding must be at most half the kernel size, got "
            f"padding={args.show(pads)} for kernel_size={args.show(kernel)}"
        )
        raise ValueError(msg)
    return args


# --------------------------------------------------------------------------------------------
# Window geometry (host arithmetic on shapes only, cached per arguments and input shape)


@dataclass(frozen=True)
class _Windows:
    """Where the windows of one pooling call lie, for an input of a given shape."""

    input_shape: tuple[int, ...]  # as given
    work_shape: tuple[int, int, int, int]  # (N, C, H, W)
    out: _Pair  # (OH, OW)
    output_shape: tuple[int, ...]  # y's shape, in the input's rank
    pad_lo: _Pair
    pad_hi: _Pair  # fill after the input, only as far as the windows reach
    offsets: tuple[_Index, ...]  # per kernel offset, in scan order: its slice of the source
    interior: _Index  # the input within the padded source
    overlap: bool  # some element lies in several windows: the backward accumulates
    covered: bool  # every source element lies in exactly one window: dx needs no zeros
    constant_divisor: float | None  # average pooling: one divisor for every window
    edge_blocks: tuple[tuple[_Index, _Index], ...]  # max pooling: see _edge_blocks

    @property
    def padded(self) -> bool:
        return any(self.pad_lo) or any(self.pad_hi)

    @property
    def source_shape(self) -> tuple[int, int, int, int]:
        n, c, h, w = self.work_shape
        return (n, c, self.pad_lo[0] + h + self.pad_hi[0], self.pad_lo[1] + w + self.pad_hi[1])


def _output_size(n: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's ``pooling_output_shape``: floor or ceil division, and in ceil mode the last
    window must start inside the input or its left padding."""
    effective = d * (k - 1) + 1
    out = (n + 2 * p - effective + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def _work_shape(args: PoolArgs, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(N, C, H, W) of the input, checked for rank and empty axes."""
    batched_rank = args.dims + 2
    if len(shape) not in (batched_rank - 1, batched_rank):
        expected = "(N, C, L) or (C, L)" if args.dims == 1 else "(N, C, H, W) or (C, H, W)"
        raise PoolingError(args.caller, f"expected input of shape {expected}, got {shape}")
    if any(n == 0 for n in shape[-args.dims - 1:]):
        raise PoolingError(args.caller,
                           f"input of shape {shape} has an empty channel or spatial axis")
    full = shape if len(shape) == batched_rank else (1, *shape)
    if args.dims == 1:
        return (full[0], full[1], 1, full[2])
    return (full[0], full[1], full[2], full[3])


@functools.lru_cache(maxsize=512)
def pool_windows(args: PoolArgs, shape: tuple[int, ...]) -> _Windows:
    """The windows of ``args`` over an input of ``shape``; PoolingError naming the shapes when
    the kernel does not fit the padded input."""
    work = _work_shape(args, shape)
    sizes = work[2:]
    out = tuple(
        _output_size(n, k, s, p, d, args.ceil_mode)
        for n, k, s, p, d in zip(sizes, args.kernel, args.stride, args.padding, args.dilation,
                                 strict=True)
    )
    if min(out) < 1:
        spatial = tuple(sizes[2 - args.dims:])
        padded = tuple(n + 2 * p for n, p in zip(sizes, args.padding, strict=True))
        detail = (
            f"kernel_size={args.show(args.kernel)}"
            + (f" with dilation={args.show(args.dilation)}" if args.kind == "max" else "")
            + f" is larger than the padded input {padded[2 - args.dims:]} (input {spatial}"
            f", padding={args.show(args.padding)}) of input shape {shape}: "
            f"output size {tuple(out[2 - args.dims:])}"
        )
        raise PoolingError(args.caller, detail)
    oh, ow = out
    reach = tuple(  # padded positions the windows reach: (out − 1) s + d (k − 1) + 1
        (o - 1) * s + d * (k - 1) + 1
        for o, s, d, k in zip(out, args.stride, args.dilation, args.kernel, strict=True)
    )
    pad_lo = args.padding
    pad_hi = tuple(max(0, r - p - n) for r, p, n in zip(reach, pad_lo, sizes, strict=True))
    kh, kw = args.kernel
    (sh, sw), (dh, dw) = args.stride, args.dilation
    offsets = tuple(
        (..., slice(a * dh, a * dh + (oh - 1) * sh + 1, sh),
         slice(b * dw, b * dw + (ow - 1) * sw + 1, sw))
        for a in range(kh) for b in range(kw)
    )
    interior = (..., slice(pad_lo[0], pad_lo[0] + sizes[0]), slice(pad_lo[1], pad_lo[1] + sizes[1]))
    effective = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    overlap = any(k > 1 and s < e for k, s, e in zip(args.kernel, args.stride, effective,
                                                     strict=True))
    covered = (
        not any(pad_lo) and not any(pad_hi) and args.dilation == (1, 1)
        and args.stride == args.kernel and oh * sh == sizes[0] and ow * sw == sizes[1]
    )
    output_shape = (*shape[:-args.dims], *out[2 - args.dims:])
    return _Windows(
        input_shape=shape, work_shape=work, out=(oh, ow), output_shape=output_shape,
        pad_lo=pad_lo, pad_hi=(pad_hi[0], pad_hi[1]), offsets=offsets, interior=interior,
        overlap=overlap, covered=covered,
        constant_divisor=_constant_divisor(args, sizes, (oh, ow)) if args.kind == "avg" else None,
        edge_blocks=_edge_blocks(args, (oh, ow)) if args.kind == "max" else (),
    )


def _axis_counts(n: int, o: int, k: int, s: int, p: int, include_pad: bool) -> list[int]:
    """Per window along one axis: the elements PyTorch divides by (window clipped to the
    padded input with padding counted, or to the input without)."""
    counts = []
    for i in range(o):
        start = i * s - p
        end = min(start + k, n + p)
        counts.append(end - start if include_pad else min(end, n) - max(start, 0))
    return counts


def _constant_divisor(args: PoolArgs, sizes: tuple[int, ...], out: _Pair) -> float | None:
    """The one divisor of every window, or None where it varies (then computed on the device)."""
    if args.divisor_override is not None:
        return float(args.divisor_override)
    per_axis = [
        set(_axis_counts(n, o, k, s, p, args.count_include_pad))
        for n, o, k, s, p in zip(sizes, out, args.kernel, args.stride, args.padding, strict=True)
    ]
    if all(len(counts) == 1 for counts in per_axis):
        return float(math.prod(next(iter(counts)) for counts in per_axis))
    return None


def _first_inside(o: int, s: int, p: int, d: int) -> int:
    """The kernel offset of window o's first element inside the input (not in the padding)."""
    return max(0, -((o * s - p) // d))  # ⌈(p − o s) / d⌉, 0 when the window starts inside


def _edge_blocks(args: PoolArgs, out: _Pair) -> tuple[tuple[_Index, _Index], ...]:
    """Max pooling's windows whose first element is padding, grouped by the offset of their
    first element inside the input: ``(output block, source slice at that offset)``.

    A window whose values are all −∞ ties with its −∞ padding; the scan keeps its first element,
    padding, whose gradient is dropped, where PyTorch's kernel (which never reads the padding)
    chooses the first element inside the input. The backward adds δ there for these windows.
    """
    if not any(args.padding):
        return ()
    groups = []
    for o_count, s, p, d in zip(out, args.stride, args.padding, args.dilation, strict=True):
        firsts = [_first_inside(o, s, p, d) for o in range(o_count)]
        runs: list[tuple[int, int, int]] = []  # (first offset, start, stop) of equal runs
        for o, f in enumerate(firsts):
            if runs and runs[-1][0] == f:
                runs[-1] = (f, runs[-1][1], o + 1)
            else:
                runs.append((f, o, o + 1))
        groups.append(runs)
    (sh, sw), (dh, dw) = args.stride, args.dilation
    blocks = []
    for fa, r0, r1 in groups[0]:
        for fb, c0, c1 in groups[1]:
            if fa == 0 and fb == 0:
                continue
            block = (..., slice(r0, r1), slice(c0, c1))
            source = (..., slice(r0 * sh + fa * dh, (r1 - 1) * sh + fa * dh + 1, sh),
                      slice(c0 * sw + fb * dw, (c1 - 1) * sw + fb * dw + 1, sw))
            blocks.append((block, source))
    return tuple(blocks)


# --------------------------------------------------------------------------------------------
# Shared pieces


@dataclass(frozen=True)
class PoolSaved:
    """What a pooling ``*_backward`` needs from its forward (treat as opaque).

    Attributes
    ----------
    args : PoolArgs
        The parsed arguments (for adaptive pooling: the average pooling it reduces to, or
        None for the matrix form).
    windows : _Windows or None
        The window geometry for the input's shape.
    columns : array or None
        Max pooling: the slices of the (padded) input, one per kernel offset in scan order,
        stacked (k_H·k_W, N, C, OH, OW).
    output : array or None
        Max pooling: y.
    matrices : tuple
        Adaptive pooling in matrix form: (A_H or None, A_W or None, input shape, y's shape,
        caller); A is None along an axis that keeps its size.
    """

    args: PoolArgs | None
    windows: _Windows | None
    columns: Array | None = None
    output: Array | None = None
    matrices: tuple[Any, ...] = ()


def _namespace(x: Array, xp: Namespace | None, caller: str) -> Namespace:
    xp = namespace_of(x) if xp is None else xp
    check_floating(x, xp, caller=caller, what="input")
    return xp


def _padded(x4: Array, w: _Windows, fill: float, xp: Namespace) -> Array:
    """x4 (N, C, H, W) inside ``fill`` (−∞ for max, 0 for average pooling) as far as the
    windows reach; x4 itself without padding."""
    if not w.padded:
        return x4
    out = xp.full(w.source_shape, fill, dtype=x4.dtype, device=array_api_compat.device(x4))
    return _store(out, w.interior, x4, add=False, xp=xp)


def _store(a: Array, index: _Index, v: Array, *, add: bool, xp: Namespace) -> Array:
    """a[index] = v (or += v), in place where arrays are mutable views, else through
    ``array_api_extra.at`` (JAX's functional update); returns the updated array."""
    if library_of(xp).mutable_views:
        if add:
            view = a[index]
            view += v  # a basic slice is a view: the sum lands in a
        else:
            a[index] = v
        return a
    at = xpx.at(a)[index]
    return at.add(v) if add else at.set(v)


def _put_masked(dx: Array, index: _Index, d: Array, mask: Array, add: bool, xp: Namespace
                ) -> Array:
    """dx[index] = d · [mask] (+= where windows overlap), written in one pass on NumPy."""
    if not add and masked_into(d, mask, dx, index, xp):
        return dx
    return _store(dx, index, masked(d, mask, xp), add=add, xp=xp)


def _gradient_canvas(w: _Windows, like: Array, xp: Namespace) -> Array:
    """The padded ∂L/∂x the slices are written into: zeros unless every element is written."""
    device = array_api_compat.device(like)
    if w.covered:
        return xp.empty(w.source_shape, dtype=like.dtype, device=device)
    return xp.zeros(w.source_shape, dtype=like.dtype, device=device)


def _unpadded(dx4: Array, w: _Windows, xp: Namespace) -> Array:
    """∂L/∂x in the input's shape, from the padded (N, C, H', W') gradient."""
    if w.padded:
        dx4 = dx4[w.interior]
    return xp.reshape(dx4, w.input_shape)


def _check_gradient(dy: Array, w: _Windows, caller: str) -> None:
    if tuple(dy.shape) != w.output_shape:
        raise PoolingError(caller, f"dy of shape {tuple(dy.shape)} for an output of shape "
                                   f"{w.output_shape}")


# --------------------------------------------------------------------------------------------
# Max pooling

# The kernels' arguments that are not arrays (see _native.fused: compiled once per value on JAX).
_STATIC = ("args", "xp")
_STATIC_AVG = ("args", "xp")
_STATIC_BACKWARD = ("args", "shape", "xp")


def _max_forward(x: Array, args: PoolArgs, xp: Namespace | None, keep: bool
                 ) -> tuple[Array, PoolSaved | None]:
    """y (and with ``keep`` what the backward needs), the input checked (dtype, shape)."""
    xp = _namespace(x, xp, args.caller)
    shape = tuple(x.shape)
    w = pool_windows(args, shape)  # checks the shape before any array work
    if not keep:
        return fused(_max_kernel, xp, static=_STATIC)(x, args=args, xp=xp), None
    y, columns = fused(_max_columns_kernel, xp, static=_STATIC)(x, args=args, xp=xp)
    return y, PoolSaved(args, w, columns=columns, output=y)


def _max_kernel(x: Array, *, args: PoolArgs, xp: Namespace) -> Array:
    """y: the running maximum of the slices, nothing kept (inference)."""
    w = pool_windows(args, tuple(x.shape))
    source = _padded(xp.reshape(x, w.work_shape), w, -math.inf, xp)
    offsets = w.offsets
    y = source[offsets[0]]
    for index in offsets[1:]:
        y = xp.maximum(y, source[index])  # NaN-propagating, as PyTorch's max
    return xp.reshape(y, w.output_shape)


def _max_columns_kernel(x: Array, *, args: PoolArgs, xp: Namespace) -> tuple[Array, Array]:
    """(y, the slices stacked as contiguous columns (k_H·k_W, N, C, OH, OW)).

    One strided copy of each slice, after which the maxima here and every comparison of the
    backward read contiguous arrays: on NumPy a strided slice costs several times a
    contiguous array of its size, and the backward would read each slice again.
    """
    w = pool_windows(args, tuple(x.shape))
    source = _padded(xp.reshape(x, w.work_shape), w, -math.inf, xp)
    columns = _stacked([source[index] for index in w.offsets], xp)
    y = columns[0, ...]
    for k in range(1, columns.shape[0]):
        y = xp.maximum(y, columns[k, ...])
    return xp.reshape(y, w.output_shape), columns


def _stacked(slices: list[Array], xp: Namespace) -> Array:
    """The slices stacked along a new first axis: assigned one by one into an empty array where
    arrays are mutable (NumPy's ``stack`` costs a third more, through its concatenation)."""
    if not library_of(xp).mutable_views:
        return xp.stack(slices)
    first = slices[0]
    out = xp.empty((len(slices), *first.shape), dtype=first.dtype,
                   device=array_api_compat.device(first))
    for k, piece in enumerate(slices):
        out[k, ...] = piece
    return out


def _max_backward(dy: Array, saved: PoolSaved, xp: Namespace | None) -> Array:
    w, args, columns = saved.windows, saved.args, saved.columns
    if w is None or args is None or args.kind != "max" or columns is None:
        msg = "max_pool backward: saved is not what a max_pool*_forward returned"
        raise TypeError(msg)
    xp = namespace_of(dy) if xp is None else xp
    _check_gradient(dy, w, f"{args.caller} backward")
    kernel = fused(_max_backward_kernel, xp, static=_STATIC_BACKWARD)
    return kernel(dy, columns, saved.output, args=args, shape=w.input_shape, xp=xp)


def _max_backward_kernel(dy: Array, columns: Array, y: Array, *, args: PoolArgs,
                         shape: tuple[int, ...], xp: Namespace) -> Array:
    w = pool_windows(args, shape)
    dy4 = xp.reshape(dy, (*w.work_shape[:2], *w.out))
    y = xp.reshape(y, dy4.shape)
    offsets = w.offsets
    # Column k beats the columns before it where it exceeds their maximum (strictly, so the
    # first of equal maxima keeps the choice; a NaN beats anything, so the last NaN wins); the
    # window's choice is the last column that beats those before it.
    test_nan = not nan_free(y, xp)
    running, wins = columns[0, ...], []
    for k in range(1, len(offsets)):
        column = columns[k, ...]
        beats = column > running
        wins.append(beats | xp.isnan(column) if test_nan else beats)
        if k + 1 < len(offsets):
            running = xp.maximum(running, column)
    dx = _gradient_canvas(w, dy4, xp)
    add = w.overlap
    later = None  # where a later column won: the window's choice lies there
    for k in range(len(offsets) - 1, 0, -1):
        beats = wins[k - 1]
        chosen = beats if later is None else beats & ~later  # boolean: cheap
        later = beats if later is None else later | beats
        dx = _put_masked(dx, offsets[k], dy4, chosen, add, xp)
    if later is None:
        dx = _store(dx, offsets[0], dy4, add=add, xp=xp)
    else:
        dx = _put_masked(dx, offsets[0], dy4, ~later, add, xp)
    for block, index in w.edge_blocks:  # all −∞ windows starting in the padding: see there
        dx = _store(dx, index, masked(dy4[block], y[block] == -math.inf, xp), add=True, xp=xp)
    return _unpadded(dx, w, xp)


def _max_args(caller: str, dims: int, kernel_size: Any, stride: Any, padding: Any,
              dilation: Any, ceil_mode: bool, return_indices: bool) -> PoolArgs:
    if return_indices:
        msg = (
            f"{caller}: return_indices=True is not supported (nnbackend has no max_unpool); "
            "the backward pass takes the saved state of the *_forward function instead"
        )
        raise NotImplementedError(msg)
    return pool_args(caller, "max", dims, kernel_size, stride, padding, dilation, ceil_mode)


def max_pool2d(
    input: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
    ceil_mode: bool = False, return_indices: bool = False, *, xp: Namespace | None = None,
) -> Array:
    """y[n, c, i, j] = max over the window (i, j) of x[n, c] (padding read as −∞).

    Parameters
    ----------
    input : array
        (N, C, H, W) or (C, H, W), floating.
    kernel_size, stride, padding, dilation : int or (int, int)
        As PyTorch's; ``stride`` defaults to ``kernel_size``; padding at most half the kernel.
    ceil_mode : bool
        Round the output size up (the last window must start inside the input or its left
        padding).
    return_indices : bool
        Must be False (refused with NotImplementedError).
    xp : namespace, optional
        ``input``'s namespace (looked up when omitted).

    Returns
    -------
    y : array
        (N, C, OH, OW) (or (C, OH, OW)), see the module docstring for OH, OW.
    """
    args = _max_args("max_pool2d", 2, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)
    return _max_forward(input, args, xp, keep=False)[0]


def max_pool2d_forward(
    input: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
    ceil_mode: bool = False, *, xp: Namespace | None = None,
) -> tuple[Array, PoolSaved]:
    """:func:`max_pool2d`'s y and what :func:`max_pool2d_backward` needs."""
    args = pool_args("max_pool2d", "max", 2, kernel_size, stride, padding, dilation, ceil_mode)
    y, saved = _max_forward(input, args, xp, keep=True)
    assert saved is not None
    return y, saved


def max_pool2d_backward(dy: Array, saved: PoolSaved, *, xp: Namespace | None = None) -> Array:
    """∂L/∂x: each window's δ = ∂L/∂y to its chosen element (PyTorch's choice), summed where
    windows share an element; dx has the input's shape."""
    return _max_backward(dy, saved, xp)


def max_pool1d(
    input: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
    ceil_mode: bool = False, return_indices: bool = False, *, xp: Namespace | None = None,
) -> Array:
    """y[n, c, i] = max over window i of x[n, c] for input (N, C, L) or (C, L); arguments as
    :func:`max_pool2d`'s, each an int (or a tuple of one)."""
    args = _max_args("max_pool1d", 1, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)
    return _max_forward(input, args, xp, keep=False)[0]


def max_pool1d_forward(
    input: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
    ceil_mode: bool = False, *, xp: Namespace | None = None,
) -> tuple[Array, PoolSaved]:
    """:func:`max_pool1d`'s y and what :func:`max_pool1d_backward` needs."""
    args = pool_args("max_pool1d", "max", 1, kernel_size, stride, padding, dilation, ceil_mode)
    y, saved = _max_forward(input, args, xp, keep=True)
    assert saved is not None
    return y, saved


def max_pool1d_backward(dy: Array, saved: PoolSaved, *, xp: Namespace | None = None) -> Array:
    """∂L/∂x of :func:`max_pool1d` (see :func:`max_pool2d_backward`)."""
    return _max_backward(dy, saved, xp)


# --------------------------------------------------------------------------------------------
# Average pooling


def _divisor(args: PoolArgs, w: _Windows, like: Array, xp: Namespace) -> Any:
    """The divisor of each window: a Python float when it is the same for all, else an
    (OH, OW) array made on ``like``'s device (from ``arange``: no transfer)."""
    if w.constant_divisor is not None:
        return w.constant_divisor
    device = array_api_compat.device(like)
    counts = []
    for n, o, k, s, p in zip(w.work_shape[2:], w.out, args.kernel, args.stride, args.padding,
                             strict=True):
        start = xp.arange(o, device=device) * s - p
        end = xp.clip(start + k, max=n + p)
        if not args.count_include_pad:
            end, start = xp.clip(end, max=n), xp.clip(start, min=0)
        counts.append(xp.astype(end - start, like.dtype))
    return counts[0][:, None] * counts[1][None, :]


def _avg_forward(x: Array, args: PoolArgs, xp: Namespace | None, keep: bool
                 ) -> tuple[Array, PoolSaved | None]:
    """y (and with ``keep`` what the backward needs), the input checked (dtype, shape)."""
    xp = _namespace(x, xp, args.caller)
    w = pool_windows(args, tuple(x.shape))
    y = fused(_avg_kernel, xp, static=_STATIC_AVG)(x, args=args, xp=xp)
    return y, (PoolSaved(args, w) if keep else None)


def _avg_kernel(x: Array, *, args: PoolArgs, xp: Namespace) -> Array:
    w = pool_windows(args, tuple(x.shape))
    if _blocks(w):  # disjoint windows tiling the input: one reduction over the window axes
        total = xp.sum(xp.reshape(x, _block_shape(w, args)), axis=(3, 5))
        return xp.reshape(total / _divisor(args, w, total, xp), w.output_shape)
    source = _padded(xp.reshape(x, w.work_shape), w, 0.0, xp)
    offsets = w.offsets
    total = source[offsets[0]]
    if len(offsets) > 1:
        total = total + source[offsets[1]]  # a new array: the rest is added in place
        for index in offsets[2:]:
            total = _accumulate(total, source[index], xp)
    return xp.reshape(total / _divisor(args, w, total, xp), w.output_shape)


_SLICED_BLOCKS = 4
"""Up to this many elements per window, disjoint windows are pooled slice by slice (faster on
NumPy for the common 2 × 2, as for max pooling); beyond, by one reduction over the window axes
of the (N, C, OH, kH, OW, kW) view (global pooling: one sum, not H · W slices)."""


def _blocks(w: _Windows) -> bool:
    return w.covered and len(w.offsets) > _SLICED_BLOCKS


def _block_shape(w: _Windows, args: PoolArgs) -> tuple[int, ...]:
    (n, c, _, _), (oh, ow), (kh, kw) = w.work_shape, w.out, args.kernel
    return (n, c, oh, kh, ow, kw)


def _accumulate(total: Array, v: Array, xp: Namespace) -> Array:
    if library_of(xp).mutable_views:
        total += v
        return total
    return total + v


def _avg_backward(dy: Array, saved: PoolSaved, xp: Namespace | None) -> Array:
    w, args = saved.windows, saved.args
    if w is None or args is None or args.kind != "avg":
        msg = "avg_pool backward: saved is not what an avg_pool*_forward returned"
        raise TypeError(msg)
    xp = namespace_of(dy) if xp is None else xp
    _check_gradient(dy, w, f"{args.caller} backward")
    kernel = fused(_avg_backward_kernel, xp, static=_STATIC_BACKWARD)
    return kernel(dy, args=args, shape=w.input_shape, xp=xp)


def _avg_backward_kernel(dy: Array, *, args: PoolArgs, shape: tuple[int, ...], xp: Namespace
                         ) -> Array:
    w = pool_windows(args, shape)
    dy4 = xp.reshape(dy, (*w.work_shape[:2], *w.out))
    share = dy4 / _divisor(args, w, dy4, xp)
    if _blocks(w):  # each window's share broadcast over its block, then laid out as x
        blocks = xp.broadcast_to(share[:, :, :, None, :, None], _block_shape(w, args))
        return xp.reshape(blocks, w.input_shape)
    dx = _gradient_canvas(w, dy4, xp)
    for index in w.offsets:
        dx = _store(dx, index, share, add=w.overlap, xp=xp)
    return _unpadded(dx, w, xp)


def avg_pool2d(
    input: Array, kernel_size: Any, stride: Any = None, padding: Any = 0,
    ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: int | None = None,
    *, xp: Namespace | None = None,
) -> Array:
    """y[n, c, i, j] = Σ over the window (i, j) of x[n, c] (padding read as 0) / divisor.

    Parameters
    ----------
    input : array
        (N, C, H, W) or (C, H, W), floating.
    kernel_size, stride, padding : int or (int, int)
        As PyTorch's; ``stride`` defaults to ``kernel_size``; padding at most half the kernel.
    ceil_mode : bool
        Round the output size up (see the module docstring).
    count_include_pad : bool
        Divide by the window's size clipped to the padded input (True, PyTorch's default) or
        by its number of elements inside the input.
    divisor_override : int, optional
        Divide every window by this instead.

    Returns
    -------
    y : array
        (N, C, OH, OW) (or (C, OH, OW)).
    """
    args = pool_args("avg_pool2d", "avg", 2, kernel_size, stride, padding, 1, ceil_mode,
                     count_include_pad, divisor_override)
    return _avg_forward(input, args, xp, keep=False)[0]


def avg_pool2d_forward(
    input: Array, kernel_size: Any, stride: Any = None, padding: Any = 0,
    ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: int | None = None,
    *, xp: Namespace | None = None,
) -> tuple[Array, PoolSaved]:
    """:func:`avg_pool2d`'s y and what :func:`avg_pool2d_backward` needs."""
    args = pool_args("avg_pool2d", "avg", 2, kernel_size, stride, padding, 1, ceil_mode,
                     count_include_pad, divisor_override)
    y, saved = _avg_forward(input, args, xp, keep=True)
    assert saved is not None
    return y, saved


def avg_pool2d_backward(dy: Array, saved: PoolSaved, *, xp: Namespace | None = None) -> Array:
    """∂L/∂x: δ / divisor of each window added to each of its elements (input's shape)."""
    return _avg_backward(dy, saved, xp)


def avg_pool1d(
    input: Array, kernel_size: Any, stride: Any = None, padding: Any = 0,
    ceil_mode: bool = False, count_include_pad: bool = True, *, xp: Namespace | None = None,
) -> Array:
    """y[n, c, i] = Σ over window i of x[n, c] / divisor for input (N, C, L) or (C, L);
    arguments as :func:`avg_pool2d`'s, each an int (or a tuple of one)."""
    args = pool_args("avg_pool1d", "avg", 1, kernel_size, stride, padding, 1, ceil_mode,
                     count_include_pad)
    return _avg_forward(input, args, xp, keep=False)[0]


def avg_pool1d_forward(
    input: Array, kernel_size: Any, stride: Any = None, padding: Any = 0,
    ceil_mode: bool = False, count_include_pad: bool = True, *, xp: Namespace | None = None,
) -> tuple[Array, PoolSaved]:
    """:func:`avg_pool1d`'s y and what :func:`avg_pool1d_backward` needs."""
    args = pool_args("avg_pool1d", "avg", 1, kernel_size, stride, padding, 1, ceil_mode,
                     count_include_pad)
    y, saved = _avg_forward(input, args, xp, keep=True)
    assert saved is not None
    return y, saved


def avg_pool1d_backward(dy: Array, saved: PoolSaved, *, xp: Namespace | None = None) -> Array:
    """∂L/∂x of :func:`avg_pool1d` (see :func:`avg_pool2d_backward`)."""
    return _avg_backward(dy, saved, xp)


# --------------------------------------------------------------------------------------------
# Adaptive average pooling


def adaptive_output_size(output_size: Any, shape: tuple[int, ...], caller: str) -> _Pair:
    """(OH, OW) from an int or a pair whose None entries keep the input's size; the input's
    rank checked ((N, C, H, W) or (C, H, W), non-empty channel and spatial axes)."""
    if len(shape) not in (3, 4):
        raise PoolingError(caller, f"expected input of shape (N, C, H, W) or (C, H, W), got "
                                   f"{shape}")
    if any(n == 0 for n in shape[-3:]):
        raise PoolingError(caller, f"input of shape {shape} has an empty channel or spatial axis")
    return _adaptive_sizes(output_size, caller, shape[-2:])


def _adaptive_sizes(output_size: Any, caller: str, spatial: Sequence[int] | None) -> _Pair:
    items = list(output_size) if isinstance(output_size, Sequence) else [output_size] * 2
    if len(items) != 2:
        msg = f"{caller}: output_size must be an int or a pair of ints or None, got {output_size!r}"
        raise TypeError(msg)
    out = []
    for i, item in enumerate(items):
        if item is None:
            out.append(spatial[i] if spatial is not None else 1)
            continue
        if isinstance(item, bool):
            msg = f"{caller}: output_size must be an int or a pair of ints or None, got " \
                  f"{output_size!r}"
            raise TypeError(msg)
        try:
            number = operator.index(item)
        except TypeError:
            msg = f"{caller}: output_size must be an int or a pair of ints or None, got " \
                  f"{output_size!r}"
            raise TypeError(msg) from None
        if number < 1:
            msg = f"{caller}: output_size must be positive, got {output_size!r}"
            raise ValueError(msg)
        out.append(number)
    return (out[0], out[1])


def check_adaptive_output_size(output_size: Any, caller: str) -> None:
    """Raise for an ``output_size`` no input could take (a layer checks it at construction)."""
    _adaptive_sizes(output_size, caller, None)


def _averaging_matrix(n: int, out: int, like: Array, xp: Namespace) -> Array:
    """A (out, n): row o averages [⌊o n / out⌋, ⌈(o + 1) n / out⌉), made on like's device."""
    device = array_api_compat.device(like)
    o = xp.arange(out, device=device)
    start = (o * n) // out
    end = ((o + 1) * n + out - 1) // out
    i = xp.arange(n, device=device)
    inside = (i[None, :] >= start[:, None]) & (i[None, :] < end[:, None])
    return xp.astype(inside, like.dtype) / xp.astype(end - start, like.dtype)[:, None]


def _adaptive_forward(x: Array, output_size: Any, xp: Namespace | None, keep: bool,
                      caller: str = "adaptive_avg_pool2d") -> tuple[Array, PoolSaved | None]:
    xp = _namespace(x, xp, caller)
    shape = tuple(x.shape)
    oh, ow = adaptive_output_size(output_size, shape, caller)
    h, w = shape[-2:]
    if h % oh == 0 and w % ow == 0:  # disjoint equal windows: average pooling
        args = pool_args(caller, "avg", 2, (h // oh, w // ow), None, 0)
        return _avg_forward(x, args, xp, keep)
    y, a_h, a_w = fused(_adaptive_kernel, xp, static=("out", "xp"))(x, out=(oh, ow), xp=xp)
    if not keep:
        return y, None
    return y, PoolSaved(None, None, matrices=(a_h, a_w, shape, tuple(y.shape), caller))


def _adaptive_kernel(x: Array, *, out: _Pair, xp: Namespace
                     ) -> tuple[Array, Array | None, Array | None]:
    """y = A_H x A_Wᵀ and the matrices (None along an axis that keeps its size)."""
    (h, w), (oh, ow) = x.shape[-2:], out
    a_h = None if oh == h else _averaging_matrix(h, oh, x, xp)
    a_w = None if ow == w else _averaging_matrix(w, ow, x, xp)
    y = x if a_w is None else x @ xp.matrix_transpose(a_w)  # (…, H, OW): one GEMM
    if a_h is not None:
        y = a_h @ y  # (…, OH, OW)
    return y, a_h, a_w


def adaptive_avg_pool2d(input: Array, output_size: Any, *, xp: Namespace | None = None) -> Array:
    """y[n, c, i, j] = mean of x[n, c] over rows [⌊i H / OH⌋, ⌈(i + 1) H / OH⌉) and columns
    [⌊j W / OW⌋, ⌈(j + 1) W / OW⌉), as PyTorch's.

    Parameters
    ----------
    input : array
        (N, C, H, W) or (C, H, W), floating.
    output_size : int or (int or None, int or None)
        (OH, OW); an int for both; None keeps that axis's size.

    Returns
    -------
    y : array
        (N, C, OH, OW) (or (C, OH, OW)).
    """
    return _adaptive_forward(input, output_size, xp, keep=False)[0]


def adaptive_avg_pool2d_forward(input: Array, output_size: Any, *, xp: Namespace | None = None
                                ) -> tuple[Array, PoolSaved]:
    """:func:`adaptive_avg_pool2d`'s y and what :func:`adaptive_avg_pool2d_backward` needs."""
    y, saved = _adaptive_forward(input, output_size, xp, keep=True)
    assert saved is not None
    return y, saved


def adaptive_avg_pool2d_backward(dy: Array, saved: PoolSaved, *, xp: Namespace | None = None
                                 ) -> Array:
    """∂L/∂x = A_Hᵀ δ A_W (each window's δ / its size added to its elements)."""
    if saved.windows is not None:
        return _avg_backward(dy, saved, xp)
    if len(saved.matrices) != 5:
        msg = "adaptive_avg_pool2d backward: saved is not what adaptive_avg_pool2d_forward " \
              "returned"
        raise TypeError(msg)
    a_h, a_w, _, out_shape, caller = saved.matrices
    if tuple(dy.shape) != out_shape:
        raise PoolingError(f"{caller} backward",
                           f"dy of shape {tuple(dy.shape)} for an output of shape {out_shape}")
    xp = namespace_of(dy) if xp is None else xp
    return fused(_adaptive_backward_kernel, xp, static=("xp",))(dy, a_h, a_w, xp=xp)


def _adaptive_backward_kernel(dy: Array, a_h: Array | None, a_w: Array | None, *,
                              xp: Namespace) -> Array:
    dx = dy if a_w is None else dy @ a_w  # (…, OH, W)
    if a_h is not None:
        dx = xp.matrix_transpose(a_h) @ dx  # (…, H, W)
    return dx
