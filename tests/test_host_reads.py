"""No host synchronisation in a training step, and the documented number where the loop logs.

Only the GPU-like test device can count host reads (``nnbackend.testing.count_host_reads``);
on the other rows of the matrix these tests are skipped with that reason, and on CuPy the same
code paths run with the same (zero) reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend.testing import count_host_reads

N, D_IN, D_HIDDEN, C = 6, 5, 7, 3


@pytest.fixture
def counted(case: Any) -> Any:
    if case.backend.name != "gpulike":
        pytest.skip("only the GPU-like test device counts host reads")
    return case


def _model(case: Any, *activations: nb.Module) -> nb.Sequential:
    layers: list[nb.Module] = [nb.Linear(D_IN, D_HIDDEN, seed=0, dtype=case.dtype_name)]
    layers += activations
    layers.append(nb.Linear(D_HIDDEN, C, seed=1, dtype=case.dtype_name))
    return nb.Sequential(*layers, backend=case.backend)


def _batch(case: Any, rng: np.random.Generator) -> tuple[Any, Any]:
    return case.asarray(rng.standard_normal((N, D_IN))), case.asarray(
        rng.integers(0, C, size=N), dtype=case.index_dtype_name
    )


ACTIVATIONS: dict[str, Callable[[], nb.Module]] = {
    "relu": nb.ReLU, "sigmoid": nb.Sigmoid, "tanh": nb.Tanh,
    "leaky_relu": lambda: nb.LeakyReLU(0.1), "softmax": nb.Softmax,
    "log_softmax": nb.LogSoftmax, "identity": nb.Identity,
}


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward_backward_and_inference_read_nothing(
    counted: Any, rng: np.random.Generator, activation: str
) -> None:
    model = _model(counted, ACTIVATIONS[activation]())
    x, _ = _batch(counted, rng)
    dy = counted.asarray(rng.standard_normal((N, C)))
    with count_host_reads() as reads:
        _, backprop = model.forward(x)
        backprop(dy)
        model(x)
    assert reads.count == 0, reads


LOSSES: dict[str, Callable[[Any, np.random.Generator], tuple[nb.Loss, Any]]] = {
    "cross_entropy_labels": lambda case, rng: (
        nb.CrossEntropyLoss(), case.asarray(rng.integers(0, C, N), dtype=case.index_dtype_name)),
    "cross_entropy_smoothing": lambda case, rng: (
        nb.CrossEntropyLoss(label_smoothing=0.1),
        case.asarray(rng.integers(0, C, N), dtype=case.index_dtype_name)),
    "cross_entropy_probabilities": lambda case, rng: (
        nb.CrossEntropyLoss(), case.asarray(rng.dirichlet(np.ones(C), N))),
    "mse": lambda case, rng: (nb.MSELoss(), case.asarray(rng.standard_normal((N, C)))),
    "mse_sum": lambda case, rng: (
        nb.MSELoss(reduction="sum"), case.asarray(rng.standard_normal((N, C)))),
    "bce": lambda case, rng: (
        nb.BCEWithLogitsLoss(), case.asarray(rng.integers(0, 2, (N, C)).astype(float))),
}


@pytest.mark.parametrize("loss", LOSSES)
def test_losses_read_nothing(counted: Any, rng: np.random.Generator, loss: str) -> None:
    loss_fn, target = LOSSES[loss](counted, rng)
    logits = counted.asarray(rng.standard_normal((N, C)))
    with count_host_reads() as reads:
        value, grad = loss_fn(logits, target)
    assert reads.count == 0, reads
    assert value.shape == () and grad.shape == (N, C)


OPTIMIZERS: dict[str, Callable[[Any], nb.Optimizer]] = {
    "sgd": lambda p: nb.SGD(p, lr=0.1),
    "nesterov_wd": lambda p: nb.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
    "adam_amsgrad": lambda p: nb.Adam(p, lr=1e-2, amsgrad=True, weight_decay=1e-3),
    "adamw": lambda p: nb.AdamW(p, lr=1e-2),
    "rmsprop_centered_momentum": lambda p: nb.RMSprop(p, lr=1e-2, centered=True, momentum=0.9),
}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_training_steps_read_nothing(
    counted: Any, rng: np.random.Generator, optimizer: str
) -> None:
    model = _model(counted, nb.ReLU())
    opt = OPTIMIZERS[optimizer](model.parameters())
    schedule = nb.optim.StepLR(opt, step_size=1, gamma=0.5)
    loss_fn = nb.CrossEntropyLoss()
    x, labels = _batch(counted, rng)
    with count_host_reads() as reads:
        for _ in range(3):  # the first step allocates state; later ones update it in place
            y, backprop = model.forward(x)
            _, dy = loss_fn(y, labels)
            opt.zero_grad()
            backprop(dy)
            nb.clip_grad_norm(model, 1.0)
            opt.step()
            schedule.step()
    assert reads.count == 0, reads
    # and it trained: the same loss read once, afterwards, went down
    first = float(loss_fn(_model(counted, nb.ReLU())(x), labels)[0])
    assert float(loss_fn(model(x), labels)[0]) < first


@pytest.mark.parametrize(("steps", "log_every"), [(10, 3), (4, 10)])
def test_fit_reads_the_loss_once_per_logging_window(
    counted: Any, rng: np.random.Generator, steps: int, log_every: int
) -> None:
    # with cross-entropy, fit tracks accuracy: one read of its total per epoch, besides the
    # ⌈steps / log_every⌉ windows of losses
    epochs, batch = 2, 4
    X = rng.standard_normal((steps * batch, D_IN))
    y = rng.integers(0, C, steps * batch)
    data = nb.batches(X, y, batch_size=batch, seed=0, backend=counted.backend,
                      dtype=counted.dtype_name)
    model = _model(counted, nb.ReLU())
    opt = nb.Adam(model.parameters(), lr=1e-3)
    with count_host_reads() as reads:
        history = nb.fit(model, nb.CrossEntropyLoss(), opt, data, epochs=epochs,
                         log_every=log_every, progress=False)
    assert reads.count == epochs * (math.ceil(steps / log_every) + 1), reads
    assert len(history) == epochs
