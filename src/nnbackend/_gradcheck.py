"""Central finite-difference gradient checking, for any layer, loss or function, on any backend.

The numerical estimate of ∂f/∂xᵢ is (f(x + h eᵢ) − f(x − h eᵢ)) / 2h, whose error is O(h²) from
truncation plus O(ε/h) from rounding; in float64 with h = 1e-6 both are far below the default
tolerances. Perturbed inputs are built on the host and moved to the input's device, so the
function under test runs on its own backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from array_api_compat import is_writeable_array

from ._typing import Array
from .backend import backend_of, dtype_name, to_numpy
from .errors import GradcheckError
from .layers.module import Module, Parameter

__all__ = ["GradcheckReport", "gradcheck", "numerical_gradient"]


@dataclass(frozen=True)
class GradcheckReport:
    """Largest absolute and relative errors per checked array (by name)."""

    max_abs_error: dict[str, float] = field(default_factory=dict)
    max_rel_error: dict[str, float] = field(default_factory=dict)


def numerical_gradient(f: Callable[[Array], Any], x: Array, *, eps: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of a scalar function ``f`` at ``x`` (float64), on the host.

    ``f`` receives arrays on ``x``'s backend and returns a scalar (0-d array or float).
    """
    _require_float64(x, "x")
    be = backend_of(x)
    host = to_numpy(x).astype(np.float64, copy=True)
    grad = np.empty_like(host)
    for index in np.ndindex(host.shape):
        original = host[index]
        host[index] = original + eps
        f_plus = float(to_numpy(f(be.asarray(host, copy=True))))
        host[index] = original - eps
        f_minus = float(to_numpy(f(be.asarray(host, copy=True))))
        host[index] = original
        grad[index] = (f_plus - f_minus) / (2.0 * eps)
    return grad


def gradcheck(
    target: Any,
    *inputs: Array,
    grads: Sequence[Array] | None = None,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    seed: int = 0,
) -> GradcheckReport:
    """Compare analytic gradients with central finite differences; raise on disagreement.

    Three forms:

    - ``gradcheck(module, x)``: with a fixed random cotangent r (seeded), L = Σ module(x) ⊙ r;
      checks ∂L/∂x returned by ``module.forward(x, input_grad=True)`` and every parameter's
      accumulated ``.grad``. Parameter gradients present before the call are restored after it.
    - ``gradcheck(loss_fn, prediction, target)``: ``loss_fn`` returns ``(loss, grad)``; checks
      ``grad`` against the derivative of ``loss`` with respect to ``prediction``.
    - ``gradcheck(f, *inputs, grads=[...])``: ``f(*inputs)`` is a scalar; ``grads[i]`` is the
      analytic ∂f/∂inputs[i].

    All arrays must be float64 (any backend and device). Elementwise, the check is
    ``|analytic − numeric| <= atol + rtol · |numeric|``.

    Returns
    -------
    GradcheckReport
        The largest errors found, by array name.

    Raises
    ------
    GradcheckError
        Naming the array, the worst element, and both values.
    """
    if isinstance(target, Module):
        pairs = _module_pairs(target, inputs, eps=eps, seed=seed)
    elif grads is None:
        pairs = _loss_pairs(target, inputs, eps=eps)
    else:
        if len(grads) != len(inputs):
            msg = f"gradcheck: {len(inputs)} inputs but {len(grads)} analytic gradients"
            raise ValueError(msg)
        pairs = []
        for i, (x, g) in enumerate(zip(inputs, grads, strict=True)):
            others = list(inputs)

            def f(v: Array, i: int = i, others: list[Array] = others) -> Any:
                return target(*others[:i], v, *others[i + 1 :])

            pairs.append((f"input {i}", g, numerical_gradient(f, x, eps=eps)))
    return _compare(pairs, rtol=rtol, atol=atol)


def _module_pairs(
    module: Module, inputs: tuple[Array, ...], *, eps: float, seed: int
) -> list[tuple[str, Any, np.ndarray]]:
    if len(inputs) != 1:
        msg = f"gradcheck(module, x) takes one input, got {len(inputs)}"
        raise TypeError(msg)
    (x,) = inputs
    _require_float64(x, "x")
    params = dict(module.named_parameters())
    for name, p in params.items():
        _require_float64(p.data, name)
    be = backend_of(x)
    # The gradients (and where they accumulate: an optimizer's flat buffer) are put back as
    # they were; the check's own gradients must not land in that buffer.
    saved = {name: (p.grad, p.grad_buffer) for name, p in params.items()}
    try:
        for p in params.values():
            p.grad, p.grad_buffer = None, None
        y, backprop = module.forward(x, input_grad=True)
        r = be.asarray(np.random.default_rng(seed).standard_normal(tuple(y.shape)))
        xp = be.xp

        def objective(out: Array) -> Array:
            return xp.sum(out * r)

        dx = backprop(r)
        pairs = [("x", dx, numerical_gradient(lambda v: objective(module(v)), x, eps=eps))]
        for name, p in params.items():
            analytic = p.grad if p.grad is not None else xp.zeros_like(p.data)

            pairs.append((name, analytic, numerical_gradient(
                _perturbing(p, lambda: objective(module(x))), p.data, eps=eps)))
    finally:
        for name, p in params.items():
            p.grad, p.grad_buffer = saved[name]
    return pairs


def _perturbing(p: Parameter, evaluate: Callable[[], Array]) -> Callable[[Array], Array]:
    """``f(v)``: ``evaluate()`` with the parameter's values set to ``v``, then put back.

    The values are written into ``p.data`` in place where its array is writeable, so that
    ``p.data`` stays the same array (a view of an optimizer's flat buffer keeps its place: an
    optimizer over the model stays on its flat path) and is restored bit for bit from a device
    copy. Immutable arrays (JAX) are rebound and rebound back.
    """
    data = p.data
    if not is_writeable_array(data):

        def rebinding(v: Array) -> Array:
            p.data = v
            try:
                return evaluate()
            finally:
                p.data = data

        return rebinding
    original = backend_of(data).xp.asarray(data, copy=True)

    def in_place(v: Array) -> Array:
        data[...] = v
        try:
            return evaluate()
        finally:
            data[...] = original

    return in_place


def _loss_pairs(
    loss_fn: Callable[..., Any], inputs: tuple[Array, ...], *, eps: float
) -> list[tuple[str, Any, np.ndarray]]:
    if not inputs:
        msg = "gradcheck(loss_fn, prediction, target) needs at least the prediction"
        raise TypeError(msg)
    prediction, *rest = inputs
    result = loss_fn(prediction, *rest)
    if not (isinstance(result, tuple) and len(result) == 2):
        msg = (
            "gradcheck: without grads=..., the target must be a Module or return (loss, grad); "
            f"got {type(result).__name__}"
        )
        raise TypeError(msg)
    numeric = numerical_gradient(lambda v: loss_fn(v, *rest)[0], prediction, eps=eps)
    return [("prediction", result[1], numeric)]


def _compare(
    pairs: list[tuple[str, Any, np.ndarray]], *, rtol: float, atol: float
) -> GradcheckReport:
    report = GradcheckReport()
    for name, analytic, numeric in pairs:
        got = to_numpy(analytic)
        if got.shape != numeric.shape:
            msg = (
                f"gradcheck: {name}: analytic gradient has shape {got.shape}, "
                f"expected {numeric.shape}"
            )
            raise GradcheckError(msg)
        error = np.abs(got - numeric)
        report.max_abs_error[name] = float(error.max(initial=0.0))
        report.max_rel_error[name] = float(
            (error / np.maximum(np.abs(numeric), np.finfo(np.float64).tiny)).max(initial=0.0)
        )
        bad = error > atol + rtol * np.abs(numeric)
        if bad.any():
            worst = tuple(
                int(i) for i in np.unravel_index(np.argmax(np.where(bad, error, -1.0)), error.shape)
            )
            msg = (
                f"gradcheck: {name}: analytic and numerical gradients differ at {worst}: "
                f"analytic {float(got[worst])!r}, numerical {float(numeric[worst])!r} "
                f"(|diff| {error[worst]:.3g} > atol {atol} + rtol {rtol} · |numerical|; "
                f"{int(bad.sum())} of {bad.size} elements fail)"
            )
            raise GradcheckError(msg)
    return report


def _require_float64(x: Array, name: str) -> None:
    if dtype_name(x.dtype) != "float64":
        msg = (
            f"gradcheck: {name} must be float64 for finite differences to be meaningful, got "
            f"{dtype_name(x.dtype)}"
        )
        raise TypeError(msg)
