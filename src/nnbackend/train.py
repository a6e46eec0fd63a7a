"""Training loop: ``fit``, ``evaluate``, ``predict``, early stopping and the progress bar.

One training step is::

    y, backprop = model.forward(xb)          # forward, retaining what backward needs
    loss, dy = loss_fn(y, yb)                # 0-d loss on the device, ∂L/∂y
    optimizer.zero_grad(); backprop(dy)      # ∂L/∂θ accumulated in every Parameter.grad
    optimizer.step()                         # θ ← update(θ, ∂L/∂θ)

Nothing in a step reads a value back to the host. Per-step losses stay on the device and are
brought back together every ``log_every`` steps (one synchronisation for the whole window), which
is also when a NaN or infinite loss is detected and reported with the exact epoch and step.

A :class:`~nnbackend.distributed.DistributedDataParallel` model trains the same way on every
rank, each on its shard of the global batches (see :func:`nnbackend.data.batches`'s ``rank``
and ``world_size``): the epoch records hold the loss and metrics over the whole data set
(sums over the ranks, one host all-reduce per epoch), a non-finite loss on any rank stops every
rank at the same window, and only rank 0 shows a progress bar.

``fit(compile=True)`` runs the steps through :func:`nnbackend.compile_step` instead (one
``jax.jit`` program on JAX, a CUDA graph on CuPy and PyTorch CUDA, the same eager step
elsewhere) and keeps everything else: the metrics (from the step's outputs), the windowed
non-finite check, the callbacks and the progress bar. The compiled state is written back into
the model and optimizer after every epoch's steps (before validation, ``on_epoch`` and the
callbacks' ``on_epoch_end``), and when ``fit`` raises.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from array_api_compat import array_namespace

from ._checks import check_int, namespace_of
from ._memory import keep_freed_memory
from ._typing import Array, Namespace
from .backend import to_numpy
from .layers.module import Module

__all__ = [
    "Callback",
    "EarlyStopping",
    "History",
    "NonFiniteLossError",
    "binary_accuracy_count",
    "default_metrics",
    "evaluate",
    "fit",
    "keep_freed_memory",
    "predict",
]

_log = logging.getLogger(__name__)

Metric = Callable[[Array, Array], Array]
"""``metric(prediction, target) -> 0-d array``: the *sum* of a per-sample score over the batch."""


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch and step."""


class OptimizerLike(Protocol):
    def step(self) -> None: ...
    def zero_grad(self) -> None: ...


@dataclass
class History:
    """Per-epoch records of a :func:`fit` run.

    ``history.epochs`` is a list of dicts with ``epoch`` (1-based), ``loss``, each metric, their
    ``val_`` counterparts when validation data was given, ``time`` (seconds) and
    ``samples_per_s``. ``history["loss"]`` is the column of one key across epochs.

    ``step_kind`` says which training step ran: ``"eager"`` (``fit(compile=False)``, or
    ``compile=True`` where nothing compiles), ``"jax-jit"`` or ``"cuda-graph"``; ``step_note``
    why (the compiled step's :attr:`~nnbackend.CompiledStep.note`), ``compile_seconds`` the
    host time spent compiling (included in the first epoch's ``time``) and ``traces`` the
    compilations (one per batch shape).
    """

    epochs: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    best_epoch: int | None = None
    step_kind: str = "eager"
    step_note: str = "eager: fit(compile=False) runs the plain step"
    compile_seconds: float = 0.0
    traces: int = 0

    def __getitem__(self, key: str) -> list[float]:
        return [row[key] for row in self.epochs if key in row]

    def __len__(self) -> int:
        return len(self.epochs)

    @property
    def last(self) -> dict[str, float]:
        """The record of the last epoch run (empty before training)."""
        return self.epochs[-1] if self.epochs else {}


class Callback:
    """Hook into :func:`fit`. Return True from :meth:`on_epoch_end` to stop training."""

    def on_train_begin(self, model: Module) -> None:
        """Called once before the first epoch."""

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float], model: Module) -> bool:
        """Called after each epoch with its record; True stops training."""
        return False

    def on_train_end(self, model: Module, history: History) -> None:
        """Called once when training ends, however it ends: after the last epoch, after an
        early stop, or while an exception (``NonFiniteLossError``, ``KeyboardInterrupt``, ...)
        propagates out of :func:`fit` (only for callbacks whose ``on_train_begin`` ran)."""


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Parameters
    ----------
    monitor : str
        A key of the epoch record, e.g. ``"val_loss"`` or ``"val_accuracy"``.
    patience : int
        Epochs without improvement before stopping.
    min_delta : float
        The smallest change that counts as an improvement.
    mode : {"auto", "min", "max"}
        Whether smaller or larger is better; ``"auto"`` is "max" for accuracies, else "min".
    restore_best_weights : bool
        At the end, put back the parameters of the best epoch (a device-side copy, no host
        trip); also when training ends with an exception, e.g. a NaN loss.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        *,
        patience: int = 5,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = True,
    ) -> None:
        if patience < 0:
            msg = f"EarlyStopping: patience must be >= 0, got {patience!r}"
            raise ValueError(msg)
        if mode not in ("auto", "min", "max"):
            msg = f"EarlyStopping: mode must be 'auto', 'min' or 'max', got {mode!r}"
            raise ValueError(msg)
        self.monitor = monitor
        self.patience = patience
        self.min_delta = abs(min_delta)
        self.maximize = mode == "max" or (mode == "auto" and "acc" in monitor)
        self.restore_best_weights = restore_best_weights
        self.best: float | None = None
        self.best_epoch: int | None = None
        self._best_state: dict[str, Array] | None = None
        self._waited = 0

    def on_train_begin(self, model: Module) -> None:
        self.best, self.best_epoch, self._best_state, self._waited = None, None, None, 0

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float], model: Module) -> bool:
        if self.monitor not in logs:
            msg = (
                f"EarlyStopping: monitored {self.monitor!r} is not in the epoch record "
                f"{sorted(logs)} (val_* keys need val_data)"
            )
            raise KeyError(msg)
        value = logs[self.monitor]
        if self.best is None:
            improved = True
        elif self.maximize:
            improved = value > self.best + self.min_delta
        else:
            improved = value < self.best - self.min_delta
        if improved:
            self.best, self.best_epoch, self._waited = value, epoch, 0
            if self.restore_best_weights:
                self._best_state = {
                    name: array_namespace(a).asarray(a, copy=True)
                    for name, a in model.state_dict().items()
                }
            return False
        self._waited += 1
        return self._waited >= self.patience

    def on_train_end(self, model: Module, history: History) -> None:
        history.best_epoch = self.best_epoch
        if self.restore_best_weights and self._best_state is not None:
            model.load_state_dict(self._best_state)


# ------------------------------------------------------------------------------------ metrics


def accuracy_count(prediction: Array, target: Array) -> Array:
    """Number of samples whose arg-max class matches the label (or the target's arg-max).

    ``prediction`` holds class scores (N, C) with C ≥ 2; ``target`` labels (N,) or class
    probabilities (N, C).
    """
    xp = namespace_of(prediction)
    predicted = xp.argmax(prediction, axis=1)
    truth = target if target.ndim == 1 else xp.argmax(target, axis=1)
    if truth.dtype != predicted.dtype:
        truth = xp.astype(truth, predicted.dtype)
    return xp.count_nonzero(predicted == truth)


def binary_accuracy_count(prediction: Array, target: Array) -> Array:
    """Σₙ of the fraction of sample n's outputs on the target's side: [zₙₖ > 0] = [tₙₖ > ½].

    ``prediction`` holds logits (N,) or (N, K) (σ(z) > ½ exactly when z > 0), ``target``
    0/1 labels or probabilities of the same shape (multi-label targets score per label).
    Returns an exact integer count when each sample has one output.
    """
    xp = namespace_of(prediction)
    correct = (prediction > 0) == (target > 0.5)
    per_sample = math.prod(correct.shape[1:])
    count = xp.count_nonzero(correct)
    if per_sample == 1:
        return count
    return xp.astype(count, prediction.dtype) / per_sample


_METRICS: dict[str, Metric] = {
    "accuracy": accuracy_count,
    "binary_accuracy": binary_accuracy_count,
}


def default_metrics(loss_fn: Any) -> tuple[str, ...]:
    """The metrics :func:`fit` and :func:`evaluate` report when ``metrics`` is not given.

    ``"accuracy"`` for :class:`~nnbackend.CrossEntropyLoss`, ``"binary_accuracy"`` for
    :class:`~nnbackend.BCEWithLogitsLoss`, none for any other loss (an arg-max match of
    regression outputs means nothing; pass ``metrics=`` explicitly, e.g. ``["accuracy"]`` for
    a mean squared error on one-hot classes).
    """
    from .losses import BCEWithLogitsLoss, CrossEntropyLoss

    if isinstance(loss_fn, CrossEntropyLoss):
        return ("accuracy",)
    if isinstance(loss_fn, BCEWithLogitsLoss):
        return ("binary_accuracy",)
    return ()


def _check_applicable(metrics: Mapping[str, Metric], prediction: Array, target: Array, *,
                      where: str) -> None:
    """Refuse a named metric that does not fit the model's output and the targets."""
    out, tgt = tuple(prediction.shape), tuple(target.shape)
    functions = set(metrics.values())
    if accuracy_count in functions:
        labels = target.ndim == 1 and tgt[:1] == out[:1]
        if not (prediction.ndim == 2 and out[1] >= 2 and (labels or tgt == out)):
            msg = (
                f"{where}: metric 'accuracy' needs class scores (N, C) with C >= 2 and labels "
                f"(N,) or class probabilities (N, C); got outputs {out} and targets {tgt} "
                "(one logit per sample: use BCEWithLogitsLoss and 'binary_accuracy'; "
                "regression: pass metrics=())"
            )
            raise ValueError(msg)
    if binary_accuracy_count in functions and tgt != out:
        msg = (
            f"{where}: metric 'binary_accuracy' needs targets of the outputs' shape {out}, "
            f"got {tgt}"
        )
        raise ValueError(msg)


def _resolve_metrics(metrics: Sequence[str | Metric] | None, loss_fn: Any, *, where: str
                     ) -> dict[str, Metric]:
    if metrics is None:
        metrics = default_metrics(loss_fn)
    elif isinstance(metrics, str) or callable(metrics):
        msg = f"{where}: metrics must be a sequence of names or callables, got {metrics!r}"
        raise TypeError(msg)
    resolved: dict[str, Metric] = {}
    for metric in metrics:
        if isinstance(metric, str):
            if metric not in _METRICS:
                msg = (
                    f"{where}: unknown metric {metric!r}; use one of {sorted(_METRICS)} or a "
                    "callable"
                )
                raise ValueError(msg)
            resolved[metric] = _METRICS[metric]
        elif callable(metric):
            resolved[getattr(metric, "__name__", f"metric{len(resolved)}")] = metric
        else:
            msg = f"{where}: a metric must be a name or a callable, got {metric!r}"
            raise TypeError(msg)
    return resolved


# ------------------------------------------------------------------------------------ data


def _group_of(model: Module) -> Any:
    """The communicator of a data-parallel model (None for any other module)."""
    from .distributed.parallel import DistributedDataParallel

    return model.comm if isinstance(model, DistributedDataParallel) else None


def _check_reduction(model: Module, loss_fn: Any, *, where: str) -> None:
    """A data-parallel model weights the ranks for the loss's reduction: they must agree."""
    comm = _group_of(model)
    if comm is None:
        return
    loss_reduction = "mean" if _is_mean(loss_fn) else "sum"
    weighting = getattr(model, "reduction", "mean")
    if loss_reduction != weighting:
        msg = (f"{where}: the loss reduces by {loss_reduction!r} but the "
               f"DistributedDataParallel model weights the ranks for "
               f"reduction={weighting!r}; give it reduction={loss_reduction!r}")
        raise ValueError(msg)


def _as_batches(data: Any, model: Module, *, batch_size: int, shuffle: bool, seed: int | None
                ) -> Iterable[tuple[Array, Array]]:
    """A re-iterable of (x, y) batches: ``data`` itself, or batches of an ``(X, y)`` pair."""
    if isinstance(data, tuple) and len(data) == 2:
        from .data import batches

        ref = model._reference_array()
        comm = _group_of(model)  # a data-parallel model: this rank's shard of each batch
        shard = {} if comm is None else {"rank": comm.rank, "world_size": comm.size}
        return batches(
            data[0], data[1], batch_size=batch_size, shuffle=shuffle, seed=seed,
            backend=model.backend, dtype=None if ref is None else ref.dtype, **shard,
        )
    if isinstance(data, Iterator):
        msg = (
            "training data must be re-iterable once per epoch (a batches(...) object or an "
            "(X, y) pair), not a one-shot iterator"
        )
        raise TypeError(msg)
    reiterable: Iterable[tuple[Array, Array]] = data
    return reiterable


class _Progress:
    """One tqdm bar over the whole run when available and stderr is a terminal (or when asked
    for ``"always"``); else silent."""

    def __init__(self, enabled: bool | str, total: int) -> None:
        self.bar: Any = None
        if enabled == "always" or (enabled and sys.stderr.isatty()):
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total or None, unit="batch", leave=True, file=sys.stderr,
                                dynamic_ncols=True)

    def epoch(self, epoch: int, epochs: int) -> None:
        if self.bar is not None:
            self.bar.set_description(f"epoch {epoch}/{epochs}", refresh=False)

    def update(self, steps: int, **postfix: str) -> None:
        if self.bar is not None:
            self.bar.update(steps)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------------------ loop


def fit(
    model: Module,
    loss_fn: Callable[[Array, Array], tuple[Array, Array]],
    optimizer: OptimizerLike,
    train_data: Any,
    *,
    epochs: int,
    val_data: Any = None,
    metrics: Sequence[str | Metric] | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool | str = True,
    batch_size: int = 32,
    seed: int | None = None,
    initial_epoch: int = 0,
    log_every: int = 10,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    on_step: Callable[[], None] | None = None,
    compile: bool = False,
) -> History:
    """Train ``model`` for ``epochs`` epochs and return the per-epoch :class:`History`.

    The model trains in training mode (validation runs in eval mode); afterwards every module
    is back in the mode it was in before the call.

    Parameters
    ----------
    model, loss_fn, optimizer
        A :class:`Module`; a loss returning ``(loss, ∂loss/∂y)``; an optimizer over the model's
        parameters (``zero_grad()``, ``step()``; with ``compile=True`` an
        :class:`~nnbackend.Optimizer` itself, not a wrapper: the compiled step runs its update).
    train_data
        A re-iterable of ``(x, y)`` batches on the model's backend (see
        :func:`nnbackend.data.batches`; its ``set_epoch`` is called when present, so a resumed
        run shuffles exactly as an uninterrupted one), or an ``(X, y)`` pair of host arrays,
        batched with ``batch_size`` and shuffled with ``seed``.
    epochs : int
        The epoch to stop after (counting from 1; with ``initial_epoch=k`` runs k+1 .. epochs).
    val_data : optional
        Like ``train_data``; evaluated after every epoch into ``val_loss`` and ``val_<metric>``.
    metrics : sequence of str or callable, optional
        Names (``"accuracy"``: arg-max class against labels or class probabilities;
        ``"binary_accuracy"``: logit > 0 against target > ½) or callables returning the batch
        *sum* of a per-sample score. Default: :func:`default_metrics` of ``loss_fn``
        (accuracy for cross-entropy, binary accuracy for BCE, nothing for other losses). A
        named metric that does not fit the outputs and targets is refused.
    callbacks : sequence of Callback
        E.g. :class:`EarlyStopping`. Each callback whose ``on_train_begin`` ran gets its
        ``on_train_end`` on every exit: after the last epoch, after an early stop, and when
        training raises (``NonFiniteLossError``, ``KeyboardInterrupt``, ...), before the
        exception propagates (so ``EarlyStopping`` restores the best weights then too).
    progress : bool or "always"
        Show a tqdm progress bar with loss, accuracy and samples/s: True on a terminal only,
        ``"always"`` also where stderr is a pipe (the ranks of an MPI job write to the
        launcher's pipes, which it forwards to the user's terminal). A data-parallel model
        shows it on rank 0 only.
    log_every : int
        Steps between host reads of the loss (for the bar and the NaN check).
    on_epoch : callable, optional
        ``on_epoch(epoch, record)`` after each epoch (the command line saves checkpoints here).
    on_step : callable, optional
        ``on_step()`` after every optimizer step, on the host: e.g. a per-step learning-rate
        schedule's ``step`` (a compiled step reads each group's ``lr`` at its next call, with
        no recompilation).
    compile : bool
        Run the training steps through :func:`nnbackend.compile_step` (``jax.jit`` on JAX,
        CUDA graphs on CuPy and PyTorch CUDA, the eager step elsewhere: the history's
        ``step_kind`` and ``step_note`` say which ran, also logged once at INFO level on the
        ``nnbackend.train`` logger). The model and optimizer hold the trained state after
        every epoch's steps (before validation, ``on_epoch`` and the callbacks), at the end
        and when ``fit`` raises. Loading a checkpoint into them in a callback is picked up by
        the next step.

    Host memory freed by a step is kept for the next one (:func:`keep_freed_memory`, on
    glibc: process-wide, from the first ``fit`` on).

    Raises
    ------
    NonFiniteLossError
        The loss became NaN or infinite; names the epoch and the step within it.
    TypeError
        ``compile=True`` with an optimizer that is not an :class:`~nnbackend.Optimizer` (a
        wrapper: move its per-step host work to ``on_step``).
    ValueError
        ``compile=True`` with a :class:`~nnbackend.distributed.DistributedDataParallel` model
        (its all-reduce runs on the host, inside the step).
    """
    if epochs < initial_epoch:
        msg = f"fit: epochs={epochs} is before initial_epoch={initial_epoch}"
        raise ValueError(msg)
    if log_every < 1:
        msg = f"fit: log_every must be >= 1, got {log_every!r}"
        raise ValueError(msg)
    if not isinstance(compile, bool):
        msg = f"fit: compile must be a bool, got {compile!r}"
        raise TypeError(msg)
    if on_step is not None and not callable(on_step):
        msg = f"fit: on_step must be callable, got {type(on_step).__name__}"
        raise TypeError(msg)
    metric_fns = _resolve_metrics(metrics, loss_fn, where="fit")
    keep_freed_memory()  # each step's activations reused, not faulted in again (host memory)
    train = _as_batches(train_data, model, batch_size=batch_size, shuffle=True, seed=seed)
    val = None if val_data is None else _as_batches(
        val_data, model, batch_size=max(batch_size, 256), shuffle=False, seed=None
    )
    _check_reduction(model, loss_fn, where="fit")
    comm = _group_of(model)
    history = History()
    step = _compiled(model, loss_fn, optimizer, outputs=bool(metric_fns)) if compile else None
    if step is not None:
        history.step_kind, history.step_note = step.kind, step.note
        _log.info("fit: %s", step.note)
    sums = _jitted_metrics(metric_fns) if step is not None and step.kind == "jax-jit" else None
    per_epoch = len(train) if isinstance(train, Sized) else 0
    bar = _Progress(progress if comm is None or comm.is_root else False,
                    per_epoch * (epochs - initial_epoch))
    modes = _modes(model)
    model.train()
    begun: list[Callback] = []  # the callbacks whose on_train_end is owed
    try:
        try:
            for callback in callbacks:
                callback.on_train_begin(model)
                begun.append(callback)
            for epoch in range(initial_epoch + 1, epochs + 1):
                bar.epoch(epoch, epochs)
                record = _train_epoch(model, loss_fn, optimizer, train, metric_fns, epoch=epoch,
                                      bar=bar, log_every=log_every, step=step,
                                      on_step=on_step, sums=sums)
                if step is not None:  # validation, on_epoch and callbacks use the objects
                    step.write_back()
                    history.compile_seconds, history.traces = step.compile_seconds, step.traces
                if val is not None:
                    record.update(_validate(model, loss_fn, val, metric_fns, epoch=epoch))
                bar.update(0, **{key: f"{value:.4f}" for key, value in record.items()
                                 if key in ("loss", "val_loss") or key.endswith("accuracy")},
                           **{"samples/s": f"{record['samples_per_s']:,.0f}"})
                history.epochs.append(record)
                if on_epoch is not None:
                    on_epoch(epoch, record)
                stop = [callback.on_epoch_end(epoch, record, model) for callback in callbacks]
                if any(stop):
                    history.stopped_early = True
                    break
        finally:
            bar.close()
            _restore(modes)
    except BaseException as error:  # KeyboardInterrupt too: callbacks end, then it propagates
        if step is not None:
            _write_back_after_error(step, history, error)
        _end_after_error(begun, model, history, error)
        raise
    for callback in begun:
        callback.on_train_end(model, history)
    return history


def _compiled(model: Module, loss_fn: Callable[[Array, Array], tuple[Array, Array]],
              optimizer: OptimizerLike, *, outputs: bool) -> Any:
    """``fit(compile=True)``'s step: :func:`nnbackend.compile_step` over the optimizer itself
    (returning the model's outputs for the metrics when there are any)."""
    from .compile import compile_step
    from .compile.base import refuse_distributed
    from .optim.optimizer import Optimizer

    where = "fit(compile=True)"
    refuse_distributed(model, where=where)
    if not isinstance(optimizer, Optimizer):
        msg = (
            f"{where}: the optimizer must be an nnbackend Optimizer, whose update the compiled "
            f"step runs itself; got {type(optimizer).__name__}. Pass the Optimizer it wraps "
            "and give fit the wrapper's per-step host work as on_step= (a per-step schedule's "
            "step), or train with compile=False"
        )
        raise TypeError(msg)
    return compile_step(model, loss_fn, optimizer, return_outputs=outputs)


def _add_metrics(metric_fns: Mapping[str, Metric], sums: dict[str, Array], y: Array,
                 target: Array) -> dict[str, Array]:
    """The running metric sums with the batch's counts added (the first batch's as they are)."""
    out = dict(sums)
    for name, fn in metric_fns.items():
        count = fn(y, target)
        out[name] = sums[name] + count if name in sums else count
    return out


def _jitted_metrics(metric_fns: Mapping[str, Metric]) -> Any:
    """On JAX beside a ``jax.jit`` step: :func:`_add_metrics` as one jitted program (one
    dispatch a step instead of one per array operation), for the built-in metrics; None (the
    eager sums) when a metric is a callable of the user's, which may not be traceable."""
    if not metric_fns or any(fn not in _METRICS.values() for fn in metric_fns.values()):
        return None
    import jax

    fns = dict(metric_fns)
    first = jax.jit(lambda y, target: _add_metrics(fns, {}, y, target))
    add = jax.jit(lambda sums, y, target: _add_metrics(fns, sums, y, target))

    def sums(_: Mapping[str, Metric], running: dict[str, Array], y: Array, target: Array
             ) -> dict[str, Array]:
        out: dict[str, Array] = add(running, y, target) if running else first(y, target)
        return out

    return sums


def _write_back_after_error(step: Any, history: History, error: BaseException) -> None:
    """Leave the objects holding the compiled steps that ran before ``error`` (as an eager
    run's hold its steps); a write-back that fails too is noted on ``error``."""
    try:
        step.write_back()
        history.compile_seconds, history.traces = step.compile_seconds, step.traces
    except Exception as failure:  # reported on the propagating error, not raised
        add_note = getattr(error, "add_note", None)  # Python >= 3.11
        if add_note is not None:
            add_note(f"fit: writing the compiled state back also failed: {failure!r}; the "
                     "model and optimizer hold the state of before the last write-back")


def _validate(model: Module, loss_fn: Callable[[Array, Array], tuple[Array, Array]],
              val: Iterable[tuple[Array, Array]], metric_fns: dict[str, Metric], *, epoch: int
              ) -> dict[str, float]:
    """The ``val_*`` entries of an epoch record; a non-finite loss names the epoch."""
    try:
        scores = evaluate(model, loss_fn, val, metrics=tuple(metric_fns.values()),
                          metric_names=tuple(metric_fns))
    except NonFiniteLossError as error:
        msg = f"fit: validation after epoch {epoch}: {error}"
        raise NonFiniteLossError(msg) from None
    return {f"val_{key}": value for key, value in scores.items()}


def _end_after_error(callbacks: Sequence[Callback], model: Module, history: History,
                     error: BaseException) -> None:
    """Run every ``on_train_end`` while ``error`` propagates; a callback that fails too is
    noted on ``error`` (which stays the exception raised) instead of hiding it."""
    for callback in callbacks:
        try:
            callback.on_train_end(model, history)
        except Exception as failure:  # reported on the propagating error, not raised
            note = f"{type(callback).__name__}.on_train_end also failed: {failure!r}"
            add_note = getattr(error, "add_note", None)  # Python >= 3.11
            if add_note is not None:
                add_note(note)


def _train_epoch(
    model: Module,
    loss_fn: Callable[[Array, Array], tuple[Array, Array]],
    optimizer: OptimizerLike,
    train: Iterable[tuple[Array, Array]],
    metric_fns: dict[str, Metric],
    *,
    epoch: int,
    bar: _Progress,
    log_every: int,
    step: Any = None,
    on_step: Callable[[], None] | None = None,
    sums: Any = None,
) -> dict[str, float]:
    set_epoch = getattr(train, "set_epoch", None)
    if set_epoch is not None:
        set_epoch(epoch - 1)
    start = time.perf_counter()
    xp: Namespace | None = None
    window: list[Array] = []  # per-step losses (0-d, on the device) since the last host read
    loss_sum = 0.0  # host float, updated at each read: Σ batch_loss · batch_size
    window_weights: list[int] = []
    metric_sums: dict[str, Array] = {}
    checked = False
    mean_loss = _is_mean(loss_fn)
    comm = _group_of(model)
    samples = steps = 0
    for xb, yb in train:
        if step is None:
            y, backprop = model.forward(xb)
            loss, dy = loss_fn(y, yb)
            optimizer.zero_grad()
            backprop(dy)
            optimizer.step()
        elif metric_fns:
            loss, y = step(xb, yb)
        else:
            loss = step(xb, yb)
        if on_step is not None:
            on_step()
        n = int(xb.shape[0])
        xp = xp or array_namespace(loss)
        if not checked and metric_fns:  # the batches of an epoch share their shapes: once
            _check_applicable(metric_fns, y, yb, where="fit")
            checked = True
        if metric_fns:
            metric_sums = (sums or _add_metrics)(metric_fns, metric_sums, y, yb)
        window.append(loss)
        window_weights.append(n if mean_loss else 1)
        samples += n
        steps += 1
        if len(window) >= log_every:
            loss_sum += _read_window(window, window_weights, xp, epoch=epoch,
                                     first_step=steps - len(window) + 1, comm=comm)
            bar.update(len(window), loss=f"{loss_sum / samples:.4f}",
                       **_bar_metrics(bar, metric_sums, samples), **_rate(samples, start))
            window, window_weights = [], []
    if window and xp is not None:
        loss_sum += _read_window(window, window_weights, xp, epoch=epoch,
                                 first_step=steps - len(window) + 1, comm=comm)
        bar.update(len(window))
    metric_totals = {name: float(to_numpy(total)) for name, total in metric_sums.items()}
    if comm is not None:  # the whole data set's: sums over the ranks (once per epoch)
        totals = comm.all_reduce_host(np.asarray([loss_sum, samples, *metric_totals.values()],
                                                 dtype=np.float64))
        loss_sum, samples = float(totals[0]), int(totals[1])
        metric_totals = dict(zip(metric_totals, (float(v) for v in totals[2:]), strict=True))
    if samples == 0:
        msg = f"fit: epoch {epoch} had no training batches"
        raise ValueError(msg)
    elapsed = time.perf_counter() - start
    record: dict[str, float] = {"epoch": float(epoch), "loss": loss_sum / samples}
    for name, total_count in metric_totals.items():
        record[name] = total_count / samples
    record["time"] = elapsed
    record["samples_per_s"] = samples / elapsed if elapsed > 0 else math.inf
    return record


def _is_mean(loss_fn: Any) -> bool:
    """Whether ``loss_fn`` averages over the batch (so a batch's total is loss · n)."""
    return getattr(loss_fn, "reduction", "mean") != "sum"


def _read_window(
    losses: list[Array], weights: list[int], xp: Namespace, *, epoch: int, first_step: int,
    comm: Any = None,
) -> float:
    """Bring a window of per-step losses to the host at once; raise on the first non-finite.

    Returns Σ loss · weight (the weight is the batch size for a mean loss, 1 for a sum). In a
    data-parallel run every rank learns whether any rank's window went non-finite (one host
    all-reduce per window), so all of them stop together instead of waiting for one another.
    """
    values = to_numpy(xp.stack(losses)).astype(np.float64)
    bad = _first_non_finite(values)
    failed = _non_finite_elsewhere(comm, bad)
    if failed is not None:
        rank, where = failed
        msg = (f"the training loss became non-finite on rank {rank} at epoch {epoch}, "
               f"step {first_step + where} (lower the learning rate, check the inputs for "
               "NaN/inf, or the labels' range)")
        raise NonFiniteLossError(msg)
    if bad is not None:
        msg = (
            f"the training loss became {values[bad]} at epoch {epoch}, step {first_step + bad} "
            "(lower the learning rate, check the inputs for NaN/inf, or the labels' range)"
        )
        raise NonFiniteLossError(msg)
    return float(values @ np.asarray(weights, dtype=np.float64))


def _non_finite_elsewhere(comm: Any, bad: int | None) -> tuple[int, int] | None:
    """In a data-parallel run, tell every rank where any rank's values went non-finite (one
    host all-reduce of a flag per rank, so that all of them stop together): ``(rank, index)``
    of the first rank that failed when this one did not, else None."""
    if comm is None:
        return None
    flags = np.zeros(comm.size, dtype=np.int64)
    flags[comm.rank] = 0 if bad is None else bad + 1
    flags = comm.all_reduce_host(flags)
    failed = [r for r in range(comm.size) if flags[r]]
    if not failed or bad is not None:
        return None
    return failed[0], int(flags[failed[0]]) - 1


def _first_non_finite(values: np.ndarray) -> int | None:
    finite = np.isfinite(values)
    return None if finite.all() else int(np.argmin(finite))


def _bar_metrics(bar: _Progress, sums: Mapping[str, Array], samples: int) -> dict[str, str]:
    """The running metrics for a visible bar (read with the loss window; nothing when hidden)."""
    if bar.bar is None:
        return {}
    return {name: f"{float(to_numpy(total)) / samples:.4f}" for name, total in sums.items()}


def _rate(samples: int, start: float) -> dict[str, str]:
    elapsed = time.perf_counter() - start
    return {"samples/s": f"{samples / elapsed:,.0f}"} if elapsed > 0 else {}


def evaluate(
    model: Module,
    loss_fn: Callable[[Array, Array], tuple[Array, Array]],
    data: Any,
    *,
    metrics: Sequence[str | Metric] | None = None,
    batch_size: int = 256,
    metric_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Mean loss and metrics of ``model`` (in inference mode) over ``data``.

    ``data`` is a re-iterable of ``(x, y)`` batches or an ``(X, y)`` pair of host arrays;
    ``metrics`` as for :func:`fit` (default: :func:`default_metrics` of ``loss_fn``).
    Returns ``{"loss": ..., "<metric>": ...}`` as host floats, read once at the end (no
    synchronisation per batch). The loss is per sample whatever the batch size: batch means
    are weighted by the batch size, and a loss with ``reduction="sum"`` is summed over the
    batches, then divided by the number of samples.

    Raises
    ------
    NonFiniteLossError
        A batch's loss is NaN or infinite (as in :func:`fit`; on a device, labels outside
        [0, C) make their batch's cross-entropy NaN instead of stalling it with a check); the
        message names the batch.
    """
    metric_fns = _resolve_metrics(metrics, loss_fn, where="evaluate")
    _check_reduction(model, loss_fn, where="evaluate")
    comm = _group_of(model)
    if metric_names is not None:
        metric_fns = dict(zip(metric_names, metric_fns.values(), strict=True))
    batches = _as_batches(data, model, batch_size=batch_size, shuffle=False, seed=None)
    modes = _modes(model)
    model.eval()
    mean_loss = _is_mean(loss_fn)
    losses: list[Array] = []  # per batch, 0-d on the device: stacked and read once at the end
    sizes: list[int] = []
    sums: dict[str, Array] = {}
    try:
        for xb, yb in batches:
            y = model(xb)
            loss, _ = loss_fn(y, yb)
            if not losses:
                _check_applicable(metric_fns, y, yb, where="evaluate")
            losses.append(loss)
            sizes.append(int(xb.shape[0]))
            for name, fn in metric_fns.items():
                sums[name] = fn(y, yb) if name not in sums else sums[name] + fn(y, yb)
    finally:
        _restore(modes)
    if not losses:
        msg = "evaluate: the data had no batches"
        raise ValueError(msg)
    loss_total = _total_loss(losses, sizes, mean_loss, comm)
    samples = sum(sizes)
    totals = {name: float(to_numpy(total)) for name, total in sums.items()}
    if comm is not None:  # over the whole data set: the ranks' shards summed
        summed = comm.all_reduce_host(np.asarray([loss_total, samples, *totals.values()],
                                                 dtype=np.float64))
        loss_total, samples = float(summed[0]), int(summed[1])
        totals = dict(zip(totals, (float(v) for v in summed[2:]), strict=True))
    scores = {"loss": loss_total / samples}
    scores.update({name: total / samples for name, total in totals.items()})
    return scores


def _total_loss(losses: list[Array], sizes: list[int], mean_loss: bool, comm: Any = None
                ) -> float:
    """Σ over batches of loss · n (mean losses) or loss (summed ones), read to the host once;
    a non-finite batch loss raises, naming the batch and its rows (on every rank of a
    data-parallel run, which learn of it through one host all-reduce)."""
    values = to_numpy(array_namespace(losses[0]).stack(losses)).astype(np.float64)
    bad = _first_non_finite(values)
    failed = _non_finite_elsewhere(comm, bad)
    if failed is not None:
        msg = (f"evaluate: the loss is non-finite on rank {failed[0]}'s shard (its batch "
               f"{failed[1] + 1}); check the inputs for NaN/inf, the parameters, or the "
               "labels' range")
        raise NonFiniteLossError(msg)
    if bad is not None:
        first = sum(sizes[:bad])
        msg = (
            f"evaluate: the loss is {values[bad]} on batch {bad + 1} of {len(values)} (rows "
            f"{first} to {first + sizes[bad] - 1}); check the inputs for NaN/inf, the "
            "parameters, or the labels' range (on a device, labels outside [0, C) give NaN)"
        )
        raise NonFiniteLossError(msg)
    weights = np.asarray(sizes if mean_loss else [1] * len(sizes), dtype=np.float64)
    return float(values @ weights)


def predict(model: Module, X: Any, *, batch_size: int = 1024) -> Array:
    """Model outputs for every row of ``X`` (host data or an array on the model's backend;
    floats are cast to the parameters' dtype, token ids of a language model kept integers).

    Runs in eval mode (restoring every module's mode afterwards), batch by batch
    (``batch_size`` ≥ 1 rows at a time), and returns one array on the model's device.
    """
    batch_size = check_int(batch_size, what="predict: batch_size", minimum=1)
    backend = model.backend
    if backend is None:
        msg = "predict: the model has no parameters to take a backend from"
        raise ValueError(msg)
    ref = model._reference_array()
    # floats in the parameters' dtype; token ids (a model whose input kind is integer) as
    # the integers they are (the layer checks their dtype and range)
    floats = model._integer_input_layer() is None
    x_all = backend.asarray(X, dtype=ref.dtype if ref is not None and floats else None)
    xp = backend.xp
    n = x_all.shape[0]
    starts = range(0, n, batch_size) if n else (0,)
    modes = _modes(model)
    model.eval()
    try:  # stops clipped to n: the standard leaves out-of-bounds slice stops unspecified
        outputs = [model(x_all[i : min(i + batch_size, n), ...]) for i in starts]
    finally:
        _restore(modes)
    return outputs[0] if len(outputs) == 1 else xp.concat(outputs, axis=0)


def _modes(model: Module) -> list[tuple[Module, bool]]:
    """Every module's training flag, to put back after fit, evaluate or predict (a user may
    have set some sub-modules apart, e.g. frozen batch norms in eval mode)."""
    return [(m, m.training) for m in model.modules()]


def _restore(modes: list[tuple[Module, bool]]) -> None:
    for module, training in modes:
        object.__setattr__(module, "training", training)
