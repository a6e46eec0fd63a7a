"""Stochastic gradient descent, with (Nesterov) momentum and L2 weight decay."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .._checks import check_flag, check_fraction, check_nonnegative
from .._typing import Array, Namespace
from .optimizer import Optimizer, ParamsLike, zeros_like

__all__ = ["SGD", "sgd_update"]


def sgd_update(
    param: Array,
    grad: Array,
    velocity: Array | None,
    /,
    *,
    lr: float,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> tuple[Array, Array | None]:
    """One SGD step on one array; the reference rule of :class:`SGD`.

    With g = ∇θL + λ θ (λ = ``weight_decay``)::

        plain      θ ← θ − α g                               (velocity is None)
        momentum   v ← β v + α g;  θ ← θ − v
        Nesterov   v ← β v + α g;  θ ← θ − (α g + β v)

    Parameters
    ----------
    param, grad : array
        θ and ∇θL, same shape, dtype and device. ``grad`` is never modified.
    velocity : array or None
        The momentum buffer v (zeros before the first step), or None for plain SGD.
    lr, momentum, weight_decay : float
        α, β and λ, Python floats.
    nesterov : bool

    Returns
    -------
    (param, velocity)
        Updated in place where the backend allows (the same objects) and rebound where arrays
        are immutable: store both back.
    """
    if weight_decay != 0.0:
        step = param * weight_decay  # a temporary: the caller's grad stays as it is
        step += grad
        step *= lr
    else:
        step = lr * grad
    if velocity is None:
        param -= step
        return param, velocity
    velocity *= momentum
    velocity += step
    if nesterov:
        step += momentum * velocity
        param -= step
    else:
        param -= velocity
    return param, velocity


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    With g = ∇θL + λ θ, learning rate α and momentum β, each step computes::

        momentum = 0:   θ ← θ − α g
        momentum > 0:   v ← β v + α g;   θ ← θ − v                (v starts at 0)
        nesterov:       v ← β v + α g;   θ ← θ − (α g + β v)

    The momentum form is the seed's: the learning rate sits *inside* the velocity v. PyTorch
    keeps it outside, b ← β b + g; θ ← θ − α b (Nesterov: θ ← θ − α (g + β b)). While α is
    constant the two are the same algorithm (v = α b, and the trajectories agree to rounding);
    when a schedule changes α they differ: here a new α applies to the new gradient only and
    the accumulated velocity keeps the step sizes it was built with, while PyTorch rescales
    the whole accumulated buffer at once.

    Parameters
    ----------
    params : Module or iterable of Parameter
    lr : float
        α ≥ 0 (required).
    momentum : float
        β in [0, 1).
    nesterov : bool
        Nesterov momentum (requires momentum > 0).
    weight_decay : float
        λ ≥ 0: L2 penalty (λ/2)‖θ‖² added to the loss, i.e. λ θ added to the gradient.
    flat : bool
        Pack parameters, gradients and state into one flat buffer per device and dtype where
        the backend has views (NumPy, CuPy, PyTorch), so that a step costs a constant number of
        array calls; False keeps the per-parameter reference path.

    State per parameter: ``"step"`` and, with momentum, ``"velocity"`` (v, shape of θ).
    """

    _hyperparameter_names: ClassVar[tuple[str, ...]] = (
        "lr", "momentum", "nesterov", "weight_decay",
    )
    _state_names: ClassVar[tuple[str, ...]] = ("velocity",)

    momentum: float
    nesterov: bool
    weight_decay: float

    def __init__(
        self,
        params: ParamsLike,
        lr: float,
        *,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        flat: bool = True,
    ) -> None:
        values = self._validate({
            "lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay,
        })
        super().__init__(params, flat=flat)
        self._apply(values)

    @classmethod
    def _validate(cls, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
        where, h = cls.__name__, hyperparameters
        out = {
            "lr": check_nonnegative(h["lr"], where=where, name="lr"),
            "momentum": check_fraction(h["momentum"], where=where, name="momentum"),
            "nesterov": check_flag(h["nesterov"], where=where, name="nesterov"),
            "weight_decay": check_nonnegative(h["weight_decay"], where=where,
                                              name="weight_decay"),
        }
        if out["nesterov"] and out["momentum"] == 0.0:
            msg = f"{where}: nesterov=True needs momentum > 0, got momentum={h['momentum']!r}"
            raise ValueError(msg)
        return out

    def _expected_state(self, hyperparameters: Mapping[str, Any]) -> tuple[str, ...]:
        return ("velocity",) if hyperparameters["momentum"] != 0.0 else ()

    def _update(self, data: Array, grad: Array, state: dict[str, Any], step: int,
                xp: Namespace) -> Array:
        velocity = state.get("velocity")
        if velocity is None and self.momentum != 0.0:
            velocity = zeros_like(data, xp=xp)
        data, velocity = sgd_update(
            data, grad, velocity, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov,
            weight_decay=self.weight_decay,
        )
        if velocity is not None:
            state["velocity"] = velocity
        return data
