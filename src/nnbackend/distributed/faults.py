"""Ending the whole job when one rank fails, instead of leaving the others waiting.

A collective blocks until every rank has called it, and MPI and NCCL have no timeout: when one
rank of a plain ``mpiexec`` job raises and exits, the others wait in their next all-reduce until
killed. ``python -m mpi4py script.py`` avoids that by aborting the MPI job on an uncaught
exception; :func:`install_abort_hook` does the same for any entry point, and
:func:`abort_on_error` for entry points that catch exceptions themselves.

What ends the job: an uncaught exception of the main thread (``sys.excepthook``) or of another
thread (``threading.excepthook``), and, inside :func:`abort_on_error`, any exception or a
``SystemExit`` with a non-zero status. What does not: ``sys.exit(code)`` outside
:func:`abort_on_error` (Python never passes it to a hook), a rank that is killed by a signal
(the launcher ends the others: Hydra does), a rank that waits forever for a reason of its own.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import traceback
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from .comm import Communicator

__all__ = ["abort_on_error", "install_abort_hook"]


def _report(comm: Communicator, lines: list[str]) -> None:
    """Write ``lines`` to stderr, each prefixed with the rank (the launcher mixes the ranks')."""
    prefix = f"[rank {comm.rank}/{comm.size}] "
    text = "".join(prefix + line + "\n"
                   for chunk in lines for line in chunk.rstrip("\n").split("\n"))
    with contextlib.suppress(Exception):
        sys.stderr.write(text)
        sys.stderr.flush()


def _abort(comm: Communicator, code: int) -> None:
    """``comm.abort(code)``; should it raise, end this process anyway (the launcher then ends
    the others)."""
    try:
        _report(comm, [f"aborting the job (exit status {code})"])
        comm.abort(code)
    except BaseException:
        os._exit(code)


def _fail(comm: Communicator, kind: type[BaseException], value: BaseException,
          tb: TracebackType | None, *, where: str = "") -> None:
    lines = traceback.format_exception(kind, value, tb)
    if where:
        lines.insert(0, f"uncaught exception in {where}:")
    _report(comm, lines)
    _abort(comm, 1)


class _ExceptHook:
    """``sys.excepthook``: report with the rank and abort when the group has several ranks."""

    def __init__(self, previous: Any, comm: Communicator) -> None:
        self.previous = previous
        self.comm = comm

    def __call__(self, kind: type[BaseException], value: BaseException,
                 tb: TracebackType | None) -> None:
        if self.comm.size <= 1:
            self.previous(kind, value, tb)
            return
        _fail(self.comm, kind, value, tb)


class _ThreadHook:
    """``threading.excepthook``: the same for exceptions that end a thread."""

    def __init__(self, previous: Any, comm: Communicator) -> None:
        self.previous = previous
        self.comm = comm

    def __call__(self, args: Any) -> None:
        if self.comm.size <= 1 or args.exc_type is SystemExit:  # threading ignores SystemExit
            self.previous(args)
            return
        name = getattr(args.thread, "name", "a thread")
        _fail(self.comm, args.exc_type, args.exc_value, args.exc_traceback,
              where=f"thread {name!r}")


def install_abort_hook(comm: Communicator) -> None:
    """Make an uncaught exception on this rank end every rank of ``comm``'s job.

    Wraps ``sys.excepthook`` and ``threading.excepthook``: the traceback is printed to stderr
    with every line prefixed ``[rank r/N]``, then ``comm.abort(1)`` ends the job (MPI_Abort: the
    launcher stops every rank and exits non-zero). On a group of one rank the previous hooks
    run unchanged. Calling it again only changes the communicator (the hooks wrap once).

    Parameters
    ----------
    comm : Communicator
        The job's communicator (:func:`nnbackend.distributed.init` installs the hook for it).
    """
    if isinstance(sys.excepthook, _ExceptHook):
        sys.excepthook.comm = comm
    else:
        sys.excepthook = _ExceptHook(sys.excepthook, comm)
    if isinstance(threading.excepthook, _ThreadHook):
        threading.excepthook.comm = comm
    else:
        threading.excepthook = _ThreadHook(threading.excepthook, comm)


@contextlib.contextmanager
def abort_on_error(comm: Communicator | None = None, *,
                   show_traceback: bool = True) -> Iterator[None]:
    """End the whole job when an exception leaves the block on a rank of a group of several.

    For entry points that handle exceptions themselves (so no hook sees them). An exception
    (``KeyboardInterrupt`` included) is reported with the rank and aborts the job with status 1;
    ``SystemExit`` with a non-zero status aborts it with that status (a string status is
    printed and aborts with 1); ``SystemExit(0)`` and ``SystemExit(None)`` pass. On a group of
    one rank, everything passes unchanged.

    Parameters
    ----------
    comm : Communicator, optional
        The job's communicator; by default :func:`nnbackend.distributed.world` as it is when
        the exception happens (so ``init()`` may run inside the block).
    show_traceback : bool
        Print the traceback (True) or only the exception's type and message.

    Examples
    --------
    >>> with abort_on_error():
    ...     comm = init()
    ...     train(comm)
    """
    try:
        yield
    except SystemExit as stop:
        group = _group(comm)
        if group.size > 1 and stop.code not in (None, 0):
            if isinstance(stop.code, int):
                _abort(group, stop.code)
            else:
                _report(group, [str(stop.code)])
                _abort(group, 1)
        raise
    except BaseException as error:
        group = _group(comm)
        if group.size > 1:
            if show_traceback:
                _report(group, traceback.format_exception(type(error), error,
                                                          error.__traceback__))
            else:
                _report(group, [f"{type(error).__name__}: {error}"])
            _abort(group, 1)
        raise


def _group(comm: Communicator | None) -> Communicator:
    if comm is not None:
        return comm
    from .world import world

    return world()
