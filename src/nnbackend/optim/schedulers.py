"""Learning-rate schedules: set ``optimizer.lr`` once per epoch.

Each schedule is constructed with the optimizer, records its learning rate as the base rate
α₀, sets the rate for epoch 0 and then, on every ``step()``, advances one epoch and sets the
rate for it (PyTorch's protocol; call ``scheduler.step()`` after the epoch's optimizer steps)::

    opt = Adam(model, lr=1e-2)
    sched = LinearWarmup(opt, 5, after=CosineAnnealingLR(opt, T_max=45))
    for epoch in range(50):
        train_one_epoch(model, opt)        # uses opt.lr
        sched.step()

=========================  ================================================================
schedule                   learning rate at epoch e
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
by hand lasts until the next ``step()``. ``get_last_lr()`` returns a float: an nnbackend
optimizer has one learning rate (PyTorch returns one per parameter group).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any

from .._checks import check_fraction, check_nonnegative, check_number, check_positive

__all__ = [
    "CosineAnnealingLR",
    "ExponentialLR",
    "LRScheduler",
    "LinearWarmup",
    "ReduceLROnPlateau",
    "StepLR",
]


class _Schedule:
    """What every schedule shares: the optimizer, the last rate set, the epoch counter."""

    optimizer: Any
    last_epoch: int
    _last_lr: float

    def __init__(self, optimizer: Any) -> None:
        where = type(self).__name__
        if not hasattr(optimizer, "lr"):
            msg = f"{where}: expected an optimizer with an 'lr' attribute, got {optimizer!r}"
            raise TypeError(msg)
        check_nonnegative(optimizer.lr, where=where, name="the optimizer's lr")
        self.optimizer = optimizer
        self.last_epoch = 0

    def get_last_lr(self) -> float:
        """The learning rate this schedule set last."""
        return self._last_lr

    def _set_lr(self, lr: float) -> None:
        self.optimizer.lr = lr
        self._last_lr = lr

    def _progress(self) -> dict[str, Any]:
        """The fields that change as the schedule runs (saved and restored)."""
        return {"last_epoch": self.last_epoch, "last_lr": self._last_lr}

    def _config(self) -> dict[str, Any]:
        """The constructor's settings (saved for reference; not restored)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """``{"type", "config", <progress fields>}``: plain Python values only.

        ``config`` records the settings the schedule was built with; loading restores only the
        progress (epoch counter, learning rates, and for ReduceLROnPlateau its counters), so a
        resumed run may change e.g. ``T_max`` deliberately.
        """
        return {"type": type(self).__name__, "config": self._config(), **self._progress()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the progress saved by :meth:`state_dict` and set the optimizer's lr to the
        saved last learning rate (so the optimizer and the schedule agree in any load order).

        Everything is validated before anything changes.
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
        missing = sorted(self._progress().keys() - state_dict.keys())
        if missing:
            msg = f"{where}: the state dict lacks {missing}"
            raise KeyError(msg)
        return self._checked_progress(state_dict, where=where)

    def _restore(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            setattr(self, "_last_lr" if name == "last_lr" else name, value)
        self.optimizer.lr = self._last_lr

    def _checked_progress(self, state: Mapping[str, Any], *, where: str) -> dict[str, Any]:
        return {
            "last_epoch": _check_int(state["last_epoch"], where=where, name="last_epoch"),
            "last_lr": check_nonnegative(state["last_lr"], where=where, name="last_lr"),
        }

    def __repr__(self) -> str:
        config = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({config})"


class LRScheduler(_Schedule):
    """Base class of the closed-form schedules: α(e) = :meth:`lr_at` (e) from the base rate α₀.

    Subclasses set their configuration, then call ``super().__init__(optimizer)``, and
    implement :meth:`lr_at`.

    Attributes
    ----------
    optimizer : Optimizer
    base_lr : float
        α₀, the optimizer's learning rate when the schedule was created.
    last_epoch : int
        The current epoch e (0 after construction; +1 per :meth:`step`).
    """

    def __init__(self, optimizer: Any, *, base_lr: float | None = None) -> None:
        super().__init__(optimizer)
        self.base_lr = float(optimizer.lr) if base_lr is None else base_lr
        self._set_lr(self.lr_at(0))

    def lr_at(self, epoch: int) -> float:
        """The learning rate at ``epoch`` (a Python float)."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and set the optimizer's learning rate to α(e)."""
        self.last_epoch += 1
        self._set_lr(self.lr_at(self.last_epoch))

    def _progress(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr, **super()._progress()}

    def _checked_progress(self, state: Mapping[str, Any], *, where: str) -> dict[str, Any]:
        return {
            "base_lr": check_nonnegative(state["base_lr"], where=where, name="base_lr"),
            **super()._checked_progress(state, where=where),
        }


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

    def __init__(self, optimizer: Any, step_size: int, gamma: float = 0.1) -> None:
        where = type(self).__name__
        self.step_size = _check_int(step_size, where=where, name="step_size", minimum=1)
        self.gamma = check_positive(gamma, where=where, name="gamma")
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)

    def _config(self) -> dict[str, Any]:
        return {"step_size": self.step_size, "gamma": self.gamma}


class ExponentialLR(LRScheduler):
    """Decay by γ every epoch: α(e) = α₀ γ^e.

    Parameters
    ----------
    optimizer : Optimizer
    gamma : float
        γ > 0.
    """

    def __init__(self, optimizer: Any, gamma: float) -> None:
        self.gamma = check_positive(gamma, where=type(self).__name__, name="gamma")
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma**epoch

    def _config(self) -> dict[str, Any]:
        return {"gamma": self.gamma}


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
        η_min ≥ 0, the lowest rate.
    """

    def __init__(self, optimizer: Any, T_max: int, eta_min: float = 0.0) -> None:
        where = type(self).__name__
        self.T_max = _check_int(T_max, where=where, name="T_max", minimum=1)
        self.eta_min = check_nonnegative(eta_min, where=where, name="eta_min")
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        cosine = 0.5 * (1.0 + math.cos(math.pi * epoch / self.T_max))
        return self.eta_min + (self.base_lr - self.eta_min) * cosine

    def _config(self) -> dict[str, Any]:
        return {"T_max": self.T_max, "eta_min": self.eta_min}


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
        warm-up then drives it (do not call its ``step`` yourself). Its base rate is α₀. A
        :class:`ReduceLROnPlateau` starts at α₀ at epoch W and from then on watches the metric
        given to ``LinearWarmup.step(metric)`` (which the warm-up epochs ignore).
    """

    def __init__(
        self,
        optimizer: Any,
        warmup_steps: int,
        *,
        start_factor: float | None = None,
        after: LRScheduler | ReduceLROnPlateau | None = None,
    ) -> None:
        where = type(self).__name__
        self.warmup_steps = _check_int(warmup_steps, where=where, name="warmup_steps")
        if start_factor is None:
            start_factor = 1.0 / (self.warmup_steps + 1)
        self.start_factor = check_number(start_factor, where=where, name="start_factor")
        if not 0.0 <= self.start_factor <= 1.0:
            msg = f"{where}: start_factor must lie in [0, 1], got {start_factor!r}"
            raise ValueError(msg)
        if after is not None:
            if not isinstance(after, LRScheduler | ReduceLROnPlateau):
                msg = (
                    f"{where}: after must be a schedule (LRScheduler or ReduceLROnPlateau), "
                    f"got {type(after).__name__}"
                )
                raise TypeError(msg)
            if after.optimizer is not optimizer:
                msg = f"{where}: after={after!r} drives another optimizer than this warm-up"
                raise ValueError(msg)
        self.after = after
        super().__init__(
            optimizer, base_lr=after.base_lr if isinstance(after, LRScheduler) else None
        )

    def lr_at(self, epoch: int) -> float:
        warmup = self.warmup_steps
        if epoch < warmup:
            f = self.start_factor
            return self.base_lr * (f + (1.0 - f) * epoch / warmup)
        after = self.after
        if after is None:
            return self.base_lr
        if isinstance(after, ReduceLROnPlateau):
            if epoch == warmup:  # the plateau schedule starts at α₀ (also at W = 0)
                return self.base_lr
            msg = (
                f"LinearWarmup: the rate at epoch {epoch}, after the warm-up, depends on the "
                "metrics ReduceLROnPlateau has seen (no closed form); read get_last_lr()"
            )
            raise TypeError(msg)
        return after.lr_at(epoch - warmup)

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
                after.last_epoch, after._last_lr = e, self._last_lr
            return
        if e > 0:
            if metric is None:
                msg = "LinearWarmup.step: ReduceLROnPlateau needs the metric, as step(metric)"
                raise TypeError(msg)
            after.step(metric)
            self.last_epoch += 1
            self._last_lr = after.get_last_lr()
            return
        self.last_epoch += 1
        self._set_lr(self.lr_at(self.last_epoch) if e < 0 else self.base_lr)
        if e == 0:
            after._last_lr = self.base_lr

    def _config(self) -> dict[str, Any]:
        return {"warmup_steps": self.warmup_steps, "start_factor": self.start_factor}

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
        super()._restore(values)  # last: the warm-up's own last rate is the optimizer's


class ReduceLROnPlateau(_Schedule):
    """Reduce the learning rate when a metric has stopped improving (PyTorch's semantics).

    Each ``step(metric)`` compares the metric with the best seen so far. In ``"min"`` mode
    with ``threshold_mode="rel"`` it improves when metric < best (1 − threshold) (``"abs"``:
    metric < best − threshold; ``"max"`` mode mirrors both). After more than ``patience``
    epochs in a row without improvement, α ← max(α · factor, min_lr) (skipped when the change
    would be at most ``eps``), then ``cooldown`` epochs pass before bad epochs count again.

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
    min_lr : float
        ≥ 0.
    eps : float
        ≥ 0.

    Notes
    -----
    ``metric`` is a Python number (e.g. ``float(val_loss)``, converted once per epoch by the
    training loop); a NaN metric never counts as an improvement.
    """

    def __init__(
        self,
        optimizer: Any,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
    ) -> None:
        where = type(self).__name__
        super().__init__(optimizer)
        if mode not in ("min", "max"):
            msg = f"{where}: mode must be 'min' or 'max', got {mode!r}"
            raise ValueError(msg)
        if threshold_mode not in ("rel", "abs"):
            msg = f"{where}: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}"
            raise ValueError(msg)
        self.mode = mode
        self.threshold_mode = threshold_mode
        self.factor = check_fraction(factor, where=where, name="factor")
        if self.factor == 0.0:
            msg = f"{where}: factor must lie in (0, 1), got {factor!r}"
            raise ValueError(msg)
        self.patience = _check_int(patience, where=where, name="patience")
        self.threshold = check_nonnegative(threshold, where=where, name="threshold")
        self.cooldown = _check_int(cooldown, where=where, name="cooldown")
        self.min_lr = check_nonnegative(min_lr, where=where, name="min_lr")
        self.eps = check_nonnegative(eps, where=where, name="eps")
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self._last_lr = float(optimizer.lr)

    def _is_better(self, value: float) -> bool:
        best, t = self.best, self.threshold
        if self.mode == "min":
            return value < (best * (1.0 - t) if self.threshold_mode == "rel" else best - t)
        return value > (best * (1.0 + t) if self.threshold_mode == "rel" else best + t)

    def step(self, metric: float) -> None:
        """Record the epoch's metric (a Python number) and reduce the rate if it plateaued."""
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
        lr = float(self.optimizer.lr)
        if self.num_bad_epochs > self.patience:
            new_lr = max(lr * self.factor, self.min_lr)
            if lr - new_lr > self.eps:
                lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._set_lr(lr)

    def _config(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "factor": self.factor, "patience": self.patience,
            "threshold": self.threshold, "threshold_mode": self.threshold_mode,
            "cooldown": self.cooldown, "min_lr": self.min_lr, "eps": self.eps,
        }

    def _progress(self) -> dict[str, Any]:
        return {
            **super()._progress(), "best": self.best, "num_bad_epochs": self.num_bad_epochs,
            "cooldown_counter": self.cooldown_counter,
        }

    def _checked_progress(self, state: Mapping[str, Any], *, where: str) -> dict[str, Any]:
        best = state["best"]
        if isinstance(best, bool) or not isinstance(best, int | float):
            msg = f"{where}: best must be a number, got {best!r}"
            raise TypeError(msg)
        return {
            **super()._checked_progress(state, where=where),
            "best": float(best),
            "num_bad_epochs": _check_int(state["num_bad_epochs"], where=where,
                                         name="num_bad_epochs"),
            "cooldown_counter": _check_int(state["cooldown_counter"], where=where,
                                           name="cooldown_counter"),
        }


def _check_int(value: Any, *, where: str, name: str, minimum: int = 0) -> int:
    """An integer ≥ ``minimum`` (bools and floats are rejected)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        out = operator.index(value)
    except TypeError:
        msg = f"{where}: {name} must be an integer, got {value!r}"
        raise TypeError(msg) from None
    if out < minimum:
        msg = f"{where}: {name} must be >= {minimum}, got {value!r}"
        raise ValueError(msg)
    return out
