"""Weight initialisers as pure functions of a PRNG key.

Every initialiser here has the signature of ``jax.nn.initializers``:
``init(key, shape, dtype=None) -> jax.Array`` (``None``: JAX's default float
dtype, float64 under ``jax_enable_x64``), so the two mix freely
(``rnnjax.lstm(..., rec_init=jax.nn.initializers.glorot_uniform())`` works).
Gains and scales must be finite positive numbers.

Matrices follow PyTorch's layout ``(out_features, in_features)``: a recurrent
matrix ``w_rec`` of an Elman cell is ``(hidden, hidden)`` and acts as
``w_rec @ h``. Gated cells apply an initialiser to each gate's square block
separately (an orthogonal ``w_rec`` of an LSTM is four orthogonal blocks).
"""

from __future__ import annotations

import math
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np


class Initializer(Protocol):
    """Callable ``(key, shape, dtype) -> jax.Array``."""

    def __call__(self, key: jax.Array, shape: tuple[int, ...], dtype=None) -> jax.Array: ...


def check_positive(name: str, value) -> float:
    """``value`` as a float if it is a finite positive number (not a bool), else raise naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or np.ndim(value) != 0:
        raise TypeError(f"{name}: expected a finite positive number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a finite positive number, got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name}: expected a finite positive number, got {value!r}")
    return number


def _float(dtype):
    """``dtype``, or JAX's default float dtype for None (read at call time)."""
    return jax.dtypes.canonicalize_dtype(jnp.float64) if dtype is None else dtype


def _check_matrix(shape, name):
    if len(shape) != 2:
        raise ValueError(f"{name}: expected a 2-D shape (rows, cols), got {tuple(shape)}")


def _check_square(shape, name):
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"{name}: expected a square shape (n, n), got {tuple(shape)}")


def zeros() -> Initializer:
    """All zeros."""

    def init(key, shape, dtype=None):
        del key
        dtype = _float(dtype)
        return jnp.zeros(shape, dtype)

    return init


def constant(value: float) -> Initializer:
    """All entries equal to ``value``."""

    def init(key, shape, dtype=None):
        del key
        dtype = _float(dtype)
        return jnp.full(shape, value, dtype)

    return init


def orthogonal(gain: float = 1.0) -> Initializer:
    """A (semi-)orthogonal matrix times ``gain`` (Saxe et al. 2013).

    For a square matrix every singular value equals ``gain``, so a linear RNN
    with ``w_rec = orthogonal(g)`` scales gradients by exactly ``g`` per step.
    Sampled as the Q factor of a Gaussian matrix with the signs of diag(R)
    absorbed, which makes Q Haar-distributed.
    """
    gain = check_positive("gain", gain)

    def init(key, shape, dtype=None):
        dtype = _float(dtype)
        _check_matrix(shape, "orthogonal")
        rows, cols = shape
        n, m = max(rows, cols), min(rows, cols)
        a = jax.random.normal(key, (n, m), jnp.float64 if dtype == jnp.float64 else jnp.float32)
        q, r = jnp.linalg.qr(a)
        q = q * jnp.sign(jnp.diagonal(r))[None, :]
        if rows < cols:
            q = q.T
        return (gain * q).astype(dtype)

    return init


def identity(gain: float = 1.0) -> Initializer:
    """``gain * I`` (IRNN, Le, Jaitly & Hinton 2015)."""
    gain = check_positive("gain", gain)

    def init(key, shape, dtype=None):
        del key
        dtype = _float(dtype)
        _check_square(shape, "identity")
        return gain * jnp.eye(shape[0], dtype=dtype)

    return init


def normal(stddev: float = 1.0) -> Initializer:
    """Entries i.i.d. N(0, stddev^2)."""
    stddev = check_positive("stddev", stddev)

    def init(key, shape, dtype=None):
        dtype = _float(dtype)
        return stddev * jax.random.normal(key, shape, dtype)

    return init


def random_gain(gain: float = 1.0) -> Initializer:
    """Entries i.i.d. N(0, gain^2 / fan_in): the random network of the edge-of-chaos studies.

    For a tanh network with these weights the mean-field transition between
    ordered and chaotic dynamics lies at ``gain ~ 1`` (Engelken et al. 2020).
    """
    gain = check_positive("gain", gain)

    def init(key, shape, dtype=None):
        dtype = _float(dtype)
        _check_matrix(shape, "random_gain")
        return (gain / math.sqrt(shape[1])) * jax.random.normal(key, shape, dtype)

    return init


def lecun_normal(gain: float = 1.0) -> Initializer:
    """Truncated normal with variance ``gain^2 / fan_in`` (fan_in = columns)."""
    gain = check_positive("gain", gain)

    def init(key, shape, dtype=None):
        dtype = _float(dtype)
        _check_matrix(shape, "lecun_normal")
        # Same variance correction as jax.nn.initializers.variance_scaling.
        std = gain / math.sqrt(shape[1]) / 0.87962566103423978
        return std * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)

    return init


def uniform(scale: float) -> Initializer:
    """Entries i.i.d. U(-scale, scale)."""
    scale = check_positive("scale", scale)

    def init(key, shape, dtype=None):
        dtype = _float(dtype)
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


def torch_uniform(hidden_size: int) -> Initializer:
    """PyTorch's default for every RNN tensor: U(-1/sqrt(H), 1/sqrt(H))."""
    if hidden_size <= 0:
        raise ValueError(f"hidden_size: expected a positive integer, got {hidden_size}")
    return uniform(1.0 / math.sqrt(hidden_size))


def spectral_radius(radius: float, base: Initializer | None = None) -> Initializer:
    """Draw from ``base`` (default ``random_gain(1)``) and rescale to spectral radius ``radius``.

    The spectral radius is max |eigenvalue|; Pascanu et al. (2013) used 0.95.
    The eigenvalues are computed on the host (``jax.pure_callback``), so this also works under jit on GPU.
    """
    radius = check_positive("radius", radius)
    base = random_gain(1.0) if base is None else base

    def init(key, shape, dtype=None):
        dtype = _float(dtype)
        _check_square(shape, "spectral_radius")
        w = base(key, shape, dtype)
        rho = jax.pure_callback(
            lambda m: np.asarray(np.max(np.abs(np.linalg.eigvals(m))), m.dtype),
            jax.ShapeDtypeStruct((), w.dtype),
            w,
        )
        return (w * (radius / rho)).astype(dtype)

    return init


def max_singular_value(sigma: float, base: Initializer | None = None) -> Initializer:
    """Draw from ``base`` (default ``random_gain(1)``) and rescale so the largest singular value is ``sigma``."""
    sigma = check_positive("sigma", sigma)
    base = random_gain(1.0) if base is None else base

    def init(key, shape, dtype=None):
        dtype = _float(dtype)
        _check_matrix(shape, "max_singular_value")
        w = base(key, shape, dtype)
        s = jnp.linalg.norm(w, ord=2)
        return (w * (sigma / s)).astype(dtype)

    return init


def scaled(gain: float, base: Initializer) -> Initializer:
    """``gain * base(key, shape, dtype)``."""
    gain = check_positive("gain", gain)

    def init(key, shape, dtype=None):
        dtype = _float(dtype)
        return (gain * base(key, shape, dtype)).astype(dtype)

    return init


def chrono(t_max: float) -> Initializer:
    """Chrono bias for an LSTM's ``(4H,)`` bias in gate order i, f, g, o (Tallec & Ollivier, ICLR 2018).

    ``b_f ~ log U([1, t_max - 1])``, ``b_i = -b_f``, ``b_g = b_o = 0``: the forget
    gates start with characteristic memory times spread up to ``t_max`` steps.
    """
    if not t_max > 2:
        raise ValueError(f"t_max: expected a number > 2 (the longest dependency in steps), got {t_max}")

    def init(key, shape, dtype=None):
        dtype = _float(dtype)
        if len(shape) != 1 or shape[0] % 4:
            raise ValueError(f"chrono: expected an LSTM bias shape (4 * hidden,), got {tuple(shape)}")
        h = shape[0] // 4
        b_f = jnp.log(jax.random.uniform(key, (h,), dtype, 1.0, t_max - 1.0))
        zeros_ = jnp.zeros((h,), dtype)
        return jnp.concatenate([-b_f, b_f, zeros_, zeros_])

    return init


def blockwise(init: Initializer, blocks: int) -> Initializer:
    """Apply ``init`` to each of ``blocks`` row blocks of a ``(blocks * H, n)`` matrix.

    Gated cells stack their gates' matrices along the rows; this keeps, e.g.,
    each gate's recurrent block orthogonal.
    """

    def wrapped(key, shape, dtype=None):
        dtype = _float(dtype)
        _check_matrix(shape, "blockwise")
        if shape[0] % blocks:
            raise ValueError(f"blockwise: {shape[0]} rows do not split into {blocks} blocks")
        keys = jax.random.split(key, blocks)
        return jnp.concatenate([init(k, (shape[0] // blocks, shape[1]), dtype) for k in keys], axis=0)

    return wrapped

