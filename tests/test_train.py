"""The training loop: fit, evaluate, predict, early stopping, NaN detection, resume exactness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import _reference as ref
import numpy as np
import pytest

import nnbackend as nb
from nnbackend import checkpoint, train
from nnbackend.data import batches
from nnbackend.datasets import make_blobs
from nnbackend.optim import SGD, Adam
from nnbackend.train import EarlyStopping, NonFiniteLossError, evaluate, fit, predict


def _mlp(backend: Any = "numpy", dtype: str = "float32", seed: int = 0) -> nb.Sequential:
    return nb.Sequential(
        nb.Linear(2, 16, seed=seed, dtype=dtype, backend=backend),
        nb.Tanh(),
        nb.Linear(16, 4, seed=seed + 1, dtype=dtype, backend=backend),
    )


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(400, 2, 4, seed=3)
    return X, y


def test_fit_learns_and_records_history(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = blobs
    model = _mlp()
    loss_fn = nb.CrossEntropyLoss()
    data = batches(X, y, batch_size=32, seed=0, backend=model.backend, dtype="float32")
    before = evaluate(model, loss_fn, data)
    history = fit(model, loss_fn, Adam(model.parameters(), lr=0.01), data, epochs=8,
                  val_data=(X, y), progress=False)
    assert len(history) == 8
    assert history["epoch"] == [float(e) for e in range(1, 9)]
    assert history["loss"][-1] < history["loss"][0] < before["loss"] * 1.5
    assert history.last["accuracy"] > 0.9
    assert history.last["val_accuracy"] > 0.9
    assert all(row["samples_per_s"] > 0 and row["time"] > 0 for row in history.epochs)
    assert not model.training  # fit leaves the model in evaluation mode


def test_epoch_loss_is_the_sample_weighted_mean_of_step_losses(
    blobs: tuple[np.ndarray, np.ndarray],
) -> None:
    """With lr = 0 the parameters never move, so the epoch loss equals the full-data loss."""
    X, y = blobs
    model = _mlp(dtype="float64")
    loss_fn = nb.CrossEntropyLoss()
    history = fit(model, loss_fn, SGD(model.parameters(), lr=0.0), (X[:250], y[:250]),
                  epochs=1, batch_size=32, progress=False)
    full = model(model.backend.asarray(X[:250], dtype="float64"))
    expected, _ = loss_fn(full, model.backend.asarray(y[:250]))
    assert history.last["loss"] == pytest.approx(float(expected), rel=1e-12)


def test_evaluate_weights_uneven_batches(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = blobs
    model = _mlp(dtype="float64")
    loss_fn = nb.CrossEntropyLoss()
    scores = evaluate(model, loss_fn, (X[:101], y[:101]), batch_size=16)
    logits = nb.to_numpy(model(model.backend.asarray(X[:101], dtype="float64")))
    want, _ = ref.cross_entropy(logits, ref.onehot(y[:101], 4))
    assert scores["loss"] == pytest.approx(want, rel=1e-12)
    assert scores["accuracy"] == pytest.approx(np.mean(logits.argmax(axis=1) == y[:101]))


def test_predict_matches_inference(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = blobs
    model = _mlp()
    out = predict(model, X, batch_size=64)
    np.testing.assert_array_equal(nb.to_numpy(out), nb.to_numpy(model(model.backend.asarray(
        X, dtype="float32"))))


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The shapes of the arrays the training loop brings to the host, in order."""
    reads: list[Any] = []
    real_to_numpy = train.to_numpy

    def counting(x: Any) -> np.ndarray:
        reads.append(getattr(x, "shape", None))
        return real_to_numpy(x)

    monkeypatch.setattr(train, "to_numpy", counting)
    return reads


def test_nan_loss_names_epoch_and_step_and_reads_the_host_once_per_window(
    host_reads: list[Any], blobs: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = blobs
    model = _mlp()
    be = model.backend
    data = [(be.asarray(X[i : i + 20], dtype="float32"), be.asarray(y[i : i + 20]))
            for i in range(0, 400, 20)]
    bad = np.array(X[120:140], dtype=np.float32)
    bad[3, 0] = np.nan
    data[6] = (be.asarray(bad), data[6][1])  # the 7th step of the epoch
    with pytest.raises(NonFiniteLossError, match=r"became nan at epoch 1, step 7"):
        fit(model, nb.CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), data, epochs=2,
            progress=False, log_every=10)
    assert host_reads == [(10,)]  # one host read for the first ten steps, none per step


def test_clean_epoch_reads_the_host_once_per_window_plus_metrics(
    host_reads: list[Any], blobs: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = blobs
    model = _mlp()
    data = batches(X, y, batch_size=20, seed=0, backend=model.backend, dtype="float32")
    fit(model, nb.CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), data, epochs=1,
        progress=False, log_every=10)
    assert len(data) == 20
    assert len(host_reads) == 2 + 1  # two loss windows and the accuracy count at the end


def test_early_stopping_stops_and_restores_the_best_weights() -> None:
    model = _mlp()
    stopper = EarlyStopping("val_loss", patience=2)
    stopper.on_train_begin(model)
    snapshots = []
    stops = []
    for epoch, val_loss in enumerate([1.0, 0.5, 0.6, 0.7, 0.4], start=1):
        for p in model.parameters():
            p.data = p.data + 1.0  # the "training" of this epoch
        snapshots.append({k: nb.to_numpy(v).copy() for k, v in model.state_dict().items()})
        stops.append(stopper.on_epoch_end(epoch, {"val_loss": val_loss}, model))
        if stops[-1]:
            break
    assert stops == [False, False, False, True]
    history = train.History()
    stopper.on_train_end(model, history)
    assert history.best_epoch == 2
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(nb.to_numpy(value), snapshots[1][name])


def test_early_stopping_in_fit(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = blobs
    model = _mlp()
    history = fit(model, nb.CrossEntropyLoss(), SGD(model.parameters(), lr=0.0), (X, y),
                  epochs=30, val_data=(X, y), callbacks=[EarlyStopping(patience=1)],
                  progress=False)
    assert history.stopped_early
    assert len(history) == 2  # lr = 0: the loss never improves after the first epoch


def test_early_stopping_validates() -> None:
    with pytest.raises(ValueError, match="patience must be >= 0, got -1"):
        EarlyStopping(patience=-1)
    with pytest.raises(KeyError, match="'val_loss' is not in the epoch record"):
        EarlyStopping().on_epoch_end(1, {"loss": 1.0}, _mlp())


def test_fit_rejects_one_shot_iterators(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = blobs
    model = _mlp()
    one_shot = iter([(model.backend.asarray(X, dtype="float32"), model.backend.asarray(y))])
    with pytest.raises(TypeError, match="re-iterable once per epoch"):
        fit(model, nb.CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), one_shot, epochs=1,
            progress=False)


def test_resume_is_bit_identical(tmp_path: Path, blobs: tuple[np.ndarray, np.ndarray]) -> None:
    """10 epochs straight == 5 epochs, save, load into fresh objects, 5 more epochs."""
    X, y = blobs

    def setup() -> tuple[nb.Sequential, Adam, Any]:
        model = _mlp(seed=4)
        opt = Adam(model.parameters(), lr=0.01)
        data = batches(X, y, batch_size=48, seed=7, backend=model.backend, dtype="float32")
        return model, opt, data

    straight, opt, data = setup()
    fit(straight, nb.CrossEntropyLoss(), opt, data, epochs=10, progress=False)

    first, opt, data = setup()
    fit(first, nb.CrossEntropyLoss(), opt, data, epochs=5, progress=False)
    checkpoint.save(tmp_path / "ckpt.npz", first, opt, epoch=5)
    resumed = _mlp(seed=99)
    opt2 = Adam(resumed.parameters(), lr=0.5)
    meta = checkpoint.load(tmp_path / "ckpt.npz", resumed, opt2)
    data2 = batches(X, y, batch_size=48, seed=7, backend=resumed.backend, dtype="float32")
    fit(resumed, nb.CrossEntropyLoss(), opt2, data2, epochs=10,
        initial_epoch=int(meta["epoch"]), progress=False)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        np.testing.assert_array_equal(nb.to_numpy(a), nb.to_numpy(b), err_msg=name)


def test_fit_on_array_api_strict_device1(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    strict = pytest.importorskip("array_api_strict")
    be = nb.get_backend(strict, device=strict.Device("device1"))
    X, y = blobs
    model = _mlp(backend=be)
    history = fit(model, nb.CrossEntropyLoss(), Adam(model.parameters(), lr=0.01), (X, y),
                  epochs=5, val_data=(X, y), batch_size=32, seed=0, progress=False)
    assert history.last["val_accuracy"] > 0.9
    for p in model.parameters():
        assert p.data.device == strict.Device("device1")
        assert p.data.dtype == strict.float32


def test_progress_is_quiet_off_a_terminal(
    capsys: pytest.CaptureFixture[str], blobs: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = blobs
    model = _mlp()
    fit(model, nb.CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), (X, y), epochs=1,
        progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""


def test_regression_with_mse_skips_accuracy() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 2))
    y = (X @ np.array([[1.5], [-2.0]]) + 0.3).astype(np.float32)
    model = nb.Sequential(nb.Linear(2, 1, seed=0))
    history = fit(model, nb.MSELoss(), SGD(model.parameters(), lr=0.1), (X, y), epochs=20,
                  batch_size=20, seed=0, progress=False)
    assert "accuracy" not in history.last
    assert history.last["loss"] < 1e-4
    W = nb.to_numpy(model[0].weight.data)
    np.testing.assert_allclose(W, [[1.5, -2.0]], atol=1e-2)


def test_summed_losses_are_reported_per_sample_whatever_the_batch_size(
    blobs: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = blobs
    model = _mlp()
    logits = nb.to_numpy(model(model.backend.asarray(X, dtype="float32"))).astype(np.float64)
    want, _ = ref.cross_entropy(logits, ref.onehot(y, 4))
    for batch_size in (10, 50, 333):
        for reduction in ("mean", "sum"):
            got = evaluate(model, nb.CrossEntropyLoss(reduction=reduction), (X, y),
                           batch_size=batch_size)["loss"]
            assert got == pytest.approx(want, rel=1e-5), (batch_size, reduction)
    frozen = _mlp()  # lr 0: every step sees the initial weights
    history = fit(frozen, nb.CrossEntropyLoss(reduction="sum"), SGD(frozen.parameters(), 0.0),
                  (X, y), epochs=1, batch_size=64, seed=0, progress=False)
    assert history.last["loss"] == pytest.approx(want, rel=1e-5)


def test_predict_on_no_rows_returns_an_empty_output() -> None:
    out = predict(_mlp(), np.zeros((0, 2), dtype=np.float32))
    assert out.shape == (0, 4)
