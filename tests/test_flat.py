"""Flat optimizer buffers: parity with the per-parameter reference path, layout, fallbacks,
and a step whose number of array calls does not grow with the number of parameter tensors."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from test_optim import CONFIGS

import nnbackend as nb
from nnbackend.optim import SGD, Adam, Optimizer, RMSprop

OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    **{name: make for name, (make, _) in CONFIGS.items()},
    "rmsprop-centered-momentum": lambda p: RMSprop(p, 0.01, momentum=0.5, centered=True,
                                                   weight_decay=0.01),
}


def _rebuild(opt: Optimizer, params: list[nb.Parameter]) -> Optimizer:
    """The same optimizer over ``params`` on the per-parameter path."""
    hyper = opt.hyperparameters()
    if "betas" in hyper:
        hyper["betas"] = tuple(hyper["betas"])
    lr = hyper.pop("lr")
    return type(opt)(params, lr, **hyper, flat=False)


def _params(backend: nb.Backend, shapes: list[tuple[int, ...]], seed: int) -> list[nb.Parameter]:
    rng = np.random.default_rng(seed)
    return [nb.Parameter(backend.asarray(rng.standard_normal(s), dtype="float64", copy=True),
                         f"p{i}") for i, s in enumerate(shapes)]


SHAPES = [(3, 4), (4,), (2, 3), (), (5,)]


BACKENDS = [
    "numpy",
    pytest.param("torch", marks=pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                                   reason="no PyTorch")),
]


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_flat_path_equals_reference_path_bit_for_bit(backend_name: str, name: str) -> None:
    """Twenty steps, with a schedule, a skipped parameter and a user-rebound gradient on the
    way: parameters and state equal the per-parameter path exactly."""
    be = nb.get_backend(backend_name)
    flat_params, ref_params = _params(be, SHAPES, 0), _params(be, SHAPES, 0)
    flat_opt = OPTIMIZERS[name](flat_params)
    ref_opt = _rebuild(flat_opt, ref_params)
    assert flat_opt._flat_groups and not ref_opt._flat_groups
    rng = np.random.default_rng(1)
    for step in range(20):
        flat_opt.zero_grad()
        ref_opt.zero_grad()
        for i, shape in enumerate(SHAPES):
            if step == 7 and i == 1:
                continue  # one parameter without a gradient: its step count falls behind
            g = rng.standard_normal(shape)
            for p in (flat_params[i], ref_params[i]):
                p.accumulate_grad(be.asarray(g, dtype="float64", copy=True))
        if step == 12:  # a gradient assigned by hand instead of accumulated
            flat_params[0].grad = flat_params[0].grad * 1.0
        for opt in (flat_opt, ref_opt):
            opt.lr = opt.lr * 0.95
            opt.step()
        for a, b in zip(flat_params, ref_params, strict=True):
            np.testing.assert_array_equal(nb.to_numpy(a.data), nb.to_numpy(b.data))
    for a, b in zip(flat_opt.state_dict()["state"], ref_opt.state_dict()["state"], strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("name", ["sgd-momentum", "adam", "amsgrad"])
def test_flat_path_runs_while_the_layout_holds(name: str) -> None:
    be = nb.get_backend("numpy")
    params = _params(be, SHAPES, 2)
    opt = OPTIMIZERS[name](params)
    (group,) = opt._flat_groups
    for p in params:
        assert np.shares_memory(p.data, group.data)
    for _ in range(3):
        opt.zero_grad()
        for p in params:
            p.accumulate_grad(be.asarray(np.ones(p.shape)))
        assert group.common_step(opt.params, opt.state) is not None
        opt.step()
    for p, st in zip(params, opt.state, strict=True):
        assert np.shares_memory(p.grad, group.grad)
        for key, value in st.items():
            if key != "step":
                assert np.shares_memory(value, group.state[key]), key
        assert st["step"] == 3


def test_a_model_trains_identically_on_both_paths() -> None:
    """Backprop writes gradients into the flat buffer; training matches the reference path."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((16, 5)).astype(np.float32)
    y = rng.integers(0, 3, 16)

    def model() -> nb.Sequential:
        return nb.Sequential(nb.Linear(5, 8, seed=0), nb.Tanh(), nb.Linear(8, 3, seed=1))

    flat_model, ref_model = model(), model()
    flat_opt = Adam(flat_model.parameters(), 0.01)
    ref_opt = Adam(ref_model.parameters(), 0.01, flat=False)
    loss_fn = nb.CrossEntropyLoss()
    for _ in range(10):
        for m, opt in ((flat_model, flat_opt), (ref_model, ref_opt)):
            out, backprop = m.forward(X)
            _, dy = loss_fn(out, y)
            opt.zero_grad()
            backprop(dy)
            opt.step()
    for a, b in zip(flat_model.parameters(), ref_model.parameters(), strict=True):
        np.testing.assert_array_equal(a.data, b.data)
    (group,) = flat_opt._flat_groups
    assert all(np.shares_memory(p.grad, group.grad) for p in flat_model.parameters())


def test_loading_state_keeps_the_flat_layout() -> None:
    be = nb.get_backend("numpy")
    params = _params(be, SHAPES, 4)
    opt = Adam(params, 0.01)
    for _ in range(2):
        opt.zero_grad()
        for p in params:
            p.accumulate_grad(be.asarray(np.full(p.shape, 0.5)))
        opt.step()
    saved = opt.state_dict()
    twin_params = _params(be, SHAPES, 4)
    twin = Adam(twin_params, 0.01)
    twin.load_state_dict(saved)
    module = nb.Sequential(nb.Linear(2, 2, seed=0))
    module_opt = SGD(module.parameters(), 0.1)
    module.load_state_dict({name: np.ones_like(a) for name, a in module.state_dict().items()})
    (group,) = module_opt._flat_groups
    assert all(np.shares_memory(p.data, group.data) for p in module.parameters())
    np.testing.assert_array_equal(group.data, np.ones(6, dtype=np.float32))
    for a, b in zip(params, twin_params, strict=True):
        a.data[...] = b.data
    for opt_ in (opt, twin):
        opt_.zero_grad()
        for p in opt_.params:
            p.accumulate_grad(be.asarray(np.full(p.shape, -0.25)))
        opt_.step()
    (twin_group,) = twin._flat_groups
    assert all(np.shares_memory(st["m"], twin_group.state["m"]) for st in twin.state)
    for a, b in zip(params, twin_params, strict=True):
        np.testing.assert_array_equal(a.data, b.data)


def test_parameters_of_backends_without_views_stay_per_parameter() -> None:
    strict = pytest.importorskip("array_api_strict")
    be = nb.get_backend(strict, device=strict.Device("device1"))
    params = _params(be, SHAPES, 5)
    opt = Adam(params, 0.01)
    assert opt._flat_groups == []
    for p in params:
        p.accumulate_grad(be.asarray(np.ones(p.shape), dtype="float64"))
    opt.step()
    assert all(p.data.device == strict.Device("device1") for p in params)


@pytest.mark.parametrize("name", ["sgd", "sgd-nesterov-wd", "adam", "amsgrad", "adamw",
                                  "rmsprop-centered-momentum"])
def test_a_flat_step_costs_the_same_array_calls_for_any_number_of_tensors(name: str) -> None:
    """Counted with PyTorch's function mode, which sees every tensor operation (operators and
    in-place updates included): on a GPU each is at least one kernel launch."""
    torch = pytest.importorskip("torch")
    from torch.overrides import TorchFunctionMode

    class Count(TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func: Any, types: Any, args: Any = (),
                               kwargs: Any = None) -> Any:
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    def calls_per_step(n_tensors: int, *, flat: bool) -> int:
        be = nb.get_backend("torch")
        params = _params(be, [(3,)] * n_tensors, 6)
        opt = _rebuild(OPTIMIZERS[name](params), params) if not flat else OPTIMIZERS[name](params)
        for _ in range(2):  # the first step allocates the state
            for p in params:
                p.grad = None
                p.accumulate_grad(torch.ones(3, dtype=torch.float64))
            Count.calls = 0
            with Count():
                opt.step()
        return Count.calls

    assert calls_per_step(2, flat=True) == calls_per_step(40, flat=True)
    assert calls_per_step(40, flat=False) > 10 * calls_per_step(2, flat=True)


@pytest.mark.parametrize("switch", ["amsgrad", "momentum"])
def test_state_that_appears_later_is_shared_and_saved(switch: str) -> None:
    """Turning on AMSGrad (or RMSprop's momentum) after some steps adds a flat state array:
    every parameter must see it, so state_dict saves it, as on the reference path."""
    be = nb.get_backend("numpy")
    runs = []
    for flat in (True, False):
        params = _params(be, SHAPES, 8)
        opt: Optimizer = (Adam(params, 0.01, flat=flat) if switch == "amsgrad"
                          else RMSprop(params, 0.01, flat=flat))
        for step in range(4):
            if step == 2:
                setattr(opt, switch, True if switch == "amsgrad" else 0.9)
            opt.zero_grad()
            for p in params:
                p.accumulate_grad(be.asarray(np.full(p.shape, 0.5 - step, dtype=np.float64)))
            opt.step()
        runs.append((params, opt.state_dict()))
    (flat_params, flat_state), (ref_params, ref_state) = runs
    for a, b in zip(flat_params, ref_params, strict=True):
        np.testing.assert_array_equal(a.data, b.data)
    for a, b in zip(flat_state["state"], ref_state["state"], strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_gradient_of_the_wrong_shape_is_reported_not_broadcast() -> None:
    be = nb.get_backend("numpy")
    params = _params(be, [(3, 4)], 9)
    opt = SGD(params, 0.1)
    params[0].accumulate_grad(be.asarray(np.ones(4)))  # a buggy layer's gradient
    with pytest.raises(ValueError, match=r"gradient of Parameter\('p0'.* shape \(4,\)"):
        opt.step()
    opt.zero_grad()
    params[0].accumulate_grad(be.asarray(np.ones((3, 4), dtype=np.float32)))  # not cast either
    with pytest.raises(ValueError, match="dtype float32"):
        opt.step()


def test_loading_a_permutation_of_the_modules_own_arrays() -> None:
    model = nb.Sequential(nb.Linear(4, 4, seed=1), nb.ReLU(), nb.Linear(4, 4, seed=2))
    SGD(model.parameters(), 0.1)  # the parameters become views of a flat buffer
    state = model.state_dict()
    first, second = state["0.weight"].copy(), state["2.weight"].copy()
    model.load_state_dict({**state, "0.weight": state["2.weight"], "2.weight": state["0.weight"]})
    np.testing.assert_array_equal(model.state_dict()["0.weight"], second)
    np.testing.assert_array_equal(model.state_dict()["2.weight"], first)


def test_torch_inputs_that_require_grad_are_refused_clearly() -> None:
    torch = pytest.importorskip("torch")
    model = nb.Sequential(nb.Linear(4, 3, seed=1, backend="torch"))
    x = torch.randn(5, 4, dtype=torch.float32, requires_grad=True)
    with pytest.raises(TypeError, match=r"requires grad; .* pass it with \.detach\(\)"):
        model.forward(x)
    with pytest.raises(TypeError, match="requires grad"):
        nb.functional.cross_entropy(x, torch.tensor([0, 1, 2, 0, 1]))
    y, _ = model.forward(x.detach())
    assert y.shape == (5, 3)


def test_moving_the_model_after_the_optimizer_stepped_is_named() -> None:
    pytest.importorskip("torch")
    model = nb.Sequential(nb.Linear(3, 2, seed=0))
    opt = Adam(model.parameters(), 0.01)
    for p in model.parameters():
        p.accumulate_grad(np.ones(p.shape, dtype=np.float32))
    opt.step()
    model.to("torch")
    for p in model.parameters():
        p.accumulate_grad(nb.get_backend("torch").asarray(np.ones(p.shape), dtype="float32"))
    with pytest.raises(ValueError, match=r"moved after the optimizer was created"):
        opt.step()
