"""``Dropout`` and ``Dropout2d``: inverted dropout over :func:`nnbackend.functional.dropout`
and :func:`~nnbackend.functional.dropout2d` (whole channels), reproducibly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._typing import Array, Backprop
from ..functional.dropout import (
    _check_p,
    dropout,
    dropout2d,
    dropout2d_backward,
    dropout_backward,
)
from ..random import Generator
from .module import Context, Module
from .normalization import InputLayoutError

__all__ = ["Dropout", "Dropout2d"]


class Dropout(Module):
    """y = x · m / (1 − p) in training mode, m ~ Bernoulli(1 − p) elementwise; y = x in eval.

    Parameters
    ----------
    p : float
        Probability of zeroing an element, 0 ≤ p ≤ 1 (PyTorch's default 0.5).
    seed : int, optional
        Seed of the layer's random stream (:class:`nnbackend.random.Generator`): the same seed
        gives the same masks on every backend, run after run. ``None`` draws one from the
        operating system (recorded in the extra state, so a checkpoint still resumes exactly).

    Notes
    -----
    The stream's counter advances by one per training forward (in ``forward`` and in
    ``module(x)`` alike, as PyTorch's dropout runs in training mode whatever the call). It is
    the layer's extra state (:meth:`get_extra_state`), so a checkpoint restores it and a resumed
    run draws the masks an uninterrupted one would have. Backward: ∂L/∂x = ∂L/∂y · m / (1 − p),
    with the forward's mask.
    """

    has_training_behaviour = True

    def __init__(self, p: float = 0.5, *, seed: int | None = None) -> None:
        super().__init__()
        self.p = _check_p(p, "Dropout")
        self.generator = Generator(seed)

    def forward_pass(self, x: Array, ctx: Context) -> tuple[Array, Backprop]:
        p, xp, input_grad = self.p, ctx.xp, ctx.input_grad
        y, mask = dropout(x, p, generator=self.generator, xp=xp, training=self.training)

        def backprop(dy: Array) -> Array | None:
            return dropout_backward(dy, mask, p, xp=xp) if input_grad else None

        return y, backprop

    def infer(self, x: Array, ctx: Context) -> Array:
        return dropout(x, self.p, generator=self.generator, xp=ctx.xp, training=self.training)[0]

    def get_extra_state(self) -> dict[str, Any]:
        """The random stream's ``{"version", "seed", "stream", "counter"}``."""
        return self.generator.state()

    def set_extra_state(self, state: Mapping[str, Any]) -> None:
        self.generator.load_state(state)

    def config(self) -> dict[str, Any]:
        """Constructor arguments (the seed: the stream's, so a rebuilt layer draws alike)."""
        return {"p": self.p, "seed": self.generator.seed}

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Dropout2d(Dropout):
    """Channel-wise dropout: whole channels zeroed, y = x · m / (1 − p) with one
    m ~ Bernoulli(1 − p) per (sample, channel), broadcast over H and W; y = x in eval.

    Input (N, C, H, W), or (C, H, W) for one sample without a batch axis (one draw per
    channel). Parameters, random stream and extra state as :class:`Dropout`'s (the same seed
    gives the same channels on every backend; a checkpoint resumes the stream). Backward:
    ∂L/∂x = ∂L/∂y · m / (1 − p), with the forward's mask.
    """

    def __init__(self, p: float = 0.5, *, seed: int | None = None) -> None:
        super().__init__(_check_p(p, "Dropout2d"), seed=seed)

    def _check_shape(self, x: Array) -> None:
        if x.ndim not in (3, 4):
            raise InputLayoutError(repr(self), "(N, C, H, W) or (C, H, W)", tuple(x.shape))

    def forward_pass(self, x: Array, ctx: Context) -> tuple[Array, Backprop]:
        self._check_shape(x)
        p, xp, input_grad = self.p, ctx.xp, ctx.input_grad
        y, mask = dropout2d(x, p, generator=self.generator, training=self.training, xp=xp)

        def backprop(dy: Array) -> Array | None:
            return dropout2d_backward(dy, mask, p, xp=xp) if input_grad else None

        return y, backprop

    def infer(self, x: Array, ctx: Context) -> Array:
        self._check_shape(x)
        return dropout2d(x, self.p, generator=self.generator, training=self.training,
                         xp=ctx.xp)[0]
