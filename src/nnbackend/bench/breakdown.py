"""Where a convolutional step's time goes: :func:`step_breakdown`, per layer and direction.

``python -m nnbackend.bench.breakdown lenet [resblock] [--workload train-adam] [--targets
nnbackend-numpy,floor,torch-cpu]`` prints it. Per target:

nnbackend on NumPy
    Two runs of the same step. The first times each leaf layer's ``forward_pass`` and the
    closure it returns (wrapped on the instances), the optimizer's ``zero_grad`` and ``step``;
    "other" is the rest of the step (the loss, containers, the residual sum). The second runs
    on arrays wrapped by a :class:`CountingNamespace` that times every call, and attributes
    each call's time to the phase it ran in, so each phase splits into its matrix products
    (:data:`GEMM_NAMES`) and its other calls by name (im2col's copies, col2im's additions,
    ...). The second run's proxies cost a microsecond or so per call, so its phase totals run a
    little above the first's.
the floor
    Its convolutions' forward and backward, batch norms, pool+ReLU, classifier forward and
    backward and Adam timed the same way, their products through the floor's ``matmul=``.
PyTorch
    ``torch.profiler``'s operators by self CPU time (PyTorch has no layer boundary to time).

Every number is the median over ``steps`` steps (after two warm-up steps), in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..backend import get_backend
from .convspecs import CONV_SIZES, ConvSpec
from .convworkloads import (
    GEMM_NAMES,
    MatmulTimer,
    _quiet_stderr,
    blas_core_share,
    build_conv_workload,
)
from .counting import CountingNamespace
from .workloads import Target, Workload, get_target

__all__ = ["Phase", "StepBreakdown", "format_breakdown", "step_breakdown"]


@dataclass
class Phase:
    """One part of a step: its time, the time of its products, its other calls' times."""

    name: str
    seconds: float
    gemm_seconds: float | None = None
    calls: dict[str, float] = field(default_factory=dict)


@dataclass
class StepBreakdown:
    """A step's phases (in the order they first ran) and its total time."""

    target: str
    size: str
    workload: str
    seconds: float
    phases: list[Phase]


class _Clock:
    """Accumulates wall time per phase; ``current`` names the phase running now."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.order: list[str] = []
        self.current = "other"

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if name not in self.order:
            self.order.append(name)
        outer, self.current = self.current, name
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start
            self.current = outer

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return function(*args, **kwargs)

        return timed


def _median_phases(runs: list[dict[str, float]], order: list[str]) -> dict[str, float]:
    return {name: statistics.median(run.get(name, 0.0) for run in runs) for name in order}


def _run_steps(wl: Workload, clock: _Clock, steps: int, extra: dict[str, float] | None = None,
               ) -> tuple[list[dict[str, float]], list[float], list[dict[str, float]]]:
    """Two warm-up steps, then ``steps`` steps: each one's phase seconds, total, and a copy of
    ``extra`` (another per-phase accumulator, cleared before each step)."""
    wl()
    wl()
    runs, totals, extras = [], [], []
    for _ in range(steps):
        clock.seconds.clear()
        if extra is not None:
            extra.clear()
        start = time.perf_counter()
        wl()
        totals.append(time.perf_counter() - start)
        runs.append(dict(clock.seconds))
        extras.append(dict(extra or {}))
    return runs, totals, extras


# ============================================================================================
# nnbackend


def _leaves(model: Any) -> list[tuple[str, Any]]:
    """(path, module) of each module without children, in order."""
    return [(name, m) for name, m in model.named_modules()
            if name and not any(True for _ in m.children())]


def _instrument_nnbackend(wl: Workload, clock: _Clock) -> None:
    """Wrap every leaf layer's forward_pass (and the backprop it returns) and the optimizer."""
    for path, module in _leaves(wl.parts["model"]):
        label = f"{path} {type(module).__name__}"
        original = module.forward_pass

        def forward_pass(x: Any, ctx: Any, _original: Any = original,
                         _label: str = label) -> Any:
            with clock.phase(f"{_label} fwd"):
                y, backprop = _original(x, ctx)
            return y, clock.wrap(f"{_label} bwd", backprop)

        module.forward_pass = forward_pass
        module.infer = clock.wrap(f"{label} fwd", module.infer)
    opt = wl.parts.get("optimizer")
    if opt is not None:
        opt.zero_grad = clock.wrap("optimizer zero_grad", opt.zero_grad)
        opt.step = clock.wrap("optimizer step", opt.step)


def _nnbackend_breakdown(target: Target, spec: ConvSpec, workload: str,
                         steps: int) -> tuple[float, list[Phase]]:
    clock = _Clock()
    wl = build_conv_workload(target, spec, workload)
    _instrument_nnbackend(wl, clock)
    runs, totals, _ = _run_steps(wl, clock, steps)
    total = statistics.median(totals)
    seconds = _median_phases(runs, clock.order)
    # the same step on counted arrays: every call's time, attributed to the running phase
    ns = CountingNamespace(get_backend(target.backend).xp, timed=True)
    counted = build_conv_workload(target, spec, workload, namespace=ns)
    calls_clock = _Clock()
    _instrument_nnbackend(counted, calls_clock)
    by_phase: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    original = ns._count
    weight = blas_core_share()  # calls on parallel parts' threads add up to their wall time
    lock = threading.Lock()

    def attribute(name: str, function: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(name, function, *args)
        finally:
            seconds = (time.perf_counter() - start) * weight()
            with lock:
                by_phase[calls_clock.current][name] += seconds

    ns._count = attribute  # type: ignore[method-assign]
    call_runs: list[dict[str, dict[str, float]]] = []
    counted()
    counted()
    for _ in range(steps):
        by_phase.clear()
        counted()
        call_runs.append({p: dict(c) for p, c in by_phase.items()})
    phases = []
    for name in [*clock.order, "other"]:
        names = {n for run in call_runs for n in run.get(name, {})}
        calls = {n: statistics.median(run.get(name, {}).get(n, 0.0) for run in call_runs)
                 for n in names}
        gemm = sum(v for n, v in calls.items() if n in GEMM_NAMES)
        wall = seconds.get(name, total - sum(seconds.values()))
        phases.append(Phase(name, wall, gemm,
                            dict(sorted(calls.items(), key=lambda kv: -kv[1]))))
    return total, phases


# ============================================================================================
# the floor


def _instrument_floor(model: Any, clock: _Clock) -> None:
    for i, conv in enumerate(model.convs):
        conv.forward = clock.wrap(f"conv{i + 1} fwd", conv.forward)
        conv.backward = clock.wrap(f"conv{i + 1} bwd", conv.backward)
    for i, bn in enumerate(model.bns):
        bn.forward = clock.wrap(f"bn{i + 1} fwd", bn.forward)
        bn.infer = clock.wrap(f"bn{i + 1} fwd", bn.infer)
        bn.backward = clock.wrap(f"bn{i + 1} bwd", bn.backward)
    for i, pool in enumerate(getattr(model, "pools", ())):
        pool.forward = clock.wrap(f"pool{i + 1}+relu fwd", pool.forward)
        pool.backward = clock.wrap(f"pool{i + 1}+relu bwd", pool.backward)
    if hasattr(model, "_classifier"):
        model._classifier = clock.wrap("classifier fwd", model._classifier)
        model._classifier_backward = clock.wrap("classifier bwd", model._classifier_backward)
    model.adam.step = clock.wrap("optimizer step", model.adam.step)


def _floor_breakdown(spec: ConvSpec, workload: str, steps: int) -> tuple[float, list[Phase]]:
    clock = _Clock()
    gemm: dict[str, float] = defaultdict(float)
    timer = MatmulTimer()
    original = timer.__call__

    def matmul(a: Any, b: Any, **kwargs: Any) -> Any:
        before = timer.seconds
        result = original(a, b, **kwargs)
        gemm[clock.current] += timer.seconds - before
        return result

    wl = build_conv_workload(get_target("floor"), spec, workload, matmul=matmul)
    _instrument_floor(wl.parts["model"], clock)
    runs, totals, gemm_runs = _run_steps(wl, clock, steps, extra=gemm)
    total = statistics.median(totals)
    seconds = _median_phases(runs, clock.order)
    phases = []
    for name in [*clock.order, "other"]:
        wall = seconds.get(name, total - sum(seconds.values()))
        g = statistics.median(run.get(name, 0.0) for run in gemm_runs)
        phases.append(Phase(name, wall, g))
    return total, phases


# ============================================================================================
# PyTorch


def _torch_breakdown(target: Target, spec: ConvSpec, workload: str,
                     steps: int) -> tuple[float, list[Phase]]:
    profiler = importlib.import_module("torch.profiler")
    wl = build_conv_workload(target, spec, workload)
    wl()
    wl()
    runs: list[dict[str, float]] = []
    totals = []
    for _ in range(steps):
        start = time.perf_counter()
        wl()
        totals.append(time.perf_counter() - start)
    for _ in range(steps):
        with _quiet_stderr(), profiler.profile(activities=[profiler.ProfilerActivity.CPU]) as prof:
            wl()
        runs.append({e.key: e.self_cpu_time_total * 1e-6 for e in prof.key_averages()})
    names = sorted({n for run in runs for n in run},
                   key=lambda n: -statistics.median(run.get(n, 0.0) for run in runs))
    phases = [Phase(n, statistics.median(run.get(n, 0.0) for run in runs)) for n in names]
    return statistics.median(totals), [p for p in phases if p.seconds > 0.0]


def step_breakdown(target_name: str, size: str, workload: str = "train-adam", *,
                   steps: int = 10) -> StepBreakdown:
    """Where the time of one step of ``workload`` on ``size`` goes (module docstring).

    Raises
    ------
    ValueError
        A target other than nnbackend on NumPy, the floor or PyTorch on the CPU.
    """
    target, spec = get_target(target_name), CONV_SIZES[size]
    gc.collect()  # earlier garbage (a previous breakdown's proxies) would be collected inside
    if target.impl == "nnbackend" and target.backend == "numpy":
        total, phases = _nnbackend_breakdown(target, spec, workload, steps)
    elif target.impl == "floor":
        total, phases = _floor_breakdown(spec, workload, steps)
    elif target.impl == "torch" and not target.on_gpu:
        total, phases = _torch_breakdown(target, spec, workload, steps)
    else:
        msg = (f"step_breakdown: {target_name} is not broken down; choose nnbackend-numpy, "
               "floor or torch-cpu")
        raise ValueError(msg)
    return StepBreakdown(target_name, size, workload, total, phases)


def format_breakdown(result: StepBreakdown, *, top_calls: int = 3, top_ops: int = 15) -> str:
    """A text table: phase, ms, share of the step, ms in products, the costliest other calls."""
    lines = [f"{result.target}, {result.size}, {result.workload}: "
             f"{result.seconds * 1e3:.2f} ms per step"]
    phases = result.phases[:top_ops] if result.target.startswith("torch") else result.phases
    for p in phases:
        share = p.seconds / result.seconds if result.seconds else 0.0
        gemm = "" if p.gemm_seconds is None else f"  GEMM {p.gemm_seconds * 1e3:6.2f}"
        others = [(n, s) for n, s in p.calls.items() if n not in GEMM_NAMES][:top_calls]
        rest = "  " + ", ".join(f"{n} {s * 1e3:.2f}" for n, s in others) if others else ""
        lines.append(f"  {p.name:<34} {p.seconds * 1e3:7.2f} ms {share:5.0%}{gemm}{rest}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nnbackend.bench.breakdown")
    parser.add_argument("sizes", nargs="+", choices=sorted(CONV_SIZES))
    parser.add_argument("--workload", default="train-adam")
    parser.add_argument("--targets", default="nnbackend-numpy,floor,torch-cpu")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    for size in args.sizes:
        for name in args.targets.split(","):
            result = step_breakdown(name.strip(), size, args.workload, steps=args.steps)
            print(format_breakdown(result), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - the command
    sys.exit(main())
