"""The numbers task (digits -> num2words words) and the Luong-attention decoder of ``seq2seq``."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from num2words import num2words

import rnnjax
from rnnjax import models
from rnnjax.tasks import get_task
from rnnjax.tasks._numbers import draw_numbers, number_words


@functools.lru_cache(maxsize=None)
def small(lang="fr"):
    return get_task("numbers", lang=lang, max_number=999)


def test_number_words_split_words_hyphens_and_commas():
    assert number_words(4021, "fr") == ["quatre", "mille", "vingt", "et", "un"]
    assert number_words(80, "fr") == ["quatre", "-", "vingts"]
    assert number_words(21, "en") == ["twenty", "-", "one"]
    assert number_words(1201, "en") == ["one", "thousand", ",", "two", "hundred", "and", "one"]


def test_split_by_number_and_rows_against_num2words():
    task = small()
    info = task.info
    train, held = set(info["train_numbers"].tolist()), set(info["eval_numbers"].tolist())
    assert not train & held and train | held == set(range(1000)) and len(held) == 200
    ev = task.eval_batch()
    assert task.eval_batch() is ev
    for i in (0, 57, 199):
        n = int(info["eval_numbers"][i])
        digits = [int(c) for c in str(n)]
        L = int(ev.input_lengths[i])
        assert L == len(digits) == int(info["eval_digits"][i])
        np.testing.assert_array_equal(np.asarray(ev.inputs[i, :L]), np.eye(10)[digits])
        assert not np.asarray(ev.inputs[i, L:]).any()
        words = number_words(n, "fr")
        assert int(ev.target_lengths[i]) == len(words) + 1  # + <eos>
        assert [info["vocab"][int(t)] for t in ev.targets[i, : len(words)]] == words
        assert int(ev.targets[i, len(words)]) == info["eos"] == 0
        assert info["decode"](ev.targets[i]) == num2words(n, lang="fr")  # the words join back to num2words' text
    en = small("en")
    assert en.info["decode"](en.eval_batch().targets[3]) == num2words(int(en.info["eval_numbers"][3]))


def test_no_training_batch_touches_an_evaluation_number():
    task = small()
    held = set(task.info["eval_numbers"].tolist())
    seen = set()
    for k in range(10):
        b = task.sample(jax.random.key(k), 128)
        for row, L in zip(np.asarray(b.inputs), np.asarray(b.input_lengths)):
            seen.add(int("".join(str(d) for d in row[:L].argmax(-1))))
    assert seen and not seen & held and seen <= set(task.info["train_numbers"].tolist())


def test_draw_numbers_and_options():
    a = draw_numbers(999_999, 500, 3)
    assert len(a) == 500 == len(set(a.tolist())) and a.max() <= 999_999
    np.testing.assert_array_equal(a, draw_numbers(999_999, 500, 3))
    lengths = np.bincount([len(str(n)) for n in a])
    assert lengths[6] < 0.4 * 500  # without the digit-count draw, 90 % would have six digits
    with pytest.raises(ValueError, match="lang"):
        get_task("numbers", lang="de")
    with pytest.raises(ValueError, match="seq_len: numbers up to 999 have 3 digits"):
        get_task("numbers", seq_len=5, max_number=999)
    with pytest.raises(ValueError, match="count: numbers up to"):
        get_task("numbers", max_number=10**8)
    with pytest.raises(ValueError, match="attention: attends over an encoder's outputs"):
        models.for_task(get_task("adding", seq_len=5), rnnjax.gru, 4, attention=True)


def _np_attention(att, hs, memory, valid):
    """Luong "general" attention with explicit loops (float64 NumPy)."""
    B, T, _ = hs.shape
    out = np.zeros_like(hs)
    W, (Wc, bc) = np.asarray(att.score), (np.asarray(att.combine.w), np.asarray(att.combine.b))
    for b in range(B):
        n = int(valid[b].sum())
        for t in range(T):
            scores = np.array([hs[b, t] @ W @ memory[b, s] for s in range(n)])
            a = np.exp(scores - scores.max())
            a /= a.sum()
            context = sum(a[s] * memory[b, s] for s in range(n))
            out[b, t] = np.tanh(Wc @ np.concatenate([context, hs[b, t]]) + bc)
    return out


def test_luong_attention_against_numpy_loops():
    key = jax.random.split(jax.random.key(0), 4)
    att = models.AttentionParams(jax.random.normal(key[0], (5, 4), jnp.float64),
                                 models.LinearParams(jax.random.normal(key[1], (5, 9), jnp.float64),
                                                     jax.random.normal(key[2], (5,), jnp.float64)))
    hs = np.asarray(jax.random.normal(key[3], (2, 3, 5), jnp.float64))
    memory = np.asarray(jax.random.normal(key[0], (2, 6, 4), jnp.float64))
    valid = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], np.float64)
    got = models.luong_attention(att, jnp.asarray(hs), jnp.asarray(memory), jnp.asarray(valid))
    np.testing.assert_allclose(got, _np_attention(att, hs, memory, valid), rtol=1e-10, atol=1e-12)


def test_attention_seq2seq_against_a_python_decoder_loop():
    task = small("en")
    model = models.for_task(task, functools.partial(rnnjax.gru, dtype=jnp.float64), 8, attention=True)
    params = model.init(jax.random.key(1))
    assert params.attention is not None and params.attention.score.shape == (8, 8)
    b = jax.tree.map(lambda a: a[:3], task.eval_batch())
    enc, dec = model.cell, models.for_task(task, functools.partial(rnnjax.gru, dtype=jnp.float64), 8).cell
    O = task.output_size
    enc_step, dec_step = jax.jit(enc.step), jax.jit(dec.step)
    inputs = np.asarray(b.inputs, np.float64)
    logits_tf, logits_greedy = [], []
    for i in range(3):  # one sequence at a time, step by step
        h = enc.initial_carry()
        memory = []
        for t in range(int(b.input_lengths[i])):
            h, y = enc_step(params.encoder, h, inputs[i, t])
            memory.append(np.asarray(y))
        memory = np.array(memory)[None]
        valid = np.ones(memory.shape[:2])
        for teacher, sink in ((True, logits_tf), (False, logits_greedy)):
            c, prev, rows = h, O, []
            for t in range(b.targets.shape[1]):
                c, y = dec_step(params.decoder, c, np.eye(O + 1)[prev])
                h_att = _np_attention(params.attention, np.asarray(y)[None, None], memory, valid)[0, 0]
                logit = np.asarray(params.readout.w) @ h_att + np.asarray(params.readout.b)
                rows.append(logit)
                prev = int(b.targets[i, t]) if teacher else int(np.argmax(logit))
            sink.append(rows)
    logits_tf, logits_greedy = np.array(logits_tf), np.array(logits_greedy)
    np.testing.assert_allclose(model.apply(params, b.inputs, b.input_lengths, out_len=b.targets.shape[1]),
                               logits_greedy, rtol=1e-8, atol=1e-10)
    mask = np.arange(b.targets.shape[1])[None] < np.asarray(b.target_lengths)[:, None]
    logp = logits_tf - np.log(np.exp(logits_tf).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, np.asarray(b.targets)[..., None], -1)[..., 0]
    np.testing.assert_allclose(model.loss(params, b)[0], (nll * mask).sum() / mask.sum(), rtol=1e-10)
    # the metrics of evaluate: greedy token accuracy and exact sequences, by definition
    ev = model.evaluate(params, b)
    right = logits_greedy.argmax(-1) == np.asarray(b.targets)
    assert float(ev["accuracy"]) == pytest.approx((right * mask).sum() / mask.sum())
    assert float(ev["sequence_accuracy"]) == pytest.approx(np.mean([right[i][mask[i]].all() for i in range(3)]))


def test_attention_ignores_padded_encoder_steps():
    task = small("en")
    model = models.for_task(task, rnnjax.gru, 8, attention=True)
    params = model.init(jax.random.key(2))
    b = jax.tree.map(lambda a: a[:8], task.eval_batch())
    pad = jnp.arange(3)[None, :, None] >= b.input_lengths[:, None, None]
    junk = jnp.where(pad, 0.7, b.inputs)
    apply = jax.jit(functools.partial(model.apply, out_len=6))
    np.testing.assert_allclose(apply(params, junk, b.input_lengths), apply(params, b.inputs, b.input_lengths),
                               rtol=1e-6, atol=1e-6)


def test_short_training_beats_the_uniform_baseline():
    from rnnjax.train import RunConfig, build, run_key

    config = RunConfig(task="numbers", cell="gru", hidden=32, attention=True, batch_size=32, steps=100, lr=1e-2,
                       task_options=(("lang", "en"), ("max_number", 999)))
    trainer = build(config)
    state = jax.jit(lambda k: trainer.run(trainer.init(k), config.steps)[0])(run_key(0))
    ev = jax.jit(trainer.evaluate)(state.params)
    assert float(ev["loss"]) < 0.5 * trainer.task.baseline_loss
    assert float(ev["accuracy"]) > 0.5
