"""Files written atomically: :func:`atomic_output` (checkpoints, ONNX models, the command line's
outputs).

The bytes go to a temporary file beside the target, are flushed and fsynced, and the file is
renamed over the target (``os.replace``, atomic on POSIX and Windows), then the directory is
fsynced where it can be, so the rename itself survives a crash. Until the rename the target is
untouched; a failure anywhere removes the temporary file. Readers see the old file or the new
one, never a part.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_output"]


@contextlib.contextmanager
def atomic_output(target: Path) -> Iterator[IO[bytes]]:
    """A binary file whose contents replace ``target`` when the block ends without error.

    The new file keeps the permission bits of the file it replaces (else 0o666 & ~umask, as
    ``open`` would give; ``mkstemp`` alone makes 0o600).
    """
    directory = target.parent
    mode = _file_mode(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        try:
            file = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            raise
        with file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _file_mode(target: Path) -> int:
    """Permission bits for the new file: those of the file it replaces, else 0o666 & ~umask."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(os.stat(target).st_mode)
    umask = os.umask(0o022)  # the only portable way to read the umask is to set it
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable where directories can be opened and synced (not on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
