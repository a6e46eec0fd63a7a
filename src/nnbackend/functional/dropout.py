"""Inverted dropout and its backward pass (Array API only), as ``torch.nn.functional.dropout``.

In training, each element is kept with probability 1 − p and the kept ones are scaled so the
expectation is unchanged; the backward pass applies the same mask and scale::

    m ~ Bernoulli(1 − p)  (elementwise, boolean, from a :class:`nnbackend.random.Generator`)
    y     = x · m · s,     s = 1 / (1 − p)  (rounded once to x's dtype)
    ∂L/∂x = ∂L/∂y · m · s

Edge cases follow PyTorch: in eval mode (``training=False``) and for p = 0, y = x and no mask
(``None``) is returned; for p = 1, y = 0 and ∂L/∂x = 0 exactly, also where x or ∂L/∂y is
infinite or NaN (no 0 · ∞). Only 0 < p < 1 in training draws from the generator (one draw per
call, whatever the shape), so eval passes do not move the random stream.

The mask is made on x's device from integer operations (no host transfer) and nothing is read
back (no host synchronisation); the same generator state gives the same mask on every backend
and for every dtype. Shapes: any; ``y``, ``mask``, ``dy`` and ``dx`` share x's shape.
"""

from __future__ import annotations

import array_api_compat

from .._checks import check_probability
from .._native import masked
from .._typing import Array, Namespace
from ..random import Generator

__all__ = ["dropout", "dropout_backward"]


def _check_p(p: object, where: str) -> float:
    """p, the probability of zeroing an element, as a float in [0, 1]."""
    return check_probability(p, caller=where, name="p")


def dropout(
    x: Array, p: float, *, generator: Generator, xp: Namespace | None = None,
    training: bool = True,
) -> tuple[Array, Array | None]:
    """Inverted dropout: y = x · m / (1 − p), m ~ Bernoulli(1 − p).

    Parameters
    ----------
    x : array
        Floating input, any shape.
    p : float
        Probability of zeroing an element, 0 ≤ p ≤ 1.
    generator : nnbackend.random.Generator
        The stream the mask comes from (advanced by one draw when 0 < p < 1 in training).
    xp : namespace, optional
        ``x``'s namespace (looked up when omitted).
    training : bool
        False: the identity (evaluation mode), without drawing.

    Returns
    -------
    y : array
        Same shape, dtype and device as ``x``.
    mask : array of bool or None
        The kept elements (pass it to :func:`dropout_backward`); None where y = x.
    """
    p = _check_p(p, "dropout")
    if not isinstance(generator, Generator):
        msg = (
            "dropout: generator must be an nnbackend.random.Generator, got "
            f"{type(generator).__name__}"
        )
        raise TypeError(msg)
    if not training or p == 0.0:
        return x, None
    xp = xp or array_api_compat.array_namespace(x)
    if not xp.isdtype(x.dtype, "real floating"):
        msg = f"dropout: x must be a floating array, got dtype {x.dtype}"
        raise TypeError(msg)
    device = array_api_compat.device(x)
    if p == 1.0:
        return xp.zeros_like(x), xp.zeros(x.shape, dtype=xp.bool, device=device)
    mask = generator.bernoulli_mask(x.shape, 1.0 - p, xp=xp, device=device)
    y = masked(x, mask, xp)
    y *= 1.0 / (1.0 - p)  # y is ours: scaled in place (rebound on JAX)
    return y, mask


def dropout_backward(
    dy: Array, mask: Array | None, p: float, *, xp: Namespace | None = None
) -> Array:
    """∂L/∂x = ∂L/∂y · m / (1 − p), with the ``mask`` :func:`dropout` returned.

    ``mask=None`` (evaluation mode or p = 0) passes ``dy`` through; p = 1 gives zeros.
    """
    p = _check_p(p, "dropout_backward")
    if mask is None:
        return dy
    xp = xp or array_api_compat.array_namespace(dy, mask)
    if mask.shape != dy.shape:
        msg = f"dropout_backward: mask of shape {mask.shape} for a gradient of shape {dy.shape}"
        raise ValueError(msg)
    if p == 1.0:
        return xp.zeros_like(dy)
    dx = masked(dy, mask, xp)
    dx *= 1.0 / (1.0 - p)
    return dx
