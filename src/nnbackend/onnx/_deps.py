"""The optional dependencies of ONNX export, imported on first use with a message naming the
extra that installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRA = "nnbackend[onnx]"


def require(module: str, *, needed_by: str = "nnbackend.onnx", extra: str = EXTRA
            ) -> ModuleType:
    """Import ``module`` ("onnx", "onnxruntime", "skl2onnx", ...), or raise ImportError naming
    what needs it and the extra that installs it.

    Raises
    ------
    ImportError
        When the package is missing: ``pip install "<extra>"`` installs it.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = (f"{needed_by} needs the {module!r} package, which is not installed: "
               f"pip install \"{extra}\" ({exc})")
        raise ImportError(msg) from exc
