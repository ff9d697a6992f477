"""Training engine and checkpoints: manual optimizer updates, the non-finite guard, determinism, vmapped runs."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax
from rnnjax import checkpoint as ckpt
from rnnjax import models
from rnnjax.tasks import Batch, Task
from rnnjax.train import TrainState, make_optimizer, make_train_step, make_trainer, set_learning_rate


def _state(params, opt):
    zero = jnp.zeros((), jnp.int32)
    return TrainState(params, opt.init(params), zero, jax.random.key(0), zero, zero)


def _sum_task(T=4, nan=False):
    """A tiny many-to-one regression: target = sum of the inputs (NaN inputs if ``nan``)."""

    def sample(key, batch_size):
        x = jax.random.uniform(key, (batch_size, T, 1))
        if nan:
            x = x * jnp.nan
        return Batch(x, jnp.sum(x, axis=1))

    fixed = sample(jax.random.key(123), 16)
    return Task("sum", "many_to_one", 1, 1, "mse", sample, lambda: fixed, baseline_loss=T / 12)


def _quadratic(params, batch):
    return 0.5 * jnp.sum((params["w"] - batch) ** 2)


def test_train_step_sgd_with_clipping_matches_manual_update():
    params = {"w": jnp.array([3.0, -4.0])}
    target = jnp.zeros(2)
    opt = make_optimizer(0.1, clip=1.0, name="sgd")
    step = make_train_step(_quadratic, opt)
    state, m = step(_state(params, opt), target)
    g = np.array([3.0, -4.0])  # gradient, norm 5 > clip 1
    np.testing.assert_allclose(m["grad_norm"], 5.0, rtol=1e-6)  # before clipping
    np.testing.assert_allclose(state.params["w"], np.array([3.0, -4.0]) - 0.1 * g / 5.0, rtol=1e-6)
    np.testing.assert_allclose(m["loss"], 12.5)
    assert bool(m["applied"]) and not bool(m["skipped"]) and int(state.step) == 1
    # no clipping below the threshold; any optax transformation works
    opt2 = optax.sgd(0.1)
    state2, _ = make_train_step(_quadratic, opt2)(_state(params, opt2), target)
    np.testing.assert_allclose(state2.params["w"], np.array([3.0, -4.0]) * 0.9, rtol=1e-6)


def test_guard_skips_non_finite_loss_and_gradient():
    def loss_fn(params, batch):
        # batch = (x, y): NaN x gives a NaN loss; x = 0 gives a finite loss with an infinite gradient
        x, y = batch
        return jnp.sum(jnp.sqrt(jnp.abs(params["w"] * x))) + jnp.sum((params["w"] - y) ** 2)

    params = {"w": jnp.array([1.0, 2.0])}
    opt = make_optimizer(1e-2, clip=1.0)
    step = make_train_step(loss_fn, opt)
    s0 = _state(params, opt)
    ok = (jnp.ones(2), jnp.zeros(2))
    s1, m1 = step(s0, ok)
    assert bool(m1["applied"])
    for bad in [(jnp.array([jnp.nan, 1.0]), jnp.zeros(2)), (jnp.zeros(2), jnp.zeros(2))]:
        s2, m2 = step(s1, bad)
        assert bool(m2["skipped"]) and not bool(m2["applied"])
        chex.assert_trees_all_equal(s2.params, s1.params)
        chex.assert_trees_all_equal(s2.opt_state, s1.opt_state)
        assert (int(s2.step), int(s2.skipped), int(s2.consecutive_skips)) == (2, 1, 1)
    s3, m3 = step(s2, bad)
    assert int(s3.consecutive_skips) == 2 and int(s3.skipped) == 2
    s4, m4 = step(s3, ok)
    assert bool(m4["applied"]) and int(s4.consecutive_skips) == 0 and int(s4.skipped) == 2
    # an update that overflows the parameters is also refused
    huge = make_optimizer(1e38, clip=0.0, name="sgd")
    s5, m5 = make_train_step(loss_fn, huge)(_state({"w": jnp.array([1e30, 2.0], jnp.float32)}, huge),
                                   (jnp.ones(2, jnp.float32), jnp.zeros(2, jnp.float32)))
    assert bool(m5["skipped"]) and np.all(np.isfinite(s5.params["w"]))



def test_guard_skips_a_step_whose_global_norm_overflows():
    """Finite float32 gradients whose global norm overflows to inf: clipping would zero the update
    silently; the guard counts the step as skipped instead."""
    params = {"w": jnp.array([1.0, 1.0], jnp.float32)}
    opt = make_optimizer(1e-3, clip=1.0, name="sgd")
    loss_fn = lambda p, batch: jnp.sum(0.5 * p["w"] * batch)  # gradient 1.5e38 per entry: finite
    batch = jnp.array([3e38, 3e38], jnp.float32)
    grads = jax.grad(loss_fn)(params, batch)
    assert np.all(np.isfinite(grads["w"])) and not np.isfinite(float(optax.tree.norm(grads)))
    s1, m1 = make_train_step(loss_fn, opt)(_state(params, opt), batch)
    assert bool(m1["skipped"]) and int(s1.skipped) == 1
    chex.assert_trees_all_equal(s1.params, params)

def _trainer(task=None, max_skips=None, lr=1e-2):
    task = _sum_task() if task is None else task
    model = models.many_to_one(rnnjax.elman(1, 4), 1, loss="mse")
    return make_trainer(model, task, make_optimizer(lr, clip=1.0), batch_size=8, max_skips=max_skips)


@pytest.fixture(scope="module")
def shared():
    """One trainer with its jitted ``init`` and 4-step ``run``, compiled once for the tests below."""
    tr = _trainer()
    return tr, jax.jit(tr.init), jax.jit(lambda s: tr.run(s, 4))


def test_trainer_is_deterministic_and_draws_data_by_step(shared):
    tr, init, run4 = shared
    s0 = init(jax.random.key(0))
    a, ma = run4(s0)
    a, ma2 = run4(a)
    ma = jnp.concatenate([ma["loss"], ma2["loss"]])
    again, _ = run4(run4(s0)[0])
    chex.assert_trees_all_equal(a, again)
    # the same steps written out: batch s = task.sample(fold_in(data_key, s))
    step = make_train_step(tr.model.loss, tr.optimizer, has_aux=True)
    sample = jax.jit(tr.task.sample, static_argnums=1)
    c = s0
    for s in range(8):
        c, mc = step(c, sample(jax.random.fold_in(s0.data_key, s), 8))
        np.testing.assert_allclose(mc["loss"], ma[s], rtol=1e-5)
    chex.assert_trees_all_close(c.params, a.params, rtol=1e-5, atol=1e-7)
    assert float(jnp.mean(ma[-3:])) < float(jnp.mean(ma[:3]))


def test_vmapped_runs_equal_separate_runs(shared):
    tr, init, run4 = shared
    keys = jax.random.split(jax.random.key(5), 3)
    lrs = jnp.array([1e-3, 1e-2, 3e-2], jnp.float32)
    states = jax.jit(jax.vmap(tr.init))(keys, lrs)
    states, m = jax.jit(jax.vmap(lambda s: tr.run(s, 4)))(states)
    for i in range(3):
        single, ms = run4(init(keys[i], lrs[i]))
        chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], states.params), single.params, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(m["loss"][i], ms["loss"], rtol=1e-5)


def test_run_halts_after_max_skips():
    tr = _trainer(_sum_task(nan=True), max_skips=3)
    s0 = jax.jit(tr.init)(jax.random.key(0))
    s, m = jax.jit(tr.run, static_argnums=1)(s0, 6)
    assert (int(s.step), int(s.skipped), int(s.consecutive_skips)) == (3, 3, 3)
    np.testing.assert_array_equal(m["halted"], [False] * 3 + [True] * 3)
    chex.assert_trees_all_equal(s.params, s0.params)


def test_streaming_trainer_carries_state_across_batches():
    T, K, B = 12, 4, 2
    seq = jnp.sin(jnp.arange(T * 4, dtype=jnp.float32) * 0.3)[:, None]

    def stream(key, batch_size):
        def nxt(offsets):
            idx = offsets[:, None] + jnp.arange(K)[None, :]
            return offsets + K, Batch(seq[idx], seq[idx + 1])

        return jnp.zeros((batch_size,), jnp.int32) + jnp.arange(batch_size, dtype=jnp.int32), nxt

    task = Task("stream", "many_to_many", 1, 1, "mse", lambda k, b: stream(k, b)[1](jnp.zeros(b, jnp.int32))[1],
                lambda: Batch(seq[None, :K], seq[None, 1 : K + 1]), stream=stream)
    cell = rnnjax.lstm(1, 3)  # a pytree carry (h, c)
    model = models.many_to_many(cell, 1, loss="mse", tbptt=2)
    tr = make_trainer(model, task, make_optimizer(1e-2), batch_size=B, streaming=True)
    s0 = jax.jit(tr.init)(jax.random.key(0))
    s1, _ = jax.jit(tr.run, static_argnums=1)(s0, 1)
    np.testing.assert_array_equal(s1.data_state, [K, K + 1])
    for b in range(B):  # the carry after one batch: the cell run over that row's first K steps
        c, _ = rnnjax.unroll(cell, s0.params.cell, seq[b : b + K])
        chex.assert_trees_all_close(jax.tree.map(lambda x: x[b], s1.carry), c, rtol=1e-5)


def test_set_learning_rate():
    opt = make_optimizer(1e-3, clip=1.0)
    st = set_learning_rate(opt.init({"w": jnp.zeros(2)}), 0.5)
    np.testing.assert_allclose(st[-1].hyperparams["learning_rate"], 0.5)
    with pytest.raises(ValueError, match="opt_state"):
        set_learning_rate(optax.adam(1e-3).init({"w": jnp.zeros(2)}), 0.5)
    with pytest.raises(ValueError, match="clip"):
        make_optimizer(1e-3, clip=-1.0)


# ------------------------------------------------------------------------------------------ checkpoint
def _tree():
    return TrainState(
        {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3, jnp.float32)},
        (optax.EmptyState(), {"mu": jnp.zeros(3)}),
        jnp.array(7, jnp.int32),
        jax.random.key(42),
        jnp.array(1, jnp.int32),
        jnp.array(0, jnp.int32),
    )


def test_checkpoint_roundtrip(tmp_path):
    path = tmp_path / "c.msgpack"
    tree = _tree()
    ckpt.save(path, tree, {"step": 7})
    back, meta = ckpt.load(path, tree)
    assert meta == {"step": 7}
    chex.assert_trees_all_equal(back.params, tree.params)
    chex.assert_trees_all_equal(back.opt_state, tree.opt_state)
    np.testing.assert_array_equal(jax.random.key_data(back.data_key), jax.random.key_data(tree.data_key))
    np.testing.assert_array_equal(jax.random.uniform(back.data_key), jax.random.uniform(tree.data_key))


def test_checkpoint_refuses_non_finite(tmp_path):
    path = tmp_path / "c.msgpack"
    ckpt.save(path, _tree())
    before = path.read_bytes()
    bad = _tree()._replace(params={"w": jnp.full((2, 3), jnp.inf), "b": jnp.ones(3)})
    with pytest.raises(ckpt.CheckpointError, match=r"non-finite.*\['w'\]"):
        ckpt.save(path, bad)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["c.msgpack"]


def test_checkpoint_corrupted_and_incompatible(tmp_path):
    path = tmp_path / "c.msgpack"
    tree = _tree()
    ckpt.save(path, tree)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="corrupted"):
        ckpt.load(path, tree)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="not an rnnjax checkpoint"):
        ckpt.load(path, tree)
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint"):
        ckpt.load(tmp_path / "missing", tree)
    ckpt.save(path, tree)
    other = tree._replace(params={"w": jnp.zeros((3, 3)), "b": jnp.ones(3, jnp.float32)})
    with pytest.raises(ckpt.CheckpointError, match=r"incompatible: \.params\['w'\] expected float64\(3, 3\), got float64\(2, 3\)"):
        ckpt.load(path, other)


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.msgpack"
    tree = _tree()
    ckpt.save(path, tree, {"step": 7})
    newer = tree._replace(step=jnp.array(8, jnp.int32))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed during save")

    for target in ("fsync", "replace"):  # killed while writing / just before the rename
        with monkeypatch.context() as m:
            m.setattr(ckpt.os, target, crash)
            with pytest.raises(KeyboardInterrupt):
                ckpt.save(path, newer, {"step": 8})
        assert os.listdir(tmp_path) == ["c.msgpack"]  # no temporary file left behind
        back, meta = ckpt.load(path, tree)
        assert meta == {"step": 7} and int(back.step) == 7
    ckpt.save(path, newer, {"step": 8})
    assert ckpt.load_metadata(path) == {"step": 8}
