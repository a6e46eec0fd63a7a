"""Training fits on scikit-learn's digits, one per implementation, for ``test_digits.py``.

Every fit trains a 64-128-10 ReLU MLP with softmax cross-entropy and Adam (lr 1e-3, no weight
decay) for 50 epochs of mini-batches of 64, reshuffled each epoch from a seeded Generator, and
returns a ``predict(X) -> labels`` function. The split (75 % train, stratified) is seeded too.

Two nnbackend rows: ``nnbackend-numpy`` writes the step out against the public API (forward,
loss, backprop, Adam step: the library's math alone); ``nnbackend-fit`` hands the same model and
optimizer to ``nnbackend.fit`` over ``nnbackend.batches`` (the library's own loop, with its
default per-step training accuracy).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import nnbackend as nb
from nnbackend import bench
from nnbackend.datasets import load_digits

HIDDEN = 128
EPOCHS = 50
BATCH = 64
LR = 1e-3
SEED = 0

Predict = Callable[[np.ndarray], np.ndarray]
Fit = Callable[[np.ndarray, np.ndarray], Predict]


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, X_test, y_train, y_test): pixels / 16 in float32, int64 labels."""
    X, y = load_digits()
    return nb.train_test_split(X, y, test_size=0.25, seed=SEED, stratify=True)


def _batches(n: int) -> Iterator[np.ndarray]:
    """Index arrays of every mini-batch of every epoch, reshuffled each epoch."""
    rng = np.random.default_rng(SEED)
    for _ in range(EPOCHS):
        order = rng.permutation(n)
        for start in range(0, n, BATCH):
            yield order[start:start + BATCH]


def _spec(n_features: int, n_classes: int) -> bench.MLPSpec:
    return bench.MLPSpec("digits", (n_features, HIDDEN, n_classes), BATCH)


def _predict_nnbackend(model: nb.Module, be: nb.Backend) -> Predict:
    """``predict(X) -> labels`` of a trained nnbackend model: argmax of its logits."""

    def predict(X_new: np.ndarray) -> np.ndarray:
        return np.asarray(np.argmax(nb.to_numpy(model(be.asarray(X_new))), axis=1))

    return predict


def fit_nnbackend(backend: str) -> Fit:
    """nnbackend's own loop: forward, loss, backprop, Adam step (its public API only)."""
    be = nb.get_backend(backend)

    def fit(X: np.ndarray, y: np.ndarray) -> Predict:
        model = bench.build_model(_spec(X.shape[1], int(y.max()) + 1), be, seed=SEED)
        opt = nb.Adam(model.parameters(), lr=LR)
        loss_fn = nb.CrossEntropyLoss()
        for idx in _batches(len(X)):
            xb, yb = be.asarray(X[idx]), be.asarray(y[idx])
            opt.zero_grad()
            logits, backprop = model.forward(xb)
            _, dlogits = loss_fn(logits, yb)
            backprop(dlogits)
            opt.step()
        be.synchronize()
        return _predict_nnbackend(model, be)

    return fit


def fit_nnbackend_loop(backend: str) -> Fit:
    """The same model and optimizer trained by ``nnbackend.fit`` over ``nnbackend.batches``."""
    be = nb.get_backend(backend)

    def fit(X: np.ndarray, y: np.ndarray) -> Predict:
        model = bench.build_model(_spec(X.shape[1], int(y.max()) + 1), be, seed=SEED)
        opt = nb.Adam(model.parameters(), lr=LR)
        train = nb.batches(X, y, batch_size=BATCH, seed=SEED, backend=be)
        nb.fit(model, nb.CrossEntropyLoss(), opt, train, epochs=EPOCHS, progress=False)
        be.synchronize()
        return _predict_nnbackend(model, be)

    return fit


def fit_floor(X: np.ndarray, y: np.ndarray) -> Predict:
    """The hand-written NumPy MLP, from the same initial weights as nnbackend's."""
    model = bench.build_model(_spec(X.shape[1], int(y.max()) + 1), "numpy", seed=SEED)
    floor = bench.NumpyMLP(bench.host_parameters(model), optimizer="adam", lr=LR)
    for idx in _batches(len(X)):
        floor.train_step(X[idx], y[idx])

    def predict(X_new: np.ndarray) -> np.ndarray:
        return np.asarray(np.argmax(floor.forward(X_new), axis=1))

    return predict


def fit_torch(device: str) -> Fit:
    """PyTorch eager with torch.optim.Adam, from the same initial weights as nnbackend's."""
    torch = importlib.import_module("torch")
    functional = importlib.import_module("torch.nn.functional")
    dev = torch.device(device)

    def fit(X: np.ndarray, y: np.ndarray) -> Predict:
        model = bench.build_torch_model(_spec(X.shape[1], int(y.max()) + 1), device, seed=SEED)
        opt = torch.optim.Adam(model.parameters(), lr=LR)
        for idx in _batches(len(X)):
            xb = torch.from_numpy(X[idx]).to(dev)
            yb = torch.from_numpy(y[idx]).to(dev)
            opt.zero_grad()
            functional.cross_entropy(model(xb), yb).backward()
            opt.step()
        nb.get_backend("torch", device=device).synchronize()

        def predict(X_new: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                logits = model(torch.from_numpy(X_new).to(dev))
            return np.asarray(logits.argmax(dim=1).cpu().numpy())

        return predict

    return fit


def fit_sklearn(X: np.ndarray, y: np.ndarray) -> Predict:
    """scikit-learn's MLPClassifier with the same architecture, optimizer and schedule."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=(HIDDEN,), activation="relu", solver="adam", batch_size=BATCH,
        max_iter=EPOCHS, learning_rate_init=LR, alpha=0.0, tol=0.0, n_iter_no_change=10**9,
        shuffle=True, random_state=SEED,
    )
    with warnings.catch_warnings():  # max_iter is the schedule here, not a failure
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    predict: Any = clf.predict
    return predict  # type: ignore[no-any-return]


def get_fit(name: str) -> Fit:
    """The fit of ``name``; raises ``nb.BackendUnavailableError`` where it cannot run."""
    if name == "sklearn":
        return fit_sklearn
    if name == "nnbackend-fit":
        return fit_nnbackend_loop("numpy")
    target = bench.get_target(name)
    if target.impl == "nnbackend":
        return fit_nnbackend(target.backend)
    if target.impl == "torch":
        return fit_torch(target.device)
    return fit_floor
