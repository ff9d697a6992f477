"""The sentiment task (Rotten Tomatoes snippets), token embeddings and many-to-one pooling."""

from __future__ import annotations

import collections
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import models
from rnnjax.tasks import get_task
from rnnjax.tasks._sentiment import bag_of_words_baseline, bow_features, load_snippets, split_by_movie
from rnnjax.tasks._tokens import detokenize, encode, tokenize, vocabulary

N = 2500  # the first snippets of the file: fast to build


@functools.lru_cache(maxsize=None)
def small():
    return get_task("sentiment", max_examples=N, max_vocab=800, seq_len=40)


def test_tokenize_and_vocabulary_against_python():
    assert tokenize("It's GOOD, isn't it?! (Yes)") == ["it's", "good", ",", "isn't", "it", "?", "!", "(", "yes", ")"]
    assert tokenize("  ") == []
    toks = "b a c a b a d".split()
    # specials first, then by decreasing count, ties alphabetical; min_count and max_size
    assert vocabulary(toks, specials=("<pad>", "<unk>")) == ["<pad>", "<unk>", "a", "b", "c", "d"]
    assert vocabulary(toks, min_count=2) == ["a", "b"]
    assert vocabulary(toks, max_size=3) == ["a", "b", "c"]
    np.testing.assert_array_equal(encode(["a", "zz", "c"], {"a": 2, "c": 4}, 1), [2, 1, 4])
    assert detokenize(["hi", ",", "you", "(", "ok", ")", "."]) == "hi, you (ok)."


def test_split_by_film_vocabulary_from_training_only():
    task = small()
    texts, labels, movies = (x[:N] for x in load_snippets())
    held = split_by_movie(movies, 0.2, 0)
    train_films = {m for m, h in zip(movies, held) if not h}
    eval_films = {m for m, h in zip(movies, held) if h}
    assert train_films and eval_films and not train_films & eval_films
    info = task.info
    assert info["train_size"] + info["eval_size"] == N == int((~held).sum() + held.sum())
    assert abs(info["eval_size"] / N - 0.2) < 0.1
    # the vocabulary: <pad>, <unk>, then training words only (Counter over the training texts)
    counts = collections.Counter(w for t in info["train_texts"] for w in tokenize(t))
    words = info["vocab"][2:]
    assert info["vocab"][:2] == ("<pad>", "<unk>") and len(words) == 800
    assert all(counts[w] >= 2 for w in words)
    assert list(words) == sorted(words, key=lambda w: (-counts[w], w))
    eval_only = {w for t in info["eval_texts"] for w in tokenize(t)} - set(counts)
    assert eval_only and not eval_only & set(words)  # words seen only in evaluation are <unk>
    # the majority-class baseline and the prior cross-entropy, by hand
    p1 = np.mean(info["train_labels"])
    q1 = np.mean(info["eval_labels"])
    assert math.isclose(task.baseline_loss, -(q1 * math.log(p1) + (1 - q1) * math.log(1 - p1)), rel_tol=1e-12)
    assert info["majority_accuracy"] == pytest.approx(max(q1, 1 - q1) if (p1 > 0.5) == (q1 > 0.5) else min(q1, 1 - q1))


def test_eval_set_is_every_held_out_snippet_and_no_training_batch_touches_it():
    task = small()
    info = task.info
    ev = task.eval_batch()
    assert task.eval_batch() is ev
    # row i of the evaluation set is eval_texts[i], padded with 0 after its length
    index = {w: i for i, w in enumerate(info["vocab"])}
    for i in (0, 7, len(info["eval_texts"]) - 1):
        ref = [index.get(w, 1) for w in tokenize(info["eval_texts"][i])][:40]
        n = int(ev.input_lengths[i])
        assert n == len(ref) and np.asarray(ev.inputs[i, :n]).tolist() == ref
        assert not np.asarray(ev.inputs[i, n:]).any()
        assert int(ev.targets[i]) == int(info["eval_labels"][i])
    train_rows = {tuple(info["encode"](t).tolist()) for t in info["train_texts"]}
    eval_rows = {tuple(info["encode"](t).tolist()) for t in info["eval_texts"]}
    only_eval = eval_rows - train_rows
    seen = set()
    for k in range(20):
        b = task.sample(jax.random.key(k), 64)
        lengths = np.asarray(b.input_lengths)
        for row, n in zip(np.asarray(b.inputs), lengths):
            seen.add(tuple(row[:n].tolist()))
            assert not row[n:].any()
    assert seen <= train_rows and not seen & only_eval


def test_read_tokens_embedding_equals_one_hot_matmul():
    emb = jax.random.normal(jax.random.key(0), (7, 3))
    ids = jnp.array([[1, 6, 0], [2, 2, 5]], jnp.int32)
    np.testing.assert_allclose(models.read_tokens(ids, 7, emb), np.asarray(jax.nn.one_hot(ids, 7)) @ emb, rtol=1e-6)
    np.testing.assert_array_equal(models.read_tokens(ids, 7), jax.nn.one_hot(ids, 7))
    with pytest.raises(ValueError, match=r"inputs: integer token ids must have shape \(B, T\)"):
        models.read_tokens(ids[..., None], 7)


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_bidirectional_embedded_readout_ignores_padding(pool):
    # Python reference: each sequence run alone, trimmed to its length, without lengths
    task = small()
    model = models.for_task(task, rnnjax.gru, 6, bidirectional=True, embed=5, pool=pool)
    params = model.init(jax.random.key(1))
    assert params.embedding.shape == (task.input_size, 5) and model.input_size == task.input_size
    b = task.sample(jax.random.key(2), 3)
    junk = jnp.where(jnp.arange(40)[None] < b.input_lengths[:, None], b.inputs, 3)  # padding content is irrelevant
    apply = jax.jit(model.apply)
    out = apply(params, junk, b.input_lengths)
    for i in range(3):
        n = int(b.input_lengths[i])
        ref = apply(params, b.inputs[i : i + 1, :n])[0]
        np.testing.assert_allclose(out[i], ref, rtol=1e-5, atol=1e-6)
    if pool == "mean":  # the pooled vector, by hand from the per-step outputs of the layer
        xs = models.read_tokens(b.inputs[:1], task.input_size, params.embedding)
        _, ys = jax.jit(lambda p, x, n: models.run_cell(model.cell, p, x, lengths=n))(params.cell, xs,
                                                                                     b.input_lengths[:1])
        n = int(b.input_lengths[0])
        h = np.asarray(ys[0, :n]).mean(0)
        np.testing.assert_allclose(out[0], params.readout.w @ h + params.readout.b, rtol=1e-5, atol=1e-6)


def test_bag_of_words_features_and_baseline_against_references():
    from sklearn.linear_model import LogisticRegression

    words = ["good", "bad", "film"]
    x = bow_features(["Good good film.", "bad, BAD!", "nothing"], words).toarray()
    np.testing.assert_array_equal(x, [[2, 0, 1], [0, 2, 0], [0, 0, 0]])
    task = small()
    info = task.info
    res = bag_of_words_baseline(info["train_texts"], info["train_labels"], info["eval_texts"], info["eval_labels"],
                                info["vocab"][2:], cs=(1.0,))
    ref = LogisticRegression(C=1.0, solver="liblinear").fit(
        bow_features(info["train_texts"], info["vocab"][2:]), info["train_labels"])
    acc = (ref.predict(bow_features(info["eval_texts"], info["vocab"][2:])) == info["eval_labels"]).mean()
    assert res["accuracy"] == pytest.approx(acc) and res["accuracy"] > info["majority_accuracy"]


def test_sentiment_options_are_checked():
    with pytest.raises(ValueError, match="eval_fraction"):
        get_task("sentiment", max_examples=N, eval_fraction=1.5)
    with pytest.raises(ValueError, match="max_vocab"):
        get_task("sentiment", max_examples=N, max_vocab=0)
    with pytest.raises(ValueError, match="embed: token embeddings work with many_to_one and many_to_many"):
        models.for_task(get_task("reverse", seq_len=4), rnnjax.gru, 4, embed=3)
    with pytest.raises(ValueError, match="pool: a readout pooling applies to many_to_one"):
        models.for_task(get_task("reverse", seq_len=4), rnnjax.gru, 4, pool="mean")


def test_short_training_beats_the_prior_baseline():
    from rnnjax.train import RunConfig, build, run_key

    config = RunConfig(task="sentiment", cell="gru", hidden=16, embed=16, pool="mean",
                       batch_size=32, steps=100, lr=1e-2, seq_len=40,
                       task_options=(("max_examples", N), ("max_vocab", 800)))
    trainer = build(config)
    state = jax.jit(lambda k: trainer.run(trainer.init(k), config.steps)[0])(run_key(0))
    ev = jax.jit(trainer.evaluate)(state.params)
    assert float(ev["loss"]) < trainer.task.baseline_loss
    assert float(ev["accuracy"]) > trainer.task.info["majority_accuracy"] + 0.03
