"""Data-parallel training on real MPI processes (``mpiexec -n 2`` and ``-n 3`` on loopback).

One launch per world size runs every scenario of tests/mpi_scenarios/training.py (NumPy,
float64): SGD with momentum, with weight decay, Adam with clipping after the all-reduce, AdamW,
a CNN with per-rank and with synchronised batch normalisation, a global batch of 10 that 3 ranks
do not divide and a last partial batch of 7 (shards of 2, 2 and 3 rows), a resumed run, and
models that differ between ranks. The one-process reference is computed by rank 0 after the
distributed run, without collectives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCENARIOS = Path(__file__).parent / "mpi_scenarios"
MPIEXEC = Path(sys.executable).parent / "mpiexec"


def _env() -> dict[str, str]:
    # one BLAS thread per rank: 3 ranks on 2 cores must not also fight over threads
    return {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1"}


def _mpiexec() -> str:
    if not MPIEXEC.exists():
        pytest.fail(f"{MPIEXEC} is missing: the test extras install mpich, which brings it "
                    '(pip install -e ".[test]")')
    return str(MPIEXEC)


@pytest.fixture(scope="module", params=[2, 3], ids=["2-ranks", "3-ranks"])
def launch(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("mpi") / "results.json"
    done = subprocess.run(
        [_mpiexec(), "-n", str(request.param), sys.executable,
         str(SCENARIOS / "training.py"), str(out)],
        env=_env(), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    results: dict[str, Any] = json.loads(out.read_text())
    assert results["size"] == request.param
    return results


def test_replicas_equal_one_process_on_the_global_batch(launch: dict[str, Any]) -> None:
    scenarios = {s["scenario"]: s for s in launch["scenarios"]}
    assert set(scenarios) == {"mlp-momentum", "mlp-adam-clip", "mlp-adamw", "mlp-momentum-decay",
                              "cnn-adam", "cnn-adam-syncbn"}
    for name, s in scenarios.items():
        assert s["identical_every_epoch"] == [True, True, True], name
        assert s["max_relative_difference"] <= 1e-12, (name, s["max_relative_difference"])
    # what each batch-norm mode equals
    assert scenarios["cnn-adam-syncbn"]["equals"] == "one process on the global batch"
    assert scenarios["cnn-adam"]["equals"] == (
        "one process, each shard normalised by its own statistics")


def test_a_resumed_run_continues_exactly(launch: dict[str, Any]) -> None:
    assert launch["resume"] == {"scenario": "resume", "identical": True,
                                "equal_to_straight": True}


def test_models_that_differ_between_ranks_are_refused_on_every_rank(launch: dict[str, Any]
                                                                     ) -> None:
    for entry in launch["mismatches"]:
        messages = entry["messages"]
        assert len(messages) == launch["size"]
        assert all(m == messages[0] for m in messages), entry
        assert messages[0] is not None and "rank 1's model differs from rank 0's" in messages[0]
    width, dtype = launch["mismatches"]
    assert "Linear(6→8)" in width["messages"][0] and "Linear(6→9)" in width["messages"][0]
    assert "float64" in dtype["messages"][0] and "float32" in dtype["messages"][0]


def test_a_rank_that_raises_in_training_ends_the_job() -> None:
    # the bound as the launch's timeout (a job that hangs fails the test): measured
    # 1.3 s here, imports included
    done = subprocess.run([_mpiexec(), "-n", "2", sys.executable, str(SCENARIOS / "failing.py")],
                          env=_env(), capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode != 0
    assert "rank 1 fails after epoch 2" in done.stderr
