"""Checkpoints: a model's state, its optimizer's state, its description and metadata in one
pickle-free file.

::

    checkpoint.save("run.npz", model, optimizer, epoch=5, loss=0.31)
    meta = checkpoint.load("run.npz", model, optimizer)     # meta["epoch"] == 5
    model, meta = checkpoint.load_model("run.npz")          # the model rebuilt from the file

A checkpoint is a NumPy ``.npz`` archive (a zip of ``.npy`` arrays) that never holds a Python
object, so loading one never unpickles anything. Format version 2 holds:

=========================  =================================================================
entry                      contents
=========================  =================================================================
``model/<name>``           every entry of ``model.state_dict()`` by its dotted name: the
                           parameters (``"0.weight"``) and the persistent buffers
                           (``"1.running_mean"``), as saved
``optim/<i>/<key>``        each state array of the optimizer's i-th parameter (``"m"``, ...)
``__metadata__``           UTF-8 JSON (a 1-d uint8 array): the reserved entries below and the
                           user's keyword metadata
=========================  =================================================================

Reserved metadata: ``format`` (``"nnbackend-checkpoint"``), ``format_version`` (2),
``library_version``, ``backend`` and ``device`` (where the model lived), ``architecture``
(``repr(model)``, for people: it is not compared on load), ``model`` (the model's description,
:func:`nnbackend.layers.describe`: layer kinds and arguments, from which :func:`load_model`
rebuilds it; null for a model that cannot be described), ``parameters`` and ``buffers`` (name,
shape and dtype of each), ``extra_state`` (``model.extra_state_dict()``: each module's JSON
extra state, by module name) and ``optimizer`` (``None``, or its type, hyperparameters, its
parameter groups (each group's hyperparameters and parameter indices, as in its
``state_dict()``; absent in files saved before parameter groups, which load into an optimizer
with one group), the model's name of each of its parameters, and the step counts and array
names of each parameter's state).

Version 1 (nnbackend 0.1.0 before the model description) had no ``model``, ``buffers`` or
``extra_state``; it is read as before, as a model with parameters only.

Saving is atomic: the archive is written to a temporary file beside the target, flushed to disk,
and renamed over it, so a crash or an error mid-save leaves the previous checkpoint intact.
Loading validates the whole file against the model and optimizer before either changes, so a
failed load leaves both untouched; the arrays are then copied onto each array's own device
(a checkpoint written on NumPy loads into a model on CuPy, PyTorch or array-api-strict).

A checkpoint is read as untrusted input. Every size is checked before the data it describes is
read: each entry's size from the zip directory (``ZipInfo.file_size``, the most zipfile ever
inflates) against the shape and dtype in its ``.npy`` header (itself read through a bounded
reader), the metadata against its limit, and the parameters and buffers against the model,
before any array data is read. The metadata may take 1 MiB plus 4 KiB per parameter or buffer
of the model, and at most :data:`MAX_METADATA_BYTES` (parsed JSON takes up to ~25 times its
bytes); the optimizer's arrays at most ``8`` times the model's bytes (Adam with AMSGrad needs 3)
plus 1 MiB. So a crafted file (a small zip of a huge, highly compressible entry) costs at most
a small multiple of the model's own size (plus a few MiB), never the size it claims.

:func:`load_model` has no model to measure the file against, so it measures the file: the
model's arrays may not take more bytes than the file itself (plus 1 MiB; :func:`save` stores
them uncompressed), and the description may not build a model of more array elements than the
file declares, computed from the layers' arguments before any layer is built. A description
names classes; only built-in and registered ones are built, and others only when the caller
lists them in ``allow_classes``: nothing is imported because a file names it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import reprlib
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, NamedTuple, cast

import numpy as np
from numpy.lib import format as npy_format

from ._checks import name_mismatch
from ._files import atomic_output
from .backend import backend_of, to_numpy
from .errors import CheckpointError
from .layers.description import AllowedClasses, DescriptionError, build, describe
from .layers.module import Module
from .optim.optimizer import Optimizer

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_METADATA_BYTES",
    "RESERVED_METADATA",
    "CheckpointError",
    "load",
    "load_model",
    "read_metadata",
    "save",
]

FORMAT = "nnbackend-checkpoint"
"""The ``format`` entry of every checkpoint's metadata."""

FORMAT_VERSION = 2
"""The checkpoint format version this nnbackend writes, and the newest it reads."""

RESERVED_METADATA = frozenset({
    "format", "format_version", "library_version", "backend", "device", "architecture",
    "model", "parameters", "buffers", "extra_state", "optimizer",
})
"""Metadata names the checkpoint records itself; user metadata may not use them."""

MAX_METADATA_BYTES = 16 * 2**20
"""The largest ``__metadata__`` entry (UTF-8 JSON) of any checkpoint; a model's own limit is
lower (1 MiB plus 4 KiB per parameter, see :func:`save`)."""

# Optimizer state may hold this many times the model's bytes (plus _SLACK_BYTES): Adam with
# AMSGrad and centered RMSprop with momentum keep 3 arrays per parameter.
_STATE_FACTOR = 8
_SLACK_BYTES = 2**20
_METADATA_PER_PARAMETER = 4096  # its name, shape and dtype, its optimizer's entry, its repr
# (and for each buffer its name, shape and dtype, and the model's description and extra state)
# NumPy refuses .npy headers longer than 10000 characters (max_header_size); with the magic
# string, the version and the length field an entry's header is at most this many bytes.
_MAX_NPY_HEADER_BYTES = 10_000 + 12
# The dtype kinds a checkpoint holds: booleans and numbers (no strings, records or objects).
_NUMERIC_KINDS = "biufc"

_METADATA_KEY = "__metadata__"
_MODEL_PREFIX = "model/"
_OPTIM_PREFIX = "optim/"


class _MalformedEntry(ValueError):
    """An archive entry that zipfile and numpy read but a checkpoint may not hold."""


# Everything that reading untrusted bytes through zipfile, zlib, numpy and json can raise.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, struct.error, OSError, EOFError,
    ValueError, TypeError, KeyError, IndexError, NotImplementedError, RuntimeError,
    OverflowError,
)


# --------------------------------------------------------------------------------------------
# Saving


def save(
    path: str | os.PathLike[str],
    model: Module,
    optimizer: Optimizer | None = None,
    **metadata: Any,
) -> Path:
    """Write ``model``'s parameters, ``optimizer``'s state and ``metadata`` to ``path``, atomically.

    Parameters
    ----------
    path : str or path-like
        The file to write, used exactly as given (no ``.npz`` is appended). Its directory must
        exist. An existing file is replaced only once the new one is complete and on disk, and
        keeps its permission bits; a new file gets the usual ``0o666 & ~umask``.
    model : Module
        Every entry of its ``state_dict()`` (parameters and persistent buffers) is stored as a
        host (NumPy) copy of shape and dtype as in the model; its extra state
        (``extra_state_dict()``, JSON) and its description (:func:`nnbackend.layers.describe`,
        or null when a layer cannot be described) go into the metadata.
    optimizer : Optimizer, optional
        Its type, hyperparameters and per-parameter state (step counts and state arrays, e.g.
        Adam's m and v of each parameter's shape), so that training resumes exactly.
    **metadata
        JSON-serialisable values (str, int, float, bool, None, and lists and dicts of them) such
        as ``epoch=5, step=1200, loss=0.31``; :func:`load` returns them. Tuples come back as
        lists. The names in :data:`RESERVED_METADATA` are taken.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    TypeError
        A metadata value or a module's extra state is not JSON-serialisable, or a metadata
        name is reserved (raised before anything is written), or ``model``/``optimizer`` has
        the wrong type.
    ValueError
        ``path`` is empty, ``optimizer`` holds a parameter that is not ``model``'s, or the
        metadata (as JSON) exceeds 1 MiB plus 4 KiB per parameter or buffer of the model, or
        :data:`MAX_METADATA_BYTES` (raised before anything is written).
    FileNotFoundError, IsADirectoryError
        The directory of ``path`` does not exist, or ``path`` is a directory (raised before
        anything is written; the message names the path).
    OSError
        Writing failed; the temporary file is removed and a previous file at ``path`` is left
        as it was.
    """
    target = _checked_target(path)
    _check_model_type(model, where="checkpoint.save")
    _check_optimizer_type(optimizer, where="checkpoint.save")
    if optimizer is not None:
        _check_optimizer_owner(optimizer, model, where="checkpoint.save")
    user = _checked_user_metadata(metadata)
    extra_state = _checked_extra_state(model)
    arrays: dict[str, np.ndarray] = {}
    parameters = [_stored(name, p.data, arrays) for name, p in model.named_parameters()]
    buffers = [_stored(name, value, arrays)
               for name, value in model.named_buffers(persistent_only=True)]
    backend = model.backend
    header: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": _library_version(),
        "backend": None if backend is None else backend.name,
        "device": None if backend is None else str(backend.device),
        "architecture": repr(model),
        "model": _description(model),
        "parameters": parameters,
        "buffers": buffers,
        "extra_state": extra_state,
        "optimizer": None if optimizer is None else _optimizer_entries(optimizer, model, arrays),
    }
    header.update(user)
    payload = json.dumps(header).encode("utf-8")
    entries = len(parameters) + len(buffers)
    limit = _metadata_limit(entries)
    if len(payload) > limit:
        what = f"{len(parameters)} parameters" + (f", {len(buffers)} buffers" if buffers else "")
        msg = (
            f"checkpoint.save: the metadata of {target} takes {len(payload)} bytes of JSON; "
            f"a checkpoint of this model ({what}) holds at most {limit}"
        )
        raise ValueError(msg)
    with atomic_output(target) as file:
        # A file object, not a name: np.savez appends ".npz" to names that lack it.
        members = {_METADATA_KEY: np.frombuffer(payload, dtype=np.uint8), **arrays}
        np.savez(file, **cast("dict[str, Any]", members))
    return target


def _stored(name: str, value: Any, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Put a host copy of a state entry into ``arrays``; its name, shape and dtype."""
    host = np.asarray(to_numpy(value))
    arrays[_MODEL_PREFIX + name] = host
    return {"name": name, "shape": list(host.shape), "dtype": host.dtype.name}


def _description(model: Module) -> dict[str, Any] | None:
    """The model's description, or None for a model that cannot be described (a layer without
    ``config()``, a shared layer): such a checkpoint loads into a model built in code."""
    try:
        return describe(model)
    except DescriptionError:
        return None


def _checked_extra_state(model: Module) -> dict[str, dict[str, Any]]:
    """``model.extra_state_dict()``, each module's state checked to survive JSON unchanged."""
    states = model.extra_state_dict()
    for name, state in states.items():
        module = dict(model.named_modules())[name]
        where = f"checkpoint.save: the extra state of module {name!r} ({type(module).__name__})"
        if not isinstance(state, dict):
            msg = f"{where} must be a dict, got {type(state).__name__}"
            raise TypeError(msg)
        problem = _not_json(state, "")
        if problem is not None:
            msg = f"{where} must be JSON (str, int, float, bool, None, lists, and dicts with " \
                  f"string keys): {problem}"
            raise TypeError(msg)
    return states


def _not_json(value: Any, path: str) -> str | None:
    """What in ``value`` JSON would not give back as it is (None: nothing)."""
    if value is None or isinstance(value, str | bool | int | float):
        return None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            problem = _not_json(item, f"{path}[{i}]")
            if problem is not None:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path or 'the dict'} has the key {key!r}, not a string"
            problem = _not_json(item, f"{path}[{key!r}]")
            if problem is not None:
                return problem
        return None
    return f"{path or 'the value'} is a {type(value).__name__} ({reprlib.repr(value)})"


def _checked_target(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, refused (naming it) when it cannot be a checkpoint file."""
    if not isinstance(path, str | os.PathLike):
        msg = f"checkpoint.save: path must be a str or path-like, got {type(path).__name__}"
        raise TypeError(msg)
    if os.fspath(path) in ("", b""):  # Path("") is Path("."), the working directory
        msg = "checkpoint.save: the path is empty (''); name the file to write"
        raise ValueError(msg)
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "checkpoint.save: path is a directory", str(path))
    if not target.parent.is_dir():
        raise FileNotFoundError(
            errno.ENOENT, "checkpoint.save: the directory of the path does not exist",
            str(path),
        )
    return target


def _optimizer_entries(
    optimizer: Optimizer, model: Module, arrays: dict[str, np.ndarray]
) -> dict[str, Any]:
    """The optimizer's metadata; its state arrays go into ``arrays`` as ``optim/<i>/<key>``."""
    state_dict = optimizer.state_dict()
    names = {id(p): name for name, p in model.named_parameters()}
    state = []
    for i, entry in enumerate(state_dict["state"]):
        scalars: dict[str, Any] = {}
        keys: list[str] = []
        for key, value in entry.items():
            if isinstance(value, bool | int | float):
                scalars[key] = value
            elif isinstance(value, np.ndarray) and not value.dtype.hasobject:
                arrays[f"{_OPTIM_PREFIX}{i}/{key}"] = value
                keys.append(key)
            else:
                msg = (
                    f"checkpoint.save: {type(optimizer).__name__} state {i} {key!r} is a "
                    f"{type(value).__name__}; only numbers and numeric arrays can be saved"
                )
                raise TypeError(msg)
        state.append({"scalars": scalars, "arrays": keys})
    return {
        "type": state_dict["type"],
        "hyperparameters": state_dict["hyperparameters"],
        "param_groups": state_dict["param_groups"],
        "parameters": [names[id(p)] for p in optimizer.params],
        "state": state,
    }


def _checked_user_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The user's metadata, each value checked to be JSON-serialisable and its name free."""
    for key, value in metadata.items():
        if key in RESERVED_METADATA:
            msg = (
                f"checkpoint metadata {key!r} is reserved (the checkpoint records it itself); "
                f"reserved names are {sorted(RESERVED_METADATA)}"
            )
            raise TypeError(msg)
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            msg = (
                f"checkpoint metadata {key!r} must be JSON-serialisable (str, int, float, bool, "
                f"None, and lists and dicts of them), got {type(value).__name__} "
                f"{reprlib.repr(value)} ({exc})"
            )
            raise TypeError(msg) from exc
    return dict(metadata)


# --------------------------------------------------------------------------------------------
# Loading


def load(
    path: str | os.PathLike[str], model: Module, optimizer: Optimizer | None = None
) -> dict[str, Any]:
    """Restore ``model`` (and ``optimizer``) from a checkpoint written by :func:`save`.

    The whole file is read and validated first: that it is an intact archive of plain arrays,
    that its metadata has the right format and a format version this nnbackend reads (1 or 2),
    that its parameter and buffer names are exactly the model's and each shape and dtype
    matches, that it holds extra state for exactly the modules that have some (format 2), and
    that the optimizer state (when ``optimizer`` is given) was saved by the same optimizer type
    over as many parameters. Only then are the values copied onto each array's own namespace and
    device and the extra state given back, so a failed load leaves the model and the optimizer
    as they were. The model's description in the file is not compared (``load_model`` builds
    from it).

    Parameters
    ----------
    path : str or path-like
        A checkpoint written by :func:`save`.
    model : Module
        Built with the same architecture; its parameters and buffers receive the saved values
        (gradients are reset to None), its modules their extra state.
    optimizer : Optimizer, optional
        Receives the saved hyperparameters and state. When None, optimizer state in the file is
        ignored.

    Returns
    -------
    dict
        The metadata: the user's keyword metadata given to :func:`save` (``"epoch"``, ...) and
        the reserved entries (``"format_version"``, ``"library_version"``, ``"backend"``,
        ``"device"``, ``"architecture"``, ``"model"``, ``"parameters"``, ``"buffers"``,
        ``"extra_state"``, ``"optimizer"``; a format-1 file has no ``"model"``, ``"buffers"``
        or ``"extra_state"``).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        ``optimizer`` holds a parameter that is not ``model``'s (raised before the file is
        read).
    CheckpointError
        The file is not a readable checkpoint (truncated, corrupt, another kind of file, a newer
        format version, sizes beyond what this model's checkpoint can hold) or does not match
        the model or optimizer; the message names the file and the cause.

    Notes
    -----
    Sizes are checked before data is read (see the module's docstring): the memory a crafted
    file costs is bounded by a small multiple of the model's own size.
    """
    file = Path(path)
    _check_model_type(model, where="checkpoint.load")
    _check_optimizer_type(optimizer, where="checkpoint.load")
    if optimizer is not None:
        _check_optimizer_owner(optimizer, model, where="checkpoint.load")
    if not file.exists():
        raise FileNotFoundError(errno.ENOENT, "no such checkpoint file", str(file))
    with _open_archive(file) as archive:
        header = _checked_header(archive, _metadata_limit(len(model.state_dict())))
        saved = _read_checked(archive, header, model, optimizer)
    _apply(file, model, saved, optimizer)
    return header


def load_model(
    path: str | os.PathLike[str],
    *,
    backend: Any = None,
    allow_classes: AllowedClasses = (),
) -> tuple[Module, dict[str, Any]]:
    """The model a checkpoint holds, rebuilt from its description, with its saved state.

    The file is checked as by :func:`load`; its description (format 2) is checked as by
    :func:`nnbackend.layers.build` and measured against the file before any layer is built (see
    the module's docstring), then the model is built and its parameters, buffers and extra state
    loaded. Load the optimizer afterwards with ``load(path, model, optimizer)``.

    Parameters
    ----------
    path : str or path-like
        A checkpoint written by :func:`save` (format 2) from a model that could be described.
    backend : optional
        Where the model is built (default: the current backend, not the one the file records
        in ``meta["backend"]``).
    allow_classes : iterable of classes or "module:QualName" strings
        Layer classes outside nnbackend that the description may name (see
        :func:`nnbackend.layers.build`); the file cannot add to them.

    Returns
    -------
    (Module, dict)
        The model (in training mode, as a new model is) and the metadata, as :func:`load`
        returns it.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    CheckpointError
        As :func:`load`; and for a format-1 file or one saved from a model that could not be
        described (build the model in code and :func:`load` into it), a description that is
        malformed, names a kind that is unknown or a class not allowed, would allocate more than
        the file holds, or does not build the model the file's arrays belong to.
    """
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(errno.ENOENT, "no such checkpoint file", str(file))
    with _open_archive(file) as archive:
        header = _checked_header(archive, MAX_METADATA_BYTES)
        description = _recorded_description(file, header)
        keys = _model_keys(header)
        _check_held(archive, keys)
        elements = sum(math.prod(archive.entries[key].shape) for key in keys)
        try:
            model = build(description, backend=backend, allow_classes=allow_classes,
                          max_elements=elements)
        except DescriptionError as exc:
            msg = f"checkpoint {file}: cannot rebuild its model: {exc}"
            raise CheckpointError(msg) from exc
        saved = _read_checked(archive, header, model, None)
    _apply(file, model, saved, None)
    return model, header


def _recorded_description(file: Path, header: Mapping[str, Any]) -> Mapping[str, Any]:
    """The model description a checkpoint records, or a CheckpointError saying why none."""
    if header["format_version"] < 2:
        msg = (
            f"checkpoint {file} has format_version {header['format_version']}, which records no "
            "model description: build the model in code and use checkpoint.load(path, model)"
        )
        raise CheckpointError(msg)
    description: Mapping[str, Any] | None = header["model"]
    if description is None:
        msg = (
            f"checkpoint {file} records no model description (it was saved from a model with a "
            "layer that cannot be described: no config(), or a layer used twice): build the "
            f"model in code and use checkpoint.load(path, model). It was:\n"
            f"{header.get('architecture')}"
        )
        raise CheckpointError(msg)
    return description


class _Saved(NamedTuple):
    """What a checked checkpoint gives a model (and an optimizer)."""

    model_state: dict[str, np.ndarray]
    extra_state: dict[str, dict[str, Any]] | None  # None: format 1, which has none
    optim_state: dict[str, Any] | None


def _read_checked(
    archive: _Archive, header: Mapping[str, Any], model: Module, optimizer: Optimizer | None
) -> _Saved:
    """Check the archive against the model (and optimizer), then read the arrays they take."""
    file = archive.file
    _check_model(file, header, archive.entries, model)
    extra = _extra_state(header)
    if extra is not None:
        _check_extra_state(file, extra, model)
    model_keys = _model_keys(header)
    keys = list(model_keys)
    if optimizer is not None:
        _check_optimizer(file, header, model, optimizer)
        for i, entry in enumerate(header["optimizer"]["state"]):
            keys.extend(f"{_OPTIM_PREFIX}{i}/{key}" for key in entry["arrays"])
    _check_budget(file, archive.entries, model_keys, keys)
    arrays = {key: archive.read(key) for key in keys}
    model_state = {key[len(_MODEL_PREFIX):]: arrays[key] for key in model_keys}
    optim_state = None if optimizer is None else _optimizer_state(header, arrays)
    return _Saved(model_state, extra, optim_state)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a checkpoint (what :func:`load` returns), without a model to load into.

    The archive's directory, every entry's ``.npy`` header and the metadata are read and
    checked as by :func:`load` (an archive of plain arrays of the declared shapes and dtypes,
    the right format and a readable format version), so a run can be checked before it resumes;
    the arrays' data is not read (so this costs the metadata alone, at most
    :data:`MAX_METADATA_BYTES` of JSON), and :func:`load` checks it.

    Raises
    ------
    FileNotFoundError, CheckpointError
        As :func:`load`.
    """
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(errno.ENOENT, "no such checkpoint file", str(file))
    with _open_archive(file) as archive:
        return _checked_header(archive, MAX_METADATA_BYTES)


class _Entry(NamedTuple):
    """An archive entry whose ``.npy`` header has been read, and none of its data."""

    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    @property
    def nbytes(self) -> int:
        """The bytes of data its header announces (and the zip directory confirms)."""
        return math.prod(self.shape) * self.dtype.itemsize


class _Archive:
    """An open checkpoint archive: every entry's header scanned, data read on request."""

    def __init__(self, file: Path, archive: zipfile.ZipFile, entries: dict[str, _Entry],
                 size: int) -> None:
        self.file, self.archive, self.entries = file, archive, entries
        self.size = size  # of the file on disk, in bytes

    def read(self, key: str) -> np.ndarray:
        """The array of entry ``key``, checked against its zip CRC and its scanned header."""
        entry = self.entries[key]
        with _reading(self.file), self.archive.open(entry.info) as stream:
            # read_array reads a stream in chunks into the array: no second copy of the data
            array = npy_format.read_array(stream, allow_pickle=False)
            if stream.read(1):  # zipfile stops at file_size; this cannot happen
                msg = f"entry {entry.info.filename!r} holds more data than announced"
                raise _MalformedEntry(msg)
            if array.shape != entry.shape or array.dtype != entry.dtype:
                msg = f"entry {entry.info.filename!r} changed while it was read"
                raise _MalformedEntry(msg)
        return array


@contextlib.contextmanager
def _reading(file: Path) -> Iterator[None]:
    """Turn what reading untrusted bytes raises into a CheckpointError naming the file."""
    try:
        yield
    except CheckpointError:
        raise
    except _READ_ERRORS as exc:
        cause = _message(exc)
        if not isinstance(exc, _MalformedEntry):
            cause = f"{type(exc).__name__}: {cause}"
        msg = f"checkpoint {file} cannot be read: {cause}"
        raise CheckpointError(msg) from exc


@contextlib.contextmanager
def _open_archive(file: Path) -> Iterator[_Archive]:
    """The archive with every entry's ``.npy`` header read and checked; no data read."""
    with contextlib.ExitStack() as stack:
        with _reading(file):
            handle = stack.enter_context(open(file, "rb"))
            archive = stack.enter_context(zipfile.ZipFile(handle))
            entries: dict[str, _Entry] = {}
            for info in archive.infolist():
                name = info.filename
                if not name.endswith(".npy") or info.is_dir():
                    msg = f"entry {name!r} is not a .npy array"
                    raise _MalformedEntry(msg)
                key = name[: -len(".npy")]
                if key in entries:
                    msg = f"entry {name!r} appears twice"
                    raise _MalformedEntry(msg)
                entries[key] = _scan_entry(archive, info)
            size = os.fstat(handle.fileno()).st_size
        yield _Archive(file, archive, entries, size)


class _HeaderReader:
    """The first bytes of an entry: refuses to read more than a ``.npy`` header can take.

    NumPy reads a header's announced length (up to 4 GiB in format 2.0) before it checks it.
    """

    def __init__(self, stream: IO[bytes], name: str) -> None:
        self.stream, self.name, self.consumed = stream, name, 0

    def read(self, size: int = -1) -> bytes:
        if size < 0 or self.consumed + size > _MAX_NPY_HEADER_BYTES:
            msg = f"entry {self.name!r} has a .npy header over {_MAX_NPY_HEADER_BYTES} bytes"
            raise _MalformedEntry(msg)
        data = self.stream.read(size)
        self.consumed += len(data)
        return data


def _scan_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Entry:
    """One ``.npy`` entry's header: numbers only (no pickles), and exactly as many bytes of data
    as the zip directory says the entry holds. Reads the header alone."""
    name = info.filename
    with archive.open(info) as stream:
        reader = _HeaderReader(stream, name)
        version = npy_format.read_magic(reader)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(reader)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(reader)
        else:
            msg = f"entry {name!r} has .npy format version {version}; 1.0 and 2.0 are read"
            raise _MalformedEntry(msg)
    if dtype.hasobject:
        msg = f"entry {name!r} holds Python objects ({dtype}); checkpoints are never unpickled"
        raise _MalformedEntry(msg)
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype:
        msg = f"entry {name!r} holds {dtype}; checkpoints hold booleans and numbers only"
        raise _MalformedEntry(msg)
    if any(n < 0 for n in shape):
        msg = f"entry {name!r} has a negative dimension in its shape {shape}"
        raise _MalformedEntry(msg)
    entry = _Entry(info, tuple(shape), dtype)
    held = info.file_size - reader.consumed
    if entry.nbytes != held:
        msg = f"entry {name!r} announces {entry.nbytes} bytes of data and holds {held}"
        raise _MalformedEntry(msg)
    return entry


def _metadata_limit(n_entries: int) -> int:
    """The most bytes of metadata a checkpoint of a model with ``n_entries`` parameters and
    buffers may hold."""
    return min(MAX_METADATA_BYTES, _SLACK_BYTES + _METADATA_PER_PARAMETER * n_entries)


def _checked_header(archive: _Archive, limit: int) -> dict[str, Any]:
    """The metadata (at most ``limit`` bytes, checked before it is read), checked for format,
    version and structure, and against the entries."""
    file = archive.file
    declared = archive.entries.get(_METADATA_KEY)
    if declared is None:
        entries = sorted(archive.entries)
        shown = entries[:8] + (["..."] if len(entries) > 8 else [])
        msg = (
            f"checkpoint {file} is not an nnbackend checkpoint: it has no {_METADATA_KEY!r} "
            f"entry (entries: {shown})"
        )
        raise CheckpointError(msg)
    if declared.dtype != np.uint8 or len(declared.shape) != 1:
        msg = (
            f"checkpoint {file}: {_METADATA_KEY!r} must be a 1-d uint8 array of UTF-8 JSON, "
            f"got {declared.dtype} of shape {declared.shape}"
        )
        raise CheckpointError(msg)
    if declared.nbytes > limit:
        msg = (
            f"checkpoint {file}: its metadata takes {declared.nbytes} bytes; a checkpoint "
            f"{'of this model ' if limit < MAX_METADATA_BYTES else ''}holds at most {limit}: "
            "refusing to read it"
        )
        raise CheckpointError(msg)
    raw = archive.read(_METADATA_KEY)
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        msg = f"checkpoint {file}: its metadata is not valid UTF-8 JSON ({_message(exc)})"
        raise CheckpointError(msg) from exc
    if not isinstance(header, dict):
        msg = (
            f"checkpoint {file} is not an nnbackend checkpoint: its metadata is a JSON "
            f"{type(header).__name__}, not an object"
        )
        raise CheckpointError(msg)
    if header.get("format") != FORMAT:
        msg = (
            f"checkpoint {file} is not an nnbackend checkpoint: format "
            f"{header.get('format')!r}, not {FORMAT!r}"
        )
        raise CheckpointError(msg)
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        msg = f"checkpoint {file}: format_version must be a positive integer, got {version!r}"
        raise CheckpointError(msg)
    if version > FORMAT_VERSION:
        msg = (
            f"checkpoint {file} has format_version {version}, written by nnbackend "
            f"{header.get('library_version')!r}; this nnbackend ({_library_version()}) reads "
            f"format_version {FORMAT_VERSION} and older: upgrade nnbackend to load it"
        )
        raise CheckpointError(msg)
    _check_structure(file, header)
    _check_entries(file, header, archive.entries)
    return header


def _check_structure(file: Path, header: Mapping[str, Any]) -> None:
    """The parts of the metadata that loading relies on have the types :func:`save` writes."""

    def require(ok: bool, what: str) -> None:
        if not ok:
            msg = f"checkpoint {file}: malformed metadata: {what}"
            raise CheckpointError(msg)

    params: Any = header.get("parameters")
    require(isinstance(params, list), "'parameters' must be a list")
    for i, entry in enumerate(params):
        require(
            isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.get("dtype"), str)
            and _is_shape(entry.get("shape")),
            f"parameters[{i}] must be {{'name': str, 'shape': [int, ...], 'dtype': str}}, "
            f"got {reprlib.repr(entry)}",
        )
    names = [entry["name"] for entry in params]
    if header["format_version"] >= 2:
        _check_structure_2(header, require)
        names += [entry["name"] for entry in header["buffers"]]
    require(len(set(names)) == len(names), f"parameter and buffer names repeat in {names}")
    opt: Any = header.get("optimizer")
    if opt is None:
        return
    require(isinstance(opt, dict), "'optimizer' must be null or a dict")
    require(isinstance(opt.get("type"), str), "optimizer 'type' must be a string")
    require(isinstance(opt.get("hyperparameters"), dict),
            "optimizer 'hyperparameters' must be a dict")
    state: Any = opt.get("state")
    owners: Any = opt.get("parameters")
    require(isinstance(state, list), "optimizer 'state' must be a list")
    groups: Any = opt.get("param_groups", [])  # absent before parameter groups: one group
    require(
        isinstance(groups, list) and all(
            isinstance(g, dict) and isinstance(g.get("params"), list)
            and all(isinstance(i, int) and not isinstance(i, bool) for i in g["params"])
            for g in groups
        ),
        "optimizer 'param_groups' must be a list of {'params': [int, ...], ...}",
    )
    require(
        isinstance(owners, list) and len(owners) == len(state)
        and all(n is None or isinstance(n, str) for n in owners),
        "optimizer 'parameters' must list a name (or null) for each state entry",
    )
    for i, entry in enumerate(state):
        require(
            isinstance(entry, dict)
            and isinstance(entry.get("scalars"), dict)
            and isinstance(entry.get("arrays"), list)
            and all(isinstance(k, str) for k in entry["arrays"])
            and len(set(entry["arrays"])) == len(entry["arrays"])
            and not set(entry["arrays"]) & entry["scalars"].keys(),
            f"optimizer state[{i}] must be {{'scalars': dict, 'arrays': [distinct names]}}, "
            f"got {reprlib.repr(entry)}",
        )


def _check_structure_2(header: Mapping[str, Any], require: Callable[[bool, str], None]
                       ) -> None:
    """What format 2 adds: buffers, extra state and the model's description."""
    buffers: Any = header.get("buffers")
    require(isinstance(buffers, list), "'buffers' must be a list")
    for i, entry in enumerate(buffers):
        require(
            isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.get("dtype"), str)
            and _is_shape(entry.get("shape")),
            f"buffers[{i}] must be {{'name': str, 'shape': [int, ...], 'dtype': str}}, "
            f"got {reprlib.repr(entry)}",
        )
    extra: Any = header.get("extra_state")
    require(
        isinstance(extra, dict) and all(isinstance(v, dict) for v in extra.values()),
        "'extra_state' must be a dict of module name to dict",
    )
    description: Any = header.get("model", ...)
    require(description is None or isinstance(description, dict),
            "'model' must be null or a model description (a dict)")


def _buffers(header: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The buffers a checkpoint declares (format 1 had none)."""
    return list(header["buffers"]) if header["format_version"] >= 2 else []


def _extra_state(header: Mapping[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The extra state a checkpoint holds (None: format 1, which had none)."""
    return dict(header["extra_state"]) if header["format_version"] >= 2 else None


def _model_keys(header: Mapping[str, Any]) -> list[str]:
    """The archive's entries of the model's state: its parameters, then its buffers."""
    return [_MODEL_PREFIX + entry["name"] for entry in [*header["parameters"], *_buffers(header)]]


def _check_entries(file: Path, header: Mapping[str, Any], arrays: Mapping[str, _Entry]) -> None:
    """The archive holds exactly the declared arrays, each of its declared shape and dtype."""
    declared = {_METADATA_KEY, *_model_keys(header)}
    if header["optimizer"] is not None:
        for i, entry in enumerate(header["optimizer"]["state"]):
            declared.update(f"{_OPTIM_PREFIX}{i}/{key}" for key in entry["arrays"])
    missing, unexpected = sorted(declared - arrays.keys()), sorted(arrays.keys() - declared)
    if missing or unexpected:
        msg = f"checkpoint {file}: the archive does not hold the arrays its metadata declares"
        msg += name_mismatch(missing, unexpected)
        raise CheckpointError(msg)
    kinds = [("parameter", e) for e in header["parameters"]]
    kinds += [("buffer", e) for e in _buffers(header)]
    for kind, entry in kinds:
        value = arrays[_MODEL_PREFIX + entry["name"]]
        if list(value.shape) != entry["shape"] or value.dtype.name != entry["dtype"]:
            msg = (
                f"checkpoint {file}: {kind} {entry['name']!r} is declared "
                f"{entry['dtype']} {tuple(entry['shape'])} but stored as {value.dtype} "
                f"{value.shape}"
            )
            raise CheckpointError(msg)


def _check_held(archive: _Archive, keys: list[str]) -> None:
    """Without a model to measure against, the model's arrays may take no more bytes than the
    file (save stores them uncompressed), checked before any is read or any layer built."""
    held = sum(archive.entries[key].nbytes for key in keys)
    if held > archive.size + _SLACK_BYTES:
        msg = (
            f"checkpoint {archive.file}: its model's arrays take {held} bytes, more than the "
            f"file's {archive.size} (a checkpoint stores them uncompressed): refusing to read it"
        )
        raise CheckpointError(msg)


def _check_model(
    file: Path, header: Mapping[str, Any], entries: Mapping[str, _Entry], model: Module
) -> None:
    """The saved parameters' and buffers' names, shapes and dtypes against the model's (no data
    read)."""
    # The entries stand in for the arrays: check_state_dict reads only .shape and .dtype.
    state = {key[len(_MODEL_PREFIX):]: entries[key] for key in _model_keys(header)}
    try:
        model.check_state_dict(state)
    except (KeyError, ValueError, TypeError) as exc:
        msg = (
            f"checkpoint {file} does not match the model: {_message(exc)}. The checkpoint was "
            f"saved from:\n{header.get('architecture')}"
        )
        raise CheckpointError(msg) from exc


def _check_extra_state(file: Path, saved: Mapping[str, Any], model: Module) -> None:
    """Extra state for exactly the modules of ``model`` that have some."""
    have = model.extra_state_dict()
    missing, unexpected = sorted(have.keys() - saved.keys()), sorted(saved.keys() - have.keys())
    if missing or unexpected:
        msg = (f"checkpoint {file} does not match the model: it holds the extra state of "
               f"other modules than those that have some{name_mismatch(missing, unexpected)}")
        raise CheckpointError(msg)


def _check_budget(
    file: Path, entries: Mapping[str, _Entry], model_keys: list[str], keys: list[str]
) -> None:
    """Refuse to read more than the model's bytes plus a small multiple of them for its
    optimizer (checked on the headers, before any data is read)."""
    model_bytes = sum(entries[key].nbytes for key in model_keys)
    state_bytes = sum(entries[key].nbytes for key in keys) - model_bytes
    limit = _STATE_FACTOR * model_bytes + _SLACK_BYTES
    if state_bytes > limit:
        msg = (
            f"checkpoint {file}: its optimizer state takes {state_bytes} bytes; for a model of "
            f"{model_bytes} bytes a checkpoint holds at most {limit}: refusing to read it"
        )
        raise CheckpointError(msg)


def _check_optimizer(
    file: Path, header: Mapping[str, Any], model: Module, optimizer: Optimizer
) -> None:
    """The saved optimizer's type, parameter count and names against ``optimizer``."""
    saved = header["optimizer"]
    kind = type(optimizer).__name__
    if saved is None:
        msg = (
            f"checkpoint {file} holds no optimizer state (it was saved without an optimizer); "
            f"cannot restore {kind}: pass optimizer=None to load the model alone"
        )
        raise CheckpointError(msg)
    if saved["type"] != kind:
        msg = (
            f"checkpoint {file} holds optimizer state saved by {saved['type']}; the optimizer "
            f"given is {kind}"
        )
        raise CheckpointError(msg)
    if len(saved["state"]) != len(optimizer.params):
        msg = (
            f"checkpoint {file}: the saved {kind} optimised {len(saved['state'])} parameters, "
            f"this one optimises {len(optimizer.params)}"
        )
        raise CheckpointError(msg)
    names = {id(p): name for name, p in model.named_parameters()}
    for i, (p, was) in enumerate(zip(optimizer.params, saved["parameters"], strict=True)):
        now = names[id(p)]  # _check_optimizer_owner: every parameter is the model's
        if was is not None and was != now:  # null: a name older checkpoints could not record
            msg = (
                f"checkpoint {file}: {kind} parameter {i} was the model's {was!r} when saved "
                f"and is its {now!r} here"
            )
            raise CheckpointError(msg)


def _optimizer_state(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
                     ) -> dict[str, Any]:
    """The saved optimizer state as a ``state_dict`` (checked by :func:`_check_optimizer`)."""
    saved = header["optimizer"]
    state = [
        {
            **entry["scalars"],
            **{key: arrays[f"{_OPTIM_PREFIX}{i}/{key}"] for key in entry["arrays"]},
        }
        for i, entry in enumerate(saved["state"])
    ]
    out = {"type": saved["type"], "hyperparameters": saved["hyperparameters"], "state": state}
    if "param_groups" in saved:  # absent before parameter groups: the optimizer's one group
        out["param_groups"] = saved["param_groups"]
    return out


def _apply(file: Path, model: Module, saved: _Saved, optimizer: Optimizer | None) -> None:
    """Move the values to the model's devices, load the optimizer, the extra state, then the
    model's arrays.

    Everything that can fail is done before the first change: the checks (ours, then the
    optimizer's own, which precede its first change) and the transfers to the devices, which
    may run out of memory. A module may refuse its extra state (its own checks): then what was
    given back is restored from the extra state taken before. What is left, the model's copies
    into its (pre-validated) parameters and buffers, fails only if interrupted. On any error the
    previous references are put back, which restores everything ``load_state_dict`` rebinds (an
    interrupt in the middle of the model's in-place copies, on backends with views, leaves those
    already made).
    """
    targets = model.state_dict()
    params = [(p, p.data, p.grad) for p in model.parameters()]
    buffers = _buffer_refs(model)
    extra_before = None
    if saved.extra_state is not None:  # a copy: a module may hand out its live dict
        extra_before = json.loads(json.dumps(model.extra_state_dict()))
    if optimizer is not None:
        opt_state = optimizer.state
        opt_settings = optimizer._settings_snapshot()  # the defaults and each group's
    try:
        on_device = {name: backend_of(ref).asarray(saved.model_state[name])
                     for name, ref in targets.items()}
        if optimizer is not None and saved.optim_state is not None:
            optimizer.load_state_dict(saved.optim_state)
        if saved.extra_state is not None:
            model.load_extra_state_dict(saved.extra_state)
        model.load_state_dict(on_device)
    except BaseException as exc:
        for p, data, grad in params:
            p.data, p.grad = data, grad
        for module, name, value in buffers:
            setattr(module, name, value)
        if extra_before is not None:
            with contextlib.suppress(Exception):  # the modules' own state: they take it back
                model.load_extra_state_dict(extra_before)
        if optimizer is not None:
            optimizer.state = opt_state
            optimizer._restore_settings(opt_settings)
        if isinstance(exc, KeyError | ValueError | TypeError):
            msg = f"checkpoint {file} does not fit: {_message(exc)}"
            raise CheckpointError(msg) from exc
        raise


def _buffer_refs(model: Module) -> list[tuple[Module, str, Any]]:
    """``(module, attribute, array)`` for every buffer: what a failed load puts back."""
    return [(module, name, value)
            for _, module in model.named_modules()
            for name, value in module.named_buffers()
            if "." not in name]  # the module's own, not its descendants'


# --------------------------------------------------------------------------------------------
# Helpers


def _check_model_type(model: Any, *, where: str) -> None:
    """Raise TypeError unless ``model`` is a Module."""
    if not isinstance(model, Module):
        msg = f"{where}: model must be an nnbackend Module, got {type(model).__name__}"
        raise TypeError(msg)


def _check_optimizer_type(optimizer: Any, *, where: str) -> None:
    """Raise TypeError unless ``optimizer`` is an Optimizer or None."""
    if optimizer is not None and not isinstance(optimizer, Optimizer):
        msg = f"{where}: optimizer must be an nnbackend Optimizer or None, got {optimizer!r}"
        raise TypeError(msg)


def _check_optimizer_owner(optimizer: Optimizer, model: Module, *, where: str) -> None:
    """Raise ValueError unless every parameter of ``optimizer`` is one of ``model``'s."""
    own = {id(p) for p in model.parameters()}
    for i, p in enumerate(optimizer.params):
        if id(p) not in own:
            msg = (
                f"{where}: {type(optimizer).__name__} parameter {i} (shape "
                f"{tuple(p.shape)}) is not a parameter of the model; build the optimizer over "
                "model.parameters() (or a subset of them)"
            )
            raise ValueError(msg)


def _is_shape(value: Any) -> bool:
    """True for a list of non-negative Python ints."""
    return isinstance(value, list) and all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value
    )


def _message(exc: BaseException) -> str:
    """An exception's message (KeyError's without the quotes its str adds)."""
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        return str(exc.args[0])
    return str(exc)


def _library_version() -> str:
    """``nnbackend.__version__``, imported late: the package may still be initialising."""
    from . import __version__

    return __version__
