"""Module state: parameters, buffers, extra state, state dicts (PyTorch's layout), the module
tree, freezing, moving and casting."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import nnbackend as nb

torch = pytest.importorskip("torch")


class _Stats(nb.Module):
    """y = x − mean: a running mean buffer, a non-persistent cache, a counter as extra state."""

    def __init__(self, n: int, *, backend: Any, dtype: str) -> None:
        super().__init__()
        be = nb.get_backend(backend)
        self.scale = nb.Parameter(be.zeros((n,), dtype=dtype) + 1.0)
        self.register_buffer("running_mean", be.zeros((n,), dtype=dtype))
        self.register_buffer("steps", be.asarray(np.zeros((), np.int32)))
        self.register_buffer("cache", be.zeros((n,), dtype=dtype), persistent=False)
        self.calls = 0

    def forward_pass(self, x: Any, ctx: nb.layers.Context) -> tuple[Any, Any]:
        self.calls += 1
        self.running_mean = 0.9 * self.running_mean + 0.1 * ctx.xp.mean(x, axis=0)
        w = self.scale.data

        def backprop(dy: Any) -> Any:
            self.scale.accumulate_grad(ctx.xp.sum(dy * (x - self.running_mean), axis=0))
            return dy * w

        return (x - self.running_mean) * w, backprop

    def get_extra_state(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def set_extra_state(self, state: Any) -> None:
        self.calls = int(state["calls"])


def _model(case: Any) -> nb.Sequential:
    return nb.Sequential(
        nb.Linear(3, 4, seed=0, dtype=case.dtype_name, backend=case.backend),
        _Stats(4, backend=case.backend, dtype=case.dtype_name),
        nb.Linear(4, 2, seed=1, dtype=case.dtype_name, backend=case.backend),
    )


def test_buffers_are_named_saved_moved_but_not_trained(case: Any) -> None:
    model = _model(case)
    assert [name for name, _ in model.named_buffers()] == [
        "1.running_mean", "1.steps", "1.cache"]
    assert [name for name, _ in model.named_buffers(persistent_only=True)] == [
        "1.running_mean", "1.steps"]
    assert list(model.state_dict()) == [
        "0.weight", "0.bias", "1.scale", "2.weight", "2.bias", "1.running_mean", "1.steps"]
    assert len(model.parameters()) == 5  # buffers are not parameters: no optimizer sees them
    x = case.asarray(np.arange(6.0).reshape(2, 3))
    model.forward(x)
    np.testing.assert_allclose(nb.to_numpy(model[1].running_mean), 0.1 * nb.to_numpy(
        model[0](x)).mean(axis=0), rtol=case.rtol, atol=1e-7)
    moved = model.to("numpy")
    for _, value in moved.named_buffers():
        assert isinstance(value, np.ndarray) and value.flags.writeable


def test_load_state_dict_fills_parameters_and_buffers_and_validates_first(case: Any) -> None:
    source, target = _model(case), _model(case)
    source.forward(case.asarray(np.ones((2, 3))))
    state = {k: nb.to_numpy(v) for k, v in source.state_dict().items()}
    assert target.load_state_dict(state) == nb.layers.LoadResult([], [])
    for name, value in target.state_dict().items():
        np.testing.assert_array_equal(nb.to_numpy(value), state[name], err_msg=name)
    bad = {**state, "1.running_mean": np.zeros(5, state["1.running_mean"].dtype)}
    before = {k: nb.to_numpy(v).copy() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match=r"'1\.running_mean' has shape \(4,\), state dict "
                                         r"gives \(5,\)"):
        target.load_state_dict(bad)
    for name, value in target.state_dict().items():  # untouched by the failed load
        np.testing.assert_array_equal(nb.to_numpy(value), before[name], err_msg=name)


def test_non_strict_loads_what_matches_and_names_the_rest(case: Any) -> None:
    model = _model(case)
    state = {k: nb.to_numpy(v) for k, v in model.state_dict().items()}
    head = state.pop("2.weight")
    state["head.weight"] = head
    with pytest.raises(KeyError, match=r"missing \['2\.weight'\]; unexpected \['head\.weight'\]"):
        model.load_state_dict(state)
    state["0.weight"] = state["0.weight"] + 1.0
    result = model.load_state_dict(state, strict=False)
    assert result == (["2.weight"], ["head.weight"])
    np.testing.assert_array_equal(nb.to_numpy(model[0].weight.data), state["0.weight"])


def test_extra_state_lives_beside_the_state_dict(case: Any) -> None:
    model = _model(case)
    model.forward(case.asarray(np.ones((2, 3))))
    assert model.extra_state_dict() == {"1": {"calls": 1}}
    other = _model(case)
    other.load_extra_state_dict(model.extra_state_dict())
    assert other[1].calls == 1
    with pytest.raises(KeyError, match=r"modules it does not have: \['7'\]"):
        other.load_extra_state_dict({"7": {"calls": 0}})


def test_to_dtype_casts_floating_parameters_and_buffers_only(case: Any) -> None:
    if not case.has_float64:
        pytest.skip("this row has no float64")
    model = _model(case).to("float64")
    for _, p in model.named_parameters():
        case.check_placement(p.data, dtype="float64")
    case.check_placement(model[1].running_mean, dtype="float64")
    case.check_placement(model[1].steps, dtype="int32")
    model.to(dtype="float32")
    case.check_placement(model[0].weight.data, dtype="float32")


def test_a_torch_state_dict_loads_and_gives_the_same_outputs(case: Any) -> None:
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(),
                                    torch.nn.Linear(7, 3)).double()
    model = nb.Sequential(nb.Linear(5, 7, dtype=case.dtype_name), nb.Tanh(),
                          nb.Linear(7, 3, dtype=case.dtype_name), backend=case.backend)
    state = {k: v.numpy().astype(case.dtype_name) for k, v in reference.state_dict().items()}
    model.load_state_dict(state)
    x = np.random.default_rng(0).standard_normal((4, 5))
    want = reference(torch.from_numpy(x)).detach().numpy()
    got = nb.to_numpy(model(case.asarray(x)))
    np.testing.assert_allclose(got, want, rtol=case.rtol, atol=1e-6)


def test_tied_parameters_are_one_parameter_with_duplicate_keys_accepted_when_equal(
    case: Any,
) -> None:
    first = nb.Linear(4, 4, seed=0, dtype=case.dtype_name, backend=case.backend)
    second = nb.Linear(4, 4, seed=1, dtype=case.dtype_name, backend=case.backend)
    second.weight = first.weight  # tied, as torch's `second.weight = first.weight`
    model = nb.Sequential(first, nb.Tanh(), second)
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.bias"]
    torch_model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(),
                                      torch.nn.Linear(4, 4))
    torch_model[2].weight = torch_model[0].weight
    state = {k: v.detach().numpy().astype(case.dtype_name)
             for k, v in torch_model.state_dict().items()}
    assert "2.weight" in state  # torch lists a tied parameter under every name
    model.load_state_dict(state)
    np.testing.assert_array_equal(nb.to_numpy(second.weight.data), state["0.weight"])
    state["2.weight"] = state["2.weight"] + 1.0
    with pytest.raises(ValueError, match=r"'2\.weight' and '0\.weight' are one \(tied\)"):
        model.load_state_dict(state)


def test_the_module_tree_in_pytorchs_order(case: Any) -> None:
    model = nb.Sequential(nb.Linear(2, 3, seed=0, backend=case.backend),
                          nb.Sequential(nb.ReLU(), nb.Linear(3, 1, seed=1, backend=case.backend)))
    reference = torch.nn.Sequential(torch.nn.Linear(2, 3),
                                    torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(3, 1)))
    assert [n for n, _ in model.named_modules()] == [n for n, _ in reference.named_modules()]
    visited: list[str] = []
    model.apply(lambda m: visited.append(type(m).__name__))
    reference_visited: list[str] = []
    reference.apply(lambda m: reference_visited.append(type(m).__name__))
    assert visited == reference_visited
    model.eval()
    assert not any(m.training for m in model.modules())


def test_frozen_parameters_take_no_gradient_and_do_not_move(case: Any) -> None:
    model = nb.Sequential(nb.Linear(3, 4, seed=0, backend=case.backend, dtype=case.dtype_name),
                          nb.Tanh(),
                          nb.Linear(4, 2, seed=1, backend=case.backend, dtype=case.dtype_name))
    model[0].requires_grad_(False)
    frozen = {name: nb.to_numpy(p.data).copy() for name, p in model.named_parameters()
              if name.startswith("0.")}
    opt = nb.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    x = case.asarray(np.ones((5, 3)))
    for _ in range(2):
        _, backprop = model.forward(x)
        opt.zero_grad()
        backprop(case.asarray(np.ones((5, 2))))
        opt.step()
    assert model[0].weight.grad is None and model[0].bias.grad is None
    assert model[2].weight.grad is not None
    for name, p in model.named_parameters():
        if name in frozen:
            np.testing.assert_array_equal(nb.to_numpy(p.data), frozen[name], err_msg=name)
    assert "requires_grad=False" in repr(model[0].weight)
