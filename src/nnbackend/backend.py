"""Backends: which Array API namespace and device new arrays are created on.

Arrays decide where compute happens; a :class:`Backend` decides only where *new* arrays go
(weights, optimizer state, batches) and how host data moves in and out. This module is the one
place that knows about CuPy, PyTorch, JAX or array-api-strict by name; the math never does.

Resolution of a backend request (:func:`get_backend`):

=======================  ======================================================================
request                  result
=======================  ======================================================================
``None``                 the innermost :func:`use_backend` default, else ``$NNBACKEND``, else
                         ``"auto"``
``"numpy"``              NumPy on the CPU
``"cupy"``               CuPy on the current CUDA device (``"cupy:N"``: device ``N``); raises
                         :class:`BackendUnavailableError` naming the cause when it cannot be met
``"auto"``               CuPy when it imports and a CUDA device is usable, else NumPy
``"torch"``              PyTorch through ``array_api_compat.torch`` (CPU unless ``device=``)
``"array_api_strict"``   the strict reference implementation (useful in tests)
``"gpulike"``            the GPU-like test device of :mod:`nnbackend.testing` (NumPy's arithmetic,
                         CuPy's rules; ``"gpulike:1"``: its device 1)
a namespace module       that namespace (``numpy``, ``cupy``, ``array_api_strict``,
                         ``array_api_compat.torch``, ``jax.numpy``, ...)
a :class:`Backend`       itself (with ``device=`` replaced when given)
=======================  ======================================================================

Importing this module imports neither CuPy nor PyTorch and never touches a GPU: CuPy is probed
lazily, the first time it is asked for, and the result is cached.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import array_api_compat
import array_api_compat.numpy
import numpy as np

from ._libraries import is_host_array, library_of, to_host
from ._typing import Array, Device, DType, Namespace
from .errors import BackendUnavailableError

__all__ = [
    "ENV_VAR",
    "Backend",
    "BackendInfo",
    "BackendUnavailableError",
    "available_backends",
    "backend_of",
    "dtype_name",
    "get_backend",
    "is_host_array",
    "supports_views",
    "to_numpy",
    "use_backend",
]

ENV_VAR = "NNBACKEND"
"""Environment variable holding the default backend request (``numpy``, ``cupy``, ``auto``, ...)."""

_NAMES = {
    "numpy": "numpy",
    "np": "numpy",
    "cupy": "cupy",
    "cuda": "cupy",
    "gpu": "cupy",
    "auto": "auto",
    "torch": "torch",
    "pytorch": "torch",
    "array_api_strict": "array_api_strict",
    "array-api-strict": "array_api_strict",
    "strict": "array_api_strict",
    "jax": "jax",
    "gpulike": "gpulike",
}
_CUPY_INSTALL_HINT = "pip install 'nnbackend[cuda12]' (or [cuda13], matching your CUDA driver)"
_FLOAT_NAMES = ("float32", "float64")

_default_request: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "nnbackend_default_backend", default=None
)


@dataclass(frozen=True)
class Backend:
    """Where new arrays live: an Array API namespace and one of its devices.

    Attributes
    ----------
    name : str
        ``"numpy"``, ``"cupy"``, ``"torch"``, ``"array_api_strict"``, ``"jax"``, or the module
        name of another Array API namespace.
    xp : namespace
        The Array API namespace (the ``array_api_compat`` wrapper where one exists), identical to
        what ``array_api_compat.array_namespace`` returns for this backend's arrays.
    device : device
        The device new arrays are created on (``"cpu"`` for NumPy, ``cupy.cuda.Device(n)``,
        ``array_api_strict.Device("device1")``, ``torch.device("cpu")``, ...).
    """

    name: str
    xp: Namespace
    device: Device

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, device={self.device!r})"

    @property
    def default_float(self) -> DType:
        """float32: the default floating dtype of every nnbackend array."""
        return self.xp.float32

    def dtype(self, spec: Any = None) -> DType:
        """Return the floating dtype of this namespace named by ``spec``.

        ``spec`` may be ``None`` (float32), ``"float32"``/``"float64"``, a NumPy dtype or scalar
        type, or a dtype of this namespace.
        """
        if spec is None:
            return self.default_float
        name = _float_name(spec, self.xp)
        if name is None:
            msg = f"dtype must be float32 or float64, got {spec!r}"
            raise TypeError(msg)
        if name == "float64" and not self._has_64bit():
            msg = (
                f"dtype {spec!r}: JAX computes in float64 only with 64-bit types enabled; call "
                "jax.config.update('jax_enable_x64', True) (or set JAX_ENABLE_X64=1) before "
                "creating arrays, or use float32"
            )
            raise TypeError(msg)
        return getattr(self.xp, name)

    @property
    def index_dtype(self) -> DType:
        """The namespace's default integer dtype for indices and labels (int64; int32 on JAX
        without 64-bit types)."""
        return self.xp.int64 if self._has_64bit() else self.xp.int32

    def _has_64bit(self) -> bool:
        """False only on JAX with ``jax_enable_x64`` off (its 64-bit dtypes then truncate)."""
        return self.name != "jax" or bool(_import("jax").config.read("jax_enable_x64"))

    def asarray(self, data: Any, *, dtype: Any = None, copy: bool | None = None) -> Array:
        """Move host data (or an array of any namespace) onto this backend's device.

        Parameters
        ----------
        data : array_like
            NumPy array, nested sequence, scalar, or an array of any namespace.
        dtype : optional
            Target dtype (see :meth:`dtype` for floating names); ``None`` keeps the data's dtype.
            The cast happens on the host, so every backend receives bit-identical values.
        copy : bool, optional
            ``True`` always copies (use it when the library will own and mutate the result).
        """
        if _is_array_of(data, self):
            if dtype is not None and data.dtype != self._dtype_any(dtype):
                return self.xp.astype(data, self._dtype_any(dtype))
            return self.xp.asarray(data, copy=True) if copy else data
        host = to_numpy(data) if _is_foreign_array(data) else data
        host = np.asarray(host, dtype=None if dtype is None else _numpy_dtype(dtype, self.xp))
        if self.name == "numpy":
            return np.array(host, copy=True) if copy else host
        if dtype is not None:
            self._dtype_any(dtype)  # float64 on JAX without 64-bit types: a clear error
        if not self._has_64bit() and host.dtype.itemsize == 8 and host.dtype.kind in "iu":
            host = _narrow_for_jax(host)
        elif self.name == "torch" and not _torch_can_share(host):
            host = np.array(host, copy=True)  # torch refuses negative strides, warns on read-only
        return self.xp.asarray(host, device=self.device, copy=copy)

    def holds(self, x: Any) -> bool:
        """Whether ``x`` is an array of this backend's namespace on its device (a JAX array
        traced by ``jax.jit``, which has no device, counts as here)."""
        return _is_array_of(x, self)

    def zeros(self, shape: tuple[int, ...], *, dtype: Any = None) -> Array:
        """Zeros of ``shape`` on this backend's device (float32 unless ``dtype`` says otherwise)."""
        return self.xp.zeros(shape, dtype=self.dtype(dtype), device=self.device)

    def to_numpy(self, x: Array) -> np.ndarray:
        """Copy an array of this backend to a NumPy array on the host (synchronises)."""
        return to_numpy(x)

    def synchronize(self) -> None:
        """Block until all work queued on this backend's device has finished (for timing)."""
        if self.name in ("cupy", "gpulike"):
            self.device.synchronize()
        elif self.name == "torch" and getattr(self.device, "type", "cpu") == "cuda":
            _import("torch").cuda.synchronize(self.device)

    def _dtype_any(self, spec: Any) -> DType:
        """Like :meth:`dtype` but accepts every dtype of the namespace (labels are integers)."""
        name = _dtype_name(spec, self.xp)
        if name == "float64":
            return self.dtype(name)
        if name in ("int64", "uint64") and not self._has_64bit():
            name = name.replace("64", "32")
        return getattr(self.xp, name) if name is not None else spec


def _narrow_for_jax(host: np.ndarray) -> np.ndarray:
    """64-bit integers as JAX's 32-bit ones (what JAX without x64 makes of them), refusing
    values that would wrap around."""
    narrow = np.dtype(host.dtype.str.replace("8", "4"))
    info = np.iinfo(narrow)
    if host.size and (host.min() < info.min or host.max() > info.max):
        msg = (
            f"integers from {host.min()} to {host.max()} do not fit JAX's {narrow.name} (64-bit "
            "types are off); enable them with jax.config.update('jax_enable_x64', True)"
        )
        raise OverflowError(msg)
    return host.astype(narrow)


def _torch_can_share(host: np.ndarray) -> bool:
    """Whether ``torch.asarray`` takes ``host`` as it is: writeable, no negative strides."""
    return bool(host.flags.writeable) and all(stride >= 0 for stride in host.strides)


# --------------------------------------------------------------------------------------------
# Resolution


def get_backend(spec: Any = None, *, device: Any = None) -> Backend:
    """Resolve a backend request to a :class:`Backend` (see the module docstring for the table).

    Parameters
    ----------
    spec : str, namespace, Backend or None
        The request. ``None`` reads the :func:`use_backend` default, then ``$NNBACKEND``, then
        ``"auto"``.
    device : optional
        A device of that namespace: a CUDA device index or ``cupy.cuda.Device`` for CuPy,
        ``array_api_strict.Device("device1")``, ``"cuda:0"`` for PyTorch, ...

    Raises
    ------
    BackendUnavailableError
        The backend exists but cannot be used here (CuPy missing, no usable CUDA device, ...).
    ValueError
        The request names no known backend.
    """
    source = "backend"
    if spec is None:
        spec = _default_request.get()
    if spec is None:
        env = os.environ.get(ENV_VAR, "").strip()
        spec, source = (env, f"${ENV_VAR}") if env else ("auto", "backend")
    if isinstance(spec, Backend):
        return spec if device is None else _resolve_name(spec.name, device, source, spec.xp)
    if isinstance(spec, str):
        request = spec.strip()
        name, colon, index = request.lower().partition(":")
        canonical = _NAMES.get(name)
        if colon and not index:
            msg = f"{source} {spec!r}: no device after the colon (as in '{name}:0')"
            raise ValueError(msg)
        if canonical is None or (index and canonical not in ("cupy", "torch", "gpulike")):
            msg = (
                f"{source} {spec!r} is not a known backend; use one of 'auto', 'numpy', 'cupy', "
                "'cupy:N', 'torch', 'torch:N', 'array_api_strict', 'jax', 'gpulike', or pass an "
                "Array API namespace"
            )
            raise ValueError(msg)
        if index:
            if device is not None:
                msg = f"{source} {spec!r} names a device and device={device!r} names another"
                raise ValueError(msg)
            device = _device_of_request(canonical, request.partition(":")[2], source, request)
        return _resolve_name(canonical, device, source, request=request)
    if isinstance(spec, ModuleType) or hasattr(spec, "__array_api_version__"):
        return _from_namespace(spec, device)
    msg = f"backend must be a name, an Array API namespace or a Backend, got {spec!r}"
    raise TypeError(msg)


@contextlib.contextmanager
def use_backend(spec: Any, *, device: Any = None) -> Iterator[Backend]:
    """Make ``spec`` the default backend inside a ``with`` block (thread- and task-local).

    The request is resolved on entry, so an unavailable backend fails at the ``with`` line.

    Examples
    --------
    >>> with use_backend("numpy") as be:
    ...     layer = Linear(4, 2)          # created on NumPy whatever $NNBACKEND says
    """
    backend = get_backend(spec, device=device)
    token = _default_request.set(backend)
    try:
        yield backend
    finally:
        _default_request.reset(token)


def _device_of_request(name: str, index: str, source: str, request: str) -> Any:
    """The device named after the colon of ``cupy:N``, ``gpulike:N`` or ``torch:...``."""
    if index.isascii() and index.isdigit():  # torch:N is CUDA device N, as torch.device(N) is
        return int(index)
    if name in ("cupy", "gpulike") or not index:
        what = "CUDA device" if name == "cupy" else "device"
        example = f"'{name}:0'" if name != "torch" else "'torch:0' or 'torch:cuda:1'"
        msg = f"{source} {request!r}: the {what} must be a number, as in {example}"
        raise ValueError(msg)
    return index


def _resolve_name(
    name: str, device: Any, source: str, xp: Namespace | None = None, request: str | None = None
) -> Backend:
    label = request or name
    if name == "numpy":
        if device not in (None, "cpu"):
            msg = f"NumPy arrays live on the CPU only; got device={device!r}"
            raise ValueError(msg)
        return Backend("numpy", array_api_compat.numpy, "cpu")
    if name == "auto":
        cupy, count, _ = _cupy_status()
        if cupy is not None and count > 0:
            return _cupy_backend(device, source, "cupy")
        return _resolve_name("numpy", device, source)
    if name == "cupy":
        return _cupy_backend(device, source, label)
    if name == "torch":
        torch = _import_or_unavailable("torch", "PyTorch", "pip install torch")
        dev = _torch_device(torch, device, f"{source} {label!r}")
        return Backend("torch", xp or _import("array_api_compat.torch"), dev)
    if name == "array_api_strict":
        strict = xp or _import_or_unavailable(
            "array_api_strict", "array-api-strict", "pip install array-api-strict"
        )
        return Backend("array_api_strict", strict, _strict_device(strict, device))
    if name == "jax":
        jax = _import_or_unavailable("jax", "JAX", "pip install jax")
        return Backend("jax", xp or _import("jax.numpy"), _jax_device(jax, device))
    if name == "gpulike":
        gpulike = _import("nnbackend.testing.gpulike")
        if isinstance(device, gpulike.Device):
            return Backend("gpulike", gpulike, device)
        try:
            return Backend("gpulike", gpulike, gpulike.Device(device or 0))
        except ValueError as exc:
            msg = f"{source} {label!r}: {exc}"
            raise ValueError(msg) from None
    raise AssertionError(name)  # pragma: no cover - _NAMES is exhaustive


def _torch_device(torch: Any, device: Any, where: str) -> Any:
    """``torch.device(device)`` once PyTorch has shown it can allocate there (CPU by default).

    ``cuda`` is checked against the devices PyTorch sees; any other accelerator (``mps``,
    ``xpu``, ...) by allocating an empty tensor on it, so a device that is missing fails here
    and not at the first array.
    """
    if isinstance(device, int) and not isinstance(device, bool):
        device = f"cuda:{device}"  # what torch.device(N) means, spelled so that it never raises
    try:
        dev = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError, ValueError) as exc:
        msg = f"{where}: {device!r} is not a PyTorch device ({exc})"
        raise ValueError(msg) from None
    if dev.type in ("cpu", "meta"):
        return torch.device(dev.type)  # "cpu:0" is "cpu": the device its tensors report
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            msg = f"{where} on {dev}: PyTorch {torch.__version__} sees no CUDA device"
            raise BackendUnavailableError(msg)
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= count:
            msg = f"{where} on {dev}: PyTorch sees only {count} CUDA device(s)"
            raise BackendUnavailableError(msg)
        return torch.device("cuda", index)  # "cuda" alone never equals a tensor's "cuda:0"
    try:
        torch.empty(0, device=dev)
    except Exception as exc:  # each backend of PyTorch raises its own error type
        msg = f"{where} on {dev}: PyTorch cannot use this device ({type(exc).__name__}: {exc})"
        raise BackendUnavailableError(msg) from None
    return dev


def _strict_device(strict: Any, device: Any) -> Any:
    """An ``array_api_strict.Device`` from itself or its name (``CPU_DEVICE`` by default)."""
    devices = list(strict.__array_namespace_info__().devices())
    if device is None:
        return strict.Device("CPU_DEVICE")
    if isinstance(device, str):
        match = [d for d in devices if str(d).endswith(f"'{device}')") or str(d) == device]
        device = match[0] if match else device
    if device not in devices:
        msg = f"array-api-strict has no device {device!r}; its devices are {devices}"
        raise ValueError(msg)
    return device


def _jax_device(jax: Any, device: Any) -> Any:
    """A JAX device from itself or a platform name (``"cpu"``, ``"gpu"``, ``"gpu:1"``)."""
    if device is None:
        return jax.devices()[0]
    if isinstance(device, jax.Device):
        return device
    if not isinstance(device, str):
        msg = f"a JAX device is a jax.Device or a platform name ('cpu', 'gpu:1'), got {device!r}"
        raise TypeError(msg)
    platform, _, index = device.partition(":")
    if index and not (index.isascii() and index.isdigit()):
        msg = f"JAX device {device!r}: the index after the colon must be a number"
        raise ValueError(msg)
    try:
        candidates = jax.devices(platform)
    except RuntimeError as exc:
        msg = (f"JAX has no {platform!r} device ({exc}); its devices are "
               f"{[str(d) for d in jax.devices()]}")
        raise BackendUnavailableError(msg) from None
    position = int(index) if index else 0
    if position >= len(candidates):
        msg = f"JAX has {len(candidates)} {platform!r} device(s), not {device!r}"
        raise BackendUnavailableError(msg)
    return candidates[position]


def _from_namespace(ns: Any, device: Any) -> Backend:
    name = library_of(ns).name
    if name in _NAMES.values():
        xp = ns if name == "array_api_strict" else None  # strict: that very namespace
        return _resolve_name(name, device, "backend", xp)
    if not hasattr(ns, "__array_api_version__"):
        msg = f"{getattr(ns, '__name__', ns)!r} is not an Array API namespace"
        raise TypeError(msg)
    return Backend(getattr(ns, "__name__", type(ns).__name__), ns, device)


# --------------------------------------------------------------------------------------------
# CuPy probe


def _cupy_device_count(cupy: ModuleType) -> int:
    """Number of usable CUDA devices; raises CuPy's own error when the driver is unusable."""
    count = int(cupy.cuda.runtime.getDeviceCount())
    if count:
        with cupy.cuda.Device(0):  # a device can be listed yet unusable: run one tiny kernel
            cupy.arange(2, dtype=cupy.float32).sum().item()
    return count


@functools.cache
def _cupy_status() -> tuple[ModuleType | None, int, str]:
    """Import CuPy and count its usable devices, once. Returns (cupy or None, count, reason)."""
    try:
        cupy = importlib.import_module("cupy")
    except ImportError as exc:
        return None, 0, f"CuPy is not installed ({exc}); {_CUPY_INSTALL_HINT}"
    except Exception as exc:  # a broken install raises anything from its extension modules
        return None, 0, f"CuPy is installed but failed to import: {type(exc).__name__}: {exc}"
    version = getattr(cupy, "__version__", "?")
    try:
        count = _cupy_device_count(cupy)
    except Exception as exc:
        reason = (
            f"CuPy {version} is installed but no usable CUDA device was found "
            f"({type(exc).__name__}: {exc})"
        )
        return cupy, 0, reason
    if count == 0:
        return cupy, 0, f"CuPy {version} is installed but CUDA reports no devices"
    return cupy, count, f"CuPy {version} with {count} CUDA device(s)"


def _cupy_backend(device: Any, source: str, label: str) -> Backend:
    cupy, count, reason = _cupy_status()
    if cupy is None or count == 0:
        msg = f"{source} {label!r} cannot be used: {reason}"
        raise BackendUnavailableError(msg)
    if device is None:
        dev = cupy.cuda.Device()
    elif isinstance(device, int):
        dev = cupy.cuda.Device(device)
    else:
        dev = device
    if not 0 <= dev.id < count:
        msg = f"{source} 'cupy:{dev.id}' cannot be used: only {count} CUDA device(s) present"
        raise BackendUnavailableError(msg)
    return Backend("cupy", _import("array_api_compat.cupy"), dev)


# --------------------------------------------------------------------------------------------
# Availability report


@dataclass(frozen=True)
class BackendInfo:
    """One row of :func:`available_backends`: whether a backend can be used here, and why."""

    name: str
    available: bool
    reason: str
    devices: tuple[str, ...] = ()


def available_backends() -> list[BackendInfo]:
    """List every known backend with its availability and the reason (imports them to check)."""
    rows = [BackendInfo("numpy", True, f"NumPy {np.__version__} on the CPU", ("cpu",))]
    _, count, reason = _cupy_status()
    rows.append(
        BackendInfo("cupy", count > 0, reason, tuple(f"cuda:{i}" for i in range(count)))
    )
    for name, module, label in (
        ("torch", "torch", "PyTorch"),
        ("array_api_strict", "array_api_strict", "array-api-strict"),
        ("jax", "jax", "JAX"),
    ):
        try:
            mod = importlib.import_module(module)
        except Exception as exc:
            rows.append(BackendInfo(name, False, f"{label} is not installed ({exc})"))
            continue
        devices: tuple[str, ...] = ("cpu",)
        if name == "torch" and mod.cuda.is_available():
            devices += tuple(f"cuda:{i}" for i in range(mod.cuda.device_count()))
        elif name == "array_api_strict":
            devices = tuple(str(d) for d in mod.__array_namespace_info__().devices())
        elif name == "jax":
            devices = tuple(str(d) for d in mod.devices())
        rows.append(BackendInfo(name, True, f"{label} {mod.__version__}", devices))
    rows.append(BackendInfo(
        "gpulike", True, "the GPU-like test device of nnbackend.testing (NumPy values, CuPy rules)",
        ("gpulike:0", "gpulike:1"),
    ))
    return rows


# --------------------------------------------------------------------------------------------
# Arrays: host transfer and introspection


def to_numpy(x: Any) -> np.ndarray:
    """Copy an array of any supported namespace to a host NumPy array (synchronises).

    NumPy arrays come back as they are; others through their library's explicit route
    (``.get()`` on CuPy and the GPU-like test device, ``.cpu().numpy()`` on PyTorch, ...).
    The result may be read-only or share memory with ``x`` (JAX, PyTorch on the CPU): copy it
    before writing to it.
    """
    return to_host(x)


def backend_of(x: Array) -> Backend:
    """The :class:`Backend` an array lives on (its namespace and device)."""
    xp = array_api_compat.array_namespace(x)
    return Backend(library_of(xp).name, xp, array_api_compat.device(x))


def dtype_name(dtype: Any) -> str:
    """Plain name of a dtype of any namespace: ``"float32"`` for np/cupy/strict/torch float32."""
    if isinstance(dtype, type):  # scalar types standing for dtypes (np.int64, jnp.int32)
        with contextlib.suppress(TypeError):
            return str(np.dtype(dtype).name)
    return str(dtype).rsplit(".", 1)[-1]


def supports_views(xp: Namespace) -> bool:
    """Whether ``xp``'s arrays are mutable in place and reshaped slices of them are views.

    True for NumPy, CuPy, PyTorch and the GPU-like test device; False for array-api-strict
    (the standard promises no views) and JAX (immutable arrays). Optimizers pack parameters
    into flat buffers only here. A capability, read from :func:`nnbackend._libraries.library_of`.
    """
    return library_of(xp).mutable_views


def _is_foreign_array(data: Any) -> bool:
    return not isinstance(data, np.ndarray) and array_api_compat.is_array_api_obj(data)


def _is_array_of(data: Any, backend: Backend) -> bool:
    if not array_api_compat.is_array_api_obj(data):
        return False
    if backend.name == "numpy":
        return isinstance(data, np.ndarray)
    try:
        if array_api_compat.array_namespace(data) is not backend.xp:
            return False
        # A JAX array traced by jax.jit has no device: it stays where the computation runs
        dev = array_api_compat.device(data)
        return dev is None or bool(dev == backend.device)
    except TypeError:
        return False


def _dtype_name(spec: Any, xp: Namespace) -> str | None:
    """Name of a dtype given as a string, a NumPy dtype/type, or a dtype of ``xp``."""
    if isinstance(spec, str):
        try:
            return str(np.dtype(spec).name)
        except TypeError:
            return None
    for name in ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8",
                 "bool"):
        if spec == getattr(xp, name, None):
            return name
    try:
        return str(np.dtype(spec).name)
    except TypeError:
        return None


def _float_name(spec: Any, xp: Namespace) -> str | None:
    name = _dtype_name(spec, xp)
    return name if name in _FLOAT_NAMES else None


def _numpy_dtype(spec: Any, xp: Namespace) -> np.dtype[Any]:
    name = _dtype_name(spec, xp)
    if name is None:
        msg = f"unsupported dtype {spec!r}"
        raise TypeError(msg)
    return np.dtype(name)


def _import(name: str) -> Any:
    return importlib.import_module(name)


def _import_or_unavailable(module: str, label: str, hint: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"{label} is not installed ({exc}); {hint}"
        raise BackendUnavailableError(msg) from exc
