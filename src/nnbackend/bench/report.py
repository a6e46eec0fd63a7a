"""Running the benchmarks: rows, the table, ``nnbackend bench`` (see :mod:`nnbackend.bench`)."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..backend import BackendUnavailableError, get_backend
from ..losses import CrossEntropyLoss
from ..optim import SGD, Adam
from .counting import CountingNamespace
from .floor import NumpyMLP
from .specs import (
    _PUBLIC_SIZES,
    ADAM_LR,
    SGD_LR,
    SIZES,
    WORKLOADS,
    MLPSpec,
    _check_workload,
    build_model,
    host_parameters,
    make_data,
)
from .timing import _no_sync, machine_info, measure, thread_info

__all__ = [
    "TARGETS",
    "CallCount",
    "Row",
    "Target",
    "Workload",
    "build_workload",
    "count_calls",
    "format_table",
    "gemm_workload",
    "get_target",
    "make_row",
    "run",
    "run_cli",
]

TARGETS = ("floor", "torch-cpu", "nnbackend-numpy", "torch-cuda", "nnbackend-cupy")
"""Every row kind, in table order: references first, so ratios are known when rows print."""

_BACKEND_NAMES: dict[str, tuple[str, ...]] = {
    "numpy": ("nnbackend-numpy",),
    "cupy": ("nnbackend-cupy",),
    "torch": ("torch-cpu", "torch-cuda"),
    "numpy-handwritten": ("floor",),
    "handwritten": ("floor",),
    "floor": ("floor",),
}
_PUBLIC_BACKENDS = "numpy, cupy, torch, numpy-handwritten"
_PLOT_HINT = "pip install 'nnbackend[plot]'"


# ============================================================================================
# Targets and workloads


@dataclass(frozen=True)
class Target:
    """What a row runs: ``impl`` (nnbackend, torch, floor) on ``backend`` and ``device``."""

    name: str
    impl: str
    backend: str
    device: str

    @property
    def library(self) -> str:
        """The array library whose matrix products the step uses (numpy, cupy or torch)."""
        return "torch" if self.impl == "torch" else self.backend

    @property
    def on_gpu(self) -> bool:
        """True for CUDA targets."""
        return self.device.startswith("cuda")


def _import_torch() -> Any:
    try:
        return importlib.import_module("torch")
    except ImportError as exc:
        msg = f"PyTorch is not installed ({exc}); pip install torch"
        raise BackendUnavailableError(msg) from exc


def get_target(name: str) -> Target:
    """The :class:`Target` named ``name`` (one of :data:`TARGETS`).

    Raises
    ------
    BackendUnavailableError
        The target cannot run here; the message says why (no CUDA device, torch missing, ...).
    ValueError
        ``name`` is not one of :data:`TARGETS`.
    """
    if name == "floor":
        return Target(name, "floor", "numpy", "cpu")
    if name == "nnbackend-numpy":
        return Target(name, "nnbackend", "numpy", "cpu")
    if name == "nnbackend-cupy":
        be = get_backend("cupy")
        return Target(name, "nnbackend", "cupy", f"cuda:{be.device.id}")
    if name in ("torch-cpu", "torch-cuda"):
        torch = _import_torch()
        if name == "torch-cpu":
            return Target(name, "torch", "torch", "cpu")
        if not torch.cuda.is_available():
            msg = f"PyTorch {torch.__version__} sees no CUDA device"
            raise BackendUnavailableError(msg)
        return Target(name, "torch", "torch", "cuda:0")
    msg = f"unknown benchmark target {name!r}; choose from {', '.join(TARGETS)}"
    raise ValueError(msg)


@dataclass(frozen=True)
class Workload:
    """One benchmarked step: ``step()`` may return before a device has finished; ``sync()``
    waits for it. Calling the workload runs both (what pytest-benchmark times)."""

    step: Callable[[], object]
    sync: Callable[[], None] = _no_sync

    def __call__(self) -> object:
        result = self.step()
        self.sync()
        return result


def _sync_for(target: Target) -> Callable[[], None]:
    """The device synchronisation of ``target``."""
    if target.impl == "nnbackend" and target.backend == "cupy":
        return get_backend("cupy").synchronize
    if target.impl == "torch" and target.on_gpu:
        torch = _import_torch()
        return lambda: torch.cuda.synchronize()
    return _no_sync


def build_workload(
    target: Target,
    spec: MLPSpec,
    workload: str,
    *,
    batch: int | None = None,
    seed: int = 0,
    namespace: CountingNamespace | None = None,
) -> Workload:
    """The step of ``workload`` on ``spec`` for ``target``, on fresh weights and data.

    Parameters
    ----------
    target, spec, workload
        What runs, which MLP, which step (see :mod:`nnbackend.bench`).
    batch : int, optional
        Batch size (default ``spec.batch``).
    seed : int
        Seed of the weights and the data.
    namespace : CountingNamespace, optional
        nnbackend and floor only: run on arrays wrapped by this counting namespace (it must
        wrap the target's namespace: ``array_api_compat.numpy`` for nnbackend on NumPy,
        ``numpy`` for the floor).
    """
    _check_workload(workload)
    batch = batch or spec.batch
    x_host, labels_host = make_data(spec, batch, seed=seed)
    if target.impl == "nnbackend":
        return _nnbackend_workload(target, spec, workload, x_host, labels_host, seed, namespace)
    if target.impl == "floor":
        return _floor_workload(spec, workload, x_host, labels_host, seed, namespace)
    if target.impl == "torch":
        if namespace is not None:
            msg = "build_workload: torch targets are counted with count_calls, not a namespace"
            raise ValueError(msg)
        return _torch_workload(target, spec, workload, x_host, labels_host, seed)
    msg = f"build_workload: unknown implementation {target.impl!r}"
    raise ValueError(msg)


def _nnbackend_workload(target: Target, spec: MLPSpec, workload: str, x_host: np.ndarray,
                        labels_host: np.ndarray, seed: int,
                        namespace: CountingNamespace | None) -> Workload:
    """nnbackend's step, through its public API only."""
    be = get_backend(target.backend)
    model = build_model(spec, be, seed=seed)
    x, labels = be.asarray(x_host), be.asarray(labels_host)
    if namespace is not None:
        for p in model.parameters():
            p.data = namespace.wrap(p.data)
        x, labels = namespace.wrap(x), namespace.wrap(labels)
    loss_fn = CrossEntropyLoss()
    if workload == "forward":
        return Workload(lambda: model(x), _sync_for(target))
    opt = Adam(model.parameters(), lr=ADAM_LR) if workload == "train-adam" else SGD(
        model.parameters(), lr=SGD_LR)
    train = workload != "fwd-bwd"

    def step() -> object:
        opt.zero_grad()
        logits, backprop = model.forward(x)
        loss, dlogits = loss_fn(logits, labels)
        backprop(dlogits)
        if train:
            opt.step()
        return loss

    return Workload(step, _sync_for(target))


def _floor_workload(spec: MLPSpec, workload: str, x_host: np.ndarray, labels_host: np.ndarray,
                    seed: int, namespace: CountingNamespace | None) -> Workload:
    """The hand-written NumPy step."""
    params = host_parameters(build_model(spec, "numpy", seed=seed))
    optimizer = "adam" if workload == "train-adam" else "sgd"
    xp: Any = np if namespace is None else namespace
    floor = NumpyMLP(params, optimizer=optimizer, xp=xp)
    x: Any = x_host
    labels: Any = labels_host
    if namespace is not None:
        x, labels = namespace.wrap(x_host), namespace.wrap(labels_host)
    if workload == "forward":
        return Workload(lambda: floor.forward(x))
    if workload == "fwd-bwd":
        return Workload(lambda: floor.loss_and_grad(x, labels))
    return Workload(lambda: floor.train_step(x, labels))


def _torch_workload(target: Target, spec: MLPSpec, workload: str, x_host: np.ndarray,
                    labels_host: np.ndarray, seed: int) -> Workload:
    """PyTorch eager, written the way its documentation writes a training step."""
    torch = _import_torch()
    functional = importlib.import_module("torch.nn.functional")
    device = torch.device(target.device)
    layers: list[Any] = []
    for i, (W, b) in enumerate(host_parameters(build_model(spec, "numpy", seed=seed))):
        if i:
            layers.append(torch.nn.ReLU())
        linear = torch.nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W))
            linear.bias.copy_(torch.from_numpy(b))
        layers.append(linear)
    model = torch.nn.Sequential(*layers).to(device)
    x = torch.from_numpy(x_host).to(device)
    labels = torch.from_numpy(labels_host).to(device)
    sync = _sync_for(target)
    if workload == "forward":

        def infer() -> object:
            with torch.no_grad():
                return model(x)

        return Workload(infer, sync)
    if workload == "train-adam":
        opt = torch.optim.Adam(model.parameters(), lr=ADAM_LR)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=SGD_LR)
    train = workload != "fwd-bwd"

    def step() -> object:
        opt.zero_grad()
        loss = functional.cross_entropy(model(x), labels)
        loss.backward()
        if train:
            opt.step()
        return loss

    return Workload(step, sync)


def gemm_workload(target: Target, spec: MLPSpec, workload: str, *,
                  batch: int | None = None, seed: int = 0) -> Workload:
    """The matrix products of one step of ``workload``, alone, on ``target``'s library.

    Per layer (nᵢ → nₒ): forward a Wᵀ, (B, nᵢ)·(nᵢ, nₒ); for the other workloads also δᵀ a,
    (nₒ, B)·(B, nᵢ), and, except on the first layer, δ W, (B, nₒ)·(nₒ, nᵢ). Operands are the
    same transposed views the step uses; outputs are preallocated.
    """
    _check_workload(workload)
    batch = batch or spec.batch
    rng = np.random.default_rng(seed)
    host: list[tuple[str, np.ndarray, np.ndarray, tuple[int, int]]] = []
    for i, (n_in, n_out) in enumerate(spec.layers):
        a = rng.standard_normal((batch, n_in), dtype=np.float32)
        W = rng.standard_normal((n_out, n_in), dtype=np.float32)
        host.append(("a Wᵀ", a, W, (batch, n_out)))
        if workload != "forward":
            dz = rng.standard_normal((batch, n_out), dtype=np.float32)
            host.append(("δᵀ a", dz, a, (n_out, n_in)))
            if i:
                host.append(("δ W", dz, W, (batch, n_in)))

    def operands(move: Callable[[np.ndarray], Any]) -> list[tuple[Any, Any, Any]]:
        ops = []
        for kind, left, right, shape in host:
            x, y, out = move(left), move(right), move(np.empty(shape, np.float32))
            if kind == "a Wᵀ":
                ops.append((x, y.T, out))
            elif kind == "δᵀ a":
                ops.append((x.T, y, out))
            else:
                ops.append((x, y, out))
        return ops

    if target.library == "numpy":
        numpy_ops = operands(lambda v: v)

        def numpy_products() -> None:
            for left, right, out in numpy_ops:
                np.matmul(left, right, out=out)

        return Workload(numpy_products)
    if target.library == "cupy":
        cupy = importlib.import_module("cupy")
        be = get_backend("cupy")
        with be.device:
            cupy_ops = operands(cupy.asarray)

        def cupy_products() -> None:
            for left, right, out in cupy_ops:
                cupy.matmul(left, right, out=out)

        return Workload(cupy_products, be.synchronize)
    torch = _import_torch()
    device = torch.device(target.device)
    torch_ops = operands(lambda v: torch.from_numpy(v).to(device))

    def torch_products() -> None:
        for left, right, out in torch_ops:
            torch.mm(left, right, out=out)

    return Workload(torch_products, _sync_for(target))


# ============================================================================================
# Counting calls


@dataclass(frozen=True)
class CallCount:
    """Calls in one step: the total, by name, and what was counted (``unit``)."""

    total: int
    by_name: dict[str, int]
    unit: str


def count_calls(target: Target, spec: MLPSpec, workload: str, *, batch: int | None = None,
                seed: int = 0) -> CallCount | None:
    """Count the calls of one step of ``workload`` (after two warm-up steps).

    nnbackend: calls through its Array API namespace and operators on its arrays (unit
    ``"array-api"``); floor: calls through ``numpy`` and operators on its arrays (``"numpy"``);
    both with :class:`CountingNamespace`. torch: ATen operators dispatched, the autograd
    backward included (``"aten"``).

    Returns None for nnbackend on CuPy when the library passes the counting proxies to one of
    CuPy's own functions (a native fast path): unlike NumPy's, they accept CuPy arrays only.
    """
    if target.impl == "torch":
        return _count_torch(target, spec, workload, batch=batch, seed=seed)
    if target.impl == "nnbackend":
        namespace = CountingNamespace(get_backend(target.backend).xp)
        unit = "array-api"
    else:
        namespace = CountingNamespace(np)
        unit = "numpy"
    wl = build_workload(target, spec, workload, batch=batch, seed=seed, namespace=namespace)
    try:
        wl()
        wl()
        namespace.reset()
        wl()
    except TypeError:
        if target.library == "numpy":
            raise
        return None
    return CallCount(namespace.calls, dict(sorted(namespace.counts.items())), unit)


def _count_torch(target: Target, spec: MLPSpec, workload: str, *, batch: int | None,
                 seed: int) -> CallCount:
    """ATen operators of one torch step, through a TorchDispatchMode."""
    dispatch_mode: Any = importlib.import_module("torch.utils._python_dispatch").TorchDispatchMode
    counts: Counter[str] = Counter()

    class _Counting(dispatch_mode):  # type: ignore[misc]
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                               kwargs: Any = None) -> Any:
            name = str(func)
            if not name.startswith("profiler."):
                counts[name] += 1
            return func(*args, **(kwargs or {}))

    wl = build_workload(target, spec, workload, batch=batch, seed=seed)
    wl()
    wl()
    with _Counting():
        wl()
    return CallCount(sum(counts.values()), dict(sorted(counts.items())), "aten")


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
        info["array_api_calls"] = self.array_calls
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
    us = seconds * 1e6
    return f"{us:,.1f}" if us < 1000 else f"{us:,.0f}"


_COLUMNS = (("size", "<", 6), ("workload", "<", 10), ("target", "<", 15), ("device", "<", 6),
            ("µs/step", ">", 9), ("samples/s", ">", 11), ("GFLOP/s", ">", 8),
            ("×torch", ">", 6), ("×floor", ">", 6), ("GEMM%", ">", 5), ("calls/step", ">", 10))


def _cells(row: Row) -> list[str]:
    calls = "—" if row.array_calls is None else str(row.array_calls)
    if row.calls_unit == "aten":
        calls += "*"
    return [row.size, row.workload, row.target, row.device, _fmt_time(row.seconds),
            f"{row.samples_per_s:,.0f}", f"{row.gflops:.2f}", _fmt(row.vs_torch, ".2f", "×"),
            _fmt(row.vs_floor, ".2f", "×"),
            _fmt(None if row.gemm_fraction is None else 100 * row.gemm_fraction, ".0f", "%"),
            calls]


def format_table(rows: Iterable[Row]) -> str:
    """The rows as an aligned text table, with a legend."""
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


def _split(names: str | Sequence[str]) -> list[str]:
    """Comma-separated names (or a list of them), stripped and lower-cased, blanks dropped."""
    items = [names] if isinstance(names, str) else list(names)
    out: list[str] = []
    for item in items:
        out.extend(part.strip().lower() for part in str(item).split(",") if part.strip())
    return out


def _resolve(backends: str | Sequence[str], sizes: str | Sequence[str]) -> tuple[
        list[str], list[str], list[MLPSpec]]:
    """Validate the requested names: (requested target names, their names, sizes)."""
    requested: list[str] = []
    backend_names = _split(backends)
    for name in backend_names:
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
    return requested, backend_names, specs


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
    gemm_cache: dict[tuple[str, str, str, bool], float] = {}
    for spec in specs:
        for workload in workloads:
            group: list[Row] = []
            for target in targets:
                wl = build_workload(target, spec, workload)
                timing = measure(wl.step, sync=wl.sync, budget_s=budget_s)
                key = (target.library, target.device, spec.name, workload == "forward")
                if key not in gemm_cache:
                    products = gemm_workload(target, spec, workload)
                    gemm_cache[key] = measure(products.step, sync=products.sync,
                                              budget_s=budget_s).seconds
                calls = count_calls(target, spec, workload)
                group.append(make_row(target, spec, workload, batch=None,
                                      seconds=timing.seconds, gemm_seconds=gemm_cache[key],
                                      calls=calls))
            _set_ratios(group)
            if on_group is not None:
                on_group(group)
            rows.extend(group)
    return rows


_PLOT_BATCHES = (16, 32, 64, 128, 256, 512, 1024)
_PLOT_WORKLOAD = "train-sgd"


def _sweep(targets: Sequence[Target], specs: Sequence[MLPSpec], batches: Sequence[int], *,
           budget_s: float) -> list[dict[str, Any]]:
    """Throughput of the SGD training step against batch size."""
    points = []
    for spec in specs:
        for target in targets:
            for batch in batches:
                wl = build_workload(target, spec, _PLOT_WORKLOAD, batch=batch)
                timing = measure(wl.step, sync=wl.sync, budget_s=budget_s)
                points.append({"size": spec.name, "widths": spec.label,
                               "target": target.name, "batch": batch,
                               "samples_per_s": batch / timing.seconds})
    return points


def _import_pyplot_free_matplotlib() -> Any:
    """matplotlib's Figure class (no global pyplot state), or an ImportError with the hint."""
    try:
        return importlib.import_module("matplotlib.figure").Figure
    except ImportError as exc:
        msg = f"--plot needs matplotlib ({exc}); {_PLOT_HINT}"
        raise ImportError(msg) from exc


def _plot(points: Sequence[dict[str, Any]], path: Path, figure_class: Any) -> None:
    """Samples/s against batch size, one panel per MLP, one line per target."""
    sizes = list(dict.fromkeys(p["size"] for p in points))
    fig = figure_class(figsize=(5.5 * len(sizes), 4.2), layout="constrained")
    axes = fig.subplots(1, len(sizes), squeeze=False)[0]
    for ax, size in zip(axes, sizes, strict=True):
        mine = [p for p in points if p["size"] == size]
        for target in dict.fromkeys(p["target"] for p in mine):
            line = [p for p in mine if p["target"] == target]
            ax.plot([p["batch"] for p in line], [p["samples_per_s"] for p in line],
                    marker="o", label=target)
        ax.set_xscale("log", base=2)
        batches = sorted({p["batch"] for p in mine})
        ax.set_xticks(batches, labels=[str(b) for b in batches])
        ax.minorticks_off()
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("samples/s (SGD training step)")
        ax.set_title(f"{size} MLP {mine[0]['widths']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.savefig(path)


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
    requested, _, specs = _resolve(backends, sizes)
    for workload in workloads:
        _check_workload(workload)
    figure_class = _import_pyplot_free_matplotlib() if plot_path is not None else None
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
        plot_specs = [s for s in specs if s.name != "large"] or [SIZES["small"], SIZES["medium"]]
        points = _sweep(targets, plot_specs, plot_batches, budget_s=min(budget_s, 0.15))
        _plot(points, Path(plot_path), figure_class)
        print(f"wrote plot: {plot_path}", file=out)
    if json_path is not None:
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
            document["throughput_vs_batch"] = points
        Path(json_path).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"wrote JSON: {json_path}", file=out)
    if not ran_requested:
        print("nnbackend bench: none of the requested backends is available here", file=out)
        return 1
    return 0


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
        parts.append(f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads)")
    sizes = " · ".join(f"{s.name} {s.label} batch {s.batch}" for s in specs)
    return (f"nnbackend bench: float32 MLPs, ReLU, softmax cross-entropy; {'; '.join(parts)}\n"
            f"sizes: {sizes}")
