"""``DistributedDataParallel``: one replica of the model per rank, gradients summed over ranks.

One training step on rank r of N, with its shard of n_r rows of a global batch of B rows::

    y, backprop = ddp.forward(x_r)        # B = Σ n_r: one host all-reduce of the row counts
    loss, dy = loss_fn(y, y_r)            # the mean over this rank's n_r rows
    optimizer.zero_grad(); backprop(dy)   # local backward on dy·n_r/B, then Σ over the ranks
    optimizer.step()                      # the same update on every rank

Why dy·n_r/B rather than a mean of per-rank gradients: each rank's loss is a mean over its own
rows, so ∂L/∂θ of the global mean loss L = (1/B) Σ_i ℓ_i is Σ_r (n_r/B) g_r, which a plain mean
(1/N) Σ_r g_r equals only when every shard has B/N rows (the last batch of an epoch rarely
does). Scaling ∂L/∂y before the backward, instead of the gradients after it, makes every
quantity of the backward pass a part of the global loss's gradient, which is what synchronised
batch normalisation sums over the ranks. For a loss with ``reduction="sum"`` the weight is 1.

The sum is one collective per chunk of the model's flat parameter arena
(:mod:`nnbackend.layers.arena`): usually one all-reduce of one flat gradient buffer per step,
and a concatenation of the parameters' gradients into one buffer where the namespace has no
views (array-api-strict, JAX). Every rank starts from rank 0's parameters, buffers, random
stream counters and optimizer state (:meth:`DistributedDataParallel.broadcast_state`), and the
all-reduce gives every rank bit-identical sums, so the replicas stay identical.

What each piece of state does
-----------------------------
=================================  ============================================================
state                              across the ranks
=================================  ============================================================
parameters, optimizer state        broadcast from rank 0 at the start (and after a resume);
                                   then identical because every rank applies the same update
                                   to the same summed gradient
gradients                          Σ_r n_r g_r / B after every backward (unless ``no_sync``)
batch statistics (BatchNorm)       per rank, of the rank's own rows (PyTorch DDP's default);
                                   ``SyncBatchNorm`` for statistics over the global batch
running statistics (buffers)       ``broadcast_buffers=True`` (default): rank 0's broadcast
                                   after every training forward, as PyTorch DDP broadcasts
                                   rank 0's buffers, so every rank holds rank 0's; with
                                   ``SyncBatchNorm`` they are the global batch's on every rank
dropout masks                      rank r draws the replica-r stream of each layer's
                                   generator: streams derived from (seed, rank, counter); the
                                   saved state (seed, stream, counter) is the same on every
                                   rank, so rank 0's checkpoint restores all of them
parameters without a gradient      ``find_unused_parameters=False`` (default): an error naming
                                   them, as PyTorch DDP raises; ``True``: one more small
                                   all-reduce of "used" flags per step; a parameter used on no
                                   rank keeps no gradient (the optimizer skips it), one used on
                                   some ranks gets the weighted sum with zeros from the others
=================================  ============================================================

Gradient clipping belongs after the all-reduce, i.e. after ``backprop(dy)``, as in a
single-process loop: every rank then clips the same summed gradient by the same norm.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .._checks import namespace_of
from .._typing import Array, Backprop
from ..backend import backend_of, dtype_name, supports_views
from ..layers.arena import live_slot
from ..layers.module import Context, Module, Parameter
from .comm import Communicator, store_into

__all__ = ["DistributedDataParallel", "ModelMismatchError"]


class ModelMismatchError(ValueError):
    """The ranks hold different models (architecture, parameter shapes, dtype, backend or
    optimizer): raised on every rank at once, naming the first difference."""


class DistributedDataParallel(Module):
    """Data-parallel training of ``module`` over the ranks of ``comm``.

    Parameters
    ----------
    module : Module
        This rank's replica. Every rank builds the same architecture on the same backend and
        dtype (checked here: :class:`ModelMismatchError` otherwise); its values are replaced by
        rank 0's.
    optimizer : Optimizer, optional
        Its state is broadcast from rank 0 too (hyperparameters, step counts, moments).
    comm : Communicator, optional
        The group (:func:`nnbackend.distributed.init`); default the initialised world.
    broadcast_buffers : bool
        Broadcast rank 0's buffers (running statistics) after every training forward.
    find_unused_parameters : bool
        Allow parameters that get no gradient in a step on some ranks (see the module
        docstring); False raises for them, naming them.
    reduction : {"mean", "sum"}
        How the loss reduces over a batch: "mean" weights rank r's gradient by n_r / B, "sum"
        by 1.

    Attributes
    ----------
    module : Module
    comm : Communicator
    last_global_batch : int
        B of the last training forward.

    Notes
    -----
    ``state_dict()`` holds the replica's entries under ``module.`` (PyTorch's layout for a
    wrapped model); save ``ddp.module`` to write a checkpoint any single process can load.
    The first axis of the input is the batch axis (its length is n_r).
    """

    module: Module
    comm: Communicator
    broadcast_buffers: bool
    find_unused_parameters: bool
    reduction: str
    last_global_batch: int
    _sync: bool

    def __init__(
        self,
        module: Module,
        optimizer: Any = None,
        *,
        comm: Communicator | None = None,
        broadcast_buffers: bool = True,
        find_unused_parameters: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if not isinstance(module, Module):
            msg = f"DistributedDataParallel: expected a Module, got {type(module).__name__}"
            raise TypeError(msg)
        if reduction not in ("mean", "sum"):
            msg = f"DistributedDataParallel: reduction must be 'mean' or 'sum', got {reduction!r}"
            raise ValueError(msg)
        if comm is None:
            from .world import world

            comm = world()
        self.module = module
        self.comm = comm
        self.broadcast_buffers = bool(broadcast_buffers)
        self.find_unused_parameters = bool(find_unused_parameters)
        self.reduction = reduction
        self.last_global_batch = 0
        self._sync = True
        self.training = module.training
        module.arena()  # the parameters packed: one flat gradient buffer to all-reduce
        check_same_model(module, optimizer, comm)
        _bind_sync_batch_norms(module, comm)
        from ..random import set_replicas

        set_replicas(module, comm.rank)
        self.broadcast_state(optimizer)

    # ---------------------------------------------------------------- state

    def broadcast_state(self, optimizer: Any = None, schedulers: Sequence[Any] = ()) -> None:
        """Make every rank hold rank 0's parameters, buffers, extra state (random stream
        counters) and, given ``optimizer`` and ``schedulers``, their state (hyperparameters
        and learning rates included): at the start, and after rank 0 (or every rank) loaded a
        checkpoint. Schedules are not known to the constructor: pass them here after loading
        their state on rank 0 only (or load it on every rank)."""
        comm, module = self.comm, self.module
        if comm.size == 1:
            return
        for chunk, loose in _parameter_buckets(module.parameters(), values=True):
            if chunk is not None:
                comm.broadcast([chunk.data])
            else:
                _broadcast_loose(loose, comm)
        _broadcast_buffers(module, comm)
        extra = comm.broadcast_object(module.extra_state_dict() if comm.is_root else None)
        if not comm.is_root:
            module.load_extra_state_dict(extra)
        if optimizer is not None:
            state = comm.broadcast_object(optimizer.state_dict() if comm.is_root else None)
            if not comm.is_root:
                optimizer.load_state_dict(state)
        for schedule in schedulers:
            saved = comm.broadcast_object(schedule.state_dict() if comm.is_root else None)
            if not comm.is_root:
                schedule.load_state_dict(saved)

    # ---------------------------------------------------------------- the protocol

    def forward(self, x: Any, *, input_grad: bool = False) -> tuple[Any, Backprop]:
        """Training forward of this rank's shard; ``backprop(dy)`` runs the local backward on
        dy·n_r/B and sums the gradients over the ranks (not inside :meth:`no_sync`)."""
        comm = self.comm
        first = x[0] if isinstance(x, tuple) else x
        n_local = int(first.shape[0])
        if comm.size > 1:
            total = int(comm.all_reduce_host(np.asarray([n_local], dtype=np.int64))[0])
        else:
            total = n_local
        self.last_global_batch = total
        if total == 0:
            msg = "DistributedDataParallel: the global batch has no rows on any rank"
            raise ValueError(msg)
        y, local_backprop = self.module.forward(x, input_grad=input_grad)
        if self.training and self.broadcast_buffers and comm.size > 1:
            _broadcast_buffers(self.module, comm)
        weight = 1.0 if self.reduction == "sum" else n_local / total
        sync = self._sync

        def backprop(dy: Any) -> Any:
            dx = local_backprop(dy if weight == 1.0 else _scaled(dy, weight))
            if sync:
                self.reduce_gradients()
            return dx

        return y, backprop

    def forward_pass(self, x: Any, ctx: Context) -> tuple[Any, Backprop]:
        return self.forward(x, input_grad=ctx.input_grad)

    def __call__(self, x: Any) -> Any:
        return self.module(x)

    def infer(self, x: Any, ctx: Context) -> Any:
        return self.module.infer(x, ctx)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backward passes in this block accumulate local gradients only (no all-reduce);
        the first backward after it sums everything accumulated (gradient accumulation)."""
        before = self._sync
        self._sync = False
        try:
            yield
        finally:
            self._sync = before

    def reduce_gradients(self) -> None:
        """Σ over the ranks of every parameter's gradient (called by ``backprop``; call it
        yourself only after backward passes run on ``ddp.module`` directly)."""
        comm = self.comm
        params = [p for p in self.module.parameters() if p.requires_grad]
        if comm.size == 1:
            return
        used = [p.grad is not None for p in params]
        if self.find_unused_parameters:
            counts = comm.all_reduce_host(np.asarray(used, dtype=np.int64))
            wanted = [bool(c) for c in counts]
        else:
            if not all(used):
                names = [name for (name, p) in self.module.named_parameters()
                         if p.requires_grad and p.grad is None]
                msg = (
                    f"DistributedDataParallel (rank {comm.rank}): parameters {names} got no "
                    "gradient in this step; every rank must reduce the same gradients. Pass "
                    "find_unused_parameters=True when some parameters take no part in a step, "
                    "or freeze them (requires_grad_(False))"
                )
                # raised on this rank alone, as PyTorch DDP's error: the others then wait in
                # the all-reduce until the abort hook of nnbackend.distributed.init ends the job
                raise RuntimeError(msg)
            wanted = used
        reduced = [p for p, w in zip(params, wanted, strict=True) if w]
        for p, u, w in zip(params, used, wanted, strict=True):
            if w and not u:
                _zero_grad_of(p)
        for chunk, loose in _parameter_buckets(reduced, values=False):
            if chunk is not None:
                out = comm.all_reduce([chunk.grad])[0]
                if out is not chunk.grad:
                    chunk.grad[...] = out
            else:
                _all_reduce_loose(loose, comm)

    def extra_repr(self) -> str:
        return f"rank={self.comm.rank}, world_size={self.comm.size}"

    def __repr__(self) -> str:
        return f"DistributedDataParallel({self.module!r}, {self.extra_repr()})"


# ------------------------------------------------------------------------------------ helpers


def _scaled(dy: Any, weight: float) -> Any:
    """dy·weight (a tuple of gradients scaled element by element; None stays None)."""
    if isinstance(dy, tuple):
        return tuple(None if d is None else d * weight for d in dy)
    return dy * weight


def _zero_grad_of(p: Parameter) -> None:
    """A zero gradient for a parameter this rank did not use (its share of the sum)."""
    xp = namespace_of(p.data)
    buffer = p.grad_buffer
    if buffer is not None and supports_views(xp):
        buffer[...] = 0
        p.grad = buffer
    else:
        p.grad = xp.zeros_like(p.data)


def _parameter_buckets(params: Sequence[Parameter], *, values: bool
                       ) -> list[tuple[Any, list[Parameter]]]:
    """The collective calls that cover ``params``: ``(chunk, [])`` for a chunk of the arena
    whose flat buffer holds them (one call for the whole buffer), ``(None, loose)`` for the
    parameters outside any chunk (concatenated into one call per namespace and dtype).

    For gradients (``values=False``), a packed parameter whose gradient was assigned to an
    array of its own (not its slot's view) is loose, so nothing is left out.
    """
    chunks: dict[int, Any] = {}
    loose: dict[tuple[int, str], list[Parameter]] = {}
    for p in params:
        slot = live_slot(p)
        if slot is not None and (values or p.grad is slot.grad):
            chunks.setdefault(id(slot.chunk), slot.chunk)
            continue
        xp = namespace_of(p.data)
        loose.setdefault((id(xp), dtype_name(p.data.dtype)), []).append(p)
    return [(c, []) for c in chunks.values()] + [(None, group) for group in loose.values()]


def _flat(arrays: Sequence[Array]) -> Array:
    xp = namespace_of(arrays[0])
    return xp.concat([xp.reshape(a, (-1,)) for a in arrays])


def _pieces(flat: Array, shapes: Sequence[tuple[int, ...]]) -> list[Array]:
    xp = namespace_of(flat)
    out, start = [], 0
    for shape in shapes:
        stop = start + math.prod(shape)
        out.append(xp.reshape(flat[start:stop], shape))
        start = stop
    return out


def _all_reduce_loose(params: Sequence[Parameter], comm: Communicator) -> None:
    grads = [p.grad for p in params]
    flat = comm.all_reduce([_flat(grads)])[0]
    for p, g, piece in zip(params, grads, _pieces(flat, [tuple(p.shape) for p in params]),
                           strict=True):
        p.grad = store_into(g, piece)


def _broadcast_loose(params: Sequence[Parameter], comm: Communicator) -> None:
    flat = comm.broadcast([_flat([p.data for p in params])])[0]
    if comm.is_root:
        return
    for p, piece in zip(params, _pieces(flat, [tuple(p.shape) for p in params]), strict=True):
        xp = namespace_of(p.data)
        if supports_views(xp):
            p.data[...] = piece
        else:
            p.data = xp.asarray(piece, copy=True)


def _broadcast_buffers(module: Module, comm: Communicator) -> None:
    """Rank 0's buffers on every rank: one broadcast per dtype of them."""
    owners: dict[str, list[tuple[Module, str, Array]]] = {}
    for _, owner in module.named_modules():
        for name, value in owner.__dict__["_buffers"].items():
            if value is not None:
                owners.setdefault(dtype_name(value.dtype), []).append((owner, name, value))
    for entries in owners.values():
        arrays = [value for _, _, value in entries]
        flat = comm.broadcast([_flat(arrays)])[0]
        if comm.is_root:
            continue
        for (owner, name, value), piece in zip(
                entries, _pieces(flat, [tuple(a.shape) for a in arrays]), strict=True):
            xp = namespace_of(value)
            if supports_views(xp):
                value[...] = piece
            else:
                setattr(owner, name, xp.asarray(piece, copy=True))


# ------------------------------------------------------------------------------ model checks


def _sync_batch_norms(module: Module) -> list[tuple[str, Any]]:
    from ..layers.normalization import SyncBatchNorm

    return [(name or "<root>", m) for name, m in module.named_modules()
            if isinstance(m, SyncBatchNorm)]


def _bind_sync_batch_norms(module: Module, comm: Communicator) -> None:
    """Every SyncBatchNorm sums over the wrapper's group: one without a communicator of its
    own is given it (else it would sum over the job's world, another group than a wrapper's
    sub-communicator or a LocalGroup's)."""
    for _, m in _sync_batch_norms(module):
        if m.comm is None:
            m.comm = comm


def fingerprint(module: Module, optimizer: Any = None, comm: Communicator | None = None
                ) -> dict[str, Any]:
    """What must agree between the ranks: backend, the module tree, every parameter's and
    buffer's name, shape and dtype, and the optimizer's type and hyperparameters."""
    ref = module._reference_array()
    backend = None if ref is None else backend_of(ref).name
    groups = getattr(optimizer, "param_groups", ())
    return {
        "backend": backend,
        "modules": [f"{name or '<root>'}: {type(m).__name__}({m.extra_repr()})"
                    for name, m in module.named_modules()],
        "parameters": [f"{name} {tuple(p.shape)} {dtype_name(p.dtype)}"
                       f"{'' if p.requires_grad else ' frozen'}"
                       for name, p in module.named_parameters()],
        "buffers": [f"{name} {tuple(b.shape)} {dtype_name(b.dtype)}"
                    for name, b in module.named_buffers()],
        # what the collectives move: each chunk's length, and the parameters outside any
        "buckets": [("chunk", int(chunk.data.shape[0])) if chunk is not None
                    else ("loose", len(loose))
                    for chunk, loose in _parameter_buckets(module.parameters(), values=True)],
        "sync_batch_norms": [f"{name}: " + ("the job's" if m.comm is None else
                                            "this group's" if m.comm is comm else "another's")
                             for name, m in _sync_batch_norms(module)],
        # the optimizer's type and layout; its values (a resumed rank 0's learning rate) are
        # broadcast, not compared
        "optimizer": None if optimizer is None else {
            "type": type(optimizer).__name__,
            "groups": [len(g.params) for g in groups],
        },
    }


def check_same_model(module: Module, optimizer: Any, comm: Communicator) -> None:
    """Raise :class:`ModelMismatchError` on every rank when any rank's :func:`fingerprint`
    differs from rank 0's (one all-gather; every rank decides alike, so none is left waiting)."""
    prints = comm.all_gather_object(fingerprint(module, optimizer, comm))
    reference = prints[0]
    for rank, other in enumerate(prints[1:], start=1):
        difference = _first_difference(reference, other)
        if difference is not None:
            msg = (f"DistributedDataParallel: rank {rank}'s model differs from rank 0's: "
                   f"{difference} (every rank must build the same model on the same backend "
                   "and dtype, with the same optimizer)")
            raise ModelMismatchError(msg)
    foreign = [entry for entry in reference["sync_batch_norms"] if entry.endswith("another's")]
    if foreign:  # the same on every rank (the fingerprints agree): all raise together
        msg = (f"DistributedDataParallel: SyncBatchNorm {foreign[0].split(':')[0]} sums over "
               "another communicator than this wrapper's; convert the model with "
               "SyncBatchNorm.convert_sync_batchnorm(model, comm) of the wrapper's comm")
        raise ValueError(msg)


def _first_difference(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    for key in a:
        left, right = a[key], b.get(key)
        if left == right:
            continue
        if isinstance(left, list) and isinstance(right, list):
            for i, (x, y) in enumerate(zip(left, right, strict=False)):
                if x != y:
                    return f"{key} entry {i} is {x!r} on rank 0 and {y!r} there"
            return f"{key}: {len(left)} on rank 0, {len(right)} there"
        return f"{key} is {left!r} on rank 0 and {right!r} there"
    return None
