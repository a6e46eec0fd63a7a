"""NCCL through CuPy (``cupyx.distributed``): the communicator of jobs on CUDA GPUs.

:class:`NCCLCommunicator` sums and broadcasts CuPy arrays with NCCL on the device, in place and
on the current CUDA stream: the collective is queued behind the kernels that computed the
gradients and before the optimizer's, and nothing waits on the host (no synchronisation per
step). Host values, Python objects, the barrier and the abort go through MPI
(:class:`~nnbackend.distributed.mpi.MPICommunicator`), which also starts the ranks: the job is
launched with ``mpiexec -n N`` as an MPI job is, and MPI hands NCCL its unique id.

Each rank drives one GPU, ``rank % device_count`` (ranks of one node on distinct GPUs when a
node has as many GPUs as ranks), made CuPy's current device before the NCCL group is created.

Examples
--------
Run with ``mpiexec -n 2 python script.py`` on a machine with two GPUs:

>>> import cupy
>>> from nnbackend.distributed.nccl import NCCLCommunicator
>>> comm = NCCLCommunicator()
>>> g = cupy.full(3, float(comm.rank + 1))
>>> comm.all_reduce([g])[0]        # on both ranks: 1 + 2
array([3., 3., 3.])
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from .._typing import Array
from ..backend import backend_of
from .comm import Communicator, check_root
from .mpi import MPICommunicator

__all__ = ["NCCLCommunicator", "select_device"]


def _is_cupy_array(a: Any) -> bool:
    """Whether ``a`` is a CuPy array (the only arrays NCCL takes)."""
    try:
        return backend_of(a).name == "cupy"
    except TypeError:
        return False


def select_device(rank: int) -> int:
    """Make GPU ``rank % device_count`` CuPy's current device; its index."""
    import cupy

    count = int(cupy.cuda.runtime.getDeviceCount())
    if count < 1:
        msg = f"NCCLCommunicator (rank {rank}): CuPy sees no CUDA device"
        raise RuntimeError(msg)
    index = rank % count
    cupy.cuda.Device(index).use()
    return index


def _init_group(size: int, rank: int) -> Any:
    """``cupyx.distributed.init_process_group`` with MPI handing out NCCL's unique id."""
    try:
        import cupyx.distributed
    except ImportError as error:
        msg = ("NCCLCommunicator needs CuPy with NCCL: pip install \"nnbackend[cuda12]\" (or "
               f"[cuda13]) ({error})")
        raise ImportError(msg) from error
    init = cupyx.distributed.init_process_group
    # CuPy 13 takes use_mpi=True (MPI instead of CuPy's own TCP store for the rendezvous);
    # releases without the keyword use MPI by themselves whenever mpi4py imports.
    try:
        takes_use_mpi = "use_mpi" in inspect.signature(init).parameters
    except (TypeError, ValueError):
        takes_use_mpi = True
    if takes_use_mpi:
        return init(size, rank, backend="nccl", use_mpi=True)
    return init(size, rank, backend="nccl")


class NCCLCommunicator(Communicator):
    """The ranks of an MPI job, summing CuPy arrays with NCCL (see the module docstring).

    Parameters
    ----------
    mpi : MPICommunicator or mpi4py.MPI.Intracomm, optional
        The MPI group that starts the ranks and carries host values and objects; defaults to
        ``MPICommunicator()`` over ``MPI.COMM_WORLD``.
    group : cupyx.distributed.NCCLBackend, optional
        An NCCL group already created for these ranks. By default this rank's GPU is selected
        (:func:`select_device`) and a group of ``mpi.size`` devices is created with
        ``cupyx.distributed.init_process_group(size, rank, backend="nccl", use_mpi=True)``
        (which needs ``mpi`` to be over ``MPI.COMM_WORLD``).

    Attributes
    ----------
    device : int or None
        The GPU this rank uses (None when ``group`` was given).
    mpi : MPICommunicator
        The host-side communicator.

    Notes
    -----
    Collectives are queued on the current stream and return at once: the time
    :attr:`stats` records is the time to queue, not to complete (synchronise the device
    before reading timings).
    """

    name = "nccl"

    def __init__(self, mpi: Any = None, *, group: Any = None) -> None:
        if not isinstance(mpi, MPICommunicator):
            mpi = MPICommunicator(mpi)
        self.mpi: MPICommunicator = mpi
        super().__init__(mpi.rank, mpi.size)
        self.device: int | None = None
        if group is None:
            if mpi.comm is not mpi._MPI.COMM_WORLD:
                # CuPy's rendezvous (use_mpi=True) hands NCCL's id around MPI.COMM_WORLD
                msg = (f"NCCLCommunicator (rank {self.rank}): creating the NCCL group needs "
                       "mpi over MPI.COMM_WORLD (CuPy's rendezvous uses it); for another "
                       "communicator pass group= an NCCL group created for its ranks")
                raise ValueError(msg)
            self.device = select_device(self.rank)
            group = _init_group(self.size, self.rank)
        self.group = group

    # -- arrays ------------------------------------------------------------------------------

    def _check(self, a: Array, what: str) -> None:
        if not _is_cupy_array(a):
            try:
                where = repr(backend_of(a))
            except TypeError:
                where = type(a).__name__
            msg = (f"NCCLCommunicator.{what} (rank {self.rank}): NCCL sums CuPy arrays only, got "
                   f"an array of {where} with shape {tuple(a.shape)}; use the \"mpi\" engine "
                   "for arrays of other libraries")
            raise TypeError(msg)
        flags = getattr(a, "flags", None)  # CuPy's; the NCCL group checks it again
        if flags is not None and not flags.c_contiguous:
            msg = (f"NCCLCommunicator.{what} (rank {self.rank}): NCCL needs contiguous arrays, "
                   f"got shape {tuple(a.shape)} with strides {a.strides}")
            raise ValueError(msg)

    def _all_reduce(self, arrays: list[Array]) -> list[Array]:
        for a in arrays:
            self._check(a, "all_reduce")
        for a in arrays:
            # in place (send buffer = receive buffer), on the current stream (stream=None)
            self.group.all_reduce(a, a, op="sum", stream=None)
        return arrays

    def _broadcast(self, arrays: list[Array], root: int) -> list[Array]:
        check_root(root, self.size)
        for a in arrays:
            self._check(a, "broadcast")
        for a in arrays:
            self.group.broadcast(a, root=root, stream=None)
        return arrays

    # -- host values, through MPI ------------------------------------------------------------

    def _all_reduce_host(self, values: np.ndarray) -> np.ndarray:
        return self.mpi._all_reduce_host(values)  # recorded here, not in the MPI helper

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        return self.mpi.broadcast_object(obj, root)

    def all_gather_object(self, obj: Any) -> list[Any]:
        return self.mpi.all_gather_object(obj)

    def barrier(self) -> None:
        # The host-side barrier CuPy's NCCLBackend.barrier is (MPI_Barrier): queued device
        # work is not waited for.
        self.group.barrier()

    def abort(self, code: int = 1) -> None:
        self.mpi.abort(code)
