"""Flat optimizer buffers: parity with the per-parameter reference path, layout, fallbacks (each
counted and reported once), and a step whose number of array calls does not grow with the number
of parameter tensors.

Every test runs on every row of the backend matrix: where the namespace has views
(``supports_views``: NumPy, PyTorch, CuPy, the GPU-like test device) the flat path must run;
elsewhere (array-api-strict, JAX) the per-parameter path, recorded once in ``path_stats``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import array_api_compat
import numpy as np
import pytest
from _flat_warnings import expect_fallbacks
from conftest import Case
from test_optim import CONFIGS

import nnbackend as nb
from nnbackend.backend import supports_views
from nnbackend.optim import SGD, Adam, FlatFallbackWarning, Optimizer, RMSprop

OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    **{name: make for name, (make, _) in CONFIGS.items()},
    "rmsprop-centered-momentum": lambda p: RMSprop(p, 0.01, momentum=0.5, centered=True,
                                                   weight_decay=0.01),
}


def _rebuild(opt: Optimizer, params: list[nb.Parameter]) -> Optimizer:
    """The same optimizer, with the same parameter groups, over ``params`` (in the order of
    ``opt.params``) on the per-parameter path."""
    groups, start = [], 0
    for g in opt.param_groups:
        stop = start + len(g["params"])
        groups.append({**g.settings, "params": params[start:stop]})
        start = stop
    return type(opt)(groups, flat=False)


def _with_a_second_group(make: Callable[..., Optimizer]) -> Callable[..., Optimizer]:
    """``make`` over every other parameter, the rest in a group of their own (added later) with
    twice the learning rate and another weight decay."""
    def grouped(params: list[nb.Parameter]) -> Optimizer:
        opt = make(params[0::2])
        opt.add_param_group({"params": params[1::2], "lr": 2.0 * opt.lr,
                             "weight_decay": 0.05})
        return opt
    return grouped


def _params(case: Case, shapes: list[tuple[int, ...]], seed: int) -> list[nb.Parameter]:
    rng = np.random.default_rng(seed)
    return [nb.Parameter(case.asarray(rng.standard_normal(s)), f"p{i}")
            for i, s in enumerate(shapes)]


def _host(case: Case, x: Any) -> np.ndarray:
    return case.backend.to_numpy(x)


def _assert_views(case: Case, opt: Optimizer) -> None:
    """Each parameter's data and gradient are views of its arena slot, and its state views of
    its group's flat state: the objects are the views, and a write into a flat buffer shows in
    the parameter (or its state) at the slot's offsets."""
    assert len(opt._flat_groups) == len(opt.param_groups)
    for group in opt._flat_groups:
        _assert_group_views(case, opt, group)


def _assert_group_views(case: Case, opt: Optimizer, group: Any) -> None:
    assert [opt._group_of[i] for i in group.indices] == [group.param_group] * len(group.indices)
    chunk = group.chunk
    for k, (i, slot) in enumerate(zip(group.indices, group.slots, strict=True)):
        p = opt.params[i]
        assert p.slot is slot and slot.chunk is chunk and slot.param is p
        assert p.data is slot.data
        assert p.grad is None or p.grad is slot.grad
        for name, views in group.state_views.items():
            assert opt.state[i][name] is views[k], name
    _assert_offsets(case, chunk.data, [(s.param.data, s.start) for s in group.slots])
    for name, flat in group.state.items():
        _assert_offsets(case, flat, [(opt.state[i][name], offset)
                                     for i, offset in zip(group.indices, group.offsets,
                                                          strict=True)])


def _assert_offsets(case: Case, flat: Any, members: list[tuple[Any, int]]) -> None:
    """Writing 0, 1, 2, ... into ``flat`` shows in each member array from its offset on."""
    saved = _host(case, flat).copy()
    flat[...] = case.asarray(np.arange(saved.size, dtype=np.float64))
    for array, offset in members:
        size = int(np.prod(array.shape))
        np.testing.assert_array_equal(_host(case, array).ravel(),
                                      np.arange(offset, offset + size))
    flat[...] = case.asarray(saved)


SHAPES = [(3, 4), (4,), (2, 3), (), (5,)]


def _twenty_steps(case: Case, name: str, *, skip_step: int | None,
                  grouped: bool = False) -> tuple[Optimizer, ...]:
    """Twenty steps of the flat optimizer and its per-parameter twin, with a schedule and a
    gradient assigned by hand (step 12) on the way, and optionally one parameter without a
    gradient at ``skip_step`` or a second parameter group: parameters equal bit for bit after
    every step."""
    flat_params, ref_params = _params(case, SHAPES, 0), _params(case, SHAPES, 0)
    make = _with_a_second_group(OPTIMIZERS[name]) if grouped else OPTIMIZERS[name]
    flat_opt = make(flat_params)
    # the twin's parameters in the optimizer's order (groups take every other parameter)
    ref_opt = _rebuild(flat_opt, [ref_params[flat_params.index(p)] for p in flat_opt.params])
    rng = np.random.default_rng(1)
    for step in range(20):
        flat_opt.zero_grad()
        ref_opt.zero_grad()
        for i, shape in enumerate(SHAPES):
            if step == skip_step and i == 1:
                continue  # one parameter without a gradient: its step count falls behind
            g = rng.standard_normal(shape)
            for p in (flat_params[i], ref_params[i]):
                p.accumulate_grad(case.asarray(g))
        if step == 12:  # a gradient assigned by hand instead of accumulated
            flat_params[0].grad = flat_params[0].grad * 1.0
            ref_params[0].grad = ref_params[0].grad * 1.0
        for opt in (flat_opt, ref_opt):
            for group in opt.param_groups:
                group["lr"] *= 0.95
        ref_opt.step()
        flat_opt.step()  # a parameter without a gradient is skipped: no warning, no fallback
        for a, b in zip(flat_params, ref_params, strict=True):
            np.testing.assert_array_equal(_host(case, a.data), _host(case, b.data))
    for a, b in zip(flat_opt.state_dict()["state"], ref_opt.state_dict()["state"], strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    return flat_opt, ref_opt


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_flat_path_equals_reference_path_bit_for_bit(case: Case, name: str) -> None:
    flat_opt, ref_opt = _twenty_steps(case, name, skip_step=None)
    assert ref_opt._flat_groups == [] and ref_opt.path_stats.unpacked == {"flat=False": 5}
    assert ref_opt.path_stats.flat == 0
    if supports_views(case.xp):
        assert flat_opt.path_stats.flat == 20 and flat_opt.path_stats.fallbacks == {}
        assert flat_opt.path_stats.copied_grads == 1  # step 12's assigned gradient
        assert flat_opt.path_stats.unpacked == {}
        _assert_views(case, flat_opt)
    else:
        assert flat_opt._flat_groups == []
        assert flat_opt.path_stats.unpacked == {"no_views": 5}
        assert flat_opt.path_stats.flat == 0 and flat_opt.path_stats.fallbacks == {}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_param_groups_flat_path_equals_reference_path_bit_for_bit(case: Case, name: str) -> None:
    """Two parameter groups with their own learning rate and weight decay: one flat buffer per
    group, each stepped flat every step, the same values as the per-parameter path."""
    flat_opt, ref_opt = _twenty_steps(case, name, skip_step=None, grouped=True)
    assert [len(g["params"]) for g in flat_opt.param_groups] == [3, 2]
    assert [g.settings for g in flat_opt.param_groups] == [g.settings
                                                          for g in ref_opt.param_groups]
    if supports_views(case.xp):
        assert flat_opt.path_stats.flat == 2 * 20 and flat_opt.path_stats.fallbacks == {}
        _assert_views(case, flat_opt)
    else:
        assert flat_opt.path_stats.unpacked == {"no_views": 5}


@pytest.mark.parametrize("name", ["sgd-momentum", "adam", "rmsprop-centered-momentum"])
def test_a_parameter_without_a_gradient_is_skipped_and_the_rest_stays_flat(
    case: Case, name: str
) -> None:
    """Issue 8, 3.15, then issue 9, item 6: a parameter that misses one step put its whole group
    on the per-parameter path for good. Now it is skipped, as PyTorch skips it (its state and
    step count stay), and the others are updated in the runs around it; afterwards its step
    count differs, so it is a run of its own (one bias correction per run). Every step stays
    flat, and the values equal the reference path's bit for bit (checked in _twenty_steps)."""
    flat_opt, _ = _twenty_steps(case, name, skip_step=7)
    if supports_views(case.xp):
        assert flat_opt.path_stats.flat == 20 and flat_opt.path_stats.fallbacks == {}
        assert flat_opt.path_stats.skipped == 1
        # 7 steps as one run; step 7 around the gap: 2; then [p0], [p1 behind], [p2..p4]: 3
        assert flat_opt.path_stats.runs == 7 + 2 + 12 * 3
        assert [st["step"] for st in flat_opt.state] == [20, 19, 20, 20, 20]
        _assert_views(case, flat_opt)
    else:
        assert flat_opt.path_stats.flat == 0 and flat_opt.path_stats.fallbacks == {}


@pytest.mark.parametrize("name", ["sgd-momentum", "adam", "amsgrad"])
def test_flat_path_runs_while_the_layout_holds(case: Case, name: str) -> None:
    params = _params(case, SHAPES, 2)
    opt = OPTIMIZERS[name](params)
    for _ in range(3):
        opt.zero_grad()
        for p in params:
            p.accumulate_grad(case.asarray(np.ones(p.shape)))
        opt.step()
    assert [st["step"] for st in opt.state] == [3] * len(params)
    if not supports_views(case.xp):  # the per-parameter path, recorded once at creation
        assert opt._flat_groups == [] and opt.path_stats.unpacked == {"no_views": len(params)}
        assert opt.path_stats.flat == 0
        return
    assert opt.path_stats.flat == 3 and opt.path_stats.fallbacks == {}
    assert opt.path_stats.unpacked == {}
    _assert_views(case, opt)


def test_a_model_trains_identically_on_both_paths(case: Case) -> None:
    """Backprop writes gradients into the flat buffer; training matches the reference path."""
    rng = np.random.default_rng(3)
    X = case.asarray(rng.standard_normal((16, 5)))
    y = case.asarray(rng.integers(0, 3, 16), dtype=None)

    def model() -> nb.Sequential:
        return nb.Sequential(
            nb.Linear(5, 8, seed=0, dtype=case.dtype_name, backend=case.backend), nb.Tanh(),
            nb.Linear(8, 3, seed=1, dtype=case.dtype_name, backend=case.backend))

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
        np.testing.assert_array_equal(_host(case, a.data), _host(case, b.data))
    if supports_views(case.xp):
        assert flat_opt.path_stats.flat == 10 and flat_opt.path_stats.fallbacks == {}
        assert flat_opt.path_stats.copied_grads == 0  # backprop accumulates into the views
        _assert_views(case, flat_opt)
    else:
        assert flat_opt.path_stats.unpacked == {"no_views": 4}


def test_loading_state_keeps_the_flat_layout(case: Case) -> None:
    params = _params(case, SHAPES, 4)
    opt = Adam(params, 0.01)
    for _ in range(2):
        opt.zero_grad()
        for p in params:
            p.accumulate_grad(case.asarray(np.full(p.shape, 0.5)))
        opt.step()
    saved = opt.state_dict()
    twin_params = _params(case, SHAPES, 4)
    twin = Adam(twin_params, 0.01)
    twin.load_state_dict(saved)
    module = nb.Sequential(nb.Linear(2, 2, seed=0, dtype=case.dtype_name, backend=case.backend))
    module_opt = SGD(module.parameters(), 0.1)
    module.load_state_dict({name: np.ones(tuple(a.shape), dtype=case.dtype_name)
                            for name, a in module.state_dict().items()})
    for p in module.parameters():
        np.testing.assert_array_equal(_host(case, p.data), np.ones(p.shape))
    for a, b in zip(params, twin_params, strict=True):  # both from the same values now
        if array_api_compat.is_writeable_array(a.data):
            a.data[...] = b.data  # in place: the flat layout holds
        else:
            a.data = b.data  # JAX
    for opt_ in (opt, twin):
        opt_.zero_grad()
        for p in opt_.params:
            p.accumulate_grad(case.asarray(np.full(p.shape, -0.25)))
        opt_.step()
    for a, b in zip(params, twin_params, strict=True):
        np.testing.assert_array_equal(_host(case, a.data), _host(case, b.data))
    if supports_views(case.xp):
        _assert_views(case, module_opt)  # the module loaded in place, into the flat buffer
        _assert_views(case, twin)  # the loaded state was adopted into flat state
        assert twin.path_stats.flat == 1 and twin.path_stats.fallbacks == {}


@pytest.mark.parametrize("name", ["sgd", "sgd-nesterov-wd", "adam", "amsgrad", "adamw",
                                  "rmsprop-centered-momentum"])
def test_a_flat_step_costs_the_same_array_calls_for_any_number_of_tensors(
    case: Case, name: str
) -> None:
    """Counted with PyTorch's function mode, which sees every tensor operation (operators and
    in-place updates included): on a GPU each is at least one kernel launch."""
    if not array_api_compat.is_torch_namespace(case.xp):
        pytest.skip("counts calls with PyTorch's function mode: a PyTorch row only")
    import torch
    from torch.overrides import TorchFunctionMode

    class Count(TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func: Any, types: Any, args: Any = (),
                               kwargs: Any = None) -> Any:
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    def calls_per_step(n_tensors: int, *, flat: bool, grouped: bool = False) -> int:
        params = _params(case, [(3,)] * n_tensors, 6)
        make = _with_a_second_group(OPTIMIZERS[name]) if grouped else OPTIMIZERS[name]
        opt = make(params)
        if not flat:
            opt = _rebuild(opt, opt.params)
        ones = case.asarray(np.ones(3))
        for _ in range(2):  # the first step allocates the state
            for p in params:
                p.grad = None
                p.accumulate_grad(torch.clone(ones))
            Count.calls = 0
            with Count():
                opt.step()
        return Count.calls

    assert calls_per_step(2, flat=True) == calls_per_step(40, flat=True)
    assert calls_per_step(40, flat=False) > 10 * calls_per_step(2, flat=True)
    # with two parameter groups: a constant number per group
    assert calls_per_step(4, flat=True, grouped=True) == calls_per_step(80, flat=True,
                                                                        grouped=True)
    assert calls_per_step(80, flat=False, grouped=True) > 10 * calls_per_step(4, flat=True,
                                                                              grouped=True)


@pytest.mark.parametrize("switch", ["amsgrad", "momentum"])
def test_state_that_appears_later_is_shared_and_saved(case: Case, switch: str) -> None:
    """Turning on AMSGrad (or RMSprop's momentum) after some steps adds a flat state array:
    every parameter must see it, so state_dict saves it, as on the reference path."""
    runs = []
    for flat in (True, False):
        params = _params(case, SHAPES, 8)
        opt: Optimizer = (Adam(params, 0.01, flat=flat) if switch == "amsgrad"
                          else RMSprop(params, 0.01, flat=flat))
        for step in range(4):
            if step == 2:
                setattr(opt, switch, True if switch == "amsgrad" else 0.9)
            opt.zero_grad()
            for p in params:
                p.accumulate_grad(case.asarray(np.full(p.shape, 0.5 - step)))
            opt.step()
        runs.append((params, opt))
    (flat_params, flat_opt), (ref_params, ref_opt) = runs
    for a, b in zip(flat_params, ref_params, strict=True):
        np.testing.assert_array_equal(_host(case, a.data), _host(case, b.data))
    flat_state, ref_state = flat_opt.state_dict(), ref_opt.state_dict()
    for a, b in zip(flat_state["state"], ref_state["state"], strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    if supports_views(case.xp):
        _assert_views(case, flat_opt)
        assert flat_opt.path_stats.flat == 4


def test_a_gradient_of_the_wrong_shape_is_reported_not_broadcast(case: Case) -> None:
    params = _params(case, [(3, 4)], 9)
    opt = SGD(params, 0.1)
    params[0].accumulate_grad(case.asarray(np.ones(4)))  # a buggy layer's gradient
    with pytest.raises(ValueError, match=r"gradient of Parameter\('p0'.* shape \(4,\)"):
        opt.step()
    if case.is_float64:
        opt.zero_grad()
        params[0].accumulate_grad(case.backend.asarray(np.ones((3, 4)), dtype="float32"))
        with pytest.raises(ValueError, match="dtype float32"):  # not cast either
            opt.step()
    np.testing.assert_array_equal(
        _host(case, params[0].data),
        np.random.default_rng(9).standard_normal((3, 4)).astype(case.dtype_name))
    assert opt.path_stats.fallbacks == {}  # a step that raised did nothing


def test_loading_a_permutation_of_the_modules_own_arrays(case: Case) -> None:
    model = nb.Sequential(
        nb.Linear(4, 4, seed=1, dtype=case.dtype_name, backend=case.backend), nb.ReLU(),
        nb.Linear(4, 4, seed=2, dtype=case.dtype_name, backend=case.backend))
    SGD(model.parameters(), 0.1)  # the parameters become views of a flat buffer (with views)
    state = model.state_dict()
    first, second = _host(case, state["0.weight"]).copy(), _host(case, state["2.weight"]).copy()
    model.load_state_dict({**state, "0.weight": state["2.weight"], "2.weight": state["0.weight"]})
    np.testing.assert_array_equal(_host(case, model.state_dict()["0.weight"]), second)
    np.testing.assert_array_equal(_host(case, model.state_dict()["2.weight"]), first)


def test_a_second_optimizer_over_the_same_parameters_shares_their_storage(case: Case) -> None:
    """Issue 8, 3.15: a second optimizer over the same parameters packed them into its own
    flat buffer and silently moved the first one to its per-parameter path for good. Now both
    step the parameters where they live (one arena) with state of their own: both flat, no
    warning, and the values are the closed form of both updates."""
    params = _params(case, [(2, 3), (4,)], 10)
    first = SGD(params, 0.5)
    second = SGD(params, 0.25, momentum=0.5)
    packed = supports_views(case.xp)
    if packed:
        assert {id(p.slot.chunk) for p in params} == {id(first._flat_groups[0].chunk)}
        assert second._flat_groups[0].chunk is first._flat_groups[0].chunk
    expected = [_host(case, p.data).astype(np.float64) for p in params]
    velocity = [np.zeros(p.shape) for p in params]
    for step in range(3):
        for opt in (first, second):
            opt.zero_grad()
            for p in params:
                p.accumulate_grad(case.asarray(np.full(p.shape, 1.0 + step)))
            opt.step()
        g = 1.0 + step
        expected = [e - 0.5 * g for e in expected]
        velocity = [0.5 * v + 0.25 * g for v in velocity]
        expected = [e - v for e, v in zip(expected, velocity, strict=True)]
        for p, want in zip(params, expected, strict=True):
            np.testing.assert_allclose(_host(case, p.data), want, rtol=case.rtol)
    for opt in (first, second):
        assert opt.path_stats.fallbacks == {}
        assert opt.path_stats.flat == (3 if packed else 0)
        if packed:
            _assert_views(case, opt)
    assert "velocity" not in first.state[0] and second.state[0]["step"] == 3


def test_a_rebound_parameter_leaves_the_arena_counted_and_reported_once(case: Case) -> None:
    """Issue 8, 3.15: ``p.data`` rebound by hand silently moved the whole group to the
    per-parameter path, every step. Now the parameter leaves the arena once (counted there and
    in the optimizer, warned once) and is stepped on its own; the others stay flat; the
    updates stay exact. A new optimizer packs it again."""
    params = _params(case, [(2, 3), (4,)], 10)
    first = SGD(params, 0.5)
    params[1].data = case.asarray(_host(case, params[1].data) * 2.0)
    expected = [_host(case, p.data).astype(np.float64) for p in params]
    packed = supports_views(case.xp)
    for step in range(3):
        first.zero_grad()
        for p in params:
            p.accumulate_grad(case.asarray(np.full(p.shape, 1.0 + step)))
        with expect_fallbacks(*(["rebound"] if step == 0 else []), packed=packed and step == 0):
            first.step()
        expected = [e - 0.5 * (1.0 + step) for e in expected]
        for p, want in zip(params, expected, strict=True):
            np.testing.assert_allclose(_host(case, p.data), want, rtol=case.rtol)
    if not packed:
        assert first.path_stats.fallbacks == {} and first.path_stats.unpacked == {"no_views": 2}
        return
    assert first.path_stats.fallbacks == {"rebound": 1} and first.path_stats.flat == 3
    assert params[1].slot is None and params[0].slot is not None
    assert params[0].slot.chunk.arena.stats.left == {"rebound": 1}
    assert first._flat_groups[0].indices == [0]
    second = SGD(params, 0.5)  # packs the rebound parameter again, into a chunk of its own
    assert params[1].slot is not None and params[1].data is params[1].slot.data
    second.zero_grad()
    for p in params:
        p.accumulate_grad(case.asarray(np.ones(p.shape)))
    second.step()
    assert second.path_stats.flat == 2 and second.path_stats.fallbacks == {}
    for p, want in zip(params, expected, strict=True):
        np.testing.assert_allclose(_host(case, p.data), want - 0.5, rtol=case.rtol)


def test_the_fallback_warning_names_the_parameter_and_the_cause(case: Case) -> None:
    if not supports_views(case.xp):
        pytest.skip("no flat path to leave: this namespace has no views")
    params = _params(case, [(2,), (3,)], 11)
    opt = Adam(params, 0.1)
    params[1].data = params[1].data * 1.0
    for p in params:
        p.accumulate_grad(case.asarray(np.ones(p.shape)))
    with pytest.warns(FlatFallbackWarning, match=(
        r"^Adam: Parameter\('p1', shape=\(3,\).*\(params\[1\]\) left the flat path: its \.data "
        r"was rebound to another array, so it no longer views the arena's flat buffer .* It is "
        r"stepped on its own .*counted in path_stats\.fallbacks\['rebound'\], warned once per "
        r"reason$"
    )) as record:
        opt.step()
    assert len(record) == 1 and record[0].filename == __file__  # points at the caller's step()
    assert issubclass(FlatFallbackWarning, RuntimeWarning)


def test_torch_inputs_that_require_grad_are_refused_clearly(case: Case) -> None:
    if not array_api_compat.is_torch_namespace(case.xp):
        pytest.skip("PyTorch's autograd tensors: a PyTorch row only")
    import torch

    model = nb.Sequential(nb.Linear(4, 3, seed=1, dtype=case.dtype_name, backend=case.backend))
    x = torch.randn(5, 4, dtype=case.dtype, device=case.backend.device, requires_grad=True)
    with pytest.raises(TypeError, match=r"requires grad; .* pass it with \.detach\(\)"):
        model.forward(x)
    labels = case.asarray(np.array([0, 1, 2, 0, 1]), dtype=None)
    with pytest.raises(TypeError, match="requires grad"):
        nb.functional.cross_entropy(x, labels)
    y, _ = model.forward(x.detach())
    assert y.shape == (5, 3)


def test_moving_the_model_after_the_optimizer_stepped_is_named(case: Case) -> None:
    if array_api_compat.is_numpy_namespace(case.xp):
        pytest.skip("moves the model from this row to NumPy: this row is NumPy")
    model = nb.Sequential(nb.Linear(3, 2, seed=0, dtype=case.dtype_name, backend=case.backend))
    opt = Adam(model.parameters(), 0.01)
    for p in model.parameters():
        p.accumulate_grad(case.asarray(np.ones(p.shape)))
    opt.step()
    model.to("numpy")
    for p in model.parameters():
        p.accumulate_grad(np.ones(p.shape, dtype=case.dtype_name))
    with pytest.raises(ValueError, match=r"moved after the optimizer was created"):
        opt.step()
