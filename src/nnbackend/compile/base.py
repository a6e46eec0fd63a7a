"""What every compiled training step offers: the :class:`CompiledStep` protocol.

A compiled step is built once over a model, a loss and an optimizer (by
:func:`nnbackend.compile_step`) and then called per batch::

    step = nb.compile_step(model, nb.CrossEntropyLoss(), opt)
    for x, y in batches:
        loss = step(x, y)        # 0-d device array: forward, loss, backward, (clip,) update
    step.write_back()            # the objects hold the trained state again
    nb.checkpoint.save("run.npz", model, opt)

Each kind keeps the training state where it runs fastest between calls (a ``jax.jit`` program's
own arrays, a CUDA graph's static buffers, or simply the objects for the eager step) and puts
it back into the model and optimizer on :meth:`CompiledStep.write_back`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .._checks import check_nonnegative
from .._typing import Array
from ..layers.module import Module
from ..optim.optimizer import Optimizer

__all__ = ["CompiledStep", "check_arguments", "refuse_distributed"]


@runtime_checkable
class CompiledStep(Protocol):
    """A training step over fixed model, loss and optimizer objects, called per batch.

    Attributes
    ----------
    kind : str
        ``"jax-jit"`` (one ``jax.jit`` program), ``"cuda-graph"`` (a captured CUDA graph
        replayed per batch) or ``"eager"`` (the plain step: nothing compiles there).
    traces : int
        Compilations (traces, graph captures) so far: one per batch shape (and training mode);
        0 for the eager step.
    compile_seconds : float
        Host time spent in them.
    note : str
        Why this kind runs, in one line (for ``fit`` and the command line to print).
    """

    kind: str
    traces: int
    compile_seconds: float
    note: str

    def __call__(self, x: Array, y: Array) -> Array:
        """One training step on the batch ``(x, y)``: the eager step's math (forward, loss,
        ``zero_grad``, backward, optional ``clip_grad_norm``, ``optimizer.step()``).

        Returns
        -------
        array
            The batch's loss, a 0-d array on the model's device (read it when needed: reading
            waits for the step); with ``return_outputs=True`` the pair ``(loss, output)``,
            ``output`` the model's (N, ...) output of the step's forward (training mode), e.g.
            for metrics. Both stay valid after later calls.
        """
        ...

    def write_back(self) -> None:
        """Put the compiled state into the model and optimizer objects, bit for bit; after it
        they are usable eagerly (``checkpoint.save``, ``predict``, ``evaluate``)."""
        ...

    def reload(self) -> None:
        """Take the objects' current state again (after a checkpoint load or any eager change
        to them). A learning rate set between calls (by a schedule) needs no reload: every
        call reads each parameter group's ``lr``."""
        ...


def check_arguments(model: Any, loss_fn: Any, optimizer: Any, clip_grad_norm: Any, *,
                    where: str) -> float | None:
    """Refuse what no kind of step can run: not a Module, a callable loss and an Optimizer over
    the model's own parameters, or a negative clipping bound. Returns the bound (a float) or
    None."""
    if not isinstance(model, Module):
        msg = f"{where}: model must be a Module, got {type(model).__name__}"
        raise TypeError(msg)
    refuse_distributed(model, where=where)
    if not callable(loss_fn):
        msg = f"{where}: loss_fn must be callable, got {type(loss_fn).__name__}"
        raise TypeError(msg)
    if not isinstance(optimizer, Optimizer):
        msg = f"{where}: optimizer must be an Optimizer, got {type(optimizer).__name__}"
        raise TypeError(msg)
    own = {id(p) for p in model.parameters()}
    foreign = [i for i, p in enumerate(optimizer.params) if id(p) not in own]
    if foreign:
        msg = (
            f"{where}: {type(optimizer).__name__} holds {optimizer.params[foreign[0]]!r} "
            f"(params[{foreign[0]}]), which is not a parameter of the model"
        )
        raise ValueError(msg)
    if clip_grad_norm is None:
        return None
    return check_nonnegative(clip_grad_norm, caller=where, name="clip_grad_norm")


def refuse_distributed(model: Module, *, where: str) -> None:
    """Refuse a :class:`~nnbackend.distributed.DistributedDataParallel` model: its gradients
    are summed over the ranks by collectives that run on the host between the backward pass
    and the update, which neither a ``jax.jit`` program nor a CUDA graph can contain."""
    from ..distributed.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        msg = (
            f"{where}: a DistributedDataParallel model cannot be compiled: its gradients are "
            "all-reduced over the ranks on the host between the backward pass and the update "
            f"(rank {model.comm.rank} of {model.comm.size}, {model.comm.name}); train it "
            "eagerly (compile=False)"
        )
        raise ValueError(msg)
