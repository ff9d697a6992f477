"""LRU, minGRU, minLSTM against their formulas (NumPy, complex arithmetic), init statistics, registry."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import rnnjax

I, H, T = 3, 4, 7


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _inputs(seed=1):
    return np.asarray(jax.random.normal(jax.random.key(seed), (T, I), jnp.float64))


def test_lru_init_ring_and_gamma():
    r_min, r_max, max_phase = 0.4, 0.95, math.pi / 3
    cell = rnnjax.lru(2, 4000, r_min=r_min, r_max=r_max, max_phase=max_phase, dtype=jnp.float64)
    params = cell.init(jax.random.key(0))
    lam = np.asarray(rnnjax.lru_eigenvalues(params))
    mod, phase = np.abs(lam), np.angle(lam)
    assert mod.min() >= r_min and mod.max() <= r_max
    assert phase.min() >= 0.0 and phase.max() <= max_phase
    # |lambda|^2 is uniform on [r_min^2, r_max^2] (uniform in area on the ring): mean and variance.
    lo, hi = r_min**2, r_max**2
    np.testing.assert_allclose(np.mean(mod**2), (lo + hi) / 2, atol=0.02)
    np.testing.assert_allclose(np.var(mod**2), (hi - lo) ** 2 / 12, rtol=0.1)
    np.testing.assert_allclose(np.mean(phase), max_phase / 2, rtol=0.05)
    np.testing.assert_allclose(np.exp(np.asarray(params.gamma_log)), np.sqrt(1 - mod**2), rtol=1e-12)
    # B_re and B_im entries have variance 1/(2 I) each (here I = 2).
    np.testing.assert_allclose(np.var(np.asarray(params.b_re)), 1 / (2 * 2), rtol=0.1)


def test_lru_rejects_bad_ring():
    with pytest.raises(ValueError, match="r_min, r_max"):
        rnnjax.lru(2, 3, r_min=0.9, r_max=1.0)
    with pytest.raises(ValueError, match="max_phase"):
        rnnjax.lru(2, 3, max_phase=0.0)


def test_lru_step_matches_complex_formula():
    cell = rnnjax.lru(I, H, output_size=2, dtype=jnp.float64)
    params = cell.init(jax.random.key(3))
    chex.assert_shape(params.c_re, (2, H))
    p = jax.tree.map(np.asarray, params)
    lam = np.exp(-np.exp(p.nu_log) + 1j * np.exp(p.theta_log))
    b, c = p.b_re + 1j * p.b_im, p.c_re + 1j * p.c_im
    gamma = np.exp(p.gamma_log)
    xs = _inputs()
    x = 0.2 + 0.1j * np.arange(H)
    carry = jnp.asarray(x)
    for t in range(T):
        x = lam * x + gamma * (b @ xs[t])
        y = np.real(c @ x) + p.d @ xs[t]
        carry, y_jax = cell.step(params, carry, jnp.asarray(xs[t]))
        np.testing.assert_allclose(np.asarray(carry), x, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.asarray(y_jax), y, rtol=1e-12, atol=1e-12)
    assert cell.initial_carry().dtype == jnp.complex128
    assert rnnjax.lru(I, H, dtype=jnp.float32).initial_carry().dtype == jnp.complex64


def test_mingru_step_matches_formula():
    cell = rnnjax.mingru(I, H, gate_bias=-0.7, dtype=jnp.float64)
    params = cell.init(jax.random.key(4))
    np.testing.assert_array_equal(np.asarray(params.b_z), -0.7)
    p = jax.tree.map(np.asarray, params)
    xs = _inputs()
    h = np.linspace(-1, 1, H)
    carry = jnp.asarray(h)
    for t in range(T):
        z = _sigmoid(p.w_z @ xs[t] + p.b_z)
        h = (1 - z) * h + z * (p.w_h @ xs[t] + p.b_h)
        carry, y = cell.step(params, carry, jnp.asarray(xs[t]))
        np.testing.assert_allclose(np.asarray(carry), h, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(y), h, rtol=1e-12)


def test_minlstm_step_matches_formula():
    cell = rnnjax.minlstm(I, H, forget_bias=0.5, input_bias=-0.3, dtype=jnp.float64)
    params = cell.init(jax.random.key(5))
    p = jax.tree.map(np.asarray, params)
    xs = _inputs()
    h = np.linspace(-1, 1, H)
    carry = jnp.asarray(h)
    for t in range(T):
        f = _sigmoid(p.w_f @ xs[t] + p.b_f)
        i = _sigmoid(p.w_i @ xs[t] + p.b_i)
        h = f / (f + i) * h + i / (f + i) * (p.w_h @ xs[t] + p.b_h)
        carry, y = cell.step(params, carry, jnp.asarray(xs[t]))
        np.testing.assert_allclose(np.asarray(carry), h, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(y), h, rtol=1e-12)


@pytest.mark.parametrize("name", ["lru", "mingru", "minlstm"])
def test_linear_recurrence_agrees_with_step(name):
    cell = rnnjax.make_cell(name, I, H, dtype=jnp.float64)
    params = cell.init(jax.random.key(6))
    xs = jnp.asarray(_inputs())
    a, b, readout = cell.linear_recurrence(params, xs)
    chex.assert_shape([a, b], (T, H))
    h = cell.initial_carry() + 0.3
    hs, ys = [], []
    for t in range(T):
        h_lin = a[t] * h + b[t]
        h, y = cell.step(params, h, xs[t])
        np.testing.assert_allclose(np.asarray(h_lin), np.asarray(h), rtol=1e-12, atol=1e-14)
        hs.append(h)
        ys.append(y)
    np.testing.assert_allclose(np.asarray(readout(params, jnp.stack(hs), xs)), np.asarray(jnp.stack(ys)), atol=1e-13)


def test_registry_init_gain_meaning():
    g = 3.0
    p = rnnjax.make_cell("mingru", I, H, init_gain=g).init(jax.random.key(0))
    np.testing.assert_allclose(1 - _sigmoid(np.asarray(p.b_z, np.float64)), g / (1 + g), rtol=1e-6)
    p = rnnjax.make_cell("minlstm", I, H, init_gain=g).init(jax.random.key(0))
    np.testing.assert_allclose(np.asarray(p.b_f), math.log(g), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(p.b_i), -math.log(g), rtol=1e-6)
    for gain, (lo, hi) in ((1.0, (0.9, 0.999)), (0.5, (0.45, 0.4995)), (5.0, (0.99, 0.9999))):
        cell = rnnjax.make_cell("lru", I, 500, init_gain=gain, dtype=jnp.float64)
        mod = np.abs(np.asarray(rnnjax.lru_eigenvalues(cell.init(jax.random.key(1)))))
        assert lo - 1e-12 <= mod.min() and mod.max() <= hi + 1e-12, (gain, mod.min(), mod.max())


def test_lru_gradients_finite_differences_and_optax():
    cell = rnnjax.lru(I, H, dtype=jnp.float64)
    params = cell.init(jax.random.key(7))
    xs = jnp.asarray(_inputs())

    @jax.jit
    def loss(params):
        _, ys = rnnjax.unroll(cell, params, xs)
        return jnp.sum(ys**2)

    check_grads(loss, (params,), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)
    opt = optax.adam(1e-2)
    state = opt.init(params)
    grads = jax.grad(loss)(params)
    updates, state = opt.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    chex.assert_trees_all_equal_dtypes(new, params)
    chex.assert_tree_all_finite(new)
    assert loss(new) < loss(params)


def test_gradflow_on_lru_complex_carry_closed_form():
    # Loss on the last output only: ||dL/dc_t|| = sqrt(sum_i |lambda_i|^(2(T-t)) |(C^T w)_i|^2).
    cell = rnnjax.lru(I, 3, r_min=0.3, r_max=0.95, max_phase=2.0, dtype=jnp.float64)
    params = cell.init(jax.random.key(8))
    time = 40
    xs = jax.random.normal(jax.random.key(9), (time, I), jnp.float64)
    w = jnp.array([0.5, -1.0, 2.0])
    norms = rnnjax.gradflow.hidden_grad_norms(cell, params, xs, lambda ys: jnp.sum(w * ys[-1]))
    mod = np.abs(np.asarray(rnnjax.lru_eigenvalues(params)))
    g = np.abs(np.asarray(w) @ (np.asarray(params.c_re) + 1j * np.asarray(params.c_im)))
    t = np.arange(time)[:, None]
    np.testing.assert_allclose(norms, np.sqrt(np.sum(mod ** (2 * (time - t)) * g**2, axis=1)), rtol=1e-10)
    # Lyapunov exponents of x' = lambda x + ...: log|lambda_i|, each twice (real and imaginary direction).
    exps = rnnjax.gradflow.lyapunov_spectrum(cell, params, jnp.zeros((400, I)), transient=100)
    expected = np.sort(np.repeat(np.log(mod), 2))[::-1]
    np.testing.assert_allclose(np.sum(exps), np.sum(expected), rtol=1e-8)
    np.testing.assert_allclose(exps, expected, atol=0.02)


def test_gradflow_on_mingru_closed_form():
    # dL/dh_t = w * prod_{s >= t} a_s with a_s = 1 - z_s; the exponents sum to mean_t sum_i log a_t,i.
    cell = rnnjax.mingru(I, H, dtype=jnp.float64)
    params = cell.init(jax.random.key(10))
    time = 30
    xs = jax.random.normal(jax.random.key(11), (time, I), jnp.float64)
    w = jnp.arange(1.0, H + 1)
    norms = rnnjax.gradflow.hidden_grad_norms(cell, params, xs, lambda ys: jnp.sum(w * ys[-1]))
    a = np.asarray(cell.linear_recurrence(params, xs)[0])
    tail = np.cumprod(a[::-1], axis=0)[::-1]  # tail[t] = prod_{s >= t} a_s
    np.testing.assert_allclose(norms, np.linalg.norm(np.asarray(w) * tail, axis=1), rtol=1e-10)
    exps = rnnjax.gradflow.lyapunov_spectrum(cell, params, xs)
    np.testing.assert_allclose(np.sum(exps), np.sum(np.log(a)) / time, rtol=1e-8)
