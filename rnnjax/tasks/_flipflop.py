"""The 3-bit flip-flop task (Sussillo & Barak 2013): store the sign of the last pulse on each channel.

At every step each of ``n_bits`` input channels independently carries a
pulse with probability ``p`` (``pulse_prob``), of sign +1 or -1 with equal
probability, else 0. Output channel ``j`` at step ``t`` is the sign of the
last pulse on channel ``j`` at a step ``<= t`` (0 before the first one). A
network that solves it holds ``2^n_bits`` memories, which a trained network
stores as that many stable fixed points (``rnnjax.dynamics.fixed_points``).

Baseline: targets have mean 0 by symmetry, so the best constant predictor is
0, whose MSE is the fraction of steps after a channel's first pulse:
``P(y_t != 0) = 1 - (1 - p)^(t + 1)``, averaged over ``t < T``:
``1 - (1 - p) (1 - (1 - p)^T) / (p T)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnjax._batch import Batch
from rnnjax.tasks._base import Task
from rnnjax.tasks._synthetic import _cached_sampler, _fixed, check_positive_int


def flipflop_baseline(seq_len: int, pulse_prob: float) -> float:
    """MSE of predicting 0: ``1 - (1 - p)(1 - (1 - p)^T) / (p T)``, the mean over ``t < T`` of ``1 - (1 - p)^(t+1)``."""
    p, T = float(pulse_prob), int(seq_len)
    return 1.0 - (1.0 - p) * (1.0 - (1.0 - p) ** T) / (p * T)


def hold_last(pulses: jax.Array) -> jax.Array:
    """``(B, T, C)`` pulses in {-1, 0, 1} -> ``(B, T, C)`` the sign of the last nonzero pulse at a step ``<= t``."""

    def body(held, pulse):
        held = jnp.where(pulse != 0, pulse, held)
        return held, held

    _, out = jax.lax.scan(body, jnp.zeros_like(pulses[:, 0]), jnp.swapaxes(pulses, 0, 1))
    return jnp.swapaxes(out, 0, 1)


@_cached_sampler
def _flipflop_sampler(T, n_bits, pulse_prob):
    def sample(key: jax.Array, batch_size: int) -> Batch:
        k_on, k_sign = jax.random.split(key)
        on = jax.random.bernoulli(k_on, pulse_prob, (batch_size, T, n_bits))
        sign = jnp.where(jax.random.bernoulli(k_sign, 0.5, (batch_size, T, n_bits)), 1.0, -1.0)
        pulses = jnp.where(on, sign, 0.0).astype(jnp.float32)
        return Batch(pulses, hold_last(pulses))

    return sample


def flipflop(seq_len: int | None = None, seed: int = 0, *, n_bits: int = 3, pulse_prob: float = 0.05,
             eval_size: int = 500) -> Task:
    """The n-bit flip-flop task (many-to-many regression; 3 bits by default).

    Inputs ``(B, T, n_bits)``: at each step each channel is ``+1`` or ``-1``
    with probability ``pulse_prob / 2`` each, else 0. Targets ``(B, T,
    n_bits)``: channel ``j`` at step ``t`` holds the sign of the last pulse on
    channel ``j`` at a step ``<= t`` (0 before the first). Predicting 0 (the
    best constant) scores the baseline MSE ``1 - (1 - p)(1 - (1 - p)^T) / (p T)``
    (0.811 for ``T = 100``, ``p = 0.05``).

    Args:
      seq_len: T, steps (default 100).
      seed: fixes the evaluation set.
      n_bits: number of channels (memories ``2^n_bits``).
      pulse_prob: p, probability of a pulse per channel and step, in (0, 1).
      eval_size: number of evaluation sequences.

    Returns:
      A ``Task``: ``inputs`` and ``targets`` ``(B, T, n_bits)`` float32, loss ``"mse"``.

    References:
      Sussillo & Barak, "Opening the black box", Neural Computation 2013, Sec. 3.1.
    """
    T = check_positive_int("seq_len", 100 if seq_len is None else seq_len)
    n_bits = check_positive_int("n_bits", n_bits)
    eval_size = check_positive_int("eval_size", eval_size)
    if isinstance(pulse_prob, bool) or not isinstance(pulse_prob, (int, float)) or not 0 < pulse_prob < 1:
        raise ValueError(f"pulse_prob: expected a probability in (0, 1), got {pulse_prob!r}")
    pulse_prob = float(pulse_prob)
    sample = _flipflop_sampler(T, n_bits, pulse_prob)
    baseline = flipflop_baseline(T, pulse_prob)
    return Task(
        name="flipflop",
        pattern="many_to_many",
        input_size=n_bits,
        output_size=n_bits,
        loss="mse",
        sample=sample,
        eval_batch=_fixed(sample, seed, eval_size),
        baseline_loss=baseline,
        info={"seq_len": T, "n_bits": n_bits, "pulse_prob": pulse_prob, "memories": 2 ** n_bits,
              "baseline": f"predict 0: 1 - (1 - p)(1 - (1 - p)^T) / (p T) = {baseline:.4f}"},
    )

