"""The GPU-like test device: an Array API namespace with NumPy's arithmetic and CuPy's rules.

Arrays of this namespace hold exact NumPy values, so every value comparison a test makes on NumPy
applies, but they behave as CuPy's arrays do where a GPU differs from host memory:

- they live on a device that is not the host: ``x.device`` is a :class:`Device` (``Device(0)``,
  ``Device(1)``), ``__dlpack_device__`` reports ``(kDLCUDA, index)``, and creation functions
  without ``device=`` allocate on device 0, the "current device", as CuPy's do;
- they are mutable, basic slices are views and in-place operators write in place, so the library
  takes CuPy's code paths on them (flat parameter buffers, ``out=`` fast paths, bool × float);
- implicit host conversion is refused as CuPy refuses it: ``np.asarray(x)`` and ``__array__``
  raise TypeError, there is no buffer protocol and no ``__array_interface__``, a NumPy array as an
  operand or in ``x[...] = host`` is a TypeError, and ``asarray(host, copy=False)`` raises
  ValueError ("Unable to avoid copy") because a move from the host always copies;
- arrays on different devices do not mix (ValueError naming both);
- the explicit ways out are ``x.get()`` (CuPy's) and :meth:`nnbackend.Backend.to_numpy`; they and
  every other host read (``float``, ``int``, ``bool``, ``.item()``, ``.tolist()``, ``repr``) are
  counted by :func:`nnbackend.testing.count_host_reads`; as on CuPy 14 there is no
  ``__index__`` and no ``to_device`` method, lists of host values are not arrays, and sizes,
  axes and fill values are Python numbers, never device arrays.

Select it like any backend: ``get_backend("gpulike")`` (``"gpulike:1"`` for device 1),
``--backend gpulike`` or ``NNBACKEND=gpulike``.
"""

from __future__ import annotations

import builtins
import importlib
import operator
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .._libraries import Library
from ._host_reads import record

__array_api_version__ = "2024.12"

cnp: Any = importlib.import_module("array_api_compat.numpy")  # typed loosely on purpose
_KDLCUDA = 2
_NO_COPY = "Unable to avoid copy while creating an array as requested."
_IMPLICIT = (
    "Implicit conversion to a NumPy array is not allowed (GPU-like test device, as on CuPy): "
    "use .get() or Backend.to_numpy() to copy it to the host explicitly"
)


class Device:
    """Device ``index`` of the GPU-like test device (CuPy's ``cupy.cuda.Device`` stand-in)."""

    __slots__ = ("id",)

    def __init__(self, index: int = 0) -> None:
        if isinstance(index, builtins.bool) or not isinstance(index, int) or not (
            0 <= index < _N_DEVICES
        ):
            msg = f"gpulike has devices 0..{_N_DEVICES - 1}, got {index!r}"
            raise ValueError(msg)
        self.id = index

    def __eq__(self, other: object) -> builtins.bool:
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("gpulike", self.id))

    def __repr__(self) -> str:
        return f"<gpulike Device {self.id}>"

    def synchronize(self) -> None:
        """Wait for the device's queued work (none: NumPy computes eagerly)."""


_N_DEVICES = 2


def _device(device: Any) -> Device:
    """The device a creation function places its result on (device 0 when None)."""
    if device is None:
        return Device(0)
    if isinstance(device, Device):
        return device
    msg = f"gpulike arrays live on a gpulike Device, got device={device!r}"
    raise ValueError(msg)


class Array:
    """An array on the GPU-like test device (a NumPy array that refuses to be read implicitly)."""

    __slots__ = ("_a", "_dev")
    __array_ufunc__ = None  # NumPy operators defer to ours, which refuse host operands
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, data: np.ndarray, device: Device) -> None:
        self._a = data
        self._dev = device

    # -- the standard's attributes ------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype[Any]:
        return self._a.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._a.shape)

    @property
    def ndim(self) -> int:
        return int(self._a.ndim)

    @property
    def size(self) -> int:
        return int(self._a.size)

    @property
    def device(self) -> Device:
        return self._dev

    @property
    def T(self) -> Array:
        return Array(self._a.T, self._dev)

    @property
    def mT(self) -> Array:
        return Array(np.swapaxes(self._a, -1, -2), self._dev)

    def __array_namespace__(self, api_version: str | None = None) -> types.ModuleType:
        return _this_module

    def __dlpack_device__(self) -> tuple[int, int]:
        return (_KDLCUDA, self._dev.id)

    def __dlpack__(self, **kwargs: Any) -> Any:
        msg = "a gpulike array cannot be exported by DLPack (it stands for GPU memory)"
        raise BufferError(msg)

    # -- the ways to the host, each counted ---------------------------------------------------
    def get(self, stream: Any = None) -> np.ndarray:
        """Copy to a host NumPy array (CuPy's explicit route)."""
        record("get")
        return np.array(self._a, copy=True)

    def item(self) -> Any:
        record("item")
        return self._a.item()

    def tolist(self) -> Any:
        record("tolist")
        return self._a.tolist()

    def __float__(self) -> float:
        record("float")
        return float(self._a)

    def __int__(self) -> int:
        record("int")
        return int(self._a)

    def __complex__(self) -> complex:
        record("complex")
        return complex(self._a)

    def __bool__(self) -> builtins.bool:
        record("bool")
        return builtins.bool(self._a)

    def __repr__(self) -> str:
        record("repr")
        return f"gpulike.Array({np.array2string(self._a, separator=', ')}, device={self._dev})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError(_IMPLICIT)

    # -- shape-only, no read ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Iterator[Array]:
        return (self[i] for i in range(len(self)))

    # -- indexing -----------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> Array:
        key = _key(key, self._dev)
        result = self._a[key]
        if isinstance(result, np.generic):  # NumPy gives a scalar where CuPy gives a 0-d view
            result = self._a[(*key, ...) if isinstance(key, tuple) else (key, ...)]
        return Array(result, self._dev)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._a[_key(key, self._dev)] = _operand(value, self._dev)


def _key(key: Any, dev: Device) -> Any:
    if isinstance(key, tuple):
        return tuple(_key(k, dev) for k in key)
    if isinstance(key, Array):
        _same_device(key._dev, dev)
        return key._a
    if isinstance(key, np.ndarray):
        msg = "a NumPy array cannot index a gpulike array (it lives on the host): move it first"
        raise TypeError(msg)
    return key


def _same_device(a: Device, b: Device) -> None:
    if a != b:
        msg = f"arrays on different devices: {a} and {b}"
        raise ValueError(msg)


def _operand(value: Any, dev: Device) -> Any:
    """The NumPy value behind an operand: gpulike arrays of ``dev`` and Python/NumPy scalars."""
    if isinstance(value, Array):
        _same_device(value._dev, dev)
        return value._a
    if isinstance(value, builtins.bool | int | float | complex | np.generic):
        return value
    msg = (
        f"Unsupported type {type(value)!r}: gpulike arrays take gpulike arrays and scalars "
        "(move host data with asarray first, as on CuPy)"
    )
    raise TypeError(msg)


def _binary(op: Callable[[Any, Any], Any], reflected: builtins.bool = False) -> Any:
    def method(self: Array, other: Any) -> Array:
        b = _operand(other, self._dev)
        return Array(np.asarray(op(b, self._a) if reflected else op(self._a, b)), self._dev)

    return method


def _inplace(op: Callable[[Any, Any], Any]) -> Any:
    def method(self: Array, other: Any) -> Array:
        op(self._a, _operand(other, self._dev))  # NumPy's in-place operator: writes self._a
        return self

    return method


def _unary(op: Callable[[Any], Any]) -> Any:
    def method(self: Array) -> Array:
        return Array(np.asarray(op(self._a)), self._dev)

    return method


_op: Any  # (below, the namespace defines all, any, sum, max...: builtins are spelt out)
for _name, _op in {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
    "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow,
    "matmul": operator.matmul, "and": operator.and_, "or": operator.or_, "xor": operator.xor,
    "lshift": operator.lshift, "rshift": operator.rshift,
}.items():
    setattr(Array, f"__{_name}__", _binary(_op))
    setattr(Array, f"__r{_name}__", _binary(_op, reflected=True))
for _name, _op in {
    "iadd": operator.iadd, "isub": operator.isub, "imul": operator.imul,
    "itruediv": operator.itruediv, "ifloordiv": operator.ifloordiv, "imod": operator.imod,
    "ipow": operator.ipow, "imatmul": operator.imatmul, "iand": operator.iand,
    "ior": operator.ior, "ixor": operator.ixor, "ilshift": operator.ilshift,
    "irshift": operator.irshift,
}.items():
    setattr(Array, f"__{_name}__", _inplace(_op))
for _name, _op in {
    "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
    "eq": operator.eq, "ne": operator.ne,
}.items():
    setattr(Array, f"__{_name}__", _binary(_op))
for _name, _op in {
    "neg": operator.neg, "pos": operator.pos, "abs": operator.abs, "invert": operator.invert,
}.items():
    setattr(Array, f"__{_name}__", _unary(_op))


# --------------------------------------------------------------------------------------------
# The namespace: the standard's functions over array_api_compat.numpy, arrays unwrapped in and
# wrapped out, every array argument on one device.


def _unwrap(value: Any, devices: list[Device], *, sequence_of_arrays: builtins.bool = False) -> Any:
    """The NumPy value of an argument. Lists and tuples are either sequences of gpulike arrays
    (``concat``, ``stack``, ...) or shapes and axes of Python ints, as CuPy takes them: host
    data in a list and a device array used as an int are refused (CuPy would sync or fail)."""
    if isinstance(value, Array):
        devices.append(value._dev)
        return value._a
    if isinstance(value, tuple | list):
        if sequence_of_arrays and builtins.all(isinstance(v, Array) for v in value):
            return type(value)(_unwrap(v, devices) for v in value)
        if builtins.all(isinstance(v, _SHAPE_ITEMS) for v in value):
            return value
        msg = (
            f"Unsupported type {type(value)!r}: gpulike functions take gpulike arrays, and "
            "lists or tuples only of gpulike arrays (concat, stack) or of ints (shapes, axes)"
        )
        raise TypeError(msg)
    if isinstance(value, np.ndarray):
        msg = (
            "Unsupported type <class 'numpy.ndarray'>: a host array passed to a gpulike function "
            "(move it with asarray first, as on CuPy)"
        )
        raise TypeError(msg)
    return value


def _wrap(value: Any, dev: Device) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return Array(np.asarray(value), dev)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # unique_all & co.
        return type(value)(*(_wrap(v, dev) for v in value))
    if isinstance(value, tuple | list):
        return type(value)(_wrap(v, dev) for v in value)
    return value


def _common_device(devices: list[Device], device: Any = None) -> Device:
    dev = _device(device) if device is not None else (devices[0] if devices else Device(0))
    for other in devices:
        _same_device(other, dev)
    return dev


def _wrapped(name: str) -> Callable[..., Any]:
    func = getattr(cnp, name)

    sequences = name in _SEQUENCE_FUNCTIONS

    def function(*args: Any, **kwargs: Any) -> Any:
        devices: list[Device] = []
        out = kwargs.pop("out", None)
        args = tuple(_unwrap(v, devices, sequence_of_arrays=sequences) for v in args)
        kwargs = {k: _unwrap(v, devices) for k, v in kwargs.items()}
        _no_device_ints(kwargs)
        if out is not None:  # CuPy's native spelling, used by the fast paths (matmul, sum)
            _common_device([*devices, out._dev])
            getattr(np, name)(*args, out=out._a, **kwargs)
            return out
        return _wrap(func(*args, **kwargs), _common_device(devices))

    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"``{name}`` of the standard, computed by NumPy on the gpulike device."
    return function


_SHAPE_ITEMS = (int, np.integer, types.EllipsisType, slice, type(None))
_SEQUENCE_FUNCTIONS = frozenset({"concat", "stack", "broadcast_arrays", "meshgrid"})
_INT_KEYWORDS = frozenset({"axis", "shape", "k", "n", "n_rows", "n_cols", "num", "correction"})


def _no_device_ints(kwargs: dict[str, Any]) -> None:
    """Axes and sizes must be Python numbers: a 0-d device array there needs a host read."""
    for key in _INT_KEYWORDS.intersection(kwargs):
        if isinstance(kwargs[key], np.ndarray):
            msg = f"{key}= must be a Python int or tuple of ints, not a gpulike array"
            raise TypeError(msg)


def _creation(name: str) -> Callable[..., Any]:
    func = getattr(cnp, name)

    def function(*args: Any, device: Any = None, **kwargs: Any) -> Any:
        devices: list[Device] = []
        like = name.endswith("_like")
        if not like and builtins.any(isinstance(v, Array) for v in (*args, *kwargs.values())):
            msg = f"gpulike.{name}: sizes and fill values are Python numbers (not device arrays)"
            raise TypeError(msg)
        args = tuple(_unwrap(v, devices) for v in args)
        kwargs = {k: _unwrap(v, devices) for k, v in kwargs.items()}
        dev = _device(device) if device is not None else _common_device(devices)
        return _wrap(func(*args, **kwargs), dev)

    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"``{name}`` of the standard on a gpulike device (device 0 by default)."
    return function


def asarray(
    obj: Any, /, *, dtype: Any = None, device: Any = None, copy: builtins.bool | None = None
) -> Array:
    """The standard's ``asarray``; from the host it always copies (``copy=False`` raises)."""
    if isinstance(obj, Array):
        target = obj._dev if device is None else _device(device)
        same = target == obj._dev and (dtype is None or np.dtype(dtype) == obj.dtype)
        if same and not copy:
            return obj
        if copy is False:
            raise ValueError(_NO_COPY)
        data = obj._a.astype(dtype) if dtype is not None else obj._a.copy()
        return Array(data, target)
    if copy is False:
        raise ValueError(_NO_COPY)
    return Array(np.array(obj, dtype=dtype, copy=True), _device(device))


def from_dlpack(x: Any, /, *, device: Any = None, copy: builtins.bool | None = None) -> Array:
    """Only gpulike arrays can be imported (a host DLPack capsule is not GPU memory)."""
    if isinstance(x, Array):
        return asarray(x, device=device, copy=copy)
    msg = f"gpulike.from_dlpack: cannot import a {type(x).__name__} (not on a gpulike device)"
    raise BufferError(msg)


def astype(x: Array, dtype: Any, /, *, copy: builtins.bool = True, device: Any = None) -> Array:
    """The standard's ``astype`` (optionally to another gpulike device)."""
    target = x._dev if device is None else _device(device)
    moves = target != x._dev  # a move to another device always copies
    return Array(cnp.astype(x._a, dtype, copy=copy or moves), target)


class _Info:
    """``__array_namespace_info__()``: capabilities, devices and default dtypes."""

    def capabilities(self) -> dict[str, Any]:
        return {"boolean indexing": True, "data-dependent shapes": True, "max dimensions": 64}

    def default_device(self) -> Device:
        return Device(0)

    def devices(self) -> list[Device]:
        return [Device(i) for i in range(_N_DEVICES)]

    def default_dtypes(self, *, device: Any = None) -> dict[str, Any]:
        return dict(cnp.__array_namespace_info__().default_dtypes())

    def dtypes(self, *, device: Any = None, kind: Any = None) -> dict[str, Any]:
        return dict(cnp.__array_namespace_info__().dtypes(kind=kind))


def __array_namespace_info__() -> _Info:
    return _Info()


_FUNCTIONS = (  # noqa: SIM905 - a list of 130 quoted names reads worse
    # elementwise
    "abs acos acosh add asin asinh atan atan2 atanh bitwise_and bitwise_left_shift "
    "bitwise_invert bitwise_or bitwise_right_shift bitwise_xor ceil clip conj copysign cos cosh "
    "divide equal exp expm1 floor floor_divide greater greater_equal hypot imag isfinite isinf "
    "isnan less less_equal log log1p log2 log10 logaddexp logical_and logical_not logical_or "
    "logical_xor maximum minimum multiply negative nextafter not_equal positive pow real "
    "reciprocal remainder round sign signbit sin sinh square sqrt subtract tan tanh trunc "
    # manipulation, searching, sets, sorting, statistics, utilities, linear algebra, indexing
    "broadcast_arrays broadcast_to concat expand_dims flip moveaxis permute_dims repeat reshape "
    "roll squeeze stack tile unstack argmax argmin count_nonzero nonzero searchsorted where "
    "unique_all unique_counts unique_inverse unique_values argsort sort cumulative_prod "
    "cumulative_sum max mean min prod std sum var all any diff matmul matrix_transpose tensordot "
    "vecdot take take_along_axis can_cast result_type meshgrid tril triu"
).split()
_CREATION = "arange empty empty_like eye full full_like linspace ones ones_like zeros zeros_like"

for _name in _FUNCTIONS:
    globals()[_name] = _wrapped(_name)
for _name in _CREATION.split():
    globals()[_name] = _creation(_name)

isdtype = cnp.isdtype
finfo = cnp.finfo
iinfo = cnp.iinfo
e, inf, nan, pi, newaxis = np.e, np.inf, np.nan, np.pi, None
bool = np.dtype(builtins.bool)  # the standard's dtype name
int8, int16, int32, int64 = (np.dtype(t) for t in ("int8", "int16", "int32", "int64"))
uint8, uint16, uint32, uint64 = (np.dtype(t) for t in ("uint8", "uint16", "uint32", "uint64"))
float32, float64 = np.dtype("float32"), np.dtype("float64")
complex64, complex128 = np.dtype("complex64"), np.dtype("complex128")

_this_module = sys.modules[__name__]

__nnbackend_library__ = Library(
    "gpulike", mutable_views=True, native=_this_module, to_host=Array.get
)
"""How nnbackend treats this namespace: CuPy's code paths (views, ``out=``), ``.get()`` out."""
