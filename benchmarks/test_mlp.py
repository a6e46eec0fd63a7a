"""MLP steps on every available target: forward, forward+backward, SGD and Adam training steps.

One benchmark per (size, workload, target); see :mod:`nnbackend.bench` for the workloads, the
FLOP convention and how the GEMM fraction and the array calls are measured. Rows of one size and
workload share a pytest-benchmark group, so its comparison table lines them up.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from nnbackend import bench

SIZES = ("small", "medium", "large")
WARMUP_STEPS = 3  # optimizer state, first-touch pages, allocator caches, CUDA kernels

# the products of a step depend on the library, device, size and whether it runs backward,
# not on the target: time them once per session
_gemm_seconds: dict[tuple[str, str, str, bool], float] = {}


def _products_seconds(target: bench.Target, spec: bench.MLPSpec, workload: str) -> float:
    key = (target.library, target.device, spec.name, workload == "forward")
    if key not in _gemm_seconds:
        products = bench.gemm_workload(target, spec, workload)
        _gemm_seconds[key] = bench.measure(products.step, sync=products.sync,
                                           budget_s=0.2).seconds
    return _gemm_seconds[key]


def _median_seconds(benchmark: Any, workload: bench.Workload) -> float:
    """The benchmark's median, or a quick measurement of our own under --benchmark-disable."""
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    if stats is not None:
        return float(stats.median)
    return bench.measure(workload.step, sync=workload.sync, budget_s=0.05).seconds


@pytest.mark.parametrize(
    ("size", "workload", "target_name"),
    list(itertools.product(SIZES, bench.WORKLOADS, bench.TARGETS)),
    ids=lambda value: str(value),
)
def test_mlp_step(benchmark: Any, size: str, workload: str, target_name: str,
                  target: bench.Target) -> None:
    spec = bench.SIZES[size]
    step = bench.build_workload(target, spec, workload)
    for _ in range(WARMUP_STEPS):
        step()
    benchmark.group = f"{size} MLP {spec.label}, batch {spec.batch}: {workload}"
    benchmark(step)  # step() synchronises the device before returning

    row = bench.make_row(
        target, spec, workload, batch=None, seconds=_median_seconds(benchmark, step),
        gemm_seconds=_products_seconds(target, spec, workload),
        calls=bench.count_calls(target, spec, workload),
    )
    benchmark.extra_info.update(row.extra_info())
