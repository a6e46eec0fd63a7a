"""TransformerLM (the small GPT): loss and every gradient against a PyTorch float64 model with
the same weights, 20 Adam steps along PyTorch's trajectory, the tie, descriptions and
checkpoints, bad input; and the character LSTM of nnbackend.models."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _compare import one_torch_thread  # noqa: F401 (a module-scoped autouse fixture)
from conftest import Case

import nnbackend as nb
from nnbackend.layers import DescriptionError, TransformerLM, build, describe
from nnbackend.models import char_lstm, gpt
from nnbackend.testing import count_host_reads

torch = pytest.importorskip("torch")
tnn = torch.nn

V, D, HEADS, LAYERS, CONTEXT = 11, 8, 2, 2, 12


class TorchGPT(tnn.Module):
    """The PyTorch model of the same structure and state-dict names (tied output)."""

    def __init__(self, vocab: int, d: int, heads: int, layers: int, context: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.token_embedding = tnn.Embedding(vocab, d)
        self.position_embedding = tnn.Embedding(context, d)
        self.dropout = tnn.Dropout(dropout)
        self.layers = tnn.ModuleList(
            tnn.TransformerEncoderLayer(d, heads, 4 * d, dropout, activation="gelu",
                                        norm_first=True, batch_first=True)
            for _ in range(layers))
        self.norm = tnn.LayerNorm(d)
        self.lm_head = tnn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.token_embedding.weight

    def forward(self, x: Any) -> Any:
        t = x.shape[1]
        h = self.dropout(self.token_embedding(x) + self.position_embedding(torch.arange(t)))
        mask = tnn.Transformer.generate_square_subsequent_mask(t, dtype=h.dtype)
        for layer in self.layers:
            h = layer(h, src_mask=mask, is_causal=True)
        return self.lm_head(self.norm(h))


def _torch_model(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    model = TorchGPT(V, D, HEADS, LAYERS, CONTEXT).double()
    with torch.no_grad():  # non-trivial norms, so their gradients are tested as such
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _state(model: Any) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _ours(case: Case, torch_model: Any) -> TransformerLM:
    model = TransformerLM(V, D, HEADS, LAYERS, context=CONTEXT, dtype=case.dtype,
                          backend=case.backend, seed=0)
    state = _state(torch_model)
    assert "lm_head.weight" in state and "token_embedding.weight" in state  # both keys
    model.load_state_dict({k: v.astype(case.dtype_name) for k, v in state.items()})
    return model


def _tolerances(case: Case, reference: np.ndarray) -> dict[str, float]:
    if case.is_float64:
        return {"rtol": 1e-10, "atol": 1e-12 * float(np.abs(reference).max())}
    return {"rtol": 1e-4, "atol": 1e-5 * float(np.abs(reference).max())}


def test_loss_and_every_gradient_match_pytorch(case: Case) -> None:
    torch_model = _torch_model()
    model = _ours(case, torch_model)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, size=(3, CONTEXT - 2))  # shorter than the table: P's tail unused
    targets = rng.integers(0, V, size=(3, CONTEXT - 2))
    logits_t = torch_model(torch.as_tensor(ids))
    loss_t = tnn.functional.cross_entropy(logits_t.reshape(-1, V), torch.as_tensor(
        targets).reshape(-1))
    loss_t.backward()

    x = case.asarray(ids, dtype=case.index_dtype_name)
    y_ids = case.asarray(targets, dtype=case.index_dtype_name)
    with count_host_reads() as reads:
        logits, backprop = model.forward(x)
        loss, dlogits = nb.CrossEntropyLoss()(logits, y_ids)
        assert backprop(dlogits) is None
    if case.backend.name == "gpulike":
        assert reads.count == 0, reads
    case.check_placement(logits)
    ref = logits_t.detach().numpy()
    np.testing.assert_allclose(case.backend.to_numpy(logits), ref, **_tolerances(case, ref))
    assert float(case.backend.to_numpy(loss)) == pytest.approx(loss_t.item(),
                                                               rel=_tolerances(case, ref)["rtol"])
    ours = dict(model.named_parameters())
    theirs = dict(torch_model.named_parameters())
    assert sorted(ours) == sorted(theirs)  # the tied weight once, under its first name
    for name, p in theirs.items():
        grad = p.grad.numpy()
        got = case.backend.to_numpy(ours[name].grad)
        np.testing.assert_allclose(got, grad, err_msg=name, **_tolerances(case, grad))
    # the positions past T get exactly zero gradient
    assert not case.backend.to_numpy(ours["position_embedding.weight"].grad)[CONTEXT - 2:].any()
    # inference gives the training forward's logits
    np.testing.assert_allclose(case.backend.to_numpy(model(x)), case.backend.to_numpy(logits),
                               rtol=1e-12 if case.is_float64 else 1e-5, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["Adam", "AdamW"])
def test_twenty_adam_steps_follow_pytorch(case: Case, optimizer: str) -> None:
    if not case.is_float64:
        pytest.skip("the trajectory is compared in float64")
    torch_model = _torch_model(3)
    model = _ours(case, torch_model)
    lr = 3e-3 if optimizer == "Adam" else 1e-2  # AdamW: the command line's rate, decay 0.01
    opt_t = getattr(torch.optim, optimizer)(torch_model.parameters(), lr=lr)
    opt = getattr(nb.optim, optimizer)(model.parameters(), lr=lr)
    stream = np.random.default_rng(4).integers(0, V, size=400)
    data = nb.data.sequence_batches(stream, context=CONTEXT, batch_size=4, steps_per_epoch=20,
                                    seed=0, backend=case.backend)
    loss_fn = nb.CrossEntropyLoss()
    for step, (x, y) in enumerate(data):
        xt = torch.as_tensor(case.backend.to_numpy(x))
        yt = torch.as_tensor(case.backend.to_numpy(y))
        opt_t.zero_grad()
        loss_t = tnn.functional.cross_entropy(torch_model(xt).reshape(-1, V), yt.reshape(-1))
        loss_t.backward()
        opt_t.step()
        logits, backprop = model.forward(x)
        loss, dy = loss_fn(logits, y)
        opt.zero_grad()
        backprop(dy)
        opt.step()
        assert float(case.backend.to_numpy(loss)) == pytest.approx(loss_t.item(), rel=1e-9), step
    assert step == 19
    ours = dict(model.named_parameters())
    for name, p in torch_model.named_parameters():
        want = p.detach().numpy()
        np.testing.assert_allclose(case.backend.to_numpy(ours[name].data), want, rtol=1e-9,
                                   atol=1e-9 * float(np.abs(want).max()), err_msg=name)


def test_the_output_projection_is_the_token_embedding() -> None:
    model = gpt(V, d_model=D, nhead=HEADS, num_layers=1, context=CONTEXT, seed=0)
    assert model.lm_head.weight is model.token_embedding.weight
    assert "lm_head.weight" not in model.state_dict()  # held once, under its first name
    # a PyTorch state dict whose two entries differ is refused
    state = _state(TorchGPT(V, D, HEADS, 1, CONTEXT))
    state = {k: v.astype(np.float32) for k, v in state.items()}
    state["lm_head.weight"] = state["lm_head.weight"] + 1.0
    with pytest.raises(ValueError, match="one \\(tied\\) parameter"):
        model.load_state_dict(state)


def test_description_and_checkpoint_rebuild_the_tied_model(tmp_path: Any) -> None:
    model = gpt(V, d_model=D, nhead=HEADS, num_layers=LAYERS, context=CONTEXT, dropout=0.1,
                seed=0)
    description = describe(model)
    assert description["type"] == "TransformerLM"
    assert description["config"]["dropout"] == 0.1
    twin = build(description)
    assert isinstance(twin, TransformerLM)
    assert twin.lm_head.weight is twin.token_embedding.weight
    twin.load_state_dict(model.state_dict())
    x = np.random.default_rng(0).integers(0, V, size=(2, 5))
    model.eval()
    twin.eval()
    np.testing.assert_array_equal(twin(x), model(x))
    path = tmp_path / "gpt.npz"
    nb.checkpoint.save(path, model, epoch=1)
    loaded, meta = nb.checkpoint.load_model(path)
    loaded.eval()
    np.testing.assert_array_equal(loaded(x), model(x))
    assert meta["model"] == description


def test_ties_made_by_hand_are_still_refused() -> None:
    embedding = nb.layers.Embedding(V, D, seed=0)
    head = nb.Linear(D, V, bias=False, seed=1)
    head.weight = embedding.weight
    with pytest.raises(DescriptionError, match="tied weights"):
        describe(nb.Sequential(embedding, head))


def test_bad_input() -> None:
    model = gpt(V, d_model=D, nhead=HEADS, num_layers=1, context=CONTEXT, seed=0)
    with pytest.raises(TypeError, match="token ids must be integers, got float32"):
        model(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError,
                       match=r"Embedding\(11, 8\): token ids must lie in \[0, 11\).* got 11"):
        model(np.array([[1, 11]]))
    with pytest.raises(ValueError, match="length 13 is longer than the positional table's 12"):
        model(np.zeros((1, CONTEXT + 1), dtype=np.int64))
    with pytest.raises(ValueError, match=r"expected token ids \(N, T\), got shape \(5,\)"):
        model(np.zeros(5, dtype=np.int64))
    with pytest.raises(ValueError, match="divisible"):
        gpt(V, d_model=10, nhead=4)
    with pytest.raises(ValueError, match="dropout must be a number in"):
        gpt(V, dropout=1.0)


def test_char_lstm_is_a_describable_sequential() -> None:
    model = char_lstm(V, embedding_dim=6, hidden_size=10, seed=0)
    x = np.random.default_rng(0).integers(0, V, size=(2, 7))
    logits, backprop = model.forward(x)
    assert logits.shape == (2, 7, V)
    _, dy = nb.CrossEntropyLoss()(logits, x)
    backprop(dy)
    assert all(p.grad is not None for p in model.parameters())
    twin = build(describe(model))
    twin.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(twin(x), model(x))
