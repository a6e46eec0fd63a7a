"""Flatten and Unflatten: PyTorch's shapes, reprs and errors; the backward reshapes ∂L/∂y back;
in Sequential (first layer, Sequential's width check), described and rebuilt, on every row."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

import nnbackend as nb
from nnbackend.layers.shape import LayerInputError
from nnbackend.testing import count_host_reads

SHAPES: list[tuple[Any, tuple[int, ...]]] = [
    ((), (2, 3, 4, 5)),
    ((0, -1), (2, 3, 4)),
    ((2, 3), (2, 3, 4, 5)),
    ((-3, -2), (2, 3, 4, 5)),
    ((1, 1), (2, 3, 4)),
    ((0,), (6,)),
]


@pytest.mark.parametrize(("dims", "shape"), SHAPES, ids=[str(d) for d, _ in SHAPES])
def test_flatten_matches_torch_and_reshapes_the_gradient_back(case: Any, dims: Any,
                                                             shape: Any) -> None:
    layer, reference = nb.Flatten(*dims), torch.nn.Flatten(*dims)
    assert repr(layer) == repr(reference)
    host = np.random.default_rng(0).standard_normal(shape)
    want = reference(torch.tensor(host)).numpy()
    x = case.asarray(host)
    dy_host = np.arange(want.size, dtype=float).reshape(want.shape)
    with count_host_reads() as reads:
        y, backprop = layer.forward(x)
        dx = backprop(case.asarray(dy_host))
        inferred = layer(x)
        y0, none = layer.forward(x, input_grad=False)
    if case.backend.name == "gpulike":
        assert reads.count == 0, reads
    assert none(case.asarray(dy_host)) is None
    for got in (y, inferred, y0):
        case.check_placement(got)
        np.testing.assert_array_equal(case.backend.to_numpy(got), want.astype(case.dtype_name))
    case.check_placement(dx)
    np.testing.assert_array_equal(case.backend.to_numpy(dx),
                                  dy_host.reshape(shape).astype(case.dtype_name))
    if case.is_float64:
        nb.gradcheck(layer, x)


@pytest.mark.parametrize(("dim", "sizes", "shape"), [
    (1, (2, 5), (3, 10)), (-1, (2, -1), (3, 4, 6)), (0, (1, 2), (2, 3)), (1, (3,), (2, 3)),
])
def test_unflatten_matches_torch_and_reshapes_the_gradient_back(case: Any, dim: int,
                                                               sizes: Any, shape: Any) -> None:
    layer, reference = nb.Unflatten(dim, sizes), torch.nn.Unflatten(dim, sizes)
    assert repr(layer) == repr(reference)
    host = np.random.default_rng(1).standard_normal(shape)
    want = reference(torch.tensor(host)).numpy()
    x = case.asarray(host)
    y, backprop = layer.forward(x)
    np.testing.assert_array_equal(case.backend.to_numpy(y), want.astype(case.dtype_name))
    dy = np.arange(want.size, dtype=float).reshape(want.shape)
    np.testing.assert_array_equal(case.backend.to_numpy(backprop(case.asarray(dy))),
                                  dy.reshape(shape).astype(case.dtype_name))
    np.testing.assert_array_equal(case.backend.to_numpy(layer(x)), want.astype(case.dtype_name))


def test_flatten_between_layers_matches_pytorch(case: Any) -> None:
    """Linear on the last axis of (N, 4, 5), Flatten, Linear(20, 3): Sequential's width check
    lets the changed width through; forward and both weights' gradients as torch.nn's."""
    model = nb.Sequential(nb.Linear(5, 5, seed=0, dtype=case.dtype_name), nb.Flatten(),
                          nb.Linear(20, 3, seed=1, dtype=case.dtype_name), nb.Unflatten(1, (3, 1)),
                          backend=case.backend)
    reference = torch.nn.Sequential(torch.nn.Linear(5, 5), torch.nn.Flatten(),
                                    torch.nn.Linear(20, 3), torch.nn.Unflatten(1, (3, 1))).double()
    reference.load_state_dict({name: torch.tensor(case.backend.to_numpy(p.data).astype(float))
                               for name, p in model.named_parameters()})
    rng = np.random.default_rng(2)
    host = rng.standard_normal((2, 4, 5)).astype(case.dtype_name).astype(float)
    dy = rng.standard_normal((2, 3, 1)).astype(case.dtype_name).astype(float)
    out = reference(torch.tensor(host))
    out.backward(torch.tensor(dy))
    y, backprop = model.forward(case.asarray(host))
    tol = {"rtol": 1e-10, "atol": 1e-12} if case.is_float64 else {"rtol": 2e-5, "atol": 2e-6}
    np.testing.assert_allclose(case.backend.to_numpy(y), out.detach().numpy(), **tol)
    assert backprop(case.asarray(dy)) is None
    for name, p in model.named_parameters():
        want = reference.get_parameter(name).grad
        assert p.grad is not None and want is not None
        np.testing.assert_allclose(case.backend.to_numpy(p.grad), want.numpy(), **tol)


def test_flatten_first_in_a_model_runs_by_inference() -> None:
    model = nb.Sequential(nb.Flatten(), nb.Linear(12, 2, seed=0, dtype="float64"))
    x = np.ones((3, 3, 4))
    y, backprop = model.forward(x)
    assert y.shape == (3, 2) and backprop(np.ones((3, 2))) is None
    _, backprop = model.forward(x, input_grad=True)
    assert backprop(np.ones((3, 2))).shape == (3, 3, 4)


def test_a_flatten_that_keeps_the_last_axis_still_has_its_width_checked() -> None:
    with pytest.raises(ValueError, match=r"layer 2 Linear\(4→2\) expects 4 features, but layer "
                                         r"0 Linear\(3→5\) produces 5"):
        nb.Sequential(nb.Linear(3, 5), nb.Flatten(0, -2), nb.Linear(4, 2))


def test_described_and_rebuilt() -> None:
    model = nb.Sequential(nb.Flatten(2, -1), nb.Unflatten(-1, (2, -1)))
    rebuilt = nb.layers.build(json.loads(json.dumps(nb.layers.describe(model))))
    assert repr(rebuilt) == repr(model)
    x = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(rebuilt(x), model(x))
    assert rebuilt(x).shape == (2, 3, 2, 2)


@pytest.mark.parametrize(("layer", "shape", "match"), [
    (nb.Flatten(), (5,), r"Flatten\(start_dim=1, end_dim=-1\): start_dim=1 is out of range for "
                         r"an input of shape \(5,\) \(rank 1\)"),
    (nb.Flatten(0, 3), (2, 3), r"Flatten\(start_dim=0, end_dim=3\): end_dim=3 is out of range"),
    (nb.Flatten(2, 1), (2, 3, 4), r"start_dim=2 comes after end_dim=1 for an input of shape "
                                  r"\(2, 3, 4\)"),
    (nb.Unflatten(1, (2, 5)), (3, 9), r"Unflatten\(dim=1, unflattened_size=\(2, 5\)\): axis 1 of "
                                      r"input shape \(3, 9\) has size 9, but unflattened_size "
                                      r"\(2, 5\) holds 10"),
    (nb.Unflatten(1, (4, -1)), (3, 9), r"axis 1 of size 9 of input shape \(3, 9\) cannot be split "
                                       r"into \(4, -1\)"),
    (nb.Unflatten(2, (1, 1)), (3, 9), r"dim=2 is out of range for an input of shape \(3, 9\)"),
])
def test_bad_inputs_name_the_layer_and_the_shapes(layer: nb.Module, shape: Any, match: str
                                                  ) -> None:
    x = np.ones(shape)
    with pytest.raises(LayerInputError, match=match):
        layer.forward(x)
    with pytest.raises(LayerInputError, match=match):
        layer(x)
    with pytest.raises(LayerInputError, match=r"^Sequential: layer 1 .*" + match):
        nb.Sequential(nb.Identity(), layer).forward(x)


@pytest.mark.parametrize(("make", "error", "match"), [
    (lambda: nb.Flatten(1.5), TypeError, r"Flatten: start_dim must be an int, got 1\.5"),
    (lambda: nb.Flatten(1, True), TypeError, r"Flatten: end_dim must be an int"),
    (lambda: nb.Unflatten(1, 5), TypeError, r"Unflatten: unflattened_size must be a tuple of "
                                            r"ints, got 5"),
    (lambda: nb.Unflatten(1, (2, -1, -1)), ValueError, r"at most one -1"),
    (lambda: nb.Unflatten(1, ()), ValueError, r"non-empty tuple"),
    (lambda: nb.Unflatten(1, (2, -3)), ValueError, r"non-negative ints"),
])
def test_bad_arguments_are_refused(make: Any, error: Any, match: str) -> None:
    with pytest.raises(error, match=match):
        make()
