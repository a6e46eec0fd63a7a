"""Optimizers, learning-rate schedules and gradient clipping.

Each optimizer's update rule is a plain Array API function (``sgd_update``, ``adam_update``,
``rmsprop_update``) that the optimizer class calls once per parameter, or once per run of
parameters in their arena (:mod:`nnbackend.layers.arena`, shared by every optimizer and
:func:`clip_grad_norm`); the classes add hyperparameter validation, parameter groups
(PyTorch's list of dicts), lazily allocated per-parameter state and state dicts. Every
optimizer and schedule declares its settings once, as a tuple of :class:`Hyperparameter`
(name, default, check): that list makes the constructor, the checks, the state dict and
``repr``. A new optimizer subclasses :class:`Optimizer` with its ``HYPERPARAMETERS`` and an
update rule, and writes no ``__init__``.
"""

from ._flat import FlatFallbackWarning, PathStats
from ._hyper import REQUIRED, Hyperparameter
from .adam import Adam, AdamW, adam_update
from .clip import clip_grad_norm
from .optimizer import Optimizer, ParamGroup
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
    "REQUIRED",
    "SGD",
    "Adam",
    "AdamW",
    "CosineAnnealingLR",
    "ExponentialLR",
    "FlatFallbackWarning",
    "Hyperparameter",
    "LRScheduler",
    "LinearWarmup",
    "Optimizer",
    "ParamGroup",
    "PathStats",
    "RMSprop",
    "ReduceLROnPlateau",
    "StepLR",
    "adam_update",
    "clip_grad_norm",
    "rmsprop_update",
    "sgd_update",
]
