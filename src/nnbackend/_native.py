"""Native fast paths: the few places where a library's own spelling beats the standard one.

Each helper answers with the Array API spelling for any namespace it does not know, so the math
stays portable; for NumPy, CuPy and PyTorch it calls the library directly where that saves an
allocation or a layer of dispatch that a small network pays on every step. Tests check every fast
path against the standard spelling on the whole backend matrix.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import array_api_compat
import numpy as np

from ._typing import Array, Namespace

__all__ = ["masked", "matmul_into", "maximizer", "sum_into", "summer"]

Reduction = Callable[..., Array]


@functools.cache
def summer(xp: Namespace) -> Reduction:
    """``xp.sum`` for floating arrays, as ``sum(x, axis=..., keepdims=...)``.

    On NumPy this is the ufunc reduction ``np.add.reduce``, which ``np.sum`` calls after ~1 µs
    of argument handling (the same pairwise summation, so the same bits).
    """
    return _ufunc_reduction(np.add) if array_api_compat.is_numpy_namespace(xp) else xp.sum


@functools.cache
def maximizer(xp: Namespace) -> Reduction:
    """``xp.max``, as ``max(x, axis=..., keepdims=...)``; ``np.maximum.reduce`` on NumPy."""
    return _ufunc_reduction(np.maximum) if array_api_compat.is_numpy_namespace(xp) else xp.max


def _ufunc_reduction(ufunc: Any) -> Reduction:
    reduce = ufunc.reduce

    def reduction(x: Array, /, *, axis: Any = None, keepdims: bool = False) -> Array:
        return reduce(x, axis=axis, keepdims=keepdims)

    return reduction


def masked(x: Array, mask: Array, xp: Namespace) -> Array:
    """x · [mask]: ``x`` where the boolean ``mask`` holds, else 0.

    NumPy, CuPy and PyTorch multiply by a boolean array directly; the standard has no
    bool × float promotion, so elsewhere the mask is first cast to ``x``'s dtype (one more pass).
    """
    if (
        array_api_compat.is_numpy_namespace(xp)
        or array_api_compat.is_cupy_namespace(xp)
        or array_api_compat.is_torch_namespace(xp)
    ):
        return x * mask
    return x * xp.astype(mask, x.dtype)


def matmul_into(a: Array, b: Array, out: Array, xp: Namespace) -> bool:
    """out ← a @ b without a temporary where the library can write a product into ``out``.

    Returns False (and leaves ``out`` alone) where it cannot: the caller then computes
    ``a @ b`` the standard way.
    """
    if array_api_compat.is_numpy_namespace(xp):
        np.matmul(a, b, out=out)
        return True
    if array_api_compat.is_torch_namespace(xp):
        if a.requires_grad or b.requires_grad:  # torch refuses out= under autograd
            return False
        import torch

        torch.matmul(a, b, out=out)
        return True
    if array_api_compat.is_cupy_namespace(xp):
        import cupy

        cupy.matmul(a, b, out=out)
        return True
    return False


def sum_into(x: Array, out: Array, *, axis: int, xp: Namespace) -> bool:
    """out ← Σ x along ``axis`` without a temporary where the library can reduce into ``out``.

    Returns False (and leaves ``out`` alone) where it cannot.
    """
    if array_api_compat.is_numpy_namespace(xp):
        np.add.reduce(x, axis=axis, out=out)
        return True
    if array_api_compat.is_torch_namespace(xp):
        if x.requires_grad:  # torch refuses out= under autograd
            return False
        import torch

        torch.sum(x, dim=axis, out=out)
        return True
    if array_api_compat.is_cupy_namespace(xp):
        import cupy

        cupy.sum(x, axis=axis, out=out)
        return True
    return False
