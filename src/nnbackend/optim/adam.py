"""Adam, its AMSGrad variant, and AdamW (decoupled weight decay)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from .._checks import check_flag, check_fraction, check_nonnegative, check_positive
from .._typing import Array, Namespace
from .optimizer import Optimizer, ParamsLike, maximum_into, zeros_like

__all__ = ["Adam", "AdamW", "adam_update"]


def adam_update(
    param: Array,
    grad: Array,
    m: Array,
    v: Array,
    vmax: Array | None,
    /,
    *,
    step: int,
    lr: float,
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
    step : int
        t ≥ 1; the bias corrections 1 − βᵗ are computed in Python.
    lr, beta1, beta2, eps, weight_decay : float
    decoupled_weight_decay : bool
    xp : namespace
        The arrays' Array API namespace.

    Returns
    -------
    (param, m, v, vmax)
        Updated in place where the backend allows (the same objects) and rebound where arrays
        are immutable: store them back.
    """
    if weight_decay != 0.0:
        if decoupled_weight_decay:
            param *= 1.0 - lr * weight_decay
        else:
            grad = grad + weight_decay * param  # a temporary: the caller's grad stays as it is
    m *= beta1
    m += (1.0 - beta1) * grad
    v *= beta2
    v += (1.0 - beta2) * (grad * grad)
    if vmax is not None:
        vmax = maximum_into(vmax, v, xp=xp)
    # √v̂ + ε = √v / √(1 − β2ᵗ) + ε, ε added after the correction, as in the paper and PyTorch
    denom = xp.sqrt(v if vmax is None else vmax)
    denom /= math.sqrt(1.0 - beta2**step)
    denom += eps
    update = m / denom
    update *= lr / (1.0 - beta1**step)
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
    params : Module or iterable of Parameter
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
        Pack parameters, gradients and state into one flat buffer per device and dtype where
        the backend has views (NumPy, CuPy, PyTorch), so that a step costs a constant number of
        array calls; False keeps the per-parameter reference path.

    State per parameter: ``"step"``, ``"m"``, ``"v"`` and with AMSGrad ``"vmax"`` (each the
    shape of θ).
    """

    _hyperparameter_names: ClassVar[tuple[str, ...]] = (
        "lr", "betas", "eps", "weight_decay", "amsgrad",
    )
    _state_names: ClassVar[tuple[str, ...]] = ("m", "v", "vmax")
    _decoupled: ClassVar[bool] = False

    betas: tuple[float, float]
    eps: float
    weight_decay: float
    amsgrad: bool

    def __init__(
        self,
        params: ParamsLike,
        lr: float = 1e-3,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        flat: bool = True,
    ) -> None:
        values = self._validate({
            "lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
            "amsgrad": amsgrad,
        })
        super().__init__(params, flat=flat)
        self._apply(values)

    @classmethod
    def _validate(cls, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
        where, h = cls.__name__, hyperparameters
        betas = h["betas"]
        if isinstance(betas, str) or not hasattr(betas, "__len__") or len(betas) != 2:
            msg = f"{where}: betas must be a pair (beta1, beta2), got {betas!r}"
            raise TypeError(msg)
        return {
            "lr": check_nonnegative(h["lr"], where=where, name="lr"),
            "betas": (
                check_fraction(betas[0], where=where, name="betas[0]"),
                check_fraction(betas[1], where=where, name="betas[1]"),
            ),
            "eps": check_positive(h["eps"], where=where, name="eps"),
            "weight_decay": check_nonnegative(h["weight_decay"], where=where,
                                              name="weight_decay"),
            "amsgrad": check_flag(h["amsgrad"], where=where, name="amsgrad"),
        }

    def _expected_state(self, hyperparameters: Mapping[str, Any]) -> tuple[str, ...]:
        return ("m", "v", "vmax") if hyperparameters["amsgrad"] else ("m", "v")

    def _update(self, data: Array, grad: Array, state: dict[str, Any], step: int,
                xp: Namespace) -> Array:
        if "m" not in state:
            state["m"] = zeros_like(data, xp=xp)
            state["v"] = zeros_like(data, xp=xp)
        vmax = state.get("vmax")
        if self.amsgrad and vmax is None:
            vmax = zeros_like(data, xp=xp)
        beta1, beta2 = self.betas
        data, state["m"], state["v"], vmax = adam_update(
            data, grad, state["m"], state["v"], vmax if self.amsgrad else None,
            step=step, lr=self.lr, beta1=beta1, beta2=beta2, eps=self.eps,
            weight_decay=self.weight_decay, decoupled_weight_decay=self._decoupled, xp=xp,
        )
        if self.amsgrad:
            state["vmax"] = vmax
        return data


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    The gradient g = ∇θL carries no penalty; instead each step first shrinks the parameter::

        θ ← θ (1 − α λ)
        m ← β1 m + (1 − β1) g            v ← β2 v + (1 − β2) g²
        θ ← θ − α m̂ / (√v̂ + ε)          (m̂, v̂ bias-corrected as in :class:`Adam`)

    This is PyTorch's ``torch.optim.AdamW``, including its default λ = 0.01. Parameters and
    state are those of :class:`Adam`.
    """

    _decoupled: ClassVar[bool] = True

    def __init__(
        self,
        params: ParamsLike,
        lr: float = 1e-3,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        flat: bool = True,
    ) -> None:
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, flat=flat)
