"""The affine map z = x Wᵀ + b and its backward pass (Array API only).

Shapes: x (N, in), W (out, in), b (out,), z (N, out). Per sample this is the seed's
z = W a + b; the batch is stacked along the first axis.

Backward, with δ = ∂L/∂z of shape (N, out)::

    ∂L/∂W = δᵀ x         (out, in)
    ∂L/∂b = Σₙ δₙ         (out,)
    ∂L/∂x = δ W          (N, in)
"""

from __future__ import annotations

from .._native import matmul_into, sum_into, summer
from .._typing import Array, Namespace

__all__ = ["linear", "linear_backward"]


def linear(x: Array, W: Array, b: Array | None = None, /, *, xp: Namespace | None = None) -> Array:
    """z = x Wᵀ + b for x (N, in), W (out, in), b (out,) or None; returns z (N, out)."""
    z = x @ W.T
    if b is not None:
        z += b  # z is a fresh array: add the bias in place rather than allocate another
    return z


def linear_backward(
    dz: Array,
    x: Array,
    W: Array,
    /,
    *,
    input_grad: bool = True,
    bias_grad: bool = True,
    xp: Namespace,
    weight_grad_out: Array | None = None,
    bias_grad_out: Array | None = None,
) -> tuple[Array | None, Array, Array | None]:
    """Gradients of z = x Wᵀ + b given δ = ∂L/∂z.

    Returns ``(dx, dW, db)``: ∂L/∂x = δ W (``None`` unless ``input_grad``), ∂L/∂W = δᵀ x,
    ∂L/∂b = Σₙ δₙ (``None`` unless ``bias_grad``). With ``weight_grad_out`` (an array of W's
    shape), ∂L/∂W is written into it where the backend can (then ``dW`` is that array), and
    likewise ∂L/∂b into ``bias_grad_out``.
    """
    if weight_grad_out is not None and matmul_into(dz.T, x, weight_grad_out, xp):
        dW = weight_grad_out
    else:
        dW = dz.T @ x
    if not bias_grad:
        db = None
    elif bias_grad_out is not None and sum_into(dz, bias_grad_out, axis=0, xp=xp):
        db = bias_grad_out
    else:
        db = summer(xp)(dz, axis=0)
    dx = dz @ W if input_grad else None
    return dx, dW, db
