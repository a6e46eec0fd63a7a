"""``nnbackend bench --distributed`` under real ``mpiexec`` launches (1 and 2 ranks).

Each launch runs the command as a user would and checks the JSON rank 0 writes: the bytes
all-reduced per step against the model's gradient arena computed here (Σ parameter sizes ×
itemsize plus the arena's 64-byte alignment padding, and the chunks' own sizes), the
broadcast bytes against the batch norms' buffers, the shards, the threads per rank (the CPUs ÷
the ranks) and an all-reduce share strictly between 0 and 1. No time is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import bench
from nnbackend.cli import main
from nnbackend.layers.arena import ALIGN_BYTES

MPIEXEC = Path(sys.executable).parent / "mpiexec"
SIZES = "tiny,lenet-tiny"  # the MLP and the CNN at their test sizes: a few seconds per launch
TIMEOUT_S = 120

needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or not MPIEXEC.exists(),
    reason=f"needs mpi4py and {MPIEXEC} (pip install 'nnbackend[mpi]')")


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _launch(ranks: int, tmp_path: Path) -> tuple[dict[str, Any], str]:
    out = tmp_path / f"bench-{ranks}.json"
    command = [str(MPIEXEC), "-n", str(ranks), sys.executable, "-m", "nnbackend", "bench",
               "--distributed", "--sizes", SIZES, "--budget", "0.05", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text(encoding="utf-8")), done.stdout


def _padded_bytes(model: Any) -> int:
    """Σ over the parameters, in order, of their sizes with each slot starting at the next
    multiple of 64 bytes (float32: 16 elements), × 4 bytes: the flat gradient buffer."""
    align = ALIGN_BYTES // 4
    stop = 0
    for p in model.parameters():
        start = -(-stop // align) * align
        stop = start + math.prod(p.shape)
    return 4 * stop


def _expected(size: str) -> dict[str, int]:
    """The gradient arena's bytes of ``size``'s model as the benchmark builds it (its chunks,
    and the closed form above), and its buffers' bytes."""
    if size in bench.SIZES:
        model = bench.build_model(bench.SIZES[size], "numpy")
        buffers = 0
    else:
        model = bench.build_conv_model(bench.CONV_SIZES[size], "numpy")
        buffers = sum(b.size * b.dtype.itemsize for _, b in model.named_buffers())
    nb.optim.Adam(model.parameters(), lr=1e-3)  # packs the arena, in the parameters' order
    chunks = sum(int(c.grad.shape[0]) * 4 for c in model.arena())
    assert chunks == _padded_bytes(model)
    assert chunks >= 4 * sum(math.prod(p.shape) for p in model.parameters())
    return {"gradient": chunks, "buffers": buffers,
            "batch": (bench.SIZES.get(size) or bench.CONV_SIZES[size]).batch}


def _check_common(document: dict[str, Any], ranks: int) -> None:
    assert set(document) == {"machine", "settings", "ranks", "rows"}
    settings = document["settings"]
    assert settings["world_size"] == ranks
    assert settings["engine"] == "mpi"
    assert settings["workload"] == "train-adam"
    assert settings["openblas_env"] == {}  # the command restarts every rank without them
    threads = max(1, _cpus() // ranks)
    assert [r["rank"] for r in document["ranks"]] == list(range(ranks))
    for rank in document["ranks"]:
        assert rank["threads"] == threads
        if importlib.util.find_spec("threadpoolctl") is not None:
            assert rank["set_by"] == "threadpoolctl"
            assert rank["blas_threads"] == threads  # the limit took effect
    assert [row["size"] for row in document["rows"]] == SIZES.split(",")
    for row in document["rows"]:
        expected = _expected(row["size"])
        b = expected["batch"]
        assert row["world_size"] == ranks
        assert row["global_batch"] == b
        assert row["shard_rows"] == [(r + 1) * b // ranks - r * b // ranks for r in range(ranks)]
        assert row["threads_per_rank"] == [threads] * ranks
        assert row["gradient_arena_bytes"] == expected["gradient"]
        assert row["seconds"] > 0
        assert row["steps"] > 0
        assert len(row["rank_seconds"]) == ranks
        assert row["samples_per_s"] == pytest.approx(b / row["seconds"])


@needs_mpi
def test_two_ranks_all_reduce_the_gradient_arena_once_per_step(tmp_path: Path) -> None:
    document, stdout = _launch(2, tmp_path)
    _check_common(document, 2)
    for row in document["rows"]:
        expected = _expected(row["size"])
        assert row["allreduce_calls"] == 1  # one chunk: one call per step
        assert row["allreduce_bytes"] == expected["gradient"]
        assert 0 < row["allreduce_share"] < 1
        assert all(0 < s < 1 for s in row["allreduce_share_by_rank"])
        assert all(s > 0 for s in row["allreduce_seconds"])
        if row["network"] == "lenet":  # running statistics: float32 and int64, one call each
            assert row["broadcast_calls"] == 2
            assert row["broadcast_bytes"] == expected["buffers"]
            assert 0 < row["broadcast_share"] < 1
        else:
            assert row["broadcast_calls"] == 0
            assert row["broadcast_bytes"] == 0
    # rank 0 alone prints: one header, one table
    assert stdout.count("nnbackend bench --distributed: 2 ranks (mpi)") == 1
    assert stdout.count("all-reduce/step") == 2  # the table's header and the legend
    assert "wrote JSON" in stdout


@needs_mpi
def test_one_rank_runs_no_collective(tmp_path: Path) -> None:
    document, stdout = _launch(1, tmp_path)
    _check_common(document, 1)
    for row in document["rows"]:
        assert row["allreduce_calls"] == 0
        assert row["allreduce_bytes"] == 0
        assert row["allreduce_share"] == 0
        assert row["broadcast_bytes"] == 0
    assert "1 rank (mpi)" in stdout


# ------------------------------------------------------------------------ usage errors


@pytest.mark.parametrize(("argv", "message"), [
    (["--backends", "torch"], "unknown backend 'torch' in --backends with --distributed"),
    (["--sizes", "transformer"], "--distributed measures the MLPs and the convolutional"),
    (["--sizes", "huge"], "unknown size 'huge'"),
    (["--plot", "out.png"], "--plot: not with --distributed"),
])
def test_usage_errors_of_distributed_exit_2_before_any_work(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["bench", "--distributed", *argv])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_the_gradient_bytes_include_the_alignment_padding() -> None:
    # LeNet's first convolution has 150 weights: its slot is padded to 160 elements
    model = bench.build_conv_model(bench.CONV_SIZES["lenet-tiny"], "numpy")
    nb.optim.Adam(model.parameters(), lr=1e-3)
    sizes = [math.prod(p.shape) for p in model.parameters()]
    assert sizes[0] == 150
    assert bench.gradient_bytes(model) == _padded_bytes(model) > 4 * int(np.sum(sizes))


# ------------------------------------------------------------------------ ranks as threads


def test_every_rank_times_the_same_steps_and_gets_the_same_result() -> None:
    # rank 1's step is ten times rank 0's: the step counts still agree (a rank that ran one
    # step more would wait for ever in its all-reduce), and so does the result
    from nnbackend.testing.localgroup import LocalGroup

    def work(comm: Any) -> Any:
        grad = np.zeros(100, dtype=np.float32)
        calls = [0]

        def step() -> None:
            calls[0] += 1
            for _ in range(10 if comm.rank else 1):
                np.sum(np.ones(10_000))
            comm.all_reduce([grad])

        timing = bench.measure_ranks(step, comm, budget_s=0.02)
        return timing, calls[0]

    (t0, n0), (t1, n1) = LocalGroup(2).run(work)
    assert t0 == t1
    assert n0 == n1 > t0.steps > 0
    assert t0.calls == {"all_reduce": 1.0}
    assert t0.bytes == {"all_reduce": 400.0}
    assert len(t0.rank_seconds) == len(t0.comm_seconds["all_reduce"]) == 2
    assert all(0 < s < 1 for s in t0.share("all_reduce"))
    assert t0.seconds > 0
