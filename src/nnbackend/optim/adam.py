"""Adam, its AMSGrad variant, and AdamW (decoupled weight decay)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from .._typing import Array, Namespace
from ._hyper import (
    Hyperparameter,
    flag,
    nonnegative,
    pair_of_fractions,
    positive,
    with_defaults,
)
from ._scalars import NUMBER, adam_factors, in_dtype_of
from .optimizer import Optimizer, maximum_into, zeros_like

__all__ = ["Adam", "AdamW", "adam_update"]


def adam_update(
    param: Array,
    grad: Array,
    m: Array,
    v: Array,
    vmax: Array | None,
    /,
    *,
    step: int | Array,
    lr: float | Array,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    xp: Namespace,
) -> tuple[Array, Array, Array, Array | None]:
    """One Adam (AMSGrad, AdamW) step on one array; the reference rule of :class:`Adam`.

    With t = ``step`` (the count *including* this update) and g = ∇θL (+ λ θ for Adam's L2
    weight decay)::

        m ← β1 m + (1 − β1) g
        v ← β2 v + (1 − β2) g²
        v_max ← max(v_max, v)                      (AMSGrad; then v_max replaces v below)
        m̂ = m / (1 − β1ᵗ),   v̂ = v / (1 − β2ᵗ)
        θ ← θ − α m̂ / (√v̂ + ε)

    AdamW (``decoupled_weight_decay``) leaves g alone and first shrinks θ ← θ (1 − α λ).

    Parameters
    ----------
    param, grad : array
        θ and ∇θL, same shape, dtype and device. ``grad`` is never modified.
    m, v : array
        First and second moment estimates (zeros before the first step).
    vmax : array or None
        Running maximum of v for AMSGrad; None for plain Adam.
    step : int or 0-d integer array
        t ≥ 1. A Python int has the bias corrections 1 − βᵗ computed on the host (float64);
        a 0-d array on the parameter's device has them computed there, as −expm1(t ln β) in
        the learning rate's dtype (else the parameter's), so that a compiled step takes t as
        an input (see :mod:`nnbackend.optim._scalars`).
    lr : float or 0-d floating array
        α, a Python float or a 0-d array on the parameter's device (a compiled step's input).
    beta1, beta2, eps, weight_decay : float
    decoupled_weight_decay : bool
    xp : namespace
        The arrays' Array API namespace.

    Returns
    -------
    (param, m, v, vmax)
        Updated in place where the backend allows (the same objects) and rebound where arrays
        are immutable: store them back.
    """
    # Eager (Python numbers: every factor on the host); the class test first, as it is cheaper
    numbers = (step.__class__ is int and lr.__class__ is float) or (
        isinstance(step, NUMBER) and isinstance(lr, NUMBER))
    if weight_decay != 0.0:
        if not decoupled_weight_decay:
            grad = grad + weight_decay * param  # a temporary: the caller's grad stays as it is
        elif isinstance(lr, NUMBER):
            param *= 1.0 - lr * weight_decay
        else:
            param *= in_dtype_of(1.0 - lr * weight_decay, param, xp)
    m *= beta1
    m += (1.0 - beta1) * grad
    v *= beta2
    v += (1.0 - beta2) * (grad * grad)
    if vmax is not None:
        vmax = maximum_into(vmax, v, xp=xp)
    # √v̂ + ε = √v / √(1 − β2ᵗ) + ε, ε added after the correction, as in the paper and PyTorch
    denom = xp.sqrt(v if vmax is None else vmax)
    if numbers:
        denom /= math.sqrt(1.0 - beta2**step)
        denom += eps
        update = m / denom
        update *= lr / (1.0 - beta1**step)
    else:
        root, factor = adam_factors(step, lr, beta1, beta2, param, xp)
        denom /= root
        denom += eps
        update = m / denom
        update *= factor
    param -= update
    return param, m, v, vmax


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), with optional AMSGrad and L2 weight decay.

    With g = ∇θL + λ θ, learning rate α and t the parameter's step count (from 1)::

        m ← β1 m + (1 − β1) g            v ← β2 v + (1 − β2) g²
        m̂ = m / (1 − β1ᵗ)                v̂ = v / (1 − β2ᵗ)
        θ ← θ − α m̂ / (√v̂ + ε)

    AMSGrad keeps v_max ← max(v_max, v) and uses it in place of v in v̂. This is PyTorch's
    ``torch.optim.Adam``; for decoupled weight decay use :class:`AdamW`.

    Parameters
    ----------
    params : Module, iterable of Parameter, or iterable of dict
        The parameters, or parameter groups (dicts with ``"params"`` and any of the settings
        below, which override the keyword arguments for that group; see :class:`Optimizer`).
    lr : float
        α ≥ 0.
    betas : (float, float)
        β1, β2 in [0, 1).
    eps : float
        ε > 0, added to √v̂.
    weight_decay : float
        λ ≥ 0: λ θ added to the gradient (L2 regularisation, which the moments then rescale).
    amsgrad : bool
    flat : bool
        Step the parameters in their arena's flat buffers (packing those in no arena yet)
        where the backend has views (NumPy, CuPy, PyTorch), so that a step costs a constant
        number of array calls per run of parameters; False keeps the per-parameter reference
        path.

    The settings are declared once, in ``HYPERPARAMETERS``. State per parameter: ``"step"``,
    ``"m"``, ``"v"`` and with AMSGrad ``"vmax"`` (each the shape of θ).
    """

    HYPERPARAMETERS: ClassVar[tuple[Hyperparameter, ...]] = (
        Hyperparameter("lr", 1e-3, nonnegative, positional=True),
        Hyperparameter("betas", (0.9, 0.999), pair_of_fractions),
        Hyperparameter("eps", 1e-8, positive),
        Hyperparameter("weight_decay", 0.0, nonnegative),
        Hyperparameter("amsgrad", False, flag),
    )
    _state_names: ClassVar[tuple[str, ...]] = ("m", "v", "vmax")
    decoupled_weight_decay: ClassVar[bool] = False
    """Whether λ shrinks θ directly (AdamW) instead of being added to the gradient."""

    def _expected_state(self, values: Mapping[str, Any]) -> tuple[str, ...]:
        return ("m", "v", "vmax") if values["amsgrad"] else ("m", "v")

    def _update(self, data: Array, grad: Array, state: dict[str, Any], step: int,
                xp: Namespace, hyper: Mapping[str, Any]) -> Array:
        amsgrad = hyper["amsgrad"]
        if "m" not in state:
            state["m"] = zeros_like(data, xp=xp)
            state["v"] = zeros_like(data, xp=xp)
        vmax = state.get("vmax")
        if amsgrad and vmax is None:
            vmax = zeros_like(data, xp=xp)
        beta1, beta2 = hyper["betas"]
        data, state["m"], state["v"], vmax = adam_update(
            data, grad, state["m"], state["v"], vmax if amsgrad else None,
            step=step, lr=hyper["lr"], beta1=beta1, beta2=beta2, eps=hyper["eps"],
            weight_decay=hyper["weight_decay"],
            decoupled_weight_decay=self.decoupled_weight_decay, xp=xp,
        )
        if amsgrad:
            state["vmax"] = vmax
        return data


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    The gradient g = ∇θL carries no penalty; instead each step first shrinks the parameter::

        θ ← θ (1 − α λ)
        m ← β1 m + (1 − β1) g            v ← β2 v + (1 − β2) g²
        θ ← θ − α m̂ / (√v̂ + ε)          (m̂, v̂ bias-corrected as in :class:`Adam`)

    This is PyTorch's ``torch.optim.AdamW``, including its default λ = 0.01. Parameters and
    state are those of :class:`Adam`: its ``HYPERPARAMETERS`` with another default for
    ``weight_decay``, and ``decoupled_weight_decay`` set.
    """

    HYPERPARAMETERS: ClassVar[tuple[Hyperparameter, ...]] = with_defaults(
        Adam.HYPERPARAMETERS, weight_decay=1e-2
    )
    decoupled_weight_decay: ClassVar[bool] = True
