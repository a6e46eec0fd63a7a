"""Writing in place where it is safe (``nnbackend.layers.module``, "Writing in place"): which
layers a Sequential tells that they own their input or their dy, that the layers declaring
``hands_over_output`` / ``hands_over_input_grad`` return arrays nothing else holds, and that
the in-place functional paths give the values of the others, on the whole backend matrix.
(The values of whole models written in place, against PyTorch autograd: test_combinators's
``written_in_place``.)"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from _compare import close

import nnbackend as nb
from nnbackend import functional as F
from nnbackend.functional.normalization import batch_norm_forward
from nnbackend.layers import Context, Module


class Probe(Module):
    """y = x; records the context of each forward (``forward_pass`` and ``infer``)."""

    takes_ownership = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, bool, bool, bool]] = []

    def forward_pass(self, x: Any, ctx: Context) -> tuple[Any, Any]:
        self.seen.append(("train", ctx.input_grad, ctx.owns_input, ctx.owns_grad))
        return x, lambda dy: dy

    def infer(self, x: Any, ctx: Context) -> Any:
        self.seen.append(("infer", ctx.input_grad, ctx.owns_input, ctx.owns_grad))
        return x


class Unaware(Probe):
    """A layer that does not take ownership: never told it owns anything."""

    takes_ownership = False


def _linear(case: Any, n: int = 4) -> nb.Linear:
    return nb.Linear(n, n, dtype=case.dtype_name, backend=case.backend, seed=1)


def _run(model: nb.Module, case: Any, *, input_grad: bool = True) -> None:
    x = case.asarray(np.random.default_rng(0).standard_normal((3, 4)))
    y, backprop = model.forward(x, input_grad=input_grad)
    backprop(case.asarray(np.ones(tuple(y.shape))))
    model(x)


def test_a_layer_owns_what_its_neighbours_hand_over(case: Any) -> None:
    # Between two Linears (new output; new ∂L/∂x): both; the caller's x and dy: neither.
    middle, first, last = Probe(), Probe(), Probe()
    _run(nb.Sequential(first, _linear(case), middle, _linear(case), last), case)
    assert middle.seen == [("train", True, True, True), ("infer", False, True, True)]
    assert first.seen == [("train", True, False, True), ("infer", False, False, True)]
    assert last.seen == [("train", True, True, False), ("infer", False, True, False)]


def test_what_a_layer_keeps_or_shares_is_not_handed_over(case: Any) -> None:
    # A ReLU keeps its output (its backward reads it); a Tanh declares nothing; a Residual's
    # block shares x with the skip and dy with it; a layer that does not take ownership is
    # never told.
    after_relu, in_block, unaware = Probe(), Probe(), Unaware()
    model = nb.Sequential(_linear(case), nb.ReLU(), after_relu, nb.Tanh(),
                          nb.Residual(nb.Sequential(in_block, _linear(case))),
                          _linear(case), unaware, _linear(case))
    _run(model, case)
    assert after_relu.seen[0] == ("train", True, False, False)
    assert in_block.seen[0] == ("train", True, False, True)
    assert unaware.seen[0] == ("train", True, False, False)


def test_a_nested_sequential_passes_ownership_to_its_ends(case: Any) -> None:
    head, tail = Probe(), Probe()
    model = nb.Sequential(_linear(case), nb.Sequential(head, nb.Tanh(), tail), _linear(case))
    _run(model, case)
    assert head.seen[0] == ("train", True, True, False)
    assert tail.seen[0] == ("train", True, False, True)
    inner = model[1]
    assert inner.hands_over_output is False and inner.hands_over_input_grad is False
    assert nb.Sequential(_linear(case), nb.ReLU(), _linear(case)).hands_over_output is True


def test_leading_layers_run_by_inference_keep_their_contexts(case: Any) -> None:
    # Without ∂L/∂x the Probe in front of the first Linear runs by infer (no backward): its
    # context says what its position allows, as in a forward pass.
    lead, middle = Probe(), Probe()
    _run(nb.Sequential(lead, _linear(case), middle, _linear(case)), case, input_grad=False)
    assert lead.seen[0] == ("infer", False, False, True)
    assert middle.seen[0] == ("train", True, True, True)


def test_contexts_with_ownership_are_cached_and_keep_it(case: Any) -> None:
    xp = case.xp
    ctx = Context.of(xp, False, True, False)
    assert Context.of(xp, False, True, False) is ctx
    assert (ctx.input_grad, ctx.owns_input, ctx.owns_grad) == (False, True, False)
    wanting = ctx.with_input_grad(True)
    assert wanting is ctx.wanting_input_grad
    assert (wanting.input_grad, wanting.owns_input, wanting.owns_grad) == (True, True, False)
    plain = Context.of(xp, True)
    assert not plain.owns_input and not plain.owns_grad and plain is not wanting
    assert "owns_input=True" in repr(ctx) and "owns" not in repr(plain)


# ------------------------------------------------------------------ the declarations hold


def _conv(case: Any) -> nb.Module:
    return nb.Conv2d(2, 3, 3, padding=1, dtype=case.dtype_name, backend=case.backend, seed=2)


def _batch_norm(case: Any) -> nb.Module:
    return nb.BatchNorm2d(2, dtype=case.dtype_name, backend=case.backend)


DECLARED = {
    "Linear": (lambda case: nb.Linear(5, 4, dtype=case.dtype_name, backend=case.backend,
                                      seed=3), (3, 2, 5)),
    "Conv2d": (_conv, (2, 2, 5, 5)),
    "Conv1d": (lambda case: nb.Conv1d(2, 3, 3, stride=2, dtype=case.dtype_name,
                                      backend=case.backend, seed=4), (2, 2, 7)),
    "BatchNorm2d": (_batch_norm, (3, 2, 4, 4)),
    "Residual": (lambda case: nb.Residual(nb.Sequential(_conv(case), nb.ReLU(),
                                                        nb.Conv2d(3, 2, 1, dtype=case.dtype_name,
                                                                  backend=case.backend, seed=5))),
                 (2, 2, 5, 5)),
    "ReLU": (lambda case: nb.ReLU(), (3, 4)),
    "MaxPool2d": (lambda case: nb.MaxPool2d(3, stride=2, padding=1), (2, 2, 7, 6)),
    "MaxPool2d-tiled": (lambda case: nb.MaxPool2d(2), (2, 3, 4, 6)),
    "MaxPool1d": (lambda case: nb.MaxPool1d(2, stride=1), (2, 3, 5)),
}
KEEPS_OUTPUT = {"ReLU", "MaxPool2d", "MaxPool2d-tiled", "MaxPool1d"}  # their backward reads y


def _scribble(a: Any, value: float) -> None:
    """a[...] = value where the library writes in place (JAX's arrays cannot be written: what
    they hand over is safe by construction)."""
    with contextlib.suppress(TypeError):
        a[...] = value


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", DECLARED)
def test_declared_hand_overs_are_arrays_nothing_else_holds(case: Any, name: str,
                                                           training: bool) -> None:
    """Writing into what a layer hands over (its output before its backward runs, its ∂L/∂x
    after) changes nothing: not its backward's results, nor the input, dy, the parameters or
    their gradients, against a run where nobody wrote."""
    build, shape = DECLARED[name]
    rng = np.random.default_rng(11)
    x_host = rng.standard_normal(shape).astype(case.dtype_name)
    dy_host = None
    runs = []
    for scribble in (False, True):
        layer = build(case).train(training)
        x = case.asarray(x_host.copy())
        y, backprop = layer.forward(x, input_grad=True)
        if dy_host is None:
            dy_host = rng.standard_normal(tuple(y.shape)).astype(case.dtype_name)
        dy = case.asarray(dy_host.copy())
        if scribble and layer.hands_over_output:
            _scribble(y, 7.0)
        dx = backprop(dy)
        dx_host = nb.to_numpy(dx).copy()
        if scribble and layer.hands_over_input_grad:
            _scribble(dx, -3.0)
        runs.append({"dx": dx_host, "x": nb.to_numpy(x), "dy": nb.to_numpy(dy),
                     **{f"{n}": nb.to_numpy(p.data) for n, p in layer.named_parameters()},
                     **{f"{n}.grad": nb.to_numpy(p.grad) for n, p in layer.named_parameters()}})
    plain, scribbled = runs
    np.testing.assert_array_equal(plain["x"], x_host)
    np.testing.assert_array_equal(plain["dy"], dy_host)
    assert set(plain) == set(scribbled)
    for key in plain:
        np.testing.assert_array_equal(scribbled[key], plain[key], err_msg=f"{name}: {key}")
    assert layer.hands_over_output == (name not in KEEPS_OUTPUT)
    assert layer.hands_over_input_grad


# ------------------------------------------------------------------ the functional paths


def _writes_in_place(case: Any) -> bool:
    return case.backend.name == "numpy"  # nnbackend._native's in-place ReLU and mask


def test_relu_and_its_backward_overwrite_only_when_asked(case: Any) -> None:
    rng = np.random.default_rng(5)
    x_host = rng.standard_normal((4, 6)).astype(case.dtype_name)
    x_host[0, :3] = 0.0  # the subgradient at 0 is 0
    dy_host = rng.standard_normal((4, 6)).astype(case.dtype_name)
    x, dy = case.asarray(x_host.copy()), case.asarray(dy_host.copy())
    y = F.relu(x)
    np.testing.assert_array_equal(nb.to_numpy(x), x_host)
    dx = F.relu_backward(dy, y)
    np.testing.assert_array_equal(nb.to_numpy(dy), dy_host)
    y_in_place = F.relu(x, overwrite=True)
    dx_in_place = F.relu_backward(dy, y_in_place, overwrite=True)
    np.testing.assert_array_equal(nb.to_numpy(y_in_place), nb.to_numpy(y))
    np.testing.assert_array_equal(nb.to_numpy(dx_in_place), nb.to_numpy(dx))
    np.testing.assert_array_equal(nb.to_numpy(y), np.maximum(x_host, 0.0))
    np.testing.assert_array_equal(nb.to_numpy(dx), dy_host * (x_host > 0.0))
    assert (y_in_place is x) == _writes_in_place(case)
    assert (dx_in_place is dy) == _writes_in_place(case)
    case.check_placement(y_in_place)
    case.check_placement(dx_in_place)


@pytest.mark.parametrize("training", [True, False], ids=["batch-stats", "running-stats"])
def test_batch_norm_overwriting_its_input_gives_the_same_values(case: Any,
                                                               training: bool) -> None:
    rng = np.random.default_rng(6)
    x_host = rng.standard_normal((5, 3, 4)).astype(case.dtype_name)
    stats = [case.asarray(rng.standard_normal(3) / 4), case.asarray(1.0 + rng.random(3))]
    gamma, beta = case.asarray(1.0 + rng.standard_normal(3) / 4), case.asarray(rng.random(3))
    results = []
    for overwrite in (False, True):
        for save in (True, False):
            x = case.asarray(x_host.copy())  # (NumPy's asarray shares the host's memory)
            out = batch_norm_forward(x, *stats, gamma, beta, training, save=save,
                                     overwrite=overwrite)
            results.append((nb.to_numpy(out.y), nb.to_numpy(out.running_mean),
                            nb.to_numpy(out.running_var)))
            if not overwrite:
                np.testing.assert_array_equal(nb.to_numpy(x), x_host)
            else:
                spent = training or not save  # x − μ, or the unsaved y, in x's storage
                if not spent:
                    np.testing.assert_array_equal(nb.to_numpy(x), x_host)
                elif case.backend.name != "jax":  # JAX rebinds: x stays as it was
                    assert not np.array_equal(nb.to_numpy(x), x_host)
    for got in results[1:]:
        for a, b in zip(got, results[0], strict=True):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ a residual block, steps


def test_a_residual_block_in_place_matches_pytorch_step_after_step(
        case: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The residual block of the benchmark (conv-BN-ReLU-conv-BN, the skip, a ReLU), its columns
    rebuilt in blocks from workspace buffers as on the benchmark's sizes: three training steps'
    outputs, ∂L/∂x and gradients against PyTorch autograd in float64, with batch statistics and
    running statistics moving on both sides, and every array the caller held left intact."""
    torch = pytest.importorskip("torch")
    from test_combinators import TorchResidual

    from nnbackend.functional import conv as C

    monkeypatch.setattr(C, "KEPT_COLUMNS_BYTES", 0)

    def block(k: Any, conv: Any, bn: Any) -> Any:
        return k.Sequential(k.Residual(k.Sequential(conv(1), bn(), k.ReLU(), conv(2), bn())),
                            k.ReLU())

    def conv(seed: int) -> nb.Conv2d:
        # no bias right before a batch norm (as ResNet's): its gradient is 0 up to rounding
        return nb.Conv2d(3, 3, 3, padding=1, bias=False, dtype=case.dtype_name,
                         backend=case.backend, seed=seed)

    model = block(nb, conv, lambda: nb.BatchNorm2d(3, dtype=case.dtype_name,
                                                   backend=case.backend))

    tk = SimpleNamespace(Sequential=torch.nn.Sequential, Residual=TorchResidual,
                         ReLU=torch.nn.ReLU)
    twin = block(tk, lambda seed: torch.nn.Conv2d(3, 3, 3, padding=1, bias=False,
                                                  dtype=torch.float64),
                 lambda: torch.nn.BatchNorm2d(3, dtype=torch.float64))
    twin.load_state_dict({k: torch.tensor(nb.to_numpy(v).astype(np.float64))
                          for k, v in model.state_dict().items()})
    rng = np.random.default_rng(21)
    held = []  # what the caller keeps of each step: it is never written afterwards
    for step in range(3):
        x_host = rng.standard_normal((4, 3, 5, 6)).astype(case.dtype_name)
        dy_host = rng.standard_normal((4, 3, 5, 6)).astype(case.dtype_name)
        model.zero_grad()
        y, backprop = model.forward(case.asarray(x_host.copy()), input_grad=True)
        dy = case.asarray(dy_host.copy())
        dx = backprop(dy)
        held += [(y, nb.to_numpy(y).copy()), (dy, dy_host), (dx, nb.to_numpy(dx).copy())]
        twin.zero_grad()
        tx = torch.tensor(x_host.astype(np.float64), requires_grad=True)
        ty = twin(tx)
        ty.backward(torch.tensor(dy_host.astype(np.float64)))
        pairs = [("y", y, ty.detach().numpy()), ("dx", dx, tx.grad.numpy())]
        grads = dict(twin.named_parameters())
        pairs += [(n, p.grad, grads[n].grad.numpy()) for n, p in model.named_parameters()]
        buffers = dict(twin.named_buffers())
        pairs += [(n, b, buffers[n].numpy()) for n, b in model.named_buffers()]
        for what, got, want in pairs:
            close(got, want, case, f"step {step}: {what}")
    for array, values in held:
        np.testing.assert_array_equal(nb.to_numpy(array), values)


# ------------------------------------------------------------------ subclasses, copies


class KeepingLinear(nb.Linear):
    """A Linear that keeps its output (a user's logging layer): it must not hand it over."""

    def forward_pass(self, x: Any, ctx: Context) -> tuple[Any, Any]:
        z, backprop = super().forward_pass(x, ctx)
        self.last_output = z
        return z, backprop


class ClippedReLU(nb.ReLU):
    """min(max(x, 0), 1): a ReLU subclass with a function of its own."""

    _fn = staticmethod(lambda x, xp: xp.clip(F.relu(x, xp=xp), 0.0, 1.0))
    _backward = staticmethod(lambda dy, y, xp: dy * xp.astype((y > 0.0) & (y < 1.0), dy.dtype))


def test_a_subclass_with_its_own_forward_declares_nothing(case: Any) -> None:
    assert not KeepingLinear.hands_over_output and not KeepingLinear.hands_over_input_grad
    assert not ClippedReLU.takes_ownership and not ClippedReLU.hands_over_input_grad
    assert nb.Linear.hands_over_output and nb.ReLU.takes_ownership  # the originals keep theirs
    keeping = KeepingLinear(4, 4, dtype=case.dtype_name, backend=case.backend, seed=1)
    clipped = ClippedReLU()
    model = nb.Sequential(keeping, nb.ReLU(), _linear(case), clipped, _linear(case))
    x = case.asarray(3.0 * np.random.default_rng(3).standard_normal((5, 4)))
    y, backprop = model.forward(x, input_grad=True)
    kept = nb.to_numpy(keeping.last_output)
    assert (kept < 0.0).any()  # the ReLU after it did not clip it in place
    z = nb.to_numpy(keeping(x))
    np.testing.assert_allclose(kept, z, rtol=1e-6)
    backprop(case.asarray(np.ones(tuple(y.shape))))
    assert float(nb.to_numpy(clipped(case.asarray(np.array([[-1.0, 0.5, 3.0, 2.0]])))).max()) \
        == 1.0  # its own function, not the ReLU's


def test_a_sequential_that_ran_can_be_copied_and_pickled(case: Any) -> None:
    import copy
    import pickle

    model = nb.Sequential(_linear(case), nb.ReLU(), _linear(case))
    x = case.asarray(np.random.default_rng(4).standard_normal((3, 4)))
    _, backprop = model.forward(x, input_grad=True)
    backprop(case.asarray(np.ones((3, 4))))
    twin = copy.deepcopy(model)
    np.testing.assert_array_equal(nb.to_numpy(twin(x)), nb.to_numpy(model(x)))
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(nb.to_numpy(again(x)), nb.to_numpy(model(x)))
