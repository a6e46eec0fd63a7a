"""A multi-layer network's output, loss, input gradient and every parameter gradient against
PyTorch autograd (float64), for each loss and each activation, on every backend of the matrix.

The torch network is built with the very weights nnbackend drew (copied through
``nnbackend.to_numpy``); float64 backends must agree to a relative error below 1e-10, float32
backends (whose inputs and weights torch sees exactly, upcast) to float32 rounding.
"""

from __future__ import annotations

import itertools
from typing import Any

import _reference as ref
import numpy as np
import pytest

import nnbackend as nb

torch = pytest.importorskip("torch")

N, WIDTHS = 6, (5, 6, 7, 4)

ACTIVATIONS = {
    "relu": (nb.ReLU, torch.nn.ReLU),
    "sigmoid": (nb.Sigmoid, torch.nn.Sigmoid),
    "tanh": (nb.Tanh, torch.nn.Tanh),
    "leaky_relu": (lambda: nb.LeakyReLU(0.1), lambda: torch.nn.LeakyReLU(0.1)),
    "softmax": (nb.Softmax, lambda: torch.nn.Softmax(dim=-1)),
    "log_softmax": (nb.LogSoftmax, lambda: torch.nn.LogSoftmax(dim=-1)),
    "identity": (nb.Identity, torch.nn.Identity),
}

LOSSES = {
    "mse": (lambda: nb.MSELoss(), lambda: torch.nn.MSELoss(), "values"),
    "mse-sum": (lambda: nb.MSELoss(reduction="sum"),
                lambda: torch.nn.MSELoss(reduction="sum"), "values"),
    "ce-labels": (lambda: nb.CrossEntropyLoss(), lambda: torch.nn.CrossEntropyLoss(), "labels"),
    "ce-labels-smoothing": (lambda: nb.CrossEntropyLoss(label_smoothing=0.15),
                            lambda: torch.nn.CrossEntropyLoss(label_smoothing=0.15), "labels"),
    "ce-probabilities": (lambda: nb.CrossEntropyLoss(), lambda: torch.nn.CrossEntropyLoss(),
                         "probabilities"),
    "bce-with-logits": (lambda: nb.BCEWithLogitsLoss(), lambda: torch.nn.BCEWithLogitsLoss(),
                        "probabilities"),
}


def _tolerance(case: Any) -> float:
    return 1e-10 if case.is_float64 else 1e-5


def _targets(kind: str, rng: np.random.Generator, case: Any) -> tuple[Any, Any]:
    """The target on the case's backend and as a torch tensor."""
    classes = WIDTHS[-1]
    if kind == "labels":
        labels = rng.integers(0, classes, size=N)
        return case.asarray(labels, dtype="int64"), torch.tensor(labels, dtype=torch.int64)
    if kind == "values":
        host = rng.standard_normal((N, classes))
    else:
        host = ref.softmax(rng.standard_normal((N, classes)))
    host = host.astype(case.dtype_name)
    return case.asarray(host), torch.tensor(host.astype(np.float64))


def _torch_twin(model: nb.Sequential, act: str) -> Any:
    """The same network in torch float64, with nnbackend's weights."""
    layers = []
    for layer in model:
        if isinstance(layer, nb.Linear):
            twin = torch.nn.Linear(layer.in_features, layer.out_features, dtype=torch.float64)
            with torch.no_grad():
                twin.weight.copy_(torch.tensor(nb.to_numpy(layer.weight.data).astype(np.float64)))
                twin.bias.copy_(torch.tensor(nb.to_numpy(layer.bias.data).astype(np.float64)))
            layers.append(twin)
        else:
            layers.append(ACTIVATIONS[act][1]())
    return torch.nn.Sequential(*layers)


def _network(case: Any, act: str) -> nb.Sequential:
    make = ACTIVATIONS[act][0]
    linears = [nb.Linear(a, b, dtype=case.dtype_name, backend=case.backend, seed=i)
               for i, (a, b) in enumerate(itertools.pairwise(WIDTHS))]
    rng = np.random.default_rng(100)
    for layer in linears:  # non-zero biases, so that their gradients mean something
        layer.bias.data = case.asarray(rng.standard_normal(layer.out_features) * 0.5)
    return nb.Sequential(linears[0], make(), linears[1], make(), linears[2])


@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_network_matches_torch_autograd(case: Any, act: str, loss_name: str) -> None:
    make_loss, make_torch_loss, target_kind = LOSSES[loss_name]
    rng = np.random.default_rng(7)
    x_host = rng.standard_normal((N, WIDTHS[0])).astype(case.dtype_name)
    target, t_target = _targets(target_kind, rng, case)
    model = _network(case, act)
    twin = _torch_twin(model, act)

    x = case.asarray(x_host)
    y, backprop = model.forward(x, input_grad=True)
    loss, dy = make_loss()(y, target)
    dx = backprop(dy)

    tx = torch.tensor(x_host.astype(np.float64), requires_grad=True)
    ty = twin(tx)
    t_loss = make_torch_loss()(ty, t_target)
    t_loss.backward()

    # Placement first: everything stays on the input's namespace, device and dtype.
    for array in (y, loss, dy, dx):
        case.check_placement(array)
    assert loss.ndim == 0
    for p in model.parameters():
        case.check_placement(p.grad)

    tol = _tolerance(case)
    pairs = [("output", y, ty.detach().numpy()), ("loss", loss, t_loss.detach().numpy()),
             ("dx", dx, tx.grad.numpy())]
    torch_params = [q for m in twin if isinstance(m, torch.nn.Linear) for q in (m.weight, m.bias)]
    for (name, p), q in zip(model.named_parameters(), torch_params, strict=True):
        pairs.append((name, p.grad, q.grad.numpy()))
    assert len(pairs) == 3 + 6
    for name, got, want in pairs:
        err = ref.rel_err(nb.to_numpy(got), want)
        assert err < tol, f"{name}: relative error {err:.3g} >= {tol:g}"

    # Inference gives the training forward's output.
    np.testing.assert_array_equal(nb.to_numpy(model(x)), nb.to_numpy(y))
