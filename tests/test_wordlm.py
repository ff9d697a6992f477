"""The word-level language model task (Shakespeare words), its count baselines and word sampling."""

from __future__ import annotations

import collections
import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import models
from rnnjax.tasks import get_task
from rnnjax.tasks._tokens import tokenize
from rnnjax.tasks._wordlm import kneser_ney_bigram, unigram_nll

OPTS = dict(max_words=20_000, vocab_size=300, seq_len=12, eval_size=16, eval_seq_len=40)


@functools.lru_cache(maxsize=None)
def small():
    return get_task("wordlm", **OPTS)


def _corpus_tokens():
    from rnnjax.tasks._text import _read_text

    return tokenize(_read_text(None))[: OPTS["max_words"]]


def test_vocabulary_top_v_of_the_training_split_and_unk():
    task = small()
    info = task.info
    words = _corpus_tokens()
    n_train = info["train_tokens"]
    assert n_train == len(words) - int(0.1 * len(words))  # the last 10 % held out
    counts = collections.Counter(words[:n_train])
    top = sorted(counts, key=lambda w: (-counts[w], w))[:300]
    assert list(info["vocab"]) == top + ["<unk>"] and task.input_size == task.output_size == 301
    assert info["unk"] == 300
    eval_only = set(words[n_train:]) - set(counts)
    assert eval_only and info["encode"](" ".join(sorted(eval_only))).tolist() == [300] * len(eval_only)


def test_eval_windows_are_the_held_out_tokens_and_training_windows_never_reach_them():
    task = small()
    info = task.info
    words = _corpus_tokens()
    n_train = info["train_tokens"]
    index = {w: i for i, w in enumerate(info["vocab"][:-1])}
    ids = np.array([index.get(w, 300) for w in words])
    ev = task.eval_batch()
    assert task.eval_batch() is ev and ev.inputs.shape == (16, 40) and ev.inputs.dtype == jnp.int32
    held = ids[n_train:]
    np.testing.assert_array_equal(np.asarray(ev.inputs).reshape(-1), held[: 16 * 40])
    np.testing.assert_array_equal(np.asarray(ev.targets).reshape(-1), held[1 : 16 * 40 + 1])
    train = ids[:n_train]
    grams = {tuple(train[i : i + 13]) for i in range(n_train - 12)}
    for k in range(5):
        b = task.sample(jax.random.key(k), 64)
        for x, y in zip(np.asarray(b.inputs), np.asarray(b.targets)):
            assert tuple(np.concatenate([x, y[-1:]])) in grams  # a window of the training tokens
            np.testing.assert_array_equal(x[1:], y[:-1])
    state, step = task.stream(jax.random.key(0), 4)
    state, b1 = step(state)
    state, b2 = step(state)
    np.testing.assert_array_equal(b2.inputs[:, 0], b1.targets[:, -1])  # streams continue across batches


def test_unigram_and_kneser_ney_bigram_against_python_references():
    rng = np.random.default_rng(0)
    V = 6
    train = rng.integers(0, V - 1, 200)  # token 5 never occurs in training
    targets = rng.integers(0, V - 1, 50)
    c = collections.Counter(train.tolist())
    ref_uni = -np.mean([math.log(c[t] / len(train)) for t in targets])
    assert unigram_nll(train, targets, V) == pytest.approx(ref_uni, rel=1e-12)
    # interpolated Kneser-Ney, d = 0.75, from its definition with dictionaries
    d = 0.75
    bigrams = collections.Counter(zip(train[:-1].tolist(), train[1:].tolist()))
    ctx = collections.Counter(train[:-1].tolist())
    left = collections.Counter(w for (_, w) in bigrams)
    n_left = {w: left.get(w, 0) for w in range(V)}
    if min(n_left.values()) == 0:  # add-one continuation counts for a word never seen after anything
        n_left = {w: n + 1 for w, n in n_left.items()}
    p_cont = {w: n / sum(n_left.values()) for w, n in n_left.items()}

    def ref(v, w):
        if ctx[v] == 0:
            return p_cont[w]
        followers = len({x for (u, x) in bigrams if u == v})
        return max(bigrams[(v, w)] - d, 0) / ctx[v] + d * followers / ctx[v] * p_cont[w]

    prob = kneser_ney_bigram(train, V, d)
    vs, ws = np.meshgrid(np.arange(V), np.arange(V), indexing="ij")
    got = prob(vs, ws)
    np.testing.assert_allclose(got, [[ref(v, w) for w in range(V)] for v in range(V)], rtol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)  # a distribution for every context
    assert (got > 0).all()
    with pytest.raises(ValueError, match="discount"):
        kneser_ney_bigram(train, V, 1.5)


def test_task_baselines_are_the_count_models_on_the_eval_targets():
    task = small()
    info = task.info
    ev = task.eval_batch()
    words = _corpus_tokens()
    index = {w: i for i, w in enumerate(info["vocab"][:-1])}
    train = np.array([index.get(w, 300) for w in words[: info["train_tokens"]]])
    x, y = np.asarray(ev.inputs).reshape(-1), np.asarray(ev.targets).reshape(-1)
    assert task.baseline_loss == pytest.approx(unigram_nll(train, y, 301), rel=1e-12)
    prob = kneser_ney_bigram(train, 301)
    assert info["eval_bigram_loss"] == pytest.approx(-np.log(prob(x, y)).mean(), rel=1e-12)
    assert info["eval_bigram_loss"] < info["eval_unigram_loss"]
    assert info["eval_bigram_perplexity"] == pytest.approx(math.exp(info["eval_bigram_loss"]))


def test_generate_with_an_embedding_follows_the_argmax_of_apply():
    task = small()
    model = models.for_task(task, rnnjax.lstm, 8, embed=4)
    params = model.init(jax.random.key(0))
    prime = jnp.array([5, 17, 2], jnp.int32)
    toks = models.generate(model, params, jax.random.key(1), prime, 4, temperature=0.0)
    seq = list(prime.tolist())
    apply = jax.jit(model.apply)
    for _ in range(4):  # Python reference: re-read the whole sequence, take the argmax of the last step
        seq.append(int(jnp.argmax(apply(params, jnp.array([seq], jnp.int32))[0, -1])))
    assert toks.tolist() == seq[3:]


def test_short_training_beats_the_unigram(tmp_path, capsys):
    from rnnjax.cli import main
    from rnnjax.train import RunConfig, build, run_key

    config = RunConfig(task="wordlm", cell="gru", hidden=32, embed=16, batch_size=16, steps=120, lr=1e-2, seq_len=12,
                       tbptt=12, task_options=tuple(sorted((k, v) for k, v in OPTS.items() if k != "seq_len")))
    trainer = build(config)
    state = jax.jit(lambda k: trainer.run(trainer.init(k), config.steps)[0])(run_key(0))
    ev = jax.jit(trainer.evaluate)(state.params)
    assert float(ev["loss"]) < trainer.task.baseline_loss
    # rnnjax train + rnnjax sample write words
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat . the dog sat on the log . " * 40)
    out = str(tmp_path / "run")
    assert main(["train", "--task", "wordlm", "--cell", "gru", "--hidden", "8", "--embed", "4", "--steps", "3",
                 "--seq-len", "6", "--text", str(text), "--task-option", "vocab_size=5", "--task-option",
                 "eval_size=2", "--out", out]) == 0
    capsys.readouterr()
    assert main(["sample", "--out", out, "--length", "7", "--prime", "the cat", "--seed", "1"]) == 0
    sample = capsys.readouterr().out.strip()
    words = sample.replace(".", " ").split()  # detokenised: a full stop sticks to the word before it
    assert sample.startswith("the cat ") and len(words) >= 3
    assert set(words) <= {"the", "cat", "sat", "on", "<unk>", "dog", "mat", "log"}
    assert os.path.isfile(os.path.join(out, "config.json"))
