"""Compiled training steps (nnbackend.compile_step): on JAX one jax.jit program of the whole step
agrees with the eager step over 20 steps for every optimizer (dropout, batch norm, a schedule
changing the learning rate between steps, gradient clipping), traces once (twice with a last
partial batch), writes back bit for bit, leaves no tracer in any cache or object, and resumes
from checkpoints exactly; checkpoints of compiled and eager runs load into either. On the other
rows compile_step gives the eager step (or the CUDA graph step where CUDA is), which must equal
the plain eager step.

JAX is float32 only here (64-bit types off): XLA fuses and reorders reductions, and Adam's bias
corrections are computed on the device, so compiled and eager agree to a few ulp after one step
and to 1e-5 relative after 20."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from _kinds import expected_kind

import nnbackend as nb
from nnbackend.backend import supports_views
from nnbackend.compile import EagerStep, JaxStep
from nnbackend.state import training_state

STEPS = 20
ROWS = (8, 8, 5)  # one epoch: two full batches and a last, partial one


def _sgd(model: nb.Module) -> nb.Optimizer:
    return nb.SGD(model, lr=0.1, weight_decay=1e-3)


def _momentum(model: nb.Module) -> nb.Optimizer:
    return nb.SGD(model, lr=0.05, momentum=0.9, nesterov=True)


def _adam(model: nb.Module) -> nb.Optimizer:
    return nb.Adam(model, lr=0.02, amsgrad=True)


def _adamw(model: nb.Module) -> nb.Optimizer:
    decay = [p for name, p in model.named_parameters() if name.endswith("weight")]
    rest = [p for name, p in model.named_parameters() if not name.endswith("weight")]
    return nb.AdamW([{"params": decay}, {"params": rest, "weight_decay": 0.0, "lr": 0.01}],
                    lr=0.03, weight_decay=0.1)


def _rmsprop(model: nb.Module) -> nb.Optimizer:
    return nb.RMSprop(model, lr=0.01, centered=True, momentum=0.5)


OPTIMIZERS: dict[str, Callable[[nb.Module], nb.Optimizer]] = {
    "sgd": _sgd, "momentum": _momentum, "adam": _adam, "adamw": _adamw, "rmsprop": _rmsprop,
}


class Run:
    """A model with batch norm and dropout, an optimizer whose rate a schedule changes after
    every step, fixed batches; trained eagerly or through compile_step."""

    def __init__(self, case: Any, optimizer: str, *, rows: tuple[int, ...] = (8, 8, 8),
                 clip: float | None = None) -> None:
        self.case = case
        self.model = nb.Sequential(
            nb.Linear(5, 16, seed=0, dtype=case.dtype_name), nb.Tanh(),
            nb.BatchNorm1d(16, dtype=case.dtype_name),
            nb.Dropout(0.25, seed=7),
            nb.Linear(16, 3, seed=1, dtype=case.dtype_name), backend=case.backend,
        )
        self.opt = OPTIMIZERS[optimizer](self.model)
        self.sched = nb.StepLR(self.opt, 4, gamma=0.5)
        self.loss = nb.CrossEntropyLoss()
        self.clip = clip
        rng = np.random.default_rng(42)
        self.batches = [
            (case.asarray(rng.normal(size=(n, 5))),
             case.asarray(rng.integers(0, 3, size=n), dtype=case.index_dtype_name))
            for n in rows
        ]
        self.step: Any = None

    def compile(self) -> Any:
        self.step = nb.compile_step(self.model, self.loss, self.opt, clip_grad_norm=self.clip)
        return self.step

    def train(self, steps: range) -> list[float]:
        losses = []
        for t in steps:
            x, labels = self.batches[t % len(self.batches)]
            if self.step is not None:
                loss = self.step(x, labels)
            else:
                y, backprop = self.model.forward(x)
                loss, dy = self.loss(y, labels)
                self.opt.zero_grad()
                backprop(dy)
                if self.clip is not None:
                    nb.clip_grad_norm(self.model, self.clip)
                self.opt.step()
            self.sched.step()
            losses.append(float(nb.to_numpy(loss)))
        return losses

    def arrays(self) -> dict[str, np.ndarray]:
        """Parameters, buffers and optimizer state arrays (as the objects hold them)."""
        if self.step is not None:
            self.step.write_back()
        state = training_state(self.model, self.opt)
        return {k: nb.to_numpy(v).copy() for k, v in state.items()
                if k.startswith(("model/", "optim/state/")) and not k.endswith("/step")}

    def save(self, path: Any) -> None:
        if self.step is not None:
            self.step.write_back()
        nb.checkpoint.save(path, self.model, self.opt, sched=self.sched.state_dict())

    def load(self, path: Any) -> None:
        meta = nb.checkpoint.load(path, self.model, self.opt)
        self.sched.load_state_dict(meta["sched"])


def _assert_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert np.array_equal(got[name], want[name]), (name, np.abs(got[name] - want[name]).max())


def _assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], *, rtol: float
                  ) -> None:
    """Each array to ``rtol`` of its own scale (an entry near zero on the array's scale)."""
    assert got.keys() == want.keys()
    for name in want:
        scale = max(float(np.abs(want[name]).max()), 1e-3)
        err = float(np.abs(got[name].astype(np.float64) - want[name]).max())
        assert err <= rtol * scale, (name, err / scale)


def _ulps(case: Any, n: float) -> float:
    return n * float(np.finfo(case.dtype_name).eps)


def _assert_matches_eager(case: Any, compiled: Run, eager: Run, *, steps: int) -> None:
    """Bit for bit where the eager step runs; to float32 rounding for jax.jit (a few ulp after
    one step, 1e-5 after 20); to the dtype's tolerance for CUDA graphs."""
    kind = expected_kind(case)
    if kind == "eager":
        _assert_equal(compiled.arrays(), eager.arrays())
    elif kind == "jax-jit":
        _assert_close(compiled.arrays(), eager.arrays(),
                      rtol=_ulps(case, 8) if steps == 1 else 1e-5)
    else:
        _assert_close(compiled.arrays(), eager.arrays(), rtol=case.rtol)


@pytest.fixture(scope="module")
def runs() -> dict[tuple[str, str], tuple[Run, Run, list[float], list[float]]]:
    """Trained pairs shared by the tests of this module (each JAX compilation costs a few
    tenths of a second): (compiled run, eager run, their losses), by (row, optimizer)."""
    return {}


def _pair(runs: dict[Any, Any], case: Any, optimizer: str
          ) -> tuple[Run, Run, list[float], list[float]]:
    key = (case.id, optimizer)
    if key not in runs:
        compiled, eager = Run(case, optimizer), Run(case, optimizer)
        compiled.compile()
        runs[key] = (compiled, eager, compiled.train(range(STEPS)), eager.train(range(STEPS)))
    return runs[key]  # type: ignore[no-any-return]


# -- agreement with the eager step --------------------------------------------------------------


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_compiled_and_eager_steps_agree_over_20_steps(case: Any, optimizer: str,
                                                       runs: dict[Any, Any]) -> None:
    compiled, eager, compiled_losses, eager_losses = _pair(runs, case, optimizer)
    step = compiled.step
    assert step.kind == expected_kind(case)
    assert isinstance(step, nb.CompiledStep)
    lrs = [g["lr"] for g in compiled.opt.param_groups]
    assert lrs == [g["lr"] for g in eager.opt.param_groups]
    assert lrs == [g["lr"] * 0.5 ** (STEPS // 4) for g in OPTIMIZERS[optimizer](
        Run(case, optimizer).model).param_groups]  # five rates over the 20 steps
    if step.kind == "eager":
        assert isinstance(step, EagerStep)
        assert step.traces == 0
        assert "nothing compiles" in step.note
        assert compiled_losses == eager_losses
    elif step.kind == "jax-jit":
        assert isinstance(step, JaxStep)
        assert step.traces == 1  # 20 steps, 5 learning rates: one program
        assert step.steps == STEPS
        assert step.compile_seconds > 0
        np.testing.assert_allclose(compiled_losses, eager_losses, rtol=1e-5)
    _assert_matches_eager(case, compiled, eager, steps=STEPS)


def test_a_few_ulp_after_one_step(case: Any) -> None:
    compiled, eager = Run(case, "adam"), Run(case, "adam")
    compiled.compile()
    compiled.train(range(1))
    eager.train(range(1))
    _assert_matches_eager(case, compiled, eager, steps=1)


def test_with_gradient_clipping(case: Any) -> None:
    compiled, eager = Run(case, "momentum", clip=0.5), Run(case, "momentum", clip=0.5)
    compiled.compile()
    compiled.train(range(6))
    eager.train(range(6))
    _assert_matches_eager(case, compiled, eager, steps=6)


def _partial(runs: dict[Any, Any], case: Any) -> tuple[Run, Run]:
    """A compiled and an eager run of three epochs whose last batch is partial (shared)."""
    key = (case.id, "partial")
    if key not in runs:
        compiled, eager = Run(case, "adam", rows=ROWS), Run(case, "adam", rows=ROWS)
        compiled.compile()
        compiled.train(range(3 * len(ROWS)))
        eager.train(range(3 * len(ROWS)))
        runs[key] = (compiled, eager)
    return runs[key]  # type: ignore[no-any-return]


def test_a_last_partial_batch_compiles_once_more(case: Any, runs: dict[Any, Any]) -> None:
    compiled, eager = _partial(runs, case)
    if compiled.step.kind != "eager":
        assert compiled.step.traces == 2  # the full batches' program and the partial one's
    _assert_matches_eager(case, compiled, eager, steps=3 * len(ROWS))


def test_changing_the_training_mode_selects_another_program(case: Any) -> None:
    compiled, eager = Run(case, "sgd"), Run(case, "sgd")
    compiled.compile()
    for run in (compiled, eager):
        run.train(range(2))
        run.model.eval()  # running statistics used, not updated; no dropout
        run.train(range(2, 4))
        run.model.train()
        run.train(range(4, 6))
    if compiled.step.kind == "jax-jit":
        assert compiled.step.traces == 2
    _assert_matches_eager(case, compiled, eager, steps=6)


def test_a_parameter_without_a_gradient_keeps_no_optimizer_state(case: Any) -> None:
    """Frozen after the step was made: the program's first trace steps it with the rest (zeros
    and a count of 0, as for every fresh parameter), finds it got no gradient and traces once
    more; written back, it holds no state, as in the eager run."""
    compiled, eager = Run(case, "adam"), Run(case, "adam")
    compiled.compile()
    for run in (compiled, eager):
        run.model[4].bias.requires_grad = False
    compiled.train(range(4))
    eager.train(range(4))
    if compiled.step.kind == "jax-jit":
        assert compiled.step.traces == 2  # once more for the state's new keys, then stable
    compiled.step.write_back()
    assert compiled.opt.state[-1] == eager.opt.state[-1] == {}
    _assert_matches_eager(case, compiled, eager, steps=4)


# -- the state between calls ----------------------------------------------------------------------


def test_write_back_is_the_compiled_state_bit_for_bit(case: Any, runs: dict[Any, Any]) -> None:
    compiled = _pair(runs, case, "adamw")[0]
    step = compiled.step
    before = {k: nb.to_numpy(v).copy() for k, v in training_state(compiled.model,
                                                                  compiled.opt).items()}
    step.write_back()
    objects = training_state(compiled.model, compiled.opt)
    if step.kind != "jax-jit":  # the objects hold the state: nothing moves
        _assert_equal({k: nb.to_numpy(v) for k, v in objects.items()}, before)
        return
    held = step.state
    lrs = [k for k in objects if k.endswith("/lr")]
    assert sorted(objects) == sorted([*held, *lrs])
    assert [float(objects[k]) for k in lrs] == [g["lr"] for g in compiled.opt.param_groups]
    for key, value in held.items():
        got, want = nb.to_numpy(objects[key]), nb.to_numpy(value)
        assert np.array_equal(got, want), key
        if want.dtype.kind == "f":
            assert got.dtype == want.dtype, key
    assert compiled.opt.state[0]["step"] == STEPS  # Python numbers again: usable eagerly
    assert compiled.model[3].generator.counter == STEPS
    assert nb.predict(compiled.model, compiled.batches[0][0]).shape == (8, 3)


def test_no_tracer_is_left_in_a_cache_or_an_object(case: Any, runs: dict[Any, Any]) -> None:
    if case.backend.name != "jax":
        pytest.skip("tracers are jax.jit's")
    import jax

    compiled = _pair(runs, case, "rmsprop")[0]
    partial = _partial(runs, case)[0]  # both shapes traced
    found = [where for where, value in _everything(compiled, partial)
             if isinstance(value, jax.core.Tracer)]
    assert found == []
    from nnbackend.functional import losses

    assert losses._CLASS_RANGES  # eager steps fill the cache; traces leave it alone
    # and an eager step after the traces still works (it would trip over a leaked tracer)
    eager = Run(case, "adam", rows=ROWS)
    eager.train(range(2))


def _everything(*runs: Run) -> Iterator[tuple[str, Any]]:
    """Every value held by nnbackend's modules (module-level and class-level containers) and
    by the runs' objects (modules' attributes, parameters, optimizer state and settings)."""
    for name, module in list(sys.modules.items()):
        if name == "nnbackend" or name.startswith("nnbackend."):
            for attr, value in vars(module).items():
                yield from _inside(f"{name}.{attr}", value)
                if isinstance(value, type) and value.__module__ == name:
                    for cattr, cvalue in vars(value).items():
                        yield from _inside(f"{name}.{attr}.{cattr}", cvalue)
    for k, run in enumerate(runs):
        for path, m in run.model.named_modules():
            for attr, value in vars(m).items():
                yield from _inside(f"run{k}.model[{path}].{attr}", value)
        for i, p in enumerate(run.opt.params):
            yield from _inside(f"run{k}.params[{i}]", [p.data, p.grad])
        for i, st in enumerate(run.opt.state):
            yield from _inside(f"run{k}.opt.state[{i}]", st)
        for g in run.opt.param_groups:
            yield from _inside(f"run{k}.opt.param_groups[{g.index}]", g.settings)


def _inside(where: str, value: Any, depth: int = 3) -> Iterator[tuple[str, Any]]:
    yield where, value
    if depth == 0:
        return
    if isinstance(value, dict):
        for key, item in list(value.items()):
            yield from _inside(f"{where}[{key!r}]", item, depth - 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in list(value):
            yield from _inside(f"{where}[]", item, depth - 1)


def test_the_objects_keep_their_state_until_write_back(case: Any) -> None:
    if case.backend.name != "jax":
        pytest.skip("the eager step and CUDA graphs step the objects themselves")
    run = Run(case, "adam")
    before = {k: nb.to_numpy(v).copy() for k, v in training_state(run.model, run.opt).items()}
    run.compile()
    run.step(*run.batches[0])
    run.step(*run.batches[1])
    now = {k: nb.to_numpy(v) for k, v in training_state(run.model, run.opt).items()}
    _assert_equal(now, before)  # the fresh optimizer still has no state: nothing was stepped
    assert run.opt.state[0] == {}
    run.step.write_back()
    assert run.opt.state[0]["step"] == 2


def test_without_donation_the_previous_state_stays_readable(case: Any) -> None:
    if case.backend.name != "jax":
        pytest.skip("buffer donation is jax.jit's")
    kept, donated = Run(case, "momentum"), Run(case, "momentum")
    kept.step = nb.compile_step(kept.model, kept.loss, kept.opt, donate=False)
    donated.compile()
    first, given = kept.step.state, donated.step.state
    kept.train(range(3))
    donated.train(range(3))
    assert "donated" in donated.step.note and "donated" not in kept.step.note
    assert np.isfinite(nb.to_numpy(first["model/0.weight"])).all()  # not deleted
    assert given["model/0.weight"].is_deleted()  # updated in place by XLA
    _assert_equal(kept.arrays(), donated.arrays())


def test_reload_takes_the_objects_state_again(case: Any) -> None:
    """Compiled steps with eager steps on the objects in between (write_back, an eager step,
    then reload(), or nothing: the next call notices the objects changed): the same as eager
    steps throughout."""
    compiled, eager = Run(case, "rmsprop"), Run(case, "rmsprop")
    step = compiled.compile()
    compiled.train(range(2))
    step.write_back()
    step_was, compiled.step = compiled.step, None
    compiled.train(range(2, 3))  # eagerly, on the objects
    compiled.step = step_was
    step.reload()
    compiled.train(range(3, 5))
    step.write_back()
    compiled.step = None
    compiled.train(range(5, 6))  # eagerly again: the next call notices by itself
    compiled.step = step_was
    compiled.train(range(6, 8))
    eager.train(range(8))
    _assert_matches_eager(case, compiled, eager, steps=8)


# -- checkpoints --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def halves(tmp_path_factory: Any) -> dict[str, tuple[Any, Any]]:
    """Checkpoints after half the steps of a compiled and an eager run, by row."""
    return {}


def _checkpoints(halves: dict[str, tuple[Any, Any]], case: Any, tmp_path_factory: Any
                 ) -> tuple[Any, Any]:
    """(compiled run's checkpoint, eager run's checkpoint) after STEPS // 2 steps of Adam."""
    if case.id not in halves:
        folder = tmp_path_factory.mktemp(f"checkpoints-{case.id}")
        compiled, eager = Run(case, "adam"), Run(case, "adam")
        compiled.compile()
        compiled.train(range(STEPS // 2))
        eager.train(range(STEPS // 2))
        compiled.save(folder / "compiled.npz")
        eager.save(folder / "eager.npz")
        halves[case.id] = (folder / "compiled.npz", folder / "eager.npz")
    return halves[case.id]


def test_a_compiled_run_resumed_from_a_checkpoint_equals_the_uninterrupted_run(
        case: Any, runs: dict[Any, Any], halves: dict[str, Any], tmp_path_factory: Any) -> None:
    whole = _pair(runs, case, "adam")[0]  # STEPS compiled steps in one go
    resumed = Run(case, "adam")  # fresh objects ...
    resumed.load(_checkpoints(halves, case, tmp_path_factory)[0])
    resumed.compile()  # ... and a new compiled step over them
    resumed.train(range(STEPS // 2, STEPS))
    _assert_equal(resumed.arrays(), whole.arrays())


def test_checkpoints_of_compiled_and_eager_runs_load_into_either(
        case: Any, runs: dict[Any, Any], halves: dict[str, Any], tmp_path_factory: Any) -> None:
    compiled_whole, eager_whole = _pair(runs, case, "adam")[:2]
    from_compiled, from_eager = _checkpoints(halves, case, tmp_path_factory)
    eager_then_compiled = Run(case, "adam")
    eager_then_compiled.load(from_eager)
    eager_then_compiled.compile()
    eager_then_compiled.train(range(STEPS // 2, STEPS))
    compiled_then_eager = Run(case, "adam")
    compiled_then_eager.load(from_compiled)
    compiled_then_eager.train(range(STEPS // 2, STEPS))
    _assert_matches_eager(case, eager_then_compiled, eager_whole, steps=STEPS)
    _assert_matches_eager(case, compiled_whole, compiled_then_eager, steps=STEPS)


def test_a_checkpoint_loaded_into_the_objects_is_taken_by_the_next_call(
        case: Any, runs: dict[Any, Any], halves: dict[str, Any], tmp_path_factory: Any) -> None:
    """Loaded before any call: taken without reload(). Loaded after compiled steps not written
    back: JaxStep refuses (either state could be meant) until reload() says which."""
    whole = _pair(runs, case, "adam")[0]
    from_compiled = _checkpoints(halves, case, tmp_path_factory)[0]
    run = Run(case, "adam")
    run.compile()
    run.load(from_compiled)  # the objects change under the step: it takes them
    run.train(range(STEPS // 2, STEPS))
    _assert_equal(run.arrays(), whole.arrays())

    again = Run(case, "adam")
    again.compile()
    again.train(range(2))
    again.load(from_compiled)
    if again.step.kind == "jax-jit":
        with pytest.raises(RuntimeError, match=r"2 compiled step.*write_back.*reload"):
            again.step(*again.batches[0])
        again.step.reload()
    again.train(range(STEPS // 2, STEPS))
    _assert_equal(again.arrays(), whole.arrays())


# -- the dispatch and the arguments ------------------------------------------------------------


def test_arguments_are_checked(case: Any) -> None:
    run = Run(case, "sgd")
    other = Run(case, "sgd")
    with pytest.raises(TypeError, match="model must be a Module"):
        nb.compile_step(run.opt, run.loss, run.opt)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="optimizer must be an Optimizer"):
        nb.compile_step(run.model, run.loss, run.model)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        nb.compile_step(run.model, 3, run.opt)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a parameter of the model"):
        nb.compile_step(run.model, run.loss, other.opt)
    with pytest.raises(ValueError, match="clip_grad_norm"):
        nb.compile_step(run.model, run.loss, run.opt, clip_grad_norm=-1.0)
    with pytest.raises(TypeError, match="JaxStep: model must be a Module"):
        JaxStep(run.opt, run.loss, run.opt)  # type: ignore[arg-type]
    if case.backend.name != "jax":
        with pytest.raises(ValueError, match=f"on {case.backend.name}, not JAX"):
            JaxStep(run.model, run.loss, run.opt)


def test_the_eager_step_says_so_once_per_backend(case: Any, caplog: Any,
                                                 monkeypatch: Any) -> None:
    if expected_kind(case) != "eager":
        pytest.skip("this row compiles")
    import nnbackend.compile as compile_package

    monkeypatch.setattr(compile_package, "_said_eager", set())
    with caplog.at_level(logging.INFO, logger="nnbackend.compile"):
        first = Run(case, "sgd").compile()
        Run(case, "sgd").compile()
    said = [r.getMessage() for r in caplog.records if r.name == "nnbackend.compile"]
    assert said == [f"compile_step: {first.note}"]
    assert case.backend.name in first.note


def test_without_the_graph_module_cuda_backends_take_the_eager_step(
        case: Any, monkeypatch: Any) -> None:
    """Where CUDA graphs would apply (here pretended on a row with mutable arrays) but
    nnbackend.compile.graph cannot be imported, the eager step runs and its note says why."""
    if expected_kind(case) != "eager" or not supports_views(case.xp):
        pytest.skip("a row with mutable arrays where nothing compiles stands in for CUDA")
    import nnbackend.compile as compile_package

    monkeypatch.setattr(compile_package, "_graphs_apply", lambda library, device: True)
    monkeypatch.setitem(sys.modules, "nnbackend.compile.graph", None)  # import fails
    compiled, eager = Run(case, "adam"), Run(case, "adam")
    step = compiled.compile()
    assert isinstance(step, EagerStep)
    assert "CUDA graphs are unavailable" in step.note
    compiled.train(range(3))
    eager.train(range(3))
    _assert_equal(compiled.arrays(), eager.arrays())


def test_return_outputs_gives_the_steps_output_too(case: Any) -> None:
    """``compile_step(..., return_outputs=True)``: each call returns ``(loss, output)``, the
    output of the step's own forward (training mode: dropout applied), as the eager step's; one
    program still, the same training as without it."""
    compiled, eager = Run(case, "adam", rows=ROWS), Run(case, "adam", rows=ROWS)
    step = nb.compile_step(compiled.model, compiled.loss, compiled.opt, return_outputs=True)
    got, want = [], []
    for t in range(2 * len(ROWS)):
        x, labels = compiled.batches[t % len(ROWS)]
        loss, out = step(x, labels)
        got.append((nb.to_numpy(loss).copy(), nb.to_numpy(out).copy()))
        y, backprop = eager.model.forward(x)
        eager_loss, dy = eager.loss(y, labels)
        eager.opt.zero_grad()
        backprop(dy)
        eager.opt.step()
        want.append((nb.to_numpy(eager_loss).copy(), nb.to_numpy(y).copy()))
        compiled.sched.step()
        eager.sched.step()
    if step.kind != "eager":
        assert step.traces == 2  # the full batches' program and the partial one's
    compiled.step = step
    for t, ((loss, out), (eager_loss, y)) in enumerate(zip(got, want, strict=True)):
        assert out.shape == (ROWS[t % len(ROWS)], 3)
        outputs = {"loss": np.asarray(loss), "output": out}
        eager_outputs = {"loss": np.asarray(eager_loss), "output": y}
        if step.kind == "eager":
            _assert_equal(outputs, eager_outputs)
        else:
            _assert_close(outputs, eager_outputs, rtol=1e-5)
    _assert_matches_eager(case, compiled, eager, steps=2 * len(ROWS))


def test_a_data_parallel_model_is_refused(case: Any) -> None:
    """Its gradients are all-reduced by host collectives inside the step: nothing compiles it."""
    from nnbackend.distributed import DistributedDataParallel
    from nnbackend.distributed.comm import SingleProcess

    run = Run(case, "sgd")
    wrapped = DistributedDataParallel(run.model, comm=SingleProcess())
    with pytest.raises(ValueError, match=r"compile_step: a DistributedDataParallel model cannot "
                                         r"be compiled.*rank 0 of 1.*compile=False"):
        nb.compile_step(wrapped, run.loss, nb.SGD(wrapped, lr=0.1))
    if supports_views(case.xp):
        from nnbackend.compile.graph import GraphStep

        with pytest.raises(ValueError, match="GraphStep: a DistributedDataParallel model"):
            GraphStep(wrapped, run.loss, nb.SGD(wrapped, lr=0.1), engine="double")


def test_an_optimizer_state_loaded_between_calls_is_taken(case: Any) -> None:
    """An optimizer-only load (the model untouched) after a write-back: the next call takes
    it, as the eager step would continue from it."""
    compiled, eager = Run(case, "adam"), Run(case, "adam")
    compiled.compile()
    compiled.train(range(3))
    eager.train(range(3))
    compiled.step.write_back()
    saved = eager.opt.state_dict()
    saved["state"] = [{**st, "step": 1} for st in saved["state"]]  # another count: visible
    compiled.opt.load_state_dict(saved)
    eager.opt.load_state_dict(saved)
    compiled.train(range(3, 4))
    eager.train(range(3, 4))
    compiled.step.write_back()
    assert compiled.opt.state_dict()["state"][0]["step"] == 2
    _assert_matches_eager(case, compiled, eager, steps=4)


def test_a_changed_hyperparameter_other_than_lr_compiles_again(case: Any) -> None:
    """momentum and weight decay are constants of the program: changing them between calls
    compiles once more (on JAX) and the steps follow the new values, as eager ones do."""
    compiled, eager = Run(case, "momentum"), Run(case, "momentum")
    compiled.compile()
    compiled.train(range(2))
    eager.train(range(2))
    traces = compiled.step.traces
    for run in (compiled, eager):
        run.opt.param_groups[0]["momentum"] = 0.5
        run.opt.param_groups[0]["weight_decay"] = 0.05
    compiled.train(range(2, 5))
    eager.train(range(2, 5))
    if compiled.step.kind == "jax-jit":
        assert compiled.step.traces == traces + 1
    _assert_matches_eager(case, compiled, eager, steps=5)


def test_a_host_batch_is_refused_where_the_step_is_compiled(case: Any) -> None:
    run = Run(case, "sgd")
    step = run.compile()
    if step.kind != "jax-jit":
        pytest.skip("only a compiled step would copy host data in silently")
    x, labels = run.batches[0]
    with pytest.raises(TypeError, match=r"batch's x is ndarray, not an array on"):
        step(nb.to_numpy(x), labels)
