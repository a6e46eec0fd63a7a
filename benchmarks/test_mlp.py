"""MLP steps on every available target: forward, forward+backward, SGD and Adam training steps.

One benchmark per (size, workload, target); see :mod:`nnbackend.bench` for the workloads, the
FLOP convention and how the GEMM fraction and the array calls are measured. Rows of one size and
workload share a pytest-benchmark group, so its comparison table lines them up.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from nnbackend import bench

SIZES = ("small", "medium", "large")
WARMUP_STEPS = 3  # optimizer state, first-touch pages, allocator caches, CUDA kernels

# the products of a step depend on the library, device, size and whether it runs backward,
# not on the target: time them once per session
_GEMM_TIMES = bench.GemmTimes(budget_s=0.2)


@pytest.mark.parametrize(
    ("size", "workload", "target"),
    list(itertools.product(SIZES, bench.WORKLOADS, bench.TARGETS)),
    indirect=["target"],
    ids=str,
)
def test_mlp_step(benchmark: Any, median_seconds: Callable[[], float | None], size: str,
                  workload: str, target: bench.Target) -> None:
    if not bench.runs(target, workload):
        pytest.skip(f"{target.name} compiles training steps only")
    spec = bench.SIZES[size]
    step = bench.build_workload(target, spec, workload)
    for _ in range(WARMUP_STEPS):
        step()
    benchmark.group = f"{size} MLP {spec.label}, batch {spec.batch}: {workload}"
    benchmark(step)  # step() synchronises the device before returning
    compiling = bench.workload_compile_seconds(step)

    seconds = median_seconds()
    if seconds is None:  # --benchmark-disable: a quick measurement of our own
        seconds = bench.measure(step.step, sync=step.sync, budget_s=0.05).seconds
    row = bench.make_row(
        target, spec, workload, batch=None, seconds=seconds,
        gemm_seconds=_GEMM_TIMES.seconds(target, spec, workload),
        calls=bench.count_calls(target, spec, workload), compile_seconds=compiling,
    )
    benchmark.extra_info.update(row.extra_info())
