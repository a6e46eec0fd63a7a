"""Batch, layer and RMS normalisation and their backward passes (Array API only), as
PyTorch's ``batch_norm``, ``layer_norm`` and ``rms_norm``.

Batch normalisation
-------------------

Layouts: x of shape (N, C), (N, C, L) or (N, C, H, W) (any trailing axes); one statistic per
channel (axis 1), over every other axis: n = N · L values per channel, L the product of the
trailing sizes. γ = ``weight`` and β = ``bias`` have shape (C,), as the running statistics.

Training (batch statistics), in the input's dtype, the variance in two passes (mean first,
then the mean of the squared deviations, so no cancellation of E[x²] − E[x]²)::

    μ = Σ x / n,   x_c = x − μ,   σ² = Σ x_c² / n  (biased),   r = 1 / √(σ² + ε)
    y = x_c · (γ r) + β
    running_mean ← (1 − m) · running_mean + m · μ
    running_var  ← (1 − m) · running_var  + m · Σ x_c² / (n − 1)   (unbiased, as PyTorch's)

with m = ``momentum``, or m = 1 / ``num_batches_tracked`` for ``momentum=None`` (a cumulative
average of the batch statistics; the count includes this batch, so the first batch's statistics
replace the initial ones). Evaluation (running statistics μ_r, σ²_r)::

    y = x · s + (β − μ_r s),   s = γ / √(σ²_r + ε)

Without running statistics (``running_mean=None``: ``track_running_stats=False``) the batch
statistics are used in evaluation too, as PyTorch does, and nothing is updated. Training refuses
a batch with one value per channel (n = 1, where σ² would be 0 and the unbiased variance 0/0),
with PyTorch's message.

Backward, with δ = ∂L/∂y and x̂ = x_c r (sums over the n values of each channel)::

    ∂L/∂β = Σ δ,   ∂L/∂γ = Σ δ x̂ = r Σ δ x_c
    ∂L/∂x = (γ r) · (δ − Σ δ / n − x̂ · Σ δ x̂ / n)        (training: batch statistics)
    ∂L/∂x = δ · γ / √(σ²_r + ε)                             (evaluation: running statistics)

The training form is the fused one (the three terms of the chain rule through μ and σ² folded
into per-channel factors: ∂L/∂x = δ·k₁ + x_c·k₂ + k₃, one pass per term), stable because it is
written in the deviations x_c, never in E[x²].

Synchronised statistics (several ranks)
---------------------------------------

With ``reduce`` (a function summing per-channel arrays over the ranks of a data-parallel group,
e.g. ``comm.all_reduce``: :class:`nnbackend.layers.SyncBatchNorm`), training normalises with
the statistics of the *global* batch, the concatenation of every rank's shard x⁽ʳ⁾ of n_r
values per channel, in the same two passes (two calls, each of one array)::

    [Σ x, n] ← Σ_r [Σ x⁽ʳ⁾, n_r]           (one (C + 1,) array: the sums and the count)
    μ = Σ x / n,   x_c = x⁽ʳ⁾ − μ,   Σ x_c² ← Σ_r Σ x_c⁽ʳ⁾²,   σ² = Σ x_c² / n

so every rank gets the statistics one process computes on the whole batch (to rounding) and
the running statistics take the global μ and Σ x_c² / (n − 1). The backward sums, in one call,
[Σ δ, Σ δ x_c] over the ranks (the gradient of the *global* loss: a data-parallel wrapper
scales each rank's δ by n_r / B first) and divides by the global n; ∂L/∂γ and ∂L/∂β stay this
rank's sums (the wrapper's gradient all-reduce adds them). The global count is a 0-d array on
the device (in the input's dtype: exact to 2²⁴ values per channel in float32), so nothing is
read back; a shard may hold a single value per channel, or none, as long as the global batch
holds more than one (not checked: that would read the count back; n = 1 gives a NaN running
variance). Evaluation never communicates (nor does a forward without running statistics in
evaluation, which uses this rank's batch, as PyTorch's SyncBatchNorm does).

Conventions of this module
--------------------------
The buffers of the library are stored back by assignment, never mutated by the math (JAX's
arrays cannot be), so the running statistics go in and the new ones come out:

- :func:`batch_norm` returns y only, as ``torch.nn.functional.batch_norm`` does; unlike it, the
  running statistics passed in are *not* updated in place (use :func:`batch_norm_forward`).
- :func:`batch_norm_forward` returns ``BatchNormForward(y, running_mean, running_var, saved)``:
  the new running statistics (the arrays passed in, unchanged, when there is nothing to update)
  and ``saved``, what :func:`batch_norm_backward` needs (x_c and r, not recomputed).
- :func:`batch_norm_backward` ``(dy, saved) -> (dx, dweight, dbias)``, each None when not
  asked for (or, for the last two, when there is no γ/β).

Reductions over the channel's values are written as standard fused reductions where the
standard has one: Σ x_c² and Σ δ x_c are ``vecdot`` over the trailing axis (one read of each
operand, no product array), then a sum over the batch axis; sums over the trailing axis first,
then the batch axis (on NumPy the contiguous axis reduces pairwise and fastest). Nothing is read
back to the host (the momentum=None factor is computed from the device count on the device).

Layer and RMS normalisation
---------------------------
Each row of D = prod(``normalized_shape``) trailing values (x viewed as (M, D)) is normalised
on its own, with γ = ``weight`` and β = ``bias`` of shape ``normalized_shape``::

    layer_norm:  μ = Σ x / D,  x_c = x − μ,  r = 1 / √(Σ x_c² / D + ε),  x̂ = x_c r
    rms_norm:    r = 1 / √(Σ x² / D + ε),  x̂ = x r          (ε None: finfo(dtype).eps)
    y = x̂ γ + β

(two passes for the variance, as batch normalisation's). Backward, g = δ γ, means over each
row's D values: ∂L/∂x = r (g − mean g − x̂ mean(g x̂)) (RMS norm: without mean g),
∂L/∂γ = Σ_rows δ x̂, ∂L/∂β = Σ_rows δ. :func:`layer_norm_forward` / :func:`rms_norm_forward`
return ``(y, saved)`` (``saved`` holds x̂ and r); :func:`layer_norm_backward` returns
``(dx, dweight, dbias)``, :func:`rms_norm_backward` ``(dx, dweight)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import array_api_compat

from .._checks import check_nonnegative, check_number
from .._native import channel_operand, summer
from .._typing import Array, Namespace

__all__ = [
    "BatchNormForward",
    "BatchNormSaved",
    "LayerNormSaved",
    "batch_norm",
    "batch_norm_backward",
    "batch_norm_forward",
    "layer_norm",
    "layer_norm_backward",
    "layer_norm_forward",
    "rms_norm",
    "rms_norm_backward",
    "rms_norm_forward",
]

Reduce = Callable[[list[Array]], list[Array]]
"""Σ over the ranks of each array of a list, returned as a list (``Communicator.all_reduce``:
it may sum in place, so only arrays it may overwrite are passed)."""


class BatchNormSaved(NamedTuple):
    """What :func:`batch_norm_backward` needs from the forward pass (arrays in the work layout:
    (N, C) for a 2-d input, else (N, C, L))."""

    centered: Array | None
    """x − μ with the batch mean μ (batch statistics), else None."""
    x: Array | None
    """The input in the work layout (running statistics: for ∂L/∂γ), else None."""
    mean: Array | None
    """The running mean μ_r (running statistics), else None."""
    inv_std: Array
    """r = 1 / √(σ² + ε), (C,)."""
    scale: Array
    """γ r (or r without γ), (C,)."""
    has_weight: bool
    """Whether γ was given (∂L/∂γ exists)."""
    has_bias: bool
    """Whether β was given (∂L/∂β exists)."""
    shape: tuple[int, ...]
    """The input's shape (∂L/∂x is returned in it)."""
    global_count: Array | None = None
    """The global number of values per channel, a 0-d array in the input's dtype, when the
    statistics were summed over the ranks (``reduce``); else None (this rank's count)."""


class BatchNormForward(NamedTuple):
    """What :func:`batch_norm_forward` returns."""

    y: Array
    running_mean: Array | None
    running_var: Array | None
    saved: BatchNormSaved | None


def batch_norm(
    input: Array,
    running_mean: Array | None,
    running_var: Array | None,
    weight: Array | None = None,
    bias: Array | None = None,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    *,
    num_batches_tracked: Array | int | None = None,
    xp: Namespace | None = None,
) -> Array:
    """y = (x − μ) / √(σ² + ε) · γ + β per channel (axis 1), as ``torch.nn.functional.batch_norm``.

    Parameters
    ----------
    input : array
        Floating, (N, C), (N, C, L) or (N, C, H, W) (any trailing axes).
    running_mean, running_var : array (C,) or None
        The running statistics (evaluation uses them); None for both: batch statistics always.
        **Not updated in place** (the library's buffers are stored back by assignment): call
        :func:`batch_norm_forward` for the updated ones.
    weight, bias : array (C,), optional
        γ and β (None: γ = 1, β = 0).
    training : bool
        Batch statistics (and the running statistics' update in :func:`batch_norm_forward`).
    momentum : float or None
        Weight of the batch statistics in the running update; None: cumulative average, with
        factor 1 / ``num_batches_tracked``.
    eps : float
        ε > 0 added to the variance.
    num_batches_tracked : 0-d integer array or int, optional
        The number of training batches so far, this one included (needed only for
        ``momentum=None`` when running statistics are updated).
    xp : namespace, optional
        ``input``'s namespace (looked up when omitted).

    Returns
    -------
    y : array
        Same shape, dtype and device as ``input``.
    """
    return batch_norm_forward(
        input, running_mean, running_var, weight, bias, training, momentum, eps,
        num_batches_tracked=num_batches_tracked, save=False, xp=xp, caller="batch_norm",
    ).y


def batch_norm_forward(
    input: Array,
    running_mean: Array | None,
    running_var: Array | None,
    weight: Array | None = None,
    bias: Array | None = None,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    *,
    num_batches_tracked: Array | int | None = None,
    save: bool = True,
    reduce: Reduce | None = None,
    overwrite: bool = False,
    xp: Namespace | None = None,
    caller: str = "batch_norm_forward",
) -> BatchNormForward:
    """:func:`batch_norm` returning also the new running statistics and what the backward needs.

    Same parameters as :func:`batch_norm`; ``save=False`` returns no ``saved`` (None) and
    builds y in the storage of x − μ (one allocation fewer: inference); ``overwrite`` lets it
    build x − μ (batch statistics) or, unsaved, y (running statistics) in x's storage, where
    the library writes in place (the caller must own x); ``caller`` names the function or
    layer in errors. ``reduce`` (training only; see "Synchronised statistics" in
    the module docstring) sums the per-channel statistics over the ranks: two calls, each
    with one array, made by every rank in the same order; this rank's input may then have one
    value per channel, or none.

    Returns
    -------
    BatchNormForward
        ``(y, running_mean, running_var, saved)``: the updated running statistics in training
        (new arrays; the arguments are not modified), else the arguments themselves; ``saved``
        for :func:`batch_norm_backward`.
    """
    x = input
    xp = array_api_compat.array_namespace(x) if xp is None else xp
    _check_arguments(x, running_mean, running_var, weight, bias, momentum, eps, xp, caller)
    shape = tuple(x.shape)
    n = _count(shape)
    batch_stats = training or running_mean is None
    synced = training and reduce is not None
    if training and n == 1 and not synced:
        msg = (f"{caller}: expected more than 1 value per channel when training, got input of "
               f"shape {shape}")
        raise ValueError(msg)
    work = _work(x, shape, xp)
    if not batch_stats:
        return _eval_forward(work, running_mean, running_var, weight, bias, eps, shape, save,
                             overwrite, xp)
    count: Any = n  # values per channel: this rank's, or the global batch's (a 0-d array)
    if synced and reduce is not None:
        mean, count = _global_mean(work, n, reduce, xp)
    else:
        mean = _channel_sum(work, xp) / n
    if overwrite:  # x is the caller's to spend: x − μ in its storage (rebound on JAX)
        centered = work
        centered -= _per_channel(mean, work, xp)
    else:
        centered = work - _per_channel(mean, work, xp)
    squares = _channel_dot(centered, centered, xp)
    if synced and reduce is not None:
        squares = reduce([squares])[0]  # Σ x_c² over the ranks, about the global mean
    inv_std = 1.0 / xp.sqrt(squares / count + eps)
    scale = inv_std if weight is None else weight * inv_std
    if save:
        y = centered * _per_channel(scale, work, xp)
    else:  # x − μ is needed no longer: y in its storage (rebound on JAX)
        y = centered
        y *= _per_channel(scale, work, xp)
    if bias is not None:
        y += _per_channel(bias, work, xp)  # y is ours: in place (rebound on JAX)
    if training and running_mean is not None and running_var is not None:
        factor = _factor(momentum, num_batches_tracked, x.dtype, xp, caller)
        keep = 1.0 - factor
        running_mean = keep * running_mean + factor * mean
        running_var = keep * running_var + factor * (squares / (count - 1))
    saved = BatchNormSaved(centered, None, None, inv_std, scale, weight is not None,
                           bias is not None, shape, count if synced else None) if save else None
    return BatchNormForward(_unwork(y, shape, xp), running_mean, running_var, saved)


def batch_norm_backward(
    dy: Array,
    saved: BatchNormSaved,
    *,
    input_grad: bool = True,
    weight_grad: bool = True,
    bias_grad: bool = True,
    overwrite: bool = False,
    reduce: Reduce | None = None,
    xp: Namespace | None = None,
) -> tuple[Array | None, Array | None, Array | None]:
    """``(∂L/∂x, ∂L/∂γ, ∂L/∂β)`` from δ = ``dy`` (the input's shape) and the forward's ``saved``.

    Parameters
    ----------
    dy : array
        ∂L/∂y, of the input's shape.
    saved : BatchNormSaved
        From :func:`batch_norm_forward`.
    input_grad, weight_grad, bias_grad : bool
        Which gradients to compute; the others are None (∂L/∂γ and ∂L/∂β are None also
        without γ and β).
    overwrite : bool
        Whether ``saved``'s arrays may be overwritten (∂L/∂x is then built in the storage of
        x − μ: one allocation fewer). Only for a ``saved`` used once; ignored where arrays are
        immutable.
    reduce : callable, optional
        The forward's ``reduce``, required when the forward summed its statistics over the
        ranks (``saved.global_count`` is set): [Σ δ, Σ δ x_c] are then summed over the ranks
        in one call (made only when ∂L/∂x is asked for) and divided by the global count;
        ∂L/∂γ and ∂L/∂β stay this rank's sums. Ignored after a forward that did not
        communicate.
    xp : namespace, optional
        ``dy``'s namespace (looked up when omitted).
    """
    xp = array_api_compat.array_namespace(dy) if xp is None else xp
    shape = saved.shape
    if tuple(dy.shape) != shape:
        msg = f"batch_norm_backward: dy has shape {tuple(dy.shape)}, the input had {shape}"
        raise ValueError(msg)
    if saved.global_count is not None and reduce is None:
        msg = ("batch_norm_backward: the forward summed its statistics over the ranks "
               "(reduce=...); the backward needs the same reduce")
        raise ValueError(msg)
    n: Any = _count(shape)
    work = _work(dy, shape, xp)
    weight_grad = weight_grad and saved.has_weight
    bias_grad = bias_grad and saved.has_bias
    if saved.centered is None:
        return _eval_backward(work, saved, input_grad, weight_grad, bias_grad, xp)
    centered, inv_std, scale = saved.centered, saved.inv_std, saved.scale
    sum_dy = _channel_sum(work, xp) if input_grad or bias_grad else None
    dot = _channel_dot(work, centered, xp) if input_grad or weight_grad else None
    dweight = dot * inv_std if weight_grad else None
    dbias = sum_dy if bias_grad else None
    if not input_grad or sum_dy is None or dot is None:
        return None, dweight, dbias
    if saved.global_count is not None and reduce is not None:  # the global batch's sums
        sum_dy, dot, n = _global_sums(sum_dy, dot, saved.global_count, reduce, xp)
    # ∂L/∂x = γr (δ + x_c k₂ + k₃) with k₂ = −r²·Σδx_c/n, k₃ = −Σδ/n (PyTorch's form): built
    # in one array (x_c's storage with overwrite), δ read once, no temporary of x's size.
    k2 = _per_channel((inv_std * inv_std) * dot * (-1.0 / n), work, xp)
    k3 = _per_channel(sum_dy * (-1.0 / n), work, xp)
    dx = centered if overwrite else centered * k2
    if overwrite:
        dx *= k2
    dx += k3
    dx += work
    dx *= _per_channel(scale, work, xp)
    return _unwork(dx, shape, xp), dweight, dbias


# --------------------------------------------------------------------------------------------
# Helpers


def _eval_forward(
    work: Array, running_mean: Array, running_var: Array, weight: Array | None,
    bias: Array | None, eps: float, shape: tuple[int, ...], save: bool, overwrite: bool,
    xp: Namespace,
) -> BatchNormForward:
    """y = x s + (β − μ_r s) with s = γ / √(σ²_r + ε): two passes, as PyTorch's evaluation
    (in x's storage with ``overwrite`` when x is not saved)."""
    inv_std = 1.0 / xp.sqrt(running_var + eps)
    scale = inv_std if weight is None else weight * inv_std
    shift = -running_mean * scale if bias is None else bias - running_mean * scale
    if overwrite and not save:
        y = work
        y *= _per_channel(scale, work, xp)
    else:
        y = work * _per_channel(scale, work, xp)
    y += _per_channel(shift, work, xp)
    saved = BatchNormSaved(None, work, running_mean, inv_std, scale, weight is not None,
                           bias is not None, shape) if save else None
    return BatchNormForward(_unwork(y, shape, xp), running_mean, running_var, saved)


def _eval_backward(
    work: Array, saved: BatchNormSaved, input_grad: bool, weight_grad: bool, bias_grad: bool,
    xp: Namespace,
) -> tuple[Array | None, Array | None, Array | None]:
    """Running statistics are constants: ∂L/∂x = δ s; ∂L/∂γ = r Σ δ (x − μ_r); ∂L/∂β = Σ δ."""
    dx = _unwork(work * _per_channel(saved.scale, work, xp), saved.shape, xp) if input_grad \
        else None
    dweight = None
    if weight_grad and saved.x is not None and saved.mean is not None:
        centered = saved.x - _per_channel(saved.mean, work, xp)  # not Σδx − μΣδ: no cancellation
        dweight = _channel_dot(work, centered, xp) * saved.inv_std
    dbias = _channel_sum(work, xp) if bias_grad else None
    return dx, dweight, dbias


def _count(shape: tuple[int, ...]) -> int:
    """n = N · L: the values per channel."""
    n = shape[0]
    for size in shape[2:]:
        n *= size
    return n


def _work(a: Array, shape: tuple[int, ...], xp: Namespace) -> Array:
    """The work layout: (N, C) as it is, else (N, C, L) with L the trailing sizes' product
    (from the shape itself, so an empty shard, N = 0, has one too)."""
    if a.ndim == 2:
        return a
    trailing = 1
    for size in shape[2:]:
        trailing *= size
    return xp.reshape(a, (shape[0], shape[1], trailing))


def _global_mean(work: Array, n: int, reduce: Reduce, xp: Namespace) -> tuple[Array, Array]:
    """(μ, n) of the global batch: [Σ x, n] summed over the ranks in one call, one (C + 1,)
    array in the input's dtype; n comes back as a 0-d array (nothing read to the host)."""
    channels = work.shape[1]
    local = xp.full((1,), float(n), dtype=work.dtype, device=array_api_compat.device(work))
    total = reduce([xp.concat([_channel_sum(work, xp), local])])[0]
    count = total[channels]
    return total[:channels] / count, count


def _global_sums(
    sum_dy: Array, dot: Array, count: Array, reduce: Reduce, xp: Namespace
) -> tuple[Array, Array, Array]:
    """[Σ δ, Σ δ x_c] summed over the ranks in one call (a (2C,) array: the caller's own
    ``sum_dy`` and ``dot`` are not overwritten), with the global count."""
    channels = sum_dy.shape[0]
    total = reduce([xp.concat([sum_dy, dot])])[0]
    return total[:channels], total[channels:], count


def _per_channel(v: Array, work: Array, xp: Namespace) -> Array:
    """A (C,) vector as an operand of the work layout: (C,) for (N, C); for (N, C, L), (C, 1)
    (a contiguous (C, L) block on NumPy, whose loops are twice as fast without a stride-0
    operand: :func:`nnbackend._native.channel_operand`)."""
    return v if work.ndim == 2 else channel_operand(v, work.shape[2], xp)


def _channel_sum(a: Array, xp: Namespace) -> Array:
    """Σ over every axis but the channels'. For (N, C, L): the trailing axis as a product with
    ones (a matrix-vector product: one read of a, ~3× NumPy's ``sum`` over a trailing axis
    of 784 and ~14× over one of 4, to the same rounding in float32), then a sum over N."""
    total = summer(xp)
    if a.ndim == 2:
        return total(a, axis=0)
    ones = xp.ones((a.shape[2],), dtype=a.dtype, device=array_api_compat.device(a))
    return total(a @ ones, axis=0)


def _channel_dot(a: Array, b: Array, xp: Namespace) -> Array:
    """Σ a·b per channel. For (N, C, L): ``vecdot`` over the trailing axis (one read of each
    operand, no product array), then a sum over N; for (N, C) a product and a sum (``vecdot``
    along axis 0 runs strided, ~10× slower on NumPy for large N)."""
    if a.ndim == 2:
        return summer(xp)(a * b, axis=0)
    return summer(xp)(xp.vecdot(a, b, axis=-1), axis=0)


def _unwork(a: Array, shape: tuple[int, ...], xp: Namespace) -> Array:
    """An array of the work layout back in the input's shape (a view where it is one)."""
    return a if a.ndim == len(shape) else xp.reshape(a, shape)


def _factor(
    momentum: float | None, count: Array | int | None, dtype: Any, xp: Namespace, caller: str
) -> Any:
    """The weight m of this batch in the running update: ``momentum``, or 1 / count (on the
    device when the count is a device array: no host read)."""
    if momentum is not None:
        return momentum
    if count is None:
        msg = (f"{caller}: momentum=None (a cumulative average) needs num_batches_tracked, the "
               "number of training batches including this one")
        raise TypeError(msg)
    if isinstance(count, int):  # a Python int (NumPy's scalars take the array path: same bits)
        if count < 1:
            msg = f"{caller}: num_batches_tracked must be >= 1 with momentum=None, got {count}"
            raise ValueError(msg)
        return 1.0 / int(count)
    return 1.0 / xp.astype(count, dtype)


def _check_arguments(
    x: Array, running_mean: Array | None, running_var: Array | None, weight: Array | None,
    bias: Array | None, momentum: float | None, eps: float, xp: Namespace, caller: str,
) -> None:
    """Shapes, dtypes and numbers: errors that name the argument and what it was."""
    if not xp.isdtype(x.dtype, "real floating"):
        msg = f"{caller}: input must be a floating array, got dtype {x.dtype}"
        raise TypeError(msg)
    if x.ndim < 2:
        msg = (f"{caller}: input must have a batch and a channel axis, (N, C, ...), got shape "
               f"{tuple(x.shape)}")
        raise ValueError(msg)
    if (running_mean is None) != (running_var is None):
        msg = f"{caller}: running_mean and running_var must both be arrays or both be None"
        raise ValueError(msg)
    channels = x.shape[1]
    for name, v in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if v is not None and (tuple(v.shape) != (channels,) or v.dtype != x.dtype):
            msg = (f"{caller}: {name} must have shape ({channels},) and the input's dtype "
                   f"{x.dtype} for an input of shape {tuple(x.shape)}, got shape "
                   f"{tuple(v.shape)} and dtype {v.dtype}")
            raise ValueError(msg)
    if momentum is not None:
        check_number(momentum, caller=caller, name="momentum")
    check_nonnegative(eps, caller=caller, name="eps")


# --------------------------------------------------------------------------------------------
# Layer normalisation and RMS normalisation (over the trailing axes of each sample)


class LayerNormSaved(NamedTuple):
    """What :func:`layer_norm_backward` and :func:`rms_norm_backward` need from the forward
    pass (arrays in the work layout (M, D): M rows of D = prod(normalized_shape) values)."""

    normalized: Array
    """x̂ = (x − μ) r (layer norm) or x r (RMS norm), (M, D)."""
    inv_std: Array
    """r = 1 / √(σ² + ε) (layer norm) or 1 / √(mean x² + ε) (RMS norm), (M, 1)."""
    weight: Array | None
    """γ flattened to (D,), or None."""
    has_bias: bool
    """Whether β was given (∂L/∂β exists)."""
    centered: bool
    """True for layer norm (the mean is subtracted), False for RMS norm."""
    shape: tuple[int, ...]
    """The input's shape (∂L/∂x is returned in it)."""
    normalized_shape: tuple[int, ...]
    """The trailing shape normalised over (∂L/∂γ and ∂L/∂β are returned in it)."""


def layer_norm(
    input: Array,
    normalized_shape: int | tuple[int, ...],
    weight: Array | None = None,
    bias: Array | None = None,
    eps: float = 1e-5,
    *,
    xp: Namespace | None = None,
) -> Array:
    """y = (x − μ) / √(σ² + ε) · γ + β over the trailing ``normalized_shape`` axes of each
    sample, as ``torch.nn.functional.layer_norm``.

    μ and σ² (biased) are taken over the D = prod(normalized_shape) trailing values, in two
    passes (the mean first, then the mean of the squared deviations: no cancellation).

    Parameters
    ----------
    input : array (..., ``*normalized_shape``)
        Floating.
    normalized_shape : int or tuple of int
        The trailing shape to normalise over.
    weight, bias : array of shape ``normalized_shape``, optional
        γ and β (None: γ = 1, β = 0).
    eps : float
        ε ≥ 0 added to the variance (PyTorch's 1e-5).
    xp : namespace, optional
        ``input``'s namespace (looked up when omitted).

    Returns
    -------
    y : array of ``input``'s shape, dtype and device.
    """
    return layer_norm_forward(input, normalized_shape, weight, bias, eps, save=False, xp=xp)[0]


def layer_norm_forward(
    input: Array,
    normalized_shape: int | tuple[int, ...],
    weight: Array | None = None,
    bias: Array | None = None,
    eps: float = 1e-5,
    *,
    save: bool = True,
    xp: Namespace | None = None,
    caller: str = "layer_norm",
) -> tuple[Array, LayerNormSaved | None]:
    """:func:`layer_norm` returning also what :func:`layer_norm_backward` needs (None with
    ``save=False``); ``caller`` names the function or layer in errors."""
    x = input
    xp = array_api_compat.array_namespace(x) if xp is None else xp
    norm_shape = _normalized_shape(normalized_shape, caller)
    work, w, b = _check_trailing(x, norm_shape, weight, bias, xp, caller)
    size = work.shape[1]
    centered = work - _row_sums(work, xp) / size
    variance = xp.vecdot(centered, centered, axis=-1)[:, None] / size
    inv_std = 1.0 / xp.sqrt(variance + eps)
    centered *= inv_std  # x̂, in the storage of x − μ (ours; rebound on JAX)
    return _affine(centered, inv_std, w, b, True, x, norm_shape, save, xp)


def layer_norm_backward(
    dy: Array,
    saved: LayerNormSaved,
    *,
    input_grad: bool = True,
    weight_grad: bool = True,
    bias_grad: bool = True,
    xp: Namespace | None = None,
) -> tuple[Array | None, Array | None, Array | None]:
    """``(∂L/∂x, ∂L/∂γ, ∂L/∂β)`` of layer (or RMS) normalisation from δ = ``dy``.

    With g = δ γ (δ without γ) and means over the D normalised values of each row::

        ∂L/∂x = r · (g − mean g − x̂ · mean(g x̂))     (layer norm)
        ∂L/∂x = r · (g − x̂ · mean(g x̂))              (RMS norm: no mean subtracted)
        ∂L/∂γ = Σ_rows δ x̂,   ∂L/∂β = Σ_rows δ

    Gradients not asked for (or without γ/β) are None.
    """
    xp = array_api_compat.array_namespace(dy) if xp is None else xp
    shape = saved.shape
    if tuple(dy.shape) != shape:
        where = "layer_norm_backward" if saved.centered else "rms_norm_backward"
        msg = f"{where}: dy has shape {tuple(dy.shape)}, the input had {shape}"
        raise ValueError(msg)
    xhat, inv_std, weight = saved.normalized, saved.inv_std, saved.weight
    work = xp.reshape(dy, xhat.shape)
    dweight = dbias = None
    if weight_grad and weight is not None:
        dweight = xp.reshape(_column_sums(work * xhat, xp), saved.normalized_shape)
    if bias_grad and saved.has_bias:
        dbias = xp.reshape(_column_sums(work, xp), saved.normalized_shape)
    if not input_grad:
        return None, dweight, dbias
    size = xhat.shape[1]
    g = work if weight is None else work * weight
    dx = xhat * (xp.vecdot(g, xhat, axis=-1)[:, None] / size)  # x̂ mean(g x̂)
    dx -= g  # (in dx's storage: g may be dy itself)
    if saved.centered:
        dx += _row_sums(g, xp) / size
    dx *= -inv_std  # r (g − mean g − x̂ mean(g x̂))
    return xp.reshape(dx, shape), dweight, dbias


def _row_sums(a: Array, xp: Namespace) -> Array:
    """Σ of each row of a (M, D), as (M, 1): a matrix-vector product with ones (one read of a;
    on NumPy ~4× a sum over a trailing axis of 128)."""
    ones = xp.ones((a.shape[1],), dtype=a.dtype, device=array_api_compat.device(a))
    return (a @ ones)[:, None]


def _column_sums(a: Array, xp: Namespace) -> Array:
    """Σ over the rows of a (M, D), as (D,): ones (M,) @ a (~3× NumPy's sum over axis 0)."""
    ones = xp.ones((a.shape[0],), dtype=a.dtype, device=array_api_compat.device(a))
    return ones @ a


def rms_norm(
    input: Array,
    normalized_shape: int | tuple[int, ...],
    weight: Array | None = None,
    eps: float | None = None,
    *,
    xp: Namespace | None = None,
) -> Array:
    """y = x / √(mean x² + ε) · γ over the trailing ``normalized_shape`` axes of each sample,
    as ``torch.nn.functional.rms_norm``.

    Parameters
    ----------
    input : array (..., ``*normalized_shape``)
        Floating.
    normalized_shape : int or tuple of int
        The trailing shape to normalise over.
    weight : array of shape ``normalized_shape``, optional
        γ (None: γ = 1).
    eps : float, optional
        ε ≥ 0 added to the mean square; None (PyTorch's default): the machine epsilon of the
        input's dtype, ``finfo(dtype).eps``.
    xp : namespace, optional
        ``input``'s namespace (looked up when omitted).

    Returns
    -------
    y : array of ``input``'s shape, dtype and device.
    """
    return rms_norm_forward(input, normalized_shape, weight, eps, save=False, xp=xp)[0]


def rms_norm_forward(
    input: Array,
    normalized_shape: int | tuple[int, ...],
    weight: Array | None = None,
    eps: float | None = None,
    *,
    save: bool = True,
    xp: Namespace | None = None,
    caller: str = "rms_norm",
) -> tuple[Array, LayerNormSaved | None]:
    """:func:`rms_norm` returning also what :func:`rms_norm_backward` needs (None with
    ``save=False``); ``caller`` names the function or layer in errors."""
    x = input
    xp = array_api_compat.array_namespace(x) if xp is None else xp
    norm_shape = _normalized_shape(normalized_shape, caller)
    work, w, _ = _check_trailing(x, norm_shape, weight, None, xp, caller)
    if eps is None:
        eps = float(xp.finfo(x.dtype).eps)
    check_nonnegative(eps, caller=caller, name="eps")
    mean_square = xp.vecdot(work, work, axis=-1)[:, None] / work.shape[1]
    inv_std = 1.0 / xp.sqrt(mean_square + eps)
    return _affine(work * inv_std, inv_std, w, None, False, x, norm_shape, save, xp)


def rms_norm_backward(
    dy: Array,
    saved: LayerNormSaved,
    *,
    input_grad: bool = True,
    weight_grad: bool = True,
    xp: Namespace | None = None,
) -> tuple[Array | None, Array | None]:
    """``(∂L/∂x, ∂L/∂γ)`` of :func:`rms_norm` (see :func:`layer_norm_backward`'s formulas)."""
    dx, dweight, _ = layer_norm_backward(dy, saved, input_grad=input_grad,
                                         weight_grad=weight_grad, bias_grad=False, xp=xp)
    return dx, dweight


def _affine(
    xhat: Array, inv_std: Array, weight: Array | None, bias: Array | None, centered: bool,
    x: Array, norm_shape: tuple[int, ...], save: bool, xp: Namespace,
) -> tuple[Array, LayerNormSaved | None]:
    """y = x̂ γ + β in the input's shape, and the saved state."""
    if weight is not None:
        y = xhat * weight
        if bias is not None:
            y += bias  # y is ours: in place (rebound on JAX)
    elif bias is not None:
        y = xhat + bias
    else:  # y must not alias what the backward reads (a later layer may write into y)
        y = xhat * 1.0 if save else xhat
    saved = LayerNormSaved(xhat, inv_std, weight, bias is not None, centered, tuple(x.shape),
                           norm_shape) if save else None
    return xp.reshape(y, tuple(x.shape)), saved


def _normalized_shape(normalized_shape: Any, caller: str) -> tuple[int, ...]:
    """``normalized_shape`` as a tuple of positive ints (an int is a 1-tuple)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
    try:
        shape = tuple(shape)
    except TypeError:
        shape = None
    if not shape or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
        msg = (f"{caller}: normalized_shape must be a positive int or a non-empty tuple of "
               f"them, got {normalized_shape!r}")
        raise ValueError(msg)
    return shape


def _check_trailing(
    x: Array, norm_shape: tuple[int, ...], weight: Array | None, bias: Array | None,
    xp: Namespace, caller: str,
) -> tuple[Array, Array | None, Array | None]:
    """x as (M, D) rows, γ and β as (D,): errors naming the caller and the shapes."""
    if not xp.isdtype(x.dtype, "real floating"):
        msg = f"{caller}: input must be a floating array, got dtype {x.dtype}"
        raise TypeError(msg)
    k = len(norm_shape)
    if x.ndim < k or tuple(x.shape[x.ndim - k:]) != norm_shape:
        trailing = ", ".join(map(str, norm_shape))
        msg = (f"{caller}: expected input of shape (..., {trailing}) (normalized_shape "
               f"{norm_shape}), got {tuple(x.shape)}")
        raise ValueError(msg)
    size = rows = 1
    for n in norm_shape:
        size *= n
    for n in x.shape[:x.ndim - k]:
        rows *= n
    flat: list[Array | None] = []
    for name, v in (("weight", weight), ("bias", bias)):
        if v is not None and (tuple(v.shape) != norm_shape or v.dtype != x.dtype):
            msg = (f"{caller}: {name} must have shape normalized_shape = {norm_shape} and the "
                   f"input's dtype {x.dtype}, got shape {tuple(v.shape)} and dtype {v.dtype}")
            raise ValueError(msg)
        flat.append(v if v is None or k == 1 else xp.reshape(v, (size,)))
    return xp.reshape(x, (rows, size)), flat[0], flat[1]
