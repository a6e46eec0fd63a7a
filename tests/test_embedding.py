"""Embedding (functional and layer) against PyTorch autograd in float64 on the whole matrix:
the lookup and ∂L/∂W with repeated ids (native scatter and the standard segment sum), many
repeated ids and rare ids after frequent ones, padding_idx, ids of every integer dtype and
shape, ids out of range (checked on the host, NaN rows off it), the integer-input boundary of
a model whose first layer is an Embedding, initialisation, state dicts, descriptions,
gradcheck and no host reads."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _compare import close, held

import nnbackend as nb
import nnbackend.functional as F
from nnbackend._libraries import is_host_array
from nnbackend.functional.embedding import embedding_backward, embedding_forward
from nnbackend.testing import count_host_reads

V, E = 11, 5


def _torch_reference(ids: np.ndarray, weight: np.ndarray, dy: np.ndarray,
                     padding_idx: int | None) -> tuple[np.ndarray, np.ndarray]:
    w = torch.tensor(weight, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.embedding(torch.from_numpy(ids.astype(np.int64)), w,
                                      padding_idx=padding_idx)
    y.backward(torch.from_numpy(dy))
    assert w.grad is not None
    return y.detach().numpy(), w.grad.numpy()


@pytest.mark.parametrize("padding_idx", [None, 3, -2])
@pytest.mark.parametrize("native", [True, False], ids=["native", "standard"])
def test_functional_matches_torch(case: Any, padding_idx: int | None, native: bool) -> None:
    rng = np.random.default_rng(1)
    ids = rng.integers(0, V, (4, 6))
    ids[0, :3] = 3  # a repeated id, and the padding id (3, and 9 for -2)
    ids[1, 0] = 9
    weight, dy = held(case, rng.normal(size=(V, E))), held(case, rng.normal(size=(4, 6, E)))
    y_ref, dw_ref = _torch_reference(ids, weight, dy, padding_idx)
    W = case.asarray(weight)
    y, saved = embedding_forward(case.asarray(ids, dtype=case.index_dtype_name), W, padding_idx)
    case.check_placement(y)
    assert tuple(y.shape) == (4, 6, E)
    np.testing.assert_array_equal(nb.to_numpy(y), y_ref)  # a lookup: exact
    dw = embedding_backward(case.asarray(dy), saved, native=native)
    case.check_placement(dw)
    assert tuple(dw.shape) == (V, E)
    close(dw, dw_ref, case, "dW")
    if padding_idx is not None:
        assert not nb.to_numpy(dw)[padding_idx].any()
    y = F.embedding(case.asarray(ids, dtype="int32"), W, padding_idx)
    np.testing.assert_array_equal(nb.to_numpy(y), y_ref)


@pytest.mark.parametrize("native", [True, False], ids=["native", "standard"])
def test_many_repeated_ids_and_rare_ids_after_frequent_ones(case: Any, native: bool) -> None:
    """2,000 positions, most on three ids, a few ids seen once after them (sorted last): the
    frequent rows to the matrix's tolerance on their scale, and each rare row to its *own*
    relative tolerance (a difference of prefix sums would leave it the rounding error of the
    ~2,000 rows summed before it, 1e-4 relative in float32)."""
    if not native and case.backend.name == "jax":
        pytest.skip("JAX takes its scatter; its standard path is covered above (one compile less)")
    rng = np.random.default_rng(2)
    vocab = 40
    ids = rng.choice(3, size=(50, 40), p=[0.6, 0.3, 0.1])
    rare = np.arange(30, 40)
    ids[7, :10] = rare
    weight = held(case, rng.normal(size=(vocab, E)))
    dy = held(case, rng.normal(size=(50, 40, E)) * 100.0)
    dy[7, :10] *= 1e-6  # rare rows small beside the frequent mass
    _, dw_ref = _torch_reference(ids, weight, dy, None)
    _, saved = embedding_forward(case.asarray(ids, dtype=case.index_dtype_name),
                                 case.asarray(weight))
    dw = nb.to_numpy(embedding_backward(case.asarray(dy), saved, native=native))
    close(dw[:3], dw_ref[:3], case, "frequent ids")
    eps = np.finfo(case.dtype_name).eps
    np.testing.assert_allclose(dw[rare], dw_ref[rare], rtol=4 * eps, err_msg="rare ids")
    assert not dw[3:30].any()  # ids never seen: exact zeros


def test_segment_sum_error_bound_in_float32() -> None:
    """The standard scan's bound, ⌈log₂ c⌉ · ε · Σ|rows| per segment, holds for every id of a
    skewed draw (8,192 rows), measured against float64 sums."""
    from nnbackend.functional.embedding import segment_sum_rows

    rng = np.random.default_rng(3)
    ids = rng.zipf(1.5, 8192) % 50
    rows = rng.normal(size=(8192, 3)).astype(np.float32)
    got = segment_sum_rows(ids, rows, num=50, xp=nb.get_backend("numpy").xp).astype(np.float64)
    exact = np.zeros((50, 3))
    mass = np.zeros((50, 3))
    np.add.at(exact, ids, rows.astype(np.float64))
    np.add.at(mass, ids, np.abs(rows.astype(np.float64)))
    counts = np.bincount(ids, minlength=50)[:, None]
    bound = np.ceil(np.log2(np.maximum(counts, 2))) * np.finfo(np.float32).eps / 2 * mass
    assert (np.abs(got - exact) <= bound).all()


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32", "int64", "uint32"])
def test_every_integer_dtype_and_shape(case: Any, dtype: str) -> None:
    if dtype == "int64" and case.index_dtype_name == "int32":
        pytest.skip("no int64 on JAX without 64-bit types")
    rng = np.random.default_rng(4)
    weight = held(case, rng.normal(size=(V, E)))
    layer = nb.Embedding(V, E, dtype=case.dtype_name, backend=case.backend)
    layer.load_state_dict({"weight": weight.astype(case.dtype_name)})
    for shape in [(), (2, 3, 4)]:
        ids = rng.integers(0, V, shape)
        y = layer(case.asarray(ids, dtype=dtype))
        case.check_placement(y)
        np.testing.assert_array_equal(nb.to_numpy(y), weight[ids])


def test_layer_in_a_sequential_matches_torch(case: Any) -> None:
    """Sequential(Embedding, Linear) from a torch state dict: the output and every gradient."""
    rng = np.random.default_rng(5)
    ref = torch.nn.Sequential(torch.nn.Embedding(V, E, padding_idx=0), torch.nn.Linear(E, 3))
    ref = ref.double()
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.from_numpy(held(case, p.numpy())))
    model = nb.Sequential(nb.Embedding(V, E, padding_idx=0, dtype=case.dtype_name),
                          nb.Linear(E, 3, dtype=case.dtype_name), backend=case.backend)
    model.load_state_dict({k: v.detach().numpy().astype(case.dtype_name)
                           for k, v in ref.state_dict().items()})
    ids = rng.integers(0, V, (3, 4))
    ids[0, 0] = 0
    dy = held(case, rng.normal(size=(3, 4, 3)))
    y_ref = ref(torch.from_numpy(ids))
    y_ref.backward(torch.from_numpy(dy))
    y, backprop = model.forward(case.asarray(ids, dtype=case.index_dtype_name))
    assert backprop(case.asarray(dy)) is None  # ids have no gradient
    close(y, y_ref.detach().numpy(), case, "y")
    for (name, p), (_, q) in zip(model.named_parameters(), ref.named_parameters(), strict=True):
        assert q.grad is not None
        close(p.grad, q.grad.numpy(), case, name)
    assert not nb.to_numpy(model[0].weight.grad)[0].any()  # the padding row


def test_gradcheck(case: Any) -> None:
    if not case.is_float64:
        pytest.skip("finite differences need float64")
    rng = np.random.default_rng(6)
    ids = case.asarray(rng.integers(0, 6, (3, 4)), dtype=case.index_dtype_name)
    weight = case.asarray(rng.normal(size=(6, 2)))
    r = case.asarray(rng.normal(size=(3, 4, 2)))
    xp = case.xp

    def loss(w: Any) -> Any:
        return xp.sum(F.embedding(ids, w) * r)  # (padding_idx's zero gradient is by design)

    _, saved = embedding_forward(ids, weight)
    nb.gradcheck(loss, weight, grads=[embedding_backward(r, saved)])


def test_no_host_reads(case: Any) -> None:
    if case.backend.name != "gpulike":
        pytest.skip("only the GPU-like test device counts host reads")
    rng = np.random.default_rng(7)
    model = nb.Sequential(nb.Embedding(V, E, padding_idx=2, dtype=case.dtype_name, seed=0),
                          nb.Linear(E, 2, dtype=case.dtype_name, seed=1), backend=case.backend)
    ids = case.asarray(rng.integers(0, V, (3, 5)), dtype="int32")
    dy = case.asarray(rng.normal(size=(3, 5, 2)))
    with count_host_reads() as reads:
        for _ in range(2):
            _, backprop = model.forward(ids)
            backprop(dy)
            model(ids)
    assert reads.count == 0, reads


def test_init_is_standard_normal_with_a_zero_padding_row(case: Any) -> None:
    """N(0, 1) from numpy's default_rng(seed), the same on every backend; padding row zero."""
    layer = nb.Embedding(V, E, padding_idx=4, seed=9, dtype=case.dtype_name,
                         backend=case.backend)
    case.check_placement(layer.weight.data)
    want = np.random.default_rng(9).standard_normal((V, E))
    want[4] = 0.0
    np.testing.assert_array_equal(nb.to_numpy(layer.weight.data), want.astype(case.dtype_name))
    big = nb.Embedding(1000, 50, seed=1, dtype="float64", backend="numpy").weight.data
    assert abs(big.mean()) < 0.01 and abs(big.std() - 1.0) < 0.01


def test_torch_state_dict_loads_and_description_rebuilds(case: Any) -> None:
    ref = torch.nn.Embedding(V, E, padding_idx=1).double()
    layer = nb.Embedding(V, E, padding_idx=1, dtype=case.dtype_name, backend=case.backend)
    layer.load_state_dict({"weight": ref.weight.detach().numpy().astype(case.dtype_name)})
    ids = np.array([[1, 2], [10, 0]])
    close(layer(case.asarray(ids, dtype=case.index_dtype_name)),
           ref(torch.from_numpy(ids)).detach().numpy(), case, "y")
    assert set(layer.state_dict()) == {"weight"}
    twin = nb.layers.build(nb.layers.describe(layer), backend=case.backend)
    assert repr(twin) == repr(layer) == "Embedding(11, 5, padding_idx=1)"
    twin.load_state_dict(layer.state_dict())
    np.testing.assert_array_equal(nb.to_numpy(twin.weight.data), nb.to_numpy(layer.weight.data))


def test_float_ids_are_refused_at_the_boundary(case: Any) -> None:
    layer = nb.Embedding(V, E, dtype=case.dtype_name, backend=case.backend)
    model = nb.Sequential(layer, nb.Linear(E, 2, dtype=case.dtype_name), backend=case.backend)
    for dtype in ("float32", case.dtype_name):  # another dtype, and the table's own
        x = case.asarray(np.zeros((2, 3)), dtype=dtype)
        for target in (layer, model):
            with pytest.raises(TypeError, match=r"Embedding\(11, 5\).*token ids must be "
                                                r"integers, got float\d\d of shape \(2, 3\)"):
                target(x)
            with pytest.raises(TypeError, match="token ids must be integers"):
                target.forward(x)


def test_ids_on_another_device_are_refused(case: Any) -> None:
    layer = nb.Embedding(V, E, dtype=case.dtype_name, backend=case.backend)
    if case.backend.name == "numpy":
        other = nb.get_backend("gpulike").asarray(np.zeros(3, dtype=np.int32))
    else:
        other = np.zeros(3, dtype=np.int64)
    with pytest.raises(ValueError, match=r"Embedding\(11, 5\): input is .*expected"):
        layer(other)


def test_ids_out_of_range(case: Any) -> None:
    """In host memory: ValueError naming the layer, the range and the offending id. Off the
    host (not read back): NaN rows, and no gradient from them."""
    layer = nb.Embedding(V, E, dtype=case.dtype_name, backend=case.backend, seed=0)
    for bad in (V, -1):
        ids = case.asarray(np.array([[0, bad], [3, 3]]), dtype=case.index_dtype_name)
        if is_host_array(ids):
            with pytest.raises(ValueError, match=rf"Embedding\(11, 5\): token ids must lie in "
                                                 rf"\[0, 11\) .*got {bad}"):
                layer(ids)
            with pytest.raises(ValueError, match=rf"got {bad}"):
                layer.forward(ids)
            continue
        y, backprop = layer.forward(ids)
        got = nb.to_numpy(y)
        assert np.isnan(got[0, 1]).all() and np.isfinite(np.delete(got.reshape(4, E), 1, 0)).all()
        layer.zero_grad()
        backprop(case.asarray(np.ones((2, 2, E))))
        grad = nb.to_numpy(layer.weight.grad)
        np.testing.assert_array_equal(grad[0], 1.0)
        np.testing.assert_array_equal(grad[3], 2.0)
        assert np.isfinite(grad).all() and grad.sum() == 3 * E


def test_a_model_whose_first_sub_module_is_an_embedding_takes_ids(case: Any) -> None:
    """A user's container (a language model's shape) takes ids through forward and __call__,
    with no declaration of its own: its first sub-module's input kind is its own."""

    class Tiny(nb.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tokens = nb.Embedding(V, E, dtype=case.dtype_name, seed=0)
            self.head = nb.Linear(E, V, dtype=case.dtype_name, seed=1)

        def forward_pass(self, x: Any, ctx: Any) -> Any:
            h, back_tokens = self.tokens.forward_pass(x, ctx)
            y, back_head = self.head.forward_pass(h, ctx.wanting_input_grad)

            def backprop(dy: Any) -> Any:
                return back_tokens(back_head(dy))

            return y, backprop

    model = Tiny().to(case.backend)
    ids = case.asarray(np.array([[1, 2, 3]]), dtype=case.index_dtype_name)
    y = model(ids)
    assert tuple(y.shape) == (1, 3, V)
    _, backprop = model.forward(ids)
    assert backprop(y) is None
    assert model.tokens.weight.grad is not None
    # The boundary names the model and its Embedding; floats in the table's own dtype pass
    # its identity test and are refused by the Embedding itself (naming it).
    with pytest.raises(TypeError, match=r"(Tiny\(\) \(its first layer )?Embedding\(11, 5\)\)?: "
                                        "token ids must be integers, got float"):
        model(_other_float(case, np.zeros((1, 3))))


def _other_float(case: Any, a: np.ndarray) -> Any:
    """``a`` in a floating dtype that is not the model's (so the boundary's fast path fails and
    its checks speak), or in the model's own where there is no other."""
    if case.has_float64:
        return case.asarray(a, dtype="float32" if case.is_float64 else "float64")
    return case.asarray(a, dtype="float32")


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"max_norm": 1.0}, NotImplementedError, "max_norm=1.0"),
    ({"scale_grad_by_freq": True}, NotImplementedError, "scale_grad_by_freq=True"),
    ({"sparse": True}, NotImplementedError, "sparse=True"),
    ({"padding_idx": 11}, ValueError, r"padding_idx must lie in \[-11, 11\), got 11"),
    ({"padding_idx": 1.0}, TypeError, "padding_idx must be an int"),
])
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=f"Embedding: {match}"):
        nb.Embedding(V, E, **kwargs)


def test_bad_weight_and_gradient_shapes() -> None:
    ids = np.array([1, 2])
    with pytest.raises(ValueError, match=r"embedding: weight must be a floating "
                                         r"\(num_embeddings, embedding_dim\) matrix, got shape "
                                         r"\(3,\)"):
        F.embedding(ids, np.zeros(3))
    _, saved = embedding_forward(ids, np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"dy has shape \(2, 3\), the output had \(2, 2\)"):
        embedding_backward(np.zeros((2, 3)), saved)
