"""``nnbackend train --dataset pydoc`` (transformer, lstm) and ``nnbackend generate``, run
in-process on tiny settings: training, checkpoints, exact resumption, sampling, usage errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend.cli import main

TINY = ["--dataset", "pydoc", "--backend", "numpy", "--d-model", "16", "--context", "16",
        "--batch-size", "4", "--steps-per-epoch", "3", "--no-progress"]
GPT = ["--model", "transformer", "--heads", "2", "--layers", "1"]


def _train(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["train", *TINY, *args, "--json"]) == 0
    summary: dict[str, Any] = json.loads(capsys.readouterr().out)
    return summary


def _parameters(path: Path) -> dict[str, np.ndarray]:
    model, _ = nb.checkpoint.load_model(path)
    return {name: np.asarray(a) for name, a in model.state_dict().items()}


def _usage_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_transformer_trains_reports_bits_per_character_and_records_the_vocabulary(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gpt.npz"
    summary = _train(capsys, *GPT, "--epochs", "2", "--save", str(path))
    assert summary["model"] == "transformer" and summary["epochs_run"] == 2
    bpc = [row["val_bpc"] for row in summary["history"]]
    assert len(bpc) == 2 and all(2.0 < b < 8.0 for b in bpc)
    assert summary["val_bpc"] == bpc[-1]
    corpus = nb.datasets.load_text("pydoc")
    assert summary["corpus"]["sha256"] == corpus.sha256
    meta = nb.checkpoint.read_metadata(path)
    assert nb.datasets.Vocabulary.from_json(meta["vocabulary"]) == corpus.vocabulary
    assert meta["corpus"]["python_version"] == corpus.python_version
    assert meta["model"]["type"] == "TransformerLM"
    settings = meta["train_settings"]
    assert (settings["context"], settings["d_model"], settings["layers"], settings["heads"]) \
        == (16, 16, 1, 2)
    assert "test_size" not in settings and "activation" not in settings
    assert meta["val_bpc"] == pytest.approx(bpc[-1])


def test_an_interrupted_run_resumes_exactly(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Two epochs straight, against one (stopped by --minutes) and a resume: the same weights,
    with the cosine schedule, dropout's streams and the batches of epoch 2 continued."""
    straight, resumed = tmp_path / "straight.npz", tmp_path / "resumed.npz"
    options = [*GPT, "--dropout", "0.1", "--epochs", "2"]
    _train(capsys, *options, "--save", str(straight))
    stopped = _train(capsys, *options, "--minutes", "1e-6", "--save", str(resumed))
    assert stopped["epochs_run"] == 1 and stopped["stopped_by_time"]
    again = _train(capsys, "--resume", str(resumed), "--save", str(resumed))
    assert again["epochs_run"] == 1
    want, got = _parameters(straight), _parameters(resumed)
    assert sorted(want) == sorted(got)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_generate_samples_from_the_checkpoint_alone(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gpt.npz"
    _train(capsys, *GPT, "--epochs", "1", "--save", str(path))
    outputs = []
    for seed in ("1", "1", "2"):
        assert main(["generate", str(path), "--prompt", "def f", "--tokens", "30",
                     "--seed", seed]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] != outputs[2]
    assert outputs[0].startswith("def f")
    assert len(outputs[0].rstrip("\n")) in (35, 34)  # 30 characters (one may be a newline)
    # greedy: the same text whatever the seed; a prompt longer than the context is cropped,
    # and characters the vocabulary lacks become its unknown symbol
    long_prompt = "\u4e2d" * 5 + "x" * 40
    greedy = []
    for seed in ("1", "2"):
        assert main(["generate", str(path), "--prompt", long_prompt, "--tokens", "10",
                     "--temperature", "0", "--seed", seed]) == 0
        greedy.append(capsys.readouterr().out)
    assert greedy[0] == greedy[1] and greedy[0].startswith(long_prompt)


def test_lstm_trains_plots_and_generates(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    path, plot = tmp_path / "lstm.npz", tmp_path / "bpc.svg"
    summary = _train(capsys, "--model", "lstm", "--hidden", "24", "--epochs", "2",
                     "--save", str(path), "--plot", str(plot))
    assert summary["model"] == "lstm" and math.isfinite(summary["val_bpc"])
    assert b"<svg" in plot.read_bytes()[:400]  # the bits-per-character curves, as SVG
    meta = nb.checkpoint.read_metadata(path)
    assert meta["model"]["type"] == "Sequential"
    assert main(["generate", str(path), "--prompt", "The ", "--tokens", "12"]) == 0
    assert capsys.readouterr().out.startswith("The ")


def test_text_output_ends_with_the_validation_bits_per_character(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", *TINY, *GPT, "--epochs", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("nnbackend ") and "transformer" in lines[0]
    assert lines[1].startswith("epoch 1/1: train ")
    assert lines[-1].startswith("validation ") and "bits per character after epoch 1" in lines[-1]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--dataset", "digits", "--model", "transformer"],
         "transformer is a language model, it needs a character corpus"),
        (["--dataset", "pydoc", "--model", "mlp"], "mlp does not train on text"),
        (["--dataset", "digits", "--context", "32"],
         "argument --context: only the language models"),
        (["--dataset", "pydoc", "--test-size", "0.3"], "argument --test-size: --dataset pydoc "
                                                       "trains a language model"),
        (["--dataset", "blobs", "--minutes", "1"], "argument --minutes: only the language"),
        (["--dataset", "pydoc", "--d-model", "16", "--heads", "3"],
         "--d-model 16 is not divisible by --heads 3"),
        (["--dataset", "pydoc", "--model", "lstm", "--hidden", "32,16"],
         "the LSTM's layers have one width, got 32,16"),
    ],
    ids=["gpt-on-digits", "mlp-on-text", "context-on-digits", "test-size-on-text",
         "minutes-on-points", "heads", "lstm-widths"],
)
def test_usage_errors(args: list[str], expected: str,
                      capsys: pytest.CaptureFixture[str]) -> None:
    assert expected in _usage_error(capsys, "train", *args)


def test_resume_refuses_another_context_and_generate_another_checkpoint(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gpt.npz"
    _train(capsys, *GPT, "--epochs", "1", "--save", str(path))
    err = _usage_error(capsys, "train", "--resume", str(path), "--context", "8",
                       "--epochs", "2")
    assert "was trained with --context 16, not 8" in err
    digits = tmp_path / "digits.npz"
    assert main(["train", "--dataset", "blobs", "--epochs", "1", "--hidden", "4", "--save",
                 str(digits), "--json", "--backend", "numpy"]) == 0
    capsys.readouterr()
    assert main(["generate", str(digits), "--prompt", "a"]) == 1
    assert "records no vocabulary: not a language model's checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("text", [True, False])
def test_a_resumed_schedule_continues_with_an_explicit_lr(text: bool) -> None:
    """Both schedules (per epoch: cosine; per step for a language model: warm-up then
    cosine) continue from the recorded progress; ``--lr`` rescales α₀ in every part (the
    cosine the warm-up hands over to too), and a missing record is a CheckpointError."""
    import argparse

    from nnbackend import cli
    from nnbackend.errors import CheckpointError

    model = nb.Linear(2, 2, dtype="float64")
    args = argparse.Namespace(schedule="cosine", epochs=2, lr=None, resume="run.npz")

    def schedule(optimizer: Any, meta: Any) -> Any:
        if text:
            return cli._text_schedule(args, optimizer, meta, 50)  # 10 warm-up steps of 100
        return cli._schedule(args, optimizer, meta)

    first_opt = nb.optim.AdamW(model.parameters(), lr=0.01)
    first = schedule(first_opt, None)
    steps = 30 if text else 1
    for _ in range(steps):
        first.step()
    meta = {cli._SCHEDULE_KEY: first.state_dict()}
    args.lr = 0.5
    resumed_opt = nb.optim.AdamW(model.parameters(), lr=0.01)
    resumed = schedule(resumed_opt, meta)
    assert resumed.last_epoch == first.last_epoch == steps
    for _ in range(10 if text else 1):
        rate = first_opt.param_groups[0]["lr"]
        assert 0.0 < rate < 0.01
        assert resumed_opt.param_groups[0]["lr"] == pytest.approx(50.0 * rate, rel=1e-12)
        first.step()
        resumed.step()
    with pytest.raises(CheckpointError, match=r"run\.npz: its lr_schedule cannot continue"):
        schedule(nb.optim.AdamW(model.parameters(), lr=0.01), {})
