"""Gradient clipping by global norm, on the device."""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import device

from .._checks import check_nonnegative, check_positive, describe_placement, namespace_of
from .._typing import Array
from ..layers.module import Module, Parameter

__all__ = ["clip_grad_norm"]


def clip_grad_norm(parameters: Any, max_norm: float, *, eps: float = 1e-6) -> Array:
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``.

    ::

        total = √(Σₚ ‖gₚ‖²)                          over every parameter with a gradient
        scale = min(1, max_norm / (total + ε))
        gₚ ← scale · gₚ

    Everything stays on the device: the comparison with ``max_norm`` is an ``xp.minimum``, so
    the gradients are always multiplied (by exactly 1 when they are within the bound) and the
    host never waits for the device. This is ``torch.nn.utils.clip_grad_norm_`` with the L2
    norm.

    Parameters
    ----------
    parameters : Module, Parameter or iterable of Parameter
        Parameters whose ``.grad`` is None are skipped. The gradients must share one namespace
        and device.
    max_norm : float
        The bound, ≥ 0 (``math.inf`` only measures the norm).
    eps : float
        ε > 0, keeps the division finite when every gradient is zero.

    Returns
    -------
    array
        The total norm *before* clipping, a 0-d array on the gradients' device (zero, on the
        first parameter's device, when no parameter has a gradient).
    """
    where = "clip_grad_norm"
    if isinstance(parameters, Module):
        params = parameters.parameters()
    elif isinstance(parameters, Parameter):
        params = [parameters]
    else:
        params = list(parameters)
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            msg = f"{where}: parameters[{i}] must be a Parameter, got {type(p).__name__}"
            raise TypeError(msg)
    if not params:
        msg = f"{where}: got no parameters"
        raise ValueError(msg)
    if isinstance(max_norm, int | float) and math.isinf(max_norm) and max_norm > 0:
        bound = math.inf
    else:
        bound = check_nonnegative(max_norm, where=where, name="max_norm")
    eps = check_positive(eps, where=where, name="eps")

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        ref = params[0].data
        return namespace_of(ref).zeros((), dtype=ref.dtype, device=device(ref))
    first = grads[0]
    xp, dev = namespace_of(first), device(first)
    for p in params:
        g = p.grad
        if g is not None and g is not first and (namespace_of(g) is not xp or device(g) != dev):
            msg = (
                f"{where}: the gradient of {p!r} is {describe_placement(g)} but the first "
                f"gradient is {describe_placement(first)}; all gradients must share one device"
            )
            raise ValueError(msg)

    total_sq = xp.sum(first * first)
    for g in grads[1:]:
        total_sq = total_sq + xp.sum(g * g)
    total = xp.sqrt(total_sq)
    scale = bound / (total + eps)
    scale = xp.minimum(scale, xp.ones_like(scale))
    cast: dict[Any, Array] = {scale.dtype: scale}
    for p in params:
        if p.grad is not None:
            dtype = p.grad.dtype
            if dtype not in cast:  # mixed precisions: scale each gradient in its own dtype
                cast[dtype] = xp.astype(scale, dtype)
            p.grad *= cast[dtype]
    return total
