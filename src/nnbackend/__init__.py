"""nnbackend: neural networks written once against the Python Array API.

The same code trains on NumPy (CPU) and CuPy (CUDA GPUs), or on any other Array API namespace,
chosen by a backend flag (see :func:`get_backend`).
"""

from . import functional, init, optim
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
from .errors import BackendUnavailableError, GradcheckError
from .layers import (
    Identity,
    LeakyReLU,
    Linear,
    LogSoftmax,
    Module,
    Parameter,
    ReLU,
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

__version__ = "0.1.0"

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "BCEWithLogitsLoss",
    "Backend",
    "BackendInfo",
    "BackendUnavailableError",
    "CosineAnnealingLR",
    "CrossEntropyLoss",
    "ExponentialLR",
    "GradcheckError",
    "GradcheckReport",
    "Identity",
    "LRScheduler",
    "LeakyReLU",
    "Linear",
    "LinearWarmup",
    "LogSoftmax",
    "Loss",
    "MSELoss",
    "Module",
    "Optimizer",
    "Parameter",
    "RMSprop",
    "ReLU",
    "ReduceLROnPlateau",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "StepLR",
    "Tanh",
    "__version__",
    "available_backends",
    "backend_of",
    "clip_grad_norm",
    "functional",
    "get_backend",
    "gradcheck",
    "init",
    "numerical_gradient",
    "optim",
    "to_numpy",
    "use_backend",
]
