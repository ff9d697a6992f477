"""Long-memory cells (rnnjax._longmemory) and the cell parametrization contract (rnnjax.Parametrization)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg
from jax.test_util import check_grads

import rnnjax
from rnnjax import gradflow
from rnnjax.train import RunConfig, build

I, H, T = 3, 6, 9


def _xs(seed=1, time=T, width=I):
    return jax.random.normal(jax.random.key(seed), (time, width))


def _perturbed(params, seed=7, scale=0.3):
    """Params moved off their initialisation (non-zero biases, generic a), as after training."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [p + scale * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)])


CELLS = {
    "exprnn": lambda: rnnjax.exprnn(I, H),
    "exprnn-cayley": lambda: rnnjax.exprnn(I, H, init="cayley"),
    "cornn": lambda: rnnjax.cornn(I, H, dt=0.1, gamma=2.0, epsilon=3.0),
    "indrnn": lambda: rnnjax.indrnn(I, H, t_max=10, max_gain=3.0),
    "antisymmetric": lambda: rnnjax.antisymmetric(I, H, eps=0.1, gamma=0.05),
}


# ------------------------------------------------------------------ NumPy references (the papers' equations)


def _reference(name, p, xs):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    xs = np.asarray(xs, np.float64)
    ys = []
    if name.startswith("exprnn"):
        w = scipy.linalg.expm(p.a - p.a.T)
        h = np.zeros(H)
        for x in xs:
            z = p.w_in @ x + w @ h
            h = np.sign(z) * np.maximum(np.abs(z) + p.b, 0.0)
            ys.append(h)
        return h, np.stack(ys)
    if name == "cornn":
        dt, gamma, eps = 0.1, 2.0, 3.0
        y, z = np.zeros(H), np.zeros(H)
        for x in xs:
            z = z + dt * (np.tanh(p.w_y @ y + p.w_z @ z + p.w_in @ x + p.b) - gamma * y - eps * z)
            y = y + dt * z
            ys.append(y)
        return (y, z), np.stack(ys)
    if name == "indrnn":
        bound = 3.0 ** (1 / 10)
        u = np.clip(p.u, -bound, bound)
        h = np.zeros(H)
        for x in xs:
            h = np.maximum(p.w_in @ x + u * h + p.b, 0.0)
            ys.append(h)
        return h, np.stack(ys)
    eps, gamma = 0.1, 0.05
    m = p.w - p.w.T - gamma * np.eye(H)
    h = np.zeros(H)
    for x in xs:
        h = h + eps * np.tanh(m @ h + p.w_in @ x + p.b)
        ys.append(h)
    return h, np.stack(ys)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_step_matches_the_papers_equation(name):
    cell = CELLS[name]()
    params = _perturbed(cell.init(jax.random.key(0)))
    if name == "indrnn":  # some entries beyond the bound: the step reads them clipped
        params = params._replace(u=params.u.at[:2].set(jnp.array([1.5, -2.0])))
    xs = _xs()
    final_ref, ys_ref = _reference(name, params, xs)
    final, ys = jax.jit(lambda p: rnnjax.unroll(cell, p, xs))(params)
    np.testing.assert_allclose(ys, ys_ref, rtol=1e-12, atol=1e-12)
    chex.assert_trees_all_close(final, jax.tree.map(jnp.asarray, final_ref) if name != "cornn" else
                                rnnjax.CoRNNState(*final_ref), rtol=1e-12, atol=1e-12)
    # The raw step (prepare inside it) agrees with the prepared one.
    chex.assert_trees_all_close(cell.step(params, cell.initial_carry(), xs[0])[1], ys_ref[0], rtol=1e-12, atol=1e-12)


def test_params_layouts():
    chex.assert_shape(rnnjax.exprnn(I, H).init(jax.random.key(0)), [(H, I), (H, H), (H,)])
    assert rnnjax.ExpRNNParams._fields == ("w_in", "a", "b")
    assert rnnjax.CoRNNParams._fields == ("w_in", "w_y", "w_z", "b")
    assert rnnjax.CoRNNState._fields == ("y", "z")
    assert rnnjax.IndRNNParams._fields == ("w_in", "u", "b")
    assert rnnjax.AntisymmetricParams._fields == ("w_in", "w", "b")
    chex.assert_shape(rnnjax.cornn(I, H).init(jax.random.key(0)), [(H, I), (H, H), (H, H), (H,)])
    chex.assert_shape(rnnjax.indrnn(I, H).init(jax.random.key(0)), [(H, I), (H,), (H,)])
    chex.assert_shape(rnnjax.antisymmetric(I, H).init(jax.random.key(0)), [(H, I), (H, H), (H,)])


def test_initialisations_follow_the_reference_code():
    n = 7  # odd: the last coordinate is left alone
    for init, lo, hi in (("henaff", -np.pi, np.pi), ("cayley", -1.0, 0.0)):
        p = rnnjax.exprnn(2, n, init=init).init(jax.random.key(3))
        a = np.asarray(p.a)
        assert np.all(np.tril(a) == 0)  # strictly upper: a - a.T is the skew matrix
        t = a[np.arange(0, n - 1, 2), np.arange(1, n, 2)]
        assert np.count_nonzero(a) == n // 2 and np.all((t >= lo) & (t <= hi))
        assert np.all(np.abs(np.asarray(p.b)) <= 0.01)
    p = rnnjax.indrnn(2, 500, t_max=100, max_gain=2.0).init(jax.random.key(0))
    assert 0 <= float(p.u.min()) and float(p.u.max()) <= 2 ** (1 / 100)
    assert np.all(np.asarray(p.b) == 0)
    with pytest.raises(ValueError, match="init"):
        rnnjax.exprnn(2, 4, init="haar")
    with pytest.raises(ValueError, match="dt"):
        rnnjax.cornn(2, 4, dt=0.0)
    with pytest.raises(ValueError, match="t_max"):
        rnnjax.indrnn(2, 4, t_max=-1)
    with pytest.raises(ValueError, match="gamma"):
        rnnjax.antisymmetric(2, 4, gamma=-1.0)
    with pytest.raises(ValueError, match="hidden_size"):
        rnnjax.exprnn(2, 0)


def _loss(cell, xs, **options):
    def loss(params):
        _, ys = rnnjax.unroll(cell, params, xs, **options)
        return jnp.sum(jnp.sin(ys) * jnp.arange(1, ys.shape[0] + 1)[:, None])

    return loss


@pytest.mark.parametrize("name", ["exprnn", "cornn", "indrnn", "antisymmetric"])
def test_fast_backward_equals_autodiff_and_check_grads(name):
    cell = CELLS[name]()
    params = _perturbed(cell.init(jax.random.key(0)), scale=0.1)
    xs = _xs()
    fast, plain = jax.jit(lambda p: (jax.grad(_loss(cell, xs))(p), jax.grad(_loss(cell, xs, backward="autodiff"))(p)))(
        params)
    chex.assert_trees_all_close(fast, plain, rtol=1e-10, atol=1e-10)
    check_grads(jax.jit(_loss(cell, xs[:5])), (params,), order=1, modes=("rev",))


# --------------------------------------------------------------- the matrix is computed once per unroll


def _count_expm(jaxpr, in_scan=False):
    """(expm calls, expm calls inside a scan body) in a jaxpr, nested calls included (not inside expm itself)."""
    total = inside = 0
    for eqn in jaxpr.eqns:
        if eqn.params.get("name") == "expm":
            total += 1
            inside += in_scan
            continue
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    t, i = _count_expm(sub, in_scan or eqn.primitive.name in ("scan", "while"))
                    total, inside = total + t, inside + i
    return total, inside


@pytest.mark.parametrize("options", [{}, {"backward": "autodiff"}, {"remat": True}, {"remat": 3},
                                     {"length": 5, "reverse": True}, {"method": "deer"}])
def test_expm_once_per_unroll_and_never_in_the_scan(options):
    cell = rnnjax.exprnn(I, 4)
    params = cell.init(jax.random.key(0))
    xs = _xs()
    fwd = jax.make_jaxpr(lambda p: rnnjax.unroll(cell, p, xs, **options))(params)
    assert _count_expm(fwd.jaxpr) == (1, 0)
    grad = jax.make_jaxpr(jax.grad(_loss(cell, xs, **options)))(params)
    total, inside = _count_expm(grad.jaxpr)
    assert total >= 1 and inside == 0
    if options.get("method") != "deer":  # a traced length too
        rest = {k: v for k, v in options.items() if k != "length"}
        traced = jax.make_jaxpr(lambda p, n: rnnjax.unroll(cell, p, xs, length=n, **rest))(params, 4)
        assert _count_expm(traced.jaxpr) == (1, 0)


def test_stacked_and_bidirectional_exprnn_compute_each_matrix_once():
    a, b = rnnjax.exprnn(I, 4), rnnjax.exprnn(4, 5, init="cayley")
    deep = rnnjax.stack(a, b)
    params = deep.init(jax.random.key(0))
    xs = _xs()
    assert deep.parametrization is not None
    jaxpr = jax.make_jaxpr(lambda p: rnnjax.unroll(deep, p, xs))(params)
    assert _count_expm(jaxpr.jaxpr) == (2, 0)

    ys = jax.jit(lambda p: rnnjax.unroll(deep, p, xs)[1])(params)
    h, ys_ref = deep.initial_carry(), []  # the raw step, by hand
    for x in xs:
        h, y = deep.step(params, h, x)
        ys_ref.append(y)
    np.testing.assert_allclose(ys, np.stack(ys_ref), rtol=1e-12, atol=1e-12)
    # A stack mixing a plain cell: that layer's params pass through unchanged.
    mixed = rnnjax.stack(rnnjax.elman(I, 4), rnnjax.exprnn(4, 4))
    pm = mixed.init(jax.random.key(1))
    assert _count_expm(jax.make_jaxpr(lambda p: rnnjax.unroll(mixed, p, xs))(pm).jaxpr) == (1, 0)

    bi = rnnjax.bidirectional(a)
    pb = bi.init(jax.random.key(2))
    assert _count_expm(jax.make_jaxpr(lambda p: bi.apply(p, xs, length=6))(pb).jaxpr) == (2, 0)  # one per direction
    seq = rnnjax.sequential(bi, rnnjax.exprnn(8, 3))
    ps = seq.init(jax.random.key(3))
    assert _count_expm(jax.make_jaxpr(lambda p: seq.apply(p, xs))(ps).jaxpr) == (3, 0)


def test_gradflow_prepares_outside_its_scans():
    cell = rnnjax.exprnn(I, 4)
    params = _perturbed(cell.init(jax.random.key(0)), scale=0.1)
    xs = _xs()
    for fn in (lambda p: gradflow._step_jacobians(cell, p, xs, cell.initial_carry()),
               lambda p: gradflow._lyapunov_spectrum(cell, 2, 0, p, xs, cell.initial_carry(), jax.random.key(0)),
               lambda p: gradflow._hidden_grad_norms_impl(cell, jnp.sum, p, xs, cell.initial_carry())):
        assert _count_expm(jax.make_jaxpr(fn)(params).jaxpr) == (1, 0)
    # Same numbers as the raw step: the Jacobian of h' = modrelu(W_in x + W h, b) is diag(1[|z| + b > 0]) W.
    jacs = gradflow.step_jacobians(cell, params, xs)
    w = scipy.linalg.expm(np.asarray(params.a - params.a.T))
    _, ys = rnnjax.unroll(cell, params, xs)
    hs = np.concatenate([np.zeros((1, 4)), np.asarray(ys)[:-1]])
    for t in range(T):
        z = np.asarray(params.w_in) @ np.asarray(xs[t]) + w @ hs[t]
        np.testing.assert_allclose(jacs[t], (np.abs(z) + np.asarray(params.b) > 0)[:, None] * w, atol=1e-12)


# ------------------------------------------------------------------ constraints hold after any update


def test_exprnn_is_orthogonal_for_any_parameters():
    cell = rnnjax.exprnn(I, 8)
    params = cell.init(jax.random.key(0))
    params = params._replace(a=3.0 * jax.random.normal(jax.random.key(1), (8, 8)))  # any update lands somewhere
    w = gradflow._prepared_weights(cell, params).w_rec  # rnnjax.prepare, jitted (shared with the diagnostics)
    np.testing.assert_allclose(w.T @ w, np.eye(8), atol=1e-12)
    np.testing.assert_allclose(w, scipy.linalg.expm(np.asarray(params.a - params.a.T)), atol=1e-12)
    diag = gradflow.recurrent_diagnostics(cell, params)
    np.testing.assert_allclose([diag.sigma_max, diag.spectral_radius, diag.pascanu_bound], 1.0, atol=1e-12)


def test_exprnn_stays_orthogonal_after_large_adam_steps_in_float32():
    cell = rnnjax.exprnn(I, 8, dtype=jnp.float32)
    params = cell.init(jax.random.key(0))
    xs = _xs().astype(jnp.float32)
    opt = optax.adam(0.5)
    loss = _loss(cell, xs)

    @jax.jit
    def train(params):
        def update(carry, _):
            params, state = carry
            updates, state = opt.update(jax.grad(loss)(params), state)
            return (optax.apply_updates(params, updates), state), None

        return jax.lax.scan(update, (params, opt.init(params)), None, length=5)[0][0]

    params = train(params)
    w = rnnjax.prepare(cell, params)[1].w_rec
    assert float(jnp.max(jnp.abs(params.a - cell.init(jax.random.key(0)).a))) > 1.0  # it did move
    np.testing.assert_allclose(np.asarray(w.T @ w, np.float64), np.eye(8), atol=1e-6)
    diag = gradflow.recurrent_diagnostics(cell, params)
    assert [b.gate for b in diag.blocks] == ["h"]
    np.testing.assert_allclose([diag.sigma_max, diag.spectral_radius], [1.0, 1.0], atol=1e-5)


def test_indrnn_bound_holds_after_updates():
    cell = rnnjax.indrnn(I, H, t_max=20, max_gain=2.0)
    bound = 2.0 ** (1 / 20)
    params = cell.init(jax.random.key(0))
    params = params._replace(u=params.u + jnp.linspace(-3.0, 3.0, H))  # as after a large update
    weights = rnnjax.prepare(cell, params)[1]
    assert float(jnp.max(jnp.abs(weights.u))) <= bound
    grads = jax.jit(jax.grad(_loss(cell, _xs())))(params)
    outside = np.abs(np.asarray(params.u)) > bound
    assert np.all(np.asarray(grads.u)[outside] == 0)
    diag = gradflow.recurrent_diagnostics(cell, params)
    assert diag.sigma_max <= bound + 1e-15 and diag.blocks[0].gate == "h"


def test_recurrent_diagnostics_of_the_other_cells():
    c = rnnjax.cornn(I, H)
    p = c.init(jax.random.key(0))
    d = gradflow.recurrent_diagnostics(c, p)
    assert [b.gate for b in d.blocks] == ["y", "z"]
    np.testing.assert_allclose(d.blocks[0].sigma_max, np.linalg.norm(np.asarray(p.w_y), 2))
    a = rnnjax.antisymmetric(I, H, gamma=0.2)
    p = a.init(jax.random.key(0))
    d = gradflow.recurrent_diagnostics(a, p)
    m = np.asarray(p.w - p.w.T) - 0.2 * np.eye(H)
    np.testing.assert_allclose(d.spectral_radius, np.max(np.abs(np.linalg.eigvals(m))), rtol=1e-10)
    np.testing.assert_allclose(np.real(np.linalg.eigvals(m)), -0.2, atol=1e-12)  # what the paper is about
    s = rnnjax.stack(rnnjax.exprnn(I, 4), rnnjax.indrnn(4, 4))
    d = gradflow.recurrent_diagnostics(s, s.init(jax.random.key(0)))
    assert [b.gate for b in d.blocks] == ["0.h", "1.h"]
    np.testing.assert_allclose(d.blocks[0].sigma_max, 1.0, atol=1e-12)


# ---------------------------------------------------------------------------------- registry and training


@pytest.mark.parametrize("name", ["exprnn", "cornn", "indrnn", "antisymmetric"])
def test_registry_names_build_and_train(name):
    cell = rnnjax.make_cell(name, 2, 3, init_gain=0.5, dtype=jnp.float32)
    assert cell.input_size == 2 and cell.output_size == 3
    tr = build(RunConfig(task="adding", cell=name, hidden=4, seq_len=6, batch_size=4, steps=3, lr=1e-2))
    state = tr.init(jax.random.key(0))
    state, metrics = jax.jit(lambda s: tr.run(s, 3))(state)
    assert np.all(np.isfinite(np.asarray(metrics["loss"])))
    assert int(state.step) == 3


# ------------------------------------------------------------------------------ a user's parametrised cell


def _user_cell(counter):
    base = rnnjax.elman(I, 4)

    def prepare(p):
        counter.append(1)  # counts traces: once per unroll
        q, _ = jnp.linalg.qr(p.w_rec)
        return p._replace(w_rec=q)

    def step(w, h, x):
        h = jnp.tanh(w.w_in @ x + w.w_rec @ h + w.b)
        return h, h

    return rnnjax.parametrized_cell(base.init, base.initial_carry, prepare, step, I, 4, "qr-elman")


@pytest.mark.parametrize("options", [{}, {"remat": True}, {"remat": 4}, {"length": 6}, {"reverse": True},
                                     {"length": 5, "reverse": True}, {"method": "deer"}])
def test_user_parametrised_cell_with_unroll_options(options):
    calls = []
    cell = _user_cell(calls)
    params = _perturbed(cell.init(jax.random.key(0)), scale=0.1)
    xs = _xs()
    assert cell.parametrization is not None
    step_cell, weights = rnnjax.prepare(cell, params)
    assert step_cell.parametrization is None and step_cell is rnnjax.prepare(cell, params)[0]
    chex.assert_trees_all_close(step_cell.step(weights, cell.initial_carry(), xs[0]),
                                cell.step(params, cell.initial_carry(), xs[0]), rtol=1e-14)
    # The reference: plain autodiff of the raw step (prepare inside every step), by hand.
    n = options.get("length", T)
    order = range(n - 1, -1, -1) if options.get("reverse") else range(n)

    def manual(p):
        h, ys = cell.initial_carry(), jnp.zeros((T, 4))
        for t in order:
            h, y = cell.step(p, h, xs[t])
            ys = ys.at[t].set(y)
        return h, ys

    h_ref, ys_ref = manual(params)
    calls.clear()
    h, ys = rnnjax.unroll(cell, params, xs, **options)
    assert len(calls) == 1
    np.testing.assert_allclose(ys, ys_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(h, h_ref, rtol=1e-10, atol=1e-10)
    if options.get("method") == "deer":
        return  # its implicit-function backward sees prepared weights like any other; compiling it is slow
    weights_of = lambda ys: jnp.sum(jnp.sin(ys) * jnp.arange(1, T + 1)[:, None])
    g = jax.grad(lambda p: weights_of(rnnjax.unroll(cell, p, xs, **options)[1]))(params)
    g_ref = jax.grad(lambda p: weights_of(manual(p)[1]))(params)
    chex.assert_trees_all_close(g, g_ref, rtol=1e-9, atol=1e-10)
    if "length" in options and "method" not in options:  # a traced length
        calls.clear()
        ys_traced = jax.jit(lambda p, k: rnnjax.unroll(cell, p, xs, length=k, reverse=options.get("reverse", False))[1])(
            params, jnp.int32(n))
        assert len(calls) == 1
        np.testing.assert_allclose(ys_traced, ys_ref, rtol=1e-10, atol=1e-10)


def test_user_cell_in_gradflow_and_layers():
    calls = []
    cell = _user_cell(calls)
    params = cell.init(jax.random.key(0))
    xs = _xs()
    calls.clear()
    jacs = gradflow.step_jacobians(cell, params, xs)
    assert len(calls) == 1
    plain = rnnjax.Cell(cell.init, cell.initial_carry, cell.step, I, 4, "raw")  # no parametrization
    np.testing.assert_allclose(jacs, gradflow.step_jacobians(plain, params, xs), rtol=1e-12, atol=1e-14)
    calls.clear()
    norms = gradflow.hidden_grad_norms(rnnjax.bidirectional(cell), rnnjax.bidirectional(cell).init(jax.random.key(1)),
                                       xs, jnp.sum)
    assert len(calls) == 2 and norms.shape == (2, T)
    base = rnnjax.elman(I, 4)
    assert rnnjax.prepare(base, params)[0] is base and rnnjax.prepare(base, params)[1] is params
