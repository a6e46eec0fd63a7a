"""The data-parallel benchmark: ``mpiexec -n N nnbackend bench --distributed``.

Every rank builds the same network and optimizer (Adam, lr 1e-3, the ``train-adam`` step of
:mod:`nnbackend.bench`), wraps it in :class:`~nnbackend.distributed.DistributedDataParallel`
and trains on its shard of one fixed global batch of B rows (the benchmark's batch: rows
[⌊r·B/N⌋, ⌊(r+1)·B/N⌋) on rank r of N, as :func:`nnbackend.data.batches` cuts them). One step
is what a data-parallel training loop runs::

    zero_grad; y, backprop = ddp.forward(x_r); loss, dy = loss_fn(y, y_r)
    backprop(dy)       # local backward on dy·n_r/B, then one all-reduce per arena chunk
    optimizer.step()

So the global batch stays B whatever N is: the time per step of N ranks against one rank's is
the speed-up of data parallelism at a fixed batch (strong scaling).

Threads
-------
Each rank limits its BLAS and OpenMP thread pools to ⌊c / k⌋ threads (at least 1) with
threadpoolctl, where c is the number of CPUs the rank may run on (its affinity mask) and k the
number of ranks on the same host whose masks overlap its own: two unbound ranks on two cores
get one thread each, so the ranks do not oversubscribe the cores. PyTorch's intra-op threads
get the same count when PyTorch is loaded. Without threadpoolctl nothing is set (the table
says so): launch with ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS`` set instead.

Measurements
------------
Collectives block, so every rank must run the same number of steps: the warm-up, the block
length and the number of blocks are computed from the slowest rank's time per step (gathered
on every rank), then the ranks pass a barrier before each timed block and time it on their own
clock.

time per step
    Per block, the slowest rank's time per step (the job advances at its pace); the result is
    the minimum over 5 repeats of the median block, as :func:`nnbackend.bench.measure`.
all-reduce bytes, calls and seconds per step
    From the communicator's :class:`~nnbackend.distributed.CommStats` over the timed blocks:
    what one rank passes to ``all_reduce`` (the model's flat gradient arena, alignment padding
    included) and the wall time inside those calls, waiting for the other ranks included.
all-reduce share
    A rank's seconds inside ``all_reduce`` over its wall time of the timed blocks; the table
    shows the mean over the ranks, the JSON each rank's. Broadcasts (batch normalisation's
    running statistics, rank 0's after every training forward) are reported the same way.
    The host all-reduce of the row counts at the start of each forward (8 bytes) is not in
    either.

With one rank there is nothing to sum: the wrapper calls no collective, and the bytes and the
share are 0.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..backend import get_backend
from ..data import shard_bounds
from ..distributed import Communicator, DistributedDataParallel
from ..distributed.comm import itemsize
from ..losses import CrossEntropyLoss
from ..optim import Adam
from .convspecs import ConvSpec, build_conv_model, make_conv_data
from .report import _fmt_time, resolve_names
from .specs import ADAM_LR, MLPSpec, build_model, make_data
from .timing import _no_sync, machine_info, openblas_env, thread_info
from .workloads import Target, Workload, _nnbackend_step, get_target

__all__ = [
    "DDP_BACKENDS",
    "DistributedRow",
    "RankThreads",
    "RankTiming",
    "build_ddp_workload",
    "gradient_bytes",
    "measure_ranks",
    "resolve_ddp_names",
    "run_distributed",
    "run_distributed_cli",
    "set_rank_threads",
]

DDP_BACKENDS: dict[str, str] = {
    "numpy": "nnbackend-numpy",
    "nnbackend-torch": "nnbackend-torch",
    "jax": "nnbackend-jax",
    "cupy": "nnbackend-cupy",
    "gpulike": "nnbackend-gpulike",
}
"""``--backends`` names under ``--distributed``: nnbackend on each library (PyTorch eager and
the hand-written floor have no data-parallel wrapper here)."""

WORKLOAD = "train-adam"


# ============================================================================================
# Threads


@dataclass(frozen=True)
class RankThreads:
    """One rank's thread setting and what its BLAS reports after it.

    Attributes
    ----------
    rank : int
    host : str
    cpus : int
        CPUs in the rank's affinity mask.
    sharing : int
        Ranks on this host whose masks overlap this rank's (itself included).
    threads : int
        The limit: max(1, cpus // sharing).
    set_by : str or None
        ``"threadpoolctl"``, or None when nothing was set (threadpoolctl is missing).
    blas, blas_kernel : str or None
        NumPy's BLAS (``openblas``) and the kernel it runs (OpenBLAS's core name).
    blas_threads : int or None
        The BLAS pool's threads after the limit.
    torch_threads : int or None
        PyTorch's intra-op threads, when PyTorch is loaded.
    """

    rank: int
    host: str
    cpus: int
    sharing: int
    threads: int
    set_by: str | None
    blas: str | None
    blas_kernel: str | None
    blas_threads: int | None
    torch_threads: int | None


def _affinity() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def set_rank_threads(comm: Communicator) -> list[RankThreads]:
    """Limit this rank's BLAS/OpenMP (and PyTorch) threads to its share of the cores (module
    docstring); returns every rank's :class:`RankThreads`, in rank order, on every rank."""
    cpus, host = _affinity(), socket.gethostname()
    everyone = comm.all_gather_object((host, sorted(cpus)))
    sharing = sum(1 for h, c in everyone if h == host and cpus & set(c))
    threads = max(1, len(cpus) // max(1, sharing))
    set_by: str | None = None
    try:
        threadpoolctl = importlib.import_module("threadpoolctl")
    except ImportError:
        pass
    else:
        threadpoolctl.threadpool_limits(limits=threads)  # stays until restored: never here
        set_by = "threadpoolctl"
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    info = thread_info()
    mine = RankThreads(comm.rank, host, len(cpus), sharing, threads, set_by, info["blas"],
                       info["blas_kernel"], info["blas_threads"], info.get("torch_threads"))
    return list(comm.all_gather_object(mine))


# ============================================================================================
# The step


def gradient_bytes(module: Any) -> int:
    """Bytes of the model's gradients as the wrapper sums them: each chunk of its flat arena
    whole (the 64-byte alignment padding between slots included), plus the parameters outside
    any chunk (namespaces without views), Σ size × itemsize."""
    arena = module.arena()
    total = sum(int(c.grad.shape[0]) * itemsize(c.grad) for c in arena)
    for p in module.parameters():
        if p.requires_grad and p not in arena:
            total += int(np.prod(p.shape)) * itemsize(p.data)
    return total


def build_ddp_workload(target: Target, spec: MLPSpec | ConvSpec, comm: Communicator, *,
                       seed: int = 0) -> Workload:
    """This rank's data-parallel Adam step on its shard of ``spec``'s global batch.

    ``parts``: ``"model"`` (the wrapper), ``"optimizer"``, ``"rows"`` (this rank's n_r) and
    ``"gradient_bytes"`` (:func:`gradient_bytes` of the replica).

    Raises
    ------
    ValueError
        The global batch has fewer rows than there are ranks (a rank would get none).
    """
    if spec.batch < comm.size:
        msg = (f"bench --distributed: {spec.name}'s global batch of {spec.batch} rows is "
               f"smaller than the {comm.size} ranks (every rank needs a row)")
        raise ValueError(msg)
    be = get_backend(target.backend)
    lo, hi = shard_bounds(spec.batch, comm.rank, comm.size)
    if isinstance(spec, MLPSpec):
        model = build_model(spec, be, seed=seed)
        x_host, aim_host = make_data(spec, seed=seed)
        input_grad, reduction = False, "mean"
    else:
        model = build_conv_model(spec, be, seed=seed)
        model.train()
        x_host, aim_host = make_conv_data(spec, seed=seed)
        # the residual block's loss is L = Σ g ⊙ y (a sum); it passes ∂L/∂x on, as inside a net
        input_grad = spec.input_grad
        reduction = "mean" if spec.kind == "lenet" else "sum"
    x = be.asarray(np.ascontiguousarray(x_host[lo:hi]), copy=True)
    aim = be.asarray(np.ascontiguousarray(aim_host[lo:hi]), copy=True)
    opt = Adam(model.parameters(), lr=ADAM_LR)
    ddp = DistributedDataParallel(model, opt, comm=comm, reduction=reduction)
    loss_fn = None if isinstance(spec, ConvSpec) and spec.kind != "lenet" else CrossEntropyLoss()

    def step() -> object:
        opt.zero_grad()
        y, backprop = ddp.forward(x, input_grad=input_grad)
        if loss_fn is None:
            result = backprop(aim)
        else:
            result, dy = loss_fn(y, aim)
            backprop(dy)
        opt.step()
        return result

    wl = _nnbackend_step(target, step, model, optimizer=opt)
    wl.parts.update(model=ddp, rows=hi - lo, gradient_bytes=gradient_bytes(model))
    return wl


# ============================================================================================
# Timing over the ranks


@dataclass(frozen=True)
class RankTiming:
    """Result of :func:`measure_ranks` (the same on every rank).

    Attributes
    ----------
    seconds : float
        Time per step: the minimum over repeats of the median block of the slowest rank.
    median_seconds : float
        The median over all blocks of the slowest rank's time per step.
    steps : int
        Timed steps per rank.
    rank_seconds : list of float
        Each rank's mean wall time per step over the timed blocks.
    calls, bytes : dict of str to float
        Collective calls and bytes per step by kind (``"all_reduce"``, ``"broadcast"``),
        rank 0's (every rank passes the same).
    comm_seconds : dict of str to list of float
        Seconds per step inside each kind, per rank.
    """

    seconds: float
    median_seconds: float
    steps: int
    rank_seconds: list[float]
    calls: dict[str, float]
    bytes: dict[str, float]
    comm_seconds: dict[str, list[float]]

    def share(self, kind: str) -> list[float]:
        """Each rank's share of its step time inside collectives of ``kind``."""
        seconds = self.comm_seconds.get(kind, [0.0] * len(self.rank_seconds))
        return [s / t for s, t in zip(seconds, self.rank_seconds, strict=True)]


def _slowest(comm: Communicator, seconds: float) -> float:
    return max(float(s) for s in comm.all_gather_object(seconds))


def measure_ranks(step: Callable[[], object], comm: Communicator, *,
                  sync: Callable[[], None] = _no_sync, budget_s: float = 0.3,
                  repeats: int = 5, block_s: float = 0.002) -> RankTiming:
    """Time a step that runs collectives on every rank of ``comm`` (module docstring).

    Every rank calls this with its own step; all of them run the same number of steps. Blocks
    of steps are timed as by :func:`nnbackend.bench.measure`, after a barrier each.
    """
    if budget_s <= 0 or repeats < 1:
        msg = (f"measure_ranks: budget_s must be positive and repeats ≥ 1, got {budget_s}, "
               f"{repeats}")
        raise ValueError(msg)
    clock = time.perf_counter
    start = clock()
    for _ in range(2):
        step()
    sync()
    per_step = _slowest(comm, (clock() - start) / 2)
    extra = min(10_000, max(0, round(0.1 * budget_s / max(per_step, 1e-9)) - 2))
    if extra:
        start = clock()
        for _ in range(extra):
            step()
        sync()
        per_step = _slowest(comm, (clock() - start) / extra)
    per_step = max(per_step, 1e-9)
    block = max(1, round(block_s / per_step))
    blocks = max(1, round(budget_s / (repeats * block * per_step)))
    stats = comm.stats
    before = (dict(stats.calls), dict(stats.bytes), dict(stats.seconds))
    times: list[float] = []
    for _ in range(repeats * blocks):
        comm.barrier()
        t0 = clock()
        for _ in range(block):
            step()
        sync()
        times.append((clock() - t0) / block)
    steps = repeats * blocks * block
    mine = {
        "times": times,
        "calls": {k: v - before[0].get(k, 0) for k, v in stats.calls.items()},
        "bytes": {k: v - before[1].get(k, 0) for k, v in stats.bytes.items()},
        "seconds": {k: v - before[2].get(k, 0.0) for k, v in stats.seconds.items()},
    }
    ranks = comm.all_gather_object(mine)
    slowest = [max(r["times"][i] for r in ranks) for i in range(len(times))]
    medians = [statistics.median(slowest[i * blocks:(i + 1) * blocks]) for i in range(repeats)]
    kinds = sorted({k for r in ranks for k in r["seconds"]})
    return RankTiming(
        seconds=min(medians),
        median_seconds=statistics.median(slowest),
        steps=steps,
        rank_seconds=[sum(r["times"]) * block / steps for r in ranks],
        calls={k: ranks[0]["calls"].get(k, 0) / steps for k in kinds},
        bytes={k: ranks[0]["bytes"].get(k, 0) / steps for k in kinds},
        comm_seconds={k: [r["seconds"].get(k, 0.0) / steps for r in ranks] for k in kinds},
    )


# ============================================================================================
# Rows, the table, the command


@dataclass
class DistributedRow:
    """One network's data-parallel step at one world size.

    ``allreduce_*`` and ``broadcast_*`` are per step; ``*_bytes`` what one rank passes,
    ``*_seconds`` and ``*_share`` per rank (``*_share`` the mean over the ranks).
    """

    size: str
    network: str
    label: str
    workload: str
    target: str
    backend: str
    device: str
    world_size: int
    engine: str
    global_batch: int
    shard_rows: list[int]
    threads_per_rank: list[int]
    seconds: float
    median_seconds: float
    samples_per_s: float
    steps: int
    rank_seconds: list[float]
    gradient_arena_bytes: int
    allreduce_calls: float
    allreduce_bytes: int
    allreduce_seconds: list[float]
    allreduce_share: float
    allreduce_share_by_rank: list[float]
    broadcast_calls: float
    broadcast_bytes: int
    broadcast_seconds: list[float]
    broadcast_share: float
    broadcast_share_by_rank: list[float] = field(default_factory=list)


def _row(target: Target, spec: MLPSpec | ConvSpec, comm: Communicator, wl: Workload,
         timing: RankTiming, threads: Sequence[RankThreads]) -> DistributedRow:
    rows = [int(n) for n in comm.all_gather_object(wl.parts["rows"])]
    ar, bc = timing.share("all_reduce"), timing.share("broadcast")
    zeros = [0.0] * comm.size
    return DistributedRow(
        size=spec.name, network="mlp" if isinstance(spec, MLPSpec) else spec.kind,
        label=spec.label, workload=WORKLOAD, target=target.name, backend=target.backend,
        device=target.device, world_size=comm.size, engine=comm.name,
        global_batch=spec.batch, shard_rows=rows, threads_per_rank=[t.threads for t in threads],
        seconds=timing.seconds, median_seconds=timing.median_seconds,
        samples_per_s=spec.batch / timing.seconds, steps=timing.steps,
        rank_seconds=timing.rank_seconds, gradient_arena_bytes=int(wl.parts["gradient_bytes"]),
        allreduce_calls=timing.calls.get("all_reduce", 0.0),
        allreduce_bytes=round(timing.bytes.get("all_reduce", 0.0)),
        allreduce_seconds=timing.comm_seconds.get("all_reduce", zeros),
        allreduce_share=statistics.fmean(ar), allreduce_share_by_rank=ar,
        broadcast_calls=timing.calls.get("broadcast", 0.0),
        broadcast_bytes=round(timing.bytes.get("broadcast", 0.0)),
        broadcast_seconds=timing.comm_seconds.get("broadcast", zeros),
        broadcast_share=statistics.fmean(bc), broadcast_share_by_rank=bc,
    )


def _ddp_specs(sizes: str | Sequence[str]) -> list[MLPSpec | ConvSpec]:
    _, specs = resolve_names("numpy", sizes)
    out: list[MLPSpec | ConvSpec] = []
    for spec in specs:
        if not isinstance(spec, MLPSpec | ConvSpec):
            msg = (f"--distributed measures the MLPs and the convolutional networks, not "
                   f"{spec.name!r}")
            raise ValueError(msg)
        out.append(spec)
    return out


def resolve_ddp_names(backends: str | Sequence[str],
                      sizes: str | Sequence[str]) -> tuple[list[str], list[MLPSpec | ConvSpec]]:
    """Validate ``--backends`` and ``--sizes`` of ``--distributed``: (target names, sizes);
    ValueError names what is unknown or not measured data-parallel, and the valid names."""
    items = [backends] if isinstance(backends, str) else list(backends)
    names = [n.strip().lower() for item in items for n in str(item).split(",") if n.strip()]
    targets: list[str] = []
    for name in names:
        if name not in DDP_BACKENDS:
            msg = (f"unknown backend {name!r} in --backends with --distributed; choose from "
                   f"{', '.join(DDP_BACKENDS)} (nnbackend on each library)")
            raise ValueError(msg)
        if DDP_BACKENDS[name] not in targets:
            targets.append(DDP_BACKENDS[name])
    if not targets:
        msg = f"--backends names no backend; choose from {', '.join(DDP_BACKENDS)}"
        raise ValueError(msg)
    return targets, _ddp_specs(sizes)


def run_distributed(comm: Communicator, targets: Sequence[Target],
                    specs: Sequence[MLPSpec | ConvSpec], threads: Sequence[RankThreads], *,
                    budget_s: float = 0.3,
                    on_row: Callable[[DistributedRow], None] | None = None
                    ) -> list[DistributedRow]:
    """Measure every (target, size) on every rank of ``comm``; ``on_row`` sees each row."""
    rows = []
    for target in targets:
        for spec in specs:
            wl = build_ddp_workload(target, spec, comm)
            timing = measure_ranks(wl.step, comm, sync=wl.sync, budget_s=budget_s)
            row = _row(target, spec, comm, wl, timing, threads)
            del wl
            if on_row is not None:
                on_row(row)
            rows.append(row)
    return rows


# (name, alignment, width): rows print one at a time, so the widths are fixed
_COLUMNS = (("size", "<", 10), ("network", "<", 12), ("ranks", ">", 5), ("batch", ">", 5),
            ("rows/rank", ">", 9), ("threads", ">", 7), ("µs/step", ">", 9),
            ("samples/s", ">", 9), ("all-reduce/step", ">", 20), ("AR µs", ">", 7),
            ("AR%", ">", 6), ("bcast/step", ">", 16), ("bcast%", ">", 6))


def _bytes(n: float) -> str:
    if n >= 2**20:
        return f"{n / 2**20:.2f} MiB"
    if n >= 2**10:
        return f"{n / 2**10:.1f} KiB"
    return f"{n:.0f} B"


def _calls(bytes_: float, calls: float) -> str:
    if not calls:
        return "—"
    count = f"{calls:.0f}" if abs(calls - round(calls)) < 1e-9 else f"{calls:.2f}"
    return f"{_bytes(bytes_)} ({count} call{'' if count == '1' else 's'})"


def _cells(row: DistributedRow) -> list[str]:
    rows = sorted(set(row.shard_rows))
    threads = sorted(set(row.threads_per_rank))
    return [row.size, row.label, str(row.world_size), str(row.global_batch),
            "/".join(map(str, rows)), "/".join(map(str, threads)), _fmt_time(row.seconds),
            f"{row.samples_per_s:,.0f}", _calls(row.allreduce_bytes, row.allreduce_calls),
            _fmt_time(statistics.fmean(row.allreduce_seconds)) if row.allreduce_calls else "—",
            f"{100 * row.allreduce_share:.1f}%" if row.allreduce_calls else "—",
            _calls(row.broadcast_bytes, row.broadcast_calls),
            f"{100 * row.broadcast_share:.1f}%" if row.broadcast_calls else "—"]


def _format_rows(rows: Sequence[DistributedRow], *, header: bool = True) -> list[str]:
    """The rows as aligned table lines (with the header and a rule when ``header``)."""
    body = [_cells(r) for r in rows]
    widths = [max([width] + [len(cells[i]) for cells in body])
              for i, (_, _, width) in enumerate(_COLUMNS)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(f"{c:{a}{w}}" for c, (_, a, _), w in zip(cells, _COLUMNS, widths,
                                                                  strict=True)).rstrip()

    out = ([line([n for n, _, _ in _COLUMNS]), line(["-" * w for w in widths])] if header
           else [])
    return out + [line(cells) for cells in body]


_LEGEND = """\
One step: zero_grad, forward of this rank's rows, loss, backward on dy·n_r/B with the \
gradient all-reduce, Adam step; the global batch is the same at every world size.
µs/step: the slowest rank's, minimum over 5 repeats of the median timed block (a barrier \
before each block). samples/s: global batch / time per step.
all-reduce/step: bytes one rank passes to all_reduce per step (the flat gradient arena, \
alignment padding included) and the calls; AR µs: seconds inside them per step, waiting for \
the other ranks included (mean over ranks); AR%: that share of the step.
bcast/step, bcast%: the same for broadcasts (rank 0's batch-norm running statistics after \
every training forward)."""


def _header(comm: Communicator, threads: Sequence[RankThreads], targets: Sequence[Target],
            specs: Sequence[MLPSpec | ConvSpec]) -> str:
    t0 = threads[0]
    kernel = f", kernel {t0.blas_kernel}" if t0.blas_kernel else ""
    counts = sorted({t.threads for t in threads})
    how = "set with threadpoolctl" if t0.set_by else "not set: threadpoolctl is not installed"
    hosts = len({t.host for t in threads})
    cores = f"{t0.cpus} CPUs" + (f" per host, {hosts} hosts" if hosts > 1 else "")
    pinned = openblas_env()
    env = "; " + ", ".join(f"{k}={v}" for k, v in pinned.items()) if pinned else ""
    blas = [f"{t.blas_threads}" for t in threads]
    lines = [
        f"nnbackend bench --distributed: {comm.size} rank{'s' if comm.size > 1 else ''} "
        f"({comm.name}), float32 Adam steps of DistributedDataParallel on "
        f"{', '.join(t.name for t in targets)}",
        f"threads per rank: {'/'.join(map(str, counts))} ({cores} ÷ {t0.sharing} "
        f"rank{'s' if t0.sharing > 1 else ''}, {how}); NumPy {np.__version__} "
        f"({t0.blas}{kernel}; BLAS threads by rank: {', '.join(blas)}){env}",
        "sizes: " + " · ".join(f"{s.name} {s.label} batch {s.batch}" for s in specs),
    ]
    return "\n".join(lines)


def run_distributed_cli(backends: str | Sequence[str], sizes: str | Sequence[str],
                        json_path: Path | None, *, budget_s: float = 0.3,
                        comm: Communicator | None = None, stream: TextIO | None = None) -> int:
    """``nnbackend bench --distributed``: every rank measures, rank 0 prints and writes.

    Parameters
    ----------
    backends : str or sequence of str
        Names of :data:`DDP_BACKENDS` (``numpy`` by default on the command line).
    sizes : str or sequence of str
        MLP sizes (``small``, ``medium``, ``large``) and convolutional networks (``lenet``,
        ``resblock``).
    json_path : Path, optional
        Rank 0 writes ``{"machine", "settings", "ranks", "rows"}`` there.
    budget_s : float
        Seconds of timing per row.
    comm : Communicator, optional
        Default: :func:`nnbackend.distributed.init` (MPI under ``mpiexec``, else one rank).
    stream : text file, optional
        Where rank 0's table goes (default: standard output).

    Returns
    -------
    int
        0 (every rank).
    """
    from ..distributed import abort_on_error, init

    target_names, specs = resolve_ddp_names(backends, sizes)
    with abort_on_error(comm, show_traceback=bool(os.environ.get("NNBACKEND_DEBUG"))):
        if comm is None:
            comm = init()
        targets = [get_target(name) for name in target_names]
        threads = set_rank_threads(comm)
        out = stream if stream is not None else sys.stdout
        root = comm.is_root
        if root:
            print(_header(comm, threads, targets, specs), file=out)
            print(file=out)
        shown: list[DistributedRow] = []

        def show(row: DistributedRow) -> None:
            if root:
                print("\n".join(_format_rows([row], header=not shown)), file=out, flush=True)
            shown.append(row)

        rows = run_distributed(comm, targets, specs, threads, budget_s=budget_s, on_row=show)
        if root:
            print(file=out)
            print(_LEGEND, file=out)
            if json_path is not None:
                document = {
                    "machine": machine_info(),
                    "settings": {
                        "budget_s": budget_s, "workload": WORKLOAD, "adam_lr": ADAM_LR,
                        "dtype": "float32", "seed": 0, "world_size": comm.size,
                        "engine": comm.name, "openblas_env": openblas_env(),
                        "threads_set_by": threads[0].set_by or "not set",
                    },
                    "ranks": [asdict(t) for t in threads],
                    "rows": [asdict(r) for r in rows],
                }
                Path(json_path).write_text(json.dumps(document, indent=2) + "\n",
                                           encoding="utf-8")
                print(f"wrote JSON: {json_path}", file=out)
        comm.barrier()  # no rank leaves (and finalises MPI) while rank 0 still writes
    return 0
