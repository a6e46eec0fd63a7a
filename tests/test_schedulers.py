"""Learning-rate schedules: closed forms, torch.optim.lr_scheduler, composition, state dicts."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend.optim import (
    SGD,
    Adam,
    CosineAnnealingLR,
    ExponentialLR,
    LinearWarmup,
    LRScheduler,
    ReduceLROnPlateau,
    StepLR,
)

BASE_LR = 0.1
EPOCHS = 40


def _opt(lr: float = BASE_LR) -> SGD:
    return SGD([nb.Parameter(np.zeros(2), "w")], lr)


def _ours(make: Callable[[SGD], Any], epochs: int = EPOCHS) -> list[float]:
    """The learning rate the optimizer sees in epochs 0 … epochs−1."""
    opt = _opt()
    sched = make(opt)
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.lr)
        assert sched.get_last_lr() == opt.lr
        sched.step()
    return lrs


def _torch(make: Callable[[Any, Any], Any], epochs: int = EPOCHS) -> list[float]:
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=BASE_LR)
    sched = make(torch.optim.lr_scheduler, opt)
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()  # torch warns when the schedule steps before the optimizer
        sched.step()
    return lrs


def _close(got: list[float], want: list[float], rtol: float = 1e-12) -> None:
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-15)


CLOSED_FORMS: dict[str, tuple[Callable[[SGD], Any], Callable[[int], float]]] = {
    "step": (lambda o: StepLR(o, step_size=7, gamma=0.5), lambda e: BASE_LR * 0.5 ** (e // 7)),
    "exponential": (lambda o: ExponentialLR(o, gamma=0.9), lambda e: BASE_LR * 0.9**e),
    "cosine": (
        lambda o: CosineAnnealingLR(o, T_max=15, eta_min=0.001),
        lambda e: 0.001 + (BASE_LR - 0.001) * (1 + math.cos(math.pi * e / 15)) / 2,
    ),
    "warmup": (
        lambda o: LinearWarmup(o, 4, start_factor=0.2),
        lambda e: BASE_LR * (0.2 + 0.8 * e / 4) if e < 4 else BASE_LR,
    ),
    "warmup-default-factor": (
        lambda o: LinearWarmup(o, 4),
        lambda e: BASE_LR * (e + 1) / 5 if e < 4 else BASE_LR,
    ),
    "warmup-then-cosine": (
        lambda o: LinearWarmup(o, 5, start_factor=0.1, after=CosineAnnealingLR(o, T_max=20)),
        lambda e: (BASE_LR * (0.1 + 0.9 * e / 5) if e < 5
                   else BASE_LR * (1 + math.cos(math.pi * (e - 5) / 20)) / 2),
    ),
    "warmup-then-step": (
        lambda o: LinearWarmup(o, 3, start_factor=0.5, after=StepLR(o, 10, gamma=0.1)),
        lambda e: BASE_LR * (0.5 + 0.5 * e / 3) if e < 3 else BASE_LR * 0.1 ** ((e - 3) // 10),
    ),
}


@pytest.mark.parametrize("name", list(CLOSED_FORMS))
def test_closed_forms(name: str) -> None:
    make, formula = CLOSED_FORMS[name]
    _close(_ours(make), [formula(e) for e in range(EPOCHS)], rtol=1e-15)


TORCH_EQUIVALENTS: dict[str, tuple[Callable[[SGD], Any], Callable[[Any, Any], Any]]] = {
    "step": (lambda o: StepLR(o, 7, gamma=0.5), lambda s, o: s.StepLR(o, 7, gamma=0.5)),
    "exponential": (lambda o: ExponentialLR(o, 0.9), lambda s, o: s.ExponentialLR(o, 0.9)),
    "cosine": (
        lambda o: CosineAnnealingLR(o, 15, eta_min=0.001),
        lambda s, o: s.CosineAnnealingLR(o, 15, eta_min=0.001),
    ),
    "cosine-past-T_max": (
        lambda o: CosineAnnealingLR(o, 12),
        lambda s, o: s.CosineAnnealingLR(o, 12),
    ),
    "warmup": (
        lambda o: LinearWarmup(o, 6, start_factor=0.25),
        lambda s, o: s.LinearLR(o, start_factor=0.25, total_iters=6),
    ),
    "warmup-then-cosine": (
        lambda o: LinearWarmup(o, 5, start_factor=0.1, after=CosineAnnealingLR(o, 20)),
        lambda s, o: s.SequentialLR(
            o, [s.LinearLR(o, start_factor=0.1, total_iters=5), s.CosineAnnealingLR(o, 20)],
            milestones=[5],
        ),
    ),
    "warmup-then-exponential": (
        lambda o: LinearWarmup(o, 4, start_factor=0.5, after=ExponentialLR(o, 0.8)),
        lambda s, o: s.SequentialLR(
            o, [s.LinearLR(o, start_factor=0.5, total_iters=4), s.ExponentialLR(o, 0.8)],
            milestones=[4],
        ),
    ),
}


@pytest.mark.parametrize("name", list(TORCH_EQUIVALENTS))
def test_matches_torch_lr_scheduler(name: str) -> None:
    ours, theirs = TORCH_EQUIVALENTS[name]
    _close(_ours(ours), _torch(theirs))


METRICS = [5.0, 4.0, 4.0, 3.9999, 4.1, 4.2, 4.3, 3.0, 3.0, 3.0, 3.0, 3.0, 2.0, 2.5, 2.5, 2.5,
           2.5, 2.5, 2.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, math.nan, 1.0, 1.0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"patience": 2},
        {"patience": 1, "factor": 0.5, "cooldown": 2},
        {"patience": 0, "factor": 0.5, "min_lr": 0.02},
        {"patience": 1, "threshold": 0.3, "threshold_mode": "abs"},
        {"mode": "max", "patience": 1, "factor": 0.3},
        {"mode": "max", "patience": 2, "threshold": 0.1, "threshold_mode": "abs", "cooldown": 1},
        {"patience": 0, "factor": 0.5, "eps": 0.02},
    ],
)
def test_reduce_on_plateau_matches_torch(kwargs: dict[str, Any]) -> None:
    torch = pytest.importorskip("torch")
    opt = _opt()
    sched = ReduceLROnPlateau(opt, **kwargs)
    topt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=BASE_LR)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kwargs)
    ours, theirs = [], []
    for metric in METRICS:
        sched.step(metric)
        tsched.step(metric)
        ours.append(opt.lr)
        theirs.append(topt.param_groups[0]["lr"])
        assert sched.get_last_lr() == opt.lr
    assert len(set(theirs)) > 1  # the sequence really reduces
    _close(ours, theirs, rtol=1e-15)


def test_reduce_on_plateau_by_hand() -> None:
    opt = _opt(1.0)
    sched = ReduceLROnPlateau(opt, factor=0.5, patience=1)
    for metric, lr in [(1.0, 1.0), (1.0, 1.0), (1.0, 0.5), (0.5, 0.5), (0.6, 0.5), (0.7, 0.25)]:
        sched.step(metric)
        assert opt.lr == lr
    assert sched.best == 0.5 and sched.last_epoch == 6


def test_warmup_then_plateau() -> None:
    """Warm-up ignores the metric; at epoch W the rate is the base; then the plateau watches."""
    opt = _opt(1.0)
    sched = LinearWarmup(opt, 2, start_factor=0.5,
                         after=ReduceLROnPlateau(opt, factor=0.1, patience=0))
    seen = [opt.lr]
    for metric in [9.0, 9.0, 3.0, 2.0, 2.0, 1.0, 1.0]:
        sched.step(metric)
        seen.append(opt.lr)
        assert sched.get_last_lr() == opt.lr
    # epochs 0, 1: 0.5, 0.75; epoch 2: 1.0; then 3.0 (best), 2.0 (better), 2.0 (bad: ×0.1), ...
    _close(seen, [0.5, 0.75, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01])
    with pytest.raises(TypeError, match="ReduceLROnPlateau needs the metric"):
        sched.step()


def test_no_warmup_then_plateau_is_the_plateau_schedule() -> None:
    """Issue 8, 3.9: ``LinearWarmup(opt, 0, after=ReduceLROnPlateau(opt))`` raised at
    construction. With W = 0 it is the plateau schedule from epoch 0 on: α₀ first, then every
    step(metric) is the plateau's."""
    opt = _opt(1.0)
    sched = LinearWarmup(opt, 0, after=ReduceLROnPlateau(opt, factor=0.5, patience=1))
    seen = [opt.lr]
    for metric in [3.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0]:
        sched.step(metric)
        seen.append(opt.lr)
        assert sched.get_last_lr() == opt.lr
    # best 3, 2 (better), 2, 2 (second bad epoch > patience: ×0.5), 1 (better), 1, 1 (×0.5), 1
    assert seen == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert sched.last_epoch == 8
    with pytest.raises(TypeError, match="no closed form"):
        sched.lr_at(3)
    with pytest.raises(TypeError, match="ReduceLROnPlateau needs the metric"):
        sched.step()


def test_no_warmup_then_plateau_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    opt = _opt()
    sched = LinearWarmup(opt, 0, after=ReduceLROnPlateau(opt, factor=0.3, patience=0))
    topt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=BASE_LR)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, factor=0.3, patience=0)
    ours, theirs = [opt.lr], [topt.param_groups[0]["lr"]]
    for metric in METRICS:
        sched.step(metric)
        tsched.step(metric)
        ours.append(opt.lr)
        theirs.append(topt.param_groups[0]["lr"])
    assert len(set(theirs)) > 2
    _close(ours, theirs, rtol=1e-15)


def test_schedule_drives_adam_like_torch() -> None:
    """Adam with linear warm-up then cosine over 60 steps: the same trajectory as torch's."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    theta0 = rng.standard_normal(5)
    grads = rng.standard_normal((60, 5))
    p = nb.Parameter(theta0.copy(), "w")
    opt = Adam([p], 0.05)
    sched = LinearWarmup(opt, 10, start_factor=0.1, after=CosineAnnealingLR(opt, 50))
    tp = torch.tensor(theta0, requires_grad=True)
    topt = torch.optim.Adam([tp], 0.05)
    s = torch.optim.lr_scheduler
    tsched = s.SequentialLR(topt, [s.LinearLR(topt, start_factor=0.1, total_iters=10),
                                   s.CosineAnnealingLR(topt, 50)], milestones=[10])
    for g in grads:
        p.grad = g.copy()
        opt.step()
        sched.step()
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
        tsched.step()
    np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize(
    ("make", "uses_metric"),
    [
        (lambda o: StepLR(o, 3, gamma=0.5), False),
        (lambda o: CosineAnnealingLR(o, 10, eta_min=0.01), False),
        (lambda o: LinearWarmup(o, 4, after=CosineAnnealingLR(o, 10)), False),
        (lambda o: ReduceLROnPlateau(o, patience=1, cooldown=1), True),
        (lambda o: LinearWarmup(o, 2, after=ReduceLROnPlateau(o, patience=0)), True),
    ],
    ids=["step", "cosine", "warmup-cosine", "plateau", "warmup-plateau"],
)
def test_state_dict_round_trip(make: Callable[[SGD], Any], uses_metric: bool) -> None:
    """Saved after 7 epochs (through JSON) and loaded into a fresh schedule, both continue alike."""
    metrics = [3.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    opt = _opt()
    sched = make(opt)

    def advance(s: Any, k: int) -> None:
        if uses_metric:
            s.step(metrics[k])
        else:
            s.step()

    for k in range(7):
        advance(sched, k)
    saved = json.loads(json.dumps(sched.state_dict()))
    fresh_opt = _opt(0.7)
    fresh = make(fresh_opt)
    fresh.load_state_dict(saved)
    assert fresh_opt.lr == opt.lr  # loading sets the optimizer's rate too
    for k in range(7, len(metrics)):
        advance(sched, k)
        advance(fresh, k)
        assert fresh_opt.lr == opt.lr
        assert fresh.get_last_lr() == sched.get_last_lr()


def test_state_dict_contents() -> None:
    sd = CosineAnnealingLR(_opt(), 10, eta_min=0.01).state_dict()
    assert sd == {"type": "CosineAnnealingLR", "config": {"T_max": 10, "eta_min": 0.01},
                  "base_lrs": [BASE_LR], "last_epoch": 0, "last_lrs": [BASE_LR]}


@pytest.mark.parametrize(
    ("make_sd", "error", "match"),
    [
        (lambda: StepLR(_opt(), 3).state_dict(), ValueError, r"saved by 'StepLR', not 'Cos"),
        (lambda: {"type": "CosineAnnealingLR", "base_lr": 0.1, "last_lr": 0.1}, KeyError,
         r"lacks \['last_epoch'\]"),
        (lambda: {"type": "CosineAnnealingLR", "base_lr": 0.1, "last_lr": 0.1,
                  "last_epoch": 1.5}, TypeError,
         r"last_epoch must be a non-negative integer, got 1\.5"),
        (lambda: {"type": "CosineAnnealingLR", "base_lr": -0.1, "last_lr": 0.1,
                  "last_epoch": 1}, ValueError, r"base_lrs\[0\] must be >= 0, got -0\.1"),
        (lambda: {"type": "CosineAnnealingLR", "base_lrs": [0.1, 0.1], "last_lrs": [0.1],
                  "last_epoch": 1}, ValueError,
         r"base_lrs holds 2 rates, the optimizer has 1 parameter groups"),
        (lambda: [1, 2], TypeError, r"expected a dict, got list"),
    ],
)
def test_load_state_dict_validates(make_sd: Callable[[], Any], error: type[Exception],
                                   match: str) -> None:
    opt = _opt()
    sched = CosineAnnealingLR(opt, 10)
    sched.step()
    before = (sched.last_epoch, sched.base_lr, opt.lr)
    with pytest.raises(error, match=match):
        sched.load_state_dict(make_sd())
    assert (sched.last_epoch, sched.base_lr, opt.lr) == before


def test_warmup_load_is_all_or_nothing() -> None:
    opt = _opt()
    sched = LinearWarmup(opt, 3, after=CosineAnnealingLR(opt, 10))
    sd = sched.state_dict()
    sd["after"] = {**sd["after"], "last_epoch": -1}
    with pytest.raises(ValueError, match=r"last_epoch must be a non-negative integer, got -1"):
        sched.load_state_dict(sd)
    sd["after"] = None
    with pytest.raises(ValueError, match=r"saved warm-up has no 'after' schedule"):
        sched.load_state_dict(sd)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda o: StepLR(o, 0), ValueError,
         r"StepLR: step_size must be a positive integer, got 0"),
        (lambda o: StepLR(o, 2.5), TypeError,
         r"StepLR: step_size must be a positive integer, got 2\.5"),
        (lambda o: StepLR(o, 2, gamma=0.0), ValueError, r"gamma must be > 0, got 0\.0"),
        (lambda o: ExponentialLR(o, -0.5), ValueError, r"gamma must be > 0, got -0\.5"),
        (lambda o: CosineAnnealingLR(o, 0), ValueError,
         r"CosineAnnealingLR: T_max must be a positive integer, got 0"),
        (lambda o: CosineAnnealingLR(o, 5, eta_min=-1.0), ValueError,
         r"eta_min must be >= 0, got -1\.0"),
        (lambda o: LinearWarmup(o, -1), ValueError,
         r"LinearWarmup: warmup_steps must be a non-negative integer, got -1"),
        (lambda o: LinearWarmup(o, 3, start_factor=1.5), ValueError,
         r"start_factor must lie in \[0, 1\], got 1\.5"),
        (lambda o: LinearWarmup(o, 3, after=StepLR(_opt(), 2)), ValueError,
         r"drives another optimizer"),
        (lambda o: LinearWarmup(o, 3, after=o), TypeError, r"after must be a schedule"),
        (lambda o: ReduceLROnPlateau(o, mode="up"), ValueError,
         r"mode must be 'min' or 'max', got 'up'"),
        (lambda o: ReduceLROnPlateau(o, factor=1.0), ValueError,
         r"factor must lie in \(0, 1\), got 1\.0"),
        (lambda o: ReduceLROnPlateau(o, factor=0), ValueError,
         r"factor must lie in \(0, 1\), got 0"),
        (lambda o: ReduceLROnPlateau(o, threshold_mode="pct"), ValueError,
         r"threshold_mode must be 'rel' or 'abs', got 'pct'"),
        (lambda o: ReduceLROnPlateau(o, patience=-1), ValueError,
         r"ReduceLROnPlateau: patience must be a non-negative integer, got -1"),
        (lambda o: ReduceLROnPlateau(o, patience=True), TypeError,
         r"patience must be a non-negative integer, got True"),
        (lambda o: ReduceLROnPlateau(o, min_lr=[0.0, 0.1]), ValueError,
         r"min_lr lists 2 rates, the optimizer has 1 parameter groups"),
        (lambda o: StepLR(object(), 2), TypeError,
         r"StepLR: expected an optimizer with param_groups \(each with an 'lr'\)"),
        (lambda o: StepLR(o), TypeError, r"StepLR: missing a required argument: 'step_size'"),
        (lambda o: StepLR(o, 2, gama=0.5), TypeError,
         r"StepLR: got an unexpected keyword argument 'gama'; StepLR takes step_size, gamma"),
        (lambda o: LinearWarmup(o, 2, 0.5), TypeError, r"LinearWarmup: too many positional"),
    ],
)
def test_settings_are_validated(make: Callable[[SGD], Any], error: type[Exception],
                                match: str) -> None:
    with pytest.raises(error, match=match):
        make(_opt())


def test_metric_misuse_is_named() -> None:
    opt = _opt()
    with pytest.raises(TypeError, match=r"got metric=0\.5, but only a ReduceLROnPlateau"):
        LinearWarmup(opt, 2).step(0.5)
    with pytest.raises(TypeError, match=r"metric must be a number, got 'low'"):
        ReduceLROnPlateau(opt).step("low")  # type: ignore[arg-type]


def test_closed_form_base_class_contract() -> None:
    assert issubclass(CosineAnnealingLR, LRScheduler)
    sched = StepLR(_opt(), 2, gamma=0.5)
    assert [sched.lr_at(e) for e in range(5)] == [0.1, 0.1, 0.05, 0.05, 0.025]
    assert repr(sched) == "StepLR(step_size=2, gamma=0.5)"
    opt = _opt()
    sched = ExponentialLR(opt, 0.5)
    sched.step()
    opt.lr = 1.0  # set by hand: lasts until the next step recomputes α(e) from α₀
    sched.step()
    assert opt.lr == BASE_LR * 0.25


# -------------------------------------------------------------------------------------------
# Parameter groups: each group follows the schedule from its own base rate (torch's base_lrs)

GROUP_LRS = (0.1, 0.004)


def _grouped_opt() -> SGD:
    return SGD([{"params": [nb.Parameter(np.zeros(2), "w")]},
                {"params": [nb.Parameter(np.zeros(1), "b")], "lr": GROUP_LRS[1]}], GROUP_LRS[0])


def _torch_grouped_opt(torch: Any) -> Any:
    return torch.optim.SGD([{"params": [torch.zeros(2, requires_grad=True)]},
                            {"params": [torch.zeros(1, requires_grad=True)],
                             "lr": GROUP_LRS[1]}], lr=GROUP_LRS[0])


@pytest.mark.parametrize("name", list(TORCH_EQUIVALENTS))
def test_each_group_follows_torch_lr_scheduler(name: str) -> None:
    torch = pytest.importorskip("torch")
    ours, theirs = TORCH_EQUIVALENTS[name]
    opt, topt = _grouped_opt(), _torch_grouped_opt(torch)
    sched, tsched = ours(opt), theirs(torch.optim.lr_scheduler, topt)
    assert sched.base_lrs == list(GROUP_LRS)
    got, want = [], []
    for _ in range(EPOCHS):
        got.append([g["lr"] for g in opt.param_groups])
        want.append([g["lr"] for g in topt.param_groups])
        assert sched.get_last_lrs() == got[-1]
        topt.step()
        sched.step()
        tsched.step()
    assert len({lrs[1] for lrs in want}) > 1
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("min_lr", [0.0, [0.02, 0.003]])
def test_reduce_on_plateau_reduces_each_group_like_torch(min_lr: Any) -> None:
    torch = pytest.importorskip("torch")
    opt, topt = _grouped_opt(), _torch_grouped_opt(torch)
    sched = ReduceLROnPlateau(opt, factor=0.5, patience=0, min_lr=min_lr)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, factor=0.5, patience=0,
                                                        min_lr=min_lr)
    got, want = [], []
    for metric in METRICS:
        sched.step(metric)
        tsched.step(metric)
        got.append([g["lr"] for g in opt.param_groups])
        want.append([g["lr"] for g in topt.param_groups])
    assert want[-1] != want[0]
    np.testing.assert_allclose(got, want, rtol=1e-15)


def test_group_rates_read_back_and_state_dicts() -> None:
    opt = _grouped_opt()
    sched = LinearWarmup(opt, 2, after=CosineAnnealingLR(opt, 10))
    sched.step()
    sched.step()
    sched.step()
    lrs = sched.get_last_lrs()
    assert lrs == [sched.lr_at(3, base_lr=b) for b in GROUP_LRS] == sched.lrs_at(3)
    assert lrs == [g["lr"] for g in opt.param_groups] and lrs[0] / lrs[1] == pytest.approx(25)
    with pytest.raises(ValueError, match=r"different last learning rates .*get_last_lrs\(\)"):
        sched.get_last_lr()
    with pytest.raises(ValueError, match=r"different base rates \[0\.1, 0\.004\]; read base_lrs"):
        sched.lr_at(3)
    saved = json.loads(json.dumps(sched.state_dict()))
    assert saved["base_lrs"] == list(GROUP_LRS) and saved["after"]["last_lrs"] == lrs
    fresh_opt = _grouped_opt()
    fresh = LinearWarmup(fresh_opt, 2, after=CosineAnnealingLR(fresh_opt, 10))
    fresh.load_state_dict(saved)
    assert [g["lr"] for g in fresh_opt.param_groups] == lrs
    for s in (sched, fresh):
        s.step()
    assert fresh.get_last_lrs() == sched.get_last_lrs()
    single = StepLR(_opt(), 2).state_dict()
    with pytest.raises(ValueError, match=r"StepLR.load_state_dict: base_lrs holds 1 rates, the "
                                         r"optimizer has 2 parameter groups"):
        StepLR(_grouped_opt(), 2).load_state_dict(single)


def test_a_state_dict_saved_before_parameter_groups_loads() -> None:
    """{"base_lr", "last_lr"}: the one rate a schedule drove before groups existed."""
    old = {"type": "StepLR", "config": {"step_size": 2, "gamma": 0.5}, "base_lr": 0.1,
           "last_epoch": 3, "last_lr": 0.05}
    opt = _opt(0.7)
    sched = StepLR(opt, 2, gamma=0.5)
    sched.load_state_dict(old)
    assert (sched.base_lrs, sched.last_epoch, opt.lr) == ([0.1], 3, 0.05)
    sched.step()
    assert opt.lr == 0.025
    plateau = {"type": "ReduceLROnPlateau", "config": {}, "last_epoch": 4, "last_lr": 0.01,
               "best": 1.5, "num_bad_epochs": 1, "cooldown_counter": 0}
    opt = _opt()
    ReduceLROnPlateau(opt).load_state_dict(plateau)
    assert opt.lr == 0.01
    with pytest.raises(ValueError, match=r"base_lrs holds 1 rates, the optimizer has 2"):
        StepLR(_grouped_opt(), 2).load_state_dict(old)


def test_a_group_added_after_the_schedule_is_named() -> None:
    opt = _opt()
    sched = StepLR(opt, 2)
    opt.add_param_group({"params": [nb.Parameter(np.zeros(1), "b")]})
    with pytest.raises(ValueError, match=r"StepLR: the optimizer has 2 parameter groups, the "
                                         r"schedule was created for 1; create schedules after "
                                         r"add_param_group"):
        sched.step()


def test_one_declarative_list_drives_every_schedule() -> None:
    """No schedule writes an __init__: the signature and the config come from SETTINGS."""
    import inspect

    for cls in (StepLR, ExponentialLR, CosineAnnealingLR, LinearWarmup, ReduceLROnPlateau):
        assert "__init__" not in cls.__dict__
        assert list(inspect.signature(cls).parameters) == [
            "optimizer", *(h.name for h in cls.SETTINGS)]
    assert str(inspect.signature(StepLR)) == "(optimizer, step_size, gamma=0.1)"
    assert str(inspect.signature(LinearWarmup)) == (
        "(optimizer, warmup_steps, *, start_factor=None, after=None)")
    opt = _opt()
    plateau = ReduceLROnPlateau(opt, "max", 0.5, 3)  # positional, as in torch
    assert (plateau.mode, plateau.factor, plateau.patience) == ("max", 0.5, 3)
    assert plateau.state_dict()["config"] == {
        "mode": "max", "factor": 0.5, "patience": 3, "threshold": 1e-4, "threshold_mode": "rel",
        "cooldown": 0, "min_lr": 0.0, "eps": 1e-8}
    warm = LinearWarmup(opt, 4, after=StepLR(opt, 2))
    assert warm.state_dict()["config"] == {"warmup_steps": 4, "start_factor": 0.2}
    assert repr(warm) == "LinearWarmup(warmup_steps=4, start_factor=0.2)"
