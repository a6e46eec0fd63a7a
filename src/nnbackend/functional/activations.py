"""Activation functions and their backward passes (Array API only).

Every ``*_backward(dy, y)`` takes the upstream gradient ∂L/∂y and the activation's *output* y,
which is all each derivative needs, so a layer retains one array per call:

=============  ====================================  ===================================
function       forward  y = f(x)                     backward  ∂L/∂x
=============  ====================================  ===================================
identity       y = x                                 dy
relu           y = max(x, 0)                         dy · [y > 0]
leaky_relu     y = x if x > 0 else s·x               dy if y > 0 else s·dy
sigmoid        y = 1 / (1 + e⁻ˣ)                     dy · y (1 − y)
tanh           y = tanh x                            dy · (1 − y²)
softmax        y = eˣ / Σ eˣ  (along ``axis``)       y ⊙ (dy − Σ dy ⊙ y)
log_softmax    y = x − log Σ eˣ                      dy − eʸ Σ dy
=============  ====================================  ===================================

Three activations need more than y for their derivative, so they follow the design page's
§11 convention instead: ``name_forward(x) -> (y, saved)`` and ``name_backward(dy, saved)``
(``saved`` holds x and a factor the forward computed anyway); ``name(x)`` returns y:

=============  ===================================================  ============================
function       forward  y = f(x)                                    derivative f′(x)
=============  ===================================================  ============================
gelu           x Φ(x),  Φ(x) = ½ erfc(−x/√2)  (``"none"``)           Φ(x) + x φ(x)
               x σ(2u), u = √(2/π) (x + 0.044715 x³)  (``"tanh"``)  s + 2 x s (1 − s) u′, s = σ(2u)
silu           x σ(x)                                               σ(x) (1 + x (1 − σ(x)))
softplus       log(1 + e^{βx}) / β,  x where βx > threshold         σ(βx),  1 where βx > threshold
=============  ===================================================  ============================

φ is the standard normal density. GELU's exact form takes erfc from
:mod:`nnbackend.functional.special` (the standard has no erf): ½ erfc(−x/√2) is accurate for
negative x too, where PyTorch's ½ (1 + erf(x/√2)) cancels (it returns 0 for x < −8.3 in float64
where x Φ(x) is −5e−17 at x = −8.3); the tanh form's ½ (1 + tanh u) is written σ(2u) for the
same reason. In float32 on NumPy and on libraries without an erf of their own,
``gelu_forward`` runs :func:`nnbackend.functional.special.normal_cdf_slope32` instead: one kernel
gives y and f′(x) (``ActivationSaved.slope``; the backward is one product), x Φ(x) within 7 ulp
of mpmath down to the underflow, in ~6 ms per million values on NumPy against SciPy's ~17.
Softplus is max(βx, 0) + log1p(e^{−|βx|}) (no overflow, accurate for any βx),
PyTorch's reversion to x above ``threshold`` kept.

Shapes are preserved: ``x``, ``y`` and ``dy`` share one shape. Results keep the input's
namespace, dtype and device.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from array_api_compat import array_namespace

from .._native import into_kernels, masked, positive_part
from .._typing import Array, Namespace
from .special import blockwise, erfc, normal_cdf_slope32, standard_float32

__all__ = [
    "ActivationSaved",
    "gelu",
    "gelu_backward",
    "gelu_forward",
    "identity",
    "identity_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "log_softmax",
    "log_softmax_backward",
    "relu",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "sigmoid_into",
    "silu",
    "silu_backward",
    "silu_forward",
    "softmax",
    "softmax_backward",
    "softplus",
    "softplus_backward",
    "softplus_forward",
    "tanh",
    "tanh_backward",
]


def identity(x: Array, /, *, xp: Namespace | None = None) -> Array:
    """y = x (returns ``x`` itself)."""
    return x


def identity_backward(dy: Array, y: Array, /, *, xp: Namespace | None = None) -> Array:
    """∂L/∂x = ∂L/∂y."""
    return dy


def relu(x: Array, /, *, xp: Namespace | None = None, overwrite: bool = False) -> Array:
    """y = max(x, 0); with ``overwrite``, in x's storage where the library allows it (x may
    then be returned: the caller must own it)."""
    return positive_part(x, xp or array_namespace(x), in_place=overwrite)


def relu_backward(dy: Array, y: Array, /, *, xp: Namespace | None = None,
                  overwrite: bool = False) -> Array:
    """∂L/∂x = ∂L/∂y · [y > 0] (the subgradient at 0 is taken as 0, as in PyTorch); with
    ``overwrite``, in dy's storage where the library allows it.

    A multiplication by the indicator (cast to the gradient's dtype where the library cannot
    multiply by booleans): on NumPy ~18× faster than ``where`` on large arrays.
    """
    xp = xp or array_namespace(dy, y)
    return masked(dy, y > 0.0, xp, in_place=overwrite)


def leaky_relu(
    x: Array, /, negative_slope: float = 0.01, *, xp: Namespace | None = None
) -> Array:
    """y = x where x > 0, else ``negative_slope`` · x."""
    xp = xp or array_namespace(x)
    return xp.where(x > 0.0, x, negative_slope * x)


def leaky_relu_backward(
    dy: Array, y: Array, /, negative_slope: float = 0.01, *, xp: Namespace | None = None
) -> Array:
    """∂L/∂x = ∂L/∂y where y > 0, else ``negative_slope`` · ∂L/∂y (valid for a positive slope)."""
    xp = xp or array_namespace(dy, y)
    return xp.where(y > 0.0, dy, negative_slope * dy)


def sigmoid(x: Array, /, *, xp: Namespace | None = None) -> Array:
    """σ(x) = 1 / (1 + e⁻ˣ), accurate to a few ulp over the whole floating range.

    With e = exp(−|x|) ∈ (0, 1]:

    - x ≥ 0:  σ(x) = 1 / (1 + e)
    - x < 0:  σ(x) = e / (1 + e)

    No ``exp`` of a positive argument, so nothing overflows and no clipping is needed. Neither
    branch subtracts: the relative error is that of ``exp`` plus two roundings (at most 4 ulp,
    measured in ``tests/test_accuracy.py``), down to σ(x) ≈ eˣ deep into the subnormals.
    (The tanh form ½ tanh(½ x) + ½ cancels for x < 0: it loses every digit below x ≈ −17 in
    float32 and x ≈ −37 in float64.) NaN propagates; σ(±∞) = 1 and 0.
    """
    xp = xp or array_namespace(x)
    e = xp.abs(x)
    e *= -1.0  # e is ours: negate in place
    e = xp.exp(e)  # rebound at once: |x|'s buffer is freed for the allocations that follow
    return _sigmoid_from_exp(e, xp.astype(x >= 0.0, x.dtype), xp)


def _sigmoid_from_exp(e: Array, step: Array, xp: Namespace) -> Array:
    """σ(x) from e = exp(−|x|) and step = [x ≥ 0] in x's dtype; overwrites both.

    The numerator, 1 for x ≥ 0 and e for x < 0, is max(e, step) (e ≤ 1; NaN propagates):
    arithmetic rather than ``where``, which on NumPy costs ~4 ns per element on an
    unpredictable mask, more than the rest of the function.
    """
    step = xp.maximum(e, step)
    e += 1.0
    step /= e
    return step


def sigmoid_into(x: Array, /, *, out: Array, scratch: Array, xp: Namespace | None = None
                 ) -> None:
    """out ← σ(x), the formula of :func:`sigmoid` (the same passes, bit for bit) in place.

    ``out`` and ``scratch`` are mutable arrays of x's shape and dtype (``out`` may be ``x``
    itself; both are overwritten). On NumPy every pass writes into them through
    ``_native.into_kernels``: no allocation, for loops that activate a buffer step after step
    (the recurrent layers' gates). Elsewhere ``out[...] = sigmoid(x)``.
    """
    xp = xp or array_namespace(x)
    k = into_kernels(xp)
    if not k.native:
        out[...] = sigmoid(x, xp=xp)
        return
    k.greater_equal(x, 0.0, out=scratch)  # step = [x ≥ 0]
    k.abs(x, out=out)  # e = exp(−|x|)
    k.negative(out, out=out)
    k.exp(out, out=out)
    k.maximum(out, scratch, out=scratch)  # numerator max(e, step)
    k.add(out, 1.0, out=out)
    k.divide(scratch, out, out=out)


def sigmoid_backward(dy: Array, y: Array, /, *, xp: Namespace | None = None) -> Array:
    """∂L/∂x = ∂L/∂y · σ (1 − σ), from the forward output y = σ(x)."""
    return dy * (y * (1.0 - y))


def tanh(x: Array, /, *, xp: Namespace | None = None) -> Array:
    """y = tanh x."""
    xp = xp or array_namespace(x)
    return xp.tanh(x)


def tanh_backward(dy: Array, y: Array, /, *, xp: Namespace | None = None) -> Array:
    """∂L/∂x = ∂L/∂y · (1 − y²)."""
    return dy * (1.0 - y * y)


def softmax(x: Array, /, *, axis: int = -1, xp: Namespace | None = None) -> Array:
    """yᵢ = exp(xᵢ − m) / Σⱼ exp(xⱼ − m), m = maxⱼ xⱼ (shifted so no exp overflows)."""
    xp = xp or array_namespace(x)
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    e /= xp.sum(e, axis=axis, keepdims=True)
    return e


def softmax_backward(
    dy: Array, y: Array, /, *, axis: int = -1, xp: Namespace | None = None
) -> Array:
    """∂L/∂xᵢ = yᵢ (∂L/∂yᵢ − Σⱼ ∂L/∂yⱼ yⱼ)."""
    xp = xp or array_namespace(dy, y)
    return y * (dy - xp.sum(dy * y, axis=axis, keepdims=True))


def log_softmax(x: Array, /, *, axis: int = -1, xp: Namespace | None = None) -> Array:
    """yᵢ = (xᵢ − m) − log Σⱼ exp(xⱼ − m), m = maxⱼ xⱼ."""
    xp = xp or array_namespace(x)
    shifted = x - xp.max(x, axis=axis, keepdims=True)
    shifted -= xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))
    return shifted


def log_softmax_backward(
    dy: Array, y: Array, /, *, axis: int = -1, xp: Namespace | None = None
) -> Array:
    """∂L/∂xᵢ = ∂L/∂yᵢ − exp(yᵢ) Σⱼ ∂L/∂yⱼ."""
    xp = xp or array_namespace(dy, y)
    return dy - xp.exp(y) * xp.sum(dy, axis=axis, keepdims=True)


# --------------------------------------------------------------------------------------------
# GELU, SiLU, Softplus: the backward needs x (the §11 convention: *_forward -> (y, saved))

_GELU_FORMS = ("none", "tanh")
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715


class ActivationSaved(NamedTuple):
    """What :func:`gelu_backward`, :func:`silu_backward` and :func:`softplus_backward` need."""

    x: Array
    """The input x (for Softplus: βx)."""
    factor: Array
    """Φ(x) (GELU "none"), σ(2u) (GELU "tanh"), σ(x) (SiLU); None for Softplus."""
    form: str
    """``"none"``/``"tanh"`` (GELU), ``"silu"``, ``"softplus"``."""
    beta: float = 1.0
    threshold: float = 20.0
    slope: Array | None = None
    """f′(x) itself where the forward computed it (GELU's exact form in float32), else None."""


def check_approximate(approximate: object, where: str = "gelu") -> str:
    """``approximate`` if it is GELU's ``"none"`` or ``"tanh"``, else ValueError naming it."""
    if approximate not in _GELU_FORMS:
        msg = f"{where}: approximate must be 'none' or 'tanh', got {approximate!r}"
        raise ValueError(msg)
    return str(approximate)


def gelu(x: Array, /, approximate: str = "none", *, xp: Namespace | None = None) -> Array:
    """GELU(x) = x Φ(x) (``approximate="none"``, PyTorch's default) or its tanh approximation
    x σ(2u), u = √(2/π)(x + 0.044715 x³) (``"tanh"``), as ``torch.nn.functional.gelu``."""
    return gelu_forward(x, approximate, xp=xp)[0]


def gelu_forward(
    x: Array, /, approximate: str = "none", *, xp: Namespace | None = None
) -> tuple[Array, ActivationSaved]:
    """:func:`gelu` and what :func:`gelu_backward` needs (x and Φ(x), or x and σ(2u))."""
    form = check_approximate(approximate)
    xp = xp or array_namespace(x)
    if form == "none" and standard_float32(x, xp):
        # One pass of the float32 kernel gives y and f′ = Φ + x φ (the backward's one product)
        y, slope = blockwise(normal_cdf_slope32, x, 2, 4, xp)
        return y, ActivationSaved(x, None, form, slope=slope)
    if form == "none":
        cdf = erfc(x * (-math.sqrt(0.5)), xp=xp)
        cdf *= 0.5
    else:
        u = x * x
        u *= _GELU_CUBIC
        u += 1.0
        u *= x
        u *= 2.0 * _SQRT_2_OVER_PI  # 2u
        cdf = sigmoid(u, xp=xp)
    return x * cdf, ActivationSaved(x, cdf, form)


def gelu_backward(dy: Array, saved: ActivationSaved, /, *, xp: Namespace | None = None) -> Array:
    """∂L/∂x = ∂L/∂y · (Φ(x) + x φ(x)), or for the tanh form ∂L/∂y · (s + 2 x s (1 − s) u′)
    with s = σ(2u), u′ = √(2/π)(1 + 3 · 0.044715 x²)."""
    xp = xp or array_namespace(dy)
    if saved.slope is not None:
        return dy * saved.slope
    x, cdf = saved.x, saved.factor
    if saved.form == "none":
        slope = x * x
        slope *= -0.5
        slope = xp.exp(slope)
        slope *= x
        slope *= 1.0 / math.sqrt(2.0 * math.pi)  # x φ(x)
    else:
        slope = x * x
        slope *= 3.0 * _GELU_CUBIC
        slope += 1.0
        slope *= (2.0 * _SQRT_2_OVER_PI) * x
        slope *= cdf * (1.0 - cdf)  # 2 x s (1 − s) u′
    slope += cdf
    return dy * slope


def silu(x: Array, /, *, xp: Namespace | None = None) -> Array:
    """SiLU(x) = x σ(x) (the swish), as ``torch.nn.functional.silu``."""
    return silu_forward(x, xp=xp)[0]


def silu_forward(
    x: Array, /, *, xp: Namespace | None = None
) -> tuple[Array, ActivationSaved]:
    """:func:`silu` and what :func:`silu_backward` needs (x and σ(x))."""
    s = sigmoid(x, xp=xp)
    return x * s, ActivationSaved(x, s, "silu")


def silu_backward(dy: Array, saved: ActivationSaved, /, *, xp: Namespace | None = None) -> Array:
    """∂L/∂x = ∂L/∂y · σ(x) (1 + x (1 − σ(x)))."""
    s = saved.factor
    slope = 1.0 - s
    slope *= saved.x
    slope += 1.0
    slope *= s
    return dy * slope


def softplus(
    x: Array, /, beta: float = 1.0, threshold: float = 20.0, *, xp: Namespace | None = None
) -> Array:
    """Softplus(x) = log(1 + e^{βx}) / β, and x where βx > ``threshold`` (PyTorch's reversion
    to the identity), as ``torch.nn.functional.softplus``."""
    return softplus_forward(x, beta, threshold, xp=xp)[0]


def softplus_forward(
    x: Array, /, beta: float = 1.0, threshold: float = 20.0, *, xp: Namespace | None = None
) -> tuple[Array, ActivationSaved]:
    """:func:`softplus` and what :func:`softplus_backward` needs (βx).

    log(1 + e^z) is written max(z, 0) + log1p(e^{−|z|}), z = βx: no exp of a positive number
    (nothing overflows whatever the threshold) and no cancellation for z ≪ 0.
    """
    xp = xp or array_namespace(x)
    z = x * beta if beta != 1.0 else x
    e = xp.abs(z)
    e *= -1.0
    e = xp.log1p(xp.exp(e))
    e += xp.maximum(z, 0.0)
    if beta != 1.0:
        e /= beta
    return xp.where(z > threshold, x, e), ActivationSaved(z, None, "softplus", beta, threshold)


def softplus_backward(
    dy: Array, saved: ActivationSaved, /, *, xp: Namespace | None = None
) -> Array:
    """∂L/∂x = ∂L/∂y · σ(βx), and ∂L/∂y where βx > ``threshold``."""
    xp = xp or array_namespace(dy)
    z = saved.x
    return xp.where(z > saved.threshold, dy, dy * sigmoid(z, xp=xp))

