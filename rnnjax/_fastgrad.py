"""A faster reverse mode for ``jax.lax.scan`` over any cell, derived automatically.

Plain autodiff of ``scan(step)`` accumulates every weight gradient inside the
backward loop: at each step ``dW += dz_t^T v_t`` is a small matmul (one row
block per sequence) plus a read-modify-write of the whole ``dW``. This module
keeps the loop to what is truly sequential and takes every weight gradient
*after* the loop as one large matmul over all steps (and, under ``jax.vmap``,
all sequences):

``dW = sum_t dz_t^T v_t = dZ^T V`` with ``dZ: (time*batch, out)``, ``V: (time*batch, in)``.

How it is derived, for any cell (a user's own included): the step is traced to
a jaxpr, and every ``dot_general`` with one operand a parameter leaf ("a tap",
e.g. ``W_rec @ h`` or ``W_in @ x``) is found. A ``jax.custom_jvp`` wraps the
scan; its primal is the plain scan, so inference costs nothing extra. Its JVP
rule

1. runs the scan once, recording each tap's other operand ``v_t`` and output
   ``z_t`` (the step itself is evaluated unchanged),
2. computes each tap's weight tangent for all steps at once,
   ``dW @ V`` (time-parallel, one matmul), and
3. runs a tangent scan through the step in which each tap's output is the
   recorded ``z_t`` with tangent ``W dv_t + (dW @ V)_t``: the pointwise rest of
   the step is differentiated by ordinary JAX autodiff.

Reverse mode transposes that rule: the backward loop carries only
``dz_t @ W`` (and the pointwise VJP), emits ``dz_t`` per step, and the
transpose of step 2 is the single weight-gradient matmul after the loop.
Forward mode, ``vmap`` and higher-order derivatives keep working because
everything stays a JAX transformation of a ``custom_jvp``.

Layout, measured on XLA:CPU (``docs/performance.md``): a pair of taps that
meet in one ``add`` and the bias added to them (``W_in x + W_rec h + b``) take
ONE weight-gradient matmul after the loop, ``[dW_rec, dW_in, db] = dZ^T [H, X, 1]``,
with the joint operand ``[h_t; x_t; 1]`` recorded time-major by the forward
loop (one relayout of the cotangent stack instead of one per weight, no
separate bias reduction); and the forward loop reads each matrix-vector tap's
weight transposed once outside the loop, so that under ``vmap`` its per-step
matmul is ``(batch, in) x (in, out)``.

Memory: the pointwise part is rematerialised in the backward loop (from the
recorded carries and tap outputs), and two taps that meet only in one ``add``
(``W_in x + W_rec h``) share one recorded sum and one cotangent stack, so the
fast path stores less than plain autodiff (``benchmarks/memory.py``). Steps
with no parameter matmul fall back to plain autodiff; matmuls inside nested
control flow (``cond``, inner ``scan``) are not taps and stay in the loop.

Values and gradients equal plain autodiff up to float summation order
(``tests/test_fastgrad.py`` checks every built-in cell and a user cell in
float64).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jax.extend.core import Literal, Var

from rnnjax._shard_map import match_varying

_CALL_PRIMITIVES = ("jit", "pjit", "closed_call", "core_call")


def _is_zero(t) -> bool:
    return isinstance(t, SymbolicZero)


def _instantiate(t, primal):
    """A concrete zero tangent for a symbolic one (float0 for integer primals)."""
    if not _is_zero(t):
        return t
    dtype = jax.dtypes.float0 if not jnp.issubdtype(jnp.result_type(primal), jnp.inexact) else primal.dtype
    if dtype == jax.dtypes.float0:
        return np.zeros(jnp.shape(primal), dtype)
    return jnp.zeros(jnp.shape(primal), dtype)


_CAST_PRIMITIVES = ("pvary", "pcast")  # shard_map's casts to "varying": the value is unchanged


def _follow_cast(eqn, origin) -> None:
    """A parameter cast to vary along a manual axis (inside ``shard_map``) is still that parameter."""
    if eqn.primitive.name in _CAST_PRIMITIVES and len(eqn.invars) == 1 and len(eqn.outvars) == 1:
        src = eqn.invars[0]
        if isinstance(src, Var) and src in origin:
            origin[eqn.outvars[0]] = origin[src]


def _tap_side(eqn, origin) -> int | None:
    """0 or 1: which operand of a ``dot_general`` is a parameter leaf (the other is not); else None."""
    if eqn.primitive.name != "dot_general":
        return None
    a, b = (origin.get(v) if isinstance(v, Var) else None for v in eqn.invars)
    a_param, b_param = (o is not None and o[0] == "p" for o in (a, b))
    if a_param and not b_param:
        return 0
    if b_param and not a_param:
        return 1
    return None


def _dot(eqn_params, side, w, v):
    w, v = match_varying((w, v))  # inside shard_map: a replicated weight meets per-device values
    operands = (w, v) if side == 0 else (v, w)
    return jax.lax.dot_general_p.bind(*operands, **eqn_params)


def _make_tap(eqn_params, side):
    """``tap(v, w, z_hint, e) = dot(w, v) + e``, evaluated as ``z_hint + e`` (``z_hint`` must equal ``dot(w, v)``).

    Its tangent is the honest one, ``dot(dw, v) + dot(w, dv) + de``; with ``w``
    held constant inside the loop only ``dot(w, dv)`` remains there.
    """

    @jax.custom_jvp
    def tap(v, w, z_hint, e):
        return z_hint + e

    def tap_jvp(primals, tangents):
        v, w, z_hint, e = primals
        dv, dw, _, de = tangents
        out = z_hint + e
        parts = []
        if not _is_zero(dv):
            parts.append(_dot(eqn_params, side, w, dv))
        if not _is_zero(dw):
            parts.append(_dot(eqn_params, side, dw, v))
        if not _is_zero(de):
            parts.append(de)
        tangent = sum(parts[1:], parts[0]) if parts else jnp.zeros_like(out)
        return out, tangent

    tap.defjvp(tap_jvp, symbolic_zeros=True)
    return tap


class _Mode:
    """How the interpreter evaluates taps: ``record`` them, or replace them by recorded values."""

    def __init__(self, record: list[bool] | None, w_const=None, z_hints=None, extras=None, w_rows=None):
        self.record = record  # per tap: keep its operand (True) or not (it is a plain input); None: replay
        self.w_rows = w_rows or {}  # record mode: tap -> its weight transposed, contracting axis first
        self.w_const = w_const  # flat parameter leaves, not differentiated
        self.z_hints = z_hints
        self.extras = extras
        self.vs: list = []
        self.zs: list = []
        self.k = 0

    def tap(self, eqn, side, invals, leaf):
        """Evaluate tap number ``self.k``: ``eqn`` with the parameter ``leaf`` as operand ``side``."""
        v = invals[1 - side]
        if self.record is not None:
            if self.k in self.w_rows:  # v @ W_rows: the same sums, the layout XLA:CPU's matmul runs fastest
                contract = (((0,), (0,)), ((), ()))
                v, w_rows = match_varying((v, self.w_rows[self.k]))  # inside shard_map: replicated weight
                z = jax.lax.dot_general_p.bind(v, w_rows, **{**eqn.params, "dimension_numbers": contract})
            else:
                z = eqn.primitive.bind(*invals, **eqn.params)
            if self.record[self.k]:
                self.vs.append(v)
            self.zs.append(z)
        else:
            tap = _make_tap(eqn.params, side)
            z = tap(v, self.w_const[leaf], self.z_hints[self.k], self.extras[self.k])
        self.k += 1
        return z


def _interpret(jaxpr, consts, args, origins, mode: _Mode):
    """Evaluate ``jaxpr`` like ``jax.core.eval_jaxpr``, routing taps through ``mode``."""
    env: dict = {}
    origin = {v: o for v, o in zip(jaxpr.invars, origins) if o is not None}

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    for v, val in zip(jaxpr.constvars, consts):
        env[v] = val
    for v, val in zip(jaxpr.invars, args):
        env[v] = val
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        _follow_cast(eqn, origin)
        side = _tap_side(eqn, origin)
        if side is not None:
            outs = [mode.tap(eqn, side, invals, origin[eqn.invars[side]][1])]
        elif eqn.primitive.name in _CALL_PRIMITIVES and "jaxpr" in eqn.params:
            inner = eqn.params["jaxpr"]
            inner_origins = [origin.get(v) if isinstance(v, Var) else None for v in eqn.invars]
            with eqn.ctx.manager:
                outs = _interpret(
                    getattr(inner, "jaxpr", inner), getattr(inner, "consts", ()), invals, inner_origins, mode
                )
        else:
            with eqn.ctx.manager:
                ans = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            outs = ans if eqn.primitive.multiple_results else [ans]
        for v, val in zip(eqn.outvars, outs):
            env[v] = val
    return [read(v) for v in jaxpr.outvars]


def scan(
    fn: Callable,
    params: Any,
    carry: Any,
    xs: Any,
    aux: Any = None,
    *,
    reverse: bool = False,
    unroll: int = 1,
) -> tuple[Any, Any]:
    """``jax.lax.scan(lambda c, x: fn(params, c, x, aux), carry, xs)`` with the faster reverse mode.

    Args:
      fn: ``fn(params, carry, x, aux) -> (carry, y)``, one step; ``x`` is one
        time slice of ``xs``. Matmuls of a parameter leaf with anything else
        become taps (see the module docstring); everything else is
        differentiated by plain autodiff inside the loop.
      params: pytree of arrays; the weights the faster backward is about.
      carry: initial carry pytree.
      xs: pytree of arrays with a leading time axis ``(time, ...)``.
      aux: loop-invariant extras (e.g. a traced ``length``); any pytree.
      reverse, unroll: as in ``jax.lax.scan``.

    Returns:
      ``(final_carry, ys)`` exactly as ``jax.lax.scan`` returns them.
    """

    # ``aux`` is an explicit argument (not a closure): a custom_jvp must not close over tracers of an
    # enclosing transformation (e.g. a length batched by vmap inside an outer scan).
    def plain(params, carry, xs, aux):
        return jax.lax.scan(lambda c, x: fn(params, c, x, aux), carry, xs, reverse=reverse, unroll=unroll)

    run = jax.custom_jvp(plain)

    def run_jvp(primals, tangents):
        params, carry, xs, aux = primals
        d_params, d_carry, d_xs, d_aux = tangents
        if not all(_is_zero(t) for t in jax.tree.leaves(d_aux, is_leaf=_is_zero)):
            # Differentiating through ``aux`` is not what the fast path is for: plain autodiff.
            return jax.jvp(plain, primals, jax.tree.map(_instantiate, tangents, primals, is_leaf=_is_zero))
        p_leaves, p_tree = jax.tree.flatten(params)
        c_leaves, c_tree = jax.tree.flatten(carry)
        x_leaves, x_tree = jax.tree.flatten(xs)
        a_leaves, a_tree = jax.tree.flatten(aux)
        n_p, n_c, n_x = len(p_leaves), len(c_leaves), len(x_leaves)
        x_spec = [jax.typeof(a).update(shape=jnp.shape(a)[1:]) for a in x_leaves]  # one step's slice

        def flat_step(p, c, x, a):
            c_new, y = fn(
                jax.tree.unflatten(p_tree, p),
                jax.tree.unflatten(c_tree, c),
                jax.tree.unflatten(x_tree, x),
                jax.tree.unflatten(a_tree, a),
            )
            return c_new, y

        closed, out_shape = jax.make_jaxpr(flat_step, return_shape=True)(p_leaves, c_leaves, x_spec, a_leaves)
        out_tree = jax.tree.structure(out_shape)
        c_new_tree = jax.tree.structure(out_shape[0])
        if c_new_tree != c_tree:
            raise TypeError(f"fn: the new carry's structure {c_new_tree} differs from the carry's {c_tree}")
        # Origin of each top-level input: ("p", leaf) for parameters, ("a", index) for carry and x leaves.
        origins = (
            [("p", i) for i in range(n_p)]
            + [("a", j) for j in range(n_c + n_x)]
            + [None] * len(a_leaves)
        )
        taps = _tap_list(closed.jaxpr, origins)
        if not taps:  # nothing to move out of the loop: plain autodiff
            d_inst = jax.tree.map(_instantiate, tangents, primals, is_leaf=_is_zero)
            return jax.jvp(plain, primals, d_inst)

        def evaluate(p, c, x, mode):
            args = [*p, *c, *x, *a_leaves]
            return jax.tree.unflatten(out_tree, _interpret(closed.jaxpr, closed.consts, args, origins, mode))

        # 1. The step as it is, recording tap operands that are not plain inputs and every tap output.
        recorded = [tap.source is None for tap in taps]
        stored = [k for k, tap in enumerate(taps) if tap.leader is None]  # taps with their own hint

        dp_leaves = jax.tree.leaves(d_params, is_leaf=_is_zero)
        joint_plans: dict = {}  # stored tap -> its joint weight tangent's plan (found when the step is traced)

        # A matrix-vector tap contracting the weight's last axis (``W @ v``, ``v @ W.T``) reads the weight
        # transposed once, outside the loop: under vmap its matmul is then (batch, in) x (in, out).
        w_rows = {
            k: jnp.swapaxes(p_leaves[tap.leaf], 0, 1)
            for k, tap in enumerate(taps)
            if jnp.ndim(p_leaves[tap.leaf]) == 2
            and tap.params["dimension_numbers"] == ((((1,), (0,)) if tap.side == 0 else ((0,), (1,))), ((), ()))
        }

        def record_body(c, x):
            mode = _Mode(record=recorded, w_rows=w_rows)
            c_leaves_t = jax.tree.leaves(c)
            c_new, y = evaluate(p_leaves, c_leaves_t, x, mode)
            hints = [
                mode.zs[k] if taps[k].follower is None else mode.zs[k] + mode.zs[taps[k].follower] for k in stored
            ]
            in_t, recorded_t = [*c_leaves_t, *x], iter(mode.vs)
            v_t = [next(recorded_t) if tap.source is None else in_t[tap.source] for tap in taps]
            joints = []
            for k, hint in zip(stored, hints):
                plan = _joint_plan(taps, k, dp_leaves, v_t, hint)
                if plan is not None:
                    joint_plans[k] = plan
                    joints.append(_joint_operand(plan, v_t))
            return c_new, (y, c_leaves_t, mode.vs, hints, joints)

        carry_out, (ys, cs, vs, zs, joint_stacks) = jax.lax.scan(
            record_body, carry, x_leaves, reverse=reverse, unroll=unroll
        )
        joint_stacks = dict(zip([k for k in stored if k in joint_plans], joint_stacks))
        in_stacks = [*cs, *x_leaves]
        vs = iter(vs)
        v_stacks = [next(vs) if tap.source is None else in_stacks[tap.source] for tap in taps]

        # 2. Weight tangents of all taps for all steps at once (one matmul each, or one per pair and bias).

        def weight_tangent(k):
            tap, dw = taps[k], dp_leaves[taps[k].leaf]
            if _is_zero(dw):
                return None
            return jax.vmap(lambda v: _dot(tap.params, tap.side, dw, v))(v_stacks[k])

        def bias_tangent(k, z_stack):
            db = None if taps[k].bias is None else dp_leaves[taps[k].bias]
            return None if db is None or _is_zero(db) else jnp.broadcast_to(db, jnp.shape(z_stack))

        extras = []
        for k, z_stack in zip(stored, zs):
            if k in joint_plans:
                extras.append(_joint_tangent(taps, k, joint_plans[k], dp_leaves, joint_stacks[k]))
                continue
            follower = taps[k].follower
            parts = [weight_tangent(k)] + ([] if follower is None else [weight_tangent(follower)])
            parts = [e for e in parts + [bias_tangent(k, z_stack)] if e is not None]
            extras.append(sum(parts[1:], parts[0]) if parts else None)

        # 3. Tangent scan through the pointwise rest of the step; only nonzero tangents are pushed.
        dc0 = [_instantiate(t, c) for t, c in zip(jax.tree.leaves(d_carry, is_leaf=_is_zero), c_leaves)]
        dc0 = match_varying(dc0, c_leaves)
        dx_leaves = jax.tree.leaves(d_xs, is_leaf=_is_zero)
        x_live = [not _is_zero(t) and jnp.issubdtype(jnp.result_type(x), jnp.inexact) for t, x in zip(dx_leaves, x_leaves)]
        absorbed = {tap.bias for tap in taps if tap.bias is not None}  # their tangents travel in ``extras``
        p_live = [not _is_zero(t) and i not in absorbed for i, t in enumerate(dp_leaves)]
        e_live = [e is not None for e in extras]
        dxs = [t for t, live in zip(dx_leaves, x_live) if live]
        dps = [t for t, live in zip(dp_leaves, p_live) if live]
        des = [e for e in extras if e is not None]

        def tangent_body(dc, inp):
            c_t, x_t, z_t, dx_t, de_t = inp

            def pointwise(c, x_sub, p_sub, e_sub):
                x_sub, p_sub, e_sub = iter(x_sub), iter(p_sub), iter(e_sub)
                x = [next(x_sub) if live else a for a, live in zip(x_t, x_live)]
                p = [next(p_sub) if live else a for a, live in zip(p_leaves, p_live)]
                es = [next(e_sub) if live else jnp.zeros_like(z) for z, live in zip(z_t, e_live)]
                # Per tap: its hint and extra; the second of a pair adds zeros (its partner carries the sum).
                hint_of, extra_of = dict(zip(stored, z_t)), dict(zip(stored, es))
                hints = [hint_of[k] if k in hint_of else jnp.zeros_like(hint_of[tap.leader]) for k, tap in enumerate(taps)]
                extras_k = [extra_of[k] if k in extra_of else jnp.zeros_like(hints[k]) for k in range(len(taps))]
                c_new, y = evaluate(p, c, x, _Mode(record=None, w_const=p_leaves, z_hints=hints, extras=extras_k))
                return jax.tree.leaves(c_new), y

            primal_in = (
                c_t,
                [a for a, live in zip(x_t, x_live) if live],
                [a for a, live in zip(p_leaves, p_live) if live],
                [jnp.zeros_like(z) for z, live in zip(z_t, e_live) if live],
            )
            # Rematerialised: the backward loop recomputes the cheap pointwise part from the
            # recorded carry and tap outputs instead of stacking its intermediates.
            _, (dc_new, dy) = jax.jvp(jax.checkpoint(pointwise), primal_in, (dc, dx_t, dps, de_t))
            return dc_new, dy

        dc_out, d_ys = jax.lax.scan(tangent_body, dc0, (cs, x_leaves, zs, dxs, des), reverse=reverse, unroll=unroll)
        return (carry_out, ys), (jax.tree.unflatten(c_tree, dc_out), d_ys)

    run.defjvp(run_jvp, symbolic_zeros=True)
    return run(params, carry, xs, aux)


def _joint_plan(taps, k, dp_leaves, v_t, z_t):
    """How to take stored tap ``k``'s weight tangent, with its pair partner's and its bias's, as ONE matmul; or None.

    ``W_in x + W_rec h + b`` has the tangent ``[dW_rec, dW_in, db] @ [h; x; 1]``
    at every step: one matmul of the weights concatenated along their
    contracting axis with the operands (and a one for the bias) concatenated
    likewise. The forward loop records that joint operand per step, so its
    stack is time-major like the cotangent stack; the transpose is then one
    weight-gradient matmul after the loop that reads the cotangent stack
    once (instead of one matmul per weight, each with its own relayout of the
    stack, and a separate reduction for the bias). Same sums, in another order.

    Applies when every member is a plain matrix-vector product (one
    contracting axis, no batch axes, a vector operand), with the same
    ``dot_general`` parameters, the weight on the same side, one dtype, and
    weights that differ only along the contracting axis; otherwise None
    (the caller sums separate products).

    Args:
      taps, k: the tap list and a stored tap's index.
      dp_leaves: the parameter tangents (only which are zero, and dtypes, are read).
      v_t: each tap's operand at one step; z_t: tap ``k``'s (or its pair's) output at one step.

    Returns:
      ``(members, axis, with_bias)`` or None.
    """
    members = [k] + ([] if taps[k].follower is None else [taps[k].follower])
    with_bias = taps[k].bias is not None
    if len(members) == 1 and not with_bias:
        return None  # a lone matmul: nothing to join
    tangents = [dp_leaves[taps[m].leaf] for m in members] + ([dp_leaves[taps[k].bias]] if with_bias else [])
    if any(_is_zero(t) for t in tangents):
        return None
    first = taps[k]
    if any(taps[m].side != first.side or taps[m].params != first.params for m in members):
        return None
    (lhs_c, rhs_c), (lhs_b, rhs_b) = first.params["dimension_numbers"]
    if len(lhs_c) != 1 or lhs_b or rhs_b:
        return None
    axis = int(lhs_c[0] if first.side == 0 else rhs_c[0])  # the weight's contracting axis
    weights, vs = tangents[: len(members)], [v_t[m] for m in members]
    dtype = jnp.result_type(weights[0])
    if any(jnp.ndim(v) != 1 for v in vs) or any(jnp.result_type(a) != dtype for a in [*tangents, *vs]):
        return None
    shapes = [list(jnp.shape(w)) for w in weights]
    for s in shapes:
        s[axis] = 0
    if any(s != shapes[0] for s in shapes) or any(jnp.ndim(w) != jnp.ndim(weights[0]) for w in weights):
        return None
    if with_bias and jnp.shape(tangents[-1]) != jnp.shape(z_t):
        return None
    return members, axis, with_bias


def _joint_operand(plan, v_t):
    """One step's joint operand ``[v_1; v_2; 1]`` of a ``_joint_plan``."""
    members, _, with_bias = plan
    vs = [v_t[m] for m in members]
    if with_bias:
        vs.append(jnp.ones((1,), vs[0].dtype))
    return jnp.concatenate(match_varying(vs))  # inside shard_map: a carry and an input may vary differently


def _joint_tangent(taps, k, plan, dp_leaves, v_stack):
    """The joint weight tangent ``[dW_1, dW_2, db] @ v_t`` for every step of ``v_stack`` (see ``_joint_plan``)."""
    members, axis, with_bias = plan
    weights = [dp_leaves[taps[m].leaf] for m in members]
    if with_bias:
        weights.append(jnp.expand_dims(dp_leaves[taps[k].bias], axis))
    w_joint = jnp.concatenate(weights, axis=axis)
    return jax.vmap(lambda v: _dot(taps[k].params, taps[k].side, w_joint, v))(v_stack)


class _Tap(NamedTuple):
    """One matmul of a parameter found in the step (see ``_tap_list``)."""

    params: dict  # the dot_general's parameters
    side: int  # position of the parameter operand
    leaf: int  # index of the parameter among the flat parameter leaves
    source: int | None  # index of the other operand among the carry and input leaves, if it is one
    leader: int | None = None  # for the second of a pair of taps summed by one ``add``: the first
    follower: int | None = None  # for the first of such a pair: the second
    bias: int | None = None  # a parameter leaf added to this tap's (or pair's) output: its gradient goes after the loop


def _tap_list(jaxpr, origins, base: int = 0, *, top: bool = True) -> list[_Tap]:
    """The taps of ``jaxpr`` in evaluation order, recursing into nested ``jit`` calls.

    Two taps whose outputs meet only in one ``add`` (``W_in x + W_rec h``) form
    a pair: they share one recorded value (their sum) and one cotangent stack.
    At the top level, a parameter leaf used only in ``add``s to such sums
    (``W_in x + W_rec h + b``: a bias) is absorbed by its tap: its tangent is
    broadcast over time into the tap's weight tangent, so its gradient is one
    reduction after the loop (not a per-step reduction over the batch inside it).
    """
    origin = {v: o for v, o in zip(jaxpr.invars, origins) if o is not None}
    taps: list[_Tap] = []
    out_index = {}  # tap output var -> global tap index (this level)
    uses: dict = {}
    for v in jaxpr.outvars:
        if isinstance(v, Var):
            uses[v] = uses.get(v, 0) + 1
    for eqn in jaxpr.eqns:
        for v in eqn.invars:
            if isinstance(v, Var):
                uses[v] = uses.get(v, 0) + 1
        _follow_cast(eqn, origin)
        side = _tap_side(eqn, origin)
        if side is not None:
            other = eqn.invars[1 - side]
            src = origin.get(other) if isinstance(other, Var) else None
            out_index[eqn.outvars[0]] = base + len(taps)
            taps.append(_Tap(eqn.params, side, origin[eqn.invars[side]][1], src[1] if src is not None else None))
        elif eqn.primitive.name in _CALL_PRIMITIVES and "jaxpr" in eqn.params:
            inner = eqn.params["jaxpr"]
            inner_origins = [origin.get(v) if isinstance(v, Var) else None for v in eqn.invars]
            taps.extend(_tap_list(getattr(inner, "jaxpr", inner), inner_origins, base + len(taps), top=False))
    sum_of = dict(out_index)  # var holding a tap's (or a pair's) full output -> tap index
    for eqn in jaxpr.eqns:
        if eqn.primitive.name not in ("add", "add_any") or not all(isinstance(v, Var) for v in eqn.invars):
            continue
        a, b = eqn.invars
        if a is b or a not in out_index or b not in out_index or uses[a] != 1 or uses[b] != 1:
            continue
        if a.aval.shape != b.aval.shape or a.aval.dtype != b.aval.dtype:
            continue
        i, j = sorted((out_index[a], out_index[b]))
        if taps[i - base].leader is None and taps[i - base].follower is None and taps[j - base].follower is None:
            taps[i - base] = taps[i - base]._replace(follower=j)
            taps[j - base] = taps[j - base]._replace(leader=i)
            del sum_of[a], sum_of[b]
            sum_of[eqn.outvars[0]] = i
    if top:
        _absorb_biases(jaxpr, origin, uses, sum_of, taps)
    return taps


def _absorb_biases(jaxpr, origin, uses, sum_of, taps) -> None:
    """Mark (in place) each parameter leaf whose every use is ``add(tap sum, leaf)`` as its tap's bias."""
    found: dict = {}  # parameter var -> [tap index, ...]
    for eqn in jaxpr.eqns:
        if eqn.primitive.name not in ("add", "add_any") or not all(isinstance(v, Var) for v in eqn.invars):
            continue
        for s_var, p_var in (eqn.invars, eqn.invars[::-1]):
            o = origin.get(p_var)
            if s_var in sum_of and uses[s_var] == 1 and o is not None and o[0] == "p":
                if s_var.aval.shape == p_var.aval.shape and s_var.aval.dtype == p_var.aval.dtype:
                    found.setdefault(p_var, []).append(sum_of[s_var])
                    break
    for p_var, ks in found.items():
        if len(ks) != uses[p_var] or len(set(ks)) != len(ks) or any(taps[k].bias is not None for k in ks):
            continue  # used elsewhere too (or twice by one tap): its gradient stays in the loop
        for k in ks:
            taps[k] = taps[k]._replace(bias=origin[p_var][1])
