"""Optimizers: golden steps by hand, descent, torch.optim trajectories, state dicts, placement.

The trajectory tests train the same 5→7→6→4 network (tanh, ReLU, MSE) for 100 steps in
nnbackend, on every backend of the matrix, and in PyTorch float64 with ``torch.optim``; the
gradients come from each library's own backward pass.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _frozen_array import FrozenArray, frozen
from array_api_compat import is_writeable_array
from conftest import Case, make_case

import nnbackend as nb
from nnbackend.backend import supports_views
from nnbackend.optim import (
    SGD,
    Adam,
    AdamW,
    LinearWarmup,
    Optimizer,
    ReduceLROnPlateau,
    RMSprop,
    StepLR,
    sgd_update,
)
from nnbackend.optim.optimizer import maximum_into

# -------------------------------------------------------------------------------------------
# Shared problem: a small MLP, its initial weights and 100 batches, all fixed on the host

LAYERS = ((5, 7), (7, 6), (6, 4))
N_STEPS = 100
BATCH = 8


def _f32_exact(a: np.ndarray) -> np.ndarray:
    """float64 values that float32 represents exactly: every dtype starts from the same point."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


@functools.cache
def _problem() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2024)
    weights: list[np.ndarray] = []
    for fan_in, fan_out in LAYERS:
        weights.append(_f32_exact(rng.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in)))
        weights.append(_f32_exact(0.1 * rng.standard_normal(fan_out)))
    X = _f32_exact(rng.standard_normal((N_STEPS, BATCH, 5)))
    Y = _f32_exact(rng.standard_normal((N_STEPS, BATCH, 4)))
    return weights, X, Y


def _mlp(case: Case) -> nb.Sequential:
    be, dt = case.backend, case.dtype_name
    model = nb.Sequential(
        nb.Linear(5, 7, backend=be, dtype=dt, seed=0), nb.Tanh(),
        nb.Linear(7, 6, backend=be, dtype=dt, seed=0), nb.ReLU(),
        nb.Linear(6, 4, backend=be, dtype=dt, seed=0),
    )
    weights, _, _ = _problem()
    model.load_state_dict({k: w.astype(dt) for k, w in zip(model.state_dict(), weights,
                                                               strict=True)})
    return model


def _backward(model: nb.Sequential, case: Case, t: int) -> Any:
    """Accumulate the gradients of batch t's MSE loss; return the loss (a 0-d array)."""
    _, X, Y = _problem()
    y, backprop = model.forward(case.asarray(X[t]))
    loss, dy = nb.MSELoss()(y, case.asarray(Y[t]))
    backprop(dy)
    return loss


def _host(model: nb.Module) -> list[np.ndarray]:
    return [nb.to_numpy(p.data).astype(np.float64) for p in model.parameters()]


# name: (nnbackend optimizer, torch.optim optimizer), identical settings
CONFIGS: dict[str, tuple[Callable[[Any], Optimizer], Callable[[Any, Any], Any]]] = {
    "sgd": (lambda p: SGD(p, 0.1), lambda t, p: t.optim.SGD(p, 0.1)),
    "sgd-momentum": (
        lambda p: SGD(p, 0.1, momentum=0.9),
        lambda t, p: t.optim.SGD(p, 0.1, momentum=0.9),
    ),
    "sgd-nesterov-wd": (
        lambda p: SGD(p, 0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda t, p: t.optim.SGD(p, 0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    ),
    "sgd-momentum-wd": (
        lambda p: SGD(p, 0.1, momentum=0.5, weight_decay=0.05),
        lambda t, p: t.optim.SGD(p, 0.1, momentum=0.5, weight_decay=0.05),
    ),
    "adam": (lambda p: Adam(p, 0.01), lambda t, p: t.optim.Adam(p, 0.01)),
    "adam-l2": (
        lambda p: Adam(p, 0.01, weight_decay=0.05),
        lambda t, p: t.optim.Adam(p, 0.01, weight_decay=0.05),
    ),
    "amsgrad": (
        lambda p: Adam(p, 0.01, betas=(0.8, 0.99), amsgrad=True),
        lambda t, p: t.optim.Adam(p, 0.01, betas=(0.8, 0.99), amsgrad=True),
    ),
    "adamw": (
        lambda p: AdamW(p, 0.01, weight_decay=0.1),
        lambda t, p: t.optim.AdamW(p, 0.01, weight_decay=0.1),
    ),
    "adamw-amsgrad": (
        lambda p: AdamW(p, 0.02, eps=1e-6, amsgrad=True),
        lambda t, p: t.optim.AdamW(p, 0.02, eps=1e-6, amsgrad=True),
    ),
    "rmsprop": (lambda p: RMSprop(p, 0.01), lambda t, p: t.optim.RMSprop(p, 0.01)),
    "rmsprop-centered-momentum-wd": (
        lambda p: RMSprop(p, 0.003, alpha=0.9, momentum=0.9, centered=True, weight_decay=0.01),
        lambda t, p: t.optim.RMSprop(p, 0.003, alpha=0.9, momentum=0.9, centered=True,
                                     weight_decay=0.01),
    ),
}


@functools.cache
def _torch_trajectory(config: str) -> list[np.ndarray]:
    """The parameters after N_STEPS of torch.optim in float64 on the shared problem."""
    torch = pytest.importorskip("torch")
    weights, X, Y = _problem()
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 6), torch.nn.ReLU(),
        torch.nn.Linear(6, 4),
    ).double()
    with torch.no_grad():
        for p, w in zip(model.parameters(), weights, strict=True):
            p.copy_(torch.from_numpy(w))
    opt = CONFIGS[config][1](torch, model.parameters())
    for t in range(N_STEPS):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(torch.from_numpy(X[t])),
                                            torch.from_numpy(Y[t]))
        loss.backward()
        opt.step()
    return [p.detach().numpy().copy() for p in model.parameters()]


@pytest.mark.parametrize("config", list(CONFIGS))
def test_trajectory_matches_torch_optim(case: Case, config: str) -> None:
    """100 steps agree with torch.optim: 1e-9 relative in float64; float32 vs float64 torch."""
    expected = _torch_trajectory(config)
    model = _mlp(case)
    opt = CONFIGS[config][0](model)
    for t in range(N_STEPS):
        opt.zero_grad()
        _backward(model, case, t)
        opt.step()
    for p in model.parameters():
        case.check_placement(p.data)
    start = _problem()[0]
    for got, want, w0 in zip(_host(model), expected, start, strict=True):
        assert np.max(np.abs(want - w0)) > 1e-3  # the parameters really moved
        if case.is_float64:
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
        else:  # float32 rounding accumulated over 100 steps, against the float64 reference
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
            assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want)


# -------------------------------------------------------------------------------------------
# Golden single steps, worked out by hand

THETA = [1.0, -2.0, 0.5]
G1 = [0.5, 0.25, -1.0]
G2 = [1.0, -0.5, 0.0]


def _one_param(case: Case, values: list[float] = THETA) -> nb.Parameter:
    return nb.Parameter(case.asarray(values), "theta")


def _step(opt: Optimizer, p: nb.Parameter, case: Case, grad: list[float]) -> np.ndarray:
    p.grad = case.asarray(grad)
    opt.step()
    case.check_placement(p.data)
    return nb.to_numpy(p.data).astype(np.float64)


def _close(case: Case, got: np.ndarray, want: list[float]) -> None:
    np.testing.assert_allclose(got, want, rtol=case.rtol, atol=case.rtol)


def test_sgd_golden(case: Case) -> None:
    p = _one_param(case)
    _close(case, _step(SGD([p], 0.1), p, case, G1), [0.95, -2.025, 0.6])
    # L2 weight decay: g' = g + 0.1 θ = [0.6, 0.05, -0.95]
    p = _one_param(case)
    _close(case, _step(SGD([p], 0.1, weight_decay=0.1), p, case, G1), [0.94, -2.005, 0.595])


def test_sgd_momentum_golden(case: Case) -> None:
    p = _one_param(case)
    opt = SGD([p], 0.1, momentum=0.9)
    # v1 = 0.1 g1 = [0.05, 0.025, -0.1]; θ1 = θ0 − v1
    _close(case, _step(opt, p, case, G1), [0.95, -2.025, 0.6])
    # v2 = 0.9 v1 + 0.1 g2 = [0.145, -0.0275, -0.09]; θ2 = θ1 − v2
    _close(case, _step(opt, p, case, G2), [0.805, -1.9975, 0.69])
    _close(case, nb.to_numpy(opt.state[0]["velocity"]), [0.145, -0.0275, -0.09])
    assert opt.state[0]["step"] == 2


def test_sgd_nesterov_golden(case: Case) -> None:
    p = _one_param(case)
    opt = SGD([p], 0.1, momentum=0.9, nesterov=True)
    # θ1 = θ0 − (0.1 g1 + 0.9 v1) = θ0 − [0.095, 0.0475, −0.19]
    _close(case, _step(opt, p, case, G1), [0.905, -2.0475, 0.69])
    # θ2 = θ1 − (0.1 g2 + 0.9 v2) = θ1 − [0.2305, −0.07475, −0.081]
    _close(case, _step(opt, p, case, G2), [0.6745, -1.97275, 0.771])


def _adam_by_hand(theta: list[float], grads: list[list[float]], *, lr: float, b1: float,
                  b2: float, eps: float, wd: float = 0.0, decoupled: bool = False,
                  amsgrad: bool = False) -> list[float]:
    """Adam on each coordinate with Python floats, straight from the paper's equations."""
    out = []
    for i, theta_i in enumerate(theta):
        th, m, v, vmax = theta_i, 0.0, 0.0, 0.0
        for t, g_all in enumerate(grads, start=1):
            g = g_all[i]
            if decoupled:
                th = th - lr * wd * th
            else:
                g = g + wd * th
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            vmax = max(vmax, v)
            m_hat = m / (1 - b1**t)
            v_hat = (vmax if amsgrad else v) / (1 - b2**t)
            th = th - lr * m_hat / (math.sqrt(v_hat) + eps)
        out.append(th)
    return out


def test_adam_golden_first_step(case: Case) -> None:
    """After one step m̂ = g and v̂ = g², so θ1 = θ0 − α g / (|g| + ε)."""
    p = _one_param(case)
    want = [1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 - 0.1 * 0.25 / (0.25 + 1e-8),
            0.5 + 0.1 * 1.0 / (1.0 + 1e-8)]
    _close(case, _step(Adam([p], 0.1), p, case, G1), want)


@pytest.mark.parametrize(
    ("make", "settings"),
    [
        (lambda ps: Adam(ps, 0.1), {}),
        (lambda ps: Adam(ps, 0.1, betas=(0.5, 0.9), eps=1e-3), {"b1": 0.5, "b2": 0.9,
                                                                  "eps": 1e-3}),
        (lambda ps: Adam(ps, 0.1, weight_decay=0.2), {"wd": 0.2}),
        (lambda ps: AdamW(ps, 0.1, weight_decay=0.2), {"wd": 0.2, "decoupled": True}),
        (lambda ps: Adam(ps, 0.1, amsgrad=True), {"amsgrad": True}),
    ],
    ids=["adam", "adam-betas-eps", "adam-l2", "adamw", "amsgrad"],
)
def test_adam_golden_steps(case: Case, make: Callable[[Any], Optimizer],
                           settings: dict[str, Any]) -> None:
    # G3 shrinks v in its first coordinate, so AMSGrad's max differs from v there
    grads = [G1, G2, [0.0, 0.1, 0.2]]
    kw = {"lr": 0.1, "b1": 0.9, "b2": 0.999, "eps": 1e-8, **settings}
    p = _one_param(case)
    opt = make([p])
    for k in range(1, len(grads) + 1):
        _close(case, _step(opt, p, case, grads[k - 1]), _adam_by_hand(THETA, grads[:k], **kw))
    assert opt.state[0]["step"] == 3


def test_amsgrad_keeps_the_maximum(case: Case) -> None:
    p = _one_param(case, [1.0])
    opt = Adam([p], 0.1, amsgrad=True)
    _step(opt, p, case, [1.0])
    _step(opt, p, case, [0.0])  # v2 = 0.999 · 0.001 < v1 = 0.001
    _close(case, nb.to_numpy(opt.state[0]["v"]), [0.000999])
    _close(case, nb.to_numpy(opt.state[0]["vmax"]), [0.001])


def _rmsprop_by_hand(theta: list[float], grads: list[list[float]], *, lr: float, alpha: float,
                     eps: float, momentum: float = 0.0, centered: bool = False,
                     wd: float = 0.0) -> list[float]:
    out = []
    for i, theta_i in enumerate(theta):
        th, s, gbar, b = theta_i, 0.0, 0.0, 0.0
        for g_all in grads:
            g = g_all[i] + wd * th
            s = alpha * s + (1 - alpha) * g * g
            gbar = alpha * gbar + (1 - alpha) * g
            r = math.sqrt(s - gbar * gbar if centered else s) + eps
            if momentum:
                b = momentum * b + g / r
                th = th - lr * b
            else:
                th = th - lr * g / r
        out.append(th)
    return out


def test_rmsprop_golden_first_step(case: Case) -> None:
    """s1 = 0.01 g², so θ1 = θ0 − 0.01 g / (0.1 |g| + ε)."""
    p = _one_param(case)
    want = [1.0 - 0.01 * 0.5 / (0.05 + 1e-8), -2.0 - 0.01 * 0.25 / (0.025 + 1e-8),
            0.5 + 0.01 * 1.0 / (0.1 + 1e-8)]
    _close(case, _step(RMSprop([p]), p, case, G1), want)


@pytest.mark.parametrize(
    ("make", "settings"),
    [
        (lambda ps: RMSprop(ps, 0.01), {}),
        (lambda ps: RMSprop(ps, 0.01, alpha=0.9, momentum=0.5), {"alpha": 0.9,
                                                                  "momentum": 0.5}),
        (lambda ps: RMSprop(ps, 0.01, centered=True, weight_decay=0.1), {"centered": True,
                                                                          "wd": 0.1}),
    ],
    ids=["plain", "momentum", "centered-l2"],
)
def test_rmsprop_golden_steps(case: Case, make: Callable[[Any], Optimizer],
                              settings: dict[str, Any]) -> None:
    grads = [G1, G2, [0.3, 0.1, 0.2]]
    kw = {"lr": 0.01, "alpha": 0.99, "eps": 1e-8, **settings}
    p = _one_param(case)
    opt = make([p])
    for k in range(1, len(grads) + 1):
        _close(case, _step(opt, p, case, grads[k - 1]), _rmsprop_by_hand(THETA, grads[:k], **kw))


# -------------------------------------------------------------------------------------------
# Each optimizer goes the right direction


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: SGD(ps, 0.1),
        lambda ps: SGD(ps, 0.05, momentum=0.9, nesterov=True),
        lambda ps: Adam(ps, 0.05),
        lambda ps: AdamW(ps, 0.05, amsgrad=True),
        lambda ps: RMSprop(ps, 0.01, momentum=0.5),
    ],
    ids=["sgd", "nesterov", "adam", "adamw-amsgrad", "rmsprop"],
)
def test_lowers_the_loss(case: Case, make: Callable[[Any], Optimizer]) -> None:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((64, 3))
    y = X @ np.array([[1.5], [-2.0], [0.5]]) + 0.3
    Xd, yd = case.asarray(X), case.asarray(y)
    model = nb.Sequential(nb.Linear(3, 1, backend=case.backend, dtype=case.dtype_name, seed=0))
    opt = make(model)
    losses = []
    for _ in range(30):
        out, backprop = model.forward(Xd)
        loss, dy = nb.MSELoss()(out, yd)
        losses.append(float(nb.to_numpy(loss)))
        opt.zero_grad()
        backprop(dy)
        opt.step()
    assert losses[1] < losses[0]  # the very first step already goes downhill
    assert losses[-1] < 0.25 * losses[0]


# -------------------------------------------------------------------------------------------
# SGD keeps the seed's momentum form: lr inside the velocity


def test_sgd_momentum_under_a_schedule_is_the_seed_form() -> None:
    """Equal to PyTorch while lr is constant; after lr changes, v ← βv + α g, θ ← θ − v."""
    torch = pytest.importorskip("torch")
    case = make_case(("numpy", None, "float64"))
    grads = [[0.5, -1.0], [0.25, 0.75], [1.0, 0.5], [-0.5, 0.25]]
    lrs = [0.1, 0.1, 0.02, 0.02]
    p = _one_param(case, [1.0, 2.0])
    opt = SGD([p], 0.1, momentum=0.9)
    tp = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    topt = torch.optim.SGD([tp], 0.1, momentum=0.9)
    theta, v = np.array([1.0, 2.0]), np.zeros(2)
    for k, (g, lr) in enumerate(zip(grads, lrs, strict=True)):
        opt.lr = lr
        for group in topt.param_groups:
            group["lr"] = lr
        ours = _step(opt, p, case, g)
        tp.grad = torch.tensor(g, dtype=torch.float64)
        topt.step()
        v = 0.9 * v + lr * np.array(g)
        theta = theta - v
        np.testing.assert_allclose(ours, theta, rtol=1e-15)
        gap = np.max(np.abs(ours - tp.detach().numpy()))
        assert gap < 1e-15 if k < 2 else gap > 1e-3


# -------------------------------------------------------------------------------------------
# In place, placement, skipped and untouched gradients


@pytest.mark.parametrize("config", ["sgd-nesterov-wd", "adam-l2", "adamw-amsgrad",
                                    "rmsprop-centered-momentum-wd"])
def test_updates_in_place_with_state_on_the_parameters_device(case: Case, config: str) -> None:
    """No new parameter or state arrays after the first step (where arrays are mutable: JAX's
    are rebound); state in the param's dtype/device; the gradients are left exactly as backward
    made them."""
    model = _mlp(case)
    in_place = is_writeable_array(model.parameters()[0].data)
    opt = CONFIGS[config][0](model)
    data = [p.data for p in model.parameters()]
    states: list[dict[str, Any]] = []
    for t in range(4):
        opt.zero_grad()
        _backward(model, case, t)
        grads = [p.grad for p in model.parameters()]
        before = [nb.to_numpy(g).copy() for g in grads]
        opt.step()
        for p, g, host in zip(model.parameters(), grads, before, strict=True):
            assert p.grad is g
            np.testing.assert_array_equal(nb.to_numpy(g), host)
        if t == 0:
            states = [dict(st) for st in opt.state]
    for p, d, st, first in zip(model.parameters(), data, opt.state, states, strict=True):
        assert (p.data is d) == in_place
        case.check_placement(p.data)
        assert st["step"] == 4
        arrays = {k: v for k, v in st.items() if k != "step"}
        assert arrays
        for name, arr in arrays.items():
            assert (arr is first[name]) == in_place, name
            case.check_placement(arr)
            assert tuple(arr.shape) == p.shape


def test_parameters_without_gradients_are_skipped(case: Case) -> None:
    """As in PyTorch: b, without a gradient, keeps its value, state and step count; a is
    updated. On namespaces with views both stay on the flat path (a run each), no fallback."""
    a, b = _one_param(case), _one_param(case, [3.0])
    opt = Adam([a, b], 0.1)
    a.grad = case.asarray(G1)
    packed = supports_views(case.xp)
    opt.step()
    assert opt.state[1] == {}
    _close(case, nb.to_numpy(b.data), [3.0])
    b.grad = case.asarray([-2.0])
    opt.step()
    assert opt.path_stats.fallbacks == {}
    assert opt.path_stats.flat == (2 if packed else 0)
    assert opt.path_stats.skipped == (1 if packed else 0)
    assert opt.path_stats.runs == (1 + 2 if packed else 0)  # then a and b: two step counts
    assert opt.state[0]["step"] == 2
    assert opt.state[1]["step"] == 1  # b's own count: its bias correction starts afresh
    _close(case, nb.to_numpy(b.data), [3.0 + 0.1 * 2.0 / (2.0 + 1e-8)])


def test_lr_may_change_between_steps(case: Case) -> None:
    p = _one_param(case)
    opt = Adam([p], 0.1)
    _step(opt, p, case, G1)
    theta1 = nb.to_numpy(p.data).copy()
    opt.lr = 0.0
    _close(case, _step(opt, p, case, G2), list(theta1))
    assert opt.state[0]["step"] == 2
    opt.lr = np.float64(0.5)  # a NumPy scalar becomes a Python float: no float64 leak
    assert type(opt.lr) is float
    with pytest.raises(ValueError, match=r"lr must be >= 0, got -1"):
        opt.lr = -1


def test_zero_grad_and_module_argument(case: Case) -> None:
    model = _mlp(case)
    opt = SGD(model, 0.1)
    assert opt.params == model.parameters()
    _backward(model, case, 0)
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    opt.step()  # nothing to do
    assert all(st == {} for st in opt.state)


def test_gradient_of_the_wrong_shape_is_named() -> None:
    p = nb.Parameter(np.zeros((2, 3)), "weight")
    p.grad = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"gradient of Parameter\('weight'.* shape \(3, 2\)"):
        SGD([p], 0.1).step()


@pytest.mark.parametrize("config", list(CONFIGS))
def test_immutable_arrays_and_no_host_sync(config: str) -> None:
    """On arrays without in-place operators (like JAX's) and that raise on any read back to
    the host, every optimizer gives bit-for-bit NumPy's results."""
    rng = np.random.default_rng(5)
    values = [rng.standard_normal((3, 4)), rng.standard_normal(4)]
    grads = [[rng.standard_normal(v.shape) for v in values] for _ in range(4)]
    make = CONFIGS[config][0]
    ps_np = [nb.Parameter(v.copy(), f"p{i}") for i, v in enumerate(values)]
    ps_fz = [nb.Parameter(frozen(v), f"p{i}") for i, v in enumerate(values)]
    opt_np, opt_fz = make(ps_np), make(ps_fz)
    for step_grads in grads:
        for pn, pf, g in zip(ps_np, ps_fz, step_grads, strict=True):
            pn.grad, pf.grad = g.copy(), frozen(g)
        opt_np.step()
        opt_fz.step()
    for pn, pf in zip(ps_np, ps_fz, strict=True):
        assert isinstance(pf.data, FrozenArray)
        np.testing.assert_array_equal(pf.data.host(), pn.data)
    for sn, sf in zip(opt_np.state, opt_fz.state, strict=True):
        assert sn.keys() == sf.keys()
        for name in sn:
            want = sn[name]
            got = sf[name] if name == "step" else sf[name].host()
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_maximum_into_rebinds_read_only_arrays() -> None:
    xp = nb.get_backend("numpy").xp
    dst = np.array([1.0, 5.0])
    out = maximum_into(dst, np.array([2.0, 3.0]), xp=xp)
    assert out is dst
    np.testing.assert_array_equal(dst, [2.0, 5.0])
    frozen_dst = np.array([1.0, 5.0])
    frozen_dst.flags.writeable = False
    out = maximum_into(frozen_dst, np.array([2.0, 3.0]), xp=xp)
    assert out is not frozen_dst
    np.testing.assert_array_equal(out, [2.0, 5.0])
    np.testing.assert_array_equal(frozen_dst, [1.0, 5.0])


def test_sgd_update_is_a_pure_reference_function() -> None:
    """Importable and usable on bare arrays: the later fused path is tested against it."""
    param, grad, velocity = np.array([1.0, -2.0]), np.array([0.5, 0.25]), np.zeros(2)
    param_out, velocity_out = sgd_update(param, grad, velocity, lr=0.1, momentum=0.9,
                                         weight_decay=0.1)
    assert param_out is param and velocity_out is velocity
    np.testing.assert_allclose(velocity, [0.06, 0.005], rtol=1e-15)
    np.testing.assert_allclose(param, [0.94, -2.005], rtol=1e-15)
    np.testing.assert_array_equal(grad, [0.5, 0.25])


# -------------------------------------------------------------------------------------------
# State dicts


def test_state_dict_format_and_host_copies() -> None:
    case = make_case(("numpy", None, "float32"))
    model = _mlp(case)
    opt = Adam(model, 0.01, amsgrad=True)
    _backward(model, case, 0)
    model.parameters()[-1].grad = None  # never stepped: an empty dict
    opt.step()
    sd = opt.state_dict()
    assert sd["type"] == "Adam"
    assert sd["hyperparameters"] == {"lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8,
                                     "weight_decay": 0.0, "amsgrad": True}
    json.dumps(sd["hyperparameters"])
    assert len(sd["state"]) == len(model.parameters())
    assert sd["state"][-1] == {}
    for entry, p in zip(sd["state"][:-1], model.parameters(), strict=False):
        assert set(entry) == {"step", "m", "v", "vmax"}
        assert type(entry["step"]) is int and entry["step"] == 1
        for name in ("m", "v", "vmax"):
            assert isinstance(entry[name], np.ndarray)
            assert entry[name].shape == p.shape and entry[name].dtype == np.float32
    saved = sd["state"][0]["m"].copy()
    sd["state"][0]["m"][...] = 123.0  # the copy is the caller's to modify
    assert not np.any(opt.state[0]["m"] == 123.0)
    _backward(model, case, 1)
    opt.step()  # the bias was not stepped with the others: a run of its own, still flat
    np.testing.assert_array_equal(opt.state_dict()["state"][0]["m"] != saved, True)
    assert opt.path_stats.fallbacks == {} and opt.path_stats.flat == 2
    assert SGD(model, 0.1).state_dict()["state"] == [{}] * 6


def _copy_model(model: nb.Sequential, case: Case) -> nb.Sequential:
    clone = _mlp(case)
    clone.load_state_dict({k: nb.to_numpy(v) for k, v in model.state_dict().items()})
    return clone


@pytest.mark.parametrize("config", list(CONFIGS))
def test_state_dict_round_trip_runs_in_lockstep(config: str) -> None:
    """Restored from a state dict, an optimizer continues bit-identically (NumPy)."""
    case = make_case(("numpy", None, "float64"))
    make = CONFIGS[config][0]
    model = _mlp(case)
    opt = make(model)
    for t in range(10):
        opt.zero_grad()
        _backward(model, case, t)
        opt.step()
    sd = json.loads(json.dumps(opt.state_dict()["hyperparameters"]))  # survives JSON
    sd = {**opt.state_dict(), "hyperparameters": sd}
    twin = _copy_model(model, case)
    twin_opt = make(twin)
    twin_opt.lr = 0.5  # restored from the state dict
    twin_opt.load_state_dict(sd)
    assert twin_opt.lr == opt.lr
    assert twin_opt.hyperparameters() == opt.hyperparameters()
    for t in range(10, 25):
        opt.zero_grad()
        _backward(model, case, t)
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):
            q.grad = nb.to_numpy(p.grad).copy()
        opt.step()
        twin_opt.step()
        for a, b in zip(_host(model), _host(twin), strict=True):
            np.testing.assert_array_equal(a, b)
    for sa, sb in zip(opt.state_dict()["state"], twin_opt.state_dict()["state"], strict=True):
        assert sa.keys() == sb.keys()
        for name in sa:
            np.testing.assert_array_equal(sa[name], sb[name], err_msg=name)


@pytest.mark.parametrize(("device", "dtype"), [("device1", "float64"), ("no_float64", "float32")])
def test_state_saved_on_numpy_loads_onto_another_device(device: str, dtype: str) -> None:
    pytest.importorskip("array_api_strict")
    source_case = make_case(("numpy", None, dtype))
    target_case = make_case(("array_api_strict", device, dtype))
    model = _mlp(source_case)
    opt = Adam(model, 0.01, amsgrad=True)
    for t in range(5):
        opt.zero_grad()
        _backward(model, source_case, t)
        opt.step()
    moved = _mlp(target_case)
    moved.load_state_dict({k: nb.to_numpy(v) for k, v in model.state_dict().items()})
    moved_opt = Adam(moved)
    moved_opt.load_state_dict(opt.state_dict())
    for st in moved_opt.state:
        for name in ("m", "v", "vmax"):
            target_case.check_placement(st[name])
    for t in range(5, 10):
        for m, c in ((model, source_case), (moved, target_case)):
            m.zero_grad()
            _backward(m, c, t)
        opt.step()
        moved_opt.step()
    for a, b in zip(_host(model), _host(moved), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-12 if dtype == "float64" else 1e-6)


def _bad(sd: dict[str, Any], edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    out = {**sd, "hyperparameters": dict(sd["hyperparameters"]),
           "state": [dict(e) for e in sd["state"]]}
    edit(out)
    return out


def _setitem(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(sd: dict[str, Any]) -> None:
        target: Any = sd
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        (_setitem(("type",), "SGD"), ValueError, r"saved by 'SGD', not 'Adam'"),
        (lambda sd: sd["state"].pop(), ValueError, r"has 5 parameter states.* 6 parameters"),
        (_setitem(("state", 0, "m"), np.zeros((7, 4))), ValueError,
         r"state 0 'm' has shape \(7, 4\).* has \(7, 5\)"),
        (_setitem(("state", 1, "v"), np.zeros(7, np.float32)), TypeError,
         r"state 1 'v' has dtype float32.* has float64"),
        (_setitem(("state", 0, "velocity"), np.zeros((7, 5))), KeyError,
         r"unexpected \['velocity'\]"),
        (lambda sd: sd["state"][0].pop("v"), KeyError, r"missing \['v'\]"),
        (lambda sd: sd["state"][0].pop("vmax"), KeyError, r"missing \['vmax'\]"),
        (_setitem(("state", 0, "step"), 1.5), TypeError,
         r"'step' must be a positive integer, got 1\.5"),
        (_setitem(("state", 0, "step"), 0), ValueError,
         r"'step' must be a positive integer, got 0"),
        (_setitem(("hyperparameters", "betas"), [0.9, 1.0]), ValueError,
         r"betas\[1\] must lie in \[0, 1\), got 1\.0"),
        (lambda sd: sd["hyperparameters"].pop("eps"), KeyError, r"missing \['eps'\]"),
        (_setitem(("hyperparameters", "nesterov"), True), KeyError, r"unexpected \['nesterov'\]"),
        (_setitem(("state",), {}), TypeError, r"'state' must be a list, got dict"),
    ],
)
def test_load_state_dict_validates_before_changing_anything(
    edit: Callable[[dict[str, Any]], None], error: type[Exception], match: str
) -> None:
    case = make_case(("numpy", None, "float64"))
    model = _mlp(case)
    opt = Adam(model, 0.01, amsgrad=True)
    _backward(model, case, 0)
    opt.step()
    sd = opt.state_dict()
    twin = _copy_model(model, case)
    target = Adam(twin, 0.5)
    _backward(twin, case, 1)
    target.step()
    before = [dict(st) for st in target.state]
    with pytest.raises(error, match=match):
        target.load_state_dict(_bad(sd, edit))
    assert target.lr == 0.5 and target.amsgrad is False
    for st, old in zip(target.state, before, strict=True):
        assert st.keys() == old.keys() and all(st[k] is old[k] for k in st)
    target.load_state_dict(sd)  # the intact dict loads
    assert target.amsgrad is True and target.state[0]["step"] == 1


def test_step_counts_load_from_numpy_integers() -> None:
    p = nb.Parameter(np.zeros(2), "w")
    opt = SGD([p], 0.1, momentum=0.9)
    opt.load_state_dict({"type": "SGD", "hyperparameters": opt.hyperparameters(),
                         "state": [{"step": np.int64(7), "velocity": np.ones(2)}]})
    assert type(opt.state[0]["step"]) is int and opt.state[0]["step"] == 7
    assert opt.state[0]["velocity"] is not None


# -------------------------------------------------------------------------------------------
# Validation at construction


def _params() -> list[nb.Parameter]:
    return [nb.Parameter(np.zeros(3), "w"), nb.Parameter(np.zeros(1), "b")]


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda ps: SGD(ps, -0.1), ValueError, r"SGD: lr must be >= 0, got -0\.1"),
        (lambda ps: Adam(ps, lr=-1e-3), ValueError, r"Adam: lr must be >= 0, got -0\.001"),
        (lambda ps: SGD(ps, 0.1, nesterov=True), ValueError,
         r"SGD: nesterov=True needs momentum > 0, got momentum=0\.0"),
        (lambda ps: SGD(ps, 0.1, momentum=1.0), ValueError,
         r"momentum must lie in \[0, 1\), got 1\.0"),
        (lambda ps: SGD(ps, 0.1, weight_decay=-0.5), ValueError,
         r"weight_decay must be >= 0, got -0\.5"),
        (lambda ps: Adam(ps, betas=(0.9, 1.0)), ValueError,
         r"Adam: betas\[1\] must lie in \[0, 1\), got 1\.0"),
        (lambda ps: AdamW(ps, betas=(-0.1, 0.999)), ValueError,
         r"AdamW: betas\[0\] must lie in \[0, 1\), got -0\.1"),
        (lambda ps: Adam(ps, betas=0.9), TypeError,
         r"betas must be a pair \(beta1, beta2\), got 0\.9"),
        (lambda ps: Adam(ps, eps=0.0), ValueError, r"Adam: eps must be > 0, got 0\.0"),
        (lambda ps: RMSprop(ps, eps=-1e-8), ValueError, r"RMSprop: eps must be > 0, got -1e-08"),
        (lambda ps: RMSprop(ps, alpha=1.5), ValueError, r"alpha must lie in \[0, 1\), got 1\.5"),
        (lambda ps: Adam(ps, lr=math.nan), ValueError, r"lr must be finite, got nan"),
        (lambda ps: Adam(ps, lr=np.asarray(0.1)), TypeError,
         r"lr must be a real Python number, got array\(0\.1\)"),
        (lambda ps: SGD(ps, 0.1, nesterov=1), TypeError, r"nesterov must be True or False, got 1"),
        (lambda ps: SGD([*ps, ps[0]], 0.1), ValueError,
         r"Parameter\('w'.*is given twice \(params\[0\] and params\[2\]\)"),
        (lambda ps: SGD(ps), TypeError,
         r"SGD: lr is required: give it to SGD\(\.\.\.\) or to every parameter group"),
        (lambda ps: Adam(ps, 0.1, 0.2), TypeError, r"Adam: too many positional arguments"),
        (lambda ps: Adam(ps, 0.1, lr=0.2), TypeError, r"Adam: multiple values for argument 'lr'"),
        (lambda ps: Adam(ps, momentum=0.9), TypeError,
         r"Adam: got an unexpected keyword argument 'momentum'; Adam takes lr, betas, eps, "
         r"weight_decay, amsgrad"),
        # parameter groups: each group's values are checked by the same list
        (lambda ps: SGD([{"params": ps, "lr": -0.1}]), ValueError,
         r"SGD: param_groups\[0\]: lr must be >= 0, got -0\.1"),
        (lambda ps: SGD([{"params": ps[:1], "lr": 0.1}, {"params": ps[1:]}]), TypeError,
         r"SGD: param_groups\[1\]: lr is required"),
        (lambda ps: Adam([{"params": ps[:1]}, {"params": ps[1:], "betas": (0.9, 1.0)}]),
         ValueError, r"Adam: param_groups\[1\]: betas\[1\] must lie in \[0, 1\), got 1\.0"),
        (lambda ps: SGD([{"params": ps, "nesterov": True}], 0.1, momentum=0.0), ValueError,
         r"SGD: param_groups\[0\]: nesterov=True needs momentum > 0, got momentum=0\.0"),
        (lambda ps: AdamW([{"params": ps, "weight_deacy": 0.0}]), TypeError,
         r"AdamW: param_groups\[0\] has unknown keys \['weight_deacy'\]; a group holds "
         r"'params' and any of \['lr', 'betas', 'eps', 'weight_decay', 'amsgrad'\]"),
        (lambda ps: SGD([{"lr": 0.1}]), KeyError, r"SGD: param_groups\[0\] has no 'params'"),
        (lambda ps: SGD([{"params": ps[:1]}, ps[1]], 0.1), TypeError,
         r"SGD: params mixes parameter groups \(dicts\) and Parameters"),
        (lambda ps: SGD({"params": ps}, 0.1), TypeError,
         r"SGD: params is one parameter group; pass a list of groups"),
        (lambda ps: SGD([{"params": ps}, {"params": ps[1:]}], 0.1), ValueError,
         r"Parameter\('b'.*is given twice \(param_groups\[0\]\['params'\]\[1\] and "
         r"param_groups\[1\]\['params'\]\[0\]\); a parameter belongs to one group"),
        (lambda ps: SGD([{"params": 3}], 0.1), TypeError,
         r"param_groups\[0\]\['params'\] must be an iterable of Parameters or a Module, got int"),
        (lambda ps: SGD([{"params": [ps[0].data]}], 0.1), TypeError,
         r"param_groups\[0\]\['params'\]\[0\] must be a Parameter, got ndarray"),
        (lambda ps: SGD([{"params": []}], 0.1), ValueError, r"SGD: got an empty parameter list"),
        (lambda ps: SGD([], 0.1), ValueError, r"SGD: got an empty parameter list"),
        (lambda ps: SGD(ps[0], 0.1), TypeError, r"wrap one parameter in a list"),
        (lambda ps: SGD([ps[0].data], 0.1), TypeError,
         r"params\[0\] must be a Parameter, got ndarray"),
        (lambda ps: SGD([nb.Parameter(np.zeros(2, dtype=np.int64))], 0.1), TypeError,
         r"floating dtype"),
    ],
)
def test_hyperparameters_are_validated(make: Callable[[Any], Any], error: type[Exception],
                                       match: str) -> None:
    with pytest.raises(error, match=match):
        make(_params())


def test_defaults_match_pytorch() -> None:
    ps = _params()
    assert Adam(ps).hyperparameters() == {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8,
                                          "weight_decay": 0.0, "amsgrad": False}
    assert AdamW(ps).weight_decay == 1e-2
    r = RMSprop(ps)
    assert (r.lr, r.alpha, r.eps, r.momentum, r.centered) == (1e-2, 0.99, 1e-8, 0.0, False)
    assert repr(SGD(ps, 0.1)) == (
        "SGD(lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0, 2 parameters)"
    )


def test_a_schedule_drives_the_learning_rate() -> None:
    p = nb.Parameter(np.array([1.0]), "w")
    opt = SGD([p], 1.0)
    sched = StepLR(opt, step_size=1, gamma=0.5)
    for lr in (1.0, 0.5, 0.25):
        p.grad = np.array([1.0])
        before = float(p.data[0])
        opt.step()
        assert float(p.data[0]) == before - lr
        sched.step()


# -------------------------------------------------------------------------------------------
# Parameter groups (PyTorch's list of dicts), against torch.optim with the same groups

GROUP_STEPS = 20


def _split(params: list[Any]) -> tuple[list[Any], list[Any]]:
    """(weights, biases) of the shared MLP, whose parameters alternate weight, bias."""
    return params[0::2], params[1::2]


# name: (nnbackend optimizer, torch.optim optimizer) over (weights, biases), identical settings
GROUP_CONFIGS: dict[str, tuple[Callable[[Any, Any], Optimizer], Callable[[Any, Any, Any], Any]]] = {
    # the transformer recipe: AdamW without weight decay on biases (and norms)
    "adamw-no-decay-on-biases": (
        lambda w, b: AdamW([{"params": w}, {"params": b, "weight_decay": 0.0}], lr=0.01,
                           weight_decay=0.1),
        lambda t, w, b: t.optim.AdamW([{"params": w}, {"params": b, "weight_decay": 0.0}],
                                      lr=0.01, weight_decay=0.1),
    ),
    "sgd-lr-and-momentum-per-group": (
        lambda w, b: SGD([{"params": w}, {"params": b, "lr": 0.02, "momentum": 0.5}], 0.1,
                         momentum=0.9),
        lambda t, w, b: t.optim.SGD([{"params": w}, {"params": b, "lr": 0.02, "momentum": 0.5}],
                                    0.1, momentum=0.9),
    ),
    "adam-amsgrad-in-one-group": (
        lambda w, b: Adam([{"params": w, "amsgrad": True}, {"params": b, "betas": (0.8, 0.99)}],
                          0.01, weight_decay=0.01),
        lambda t, w, b: t.optim.Adam([{"params": w, "amsgrad": True},
                                      {"params": b, "betas": (0.8, 0.99)}], 0.01,
                                     weight_decay=0.01),
    ),
    "rmsprop-centered-one-group": (
        lambda w, b: RMSprop([{"params": w, "centered": True},
                              {"params": b, "momentum": 0.9, "lr": 0.003}], 0.01,
                             weight_decay=0.01),
        lambda t, w, b: t.optim.RMSprop([{"params": w, "centered": True},
                                         {"params": b, "momentum": 0.9, "lr": 0.003}], 0.01,
                                        weight_decay=0.01),
    ),
}


@functools.cache
def _torch_group_trajectory(config: str) -> list[np.ndarray]:
    """The parameters (model order) after GROUP_STEPS of torch.optim with parameter groups."""
    torch = pytest.importorskip("torch")
    weights, X, Y = _problem()
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 6), torch.nn.ReLU(),
        torch.nn.Linear(6, 4),
    ).double()
    with torch.no_grad():
        for p, w in zip(model.parameters(), weights, strict=True):
            p.copy_(torch.from_numpy(w))
    opt = GROUP_CONFIGS[config][1](torch, *_split(list(model.parameters())))
    for t in range(GROUP_STEPS):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(torch.from_numpy(X[t])),
                                            torch.from_numpy(Y[t]))
        loss.backward()
        opt.step()
    return [p.detach().numpy().copy() for p in model.parameters()]


@pytest.mark.parametrize("config", list(GROUP_CONFIGS))
def test_param_groups_match_torch_optim(case: Case, config: str) -> None:
    """Each group's own hyperparameters, 20 steps, on every row: 1e-9 relative in float64.
    With views, each group is one flat buffer: two flat updates per step, no fallback."""
    expected = _torch_group_trajectory(config)
    model = _mlp(case)
    opt = GROUP_CONFIGS[config][0](*_split(model.parameters()))
    assert [len(g["params"]) for g in opt.param_groups] == [3, 3]
    for t in range(GROUP_STEPS):
        opt.zero_grad()
        _backward(model, case, t)
        opt.step()
    start = _problem()[0]
    for got, want, w0 in zip(_host(model), expected, start, strict=True):
        assert np.max(np.abs(want - w0)) > 1e-4  # the parameters really moved
        if case.is_float64:
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    if supports_views(case.xp):
        assert sorted(g.param_group for g in opt._flat_groups) == [0, 1]
        assert opt.path_stats.flat == 2 * GROUP_STEPS and opt.path_stats.fallbacks == {}
    else:
        assert opt.path_stats.unpacked == {"no_views": 6}


def test_no_decay_group_differs_from_decay_everywhere() -> None:
    """The groups' settings really apply: AdamW's biases without decay end far from where
    they end with it (so the comparison with torch.optim above would see a lost setting)."""
    case = make_case(("numpy", None, "float64"))
    runs = []
    for bias_decay in (0.0, 0.1):
        model = _mlp(case)
        w, b = _split(model.parameters())
        opt = AdamW([{"params": w}, {"params": b, "weight_decay": bias_decay}], lr=0.01,
                    weight_decay=0.1)
        for t in range(GROUP_STEPS):
            opt.zero_grad()
            _backward(model, case, t)
            opt.step()
        runs.append(_host(model))
    no_decay, decay = runs
    for a, b in zip(_split(no_decay)[1], _split(decay)[1], strict=True):
        assert np.max(np.abs(a - b)) > 1e-4


def test_param_groups_attributes_and_assignment() -> None:
    ps = _params()
    opt = AdamW([{"params": ps[:1]}, {"params": ps[1:], "weight_decay": 0.0, "lr": 0.01}],
                lr=3e-4)
    g0, g1 = opt.param_groups
    assert dict(g1) == {"params": [ps[1]], "lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8,
                        "weight_decay": 0.0, "amsgrad": False}
    assert g0["weight_decay"] == 0.01 and g0["params"] == [ps[0]]
    assert opt.defaults == {"lr": 3e-4, "betas": (0.9, 0.999), "eps": 1e-8,
                            "weight_decay": 0.01, "amsgrad": False}
    assert opt.eps == 1e-8  # shared by every group
    with pytest.raises(ValueError, match=r"AdamW: the parameter groups have different lr values "
                                         r"\[0\.0003, 0\.01\]; read param_groups\[i\]\['lr'\]"):
        _ = opt.lr
    g0["lr"] = np.float64(0.01)  # checked and normalised, as at construction
    assert type(g0["lr"]) is float and opt.lr == 0.01
    g1["lr"] *= 0.5
    assert (g0["lr"], g1["lr"]) == (0.01, 0.005)
    opt.lr = 0.1  # every group, and the defaults later groups get
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.1] and opt.defaults["lr"] == 0.1
    for key, value, error, match in [
        ("lr", -1.0, ValueError, r"AdamW: param_groups\[1\]: lr must be >= 0, got -1\.0"),
        ("betas", (0.9, 1.0), ValueError, r"param_groups\[1\]: betas\[1\] must lie in"),
        ("amsgrad", 1, TypeError, r"amsgrad must be True or False, got 1"),
        ("momentum", 0.9, KeyError, r"param_groups\[1\] has no 'momentum'"),
        ("params", [], TypeError, r"'params' cannot be replaced.*add_param_group"),
    ]:
        with pytest.raises(error, match=match):
            g1[key] = value
    assert dict(g1) == {"params": [ps[1]], "lr": 0.1, "betas": (0.9, 0.999), "eps": 1e-8,
                        "weight_decay": 0.0, "amsgrad": False}  # nothing changed
    with pytest.raises(TypeError, match="keeps every key"):
        del g1["lr"]
    sgd = SGD([{"params": ps[:1], "momentum": 0.9}, {"params": ps[1:]}], 0.1)
    with pytest.raises(ValueError, match=r"SGD: param_groups\[1\]: nesterov=True needs momentum"):
        sgd.nesterov = True  # fine for group 0, not for group 1
    assert [g["nesterov"] for g in sgd.param_groups] == [False, False]
    sgd.param_groups[0]["nesterov"] = True
    with pytest.raises(ValueError, match=r"SGD: param_groups\[0\]: nesterov=True needs momentum"):
        sgd.param_groups[0]["momentum"] = 0.0
    assert sgd.param_groups[0]["nesterov"] is True and sgd.param_groups[0]["momentum"] == 0.9
    assert repr(opt) == (
        "AdamW(lr=0.1, betas=(0.9, 0.999), eps=1e-08, amsgrad=False, 2 parameters in 2 groups: "
        "[0] 1 parameter, weight_decay=0.01; [1] 1 parameter, weight_decay=0.0)"
    )


def test_one_declarative_list_drives_every_optimizer() -> None:
    """No optimizer writes an __init__: the signature, the defaults and AdamW's difference from
    Adam (its weight decay's default and the decoupled flag) come from HYPERPARAMETERS."""
    import inspect

    for cls in (SGD, Adam, AdamW, RMSprop):
        assert "__init__" not in cls.__dict__
        names = [h.name for h in cls.HYPERPARAMETERS]
        assert list(inspect.signature(cls).parameters) == ["params", *names, "flat"]
        assert list(cls(_params(), 0.1).hyperparameters()) == names
    assert [h._replace(default=None) for h in AdamW.HYPERPARAMETERS] == [
        h._replace(default=None) for h in Adam.HYPERPARAMETERS]
    defaults = {h.name: h.default for h in AdamW.HYPERPARAMETERS}
    assert defaults == {**{h.name: h.default for h in Adam.HYPERPARAMETERS}, "weight_decay": 1e-2}
    assert AdamW.decoupled_weight_decay and not Adam.decoupled_weight_decay
    assert str(inspect.signature(SGD)) == (
        "(params, lr, *, momentum=0.0, nesterov=False, weight_decay=0.0, flat=True)")


def test_a_required_lr_may_come_from_every_group(case: Case) -> None:
    ps = [_one_param(case), _one_param(case, [4.0])]
    opt = SGD([{"params": ps[:1], "lr": 0.1}, {"params": ps[1:], "lr": 1.0}])
    assert opt.defaults["lr"] is None and opt.hyperparameters()["lr"] is None
    ps[0].grad, ps[1].grad = case.asarray(G1), case.asarray([0.5])
    opt.step()
    _close(case, nb.to_numpy(ps[0].data), [0.95, -2.025, 0.6])
    _close(case, nb.to_numpy(ps[1].data), [3.5])
    with pytest.raises(TypeError, match=r"SGD.add_param_group: param_groups\[2\]: lr is required"):
        opt.add_param_group({"params": [nb.Parameter(case.asarray([1.0]), "c")]})


def test_add_param_group(case: Case) -> None:
    """A group added later takes the defaults it leaves out, packs flat buffers of its own and
    is stepped with the others (PyTorch's add_param_group)."""
    a, b = _one_param(case), _one_param(case, [3.0])
    opt = SGD([a], 0.1, momentum=0.9)
    opt.add_param_group({"params": b, "lr": 1.0})  # one Parameter, as PyTorch accepts
    assert [g["lr"] for g in opt.param_groups] == [0.1, 1.0]
    assert opt.param_groups[1]["momentum"] == 0.9 and opt.params == [a, b]
    a.grad, b.grad = case.asarray(G1), case.asarray([2.0])
    opt.step()
    _close(case, nb.to_numpy(a.data), [0.95, -2.025, 0.6])
    _close(case, nb.to_numpy(b.data), [1.0])
    if supports_views(case.xp):
        assert [g.param_group for g in opt._flat_groups] == [0, 1]
        assert opt.path_stats.flat == 2
    with pytest.raises(ValueError, match=r"given twice \(params\[0\] and param_groups\[2\]"):
        opt.add_param_group({"params": [a]})
    with pytest.raises(TypeError, match=r"add_param_group: expected a dict with 'params'"):
        opt.add_param_group([a])  # type: ignore[arg-type]
    assert len(opt.param_groups) == 2 and len(opt.params) == len(opt.state) == 2


def _grouped_adam(model: nb.Module) -> Adam:
    w, b = _split(model.parameters())
    return Adam([{"params": w, "weight_decay": 0.1}, {"params": b, "amsgrad": True}], 0.01)


def test_param_groups_state_dict_round_trip_in_lockstep() -> None:
    """PyTorch's layout (param_groups with parameter indices) through JSON: every group's
    values and a schedule's per-group rates come back; both runs continue bit for bit."""
    case = make_case(("numpy", None, "float64"))
    model = _mlp(case)
    opt = _grouped_adam(model)
    sched = StepLR(opt, step_size=3, gamma=0.5)
    opt.param_groups[1]["lr"] = 0.02  # by hand, after the schedule took its base rates
    for t in range(7):
        opt.zero_grad()
        _backward(model, case, t)
        opt.step()
        sched.step()
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1, 2], [3, 4, 5]]
    assert sd["param_groups"][0] == {"params": [0, 1, 2], "lr": 0.0025, "betas": [0.9, 0.999],
                                     "eps": 1e-8, "weight_decay": 0.1, "amsgrad": False}
    assert sd["param_groups"][1]["amsgrad"] is True and sd["hyperparameters"]["lr"] == 0.01
    assert set(sd["state"][3]) == {"step", "m", "v", "vmax"} and "vmax" not in sd["state"][0]
    saved = json.loads(json.dumps({k: v for k, v in sd.items() if k != "state"}))
    twin = _copy_model(model, case)
    twin_opt = _grouped_adam(twin)
    twin_sched = StepLR(twin_opt, step_size=3, gamma=0.5)
    twin_opt.load_state_dict({**saved, "state": sd["state"]})
    twin_sched.load_state_dict(json.loads(json.dumps(sched.state_dict())))
    assert [g.settings for g in twin_opt.param_groups] == [g.settings for g in opt.param_groups]
    assert twin_sched.base_lrs == sched.base_lrs == [0.01, 0.01]
    for t in range(7, 15):
        for m, o, s in ((model, opt, sched), (twin, twin_opt, twin_sched)):
            o.zero_grad()
            _backward(m, case, t)
            o.step()
            s.step()
        for a, b in zip(_host(model), _host(twin), strict=True):
            np.testing.assert_array_equal(a, b)
    assert [g["lr"] for g in twin_opt.param_groups] == [g["lr"] for g in opt.param_groups]


def test_param_groups_load_validation() -> None:
    case = make_case(("numpy", None, "float64"))
    model = _mlp(case)
    opt = _grouped_adam(model)
    _backward(model, case, 0)
    opt.step()
    sd = opt.state_dict()
    target = _grouped_adam(_copy_model(model, case))
    before = [dict(g.settings) for g in target.param_groups]

    def edited(edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        out = {**sd, "param_groups": [dict(g) for g in sd["param_groups"]]}
        edit(out)
        return out

    for edit, error, match in [
        (lambda d: d["param_groups"].pop(), ValueError,
         r"the state dict has 1 parameter groups, the optimizer has 2"),
        (lambda d: d["param_groups"][1].update(params=[2, 3, 4]), ValueError,
         r"param_groups\[1\] holds the parameters \[2, 3, 4\], this optimizer's group 1 holds "
         r"\[3, 4, 5\]"),
        (lambda d: d["param_groups"][1].update(lr=-0.5), ValueError,
         r"Adam.load_state_dict: param_groups\[1\]: lr must be >= 0, got -0\.5"),
        (lambda d: d["param_groups"][0].pop("eps"), KeyError,
         r"param_groups\[0\]: its hyperparameters do not match Adam's; missing \['eps'\]"),
        (lambda d: d["param_groups"][0].update(momentum=0.9), KeyError,
         r"unexpected \['momentum'\]"),
        (lambda d: d["param_groups"][0].pop("params"), TypeError,
         r"param_groups\[0\] must be a dict with 'params'"),
        (lambda d: d.update(param_groups={}), TypeError, r"'param_groups' must be a list"),
        (lambda d: d.pop("param_groups"), ValueError,
         r"has no 'param_groups' \(one group, saved before parameter groups existed\); this "
         r"optimizer has 2"),
    ]:
        with pytest.raises(error, match=match):
            target.load_state_dict(edited(edit))
        assert [g.settings for g in target.param_groups] == before
        assert all(st == {} for st in target.state)
    # the amsgrad group's state must hold vmax, the other group's must not
    bad = {**sd, "state": [dict(st) for st in sd["state"]]}
    bad["state"][3].pop("vmax")
    with pytest.raises(KeyError, match=r"state 3 .* missing \['vmax'\]"):
        target.load_state_dict(bad)
    bad["state"][3]["vmax"] = sd["state"][3]["vmax"]
    bad["state"][0]["vmax"] = sd["state"][3]["vmax"]
    with pytest.raises(ValueError, match=r"state 0 'vmax' has shape \(7,\)"):
        target.load_state_dict(bad)
    target.load_state_dict(sd)
    assert target.param_groups[1]["amsgrad"] is True


# -------------------------------------------------------------------------------------------
# Frozen parameters (requires_grad=False): never moved, never a fallback


@pytest.mark.parametrize("config", ["sgd-nesterov-wd", "adam-l2", "adamw", "adamw-amsgrad",
                                    "rmsprop-centered-momentum-wd"])
def test_frozen_parameters_are_never_moved(case: Case, config: str) -> None:
    """Not even by weight decay, not even with a gradient assigned by hand; the others train
    exactly as an optimizer over them alone (bit for bit), on the flat path, without a warning
    (the suite turns warnings into errors)."""
    make = CONFIGS[config][0]
    model, alone = _mlp(case), _mlp(case)
    frozen = [model.parameters()[1], model.parameters()[4]]  # a bias and a weight
    for p in frozen:
        p.requires_grad = False
    before = [nb.to_numpy(p.data).copy() for p in frozen]
    opt = make(model)
    trainable = [q for p, q in zip(model.parameters(), alone.parameters(), strict=True)
                 if p.requires_grad]
    ref = make(trainable)
    for t in range(6):
        for m, o in ((model, opt), (alone, ref)):
            o.zero_grad()
            _backward(m, case, t)
        frozen[0].grad = case.asarray(np.ones(frozen[0].shape))  # assigned: still not moved
        opt.step()
        ref.step()
    for p, was in zip(frozen, before, strict=True):
        np.testing.assert_array_equal(nb.to_numpy(p.data), was)
        assert opt.state[model.parameters().index(p)] == {}
    for p, q in zip((p for p in model.parameters() if p.requires_grad), trainable, strict=True):
        np.testing.assert_array_equal(nb.to_numpy(p.data), nb.to_numpy(q.data))
    if supports_views(case.xp):
        assert opt.path_stats.unpacked == {"frozen": 2}
        assert opt.path_stats.flat == 6 and opt.path_stats.fallbacks == {}
        assert not any(i in g.indices for g in opt._flat_groups for i in (1, 4))


def test_freezing_and_unfreezing_during_training(case: Case) -> None:
    """Fine-tuning: a parameter frozen after some steps stays in its arena slot, where no run
    covers it (no fallback, no warning, no repacking) and stops moving; unfrozen, it trains on
    in a run of its own (its step count differs). Bit for bit the per-parameter path's."""
    runs = []
    for flat in (True, False):
        model = _mlp(case)
        opt = AdamW(model, 0.01, weight_decay=0.1, flat=flat)
        frozen = model.parameters()[2]
        history = []
        for t in range(12):
            if t == 4:
                frozen.requires_grad = False
            if t == 8:
                frozen.requires_grad = True
            opt.zero_grad()
            _backward(model, case, t)
            opt.step()
            history.append(nb.to_numpy(frozen.data).copy())
        runs.append((model, opt, history))
    (model, opt, history), (ref_model, ref_opt, ref_history) = runs
    for a, b in zip(_host(model), _host(ref_model), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(history, ref_history, strict=True):
        np.testing.assert_array_equal(a, b)
    for k in range(4, 8):
        np.testing.assert_array_equal(history[k], history[3])  # frozen: not moved
    assert np.max(np.abs(history[11] - history[7])) > 1e-4  # unfrozen: trains again
    assert opt.state[2]["step"] == 8 and opt.state[0]["step"] == 12
    assert ref_opt.state[2]["step"] == 8
    if supports_views(case.xp):
        assert opt.path_stats.repacked == 0 and opt.path_stats.fallbacks == {}
        assert opt.path_stats.flat == 12 and len(opt._flat_groups) == 1
        # one run; then the runs around the frozen one; then [0, 1], [2 behind], [3..5]
        assert opt.path_stats.runs == 4 + 4 * 2 + 4 * 3


# -------------------------------------------------------------------------------------------
# Parameter groups in checkpoints


def _rewrite_metadata(src: Any, dst: Any, edit: Callable[[dict[str, Any]], None]) -> Any:
    """``src`` with its JSON metadata edited, written as nnbackend writes checkpoints."""
    with np.load(src, allow_pickle=False) as f:
        content = {k: f[k] for k in f.files}
    meta = json.loads(content["__metadata__"].tobytes())
    edit(meta)
    content["__metadata__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(dst, "wb") as out:
        np.savez(out, **content)
    return dst


def _train_steps(model: nb.Module, opt: Optimizer, case: Case, steps: range) -> None:
    for t in steps:
        opt.zero_grad()
        _backward(model, case, t)
        opt.step()


def _adamw_no_decay_on_biases(model: nb.Module) -> AdamW:
    w, b = _split(model.parameters())
    return AdamW([{"params": w}, {"params": b, "weight_decay": 0.0, "lr": 0.02}], lr=0.01,
                 weight_decay=0.1)


def test_param_groups_checkpoint_round_trip(case: Case, tmp_path: Any) -> None:
    """Saved and loaded on every row: each group's values come back, and the resumed run
    continues bit for bit with the saved one."""
    model = _mlp(case)
    opt = _adamw_no_decay_on_biases(model)
    _train_steps(model, opt, case, range(5))
    path = nb.checkpoint.save(tmp_path / "groups.npz", model, opt)
    meta = nb.checkpoint.read_metadata(path)
    assert [g["params"] for g in meta["optimizer"]["param_groups"]] == [[0, 1, 2], [3, 4, 5]]
    assert [g["weight_decay"] for g in meta["optimizer"]["param_groups"]] == [0.1, 0.0]
    resumed = _mlp(case)
    resumed_opt = AdamW([{"params": _split(resumed.parameters())[0]},
                         {"params": _split(resumed.parameters())[1]}], lr=0.5)
    nb.checkpoint.load(path, resumed, resumed_opt)
    assert [g.settings for g in resumed_opt.param_groups] == [g.settings
                                                              for g in opt.param_groups]
    assert resumed_opt.defaults == opt.defaults
    _train_steps(model, opt, case, range(5, 9))
    _train_steps(resumed, resumed_opt, case, range(5, 9))
    for a, b in zip(_host(model), _host(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_param_groups_checkpoint_load_is_all_or_nothing(tmp_path: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    case = make_case(("numpy", None, "float64"))
    model = _mlp(case)
    opt = _adamw_no_decay_on_biases(model)
    _train_steps(model, opt, case, range(3))
    path = nb.checkpoint.save(tmp_path / "groups.npz", model, opt)
    target = _mlp(case)
    target_opt = _adamw_no_decay_on_biases(target)
    _train_steps(target, target_opt, case, range(10, 12))
    target_opt.param_groups[1]["lr"] = 0.123
    before = target_opt._settings_snapshot()
    state_before = target_opt.state

    def bad_group(meta: dict[str, Any]) -> None:
        meta["optimizer"]["param_groups"][1]["lr"] = -1.0

    bad = _rewrite_metadata(path, tmp_path / "bad.npz", bad_group)
    with pytest.raises(nb.checkpoint.CheckpointError,
                       match=r"does not fit: AdamW.load_state_dict: param_groups\[1\]: lr must "
                             r"be >= 0, got -1\.0"):
        nb.checkpoint.load(bad, target, target_opt)
    assert target_opt._settings_snapshot() == before and target_opt.state is state_before

    def malformed(meta: dict[str, Any]) -> None:
        meta["optimizer"]["param_groups"][0]["params"] = "all"

    with pytest.raises(nb.checkpoint.CheckpointError, match=r"malformed metadata: optimizer "
                                                             r"'param_groups' must be a list"):
        nb.checkpoint.load(_rewrite_metadata(path, tmp_path / "m.npz", malformed), target,
                           target_opt)

    def fail(*args: Any, **kwargs: Any) -> None:  # the model's load fails after the optimizer's
        raise ValueError("interrupted")

    monkeypatch.setattr(target, "load_state_dict", fail)
    with pytest.raises(nb.checkpoint.CheckpointError, match="interrupted"):
        nb.checkpoint.load(path, target, target_opt)
    assert target_opt._settings_snapshot() == before and target_opt.state is state_before
    assert target_opt.param_groups[1]["lr"] == 0.123


def test_a_checkpoint_saved_before_parameter_groups_loads_into_one_group(tmp_path: Any) -> None:
    case = make_case(("numpy", None, "float64"))
    model = _mlp(case)
    opt = Adam(model, 0.01)
    _train_steps(model, opt, case, range(3))
    path = nb.checkpoint.save(tmp_path / "new.npz", model, opt)
    old = _rewrite_metadata(path, tmp_path / "old.npz",
                            lambda meta: meta["optimizer"].pop("param_groups"))
    resumed = _copy_model(model, case)
    resumed_opt = Adam(resumed, 0.5)
    nb.checkpoint.load(old, resumed, resumed_opt)
    assert resumed_opt.lr == 0.01 and resumed_opt.state[0]["step"] == 3
    grouped = _copy_model(model, case)
    first, rest = grouped.parameters()[:2], grouped.parameters()[2:]  # the model's order
    with pytest.raises(nb.checkpoint.CheckpointError,
                       match=r"has no 'param_groups' \(one group, saved before parameter groups "
                             r"existed\); this optimizer has 2"):
        nb.checkpoint.load(old, grouped, Adam([{"params": first}, {"params": rest}], 0.01))


# -------------------------------------------------------------------------------------------
# A user's optimizer: its list of hyperparameters and its update rule, nothing else


def _step_size(value: Any, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        msg = f"{where}: {name} must be a positive number, got {value!r}"
        raise ValueError(msg)
    return float(value)


class SignDescent(Optimizer):
    """θ ← θ − α sign(g) − α λ θ (signSGD with decoupled decay), as a user would write it."""

    HYPERPARAMETERS = (
        nb.optim.Hyperparameter("lr", nb.optim.REQUIRED, _step_size, positional=True),
        nb.optim.Hyperparameter("decay", 0.0, lambda v, where, name: float(v)),
    )

    def _update(self, data: Any, grad: Any, state: dict[str, Any], step: int, xp: Any,
                hyper: Any) -> Any:
        if hyper["decay"]:
            data *= 1.0 - hyper["lr"] * hyper["decay"]
        data -= hyper["lr"] * xp.sign(grad)
        return data


def test_a_user_optimizer_declares_only_its_list_and_rule(case: Case) -> None:
    a, b = _one_param(case), _one_param(case, [3.0])
    opt = SignDescent([{"params": [a]}, {"params": [b], "decay": 0.5}], 0.25)
    assert repr(opt) == ("SignDescent(lr=0.25, 2 parameters in 2 groups: [0] 1 parameter, "
                         "decay=0.0; [1] 1 parameter, decay=0.5)")
    a.grad, b.grad = case.asarray(G1), case.asarray([-2.0])
    opt.step()
    _close(case, nb.to_numpy(a.data), [0.75, -2.25, 0.75])
    _close(case, nb.to_numpy(b.data), [3.0 * (1 - 0.125) + 0.25])
    if supports_views(case.xp):
        assert opt.path_stats.flat == 2
    with pytest.raises(ValueError, match=r"SignDescent: lr must be a positive number, got 0"):
        SignDescent([a], 0)
    with pytest.raises(ValueError, match=r"SignDescent: param_groups\[0\]: lr must be a positive"):
        opt.param_groups[0]["lr"] = -1
    sd = opt.state_dict()
    assert sd["param_groups"][1] == {"params": [1], "lr": 0.25, "decay": 0.5}
    twin = SignDescent([{"params": [_one_param(case)]}, {"params": [_one_param(case, [3.0])]}],
                       1.0)
    twin.load_state_dict(sd)
    assert [g.settings for g in twin.param_groups] == [g.settings for g in opt.param_groups]


def test_groups_freezing_and_schedules_read_nothing_from_the_device(case: Case) -> None:
    """On the GPU-like device (which counts host reads): grouped steps, a parameter frozen and
    unfrozen (its run split around it), a plateau schedule and a group's rate assigned by hand read
    no array back to the host."""
    if case.backend.name != "gpulike":
        pytest.skip("only the GPU-like test device counts host reads")
    from nnbackend.testing import count_host_reads

    model = _mlp(case)
    opt = _adamw_no_decay_on_biases(model)
    sched = LinearWarmup(opt, 2, after=ReduceLROnPlateau(opt, patience=0, min_lr=[0.0, 1e-3]))
    frozen = model.parameters()[0]
    with count_host_reads() as reads:
        for t in range(8):
            frozen.requires_grad = not 2 <= t < 5
            opt.zero_grad()
            _backward(model, case, t)
            opt.step()
            sched.step(1.0)
            opt.param_groups[1]["lr"] *= 0.9
    assert reads.count == 0, reads
    assert opt.path_stats.repacked == 0 and opt.path_stats.fallbacks == {}
    assert opt.path_stats.flat == 2 * 8
