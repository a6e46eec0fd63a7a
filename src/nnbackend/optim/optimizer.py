"""The ``Optimizer`` base class: parameters, parameter groups, hyperparameters, state, state dicts.

An optimizer holds its parameters by reference and updates ``p.data`` from ``p.grad``::

    opt = Adam(model.parameters(), lr=1e-3)     # or Adam(model, ...)
    backprop(dy)                                # accumulates every p.grad
    opt.step()                                  # θ ← update(θ, ∂L/∂θ), in place
    opt.zero_grad()                             # p.grad ← None

Parameter groups, as in PyTorch, give some parameters their own hyperparameters; what a group
leaves out comes from the keyword arguments. AdamW without weight decay on biases and
normalisation weights, the usual transformer recipe::

    decay = [p for name, p in model.named_parameters() if name.endswith("weight")]
    no_decay = [p for name, p in model.named_parameters() if not name.endswith("weight")]
    opt = AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=3e-4)
    opt.param_groups[1]["weight_decay"]         # 0.0; the first group has AdamW's 0.01

The update rules live in plain functions (:func:`~nnbackend.optim.sgd_update`,
:func:`~nnbackend.optim.adam_update`, :func:`~nnbackend.optim.rmsprop_update`) written in
Array API code; the classes add validation, state bookkeeping and (de)serialisation.

Hyperparameters are declared once per class, in ``HYPERPARAMETERS`` (a tuple of
:class:`~nnbackend.optim._hyper.Hyperparameter`: name, default, check). That list gives the
constructor's signature, validates the keyword arguments, every group, every assignment
(``opt.lr = x`` and ``group["lr"] = x`` alike) and every loaded state dict, and makes the state
dict's ``hyperparameters`` and ``param_groups``, the checkpoint metadata and ``repr``.

Conventions every optimizer follows:

* On backends with views (NumPy, CuPy, PyTorch) the parameters and their gradients live in an
  arena (:mod:`nnbackend.layers.arena`: one flat data and one flat gradient buffer per
  namespace, device and dtype, ``Parameter.data`` a view of the first) that every optimizer
  over them shares: creating an optimizer packs the parameters that are in no arena yet (in
  its order, each parameter group contiguous) and finds the others where they are. Each
  optimizer keeps its state in flat arrays of its own, aligned to its parameters' ranges, and
  a step is a constant number of array calls per run of adjacent parameters (one run per
  group and chunk while every parameter has a gradient) however many parameter tensors there
  are (see :mod:`nnbackend.optim._flat`). Elsewhere, and for a parameter that left the arena,
  the same update runs per parameter (the reference path). Which path ran is counted in
  ``optimizer.path_stats``; leaving the flat path warns once per reason
  (:class:`~nnbackend.optim.FlatFallbackWarning`).

* Parameters whose ``.grad`` is None are skipped, as in PyTorch (their state and step count do
  not move); the others stay on the flat path, in the runs around them.
* Frozen parameters (``requires_grad=False``) are never moved, not even by weight decay: no run
  covers them and the per-parameter path skips them. One frozen when the optimizer is created
  is not packed (no gradient buffer for a frozen backbone), and is packed once unfrozen.
* State arrays are allocated once, lazily on the first step that sees a gradient, with the
  parameter's shape, dtype and device. They are updated through augmented assignment, which is
  in place on NumPy, CuPy, PyTorch and array-api-strict and rebinds on immutable arrays (JAX); the
  results are always stored back, so both kinds of backend stay correct.
* Step counts and bias corrections are Python numbers: ``step()`` never reads an array back to
  the host. For a compiled step, :func:`nnbackend.state.load_training_state` (with
  ``device_scalars=True``) makes the step counts and each group's ``lr`` 0-d arrays on the
  device instead; the update rules then compute the bias corrections there (a flat group
  shares one count array), and ``state_dict()`` reads them back as Python numbers.
* ``.grad`` is never modified (weight decay goes into a temporary).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any, ClassVar, TypeAlias

from array_api_compat import device, is_writeable_array

from .._checks import (
    check_floating,
    check_int,
    describe_placement,
    name_mismatch,
    namespace_of,
    same_device,
)
from .._typing import Array, Namespace
from ..backend import backend_of, dtype_name, supports_views, to_numpy
from ..layers.arena import Arena, live_slot, report_no_views
from ..layers.module import Module, Parameter
from ._flat import (
    FALLBACK_REASONS,
    Fallback,
    FlatFallbackWarning,
    FlatGroup,
    PathStats,
    Run,
    build_groups,
    is_trainable,
)
from ._hyper import REQUIRED, Hyperparameter, bind, signature

__all__ = ["Optimizer", "ParamGroup", "ParamsLike", "maximum_into", "zeros_like"]

ParamsLike: TypeAlias = "Module | Iterable[Parameter] | Iterable[Mapping[str, Any]]"
"""What an optimizer accepts as ``params``: a Module, an iterable of Parameters, or an iterable
of parameter groups (dicts with ``"params"`` and any hyperparameters)."""


class ParamGroup(MutableMapping[str, Any]):
    """One parameter group: ``{"params": [Parameter, ...], <hyperparameter>: value, ...}``.

    The entries of ``optimizer.param_groups``, as in PyTorch: a mapping with ``"params"`` and
    every hyperparameter of the optimizer. Hyperparameters are read and assigned as in a dict
    (``group["lr"] *= 0.1``); an assignment is validated by the optimizer's ``HYPERPARAMETERS``
    and refused, changing nothing, when the value is out of range. ``"params"`` is fixed (add
    parameters with :meth:`Optimizer.add_param_group`), and no key can be added or removed.

    Attributes
    ----------
    index : int
        The group's position in ``optimizer.param_groups``.
    params : list of Parameter
        Its parameters, in order.
    settings : dict
        Its hyperparameters (Python values, already checked).
    """

    __slots__ = ("_optimizer", "index", "params", "settings")

    def __init__(self, optimizer: Optimizer, index: int, params: list[Parameter],
                 settings: dict[str, Any]) -> None:
        self._optimizer = optimizer
        self.index = index
        self.params = params
        self.settings = settings

    def __getitem__(self, key: str) -> Any:
        if key == "params":
            return self.params
        try:
            return self.settings[key]
        except KeyError:
            msg = self._optimizer._unknown_key(key, where=f"param_groups[{self.index}]")
            raise KeyError(msg) from None

    def __setitem__(self, key: str, value: Any) -> None:
        self._optimizer._assign(self, key, value)

    def __delitem__(self, key: str) -> None:
        msg = (
            f"{type(self._optimizer).__name__}: param_groups[{self.index}] keeps every key; "
            f"assign {key!r} a new value instead of deleting it"
        )
        raise TypeError(msg)

    def __iter__(self) -> Iterator[str]:
        yield "params"
        yield from self.settings

    def __len__(self) -> int:
        return 1 + len(self.settings)

    def __repr__(self) -> str:
        values = "".join(f", {k!r}: {v!r}" for k, v in self.settings.items())
        return f"{{'params': [{_count(len(self.params))}]{values}}}"


class _Shared:
    """``optimizer.<name>``: the value every parameter group shares; assigning sets it in all of
    them (and in the defaults new groups get)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Optimizer | None, owner: type) -> Any:
        if obj is None:
            return self
        return obj._shared(self.name)

    def __set__(self, obj: Optimizer, value: Any) -> None:
        obj._set_everywhere(self.name, value)


class Optimizer:
    """Base class of the optimizers: parameter groups, hyperparameters and per-parameter state.

    A subclass declares ``HYPERPARAMETERS`` (a tuple of
    :class:`~nnbackend.optim._hyper.Hyperparameter`; each becomes a keyword of the constructor,
    an entry of every parameter group and an attribute), the names of every state array it may
    hold in ``_state_names``, and implements :meth:`_update` and :meth:`_expected_state` (and
    :meth:`_check_together` for a rule that links hyperparameters). It writes no ``__init__``.

    Parameters
    ----------
    params : Module, iterable of Parameter, or iterable of dict
        The parameters to optimise (a Module stands for its ``parameters()``), or parameter
        groups: dicts with ``"params"`` (a Module, a Parameter or an iterable of them) and any
        hyperparameters of the optimizer, which override the keyword arguments for that group.
        Each parameter may appear only once.
    *args, **hyperparameters
        The hyperparameters (see the subclass); the first may be given by position.
    flat : bool
        Step the parameters in their arena's flat buffers (packing those in no arena yet)
        where the backend has views (NumPy, CuPy, PyTorch), so that a step costs a constant
        number of array calls per run; False keeps the per-parameter reference path (and
        packs nothing).

    Attributes
    ----------
    params : list of Parameter
        Every parameter, group after group, in the order given.
    param_groups : list of ParamGroup
        One mapping per group: ``"params"`` and each hyperparameter's value for the group.
    defaults : dict
        The hyperparameters given to the constructor (or their defaults): what a group leaves
        out, and what :meth:`add_param_group` fills in. None for a required hyperparameter
        given in every group instead.
    state : list of dict
        One dict per parameter, in parameter order: ``"step"`` (Python int, the number of
        updates applied to that parameter) and the optimizer's state arrays. Empty until the
        parameter first receives a gradient.
    lr, <hyperparameter> : value
        Each hyperparameter as an attribute: reading gives the value every group shares (an
        error names the groups when they differ); assigning sets it in every group and in
        ``defaults``. ``lr`` may be changed between steps (by the user or a schedule).
    path_stats : PathStats
        How the steps ran: group steps and runs on the flat path, parameters skipped without a
        gradient, those stepped on their own although in the arena (by reason), and the
        parameters never packed (by reason).
    settings_version : int
        Advanced whenever a hyperparameter other than ``lr`` changes (assigned, or loaded):
        a compiled step, whose program holds them as constants, compiles again then.
    """

    HYPERPARAMETERS: ClassVar[tuple[Hyperparameter, ...]] = ()
    _state_names: ClassVar[tuple[str, ...]] = ()

    lr: float  # every optimizer has one; the attribute itself comes from HYPERPARAMETERS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for h in cls.HYPERPARAMETERS:
            if h.name == "params" or (hasattr(Optimizer, h.name) and h.name != "lr"):
                msg = f"{cls.__name__}: a hyperparameter cannot be named {h.name!r}"
                raise TypeError(msg)
            if not isinstance(cls.__dict__.get(h.name), _Shared):
                setattr(cls, h.name, _Shared(h.name))
        kind = inspect.Parameter
        cls.__signature__ = signature(  # type: ignore[attr-defined]
            cls.HYPERPARAMETERS,
            leading=[kind("params", kind.POSITIONAL_OR_KEYWORD)],
            trailing=[kind("flat", kind.KEYWORD_ONLY, default=True)],
        )

    def __init__(self, params: ParamsLike, *args: Any, flat: bool = True,
                 **hyperparameters: Any) -> None:
        where = type(self).__name__
        given = bind(self.HYPERPARAMETERS, args, hyperparameters, where=where, missing_ok=True)
        self.defaults: dict[str, Any] = self._checked(given, where=where, complete=False)
        self.params: list[Parameter] = []
        self.param_groups: list[ParamGroup] = []
        self.state: list[dict[str, Any]] = []
        self._group_of: list[int] = []  # parameter index -> group index
        self._flat = flat
        self._flat_groups: list[FlatGroup] = []  # per (arena chunk, parameter group)
        self._members: set[int] = set()  # parameters stepped in the arena (flat groups)
        self._arena: Arena | None = None  # where this optimizer packs parameters
        self._pending: list[Fallback] = []  # parameters that left the arena, to report
        self._frozen_out: list[int] = []  # packable parameters left out because frozen
        self.path_stats = PathStats()
        # Advanced by every change of a hyperparameter other than lr (an assignment, a load):
        # what a compiled step compares to know that its program's constants changed.
        self.settings_version = 0
        self._reported: set[str] = set()  # fallback reasons already warned about
        self._param_labels: list[str] = []  # how messages name each parameter
        for group in _groups_of(params, where=where):
            self._add_group(group, where=where)
        if not self.params:
            msg = f"{where}: got an empty parameter list"
            raise ValueError(msg)
        self._pack(range(len(self.params)))

    # ---------------------------------------------------------------- parameter groups

    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """Add a parameter group (PyTorch's ``add_param_group``): a dict with ``"params"`` and
        any hyperparameters; the others come from :attr:`defaults`.

        Its parameters are packed into flat buffers of their own. A schedule created before
        does not drive the new group (create schedules after the groups).
        """
        where = f"{type(self).__name__}.add_param_group"
        if not isinstance(param_group, Mapping):
            msg = f"{where}: expected a dict with 'params', got {type(param_group).__name__}"
            raise TypeError(msg)
        start = len(self.params)
        label = f"param_groups[{len(self.param_groups)}]"
        self._add_group(_Group(param_group, label=label, where=where), where=where)
        self._pack(range(start, len(self.params)))

    def _add_group(self, group: _Group, *, where: str) -> None:
        """Check one group against the others and the hyperparameters, and append it."""
        index = len(self.param_groups)
        context = f"{where}: {group.label}" if group.label else where
        unknown = sorted(group.overrides.keys() - {h.name for h in self.HYPERPARAMETERS})
        if unknown:
            msg = (
                f"{context} has unknown keys {unknown}; a group holds 'params' and any of "
                f"{[h.name for h in self.HYPERPARAMETERS]}"
            )
            raise TypeError(msg)
        overrides = self._checked_subset(group.overrides, where=context)
        values = self._checked({**self.defaults, **overrides}, where=context, complete=True)
        seen = {id(p): i for i, p in enumerate(self.params)}
        params = _collect_parameters(group.params, where=where, label=group.label_of_params,
                                     seen=seen, labels=self._param_labels)
        self._param_labels.extend(f"{group.label_of_params}[{k}]" for k in range(len(params)))
        self.param_groups.append(ParamGroup(self, index, params, values))
        self.params.extend(params)
        self.state.extend({} for _ in params)
        self._group_of.extend(index for _ in params)

    def _pack(self, indices: Iterable[int]) -> None:
        """Put the parameters at ``indices`` on the flat path where they can be (in the arena
        that already holds them, else packed into this optimizer's), recording the others in
        ``path_stats.unpacked``."""
        packable: list[int] = []
        for i in indices:
            p = self.params[i]
            if not self._flat:
                self.path_stats.unpacked["flat=False"] += 1
            elif not supports_views(xp := namespace_of(p.data)):
                self.path_stats.unpacked["no_views"] += 1
                report_no_views(xp)  # the design there, logged once per library
            elif not is_trainable(p) and live_slot(p) is None:
                self.path_stats.unpacked["frozen"] += 1
                self._frozen_out.append(i)
            else:
                packable.append(i)
        if packable:
            self._place(packable)

    def _place(self, indices: list[int]) -> None:
        """Pack the parameters at ``indices`` that are in no arena (into the arena of this
        optimizer's other parameters, else a new one, in this optimizer's order: each group
        contiguous) and make them members of the flat groups. When a group ends up split in
        an arena laid out by someone else (module order interleaving AdamW's groups), the
        arena is re-laid out once in this optimizer's order."""
        params = [self.params[i] for i in indices]
        if self._arena is None:
            owner = next((s.chunk.arena for p in self.params
                          if (s := live_slot(p)) is not None), None)
            self._arena = owner if owner is not None else Arena()
        self._arena.add(params)
        self._members.update(indices)
        self._regroup()
        split = {id(g.chunk.arena): g.chunk.arena for g in self._flat_groups if not g.contiguous}
        if split:
            order = [self.params[i] for i in sorted(self._members)]
            for arena in split.values():
                arena.relayout(order)
            self._regroup()

    def _regroup(self) -> None:
        """Rebuild the flat groups from the members' current arena slots.

        A member whose data was rebound leaves the arena (counted once, reported at the end of
        the step) and is stepped per parameter from then on; one that moved (an arena re-laid
        out) stays flat, its state copied into the new group's layout at its next step
        (``path_stats.repacked``).
        """
        old = {i: s for g in self._flat_groups for i, s in zip(g.indices, g.slots, strict=True)}
        members = []
        moved = False
        for i in sorted(self._members):
            slot = live_slot(self.params[i])
            if slot is None:
                self._members.discard(i)
                for g in self._flat_groups:
                    if i in g.indices:
                        g.release(i, self.state[i])
                self._pending.append(Fallback("rebound", i))
                continue
            moved = moved or (i in old and old[i] is not slot)
            members.append((i, slot))
        self._flat_groups = build_groups(members, self._group_of, self._flat_groups)
        if moved:
            self.path_stats.repacked += 1

    # ---------------------------------------------------------------- hyperparameters

    @classmethod
    def _checked(cls, values: Mapping[str, Any], *, where: str, complete: bool) -> dict[str, Any]:
        """Every hyperparameter of ``values`` checked and normalised (Python values).

        A required one that is missing (``REQUIRED``, or None in saved defaults) raises when
        ``complete``, and is None otherwise (defaults a group must complete).
        """
        out: dict[str, Any] = {}
        for h in cls.HYPERPARAMETERS:
            value = values[h.name]
            if value is REQUIRED or (value is None and h.default is REQUIRED):
                if complete:
                    msg = (
                        f"{where}: {h.name} is required: give it to {cls.__name__}(...) or to "
                        "every parameter group"
                    )
                    raise TypeError(msg)
                out[h.name] = None
                continue
            out[h.name] = h.check(value, where, h.name)
        if all(value is not None or h.default is not REQUIRED
               for h, value in zip(cls.HYPERPARAMETERS, out.values(), strict=True)):
            cls._check_together(out, where=where)
        return out

    @classmethod
    def _checked_subset(cls, values: Mapping[str, Any], *, where: str) -> dict[str, Any]:
        """The given hyperparameters (a subset of the list) checked one by one."""
        spec = {h.name: h for h in cls.HYPERPARAMETERS}
        return {name: spec[name].check(value, where, name) for name, value in values.items()}

    @classmethod
    def _check_together(cls, values: Mapping[str, Any], *, where: str) -> None:
        """Refuse a combination of (individually valid) hyperparameters; a subclass hook."""

    def _expected_state(self, values: Mapping[str, Any]) -> tuple[str, ...]:
        """State arrays a parameter that has been stepped must hold under these settings."""
        return ()

    def _shared(self, name: str) -> Any:
        """The value of ``name`` that every group shares (``optimizer.<name>``)."""
        groups = self.param_groups
        first = groups[0].settings[name]
        if all(g.settings[name] == first for g in groups[1:]):
            return first
        values = [g.settings[name] for g in groups]
        msg = (
            f"{type(self).__name__}: the parameter groups have different {name} values "
            f"{values}; read param_groups[i][{name!r}] (assigning optimizer.{name} sets it in "
            "every group)"
        )
        raise ValueError(msg)

    def _set_everywhere(self, name: str, value: Any) -> None:
        """``optimizer.<name> = value``: checked, then set in every group and the defaults."""
        cls = type(self)
        where = cls.__name__
        spec = {h.name: h for h in self.HYPERPARAMETERS}
        checked = spec[name].check(value, where, name)
        many = len(self.param_groups) > 1
        for g in self.param_groups:
            cls._check_together({**g.settings, name: checked},
                                where=f"{where}: param_groups[{g.index}]" if many else where)
        for g in self.param_groups:
            g.settings[name] = checked
        self.defaults[name] = checked
        if name != "lr":
            self.settings_version += 1

    def _assign(self, group: ParamGroup, key: str, value: Any) -> None:
        """``group[key] = value``: checked against the list and the group's other values."""
        where = f"{type(self).__name__}: param_groups[{group.index}]"
        if key == "params":
            msg = (
                f"{where}: 'params' cannot be replaced (the optimizer's flat state is laid out "
                "for its parameters); add parameters with add_param_group"
            )
            raise TypeError(msg)
        if key not in group.settings:
            raise KeyError(self._unknown_key(key, where=f"param_groups[{group.index}]"))
        spec = {h.name: h for h in self.HYPERPARAMETERS}
        checked = spec[key].check(value, where, key)
        type(self)._check_together({**group.settings, key: checked}, where=where)
        group.settings[key] = checked
        if key != "lr":
            self.settings_version += 1

    def _unknown_key(self, key: str, *, where: str) -> str:
        return (
            f"{type(self).__name__}: {where} has no {key!r}; a group holds 'params' and "
            f"{[h.name for h in self.HYPERPARAMETERS]}"
        )

    def hyperparameters(self) -> dict[str, Any]:
        """The :attr:`defaults` as JSON-serialisable Python values (tuples become lists).

        With one parameter group and no schedule these are also the group's values; each
        group's own are in :attr:`param_groups` (and the state dict's ``"param_groups"``).
        """
        return {name: _jsonable(value) for name, value in self.defaults.items()}

    # ---------------------------------------------------------------- stepping

    def step(self) -> None:
        """Apply one update to every trainable parameter that has a gradient.

        Warns
        -----
        FlatFallbackWarning
            The first time (per optimizer) a packed group ran per parameter for a given reason;
            the update itself is the same, only slower. See ``path_stats``.
        """
        if self._frozen_out:
            self._pack_unfrozen()
        plans, fallbacks = self._plan()
        stats = self.path_stats
        groups = self.param_groups
        advanced: dict[int, tuple[Array, Array]] = {}  # id(0-d count) -> (it, it + 1)
        updated = 0
        for group, runs in plans:
            if not runs:
                continue
            hyper = groups[group.param_group].settings
            for run in runs:
                group.apply(run, _advance(run[2], advanced), self._update, hyper, self.state)
                updated += run[1] - run[0]
            stats.flat += 1
            stats.runs += len(runs)
        if updated < len(self.params):
            done = {i for group, runs in plans for first, stop, _, _ in runs
                    for i in group.indices[first:stop]}
            for i, p, grad, st, xp in self._with_grads(skip=done):
                self._check_state_placement(p, st, xp)
                st["step"] = _advance(st.get("step", 0), advanced)
                p.data = self._update(p.data, grad, st, st["step"], xp,
                                      groups[self._group_of[i]].settings)
        # Reported after the update: a step that raises reports its error instead.
        pending, self._pending = self._pending, []
        for fallback in pending + fallbacks:
            self._report(fallback)

    def _plan(self) -> tuple[list[tuple[FlatGroup, list[Run]]], list[Fallback]]:
        """Each flat group's runs this step (the groups rebuilt first when members left or
        moved in the arena), and the members left to the per-parameter path this step."""
        while True:
            skipped = self.path_stats.skipped
            plans: list[tuple[FlatGroup, list[Run]]] = []
            fallbacks: list[Fallback] = []
            for group in self._flat_groups:
                runs = group.runs(self.params, self.state, self.path_stats, fallbacks,
                                  self._check_state_placement)
                if runs is None:
                    break
                plans.append((group, runs))
            else:
                return plans, fallbacks
            self.path_stats.skipped = skipped  # counted again after the rebuild
            self._regroup()

    def _pack_unfrozen(self) -> None:
        """Pack the parameters unfrozen since the last step (into a chunk of their own)."""
        thawed = [i for i in self._frozen_out if is_trainable(self.params[i])]
        if not thawed:
            return
        self._frozen_out = [i for i in self._frozen_out if i not in set(thawed)]
        self._place(thawed)
        self.path_stats.repacked += 1

    def _report(self, fallback: Fallback) -> None:
        """Count a group step that ran per parameter; warn the first time for its reason."""
        reason = fallback.reason
        self.path_stats.fallbacks[reason] += 1
        if reason in self._reported:
            return
        self._reported.add(reason)
        p = self.params[fallback.index]
        detail = FALLBACK_REASONS[reason]
        msg = (
            f"{type(self).__name__}: {p!r} (params[{fallback.index}]) left the flat path: "
            f"{detail}. It is stepped on its own (the same update, with a few array calls of "
            f"its own; the rest of its group stays flat); counted in "
            f"path_stats.fallbacks[{reason!r}], warned once per reason"
        )
        warnings.warn(msg, FlatFallbackWarning, stacklevel=3)

    def _update(self, data: Array, grad: Array, state: dict[str, Any], step: int,
                xp: Namespace, hyper: Mapping[str, Any]) -> Array:
        """Update one array ``data`` (a parameter, or a flat buffer of them) from ``grad``.

        ``state`` holds the optimizer's state arrays for ``data`` (allocate missing ones with
        :func:`zeros_like` of ``data``; store updated ones back); ``step`` counts this update;
        ``hyper`` holds the parameter group's hyperparameters (checked Python values).
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
    ) -> Iterator[tuple[int, Parameter, Array, dict[str, Any], Namespace]]:
        """Yield ``(index, parameter, grad, state, xp)`` for each trainable parameter with a
        gradient, except those whose index is in ``skip``."""
        where = type(self).__name__
        for i, (p, st) in enumerate(zip(self.params, self.state, strict=True)):
            grad = p.grad
            if grad is None or i in skip or not p.requires_grad:
                continue
            data = p.data
            if grad.shape != data.shape or grad.dtype != data.dtype:
                msg = (
                    f"{where}: the gradient of {p!r} has shape {tuple(grad.shape)} and dtype "
                    f"{dtype_name(grad.dtype)}; expected the parameter's"
                )
                raise ValueError(msg)
            yield i, p, grad, st, namespace_of(data)

    # ---------------------------------------------------------------- state dicts

    def state_dict(self) -> dict[str, Any]:
        """Host copies of the optimizer's state, with its hyperparameters.

        Returns
        -------
        dict
            ``{"type": class name, "hyperparameters": the defaults (JSON values),
            "param_groups": [{"params": [parameter indices], <hyperparameter>: JSON value}],
            "state": [one dict per parameter, in parameter order]}``, PyTorch's layout with
            the state as a list. Each per-parameter dict maps ``"step"`` to a Python int and
            each state name to a NumPy array (a copy: later steps do not change it); a
            parameter never stepped has an empty dict.
        """
        return {
            "type": type(self).__name__,
            "hyperparameters": self.hyperparameters(),
            "param_groups": self._saved_groups(),
            "state": [
                {name: _host_step(value) if name == "step" else _host_copy(value)
                 for name, value in st.items()}
                for st in self.state
            ],
        }

    def _saved_groups(self) -> list[dict[str, Any]]:
        out, start = [], 0
        for g in self.param_groups:
            stop = start + len(g.params)
            out.append({"params": list(range(start, stop)),
                        **{k: _jsonable(v) for k, v in g.settings.items()}})
            start = stop
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore hyperparameters, parameter groups and state saved by :meth:`state_dict`.

        Everything is validated before anything changes (the type, the hyperparameters, the
        groups and their parameter indices, the number of parameters, each array's shape and
        dtype against its parameter), so a failed load leaves the optimizer untouched. Arrays
        are copied onto each parameter's own namespace and device: a state saved from a NumPy
        run loads into a model on another backend. A state dict without ``"param_groups"``
        (saved before parameter groups existed) loads into an optimizer with one group.
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
        defaults = self._checked_hyperparameters(state_dict["hyperparameters"], where=where)
        groups = self._checked_groups(state_dict.get("param_groups"), defaults, where=where)
        entries = _one_per(state_dict["state"], len(self.params), where=where, key="state",
                           noun="parameter states", own="parameters")
        expected = [self._expected_state(values) for values in groups]
        checked = [
            self._checked_entry(i, p, entry, expected[self._group_of[i]], where=where)
            for i, (p, entry) in enumerate(zip(self.params, entries, strict=True))
        ]
        self.defaults = defaults
        for group, values in zip(self.param_groups, groups, strict=True):
            group.settings = values
        self.settings_version += 1
        self.state = [
            {
                name: value if name == "step" else backend_of(p.data).asarray(value, copy=True)
                for name, value in entry.items()
            }
            for p, entry in zip(self.params, checked, strict=True)
        ]

    def _settings_snapshot(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Copies of the defaults and of every group's hyperparameters, which
        :meth:`_restore_settings` puts back (a checkpoint load that fails after the optimizer
        loaded undoes it with them, together with the ``state`` list)."""
        return dict(self.defaults), [dict(g.settings) for g in self.param_groups]

    def _restore_settings(self, snapshot: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
        defaults, groups = snapshot
        self.defaults = dict(defaults)
        for group, settings in zip(self.param_groups, groups, strict=True):
            group.settings = dict(settings)
        self.settings_version += 1

    def _checked_hyperparameters(self, hyper: Any, *, where: str) -> dict[str, Any]:
        if not isinstance(hyper, Mapping):
            msg = f"{where}: 'hyperparameters' must be a dict, got {type(hyper).__name__}"
            raise TypeError(msg)
        self._check_names(hyper, where=where, what="the hyperparameters")
        # Messages name the class alone, as at construction: "Adam: lr must be >= 0, got -1.0"
        return self._checked(hyper, where=type(self).__name__, complete=False)

    def _check_names(self, values: Mapping[str, Any], *, where: str, what: str) -> None:
        names = {h.name for h in self.HYPERPARAMETERS}
        missing, unexpected = sorted(names - values.keys()), sorted(values.keys() - names)
        if missing or unexpected:
            msg = f"{where}: {what} do not match {type(self).__name__}'s"
            msg += name_mismatch(missing, unexpected)
            raise KeyError(msg)

    def _checked_groups(self, saved: Any, defaults: Mapping[str, Any], *,
                        where: str) -> list[dict[str, Any]]:
        """Each saved group's hyperparameters, checked, after its parameter indices are checked
        against this optimizer's groups; one group of the defaults for an older state dict."""
        if saved is None:
            if len(self.param_groups) != 1:
                msg = (
                    f"{where}: the state dict has no 'param_groups' (one group, saved before "
                    f"parameter groups existed); this optimizer has {len(self.param_groups)}"
                )
                raise ValueError(msg)
            return [self._checked(defaults, where=type(self).__name__, complete=True)]
        saved = _one_per(saved, len(self.param_groups), where=where, key="param_groups",
                         noun="parameter groups", own="")
        out, start = [], 0
        for g, entry in zip(self.param_groups, saved, strict=True):
            label = f"{where}: param_groups[{g.index}]"
            if not isinstance(entry, Mapping) or "params" not in entry:
                msg = f"{label} must be a dict with 'params', got {type(entry).__name__}"
                raise TypeError(msg)
            indices = list(range(start, start + len(g.params)))
            start += len(g.params)
            if list(entry["params"]) != indices:
                msg = (
                    f"{label} holds the parameters {list(entry['params'])}, this optimizer's "
                    f"group {g.index} holds {indices}"
                )
                raise ValueError(msg)
            values = {k: v for k, v in entry.items() if k != "params"}
            self._check_names(values, where=label, what="its hyperparameters")
            out.append(self._checked(values, where=label, complete=True))
        return out

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
        """``Adam(lr=0.001, ..., 6 parameters)``; with several groups, the values they share,
        then each group's size and own values."""
        groups = self.param_groups
        names = [h.name for h in self.HYPERPARAMETERS]
        common = [n for n in names if all(g.settings[n] == groups[0].settings[n] for g in groups)]
        shared = "".join(f"{n}={groups[0].settings[n]!r}, " for n in common)
        if len(groups) == 1:
            return f"{type(self).__name__}({shared}{_count(len(self.params))})"
        own = "; ".join(
            f"[{g.index}] {_count(len(g.params))}"
            + "".join(f", {n}={g.settings[n]!r}" for n in names if n not in common)
            for g in groups
        )
        return (f"{type(self).__name__}({shared}{_count(len(self.params))} in "
                f"{len(groups)} groups: {own})")


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


class _Group:
    """A parameter group as given: its parameters (unchecked), its hyperparameter overrides,
    and how messages name it (``""`` for a plain parameter list)."""

    def __init__(self, spec: Mapping[str, Any] | None, *, label: str, where: str = "",
                 params: Any = None) -> None:
        self.label = label
        if spec is None:
            self.params, self.overrides = params, {}
            self.label_of_params = "params"
            return
        if "params" not in spec:
            msg = (
                f"{where}: {label} has no 'params'; a group is {{'params': [...], "
                "<hyperparameter>: value, ...}"
            )
            raise KeyError(msg)
        self.params = spec["params"]
        if isinstance(self.params, Parameter):  # PyTorch accepts one tensor as a group's params
            self.params = [self.params]
        self.overrides = {k: v for k, v in spec.items() if k != "params"}
        self.label_of_params = f"{label}['params']"


def _groups_of(params: Any, *, where: str) -> list[_Group]:
    """The groups ``params`` describes: one for a Module or a list of Parameters, one per dict
    for a list of parameter groups."""
    if isinstance(params, Module):
        return [_Group(None, label="", params=params.parameters())]
    if isinstance(params, Parameter):
        msg = (
            f"{where}: params must be an iterable of Parameters or a Module; wrap one "
            f"parameter in a list: [{params!r}]"
        )
        raise TypeError(msg)
    if isinstance(params, Mapping):
        msg = f"{where}: params is one parameter group; pass a list of groups: [{{...}}]"
        raise TypeError(msg)
    if isinstance(params, str) or not isinstance(params, Iterable):
        msg = (
            f"{where}: params must be an iterable of Parameters, of parameter groups (dicts) "
            f"or a Module, got {type(params).__name__}"
        )
        raise TypeError(msg)
    items = list(params)
    dicts = [isinstance(item, Mapping) for item in items]
    if not any(dicts):
        return [_Group(None, label="", params=items)]
    if not all(dicts):
        first = dicts.index(not dicts[0])
        msg = (
            f"{where}: params mixes parameter groups (dicts) and Parameters (params[0] is a "
            f"{type(items[0]).__name__}, params[{first}] a {type(items[first]).__name__}); "
            "put every parameter in a group"
        )
        raise TypeError(msg)
    return [_Group(item, label=f"param_groups[{g}]", where=where)
            for g, item in enumerate(items)]


def _collect_parameters(params: Any, *, where: str, label: str, seen: dict[int, int],
                        labels: Sequence[str]) -> list[Parameter]:
    """The group's parameters as a list: each a Parameter, floating, and given once in the
    whole optimizer (``seen`` maps the ids already taken to their index, ``labels`` names them)."""
    if isinstance(params, Module):
        params = params.parameters()
    elif isinstance(params, Mapping | str) or not isinstance(params, Iterable):
        msg = (
            f"{where}: {label} must be an iterable of Parameters or a Module, "
            f"got {type(params).__name__}"
        )
        raise TypeError(msg)
    out: list[Parameter] = []
    here: dict[int, int] = {}
    for k, p in enumerate(params):
        if isinstance(p, Mapping):
            msg = f"{where}: {label}[{k}] is a dict; groups cannot be nested"
            raise TypeError(msg)
        if not isinstance(p, Parameter):
            msg = f"{where}: {label}[{k}] must be a Parameter, got {type(p).__name__}"
            raise TypeError(msg)
        if id(p) in here:
            msg = f"{where}: {p!r} is given twice ({label}[{here[id(p)]}] and {label}[{k}])"
            raise ValueError(msg)
        if id(p) in seen:
            msg = (
                f"{where}: {p!r} is given twice ({labels[seen[id(p)]]} and {label}[{k}]); "
                "a parameter belongs to one group"
            )
            raise ValueError(msg)
        here[id(p)] = k
        check_floating(p.data, namespace_of(p.data), caller=where, what=repr(p))
        out.append(p)
    return out


def _advance(count: Any, advanced: dict[int, tuple[Array, Array]]) -> Any:
    """``count + 1``; parameters that shared a 0-d device count share the next one (made once
    per step, without reading it)."""
    if count.__class__ is int:
        return count + 1
    pair = advanced.get(id(count))
    if pair is None:
        pair = advanced[id(count)] = (count, count + 1)
    return pair[1]


def _count(n: int) -> str:
    return f"{n} parameter" + ("" if n == 1 else "s")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "dtype"):  # a 0-d device learning rate (nnbackend.state): read once
        return float(to_numpy(value))
    return value


def _host_step(value: Any) -> int:
    """A step count as a Python int (a 0-d device count is read to the host once)."""
    return value if isinstance(value, int) else int(to_numpy(value))


def _host_copy(value: Any) -> Any:
    if isinstance(value, int | float):
        return value
    return to_numpy(value).copy()  # to_numpy may share memory with the state (NumPy, torch CPU)


def _one_per(value: Any, count: int, *, where: str, key: str, noun: str, own: str) -> Sequence[Any]:
    """``value``, a state dict's list of ``count`` entries (one per parameter or group):
    TypeError for another type, ValueError for another length, naming both counts."""
    if isinstance(value, Mapping | str) or not isinstance(value, Sequence):
        msg = f"{where}: {key!r} must be a list, got {type(value).__name__}"
        raise TypeError(msg)
    if len(value) != count:
        msg = (f"{where}: the state dict has {len(value)} {noun}, the optimizer has {count}"
               + (f" {own}" if own else ""))
        raise ValueError(msg)
    return value
