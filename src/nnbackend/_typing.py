"""Type aliases shared across the package.

The Array API has no runtime base class for arrays, so ``Array`` is ``Any``: the aliases document
intent (what is an array, a namespace, a device) and keep signatures readable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

Array: TypeAlias = Any
"""An array of any Array API namespace (NumPy, CuPy, array-api-strict, PyTorch, ...)."""

Namespace: TypeAlias = Any
"""An Array API namespace, as returned by ``array_api_compat.array_namespace``."""

Device: TypeAlias = Any
"""A device object of some namespace (``"cpu"``, ``cupy.cuda.Device(0)``, ...)."""

DType: TypeAlias = Any
"""A dtype object of some namespace (``xp.float32``)."""

Backprop: TypeAlias = Callable[[Array], "Array | None"]
"""A backward closure: maps ∂L/∂y to ∂L/∂x (or ``None`` when ∂L/∂x was not requested)."""
