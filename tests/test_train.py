"""The training loop: fit, evaluate, predict, early stopping, NaN detection, resume exactness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import _reference as ref
import numpy as np
import pytest
from conftest import Case

import nnbackend as nb
from nnbackend import checkpoint, train
from nnbackend.backend import is_host_array
from nnbackend.data import batches
from nnbackend.datasets import make_blobs
from nnbackend.optim import SGD, Adam
from nnbackend.train import Callback, EarlyStopping, NonFiniteLossError, evaluate, fit, predict


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
    assert model.training  # fit restores the mode it found (a new model trains)


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


# -------------------------------------------------------------------------------------------
# Issue 8: metrics by loss, callbacks on every exit, evaluate's non-finite losses, predict


def _net(case: Case, n_in: int, n_out: int, seed: int = 0) -> nb.Sequential:
    return nb.Sequential(
        nb.Linear(n_in, 8, seed=seed, dtype=case.dtype_name, backend=case.backend),
        nb.Tanh(),
        nb.Linear(8, n_out, seed=seed + 1, dtype=case.dtype_name, backend=case.backend),
    )


def _host_outputs(case: Case, model: nb.Sequential, X: np.ndarray) -> np.ndarray:
    return case.backend.to_numpy(model(case.asarray(X))).astype(np.float64)


def test_regression_and_multi_label_targets_get_no_argmax_accuracy(case: Case) -> None:
    """Issue 8, 3.4: an MSE regression with three outputs was reported an "accuracy" (the
    arg-max match of regression outputs), and so was a multi-label BCE."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 2))
    regression = _net(case, 2, 3)
    targets = rng.standard_normal((40, 3))
    scores = evaluate(regression, nb.MSELoss(), (X, targets), batch_size=16)
    assert set(scores) == {"loss"}
    want, _ = ref.mse(_host_outputs(case, regression, X), targets)
    assert scores["loss"] == pytest.approx(want, rel=10 * case.rtol)
    history = fit(regression, nb.MSELoss(), SGD(regression.parameters(), lr=0.0),
                  (X, targets), epochs=1, val_data=(X, targets), batch_size=16, progress=False)
    assert not any("accuracy" in key for key in history.last)

    multi = _net(case, 2, 4, seed=3)
    labels = (rng.random((40, 4)) < 0.5).astype(np.float64)
    scores = evaluate(multi, nb.BCEWithLogitsLoss(), (X, labels), batch_size=16)
    assert set(scores) == {"loss", "binary_accuracy"}
    logits = _host_outputs(case, multi, X)
    assert scores["binary_accuracy"] == pytest.approx(np.mean((logits > 0) == (labels > 0.5)),
                                                      rel=1e-6)
    want, _ = ref.bce_with_logits(logits, labels)
    assert scores["loss"] == pytest.approx(want, rel=10 * case.rtol)


def test_binary_accuracy_of_one_logit_per_sample_is_an_exact_count(case: Case) -> None:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((37, 2))
    model = _net(case, 2, 1)
    logits = _host_outputs(case, model, X)
    y = (rng.random((37, 1)) < 0.5).astype(np.float64)
    scores = evaluate(model, nb.BCEWithLogitsLoss(), (X, y), batch_size=10)
    assert scores["binary_accuracy"] == np.count_nonzero((logits > 0) == (y > 0.5)) / 37
    soft = np.clip(y + rng.uniform(-0.4, 0.4, y.shape), 0.0, 1.0)  # probabilities: side of ½
    scores = evaluate(model, nb.BCEWithLogitsLoss(), (X, soft), batch_size=10)
    assert scores["binary_accuracy"] == np.count_nonzero((logits > 0) == (soft > 0.5)) / 37


def test_classification_losses_choose_their_accuracy_and_others_ask(case: Case) -> None:
    """Cross-entropy reports accuracy by default; MSE on one-hot classes reports it when
    asked (as the command line's --loss mse does), an arg-max match against the one-hot."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((30, 2))
    y = rng.integers(0, 4, 30)
    model = _net(case, 2, 4)
    predicted = np.argmax(_host_outputs(case, model, X), axis=1)
    want = np.mean(predicted == y)
    assert evaluate(model, nb.CrossEntropyLoss(), (X, y))["accuracy"] == pytest.approx(want)
    onehot = ref.onehot(y, 4)
    assert "accuracy" not in evaluate(model, nb.MSELoss(), (X, onehot))
    asked = evaluate(model, nb.MSELoss(), (X, onehot), metrics=["accuracy"])
    assert asked["accuracy"] == pytest.approx(want)
    history = fit(model, nb.MSELoss(), SGD(model.parameters(), lr=0.0), (X, onehot), epochs=1,
                  val_data=(X, onehot), metrics=["accuracy"], progress=False)
    assert history.last["accuracy"] == pytest.approx(want)
    assert history.last["val_accuracy"] == pytest.approx(want)
    assert set(evaluate(model, nb.CrossEntropyLoss(), (X, y), metrics=())) == {"loss"}


def test_default_metrics_follow_the_loss() -> None:
    assert train.default_metrics(nb.CrossEntropyLoss(label_smoothing=0.1)) == ("accuracy",)
    assert train.default_metrics(nb.BCEWithLogitsLoss()) == ("binary_accuracy",)
    assert train.default_metrics(nb.MSELoss()) == ()
    assert train.default_metrics(lambda y, t: (y, t)) == ()


def test_a_metric_that_does_not_fit_the_targets_is_refused() -> None:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((20, 2))
    model = nb.Sequential(nb.Linear(2, 1, seed=0))
    with pytest.raises(ValueError, match=r"evaluate: metric 'accuracy' needs class scores .* "
                                         r"got outputs \(20, 1\) and targets \(20, 1\)"):
        evaluate(model, nb.MSELoss(), (X, rng.standard_normal((20, 1))), metrics=["accuracy"])
    with pytest.raises(ValueError, match=r"fit: metric 'accuracy'"):
        fit(model, nb.MSELoss(), SGD(model.parameters(), 0.1), (X, rng.standard_normal((20, 1))),
            epochs=1, metrics=["accuracy"], progress=False)
    wide = nb.Sequential(nb.Linear(2, 3, seed=0))
    with pytest.raises(ValueError, match=r"'binary_accuracy' needs targets of the outputs' "
                                         r"shape \(20, 3\), got \(20, 2\)"):
        evaluate(wide, lambda y, t: (wide.backend.xp.sum(y), y), (X, np.zeros((20, 2))),
                 metrics=["binary_accuracy"])
    with pytest.raises(TypeError, match="metrics must be a sequence of names or callables"):
        evaluate(wide, nb.MSELoss(), (X, np.zeros((20, 3))), metrics="accuracy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"evaluate: unknown metric 'f1'"):
        evaluate(wide, nb.MSELoss(), (X, np.zeros((20, 3))), metrics=["f1"])


class _PoisonedFrom:
    """The same batches every epoch, except that from ``epoch`` (1-based) on, the ``step``-th
    batch holds a NaN input."""

    def __init__(self, case: Case, X: np.ndarray, y: np.ndarray, *, epoch: int, step: int
                 ) -> None:
        self.clean = [(case.asarray(X[i : i + 10]), case.asarray(y[i : i + 10], dtype=None))
                      for i in range(0, len(X), 10)]
        bad = X[10 * (step - 1) : 10 * step].copy()
        bad[0, 0] = np.nan
        self.bad = (case.asarray(bad), self.clean[step - 1][1])
        self.poison, self.step, self.epoch = epoch, step, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch + 1

    def __len__(self) -> int:
        return len(self.clean)

    def __iter__(self) -> Any:
        for k, batch in enumerate(self.clean, start=1):
            yield self.bad if self.epoch >= self.poison and k == self.step else batch


def _host_state(case: Case, model: nb.Module) -> dict[str, np.ndarray]:
    return {k: case.backend.to_numpy(v).copy() for k, v in model.state_dict().items()}


def test_early_stopping_restores_the_best_weights_when_the_loss_becomes_nan(
    case: Case, blobs: tuple[np.ndarray, np.ndarray]
) -> None:
    """Issue 8, 3.6: training that ended with NonFiniteLossError kept the NaN weights although
    EarlyStopping(restore_best_weights=True) held the best ones."""
    X, y = blobs
    X, y = X[:60], y[:60]
    model = _net(case, 2, 4)
    data = _PoisonedFrom(case, X, y, epoch=4, step=3)
    snapshots: dict[int, dict[str, np.ndarray]] = {}
    val_losses: dict[int, float] = {}

    def remember(epoch: int, record: dict[str, float]) -> None:
        snapshots[epoch] = _host_state(case, model)
        val_losses[epoch] = record["val_loss"]

    stopper = EarlyStopping("val_loss", patience=10)
    with pytest.raises(NonFiniteLossError, match=r"became nan at epoch 4, step 3"):
        fit(model, nb.CrossEntropyLoss(), SGD(model.parameters(), lr=0.05), data, epochs=8,
            val_data=data.clean, callbacks=[stopper], on_epoch=remember, log_every=4,
            progress=False)
    best = min(val_losses, key=val_losses.__getitem__)
    assert sorted(snapshots) == [1, 2, 3] and stopper.best_epoch == best
    assert len({tuple(s["0.weight"].ravel()) for s in snapshots.values()}) == 3  # it trained
    restored = _host_state(case, model)
    for name, want in snapshots[best].items():
        np.testing.assert_array_equal(restored[name], want, err_msg=name)
    assert model.training  # restored on the way out of the exception too


class _Recorder(Callback):
    def __init__(self, calls: list[str], name: str, *, fail_begin: bool = False,
                 fail_end: bool = False) -> None:
        self.calls, self.name, self.fail_begin, self.fail_end = calls, name, fail_begin, fail_end

    def on_train_begin(self, model: nb.Module) -> None:
        self.calls.append(f"{self.name}.begin")
        if self.fail_begin:
            raise RuntimeError(f"{self.name} cannot begin")

    def on_train_end(self, model: nb.Module, history: train.History) -> None:
        self.calls.append(f"{self.name}.end({len(history)})")
        if self.fail_end:
            raise RuntimeError(f"{self.name} cannot end")


def test_callbacks_end_on_every_exit_and_the_exception_propagates(
    blobs: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = blobs
    model = _mlp()

    def run(callbacks: list[Callback], on_epoch: Any = None) -> None:
        fit(model, nb.CrossEntropyLoss(), SGD(model.parameters(), 0.1), (X[:40], y[:40]),
            epochs=5, batch_size=20, callbacks=callbacks, on_epoch=on_epoch, progress=False)

    def interrupt(epoch: int, record: dict[str, float]) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    calls: list[str] = []
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in epoch 2
        run([_Recorder(calls, "a"), _Recorder(calls, "b")], on_epoch=interrupt)
    assert calls == ["a.begin", "b.begin", "a.end(2)", "b.end(2)"]

    calls.clear()  # a callback that fails to begin: only those that began end
    with pytest.raises(RuntimeError, match="b cannot begin"):
        run([_Recorder(calls, "a"), _Recorder(calls, "b", fail_begin=True),
             _Recorder(calls, "c")])
    assert calls == ["a.begin", "b.begin", "a.end(0)"]

    calls.clear()  # a failing on_train_end does not hide the error that ended training
    with pytest.raises(KeyboardInterrupt) as raised:
        run([_Recorder(calls, "a", fail_end=True), _Recorder(calls, "b")], on_epoch=interrupt)
    assert calls == ["a.begin", "b.begin", "a.end(2)", "b.end(2)"]
    if hasattr(raised.value, "__notes__"):  # Python >= 3.11
        assert raised.value.__notes__ == [
            "_Recorder.on_train_end also failed: RuntimeError('a cannot end')"
        ]

    calls.clear()  # a clean run ends once
    run([_Recorder(calls, "a")])
    assert calls == ["a.begin", "a.end(5)"]


def test_evaluate_raises_on_out_of_range_labels_as_fit_does(case: Case) -> None:
    """Issue 8, 3.16: on a device (labels not range-checked, to avoid a sync per batch)
    evaluate returned NaN where fit raised. Host labels raise ValueError at once; device
    labels NonFiniteLossError when evaluate reads its totals."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((24, 2))
    y = rng.integers(0, 4, 24)
    y[13] = 4  # the second batch of eight
    model = _net(case, 2, 4)
    data = [(case.asarray(X[i : i + 8]), case.asarray(y[i : i + 8], dtype=None))
            for i in range(0, 24, 8)]
    if is_host_array(data[0][1]):
        expected: tuple[type[Exception], str] = (ValueError, r"labels must lie in \[0, 4\)")
    else:
        expected = (NonFiniteLossError, r"loss is nan on batch 2 of 3 \(rows 8 to 15\)")
    with pytest.raises(expected[0], match=expected[1]):
        evaluate(model, nb.CrossEntropyLoss(), data)
    with pytest.raises(expected[0]):
        fit(model, nb.CrossEntropyLoss(), SGD(model.parameters(), 0.1), data, epochs=1,
            progress=False)


def test_evaluate_on_device_labels_raises_when_it_reads_its_totals(
    monkeypatch: pytest.MonkeyPatch, host_reads: list[Any]
) -> None:
    """The device-label path on NumPy (labels treated as off the host): the NaN is found at
    the one read of the per-batch losses, not by a read per batch."""
    from nnbackend.functional import losses as losses_module

    monkeypatch.setattr(losses_module, "is_host_array", lambda _: False)
    rng = np.random.default_rng(5)
    X = rng.standard_normal((40, 2)).astype(np.float32)
    y = rng.integers(0, 4, 40)
    model = _mlp()
    clean = evaluate(model, nb.CrossEntropyLoss(), (X, y), batch_size=8)
    assert host_reads == [(5,), ()]  # the five batch losses at once, then the accuracy count
    logits = nb.to_numpy(model(X)).astype(np.float64)
    assert clean["loss"] == pytest.approx(ref.cross_entropy(logits, ref.onehot(y, 4))[0],
                                          rel=1e-5)
    y[35] = -1
    host_reads.clear()
    with pytest.raises(NonFiniteLossError, match=r"batch 5 of 5 \(rows 32 to 39\)"):
        evaluate(model, nb.CrossEntropyLoss(), (X, y), batch_size=8)
    assert host_reads == [(5,)]
    with pytest.raises(NonFiniteLossError, match=r"fit: validation after epoch 1: evaluate: "
                                                 r"the loss is nan on batch 1 of 1"):
        fit(model, nb.CrossEntropyLoss(), SGD(model.parameters(), 0.1), (X[:30], y[:30]),
            epochs=2, val_data=(X, y), progress=False)


def test_evaluate_reads_the_host_once_for_the_losses_and_once_per_metric(case: Case) -> None:
    from nnbackend.testing import count_host_reads, gpulike

    rng = np.random.default_rng(6)
    X = rng.standard_normal((50, 2))
    y = rng.integers(0, 4, 50)
    model = _net(case, 2, 4)
    data = [(case.asarray(X[i : i + 10]), case.asarray(y[i : i + 10], dtype=None))
            for i in range(0, 50, 10)]
    with count_host_reads() as reads:
        evaluate(model, nb.CrossEntropyLoss(), data)
    counted = case.xp is gpulike  # only the GPU-like test device counts its reads
    assert reads.count == (2 if counted else 0), reads


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_predict_refuses_a_batch_size_that_is_not_a_positive_integer(size: Any) -> None:
    """Issue 8, 3.13: predict(batch_size=0) looped forever or failed inside range()."""
    kind = ValueError if isinstance(size, int) and not isinstance(size, bool) else TypeError
    with pytest.raises(kind, match=rf"predict: batch_size must be a positive integer, got "
                                   rf"{size!r}"):
        predict(_mlp(), np.zeros((3, 2), dtype=np.float32), batch_size=size)


class _ModeSpy(nb.Module):
    """An identity layer that records the mode of every call (and has no parameters)."""

    has_training_behaviour = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, bool]] = []

    def forward_pass(self, x: Any, ctx: Any) -> tuple[Any, Any]:
        self.seen.append(("forward", self.training))
        return x, lambda dy: dy

    def infer(self, x: Any, ctx: Any) -> Any:
        self.seen.append(("infer", self.training))
        return x


def test_fit_evaluate_and_predict_use_their_modes_and_restore_every_modules_mode(
    case: Any, blobs: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = blobs
    spy = _ModeSpy()
    model = nb.Sequential(spy, nb.Linear(2, 4, seed=0, dtype=case.dtype_name),
                          backend=case.backend)
    spy.eval()  # a user's choice for one sub-module, kept through every call below
    data = batches(X[:64], y[:64], batch_size=32, seed=0, backend=case.backend,
                   dtype=case.dtype_name)
    fit(model, nb.CrossEntropyLoss(), nb.SGD(model.parameters(), lr=0.1), data, epochs=1,
        val_data=data, progress=False)
    # the spy is in front of the first trainable layer but behaves differently in training:
    # fit runs its training forward in training mode, validation runs it in eval mode
    assert set(spy.seen) == {("forward", True), ("infer", False)}
    assert model.training and not spy.training
    spy.seen.clear()
    model.train()
    evaluate(model, nb.CrossEntropyLoss(), data)
    nb.predict(model, X[:5].astype(case.dtype_name))
    assert set(spy.seen) == {("infer", False)}
    assert model.training and spy.training
    model(case.asarray(X[:3]))  # inference in training mode honours the mode, as PyTorch's
    assert spy.seen[-1] == ("infer", True)


def test_predict_takes_host_token_ids_for_a_model_of_integer_inputs(case: Case) -> None:
    """Host int64 ids reach an embedding-first model as integers (they used to be cast to the
    parameters' float dtype and refused), batch by batch, equal to the model on the backend's
    ids; the embedding's lookup is the independent reference for the first layer."""
    emb = nb.Embedding(7, 3, dtype=case.dtype_name, backend=case.backend)
    model = nb.Sequential(emb, nb.Linear(3, 2, dtype=case.dtype_name, backend=case.backend,
                                         seed=1))
    ids = np.array([[0, 6, 2], [5, 5, 1], [3, 4, 0]], dtype=np.int64)
    got = nb.predict(model, ids, batch_size=2)
    case.check_placement(got)
    table, w = nb.to_numpy(emb.weight.data), nb.to_numpy(model[1].weight.data)
    want = table[ids] @ w.T + nb.to_numpy(model[1].bias.data)
    np.testing.assert_allclose(nb.to_numpy(got), want, rtol=case.rtol, atol=case.rtol)
    with pytest.raises((TypeError, ValueError), match="Embedding"):
        nb.predict(model, ids.astype(np.float32))
