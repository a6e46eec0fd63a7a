"""What users need to test their own layers on every backend nnbackend supports.

- :mod:`nnbackend.testing.gpulike`: the GPU-like test device, an Array API namespace with NumPy's
  arithmetic and CuPy's rules (arrays off the host, implicit host conversion refused, a move from
  the host always copies, views and in-place operations as on CuPy). Select it like any backend:
  ``nb.get_backend("gpulike")``, ``nnbackend train --backend gpulike``, ``NNBACKEND=gpulike``.
- :func:`count_host_reads`: counts every read of a gpulike array on the host (``float``,
  ``bool``, ``.item()``, ``Backend.to_numpy``, ...), each with the source line that made it, so
  a test can assert that forward, backward and an optimizer step never synchronise a GPU.
- :class:`LocalGroup`: the ranks of a data-parallel job as threads of one process, whose
  communicators sum in rank order, for testing collective code on every backend.

Examples
--------
>>> import nnbackend as nb
>>> from nnbackend.testing import count_host_reads
>>> be = nb.get_backend("gpulike")
>>> layer = nb.Linear(3, 2, seed=0, backend=be)
>>> x = be.asarray([[1.0, 2.0, 3.0]], dtype="float32")
>>> with count_host_reads() as reads:
...     y, backprop = layer.forward(x)
...     dx = backprop(be.asarray([[1.0, 1.0]], dtype="float32"))
>>> reads.count
0
"""

from __future__ import annotations

from . import gpulike
from ._host_reads import HostRead, HostReads, count_host_reads
from .localgroup import LocalAbort, LocalCommunicator, LocalGroup

__all__ = ["HostRead", "HostReads", "LocalAbort", "LocalCommunicator", "LocalGroup",
           "count_host_reads", "gpulike"]
