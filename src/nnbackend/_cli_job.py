"""The processes of one ``nnbackend train`` run: one process, or the ranks of an MPI job.

``nnbackend train --distributed`` runs under ``mpiexec -n N``; every rank runs the whole
command on its shard of each global batch. :class:`Job` is what the command needs to know of
the ranks: which shard this one serves, whether it prints and saves (rank 0), and how a failure
on one rank ends all of them instead of leaving the others waiting in a collective. A run has
three phases, and each ends a failure differently:

1. *Before MPI starts* (the launcher, mpi4py, the backend: checked by every rank alone): a
   usage error exits 2, a missing mpi4py exits 1 naming ``pip install "nnbackend[mpi]"``.
2. *Set-up* (:meth:`Job.setup`: the options, the data, the model, the optimizer, a resumed
   checkpoint): every rank works alone, then all of them exchange their outcome in one
   all-gather. When any rank failed, every rank stops with that rank's status (2 for a usage
   error, else 1) and rank 0 prints its message once, naming the rank when it is not 0.
   Wrapping the model (:meth:`Job.wrap`, DistributedDataParallel) refuses models that differ
   between the ranks on every rank at once (``ModelMismatchError``), reported the same way.
3. *Training* (:meth:`Job.running`): the ranks meet in every step's all-reduce, so a rank that
   fails cannot wait for the others to learn of it: it prints ``nnbackend: error: ... (rank r
   of N)`` and aborts the job (``MPI_Abort``: the launcher ends every rank and exits
   non-zero). Failures that every rank raises together (a non-finite loss, which the training
   loop agrees on) end every rank with status 1 and one message, as in set-up.

Without ``--distributed`` the job is one process, and every method is what the command did
before: exceptions pass unchanged, and this process prints and saves.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Job", "JobFailed"]


class JobFailed(Exception):
    """A failure every rank of the job stops for together (raised on every rank).

    Attributes
    ----------
    status : int
        The exit status of every rank: 2 for a usage error, else 1.
    usage : bool
        Whether it is a usage error (reported as argparse reports its own).
    show : bool
        Whether this rank prints the message (rank 0 only: one output).
    """

    def __init__(self, message: str, *, status: int, usage: bool, show: bool) -> None:
        super().__init__(message)
        self.status = status
        self.usage = usage
        self.show = show


@dataclass
class Job:
    """The ranks of a run: ``comm`` None for one process without a launcher.

    Attributes
    ----------
    comm : Communicator or None
        The job's communicator (:func:`nnbackend.distributed.init`).
    backend : Backend or None
        The backend the job chose for this rank (a CuPy rank's own GPU), None for one process.
    usage_error : type
        The exception class of the command's usage errors (exit status 2).
    sync_batchnorm : bool
        Give the model :class:`~nnbackend.SyncBatchNorm` layers in :meth:`wrap`: batch
        statistics of the global batch, as one process on it has (dropout masks stay per
        rank).
    """

    comm: Any = None
    backend: Any = None
    usage_error: type[Exception] = ValueError
    sync_batchnorm: bool = False

    def __post_init__(self) -> None:
        if not self.is_root:
            # every rank warns alike of a batch left out: rank 0's is the one output (other
            # warnings, which may be a rank's own, still show)
            from .data import DroppedBatchWarning

            warnings.simplefilter("ignore", DroppedBatchWarning)

    @property
    def rank(self) -> int:
        return 0 if self.comm is None else int(self.comm.rank)

    @property
    def size(self) -> int:
        return 1 if self.comm is None else int(self.comm.size)

    @property
    def is_root(self) -> bool:
        """Whether this process prints, plots and saves."""
        return self.rank == 0

    @property
    def shard(self) -> dict[str, int]:
        """``rank`` and ``world_size`` for :func:`nnbackend.data.batches`."""
        return {"rank": self.rank, "world_size": self.size}

    def record(self) -> dict[str, Any]:
        """What a checkpoint records of the job (empty for one process)."""
        if self.comm is None:
            return {}
        return {"distributed": {"world_size": self.size, "engine": str(self.comm.name)}}

    # ---------------------------------------------------------------- the phases

    @contextlib.contextmanager
    def setup(self) -> Iterator[None]:
        """Local work that every rank finishes before any collective: on leaving the block,
        the ranks exchange their outcomes, and :class:`JobFailed` stops every rank when any
        of them raised (with its message and status)."""
        if self.comm is None:
            yield
            return
        failure: Exception | None = None
        try:
            yield
        except Exception as exc:  # reported through the all-gather below, not left to hang
            failure = exc
            _debug_traceback(exc)
        outcome = None if failure is None else (
            2 if isinstance(failure, self.usage_error) else 1, str(failure))
        outcomes = self.comm.all_gather_object(outcome)
        for rank, failed in enumerate(outcomes):
            if failed is None:
                continue
            status, message = failed
            where = "" if rank == 0 else f" (rank {rank} of {self.size})"
            raise JobFailed(message + where, status=status, usage=status == 2,
                            show=self.is_root) from failure

    @contextlib.contextmanager
    def running(self, together: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
        """The ranks' collective work: an exception on a rank aborts the whole job (exit
        status 1, 130 for an interrupt); one of ``together`` (raised on every rank at once)
        becomes :class:`JobFailed` instead."""
        if self.comm is None or self.size == 1:
            yield
            return
        try:
            yield
        except together as exc:
            raise JobFailed(str(exc), status=1, usage=False, show=self.is_root) from exc
        except JobFailed:
            raise
        except SystemExit as stop:
            if stop.code in (None, 0):
                raise
            self.abort(stop, stop.code if isinstance(stop.code, int) else 1)
        except KeyboardInterrupt as exc:
            self.abort(exc, 130)
        except BaseException as exc:
            self.abort(exc, 1)

    def abort(self, error: BaseException, status: int) -> None:
        """Print ``error`` naming this rank, then end every rank of the job (MPI_Abort)."""
        _debug_traceback(error)
        text = str(error) or type(error).__name__
        with contextlib.suppress(Exception):
            sys.stderr.write(f"nnbackend: error: {text} (rank {self.rank} of {self.size}; "
                             "ending the job)\n")
            sys.stderr.flush()
            sys.stdout.flush()
        try:
            self.comm.abort(status)
        finally:  # an abort that returned or raised: end this rank; the launcher ends the rest
            os._exit(status)

    def wrap(self, model: Any, optimizer: Any) -> Any:
        """``model`` as a DistributedDataParallel over the job (rank 0's parameters, buffers
        and optimizer state on every rank), or itself for one process. A model that differs
        between the ranks stops every rank with one message (:class:`JobFailed`)."""
        if self.comm is None:
            return model
        from .distributed.parallel import DistributedDataParallel, ModelMismatchError
        from .layers.normalization import SyncBatchNorm

        if self.sync_batchnorm:  # in place: the optimizer keeps the same Parameters
            model = SyncBatchNorm.convert_sync_batchnorm(model, self.comm)
        with self.running(together=(ModelMismatchError,)):
            return DistributedDataParallel(model, optimizer, comm=self.comm)

    def agree(self, what: str, value: Any) -> None:
        """Stop every rank (:class:`JobFailed`) when ranks hold another ``value`` (JSON) than
        rank 0, e.g. the metadata of the checkpoint each rank read."""
        if self.comm is None:
            return
        digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=repr).encode())
        digests = self.comm.all_gather_object(digest.hexdigest())
        others = [rank for rank, d in enumerate(digests) if d != digests[0]]
        if others:
            msg = f"{what}: rank {others[0]} of {self.size} holds another one than rank 0"
            raise JobFailed(msg, status=1, usage=False, show=self.is_root)

    # ---------------------------------------------------------------- during training

    def on_root(self, write: Callable[[], None]) -> None:
        """``write()`` on rank 0 only (a checkpoint), then a barrier: no rank runs ahead of a
        file it might read."""
        if self.is_root:
            write()
        if self.comm is not None:
            self.comm.barrier()

    def decide(self, local: bool) -> bool:
        """Rank 0's ``local`` decision on every rank (a time limit read from each rank's own
        clock would otherwise stop some ranks an epoch before the others)."""
        if self.comm is None:
            return local
        return bool(self.comm.broadcast_object(bool(local) if self.is_root else None))

    def bits_per_character(self, model: Any, windows: Iterable[tuple[Any, Any]]) -> float:
        """:func:`nnbackend.text.bits_per_character` of the whole validation text, the same
        number on every rank.

        The windows are sharded: rank r measures the contiguous batches
        [⌊r·W/N⌋, ⌊(r+1)·W/N⌋) of the W batches, and the ranks sum (bits · targets) and the
        targets in one host all-reduce (bit-identical on every rank; equal to one process's
        number up to the order of the sums). With fewer batches than ranks every rank measures
        all of them.
        """
        from .data import shard_bounds
        from .text import bits_per_character

        if self.comm is None or self.size == 1:
            return bits_per_character(model, windows)
        items = list(windows)
        if len(items) < self.size:
            return bits_per_character(model, items)
        lo, hi = shard_bounds(len(items), self.rank, self.size)
        mine = items[lo:hi]
        targets = float(sum(math.prod(y.shape) for _, y in mine))
        bits = bits_per_character(model, mine)
        totals = self.comm.all_reduce_host(np.asarray([bits * targets, targets],
                                                      dtype=np.float64))
        return float(totals[0] / totals[1])

    def resumed_note(self, meta: Mapping[str, Any], batch_size: int) -> str | None:
        """A line for a checkpoint written by another number of ranks (None otherwise)."""
        recorded = meta.get("distributed")
        saved = recorded.get("world_size", 1) if isinstance(recorded, dict) else 1
        if saved == self.size:
            return None
        return (f"resuming a checkpoint of {saved} rank(s) on {self.size}: the same global "
                f"batch of {batch_size}; dropout, where a model has it, draws each rank's own "
                "masks")


def _debug_traceback(error: BaseException) -> None:
    """The traceback too, with ``NNBACKEND_DEBUG`` set (as the one-process command raises)."""
    if os.environ.get("NNBACKEND_DEBUG"):
        with contextlib.suppress(Exception):
            sys.stderr.write("".join(traceback.format_exception(type(error), error,
                                                                error.__traceback__)))
