"""``mpiexec -n 2 nnbackend train --distributed``: real launches of the command (MPICH on
loopback) against one process running the same settings in-process.

The launcher is the ``mpiexec`` beside the test's Python (the ``mpich`` package of the ``mpi``
and ``test`` extras). Every child runs with one BLAS/OpenMP thread, so two ranks on a small
machine do not oversubscribe its cores. Each launch pays the imports (about 2 s); the settings
are tiny so that training itself takes a fraction of that.

What the references are: one process with the same global batch computes the same gradients
(the ranks' shards of each step, in rank order, are its batch, and each rank's loss is
weighted by its share of the rows), so in float64 the two runs agree to rounding (1e-12);
a run resumed from a checkpoint continues as the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend.cli import main

MPIEXEC = Path(sys.executable).parent / "mpiexec"
TIMEOUT_S = 60.0  # a hung job fails the test instead of the suite
# Variables of an enclosing launch (pytest itself under mpiexec) must not reach the children.
_LAUNCH_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "MV2_", "MPI_LOCAL", "HYDRA_")
_ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                      "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")}
_LAUNCH_VARIABLES = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_RANK",
                     "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE")

# The MLP on the digits in float64: 1,437 training rows in global batches of 50 leave a last
# batch of 37 rows, shards of 18 and 19 (unequal shards: the weighting by n_r / B counts).
MLP = ["--dataset", "digits", "--backend", "numpy", "--dtype", "float64", "--hidden", "32",
       "--batch-size", "50", "--no-progress", "--json"]
TINY_TEXT = ["--dataset", "pydoc", "--backend", "numpy", "--d-model", "16", "--context", "16",
             "--batch-size", "6", "--steps-per-epoch", "3", "--no-progress", "--json"]
GPT = [*TINY_TEXT, "--model", "transformer", "--heads", "2", "--layers", "1", "--dtype",
       "float64", "--epochs", "2"]


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LAUNCH_PREFIXES)}
    env.pop("NNBACKEND", None)
    env.pop("NNBACKEND_DEBUG", None)
    env.update(_ONE_THREAD)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parents[1] / "src"), env.get("PYTHONPATH", "")])
    return env


def _command(*ranks: list[str]) -> list[str]:
    """``mpiexec -n 1 python -m nnbackend train --distributed A : -n 1 ... B`` (one argument
    list per rank: MPMD, for the ranks that differ on purpose) or, given one list, ``-n 2``."""
    if not MPIEXEC.exists():
        pytest.fail(f"these tests launch {MPIEXEC}, which does not exist: install the mpi extra "
                    'beside this Python (pip install "nnbackend[mpi]": mpi4py and mpich)')
    program = [sys.executable, "-m", "nnbackend", "train", "--distributed"]
    if len(ranks) == 1:
        return [str(MPIEXEC), "-n", "2", *program, *ranks[0]]
    command = [str(MPIEXEC)]
    for i, args in enumerate(ranks):
        command += [*([":"] if i else []), "-n", "1", *program, *args]
    return command


def _finish(proc: subprocess.Popen[str], command: list[str], timeout: float
            ) -> subprocess.CompletedProcess[str]:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its ranks
        stdout, stderr = proc.communicate()
        pytest.fail(f"`{' '.join(command)}` still ran after {timeout:.0f} s and was killed\n"
                    f"stdout:\n{stdout}\nstderr:\n{stderr}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def _start(command: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_environment(), cwd=cwd, start_new_session=True)


def _launch(*ranks: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    command = _command(*ranks)
    return _finish(_start(command, cwd), command, TIMEOUT_S)


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one JSON line of a successful job (rank 0's: the other ranks print nothing)."""
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    summary: dict[str, Any] = json.loads(lines[0])
    return summary


def _in_process(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["train", *args]) == 0
    summary: dict[str, Any] = json.loads(capsys.readouterr().out)
    return summary


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)


def _assert_same_run(got: dict[str, Any], want: dict[str, Any], keys: tuple[str, ...]) -> None:
    """The summaries' numbers and every epoch's record agree to rounding (1e-12)."""
    for key in keys:
        assert _close(got[key], want[key]), (key, got[key], want[key])
    assert len(got["history"]) == len(want["history"])
    for mine, theirs in zip(got["history"], want["history"], strict=True):
        for key in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_bpc"):
            if key in theirs:
                assert _close(mine[key], theirs[key]), (key, mine[key], theirs[key])


@pytest.fixture(scope="module")
def mlp_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three launches: two epochs straight; one epoch saved; that checkpoint resumed to two."""
    where = tmp_path_factory.mktemp("mlp")
    straight = _start(command := _command([*MLP, "--epochs", "2"]), where)
    first = _launch([*MLP, "--epochs", "1", "--save", "one.npz"], cwd=where)
    resumed = _launch([*MLP, "--epochs", "2", "--resume", "one.npz"], cwd=where)
    return {"straight": _summary(_finish(straight, command, TIMEOUT_S)),
            "first": _summary(first), "resumed": _summary(resumed),
            "checkpoint": where / "one.npz"}


def test_mlp_prints_one_summary_equal_to_one_process_on_the_global_batch(
        mlp_runs: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    straight = mlp_runs["straight"]
    assert straight["world_size"] == 2 and straight["epochs"] == 2
    one = _in_process(capsys, *MLP, "--epochs", "2")
    assert "world_size" not in one
    _assert_same_run(straight, one, ("test_loss", "test_accuracy"))


def _continued(first: dict[str, Any], resumed: dict[str, Any]) -> dict[str, Any]:
    """A resumed run's summary with the epochs before the checkpoint put back in front."""
    return {**resumed, "history": first["history"] + resumed["history"]}


def test_mlp_resumed_under_mpi_continues_exactly(mlp_runs: dict[str, Any]) -> None:
    assert len(mlp_runs["first"]["history"]) == len(mlp_runs["resumed"]["history"]) == 1
    _assert_same_run(_continued(mlp_runs["first"], mlp_runs["resumed"]), mlp_runs["straight"],
                     ("test_loss", "test_accuracy"))


def test_the_checkpoint_is_the_module_with_the_world_size_and_resumes_on_one_process(
        mlp_runs: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    path = mlp_runs["checkpoint"]
    meta = nb.checkpoint.read_metadata(path)
    assert meta["distributed"] == {"world_size": 2, "engine": "mpi"}
    assert meta["epoch"] == 1 and meta["model"]["type"] == "Sequential"  # not the wrapper
    assert "world_size" not in meta["train_settings"]  # another world size may resume it
    resumed = _in_process(capsys, *MLP, "--epochs", "2", "--resume", str(path))
    _assert_same_run(_continued(mlp_runs["first"], resumed), mlp_runs["straight"],
                     ("test_loss", "test_accuracy"))


def test_a_cnn_and_the_language_models_train_with_one_output(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the text report: rank 0's header, a line per epoch (kept by a log of the job, besides
    # the bar) and the result, once
    cnn = _launch(["--model", "cnn", "--dataset", "digits", "--backend", "numpy", "--hidden",
                   "8", "--epochs", "2", "--batch-size", "128", "--plot", "curves.svg"],
                  cwd=tmp_path)
    assert cnn.returncode == 0, cnn.stderr
    lines = cnn.stdout.splitlines()
    assert len(lines) == 4, cnn.stdout
    assert ", 2 ranks (mpi), digits (1437 train / 360 test samples), cnn," in lines[0]
    assert lines[1].startswith("epoch 1/2: loss ") and lines[2].startswith("epoch 2/2: loss ")
    assert lines[3].startswith("test loss ") and "test accuracy" in lines[3]
    assert (tmp_path / "curves.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")
    # rank 0's progress bar, on stderr (the launcher's pipe, forwarded to the terminal)
    assert "batch/s" in cnn.stderr and "epoch 2/2: 100%" in cnn.stderr.replace("\r", "\n")

    # --minutes: every rank stops after the epoch rank 0's clock ends (here the first)
    lstm = _summary(_launch([*TINY_TEXT, "--model", "lstm", "--hidden", "16", "--epochs", "3",
                             "--minutes", "1e-6"], cwd=tmp_path))
    assert lstm["model"] == "lstm" and lstm["epochs_run"] == 1 and lstm["stopped_by_time"]
    assert 2.0 < lstm["val_bpc"] < 8.0

    # the GPT in float64 against one process: the same windows, and the validation bits
    # per character, measured on a shard per rank and summed, the same up to rounding
    gpt = _summary(_launch(GPT, cwd=tmp_path))
    assert gpt["model"] == "transformer" and gpt["epochs_run"] == 2
    _assert_same_run(gpt, _in_process(capsys, *GPT), ("val_bpc", "train_bpc"))

    # stopped by time after epoch 1 of 2 (the warm-up and cosine planned over both), resumed
    # under MPI: the per-step schedule and the windows continue as in the run straight through
    first = _summary(_launch([*GPT, "--minutes", "1e-6", "--save", "gpt.npz"], cwd=tmp_path))
    assert first["epochs_run"] == 1 and first["stopped_by_time"]
    resumed = _summary(_launch([*GPT, "--resume", "gpt.npz"], cwd=tmp_path))
    _assert_same_run(_continued(first, resumed), gpt, ("val_bpc", "train_bpc"))


def test_distributed_without_a_launcher_is_a_usage_error_saying_how_to_launch(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in _LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as stop:
        main(["train", "--distributed", "--epochs", "1"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "mpiexec -n 2 nnbackend train --distributed" in err
    assert 'pip install "nnbackend[mpi]"' in err


def test_distributed_without_mpi4py_names_the_extra(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    world = importlib.import_module("nnbackend.distributed.world")  # the module, not world()

    monkeypatch.setenv("PMI_RANK", "0")  # as if mpiexec had started this process
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setattr(world, "_has_mpi4py", lambda: False)
    monkeypatch.setattr(world, "_world", None)
    assert main(["train", "--distributed", "--epochs", "1", "--backend", "numpy"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nnbackend: error: ") and 'pip install "nnbackend[mpi]"' in err
    assert not world.is_initialized()


def test_a_cupy_job_puts_rank_r_on_gpu_r_mod_count_and_its_backend_there(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The NCCL start's call sequence with fakes (no GPU here): ``init("nccl")`` (which selects
    the rank's GPU), then the backend on that GPU; ``cupy:N`` is refused (rank r takes its own)."""
    import argparse

    from nnbackend import cli
    from nnbackend import distributed as dist

    class FakeCupy:
        name = "cupy"

    comm = object.__new__(dist.NCCLCommunicator)  # as NCCLCommunicator() leaves it on rank 3
    comm.rank, comm.size, comm.device = 3, 4, 1
    calls: list[Any] = []
    monkeypatch.setenv("PMI_RANK", "3")
    monkeypatch.setenv("PMI_SIZE", "4")
    monkeypatch.setattr(cli, "_backend", lambda request: FakeCupy())
    monkeypatch.setattr(dist, "init", lambda engine: calls.append(("init", engine)) or comm)
    monkeypatch.setattr(nb, "get_backend", lambda spec, *, device=None: calls.append(
        ("get_backend", spec, device)) or "cupy on GPU 1")
    job = cli._start_job(argparse.Namespace(distributed=True, backend="cupy"))
    assert calls == [("init", "nccl"), ("get_backend", "cupy", 1)]
    assert job.backend == "cupy on GPU 1" and job.shard == {"rank": 3, "world_size": 4}
    with pytest.raises(cli._UsageError, match="every rank takes its own GPU"):
        cli._start_job(argparse.Namespace(distributed=True, backend="cupy:0"))


def test_models_that_differ_between_ranks_are_refused_in_one_line(tmp_path: Path) -> None:
    common = ["--backend", "numpy", "--epochs", "1", "--no-progress"]
    done = _launch([*common, "--hidden", "16"], [*common, "--hidden", "24"], cwd=tmp_path)
    assert done.returncode == 1, done.stderr  # every rank's own status: no abort
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("nnbackend: error: DistributedDataParallel: rank 1's model "
                                "differs from rank 0's: modules")
    assert done.stdout == ""


def test_a_failure_of_one_rank_in_set_up_stops_every_rank_with_its_message(
        tmp_path: Path) -> None:
    common = ["--backend", "numpy", "--epochs", "1", "--no-progress"]
    missing = tmp_path / "no-such-folder"
    done = _launch(common, [*common, "--dataset", f"idx:{missing}"], cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == (f"nnbackend: error: --dataset idx:{missing}: not a "
                                   "directory holding MNIST IDX files (rank 1 of 2)")


def test_a_rank_that_fails_while_training_ends_the_job(tmp_path: Path) -> None:
    """Rank 0 alone writes the checkpoints; once the first is written, its path becomes a
    directory, so rank 0's next save fails while rank 1 waits in the barrier after it. The
    job must end (non-zero) instead of hanging, long before its 100,000 epochs."""
    command = _command(["--backend", "numpy", "--epochs", "100000", "--batch-size", "512",
                        "--no-progress", "--save", "ck.npz"])
    target = tmp_path / "ck.npz"
    proc = _start(command, tmp_path)
    deadline = time.monotonic() + TIMEOUT_S
    while not target.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            _finish(proc, command, 1.0)
            pytest.fail("the job wrote no checkpoint")
        time.sleep(0.05)
    while True:  # rank 0 may write it again between the rename and the mkdir: retry
        try:
            target.mkdir()
            break
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):  # gone already: mkdir again
                target.rename(tmp_path / "old.npz")
    done = _finish(proc, command, 30.0)  # killed, and the test failed, if it runs on
    assert done.returncode != 0, done.stderr
    # the failed save (found by the check before writing, or by the rename over the target)
    error = next(line for line in done.stderr.splitlines() if line.startswith("nnbackend: "))
    assert "ck.npz" in error and "directory" in error.lower(), done.stderr
    assert error.endswith("(rank 0 of 2; ending the job)"), done.stderr


def test_sync_batchnorm_trains_sync_batch_norms_whose_checkpoint_loads_alone(
        tmp_path: Path) -> None:
    # (that SyncBatchNorm over the ranks equals one process on the global batch is checked
    # on a CNN without dropout in tests/test_distributed_mpi_training.py; the command's CNN
    # draws each rank's own dropout masks)
    ckpt = tmp_path / "cnn.npz"
    done = _launch(["--model", "cnn", "--dataset", "digits", "--backend", "numpy", "--hidden",
                    "8", "--epochs", "1", "--batch-size", "128", "--sync-batchnorm",
                    "--no-progress", "--json", "--save", str(ckpt)], cwd=tmp_path)
    summary = _summary(done)
    assert summary["world_size"] == 2 and 0.0 <= summary["test_accuracy"] <= 1.0
    # the layers are SyncBatchNorm: in one process (a group of one) they are batch norms
    model, _ = nb.checkpoint.load_model(ckpt, backend="numpy")
    kinds = {type(m).__name__ for m in model.modules()}
    assert "SyncBatchNorm" in kinds and "BatchNorm2d" not in kinds
    model.train()
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    assert model(x).shape == (4, 10)


def test_sync_batchnorm_without_distributed_is_a_usage_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--sync-batchnorm", "--epochs", "1"])
    assert exit_info.value.code == 2
    assert "--sync-batchnorm: only with --distributed" in capsys.readouterr().err
