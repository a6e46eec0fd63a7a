"""nnbackend: neural networks written once against the Python Array API.

The same code trains on NumPy (CPU) and CuPy (CUDA GPUs), or on any other Array API namespace,
chosen by a backend flag (see :func:`get_backend`).
"""

__version__ = "0.1.0"  # first: submodules (checkpoint) read it

from . import checkpoint, data, datasets, functional, init, optim, train
from ._gradcheck import GradcheckReport, gradcheck, numerical_gradient
from .backend import (
    Backend,
    BackendInfo,
    available_backends,
    backend_of,
    get_backend,
    to_numpy,
    use_backend,
)
from .data import batches, train_test_split
from .errors import BackendUnavailableError, CheckpointError, GradcheckError
from .layers import (
    Identity,
    LeakyReLU,
    Linear,
    LogSoftmax,
    Module,
    Parallel,
    Parameter,
    ReLU,
    Residual,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
)
from .losses import BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss
from .optim import (
    SGD,
    Adam,
    AdamW,
    CosineAnnealingLR,
    ExponentialLR,
    LinearWarmup,
    LRScheduler,
    Optimizer,
    ReduceLROnPlateau,
    RMSprop,
    StepLR,
    clip_grad_norm,
)
from .train import EarlyStopping, History, NonFiniteLossError, evaluate, fit, predict

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "BCEWithLogitsLoss",
    "Backend",
    "BackendInfo",
    "BackendUnavailableError",
    "CheckpointError",
    "CosineAnnealingLR",
    "CrossEntropyLoss",
    "EarlyStopping",
    "ExponentialLR",
    "GradcheckError",
    "GradcheckReport",
    "History",
    "Identity",
    "LRScheduler",
    "LeakyReLU",
    "Linear",
    "LinearWarmup",
    "LogSoftmax",
    "Loss",
    "MSELoss",
    "Module",
    "NonFiniteLossError",
    "Optimizer",
    "Parallel",
    "Parameter",
    "RMSprop",
    "ReLU",
    "ReduceLROnPlateau",
    "Residual",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "StepLR",
    "Tanh",
    "__version__",
    "available_backends",
    "backend_of",
    "batches",
    "checkpoint",
    "clip_grad_norm",
    "data",
    "datasets",
    "evaluate",
    "fit",
    "functional",
    "get_backend",
    "gradcheck",
    "init",
    "numerical_gradient",
    "optim",
    "predict",
    "to_numpy",
    "train",
    "train_test_split",
    "use_backend",
]
