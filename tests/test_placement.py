"""Where arrays go: batches, moved models, optimizer buffers and loaded checkpoints stay on the
backend's device. These run on every row and on PyTorch's ``meta`` device, whose tensors have
shapes and dtypes but no values (so a host copy made by mistake would fail there: the host
cannot alias a meta tensor)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb


def _is_on(x: Any, case: Any, dtype: str) -> None:
    case.check_placement(x, dtype=dtype)


def _host_model() -> nb.Sequential:
    return nb.Sequential(nb.Linear(4, 5, seed=0), nb.ReLU(), nb.Linear(5, 3, seed=1),
                         backend="numpy")


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_of_host_data_are_on_the_device(placement: Any, shuffle: bool) -> None:
    data = nb.batches(np.ones((5, 4), np.float32), np.arange(5) % 3, batch_size=2,
                      shuffle=shuffle, seed=0, backend=placement.backend)
    shapes = []
    for xb, yb in data:
        _is_on(xb, placement, "float32")
        _is_on(yb, placement, placement.index_dtype_name)
        shapes.append((tuple(xb.shape), tuple(yb.shape)))
    assert shapes == [((2, 4), (2,)), ((2, 4), (2,)), ((1, 4), (1,))]


def test_a_moved_model_trains_on_the_device_with_flat_buffers(placement: Any) -> None:
    model = _host_model().to(placement.backend)
    for p in model.parameters():
        _is_on(p.data, placement, "float32")
    opt = nb.Adam(model.parameters(), lr=1e-3)
    xb, yb = next(iter(nb.batches(np.ones((4, 4), np.float32), np.arange(4) % 3, batch_size=4,
                                  seed=0, backend=placement.backend)))
    for _ in range(2):
        y, backprop = model.forward(xb)
        loss, dy = nb.CrossEntropyLoss()(y, yb)
        opt.zero_grad()
        backprop(dy)
        opt.step()
    _is_on(loss, placement, "float32")
    for p in model.parameters():
        _is_on(p.data, placement, "float32")
        _is_on(p.grad, placement, "float32")
    views = nb.backend.supports_views(placement.xp)
    assert opt.path_stats.flat == (2 if views else 0)
    assert not opt.path_stats.fallbacks


def test_a_checkpoint_loads_onto_the_device(placement: Any, tmp_path: Path) -> None:
    path = tmp_path / "host.npz"
    host = _host_model()
    nb.checkpoint.save(path, host, nb.Adam(host.parameters(), lr=1e-3), epoch=3)
    model = _host_model().to(placement.backend)
    opt = nb.Adam(model.parameters(), lr=1e-3)
    meta = nb.checkpoint.load(path, model, opt)
    assert meta["epoch"] == 3
    for p in model.parameters():
        _is_on(p.data, placement, "float32")


def test_moving_back_to_numpy_gives_writable_parameters(case: Any, tmp_path: Path) -> None:
    # issue 8, defect 8: JAX's host views are read-only; every later write must still work
    model = _host_model().to(case.backend).to("numpy")
    for p in model.parameters():
        assert isinstance(p.data, np.ndarray) and p.data.flags.writeable
    state = {name: np.full(p.shape, 0.5, np.float32) for name, p in model.named_parameters()}
    model.load_state_dict(state)
    opt = nb.SGD(model.parameters(), lr=0.1)
    nb.checkpoint.save(tmp_path / "c.npz", model, opt)
    nb.checkpoint.load(tmp_path / "c.npz", model, opt)
    y, backprop = model.forward(np.ones((2, 4), np.float32))
    opt.zero_grad()
    backprop(np.ones_like(y))
    opt.step()
    assert model[0].weight.data[0, 0] != 0.5
