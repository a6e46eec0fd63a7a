"""The sequence benchmarks (``nnbackend bench --sizes transformer,lstm``): the layers' FLOP
counts, the initial state as PyTorch's state dict, every target's step against an independent
NumPy float64 reference and against PyTorch's step on the same weights, the GEMM share, peak
memory, call counts and the command's rows.

No timing is asserted anywhere.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import bench

HAS_TORCH = importlib.util.find_spec("torch") is not None
SEQ_TINY = ("transformer-tiny", "lstm-tiny")
NNBACKEND_TARGETS = [t for t in bench.TARGETS if t.startswith("nnbackend-")]


def seq_target(name: str, size: str | None = None) -> bench.Target:
    """The target ``name``, or a skip naming why it cannot run here (a missing library, or a
    layer nnbackend does not have yet)."""
    try:
        target = bench.get_target(name)
        if target.impl == "nnbackend":
            for tiny in SEQ_TINY if size is None else (size,):
                bench.build_seq_model(bench.SEQ_SIZES[tiny], target.backend)
    except nb.BackendUnavailableError as exc:
        pytest.skip(f"{name}: {exc}")
    return target


def to_host(out: Any) -> np.ndarray:
    """A step's result on the host: nnbackend's through ``nb.to_numpy``, torch's detached."""
    if hasattr(out, "detach"):
        return np.asarray(out.detach().cpu().numpy())
    return np.asarray(nb.to_numpy(out))


# ------------------------------------------------------------------------ independent references


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * weight + bias


_erf = np.vectorize(math.erf)


def transformer_reference(state: dict[str, np.ndarray], x: np.ndarray, heads: int) -> np.ndarray:
    """The causal pre-norm encoder layer in float64 NumPy (seqspecs' formula)."""
    s = {k: v.astype(np.float64) for k, v in state.items()}
    x = x.astype(np.float64)
    n, t, d = x.shape
    dh = d // heads
    qkv = _layer_norm(x, s["norm1.weight"], s["norm1.bias"]) @ s["self_attn.in_proj_weight"].T
    qkv += s["self_attn.in_proj_bias"]
    q, k, v = (part.reshape(n, t, heads, dh).transpose(0, 2, 1, 3)
               for part in np.split(qkv, 3, axis=-1))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh)
    scores = np.where(np.tril(np.ones((t, t), bool)), scores, -np.inf)
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    a = (p @ v).transpose(0, 2, 1, 3).reshape(n, t, d)
    h = x + a @ s["self_attn.out_proj.weight"].T + s["self_attn.out_proj.bias"]
    z = _layer_norm(h, s["norm2.weight"], s["norm2.bias"]) @ s["linear1.weight"].T
    z += s["linear1.bias"]
    gelu = 0.5 * z * (1.0 + _erf(z / math.sqrt(2.0)))
    return h + gelu @ s["linear2.weight"].T + s["linear2.bias"]


def lstm_reference(state: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """One LSTM layer from zero states in float64 NumPy, gates i, f, g, o: the output (N, T, H)."""
    s = {k: v.astype(np.float64) for k, v in state.items()}
    n, t, _ = x.shape
    hidden = s["weight_hh_l0"].shape[1]
    h, c = np.zeros((n, hidden)), np.zeros((n, hidden))
    out = []
    for step in range(t):
        gates = (x[:, step].astype(np.float64) @ s["weight_ih_l0"].T + s["bias_ih_l0"]
                 + h @ s["weight_hh_l0"].T + s["bias_hh_l0"])
        i, f, g, o = np.split(gates, 4, axis=-1)

        def sigmoid(v: np.ndarray) -> np.ndarray:
            return 1.0 / (1.0 + np.exp(-v))

        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1)


def reference_output(spec: bench.SeqSpec, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(y, the loss mean((y − t)²)) of ``spec``'s benchmark data, in float64."""
    x, aim = bench.make_seq_data(spec, seed=seed)
    state = bench.seq_parameters(spec, seed=seed)
    if spec.kind == "transformer":
        y = transformer_reference(state, x, spec.heads)
    else:
        y = lstm_reference(state, x)
    return y, np.mean((y - aim) ** 2)


# ------------------------------------------------------------------------ specs


def test_seq_flops_follow_the_hand_count() -> None:
    block = bench.SEQ_SIZES["transformer"]  # d 128, 4 heads, T 128, batch 16, F 512
    tokens = 16 * 128
    linears = 2 * tokens * (128 * 384 + 128 * 128 + 128 * 512 + 512 * 128)
    attention = 2 * (2 * 16 * 4 * 128 * 128 * 32)  # QKᵀ and A·V, per head (N, h, T, T, d/h)
    assert block.flops("forward") == linears + attention == 939_524_096
    assert block.flops("fwd-bwd") == block.flops("train-adam") == 3 * (linears + attention)
    assert block.flops_by_layer("train-adam")["scores"] == (2 * 16 * 128 * 128 * 128,) * 3
    assert block.flops("forward", batch=2) == block.flops("forward") / 8
    lstm = bench.SEQ_SIZES["lstm"]  # input 64, hidden 128, T 64, batch 32
    per_step = 2 * 32 * (64 * 512 + 128 * 512)  # x W_ihᵀ and h W_hhᵀ, four gates each
    assert lstm.flops("forward") == 64 * per_step == 402_653_184
    assert lstm.flops("train-adam") == 3 * 64 * per_step
    assert lstm.flops_by_layer("forward") == {"input": (2 * 2048 * 64 * 512, 0, 0),
                                              "recurrent": (2 * 2048 * 128 * 512, 0, 0)}
    assert (block.label, lstm.label) == ("d128h4T128", "64-128T64")
    assert block.output_shape() == (16, 128, 128) and lstm.output_shape() == (32, 64, 128)
    with pytest.raises(ValueError, match="unknown workload 'backward'"):
        lstm.flops("backward")


def test_seq_parameters_are_pytorchs_state_dict() -> None:
    pytest.importorskip("torch")
    for name in SEQ_TINY:
        spec = bench.SEQ_SIZES[name]
        state = bench.seq_parameters(spec, seed=3)
        theirs = bench.build_torch_seq_model(spec, seed=3).state_dict()
        assert sorted(state) == sorted(theirs)
        for key, value in state.items():
            assert value.dtype == np.float32
            np.testing.assert_array_equal(theirs[key].numpy(), value, err_msg=key)
    lstm = bench.seq_parameters(bench.SEQ_SIZES["lstm"])
    assert lstm["weight_hh_l0"].shape == (512, 128)
    assert 0.0 < np.abs(lstm["weight_hh_l0"]).max() <= 1 / math.sqrt(128)  # U(±1/√H)
    block = bench.seq_parameters(bench.SEQ_SIZES["transformer"])
    assert block["self_attn.in_proj_weight"].shape == (384, 128)
    assert not block["self_attn.in_proj_bias"].any()


def test_seq_workloads_reject_the_floor_and_other_workloads() -> None:
    spec = bench.SEQ_SIZES["lstm-tiny"]
    with pytest.raises(nb.BackendUnavailableError, match="no hand-written floor"):
        bench.build_seq_workload(bench.get_target("floor"), spec, "forward")
    with pytest.raises(ValueError, match="lstm-tiny runs forward, fwd-bwd, train-adam, not"):
        bench.build_seq_workload(bench.get_target("floor"), spec, "train-sgd")


# ------------------------------------------------------------------------ PyTorch's steps


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
@pytest.mark.parametrize("size", SEQ_TINY)
def test_torch_steps_compute_the_reference_layer(size: str) -> None:
    """PyTorch's layer, as the benchmark configures it (causal, pre-norm, GELU, batch first;
    gates i, f, g, o), gives the float64 NumPy reference's output and loss."""
    spec = bench.SEQ_SIZES[size]
    y, loss = reference_output(spec)
    target = bench.get_target("torch-cpu")
    out = to_host(bench.build_seq_workload(target, spec, "forward")())
    np.testing.assert_allclose(out, y, rtol=1e-4, atol=1e-5)
    for workload in ("fwd-bwd", "train-adam"):
        step = bench.build_seq_workload(target, spec, workload)
        assert to_host(step()) == pytest.approx(loss, rel=1e-5)
    # Adam moved the weights: the second training step's loss differs
    assert to_host(step()) != pytest.approx(loss, rel=1e-5)


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
def test_the_transformer_is_causal() -> None:
    spec = bench.SEQ_SIZES["transformer-tiny"]
    torch = pytest.importorskip("torch")
    step = bench.build_seq_workload(bench.get_target("torch-cpu"), spec, "fwd-bwd")
    step()
    x = step.parts["input"]
    assert x.grad is not None and x.grad.shape == spec.input_shape()
    # the loss of position 0 only depends on x[:, 0]: its gradient is zero elsewhere
    model = step.parts["model"]
    xt = torch.from_numpy(bench.make_seq_data(spec)[0]).requires_grad_(True)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(spec.length)
    model(xt, src_mask=mask, is_causal=True)[:, 0].sum().backward()
    assert xt.grad is not None
    assert torch.all(xt.grad[:, 1:] == 0) and torch.any(xt.grad[:, 0] != 0)


# ------------------------------------------------------------------------ nnbackend's steps


@pytest.mark.parametrize("target_name", NNBACKEND_TARGETS)
@pytest.mark.parametrize("size", SEQ_TINY)
def test_nnbackend_steps_compute_the_reference_layer(size: str, target_name: str) -> None:
    """nnbackend's layer on every backend, through the harness: the reference's output and
    loss from the same weights and data; training steps move the loss."""
    if target_name == "nnbackend-jax" and size == "transformer-tiny":
        # JAX compiles every operation of a new shape on first use (~10-20 s for this layer's
        # steps); the layer is tested on the JAX row of its own tests, the LSTM here
        pytest.skip("the transformer on JAX: compile time; the LSTM runs on JAX")
    target = seq_target(target_name, size)
    spec = bench.SEQ_SIZES[size]
    y, loss = reference_output(spec)
    # JAX compiles every operation of a new shape: the training step only (it runs the forward)
    workloads = ("train-adam",) if target.backend == "jax" else spec.workloads
    for workload in workloads:
        step = bench.build_seq_workload(target, spec, workload)
        out = to_host(step())
        if workload == "forward":
            np.testing.assert_allclose(out, y, rtol=1e-4, atol=1e-5)
        else:
            assert out.shape == ()
            assert float(out) == pytest.approx(loss, rel=1e-5)
    assert float(to_host(step())) != pytest.approx(loss, rel=1e-5)


def comparable(key: str, value: np.ndarray) -> np.ndarray:
    """``value`` without the keys' bias (the middle third of ``in_proj_bias``): softmax is
    invariant to q·b_k, added to every score of a row, so its gradient is zero and each library
    holds float32 rounding noise there, which Adam's normalised steps then turn into ±lr."""
    if key != "self_attn.in_proj_bias":
        return value
    d = value.shape[0] // 3
    return np.concatenate([value[:d], value[2 * d:]])


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
@pytest.mark.parametrize("size", SEQ_TINY)
def test_nnbackend_and_torch_steps_agree(size: str) -> None:
    """The same loss from the same weights, the same gradients, and the same weights after two
    Adam steps (float32)."""
    target = seq_target("nnbackend-numpy", size)
    spec = bench.SEQ_SIZES[size]
    torch_target = bench.get_target("torch-cpu")
    mine = bench.build_seq_workload(target, spec, "fwd-bwd")
    theirs = bench.build_seq_workload(torch_target, spec, "fwd-bwd")
    assert float(to_host(mine())) == pytest.approx(float(to_host(theirs())), rel=1e-5)
    grads = {k: p.grad.numpy() for k, p in theirs.parts["model"].named_parameters()}
    got = {k: nb.to_numpy(p.grad) for k, p in mine.parts["model"].named_parameters()}
    assert sorted(got) == sorted(grads)
    for key, expected in grads.items():
        np.testing.assert_allclose(comparable(key, got[key]), comparable(key, expected),
                                   rtol=2e-4, atol=2e-6 * float(np.abs(expected).max()),
                                   err_msg=key)
    mine = bench.build_seq_workload(target, spec, "train-adam")
    theirs = bench.build_seq_workload(torch_target, spec, "train-adam")
    for _ in range(2):
        assert float(to_host(mine())) == pytest.approx(float(to_host(theirs())), rel=1e-5)
    weights = {k: v.detach().numpy() for k, v in theirs.parts["model"].state_dict().items()}
    state = mine.parts["model"].state_dict()
    for key, expected in weights.items():
        np.testing.assert_allclose(comparable(key, nb.to_numpy(state[key])),
                                   comparable(key, expected), rtol=1e-5, atol=1e-6, err_msg=key)


# ------------------------------------------------------------------------ measurements


def test_seq_gemm_share_per_implementation() -> None:
    spec = bench.SEQ_SIZES["transformer-tiny"]
    if HAS_TORCH:
        for size in SEQ_TINY:
            share = bench.seq_gemm_share(bench.get_target("torch-cpu"), bench.SEQ_SIZES[size],
                                         "train-adam", steps=1)
            assert share is not None and 0.0 < share < 1.0, size
    target = bench.Target("nnbackend-cupy", "nnbackend", "cupy", "cuda:0")
    assert bench.seq_gemm_share(target, spec, "forward") is None  # asynchronous: not timed
    mine = seq_target("nnbackend-numpy", "transformer-tiny")
    share = bench.seq_gemm_share(mine, spec, "fwd-bwd", steps=1)
    assert share is not None and 0.0 < share < 1.0


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
def test_count_calls_of_a_torch_lstm_step() -> None:
    spec = bench.SEQ_SIZES["lstm-tiny"]
    target = bench.get_target("torch-cpu")
    count = bench.count_calls(target, spec, "train-adam")
    assert count is not None and count.unit == "aten"
    # oneDNN's fused LSTM layer, forward and backward, once each
    assert count.by_name["aten.mkldnn_rnn_layer.default"] == 1
    assert count.by_name["aten.mkldnn_rnn_layer_backward.default"] == 1
    assert bench.count_calls(bench.get_target("floor"), spec, "forward") is None


def test_peak_rss_growth_of_a_sequence_step_runs_in_a_fresh_process() -> None:
    seq_target("nnbackend-numpy", "lstm-tiny")
    result = bench.peak_rss_growth("nnbackend-numpy", "lstm-tiny", "train-adam", steps=2)
    assert (result.target, result.size, result.workload, result.steps) == (
        "nnbackend-numpy", "lstm-tiny", "train-adam", 2)
    assert result.growth_bytes >= 0 and result.baseline_bytes > 10 * 2**20  # Python + NumPy


def test_resolve_names_knows_the_sequence_layers() -> None:
    _, specs = bench.resolve_names("numpy", "transformer, lstm,lstm")
    assert specs == [bench.SEQ_SIZES["transformer"], bench.SEQ_SIZES["lstm"]]
    with pytest.raises(ValueError, match="choose from small, medium, large, lenet, resblock, "
                                         "transformer, lstm"):
        bench.resolve_names("numpy", "gru")


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
def test_run_cli_measures_the_sequence_layers(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    out = io.StringIO()
    rc = bench.run_cli("numpy,torch", list(SEQ_TINY), path, None, budget_s=0.002, memory=False,
                       stream=out, workloads=["train-adam"])
    assert rc == 0
    text = out.getvalue()
    assert text.startswith("nnbackend bench: float32 sequence layers;")
    assert "sizes: transformer-tiny d8h2T5 batch 2 · lstm-tiny 3-4T5 batch 2" in text
    document = json.loads(path.read_text(encoding="utf-8"))
    rows = document["rows"]
    for size in SEQ_TINY:
        targets = {r["target"] for r in rows if r["size"] == size}
        assert "torch-cpu" in targets and "floor" not in targets  # no floor for these layers
        if "nnbackend-numpy" not in targets:  # nnbackend lacks the layer here: said
            assert f"not measured: nnbackend-numpy {size}: " in text
        expected = {("train-adam", t) for t in targets}
        assert {(r["workload"], r["target"]) for r in rows if r["size"] == size} == expected
    assert {r["target"] for r in rows} <= {"torch-cpu", "nnbackend-numpy"}
    for r in rows:
        spec = bench.SEQ_SIZES[r["size"]]
        assert r["widths"] == spec.label and r["batch"] == 2
        assert r["gflops"] == pytest.approx(spec.flops(r["workload"]) / r["seconds"] / 1e9)
        assert r["gemm_method"] == ("profiler" if r["impl"] == "torch" else "inline")
        assert r["vs_floor"] is None and r["vs_torch"] is not None
        assert r["peak_rss_bytes"] is None  # memory=False
    settings = document["settings"]["sizes"]["lstm-tiny"]
    assert settings["layer"] == "lstm" and settings["hidden"] == 4
