"""Counting host reads: every way a value of the GPU-like test device reaches Python or NumPy."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["HostRead", "HostReads", "count_host_reads"]

_active: list[HostReads] = []
_TESTING_DIR = os.path.dirname(__file__)
# The transfer plumbing: a read is attributed to the code that asked for it, not to these.
_PLUMBING = tuple(os.path.join(os.path.dirname(_TESTING_DIR), name)
                  for name in ("_libraries.py", "backend.py"))


@dataclass(frozen=True)
class HostRead:
    """One read: how (``"float"``, ``"bool"``, ``"item"``, ``"get"``, ...) and where (file:line)."""

    kind: str
    where: str

    def __str__(self) -> str:
        return f"{self.kind} at {self.where}"


@dataclass(eq=False)  # blocks are told apart by identity (two may hold the same reads)
class HostReads:
    """The host reads made while a :func:`count_host_reads` block ran."""

    reads: list[HostRead] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many reads there were."""
        return len(self.reads)

    def __repr__(self) -> str:
        listed = "; ".join(map(str, self.reads[:10]))
        more = f"; ... {self.count - 10} more" if self.count > 10 else ""
        return f"HostReads({self.count}: {listed}{more})"


@contextlib.contextmanager
def count_host_reads() -> Iterator[HostReads]:
    """Count the host reads of GPU-like test device arrays inside a ``with`` block.

    A host read is what synchronises a GPU: ``float(a)``, ``int(a)``, ``bool(a)``,
    ``operator.index(a)``, ``a.item()``, ``a.tolist()``, ``a.get()``, ``repr(a)`` and
    ``Backend.to_numpy(a)``. Blocks nest; each counts every read made while it is open.

    Examples
    --------
    >>> with count_host_reads() as reads:
    ...     y, backprop = model.forward(x)
    >>> assert reads.count == 0, reads      # the repr lists each read's kind and source line
    """
    reads = HostReads()
    _active.append(reads)
    try:
        yield reads
    finally:
        _active.remove(reads)


def record(kind: str) -> None:
    """Note one host read of ``kind`` in every open :func:`count_host_reads` block."""
    if not _active:
        return
    read = HostRead(kind, _caller())
    for reads in _active:
        reads.reads.append(read)


def _caller() -> str:
    """file:line of the innermost frame outside nnbackend.testing and the transfer plumbing
    (``to_numpy``): the code that read."""
    frame = sys._getframe(2)
    while frame.f_back is not None and (
        frame.f_code.co_filename.startswith(_TESTING_DIR)
        or frame.f_code.co_filename in _PLUMBING
    ):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"
