"""Optimizers, learning-rate schedules and gradient clipping.

Each optimizer's update rule is a plain Array API function (``sgd_update``, ``adam_update``,
``rmsprop_update``) that the optimizer class calls once per parameter; the classes add
hyperparameter validation, lazily allocated per-parameter state and state dicts.
"""

from ._flat import FlatFallbackWarning, PathStats
from .adam import Adam, AdamW, adam_update
from .clip import clip_grad_norm
from .optimizer import Optimizer
from .rmsprop import RMSprop, rmsprop_update
from .schedulers import (
    CosineAnnealingLR,
    ExponentialLR,
    LinearWarmup,
    LRScheduler,
    ReduceLROnPlateau,
    StepLR,
)
from .sgd import SGD, sgd_update

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "CosineAnnealingLR",
    "ExponentialLR",
    "FlatFallbackWarning",
    "LRScheduler",
    "LinearWarmup",
    "Optimizer",
    "PathStats",
    "RMSprop",
    "ReduceLROnPlateau",
    "StepLR",
    "adam_update",
    "clip_grad_norm",
    "rmsprop_update",
    "sgd_update",
]
