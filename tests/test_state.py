"""Training state in and out as arrays (nnbackend.state): bit-identical continuation from both
forms of the per-step values, device scalars that stay on the device (zero host reads on the
GPU-like rows), a jitted pure step traced once, and validation before any change."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import Case, make_case

import nnbackend as nb
from nnbackend.backend import dtype_name
from nnbackend.optim._scalars import adam_factors
from nnbackend.state import load_training_state, training_state
from nnbackend.testing import count_host_reads

K, M, N = 3, 2, 3  # host steps, device-scalar steps before the state is taken, steps after


def _sgd(model: nb.Module) -> tuple[nb.Optimizer, list[Any]]:
    opt = nb.SGD(model, lr=0.2, momentum=0.9, nesterov=True, weight_decay=1e-3)
    warmup = nb.LinearWarmup(opt, 2, after=nb.CosineAnnealingLR(opt, T_max=6))
    return opt, [warmup]


def _adam(model: nb.Module) -> tuple[nb.Optimizer, list[Any]]:
    return nb.Adam(model, lr=0.02), []


def _adamw(model: nb.Module) -> tuple[nb.Optimizer, list[Any]]:
    decay = [p for name, p in model.named_parameters() if name.endswith("weight")]
    rest = [p for name, p in model.named_parameters() if not name.endswith("weight")]
    opt = nb.AdamW([{"params": decay}, {"params": rest, "weight_decay": 0.0, "lr": 0.01}],
                   lr=0.03, weight_decay=0.1, amsgrad=True)
    return opt, [nb.ExponentialLR(opt, gamma=0.8)]


def _rmsprop(model: nb.Module) -> tuple[nb.Optimizer, list[Any]]:
    opt = nb.RMSprop(model, lr=0.01, centered=True, momentum=0.5)
    return opt, [nb.StepLR(opt, 2, gamma=0.5)]


OPTIMIZERS: dict[str, Callable[[nb.Module], tuple[nb.Optimizer, list[Any]]]] = {
    "sgd-nesterov-warmup-cosine": _sgd,
    "adam": _adam,
    "adamw-groups-amsgrad-exponential": _adamw,
    "rmsprop-centered-momentum": _rmsprop,
}
# Their device-scalar steps agree with the host's bit for bit (the learning rate is rounded once
# to the parameters' dtype either way); Adam's bias corrections are computed on the device.
EXACT_ACROSS_FORMS = ("sgd-nesterov-warmup-cosine", "rmsprop-centered-momentum")


class Run:
    """A model with Dropout, an optimizer and its schedules, trained on fixed batches."""

    def __init__(self, case: Any, optimizer: str, seeds: tuple[int, int] = (0, 1)) -> None:
        self.case = case
        self.model = nb.Sequential(
            nb.Linear(5, 16, seed=seeds[0], dtype=case.dtype_name), nb.Tanh(),
            nb.Dropout(0.25, seed=7),  # configuration: the same stream in every copy
            nb.Linear(16, 3, seed=seeds[1], dtype=case.dtype_name), backend=case.backend,
        )
        self.opt, self.scheds = OPTIMIZERS[optimizer](self.model)
        self.loss = nb.CrossEntropyLoss()
        rng = np.random.default_rng(42)
        self.batches = [
            (case.asarray(rng.normal(size=(8, 5))),
             case.asarray(rng.integers(0, 3, size=8), dtype=case.index_dtype_name))
            for _ in range(3)
        ]
        self.device_scalars = False

    def train(self, steps: range) -> None:
        for t in steps:
            x, labels = self.batches[t % len(self.batches)]
            y, backprop = self.model.forward(x)
            _, dy = self.loss(y, labels)
            self.opt.zero_grad()
            backprop(dy)
            self.opt.step()
            for sched in self.scheds:
                sched.step()
            if self.device_scalars and self.scheds:
                self.reload(device_scalars=True)  # the schedule's new rates onto the device

    def state(self, *, device_scalars: bool, copy: bool = True) -> dict[str, Any]:
        return training_state(self.model, self.opt, schedulers=self.scheds,
                              device_scalars=device_scalars, copy=copy)

    def load(self, state: dict[str, Any], *, device_scalars: bool) -> None:
        load_training_state(state, self.model, self.opt, schedulers=self.scheds,
                            device_scalars=device_scalars)
        self.device_scalars = device_scalars

    def reload(self, *, device_scalars: bool) -> None:
        """Round-trip its own state (to turn per-step values into one form or the other)."""
        self.load(self.state(device_scalars=device_scalars, copy=False),
                  device_scalars=device_scalars)

    def params(self) -> dict[str, np.ndarray]:
        return {n: nb.to_numpy(p.data).copy() for n, p in self.model.named_parameters()}


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert np.array_equal(got[name], want[name]), (name, np.abs(got[name] - want[name]).max())


def _per_step_values(run: Run) -> list[Any]:
    """Every step count, learning rate and random counter the objects hold."""
    values = [st["step"] for st in run.opt.state if st]
    values += [g["lr"] for g in run.opt.param_groups]
    values.append(run.model[2].generator.counter)
    return values


def _optimizer_arrays(opt: nb.Optimizer) -> dict[str, Any]:
    sd = opt.state_dict()
    out = {f"{i}/{k}": v for i, st in enumerate(sd["state"]) for k, v in st.items()}
    out.update({f"group{g['params'][0]}/lr": g["lr"] for g in sd["param_groups"]})
    return out


# -- both forms round-trip bit for bit -----------------------------------------------------------


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_host_numbers_round_trip_and_training_continues_bit_for_bit(case: Any,
                                                                    optimizer: str) -> None:
    reference = Run(case, optimizer)
    reference.train(range(K + N))
    run = Run(case, optimizer)
    run.train(range(K))
    at_k = run.params()
    state = run.state(device_scalars=False)
    assert [k for k in state if k.startswith("rng/")] == ["rng/2.generator/counter"]
    for key, value in state.items():
        if key.endswith(("/lr", "/step", "/counter")) or key.startswith("sched/"):
            assert isinstance(value, np.ndarray), key  # per-step values: host copies
    assert int(state["rng/2.generator/counter"]) == K
    assert int(state["optim/param_groups/0/step"]) == K

    fresh = Run(case, optimizer, seeds=(5, 6))  # other weights: all of them come from the state
    fresh.load(state, device_scalars=False)
    assert all(isinstance(v, int | float) for v in _per_step_values(fresh))
    _assert_same(fresh.params(), at_k)
    fresh.train(range(K, K + N))
    _assert_same(fresh.params(), reference.params())
    ref_opt, fresh_opt = _optimizer_arrays(reference.opt), _optimizer_arrays(fresh.opt)
    assert ref_opt.keys() == fresh_opt.keys()
    for key in ref_opt:
        assert np.array_equal(ref_opt[key], fresh_opt[key]), key
    assert fresh.model[2].generator.state() == reference.model[2].generator.state()
    assert [s.state_dict() for s in fresh.scheds] == [s.state_dict() for s in reference.scheds]

    run.train(range(K, K + N))  # taking the state out changed nothing, and it was a copy
    _assert_same(run.params(), reference.params())
    _assert_same({n: nb.to_numpy(state[f"model/{n}"]) for n in at_k}, at_k)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_device_scalars_round_trip_and_training_continues_bit_for_bit(case: Any,
                                                                      optimizer: str) -> None:
    reference = Run(case, optimizer)
    reference.train(range(K))
    reference.reload(device_scalars=True)
    reference.train(range(K, K + M + N))

    run = Run(case, optimizer)
    run.train(range(K))
    run.reload(device_scalars=True)
    run.train(range(K, K + M))
    state = run.state(device_scalars=True)
    scalar = "float64" if case.has_float64 else "float32"
    case.check_placement(state["optim/param_groups/0/step"], dtype="int32")
    case.check_placement(state["optim/param_groups/0/lr"], dtype=scalar)
    case.check_placement(state["rng/2.generator/counter"], dtype="int32")
    for key, value in state.items():
        if not key.startswith("sched/"):
            case.check_placement(value, dtype=dtype_name(value.dtype))
    assert state["optim/param_groups/0/step"].shape == ()

    fresh = Run(case, optimizer, seeds=(5, 6))
    fresh.load(state, device_scalars=True)
    for value in _per_step_values(fresh):  # arrays on the device, not Python numbers
        assert not isinstance(value, int | float)
        case.check_placement(value, dtype=dtype_name(value.dtype))
    flat = fresh.opt.path_stats.flat
    with count_host_reads() as reads:
        fresh.train(range(K + M, K + M + N))
    assert reads.count == 0, reads
    _assert_same(fresh.params(), reference.params())
    assert fresh.model[2].generator.state() == reference.model[2].generator.state()
    assert not isinstance(fresh.opt.state[0]["step"], int)
    assert int(nb.to_numpy(fresh.opt.state[0]["step"])) == K + M + N
    # per-step arrays are replaced, never written in place: the state taken is still step K + M
    assert int(nb.to_numpy(state["optim/param_groups/0/step"])) == K + M
    assert int(nb.to_numpy(state["rng/2.generator/counter"])) == K + M
    run.train(range(K + M, K + M + N))  # the live run too (its state was taken with copy=True)
    _assert_same(run.params(), reference.params())
    assert int(nb.to_numpy(state["optim/param_groups/0/step"])) == K + M
    if nb.backend.supports_views(case.xp):  # the flat path held: one shared count per group
        assert fresh.opt.path_stats.flat > flat
        assert not fresh.opt.path_stats.fallbacks
        assert fresh.opt.state[0]["step"] is fresh.opt.state[1]["step"]


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_device_scalar_steps_match_host_number_steps(case: Any, optimizer: str) -> None:
    """The same training with per-step values on the device: bit for bit for SGD and RMSprop,
    within a few ulp per step for Adam (its bias corrections are computed on the device)."""
    host = Run(case, optimizer)
    host.train(range(K + N))
    device = Run(case, optimizer)
    device.train(range(K))
    device.reload(device_scalars=True)
    device.train(range(K, K + N))
    assert not isinstance(device.opt.state[0]["step"], int)
    # A float32 model with float64 device scalars gets each factor rounded once from float64,
    # as from the host: Adam's too (unless a float64 ulp of difference crossed a float32
    # rounding boundary, which a few steps make vanishingly unlikely)
    if optimizer in EXACT_ACROSS_FORMS or (case.dtype_name == "float32" and case.has_float64):
        _assert_same(device.params(), host.params())
        return
    eps = float(np.finfo(case.dtype_name).eps)
    want = host.params()
    for name, got in device.params().items():
        # each step moves a parameter by at most ~lr: a relative error of a few ulp in the step
        # size (float64 scalars; float32 ones on JAX) is a few ulp of lr per step
        np.testing.assert_allclose(got, want[name], rtol=0, atol=16 * eps * 0.03 * N + 4 * eps)


def _exact_factors(beta1: float, beta2: float, lr: float,
                   steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """√(1 − β2ᵗ) and α/(1 − β1ᵗ) for the float64 values of β and α, to 30 digits (mpmath)."""
    import mpmath

    with mpmath.workdps(30):
        b1, b2, a = mpmath.mpf(beta1), mpmath.mpf(beta2), mpmath.mpf(lr)
        root = [float(mpmath.sqrt(1 - b2 ** int(k))) for k in steps]
        factor = [float(a / (1 - b1 ** int(k))) for k in steps]
    return np.array(root), np.array(factor)


def test_adam_factors_from_device_steps_round_like_the_host_ones(case: Any) -> None:
    """√(1 − β2ᵗ) and α/(1 − β1ᵗ) from 0-d device values, against 30-digit values: correctly
    rounded to float32 where the device computes in float64 (what the host's float64 formula
    gives a float32 model), within 2 ulp in float64 (the host's 1 − βᵗ cancels: it is off by
    up to ~30 ulp for small t), within a few float32 ulp where the device has no float64."""
    pytest.importorskip("mpmath", reason="the 30-digit reference needs mpmath")
    steps = np.arange(1, 2001)
    scalar = "float64" if case.has_float64 else "float32"
    t = case.backend.asarray(steps.astype(np.int32))
    like = case.asarray(np.zeros(()))
    lr = 0.02
    eps = float(np.finfo(case.dtype_name).eps)
    for beta1, beta2 in ((0.9, 0.999), (0.0, 0.99)):
        root, factor = adam_factors(t, case.backend.asarray(np.asarray(lr, dtype=scalar)),
                                    beta1, beta2, like, case.xp)
        case.check_placement(root)
        case.check_placement(factor)
        exact = _exact_factors(beta1, beta2, lr, steps)
        for got, want in zip((root, factor), exact, strict=True):
            got = np.broadcast_to(nb.to_numpy(got).astype(np.float64), want.shape)
            if case.dtype_name == "float32" and scalar == "float64":
                assert np.array_equal(got, want.astype(np.float32).astype(np.float64))
            else:
                ulps = 2 if case.is_float64 else 4
                np.testing.assert_allclose(got, want, rtol=ulps * eps, atol=0)
    host = np.sqrt(1.0 - 0.99 ** steps[:10].astype(np.float64))  # the host formula, for contrast
    # worse than the 2 ulp the device is held to (by how much depends on the host's pow: 3.5 ulp
    # on an AMD EPYC with AVX2, more than 4 elsewhere)
    assert np.abs(host / _exact_factors(0.0, 0.99, lr, steps[:10])[0] - 1).max() > 2 * 2.2e-16


# -- counts that differ within a group, parameters never stepped --------------------------------


@pytest.mark.parametrize("device_scalars", [False, True])
def test_parameters_stepped_unequally_keep_their_own_counts(case: Any,
                                                            device_scalars: bool) -> None:
    def skip_then_train(run: Run, steps: range) -> None:
        for t in steps:
            x, labels = run.batches[t % 3]
            y, backprop = run.model.forward(x)
            _, dy = run.loss(y, labels)
            run.opt.zero_grad()
            backprop(dy)
            if t == 0:
                run.model[0].bias.grad = None  # skipped at the first step, as PyTorch skips it
            with warnings.catch_warnings():  # how a skip runs flat is test_flat's subject
                warnings.simplefilter("ignore", nb.optim.FlatFallbackWarning)
                run.opt.step()

    def build() -> Run:
        run = Run(case, "adam")
        run.model[3].bias.requires_grad = False  # never stepped: no state at all
        return run

    reference = build()
    skip_then_train(reference, range(K))
    if device_scalars:  # the reference continues in the same form
        reference.reload(device_scalars=True)
    skip_then_train(reference, range(K, K + N))
    run = build()
    skip_then_train(run, range(K))
    state = run.state(device_scalars=device_scalars)
    steps = {k: int(nb.to_numpy(v)) for k, v in state.items() if k.endswith("/step")}
    assert steps == {"optim/state/0/step": K, "optim/state/1/step": K - 1,
                     "optim/state/2/step": K}
    assert not [k for k in state if k.startswith("optim/state/3/")]
    fresh = build()
    fresh.load(state, device_scalars=device_scalars)
    assert fresh.opt.state[3] == {}
    if device_scalars:  # equal counts share one array (a flat run), the other has its own
        assert fresh.opt.state[0]["step"] is fresh.opt.state[2]["step"]
        assert fresh.opt.state[1]["step"] is not fresh.opt.state[0]["step"]
    skip_then_train(fresh, range(K, K + N))
    _assert_same(fresh.params(), reference.params())


# -- a compiled step ---------------------------------------------------------------------------


def test_jax_jit_of_a_pure_step_traces_once_and_matches_the_eager_run(case: Any) -> None:
    """step(state, batch) -> state built from load_training_state and training_state: jitted,
    traced once over several steps (a learning rate changed between steps is an input, not a
    constant), and its parameters are the eager run's to float32 rounding."""
    if case.backend.name != "jax":
        pytest.skip("jax.jit is JAX's")
    import jax

    eager = Run(case, "adam")
    eager.train(range(K))
    compiled = Run(case, "adam")
    compiled.train(range(K))  # eager first steps: the optimizer state has its final keys
    model, opt, loss_fn = compiled.model, compiled.opt, compiled.loss
    traces: list[int] = []

    def step(state: dict[str, Any], x: Any, labels: Any) -> tuple[dict[str, Any], Any]:
        traces.append(1)
        load_training_state(state, model, opt, device_scalars=True)
        y, backprop = model.forward(x)
        loss, dy = loss_fn(y, labels)
        opt.zero_grad()
        backprop(dy)
        opt.step()
        return training_state(model, opt, device_scalars=True, copy=False), loss

    jitted = jax.jit(step)
    state = training_state(model, opt, device_scalars=True)
    lrs = [0.02, 0.02, 0.005, 0.005]
    for t, lr in zip(range(K, K + len(lrs)), lrs, strict=True):
        eager.opt.lr = lr
        eager.train(range(t, t + 1))
        state["optim/param_groups/0/lr"] = case.backend.asarray(np.float32(lr))
        x, labels = compiled.batches[t % 3]
        state, loss = jitted(state, x, labels)
        assert np.isfinite(float(loss))
    assert len(traces) == 1
    load_training_state(state, model, opt)  # concrete arrays back into the objects
    assert opt.state[0]["step"] == K + len(lrs)
    assert model[2].generator.counter == K + len(lrs)
    eps = float(np.finfo(np.float32).eps)
    for name, got in compiled.params().items():
        want = eager.params()[name]
        np.testing.assert_allclose(got, want, rtol=0, atol=8 * eps * max(1.0, np.abs(want).max()))


# -- host copies in checkpoints ------------------------------------------------------------------


def test_state_dict_and_checkpoints_hold_host_copies_of_device_scalars(case: Any,
                                                                       tmp_path: Any) -> None:
    run = Run(case, "adamw-groups-amsgrad-exponential")
    run.train(range(K))
    run.reload(device_scalars=True)
    run.train(range(K, K + M))
    sd = run.opt.state_dict()
    assert [st["step"] for st in sd["state"]] == [K + M] * 4
    assert all(type(st["step"]) is int for st in sd["state"])
    assert all(type(g["lr"]) is float for g in sd["param_groups"])
    path = tmp_path / "run.npz"
    nb.checkpoint.save(path, run.model, run.opt, step=K + M)

    host = Run(case, "adamw-groups-amsgrad-exponential", seeds=(5, 6))
    nb.checkpoint.load(path, host.model, host.opt)
    host.scheds[0].load_state_dict(run.scheds[0].state_dict())
    run.reload(device_scalars=False)  # the same numbers, back on the host
    assert all(isinstance(v, int | float) for v in _per_step_values(run))
    run.train(range(K + M, K + M + N))
    host.train(range(K + M, K + M + N))
    _assert_same(host.params(), run.params())


def test_a_state_loads_onto_another_backend(case: Any) -> None:
    run = Run(case, "adam")
    run.train(range(K))
    state = run.state(device_scalars=False)

    on_numpy: Case = make_case(("numpy", None, case.dtype_name))
    other = Run(on_numpy, "adam", seeds=(5, 6))
    other.load(state, device_scalars=True)
    _assert_same(other.params(), run.params())
    assert isinstance(other.opt.state[0]["m"], np.ndarray)
    assert np.array_equal(other.opt.state[0]["m"], nb.to_numpy(run.opt.state[0]["m"]))


# -- validation before any change ----------------------------------------------------------------


def _snapshot(run: Run) -> tuple[Any, ...]:
    return (run.params(), _optimizer_arrays(run.opt), run.model[2].generator.state(),
            [s.state_dict() for s in run.scheds])


def _same_snapshot(a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
    _assert_same(a[0], b[0])
    assert a[1].keys() == b[1].keys()
    for key in a[1]:
        assert np.array_equal(a[1][key], b[1][key]), key
    assert a[2:] == b[2:]


def _edit(state: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(state)
    for key, value in changes.items():
        key = key.replace("__", "/")
        if value is None:
            del out[key]
        else:
            out[key] = value
    return out


@pytest.mark.parametrize("device_scalars", [False, True])
def test_bad_states_are_refused_before_anything_changes(case: Any, device_scalars: bool) -> None:
    source = Run(case, "sgd-nesterov-warmup-cosine")
    source.train(range(K))
    good = source.state(device_scalars=device_scalars)
    target = Run(case, "sgd-nesterov-warmup-cosine", seeds=(5, 6))
    target.train(range(1))
    before = _snapshot(target)
    host_int = np.asarray(3)
    weight = good["model/0.weight"]
    bad: list[tuple[dict[str, Any], type[Exception], str]] = [
        (_edit(good, **{"model/0.bias": None}), KeyError, r"missing \['model/0.bias'\]"),
        (_edit(good, **{"model/9.weight": weight}), KeyError, r"unexpected \['model/9.weight'\]"),
        (_edit(good, **{"rng/2.generator/counter": None}), KeyError, "rng/2.generator/counter"),
        (_edit(good, **{"optim/param_groups/0/lr": None}), KeyError,
         r"missing \['optim/param_groups/0/lr'\]"),
        (_edit(good, **{"optim/state/0/m": good["optim/state/0/velocity"]}), KeyError,
         r"unexpected \['optim/state/0/m'\]"),
        (_edit(good, **{"optim/state/7/velocity": good["optim/state/0/velocity"]}), KeyError,
         r"unexpected \['optim/state/7/velocity'\]"),
        (_edit(good, **{"optim/state/1/step": host_int}), KeyError,
         r"unexpected \['optim/state/1/step'\]"),  # besides the group's count
        (_edit(good, **{"optim/state/1/velocity": None}), KeyError,
         r"optim/state/1 .* lacks .*missing \['optim/state/1/velocity'\]"),
        (_edit(good, **{"sched/0/last_epoch": None}), KeyError, "sched/0/last_epoch"),
        (_edit(good, stray=weight), KeyError, r"unexpected \['stray'\]"),
        (_edit(good, **{"model/0.weight": good["model/3.weight"]}), ValueError, "shape"),
        (_edit(good, **{"optim/state/2/velocity": case.asarray(np.zeros((16, 3)))}), ValueError,
         "optim/state/2/velocity has shape"),
        (_edit(good, **{"optim/param_groups/0/step": np.asarray(0)}), ValueError,
         "positive integer"),
        (_edit(good, **{"optim/param_groups/0/step": np.asarray(2.0)}), TypeError, "integer"),
        (_edit(good, **{"optim/param_groups/0/lr": np.asarray(-1.0)}), ValueError, "lr must be"),
        (_edit(good, **{"optim/param_groups/0/lr": np.zeros(2)}), ValueError, "0-d"),
        (_edit(good, **{"rng/2.generator/counter": np.asarray(1 << 32)}), ValueError,
         r"\[0, 2\*\*32\)"),
        (_edit(good, **{"sched/0/last_epoch": np.asarray(1.5)}), TypeError, "last_epoch"),
        (_edit(good, **{"sched/0/after/base_lrs": np.asarray([0.1, 0.2])}), ValueError,
         "base_lrs holds 2"),
    ]
    if case.is_float64 or case.has_float64:
        other = "float32" if case.is_float64 else "float64"
        bad.append((_edit(good, **{"optim/state/0/velocity": case.backend.asarray(
            nb.to_numpy(good["optim/state/0/velocity"]), dtype=other)}), TypeError, "dtype"))
    for state, error, match in bad:
        with pytest.raises(error, match=match):
            load_training_state(state, target.model, target.opt, schedulers=target.scheds,
                                device_scalars=device_scalars)
        _same_snapshot(_snapshot(target), before)
    with pytest.raises(TypeError, match="mapping"):
        load_training_state([("model/0.weight", weight)], target.model)  # type: ignore[arg-type]
    load_training_state(good, target.model, target.opt, schedulers=target.scheds,
                        device_scalars=device_scalars)
    _assert_same(target.params(), source.params())


def test_objects_that_cannot_travel_as_arrays_are_refused(case: Any) -> None:
    run = Run(case, "adam")

    class Counting(nb.Identity):
        def get_extra_state(self) -> dict[str, Any]:
            return {"calls": 1}

    with pytest.raises(TypeError, match=r"1 \(Counting\) keeps host extra state"):
        training_state(nb.Sequential(nb.Linear(2, 2, backend=case.backend), Counting()))
    other = Run(case, "adam")
    with pytest.raises(ValueError, match="not a parameter of the model"):
        training_state(run.model, other.opt)
    with pytest.raises(ValueError, match="drives another optimizer"):
        training_state(run.model, run.opt, schedulers=[nb.StepLR(other.opt, 1)])
    with pytest.raises(TypeError, match="not a schedule"):
        training_state(run.model, run.opt, schedulers=[run.opt])
    with pytest.raises(ValueError, match="device_scalars needs a model"):
        training_state(nb.Sequential(nb.Dropout(0.5, seed=1)), device_scalars=True)
    if case.backend.name == "gpulike":  # a model on two devices: no one device for the scalars
        other_device = nb.get_backend(f"gpulike:{1 - case.backend.device.id}")
        split = nb.Module()
        split.a = nb.Linear(2, 2, backend=case.backend)
        split.b = nb.Linear(2, 2, backend=other_device)
        with pytest.raises(ValueError, match="device_scalars puts the per-step values"):
            training_state(split, device_scalars=True)
        training_state(split)  # host numbers need no common device


def test_keys_and_order_are_stable(case: Any) -> None:
    run = Run(case, "adamw-groups-amsgrad-exponential")
    assert list(run.state(device_scalars=False)) == [
        "model/0.weight", "model/0.bias", "model/3.weight", "model/3.bias",
        "rng/2.generator/counter", "optim/param_groups/0/lr", "optim/param_groups/1/lr",
        "sched/0/base_lrs", "sched/0/last_epoch", "sched/0/last_lrs",
    ]  # nothing stepped yet: no step counts, no optimizer state
    run.train(range(1))
    keys = list(run.state(device_scalars=True))
    assert keys[5:9] == ["optim/param_groups/0/lr", "optim/param_groups/0/step",
                         "optim/param_groups/1/lr", "optim/param_groups/1/step"]
    assert keys[9:12] == ["optim/state/0/m", "optim/state/0/v", "optim/state/0/vmax"]
