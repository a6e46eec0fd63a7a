"""nnbackend.gradcheck and nnbackend.numerical_gradient: the checker itself is checked.

It must agree with an independent central-difference loop and with closed forms, pass correct
gradients, fail (with a message naming the array, the element and both values) on wrong ones,
refuse float32, and run on any float64 backend, the strict non-default device included.
"""

from __future__ import annotations

from typing import Any

import _reference as ref
import numpy as np
import pytest

import nnbackend as nb
from nnbackend.backend import supports_views


def _x(case: Any, shape: tuple[int, ...] = (3, 4), seed: int = 0) -> tuple[np.ndarray, Any]:
    host = np.random.default_rng(seed).standard_normal(shape).astype(case.dtype_name)
    return host.astype(np.float64), case.asarray(host)


class _Scale(nb.Module):
    """y = x ⊙ w (w broadcast over the rows), with an optional deliberate gradient bug."""

    def __init__(self, w: Any, bug: str | None = None) -> None:
        super().__init__()
        self.weight = nb.Parameter(w, "weight")
        self.bug = bug

    def forward_pass(self, x: Any, ctx: Any) -> tuple[Any, Any]:
        weight, bug = self.weight, self.bug
        xp, input_grad = ctx.xp, ctx.input_grad
        w = weight.data

        def backprop(dy: Any) -> Any:
            dw = xp.sum(dy * x, axis=0)
            weight.accumulate_grad(dw * 1.01 if bug == "weight" else dw)
            if not input_grad:
                return None
            dx = dy * w
            return dx * 1.01 if bug == "x" else dx

        return x * w, backprop


def test_numerical_gradient_matches_own_loop_and_closed_form(case: Any) -> None:
    """f(x) = Σ x³ + Σ sin x: ∂f/∂x = 3x² + cos x."""
    xh, x = _x(case)
    xp = case.xp

    def f(v: Any) -> Any:
        return xp.sum(v * v * v) + xp.sum(xp.sin(v))

    if not case.is_float64:
        with pytest.raises(TypeError, match=r"gradcheck: x must be float64 .* got float32"):
            nb.numerical_gradient(f, x)
        return
    numeric = nb.numerical_gradient(f, x)
    assert isinstance(numeric, np.ndarray)
    assert numeric.dtype == np.float64 and numeric.shape == xh.shape
    own = ref.central_difference(lambda v: float((v**3).sum() + np.sin(v).sum()), xh)
    np.testing.assert_allclose(numeric, own, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(numeric, 3.0 * xh**2 + np.cos(xh), rtol=1e-7, atol=1e-8)
    np.testing.assert_array_equal(nb.to_numpy(x), xh)  # x itself is never perturbed


def test_numerical_gradient_sees_arrays_on_the_inputs_backend(case: Any) -> None:
    if not case.is_float64:
        return  # float32 inputs are refused (see above)
    _, x = _x(case, (2, 2))
    seen = []

    def f(v: Any) -> Any:
        case.check_placement(v)
        seen.append(1)
        return case.xp.sum(v)

    np.testing.assert_allclose(nb.numerical_gradient(f, x), np.ones((2, 2)), rtol=1e-8)
    assert len(seen) == 2 * 4  # two evaluations per element


def test_gradcheck_function_form(case: Any) -> None:
    """f(a, b) = Σ a ⊙ b²: ∂f/∂a = b², ∂f/∂b = 2 a ⊙ b."""
    ah, a = _x(case, seed=1)
    bh, b = _x(case, seed=2)
    xp = case.xp

    def f(u: Any, v: Any) -> Any:
        return xp.sum(u * v * v)

    grads = [b * b, 2.0 * a * b]
    if not case.is_float64:
        with pytest.raises(TypeError, match="must be float64"):
            nb.gradcheck(f, a, b, grads=grads)
        return
    report = nb.gradcheck(f, a, b, grads=grads)
    assert set(report.max_abs_error) == {"input 0", "input 1"}
    assert max(report.max_abs_error.values()) < 1e-8
    assert max(report.max_rel_error.values()) < 1e-5
    # A wrong gradient fails, naming the input, the worst element and both values.
    wrong = 2.0 * ah * bh
    wrong[1, 2] += 1e-3
    with pytest.raises(nb.GradcheckError) as info:
        nb.gradcheck(f, a, b, grads=[grads[0], case.asarray(wrong)])
    message = str(info.value)
    assert "gradcheck: input 1: analytic and numerical gradients differ at (1, 2)" in message
    assert f"analytic {float(wrong[1, 2])!r}, numerical " in message
    assert "numerical" in message and "1 of 12 elements fail" in message


def test_gradcheck_catches_small_relative_errors() -> None:
    x = np.random.default_rng(3).standard_normal((2, 3))
    with pytest.raises(nb.GradcheckError, match="6 of 6 elements fail"):
        nb.gradcheck(lambda v: np.sum(v * v), x, grads=[2.0 * x * (1.0 + 1e-4)])
    # The tolerances are the caller's to loosen.
    nb.gradcheck(lambda v: np.sum(v * v), x, grads=[2.0 * x * (1.0 + 1e-4)], rtol=1e-3)


def test_gradcheck_loss_form(case: Any) -> None:
    _, pred = _x(case, seed=4)
    _, target = _x(case, seed=5)
    if not case.is_float64:
        with pytest.raises(TypeError, match="must be float64"):
            nb.gradcheck(nb.MSELoss(), pred, target)
        return
    report = nb.gradcheck(nb.MSELoss(), pred, target)
    assert report.max_abs_error["prediction"] < 1e-8

    def halved(p: Any, t: Any) -> tuple[Any, Any]:
        loss, grad = nb.MSELoss()(p, t)
        return loss, grad * 0.5

    with pytest.raises(nb.GradcheckError, match="gradcheck: prediction: analytic and numerical"):
        nb.gradcheck(halved, pred, target)


def test_gradcheck_module_form(case: Any) -> None:
    wh, w = _x(case, (4,), seed=6)
    _, x = _x(case, seed=7)
    if not case.is_float64:
        with pytest.raises(TypeError, match="must be float64"):
            nb.gradcheck(_Scale(w), x)
        return
    report = nb.gradcheck(_Scale(w), x)
    assert set(report.max_abs_error) == {"x", "weight"}
    for bug in ("x", "weight"):
        with pytest.raises(nb.GradcheckError,
                           match=f"gradcheck: {bug}: analytic and numerical gradients differ"):
            nb.gradcheck(_Scale(case.asarray(wh), bug=bug), x)


def test_gradcheck_shared_layer_network(case: Any) -> None:
    """A layer used twice: its gradient sums both uses, checked against finite differences."""
    if not case.is_float64:
        return
    shared = nb.Linear(3, 3, dtype="float64", backend=case.backend, seed=8)
    shared.bias.data = case.asarray(np.array([0.1, -0.2, 0.3]))
    _, x = _x(case, (4, 3), seed=9)
    report = nb.gradcheck(nb.Sequential(shared, nb.Tanh(), shared), x)
    assert set(report.max_abs_error) == {"x", "0.weight", "0.bias"}


def test_gradcheck_restores_existing_gradients() -> None:
    layer = nb.Linear(3, 2, dtype="float64", backend="numpy", seed=10)
    sentinel = np.full((2, 3), 7.0)
    layer.weight.grad = sentinel
    nb.gradcheck(layer, np.random.default_rng(11).standard_normal((4, 3)))
    assert layer.weight.grad is sentinel
    np.testing.assert_array_equal(sentinel, 7.0)
    assert layer.bias.grad is None


def test_gradcheck_rejects_float32() -> None:
    x32 = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(TypeError, match="gradcheck: x must be float64 for finite differences to "
                                        "be meaningful, got float32"):
        nb.gradcheck(lambda v: np.sum(v), x32, grads=[np.ones((2, 3), dtype=np.float32)])
    # A float32 module is refused even with a float64 input, naming the parameter.
    layer = nb.Linear(3, 2, backend="numpy")
    with pytest.raises(TypeError, match="gradcheck: weight must be float64"):
        nb.gradcheck(layer, np.ones((2, 3)))


def test_gradcheck_misuse() -> None:
    x = np.ones((2, 3))
    with pytest.raises(nb.GradcheckError, match=r"analytic gradient has shape \(3, 2\), "
                                                r"expected \(2, 3\)"):
        nb.gradcheck(lambda v: np.sum(v), x, grads=[np.ones((3, 2))])
    with pytest.raises(ValueError, match="2 inputs but 1 analytic gradients"):
        nb.gradcheck(lambda u, v: np.sum(u * v), x, x, grads=[x])
    with pytest.raises(TypeError, match="must be a Module or return \\(loss, grad\\)"):
        nb.gradcheck(lambda v: np.sum(v), x)
    with pytest.raises(TypeError, match="takes one input, got 2"):
        nb.gradcheck(nb.Linear(3, 2, dtype="float64", backend="numpy"), x, x)
    assert issubclass(nb.GradcheckError, AssertionError)


def test_gradcheck_keeps_an_optimizer_on_its_flat_path(case: Any) -> None:
    """Issue 8, 3.15: gradcheck rebound every p.data (and so cleared its flat gradient buffer):
    an optimizer over the model silently stepped it per parameter from then on. Now the values
    are perturbed in place and put back, the gradients present before are restored as they
    were (values and buffer), and the next steps run flat and equal an unchecked twin's."""
    if not case.is_float64:
        pytest.skip("gradcheck needs float64; this row computes in float32")

    def model() -> nb.Sequential:
        return nb.Sequential(nb.Linear(3, 4, dtype="float64", backend=case.backend, seed=12),
                             nb.Tanh(),
                             nb.Linear(4, 2, dtype="float64", backend=case.backend, seed=13))

    checked, twin = model(), model()
    opts = [nb.Adam(m, 0.01) for m in (checked, twin)]
    _, x = _x(case, (5, 3), seed=14)
    dy = case.asarray(np.random.default_rng(15).standard_normal((5, 2)))

    def backward(m: nb.Sequential, opt: nb.Optimizer) -> None:
        opt.zero_grad()
        m.forward(x)[1](dy)

    for m, opt in zip((checked, twin), opts, strict=True):
        backward(m, opt)
        opt.step()
        backward(m, opt)
    before = [(p.data, p.grad, case.backend.to_numpy(p.grad).copy())
              for p in checked.parameters()]
    nb.gradcheck(checked, x)
    for p, (data, grad, host_grad) in zip(checked.parameters(), before, strict=True):
        assert p.data is data and p.grad is grad
        np.testing.assert_array_equal(case.backend.to_numpy(p.grad), host_grad)
    for _ in range(3):
        for m, opt in zip((checked, twin), opts, strict=True):
            opt.step()
            backward(m, opt)
    packed = supports_views(case.xp)
    assert opts[0].path_stats.fallbacks == {}
    assert opts[0].path_stats.copied_grads == 0  # every gradient still lands in the buffer
    assert opts[0].path_stats.flat == (4 if packed else 0)
    for a, b in zip(checked.parameters(), twin.parameters(), strict=True):
        np.testing.assert_array_equal(case.backend.to_numpy(a.data),
                                      case.backend.to_numpy(b.data))
