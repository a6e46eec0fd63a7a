"""Accuracy of the library's elementwise math in units in the last place (ulp), on dense grids
over the whole floating range, against references computed in more precision: float64 for a
float32 row, ``np.longdouble`` (x87 80-bit, 64-bit mantissa) or mpmath for a float64 row.

The ulp of a real number r is that of the binade containing r, 2^(e − p) for 2^e ≤ |r| < 2^(e+1)
with p the dtype's mantissa bits, and the subnormal spacing below the smallest normal; an error
of k ulp is |y − r| / ulp(r). Backends that flush subnormal results to zero (XLA on CPU) are held
to an absolute error of the smallest normal number where the true result is subnormal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import nnbackend.functional as F

# The bound the issue sets for sigmoid. Measured: 3.3 ulp on NumPy float32 (its SIMD exp, on a
# 30× denser grid; 3.0 on this one), 2.3 on PyTorch and JAX float32, 1.9 in float64.
SIGMOID_ULP = 4.0


def _float_grid(dtype: str) -> np.ndarray:
    """Every finite value of ``dtype`` at a fixed bit-pattern stride (both signs, every binade,
    subnormals included), plus a fine linear grid where σ is neither 0 nor 1 when rounded."""
    if dtype == "float32":
        bits = np.arange(0, 2**32, 4099, dtype=np.uint64).astype(np.uint32).view(np.float32)
        linear = np.linspace(-105.0, 18.0, 400_003, dtype=np.float32)
    else:
        bits = np.arange(0, 2**64, 2**64 // 1_000_003, dtype=np.uint64).view(np.float64)
        linear = np.linspace(-746.0, 38.0, 400_003)
    grid = np.concatenate([bits, linear, np.array([0.0, -0.0], dtype=dtype)])
    return grid[np.isfinite(grid)]


def _extended() -> Any:
    """np.longdouble if it carries at least 63 mantissa bits (x86 Linux), else None."""
    return np.longdouble if np.finfo(np.longdouble).nmant >= 63 else None


def _reference(
    fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, dtype: str
) -> tuple[np.ndarray, np.ndarray]:
    """(x, fn(x)) with fn evaluated in more precision than ``dtype``; on a float64 row without
    an extended long double, a sparser subset in mpmath (50 digits) instead."""
    if dtype == "float32":
        with np.errstate(over="ignore"):
            return x, fn(x.astype(np.float64))
    extended = _extended()
    if extended is not None:
        with np.errstate(over="ignore"):
            return x, fn(x.astype(extended))
    mpmath = pytest.importorskip("mpmath", reason="no extended long double and no mpmath")
    x = x[:: max(1, x.size // 20_000)]
    with mpmath.workdps(50):
        exact = [fn(mpmath.mpf(float(v))) for v in x]  # type: ignore[arg-type]
    return x, np.array([float(v) for v in exact])  # rounded once: 2^-53 relative, ≪ 1 ulp


def ulp_error(got: np.ndarray, want: np.ndarray, dtype: str) -> np.ndarray:
    """|got − want| in ulps of ``dtype`` at ``want`` (the subnormal spacing below normals)."""
    info = np.finfo(dtype)
    _, exponent = np.frexp(want)  # want = m · 2^exponent, ½ ≤ |m| < 1
    low = np.log2(float(info.smallest_subnormal))
    ulp = np.ldexp(np.ones_like(want), np.maximum(exponent - 1 - info.nmant, int(low)))
    return np.abs(got.astype(want.dtype) - want) / ulp


def _flushes_subnormals(case: Any) -> bool:
    """Whether the backend returns 0 for an exp whose result is subnormal (XLA on CPU does)."""
    x = -100.0 if case.dtype_name == "float32" else -720.0
    return float(case.backend.to_numpy(case.xp.exp(case.asarray(np.array(x))))) == 0.0


def _check_ulps(case: Any, got: np.ndarray, want: np.ndarray, x: np.ndarray, bound: float,
                what: str) -> float:
    """Assert ≤ ``bound`` ulp everywhere (absolute ≤ smallest normal below the normals on a
    backend that flushes subnormals); return the worst error in ulps where the result is
    normal, for the message."""
    info = np.finfo(case.dtype_name)
    err = ulp_error(got, want, case.dtype_name)
    normal = np.abs(want) >= info.smallest_normal
    if _flushes_subnormals(case):
        assert np.all(np.abs(got[~normal] - want[~normal]) <= info.smallest_normal), what
        err = np.where(normal, err, 0.0)
    worst = int(np.argmax(err))
    assert err[worst] <= bound, (
        f"{what}: {err[worst]:.2f} ulp at x = {x[worst]!r} (got {got[worst]!r}, "
        f"want {want[worst]!r})"
    )
    return float(err[normal].max())


def _sigmoid_reference(x: Any) -> Any:
    """1 / (1 + e⁻ˣ) in the reference's precision (the textbook form: in float64 for float32
    data, or in 64-bit-mantissa long double, nothing it loses is visible in the result)."""
    if isinstance(x, np.ndarray):
        return 1.0 / (1.0 + np.exp(-x))
    import mpmath

    return 1 / (1 + mpmath.exp(-x))


def test_sigmoid_within_4_ulp_over_the_whole_range(case: Any) -> None:
    x, want = _reference(_sigmoid_reference, _float_grid(case.dtype_name), case.dtype_name)
    got = case.backend.to_numpy(F.sigmoid(case.asarray(x)))
    assert got.dtype == np.dtype(case.dtype_name)
    _check_ulps(case, got, want, x, SIGMOID_ULP, "sigmoid")


def test_sigmoid_of_negative_inputs_keeps_its_digits(case: Any) -> None:
    """The issue's reproducer: the tanh form gave [4.5389e-05, 5.96e-08, 0] in float32."""
    x = np.array([-10.0, -17.0, -20.0, -40.0, -80.0])
    got = case.backend.to_numpy(F.sigmoid(case.asarray(x)))
    want = np.exp(x) / (1.0 + np.exp(x))  # float64: exact to 1e-16 here
    np.testing.assert_allclose(got[:3], [4.5398e-05, 4.14e-08, 2.06e-09], rtol=1e-3)
    np.testing.assert_allclose(got, want, rtol=SIGMOID_ULP * np.finfo(case.dtype_name).eps)


def test_sigmoid_special_values(case: Any) -> None:
    x = case.asarray(np.array([np.inf, -np.inf, np.nan, 0.0, -0.0]))
    got = case.backend.to_numpy(F.sigmoid(x))
    np.testing.assert_array_equal(got, [1.0, 0.0, np.nan, 0.5, 0.5])


def _bce_reference(z: Any, y: Any) -> Any:
    """−[y log σ(z) + (1 − y) log(1 − σ(z))] = y softplus(−z) + (1 − y) softplus(z): two
    non-negative terms for y ∈ [0, 1], so the reference itself cancels nothing."""
    if isinstance(z, np.ndarray):
        return y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z)
    import mpmath

    return y * mpmath.log1p(mpmath.exp(-z)) + (1 - y) * mpmath.log1p(mpmath.exp(z))


# ℓ is a sum of two non-negative terms, each within a few ulp (exp, log1p, a product).
# Measured: 2.4 ulp on NumPy float32, 1.5 on JAX, 0.9 on PyTorch float32, 1.2 in float64.
BCE_ULP = 4.0


def _bce_grid(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Logits from −1e4 to 1e4 (log-spaced, both signs, and 0) × targets at both ends of [0, 1]
    and between (where max(z, 0) − z y cancels: y ≈ 1 with z ≫ 0, y ≈ 0 with z ≪ 0)."""
    eps = float(np.finfo(dtype).eps)
    magnitudes = np.geomspace(1e-4, 1e4, 17)
    z = np.concatenate([-magnitudes, [0.0], magnitudes]).astype(dtype)
    y = np.array([0.0, eps / 2, 1e-3, 0.25, 0.5, 0.75, 1.0 - 1e-3, 1.0 - eps, 1.0], dtype=dtype)
    zz, yy = np.meshgrid(z, y)
    return zz.ravel(), yy.ravel()


def test_bce_with_logits_loss_accurate_elementwise(case: Any) -> None:
    """Each element's loss (one call per element, reduction="sum") within a few ulp."""
    z, y = _bce_grid(case.dtype_name)
    got = np.array([
        float(case.backend.to_numpy(F.binary_cross_entropy_with_logits(
            case.asarray(np.array([zi])), case.asarray(np.array([yi])), reduction="sum")[0]))
        for zi, yi in zip(z, y, strict=True)
    ])
    if case.dtype_name == "float32":
        want = _bce_reference(z.astype(np.float64), y.astype(np.float64))
    elif _extended() is not None:
        want = _bce_reference(z.astype(_extended()), y.astype(_extended()))
    else:
        mpmath = pytest.importorskip("mpmath")
        with mpmath.workdps(50):
            want = np.array([float(_bce_reference(mpmath.mpf(float(a)), mpmath.mpf(float(b))))
                             for a, b in zip(z, y, strict=True)])
    _check_ulps(case, got, want, z, BCE_ULP, "binary_cross_entropy_with_logits")


def test_bce_with_logits_matches_mpmath(case: Any) -> None:
    """Spot values against mpmath's −[y log σ + (1 − y) log(1 − σ)] (50 digits), loss and
    gradient: independent of the softplus identity the library and the grid reference use."""
    mpmath = pytest.importorskip("mpmath")
    z = np.array([-30.0, -12.0, -1.5, 0.0, 2.0, 12.0, 30.0])
    y = np.array([0.0, 0.0, 0.3, 0.5, 1.0, 1.0, 1.0 - 2.0**-20])
    z, y = z.astype(case.dtype_name), y.astype(case.dtype_name)
    want_loss, want_grad = [], []
    with mpmath.workdps(50):
        for a, b in zip(z, y, strict=True):
            zi, yi = mpmath.mpf(float(a)), mpmath.mpf(float(b))
            s = 1 / (1 + mpmath.exp(-zi))
            want_loss.append(float(-(yi * mpmath.log(s) + (1 - yi) * mpmath.log(1 - s))))
            want_grad.append(float(s - yi))
    for i in range(z.size):
        loss, grad = F.binary_cross_entropy_with_logits(
            case.asarray(z[i : i + 1]), case.asarray(y[i : i + 1]), reduction="sum")
        eps = float(np.finfo(case.dtype_name).eps)
        np.testing.assert_allclose(float(case.backend.to_numpy(loss)), want_loss[i],
                                   rtol=BCE_ULP * eps, err_msg=f"loss at z={z[i]}, y={y[i]}")
        # σ(z) − y cancels where σ(z) ≈ y: the gradient is accurate to ulp(max(σ, y)) there.
        np.testing.assert_allclose(case.backend.to_numpy(grad)[0], want_grad[i],
                                   rtol=SIGMOID_ULP * eps, atol=2 * eps * abs(float(y[i])),
                                   err_msg=f"gradient at z={z[i]}, y={y[i]}")


def test_bce_with_logits_gradient_at_minus_12_matches_torch(case: Any) -> None:
    """The issue's reproducer: at z = −12, y = 0 the tanh form of σ lost the gradient's digits
    in float32 (σ(−12) ≈ 6.1e-6 from ½ tanh(−6) + ½)."""
    torch = pytest.importorskip("torch")
    z_host = np.array([[-12.0, -12.0], [-20.0, 3.0]])
    y_host = np.array([[0.0, 0.0], [0.0, 1.0]])
    tdtype = torch.float32 if case.dtype_name == "float32" else torch.float64
    z_t = torch.tensor(z_host, dtype=tdtype, requires_grad=True)
    torch.nn.functional.binary_cross_entropy_with_logits(
        z_t, torch.tensor(y_host, dtype=tdtype)).backward()
    assert z_t.grad is not None
    loss, grad = F.binary_cross_entropy_with_logits(case.asarray(z_host), case.asarray(y_host))
    eps = float(np.finfo(case.dtype_name).eps)
    got = case.backend.to_numpy(grad)
    np.testing.assert_allclose(got, z_t.grad.numpy(), rtol=2 * SIGMOID_ULP * eps)
    np.testing.assert_allclose(got[0, 0], np.exp(-12.0) / (1 + np.exp(-12.0)) / 4,
                               rtol=SIGMOID_ULP * eps)
    # PyTorch's loss, (1 − y) z + m + log(e^−m + e^(−z−m)) with m = max(−z, 0), cancels for
    # z < 0 (relative error 2e-5 here in float32, 2e-14 in float64), so the loss is checked
    # against the closed form instead.
    want = (2 * np.log1p(np.exp(-12.0)) + np.log1p(np.exp(-20.0)) + np.log1p(np.exp(-3.0))) / 4
    np.testing.assert_allclose(float(case.backend.to_numpy(loss)), want, rtol=BCE_ULP * eps)
