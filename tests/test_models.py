"""Sequence models: Python-loop references, masking of padded steps, truncated BPTT, decoding."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax
from rnnjax import models
from rnnjax.tasks import Batch

F64 = jnp.float64


_STEPS = {}


def _jit_step(cell):
    """``jax.jit(cell.step)``, cached per cell (the Python-loop references stay fast)."""
    if cell not in _STEPS:
        _STEPS[cell] = jax.jit(cell.step)
    return _STEPS[cell]


def _loop(cell, params, xs, carry=None):
    """Reference unroll of one sequence with a Python loop: list of outputs and the final carry."""
    carry = cell.initial_carry() if carry is None else carry
    step = _jit_step(cell)
    xs = np.asarray(xs)
    ys = []
    for t in range(xs.shape[0]):
        carry, y = step(params, carry, xs[t])
        ys.append(np.asarray(y))
    return carry, np.stack(ys)


def _traced_loop(cell, params, xs, carry):
    """``_loop`` for use inside ``jax.grad``/``jax.jit`` (no NumPy conversion)."""
    ys = []
    for t in range(xs.shape[0]):
        carry, y = cell.step(params, carry, xs[t])
        ys.append(y)
    return carry, jnp.stack(ys)


def _lin(p, h):
    return np.asarray(p.w) @ np.asarray(h) + np.asarray(p.b)


def _randn(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


def _init(model, seed=0):
    return jax.jit(model.init)(jax.random.key(seed))


def _log_softmax(z):
    z = np.asarray(z)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_many_to_one_matches_loop_with_lengths():
    cell = rnnjax.lstm(3, 5, dtype=F64)
    model = models.many_to_one(cell, 2, loss="mse")
    params = _init(model)
    xs = _randn(1, (4, 7, 3))
    lengths = jnp.array([7, 3, 1, 5])
    out = jax.jit(model.apply)(params, xs, lengths)
    chex.assert_shape(out, (4, 2))
    for b in range(4):
        _, ys = _loop(cell, params.cell, xs[b, : int(lengths[b])])
        chex.assert_trees_all_close(out[b], _lin(params.readout, ys[-1]), rtol=1e-12)


def test_many_to_one_xent_loss_and_accuracy():
    cell = rnnjax.gru(2, 4, dtype=F64)
    model = models.many_to_one(cell, 3, loss="xent")
    params = _init(model)
    xs = _randn(1, (5, 6, 2))
    targets = jnp.array([0, 1, 2, 1, 0])
    loss, aux = jax.jit(model.loss)(params, Batch(xs, targets))
    logits = np.asarray(jax.jit(model.apply)(params, xs))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ref = -np.mean([logp[b, targets[b]] for b in range(5)])
    np.testing.assert_allclose(loss, ref, rtol=1e-12)
    np.testing.assert_allclose(aux["accuracy"], np.mean(logits.argmax(-1) == np.asarray(targets)))


@pytest.mark.parametrize("loss_name", ["mse", "xent"])
def test_many_to_many_padding_does_not_change_loss_or_grads(loss_name):
    """Padded steps (filled with garbage) give the loss and gradients of the unpadded sequences."""
    cell = rnnjax.elman(3, 4, dtype=F64)
    model = models.many_to_many(cell, 2, loss=loss_name)
    params = _init(model)
    lengths = [6, 2, 4]
    xs = _randn(1, (3, 6, 3))
    if loss_name == "mse":
        ys = _randn(2, (3, 6, 2))
    else:
        ys = np.random.default_rng(2).integers(0, 2, (3, 6))
    mask = np.arange(6)[None, :] < np.array(lengths)[:, None]
    xs_pad = np.where(mask[..., None], xs, 1e3)  # garbage on padded steps
    batch = Batch(xs_pad, ys, jnp.array(lengths))

    def reference(p):
        # every valid step counts once: sum over sequences of per-step losses / number of valid steps
        total, count = 0.0, 0
        for b, n in enumerate(lengths):
            out = model.apply(p, xs[b : b + 1, :n])[0]
            if loss_name == "mse":
                total = total + jnp.sum(jnp.mean((out - ys[b, :n]) ** 2, -1))
            else:
                total = total - jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(out), ys[b, :n, None], -1))
            count += n
        return total / count

    loss, grads = jax.jit(jax.value_and_grad(lambda p: model.loss(p, batch)[0]))(params)
    ref_loss, ref_grads = jax.jit(jax.value_and_grad(reference))(params)
    chex.assert_trees_all_close(loss, ref_loss, rtol=1e-12)
    chex.assert_trees_all_close(grads, ref_grads, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("T", [6, 7])  # chunks that tile the sequence / a ragged last chunk
def test_tbptt_gradient_matches_manual_truncation(T):
    """tbptt=K equals the sum over chunks of gradients taken with the chunk's initial carry held constant."""
    H, K = 4, 3
    cell = rnnjax.elman(2, H, dtype=F64)
    model = models.many_to_many(cell, 1, loss="mse", tbptt=K)
    params = _init(model)
    xs = _randn(1, (2, T, 2))
    ys = _randn(2, (2, T, 1))
    batch = Batch(xs, ys)
    loss, grads = jax.jit(jax.value_and_grad(lambda p: model.loss(p, batch)[0]))(params)

    def manual(p):
        total = 0.0
        for b in range(2):
            carry = cell.initial_carry()
            for start in range(0, T, K):
                c0 = jax.tree.map(jax.lax.stop_gradient, carry)
                carry, hs = _traced_loop(cell, p.cell, xs[b, start : start + K], c0)
                out = hs @ p.readout.w.T + p.readout.b
                total = total + jnp.sum((out - ys[b, start : start + K]) ** 2)
        return total / (2 * T)

    # stop_gradient leaves the forward value unchanged: the loss is the untruncated one
    ref_loss, ref_grads = jax.jit(jax.value_and_grad(manual))(params)
    chex.assert_trees_all_close(loss, ref_loss, rtol=1e-12)
    chex.assert_trees_all_close(grads, ref_grads, rtol=1e-10, atol=1e-14)


def test_tbptt_with_lengths_and_carry_across_batches():
    """Streaming: two half-batches with the carry passed on give the outputs of one long sequence."""
    cell = rnnjax.gru(2, 3, dtype=F64)
    model = models.many_to_many(cell, 2, loss="mse", tbptt=2)
    params = _init(model)
    xs = _randn(1, (2, 8, 2))
    ys = _randn(2, (2, 8, 2))
    carry = model.initial_carry(2)
    loss = jax.jit(model.loss)
    l1, a1 = loss(params, Batch(xs[:, :4], ys[:, :4]), carry)
    l2, a2 = loss(params, Batch(xs[:, 4:], ys[:, 4:]), a1["carry"])
    whole = models.many_to_many(cell, 2, loss="mse")
    chex.assert_trees_all_close((l1 + l2) / 2, jax.jit(whole.loss)(params, Batch(xs, ys))[0], rtol=1e-12)
    for b in range(2):
        c, _ = _loop(cell, params.cell, xs[b])
        chex.assert_trees_all_close(a2["carry"][b], c, rtol=1e-12)
    # tbptt with ragged lengths (T not a multiple of K) keeps the masked forward values
    lengths = jnp.array([5, 3])
    m3 = models.many_to_one(cell, 2, loss="mse", tbptt=3)
    out = jax.jit(m3.apply)(params, xs[:, :7], lengths)
    for b in range(2):
        _, hs = _loop(cell, params.cell, xs[b, : int(lengths[b])])
        chex.assert_trees_all_close(out[b], _lin(params.readout, hs[-1]), rtol=1e-12)


@pytest.mark.parametrize("feed", ["state", "input"])  # "both" is trained in the next test
def test_one_to_many_matches_loop(feed):
    cell = rnnjax.lstm(3, 4, dtype=F64)
    model = models.one_to_many(cell, 3, 2, loss="mse", feed=feed)
    params = _init(model)
    vecs = _randn(1, (2, 3))
    out = jax.jit(model.apply, static_argnames="out_len")(params, vecs, out_len=5)
    chex.assert_shape(out, (2, 5, 2))
    for b in range(2):
        if feed == "input":
            carry = cell.initial_carry()
        else:
            flat = _lin(params.init_map, vecs[b])
            carry = rnnjax.LSTMState(flat[:4], flat[4:])
        x = vecs[b] if feed != "state" else np.zeros(3)
        _, hs = _loop(cell, params.cell, np.stack([x] * 5), carry)
        chex.assert_trees_all_close(out[b], hs @ params.readout.w.T + params.readout.b, rtol=1e-12)


def test_one_to_many_sets_a_complex_carry_whole():
    """LRU (complex carry): the initial-state map reaches real and imaginary parts (2H outputs)."""
    cell = rnnjax.lru(3, 5, output_size=4, dtype=F64)
    model = models.one_to_many(cell, 3, 2, loss="mse", feed="state")
    params = _init(model)
    assert params.init_map.w.shape == (2 * 5, 3)
    vecs = _randn(2, (2, 3))
    out = jax.jit(model.apply, static_argnames="out_len")(params, vecs, out_len=4)
    for b in range(2):
        flat = _lin(params.init_map, vecs[b])
        carry = flat[:5] + 1j * flat[5:]
        _, ys = _loop(cell, params.cell, np.zeros((4, 3)), carry)
        chex.assert_trees_all_close(out[b], ys @ params.readout.w.T + params.readout.b, rtol=1e-10)


def test_one_to_many_learns_and_masks():
    cell = rnnjax.gru(2, 8)
    model = models.one_to_many(cell, 2, 1, loss="mse", feed="both")
    vecs = _randn(1, (8, 2)).astype(np.float32)
    t = np.arange(6.0, dtype=np.float32)
    targets = np.sin(vecs[:, :1] * t[None, :] * 0.5 + vecs[:, 1:])[..., None]
    lengths = np.array([6, 5, 4, 3, 6, 5, 4, 3])
    batch = Batch(vecs, targets, None, lengths)
    # padded targets do not matter
    batch2 = batch._replace(targets=np.where(t[None, :, None] < lengths[:, None, None], targets, 99.0).astype(np.float32))
    params = _init(model)
    loss = jax.jit(lambda p, b: model.loss(p, b)[0])
    chex.assert_trees_all_close(loss(params, batch), loss(params, batch2))
    opt = optax.adam(1e-2)
    state = opt.init(params)

    @jax.jit
    def step(p, s):
        g = jax.grad(lambda q: model.loss(q, batch2)[0])(p)
        u, s = opt.update(g, s)
        return optax.apply_updates(p, u), s

    first = loss(params, batch)
    for _ in range(60):
        params, state = step(params, state)
    assert loss(params, batch) < 0.5 * first


def test_seq2seq_teacher_forcing_and_greedy_match_loops():
    V = 4
    enc, dec = rnnjax.gru(V, 5, dtype=F64), rnnjax.gru(V + 1, 5, dtype=F64)
    model = models.seq2seq(enc, dec, V, loss="xent")
    params = _init(model)
    tokens = np.random.default_rng(1).integers(0, V, (3, 6))
    xs = np.eye(V)[tokens]
    lengths = jnp.array([6, 4, 2])
    targets = tokens[:, ::-1]
    tl = jnp.array([3, 3, 2])
    batch = Batch(xs, targets[:, :3], lengths, tl)
    loss, _ = jax.jit(model.loss)(params, batch)
    greedy = jax.jit(model.apply, static_argnames="out_len")(params, xs, lengths, out_len=3)
    total, count = 0.0, 0
    for b in range(3):
        c, _ = _loop(enc, params.encoder, xs[b, : int(lengths[b])])
        prev, gc, g = V, c, V  # start token
        for t in range(int(tl[b])):
            c, h = _jit_step(dec)(params.decoder, c, np.eye(V + 1)[prev])
            logits = _lin(params.readout, h)
            total -= _log_softmax(logits)[targets[b, t]]
            count += 1
            prev = int(targets[b, t])
        for t in range(3):  # greedy: feed back the argmax
            gc, h = _jit_step(dec)(params.decoder, gc, np.eye(V + 1)[g])
            logits = _lin(params.readout, h)
            chex.assert_trees_all_close(greedy[b, t], logits, rtol=1e-10)
            g = int(np.argmax(logits))
    chex.assert_trees_all_close(loss, total / count, rtol=1e-12)


def test_model_errors_name_the_argument():
    with pytest.raises(ValueError, match="decoder: expected input_size 5"):
        models.seq2seq(rnnjax.gru(4, 5), rnnjax.gru(4, 5), 4, loss="xent")
    with pytest.raises(ValueError, match="loss"):
        models.many_to_one(rnnjax.gru(4, 5), 2, loss="hinge")
    with pytest.raises(ValueError, match="tbptt"):
        models.run_cell(rnnjax.gru(2, 3), None, jnp.zeros((1, 4, 2)), tbptt=0)
    m = models.many_to_one(rnnjax.gru(2, 3), 1)
    with pytest.raises(ValueError, match=r"inputs: expected shape \(B, T, 2\)"):
        m.apply(jax.eval_shape(m.init, jax.random.key(0)), jnp.zeros((1, 4, 3)))


def test_generate_greedy_matches_loop():
    V = 5
    cell = rnnjax.lstm(V, 6, dtype=F64)
    model = models.many_to_many(cell, V, loss="xent")
    params = _init(model, 3)
    prime = jnp.array([1, 2, 0])
    gen = jax.jit(models.generate, static_argnums=(0, 4), static_argnames="temperature")
    toks = gen(model, params, jax.random.key(0), prime, 6, temperature=0.0)
    carry = cell.initial_carry()
    for tok in prime[:-1]:
        carry, _ = _jit_step(cell)(params.cell, carry, np.eye(V)[tok])
    tok, ref = int(prime[-1]), []
    for _ in range(6):
        carry, h = _jit_step(cell)(params.cell, carry, np.eye(V)[tok])
        tok = int(np.argmax(_lin(params.readout, h)))
        ref.append(tok)
    np.testing.assert_array_equal(toks, ref)
    sampled = gen(model, params, jax.random.key(0), prime, 50, temperature=1.0)
    assert sampled.shape == (50,) and int(sampled.min()) >= 0 and int(sampled.max()) < V


# ------------------------------------------------------------------------------------ layers in models
def _np_params(init, seed=0, scale=0.5):
    """Random parameters shaped like ``init(key)``, drawn by NumPy (no init program to compile)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype),
                        jax.eval_shape(init, jax.random.key(0)))


def _bi_loss(params, fw, bw, x, y, n, d_f, d_b):
    """Reference many_to_one(bidirectional) MSE of one sequence of length n, deltas added to each carry.

    Python loops over all T steps; a step t >= n leaves the carries alone.
    """
    keep = lambda t, new, old: jnp.where(t < n, new, old)  # noqa: E731
    c, h_f = fw.initial_carry(), jnp.zeros(fw.output_size)
    for t in range(x.shape[0]):
        c_new, h = fw.step(params.cell.forward, c + d_f[t], x[t])
        c, h_f = keep(t, c_new, c), keep(t, h, h_f)
    c = bw.initial_carry()
    for t in reversed(range(x.shape[0])):
        c_new, h_b = bw.step(params.cell.backward, c + d_b[t], x[t])  # ends at t = 0: the whole prefix seen
        c = keep(t, c_new, c)
    out = params.readout.w @ jnp.concatenate([h_f, h_b]) + params.readout.b
    return jnp.mean((out - y) ** 2)


def test_many_to_one_bidirectional_matches_loop_and_grad_profile():
    fw, bw = rnnjax.elman(3, 4, dtype=F64), rnnjax.elman(3, 2, dtype=F64)
    model = models.many_to_one(rnnjax.bidirectional(fw, bw), 1)  # regression: a Layer used to be refused
    params = _np_params(model.init)
    xs, ys = _randn(1, (3, 5, 3)), _randn(2, (3, 1))
    lengths = np.array([5, 3, 1])
    batch = Batch(jnp.asarray(xs), jnp.asarray(ys), jnp.asarray(lengths))
    zeros = (np.zeros((5, 4)), np.zeros((5, 2)))
    ref = jax.vmap(jax.value_and_grad(lambda x, y, n, d_f, d_b: _bi_loss(params, fw, bw, x, y, n, d_f, d_b), (3, 4)),
                   (0, 0, 0, None, None))
    ref_loss, ref_grads = jax.jit(ref)(xs, ys, lengths, *zeros)
    chex.assert_trees_all_close(jax.jit(model.loss)(params, batch)[0], np.mean(ref_loss), rtol=1e-12)
    profile = jax.jit(models.grad_profile, static_argnums=0)(model, params, batch)
    want = np.mean([np.linalg.norm(g, axis=-1) for g in ref_grads], axis=1)
    chex.assert_shape(profile, (2, 5))
    chex.assert_trees_all_close(profile, want, rtol=1e-10, atol=1e-14)


def test_grad_profile_stack_many_to_many_matches_loop():
    cell = rnnjax.stack(rnnjax.elman(2, 4, dtype=F64), rnnjax.elman(4, 3, dtype=F64))
    model = models.many_to_many(cell, 4, loss="xent")
    params = _np_params(model.init)
    xs, tokens, lengths = _randn(3, (2, 5, 2)), np.array([[0, 1, 2, 3, 0], [3, 2, 1, 0, 1]]), np.array([5, 2])
    batch = Batch(jnp.asarray(xs), jnp.asarray(tokens), jnp.asarray(lengths))

    def seq_loss(deltas, x, tok, n):  # mean cross-entropy over the n valid steps, by a Python loop
        c, total = cell.initial_carry(), 0.0
        for t in range(5):
            c_new, h = cell.step(params.cell, jax.tree.map(lambda a, d: a + d[t], c, deltas), x[t])
            c = jax.tree.map(lambda a, b: jnp.where(t < n, a, b), c_new, c)
            logits = params.readout.w @ h + params.readout.b
            total = total - jnp.where(t < n, jax.nn.log_softmax(logits)[tok[t]], 0.0)
        return total / n

    zeros = jax.tree.map(lambda c: jnp.zeros((5,) + c.shape, F64), cell.initial_carry())
    grads = jax.jit(jax.vmap(jax.grad(seq_loss), (None, 0, 0, 0)))(zeros, xs, tokens, lengths)
    want = np.sqrt(sum(np.sum(np.asarray(g).reshape(2, 5, -1) ** 2, -1) for g in jax.tree.leaves(grads)))
    profile = jax.jit(models.grad_profile, static_argnums=0)(model, params, batch)
    chex.assert_trees_all_close(profile, np.mean(want, 0), rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="model: grad_profile supports many_to_one and many_to_many"):
        models.grad_profile(models.seq2seq(rnnjax.gru(2, 3), rnnjax.gru(5, 3), 4), params, batch)


def test_dropout_model_key_tbptt_and_refusals():
    deep = rnnjax.sequential(rnnjax.elman(2, 4, dtype=F64), rnnjax.elman(4, 2, dtype=F64), dropout=0.5)
    model = models.many_to_one(deep, 2)
    params = _np_params(model.init)
    batch = Batch(jnp.asarray(_randn(4, (3, 6, 2))), jnp.asarray(_randn(5, (3, 2))), jnp.array([6, 4, 2]))
    chunked = models.many_to_one(deep, 2, tbptt=4)  # a causal layer: chunks leave the forward values alone

    @jax.jit
    def losses(p, b, k):
        return (model.loss(p, b, key=k)[0], model.loss(p, b)[0], model.evaluate(p, b)["loss"],
                chunked.loss(p, b)[0], chunked.loss(p, b, chunked.initial_carry(3))[1]["carry"])

    dropped, clean, evaluated, truncated, carry = losses(params, batch, jax.random.key(1))
    assert losses(params, batch, jax.random.key(1))[0] == dropped  # pure in the key
    assert losses(params, batch, jax.random.key(2))[0] != dropped != clean  # dropout active with a key
    assert evaluated == clean  # evaluate: no dropout
    chex.assert_trees_all_close(truncated, clean, rtol=1e-12)
    assert jax.tree.structure(carry) == jax.tree.structure(chunked.initial_carry(3))
    bi = rnnjax.bidirectional(rnnjax.gru(2, 3))
    with pytest.raises(ValueError, match="tbptt: truncated BPTT .* needs a causal"):
        models.many_to_many(bi, 2, tbptt=3)
    bi_model = models.many_to_one(bi, 2)
    with pytest.raises(ValueError, match="carry: a layer with a backward pass"):
        bi_model.loss(jax.eval_shape(bi_model.init, jax.random.key(0)), batch, bi_model.initial_carry(3))
    with pytest.raises(TypeError, match="cell: one_to_many .* needs an rnnjax.Cell"):
        models.one_to_many(bi, 2, 2)
    with pytest.raises(TypeError, match="decoder: seq2seq"):
        models.seq2seq(rnnjax.gru(2, 3), bi, 2)
    with pytest.raises(TypeError, match="cell: expected an rnnjax.Cell or rnnjax.Layer"):
        models.many_to_one("gru", 2)


def test_bidirectional_model_trains_with_make_trainer():
    from rnnjax.tasks import get_task

    model = models.many_to_one(rnnjax.bidirectional(rnnjax.elman(8, 8)), 10, loss="xent")
    trainer = rnnjax.make_trainer(model, get_task("digits"), optax.adam(2e-2), batch_size=16)
    state, metrics = jax.jit(trainer.run, static_argnums=1)(jax.jit(trainer.init)(jax.random.key(0)), 30)
    loss = np.asarray(metrics["loss"])
    assert np.all(np.isfinite(loss)) and loss[-5:].mean() < 0.8 * loss[:5].mean()


def test_for_task_layers_and_checkpoint_round_trip(tmp_path):
    import functools

    from rnnjax import checkpoint
    from rnnjax.tasks import get_task

    task, factory = get_task("digits"), functools.partial(rnnjax.make_cell, "lstm")
    model = models.for_task(task, factory, 8, bidirectional=True, layers=2, dropout=0.25)
    assert isinstance(model.cell, rnnjax.Layer) and model.cell.input_size == 8 and model.cell.output_size == 16
    params = _np_params(model.init)
    assert [type(p).__name__ for p in params.cell] == ["BidirectionalParams"] * 2
    checkpoint.save(tmp_path / "p.ckpt", params)
    restored, _ = checkpoint.load(tmp_path / "p.ckpt", jax.eval_shape(model.init, jax.random.key(0)))
    chex.assert_trees_all_equal(restored, params)
    deep = models.for_task(get_task("copy"), factory, 3, layers=2)  # no dropout, one direction: a stack Cell
    assert isinstance(deep.cell, rnnjax.Cell) and deep.cell.name == "stack(lstm,lstm)"
    for name in ("sinegen", "reverse"):  # a stack steps like any cell: every pattern takes it
        assert models.for_task(get_task(name), factory, 3, layers=2).cell.name == "stack(lstm,lstm)"
    for kwargs, match in [({"layers": 0}, "layers: expected a positive integer"),
                          ({"dropout": 1.0, "layers": 2}, r"dropout: expected a probability in \[0, 1\)"),
                          ({"dropout": 0.1}, "dropout: acts between layers and needs layers >= 2"),
                          ({"bidirectional": 1}, "bidirectional: expected True or False")]:
        with pytest.raises((ValueError, TypeError), match=match):
            models.for_task(task, factory, 3, **kwargs)
    with pytest.raises(ValueError, match="bidirectional: the seq2seq pattern"):
        models.for_task(get_task("reverse"), factory, 3, bidirectional=True)
