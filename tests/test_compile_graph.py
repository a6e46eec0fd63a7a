"""CUDA-graph training steps (nnbackend.compile.graph): a step captured once per batch shape and
replayed equals the eager step taken with device per-step values bit for bit over 20 steps
(SGD with momentum and Adam, dropout, batch norm, a schedule changing the learning rate between
steps, a last partial batch), one capture per shape, zero host reads per replayed step on the
GPU-like device, the state the objects hold is the compiled state (with Python learning rates
after write_back, for schedules), eager use and checkpoint loads between calls are picked up, a
changed setting other than the learning rate recaptures the graphs, the arguments are checked as
for every compiled step, and immutable backends are refused.

On the rows with mutable arrays and no CUDA device (NumPy, the GPU-like device, PyTorch CPU)
the CPU replay double stands in for the graph engine; on the CuPy and PyTorch CUDA rows the
real engines run (where a CUDA device exists: ci/gpu.sh)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend.backend import supports_views
from nnbackend.compile.base import CompiledStep
from nnbackend.compile.graph import GraphStep, ReplayDouble, UnsteadyStateError
from nnbackend.state import load_training_state, training_state
from nnbackend.testing import count_host_reads

STEPS = 20
ROWS = (8, 8, 5)  # one epoch: two full batches and a last, partial one


def _on_cuda(case: Any) -> bool:
    be = case.backend
    return be.name == "cupy" or (be.name == "torch" and getattr(be.device, "type", "") == "cuda")


def _engine(case: Any) -> str:
    """The real engine where there is a CUDA device, the replay double elsewhere."""
    if not supports_views(case.xp):
        pytest.skip(f"{case.backend.name} arrays are immutable: GraphStep refuses them "
                    "(test_immutable_backends_are_refused)")
    return "auto" if _on_cuda(case) else "double"


def _sgd(model: nb.Module) -> tuple[nb.Optimizer, list[Any]]:
    opt = nb.SGD(model, lr=0.1, momentum=0.9, weight_decay=1e-3)
    return opt, [nb.StepLR(opt, 3, gamma=0.5)]


def _adam(model: nb.Module) -> tuple[nb.Optimizer, list[Any]]:
    opt = nb.Adam(model, lr=0.02)
    return opt, [nb.ExponentialLR(opt, gamma=0.9)]


OPTIMIZERS: dict[str, Callable[[nb.Module], tuple[nb.Optimizer, list[Any]]]] = {
    "sgd-momentum-steplr": _sgd,
    "adam-exponential": _adam,
}


class Run:
    """A model with batch norm (after a Linear without bias: a bias there has no gradient but
    rounding noise, which Adam would amplify) and dropout, an optimizer with a schedule stepped
    after every step, and one epoch of batches (the last one partial)."""

    def __init__(self, case: Any, optimizer: str, *, clip: float | None = None) -> None:
        dt = case.dtype_name
        self.case, self.clip = case, clip
        self.model = nb.Sequential(
            nb.Linear(5, 16, bias=False, seed=0, dtype=dt), nb.BatchNorm1d(16, dtype=dt), nb.Tanh(),
            nb.Dropout(0.25, seed=7), nb.Linear(16, 3, seed=1, dtype=dt),
            backend=case.backend,
        )
        self.opt, self.scheds = OPTIMIZERS[optimizer](self.model)
        self.loss = nb.CrossEntropyLoss()
        rng = np.random.default_rng(42)
        self.batches = [
            (case.asarray(rng.normal(size=(n, 5))),
             case.asarray(rng.integers(0, 3, size=n), dtype=case.index_dtype_name))
            for n in ROWS
        ]

    def batch(self, t: int) -> tuple[Any, Any]:
        return self.batches[t % len(self.batches)]

    def eager_step(self, t: int, *, device_scalars: bool) -> Any:
        """The eager step; with device_scalars, per-step values made 0-d device arrays after
        it (as a compiled step holds them: a schedule's new rate included)."""
        x, labels = self.batch(t)
        y, backprop = self.model.forward(x)
        loss, dy = self.loss(y, labels)
        self.opt.zero_grad()
        backprop(dy)
        if self.clip is not None:
            nb.clip_grad_norm(self.model, self.clip)
        self.opt.step()
        if device_scalars:
            self.to_device_scalars()
        return loss

    def to_device_scalars(self) -> None:
        load_training_state(training_state(self.model, self.opt, device_scalars=True,
                                           copy=False),
                            self.model, self.opt, device_scalars=True)

    def schedule(self) -> None:
        for sched in self.scheds:
            sched.step()

    def host_state(self) -> dict[str, np.ndarray]:
        state = training_state(self.model, self.opt, schedulers=self.scheds)
        return {k: np.asarray(nb.to_numpy(v)).copy() for k, v in state.items()}


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray], case: Any) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        if _on_cuda(case):
            # Unverified on a GPU: cuBLAS may pick another algorithm for a captured GEMM than
            # for an eager one, so the CUDA rows compare to a tolerance.
            tol = 1e-12 if case.is_float64 else 1e-5
            np.testing.assert_allclose(got[name], want[name], rtol=tol, atol=tol, err_msg=name)
        else:
            assert np.array_equal(got[name], want[name]), (
                name, np.abs(got[name].astype(float) - want[name].astype(float)).max())


def _train_both(case: Any, optimizer: str, *, clip: float | None = None,
                ) -> tuple[Run, Run, GraphStep, list[tuple[Any, Any]]]:
    eager, compiled = Run(case, optimizer, clip=clip), Run(case, optimizer)
    eager.to_device_scalars()
    step = GraphStep(compiled.model, compiled.loss, compiled.opt, engine=_engine(case),
                     clip_grad_norm=clip)
    losses = []
    for t in range(STEPS):
        want = eager.eager_step(t, device_scalars=True)
        got = step(*compiled.batch(t))
        losses.append((got, want))
        eager.schedule()
        compiled.schedule()  # a Python learning rate: the next call writes it into the scalar
        eager.to_device_scalars()
    return eager, compiled, step, losses


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_replayed_steps_equal_the_eager_steps_over_20_steps(case: Any, optimizer: str) -> None:
    """Same operations in the same order on the same arrays: the same bits (parameters, running
    statistics, optimizer state, step counts, counters, each step's loss)."""
    eager, compiled, step, losses = _train_both(case, optimizer)
    _assert_same(compiled.host_state(), eager.host_state(), case)
    _assert_same({str(t): nb.to_numpy(got) for t, (got, _) in enumerate(losses)},
                 {str(t): nb.to_numpy(want) for t, (_, want) in enumerate(losses)}, case)
    assert compiled.opt.state[0]["step"] is not None
    assert int(nb.to_numpy(compiled.opt.state[0]["step"])) == STEPS
    assert compiled.model[3].generator.counter is not None
    assert step.kind == "cuda-graph"
    assert step.compile_seconds > 0.0


def test_with_gradient_clipping(case: Any) -> None:
    """The norm's bound is met on some steps and not on others (a tight bound): still the eager
    step's bits."""
    eager, compiled, step, _ = _train_both(case, "adam-exponential", clip=0.5)
    _assert_same(compiled.host_state(), eager.host_state(), case)
    assert isinstance(step, CompiledStep)


def test_reload_takes_another_state_without_recapture(case: Any) -> None:
    """A whole training state loaded into the objects between calls (from another run, device
    arrays of another identity), then reload(): the next steps continue from it."""
    eager, compiled, step, _ = _train_both(case, "sgd-momentum-steplr")
    other = Run(case, "sgd-momentum-steplr")
    for t in range(3):
        other.eager_step(t, device_scalars=False)
    state = training_state(other.model, other.opt)
    load_training_state(state, compiled.model, compiled.opt, device_scalars=True)
    load_training_state(state, eager.model, eager.opt, device_scalars=True)
    step.reload()
    traces = step.traces
    for t in range(3, 9):
        eager.eager_step(t, device_scalars=True)
        step(*compiled.batch(t))
    assert step.traces == traces
    _assert_same(compiled.host_state(), eager.host_state(), case)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_against_the_eager_step_with_python_per_step_values(case: Any, optimizer: str) -> None:
    """SGD takes the same step from a device learning rate as from a Python one (bit for bit);
    Adam's device bias corrections are a few ulp from the host's."""
    host = Run(case, optimizer)
    for t in range(STEPS):
        host.eager_step(t, device_scalars=False)
        host.schedule()
    _, compiled, _, _ = _train_both(case, optimizer)
    got, want = compiled.host_state(), host.host_state()
    if optimizer.startswith("sgd") and not _on_cuda(case):
        _assert_same(got, want, case)
        return
    tol = 1e-12 if case.is_float64 else 1e-5
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=tol, atol=tol, err_msg=name)


def test_one_capture_per_batch_shape_and_none_for_a_new_learning_rate(case: Any) -> None:
    """The fresh optimizer's first step is eager (it creates the state), then one graph for the
    full batches and one for the partial one, over three epochs and six rate changes."""
    _, _, step, _ = _train_both(case, "adam-exponential")
    assert step.traces == 2
    assert step.eager_steps == 1
    engine = step.engine
    if isinstance(engine, ReplayDouble):
        assert engine.captures == 2
        assert engine.replays == STEPS - 1


def test_zero_host_reads_in_a_replayed_step(case: Any) -> None:
    """Counted on the GPU-like device (CuPy's rules): no call after the captures reads a device
    value, the learning rate written by the schedule included; the double checks every replay."""
    if _on_cuda(case):
        pytest.skip("host reads are counted on the GPU-like test device")
    run = Run(case, "adam-exponential")
    step = GraphStep(run.model, run.loss, run.opt, engine=_engine(case))
    for t in range(len(ROWS) + 1):  # the first step, then both captures
        step(*run.batch(t))
    counts = []
    for t in range(len(ROWS) + 1, STEPS):
        run.schedule()
        with count_host_reads() as reads:
            step(*run.batch(t))
        counts.append(reads.count)
    assert counts == [0] * len(counts)
    engine = step.engine
    assert isinstance(engine, ReplayDouble)
    assert engine.host_reads == [0] * engine.replays


def test_write_back_is_the_compiled_state_and_eager_use_between_calls_is_taken(
        case: Any, tmp_path: Any) -> None:
    """write_back changes nothing (the objects hold the graphs' arrays); an eager step and a
    checkpoint load on the objects between calls are picked up by the next call."""
    eager, compiled, step, _ = _train_both(case, "sgd-momentum-steplr")
    before = compiled.host_state()
    step.write_back()
    _assert_same(compiled.host_state(), before, case)
    _assert_same(compiled.host_state(), eager.host_state(), case)

    t = STEPS
    eager.eager_step(t, device_scalars=True)
    compiled.eager_step(t, device_scalars=False)  # the objects used eagerly: Python rate
    for t in range(STEPS + 1, STEPS + 4):
        eager.eager_step(t, device_scalars=True)
        step(*compiled.batch(t))
    _assert_same(compiled.host_state(), eager.host_state(), case)

    # A checkpoint loaded between calls: host numbers (step counts, learning rate, random
    # counter) and fresh optimizer arrays in the objects; the next call copies them into the
    # graphs' arrays.
    path = tmp_path / "run.npz"
    nb.checkpoint.save(path, compiled.model, compiled.opt)
    for t in range(STEPS + 4, STEPS + 6):
        step(*compiled.batch(t))
    nb.checkpoint.load(path, compiled.model, compiled.opt)
    assert isinstance(compiled.opt.state[0]["step"], int)
    traces = step.traces
    for t in range(STEPS + 4, STEPS + 7):
        eager.eager_step(t, device_scalars=True)
        step(*compiled.batch(t))
    assert step.traces == traces
    _assert_same(compiled.host_state(), eager.host_state(), case)


def test_the_returned_loss_outlives_later_calls(case: Any) -> None:
    run = Run(case, "sgd-momentum-steplr")
    step = GraphStep(run.model, run.loss, run.opt, engine=_engine(case))
    kept = [step(*run.batch(t)) for t in range(6)]
    values = [float(nb.to_numpy(loss)) for loss in kept]
    assert len(set(values)) == len(values)
    assert values[3] != values[0]


def test_immutable_backends_are_refused(case: Any) -> None:
    if supports_views(case.xp):
        pytest.skip(f"{case.backend.name} arrays are mutable: GraphStep runs there")
    run = Run(case, "adam-exponential")
    with pytest.raises(ValueError, match=r"arrays \(\w+\) are immutable.*compile_step"):
        GraphStep(run.model, run.loss, run.opt, engine="double")


def test_auto_needs_a_cuda_device_and_batches_must_be_on_the_model(case: Any) -> None:
    engine = _engine(case)
    run = Run(case, "sgd-momentum-steplr")
    if engine == "double":
        with pytest.raises(ValueError, match=r"CUDA graphs need a CUDA device.*engine='double'"):
            GraphStep(run.model, run.loss, run.opt, engine="auto")
    with pytest.raises(ValueError, match="engine must be 'auto', 'double' or a GraphEngine"):
        GraphStep(run.model, run.loss, run.opt, engine="cuda")
    step = GraphStep(run.model, run.loss, run.opt, engine=engine)
    x, labels = run.batch(0)
    host = np.zeros(tuple(x.shape), dtype=case.dtype_name)
    if case.backend.name != "numpy":
        with pytest.raises(TypeError, match=r"the batch's x is .* but the model is on"):
            step(host, labels)


def test_more_shapes_than_max_graphs_take_the_eager_step(case: Any) -> None:
    eager, compiled = Run(case, "adam-exponential"), Run(case, "adam-exponential")
    eager.to_device_scalars()
    step = GraphStep(compiled.model, compiled.loss, compiled.opt, engine=_engine(case),
                     max_graphs=1)
    for t in range(7):
        eager.eager_step(t, device_scalars=True)
        step(*compiled.batch(t))
    assert step.traces == 1
    assert step.eager_steps == 1 + 2  # the first step, and the partial batch of each epoch
    _assert_same(compiled.host_state(), eager.host_state(), case)


# -- the replay double itself --------------------------------------------------------------------


def test_the_double_catches_a_rebound_array_and_a_host_read(case: Any) -> None:
    if case.backend.name != "gpulike":
        pytest.skip("host reads are counted on the GPU-like test device")
    xp = case.xp
    held = {"a": xp.zeros((), dtype=case.dtype, device=case.backend.device)}

    def fn() -> None:
        held["a"][...] = held["a"] + 1

    double = ReplayDouble()
    handle = double.capture(fn, lambda: [("a", held["a"])])
    double.replay(handle)
    held["a"] = xp.asarray(held["a"], copy=True)  # what a graph would never see
    with pytest.raises(AssertionError, match=r"other arrays than at capture for \['a'\]"):
        double.replay(handle)

    reading = double.capture(lambda: float(held["a"]) and None, lambda: [("a", held["a"])])
    with pytest.raises(AssertionError, match="read device values on the host"):
        double.replay(reading)


def test_a_state_that_never_settles_is_refused(case: Any) -> None:
    """A step that replaces a state array every time (here: the optimizer's moments handed
    back as fresh copies after each call) cannot be captured."""
    engine = _engine(case)
    if engine != "double":
        pytest.skip("the double's rows suffice for the error path")
    run = Run(case, "adam-exponential")
    step = GraphStep(run.model, run.loss, run.opt, engine=engine)
    with pytest.raises(UnsteadyStateError, match="replaced arrays of the training state"):
        for t in range(10):
            step(*run.batch(t))
            st = run.opt.state[0]
            st["m"] = case.xp.asarray(st["m"], copy=True)


# -- the CUDA engines' calls, against fakes of CuPy and PyTorch (no arrays computed) -------------


class _Log:
    def __init__(self) -> None:
        self.calls: list[str] = []


class _FakeEvent:
    def __init__(self, log: _Log, stream: str) -> None:
        self.stream = stream
        log.calls.append(f"record {stream}")


class _FakeCuPyStream:
    def __init__(self, log: _Log, name: str) -> None:
        self.log, self.name = log, name

    def __enter__(self) -> _FakeCuPyStream:
        self.log.calls.append(f"enter {self.name}")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.log.calls.append(f"exit {self.name}")

    def record(self) -> _FakeEvent:
        return _FakeEvent(self.log, self.name)

    def wait_event(self, event: _FakeEvent) -> None:
        self.log.calls.append(f"{self.name} waits for {event.stream}")

    def begin_capture(self) -> None:
        self.log.calls.append("begin_capture")

    def end_capture(self) -> Any:
        self.log.calls.append("end_capture")
        return _FakeCuPyGraph(self.log)


class _FakeCuPyGraph:
    def __init__(self, log: _Log) -> None:
        self.log = log

    def launch(self, stream: Any = None) -> None:
        self.log.calls.append(f"launch on {stream.name}")


def _fake_cupy(log: _Log) -> Any:
    import contextlib
    import types

    current = _FakeCuPyStream(log, "caller")

    class Pool:
        def malloc(self, size: int) -> None:  # pragma: no cover - never allocates here
            raise AssertionError

    @contextlib.contextmanager
    def using_allocator(allocator: Any) -> Any:
        log.calls.append("graph pool on")
        yield
        log.calls.append("graph pool off")

    cuda = types.SimpleNamespace(
        MemoryPool=Pool, using_allocator=using_allocator,
        Stream=lambda non_blocking=False: _FakeCuPyStream(log, "capture"),
        get_current_stream=lambda: current,
    )
    return types.SimpleNamespace(cuda=cuda)


def test_cupy_engine_captures_on_its_stream_and_pool_and_replays_on_the_callers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from nnbackend.compile.graph import CuPyGraphEngine

    log = _Log()
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(log))
    engine = CuPyGraphEngine()
    engine.warmup(lambda: log.calls.append("step"))
    assert log.calls == ["record caller", "capture waits for caller", "enter capture",
                         "graph pool on", "step", "graph pool off", "exit capture",
                         "record capture", "caller waits for capture"]
    log.calls.clear()
    graph = engine.capture(lambda: log.calls.append("step"), list)
    assert log.calls[3:7] == ["graph pool on", "begin_capture", "step", "end_capture"]
    log.calls.clear()
    engine.replay(graph)
    assert log.calls == ["launch on caller"]

    def failing() -> None:
        raise ValueError("a step that fails during capture")

    log.calls.clear()
    with pytest.raises(ValueError, match="fails during capture"):
        engine.capture(failing, list)
    assert "end_capture" in log.calls  # the stream left capture mode


def test_torch_engine_warms_up_and_captures_on_one_side_stream(
        monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    import contextlib

    from nnbackend.compile.graph import TorchGraphEngine

    log = _Log()

    class Stream:
        def __init__(self, device: Any = None, name: str = "side") -> None:
            self.name = name

        def wait_stream(self, other: Any) -> None:
            log.calls.append(f"{self.name} waits for {other.name}")

    current = Stream(name="current")

    class Graph:
        def replay(self) -> None:
            log.calls.append("replay")

    @contextlib.contextmanager
    def on_stream(stream: Any) -> Any:
        log.calls.append(f"on {stream.name}")
        yield

    @contextlib.contextmanager
    def capturing(graph: Any, stream: Any = None) -> Any:
        log.calls.append(f"capture on {stream.name}")
        yield

    for name, value in {"Stream": Stream, "CUDAGraph": Graph, "graph": capturing,
                        "stream": on_stream, "current_stream": lambda: current}.items():
        monkeypatch.setattr(torch.cuda, name, value)
    engine = TorchGraphEngine("cuda:0")
    engine.warmup(lambda: log.calls.append("step"))
    graph = engine.capture(lambda: log.calls.append("step"), list)
    engine.replay(graph)
    assert log.calls == ["side waits for current", "on side", "step", "current waits for side",
                         "side waits for current", "capture on side", "step",
                         "current waits for side", "replay"]


def test_a_failed_capture_leaves_the_objects_usable(case: Any) -> None:
    """An engine whose capture fails: a clear error, and the objects hold the state of before
    the call (the eager step continues from it as if the call had not happened)."""
    if _engine(case) != "double":
        pytest.skip("the double's rows suffice for the error path")

    class Failing(ReplayDouble):
        def capture(self, fn: Callable[[], None], probe: Any, constants: Any = None) -> Any:
            fn()  # the step ran (and rebound its per-step values) before the failure
            raise RuntimeError("operation not permitted when stream is capturing")

    eager, compiled = Run(case, "adam-exponential"), Run(case, "adam-exponential")
    eager.to_device_scalars()
    step = GraphStep(compiled.model, compiled.loss, compiled.opt, engine=Failing())
    eager.eager_step(0, device_scalars=True)
    step(*compiled.batch(0))  # the first step is eager: no capture yet
    with pytest.raises(RuntimeError, match=r"capturing the step as a CUDA graph \(replay-double\) "
                                           r"failed for the batch x of shape \(8, 5\)"):
        step(*compiled.batch(1))
    for t in range(1, 4):
        eager.eager_step(t, device_scalars=True)
        compiled.eager_step(t, device_scalars=True)
    _assert_same(compiled.host_state(), eager.host_state(), case)


def test_return_outputs_gives_the_steps_output_from_a_static_buffer(case: Any) -> None:
    """With return_outputs, each call also returns the model's output of its forward (copied
    out of a static buffer of the graph, like the loss): the eager step's output bit for bit,
    still valid after later calls; the first call of each shape (eager warm-up kept) too."""
    eager, compiled = Run(case, "adam-exponential"), Run(case, "adam-exponential")
    eager.to_device_scalars()
    step = GraphStep(compiled.model, compiled.loss, compiled.opt, engine=_engine(case),
                     return_outputs=True)
    kept, wanted = [], []
    for t in range(2 * len(ROWS)):
        x, labels = eager.batch(t)
        y, backprop = eager.model.forward(x)
        loss, dy = eager.loss(y, labels)
        eager.opt.zero_grad()
        backprop(dy)
        eager.opt.step()
        eager.to_device_scalars()
        got_loss, got_out = step(*compiled.batch(t))
        kept.append((got_loss, got_out))
        wanted.append((nb.to_numpy(loss).copy(), nb.to_numpy(y).copy()))
        eager.schedule()
        compiled.schedule()
        eager.to_device_scalars()
    assert step.traces == 2  # the full batches' graph and the partial one's
    for t, ((got_loss, got_out), (want_loss, want_out)) in enumerate(zip(kept, wanted,
                                                                          strict=True)):
        assert tuple(got_out.shape) == (ROWS[t % len(ROWS)], 3)
        _assert_same({"loss": nb.to_numpy(got_loss), "output": nb.to_numpy(got_out)},
                     {"loss": want_loss, "output": want_out}, case)
    _assert_same(compiled.host_state(), eager.host_state(), case)


# -- the objects usable eagerly after write_back -------------------------------------------------


def _python_rates(run: Run) -> None:
    """Each group's learning rate as a Python float (a schedule needs one), read once."""
    for group in run.opt.param_groups:
        group["lr"] = float(nb.to_numpy(group["lr"]))


def test_write_back_leaves_python_learning_rates_for_schedules(case: Any) -> None:
    """After write_back each group's lr is a Python float again, so schedules made (or stepped)
    on the objects work; the next calls replay with the rate they set (no recapture)."""
    eager, compiled = Run(case, "sgd-momentum-steplr"), Run(case, "sgd-momentum-steplr")
    eager.to_device_scalars()
    step = GraphStep(compiled.model, compiled.loss, compiled.opt, engine=_engine(case))
    for t in range(2 * len(ROWS)):
        eager.eager_step(t, device_scalars=True)
        step(*compiled.batch(t))
    step.write_back()
    assert [type(g["lr"]) for g in compiled.opt.param_groups] == [float]
    assert compiled.opt.param_groups[0]["lr"] == 0.1
    _python_rates(eager)
    scheds = {}
    for name, run in (("eager", eager), ("compiled", compiled)):
        plateau = nb.ReduceLROnPlateau(run.opt, patience=0, factor=0.5)
        plateau.step(1.0)
        plateau.step(2.0)  # no improvement: the rate halves
        scheds[name] = nb.StepLR(run.opt, 2, gamma=0.1)
    assert compiled.opt.param_groups[0]["lr"] == 0.05
    traces = step.traces
    for t in range(2 * len(ROWS), 4 * len(ROWS)):
        eager.to_device_scalars()
        eager.eager_step(t, device_scalars=True)
        step(*compiled.batch(t))
        step.write_back()
        _python_rates(eager)
        for sched in scheds.values():
            sched.step()
    assert step.traces == traces
    assert compiled.opt.param_groups[0]["lr"] == eager.opt.param_groups[0]["lr"]
    _assert_same(compiled.host_state(), eager.host_state(), case)


def test_fit_compile_with_a_schedule_in_on_epoch_on_the_replay_double(
        case: Any, monkeypatch: Any) -> None:
    """fit(compile=True) writes the state back before on_epoch: a ReduceLROnPlateau made and
    stepped there reads and sets Python rates, and the next epoch's replays use them."""
    from functools import partial

    import nnbackend.compile as compile_package
    from nnbackend.compile import graph
    from nnbackend.train import fit

    if _engine(case) != "double":
        pytest.skip("the replay double stands in for CUDA graphs on rows with mutable arrays")
    monkeypatch.setattr(compile_package, "_graphs_apply", lambda library, device: True)
    monkeypatch.setattr(graph, "GraphStep", partial(graph.GraphStep, engine="double"))
    histories, rates = [], []
    for compile in (True, False):
        run = Run(case, "sgd-momentum-steplr")
        made: list[Any] = []

        def on_epoch(epoch: int, record: dict[str, float], run: Run = run,
                     made: list[Any] = made) -> None:
            if not made:  # a schedule made on the objects after the first epoch's steps
                made.append(nb.ReduceLROnPlateau(run.opt, patience=0, factor=0.5))
            made[0].step(float(epoch))  # never improves: the rate halves after epoch 0

        data = [run.batch(t) for t in range(len(ROWS))]
        histories.append(fit(run.model, run.loss, run.opt, data, epochs=3, progress=False,
                             on_epoch=on_epoch, compile=compile))
        rates.append([g["lr"] for g in run.opt.param_groups])
    assert histories[0].step_kind == "cuda-graph"
    assert rates[0] == rates[1] == [0.1 * 0.5 ** 2]
    tol = 1e-12 if case.is_float64 else 1e-5
    for got, want in zip(histories[0].epochs, histories[1].epochs, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=tol)


# -- settings a graph holds as constants ---------------------------------------------------------


@pytest.mark.parametrize(("optimizer", "changes"), [
    ("sgd-momentum-steplr", {"momentum": 0.5, "weight_decay": 0.0}),
    ("adam-exponential", {"betas": (0.8, 0.99), "eps": 1e-6}),
])
def test_a_changed_hyperparameter_recaptures_the_graphs(case: Any, optimizer: str,
                                                        changes: dict[str, Any]) -> None:
    """Settings other than the learning rate are constants of a captured graph: changing one
    between calls drops the graphs, and each shape is captured once again with the new value
    (the replay double asserts that no replay runs on settings changed since its capture)."""
    eager, compiled = Run(case, optimizer), Run(case, optimizer)
    eager.to_device_scalars()
    step = GraphStep(compiled.model, compiled.loss, compiled.opt, engine=_engine(case))
    for t in range(2 * len(ROWS)):
        eager.eager_step(t, device_scalars=True)
        step(*compiled.batch(t))
    assert step.traces == 2
    for run in (eager, compiled):
        for name, value in changes.items():
            run.opt.param_groups[0][name] = value
    for t in range(2 * len(ROWS), 4 * len(ROWS)):
        eager.eager_step(t, device_scalars=True)
        step(*compiled.batch(t))
    assert step.traces == 4  # both shapes once more, then replays
    engine = step.engine
    if isinstance(engine, ReplayDouble):
        assert engine.captures == 4
    _assert_same(compiled.host_state(), eager.host_state(), case)


def test_the_double_catches_a_setting_changed_since_capture(case: Any) -> None:
    """The constants a graph holds (the optimizer's settings other than the learning rate):
    a replay after one of them changed is what a real graph would get silently wrong."""
    if case.backend.name != "numpy":
        pytest.skip("no arrays computed: one row suffices")
    settings = {"param_groups/0/momentum": 0.9}
    double = ReplayDouble()
    handle = double.capture(lambda: None, lambda: [], constants=lambda: dict(settings))
    double.replay(handle)
    settings["param_groups/0/momentum"] = 0.5
    with pytest.raises(AssertionError, match=r"param_groups/0/momentum.*0\.9.*0\.5"):
        double.replay(handle)


# -- the arguments -------------------------------------------------------------------------------


def test_the_arguments_are_checked_as_for_every_compiled_step(case: Any) -> None:
    """An optimizer over parameters of another model and a negative clipping bound are refused
    with the errors of every kind of compiled step."""
    engine = _engine(case)
    run, other = Run(case, "sgd-momentum-steplr"), Run(case, "sgd-momentum-steplr")
    with pytest.raises(ValueError, match=r"GraphStep: SGD holds .* \(params\[0\]\), which is not "
                                         r"a parameter of the model"):
        GraphStep(run.model, run.loss, other.opt, engine=engine)
    with pytest.raises(ValueError, match=r"GraphStep.*clip_grad_norm"):
        GraphStep(run.model, run.loss, run.opt, engine=engine, clip_grad_norm=-1.0)
    with pytest.raises(TypeError, match=r"GraphStep: loss_fn must be callable"):
        GraphStep(run.model, None, run.opt, engine=engine)  # type: ignore[arg-type]
