"""``nnbackend export CKPT OUT.onnx``: a checkpoint's model as an ONNX file.

The model is rebuilt from the checkpoint's description of it
(:func:`nnbackend.checkpoint.load_model`), with its saved weights, and exported by
:func:`nnbackend.onnx.export` on an example input built from what the checkpoint records:

- a language model (``--dataset pydoc``): token ids (1, context), ``context`` from the
  recorded training settings; the batch and sequence axes are dynamic;
- a CNN (``--model cnn``): one image (1, C, H, W), C from the first convolution, (H, W) those
  of the recorded data set (digits 8×8, mnist5k 28×28, ``idx:DIR`` from its image file's
  header);
- an MLP: one row (1, F), F the first Linear's ``in_features``;

or of ``--input-shape`` (the shape of one sample, without the batch axis), which overrides
these. The command prints the file written and its inputs and outputs (name, element type,
shape with the dynamic axes by name).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

_IMAGE_SIZES = {"digits": (8, 8), "mnist5k": (28, 28)}


def add_parser(commands: Any) -> None:
    """The ``export`` sub-command's parser, in ``commands`` (argparse's sub-parsers)."""
    export = commands.add_parser(
        "export", help="write a checkpoint's model as an ONNX file (needs nnbackend[onnx])")
    export.set_defaults(_parser=export)
    export.add_argument("checkpoint", type=Path, metavar="CKPT",
                        help="a checkpoint written by train --save")
    export.add_argument("output", type=Path, metavar="OUT.onnx", help="the file to write")
    export.add_argument("--opset", type=int, default=17,
                        help="the ONNX opset, 17 or newer (default: 17)")
    export.add_argument("--input-shape", type=_shape, default=None, metavar="D1,D2,...",
                        help="the shape of one input sample (default: from the checkpoint)")
    export.add_argument("--backend", default=None, help="as for train")


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(part) for part in text.split(","))
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        msg = f"expected positive integers separated by commas, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return dims


def run(args: argparse.Namespace) -> int:
    """Rebuild, export, report (usage errors raise the command line's usage error)."""
    from . import checkpoint
    from . import onnx as nb_onnx
    from .cli import _backend, _check_output, _UsageError

    if args.opset < nb_onnx.MIN_OPSET:
        raise _UsageError(f"argument --opset: {args.opset} is below {nb_onnx.MIN_OPSET}, the "
                          "oldest opset nnbackend writes")
    if args.output.suffix != ".onnx":
        raise _UsageError(f"argument OUT.onnx: {str(args.output)!r} does not end in .onnx")
    _check_output("OUT.onnx", args.output, replaces=True)
    backend = _backend(args.backend)
    meta = checkpoint.read_metadata(args.checkpoint)
    model, _ = checkpoint.load_model(args.checkpoint, backend=backend)
    example = example_input(model, meta, args.checkpoint, args.input_shape)
    proto = nb_onnx.export(model, args.output, example, opset=args.opset)
    print(f"wrote {args.output} (ONNX opset {args.opset}, {_size(args.output)}) from "
          f"{args.checkpoint}")
    for kind, values in (("input", proto.graph.input), ("output", proto.graph.output)):
        for v in values:
            print(f"  {kind} {v.name}: {_describe(v)}")
    return 0


def example_input(model: Any, meta: Mapping[str, Any], path: Path,
                  sample_shape: tuple[int, ...] | None) -> np.ndarray:
    """One example input (batch 1) for ``model``, from ``sample_shape`` or the metadata."""
    from .layers import Conv1d, Conv2d, Embedding, Linear

    integer = isinstance(_first(model, (Embedding, Linear, Conv1d, Conv2d)), Embedding)
    if sample_shape is None:
        sample_shape = _recorded_sample_shape(model, meta, path, integer)
    if integer:
        return np.zeros((1, *sample_shape), dtype=np.int64)
    return np.zeros((1, *sample_shape), dtype=np.float32)


def _recorded_sample_shape(model: Any, meta: Mapping[str, Any], path: Path,
                           integer: bool) -> tuple[int, ...]:
    from .errors import CheckpointError
    from .layers import Conv1d, Conv2d, Embedding, Linear

    settings = meta.get("train_settings")
    settings = settings if isinstance(settings, dict) else {}
    if integer:
        context = settings.get("context")
        if isinstance(context, int) and context >= 1:
            return (context,)
        return (8,)  # the sequence axis is dynamic: any length the model takes
    first = _first(model, (Embedding, Linear, Conv1d, Conv2d))
    if isinstance(first, Linear):
        return (int(first.in_features),)
    if isinstance(first, Conv2d):
        dataset = settings.get("dataset", meta.get("dataset"))
        size = _image_size(dataset) if isinstance(dataset, str) else None
        if size is not None:
            return (int(first.in_channels), *size)
    msg = (f"checkpoint {path}: cannot tell the shape of its model's input from what it "
           f"records (first layer {type(first).__name__}, dataset "
           f"{settings.get('dataset', meta.get('dataset'))!r}); give --input-shape")
    raise CheckpointError(msg)


def _image_size(dataset: str) -> tuple[int, int] | None:
    if dataset in _IMAGE_SIZES:
        return _IMAGE_SIZES[dataset]
    if dataset.startswith("idx:"):
        from .datasets import load_idx_header

        folder = Path(dataset[4:])
        for name in ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"):
            if (folder / name).exists():
                shape = load_idx_header(folder / name)[1]
                return int(shape[1]), int(shape[2])
    return None


def _first(model: Any, kinds: tuple[type, ...]) -> Any:
    """The first module of one of ``kinds`` in registration order (None without one)."""
    return next((m for m in model.modules() if isinstance(m, kinds)), None)


def _describe(value: Any) -> str:
    from .onnx._deps import require

    onnx = require("onnx")
    t = value.type.tensor_type
    dims = [d.dim_param or str(d.dim_value) for d in t.shape.dim]
    return f"{onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)} [{', '.join(dims)}]"


def _size(path: Path) -> str:
    n = path.stat().st_size
    if n < 1024:
        return f"{n} bytes"
    exp = min(int(math.log(n, 1024)), 3)
    return f"{n / 1024 ** exp:.1f} {('bytes', 'KiB', 'MiB', 'GiB')[exp]}"
