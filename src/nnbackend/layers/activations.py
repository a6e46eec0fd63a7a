"""Activation layers: thin modules over :mod:`nnbackend.functional.activations`."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from .. import functional as F
from .._checks import check_number
from .._typing import Array, Backprop
from ..functional import activations as A
from .module import Context, Module

__all__ = ["GELU", "Identity", "LeakyReLU", "LogSoftmax", "ReLU", "SiLU", "Sigmoid", "Softmax",
           "Softplus", "Tanh"]


class _Activation(Module):
    """y = f(x) elementwise (or along an axis); backward from the retained output y."""

    _fn: ClassVar[Callable[..., Array]]
    _backward: ClassVar[Callable[..., Array]]
    _computing = ("forward_pass", "infer", "backward", "_fn", "_backward")

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
    """y = max(x, 0); ∂L/∂x = ∂L/∂y · [y > 0].

    Where its context allows (``ctx.owns_input``, ``ctx.owns_grad``: see "Writing in place" in
    :mod:`nnbackend.layers.module`), y is computed in x's storage and ∂L/∂x in dy's, as
    PyTorch's ``ReLU(inplace=True)``; the values are the same.
    """

    _fn = staticmethod(F.relu)
    _backward = staticmethod(F.relu_backward)
    takes_ownership = True
    hands_over_input_grad = True  # a new array, or the dy it owned

    def infer(self, x: Array, ctx: Context) -> Array:
        if not self.takes_ownership:  # a subclass with a function of its own
            return super().infer(x, ctx)
        return F.relu(x, xp=ctx.xp, overwrite=ctx.owns_input)

    def forward_pass(self, x: Array, ctx: Context) -> tuple[Array, Backprop]:
        if not self.takes_ownership:
            return super().forward_pass(x, ctx)
        xp, input_grad, overwrite = ctx.xp, ctx.input_grad, ctx.owns_grad
        y = F.relu(x, xp=xp, overwrite=ctx.owns_input)  # y is kept: never handed over

        def backprop(dy: Array) -> Array | None:
            return F.relu_backward(dy, y, xp=xp, overwrite=overwrite) if input_grad else None

        return y, backprop


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


class _SavingActivation(_Activation):
    """y = f(x) elementwise; the backward from what ``_forward`` saved (x and a factor)."""

    _forward: ClassVar[Callable[..., tuple[Array, A.ActivationSaved]]]

    def forward_pass(self, x: Array, ctx: Context) -> tuple[Array, Backprop]:
        xp, input_grad = ctx.xp, ctx.input_grad
        y, saved = self._forward(x, xp=xp, **self._kwargs())
        backward = self._backward

        def backprop(dy: Array) -> Array | None:
            return backward(dy, saved, xp=xp) if input_grad else None

        return y, backprop


class GELU(_SavingActivation):
    """y = x Φ(x) (``approximate="none"``, PyTorch's default: Φ the standard normal CDF, through
    the library's standard erf) or x σ(2u), u = √(2/π)(x + 0.044715 x³) (``"tanh"``), as
    ``torch.nn.GELU``; ∂L/∂x = ∂L/∂y · (Φ(x) + x φ(x)) (see
    :mod:`nnbackend.functional.activations` for the tanh form's derivative)."""

    _fn = staticmethod(A.gelu)
    _forward = staticmethod(A.gelu_forward)
    _backward = staticmethod(A.gelu_backward)

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = A.check_approximate(approximate, "GELU")

    def _kwargs(self) -> dict[str, object]:
        return {"approximate": self.approximate}

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(_SavingActivation):
    """y = x σ(x) (the swish), as ``torch.nn.SiLU``; ∂L/∂x = ∂L/∂y · σ(x)(1 + x(1 − σ(x)))."""

    _fn = staticmethod(A.silu)
    _forward = staticmethod(A.silu_forward)
    _backward = staticmethod(A.silu_backward)


class Softplus(_SavingActivation):
    """y = log(1 + e^{βx}) / β, and y = x where βx > ``threshold`` (PyTorch's reversion to the
    identity for numerical stability), as ``torch.nn.Softplus(beta=1.0, threshold=20.0)``;
    ∂L/∂x = ∂L/∂y · σ(βx) (∂L/∂y above the threshold)."""

    _fn = staticmethod(A.softplus)
    _forward = staticmethod(A.softplus_forward)
    _backward = staticmethod(A.softplus_backward)

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta = check_number(beta, caller="Softplus", name="beta")
        if self.beta == 0.0:
            msg = "Softplus: beta must be non-zero (y = log(1 + e^{βx}) / β), got 0.0"
            raise ValueError(msg)
        self.threshold = check_number(threshold, caller="Softplus", name="threshold")

    def _kwargs(self) -> dict[str, object]:
        return {"beta": self.beta, "threshold": self.threshold}

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"
