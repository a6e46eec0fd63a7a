"""Activation layers: thin modules over :mod:`nnbackend.functional.activations`."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from .. import functional as F
from .._typing import Array, Backprop
from .module import Context, Module

__all__ = ["Identity", "LeakyReLU", "LogSoftmax", "ReLU", "Sigmoid", "Softmax", "Tanh"]


class _Activation(Module):
    """y = f(x) elementwise (or along an axis); backward from the retained output y."""

    _fn: ClassVar[Callable[..., Array]]
    _backward: ClassVar[Callable[..., Array]]

    def _kwargs(self) -> dict[str, object]:
        return {}

    def config(self) -> dict[str, object]:
        """The constructor's arguments (see :mod:`nnbackend.layers.description`)."""
        return dict(self._kwargs())

    def infer(self, x: Array, ctx: Context) -> Array:
        return self._fn(x, xp=ctx.xp, **self._kwargs())

    def forward_pass(self, x: Array, ctx: Context) -> tuple[Array, Backprop]:
        kwargs = self._kwargs()
        xp, input_grad = ctx.xp, ctx.input_grad
        y = self._fn(x, xp=xp, **kwargs)
        backward = self._backward

        def backprop(dy: Array) -> Array | None:
            return backward(dy, y, xp=xp, **kwargs) if input_grad else None

        return y, backprop


class Identity(_Activation):
    """y = x."""

    _fn = staticmethod(F.identity)
    _backward = staticmethod(F.identity_backward)


class ReLU(_Activation):
    """y = max(x, 0); ∂L/∂x = ∂L/∂y · [y > 0]."""

    _fn = staticmethod(F.relu)
    _backward = staticmethod(F.relu_backward)


class Sigmoid(_Activation):
    """y = σ(x) = 1 / (1 + e⁻ˣ) (accurate for any x); ∂L/∂x = ∂L/∂y · y (1 − y)."""

    _fn = staticmethod(F.sigmoid)
    _backward = staticmethod(F.sigmoid_backward)


class Tanh(_Activation):
    """y = tanh x; ∂L/∂x = ∂L/∂y · (1 − y²)."""

    _fn = staticmethod(F.tanh)
    _backward = staticmethod(F.tanh_backward)


class LeakyReLU(_Activation):
    """y = x for x > 0, else s·x (s = ``negative_slope`` > 0); ∂L/∂x = ∂L/∂y · (1 or s)."""

    _fn = staticmethod(F.leaky_relu)
    _backward = staticmethod(F.leaky_relu_backward)

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        if not negative_slope > 0.0:
            msg = f"LeakyReLU: negative_slope must be positive, got {negative_slope!r}"
            raise ValueError(msg)
        self.negative_slope = float(negative_slope)

    def _kwargs(self) -> dict[str, object]:
        return {"negative_slope": self.negative_slope}

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Softmax(_Activation):
    """y = softmax(x) along ``axis``; ∂L/∂x = y ⊙ (∂L/∂y − Σ ∂L/∂y ⊙ y).

    For classification, feed logits to :class:`~nnbackend.CrossEntropyLoss` instead: it fuses
    the softmax with the loss, which is both faster and more accurate.
    """

    _fn = staticmethod(F.softmax)
    _backward = staticmethod(F.softmax_backward)

    def __init__(self, axis: int = -1) -> None:
        super().__init__()
        self.axis = axis

    def _kwargs(self) -> dict[str, object]:
        return {"axis": self.axis}

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


class LogSoftmax(Softmax):
    """y = log softmax(x) along ``axis``; ∂L/∂x = ∂L/∂y − eʸ Σ ∂L/∂y."""

    _fn = staticmethod(F.log_softmax)
    _backward = staticmethod(F.log_softmax_backward)
