"""Data-parallel training scenarios, run by every rank of ``mpiexec -n N python training.py OUT``.

Each scenario trains N replicas with DistributedDataParallel on shards of the global batches
(float64, NumPy), records after every epoch whether every rank holds bit-identical parameters
and buffers, and then rank 0 trains the one-process reference on the same global batches
(collectives play no part in it) and measures the largest relative difference. Rank 0 writes
the results as JSON to OUT; tests/test_distributed_mpi_training.py asserts on them. One
launch runs every scenario, so the imports are paid once per world size.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import nnbackend as nb
from nnbackend import checkpoint, optim
from nnbackend.data import DroppedBatchWarning, batches
from nnbackend.distributed import init
from nnbackend.distributed.parallel import DistributedDataParallel, ModelMismatchError
from nnbackend.train import fit

N_SAMPLES, BATCH, EPOCHS, SEED = 47, 10, 3, 4  # batches of 10, 10, 10, 10, 7 rows

comm = init("mpi")
RANK, SIZE = comm.rank, comm.size
rng = np.random.default_rng(0)
FEATURES = rng.normal(size=(N_SAMPLES, 6))
IMAGES = rng.normal(size=(N_SAMPLES, 1, 6, 6))
LABELS = rng.integers(0, 3, size=N_SAMPLES)


def mlp() -> nb.Module:
    return nb.Sequential(nb.Linear(6, 8, seed=1, dtype="float64"), nb.Tanh(),
                         nb.Linear(8, 3, seed=2, dtype="float64"))


def cnn() -> nb.Module:
    # no bias before the normalisation: its exact gradient is 0, so its rounding noise, which
    # Adam's normalised steps turn into steps of the full learning rate, would make the
    # comparison with one process meaningless
    return nb.Sequential(
        nb.Conv2d(1, 3, 3, padding=1, bias=False, seed=1, dtype="float64"),
        nb.BatchNorm2d(3, dtype="float64"), nb.ReLU(), nb.MaxPool2d(2), nb.Flatten(),
        nb.Linear(27, 3, seed=2, dtype="float64"))


class Clipped:
    """An optimizer that clips the (summed) gradients to ``max_norm`` before each step."""

    def __init__(self, inner: Any, params: list[Any], max_norm: float) -> None:
        self.inner, self.params, self.max_norm = inner, params, max_norm

    def zero_grad(self) -> None:
        self.inner.zero_grad()

    def step(self) -> None:
        optim.clip_grad_norm(self.params, self.max_norm)
        self.inner.step()


def optimizer(kind: str, model: nb.Module) -> Any:
    params = model.parameters()
    if kind == "momentum":
        return optim.SGD(params, 0.05, momentum=0.9)
    if kind == "momentum-decay":
        return optim.SGD(params, 0.05, momentum=0.9, weight_decay=0.01)
    if kind == "adamw":
        return optim.AdamW(params, 1e-2, weight_decay=0.1)
    return optim.Adam(params, 1e-2)


def data(images: bool, rank: int = 0, world_size: int = 1) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DroppedBatchWarning)  # every batch has >= 3 rows here
        return batches(IMAGES if images else FEATURES, LABELS, batch_size=BATCH, seed=SEED,
                       backend="numpy", dtype="float64", rank=rank, world_size=world_size)


def state_digest(model: nb.Module) -> str:
    """A hash of every parameter's and buffer's bytes (equal only when bit-identical)."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(nb.to_numpy(value)).tobytes())
    return h.hexdigest()


def replicas_identical(model: nb.Module) -> bool:
    digests = comm.all_gather_object(state_digest(model))
    return all(d == digests[0] for d in digests)


def host_state(model: nb.Module) -> dict[str, np.ndarray]:
    return {k: nb.to_numpy(v).astype(np.float64) for k, v in model.state_dict().items()}


def max_relative_difference(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> float:
    worst = 0.0
    for name, w in want.items():
        g = got[name]
        scale = max(float(np.abs(w).max()), 1e-300)
        worst = max(worst, float(np.abs(g - w).max()) / scale)
    return worst


def distributed_run(build: Callable[[], nb.Module], kind: str, *, images: bool,
                    sync_bn: bool = False, epochs: int = EPOCHS) -> tuple[nb.Module, list[bool]]:
    model = build()
    if sync_bn:
        model = nb.SyncBatchNorm.convert_sync_batchnorm(model, comm)
    opt = optimizer(kind.removesuffix("-clip"), model)
    ddp = DistributedDataParallel(model, opt, comm=comm)
    step_opt = Clipped(opt, model.parameters(), 0.3) if kind.endswith("-clip") else opt
    identical: list[bool] = []
    fit(ddp, nb.CrossEntropyLoss(), step_opt, data(images, RANK, SIZE), epochs=epochs,
        progress=False, metrics=(), on_epoch=lambda e, r: identical.append(
            replicas_identical(model)))
    return model, identical


def one_process(build: Callable[[], nb.Module], kind: str, *, images: bool) -> nb.Module:
    model = build()
    opt = optimizer(kind.removesuffix("-clip"), model)
    step_opt = Clipped(opt, model.parameters(), 0.3) if kind.endswith("-clip") else opt
    fit(model, nb.CrossEntropyLoss(), step_opt, data(images), epochs=EPOCHS, progress=False,
        metrics=())
    return model


def one_process_per_rank_statistics(build: Callable[[], nb.Module], kind: str) -> nb.Module:
    """What data parallelism with per-rank batch statistics computes, in one process: each
    global batch's shards through the model separately (each normalised by its own
    statistics), gradients weighted by n_r / b and summed, running statistics rank 0's."""
    model = build()
    opt = optimizer(kind, model)
    loss_fn = nb.CrossEntropyLoss()
    shards = [data(True, r, SIZE) for r in range(SIZE)]
    for epoch in range(EPOCHS):
        for shard in shards:
            shard.set_epoch(epoch)
        for parts in zip(*shards, strict=True):
            b = sum(int(x.shape[0]) for x, _ in parts)
            opt.zero_grad()
            before = {k: np.array(v, copy=True) for k, v in model.named_buffers()}
            for r in (*range(1, SIZE), 0):  # rank 0 last: its update of the buffers stays
                if r == 0:  # buffers only: loading parameters would reset their gradients
                    model.load_state_dict(before, strict=False)
                x, y = parts[r]
                out, backprop = model.forward(x, input_grad=False)
                _, dy = loss_fn(out, y)
                backprop(dy * (x.shape[0] / b))
            opt.step()
    return model


def scenario_results() -> list[dict[str, Any]]:
    results = []
    runs = [("mlp-momentum", mlp, "momentum", False),
            ("mlp-adam-clip", mlp, "adam-clip", False),
            ("mlp-adamw", mlp, "adamw", False),
            ("mlp-momentum-decay", mlp, "momentum-decay", False),
            ("cnn-adam", cnn, "adam", True)]
    for name, build, kind, images in runs:
        for sync_bn in ((False, True) if images else (False,)):
            model, identical = distributed_run(build, kind, images=images, sync_bn=sync_bn)
            label = f"{name}{'-syncbn' if sync_bn else ''}"
            if RANK == 0:
                if images and not sync_bn:
                    reference = one_process_per_rank_statistics(build, kind)
                    equals = "one process, each shard normalised by its own statistics"
                else:
                    reference = one_process(build, kind, images=images)
                    equals = "one process on the global batch"
                results.append({"scenario": label, "equals": equals,
                                "identical_every_epoch": identical,
                                "max_relative_difference": max_relative_difference(
                                    host_state(model), host_state(reference))})
    return results


def resume_result(folder: Path) -> dict[str, Any]:
    """3 epochs straight against 1 epoch, a checkpoint by rank 0, and 2 more epochs resumed
    (rank 0 loads it, the wrapper broadcasts it): the same bits."""
    straight, _ = distributed_run(mlp, "adam", images=False)
    path = folder / "ckpt.npz"
    model = mlp()
    opt = optimizer("adam", model)
    ddp = DistributedDataParallel(model, opt, comm=comm)
    fit(ddp, nb.CrossEntropyLoss(), opt, data(False, RANK, SIZE), epochs=1, progress=False,
        metrics=())
    if RANK == 0:
        checkpoint.save(path, model, opt, epoch=1)
    comm.barrier()
    resumed = mlp()
    resumed_opt = optimizer("adam", resumed)
    if RANK == 0:
        checkpoint.load(path, resumed, resumed_opt)
    ddp = DistributedDataParallel(resumed, resumed_opt, comm=comm)
    fit(ddp, nb.CrossEntropyLoss(), resumed_opt, data(False, RANK, SIZE), epochs=EPOCHS,
        initial_epoch=1, progress=False, metrics=())
    return {"scenario": "resume", "identical": replicas_identical(resumed),
            "equal_to_straight": state_digest(resumed) == state_digest(straight)}


def mismatch_results() -> list[dict[str, Any]]:
    out = []
    for what, build in (
        ("width", lambda: nb.Sequential(nb.Linear(6, 8 + RANK, seed=1, dtype="float64"))),
        ("dtype", lambda: nb.Sequential(nb.Linear(6, 8, seed=1,
                                                  dtype="float64" if RANK == 0 else "float32"))),
    ):
        try:
            DistributedDataParallel(build(), comm=comm)
            message = None
        except ModelMismatchError as error:
            message = str(error)
        out.append({"scenario": f"mismatch-{what}",
                    "messages": comm.all_gather_object(message)})
    return out


def main() -> None:
    out = Path(sys.argv[1])
    results = scenario_results()
    with tempfile.TemporaryDirectory() as folder:
        shared = comm.broadcast_object(folder if RANK == 0 else None)
        resume = resume_result(Path(shared))
    mismatches = mismatch_results()
    if RANK == 0:
        out.write_text(json.dumps({"size": SIZE, "scenarios": results, "resume": resume,
                                   "mismatches": mismatches}))
    comm.barrier()


if __name__ == "__main__":
    main()
