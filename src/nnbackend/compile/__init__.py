"""Compiled training steps: one model definition, run eagerly or compiled.

:func:`compile_step` turns a model, a loss and an optimizer into a step function over batches,
``step(x, y) -> loss``, that computes what the eager step computes (forward, loss,
``zero_grad``, backward, optional gradient clipping, ``optimizer.step()``) with as little
per-batch overhead as the backend allows::

    step = nb.compile_step(model, nb.CrossEntropyLoss(), opt)
    for epoch in range(epochs):
        for x, y in nb.batches(X, Y, batch_size=32, backend=be):
            loss = step(x, y)
        sched.step()                       # picked up by the next call, no recompilation
    step.write_back()                      # model and optimizer hold the result
    nb.checkpoint.save("run.npz", model, opt)
    print(step.kind, step.traces, f"{step.compile_seconds:.2f} s", step.note)

=========================  ===================================================================
backend                    kind
=========================  ===================================================================
JAX                        ``"jax-jit"``: the whole step as one ``jax.jit`` program over the
                           training state, buffers donated (:class:`JaxStep`)
CuPy, PyTorch on CUDA      ``"cuda-graph"``: the step captured as a CUDA graph per batch shape
                           and replayed per batch (:class:`~nnbackend.compile.graph.GraphStep`)
everything else            ``"eager"``: the plain step (:class:`EagerStep`), logged once per
                           backend at INFO level
=========================  ===================================================================

Every kind implements :class:`CompiledStep`. Between calls a compiled kind may hold the
training state itself: call :meth:`CompiledStep.write_back` before using the objects eagerly
(saving a checkpoint, ``predict``, ``evaluate``), and :meth:`CompiledStep.reload` after
changing them (loading a checkpoint into them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .._libraries import library_of
from .._typing import Array
from ..layers.module import Module
from ..optim.optimizer import Optimizer
from ..state import _scalar_backend
from .base import CompiledStep, check_arguments
from .eager import EagerStep
from .jax import JaxStep

__all__ = ["CompiledStep", "EagerStep", "JaxStep", "compile_step"]

_log = logging.getLogger(__name__)
_said_eager: set[str] = set()  # the backends whose eager note was logged (once each)


def compile_step(
    model: Module,
    loss_fn: Callable[[Array, Array], tuple[Array, Array]],
    optimizer: Optimizer,
    *,
    clip_grad_norm: float | None = None,
    donate: bool = True,
    return_outputs: bool = False,
) -> CompiledStep:
    """The training step of ``model``, ``loss_fn`` and ``optimizer``, compiled where the
    backend allows it.

    Parameters
    ----------
    model : Module
        Its arrays on one device; the backend decides the kind (see the module docstring).
    loss_fn : callable
        ``loss_fn(y, target) -> (loss, dy)``, as :class:`nnbackend.CrossEntropyLoss`.
    optimizer : Optimizer
        Over ``model``'s parameters.
    clip_grad_norm : float, optional
        Clip the gradients' global norm (:func:`nnbackend.clip_grad_norm` over the model's
        parameters) to this bound ≥ 0 before each update.
    donate : bool
        JAX: donate the state's buffers to each call (updated in place).
    return_outputs : bool
        ``step(x, y)`` returns ``(loss, output)`` instead: the model's output on the batch
        (of the step's own forward, in training mode), e.g. for metrics (as ``fit`` computes
        them).

    Returns
    -------
    CompiledStep
        ``step(x, y) -> loss`` (a 0-d device array), with ``kind``, ``traces``,
        ``compile_seconds``, ``note``, ``write_back()`` and ``reload()``.

    Raises
    ------
    TypeError
        The arguments are not a Module, a callable loss and an Optimizer.
    ValueError
        The optimizer holds parameters that are not the model's, the model has no arrays or
        spans several devices, ``clip_grad_norm`` is negative, or the model is a
        :class:`~nnbackend.distributed.DistributedDataParallel` (its all-reduce runs on the
        host, between the backward pass and the update).
    """
    where = "compile_step"
    clip_grad_norm = check_arguments(model, loss_fn, optimizer, clip_grad_norm, where=where)
    for name, flag in (("donate", donate), ("return_outputs", return_outputs)):
        if not isinstance(flag, bool):
            msg = f"{where}: {name} must be a bool, got {flag!r}"
            raise TypeError(msg)
    be = _scalar_backend(model, where=where)
    library = library_of(be.xp).name
    if library == "jax":
        return JaxStep(model, loss_fn, optimizer, clip_grad_norm=clip_grad_norm, donate=donate,
                       return_outputs=return_outputs)
    if _graphs_apply(library, be.device):
        try:
            from .graph import GraphStep
        except ImportError as exc:
            note = (f"eager: CUDA graphs are unavailable on {be.name} ({exc}); the plain step "
                    "runs")
            return _eager(model, loss_fn, optimizer, clip_grad_norm, note, be.name,
                          return_outputs)
        graph: CompiledStep = GraphStep(model, loss_fn, optimizer, clip_grad_norm=clip_grad_norm,
                                        return_outputs=return_outputs)
        return graph
    note = (f"eager: nothing compiles on {be.name} (jax.jit needs JAX, CUDA graphs CuPy or "
            "PyTorch on CUDA); the plain step runs")
    return _eager(model, loss_fn, optimizer, clip_grad_norm, note, be.name, return_outputs)


def _eager(model: Module, loss_fn: Any, optimizer: Optimizer, clip: float | None, note: str,
           backend: str, return_outputs: bool) -> EagerStep:
    if backend not in _said_eager:
        _said_eager.add(backend)
        _log.info("compile_step: %s", note)
    return EagerStep(model, loss_fn, optimizer, clip_grad_norm=clip, note=note,
                     return_outputs=return_outputs)


def _graphs_apply(library: str, device: Any) -> bool:
    """Whether CUDA graphs can capture the step: CuPy, or PyTorch on a CUDA device."""
    if library == "cupy":
        return True
    return library == "torch" and getattr(device, "type", str(device).split(":")[0]) == "cuda"
