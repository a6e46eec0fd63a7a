"""The whole training step as one ``jax.jit`` program: :class:`JaxStep`.

On JAX the library's math (plain Array API code, forward and hand-written backward alike) can
be traced as it is. :class:`JaxStep` traces the eager step once, as a pure function of the
training state (:func:`nnbackend.state.training_state` with ``device_scalars=True``: parameters,
persistent buffers such as batch-norm running statistics, random-stream counters, optimizer
state and step counts) and the batch, and XLA compiles forward, loss, backward, clipping and
update into one program::

    step = JaxStep(model, nb.CrossEntropyLoss(), opt)     # or nb.compile_step(...)
    for epoch in range(epochs):
        for x, y in batches:
            loss = step(x, y)                             # one dispatch per batch
        sched.step()                                      # read by the next call
    step.write_back()                                     # the objects hold the result

How the state travels
---------------------
Between calls the state lives inside the step as a flat tuple of device arrays (the keys of
:func:`~nnbackend.state.training_state` fixed once, in order), handed to the program and taken
back from it each call; with ``donate=True`` its buffers are donated, so XLA updates them in
place instead of allocating a second copy of every parameter and moment. The program loads the
traced state into the objects (:func:`~nnbackend.state.load_training_state`), runs the eager
step on them and takes the new state out; after every trace the objects are put back exactly
as they were (no tracer stays behind in them), and they keep their pre-compilation state until
:meth:`JaxStep.write_back`. A call notices when the objects changed under it (a checkpoint
loaded into them, an eager step after a write-back: JAX rebinds every array it changes) and
takes their state again when it had nothing newer of its own; after compiled steps that were
not written back it refuses instead, until :meth:`JaxStep.reload` (or a write-back) says which
state is meant.

Per-step values are inputs, never constants: step counts and random counters are part of the
state (0-d int32 arrays), and each parameter group's learning rate is read from the group on
every call and passed in (a 0-d array, made again only when the value changed), so a schedule
changing it between calls costs no recompilation. Adam's bias corrections are then computed on
the device (−expm1(t ln β), see :mod:`nnbackend.optim._scalars`): a few ulp from the eager
step's host values.

A fresh optimizer has no state before its first step, yet the program's inputs must have their
final form at the first trace. The step fills the state of every never-stepped trainable
parameter with what the first step would allocate (zeros for each state array the group's
settings need, a step count of 0 shared by the group), which gives the first update exactly
the eager one's inputs; :meth:`JaxStep.write_back` leaves out the state of a parameter still
at count 0 (never stepped: no gradient reached it), as the eager optimizer would hold none.

What compiles, and when
-----------------------
jax.jit keeps one program per input signature: a new batch shape (the last, partial batch of
an epoch) traces and compiles once more, and later epochs reuse both. The training mode
(``model.train()`` / ``model.eval()``) is fixed at trace time: changing the model's top-level
mode selects (and first compiles) the program of that mode. ``traces`` counts the traces,
``compile_seconds`` their host time (tracing and XLA compilation). With
``return_outputs=True`` the model's output of the step's forward is a second result of the
program (for metrics, as ``fit(compile=True)`` computes them); without it XLA need not keep it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from .._typing import Array
from ..backend import Backend, to_numpy
from ..layers.module import Module, Parameter
from ..optim.clip import clip_grad_norm as _clip_grad_norm
from ..optim.optimizer import Optimizer, ParamGroup, zeros_like
from ..random import Generator
from ..state import (
    _generators,
    _group_ranges,
    _scalar_backend,
    _scalar_float,
    load_training_state,
    training_state,
)
from .base import check_arguments

__all__ = ["JaxStep"]

_Program = Callable[[tuple[Array, ...], Array, Array, list[Array]],
                    tuple[tuple[Array, ...], Array, Array | None]]


class JaxStep:
    """The training step compiled by ``jax.jit`` into one XLA program, state kept inside.

    ``step(x, y)`` does what the eager step does (forward, loss, ``zero_grad``, backward,
    optional ``clip_grad_norm``, ``optimizer.step()``) on the state the step holds, and returns
    the loss. See the module docstring for how the state travels and when it recompiles.

    Parameters
    ----------
    model : Module
        On JAX (one device).
    loss_fn : callable
        ``loss_fn(y, target) -> (loss, dy)``, as :class:`nnbackend.CrossEntropyLoss`.
    optimizer : Optimizer
        Over ``model``'s parameters.
    clip_grad_norm : float, optional
        Clip the gradients' global norm (over the model's parameters) to this bound before
        each update.
    donate : bool
        Donate the state's buffers to each call (updated in place; the previous state's arrays
        are deleted). False keeps them (for debugging: each call then allocates a new state).
    return_outputs : bool
        ``step(x, y)`` returns ``(loss, output)``: the model's output on the batch (training
        mode, as the step's forward computed it) as a second output of the program, e.g. for
        metrics.

    Attributes
    ----------
    kind : str
        ``"jax-jit"``.
    traces : int
        Traces so far: 1 per batch shape and training mode.
    compile_seconds : float
        Host time of the calls that traced (tracing, XLA compilation and that call's step).
    steps : int
        Calls so far.
    note : str

    Raises
    ------
    ValueError
        The model is not on JAX, or spread over several devices.
    """

    kind = "jax-jit"

    def __init__(self, model: Module, loss_fn: Callable[[Array, Array], tuple[Array, Array]],
                 optimizer: Optimizer, *, clip_grad_norm: float | None = None,
                 donate: bool = True, return_outputs: bool = False) -> None:
        where = "JaxStep"
        clip_grad_norm = check_arguments(model, loss_fn, optimizer, clip_grad_norm, where=where)
        be = _scalar_backend(model, where=where)
        if be.name != "jax":
            msg = f"{where}: the model's arrays are on {be.name}, not JAX; use compile_step"
            raise ValueError(msg)
        import jax  # only here: the model is on JAX, so JAX is installed

        self._jax = jax
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.clip_grad_norm = clip_grad_norm
        self.donate = donate
        self.return_outputs = bool(return_outputs)
        self.backend: Backend = be
        self.traces = 0
        self.compile_seconds = 0.0
        self.steps = 0
        self.note = (
            "jax-jit: forward, loss, backward"
            + (", clipping" if clip_grad_norm is not None else "")
            + " and the optimizer update compiled into one XLA program"
            + (" (state buffers donated)" if donate else "")
        )
        self._lr_dtype = _scalar_float(be)
        self._groups: list[ParamGroup] = []
        self._lr_keys: list[str] = []
        self._lr_values: list[Any] = []  # each group's lr as last seen (compared by identity)
        self._lr_arrays: list[Array] = []  # and as the program's input
        self._programs: dict[tuple[Any, ...], _Program] = {}
        self._out_keys: dict[tuple[Any, ...], tuple[str, ...]] = {}
        # the groups' other hyperparameters: constants of a program, so part of its key
        self._settings: tuple[Any, ...] = ()
        self._settings_version = -1
        self._trace_start = 0.0
        self._keys: tuple[str, ...] = ()
        self._leaves: tuple[Array, ...] = ()
        self._training = model.training
        self._program: _Program
        self._watched: Parameter
        self._watched_data: Array
        self._watched_state: list[dict[str, Any]]
        self._synced_at = 0
        self._array_type = type(be.xp.zeros((), device=be.device))  # a batch's, checked cheaply
        self.reload()

    # ------------------------------------------------------------------ the protocol

    def __call__(self, x: Array, y: Array) -> Array:
        """One training step on ``(x, y)`` (arrays on the model's device); returns the loss,
        or ``(loss, output)`` with ``return_outputs``."""
        if (self._watched.data is not self._watched_data
                or self.optimizer.state is not self._watched_state):  # the objects changed
            self._objects_changed()
        if self.model.training is not self._training:
            self._training = self.model.training
            self._program = self._select()
        if self.optimizer.settings_version != self._settings_version:
            self._program = self._select()  # momentum, betas, ... changed: compiles again
        if type(x) is not self._array_type or type(y) is not self._array_type:
            self._check_batch(x, y)
        values = self._lr_values
        for g, group in enumerate(self._groups):  # a new rate (a schedule's): a new input
            lr, last = group.settings["lr"], values[g]
            if lr is not last and not (type(lr) is float is type(last) and lr == last):
                self._set_lr(g, lr)
        traces = self.traces
        self._leaves, loss, out = self._program(self._leaves, x, y, self._lr_arrays)
        self.steps += 1
        if self.traces != traces:
            self._traced()
        return (loss, out) if self.return_outputs else loss

    def write_back(self) -> None:
        """Put the step's state into the model and optimizer (copies, bit for bit; step counts
        and counters become Python numbers again, read once). The step keeps its own state and
        continues from it."""
        state = self.state
        state.update(zip(self._lr_keys, (g.settings["lr"] for g in self._groups), strict=True))
        load_training_state(_stepped_only(state, self.optimizer), self.model, self.optimizer)
        self._watch()

    def reload(self) -> None:
        """Take the objects' state again (copies: the objects keep theirs), dropping the
        step's own: after a checkpoint load, or any eager change to the model or optimizer.

        A call notices by itself that the model's parameters were replaced (a checkpoint or
        state-dict load, an eager step: JAX arrays are rebound, never changed in place) and
        reloads when the objects were up to date (no compiled step since the last
        :meth:`write_back` or reload); after compiled steps it refuses instead, since either
        state could be the one meant. A state of other keys (another optimizer state form)
        selects, and first traces, another program."""
        groups = list(self.optimizer.param_groups)
        lr_keys = [f"optim/param_groups/{g}/lr" for g in range(len(groups))]
        state = _initial_state(self.model, self.optimizer)
        for key in lr_keys:
            del state[key]
        keys = tuple(state)
        leaves = tuple(self._copy(v) for v in state.values())  # own buffers, to donate
        if keys != self._keys or len(groups) != len(self._groups) or any(
                a is not b for a, b in zip(groups, self._groups, strict=True)):
            self._groups, self._lr_keys = groups, lr_keys
            self._lr_values, self._lr_arrays = [None] * len(groups), []
            for g, group in enumerate(groups):
                self._set_lr(g, group.settings["lr"])
            self._keys = keys
            self._program = self._select()
        self._leaves = leaves
        self._watch()

    @property
    def state(self) -> dict[str, Array]:
        """The step's current training state (``training_state``'s keys, without the learning
        rates, which the groups hold), as the live arrays: copy what you keep."""
        return dict(zip(self._keys, self._leaves, strict=True))

    # ------------------------------------------------------------------ the per-call path

    def _watch(self) -> None:
        """Remember the objects as they are now (in step with the step's state): the data of
        the first trainable parameter, which every eager change to the model rebinds."""
        params = self.optimizer.params
        self._watched = next((p for p in params if p.requires_grad), params[0])
        self._watched_data = self._watched.data
        self._watched_state = self.optimizer.state  # load_state_dict replaces the list
        self._synced_at = self.steps

    def _objects_changed(self) -> None:
        if self.steps == self._synced_at:
            self.reload()
            return
        msg = (
            f"JaxStep: the model's parameters were replaced (a checkpoint or state-dict load, or "
            f"an eager step) while the step held {self.steps - self._synced_at} compiled "
            "step(s) not written back; call write_back() before using the objects eagerly, or "
            "reload() to continue from the objects' state instead"
        )
        raise RuntimeError(msg)

    def _check_batch(self, x: Any, y: Any) -> None:
        """Refuse a batch that is not on the model's device: jax.jit would copy host data in
        at every call, a transfer the library makes only explicitly (``Backend.asarray``)."""
        for name, a in (("x", x), ("y", y)):
            if not self.backend.holds(a):
                msg = (f"JaxStep: the batch's {name} is {type(a).__name__}, not an array on "
                       f"{self.backend!r}; move the data once with nnbackend.data.batches or "
                       "Backend.asarray")
                raise TypeError(msg)

    def _set_lr(self, g: int, lr: Any) -> None:
        """Group ``g``'s learning rate as a 0-d device array of the state's form (made once per
        value: a call compares the group's ``lr`` with the last one, a Python float by value,
        anything else by identity)."""
        value = lr if isinstance(lr, int | float) else float(to_numpy(lr))
        array = self.backend.xp.asarray(value, dtype=self._lr_dtype)
        if g == len(self._lr_arrays):
            self._lr_arrays.append(array)
        else:
            self._lr_arrays[g] = array
        self._lr_values[g] = lr

    def _traced(self) -> None:
        """After a call that traced: its time, and the state's keys as the program gave them
        back (the same keys, unless a parameter received no gradient: then once more)."""
        self.compile_seconds += time.perf_counter() - self._trace_start
        out = self._out_keys[(self._keys, self._training, self._settings)]
        if out != self._keys:
            self._keys = out
            self._program = self._select()

    def _select(self) -> _Program:
        """The jitted program for the current keys, training mode and hyperparameters other
        than the learning rates (made on first use)."""
        if self.optimizer.settings_version != self._settings_version:
            self._settings_version = self.optimizer.settings_version
            self._settings = tuple(
                tuple((k, v) for k, v in group.settings.items() if k != "lr")
                for group in self._groups)
        key = (self._keys, self._training, self._settings)
        program = self._programs.get(key)
        if program is None:
            keys, training, settings = key

            def step(leaves: tuple[Array, ...], x: Array, y: Array,
                     lrs: list[Array]) -> tuple[tuple[Array, ...], Array, Array | None]:
                return self._trace(keys, training, settings, leaves, x, y, lrs)

            program = self._jax.jit(step, donate_argnums=(0,) if self.donate else ())
            self._programs[key] = program
        return program

    # ------------------------------------------------------------------ the traced step

    def _trace(self, keys: tuple[str, ...], training: bool, settings: tuple[Any, ...],
               leaves: tuple[Array, ...], x: Array, y: Array, lrs: list[Array]
               ) -> tuple[tuple[Array, ...], Array, Array | None]:
        """The eager step on traced state: runs once per trace, never per call. The model's
        output is a result of the program only with ``return_outputs`` (else None: XLA need
        not keep it)."""
        self.traces += 1
        self._trace_start = time.perf_counter()
        model, opt = self.model, self.optimizer
        saved = _Objects(model, opt)
        try:
            state = dict(zip(keys, leaves, strict=True))
            state.update(zip(self._lr_keys, lrs, strict=True))
            load_training_state(state, model, opt, device_scalars=True)
            if model.training is not training:
                model.train(training)
            out, backprop = model.forward(x)
            loss, dy = self.loss_fn(out, y)
            opt.zero_grad()
            backprop(dy)
            if self.clip_grad_norm is not None:
                _clip_grad_norm(model, self.clip_grad_norm)
            opt.step()
            new = training_state(model, opt, device_scalars=True, copy=False)
            for key in self._lr_keys:
                del new[key]
            self._out_keys[(keys, training, settings)] = tuple(new)
            return tuple(new.values()), loss, out if self.return_outputs else None
        finally:
            saved.restore()

    def _copy(self, value: Array) -> Array:
        return self.backend.xp.asarray(value, copy=True)

    def __repr__(self) -> str:
        return (f"JaxStep({type(self.model).__name__}, {type(self.optimizer).__name__}, "
                f"traces={self.traces}, steps={self.steps})")


# ---------------------------------------------------------------------------------------------
# The state's first form, and the objects around a trace


def _initial_state(model: Module, opt: Optimizer) -> dict[str, Array]:
    """``training_state(model, opt, device_scalars=True)`` with the state the first step would
    allocate filled in for every never-stepped trainable parameter: zeros for each state array
    its group's settings need and a step count of 0 (one per group), so that the keys are the
    stepped state's from the start. The optimizer is left as it was."""
    be = _scalar_backend(model, where="compile_step")
    xp = be.xp
    kept = opt.state
    filled = list(kept)
    for g, indices in enumerate(_group_ranges(opt)):
        names = opt._expected_state(opt.param_groups[g].settings)
        zero = xp.zeros((), dtype=xp.int32, device=be.device)
        for i in indices:
            p = opt.params[i]
            if not kept[i] and p.requires_grad:
                fresh: dict[str, Any] = {"step": zero}
                fresh.update((name, zeros_like(p.data, xp=xp)) for name in names)
                filled[i] = fresh
    opt.state = filled
    try:
        return training_state(model, opt, device_scalars=True, copy=False)
    finally:
        opt.state = kept


def _stepped_only(state: Mapping[str, Any], opt: Optimizer) -> dict[str, Any]:
    """``state`` without the optimizer state of parameters whose step count is still 0 (filled
    in by :func:`_initial_state`, never stepped): the eager optimizer holds none for them."""
    out = dict(state)
    for g, indices in enumerate(_group_ranges(opt)):
        key = f"optim/param_groups/{g}/step"
        if key in out:
            if int(to_numpy(out[key])) == 0:
                del out[key]
                _drop(out, indices)
            continue
        for i in indices:
            own = f"optim/state/{i}/step"
            if own in out and int(to_numpy(out[own])) == 0:
                _drop(out, [i])
    return out


def _drop(state: dict[str, Any], indices: Any) -> None:
    prefixes = tuple(f"optim/state/{i}/" for i in indices)
    for key in [k for k in state if k.startswith(prefixes)]:
        del state[key]


class _Objects:
    """Everything a trace may change in the model and optimizer, put back by :meth:`restore`
    (the trace loads tracers into them: none may stay behind)."""

    def __init__(self, model: Module, opt: Optimizer) -> None:
        self.modules = [(m, dict(vars(m)), dict(m.__dict__["_buffers"]))
                        for _, m in model.named_modules()]
        self.params = [(p, p.data, p.grad) for p in {id(p): p for p in
                                                     [*model.parameters(), *opt.params]}.values()]
        self.generators: list[tuple[Generator, Any]] = [
            (gen, gen.counter) for _, gen in _generators(model, where="compile_step")]
        self.opt = opt
        self.opt_state = opt.state
        self.entries = [dict(st) for st in opt.state]
        self.settings = [(g.settings, dict(g.settings)) for g in opt.param_groups]

    def restore(self) -> None:
        for module, attributes, buffers in self.modules:
            vars(module).clear()
            vars(module).update(attributes)
            module.__dict__["_buffers"].clear()
            module.__dict__["_buffers"].update(buffers)
        for p, data, grad in self.params:
            p.data = data
            p.grad = grad
        for gen, counter in self.generators:
            gen.load_state_arrays({"counter": counter})
        for st, entry in zip(self.opt_state, self.entries, strict=True):
            st.clear()
            st.update(entry)
        self.opt.state = self.opt_state
        for settings, values in self.settings:
            settings.clear()
            settings.update(values)
