"""The eager training step behind the :class:`~nnbackend.compile.CompiledStep` protocol.

Where nothing compiles (NumPy, array-api-strict, PyTorch on the CPU, the GPU-like test device),
:func:`nnbackend.compile_step` returns an :class:`EagerStep`: the plain step, so that code
written against the protocol runs everywhere. The objects hold the state at every moment, so
:meth:`EagerStep.write_back` and :meth:`EagerStep.reload` have nothing to do.
"""

from __future__ import annotations

from collections.abc import Callable

from .._typing import Array
from ..layers.module import Module
from ..optim.clip import clip_grad_norm as _clip_grad_norm
from ..optim.optimizer import Optimizer

__all__ = ["EagerStep"]


class EagerStep:
    """The plain training step: forward, loss, ``zero_grad``, backward, optional clipping,
    ``optimizer.step()``, run as written on every call.

    Parameters
    ----------
    model : Module
    loss_fn : callable
        ``loss_fn(y, target) -> (loss, dy)``, as :class:`nnbackend.CrossEntropyLoss`.
    optimizer : Optimizer
        Over ``model``'s parameters.
    clip_grad_norm : float, optional
        Clip the gradients' global norm (:func:`nnbackend.clip_grad_norm` over the model's
        parameters) to this bound before each update.
    note : str
        Why the eager step runs (``note``).
    return_outputs : bool
        ``step(x, y)`` returns ``(loss, output)``: the model's output on the batch too.

    Attributes
    ----------
    kind : str
        ``"eager"``.
    traces : int
        Always 0.
    compile_seconds : float
        Always 0.0.
    note : str
    """

    kind = "eager"

    def __init__(self, model: Module, loss_fn: Callable[[Array, Array], tuple[Array, Array]],
                 optimizer: Optimizer, *, clip_grad_norm: float | None = None,
                 note: str = "eager: the plain step", return_outputs: bool = False) -> None:
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.return_outputs = bool(return_outputs)
        self.clip_grad_norm = clip_grad_norm
        self.note = note
        self.traces = 0
        self.compile_seconds = 0.0

    def __call__(self, x: Array, y: Array) -> Array:
        """One training step on ``(x, y)``; returns the loss (0-d, on the model's device), or
        ``(loss, output)`` with ``return_outputs``."""
        out, backprop = self.model.forward(x)
        loss, dy = self.loss_fn(out, y)
        self.optimizer.zero_grad()
        backprop(dy)
        if self.clip_grad_norm is not None:
            _clip_grad_norm(self.model, self.clip_grad_norm)
        self.optimizer.step()
        return (loss, out) if self.return_outputs else loss

    def write_back(self) -> None:
        """Nothing to do: the objects hold the state."""

    def reload(self) -> None:
        """Nothing to do: every call steps the objects as they are."""

    def __repr__(self) -> str:
        return f"EagerStep({type(self.model).__name__}, {type(self.optimizer).__name__})"
