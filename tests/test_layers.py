"""Layers: activation layers, Linear, Sequential and the Module machinery (parameters, gradient
accumulation, state dicts, placement, modes, repr) and their input validation, on the backend
matrix.
"""

from __future__ import annotations

import contextlib
import math
import re
from typing import Any

import _reference as ref
import numpy as np
import pytest

import nnbackend as nb

ACTIVATION_LAYERS: dict[str, tuple[type[nb.Module], dict[str, Any], str, dict[str, Any]]] = {
    # id: (class, constructor kwargs, reference name, reference kwargs)
    "identity": (nb.Identity, {}, "identity", {}),
    "relu": (nb.ReLU, {}, "relu", {}),
    "leaky_relu": (nb.LeakyReLU, {}, "leaky_relu", {}),
    "sigmoid": (nb.Sigmoid, {}, "sigmoid", {}),
    "tanh": (nb.Tanh, {}, "tanh", {}),
    "softmax": (nb.Softmax, {}, "softmax", {}),
    "softmax_axis0": (nb.Softmax, {"axis": 0}, "softmax", {"axis": 0}),
    "log_softmax": (nb.LogSoftmax, {}, "log_softmax", {}),
    "log_softmax_axis0": (nb.LogSoftmax, {"axis": 0}, "log_softmax", {"axis": 0}),
}


def _host(case: Any, shape: tuple[int, ...], seed: int, scale: float = 1.0) -> np.ndarray:
    """Random host data, rounded to the case's dtype and returned as float64."""
    values = np.random.default_rng(seed).standard_normal(shape) * scale
    return values.astype(case.dtype_name).astype(np.float64)


def _tol(case: Any) -> dict[str, float]:
    return {"rtol": case.rtol, "atol": case.rtol}


def _linear(case: Any, fan_in: int = 4, fan_out: int = 3, seed: int = 0, **kw: Any) -> nb.Linear:
    return nb.Linear(fan_in, fan_out, dtype=case.dtype_name, backend=case.backend, seed=seed, **kw)


def _host_params(layer: nb.Linear) -> tuple[np.ndarray, np.ndarray]:
    W = nb.to_numpy(layer.weight.data).astype(np.float64)
    b = (np.zeros(layer.out_features) if layer.bias is None
         else nb.to_numpy(layer.bias.data).astype(np.float64))
    return W, b


def _snapshot(model: nb.Module) -> dict[str, np.ndarray]:
    return {name: nb.to_numpy(p.data).copy() for name, p in model.named_parameters()}


def _mlp(case: Any, seed: int = 0) -> nb.Sequential:
    return nb.Sequential(_linear(case, 3, 5, seed=seed), nb.Tanh(),
                         _linear(case, 5, 2, seed=seed + 1))


# --------------------------------------------------------------------------- activation layers


@pytest.mark.parametrize("name", list(ACTIVATION_LAYERS))
def test_activation_layer_forward_and_backprop(case: Any, name: str) -> None:
    cls, kwargs, ref_name, ref_kwargs = ACTIVATION_LAYERS[name]
    layer = cls(**kwargs)
    xh, dyh = _host(case, (4, 5), 1, 2.0), _host(case, (4, 5), 2)
    x, dy = case.asarray(xh), case.asarray(dyh)
    y, backprop = layer.forward(x)
    case.check_placement(y)
    np.testing.assert_allclose(nb.to_numpy(y), ref.forward(ref_name, xh, **ref_kwargs),
                               **_tol(case))
    dx = backprop(dy)
    case.check_placement(dx)
    np.testing.assert_allclose(nb.to_numpy(dx), ref.backward(ref_name, xh, dyh, **ref_kwargs),
                               **_tol(case))
    inferred = layer(x)
    case.check_placement(inferred)
    np.testing.assert_array_equal(nb.to_numpy(inferred), nb.to_numpy(y))
    np.testing.assert_array_equal(nb.to_numpy(x), xh)  # never mutated
    np.testing.assert_array_equal(nb.to_numpy(dy), dyh)
    assert layer.parameters() == []
    _, backprop = layer.forward(x, input_grad=False)
    assert backprop(dy) is None


@pytest.mark.parametrize("name", list(ACTIVATION_LAYERS))
def test_activation_layer_gradcheck(case: Any, name: str) -> None:
    cls, kwargs, *_ = ACTIVATION_LAYERS[name]
    x = case.asarray(_host(case, (3, 4), 3, 2.0))
    if case.is_float64:
        nb.gradcheck(cls(**kwargs), x)
    else:
        with pytest.raises(TypeError, match="must be float64"):
            nb.gradcheck(cls(**kwargs), x)


def test_leaky_relu_layer_slope(case: Any) -> None:
    layer = nb.LeakyReLU(0.25)
    xh = _host(case, (3, 4), 4)
    y, backprop = layer.forward(case.asarray(xh))
    np.testing.assert_allclose(nb.to_numpy(y), np.where(xh > 0, xh, 0.25 * xh), **_tol(case))
    dx = backprop(case.asarray(np.ones((3, 4))))
    np.testing.assert_allclose(nb.to_numpy(dx), np.where(xh > 0, 1.0, 0.25), **_tol(case))
    for bad in (0.0, -0.1):
        with pytest.raises(ValueError, match="negative_slope must be positive"):
            nb.LeakyReLU(bad)


# ------------------------------------------------------------------------------------ Linear


def test_linear_forward_and_backprop(case: Any) -> None:
    layer = _linear(case, 4, 3)
    W, b = _host_params(layer)
    b = np.random.default_rng(5).standard_normal(3).astype(case.dtype_name).astype(np.float64)
    layer.bias.data = case.asarray(b)  # a non-zero bias so that it shows in z
    xh, dzh = _host(case, (5, 4), 6), _host(case, (5, 3), 7)
    x, dz = case.asarray(xh), case.asarray(dzh)
    z, backprop = layer.forward(x)
    case.check_placement(z)
    np.testing.assert_allclose(nb.to_numpy(z), xh @ W.T + b, **_tol(case))
    np.testing.assert_array_equal(nb.to_numpy(layer(x)), nb.to_numpy(z))
    dx = backprop(dz)
    for g in (dx, layer.weight.grad, layer.bias.grad):
        case.check_placement(g)
    np.testing.assert_allclose(nb.to_numpy(dx), dzh @ W, **_tol(case))
    np.testing.assert_allclose(nb.to_numpy(layer.weight.grad), dzh.T @ xh, **_tol(case))
    np.testing.assert_allclose(nb.to_numpy(layer.bias.grad), dzh.sum(axis=0), **_tol(case))
    np.testing.assert_array_equal(nb.to_numpy(x), xh)
    np.testing.assert_array_equal(nb.to_numpy(dz), dzh)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradients_match_finite_differences(case: Any, bias: bool) -> None:
    layer = _linear(case, 3, 2, seed=8, bias=bias)
    xh = _host(case, (4, 3), 9)
    if case.is_float64:
        report = nb.gradcheck(layer, case.asarray(xh))
        assert set(report.max_abs_error) == {"x", "weight"} | ({"bias"} if bias else set())
        return
    # float32: the same layer in float64 on NumPy gives the reference gradients.
    twin = nb.Linear(3, 2, dtype="float64", backend="numpy", seed=8, bias=bias)
    r = np.random.default_rng(10).standard_normal((4, 2))
    grads = []
    for model, dt in ((layer, case.dtype_name), (twin, "float64")):
        _, backprop = model.forward(model.backend.asarray(xh, dtype=dt))
        dx = backprop(model.backend.asarray(r, dtype=dt))
        grads.append([nb.to_numpy(dx)] + [nb.to_numpy(p.grad) for p in model.parameters()])
    for got, want in zip(*grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_linear_without_bias(case: Any) -> None:
    layer = _linear(case, 4, 2, bias=False)
    assert layer.bias is None
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    W, _ = _host_params(layer)
    xh = _host(case, (3, 4), 11)
    z, backprop = layer.forward(case.asarray(xh))
    np.testing.assert_allclose(nb.to_numpy(z), xh @ W.T, **_tol(case))
    backprop(case.asarray(np.ones((3, 2))))
    case.check_placement(layer.weight.grad)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_linear_init_is_bit_identical_across_backends(dtype: str) -> None:
    strict = pytest.importorskip("array_api_strict")
    backends = [nb.get_backend("numpy"),
                nb.get_backend(strict, device=strict.Device("device1"))]
    with contextlib.suppress(nb.BackendUnavailableError):
        backends.append(nb.get_backend("torch"))
    for init in ("he", "xavier", "lecun"):
        weights = []
        for be in backends:
            layer = nb.Linear(5, 7, init=init, dtype=dtype, backend=be, seed=42)
            assert layer.weight.data.dtype == be.dtype(dtype)
            assert nb.backend_of(layer.weight.data).device == be.device
            weights.append(nb.to_numpy(layer.weight.data))
            assert np.all(nb.to_numpy(layer.bias.data) == 0.0)
        for w in weights[1:]:
            assert w.dtype == weights[0].dtype == np.dtype(dtype)
            np.testing.assert_array_equal(w, weights[0])
    # The documented draw: numpy.random.default_rng(seed), float64, cast to dtype.
    expected = np.random.default_rng(42).normal(0.0, math.sqrt(2.0 / 5), size=(7, 5))
    default = nb.Linear(5, 7, dtype=dtype, backend="numpy", seed=42)  # init="he"
    np.testing.assert_array_equal(nb.to_numpy(default.weight.data), expected.astype(dtype))
    other = nb.Linear(5, 7, dtype=dtype, backend="numpy", seed=43)
    assert not np.array_equal(nb.to_numpy(other.weight.data), expected.astype(dtype))


def test_initialiser_statistics() -> None:
    fan_in, fan_out = 400, 300
    n = fan_in * fan_out

    def weights(init: str, seed: int = 0) -> np.ndarray:
        layer = nb.Linear(fan_in, fan_out, init=init, dtype="float64", backend="numpy", seed=seed)
        return nb.to_numpy(layer.weight.data)

    for name, std in (("he", math.sqrt(2.0 / fan_in)), ("lecun", math.sqrt(1.0 / fan_in))):
        w = weights(name)
        assert abs(w.mean()) < 4.0 * std / math.sqrt(n)
        assert w.std() == pytest.approx(std, rel=0.02)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    w = weights("xavier")
    assert np.abs(w).max() <= limit
    assert np.abs(w).max() > 0.99 * limit  # spread over the whole interval
    assert w.std() == pytest.approx(limit / math.sqrt(3.0), rel=0.02)
    np.testing.assert_array_equal(weights("kaiming"), weights("he"))
    np.testing.assert_array_equal(weights("glorot"), weights("xavier"))
    assert not np.array_equal(weights("he", seed=1), weights("he"))


def test_linear_init_callable(case: Any) -> None:
    calls = []

    def init(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        calls.append(shape)
        assert isinstance(rng, np.random.Generator)
        return np.arange(math.prod(shape), dtype=np.float64).reshape(shape) / 8.0

    layer = nb.Linear(3, 2, init=init, dtype=case.dtype_name, backend=case.backend, seed=0)
    assert calls == [(2, 3)]
    case.check_placement(layer.weight.data)
    np.testing.assert_array_equal(nb.to_numpy(layer.weight.data),
                                  np.arange(6.0).reshape(2, 3) / 8.0)

    def wrong(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return np.zeros((shape[1], shape[0]))

    with pytest.raises(ValueError, match=r"Linear\(3→2\): init returned shape \(3, 2\), "
                                         r"expected \(2, 3\)"):
        nb.Linear(3, 2, init=wrong, backend=case.backend)
    with pytest.raises(ValueError, match="unknown init 'gaussian'"):
        nb.Linear(3, 2, init="gaussian", backend=case.backend)


@pytest.mark.parametrize(
    ("bad", "error"),
    [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError), ("4", TypeError),
     (None, TypeError)],
)
def test_linear_rejects_bad_widths(bad: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"Linear: in_features must be a positive integer"):
        nb.Linear(bad, 3, backend="numpy")
    with pytest.raises(error, match=r"Linear: out_features must be a positive integer"):
        nb.Linear(3, bad, backend="numpy")


@pytest.mark.parametrize(("seed", "error"), [(-1, ValueError), ([1, -2], ValueError),
                                           (1.5, TypeError), ("1", TypeError),
                                           (True, TypeError)])
def test_linear_rejects_a_bad_seed_naming_layer_and_seed(seed: Any, error: type) -> None:
    """3.13: Linear(3, 3, seed=-1) failed inside NumPy ("expected non-negative integer")."""
    with pytest.raises(error, match=rf"^Linear\(3→3\): seed must be None or a non-negative "
                                    rf"integer, got {re.escape(repr(seed))}"):
        nb.Linear(3, 3, seed=seed, backend="numpy")


def test_linear_accepts_numpy_integers_and_seed_sequences_as_seeds() -> None:
    def weight(seed: Any) -> np.ndarray:
        return nb.Linear(3, 3, seed=seed, backend="numpy", dtype="float64").weight.data

    np.testing.assert_array_equal(weight(np.int64(3)), weight(3))
    np.testing.assert_array_equal(weight(np.random.SeedSequence(3)), weight(3))
    np.testing.assert_array_equal(weight(3), nb.init.he_normal((3, 3),
                                                               np.random.default_rng(3)))


# -------------------------------------------------------------------------------- Sequential


def test_sequential_input_grad_false_still_accumulates(case: Any) -> None:
    xh, dyh = _host(case, (4, 3), 12), _host(case, (4, 2), 13)
    grads = {}
    for input_grad in (False, True):
        model = _mlp(case)
        _y, backprop = model.forward(case.asarray(xh), input_grad=input_grad)
        dx = backprop(case.asarray(dyh))
        if input_grad:
            case.check_placement(dx)
            assert tuple(dx.shape) == (4, 3)
        else:
            assert dx is None
        for p in model.parameters():
            case.check_placement(p.grad)
        grads[input_grad] = [nb.to_numpy(p.grad) for p in model.parameters()]
    for a, b in zip(grads[False], grads[True], strict=True):
        np.testing.assert_array_equal(a, b)


def test_sequential_input_grad_matches_finite_differences(case: Any) -> None:
    model = nb.Sequential(nb.Sigmoid(), _linear(case, 3, 4), nb.ReLU(), _linear(case, 4, 2, 1))
    xh, rh = _host(case, (3, 3), 14), _host(case, (3, 2), 15)
    _, backprop = model.forward(case.asarray(xh), input_grad=True)
    dx = nb.to_numpy(backprop(case.asarray(rh)))
    # Our own difference loop over a NumPy float64 copy of the network.
    (W1, b1), (W2, b2) = _host_params(model[1]), _host_params(model[3])

    def objective(v: np.ndarray) -> float:
        h = np.maximum(ref.sigmoid(v) @ W1.T + b1, 0.0)
        return float(((h @ W2.T + b2) * rh).sum())

    np.testing.assert_allclose(dx, ref.central_difference(objective, xh),
                               rtol=max(case.rtol, 1e-6), atol=1e-8)
    if case.is_float64:
        report = nb.gradcheck(model, case.asarray(xh))
        assert set(report.max_abs_error) == {"x", "1.weight", "1.bias", "3.weight", "3.bias"}


def test_sequential_with_leading_activation_and_input_grad_false(case: Any) -> None:
    """Layers before the first parameter run in inference mode; gradients are unchanged."""
    xh, dyh = _host(case, (4, 3), 16), _host(case, (4, 2), 17)
    grads = []
    for input_grad in (False, True):
        model = nb.Sequential(nb.Tanh(), _linear(case, 3, 2))
        _, backprop = model.forward(case.asarray(xh), input_grad=input_grad)
        assert (backprop(case.asarray(dyh)) is None) is not input_grad
        grads.append(nb.to_numpy(model[1].weight.grad))
    np.testing.assert_array_equal(grads[0], grads[1])
    np.testing.assert_allclose(grads[0], dyh.T @ np.tanh(xh), **_tol(case))


def test_layer_used_twice_matches_torch(case: Any) -> None:
    torch = pytest.importorskip("torch")
    shared = _linear(case, 4, 4, seed=18)
    shared.bias.data = case.asarray(_host(case, (4,), 19))
    model = nb.Sequential(shared, nb.ReLU(), shared)
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "0.bias"]
    xh, rh = _host(case, (5, 4), 20), _host(case, (5, 4), 21)
    y, backprop = model.forward(case.asarray(xh), input_grad=True)
    dx = backprop(case.asarray(rh))

    W, b = (torch.tensor(a, requires_grad=True) for a in _host_params(shared))
    tx = torch.tensor(xh, requires_grad=True)
    ty = torch.relu(tx @ W.T + b) @ W.T + b
    (ty * torch.tensor(rh)).sum().backward()
    tol = {"rtol": 1e-10 if case.is_float64 else 1e-5, "atol": 1e-12 if case.is_float64 else 1e-5}
    np.testing.assert_allclose(nb.to_numpy(y), ty.detach().numpy(), **tol)
    np.testing.assert_allclose(nb.to_numpy(dx), tx.grad.numpy(), **tol)
    np.testing.assert_allclose(nb.to_numpy(shared.weight.grad), W.grad.numpy(), **tol)
    np.testing.assert_allclose(nb.to_numpy(shared.bias.grad), b.grad.numpy(), **tol)
    case.check_placement(shared.weight.grad)


def test_gradients_accumulate_over_passes_and_zero_grad(case: Any) -> None:
    model = _mlp(case)
    x, dy = case.asarray(_host(case, (4, 3), 22)), case.asarray(_host(case, (4, 2), 23))
    _, backprop = model.forward(x)
    backprop(dy)
    once = [nb.to_numpy(p.grad).copy() for p in model.parameters()]
    _, backprop = model.forward(x)
    backprop(dy)
    for p, g in zip(model.parameters(), once, strict=True):
        case.check_placement(p.grad)
        np.testing.assert_allclose(nb.to_numpy(p.grad), 2.0 * g, rtol=case.rtol, atol=0)
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    _, backprop = model.forward(x)
    backprop(dy)
    for p, g in zip(model.parameters(), once, strict=True):
        np.testing.assert_array_equal(nb.to_numpy(p.grad), g)


def test_backprop_closure_is_single_use(case: Any) -> None:
    for model in (_linear(case), nb.ReLU(), _mlp(case)):
        width = 3 if not isinstance(model, nb.Linear) else 4
        x = case.asarray(_host(case, (2, width), 24))
        y, backprop = model.forward(x)
        dy = case.asarray(np.ones(tuple(y.shape)))
        backprop(dy)
        with pytest.raises(RuntimeError, match="backward closure was already used; run forward"):
            backprop(dy)


# ------------------------------------------------------------------------ state and placement


def test_state_dict_round_trip(case: Any) -> None:
    source, target = _mlp(case, seed=0), _mlp(case, seed=5)
    state = source.state_dict()
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert state["0.weight"] is source[0].weight.data  # references, not copies
    x = case.asarray(_host(case, (2, 3), 25))
    _, backprop = target.forward(x)
    backprop(case.asarray(np.ones((2, 2))))
    target.load_state_dict(state)
    for (name, p), q in zip(target.named_parameters(), source.parameters(), strict=True):
        case.check_placement(p.data)
        assert p.grad is None, name
        assert p.data is not q.data
        np.testing.assert_array_equal(nb.to_numpy(p.data), nb.to_numpy(q.data))
    np.testing.assert_array_equal(nb.to_numpy(target(x)), nb.to_numpy(source(x)))
    # Host (NumPy) state dicts load onto the module's own device.
    host = {k: nb.to_numpy(v).copy() for k, v in state.items()}
    fresh = _mlp(case, seed=9)
    fresh.load_state_dict(host)
    for p in fresh.parameters():
        case.check_placement(p.data)
    host["0.weight"][...] = 0.0  # the module holds a copy
    assert not np.all(nb.to_numpy(fresh[0].weight.data) == 0.0)


def test_load_state_dict_validates_before_changing_anything(case: Any) -> None:
    model = _mlp(case)
    good = {k: nb.to_numpy(v).copy() for k, v in model.state_dict().items()}
    before = _snapshot(model)
    objects = [p.data for p in model.parameters()]
    other = "float32" if case.is_float64 else "float64"
    # A valid first entry followed by a bad one: nothing may be loaded.
    zeros = {k: np.zeros_like(v) for k, v in good.items()}
    bad_states: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({k: v for k, v in zeros.items() if k != "2.bias"}, KeyError, r"missing \['2.bias'\]"),
        ({**zeros, "3.weight": zeros["2.weight"]}, KeyError, r"unexpected \['3.weight'\]"),
        ({**zeros, "2.bias": np.zeros(3, dtype=case.dtype_name)}, ValueError,
         r"'2.bias' has shape \(2,\), state dict gives \(3,\)"),
        ({**zeros, "2.weight": zeros["2.weight"].astype(other)}, TypeError,
         f"'2.weight' has dtype {case.dtype_name}, state dict gives {other}"),
    ]
    for state, err, match in bad_states:
        with pytest.raises(err, match=match):
            model.load_state_dict(state)
        assert [p.data for p in model.parameters()] == objects
        for name, value in _snapshot(model).items():
            np.testing.assert_array_equal(value, before[name])


def test_module_to_moves_between_numpy_and_strict_device1() -> None:
    strict = pytest.importorskip("array_api_strict")
    device1 = nb.get_backend(strict, device=strict.Device("device1"))
    model = nb.Sequential(nb.Linear(3, 4, dtype="float64", backend="numpy", seed=0), nb.ReLU(),
                          nb.Linear(4, 2, dtype="float64", backend="numpy", seed=1))
    before = _snapshot(model)
    xh = np.random.default_rng(26).standard_normal((2, 3))
    expected = model(xh)
    _, backprop = model.forward(xh)
    backprop(np.ones((2, 2)))
    assert model.to(device1) is model
    assert model.backend.device == device1.device
    for name, p in model.named_parameters():
        assert nb.backend_of(p.data).device == device1.device
        assert p.data.dtype == strict.float64
        assert p.grad is None
        np.testing.assert_array_equal(nb.to_numpy(p.data), before[name])
    y = model(device1.asarray(xh))
    assert nb.backend_of(y).device == device1.device
    np.testing.assert_allclose(nb.to_numpy(y), expected, rtol=1e-12)
    with pytest.raises(ValueError, match=r"input is numpy on 'cpu'; expected array_api_strict"):
        model(xh)
    model.to("numpy")
    for name, p in model.named_parameters():
        assert isinstance(p.data, np.ndarray)
        np.testing.assert_array_equal(p.data, before[name])
    np.testing.assert_allclose(model(xh), expected, rtol=1e-12)
    # Sequential(backend=...) moves every parameter at construction.
    moved = nb.Sequential(nb.Linear(3, 2, dtype="float64", backend="numpy"), backend=device1)
    assert moved.backend.device == device1.device


def test_train_and_eval_flags() -> None:
    inner = nb.Sequential(nb.Linear(2, 2, backend="numpy"), nb.ReLU())
    model = nb.Sequential(inner, nb.Linear(2, 1, backend="numpy"))
    modules = [model, inner, inner[0], inner[1], model[1]]
    assert all(m.training for m in modules)
    assert model.eval() is model
    assert not any(m.training for m in modules)
    assert model.train() is model
    assert all(m.training for m in modules)
    model.train(False)
    assert not any(m.training for m in modules)


def test_repr_strings() -> None:
    assert repr(nb.Linear(4, 8, backend="numpy")) == "Linear(4→8)"
    assert repr(nb.Linear(4, 8, bias=False, backend="numpy")) == "Linear(4→8, bias=False)"
    assert repr(nb.ReLU()) == "ReLU()"
    assert repr(nb.Identity()) == "Identity()"
    assert repr(nb.Sigmoid()) == "Sigmoid()"
    assert repr(nb.Tanh()) == "Tanh()"
    assert repr(nb.LeakyReLU(0.2)) == "LeakyReLU(negative_slope=0.2)"
    assert repr(nb.Softmax()) == "Softmax(axis=-1)"
    assert repr(nb.LogSoftmax(axis=0)) == "LogSoftmax(axis=0)"
    model = nb.Sequential(nb.Linear(4, 8, backend="numpy"), nb.ReLU(),
                          nb.Linear(8, 2, backend="numpy"))
    assert repr(model) == "Sequential(\n  (0): Linear(4→8)\n  (1): ReLU()\n  (2): Linear(8→2)\n)"
    assert repr(nb.Sequential()) == "Sequential()"
    assert (repr(model[0].weight)
            == "Parameter('weight', shape=(8, 4), dtype=float32, numpy on 'cpu')")


def test_sequential_container_protocol() -> None:
    layers = (nb.Linear(3, 4, backend="numpy"), nb.ReLU(), nb.Linear(4, 2, backend="numpy"))
    model = nb.Sequential(*layers)
    assert len(model) == 3
    assert tuple(model) == layers
    assert model[2] is layers[2]
    assert list(model.children()) == list(layers)
    assert [p.name for p in model.parameters()] == ["weight", "bias", "weight", "bias"]
    assert nb.Sequential(nb.ReLU()).backend is None


# ----------------------------------------------------------------------------------- bad input


def test_wrong_input_width_names_layer_and_shapes(case: Any) -> None:
    layer = _linear(case, 4, 8)
    with pytest.raises(ValueError) as info:
        layer(case.asarray(np.zeros((3, 5))))
    assert str(info.value) == "Linear(4→8) expected input of shape (N, 4), got (3, 5)"
    with pytest.raises(ValueError, match=r"^Linear\(4→8\) expected input of shape \(N, 4\), "
                                         r"got \(3, 5\)$"):
        layer.forward(case.asarray(np.zeros((3, 5))))
    model = nb.Sequential(nb.ReLU(), layer)
    with pytest.raises(ValueError, match=r"Linear\(4→8\) expected .* got \(3, 5\)"):
        model.forward(case.asarray(np.zeros((3, 5))))


def test_one_dimensional_input_of_the_wrong_width(case: Any) -> None:
    """A single sample (in,) is accepted as in PyTorch (issue 9; tests/test_nd.py checks its
    values); one of the wrong width, or a 0-d input, is named with the shape expected."""
    with pytest.raises(ValueError, match=r"^Linear\(4→8\) expected input of shape \(\.\.\., 4\), "
                                         r"got \(5,\)$"):
        _linear(case, 4, 8)(case.asarray(np.zeros(5)))
    with pytest.raises(ValueError, match=r"^Linear\(4→8\) expected input of shape \(\.\.\., 4\), "
                                         r"got \(\)$"):
        _linear(case, 4, 8).forward(case.asarray(np.zeros(())))


def test_integer_input(case: Any) -> None:
    x = case.asarray(np.zeros((3, 4)), dtype="int64")
    with pytest.raises(TypeError, match=r"Linear\(4→8\): input must have a floating dtype "
                                        r"\(float32 or float64\), got .*int(32|64)"):
        _linear(case, 4, 8).forward(x)
    with pytest.raises(TypeError, match=r"ReLU\(\): input must have a floating dtype"):
        nb.ReLU().forward(x)


def test_input_of_other_dtype(case: Any) -> None:
    """float64 input to a float32 model (and the reverse) is refused: nothing is promoted."""
    other = "float32" if case.is_float64 else "float64"
    be = case.backend if other == "float32" or case.has_float64 else nb.get_backend("numpy")
    x = be.asarray(np.zeros((3, 4)), dtype=other)
    err: type[Exception] = TypeError if be is case.backend else ValueError
    match = (fr"Linear\(4→8\): input has dtype {other}; expected {case.dtype_name}"
             if err is TypeError else r"Linear\(4→8\): input is numpy")
    with pytest.raises(err, match=match):
        _linear(case, 4, 8).forward(x)


def test_float64_input_to_float32_model() -> None:
    layer = nb.Linear(4, 8, backend="numpy")  # float32 by default
    with pytest.raises(TypeError, match=r"Linear\(4→8\): input has dtype float64; expected "
                                        r"float32.*nothing is promoted silently"):
        layer(np.zeros((3, 4)))


def test_input_on_another_backend(case: Any) -> None:
    strict = pytest.importorskip("array_api_strict")
    if case.backend.name == "numpy":
        other = nb.get_backend(strict, device=strict.Device("device1"))
        match = r"input is array_api_strict on .*Device\('device1'\); expected numpy on 'cpu'"
    else:
        other = nb.get_backend("numpy")
        match = r"input is numpy on 'cpu'; expected .* where the parameters live"
    x = other.asarray(np.zeros((3, 4)), dtype=case.dtype_name)
    with pytest.raises(ValueError, match=r"Linear\(4→8\): " + match):
        _linear(case, 4, 8).forward(x)
    with pytest.raises(ValueError, match=match):
        nb.Sequential(_linear(case, 4, 8)).forward(x)


def test_strict_device_mismatch_names_both_devices() -> None:
    strict = pytest.importorskip("array_api_strict")
    cpu = nb.get_backend(strict, device=strict.Device("CPU_DEVICE"))
    device1 = nb.get_backend(strict, device=strict.Device("device1"))
    layer = nb.Linear(4, 8, dtype="float64", backend=device1)
    with pytest.raises(ValueError, match=r"input is array_api_strict on .*Device\('CPU_DEVICE'\); "
                                         r"expected array_api_strict on .*Device\('device1'\)"):
        layer(cpu.asarray(np.zeros((3, 4)), dtype="float64"))


def test_bad_gradient_dy(case: Any) -> None:
    layer = _linear(case, 4, 8)
    x = case.asarray(np.zeros((3, 4)))
    _, backprop = layer.forward(x)
    with pytest.raises(ValueError, match=r"Linear\(4→8\): gradient dy has shape \(3, 5\), "
                                         r"output y has \(3, 8\)"):
        backprop(case.asarray(np.zeros((3, 5))))
    with pytest.raises(TypeError, match="the gradient dy must be an array, got list"):
        backprop([[0.0] * 8] * 3)
    with pytest.raises(TypeError, match=r"gradient dy has dtype .*int(32|64)"):
        backprop(case.asarray(np.zeros((3, 8)), dtype="int64"))
    # A failed call does not spend the closure.
    dx = backprop(case.asarray(np.ones((3, 8))))
    case.check_placement(dx)
    _, backprop = nb.Sequential(layer, nb.ReLU()).forward(x)
    with pytest.raises(ValueError, match=r"Sequential: gradient dy has shape \(3, 4\)"):
        backprop(case.asarray(np.zeros((3, 4))))


def test_non_array_input(case: Any) -> None:
    with pytest.raises(TypeError, match=r"Linear\(4→8\): input must be an array, got list"):
        _linear(case, 4, 8)([[0.0] * 4])


def test_sequential_with_mismatched_widths() -> None:
    with pytest.raises(ValueError) as info:
        nb.Sequential(nb.Linear(4, 8, backend="numpy"), nb.ReLU(),
                      nb.Linear(9, 2, backend="numpy"))
    assert str(info.value) == ("Sequential: layer 2 Linear(9→2) expects 9 features, but layer "
                               "0 Linear(4→8) produces 8")
    with pytest.raises(ValueError, match=r"^Sequential: layer 1 Linear\(9→2\) expects 9 "
                                         r"features, but layer 0 Linear\(4→8\) produces 8$"):
        nb.Sequential(nb.Linear(4, 8, backend="numpy"), nb.Linear(9, 2, backend="numpy"))


def test_nested_sequential_with_mismatched_widths_names_the_index_path() -> None:
    """3.13: a nested Sequential's widths were not checked; forward ended in NumPy's matmul."""
    with pytest.raises(ValueError, match=r"^Sequential: layer 1\.0 Linear\(6→2\) expects 6 "
                                         r"features, but layer 0 Linear\(4→8\) produces 8$"):
        nb.Sequential(nb.Linear(4, 8, backend="numpy"),
                      nb.Sequential(nb.Linear(6, 2, backend="numpy")))
    with pytest.raises(ValueError, match=r"^Sequential: layer 2 Linear\(5→2\) expects 5 "
                                         r"features, but layer 1\.1\.0 Linear\(8→3\) "
                                         r"produces 3$"):
        nb.Sequential(nb.Linear(4, 8, backend="numpy"),
                      nb.Sequential(nb.ReLU(), nb.Sequential(nb.Linear(8, 3, backend="numpy"))),
                      nb.Linear(5, 2, backend="numpy"))
    # Widths that connect through the nesting are accepted.
    nb.Sequential(nb.Linear(4, 8, backend="numpy"),
                  nb.Sequential(nb.ReLU(), nb.Linear(8, 3, backend="numpy")),
                  nb.Linear(3, 2, backend="numpy"))


class _Block(nb.Module):
    """A user's container that calls its Linear directly: no width is known at construction."""

    def __init__(self, inner: nb.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward_pass(self, x: Any, ctx: Any) -> tuple[Any, Any]:
        return self.inner.forward_pass(x, ctx)


def test_width_mismatch_found_in_forward_names_the_index_path(case: Any) -> None:
    """Where construction cannot see the widths, forward and inference name the layer by its
    index path and give both shapes, instead of the library's matmul error."""
    model = nb.Sequential(_linear(case, 4, 8),
                          nb.Sequential(nb.ReLU(), _Block(_linear(case, 6, 2))))
    x = case.asarray(np.zeros((3, 4)))
    message = (r"^Sequential: layer 1\.1 Linear\(6→2\) expected input of shape \(N, 6\), "
               r"got \(3, 8\)$")
    for run in (lambda: model(x), lambda: model.forward(x),
                lambda: model.forward(x, input_grad=True)):
        with pytest.raises(ValueError, match=message):
            run()
    # The model's own input: the first Linear, named by its path.
    model = nb.Sequential(nb.ReLU(), nb.Sequential(_linear(case, 3, 3)))
    with pytest.raises(ValueError, match=r"^Sequential: layer 1\.0 Linear\(3→3\) expected "
                                         r"input of shape \(N, 3\), got \(2, 2\)$"):
        model.forward(case.asarray(np.zeros((2, 2))))
    with pytest.raises(ValueError, match=r"^Sequential: layer 1\.0 Linear\(3→3\) expected "
                                         r"input of shape \(N, 3\), got \(2, 2\)$"):
        model(case.asarray(np.zeros((2, 2))))


def test_sequential_rejects_non_modules() -> None:
    with pytest.raises(TypeError, match="Sequential: layer 1 must be a Module, got function"):
        nb.Sequential(nb.ReLU(), lambda x: x)


def test_sequential_with_layers_on_different_backends(case: Any) -> None:
    strict = pytest.importorskip("array_api_strict")
    other = (nb.get_backend(strict, device=strict.Device("device1"))
             if case.backend.name == "numpy" else nb.get_backend("numpy"))
    with pytest.raises(ValueError, match=r"Sequential: parameter '1.weight' is .* but "
                                         r"'0.weight' is .*pass backend=\.\.\."):
        nb.Sequential(_linear(case, 4, 8),
                      nb.Linear(8, 2, dtype=case.dtype_name, backend=other))
    if case.has_float64:
        other_dtype = "float32" if case.is_float64 else "float64"
        with pytest.raises(ValueError, match=fr"'1.weight' is .*\({other_dtype}\)"):
            nb.Sequential(_linear(case, 4, 8),
                          nb.Linear(8, 2, dtype=other_dtype, backend=case.backend))


def test_layers_never_mutate_inputs(case: Any) -> None:
    model = nb.Sequential(_linear(case, 4, 5), nb.Sigmoid(), _linear(case, 5, 5, 1), nb.Tanh(),
                          nb.LeakyReLU(), nb.Softmax(), nb.LogSoftmax(), nb.Identity(), nb.ReLU())
    xh, dyh = _host(case, (3, 4), 27), _host(case, (3, 5), 28)
    x, dy = case.asarray(xh), case.asarray(dyh)
    model(x)
    _y, backprop = model.forward(x, input_grad=True)
    backprop(dy)
    np.testing.assert_array_equal(nb.to_numpy(x), xh)
    np.testing.assert_array_equal(nb.to_numpy(dy), dyh)
