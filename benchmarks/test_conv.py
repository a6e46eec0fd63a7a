"""Convolutional steps on every available target: LeNet (28×28×1, batch 64) and a residual
block (32×32×16, batch 32), forward, forward+backward and an Adam training step.

One benchmark per (network, workload, target); see :mod:`nnbackend.bench.convspecs` for the
networks and the FLOP convention, :mod:`nnbackend.bench.convworkloads` for the steps and how
the time in the products is measured, :mod:`nnbackend.bench.memory` for the peak memory (a
fresh process per benchmark; ``NNBACKEND_BENCH_MEMORY=0`` skips it). Rows of one network and
workload share a pytest-benchmark group. Run NumPy against the others without the machine's
OpenBLAS settings::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest benchmarks/test_conv.py --benchmark-only
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

import pytest

import nnbackend as nb
from nnbackend import bench

NETWORKS = ("lenet", "resblock")
WARMUP_STEPS = 3  # optimizer state, first-touch pages, allocator caches, oneDNN's kernels


@pytest.mark.parametrize(
    ("size", "workload", "target"),
    list(itertools.product(NETWORKS, bench.CONV_WORKLOADS, bench.TARGETS)),
    indirect=["target"],
    ids=str,
)
def test_conv_step(benchmark: Any, median_seconds: Callable[[], float | None], size: str,
                   workload: str, target: bench.Target) -> None:
    if not bench.runs(target, workload):
        pytest.skip(f"{target.name} compiles training steps only")
    spec = bench.CONV_SIZES[size]
    try:
        step = bench.build_conv_workload(target, spec, workload)
    except nb.BackendUnavailableError as exc:  # the hand-written jax.jit peer: MLPs only
        pytest.skip(str(exc))
    for _ in range(WARMUP_STEPS):
        step()
    benchmark.group = f"{size} {spec.label}, batch {spec.batch}: {workload}"
    benchmark(step)  # step() synchronises the device before returning
    compiling = bench.workload_compile_seconds(step)

    seconds = median_seconds()
    if seconds is None:  # --benchmark-disable: a quick measurement of our own
        seconds = bench.measure(step.step, sync=step.sync, budget_s=0.05).seconds
    del step
    share = bench.conv_gemm_share(target, spec, workload)
    gemm = None if share is None else share * seconds
    peak = None
    if os.environ.get("NNBACKEND_BENCH_MEMORY", "1") != "0":
        peak = bench.peak_rss_growth(target.name, size, workload).growth_bytes
    row = bench.make_row(
        target, spec, workload, batch=None, seconds=seconds, gemm_seconds=gemm,
        calls=bench.count_calls(target, spec, workload),
        gemm_method=None if gemm is None else "profiler" if target.impl == "torch" else "inline",
        peak_rss_bytes=peak, compile_seconds=compiling,
    )
    benchmark.extra_info.update(row.extra_info())
