"""Independent NumPy references for the tests: formulas, derivatives, finite differences, and
the IDX file encoding.

Nothing here imports nnbackend's math: each formula is written from its textbook definition so
that the library is compared with a second, separate implementation.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np

LEAKY_SLOPE = 0.01


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e⁻ˣ), evaluated on each sign separately so no exp overflows."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def forward(name: str, x: np.ndarray, axis: int = -1) -> np.ndarray:
    """The activation ``name`` of x, in float64."""
    x = np.asarray(x, dtype=np.float64)
    if name == "identity":
        return x.copy()
    if name == "relu":
        return np.where(x > 0, x, 0.0)
    if name == "leaky_relu":
        return np.where(x > 0, x, LEAKY_SLOPE * x)
    if name == "sigmoid":
        return sigmoid(x)
    if name == "tanh":
        return np.tanh(x)
    if name == "softmax":
        return softmax(x, axis)
    if name == "log_softmax":
        return log_softmax(x, axis)
    raise AssertionError(name)


def backward(name: str, x: np.ndarray, dy: np.ndarray, axis: int = -1) -> np.ndarray:
    """∂L/∂x from ∂L/∂y for the activation ``name``, in closed form (from x, not from y)."""
    x = np.asarray(x, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    if name == "identity":
        return dy.copy()
    if name == "relu":
        return dy * (x > 0)
    if name == "leaky_relu":
        return dy * np.where(x > 0, 1.0, LEAKY_SLOPE)
    if name == "sigmoid":
        s = sigmoid(x)
        return dy * s * (1.0 - s)
    if name == "tanh":
        return dy / np.cosh(x) ** 2
    if name in ("softmax", "log_softmax"):
        # Build the full Jacobian of each slice along ``axis`` and apply its transpose.
        xm = np.moveaxis(x, axis, -1)
        dym = np.moveaxis(dy, axis, -1)
        s = softmax(xm, -1)
        eye = np.eye(xm.shape[-1])
        if name == "softmax":
            jac = s[..., :, None] * eye - s[..., :, None] * s[..., None, :]  # ∂yᵢ/∂xⱼ
        else:
            jac = eye - s[..., None, :]  # ∂yᵢ/∂xⱼ = δᵢⱼ − sⱼ
        dx = np.einsum("...i,...ij->...j", dym, jac)
        return np.moveaxis(dx, -1, axis)
    raise AssertionError(name)


def central_difference(f: Callable[[np.ndarray], float], x: np.ndarray,
                       eps: float = 1e-6) -> np.ndarray:
    """(f(x + h eᵢ) − f(x − h eᵢ)) / 2h for every element i, on a float64 host copy of x."""
    x = np.array(x, dtype=np.float64, copy=True)
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = float(f(x))
        flat[i] = old - eps
        down = float(f(x))
        flat[i] = old
        gflat[i] = (up - down) / (2.0 * eps)
    return grad


def rel_err(got: Any, want: Any) -> float:
    """Normwise relative error max|got − want| / max|want| (0 when both are zero)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = float(np.max(np.abs(want), initial=0.0))
    err = float(np.max(np.abs(got - want), initial=0.0))
    return err if scale == 0.0 else err / scale


def mse(pred: np.ndarray, target: np.ndarray, reduction: str = "mean") -> tuple[float, np.ndarray]:
    d = np.asarray(pred, np.float64) - np.asarray(target, np.float64)
    n = d.size if reduction == "mean" else 1
    return float((d**2).sum() / n), 2.0 * d / n


def cross_entropy(z: np.ndarray, q: np.ndarray, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> tuple[float, np.ndarray]:
    """Softmax cross-entropy with a (N, C) target distribution q, smoothed toward uniform."""
    z = np.asarray(z, np.float64)
    q = np.asarray(q, np.float64)
    classes = z.shape[1]
    q = (1.0 - label_smoothing) * q + label_smoothing / classes
    n = z.shape[0] if reduction == "mean" else 1
    loss = -(q * log_softmax(z)).sum() / n
    grad = (softmax(z) * q.sum(axis=1, keepdims=True) - q) / n
    return float(loss), grad


def onehot(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes)[np.asarray(labels)]


def bce_with_logits(z: np.ndarray, y: np.ndarray,
                    reduction: str = "mean") -> tuple[float, np.ndarray]:
    """−[y log σ(z) + (1 − y) log(1 − σ(z))], with log σ(z) = −log(1 + e⁻ᶻ) written stably."""
    z = np.asarray(z, np.float64)
    y = np.asarray(y, np.float64)
    log_sig = -np.logaddexp(0.0, -z)  # log σ(z)
    log_one_minus = -np.logaddexp(0.0, z)  # log(1 − σ(z)) = log σ(−z)
    n = z.size if reduction == "mean" else 1
    loss = -(y * log_sig + (1.0 - y) * log_one_minus).sum() / n
    return float(loss), (sigmoid(z) - y) / n


IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D,
             np.float64: 0x0E}
"""IDX type codes by NumPy scalar type (MNIST's format)."""


def idx_bytes(array: np.ndarray, code: int | None = None) -> bytes:
    """The IDX encoding of ``array``, written independently with struct."""
    code = IDX_CODES[array.dtype.type] if code is None else code
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()
