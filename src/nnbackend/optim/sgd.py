"""Stochastic gradient descent, with (Nesterov) momentum and L2 weight decay."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from array_api_compat import array_namespace

from .._typing import Array, Namespace
from ._hyper import REQUIRED, Hyperparameter, flag, fraction, nonnegative
from ._scalars import NUMBER, in_dtype_of
from .optimizer import Optimizer, zeros_like

__all__ = ["SGD", "sgd_update"]


def sgd_update(
    param: Array,
    grad: Array,
    velocity: Array | None,
    /,
    *,
    lr: float | Array,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    xp: Namespace | None = None,
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
    lr : float or 0-d floating array
        α: a Python float, or a 0-d array on the parameter's device (a compiled step's input;
        cast once to the parameter's dtype, the rounding a Python float gets).
    momentum, weight_decay : float
        β and λ, Python floats.
    nesterov : bool
    xp : namespace, optional
        The arrays' namespace (looked up when ``lr`` is an array and it is omitted).

    Returns
    -------
    (param, velocity)
        Updated in place where the backend allows (the same objects) and rebound where arrays
        are immutable: store both back.
    """
    if lr.__class__ is not float and not isinstance(lr, NUMBER):  # a 0-d array (cheap test)
        lr = in_dtype_of(lr, param, xp or array_namespace(param))
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
    params : Module, iterable of Parameter, or iterable of dict
        The parameters, or parameter groups (dicts with ``"params"`` and any of the settings
        below, which override the keyword arguments for that group; see :class:`Optimizer`).
    lr : float
        α ≥ 0 (required: here or in every group).
    momentum : float
        β in [0, 1).
    nesterov : bool
        Nesterov momentum (requires momentum > 0).
    weight_decay : float
        λ ≥ 0: L2 penalty (λ/2)‖θ‖² added to the loss, i.e. λ θ added to the gradient.
    flat : bool
        Step the parameters in their arena's flat buffers (packing those in no arena yet)
        where the backend has views (NumPy, CuPy, PyTorch), so that a step costs a constant
        number of array calls per run of parameters; False keeps the per-parameter reference
        path.

    The settings are declared once, in ``HYPERPARAMETERS`` (``nesterov`` needs momentum, in
    every group). State per parameter: ``"step"`` and, with momentum, ``"velocity"`` (v, shape
    of θ).
    """

    HYPERPARAMETERS: ClassVar[tuple[Hyperparameter, ...]] = (
        Hyperparameter("lr", REQUIRED, nonnegative, positional=True),
        Hyperparameter("momentum", 0.0, fraction),
        Hyperparameter("nesterov", False, flag),
        Hyperparameter("weight_decay", 0.0, nonnegative),
    )
    _state_names: ClassVar[tuple[str, ...]] = ("velocity",)

    @classmethod
    def _check_together(cls, values: Mapping[str, Any], *, where: str) -> None:
        if values["nesterov"] and values["momentum"] == 0.0:
            msg = f"{where}: nesterov=True needs momentum > 0, got momentum={values['momentum']!r}"
            raise ValueError(msg)

    def _expected_state(self, values: Mapping[str, Any]) -> tuple[str, ...]:
        return ("velocity",) if values["momentum"] != 0.0 else ()

    def _update(self, data: Array, grad: Array, state: dict[str, Any], step: int,
                xp: Namespace, hyper: Mapping[str, Any]) -> Array:
        momentum = hyper["momentum"]
        velocity = state.get("velocity")
        if velocity is None and momentum != 0.0:
            velocity = zeros_like(data, xp=xp)
        data, velocity = sgd_update(
            data, grad, velocity, lr=hyper["lr"], momentum=momentum,
            nesterov=hyper["nesterov"], weight_decay=hyper["weight_decay"], xp=xp,
        )
        if velocity is not None:
            state["velocity"] = velocity
        return data
