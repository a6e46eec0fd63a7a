"""MPI through mpi4py: the communicator of CPU jobs launched with ``mpiexec``.

:class:`MPICommunicator` sums and broadcasts arrays with MPI's own collectives
(``MPI_Allreduce`` with ``MPI_IN_PLACE``, ``MPI_Bcast``), one call per array: the callers pass a
few large flat buffers (a model's gradient arena in chunks), never one array per tensor.

Where an array goes:

- NumPy arrays (C-contiguous, writable) are handed to MPI as they are and reduced in place.
- CuPy arrays go to MPI as device buffers when the MPI library is CUDA-aware
  (:func:`cuda_aware_mpi`), after the current stream is synchronised (MPI does not know CUDA
  streams: the kernels that wrote the buffer must have finished). Otherwise, and by default,
  they are staged through the host as every other library is.
- Every other library (PyTorch, array-api-strict, JAX, the GPU-like test device, CuPy without a
  CUDA-aware MPI) is staged through the host: one explicit copy to the host
  (:meth:`nnbackend.Backend.to_numpy`), the MPI collective on that copy, one explicit copy back
  (:meth:`nnbackend.Backend.asarray`) written into the array where its library mutates in
  place, returned as a new array where arrays are immutable (JAX, array-api-strict): the caller
  stores the returned arrays back, as :meth:`Communicator.all_reduce` says.

MPI's sums are taken in an order every rank shares (the reduction tree depends on the ranks,
not on timing), so every rank receives bit-identical totals.

Examples
--------
Run with ``mpiexec -n 2 python script.py``:

>>> import numpy as np
>>> from nnbackend.distributed.mpi import MPICommunicator
>>> comm = MPICommunicator()
>>> g = np.full(3, float(comm.rank + 1))
>>> comm.all_reduce([g])[0]        # on both ranks: 1 + 2
array([3., 3., 3.])
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from typing import Any

import numpy as np

from .._typing import Array
from ..backend import Backend, backend_of, dtype_name
from .comm import Communicator, check_root, store_into

__all__ = ["CUDA_AWARE_ENV", "MPICommunicator", "cuda_aware_mpi", "import_mpi"]

CUDA_AWARE_ENV = "NNBACKEND_MPI_CUDA_AWARE"
_INSTALL_HINT = 'pip install "nnbackend[mpi]" (mpi4py and the MPICH library, with mpiexec)'
_MPIX_GPU_SUPPORT_CUDA = 0  # MPICH's enum MPIX_GPU_SUPPORT_CUDA


def import_mpi() -> Any:
    """``mpi4py.MPI`` (importing it initialises MPI), or an ImportError saying what to install."""
    try:
        from mpi4py import MPI
    except ImportError as error:
        msg = f"MPI needs mpi4py and an MPI library: {_INSTALL_HINT} ({error})"
        raise ImportError(msg) from error
    return MPI


def cuda_aware_mpi() -> bool:
    """Whether the loaded MPI library accepts CUDA device buffers.

    The environment variable ``NNBACKEND_MPI_CUDA_AWARE`` decides when set (``1``: yes,
    ``0``: no). Otherwise the loaded MPI library is asked: ``MPIX_GPU_query_support`` for CUDA
    (MPICH ≥ 4), else ``MPIX_Query_cuda_support()`` (Open MPI). Anything that fails (no MPI
    library found, neither function exported, an error) answers False: staging through the host
    is always correct, a device buffer handed to a host-only MPI crashes.

    MPI must be initialised (``mpi4py.MPI`` imported) for the library's answer to count.
    """
    forced = os.environ.get(CUDA_AWARE_ENV, "").strip()
    if forced in ("1", "0"):
        return forced == "1"
    if forced:
        msg = f"{CUDA_AWARE_ENV} must be 1 or 0, got {forced!r}"
        raise ValueError(msg)
    try:
        return _query_library()
    except Exception:  # an unknown library is treated as host-only (see the docstring)
        return False


def _mpi_library_paths() -> list[str]:
    """Paths of the MPI libraries mapped into this process (``libmpi.so*``, ``libmpich*``)."""
    paths: list[str] = []
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) < 6:
                continue
            path = fields[-1]
            base = os.path.basename(path)
            if base.startswith(("libmpi.so", "libmpi_", "libmpich")) and path not in paths:
                paths.append(path)
    return paths


def _query_library() -> bool:
    for path in _mpi_library_paths():
        lib = ctypes.CDLL(path)  # already loaded: returns the same handle
        query = getattr(lib, "MPIX_GPU_query_support", None)
        if query is not None:
            flag = ctypes.c_int(0)
            query.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
            query.restype = ctypes.c_int
            if query(_MPIX_GPU_SUPPORT_CUDA, ctypes.byref(flag)) == 0:  # MPI_SUCCESS
                return bool(flag.value)
        query = getattr(lib, "MPIX_Query_cuda_support", None)
        if query is not None:
            query.argtypes = []
            query.restype = ctypes.c_int
            return bool(query())
    return False


_ABORT_GRACE_S = 0.2
"""Seconds between writing a failing rank's message and MPI_Abort (see ``abort``)."""


class MPICommunicator(Communicator):
    """The ranks of an MPI communicator (``MPI.COMM_WORLD`` unless told otherwise).

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm, optional
        The group; defaults to ``MPI.COMM_WORLD`` (every process ``mpiexec`` started).
    cuda_aware : bool, optional
        Hand CuPy arrays to MPI as device buffers. Defaults to :func:`cuda_aware_mpi`, asked the
        first time a CuPy array is reduced.

    Notes
    -----
    Every collective blocks until every rank has called it (MPI has no timeout): a rank that
    raises instead should end the job (:func:`nnbackend.distributed.install_abort_hook`).
    """

    name = "mpi"

    def __init__(self, comm: Any = None, *, cuda_aware: bool | None = None) -> None:
        self._MPI = import_mpi()
        self.comm = self._MPI.COMM_WORLD if comm is None else comm
        super().__init__(int(self.comm.Get_rank()), int(self.comm.Get_size()))
        self._cuda_aware = cuda_aware

    @property
    def cuda_aware(self) -> bool:
        """Whether CuPy arrays go to MPI as device buffers (see :func:`cuda_aware_mpi`)."""
        if self._cuda_aware is None:
            self._cuda_aware = cuda_aware_mpi()
        return self._cuda_aware

    # -- arrays ------------------------------------------------------------------------------

    def _all_reduce(self, arrays: list[Array]) -> list[Array]:
        return [self._reduce_one(a) for a in arrays]

    def _broadcast(self, arrays: list[Array], root: int) -> list[Array]:
        check_root(root, self.size)
        return [self._broadcast_one(a, root) for a in arrays]

    def _reduce_one(self, a: Array) -> Array:
        MPI = self._MPI
        if isinstance(a, np.ndarray):
            self._check_writable(a, "all_reduce")
            if a.flags.c_contiguous:
                self.comm.Allreduce(MPI.IN_PLACE, a, op=MPI.SUM)
                return a
            host = np.ascontiguousarray(a)  # a strided view: reduced as a copy, written back
            self.comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
            a[...] = host
            return a
        backend = backend_of(a)
        if self._on_device(a, backend):
            self.comm.Allreduce(MPI.IN_PLACE, a, op=MPI.SUM)
            return a
        host = np.array(backend.to_numpy(a), copy=True, order="C")  # the one transfer out
        self.comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
        return store_into(a, backend.asarray(host, copy=True))  # and the one transfer back

    def _broadcast_one(self, a: Array, root: int) -> Array:
        if isinstance(a, np.ndarray):
            if self.rank != root:
                self._check_writable(a, "broadcast")
            if a.flags.c_contiguous:
                self.comm.Bcast(a, root=root)
                return a
            host = np.ascontiguousarray(a)
            self.comm.Bcast(host, root=root)
            if self.rank != root:
                a[...] = host
            return a
        backend = backend_of(a)
        if self._on_device(a, backend):
            self.comm.Bcast(a, root=root)
            return a
        if self.rank == root:
            host = np.ascontiguousarray(backend.to_numpy(a))  # read only: no copy needed
            self.comm.Bcast(host, root=root)
            return a  # the root's array is the result: nothing comes back to it
        # The other ranks only receive: a host buffer of the array's shape and dtype, no read.
        host = np.empty(tuple(int(d) for d in a.shape), dtype=_host_dtype(a))
        self.comm.Bcast(host, root=root)
        return store_into(a, backend.asarray(host, copy=True))

    def _on_device(self, a: Array, backend: Backend) -> bool:
        """CuPy arrays with a CUDA-aware MPI: synchronise the stream, pass the device buffer."""
        if not _is_cuda_buffer(backend) or not self.cuda_aware:
            return False
        flags = getattr(a, "flags", None)
        if flags is not None and not flags.c_contiguous:
            msg = (f"MPICommunicator (rank {self.rank}): CUDA-aware MPI needs C-contiguous "
                   f"device arrays, got shape {tuple(a.shape)} on {backend!r}")
            raise ValueError(msg)
        _synchronize_current_stream()  # MPI reads the buffer outside any CUDA stream
        return True

    def _check_writable(self, a: np.ndarray, what: str) -> None:
        if not a.flags.writeable:
            msg = (f"MPICommunicator.{what} (rank {self.rank}): the NumPy array of shape "
                   f"{a.shape} and dtype {a.dtype} is read-only; pass a writable array (the "
                   "result is written into it)")
            raise ValueError(msg)

    # -- host values -------------------------------------------------------------------------

    def _all_reduce_host(self, values: np.ndarray) -> np.ndarray:
        if not isinstance(values, np.ndarray | np.generic | int | float | list | tuple):
            msg = (f"MPICommunicator.all_reduce_host (rank {self.rank}): expected host values "
                   f"(a NumPy array), got {type(values).__name__}; copy device arrays with "
                   "Backend.to_numpy first")
            raise TypeError(msg)
        out = np.array(values, copy=True, order="C")
        if out.dtype.kind not in "iuf":
            msg = (f"MPICommunicator.all_reduce_host (rank {self.rank}): expected integer or "
                   f"floating values, got dtype {out.dtype}")
            raise TypeError(msg)
        MPI = self._MPI
        self.comm.Allreduce(MPI.IN_PLACE, out, op=MPI.SUM)
        return out

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        check_root(root, self.size)
        return self.comm.bcast(obj, root=root)

    def all_gather_object(self, obj: Any) -> list[Any]:
        return list(self.comm.allgather(obj))

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        with contextlib.suppress(Exception):
            import sys

            sys.stdout.flush()
            sys.stderr.flush()
        # MPI_Abort has the launcher kill every rank at once; Hydra can do so before it has
        # forwarded the lines this rank just wrote (the error message was lost in about one
        # launch in twenty here): a moment for them to reach the launcher first.
        time.sleep(_ABORT_GRACE_S)
        self.comm.Abort(code)
        os._exit(code)  # not reached: MPI_Abort ends the process


def _is_cuda_buffer(backend: Backend) -> bool:
    """Whether arrays of ``backend`` are CUDA device buffers mpi4py takes as they are (CuPy's,
    through ``__cuda_array_interface__``)."""
    return backend.name == "cupy"


def _synchronize_current_stream() -> None:
    import cupy

    cupy.cuda.get_current_stream().synchronize()


def _host_dtype(a: Array) -> np.dtype[Any]:
    """The NumPy dtype of an array of any library, read from its dtype's name (no transfer)."""
    name = dtype_name(a.dtype)
    try:
        return np.dtype(name)
    except TypeError:
        msg = f"MPICommunicator: no host dtype for {a.dtype!r} (shape {tuple(a.shape)})"
        raise TypeError(msg) from None
