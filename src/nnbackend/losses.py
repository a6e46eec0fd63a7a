"""Loss objects: ``loss, grad = loss_fn(prediction, target)``.

Each is a small configured wrapper over :mod:`nnbackend.functional.losses`: the loss is a 0-d
array on the prediction's device (no host synchronisation) and ``grad`` = ∂loss/∂prediction, ready
to be passed to the model's backward closure.
"""

from __future__ import annotations

from ._typing import Array
from .functional.losses import (
    binary_cross_entropy_with_logits,
    check_class_axis,
    check_label_smoothing,
    check_reduction,
    cross_entropy,
    mse,
)

__all__ = ["BCEWithLogitsLoss", "CrossEntropyLoss", "Loss", "MSELoss"]


class Loss:
    """Base class: ``__call__(prediction, target) -> (loss, ∂loss/∂prediction)``."""

    def __init__(self, *, reduction: str = "mean") -> None:
        self.reduction = check_reduction(reduction, type(self).__name__)

    def __call__(self, prediction: Array, target: Array) -> tuple[Array, Array]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


class MSELoss(Loss):
    """Mean squared error: L = 1/n Σ (ŷ − y)² over all n elements; ∂L/∂ŷ = 2 (ŷ − y) / n.

    Prediction and target have any one shape (and dtype).

    ``reduction="sum"`` drops the 1/n.
    """

    def __call__(self, prediction: Array, target: Array) -> tuple[Array, Array]:
        return mse(prediction, target, reduction=self.reduction)


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy from logits (N, C) or (N, ..., C) and integer labels (N,) or
    (N, ...), or probabilities of the logits' shape.

    L = −1/M Σₘ Σ_c qₘ_c log softmax(zₘ)_c over the M positions (N, or N·d1·… for N-D
    logits), with q the (label-smoothed) target distribution; ∂L/∂z = (softmax(z) − q) / M for
    targets that sum to one. See :func:`nnbackend.functional.cross_entropy`.

    Parameters
    ----------
    reduction : {"mean", "sum"}
    label_smoothing : float in [0, 1]
    axis : int
        The class axis: the last by default; 1 for PyTorch's (N, C, d1, ...) layout.
    """

    def __init__(
        self, *, reduction: str = "mean", label_smoothing: float = 0.0, axis: int = -1
    ) -> None:
        super().__init__(reduction=reduction)
        self.label_smoothing = check_label_smoothing(label_smoothing, "CrossEntropyLoss")
        self.axis = check_class_axis(axis, "CrossEntropyLoss")

    def __call__(self, prediction: Array, target: Array) -> tuple[Array, Array]:
        return cross_entropy(
            prediction, target, reduction=self.reduction, label_smoothing=self.label_smoothing,
            axis=self.axis,
        )

    def __repr__(self) -> str:
        axis = "" if self.axis == -1 else f", axis={self.axis}"  # the default stays unsaid
        return (
            f"CrossEntropyLoss(reduction={self.reduction!r}, "
            f"label_smoothing={self.label_smoothing}{axis})"
        )


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits z with targets y in [0, 1].

    L = mean of max(z, 0) − z y + log(1 + e^−|z|) (stable for any z); ∂L/∂z = (σ(z) − y) / n.
    Logits and targets have any one shape (and dtype); n counts all their elements.
    """

    def __call__(self, prediction: Array, target: Array) -> tuple[Array, Array]:
        return binary_cross_entropy_with_logits(prediction, target, reduction=self.reduction)
