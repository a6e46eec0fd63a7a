"""Embedding lookup and its backward pass (Array API only), as PyTorch's ``embedding``.

Forward: y[..., :] = W[ids[...], :] for integer ``ids`` of any shape and W of shape (V, E), so
y has shape ``ids.shape + (E,)``: one ``take`` along the vocabulary axis.

Backward, with δ = ∂L/∂y flattened to (M, E) beside the M = ids.size flat ids::

    ∂L/∂W[v] = Σ_{m : ids[m] = v} δ[m]          (0 for a row no id names, and for padding_idx)

a scatter-add, which the standard lacks. The native spellings (``np.add.at``,
``cupyx.scatter_add``, ``Tensor.index_add_``, JAX's ``.at[].add``) run where the library has
one (:func:`nnbackend._native.scatter_add_rows`); elsewhere a *segment sum* in standard
operations, in O(M·E + V·E) memory (never a one-hot (M, V) matrix):

1. order = argsort(ids, stable), s = ids[order], r = δ[order]: each id's rows contiguous;
2. a segmented inclusive scan by doubling (Hillis and Steele): for d = 1, 2, 4, … < M,
   r[m] ← r[m] + r[m − d] where s[m − d] = s[m]; after it r[m] is the sum of the rows of its
   segment up to m (the windows double: sums of adjacent windows, never of a prefix);
3. ∂L/∂W[v] = r[end_v − 1] for the segment's end end_v = searchsorted(s, v, side="right"),
   0 where the segment is empty (start_v = searchsorted(s, v, side="left") = end_v).

Rounding: each result is a sum computed by a binary tree of depth ⌈log₂ c⌉ over its own c
rows, so |error| ≤ ⌈log₂ c⌉ · ε · Σ |δ[m]| over the segment alone (ε the dtype's unit
roundoff), as pairwise summation. A prefix sum difference P[end] − P[start] (cumulative_sum,
then differences) would cancel instead: its error grows with the mass of *every* row sorted
before the segment, ε · Σ_{m < end} |δ[m]|, so a rare id's gradient after many frequent ones
loses every digit in float32. The scan costs ⌈log₂ M⌉ passes over (M, E) values: this is the
fallback path (array-api-strict, namespaces without a native scatter); the common libraries take
their native one.

Ids out of range: in host memory (NumPy, array-api-strict, PyTorch on the CPU) they are checked
and raise ValueError naming the caller, the range and the offending value, as cross-entropy's
labels (:func:`nnbackend.functional.losses._check_host_labels`). Off the host (CUDA, CuPy, the
GPU-like test device, JAX) they are not read back (that would synchronise): their rows of y are
NaN, and they add nothing to ∂L/∂W.

Conventions of this module (design page §11): :func:`embedding` returns y;
:func:`embedding_forward` returns ``(y, saved)`` and :func:`embedding_backward(dy, saved)`
returns ∂L/∂W (ids have no gradient).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import array_api_compat

from .._libraries import is_host_array
from .._native import fused, scatter_add_rows
from .._typing import Array, Namespace
from ..backend import dtype_name

__all__ = ["EmbeddingSaved", "embedding", "embedding_backward", "embedding_forward",
           "segment_sum_rows"]


class EmbeddingSaved(NamedTuple):
    """What :func:`embedding_backward` needs from the forward pass."""

    ids: Array
    """The flat ids (M,) in an index dtype (int32 or int64), the ones that take no gradient
    (``padding_idx``, and ids out of range off the host) replaced by V."""
    num_embeddings: int
    """V, the number of rows of W."""
    shape: tuple[int, ...]
    """The shape of y, ``ids.shape + (E,)``: ∂L/∂y must have it."""


def embedding(
    input: Array,
    weight: Array,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
    *,
    xp: Namespace | None = None,
) -> Array:
    """y = W[ids]: the rows of ``weight`` named by the integer ``input``, as
    ``torch.nn.functional.embedding``.

    Parameters
    ----------
    input : integer array, any shape
        Ids in [0, V) (see the module docstring for ids out of range).
    weight : array (V, E)
        Floating.
    padding_idx : int, optional
        An id in [−V, V) whose row gets no gradient (negative counts from the end). Its row is
        still looked up as it is (PyTorch's forward).
    max_norm, norm_type, scale_grad_by_freq, sparse
        PyTorch's options of row renormalisation, frequency scaling and sparse gradients:
        refused unless left at their defaults (not supported).
    xp : namespace, optional
        The arrays' namespace (looked up when omitted).

    Returns
    -------
    y : array of shape ``input.shape + (E,)``, ``weight``'s dtype and device.
    """
    _refuse_options(max_norm, scale_grad_by_freq, sparse, "embedding")
    return embedding_forward(input, weight, padding_idx, xp=xp)[0]


def embedding_forward(
    input: Array,
    weight: Array,
    padding_idx: int | None = None,
    *,
    xp: Namespace | None = None,
    caller: str = "embedding",
) -> tuple[Array, EmbeddingSaved]:
    """:func:`embedding`, returning also what :func:`embedding_backward` needs.

    ``caller`` names the function or layer in errors (the layer passes its repr).
    """
    xp = array_api_compat.array_namespace(input, weight) if xp is None else xp
    num, dim = _check_weight(weight, xp, caller)
    padding = normalize_padding_idx(padding_idx, num, caller)
    ids = _check_ids(input, xp, caller)
    flat = xp.reshape(ids, (-1,))
    shape = (*tuple(ids.shape), dim)
    if is_host_array(ids):
        check_host_ids(flat, num, xp, where=caller)
        y = xp.take(weight, flat, axis=0)
        excluded = None
    else:  # not read back: ids out of range give NaN rows (and no gradient)
        valid = (flat >= 0) & (flat < num)
        y = xp.take(weight, xp.where(valid, flat, 0), axis=0)
        y = xp.where(valid[:, None], y, xp.nan)
        excluded = ~valid
    if padding is not None:
        pad = flat == padding
        excluded = pad if excluded is None else excluded | pad
    if excluded is not None:
        flat = xp.where(excluded, num, flat)
    return xp.reshape(y, shape), EmbeddingSaved(flat, num, shape)


def embedding_backward(
    dy: Array, saved: EmbeddingSaved, *, native: bool = True, xp: Namespace | None = None
) -> Array:
    """∂L/∂W (V, E) from ∂L/∂y (``input.shape + (E,)``): the rows of δ summed per id.

    ``native=False`` takes the standard segment sum even where the library has a scatter-add
    (the parity tests compare the two).
    """
    xp = array_api_compat.array_namespace(dy) if xp is None else xp
    if tuple(dy.shape) != saved.shape:
        msg = f"embedding_backward: dy has shape {tuple(dy.shape)}, the output had {saved.shape}"
        raise ValueError(msg)
    rows = xp.reshape(dy, (-1, saved.shape[-1]))
    if native:
        found = scatter_add_rows(saved.ids, rows, saved.num_embeddings, xp)
        if found is not None:
            return found
    # One compiled kernel on JAX (eagerly, each of the scan's ~4 log₂ M operations compiles).
    segment_sum = fused(segment_sum_rows, xp, static=("num", "xp"))
    return segment_sum(saved.ids, rows, num=saved.num_embeddings, xp=xp)


def segment_sum_rows(ids: Array, rows: Array, *, num: int, xp: Namespace) -> Array:
    """out[v] = Σ_{m : ids[m] = v} rows[m] for v in [0, num), in standard operations.

    ``ids`` (M,) integers, ``rows`` (M, E); an id outside [0, num) adds nothing. The sorted
    segmented scan of the module docstring: ⌈log₂ M⌉ passes, error ⌈log₂ c⌉ · ε · Σ |rows| of
    each segment.
    """
    count, width = rows.shape[0], rows.shape[1]
    dev = array_api_compat.device(rows)
    if count == 0:
        return xp.zeros((num, width), dtype=rows.dtype, device=dev)
    order = xp.argsort(ids, stable=True)
    ids = xp.take(ids, order)
    rows = xp.take(rows, order, axis=0)
    step = 1
    while step < count:
        same = ids[step:] == ids[:-step]
        # where, not a product with the mask: a NaN or inf row must not reach other segments.
        shifted = xp.where(same[:, None], rows[:-step, :], 0.0)
        rows = xp.concat((rows[:step, :], rows[step:, :] + shifted), axis=0)
        step *= 2
    targets = xp.arange(num, dtype=ids.dtype, device=dev)
    ends = xp.searchsorted(ids, targets, side="right")
    starts = xp.searchsorted(ids, targets, side="left")
    last = xp.take(rows, xp.maximum(ends - 1, 0), axis=0)
    return xp.where((ends > starts)[:, None], last, 0.0)


# --------------------------------------------------------------------------------------------
# Checks


def check_host_ids(flat: Array, num: int, xp: Namespace, *, where: str) -> None:
    """Raise ValueError unless every id (in host memory) lies in [0, ``num``): its own minimum
    and maximum, exact in the ids' integer dtype."""
    if flat.shape[0] == 0:
        return
    low, high = int(xp.min(flat)), int(xp.max(flat))
    if low < 0 or high >= num:
        bad = low if low < 0 else high
        msg = (f"{where}: token ids must lie in [0, {num}) for {num} embeddings, got {bad} "
               f"(ids from {low} to {high})")
        raise ValueError(msg)


def normalize_padding_idx(padding_idx: Any, num: int, caller: str) -> int | None:
    """``padding_idx`` in [0, V) (a negative one counts from the end, as PyTorch's), or None."""
    if padding_idx is None:
        return None
    if isinstance(padding_idx, bool) or not isinstance(padding_idx, int):
        msg = f"{caller}: padding_idx must be an int or None, got {padding_idx!r}"
        raise TypeError(msg)
    if not -num <= padding_idx < num:
        msg = f"{caller}: padding_idx must lie in [-{num}, {num}), got {padding_idx}"
        raise ValueError(msg)
    return padding_idx + num if padding_idx < 0 else padding_idx


def _check_weight(weight: Array, xp: Namespace, caller: str) -> tuple[int, int]:
    if weight.ndim != 2 or not xp.isdtype(weight.dtype, "real floating"):
        msg = (f"{caller}: weight must be a floating (num_embeddings, embedding_dim) matrix, "
               f"got shape {tuple(weight.shape)} and dtype {dtype_name(weight.dtype)}")
        raise ValueError(msg)
    return int(weight.shape[0]), int(weight.shape[1])


def _check_ids(ids: Array, xp: Namespace, caller: str) -> Array:
    """The ids in an index dtype: int32 and int64 as they are, narrower integers (and uint32,
    uint64) widened or cast, so that V fits as a sentinel and ``take`` accepts them."""
    if not xp.isdtype(ids.dtype, "integral"):
        msg = (f"{caller}: token ids must be integers, got {dtype_name(ids.dtype)} of shape "
               f"{tuple(ids.shape)} (an Embedding takes integer ids, not features)")
        raise TypeError(msg)
    if ids.dtype == xp.int32 or ids.dtype == xp.int64:
        return ids
    # uint64 keeps its values in int64. The others fit int32, but uint32 from 2³¹ up, which
    # wraps to negative ids: out of range for any V < 2³¹ either way (and JAX without 64-bit
    # types has no int64 to widen to).
    return xp.astype(ids, xp.int64 if ids.dtype == xp.uint64 else xp.int32)


def _refuse_options(max_norm: Any, scale_grad_by_freq: Any, sparse: Any, caller: str) -> None:
    """PyTorch's options this library does not implement: an error, never ignored."""
    if max_norm is not None:
        msg = (f"{caller}: max_norm={max_norm!r} (renormalising rows in the forward pass) is not "
               "supported; leave it None")
        raise NotImplementedError(msg)
    if scale_grad_by_freq:
        msg = f"{caller}: scale_grad_by_freq=True is not supported; leave it False"
        raise NotImplementedError(msg)
    if sparse:
        msg = f"{caller}: sparse=True (sparse gradients) is not supported; leave it False"
        raise NotImplementedError(msg)
