"""Sequence-layer steps on every available target: a causal pre-norm transformer encoder layer
(d = 128, 4 heads, T = 128, batch 16) and an LSTM layer (input 64, hidden 128, T = 64,
batch 32), forward, forward+backward and an Adam training step.

One benchmark per (layer, workload, target); see :mod:`nnbackend.bench.seqspecs` for the
layers and the FLOP convention, :mod:`nnbackend.bench.seqworkloads` for the steps and how the
time in the products is measured, :mod:`nnbackend.bench.memory` for the peak memory (a fresh
process per benchmark; ``NNBACKEND_BENCH_MEMORY=0`` skips it). There is no hand-written floor
for these layers. Rows of one layer and workload share a pytest-benchmark group. Run NumPy
against the others without the machine's OpenBLAS settings::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest benchmarks/test_seq.py --benchmark-only
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

import pytest

import nnbackend as nb
from nnbackend import bench

LAYERS = ("transformer", "lstm")
WARMUP_STEPS = 3  # optimizer state, first-touch pages, allocator caches, oneDNN's kernels


@pytest.mark.parametrize(
    ("size", "workload", "target"),
    list(itertools.product(LAYERS, bench.SEQ_WORKLOADS,
                           [t for t in bench.TARGETS if t != "floor"])),
    indirect=["target"],
    ids=str,
)
def test_seq_step(benchmark: Any, median_seconds: Callable[[], float | None], size: str,
                  workload: str, target: bench.Target) -> None:
    if not bench.runs(target, workload):
        pytest.skip(f"{target.name} compiles training steps only")
    spec = bench.SEQ_SIZES[size]
    try:
        step = bench.build_seq_workload(target, spec, workload)
    except nb.BackendUnavailableError as exc:  # a layer this version of nnbackend lacks
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
    share = bench.seq_gemm_share(target, spec, workload)
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
