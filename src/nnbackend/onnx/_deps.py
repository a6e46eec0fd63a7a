"""The optional dependencies of ONNX export, imported on first use with a message naming the
extra that installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRA = "nnbackend[onnx]"


def require(module: str) -> ModuleType:
    """Import ``module`` ("onnx", "onnxruntime"), or raise ImportError naming the extra.

    Raises
    ------
    ImportError
        When the package is missing: ``pip install "nnbackend[onnx]"`` installs it.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = (f"nnbackend.onnx needs the {module!r} package, which is not installed: "
               f"pip install \"{EXTRA}\" ({exc})")
        raise ImportError(msg) from exc
