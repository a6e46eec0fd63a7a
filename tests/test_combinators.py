"""Residual and Parallel, and the fan-out rule (a value, layer or parameter used several times
receives the sum of its gradients), against PyTorch autograd on the whole backend matrix.

Each model is written once, as a function of a "kit" of layer constructors, and built twice:
from nnbackend's layers on the case's backend, and from ``torch.nn`` in float64 (a residual
module with ``self.block``, a ``ModuleList`` for the branches). The torch twin takes
nnbackend's weights through its state dict, so the two have the same parameter names, and the
comparison covers the outputs, ∂L/∂x and every parameter's gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import _reference as ref
import numpy as np
import pytest

import nnbackend as nb
from nnbackend.layers import Context
from nnbackend.testing import count_host_reads

torch = pytest.importorskip("torch")

N = 3


# ------------------------------------------------------------------ the two kits


class TorchResidual(torch.nn.Module):
    def __init__(self, block: Any) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Any) -> Any:
        return x + self.block(x)


class TorchParallel(torch.nn.ModuleList):
    def __init__(self, *branches: Any, merge: str = "add", axis: int = -1) -> None:
        super().__init__(branches)
        self.merge, self.axis = merge, axis

    def forward(self, x: Any) -> Any:
        outs = [branch(x) for branch in self]
        return sum(outs[1:], outs[0]) if self.merge == "add" else torch.cat(outs, dim=self.axis)


def _nb_kit(case: Any) -> SimpleNamespace:
    seeds = iter(range(1, 1000))

    def linear(a: int, b: int) -> nb.Linear:
        seed = next(seeds)
        layer = nb.Linear(a, b, dtype=case.dtype_name, backend=case.backend, seed=seed)
        # Non-zero biases, so that their gradients mean something.
        layer.bias.data = case.asarray(np.random.default_rng(seed).standard_normal(b) * 0.5)
        return layer

    def batch_norm(n: int) -> nb.BatchNorm1d:
        layer = nb.BatchNorm1d(n, dtype=case.dtype_name, backend=case.backend)
        seed = next(seeds)  # γ and β away from 1 and 0, so that their gradients mean something
        layer.weight.data = case.asarray(1.0 + np.random.default_rng(seed).standard_normal(n) / 4)
        layer.bias.data = case.asarray(np.random.default_rng(seed + 1).standard_normal(n) / 4)
        return layer

    return SimpleNamespace(Linear=linear, Tanh=nb.Tanh, Sigmoid=nb.Sigmoid, Identity=nb.Identity,
                           ReLU=nb.ReLU, BatchNorm1d=batch_norm, Sequential=nb.Sequential,
                           Residual=nb.Residual, Parallel=nb.Parallel)


def _torch_kit() -> SimpleNamespace:
    return SimpleNamespace(
        Linear=lambda a, b: torch.nn.Linear(a, b, dtype=torch.float64), Tanh=torch.nn.Tanh,
        Sigmoid=torch.nn.Sigmoid, Identity=torch.nn.Identity, ReLU=torch.nn.ReLU,
        BatchNorm1d=lambda n: torch.nn.BatchNorm1d(n, dtype=torch.float64),
        Sequential=torch.nn.Sequential,
        Residual=TorchResidual, Parallel=TorchParallel,
    )


# ------------------------------------------------------------------ the models


def _residual_mlp(k: Any) -> Any:
    return k.Residual(k.Sequential(k.Linear(4, 6), k.Tanh(), k.Linear(6, 4)))


def _parallel_add(k: Any) -> Any:
    return k.Parallel(k.Linear(4, 3), k.Sequential(k.Linear(4, 5), k.Tanh(), k.Linear(5, 3)),
                      k.Sequential(k.Sigmoid(), k.Linear(4, 3)))


def _parallel_concat(k: Any) -> Any:  # (N, 4) → (N, 3 + 2 + 4)
    return k.Parallel(k.Linear(4, 3), k.Sequential(k.Tanh(), k.Linear(4, 2)), k.Identity(),
                      merge="concat")


def _parallel_concat_channels(k: Any) -> Any:  # (N, 3, 5) → (N, 3 + 6, 4): NCL channels
    doubled = k.Parallel(k.Identity(), k.Tanh(), merge="concat", axis=1)
    return k.Parallel(k.Linear(5, 4), k.Sequential(doubled, k.Linear(5, 4)),
                      merge="concat", axis=1)


def _nested(k: Any) -> Any:
    return k.Sequential(
        k.Linear(4, 6), k.Tanh(),
        k.Residual(k.Parallel(k.Sequential(k.Linear(6, 6), k.Tanh()), k.Linear(6, 6))),
        k.Residual(k.Sequential(k.Parallel(k.Linear(6, 2), k.Linear(6, 4), merge="concat"),
                                k.Sigmoid())),
        k.Linear(6, 3),
    )


def _linear_used_twice(k: Any) -> Any:
    lin = k.Linear(4, 4)
    return k.Sequential(lin, k.Tanh(), lin)


def _shared_parameter(k: Any) -> Any:
    a, b = k.Linear(4, 4), k.Linear(4, 4)
    b.weight = a.weight  # two layers, one Parameter
    return k.Sequential(a, k.Tanh(), b)


def _activation_used_twice(k: Any) -> Any:
    act = k.Tanh()
    return k.Sequential(k.Linear(4, 5), act, k.Linear(5, 5), act)


def _reused_across_branches(k: Any) -> Any:
    # lin(x) + lin(tanh x) + tanh x + (x + tanh x): one Linear and one Tanh, four uses each side
    lin, act = k.Linear(4, 4), k.Tanh()
    return k.Parallel(lin, k.Sequential(act, lin), act, k.Residual(act))


def _identity_branch_first(k: Any) -> Any:
    # Identity's ∂L/∂x is dy itself: the sum must not be taken in place into it.
    return k.Parallel(k.Identity(), k.Linear(4, 4), k.Tanh())


def _written_in_place(k: Any) -> Any:
    # Where a layer may write into its input or dy (layers.module, "Writing in place"): a ReLU
    # between Linears clips the first one's output and masks the second one's ∂L/∂x in place,
    # inside the block too; the batch norm centres the Residual's output in its storage and
    # the ReLU after it clips the batch norm's output there; the block's Tanh keeps its output
    # (the Residual adds into a new array), the Residual's backward adds dy into the block's
    # ∂L/∂x, and the last ReLU leaves the caller's dy alone. (No bias right before a batch
    # norm: its gradient is 0 up to rounding, no value to compare.)
    return k.Sequential(
        k.Linear(4, 6), k.ReLU(), k.Linear(6, 5), k.ReLU(),
        k.Residual(k.Sequential(k.Linear(5, 5), k.ReLU(), k.Linear(5, 5), k.Tanh())),
        k.BatchNorm1d(5), k.ReLU(), k.Linear(5, 3), k.ReLU(),
    )


MODELS: dict[str, tuple[tuple[int, ...], Callable[[Any], Any]]] = {
    "residual_mlp": ((N, 4), _residual_mlp),
    "parallel_add": ((N, 4), _parallel_add),
    "parallel_concat": ((N, 4), _parallel_concat),
    "parallel_concat_channels": ((N, 3, 5), _parallel_concat_channels),
    "nested": ((N, 4), _nested),
    "linear_used_twice": ((N, 4), _linear_used_twice),
    "shared_parameter": ((N, 4), _shared_parameter),
    "activation_used_twice": ((N, 4), _activation_used_twice),
    "reused_across_branches": ((N, 4), _reused_across_branches),
    "identity_branch_first": ((N, 4), _identity_branch_first),
    "written_in_place": ((16, 4), _written_in_place),  # a batch norm over 3 is ill-conditioned
}


def _twin(model: nb.Module, build: Callable[[Any], Any]) -> Any:
    """The torch float64 model with ``model``'s weights, loaded by name."""
    twin = build(_torch_kit())
    state = {k: torch.tensor(nb.to_numpy(v).astype(np.float64))
             for k, v in model.state_dict().items()}
    missing, unexpected = twin.load_state_dict(state, strict=False)
    assert unexpected == []
    # What torch lists and nnbackend does not: the other names of a tied parameter only.
    loaded = {twin.state_dict()[k].data_ptr() for k in state}
    assert all(twin.state_dict()[k].data_ptr() in loaded for k in missing), missing
    return twin


def _tol(case: Any) -> float:
    return 1e-10 if case.is_float64 else case.rtol


# ------------------------------------------------------------------ against torch autograd


@pytest.mark.parametrize("name", MODELS)
def test_matches_torch_autograd(case: Any, name: str) -> None:
    shape, build = MODELS[name]
    model = build(_nb_kit(case))
    twin = _twin(model, build)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in twin.named_parameters()]

    rng = np.random.default_rng(7)
    x_host = rng.standard_normal(shape).astype(case.dtype_name)
    x = case.asarray(x_host.copy())  # (NumPy's asarray would share x_host's memory)
    y, backprop = model.forward(x, input_grad=True)
    dy_host = rng.standard_normal(tuple(y.shape)).astype(case.dtype_name)
    dy = case.asarray(dy_host.copy())
    dx = backprop(dy)
    # The caller's arrays are never written (layers write in place only into their own).
    np.testing.assert_array_equal(nb.to_numpy(x), x_host)
    np.testing.assert_array_equal(nb.to_numpy(dy), dy_host)

    tx = torch.tensor(x_host.astype(np.float64), requires_grad=True)
    ty = twin(tx)
    (ty * torch.tensor(dy_host.astype(np.float64))).sum().backward()

    for array in (y, dx):
        case.check_placement(array)
    pairs = [("output", y, ty.detach().numpy()), ("dx", dx, tx.grad.numpy())]
    torch_grads = dict(twin.named_parameters())
    for pname, p in model.named_parameters():
        case.check_placement(p.grad)
        pairs.append((pname, p.grad, torch_grads[pname].grad.numpy()))
    tol = _tol(case)
    for what, got, want in pairs:
        err = ref.rel_err(nb.to_numpy(got), want)
        assert err < tol, f"{name} {what}: relative error {err:.3g} >= {tol:g}"
    # Inference runs the same operations as the training forward.
    np.testing.assert_array_equal(nb.to_numpy(model(x)), nb.to_numpy(y))


@pytest.mark.parametrize("name", MODELS)
def test_gradcheck(case: Any, name: str) -> None:
    if not case.is_float64:
        pytest.skip("gradcheck compares float64 finite differences")
    shape, build = MODELS[name]
    model = build(_nb_kit(case))
    x = case.asarray(np.random.default_rng(3).standard_normal(shape))
    report = nb.gradcheck(model, x)
    assert set(report.max_abs_error) == {"x", *(n for n, _ in model.named_parameters())}


@pytest.mark.parametrize("name", MODELS)
def test_no_host_reads(case: Any, name: str) -> None:
    if case.backend.name != "gpulike":
        pytest.skip("only the GPU-like test device counts host reads")
    shape, build = MODELS[name]
    model = build(_nb_kit(case))
    rng = np.random.default_rng(5)
    x = case.asarray(rng.standard_normal(shape))
    y = model(x)
    dy = case.asarray(rng.standard_normal(tuple(y.shape)))
    with count_host_reads() as reads:
        for input_grad in (True, False):
            _, backprop = model.forward(x, input_grad=input_grad)
            backprop(dy)
        model(x)
    assert reads.count == 0, reads


@pytest.mark.parametrize("name", ["residual_mlp", "parallel_add", "parallel_concat",
                                  "reused_across_branches"])
def test_without_input_grad_the_parameters_get_the_same_gradients(case: Any, name: str) -> None:
    shape, build = MODELS[name]
    model = build(_nb_kit(case))
    rng = np.random.default_rng(9)
    x = case.asarray(rng.standard_normal(shape))
    grads = []
    for input_grad in (True, False):
        model.zero_grad()
        y, backprop = model.forward(x, input_grad=input_grad)
        dx = backprop(case.asarray(np.ones(tuple(y.shape))))
        assert (dx is None) == (not input_grad)
        grads.append([nb.to_numpy(p.grad) for p in model.parameters()])
    for (pname, _), a, b in zip(model.named_parameters(), *grads, strict=True):
        np.testing.assert_array_equal(b, a, err_msg=pname)


def test_a_sequential_of_layers_without_parameters_returns_none_without_input_grad(
        case: Any) -> None:
    """Every layer runs by inference there: backprop gave dy back as if it were ∂L/∂x (for
    ReLU, [5, 7] instead of None or [0, 7])."""
    x = case.asarray(np.array([[-1.0, 2.0]]))
    dy = case.asarray(np.array([[5.0, 7.0]]))
    for model in (nb.Sequential(nb.ReLU()), nb.Sequential(nb.ReLU(), nb.Tanh())):
        _, backprop = model.forward(x)  # Sequential's default: input_grad=False
        assert backprop(dy) is None
    _, backprop = nb.Sequential(nb.ReLU()).forward(x, input_grad=True)
    np.testing.assert_array_equal(nb.to_numpy(backprop(dy)), [[0.0, 7.0]])
    _, backprop = nb.Sequential().forward(x, input_grad=True)  # the identity
    np.testing.assert_array_equal(nb.to_numpy(backprop(dy)), [[5.0, 7.0]])


# ------------------------------------------------------------------ what the children are asked


class Spy(nb.Module):
    """y = x, recording each forward's ``ctx.input_grad``."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def forward_pass(self, x: Any, ctx: Context) -> tuple[Any, Any]:
        self.seen.append(ctx.input_grad)
        return x, lambda dy: dy if ctx.input_grad else None


def test_children_are_asked_for_input_grad_only_when_the_caller_is(case: Any) -> None:
    x = case.asarray(np.ones((2, 4)))
    for make in (nb.Residual, lambda s: nb.Parallel(s, nb.Tanh())):
        spy = Spy()
        layer = make(spy)
        for input_grad in (False, True):
            layer.forward(x, input_grad=input_grad)
        assert spy.seen == [False, True], layer
    # Behind a trained layer ∂L/∂x is always wanted; in front of every one, never.
    kit = _nb_kit(case)
    behind, front = Spy(), Spy()
    nb.Sequential(kit.Linear(4, 4), nb.Residual(behind)).forward(x)
    nb.Sequential(nb.Residual(nb.Sequential(front, kit.Linear(4, 4)))).forward(x)
    assert (behind.seen, front.seen) == ([True], [False])


# ------------------------------------------------------------------ tuple inputs


class Gate(nb.Module):
    """y = a ⊙ tanh(b) ⊙ mask on inputs (a, b, mask); the mask has no gradient."""

    def forward_pass(self, xs: Any, ctx: Context) -> tuple[Any, Any]:
        a, b, mask = xs
        t = ctx.xp.tanh(b)

        def backprop(dy: Any) -> Any:
            g = dy * mask
            return g * t, g * a * (1.0 - t * t), None

        return a * t * mask, backprop


class SquareB(nb.Module):
    """y = b ⊙ b on inputs (a, b, mask): a gradient for b only."""

    def forward_pass(self, xs: Any, ctx: Context) -> tuple[Any, Any]:
        b = xs[1]
        return b * b, lambda dy: (None, 2.0 * b * dy, None)


@pytest.mark.parametrize("merge", ["add", "concat"])
def test_tuple_inputs_fan_out_and_their_gradients_add_up(case: Any, merge: str) -> None:
    rng = np.random.default_rng(11)
    hosts = [rng.standard_normal((N, 4)).astype(case.dtype_name) for _ in range(2)]
    hosts.append((rng.random((N, 4)) > 0.3).astype(case.dtype_name))
    layer = nb.Parallel(Gate(), SquareB(), Gate(), merge=merge)
    y, backprop = layer.forward(tuple(case.asarray(h) for h in hosts))
    dy_host = rng.standard_normal(tuple(y.shape)).astype(case.dtype_name)
    da, db, dmask = backprop(case.asarray(dy_host))
    assert dmask is None

    ta, tb = (torch.tensor(h.astype(np.float64), requires_grad=True) for h in hosts[:2])
    tmask = torch.tensor(hosts[2].astype(np.float64))
    outs = [ta * torch.tanh(tb) * tmask, tb * tb, ta * torch.tanh(tb) * tmask]
    ty = sum(outs[1:], outs[0]) if merge == "add" else torch.cat(outs, dim=-1)
    (ty * torch.tensor(dy_host.astype(np.float64))).sum().backward()
    for what, got, want in (("y", y, ty.detach()), ("da", da, ta.grad), ("db", db, tb.grad)):
        case.check_placement(got)
        err = ref.rel_err(nb.to_numpy(got), want.numpy())
        assert err < _tol(case), f"{what}: relative error {err:.3g}"


# ------------------------------------------------------------------ names, reprs, descriptions


def test_state_dict_names() -> None:
    kit = _nb_kit(SimpleNamespace(dtype_name="float64", backend=nb.get_backend("numpy"),
                                  asarray=lambda h: np.asarray(h, dtype=np.float64)))
    assert list(_residual_mlp(kit).state_dict()) == [
        "block.0.weight", "block.0.bias", "block.2.weight", "block.2.bias"]
    assert list(_parallel_concat(kit).state_dict()) == [
        "0.weight", "0.bias", "1.1.weight", "1.1.bias"]
    assert list(_shared_parameter(kit).state_dict()) == ["0.weight", "0.bias", "2.bias"]


def test_repr_nests_like_torch() -> None:
    model = nb.Sequential(
        nb.Linear(4, 6), nb.Residual(nb.Sequential(nb.Linear(6, 6), nb.Tanh())),
        nb.Parallel(nb.Linear(6, 3), nb.Identity(), merge="concat"))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Linear(4→6)\n"
        "  (1): Residual(\n"
        "    (block): Sequential(\n"
        "      (0): Linear(6→6)\n"
        "      (1): Tanh()\n"
        "    )\n"
        "  )\n"
        "  (2): Parallel(\n"
        "    merge='concat', axis=-1\n"
        "    (0): Linear(6→3)\n"
        "    (1): Identity()\n"
        "  )\n"
        ")"
    )
    assert nb.Parallel(nb.Tanh()).extra_repr() == "merge='add'"


def test_config_rebuilds_the_constructor_call() -> None:
    block = nb.Sequential(nb.Linear(4, 4), nb.Tanh())
    assert nb.Residual(block).config() == {"block": block}
    branches = [nb.Linear(4, 3), nb.Tanh()]
    parallel = nb.Parallel(*branches, merge="concat", axis=1)
    config = parallel.config()
    assert config == {"branches": branches, "merge": "concat", "axis": 1}
    rebuilt = nb.Parallel.from_config(config)
    assert (rebuilt.branches, rebuilt.merge, rebuilt.axis) == (tuple(branches), "concat", 1)
    with pytest.raises(TypeError, match="Parallel's config"):
        nb.Parallel.from_config({"layers": branches})


# ------------------------------------------------------------------ errors


def test_residual_errors() -> None:
    with pytest.raises(TypeError, match="Residual: block must be a Module, got int"):
        nb.Residual(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Residual: the block Linear\(4→3\) maps 4 features "
                                         r"to 3; y = x \+ f\(x\) needs them equal"):
        nb.Residual(nb.Linear(4, 3))
    doubling = nb.Residual(nb.Parallel(nb.Tanh(), nb.Identity(), merge="concat"))
    x = np.ones((3, 5))
    message = (r"Residual: the block's output f\(x\) has shape \(3, 10\) but x has shape "
               r"\(3, 5\); y = x \+ f\(x\) needs equal shapes")
    with pytest.raises(ValueError, match=message):
        doubling(x)
    with pytest.raises(ValueError, match=message):
        doubling.forward(x)
    with pytest.raises(TypeError, match=r"Residual: takes one array .* a tuple of 2 inputs"):
        nb.Residual(nb.Tanh()).forward((x, x))


def test_parallel_construction_errors() -> None:
    with pytest.raises(ValueError, match="Parallel: needs at least one branch"):
        nb.Parallel()
    with pytest.raises(TypeError, match="Parallel: branch 1 must be a Module, got str"):
        nb.Parallel(nb.Tanh(), "tanh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Parallel: merge must be one of \('add', 'concat'\), "
                                         r"got 'mul'"):
        nb.Parallel(nb.Tanh(), merge="mul")
    for axis in ("1", 1.0, True, None):
        with pytest.raises(TypeError, match=f"Parallel: axis must be an integer, got {axis!r}"):
            nb.Parallel(nb.Tanh(), merge="concat", axis=axis)  # type: ignore[arg-type]
    assert nb.Parallel(nb.Tanh(), merge="concat", axis=np.int64(1)).axis == 1
    with pytest.raises(ValueError, match="Parallel: axis=1 applies to merge='concat' only"):
        nb.Parallel(nb.Tanh(), axis=1)
    with pytest.raises(ValueError, match="Parallel: branch 1 expects 5 input features but "
                                         "branch 0 expects 4"):
        nb.Parallel(nb.Linear(4, 3), nb.Sequential(nb.Tanh(), nb.Linear(5, 3)))
    with pytest.raises(ValueError, match=r"Parallel\(merge='add'\): branch 2 gives 2 features "
                                         "but branch 0 gives 3"):
        nb.Parallel(nb.Linear(4, 3), nb.Linear(4, 3), nb.Linear(4, 2))
    with pytest.raises(ValueError, match=r"Parallel: parameter '1\.weight' is numpy"):
        nb.Parallel(nb.Linear(4, 3, dtype="float32"), nb.Linear(4, 3, dtype="float64"))


def test_parallel_shape_errors_name_the_branch() -> None:
    x = np.ones((3, 4))
    uneven = nb.Parallel(nb.Tanh(), nb.Parallel(nb.Tanh(), nb.Identity(), merge="concat"))
    message = (r"Parallel\(merge='add'\): branch 1 gives shape \(3, 8\) but branch 0 gives "
               r"\(3, 4\); 'add' needs equal shapes")
    with pytest.raises(ValueError, match=message):
        uneven(x)
    with pytest.raises(ValueError, match=message):
        uneven.forward(x)
    channels = nb.Parallel(nb.Identity(), nb.Linear(5, 4, dtype="float64"), merge="concat",
                           axis=1)
    with pytest.raises(ValueError, match=r"Parallel\(merge='concat', axis=1\): branch 1 gives "
                                         r"shape \(2, 3, 4\) but branch 0 gives \(2, 3, 5\); "
                                         "they must agree on every axis but 1"):
        channels(np.ones((2, 3, 5)))
    with pytest.raises(ValueError, match=r"axis 2 is out of range for branch outputs of shape "
                                         r"\(3, 4\)"):
        nb.Parallel(nb.Tanh(), nb.Tanh(), merge="concat", axis=2)(x)


def test_sequential_checks_widths_through_combinators() -> None:
    # The widths a Parallel produces are known to Sequential's construction check ...
    nb.Sequential(nb.Linear(4, 6), nb.Parallel(nb.Linear(6, 3), nb.Linear(6, 3)), nb.Linear(3, 2))
    nb.Sequential(nb.Linear(4, 6), nb.Parallel(nb.Linear(6, 3), nb.Tanh(), merge="concat"),
                  nb.Linear(9, 2))
    with pytest.raises(ValueError, match=r"layer 2 Linear\(6→2\) expects 6 features, but layer "
                                         r"1 Parallel\("):
        nb.Sequential(nb.Linear(4, 6), nb.Parallel(nb.Linear(6, 3), nb.Linear(6, 3)),
                      nb.Linear(6, 2))
    # ... a Residual keeps the width ...
    with pytest.raises(ValueError, match=r"layer 2 Linear\(5→2\) expects 5 features, but layer "
                                         r"1 Residual"):
        nb.Sequential(nb.Linear(4, 6), nb.Residual(nb.Sequential(nb.Linear(6, 6))),
                      nb.Linear(5, 2))
    # ... and a concatenation whose width depends on the input's rank is not guessed.
    model = nb.Sequential(nb.Parallel(nb.Tanh(), nb.Identity(), merge="concat", axis=1),
                          nb.Linear(8, 2, dtype="float64"))
    assert model(np.ones((3, 4))).shape == (3, 2)
    assert model.forward(np.ones((3, 4)))[0].shape == (3, 2)


def test_input_shape_errors_name_the_path_through_combinators() -> None:
    model = nb.Sequential(
        nb.Parallel(nb.Tanh(), nb.Identity(), merge="concat"),
        nb.Residual(nb.Sequential(nb.Linear(7, 7, dtype="float64"))))
    message = (r"^Sequential: layer 1\.block\.0 Linear\(7→7\) expected input of shape "
               r"\(N, 7\), got \(3, 8\)$")
    with pytest.raises(ValueError, match=message):
        model(np.ones((3, 4)))
    with pytest.raises(ValueError, match=message):
        model.forward(np.ones((3, 4)))
    branches = nb.Parallel(nb.Tanh(), nb.Sequential(nb.Tanh(), nb.Linear(4, 2, dtype="float64")),
                           merge="concat")
    with pytest.raises(ValueError, match=r"^Parallel: layer 1\.1 Linear\(4→2\) expected input "
                                         r"of shape \(N, 4\), got \(3, 5\)$"):
        branches(np.ones((3, 5)))  # named by the outermost container it passed through


# ------------------------------------------------------------------ training


def test_a_residual_mlp_trains(case: Any) -> None:
    X, y = nb.datasets.make_blobs(n_samples=240, centers=3, seed=0)
    data = nb.batches(X, y, batch_size=32, seed=0, backend=case.backend, dtype=case.dtype_name)
    kit = _nb_kit(case)
    model = nb.Sequential(
        kit.Linear(2, 8), nb.Tanh(),
        nb.Residual(nb.Sequential(kit.Linear(8, 8), nb.Tanh(), kit.Linear(8, 8))),
        nb.Parallel(kit.Linear(8, 3), nb.Sequential(nb.Tanh(), kit.Linear(8, 3))),
    )
    loss_fn = nb.CrossEntropyLoss()
    before = nb.evaluate(model, loss_fn, data)["loss"]
    history = nb.fit(model, loss_fn, nb.SGD(model.parameters(), lr=0.05), data, epochs=6,
                     progress=False)
    assert history["loss"][-1] < 0.5 * before
    assert history.last["accuracy"] > 0.9
