"""Layers: ``Parameter``, ``Module`` and the building blocks of a network."""

from .activations import Identity, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .arena import Arena
from .combinators import Parallel, Residual
from .description import DescriptionError, build, describe, register
from .dropout import Dropout, Dropout2d
from .linear import Linear
from .module import Context, LoadResult, Module, Parameter
from .normalization import BatchNorm1d, BatchNorm2d
from .sequential import Sequential

__all__ = [
    "Arena",
    "BatchNorm1d",
    "BatchNorm2d",
    "Context",
    "DescriptionError",
    "Dropout",
    "Dropout2d",
    "Identity",
    "LeakyReLU",
    "Linear",
    "LoadResult",
    "LogSoftmax",
    "Module",
    "Parallel",
    "Parameter",
    "ReLU",
    "Residual",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "build",
    "describe",
    "register",
]
