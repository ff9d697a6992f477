"""The fast reverse mode of ``unroll`` (``backward="fast"``) against plain autodiff (``backward="autodiff"``).

Plain ``jax.grad`` of ``jax.lax.scan`` is the reference; the fast path must give
the same values and gradients (float64, tight tolerance) for every built-in
cell, a user's own cell, and the ``length`` / ``reverse`` / ``vmap`` variants.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import _fastgrad

F64 = jnp.float64
TOL = dict(atol=1e-10, rtol=1e-10)
I, H, T, B = 3, 4, 6, 2


def _xs(key, batch=B, time=T, size=I):
    return jax.random.normal(key, (batch, time, size), F64)


def _loss_fn(cell, backward, **kwargs):
    """A loss touching every output and the final carry, through ``jax.vmap(rnnjax.unroll)``."""

    def loss(params, xs):
        carry, ys = jax.vmap(lambda x: rnnjax.unroll(cell, params, x, backward=backward, **kwargs))(xs)
        weights = jnp.linspace(0.5, 1.5, ys.shape[1])[None, :, None]
        return jnp.sum(jnp.real(ys) ** 2 * weights) + sum(jnp.sum(jnp.abs(c)) for c in jax.tree.leaves(carry))

    return loss


def _check_same(cell, params, xs, variants=({},)):
    """Values and gradients (params and inputs) of both backwards for each ``unroll`` keyword set, in one jit."""

    @jax.jit
    def both(params, xs):
        return [
            [jax.value_and_grad(_loss_fn(cell, b, **kw), argnums=(0, 1))(params, xs) for kw in variants]
            for b in ("fast", "autodiff")
        ]

    fast, ref = both(params, xs)
    chex.assert_trees_all_close(fast, ref, **TOL)
    return ref[0]


BUILTIN = ["elman-tanh", "elman-relu", "elman-linear", "irnn", "lstm", "gru"]


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_cells_match_autodiff(name):
    cell = rnnjax.make_cell(name, I, H, dtype=F64)
    params = cell.init(jax.random.key(0))
    (value, (g_params, g_xs)) = _check_same(cell, params, _xs(jax.random.key(1)))
    # The comparison is not vacuous: the gradients are nonzero.
    assert float(jnp.abs(g_xs).max()) > 0
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(g_params))


@pytest.mark.parametrize(
    "make",
    [
        lambda: rnnjax.lstm(I, H, recurrent_bias=True, dtype=F64),
        lambda: rnnjax.lstm(I, H, proj_size=2, dtype=F64),
        lambda: rnnjax.stack(rnnjax.gru(I, H, dtype=F64), rnnjax.elman(H, 3, dtype=F64)),
        # Flax-style gate and activation functions: a pjit'd one, a custom_jvp one (relu), a user lambda.
        lambda: rnnjax.lstm(I, H, gate_fn=jax.nn.hard_sigmoid, activation_fn=jax.nn.soft_sign, dtype=F64),
        lambda: rnnjax.gru(I, H, gate_fn=lambda a: 0.5 * (jnp.tanh(a) + 1), activation_fn=jax.nn.relu, dtype=F64),
    ],
    ids=["lstm-two-biases", "lstm-projection", "stack-gru-elman", "lstm-activations", "gru-activations"],
)
def test_variants_match_autodiff(make):
    cell = make()
    _check_same(cell, cell.init(jax.random.key(2)), _xs(jax.random.key(3)))


@pytest.mark.parametrize("name", ["lru", "mingru", "minlstm"])
def test_modern_cells_match_autodiff(name):
    if name not in rnnjax.CELLS:
        pytest.skip(f"{name} not registered")
    cell = rnnjax.make_cell(name, I, H, dtype=F64)
    _check_same(cell, cell.init(jax.random.key(4)), _xs(jax.random.key(5)))


class _GatedParams(NamedTuple):
    u: jax.Array  # (H, I)
    v: jax.Array  # (I, H), used as x @ v (parameter on the right)
    w: jax.Array  # (H, H)
    scale: jax.Array  # (H,), used elementwise and in a matmul


def _user_cell():
    """A user's own cell: matmuls on either side, a parameter reused pointwise, a tuple carry, a 2-output readout."""

    def init(key):
        k = jax.random.split(key, 4)
        return _GatedParams(
            u=0.5 * jax.random.normal(k[0], (H, I), F64),
            v=0.5 * jax.random.normal(k[1], (I, H), F64),
            w=0.4 * jax.random.normal(k[2], (H, H), F64),
            scale=1.0 + 0.1 * jax.random.normal(k[3], (H,), F64),
        )

    def initial_carry():
        return (jnp.zeros((H,), F64), jnp.ones((H,), F64))

    def step(params, carry, x):
        h, m = carry
        gate = jax.nn.sigmoid(x @ params.v + params.scale * m)
        cand = jnp.sin(params.u @ x) + jnp.tanh(params.w @ (h * params.scale))
        h_new = gate * h + (1 - gate) * cand
        m_new = 0.9 * m + 0.1 * h_new**2
        return (h_new, m_new), jnp.stack([h_new.sum(), (m_new * params.scale).sum()])

    return rnnjax.Cell(init, initial_carry, step, I, 2, name="user")


def test_user_cell_matches_autodiff():
    cell = _user_cell()
    params = cell.init(jax.random.key(6))
    xs = _xs(jax.random.key(7))
    _check_same(cell, params, xs, variants=({}, dict(reverse=True)))


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_length_reverse_and_carry(name):
    cell = rnnjax.make_cell(name, I, H, dtype=F64)
    params = cell.init(jax.random.key(8))
    xs = _xs(jax.random.key(9))
    variants = (dict(reverse=True), dict(length=4), dict(length=4, reverse=True), dict(length=0))
    _check_same(cell, params, xs, variants)
    # Traced per-sequence lengths through unroll_batch (the masked scan).
    lengths = jnp.array([T, 2])

    @jax.jit
    def both(params, xs):
        def loss(backward, reverse):
            def f(params, xs):
                _, ys = rnnjax.unroll_batch(cell, params, xs, lengths=lengths, backward=backward, reverse=reverse)
                return jnp.sum(ys**3)

            return jax.value_and_grad(f, argnums=(0, 1))(params, xs)

        return [[loss(b, r) for r in (False, True)] for b in ("fast", "autodiff")]

    fast, ref = both(params, xs)
    chex.assert_trees_all_close(fast, ref, **TOL)


def test_initial_carry_gradient():
    cell = rnnjax.lstm(I, H, dtype=F64)
    params = cell.init(jax.random.key(10))
    x = _xs(jax.random.key(11))[0]
    c0 = rnnjax.LSTMState(jnp.full((H,), 0.3, F64), jnp.full((H,), -0.2, F64))

    def f(backward):
        def loss(params, c0):
            c, ys = rnnjax.unroll(cell, params, x, c0, backward=backward)
            return jnp.sum(ys**2) + jnp.sum(c.c)

        return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, c0)

    fast = f("fast")
    chex.assert_trees_all_close(fast, f("autodiff"), **TOL)
    assert float(jnp.abs(fast[1].h).max()) > 0


def test_against_finite_differences():
    """Independent truth: central differences of the fast path's own value."""
    cell = rnnjax.gru(I, H, dtype=F64)
    params = cell.init(jax.random.key(12))
    xs = _xs(jax.random.key(13))
    jax.test_util.check_grads(jax.jit(_loss_fn(cell, "fast")), (params, xs), order=1, modes=["rev"], eps=1e-6)


def test_forward_mode_and_second_order():
    """jvp and Hessian-vector products still work (the fast path is a custom_jvp) and agree."""
    cell = rnnjax.lstm(I, H, dtype=F64)
    params = cell.init(jax.random.key(14))
    xs = _xs(jax.random.key(15))
    tangent = jax.tree.map(lambda p: jnp.ones_like(p) * 0.1, params)

    @jax.jit
    def both(params, tangent):
        out = []
        for backward in ("fast", "autodiff"):
            loss = _loss_fn(cell, backward)
            jvp = jax.jvp(lambda p: loss(p, xs), (params,), (tangent,))
            hvp = jax.jvp(jax.grad(lambda p: loss(p, xs)), (params,), (tangent,))[1]
            out.append((jvp, hvp))
        return out

    fast, ref = both(params, tangent)
    chex.assert_trees_all_close(fast, ref, atol=1e-9, rtol=1e-9)


def test_primal_is_plain_scan_and_traces_once():
    cell = rnnjax.lstm(I, H, dtype=F64)
    params = cell.init(jax.random.key(16))
    x = _xs(jax.random.key(17))[0]
    ref = jax.lax.scan(lambda c, xt: cell.step(params, c, xt), cell.initial_carry(), x)
    chex.assert_trees_all_close(rnnjax.unroll(cell, params, x), ref, atol=0, rtol=0)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def grad(params, x):
        return jax.grad(lambda p: jnp.sum(rnnjax.unroll(cell, p, x)[1]))(params)

    grad(params, x)
    grad(jax.tree.map(lambda p: p + 1.0, params), x + 1.0)


def test_weight_gradients_leave_the_loop():
    """Structure: the fast backward loop holds one matmul per step (dz @ W_rec); weight gradients come after it."""
    cell = rnnjax.lstm(I, H, dtype=F64)
    params = cell.init(jax.random.key(18))
    xs = _xs(jax.random.key(19))

    def count_dots_in_backward_scan(backward):
        jaxpr = jax.make_jaxpr(jax.grad(_loss_fn(cell, backward)))(params, xs)
        scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan" and e.params["reverse"]]
        assert scans, "expected a reverse scan"
        return sum(e.primitive.name == "dot_general" for e in scans[-1].params["jaxpr"].jaxpr.eqns)

    # autodiff: dh, dx, dW_in, dW_rec in the loop; fast: dh and dx only.
    assert count_dots_in_backward_scan("fast") < count_dots_in_backward_scan("autodiff")


def _dots_outside_scans(jaxpr) -> list:
    """``(lhs shape, rhs shape)`` of every ``dot_general`` of ``jaxpr`` not inside a scan (recursing into calls)."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(tuple(v.aval.shape for v in eqn.invars))
        elif eqn.primitive.name != "scan":
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                found += _dots_outside_scans(sub)
    return found


def test_pair_and_bias_take_one_weight_gradient_product():
    """``W_in x + W_rec h + b``: one after-loop product ``dZ^T [H, X, 1]`` gives dW_rec, dW_in and db at once.

    The joint operand is recorded time-major by the forward loop (shape (time, batch, H + I + 1) under vmap),
    and no separate product or reduction per weight is left after the loop; gradients equal autodiff's.
    """
    cell = rnnjax.lstm(I, H, dtype=F64)
    params = cell.init(jax.random.key(23))
    xs = _xs(jax.random.key(24))
    jaxpr = jax.make_jaxpr(jax.grad(_loss_fn(cell, "fast")))(params, xs).jaxpr
    joint = H + I + 1
    products = [shapes for shapes in _dots_outside_scans(jaxpr) if any(s[-1:] == (joint,) for s in shapes)]
    assert len(products) == 1, _dots_outside_scans(jaxpr)
    assert products[0][0][:2] == (T, B) and products[0][1][:2] == (T, B)  # cotangent and joint operand, time-major
    assert not [s for s in _dots_outside_scans(jaxpr) if (T, B, H) in s or (T, B, I) in s]  # no per-weight product
    chex.assert_trees_all_close(jax.grad(_loss_fn(cell, "fast"))(params, xs),
                                jax.grad(_loss_fn(cell, "autodiff"))(params, xs), **TOL)


def test_recording_loop_reads_the_weight_transposed():
    """The forward loop's tap matmul contracts a (in, out) weight prepared once outside the loop, same values."""
    cell = rnnjax.lstm(I, H, dtype=F64)
    params = cell.init(jax.random.key(25))
    xs = _xs(jax.random.key(26))
    jaxpr = jax.make_jaxpr(jax.grad(_loss_fn(cell, "fast")))(params, xs).jaxpr
    scans = [e for e in jaxpr.eqns if e.primitive.name == "scan" and not e.params["reverse"]]
    body = scans[0].params["jaxpr"].jaxpr
    rhs = [e.invars[1].aval.shape for e in body.eqns if e.primitive.name == "dot_general"]
    assert (H, 4 * H) in rhs and (I, 4 * H) in rhs, rhs  # W_rec.T and W_in.T, not (4H, H) / (4H, I)
    value = lambda backward: _loss_fn(cell, backward)(params, xs)  # noqa: E731
    np.testing.assert_allclose(value("fast"), value("autodiff"), rtol=1e-12)


def _scan_carry_shapes(jaxpr) -> list:
    """Shapes of the carries of every scan in ``jaxpr`` (recursing into nested jaxprs)."""
    shapes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            consts, carries = eqn.params["num_consts"], eqn.params["num_carry"]
            shapes += [v.aval.shape for v in eqn.invars[consts:consts + carries]]
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            shapes += _scan_carry_shapes(sub)
    return shapes


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_bias_gradients_leave_the_loop(name):
    """Biases added to a gate's matmuls get their gradient after the loop, in one reduction over time and batch.

    Plain autodiff accumulates it in the backward loop (a carry of the bias's shape, summed over the batch at
    every step; under data parallelism that is an all-reduce per step); the fast path carries no such sum.
    """
    cell = rnnjax.make_cell(name, I, H, dtype=F64)
    params = cell.init(jax.random.key(21))
    xs = _xs(jax.random.key(22))
    gates = params.b.shape

    def carries(backward):
        return _scan_carry_shapes(jax.make_jaxpr(jax.grad(_loss_fn(cell, backward)))(params, xs).jaxpr)

    assert gates in carries("autodiff")
    assert gates not in carries("fast")
    chex.assert_trees_all_close(jax.grad(_loss_fn(cell, "fast"))(params, xs),
                                jax.grad(_loss_fn(cell, "autodiff"))(params, xs), **TOL)


def test_scan_without_taps_falls_back():
    """A step with no parameter matmul (only elementwise use) is still exact."""

    def fn(p, c, x, aux):
        c = jnp.tanh(p["a"] * c + x) * aux
        return c, c**2

    params = {"a": jnp.array([0.5, -0.3], F64)}
    xs = jax.random.normal(jax.random.key(20), (5, 2), F64)

    def loss(p, fast):
        if fast:
            c, ys = _fastgrad.scan(fn, p, jnp.zeros(2, F64), xs, 2.0)
        else:
            c, ys = jax.lax.scan(lambda c, x: fn(p, c, x, 2.0), jnp.zeros(2, F64), xs)
        return jnp.sum(ys) + jnp.sum(c)

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    chex.assert_trees_all_close(grad(params, True), grad(params, False), **TOL)


def test_backward_argument_is_checked():
    cell = rnnjax.elman(I, H)
    params = cell.init(jax.random.key(0))
    with pytest.raises(ValueError, match="backward"):
        rnnjax.unroll(cell, params, np.zeros((T, I), np.float32), backward="hand")


def test_traced_lengths_batched_inside_an_outer_scan():
    """Regression: a length batched by vmap inside an outer scan (truncated-BPTT chunks) must not
    leak a tracer out of the fast path's custom_jvp; gradients equal plain autodiff."""
    cell = rnnjax.gru(2, 3, dtype=jnp.float64)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (4, 2, 5, 2))

    def loss(p, backward):
        def body(c, inp):
            x, i = inp
            lens = jnp.clip(7 - 3 * i, 0, 5) * jnp.array([1, 0]) + jnp.array([0, 4])
            return rnnjax.unroll_batch(cell, p, x, c, lengths=lens.astype(jnp.int32), backward=backward)

        _, ys = jax.lax.scan(body, jnp.zeros((2, 3)), (xs, jnp.arange(4)))
        return jnp.sum(jnp.sin(ys))

    grad = jax.jit(jax.grad(loss), static_argnums=1)  # the reference jitted too: eager, it runs op by op
    g_fast, g_ref = grad(params, "fast"), grad(params, "autodiff")
    chex.assert_trees_all_close(g_fast, g_ref, atol=1e-10, rtol=1e-10)
