"""Input validation shared by layers and losses: errors that name where, what, and the values."""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

import array_api_compat
import array_api_compat.numpy
from array_api_compat import array_namespace, device, is_array_api_obj

from ._libraries import library_of, type_decides_namespace
from ._typing import Array, Namespace

__all__ = [
    "check_array",
    "check_flag",
    "check_floating",
    "check_fraction",
    "check_int",
    "check_nonnegative",
    "check_number",
    "check_positive",
    "check_probability",
    "check_same_placement",
    "describe_placement",
    "device_of",
    "dtype_kind",
    "is_floating",
    "matching_namespace",
    "name_mismatch",
    "namespace_of",
    "same_device",
]

_NAMESPACE_BY_TYPE: dict[type, Namespace] = {}
_AUTOGRAD_TYPES: set[type] = set()  # array types that may carry an autograd graph (PyTorch)


def namespace_of(x: object) -> Namespace:
    """``array_namespace(x)`` for one array, cached by type for the libraries whose array type
    alone decides the namespace (array_namespace costs ~2 µs a call, the cache ~0.1 µs)."""
    xp = _NAMESPACE_BY_TYPE.get(type(x))
    if xp is None:
        xp = array_namespace(x)
        if type_decides_namespace(x, xp):
            _NAMESPACE_BY_TYPE[type(x)] = xp
            if library_of(xp).records_autograd:
                _AUTOGRAD_TYPES.add(type(x))
    return xp


_KINDS = ("real floating", "signed integer", "unsigned integer", "bool", "complex floating")
_KIND: dict[tuple[int, Any], str] = {}


def dtype_kind(dtype: Any, xp: Namespace) -> str:
    """The Array API kind of ``dtype``: ``"bool"``, ``"signed integer"``, ``"unsigned integer"``,
    ``"real floating"``, ``"complex floating"`` or ``"other"``; cached (``isdtype`` costs
    ~1-2 µs a call on NumPy, and the hot path asks on every step)."""
    key = (id(xp), dtype)
    try:
        return _KIND[key]
    except KeyError:
        kind = _KIND[key] = _kind(dtype, xp)
        return kind
    except TypeError:  # an unhashable dtype
        return _kind(dtype, xp)


def _kind(dtype: Any, xp: Namespace) -> str:
    return next((kind for kind in _KINDS if xp.isdtype(dtype, kind)), "other")


def is_floating(dtype: Any, xp: Namespace) -> bool:
    """Whether ``dtype`` is a real floating dtype of ``xp``."""
    return dtype_kind(dtype, xp) == "real floating"


def device_of(x: Array, xp: Namespace) -> Any:
    """``device(x)``, answered without a query on single-device NumPy."""
    return "cpu" if xp is array_api_compat.numpy else device(x)


def same_device(x: Array, ref: Array, xp: Namespace) -> bool:
    """Whether ``x`` and ``ref`` (both of namespace ``xp``) live on one device.

    NumPy has a single device, so its arrays need no (comparatively slow) device query.
    """
    return xp is array_api_compat.numpy or bool(device(x) == device(ref))


def matching_namespace(x: object, ref: Array) -> Namespace | None:
    """The namespace of ``x`` when it is an array of ``ref``'s type, dtype and device, else None.

    The cheap test that valid inputs pass at every public boundary; on None, the caller runs
    its full checks to explain what is wrong.
    """
    xp = _NAMESPACE_BY_TYPE.get(type(x))
    if xp is None or type(x) is not type(ref) or (
        type(x) in _AUTOGRAD_TYPES and x.requires_grad  # type: ignore[attr-defined]
    ):
        return None
    if x.dtype != ref.dtype or not same_device(x, ref, xp):  # type: ignore[attr-defined]
        return None
    return xp


def describe_placement(x: Array) -> str:
    """'<namespace> on <device>' for an error message."""
    try:
        name = array_namespace(x).__name__.removeprefix("array_api_compat.")
    except TypeError:
        return type(x).__name__
    return f"{name} on {device(x)!r}"


def check_array(x: object, *, caller: str, what: str) -> Namespace:
    """Return the namespace of ``x``; raise TypeError naming ``caller`` if it is not an array
    (or is a PyTorch tensor recording an autograd graph: nnbackend computes gradients itself)."""
    xp = _NAMESPACE_BY_TYPE.get(type(x))
    if xp is None:
        if not is_array_api_obj(x):
            msg = f"{caller}: {what} must be an array, got {type(x).__name__}"
            raise TypeError(msg)
        xp = namespace_of(x)
    if type(x) in _AUTOGRAD_TYPES and x.requires_grad:  # type: ignore[attr-defined]
        msg = (
            f"{caller}: {what} is a PyTorch tensor that requires grad; nnbackend computes "
            "gradients itself, pass it with .detach()"
        )
        raise TypeError(msg)
    return xp


def check_int(value: Any, *, what: str, minimum: int = 0) -> int:
    """``value`` as a Python int ≥ ``minimum``: any integer type but bool.

    Raises TypeError for a non-integer and ValueError below ``minimum``, each naming ``what``.
    """
    wanted = {0: "a non-negative integer", 1: "a positive integer"}.get(
        minimum, f"an integer >= {minimum}"
    )
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        msg = f"{what} must be {wanted}, got {value!r}"
        raise TypeError(msg) from None
    if number < minimum:
        msg = f"{what} must be {wanted}, got {number}"
        raise ValueError(msg)
    return number


def check_number(value: Any, *, caller: str, name: str) -> float:
    """A finite real Python number as a float; arrays and bools are rejected."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = f"{caller}: {name} must be a real Python number, got {value!r}"
        raise TypeError(msg)
    out = float(value)
    if not math.isfinite(out):
        msg = f"{caller}: {name} must be finite, got {value!r}"
        raise ValueError(msg)
    return out


def check_nonnegative(value: Any, *, caller: str, name: str) -> float:
    """A finite real number ≥ 0."""
    out = check_number(value, caller=caller, name=name)
    if out < 0.0:
        msg = f"{caller}: {name} must be >= 0, got {value!r}"
        raise ValueError(msg)
    return out


def check_positive(value: Any, *, caller: str, name: str) -> float:
    """A finite real number > 0."""
    out = check_number(value, caller=caller, name=name)
    if out <= 0.0:
        msg = f"{caller}: {name} must be > 0, got {value!r}"
        raise ValueError(msg)
    return out


def check_fraction(value: Any, *, caller: str, name: str) -> float:
    """A real number in [0, 1) (a decay rate: 1 would never forget, above 1 diverges)."""
    out = check_number(value, caller=caller, name=name)
    if not 0.0 <= out < 1.0:
        msg = f"{caller}: {name} must lie in [0, 1), got {value!r}"
        raise ValueError(msg)
    return out


def check_probability(value: Any, *, caller: str, name: str) -> float:
    """A real number in [0, 1] as a float: TypeError for a non-number (a string, a bool, an
    array), ValueError outside the range (NaN too), each naming ``caller``, ``name``, the value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = (f"{caller}: {name} must be a real number in [0, 1], got {value!r} "
               f"of type {type(value).__name__}")
        raise TypeError(msg)
    probability = float(value)
    if not 0.0 <= probability <= 1.0:  # also refuses NaN
        msg = f"{caller}: {name} must lie in [0, 1], got {value!r}"
        raise ValueError(msg)
    return probability


def check_flag(value: Any, *, caller: str, name: str) -> bool:
    """A Python bool."""
    if not isinstance(value, bool):
        msg = f"{caller}: {name} must be True or False, got {value!r}"
        raise TypeError(msg)
    return value


def name_mismatch(missing: list[str], unexpected: list[str]) -> str:
    """``"; missing [...]; unexpected [...]"`` (each part only when non-empty), for a message."""
    return (f"; missing {missing}" if missing else "") + (
        f"; unexpected {unexpected}" if unexpected else ""
    )


def check_floating(x: Array, xp: Namespace, *, caller: str, what: str) -> None:
    """Raise TypeError unless ``x`` has a real floating dtype."""
    if not is_floating(x.dtype, xp):
        msg = f"{caller}: {what} must have a floating dtype (float32 or float64), got {x.dtype}"
        raise TypeError(msg)


def check_same_placement(
    x: Array, xp: Namespace, ref: Array, ref_xp: Namespace, *, caller: str, what: str, ref_what: str
) -> None:
    """Raise ValueError unless ``x`` and ``ref`` share a namespace and a device."""
    if xp is not ref_xp or not same_device(x, ref, xp):
        msg = (
            f"{caller}: {what} is {describe_placement(x)} but {ref_what} is "
            f"{describe_placement(ref)}; move it with backend.asarray(...) or model.to(...)"
        )
        raise ValueError(msg)
