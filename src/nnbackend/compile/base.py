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

from typing import Protocol, runtime_checkable

from .._typing import Array

__all__ = ["CompiledStep"]


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
            waits for the step).
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
