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
from .pooling import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    adaptive_avg_pool2d_forward,
    avg_pool1d,
    avg_pool1d_backward,
    avg_pool1d_forward,
    avg_pool2d,
    avg_pool2d_backward,
    avg_pool2d_forward,
    max_pool1d,
    max_pool1d_backward,
    max_pool1d_forward,
    max_pool2d,
    max_pool2d_backward,
    max_pool2d_forward,
)

__all__ = [
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "adaptive_avg_pool2d_forward",
    "avg_pool1d",
    "avg_pool1d_backward",
    "avg_pool1d_forward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "avg_pool2d_forward",
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
    "max_pool1d",
    "max_pool1d_backward",
    "max_pool1d_forward",
    "max_pool2d",
    "max_pool2d_backward",
    "max_pool2d_forward",
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
