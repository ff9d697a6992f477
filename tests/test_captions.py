"""Digit captioning: caption tokens, split, baselines in closed form, teacher forcing and greedy decoding."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import models
from rnnjax.tasks import _captions, get_task

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def task():
    return get_task("captions")


def test_caption_tokens_and_padding_against_python(task):
    assert _captions.VOCAB[0] == "<end>" and len(_captions.VOCAB) == 16
    for d, name in enumerate(_captions.NAMES):
        ids = _captions.encode_caption(name)
        assert ids[-1] == 0 and _captions.decode_caption(ids + [3, 4]) == name
    ev = task.eval_batch()
    labels = task.info["test_labels"]
    for row, d in enumerate(labels):
        name = _captions.NAMES[d]
        want = [_captions.VOCAB.index(c) for c in name] + [0]
        assert int(ev.target_lengths[row]) == len(want)
        assert list(np.asarray(ev.targets[row])) == want + [0] * (6 - len(want))
    with pytest.raises(ValueError, match="text: expected letters"):
        _captions.encode_caption("ten!")


def test_split_is_the_digits_split_and_training_batches_never_hold_a_test_image(task):
    from sklearn.datasets import load_digits

    d = load_digits()
    train, test = task.info["train_index"], task.info["test_index"]
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(1797)) and len(test) == 359
    np.testing.assert_array_equal(test, get_task("digits").info.get("test_index", test))
    np.testing.assert_allclose(task.eval_batch().inputs, d.data[test] / 16.0, rtol=1e-6)
    train_rows = {r.tobytes() for r in (d.data[train] / 16.0).astype(np.float32)}
    test_only = {r.tobytes() for r in (d.data[test] / 16.0).astype(np.float32)} - train_rows
    for k in range(5):
        b = task.sample(jax.random.key(k), 128)
        rows = {r.tobytes() for r in np.asarray(b.inputs, np.float32)}
        assert rows <= train_rows and not rows & test_only
        caps = [_captions.decode_caption(t) for t in np.asarray(b.targets)]
        assert all(c in _captions.NAMES for c in caps)  # each sampled caption belongs with its image's digit


def test_baselines_in_closed_form(task):
    info = task.info
    n = collections.Counter(info["train_labels"].tolist())
    N = sum(n.values())
    labels = info["test_labels"]
    # image-free prefix LM: a caption's probability is the product of p(token | prefix) = n_d / N
    total = sum(-np.log(n[d] / N) for d in labels)
    tokens = sum(len(_captions.NAMES[d]) + 1 for d in labels)
    assert task.baseline_loss == pytest.approx(total / tokens, rel=1e-12)
    mode = max(range(10), key=lambda d: n[d])
    mf = info["baselines"]["most_frequent_caption"]
    assert mf["caption"] == _captions.NAMES[mode]
    assert mf["exact"] == pytest.approx(np.mean(labels == mode))
    guess = _captions.NAMES[mode].ljust(6, "$")  # its tokens, then <end> (as padding too)
    right = sum(a == b for d in labels for a, b in zip(guess, _captions.NAMES[d] + "$"))
    assert mf["token"] == pytest.approx(right / tokens)
    assert 0.9 < info["baselines"]["logistic_regression_then_name"]["exact"] <= 1


@pytest.fixture(scope="module")
def small_model(task):
    cell = rnnjax.gru(64 + 17, 8)
    model = models.one_to_many(cell, 64, 16, loss="xent", teacher_forcing=True)
    return cell, model, model.init(jax.random.key(0))


def _loop(cell, params, v, prev_tokens=None, steps=6):
    """Python reference: c0 = A v + a; x_t = [v; onehot(prev)], prev = the targets (teacher forcing) or the argmax."""
    flat = params.init_map.w @ v + params.init_map.b
    c = flat  # a GRU's carry is its hidden vector
    tok, outs = 16, []
    step = jax.jit(cell.step)
    for t in range(steps):
        x = np.concatenate([np.asarray(v), np.eye(17)[tok]])
        c, y = step(params.cell, c, x)
        logits = np.asarray(params.readout.w) @ np.asarray(y) + np.asarray(params.readout.b)
        outs.append(logits)
        tok = int(prev_tokens[t]) if prev_tokens is not None else int(np.argmax(logits))
    return np.stack(outs)


def test_teacher_forcing_and_greedy_decoding_against_python_loops(task, small_model):
    cell, model, params = small_model
    ev = task.eval_batch()
    batch = jax.tree.map(lambda a: a[:3], ev)
    nll, count = 0.0, 0
    for b in range(3):
        logits = _loop(cell, params, batch.inputs[b], batch.targets[b])
        logp = logits - np.log(np.sum(np.exp(logits), -1, keepdims=True))
        for t in range(int(batch.target_lengths[b])):
            nll -= float(logp[t, batch.targets[b, t]])
            count += 1
    loss, _ = model.loss(params, batch)
    assert float(loss) == pytest.approx(nll / count, rel=1e-5)
    greedy = model.apply(params, batch.inputs, out_len=6)
    for b in range(3):
        np.testing.assert_allclose(greedy[b], _loop(cell, params, batch.inputs[b]), rtol=1e-5, atol=1e-6)
    # masking: targets beyond target_lengths do not change the loss
    noisy = batch._replace(targets=jnp.where(jnp.arange(6) >= batch.target_lengths[:, None], 7, batch.targets))
    assert float(model.loss(params, noisy)[0]) == pytest.approx(float(loss), rel=1e-6)
    # evaluate: token and exact-caption accuracy of the greedy captions
    out = model.evaluate(params, ev)
    pred = np.asarray(jnp.argmax(model.apply(params, ev.inputs, out_len=6), -1))
    scores = _captions.caption_scores(pred, np.asarray(ev.targets), np.asarray(ev.target_lengths))
    assert float(out["accuracy"]) == pytest.approx(scores["token"], rel=1e-6)
    assert float(out["sequence_accuracy"]) == pytest.approx(scores["exact"], rel=1e-6)


def test_model_options_are_checked():
    with pytest.raises(ValueError, match="teacher_forcing: feeds back tokens and needs loss='xent'"):
        models.one_to_many(rnnjax.gru(64, 8), 64, 1, loss="mse", teacher_forcing=True)
    with pytest.raises(ValueError, match="input_size must be vector_size 64 \\+ output_size \\+ 1 = 17 = 81"):
        models.one_to_many(rnnjax.gru(64, 8), 64, 16, loss="xent", teacher_forcing=True)
    with pytest.raises(ValueError, match="seq_len: captions have 6 steps"):
        get_task("captions", seq_len=5)


def test_a_short_training_run_beats_the_image_free_baselines(task):
    model = models.for_task(task, rnnjax.gru, 32)
    assert model.cell.input_size == 64 + 17
    trainer = rnnjax.make_trainer(model, task, rnnjax.make_optimizer(1e-2, clip=1.0), batch_size=64)
    state, _ = jax.jit(trainer.run, static_argnums=1)(trainer.init(jax.random.key(0)), 200)
    ev = trainer.evaluate(state.params)
    base = task.info["baselines"]
    assert float(ev["loss"]) < task.baseline_loss
    assert float(ev["sequence_accuracy"]) > 3 * base["most_frequent_caption"]["exact"]
    assert float(ev["accuracy"]) > base["image_free_greedy"]["token"] + 0.3
