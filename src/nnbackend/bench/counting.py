"""Counting the array calls of a computation: a proxy namespace and its array proxy.

:class:`CountingNamespace` wraps an Array API namespace (or NumPy itself); arrays wrapped with
:meth:`CountingNamespace.wrap` are :class:`CountedArray` proxies that resolve their namespace to
it, so every namespace function, operator, indexing and NumPy call a computation issues on them
is counted by name. :func:`nnbackend.bench.count_calls` uses it to count one benchmark step.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from ..backend import to_numpy

__all__ = ["CountedArray", "CountingNamespace"]


def _unwrap(value: Any) -> Any:
    """The plain array behind a :class:`CountedArray`, recursively through containers."""
    kind = type(value)
    if kind is CountedArray:
        return value._a
    if kind is tuple:
        return tuple(_unwrap(v) for v in value)
    if kind is list:
        return [_unwrap(v) for v in value]
    if kind is dict:
        return {k: _unwrap(v) for k, v in value.items()}
    return value


class CountingNamespace:
    """A proxy of an array namespace that counts every call made through it.

    Wrap the arrays a computation starts from with :meth:`wrap`: the results are
    :class:`CountedArray` proxies whose ``__array_namespace__`` is this namespace, so code that
    resolves its namespace from its inputs (``array_api_compat.array_namespace``, as nnbackend
    does) calls back through it, and every operation is counted:

    - each call of a namespace function (``xp.sum``, ``xp.matmul``, ``xp.isdtype``, ...,
      sub-namespaces such as ``xp.linalg`` included), named by the function;
    - each operator on an array (``+``, ``@``, ``+=``, ``>``, unary ``-``, ...), indexing
      (``x[i]``, ``x[i] = v``), array-producing attribute (``.T``, ``.mT``), method call, and
      conversion to a Python number (``float(x)``, ``int(x)``, ``bool(x)``), named by its
      special method (``"__matmul__"``);
    - on NumPy, each NumPy function or ufunc called directly on a wrapped array (code that
      bypasses the namespace for speed), named ``"np.matmul"``, ``"np.add.reduce"``, ...

    Metadata (``shape``, ``dtype``, ``ndim``, ``size``, ``device``) and the namespace's
    constants and dtypes are free. Work a namespace function does internally is one call: the
    count is what the calling code issues, not what the library beneath executes.

    The proxies pass the checks code uses to choose a code path, so the count is that of the
    path the real arrays take: arrays report the wrapped array's class as their ``__class__``
    (as ``wrapt`` and ``unittest.mock`` proxies do), so ``isinstance(x, numpy.ndarray)`` holds
    for wrapped NumPy arrays, and the namespace carries the wrapped namespace's ``__name__``,
    so ``array_api_compat.is_numpy_namespace`` recognises it. (An identity test such as
    ``xp is array_api_compat.numpy`` is not fooled; nnbackend uses one only to skip a device
    comparison, which costs no array call.)

    Parameters
    ----------
    xp : namespace
        The namespace to count (``array_api_compat.numpy``, ``numpy``, ...).
    timed : iterable of str, or True
        Names (as counted: ``"matmul"``, ``"__matmul__"``, ``"np.matmul"``), or every name,
        whose calls are also timed with ``time.perf_counter``, around the wrapped call only
        (the proxies' unwrapping and wrapping included, a microsecond or so): how the
        benchmarks measure the time a step spends in its matrix products. Meaningful for
        libraries that compute synchronously (NumPy).
    weight : callable, optional
        Called after each timed call (outside its timing): the factor its seconds count with
        (default 1). The benchmarks pass the share of BLAS's threads the call ran on (1/k on
        one of nnbackend's k parallel parts: :func:`~nnbackend.bench.blas_core_share`), so
        that products running side by side on threads add up to the step's time they take,
        not to more than the wall time.

    Attributes
    ----------
    counts : collections.Counter
        Calls by name since the last :meth:`reset`.
    seconds : dict of str to float
        Seconds spent in the ``timed`` calls, by name, since the last :meth:`reset`.

    Examples
    --------
    >>> ns = CountingNamespace(array_api_compat.numpy)
    >>> a, b, c = (ns.wrap(np.ones((2, 2))) for _ in range(3))
    >>> total = ns.sum(a @ b + c)
    >>> ns.calls
    3
    """

    def __init__(self, xp: Any, *, timed: Iterable[str] | bool = (),
                 weight: Callable[[], float] | None = None,
                 _counts: Counter[str] | None = None, _seconds: dict[str, float] | None = None,
                 _lock: threading.Lock | None = None, _prefix: str = "") -> None:
        self._xp = xp
        self._weight = weight
        self._lock = threading.Lock() if _lock is None else _lock
        self._prefix = _prefix
        self._wrappers: dict[str, Any] = {}
        self._time_all = timed is True
        self._timed: frozenset[str] = frozenset(() if isinstance(timed, bool) else timed)
        self.counts: Counter[str] = Counter() if _counts is None else _counts
        self.seconds: dict[str, float] = {} if _seconds is None else _seconds
        # the wrapped namespace's name: name-based tests (array_api_compat.is_numpy_namespace)
        # must choose the same code path as for the real namespace
        self.__name__: str = getattr(xp, "__name__", type(xp).__name__)

    @property
    def calls(self) -> int:
        """Total number of counted calls since the last :meth:`reset`."""
        return sum(self.counts.values())

    def reset(self) -> None:
        """Set every count (and time) back to zero."""
        self.counts.clear()
        self.seconds.clear()

    def _count(self, name: str, function: Callable[..., Any], *args: Any) -> Any:
        """Count a call named ``name`` and make it (timed when ``name`` is)."""
        with self._lock:  # calls may come from several threads (nnbackend's parallel parts)
            self.counts[name] += 1
        if not self._time_all and name not in self._timed:
            return function(*args)
        start = time.perf_counter()
        result = function(*args)
        seconds = time.perf_counter() - start
        if self._weight is not None:
            seconds *= self._weight()
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        return result

    def wrap(self, value: Any) -> Any:
        """Wrap an array (or the arrays in a tuple or list) so its operations are counted."""
        kind = type(value)
        if kind is CountedArray:
            return value
        if kind is tuple:
            return tuple(self.wrap(v) for v in value)
        if kind is list:
            return [self.wrap(v) for v in value]
        if array_api_compat.is_array_api_obj(value):
            return CountedArray(value, self)
        return value

    @staticmethod
    def unwrap(value: Any) -> Any:
        """The plain array behind a :class:`CountedArray` (other values are returned as is)."""
        return _unwrap(value)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name != "__array_namespace_info__":
            return getattr(self._xp, name)
        wrapper = self._wrappers.get(name)
        if wrapper is not None:
            return wrapper
        value = getattr(self._xp, name)
        if isinstance(value, ModuleType):
            wrapper = CountingNamespace(value, timed=self._time_all or self._timed,
                                        weight=self._weight, _counts=self.counts,
                                        _seconds=self.seconds, _lock=self._lock,
                                        _prefix=f"{self._prefix}{name}.")
        elif callable(value) and not isinstance(value, type):
            wrapper = _CountingFunction(self, f"{self._prefix}{name}", value)
        else:
            return value  # constants and dtypes are free
        self._wrappers[name] = wrapper
        return wrapper

    def _call_native(self, function: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        """Call a NumPy function or ufunc method on unwrapped arguments; wrap the result (the
        ``out=`` proxy itself when the result was written into it)."""
        out = kwargs.get("out")
        result = function(*_unwrap(args), **_unwrap(kwargs))
        if out is not None:
            outs = out if isinstance(out, tuple) else (out,)
            results = result if isinstance(result, tuple) else (result,)
            mapped = tuple(o if type(o) is CountedArray and r is o._a else self.wrap(r)
                           for o, r in zip(outs, results, strict=False))
            return mapped if isinstance(result, tuple) else mapped[0]
        return self.wrap(result)

    def __repr__(self) -> str:
        return f"CountingNamespace({self.__name__}, calls={self.calls})"


class _CountingFunction:
    """A function of a :class:`CountingNamespace`: counts calls, and calls of its callable
    attributes (``xp.add.reduce`` counts as ``"add.reduce"``)."""

    def __init__(self, namespace: CountingNamespace, name: str,
                 function: Callable[..., Any]) -> None:
        self._ns, self.__name__, self._function = namespace, name, function
        self.__doc__ = getattr(function, "__doc__", None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._ns._count(self.__name__, self._ns._call_native, self._function, args,
                               kwargs)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._function, name)
        if callable(value) and not isinstance(value, type):
            return _CountingFunction(self._ns, f"{self.__name__}.{name}", value)
        return value

    def __repr__(self) -> str:
        return f"<counted {self.__name__}>"


class CountedArray:
    """An array proxy created by :meth:`CountingNamespace.wrap`; counts its operations.

    Operators and methods delegate to the wrapped array and wrap array results again; in-place
    operators return the proxy itself when the wrapped array was updated in place. NumPy
    functions and ufuncs called directly on proxies (a library's native fast path, or
    ``ndarray + proxy``) are counted through NumPy's ``__array_ufunc__`` and
    ``__array_function__`` protocols, named ``"np.add"``, ``"np.add.reduce"``, ``"np.sum"``.
    """

    __slots__ = ("_a", "_ns")

    _a: Any
    _ns: CountingNamespace

    def __init__(self, array: Any, namespace: CountingNamespace) -> None:
        object.__setattr__(self, "_a", array)
        object.__setattr__(self, "_ns", namespace)

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._a)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        name = f"{ufunc.__name__}" if method == "__call__" else f"{ufunc.__name__}.{method}"
        return self._ns._count(f"np.{name}", self._ns._call_native, getattr(ufunc, method),
                               inputs, kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        return self._ns._count(f"np.{func.__name__}", self._ns._call_native, func, args,
                               kwargs)

    def __array_namespace__(self, *, api_version: str | None = None) -> CountingNamespace:
        return self._ns

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return np.asarray(to_numpy(self._a), dtype=dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._a.shape)

    @property
    def dtype(self) -> Any:
        return self._a.dtype

    @property
    def ndim(self) -> int:
        return int(self._a.ndim)

    @property
    def size(self) -> int:
        return math.prod(tuple(self._a.shape))

    @property
    def device(self) -> Any:
        return array_api_compat.device(self._a)

    @property
    def T(self) -> Any:
        self._ns.counts["T"] += 1
        return self._ns.wrap(self._a.T)

    @property
    def mT(self) -> Any:
        self._ns.counts["mT"] += 1
        return self._ns.wrap(self._a.mT)

    def __len__(self) -> int:
        return len(self._a)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._a, name)
        if not callable(value):
            return self._ns.wrap(value)
        return _CountingFunction(self._ns, f".{name}", value)

    def __setattr__(self, name: str, value: Any) -> None:
        msg = f"CountedArray: cannot set attribute {name!r} on a counted array"
        raise AttributeError(msg)

    def __getitem__(self, key: Any) -> Any:
        self._ns.counts["__getitem__"] += 1
        return self._ns.wrap(self._a[_unwrap(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._ns.counts["__setitem__"] += 1
        self._a[_unwrap(key)] = _unwrap(value)

    def __repr__(self) -> str:
        return f"CountedArray({self._a!r})"

    def __str__(self) -> str:
        return str(self._a)


def _counted_operator(name: str, *, inplace: bool) -> Callable[..., Any]:
    """A special method of :class:`CountedArray` that counts and delegates ``name``."""

    def operator(self: CountedArray, *args: Any) -> Any:
        result = self._ns._count(name, getattr(self._a, name), *_unwrap(args))
        if result is NotImplemented:
            return result
        if inplace and result is self._a:
            return self
        return self._ns.wrap(result)

    operator.__name__ = operator.__qualname__ = name
    return operator


def _counted_conversion(name: str) -> Callable[[CountedArray], Any]:
    """``float(x)``-style conversion of :class:`CountedArray`: counted, returns a Python value."""

    def conversion(self: CountedArray) -> Any:
        self._ns.counts[name] += 1
        return getattr(self._a, name)()

    conversion.__name__ = conversion.__qualname__ = name
    return conversion


_BINARY = ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or",
           "xor", "lshift", "rshift")
for _op in _BINARY:
    setattr(CountedArray, f"__{_op}__", _counted_operator(f"__{_op}__", inplace=False))
    setattr(CountedArray, f"__r{_op}__", _counted_operator(f"__r{_op}__", inplace=False))
    setattr(CountedArray, f"__i{_op}__", _counted_operator(f"__i{_op}__", inplace=True))
for _op in ("lt", "le", "eq", "ne", "gt", "ge", "neg", "pos", "abs", "invert"):
    setattr(CountedArray, f"__{_op}__", _counted_operator(f"__{_op}__", inplace=False))
for _op in ("bool", "int", "float", "complex", "index"):
    setattr(CountedArray, f"__{_op}__", _counted_conversion(f"__{_op}__"))
CountedArray.__hash__ = None  # type: ignore[assignment]  # arrays are unhashable
del _op
