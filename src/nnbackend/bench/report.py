"""Running the benchmarks: rows, the table, ``nnbackend bench`` (see :mod:`nnbackend.bench`)."""

from __future__ import annotations

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
from .plot import _PLOT_BATCHES, _figure_class, _plot_throughput
from .specs import (
    _PUBLIC_SIZES,
    ADAM_LR,
    SGD_LR,
    SIZES,
    WORKLOADS,
    MLPSpec,
    _check_workload,
)
from .timing import machine_info, measure, thread_info
from .workloads import TARGETS, Target, build_workload, gemm_workload, get_target

__all__ = [
    "GemmTimes",
    "Row",
    "format_table",
    "make_row",
    "resolve_names",
    "run",
    "run_cli",
]

_BACKEND_NAMES: dict[str, tuple[str, ...]] = {
    "numpy": ("nnbackend-numpy",),
    "cupy": ("nnbackend-cupy",),
    "gpulike": ("nnbackend-gpulike",),
    "torch": ("torch-cpu", "torch-cuda"),
    "numpy-handwritten": ("floor",),
    "handwritten": ("floor",),
    "floor": ("floor",),
}
_PUBLIC_BACKENDS = "numpy, cupy, torch, gpulike, numpy-handwritten"



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

    def extra_info(self) -> dict[str, Any]:
        """The row as pytest-benchmark ``extra_info`` (with the thread settings)."""
        info = asdict(self)
        info["threads"] = thread_info()
        return info


def make_row(target: Target, spec: MLPSpec, workload: str, *, batch: int | None,
             seconds: float, gemm_seconds: float | None, calls: CallCount | None) -> Row:
    """Assemble a :class:`Row` from a step time, its products' time and its call count."""
    batch = batch or spec.batch
    return Row(
        size=spec.name, widths=spec.label, batch=batch, workload=workload, target=target.name,
        impl=target.impl, backend=target.backend, device=target.device, seconds=seconds,
        samples_per_s=batch / seconds, gflops=spec.flops(workload, batch) / seconds / 1e9,
        gemm_seconds=gemm_seconds,
        gemm_fraction=None if gemm_seconds is None else gemm_seconds / seconds,
        array_calls=None if calls is None else calls.total,
        calls_unit=None if calls is None else calls.unit,
        calls_by_name={} if calls is None else calls.by_name,
    )


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    """Format an optional number for the table ('—' when missing)."""
    return "—" if value is None else f"{value:{spec}}{suffix}"


def _fmt_time(seconds: float) -> str:
    """A step time in µs for the table (one decimal below 1 ms)."""
    us = seconds * 1e6
    return f"{us:,.1f}" if us < 1000 else f"{us:,.0f}"


_COLUMNS = (("size", "<", 6), ("workload", "<", 10), ("target", "<", 15), ("device", "<", 6),
            ("µs/step", ">", 9), ("samples/s", ">", 11), ("GFLOP/s", ">", 8),
            ("×torch", ">", 6), ("×floor", ">", 6), ("GEMM%", ">", 5), ("calls/step", ">", 10))


def _cells(row: Row) -> list[str]:
    """The table cells of one row, in :data:`_COLUMNS` order."""
    calls = "—" if row.array_calls is None else str(row.array_calls)
    if row.calls_unit == "aten":
        calls += "*"
    return [row.size, row.workload, row.target, row.device, _fmt_time(row.seconds),
            f"{row.samples_per_s:,.0f}", f"{row.gflops:.2f}", _fmt(row.vs_torch, ".2f", "×"),
            _fmt(row.vs_floor, ".2f", "×"),
            _fmt(None if row.gemm_fraction is None else 100 * row.gemm_fraction, ".0f", "%"),
            calls]


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
GEMM%: the step's matrix products alone, timed on the same library and device, as a share of \
the step.
calls/step: Array API calls and array operators per step (floor: NumPy calls and operators; \
* torch: ATen operators, autograd backward included)."""


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
        self._seconds: dict[tuple[str, str, str, bool], float] = {}

    def seconds(self, target: Target, spec: MLPSpec, workload: str) -> float:
        """Seconds per step of the products of ``workload`` on ``spec`` at ``spec.batch``."""
        key = (target.library, target.device, spec.name, workload == "forward")
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
                  sizes: str | Sequence[str]) -> tuple[list[str], list[MLPSpec]]:
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
    specs: list[MLPSpec] = []
    for name in _split(sizes):
        if name not in SIZES:
            msg = f"unknown size {name!r} in --sizes; choose from {', '.join(_PUBLIC_SIZES)}"
            raise ValueError(msg)
        if SIZES[name] not in specs:
            specs.append(SIZES[name])
    if not specs:
        msg = f"--sizes names no size; choose from {', '.join(_PUBLIC_SIZES)}"
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


def run(
    targets: Sequence[Target],
    specs: Sequence[MLPSpec],
    workloads: Sequence[str] = WORKLOADS,
    *,
    budget_s: float = 0.3,
    on_group: Callable[[list[Row]], None] | None = None,
) -> list[Row]:
    """Measure every (size, workload, target): time, products' time, calls; ratios per group.

    ``on_group`` is called with the rows of each (size, workload) as soon as they are done.
    """
    rows: list[Row] = []
    gemm_times = GemmTimes(budget_s=budget_s)
    for spec in specs:
        for workload in workloads:
            group: list[Row] = []
            for target in targets:
                wl = build_workload(target, spec, workload)
                timing = measure(wl.step, sync=wl.sync, budget_s=budget_s)
                calls = count_calls(target, spec, workload)
                group.append(make_row(target, spec, workload, batch=None,
                                      seconds=timing.seconds,
                                      gemm_seconds=gemm_times.seconds(target, spec, workload),
                                      calls=calls))
            _set_ratios(group)
            if on_group is not None:
                on_group(group)
            rows.extend(group)
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
    stream: TextIO | None = None,
) -> int:
    """``nnbackend bench``: measure, print the table, optionally write JSON and a plot.

    Parameters
    ----------
    backends : str or sequence of str
        ``numpy`` (nnbackend on NumPy), ``cupy`` (nnbackend on CuPy), ``torch`` (PyTorch
        eager on the CPU, and on CUDA where available), ``numpy-handwritten`` (the floor);
        a comma-separated string or a list. The floor is always measured: it is the unit of
        the ``×floor`` column. Unavailable backends are listed with the reason.
    sizes : str or sequence of str
        ``small``, ``medium``, ``large`` (see :data:`SIZES`).
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
        Subset of :data:`WORKLOADS`.
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
    ran_requested = any(t.name in requested for t in targets)

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

    rows = run(targets, specs, workloads, budget_s=budget_s, on_group=show)
    print(file=out)
    print(_LEGEND, file=out)

    points: list[dict[str, Any]] = []
    if plot_path is not None:
        points = _plot_throughput(targets, specs, plot_batches, Path(plot_path),
                                  figure_class=figure_class, budget_s=min(budget_s, 0.15))
        print(f"wrote plot: {plot_path}", file=out)
    if json_path is not None:
        document = _json_document(specs, rows, unavailable, points, budget_s=budget_s)
        Path(json_path).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"wrote JSON: {json_path}", file=out)
    if not ran_requested:
        print("nnbackend bench: none of the requested backends is available here", file=out)
        return 1
    return 0


def _json_document(specs: Sequence[MLPSpec], rows: Sequence[Row], unavailable: dict[str, str],
                   points: Sequence[dict[str, Any]], *, budget_s: float) -> dict[str, Any]:
    """What ``--json`` writes: machine, settings, unavailable targets, rows (and the sweep)."""
    document: dict[str, Any] = {
        "machine": machine_info(),
        "settings": {
            "budget_s": budget_s, "sgd_lr": SGD_LR, "adam_lr": ADAM_LR, "dtype": "float32",
            "seed": 0, "sizes": {s.name: {"widths": list(s.widths), "batch": s.batch}
                                 for s in specs},
            "flops": "2·B·Σ nᵢnₒ (forward), 6·B·Σ nᵢnₒ (fwd-bwd, train-*)",
        },
        "unavailable": unavailable,
        "rows": [asdict(r) for r in rows],
    }
    if points:
        document["throughput_vs_batch"] = list(points)
    return document


def _header(specs: Sequence[MLPSpec]) -> str:
    """Two lines: the setting (threads, versions) and the sizes."""
    threads = thread_info()
    parts = [f"{os.cpu_count()} CPU cores", f"NumPy {np.__version__}"]
    if threads["blas"]:
        parts[-1] += f" ({threads['blas']}, {threads['blas_threads']} threads)"
    if threads["OPENBLAS_CORETYPE"]:
        parts.append(f"OPENBLAS_CORETYPE={threads['OPENBLAS_CORETYPE']}")
    torch = sys.modules.get("torch")
    if torch is not None:
        parts.append(f"PyTorch {torch.__version__} ({threads['torch_threads']} threads)")
    sizes = " · ".join(f"{s.name} {s.label} batch {s.batch}" for s in specs)
    return (f"nnbackend bench: float32 MLPs, ReLU, softmax cross-entropy; {'; '.join(parts)}\n"
            f"sizes: {sizes}")
