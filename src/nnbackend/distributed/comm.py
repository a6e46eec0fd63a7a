"""The communicator protocol that data-parallel training is written against, and its
one-process case.

A :class:`Communicator` is a group of ``size`` processes (ranks) and the collectives
data-parallel training needs: a sum of arrays over the ranks (:meth:`~Communicator.all_reduce`),
a copy from one rank to all (:meth:`~Communicator.broadcast`), the same two for small host
values and Python objects (metrics, sample counts, fingerprints of the model), a barrier and an
abort that ends the whole job. The engines are existing ones: MPI through mpi4py
(:mod:`nnbackend.distributed.mpi`) and NCCL through CuPy (:mod:`nnbackend.distributed.nccl`);
:class:`SingleProcess` is the group of one, and :class:`nnbackend.testing.LocalGroup` runs
several ranks as threads of one process for tests on every backend.

Every collective is *called by every rank in the same order*: a rank that skips one, or calls
one more, blocks the others (MPI and NCCL have no timeout). Sums are taken in an order every
rank shares, so every rank gets bit-identical results (what keeps the replicas of a model
identical step after step).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._checks import namespace_of
from .._typing import Array
from ..backend import supports_views

__all__ = ["CommStats", "Communicator", "SingleProcess", "check_root", "itemsize", "store_into"]


@dataclass
class CommStats:
    """What a communicator moved: for the benchmark's all-reduce share of a step.

    Attributes
    ----------
    calls : Counter-like dict of str to int
        Collective calls by kind (``"all_reduce"``, ``"broadcast"``, ``"host"``, ...).
    bytes : dict of str to int
        Bytes of array data passed to each kind (per rank: what one rank contributes).
    seconds : dict of str to float
        Wall time spent in each kind (waiting for slower ranks included).
    """

    calls: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def record(self, kind: str, nbytes: int, seconds: float) -> None:
        self.calls[kind] = self.calls.get(kind, 0) + 1
        self.bytes[kind] = self.bytes.get(kind, 0) + int(nbytes)
        self.seconds[kind] = self.seconds.get(kind, 0.0) + float(seconds)

    def reset(self) -> None:
        self.calls.clear()
        self.bytes.clear()
        self.seconds.clear()


class Communicator(ABC):
    """A group of ranks and the collectives of data-parallel training.

    Attributes
    ----------
    rank, size : int
        This process's rank, 0 ≤ rank < size, and the number of ranks.
    name : str
        The engine: ``"mpi"``, ``"nccl"``, ``"local"`` (threads) or ``"single"``.
    stats : CommStats
        Calls, bytes and time of the collectives, the arrays' and the host values' (for the
        benchmark).
    """

    name: str = "?"

    def __init__(self, rank: int, size: int) -> None:
        if not 0 <= rank < size:
            msg = f"{type(self).__name__}: rank {rank} is not in 0..{size - 1}"
            raise ValueError(msg)
        self.rank = rank
        self.size = size
        self.stats = CommStats()

    @property
    def is_root(self) -> bool:
        """Whether this is rank 0 (the one that prints, saves and broadcasts)."""
        return self.rank == 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"

    # -- arrays ------------------------------------------------------------------------------

    def all_reduce(self, arrays: Sequence[Array]) -> list[Array]:
        """Σ over the ranks of each array, on every rank.

        The arrays (one namespace and device, each contiguous: flat gradient buffers) are
        summed in place where their library allows and returned; where arrays are immutable
        (JAX) the returned arrays are new and the caller stores them back. Every rank passes
        arrays of the same shapes and dtypes in the same order.
        """
        start = time.perf_counter()
        out = self._all_reduce(list(arrays))
        self.stats.record("all_reduce", _nbytes(arrays), time.perf_counter() - start)
        return out

    def broadcast(self, arrays: Sequence[Array], root: int = 0) -> list[Array]:
        """Rank ``root``'s arrays on every rank (in place where mutable, as :meth:`all_reduce`)."""
        start = time.perf_counter()
        out = self._broadcast(list(arrays), root)
        self.stats.record("broadcast", _nbytes(arrays), time.perf_counter() - start)
        return out

    @abstractmethod
    def _all_reduce(self, arrays: list[Array]) -> list[Array]: ...

    @abstractmethod
    def _broadcast(self, arrays: list[Array], root: int) -> list[Array]: ...

    # -- host values -------------------------------------------------------------------------

    def all_reduce_host(self, values: np.ndarray) -> np.ndarray:
        """Σ over the ranks of a small host array (counts, metric sums), on every rank: a new
        array of the same shape and dtype (float64 or int64). Recorded in :attr:`stats` as
        ``"host"`` (a data-parallel forward's row counts are one a step)."""
        start = time.perf_counter()
        out = self._all_reduce_host(values)
        self.stats.record("host", out.nbytes, time.perf_counter() - start)
        return out

    @abstractmethod
    def _all_reduce_host(self, values: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        """Rank ``root``'s picklable ``obj`` on every rank (checkpoint state, settings)."""

    @abstractmethod
    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (fingerprints of the model)."""

    @abstractmethod
    def barrier(self) -> None:
        """Return once every rank has called it."""

    @abstractmethod
    def abort(self, code: int = 1) -> None:
        """End every rank of the job now with exit status ``code`` (does not return)."""


class SingleProcess(Communicator):
    """The group of one: every collective is the identity (training without launcher)."""

    name = "single"

    def __init__(self) -> None:
        super().__init__(0, 1)

    def _all_reduce(self, arrays: list[Array]) -> list[Array]:
        return arrays

    def _broadcast(self, arrays: list[Array], root: int) -> list[Array]:
        check_root(root, self.size)
        return arrays

    def _all_reduce_host(self, values: np.ndarray) -> np.ndarray:
        return np.array(values, copy=True)

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        check_root(root, self.size)
        return obj

    def all_gather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def barrier(self) -> None:
        return None

    def abort(self, code: int = 1) -> None:
        import os

        os._exit(code)


def store_into(target: Array, value: Array) -> Array:
    """``value`` written into ``target`` where its library mutates in place (returns
    ``target``), else ``value`` itself (JAX, array-api-strict: the caller rebinds)."""
    if value is target:
        return target
    xp = namespace_of(target)
    if supports_views(xp):
        target[...] = value
        return target
    return value


def _nbytes(arrays: Sequence[Array]) -> int:
    total = 0
    for a in arrays:
        n = 1
        for d in a.shape:
            n *= int(d)
        total += n * itemsize(a)
    return total


def itemsize(a: Array) -> int:
    """Bytes per element of ``a``, from its dtype (no transfer)."""
    xp = namespace_of(a)
    dtype = a.dtype
    if xp.isdtype(dtype, "bool"):
        return 1
    if xp.isdtype(dtype, "real floating") or xp.isdtype(dtype, "complex floating"):
        return int(xp.finfo(dtype).bits) // 8
    return int(xp.iinfo(dtype).bits) // 8


def check_root(root: int, size: int) -> None:
    """Refuse a broadcast root that is not a rank of a group of ``size``."""
    if not 0 <= root < size:
        msg = f"broadcast: root {root} is not a rank of this group (0..{size - 1})"
        raise ValueError(msg)
