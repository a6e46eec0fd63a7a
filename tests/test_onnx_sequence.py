"""ONNX export of the sequence layers (Embedding, MultiheadAttention, TransformerEncoderLayer,
TransformerLM, RNN/LSTM/GRU, RecurrentOutput, the ready-made gpt and char_lstm) on the whole
matrix: each exported from a model on the case's backend, checked by ``onnx.checker`` and run
by onnxruntime at other batch sizes and sequence lengths than the example's, against the
model's own output (float32 graphs: 1e-5 relative, 1e-6 absolute). Also ``nnbackend export``
on language-model checkpoints of ``nnbackend train``, and the inputs that are refused."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Case

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import nnbackend as nb  # noqa: E402
import nnbackend.onnx as nx  # noqa: E402
from nnbackend import models  # noqa: E402
from nnbackend.cli import main  # noqa: E402
from nnbackend.onnx import UnsupportedLayerError  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """PyTorch's row on one thread (tiny tensors: two threads on two busy cores only wait;
    measured 3 s instead of 0.05 for the two-layer LSTM under load)."""
    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _leaves(value: Any) -> list[Any]:
    """The arrays of a (nested) tuple in order: how the graph's outputs are laid out."""
    if isinstance(value, tuple):
        return [leaf for part in value for leaf in _leaves(part)]
    return [value]


def _on_case(case: Case, host: Any) -> Any:
    """Host data (nested tuples too) on the case's backend: floats in its dtype, integer ids
    in its index dtype."""
    if isinstance(host, tuple):
        return tuple(_on_case(case, part) for part in host)
    if host.dtype.kind == "f":
        return case.asarray(host)
    return case.asarray(host, dtype=case.index_dtype_name)


def _floats(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Values a float32 graph input holds exactly (the float64 rows see the same)."""
    return rng.standard_normal(shape).astype(np.float32)


def _export(model: Any, case: Case, tmp_path: Path, example: Any, **kwargs: Any) -> Path:
    """Export ``model`` on ``example`` (host data, moved to the case's backend; a tuple gives
    several graph inputs) and check the file as written."""
    path = tmp_path / "model.onnx"
    nx.export(model, path, _on_case(case, example), **kwargs)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return path


def _matches(model: Any, case: Case, path: Path, host: Any, module_input: Any = None) -> None:
    """onnxruntime on ``host`` (its leaves, the graph's inputs in order) against the model in
    eval mode on the same values (``module_input``: the structure the model takes, when it
    differs from the flat one)."""
    model.eval()
    want = _leaves(model(_on_case(case, host if module_input is None else module_input)))
    got = nx.run(path, tuple(_leaves(host)))
    got = list(got) if isinstance(got, tuple) else [got]
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        b = nb.to_numpy(b)
        assert a.shape == b.shape, (i, a.shape, b.shape)
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=f"output {i}")


def _placed(case: Case) -> dict[str, Any]:
    return {"dtype": case.dtype, "backend": case.backend}


# ---------------------------------------------------------------------- Embedding


def test_embedding_is_a_gather_of_int64_ids(case: Case, tmp_path: Path,
                                            rng: np.random.Generator) -> None:
    model = nb.Embedding(11, 6, padding_idx=0, seed=0, **_placed(case))
    path = _export(model, case, tmp_path, rng.integers(0, 11, (2, 3)))
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [i.name for i in graph.initializer] == ["weight"]
    ids = rng.integers(0, 11, (4, 9))
    ids[:, ::3] = 0  # the padding row is looked up as it is
    for host in (ids, rng.integers(0, 11, (1, 1))):
        _matches(model, case, path, host)


# ---------------------------------------------------------------------- attention

ATTENTION = {
    "self-causal-batch-first": ({"batch_first": True, "is_causal": True}, {}),
    "self-causal-weights-opset18": ({"is_causal": True, "need_weights": True}, {"opset": 18}),
    "self-weights-per-head-no-bias": ({"need_weights": True, "average_attn_weights": False,
                                       "bias": False}, {}),
    "cross-causal": ({"is_causal": True, "need_weights": True}, {
        "input_names": ("query", "key", "value"),
        "dynamic_axes": {"query": {0: "sequence"}, "key": {0: "keys"}, "value": {0: "keys"}}}),
    "unbatched-causal": ({"batch_first": True, "is_causal": True}, {}),
}


@pytest.mark.parametrize("config", list(ATTENTION))
def test_multihead_attention(case: Case, tmp_path: Path, rng: np.random.Generator,
                             config: str) -> None:
    layer, options = ATTENTION[config]
    model = nb.MultiheadAttention(8, 2, dropout=0.1, seed=1, **layer, **_placed(case))
    first = bool(layer.get("batch_first"))

    def sequence(n: int, length: int) -> np.ndarray:
        if config.startswith("unbatched"):
            return _floats(rng, length, 8)
        return _floats(rng, n, length, 8) if first else _floats(rng, length, n, 8)

    if config.startswith("cross"):  # query length L, keys and values S ≠ L
        path = _export(model, case, tmp_path, (sequence(2, 3), sequence(2, 5), sequence(2, 5)),
                       **options)
        for n, length, keys in ((3, 9, 4), (1, 1, 7)):
            _matches(model, case, path, (sequence(n, length), sequence(n, keys),
                                         sequence(n, keys)))
        return
    path = _export(model, case, tmp_path, sequence(2, 3), **options)
    for n, length in ((3, 9), (1, 1)):
        _matches(model, case, path, sequence(n, length))


# ---------------------------------------------------------------------- transformer


@pytest.mark.parametrize("config", [
    {"activation": "relu"},
    {"activation": "gelu", "norm_first": True, "batch_first": True, "is_causal": True,
     "bias": False},
], ids=["post-norm-relu", "pre-norm-gelu-causal"])
def test_transformer_encoder_layer(case: Case, tmp_path: Path, rng: np.random.Generator,
                                   config: dict[str, Any]) -> None:
    model = nb.TransformerEncoderLayer(8, 2, 16, dropout=0.1, seed=2, **config,
                                       **_placed(case))
    first = bool(config.get("batch_first"))
    path = _export(model, case, tmp_path, _floats(rng, 2, 3, 8))
    for n, length in ((3, 11), (1, 1)):
        _matches(model, case, path,
                 _floats(rng, n, length, 8) if first else _floats(rng, length, n, 8))


def test_transformer_lm_ties_one_table_and_takes_any_length_up_to_its_context(
        case: Case, tmp_path: Path, rng: np.random.Generator) -> None:
    vocab, width, context = 23, 16, 12
    model = models.gpt(vocab, d_model=width, nhead=2, num_layers=2, context=context,
                       dropout=0.1, **_placed(case))
    path = _export(model, case, tmp_path, rng.integers(0, vocab, (2, 5)))
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]
    tables = [i.name for i in graph.initializer if tuple(i.dims) == (vocab, width)]
    assert tables == ["token_embedding.weight"]  # the output projection reads it too
    assert not [i.name for i in graph.initializer if i.name.startswith("lm_head")]
    for n, length in ((3, context),):  # JAX compiles its ops anew for every shape
        _matches(model, case, path, rng.integers(0, vocab, (n, length)))


# ---------------------------------------------------------------------- recurrent layers

def _input_dims(path: Path) -> dict[str, list[int | str]]:
    """Each graph input's dimensions: its symbolic name where dynamic, else its size."""
    graph = onnx.load(str(path)).graph
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in graph.input}


KINDS = {"LSTM": (nb.LSTM, {}), "GRU": (nb.GRU, {}), "RNN_TANH": (nb.RNN, {}),
         "RNN_RELU": (nb.RNN, {"nonlinearity": "relu"})}


@pytest.mark.parametrize("mode", list(KINDS))
def test_recurrent_one_layer_time_major_from_zeros(case: Case, tmp_path: Path,
                                                   rng: np.random.Generator, mode: str) -> None:
    cls, extra = KINDS[mode]
    model = cls(4, 6, seed=3, **extra, **_placed(case))
    path = _export(model, case, tmp_path, _floats(rng, 5, 2, 4))
    for length, n in ((50, 2), (1, 3)):  # the example's batch, then another
        _matches(model, case, path, _floats(rng, length, n, 4))


@pytest.mark.parametrize("mode", list(KINDS))
def test_recurrent_two_layers_bidirectional_batch_first_with_initial_states(
        case: Case, tmp_path: Path, rng: np.random.Generator, mode: str) -> None:
    cls, extra = KINDS[mode]
    model = cls(4, 6, num_layers=2, batch_first=True, bidirectional=True, dropout=0.25,
                bias=mode != "RNN_RELU", seed=4, **extra, **_placed(case))
    lstm = mode == "LSTM"
    names = ("input", "h0", "c0") if lstm else ("input", "h0")

    def inputs(n: int, length: int) -> tuple[np.ndarray, ...]:
        states = tuple(_floats(rng, 4, n, 6) for _ in names[1:])
        return (_floats(rng, n, length, 4), *states)

    # "auto" (the default): the states' batch axis is their axis 1 whatever batch_first says
    # (PyTorch's layout), the input's axes batch and sequence
    path = _export(model, case, tmp_path, inputs(2, 5), input_names=names)
    assert _input_dims(path) == {"input": ["batch", "sequence", 4],
                                 **{name: [4, "batch", 6] for name in names[1:]}}
    for n, length in ((2, 50), (3, 1)):
        host = inputs(n, length)
        _matches(model, case, path, host, (host[0], host[1:]) if lstm else None)


def test_lstm_on_one_unbatched_sequence_with_states(case: Case, tmp_path: Path,
                                                    rng: np.random.Generator) -> None:
    model = nb.LSTM(4, 6, num_layers=2, batch_first=True, seed=7, **_placed(case))
    names = ("input", "h0", "c0")
    # the example nested as the layer takes it, (x, (h0, c0)): three graph inputs
    path = _export(model, case, tmp_path, (_floats(rng, 5, 4), (_floats(rng, 2, 6),
                                           _floats(rng, 2, 6))), input_names=names)
    assert _input_dims(path) == {"input": ["sequence", 4], "h0": [2, 6], "c0": [2, 6]}
    for length in (50, 1):
        host = (_floats(rng, length, 4), _floats(rng, 2, 6), _floats(rng, 2, 6))
        _matches(model, case, path, host, (host[0], host[1:]))
    nested = (host[0], (host[1], host[2]))  # run takes the nested form too
    np.testing.assert_array_equal(nx.run(path, nested)[0], nx.run(path, host)[0])


def test_several_inputs_without_names_are_numbered(case: Case, tmp_path: Path,
                                                  rng: np.random.Generator) -> None:
    model = nb.GRU(3, 4, batch_first=True, seed=5, **_placed(case))
    path = _export(model, case, tmp_path, (_floats(rng, 2, 5, 3), _floats(rng, 1, 2, 4)))
    assert _input_dims(path) == {"input": ["batch", "sequence", 3], "input_1": [1, "batch", 4]}
    host = (_floats(rng, 3, 7, 3), _floats(rng, 1, 3, 4))
    _matches(model, case, path, host, host)


def test_recurrent_output_keeps_the_last_step(case: Case, tmp_path: Path,
                                              rng: np.random.Generator) -> None:
    model = nb.Sequential(
        nb.GRU(4, 6, bidirectional=True, batch_first=True, seed=5, **_placed(case)),
        nb.RecurrentOutput("last", batch_first=True),
        nb.Linear(12, 3, seed=6, **_placed(case)))
    path = _export(model, case, tmp_path, _floats(rng, 2, 5, 4))
    for n, length in ((2, 50), (3, 1)):
        _matches(model, case, path, _floats(rng, n, length, 4))


def test_char_lstm(case: Case, tmp_path: Path, rng: np.random.Generator) -> None:
    model = models.char_lstm(19, embedding_dim=8, hidden_size=12, num_layers=2, dropout=0.2,
                             **_placed(case))
    path = _export(model, case, tmp_path, rng.integers(0, 19, (2, 5)))
    for n, length in ((2, 50), (3, 1)):
        _matches(model, case, path, rng.integers(0, 19, (n, length)))


# ---------------------------------------------------------------------- what is refused


def test_attention_masks_given_as_inputs_are_refused_naming_the_layer(
        tmp_path: Path, rng: np.random.Generator) -> None:
    x = _floats(rng, 3, 2, 8)
    padding = np.zeros((2, 3), dtype=bool)
    attention = nb.Sequential(nb.MultiheadAttention(8, 2, seed=0))
    with pytest.raises(UnsupportedLayerError, match=r"MultiheadAttention at '0'.*"
                       r"key_padding_mask or attn_mask"):
        nx.export(attention, tmp_path / "a.onnx", (x, x, x, padding),
                  input_names=("q", "k", "v", "mask"))
    layer = nb.TransformerEncoderLayer(8, 2, 16, seed=0)
    with pytest.raises(UnsupportedLayerError, match="src_mask or src_key_padding_mask"):
        nx.export(layer, tmp_path / "t.onnx", (x, np.zeros((3, 3), dtype=np.float32)),
                  input_names=("src", "mask"))
    assert not list(tmp_path.iterdir())  # nothing written


def test_embedding_refuses_a_floating_graph_input(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedLayerError, match=r"Embedding.*integer token ids"):
        nx.export(nb.Embedding(5, 2, seed=0), tmp_path / "e.onnx",
                  np.zeros((2, 3), dtype=np.float32))


# ---------------------------------------------------------------------- the command line

TINY = ["--dataset", "pydoc", "--backend", "numpy", "--d-model", "16", "--context", "16",
        "--batch-size", "4", "--steps-per-epoch", "2", "--epochs", "1", "--no-progress"]


@pytest.mark.parametrize("model_args", [
    ["--model", "transformer", "--heads", "2", "--layers", "1"],
    ["--model", "lstm", "--hidden", "16,16"],
], ids=["transformer", "lstm"])
def test_cli_export_of_a_language_model_checkpoint(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], rng: np.random.Generator,
        model_args: list[str]) -> None:
    checkpoint, out = tmp_path / "lm.ckpt", tmp_path / "lm.onnx"
    assert main(["train", *TINY, *model_args, "--save", str(checkpoint), "--json"]) == 0
    json.loads(capsys.readouterr().out)
    assert main(["export", str(checkpoint), str(out)]) == 0
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    model, _ = nb.checkpoint.load_model(checkpoint)
    model.eval()
    vocab = int(model.state_dict()["0.weight" if "lstm" in model_args else
                                   "token_embedding.weight"].shape[0])
    for n, length in ((3, 16), (1, 5)):
        ids = rng.integers(0, vocab, (n, length))
        np.testing.assert_allclose(nx.run(out, ids), nb.to_numpy(model(ids)), rtol=RTOL,
                                   atol=ATOL)
