"""``fit(compile=True)``: the training steps through compile_step, everything else as in
``fit(compile=False)``: the history (losses, metrics, validation), the state the objects hold
at every epoch's ``on_epoch`` and callbacks, early stopping restoring the best weights, the
non-finite check, per-step host work (``on_step``: a per-step schedule), and checkpoints saved
in ``on_epoch`` resuming a compiled run exactly. Wrappers of the optimizer and data-parallel
models are refused.

Where nothing compiles (NumPy, array-api-strict, PyTorch CPU, the GPU-like device) the compiled
run is the eager one bit for bit; on JAX (float32, one jax.jit program) to float32 rounding
(XLA reorders reductions); on CUDA graphs to the dtype's tolerance."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _kinds import expected_kind

import nnbackend as nb
from nnbackend.data import batches
from nnbackend.state import training_state
from nnbackend.train import Callback, EarlyStopping, NonFiniteLossError, fit

ROWS = 40  # batches of 16: two full batches and a last, partial one of 8 per epoch
EPOCHS = 3


class Run:
    """A model with batch norm and dropout (random streams), Adam with a schedule stepped after
    every step (on_step), shuffled training batches with a last partial one, validation data,
    and a record of the objects' state at every on_epoch and callback."""

    def __init__(self, case: Any, *, seed: int = 0, poison: bool = False) -> None:
        dt = case.dtype_name
        self.case = case
        self.model = nb.Sequential(
            nb.Linear(5, 16, bias=False, seed=seed, dtype=dt), nb.BatchNorm1d(16, dtype=dt),
            nb.Tanh(), nb.Dropout(0.25, seed=7), nb.Linear(16, 3, seed=seed + 1, dtype=dt),
            backend=case.backend,
        )
        self.opt = nb.Adam(self.model, lr=0.02)
        self.sched = nb.StepLR(self.opt, 5, gamma=0.7)
        self.loss = nb.CrossEntropyLoss()
        rng = np.random.default_rng(42)
        X = rng.normal(size=(ROWS, 5))
        y = rng.integers(0, 3, size=ROWS)
        X[:, 0] += y  # something to learn
        if poison:
            X[7, 2] = np.nan
        self.train = batches(X, y, batch_size=16, seed=1, backend=case.backend, dtype=dt)
        Xv = rng.normal(size=(24, 5))
        yv = rng.integers(0, 3, size=24)
        Xv[:, 0] += yv
        self.val = batches(Xv, yv, batch_size=24, shuffle=False, backend=case.backend, dtype=dt)
        self.seen: list[tuple[str, int, dict[str, np.ndarray]]] = []
        self.steps = 0

    def arrays(self) -> dict[str, np.ndarray]:
        """Parameters, buffers, optimizer state and learning rates, as the objects hold them."""
        state = training_state(self.model, self.opt)
        return {k: np.asarray(nb.to_numpy(v)).copy() for k, v in state.items()
                if not k.endswith("/step")}

    def on_step(self) -> None:
        self.steps += 1
        self.sched.step()

    def on_epoch(self, epoch: int, record: dict[str, float]) -> None:
        self.seen.append(("on_epoch", epoch, self.arrays()))

    def fit(self, *, compile: bool, epochs: int = EPOCHS, **options: Any) -> nb.History:
        run = self

        class Seen(Callback):
            def on_epoch_end(self, epoch: int, logs: Any, model: Any) -> bool:
                run.seen.append(("callback", epoch, run.arrays()))
                return False

        callbacks = [Seen(), *options.pop("callbacks", [])]
        return fit(self.model, self.loss, self.opt, self.train, epochs=epochs,
                   val_data=self.val, progress=False, on_step=self.on_step,
                   on_epoch=options.pop("on_epoch", self.on_epoch), callbacks=callbacks,
                   compile=compile, **options)


def _assert_states(case: Any, got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    kind = expected_kind(case)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        if kind == "eager":
            assert np.array_equal(got[name], want[name]), name
        else:
            tol = 1e-5 if kind == "jax-jit" or not case.is_float64 else 1e-12
            scale = max(float(np.abs(want[name]).max()), 1e-3)
            err = float(np.abs(got[name].astype(np.float64) - want[name]).max())
            assert err <= tol * scale, (name, err / scale)


def _assert_histories(case: Any, got: nb.History, want: nb.History) -> None:
    assert len(got) == len(want)
    for row, eager_row in zip(got.epochs, want.epochs, strict=True):
        assert row.keys() == eager_row.keys()
        for key in ("loss", "val_loss"):
            if expected_kind(case) == "eager":
                assert row[key] == eager_row[key], key
            else:
                assert row[key] == pytest.approx(eager_row[key], rel=1e-5), key
        for key in ("accuracy", "val_accuracy"):  # counts of arg-max matches
            tol = 0.0 if expected_kind(case) == "eager" else 1.0 / 24
            assert abs(row[key] - eager_row[key]) <= tol, key
        assert row["epoch"] == eager_row["epoch"]


@pytest.fixture(scope="module")
def pairs() -> dict[str, tuple[Run, nb.History, Run, nb.History]]:
    """(compiled run, its history, eager run, its history) by row: shared by the tests."""
    return {}


def _pair(pairs: dict[str, Any], case: Any) -> tuple[Run, nb.History, Run, nb.History]:
    if case.id not in pairs:
        compiled, eager = Run(case), Run(case)
        pairs[case.id] = (compiled, compiled.fit(compile=True), eager, eager.fit(compile=False))
    return pairs[case.id]  # type: ignore[no-any-return]


def test_compiled_fit_equals_the_eager_fit(case: Any, pairs: dict[str, Any]) -> None:
    compiled, history, eager, eager_history = _pair(pairs, case)
    assert history.step_kind == expected_kind(case)
    assert eager_history.step_kind == "eager"
    assert "compile=False" in eager_history.step_note
    if expected_kind(case) == "jax-jit":
        assert history.traces == 2  # the full batches' program and the partial batch's
        assert history.compile_seconds > 0
        assert "jax-jit" in history.step_note
    elif expected_kind(case) == "eager":
        assert history.traces == 0 and history.compile_seconds == 0.0
        assert "nothing compiles" in history.step_note
    _assert_histories(case, history, eager_history)
    assert compiled.steps == eager.steps == EPOCHS * 3  # on_step after every step
    assert [g["lr"] for g in compiled.opt.param_groups] == [
        g["lr"] for g in eager.opt.param_groups] == [0.02 * 0.7 ** (EPOCHS * 3 // 5)]
    _assert_states(case, compiled.arrays(), eager.arrays())


def test_the_objects_hold_the_trained_state_at_every_on_epoch_and_callback(
        case: Any, pairs: dict[str, Any]) -> None:
    """Written back after every epoch's steps: on_epoch (where checkpoints are saved) and each
    callback see what the eager run's objects hold then (and validation measured it)."""
    compiled, _, eager, _ = _pair(pairs, case)
    assert [(what, epoch) for what, epoch, _ in compiled.seen] == [
        (what, epoch) for epoch in range(1, EPOCHS + 1) for what in ("on_epoch", "callback")]
    assert [(what, epoch) for what, epoch, _ in eager.seen] == [
        (what, epoch) for what, epoch, _ in compiled.seen]
    for (_, _, got), (_, _, want) in zip(compiled.seen, eager.seen, strict=True):
        _assert_states(case, got, want)


def test_the_step_kind_is_logged_once(case: Any, caplog: Any) -> None:
    run = Run(case)
    with caplog.at_level(logging.INFO, logger="nnbackend.train"):
        history = run.fit(compile=True, epochs=1)
    said = [r.getMessage() for r in caplog.records if r.name == "nnbackend.train"]
    assert said == [f"fit: {history.step_note}"]


def test_early_stopping_restores_the_best_weights(case: Any, tmp_path: Path) -> None:
    """The best epoch's weights (copied in on_epoch_end, after the write-back) are restored at
    the end: those of a compiled run stopped after that epoch, bit for bit."""
    run = Run(case)
    stop = EarlyStopping("val_loss", mode="max", patience=1)  # the loss falls: epoch 1 is best
    history = run.fit(compile=True, epochs=6, callbacks=[stop])
    assert history.stopped_early
    best = history.best_epoch
    assert best is not None and best < len(history)
    assert max(history["val_loss"]) == history["val_loss"][best - 1]
    shorter = Run(case)
    shorter.fit(compile=True, epochs=best)
    restored = {k: v for k, v in run.arrays().items() if k.startswith("model/")}
    want = {k: v for k, v in shorter.arrays().items() if k.startswith("model/")}
    assert restored.keys() == want.keys()
    for name in want:
        assert np.array_equal(restored[name], want[name]), name
    # and those of an eager run of as many epochs (XLA reorders reductions: to rounding)
    eager = Run(case)
    eager.fit(compile=False, epochs=best)
    tol = 1e-12 if case.is_float64 else 1e-4
    for name, value in eager.arrays().items():
        if name.startswith("model/"):
            np.testing.assert_allclose(restored[name], value, rtol=tol, atol=tol, err_msg=name)


def test_a_checkpoint_saved_in_on_epoch_resumes_the_compiled_run_exactly(
        case: Any, pairs: dict[str, Any], tmp_path: Path) -> None:
    whole, history, _, _ = _pair(pairs, case)
    path = tmp_path / "run.npz"
    first = Run(case)

    def save(epoch: int, record: dict[str, float]) -> None:
        if epoch == 1:
            nb.checkpoint.save(path, first.model, first.opt, epoch=epoch,
                               sched=first.sched.state_dict())

    first.fit(compile=True, epochs=2, on_epoch=save)  # went on past its checkpoint
    resumed = Run(case)
    meta = nb.checkpoint.load(path, resumed.model, resumed.opt)
    resumed.sched.load_state_dict(meta["sched"])
    rest = resumed.fit(compile=True, initial_epoch=int(meta["epoch"]))
    assert [row["epoch"] for row in rest.epochs] == [2.0, 3.0]
    assert [row["loss"] for row in rest.epochs] == history["loss"][1:]
    assert [row["val_loss"] for row in rest.epochs] == history["val_loss"][1:]
    got, want = resumed.arrays(), whole.arrays()
    assert got.keys() == want.keys()
    for name in want:
        assert np.array_equal(got[name], want[name]), name


def test_a_non_finite_loss_stops_with_the_trained_state_written_back(case: Any) -> None:
    """The window check reads the stacked losses as in the eager run and names the same step;
    the objects then hold the compiled steps taken (as an eager run's do: NaN where the NaN
    sample's gradients reached)."""
    runs = []
    for compile in (True, False):
        run = Run(case, poison=True)
        with pytest.raises(NonFiniteLossError, match=r"became nan at epoch 1, step \d") as error:
            run.fit(compile=compile, log_every=2)
        runs.append((run, str(error.value)))
    (compiled, compiled_error), (eager, eager_error) = runs
    assert compiled_error == eager_error
    got, want = compiled.arrays()["model/0.weight"], eager.arrays()["model/0.weight"]
    assert np.isnan(want).any()
    assert np.array_equal(np.isnan(got), np.isnan(want))  # written back


def test_wrapped_optimizers_and_data_parallel_models_are_refused(case: Any) -> None:
    run = Run(case)

    class Wrapper:
        def __init__(self, inner: nb.Optimizer) -> None:
            self.inner = inner

        def zero_grad(self) -> None:
            self.inner.zero_grad()

        def step(self) -> None:
            self.inner.step()

    with pytest.raises(TypeError, match=r"fit\(compile=True\): the optimizer must be an "
                                        r"nnbackend Optimizer.*got Wrapper.*on_step="):
        fit(run.model, run.loss, Wrapper(run.opt), run.train, epochs=1, compile=True)
    fit(run.model, run.loss, Wrapper(run.opt), run.train, epochs=1, progress=False)  # eager

    from nnbackend.distributed import DistributedDataParallel
    from nnbackend.distributed.comm import SingleProcess

    wrapped = DistributedDataParallel(Run(case).model, comm=SingleProcess())
    with pytest.raises(ValueError, match=r"fit\(compile=True\): a DistributedDataParallel "
                                         r"model cannot be compiled"):
        fit(wrapped, run.loss, nb.SGD(wrapped, lr=0.1), run.train, epochs=1, compile=True)
    with pytest.raises(TypeError, match="compile must be a bool"):
        fit(run.model, run.loss, run.opt, run.train, epochs=1, compile="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_step must be callable"):
        fit(run.model, run.loss, run.opt, run.train, epochs=1, on_step=3)  # type: ignore[arg-type]


def test_without_metrics_the_step_returns_the_loss_only(case: Any) -> None:
    """metrics=() (as the language models train): no outputs are asked of the step."""
    compiled, eager = Run(case), Run(case)
    got = fit(compiled.model, compiled.loss, compiled.opt, compiled.train, epochs=2,
              metrics=(), progress=False, compile=True)
    want = fit(eager.model, eager.loss, eager.opt, eager.train, epochs=2, metrics=(),
               progress=False)
    assert list(got.epochs[0]) == list(want.epochs[0]) == [
        "epoch", "loss", "time", "samples_per_s"]
    if expected_kind(case) == "eager":
        assert got["loss"] == want["loss"]
    else:
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    _assert_states(case, compiled.arrays(), eager.arrays())


def test_a_metric_of_the_users_is_summed_as_without_compile(case: Any) -> None:
    """Built-in metrics may be summed by one jitted program beside a jax.jit step; a callable
    of the user's is summed eagerly, as without compile, beside them."""

    def positive_first_score(prediction: Any, target: Any) -> Any:
        xp = case.xp
        return xp.sum(xp.astype(prediction[:, 0] > 0, prediction.dtype))

    histories = []
    for compile in (True, False):
        run = Run(case)
        histories.append(fit(run.model, run.loss, run.opt, run.train, epochs=2,
                             metrics=["accuracy", positive_first_score], progress=False,
                             compile=compile))
    got, want = histories
    assert list(got.epochs[0]) == list(want.epochs[0])
    assert "positive_first_score" in got.epochs[0]
    for key in ("accuracy", "positive_first_score"):
        tol = 0.0 if expected_kind(case) == "eager" else 1.0 / 24
        assert np.allclose(got[key], want[key], rtol=0, atol=tol), key


def test_fit_with_cuda_graph_steps_on_the_replay_double(case: Any, monkeypatch: Any) -> None:
    """What fit(compile=True) runs on CuPy and PyTorch CUDA, here with the CPU replay double
    standing in for the CUDA engine (rows with mutable arrays and no CUDA device): the history
    and the objects' state at every on_epoch as the eager fit's, to the few ulp that Adam's
    bias corrections computed on the device differ by."""
    from functools import partial

    from nnbackend.backend import supports_views

    if not supports_views(case.xp) or expected_kind(case) != "eager":
        pytest.skip("the replay double stands in for CUDA graphs on rows with mutable arrays")
    import nnbackend.compile as compile_package
    from nnbackend.compile import graph

    monkeypatch.setattr(compile_package, "_graphs_apply", lambda library, device: True)
    monkeypatch.setattr(graph, "GraphStep", partial(graph.GraphStep, engine="double"))
    compiled, eager = Run(case), Run(case)
    history, eager_history = compiled.fit(compile=True), eager.fit(compile=False)
    assert history.step_kind == "cuda-graph"
    assert "replay double" in history.step_note
    assert history.traces == 2  # the full batches' graph and the partial batch's
    tol = 1e-12 if case.is_float64 else 1e-5
    for row, want in zip(history.epochs, eager_history.epochs, strict=True):
        assert row.keys() == want.keys()
        for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
            assert row[key] == pytest.approx(want[key], rel=tol), key
    assert compiled.steps == eager.steps
    for (_, _, got), (_, _, want_state) in zip(compiled.seen, eager.seen, strict=True):
        assert got.keys() == want_state.keys()
        for name in want_state:
            np.testing.assert_allclose(got[name], want_state[name], rtol=tol, atol=tol,
                                       err_msg=name)
