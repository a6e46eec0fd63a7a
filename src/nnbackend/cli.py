"""The ``nnbackend`` command: ``train``, ``info`` (and ``bench``).

``nnbackend train`` with no options trains an MLP (64-128-10, ReLU, Adam) on scikit-learn's
handwritten digits and prints the test accuracy. Usage errors exit with status 2; a run that
fails exits with status 1 and one line naming the cause, never a traceback.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]

_DEFAULT_LR = {"sgd": 0.1, "momentum": 0.01, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3}


def _hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        widths = (0,)
    if any(w < 1 for w in widths):
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


def _dataset(text: str) -> str:
    if text in ("digits", "blobs", "spirals") or (text.startswith("idx:") and len(text) > 4):
        return text
    msg = f"expected digits, blobs, spirals or idx:PATH, got {text!r}"
    raise argparse.ArgumentTypeError(msg)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``nnbackend`` command."""
    parser = argparse.ArgumentParser(
        prog="nnbackend",
        description="Train neural networks on NumPy (CPU) or CuPy (CUDA) through the Array API.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train an MLP and report its test accuracy")
    train.add_argument("--backend", default=None,
                       help="auto, numpy, cupy, cupy:N, torch, array_api_strict "
                            "(default: $NNBACKEND, else auto)")
    train.add_argument("--dataset", type=_dataset, default="digits",
                       help="digits (default), blobs, spirals, or idx:DIR with MNIST IDX files")
    train.add_argument("--hidden", type=_hidden, default=(128,),
                       help="hidden widths, comma-separated (default: 128)")
    train.add_argument("--activation", choices=("relu", "sigmoid", "tanh"), default="relu")
    train.add_argument("--loss", choices=("cross-entropy", "mse"), default="cross-entropy")
    train.add_argument("--optimizer", choices=tuple(_DEFAULT_LR), default="adam")
    train.add_argument("--lr", type=_positive_float, default=None,
                       help="learning rate (default depends on the optimizer)")
    train.add_argument("--epochs", type=_positive_int, default=40)
    train.add_argument("--batch-size", type=_positive_int, default=32)
    train.add_argument("--seed", type=_seed, default=0)
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    train.add_argument("--test-size", type=_fraction, default=0.2)
    train.add_argument("--save", type=Path, default=None,
                       help="write a checkpoint here after every epoch (atomically)")
    train.add_argument("--resume", type=Path, default=None,
                       help="continue from a checkpoint written by --save")
    train.add_argument("--plot", type=Path, default=None,
                       help="write loss and accuracy curves to this PNG (needs matplotlib)")
    train.add_argument("--json", action="store_true",
                       help="print a machine-readable summary instead of text")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    commands.add_parser("info", help="backends, devices, library versions and BLAS threads")

    bench = commands.add_parser("bench", help="compare training throughput across backends")
    bench.add_argument("--backends", default="numpy,cupy,torch",
                       help="comma-separated: numpy, cupy, torch, numpy-handwritten")
    bench.add_argument("--sizes", default="small,medium,large",
                       help="comma-separated MLP sizes: small, medium, large")
    bench.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    bench.add_argument("--plot", type=Path, default=None,
                       help="draw throughput against batch size (needs matplotlib)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "info":
            return _info()
        return _bench(args)
    except KeyboardInterrupt:
        print("nnbackend: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line, not a traceback
        if os.environ.get("NNBACKEND_DEBUG"):
            raise
        print(f"nnbackend: error: {exc}", file=sys.stderr)
        return 1


# ------------------------------------------------------------------------------------ train


def _load_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_test, y_test): a given test set, else a seeded split."""
    from . import datasets
    from .data import train_test_split

    name, test = args.dataset, None
    if name == "digits":
        X, y = datasets.load_digits()
    elif name == "blobs":
        X, y = datasets.make_blobs(2000, 2, 4, seed=args.seed)
    elif name == "spirals":
        X, y = datasets.make_spirals(3000, seed=args.seed)
    else:
        X, y, test = _load_idx(Path(name[4:]))
    if test is not None:
        return X, y, *test
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=args.test_size,
                                                        seed=args.seed)
    return X_train, y_train, X_test, y_test


def _load_idx(
    folder: Path,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """MNIST's training pair in ``folder`` (optionally gzipped) and its test pair if present."""
    from .datasets import load_idx_dataset

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
    X, y = load_idx_dataset(train_images, train_labels)
    test_images, test_labels = find("t10k-images-idx3-ubyte"), find("t10k-labels-idx1-ubyte")
    if test_images is None or test_labels is None:
        return X, y, None
    return X, y, load_idx_dataset(test_images, test_labels)


def _build_model(args: argparse.Namespace, n_in: int, n_out: int, backend: Any) -> Any:
    import nnbackend as nb

    activation = {"relu": nb.ReLU, "sigmoid": nb.Sigmoid, "tanh": nb.Tanh}[args.activation]
    init = "he" if args.activation == "relu" else "xavier"
    widths = (n_in, *args.hidden, n_out)
    layers: list[nb.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        layers.append(nb.Linear(fan_in, fan_out, init=init, dtype=args.dtype, backend=backend,
                                seed=args.seed + i))
        if i < len(widths) - 2:
            layers.append(activation())
    return nb.Sequential(*layers)


def _build_optimizer(args: argparse.Namespace, params: Any) -> Any:
    from . import optim

    lr = args.lr if args.lr is not None else _DEFAULT_LR[args.optimizer]
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
    from .train import evaluate, fit

    backend = nb.get_backend(args.backend)
    X_train, y_train, X_test, y_test = _load_data(args)
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    model = _build_model(args, X_train.shape[1], n_classes, backend)
    if args.loss == "mse":
        loss_fn: Any = nb.MSELoss()
        targets_train = np.eye(n_classes)[y_train]
        targets_test = np.eye(n_classes)[y_test]
    else:
        loss_fn = nb.CrossEntropyLoss()
        targets_train, targets_test = y_train, y_test
    optimizer = _build_optimizer(args, model.parameters())
    dtype = model[0].weight.dtype
    train_data = batches(X_train, targets_train, batch_size=args.batch_size, seed=args.seed,
                         backend=backend, dtype=dtype)
    test_data = batches(X_test, targets_test, batch_size=1024, shuffle=False, backend=backend,
                        dtype=dtype)
    start_epoch = 0
    if args.resume is not None:
        _check_same_run(args, checkpoint.read_metadata(args.resume))
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

    def save(epoch: int, record: dict[str, float]) -> None:
        if args.save is not None:
            checkpoint.save(args.save, model, optimizer, epoch=epoch, dataset=args.dataset,
                            seed=args.seed, test_size=args.test_size, loss=record["loss"])

    if not args.json:
        print(f"nnbackend {nb.__version__}: {backend!r}, {args.dataset} "
              f"({len(X_train)} train / {len(X_test)} test samples), "
              f"{args.optimizer}, {args.epochs} epochs")
    history = fit(model, loss_fn, optimizer, train_data, epochs=args.epochs,
                  val_data=test_data, progress=not (args.no_progress or args.json),
                  initial_epoch=start_epoch, on_epoch=save, metrics=["accuracy"])
    scores = evaluate(model, loss_fn, test_data, metrics=["accuracy"])
    if args.plot is not None:
        _plot(history, args.plot)
    summary = {
        "backend": backend.name,
        "device": str(backend.device),
        "dataset": args.dataset,
        "epochs": args.epochs,
        "test_loss": scores["loss"],
        "test_accuracy": scores.get("accuracy"),
        "train_time_s": sum(history["time"]),
        "samples_per_s": history.last.get("samples_per_s"),
        "history": history.epochs,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        accuracy = scores.get("accuracy", float("nan"))
        print(f"test loss {scores['loss']:.4f}  test accuracy {accuracy:.4f}"
              f"  ({summary['train_time_s']:.2f} s of training)")
    return 0


def _check_same_run(args: argparse.Namespace, meta: dict[str, Any]) -> None:
    """Refuse to resume with a dataset, seed or test size that would change the split."""
    for key, option in (("dataset", "--dataset"), ("seed", "--seed"),
                        ("test_size", "--test-size")):
        if key in meta and meta[key] != getattr(args, key):
            msg = (
                f"--resume {args.resume} was trained with {option} {meta[key]}, not "
                f"{getattr(args, key)}: the train/test split would differ"
            )
            raise ValueError(msg)


def _plot(history: Any, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        msg = f"--plot needs matplotlib ({exc}); pip install 'nnbackend[plot]'"
        raise ImportError(msg) from exc
    epochs = history["epoch"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
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
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


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
        from threadpoolctl import threadpool_info  # type: ignore[import-untyped]

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
    from .bench import run_cli

    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    sizes = [name.strip() for name in args.sizes.split(",") if name.strip()]
    status: int = run_cli(backends, sizes, args.json, args.plot)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
