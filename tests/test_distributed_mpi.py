"""The MPI communicator under real ``mpiexec -n 2`` and ``-n 3`` launches (MPICH on loopback).

Each launch runs tests/mpi_scenarios/engines.py, which performs many collectives and writes one
JSON file per rank; the values are compared here with closed forms. The launcher is
the ``mpiexec`` beside the test's Python interpreter (the ``mpich`` package's, installed by the
``mpi`` and ``test`` extras). Every child runs with one BLAS/OpenMP thread, so N ranks on a
small machine do not oversubscribe its cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

MPIEXEC = Path(sys.executable).parent / "mpiexec"
SCENARIO = Path(__file__).parent / "mpi_scenarios" / "engines.py"
# Variables of an enclosing launch (pytest itself under mpiexec) must not reach the children.
_LAUNCH_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "MV2_", "MPI_LOCAL", "HYDRA_")
_ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                      "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")}


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LAUNCH_PREFIXES)}
    env.pop("NNBACKEND_MPI_CUDA_AWARE", None)  # the library's own answer is what is checked
    env.update(_ONE_THREAD)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parents[1] / "src"), env.get("PYTHONPATH", "")])
    return env


def _launch(n: int, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    """``mpiexec -n n python engines.py args...``; the result and its wall time in seconds.

    On timeout the launcher's whole process group is killed (ranks included) and the test fails.
    """
    if not MPIEXEC.exists():
        pytest.fail(f"the MPI tests launch {MPIEXEC}, which does not exist: install the mpi "
                    'extra beside this Python (pip install "nnbackend[mpi]": mpi4py and mpich)')
    command = [str(MPIEXEC), "-n", str(n), sys.executable, str(SCENARIO), *args]
    start = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=_environment(), start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            pytest.fail(f"`{' '.join(command)}` still ran after {timeout:.0f} s and was killed\n"
                        f"stdout:\n{stdout}\nstderr:\n{stderr}")
    elapsed = time.perf_counter() - start
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr), elapsed


def _results(done: subprocess.CompletedProcess[str], n: int,
             directory: Path) -> list[dict[str, Any]]:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    rows = [json.loads((directory / f"rank{r}.json").read_text(encoding="utf-8"))
            for r in range(n)]
    assert [row["rank"] for row in rows] == list(range(n))
    return rows


def _random(seed: int, rank: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, rank]).standard_normal(n)


@pytest.mark.parametrize(("n", "libraries"), [
    (2, ["numpy", "strict", "torch", "gpulike"]),
    (3, ["numpy", "strict", "gpulike"]),  # PyTorch's import is the slow part: once is enough
])
def test_collectives_under_mpiexec(n: int, libraries: list[str], tmp_path: Path) -> None:
    done, _ = _launch(n, "checks", ",".join(libraries), str(tmp_path), timeout=180)
    rows = _results(done, n, tmp_path)
    ranks = sum(range(n))  # Σ r
    triangle = n * (n + 1) // 2  # Σ (r + 1)
    random_sum = sum(_random(7, r, 1000) for r in range(n))
    staged = [lib for lib in libraries if lib != "numpy"]
    for r, row in enumerate(rows):
        assert (row["size"], row["name"], row["type"]) == (n, "mpi", "MPICommunicator")
        assert (row["get_rank"], row["get_world_size"]) == (r, n)
        assert row["launched"] and row["initialized"]
        assert row["hook"] == "_ExceptHook"  # init() installed the abort hook
        assert isinstance(row["cuda_aware"], bool)
        assert row["cuda_aware"] == rows[0]["cuda_aware"]
        # NumPy, in place
        assert row["np64"] == (np.arange(6) * triangle).tolist()
        assert row["np32"] == [n * n / 2] * 6 and row["np32_dtype"] == "float32"
        assert row["np_in_place"]
        assert row["np_strided"] == [triangle, 0.0] * 6
        np.testing.assert_allclose(row["random_sum_head"], random_sum[:5], rtol=1e-13)
        assert row["random_digest"] == rows[0]["random_digest"]  # bit-identical on every rank
        assert row["np_bcast"] == [n - 1.0] * 4
        # staged through the host
        for lib in staged:
            assert row[f"{lib}_sum"] == (np.arange(4) * triangle).tolist(), lib
            assert row[f"{lib}_sum2"] == [10.0 * ranks] * 3, lib
            assert row[f"{lib}_same_object"] is (lib != "strict"), lib  # strict: new arrays
            assert row[f"{lib}_on_device"] and row[f"{lib}_bcast_on_device"], lib
            assert row[f"{lib}_bcast"] == [float(n)] * 3, lib  # rank n-1 held r + 1 = n
        # host values, objects, barrier
        assert row["host_int"] == [ranks, n] and row["host_int_dtype"] == "int64"
        assert row["host_float"] == [0.25 * ranks, 1.5 * n]
        assert row["bcast_object"] == {"seed": 42, "from": 0}
        assert row["bcast_object_last"] == f"rank{n - 1}"
        assert row["gather"] == [{"r": k, "name": f"rank{k}"} for k in range(n)]
        assert row["barrier"]
        assert row["stats_calls"] == {"all_reduce": 3 + len(staged),
                                      "broadcast": 1 + len(staged), "host": 2}


def _cuda_devices() -> tuple[int, str]:
    from nnbackend.backend import _cupy_status

    _, count, reason = _cupy_status()
    return count, reason


@pytest.mark.skipif(_cuda_devices()[0] < 1, reason=f"no CuPy backend: {_cuda_devices()[1]}")
def test_nccl_under_mpiexec(tmp_path: Path) -> None:
    """One rank per GPU (up to 2): NCCL sums and broadcasts CuPy arrays in place on the
    device; MPI stages CuPy arrays through the host unless the library is CUDA-aware."""
    n = min(2, _cuda_devices()[0])
    done, _ = _launch(n, "nccl", str(tmp_path), timeout=180)
    rows = _results(done, n, tmp_path)
    triangle = n * (n + 1) // 2
    for r, row in enumerate(rows):
        assert (row["size"], row["name"]) == (n, "nccl")
        assert row["device"] == row["current_device"] == r
        assert row["nccl_in_place"]
        assert row["nccl_sum64"] == (np.arange(5) * triangle).tolist()
        assert row["nccl_sum32"] == [n * n / 2] * 4
        assert row["nccl_bcast"] == [float(n)] * 3
        assert row["host_int"] == [sum(range(n)), n]
        assert row["gather"] == list(range(n))
        assert row["mpi_cupy_same_object"]
        assert row["mpi_cupy_sum"] == (np.arange(4) * triangle).tolist()


def test_a_rank_that_raises_ends_the_job() -> None:
    """Rank 1 raises after init() while rank 0 waits in a barrier: without the abort hook
    the job hangs until killed; with it, mpiexec exits non-zero at once. Measured on two
    cores: 0.5 to 1.2 s from launch to exit (imports included), against a hang of a plain
    script (still waiting when killed after 8 s)."""
    done, elapsed = _launch(2, "raise", timeout=30)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "UNEXPECTED" not in done.stdout  # rank 0 never left its barrier normally
    assert "[rank 1/2] RuntimeError: rank 1 fails on purpose" in done.stderr, done.stderr
    assert "[rank 1/2] aborting the job (exit status 1)" in done.stderr
    print(f"aborted job ended in {elapsed:.2f} s")
