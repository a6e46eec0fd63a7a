"""Scaled dot-product attention (functional) and MultiheadAttention against PyTorch autograd in
float64 on the whole matrix: forward and every gradient with causal, boolean, additive and
key-padding masks, fully masked rows (zeros here, where PyTorch's math gives NaN: the reference
masks those rows out after PyTorch's attention), dropout with a known mask, the returned
weights and their gradient; finite differences; no host reads; PyTorch state dicts; bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _compare import close, held, one_torch_thread  # noqa: F401 (a module-scoped autouse fixture)

import nnbackend as nb
import nnbackend.functional as F
from nnbackend.layers.attention import MultiheadAttention
from nnbackend.random import Generator
from nnbackend.testing import count_host_reads

# One set of shapes throughout (JAX compiles each new shape): batch 2, 3 heads, L = 5 queries,
# S = 6 keys, E = 4, Ev = 3; the layer: embed_dim 6, 3 heads.
N, H, L, S, E, EV = 2, 3, 5, 6, 4, 3
EMBED = 6


def _skip_on_jax(case: Any) -> None:
    """JAX compiles every operation per shape (~3 s for a layer's first call here): its row
    runs the covering subset (every SDPA mask, the dropout, MHA's tuple input with masks)."""
    if case.backend.name == "jax":
        pytest.skip("JAX runs the covering subset of this file")


def _qkv(case: Any, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return tuple(held(case, rng.normal(size=shape)) for shape in
                 ((N, H, L, E), (N, H, S, E), (N, H, S, EV), (N, H, L, EV)))


def _bool_mask(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """A boolean mask (True: takes part) with one fully masked row, (0, ..., 1, :)."""
    mask = np.random.default_rng(seed).random(shape) > 0.4
    mask[(0,) * (len(shape) - 2) + (1,)] = False
    return mask


def _torch_sdpa(q: np.ndarray, k: np.ndarray, v: np.ndarray, dy: np.ndarray,
                allowed: np.ndarray | None, **kwargs: Any) -> tuple[np.ndarray, ...]:
    """PyTorch's attention and its gradients, with the rows that keep no key set to 0.

    PyTorch gives NaN for those rows; here they get a harmless mask (every key) and their
    output is multiplied by 0 after the attention, so their gradients are 0 by autograd.
    ``allowed`` (broadcasting to the scores) says which pairs take part, to find the rows.
    """
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    mask = kwargs.pop("attn_mask", None)
    keep = None
    if allowed is not None:
        full = np.broadcast_to(allowed, (*q.shape[:-1], k.shape[-2]))
        empty = ~full.any(axis=-1, keepdims=True)
        keep = torch.from_numpy((~empty).astype(np.float64))
        if mask is not None:
            safe = np.where(np.broadcast_to(empty, full.shape), True if mask.dtype == bool
                            else 0.0, np.broadcast_to(mask, full.shape))
            mask = np.ascontiguousarray(safe)
    if mask is not None:
        kwargs["attn_mask"] = torch.from_numpy(mask)
    y = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, **kwargs)
    if keep is not None:
        y = y * keep
    y.backward(torch.from_numpy(dy))
    assert tq.grad is not None and tk.grad is not None and tv.grad is not None
    return y.detach().numpy(), tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy()


def _masks(name: str) -> tuple[dict[str, Any], np.ndarray | None]:
    """The keyword arguments of a mask kind and which pairs take part (None: all)."""
    if name == "none":
        return {}, None
    if name == "causal":
        return {"is_causal": True}, np.tril(np.ones((L, S), bool))
    if name == "boolean":
        mask = _bool_mask(1, (N, H, L, S))
        return {"attn_mask": mask}, mask
    if name == "boolean-broadcast":
        mask = _bool_mask(2, (L, S))
        return {"attn_mask": mask}, mask
    if name == "key-padding":  # (N, 1, 1, S): sample 1 keeps no key at all
        mask = np.ones((N, 1, 1, S), bool)
        mask[0, 0, 0, -2:] = False
        mask[1] = False
        return {"attn_mask": mask}, mask
    allowed = _bool_mask(3, (N, 1, L, S))  # additive: −∞ masks, finite values shift scores
    values = np.random.default_rng(4).normal(size=allowed.shape)
    return {"attn_mask": np.where(allowed, values, -np.inf)}, allowed


MASKS = ["none", "causal", "boolean", "boolean-broadcast", "key-padding", "additive"]


@pytest.mark.parametrize("mask_name", MASKS)
def test_sdpa_matches_torch_forward_and_gradients(case: Any, mask_name: str) -> None:
    q, k, v, dy = _qkv(case, 0)
    kwargs, allowed = _masks(mask_name)
    ours = {key: (case.asarray(val, dtype="bool") if val.dtype == bool else case.asarray(val))
            if isinstance(val, np.ndarray) else val for key, val in kwargs.items()}
    y, saved = F.scaled_dot_product_attention_forward(
        case.asarray(q), case.asarray(k), case.asarray(v), **ours)
    case.check_placement(y)
    dq, dk, dv = F.scaled_dot_product_attention_backward(case.asarray(dy), saved)
    want = _torch_sdpa(q, k, v, dy, allowed, **kwargs)
    for got, ref, what in zip((y, dq, dk, dv), want, ("y", "dq", "dk", "dv"), strict=True):
        assert np.isfinite(nb.to_numpy(got)).all(), what
        close(got, ref, case, f"{what}, mask {mask_name}")
    y_plain = F.scaled_dot_product_attention(
        case.asarray(q), case.asarray(k), case.asarray(v), **ours)
    np.testing.assert_array_equal(nb.to_numpy(y_plain), nb.to_numpy(y))
    if allowed is not None and not allowed.all(axis=-1).all():
        empty = ~np.broadcast_to(allowed, (N, H, L, S)).any(axis=-1)
        if empty.any():  # fully masked rows: zero output and zero query gradient
            assert (nb.to_numpy(y)[empty] == 0).all()
            assert (nb.to_numpy(dq)[empty] == 0).all()


def test_sdpa_scale_and_the_weights_gradient(case: Any) -> None:
    """An explicit scale, and a gradient of the weights A themselves (as MHA's need_weights)."""
    q, k, v, dy = _qkv(case, 5)
    dw = held(case, np.random.default_rng(6).normal(size=(N, H, L, S)))
    y, saved = F.scaled_dot_product_attention_forward(
        case.asarray(q), case.asarray(k), case.asarray(v), scale=0.7)
    grads = F.scaled_dot_product_attention_backward(case.asarray(dy), saved, case.asarray(dw))
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    weights = torch.softmax(tq @ tk.transpose(-2, -1) * 0.7, dim=-1)
    ty = weights @ tv
    ((ty * torch.from_numpy(dy)).sum() + (weights * torch.from_numpy(dw)).sum()).backward()
    close(y, ty.detach().numpy(), case, "y")
    close(saved.weights, weights.detach().numpy(), case, "weights")
    for got, ref, what in zip(grads, (tq, tk, tv), ("dq", "dk", "dv"), strict=True):
        assert ref.grad is not None
        close(got, ref.grad.numpy(), case, what)


def test_sdpa_dropout_uses_the_generator_and_its_mask(case: Any) -> None:
    q, k, v, dy = _qkv(case, 7)
    p = 0.3
    y, saved = F.scaled_dot_product_attention_forward(
        case.asarray(q), case.asarray(k), case.asarray(v), dropout_p=p, is_causal=True,
        generator=Generator(11))
    assert saved.mask is not None
    mask = np.array(nb.to_numpy(saved.mask))  # a writable copy (JAX's is read-only)
    assert mask.dtype == bool and mask.shape == (N, H, L, S) and 0 < mask.mean() < 1
    # The same stream on NumPy gives the same mask (one stream for every backend).
    np_mask = F.scaled_dot_product_attention_forward(
        q, k, v, dropout_p=p, is_causal=True, generator=Generator(11))[1].mask
    np.testing.assert_array_equal(mask, np_mask)
    dq, dk, dv = F.scaled_dot_product_attention_backward(case.asarray(dy), saved)
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    scores = tq @ tk.transpose(-2, -1) / np.sqrt(E)
    scores = scores.masked_fill(~torch.from_numpy(np.tril(np.ones((L, S), bool))), -np.inf)
    ty = (torch.softmax(scores, dim=-1) * torch.from_numpy(mask) / (1 - p)) @ tv
    ty.backward(torch.from_numpy(dy))
    close(y, ty.detach().numpy(), case, "y")
    for got, ref, what in zip((dq, dk, dv), (tq, tk, tv), ("dq", "dk", "dv"), strict=True):
        assert ref.grad is not None
        close(got, ref.grad.numpy(), case, what)


def test_sdpa_gradcheck(case: Any) -> None:
    if not case.is_float64:
        pytest.skip("finite differences need float64")
    rng = np.random.default_rng(8)
    q, k, v = (case.asarray(rng.normal(size=s)) for s in ((1, 2, 3, 2), (1, 2, 4, 2),
                                                           (1, 2, 4, 3)))
    r = case.asarray(rng.normal(size=(1, 2, 3, 3)))
    mask = _bool_mask(9, (3, 4))
    bias = case.asarray(np.where(mask, rng.normal(size=(3, 4)), -np.inf))
    xp = case.xp
    for kwargs in ({"is_causal": True}, {"attn_mask": bias}):
        def f(q: Any, k: Any, v: Any, kwargs: Any = kwargs) -> Any:
            return xp.sum(F.scaled_dot_product_attention(q, k, v, **kwargs) * r)

        saved = F.scaled_dot_product_attention_forward(q, k, v, **kwargs)[1]
        grads = F.scaled_dot_product_attention_backward(r, saved)
        nb.gradcheck(f, q, k, v, grads=list(grads))


def test_sdpa_refuses_bad_input(case: Any) -> None:
    q, k, v, _ = (case.asarray(a) for a in _qkv(case, 10))
    with pytest.raises(ValueError, match="attn_mask should not be set when is_causal=True"):
        F.scaled_dot_product_attention(q, k, v, case.asarray(np.ones((L, S), bool),
                                                             dtype="bool"), is_causal=True)
    with pytest.raises(ValueError, match=r"query \(\.\.\., L, E\), key \(\.\.\., S, E\).*got "
                                         r"shapes \(2, 3, 5, 4\), \(2, 3, 6, 4\), \(2, 3, 5, 3\)"):
        F.scaled_dot_product_attention(q, k, q[..., :3])
    with pytest.raises(ValueError, match=r"attn_mask of shape \(5, 5\) does not broadcast to "
                                         r"the attention scores' shape \(2, 3, 5, 6\)"):
        F.scaled_dot_product_attention(q, k, v, case.asarray(np.ones((L, L), bool),
                                                             dtype="bool"))
    with pytest.raises(TypeError, match=r"attn_mask must be boolean .* or of the query's dtype"):
        F.scaled_dot_product_attention(q, k, v, case.asarray(np.ones((L, S), np.int32),
                                                             dtype="int32"))
    with pytest.raises(TypeError, match=r"dropout_p=0.5 needs generator="):
        F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    with pytest.raises(ValueError, match="dropout_p"):
        F.scaled_dot_product_attention(q, k, v, dropout_p=1.5)
    with pytest.raises(ValueError, match=r"at least 2 axes"):
        F.scaled_dot_product_attention(q[0, 0, 0, :], k, v)
    _, saved = F.scaled_dot_product_attention_forward(q, k, v)
    with pytest.raises(ValueError, match=r"dy has shape \(2, 3, 5, 4\), the output had "
                                         r"\(2, 3, 5, 3\)"):
        F.scaled_dot_product_attention_backward(q, saved)


# ------------------------------------------------------------------------------------------
# MultiheadAttention


def _torch_mha(seed: int, batch_first: bool) -> torch.nn.MultiheadAttention:
    ref = torch.nn.MultiheadAttention(EMBED, H, batch_first=batch_first, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.from_numpy(rng.normal(0.0, 0.4, tuple(p.shape))))
    return ref


def _loaded(case: Any, ref: torch.nn.Module, layer: nb.Module) -> nb.Module:
    """``layer`` given ``ref``'s weights as the case's dtype holds them (both then equal)."""
    state = {k: held(case, v.detach().numpy()) for k, v in ref.state_dict().items()}
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    layer.load_state_dict({k: v.astype(case.dtype_name) for k, v in state.items()})
    return layer


def _mha(case: Any, batch_first: bool, **kwargs: Any) -> MultiheadAttention:
    return MultiheadAttention(EMBED, H, batch_first=batch_first, dtype=case.dtype_name,
                              backend=case.backend, seed=0, **kwargs)


def _seq(case: Any, rng: np.random.Generator, length: int, batch_first: bool) -> np.ndarray:
    return held(case, rng.normal(size=(N, length, EMBED) if batch_first else (length, N, EMBED)))


# (kind, batch_first): self-attention through one array, cross-attention through a tuple with
# the masks PyTorch takes, causal through the constructor, the returned weights.
MHA_CASES = [("self", False), ("self", True), ("cross", False), ("cross-masks", True),
             ("causal", True), ("causal-padding", False), ("weights", False),
             ("unbatched", False)]


JAX_MHA_CASES = ("cross-masks",)  # a tuple input, both masks, batch_first


@pytest.mark.parametrize(("kind", "batch_first"), MHA_CASES, ids=lambda c: str(c))
def test_mha_matches_torch(case: Any, kind: str, batch_first: bool) -> None:
    if kind not in JAX_MHA_CASES:
        _skip_on_jax(case)
    rng = np.random.default_rng(20)
    ref = _torch_mha(21, batch_first)
    layer = _loaded(case, ref, _mha(case, batch_first, is_causal=kind.startswith("causal"),
                                    need_weights=kind == "weights"))
    x, key, value = (_seq(case, rng, n, batch_first) for n in (L, S, S))
    dy = _seq(case, rng, L, batch_first)
    if kind == "unbatched":
        x, key, value, dy = (a[:, 0, :] for a in (x, key, value, dy))
    tx, tk, tv = (torch.tensor(a, requires_grad=True) for a in (x, key, value))
    kpm = rng.random((N, S)) < 0.3  # True: ignored (PyTorch's polarity for this layer)
    kpm[:, 0] = False
    attn = held(case, rng.normal(size=(N * H, L, S)))  # additive, per sample and head
    dw = None
    if kind in ("self", "causal"):
        mask = (torch.nn.Transformer.generate_square_subsequent_mask(L, dtype=torch.float64)
                if kind == "causal" else None)
        ty = ref(tx, tx, tx, attn_mask=mask, need_weights=False)[0]
        inputs: Any = case.asarray(x)
    elif kind == "causal-padding":  # the layer's causal mask and a padding mask, one bias
        pad = kpm[:, :L]
        ty = ref(tx, tx, tx, key_padding_mask=torch.from_numpy(np.where(pad, -np.inf, 0.0)),
                 attn_mask=torch.nn.Transformer.generate_square_subsequent_mask(
                     L, dtype=torch.float64), need_weights=False)[0]
        inputs = (case.asarray(x), case.asarray(x), case.asarray(x),
                  case.asarray(pad, dtype="bool"))
    elif kind == "cross-masks":
        # PyTorch takes both masks of one type: the padding as its additive form, here bool
        ty = ref(tx, tk, tv, key_padding_mask=torch.from_numpy(np.where(kpm, -np.inf, 0.0)),
                 attn_mask=torch.from_numpy(attn), need_weights=False)[0]
        inputs = (case.asarray(x), case.asarray(key), case.asarray(value),
                  case.asarray(kpm, dtype="bool"), case.asarray(attn))
    else:
        ty, tw = ref(tx, tk, tv)
        inputs = (case.asarray(x), case.asarray(key), case.asarray(value))
    loss = (ty * torch.from_numpy(dy)).sum()
    if kind == "weights":
        dw = held(case, rng.normal(size=tuple(tw.shape)))
        loss = loss + (tw * torch.from_numpy(dw)).sum()
    loss.backward()
    y, backprop = layer.forward(inputs)
    grads = backprop((case.asarray(dy), case.asarray(dw)) if dw is not None
                     else case.asarray(dy))
    if kind == "weights":
        y, weights = y
        close(weights, tw.detach().numpy(), case, "weights")
    case.check_placement(y)
    close(y, ty.detach().numpy(), case, "y")
    if kind in ("self", "causal"):
        close(grads, tx.grad.numpy(), case, "dx")
    elif kind == "causal-padding":  # one x as query, key and value: the three add up
        close(grads[0] + grads[1] + grads[2], tx.grad.numpy(), case, "dx")
    else:
        assert isinstance(grads, tuple) and len(grads) == len(inputs)
        assert all(g is None for g in grads[3:])
        for got, t, what in zip(grads, (tx, tk, tv), ("dquery", "dkey", "dvalue"), strict=False):
            close(got, t.grad.numpy(), case, what)
    params = dict(ref.named_parameters())
    for name, p in layer.named_parameters():
        close(p.grad, params[name].grad.numpy(), case, f"d{name}")


def _torch_masked_mha(ref: torch.nn.MultiheadAttention, x: torch.Tensor,
                      kpm: np.ndarray) -> torch.Tensor:
    """PyTorch's MultiheadAttention math (batch_first) with samples whose keys are all padded
    giving 0 before out_proj: their rows attend to every key, then are multiplied by 0."""
    n, length, e = x.shape
    qkv = torch.nn.functional.linear(x, ref.in_proj_weight, ref.in_proj_bias)
    q, k, v = (t.reshape(n, length, H, e // H).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    empty = kpm.all(axis=1)
    allowed = torch.from_numpy(~kpm | empty[:, None])[:, None, None, :]
    heads = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    heads = heads * torch.from_numpy((~empty).astype(np.float64))[:, None, None, None]
    return ref.out_proj(heads.transpose(1, 2).reshape(n, length, e))


def test_mha_fully_padded_sample_gives_zeros_and_no_nan(case: Any) -> None:
    _skip_on_jax(case)
    rng = np.random.default_rng(22)
    ref = _torch_mha(23, True)
    layer = _loaded(case, ref, _mha(case, True))
    x, dy = _seq(case, rng, L, True), _seq(case, rng, L, True)
    kpm = np.zeros((N, L), bool)
    kpm[0] = True  # every key of sample 0 ignored
    kpm[1, -2:] = True
    tx = torch.tensor(x, requires_grad=True)
    ty = _torch_masked_mha(ref, tx, kpm)
    ty.backward(torch.from_numpy(dy))
    xa = case.asarray(x)
    y, backprop = layer.forward((xa, xa, xa, case.asarray(kpm, dtype="bool")))
    dq, dk, dv, dmask = backprop(case.asarray(dy))
    assert dmask is None
    close(y, ty.detach().numpy(), case, "y")
    close(dq + dk + dv, tx.grad.numpy(), case, "dx")  # one x used three times: the sum
    params = dict(ref.named_parameters())
    for name, p in layer.named_parameters():
        assert np.isfinite(nb.to_numpy(p.grad)).all(), name
        close(p.grad, params[name].grad.numpy(), case, f"d{name}")
    bias = nb.to_numpy(layer.out_proj.bias.data)
    np.testing.assert_array_equal(nb.to_numpy(y)[0], np.broadcast_to(bias, (L, EMBED)))


def test_mha_boolean_attn_mask_true_is_not_allowed(case: Any) -> None:
    """MultiheadAttention's boolean attn_mask: True = not allowed (the SDPA function's
    opposite), as PyTorch's layer."""
    _skip_on_jax(case)
    rng = np.random.default_rng(24)
    ref = _torch_mha(25, False)
    layer = _loaded(case, ref, _mha(case, False))
    x = _seq(case, rng, L, False)
    blocked = np.triu(np.ones((L, L), bool), 1)
    tx = torch.from_numpy(x)
    ty = ref(tx, tx, tx, attn_mask=torch.from_numpy(blocked), need_weights=False)[0]
    xa = case.asarray(x)
    y = layer((xa, xa, xa, None, case.asarray(blocked, dtype="bool")))
    close(y, ty.detach().numpy(), case, "y")
    causal = _mha(case, False, is_causal=True)
    causal.load_state_dict(layer.state_dict())
    close(causal(xa), ty.detach().numpy(), case, "is_causal=True")


def test_mha_dropout_is_reproducible_and_off_in_eval(case: Any) -> None:
    _skip_on_jax(case)
    rng = np.random.default_rng(26)
    x = case.asarray(_seq(case, rng, L, True))
    layers = [_mha(case, True, dropout=0.5) for _ in range(2)]
    first = [nb.to_numpy(layers[0].forward(x)[0]) for _ in range(2)]
    assert not np.allclose(first[0], first[1])  # the stream advances
    np.testing.assert_array_equal(nb.to_numpy(layers[1].forward(x)[0]), first[0])
    plain = _mha(case, True)
    for layer in layers:
        layer.eval()
        close(layer(x), nb.to_numpy(plain(x)), case, "eval: no dropout")
    state = layers[0].get_extra_state()
    assert state["counter"] == 2
    layers[1].set_extra_state(state)
    layers[0].train()
    layers[1].train()
    np.testing.assert_array_equal(nb.to_numpy(layers[0].forward(x)[0]),
                                  nb.to_numpy(layers[1].forward(x)[0]))


def test_mha_gradcheck(case: Any) -> None:
    if not case.is_float64:
        pytest.skip("finite differences need float64")
    for kwargs in ({"batch_first": False}, {"batch_first": True, "is_causal": True}):
        layer = MultiheadAttention(4, 2, dtype="float64", backend=case.backend, seed=1, **kwargs)
        x = case.asarray(np.random.default_rng(27).normal(size=(3, 2, 4)))
        report = nb.gradcheck(layer, x)
        assert set(report.max_abs_error) == {"x", "in_proj_weight", "in_proj_bias",
                                             "out_proj.weight", "out_proj.bias"}


def test_mha_no_host_reads(case: Any) -> None:
    if case.backend.name != "gpulike":
        pytest.skip("only the GPU-like test device counts host reads")
    rng = np.random.default_rng(28)
    layer = _mha(case, True, dropout=0.2)
    causal = _mha(case, True, is_causal=True, need_weights=True)
    x, key = (case.asarray(_seq(case, rng, n, True)) for n in (L, S))
    kpm = case.asarray(rng.random((N, S)) < 0.5, dtype="bool")
    dy = case.asarray(_seq(case, rng, L, True))
    with count_host_reads() as reads:
        for _ in range(2):
            _, backprop = layer.forward(x)
            backprop(dy)
            _, backprop = layer.forward((x, key, key, kpm))
            backprop(dy)
            (_, weights), backprop = causal.forward(x)
            backprop((dy, weights))
            layer(x)
    assert reads.count == 0, reads


def test_mha_initialisation_and_description(case: Any) -> None:
    _skip_on_jax(case)
    layer = _mha(case, False, dropout=0.1)
    state = {k: nb.to_numpy(v) for k, v in layer.state_dict().items()}
    assert list(state) == ["in_proj_weight", "in_proj_bias", "out_proj.weight",
                           "out_proj.bias"]
    assert state["in_proj_weight"].shape == (3 * EMBED, EMBED)
    assert np.abs(state["in_proj_weight"]).max() <= np.sqrt(6 / (4 * EMBED))
    assert np.abs(state["out_proj.weight"]).max() <= 1 / np.sqrt(EMBED)
    assert not state["in_proj_bias"].any() and not state["out_proj.bias"].any()
    again = _mha(case, False, dropout=0.1)
    for name, value in again.state_dict().items():
        np.testing.assert_array_equal(nb.to_numpy(value), state[name])  # the same seed
    ref = torch.nn.MultiheadAttention(EMBED, H)
    assert {k: tuple(v.shape) for k, v in ref.state_dict().items()} \
        == {k: v.shape for k, v in state.items()}
    built = nb.layers.build(nb.layers.describe(layer), backend=case.backend)
    assert isinstance(built, MultiheadAttention) and repr(built) == repr(layer)
    assert built.config() == layer.config()
    no_bias = MultiheadAttention(EMBED, H, bias=False, backend=case.backend)
    assert [n for n, _ in no_bias.named_parameters()] == ["in_proj_weight", "out_proj.weight"]


def test_mha_refuses_bad_arguments_and_inputs(case: Any) -> None:
    with pytest.raises(ValueError, match=r"embed_dim=10 is not divisible by num_heads=3"):
        MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="add_bias_kv=True is not supported"):
        MultiheadAttention(6, 3, add_bias_kv=True)
    with pytest.raises(ValueError, match="add_zero_attn=True is not supported"):
        MultiheadAttention(6, 3, add_zero_attn=True)
    with pytest.raises(ValueError, match=r"kdim=4 differs from embed_dim=6"):
        MultiheadAttention(6, 3, kdim=4)
    layer = _mha(case, False)
    rng = np.random.default_rng(29)
    x = case.asarray(_seq(case, rng, L, False))
    with pytest.raises(ValueError, match=r"x must have shape \(L, N, E\) or \(L, E\) with E = "
                                         r"6, got \(5, 2, 4\)"):
        layer(x[..., :4])
    with pytest.raises(TypeError, match=r"a tuple \(query, key, value.*got a tuple of 2"):
        layer((x, x))
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(2, 5\), got "
                                         r"\(5, 2\)"):
        layer((x, x, x, case.asarray(np.zeros((L, N), bool), dtype="bool")))
    with pytest.raises(ValueError, match=r"attn_mask must have shape \(5, 5\) or \(6, 5, 5\)"):
        layer((x, x, x, None, case.asarray(np.zeros((2, L, L), bool), dtype="bool")))
    with pytest.raises(ValueError, match="one batch size"):
        layer((x, x[:, :1, :], x[:, :1, :]))
    other = "float32" if case.is_float64 else ("float64" if case.has_float64 else None)
    if other is not None:
        with pytest.raises(TypeError, match=rf"query has dtype {other}; expected "
                                            rf"{case.dtype_name}"):
            layer((case.backend.asarray(np.ones((L, N, EMBED)), dtype=other), x, x))
    causal = _mha(case, False, is_causal=True)
    with pytest.raises(ValueError, match="attn_mask was given to a layer built with "
                                         "is_causal=True"):
        causal((x, x, x, None, case.asarray(np.zeros((L, L), bool), dtype="bool")))
