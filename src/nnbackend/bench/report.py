"""Running the benchmarks: rows, the table, ``nnbackend bench`` (see :mod:`nnbackend.bench`)."""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..backend import BackendUnavailableError
from .calls import CallCount, count_calls
from .convspecs import _PUBLIC_CONV_SIZES, CONV_SIZES, ConvSpec
from .convworkloads import build_conv_workload, conv_gemm_share
from .memory import peak_rss_growth
from .plot import _PLOT_BATCHES, _figure_class, _plot_throughput
from .seqspecs import _PUBLIC_SEQ_SIZES, SEQ_SIZES, SeqSpec
from .seqworkloads import build_seq_workload, seq_gemm_share
from .specs import (
    _PUBLIC_SIZES,
    ADAM_LR,
    SGD_LR,
    SIZES,
    WORKLOADS,
    MLPSpec,
    _check_workload,
)
from .timing import (
    machine_info,
    measure,
    measure_interleaved,
    openblas_env,
    thread_info,
    without_openblas_env,
)
from .workloads import (
    TARGETS,
    Target,
    Workload,
    build_workload,
    gemm_workload,
    get_target,
    runs,
)

__all__ = [
    "GemmTimes",
    "Row",
    "format_table",
    "make_row",
    "resolve_names",
    "restart_without_openblas_env",
    "run",
    "run_cli",
    "workload_compile_seconds",
]

_BACKEND_NAMES: dict[str, tuple[str, ...]] = {
    "numpy": ("nnbackend-numpy",),
    "cupy": ("nnbackend-cupy",),
    "gpulike": ("nnbackend-gpulike",),
    "torch": ("torch-cpu", "torch-cuda"),
    "nnbackend-torch": ("nnbackend-torch",),
    "jax": ("nnbackend-jax",),
    "nnbackend-jax-jit": ("nnbackend-jax-jit",),
    "jax-jit-handwritten": ("jax-jit-handwritten",),
    "nnbackend-cupy-graph": ("nnbackend-cupy-graph",),
    "numpy-handwritten": ("floor",),
    "handwritten": ("floor",),
    "floor": ("floor",),
    "all": TARGETS,
}
_PUBLIC_BACKENDS = ("numpy, cupy, torch, gpulike, numpy-handwritten, nnbackend-torch, jax, "
                    "nnbackend-jax-jit, jax-jit-handwritten, nnbackend-cupy-graph, all")
_PUBLIC_ALL_SIZES = (*_PUBLIC_SIZES, *_PUBLIC_CONV_SIZES, *_PUBLIC_SEQ_SIZES)
Spec = MLPSpec | ConvSpec | SeqSpec



# ============================================================================================
# Rows and the table


@dataclass
class Row:
    """One benchmarked (size, workload, target) with its derived measurements."""

    size: str
    widths: str
    batch: int
    workload: str
    target: str
    impl: str
    backend: str
    device: str
    seconds: float
    samples_per_s: float
    gflops: float
    gemm_seconds: float | None
    gemm_fraction: float | None
    array_calls: int | None
    calls_unit: str | None
    vs_torch: float | None = None
    vs_floor: float | None = None
    calls_by_name: dict[str, int] = field(default_factory=dict)
    gemm_method: str | None = None
    peak_rss_bytes: int | None = None
    rss_vs_torch: float | None = None
    compile_seconds: float | None = None

    def extra_info(self) -> dict[str, Any]:
        """The row as pytest-benchmark ``extra_info`` (with the thread settings)."""
        info = asdict(self)
        info["threads"] = thread_info()
        return info


def make_row(target: Target, spec: Spec, workload: str, *, batch: int | None,
             seconds: float, gemm_seconds: float | None, calls: CallCount | None,
             gemm_method: str | None = None, peak_rss_bytes: int | None = None,
             compile_seconds: float | None = None) -> Row:
    """Assemble a :class:`Row` from a step time, its products' time and its call count (and,
    for the convolutional networks, how the products were timed and the peak memory; for the
    compiled targets, the host time their compilation took)."""
    batch = batch or spec.batch
    if gemm_method is None and gemm_seconds is not None:
        gemm_method = "isolated"
    return Row(
        size=spec.name, widths=spec.label, batch=batch, workload=workload, target=target.name,
        impl=target.impl, backend=target.backend, device=target.device, seconds=seconds,
        samples_per_s=batch / seconds, gflops=spec.flops(workload, batch) / seconds / 1e9,
        gemm_seconds=gemm_seconds,
        gemm_fraction=None if gemm_seconds is None else gemm_seconds / seconds,
        array_calls=None if calls is None else calls.total,
        calls_unit=None if calls is None else calls.unit,
        calls_by_name={} if calls is None else calls.by_name,
        gemm_method=gemm_method, peak_rss_bytes=peak_rss_bytes,
        compile_seconds=compile_seconds,
    )


def workload_compile_seconds(workload: Workload) -> float | None:
    """The compilation time of a compiled target's workload (its step's ``compile_seconds``:
    tracing and XLA compilation, or graph capture, with the calls that did it); None for the
    others."""
    step = workload.parts.get("compiled")
    return None if step is None else float(step.compile_seconds)


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    """Format an optional number for the table ('—' when missing)."""
    return "—" if value is None else f"{value:{spec}}{suffix}"


def _fmt_time(seconds: float) -> str:
    """A step time in µs for the table (one decimal below 1 ms)."""
    us = seconds * 1e6
    return f"{us:,.1f}" if us < 1000 else f"{us:,.0f}"


_COLUMNS = (("size", "<", 6), ("workload", "<", 10), ("target", "<", 19), ("device", "<", 6),
            ("µs/step", ">", 9), ("samples/s", ">", 11), ("GFLOP/s", ">", 8),
            ("×torch", ">", 6), ("×floor", ">", 6), ("GEMM%", ">", 5), ("peak MiB", ">", 8),
            ("mem/torch", ">", 9), ("compile s", ">", 9), ("calls/step", ">", 10))


def _cells(row: Row) -> list[str]:
    """The table cells of one row, in :data:`_COLUMNS` order."""
    calls = "—" if row.array_calls is None else str(row.array_calls)
    if row.calls_unit == "aten":
        calls += "*"
    return [row.size, row.workload, row.target, row.device, _fmt_time(row.seconds),
            f"{row.samples_per_s:,.0f}", f"{row.gflops:.2f}", _fmt(row.vs_torch, ".2f", "×"),
            _fmt(row.vs_floor, ".2f", "×"),
            _fmt(None if row.gemm_fraction is None else 100 * row.gemm_fraction, ".0f", "%"),
            _fmt(None if row.peak_rss_bytes is None else row.peak_rss_bytes / 2**20, ".1f"),
            _fmt(row.rss_vs_torch, ".2f", "×"), _fmt(row.compile_seconds, ".2f"), calls]


def format_table(rows: Iterable[Row]) -> str:
    """The rows as an aligned text table: a header line, a rule, one line per row."""
    body = [_cells(r) for r in rows]
    widths = [max([width, len(name)] + [len(cells[i]) for cells in body])
              for i, (name, _, width) in enumerate(_COLUMNS)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(f"{c:{align}{w}}" for c, (_, align, _), w in zip(cells, _COLUMNS, widths,
                                                                           strict=True)).rstrip()

    out = [line([name for name, _, _ in _COLUMNS]), line(["-" * w for w in widths])]
    out.extend(line(cells) for cells in body)
    return "\n".join(out)


_LEGEND = """\
×torch, ×floor: throughput relative to PyTorch eager on the same kind of device and to the \
hand-written NumPy floor (above 1: faster).
GEMM%: the step's matrix products as a share of the step: MLPs, the products alone, timed on \
the same library and device; convolutional networks, the time inside the products during the \
step, a product on one of k parallel threads counting 1/k (PyTorch: its convolution and matrix \
kernels, from torch.profiler; sequence layers: likewise, PyTorch's fused attention and LSTM \
kernels counted whole).
peak MiB: peak RSS growth over 3 steps of a fresh process (convolutional networks, \
sequence layers); mem/torch: that over PyTorch eager's (below 1: less).
calls/step: Array API calls and array operators per step (floor: NumPy calls and operators; \
* torch: ATen operators, autograd backward included); not counted for the compiled rows (one \
program call per step).
compile s: the compiled rows' compilation (tracing and XLA compilation, or CUDA graph capture), \
host seconds of the calls that did it; the time per step excludes it. Compiled rows run the \
training steps only; their GEMM% (MLPs) is the products alone in one jax.jit program."""


# ============================================================================================
# Running


class GemmTimes:
    """Time per step of a step's matrix products alone (:func:`gemm_workload`), measured once.

    The products depend on the library, the device, the MLP and whether the step runs backward,
    not on the target or the optimizer: rows sharing those share one measurement.

    Parameters
    ----------
    budget_s : float
        Seconds of timing per measurement (see :func:`measure`).
    """

    def __init__(self, *, budget_s: float) -> None:
        self.budget_s = budget_s
        self._seconds: dict[tuple[str, str, str, bool, bool], float] = {}

    def seconds(self, target: Target, spec: MLPSpec, workload: str) -> float:
        """Seconds per step of the products of ``workload`` on ``spec`` at ``spec.batch``."""
        key = (target.library, target.device, spec.name, workload == "forward", target.compiled)
        if key not in self._seconds:
            products = gemm_workload(target, spec, workload)
            self._seconds[key] = measure(products.step, sync=products.sync,
                                         budget_s=self.budget_s).seconds
        return self._seconds[key]


def _split(names: str | Sequence[str]) -> list[str]:
    """Comma-separated names (or a list of them), stripped and lower-cased, blanks dropped."""
    items = [names] if isinstance(names, str) else list(names)
    out: list[str] = []
    for item in items:
        out.extend(part.strip().lower() for part in str(item).split(",") if part.strip())
    return out


def resolve_names(backends: str | Sequence[str],
                  sizes: str | Sequence[str]) -> tuple[list[str], list[Spec]]:
    """Validate the requested names: (the requested targets' names, the sizes).

    ``backends`` and ``sizes`` as :func:`run_cli` takes them. Raises ValueError naming an
    unknown name and the valid ones (or that none is named); the command line checks its
    ``--backends`` and ``--sizes`` with this before any work.
    """
    requested: list[str] = []
    for name in _split(backends):
        if name not in _BACKEND_NAMES:
            msg = f"unknown backend {name!r} in --backends; choose from {_PUBLIC_BACKENDS}"
            raise ValueError(msg)
        requested.extend(t for t in _BACKEND_NAMES[name] if t not in requested)
    if not requested:
        msg = f"--backends names no backend; choose from {_PUBLIC_BACKENDS}"
        raise ValueError(msg)
    specs: list[Spec] = []
    for name in _split(sizes):
        spec: Spec | None = SIZES.get(name) or CONV_SIZES.get(name) or SEQ_SIZES.get(name)
        if spec is None:
            msg = (f"unknown size {name!r} in --sizes; choose from "
                   f"{', '.join(_PUBLIC_ALL_SIZES)}")
            raise ValueError(msg)
        if spec not in specs:
            specs.append(spec)
    if not specs:
        msg = f"--sizes names no size; choose from {', '.join(_PUBLIC_ALL_SIZES)}"
        raise ValueError(msg)
    return requested, specs


def _available(names: Iterable[str]) -> tuple[list[Target], dict[str, str]]:
    """Targets that can run here, and the reason for each that cannot."""
    targets: list[Target] = []
    unavailable: dict[str, str] = {}
    for name in TARGETS:
        if name not in names:
            continue
        try:
            targets.append(get_target(name))
        except BackendUnavailableError as exc:
            unavailable[name] = str(exc)
    return targets, unavailable


def _set_ratios(rows: Sequence[Row]) -> None:
    """Fill ×torch and ×floor of a group of rows (one size and workload)."""
    floor = next((r for r in rows if r.impl == "floor"), None)
    for row in rows:
        torch_row = next((r for r in rows if r.impl == "torch"
                          and r.device.startswith("cuda") == row.device.startswith("cuda")), None)
        row.vs_torch = None if torch_row is None else torch_row.seconds / row.seconds
        row.vs_floor = None if floor is None else floor.seconds / row.seconds
        torch_rss = None if torch_row is None else torch_row.peak_rss_bytes
        if row.peak_rss_bytes is not None and torch_rss:
            row.rss_vs_torch = row.peak_rss_bytes / torch_rss


def run(
    targets: Sequence[Target],
    specs: Sequence[Spec],
    workloads: Sequence[str] = WORKLOADS,
    *,
    budget_s: float = 0.3,
    memory: bool = True,
    on_group: Callable[[list[Row]], None] | None = None,
    skipped: dict[str, str] | None = None,
) -> list[Row]:
    """Measure every (size, workload, target): time, products' time, calls; ratios per group.

    Convolutional networks and sequence layers run the workloads of theirs among
    ``workloads`` (:data:`CONV_WORKLOADS`, :data:`SEQ_WORKLOADS`; the sequence layers have no
    floor: it is left out of their rows), the targets of a group timed in turns
    (:func:`measure_interleaved`), with their products timed inside the step
    (:func:`conv_gemm_share`) and, with ``memory``, the peak memory of each row in a fresh
    process (:func:`peak_rss_growth`). ``on_group`` is called with the rows of each (size,
    workload) as soon as they are done. A target that cannot build a network (a layer this
    version lacks) is left out of that network's rows, the reason recorded in ``skipped``
    under ``"<target> <size>"``.
    """
    rows: list[Row] = []
    gemm_times = GemmTimes(budget_s=budget_s)
    for spec in specs:
        for workload in workloads:
            if not isinstance(spec, MLPSpec) and workload not in spec.workloads:
                continue
            if not isinstance(spec, MLPSpec):
                group = _conv_rows(targets, spec, workload, budget_s=budget_s, memory=memory,
                                   skipped=skipped)
            else:
                group = _mlp_rows(targets, spec, workload, budget_s=budget_s,
                                  gemm_times=gemm_times)
            _set_ratios(group)
            if on_group is not None:
                on_group(group)
            rows.extend(group)
    return rows


def _mlp_rows(targets: Sequence[Target], spec: MLPSpec, workload: str, *, budget_s: float,
              gemm_times: GemmTimes) -> list[Row]:
    """The rows of one MLP and workload: the targets' steps timed in turns
    (:func:`measure_interleaved`: three rounds, ``budget_s`` per target in all; a burst of
    other work then falls on one round of each target, not on one target's whole
    measurement), then each one's products and calls."""
    gc.collect()
    built = [(target, build_workload(target, spec, workload)) for target in targets
             if runs(target, workload)]
    timings = measure_interleaved([(wl.step, wl.sync) for _, wl in built],
                                  budget_s=budget_s * len(built)) if built else []
    rows = []
    for (target, wl), timing in zip(built, timings, strict=True):
        rows.append(make_row(target, spec, workload, batch=None, seconds=timing.seconds,
                             gemm_seconds=gemm_times.seconds(target, spec, workload),
                             calls=count_calls(target, spec, workload),
                             compile_seconds=workload_compile_seconds(wl)))
    return rows


def _conv_rows(targets: Sequence[Target], spec: ConvSpec | SeqSpec, workload: str, *,
               budget_s: float, memory: bool, skipped: dict[str, str] | None) -> list[Row]:
    """The rows of one network (or sequence layer) and workload: the targets' steps timed in
    turns (:func:`measure_interleaved`: three rounds, ``budget_s`` per target in all), then
    each one's share in its products, calls and peak memory."""
    gc.collect()  # the previous group's garbage is not this group's to collect
    seq = isinstance(spec, SeqSpec)
    if seq:  # no floor for the sequence layers
        targets = [t for t in targets if t.impl != "floor"]
    built: list[tuple[Target, Workload]] = []
    for target in targets:
        if not runs(target, workload):
            continue
        try:
            if isinstance(spec, SeqSpec):
                wl = build_seq_workload(target, spec, workload)
            else:
                wl = build_conv_workload(target, spec, workload)
            built.append((target, wl))
        except BackendUnavailableError as exc:
            if skipped is not None:
                skipped[f"{target.name} {spec.name}"] = str(exc)
    timings = measure_interleaved([(wl.step, wl.sync) for _, wl in built],
                                  budget_s=budget_s * len(built)) if built else []
    ran = [target for target, _ in built]
    compiled = [workload_compile_seconds(wl) for _, wl in built]
    del built
    rows = []
    for target, timing, compiling in zip(ran, timings, compiled, strict=True):
        gc.collect()
        if isinstance(spec, SeqSpec):
            share = seq_gemm_share(target, spec, workload)
        else:
            share = conv_gemm_share(target, spec, workload)
        gemm = None if share is None else share * timing.seconds
        method = None if share is None else "profiler" if target.impl == "torch" else "inline"
        peak = None
        if memory:
            peak = peak_rss_growth(target.name, spec.name, workload).growth_bytes
        rows.append(make_row(target, spec, workload, batch=None, seconds=timing.seconds,
                             gemm_seconds=gemm, calls=count_calls(target, spec, workload),
                             gemm_method=method, peak_rss_bytes=peak,
                             compile_seconds=compiling))
    return rows


def run_cli(
    backends: str | Sequence[str],
    sizes: str | Sequence[str],
    json_path: Path | None,
    plot_path: Path | None,
    *,
    budget_s: float = 0.3,
    workloads: Sequence[str] = WORKLOADS,
    plot_batches: Sequence[int] = _PLOT_BATCHES,
    memory: bool = True,
    stream: TextIO | None = None,
) -> int:
    """``nnbackend bench``: measure, print the table, optionally write JSON and a plot.

    Parameters
    ----------
    backends : str or sequence of str
        ``numpy`` (nnbackend on NumPy), ``cupy`` (nnbackend on CuPy), ``torch`` (PyTorch
        eager on the CPU, and on CUDA where available), ``nnbackend-torch`` and ``jax``
        (nnbackend on PyTorch's and JAX's CPU devices), ``gpulike`` (nnbackend on the GPU-like
        test device), ``numpy-handwritten`` (the floor), ``nnbackend-jax-jit`` and
        ``nnbackend-cupy-graph`` (nnbackend's step compiled by ``compile_step``: ``jax.jit``,
        a CUDA graph), ``jax-jit-handwritten`` (a hand-written ``jax.jit`` MLP step, the
        compiled rows' peer), ``all`` (every target); a
        comma-separated string or a list. The floor is always measured: it is the unit of
        the ``×floor`` column. Unavailable backends are listed with the reason.
    sizes : str or sequence of str
        ``small``, ``medium``, ``large`` (the MLPs of :data:`SIZES`), ``lenet``,
        ``resblock`` (the convolutional networks of :data:`CONV_SIZES`), ``transformer``,
        ``lstm`` (the sequence layers of :data:`SEQ_SIZES`).
    json_path : Path, optional
        Write ``{"machine": ..., "settings": ..., "unavailable": ..., "rows": [...]}`` there
        (and ``"throughput_vs_batch"`` with ``plot_path``).
    plot_path : Path, optional
        Draw samples/s of the SGD step against batch size (``plot_batches``) per target, one
        panel per requested size except ``large`` (small and medium when only large is
        requested). Needs matplotlib.
    budget_s : float
        Seconds of timing per row (and per products' measurement).
    workloads : sequence of str
        Subset of :data:`WORKLOADS` (the convolutional networks and sequence layers run
        those of :data:`CONV_WORKLOADS` and :data:`SEQ_WORKLOADS` among them).
    memory : bool
        Measure the convolutional and sequence rows' peak memory, one fresh process per row.
    stream : text file, optional
        Where the table goes (default: standard output).

    Returns
    -------
    int
        0 when at least one requested backend ran, 1 when none could.

    Raises
    ------
    ValueError
        An unknown backend, size or workload name (the message lists the valid ones).
    ImportError
        ``plot_path`` is given and matplotlib is not installed.
    """
    out = stream if stream is not None else sys.stdout
    requested, specs = resolve_names(backends, sizes)
    for workload in workloads:
        _check_workload(workload)
    figure_class = _figure_class() if plot_path is not None else None
    targets, unavailable = _available(["floor", *requested])

    print(_header(specs), file=out)
    for name, reason in unavailable.items():
        print(f"unavailable: {name}: {reason}", file=out)
    print(file=out)
    shown: list[Row] = []

    def show(group: list[Row]) -> None:
        table = format_table(group).splitlines()
        if shown and shown[-1].size != group[0].size:
            print(file=out)
        print("\n".join(table[2:] if shown else table), file=out, flush=True)
        shown.extend(group)

    skipped: dict[str, str] = {}
    rows = run(targets, specs, workloads, budget_s=budget_s, memory=memory, on_group=show,
               skipped=skipped)
    print(file=out)
    for name, reason in skipped.items():
        print(f"not measured: {name}: {reason}", file=out)
        unavailable[name] = reason
    print(_LEGEND, file=out)

    points: list[dict[str, Any]] = []
    if plot_path is not None:  # MLPs only (an empty list: the default MLPs)
        mlps = [s for s in specs if isinstance(s, MLPSpec)]
        points = _plot_throughput(targets, mlps, plot_batches, Path(plot_path),
                                  figure_class=figure_class, budget_s=min(budget_s, 0.15))
        print(f"wrote plot: {plot_path}", file=out)
    if json_path is not None:
        document = _json_document(specs, rows, unavailable, points, budget_s=budget_s)
        Path(json_path).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"wrote JSON: {json_path}", file=out)
    if not any(r.target in requested for r in rows):
        print("nnbackend bench: none of the requested backends is available here", file=out)
        return 1
    return 0


def _size_settings(spec: Spec) -> dict[str, Any]:
    if isinstance(spec, MLPSpec):
        return {"widths": list(spec.widths), "batch": spec.batch}
    if isinstance(spec, SeqSpec):
        return {"layer": spec.kind, "batch": spec.batch, "length": spec.length,
                "width": spec.width, "hidden": spec.hidden, "heads": spec.heads,
                "input_grad": spec.input_grad,
                "flops_by_layer": {w: spec.flops_by_layer(w) for w in spec.workloads}}
    return {"network": spec.kind, "input": [spec.channels, spec.height, spec.width],
            "batch": spec.batch, "input_grad": spec.input_grad,
            "flops_by_layer": {w: spec.flops_by_layer(w) for w in spec.workloads}}


def _json_document(specs: Sequence[Spec], rows: Sequence[Row], unavailable: dict[str, str],
                   points: Sequence[dict[str, Any]], *, budget_s: float) -> dict[str, Any]:
    """What ``--json`` writes: machine, settings, unavailable targets, rows (and the sweep)."""
    document: dict[str, Any] = {
        "machine": machine_info(),
        "settings": {
            "budget_s": budget_s, "sgd_lr": SGD_LR, "adam_lr": ADAM_LR, "dtype": "float32",
            "seed": 0, "sizes": {s.name: _size_settings(s) for s in specs},
            "flops": "2·B·Σ nᵢnₒ (forward), 6·B·Σ nᵢnₒ (fwd-bwd, train-*)",
            "conv_flops": "per conv 2·N·OH·OW·Cout·Cin/groups·kh·kw, per linear 2·N·nᵢ·nₒ, "
                          "forward; backward ∂L/∂W the same again, ∂L/∂x the same again "
                          "where computed (not LeNet's first convolution)",
            "seq_flops": "matrix products, 2·m·k·n each, attention dense (T² per head and "
                         "batch row, the causal mask's zero half included), LSTM all T steps; "
                         "backward both operands' gradients: 3× the forward",
            "gemm": {"isolated": "the step's products alone, same shapes and layouts",
                     "inline": "time inside the matmul calls during the step",
                     "profiler": "torch.profiler self CPU time of convolution and matrix ops"},
            "peak_rss": "ru_maxrss growth over 3 steps in a fresh process, peak mark reset "
                        "after a batch-2 warm-up and the workload's construction",
        },
        "unavailable": unavailable,
        "rows": [asdict(r) for r in rows],
    }
    if points:
        document["throughput_vs_batch"] = list(points)
    return document


def _header(specs: Sequence[Spec]) -> str:
    """Two lines: the setting (threads, versions, BLAS kernel) and the sizes."""
    threads = thread_info()
    parts = [f"{os.cpu_count()} CPU cores", f"NumPy {np.__version__}"]
    if threads["blas"]:
        kernel = f", kernel {threads['blas_kernel']}" if threads["blas_kernel"] else ""
        parts[-1] += f" ({threads['blas']}{kernel}, {threads['blas_threads']} threads)"
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if threads[name]:
            parts.append(f"{name}={threads[name]}")
    torch = sys.modules.get("torch")
    if torch is not None:
        parts.append(f"PyTorch {torch.__version__} ({threads['torch_threads']} threads)")
    jax = sys.modules.get("jax")
    if jax is not None:
        parts.append(f"JAX {jax.__version__}")
    kinds = ["MLPs, ReLU, softmax cross-entropy" if isinstance(s, MLPSpec)
             else "sequence layers" if isinstance(s, SeqSpec)
             else "convolutional networks" for s in specs]
    sizes = " · ".join(f"{s.name} {s.label} batch {s.batch}" for s in specs)
    return (f"nnbackend bench: float32 {' and '.join(dict.fromkeys(kinds))}; "
            f"{'; '.join(parts)}\nsizes: {sizes}")


def restart_without_openblas_env(argv: Sequence[str], *, stream: TextIO | None = None) -> None:
    """Replace this process with ``python -m nnbackend <argv>`` without :data:`OPENBLAS_ENV`.

    OpenBLAS reads those settings once, when NumPy loads it, so a comparison of NumPy with
    other libraries must start without them. Returns (doing nothing) when none is set, or when
    ``NNBACKEND_BENCH_KEEP_OPENBLAS_ENV`` is set to keep them on purpose; otherwise prints
    which settings it drops to ``stream`` (standard error) and never returns.
    """
    dropped = openblas_env()
    if not dropped or os.environ.get("NNBACKEND_BENCH_KEEP_OPENBLAS_ENV"):
        return
    settings = ", ".join(f"{k}={v}" for k, v in dropped.items())
    print(f"nnbackend bench: restarting without {settings} (they slow current NumPy; set "
          "NNBACKEND_BENCH_KEEP_OPENBLAS_ENV=1 to keep them)",
          file=stream if stream is not None else sys.stderr, flush=True)
    command = [sys.executable, "-m", "nnbackend", *argv]
    os.execve(sys.executable, command, without_openblas_env())
