"""Batch normalisation (functional and BatchNorm1d/2d) against PyTorch autograd in float64 on the
whole matrix: forward, ∂L/∂x, ∂L/∂γ, ∂L/∂β and the running statistics after several steps, in
training and evaluation, with and without γ/β and running statistics, momentum=None; finite
differences; no host reads; PyTorch state dicts both ways; state, checkpoints and fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _compare import close, held, one_torch_thread  # noqa: F401 (a module-scoped autouse fixture)

import nnbackend as nb
import nnbackend.functional as F
from nnbackend._native import channel_operand
from nnbackend.layers.normalization import InputLayoutError
from nnbackend.state import load_training_state, training_state
from nnbackend.testing import count_host_reads

STEPS = 3  # training steps before the evaluation step


def _torch_layer(shape: tuple[int, ...], **kwargs: Any) -> torch.nn.Module:
    cls = torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d
    return cls(shape[1], dtype=torch.float64, **kwargs)


# (shape, affine, track_running_stats, momentum): 1d (N, C) and (N, C, L), 2d (N, C, H, W).
# Three shapes only: JAX compiles its kernels once per shape (~0.5 s each). The layers' test
# below adds (N, C, L) with running statistics and the weight-only form.
CONFIGS = [
    ((6, 4), True, True, 0.1),
    ((5, 3, 7), True, False, 0.1),
    ((3, 2, 4, 5), True, True, None),
    ((3, 2, 4, 5), False, True, 0.3),
    ((6, 4), False, False, None),
]


def _ids(config: Any) -> str:
    shape, affine, track, momentum = config
    return (f"{'x'.join(map(str, shape))}{'' if affine else '-noaffine'}"
            f"{'' if track else '-notrack'}-m{momentum}")


@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
def test_functional_matches_torch_over_training_steps_then_eval(case: Any, config: Any) -> None:
    shape, affine, track, momentum = config
    c = shape[1]
    rng = np.random.default_rng(len(shape) * 10 + c)
    ref = _torch_layer(shape, affine=affine, track_running_stats=track, momentum=momentum)
    weight = held(case, rng.normal(1.0, 0.5, c))
    bias = held(case, rng.normal(0.0, 0.5, c))
    if affine:
        with torch.no_grad():
            ref.weight.copy_(torch.from_numpy(weight))
            ref.bias.copy_(torch.from_numpy(bias))
    w = case.asarray(weight) if affine else None
    b = case.asarray(bias) if affine else None
    mean = case.asarray(np.zeros(c)) if track else None
    var = case.asarray(np.ones(c)) if track else None
    count = case.asarray(np.zeros((), np.int64), dtype=case.index_dtype_name)
    for step in range(STEPS + 1):
        training = step < STEPS
        ref.train(training)
        x = held(case, rng.normal(2.0, 3.0, shape))  # an offset: the variance has two passes
        dy = held(case, rng.normal(size=shape))
        xt = torch.tensor(x, requires_grad=True)
        yt = ref(xt)
        yt.backward(torch.from_numpy(dy))
        count = count + 1 if training else count
        y, mean, var, saved = F.batch_norm_forward(
            case.asarray(x), mean, var, w, b, training, momentum, 1e-5,
            num_batches_tracked=count)
        case.check_placement(y)
        dx, dw, db = F.batch_norm_backward(case.asarray(dy), saved)
        what = f"step {step} ({'train' if training else 'eval'})"
        close(y, yt.detach().numpy(), case, f"y, {what}")
        assert dx is not None
        close(dx, xt.grad.numpy(), case, f"dx, {what}")
        if affine:
            close(dw, ref.weight.grad.numpy(), case, f"dweight, {what}")
            close(db, ref.bias.grad.numpy(), case, f"dbias, {what}")
            ref.weight.grad = ref.bias.grad = None
        else:
            assert dw is None and db is None
        if track:
            close(mean, ref.running_mean.numpy(), case, f"running_mean, {what}")
            close(var, ref.running_var.numpy(), case, f"running_var, {what}")
        else:
            assert mean is None and var is None


def test_batch_norm_returns_y_and_leaves_the_running_statistics_alone(case: Any) -> None:
    rng = np.random.default_rng(1)
    x = held(case, rng.normal(size=(5, 3, 7)))
    mean, var = case.asarray(np.zeros(3)), case.asarray(np.ones(3))
    y = F.batch_norm(case.asarray(x), mean, var, training=True)
    ref = torch.nn.functional.batch_norm(torch.from_numpy(x), None, None, training=True)
    close(y, ref.numpy(), case, "y")
    np.testing.assert_array_equal(nb.to_numpy(mean), np.zeros(3))
    np.testing.assert_array_equal(nb.to_numpy(var), np.ones(3))


def test_variance_is_two_pass_in_float32_too(case: Any) -> None:
    """x = 3000 + N(0, 1): E[x²] − E[x]² would lose every digit of σ² in float32 (9·10⁶ · 6·10⁻⁸
    ≈ 0.5); the deviations' mean of squares keeps it to the rounding of the data."""
    rng = np.random.default_rng(2)
    x = held(case, 3000.0 + rng.normal(size=(5, 3, 7)))
    out = F.batch_norm_forward(case.asarray(x), case.asarray(np.zeros(3)),
                               case.asarray(np.ones(3)), training=True, momentum=1.0)
    want_var = x.var(axis=(0, 2), ddof=1)
    tol = 1e-10 if case.is_float64 else 2e-3
    np.testing.assert_allclose(nb.to_numpy(out.running_var), want_var, rtol=tol)
    xhat = (x - x.mean(axis=(0, 2), keepdims=True)) / np.sqrt(
        x.var(axis=(0, 2), keepdims=True) + 1e-5)
    np.testing.assert_allclose(nb.to_numpy(out.y), xhat, atol=tol * 10)


def test_momentum_none_needs_the_count_and_reads_it_on_the_device(case: Any) -> None:
    x = case.asarray(np.arange(24.0).reshape(6, 4))
    stats = case.asarray(np.zeros(4)), case.asarray(np.ones(4))
    with pytest.raises(TypeError, match=r"momentum=None .* needs num_batches_tracked"):
        F.batch_norm_forward(x, *stats, training=True, momentum=None)
    with pytest.raises(ValueError, match="num_batches_tracked must be >= 1"):
        F.batch_norm_forward(x, *stats, training=True, momentum=None, num_batches_tracked=0)
    # A Python count and a device count give the same update (factor 1/2).
    host = F.batch_norm_forward(x, *stats, training=True, momentum=None, num_batches_tracked=2)
    device = F.batch_norm_forward(
        x, *stats, training=True, momentum=None,
        num_batches_tracked=case.asarray(np.asarray(2), dtype=case.index_dtype_name))
    np.testing.assert_array_equal(nb.to_numpy(host.running_mean),
                                  nb.to_numpy(device.running_mean))
    np.testing.assert_allclose(nb.to_numpy(host.running_mean), np.arange(10.0, 14.0) / 2,
                               rtol=case.rtol)


def test_overwrite_builds_dx_in_the_saved_deviations_with_the_same_values(case: Any) -> None:
    rng = np.random.default_rng(3)
    x, dy = case.asarray(rng.normal(size=(3, 2, 4, 5))), case.asarray(rng.normal(size=(3, 2, 4, 5)))
    w, b = case.asarray(rng.normal(size=2)), case.asarray(rng.normal(size=2))
    saved = F.batch_norm_forward(x, None, None, w, b, training=True).saved
    assert saved is not None
    plain = F.batch_norm_backward(dy, saved)
    again = F.batch_norm_backward(dy, saved, overwrite=True)
    for a, b_ in zip(plain, again, strict=True):
        np.testing.assert_array_equal(nb.to_numpy(a), nb.to_numpy(b_))


def test_channel_operand_is_the_standard_broadcast_bit_for_bit(case: Any) -> None:
    """The native (C, L) block and the standard (C, 1) broadcast give the same products."""
    rng = np.random.default_rng(4)
    x = case.asarray(rng.normal(size=(5, 3, 7)))
    v = case.asarray(rng.normal(size=3))
    op = channel_operand(v, 7, case.xp)
    standard = case.xp.reshape(v, (3, 1))
    np.testing.assert_array_equal(nb.to_numpy(x * op), nb.to_numpy(x * standard))
    np.testing.assert_array_equal(nb.to_numpy(x + op), nb.to_numpy(x + standard))


def test_functional_refuses_bad_arguments(case: Any) -> None:
    x = case.asarray(np.ones((5, 3, 7)))
    three = case.asarray(np.ones(3))
    with pytest.raises(ValueError, match=r"expected more than 1 value per channel when "
                                         r"training, got input of shape \(1, 3\)"):
        F.batch_norm(case.asarray(np.ones((1, 3))), three, three, training=True)
    with pytest.raises(ValueError, match=r"running_mean must have shape \(3,\) .* input of "
                                         r"shape \(5, 3, 7\), got shape \(4,\)"):
        F.batch_norm(x, case.asarray(np.ones(4)), three)
    with pytest.raises(ValueError, match=r"batch_norm: input must have a batch and a channel "
                                         r"axis, \(N, C, \.\.\.\), got shape \(5,\)"):
        F.batch_norm(case.asarray(np.ones(5)), None, None)
    with pytest.raises(ValueError, match="both be arrays or both be None"):
        F.batch_norm(x, three, None)
    with pytest.raises(TypeError, match="input must be a floating array"):
        F.batch_norm(case.asarray(np.ones((4, 3), np.int32), dtype="int32"), None, None)
    saved = F.batch_norm_forward(x, None, None, training=True).saved
    assert saved is not None
    with pytest.raises(ValueError, match=r"dy has shape \(4, 3\), the input had \(5, 3, 7\)"):
        F.batch_norm_backward(case.asarray(np.ones((4, 3))), saved)


# ------------------------------------------------------------------------------------------
# The layers


def _layer(case: Any, shape: tuple[int, ...], **kwargs: Any) -> nb.Module:
    cls = nb.BatchNorm2d if len(shape) == 4 else nb.BatchNorm1d
    return cls(shape[1], dtype=case.dtype_name, backend=case.backend, **kwargs)


@pytest.mark.parametrize(("shape", "kwargs"), [
    ((6, 4), {"momentum": None}), ((5, 3, 7), {"momentum": None}),
    ((3, 2, 4, 5), {"momentum": None}), ((3, 2, 4, 5), {"bias": False}),
], ids=["2d-input", "3d-input", "4d-input", "4d-input-no-bias"])
def test_layer_trains_and_evaluates_as_torch(
    case: Any, shape: tuple[int, ...], kwargs: dict[str, Any]
) -> None:
    rng = np.random.default_rng(5)
    layer, ref = _layer(case, shape, **kwargs), _torch_layer(shape, **kwargs)
    state = {k: held(case, v.numpy()) if v.dtype.is_floating_point else v.numpy()
             for k, v in ref.state_dict().items()}
    state["weight"] = held(case, rng.normal(1.0, 0.3, shape[1]))
    if ref.bias is not None:
        state["bias"] = held(case, rng.normal(size=shape[1]))
    ref.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    layer.load_state_dict({k: v.astype(case.dtype_name) if v.dtype.kind == "f" else v
                           for k, v in state.items()})
    for step in range(STEPS + 1):
        if step == STEPS:
            layer.eval()
            ref.eval()
        x = held(case, rng.normal(1.0, 2.0, shape))
        dy = held(case, rng.normal(size=shape))
        xt = torch.tensor(x, requires_grad=True)
        yt = ref(xt)
        yt.backward(torch.from_numpy(dy))
        y, backprop = layer.forward(case.asarray(x), input_grad=True)
        dx = backprop(case.asarray(dy))
        close(y, yt.detach().numpy(), case, f"y, step {step}")
        close(dx, xt.grad.numpy(), case, f"dx, step {step}")
        close(layer.weight.grad, ref.weight.grad.numpy(), case, f"dweight, step {step}")
        if ref.bias is not None:
            close(layer.bias.grad, ref.bias.grad.numpy(), case, f"dbias, step {step}")
        else:
            assert layer.bias is None
        layer.zero_grad()
        ref.zero_grad()
        # Inference in training mode updates the statistics too, as PyTorch's forward does.
        if step == 0:
            close(layer(case.asarray(x)), ref(torch.from_numpy(x)).detach().numpy(), case,
                   "inference in training mode")
    for name in ("running_mean", "running_var"):
        close(getattr(layer, name), getattr(ref, name).numpy(), case, name)
    assert int(nb.to_numpy(layer.num_batches_tracked)) == int(ref.num_batches_tracked) == STEPS + 1
    case.check_placement(layer.num_batches_tracked, dtype=case.index_dtype_name)


@pytest.mark.parametrize("make", [
    lambda: nb.BatchNorm1d(3, dtype="float64"),
    lambda: nb.BatchNorm1d(3, affine=False, dtype="float64"),
    lambda: nb.BatchNorm2d(2, momentum=None, dtype="float64"),
], ids=["1d", "1d-noaffine", "2d-momentum-none"])
@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 3), (3, 2, 3, 2)], ids=str)
def test_gradcheck_in_training_mode(case: Any, make: Any, shape: tuple[int, ...]) -> None:
    if not case.is_float64:
        pytest.skip("finite differences need float64")
    layer = make()
    if len(shape) not in layer._ranks or shape[1] != layer.num_features:
        pytest.skip("not this layer's input")
    layer.to(case.backend)
    x = case.asarray(np.random.default_rng(6).normal(size=shape))
    report = nb.gradcheck(layer, x)  # raises on disagreement
    expected = {"x", "weight", "bias"} if layer.affine else {"x"}
    assert set(report.max_abs_error) == expected, report


def test_gradcheck_in_eval_mode(case: Any) -> None:
    if not case.is_float64:
        pytest.skip("finite differences need float64")
    layer = nb.BatchNorm2d(2, dtype="float64", backend=case.backend)
    layer.running_mean = case.asarray(np.array([0.3, -1.0]))
    layer.running_var = case.asarray(np.array([0.5, 2.0]))
    nb.gradcheck(layer.eval(), case.asarray(np.random.default_rng(7).normal(size=(2, 2, 3, 3))))


def test_no_host_reads_in_training_and_evaluation(case: Any) -> None:
    if case.backend.name != "gpulike":
        pytest.skip("only the GPU-like test device counts host reads")
    rng = np.random.default_rng(8)
    layers = [_layer(case, (4, 3, 2, 2)), _layer(case, (4, 3, 2, 2), momentum=None),
              _layer(case, (4, 3), affine=False),
              _layer(case, (4, 3, 5), track_running_stats=False)]
    shapes = [(4, 3, 2, 2), (4, 3, 2, 2), (4, 3), (4, 3, 5)]
    for layer, shape in zip(layers, shapes, strict=True):
        x, dy = case.asarray(rng.normal(size=shape)), case.asarray(rng.normal(size=shape))
        with count_host_reads() as reads:
            for _ in range(2):
                layer.train()
                _, backprop = layer.forward(x, input_grad=True)
                backprop(dy)
                layer(x)
                layer.eval()
                _, backprop = layer.forward(x, input_grad=True)
                backprop(dy)
                layer(x)
        assert reads.count == 0, (layer, reads)


def test_torch_state_dicts_load_both_ways(case: Any) -> None:
    rng = np.random.default_rng(9)
    ref = torch.nn.BatchNorm2d(3, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(held(case, rng.normal(1.0, 0.3, 3))))
        ref.bias.copy_(torch.from_numpy(held(case, rng.normal(size=3))))
    for _ in range(2):  # running statistics and a count that are not the initial ones
        ref(torch.from_numpy(held(case, rng.normal(2.0, 1.5, (4, 3, 2, 2)))))
    for name in ("running_mean", "running_var"):
        getattr(ref, name).copy_(torch.from_numpy(held(case, getattr(ref, name).numpy())))
    state = {k: v.numpy().astype(case.dtype_name) if v.dtype.is_floating_point else v.numpy()
             for k, v in ref.state_dict().items()}
    assert state["num_batches_tracked"].dtype == np.int64
    layer = _layer(case, (4, 3, 2, 2))
    layer.load_state_dict(state)  # int64 count into JAX's int32 too
    case.check_placement(layer.num_batches_tracked, dtype=case.index_dtype_name)
    assert int(nb.to_numpy(layer.num_batches_tracked)) == 2
    x = held(case, rng.normal(size=(4, 3, 2, 2)))
    for training in (False, True):
        ref.train(training)
        layer.train(training)
        close(layer(case.asarray(x)), ref(torch.from_numpy(x)).detach().numpy(), case,
               f"training={training}")
    back = torch.nn.BatchNorm2d(3, dtype=torch.float64)
    back.load_state_dict({k: torch.from_numpy(nb.to_numpy(v).astype(np.float64)
                                              if k != "num_batches_tracked"
                                              else nb.to_numpy(v).astype(np.int64))
                          for k, v in layer.state_dict().items()})
    assert int(back.num_batches_tracked) == 3
    np.testing.assert_allclose(back.running_mean.numpy(), nb.to_numpy(layer.running_mean))


def test_integer_buffers_take_any_integer_width_and_nothing_else(case: Any) -> None:
    layer = _layer(case, (4, 3))
    state = {k: nb.to_numpy(v) for k, v in layer.state_dict().items()}
    state["num_batches_tracked"] = np.asarray(7, np.int32)
    layer.load_state_dict(state)
    case.check_placement(layer.num_batches_tracked, dtype=case.index_dtype_name)
    assert int(nb.to_numpy(layer.num_batches_tracked)) == 7
    state["num_batches_tracked"] = np.asarray(7.0)
    with pytest.raises(TypeError, match=r"'num_batches_tracked' has dtype int(64|32), state "
                                        r"dict gives float64"):
        layer.load_state_dict(state)
    del state["num_batches_tracked"]
    with pytest.raises(KeyError, match=r"missing \['num_batches_tracked'\]"):
        layer.load_state_dict(state)


def test_to_casts_the_statistics_and_leaves_the_count_alone() -> None:
    layer = nb.BatchNorm2d(4)
    layer.train().forward(np.random.default_rng(10).normal(size=(2, 4, 3, 3)).astype(np.float32))
    layer.to(dtype="float64")
    assert layer.weight is not None
    assert {str(a.dtype) for a in (layer.weight.data, layer.running_mean, layer.running_var)} \
        == {"float64"}
    assert layer.num_batches_tracked.dtype == np.int64 and layer.num_batches_tracked.ndim == 0
    assert int(layer.num_batches_tracked) == 1
    assert layer.config()["dtype"] == "float64"


def _bn_model(case: Any) -> nb.Sequential:
    """The model of the state, checkpoint and fit tests (one set of shapes: JAX compiles once)."""
    return nb.Sequential(
        nb.BatchNorm1d(4, momentum=0.5, dtype=case.dtype_name),
        nb.Linear(4, 3, seed=1, dtype=case.dtype_name),
        nb.BatchNorm1d(3, momentum=None, affine=False, dtype=case.dtype_name),
        backend=case.backend)


def _batches(case: Any) -> list[tuple[Any, Any]]:
    rng = np.random.default_rng(11)
    return [(case.asarray(rng.normal(size=(8, 4))),
             case.asarray(rng.integers(0, 3, size=8), dtype=case.index_dtype_name))
            for _ in range(3)]


def _train(model: nb.Module, opt: nb.Optimizer, batches: list[Any], steps: range) -> None:
    loss = nb.CrossEntropyLoss()
    for t in steps:
        x, labels = batches[t % len(batches)]
        y, backprop = model.forward(x)
        opt.zero_grad()
        backprop(loss(y, labels)[1])
        opt.step()


def _snapshot(model: nb.Module) -> dict[str, np.ndarray]:
    return {k: nb.to_numpy(v).copy() for k, v in model.state_dict().items()}


def _assert_identical(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), k


def test_training_state_resumes_bit_for_bit_with_batch_norm(case: Any) -> None:
    batches = _batches(case)
    whole = _bn_model(case)
    opt = nb.SGD(whole, lr=0.1, momentum=0.9)
    _train(whole, opt, batches, range(4))
    first = _bn_model(case)
    opt1 = nb.SGD(first, lr=0.1, momentum=0.9)
    _train(first, opt1, batches, range(2))
    state = training_state(first, opt1)
    assert {"model/0.running_mean", "model/0.running_var", "model/0.num_batches_tracked",
            "model/2.num_batches_tracked"} <= state.keys()
    resumed = _bn_model(case)
    opt2 = nb.SGD(resumed, lr=0.1, momentum=0.9)
    load_training_state(state, resumed, opt2)
    _train(resumed, opt2, batches, range(2, 4))
    _assert_identical(_snapshot(resumed), _snapshot(whole))
    assert int(nb.to_numpy(resumed[2].num_batches_tracked)) == 4


def test_checkpoint_resumes_bit_for_bit_with_batch_norm(case: Any, tmp_path: Path) -> None:
    batches = _batches(case)
    whole = _bn_model(case)
    opt = nb.Adam(whole, lr=0.01)
    _train(whole, opt, batches, range(4))
    first = _bn_model(case)
    opt1 = nb.Adam(first, lr=0.01)
    _train(first, opt1, batches, range(2))
    nb.checkpoint.save(tmp_path / "run.npz", first, opt1)
    resumed = _bn_model(case)
    opt2 = nb.Adam(resumed, lr=0.01)
    nb.checkpoint.load(tmp_path / "run.npz", resumed, opt2)
    _train(resumed, opt2, batches, range(2, 4))
    _assert_identical(_snapshot(resumed), _snapshot(whole))
    rebuilt, _ = nb.checkpoint.load_model(tmp_path / "run.npz")  # on NumPy
    got, want = _snapshot(rebuilt), _snapshot(first)
    assert got["0.num_batches_tracked"].dtype == np.int64  # the buffer's own (int32 from JAX)
    for k in want:
        assert np.array_equal(got[k], want[k]), k


def test_fit_updates_the_statistics_and_evaluate_uses_them(case: Any) -> None:
    rng = np.random.default_rng(12)
    x = rng.normal(3.0, 2.0, size=(32, 4)).astype(case.dtype_name)
    labels = rng.integers(0, 3, size=32)
    model = _bn_model(case)
    loss = nb.CrossEntropyLoss()
    nb.fit(model, loss, nb.SGD(model, lr=0.1), (x, labels), epochs=2, batch_size=8,
           progress=False, seed=0)
    bn, last = model[0], model[2]
    for layer in (bn, last):
        assert int(nb.to_numpy(layer.num_batches_tracked)) == 8  # 2 epochs of 4 batches
        assert layer.training  # fit restores the mode
    mean = nb.to_numpy(bn.running_mean).astype(np.float64)
    # 1 − 0.5⁸ of the way from 0 to the batch means (~3, batch to batch within ~0.7)
    assert np.all(np.abs(mean - x.mean(axis=0)) < 1.0)
    scores = nb.evaluate(model, loss, (x, labels), metrics=[])
    # Evaluation normalises with the running statistics: the reference by hand on the host.
    def normalised(v: np.ndarray, layer: Any) -> np.ndarray:
        m, s2 = (nb.to_numpy(a).astype(np.float64) for a in (layer.running_mean,
                                                              layer.running_var))
        return (v - m) / np.sqrt(s2 + 1e-5)

    g, beta = (nb.to_numpy(p.data).astype(np.float64) for p in bn.parameters())
    w, b = (nb.to_numpy(p.data).astype(np.float64) for p in model[1].parameters())
    z = normalised((normalised(x, bn) * g + beta) @ w.T + b, last)
    logp = z - z.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    want = -logp[np.arange(32), labels].mean()
    assert scores["loss"] == pytest.approx(want, rel=1e-4 if not case.is_float64 else 1e-10)
    assert int(nb.to_numpy(bn.num_batches_tracked)) == 8  # evaluation counted nothing


def test_layers_refuse_bad_input_and_arguments(case: Any) -> None:
    bn2 = _layer(case, (2, 3, 4, 4))
    name = (r"BatchNorm2d\(3, eps=1e-05, momentum=0\.1, affine=True, bias=True, "
            r"track_running_stats=True\)")
    with pytest.raises(InputLayoutError, match=rf"^{name} expected input of shape "
                                               r"\(N, 3, H, W\), got \(2, 3, 4\)$"):
        bn2.forward(case.asarray(np.ones((2, 3, 4))))
    with pytest.raises(InputLayoutError, match=r"\(N, 3, H, W\), got \(2, 4, 4, 4\)"):
        bn2(case.asarray(np.ones((2, 4, 4, 4))))
    bn1 = _layer(case, (2, 5), affine=False)
    with pytest.raises(InputLayoutError, match=r"^BatchNorm1d\(5, .*affine=False.*\) expected "
                                               r"input of shape \(N, 5\) or \(N, 5, L\), got "
                                               r"\(2, 5, 1, 1\)$"):
        bn1.forward(case.asarray(np.ones((2, 5, 1, 1))))
    model = nb.Sequential(nb.Linear(4, 6, dtype=case.dtype_name),
                          nb.BatchNorm1d(5, dtype=case.dtype_name), backend=case.backend)
    with pytest.raises(InputLayoutError, match=r"^Sequential: layer 1 BatchNorm1d\(5, .*\) "
                                               r"expected input of shape \(N, 5\) or \(N, 5, L\), "
                                               r"got \(2, 6\)$"):
        model.forward(case.asarray(np.ones((2, 4))))
    with pytest.raises(ValueError, match=rf"^{name}: expected more than 1 value per channel "
                                         r"when training, got input of shape \(1, 3, 1, 1\)"):
        bn2.forward(case.asarray(np.ones((1, 3, 1, 1))))
    assert int(nb.to_numpy(bn2.num_batches_tracked)) == 0  # a refused batch counts nothing
    bn2.eval()(case.asarray(np.ones((1, 3, 1, 1))))  # evaluation takes one value per channel
    with pytest.raises(ValueError, match="BatchNorm2d: num_features must be"):
        nb.BatchNorm2d(0)
    with pytest.raises(ValueError, match=r"BatchNorm1d: momentum must lie in \[0, 1\], got 1\.5"):
        nb.BatchNorm1d(3, momentum=1.5)
    with pytest.raises(ValueError, match="BatchNorm1d: eps must be >= 0"):
        nb.BatchNorm1d(3, eps=-1e-5)
    with pytest.raises(TypeError, match="BatchNorm2d: affine must be True or False"):
        nb.BatchNorm2d(3, affine=1)  # type: ignore[arg-type]


def test_repr_config_state_names_and_description_as_torch() -> None:
    layer = nb.BatchNorm2d(16, momentum=None, affine=False)
    assert repr(layer) == repr(torch.nn.BatchNorm2d(16, momentum=None, affine=False))
    assert repr(nb.BatchNorm1d(8)) == repr(torch.nn.BatchNorm1d(8))
    assert list(nb.BatchNorm1d(8).state_dict()) == list(torch.nn.BatchNorm1d(8).state_dict())
    assert list(nb.BatchNorm2d(4, track_running_stats=False).state_dict()) == ["weight", "bias"]
    assert list(nb.BatchNorm2d(4, bias=False).state_dict()) == list(
        torch.nn.BatchNorm2d(4, bias=False).state_dict())
    assert repr(nb.BatchNorm2d(4, bias=False)) == repr(torch.nn.BatchNorm2d(4, bias=False))
    assert nb.BatchNorm2d(4, track_running_stats=False, affine=False).state_dict() == {}
    assert layer.has_training_behaviour
    config = layer.config()
    assert config == {"num_features": 16, "eps": 1e-5, "momentum": None, "affine": False,
                      "track_running_stats": True, "bias": False, "dtype": "float32"}
    rebuilt = nb.layers.build(nb.layers.describe(layer))
    assert type(rebuilt) is nb.BatchNorm2d and rebuilt.config() == config


def test_eval_without_running_statistics_uses_the_batch(case: Any) -> None:
    layer = _layer(case, (5, 3, 7), track_running_stats=False).eval()
    ref = torch.nn.BatchNorm1d(3, track_running_stats=False, dtype=torch.float64).eval()
    x = held(case, np.random.default_rng(13).normal(size=(5, 3, 7)))
    close(layer(case.asarray(x)), ref(torch.from_numpy(x)).detach().numpy(), case, "y")
    assert layer.backend == case.backend  # placement from γ
    plain = _layer(case, (4, 3), affine=False, track_running_stats=False)
    assert plain.backend is None and plain._reference_array() is None
