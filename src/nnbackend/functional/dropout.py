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

Channel-wise dropout (:func:`dropout2d`, as ``torch.nn.functional.dropout2d``) zeroes whole
channels: one Bernoulli draw per (sample, channel), broadcast over the spatial axes::

    x (N, C, H, W):  m ~ Bernoulli(1 − p) of shape (N, C, 1, 1),  y = x · m · s
    x (C, H, W):     one sample without a batch axis, m of shape (C, 1, 1)

The mask it returns has that broadcasting shape (pass it to :func:`dropout2d_backward`); the
generator advances by one draw per call as for :func:`dropout`, and the same state gives the
same channels on every backend. (PyTorch 2's ``dropout2d`` still reads a 3-d input as
(N, C, L), with a warning that this will change to the unbatched (C, H, W) done here.)
"""

from __future__ import annotations

from typing import Any

import array_api_compat

from .._checks import check_probability
from .._native import masked
from .._typing import Array, Namespace
from ..random import Generator

__all__ = ["dropout", "dropout2d", "dropout2d_backward", "dropout_backward"]


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


def dropout2d(
    x: Array, p: float = 0.5, *, generator: Generator, training: bool = True,
    xp: Namespace | None = None,
) -> tuple[Array, Array | None]:
    """Channel-wise inverted dropout: y = x · m / (1 − p), one m ~ Bernoulli(1 − p) per channel.

    Parameters
    ----------
    x : array
        Floating, (N, C, H, W), or (C, H, W) for one sample without a batch axis.
    p : float
        Probability of zeroing a channel, 0 ≤ p ≤ 1.
    generator : nnbackend.random.Generator
        The stream the mask comes from (advanced by one draw when 0 < p < 1 in training).
    training : bool
        False: the identity (evaluation mode), without drawing.
    xp : namespace, optional
        ``x``'s namespace (looked up when omitted).

    Returns
    -------
    y : array
        Same shape, dtype and device as ``x``.
    mask : array of bool or None
        The kept channels, of shape (N, C, 1, 1) (or (C, 1, 1)), broadcasting against x; None
        where y = x.
    """
    p = _check_p(p, "dropout2d")
    if not isinstance(generator, Generator):
        msg = (
            "dropout2d: generator must be an nnbackend.random.Generator, got "
            f"{type(generator).__name__}"
        )
        raise TypeError(msg)
    if x.ndim not in (3, 4):
        msg = (f"dropout2d: expected input of shape (N, C, H, W) or (C, H, W), got shape "
               f"{tuple(x.shape)} (dropout drops single elements of any shape)")
        raise ValueError(msg)
    if not training or p == 0.0:
        return x, None
    xp = xp or array_api_compat.array_namespace(x)
    if not xp.isdtype(x.dtype, "real floating"):
        msg = f"dropout2d: x must be a floating array, got dtype {x.dtype}"
        raise TypeError(msg)
    device = array_api_compat.device(x)
    channels = tuple(x.shape[:-2])  # (N, C) or (C,): one draw each
    shape = (*channels, 1, 1)
    if p == 1.0:
        return xp.zeros_like(x), xp.zeros(shape, dtype=xp.bool, device=device)
    mask = xp.reshape(generator.bernoulli_mask(channels, 1.0 - p, xp=xp, device=device), shape)
    return x * _channel_factor(mask, p, x.dtype, xp), mask


def dropout2d_backward(
    dy: Array, mask: Array | None, p: float, *, xp: Namespace | None = None
) -> Array:
    """∂L/∂x = ∂L/∂y · m / (1 − p), with the channel ``mask`` :func:`dropout2d` returned.

    ``mask=None`` (evaluation mode or p = 0) passes ``dy`` through; p = 1 gives zeros.
    """
    p = _check_p(p, "dropout2d_backward")
    if mask is None:
        return dy
    xp = xp or array_api_compat.array_namespace(dy, mask)
    if mask.ndim != dy.ndim or tuple(mask.shape[:-2]) != tuple(dy.shape[:-2]) \
            or tuple(mask.shape[-2:]) != (1, 1):
        msg = (f"dropout2d_backward: mask of shape {tuple(mask.shape)} for a gradient of shape "
               f"{tuple(dy.shape)} (expected {(*dy.shape[:-2], 1, 1)})")
        raise ValueError(msg)
    if p == 1.0:
        return xp.zeros_like(dy)
    return dy * _channel_factor(mask, p, dy.dtype, xp)


def _channel_factor(mask: Array, p: float, dtype: Any, xp: Namespace) -> Array:
    """m / (1 − p) per channel, in ``dtype`` (a few values): the data then takes one product.

    1 / (1 − p) is rounded once to ``dtype`` and multiplied by exactly 0 or 1, so y = x · s
    rounds as :func:`dropout`'s (x · m) · s does.
    """
    return xp.astype(mask, dtype) * (1.0 / (1.0 - p))
