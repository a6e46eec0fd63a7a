"""Native fast paths: the few places where a library's own spelling beats the standard one.

Each helper answers with the Array API spelling for any namespace whose library declares no native
spellings, so the math stays portable; for NumPy, CuPy and PyTorch (and the GPU-like test device,
which takes CuPy's spellings) it calls the library directly where that saves an allocation or a
layer of dispatch that a small network pays on every step. Tests check every fast
path against the standard spelling on the whole backend matrix.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, TypeVar, cast

import numpy as np
from array_api_compat import device

from ._libraries import library_of
from ._typing import Array, Namespace

__all__ = [
    "IntoKernels", "channel_operand", "fused", "inner", "into_kernels", "masked", "masked_into",
    "matmul_into", "maximizer", "nan_free", "overflow_ignored", "parallel_parts", "positive_part",
    "row_sums", "run_parts", "scatter_add_rows", "special", "sum_into", "summed", "summer",
    "ufunc_into", "windows_into",
]

Reduction = Callable[..., Array]
Kernel = TypeVar("Kernel", bound=Callable[..., Any])


@functools.cache
def summer(xp: Namespace) -> Reduction:
    """``xp.sum`` for floating arrays, as ``sum(x, axis=..., keepdims=...)``.

    On NumPy this is the ufunc reduction ``np.add.reduce``, which ``np.sum`` calls after ~1 µs
    of argument handling (the same pairwise summation, so the same bits).
    """
    return _ufunc_reduction(np.add) if library_of(xp).native is np else xp.sum


@functools.cache
def maximizer(xp: Namespace) -> Reduction:
    """``xp.max``, as ``max(x, axis=..., keepdims=...)``; ``np.maximum.reduce`` on NumPy.

    On NumPy the row maxima of a floating matrix with at most ``_NARROW_ROWS`` columns (a
    classifier's logits: a softmax's shift) are taken over its transposed copy's rows, K
    elementwise ``maximum`` passes across all n rows at once, instead of n inner loops of K
    values: for (200, 10) float64 6.6 against 13 µs, (2000, 10) 28 against 92 µs (the same
    values: a maximum is exact). Wider rows are reduced in place (at 64 columns the
    transposed copy would take 26 µs against the reduction's 16).
    """
    return _max_reduction if library_of(xp).native is np else xp.max


def _ufunc_reduction(ufunc: Any) -> Reduction:
    reduce = ufunc.reduce

    def reduction(x: Array, /, *, axis: Any = None, keepdims: bool = False) -> Array:
        return reduce(x, axis=axis, keepdims=keepdims)

    return reduction


_NARROW_ROWS = 16
_maximum = _ufunc_reduction(np.maximum)


def _max_reduction(x: Array, /, *, axis: Any = None, keepdims: bool = False) -> Array:
    if (x.ndim == 2 and axis in (1, -1) and x.shape[1] <= _NARROW_ROWS
            and x.dtype.kind == "f"):
        m = _maximum(np.ascontiguousarray(x.T), axis=0)
        return m.reshape(x.shape[0], 1) if keepdims else m
    return _maximum(x, axis=axis, keepdims=keepdims)


def _library(xp: Namespace) -> ModuleType | None:
    """The module whose NumPy-style spellings serve ``xp`` (NumPy, PyTorch, CuPy, the GPU-like
    test device), or None where only the standard applies (a capability of its library)."""
    return library_of(xp).native


def masked(x: Array, mask: Array, xp: Namespace, *, in_place: bool = False) -> Array:
    """x · [mask]: ``x`` where the boolean ``mask`` holds, else 0; a new array, or with
    ``in_place`` written into x where it can be (NumPy, a writeable x of the product's shape:
    x itself is returned; a new array elsewhere).

    NumPy, CuPy and PyTorch multiply by a boolean array directly; the standard has no
    bool × float promotion, so elsewhere the mask is first cast to ``x``'s dtype (one more pass).
    """
    library = _library(xp)
    if in_place and library is np and x.flags.writeable and x.shape == mask.shape:
        return np.multiply(x, mask, out=x)
    return x * mask if library is not None else x * xp.astype(mask, x.dtype)


def positive_part(x: Array, xp: Namespace, *, in_place: bool = False) -> Array:
    """max(x, 0) (NaN stays NaN): the ReLU; a new array, or with ``in_place`` written into x
    where it can be (NumPy, a C-contiguous x: x itself is returned; a new array elsewhere).

    NumPy 2's ``maximum`` has SIMD loops for two arrays but not for an array and a scalar, so
    on NumPy a C-contiguous floating x is compared with a zeros array of its shape, a view of a
    shared read-only buffer: 3× faster (20,000 float64: 4.4 against 14.5 µs; 524,288 float32:
    77 against 241 µs; the same bits). The buffer grows to the largest x seen; never written,
    its pages are the kernel's zero page, which costs no memory. Elsewhere ``xp.maximum(x, 0)``.
    """
    if _library(xp) is np and x.flags.c_contiguous and x.dtype.kind == "f":
        return np.maximum(x, _zeros(x.size, x.dtype).reshape(x.shape),
                          out=x if in_place else None)
    return xp.maximum(x, 0.0)


_CONSTANTS: dict[tuple[float, Any], np.ndarray] = {}


def _constant(value: float, n: int, dtype: Any) -> np.ndarray:
    """n copies of ``value`` in ``dtype``, read-only: a view of a buffer shared by all callers
    that grows to the largest n asked for."""
    buffer = _CONSTANTS.get((value, dtype))
    if buffer is None or buffer.size < n:
        buffer = np.full(n, value, dtype=dtype) if value else np.zeros(n, dtype=dtype)
        buffer.flags.writeable = False
        _CONSTANTS[value, dtype] = buffer
    return buffer[:n]


def _zeros(n: int, dtype: Any) -> np.ndarray:
    return _constant(0.0, n, dtype)  # calloc: untouched pages, read as the zero page


def _ones(n: int, dtype: Any) -> np.ndarray:
    return _constant(1.0, n, dtype)


def masked_into(x: Array, mask: Array, out: Array, index: Any, xp: Namespace) -> bool:
    """out[index] ← x · [mask] (as ``masked``) written straight into that part of ``out`` (a
    strided slice, say) where the library is NumPy, saving a temporary and its copy; False
    (``out`` untouched) elsewhere, where the caller assigns ``masked(x, mask, xp)``."""
    if _library(xp) is not np:
        return False
    np.multiply(x, mask, out=out[index])
    return True


def ufunc_into(name: str, *args: Array, out: Array, xp: Namespace) -> bool:
    """out ← ``name``(*args) (an elementwise function of the standard: ``"tanh"``,
    ``"multiply"``, ...) written straight into ``out`` (a view of a buffer, or an argument
    itself) where the library is NumPy, saving a temporary and its copy; False (``out``
    untouched) elsewhere, where the caller assigns ``xp.<name>(*args)``.

    The recurrent layers' per-step gate arithmetic writes into its step buffers this way.
    """
    if _library(xp) is not np:
        return False
    getattr(np, name)(*args, out=out)
    return True


class IntoKernels:
    """``k.<name>(*args, out=out)``: out ← xp.<name>(*args) for the standard's elementwise
    functions, each resolved once per namespace (see :func:`into_kernels`).

    On NumPy ``k.multiply`` *is* ``np.multiply``: a loop that runs a few thousand small
    elementwise passes per step (the recurrent layers' gates, ~50 per time step) pays neither
    ``ufunc_into``'s lookup of the library and of the function on every call (~1 µs, as much as
    the pass itself on a (32, 128) block) nor a temporary. Elsewhere the standard result is
    assigned into ``out``. ``native`` says which: loops choose cheaper formulations (a whole-row
    pass over a view) only where the writes cost nothing extra.
    """

    def __init__(self, xp: Namespace) -> None:
        self.xp = xp
        self.native = _library(xp) is np

    def __getattr__(self, name: str) -> Callable[..., None]:
        # Called only for names not yet resolved: the kernel is then stored on the instance.
        if name.startswith("_"):
            raise AttributeError(name)
        if self.native:
            kernel: Callable[..., None] = getattr(np, name)
        else:
            function = getattr(self.xp, name)

            def kernel(*args: Any, out: Array) -> None:
                out[...] = function(*args)

        setattr(self, name, kernel)
        return kernel


@functools.cache
def into_kernels(xp: Namespace) -> IntoKernels:
    """The :class:`IntoKernels` of ``xp`` (one per namespace)."""
    return IntoKernels(xp)


def overflow_ignored() -> np.errstate:
    """A context in which an overflow to ±inf that the caller's formula expects raises no
    warning: NumPy's ``errstate(over="ignore")``, taken on every library (NumPy warns, and so
    does the GPU-like test device, which computes with NumPy; CuPy, PyTorch and the rest never
    warn; NumPy's error state is all it touches)."""
    return np.errstate(over="ignore")


def matmul_into(a: Array, b: Array, out: Array, xp: Namespace) -> bool:
    """out ← a @ b without a temporary where the library can write a product into ``out``.

    Returns False (and leaves ``out`` alone) where it cannot: the caller then computes
    ``a @ b`` the standard way.
    """
    library = _library(xp)
    if library is None:
        return False
    library.matmul(a, b, out=out)
    return True


def sum_into(x: Array, out: Array, *, axis: int, xp: Namespace) -> bool:
    """out ← Σ x along ``axis`` without a temporary where the library can reduce into ``out``.

    Returns False (and leaves ``out`` alone) where it cannot. On NumPy a matrix's column sums
    (axis 0 of a 2-D floating x, a bias's gradient) are the product 1ᵀ x, one GEMV: 2.2× faster
    than the reduction for (200, 100) float64, 3× for (200, 10), and no less accurate (NumPy
    sums along a non-contiguous axis row by row, where BLAS keeps several partial sums).
    """
    library = _library(xp)
    if library is None:
        return False
    if library is np:
        if _column_sums(x, axis) and out.dtype == x.dtype:
            np.matmul(_ones(x.shape[0], x.dtype), x, out=out)
        else:
            np.add.reduce(x, axis=axis, out=out)  # np.sum's loop without its argument handling
    elif library.__name__ == "torch":
        library.sum(x, dim=axis, out=out)
    else:
        library.sum(x, axis=axis, out=out)
    return True


def summed(x: Array, axis: int, xp: Namespace) -> Array:
    """Σ x along ``axis``, a new array, summed as :func:`sum_into` sums (so that a gradient
    written into a buffer and one allocated agree bit for bit)."""
    if _library(xp) is np and _column_sums(x, axis):
        return np.matmul(_ones(x.shape[0], x.dtype), x)
    return summer(xp)(x, axis=axis)


def row_sums(x: Array, xp: Namespace) -> Array:
    """Σ x along the last axis of a matrix, kept as a column (n, 1): a softmax's
    normalisers.

    On NumPy the product x 1 (one GEMV): 1.9 µs for (200, 10) float64 against 6.4 µs for the
    reduction, which runs a loop of ten values per row. Elsewhere the standard sum.
    """
    if _library(xp) is np and x.ndim == 2 and x.dtype.kind == "f":
        return np.matmul(x, _ones(x.shape[1], x.dtype)).reshape(x.shape[0], 1)
    return summer(xp)(x, axis=-1, keepdims=True)


def _column_sums(x: np.ndarray, axis: int) -> bool:
    """Whether NumPy sums x along ``axis`` as the GEMV 1ᵀ x (a floating matrix's columns)."""
    return axis == 0 and x.ndim == 2 and x.dtype.kind == "f"


def inner(a: Array, b: Array, xp: Namespace) -> Array:
    """Σ a ⊙ b over every element of two arrays of one shape, a 0-d array.

    On NumPy ``np.vdot`` of the two (contiguous) arrays: one BLAS dot, 1.2 µs for (200, 10)
    float64 against 3.3 µs for the product and its reduction, and no temporary. Elsewhere the
    product and its sum: a library's dot may round float32 products to less than float32
    (JAX's default precision on a GPU is TF32), the elementwise product never does.
    """
    if _library(xp) is np:
        if a.flags.c_contiguous and b.flags.c_contiguous:
            return np.asarray(np.vdot(a, b))
        return np.asarray(np.add.reduce(a * b, axis=None))
    return xp.sum(a * b)


def channel_operand(v: Array, length: int, xp: Namespace) -> Array:
    """A per-channel vector v (C,) as an operand of arrays laid out (N, C, L).

    The standard spelling is v reshaped to (C, 1), broadcast along L. NumPy runs a loop with a
    stride-0 operand at about half the speed of a contiguous one (measured on (64, 6, 784)
    float32: 63 µs for x · v[:, None] against 31 µs for x · x), so on NumPy v is materialised
    as a contiguous (C, L) block (``np.repeat``: C·L values, 1/N of the data), which NumPy's
    iterator coalesces with x's trailing axes into one contiguous loop per sample. The values
    are the same, so every result is bit for bit the standard one's.
    """
    if library_of(xp).native is np and length > 1:
        return np.repeat(v, length).reshape(v.shape[0], length)
    return xp.reshape(v, (v.shape[0], 1))


def transposed_operand(a: Array, xp: Namespace) -> Array:
    """aᵀ (the last two axes swapped) as the right operand of a stacked product.

    On NumPy a C-ordered copy: its stacked matmul with a transposed (strided) right operand
    ran 3-20 times slower with two OpenBLAS threads (measured on (64, 128, 32) @ (64, 32, 128)
    float32: 2.6 ms fastest, 19 ms median on a busy machine, against 0.8 and 1.0 ms with the
    copy, which costs 0.16 ms); elsewhere the standard's view (the libraries' batched GEMMs
    take transposed operands as they are). The values are the same either way.
    """
    t = xp.matrix_transpose(a)
    return xp.reshape(t, tuple(t.shape), copy=True) if library_of(xp).native is np else t


def nan_free(x: Array, xp: Namespace) -> bool:
    """Whether ``x`` certainly holds no NaN, so a caller may skip testing for NaN.

    Checked on NumPy only, whose arrays are in host memory (reading costs no synchronisation):
    one fast reduction, ``max`` propagating NaN. Elsewhere the answer is False (unknown), and
    the caller takes the path that handles NaN, so no device is ever read.
    """
    if _library(xp) is not np or x.size == 0:
        return False
    return not np.isnan(np.maximum.reduce(x, axis=None))


def windows_into(
    x: Array, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
    out_size: tuple[int, int], chunk: int, out: Array, xp: Namespace,
) -> bool:
    """out[m, c, i, j, s, p, q] ← x[m·chunk + s, c, p·s_h + i·d_h, q·s_w + j·d_w]: im2col's
    windows of x (N, C, H, W) into ``out`` (N/chunk, C, kh, kw, chunk, OH, OW), in one copy
    where the library is NumPy.

    NumPy's ``sliding_window_view`` is a strided view of every window; stepped by the stride
    and the dilation, transposed to ``out``'s order and copied once, it replaces kh·kw slice
    assignments (measured on the 3×3 (32, 16, 34, 34) float32 case: 1.0-1.4 ms against 2.4
    ms). The values are copies, so the result is the standard path's bit for bit. Returns False
    (``out`` untouched) elsewhere: the caller slices.
    """
    if _library(xp) is not np:
        return False
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_size
    windows = np.lib.stride_tricks.sliding_window_view(
        x, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    windows = windows[:, :, :sh * (oh - 1) + 1:sh, :sw * (ow - 1) + 1:sw, ::dh, ::dw]
    n, c = x.shape[0], x.shape[1]
    windows = windows.reshape(n // chunk, chunk, c, oh, ow, kh, kw)  # a view: splits axis 0
    np.copyto(out, windows.transpose(0, 2, 5, 6, 1, 3, 4))
    return True


# --------------------------------------------------------------------------------------------
# Parts of a loop of small products on the CPU's cores (NumPy)

_PARALLEL = threading.Lock()  # held by the one loop whose parts run on threads
_POOL: list[ThreadPoolExecutor] = []


def _forget_threads_after_fork() -> None:
    """A forked child has none of its parent's threads: a pool whose worker is gone would
    leave submitted parts waiting forever, and the lock may have been held by a thread that
    no longer exists. The child starts afresh."""
    global _PARALLEL
    _POOL.clear()
    _PARALLEL = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads_after_fork)


@functools.cache
def _blas_threads() -> Any:
    """threadpoolctl's controller of NumPy's BLAS (OpenBLAS, MKL, BLIS), or None."""
    try:
        import threadpoolctl
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    for controller in threadpoolctl.ThreadpoolController().lib_controllers:
        if controller.user_api == "blas":
            return controller
    return None  # pragma: no cover - NumPy always links a BLAS


def parallel_parts(n: int, xp: Namespace) -> int:
    """Into how many parts :func:`run_parts` splits a loop over ``n`` items: as many as NumPy's
    BLAS has threads (at most ``n``), 1 on any other library (their products thread on their
    own, or run on a device) or when BLAS runs on one thread.

    Why: a loop of small products (a convolution's columns a block of samples at a time) on
    a BLAS with two threads wakes its second thread for each product and leaves it idle
    during each im2col copy; on a virtual machine that wake-up costs as much as the product
    (measured, 3×3 16→16 columns of 4 samples: 270 µs a sample for copy + product on two
    BLAS threads, 106 on one). Two halves of the loop on two Python threads, BLAS on one
    thread each (NumPy releases the GIL for both the copies and the products), took the
    residual block's forward convolution from 8.4 to 2.8 ms.
    """
    if _library(xp) is not np or n < 2:
        return 1
    blas = _blas_threads()
    threads = 1 if blas is None else int(blas.get_num_threads())
    return max(1, min(n, threads, len(os.sched_getaffinity(0)) if hasattr(
        os, "sched_getaffinity") else os.cpu_count() or 1))


def run_parts(run: Callable[[int, int, int], None], n: int, parts: int) -> None:
    """``run(lo, hi, part)`` for ``parts`` contiguous parts of ``range(n)``, each on its own
    thread (the calling thread takes part 0) with BLAS on one thread meanwhile; in one call
    ``run(0, n, 0)`` when ``parts`` is 1 or another loop holds the threads already (a second
    caller must not change BLAS's threads under the first). Parts write disjoint results;
    the first exception of any part is raised once every part has finished."""
    if parts <= 1 or not _PARALLEL.acquire(blocking=False):
        run(0, n, 0)
        return
    try:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) - 1),
                                            thread_name_prefix="nnbackend-part"))
        blas = _blas_threads()
        threads = blas.get_num_threads()
        blas.set_num_threads(1)
        try:
            bounds = [n * k // parts for k in range(parts + 1)]
            futures = [_POOL[0].submit(run, bounds[k], bounds[k + 1], k)
                       for k in range(1, parts)]
            try:
                run(bounds[0], bounds[1], 0)
            finally:
                for future in futures:
                    future.exception()  # wait for every part before BLAS threads change
            for future in futures:
                future.result()
        finally:
            blas.set_num_threads(threads)
    finally:
        _PARALLEL.release()


def scatter_add_rows(ids: Array, rows: Array, num: int, xp: Namespace) -> Array | None:
    """out[v] = Σ_{m : ids[m] = v} rows[m] for v in [0, num) (an embedding's ∂L/∂W), by the
    library's own scatter-add, or None where it has none (the caller takes the standard segment
    sum, :func:`nnbackend.functional.embedding.segment_sum_rows`).

    ``ids`` (M,) in [0, num], where the id ``num`` adds nothing (padding, ids out of range);
    ``rows`` (M, E). The sum runs into a (num + 1, E) buffer of zeros whose last row takes the
    excluded ids, and ``out`` is its first ``num`` rows: CuPy's ``cupyx.scatter_add``,
    PyTorch's ``index_add_`` (each accumulates repeated ids, unlike ``out[ids] += rows``),
    JAX's ``.at[ids].add`` through ``array_api_extra.at``. On NumPy, ``np.add.at`` takes its
    slow generic loop for rows (measured 0.84 ms for 1024 rows of 64 float32 into 100 ids,
    4.9 ms for 2048 × 128), so the rows are sorted by id (a stable radix sort) and each run
    summed by ``np.add.reduceat`` (0.20 and 0.53 ms), in the rows' order within a run. The
    GPU-like test device has no scatter (CuPy's lives in ``cupyx``), so it runs the standard
    path.
    """
    name = library_of(xp).name
    if name not in ("numpy", "cupy", "torch", "jax"):
        return None
    width = rows.shape[1]
    out = xp.zeros((num + 1, width), dtype=rows.dtype, device=device(rows))
    if name == "numpy":
        if ids.shape[0]:
            order = np.argsort(ids, kind="stable")
            ordered = ids[order]
            heads = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
            out[ordered[heads]] = np.add.reduceat(rows[order], heads, axis=0)
    elif name == "torch":
        out.index_add_(0, ids, rows)
    elif name == "cupy":
        import importlib  # only reached with a CuPy namespace: CuPy (and cupyx) installed

        importlib.import_module("cupyx").scatter_add(out, ids, rows)
    else:
        import array_api_extra as xpx

        out = xpx.at(out)[ids].add(rows)
    return out[:num, :]


@functools.cache
def special(name: str, xp: Namespace) -> Callable[[Array], Array] | None:
    """The library's own ``erf`` or ``erfc`` (``name``) for arrays of ``xp``, or None where it
    has none (the caller evaluates :mod:`nnbackend.functional.special`'s standard rational
    approximations, over a hundred array operations).

    PyTorch's ``torch.special``, JAX's ``jax.scipy.special``, CuPy's ``cupyx.scipy.special``,
    and for NumPy SciPy's ``scipy.special`` when SciPy is installed (it is not a dependency);
    each keeps the input's dtype. The GPU-like test device and array-api-strict have none.
    """
    library = library_of(xp).name
    module = {"torch": "torch.special", "jax": "jax.scipy.special",
              "cupy": "cupyx.scipy.special", "numpy": "scipy.special"}.get(library)
    if module is None:
        return None
    import importlib

    try:
        found = getattr(importlib.import_module(module), name)
    except ImportError:  # NumPy without SciPy
        return None
    return cast(Callable[[Array], Array], found)


def fused(kernel: Kernel, xp: Namespace, *, static: tuple[str, ...]) -> Kernel:
    """``kernel`` itself, or on JAX ``jax.jit(kernel)``, compiled once per value of its
    keyword arguments named in ``static`` (hashable: shapes, parsed arguments, ``xp``).

    Eager JAX compiles every operation on its first shapes: a pooling backward of a 3 × 3
    window is some forty small compilations, against one for the whole kernel (and one
    dispatch per call after it, its operations fused). The kernel is the same standard code
    either way, and inside a caller's own ``jax.jit`` the inner one is inlined.
    """
    if library_of(xp).name != "jax":
        return kernel
    return cast(Kernel, _jitted(kernel, static))


@functools.cache
def _jitted(kernel: Callable[..., Any], static: tuple[str, ...]) -> Callable[..., Any]:
    import jax  # only reached with a JAX namespace: JAX is installed

    return cast(Callable[..., Any], jax.jit(kernel, static_argnames=static))
