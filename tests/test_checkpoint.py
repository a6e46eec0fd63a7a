"""Checkpoints: exact round trips and resumes, metadata, cross-backend loads, validation that
leaves the model and optimizer untouched, corrupt and hostile files, and atomic saves."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import struct
import sys
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from conftest import Case
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib import format as npy_format

import nnbackend as nb
from nnbackend import checkpoint
from nnbackend.backend import dtype_name
from nnbackend.errors import CheckpointError
from nnbackend.optim import SGD, Adam, AdamW, Optimizer, RMSprop

# -------------------------------------------------------------------------------------------
# A small problem: a 4→8→3 ReLU network, cross-entropy, batches fixed on the host by index

OPTIMIZERS: dict[str, Callable[[nb.Module], Optimizer]] = {
    "adam": lambda m: Adam(m, lr=0.01),
    "adam-amsgrad-l2": lambda m: Adam(m, lr=0.01, amsgrad=True, weight_decay=1e-3),
    "adamw": lambda m: AdamW(m, lr=0.01),
    "sgd-momentum": lambda m: SGD(m, lr=0.1, momentum=0.9),
    "sgd-nesterov": lambda m: SGD(m, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
    "rmsprop-centered": lambda m: RMSprop(m, lr=0.01, momentum=0.5, centered=True),
}


def _mlp(*, seed: int = 0, backend: Any = "numpy", dtype: str = "float32",
         hidden: int = 8, bias: bool = True) -> nb.Sequential:
    return nb.Sequential(
        nb.Linear(4, hidden, seed=seed, backend=backend, dtype=dtype, bias=bias),
        nb.ReLU(),
        nb.Linear(hidden, 3, seed=seed + 1, backend=backend, dtype=dtype, bias=bias),
    )


def _batch(k: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(100 + k)
    return rng.standard_normal((16, 4)), rng.integers(0, 3, size=16)


def _train(model: nb.Module, opt: Optimizer, steps: range) -> None:
    be = model.backend
    assert be is not None
    dtype = model.parameters()[0].dtype
    for k in steps:
        X, y = _batch(k)
        out, backprop = model.forward(be.asarray(X, dtype=dtype), input_grad=False)
        _, dy = nb.CrossEntropyLoss()(out, be.asarray(y))
        backprop(dy)
        opt.step()
        opt.zero_grad()


def _host(model: nb.Module) -> dict[str, np.ndarray]:
    return {name: nb.to_numpy(a).copy() for name, a in model.state_dict().items()}


def _assert_arrays_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.dtype == want.dtype, what
    assert got.shape == want.shape, what
    np.testing.assert_array_equal(got, want, err_msg=what)


def _assert_params_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name in want:
        _assert_arrays_equal(got[name], want[name], name)


def _assert_optim_equal(got: Optimizer, want: Optimizer) -> None:
    a, b = got.state_dict(), want.state_dict()
    assert a["type"] == b["type"]
    assert a["hyperparameters"] == b["hyperparameters"]
    assert len(a["state"]) == len(b["state"])
    for i, (x, y) in enumerate(zip(a["state"], b["state"], strict=True)):
        assert x.keys() == y.keys(), i
        for key in y:
            if key == "step":
                assert x[key] == y[key]
            else:
                _assert_arrays_equal(x[key], y[key], f"state {i} {key}")


class Snapshot:
    """Everything a failed load must leave as it was: array identities and values."""

    def __init__(self, model: nb.Module, opt: Optimizer | None = None) -> None:
        self.model, self.opt = model, opt
        self.refs = [(p, p.data, p.grad) for p in model.parameters()]
        self.values = _host(model)
        if opt is not None:
            self.opt_state = opt.state
            self.opt_refs = [dict(st) for st in opt.state]  # the same array objects
            self.opt_dict = opt.state_dict()
            self.opt_hyper = opt.hyperparameters()

    def assert_unchanged(self) -> None:
        for p, data, grad in self.refs:
            assert p.data is data and p.grad is grad
        _assert_params_equal(_host(self.model), self.values)
        if self.opt is not None:
            assert self.opt.state is self.opt_state
            for now, was in zip(self.opt.state, self.opt_refs, strict=True):
                assert now.keys() == was.keys()
                assert all(now[k] is v for k, v in was.items() if k != "step")
                assert now.get("step") == was.get("step")
            assert self.opt.hyperparameters() == self.opt_hyper
            saved = self.opt_dict
            now = self.opt.state_dict()
            for x, y in zip(now["state"], saved["state"], strict=True):
                for key in y:
                    np.testing.assert_array_equal(x[key], y[key])


@pytest.fixture
def trained() -> tuple[nb.Sequential, Adam]:
    """A float32 NumPy model after three Adam steps."""
    model = _mlp()
    opt = Adam(model, lr=0.01)
    _train(model, opt, range(3))
    return model, opt


@pytest.fixture
def saved(tmp_path: Path, trained: tuple[nb.Sequential, Adam]) -> Path:
    model, opt = trained
    return checkpoint.save(tmp_path / "ckpt.npz", model, opt, epoch=3)


def _fresh() -> tuple[nb.Sequential, Adam]:
    """A float32 model and Adam that differ from ``trained`` (and have their own state)."""
    model = _mlp(seed=50)
    opt = Adam(model, lr=0.5, betas=(0.5, 0.6))
    _train(model, opt, range(10, 12))
    return model, opt


def _rewrite(src: Path, dst: Path, *, header: Callable[[dict[str, Any]], None] | None = None,
             arrays: Callable[[dict[str, np.ndarray]], None] | None = None) -> Path:
    """Copy a checkpoint, editing its metadata and/or arrays on the way."""
    with np.load(src, allow_pickle=False) as f:
        content = {k: f[k] for k in f.files}
    meta = json.loads(content["__metadata__"].tobytes())
    if header is not None:
        header(meta)
    content["__metadata__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    if arrays is not None:
        arrays(content)
    with open(dst, "wb") as out:
        np.savez(out, **content)
    return dst


# -------------------------------------------------------------------------------------------
# Round trips and exact resume


@pytest.mark.parametrize("steps", [0, 3])
@pytest.mark.parametrize("make_opt", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_round_trip_is_bit_identical_and_resumes_exactly(
    tmp_path: Path, make_opt: Callable[[nb.Module], Optimizer], steps: int
) -> None:
    model = _mlp()
    opt = make_opt(model)
    _train(model, opt, range(steps))
    checkpoint.save(tmp_path / "ckpt.npz", model, opt, epoch=steps)

    resumed = _mlp(seed=77)
    opt2 = make_opt(resumed)
    _train(resumed, opt2, range(20, 22))  # state of its own, which the load must replace
    opt2.lr = 0.123
    meta = checkpoint.load(tmp_path / "ckpt.npz", resumed, opt2)
    assert meta["epoch"] == steps
    _assert_params_equal(_host(resumed), _host(model))
    _assert_optim_equal(opt2, opt)
    assert all(p.grad is None for p in resumed.parameters())
    assert opt2.params == resumed.parameters()

    # The saved run (never reloaded) and the resumed one continue in lockstep, bit for bit.
    _train(model, opt, range(steps, steps + 4))
    _train(resumed, opt2, range(steps, steps + 4))
    _assert_params_equal(_host(resumed), _host(model))
    _assert_optim_equal(opt2, opt)


def test_loaded_arrays_are_copies(saved: Path, trained: tuple[nb.Sequential, Adam]) -> None:
    model, opt = _fresh()
    checkpoint.load(saved, model, opt)
    before = _host(trained[0])
    for p in model.parameters():
        p.data += 1.0
    opt.state[0]["m"] += 1.0
    _assert_params_equal(_host(trained[0]), before)
    model2, opt2 = _fresh()
    checkpoint.load(saved, model2, opt2)
    _assert_params_equal(_host(model2), before)
    _assert_optim_equal(opt2, trained[1])


def test_file_is_a_plain_npz_with_json_metadata(
    saved: Path, trained: tuple[nb.Sequential, Adam]
) -> None:
    model, opt = trained
    with np.load(saved, allow_pickle=False) as f:
        content = {k: f[k] for k in f.files}
    assert set(content) == {
        "__metadata__", "model/0.weight", "model/0.bias", "model/2.weight", "model/2.bias",
        *(f"optim/{i}/{key}" for i in range(4) for key in ("m", "v")),
    }
    _assert_params_equal({k[len("model/"):]: v for k, v in content.items()
                          if k.startswith("model/")}, _host(model))
    np.testing.assert_array_equal(content["optim/2/v"], nb.to_numpy(opt.state[2]["v"]))
    meta = json.loads(content["__metadata__"].tobytes().decode("utf-8"))
    assert meta["format"] == "nnbackend-checkpoint"
    assert meta["format_version"] == 2
    assert meta["optimizer"]["state"][0] == {"scalars": {"step": 3}, "arrays": ["m", "v"]}


def test_metadata_round_trip(tmp_path: Path, trained: tuple[nb.Sequential, Adam]) -> None:
    model, opt = trained
    user = {"epoch": 7, "step": 1200, "dataset": "digits", "seed": 0, "loss": 0.3125,
            "best": None, "done": False, "tags": ["a", "b"], "history": {"loss": [1.5, 0.5]},
            "diverged_loss": math.inf}
    checkpoint.save(tmp_path / "ckpt.npz", model, opt, **user)
    meta = checkpoint.load(tmp_path / "ckpt.npz", _mlp(seed=9))
    for key, value in user.items():
        assert meta[key] == value, key
    assert meta["format"] == "nnbackend-checkpoint"
    assert meta["format_version"] == checkpoint.FORMAT_VERSION == 2
    assert meta["library_version"] == nb.__version__
    assert (meta["backend"], meta["device"]) == ("numpy", "cpu")
    assert meta["architecture"] == repr(model)
    assert meta["model"] == nb.layers.describe(model)
    assert (meta["buffers"], meta["extra_state"]) == ([], {})
    assert meta["parameters"] == [
        {"name": "0.weight", "shape": [8, 4], "dtype": "float32"},
        {"name": "0.bias", "shape": [8], "dtype": "float32"},
        {"name": "2.weight", "shape": [3, 8], "dtype": "float32"},
        {"name": "2.bias", "shape": [3], "dtype": "float32"},
    ]
    assert meta["optimizer"]["type"] == "Adam"
    assert meta["optimizer"]["hyperparameters"] == {
        "lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False,
    }
    assert meta["optimizer"]["parameters"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert set(meta) == checkpoint.RESERVED_METADATA | user.keys()


def test_nan_metadata_round_trips(tmp_path: Path) -> None:
    model = _mlp()
    checkpoint.save(tmp_path / "ckpt", model, loss=math.nan)
    assert math.isnan(checkpoint.load(tmp_path / "ckpt", model)["loss"])


def test_model_only_round_trip_and_ignored_optimizer_state(
    tmp_path: Path, saved: Path, trained: tuple[nb.Sequential, Adam]
) -> None:
    model, _ = _fresh()
    meta = checkpoint.load(saved, model)  # the optimizer state in the file is ignored
    assert meta["optimizer"]["type"] == "Adam"
    _assert_params_equal(_host(model), _host(trained[0]))

    path = checkpoint.save(tmp_path / "model-only.npz", trained[0], epoch=1)
    other = _mlp(seed=3)
    assert checkpoint.load(path, other)["optimizer"] is None
    _assert_params_equal(_host(other), _host(trained[0]))


def test_model_without_parameters(tmp_path: Path) -> None:
    model = nb.Sequential(nb.ReLU(), nb.Tanh())
    meta = checkpoint.load(checkpoint.save(tmp_path / "empty.npz", model, epoch=1), model)
    assert (meta["epoch"], meta["parameters"], meta["backend"]) == (1, [], None)


def test_optimizer_over_some_parameters(tmp_path: Path) -> None:
    model = _mlp()
    opt = SGD(model.parameters()[2:], lr=0.1, momentum=0.9)
    _train(model, opt, range(2))
    checkpoint.save(tmp_path / "ckpt.npz", model, opt)
    resumed = _mlp(seed=5)
    opt2 = SGD(resumed.parameters()[2:], lr=0.7, momentum=0.1)
    meta = checkpoint.load(tmp_path / "ckpt.npz", resumed, opt2)
    assert meta["optimizer"]["parameters"] == ["2.weight", "2.bias"]
    _assert_params_equal(_host(resumed), _host(model))
    _assert_optim_equal(opt2, opt)


# -------------------------------------------------------------------------------------------
# Paths and files


@pytest.mark.parametrize("name", ["ckpt", "run.ckpt", "weights.npz.bak", "model.npz"])
@pytest.mark.parametrize("as_str", [True, False], ids=["str", "path"])
def test_file_name_is_kept_as_given(tmp_path: Path, name: str, as_str: bool) -> None:
    model = _mlp()
    target = tmp_path / name
    returned = checkpoint.save(str(target) if as_str else target, model, epoch=2)
    assert isinstance(returned, Path)
    assert returned == target
    assert sorted(os.listdir(tmp_path)) == [name]
    assert zipfile.is_zipfile(target)
    assert checkpoint.load(str(target) if as_str else target, _mlp(seed=4))["epoch"] == 2


def test_relative_path_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    model = _mlp()
    assert checkpoint.save("ckpt", model, epoch=1) == Path("ckpt")
    assert os.listdir(tmp_path) == ["ckpt"]
    assert checkpoint.load("ckpt", model)["epoch"] == 1


def test_save_replaces_an_existing_checkpoint(
    tmp_path: Path, trained: tuple[nb.Sequential, Adam]
) -> None:
    model, opt = trained
    path = checkpoint.save(tmp_path / "ckpt.npz", model, opt, epoch=3)
    _train(model, opt, range(3, 5))
    checkpoint.save(path, model, opt, epoch=5)
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    resumed, opt2 = _fresh()
    assert checkpoint.load(path, resumed, opt2)["epoch"] == 5
    _assert_params_equal(_host(resumed), _host(model))
    _assert_optim_equal(opt2, opt)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_permissions_follow_umask_and_the_replaced_file(tmp_path: Path) -> None:
    model = _mlp()
    umask = os.umask(0o027)
    try:
        path = checkpoint.save(tmp_path / "new.npz", model)
    finally:
        os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o640
    os.chmod(path, 0o604)
    checkpoint.save(path, model)
    assert os.stat(path).st_mode & 0o777 == 0o604


def test_missing_directory_raises_and_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "dir.npz"
    with pytest.raises(FileNotFoundError, match="the directory of the path does not exist") as info:
        checkpoint.save(target, _mlp())
    assert info.value.filename == str(target)
    assert os.listdir(tmp_path) == []


def test_empty_path_and_directory_are_refused_naming_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``save("", m)`` used to write the archive and then fail renaming it onto '.' (EBUSY)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"checkpoint\.save: the path is empty \(''\)"):
        checkpoint.save("", _mlp())
    for directory in (".", str(tmp_path), tmp_path):
        with pytest.raises(IsADirectoryError, match="path is a directory") as info:
            checkpoint.save(directory, _mlp())
        assert info.value.filename == str(directory)
    assert os.listdir(tmp_path) == []  # no temporary left behind


def test_missing_file(tmp_path: Path) -> None:
    model = _mlp()
    snap = Snapshot(model)
    target = tmp_path / "absent.npz"
    with pytest.raises(FileNotFoundError, match=r"absent\.npz") as info:
        checkpoint.load(target, model)
    assert info.value.filename == str(target)
    snap.assert_unchanged()


def test_wrong_argument_types(tmp_path: Path, saved: Path) -> None:
    model = _mlp()
    with pytest.raises(TypeError, match="model must be an nnbackend Module, got dict"):
        checkpoint.save(tmp_path / "x.npz", model.state_dict())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="optimizer must be an nnbackend Optimizer"):
        checkpoint.save(tmp_path / "x.npz", model, "adam")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model must be an nnbackend Module"):
        checkpoint.load(saved, None)  # type: ignore[arg-type]
    assert not (tmp_path / "x.npz").exists()


# -------------------------------------------------------------------------------------------
# Across backends


def test_numpy_checkpoint_loads_on_every_backend(tmp_path: Path, case: Case) -> None:
    model = _mlp(dtype=case.dtype_name)
    opt = Adam(model, lr=0.01)
    _train(model, opt, range(3))
    path = checkpoint.save(tmp_path / "ckpt.npz", model, opt, epoch=3)

    target = _mlp(seed=30, backend=case.backend, dtype=case.dtype_name)
    opt2 = Adam(target, lr=0.2)
    assert checkpoint.load(path, target, opt2)["device"] == "cpu"
    for p in target.parameters():
        case.check_placement(p.data)
    for state in opt2.state:
        case.check_placement(state["m"])
        case.check_placement(state["v"])
    _assert_params_equal(_host(target), _host(model))
    _assert_optim_equal(opt2, opt)
    _train(target, opt2, range(3, 4))  # the restored state is usable where it now lives
    for p in target.parameters():
        case.check_placement(p.data)


def test_checkpoint_from_every_backend_loads_on_numpy(tmp_path: Path, case: Case) -> None:
    model = _mlp(backend=case.backend, dtype=case.dtype_name)
    opt = SGD(model, lr=0.1, momentum=0.9)
    _train(model, opt, range(2))
    path = checkpoint.save(tmp_path / "ckpt.npz", model, opt)
    target = _mlp(seed=30, dtype=case.dtype_name)
    opt2 = SGD(target, lr=0.3)
    meta = checkpoint.load(path, target, opt2)
    assert (meta["backend"], meta["device"]) == (case.backend.name, str(case.backend.device))
    for p in target.parameters():
        assert isinstance(p.data, np.ndarray)
        assert p.data.dtype == np.dtype(case.dtype_name)
    _assert_params_equal(_host(target), _host(model))
    _assert_optim_equal(opt2, opt)


# -------------------------------------------------------------------------------------------
# Mismatches: a CheckpointError naming the problem, and nothing changed


@pytest.mark.parametrize(
    ("build", "pattern"),
    [
        (lambda: nb.Sequential(nb.Linear(4, 8), nb.ReLU(), nb.Linear(8, 8), nb.ReLU(),
                               nb.Linear(8, 3)),
         r"does not match the model: Sequential: state dict does not match the module's "
         r"parameters; missing \['4\.bias', '4\.weight'\]\. The checkpoint was saved from:\n"
         r"Sequential\(\n  \(0\): Linear\(4→8\)"),
        (lambda: nb.Sequential(nb.Linear(4, 8), nb.Linear(8, 3)),
         r"missing \['1\.bias', '1\.weight'\]; unexpected \['2\.bias', '2\.weight'\]"),
        (lambda: _mlp(bias=False),
         r"; unexpected \['0\.bias', '2\.bias'\]"),
        (lambda: _mlp(hidden=9),
         r"'0\.weight' has shape \(9, 4\), state dict gives \(8, 4\)"),
        (lambda: _mlp(dtype="float64"),
         r"'0\.weight' has dtype float64, state dict gives float32"),
    ],
    ids=["extra-layer", "renamed", "no-bias", "shape", "dtype"],
)
def test_model_mismatch(saved: Path, build: Callable[[], nb.Module], pattern: str) -> None:
    model = build()
    opt = Adam(model, lr=0.3)
    _train(model, opt, range(1))
    snap = Snapshot(model, opt)
    with pytest.raises(CheckpointError, match=pattern) as info:
        checkpoint.load(saved, model, opt)
    assert str(saved) in str(info.value)
    snap.assert_unchanged()


def _opt_other_type(model: nb.Module) -> Optimizer:
    return SGD(model, lr=0.1, momentum=0.9)


def _opt_subset(model: nb.Module) -> Optimizer:
    return Adam(model.parameters()[:2], lr=0.1)


def _opt_reordered(model: nb.Module) -> Optimizer:
    return Adam(model.parameters()[::-1], lr=0.1)


@pytest.mark.parametrize(
    ("make_opt", "pattern"),
    [
        (_opt_other_type, r"holds optimizer state saved by Adam; the optimizer given is SGD"),
        (_opt_subset, r"the saved Adam optimised 4 parameters, this one optimises 2"),
        (_opt_reordered, r"Adam parameter 0 was the model's '0\.weight' when saved and is its "
                         r"'2\.bias' here"),
    ],
    ids=["type", "count", "order"],
)
def test_optimizer_mismatch(
    saved: Path, make_opt: Callable[[nb.Module], Optimizer], pattern: str
) -> None:
    model = _mlp(seed=40)
    opt = make_opt(model)
    _train(model, opt, range(2))
    snap = Snapshot(model, opt)
    with pytest.raises(CheckpointError, match=pattern):
        checkpoint.load(saved, model, opt)
    snap.assert_unchanged()


def test_optimizer_over_another_models_parameters_is_refused(
    tmp_path: Path, saved: Path
) -> None:
    """``load(path, model, Adam(other.parameters()))`` used to load the model and put the
    other model's optimizer in the saved state; now nothing changes and nothing is read."""
    model, other = _mlp(seed=40), _mlp(seed=41)
    opt = Adam(other, lr=0.1)
    _train(other, opt, range(2))
    mixed = Adam([*model.parameters()[:2], *other.parameters()[2:]], lr=0.1)
    snap, snap_other = Snapshot(model, mixed), Snapshot(other, opt)
    pattern = (r"checkpoint\.load: Adam parameter 0 \(shape \(8, 4\)\) is not a parameter "
               r"of the model; build the optimizer over model\.parameters\(\)")
    with pytest.raises(ValueError, match=pattern):
        checkpoint.load(saved, model, opt)
    with pytest.raises(ValueError, match=r"Adam parameter 2 \(shape \(3, 8\)\) is not"):
        checkpoint.load(saved, model, mixed)
    snap.assert_unchanged()
    snap_other.assert_unchanged()
    with pytest.raises(ValueError, match=r"checkpoint\.save: Adam parameter 0 .* is not a "):
        checkpoint.save(tmp_path / "mixed.npz", model, opt)
    assert not (tmp_path / "mixed.npz").exists()


def test_missing_optimizer_state(tmp_path: Path, trained: tuple[nb.Sequential, Adam]) -> None:
    path = checkpoint.save(tmp_path / "model-only.npz", trained[0])
    model, opt = _fresh()
    snap = Snapshot(model, opt)
    with pytest.raises(CheckpointError, match=r"holds no optimizer state .*optimizer=None"):
        checkpoint.load(path, model, opt)
    snap.assert_unchanged()


def test_invalid_optimizer_state_is_caught_before_anything_changes(
    tmp_path: Path, saved: Path
) -> None:
    def bad_lr(meta: dict[str, Any]) -> None:
        meta["optimizer"]["hyperparameters"]["lr"] = -1.0

    def bad_step(meta: dict[str, Any]) -> None:
        meta["optimizer"]["state"][3]["scalars"]["step"] = 0

    model, opt = _fresh()
    snap = Snapshot(model, opt)
    for name, edit, pattern in [
        ("lr", bad_lr, r"does not fit: Adam: lr must be >= 0, got -1\.0"),
        ("step", bad_step, r"does not fit: .*state 3: 'step' must be a positive integer, got 0"),
    ]:
        path = _rewrite(saved, tmp_path / f"{name}.npz", header=edit)
        with pytest.raises(CheckpointError, match=pattern):
            checkpoint.load(path, model, opt)
        snap.assert_unchanged()

    # An optimizer state array of the wrong dtype (the metadata does not declare those).
    def f64_state(arrays: dict[str, np.ndarray]) -> None:
        arrays["optim/1/m"] = arrays["optim/1/m"].astype(np.float64)

    path = _rewrite(saved, tmp_path / "f64.npz", arrays=f64_state)
    with pytest.raises(CheckpointError, match=r"state 1 'm' has dtype float64"):
        checkpoint.load(path, model, opt)
    snap.assert_unchanged()


def test_failure_while_applying_rolls_back(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should copying onto the model fail after the optimizer took its state, both revert."""
    model, opt = _fresh()
    snap = Snapshot(model, opt)

    def fail(state: Any) -> None:
        raise ValueError("device out of memory")

    monkeypatch.setattr(model, "load_state_dict", fail)
    with pytest.raises(CheckpointError, match="does not fit: device out of memory"):
        checkpoint.load(saved, model, opt)
    snap.assert_unchanged()

    def interrupt(state: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "load_state_dict", interrupt)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.load(saved, model, opt)
    snap.assert_unchanged()


def test_transfer_failure_changes_nothing(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The copies onto the device (which may run out of memory) precede every change."""
    model, opt = _fresh()
    snap = Snapshot(model, opt)
    monkeypatch.setattr(nb.Backend, "asarray", _failing(MemoryError("out of device memory")))
    with pytest.raises(MemoryError, match="out of device memory"):
        checkpoint.load(saved, model, opt)
    monkeypatch.undo()
    snap.assert_unchanged()


# -------------------------------------------------------------------------------------------
# Files that are not (or no longer) checkpoints


_VERSION = re.escape(nb.__version__)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(meta: dict[str, Any]) -> None:
        meta[key] = value

    return edit


@pytest.mark.parametrize(
    ("header", "arrays", "pattern"),
    [
        (_set("format_version", 3), None,
         rf"format_version 3, written by nnbackend '{_VERSION}'; this nnbackend \({_VERSION}\) "
         r"reads format_version 2 and older: upgrade nnbackend"),
        (_set("format_version", "1"), None, r"format_version must be a positive integer, got '1'"),
        (_set("format_version", 0), None, r"format_version must be a positive integer, got 0"),
        (_set("format", "other-format"), None,
         r"is not an nnbackend checkpoint: format 'other-format'"),
        (_set("parameters", {"0.weight": [8, 4]}), None,
         r"malformed metadata: 'parameters' must be a list"),
        (_set("optimizer", {"type": "Adam"}), None,
         r"malformed metadata: optimizer 'hyperparameters' must be a dict"),
        (lambda m: m["parameters"][0].update(shape=[8, -4]), None,
         r"malformed metadata: parameters\[0\] must be"),
        (lambda m: m["parameters"][1].update(name="0.weight"), None,
         r"malformed metadata: parameter and buffer names repeat"),
        (lambda m: m["parameters"][0].update(shape=[4, 8]), None,
         r"parameter '0\.weight' is declared float32 \(4, 8\) but stored as float32 \(8, 4\)"),
        (None, lambda a: a.update({"model/0.weight": a["model/0.weight"].reshape(4, 8)}),
         r"parameter '0\.weight' is declared float32 \(8, 4\) but stored as float32 \(4, 8\)"),
        (None, lambda a: a.pop("optim/2/v"),
         r"does not hold the arrays its metadata declares; missing \['optim/2/v'\]"),
        (None, lambda a: a.update(extra=np.zeros(3)),
         r"does not hold the arrays its metadata declares; unexpected \['extra'\]"),
        (None, lambda a: a.update(__metadata__=np.array([123], dtype=np.int64)),
         r"'__metadata__' must be a 1-d uint8 array of UTF-8 JSON, got int64"),
        (None, lambda a: a.update(__metadata__=np.frombuffer(b"{\"format\": ", np.uint8)),
         r"its metadata is not valid UTF-8 JSON"),
        (None, lambda a: a.update(__metadata__=np.frombuffer(b"[1, 2]", np.uint8)),
         r"is not an nnbackend checkpoint: its metadata is a JSON list, not an object"),
    ],
    ids=["future-version", "version-str", "version-0", "format", "params-dict", "optim-partial",
         "negative-shape", "repeated-name", "declared-shape", "stored-shape", "missing-array",
         "extra-array", "metadata-int64", "metadata-cut", "metadata-list"],
)
def test_tampered_checkpoint(
    tmp_path: Path, saved: Path, header: Any, arrays: Any, pattern: str
) -> None:
    path = _rewrite(saved, tmp_path / "tampered.npz", header=header, arrays=arrays)
    model, opt = _fresh()
    snap = Snapshot(model, opt)
    with pytest.raises(CheckpointError, match=pattern) as info:
        checkpoint.load(path, model, opt)
    assert "tampered.npz" in str(info.value)
    snap.assert_unchanged()


def test_foreign_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "foreign.npz"
    np.savez(path, weights=rng.standard_normal((8, 4)), bias=rng.standard_normal(8))
    model = _mlp()
    snap = Snapshot(model)
    with pytest.raises(CheckpointError, match=r"foreign\.npz is not an nnbackend checkpoint: it "
                       r"has no '__metadata__' entry \(entries: \['bias', 'weights'\]\)"):
        checkpoint.load(path, model)
    snap.assert_unchanged()


_UNPICKLED: list[str] = []


def _record_unpickling(tag: str) -> None:
    _UNPICKLED.append(tag)


class _Trap:
    """Unpickling this object records that it happened."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _record_unpickling, ("unpickled",)


def test_pickled_entries_are_never_unpickled(tmp_path: Path, saved: Path) -> None:
    def add_object(arrays: dict[str, np.ndarray]) -> None:
        arrays["model/0.bias"] = np.array([_Trap()], dtype=object)

    path = _rewrite(saved, tmp_path / "pickle.npz", arrays=add_object)
    model = _mlp()
    snap = Snapshot(model)
    with pytest.raises(CheckpointError, match=r"'model/0\.bias\.npy' holds Python objects"):
        checkpoint.load(path, model)
    assert _UNPICKLED == []
    snap.assert_unchanged()


def test_other_kinds_of_file(tmp_path: Path, saved: Path) -> None:
    model = _mlp()
    snap = Snapshot(model)
    npy = tmp_path / "single.npy"
    np.save(npy, np.zeros(3))
    text = tmp_path / "notes.zip"
    with zipfile.ZipFile(text, "w") as z:
        z.writestr("notes.txt", "hello")
    wrong_npy = tmp_path / "wrongsize.npz"
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(4))
    with zipfile.ZipFile(wrong_npy, "w") as z:
        z.writestr("__metadata__.npy", buffer.getvalue()[:-8])
    random = tmp_path / "random.bin"
    random.write_bytes(np.random.default_rng(1).bytes(4096))
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    for path, pattern in [
        (npy, "BadZipFile"),
        (text, r"entry 'notes\.txt' is not a \.npy array"),
        (wrong_npy, r"entry '__metadata__\.npy' announces 32 bytes of data and holds 24"),
        (random, "BadZipFile"),
        (empty, "BadZipFile"),
        (tmp_path, "IsADirectoryError|PermissionError"),
    ]:
        with pytest.raises(CheckpointError,
                           match=rf"checkpoint {re.escape(str(path))} cannot be read: {pattern}"):
            checkpoint.load(path, model)
        snap.assert_unchanged()


def test_truncated_files(tmp_path: Path, saved: Path) -> None:
    data = saved.read_bytes()
    model, opt = _fresh()
    snap = Snapshot(model, opt)
    cut = tmp_path / "cut.npz"
    for size in (0, 1, 4, 30, 200, len(data) // 3, len(data) // 2, len(data) - 100,
                 len(data) - 22, len(data) - 1):
        cut.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match=r"cut\.npz cannot be read"):
            checkpoint.load(cut, model, opt)
        snap.assert_unchanged()


# -------------------------------------------------------------------------------------------
# Hostile sizes: a small file whose entries claim (and inflate to) far more than the model


_CLAIMED = 32 * 2**20  # bytes of zeros behind the crafted header; deflated to ~32 kB


def _npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    out = io.BytesIO()
    npy_format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False,
                                            "shape": shape})
    return out.getvalue()


def _bomb(src: Path, dst: Path, entry: str, header: bytes, zeros: int = _CLAIMED) -> Path:
    """``src`` with ``entry`` (added or replaced) holding ``header`` and ``zeros`` zero bytes,
    deflated: what a crafted file looks like (``zeros`` bytes inflate from a few kB)."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED,
                                                      compresslevel=9) as new:
        for info in old.infolist():
            if info.filename != entry:
                new.writestr(info.filename, old.read(info))
        with new.open(entry, "w", force_zip64=True) as out:
            out.write(header)
            chunk = bytes(2**20)
            for start in range(0, zeros, len(chunk)):
                out.write(chunk[: zeros - start])
    return dst


def _peak_bytes(action: Callable[[], object]) -> tuple[int, BaseException | None]:
    """Peak memory traced while ``action`` runs (NumPy reports its buffers to tracemalloc),
    and what it raised."""
    raised: BaseException | None = None
    tracemalloc.start()
    try:
        action()
    except Exception as exc:
        raised = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, raised


_V2_HUGE_HEADER = b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31)


@pytest.mark.parametrize(
    ("entry", "header", "pattern"),
    [
        ("optim/0/m.npy", _npy_header((_CLAIMED // 4,)),
         r"its optimizer state takes 33554840 bytes; for a model of 268 bytes a checkpoint "
         r"holds at most 1050720: refusing to read it"),
        ("model/0.weight.npy", _npy_header((_CLAIMED // 4,)),
         r"parameter '0\.weight' is declared float32 \(8, 4\) but stored as float32"),
        ("__metadata__.npy", _npy_header((_CLAIMED,), "|u1"),
         r"its metadata takes 33554432 bytes; a checkpoint of this model holds at most "
         r"1064960: refusing to read it"),
        ("extra.npy", _npy_header((_CLAIMED // 8,), "<f8"),
         r"does not hold the arrays its metadata declares; unexpected \['extra'\]"),
        ("optim/1/v.npy", _V2_HUGE_HEADER, r"has a \.npy header over 10012 bytes"),
    ],
    ids=["optimizer-state", "parameter", "metadata", "extra-entry", "npy-header-length"],
)
def test_a_crafted_huge_entry_is_refused_without_inflating_it(
    tmp_path: Path, saved: Path, entry: str, header: bytes, pattern: str
) -> None:
    """The issue's reproducer: a small .npz with a hugely compressible entry took 660 MB before
    the error. Sizes now come from the zip directory and the .npy header, before any data."""
    path = _bomb(saved, tmp_path / "bomb.npz", entry, header)
    assert path.stat().st_size < _CLAIMED // 200
    model, opt = _fresh()
    snap = Snapshot(model, opt)
    peak, raised = _peak_bytes(lambda: checkpoint.load(path, model, opt))
    assert isinstance(raised, CheckpointError), raised
    assert re.search(pattern, str(raised)), str(raised)
    assert "bomb.npz" in str(raised)
    assert peak < 2**20, peak  # 32 MiB claimed; the header and zip buffers are all it reads
    snap.assert_unchanged()


def test_metadata_is_limited_by_the_models_size(tmp_path: Path) -> None:
    """Parsed JSON takes up to ~25 times its bytes ('[[], [], ...]'): a model's checkpoint holds
    1 MiB of metadata plus 4 KiB per parameter, refused on save and before parsing on load."""
    model = _mlp()
    limit = 2**20 + 4096 * 4
    lists = json.dumps([[]] * ((limit - 2**16) // 4))  # '[[], [], ...]': 4 bytes a list
    with pytest.raises(ValueError, match=rf"checkpoint\.save: the metadata of .*big\.npz takes "
                       rf"\d+ bytes of JSON; a checkpoint of this model \(4 parameters\) holds "
                       rf"at most {limit}"):
        checkpoint.save(tmp_path / "big.npz", model, history=[lists, lists])
    assert not (tmp_path / "big.npz").exists()
    path = checkpoint.save(tmp_path / "ok.npz", model, lists=json.loads(lists))
    assert len(checkpoint.load(path, model)["lists"]) == len(json.loads(lists))

    def nested(meta: dict[str, Any]) -> None:
        meta["lists"] = [[]] * (limit // 3)

    crafted = _rewrite(path, tmp_path / "crafted.npz", header=nested)
    peak, raised = _peak_bytes(lambda: checkpoint.load(crafted, model))
    assert isinstance(raised, CheckpointError)
    assert f"holds at most {limit}: refusing to read it" in str(raised)
    assert peak < 2 * limit, peak  # the JSON was not parsed (that takes ~25x)
    assert len(checkpoint.read_metadata(crafted)["lists"]) == limit // 3  # within 16 MiB


def test_read_metadata_reads_no_array_data(tmp_path: Path, saved: Path) -> None:
    """read_metadata needs no model, so it reads the headers and the metadata alone."""
    path = _bomb(saved, tmp_path / "bomb.npz", "optim/0/m.npy", _npy_header((_CLAIMED // 4,)))
    peak, raised = _peak_bytes(lambda: checkpoint.read_metadata(path))
    assert raised is None
    assert peak < 2**20, peak
    assert checkpoint.read_metadata(path) == checkpoint.read_metadata(saved)


def test_sizes_come_from_the_zip_directory(tmp_path: Path, saved: Path) -> None:
    """The zip directory's file_size (the most zipfile inflates) must agree with the .npy
    header: a directory that says less than the header announces is refused unread."""
    data = bytearray(saved.read_bytes())
    record = data.find(b"PK\x01\x02")  # the central directory's records
    while record != -1:
        name_len = struct.unpack_from("<H", data, record + 28)[0]
        if data[record + 46 : record + 46 + name_len] == b"model/0.bias.npy":
            break
        record = data.find(b"PK\x01\x02", record + 4)
    # np.savez stores entries uncompressed: the data follows the local header and the name.
    size = struct.unpack_from("<I", data, record + 24)[0]
    local = struct.unpack_from("<I", data, record + 42)[0]
    start = local + 30 + sum(struct.unpack_from("<HH", data, local + 26))
    struct.pack_into("<I", data, record + 24, size - 16)  # file_size
    struct.pack_into("<I", data, record + 16, zlib.crc32(data[start : start + size - 16]))
    path = tmp_path / "lying.npz"
    path.write_bytes(bytes(data))
    model = _mlp(seed=3)
    snap = Snapshot(model)
    with pytest.raises(CheckpointError, match=r"lying\.npz cannot be read: entry "
                                              r"'model/0\.bias\.npy' announces 32 bytes of data "
                                              r"and holds 16"):
        checkpoint.load(path, model)
    snap.assert_unchanged()


@pytest.mark.parametrize("dtype", [np.dtype("S4"), np.dtype("<U2"), np.dtype([("a", "<f4")])],
                         ids=["bytes", "str", "record"])
def test_entries_hold_numbers_only(tmp_path: Path, saved: Path, dtype: np.dtype[Any]) -> None:
    header = io.BytesIO()
    npy_format.write_array_header_1_0(
        header, {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False,
                 "shape": (2,)})
    path = _bomb(saved, tmp_path / "kinds.npz", "model/0.bias.npy", header.getvalue(),
                 zeros=2 * dtype.itemsize)
    with pytest.raises(CheckpointError, match=r"model/0\.bias\.npy' holds .*; checkpoints "
                                              r"hold booleans and numbers only"):
        checkpoint.load(path, _mlp())


# -------------------------------------------------------------------------------------------
# Fuzzing: whatever the bytes, a CheckpointError or (corruption in fields nobody reads) the
# exact saved values; never another exception, never silently wrong values


class Valid(NamedTuple):
    """A valid checkpoint's bytes, a directory to write variants into, and what it holds."""

    data: bytes
    directory: Path
    meta: dict[str, Any]
    model: nb.Sequential
    opt: Adam


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> Valid:
    model = _mlp()
    opt = Adam(model, lr=0.01)
    _train(model, opt, range(2))
    directory = tmp_path_factory.mktemp("fuzz")
    path = checkpoint.save(directory / "valid.npz", model, opt, epoch=2)
    meta = checkpoint.load(path, _mlp(seed=2))
    return Valid(path.read_bytes(), directory, meta, model, opt)


def _load_fuzzed(data: bytes, valid: Valid) -> None:
    path = valid.directory / "fuzzed.npz"
    path.write_bytes(data)
    model, opt = _fresh()
    snap = Snapshot(model, opt)
    try:
        meta = checkpoint.load(path, model, opt)
    except CheckpointError as exc:
        assert "fuzzed.npz" in str(exc)
        snap.assert_unchanged()
        return
    assert meta == valid.meta
    _assert_params_equal(_host(model), _host(valid.model))
    _assert_optim_equal(opt, valid.opt)


def _assert_refused(valid: Valid, name: str, data: bytes) -> None:
    """``data`` written as ``name`` fails to load with a CheckpointError naming the file, and
    leaves the model untouched."""
    path = valid.directory / name
    path.write_bytes(data)
    model = _mlp()
    snap = Snapshot(model)
    with pytest.raises(CheckpointError, match=re.escape(name)):
        checkpoint.load(path, model)
    snap.assert_unchanged()


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=3000))
def test_random_bytes_never_load(valid: Valid, data: bytes) -> None:
    _assert_refused(valid, "random.npz", data)


@settings(max_examples=50, deadline=None)
@given(fraction=st.floats(0.0, 1.0, exclude_max=True))
def test_truncations_never_load(valid: Valid, fraction: float) -> None:
    _assert_refused(valid, "truncated.npz", valid.data[: int(fraction * len(valid.data))])


@settings(max_examples=50, deadline=None)
@given(
    flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 7)),
                   min_size=1, max_size=4),
    keep=st.one_of(st.none(), st.floats(0.5, 1.0, exclude_max=True)),
)
def test_bit_flips_are_caught(
    valid: Valid, flips: list[tuple[float, int]], keep: float | None
) -> None:
    corrupt = bytearray(valid.data)
    for where, bit in flips:
        corrupt[int(where * len(corrupt))] ^= 1 << bit
    if keep is not None:
        corrupt = corrupt[: int(keep * len(corrupt))]
    _load_fuzzed(bytes(corrupt), valid)


def test_flipped_bits_in_the_data_are_caught(valid: Valid) -> None:
    """A flip inside any array's stored bytes fails the zip CRC check (a deterministic sweep)."""
    with zipfile.ZipFile(io.BytesIO(valid.data)) as z:
        infos = z.infolist()
    assert len(infos) == 13
    for info in infos:
        # The stored bytes follow the 30-byte local header, the file name and the extra field.
        name_len, extra_len = struct.unpack_from("<HH", valid.data, info.header_offset + 26)
        start = info.header_offset + 30 + name_len + extra_len
        for offset in (start, start + info.compress_size // 2, start + info.compress_size - 1):
            corrupt = bytearray(valid.data)
            corrupt[offset] ^= 0x10
            path = valid.directory / "flipped.npz"
            path.write_bytes(bytes(corrupt))
            model = _mlp()
            with pytest.raises(CheckpointError, match=r"flipped\.npz"):
                checkpoint.load(path, model, Adam(model))


# -------------------------------------------------------------------------------------------
# Atomic saves


class _Boom(Exception):
    pass


def _partial_savez(file: Any, **arrays: Any) -> None:
    file.write(b"PK\x03\x04 half a checkpoint")
    raise _Boom("disk full while writing")


def _interrupted_savez(file: Any, **arrays: Any) -> None:
    file.write(b"PK\x03\x04")
    raise KeyboardInterrupt


def _failing(exc: BaseException) -> Callable[..., None]:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise exc

    return fail


@pytest.mark.parametrize(
    ("target", "replacement", "raised"),
    [
        (np, ("savez", _partial_savez), _Boom),
        (np, ("savez", _interrupted_savez), KeyboardInterrupt),
        (os, ("fsync", _failing(OSError(5, "Input/output error"))), OSError),
        (os, ("replace", _failing(PermissionError(13, "Permission denied"))), PermissionError),
    ],
    ids=["savez", "interrupt", "fsync", "replace"],
)
@pytest.mark.parametrize("existing", [True, False], ids=["overwrite", "new"])
def test_failed_save_leaves_the_previous_file_and_no_temporaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: Any,
    replacement: tuple[str, Callable[..., None]], raised: type[BaseException], existing: bool,
) -> None:
    model, opt = _fresh()
    path = tmp_path / "ckpt.npz"
    if existing:
        checkpoint.save(path, _mlp(), epoch=1)
    before = path.read_bytes() if existing else None
    with monkeypatch.context() as patch:
        patch.setattr(target, *replacement)
        with pytest.raises(raised):
            checkpoint.save(path, model, opt, epoch=2)
    assert os.listdir(tmp_path) == (["ckpt.npz"] if existing else [])
    if existing:
        assert path.read_bytes() == before
        assert checkpoint.load(path, _mlp(seed=8))["epoch"] == 1
    checkpoint.save(path, model, opt, epoch=3)  # and the next save works
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    assert checkpoint.load(path, _mlp(seed=8))["epoch"] == 3


def _cycle() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize(
    ("metadata", "pattern"),
    [
        ({"epoch": object()},
         r"checkpoint metadata 'epoch' must be JSON-serialisable .*got object"),
        ({"epoch": 1, "loss": np.float32(0.5)},
         r"checkpoint metadata 'loss' must be JSON-serialisable .*got float32"),
        ({"history": {"loss": {1.0, 2.0}}}, r"'history' must be JSON-serialisable .*got dict"),
        ({"data": b"bytes"}, r"'data' must be JSON-serialisable .*got bytes"),
        ({"loop": _cycle()}, r"'loop' must be JSON-serialisable .*Circular reference"),
        ({"format": "mine"}, r"checkpoint metadata 'format' is reserved"),
        ({"epoch": 1, "parameters": []}, r"checkpoint metadata 'parameters' is reserved"),
    ],
    ids=["object", "numpy-scalar", "set", "bytes", "cycle", "format", "parameters"],
)
def test_bad_metadata_is_refused_before_writing(
    tmp_path: Path, trained: tuple[nb.Sequential, Adam], metadata: dict[str, Any], pattern: str
) -> None:
    model, opt = trained
    path = checkpoint.save(tmp_path / "ckpt.npz", model, opt, epoch=1)
    before = path.read_bytes()
    with pytest.raises(TypeError, match=pattern):
        checkpoint.save(path, model, opt, **metadata)
    with pytest.raises(TypeError, match=pattern):
        checkpoint.save(tmp_path / "new.npz", model, opt, **metadata)
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    assert path.read_bytes() == before


def test_read_metadata_needs_no_model(tmp_path: Path) -> None:
    model = nb.Sequential(nb.Linear(3, 2, seed=0))
    target = tmp_path / "m.npz"
    checkpoint.save(target, model, epoch=3)
    meta = checkpoint.read_metadata(target)
    assert meta == checkpoint.load(target, nb.Sequential(nb.Linear(3, 2, seed=1)))
    assert meta["epoch"] == 3
    target.write_bytes(b"not a checkpoint")
    with pytest.raises(nb.CheckpointError, match=r"m\.npz"):
        checkpoint.read_metadata(target)
    with pytest.raises(FileNotFoundError):
        checkpoint.read_metadata(tmp_path / "missing.npz")


# -------------------------------------------------------------------------------------------
# Format 2: buffers, extra state and the model's description


class Tracker(nb.Module):
    """y = x ⊙ w + μ: a parameter w, a persistent buffer μ (a running mean of the inputs, as
    batch normalisation keeps), a non-persistent buffer, and extra state (a call counter)."""

    def __init__(self, n: int, *, momentum: float = 0.5, counts: bool = True, dtype: Any = None,
                 backend: Any = None) -> None:
        super().__init__()
        be = nb.get_backend(backend)
        dt = be.dtype(dtype)
        self.n, self.momentum, self.counts = n, momentum, counts
        self.weight = nb.Parameter(be.asarray(np.linspace(0.5, 1.5, n), dtype=dt))
        self.register_buffer("running_mean", be.zeros((n,), dtype=dt))
        self.register_buffer("scratch", be.zeros((n,), dtype=dt), persistent=False)
        self.calls = 0
        self.history: list[Any] = []

    def forward_pass(self, x: Any, ctx: nb.layers.Context) -> tuple[Any, Any]:
        w, shift = self.weight.data, self.running_mean
        m = self.momentum  # μ ← (1 − m) μ + m mean(x), after it was used
        self.running_mean = shift * (1.0 - m) + ctx.xp.mean(x, axis=0) * m
        self.calls += 1
        self.history.append(self.calls)

        def backprop(dy: Any) -> Any:
            self.weight.accumulate_grad(ctx.xp.sum(dy * x, axis=0))
            return dy * w

        return x * w + shift, backprop

    def infer(self, x: Any, ctx: nb.layers.Context) -> Any:
        return x * self.weight.data + self.running_mean

    def get_extra_state(self) -> dict[str, Any] | None:
        return {"calls": self.calls, "history": list(self.history)} if self.counts else None

    def set_extra_state(self, state: Any) -> None:
        calls = state.get("calls")
        if not isinstance(calls, int) or isinstance(calls, bool) or calls < 0:
            msg = f"Tracker: calls must be a non-negative integer, got {calls!r}"
            raise ValueError(msg)
        self.calls, self.history = calls, list(state["history"])

    def config(self) -> dict[str, Any]:
        return {"n": self.n, "momentum": self.momentum, "counts": self.counts,
                "dtype": dtype_name(self.weight.dtype)}


def _tracked(*, seed: int = 0, backend: Any = "numpy", dtype: str = "float32",
             counts: bool = True) -> nb.Sequential:
    return nb.Sequential(nb.Linear(4, 5, seed=seed, backend=backend, dtype=dtype),
                         Tracker(5, counts=counts, backend=backend, dtype=dtype),
                         nb.Linear(5, 3, seed=seed + 1, backend=backend, dtype=dtype))


def _extra(model: nb.Module) -> dict[str, Any]:
    return json.loads(json.dumps(model.extra_state_dict()))


def _scratch(model: nb.Module) -> np.ndarray:
    return nb.to_numpy(model.layers[1].scratch).copy()  # type: ignore[attr-defined]


class FullSnapshot(Snapshot):
    """A Snapshot that also holds the buffers (identities and values) and the extra state."""

    def __init__(self, model: nb.Module, opt: Optimizer | None = None) -> None:
        super().__init__(model, opt)
        self.buffers = list(model.named_buffers())
        self.buffer_values = {name: nb.to_numpy(b).copy() for name, b in self.buffers}
        self.extra = _extra(model)

    def assert_unchanged(self) -> None:
        super().assert_unchanged()
        now = dict(self.model.named_buffers())
        for name, ref in self.buffers:
            assert now[name] is ref, name
            np.testing.assert_array_equal(nb.to_numpy(ref), self.buffer_values[name])
        assert _extra(self.model) == self.extra


@pytest.fixture
def tracked(tmp_path: Path) -> tuple[Path, nb.Sequential, Adam]:
    """A NumPy model with a buffer and extra state after three steps, and its checkpoint."""
    model = _tracked()
    opt = Adam(model, lr=0.01)
    _train(model, opt, range(3))
    return checkpoint.save(tmp_path / "tracked.npz", model, opt, epoch=3), model, opt


def test_buffers_and_extra_state_round_trip_bit_identically(tmp_path: Path, case: Case) -> None:
    model = _tracked(backend=case.backend, dtype=case.dtype_name)
    opt = Adam(model, lr=0.01)
    _train(model, opt, range(3))
    path = checkpoint.save(tmp_path / "ckpt.npz", model, opt, epoch=3)

    with np.load(path, allow_pickle=False) as f:
        assert {k for k in f.files if k.startswith("model/")} == {
            f"model/{name}" for name in
            ("0.weight", "0.bias", "1.weight", "1.running_mean", "2.weight", "2.bias")}
        np.testing.assert_array_equal(f["model/1.running_mean"],
                                      nb.to_numpy(model.layers[1].running_mean))  # type: ignore[attr-defined]
    meta = checkpoint.read_metadata(path)
    assert meta["buffers"] == [{"name": "1.running_mean", "shape": [5],
                                "dtype": case.dtype_name}]
    assert meta["extra_state"] == {"1": {"calls": 3, "history": [1, 2, 3]}}

    target = _tracked(seed=20, backend=case.backend, dtype=case.dtype_name)
    opt2 = Adam(target, lr=0.2)
    _train(target, opt2, range(10, 11))  # a buffer and a counter of its own
    target.layers[1].scratch = case.asarray(np.full(5, 7.0))  # type: ignore[attr-defined]
    checkpoint.load(path, target, opt2)
    _assert_params_equal(_host(target), _host(model))  # parameters and buffers
    assert _extra(target) == _extra(model)
    np.testing.assert_array_equal(_scratch(target), np.full(5, 7.0))  # not persistent
    for _, b in target.named_buffers():
        case.check_placement(b)

    rebuilt, meta2 = checkpoint.load_model(path, backend=case.backend, allow_classes=[Tracker])
    assert meta2 == meta
    assert repr(rebuilt) == repr(model)
    _assert_params_equal(_host(rebuilt), _host(model))
    assert _extra(rebuilt) == _extra(model)
    for _, a in rebuilt.state_dict().items():
        case.check_placement(a)
    x = case.asarray(_batch(5)[0])
    np.testing.assert_array_equal(nb.to_numpy(rebuilt(x)), nb.to_numpy(model(x)))

    # The saved run and the restored one continue in lockstep, buffers and counters too.
    _train(model, opt, range(3, 5))
    _train(target, opt2, range(3, 5))
    _assert_params_equal(_host(target), _host(model))
    _assert_optim_equal(opt2, opt)
    assert _extra(target) == _extra(model) == {"1": {"calls": 5, "history": [1, 2, 3, 4, 5]}}


def test_a_rebuilt_model_with_dropout_continues_with_the_same_masks(tmp_path: Path,
                                                                     case: Case) -> None:
    """Dropout's stream position is extra state: a model rebuilt from the file alone draws the
    masks the saved one draws next."""
    def build_model() -> nb.Sequential:
        return nb.Sequential(nb.Linear(4, 16, seed=0, backend=case.backend,
                                       dtype=case.dtype_name),
                             nb.Dropout(0.5, seed=3), nb.ReLU(),
                             nb.Linear(16, 3, seed=1, backend=case.backend, dtype=case.dtype_name))

    model = build_model()
    opt = SGD(model, lr=0.1, momentum=0.9)
    _train(model, opt, range(2))
    path = checkpoint.save(tmp_path / "dropout.npz", model, opt)
    assert checkpoint.read_metadata(path)["extra_state"] == {"1": model.layers[1].get_extra_state()}
    rebuilt, _ = checkpoint.load_model(path, backend=case.backend)
    opt2 = SGD(rebuilt, lr=0.5)
    checkpoint.load(path, rebuilt, opt2)
    _train(model, opt, range(2, 5))
    _train(rebuilt, opt2, range(2, 5))
    _assert_params_equal(_host(rebuilt), _host(model))
    assert rebuilt.extra_state_dict() == model.extra_state_dict()
    fresh = build_model()  # without the stream's position, other masks: the test can fail
    opt3 = SGD(fresh, lr=0.5)
    checkpoint.load(path, fresh, opt3)
    fresh.layers[1].set_extra_state(build_model().layers[1].get_extra_state())
    _train(fresh, opt3, range(2, 5))
    assert not np.array_equal(nb.to_numpy(fresh.layers[0].weight.data),
                              nb.to_numpy(model.layers[0].weight.data))


def test_load_model_rebuilds_the_model_from_the_file_alone(saved: Path,
                                                           trained: tuple[nb.Sequential, Adam]
                                                           ) -> None:
    model, meta = checkpoint.load_model(saved)
    assert meta == checkpoint.read_metadata(saved)
    assert meta["model"] == nb.layers.describe(trained[0])
    assert repr(model) == repr(trained[0])
    assert model.backend == nb.get_backend()
    _assert_params_equal(_host(model), _host(trained[0]))
    opt = Adam(model, lr=0.5)
    checkpoint.load(saved, model, opt)  # and its optimizer afterwards
    _assert_optim_equal(opt, trained[1])
    with nb.use_backend("array_api_strict") as be:
        assert checkpoint.load_model(saved)[0].backend == be


def test_a_model_that_cannot_be_described_saves_without_a_description(tmp_path: Path) -> None:
    class Opaque(nb.Module):  # no config()
        def __init__(self) -> None:
            super().__init__()
            self.weight = nb.Parameter(nb.get_backend("numpy").asarray(np.ones(3)))

    model = nb.Sequential(Opaque())
    path = checkpoint.save(tmp_path / "opaque.npz", model, epoch=1)
    assert checkpoint.read_metadata(path)["model"] is None
    assert checkpoint.load(path, nb.Sequential(Opaque()))["epoch"] == 1
    with pytest.raises(CheckpointError, match=r"opaque\.npz records no model description \(it "
                       r"was saved from a model with a layer that cannot be described"):
        checkpoint.load_model(path)


def test_extra_state_must_be_for_the_modules_that_have_some(
    tmp_path: Path, tracked: tuple[Path, nb.Sequential, Adam]
) -> None:
    path = tracked[0]
    without = _tracked(seed=9, counts=False)
    snap = FullSnapshot(without)
    with pytest.raises(CheckpointError, match=r"tracked\.npz does not match the model: it holds "
                       r"the extra state of other modules than those that have some; "
                       r"unexpected \['1'\]"):
        checkpoint.load(path, without)
    snap.assert_unchanged()
    other = checkpoint.save(tmp_path / "without.npz", without)
    model = _tracked(seed=9)
    snap = FullSnapshot(model)
    with pytest.raises(CheckpointError, match=r"extra state of other modules .*; missing \['1'\]"):
        checkpoint.load(other, model)
    snap.assert_unchanged()


def test_a_module_refusing_its_extra_state_changes_nothing(
    tmp_path: Path, tracked: tuple[Path, nb.Sequential, Adam]
) -> None:
    def bad_calls(meta: dict[str, Any]) -> None:
        meta["extra_state"]["1"]["calls"] = -1

    path = _rewrite(tracked[0], tmp_path / "bad-calls.npz", header=bad_calls)
    model = _tracked(seed=9)
    opt = Adam(model, lr=0.3)
    _train(model, opt, range(1))
    snap = FullSnapshot(model, opt)
    with pytest.raises(CheckpointError, match=r"bad-calls\.npz does not fit: Tracker: calls must "
                                              r"be a non-negative integer, got -1"):
        checkpoint.load(path, model, opt)
    snap.assert_unchanged()


def test_a_failure_after_the_extra_state_puts_it_back(
    tracked: tuple[Path, nb.Sequential, Adam], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _tracked(seed=9)
    opt = Adam(model, lr=0.3)
    _train(model, opt, range(2))
    snap = FullSnapshot(model, opt)

    def fail(state: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "load_state_dict", fail)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.load(tracked[0], model, opt)
    snap.assert_unchanged()


def test_extra_state_that_is_not_json_is_refused_before_writing(tmp_path: Path) -> None:
    model = _tracked()
    model.layers[1].history = [1, np.int64(2)]  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match=r"checkpoint\.save: the extra state of module '1' "
                       r"\(Tracker\) must be JSON .*: \['history'\]\[1\] is a int64"):
        checkpoint.save(tmp_path / "ckpt.npz", model)
    model.layers[1].history = [{3: "x"}]  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match=r"\['history'\]\[0\] has the key 3, not a string"):
        checkpoint.save(tmp_path / "ckpt.npz", model)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["buffers", "extra_state"])
def test_the_new_metadata_names_are_reserved(tmp_path: Path, name: str) -> None:
    with pytest.raises(TypeError, match=rf"checkpoint metadata '{name}' is reserved"):
        checkpoint.save(tmp_path / "ckpt.npz", _mlp(), **{name: 1})


@pytest.mark.parametrize(
    ("header", "pattern"),
    [
        (_set("buffers", {"1.running_mean": [5]}), r"malformed metadata: 'buffers' must be a list"),
        (lambda m: m["buffers"][0].update(shape=[-5]),
         r"malformed metadata: buffers\[0\] must be \{'name': str"),
        (lambda m: m["buffers"][0].update(name="1.weight"),
         r"malformed metadata: parameter and buffer names repeat"),
        (lambda m: m["buffers"][0].update(shape=[6]),
         r"buffer '1\.running_mean' is declared float32 \(6,\) but stored as float32 \(5,\)"),
        (lambda m: m["buffers"].clear(),
         r"does not hold the arrays its metadata declares; unexpected \['model/1\.running_mean'\]"),
        (_set("extra_state", [1]), r"malformed metadata: 'extra_state' must be a dict of module"),
        (_set("extra_state", {"1": 3}), r"malformed metadata: 'extra_state' must be a dict"),
        (_set("model", ["Sequential"]), r"malformed metadata: 'model' must be null or a model"),
    ],
    ids=["buffers-dict", "buffer-shape", "buffer-name", "buffer-declared", "buffer-undeclared",
         "extra-list", "extra-entry", "model-list"],
)
def test_tampered_format_2_entries(
    tmp_path: Path, tracked: tuple[Path, nb.Sequential, Adam], header: Any, pattern: str
) -> None:
    path = _rewrite(tracked[0], tmp_path / "tampered.npz", header=header)
    model = _tracked(seed=9)
    snap = FullSnapshot(model)
    with pytest.raises(CheckpointError, match=pattern):
        checkpoint.load(path, model)
    snap.assert_unchanged()
    with pytest.raises(CheckpointError, match=pattern):
        checkpoint.load_model(path, allow_classes=[Tracker])


def test_a_crafted_huge_buffer_is_refused_without_inflating_it(
    tmp_path: Path, tracked: tuple[Path, nb.Sequential, Adam]
) -> None:
    path = _bomb(tracked[0], tmp_path / "bomb.npz", "model/1.running_mean.npy",
                 _npy_header((_CLAIMED // 4,)))
    model, opt = _tracked(seed=9), None
    snap = FullSnapshot(model)
    pattern = r"buffer '1\.running_mean' is declared float32 \(5,\) but stored as float32"
    for action in (lambda: checkpoint.load(path, model, opt),
                   lambda: checkpoint.load_model(path, allow_classes=[Tracker])):
        peak, raised = _peak_bytes(action)
        assert isinstance(raised, CheckpointError), raised
        assert re.search(pattern, str(raised)), str(raised)
        assert peak < 2**20, peak
    snap.assert_unchanged()


def test_load_model_refuses_arrays_larger_than_the_file(tmp_path: Path, saved: Path) -> None:
    """Without a model to measure against, a small file whose declared (and consistent) arrays
    inflate to far more than its size is refused before anything is read or built."""
    rows = _CLAIMED // 16

    def huge(meta: dict[str, Any]) -> None:
        meta["parameters"][0]["shape"] = [rows, 4]

    declared = _rewrite(saved, tmp_path / "declared.npz", header=huge)
    path = _bomb(declared, tmp_path / "bomb.npz", "model/0.weight.npy", _npy_header((rows, 4)))
    assert path.stat().st_size < _CLAIMED // 200
    peak, raised = _peak_bytes(lambda: checkpoint.load_model(path))
    assert isinstance(raised, CheckpointError), raised
    assert re.search(rf"bomb\.npz: its model's arrays take {_CLAIMED + 140} bytes, more than the "
                     rf"file's {path.stat().st_size} \(a checkpoint stores them uncompressed\): "
                     r"refusing to read it", str(raised)), str(raised)
    assert peak < 2**20, peak


def test_load_model_refuses_a_description_larger_than_the_file(tmp_path: Path,
                                                               saved: Path) -> None:
    """A description of a huge model beside small arrays is refused from the layers' arguments,
    before any layer is built."""
    def huge(meta: dict[str, Any]) -> None:
        first = meta["model"]["config"]["layers"][0]["config"]
        first.update(in_features=4, out_features=100_000)
        meta["model"]["config"]["layers"][2]["config"]["in_features"] = 100_000

    path = _rewrite(saved, tmp_path / "huge.npz", header=huge)
    peak, raised = _peak_bytes(lambda: checkpoint.load_model(path))
    assert isinstance(raised, CheckpointError), raised
    assert re.search(r"huge\.npz: cannot rebuild its model: model description: model: its "
                     r"layers would allocate 800003 array elements \(from their arguments\), "
                     r"more than the 67 allowed", str(raised)), str(raised)
    assert peak < 2**20, peak


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda d: d["config"]["layers"][0]["config"].update(bias=False),
         r"does not match the model: Sequential: state dict does not match the module's "
         r"parameters; unexpected \['0\.bias'\]"),
        (lambda d: d["config"]["layers"][1].update(type="Swish"),
         r"cannot rebuild its model: model description: model\.layers\[1\]: unknown layer kind "
         r"'Swish'"),
        (lambda d: d["config"]["layers"][1].update(type="os:system"),
         r"cannot rebuild its model: .*names the class 'os:system', which is not in "
         r"allow_classes"),
        (lambda d: d["config"]["layers"][2]["config"].update(out_features="3"),
         r"cannot rebuild its model: .*model\.layers\[2\] \(Linear\): Linear refused its "
         r"arguments: Linear: out_features must be a positive integer, got '3'"),
        (lambda d: d.update(type="Sequential", config={"layers": []}),
         r"does not match the model: .*unexpected \['0\.bias', '0\.weight', '2\.bias', "
         r"'2\.weight'\]"),
    ],
    ids=["other-model", "unknown-kind", "class-not-allowed", "bad-argument", "empty"],
)
def test_load_model_refuses_a_tampered_description(
    tmp_path: Path, saved: Path, edit: Callable[[dict[str, Any]], None], pattern: str
) -> None:
    path = _rewrite(saved, tmp_path / "tampered.npz", header=lambda m: edit(m["model"]))
    with pytest.raises(CheckpointError, match=rf"tampered\.npz.*{pattern}"):
        checkpoint.load_model(path)


def test_a_user_layer_in_a_checkpoint_is_rebuilt_only_when_allowed(
    tracked: tuple[Path, nb.Sequential, Adam]
) -> None:
    path, model, _ = tracked
    with pytest.raises(CheckpointError, match=rf"cannot rebuild its model: model description: "
                       rf"model\.layers\[1\]: names the class '{Tracker.__module__}:Tracker', "
                       r"which is not in allow_classes"):
        checkpoint.load_model(path)
    rebuilt, _ = checkpoint.load_model(path, allow_classes=[f"{Tracker.__module__}:Tracker"])
    _assert_params_equal(_host(rebuilt), _host(model))


# -------------------------------------------------------------------------------------------
# Format 1: the files nnbackend wrote before the description, buffers and extra state

_V1_FILE = Path(__file__).parent / "data" / "checkpoint-v1.npz"
_V1_SHA256 = "c2f38545bccf0075b8a1505747b3186f5c082247c2d4ef1d7b61f5750611a6f4"
# The order in which format 1 wrote its reserved metadata (user metadata followed).
_V1_KEYS = ["format", "format_version", "library_version", "backend", "device", "architecture",
            "parameters", "optimizer"]


def _as_version_1(src: Path, dst: Path) -> Path:
    """``src`` (format 2, a model without buffers or extra state) as format 1 wrote it: the
    same arrays, the metadata without 'model', 'buffers' and 'extra_state', in its order."""
    def old(meta: dict[str, Any]) -> None:
        assert meta.pop("buffers") == [] and meta.pop("extra_state") == {}
        del meta["model"]
        meta["format_version"] = 1
        reordered = {key: meta.pop(key) for key in _V1_KEYS} | meta
        meta.clear()
        meta.update(reordered)

    return _rewrite(src, dst, header=old)


def test_a_version_1_file_written_by_the_old_code_loads() -> None:
    """tests/data/checkpoint-v1.npz was written by checkpoint.save of format 1 (commit e1207f0):
    a 4-8-3 ReLU MLP after three Adam steps."""
    assert hashlib.sha256(_V1_FILE.read_bytes()).hexdigest() == _V1_SHA256  # byte for byte
    with np.load(_V1_FILE, allow_pickle=False) as f:
        stored = {k: f[k] for k in f.files}
    written = json.loads(stored["__metadata__"].tobytes())
    assert list(written)[: len(_V1_KEYS)] == _V1_KEYS

    model, opt = _fresh()
    meta = checkpoint.load(_V1_FILE, model, opt)
    assert meta == written
    assert (meta["format_version"], meta["epoch"], meta["dataset"]) == (1, 3, "blobs")
    _assert_params_equal(_host(model), {k[len("model/"):]: v for k, v in stored.items()
                                        if k.startswith("model/")})
    for i, state in enumerate(opt.state):
        assert state["step"] == 3
        for key in ("m", "v"):
            np.testing.assert_array_equal(nb.to_numpy(state[key]), stored[f"optim/{i}/{key}"])
    assert checkpoint.read_metadata(_V1_FILE) == written
    _train(model, opt, range(3, 5))  # and training continues from it
    with pytest.raises(CheckpointError, match=r"checkpoint-v1\.npz has format_version 1, which "
                       r"records no model description: build the model in code and use "
                       r"checkpoint\.load\(path, model\)"):
        checkpoint.load_model(_V1_FILE)


def test_version_1_as_written_then_resumes_exactly(
    tmp_path: Path, saved: Path, trained: tuple[nb.Sequential, Adam]
) -> None:
    path = _as_version_1(saved, tmp_path / "v1.npz")
    with np.load(path, allow_pickle=False) as f, np.load(_V1_FILE, allow_pickle=False) as g:
        assert f.files == g.files  # the entries, in the order format 1 wrote them
        assert list(json.loads(f["__metadata__"].tobytes())) == [*_V1_KEYS, "epoch"]
        assert list(json.loads(g["__metadata__"].tobytes()))[: len(_V1_KEYS)] == _V1_KEYS
    model, opt = _fresh()
    assert checkpoint.load(path, model, opt)["format_version"] == 1
    original, original_opt = trained
    _train(original, original_opt, range(3, 5))
    _train(model, opt, range(3, 5))
    _assert_params_equal(_host(model), _host(original))
    _assert_optim_equal(opt, original_opt)


def test_version_1_user_metadata_may_use_the_new_names(tmp_path: Path, saved: Path) -> None:
    """Format 1 let users call their metadata 'buffers' or 'extra_state'; it is theirs there."""
    def named(meta: dict[str, Any]) -> None:
        meta.update(buffers="many", extra_state=[1, 2])

    path = _rewrite(_as_version_1(saved, tmp_path / "v1.npz"), tmp_path / "named.npz",
                    header=named)
    meta = checkpoint.load(path, _mlp(seed=5))
    assert (meta["buffers"], meta["extra_state"]) == ("many", [1, 2])


def test_a_version_1_file_does_not_fill_a_model_with_buffers(tmp_path: Path) -> None:
    model = _tracked(seed=9)
    snap = FullSnapshot(model)
    with pytest.raises(CheckpointError, match=r"does not match the model: .*missing "
                       r"\['1\.running_mean', '1\.weight'\]"):
        checkpoint.load(_V1_FILE, model)
    snap.assert_unchanged()
