"""Cells against their formulas, initialisers against their defining properties, and input errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import initializers as inits

sig = lambda a: 1 / (1 + np.exp(-a))


def _np(tree):
    return jax.tree.map(np.asarray, tree)


def test_lstm_step_matches_numpy_formula_and_forget_bias():
    cell = rnnjax.lstm(3, 4, dtype=jnp.float64, bias_init=inits.normal(0.5))
    p = _np(cell.init(jax.random.key(0)))
    x, h, c = np.random.default_rng(0).normal(size=(3, 4))[0, :3], np.full(4, 0.3), np.full(4, -0.2)
    z = p.w_in @ x + p.w_rec @ h + p.b
    i, f, g, o = np.split(z, 4)
    c_want = sig(f) * c + sig(i) * np.tanh(g)
    h_want = sig(o) * np.tanh(c_want)
    (h_got, c_got), y = cell.step(cell.init(jax.random.key(0)), rnnjax.LSTMState(jnp.asarray(h), jnp.asarray(c)), jnp.asarray(x))
    np.testing.assert_allclose(c_got, c_want, rtol=1e-12)
    np.testing.assert_allclose(h_got, h_want, rtol=1e-12)
    np.testing.assert_allclose(y, h_want, rtol=1e-12)
    b0 = rnnjax.lstm(3, 4).init(jax.random.key(0)).b
    np.testing.assert_array_equal(b0[4:8], 1.0)  # forget gate block
    np.testing.assert_array_equal(np.delete(np.asarray(b0), np.arange(4, 8)), 0.0)


def test_gru_step_matches_torch_formula():
    cell = rnnjax.gru(3, 4, dtype=jnp.float64, bias_init=inits.normal(0.5))
    params = cell.init(jax.random.key(1))
    p = _np(params)
    x, h = np.linspace(-1, 1, 3), np.linspace(0.5, -0.5, 4)
    gi, gh = p.w_in @ x + p.b, p.w_rec @ h + p.b_rec
    r = sig(gi[:4] + gh[:4])
    z = sig(gi[4:8] + gh[4:8])
    n = np.tanh(gi[8:] + r * gh[8:])  # reset gate after the hidden matmul, b_hn inside
    h_new, _ = cell.step(params, jnp.asarray(h), jnp.asarray(x))
    np.testing.assert_allclose(h_new, (1 - z) * n + z * h, rtol=1e-12)


def test_elman_irnn_formulas():
    for act, phi in (("tanh", np.tanh), ("relu", lambda a: np.maximum(a, 0)), ("linear", lambda a: a)):
        cell = rnnjax.elman(3, 4, activation=act, dtype=jnp.float64, bias_init=inits.normal(1.0))
        params = cell.init(jax.random.key(2))
        p = _np(params)
        x, h = np.linspace(-1, 1, 3), np.linspace(0.5, -0.5, 4)
        np.testing.assert_allclose(cell.step(params, jnp.asarray(h), jnp.asarray(x))[0], phi(p.w_in @ x + p.w_rec @ h + p.b), rtol=1e-12)
    p = rnnjax.irnn(3, 4, gain=0.9).init(jax.random.key(0))
    np.testing.assert_array_equal(p.w_rec, 0.9 * np.eye(4, dtype=np.float32))
    np.testing.assert_array_equal(p.b, 0.0)
    assert float(jnp.std(p.w_in)) < 0.01


def test_initializers_defining_properties():
    key = jax.random.key(0)
    q = np.asarray(inits.orthogonal(1.7)(key, (6, 6), jnp.float64))
    np.testing.assert_allclose(q.T @ q, 1.7**2 * np.eye(6), atol=1e-12)
    rect = np.asarray(inits.orthogonal()(key, (3, 5), jnp.float64))
    np.testing.assert_allclose(rect @ rect.T, np.eye(3), atol=1e-12)
    w = np.asarray(inits.spectral_radius(0.95)(key, (8, 8), jnp.float64))
    np.testing.assert_allclose(np.abs(np.linalg.eigvals(w)).max(), 0.95, rtol=1e-10)
    w = np.asarray(inits.max_singular_value(1.3)(key, (8, 5), jnp.float64))
    np.testing.assert_allclose(np.linalg.norm(w, 2), 1.3, rtol=1e-10)
    u = np.asarray(inits.torch_uniform(16)(key, (200, 16)))
    assert np.abs(u).max() <= 0.25 and np.abs(u).max() > 0.24
    w = np.asarray(inits.random_gain(1.5)(key, (400, 400), jnp.float64))
    np.testing.assert_allclose(w.std(), 1.5 / 20, rtol=0.02)
    b = np.asarray(inits.chrono(50.0)(key, (20,), jnp.float64))
    b_i, b_f, b_g, b_o = np.split(b, 4)
    assert np.all(b_f >= 0) and np.all(b_f <= np.log(49)) and np.allclose(b_i, -b_f)
    assert np.all(b_g == 0) and np.all(b_o == 0)
    # gate blocks of an LSTM recurrent matrix are each orthogonal
    w_rec = np.asarray(rnnjax.lstm(2, 5, dtype=jnp.float64).init(key).w_rec)
    for blk in np.split(w_rec, 4):
        np.testing.assert_allclose(blk.T @ blk, np.eye(5), atol=1e-12)
    # jax.nn.initializers mix in
    cell = rnnjax.elman(2, 3, rec_init=jax.nn.initializers.glorot_uniform())
    chex.assert_shape(cell.init(key).w_rec, (3, 3))


def test_same_seed_same_params():
    a = rnnjax.gru(3, 8).init(jax.random.key(5))
    b = rnnjax.gru(3, 8).init(jax.random.key(5))
    chex.assert_trees_all_equal(a, b)


# ---- clear errors naming the argument --------------------------------------------------------


@pytest.mark.parametrize(
    "build, exc, pattern",
    [
        (lambda: rnnjax.elman(0, 4), ValueError, "input_size: expected a positive integer, got 0"),
        (lambda: rnnjax.lstm(3, -2), ValueError, "hidden_size: expected a positive integer, got -2"),
        (lambda: rnnjax.gru(3, 2.5), ValueError, "hidden_size"),
        (lambda: rnnjax.elman(3, 4, activation="gelu"), ValueError, r"activation: expected one of \['linear', 'relu', 'tanh'\], got 'gelu'"),
        (lambda: rnnjax.elman(3, 4, dtype=jnp.int32), TypeError, "dtype"),
        (lambda: rnnjax.make_cell("vanilla", 3, 4), ValueError, "name: unknown cell 'vanilla'"),
        (lambda: inits.chrono(1.0), ValueError, "t_max"),
        (lambda: inits.identity()(jax.random.key(0), (3, 4)), ValueError, "identity: expected a square shape"),
    ],
)
def test_construction_errors(build, exc, pattern):
    with pytest.raises(exc, match=pattern):
        build()


def test_unroll_errors_name_the_argument():
    cell = rnnjax.lstm(3, 4)
    p = cell.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"xs: expected input width 3 .* got shape \(5, 2\)"):
        rnnjax.unroll(cell, p, jnp.ones((5, 2)))
    with pytest.raises(ValueError, match=r"xs: expected shape \(time, 3\) for one sequence, got \(8, 5, 3\).*vmap"):
        rnnjax.unroll(cell, p, jnp.ones((8, 5, 3)))
    with pytest.raises(TypeError, match="xs: expected a floating-point array"):
        rnnjax.unroll(cell, p, jnp.ones((5, 3), jnp.int32))
    for bad in (-1, 6):
        with pytest.raises(ValueError, match=rf"length: expected a value in \[0, 5\].*got {bad}"):
            rnnjax.unroll(cell, p, jnp.ones((5, 3)), length=bad)
    with pytest.raises(ValueError, match="length: expected an integer scalar"):
        rnnjax.unroll(cell, p, jnp.ones((5, 3)), length=jnp.array([2, 3]))
    with pytest.raises(ValueError, match="params: these parameters do not belong to cell 'lstm'"):
        rnnjax.unroll(cell, rnnjax.gru(3, 4).init(jax.random.key(0)), jnp.ones((5, 3)))
    with pytest.raises(ValueError, match="params: these parameters do not belong"):
        rnnjax.unroll(cell, rnnjax.lstm(3, 8).init(jax.random.key(0)), jnp.ones((5, 3)))
    with pytest.raises(ValueError, match="carry: expected an unbatched carry"):
        rnnjax.unroll(cell, p, jnp.ones((5, 3)), rnnjax.LSTMState(jnp.zeros((2, 4)), jnp.zeros((2, 4))))
    with pytest.raises(ValueError, match="unroll: expected a positive integer"):
        rnnjax.unroll(cell, p, jnp.ones((5, 3)), unroll=0)
    with pytest.raises(ValueError, match="method: expected one of"):
        rnnjax.unroll(cell, p, jnp.ones((5, 3)), method="magic")
    with pytest.raises(TypeError, match="cell: expected an rnnjax.Cell"):
        rnnjax.unroll("lstm", p, jnp.ones((5, 3)))
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 5\]"):
        rnnjax.unroll_batch(cell, p, jnp.ones((2, 5, 3)), lengths=jnp.array([1, 9]))
    with pytest.raises(ValueError, match=r"lengths: expected integers of shape \(2,\)"):
        rnnjax.unroll_batch(cell, p, jnp.ones((2, 5, 3)), lengths=jnp.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"xs: expected shape \(batch, time, 3\)"):
        rnnjax.unroll_batch(cell, p, jnp.ones((5, 3)))
    # Errors are raised at trace time, inside jit too.
    with pytest.raises(ValueError, match="xs: expected input width 3"):
        jax.jit(lambda q, x: rnnjax.unroll(cell, q, x))(p, jnp.ones((5, 2)))
