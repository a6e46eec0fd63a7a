"""The job's communicator: chosen once per process from how it was launched.

:func:`init` creates the communicator of the job (MPI when ``mpiexec`` started the process,
the group of one otherwise) and :func:`world` returns it everywhere else; :func:`get_rank` and
:func:`get_world_size` are the two numbers most code needs.

How a launch is recognised (:func:`launched_by_mpi`), from the environment variables MPI
launchers give every process they start:

============================  ===========================================================
``PMI_RANK``, ``PMI_SIZE``    MPICH's Hydra (``mpiexec`` of the ``mpich`` package), Intel
                              MPI, MVAPICH, Slurm's ``srun --mpi=pmi2``
``PMIX_RANK``                 PMIx launchers: Open MPI 5's ``mpirun``/``prterun``, Slurm's
                              ``srun --mpi=pmix``
``OMPI_COMM_WORLD_SIZE``      Open MPI's ``mpirun`` (every release)
``MV2_COMM_WORLD_SIZE``       MVAPICH2's ``mpirun_rsh``
============================  ===========================================================

Slurm's own ``SLURM_PROCID`` does not count: ``srun`` sets it for programs that are not MPI
jobs too.

Examples
--------
>>> from nnbackend import distributed as dist
>>> comm = dist.init()            # under mpiexec -n 2: an MPICommunicator; else SingleProcess
>>> dist.get_rank(), dist.get_world_size()
(0, 1)
"""

from __future__ import annotations

import importlib.util
import os
from typing import Literal

from .comm import Communicator, SingleProcess
from .faults import install_abort_hook

__all__ = ["barrier", "get_rank", "get_world_size", "init", "is_initialized", "launched_by_mpi",
           "world"]

Engine = Literal["auto", "mpi", "nccl", "single"]
ENGINES = ("auto", "mpi", "nccl", "single")

# The variables named in the module docstring; the size ones also say how many ranks.
_RANK_VARIABLES = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_INSTALL_HINT = 'pip install "nnbackend[mpi]"'
_LAUNCH_HINT = ("start it with an MPI launcher, one process per rank: "
                "`mpiexec -n 2 nnbackend train --distributed ...` or "
                "`mpiexec -n 2 python script.py` (mpiexec comes with the mpich package of "
                f'{_INSTALL_HINT}; -n 1 runs a one-rank job)')

_world: Communicator | None = None
_single = SingleProcess()


def launched_by_mpi() -> bool:
    """Whether an MPI launcher started this process (see the module docstring's table)."""
    return any(os.environ.get(name) for name in (*_RANK_VARIABLES, *_SIZE_VARIABLES))


def _launched_size() -> int | None:
    """The number of ranks the launcher reports, where it reports one."""
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.strip().isdigit():
            return int(value)
    return None


def _has_mpi4py() -> bool:
    return importlib.util.find_spec("mpi4py") is not None


def init(engine: Engine = "auto") -> Communicator:
    """Create the job's communicator (once per process) and return it.

    Parameters
    ----------
    engine : {"auto", "mpi", "nccl", "single"}
        ``"auto"``: MPI when an MPI launcher started the process and mpi4py imports, else the
        group of one (a launched job of several ranks without mpi4py is an ImportError: each
        rank would otherwise train alone). ``"mpi"``: MPI through mpi4py. ``"nccl"``: NCCL for
        CuPy arrays, MPI for the rest (:class:`~nnbackend.distributed.nccl.NCCLCommunicator`).
        ``"mpi"`` and ``"nccl"`` need mpi4py (an ImportError says what to install) and an MPI
        launcher (a RuntimeError says how to launch). ``"single"``: the group of one.

    Returns
    -------
    Communicator
        The communicator :func:`world` returns from now on. Calling ``init`` again returns it
        (with ``"auto"`` or the same engine; another engine is a RuntimeError).

    Notes
    -----
    When the group has several ranks, :func:`~nnbackend.distributed.install_abort_hook` is
    installed: an uncaught exception on one rank ends the whole job.
    """
    global _world
    if engine not in ENGINES:
        msg = f"init: engine must be one of {', '.join(map(repr, ENGINES))}, got {engine!r}"
        raise ValueError(msg)
    if _world is not None:
        if engine in ("auto", _world.name):
            return _world
        msg = (f"init: the job's communicator is already {_world!r} (engine {_world.name!r}); "
               f"cannot initialise it again with engine {engine!r}")
        raise RuntimeError(msg)
    comm = _create(engine)
    _world = comm
    if comm.size > 1:
        install_abort_hook(comm)
    return comm


def _create(engine: Engine) -> Communicator:
    if engine == "single":
        return SingleProcess()
    if engine == "auto":
        if not launched_by_mpi():
            return SingleProcess()
        if not _has_mpi4py():
            size = _launched_size()
            if size == 1:
                return SingleProcess()
            msg = (f"this process was started by an MPI launcher ({size or 'several'} ranks) "
                   f"but mpi4py is not installed, so every rank would train alone: "
                   f"{_INSTALL_HINT}")
            raise ImportError(msg)
        from .mpi import MPICommunicator

        return MPICommunicator()
    if not _has_mpi4py():
        msg = (f"engine {engine!r} needs mpi4py and an MPI library: {_INSTALL_HINT} "
               "(brings mpi4py, MPICH and its mpiexec)")
        raise ImportError(msg)
    if not launched_by_mpi():
        msg = f"engine {engine!r}: this process was not started by an MPI launcher; {_LAUNCH_HINT}"
        raise RuntimeError(msg)
    if engine == "mpi":
        from .mpi import MPICommunicator

        return MPICommunicator()
    from .nccl import NCCLCommunicator

    return NCCLCommunicator()


def world() -> Communicator:
    """The communicator :func:`init` created, or the group of one when none was."""
    return _world if _world is not None else _single


def is_initialized() -> bool:
    """Whether :func:`init` has created the job's communicator."""
    return _world is not None


def get_rank() -> int:
    """This process's rank in :func:`world` (0 without a job)."""
    return world().rank


def get_world_size() -> int:
    """The number of ranks of :func:`world` (1 without a job)."""
    return world().size


def barrier() -> None:
    """Return once every rank of the job's communicator has called it (:func:`world`)."""
    world().barrier()
