"""nnbackend.functional.dropout / dropout_backward on every row of the matrix.

Forward and backward against a NumPy reference applying the same mask (y = x·m·s, s = 1/(1−p)
rounded to the dtype); the mask is the generator's Bernoulli(1 − p) draw of the same state and
the same on every row; central finite differences of L = Σ w·y with the mask held fixed (its
generator state replayed); PyTorch's edge cases (eval, p = 0: identity; p = 1: zeros, without
NaN from infinite inputs); keep rate and preserved mean; no host reads; clear errors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import nnbackend.functional as F
from nnbackend.random import Generator
from nnbackend.testing import count_host_reads

SHAPE = (4, 6)


def _x(case: Any, rng: np.random.Generator, shape: tuple[int, ...] = SHAPE) -> tuple[Any, Any]:
    host = rng.standard_normal(shape)
    x = case.asarray(host)
    return x, case.backend.to_numpy(x)  # the host copy in the case's dtype


def _reference(host: np.ndarray, mask: np.ndarray, p: float) -> np.ndarray:
    scale = host.dtype.type(1.0 / (1.0 - p))
    return (host * mask) * scale


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_forward_and_backward_match_the_reference(case: Any, rng: Any, p: float) -> None:
    be = case.backend
    x, host = _x(case, rng)
    gen = Generator(7, stream=1)
    y, mask = F.dropout(x, p, generator=gen)
    assert mask is not None
    case.check_placement(y)
    case.check_placement(mask, dtype="bool")
    m = be.to_numpy(mask)
    expected_mask = be.to_numpy(Generator(7, stream=1).bernoulli_mask(SHAPE, 1.0 - p, backend=be))
    assert np.array_equal(m, expected_mask)
    np.testing.assert_allclose(be.to_numpy(y), _reference(host, m, p), rtol=case.rtol, atol=0)
    dy_host = rng.standard_normal(SHAPE)
    dx = F.dropout_backward(case.asarray(dy_host), mask, p)
    case.check_placement(dx)
    dy = be.to_numpy(case.asarray(dy_host))
    np.testing.assert_allclose(be.to_numpy(dx), _reference(dy, m, p), rtol=case.rtol, atol=0)
    assert gen.counter == 1


def test_mask_is_the_same_on_every_row(case: Any) -> None:
    """Hard-coded from NumPy: the (3, 8) mask of Generator(42) for p = 0.25, packed."""
    x = case.asarray(np.ones((3, 8)))
    _, mask = F.dropout(x, 0.25, generator=Generator(42))
    assert np.packbits(case.backend.to_numpy(mask).reshape(-1)).tolist() == [175, 185, 255]


def test_finite_differences_with_the_mask_fixed(case: Any, rng: Any) -> None:
    """L(x) = Σ w·dropout(x); the mask is replayed from the generator's saved state, so L is
    linear in x and central differences are exact but for rounding."""
    be, xp = case.backend, case.xp
    p = 0.4
    x, host = _x(case, rng, (3, 4))
    w = case.asarray(rng.standard_normal((3, 4)))
    state = Generator(3, stream=9).state()

    def loss(values: np.ndarray) -> float:
        y, _ = F.dropout(case.asarray(values), p, generator=Generator.from_state(state))
        return float(be.to_numpy(xp.sum(w * y)))

    _, mask = F.dropout(x, p, generator=Generator.from_state(state))
    analytic = be.to_numpy(F.dropout_backward(w, mask, p)).astype(np.float64)
    h = 1e-6 if case.is_float64 else 1e-2
    numeric = np.empty_like(analytic)
    base = host.astype(np.float64)
    for index in np.ndindex(base.shape):
        plus, minus = base.copy(), base.copy()
        plus[index] += h
        minus[index] -= h
        numeric[index] = (loss(plus) - loss(minus)) / (2 * h)
    tol = 1e-7 if case.is_float64 else 2e-3
    np.testing.assert_allclose(numeric, analytic, rtol=tol, atol=tol)
    assert (analytic == 0).any() and (analytic != 0).any()  # the mask does drop and keep


@pytest.mark.parametrize("mode", ["eval", "p=0"])
def test_identity_without_drawing(case: Any, rng: Any, mode: str) -> None:
    x, _ = _x(case, rng)
    gen = Generator(0)
    if mode == "eval":
        y, mask = F.dropout(x, 0.5, generator=gen, training=False)
    else:
        y, mask = F.dropout(x, 0.0, generator=gen)
    assert y is x
    assert mask is None
    assert gen.counter == 0
    dy = case.asarray(rng.standard_normal(SHAPE))
    assert F.dropout_backward(dy, mask, 0.5 if mode == "eval" else 0.0) is dy


def test_p_one_gives_zeros_without_nan(case: Any) -> None:
    be = case.backend
    x = case.asarray(np.array([[np.inf, -np.inf, np.nan, 1.0]]))
    gen = Generator(0)
    y, mask = F.dropout(x, 1.0, generator=gen)
    assert mask is not None
    case.check_placement(y)
    case.check_placement(mask, dtype="bool")
    assert np.array_equal(be.to_numpy(y), np.zeros((1, 4)))
    assert not be.to_numpy(mask).any()
    assert gen.counter == 0
    dx = F.dropout_backward(x, mask, 1.0)  # an infinite upstream gradient: still zeros
    assert np.array_equal(be.to_numpy(dx), np.zeros((1, 4)))


def test_successive_calls_draw_new_masks_reproducibly(case: Any) -> None:
    be = case.backend
    x = case.asarray(np.ones((16, 16)))

    def masks(gen: Generator) -> list[np.ndarray]:
        return [be.to_numpy(F.dropout(x, 0.5, generator=gen)[1]) for _ in range(3)]

    first, again = masks(Generator(5)), masks(Generator(5))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], first[1])


def test_keep_rate_and_mean_are_preserved(case: Any) -> None:
    """E[y] = x: for x = 1 the mean of y is k·s/n, with k ~ Binomial(n, 1 − p) (|k − nq| < 5σ)."""
    be = case.backend
    n, p = 100_000, 0.3
    y, mask = F.dropout(case.asarray(np.ones(n)), p, generator=Generator(17))
    k = int(be.to_numpy(mask).sum())
    q = 1.0 - p
    assert abs(k - n * q) < 5 * math.sqrt(n * q * (1 - q))
    total = float(be.to_numpy(y).astype(np.float64).sum())
    np.testing.assert_allclose(total, k / q, rtol=1e-6)


def test_no_host_reads(case: Any, rng: Any) -> None:
    x, _ = _x(case, rng)
    dy = case.asarray(rng.standard_normal(SHAPE))
    on_device = Generator(1)
    on_device.load_state_arrays(on_device.state_arrays(backend=case.backend))
    for gen in (Generator(1), on_device):
        with count_host_reads() as reads:
            _, mask = F.dropout(x, 0.3, generator=gen)
            F.dropout_backward(dy, mask, 0.3)
            F.dropout(x, 1.0, generator=gen)
        assert reads.count == 0, reads


@pytest.mark.parametrize(("p", "error", "match"), [
    (1.5, ValueError, "p must lie in \\[0, 1\\]"),
    (-0.1, ValueError, "p must lie in \\[0, 1\\]"),
    (float("nan"), ValueError, "p must lie in \\[0, 1\\]"),
    (True, TypeError, "p must be a real number"),
    ("0.5", TypeError, "p must be a real number"),
])
def test_bad_p(p: Any, error: type, match: str) -> None:
    x = np.ones(3, dtype=np.float32)
    with pytest.raises(error, match=f"dropout: {match}"):
        F.dropout(x, p, generator=Generator(0))
    with pytest.raises(error, match=f"dropout_backward: {match}"):
        F.dropout_backward(x, None, p)


def test_bad_generator_and_mask() -> None:
    x = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(TypeError, match=r"nnbackend\.random\.Generator"):
        F.dropout(x, 0.5, generator=np.random.default_rng(0))  # type: ignore[arg-type]
    _, mask = F.dropout(x, 0.5, generator=Generator(0))
    with pytest.raises(ValueError, match="mask of shape \\(2, 3\\) for a gradient of shape"):
        F.dropout_backward(np.ones((3, 2), dtype=np.float32), mask, 0.5)


def test_integer_input_refused(case: Any) -> None:
    x = case.asarray(np.arange(6).reshape(2, 3), dtype="int32")
    with pytest.raises(TypeError, match="dropout: x must be a floating array, got dtype"):
        F.dropout(x, 0.5, generator=Generator(0))
