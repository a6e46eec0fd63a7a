"""The ``Optimizer`` base class: parameters, hyperparameters, per-parameter state, state dicts.

An optimizer holds its parameters by reference and updates ``p.data`` from ``p.grad``::

    opt = Adam(model.parameters(), lr=1e-3)     # or Adam(model, ...)
    backprop(dy)                                # accumulates every p.grad
    opt.step()                                  # θ ← update(θ, ∂L/∂θ), in place
    opt.zero_grad()                             # p.grad ← None

The update rules live in plain functions (:func:`~nnbackend.optim.sgd_update`,
:func:`~nnbackend.optim.adam_update`, :func:`~nnbackend.optim.rmsprop_update`) written in
Array API code; the classes add validation, state bookkeeping and (de)serialisation.

Conventions every optimizer follows:

* On backends with views (NumPy, CuPy, PyTorch) the parameters, their gradients and the state
  live in one flat buffer per namespace, device and dtype (see :mod:`nnbackend.optim._flat`):
  creating an optimizer rebinds each ``Parameter.data`` to a view of it, and a step is a constant
  number of array calls however many parameter tensors there are. Elsewhere, and whenever the
  flat layout no longer holds, the same update runs per parameter (the reference path). Which
  path ran is counted in ``optimizer.path_stats``; leaving the flat path warns once per reason
  (:class:`~nnbackend.optim.FlatFallbackWarning`).

* Parameters whose ``.grad`` is None are skipped (their state and step count do not move).
* State arrays are allocated once, lazily on the first step that sees a gradient, with the
  parameter's shape, dtype and device. They are updated through augmented assignment, which is
  in place on NumPy, CuPy, PyTorch and array-api-strict and rebinds on immutable arrays (JAX); the
  results are always stored back, so both kinds of backend stay correct.
* Step counts and bias corrections are Python numbers: ``step()`` never reads an array back to
  the host.
* ``.grad`` is never modified (weight decay goes into a temporary).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeAlias

from array_api_compat import device, is_writeable_array

from .._checks import (
    check_floating,
    check_int,
    check_nonnegative,
    describe_placement,
    name_mismatch,
    namespace_of,
    same_device,
)
from .._typing import Array, Namespace
from ..backend import backend_of, dtype_name, to_numpy
from ..layers.module import Module, Parameter
from ._flat import FALLBACK_REASONS, Fallback, FlatFallbackWarning, FlatGroup, PathStats, pack

__all__ = ["Optimizer", "ParamsLike", "maximum_into", "zeros_like"]

ParamsLike: TypeAlias = "Module | Iterable[Parameter]"
"""What an optimizer accepts as ``params``: a Module or an iterable of Parameters."""


class Optimizer:
    """Base class of the optimizers: parameters, hyperparameters and per-parameter state.

    Subclasses list their hyperparameters in ``_hyperparameter_names`` (each an attribute of
    the same name), the names of every state array they may hold in ``_state_names``, and
    implement :meth:`_validate` (hyperparameters in, checked and normalised values out),
    :meth:`_expected_state` and :meth:`step`.

    Parameters
    ----------
    params : Module or iterable of Parameter
        The parameters to optimise (a Module stands for its ``parameters()``). Each may appear
        only once. PyTorch-style parameter groups (dicts) are not supported: create one
        optimizer per group instead.

    Attributes
    ----------
    params : list of Parameter
        The parameters, in the order given.
    state : list of dict
        One dict per parameter, in parameter order: ``"step"`` (Python int, the number of
        updates applied to that parameter) and the optimizer's state arrays. Empty until the
        parameter first receives a gradient.
    lr : float
        The learning rate; may be changed between steps (by the user or a schedule).
    path_stats : PathStats
        How the steps ran: group steps on the flat path, those that fell back to the
        per-parameter path (by reason), and the parameters never packed (by reason).
    """

    _hyperparameter_names: ClassVar[tuple[str, ...]] = ("lr",)
    _state_names: ClassVar[tuple[str, ...]] = ()

    _lr: float

    def __init__(self, params: ParamsLike, *, flat: bool = True) -> None:
        self.params: list[Parameter] = _collect_parameters(params, where=type(self).__name__)
        self.state: list[dict[str, Any]] = [{} for _ in self.params]
        self._flat_groups: list[FlatGroup] = pack(self.params) if flat else []
        self.path_stats = PathStats()
        packed = sum(len(group.indices) for group in self._flat_groups)
        if packed < len(self.params):
            self.path_stats.unpacked["no_views" if flat else "flat=False"] = (
                len(self.params) - packed
            )
        self._reported: set[str] = set()  # fallback reasons already warned about

    # ---------------------------------------------------------------- hyperparameters

    @property
    def lr(self) -> float:
        """The learning rate α (a Python float ≥ 0)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = check_nonnegative(value, where=type(self).__name__, name="lr")

    @classmethod
    def _validate(cls, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
        """Check every hyperparameter; return them normalised to Python values."""
        raise NotImplementedError

    def _expected_state(self, hyperparameters: Mapping[str, Any]) -> tuple[str, ...]:
        """State arrays a parameter that has been stepped must hold under these settings."""
        return ()

    def _apply(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            setattr(self, name, value)

    def hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters as JSON-serialisable Python values (tuples become lists)."""
        return {name: _jsonable(getattr(self, name)) for name in self._hyperparameter_names}

    # ---------------------------------------------------------------- stepping

    def step(self) -> None:
        """Apply one update to every parameter that has a gradient.

        Warns
        -----
        FlatFallbackWarning
            The first time (per optimizer) a packed group ran per parameter for a given reason;
            the update itself is the same, only slower. See ``path_stats``.
        """
        done: set[int] = set()
        fallbacks: list[Fallback] = []
        for group in self._flat_groups:
            count = group.common_step(self.params, self.state, self.path_stats)
            if isinstance(count, Fallback):
                if count.reason != "idle":
                    fallbacks.append(count)
                continue
            names = len(group.state)
            self._update(group.data, group.grad, group.state, count + 1, group.xp)
            if len(group.state) != names:  # new state (first step, or amsgrad/momentum turned on)
                group.share_state(self.state)
            for i in group.indices:
                self.state[i]["step"] = count + 1
            done.update(group.indices)
            self.path_stats.flat += 1
        if len(done) == len(self.params):
            return
        for p, grad, st, xp in self._with_grads(skip=done):
            self._check_state_placement(p, st, xp)
            st["step"] = st.get("step", 0) + 1
            p.data = self._update(p.data, grad, st, st["step"], xp)
        for fallback in fallbacks:  # after the update: a step that raises reports its error
            self._report(fallback)

    def _report(self, fallback: Fallback) -> None:
        """Count a group step that ran per parameter; warn the first time for its reason."""
        reason = fallback.reason
        self.path_stats.fallbacks[reason] += 1
        if reason in self._reported:
            return
        self._reported.add(reason)
        p = self.params[fallback.index]
        detail = FALLBACK_REASONS[reason]
        if reason == "steps_differ":
            counts = sorted({self.state[i].get("step", 0) for g in self._flat_groups
                             if fallback.index in g.indices for i in g.indices})
            detail += f"; the group's step counts are {counts}"
        msg = (
            f"{type(self).__name__}: {p!r} (params[{fallback.index}]) left the flat path: "
            f"{detail}. Its group is now stepped one parameter at a time (the same update, "
            f"with a few array calls per parameter instead of per group); counted in "
            f"path_stats.fallbacks[{reason!r}], warned once per reason"
        )
        warnings.warn(msg, FlatFallbackWarning, stacklevel=3)

    def _update(self, data: Array, grad: Array, state: dict[str, Any], step: int,
                xp: Namespace) -> Array:
        """Update one array ``data`` (a parameter, or a flat buffer of them) from ``grad``.

        ``state`` holds the optimizer's state arrays for ``data`` (allocate missing ones with
        :func:`zeros_like` of ``data``; store updated ones back); ``step`` counts this update.
        Returns the updated ``data`` (the same object where the backend updates in place).
        """
        raise NotImplementedError

    def zero_grad(self) -> None:
        """Reset every parameter's gradient to None (the next backward assigns it afresh)."""
        for p in self.params:
            p.grad = None

    def _check_state_placement(self, p: Parameter, state: dict[str, Any], xp: Namespace) -> None:
        """Refuse state left on another namespace or device (the model moved after creation)."""
        for name, value in state.items():
            if name != "step" and (namespace_of(value) is not xp
                                   or not same_device(value, p.data, xp)):
                msg = (
                    f"{type(self).__name__}: the state {name!r} of {p!r} is "
                    f"{describe_placement(value)}; the parameter moved after the optimizer was "
                    "created: create optimizers after model.to(...)"
                )
                raise ValueError(msg)

    def _with_grads(
        self, *, skip: set[int] | frozenset[int] = frozenset()
    ) -> Iterable[tuple[Parameter, Array, dict[str, Any], Namespace]]:
        """Yield ``(parameter, grad, state, xp)`` for each parameter with a gradient, except
        those whose index is in ``skip``."""
        where = type(self).__name__
        for i, (p, st) in enumerate(zip(self.params, self.state, strict=True)):
            grad = p.grad
            if grad is None or i in skip:
                continue
            data = p.data
            if grad.shape != data.shape or grad.dtype != data.dtype:
                msg = (
                    f"{where}: the gradient of {p!r} has shape {tuple(grad.shape)} and dtype "
                    f"{dtype_name(grad.dtype)}; expected the parameter's"
                )
                raise ValueError(msg)
            yield p, grad, st, namespace_of(data)

    # ---------------------------------------------------------------- state dicts

    def state_dict(self) -> dict[str, Any]:
        """Host copies of the optimizer's state, with its hyperparameters.

        Returns
        -------
        dict
            ``{"type": class name, "hyperparameters": {name: JSON-serialisable value},
            "state": [one dict per parameter, in parameter order]}``. Each per-parameter dict
            maps ``"step"`` to a Python int and each state name to a NumPy array (a copy: later
            steps do not change it); a parameter never stepped has an empty dict.
        """
        return {
            "type": type(self).__name__,
            "hyperparameters": self.hyperparameters(),
            "state": [
                {name: _host_copy(value) for name, value in st.items()} for st in self.state
            ],
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore hyperparameters and state saved by :meth:`state_dict`.

        Everything is validated before anything changes (the type, the hyperparameters, the
        number of parameters, each array's shape and dtype against its parameter), so a failed
        load leaves the optimizer untouched. Arrays are copied onto each parameter's own
        namespace and device: a state saved from a NumPy run loads into a model on another
        backend.
        """
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, Mapping):
            msg = f"{where}: expected a dict, got {type(state_dict).__name__}"
            raise TypeError(msg)
        missing = [k for k in ("type", "hyperparameters", "state") if k not in state_dict]
        if missing:
            msg = f"{where}: the state dict lacks {missing}"
            raise KeyError(msg)
        kind = state_dict["type"]
        if kind != type(self).__name__:
            msg = f"{where}: the state dict was saved by {kind!r}, not {type(self).__name__!r}"
            raise ValueError(msg)
        values = self._checked_hyperparameters(state_dict["hyperparameters"], where=where)
        entries = state_dict["state"]
        if isinstance(entries, Mapping | str) or not isinstance(entries, Sequence):
            msg = f"{where}: 'state' must be a list, got {type(entries).__name__}"
            raise TypeError(msg)
        if len(entries) != len(self.params):
            msg = (
                f"{where}: the state dict holds {len(entries)} parameter states, the optimizer "
                f"has {len(self.params)} parameters"
            )
            raise ValueError(msg)
        expected = self._expected_state(values)
        checked = [
            self._checked_entry(i, p, entry, expected, where=where)
            for i, (p, entry) in enumerate(zip(self.params, entries, strict=True))
        ]
        self._apply(values)
        self.state = [
            {
                name: value if name == "step" else backend_of(p.data).asarray(value, copy=True)
                for name, value in entry.items()
            }
            for p, entry in zip(self.params, checked, strict=True)
        ]

    def _checked_hyperparameters(self, hyper: Any, *, where: str) -> dict[str, Any]:
        if not isinstance(hyper, Mapping):
            msg = f"{where}: 'hyperparameters' must be a dict, got {type(hyper).__name__}"
            raise TypeError(msg)
        names = set(self._hyperparameter_names)
        missing, unexpected = sorted(names - hyper.keys()), sorted(hyper.keys() - names)
        if missing or unexpected:
            msg = f"{where}: the hyperparameters do not match {type(self).__name__}'s"
            msg += name_mismatch(missing, unexpected)
            raise KeyError(msg)
        return self._validate(hyper)

    def _checked_entry(
        self, i: int, p: Parameter, entry: Any, expected: tuple[str, ...], *, where: str
    ) -> dict[str, Any]:
        if not isinstance(entry, Mapping):
            msg = f"{where}: state {i} must be a dict, got {type(entry).__name__}"
            raise TypeError(msg)
        if not entry:
            return {}
        known = {"step", *self._state_names}
        unexpected = sorted(set(entry) - known)
        missing = sorted({"step", *expected} - entry.keys())
        if missing or unexpected:
            msg = f"{where}: state {i} ({p!r}) does not match {type(self).__name__}'s"
            msg += name_mismatch(missing, unexpected)
            raise KeyError(msg)
        step = check_int(entry["step"], what=f"{where}: state {i}: 'step'", minimum=1)
        out: dict[str, Any] = {"step": step}
        for name, value in entry.items():
            if name == "step":
                continue
            shape = tuple(getattr(value, "shape", ()))
            if not hasattr(value, "dtype") or shape != p.shape:
                msg = (
                    f"{where}: state {i} {name!r} has shape {shape}, the parameter {p!r} has "
                    f"{p.shape}"
                )
                raise ValueError(msg)
            got, want = dtype_name(value.dtype), dtype_name(p.dtype)
            if got != want:
                msg = f"{where}: state {i} {name!r} has dtype {got}, the parameter {p!r} has {want}"
                raise TypeError(msg)
            out[name] = value
        return out

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._hyperparameter_names)
        return f"{type(self).__name__}({hyper}, {len(self.params)} parameters)"


# -------------------------------------------------------------------------------------------
# Helpers shared by the update rules


def zeros_like(x: Array, *, xp: Namespace) -> Array:
    """Zeros with the shape, dtype and device of ``x``."""
    return xp.zeros(x.shape, dtype=x.dtype, device=device(x))


def maximum_into(dst: Array, src: Array, *, xp: Namespace) -> Array:
    """dst ← max(dst, src): written into ``dst`` where arrays are writeable, else rebound.

    Returns the result; store it back (it is ``dst`` itself on mutable backends).
    """
    if is_writeable_array(dst):
        dst[...] = xp.maximum(dst, src)
        return dst
    return xp.maximum(dst, src)


# -------------------------------------------------------------------------------------------
# Validation


def _collect_parameters(params: Any, *, where: str) -> list[Parameter]:
    """The parameters as a list: each a Parameter, floating, and given once."""
    if isinstance(params, Module):
        params = params.parameters()
    elif isinstance(params, Parameter):
        msg = (
            f"{where}: params must be an iterable of Parameters or a Module; wrap one "
            f"parameter in a list: [{params!r}]"
        )
        raise TypeError(msg)
    elif isinstance(params, Mapping | str) or not isinstance(params, Iterable):
        msg = (
            f"{where}: params must be an iterable of Parameters or a Module, "
            f"got {type(params).__name__}"
        )
        raise TypeError(msg)
    out: list[Parameter] = []
    seen: dict[int, int] = {}
    for i, p in enumerate(params):
        if isinstance(p, Mapping):
            msg = (
                f"{where}: params[{i}] is a dict; parameter groups are not supported, create "
                "one optimizer per group"
            )
            raise TypeError(msg)
        if not isinstance(p, Parameter):
            msg = f"{where}: params[{i}] must be a Parameter, got {type(p).__name__}"
            raise TypeError(msg)
        if id(p) in seen:
            msg = f"{where}: {p!r} is given twice (params[{seen[id(p)]}] and params[{i}])"
            raise ValueError(msg)
        seen[id(p)] = i
        check_floating(p.data, namespace_of(p.data), where=where, what=repr(p))
        out.append(p)
    if not out:
        msg = f"{where}: got an empty parameter list"
        raise ValueError(msg)
    return out


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _host_copy(value: Any) -> Any:
    if isinstance(value, int | float):
        return value
    return to_numpy(value).copy()  # to_numpy may share memory with the state (NumPy, torch CPU)
