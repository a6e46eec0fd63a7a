"""Loss objects: ``loss, grad = loss_fn(prediction, target)``.

Each is a small configured wrapper over :mod:`nnbackend.functional.losses`: the loss is a 0-d
array on the prediction's device (no host synchronisation) and ``grad`` = ∂loss/∂prediction, ready
to be passed to the model's backward closure.
"""

from __future__ import annotations

from ._typing import Array
from .functional.losses import (
    binary_cross_entropy_with_logits,
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

    ``reduction="sum"`` drops the 1/n.
    """

    def __call__(self, prediction: Array, target: Array) -> tuple[Array, Array]:
        return mse(prediction, target, reduction=self.reduction)


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy from logits (N, C) and integer labels (N,) or probabilities (N, C).

    L = −1/N Σₙ Σ_c qₙ_c log softmax(zₙ)_c, with q the (label-smoothed) target distribution;
    ∂L/∂z = (softmax(z) − q) / N for targets that sum to one. See
    :func:`nnbackend.functional.cross_entropy`.

    Parameters
    ----------
    reduction : {"mean", "sum"}
    label_smoothing : float in [0, 1]
    """

    def __init__(self, *, reduction: str = "mean", label_smoothing: float = 0.0) -> None:
        super().__init__(reduction=reduction)
        self.label_smoothing = check_label_smoothing(label_smoothing, "CrossEntropyLoss")

    def __call__(self, prediction: Array, target: Array) -> tuple[Array, Array]:
        return cross_entropy(
            prediction, target, reduction=self.reduction, label_smoothing=self.label_smoothing
        )

    def __repr__(self) -> str:
        return (
            f"CrossEntropyLoss(reduction={self.reduction!r}, "
            f"label_smoothing={self.label_smoothing})"
        )


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits z with targets y in [0, 1].

    L = mean of max(z, 0) − z y + log(1 + e^−|z|) (stable for any z); ∂L/∂z = (σ(z) − y) / n.
    """

    def __call__(self, prediction: Array, target: Array) -> tuple[Array, Array]:
        return binary_cross_entropy_with_logits(prediction, target, reduction=self.reduction)
