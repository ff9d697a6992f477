"""Composition: stack, bidirectional, sequential (with dropout), linear readout."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax


def _loop(cell, params, xs, carry=None):
    carry = cell.initial_carry() if carry is None else carry
    ys = []
    for x in xs:
        carry, y = cell.step(params, carry, x)
        ys.append(y)
    return carry, jnp.stack(ys)


def test_stack_equals_layer_by_layer():
    cells = (rnnjax.lstm(3, 5, dtype=jnp.float64), rnnjax.gru(5, 4, dtype=jnp.float64), rnnjax.elman(4, 2, dtype=jnp.float64))
    deep = rnnjax.stack(*cells)
    assert (deep.input_size, deep.output_size) == (3, 2)
    params = deep.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (7, 3))
    carry, ys = rnnjax.unroll(deep, params, xs)
    h = xs
    for k, (c, p) in enumerate(zip(cells, params)):
        ck, h = _loop(c, p, h)
        chex.assert_trees_all_close(carry[k], ck, atol=1e-12)
    chex.assert_trees_all_close(ys, h, atol=1e-12)


def test_bidirectional_lines_up_with_length():
    fw, bw = rnnjax.gru(3, 4, dtype=jnp.float64), rnnjax.lstm(3, 2, dtype=jnp.float64)
    bi = rnnjax.bidirectional(fw, bw)
    assert bi.output_size == 6
    params = bi.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (8, 3))
    (c_f, c_b), ys = jax.jit(lambda p, x, n: bi.apply(p, x, length=n))(params, xs, jnp.asarray(5))
    want_cf, want_f = _loop(fw, params.forward, xs[:5])
    want_cb, want_b_rev = _loop(bw, params.backward, xs[:5][::-1])
    chex.assert_trees_all_close(ys[:5, :4], want_f, atol=1e-12)
    chex.assert_trees_all_close(ys[:5, 4:], want_b_rev[::-1], atol=1e-12)
    chex.assert_trees_all_close(ys[5:], jnp.zeros((3, 6)), atol=0)
    chex.assert_trees_all_close((c_f, c_b), (want_cf, want_cb), atol=1e-12)


def test_sequential_dropout_only_with_key_and_scaled():
    layers = rnnjax.sequential(rnnjax.elman(2, 50), rnnjax.bidirectional(rnnjax.gru(50, 3)), dropout=0.5)
    assert layers.output_size == 6
    params = layers.init(jax.random.key(0))
    xs = jnp.ones((6, 2))
    apply = jax.jit(layers.apply)  # two programs (without and with a key) instead of a fresh scan compile per call
    _, y_eval = apply(params, xs)
    _, y_eval2 = apply(params, xs)
    np.testing.assert_array_equal(y_eval, y_eval2)
    _, y_a = apply(params, xs, key=jax.random.key(1))
    _, y_b = apply(params, xs, key=jax.random.key(2))
    _, y_a2 = apply(params, xs, key=jax.random.key(1))
    np.testing.assert_array_equal(y_a, y_a2)  # explicit key -> reproducible
    assert not np.allclose(y_a, y_b)
    assert not np.allclose(y_a, y_eval)


def test_dropout_mask_rate_and_scaling():
    ident = rnnjax.Cell(lambda k: (), lambda: jnp.zeros(()), lambda p, c, x: (c, x), 200, 200, "identity")
    layers = rnnjax.sequential(ident, ident, dropout=0.25)
    _, ys = layers.apply(((), ()), jnp.ones((50, 200)), key=jax.random.key(0))
    kept = np.asarray(ys) != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(np.asarray(ys)[kept], 1 / 0.75, rtol=1e-6)


def test_linear_readout():
    lin = rnnjax.linear(4, 3, dtype=jnp.float64)
    p = lin.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (5, 4))
    np.testing.assert_allclose(lin.apply(p, x), np.asarray(x) @ np.asarray(p.w).T + np.asarray(p.b), rtol=1e-12)
    with pytest.raises(ValueError, match="x: expected last axis 4"):
        lin.apply(p, jnp.ones((5, 3)))


def test_composition_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"cells\[1\]: expected input_size 5"):
        rnnjax.stack(rnnjax.lstm(3, 5), rnnjax.gru(4, 2))
    with pytest.raises(ValueError, match="cells: expected at least one"):
        rnnjax.stack()
    with pytest.raises(ValueError, match="dropout"):
        rnnjax.sequential(rnnjax.lstm(3, 5), dropout=1.0)
    with pytest.raises(ValueError, match=r"layers\[1\]"):
        rnnjax.sequential(rnnjax.bidirectional(rnnjax.lstm(3, 5)), rnnjax.gru(5, 2))
    with pytest.raises(TypeError, match=r"layers\[0\]"):
        rnnjax.sequential("lstm")
    with pytest.raises(ValueError, match="backward: expected input_size 3"):
        rnnjax.bidirectional(rnnjax.lstm(3, 5), rnnjax.lstm(4, 5))


def test_deltas_perturb_each_direction_over_the_valid_prefix():
    fw, bw = rnnjax.elman(3, 4, dtype=jnp.float64), rnnjax.lstm(3, 2, dtype=jnp.float64)
    bi = rnnjax.bidirectional(fw, bw)
    deep = rnnjax.sequential(bi, rnnjax.elman(6, 3, dtype=jnp.float64), dropout=0.5)
    assert (bi.backward_size, deep.backward_size, rnnjax.layer(fw, reverse=True).backward_size) == (2, 0, 4)
    assert jax.tree.leaves(deep.backward_carry) == [False, True, True, False]
    rng = np.random.default_rng(0)  # NumPy parameters: no init program to compile
    shapes = jax.eval_shape(bi.init, jax.random.key(0))
    params = jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape)), shapes)
    xs = jax.random.normal(jax.random.key(1), (6, 3), jnp.float64)
    d_f = jax.random.normal(jax.random.key(2), (6, 4), jnp.float64)
    d_b = rnnjax.LSTMState(*jax.random.normal(jax.random.key(3), (2, 6, 2), jnp.float64))
    (c_f, c_b), ys = jax.jit(lambda p, x, d, n: bi.apply(p, x, length=n, deltas=d))(params, xs, (d_f, d_b), 4)
    # Reference: add delta_t to the carry before the step that reads xs[t], over the first 4 steps only.
    cf, y_f = fw.initial_carry(), []
    for t in range(4):
        cf, y = fw.step(params.forward, cf + d_f[t], xs[t])
        y_f.append(y)
    cb, y_b = bw.initial_carry(), {}
    for t in reversed(range(4)):
        cb = rnnjax.LSTMState(cb.h + d_b.h[t], cb.c + d_b.c[t])
        cb, y_b[t] = bw.step(params.backward, cb, xs[t])
    chex.assert_trees_all_close(ys[:4], jnp.concatenate([jnp.stack(y_f), jnp.stack([y_b[t] for t in range(4)])], 1),
                                atol=1e-12)
    chex.assert_trees_all_close(ys[4:], jnp.zeros((2, 6)), atol=0)
    chex.assert_trees_all_close((c_f, c_b), (cf, cb), atol=1e-12)
    with pytest.raises(ValueError, match="deltas: expected a carry-like pytree"):
        bi.apply(params, xs, deltas=(d_f[:5], d_b))
