"""RMSprop: gradient steps scaled by a running root mean square of the gradients."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .._typing import Array, Namespace
from ._hyper import Hyperparameter, flag, fraction, nonnegative, positive
from ._scalars import NUMBER, in_dtype_of
from .optimizer import Optimizer, zeros_like

__all__ = ["RMSprop", "rmsprop_update"]


def rmsprop_update(
    param: Array,
    grad: Array,
    square_avg: Array,
    grad_avg: Array | None,
    momentum_buffer: Array | None,
    /,
    *,
    lr: float | Array,
    alpha: float,
    eps: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    xp: Namespace,
) -> tuple[Array, Array, Array | None, Array | None]:
    """One RMSprop step on one array; the reference rule of :class:`RMSprop`.

    With g = ∇θL + λ θ::

        s ← α s + (1 − α) g²                      (square_avg)
        ḡ ← α ḡ + (1 − α) g                       (grad_avg, centered only)
        r = √s + ε,  or  √(s − ḡ²) + ε when centered
        θ ← θ − lr g / r                          (momentum_buffer is None)
        b ← μ b + g / r;  θ ← θ − lr b            (momentum)

    Parameters
    ----------
    param, grad : array
        θ and ∇θL, same shape, dtype and device. ``grad`` is never modified.
    square_avg : array
        s (zeros before the first step).
    grad_avg : array or None
        ḡ for the centered variant, else None.
    momentum_buffer : array or None
        b when momentum is used, else None.
    lr : float or 0-d floating array
        A Python float, or a 0-d array on the parameter's device (a compiled step's input;
        cast once to the parameter's dtype, the rounding a Python float gets).
    alpha, eps, momentum, weight_decay : float
    xp : namespace
        The arrays' Array API namespace.

    Returns
    -------
    (param, square_avg, grad_avg, momentum_buffer)
        Updated in place where the backend allows (the same objects) and rebound where arrays
        are immutable: store them back.
    """
    if lr.__class__ is not float and not isinstance(lr, NUMBER):  # a 0-d array (cheap test)
        lr = in_dtype_of(lr, param, xp)
    if weight_decay != 0.0:
        grad = grad + weight_decay * param  # a temporary: the caller's grad stays as it is
    square_avg *= alpha
    square_avg += (1.0 - alpha) * (grad * grad)
    if grad_avg is not None:
        grad_avg *= alpha
        grad_avg += (1.0 - alpha) * grad
        # s − ḡ² ≥ 0 in exact arithmetic; rounding can dip below zero once g stops changing
        denom = xp.sqrt(xp.maximum(square_avg - grad_avg * grad_avg, 0.0))
    else:
        denom = xp.sqrt(square_avg)
    denom += eps
    if momentum_buffer is not None:
        momentum_buffer *= momentum
        momentum_buffer += grad / denom
        param -= lr * momentum_buffer
    else:
        update = grad / denom
        update *= lr
        param -= update
    return param, square_avg, grad_avg, momentum_buffer


class RMSprop(Optimizer):
    """RMSprop (Hinton, 2012), as in PyTorch's ``torch.optim.RMSprop``.

    With g = ∇θL + λ θ and learning rate η::

        s ← α s + (1 − α) g²
        θ ← θ − η g / (√s + ε)

    ``centered=True`` also tracks ḡ ← α ḡ + (1 − α) g and divides by √(s − ḡ²) + ε (an
    estimate of the gradient's standard deviation rather than its root mean square). With
    momentum μ > 0: b ← μ b + g / (√s + ε); θ ← θ − η b (PyTorch's form, learning rate outside
    the buffer).

    Parameters
    ----------
    params : Module, iterable of Parameter, or iterable of dict
        The parameters, or parameter groups (dicts with ``"params"`` and any of the settings
        below, which override the keyword arguments for that group; see :class:`Optimizer`).
    lr : float
        η ≥ 0.
    alpha : float
        Smoothing constant α in [0, 1).
    eps : float
        ε > 0.
    momentum : float
        μ in [0, 1).
    weight_decay : float
        λ ≥ 0, added to the gradient as λ θ.
    centered : bool
    flat : bool
        Step the parameters in their arena's flat buffers (packing those in no arena yet)
        where the backend has views (NumPy, CuPy, PyTorch), so that a step costs a constant
        number of array calls per run of parameters; False keeps the per-parameter reference
        path.

    The settings are declared once, in ``HYPERPARAMETERS``. State per parameter: ``"step"``,
    ``"square_avg"``, and ``"grad_avg"`` (centered) and ``"momentum_buffer"`` (momentum) as
    needed, each the shape of θ.
    """

    HYPERPARAMETERS: ClassVar[tuple[Hyperparameter, ...]] = (
        Hyperparameter("lr", 1e-2, nonnegative, positional=True),
        Hyperparameter("alpha", 0.99, fraction),
        Hyperparameter("eps", 1e-8, positive),
        Hyperparameter("momentum", 0.0, fraction),
        Hyperparameter("weight_decay", 0.0, nonnegative),
        Hyperparameter("centered", False, flag),
    )
    _state_names: ClassVar[tuple[str, ...]] = ("square_avg", "grad_avg", "momentum_buffer")

    def _expected_state(self, values: Mapping[str, Any]) -> tuple[str, ...]:
        names = ["square_avg"]
        if values["centered"]:
            names.append("grad_avg")
        if values["momentum"] != 0.0:
            names.append("momentum_buffer")
        return tuple(names)

    def _update(self, data: Array, grad: Array, state: dict[str, Any], step: int,
                xp: Namespace, hyper: Mapping[str, Any]) -> Array:
        centered, momentum = hyper["centered"], hyper["momentum"]
        if "square_avg" not in state:
            state["square_avg"] = zeros_like(data, xp=xp)
        grad_avg = state.get("grad_avg") if centered else None
        if centered and grad_avg is None:
            grad_avg = zeros_like(data, xp=xp)
        buf = state.get("momentum_buffer") if momentum != 0.0 else None
        if momentum != 0.0 and buf is None:
            buf = zeros_like(data, xp=xp)
        data, state["square_avg"], grad_avg, buf = rmsprop_update(
            data, grad, state["square_avg"], grad_avg, buf, lr=hyper["lr"],
            alpha=hyper["alpha"], eps=hyper["eps"], momentum=momentum,
            weight_decay=hyper["weight_decay"], xp=xp,
        )
        if grad_avg is not None:
            state["grad_avg"] = grad_avg
        if buf is not None:
            state["momentum_buffer"] = buf
        return data
