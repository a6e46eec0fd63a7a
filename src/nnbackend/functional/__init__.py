"""Stateless math written against the Array API: the single source of truth for every equation.

Forward functions take arrays and return arrays in the same namespace, dtype and device; each has
a ``*_backward`` companion. Losses return ``(loss, ∂loss/∂prediction)``.
"""

from .activations import (
    identity,
    identity_backward,
    leaky_relu,
    leaky_relu_backward,
    log_softmax,
    log_softmax_backward,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    softmax,
    softmax_backward,
    tanh,
    tanh_backward,
)
from .dropout import dropout, dropout2d, dropout2d_backward, dropout_backward
from .linear import linear, linear_backward
from .losses import binary_cross_entropy_with_logits, cross_entropy, mse
from .normalization import batch_norm, batch_norm_backward, batch_norm_forward

__all__ = [
    "batch_norm",
    "batch_norm_backward",
    "batch_norm_forward",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "dropout",
    "dropout2d",
    "dropout2d_backward",
    "dropout_backward",
    "identity",
    "identity_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "linear",
    "linear_backward",
    "log_softmax",
    "log_softmax_backward",
    "mse",
    "relu",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "softmax",
    "softmax_backward",
    "tanh",
    "tanh_backward",
]
