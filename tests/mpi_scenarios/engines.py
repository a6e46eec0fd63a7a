"""The MPI communicator under a real ``mpiexec`` launch: many checks per launch.

Run by tests/test_distributed_mpi.py as ``mpiexec -n N python engines.py MODE [ARGS]``.

MODE ``checks LIBRARIES DIR``: every rank runs the collectives below and writes
``DIR/rank{r}.json`` with what it got (values as lists, so the test compares them with closed
forms it computes itself). LIBRARIES (comma-separated) adds to ``numpy`` the staged paths of
``torch``, ``strict`` (array-api-strict on its "device1") and ``gpulike``.

MODE ``nccl DIR``: the same for the NCCL engine on CuPy arrays (where CUDA GPUs exist).

MODE ``raise``: rank 1 raises after ``init()`` while the others wait in a barrier; the abort
hook must end the job.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import nnbackend as nb
from nnbackend import distributed as dist


def _values(comm: dist.Communicator, seed: int, n: int, dtype: str) -> np.ndarray:
    """Rank-dependent values every rank (and the test) can recompute."""
    rng = np.random.default_rng([seed, comm.rank])
    return rng.standard_normal(n).astype(dtype)


def checks(libraries: list[str]) -> dict[str, Any]:
    comm = dist.init("mpi")
    r, n = comm.rank, comm.size
    out: dict[str, Any] = {
        "rank": r, "size": n, "name": comm.name, "type": type(comm).__name__,
        "get_rank": dist.get_rank(), "get_world_size": dist.get_world_size(),
        "launched": dist.launched_by_mpi(), "initialized": dist.is_initialized(),
        "cuda_aware": dist.cuda_aware_mpi(), "hook": type(sys.excepthook).__name__,
    }

    # NumPy float64 and float32, in place, several arrays in one call.
    a64 = np.arange(6, dtype=np.float64) * (r + 1)
    a32 = np.full((2, 3), r + 0.5, dtype=np.float32)
    res = comm.all_reduce([a64, a32])
    out["np64"] = a64.tolist()
    out["np32"] = a32.ravel().tolist()
    out["np_in_place"] = res[0] is a64 and res[1] is a32
    out["np32_dtype"] = str(a32.dtype)

    # A strided view: reduced through a contiguous copy and written back.
    base = np.zeros((3, 4), dtype=np.float64)
    base[:, ::2] = r + 1
    view = base[:, ::2]
    comm.all_reduce([view])
    out["np_strided"] = base.ravel().tolist()

    # Random float64 sums: identical bits on every rank (the replicas stay identical).
    x = _values(comm, 7, 1000, "float64")
    comm.all_reduce([x])
    out["random_sum_head"] = x[:5].tolist()
    out["random_digest"] = hashlib.sha256(x.tobytes()).hexdigest()

    # Broadcast from the last rank.
    b = np.full(4, float(r), dtype=np.float64)
    comm.broadcast([b], root=n - 1)
    out["np_bcast"] = b.tolist()

    # Staged paths: one copy out, MPI on the host copy, one copy back.
    for lib in libraries:
        if lib == "numpy":
            continue
        backend = _backend(lib)
        g = backend.asarray(np.arange(4, dtype=np.float64) * (r + 1), dtype="float64")
        h = backend.asarray(np.full(3, 10.0 * r, dtype=np.float64), dtype="float64")
        res = comm.all_reduce([g, h])
        out[f"{lib}_sum"] = backend.to_numpy(res[0]).tolist()
        out[f"{lib}_sum2"] = backend.to_numpy(res[1]).tolist()
        out[f"{lib}_same_object"] = res[0] is g
        out[f"{lib}_on_device"] = backend.holds(res[0]) and backend.holds(res[1])
        c = backend.asarray(np.full(3, float(r + 1)), dtype="float64")
        (c2,) = comm.broadcast([c], root=n - 1)
        out[f"{lib}_bcast"] = backend.to_numpy(c2).tolist()
        out[f"{lib}_bcast_on_device"] = backend.holds(c2)

    # Host values and objects.
    counts = comm.all_reduce_host(np.array([r, 1], dtype=np.int64))
    sums = comm.all_reduce_host(np.array([0.25 * r, 1.5]))
    out["host_int"] = counts.tolist()
    out["host_int_dtype"] = str(counts.dtype)
    out["host_float"] = sums.tolist()
    out["bcast_object"] = comm.broadcast_object({"seed": 42, "from": r} if r == 0 else None)
    out["bcast_object_last"] = comm.broadcast_object(f"rank{r}", root=n - 1)
    out["gather"] = comm.all_gather_object({"r": r, "name": f"rank{r}"})
    comm.barrier()
    out["barrier"] = True
    out["stats_calls"] = dict(comm.stats.calls)
    return out


def _backend(lib: str) -> nb.Backend:
    if lib == "torch":
        import torch

        torch.set_num_threads(1)
        return nb.get_backend("torch", device="cpu")
    if lib == "strict":
        import array_api_strict

        return nb.get_backend(array_api_strict, device=array_api_strict.Device("device1"))
    if lib == "gpulike":
        return nb.get_backend("gpulike:1")
    msg = f"unknown library {lib!r}"
    raise ValueError(msg)


def nccl_checks() -> dict[str, Any]:
    """NCCL on CuPy arrays (a one-rank group on a one-GPU machine), and MPI's host staging of
    CuPy arrays where the MPI library is not CUDA-aware."""
    import cupy

    comm = dist.init("nccl")
    r, n = comm.rank, comm.size
    out: dict[str, Any] = {"rank": r, "size": n, "name": comm.name,
                           "device": comm.device,  # type: ignore[attr-defined]
                           "current_device": int(cupy.cuda.Device().id)}
    a = cupy.arange(5, dtype=cupy.float64) * (r + 1)
    b = cupy.full((2, 2), r + 0.5, dtype=cupy.float32)
    res = comm.all_reduce([a, b])
    c = cupy.full(3, float(r + 1), dtype=cupy.float64)
    comm.broadcast([c], root=n - 1)
    cupy.cuda.get_current_stream().synchronize()
    out["nccl_in_place"] = res[0] is a and res[1] is b
    out["nccl_sum64"] = cupy.asnumpy(a).tolist()
    out["nccl_sum32"] = cupy.asnumpy(b).ravel().tolist()
    out["nccl_bcast"] = cupy.asnumpy(c).tolist()
    out["host_int"] = comm.all_reduce_host(np.array([r, 1], dtype=np.int64)).tolist()
    out["gather"] = comm.all_gather_object(r)
    comm.barrier()
    mpi = dist.MPICommunicator()
    out["cuda_aware"] = mpi.cuda_aware
    d = cupy.arange(4, dtype=cupy.float64) * (r + 1)
    (d2,) = mpi.all_reduce([d])
    out["mpi_cupy_same_object"] = d2 is d
    out["mpi_cupy_sum"] = cupy.asnumpy(d).tolist()
    return out


def raise_on_rank_one() -> None:
    comm = dist.init()
    print(f"READY {comm.rank} {time.time():.3f}", flush=True)
    if comm.rank == 1:
        msg = "rank 1 fails on purpose"
        raise RuntimeError(msg)
    comm.barrier()  # rank 1 never gets here: without the hook this waits forever
    print(f"UNEXPECTED {comm.rank}", flush=True)


def main() -> None:
    mode = sys.argv[1]
    if mode == "checks":
        libraries = sys.argv[2].split(",")
        result = checks(libraries)
        # One file per rank: the launcher interleaves the ranks' stdout without regard to lines.
        path = Path(sys.argv[3]) / f"rank{result['rank']}.json"
        path.write_text(json.dumps(result), encoding="utf-8")
    elif mode == "nccl":
        result = nccl_checks()
        path = Path(sys.argv[2]) / f"rank{result['rank']}.json"
        path.write_text(json.dumps(result), encoding="utf-8")
    elif mode == "raise":
        raise_on_rank_one()
    else:
        msg = f"unknown mode {mode!r}"
        raise SystemExit(msg)


if __name__ == "__main__":
    main()
