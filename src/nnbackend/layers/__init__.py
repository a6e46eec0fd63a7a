"""Layers: ``Parameter``, ``Module`` and the building blocks of a network."""

from .activations import (
    GELU,
    Identity,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from .arena import Arena
from .attention import MultiheadAttention
from .combinators import Parallel, Residual
from .conv import Conv1d, Conv2d
from .description import DescriptionError, build, describe, register
from .dropout import Dropout, Dropout2d
from .embedding import Embedding
from .language_model import TransformerLM
from .linear import Linear
from .module import Context, LoadResult, Module, Parameter
from .normalization import BatchNorm1d, BatchNorm2d, LayerNorm, RMSNorm, SyncBatchNorm
from .pooling import AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d
from .recurrent import GRU, LSTM, RNN, RecurrentOutput
from .sequential import Sequential
from .shape import Flatten, Unflatten
from .transformer import TransformerEncoderLayer

__all__ = [
    "GELU",
    "GRU",
    "LSTM",
    "RNN",
    "AdaptiveAvgPool2d",
    "Arena",
    "AvgPool1d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Context",
    "Conv1d",
    "Conv2d",
    "DescriptionError",
    "Dropout",
    "Dropout2d",
    "Embedding",
    "Flatten",
    "Identity",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LoadResult",
    "LogSoftmax",
    "MaxPool1d",
    "MaxPool2d",
    "Module",
    "MultiheadAttention",
    "Parallel",
    "Parameter",
    "RMSNorm",
    "ReLU",
    "RecurrentOutput",
    "Residual",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "SyncBatchNorm",
    "Tanh",
    "TransformerEncoderLayer",
    "TransformerLM",
    "Unflatten",
    "build",
    "describe",
    "register",
]
