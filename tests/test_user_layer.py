"""A layer written outside the package, with nothing but the public protocol, trains,
checkpoints and passes gradcheck on every backend (the README's example)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend.layers import Context


class ScaleShift(nb.Module):
    """y = γ ⊙ x + β over the last axis (γ, β of shape (features,)).

    Backward, with δ = ∂L/∂y: ∂L/∂γ = Σ δ ⊙ x, ∂L/∂β = Σ δ (over every leading axis),
    ∂L/∂x = δ ⊙ γ.
    """

    def __init__(self, features: int, *, backend: Any = None, dtype: Any = None) -> None:
        super().__init__()
        be = nb.get_backend(backend)
        self.features = features
        self.gamma = nb.Parameter(be.asarray(np.ones(features), dtype=be.dtype(dtype)))
        self.beta = nb.Parameter(be.zeros((features,), dtype=dtype))

    def check_input(self, x: Any, ctx: Context) -> None:
        if x.shape[-1] != self.features:
            msg = f"{self!r} expects {self.features} features, got shape {tuple(x.shape)}"
            raise ValueError(msg)

    def forward_pass(self, x: Any, ctx: Context) -> tuple[Any, Any]:
        xp, gamma, beta = ctx.xp, self.gamma, self.beta
        leading = tuple(range(x.ndim - 1))

        def backprop(dy: Any) -> Any:
            gamma.accumulate_grad(xp.sum(dy * x, axis=leading))
            beta.accumulate_grad(xp.sum(dy, axis=leading))
            return dy * gamma.data if ctx.input_grad else None

        return x * gamma.data + beta.data, backprop

    def infer(self, x: Any, ctx: Context) -> Any:
        return x * self.gamma.data + self.beta.data

    def extra_repr(self) -> str:
        return str(self.features)


def _model(case: Any) -> nb.Sequential:
    return nb.Sequential(
        nb.Linear(2, 16, seed=0, dtype=case.dtype_name), ScaleShift(16, dtype=case.dtype_name),
        nb.Tanh(), nb.Linear(16, 3, seed=1, dtype=case.dtype_name), backend=case.backend,
    )


def test_a_user_layer_passes_gradcheck(case: Any) -> None:
    if not case.is_float64:
        pytest.skip("gradcheck compares float64 finite differences")
    layer = ScaleShift(5, backend=case.backend, dtype="float64")
    layer.gamma.data = case.asarray(np.linspace(0.5, 1.5, 5))  # away from the identity
    x = case.asarray(np.random.default_rng(0).standard_normal((4, 3, 5)))
    report = nb.gradcheck(layer, x)
    assert set(report.max_abs_error) >= {"x", "gamma", "beta"}
    nb.gradcheck(_model(case), case.asarray(np.random.default_rng(1).standard_normal((6, 2))))


def test_a_user_layer_trains_and_checkpoints(case: Any, tmp_path: Path) -> None:
    X, y = nb.datasets.make_blobs(n_samples=240, centers=3, seed=0)
    data = nb.batches(X, y, batch_size=32, seed=0, backend=case.backend, dtype=case.dtype_name)
    model = _model(case)
    opt = nb.Adam(model.parameters(), lr=0.05)
    history = nb.fit(model, nb.CrossEntropyLoss(), opt, data, epochs=8, progress=False)
    assert history.last["accuracy"] > 0.9
    assert not np.allclose(nb.to_numpy(model[1].gamma.data), 1.0)  # its parameters trained
    path = tmp_path / "user.npz"
    nb.checkpoint.save(path, model, opt, epoch=8)
    restored = _model(case)
    restored_opt = nb.Adam(restored.parameters(), lr=0.05)
    nb.checkpoint.load(path, restored, restored_opt)
    for (name, p), q in zip(model.named_parameters(), restored.parameters(), strict=True):
        np.testing.assert_array_equal(nb.to_numpy(q.data), nb.to_numpy(p.data), err_msg=name)
    with pytest.raises(ValueError, match=r"ScaleShift\(16\) expects 16 features"):
        model[1](case.asarray(np.ones((2, 3))))
