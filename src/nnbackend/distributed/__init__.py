"""Data-parallel training on existing engines: MPI through mpi4py on CPUs, NCCL through CuPy on
GPUs.

Launch one process per rank with ``mpiexec -n N``; :func:`init` then returns the job's
communicator (:class:`SingleProcess` without a launcher). Neither mpi4py nor CuPy is imported
before a communicator that needs it is created.
"""

from __future__ import annotations

from .comm import CommStats, Communicator, SingleProcess, store_into
from .faults import abort_on_error, install_abort_hook
from .mpi import MPICommunicator, cuda_aware_mpi
from .nccl import NCCLCommunicator
from .parallel import DistributedDataParallel, ModelMismatchError
from .world import barrier, get_rank, get_world_size, init, is_initialized, launched_by_mpi, world

__all__ = [
    "CommStats",
    "Communicator",
    "DistributedDataParallel",
    "MPICommunicator",
    "ModelMismatchError",
    "NCCLCommunicator",
    "SingleProcess",
    "abort_on_error",
    "barrier",
    "cuda_aware_mpi",
    "get_rank",
    "get_world_size",
    "init",
    "install_abort_hook",
    "is_initialized",
    "launched_by_mpi",
    "store_into",
    "world",
]
