"""Dynamics of (trained) recurrent networks: fixed and slow points, and gradient flossing.

Carries are seen as one real vector ``c`` (``rnnjax._carry.flatten_carry``:
leaves raveled in pytree order, a complex leaf as its real then imaginary
parts), exactly as in ``rnnjax.gradflow``; a step at constant input ``x`` is
the map ``F(c) = flat(cell.step(params, unflat(c), x)[0])``.

- ``fixed_points``: minimise the speed ``q(c) = 1/2 ||F(c) - c||^2`` from many
  initial carries at once (one vmapped optax optimisation, then a few
  Newton steps on ``F(c) - c = 0`` that are kept only where they lower ``q``),
  keep the points with ``q`` below a tolerance, merge duplicates, and
  linearise: the eigenvalues of ``dF/dc`` at each point, stable when all
  ``|eigenvalue| < 1`` (a discrete map). Slow points: a larger tolerance.
  ``initial_carries_from_states`` draws the starting carries from the
  carries visited on real inputs, plus Gaussian noise (Sussillo & Barak).
- ``flossing_loss``: ``sum_{i<=k} lambda_i^2`` of the top ``k`` Lyapunov
  exponents of an input-driven trajectory, by the QR method of
  ``rnnjax.gradflow.lyapunov_spectrum`` (same frame, same sign convention)
  with the QR inside the differentiated scan: its gradient pushes the
  exponents towards zero (gradient flossing).

References:
  Sussillo & Barak, "Opening the black box: low-dimensional dynamics in
  high-dimensional recurrent neural networks", Neural Computation 2013.
  Golub & Sussillo, "FixedPointFinder", JOSS 2018.
  Engelken, "Gradient flossing: improving gradient descent through dynamic
  control of Jacobians", NeurIPS 2023, arXiv:2312.17306.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnjax import _validate as v
from rnnjax._carry import flatten_carry
from rnnjax._cells import Cell, prepare
from rnnjax.gradflow import _check_step_cell, _flat_step, _prepare

__all__ = [
    "FixedPoints",
    "fixed_points",
    "flossing_loss",
    "initial_carries_from_states",
    "speed",
]


class FixedPoints(NamedTuple):
    """Fixed (or slow) points of a cell at constant input, deduplicated, sorted by ``q`` ascending.

    ``m`` points, ``n = carry_size(cell)`` real coordinates. NumPy arrays (not jittable).

    Attributes:
      carries: the points as a carry pytree with a leading axis ``(m,)`` (the cell's carry structure and dtypes).
      points: ``(m, n)`` the same points in the flat real coordinates of ``flatten_carry``.
      q: ``(m,)`` the speed ``1/2 ||F(c) - c||^2`` at each point.
      eigenvalues: ``(m, n)`` complex, the eigenvalues of the step Jacobian ``dF/dc`` at each point,
        sorted by modulus, largest first.
      stable: ``(m,)`` bool, all ``|eigenvalue| < 1`` (an attracting fixed point of the map).
      fixed: ``(m,)`` bool, ``q < tol`` (False only for the slow points kept by ``slow_tol``).
      tol: the fixed-point tolerance used.
      num_initial: how many initial carries were optimised.
    """

    carries: Any
    points: np.ndarray
    q: np.ndarray
    eigenvalues: np.ndarray
    stable: np.ndarray
    fixed: np.ndarray
    tol: float
    num_initial: int

    def summary(self) -> dict:
        """A JSON-ready dict: counts, and per point ``q``, ``stable``, ``fixed`` and the eigenvalue moduli."""
        return {
            "count": int(np.sum(self.fixed)),
            "stable_count": int(np.sum(self.fixed & self.stable)),
            "slow_count": int(np.sum(~self.fixed)),
            "tol": float(self.tol),
            "num_initial": int(self.num_initial),
            "points": [
                {"q": float(q), "stable": bool(s), "fixed": bool(f),
                 "eigenvalue_moduli": np.abs(e).astype(float).tolist()}
                for q, s, f, e in zip(self.q, self.stable, self.fixed, self.eigenvalues)
            ],
        }


def _constant_input(cell: Cell, x, dtype):
    if x is None:
        return jnp.zeros((cell.input_size,), dtype)
    x = jnp.asarray(x)
    if x.shape != (cell.input_size,) or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x: expected a float vector of shape ({cell.input_size},) (one constant input), "
                         f"got {x.dtype}{tuple(x.shape)}")
    return x


def _batched_flat(cell: Cell, carries):
    """A carry pytree with a leading axis ``(m,)`` -> ``(m, n)`` real, and ``unflatten`` of one carry."""
    template = cell.initial_carry()
    leaves, ref = jax.tree.leaves(carries), jax.tree.leaves(template)
    ok = jax.tree.structure(carries) == jax.tree.structure(template) and all(
        hasattr(a, "shape") and a.ndim == r.ndim + 1 and a.shape[1:] == r.shape and a.shape[0] == leaves[0].shape[0]
        for a, r in zip(leaves, ref))
    if not ok or leaves[0].shape[0] < 1:
        shapes = jax.tree.map(lambda r: ("m",) + tuple(r.shape), template)
        raise ValueError(f"initial_carries: expected cell.initial_carry()'s structure with a leading axis of m >= 1 "
                         f"carries, leaf shapes {shapes}, got {jax.tree.map(lambda a: tuple(jnp.shape(a)), carries)}")
    flat = jax.vmap(lambda c: flatten_carry(c)[0])(carries)
    return flat, flatten_carry(jax.tree.map(lambda a: a[0], carries))[1]


def speed(cell: Cell, params: Any, carry: Any, x: jax.Array | None = None) -> jax.Array:
    """The speed ``q(c) = 1/2 ||F(c) - c||^2`` of one carry under one step at constant input.

    Args:
      cell, params: a cell and its parameters.
      carry: one (unbatched) carry.
      x: ``(input_size,)`` constant input; default zeros.

    Returns:
      Real scalar (norm over every real coordinate of the carry). Pure, jittable, differentiable.

    References:
      Sussillo & Barak 2013, eq. 2.2.
    """
    _check_step_cell(cell, "speed")
    v.check_params(cell, params)
    carry = v.check_carry(cell, carry)
    x = _constant_input(cell, x, flatten_carry(carry)[0].dtype)
    return _speed(cell, params, carry, x)


@functools.partial(jax.jit, static_argnums=0)
def _speed(cell, params, carry, x):
    vec, unflatten = flatten_carry(carry)
    f = _flat_step(cell, params, unflatten)
    return 0.5 * jnp.sum((f(vec, x) - vec) ** 2)


def initial_carries_from_states(
    cell: Cell,
    params: Any,
    xs: jax.Array,
    num: int,
    *,
    key: jax.Array,
    noise: float = 0.0,
) -> Any:
    """Initial carries for ``fixed_points``: carries visited on real inputs, with Gaussian noise.

    Runs the cell on every sequence of ``xs`` from its zero carry, pools every
    visited carry ``c_t`` (``t = 1..T``, in flat coordinates), draws ``num`` of
    them uniformly with replacement and adds ``noise * N(0, I)`` in every real
    coordinate (Sussillo & Barak 2013, Sec. 3).

    Args:
      cell, params: a cell and its parameters.
      xs: ``(B, T, input_size)`` driving inputs (e.g. a task's evaluation batch).
      num: number of carries to return.
      key: PRNG key (which states, and the noise).
      noise: standard deviation of the added noise, ``>= 0``.

    Returns:
      A carry pytree with a leading axis ``(num,)``.
    """
    _check_step_cell(cell, "initial_carries_from_states")
    v.check_params(cell, params)
    xs = jnp.asarray(xs)
    if xs.ndim != 3 or xs.shape[2] != cell.input_size or not jnp.issubdtype(xs.dtype, jnp.floating):
        raise ValueError(f"xs: expected floats of shape (B, T, {cell.input_size}), got {xs.dtype}{tuple(xs.shape)}")
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num: expected a positive integer, got {num!r}")
    if not (isinstance(noise, (int, float)) and np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise: expected a non-negative number, got {noise!r}")
    return _initial_carries(cell, num, params, xs, key, jnp.asarray(noise, xs.dtype))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _initial_carries(cell, num, params, xs, key, noise):
    vec0, unflatten = flatten_carry(cell.initial_carry())
    f = _flat_step(cell, params, unflatten)
    vec0 = vec0.astype(jnp.result_type(vec0.dtype, xs.dtype))

    def run(seq):
        return jax.lax.scan(lambda c, x: (f(c, x),) * 2, vec0, seq)[1]  # (T, n): c_1..c_T

    visited = jax.vmap(run)(xs).reshape(-1, vec0.shape[0])
    k_pick, k_noise = jax.random.split(key)
    picked = visited[jax.random.randint(k_pick, (num,), 0, visited.shape[0])]
    picked = picked + noise * jax.random.normal(k_noise, picked.shape, picked.dtype)
    return jax.vmap(unflatten)(picked)


def fixed_points(
    cell: Cell,
    params: Any,
    x: jax.Array | None = None,
    *,
    initial_carries: Any,
    tol: float | None = None,
    slow_tol: float | None = None,
    steps: int = 2000,
    learning_rate: float = 1e-2,
    optimizer: optax.GradientTransformation | None = None,
    newton_steps: int = 8,
    merge_tol: float = 1e-3,
) -> FixedPoints:
    """Fixed (and optionally slow) points of ``c -> F(c) = cell.step(params, c, x)[0]``.

    From every initial carry, minimise ``q(c) = 1/2 ||F(c) - c||^2`` (all at
    once: one optax optimisation of ``sum_j q(c_j)``, whose gradient is each
    point's own, for ``steps`` steps), then polish with ``newton_steps`` Newton
    steps ``c <- c - (J - I)^{-1} (F(c) - c)``, each kept only where it lowers
    ``q``. Points with ``q < tol`` are fixed points (``q < slow_tol``: slow
    points, kept with ``fixed=False``); duplicates closer than ``merge_tol``
    (Euclidean, flat coordinates) are merged, keeping the lowest ``q``. Each
    point's step Jacobian ``J = dF/dc`` (``(n, n)``, real coordinates) gives
    its eigenvalues; ``stable`` = all ``|eigenvalue| < 1``.

    Args:
      cell, params: any ``Cell`` (a stack too; not a ``Layer``) and its parameters.
      x: ``(input_size,)`` the constant input; default zeros.
      initial_carries: a carry pytree with a leading axis ``(m,)``: the starting points
        (``initial_carries_from_states``, or any samples).
      tol: fixed-point tolerance on ``q``; default ``1e-12`` in float64, ``1e-8`` in float32.
      slow_tol: also keep slow points with ``tol <= q < slow_tol``; None: fixed points only.
      steps: optimiser steps.
      learning_rate: of the default optimiser ``optax.adam(learning_rate)``.
      optimizer: any ``optax.GradientTransformation`` (replaces the default).
      newton_steps: Newton polishing steps after the optimiser (0: none).
      merge_tol: distance under which two points are one.

    Returns:
      A ``FixedPoints`` (NumPy; sorted by ``q``). Not jittable (the number of points is data-dependent);
      the optimisation itself is one compiled program.

    References:
      Sussillo & Barak, Neural Computation 2013; Golub & Sussillo, JOSS 2018.
    """
    _check_step_cell(cell, "fixed_points")
    v.check_params(cell, params)
    flat0, unflatten = _batched_flat(cell, initial_carries)
    # the precision of the search: the cell's own carry and parameters (the step casts carries to the former)
    dtype = jnp.result_type(flatten_carry(cell.initial_carry())[0].dtype,
                            *[jnp.finfo(jnp.result_type(p)).dtype for p in jax.tree.leaves(params)])
    flat0 = flat0.astype(dtype)
    x = _constant_input(cell, x, dtype).astype(dtype)
    if tol is None:
        tol = 1e-12 if dtype == jnp.float64 else 1e-8
    for name, value in (("tol", tol), ("merge_tol", merge_tol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name}: expected a positive number, got {value!r}")
    if slow_tol is not None and (isinstance(slow_tol, bool) or not isinstance(slow_tol, (int, float))
                                 or not (np.isfinite(slow_tol) and slow_tol > tol)):
        raise ValueError(f"slow_tol: expected None or a number > tol = {tol}, got {slow_tol!r}")
    for name, value in (("steps", steps), ("newton_steps", newton_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
    if optimizer is None:
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
            raise ValueError(f"learning_rate: expected a positive number, got {learning_rate!r}")
    elif not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer: expected an optax.GradientTransformation, got {type(optimizer).__name__}")
    lr = jnp.asarray(learning_rate if optimizer is None else 0.0, dtype)
    points, q, jacs = _minimise(cell, optimizer, params, x, flat0, lr, steps, newton_steps)
    points, q, jacs = np.asarray(points), np.asarray(q, np.float64), np.asarray(jacs, np.float64)
    limit = tol if slow_tol is None else slow_tol
    keep = [i for i in np.argsort(q, kind="stable") if np.isfinite(q[i]) and q[i] < limit]
    chosen: list[int] = []
    for i in keep:  # greedy: lowest q first; a point within merge_tol of a chosen one is a duplicate
        if all(np.linalg.norm(points[i] - points[j]) >= merge_tol for j in chosen):
            chosen.append(i)
    idx = np.asarray(chosen, dtype=np.int64)
    n = points.shape[1]
    if idx.size:
        eig = np.linalg.eigvals(jacs[idx])
        order = np.argsort(-np.abs(eig), axis=1, kind="stable")
        eig = np.take_along_axis(eig, order, axis=1)
    else:
        eig = np.zeros((0, n), np.complex128)
    sel = jnp.asarray(points[idx] if idx.size else np.zeros((0, n), points.dtype))
    carries = jax.vmap(unflatten)(sel) if idx.size else jax.tree.map(
        lambda r: np.zeros((0,) + r.shape, r.dtype), cell.initial_carry())
    return FixedPoints(
        carries=jax.tree.map(np.asarray, carries),
        points=points[idx] if idx.size else np.zeros((0, n), points.dtype),
        q=q[idx],
        eigenvalues=eig,
        stable=np.all(np.abs(eig) < 1.0, axis=1),
        fixed=q[idx] < tol,
        tol=float(tol),
        num_initial=int(flat0.shape[0]),
    )


@functools.partial(jax.jit, static_argnums=(0, 1))
def _minimise(cell, optimizer, params, x, flat0, lr, steps, newton_steps):
    """Compiled once per (cell, optimizer): the default Adam's ``lr`` and the step counts are traced values."""
    unflatten = flatten_carry(cell.initial_carry())[1]
    f = _flat_step(cell, params, unflatten)
    optimizer = optax.adam(lr) if optimizer is None else optimizer

    def q_one(c):
        r = f(c, x) - c
        return 0.5 * jnp.sum(r * r)

    def total(cs):
        return jnp.sum(jax.vmap(q_one)(cs))

    def opt_body(_, state):
        cs, opt_state = state
        grads = jax.grad(total)(cs)
        updates, opt_state = optimizer.update(grads, opt_state, cs)
        return optax.apply_updates(cs, updates), opt_state

    cs, _ = jax.lax.fori_loop(0, steps, opt_body, (flat0, optimizer.init(flat0)))
    eye = jnp.eye(cs.shape[1], dtype=cs.dtype)

    def newton_one(_, c):
        r = f(c, x) - c
        jac = jax.jacfwd(f)(c, x)
        step = jnp.linalg.solve(jac - eye, r)
        trial = c - step
        better = jnp.all(jnp.isfinite(trial)) & (q_one(trial) < q_one(c))
        return jnp.where(better, trial, c)

    cs = jax.vmap(lambda c: jax.lax.fori_loop(0, newton_steps, newton_one, c))(cs)
    jacs = jax.vmap(lambda c: jax.jacfwd(f)(c, x))(cs)
    return cs, jax.vmap(q_one)(cs), jacs


def flossing_loss(
    cell: Cell,
    params: Any,
    xs: jax.Array,
    k: int,
    *,
    transient: int = 0,
    carry: Any = None,
    key: jax.Array | None = None,
) -> jax.Array:
    """Gradient-flossing loss ``sum_{i<=k} lambda_i^2`` of the trajectory driven by ``xs``; differentiable.

    ``lambda_i = mean_{t >= transient} log R_t[i, i]`` with ``Q_t R_t =
    qr(J_t Q_{t-1})`` exactly as in ``rnnjax.gradflow.lyapunov_spectrum``
    (random orthonormal ``Q_0`` from ``key``, ``J_t Q`` by Jacobian-vector
    products, signs fixed so ``diag(R_t) >= 0``; the frame is evolved through
    the transient, which is left out of the average). The QR stays inside the
    scan, so ``jax.grad`` differentiates through it (Engelken 2023, Alg. 1):
    minimising this loss drives the top ``k`` exponents towards 0, the
    marginally stable regime in which gradients neither vanish nor explode.

    Args:
      cell, params: a cell and its parameters (differentiate with respect to ``params``).
      xs: ``(time, input_size)`` one input sequence (``jax.vmap`` for a batch).
      k: number of exponents, ``1 <= k <= n = carry_size(cell)``.
      transient: leading steps left out of the average, ``0 <= transient < time``.
      carry: initial carry; default ``cell.initial_carry()``.
      key: PRNG key of the initial frame; default ``jax.random.key(0)``.

    Returns:
      Real scalar. Pure and jittable (``k`` and ``transient`` static).

    References:
      Engelken, "Gradient flossing", NeurIPS 2023, arXiv:2312.17306.
    """
    xs, carry = _prepare(cell, params, xs, carry, "flossing_loss")
    n, time = flatten_carry(carry)[0].shape[0], xs.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k: expected an integer in [1, {n}] (the carry has {n} real entries), got {k!r}")
    if isinstance(transient, bool) or not isinstance(transient, int) or not 0 <= transient < time:
        raise ValueError(f"transient: expected an integer in [0, {time}) (xs has {time} steps), got {transient!r}")
    key = jax.random.key(0) if key is None else key
    exps = _exponents(cell, k, transient, params, xs, carry, key)
    return jnp.sum(exps ** 2)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _exponents(cell, k, transient, params, xs, carry, key):
    """The top ``k`` exponents in QR order (unsorted), differentiable in ``params``."""
    vec, unflatten = flatten_carry(carry)
    time = xs.shape[0]
    q0, _ = jnp.linalg.qr(jax.random.normal(key, (vec.shape[0], k), vec.dtype))
    stepper, weights = prepare(cell, params)

    def f(u, x):
        return flatten_carry(stepper.step(weights, unflatten(u), x)[0])[0]

    def body(state, inp):
        c, q = state
        x, t = inp
        c_next, lin = jax.linearize(lambda u: f(u, x), c)
        q, r = jnp.linalg.qr(jax.vmap(lin, in_axes=1, out_axes=1)(q))
        d = jnp.diagonal(r)
        sign = jax.lax.stop_gradient(jnp.where(d < 0, -1.0, 1.0)).astype(q.dtype)
        q = q * sign
        logs = jnp.where(t >= transient, jnp.log(jnp.abs(d)), 0.0)
        return (c_next, q), logs

    _, logs = jax.lax.scan(body, (vec, q0), (xs, jnp.arange(time)))
    return jnp.sum(logs, axis=0) / (time - transient)
