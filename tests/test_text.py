"""The character corpus (datasets.load_text), sequence batches and validation windows
(nnbackend.data), bits per character and sampling (nnbackend.text)."""

from __future__ import annotations

import hashlib
import math
import platform
import warnings

import numpy as np
import pytest
from conftest import Case

import nnbackend as nb
from nnbackend.data import sequence_batches, sequence_windows
from nnbackend.datasets import UNKNOWN_SYMBOL, TextCorpus, Vocabulary, load_text
from nnbackend.text import bits_per_character, generate


@pytest.fixture(scope="module")
def corpus() -> TextCorpus:
    return load_text("pydoc")


# ------------------------------------------------------------------------------ the corpus


def test_pydoc_is_the_help_texts_in_key_order_split_90_10(corpus: TextCorpus) -> None:
    from pydoc_data.topics import topics

    text = "".join(topics[key] for key in sorted(topics))
    assert corpus.text == text
    n = len(text)
    assert corpus.n_train == n - math.ceil(0.1 * n)
    assert corpus.train_text + corpus.valid_text == text  # contiguous, nothing left out
    assert len(corpus.train) == corpus.n_train and len(corpus.valid) == n - corpus.n_train
    assert corpus.sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert corpus.python_version == platform.python_version()
    record = corpus.record()
    assert record["sha256"] == corpus.sha256 and record["vocabulary_size"] == len(corpus.vocabulary)
    # deterministic: a second load is the same corpus
    again = load_text("pydoc")
    assert again.sha256 == corpus.sha256 and again.vocabulary == corpus.vocabulary


def test_the_vocabulary_is_the_training_characters_and_the_unknown_symbol(
        corpus: TextCorpus) -> None:
    vocabulary = corpus.vocabulary
    assert vocabulary.characters == tuple(sorted(set(corpus.train_text)))
    assert len(vocabulary) == len(vocabulary.characters) + 1
    assert corpus.decode(corpus.train) == corpus.train_text  # every training character known
    # the ids are the characters' ranks, 1-based
    first = corpus.train_text[:50]
    assert corpus.encode(first).tolist() == [vocabulary.characters.index(c) + 1 for c in first]
    unseen = set(corpus.valid_text) - set(corpus.train_text)
    assert (corpus.valid == 0).sum() == sum(corpus.valid_text.count(c) for c in unseen)


def test_unseen_characters_become_the_unknown_id() -> None:
    text = "abcabcabca" + "abz"  # 13 characters: 11 train, 2 validate ("bz"); z unseen
    corpus = TextCorpus.from_text(text, name="toy")
    assert corpus.n_train == 11 and corpus.valid_text == "bz"
    assert corpus.vocabulary.characters == ("a", "b", "c")
    assert corpus.valid.tolist() == [2, 0]
    assert corpus.decode(corpus.valid) == "b" + UNKNOWN_SYMBOL
    assert corpus.encode("cz?a").tolist() == [3, 0, 0, 1]


def test_vocabulary_json_round_trip_and_bad_input() -> None:
    vocabulary = Vocabulary.from_text("hello, world")
    assert Vocabulary.from_json(vocabulary.to_json()) == vocabulary
    with pytest.raises(ValueError, match="a vocabulary is"):
        Vocabulary.from_json({"characters": "ab"})
    with pytest.raises(ValueError, match="distinct"):
        Vocabulary(("a", "a"))
    with pytest.raises(TypeError, match="1-character strings"):
        Vocabulary(("ab",))
    with pytest.raises(ValueError, match=r"ids must lie in 0\.\.9"):
        vocabulary.decode([3, 10])
    with pytest.raises(ValueError, match="1-D integer ids"):
        vocabulary.decode(np.zeros(3))


def test_load_text_refuses_an_unknown_corpus_and_a_text_too_short() -> None:
    with pytest.raises(ValueError, match="unknown corpus 'shakespeare'; the corpora are pydoc"):
        load_text("shakespeare")
    with pytest.raises(ValueError, match="too few to split"):
        TextCorpus.from_text("ab")


# --------------------------------------------------------------------- sequence batches


def _host(case: Case, a: object) -> np.ndarray:
    return case.backend.to_numpy(a)


def test_sequence_batches_are_shifted_windows_at_the_seeded_offsets(case: Case) -> None:
    ids = np.random.default_rng(0).integers(0, 50, size=300)
    data = sequence_batches(ids, context=7, batch_size=5, seed=3, backend=case.backend)
    assert len(data) == (300 - 1) // (5 * 7)
    epoch0 = list(data)
    assert len(epoch0) == len(data) and data.epoch == 1
    offsets = np.random.default_rng([3, 0]).integers(0, 300 - 7, size=(len(data), 5))
    for (x, y), starts in zip(epoch0, offsets, strict=True):
        case.check_placement(x, dtype=case.index_dtype_name)
        case.check_placement(y, dtype=case.index_dtype_name)
        windows = np.stack([ids[o : o + 8] for o in starts])
        np.testing.assert_array_equal(_host(case, x), windows[:, :7])
        np.testing.assert_array_equal(_host(case, y), windows[:, 1:])  # the next id


def test_sequence_batches_resume_at_an_epoch_exactly(case: Case) -> None:
    ids = np.arange(200)
    straight = sequence_batches(ids, context=4, batch_size=3, steps_per_epoch=5, seed=9,
                                backend=case.backend)
    epochs = [[_host(case, x).tolist() for x, _ in straight] for _ in range(3)]
    assert epochs[0] != epochs[1] != epochs[2]  # a new draw every epoch
    resumed = sequence_batches(ids, context=4, batch_size=3, steps_per_epoch=5, seed=9,
                               backend=case.backend)
    resumed.set_epoch(2)  # a restart after two epochs sees the third epoch's batches
    assert [_host(case, x).tolist() for x, _ in resumed] == epochs[2]


def test_sequence_batches_bad_input() -> None:
    with pytest.raises(TypeError, match="ids must be integers, got dtype float64"):
        sequence_batches(np.zeros(100), context=4, batch_size=2, seed=0)
    with pytest.raises(ValueError, match=r"ids must be 1-D \(N,\), got shape \(10, 10\)"):
        sequence_batches(np.zeros((10, 10), dtype=np.int64), context=4, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="5 ids are too few for windows of context 5"):
        sequence_batches(np.arange(5), context=5, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="context must be a positive integer, got 0"):
        sequence_batches(np.arange(5), context=0, batch_size=2, seed=0)


# --------------------------------------------------------------------- validation windows


@pytest.mark.parametrize("n", [1, 6, 12, 13, 30])
def test_validation_windows_predict_every_id_once(case: Case, n: int) -> None:
    ids = np.arange(100, 100 + n)
    windows = sequence_windows(ids, context=6, batch_size=2, preceding=99, backend=case.backend)
    xs, ys = [], []
    for x, y in windows:
        x_host, y_host = _host(case, x), _host(case, y)
        assert x_host.shape == y_host.shape and x_host.shape[1] <= 6
        xs.append(x_host.ravel())
        ys.append(y_host.ravel())
        # inside a window, each target's input is the id just before it
        np.testing.assert_array_equal(x_host[:, 1:], y_host[:, :-1])
    assert windows.n_targets == n
    np.testing.assert_array_equal(np.concatenate(ys), ids)  # every id once, in order
    np.testing.assert_array_equal(np.concatenate(xs), np.concatenate([[99], ids[:-1]]))
    full, rest = divmod(n, 6)
    assert len(windows) == math.ceil(full / 2) + (rest > 0)
    if rest:
        assert ys[-1].shape == (rest,)  # the partial window comes last, alone


def test_validation_windows_without_a_preceding_id_predict_from_the_second() -> None:
    windows = sequence_windows(np.arange(10), context=4)
    assert windows.n_targets == 9
    assert np.concatenate([np.asarray(y).ravel() for _, y in windows]).tolist() == list(
        range(1, 10))
    with pytest.raises(ValueError, match="nothing to predict"):
        sequence_windows(np.arange(1), context=4)


# --------------------------------------------------------------------- bits per character


def _table_model(case: Case, table: np.ndarray) -> nb.Module:
    """ids → rows of ``table``: logits (N, T, V) that depend on the current id only."""
    model = nb.Sequential(nb.layers.Embedding(*table.shape, dtype=case.dtype, backend=case.backend))
    model.load_state_dict({"0.weight": table.astype(case.dtype_name)})
    return model


def test_bits_per_character_is_the_mean_negative_log2_probability(case: Case) -> None:
    rng = np.random.default_rng(1)
    table = rng.standard_normal((6, 6))
    ids = rng.integers(0, 6, size=23)
    model = _table_model(case, table)
    windows = sequence_windows(ids, context=5, batch_size=2, preceding=3, backend=case.backend)
    stream = np.concatenate([[3], ids])
    log_p = table - np.log(np.exp(table).sum(axis=1, keepdims=True))
    expected = -np.mean(log_p[stream[:-1], stream[1:]]) / math.log(2.0)
    rtol = 1e-12 if case.is_float64 else 1e-5
    assert bits_per_character(model, windows) == pytest.approx(expected, rel=rtol)
    assert model.training  # the mode is restored


def test_bits_per_character_of_a_uniform_model_is_log2_v(case: Case) -> None:
    model = _table_model(case, np.zeros((8, 8)))
    windows = sequence_windows(np.arange(8), context=3, backend=case.backend)
    assert bits_per_character(model, windows) == pytest.approx(3.0, rel=1e-6)


# --------------------------------------------------------------------------- sampling


def _successor_model(size: int, *, unknown_to: int = 1) -> nb.Module:
    """A bigram table whose most likely next id is id + 1 (wrapping to 1), 0 → unknown_to."""
    table = np.full((size, size), -4.0)
    for i in range(1, size):
        table[i, i % (size - 1) + 1] = 4.0
    table[0, unknown_to] = 4.0
    model = nb.Sequential(nb.layers.Embedding(size, size, dtype="float64"))
    model.load_state_dict({"0.weight": table})
    return model


def test_greedy_generation_follows_the_arg_max_and_maps_unknown_prompt_characters() -> None:
    vocabulary = Vocabulary.from_text("abcde")  # ids: a 1 ... e 5
    model = _successor_model(6, unknown_to=3)
    assert generate(model, vocabulary, "a", 7, temperature=0) == "bcdeabc"
    assert generate(model, vocabulary, "xyz", 3, temperature=0) == "cde"  # z → 0 → c
    assert generate(model, vocabulary, "a", 0) == ""


def test_sampling_is_seeded_and_follows_the_temperature() -> None:
    vocabulary = Vocabulary.from_text("abcde")
    model = _successor_model(6)
    first = generate(model, vocabulary, "a", 60, temperature=1.0, seed=5)
    assert first == generate(model, vocabulary, "a", 60, temperature=1.0, seed=5)
    assert first != generate(model, vocabulary, "a", 60, temperature=1.0, seed=6)
    # p(successor) = e^8 / (e^8 + 4): nearly always; at a high temperature, far from it
    pairs = list(zip("a" + first, first, strict=False))
    follows = sum(b == "abcde"[("abcde".index(a) + 1) % 5] for a, b in pairs
                  if a != UNKNOWN_SYMBOL)
    assert follows >= 55
    hot = generate(model, vocabulary, "a", 200, temperature=100.0, seed=5)
    assert len(set(hot)) == 6  # every id, the unknown one too, once the logits are flattened


def test_a_tiny_temperature_samples_the_arg_max_instead_of_nan() -> None:
    """τ = 1e-320: z / τ overflows to ±inf; the draw must still be (nearly) greedy."""
    vocabulary = Vocabulary.from_text("abcde")
    model = _successor_model(6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow/invalid RuntimeWarning either
        out = generate(model, vocabulary, "a", 7, temperature=1e-320, seed=3)
    assert out == generate(model, vocabulary, "a", 7, temperature=0) == "bcdeabc"


def test_generation_crops_the_prompt_to_the_context() -> None:
    """A model that refuses sequences longer than 4: the prompt and the output are cropped."""
    vocabulary = Vocabulary.from_text("abcde")
    inner = _successor_model(6)

    class Short(nb.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner
            self.context = 4

        def check_input(self, x: object, ctx: object) -> None:
            assert x.shape[1] <= 4, x.shape  # type: ignore[attr-defined]

        def forward_pass(self, x: object, ctx: object) -> object:
            return self.inner.forward_pass(x, ctx)  # type: ignore[arg-type]

    out = generate(Short(), vocabulary, "abcdeabcdea", 6, temperature=0)
    assert out == "bcdeab"


def test_generate_bad_input() -> None:
    vocabulary = Vocabulary.from_text("abcde")
    model = _successor_model(6)
    with pytest.raises(ValueError, match="non-empty string"):
        generate(model, vocabulary, "", 3)
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        generate(model, vocabulary, "a", 3, temperature=-1.0)
    with pytest.raises(ValueError, match="the vocabulary has 4 ids"):
        generate(model, Vocabulary.from_text("abc"), "a", 3)
