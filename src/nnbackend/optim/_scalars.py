"""Per-step values of the update rules as Python numbers or as 0-d device arrays.

An update rule takes its step count t and learning rate α either as Python numbers (the eager
default: scalar operands cost nothing and the bias corrections are computed on the host in
float64) or as 0-d arrays on the parameters' device (a compiled step, jitted by JAX or captured
in a CUDA graph, then takes them as inputs instead of freezing them as constants or
recompiling every step). The helpers here give the array forms; the Python-number path of each
rule is untouched and stays bit-identical to what it always computed.

On the array path the scalar arithmetic runs in the dtype of the 0-d learning rate (float64
where the device has it, see :func:`nnbackend.state.training_state`) or else the parameter's,
and each factor is cast once to the parameter's dtype, so a float32 model receives the same
single rounding of a float64 value that the Python path gives it. The bias correction
1 − βᵗ is computed as −expm1(t·ln β): in float32, 1 − βᵗ would lose most of its digits for small
t (1 − 0.999 keeps 10 bits), the expm1 form stays within a few ulp for every t.
"""

from __future__ import annotations

import math
from typing import Any

from .._typing import Array, Namespace

__all__ = ["NUMBER", "adam_factors", "in_dtype_of", "is_number"]

NUMBER = (int, float)
"""The eager form of a per-step value: ``isinstance(value, NUMBER)`` (a tuple: the cheapest test
for the hot path)."""


def is_number(value: Any) -> bool:
    """Whether ``value`` is a Python number (the eager form) rather than a 0-d array."""
    return isinstance(value, NUMBER)


def in_dtype_of(value: Array, like: Array, xp: Namespace) -> Array:
    """The 0-d array ``value`` in ``like``'s dtype (itself when it already is)."""
    return value if value.dtype == like.dtype else xp.astype(value, like.dtype)


def _one_minus_power(beta: float, t: Array, xp: Namespace) -> Array | None:
    """1 − βᵗ for a 0-d floating array t ≥ 1, as −expm1(t·ln β); None for β = 0 (it is 1)."""
    if beta == 0.0:
        return None
    bias = xp.expm1(t * math.log(beta))
    return -bias


def adam_factors(step: Any, lr: Any, beta1: float, beta2: float, like: Array,
                 xp: Namespace) -> tuple[Any, Any]:
    """Adam's √(1 − β2ᵗ) and α / (1 − β1ᵗ) when ``step`` or ``lr`` is a 0-d array.

    Returns them as 0-d arrays in ``like``'s dtype (the divisor of √v and the factor of
    m / (√v̂ + ε)), or as Python floats where they involve no array. NumPy turns 0-d results
    into NumPy scalars (float subclasses, but typed: a float64 one would make a float32 update
    compute in float64), so results are cast by their dtype, never recognised as numbers.
    """
    if is_number(step):
        root = math.sqrt(1.0 - beta2**step)
        return root, in_dtype_of(lr / (1.0 - beta1**step), like, xp)
    dtype = like.dtype if is_number(lr) else lr.dtype
    t = xp.astype(step, dtype)
    bias2 = _one_minus_power(beta2, t, xp)
    root = 1.0 if bias2 is None else in_dtype_of(xp.sqrt(bias2), like, xp)
    bias1 = _one_minus_power(beta1, t, xp)
    if bias1 is None:
        return root, lr if is_number(lr) else in_dtype_of(lr, like, xp)
    return root, in_dtype_of(lr / bias1, like, xp)
