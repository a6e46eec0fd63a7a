"""Recurrent layers (RNN, LSTM, GRU; functional.recurrent) against PyTorch autograd in float64 on
the whole matrix: outputs, final states and every gradient (input, initial states, each weight)
over one and two layers, both directions, lengths 1 and 50, batch_first both ways, from a torch
state dict; gradcheck; no host reads on the GPU-like device; inter-layer dropout against its
masks; RecurrentOutput in a Sequential; descriptions; bad input named by the layer."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pytest
import torch
from conftest import Case

import nnbackend as nb
import nnbackend.functional as F
from nnbackend.layers import build, describe
from nnbackend.layers.recurrent import RecurrentInputError
from nnbackend.testing import count_host_reads


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Any:
    """The references on one thread (tiny tensors: two threads on two busy cores only wait)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


KINDS = {"RNN_TANH": (nb.RNN, torch.nn.RNN), "RNN_RELU": (nb.RNN, torch.nn.RNN),
         "LSTM": (nb.LSTM, torch.nn.LSTM), "GRU": (nb.GRU, torch.nn.GRU)}


def _host(case: Case, a: np.ndarray) -> np.ndarray:
    """The float64 values the case's dtype holds (the reference sees the same inputs)."""
    return a.astype(case.dtype_name).astype(np.float64)


def _close(case: Case, got: Any, want: np.ndarray, what: str) -> None:
    got = nb.to_numpy(got)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = float(np.abs(want).max()) if want.size else 1.0
    # float32 rows at the matrix's tolerance: 50 steps of two layers measured 3.5e-7 relative;
    # never below the dtype's smallest normal (a reference that small underflows in the dtype,
    # as saturated gates' gradients of 1e-44 do in float32, in PyTorch's float32 too)
    atol = max(case.rtol * (scale or 1.0), float(np.finfo(got.dtype).tiny))
    np.testing.assert_allclose(got, want, rtol=case.rtol, atol=atol, err_msg=what)


def _arguments(mode: str, **kwargs: Any) -> dict[str, Any]:
    if mode.startswith("RNN"):
        kwargs["nonlinearity"] = "tanh" if mode == "RNN_TANH" else "relu"
    return kwargs


def _pair(case: Case, mode: str, input_size: int, hidden: int, **kwargs: Any
          ) -> tuple[nb.Module, torch.nn.Module]:
    """Our layer and PyTorch's with the same weights (PyTorch's init, rounded to the case's
    dtype), loaded through PyTorch's state dict converted to NumPy."""
    ours_cls, torch_cls = KINDS[mode]
    kwargs = _arguments(mode, **kwargs)
    # a seed of the arguments that is the same in every process (str hashes are salted per run)
    torch.manual_seed(zlib.crc32(repr((mode, input_size, hidden)).encode()) % 1000)
    reference = torch_cls(input_size, hidden, dtype=torch.float64, **kwargs)
    state = {k: v.detach().numpy().astype(case.dtype_name) for k, v in
             reference.state_dict().items()}
    reference.load_state_dict({k: torch.tensor(v.astype(np.float64)) for k, v in state.items()})
    layer = ours_cls(input_size, hidden, dtype=case.dtype_name, backend=case.backend, seed=0,
                     **kwargs)
    layer.load_state_dict(state)
    return layer, reference


# (mode, layers, bidirectional, T, N, I, H, batch_first, initial states, bias): one and two
# layers, both directions, lengths 1 and 50 (50 with a small hidden size), batch_first both.
CONFIGS = [
    ("LSTM", 2, True, 4, 3, 3, 4, False, True, True),
    ("GRU", 2, True, 4, 3, 3, 4, True, True, True),
    ("RNN_TANH", 2, False, 4, 3, 3, 4, True, True, True),
    ("RNN_RELU", 1, True, 4, 3, 3, 4, False, False, False),
    ("LSTM", 1, False, 1, 2, 3, 4, True, True, False),
    ("GRU", 1, False, 1, 2, 3, 4, False, False, True),
    ("LSTM", 2, False, 50, 2, 2, 3, True, True, True),
    ("GRU", 1, True, 50, 2, 2, 3, False, True, True),
    ("RNN_TANH", 1, False, 50, 2, 2, 3, False, False, True),
]


def _config_id(config: Any) -> str:
    mode, layers, bid, t, _, _, _, first, hx, bias = config
    return (f"{mode}-L{layers}{'-bi' if bid else ''}-T{t}{'-bf' if first else ''}"
            f"{'-hx' if hx else ''}{'' if bias else '-nobias'}")


def _torch_reference(mode: str, reference: torch.nn.Module, x: np.ndarray, hx: Any,
                     d_output: np.ndarray | None, dh: np.ndarray | None,
                     dc: np.ndarray | None) -> dict[str, np.ndarray]:
    """PyTorch's forward and autograd gradients for L = Σ output·d_output + Σ h_n·dh + ...."""
    xt = torch.tensor(x, requires_grad=True)
    states = None if hx is None else [torch.tensor(s, requires_grad=True) for s in hx]
    if states is None:
        output, final = reference(xt)
    else:
        output, final = reference(xt, tuple(states) if mode == "LSTM" else states[0])
    h_n, c_n = final if mode == "LSTM" else (final, None)
    loss = output.sum() * 0.0
    if d_output is not None:
        loss = loss + (output * torch.tensor(d_output)).sum()
    if dh is not None:
        loss = loss + (h_n * torch.tensor(dh)).sum()
    if dc is not None and c_n is not None:
        loss = loss + (c_n * torch.tensor(dc)).sum()
    reference.zero_grad()
    loss.backward()
    out = {"output": output.detach().numpy(), "h_n": h_n.detach().numpy(),
           "dx": xt.grad.numpy()}
    if c_n is not None:
        out["c_n"] = c_n.detach().numpy()
    if states is not None:
        out["dh0"] = states[0].grad.numpy()
        if mode == "LSTM":
            out["dc0"] = states[1].grad.numpy()
    for name, p in reference.named_parameters():
        out[name] = p.grad.numpy()
    return out


# JAX compiles every operation once per shape (~1-2 s a configuration): it runs the LSTM's and
# the GRU's (two layers, both directions, both layouts; its RNN kernels are those of
# array-api-strict's rows, jitted), and the dropout test, on their shapes; the tests of
# plumbing that does not depend on the namespace (Sequential, descriptions, errors) skip it.
JAX_CONFIGS = CONFIGS[:2]


def _skip_jax(case: Case, what: str) -> None:
    if case.backend.name == "jax":
        pytest.skip(f"JAX compiles per shape: {what} runs on the other rows")


@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_layers_match_torch(case: Case, config: Any) -> None:
    if config not in JAX_CONFIGS:
        _skip_jax(case, "this configuration")
    mode, layers, bid, t, n, i, h, batch_first, with_hx, bias = config
    layer, reference = _pair(case, mode, i, h, num_layers=layers, bidirectional=bid,
                             batch_first=batch_first, bias=bias)
    rng = np.random.default_rng(t * 7 + layers)
    d = 2 if bid else 1
    x = _host(case, rng.standard_normal((n, t, i) if batch_first else (t, n, i)))
    state_shape = (layers * d, n, h)
    hx = [_host(case, rng.standard_normal(state_shape)) for _ in range(2 if mode == "LSTM" else 1)]
    out_shape = (n, t, d * h) if batch_first else (t, n, d * h)
    d_output = _host(case, rng.standard_normal(out_shape))
    dh = _host(case, rng.standard_normal(state_shape))
    dc = _host(case, rng.standard_normal(state_shape)) if mode == "LSTM" else None
    if config == CONFIGS[2]:
        dh = None  # only the output sequence carries a gradient
    if config == CONFIGS[0]:
        d_output = None  # only the final states do
    want = _torch_reference(mode, reference, x, hx if with_hx else None, d_output, dh, dc)

    xs = case.asarray(x)
    states = [case.asarray(s) for s in hx]
    hx_arg = (tuple(states) if mode == "LSTM" else states[0]) if with_hx else None
    inputs = (xs, hx_arg) if with_hx else xs
    y, backprop = layer.forward(inputs)
    output, final = y
    h_n, c_n = final if mode == "LSTM" else (final, None)
    case.check_placement(output)
    _close(case, output, want["output"], "output")
    _close(case, h_n, want["h_n"], "h_n")
    if mode == "LSTM":
        _close(case, c_n, want["c_n"], "c_n")
    inferred = layer(inputs)[0]
    _close(case, inferred, want["output"], "output of layer(x)")

    dy_state: Any = None if dh is None else case.asarray(dh)
    if mode == "LSTM":
        dy_state = (dy_state, case.asarray(dc))
    grads = backprop((None if d_output is None else case.asarray(d_output), dy_state))
    if with_hx:
        dx, dstate = grads
        if mode == "LSTM":
            _close(case, dstate[0], want["dh0"], "dh0")
            _close(case, dstate[1], want["dc0"], "dc0")
        else:
            _close(case, dstate, want["dh0"], "dh0")
    else:
        dx = grads
    case.check_placement(dx)
    _close(case, dx, want["dx"], "dx")
    params = dict(layer.named_parameters())
    assert sorted(params) == sorted(name for name, _ in reference.named_parameters())
    for name, p in params.items():
        _close(case, p.grad, want[name], f"d{name}")


def test_unbatched_input_and_initial_state(case: Case) -> None:
    """(T, I) input and (L·D, H) states, as PyTorch's unbatched form."""
    _skip_jax(case, "the unbatched layout (a reshape)")
    layer, reference = _pair(case, "LSTM", 3, 4, num_layers=1, bidirectional=True)
    rng = np.random.default_rng(3)
    x = _host(case, rng.standard_normal((5, 3)))
    hx = [_host(case, rng.standard_normal((2, 4))) for _ in range(2)]
    d_output = _host(case, rng.standard_normal((5, 8)))
    dh, dc = (_host(case, rng.standard_normal((2, 4))) for _ in range(2))
    want = _torch_reference("LSTM", reference, x, hx, d_output, dh, dc)
    (output, (h_n, c_n)), backprop = layer.forward(
        (case.asarray(x), (case.asarray(hx[0]), case.asarray(hx[1]))))
    _close(case, output, want["output"], "output")
    _close(case, h_n, want["h_n"], "h_n")
    _close(case, c_n, want["c_n"], "c_n")
    dx, (dh0, dc0) = backprop((case.asarray(d_output), (case.asarray(dh), case.asarray(dc))))
    _close(case, dx, want["dx"], "dx")
    _close(case, dh0, want["dh0"], "dh0")
    _close(case, dc0, want["dc0"], "dc0")


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_tiny_sigmoid_gates_keep_their_relative_precision(case: Case, mode: str) -> None:
    """Sigmoid gates at pre-activations near −30 (biases −30 on i, f, o / r, z), where the tanh
    form ½ tanh(½ a) + ½ gives exactly 0 in float32 and keeps 3 digits in float64, while σ(−30)
    is 9.4e-14: outputs, final states and every gradient, all of the order of those gates, to
    the matrix's relative tolerance of PyTorch's float64. The GRU's n gate has no input
    weights or bias, so h_t ≈ r ⊙ (W_hn h + b_hn) + z ⊙ h_{t−1} is made of the small gates
    alone; the LSTM's c_1 = f ⊙ c_0 + i ⊙ g and h = o ⊙ tanh c likewise (CONFIGS[0]'s and
    [1]'s shapes: JAX compiles once)."""
    t, n, i, h = 4, 3, 3, 4
    torch.manual_seed(11)
    reference = KINDS[mode][1](i, h, dtype=torch.float64)
    with torch.no_grad():
        sigmoid_rows = [0, 1, 3] if mode == "LSTM" else [0, 1]
        for k in sigmoid_rows:
            reference.bias_ih_l0[k * h: (k + 1) * h] = -30.0
        if mode == "GRU":
            reference.weight_ih_l0[2 * h:] = 0.0
            reference.bias_ih_l0[2 * h:] = 0.0
    state = {k: v.detach().numpy().astype(case.dtype_name) for k, v in
             reference.state_dict().items()}
    reference.load_state_dict({k: torch.tensor(v.astype(np.float64)) for k, v in state.items()})
    layer = KINDS[mode][0](i, h, dtype=case.dtype_name, backend=case.backend, seed=0)
    layer.load_state_dict(state)
    rng = np.random.default_rng(12)
    x = _host(case, rng.standard_normal((t, n, i)))
    hx = [_host(case, rng.standard_normal((1, n, h))) for _ in range(2 if mode == "LSTM" else 1)]
    d_output = _host(case, rng.standard_normal((t, n, h)))
    dh = _host(case, rng.standard_normal((1, n, h)))
    dc = _host(case, rng.standard_normal((1, n, h))) if mode == "LSTM" else None
    want = _torch_reference(mode, reference, x, hx, d_output, dh, dc)
    assert 1e-30 < np.abs(want["output"]).max() < 1e-12  # the gates' scale, far from 0
    states = [case.asarray(s) for s in hx]
    (output, final), backprop = layer.forward(
        (case.asarray(x), tuple(states) if mode == "LSTM" else states[0]))
    h_n, c_n = final if mode == "LSTM" else (final, None)
    _close(case, output, want["output"], "output")
    _close(case, h_n, want["h_n"], "h_n")
    dy_state: Any = case.asarray(dh)
    if mode == "LSTM":
        _close(case, c_n, want["c_n"], "c_n")
        dy_state = (dy_state, case.asarray(dc))
    dx, dstate = backprop((case.asarray(d_output), dy_state))
    _close(case, dx, want["dx"], "dx")
    if mode == "LSTM":
        _close(case, dstate[0], want["dh0"], "dh0")
        _close(case, dstate[1], want["dc0"], "dc0")
    else:
        _close(case, dstate, want["dh0"], "dh0")
    for name, p in layer.named_parameters():
        _close(case, p.grad, want[name], f"d{name}")


def test_sigmoid_into_is_sigmoid_bit_for_bit(case: Case) -> None:
    """The in-place sigmoid of the gates (functional.activations.sigmoid_into, out = x itself
    and a separate out) against functional.sigmoid, over the whole line: ±0, ±inf, NaN, the
    tails where σ is subnormal in float32 and where it rounds to 1."""
    _skip_jax(case, "sigmoid_into writes into its arrays (JAX's are immutable)")
    from nnbackend.functional.activations import sigmoid_into

    grid = np.concatenate([np.linspace(-120.0, 40.0, 4001), [0.0, -0.0, np.inf, -np.inf,
                                                              np.nan, 1e-30, -1e-30]])
    x = case.asarray(grid)
    want = nb.to_numpy(F.sigmoid(x))
    out, scratch = case.asarray(np.zeros(grid.shape)), case.asarray(np.zeros(grid.shape))
    sigmoid_into(x, out=out, scratch=scratch)
    np.testing.assert_array_equal(nb.to_numpy(out), want)
    assert np.array_equal(nb.to_numpy(x), grid.astype(case.dtype_name), equal_nan=True)
    sigmoid_into(x, out=x, scratch=scratch)
    np.testing.assert_array_equal(nb.to_numpy(x), want)


@pytest.mark.parametrize("mode", ["RNN_TANH", "LSTM", "GRU"])
def test_gradcheck(case: Case, mode: str) -> None:
    """Finite differences of the output sequence (and of the last step) through a Sequential."""
    if not case.is_float64:
        pytest.skip("finite differences need float64")
    cls = KINDS[mode][0]
    layer = cls(2, 2, num_layers=2 if mode == "RNN_TANH" else 1, bidirectional=mode == "GRU",
                dtype="float64", backend=case.backend, seed=4, **_arguments(mode))
    keep = "last" if mode == "LSTM" else "sequence"
    model = nb.Sequential(layer, nb.RecurrentOutput(keep))
    x = case.asarray(np.random.default_rng(5).standard_normal((3, 2, 2)))
    nb.gradcheck(model, x)


def test_no_host_reads_on_the_gpulike_device(case: Case) -> None:
    if case.backend.name != "gpulike":
        pytest.skip("only the GPU-like test device counts host reads")
    dt, be = case.dtype_name, case.backend
    lstm = nb.LSTM(3, 4, num_layers=2, bidirectional=True, dropout=0.5, dtype=dt, backend=be,
                   seed=0)
    gru = nb.GRU(3, 4, batch_first=True, dtype=dt, backend=be, seed=1)
    rnn = nb.RNN(3, 4, nonlinearity="relu", dtype=dt, backend=be, seed=2)
    rng = np.random.default_rng(6)
    x = case.asarray(rng.standard_normal((5, 2, 3)))
    h0 = case.asarray(rng.standard_normal((4, 2, 4)))
    g0 = case.asarray(rng.standard_normal((1, 5, 4)))  # batch first: x is (N=5, T=2, 3)
    with count_host_reads() as reads:
        (out, (h_n, c_n)), backprop = lstm.forward((x, (h0, h0)))
        backprop((out, (h_n, c_n)))
        (out, h_n), backprop = gru.forward((x, g0))
        backprop((out, None))
        (out, h_n), backprop = rnn.forward(x)
        dx = backprop((None, h_n))
        lstm(x)
    assert reads.count == 0, reads
    case.check_placement(dx)


def test_dropout_between_layers_uses_the_layers_stream(case: Case) -> None:
    """In training, layer 0's output is masked as functional.dropout masks it with a generator
    in the layer's state (the reference: two one-layer PyTorch LSTMs with that mask between);
    eval mode applies no dropout; the stream's counter is extra state and resumes."""
    p = 0.4
    layer, reference = _pair(case, "LSTM", 3, 4, num_layers=2, dropout=p)
    state0 = layer.get_extra_state()
    rng = np.random.default_rng(7)
    x = _host(case, rng.standard_normal((4, 3, 3)))  # CONFIGS[0]'s shapes (JAX compiles once)
    d_output = _host(case, rng.standard_normal((4, 3, 4)))
    (output, _), backprop = layer.forward(case.asarray(x))
    dx = backprop((case.asarray(d_output), None))
    twin = nb.random.Generator.from_state(state0)
    ones = case.asarray(np.ones((4, 3, 4)))
    _, mask = F.dropout(ones, p, generator=twin)
    scale = nb.to_numpy(mask).astype(np.float64) / (1.0 - p)
    first, second = (torch.nn.LSTM(3 if k == 0 else 4, 4, dtype=torch.float64) for k in (0, 1))
    for k, part in enumerate((first, second)):
        part.load_state_dict({name.replace(f"_l{k}", "_l0"): value
                              for name, value in reference.state_dict().items()
                              if name.endswith(f"_l{k}")})
    xt = torch.tensor(x, requires_grad=True)
    yt = second(first(xt)[0] * torch.tensor(scale))[0]
    (yt * torch.tensor(d_output)).sum().backward()
    _close(case, output, yt.detach().numpy(), "output with dropout")
    _close(case, dx, xt.grad.numpy(), "dx with dropout")
    assert layer.get_extra_state() == twin.state()
    layer.eval()
    reference.eval()
    _close(case, layer(case.asarray(x))[0], reference(torch.tensor(x))[0].detach().numpy(),
           "eval output")


def test_recurrent_output_in_a_sequential(case: Case) -> None:
    """Sequential(LSTM, RecurrentOutput("last", batch_first=True), Linear) against PyTorch's
    ``linear(lstm(x)[0][:, -1])``: output and every gradient, ∂L/∂x asked for."""
    _skip_jax(case, "the Sequential plumbing")
    lstm, reference = _pair(case, "LSTM", 3, 4, batch_first=True)
    linear = nb.Linear(4, 2, dtype=case.dtype_name, backend=case.backend, seed=8)
    model = nb.Sequential(lstm, nb.RecurrentOutput("last", batch_first=True), linear)
    rng = np.random.default_rng(9)
    x = _host(case, rng.standard_normal((3, 4, 3)))  # CONFIGS[1]'s shapes (JAX compiles once)
    dy = _host(case, rng.standard_normal((3, 2)))
    w = nb.to_numpy(linear.weight.data).astype(np.float64)
    xt = torch.tensor(x, requires_grad=True)
    yt = reference(xt)[0][:, -1] @ torch.tensor(w).T
    (yt * torch.tensor(dy)).sum().backward()
    y, backprop = model.forward(case.asarray(x), input_grad=True)
    _close(case, y, yt.detach().numpy(), "y")
    _close(case, backprop(case.asarray(dy)), xt.grad.numpy(), "dx")
    for name, p in reference.named_parameters():
        _close(case, getattr(lstm, name).grad, p.grad.numpy(), name)
    sequence = nb.Sequential(nb.GRU(3, 4, seed=1, dtype=case.dtype_name, backend=case.backend),
                             nb.RecurrentOutput(), nb.Linear(4, 2, seed=2, dtype=case.dtype_name,
                                                             backend=case.backend))
    assert tuple(sequence(case.asarray(x)).shape) == (3, 4, 2)


def test_initialisation_is_pytorchs_range_and_the_same_on_every_backend(case: Case) -> None:
    layer = nb.GRU(3, 16, num_layers=2, dtype=case.dtype_name, backend=case.backend, seed=11)
    host = nb.GRU(3, 16, num_layers=2, dtype=case.dtype_name, seed=11)
    bound = 1.0 / 4.0
    for (name, p), (_, q) in zip(layer.named_parameters(), host.named_parameters(), strict=True):
        values = nb.to_numpy(p.data)
        np.testing.assert_array_equal(values, nb.to_numpy(q.data), err_msg=name)
        assert values.min() >= -bound and values.max() <= bound, name
        assert values.max() - values.min() > bound, name  # spread over the range


def test_description_round_trip(case: Case) -> None:
    _skip_jax(case, "descriptions")
    model = nb.Sequential(
        nb.LSTM(3, 4, num_layers=2, bidirectional=True, dropout=0.25, batch_first=True,
                dtype=case.dtype_name, backend=case.backend, seed=12),
        nb.RecurrentOutput("last", batch_first=True),
        nb.Linear(8, 2, dtype=case.dtype_name, backend=case.backend, seed=13))
    desc = describe(model)
    twin = build(desc, backend=case.backend)
    twin.load_state_dict(model.state_dict())
    assert describe(twin) == desc
    model.eval()
    twin.eval()
    x = case.asarray(np.random.default_rng(14).standard_normal((3, 4, 3)))
    np.testing.assert_array_equal(nb.to_numpy(twin(x)), nb.to_numpy(model(x)))
    size = nb.layers.description._KINDS["LSTM"].state_size
    assert size is not None
    assert size(desc["config"]["layers"][0]["config"]) == sum(
        int(np.prod(p.shape)) for p in model[0].parameters())


def test_bad_input_is_named(case: Case) -> None:
    _skip_jax(case, "the error messages")
    dt, be = case.dtype_name, case.backend
    lstm = nb.LSTM(3, 4, num_layers=2, dtype=dt, backend=be, seed=0)
    x = case.asarray(np.zeros((5, 2, 3)))
    with pytest.raises(RecurrentInputError, match=r"LSTM\(3, 4, num_layers=2\): input must be "
                       r"\(T, N, 3\) or \(T, 3\) for one sequence, got shape \(5, 2, 3, 1\)"):
        lstm(case.asarray(np.zeros((5, 2, 3, 1))))
    with pytest.raises(RecurrentInputError, match=r"LSTM\(3, 4, num_layers=2\): input has 2 "
                       r"features on its last axis, expected input_size=3"):
        lstm(case.asarray(np.zeros((5, 2, 2))))
    h0 = case.asarray(np.zeros((1, 2, 4)))
    with pytest.raises(RecurrentInputError, match=r"LSTM\(3, 4, num_layers=2\): h0 must have "
                       r"shape \(2, 2, 4\) .* for input of shape \(5, 2, 3\), got \(1, 2, 4\)"):
        lstm((x, (h0, case.asarray(np.zeros((2, 2, 4))))))
    with pytest.raises(TypeError, match=r"LSTM\(3, 4, num_layers=2\): the initial state of an "
                       r"LSTM is a pair \(h0, c0\)"):
        lstm((x, case.asarray(np.zeros((2, 2, 4)))))
    gru = nb.GRU(3, 4, batch_first=True, dtype=dt, backend=be, seed=0)
    with pytest.raises(RecurrentInputError, match=r"GRU\(3, 4, batch_first=True\): h0 must "
                       r"have shape \(1, 5, 4\)"):
        gru((x, case.asarray(np.zeros((1, 2, 4)))))
    with pytest.raises(RecurrentInputError, match=r"GRU\(3, 4, batch_first=True\): input must "
                       r"be \(N, T, 3\)"):
        gru.forward(case.asarray(np.zeros((3,))))
    seq = nb.Sequential(nb.RNN(3, 4, dtype=dt, backend=be, seed=0), nb.RecurrentOutput())
    with pytest.raises(RecurrentInputError, match=r"RNN\(3, 4\): input has 5 features"):
        seq.forward(case.asarray(np.zeros((2, 2, 5))))


def test_bad_arguments_are_named() -> None:
    with pytest.raises(NotImplementedError, match=r"LSTM: proj_size=2 is not supported"):
        nb.LSTM(3, 4, proj_size=2)
    with pytest.raises(ValueError, match=r"RNN: nonlinearity must be 'tanh' or 'relu', got "
                       r"'gelu'"):
        nb.RNN(3, 4, nonlinearity="gelu")
    with pytest.raises(ValueError, match=r"GRU: dropout must lie in \[0, 1\], got 1.5"):
        nb.GRU(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match=r"LSTM: hidden_size"):
        nb.LSTM(3, 0)
    with pytest.warns(UserWarning, match=r"dropout=0.5 has no effect with num_layers=1"):
        nb.GRU(3, 4, dropout=0.5)
    with pytest.raises(ValueError, match=r"RecurrentOutput: keep must be 'sequence' or 'last'"):
        nb.RecurrentOutput("first")
    with pytest.raises(TypeError, match=r"RecurrentOutput\('sequence'\) takes a recurrent "
                       r"layer's \(output, state\) tuple, got ndarray of shape \(2, 3\)"):
        nb.RecurrentOutput()(np.zeros((2, 3)))


def test_an_lstm_state_pair_may_leave_one_part_out(case: Case) -> None:
    """(h0, None) is (h0, zeros): the same output as PyTorch's with c0 = 0, and the gradient
    tuple has None for the state that was not given."""
    layer, reference = _pair(case, "LSTM", 3, 4)
    rng = np.random.default_rng(15)
    x = _host(case, rng.standard_normal((4, 3, 3)))  # CONFIGS[0]'s shapes (JAX compiles once)
    h0 = _host(case, rng.standard_normal((1, 3, 4)))
    d_output = _host(case, rng.standard_normal((4, 3, 4)))
    want = _torch_reference("LSTM", reference, x, [h0, np.zeros((1, 3, 4))], d_output, None,
                            None)
    (output, _), backprop = layer.forward((case.asarray(x), (case.asarray(h0), None)))
    _close(case, output, want["output"], "output")
    dx, (dh0, dc0) = backprop((case.asarray(d_output), None))
    assert dc0 is None
    _close(case, dx, want["dx"], "dx")
    _close(case, dh0, want["dh0"], "dh0")


def test_a_state_of_another_dtype_is_refused() -> None:
    layer = nb.GRU(3, 4, dtype="float32", seed=0)
    x = np.zeros((2, 1, 3), np.float32)
    with pytest.raises(TypeError, match=r"GRU\(3, 4\): h0 has dtype float64; expected float32"):
        layer((x, np.zeros((1, 1, 4))))


def test_lstm_saturated_gates_match_pytorch_without_warnings(case: Case) -> None:
    """Gate pre-activations far into both tails (|a| in the hundreds: exp(−a) overflows, sigmoid
    gates of exactly 0 or 1) give PyTorch's float64 outputs and gradients, finite, with no
    overflow warning (the suite turns warnings into errors), on every row."""
    # The weights are _pair's fixed seed: with others a gate of moderate a (1 − σ(a) ≈ e^−a,
    # which float32 holds to ulp(1)/e^−a relative) meets the ±800 inputs in ∂L/∂W, and float32
    # (PyTorch's too) ends up 1e-4 off the float64 value, beyond the matrix's tolerance.
    layer, reference = _pair(case, "LSTM", 3, 4)
    x = _host(case, np.array([[[300.0, -400.0, 5.0]], [[-900.0, 800.0, -2.0]],
                              [[1.0, 2.0, -3.0]]]))
    d_output = np.arange(12.0).reshape(3, 1, 4) % 3 - 1.0
    xt = torch.tensor(x, requires_grad=True)
    out_t, _ = reference(xt)
    (out_t * torch.tensor(d_output)).sum().backward()
    (output, _), backprop = layer.forward(case.asarray(x))
    _close(case, output, out_t.detach().numpy(), "output")
    dx = backprop((case.asarray(d_output), None))
    _close(case, dx, xt.grad.numpy(), "dx")
    torch_grads = dict(reference.named_parameters())
    for name, p in layer.named_parameters():
        _close(case, p.grad, torch_grads[name].grad.numpy(), f"d{name}")
