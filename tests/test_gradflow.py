"""Tests of rnnjax.gradflow against independent truths: closed forms, Python loops, exact identities."""

import json

import chex
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np
import pytest

import rnnjax
from rnnjax import gradflow as gf
from rnnjax import initializers as inits

F64 = jnp.float64


def _linear_elman(hidden, gain, key=0, inputs=2):
    cell = rnnjax.elman(inputs, hidden, activation="linear", rec_init=inits.orthogonal(gain), dtype=F64)
    return cell, cell.init(jax.random.key(key))


def _xs(time, width, key=7, scale=1.0):
    return scale * jax.random.normal(jax.random.key(key), (time, width), F64)


def _python_jacobians(cell, params, xs, carry=None):
    """dc_{t+1}/dc_t by a Python loop of jax.jacobian on the raw step (no gradflow code)."""
    carry = cell.initial_carry() if carry is None else carry
    _, unravel = ravel_pytree(carry)

    @jax.jit
    def jac_and_next(flat, x):
        f = lambda v: ravel_pytree(cell.step(params, unravel(v), x)[0])[0]
        return jax.jacobian(f)(flat), f(flat)

    flat, jacs = ravel_pytree(carry)[0], []
    for x in xs:
        jac, flat = jac_and_next(flat, x)
        jacs.append(np.asarray(jac))
    return np.stack(jacs)


# --- the linear closed form --------------------------------------------------


@pytest.mark.parametrize("gain", [0.7, 1.0, 1.3])
def test_hidden_grad_norms_linear_closed_form(gain):
    hidden, time = 8, 25
    cell, params = _linear_elman(hidden, gain)
    xs = _xs(time, 2)
    target = jnp.linspace(-1.0, 1.0, hidden, dtype=F64)

    def loss_fn(ys):
        return jnp.sum((ys[-1] - target) ** 2) + jnp.sum(jnp.sin(ys[-1]))

    norms = gf.hidden_grad_norms(cell, params, xs, loss_fn)
    _, ys = rnnjax.unroll(cell, params, xs)
    dl_dy = jax.grad(lambda y: loss_fn(ys.at[-1].set(y)))(ys[-1])
    expected = gain ** (time - jnp.arange(time)) * jnp.linalg.norm(dl_dy)
    chex.assert_shape(norms, (time,))
    chex.assert_trees_all_close(norms, expected, rtol=1e-8, atol=0)


@pytest.mark.parametrize("gain", [0.5, 1.0, 1.5])
def test_lyapunov_linear_orthogonal_is_log_gain(gain):
    cell, params = _linear_elman(6, gain)
    exps = gf.lyapunov_spectrum(cell, params, _xs(40, 2))
    chex.assert_shape(exps, (6,))
    chex.assert_trees_all_close(exps, jnp.full((6,), np.log(gain)), atol=1e-10)


def test_decay_rate_and_horizon_linear():
    gain, time = 0.8, 30
    cell, params = _linear_elman(5, gain)
    norms = gf.hidden_grad_norms(cell, params, _xs(time, 2), lambda ys: jnp.sum(ys[-1]))
    chex.assert_trees_all_close(gf.decay_rate(norms), -np.log(gain), rtol=1e-10)
    # smallest k >= 1 with gain**k < 0.1
    k = int(np.ceil(np.log(0.1) / np.log(gain) + 1e-12))
    assert int(gf.memory_horizon(norms, 0.1)) == k
    assert int(gf.memory_horizon(jnp.ones(10), 0.1)) == 10  # never falls: "at least T"
    assert np.isnan(gf.decay_rate(jnp.array([0.0, jnp.inf, 1.0])))


def test_lyapunov_linear_nonnormal_matches_eigenvalue_moduli():
    # h' = W h + U x with a fixed non-normal W: exponents are log|eig(W)|.
    w = np.array([[0.9, 2.0, 0.0, 0.0], [0.0, 0.5, 1.0, 0.0], [0.0, 0.0, 1.2, 3.0], [0.0, 0.0, 0.0, 0.3]])
    cell = rnnjax.elman(1, 4, activation="linear", rec_init=lambda k, s, d: jnp.asarray(w, d), dtype=F64)
    params = cell.init(jax.random.key(0))
    exps = gf.lyapunov_spectrum(cell, params, _xs(600, 1), transient=100)
    expected = np.sort(np.log(np.abs(np.linalg.eigvals(w))))[::-1]
    chex.assert_trees_all_close(exps, expected, atol=1e-2)
    top2 = gf.lyapunov_spectrum(cell, params, _xs(600, 1), k=2, transient=100)
    chex.assert_trees_all_close(top2, expected[:2], atol=1e-2)


# --- exact identity and brute force -----------------------------------------


@pytest.mark.parametrize("name", ["elman-tanh", "lstm", "gru"])
def test_spectrum_sum_is_log_det_of_jacobian_product(name):
    time = 30
    cell = rnnjax.make_cell(name, 2, 3, init_gain=1.4, dtype=F64)
    params = cell.init(jax.random.key(3))
    xs = _xs(time, 2)
    exps = gf.lyapunov_spectrum(cell, params, xs)
    # det is multiplicative: log|det dc_T/dc_0| = sum_t log|det J_t| (stable, unlike det of the product).
    signs, logdets = np.linalg.slogdet(_python_jacobians(cell, params, xs))
    assert np.all(signs != 0)
    chex.assert_trees_all_close(jnp.sum(exps), np.sum(logdets) / time, rtol=1e-10)


def test_qr_exponents_match_bruteforce_svd_of_product():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 300  # singular values of the product span e^{-T * 2.1}: resolve all of them
    time, hidden = 200, 4
    cell = rnnjax.elman(
        1, hidden, activation="tanh", rec_init=inits.random_gain(1.5), bias_init=inits.normal(0.1), dtype=F64
    )
    params = cell.init(jax.random.key(1))
    xs = _xs(time, 1)
    exps = np.asarray(gf.lyapunov_spectrum(cell, params, xs))
    prod = mpmath.eye(hidden)
    for j in _python_jacobians(cell, params, xs):
        prod = mpmath.matrix(j.tolist()) * prod
    sv = mpmath.svd_r(prod, compute_uv=False)
    brute = np.sort([float(mpmath.log(s)) / time for s in sv])[::-1]
    assert brute[0] - brute[-1] > 1.0  # a well-spread spectrum, not a degenerate one
    chex.assert_trees_all_close(exps, brute, atol=1e-2)  # finite-T difference is O(1/T)


def test_lyapunov_k_and_transient_consistent():
    cell = rnnjax.make_cell("gru", 2, 5, dtype=F64)
    params = cell.init(jax.random.key(1))
    xs = _xs(60, 2)
    full = gf.lyapunov_spectrum(cell, params, xs, transient=10)
    top = gf.lyapunov_spectrum(cell, params, xs, k=5, transient=10)
    chex.assert_trees_all_close(full, top, atol=1e-12)  # k = n is the full spectrum
    assert np.all(np.diff(np.asarray(full)) <= 0)
    with pytest.raises(ValueError, match="k: expected an integer in \\[1, 5\\]"):
        gf.lyapunov_spectrum(cell, params, xs, k=6)
    with pytest.raises(ValueError, match="transient"):
        gf.lyapunov_spectrum(cell, params, xs, transient=60)


# --- pytree carries: brute-force per-step gradients ------------------------------


def test_hidden_grad_norms_lstm_matches_per_step_grad():
    time = 8
    cell = rnnjax.lstm(2, 3, dtype=F64)
    params = cell.init(jax.random.key(2))
    xs = _xs(time, 2)
    weights = jax.random.normal(jax.random.key(9), (time, 3), F64)

    def loss_fn(ys):
        return jnp.sum(weights * jnp.tanh(ys)) + jnp.sum(ys[-1] ** 2)

    norms = gf.hidden_grad_norms(cell, params, xs, loss_fn)

    # Truth: for each t, the loss as a function of the carry c_t, re-running steps t..T-1.
    carries, carry = [], cell.initial_carry()
    ys_prefix = []
    for x in xs:
        carries.append(carry)
        carry, y = cell.step(params, carry, x)
        ys_prefix.append(y)
    expected = []
    for t in range(time):

        def loss_from(c, t=t):
            ys = list(ys_prefix[:t])
            for x in xs[t:]:
                c, y = cell.step(params, c, x)
                ys.append(y)
            return loss_fn(jnp.stack(ys))

        g = jax.grad(loss_from)(carries[t])
        assert isinstance(g, rnnjax.LSTMState)
        expected.append(np.sqrt(np.sum(np.asarray(g.h) ** 2) + np.sum(np.asarray(g.c) ** 2)))
    chex.assert_trees_all_close(norms, np.array(expected), rtol=1e-10)


def test_step_jacobians_and_products_match_python_loop():
    cell = rnnjax.lstm(2, 3, dtype=F64)
    params = cell.init(jax.random.key(4))
    xs = _xs(7, 2)
    jacs = gf.step_jacobians(cell, params, xs)
    truth = _python_jacobians(cell, params, xs)
    chex.assert_shape(jacs, (7, 6, 6))
    chex.assert_trees_all_close(jacs, truth, atol=1e-12)
    chex.assert_trees_all_close(
        gf.jacobian_singular_values(jacs), np.linalg.svd(truth, compute_uv=False), atol=1e-12
    )
    to_end = [np.linalg.norm(np.linalg.multi_dot([*truth[t:][::-1], np.eye(6)]), 2) for t in range(7)]
    chex.assert_trees_all_close(gf.jacobian_product_norms(jacs), np.array(to_end), rtol=1e-10)
    spans = [np.linalg.norm(truth[t + 2] @ truth[t + 1] @ truth[t], 2) for t in range(5)]
    chex.assert_trees_all_close(gf.jacobian_product_norms(jacs, 3), np.array(spans), rtol=1e-10)
    chex.assert_trees_all_close(gf.jacobian_product_norms(jacs, 3, log=True), np.log(spans), rtol=1e-10)


def test_product_norms_stay_finite_in_log():
    jacs = jnp.tile(1e-30 * jnp.eye(2, dtype=F64), (40, 1, 1))  # product 1e-1200 underflows
    logs = gf.jacobian_product_norms(jacs, log=True)
    chex.assert_trees_all_close(logs, np.log(1e-30) * np.arange(40, 0, -1), rtol=1e-10)


# --- a complex-carry cell (LRU-like diagonal recurrence) ---------------------------


def _complex_diag_cell(lam):
    lam = jnp.asarray(lam, jnp.complex128)
    n = lam.shape[0]

    def init(key):
        return {"b": jax.random.normal(key, (n,), F64)}

    def initial_carry():
        return jnp.zeros((n,), jnp.complex128)

    def step(params, h, x):
        h = lam * h + params["b"] * x[0]
        return h, jnp.real(h)

    return rnnjax.Cell(init, initial_carry, step, 1, n, "diag-complex")


def test_complex_carry_exponents_and_norms():
    lam = np.array([0.9 * np.exp(0.3j), 0.5 * np.exp(-1.1j), 1.1])
    cell = _complex_diag_cell(lam)
    params = cell.init(jax.random.key(0))
    assert gf.carry_size(cell) == 6
    exps = gf.lyapunov_spectrum(cell, params, _xs(300, 1), transient=50)
    expected = np.sort(np.repeat(np.log(np.abs(lam)), 2))[::-1]
    chex.assert_trees_all_close(exps, expected, atol=1e-2)
    time = 12
    norms = gf.hidden_grad_norms(cell, params, _xs(time, 1), lambda ys: ys[-1][2])
    chex.assert_trees_all_close(norms, 1.1 ** (time - np.arange(time)), rtol=1e-10)
    vec, unflatten = gf.flatten_carry({"a": jnp.array([1 + 2j]), "b": jnp.array([3.0, 4.0])})
    chex.assert_trees_all_close(vec, jnp.array([1.0, 2.0, 3.0, 4.0]))
    chex.assert_trees_all_close(unflatten(vec)["a"], jnp.array([1 + 2j]))
    diag = gf.recurrent_diagnostics(cell, params)
    assert diag.blocks == () and np.isnan(diag.pascanu_bound)
    chex.assert_trees_all_close(diag.rest_spectral_radius, 1.1, rtol=1e-10)


# --- recurrent-matrix diagnostics -------------------------------------------------


def test_recurrent_diagnostics():
    cell = rnnjax.make_cell("elman-tanh", 2, 6, init_gain=1.3, dtype=F64)
    d = gf.recurrent_diagnostics(cell, cell.init(jax.random.key(0)))
    chex.assert_trees_all_close((d.spectral_radius, d.sigma_max, d.pascanu_bound), (1.3, 1.3, 1.3), rtol=1e-10)
    chex.assert_trees_all_close((d.rest_spectral_radius, d.rest_sigma_max), (1.3, 1.3), rtol=1e-10)  # b = 0

    w = np.diag([2.0, 0.5])
    cell = rnnjax.elman(1, 2, activation="relu", rec_init=lambda k, s, dt: jnp.asarray(w, dt), dtype=F64)
    d = gf.recurrent_diagnostics(cell, cell.init(jax.random.key(0)))
    assert d.blocks[0].gamma == rnnjax.ACTIVATIONS["relu"][2]
    chex.assert_trees_all_close(d.pascanu_bound, 2.0)

    cell = rnnjax.make_cell("lstm", 2, 4, init_gain=0.8, dtype=F64)
    d = gf.recurrent_diagnostics(cell, cell.init(jax.random.key(0)))
    assert [b.gate for b in d.blocks] == ["i", "f", "g", "o"]
    assert [b.gamma for b in d.blocks] == [0.25, 0.25, 1.0, 0.25]
    chex.assert_trees_all_close(d.pascanu_bound, 0.8, rtol=1e-10)  # the g block, gamma 1

    cell = rnnjax.make_cell("gru", 2, 4, dtype=F64)
    d = gf.recurrent_diagnostics(cell, cell.init(jax.random.key(0)))
    assert [b.gate for b in d.blocks] == ["r", "z", "n"]
    json.dumps(gf.summary_dict(d))

    custom = rnnjax.elman(1, 2, name="mine", dtype=F64)
    with pytest.raises(ValueError, match="activation"):
        gf.recurrent_diagnostics(custom, custom.init(jax.random.key(0)))
    assert gf.recurrent_diagnostics(custom, custom.init(jax.random.key(0)), activation="tanh").blocks[0].gamma == 1.0


def test_errors_name_the_argument():
    cell, params = _linear_elman(3, 1.0)
    with pytest.raises(ValueError, match="xs"):
        gf.hidden_grad_norms(cell, params, jnp.zeros((5, 3)), jnp.sum)
    with pytest.raises(ValueError, match="loss_fn"):
        gf.hidden_grad_norms(cell, params, jnp.zeros((5, 2)), lambda ys: ys[-1])
    with pytest.raises(ValueError, match="jacs"):
        gf.jacobian_singular_values(jnp.zeros((3, 2, 4)))
    with pytest.raises(ValueError, match="span"):
        gf.jacobian_product_norms(jnp.zeros((3, 2, 2)), 4)


def test_hidden_grad_norms_jits_once():
    cell = rnnjax.make_cell("gru", 2, 3)
    params = cell.init(jax.random.key(0))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(params, xs):
        return gf.hidden_grad_norms(cell, params, xs, lambda ys: jnp.sum(ys[-1]))

    a = f(params, jnp.ones((6, 2), jnp.float32))
    b = f(params, jnp.zeros((6, 2), jnp.float32))
    chex.assert_shape((a, b), (6,))
    chex.assert_tree_all_finite((a, b))


# --- command line -------------------------------------------------------------------


def test_cli_writes_json_and_figures(tmp_path):
    from rnnjax.cli import main

    out = tmp_path / "gf"
    code = main(
        ["gradflow", "--cells", "elman-linear,lstm", "--gains", "0.5,1.5", "--seq-len", "12", "--hidden", "4",
         "--seeds", "0,1", "--out", str(out)]
    )
    assert code == 0
    result = json.loads((out / "gradflow.json").read_text())
    assert set(result["results"]) == {"elman-linear", "lstm"}
    assert set(result["results"]["lstm"]) == {"0.5", "1.5"}
    lin = result["results"]["elman-linear"]
    for gain in (0.5, 1.5):
        r = lin[f"{gain:g}"]
        assert r["nonfinite_fraction"] == 0.0
        # orthogonal linear net: decay rate -log g, lambda_max log g, first/last ratio g^(T-1)
        np.testing.assert_allclose(r["decay_rate"], -np.log(gain), rtol=1e-6)
        np.testing.assert_allclose(r["lyapunov_max"], np.log(gain), rtol=1e-6)
        np.testing.assert_allclose(r["first_last_ratio"], gain**11, rtol=1e-6)
        assert len(r["log10_norm_profile"]) == 12
    for name in ("grad_norms.png", "lyapunov_vs_gain.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["gradflow", "--cells", "nope", "--out", str(out)]) == 2


# --- stacks and layers --------------------------------------------------------


def _np_params(cell, seed=0, scale=0.6):
    """Random parameters shaped like ``cell.init``, drawn by NumPy (no init program to compile)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype),
                        jax.eval_shape(cell.init, jax.random.key(0)))


def test_stacked_cell_norms_jacobians_and_diagnostics():
    layers = (rnnjax.lstm(2, 3, dtype=F64), rnnjax.make_cell("elman-tanh", 3, 2, dtype=F64))
    deep = rnnjax.stack(*layers)
    params, xs, w = _np_params(deep), _xs(5, 2), jnp.array([0.7, -1.3], F64)
    truth = _python_jacobians(deep, params, xs)  # (5, 10, 10): the whole stack's carry (3 + 3 + 2)
    chex.assert_trees_all_close(gf.step_jacobians(deep, params, xs), truth, atol=1e-12)
    # dL/dc_t for L = w . y_{T-1}: the last step's output gradient carried back by the step Jacobians.
    @jax.jit
    def last_grad(xs):  # dL/dc_{T-1}: a Python loop to the last step, then the gradient of its output
        carry = deep.initial_carry()
        for x in xs[:-1]:
            carry = deep.step(params, carry, x)[0]
        flat, unravel = ravel_pytree(carry)
        return jax.grad(lambda v: w @ deep.step(params, unravel(v), xs[-1])[1])(flat)

    g = [np.asarray(last_grad(xs))]
    for jac in truth[-2::-1]:  # g_t = J_t^T g_{t+1}
        g.append(jac.T @ g[-1])
    norms = gf.hidden_grad_norms(deep, params, xs, lambda ys: w @ ys[-1])
    chex.assert_trees_all_close(norms, np.linalg.norm(g[::-1], axis=1), rtol=1e-10)
    d = gf.recurrent_diagnostics(deep, params)
    assert [b.gate for b in d.blocks] == ["0.i", "0.f", "0.g", "0.o", "1.h"]
    blocks = [*np.split(np.asarray(params[0].w_rec), 4), np.asarray(params[1].w_rec)]
    chex.assert_trees_all_close([b.sigma_max for b in d.blocks], [np.linalg.norm(b, 2) for b in blocks], rtol=1e-10)
    assert [b.gamma for b in d.blocks] == [0.25, 0.25, 1.0, 0.25, 1.0]
    assert d.pascanu_bound == max(b.bound for b in d.blocks)


def test_bidirectional_hidden_grad_norms_per_direction_and_refusals():
    fw, bw = rnnjax.elman(2, 3, dtype=F64), rnnjax.gru(2, 2, dtype=F64)
    bi = rnnjax.bidirectional(fw, bw)
    params, xs = _np_params(bi), _xs(6, 2)
    weights = jax.random.normal(jax.random.key(3), (6, 5), F64)
    norms = gf.hidden_grad_norms(bi, params, xs, lambda ys: jnp.sum(weights * jnp.tanh(ys)))
    # Truth: each direction on its own, the backward one as a forward cell over the reversed sequence.
    want_f = gf.hidden_grad_norms(fw, params.forward, xs, lambda ys: jnp.sum(weights[:, :3] * jnp.tanh(ys)))
    want_b = gf.hidden_grad_norms(bw, params.backward, xs[::-1], lambda ys: jnp.sum(weights[::-1, 3:] * jnp.tanh(ys)))
    chex.assert_shape(norms, (2, 6))
    chex.assert_trees_all_close(norms, jnp.stack([want_f, want_b[::-1]]), rtol=1e-10)
    for fn in (gf.step_jacobians, gf.lyapunov_spectrum):
        with pytest.raises(TypeError, match="cell: .* pass one direction's cell"):
            fn(bi, params, xs)
    with pytest.raises(TypeError, match="cell: recurrent_diagnostics .* pass one direction's cell"):
        gf.recurrent_diagnostics(bi, params)
    with pytest.raises(ValueError, match=r"xs: expected floats of shape \(time, 2\)"):
        gf.hidden_grad_norms(bi, params, jnp.zeros((6, 3)), jnp.sum)
