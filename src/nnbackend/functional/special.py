"""The error function and its complement in standard operations: erf and erfc.

The Array API standard has no ``erf``; GELU's exact form (x Φ(x), Φ(x) = ½ erfc(−x/√2)) needs
it to a few ulp over the whole line, tails included. :func:`erf` and :func:`erfc` evaluate
the rational approximations of fdlibm's ``s_erf.c`` (Sun Microsystems, 1993; the coefficients
below are its published constants, under its notice: "Permission to use, copy, modify, and
distribute this software is freely granted, provided that this notice is preserved."),
written elementwise over four ranges of a = |x|:

=====================  =====================================================================
a < 0.84375            erf(x) = x + x·P(x²)/Q(x²);  erfc = 1 − erf (x < ¼), else
                       ½ − (x·P/Q + (x − ½)) (no cancellation of 1 − erf)
0.84375 ≤ a < 1.25     s = a − 1: erf(x) = ±(c + P₁(s)/Q₁(s)), c = 0.845062911510467529297
                       (erf(1) rounded to 24 bits); erfc = (1 − c) − P₁/Q₁ (x > 0),
                       1 + (c + P₁/Q₁) (x < 0)
1.25 ≤ a < 28          erfc(a) = exp(−z² − 0.5625) · exp((z − a)(z + a) + R(1/a²)/S(1/a²)) / a,
                       R/S one of two fits (below and above 1/0.35); erf = ±(1 − erfc(a)),
                       erfc(−a) = 2 − erfc(a)
a ≥ 28                 erfc(x) = 0 (x > 0) or 2, erf(x) = ±1: the tail's formula at a = 28
                       underflows to 0 (and 1 − erfc rounds to 1 from a ≈ 6 on)
=====================  =====================================================================

z is a with its low bits cleared (fdlibm clears the low 32 bits of the double), so that z² and
z² + 0.5625 are exact and e^{−a²} = e^{−z² − 0.5625} · e^{(z − a)(z + a) + 0.5625} carries no
rounding of a² (which would cost a² ulp: 700 ulp at a = 26). The standard has no bit access,
so z comes from Veltkamp's split, t = a·(2^s + 1), z = t − (t − a), which keeps the top
p − s bits of a (p = 53 or 24 significant bits; s = p/2 + 2). fdlibm's approximations are
accurate to 2⁻⁵⁷ or better; evaluated in float64 the results are within ~1 ulp of erf and
erfc (erfc's tail relative), and evaluated in float32 (same coefficients, float32 arithmetic,
as on JAX without 64-bit types) within a few float32 ulp; ``tests/test_gelu.py`` measures both
against mpmath on a dense grid with tails and subnormal arguments.

Each range is evaluated on the input clamped into it (``clip``), so no branch sees a value
that would overflow, divide by zero or warn, and every branch value is finite; the ranges are
then selected by products with their masks (a·[m] + b·[¬m], exact for finite values, and
faster than ``where`` on NumPy); erf is evaluated at |x| and takes x's sign by ``copysign``.
NaN propagates, erf(±0) = ±0, erf(±∞) = ±1, erfc(+∞) = 0, erfc(−∞) = 2.

float32 takes a shorter path with one range (``_gauss_tail32``): for a ≥ 0,

    Φ(−a) = e^{−a²/2} R(a),   R(u) = Φ(−u) e^{u²/2} ≈ P₄(u)/Q₅(u) on [0, 15],

a rational fitted for this module (relative error 6.3e−9, 0.11 ulp; positive coefficients, so
Horner's rule on u ≥ 0 does not cancel); erfc(a) = 2 Φ(−a√2) = 2 e^{−a²} R(a√2) (R varies
slowly: u's rounding costs under an ulp), erfc(−a) = 2 − erfc(a), erf = ±(1 − erfc(a)) for
a ≥ ½ and x P(x²) (a fitted quartic in x², relative error 1.4e−9) below. The exponential is
e^{−c z²} e^{c (z − a)(z + a)} with z the top 10 bits of a (Veltkamp), as above. GELU's
kernel (:func:`normal_cdf_slope32`) gives x Φ(x) and Φ(x) + x φ(x) in one pass, Φ relative to
its own size in the left tail. Measured against mpmath on dense float32 grids with tails and
subnormals: erf 2 ulp, erfc 6, x Φ(x) 7 (NumPy's float32 exp is itself off by up to 2.4 ulp).
On NumPy the kernels run block by block into preallocated buffers (:func:`blockwise`): the
arithmetic is ~40 passes of ~0.1 ms per million float32 values, where a fresh 4 MB temporary
per pass costs ~2.5 ms of page faults.

The libraries that have an erf of their own (PyTorch, JAX, CuPy; SciPy for NumPy float64) use
it instead (:func:`nnbackend._native.special`): every range evaluated everywhere, the float64
standard path costs over a hundred array operations (measured on a million float32 values:
42 ms of CPU against SciPy's 17–23 ms, which evaluates each value in float64 one at a time; the
float32 path above takes ~9 ms for GELU forward and backward, PyTorch's fused GELU ~2.8 ms).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import array_api_compat

from .._libraries import library_of
from .._native import masked, special, ufunc_into
from .._typing import Array, Namespace

__all__ = ["erf", "erf_standard", "erfc", "erfc_standard", "normal_cdf_slope32",
           "standard_float32"]

_ERX = 8.45062911510467529297e-01
# erf on [0, 0.84375]: erf(x) = x + x·P(x²)/Q(x²)
_PP = (1.28379167095512558561e-01, -3.25042107247001499370e-01, -2.84817495755985104766e-02,
       -5.77027029648944159157e-03, -2.37630166566501626084e-05)
_QQ = (1.0, 3.97917223959155352819e-01, 6.50222499887672944485e-02,
       5.08130628187576562776e-03, 1.32494738004321644526e-04, -3.96022827877536812320e-06)
# erf in [0.84375, 1.25]: erf(1 + s) = c + P₁(s)/Q₁(s)
_PA = (-2.36211856075265944077e-03, 4.14856118683748331666e-01, -3.72207876035701323847e-01,
       3.18346619901161753674e-01, -1.10894694282396677476e-01, 3.54783043256182359371e-02,
       -2.16637559486879084300e-03)
_QA = (1.0, 1.06420880400844228286e-01, 5.40397917702171048937e-01,
       7.18286544141962662868e-02, 1.26171219808761642112e-01, 1.36370839120290507362e-02,
       1.19844998467991074170e-02)
# erfc in [1.25, 1/0.35]: R₁/S₁ of 1/x²
_RA = (-9.86494403484714822705e-03, -6.93858572707181764372e-01, -1.05586262253232909814e+01,
       -6.23753324503260060396e+01, -1.62396669462573470355e+02, -1.84605092906711035994e+02,
       -8.12874355063065934246e+01, -9.81432934416914548592e+00)
_SA = (1.0, 1.96512716674392571292e+01, 1.37657754143519042600e+02, 4.34565877475229228821e+02,
       6.45387271733267880336e+02, 4.29008140027567833386e+02, 1.08635005541779435134e+02,
       6.57024977031928170135e+00, -6.04244152148580987438e-02)
# erfc in [1/0.35, 28]: R₂/S₂ of 1/x²
_RB = (-9.86494292470009928597e-03, -7.99283237680523006574e-01, -1.77579549177547519889e+01,
       -1.60636384855821916062e+02, -6.37566443368389627722e+02, -1.02509513161107724954e+03,
       -4.83519191608651397019e+02)
_SB = (1.0, 3.03380607434824582924e+01, 3.25792512996573918826e+02, 1.53672958608443695994e+03,
       3.19985821950859553908e+03, 2.55305040643316442583e+03, 4.74528541206955367215e+02,
       -2.24409524465858183362e+01)
_SMALL, _MIDDLE, _SWITCH, _TAIL = 0.84375, 1.25, 1.0 / 0.35, 28.0


def erf(x: Array, /, *, xp: Namespace | None = None) -> Array:
    """erf(x) = 2/√π ∫₀ˣ e^{−t²} dt, elementwise (the library's own where it has one, else
    :func:`erf_standard`)."""
    xp = array_api_compat.array_namespace(x) if xp is None else xp
    native = special("erf", xp)
    if native is None or standard_float32(x, xp):
        return erf_standard(x, xp=xp)
    return native(x)


def erfc(x: Array, /, *, xp: Namespace | None = None) -> Array:
    """erfc(x) = 1 − erf(x), accurate in the right tail (relative to erfc's own size)."""
    xp = array_api_compat.array_namespace(x) if xp is None else xp
    native = special("erfc", xp)
    if native is None or standard_float32(x, xp):
        return erfc_standard(x, xp=xp)
    return native(x)


def erf_standard(x: Array, /, *, xp: Namespace) -> Array:
    """:func:`erf` in standard operations only (see the module docstring): erf(|x|), then
    x's sign (erf is odd; −0 and NaN keep theirs); float32 by the one-range form."""
    if x.dtype == xp.float32:
        return blockwise(_erf32, x, 1, 5, xp)[0]
    a = xp.abs(x)
    small = xp.minimum(a, _SMALL)
    y_small = small * _small(small, xp)
    y_small += small
    y_middle = _middle(a, xp)
    y_middle += _ERX
    y = _select(a < _MIDDLE, y_middle, 1.0 - _tail(a, xp), xp)  # 1 − erfc: 1 from |x| ≈ 6
    return xp.copysign(_select(a < _SMALL, y_small, y, xp), x)


def erfc_standard(x: Array, /, *, xp: Namespace) -> Array:
    """:func:`erfc` in standard operations only (see the module docstring)."""
    if x.dtype == xp.float32:
        return blockwise(_erfc32, x, 1, 4, xp)[0]
    a = xp.abs(x)
    xs = xp.clip(x, -_SMALL, _SMALL)
    xy = xs * _small(xs, xp)
    near = 1.0 - (xs + xy)  # x < 1/4: erfc ≥ 0.72, no cancellation
    xy += xs - 0.5
    far = 0.5 - xy  # x in [1/4, 0.84375): ½ − (x P/Q + (x − ½))
    y_small = _select(x < 0.25, near, far, xp)
    positive = _select(a < _MIDDLE, (1.0 - _ERX) - _middle(a, xp), _tail(a, xp), xp)  # erfc(|x|)
    y = _select(x > 0.0, positive, 2.0 - positive, xp)  # erfc(−a) = 2 − erfc(a) ≥ 1.77
    return _select(a < _SMALL, y_small, y, xp)


def _select(mask: Array, a: Array, b: Array, xp: Namespace) -> Array:
    """``a`` where ``mask`` holds, else ``b``, for a and b finite or NaN: a·[mask] + b·[¬mask]
    is exact (a·1 + b·0; every branch is evaluated on inputs clamped into its range, so
    neither holds an infinity) and propagates NaN. On NumPy ``where`` over an unpredictable
    mask costs ~10 ms per million values, the products and sum ~0.6 ms."""
    out = masked(a, mask, xp)
    out += masked(b, ~mask, xp)
    return out


def _small(xs: Array, xp: Namespace) -> Array:
    """P(x²)/Q(x²) for x clamped into [−0.84375, 0.84375]."""
    z = xs * xs
    return _poly(_PP, z) / _poly(_QQ, z)


def _middle(a: Array, xp: Namespace) -> Array:
    """P₁(s)/Q₁(s), s = a − 1 for a clamped into [0.84375, 1.25]."""
    s = xp.clip(a, _SMALL, _MIDDLE) - 1.0
    return _poly(_PA, s) / _poly(_QA, s)


def _tail(a: Array, xp: Namespace) -> Array:
    """erfc(a) for a clamped into [1.25, 28] (the two fits selected at 1/0.35)."""
    at = xp.clip(a, _MIDDLE, _TAIL)
    s = 1.0 / (at * at)
    ratio = _select(at < _SWITCH, _poly(_RA, s) / _poly(_SA, s), _poly(_RB, s) / _poly(_SB, s),
                    xp)
    bits = 53 if xp.finfo(a.dtype).eps < 1e-10 else 24
    t = at * float(2 ** (bits // 2 + 2) + 1)
    z = t - (t - at)  # Veltkamp's split: the top bits of a, so z² + 0.5625 is exact
    return xp.exp(-(z * z) - 0.5625) * xp.exp((z - at) * (z + at) + ratio) / at


def _poly(coefficients: tuple[float, ...], z: Array) -> Array:
    """c₀ + c₁ z + c₂ z² + … by Horner's rule, in place on one new array (rebound where
    arrays are immutable): a temporary per step cost NumPy a fresh allocation each."""
    result = coefficients[-1] * z
    for c in coefficients[-2:0:-1]:
        result += c
        result *= z
    result += coefficients[0]
    return result


# --------------------------------------------------------------------------------------------
# float32: one range, exp(−c a²)·R(a) (see "float32" in the module docstring)

# R(u) = Φ(−u)·e^{u²/2} ≈ P(u)/Q(u) on [0, 15], relative error 6.3e-9 (0.11 float32 ulp);
# fitted for this module (iteratively reweighted least squares on 3000 Chebyshev nodes against
# mpmath, 40 digits); every coefficient positive, so Horner's rule on u ≥ 0 never cancels.
_R32_P = (0.5000000031543016, 0.43929543205040555, 0.18397821931079414, 0.04088424053849301,
          0.0041537051986945545)
_R32_Q = (1.0, 1.6764758716116352, 1.20558558963866, 0.47143270824668326, 0.10248770678589521,
          0.01041168329854023)
# erf(x)/x ≈ P(x²) on |x| ≤ ½, relative error 1.4e-9 (fitted likewise)
_ERF32_SMALL = (1.128379165567268, -0.3761260857187843, 0.11282822790780651,
                -0.026757183054490468, 0.0047179876521046766)
_R32_END = 15.0  # Φ(−15) = 3.7e−51: below float32's smallest subnormal (1.4e−45)
_ERF32_SWITCH = 0.5
_BLOCK = 1 << 17  # NumPy: elements per block (512 kB of float32 per temporary)
_SPLIT32 = float(2**14 + 1)  # Veltkamp's split of a 24-bit significand: keeps the top 10 bits
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def standard_float32(x: Array, xp: Namespace) -> bool:
    """Whether :func:`erf`, :func:`erfc` and GELU take this module's float32 path for ``x``:
    float32 on NumPy (faster than SciPy's erfc, which evaluates every value in float64 one at a
    time: ~23 ms per million against ~4) and on libraries without an erf of their own
    (array-api-strict, the GPU-like device); PyTorch, JAX and CuPy keep theirs."""
    if x.dtype != xp.float32:
        return False
    return library_of(xp).name == "numpy" or special("erfc", xp) is None


def blockwise(kernel: Callable[..., tuple[Array, ...]], x: Array, outputs: int, scratch: int,
              xp: Namespace) -> tuple[Array, ...]:
    """``kernel(x, outs, bufs, xp)`` over the whole of ``x``, or on NumPy block by block.

    On NumPy every operation writes into a preallocated buffer (``outs``: views of the
    ``outputs`` result arrays; ``bufs``: ``scratch`` temporaries of one block), so a call
    allocates its results and a few 512 kB buffers instead of a fresh 4 MB array per
    operation (a fresh large array costs NumPy ~2.5 ms of page faults per million float32
    values once the allocator returns freed memory to the system, twenty times the arithmetic).
    Elsewhere ``outs`` and ``bufs`` are None and each operation returns a new array.
    """
    if library_of(xp).name != "numpy":
        return kernel(x, (None,) * outputs, (None,) * scratch, xp)
    flat = xp.reshape(x, (-1,))
    n = flat.shape[0]
    results = [xp.empty_like(flat) for _ in range(outputs)]
    size = min(n, _BLOCK)
    bufs = [xp.empty((size,), dtype=x.dtype) for _ in range(scratch)]
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        views = tuple(b[:stop - start] for b in bufs)
        kernel(flat[start:stop], tuple(r[start:stop] for r in results), views, xp)
    return tuple(xp.reshape(r, x.shape) for r in results)


def _into(out: Array | None, name: str, *args: Any, xp: Namespace) -> Array:
    """out ← ``name``(*args) where ``out`` is a buffer (NumPy), else a new array."""
    if out is not None and ufunc_into(name, *args, out=out, xp=xp):
        return out
    operation = _OPERATORS.get(name)
    return operation(*args) if operation is not None else getattr(xp, name)(*args)


_OPERATORS: dict[str, Callable[..., Any]] = {
    "add": operator.add, "subtract": operator.sub, "multiply": operator.mul,
    "divide": operator.truediv,
}


def _horner(coefficients: tuple[float, ...], z: Array, out: Array | None, xp: Namespace) -> Array:
    """c₀ + c₁ z + … by Horner's rule into ``out`` (in place after the first product)."""
    result = _into(out, "multiply", z, coefficients[-1], xp=xp)
    for c in coefficients[-2:0:-1]:
        result += c
        result *= z
    result += coefficients[0]
    return result


def _gauss_tail32(a: Array, scale: float, out: Array | None, bufs: tuple[Array | None, ...],
                  xp: Namespace) -> tuple[Array, Array]:
    """(Φ(−a√(2c)), e^{−c a²}) for a ≥ 0, c = ``scale`` (½: the normal tail; 1: ½ erfc(a)).

    Overwrites ``a``. Φ(−u) = e^{−u²/2} R(u) with R's rational fit at u = a√(2c) (R varies
    slowly, so u's rounding costs under an ulp); e^{−c a²} = e^{−c z²} e^{−c (a − z)(a + z)}
    with z the top bits of a (Veltkamp's split): c z² is exact, so a² is never rounded (which
    would cost c a² ulp: 80 at a = 13). The second value is in ``bufs[2]`` (or new).
    """
    s0, s1, s2 = bufs[0], bufs[1], bufs[2]
    a = _into(a, "clip", a, 0.0, _R32_END / math.sqrt(2.0 * scale), xp=xp)
    u = a if scale == 0.5 else _into(s0, "multiply", a, math.sqrt(2.0 * scale), xp=xp)
    ratio = _horner(_R32_P, u, out, xp)
    den = _horner(_R32_Q, u, s1, xp)
    ratio /= den
    t = _into(s2, "multiply", a, _SPLIT32, xp=xp)
    w = _into(s0, "subtract", t, a, xp=xp)
    z = _into(s2, "subtract", t, w, xp=xp)  # the top 10 bits of a
    w = _into(w, "subtract", z, a, xp=xp)
    a += z
    w *= a
    w *= scale  # −c (a − z)(a + z) = c (z − a)(z + a)
    z *= z
    z *= -scale  # −c z², exact
    z = _into(z, "exp", z, xp=xp)
    w = _into(w, "exp", w, xp=xp)
    z *= w  # e^{−c a²}
    ratio *= z
    return ratio, z


def _erfc32(x: Array, outs: tuple[Array | None, ...], bufs: tuple[Array | None, ...],
            xp: Namespace) -> tuple[Array]:
    """erfc(x) = 2 Φ(−|x|√2) for x ≥ 0, 2 − that for x < 0 (≥ 1: no cancellation)."""
    a = _into(bufs[3], "abs", x, xp=xp)
    c, _ = _gauss_tail32(a, 1.0, outs[0], bufs, xp)
    c *= 2.0
    # x < 0: 2 − c = c + [x < 0](2 − 2c)
    flip = _into(bufs[0], "multiply", c, -2.0, xp=xp)
    flip += 2.0
    flip = _masked_into(flip, x < 0.0, bufs[0], xp)
    c += flip
    return (c,)


def _erf32(x: Array, outs: tuple[Array | None, ...], bufs: tuple[Array | None, ...],
           xp: Namespace) -> tuple[Array]:
    """erf(x) = x P(x²) for |x| < ½, else ±(1 − erfc(|x|)) (erf ≥ 0.52: 1 − erfc loses nothing)."""
    a = _into(bufs[3], "abs", x, xp=xp)
    small = _into(bufs[4], "clip", x, -_ERF32_SWITCH, _ERF32_SWITCH, xp=xp)
    s = _into(bufs[0], "multiply", small, small, xp=xp)
    inner = _horner(_ERF32_SMALL, s, outs[0], xp)
    inner *= small  # x P(x²), on x clamped into [−½, ½]
    near = a < _ERF32_SWITCH
    c, _ = _gauss_tail32(a, 1.0, bufs[4], bufs, xp)
    c *= -2.0
    c += 1.0  # 1 − erfc(|x|)
    c = _into(c, "copysign", c, x, xp=xp)
    inner = _masked_into(inner, near, inner, xp)
    c = _masked_into(c, ~near, c, xp)
    inner += c
    return (inner,)


def _masked_into(x: Array, mask: Array, out: Array | None, xp: Namespace) -> Array:
    """x · [mask] into ``out`` (NumPy multiplies by the boolean mask directly)."""
    if out is not None and ufunc_into("multiply", x, mask, out=out, xp=xp):
        return out
    return masked(x, mask, xp)


def normal_cdf_slope32(x: Array, outs: tuple[Array | None, ...],
                       bufs: tuple[Array | None, ...], xp: Namespace) -> tuple[Array, Array]:
    """GELU's value and derivative for float32 x: (x Φ(x), Φ(x) + x φ(x)), a :func:`blockwise`
    kernel (two outputs, four scratch buffers).

    Φ(x) = Q for x < 0 and 1 − Q for x ≥ 0, Q = Φ(−|x|) from :func:`_gauss_tail32` (relative
    to its own size: the left tail keeps its digits), written Q + [x ≥ 0](1 − 2Q) (a product
    by the mask rather than ``where``); φ(x) = e^{−x²/2}/√(2π) is the tail's exponential.
    """
    a = _into(bufs[3], "abs", x, xp=xp)
    q, e = _gauss_tail32(a, 0.5, outs[0], bufs, xp)
    step = _into(bufs[0], "multiply", q, -2.0, xp=xp)
    step += 1.0
    step = _masked_into(step, x >= 0.0, step, xp)
    q += step  # Φ(x)
    e *= _INV_SQRT_2PI
    slope = _into(outs[1], "multiply", e, x, xp=xp)  # x φ(x)
    slope += q
    y = _into(q, "multiply", q, x, xp=xp)
    return y, slope
