"""Peak memory of a step: :func:`peak_rss_growth`, measured in a fresh process.

Method, the same for every target: a new Python process (``python -m
nnbackend.bench.memory``) imports what the target needs, runs two steps of the same workload at
batch 2 (so lazily created library state — BLAS buffers and threads, oneDNN's kernels — exists
before the measurement), builds the real workload (weights, data, optimizer), collects
garbage, and resets the kernel's peak-RSS mark (``/proc/self/clear_refs``, "5"); then it
reads the peak resident set, runs ``steps`` steps and reads it again. The growth is what those
steps needed above the resident set they started from: activations and what the backward
keeps, im2col buffers, gradients, the optimizer's state (created by the first step, for
PyTorch and nnbackend alike), temporaries, the allocator's retention.

The peak is the kernel's ``VmHWM`` of the process's memory (``/proc/self/status``), which the
reset sets back to the current RSS. ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is the same
mark on a fresh process, but Linux carries the *parent's* peak into it across fork and exec
(and the reset does not clear that), so a child of a process holding PyTorch would report no
growth below the parent's size; it is the fallback where ``/proc`` is missing, with the growth
measured from the process's peak so far, which can only understate it (``reset`` False).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from .convspecs import CONV_SIZES
from .convworkloads import build_conv_workload
from .seqspecs import SEQ_SIZES
from .seqworkloads import build_seq_workload
from .workloads import Workload, get_target

__all__ = ["MemoryResult", "peak_rss_growth"]


@dataclass(frozen=True)
class MemoryResult:
    """Peak RSS growth over ``steps`` steps of a fresh process, in bytes."""

    target: str
    size: str
    workload: str
    steps: int
    growth_bytes: int
    baseline_bytes: int
    reset: bool


def _maxrss_bytes() -> int:
    """The peak resident set of this process's memory: ``VmHWM``, else ``ru_maxrss`` (KiB on
    Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux ≥ 4.0); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def measure_here(target_name: str, size: str, workload: str, steps: int) -> MemoryResult:
    """The measurement itself, in this process (which should be fresh: module docstring)."""
    target = get_target(target_name)
    warm = _build(target, size, workload, batch=2)
    warm()
    warm()
    del warm
    wl = _build(target, size, workload)
    gc.collect()
    reset = _reset_peak()
    before = _maxrss_bytes()
    for _ in range(steps):
        wl()
    after = _maxrss_bytes()
    return MemoryResult(target_name, size, workload, steps, after - before, before, reset)


def _build(target: Any, size: str, workload: str, batch: int | None = None) -> Workload:
    """The workload of a convolutional network or a sequence layer named ``size``."""
    if size in SEQ_SIZES:
        return build_seq_workload(target, SEQ_SIZES[size], workload, batch=batch)
    return build_conv_workload(target, CONV_SIZES[size], workload, batch=batch)


def peak_rss_growth(target_name: str, size: str, workload: str, *, steps: int = 3,
                    timeout_s: float = 300.0) -> MemoryResult:
    """Run :func:`measure_here` in a fresh Python process (same interpreter and environment).

    Raises
    ------
    RuntimeError
        The child failed; the message carries its standard error.
    """
    command = [sys.executable, "-m", "nnbackend.bench.memory", target_name, size, workload,
               "--steps", str(steps)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                          env=dict(os.environ), check=False)
    if done.returncode != 0:
        msg = (f"peak_rss_growth: measuring {target_name} {size} {workload} failed "
               f"(exit {done.returncode}): {done.stderr.strip()[-2000:]}")
        raise RuntimeError(msg)
    fields: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return MemoryResult(**fields)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nnbackend.bench.memory")
    parser.add_argument("target")
    parser.add_argument("size", choices=sorted([*CONV_SIZES, *SEQ_SIZES]))
    parser.add_argument("workload")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    result = measure_here(args.target, args.size, args.workload, args.steps)
    print(json.dumps(result.__dict__))
    return 0


if __name__ == "__main__":  # pragma: no cover - the child process
    sys.exit(main())
