"""The Dropout layer: modes, masks identical on every backend, backward with the forward's mask,
and training with dropout reproducible run to run and across save/resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb


def _host_mask(seed: int, shape: tuple[int, ...], p: float, draws: int = 0) -> np.ndarray:
    """The mask of draw ``draws`` of a seed's stream, made on NumPy (the reference row)."""
    gen = nb.random.Generator(seed, counter=draws)
    return nb.to_numpy(gen.bernoulli_mask(shape, 1.0 - p, backend="numpy"))


def test_training_mode_drops_and_scales_in_forward_and_in_inference(case: Any) -> None:
    x = case.asarray(np.full((8, 16), 2.0))
    layer = nb.Dropout(0.25, seed=7)
    y, backprop = layer.forward(x)
    mask = _host_mask(7, (8, 16), 0.25)
    np.testing.assert_allclose(nb.to_numpy(y), np.where(mask, 2.0 / 0.75, 0.0), rtol=case.rtol)
    dy = case.asarray(np.arange(128.0).reshape(8, 16))
    np.testing.assert_allclose(nb.to_numpy(backprop(dy)),
                               np.where(mask, np.arange(128.0).reshape(8, 16) / 0.75, 0.0),
                               rtol=case.rtol)
    second = nb.to_numpy(layer(x))  # inference in training mode drops too, with the next draw
    np.testing.assert_allclose(second, np.where(_host_mask(7, (8, 16), 0.25, 1), 8 / 3, 0.0),
                               rtol=case.rtol)
    assert layer.get_extra_state()["counter"] == 2


def test_eval_mode_is_the_identity_and_draws_nothing(case: Any) -> None:
    x = case.asarray(np.arange(12.0).reshape(3, 4))
    layer = nb.Dropout(0.5, seed=1).eval()
    y, backprop = layer.forward(x)
    assert y is x and layer(x) is x
    dy = case.asarray(np.ones((3, 4)))
    assert backprop(dy) is dy
    assert layer.get_extra_state()["counter"] == 0


def test_dropout_in_a_model_follows_its_mode_and_is_not_shortcut(case: Any) -> None:
    model = nb.Sequential(nb.Dropout(0.5, seed=3), nb.Linear(6, 2, seed=0, dtype=case.dtype_name),
                          backend=case.backend)
    x = case.asarray(np.ones((4, 6)))
    y_train = nb.to_numpy(model.forward(x)[0])
    expected = (np.where(_host_mask(3, (4, 6), 0.5), 2.0, 0.0)
                @ nb.to_numpy(model[1].weight.data).T)
    np.testing.assert_allclose(y_train, expected, rtol=case.rtol, atol=1e-6)
    model.eval()
    np.testing.assert_allclose(nb.to_numpy(model(x)),
                               np.ones((4, 6)) @ nb.to_numpy(model[1].weight.data).T,
                               rtol=case.rtol, atol=1e-6)


def _fit(case: Any, epochs: int, model: nb.Sequential | None = None,
         opt: nb.Optimizer | None = None, initial_epoch: int = 0) -> tuple[Any, Any]:
    X, y = nb.datasets.make_blobs(n_samples=96, centers=3, seed=0)
    data = nb.batches(X, y, batch_size=16, seed=1, backend=case.backend, dtype=case.dtype_name)
    if model is None:
        model = nb.Sequential(nb.Linear(2, 32, seed=0, dtype=case.dtype_name), nb.ReLU(),
                              nb.Dropout(0.3, seed=5),
                              nb.Linear(32, 3, seed=1, dtype=case.dtype_name),
                              backend=case.backend)
        opt = nb.Adam(model.parameters(), lr=1e-2)
    nb.fit(model, nb.CrossEntropyLoss(), opt, data, epochs=epochs, initial_epoch=initial_epoch,
           progress=False)
    return model, opt


def _params(model: nb.Module) -> dict[str, np.ndarray]:
    return {name: nb.to_numpy(p.data).copy() for name, p in model.named_parameters()}


def test_fit_with_dropout_is_reproducible_and_resumes_exactly(case: Any, tmp_path: Path) -> None:
    straight, _ = _fit(case, 4)
    again, _ = _fit(case, 4)
    for name, value in _params(straight).items():
        np.testing.assert_array_equal(_params(again)[name], value, err_msg=name)
    half, opt = _fit(case, 2)
    path = tmp_path / "half.npz"
    nb.checkpoint.save(path, half, opt, epoch=2)
    resumed, _ = _fit(case, 0)  # a fresh model and optimizer (0 epochs), restored from disk
    resumed_opt = nb.Adam(resumed.parameters(), lr=1e-2)
    nb.checkpoint.load(path, resumed, resumed_opt)
    assert resumed[2].get_extra_state() == half[2].get_extra_state()
    _fit(case, 4, resumed, resumed_opt, initial_epoch=2)
    for name, value in _params(straight).items():
        np.testing.assert_array_equal(_params(resumed)[name], value, err_msg=name)


def test_bad_probabilities_are_refused() -> None:
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="Dropout"):
            nb.Dropout(p)
