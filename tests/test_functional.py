"""nnbackend.functional: activations and the affine map against independent NumPy float64
formulas, closed-form derivatives and central finite differences, on every backend of the matrix.
"""

from __future__ import annotations

import warnings
from typing import Any

import _reference as ref
import numpy as np
import pytest

import nnbackend as nb
import nnbackend.functional as F

# name -> (forward, backward, keyword arguments shared by both)
ACTIVATIONS: dict[str, tuple[Any, Any, dict[str, Any]]] = {
    "identity": (F.identity, F.identity_backward, {}),
    "relu": (F.relu, F.relu_backward, {}),
    "leaky_relu": (F.leaky_relu, F.leaky_relu_backward, {}),
    "sigmoid": (F.sigmoid, F.sigmoid_backward, {}),
    "tanh": (F.tanh, F.tanh_backward, {}),
    "softmax": (F.softmax, F.softmax_backward, {}),
    "log_softmax": (F.log_softmax, F.log_softmax_backward, {}),
    "softmax_axis0": (F.softmax, F.softmax_backward, {"axis": 0}),
    "log_softmax_axis0": (F.log_softmax, F.log_softmax_backward, {"axis": 0}),
}


def _ref_name(name: str) -> str:
    return name.removesuffix("_axis0")


def _inputs(seed: int, shape: tuple[int, ...] = (4, 5)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2.0
    x[np.abs(x) < 1e-3] += 0.01  # keep relu's kink out of the finite differences
    return x, rng.standard_normal(shape)


def _host(case: Any, values: np.ndarray) -> np.ndarray:
    """The float64 value of ``values`` after rounding to the case's dtype."""
    return values.astype(case.dtype_name).astype(np.float64)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_forward_matches_numpy(case: Any, name: str) -> None:
    fn, _, kwargs = ACTIVATIONS[name]
    x_host, _ = _inputs(1)
    x = case.asarray(x_host)
    before = nb.to_numpy(x).copy()
    y = fn(x, **kwargs)
    case.check_placement(y)
    assert tuple(y.shape) == x_host.shape
    want = ref.forward(_ref_name(name), _host(case, x_host), **kwargs)
    np.testing.assert_allclose(nb.to_numpy(y), want, rtol=case.rtol, atol=case.rtol)
    np.testing.assert_array_equal(nb.to_numpy(x), before)  # the input is never mutated


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_backward_matches_closed_form(case: Any, name: str) -> None:
    fn, bwd, kwargs = ACTIVATIONS[name]
    x_host, dy_host = _inputs(2)
    x, dy = case.asarray(x_host), case.asarray(dy_host)
    y = fn(x, **kwargs)
    y_before, dy_before = nb.to_numpy(y).copy(), nb.to_numpy(dy).copy()
    dx = bwd(dy, y, **kwargs)
    case.check_placement(dx)
    want = ref.backward(_ref_name(name), _host(case, x_host), _host(case, dy_host), **kwargs)
    np.testing.assert_allclose(nb.to_numpy(dx), want, rtol=case.rtol, atol=case.rtol)
    np.testing.assert_array_equal(nb.to_numpy(y), y_before)
    np.testing.assert_array_equal(nb.to_numpy(dy), dy_before)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_backward_matches_finite_differences(case: Any, name: str) -> None:
    """∂/∂x Σ f(x) ⊙ r: the library's backward against central differences.

    Every case is compared with our own difference loop over the NumPy reference formula; on
    float64 cases nb.gradcheck also differentiates the library's own forward numerically.
    """
    fn, bwd, kwargs = ACTIVATIONS[name]
    x_host, r_host = _inputs(3, (3, 4))
    x, r = case.asarray(x_host), case.asarray(r_host)
    dx = bwd(r, fn(x, **kwargs), **kwargs)
    xh, rh = _host(case, x_host), _host(case, r_host)
    numeric = ref.central_difference(
        lambda v: float((ref.forward(_ref_name(name), v, **kwargs) * rh).sum()), xh
    )
    # A derivative from the rounded output y (1 − y² for tanh) is exact to ~2 ulp(y) · |r|
    # in absolute terms: that, not 1e-7, bounds float32's absolute error where it is small.
    atol = 1e-7 if case.is_float64 else 4 * float(np.finfo(np.float32).eps) * np.abs(rh).max()
    np.testing.assert_allclose(nb.to_numpy(dx), numeric, rtol=max(case.rtol, 1e-6), atol=atol)
    if case.is_float64:
        xp = case.xp
        report = nb.gradcheck(lambda v: xp.sum(fn(v, **kwargs) * r), x, grads=[dx])
        assert report.max_abs_error["input 0"] < 1e-7


def test_leaky_relu_custom_slope(case: Any) -> None:
    x_host, dy_host = _inputs(4)
    x, dy = case.asarray(x_host), case.asarray(dy_host)
    y = F.leaky_relu(x, 0.3)
    case.check_placement(y)
    xh = _host(case, x_host)
    np.testing.assert_allclose(nb.to_numpy(y), np.where(xh > 0, xh, 0.3 * xh), rtol=case.rtol)
    dx = F.leaky_relu_backward(dy, y, 0.3)
    case.check_placement(dx)
    want = np.where(xh > 0, 1.0, 0.3) * _host(case, dy_host)
    np.testing.assert_allclose(nb.to_numpy(dx), want, rtol=case.rtol)


def test_relu_subgradient_at_zero_is_zero(case: Any) -> None:
    x = case.asarray(np.array([[-1.0, 0.0, 2.0]]))
    dx = F.relu_backward(case.asarray(np.ones((1, 3))), F.relu(x))
    np.testing.assert_array_equal(nb.to_numpy(dx), [[0.0, 0.0, 1.0]])


def test_sigmoid_saturates_without_overflow(case: Any) -> None:
    x = case.asarray(np.array([[-1000.0, -50.0, 0.0, 50.0, 1000.0]]))
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        y = F.sigmoid(x)
        dx = F.sigmoid_backward(case.asarray(np.ones((1, 5))), y)
    case.check_placement(y)
    got = nb.to_numpy(y)
    assert np.all(np.isfinite(got)) and np.all((got >= 0.0) & (got <= 1.0))
    np.testing.assert_allclose(got[0, [0, 2, 4]], [0.0, 0.5, 1.0], rtol=0, atol=1e-300)
    # Relative accuracy in the left tail too: σ(−50) ≈ 1.9e-22 keeps its digits (the tanh
    # form rounded it to 0). The whole range is measured in ulps in test_accuracy.py.
    eps = float(np.finfo(case.dtype_name).eps)
    np.testing.assert_allclose(got, ref.sigmoid(nb.to_numpy(x)), rtol=4 * eps, atol=0)
    assert got[0, 1] > 0.0
    assert np.all(np.isfinite(nb.to_numpy(dx)))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_stable_for_huge_inputs(case: Any, name: str) -> None:
    big = 1e30 if case.is_float64 else 1e4
    x_host = np.array([[big, -big, 0.0], [1e4, 1e4 - 1.0, -1e4]])
    x = case.asarray(x_host)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        y = ACTIVATIONS[name][0](x)
    got = nb.to_numpy(y)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref.forward(name, _host(case, x_host)), rtol=case.rtol,
                               atol=case.rtol)


def test_softmax_rows_sum_to_one(case: Any) -> None:
    x, _ = _inputs(5)
    y = nb.to_numpy(F.softmax(case.asarray(x)))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=case.rtol * 10)
    ly = nb.to_numpy(F.log_softmax(case.asarray(x)))
    np.testing.assert_allclose(np.exp(ly).sum(axis=1), 1.0, rtol=case.rtol * 10)


# ------------------------------------------------------------------------------- linear


def _linear_data(case: Any, n: int = 5, fan_in: int = 4, fan_out: int = 3, seed: int = 6) -> Any:
    rng = np.random.default_rng(seed)
    hosts = (rng.standard_normal((n, fan_in)), rng.standard_normal((fan_out, fan_in)),
             rng.standard_normal(fan_out), rng.standard_normal((n, fan_out)))
    return hosts, tuple(case.asarray(h) for h in hosts)


# one input or one output: the products over one term are broadcast products
@pytest.mark.parametrize(("fan_in", "fan_out"), [(4, 3), (1, 3), (4, 1)])
def test_linear_forward_matches_numpy(case: Any, fan_in: int, fan_out: int) -> None:
    (xh, Wh, bh, _), (x, W, b, _) = _linear_data(case, fan_in=fan_in, fan_out=fan_out)
    before = [nb.to_numpy(a).copy() for a in (x, W, b)]
    z = F.linear(x, W, b)
    case.check_placement(z)
    xh, Wh, bh = (_host(case, a) for a in (xh, Wh, bh))
    want = np.einsum("ni,oi->no", xh, Wh) + bh  # z = x Wᵀ + b
    np.testing.assert_allclose(nb.to_numpy(z), want, rtol=case.rtol, atol=case.rtol)
    z0 = F.linear(x, W)
    case.check_placement(z0)
    np.testing.assert_allclose(nb.to_numpy(z0), want - bh, rtol=case.rtol, atol=case.rtol)
    for a, old in zip((x, W, b), before, strict=True):
        np.testing.assert_array_equal(nb.to_numpy(a), old)


# one input or one output: the products over one term are broadcast products
@pytest.mark.parametrize(("fan_in", "fan_out"), [(4, 3), (1, 3), (4, 1)])
def test_linear_backward_matches_closed_form(case: Any, fan_in: int, fan_out: int) -> None:
    (xh, Wh, _, dzh), (x, W, _, dz) = _linear_data(case, fan_in=fan_in, fan_out=fan_out)
    before = [nb.to_numpy(a).copy() for a in (x, W, dz)]
    dx, dW, db = F.linear_backward(dz, x, W, xp=case.xp)
    for g in (dx, dW, db):
        case.check_placement(g)
    xh, Wh, dzh = (_host(case, a) for a in (xh, Wh, dzh))
    # Written as explicit sums over the batch / output index.
    want_dx = np.einsum("no,oi->ni", dzh, Wh)
    want_dW = np.einsum("no,ni->oi", dzh, xh)
    want_db = dzh.sum(axis=0)
    np.testing.assert_allclose(nb.to_numpy(dx), want_dx, rtol=case.rtol, atol=case.rtol)
    np.testing.assert_allclose(nb.to_numpy(dW), want_dW, rtol=case.rtol, atol=case.rtol)
    np.testing.assert_allclose(nb.to_numpy(db), want_db, rtol=case.rtol, atol=case.rtol)
    for a, old in zip((x, W, dz), before, strict=True):
        np.testing.assert_array_equal(nb.to_numpy(a), old)


def test_linear_backward_skips_unrequested_gradients(case: Any) -> None:
    _, (x, W, _, dz) = _linear_data(case)
    dx, dW, db = F.linear_backward(dz, x, W, input_grad=False, bias_grad=False, xp=case.xp)
    assert dx is None and db is None
    case.check_placement(dW)


def test_linear_backward_matches_finite_differences(case: Any) -> None:
    """Each of x, W, b against central differences of Σ (x Wᵀ + b) ⊙ r."""
    (xh, Wh, bh, rh), (x, W, b, r) = _linear_data(case, n=3, fan_in=3, fan_out=2, seed=7)
    dx, dW, db = F.linear_backward(r, x, W, xp=case.xp)
    hx, hW, hb, hr = (_host(case, a) for a in (xh, Wh, bh, rh))

    def objective(xv: np.ndarray, Wv: np.ndarray, bv: np.ndarray) -> float:
        return float(((xv @ Wv.T + bv) * hr).sum())

    numeric = (
        ref.central_difference(lambda v: objective(v, hW, hb), hx),
        ref.central_difference(lambda v: objective(hx, v, hb), hW),
        ref.central_difference(lambda v: objective(hx, hW, v), hb),
    )
    for got, want in zip((dx, dW, db), numeric, strict=True):
        np.testing.assert_allclose(nb.to_numpy(got), want, rtol=max(case.rtol, 1e-6), atol=1e-7)
    if case.is_float64:
        xp = case.xp
        nb.gradcheck(lambda a, B, c: xp.sum(F.linear(a, B, c) * r), x, W, b, grads=[dx, dW, db])
