"""The ``nnbackend`` command, run end to end in subprocesses as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import _reference as ref
import numpy as np
import pytest

import nnbackend as nb
from nnbackend.cli import main


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "NNBACKEND": "numpy", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "nnbackend", *args],
        capture_output=True, text=True, env=environment, timeout=300, check=False,
    )


def test_main_job_defaults_reach_the_accuracy_target() -> None:
    """The README's main job: ``nnbackend train`` with its defaults on the digits."""
    result = run("train", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["dataset"] == "digits"
    assert summary["backend"] == "numpy"
    assert summary["test_accuracy"] >= 0.97
    assert len(summary["history"]) == summary["epochs"]


def test_text_output_ends_with_the_test_accuracy() -> None:
    result = run("train", "--dataset", "blobs", "--epochs", "10", "--hidden", "16")
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("test loss ")
    assert float(last.split("test accuracy ")[1].split()[0]) > 0.9


@pytest.mark.parametrize(
    "options",
    [
        ("--optimizer", "sgd", "--activation", "sigmoid"),
        ("--optimizer", "momentum", "--activation", "tanh", "--hidden", "32,16"),
        ("--optimizer", "rmsprop", "--loss", "mse"),
        ("--optimizer", "adamw", "--dtype", "float64"),
        ("--backend", "array_api_strict"),
        ("--backend", "torch"),
    ],
    ids=["sgd-sigmoid", "momentum-tanh-2layers", "rmsprop-mse", "adamw-float64", "strict",
         "torch"],
)
def test_options_train_a_working_model(
    options: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    if "torch" in options:
        pytest.importorskip("torch")
    assert main(["train", "--dataset", "blobs", "--epochs", "10", "--json", *options]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["test_accuracy"] > 0.85
    if "--backend" in options:
        assert summary["backend"] == options[1]


def test_save_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "run.npz"
    base = ["train", "--dataset", "spirals", "--hidden", "32", "--json", "--seed", "1"]
    assert main([*base, "--epochs", "2", "--save", str(ckpt)]) == 0
    capsys.readouterr()
    assert ckpt.is_file()
    assert main([*base, "--epochs", "4", "--resume", str(ckpt), "--save", str(ckpt)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [row["epoch"] for row in summary["history"]] == [3.0, 4.0]
    assert nb.checkpoint.load(ckpt, nb.Sequential(nb.Linear(2, 32), nb.ReLU(),
                                                  nb.Linear(32, 3)))["epoch"] == 4


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "curves.png"
    assert main(["train", "--dataset", "blobs", "--epochs", "2", "--json",
                 "--plot", str(target)]) == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_idx_dataset(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3, dtype=np.uint8), 40)
    images = np.zeros((120, 4, 4), dtype=np.uint8)
    for k in range(3):
        images[labels == k, k, :] = 255  # class k lights row k
    images = np.maximum(images, rng.integers(0, 40, size=images.shape)).astype(np.uint8)
    for name, array in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        (tmp_path / name).write_bytes(ref.idx_bytes(array))
    result = run("train", "--dataset", f"idx:{tmp_path}", "--epochs", "15", "--json",
                 "--hidden", "8", "--optimizer", "adam", "--lr", "0.01")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["test_accuracy"] >= 0.9


@pytest.mark.parametrize(
    ("args", "status", "complaint"),
    [
        (["train", "--epochs", "0"], 2, "expected a positive integer, got '0'"),
        (["train", "--dataset", "cifar"], 2, "expected digits, blobs, spirals or idx:PATH"),
        (["train", "--hidden", "64,x"], 2, "expected comma-separated positive widths"),
        (["train", "--optimizer", "lbfgs"], 2, "invalid choice: 'lbfgs'"),
        (["train", "--lr", "-1"], 2, "expected a positive number, got '-1'"),
        (["train", "--lr", "inf"], 2, "expected a positive number, got 'inf'"),
        (["train", "--seed", "-1"], 2, "expected a non-negative integer, got '-1'"),
        (["train", "--test-size", "1.5"], 2, "expected a number strictly between 0 and 1"),
        ([], 2, "the following arguments are required: COMMAND"),
        (["train", "--backend", "cupy"], 1,
         "nnbackend: error: backend 'cupy' cannot be used: CuPy"),
        (["train", "--backend", "tpu"], 1,
         "nnbackend: error: backend 'tpu' is not a known backend"),
        (["train", "--resume", "/nonexistent/run.npz"], 1, "nnbackend: error: "),
        (["train", "--dataset", "idx:/nonexistent"], 1,
         "not a directory holding MNIST IDX files"),
    ],
)
def test_bad_arguments_and_failed_runs(
    args: list[str], status: int, complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Usage errors exit 2 (argparse), failed runs exit 1 with one line; never a traceback."""
    if args[1:] == ["--backend", "cupy"] and nb.get_backend("auto").name == "cupy":
        pytest.skip("a usable CUDA device is present")
    try:
        code = main(args)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == status
    assert complaint in err
    if status == 1:
        assert len(err.strip().splitlines()) == 1


def test_info_lists_backends_with_reasons() -> None:
    result = run("info")
    assert result.returncode == 0, result.stderr
    for name in ("numpy", "cupy", "torch", "array_api_strict"):
        assert f"\n  {name} " in result.stdout
    assert "BLAS threads:" in result.stdout
    assert "default backend: Backend('numpy'" in result.stdout


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("nnbackend")
    if not script.exists():
        pytest.skip("the console script is not next to this interpreter")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "train" in result.stdout


def test_resume_refuses_another_split_and_applies_an_explicit_lr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "run.npz"
    base = ["train", "--dataset", "blobs", "--hidden", "8", "--json"]
    assert main([*base, "--epochs", "1", "--save", str(ckpt), "--lr", "0.001"]) == 0
    capsys.readouterr()
    for option, value in (("--seed", "7"), ("--test-size", "0.5"), ("--dataset", "spirals")):
        args = [*base, "--epochs", "2", "--resume", str(ckpt), option, value]
        if option == "--dataset":
            args = [a if a != "blobs" else value for a in args[:-2]]
        assert main(args) == 1
        assert "the train/test split would differ" in capsys.readouterr().err
    again = tmp_path / "again.npz"
    assert main([*base, "--epochs", "2", "--resume", str(ckpt), "--lr", "0.5",
                 "--save", str(again)]) == 0
    meta = nb.checkpoint.read_metadata(again)
    assert meta["optimizer"]["hyperparameters"]["lr"] == 0.5
    assert (meta["seed"], meta["test_size"], meta["epoch"]) == (0, 0.2, 2)
