"""nnbackend: neural networks written once against the Python Array API.

The same code trains on NumPy (CPU) and CuPy (CUDA GPUs), or on any other Array API namespace,
chosen by a backend flag (see :func:`get_backend`).
"""

from . import functional, init
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

__version__ = "0.1.0"

__all__ = [
    "BCEWithLogitsLoss",
    "Backend",
    "BackendInfo",
    "BackendUnavailableError",
    "CrossEntropyLoss",
    "GradcheckError",
    "GradcheckReport",
    "Identity",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "Loss",
    "MSELoss",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "__version__",
    "available_backends",
    "backend_of",
    "functional",
    "get_backend",
    "gradcheck",
    "init",
    "numerical_gradient",
    "to_numpy",
    "use_backend",
]
