"""Convolutions (functional and layers) against PyTorch autograd in float64, on every backend.

Forward values, ∂L/∂x, ∂L/∂W and ∂L/∂b for a table of conv2d and conv1d cases (kernels 1–5,
strides 1–3, padding 0/1/tuple/"same" (odd and even kernels)/"valid", dilation 1–2, groups
1/2/depthwise, no bias, odd sizes, batch 1, unbatched inputs), every way of computing ∂L/∂x
(col2im, strided or in whole rows, and the flipped-kernel convolution), products over every
chunk of samples, the reused workspace (also with two forwards in flight), finite differences
for each layer, no host reads on the GPU-like device, the first
convolution of a network computing no ∂L/∂x, torch.nn state dicts and reprs, descriptions, and
bad arguments and inputs refused with messages naming the function or layer and the shapes.
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import pytest
import threadpoolctl
import torch
import torch.nn.functional as TF

import nnbackend as nb
from nnbackend import functional as F
from nnbackend.functional import conv as C
from nnbackend.testing import count_host_reads

# (input shape, weight shape, keyword arguments of conv2d/conv1d, with bias)
CASES: dict[str, tuple[tuple[int, ...], tuple[int, ...], dict[str, Any], bool]] = {
    "k1": ((2, 3, 5, 6), (4, 3, 1, 1), {}, True),
    "k1-s2-p1": ((2, 3, 5, 6), (4, 3, 1, 1), {"stride": 2, "padding": 1}, True),
    "k2-s2-odd-nobias": ((2, 3, 7, 9), (4, 3, 2, 2), {"stride": 2}, False),
    "k3-p1-flip": ((2, 3, 7, 7), (3, 3, 3, 3), {"padding": 1}, True),
    "k3-p1-col2im": ((2, 3, 7, 7), (5, 3, 3, 3), {"padding": 1}, True),
    "k4x2-same-even": ((2, 3, 7, 8), (3, 3, 4, 2), {"padding": "same"}, True),
    "k5-valid-batch1": ((1, 2, 9, 8), (3, 2, 5, 5), {"padding": "valid"}, True),
    "k3-s3-tuple-pad": ((2, 2, 11, 10), (3, 2, 3, 3), {"stride": 3, "padding": (2, 1)}, True),
    "k3-d2-same": ((2, 3, 9, 9), (3, 3, 3, 3), {"padding": 2, "dilation": 2}, False),
    "k2x3-d21-s12": ((2, 2, 9, 10), (3, 2, 2, 3),
                     {"stride": (1, 2), "padding": (1, 0), "dilation": (2, 1)}, True),
    "groups2": ((2, 4, 7, 6), (6, 2, 3, 3), {"padding": 1, "groups": 2}, True),
    "depthwise-mult2-same": ((2, 4, 7, 6), (8, 1, 3, 3), {"padding": "same", "groups": 4}, True),
    "depthwise-flip": ((2, 4, 6, 6), (4, 1, 3, 3), {"padding": 1, "groups": 4}, False),
    "unbatched": ((3, 6, 5), (2, 3, 2, 3), {"stride": (2, 1)}, True),
    "1d-k3-s2-p1": ((2, 3, 11), (4, 3, 3), {"stride": 2, "padding": 1}, True),
    "1d-k4-same-d2-groups2": ((2, 4, 10), (4, 2, 4), {"padding": "same", "dilation": 2,
                                                      "groups": 2}, True),
    "1d-k5-unbatched": ((3, 12), (2, 3, 5), {}, False),
}


# Every case runs on the rows whose code paths differ most (NumPy's native windows, PyTorch's
# views, the GPU-like device's CuPy paths); the float32 rows and array-api-strict's devices
# (view-less stacking) run a few that cover every path (col2im with strides and padding, in
# whole rows, the flipped kernel with groups, a 1-D convolution, an even kernel with "same"
# padding); JAX, which compiles each kernel once per shape (~0.3 s under load), runs the three
# ways of computing ∂L/∂x and a 1-D convolution, and the layer tests on the same shapes.
FULL_ROWS = ("numpy-float64", "torch-cpu", "gpulike-float64")
FEW = ("k1", "k3-s3-tuple-pad", "k4x2-same-even", "depthwise-flip", "1d-k3-s2-p1")
FEW_JAX = ("k3-s3-tuple-pad", "depthwise-mult2-same", "1d-k3-s2-p1")
JAX_SKIP = "the table's JAX cases cover this math (each new shape compiles anew)"


def _row(case: Any) -> str:
    """The backend row of the case (its id also names the test's other parameters)."""
    return next(row for row in (*FULL_ROWS, "numpy-float32", "strict-CPU_DEVICE", "strict-device1",
                                "strict-no_float64", "jax-cpu", "gpulike-float32",
                                "torch-cuda", "cupy-float32", "cupy-float64")
                if case.id.startswith(row))


def _skip_unless_covered(case: Any, name: str) -> None:
    """Skip a table entry that this row leaves to the full table's rows (see above)."""
    row = _row(case)
    few = FEW_JAX if row == "jax-cpu" else FEW
    if row not in FULL_ROWS and name not in few:
        pytest.skip(f"{row} runs a subset of the table: {few}")


def _skip_jax(case: Any, why: str) -> None:
    if _row(case) == "jax-cpu":
        pytest.skip(f"JAX: {why}")


def _spatial(weight_shape: tuple[int, ...]) -> int:
    return len(weight_shape) - 2


def _torch_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, dy: np.ndarray | None,
                **kwargs: Any) -> tuple[np.ndarray, ...]:
    """PyTorch's y and, for the cotangent dy, (∂L/∂x, ∂L/∂W, ∂L/∂b) in float64."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    bt = None if b is None else torch.tensor(b, dtype=torch.float64, requires_grad=True)
    fn = TF.conv2d if w.ndim == 4 else TF.conv1d
    with warnings.catch_warnings():  # PyTorch warns (once) that it pads a copy for an even kernel
        warnings.filterwarnings("ignore", message=".*padding='same' with even kernel")
        yt = fn(xt, wt, bt, **kwargs)
    if dy is None:
        return (yt.detach().numpy(),)
    inputs = [xt, wt] + ([] if bt is None else [bt])
    grads = torch.autograd.grad(yt, inputs, torch.tensor(dy, dtype=torch.float64))
    return (yt.detach().numpy(), *(g.numpy() for g in grads))


def _close(case: Any, got: Any, want: np.ndarray) -> None:
    """``got`` (on the case's backend) equals the float64 ``want`` to the case's rounding."""
    assert tuple(got.shape) == want.shape
    case.check_placement(got)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(case.backend.to_numpy(got).astype(np.float64), want,
                               rtol=case.rtol, atol=case.rtol * scale)


def _draw(case: Any, shape: tuple[int, ...], seed: int) -> tuple[Any, np.ndarray]:
    """A standard normal array on the backend and its exact values on the host (float64)."""
    a = case.asarray(np.random.default_rng(seed).standard_normal(shape))
    return a, case.backend.to_numpy(a).astype(np.float64)


def _functions(weight_shape: tuple[int, ...]) -> tuple[Any, Any, Any]:
    if _spatial(weight_shape) == 2:
        return F.conv2d, F.conv2d_forward, F.conv2d_backward
    return F.conv1d, F.conv1d_forward, F.conv1d_backward


@pytest.mark.parametrize("name", CASES)
def test_forward_and_gradients_match_torch(case: Any, name: str) -> None:
    _skip_unless_covered(case, name)
    x_shape, w_shape, kwargs, with_bias = CASES[name]
    x, x_host = _draw(case, x_shape, 0)
    w, w_host = _draw(case, w_shape, 1)
    b, b_host = _draw(case, (w_shape[0],), 2) if with_bias else (None, None)
    plain, forward, backward = _functions(w_shape)
    y, saved = forward(x, w, b, **kwargs)
    dy, dy_host = _draw(case, tuple(y.shape), 3)
    want = _torch_conv(x_host, w_host, b_host, dy_host, **kwargs)
    _close(case, y, want[0])
    _close(case, plain(x, w, b, **kwargs), want[0])
    dx, dw, db = backward(dy, saved)
    _close(case, dx, want[1])
    _close(case, dw, want[2])
    if with_bias:
        _close(case, db, want[3])
    else:
        assert db is None


@pytest.mark.parametrize("flipped", [True, False], ids=["flipped-kernel", "col2im"])
@pytest.mark.parametrize("name", ["k4x2-same-even", "depthwise-mult2-same"])
def test_both_input_gradients_agree_with_torch(case: Any, name: str, flipped: bool,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """∂L/∂x by col2im and by the flipped-kernel convolution, each forced (both are valid for
    stride-1 convolutions whose padding is at most the dilated kernel's reach)."""
    _skip_unless_covered(case, name)
    monkeypatch.setattr(C, "_flipped_is_cheaper", lambda g: flipped)
    x_shape, w_shape, kwargs, _ = CASES[name]
    x, x_host = _draw(case, x_shape, 4)
    w, w_host = _draw(case, w_shape, 5)
    y, saved = F.conv2d_forward(x, w, None, **kwargs)
    dy, dy_host = _draw(case, tuple(y.shape), 6)
    dx, dw, db = F.conv2d_backward(dy, saved, weight_grad=False)
    assert dw is None and db is None
    _close(case, dx, _torch_conv(x_host, w_host, None, dy_host, **kwargs)[1])


CHUNKED: dict[str, tuple[tuple[int, ...], tuple[int, ...], dict[str, Any]]] = {
    "flipped": ((6, 3, 5, 5), (3, 3, 3, 3), {"padding": 1}),
    "rows-groups": ((6, 4, 5, 6), (6, 2, 3, 2), {"padding": (1, 0), "groups": 2}),
    "strided": ((6, 2, 7, 6), (3, 2, 3, 3), {"stride": 2, "padding": 1}),
    "1x1": ((6, 3, 4, 3), (2, 3, 1, 1), {}),
}


@pytest.mark.parametrize("chunk", [1, 3, 6])
@pytest.mark.parametrize("name", CHUNKED)
def test_every_chunk_size_matches_torch(case: Any, name: str, chunk: int,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Products over 1, 3 or all 6 samples side by side (the chunk a product's size picks)
    give PyTorch's values, on each way of computing ∂L/∂x."""
    row = _row(case)
    stacked = chunk == 3 and (row == "strict-CPU_DEVICE" or (row == "jax-cpu"
                                                             and name == "rows-groups"))
    if row not in FULL_ROWS and not stacked:  # the stacking paths once, with a middle chunk
        pytest.skip(f"{row}: the chunk sizes run on {FULL_ROWS}")
    x_shape, w_shape, kwargs = CHUNKED[name]
    monkeypatch.setattr(C, "chunk_size", lambda batch, *sizes: chunk)
    assert C.conv_geometry(x_shape, w_shape, spatial=2, caller="test", **kwargs).chunk == chunk
    x, x_host = _draw(case, x_shape, 23)
    w, w_host = _draw(case, w_shape, 24)
    b, b_host = _draw(case, (w_shape[0],), 25)
    y, saved = F.conv2d_forward(x, w, b, **kwargs)
    dy, dy_host = _draw(case, tuple(y.shape), 26)
    want = _torch_conv(x_host, w_host, b_host, dy_host, **kwargs)
    _close(case, y, want[0])
    for got, expected in zip(F.conv2d_backward(dy, saved), want[1:], strict=True):
        _close(case, got, expected)


REBUILT: dict[str, tuple[tuple[int, ...], tuple[int, ...], dict[str, Any]]] = {
    "flipped": ((5, 3, 5, 5), (3, 3, 3, 3), {"padding": 1}),
    "flipped-groups-dilated": ((5, 4, 7, 6), (4, 2, 3, 3), {"padding": 2, "dilation": 2,
                                                             "groups": 2}),
    "rows": ((5, 3, 5, 6), (4, 3, 3, 2), {"padding": (1, 0)}),
    "strided-unpadded": ((5, 2, 7, 6), (3, 2, 3, 3), {"stride": 2}),
    # wide enough for the columns in whole padded rows (C._rows_of_columns)
    "rows-flipped": ((5, 3, 5, 12), (3, 3, 3, 3), {"padding": 1}),
    "rows-col2im": ((5, 3, 5, 12), (4, 3, 3, 3), {"padding": 1}),
    "rows-unpadded": ((5, 2, 6, 14), (3, 2, 3, 3), {}),
    "rows-flipped-groups-dilated": ((5, 4, 6, 16), (4, 2, 3, 3), {"padding": 2, "dilation": 2,
                                                                  "groups": 2}),
    "rows-same-even-kernel": ((5, 3, 5, 12), (3, 3, 2, 4), {"padding": "same"}),
    # one kernel row (no shifted sum: conv1d's case) and one kernel column (no column shift)
    "rows-one-kernel-row": ((5, 3, 4, 12), (4, 3, 1, 3), {"padding": (0, 1)}),
    "rows-one-kernel-column": ((5, 3, 5, 12), (4, 3, 3, 1), {"padding": (1, 0)}),
}


@pytest.mark.parametrize("samples", [1, 2, 5])
@pytest.mark.parametrize("name", REBUILT)
def test_rebuilt_columns_match_torch(case: Any, name: str, samples: int,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Columns too large to keep: the forward keeps the padded input and the columns are
    rebuilt for ∂L/∂W, in blocks of 1, 2 (a smaller last block) or all 5 samples, on every way
    of computing ∂L/∂x; the results are PyTorch's (where arrays are mutable; elsewhere the
    columns are always kept)."""
    _skip_jax(case, JAX_SKIP)
    if _row(case) not in FULL_ROWS and samples != 2:
        pytest.skip(f"{_row(case)}: the block sizes run on {FULL_ROWS}")
    x_shape, w_shape, kwargs = REBUILT[name]
    g = C.conv_geometry(x_shape, w_shape, spatial=2, caller="test", **kwargs)
    assert C._rows_of_columns(g) is name.startswith("rows")
    per_sample = (g.in_channels * math.prod(g.kernel) * math.prod(g.out_size)
                  * np.dtype(case.dtype_name).itemsize)
    monkeypatch.setattr(C, "KEPT_COLUMNS_BYTES", 0)
    monkeypatch.setattr(C, "BLOCK_BYTES", samples * per_sample)
    x, x_host = _draw(case, x_shape, 27)
    w, w_host = _draw(case, w_shape, 28)
    b, b_host = _draw(case, (w_shape[0],), 29)
    workspace = F.ConvWorkspace()
    # two BLAS threads: on NumPy the blocks run in two parts (one Python thread each)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        for _ in range(2):  # the second step on the workspace's buffers
            y, saved = F.conv2d_forward(x, w, b, **kwargs, workspace=workspace)
            mutable = nb._libraries.library_of(case.xp).mutable_views
            assert saved.block == (samples if mutable else 0)
            dy, dy_host = _draw(case, tuple(y.shape), 30)
            want = _torch_conv(x_host, w_host, b_host, dy_host, **kwargs)
            _close(case, y, want[0])
            for got, expected in zip(F.conv2d_backward(dy, saved), want[1:], strict=True):
                _close(case, got, expected)


@pytest.mark.parametrize("groups", [1, 2])
def test_kernel_row_products_are_rows_of_the_columns_gradient(case: Any, groups: int) -> None:
    """col2im's ∂L/∂cols one kernel row at a time: kernel row i's rows of W_gᵀ δ."""
    g = C.conv_geometry((3, 4, 6, 7), (6, 4 // groups, 3, 2), spatial=2, caller="test",
                        groups=groups)
    w, w_host = _draw(case, (6, 4 // groups, 3, 2), 40)
    dy, dy_host = _draw(case, (3, groups, 6 // groups, 20), 41)
    Og, Cg = 6 // groups, 4 // groups
    full = np.einsum("goc,ngop->ngcp", w_host.reshape(groups, Og, Cg * 6), dy_host)
    full = full.reshape(3, groups, Cg, 3, 2, 20)
    for i in range(3):
        got = C._kernel_row_product(w, dy, g, i, case.xp)
        _close(case, got, full[:, :, :, i].reshape(3, groups, Cg * 2, 20))


def test_col2im_holds_one_kernel_row_of_columns() -> None:
    """LeNet's second convolution (64, 6, 14, 14) 5×5 → 16: its ∂L/∂x by col2im holds one
    kernel row's columns at a time (1.1 MB), not all five (5.4 MB), at its peak (the host
    allocator's, as tracemalloc sees NumPy's allocations)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6, 14, 14), dtype=np.float32)
    w = rng.standard_normal((16, 6, 5, 5), dtype=np.float32)
    y, saved = F.conv2d_forward(x, w, None)
    assert C._input_grad_method(saved.geometry) == "rows"
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    tracemalloc.start()
    try:
        dx, _, _ = F.conv2d_backward(dy, saved)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert dx is not None
    # 3.5 MB (δ widened, ∂L/∂W's products, the padded plane, one kernel row's columns);
    # the whole columns' gradient alone is 64·150·140·4 = 5.4 MB (6.8 MB at the peak)
    assert peak < 5e6, peak


def test_large_columns_are_rebuilt_small_ones_kept() -> None:
    """The residual block's 3×3 16→16 convolution of (32, 16, 32, 32) float32 (18.9 MB of
    columns) keeps its padded input and rebuilds the columns in blocks of 7 samples; LeNet's
    first (64, 1, 28, 28) 5×5 (5 MB) keeps its columns, and so does every product over the
    whole batch."""
    def block(x: tuple[int, ...], w: tuple[int, ...], dtype: Any, **kwargs: Any) -> int:
        g = C.conv_geometry(x, w, spatial=2, caller="test", **kwargs)
        return C.recompute_block(g, dtype, np)

    assert block((32, 16, 32, 32), (16, 16, 3, 3), np.float32, padding=1) == 7
    assert block((32, 16, 32, 32), (16, 16, 3, 3), np.float64, padding=1) == 3
    assert block((64, 1, 28, 28), (6, 1, 5, 5), np.float32, padding=2) == 0
    assert block((64, 6, 14, 14), (16, 6, 5, 5), np.float32) == 0  # one GEMM over the batch
    assert block((32, 64, 32, 32), (64, 64, 1, 1), np.float32) == 0  # x is its own columns


def test_chunk_sizes() -> None:
    """One product per sample, unless a sample's is too small to thread and compute-bound."""
    def chunk(x: tuple[int, ...], w: tuple[int, ...], **kwargs: Any) -> int:
        return C.conv_geometry(x, w, spatial=2, caller="test", **kwargs).chunk

    assert chunk((64, 6, 14, 14), (16, 6, 5, 5)) == 64  # LeNet's second: 2.4e5 MACs a sample
    assert chunk((64, 1, 28, 28), (6, 1, 5, 5), padding=2) == 1  # memory-bound: 150 weights
    assert chunk((32, 16, 32, 32), (16, 16, 3, 3), padding=1) == 1  # 2.4e6 MACs a sample
    assert chunk((6, 4, 5, 6), (8, 1, 3, 3), groups=4) == 1  # depthwise: 18 weights a group


def test_the_cheaper_input_gradient_is_chosen() -> None:
    """The flipped kernel for stride-1 "same" shapes (no col2im), col2im otherwise."""
    def chosen(x: tuple[int, ...], w: tuple[int, ...], **kwargs: Any) -> bool:
        g = C.conv_geometry(x, w, spatial=2, caller="test", **kwargs)
        return C._flipped_is_cheaper(g)

    assert chosen((2, 16, 32, 32), (16, 16, 3, 3), padding=1)
    assert chosen((2, 4, 7, 6), (8, 1, 3, 3), padding="same", groups=4) is False  # O > C
    assert chosen((2, 6, 14, 14), (16, 6, 5, 5)) is False  # LeNet's second: valid, O > C
    assert chosen((2, 16, 32, 32), (16, 16, 3, 3), padding=1, stride=2) is False
    assert chosen((2, 3, 8, 8), (3, 3, 1, 1), padding=1) is False  # padding beyond the reach


def test_workspace_buffers_are_reused_and_results_unchanged(case: Any) -> None:
    _skip_jax(case, JAX_SKIP)
    x_shape, w_shape, kwargs, _ = CASES["k3-p1-flip"]
    x, _ = _draw(case, x_shape, 7)
    w, _ = _draw(case, w_shape, 8)
    workspace = F.ConvWorkspace()
    results, cols = [], []
    for _ in range(3):
        y, saved = F.conv2d_forward(x, w, None, **kwargs, workspace=workspace)
        cols.append(saved.cols)
        dx, dw, _ = F.conv2d_backward(y, saved)
        results.append([case.backend.to_numpy(a) for a in (y, dx, dw)])
    for later in results[1:]:
        for a, b in zip(results[0], later, strict=True):
            np.testing.assert_array_equal(a, b)
    if nb._libraries.library_of(case.xp).mutable_views:
        assert cols[1] is cols[0] and cols[2] is cols[0]  # one column buffer for every step
    else:
        assert saved.workspace is None  # immutable or view-less arrays: nothing to reuse


def test_two_forwards_in_flight_do_not_share_buffers(case: Any) -> None:
    """Two training forwards before their backwards (gradient accumulation over micro-batches)
    each keep their own columns: the gradients are the sum of both references."""
    _skip_jax(case, JAX_SKIP)
    layer = nb.Conv2d(3, 3, 3, padding=1, seed=0, dtype=case.dtype_name, backend=case.backend)
    x1, x1_host = _draw(case, (2, 3, 6, 6), 9)
    x2, x2_host = _draw(case, (2, 3, 6, 6), 10)
    y1, back1 = layer.forward(x1)
    y2, back2 = layer.forward(x2)
    dy1, dy1_host = _draw(case, tuple(y1.shape), 11)
    dy2, dy2_host = _draw(case, tuple(y2.shape), 12)
    dx1, dx2 = back1(dy1), back2(dy2)
    w_host = case.backend.to_numpy(layer.weight.data).astype(np.float64)
    b_host = np.zeros(3)
    want1 = _torch_conv(x1_host, w_host, b_host, dy1_host, padding=1)
    want2 = _torch_conv(x2_host, w_host, b_host, dy2_host, padding=1)
    _close(case, y1, want1[0])
    _close(case, y2, want2[0])
    _close(case, dx1, want1[1])
    _close(case, dx2, want2[1])
    _close(case, layer.weight.grad, want1[2] + want2[2])
    _close(case, layer.bias.grad, want1[3] + want2[3])


LAYERS: dict[str, tuple[Any, Any, tuple[int, ...]]] = {
    "Conv2d": (lambda **kw: nb.Conv2d(2, 4, 3, stride=(1, 2), padding=1, **kw),
               lambda: torch.nn.Conv2d(2, 4, 3, stride=(1, 2), padding=1), (2, 2, 5, 6)),
    "Conv2d-groups-dilation": (
        lambda **kw: nb.Conv2d(4, 2, (2, 3), padding="same", dilation=2, groups=2,
                               bias=False, **kw),
        lambda: torch.nn.Conv2d(4, 2, (2, 3), padding="same", dilation=2, groups=2, bias=False),
        (1, 4, 5, 6)),
    "Conv2d-unbatched": (lambda **kw: nb.Conv2d(2, 3, 2, **kw),
                         lambda: torch.nn.Conv2d(2, 3, 2), (2, 4, 5)),
    "Conv1d": (lambda **kw: nb.Conv1d(3, 2, 4, stride=2, padding=2, **kw),
               lambda: torch.nn.Conv1d(3, 2, 4, stride=2, padding=2), (2, 3, 9)),
    # the table's "depthwise-mult2-same" shapes: on JAX, which keeps compiled operations by shape
    "Conv2d-depthwise": (lambda **kw: nb.Conv2d(4, 8, 3, padding="same", groups=4, **kw),
                         lambda: torch.nn.Conv2d(4, 8, 3, padding="same", groups=4),
                         (2, 4, 7, 6)),
}


@pytest.mark.parametrize("name", LAYERS)
def test_layers_load_torch_state_dicts_and_match_torch(case: Any, name: str) -> None:
    if name in ("Conv2d-unbatched", "Conv2d-groups-dilation") and _row(case) not in FULL_ROWS:
        pytest.skip(f"{_row(case)}: the table covers this math; {name} runs on {FULL_ROWS}")
    if name != "Conv2d-depthwise":
        _skip_jax(case, JAX_SKIP)
    make, make_torch, shape = LAYERS[name]
    torch.manual_seed(0)
    reference = make_torch().double()
    state = {k: v.detach().numpy().astype(case.dtype_name)
             for k, v in reference.state_dict().items()}
    reference.load_state_dict({k: torch.tensor(v.astype(np.float64)) for k, v in state.items()})
    layer = make(dtype=case.dtype_name, backend=case.backend)
    layer.load_state_dict(state)
    x, x_host = _draw(case, shape, 13)
    xt = torch.tensor(x_host, requires_grad=True)
    yt = reference(xt)
    dy, dy_host = _draw(case, tuple(yt.shape), 14)
    yt.backward(torch.tensor(dy_host))
    _close(case, layer(x), yt.detach().numpy())
    y, backprop = layer.forward(x)
    _close(case, y, yt.detach().numpy())
    _close(case, backprop(dy), xt.grad.numpy())
    _close(case, layer.weight.grad, reference.weight.grad.numpy())
    if reference.bias is not None:
        _close(case, layer.bias.grad, reference.bias.grad.numpy())


@pytest.mark.parametrize("name", ["Conv2d-groups-dilation", "Conv1d"])
def test_layers_pass_gradcheck(case: Any, name: str) -> None:
    if not case.is_float64:
        pytest.skip("finite differences need float64")
    make, _, shape = LAYERS[name]
    layer = make(dtype="float64", backend=case.backend, seed=3)
    if layer.bias is not None:
        layer.bias.data = case.asarray(np.random.default_rng(4).standard_normal(layer.bias.shape))
    x, _ = _draw(case, shape, 15)
    nb.gradcheck(layer, x)


def test_first_convolution_computes_no_input_gradient(
        case: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a Sequential, the first convolution is not asked for ∂L/∂x: neither col2im nor the
    flipped convolution runs for it, the second one's does, and the parameters still learn."""
    _skip_jax(case, JAX_SKIP)
    calls: list[str] = []
    for name in ("_input_grad_flipped", "_input_grad_col2im"):
        original = getattr(C, name)

        def spy(*args: Any, _original: Any = original, _name: str = name) -> Any:
            calls.append(_name)
            return _original(*args)

        monkeypatch.setattr(C, name, spy)
    dt = case.dtype_name
    model = nb.Sequential(nb.Conv2d(1, 2, 3, padding=1, seed=0, dtype=dt), nb.ReLU(),
                          nb.Conv2d(2, 2, 3, padding=1, seed=1, dtype=dt),
                          backend=case.backend)
    x, _ = _draw(case, (2, 1, 5, 5), 16)
    y, backprop = model.forward(x)
    assert backprop(case.asarray(np.ones(tuple(y.shape)))) is None
    assert calls == ["_input_grad_flipped"]  # the second convolution's, for the ReLU
    assert all(p.grad is not None for p in model.parameters())


def test_no_host_reads_on_the_gpulike_device(case: Any) -> None:
    if case.backend.name != "gpulike":
        pytest.skip("only the GPU-like test device counts host reads")
    dt = case.dtype_name
    model = nb.Sequential(
        nb.Conv2d(2, 3, 3, padding=1, seed=0, dtype=dt), nb.ReLU(),
        nb.Conv2d(3, 3, 3, padding=1, seed=1, dtype=dt), nb.ReLU(),  # ∂L/∂x: flipped kernel
        nb.Conv2d(3, 4, 3, stride=2, seed=2, dtype=dt), nb.ReLU(),  # ∂L/∂x by col2im
        nb.Conv2d(4, 4, 2, groups=4, bias=False, seed=3, dtype=dt),
        backend=case.backend)
    x, _ = _draw(case, (2, 2, 9, 9), 17)
    y, _ = model.forward(x)
    dy = case.asarray(np.ones(tuple(y.shape)))
    conv1d = nb.Conv1d(2, 2, 3, padding="same", seed=4, dtype=case.dtype_name,
                       backend=case.backend)
    x1, _ = _draw(case, (2, 2, 7), 18)
    with count_host_reads() as reads:
        y, backprop = model.forward(x, input_grad=True)
        dx = backprop(dy)
        model(x)
        y1, backprop1 = conv1d.forward(x1)
        backprop1(y1)
    assert reads.count == 0, reads
    case.check_placement(dx)


def test_gradients_go_into_the_arena(case: Any) -> None:
    """With the model's parameters in an arena, ∂L/∂W and ∂L/∂b are written into its flat
    gradient buffer (the out= path) and match PyTorch's."""
    _skip_jax(case, JAX_SKIP)
    layer = nb.Conv2d(2, 3, 3, padding=1, seed=5, dtype=case.dtype_name, backend=case.backend)
    model = nb.Sequential(layer)
    model.arena()
    x, x_host = _draw(case, (2, 2, 4, 5), 19)
    y, backprop = model.forward(x)
    dy, dy_host = _draw(case, tuple(y.shape), 20)
    backprop(dy)
    w_host = case.backend.to_numpy(layer.weight.data).astype(np.float64)
    want = _torch_conv(x_host, w_host, np.zeros(3), dy_host, padding=1)
    _close(case, layer.weight.grad, want[2])
    _close(case, layer.bias.grad, want[3])
    if layer.weight.grad_buffer is not None:
        assert layer.weight.grad is layer.weight.grad_buffer


def test_native_windows_give_the_standard_result_bit_for_bit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """NumPy's one-copy im2col against the per-offset slices, through a whole convolution."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
    kwargs = {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2), "groups": 2}

    def run() -> list[np.ndarray]:
        y, saved = F.conv2d_forward(x, w, None, **kwargs)
        cols = np.array(saved.cols)
        return [y, cols, *(a for a in F.conv2d_backward(y, saved) if a is not None)]

    native = run()
    monkeypatch.setattr(C, "windows_into", lambda *args: False)
    for a, b in zip(native, run(), strict=True):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------
# Layers: reprs, descriptions, arguments


@pytest.mark.parametrize("args", [
    ((1, 6, 5), {"padding": 2}),
    ((6, 16, 5), {}),
    ((4, 8, (3, 5)), {"stride": 2, "padding": "valid", "dilation": 2, "groups": 4,
                      "bias": False}),
    ((3, 3, 3), {"padding": "same"}),
    ((2, 4, 2), {"stride": (2, 1), "padding": (0, 1)}),
])
@pytest.mark.parametrize("kind", ["Conv1d", "Conv2d"])
def test_repr_is_pytorchs(kind: str, args: tuple[tuple[Any, ...], dict[str, Any]]) -> None:
    positional, keywords = args
    spatial = 1 if kind == "Conv1d" else 2
    if spatial == 1:
        keywords = {k: v[0] if isinstance(v, tuple) else v for k, v in keywords.items()}
        positional = tuple(v[0] if isinstance(v, tuple) else v for v in positional)
    ours = getattr(nb, kind)(*positional, **keywords, seed=0)
    theirs = getattr(torch.nn, kind)(*positional, **keywords)
    assert repr(ours) == repr(theirs)
    assert ours.weight.shape == tuple(theirs.weight.shape)
    assert (ours.bias is None) == (theirs.bias is None)


def test_described_and_rebuilt() -> None:
    model = nb.Sequential(nb.Conv2d(1, 4, 3, stride=2, padding=1, seed=0), nb.ReLU(),
                          nb.Conv2d(4, 4, 3, padding="same", groups=2, bias=False, seed=1))
    text = json.dumps(nb.layers.describe(model))
    twin = nb.layers.build(json.loads(text))
    assert repr(twin) == repr(model)
    twin.load_state_dict(model.state_dict())
    x = np.random.default_rng(22).standard_normal((2, 1, 7, 7)).astype(np.float32)
    np.testing.assert_array_equal(twin(x), model(x))
    one = nb.Sequential(nb.Conv1d(3, 2, 4, stride=2, padding=(1,), dilation=2, seed=3))
    again = nb.layers.build(json.loads(json.dumps(nb.layers.describe(one))))
    assert repr(again) == repr(one)


def test_state_size_counts_what_the_layer_allocates() -> None:
    from nnbackend.layers.conv import conv_state_size

    for layer, spatial in ((nb.Conv2d(4, 6, (3, 2), groups=2), 2),
                           (nb.Conv2d(3, 5, 3, bias=False), 2), (nb.Conv1d(2, 4, 5), 1)):
        size = sum(int(np.prod(p.shape)) for p in layer.parameters())
        assert conv_state_size(layer.config(), spatial) == size
    assert conv_state_size({"in_channels": -1, "out_channels": 2, "kernel_size": 3}, 2) == 0
    assert conv_state_size({"in_channels": 2, "out_channels": 2, "kernel_size": "3"}, 2) == 0


BAD_LAYERS: list[tuple[Any, type[Exception], str]] = [
    (lambda: nb.Conv2d(3, 8, 3, stride=0), ValueError, r"Conv2d: stride must be positive"),
    (lambda: nb.Conv2d(3, 8, 3, dilation=(1, -1)), ValueError,
     r"Conv2d: dilation must be positive, got \(1, -1\)"),
    (lambda: nb.Conv2d(3, 8, 0), ValueError, r"kernel_size must be positive"),
    (lambda: nb.Conv2d(3, 8, (3, 3, 3)), TypeError, r"tuple of 2 positive integers"),
    (lambda: nb.Conv1d(3, 8, 3, padding=-1), ValueError, r"Conv1d: padding must be non-neg"),
    (lambda: nb.Conv2d(3, 8, 3, groups=2), ValueError,
     r"Conv2d: in_channels=3 must be divisible by groups=2"),
    (lambda: nb.Conv2d(4, 6, 3, groups=4), ValueError,
     r"Conv2d: out_channels=6 must be divisible by groups=4"),
    (lambda: nb.Conv2d(3, 8, 3, stride=2, padding="same"), ValueError,
     r"Conv2d: padding='same' is not supported for strided convolutions \(stride=\(2, 2\)\)"),
    (lambda: nb.Conv2d(3, 8, 3, padding="full"), ValueError,
     r"Conv2d: padding must be 'valid', 'same', a non-negative integer or a tuple of 2, "
     r"got 'full'"),
    (lambda: nb.Conv2d(3, 8, 3, padding_mode="reflect"), NotImplementedError,
     r"Conv2d: padding_mode='reflect' is not implemented; only 'zeros'"),
    (lambda: nb.Conv2d(3, 8, 3, padding_mode="mirror"), ValueError,
     r"padding_mode must be one of"),
    (lambda: nb.Conv2d(0, 8, 3), ValueError, r"Conv2d: in_channels must be a positive"),
    (lambda: nb.Conv2d(3, 8, 3, bias=1), TypeError, r"Conv2d: bias must be True or False"),
]


@pytest.mark.parametrize(("make", "error", "match"), BAD_LAYERS)
def test_bad_arguments_are_refused(make: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        make()


def _input(*shape: int) -> np.ndarray:
    return np.zeros(shape, dtype=np.float32)


BAD_INPUTS: list[tuple[Any, tuple[int, ...], str]] = [
    (lambda: nb.Conv2d(3, 8, 3), (2, 3, 8),
     r"^Conv2d\(3, 8, kernel_size=\(3, 3\), stride=\(1, 1\)\) expected input with 3 channels "
     r"\(weight \(8, 3, 3, 3\), groups=1\), got input of shape \(2, 3, 8\)$"),
    (lambda: nb.Conv2d(3, 8, 3), (3, 8),
     r"^Conv2d\(3, 8, kernel_size=\(3, 3\), stride=\(1, 1\)\) expected input of shape "
     r"\(N, 3, H, W\) or \(3, H, W\), got \(3, 8\)$"),
    (lambda: nb.Conv2d(3, 8, 3), (1, 2, 3, 8, 8),
     r"expected input of shape \(N, 3, H, W\) or \(3, H, W\), got \(1, 2, 3, 8, 8\)"),
    (lambda: nb.Conv2d(4, 8, 3, groups=2), (2, 3, 8, 8),
     r"Conv2d\(4, 8, .*groups=2\) expected input with 4 channels \(weight \(8, 2, 3, 3\), "
     r"groups=2\), got input of shape \(2, 3, 8, 8\)"),
    (lambda: nb.Conv2d(3, 8, 5, padding=1), (2, 3, 2, 8),
     r"Conv2d\(3, 8, kernel_size=\(5, 5\), stride=\(1, 1\), padding=\(1, 1\)\): kernel size "
     r"\(5, 5\) is larger than the padded input \(4, 10\) \(input of shape \(2, 3, 2, 8\), "
     r"padding \(1, 1\)\)"),
    (lambda: nb.Conv2d(3, 8, 3, dilation=2), (2, 3, 4, 8),
     r"kernel size \(3, 3\) \(dilated: \(5, 5\)\) is larger than the padded input \(4, 8\)"),
    (lambda: nb.Conv1d(2, 4, 3), (2, 2, 2),
     r"Conv1d\(2, 4, kernel_size=\(3,\), stride=\(1,\)\): kernel size \(3,\) is larger than "
     r"the padded input \(2,\)"),
    (lambda: nb.Conv1d(2, 4, 3), (2, 2, 5, 5),
     r"Conv1d\(.*\) expected input of shape \(N, 2, L\) or \(2, L\), got \(2, 2, 5, 5\)"),
]


@pytest.mark.parametrize(("make", "shape", "match"), BAD_INPUTS)
def test_bad_inputs_name_the_layer_and_the_shapes(make: Any, shape: tuple[int, ...],
                                                   match: str) -> None:
    layer = make()
    with pytest.raises(ValueError, match=match):
        layer(_input(*shape))
    with pytest.raises(ValueError, match=match):
        layer.forward(_input(*shape))
    with pytest.raises(ValueError, match=match):  # inside a container, named by its path
        nb.Sequential(nb.Identity(), layer).forward(_input(*shape))


def test_bad_functional_arguments_name_the_function() -> None:
    x, w = _input(2, 3, 6, 6), _input(4, 3, 3, 3)
    with pytest.raises(ValueError, match=r"^conv2d: weight must have shape \(out_channels, "
                                         r"in_channels/groups, kh, kw\), got \(4, 3, 3\)$"):
        F.conv2d(x, _input(4, 3, 3))
    with pytest.raises(ValueError, match=r"^conv2d: bias must have shape \(4,\), got \(3,\)$"):
        F.conv2d(x, w, _input(3))
    with pytest.raises(ValueError, match=r"^conv2d: groups=3 must divide the weight's 4 "):
        F.conv2d(x, _input(4, 1, 3, 3), groups=3)
    with pytest.raises(ValueError, match=r"^conv2d: groups must be a positive integer, got 0"):
        F.conv2d(x, w, groups=0)
    with pytest.raises(ValueError, match=r"^conv1d: padding='same' is not supported for "
                                         r"strided convolutions \(stride=\(2,\)\)"):
        F.conv1d(_input(2, 3, 6), _input(4, 3, 3), stride=2, padding="same")
    with pytest.raises(TypeError, match=r"^conv2d: stride must be a positive integer or a "
                                        r"tuple of 2 positive integers, got 1.5"):
        F.conv2d(x, w, stride=1.5)
    y, saved = F.conv2d_forward(x, w)
    with pytest.raises(ValueError, match=r"the gradient has shape \(4, 4, 4\), the output "
                                         r"had \(2, 4, 4, 4\)"):
        F.conv2d_backward(y[0], saved)
    F.conv2d_backward(y, saved)
    with pytest.raises(RuntimeError, match="saved columns were used"):
        F.conv2d_backward(y, saved)
