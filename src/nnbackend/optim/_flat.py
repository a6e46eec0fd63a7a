"""Flat buffers: an optimizer step in a constant number of array calls.

On backends whose arrays support views (NumPy, CuPy, PyTorch), an optimizer packs the parameters
of each (namespace, device, dtype, parameter group) into one flat buffer and rebinds every
``Parameter.data`` to a view of it; their gradients land in a second flat buffer
(``Parameter.accumulate_grad`` writes into its view) and the optimizer's state arrays live in
flat buffers too. One update of the flat
arrays then updates every parameter: the same handful of array calls whether the model has two
parameter tensors or two hundred (on a GPU, each call is at least one kernel launch). Each
parameter group has buffers of its own, so its hyperparameters apply to its buffer as a whole.

Frozen parameters (``requires_grad=False``) are not packed: no flat update may move them, not even
weight decay. A packed parameter frozen later makes its group repack once, at the next step,
without it (it gets arrays of its own); an unfrozen one is packed again, into a buffer of its own
when its step count differs from the others'. Neither is a fallback: both are counted in
``path_stats.repacked``.

The per-parameter path stays the reference: it runs on backends without views (array-api-strict,
JAX) and whenever the flat layout no longer holds (a parameter or gradient rebound by the user,
parameters stepped unequally often), and both paths are tested for parity. The views make the
two interchangeable: the per-parameter path updates the same memory the flat one does.

No fallback is silent: each group step that leaves the flat path is counted by reason in the
optimizer's :class:`PathStats` (``optimizer.path_stats``), and the first one of each reason is
reported with a :class:`FlatFallbackWarning` naming the parameter and the cause.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from array_api_compat import device

from .._checks import namespace_of, same_device
from .._typing import Array, Namespace
from ..layers.module import Parameter

__all__ = [
    "FALLBACK_REASONS",
    "Fallback",
    "FlatFallbackWarning",
    "FlatGroup",
    "PathStats",
    "is_trainable",
    "pack",
]


class FlatFallbackWarning(RuntimeWarning):
    """An optimizer stepped the parameters of a flat group one by one (the slower path).

    Issued once per optimizer and reason, naming the parameter and the cause; every such step
    is counted in ``optimizer.path_stats.fallbacks``.
    """


FALLBACK_REASONS: dict[str, str] = {
    "rebound": (
        "its .data was rebound to another array, so it no longer views the flat buffer (write "
        "new values in place, p.data[...] = v, to keep the flat layout)"
    ),
    "other_optimizer": (
        "another optimizer created over the same parameter packed it into its own flat buffer "
        "(give each parameter to one optimizer)"
    ),
    "grad_assigned": (
        "its .grad was assigned an array that cannot be copied into the flat gradient buffer "
        "as it is (another shape, dtype, namespace or device)"
    ),
    "no_grad": "it has no gradient this step while other parameters of its group do",
    "steps_differ": (
        "it has been stepped a different number of times than the rest of its group (it "
        "missed a step: one flat update needs one step count)"
    ),
    "state": (
        "its optimizer state does not match its group's (other state names or step counts, "
        "e.g. loaded from a state dict)"
    ),
}
"""Why a flat group's step ran per parameter, by the key counted in :class:`PathStats`."""


@dataclass(frozen=True)
class Fallback:
    """Why one group step cannot run flat: a key of :data:`FALLBACK_REASONS` and the index of
    the first parameter (in the optimizer's list) that breaks the layout."""

    reason: str
    index: int


_IDLE = Fallback("idle", -1)  # no parameter of the group has a gradient: nothing to step


def is_trainable(p: Parameter) -> bool:
    """Whether an optimizer may move ``p`` (``Parameter.requires_grad``; the hot loops read the
    attribute directly)."""
    return p.requires_grad


@dataclass
class PathStats:
    """How an optimizer's updates ran.

    Attributes
    ----------
    flat : int
        Group steps on the flat path (one per flat group per ``step()``).
    fallbacks : Counter of str
        Group steps that ran per parameter although the group was packed, by the reason key of
        :data:`FALLBACK_REASONS`.
    unpacked : Counter of str
        Parameters not packed when the optimizer (or their group) was created, by reason:
        ``"no_views"`` (their namespace has no views: array-api-strict, JAX), ``"flat=False"``,
        or ``"frozen"`` (``requires_grad=False``; packed once they are unfrozen).
    copied_grads : int
        Gradients assigned by hand (``p.grad = g``) that a flat step copied into its gradient
        buffer (one array call each; ``accumulate_grad`` writes there directly).
    repacked : int
        Flat groups rebuilt because parameters were frozen or unfrozen (a few array calls per
        parameter, once per change).
    """

    flat: int = 0
    fallbacks: Counter[str] = field(default_factory=Counter)
    unpacked: Counter[str] = field(default_factory=Counter)
    copied_grads: int = 0
    repacked: int = 0


class FlatGroup:
    """The parameters of one namespace, device, dtype and parameter group, packed into flat
    buffers.

    Attributes
    ----------
    indices : list of int
        Positions of the group's parameters in the optimizer's parameter list.
    param_group : int
        The index of the optimizer's parameter group they belong to.
    data, grad : array (n,)
        The flat parameter values and gradients; each parameter's ``data`` is a view of
        ``data`` and its gradient, when accumulated, a view of ``grad``.
    state : dict of str to array (n,)
        The optimizer's flat state arrays (allocated by the first flat step).
    """

    def __init__(self, indices: list[int], params: Sequence[Parameter], xp: Namespace,
                 param_group: int = 0) -> None:
        self.indices = indices
        self.param_group = param_group
        self.xp = xp
        ref = params[0].data
        self._slices: list[tuple[int, int, tuple[int, ...]]] = []
        offset = 0
        for p in params:
            size = math.prod(p.shape)
            self._slices.append((offset, offset + size, p.shape))
            offset += size
        self.data = xp.empty((offset,), dtype=ref.dtype, device=device(ref))
        self.grad = xp.zeros((offset,), dtype=ref.dtype, device=device(ref))
        self.data_views = self.views(self.data)
        self.grad_views = self.views(self.grad)
        for p, view, grad_view in zip(params, self.data_views, self.grad_views, strict=True):
            view[...] = p.data
            p.data = view
            grad = p.grad
            if grad is not None and grad.shape == view.shape and grad.dtype == view.dtype:
                grad_view[...] = grad
                p.grad = grad_view
            p.grad_buffer = grad_view
        self._members = list(zip(indices, self.data_views, self.grad_views, strict=True))
        self.state: dict[str, Array] = {}
        self.state_views: dict[str, list[Array]] = {}

    def views(self, flat: Array) -> list[Array]:
        """One view of ``flat`` per parameter, in the parameter's shape."""
        xp = self.xp
        return [xp.reshape(flat[start:stop], shape) for start, stop, shape in self._slices]

    def common_step(self, params: Sequence[Parameter], states: Sequence[dict[str, Any]],
                    stats: PathStats | None = None) -> int | Fallback:
        """The step count every parameter shares, or why the flat layout does not hold.

        It holds when every parameter is trainable and still views the flat buffers, every
        gradient has been
        accumulated into its view and all step counts are equal (Adam's bias correction depends
        on them). A gradient assigned by hand is first copied into its view (counted in
        ``stats.copied_grads``), and state arrays that are not the group's views (allocated by
        the per-parameter path, or loaded from a state dict) into flat state. A group none of
        whose parameters has a gradient returns a :class:`Fallback` with reason ``"idle"``
        (nothing to step; not a fallback), and a group with a frozen parameter one with reason
        ``"frozen"`` (the optimizer repacks the group without it; not a fallback either).
        """
        step: int | None = None
        missing: int | None = None  # the first parameter without a gradient
        behind, fewest = -1, 0  # the first parameter stepped least often, and its count
        unequal = False
        for i, data_view, grad_view in self._members:
            p = params[i]
            if not p.requires_grad:
                return Fallback("frozen", i)
            if p.data is not data_view:
                other = p.grad_buffer is not None and p.grad_buffer is not grad_view
                return Fallback("other_optimizer" if other else "rebound", i)
            grad = p.grad
            if grad is None:
                missing = i if missing is None else missing
                continue
            if grad is not grad_view:
                if not self._fits(grad, grad_view):
                    return Fallback("grad_assigned", i)
                # Assigned (p.grad = g) instead of accumulated: the same values, copied into
                # the flat gradient buffer, keep the group on its flat path.
                grad_view[...] = grad
                p.grad = grad_view
                if stats is not None:
                    stats.copied_grads += 1
            count = states[i].get("step", 0)
            if step is None:
                step, behind, fewest = count, i, count
            elif count != step:
                unequal = True
            if count < fewest:
                behind, fewest = i, count
        if step is None:
            return _IDLE
        if missing is not None:
            return Fallback("no_grad", missing)
        if unequal:
            return Fallback("steps_differ", behind)
        if not self._state_is_shared(states):
            self.adopt_state(states)
            if not self._state_is_shared(states):
                return Fallback("state", self.indices[0])
        return step

    def release(self, i: int, p: Parameter, state: dict[str, Any]) -> None:
        """Give parameter ``i`` (a member) arrays of its own: its data, gradient and state stop
        viewing the flat buffers, which it then no longer keeps alive."""
        xp = self.xp
        k = self.indices.index(i)
        if p.data is self.data_views[k]:
            p.data = xp.asarray(p.data, copy=True)
        if p.grad is self.grad_views[k]:
            p.grad = xp.asarray(p.grad, copy=True)
        for name, views in self.state_views.items():
            if state.get(name) is views[k]:
                state[name] = xp.asarray(views[k], copy=True)

    def _fits(self, grad: Array, view: Array) -> bool:
        """Whether ``grad`` can be copied into ``view`` as it is (no cast, no transfer)."""
        xp = self.xp
        return bool(
            namespace_of(grad) is xp and grad.shape == view.shape and grad.dtype == view.dtype
            and same_device(grad, view, xp)
        )

    def _state_is_shared(self, states: Sequence[dict[str, Any]]) -> bool:
        """Whether each parameter's state arrays are exactly the group's views."""
        for k, i in enumerate(self.indices):
            st = states[i]
            if len(st) != len(self.state_views) + ("step" in st):
                return False
            for name, views in self.state_views.items():
                if st.get(name) is not views[k]:
                    return False
        return True

    def share_state(self, states: Sequence[dict[str, Any]]) -> None:
        """Give every parameter its view of each flat state array."""
        for name, flat in self.state.items():
            if name not in self.state_views:
                self.state_views[name] = self.views(flat)
            for k, i in enumerate(self.indices):
                states[i][name] = self.state_views[name][k]

    def adopt_state(self, states: Sequence[dict[str, Any]]) -> None:
        """Rebuild the flat state from per-parameter state arrays (loaded from a state dict, or
        allocated by the per-parameter path).

        Only when every parameter holds the same state names with one step count; otherwise
        the flat state is dropped and the group runs the per-parameter path.
        """
        self.state, self.state_views = {}, {}
        entries = [states[i] for i in self.indices]
        names = {name for name in entries[0] if name != "step"}
        steps = {st.get("step", 0) for st in entries}
        if len(steps) != 1 or any({n for n in st if n != "step"} != names for st in entries):
            return
        for name in sorted(names):
            flat = self.xp.empty(self.data.shape, dtype=self.data.dtype,
                                 device=device(self.data))
            for view, st in zip(self.views(flat), entries, strict=True):
                view[...] = st[name]
            self.state[name] = flat
        self.share_state(states)


def pack(params: Sequence[Parameter], indices: Iterable[int], group_of: Sequence[int],
         states: Sequence[Mapping[str, Any]]) -> list[FlatGroup]:
    """Pack ``params[i]`` for ``i`` in ``indices`` (parameters of namespaces with views) into one
    :class:`FlatGroup` per namespace, device, dtype, parameter group (``group_of[i]``) and step
    count (``states[i]["step"]``: one flat update applies one bias correction).
    """
    groups: dict[tuple[int, str, str, int, int], tuple[Namespace, list[int]]] = {}
    for i in indices:
        p = params[i]
        xp = namespace_of(p.data)
        key = (id(xp), repr(device(p.data)), str(p.data.dtype), group_of[i],
               states[i].get("step", 0))
        groups.setdefault(key, (xp, []))[1].append(i)
    return [
        FlatGroup(members, [params[i] for i in members], xp, param_group=key[3])
        for key, (xp, members) in groups.items()
    ]
