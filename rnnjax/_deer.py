"""DEER: evaluate any recurrent cell in parallel over time by Newton's method.

The states ``h_1..h_T`` of ``h_t = f(h_{t-1}, x_t)`` solve the fixed-point
equation ``H = F(H)`` with ``F(H)_t = f(H_{t-1}, x_t)``. Newton's method
linearises every step around the current guess ``H^k``,

    h_t = J_t h_{t-1} + (f(H^k_{t-1}, x_t) - J_t H^k_{t-1}),   J_t = df/dh at H^k_{t-1},

and solves that *linear* recurrence for all t at once with an associative
scan (O(log T) depth). The guess is exact on a growing prefix, so the
iteration ends after at most T steps; for well-behaved cells it converges
quadratically in a handful. quasi-DEER keeps only ``diag(J_t)`` (cheaper,
elementwise scan, linear convergence).

Gradients use the implicit function theorem instead of differentiating the
iterations: with ``g_t = dL/dh_t``, the adjoint ``lam_t = g_t + J_{t+1}^T lam_{t+1}``
is a linear reverse recurrence (solved by the same associative scan with the
converged Jacobians), and ``dL/dtheta = sum_t (df/dtheta)^T lam_t``.

References:
  Lim, Zhu, Selfridge, Kasim, "Parallelizing non-linear sequential models
  over the sequence length", ICLR 2024.
  Gonzalez, Warrington, Smith, Linderman, "Towards scalable and stable
  parallelization of nonlinear RNNs" (quasi-DEER, ELK), NeurIPS 2024.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._carry import flatten_carry
from rnnjax._cells import prepare
from rnnjax._parallel import affine_scan

ON_FAILURE = ("warn", "raise", "nan")


class DeerInfo(NamedTuple):
    """Convergence information of a DEER solve.

    Attributes:
      iterations: int32 scalar, Newton iterations performed.
      residual: scalar, ``max_t |h_t - f(h_{t-1}, x_t)|`` of the returned
        trajectory (over the flattened, real-viewed carry).
      converged: bool scalar, ``residual <= tol`` (False for NaN/inf).
    """

    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array


# ------------------------------------------------------------ linear solvers


def _matrix_combine(left, right):
    a_l, b_l = left
    a_r, b_r = right
    return a_r @ a_l, jnp.einsum("...ij,...j->...i", a_r, b_l) + b_r


def matrix_affine_scan(a: jax.Array, b: jax.Array, h0: jax.Array, *, reverse: bool = False) -> jax.Array:
    """All states of ``h_t = A_t h_{t-1} + b_t`` (dense ``A_t``) by a parallel prefix scan.

    Args:
      a: ``(T, N, N)``.
      b: ``(T, N)``.
      h0: ``(N,)`` initial state.
      reverse: run from ``t = T-1`` down to 0 with ``h_T = h0``.

    Returns:
      ``(T, N)`` states after each step.
    """
    first = -1 if reverse else 0
    b = b.at[first].add(a[first] @ h0)
    _, hs = jax.lax.associative_scan(_matrix_combine, (a, b), reverse=reverse)
    return hs


def _shift(h0, hs):
    """``[h0, hs[0], ..., hs[T-2]]``: the state entering each step."""
    return jnp.concatenate([h0[None], hs[:-1]], axis=0)


# --------------------------------------------------------------------- solver


def _make_solver(f, *, quasi, tol, max_iter):
    """A differentiable ``solve(params, xs, valid, h0) -> (H, iterations, residual)``.

    ``f(params, h, x, valid) -> h'`` on flat real vectors ``h: (N,)``.
    """

    def linearise(params, hprev, xs, valid, diagonal=False):
        # f(H_{t-1}) and its Jacobians (T, N, N), or only their diagonals (T, N) for quasi-DEER.
        def one(h, x, v):
            out = f(params, h, x, v)
            return out, out

        jac, fx = jax.vmap(jax.jacfwd(one, has_aux=True))(hprev, xs, valid)
        return fx, (jnp.diagonal(jac, axis1=-2, axis2=-1) if diagonal else jac)

    def newton(params, xs, valid, h0):
        time = xs.shape[0]
        hs = jnp.broadcast_to(h0, (time,) + h0.shape)
        fx, jac = linearise(params, _shift(h0, hs), xs, valid, quasi)
        res = jnp.max(jnp.abs(hs - fx))

        def cond(state):
            k, _, _, _, res = state
            return (k < max_iter) & (res > tol)

        def body(state):
            k, hs, fx, jac, _ = state
            hprev = _shift(h0, hs)
            if quasi:
                hs = affine_scan(jac, fx - jac * hprev, h0)
            else:
                b = fx - jnp.einsum("tij,tj->ti", jac, hprev)
                hs = matrix_affine_scan(jac, b, h0)
            fx, jac = linearise(params, _shift(h0, hs), xs, valid, quasi)
            res = jnp.max(jnp.abs(hs - fx))
            return k + 1, hs, fx, jac, res

        k, hs, _, _, res = jax.lax.while_loop(cond, body, (jnp.int32(0), hs, fx, jac, res))
        return hs, k, res

    @jax.custom_vjp
    def solve(params, xs, valid, h0):
        return newton(params, xs, valid, h0)

    def solve_fwd(params, xs, valid, h0):
        hs, k, res = newton(params, xs, valid, h0)
        return (hs, k, res), (params, xs, valid, h0, hs)

    def solve_bwd(saved, cotangents):
        params, xs, valid, h0, hs = saved
        g = cotangents[0]
        hprev = _shift(h0, hs)
        _, jac = linearise(params, hprev, xs, valid)
        # lam_t = g_t + J_{t+1}^T lam_{t+1}, lam_{T-1} = g_{T-1}: a reverse linear recurrence.
        a = jnp.swapaxes(jac, -1, -2)
        a = jnp.concatenate([a[1:], jnp.zeros_like(a[:1])], axis=0)
        lam = matrix_affine_scan(a, g, jnp.zeros_like(h0), reverse=True)
        _, vjp = jax.vjp(lambda p, hp, x: jax.vmap(lambda h, xx, v: f(p, h, xx, v))(hp, x, valid), params, hprev, xs)
        d_params, d_hprev, d_xs = vjp(lam)
        return d_params, d_xs, None, d_hprev[0]

    solve.defvjp(solve_fwd, solve_bwd)
    return solve


def _report(on_failure, iterations, residual, converged, tol, max_iter, name):
    def callback(iterations, residual, converged):
        if np.all(converged):
            return
        msg = (
            f"method='deer' did not converge for cell {name!r}: residual {np.max(residual):.3g} > tol {tol:.3g} "
            f"after {np.max(iterations)} iterations (max_iter={max_iter}); raise max_iter or tol, "
            "use quasi=False, or method='scan'"
        )
        if on_failure == "raise":
            raise RuntimeError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)

    jax.debug.callback(callback, iterations, residual, converged)


def deer_unroll(cell, params, xs, carry, *, length=None, reverse=False, **options) -> tuple[Any, ...]:
    """``rnnjax.unroll(..., method="deer")``: Newton iterations over the whole sequence, for any cell.

    Same semantics as the sequential scan (``length``, ``reverse``, zero
    outputs after the valid prefix). The carry (any pytree, complex leaves
    included) is flattened to a real vector of size N; exact DEER builds the
    ``(T, N, N)`` step Jacobians, so it suits moderate N.

    Options (``rnnjax.unroll(..., method="deer", quasi=True, tol=1e-8, ...)``):
      quasi: bool, default False. Keep only ``diag(J_t)`` (quasi-DEER).
      tol: convergence threshold on the residual ``max_t |h_t - f(h_{t-1}, x_t)|``
        (absolute, max-norm over the flattened carry); default ``1e-10`` for
        float64, ``1e-4`` for float32 carries.
      max_iter: int, default 100. At most T iterations are ever needed in
        exact arithmetic.
      on_failure: ``"warn"`` (default: a ``RuntimeWarning`` at run time),
        ``"raise"`` (a runtime error) or ``"nan"`` (outputs and final carry
        become NaN) when the residual exceeds ``tol``.
      return_info: bool, default False. Also return a ``DeerInfo``.

    Gradients: implicit-function-theorem custom VJP; the backward pass is
    one reverse linear recurrence with the converged (exact) Jacobians, in
    both DEER and quasi-DEER.

    Returns:
      ``(final_carry, ys)``, or ``(final_carry, ys, info)`` with
      ``return_info=True``.

    References:
      Lim et al., ICLR 2024; Gonzalez et al., NeurIPS 2024.
    """
    cell, params = prepare(cell, params)  # a parametrised cell's weights, once (a no-op after rnnjax.unroll's)
    known = {"quasi", "tol", "max_iter", "on_failure", "return_info"}
    unknown = set(options) - known
    if unknown:
        raise TypeError(f"method_options: method 'deer' accepts {sorted(known)}, got unknown {sorted(unknown)}")
    quasi = options.get("quasi", False)
    max_iter = options.get("max_iter", 100)
    on_failure = options.get("on_failure", "warn")
    return_info = options.get("return_info", False)
    if not isinstance(quasi, bool):
        raise TypeError(f"quasi: expected a bool, got {quasi!r}")
    if isinstance(max_iter, (bool, np.bool_)) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter: expected a positive integer, got {max_iter!r}")
    max_iter = int(max_iter)
    if on_failure not in ON_FAILURE:
        raise ValueError(f"on_failure: expected one of {ON_FAILURE}, got {on_failure!r}")

    # The carry as one real vector (complex leaves as (re, im) pairs), in rnnjax.gradflow's coordinates.
    h0, unflat = flatten_carry(carry)
    rdtype = h0.dtype

    def flat(c):
        return flatten_carry(c)[0].astype(rdtype)

    tol = options.get("tol")
    if tol is None:
        tol = 1e-10 if rdtype == jnp.float64 else 1e-4
    if not (isinstance(tol, (int, float)) and not isinstance(tol, bool) and tol > 0):
        raise ValueError(f"tol: expected a positive number, got {tol!r}")

    time = xs.shape[0]
    if time == 0:  # nothing to solve: the scan's empty outputs and the initial carry
        final, ys = jax.lax.scan(functools.partial(cell.step, params), carry, xs)
        info = DeerInfo(jnp.int32(0), jnp.zeros((), rdtype), jnp.array(True))
        return (final, ys, info) if return_info else (final, ys)
    t = jnp.arange(time)
    n_valid = time if length is None else jnp.clip(length, 0, time)
    valid = t < n_valid
    if reverse:
        # Process xs[length-1], ..., xs[0] first (then the invalid steps), as the scan does.
        perm = jnp.where(valid, n_valid - 1 - t, t)
        xs = xs[perm]

    def f(params, h, x, v):
        new, _ = cell.step(params, unflat(h), x)
        return jnp.where(v, flat(new), h)

    solve = _make_solver(f, quasi=quasi, tol=float(tol), max_iter=max_iter)
    hs, iterations, residual = solve(params, xs, valid, h0)
    converged = residual <= tol  # False for NaN

    hprev = _shift(h0, hs)
    _, ys = jax.vmap(lambda h, x: cell.step(params, unflat(h), x))(hprev, xs)
    ys = jax.tree.map(lambda y: jnp.where(valid.reshape((time,) + (1,) * (y.ndim - 1)), y, 0), ys)
    final = unflat(hs[-1])
    if reverse:
        ys = jax.tree.map(lambda y: y[perm], ys)

    if on_failure == "nan":
        bad = lambda x: jnp.where(converged, x, jnp.full_like(x, jnp.nan))
        ys, final = jax.tree.map(bad, ys), jax.tree.map(bad, final)
    else:
        _report(on_failure, iterations, residual, converged, float(tol), max_iter, cell.name)
    if return_info:
        return final, ys, DeerInfo(iterations, residual, converged)
    return final, ys
