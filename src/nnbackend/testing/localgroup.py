"""Several ranks of a data-parallel job as threads of one process: a communicator for tests.

:class:`LocalGroup` runs a function once per rank, each in its own thread with its own
:class:`LocalCommunicator`, whose collectives meet at a barrier and sum in rank order (so every
rank gets bit-identical results, as an MPI or NCCL reduction gives). It works for arrays of
every backend of the test matrix (the sums are taken with the arrays' own namespace, on their
device), which a real MPI launch, one library per job, cannot cover in one test run.

Examples
--------
>>> from nnbackend.testing import LocalGroup
>>> import numpy as np
>>> def work(comm):
...     g = np.full(3, float(comm.rank + 1))
...     return comm.all_reduce([g])[0]
>>> LocalGroup(3).run(work)[2]
array([6., 6., 6.])
"""

from __future__ import annotations

import copy
import pickle
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from .._checks import namespace_of
from .._typing import Array
from ..backend import dtype_name
from ..distributed.comm import Communicator, check_root, store_into

__all__ = ["LocalAbort", "LocalCommunicator", "LocalGroup"]

T = TypeVar("T")


class LocalAbort(RuntimeError):
    """A rank of a :class:`LocalGroup` called ``abort``: every rank's collective raises it."""


class _Shared:
    def __init__(self, size: int, timeout: float) -> None:
        self.size = size
        self.barrier = threading.Barrier(size, timeout=timeout)
        self.slots: list[Any] = [None] * size
        self.aborted: int | None = None
        self.failure: str | None = None  # why the group failed, when a rank knows


class LocalCommunicator(Communicator):
    """One rank of a :class:`LocalGroup` (see the module docstring)."""

    name = "local"

    def __init__(self, rank: int, shared: _Shared) -> None:
        super().__init__(rank, shared.size)
        self._shared = shared
        self.log: list[tuple[str, int]] = []  # (collective, bytes): the call sequence

    def _exchange(self, item: Any, signature: tuple[Any, ...]) -> list[Any]:
        """Every rank's ``item``, in rank order, once all have deposited theirs.

        ``signature`` (the collective, its root, the arrays' shapes and dtypes) must be the
        same on every rank, as MPI and NCCL require: ranks that call different collectives,
        or pass other shapes, fail here with both signatures instead of summing by
        broadcasting or getting out of step.
        """
        shared = self._shared
        shared.slots[self.rank] = (signature, item)
        self._wait()
        deposited = list(shared.slots)
        # checked before the next wait: every rank reads the same deposits and fails alike,
        # none of them inside a barrier another one broke
        for rank, (other, _) in enumerate(deposited):
            if other != deposited[0][0]:
                msg = (f"LocalGroup: the ranks called different collectives: rank 0 "
                       f"{deposited[0][0]}, rank {rank} {other}")
                shared.failure = msg  # for a rank that finds the barrier broken first
                raise LocalAbort(msg)
        self._wait()  # nobody deposits the next item before everyone has read this one
        return [item for _, item in deposited]

    def _wait(self) -> None:
        try:
            self._shared.barrier.wait()
        except threading.BrokenBarrierError:
            if self._shared.failure is not None:
                raise LocalAbort(self._shared.failure) from None
            code = self._shared.aborted
            msg = (f"LocalGroup: rank {self.rank} left a collective: another rank "
                   + ("aborted" if code is not None else "failed or timed out"))
            raise LocalAbort(msg) from None

    def _all_reduce(self, arrays: list[Array]) -> list[Array]:
        self.log.append(("all_reduce", len(arrays)))
        everyone = self._exchange(arrays, ("all_reduce", *_shapes(arrays)))
        totals = []
        for i in range(len(arrays)):
            total = everyone[0][i]
            for other in everyone[1:]:
                total = total + other[i]
            totals.append(total)
        self._wait()  # every rank has its totals before anyone writes into its own arrays
        return [store_into(a, t) for a, t in zip(arrays, totals, strict=True)]

    def _broadcast(self, arrays: list[Array], root: int) -> list[Array]:
        check_root(root, self.size)
        self.log.append(("broadcast", len(arrays)))
        everyone = self._exchange(arrays, ("broadcast", root, *_shapes(arrays)))
        copies = [namespace_of(a).asarray(a, copy=True) for a in everyone[root]]
        self._wait()
        if self.rank == root:
            return arrays
        return [store_into(a, c) for a, c in zip(arrays, copies, strict=True)]

    def _all_reduce_host(self, values: np.ndarray) -> np.ndarray:
        self.log.append(("all_reduce_host", int(np.asarray(values).size)))
        host = np.array(values, copy=True)
        everyone = self._exchange(host, ("all_reduce_host", host.shape, str(host.dtype)))
        total: np.ndarray = everyone[0].copy()
        for other in everyone[1:]:
            total = total + other
        return total

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        self.log.append(("broadcast_object", root))
        everyone = self._exchange(pickle.dumps(obj) if self.rank == root else None,
                                  ("broadcast_object", root))
        return obj if self.rank == root else pickle.loads(everyone[root])

    def all_gather_object(self, obj: Any) -> list[Any]:
        self.log.append(("all_gather_object", 0))
        return [pickle.loads(b) for b in self._exchange(pickle.dumps(obj),
                                                         ("all_gather_object",))]

    def barrier(self) -> None:
        self.log.append(("barrier", 0))
        self._exchange(None, ("barrier",))

    def abort(self, code: int = 1) -> None:
        self._shared.aborted = code
        self._shared.barrier.abort()
        msg = f"LocalGroup: rank {self.rank} aborted the group (code {code})"
        raise LocalAbort(msg)


class LocalGroup:
    """``size`` ranks as threads (see the module docstring).

    Parameters
    ----------
    size : int
        Number of ranks (≥ 1).
    timeout : float
        Seconds a collective waits for the other ranks before every rank fails with
        :class:`LocalAbort` (a test that would deadlock fails instead).
    """

    def __init__(self, size: int, *, timeout: float = 60.0) -> None:
        if size < 1:
            msg = f"LocalGroup: size must be >= 1, got {size}"
            raise ValueError(msg)
        self.size = size
        self.timeout = timeout

    def communicators(self) -> list[LocalCommunicator]:
        """One communicator per rank, sharing one barrier (for :meth:`run`, or threads of
        one's own)."""
        shared = _Shared(self.size, self.timeout)
        return [LocalCommunicator(r, shared) for r in range(self.size)]

    def run(self, fn: Callable[[LocalCommunicator], T],
            args: Sequence[Any] | None = None) -> list[T]:
        """``fn(comm)`` (or ``fn(comm, args[rank])``) on every rank at once; the results in
        rank order. An exception on a rank breaks every collective (the others raise
        :class:`LocalAbort`) and the first rank's own exception is raised here."""
        comms = self.communicators()
        results: list[Any] = [None] * self.size
        errors: list[BaseException | None] = [None] * self.size

        def target(comm: LocalCommunicator) -> None:
            try:
                if args is None:
                    results[comm.rank] = fn(comm)
                else:
                    results[comm.rank] = fn(comm, copy.copy(args[comm.rank]))  # type: ignore[call-arg]
            except BaseException as error:  # reported by run(), after every thread ended
                errors[comm.rank] = error
                comm._shared.barrier.abort()

        threads = [threading.Thread(target=target, args=(c,), name=f"rank{c.rank}")
                   for c in comms]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        own = [e for e in errors if e is not None and not isinstance(e, LocalAbort)]
        if own:
            raise own[0]
        aborts = [e for e in errors if e is not None]
        if aborts:
            raise aborts[0]
        return results


def _shapes(arrays: Sequence[Array]) -> list[tuple[tuple[int, ...], str]]:
    return [(tuple(int(d) for d in a.shape), dtype_name(a.dtype)) for a in arrays]
