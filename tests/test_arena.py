"""The parameter arena (issue 9, item 6): flat storage the model owns and every optimizer and
``clip_grad_norm`` share.

On every row of the backend matrix. Where the namespace has views (NumPy, PyTorch, the GPU-like
device) the arena holds the parameters and each optimizer steps its parameters in runs of it;
elsewhere (array-api-strict, JAX) nothing is packed, the per-parameter path runs and says so.
Each flat result is compared bit for bit with the per-parameter reference path (``flat=False``
twins over parameters of their own), and the clipping norms with ``torch.nn.utils``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import array_api_compat
import numpy as np
import pytest
from conftest import Case
from test_optim import _backward, _mlp

import nnbackend as nb
from nnbackend.backend import supports_views
from nnbackend.layers import arena as arena_module
from nnbackend.optim import SGD, Adam, AdamW, Optimizer, RMSprop, clip_grad_norm


def _host(case: Case, x: Any) -> np.ndarray:
    return case.backend.to_numpy(x)


def _values(case: Case, model: nb.Module) -> list[np.ndarray]:
    return [_host(case, p.data).copy() for p in model.parameters()]


def _assert_same(case: Case, a: nb.Module, b: nb.Module) -> None:
    for x, y in zip(_values(case, a), _values(case, b), strict=True):
        np.testing.assert_array_equal(x, y)


def _twin(opt: Optimizer, model: nb.Module, twin: nb.Module) -> Optimizer:
    """``opt``'s settings and groups over ``twin``'s parameters, on the per-parameter path."""
    index = {id(p): k for k, p in enumerate(model.parameters())}
    params = twin.parameters()
    groups = [{**g.settings, "params": [params[index[id(p)]] for p in g["params"]]}
              for g in opt.param_groups]
    return type(opt)(groups, flat=False)


def _train(case: Case, pairs: list[tuple[nb.Module, list[Optimizer]]], steps: range,
           before_step: Callable[[nb.Module, int], None] | None = None) -> None:
    """Backward on batch t, then every optimizer of the model steps, for each (model, opts)."""
    for t in steps:
        for model, opts in pairs:
            for opt in opts:
                opt.zero_grad()
            _backward(model, case, t)
            if before_step is not None:
                before_step(model, t)
            for opt in opts:
                opt.step()


# -------------------------------------------------------------------------------------------
# The model's arena


def test_model_arena_holds_every_parameter_as_views(case: Case) -> None:
    model = _mlp(case)
    values = _values(case, model)
    arena = model.arena()
    assert model.arena() is arena  # created once
    _assert_same_values(case, model, values)
    if not supports_views(case.xp):
        assert len(arena) == 0 and arena.unpacked == {"no_views": 6}
        assert all(p.slot is None for p in model.parameters())
        return
    assert len(arena) == 1 and arena.unpacked == {} and arena.stats.packed == 6
    (chunk,) = arena.chunks
    assert arena.parameters() == model.parameters()  # the model's order
    offset = 0
    for p in model.parameters():
        slot = p.slot
        assert slot is not None and slot.chunk is chunk and p.data is slot.data
        assert p.grad_buffer is slot.grad and slot.start == chunk.padded(offset)
        assert slot.start * np.dtype(case.dtype_name).itemsize % 64 == 0  # aligned
        offset = slot.stop
    assert chunk.data.shape == (offset,) and chunk.grad.shape == (offset,)
    _backward(model, case, 0)  # backprop writes the gradients into the flat buffer
    flat = _host(case, chunk.grad)
    for p in model.parameters():
        assert p.grad is p.slot.grad
        np.testing.assert_array_equal(flat[p.slot.start:p.slot.stop], _host(case, p.grad).ravel())
    padding = np.ones(flat.shape, bool)
    for p in model.parameters():
        padding[p.slot.start:p.slot.stop] = False
    assert padding.any() and not flat[padding].any()  # the padding between slots stays zero
    assert arena.grads() == [chunk.grad]
    assert repr(arena) == f"Arena(1 chunks, 6 parameters, {offset} elements)"


def _assert_same_values(case: Case, model: nb.Module, values: list[np.ndarray]) -> None:
    for p, v in zip(model.parameters(), values, strict=True):
        np.testing.assert_array_equal(_host(case, p.data), v)


def test_no_views_is_reported_once_per_library(case: Case, caplog: pytest.LogCaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Without views the per-parameter path is the design: recorded in the arena's and the
    optimizers' counters and logged once per library, not per model or optimizer."""
    monkeypatch.setattr(arena_module, "_LOGGED_LIBRARIES", set())
    with caplog.at_level(logging.INFO, logger="nnbackend.layers.arena"):
        opt = Adam(_mlp(case), 0.01)  # an optimizer alone reports it too
        first = [r for r in caplog.records if "no mutable views" in r.getMessage()]
        assert len(first) == (0 if supports_views(case.xp) else 1)
        for _ in range(2):
            model = _mlp(case)
            model.arena()
            opt = Adam(model, 0.01)
    records = [r for r in caplog.records if "no mutable views" in r.getMessage()]
    if supports_views(case.xp):
        assert records == [] and opt.path_stats.unpacked == {}
    else:
        assert len(records) == 1 and "per-parameter path" in records[0].getMessage()
        assert opt.path_stats.unpacked == {"no_views": 6}


def test_what_cannot_be_packed_is_named() -> None:
    layer = nb.Linear(3, 2, seed=0, backend="numpy", dtype="float64")
    layer.bias.requires_grad = False
    layer.index = nb.Parameter(np.arange(3), "index")  # not floating: no flat buffer takes it
    arena = layer.arena()
    assert arena.unpacked == {"frozen": 1, "not_floating": 1}
    assert arena.parameters() == [layer.weight]
    layer.bias.requires_grad = True  # packed by the next call, in a chunk of its own
    assert layer.arena().parameters() == [layer.weight, layer.bias] and len(arena) == 2
    assert arena.unpacked == {"not_floating": 1}


def test_optimizers_and_the_model_find_one_arena(case: Case) -> None:
    """An optimizer given the parameters packs them (no arena yet) or finds theirs; the model's
    arena is then that one, and a second optimizer's groups view the same chunk."""
    if not supports_views(case.xp):
        pytest.skip("nothing is packed without views")
    model = _mlp(case)
    first = Adam(model.parameters(), 0.01)
    arena = model.arena()
    assert first._flat_groups[0].chunk.arena is arena and len(arena) == 1
    second = SGD(model, 0.1)
    assert second._flat_groups[0].chunk is first._flat_groups[0].chunk
    other = _mlp(case)
    other_arena = other.arena()  # created by the model first: the optimizer finds it
    opt = RMSprop(other, 0.01)
    assert opt._flat_groups[0].chunk.arena is other_arena and other_arena is not arena


# -------------------------------------------------------------------------------------------
# Optimizers over the arena: subsets, shared parameters, groups


def test_optimizers_over_disjoint_subsets_step_their_runs(case: Case) -> None:
    """Fine-tuning with two optimizers (the first two layers with AdamW, the head with SGD):
    each steps one run of the model's arena, keeps state the size of its own subset, and the
    training equals the per-parameter path's bit for bit."""
    model, ref = _mlp(case), _mlp(case)
    model.arena()
    params = model.parameters()
    opts: list[Optimizer] = [AdamW(params[:4], 0.01), SGD(params[4:], 0.05, momentum=0.9)]
    twins = [_twin(o, model, ref) for o in opts]
    _train(case, [(model, opts), (ref, twins)], range(8))
    _assert_same(case, model, ref)
    if not supports_views(case.xp):
        assert all(o.path_stats.unpacked == {"no_views": len(o.params)} for o in opts)
        return
    chunk = model.arena().chunks[0]
    for opt in opts:
        (group,) = opt._flat_groups
        assert group.chunk is chunk and group.contiguous
        span = group.slots[-1].stop - group.slots[0].start  # its parameters and the padding
        assert sum(math.prod(p.shape) for p in opt.params) <= group.size == span
        assert span < chunk.data.shape[0]
        assert {name: a.shape for name, a in group.state.items()} == {
            name: (group.size,) for name in group.state}
        assert opt.path_stats.flat == opt.path_stats.runs == 8 and opt.path_stats.fallbacks == {}


def test_two_optimizers_over_the_same_parameters_bit_for_bit(case: Case) -> None:
    """Both update the parameters where they live, each with its own state (PyTorch's
    behaviour for two optimizers over one tensor), both flat, equal to the reference path."""
    model, ref = _mlp(case), _mlp(case)
    opts: list[Optimizer] = [Adam(model, 0.01), SGD(model, 0.02, momentum=0.5, nesterov=True)]
    twins = [_twin(o, model, ref) for o in opts]
    _train(case, [(model, opts), (ref, twins)], range(6))
    _assert_same(case, model, ref)
    for opt, twin in zip(opts, twins, strict=True):
        for a, b in zip(opt.state_dict()["state"], twin.state_dict()["state"], strict=True):
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        if supports_views(case.xp):
            assert opt.path_stats.flat == 6 and opt.path_stats.fallbacks == {}


def test_groups_interleaved_in_the_model_arena_are_relaid_out(case: Case) -> None:
    """The model's arena is in module order (weight, bias, weight, ...); AdamW without decay on
    biases would be six runs. The optimizer re-lays the chunk out once in its order (each group
    one run); an optimizer created before keeps stepping flat in the new layout (its state
    moved with it). Bit for bit the per-parameter path's."""
    model, ref = _mlp(case), _mlp(case)
    model.arena()
    early = SGD(model, 0.01, momentum=0.9)
    _train(case, [(model, [early])], range(2))
    weights, biases = model.parameters()[0::2], model.parameters()[1::2]
    adamw = AdamW([{"params": weights}, {"params": biases, "weight_decay": 0.0}], lr=0.01,
                  weight_decay=0.1)
    early_twin, adamw_twin = _twin(early, model, ref), _twin(adamw, model, ref)
    _train(case, [(ref, [early_twin])], range(2))
    _train(case, [(model, [early, adamw]), (ref, [early_twin, adamw_twin])], range(2, 7))
    _assert_same(case, model, ref)
    if not supports_views(case.xp):
        return
    arena = model.arena()
    assert arena.stats.relayouts == 1 and len(arena) == 1
    assert arena.parameters() == [*weights, *biases]
    assert [g.param_group for g in adamw._flat_groups] == [0, 1]
    assert all(g.contiguous for g in adamw._flat_groups)
    assert adamw.path_stats.flat == adamw.path_stats.runs == 2 * 5
    assert early.path_stats.repacked == 1 and early.path_stats.fallbacks == {}
    assert early.path_stats.flat == 7


def test_a_rule_that_returns_a_new_array_is_stored_on_the_flat_path(case: Case) -> None:
    """The flat path used to drop what the update rule returned (only in-place rules worked)."""

    class NotInPlace(Optimizer):
        HYPERPARAMETERS = (nb.optim.Hyperparameter("lr", 0.1, lambda v, w, n: float(v)),)

        def _update(self, data: Any, grad: Any, state: dict[str, Any], step: int, xp: Any,
                    hyper: Any) -> Any:
            return data - hyper["lr"] * xp.sign(grad)

    model, ref = _mlp(case), _mlp(case)
    opt = NotInPlace(model)
    _train(case, [(model, [opt]), (ref, [_twin(opt, model, ref)])], range(3))
    _assert_same(case, model, ref)
    assert opt.path_stats.flat == (3 if supports_views(case.xp) else 0)


# -------------------------------------------------------------------------------------------
# Parameters without a gradient, frozen parameters: constant calls per run


def _torch_call_counter() -> Any:
    from torch.overrides import TorchFunctionMode

    class Count(TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func: Any, types: Any, args: Any = (),
                               kwargs: Any = None) -> Any:
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    return Count


def _params(case: Case, n: int, seed: int = 0) -> list[nb.Parameter]:
    rng = np.random.default_rng(seed)
    return [nb.Parameter(case.asarray(rng.standard_normal(3)), f"p{i}") for i in range(n)]


@pytest.mark.parametrize("make", [lambda p: Adam(p, 0.01), lambda p: SGD(p, 0.1, momentum=0.9)],
                         ids=["adam", "sgd-momentum"])
def test_a_skipped_parameter_costs_a_constant_number_of_calls_per_run(
    case: Case, make: Callable[[list[nb.Parameter]], Optimizer]
) -> None:
    """With the middle parameter of 4 or of 40 without a gradient, a step is two runs: the same
    number of array calls either way (counted with PyTorch's function mode): twice the update's
    calls, and a slice of the data, the gradient and each state array per run."""
    if not array_api_compat.is_torch_namespace(case.xp):
        pytest.skip("counts calls with PyTorch's function mode: a PyTorch row only")
    import torch

    count = _torch_call_counter()

    names = 0

    def calls(n: int, missing: int | None) -> int:
        nonlocal names
        params = _params(case, n)
        opt = make(params)
        ones = case.asarray(np.ones(3))
        for _ in range(2):  # the first step allocates the state
            for k, p in enumerate(params):
                p.grad = None
                if k != missing:
                    p.accumulate_grad(torch.clone(ones))
            count.calls = 0
            with count():
                opt.step()
        assert opt.path_stats.fallbacks == {}
        names = len(opt._flat_groups[0].state)
        return int(count.calls)

    full = calls(4, None)
    assert calls(40, None) == full
    split = calls(4, 2)
    assert calls(40, 20) == split == 2 * full + 2 * (2 + names)


def test_frozen_parameters_in_the_arena_are_never_moved(case: Case) -> None:
    """A parameter frozen after packing stays in its slot and no run covers it (not even weight
    decay reaches it); one frozen before packing is not packed at all and is packed, in a chunk
    of its own, once unfrozen. Bit for bit the per-parameter path's, no fallback."""
    model, ref = _mlp(case), _mlp(case)
    late, early = model.parameters()[2], model.parameters()[5]
    early.requires_grad = False
    ref.parameters()[5].requires_grad = False
    opt = AdamW(model, 0.01, weight_decay=0.1)
    twin = _twin(opt, model, ref)
    frozen_values: list[np.ndarray] = []

    def freeze(m: nb.Module, t: int) -> None:
        p = m.parameters()[2]
        p.requires_grad = not 2 <= t < 5
        if t == 6:
            m.parameters()[5].requires_grad = True
        if m is model and t in (2, 5):
            frozen_values.append(_host(case, p.data).copy())

    _train(case, [(model, [opt]), (ref, [twin])], range(9), before_step=freeze)
    _assert_same(case, model, ref)
    np.testing.assert_array_equal(frozen_values[0], frozen_values[1])  # not moved in 2-4
    # frozen (and so without a gradient) at the backward passes of steps 2-5, the bias of
    # the last layer at those of 0-6 (unfrozen between the backward and the step of 6)
    assert [opt.state[i]["step"] for i in (0, 2, 5)] == [9, 5, 2]
    assert opt.path_stats.fallbacks == {}
    if not supports_views(case.xp):
        return
    assert opt.path_stats.unpacked == {"frozen": 1} and opt.path_stats.repacked == 1
    assert late.slot is not None and early.slot is not None
    assert early.slot.chunk is not late.slot.chunk  # packed when unfrozen, on its own
    assert opt.path_stats.skipped == 2  # the weight at step 5, the new bias at step 6
    # 0-1: one run; 2-5: the runs around the weight; 6: three (it is behind), 7-8: and the bias
    assert opt.path_stats.runs == 2 * 1 + 4 * 2 + 3 + 2 * (3 + 1)


# -------------------------------------------------------------------------------------------
# clip_grad_norm on the arena


def _torch_clipped(case: Case, params: list[nb.Parameter],
                   max_norm: float) -> tuple[float, list[Any]]:
    torch = pytest.importorskip("torch")
    tensors = []
    for p in params:
        t = torch.zeros(p.shape, dtype=torch.float64, requires_grad=True)
        if p.grad is not None:
            t.grad = torch.from_numpy(_host(case, p.grad).astype(np.float64))
        tensors.append(t)
    total = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    return float(total), [None if t.grad is None else t.grad.numpy() for t in tensors]


@pytest.mark.parametrize("situation", ["all", "one-without-grad", "frozen", "subset"])
def test_clip_grad_norm_on_the_arena_matches_torch(case: Case, situation: str) -> None:
    """The whole flat gradient buffer when every packed gradient is there, its runs otherwise;
    the same norm and clipped gradients as torch.nn.utils.clip_grad_norm_, the gradients still
    the arena's views, and the optimizer's next step flat without a copy."""
    model = _mlp(case)
    opt = Adam(model, 0.01)
    if situation == "frozen":
        model.parameters()[2].requires_grad = False
    _backward(model, case, 0)
    if situation == "one-without-grad":
        model.parameters()[3].grad = None
    params = model.parameters()[1:5] if situation == "subset" else model.parameters()
    want_total, want = _torch_clipped(case, params, 0.5)
    total = clip_grad_norm(params, 0.5)
    case.check_placement(total)
    np.testing.assert_allclose(float(_host(case, total)), want_total, rtol=case.rtol)
    for p, g in zip(params, want, strict=True):
        if g is None:
            assert p.grad is None
            continue
        np.testing.assert_allclose(_host(case, p.grad), g, rtol=case.rtol, atol=case.rtol)
        if supports_views(case.xp):
            assert p.grad is p.slot.grad
    opt.step()
    assert opt.path_stats.copied_grads == 0 and opt.path_stats.fallbacks == {}
    assert opt.path_stats.flat == (1 if supports_views(case.xp) else 0)


def test_clip_grad_norm_is_a_constant_number_of_calls_in_the_arena(case: Case) -> None:
    """One global norm from the flat gradient buffer: the same array calls for 2 parameter
    tensors or 40; without an arena (never packed), a few calls per tensor."""
    if not array_api_compat.is_torch_namespace(case.xp):
        pytest.skip("counts calls with PyTorch's function mode: a PyTorch row only")
    count = _torch_call_counter()

    def calls(n: int, *, packed: bool, missing: int | None = None) -> int:
        params = _params(case, n, seed=3)
        if packed:
            SGD(params, 0.1)
        for k, p in enumerate(params):
            if k != missing:
                p.accumulate_grad(case.asarray(np.full(3, 0.5)))
        count.calls = 0
        with count():
            total = clip_grad_norm(params, 0.1)
        got = float(_host(case, total))
        want = 0.5 * math.sqrt(3 * (n - (missing is not None)))
        assert math.isclose(got, want, rel_tol=case.rtol), (got, want)
        return int(count.calls)

    assert calls(2, packed=True) == calls(40, packed=True)
    assert calls(40, packed=False) > 10 * calls(2, packed=True)
    # a gradient missing in the middle: two runs, however many tensors
    assert calls(4, packed=True, missing=2) == calls(40, packed=True, missing=20)


# -------------------------------------------------------------------------------------------
# Moving and loading a model with an arena


def test_module_to_leaves_the_arena_once_and_a_new_arena_packs_again(case: Case) -> None:
    """``Module.to`` rebinds every parameter: each leaves the arena once (counted), and the next
    ``model.arena()`` (or a new optimizer) packs them again, in the new dtype."""
    if not supports_views(case.xp):
        pytest.skip("nothing is packed without views")
    if not case.has_float64:
        pytest.skip("moves the model to the other float dtype: this row has only float32")
    model = _mlp(case)
    arena = model.arena()
    other = "float32" if case.is_float64 else "float64"
    model.to(other)
    assert all(p.slot is not None and p.data is not p.slot.data for p in model.parameters())
    assert model.arena() is arena and arena.stats.left == {"rebound": 6}
    assert model.arena() is arena and arena.stats.left == {"rebound": 6}  # counted once
    (chunk,) = arena.chunks
    assert chunk.key[2] == other and all(p.data is p.slot.data for p in model.parameters())
    opt = SGD(model, 0.5)
    before = _values(case, model)
    for p in model.parameters():
        p.accumulate_grad(case.backend.asarray(np.ones(p.shape), dtype=other))
    opt.step()
    assert opt.path_stats.flat == 1 and opt.path_stats.fallbacks == {}
    for p, was in zip(model.parameters(), before, strict=True):
        np.testing.assert_array_equal(_host(case, p.data), was.astype(other) - 0.5)


def test_load_state_dict_writes_into_the_arena(case: Case) -> None:
    model, source = _mlp(case), _mlp(case)
    _train(case, [(source, [SGD(source, 0.1)])], range(3))
    arena = model.arena()
    opt = Adam(model, 0.01)
    views = [p.data for p in model.parameters()]
    model.load_state_dict({k: _host(case, v) for k, v in source.state_dict().items()})
    _assert_same(case, model, source)
    if supports_views(case.xp):  # in place: the parameters still view the arena
        assert all(p.data is v for p, v in zip(model.parameters(), views, strict=True))
    _train(case, [(model, [opt])], range(3, 5))
    if supports_views(case.xp):
        assert arena.stats.left == {} and opt.path_stats.flat == 2


def test_the_arena_reads_nothing_from_the_device(case: Case) -> None:
    """Packing, relayout, a step with a skipped parameter and clipping over runs read no array
    back to the host (the GPU-like device counts host reads)."""
    if case.backend.name != "gpulike":
        pytest.skip("only the GPU-like test device counts host reads")
    from nnbackend.testing import count_host_reads

    with count_host_reads() as reads:
        model = _mlp(case)
        model.arena()
        weights, biases = model.parameters()[0::2], model.parameters()[1::2]
        opt = AdamW([{"params": weights}, {"params": biases, "weight_decay": 0.0}], lr=0.01)
        for t in range(4):
            opt.zero_grad()
            _backward(model, case, t)
            if t == 2:
                biases[1].grad = None
            clip_grad_norm(model, 0.5)
            opt.step()
    assert reads.count == 0, reads
    assert opt.path_stats.flat == 8 and opt.path_stats.fallbacks == {}
