"""Flat optimizer steps on the parameter arena: a constant number of array calls per run.

On backends whose arrays support views (NumPy, CuPy, PyTorch), parameters live in an
:class:`~nnbackend.layers.arena.Arena` (one flat data and one flat gradient buffer per chunk;
``p.data`` is a view of the first, gradients accumulate into views of the second), which every
optimizer over them shares. An optimizer sees its parameters of one parameter group in one
chunk as a :class:`FlatGroup` and keeps its state (momentum, Adam's moments) in flat arrays of
the group's total size, laid out in the arena's order, so that a contiguous range of the
arena is a contiguous range of the state.

A step updates the group in *runs*: maximal ranges of members that are adjacent in the arena,
all have their gradient in their view this step and share a step count and state names. One
update of a run's slices updates every parameter in it: the same handful of array calls
whether the run holds two parameter tensors or two hundred (on a GPU, each call is at least
one kernel launch). While every member has a gradient, a group is one run (its slices made
once, when the group is built). A member without a gradient is skipped, as PyTorch skips it:
the runs around it are updated and it is not (its state and step count stay); afterwards its
step count differs from its neighbours', so it is a run of its own (one bias correction per
run). A frozen member (``requires_grad=False``) is in no run: no update moves it, not even
weight decay. Runs update exactly the elements the per-parameter path would, with the same
operations, so both paths give the same bits.

The per-parameter path stays the reference: it runs on backends without views (array-api-strict,
JAX) and for parameters that left the arena or whose gradient cannot be used in place, and both
paths are tested for parity. The views make the two interchangeable: the per-parameter path
updates the same memory the flat one does.

No fallback is silent: what runs where is counted in the optimizer's :class:`PathStats`
(``optimizer.path_stats``), and the first fallback of each reason is reported with a
:class:`FlatFallbackWarning` naming the parameter and the cause.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from array_api_compat import device

from .._typing import Array, Namespace
from ..layers.arena import Chunk, Slot, fits
from ..layers.module import Parameter

__all__ = [
    "FALLBACK_REASONS",
    "Fallback",
    "FlatFallbackWarning",
    "FlatGroup",
    "PathStats",
    "Run",
    "build_groups",
    "is_trainable",
]


class FlatFallbackWarning(RuntimeWarning):
    """An optimizer stepped a parameter of the arena on its own (the slower path).

    Issued once per optimizer and reason, naming the parameter and the cause; every such event
    is counted in ``optimizer.path_stats.fallbacks``.
    """


FALLBACK_REASONS: dict[str, str] = {
    "rebound": (
        "its .data was rebound to another array, so it no longer views the arena's flat buffer "
        "and left it (write new values in place, p.data[...] = v, to keep the flat layout; a "
        "new optimizer, or model.arena(), packs it again)"
    ),
    "grad_assigned": (
        "its .grad was assigned an array that cannot be copied into the flat gradient buffer "
        "as it is (another shape, dtype, namespace or device)"
    ),
}
"""Why a parameter of the arena was stepped on its own, by the key counted in :class:`PathStats`."""


@dataclass(frozen=True)
class Fallback:
    """Why a parameter was stepped on its own: a key of :data:`FALLBACK_REASONS` and its index
    in the optimizer's list."""

    reason: str
    index: int


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
        Group steps on the flat path: one per flat group (a parameter group's members in one
        arena chunk) with something to update, per ``step()``, however many runs it took.
    runs : int
        Runs updated by those steps (a constant number of array calls each): equal to ``flat``
        while every member of every group has a gradient and one step count; more when some
        are skipped, frozen or have fallen behind.
    skipped : int
        Trainable members of flat groups that had no gradient at a step (skipped, as PyTorch
        does; the others stay on the flat path).
    fallbacks : Counter of str
        Parameters of the arena stepped on their own, by the reason key of
        :data:`FALLBACK_REASONS`: ``"rebound"`` counts each parameter once, when it leaves the
        arena (it is stepped per parameter from then on), ``"grad_assigned"`` each such step.
    unpacked : Counter of str
        Parameters never packed when the optimizer (or their group) was created, by reason:
        ``"no_views"`` (their namespace has no views: array-api-strict, JAX), ``"flat=False"``,
        or ``"frozen"`` (``requires_grad=False``; packed once they are unfrozen).
    copied_grads : int
        Gradients assigned by hand (``p.grad = g``) that a flat step copied into its gradient
        buffer (one array call each; ``accumulate_grad`` writes there directly).
    repacked : int
        Layout changes after creation: parameters unfrozen and packed, the arena re-laid out in
        this optimizer's order, groups rebuilt because their parameters moved (a few array
        calls per parameter, once per change).
    """

    flat: int = 0
    runs: int = 0
    skipped: int = 0
    fallbacks: Counter[str] = field(default_factory=Counter)
    unpacked: Counter[str] = field(default_factory=Counter)
    copied_grads: int = 0
    repacked: int = 0


Run: TypeAlias = "tuple[int, int, Any, frozenset[str]]"
"""``(first, stop, step count, state names)``: members ``first:stop`` of a :class:`FlatGroup`."""

_EMPTY: frozenset[str] = frozenset()

StateCheck: TypeAlias = "Callable[[Parameter, dict[str, Any], Namespace], None]"


class FlatGroup:
    """The members of one parameter group in one arena chunk, and the optimizer's flat state
    for them.

    Attributes
    ----------
    chunk : Chunk
    indices : list of int
        Positions of the members in the optimizer's parameter list, in arena order.
    slots : list of Slot
        Their slots, in the same order.
    param_group : int
        The optimizer's parameter group they belong to.
    contiguous : bool
        Whether the members are adjacent in the arena (then a step with every gradient present
        is one run, over views made once).
    state : dict of str to array (size,)
        The optimizer's flat state arrays; member ``k`` owns ``[offsets[k], offsets[k] +
        size_k)``, and its state dict holds the views of that range (``state_views``).
    """

    def __init__(self, chunk: Chunk, members: Sequence[tuple[int, Slot]],
                 param_group: int) -> None:
        ordered = sorted(members, key=lambda m: m[1].start)
        self.chunk = chunk
        self.xp: Namespace = chunk.xp
        self.param_group = param_group
        self.indices = [i for i, _ in ordered]
        self.slots = [s for _, s in ordered]
        self.key = group_key(ordered)
        # Adjacent members (the next starts where the chunk's padding after this one ends) are
        # as far apart in the flat state as in the arena, so a run of the arena is a run of
        # the state; the others are packed (at aligned offsets too).
        self._adjacent = [False] + [b.start == chunk.padded(a.stop)
                                    for a, b in zip(self.slots, self.slots[1:], strict=False)]
        self._loop = list(zip(self.indices, self.slots, self._adjacent, strict=True))
        self.contiguous = all(self._adjacent[1:])
        self.offsets: list[int] = [0] * len(self.slots)
        for k in range(1, len(self.slots)):
            prev, here = self.slots[k - 1], self.slots[k]
            gap = (here.start - prev.start if self._adjacent[k]
                   else chunk.padded(prev.stop) - prev.start)
            self.offsets[k] = self.offsets[k - 1] + gap
        last = self.slots[-1] if self.slots else None
        self.size = 0 if last is None else self.offsets[-1] + last.stop - last.start
        self._full: tuple[Array, Array] | None = None
        if self.contiguous and self.slots:
            a, b = self.slots[0].start, self.slots[-1].stop
            if a == 0 and b == chunk.data.shape[0]:
                self._full = (chunk.data, chunk.grad)
            else:
                self._full = (chunk.data[a:b], chunk.grad[a:b])
        self.state: dict[str, Array] = {}
        self.state_views: dict[str, list[Array]] = {}
        self._names: frozenset[str] = _EMPTY
        self._views = list(self.state_views.items())

    # ---------------------------------------------------------------- one step

    def runs(self, params: Sequence[Parameter], states: Sequence[dict[str, Any]],
             stats: PathStats, fallbacks: list[Fallback], check: StateCheck) -> list[Run] | None:
        """The runs to update this step, or None when the layout no longer holds (a member
        left or moved in the arena: the optimizer rebuilds its groups and asks again).

        Gradients assigned by hand are copied into their views here (``stats.copied_grads``),
        and state arrays that are not the group's views (loaded from a state dict, or made by
        the per-parameter path) into the flat state (after ``check`` accepts their placement).
        A member whose gradient cannot be copied is left to the per-parameter path, recorded
        in ``fallbacks``.
        """
        out: list[Run] = []
        first = -1  # the current run's first member (-1: none open)
        count: Any = None  # its step count
        sig = _EMPTY  # its state names
        names = self._names
        expected = len(names) + 1
        views = self._views
        xp = self.xp
        k = -1
        for i, slot, adjacent in self._loop:
            k += 1
            p = params[i]
            if p.slot is not slot or p.data is not slot.data:
                return None
            grad = p.grad
            if grad is not slot.grad or not p.requires_grad:
                if grad is None or not p.requires_grad:  # skipped, or frozen: in no run
                    if grad is None and p.requires_grad:
                        stats.skipped += 1
                    if first >= 0:
                        out.append((first, k, count, sig))
                        first = -1
                    continue
                if not fits(grad, slot.grad, xp):
                    fallbacks.append(Fallback("grad_assigned", i))
                    if first >= 0:
                        out.append((first, k, count, sig))
                        first = -1
                    continue
                # Assigned (p.grad = g) instead of accumulated: the same values, copied into
                # the flat gradient buffer, keep the member on its flat path.
                slot.grad[...] = grad
                p.grad = slot.grad
                stats.copied_grads += 1
            st = states[i]
            n = len(st)
            if n == expected:
                here = names
                for name, member_views in views:
                    if st.get(name) is not member_views[k]:
                        here = self._adopt(k, p, st, check)
                        names, expected, views = self._names, len(self._names) + 1, self._views
                        break
            elif n == 0:
                here = _EMPTY
            else:
                here = self._adopt(k, p, st, check)
                names, expected, views = self._names, len(self._names) + 1, self._views
            c = st.get("step", 0)
            if first >= 0:
                # One run: adjacent, the same state names and the same count (an int, or one
                # shared 0-d device count: told apart by identity, never read).
                if adjacent and here is sig and (c is count or (
                        c.__class__ is int and count.__class__ is int and c == count)):
                    continue
                out.append((first, k, count, sig))
            first, count, sig = k, c, here
        if first >= 0:
            out.append((first, len(self._loop), count, sig))
        return out

    def apply(self, run: Run, count: Any, update: Callable[..., Array],
              hyper: Mapping[str, Any], states: Sequence[dict[str, Any]]) -> None:
        """Update the members of ``run`` in place with ``update`` (the optimizer's rule) at
        step count ``count`` (this update included), and give them their new step count and
        views of any state the rule created."""
        first, stop, _, names = run
        if first == 0 and stop == len(self.slots) and self._full is not None:
            data, grad = self._full  # the whole group: views made once
            lo = hi = -1
            sliced = self.state if names is self._names else {n: self.state[n] for n in names}
        else:
            a, b = self.slots[first].start, self.slots[stop - 1].stop
            lo = self.offsets[first]
            hi = lo + (b - a)
            data, grad = self.chunk.data[a:b], self.chunk.grad[a:b]
            sliced = {name: self.state[name][lo:hi] for name in names}
        held = dict(sliced)
        out = update(data, grad, held, count, self.xp, hyper)
        if out is not data:  # a rule that returns a new array instead of updating in place
            data[...] = out
        if held:
            self._store(held, sliced, first, stop, lo, hi, states)
        for i in self.indices if lo < 0 else self.indices[first:stop]:
            states[i]["step"] = count

    def _store(self, held: dict[str, Array], sliced: Mapping[str, Array], first: int, stop: int,
               lo: int, hi: int, states: Sequence[dict[str, Any]]) -> None:
        """Put the state the rule returned where it belongs: new state (first step, AMSGrad
        turned on) into the flat state, with views for the run's members; a rebound array
        copied back."""
        for name, value in held.items():
            target = sliced.get(name)
            if target is None:  # state the rule created for these members
                if name not in self.state:
                    self._add_name(name)
                target = self.state[name] if lo < 0 else self.state[name][lo:hi]
                member_views = self.state_views[name]
                for k in range(first, stop):
                    states[self.indices[k]][name] = member_views[k]
            if value is not target:
                target[...] = value

    # ---------------------------------------------------------------- state layout

    def _add_name(self, name: str) -> None:
        """A flat state array ``name`` (zeros: what every rule starts from) and its views."""
        xp, data = self.xp, self.chunk.data
        flat = xp.zeros((self.size,), dtype=data.dtype, device=device(data))
        self.state[name] = flat
        self.state_views[name] = [
            xp.reshape(flat[lo:lo + s.stop - s.start], s.shape)
            for lo, s in zip(self.offsets, self.slots, strict=True)
        ]
        self._names = frozenset(self.state)
        self._views = list(self.state_views.items())

    def _adopt(self, k: int, p: Parameter, st: dict[str, Any], check: StateCheck) -> frozenset[str]:
        """Copy member ``k``'s state arrays that are not the group's views into the flat state
        (once: then they are views); returns the names it holds."""
        for name in [n for n in st if n != "step"]:
            value = st[name]
            if name not in self.state_views:
                self._add_name(name)
            view = self.state_views[name][k]
            if value is not view:
                check(p, {name: value}, self.xp)
                view[...] = value
                st[name] = view
        held = frozenset(n for n in st if n != "step")
        return self._names if held == self._names else held

    def release(self, i: int, st: dict[str, Any]) -> None:
        """Give member ``i`` copies of its state views (it leaves the group), so that the flat
        state is not kept alive through it."""
        k = self.indices.index(i)
        xp = self.xp
        for name, member_views in self.state_views.items():
            if st.get(name) is member_views[k]:
                st[name] = xp.asarray(member_views[k], copy=True)


def group_key(members: Sequence[tuple[int, Slot]]) -> tuple[tuple[int, int], ...]:
    """What identifies a group's layout: its members and their slots."""
    return tuple(sorted((i, id(s)) for i, s in members))


def build_groups(members: Sequence[tuple[int, Slot]], group_of: Sequence[int],
                 old: Sequence[FlatGroup] = ()) -> list[FlatGroup]:
    """One :class:`FlatGroup` per (arena chunk, parameter group) of ``members`` (index, slot);
    a group of ``old`` whose members and slots are unchanged is kept, with its state."""
    by_key: dict[tuple[int, int], tuple[Chunk, list[tuple[int, Slot]]]] = {}
    for i, slot in members:
        by_key.setdefault((id(slot.chunk), group_of[i]), (slot.chunk, []))[1].append((i, slot))
    kept = {g.key: g for g in old}
    out = []
    for (_, group), (chunk, ms) in by_key.items():
        same = kept.get(group_key(ms))
        out.append(same if same is not None and same.param_group == group
                   else FlatGroup(chunk, ms, group))
    return out
