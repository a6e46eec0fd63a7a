"""Channel-wise dropout (functional.dropout2d and Dropout2d): whole channels zeroed at the keep
rate (a binomial bound that cannot flake), the same channels on every backend, backward with the
forward's mask, unbatched (C, H, W) inputs, modes, no host reads and the refusals."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
import nnbackend.functional as F
from nnbackend.layers.normalization import InputLayoutError
from nnbackend.random import Generator
from nnbackend.testing import count_host_reads


def _host_mask(seed: int, channels: tuple[int, ...], p: float, draws: int = 0) -> np.ndarray:
    """The kept channels of draw ``draws`` of a seed's stream, made on NumPy (the reference)."""
    gen = Generator(seed, counter=draws)
    return nb.to_numpy(gen.bernoulli_mask(channels, 1.0 - p, backend="numpy"))


def test_whole_channels_are_kept_at_the_keep_rate(case: Any) -> None:
    """n = 100·40 channels, q = 0.7: the kept count within 5σ of n·q (σ = √(n q (1 − q)) ≈ 29;
    a fixed seed, so the check is deterministic, and the bound is one a correct mask cannot
    miss, P < 6·10⁻⁷ for a fresh seed)."""
    n, c, p = 100, 40, 0.3
    host = np.random.default_rng(0).uniform(0.5, 1.5, (n, c, 3, 2))  # no zeros in x
    y, mask = F.dropout2d(case.asarray(host), p, generator=Generator(11))
    assert mask is not None
    case.check_placement(y)
    case.check_placement(mask, dtype="bool")
    assert tuple(mask.shape) == (n, c, 1, 1)
    got = nb.to_numpy(y)
    zeroed = (got == 0).all(axis=(2, 3))
    kept = (got != 0).all(axis=(2, 3))
    assert (zeroed | kept).all()  # each channel wholly dropped or wholly kept
    np.testing.assert_array_equal(kept, nb.to_numpy(mask)[:, :, 0, 0])
    np.testing.assert_allclose(got[kept], host[kept] / (1 - p), rtol=case.rtol)
    q = 1 - p
    sigma = math.sqrt(n * c * q * (1 - q))
    assert abs(int(kept.sum()) - n * c * q) < 5 * sigma


def test_the_same_channels_on_every_backend(case: Any) -> None:
    x = case.asarray(np.ones((6, 5, 2, 3)))
    _, mask = F.dropout2d(x, 0.5, generator=Generator(42))
    np.testing.assert_array_equal(nb.to_numpy(mask)[:, :, 0, 0], _host_mask(42, (6, 5), 0.5))
    # The first channels of this seed's first draw, on the host: a fixed pattern, not a tautology.
    assert np.packbits(_host_mask(42, (6, 5), 0.5).reshape(-1)).tolist() == [38, 168, 183, 180]


def test_backward_uses_the_forwards_mask(case: Any) -> None:
    """∂L/∂x of L = Σ w · dropout2d(x), the mask fixed by replaying the generator's state: L is
    linear in x, so the gradient is w · m / (1 − p), and central differences agree with it."""
    rng = np.random.default_rng(1)
    p, shape = 0.4, (3, 4, 2, 2)
    host = rng.normal(size=shape)
    w = rng.normal(size=shape)
    state = Generator(3, stream=2).state()
    _, mask = F.dropout2d(case.asarray(host), p, generator=Generator.from_state(state))
    dx = nb.to_numpy(F.dropout2d_backward(case.asarray(w), mask, p))
    keep = nb.to_numpy(nb.random.Generator.from_state(state).bernoulli_mask(
        (3, 4), 1 - p, backend="numpy"))[:, :, None, None]  # the same stream, on the host
    np.testing.assert_allclose(dx, w * keep / (1 - p), rtol=case.rtol)

    def loss(values: np.ndarray) -> float:
        y, _ = F.dropout2d(case.asarray(values), p, generator=Generator.from_state(state))
        return float(nb.to_numpy(case.xp.sum(case.asarray(w) * y)))

    h = 1e-6 if case.is_float64 else 1e-2
    numeric = np.empty(shape)
    for index in np.ndindex(*shape):
        plus, minus = host.copy(), host.copy()
        plus[index] += h
        minus[index] -= h
        numeric[index] = (loss(plus) - loss(minus)) / (2 * h)
    tol = 1e-7 if case.is_float64 else 2e-3
    np.testing.assert_allclose(numeric, dx, rtol=tol, atol=tol)
    assert (dx == 0).any() and (dx != 0).any()


def test_unbatched_input_draws_one_value_per_channel(case: Any) -> None:
    x = case.asarray(np.ones((16, 3, 4)))
    y, mask = F.dropout2d(x, 0.5, generator=Generator(5))
    assert mask is not None and tuple(mask.shape) == (16, 1, 1)
    keep = _host_mask(5, (16,), 0.5)
    np.testing.assert_array_equal(nb.to_numpy(y), np.broadcast_to(
        np.where(keep[:, None, None], 2.0, 0.0), (16, 3, 4)))
    assert keep.any() and not keep.all()


def test_layer_modes_stream_and_backward(case: Any) -> None:
    layer = nb.Dropout2d(0.25, seed=7)
    x = case.asarray(np.full((4, 6, 2, 2), 2.0))
    y, backprop = layer.forward(x, input_grad=True)
    keep = _host_mask(7, (4, 6), 0.25)[:, :, None, None]
    np.testing.assert_allclose(nb.to_numpy(y), np.broadcast_to(np.where(keep, 2 / 0.75, 0.0),
                                                               (4, 6, 2, 2)), rtol=case.rtol)
    dy = np.arange(96.0).reshape(4, 6, 2, 2)
    np.testing.assert_allclose(nb.to_numpy(backprop(case.asarray(dy))),
                               np.where(keep, dy / 0.75, 0.0), rtol=case.rtol)
    second = nb.to_numpy(layer(x))  # inference in training mode drops, with the next draw
    np.testing.assert_allclose(
        second, np.broadcast_to(np.where(_host_mask(7, (4, 6), 0.25, 1)[:, :, None, None],
                                         2 / 0.75, 0.0), (4, 6, 2, 2)), rtol=case.rtol)
    assert layer.get_extra_state()["counter"] == 2
    layer.eval()
    y, backprop = layer.forward(x, input_grad=True)
    assert y is x and layer(x) is x
    assert layer.get_extra_state()["counter"] == 2
    _, backprop = layer.train().forward(x, input_grad=False)
    assert backprop(case.asarray(dy)) is None


def test_edge_probabilities(case: Any) -> None:
    x = case.asarray(np.array([[[[np.inf, 1.0]], [[np.nan, 2.0]]]]))  # (1, 2, 1, 2)
    gen = Generator(0)
    y, mask = F.dropout2d(x, 1.0, generator=gen)
    assert mask is not None and tuple(mask.shape) == (1, 2, 1, 1)
    assert np.array_equal(nb.to_numpy(y), np.zeros((1, 2, 1, 2)))  # no 0 · ∞
    assert np.array_equal(nb.to_numpy(F.dropout2d_backward(x, mask, 1.0)), np.zeros((1, 2, 1, 2)))
    y, mask = F.dropout2d(x, 0.0, generator=gen)
    assert y is x and mask is None and gen.counter == 0
    assert F.dropout2d_backward(x, None, 0.0) is x


def test_no_host_reads(case: Any) -> None:
    if case.backend.name != "gpulike":
        pytest.skip("only the GPU-like test device counts host reads")
    model = nb.Sequential(nb.Dropout2d(0.5, seed=1), nb.BatchNorm2d(3, dtype=case.dtype_name),
                          backend=case.backend)
    x = case.asarray(np.random.default_rng(2).normal(size=(4, 3, 2, 2)))
    dy = case.asarray(np.ones((4, 3, 2, 2)))
    with count_host_reads() as reads:
        _, backprop = model.forward(x, input_grad=True)
        backprop(dy)
        model(x)
    assert reads.count == 0


def test_refusals_name_the_layer_and_the_shapes(case: Any) -> None:
    for p in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"^Dropout2d: p must lie in \[0, 1\]"):
            nb.Dropout2d(p)
        with pytest.raises(ValueError, match=r"^dropout2d: p must lie in \[0, 1\]"):
            F.dropout2d(case.asarray(np.ones((1, 1, 1, 1))), p, generator=Generator(0))
    with pytest.raises(TypeError, match="Dropout2d: p must be a real number"):
        nb.Dropout2d("0.5")  # type: ignore[arg-type]
    layer = nb.Dropout2d(0.5)
    with pytest.raises(InputLayoutError, match=r"^Dropout2d\(p=0\.5\) expected input of shape "
                                               r"\(N, C, H, W\) or \(C, H, W\), got \(4, 5\)$"):
        layer.forward(case.asarray(np.ones((4, 5))))
    model = nb.Sequential(nb.Linear(5, 5, dtype=case.dtype_name), nb.Dropout2d(0.5),
                          backend=case.backend)
    with pytest.raises(InputLayoutError, match=r"^Sequential: layer 1 Dropout2d\(p=0\.5\)"):
        model(case.asarray(np.ones((4, 5))))
    with pytest.raises(ValueError, match=r"dropout2d: expected input of shape \(N, C, H, W\) "
                                         r"or \(C, H, W\), got shape \(2, 2, 2, 2, 2\)"):
        F.dropout2d(case.asarray(np.ones((2,) * 5)), 0.5, generator=Generator(0))
    with pytest.raises(TypeError, match=r"generator must be an nnbackend\.random\.Generator"):
        F.dropout2d(case.asarray(np.ones((2, 2, 2, 2))), 0.5, generator=0)  # type: ignore[arg-type]
    _, mask = F.dropout2d(case.asarray(np.ones((2, 3, 2, 2))), 0.5, generator=Generator(0))
    with pytest.raises(ValueError, match=r"mask of shape \(2, 3, 1, 1\) for a gradient of shape "
                                         r"\(2, 4, 2, 2\)"):
        F.dropout2d_backward(case.asarray(np.ones((2, 4, 2, 2))), mask, 0.5)


def test_description_and_extra_state_round_trip() -> None:
    layer = nb.Dropout2d(0.2, seed=9)
    layer.forward(np.ones((2, 3, 1, 1), np.float32))
    rebuilt = nb.layers.build(nb.layers.describe(layer))
    assert type(rebuilt) is nb.Dropout2d and rebuilt.p == 0.2
    assert repr(rebuilt) == "Dropout2d(p=0.2)"
    rebuilt.set_extra_state(layer.get_extra_state())
    x = np.ones((8, 8, 1, 1), np.float32)
    np.testing.assert_array_equal(rebuilt(x), layer(x))  # the same stream, the same draw
