"""clip_grad_norm: against torch.nn.utils.clip_grad_norm_, on the device, without host syncs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _frozen_array import FrozenArray, frozen
from array_api_compat import is_writeable_array
from conftest import Case

import nnbackend as nb
from nnbackend.optim import clip_grad_norm

SHAPES = [(4, 3), (4,), (2, 5), (1,)]


def _grads(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for shape in SHAPES]


def _params(case: Case, grads: list[np.ndarray | None]) -> list[nb.Parameter]:
    params = []
    for i, (shape, g) in enumerate(zip(SHAPES, grads, strict=True)):
        p = nb.Parameter(case.backend.zeros(shape, dtype=case.dtype_name), f"p{i}")
        # a copy: NumPy's asarray would alias the host array, which clipping scales in place
        p.grad = None if g is None else case.backend.asarray(g, dtype=case.dtype_name, copy=True)
        params.append(p)
    return params


@pytest.mark.parametrize("max_norm", [0.5, 2.0, 100.0])
def test_matches_torch(case: Case, max_norm: float) -> None:
    torch = pytest.importorskip("torch")
    grads = _grads()
    params = _params(case, list(grads))
    total = clip_grad_norm(params, max_norm)
    case.check_placement(total)
    assert tuple(total.shape) == ()

    tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for t, g in zip(tensors, grads, strict=True):
        t.grad = torch.from_numpy(g.copy())
    want_total = torch.nn.utils.clip_grad_norm_(tensors, max_norm)

    np.testing.assert_allclose(nb.to_numpy(total), want_total.numpy(), rtol=case.rtol)
    assert math.isclose(float(want_total), math.sqrt(sum(np.sum(g * g) for g in grads)),
                        rel_tol=1e-12)
    for p, t in zip(params, tensors, strict=True):
        case.check_placement(p.grad)
        np.testing.assert_allclose(nb.to_numpy(p.grad), t.grad.numpy(), rtol=case.rtol,
                                   atol=case.rtol)
    clipped = math.sqrt(sum(float(np.sum(nb.to_numpy(p.grad).astype(np.float64) ** 2))
                            for p in params))
    assert clipped <= max_norm * (1 + case.rtol)


def test_within_the_bound_the_gradients_are_unchanged(case: Case) -> None:
    grads = _grads()
    params = _params(case, list(grads))
    before = [p.grad for p in params]
    clip_grad_norm(params, 1e6)
    for p, g, host in zip(params, before, grads, strict=True):
        assert (p.grad is g) == is_writeable_array(g)  # scaled in place (JAX: rebound)
        np.testing.assert_array_equal(nb.to_numpy(p.grad), host.astype(case.dtype_name))


def test_none_gradients_are_skipped(case: Case) -> None:
    grads = _grads()
    with_none: list[np.ndarray | None] = [grads[0], None, grads[2], None]
    params = _params(case, with_none)
    total = clip_grad_norm(params, 0.1)
    want = math.sqrt(np.sum(grads[0] ** 2) + np.sum(grads[2] ** 2))
    np.testing.assert_allclose(nb.to_numpy(total), want, rtol=case.rtol)
    assert params[1].grad is None and params[3].grad is None

    nothing = _params(case, [None] * 4)
    total = clip_grad_norm(nothing, 1.0)
    case.check_placement(total)
    assert float(nb.to_numpy(total)) == 0.0


def test_zero_gradients_stay_finite(case: Case) -> None:
    params = _params(case, [np.zeros(s) for s in SHAPES])
    total = clip_grad_norm(params, 1.0)
    assert float(nb.to_numpy(total)) == 0.0
    for p in params:
        assert np.all(nb.to_numpy(p.grad) == 0.0)


def test_infinite_bound_only_measures(case: Case) -> None:
    grads = _grads()
    params = _params(case, list(grads))
    total = clip_grad_norm(params, math.inf)
    np.testing.assert_allclose(nb.to_numpy(total),
                               math.sqrt(sum(np.sum(g * g) for g in grads)), rtol=case.rtol)
    for p, g in zip(params, grads, strict=True):
        np.testing.assert_array_equal(nb.to_numpy(p.grad), g.astype(case.dtype_name))


def test_accepts_a_module_or_a_parameter() -> None:
    model = nb.Sequential(nb.Linear(3, 2, seed=0, backend="numpy", dtype="float64"))
    for p in model.parameters():
        p.grad = np.full(p.shape, 3.0)
    total = clip_grad_norm(model, 1.0)
    np.testing.assert_allclose(total, 3.0 * math.sqrt(8), rtol=1e-15)
    single = nb.Parameter(np.zeros(2), "w")
    single.grad = np.array([3.0, 4.0])
    np.testing.assert_allclose(clip_grad_norm(single, 1.0), 5.0, rtol=1e-15)
    np.testing.assert_allclose(single.grad, [0.6, 0.8], rtol=1e-6)


def test_mixed_precision_gradients_keep_their_dtypes() -> None:
    a, b = nb.Parameter(np.zeros(2, np.float32), "a"), nb.Parameter(np.zeros(2), "b")
    a.grad, b.grad = np.array([3.0, 0.0], np.float32), np.array([0.0, 4.0])
    total = clip_grad_norm([a, b], 1.0)
    np.testing.assert_allclose(total, 5.0)
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64
    np.testing.assert_allclose(a.grad, [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(b.grad, [0.0, 0.8], rtol=1e-6)


def test_no_host_synchronisation_and_immutable_gradients() -> None:
    """On arrays that raise when read back to the host and have no in-place operators."""
    grads = _grads()
    params = [nb.Parameter(frozen(np.zeros(g.shape)), f"p{i}") for i, g in enumerate(grads)]
    for p, g in zip(params, grads, strict=True):
        p.grad = frozen(g)
    total = clip_grad_norm(params, 0.5)
    assert isinstance(total, FrozenArray)
    norm = math.sqrt(sum(np.sum(g * g) for g in grads))
    np.testing.assert_allclose(total.host(), norm, rtol=1e-15)
    for p, g in zip(params, grads, strict=True):
        np.testing.assert_allclose(p.grad.host(), g * 0.5 / (norm + 1e-6), rtol=1e-15)


def test_gradients_on_two_devices_are_rejected() -> None:
    strict = pytest.importorskip("array_api_strict")
    a = nb.Parameter(np.zeros(2), "a")
    b = nb.Parameter(strict.zeros(2, device=strict.Device("device1")), "b")
    a.grad, b.grad = np.ones(2), strict.ones(2, device=strict.Device("device1"))
    with pytest.raises(ValueError, match=r"gradient of Parameter\('b'.*device1.*share one device"):
        clip_grad_norm([a, b], 1.0)


@pytest.mark.parametrize(
    ("max_norm", "kwargs", "error", "match"),
    [
        (-1.0, {}, ValueError, r"clip_grad_norm: max_norm must be >= 0, got -1\.0"),
        (math.nan, {}, ValueError, r"max_norm must be finite, got nan"),
        (1.0, {"eps": 0.0}, ValueError, r"eps must be > 0, got 0\.0"),
        (np.asarray(1.0), {}, TypeError, r"max_norm must be a real Python number"),
    ],
)
def test_arguments_are_validated(max_norm: float, kwargs: dict[str, float],
                                 error: type[Exception], match: str) -> None:
    p = nb.Parameter(np.zeros(2), "w")
    p.grad = np.ones(2)
    with pytest.raises(error, match=match):
        clip_grad_norm([p], max_norm, **kwargs)
    np.testing.assert_array_equal(p.grad, [1.0, 1.0])


def test_bad_parameter_lists_are_named() -> None:
    with pytest.raises(ValueError, match="got no parameters"):
        clip_grad_norm([], 1.0)
    with pytest.raises(TypeError, match=r"parameters\[0\] must be a Parameter, got ndarray"):
        clip_grad_norm([np.ones(2)], 1.0)
