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
    p = rnnjax.irnn(3, 4, gain=0.9, dtype=jnp.float32).init(jax.random.key(0))
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
        (lambda: rnnjax.lstm(3, True), ValueError, "hidden_size: expected a positive integer, got True"),
        (lambda: rnnjax.gru(np.True_, 4), ValueError, "input_size: expected a positive integer"),
        (lambda: rnnjax.lstm(3, 4, gate_fn="sigmoid"), TypeError, "gate_fn: expected a callable"),
        (lambda: rnnjax.gru(3, 4, activation_fn=None), TypeError, "activation_fn: expected a callable"),
        (lambda: rnnjax.irnn(3, 4, input_scale=0.0), ValueError, "input_scale: expected a finite positive number"),
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


def test_numpy_integer_sizes_are_accepted():
    for make in (rnnjax.elman, rnnjax.irnn, rnnjax.lstm, rnnjax.gru, rnnjax.lru, rnnjax.mingru, rnnjax.minlstm):
        cell = make(np.int64(3), np.int32(4))
        assert type(cell.input_size) is int and (cell.input_size, cell.output_size) == (3, 4)
        chex.assert_shape(jax.tree.leaves(cell.initial_carry())[0], (4,))
    assert rnnjax.lstm(3, 4, proj_size=np.int16(2)).output_size == 2
    assert rnnjax.make_cell("gru", np.int64(2), np.int64(5)).output_size == 5


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), 0.0, -1.0])
def test_gains_must_be_finite_and_positive(bad):
    for make in (inits.orthogonal, inits.identity, inits.normal, inits.random_gain, inits.lecun_normal, inits.uniform,
                 inits.spectral_radius, inits.max_singular_value, lambda g: inits.scaled(g, inits.zeros())):
        with pytest.raises(ValueError, match=r"(gain|stddev|scale|radius|sigma): expected a finite positive number"):
            make(bad)
    with pytest.raises(ValueError, match="gain: expected a finite positive number"):
        rnnjax.irnn(3, 4, gain=bad)
    for name, factory in rnnjax.CELLS.items():  # directly, not only through make_cell
        with pytest.raises(ValueError, match="init_gain: expected a finite positive number"):
            factory(3, 4, init_gain=bad, dtype=None)
        with pytest.raises(ValueError, match="init_gain: expected a finite positive number"):
            rnnjax.make_cell(name, 3, 4, init_gain=bad)
    with pytest.raises(TypeError, match="init_gain: expected a finite positive number"):
        rnnjax.make_cell("lstm", 3, 4, init_gain=True)


def _gate_formulas(gate, act):
    """NumPy LSTM and GRU steps with the given gate and activation functions (Flax's gate_fn, activation_fn)."""

    def lstm_step(p, x, h, c):
        i, f, g, o = np.split(p.w_in @ x + p.w_rec @ h + p.b, 4)
        c = gate(f) * c + gate(i) * act(g)
        return gate(o) * act(c), c

    def gru_step(p, x, h):
        gi, gh = p.w_in @ x + p.b, p.w_rec @ h + p.b_rec
        (i_r, i_z, i_n), (h_r, h_z, h_n) = np.split(gi, 3), np.split(gh, 3)
        r, z = gate(i_r + h_r), gate(i_z + h_z)
        return (1 - z) * act(i_n + r * h_n) + z * h

    return lstm_step, gru_step


def test_lstm_and_gru_take_flax_gate_and_activation_functions():
    hard_sigmoid = lambda a: np.clip(a / 6 + 0.5, 0, 1)  # jax.nn.hard_sigmoid
    softsign = lambda a: a / (1 + np.abs(a))
    lstm_step, gru_step = _gate_formulas(hard_sigmoid, softsign)
    fns = dict(gate_fn=jax.nn.hard_sigmoid, activation_fn=jax.nn.soft_sign)
    x, h, c = np.linspace(-2, 2, 3), np.linspace(1.5, -1.5, 4), np.linspace(-1, 3, 4)
    cell = rnnjax.lstm(3, 4, dtype=jnp.float64, bias_init=inits.normal(2.0), **fns)
    params = cell.init(jax.random.key(0))
    (h_got, c_got), _ = cell.step(params, rnnjax.LSTMState(jnp.asarray(h), jnp.asarray(c)), jnp.asarray(x))
    h_want, c_want = lstm_step(_np(params), x, h, c)
    np.testing.assert_allclose(c_got, c_want, rtol=1e-12)
    np.testing.assert_allclose(h_got, h_want, rtol=1e-12)
    cell = rnnjax.gru(3, 4, dtype=jnp.float64, bias_init=inits.normal(2.0), **fns)
    params = cell.init(jax.random.key(1))
    np.testing.assert_allclose(cell.step(params, jnp.asarray(h), jnp.asarray(x))[0], gru_step(_np(params), x, h), rtol=1e-12)
    # The defaults are sigmoid and tanh: the same numbers as before the options existed.
    lstm_step, _ = _gate_formulas(sig, np.tanh)
    cell = rnnjax.lstm(3, 4, dtype=jnp.float64)
    params = cell.init(jax.random.key(2))
    h_got, _ = cell.step(params, rnnjax.LSTMState(jnp.asarray(h), jnp.asarray(c)), jnp.asarray(x))[0]
    np.testing.assert_allclose(h_got, lstm_step(_np(params), x, h, c)[0], rtol=1e-12)


def test_torch_export_refuses_functions_pytorch_cannot_run():
    from rnnjax.interop import to_torch

    for cell in (rnnjax.lstm(3, 4, activation_fn=jax.nn.relu), rnnjax.gru(3, 4, gate_fn=jax.nn.hard_sigmoid)):
        params = cell.init(jax.random.key(0))
        with pytest.raises(ValueError, match=r"cell: .* uses gate_fn=.*activation_fn=.*PyTorch"):
            to_torch(params, cell=cell)
        with pytest.raises(ValueError, match=r"cell\[1\]: "):
            to_torch((params,), cell=(rnnjax.lstm(3, 4), cell))
    with pytest.raises(TypeError, match="cell: expected an rnnjax.Cell"):
        to_torch(params, cell="gru")
    pytest.importorskip("torch")
    cell = rnnjax.gru(3, 4, dtype=jnp.float64)  # default functions export as before
    params = cell.init(jax.random.key(0))
    module = to_torch(params, cell=cell)
    np.testing.assert_array_equal(module.weight_hh_l0.detach().numpy(), params.w_rec)


def test_register_cell_makes_a_user_cell_available_by_name():
    def leaky(input_size, hidden_size, *, init_gain, dtype):
        return rnnjax.elman(input_size, hidden_size, activation="linear",
                            rec_init=inits.orthogonal(0.5 * init_gain), dtype=dtype)

    try:
        rnnjax.register_cell("test-leaky", leaky)
        cell = rnnjax.make_cell("test-leaky", 2, 6, init_gain=1.5, dtype=jnp.float64)
        w = np.asarray(cell.init(jax.random.key(0)).w_rec)
        np.testing.assert_allclose(w @ w.T, 0.75**2 * np.eye(6), atol=1e-12)
        with pytest.raises(ValueError, match="name: cell 'test-leaky' is already registered; pass overwrite=True"):
            rnnjax.register_cell("test-leaky", leaky)
        rnnjax.register_cell("test-leaky", rnnjax.CELLS["gru"], overwrite=True)
        assert rnnjax.make_cell("test-leaky", 2, 6).name == "gru"
    finally:
        rnnjax.CELLS.pop("test-leaky", None)
    for bad, exc, pattern in [
        (42, TypeError, "name: expected a string"),
        ("", ValueError, "name: expected a non-empty string"),
        ("my cell", ValueError, "without whitespace or commas"),
        ("a,b", ValueError, "without whitespace or commas"),
    ]:
        with pytest.raises(exc, match=pattern):
            rnnjax.register_cell(bad, leaky)
    for factory, exc, pattern in [
        ("lstm", TypeError, "factory: expected a callable"),
        (lambda i, h: rnnjax.lstm(i, h), ValueError, r"factory\(1, 1, init_gain=1.0, dtype=None\) raised TypeError"),
        (lambda i, h, **kw: rnnjax.lstm(i, h).init, ValueError, "to return an rnnjax.Cell with input_size 1, got function"),
        (lambda i, h, **kw: rnnjax.lstm(2, h), ValueError, "got a Cell with input_size 2"),
    ]:
        with pytest.raises(exc, match=pattern):
            rnnjax.register_cell("test-bad", factory)
    assert "test-bad" not in rnnjax.CELLS and "test-leaky" not in rnnjax.CELLS
