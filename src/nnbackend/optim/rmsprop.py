"""RMSprop: gradient steps scaled by a running root mean square of the gradients."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .._checks import check_flag, check_fraction, check_nonnegative, check_positive
from .._typing import Array, Namespace
from .optimizer import Optimizer, ParamsLike, zeros_like

__all__ = ["RMSprop", "rmsprop_update"]


def rmsprop_update(
    param: Array,
    grad: Array,
    square_avg: Array,
    grad_avg: Array | None,
    momentum_buffer: Array | None,
    /,
    *,
    lr: float,
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
    lr, alpha, eps, momentum, weight_decay : float
    xp : namespace
        The arrays' Array API namespace.

    Returns
    -------
    (param, square_avg, grad_avg, momentum_buffer)
        Updated in place where the backend allows (the same objects) and rebound where arrays
        are immutable: store them back.
    """
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
    params : Module or iterable of Parameter
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
        Pack parameters, gradients and state into one flat buffer per device and dtype where
        the backend has views (NumPy, CuPy, PyTorch), so that a step costs a constant number of
        array calls; False keeps the per-parameter reference path.

    State per parameter: ``"step"``, ``"square_avg"``, and ``"grad_avg"`` (centered) and
    ``"momentum_buffer"`` (momentum) as needed, each the shape of θ.
    """

    _hyperparameter_names: ClassVar[tuple[str, ...]] = (
        "lr", "alpha", "eps", "momentum", "weight_decay", "centered",
    )
    _state_names: ClassVar[tuple[str, ...]] = ("square_avg", "grad_avg", "momentum_buffer")

    alpha: float
    eps: float
    momentum: float
    weight_decay: float
    centered: bool

    def __init__(
        self,
        params: ParamsLike,
        lr: float = 1e-2,
        *,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        centered: bool = False,
        flat: bool = True,
    ) -> None:
        values = self._validate({
            "lr": lr, "alpha": alpha, "eps": eps, "momentum": momentum,
            "weight_decay": weight_decay, "centered": centered,
        })
        super().__init__(params, flat=flat)
        self._apply(values)

    @classmethod
    def _validate(cls, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
        where, h = cls.__name__, hyperparameters
        return {
            "lr": check_nonnegative(h["lr"], where=where, name="lr"),
            "alpha": check_fraction(h["alpha"], where=where, name="alpha"),
            "eps": check_positive(h["eps"], where=where, name="eps"),
            "momentum": check_fraction(h["momentum"], where=where, name="momentum"),
            "weight_decay": check_nonnegative(h["weight_decay"], where=where,
                                              name="weight_decay"),
            "centered": check_flag(h["centered"], where=where, name="centered"),
        }

    def _expected_state(self, hyperparameters: Mapping[str, Any]) -> tuple[str, ...]:
        names = ["square_avg"]
        if hyperparameters["centered"]:
            names.append("grad_avg")
        if hyperparameters["momentum"] != 0.0:
            names.append("momentum_buffer")
        return tuple(names)

    def _update(self, data: Array, grad: Array, state: dict[str, Any], step: int,
                xp: Namespace) -> Array:
        if "square_avg" not in state:
            state["square_avg"] = zeros_like(data, xp=xp)
        grad_avg = state.get("grad_avg") if self.centered else None
        if self.centered and grad_avg is None:
            grad_avg = zeros_like(data, xp=xp)
        buf = state.get("momentum_buffer") if self.momentum != 0.0 else None
        if self.momentum != 0.0 and buf is None:
            buf = zeros_like(data, xp=xp)
        data, state["square_avg"], grad_avg, buf = rmsprop_update(
            data, grad, state["square_avg"], grad_avg, buf, lr=self.lr, alpha=self.alpha,
            eps=self.eps, momentum=self.momentum, weight_decay=self.weight_decay, xp=xp,
        )
        if grad_avg is not None:
            state["grad_avg"] = grad_avg
        if buf is not None:
            state["momentum_buffer"] = buf
        return data
