"""Rank 1 raises in the middle of data-parallel training while rank 0 waits in a collective:
the abort hook that ``nnbackend.distributed.init`` installs must end the whole job.

Run as ``mpiexec -n 2 python failing.py``; the test measures how long the job takes to end.
"""

from __future__ import annotations

import numpy as np

import nnbackend as nb
from nnbackend import optim
from nnbackend.data import batches
from nnbackend.distributed import init
from nnbackend.distributed.parallel import DistributedDataParallel
from nnbackend.train import Callback, fit

comm = init("mpi")
rng = np.random.default_rng(0)
X, y = rng.normal(size=(64, 4)), rng.integers(0, 2, size=64)
model = nb.Sequential(nb.Linear(4, 2, seed=0, dtype="float64"))
opt = optim.SGD(model.parameters(), 0.1)
ddp = DistributedDataParallel(model, opt, comm=comm)


class FailOnRank1(Callback):
    def on_epoch_end(self, epoch: int, logs: object, model: object) -> bool:
        if comm.rank == 1 and epoch == 2:
            msg = "rank 1 fails after epoch 2"
            raise RuntimeError(msg)
        return False


fit(ddp, nb.CrossEntropyLoss(), opt,
    batches(X, y, batch_size=8, seed=0, backend="numpy", dtype="float64", rank=comm.rank,
            world_size=comm.size),
    epochs=1000, progress=False, metrics=(), callbacks=[FailOnRank1()])
