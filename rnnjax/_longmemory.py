"""Long-memory cells: expRNN, coRNN, IndRNN, AntisymmetricRNN.

Each keeps gradients from vanishing or exploding over long sequences by the
structure of its recurrence rather than by gates:

- ``exprnn``: an orthogonal recurrent matrix ``W = expm(a - a.T)`` for any
  ``a`` (Lezcano-Casado & Martinez-Rubio 2019);
- ``cornn``: a discretised system of coupled damped oscillators, whose
  states and gradients stay bounded (Rusch & Mishra 2021);
- ``indrnn``: an elementwise recurrence ``u * h`` with ``|u|`` bounded so
  that a gradient grows by at most ``max_gain`` over ``t_max`` steps
  (Li et al. 2018);
- ``antisymmetric``: a forward-Euler step of an ODE whose Jacobian
  ``w - w.T - gamma I`` has eigenvalues with real part ``-gamma``
  (Chang et al. 2019).

The matrix or vector the step reads is derived from the raw parameters by
the cell's ``parametrization`` (``rnnjax.Parametrization``): ``rnnjax.unroll``
computes it once per sequence, outside the scan, and the constraint holds
after any optimiser update because the optimiser only ever sees the raw
parameters. ``rnnjax.gradflow.recurrent_diagnostics`` reports the derived
matrix (``rnnjax.prepare(cell, params)[1]`` gives it too).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import initializers as inits
from rnnjax._cells import Cell, _check_dtype, _check_size, _matvec, parametrized_cell

INITS = ("henaff", "cayley")


def _check_nonnegative(name: str, value) -> float:
    """``value`` as a float if it is a finite number >= 0 (not a bool), else raise naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or np.ndim(value) != 0:
        raise TypeError(f"{name}: expected a finite number >= 0, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a finite number >= 0, got {value!r}") from None
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return number


# ------------------------------------------------------------------------- expRNN


class ExpRNNParams(NamedTuple):
    """expRNN parameters: ``w_in (H, I)``, ``a (H, H)`` unconstrained, ``b (H,)`` the modReLU bias.

    The recurrent matrix is ``W = expm(a - a.T)`` (orthogonal for any ``a``).
    """

    w_in: jax.Array
    a: jax.Array
    b: jax.Array


class ExpRNNWeights(NamedTuple):
    """expRNN step weights (``rnnjax.prepare``): ``w_in (H, I)``, ``w_rec = expm(a - a.T) (H, H)``, ``b (H,)``."""

    w_in: jax.Array
    w_rec: jax.Array
    b: jax.Array


def modrelu(z: jax.Array, b: jax.Array) -> jax.Array:
    """modReLU ``sign(z) * relu(|z| + b)`` (Arjovsky, Shah & Bengio, ICML 2016), elementwise."""
    return jnp.sign(z) * jax.nn.relu(jnp.abs(z) + b)


def _rotation_log(key, n: int, init: str, dtype) -> jax.Array:
    """Strictly upper-triangular ``a (n, n)``: ``a - a.T`` is block-diagonal with 2x2 blocks ``[[0, t], [-t, 0]]``.

    Henaff et al. 2016: ``t ~ U(-pi, pi)``. Cayley (Helfrich et al. 2018):
    ``t = -sqrt((1 - cos s) / (1 + cos s)) = -tan(s / 2)``, ``s ~ U(0, pi/2)``.
    An odd ``n`` leaves the last coordinate alone (eigenvalue 1).
    """
    k = n // 2
    if init == "henaff":
        t = jax.random.uniform(key, (k,), dtype, -math.pi, math.pi)
    else:
        s = jax.random.uniform(key, (k,), dtype, 0.0, math.pi / 2)
        t = -jnp.sqrt((1.0 - jnp.cos(s)) / (1.0 + jnp.cos(s)))
    rows = jnp.arange(k) * 2
    return jnp.zeros((n, n), dtype).at[rows, rows + 1].set(t)


def exprnn(
    input_size: int,
    hidden_size: int,
    *,
    init: str = "henaff",
    angle_scale: float = 1.0,
    in_init: inits.Initializer | None = None,
    dtype=None,
) -> Cell:
    """expRNN: ``h' = modrelu(W_in x + W h, b)`` with ``W = expm(a - a.T)`` orthogonal; ``y = h'``.

    ``W`` is computed once per unroll by the cell's parametrization
    (``jax.scipy.linalg.expm``); an optimiser updates the unconstrained ``a``,
    so ``W`` stays orthogonal after any step.

    Initialisation, as the reference code: ``a`` strictly upper triangular
    with ``a - a.T`` block-diagonal 2x2 rotations (``init="henaff"``: angles
    U(-pi, pi); ``"cayley"``: ``-tan(s/2)``, s ~ U(0, pi/2)); ``w_in`` Kaiming
    normal N(0, 2/I); ``b`` ~ U(-0.01, 0.01). (The reference multiplies
    ``h @ W``, i.e. uses ``W.T``: the same eigenvalues, mirrored rotations.)

    Paper defaults (reference code): copy task hidden 190, L = 1000, batch 128,
    RMSprop lr 2e-4 and a 10x smaller lr for ``a`` (2e-5); pixel MNIST hidden
    170, lr 7e-4, lr of ``a`` 7e-5, batch 128. The reference's copy script defaults to
    ``init="henaff"``, its MNIST script to ``"cayley"``.

    Args:
      input_size: I.
      hidden_size: H.
      init: ``"henaff"`` or ``"cayley"``, the initialisation of ``a``.
      angle_scale: multiplies the initial ``a`` (the rotation angles of ``W``;
        ``W`` stays orthogonal; < 1 starts closer to the identity). 1 is the paper's.
      in_init: initialiser of ``w_in (H, I)``; default Kaiming normal N(0, 2/I).
      dtype: parameter and state dtype; default JAX's default float dtype.

    Returns:
      A ``Cell`` with ``ExpRNNParams``, carry ``h: (H,)`` and a parametrization
      whose weights are ``ExpRNNWeights``.

    References:
      Lezcano-Casado & Martinez-Rubio, "Cheap orthogonal constraints in neural
      networks: a simple parametrization of the orthogonal and unitary
      group", ICML 2019 (arXiv:1901.08428); Henaff, Szlam & LeCun, ICML 2016;
      Helfrich, Willmott & Ye, ICML 2018 (Cayley); Arjovsky et al. 2016 (modReLU).
    """
    input_size = _check_size("input_size", input_size)
    hidden_size = _check_size("hidden_size", hidden_size)
    if init not in INITS:
        raise ValueError(f"init: expected one of {INITS}, got {init!r}")
    angle_scale = inits.check_positive("angle_scale", angle_scale)
    dtype = _check_dtype(dtype)
    in_init = inits.normal(math.sqrt(2.0 / input_size)) if in_init is None else in_init
    h_ = hidden_size

    def init_fn(key):
        k_in, k_a, k_b = jax.random.split(key, 3)
        return ExpRNNParams(
            w_in=in_init(k_in, (h_, input_size), dtype),
            a=angle_scale * _rotation_log(k_a, h_, init, dtype),
            b=jax.random.uniform(k_b, (h_,), dtype, -0.01, 0.01),
        )

    def initial_carry():
        return jnp.zeros((h_,), dtype)

    def prepare(params):
        return ExpRNNWeights(params.w_in, jax.scipy.linalg.expm(params.a - params.a.T), params.b)

    def step(w, h, x):
        h = modrelu(_matvec(w.w_in, x) + _matvec(w.w_rec, h), w.b)
        return h, h

    return parametrized_cell(init_fn, initial_carry, prepare, step, input_size, hidden_size, "exprnn")


# -------------------------------------------------------------------------- coRNN


class CoRNNParams(NamedTuple):
    """coRNN parameters: ``w_in (H, I)`` (V), ``w_y (H, H)`` (W), ``w_z (H, H)`` (𝒲), ``b (H,)``."""

    w_in: jax.Array
    w_y: jax.Array
    w_z: jax.Array
    b: jax.Array


class CoRNNState(NamedTuple):
    """coRNN carry: positions ``y (H,)`` (the output) and velocities ``z (H,)``."""

    y: jax.Array
    z: jax.Array


def cornn(
    input_size: int,
    hidden_size: int,
    *,
    dt: float = 0.042,
    gamma: float = 2.7,
    epsilon: float = 4.7,
    rec_scale: float = 1.0,
    dtype=None,
) -> Cell:
    """Coupled oscillatory RNN: a damped, driven oscillator per unit, discretised with step ``dt``.

    ``z' = z + dt * (tanh(w_y y + w_z z + w_in x + b) - gamma * y - epsilon * z)``,
    ``y' = y + dt * z'``; output ``y'`` (the reference code's cell).

    Initialisation, as the reference code (one PyTorch ``nn.Linear`` over
    ``[x, z, y]``): every weight and ``b`` ~ U(-k, k), ``k = 1/sqrt(I + 2H)``;
    ``rec_scale`` multiplies the bound of ``w_y`` and ``w_z``.

    Paper defaults (reference code): sMNIST hidden 256, Adam lr 0.0021,
    ``dt = 0.042, gamma = 2.7, epsilon = 4.7`` (this function's defaults);
    psMNIST ``dt = 0.076, gamma = 0.4, epsilon = 8.0`` (lr 0.0054); adding
    problem hidden 128, lr 0.02, ``dt = 0.06, gamma = 66, epsilon = 15``.

    Args:
      input_size: I.
      hidden_size: H.
      dt: time step, > 0.
      gamma: stiffness (restoring force per unit displacement), >= 0.
      epsilon: damping, >= 0.
      rec_scale: multiplies the initial bound of ``w_y`` and ``w_z`` (1: the reference's).
      dtype: parameter and state dtype; default JAX's default float dtype.

    Returns:
      A ``Cell`` with ``CoRNNParams`` and carry ``CoRNNState(y, z)``.

    References:
      Rusch & Mishra, "Coupled oscillatory recurrent neural network (coRNN):
      an accurate and (gradient) stable architecture for learning long time
      dependencies", ICLR 2021 (arXiv:2010.00951).
    """
    input_size = _check_size("input_size", input_size)
    hidden_size = _check_size("hidden_size", hidden_size)
    dt = inits.check_positive("dt", dt)
    gamma = _check_nonnegative("gamma", gamma)
    epsilon = _check_nonnegative("epsilon", epsilon)
    rec_scale = inits.check_positive("rec_scale", rec_scale)
    dtype = _check_dtype(dtype)
    h_ = hidden_size
    bound = 1.0 / math.sqrt(input_size + 2 * h_)

    def init(key):
        k_in, k_y, k_z, k_b = jax.random.split(key, 4)
        u = lambda k, shape, s=bound: jax.random.uniform(k, shape, dtype, -s, s)
        return CoRNNParams(
            w_in=u(k_in, (h_, input_size)),
            w_y=u(k_y, (h_, h_), rec_scale * bound),
            w_z=u(k_z, (h_, h_), rec_scale * bound),
            b=u(k_b, (h_,)),
        )

    def initial_carry():
        return CoRNNState(jnp.zeros((h_,), dtype), jnp.zeros((h_,), dtype))

    def step(params, carry, x):
        y, z = carry
        drive = jnp.tanh(_matvec(params.w_y, y) + _matvec(params.w_z, z) + _matvec(params.w_in, x) + params.b)
        z = z + dt * (drive - gamma * y - epsilon * z)
        y = y + dt * z
        return CoRNNState(y, z), y

    return Cell(init, initial_carry, step, input_size, hidden_size, "cornn")


# ------------------------------------------------------------------------- IndRNN


class IndRNNParams(NamedTuple):
    """IndRNN parameters: ``w_in (H, I)``, recurrent weights ``u (H,)`` (elementwise), ``b (H,)``.

    The step reads ``clip(u, -u_max, u_max)`` (the cell's parametrization); the
    prepared weights are an ``IndRNNParams`` with ``u`` clipped.
    """

    w_in: jax.Array
    u: jax.Array
    b: jax.Array


def indrnn_bound(t_max: float, max_gain: float = 2.0) -> float:
    """``u_max = max_gain ** (1 / t_max)``: ``|u| <= u_max`` lets a ReLU IndRNN's gradient grow by at most ``max_gain`` over ``t_max`` steps."""
    return inits.check_positive("max_gain", max_gain) ** (1.0 / inits.check_positive("t_max", t_max))


def indrnn(
    input_size: int,
    hidden_size: int,
    *,
    t_max: float = 784,
    max_gain: float = 2.0,
    u_range: tuple[float, float] | None = None,
    in_init: inits.Initializer | None = None,
    dtype=None,
) -> Cell:
    """Independently recurrent network: ``h' = relu(W_in x + u * h + b)`` (elementwise ``u``); ``y = h'``.

    Constraint (the paper's Sec. 3.1; the reference code's ``constrain_U``):
    ``dh_T/dh_t`` of one unit is ``prod_k u * relu'(.)``, at most ``|u|^(T-t)``,
    so ``|u| <= u_max = max_gain ** (1/t_max)`` keeps its growth over
    ``t_max`` steps below ``max_gain``. The cell's parametrization applies
    ``clip(u, -u_max, u_max)`` once per unroll, so the bound holds for any
    parameter update (the gradient of a clipped entry is zero while it stays
    outside; an update back inside restores it).

    Initialisation, as the reference code: ``u ~ U(0, u_max)`` (``u_range``
    overrides it: ``(max_gain ** (-1/t_max), u_max)`` is the reference's
    ``u_lastlayer_ini`` for a layer read only at the last step, long memory
    for every unit); ``w_in`` Kaiming uniform with ``a = 8``,
    U(+-sqrt(6 / (65 I))); ``b = 0``.

    Paper defaults: Adam, lr 2e-4; adding problem up to T = 5000 (two
    layers, 128 units); sequential MNIST ``t_max = 784``, 6 layers of 128
    units with batch normalisation, ``max_gain`` (the reference's ``MAG``) 2
    to 10 (the README: "2 or 10"; pixel MNIST script 5).

    Args:
      input_size: I.
      hidden_size: H.
      t_max: the memory T the bound is for (sequence length), > 0.
      max_gain: the largest gradient growth over ``t_max`` steps, > 0
        (``< 1`` forces decay).
      u_range: ``(low, high)`` of the uniform initialisation of ``u``; default
        ``(0, u_max)``. Values outside ``[-u_max, u_max]`` act as clipped.
      in_init: initialiser of ``w_in (H, I)``.
      dtype: parameter and state dtype; default JAX's default float dtype.

    Returns:
      A ``Cell`` with ``IndRNNParams`` and carry ``h: (H,)``, with the clip as
      its parametrization.

    References:
      Li, Li, Cook, Zhu & Gao, "Independently recurrent neural network
      (IndRNN): building a longer and deeper RNN", CVPR 2018 (arXiv:1803.04831).
    """
    input_size = _check_size("input_size", input_size)
    hidden_size = _check_size("hidden_size", hidden_size)
    u_max = indrnn_bound(t_max, max_gain)
    low, high = (0.0, u_max) if u_range is None else u_range
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"u_range: expected finite (low, high) with low < high, got {u_range!r}")
    dtype = _check_dtype(dtype)
    in_init = inits.uniform(math.sqrt(6.0 / (65.0 * input_size))) if in_init is None else in_init
    h_ = hidden_size

    def init(key):
        k_in, k_u = jax.random.split(key)
        return IndRNNParams(
            w_in=in_init(k_in, (h_, input_size), dtype),
            u=jax.random.uniform(k_u, (h_,), dtype, low, high),
            b=jnp.zeros((h_,), dtype),
        )

    def initial_carry():
        return jnp.zeros((h_,), dtype)

    def prepare(params):
        return params._replace(u=jnp.clip(params.u, -u_max, u_max))

    def step(w, h, x):
        h = jax.nn.relu(_matvec(w.w_in, x) + w.u * h + w.b)
        return h, h

    return parametrized_cell(init, initial_carry, prepare, step, input_size, hidden_size, "indrnn")


# ---------------------------------------------------------------- AntisymmetricRNN


class AntisymmetricParams(NamedTuple):
    """AntisymmetricRNN parameters: ``w_in (H, I)`` (V), ``w (H, H)`` unconstrained, ``b (H,)``."""

    w_in: jax.Array
    w: jax.Array
    b: jax.Array


class AntisymmetricWeights(NamedTuple):
    """AntisymmetricRNN step weights (``rnnjax.prepare``): ``w_in``, ``w_rec = w - w.T - gamma I (H, H)``, ``b``."""

    w_in: jax.Array
    w_rec: jax.Array
    b: jax.Array


def antisymmetric(
    input_size: int,
    hidden_size: int,
    *,
    eps: float = 0.01,
    gamma: float = 0.01,
    rec_std: float = 1.0,
    dtype=None,
) -> Cell:
    """AntisymmetricRNN: ``h' = h + eps * tanh((w - w.T - gamma I) h + w_in x + b)``; ``y = h'``.

    A forward-Euler step of ``dh/dt = tanh(M h + V x + b)`` with
    ``M = w - w.T - gamma I``: the eigenvalues of ``w - w.T`` are imaginary,
    so the ODE is stable and non-dissipative; the diffusion ``gamma`` moves
    them to real part ``-gamma`` so that the Euler step is stable too. ``M``
    is the cell's parametrization (computed once per unroll).

    Initialisation (the paper's Appendix C): ``w_in ~ N(0, 1/I)``,
    ``w ~ N(0, rec_std^2 / H)``, ``b = 0``.

    Paper defaults: the paper searched ``eps`` in {0.01, 0.1, 1}, ``gamma``
    in a small grid and ``sigma_w`` (``rec_std``) in {0, 1, 2, 4, 8, 16}
    (its Appendix C; pixel MNIST with 128 units); the defaults here,
    ``eps = gamma = 0.01``, ``rec_std = 1``, are from those grids.

    Args:
      input_size: I.
      hidden_size: H.
      eps: Euler step size, > 0.
      gamma: diffusion, >= 0.
      rec_std: sigma_w of the initial ``w``, > 0.
      dtype: parameter and state dtype; default JAX's default float dtype.

    Returns:
      A ``Cell`` with ``AntisymmetricParams``, carry ``h: (H,)`` and a
      parametrization whose weights are ``AntisymmetricWeights``.

    References:
      Chang, Chen, Haber & Chi, "AntisymmetricRNN: a dynamical system view on
      recurrent neural networks", ICLR 2019 (arXiv:1902.09689).
    """
    input_size = _check_size("input_size", input_size)
    hidden_size = _check_size("hidden_size", hidden_size)
    eps = inits.check_positive("eps", eps)
    gamma = _check_nonnegative("gamma", gamma)
    rec_std = inits.check_positive("rec_std", rec_std)
    dtype = _check_dtype(dtype)
    h_ = hidden_size

    def init(key):
        k_in, k_w = jax.random.split(key)
        return AntisymmetricParams(
            w_in=jax.random.normal(k_in, (h_, input_size), dtype) / math.sqrt(input_size),
            w=rec_std / math.sqrt(h_) * jax.random.normal(k_w, (h_, h_), dtype),
            b=jnp.zeros((h_,), dtype),
        )

    def initial_carry():
        return jnp.zeros((h_,), dtype)

    def prepare(params):
        w = params.w
        return AntisymmetricWeights(params.w_in, w - w.T - gamma * jnp.eye(h_, dtype=w.dtype), params.b)

    def step(w, h, x):
        h = h + eps * jnp.tanh(_matvec(w.w_rec, h) + _matvec(w.w_in, x) + w.b)
        return h, h

    return parametrized_cell(init, initial_carry, prepare, step, input_size, hidden_size, "antisymmetric")
