"""Native fast paths give exactly what the standard spelling gives, on every backend."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend._native import masked, matmul_into, maximizer, sum_into, summer


@pytest.mark.parametrize(("axis", "keepdims"), [(None, False), (0, False), (1, True)])
@pytest.mark.parametrize("name", ["sum", "max"])
def test_reductions_equal_the_standard_ones(
    case: Any, axis: int | None, keepdims: bool, name: str
) -> None:
    xp = case.backend.xp
    x = case.backend.asarray(np.random.default_rng(0).standard_normal((37, 11)),
                             dtype=case.dtype_name)
    fast = {"sum": summer, "max": maximizer}[name](xp)
    got, want = fast(x, axis=axis, keepdims=keepdims), getattr(xp, name)(x, axis=axis,
                                                                         keepdims=keepdims)
    assert got.dtype == want.dtype
    assert tuple(got.shape) == tuple(want.shape)
    np.testing.assert_array_equal(nb.to_numpy(got), nb.to_numpy(want))


def test_sum_into_writes_the_sum_or_declines(case: Any) -> None:
    xp, be = case.backend.xp, case.backend
    x = be.asarray(np.random.default_rng(2).standard_normal((33, 7)), dtype=case.dtype_name)
    out = be.zeros((7,), dtype=case.dtype_name)
    if sum_into(x, out, axis=0, xp=xp):
        np.testing.assert_array_equal(nb.to_numpy(out), nb.to_numpy(xp.sum(x, axis=0)))
    else:
        assert case.backend.name not in ("numpy", "torch", "cupy")
        np.testing.assert_array_equal(nb.to_numpy(out), np.zeros(7))


def test_matmul_into_writes_the_product_or_declines(case: Any) -> None:
    xp, be = case.backend.xp, case.backend
    rng = np.random.default_rng(1)
    a = be.asarray(rng.standard_normal((9, 5)), dtype=case.dtype_name)
    b = be.asarray(rng.standard_normal((9, 4)), dtype=case.dtype_name)
    out = be.zeros((5, 4), dtype=case.dtype_name)
    if matmul_into(a.T, b, out, xp):
        np.testing.assert_array_equal(nb.to_numpy(out), nb.to_numpy(a.T @ b))
    else:
        assert case.backend.name not in ("numpy", "torch", "cupy")
        np.testing.assert_array_equal(nb.to_numpy(out), np.zeros((5, 4)))


def test_masked_equals_the_standard_spelling(case: Any) -> None:
    xp, be = case.backend.xp, case.backend
    x = be.asarray(np.random.default_rng(3).standard_normal((6, 5)), dtype=case.dtype_name)
    got = masked(x, x > 0.0, xp)
    assert got.dtype == x.dtype
    want = xp.where(x > 0.0, x, xp.zeros_like(x))
    np.testing.assert_array_equal(nb.to_numpy(got), nb.to_numpy(want))
