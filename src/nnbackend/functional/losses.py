"""Loss functions, each returning the loss and its gradient with respect to the prediction.

Every function returns ``(loss, grad)``: ``loss`` is a 0-d array on the prediction's device (no
host synchronisation), ``grad`` = ∂loss/∂prediction has the prediction's shape and dtype.

With reduction ``"mean"`` over ``n`` terms (elements for MSE and BCE, which take any shape;
positions for cross-entropy: the N samples of (N, C) logits, the N·d1·… positions of N-D ones)
and ``"sum"`` without the 1/n:

================================  =============================================  ==================
loss                              value                                          gradient
================================  =============================================  ==================
mse(ŷ, y)                         1/n Σ (ŷ − y)²                                 2 (ŷ − y) / n
cross_entropy(z, labels)          −1/N Σₙ Σ_c qₙ_c log softmax(zₙ)_c             (p Σ_c q − q) / N
binary_cross_entropy_with_logits  1/n Σ max(z,0) − z y + log(1 + e^−|z|)          (σ(z) − y) / n
================================  =============================================  ==================

For cross-entropy, q is the target distribution: the one-hot of an integer label, or the given
class probabilities, mixed with the uniform distribution by label smoothing ε:
q = (1 − ε) q + ε / C; p = softmax(z). With Σ_c q = 1 the gradient is the familiar (p − q) / N.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

from .._checks import (
    check_array,
    check_floating,
    check_probability,
    check_same_placement,
    device_of,
    dtype_kind,
    namespace_of,
)
from .._libraries import is_traced
from .._native import maximizer, summer
from .._typing import Array, Namespace
from ..backend import is_host_array
from .activations import _sigmoid_from_exp

__all__ = ["binary_cross_entropy_with_logits", "cross_entropy", "mse"]

_REDUCTIONS = ("mean", "sum")


def mse(
    prediction: Array,
    target: Array,
    /,
    *,
    reduction: str = "mean",
) -> tuple[Array, Array]:
    """Mean squared error L = 1/n Σ (ŷ − y)² over all n elements, and ∂L/∂ŷ = 2 (ŷ − y) / n.

    Parameters
    ----------
    prediction, target : array, same shape and dtype (floating)
    reduction : {"mean", "sum"}
        ``"sum"`` drops the 1/n.
    """
    xp = _check_pair(prediction, target, where="mse", reduction=reduction)
    diff = prediction - target
    scale = _mean_scale(reduction, math.prod(diff.shape), "mse")
    loss = xp.sum(diff * diff) * scale
    diff *= 2.0 * scale  # diff is ours: it becomes the gradient without another allocation
    return loss, diff


def binary_cross_entropy_with_logits(
    logits: Array,
    target: Array,
    /,
    *,
    reduction: str = "mean",
) -> tuple[Array, Array]:
    """Binary cross-entropy on logits z with targets y ∈ [0, 1], accurate for any finite z.

    ℓ = −[y log σ(z) + (1 − y) log(1 − σ(z))] = max(z, 0) − z y + log(1 + e^−|z|),
    ∂ℓ/∂z = σ(z) − y; averaged over all n elements (``"mean"``) or summed (``"sum"``).

    Notes
    -----
    With e = e^−|z| computed once, ℓ = (1 − y) z + log1p(e) for z ≥ 0 and −y z + log1p(e) for
    z < 0: for y ∈ [0, 1] both terms are non-negative, so no digit cancels (max(z, 0) − z y
    loses the loss's digits when y ≈ 1, z ≫ 0 or y ≈ 0, z ≪ 0). σ(z) is formed from the same e
    as in :func:`nnbackend.functional.sigmoid`, so the gradient is accurate where σ(z) is tiny.
    Logits must be finite: z = ±∞ gives 0 · ∞ = NaN where the target agrees (as in PyTorch).
    """
    xp = _check_pair(logits, target, where="binary_cross_entropy_with_logits",
                     reduction=reduction)
    scale = _mean_scale(reduction, math.prod(logits.shape),
                        "binary_cross_entropy_with_logits")
    step = xp.astype(logits >= 0.0, logits.dtype)  # [z ≥ 0]
    e = xp.abs(logits)
    e *= -1.0
    e = xp.exp(e)
    # max(z, 0) − z y = ([z ≥ 0] − y) z: (1 − y) z or −y z, one rounding each, never a
    # difference of two large terms
    terms = step - target
    terms *= logits
    terms += xp.log1p(e)
    loss = xp.sum(terms) * scale
    del terms
    grad = _sigmoid_from_exp(e, step, xp)  # consumes e and step, no longer needed
    grad -= target
    grad *= scale
    return loss, grad


def cross_entropy(
    logits: Array,
    target: Array,
    /,
    *,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    axis: int = -1,
) -> tuple[Array, Array]:
    """Softmax cross-entropy from logits, with integer labels or class probabilities.

    Parameters
    ----------
    logits : array (N, C) or (N, ..., C), floating
        The C classes lie on ``axis`` (the last by default: the (N, L, C) a sequence model
        produces); PyTorch's (N, C, d1, ...) layout is ``axis=1``.
    target : array of integer class labels in [0, C) of the logits' shape without the class
        axis ((N,) or (N, ...)), or class probabilities (one-hot or soft) of the logits' shape
        and dtype.
    reduction : {"mean", "sum"}
        Mean over the M positions (M = N for (N, C); N·d1·… in general, as in PyTorch), or
        their sum.
    label_smoothing : float in [0, 1]
        ε: the target becomes (1 − ε) q + ε / C.
    axis : int
        The class axis, negative counting from the end.

    Returns
    -------
    loss : 0-d array
        −1/M Σₘ Σ_c qₘ_c log pₘ_c with p = softmax(logits) along ``axis``, computed through a
        max-shifted log-softmax so that no logit overflows.
    grad : array of the logits' shape
        ∂loss/∂logits = (p Σ_c q − q) / M.

    Notes
    -----
    Labels outside [0, C) raise ``ValueError`` when the labels live in host memory. On an
    accelerator that check would stall the device, so instead the affected positions' loss and
    gradient become NaN, which training's non-finite-loss check reports.
    """
    where = "cross_entropy"
    xp = check_array(logits, caller=where, what="logits")
    check_floating(logits, xp, caller=where, what="logits")
    check_same_placement(target, check_array(target, caller=where, what="target"), logits, xp,
                         caller=where, what="target", ref_what="logits")
    check_reduction(reduction, where)
    label_smoothing = check_label_smoothing(label_smoothing, where)
    shape = tuple(logits.shape)
    axis = _class_axis(axis, shape, where)
    classes = shape[axis]
    positions = shape[:axis] + shape[axis + 1:]  # the shape of integer labels
    scale = _mean_scale(reduction, math.prod(positions), where)

    # log pₘ_c = sₘ_c − log Σ_c' exp sₘ_c' with the max-shifted logits s (no overflow)
    shifted = logits - maximizer(xp)(logits, axis=axis, keepdims=True)
    p = xp.exp(shifted)
    total = summer(xp)
    sum_exp = total(p, axis=axis, keepdims=True)
    log_sum_exp = xp.log(sum_exp)
    p /= sum_exp  # the softmax, normalised in place

    kind = dtype_kind(target.dtype, xp)
    if kind == "bool":
        msg = f"{where}: class labels must be integers, got dtype {target.dtype}"
        raise TypeError(msg)
    log_p = shifted
    log_p -= log_sum_exp  # shifted is ours: it becomes log p in place
    if kind.endswith("integer"):
        q, valid = _label_distribution(target, classes, label_smoothing, xp, where=where,
                                       logits=logits, axis=axis, positions=positions)
        loss = _expected_log(q, log_p, xp, total) * -scale
        p -= q
        grad = p
        if valid is not None:  # labels on a device: poison invalid samples instead of syncing
            loss = xp.where(xp.all(valid), loss, xp.nan)
            grad = xp.where(_with_class_axis(valid, axis, xp), grad, xp.nan)
    else:
        check_floating(target, xp, caller=where, what="target")
        if tuple(target.shape) != shape:
            msg = (
                f"{where}: probability targets must have the logits' shape {shape}, got "
                f"{tuple(target.shape)} (integer labels have shape "
                f"{_layout(len(shape), axis, classes=False)})"
            )
            raise ValueError(msg)
        _check_same_dtype(target, logits, where)
        q = target if not label_smoothing else (1.0 - label_smoothing) * target + (
            label_smoothing / classes
        )
        loss = _expected_log(q, log_p, xp, xp.sum) * -scale
        p *= xp.sum(q, axis=axis, keepdims=True)
        p -= q
        grad = p
    grad *= scale
    return loss, grad


def check_class_axis(axis: Any, where: str) -> int:
    """``axis`` as an int; TypeError for anything else (a bool, a float, an array), naming
    ``where`` and the value. Its range is checked against the logits' rank when they come."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        msg = (f"{where}: axis must be an integer (the class axis), got {axis!r} of type "
               f"{type(axis).__name__}")
        raise TypeError(msg)
    return int(axis)


def _class_axis(axis: Any, shape: tuple[int, ...], where: str) -> int:
    """The class axis as a non-negative index into ``shape``, once the logits' rank (at least
    2: positions and classes) and a non-empty class axis are checked."""
    rank = len(shape)
    given = axis if type(axis) is int else check_class_axis(axis, where)  # int: checked
    if rank >= 2 and -rank <= given < rank and shape[given]:  # valid: no more to do
        return given if given >= 0 else given + rank
    if rank < 2:
        msg = (f"{where}: logits must have shape (N, C) with C >= 1, got {shape} (or "
               f"(N, ..., C), with the classes on axis={given})")
        raise ValueError(msg)
    if not -rank <= given < rank:
        msg = f"{where}: axis={given} is out of range for logits of shape {shape} ({rank} axes)"
        raise ValueError(msg)
    index = given % rank
    if shape[index] == 0:
        msg = (f"{where}: logits must have shape {_layout(rank, index)} with C >= 1, got "
               f"{shape}")
        raise ValueError(msg)
    return index


def _layout(rank: int, axis: int, *, classes: bool = True) -> str:
    """The shape's axes by name for a message: "(N, C)", "(N, C, d1, d2)", "(N, d1)" ..."""
    names = ["N", *(f"d{i}" for i in range(1, rank - 1))]
    if classes:
        names.insert(axis, "C")
    return f"({names[0]},)" if len(names) == 1 else f"({', '.join(names)})"


def _with_class_axis(values: Array, axis: int, xp: Namespace) -> Array:
    """``values`` (the positions' shape) with a unit class axis at ``axis``, to broadcast
    against the logits: ``values[..., None]`` when the classes are last (one indexing, as
    ``labels[:, None]`` was for (N, C))."""
    if axis == values.ndim:
        return values[..., None]
    return xp.expand_dims(values, axis=axis)


def _expected_log(q: Array, log_p: Array, xp: Namespace, total: Callable[..., Array]) -> Array:
    """Σ q log p with 0 log p = 0 (also for p = 0, a masked logit: log p = −∞).

    q · log p would give 0 · (−∞) = NaN there, so log p is replaced by 0 where q = 0 before the
    product. Mass on a masked class (q > 0, log p = −∞) gives −∞, so the loss is +∞.
    """
    return total(q * xp.where(q == 0.0, 0.0, log_p))


def _label_distribution(
    labels: Array, classes: int, smoothing: float, xp: Namespace, *, where: str, logits: Array,
    axis: int, positions: tuple[int, ...],
) -> tuple[Array, Array | None]:
    """The target distribution q = (1 − ε) onehot(labels) + ε/C along ``axis``, of the
    logits' shape and dtype, and a validity mask where the labels' range cannot be checked.

    Host labels are range-checked (:func:`_check_host_labels`). Device labels are not checked
    (that would stall the device); the caller poisons the positions the mask marks invalid.
    ``positions`` is the logits' shape without the class axis.
    """
    if labels.shape != positions:  # a tuple (torch.Size is one) compares as one
        msg = (
            f"{where}: integer labels must have shape "
            f"{_layout(logits.ndim, axis, classes=False)} = {positions} to match logits "
            f"{tuple(logits.shape)}, got {tuple(labels.shape)}"
        )
        raise ValueError(msg)
    # Every integer dtype counts to 127; beyond, narrow labels (uint8 for 300 classes) widen.
    if classes > 128 and classes - 1 > xp.iinfo(labels.dtype).max:
        labels = xp.astype(labels, xp.int64)
    trailing = len(positions) - axis  # axes after the class axis
    class_range = _class_range(classes, labels, xp, trailing=trailing)
    # labels[..., None] for classes last (inline: the common case pays no function call)
    expanded = labels[..., None] if not trailing else xp.expand_dims(labels, axis=axis)
    q = xp.astype(expanded == class_range, logits.dtype)
    valid = None
    if is_host_array(labels):
        _check_host_labels(labels, classes, xp, where=where)
    else:
        valid = (labels >= 0) & (labels < classes)
    if smoothing:
        q *= 1.0 - smoothing
        q += smoothing / classes
    return q, valid


def _check_host_labels(labels: Array, classes: int, xp: Namespace, *, where: str) -> None:
    """Raise ValueError unless every host label lies in [0, ``classes``).

    Compares the labels' own minimum and maximum, in their integer dtype: exact for any batch
    size (a count of valid labels summed in the logits' float32 stops at 2**24).
    """
    if 0 in labels.shape:  # no labels: no minimum to read
        return
    low, high = int(xp.min(labels)), int(xp.max(labels))
    if low < 0 or high >= classes:
        msg = (
            f"{where}: class labels must lie in [0, {classes}) for logits with {classes} "
            f"classes, got labels from {low} to {high}"
        )
        raise ValueError(msg)


def _check_pair(prediction: Array, target: Array, *, where: str, reduction: str) -> Namespace:
    xp = check_array(prediction, caller=where, what="prediction")
    check_array(target, caller=where, what="target")
    check_floating(prediction, xp, caller=where, what="prediction")
    check_same_placement(target, namespace_of(target), prediction, xp, caller=where,
                         what="target", ref_what="prediction")
    check_floating(target, xp, caller=where, what="target")
    if tuple(prediction.shape) != tuple(target.shape):
        msg = (
            f"{where}: prediction has shape {tuple(prediction.shape)} but target has shape "
            f"{tuple(target.shape)}; they must match"
        )
        raise ValueError(msg)
    _check_same_dtype(target, prediction, where)
    check_reduction(reduction, where)
    return xp


def _check_same_dtype(target: Array, prediction: Array, where: str) -> None:
    if target.dtype != prediction.dtype:
        msg = (
            f"{where}: target dtype {target.dtype} differs from the prediction's "
            f"{prediction.dtype}; cast the target (no silent promotion)"
        )
        raise TypeError(msg)


def check_reduction(reduction: Any, where: str) -> str:
    """``reduction`` if it is ``"mean"`` or ``"sum"``; TypeError for a non-string, else
    ValueError, each naming ``where`` and the value."""
    if not isinstance(reduction, str):
        msg = (f"{where}: reduction must be the string 'mean' or 'sum', got {reduction!r} "
               f"of type {type(reduction).__name__}")
        raise TypeError(msg)
    if reduction not in _REDUCTIONS:
        msg = f"{where}: reduction must be 'mean' or 'sum', got {reduction!r}"
        raise ValueError(msg)
    return reduction


def check_label_smoothing(value: Any, where: str) -> float:
    """``value`` as a float ε ∈ [0, 1] (see :func:`nnbackend._checks.check_probability`)."""
    return check_probability(value, caller=where, name="label_smoothing")


_CLASS_RANGES: dict[tuple[int, int, int, Any, Any], Array] = {}


def _class_range(classes: int, labels: Array, xp: Namespace, *, trailing: int = 0) -> Array:
    """0, 1, …, C−1 in the labels' dtype and device, of shape (C, 1, …, 1) with ``trailing``
    unit axes (the axes after the class axis), cached (it is read, never written; never one
    made inside a jax.jit trace, which belongs to that trace)."""
    dev = device_of(labels, xp)
    key = (id(xp), classes, trailing, labels.dtype, dev)
    try:
        return _CLASS_RANGES[key]
    except KeyError:
        found = _make_class_range(classes, labels, xp, trailing, dev)
        if is_traced(found):  # made inside a jax.jit trace: it belongs to that trace alone
            return found
        if len(_CLASS_RANGES) > 64:
            _CLASS_RANGES.clear()
        _CLASS_RANGES[key] = found
        return found
    except TypeError:  # an unhashable dtype or device
        return _make_class_range(classes, labels, xp, trailing, dev)


def _make_class_range(classes: int, labels: Array, xp: Namespace, trailing: int,
                      dev: Any) -> Array:
    values = xp.arange(classes, dtype=labels.dtype, device=dev)
    return xp.reshape(values, (classes,) + (1,) * trailing) if trailing else values


def _mean_scale(reduction: str, count: int, where: str) -> float:
    """1/n for ``"mean"`` (refusing an empty batch, whose mean is undefined), 1 for ``"sum"``."""
    if reduction == "sum":
        return 1.0
    if count == 0:
        msg = f"{where}: the mean over an empty batch is undefined (use reduction='sum')"
        raise ValueError(msg)
    return 1.0 / count
