"""Gradient clipping by global norm, on the device, in O(1) array calls per arena chunk.

Gradients that live in a parameter arena (:mod:`nnbackend.layers.arena`: ``p.grad`` is its
slot's view) are reduced and scaled through the chunk's flat gradient buffer: when every packed
parameter of a chunk is given and has its gradient there (the usual ``clip_grad_norm(model,
...)`` after backward), the whole buffer is one sum of squares and one in-place product,
however many parameter tensors the chunk holds; otherwise (some without a gradient, frozen or
not given) the buffer's contiguous runs of the given gradients are. Other gradients (namespaces
without views, parameters never packed) are taken one by one, the reference path.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import device

from .._checks import check_nonnegative, check_positive, describe_placement, namespace_of
from .._typing import Array
from ..layers.arena import Chunk, Slot
from ..layers.module import Module, Parameter

__all__ = ["clip_grad_norm"]


def clip_grad_norm(parameters: Any, max_norm: float, *, eps: float = 1e-6) -> Array:
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``.

    ::

        total = √(Σₚ ‖gₚ‖²)                          over every parameter with a gradient
        scale = min(1, max_norm / (total + ε))
        gₚ ← scale · gₚ

    Everything stays on the device: the comparison with ``max_norm`` is an ``xp.minimum``, so
    the gradients are always multiplied (by exactly 1 when they are within the bound) and the
    host never waits for the device. This is ``torch.nn.utils.clip_grad_norm_`` with the L2
    norm.

    Parameters
    ----------
    parameters : Module, Parameter or iterable of Parameter
        Parameters whose ``.grad`` is None are skipped, and one given twice counts once. The
        gradients must share one namespace and device.
    max_norm : float
        The bound, ≥ 0 (``math.inf`` only measures the norm).
    eps : float
        ε > 0, keeps the division finite when every gradient is zero.

    Returns
    -------
    array
        The total norm *before* clipping, a 0-d array on the gradients' device (zero, on the
        first parameter's device, when no parameter has a gradient).
    """
    where = "clip_grad_norm"
    if isinstance(parameters, Module):
        params = parameters.parameters()
    elif isinstance(parameters, Parameter):
        params = [parameters]
    else:
        params = list(parameters)
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            msg = f"{where}: parameters[{i}] must be a Parameter, got {type(p).__name__}"
            raise TypeError(msg)
    if not params:
        msg = f"{where}: got no parameters"
        raise ValueError(msg)
    if isinstance(max_norm, int | float) and math.isinf(max_norm) and max_norm > 0:
        bound = math.inf
    else:
        bound = check_nonnegative(max_norm, caller=where, name="max_norm")
    eps = check_positive(eps, caller=where, name="eps")

    grads, owners, loose = _gradient_arrays(params)
    if not grads:
        ref = params[0].data
        return namespace_of(ref).zeros((), dtype=ref.dtype, device=device(ref))
    first = grads[0]
    xp, dev = namespace_of(first), device(first)
    for g, owner in zip(grads[1:], owners[1:], strict=True):
        if namespace_of(g) is not xp or device(g) != dev:
            msg = (
                f"{where}: the gradient of {owner!r} is {describe_placement(g)} but "
                f"the first gradient is {describe_placement(first)}; all gradients must share "
                "one device"
            )
            raise ValueError(msg)

    total_sq = xp.sum(first * first)
    for g in grads[1:]:
        total_sq = total_sq + xp.sum(g * g)
    total = xp.sqrt(total_sq)
    scale = bound / (total + eps)
    scale = xp.minimum(scale, xp.ones_like(scale))
    cast: dict[Any, Array] = {scale.dtype: scale}
    for g in grads[:len(grads) - len(loose)]:  # runs of flat buffers: scaled in place
        dtype = g.dtype
        if dtype not in cast:  # mixed precisions: scale each gradient in its own dtype
            cast[dtype] = xp.astype(scale, dtype)
        g *= cast[dtype]
    for p in loose:
        if p.grad is not None:
            dtype = p.grad.dtype
            if dtype not in cast:
                cast[dtype] = xp.astype(scale, dtype)
            p.grad *= cast[dtype]
    return total


def _gradient_arrays(
    params: list[Parameter],
) -> tuple[list[Array], list[Parameter], list[Parameter]]:
    """The arrays to reduce and scale, with the (first) parameter each belongs to: whole flat
    gradient buffers or runs of them for the gradients in an arena, then each other gradient
    (also in ``loose``: scaled through its parameter, so that immutable arrays are stored
    back)."""
    by_chunk: dict[int, tuple[Chunk, list[Slot]]] = {}
    loose: list[Parameter] = []
    seen: set[int] = set()
    for p in params:
        grad = p.grad
        if grad is None or id(p) in seen:
            continue
        seen.add(id(p))
        slot = p.slot
        if slot is not None and grad is slot.grad:
            by_chunk.setdefault(id(slot.chunk), (slot.chunk, []))[1].append(slot)
        else:
            loose.append(p)
    arrays: list[Array] = []
    owners: list[Parameter] = []
    for chunk, slots in by_chunk.values():
        if len(slots) == len(chunk.slots) and not chunk.holes:
            arrays.append(chunk.grad)  # every packed gradient: the whole buffer
            owners.append(slots[0].param)
            continue
        slots.sort(key=lambda s: s.start)
        lead = slots[0]
        start, stop = lead.start, lead.stop
        for s in slots[1:]:
            if s.start != chunk.padded(stop):  # not adjacent: another run
                arrays.append(chunk.grad[start:stop])
                owners.append(lead.param)
                lead, start = s, s.start
            stop = s.stop
        arrays.append(chunk.grad[start:stop])
        owners.append(lead.param)
    for p in loose:
        arrays.append(p.grad)
        owners.append(p)
    return arrays, owners, loose
