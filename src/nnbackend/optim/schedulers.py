"""Learning-rate schedules: set each parameter group's ``lr`` once per epoch.

Each schedule is constructed with the optimizer, records the learning rate of each parameter
group as its base rate α₀ (``base_lrs``, as PyTorch's), sets the rates for epoch 0 and then, on
every ``step()``, advances one epoch and sets the rates for it (PyTorch's protocol; call
``scheduler.step()`` after the epoch's optimizer steps)::

    opt = Adam(model, lr=1e-2)
    sched = LinearWarmup(opt, 5, after=CosineAnnealingLR(opt, T_max=45))
    for epoch in range(50):
        train_one_epoch(model, opt)        # uses each group's lr
        sched.step()

=========================  ================================================================
schedule                   learning rate of a group at epoch e
=========================  ================================================================
``StepLR``                 α₀ γ^⌊e / step_size⌋
``ExponentialLR``          α₀ γ^e
``CosineAnnealingLR``      η_min + (α₀ − η_min)(1 + cos(π e / T_max)) / 2
``LinearWarmup``           α₀ (f + (1 − f) e / W) for e < W, then ``after``'s rate at e − W
``ReduceLROnPlateau``      α ← max(α · factor, min_lr) after ``patience`` epochs without
                           improvement of the metric given to ``step(metric)``
=========================  ================================================================

The closed-form schedules compute α(e) from α₀ and e afresh each step (no product of factors
accumulates rounding), so they match their formulas to the last bit, and a learning rate set
by hand lasts until the next ``step()``. With several parameter groups each group follows the
formula from its own α₀ (AdamW with a smaller rate for the embeddings keeps the ratio).

``get_last_lrs()`` returns one rate per group (PyTorch's ``get_last_lr()``); ``get_last_lr()``
returns the rate as a float, the one every group shares (an error names them when they differ).

Each schedule declares its settings once, in ``SETTINGS`` (see :mod:`nnbackend.optim._hyper`),
and the fields it saves in ``PROGRESS``: they give the constructor, its validation, the state
dict, its validation on load, and ``repr``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

from .._checks import check_nonnegative
from ._hyper import (
    REQUIRED,
    Check,
    Hyperparameter,
    bind,
    nonnegative,
    nonnegative_int,
    nonnegative_or_per_group,
    one_of,
    open_unit_interval,
    optional,
    positive,
    positive_int,
    signature,
    unit_interval,
)

__all__ = [
    "CosineAnnealingLR",
    "ExponentialLR",
    "LRScheduler",
    "LinearWarmup",
    "ReduceLROnPlateau",
    "StepLR",
]


class Progress(NamedTuple):
    """A field that changes as a schedule runs, saved in its state dict and restored on load.

    ``per_group`` fields are lists with one number per parameter group.
    """

    name: str
    check: Check
    per_group: bool = False


def _rates(value: Any, where: str, name: str) -> list[float]:
    """A list of learning rates ≥ 0."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        msg = f"{where}: {name} must be a list of learning rates, got {value!r}"
        raise TypeError(msg)
    return [nonnegative(v, where, f"{name}[{i}]") for i, v in enumerate(value)]


def _any_number(value: Any, where: str, name: str) -> float:
    """A real Python number, infinities included (ReduceLROnPlateau's best so far)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{where}: {name} must be a number, got {value!r}"
        raise TypeError(msg)
    return float(value)


# The fields of a state dict saved before parameter groups, for the one rate it scheduled
_LEGACY = {"base_lr": "base_lrs", "last_lr": "last_lrs"}


class _Schedule:
    """What every schedule shares: the optimizer, the last rates set, the epoch counter, and
    construction, state dicts and repr from ``SETTINGS`` and ``PROGRESS``."""

    SETTINGS: ClassVar[tuple[Hyperparameter, ...]] = ()
    PROGRESS: ClassVar[tuple[Progress, ...]] = (
        Progress("last_epoch", nonnegative_int),
        Progress("last_lrs", _rates, per_group=True),
    )

    optimizer: Any
    last_epoch: int
    last_lrs: list[float]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = inspect.Parameter
        cls.__signature__ = signature(  # type: ignore[attr-defined]
            cls.SETTINGS, leading=[kind("optimizer", kind.POSITIONAL_OR_KEYWORD)]
        )

    def __init__(self, optimizer: Any, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        where = cls.__name__
        given = bind(cls.SETTINGS, args, kwargs, where=where)
        values = {h.name: h.check(given[h.name], where, h.name) for h in cls.SETTINGS}
        _check_optimizer(optimizer, where=where)
        self.optimizer = optimizer
        for name, value in self._settled(values).items():
            setattr(self, name, value)
        self.last_epoch = 0
        self._start()

    def _settled(self, values: dict[str, Any]) -> dict[str, Any]:
        """The checked settings, with defaults that depend on others filled in and rules that
        link them (or the optimizer) enforced; a subclass hook."""
        return values

    def _start(self) -> None:
        """Set the state of epoch 0 (and the optimizer's rates for it)."""
        self.last_lrs = self._current_lrs()

    # ---------------------------------------------------------------- learning rates

    def _groups(self) -> list[Any]:
        groups = list(self.optimizer.param_groups)
        known = len(getattr(self, "last_lrs", groups))
        if len(groups) != known:
            msg = (
                f"{type(self).__name__}: the optimizer has {len(groups)} parameter groups, the "
                f"schedule was created for {known}; create schedules after add_param_group"
            )
            raise ValueError(msg)
        return groups

    def _current_lrs(self) -> list[float]:
        return [float(g["lr"]) for g in self._groups()]

    def _set_lrs(self, lrs: Sequence[float]) -> None:
        for group, lr in zip(self._groups(), lrs, strict=True):
            group["lr"] = lr
        self.last_lrs = list(lrs)

    def get_last_lrs(self) -> list[float]:
        """The learning rates this schedule set last, one per parameter group (what PyTorch's
        ``get_last_lr()`` returns)."""
        return list(self.last_lrs)

    def get_last_lr(self) -> float:
        """The learning rate this schedule set last, the one every parameter group shares."""
        return _common(self.last_lrs, where=type(self).__name__, what="last learning rates",
                       instead="get_last_lrs()")

    # ---------------------------------------------------------------- state dicts

    def _config(self) -> dict[str, Any]:
        """The constructor's settings (saved for reference; not restored)."""
        return {h.name: getattr(self, h.name) for h in self.SETTINGS if h.saved}

    def _progress(self) -> dict[str, Any]:
        """The fields that change as the schedule runs (saved and restored)."""
        out = {}
        for field in self.PROGRESS:
            value = getattr(self, field.name)
            out[field.name] = list(value) if field.per_group else value
        return out

    def state_dict(self) -> dict[str, Any]:
        """``{"type", "config", <progress fields>}``: plain Python values only.

        ``config`` records the settings the schedule was built with; loading restores only the
        progress (epoch counter, learning rates per group, and for ReduceLROnPlateau its
        counters), so a resumed run may change e.g. ``T_max`` deliberately.
        """
        return {"type": type(self).__name__, "config": self._config(), **self._progress()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the progress saved by :meth:`state_dict` and set the optimizer's rates to the
        saved last learning rates (so the optimizer and the schedule agree in any load order).

        Everything is validated before anything changes. A state dict of a schedule over one
        learning rate (``base_lr``/``last_lr``, before parameter groups) loads into a schedule
        of an optimizer with one group.
        """
        self._restore(self._validated(state_dict))

    def _validated(self, state_dict: Any) -> dict[str, Any]:
        """The checked progress fields of a saved state dict."""
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, Mapping):
            msg = f"{where}: expected a dict, got {type(state_dict).__name__}"
            raise TypeError(msg)
        kind = state_dict.get("type")
        if kind != type(self).__name__:
            msg = f"{where}: the state dict was saved by {kind!r}, not {type(self).__name__!r}"
            raise ValueError(msg)
        state = dict(state_dict)
        for old, new in _LEGACY.items():
            if old in state and new not in state:
                state[new] = [state.pop(old)]
        missing = sorted({f.name for f in self.PROGRESS} - state.keys())
        if missing:
            msg = f"{where}: the state dict lacks {missing}"
            raise KeyError(msg)
        out = {}
        groups = len(self.last_lrs)
        for field in self.PROGRESS:
            value = field.check(state[field.name], where, field.name)
            if field.per_group and len(value) != groups:
                msg = (
                    f"{where}: {field.name} holds {len(value)} rates, the optimizer has "
                    f"{groups} parameter groups"
                )
                raise ValueError(msg)
            out[field.name] = value
        return out

    def _restore(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            setattr(self, name, value)
        self._set_lrs(self.last_lrs)

    def __repr__(self) -> str:
        config = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({config})"


class LRScheduler(_Schedule):
    """Base class of the closed-form schedules: α(e) = :meth:`lr_at` (e) from each group's base
    rate α₀.

    Subclasses declare ``SETTINGS`` and implement :meth:`_rate`.

    Attributes
    ----------
    optimizer : Optimizer
    base_lrs : list of float
        α₀ of each parameter group: its learning rate when the schedule was created.
    base_lr : float
        The α₀ every group shares (an error when they differ: read ``base_lrs``).
    last_epoch : int
        The current epoch e (0 after construction; +1 per :meth:`step`).
    """

    PROGRESS: ClassVar[tuple[Progress, ...]] = (
        Progress("base_lrs", _rates, per_group=True), *_Schedule.PROGRESS,
    )

    base_lrs: list[float]

    def _start(self) -> None:
        self.base_lrs = self._initial_base_lrs()
        self.last_lrs = list(self.base_lrs)  # the group count _set_lrs checks against
        self._set_lrs(self.lrs_at(0))

    def _initial_base_lrs(self) -> list[float]:
        return self._current_lrs()

    @property
    def base_lr(self) -> float:
        """α₀, the base rate every parameter group shares."""
        return _common(self.base_lrs, where=type(self).__name__, what="base rates",
                       instead="base_lrs")

    def lr_at(self, epoch: int, base_lr: float | None = None) -> float:
        """The learning rate at ``epoch`` (a Python float) of a group whose base rate is
        ``base_lr`` (default: the base rate every group shares)."""
        return self._rate(epoch, self.base_lr if base_lr is None else base_lr)

    def lrs_at(self, epoch: int) -> list[float]:
        """The learning rate of each parameter group at ``epoch``."""
        return [self._rate(epoch, base) for base in self.base_lrs]

    def _rate(self, epoch: int, base_lr: float) -> float:
        """α(e) for the base rate α₀ = ``base_lr``."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and set each group's learning rate to its α(e)."""
        self.last_epoch += 1
        self._set_lrs(self.lrs_at(self.last_epoch))


class StepLR(LRScheduler):
    """Decay by γ every ``step_size`` epochs: α(e) = α₀ γ^⌊e / step_size⌋.

    Parameters
    ----------
    optimizer : Optimizer
    step_size : int
        Epochs between decays, ≥ 1.
    gamma : float
        γ > 0.
    """

    SETTINGS: ClassVar[tuple[Hyperparameter, ...]] = (
        Hyperparameter("step_size", REQUIRED, positive_int, positional=True),
        Hyperparameter("gamma", 0.1, positive, positional=True),
    )

    step_size: int
    gamma: float

    def _rate(self, epoch: int, base_lr: float) -> float:
        return base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """Decay by γ every epoch: α(e) = α₀ γ^e.

    Parameters
    ----------
    optimizer : Optimizer
    gamma : float
        γ > 0.
    """

    SETTINGS: ClassVar[tuple[Hyperparameter, ...]] = (
        Hyperparameter("gamma", REQUIRED, positive, positional=True),
    )

    gamma: float

    def _rate(self, epoch: int, base_lr: float) -> float:
        return base_lr * self.gamma**epoch


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from α₀ to η_min over ``T_max`` epochs (SGDR without restarts).

    α(e) = η_min + (α₀ − η_min)(1 + cos(π e / T_max)) / 2: α₀ at e = 0, η_min at e = T_max,
    and beyond T_max the cosine continues (rising again over the next T_max epochs), as in
    PyTorch.

    Parameters
    ----------
    optimizer : Optimizer
    T_max : int
        Half-period in epochs, ≥ 1.
    eta_min : float
        η_min ≥ 0, the lowest rate (of every group).
    """

    SETTINGS: ClassVar[tuple[Hyperparameter, ...]] = (
        Hyperparameter("T_max", REQUIRED, positive_int, positional=True),
        Hyperparameter("eta_min", 0.0, nonnegative, positional=True),
    )

    T_max: int
    eta_min: float

    def _rate(self, epoch: int, base_lr: float) -> float:
        cosine = 0.5 * (1.0 + math.cos(math.pi * epoch / self.T_max))
        return self.eta_min + (base_lr - self.eta_min) * cosine


def _schedule_or_none(value: Any, where: str, name: str) -> Any:
    if value is not None and not isinstance(value, LRScheduler | ReduceLROnPlateau):
        msg = (
            f"{where}: {name} must be a schedule (LRScheduler or ReduceLROnPlateau), "
            f"got {type(value).__name__}"
        )
        raise TypeError(msg)
    return value


class LinearWarmup(LRScheduler):
    """Linear warm-up over W epochs, then another schedule (or the base rate).

    ::

        α(e) = α₀ (f + (1 − f) e / W)     for e < W
        α(e) = after's α(e − W)            for e ≥ W  (α₀ when ``after`` is None)

    The warm-up is PyTorch's ``LinearLR(start_factor=f, total_iters=W)`` followed, at
    milestone W, by ``after`` started from its epoch 0: ``SequentialLR([LinearLR(...), after],
    milestones=[W])``. The default f = 1 / (W + 1) climbs in equal steps
    α₀/(W+1), 2α₀/(W+1), …, W α₀/(W+1) and reaches α₀ at epoch W, wasting no epoch at rate 0.

    Parameters
    ----------
    optimizer : Optimizer
    warmup_steps : int
        W ≥ 0 (0: no warm-up).
    start_factor : float, optional
        f in [0, 1]; default 1 / (W + 1).
    after : LRScheduler or ReduceLROnPlateau, optional
        The schedule that takes over at epoch W. Build it first, on the same optimizer; the
        warm-up then drives it (do not call its ``step`` yourself). Its base rates are α₀. A
        :class:`ReduceLROnPlateau` starts at α₀ at epoch W and from then on watches the metric
        given to ``LinearWarmup.step(metric)`` (which the warm-up epochs ignore).
    """

    SETTINGS: ClassVar[tuple[Hyperparameter, ...]] = (
        Hyperparameter("warmup_steps", REQUIRED, nonnegative_int, positional=True),
        Hyperparameter("start_factor", None, optional(unit_interval)),
        Hyperparameter("after", None, _schedule_or_none, saved=False),
    )

    warmup_steps: int
    start_factor: float
    after: LRScheduler | ReduceLROnPlateau | None

    def _settled(self, values: dict[str, Any]) -> dict[str, Any]:
        if values["start_factor"] is None:
            values["start_factor"] = 1.0 / (values["warmup_steps"] + 1)
        after = values["after"]
        if after is not None and after.optimizer is not self.optimizer:
            msg = f"{type(self).__name__}: after={after!r} drives another optimizer than this one"
            raise ValueError(msg)
        return values

    def _initial_base_lrs(self) -> list[float]:
        after = self.after
        return list(after.base_lrs) if isinstance(after, LRScheduler) else self._current_lrs()

    def _rate(self, epoch: int, base_lr: float) -> float:
        warmup = self.warmup_steps
        if epoch < warmup:
            f = self.start_factor
            return base_lr * (f + (1.0 - f) * epoch / warmup)
        after = self.after
        if after is None:
            return base_lr
        if isinstance(after, ReduceLROnPlateau):
            if epoch == warmup:  # the plateau schedule starts at α₀ (also at W = 0)
                return base_lr
            msg = (
                f"LinearWarmup: the rate at epoch {epoch}, after the warm-up, depends on the "
                "metrics ReduceLROnPlateau has seen (no closed form); read get_last_lrs()"
            )
            raise TypeError(msg)
        return after._rate(epoch - warmup, base_lr)

    def step(self, metric: float | None = None) -> None:
        """Advance one epoch; ``metric`` is for an ``after`` that is a ReduceLROnPlateau."""
        after, e = self.after, self.last_epoch + 1 - self.warmup_steps
        if not isinstance(after, ReduceLROnPlateau):
            if metric is not None:
                msg = (
                    f"LinearWarmup.step: got metric={metric!r}, but only a ReduceLROnPlateau "
                    "after the warm-up uses one"
                )
                raise TypeError(msg)
            super().step()
            if after is not None and e >= 0:
                after.last_epoch, after.last_lrs = e, list(self.last_lrs)
            return
        if e > 0:
            if metric is None:
                msg = "LinearWarmup.step: ReduceLROnPlateau needs the metric, as step(metric)"
                raise TypeError(msg)
            after.step(metric)
            self.last_epoch += 1
            self.last_lrs = after.get_last_lrs()
            return
        self.last_epoch += 1
        self._set_lrs(self.lrs_at(self.last_epoch) if e < 0 else list(self.base_lrs))
        if e == 0:
            after.last_lrs = list(self.base_lrs)

    def state_dict(self) -> dict[str, Any]:
        """As for every schedule, plus ``"after"``: the state dict of ``after`` (or None)."""
        out = super().state_dict()
        out["after"] = None if self.after is None else self.after.state_dict()
        return out

    def _validated(self, state_dict: Any) -> dict[str, Any]:
        values = super()._validated(state_dict)
        saved_after = state_dict.get("after")
        if (saved_after is None) != (self.after is None):
            msg = (
                "LinearWarmup.load_state_dict: the saved warm-up "
                f"{'has no' if saved_after is None else 'has an'} 'after' schedule, this one "
                f"{'has' if self.after is not None else 'has none'}"
            )
            raise ValueError(msg)
        values["after"] = None if self.after is None else self.after._validated(saved_after)
        return values

    def _restore(self, values: Mapping[str, Any]) -> None:
        values = dict(values)
        after_values = values.pop("after")
        if self.after is not None:
            self.after._restore(after_values)
        super()._restore(values)  # last: the warm-up's own last rates are the optimizer's


class ReduceLROnPlateau(_Schedule):
    """Reduce the learning rates when a metric has stopped improving (PyTorch's semantics).

    Each ``step(metric)`` compares the metric with the best seen so far. In ``"min"`` mode
    with ``threshold_mode="rel"`` it improves when metric < best (1 − threshold) (``"abs"``:
    metric < best − threshold; ``"max"`` mode mirrors both). After more than ``patience``
    epochs in a row without improvement, each group's α ← max(α · factor, min_lr) (skipped
    when the change would be at most ``eps``), then ``cooldown`` epochs pass before bad epochs
    count again.

    Parameters
    ----------
    optimizer : Optimizer
    mode : {"min", "max"}
    factor : float
        In (0, 1).
    patience : int
        ≥ 0.
    threshold : float
        ≥ 0.
    threshold_mode : {"rel", "abs"}
    cooldown : int
        ≥ 0.
    min_lr : float or list of float
        ≥ 0; a list gives one per parameter group.
    eps : float
        ≥ 0.

    Notes
    -----
    ``metric`` is a Python number (e.g. ``float(val_loss)``, converted once per epoch by the
    training loop); a NaN metric never counts as an improvement.
    """

    SETTINGS: ClassVar[tuple[Hyperparameter, ...]] = (
        Hyperparameter("mode", "min", one_of("min", "max"), positional=True),
        Hyperparameter("factor", 0.1, open_unit_interval, positional=True),
        Hyperparameter("patience", 10, nonnegative_int, positional=True),
        Hyperparameter("threshold", 1e-4, nonnegative, positional=True),
        Hyperparameter("threshold_mode", "rel", one_of("rel", "abs"), positional=True),
        Hyperparameter("cooldown", 0, nonnegative_int, positional=True),
        Hyperparameter("min_lr", 0.0, nonnegative_or_per_group, positional=True),
        Hyperparameter("eps", 1e-8, nonnegative, positional=True),
    )
    PROGRESS: ClassVar[tuple[Progress, ...]] = (
        *_Schedule.PROGRESS,
        Progress("best", _any_number),
        Progress("num_bad_epochs", nonnegative_int),
        Progress("cooldown_counter", nonnegative_int),
    )

    mode: str
    factor: float
    patience: int
    threshold: float
    threshold_mode: str
    cooldown: int
    min_lr: float | list[float]
    eps: float

    def _settled(self, values: dict[str, Any]) -> dict[str, Any]:
        groups = len(self.optimizer.param_groups)
        min_lr = values["min_lr"]
        if isinstance(min_lr, list) and len(min_lr) != groups:
            msg = (
                f"{type(self).__name__}: min_lr lists {len(min_lr)} rates, the optimizer has "
                f"{groups} parameter groups"
            )
            raise ValueError(msg)
        return values

    def _start(self) -> None:
        super()._start()
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    @property
    def min_lrs(self) -> list[float]:
        """The lowest rate of each parameter group."""
        min_lr = self.min_lr
        return list(min_lr) if isinstance(min_lr, list) else [min_lr] * len(self.last_lrs)

    def _is_better(self, value: float) -> bool:
        best, t = self.best, self.threshold
        if self.mode == "min":
            return value < (best * (1.0 - t) if self.threshold_mode == "rel" else best - t)
        return value > (best * (1.0 + t) if self.threshold_mode == "rel" else best + t)

    def step(self, metric: float) -> None:
        """Record the epoch's metric (a Python number) and reduce the rates if it plateaued."""
        try:
            value = float(metric)
        except (TypeError, ValueError):
            msg = f"ReduceLROnPlateau.step: metric must be a number, got {metric!r}"
            raise TypeError(msg) from None
        self.last_epoch += 1
        if self._is_better(value):
            self.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        lrs = self._current_lrs()
        if self.num_bad_epochs > self.patience:
            lrs = [self._reduced(lr, floor) for lr, floor in zip(lrs, self.min_lrs, strict=True)]
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._set_lrs(lrs)

    def _reduced(self, lr: float, floor: float) -> float:
        new_lr = max(lr * self.factor, floor)
        return new_lr if lr - new_lr > self.eps else lr


def _check_optimizer(optimizer: Any, *, where: str) -> None:
    """Refuse anything but an optimizer whose parameter groups each have a learning rate."""
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, Sequence) or not groups or not all(
        isinstance(g, Mapping) and "lr" in g for g in groups
    ):
        msg = (
            f"{where}: expected an optimizer with param_groups (each with an 'lr'), "
            f"got {optimizer!r}"
        )
        raise TypeError(msg)
    for i, g in enumerate(groups):
        check_nonnegative(g["lr"], caller=where, name=f"the optimizer's param_groups[{i}]['lr']")


def _common(values: Sequence[float], *, where: str, what: str, instead: str) -> float:
    """The value every group shares."""
    first = values[0]
    if all(v == first for v in values[1:]):
        return first
    msg = f"{where}: the parameter groups have different {what} {list(values)}; read {instead}"
    raise ValueError(msg)
