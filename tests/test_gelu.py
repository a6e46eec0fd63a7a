"""The standard erf/erfc against mpmath on a dense grid (tails, tiny and subnormal arguments,
±∞, NaN) in float64 and float32, on the host and on every backend (native and standard, in
parity); GELU (both forms), SiLU and Softplus forward and derivative against PyTorch autograd
in float64 on the whole matrix and against mpmath in GELU's left tail (where PyTorch's
½(1 + erf) cancels); layers: gradcheck, no host reads, descriptions, bad arguments."""

from __future__ import annotations

from typing import Any

import mpmath
import numpy as np
import pytest
import torch
from _compare import close

import nnbackend as nb
import nnbackend.functional as F
from nnbackend._native import special
from nnbackend.functional.special import erf_standard, erfc_standard, standard_float32

mpmath.mp.dps = 40


def _grid() -> np.ndarray:
    """Dense on [−30, 30], geometric down to subnormals on both sides, and the specials."""
    tiny = np.geomspace(1e-310, 1.0, 150)
    return np.concatenate([np.linspace(-30.0, 30.0, 6001), tiny, -tiny, [0.0, -0.0]])


GRID = _grid()
REFERENCE = {name: np.array([float(getattr(mpmath, name)(mpmath.mpf(float(t)))) for t in GRID])
             for name in ("erf", "erfc")}
# Largest errors in ulp of the correctly rounded value (measured: float64 erf 1, erfc 2;
# float32, the one-range form: erf 2, erfc 6).
ULPS = {("float64", "erf"): 1.5, ("float64", "erfc"): 2.5,
        ("float32", "erf"): 2.5, ("float32", "erfc"): 6.5}


def _ulp_errors(got: np.ndarray, x: np.ndarray, name: str, dtype: str,
                want: np.ndarray | None = None) -> np.ndarray:
    """|got − f(x)| in units of the spacing at f(x) rounded to ``dtype``, f from mpmath at the
    dtype's own x (or ``want``); results below the smallest normal number compare on its
    spacing."""
    if want is None:
        want = np.array([float(getattr(mpmath, name)(mpmath.mpf(float(t)))) for t in x]) \
            if dtype == "float32" else REFERENCE[name]
    rounded = want.astype(dtype)
    spacing = np.spacing(np.maximum(np.abs(rounded), np.finfo(dtype).tiny)).astype(np.float64)
    return np.abs(got.astype(np.float64) - rounded.astype(np.float64)) / spacing


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["erf", "erfc"])
def test_standard_erf_and_erfc_are_within_a_few_ulp(dtype: str, name: str) -> None:
    xp = nb.get_backend("numpy").xp
    x = GRID.astype(dtype)
    fn = {"erf": erf_standard, "erfc": erfc_standard}[name]
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        got = fn(x, xp=xp)
    assert got.dtype == x.dtype
    errors = _ulp_errors(got, x, name, dtype)
    worst = int(np.argmax(errors))
    assert errors.max() <= ULPS[(dtype, name)], (x[worst], got[worst], errors[worst])


def test_special_values() -> None:
    xp = nb.get_backend("numpy").xp
    for dtype in ("float32", "float64"):
        x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 40.0, -40.0], dtype=dtype)
        with np.errstate(over="raise", divide="raise", invalid="raise"):
            e, c = erf_standard(x, xp=xp), erfc_standard(x, xp=xp)
        np.testing.assert_array_equal(e, [1.0, -1.0, np.nan, 0.0, -0.0, 1.0, -1.0])
        np.testing.assert_array_equal(c, [0.0, 2.0, np.nan, 1.0, 1.0, 0.0, 2.0])
        assert np.signbit(e[4])  # erf(−0) = −0


@pytest.mark.parametrize("name", ["erf", "erfc"])
def test_erf_on_the_matrix_native_and_standard(case: Any, name: str) -> None:
    """On every backend, the public function (native where the library has one) and the
    standard one agree with mpmath to a few ulp of the case's dtype, and with each other."""
    x_host = np.concatenate([np.linspace(-9.0, 9.0, 181), [1e-30, -3e-8, 27.0]])
    x = case.asarray(x_host)
    xs = nb.to_numpy(x).astype(np.float64)
    want = np.array([float(getattr(mpmath, name)(mpmath.mpf(float(t)))) for t in xs])
    public = getattr(F, name)(x)
    standard = {"erf": erf_standard, "erfc": erfc_standard}[name](x, xp=case.xp)
    eps = float(np.finfo(case.dtype_name).eps)
    tiny = float(np.finfo(case.dtype_name).tiny)
    # The libraries' own erfc may lose ~x² ulp in the tail (SciPy's: 30 ulp at x = 8; its
    # exp(−x²) rounds x² first); the standard one keeps a few ulp.
    for got, rtol in ((public, 8 * eps * (1.0 + xs * xs)), (standard, 8 * eps)):
        case.check_placement(got)
        error = np.abs(nb.to_numpy(got).astype(np.float64) - want)
        bad = error > rtol * np.abs(want) + tiny
        assert not bad.any(), (xs[bad], error[bad] / np.abs(want[bad]))
    has_native = special(name, case.xp) is not None
    assert has_native is (case.backend.name not in ("array_api_strict", "gpulike"))


def _torch_reference(fn: Any, x: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = fn(t)
    y.backward(torch.from_numpy(dy))
    assert t.grad is not None
    return y.detach().numpy(), t.grad.numpy()


ACTIVATIONS = {
    "gelu": (lambda: nb.GELU(), lambda t: torch.nn.functional.gelu(t)),
    "gelu-tanh": (lambda: nb.GELU("tanh"),
                  lambda t: torch.nn.functional.gelu(t, approximate="tanh")),
    "silu": (lambda: nb.SiLU(), torch.nn.functional.silu),
    "softplus": (lambda: nb.Softplus(), torch.nn.functional.softplus),
    "softplus-beta": (lambda: nb.Softplus(beta=2.0, threshold=5.0),
                      lambda t: torch.nn.functional.softplus(t, beta=2.0, threshold=5.0)),
}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_layers_match_torch(case: Any, name: str) -> None:
    """Forward, ∂L/∂x and inference over [−12, 12] (Softplus's threshold crossed both ways)."""
    make, reference = ACTIVATIONS[name]
    rng = np.random.default_rng(1)
    x = np.linspace(-12.0, 12.0, 48).reshape(4, 12).astype(case.dtype_name).astype(np.float64)
    dy = rng.normal(size=x.shape).astype(case.dtype_name).astype(np.float64)
    y_ref, dx_ref = _torch_reference(reference, x, dy)
    layer = make()
    y, backprop = layer.forward(case.asarray(x), input_grad=True)
    case.check_placement(y)
    close(y, y_ref, case, "y")
    close(layer(case.asarray(x)), y_ref, case, "y (inference)")
    dx = backprop(case.asarray(dy))
    case.check_placement(dx)
    close(dx, dx_ref, case, "dx")


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_left_tail_is_accurate_where_torch_cancels(case: Any, approximate: str) -> None:
    """GELU(x) for x in [−30, −3] to a few ulp against mpmath, relative to its own (tiny) size:
    x Φ(x) = x/2 erfc(−x/√2) (and x σ(2u)). PyTorch's x/2 (1 + erf(x/√2)) returns 0 below
    x ≈ −8.3 in float64."""
    if not case.is_float64:
        pytest.skip("the float64 tail (float32's is test_float32_gelu_is_within_a_few_ulp)")
    x = -np.geomspace(3.0, 30.0, 200)
    _check_tail(case.backend.to_numpy(F.gelu(case.asarray(x), approximate)), x, approximate)
    assert (torch.nn.functional.gelu(torch.from_numpy(x[x < -9])) == 0).all()


def _check_tail(got: np.ndarray, x: np.ndarray, approximate: str) -> None:
    if approximate == "none":
        want = [float(t * mpmath.ncdf(t)) for t in map(mpmath.mpf, x)]
    else:
        c = mpmath.sqrt(2 / mpmath.pi)
        want = [float(t / (1 + mpmath.exp(-2 * c * (t + mpmath.mpf("0.044715") * t**3))))
                for t in map(mpmath.mpf, x)]
    # The argument's rounding (−x/√2, or u) is amplified by |x f′/f| ≈ x² in the tail.
    want = np.array(want)
    normal = np.abs(want) >= np.finfo(np.float64).tiny  # (the tanh form underflows from −21)
    assert (np.abs(got[~normal]) < np.finfo(np.float64).tiny).all()
    relative = np.abs(got[normal] - want[normal]) / np.abs(want[normal])
    bound = 4e-16 * (1 + x[normal] ** 2)
    assert (relative <= bound).all(), (relative / bound).max()


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_gradcheck(case: Any, name: str) -> None:
    if not case.is_float64:
        pytest.skip("finite differences need float64")
    x = np.random.default_rng(2).normal(scale=3.0, size=(3, 5))
    x[0, :3] = [5.3, 4.9, 2.61]  # near Softplus's thresholds (βx > 5 with β = 2), not on them
    nb.gradcheck(ACTIVATIONS[name][0](), case.asarray(x))


def test_no_host_reads(case: Any) -> None:
    if case.backend.name != "gpulike":
        pytest.skip("only the GPU-like test device counts host reads")
    x = case.asarray(np.linspace(-5.0, 5.0, 12).reshape(3, 4))
    with nb.testing.count_host_reads() as reads:
        for make, _ in ACTIVATIONS.values():
            layer = make()
            _, backprop = layer.forward(x, input_grad=True)
            backprop(x)
            layer(x)
    assert reads.count == 0, reads


def test_descriptions_and_reprs() -> None:
    model = nb.Sequential(nb.GELU("tanh"), nb.SiLU(), nb.Softplus(beta=0.5, threshold=10))
    assert repr(model[0]) == "GELU(approximate='tanh')"
    assert repr(model[2]) == "Softplus(beta=0.5, threshold=10.0)"
    twin = nb.layers.build(nb.layers.describe(model))
    assert repr(twin) == repr(model)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"GELU: approximate must be 'none' or 'tanh', got "
                                         r"'exact'"):
        nb.GELU("exact")
    with pytest.raises(ValueError, match=r"gelu: approximate must be 'none' or 'tanh', got "
                                         r"None"):
        F.gelu(np.zeros(2), None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Softplus: beta must be non-zero"):
        nb.Softplus(beta=0.0)
    with pytest.raises(TypeError, match="Softplus: threshold must be a real Python number"):
        nb.Softplus(threshold="20")  # type: ignore[arg-type]


def _gelu_grid32() -> np.ndarray:
    """float32 x: dense on [−15, 15] (the left tail down to GELU's underflow at ≈ −14.3),
    geometric down to the smallest subnormal on both sides, and ±0."""
    tiny = np.geomspace(1e-45, 1.0, 200)
    return np.concatenate([np.linspace(-15.0, 15.0, 12001), tiny, -tiny, [0.0, -0.0]]) \
        .astype(np.float32)


GRID32 = _gelu_grid32()
GELU32 = np.array([float(t * mpmath.ncdf(t)) for t in map(mpmath.mpf, GRID32.tolist())])
SLOPE32 = np.array([float(mpmath.ncdf(t) + t * mpmath.npdf(t))
                    for t in map(mpmath.mpf, GRID32.tolist())])


def test_float32_gelu_is_within_a_few_ulp(case: Any) -> None:
    """The float32 kernel (NumPy block by block, array-api-strict whole) against mpmath:
    x Φ(x) to 7 ulp wherever e^{−x²/2} is a normal number (x ≥ −13; measured 7 at x ≈ −8.2:
    the rational's float32 evaluation and two float32 exps), 8 ulp of the subnormal spacing
    below (measured 7), the same bits on both; f′ to 2.5e−7 absolute (measured 1.1e−7).
    PyTorch's float32 x/2 (1 + erf(x/√2)) is off by up to 2²⁴ ulp in that tail."""
    x = case.asarray(GRID32)
    if not standard_float32(x, case.xp):
        pytest.skip(f"{case.backend.name} in {case.dtype_name}: not the float32 kernel (float64, "
                    "or an erf of its own)")
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        y, saved = F.gelu_forward(x)
        dx = F.gelu_backward(case.asarray(np.ones_like(GRID32)), saved)
    got = case.backend.to_numpy(y)
    assert got.dtype == np.float32
    errors = _ulp_errors(got, GRID32, "erf", "float32", want=GELU32)
    bulk = GRID32 >= -13.0
    assert errors[bulk].max() <= 7.0, GRID32[bulk][np.argmax(errors[bulk])]
    assert errors.max() <= 8.0, GRID32[np.argmax(errors)]
    np.testing.assert_allclose(nb.to_numpy(dx), SLOPE32, rtol=0, atol=2.5e-7)
    torch_y = torch.nn.functional.gelu(torch.from_numpy(GRID32)).numpy()
    torch_errors = _ulp_errors(torch_y, GRID32, "erf", "float32", want=GELU32)
    tail = GRID32 < -3.0
    assert (errors[tail] <= np.maximum(torch_errors[tail], 8.0)).all()
    assert torch_errors[tail].max() > 1e6  # what the tail's accuracy buys over PyTorch's form
    np.testing.assert_array_equal(got, F.gelu(GRID32))  # NumPy's blocks: the same bits
