"""Native fast paths against NumPy float64 formulas on the host, on every backend.

Each result must keep the input's namespace and dtype and agree with the float64 reference to
the rounding of its dtype; on NumPy, where the fast path really runs (the other namespaces get
the standard function back), it must also give NumPy's own result bit for bit.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
import pytest
import threadpoolctl

import nnbackend as nb
from nnbackend import _native
from nnbackend._native import (
    _blas_threads,
    inner,
    masked,
    matmul_into,
    maximizer,
    parallel_parts,
    row_sums,
    run_parts,
    sum_into,
    summer,
    transposed_operand,
)


def _draw(case: Any, shape: tuple[int, ...], seed: int) -> tuple[Any, np.ndarray]:
    """An array on the case's backend and its exact float64 values on the host."""
    x = case.backend.asarray(np.random.default_rng(seed).standard_normal(shape),
                             dtype=case.dtype_name)
    return x, nb.to_numpy(x).astype(np.float64)


def _close(got: Any, want: np.ndarray, case: Any, terms: int = 1) -> None:
    """``got`` (of the case's dtype) equals the float64 ``want`` to its rounding."""
    eps = np.finfo(case.dtype_name).eps
    np.testing.assert_allclose(nb.to_numpy(got).astype(np.float64), want,
                               rtol=4 * terms * eps, atol=4 * terms * eps)


@pytest.mark.parametrize("columns", [11, 40])  # NumPy's max: rows by their transpose, or not
@pytest.mark.parametrize(("axis", "keepdims"),
                         [(None, False), (0, False), (1, True), (-1, False)])
@pytest.mark.parametrize("name", ["sum", "max"])
def test_reductions(case: Any, axis: int | None, keepdims: bool, name: str,
                    columns: int) -> None:
    xp = case.backend.xp
    x, host = _draw(case, (37, columns), 0)
    fast = {"sum": summer, "max": maximizer}[name](xp)
    got = fast(x, axis=axis, keepdims=keepdims)
    assert got.dtype == x.dtype
    want = getattr(np, name)(host, axis=axis, keepdims=keepdims)
    assert tuple(got.shape) == want.shape
    _close(got, want, case, terms=host.size)
    if case.backend.name == "numpy":
        assert fast is not getattr(xp, name)
        np.testing.assert_array_equal(got, getattr(np, name)(x, axis=axis, keepdims=keepdims))


@pytest.mark.parametrize("columns", [11, 40])
def test_row_maxima_propagate_nan(case: Any, columns: int) -> None:
    """A row holding NaN has the maximum NaN (as ``xp.max``); the other rows are exact."""
    host = np.random.default_rng(3).standard_normal((9, columns))
    host[4, columns // 2] = np.nan
    x = case.backend.asarray(host, dtype=case.dtype_name)
    got = nb.to_numpy(maximizer(case.backend.xp)(x, axis=1, keepdims=True))
    want = nb.to_numpy(x).max(axis=1, keepdims=True)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[4, 0]) and not np.isnan(np.delete(got, 4, axis=0)).any()


def test_sum_into_writes_the_sum_or_declines(case: Any) -> None:
    xp, be = case.backend.xp, case.backend
    x, host = _draw(case, (33, 7), 2)
    out = be.zeros((7,), dtype=case.dtype_name)
    if sum_into(x, out, axis=0, xp=xp):
        _close(out, host.sum(axis=0), case, terms=33)
    else:
        assert case.backend.name not in ("numpy", "torch", "cupy")
        np.testing.assert_array_equal(nb.to_numpy(out), np.zeros(7))


@pytest.mark.parametrize("shape", [(33, 7), (5, 4, 3)])
def test_summed_is_the_sum_and_sum_into_s_bits(case: Any, shape: tuple[int, ...]) -> None:
    """Σ along axis 0 to the dtype's rounding (a matrix's column sums: NumPy's GEMV), and bit
    for bit what sum_into writes, so gradients summed into a buffer or not agree."""
    from nnbackend._native import summed

    xp, be = case.backend.xp, case.backend
    x, host = _draw(case, shape, 4)
    got = summed(x, 0, xp)
    case.check_placement(got)
    _close(got, host.sum(axis=0), case, terms=shape[0])
    out = be.zeros(shape[1:], dtype=case.dtype_name)
    if sum_into(x, out, axis=0, xp=xp):
        np.testing.assert_array_equal(nb.to_numpy(out), nb.to_numpy(got))


@pytest.mark.parametrize("shape", [(200, 10), (7,), (3, 4, 5)])
def test_inner_is_the_sum_of_the_products(case: Any, shape: tuple[int, ...]) -> None:
    """Σ a ⊙ b over every element, a 0-d array of the inputs' dtype on their device, to the
    dtype's rounding; on NumPy it is the BLAS dot's result, and a non-contiguous operand
    (a transposed view) takes the standard spelling and gives the same sum."""
    xp = case.backend.xp
    a, a_host = _draw(case, shape, 5)
    b, b_host = _draw(case, shape, 6)
    got = inner(a, b, xp)
    case.check_placement(got)
    assert got.shape == () and got.dtype == a.dtype
    terms = int(np.prod(shape))
    _close(got, np.sum(a_host * b_host), case, terms=terms)
    if len(shape) == 2:
        _close(inner(a.T, b.T, xp), np.sum(a_host * b_host), case, terms=terms)
    if case.backend.name == "numpy":
        np.testing.assert_array_equal(got, np.vdot(a, b))


@pytest.mark.parametrize("shape", [(200, 10), (3, 1), (1, 7)])
def test_row_sums_are_the_sums_along_the_last_axis(case: Any, shape: tuple[int, ...]) -> None:
    """Σ along the last axis kept as a column (n, 1), in x's dtype and place, to the dtype's
    rounding, from a contiguous matrix and from a transposed view."""
    xp = case.backend.xp
    x, host = _draw(case, shape, 7)
    got = row_sums(x, xp)
    case.check_placement(got)
    assert tuple(got.shape) == (shape[0], 1) and got.dtype == x.dtype
    _close(got, host.sum(axis=1, keepdims=True), case, terms=shape[1])
    _close(row_sums(x.T, xp), host.T.sum(axis=1, keepdims=True), case, terms=shape[0])


def test_matmul_into_writes_the_product_or_declines(case: Any) -> None:
    xp, be = case.backend.xp, case.backend
    a, a_host = _draw(case, (9, 5), 1)
    b, b_host = _draw(case, (9, 4), 4)
    out = be.zeros((5, 4), dtype=case.dtype_name)
    if matmul_into(a.T, b, out, xp):
        _close(out, a_host.T @ b_host, case, terms=9)
    else:
        assert case.backend.name not in ("numpy", "torch", "cupy")
        np.testing.assert_array_equal(nb.to_numpy(out), np.zeros((5, 4)))


def test_masked_zeroes_where_the_mask_is_false(case: Any) -> None:
    xp = case.backend.xp
    x, host = _draw(case, (6, 5), 3)
    got = masked(x, x > 0.0, xp)
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(nb.to_numpy(got).astype(np.float64), np.maximum(host, 0.0))


def test_positive_part_is_the_standard_maximum_with_zero(case: Any) -> None:
    """max(x, 0) bit for bit ``xp.maximum(x, 0.0)``, NaN kept, on contiguous and strided x, on
    an x larger than any before (the shared zeros grow) and a smaller one after it."""
    from nnbackend._native import positive_part

    xp = case.backend.xp
    x, host = _draw(case, (7, 6), 5)
    nan = case.asarray(np.array([np.nan, -0.0, 0.0, -1.0, 2.0]))
    big, _ = _draw(case, (300, 301), 6)
    for a in (x, x[:, ::2], nan, big, x[:2, ...]):
        got = positive_part(a, xp)
        assert got.dtype == a.dtype and tuple(got.shape) == tuple(a.shape)
        case.check_placement(got)
        np.testing.assert_array_equal(nb.to_numpy(got), nb.to_numpy(xp.maximum(a, 0.0)))
    np.testing.assert_array_equal(nb.to_numpy(positive_part(x, xp)).astype(np.float64),
                                  np.maximum(host, 0.0))
    # in place where the library writes into x (NumPy), a new array elsewhere: the same values
    mine = xp.asarray(x, copy=True)
    got = positive_part(mine, xp, in_place=True)
    np.testing.assert_array_equal(nb.to_numpy(got).astype(np.float64), np.maximum(host, 0.0))
    assert (got is mine) == (case.backend.name == "numpy")


def test_windows_into_copies_the_windows_or_declines(case: Any) -> None:
    """im2col's windows (stride, dilation, chunks of samples) in one copy on NumPy, bit for
    bit the standard slices; elsewhere it declines and leaves ``out`` untouched."""
    from nnbackend._native import windows_into

    be = case.backend
    x, host = _draw(case, (4, 3, 9, 10), 5)
    kernel, stride, dilation, out_size, chunk = (3, 2), (2, 3), (2, 3), (3, 2), 2
    out = be.zeros((2, 3, *kernel, chunk, *out_size), dtype=case.dtype_name)
    if not windows_into(x, kernel, stride, dilation, out_size, chunk, out, case.xp):
        assert case.backend.name not in ("numpy",)
        np.testing.assert_array_equal(nb.to_numpy(out), 0.0)
        return
    got = nb.to_numpy(out)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            want = host[:, :, 2 * i:2 * i + 2 * 2 + 1:2, 3 * j:3 * j + 3 * 1 + 1:3]
            for n in range(4):
                np.testing.assert_array_equal(got[n // chunk, :, i, j, n % chunk], want[n])


def test_nan_free_answers_only_where_reading_is_free(case: Any) -> None:
    """True only on NumPy for an array without NaN (a host array: no synchronisation);
    False (unknown) elsewhere, without reading, and for an array with a NaN or no values."""
    from nnbackend._native import nan_free

    xp = case.backend.xp
    x, _ = _draw(case, (5, 7), 3)
    assert nan_free(x, xp) is (case.backend.name == "numpy")
    host = np.ones((4, 3))
    host[2, 1] = np.nan
    assert nan_free(case.asarray(host), xp) is False
    assert nan_free(case.asarray(np.ones((0, 3))), xp) is False


def test_fused_kernels_give_the_plain_kernels_results(case: Any) -> None:
    """On JAX the kernel runs compiled (jax.jit with its static arguments), elsewhere it is the
    kernel itself; either way the results are the plain kernel's (a pooling backward too)."""
    from nnbackend._native import fused
    from nnbackend.functional import pooling as P

    xp = case.backend.xp

    def kernel(a: Any, b: Any, *, scale: float, xp: Any) -> Any:
        return xp.maximum(a, b) * scale

    compiled = fused(kernel, xp, static=("scale", "xp"))
    assert (compiled is kernel) is (case.backend.name != "jax")
    a, _ = _draw(case, (4, 6), 1)
    b, _ = _draw(case, (4, 6), 2)
    np.testing.assert_array_equal(nb.to_numpy(compiled(a, b, scale=3.0, xp=xp)),
                                  nb.to_numpy(kernel(a, b, scale=3.0, xp=xp)))
    x, _ = _draw(case, (2, 2, 7, 6), 4)
    args = P.pool_args("max_pool2d", "max", 2, 3, 2, 1, 1, True)
    y, columns = P._max_columns_kernel(x, args=args, xp=xp)
    dy, _ = _draw(case, tuple(y.shape), 5)
    plain = P._max_backward_kernel(dy, columns, y, args=args, shape=(2, 2, 7, 6), xp=xp)
    fast = fused(P._max_backward_kernel, xp, static=P._STATIC_BACKWARD)(
        dy, columns, y, args=args, shape=(2, 2, 7, 6), xp=xp)
    np.testing.assert_array_equal(nb.to_numpy(fast), nb.to_numpy(plain))


def test_masked_into_writes_the_masked_values_or_declines(case: Any) -> None:
    """out[index] ← x · [mask] into a strided slice on NumPy, bit for bit ``masked``; the rest
    of ``out`` untouched; elsewhere it declines and leaves ``out`` as it was."""
    from nnbackend._native import masked_into

    be, xp = case.backend, case.backend.xp
    x, host = _draw(case, (3, 4), 6)
    mask = x > 0.0
    out = be.zeros((6, 9), dtype=case.dtype_name)
    index = (slice(1, None, 2), slice(0, 8, 2))
    want = np.zeros((6, 9))
    if not masked_into(x, mask, out, index, xp):
        assert case.backend.name != "numpy"
        np.testing.assert_array_equal(nb.to_numpy(out), want)
        return
    want[index] = np.maximum(host, 0.0)
    np.testing.assert_array_equal(nb.to_numpy(out).astype(np.float64), want)
    np.testing.assert_array_equal(nb.to_numpy(out)[index], nb.to_numpy(masked(x, mask, xp)))


def test_scatter_add_rows_matches_the_standard_segment_sum(case: Any) -> None:
    """The native scatter-add (NumPy's sorted reduceat, PyTorch's index_add_, JAX's .at[].add,
    CuPy's scatter_add) against the standard segment sum and a float64 np.add.at: repeated ids,
    ids never seen, the excluded id ``num`` (padding, ids out of range) adding nothing; None on
    the libraries without one (array-api-strict, the GPU-like test device)."""
    from nnbackend._native import scatter_add_rows
    from nnbackend.functional.embedding import segment_sum_rows

    ids_host = np.random.default_rng(6).integers(0, 8, 40)
    ids_host[:5] = 3
    ids_host[5:8] = 8  # excluded
    rows, host = _draw(case, (40, 3), 7)
    ids = case.asarray(ids_host, dtype=case.index_dtype_name)
    want = np.zeros((9, 3))
    np.add.at(want, ids_host, host)
    got = scatter_add_rows(ids, rows, 8, case.xp)
    if got is not None:
        case.check_placement(got)
        assert tuple(got.shape) == (8, 3)
        _close(got, want[:8], case, terms=8)
    else:
        assert case.backend.name in ("array_api_strict", "gpulike")
    if case.backend.name == "jax":  # its standard path: test_embedding (compiles ~4 s here)
        return
    standard = segment_sum_rows(ids, rows, num=8, xp=case.xp)
    case.check_placement(standard)
    _close(standard, want[:8], case, terms=8)
    if got is not None:
        _close(got, nb.to_numpy(standard).astype(np.float64), case, terms=8)


def test_ufunc_into_writes_the_function_or_declines(case: Any) -> None:
    """out ← xp.<name>(*args) into a strided slice (or in place) on NumPy, bit for bit the
    standard function's; elsewhere it declines and leaves ``out`` as it was."""
    from nnbackend._native import ufunc_into

    be, xp = case.backend, case.backend.xp
    x, _ = _draw(case, (3, 4), 7)
    y, _ = _draw(case, (3, 4), 8)
    out = be.zeros((3, 9), dtype=case.dtype_name)
    view = out[:, 1:5]
    if not ufunc_into("multiply", x, y, out=view, xp=xp):
        assert case.backend.name != "numpy"
        np.testing.assert_array_equal(nb.to_numpy(out), np.zeros((3, 9)))
        return
    host = nb.to_numpy(out)
    np.testing.assert_array_equal(host[:, 1:5], nb.to_numpy(xp.multiply(x, y)))
    np.testing.assert_array_equal(np.delete(host, np.s_[1:5], axis=1), np.zeros((3, 5)))
    want = nb.to_numpy(xp.tanh(x))
    assert ufunc_into("tanh", x, out=x, xp=xp)
    np.testing.assert_array_equal(nb.to_numpy(x), want)


@pytest.mark.parametrize("name", ["erf", "erfc"])
def test_special_matches_the_standard_erf(case: Any, name: str) -> None:
    """The library's own erf/erfc (PyTorch, SciPy for NumPy, JAX, CuPy) against the standard
    rational approximations of functional.special, on x in [−5, 5] (erfc's tail relative to its
    size); None on the libraries without one (array-api-strict, the GPU-like test device)."""
    from nnbackend._native import special
    from nnbackend.functional.special import erf_standard, erfc_standard

    x = case.asarray(np.linspace(-5.0, 5.0, 101))
    native = special(name, case.xp)
    if native is None:
        assert case.backend.name in ("array_api_strict", "gpulike")
        return
    got = native(x)
    case.check_placement(got)
    want = nb.to_numpy({"erf": erf_standard, "erfc": erfc_standard}[name](x, xp=case.xp))
    eps = np.finfo(case.dtype_name).eps
    np.testing.assert_allclose(nb.to_numpy(got), want, rtol=64 * eps, atol=4 * eps)


def test_transposed_operand_is_the_transpose(case: Any) -> None:
    """The right operand of a stacked product (a C-ordered copy on NumPy, the view elsewhere)
    holds bᵀ exactly, and products with it are the float64 products with bᵀ."""
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(2, 3, 5, 4)), rng.normal(size=(2, 3, 6, 4))
    xa, xb = case.asarray(a), case.asarray(b)
    t = transposed_operand(xb, case.xp)
    held_a, held_b = case.backend.to_numpy(xa), case.backend.to_numpy(xb)
    np.testing.assert_array_equal(case.backend.to_numpy(t), held_b.swapaxes(-1, -2))
    want = held_a.astype(np.float64) @ held_b.astype(np.float64).swapaxes(-1, -2)
    np.testing.assert_allclose(case.backend.to_numpy(xa @ t), want, rtol=case.rtol, atol=case.rtol)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def test_parallel_parts_follow_numpys_blas_threads(case: Any) -> None:
    """As many parts as NumPy's BLAS has threads (and the process has cores, and items) on
    NumPy; one part on every other library, or when BLAS runs on one thread."""
    on_numpy = nb._libraries.library_of(case.xp).native is np
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        assert parallel_parts(8, case.xp) == (min(2, _cores()) if on_numpy else 1)
        assert parallel_parts(1, case.xp) == 1
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        assert parallel_parts(8, case.xp) == 1


def test_run_parts_covers_the_range_once_and_restores_blas_threads() -> None:
    """Contiguous parts cover range(n) exactly once, each part on its own thread with BLAS on
    one thread meanwhile; afterwards BLAS has its threads back."""
    blas = _blas_threads()
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        seen: list[tuple[int, int, int, int, str]] = []

        def run(lo: int, hi: int, part: int) -> None:
            seen.append((lo, hi, part, blas.get_num_threads(), threading.current_thread().name))

        run_parts(run, 10, 3)
        assert sorted(s[:3] for s in seen) == [(0, 3, 0), (3, 6, 1), (6, 10, 2)]
        assert {s[3] for s in seen} == {1}
        assert blas.get_num_threads() == 2
        seen.clear()
        run_parts(run, 5, 2)
        assert sorted(s[:3] for s in seen) == [(0, 2, 0), (2, 5, 1)]
        assert len({s[4] for s in seen}) == 2  # the caller's thread and a worker


def test_run_parts_raises_a_parts_error_after_every_part_ends() -> None:
    """An exception in one part is raised once the others have finished, and BLAS's threads
    are restored; a loop inside a running loop runs in one part (BLAS threads untouched)."""
    blas = _blas_threads()
    finished: list[int] = []

    def failing(lo: int, hi: int, part: int) -> None:
        if part == 1:
            msg = "part 1 failed"
            raise ValueError(msg)
        finished.append(part)

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        with pytest.raises(ValueError, match="part 1 failed"):
            run_parts(failing, 6, 3)
        assert sorted(finished) == [0, 2]
        assert blas.get_num_threads() == 2
        inner: list[tuple[int, int, int]] = []

        def outer(lo: int, hi: int, part: int) -> None:
            if part == 0:
                run_parts(lambda a, b, k: inner.append((a, b, k)), 4, 2)

        run_parts(outer, 2, 2)
        assert inner == [(0, 4, 0)]
        assert blas.get_num_threads() == 2


def test_run_parts_starts_afresh_after_a_fork() -> None:
    """The fork hook (what a forked child runs: it has none of the parent's threads) drops
    the pool and the lock, and the next loop makes a new pool and runs its parts. The hook is
    called directly: a real fork here would fork JAX's threads too."""
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        run_parts(lambda a, b, k: None, 4, 2)
        assert _native._POOL
        old_pool = _native._POOL[0]
        _native._forget_threads_after_fork()
        assert not _native._POOL
        seen: list[int] = []
        run_parts(lambda a, b, k: seen.append(k), 4, 2)
        assert sorted(seen) == [0, 1]
        assert _native._POOL[0] is not old_pool
    old_pool.shutdown()
