"""The parameter arena: flat storage that parameters view, shared by every optimizer.

What it is
----------
An :class:`Arena` holds the values and gradients of parameters in a few flat buffers: one
:class:`Chunk` per (namespace, device, dtype) and per packing, each with one flat ``data``
buffer and one flat ``grad`` buffer. Every packed parameter has a :class:`Slot`
(``Parameter.slot``): its chunk, its range ``[start, stop)`` in both buffers and the two views
of that range in the parameter's shape. ``p.data`` *is* the data view and the first gradient
after ``zero_grad`` is written into the gradient view (``p.grad_buffer``; ``Linear`` writes its
products there directly), so the whole model's gradient is one flat array per chunk.

Who uses it: every optimizer over any of the parameters (a step is a constant number of array
calls per contiguous run of its parameters, see :mod:`nnbackend.optim._flat`),
:func:`~nnbackend.optim.clip_grad_norm` (one global norm in O(1) array calls per chunk: the sum
of squares of the flat gradient buffer) and, later, a data-parallel all-reduce (one collective
per chunk's gradient buffer, ``arena.grads()``). Storage and optimizer state are separate: the
arena holds parameters and gradients only; each optimizer keeps its state (momentum, Adam's
moments) in flat arrays of its own, aligned to its parameters' ranges.

Who creates it
--------------
``model.arena()`` returns the model's arena, created on the first call, packing every parameter
of the model that can be packed (see below), in the model's order; later calls pack what has
become packable since (parameters unfrozen, added, or rebound and so released) into new chunks.
An optimizer packs the parameters it is given that are in no arena yet, into the arena of its
other parameters if they have one, else into a new arena, in its own order (group after group,
so each parameter group is one contiguous run); a later ``model.arena()`` adopts that arena
(the one that holds the model's parameters) instead of creating a second one. Parameters record
their slot, so a second optimizer, ``clip_grad_norm`` and ``model.arena()`` find the storage
through the parameters alone. When an optimizer finds one of its parameter groups split into
several runs of a chunk (the arena was laid out by someone else in another order: AdamW's
weights and biases interleaved in module order), it re-lays the chunk out once in its own order
(:meth:`Arena.relayout`; other optimizers rebuild their layout at their next step, a few copies).
Packing and re-laying out rebind ``p.data`` to new views, as creating an optimizer always did:
hold parameters, not their ``.data``, across the creation of an optimizer.

Semantics
---------
=================================  ============================================================
situation                          what happens
=================================  ============================================================
optimizer over all parameters      one chunk per (namespace, device, dtype); each parameter
                                   group is one run: a step is a constant number of array calls
optimizer over a subset            its runs in the shared chunks; its state is the size of the
                                   subset, not of the arena
two optimizers, same parameters    one storage; each has its own state; both step flat (no
                                   "other optimizer" fallback any more)
parameter groups                   one run per (group, chunk); each group's hyperparameters
                                   apply to its runs
frozen when packed                 not packed (a frozen backbone costs no gradient buffer);
                                   packed into a chunk of its own once unfrozen
frozen after packing               stays in its slot; no run covers it (it splits a run in
                                   two): never moved, not even by weight decay
no gradient in a step              skipped, as PyTorch does (its state and step count stay);
                                   the others are updated in the runs around it; afterwards its
                                   step count differs, so it is a run of its own (Adam's bias
                                   correction is one number per run)
gradient assigned by hand          copied into its view when it fits (``copied_grads``); one of
                                   another dtype or device: that parameter alone is stepped per
                                   parameter that step (``fallbacks['grad_assigned']``, warned)
``p.data`` rebound (``p.data = x``,  the parameter leaves the arena, counted once
``Module.to``)                     (``arena.stats.left['rebound']``) and is stepped per
                                   parameter from then on (each optimizer warns once); the next
                                   ``model.arena()`` or a new optimizer packs it again
``load_state_dict``, ``gradcheck``  write values in place: the layout holds
optimizer state loaded             copied into the optimizer's flat state at its next step
namespaces without views           nothing is packed (array-api-strict promises no views, JAX
(array-api-strict, JAX)            arrays are immutable): the per-parameter path is the design
                                   there; recorded in ``arena.unpacked['no_views']`` and the
                                   optimizers' ``path_stats.unpacked``, logged once per library
=================================  ============================================================

Why here
--------
The arena is the model's storage (``Parameter.slot``, ``Module.arena()``), so it lives in
``nnbackend.layers``: optimizers, clipping and the distributed code depend on it, never the
reverse. Gradients and values share one layout so that a run of parameters is a run of both.
Runs rather than masks: a parameter without a gradient is left out of the update by slicing
around it (the same arithmetic on the same elements, so bit for bit the per-parameter
reference path's), where a zero-gradient mask would still move it by weight decay or momentum.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from array_api_compat import device

from .._checks import namespace_of, same_device
from .._libraries import library_of
from .._typing import Array, Namespace
from ..backend import dtype_name, supports_views

if TYPE_CHECKING:
    from .module import Module, Parameter

__all__ = [
    "ALIGN_BYTES",
    "Arena",
    "ArenaStats",
    "Chunk",
    "Slot",
    "fits",
    "live_slot",
    "module_arena",
    "report_no_views",
]

_log = logging.getLogger(__name__)

ALIGN_BYTES = 64
"""Every slot starts at a multiple of this many bytes from its chunk's start, as a separately
allocated array would (PyTorch aligns its CPU allocations to 64 bytes): BLAS libraries may
round differently at other alignments (MKL's GEMM does, for an output 8 bytes off), so aligned
slots keep a model's forward and backward bit for bit those of unpacked parameters, and give
vector units (AVX-512) and GPU kernels the alignment they load fastest."""
_LOGGED_LIBRARIES: set[str] = set()


class Slot:
    """Where one parameter lives in its :class:`Chunk`.

    Attributes
    ----------
    param : Parameter
    chunk : Chunk
    start, stop : int
        Its range in the chunk's flat buffers.
    shape : tuple of int
    data, grad : array
        The views of ``chunk.data[start:stop]`` and ``chunk.grad[start:stop]`` in ``shape``:
        ``param.data`` while the parameter is packed, and where its gradient is accumulated.
    """

    __slots__ = ("chunk", "data", "grad", "param", "shape", "start", "stop")

    def __init__(self, param: Parameter, chunk: Chunk, start: int, stop: int,
                 shape: tuple[int, ...], data: Array, grad: Array) -> None:
        self.param = param
        self.chunk = chunk
        self.start = start
        self.stop = stop
        self.shape = shape
        self.data = data
        self.grad = grad

    def __repr__(self) -> str:
        return f"Slot({self.param.name!r}, [{self.start}:{self.stop}], shape={self.shape})"


class Chunk:
    """One flat data buffer and one flat gradient buffer for parameters of one namespace,
    device and dtype, packed together.

    Attributes
    ----------
    arena : Arena
    xp : namespace
    data, grad : array (n,)
        The flat values and gradients; each slot's views are basic slices of them.
    slots : list of Slot
        The parameters still packed here, in offset order.
    holes : int
        Slots given up since packing (parameters that left or moved): their ranges are no
        longer anyone's, so the whole buffer stands for the parameters only while this is 0.
    align : int
        Every slot starts at a multiple of ``align`` elements (:data:`ALIGN_BYTES`); the
        padding between two slots is zeros in both buffers, and stays so under every update
        rule of the package (a zero gradient with zero state moves nothing).
    """

    def __init__(self, arena: Arena, xp: Namespace, params: Sequence[Parameter]) -> None:
        self.arena = arena
        self.xp = xp
        ref = params[0].data
        self.align: int = max(1, ALIGN_BYTES * 8 // int(xp.finfo(ref.dtype).bits))
        ranges = []
        start = 0
        for p in params:
            stop = start + math.prod(p.shape)
            ranges.append((start, stop))
            start = self.padded(stop)
        n = ranges[-1][1]
        self.data: Array = xp.zeros((n,), dtype=ref.dtype, device=device(ref))
        self.grad: Array = xp.zeros((n,), dtype=ref.dtype, device=device(ref))
        self.holes = 0
        self.slots: list[Slot] = []
        for p, (start, stop) in zip(params, ranges, strict=True):
            shape = p.shape
            slot = Slot(p, self, start, stop, shape, xp.reshape(self.data[start:stop], shape),
                        xp.reshape(self.grad[start:stop], shape))
            self.slots.append(slot)
        for slot in self.slots:
            _move_into(slot, xp)

    def padded(self, stop: int) -> int:
        """Where a slot after one that ends at ``stop`` starts: the next multiple of
        :attr:`align` (two slots are adjacent when the second starts there)."""
        return -(-stop // self.align) * self.align

    @property
    def key(self) -> tuple[str, str, str]:
        """(library, device, dtype) of the chunk's buffers, for messages and reports."""
        return (library_of(self.xp).name, repr(device(self.data)), dtype_name(self.data.dtype))

    def remove(self, slot: Slot) -> None:
        """Give up ``slot`` (its parameter left or moved); a chunk left empty is dropped."""
        self.slots.remove(slot)
        self.holes += 1
        if not self.slots and self in self.arena.chunks:
            self.arena.chunks.remove(self)

    def __repr__(self) -> str:
        lib, dev, dtype = self.key
        return (f"Chunk({lib} on {dev}, {dtype}, {len(self.slots)} parameters, "
                f"{self.data.shape[0]} elements, {self.holes} holes)")


def _move_into(slot: Slot, xp: Namespace) -> None:
    """Copy the parameter's value (and its gradient, when one fits) into ``slot`` and make the
    parameter view it; a slot it had before is given up."""
    p = slot.param
    old = p.slot
    slot.data[...] = p.data
    grad = p.grad
    p.data = slot.data  # clears grad_buffer (it matched the old array)
    if grad is not None and fits(grad, slot.grad, xp):
        slot.grad[...] = grad
        p.grad = slot.grad
    p.grad_buffer = slot.grad
    p.slot = slot
    if old is not None and old is not slot:
        old.chunk.remove(old)


def fits(x: Array, view: Array, xp: Namespace) -> bool:
    """Whether ``x`` can be copied into ``view`` as it is (no cast, no transfer)."""
    return bool(
        namespace_of(x) is xp and tuple(x.shape) == tuple(view.shape) and x.dtype == view.dtype
        and same_device(x, view, xp)
    )


@dataclass
class ArenaStats:
    """What happened to an arena's parameters.

    Attributes
    ----------
    packed : int
        Parameters packed (moves between chunks by :meth:`Arena.relayout` included).
    left : Counter of str
        Parameters that left the arena, by reason: ``"rebound"`` (their ``.data`` was rebound
        to another array: ``p.data = x``, ``Module.to``), counted once each, when noticed.
    relayouts : int
        Chunks re-laid out in an optimizer's order (:meth:`Arena.relayout`).
    """

    packed: int = 0
    left: Counter[str] = field(default_factory=Counter)
    relayouts: int = 0


class Arena:
    """Flat storage for parameters: one data and one gradient buffer per chunk (see the module
    docstring for the design and its semantics).

    Parameters
    ----------
    params : iterable of Parameter, optional
        Parameters to pack now (:meth:`add`).

    Attributes
    ----------
    chunks : list of Chunk
    stats : ArenaStats
    """

    def __init__(self, params: Iterable[Parameter] = ()) -> None:
        self.chunks: list[Chunk] = []
        self.stats = ArenaStats()
        self._unpacked: dict[int, tuple[Parameter, str]] = {}
        self.add(params)

    def add(self, params: Iterable[Parameter], *, move: bool = False) -> list[Parameter]:
        """Pack ``params``, in their order, into new chunks (one per namespace, device, dtype).

        Parameters already packed (here or in another arena) stay where they are, unless
        ``move``: then they are moved into the new chunks (their old slots become holes).
        Parameters of namespaces without views and frozen ones are not packed: they are
        recorded in :attr:`unpacked` (a frozen one is packed by a later call once unfrozen).
        A parameter whose data was rebound first leaves its old slot (counted in
        ``stats.left``). Returns the parameters packed.
        """
        groups: dict[tuple[int, str, str], tuple[Namespace, list[Parameter]]] = {}
        seen: set[int] = set()
        for p in params:
            if id(p) in seen:
                continue
            seen.add(id(p))
            slot = live_slot(p)
            if slot is not None and not move:
                continue
            xp = namespace_of(p.data)
            reason = _unpackable(p, xp)
            if reason is not None and slot is None:
                self._unpacked[id(p)] = (p, reason)
                continue
            self._unpacked.pop(id(p), None)
            key = (id(xp), repr(device(p.data)), str(p.data.dtype))
            groups.setdefault(key, (xp, []))[1].append(p)
        packed: list[Parameter] = []
        for xp, members in groups.values():
            self.chunks.append(Chunk(self, xp, members))
            packed.extend(members)
        self.stats.packed += len(packed)
        return packed

    def relayout(self, first: Sequence[Parameter]) -> None:
        """Re-pack the chunks that hold any of ``first`` so that these come first, contiguous,
        in the order given, followed by the chunks' other parameters in their order.

        Values and gradients held in the old views are copied; the old chunks are dropped.
        Optimizers over the moved parameters rebuild their layout at their next step (their
        state is copied into arrays aligned to the new ranges, once).
        """
        ids = {id(p) for p in first}
        affected = [c for c in self.chunks if any(id(s.param) in ids for s in c.slots)]
        if not affected:
            return
        chunk_ids = {id(c) for c in affected}
        leading = [p for p in first
                   if (s := live_slot(p)) is not None and id(s.chunk) in chunk_ids]
        lead_ids = {id(p) for p in leading}
        rest = [s.param for c in affected for s in c.slots if id(s.param) not in lead_ids]
        self.add([*leading, *rest], move=True)
        self.stats.relayouts += len(affected)

    def sync(self) -> int:
        """Release the parameters whose data was rebound since they were packed (each counted
        once in ``stats.left``); returns how many left."""
        departed = [s.param for c in self.chunks for s in c.slots if s.param.data is not s.data]
        for p in departed:
            live_slot(p)
        return len(departed)

    @property
    def unpacked(self) -> Counter[str]:
        """Parameters offered to :meth:`add` and not packed, by reason: ``"no_views"`` (their
        namespace has none: array-api-strict, JAX), ``"frozen"`` or ``"not_floating"``."""
        return Counter(reason for p, reason in self._unpacked.values() if live_slot(p) is None)

    def parameters(self) -> list[Parameter]:
        """The packed parameters, chunk after chunk, in offset order."""
        return [s.param for c in self.chunks for s in c.slots]

    def grads(self) -> list[Array]:
        """The chunks' flat gradient buffers (what a data-parallel all-reduce sums)."""
        return [c.grad for c in self.chunks]

    def __contains__(self, p: object) -> bool:
        slot = getattr(p, "slot", None)
        return isinstance(slot, Slot) and slot.chunk.arena is self and slot.param.data is slot.data

    def __iter__(self) -> Iterator[Chunk]:
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)

    def __repr__(self) -> str:
        n = sum(len(c.slots) for c in self.chunks)
        size = sum(c.data.shape[0] for c in self.chunks)
        unpacked = dict(self.unpacked)
        extra = f", unpacked {unpacked}" if unpacked else ""
        return f"Arena({len(self.chunks)} chunks, {n} parameters, {size} elements{extra})"


def live_slot(p: Parameter) -> Slot | None:
    """``p``'s slot while ``p.data`` still views it, else None.

    A parameter whose data was rebound (``p.data = x``, ``Module.to``) leaves its arena here,
    the first time anyone looks (counted once in the arena's ``stats.left["rebound"]``): its
    range becomes a hole and it takes its gradients as they come again.
    """
    slot = p.slot
    if slot is None:
        return None
    if p.data is slot.data:
        return slot
    p.slot = None
    if p.grad_buffer is slot.grad:
        p.grad_buffer = None
    chunk = slot.chunk
    chunk.remove(slot)
    chunk.arena.stats.left["rebound"] += 1
    return None


def _unpackable(p: Parameter, xp: Namespace) -> str | None:
    """Why ``p`` cannot be packed now, or None."""
    if not supports_views(xp):
        report_no_views(xp)
        return "no_views"
    if not xp.isdtype(p.data.dtype, "real floating"):
        return "not_floating"  # optimizers refuse them; a flat buffer has one floating dtype
    if not p.requires_grad:
        return "frozen"
    return None


def report_no_views(xp: Namespace) -> None:
    """Log, once per library, that its parameters take the per-parameter path by design (the
    namespace has no mutable views: nothing can be packed)."""
    name = library_of(xp).name
    if name not in _LOGGED_LIBRARIES:
        _LOGGED_LIBRARIES.add(name)
        _log.info(
            "nnbackend: %s arrays have no mutable views: parameters stay separate arrays and "
            "optimizers step them one at a time (the per-parameter path)", name)


def module_arena(module: Module) -> Arena:
    """``module.arena()``: the module's arena, created on first need.

    On the first call it adopts the arena that already holds most of the module's parameters
    (an optimizer's), or creates one; every call then releases parameters whose data was
    rebound, packs the module's packable parameters that are in no arena (in the module's
    order) and moves in those packed in another arena, so that the arena holds all of them.
    """
    params = module.parameters()
    arena: Arena | None = module.__dict__.get("_arena")
    if arena is None:
        owners: Counter[int] = Counter()
        by_id: dict[int, Arena] = {}
        for p in params:
            slot = live_slot(p)
            if slot is not None:
                owners[id(slot.chunk.arena)] += 1
                by_id[id(slot.chunk.arena)] = slot.chunk.arena
        arena = by_id[owners.most_common(1)[0][0]] if owners else Arena()
        module.__dict__["_arena"] = arena
    arena.sync()
    foreign = [p for p in params
               if (s := live_slot(p)) is not None and s.chunk.arena is not arena]
    arena.add(params)
    if foreign:
        arena.add(foreign, move=True)
    return arena
