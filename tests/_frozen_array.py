"""A minimal Array API namespace whose arrays are immutable and never reach the host.

``FrozenArray`` wraps a NumPy array but defines no in-place operators, so ``a -= b`` rebinds
``a`` to a new array as it does on JAX, and every way back to the host (``float``, ``bool``,
``int``, ``.item()``, ``__array__``, ``__dlpack__``, iteration) raises :class:`HostSync`. Code
that runs on it is therefore correct on immutable arrays and free of host synchronisation.

Only what the optimizers and ``clip_grad_norm`` need is implemented. Item assignment is allowed
(``array_api_compat.is_writeable_array`` reports every unknown array type as writeable), so
``maximum_into`` keeps its in-place branch here; its rebinding branch is tested separately.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np


class HostSync(AssertionError):
    """Something tried to read a device array back to the host."""


def _unwrap(value: Any) -> Any:
    if isinstance(value, FrozenArray):
        return value._a
    if type(value) in (int, float):  # Python scalars only: NumPy scalars would promote
        return value
    msg = f"FrozenArray: unsupported operand {type(value).__name__}"
    raise TypeError(msg)


def _binary(name: str, reflected: bool = False) -> Any:
    op = getattr(np, name)

    def method(self: FrozenArray, other: Any) -> FrozenArray:
        a, b = self._a, _unwrap(other)
        return FrozenArray(op(b, a) if reflected else op(a, b))

    return method


def _sync(self: FrozenArray, *args: Any, **kwargs: Any) -> Any:
    raise HostSync("a FrozenArray was read back to the host")


class FrozenArray:
    """An immutable array: arithmetic returns new arrays; nothing converts to host values."""

    __slots__ = ("_a",)

    def __init__(self, a: Any) -> None:
        self._a = np.asarray(a)

    def __array_namespace__(self, api_version: str | None = None) -> types.ModuleType:
        return frozen_xp

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._a.shape)

    @property
    def ndim(self) -> int:
        return int(self._a.ndim)

    @property
    def dtype(self) -> Any:
        return self._a.dtype

    @property
    def device(self) -> str:
        return "frozen"

    def __setitem__(self, key: Any, value: Any) -> None:
        # rebinding the wrapped buffer keeps earlier results (which hold the old one) intact
        data = self._a.copy()
        data[key] = _unwrap(value)
        self._a = data

    __add__ = _binary("add")
    __radd__ = _binary("add", reflected=True)
    __sub__ = _binary("subtract")
    __rsub__ = _binary("subtract", reflected=True)
    __mul__ = _binary("multiply")
    __rmul__ = _binary("multiply", reflected=True)
    __truediv__ = _binary("divide")
    __rtruediv__ = _binary("divide", reflected=True)

    def __neg__(self) -> FrozenArray:
        return FrozenArray(-self._a)

    __bool__ = __float__ = __int__ = __index__ = __complex__ = _sync
    __array__ = __dlpack__ = __iter__ = __len__ = item = tolist = to_device = _sync

    def host(self) -> np.ndarray:
        """The value, for the test's own assertions (not used by the code under test)."""
        return self._a.copy()


def _ns() -> types.ModuleType:
    xp = types.ModuleType("frozen_xp")
    xp.float32, xp.float64 = np.dtype("float32"), np.dtype("float64")  # type: ignore[attr-defined]

    def zeros(shape: Any, *, dtype: Any = None, device: Any = None) -> FrozenArray:
        assert device == "frozen", device
        assert dtype is not None, "every allocation names its dtype"
        return FrozenArray(np.zeros(shape, dtype=dtype))

    def ones_like(x: FrozenArray, *, dtype: Any = None, device: Any = None) -> FrozenArray:
        return FrozenArray(np.ones_like(x._a, dtype=dtype))

    def asarray(x: Any, *, dtype: Any = None, device: Any = None, copy: Any = None) -> Any:
        if isinstance(x, FrozenArray):
            return x
        raise HostSync("frozen_xp.asarray of host data inside the math")

    def astype(x: FrozenArray, dtype: Any, /, *, copy: bool = True) -> FrozenArray:
        return FrozenArray(x._a.astype(dtype))

    def isdtype(dtype: Any, kind: str) -> bool:
        assert kind == "real floating", kind
        return bool(np.issubdtype(dtype, np.floating))

    def sum(x: FrozenArray, /, *, axis: Any = None, dtype: Any = None) -> FrozenArray:
        return FrozenArray(np.sum(x._a, axis=axis, dtype=dtype))

    def unary(f: Any) -> Any:
        return lambda x, /: FrozenArray(f(_unwrap(x)))

    def binary(f: Any) -> Any:
        return lambda a, b, /: FrozenArray(f(_unwrap(a), _unwrap(b)))

    xp.zeros = zeros  # type: ignore[attr-defined]
    xp.ones_like = ones_like  # type: ignore[attr-defined]
    xp.asarray = asarray  # type: ignore[attr-defined]
    xp.astype = astype  # type: ignore[attr-defined]
    xp.isdtype = isdtype  # type: ignore[attr-defined]
    xp.sum = sum  # type: ignore[attr-defined]
    xp.sqrt = unary(np.sqrt)  # type: ignore[attr-defined]
    xp.maximum = binary(np.maximum)  # type: ignore[attr-defined]
    xp.minimum = binary(np.minimum)  # type: ignore[attr-defined]
    return xp


frozen_xp = _ns()


def frozen(host: Any) -> FrozenArray:
    """Host data as a FrozenArray (a copy)."""
    return FrozenArray(np.array(host, copy=True))
