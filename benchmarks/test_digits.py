"""The digits task end to end: fit time and test accuracy of nnbackend, its peers and sklearn.

64-128-10 ReLU MLP, Adam lr 1e-3, batch 64, 50 epochs, seeded 75/25 split (see ``_digits.py``).
scikit-learn's ``MLPClassifier`` runs the same schedule (alpha=0, tol=0, no early stop).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import _digits
import numpy as np
import pytest

import nnbackend as nb
from nnbackend import bench

IMPLEMENTATIONS = ("nnbackend-numpy", "nnbackend-fit", "nnbackend-cupy", "torch-cpu",
                   "torch-cuda", "floor", "sklearn")


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    pytest.importorskip("sklearn", reason="the digits need scikit-learn")
    return _digits.load_split()


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_digits_fit(benchmark: Any, median_seconds: Callable[[], float | None],
                    implementation: str,
                    digits: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> None:
    X_train, X_test, y_train, y_test = digits
    try:
        fit = _digits.get_fit(implementation)
    except nb.BackendUnavailableError as exc:
        pytest.skip(f"{implementation} is unavailable: {exc}")
    benchmark.group = "digits: 64-128-10, Adam, batch 64, 50 epochs"
    predict = benchmark.pedantic(fit, args=(X_train, y_train), rounds=3, iterations=1,
                                 warmup_rounds=1)
    accuracy = float(np.mean(predict(X_test) == y_test))
    seconds = median_seconds()
    benchmark.extra_info.update(
        implementation=implementation, test_accuracy=accuracy, fit_seconds=seconds,
        epochs=_digits.EPOCHS, batch=_digits.BATCH, hidden=_digits.HIDDEN, lr=_digits.LR,
        train_samples=len(X_train), test_samples=len(X_test),
        samples_per_s=None if seconds is None else len(X_train) * _digits.EPOCHS / seconds,
        threads=bench.thread_info(),
    )
    assert accuracy > 0.9, f"{implementation} reached only {accuracy:.3f} test accuracy"
