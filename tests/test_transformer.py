"""TransformerEncoderLayer against torch.nn.TransformerEncoderLayer in float64 on the whole matrix:
a PyTorch state dict loads, and the output, ∂L/∂src and every parameter's gradient match for
both norm_first settings, relu and gelu, both layouts, a causal mask (the constructor's
is_causal), src_mask and src_key_padding_mask; finite differences; no host reads; dropout
streams; description; bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _compare import close, held, one_torch_thread  # noqa: F401 (a module-scoped autouse fixture)

import nnbackend as nb
from nnbackend.layers.transformer import TransformerEncoderLayer
from nnbackend.testing import count_host_reads

# One set of shapes (JAX compiles each new shape): d_model 6, 3 heads, feed-forward 10,
# T = 5 positions, batch 2.
D, HEADS, FF, T, N = 6, 3, 10, 5, 2


def _pair(case: Any, seed: int, **kwargs: Any) -> tuple[torch.nn.Module, TransformerEncoderLayer]:
    """PyTorch's layer with random weights (the norms' too) and ours with them loaded."""
    torch_kwargs = {k: v for k, v in kwargs.items() if k != "is_causal"}
    ref = torch.nn.TransformerEncoderLayer(D, HEADS, FF, 0.0, dtype=torch.float64,
                                           **torch_kwargs)
    rng = np.random.default_rng(seed)
    state = {k: held(case, rng.normal(1.0 if "norm" in k and "weight" in k else 0.0, 0.4,
                                       tuple(v.shape)))
             for k, v in ref.state_dict().items()}
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    layer = TransformerEncoderLayer(D, HEADS, FF, 0.0, dtype=case.dtype_name,
                                    backend=case.backend, seed=0, **kwargs)
    layer.load_state_dict({k: v.astype(case.dtype_name) for k, v in state.items()})
    return ref, layer


def _compare_gradients(case: Any, ref: torch.nn.Module, layer: nb.Module) -> None:
    params = dict(ref.named_parameters())
    assert [name for name, _ in layer.named_parameters()] == list(params)
    for name, p in layer.named_parameters():
        close(p.grad, params[name].grad.numpy(), case, f"d{name}")


# (norm_first, activation, batch_first, masks): every pair of settings once; "causal" is the
# constructor's flag, "masks" a src_mask (additive) with a src_key_padding_mask (boolean).
CONFIGS = [
    (False, "relu", False, "causal"), (False, "gelu", True, "masks"),
    (True, "gelu", True, "causal"), (True, "relu", False, "masks"), (True, "gelu", False, None),
]
JAX_CONFIGS = {(True, "gelu", True, "causal")}  # GPT's layer; its padding masks: MHA's tests


@pytest.mark.parametrize(("norm_first", "activation", "batch_first", "masks"), CONFIGS,
                         ids=lambda v: str(v))
def test_layer_matches_torch(case: Any, norm_first: bool, activation: str, batch_first: bool,
                             masks: str | None) -> None:
    if case.backend.name == "jax" and (norm_first, activation, batch_first, masks) \
            not in JAX_CONFIGS:
        pytest.skip("JAX compiles every operation per shape: its rows run the covering subset")
    ref, layer = _pair(case, 1, activation=activation, batch_first=batch_first,
                       norm_first=norm_first, is_causal=masks == "causal")
    rng = np.random.default_rng(2)
    shape = (N, T, D) if batch_first else (T, N, D)
    x, dy = held(case, rng.normal(size=shape)), held(case, rng.normal(size=shape))
    tx = torch.tensor(x, requires_grad=True)
    if masks == "causal":
        mask = torch.nn.Transformer.generate_square_subsequent_mask(T, dtype=torch.float64)
        ty = ref(tx, src_mask=mask, is_causal=True)
        inputs: Any = case.asarray(x)
    elif masks == "masks":
        src_mask = held(case, rng.normal(size=(T, T)))
        padding = np.zeros((N, T), bool)
        padding[1, -2:] = True  # True: ignored
        # PyTorch takes both masks of one type: the padding as its additive form, here bool
        ty = ref(tx, src_mask=torch.from_numpy(src_mask),
                 src_key_padding_mask=torch.from_numpy(np.where(padding, -np.inf, 0.0)))
        inputs = (case.asarray(x), case.asarray(src_mask), case.asarray(padding, dtype="bool"))
    else:
        ty = ref(tx)
        inputs = case.asarray(x)
    ty.backward(torch.from_numpy(dy))
    y, backprop = layer.forward(inputs)
    case.check_placement(y)
    close(y, ty.detach().numpy(), case, "y")
    dx = backprop(case.asarray(dy))
    if isinstance(inputs, tuple):
        assert isinstance(dx, tuple) and dx[1:] == (None, None)
        dx = dx[0]
    close(dx, tx.grad.numpy(), case, "dsrc")
    _compare_gradients(case, ref, layer)
    close(layer(inputs), ty.detach().numpy(), case, "inference")


def test_unbatched_and_fully_padded(case: Any) -> None:
    """One sequence (T, E), and a sample whose every position is padded: no NaN anywhere (its
    attention gives 0, so the layer passes it through the rest of the block), against PyTorch
    on the samples it computes (PyTorch gives NaN for the padded one)."""
    if case.backend.name == "jax":
        pytest.skip("JAX compiles every operation per shape: its row runs GPT's configuration")
    ref, layer = _pair(case, 3, batch_first=True, norm_first=True, activation="gelu")
    rng = np.random.default_rng(4)
    x, dy = held(case, rng.normal(size=(T, D))), held(case, rng.normal(size=(T, D)))
    tx = torch.tensor(x, requires_grad=True)
    ty = ref(tx)
    ty.backward(torch.from_numpy(dy))
    y, backprop = layer.forward(case.asarray(x))
    close(y, ty.detach().numpy(), case, "y, unbatched")
    close(backprop(case.asarray(dy)), tx.grad.numpy(), case, "dsrc, unbatched")
    padding = np.zeros((N, T), bool)
    padding[0] = True
    xb = held(case, rng.normal(size=(N, T, D)))
    y, backprop = layer.forward((case.asarray(xb), None, case.asarray(padding, dtype="bool")))
    dx = backprop(case.asarray(np.ones((N, T, D))))[0]
    assert np.isfinite(nb.to_numpy(y)).all() and np.isfinite(nb.to_numpy(dx)).all()
    for _, p in layer.named_parameters():
        assert np.isfinite(nb.to_numpy(p.grad)).all()
    want = ref(torch.from_numpy(xb[1:]), src_key_padding_mask=torch.from_numpy(
        np.zeros((1, T))))
    close(nb.to_numpy(y)[1:], want.detach().numpy(), case, "the unpadded sample")


@pytest.mark.parametrize(("norm_first", "activation"), [(False, "relu"), (True, "gelu")])
def test_gradcheck(case: Any, norm_first: bool, activation: str) -> None:
    if not case.is_float64:
        pytest.skip("finite differences need float64")
    if case.id.startswith("strict") and case.id != ("strict-CPU_DEVICE" if norm_first
                                                    else "strict-device1"):
        pytest.skip("array-api-strict is slow per operation: one configuration per device")
    layer = TransformerEncoderLayer(4, 2, 4, 0.0, activation, batch_first=True,
                                    norm_first=norm_first, is_causal=True, dtype="float64",
                                    backend=case.backend, seed=6)
    report = nb.gradcheck(layer, case.asarray(np.random.default_rng(5).normal(size=(1, 3, 4))))
    assert "x" in report.max_abs_error and "norm2.bias" in report.max_abs_error


def test_no_host_reads(case: Any) -> None:
    if case.backend.name != "gpulike":
        pytest.skip("only the GPU-like test device counts host reads")
    rng = np.random.default_rng(7)
    layers = [TransformerEncoderLayer(D, HEADS, FF, 0.2, "gelu", batch_first=True,
                                      norm_first=True, is_causal=True, dtype=case.dtype_name,
                                      backend=case.backend, seed=8),
              TransformerEncoderLayer(D, HEADS, FF, 0.0, dtype=case.dtype_name,
                                      backend=case.backend, seed=9)]
    x = case.asarray(rng.normal(size=(N, T, D)))
    xt = case.asarray(rng.normal(size=(T, N, D)))
    padding = case.asarray(rng.random((N, T)) < 0.3, dtype="bool")
    with count_host_reads() as reads:
        for _ in range(2):
            _, backprop = layers[0].forward(x)
            backprop(x)
            layers[0](x)
            _, backprop = layers[1].forward((xt, None, padding))
            backprop(xt)
    assert reads.count == 0, reads


def test_initialisation_dropout_streams_and_description(case: Any) -> None:
    if case.backend.name == "jax":
        pytest.skip("JAX compiles every operation per shape (the streams: test_dropout)")
    make = dict(d_model=D, nhead=HEADS, dim_feedforward=FF, dropout=0.3, batch_first=True,
                dtype=case.dtype_name, backend=case.backend, seed=10)
    layer, twin = TransformerEncoderLayer(**make), TransformerEncoderLayer(**make)
    ref = torch.nn.TransformerEncoderLayer(D, HEADS, FF)
    state = {k: nb.to_numpy(v) for k, v in layer.state_dict().items()}
    assert {k: v.shape for k, v in state.items()} == {
        k: tuple(v.shape) for k, v in ref.state_dict().items()}
    for name, value in twin.state_dict().items():
        np.testing.assert_array_equal(nb.to_numpy(value), state[name])  # the same seed
    for name in ("linear1", "linear2"):  # PyTorch's Linear: U(±1/√fan_in), the bias too
        fan_in = state[f"{name}.weight"].shape[1]
        assert 0 < np.abs(state[f"{name}.bias"]).max() <= 1 / np.sqrt(fan_in)
        assert np.abs(state[f"{name}.weight"]).max() <= 1 / np.sqrt(fan_in)
    np.testing.assert_array_equal(state["norm1.weight"], np.ones(D))
    streams = {(m.generator.seed, m.generator.stream) for m in
               (layer.self_attn, layer.dropout, layer.dropout1, layer.dropout2)}
    assert len(streams) == 4  # four independent dropout streams
    x = case.asarray(np.random.default_rng(11).normal(size=(N, T, D)))
    y1 = nb.to_numpy(layer.forward(x)[0])
    np.testing.assert_array_equal(nb.to_numpy(twin.forward(x)[0]), y1)
    assert not np.allclose(nb.to_numpy(layer.forward(x)[0]), y1)
    layer.eval()
    twin.load_extra_state_dict(layer.extra_state_dict())
    assert twin.extra_state_dict() == layer.extra_state_dict()
    built = nb.layers.build(nb.layers.describe(layer), backend=case.backend)
    assert isinstance(built, TransformerEncoderLayer) and built.config() == layer.config()
    built.load_state_dict(layer.state_dict())
    close(built.eval()(x), nb.to_numpy(layer(x)), case, "rebuilt")


def test_refuses_bad_arguments_and_inputs(case: Any) -> None:
    with pytest.raises(ValueError, match=r"embed_dim=6 is not divisible by num_heads=4"):
        TransformerEncoderLayer(6, 4)
    with pytest.raises(ValueError, match=r"activation must be 'relu' or 'gelu', got 'tanh'"):
        TransformerEncoderLayer(D, HEADS, activation="tanh")
    with pytest.raises(ValueError, match=r"got 'function' \(a callable's backward is unknown"):
        TransformerEncoderLayer(D, HEADS, activation=torch.nn.functional.relu)  # type: ignore
    layer = TransformerEncoderLayer(D, HEADS, FF, dtype=case.dtype_name, backend=case.backend,
                                    is_causal=True)
    x = case.asarray(np.ones((T, N, D)))
    with pytest.raises(ValueError, match=r"x must have shape \(L, N, E\) or \(L, E\) with E = 6"):
        layer(case.asarray(np.ones((T, N, 4))))
    with pytest.raises(TypeError, match=r"a tuple \(src, src_mask\[, src_key_padding_mask\]\), "
                                        r"got a tuple of 4"):
        layer((x, None, None, None))
    with pytest.raises(ValueError, match=r"attn_mask was given to a layer built with "
                                         r"is_causal=True"):
        layer((x, case.asarray(np.zeros((T, T)))))
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(2, 5\)"):
        layer((x, None, case.asarray(np.zeros((T, N), bool), dtype="bool")))


def test_state_size_counts_what_the_layers_allocate() -> None:
    """The description's size of a layer (checked against a checkpoint before building) is
    everything its constructor allocates, the sub-layers it makes included."""
    kinds = nb.layers.description._KINDS
    for bias in (True, False):
        layer = TransformerEncoderLayer(D, HEADS, FF, bias=bias)
        attention = layer.self_attn
        for built, kind in ((layer, "TransformerEncoderLayer"),
                            (attention, "MultiheadAttention")):
            size = kinds[kind].state_size
            assert size is not None
            assert size(built.config()) == sum(int(np.prod(p.shape))
                                               for p in built.parameters()), (kind, bias)
