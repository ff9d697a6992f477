"""Modern recurrences whose carry obeys a linear recurrence: LRU, minGRU, minLSTM.

Each cell is an ordinary ``Cell`` (its ``step`` runs with the sequential
``rnnjax.unroll``) that also exposes its ``linear_recurrence``, so
``rnnjax.unroll(..., method="associative")`` evaluates it in O(log T) depth.

The ``linear_recurrence`` contract (see ``rnnjax.Cell``)::

    a, b, readout = cell.linear_recurrence(params, xs)     # xs: (T, input_size)
    # a, b: pytrees with the carry's structure, every leaf (T,) + leaf shape;
    # h_t = a_t * h_{t-1} + b_t elementwise (possibly complex);
    ys = readout(params, hs, xs)                            # hs: carries h_0..h_{T-1}
                                                            # after each step, stacked
    # ys: (T, output_size), ys[t] == cell.step(params, hs[t-1], xs[t])[1]
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import initializers as inits
from rnnjax._cells import Cell, _check_dtype, _check_size


def _complex_dtype(dtype):
    return jnp.complex128 if jnp.dtype(dtype) == jnp.float64 else jnp.complex64


# --------------------------------------------------------------------------- LRU


class LRUParams(NamedTuple):
    """Linear recurrent unit parameters (all real, so ``jax.grad`` and optax need no complex support).

    Attributes:
      nu_log: ``(H,)``, ``|lambda| = exp(-exp(nu_log))``.
      theta_log: ``(H,)``, ``arg(lambda) = exp(theta_log)``.
      gamma_log: ``(H,)``, input normalisation ``gamma = exp(gamma_log)``
        (initialised to ``sqrt(1 - |lambda|^2)``).
      b_re, b_im: ``(H, I)``, real and imaginary parts of the input matrix ``B``.
      c_re, c_im: ``(O, H)``, real and imaginary parts of the output matrix ``C``.
      d: ``(O, I)``, real skip (feed-through) matrix ``D``.
    """

    nu_log: jax.Array
    theta_log: jax.Array
    gamma_log: jax.Array
    b_re: jax.Array
    b_im: jax.Array
    c_re: jax.Array
    c_im: jax.Array
    d: jax.Array


def lru_eigenvalues(params: LRUParams) -> jax.Array:
    """The diagonal recurrence ``lambda = exp(-exp(nu_log) + i exp(theta_log))``, complex ``(H,)``."""
    return jnp.exp(-jnp.exp(params.nu_log) + 1j * jnp.exp(params.theta_log))


def lru(
    input_size: int,
    hidden_size: int,
    *,
    output_size: int | None = None,
    r_min: float = 0.9,
    r_max: float = 0.999,
    max_phase: float = 2 * math.pi,
    dtype=None,
) -> Cell:
    """Linear recurrent unit (Orvieto et al. 2023): a complex diagonal linear RNN.

    ``x' = lambda * x + gamma * (B u)`` (complex, elementwise),
    ``y = Re(C x') + D u``, with ``lambda = exp(-exp(nu_log) + i exp(theta_log))``
    (so ``|lambda| < 1`` always) and ``gamma = exp(gamma_log)``.

    Initialisation: ``|lambda|`` uniform on the ring ``r_min <= |lambda| <= r_max``
    (uniform in area, as in the paper), phase uniform in ``[0, max_phase]``,
    ``gamma = sqrt(1 - |lambda|^2)``; ``B_re, B_im ~ N(0, 1/(2 I))``,
    ``C_re, C_im ~ N(0, 1/H)``, ``D ~ N(0, 1/I)``.

    Args:
      input_size: I, width of ``u``.
      hidden_size: H, number of complex state units.
      output_size: O, width of ``y``; default H.
      r_min: smallest initial ``|lambda|``, in ``[0, r_max]``.
      r_max: largest initial ``|lambda|``, in ``(r_min, 1)``.
      max_phase: largest initial ``arg(lambda)``, in ``(0, 2 pi]``.
      dtype: real parameter dtype; default JAX's default float dtype (float64
        under ``jax_enable_x64``); the carry is the matching complex dtype.

    Returns:
      A ``Cell`` with ``LRUParams``, complex carry ``x: (H,)`` and a
      ``linear_recurrence`` (``method="associative"`` works).

    References:
      Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu, De, "Resurrecting
      recurrent neural networks for long sequences", ICML 2023.
    """
    input_size = _check_size("input_size", input_size)
    hidden_size = _check_size("hidden_size", hidden_size)
    output_size = hidden_size if output_size is None else _check_size("output_size", output_size)
    dtype = _check_dtype(dtype)
    if not 0.0 <= r_min < r_max < 1.0:
        raise ValueError(f"r_min, r_max: expected 0 <= r_min < r_max < 1, got r_min={r_min}, r_max={r_max}")
    if not 0.0 < max_phase <= 2 * math.pi + 1e-12:
        raise ValueError(f"max_phase: expected a value in (0, 2*pi], got {max_phase}")
    cdtype = _complex_dtype(dtype)
    h_, i_, o_ = hidden_size, input_size, output_size

    def init(key):
        k_r, k_p, k_bre, k_bim, k_cre, k_cim, k_d = jax.random.split(key, 7)
        u1 = jax.random.uniform(k_r, (h_,), dtype)
        # Uniform in area on the ring: |lambda|^2 ~ U(r_min^2, r_max^2).
        nu = -0.5 * jnp.log(u1 * (r_max**2 - r_min**2) + r_min**2)
        tiny = jnp.finfo(dtype).tiny
        theta = max_phase * jax.random.uniform(k_p, (h_,), dtype, minval=tiny, maxval=1.0)
        mod = jnp.exp(-nu)
        return LRUParams(
            nu_log=jnp.log(nu),
            theta_log=jnp.log(theta),
            gamma_log=0.5 * jnp.log1p(-(mod**2)),
            b_re=jax.random.normal(k_bre, (h_, i_), dtype) / math.sqrt(2 * i_),
            b_im=jax.random.normal(k_bim, (h_, i_), dtype) / math.sqrt(2 * i_),
            c_re=jax.random.normal(k_cre, (o_, h_), dtype) / math.sqrt(h_),
            c_im=jax.random.normal(k_cim, (o_, h_), dtype) / math.sqrt(h_),
            d=jax.random.normal(k_d, (o_, i_), dtype) / math.sqrt(i_),
        )

    def initial_carry():
        return jnp.zeros((h_,), cdtype)

    def _input(params, u):
        # gamma * (B u) for u of shape (..., I) -> (..., H) complex.
        bu = (u @ params.b_re.T) + 1j * (u @ params.b_im.T)
        return jnp.exp(params.gamma_log) * bu

    def _readout(params, x, u):
        # Re(C x) = C_re Re(x) - C_im Im(x).
        return jnp.real(x) @ params.c_re.T - jnp.imag(x) @ params.c_im.T + u @ params.d.T

    def step(params, x, u):
        x = lru_eigenvalues(params) * x + _input(params, u)
        return x, _readout(params, x, u)

    def linear_recurrence(params, us):
        b = _input(params, us)
        a = jnp.broadcast_to(lru_eigenvalues(params), b.shape).astype(b.dtype)
        return a, b, _readout

    return Cell(init, initial_carry, step, i_, o_, "lru", linear_recurrence)


# ------------------------------------------------------ minGRU and minLSTM


def _input_gated_cell(name, input_size, hidden_size, dtype, init, coefficients) -> Cell:
    """The ``Cell`` shared by minGRU and minLSTM: ``h' = a * h + b``, ``y = h'``.

    ``coefficients(params, x) -> (a, b)``, gates of the input only, for ``x: (I,)``
    or ``xs: (T, I)`` alike; the carry is ``h: (H,)`` of ``dtype``.
    """

    def initial_carry():
        return jnp.zeros((hidden_size,), dtype)

    def step(params, h, x):
        a, b = coefficients(params, x)
        h = a * h + b
        return h, h

    def readout(params, hs, xs):
        del params, xs
        return hs

    def linear_recurrence(params, xs):
        a, b = coefficients(params, xs)
        return a, b, readout

    return Cell(init, initial_carry, step, input_size, hidden_size, name, linear_recurrence)


# ------------------------------------------------------------------- minGRU


class MinGRUParams(NamedTuple):
    """minGRU parameters: update gate ``w_z (H, I)``, ``b_z (H,)``; candidate ``w_h (H, I)``, ``b_h (H,)``."""

    w_z: jax.Array
    b_z: jax.Array
    w_h: jax.Array
    b_h: jax.Array


def mingru(
    input_size: int,
    hidden_size: int,
    *,
    in_init: inits.Initializer | None = None,
    gate_bias: float = 0.0,
    dtype=None,
) -> Cell:
    """minGRU (Feng et al. 2024): a GRU whose gates see only the input.

    ``z = sigmoid(W_z x + b_z)``, ``h~ = W_h x + b_h``,
    ``h' = (1 - z) * h + z * h~``; ``y = h'``. Linear in ``h`` with
    ``a_t = 1 - z_t``, ``b_t = z_t * h~_t``.

    Args:
      input_size: I.
      hidden_size: H.
      in_init: initialiser of ``w_z`` and ``w_h`` ``(H, I)``; default LeCun normal.
      gate_bias: initial ``b_z`` (all entries). Negative values start with
        ``1 - z`` closer to 1, i.e. a longer memory: at zero input the carry
        decays by ``sigmoid(-gate_bias)`` per step.
      dtype: parameter and state dtype; default JAX's default float dtype.

    Returns:
      A ``Cell`` with ``MinGRUParams``, carry ``h: (H,)`` and a ``linear_recurrence``.

    References:
      Feng, Tung, Ahmed, Bengio, Hajimirsadeghi, "Were RNNs all we needed?",
      arXiv:2410.01201, 2024.
    """
    input_size = _check_size("input_size", input_size)
    hidden_size = _check_size("hidden_size", hidden_size)
    dtype = _check_dtype(dtype)
    in_init = inits.lecun_normal() if in_init is None else in_init
    h_ = hidden_size

    def init(key):
        k_z, k_h = jax.random.split(key)
        return MinGRUParams(
            w_z=in_init(k_z, (h_, input_size), dtype),
            b_z=jnp.full((h_,), gate_bias, dtype),
            w_h=in_init(k_h, (h_, input_size), dtype),
            b_h=jnp.zeros((h_,), dtype),
        )

    def coefficients(params, x):
        z = jax.nn.sigmoid(x @ params.w_z.T + params.b_z)
        h_tilde = x @ params.w_h.T + params.b_h
        return 1.0 - z, z * h_tilde

    return _input_gated_cell("mingru", input_size, hidden_size, dtype, init, coefficients)


# ------------------------------------------------------------------ minLSTM


class MinLSTMParams(NamedTuple):
    """minLSTM parameters: forget gate ``w_f, b_f``, input gate ``w_i, b_i``, candidate ``w_h, b_h``.

    Weights are ``(H, I)``, biases ``(H,)``.
    """

    w_f: jax.Array
    b_f: jax.Array
    w_i: jax.Array
    b_i: jax.Array
    w_h: jax.Array
    b_h: jax.Array


def minlstm(
    input_size: int,
    hidden_size: int,
    *,
    in_init: inits.Initializer | None = None,
    forget_bias: float = 0.0,
    input_bias: float = 0.0,
    dtype=None,
) -> Cell:
    """minLSTM (Feng et al. 2024): an LSTM with input-only, normalised gates and no cell/output split.

    ``f = sigmoid(W_f x + b_f)``, ``i = sigmoid(W_i x + b_i)``, ``h~ = W_h x + b_h``,
    ``f' = f / (f + i)``, ``i' = i / (f + i)``, ``h' = f' * h + i' * h~``; ``y = h'``.
    Linear in ``h`` with ``a_t = f'_t``, ``b_t = i'_t * h~_t``.

    Args:
      input_size: I.
      hidden_size: H.
      in_init: initialiser of ``w_f, w_i, w_h`` ``(H, I)``; default LeCun normal.
      forget_bias: initial ``b_f`` (larger: longer memory).
      input_bias: initial ``b_i``.
      dtype: parameter and state dtype; default JAX's default float dtype.

    Returns:
      A ``Cell`` with ``MinLSTMParams``, carry ``h: (H,)`` and a ``linear_recurrence``.

    References:
      Feng, Tung, Ahmed, Bengio, Hajimirsadeghi, "Were RNNs all we needed?",
      arXiv:2410.01201, 2024.
    """
    input_size = _check_size("input_size", input_size)
    hidden_size = _check_size("hidden_size", hidden_size)
    dtype = _check_dtype(dtype)
    in_init = inits.lecun_normal() if in_init is None else in_init
    h_ = hidden_size

    def init(key):
        k_f, k_i, k_h = jax.random.split(key, 3)
        return MinLSTMParams(
            w_f=in_init(k_f, (h_, input_size), dtype),
            b_f=jnp.full((h_,), forget_bias, dtype),
            w_i=in_init(k_i, (h_, input_size), dtype),
            b_i=jnp.full((h_,), input_bias, dtype),
            w_h=in_init(k_h, (h_, input_size), dtype),
            b_h=jnp.zeros((h_,), dtype),
        )

    def coefficients(params, x):
        f = jax.nn.sigmoid(x @ params.w_f.T + params.b_f)
        i = jax.nn.sigmoid(x @ params.w_i.T + params.b_i)
        h_tilde = x @ params.w_h.T + params.b_h
        total = f + i
        return f / total, (i / total) * h_tilde

    return _input_gated_cell("minlstm", input_size, hidden_size, dtype, init, coefficients)
