"""Synthetic tasks generated on the fly from explicit PRNG keys.

Every ``sample(key, batch_size)`` here is a pure function of the key (jittable,
``batch_size`` static); every ``eval_batch()`` returns a fixed set drawn once
from a key derived from the task's ``seed``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from rnnjax._batch import Batch
from rnnjax.tasks._base import Task

_EVAL_SALT = 0x5EED  # eval keys are fold_in(key(seed), salt): never equal to a training key from key(seed)


def eval_key(seed: int) -> jax.Array:
    """The key from which a synthetic task draws its fixed evaluation set."""
    return jax.random.fold_in(jax.random.key(seed), _EVAL_SALT)


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise ``ValueError`` naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _cached_sampler(make):
    """Memoise a sampler factory on its (static) configuration and jit what it returns.

    ``make(*config)`` returns ``sample(key, batch_size) -> Batch``; the result is
    ``jax.jit(sample, static_argnums=1)``, built once per distinct ``config`` so tasks
    rebuilt with the same settings (another seed, another ``get_task`` call) reuse
    the compiled sampler instead of compiling it again. An unhashable ``config``
    (e.g. an array) is built afresh each time.
    """
    def build(*config):
        return jax.jit(make(*config), static_argnums=1)

    cached = functools.lru_cache(maxsize=64, typed=True)(build)

    def sampler(*config):
        try:
            hash(config)
        except TypeError:
            return build(*config)
        return cached(*config)

    return sampler


def _fixed(sample, seed: int, eval_size: int):
    """Return ``eval_batch() -> Batch``: ``sample(eval_key(seed), eval_size)``, drawn on first use and kept.

    The set is computed with ``jax.ensure_compile_time_eval`` so that a first call
    inside a ``jax.jit`` trace still yields (and stores) concrete arrays.
    """
    memo = []

    def eval_batch() -> Batch:
        if not memo:
            with jax.ensure_compile_time_eval():
                memo.append(jax.tree.map(jnp.asarray, sample(eval_key(seed), eval_size)))
        return memo[0]

    return eval_batch


# --------------------------------------------------------------------------------------------- adding
@_cached_sampler
def _adding_sampler(T, lo, variable_length):
    def sample(key: jax.Array, batch_size: int) -> Batch:
        k_val, k_len, k_a, k_b = jax.random.split(key, 4)
        values = jax.random.uniform(k_val, (batch_size, T), jnp.float32)
        lengths = jax.random.randint(k_len, (batch_size,), lo, T + 1) if variable_length else jnp.full((batch_size,), T)
        half = lengths // 2
        # first marker uniform in [0, half), second uniform in [half, length)
        a = jnp.floor(jax.random.uniform(k_a, (batch_size,)) * half).astype(jnp.int32)
        b = half + jnp.floor(jax.random.uniform(k_b, (batch_size,)) * (lengths - half)).astype(jnp.int32)
        t = jnp.arange(T)
        marker = ((t == a[:, None]) | (t == b[:, None])).astype(jnp.float32)
        valid = (t < lengths[:, None]).astype(jnp.float32)
        values = values * valid
        inputs = jnp.stack([values, marker], axis=-1)
        targets = jnp.sum(values * marker, axis=1, keepdims=True)
        return Batch(inputs, targets, lengths.astype(jnp.int32) if variable_length else None, None)

    return sample


def adding(seq_len: int | None = None, seed: int = 0, *, variable_length: bool = False, min_len: int | None = None,
           eval_size: int = 1000) -> Task:
    """The adding problem (many-to-one regression).

    Each step has two channels: a value ``u_t ~ U(0, 1)`` and a marker that is 1 at
    exactly two steps (one uniformly in the first half of the valid steps, one in the
    second half) and 0 elsewhere. The target is the sum of the two marked values.
    Predicting the constant mean 1 gives MSE = Var(u_a + u_b) = 2/12 = **1/6**.

    Args:
      seq_len: T, number of steps (default 50).
      seed: fixes the evaluation set.
      variable_length: if True, each sequence has a valid length drawn uniformly from
        ``[min_len, T]`` (``input_lengths`` set; padded steps are zero, markers lie in
        the valid part).
      min_len: shortest valid length when ``variable_length`` (default ``T // 2``, at least 2).
      eval_size: number of evaluation sequences.

    Returns:
      A ``Task`` with ``inputs (B, T, 2)`` float32, ``targets (B, 1)`` float32, loss ``"mse"``.

    References:
      Hochreiter & Schmidhuber (1997), Long short-term memory, experiment 4.
    """
    T = check_positive_int("seq_len", 50 if seq_len is None else seq_len, 2)
    eval_size = check_positive_int("eval_size", eval_size)
    if variable_length:
        lo = max(2, T // 2) if min_len is None else check_positive_int("min_len", min_len, 2)
        if lo > T:
            raise ValueError(f"min_len: expected at most seq_len={T}, got {lo}")
    else:
        lo = T

    sample = _adding_sampler(T, lo, variable_length)
    return Task(
        name="adding",
        pattern="many_to_one",
        input_size=2,
        output_size=1,
        loss="mse",
        sample=sample,
        eval_batch=_fixed(sample, seed, eval_size),
        baseline_loss=1.0 / 6.0,
        info={"seq_len": T, "variable_length": variable_length, "min_len": lo,
              "baseline": "predict the mean 1.0: MSE = Var(u_a + u_b) = 1/6"},
    )


# ----------------------------------------------------------------------------------------------- copy
@_cached_sampler
def _copy_sampler(T, n_symbols, n_copy):
    length = T + 2 * n_copy
    vocab = n_symbols + 2

    def sample(key: jax.Array, batch_size: int) -> Batch:
        data = jax.random.randint(key, (batch_size, n_copy), 1, n_symbols + 1, dtype=jnp.int32)
        tokens = jnp.zeros((batch_size, length), jnp.int32)
        tokens = tokens.at[:, :n_copy].set(data).at[:, T + n_copy - 1].set(n_symbols + 1)
        targets = jnp.zeros((batch_size, length), jnp.int32).at[:, T + n_copy:].set(data)
        return Batch(jax.nn.one_hot(tokens, vocab, dtype=jnp.float32), targets)

    return sample


def copy_memory(seq_len: int | None = None, seed: int = 0, *, n_symbols: int = 8, n_copy: int = 10,
         eval_size: int = 500) -> Task:
    """The copy-memory task (many-to-many classification).

    Alphabet: 0 = blank, ``1..n_symbols`` = data, ``n_symbols + 1`` = delimiter. The
    input is ``n_copy`` random data symbols, ``T - 1`` blanks, the delimiter and
    ``n_copy`` blanks (length ``T + 2 n_copy``); the target is ``T + n_copy`` blanks
    followed by the ``n_copy`` data symbols. The memoryless strategy (blanks, then a
    uniform guess) scores the baseline cross-entropy ``n_copy log(n_symbols) / (T + 2 n_copy)``
    (``10 log 8 / (T + 20)`` for the defaults).

    Args:
      seq_len: T, the delay between the data and the delimiter (default 20); the
        sequences have ``T + 2 n_copy`` steps.
      seed: fixes the evaluation set.
      n_symbols: number of data symbols (8).
      n_copy: number of symbols to remember (10).
      eval_size: number of evaluation sequences.

    Returns:
      A ``Task``: ``inputs (B, T + 2 n_copy, n_symbols + 2)`` one-hot float32,
      ``targets (B, T + 2 n_copy)`` int32 in ``[0, n_symbols]``; loss ``"xent"``
      with ``output_size = n_symbols + 1``.

    References:
      Arjovsky, Shah & Bengio (2016), Unitary evolution recurrent neural networks, §4.1.
    """
    T = check_positive_int("seq_len", 20 if seq_len is None else seq_len)
    n_symbols = check_positive_int("n_symbols", n_symbols, 2)
    n_copy = check_positive_int("n_copy", n_copy)
    eval_size = check_positive_int("eval_size", eval_size)
    length = T + 2 * n_copy
    vocab = n_symbols + 2

    sample = _copy_sampler(T, n_symbols, n_copy)
    return Task(
        name="copy",
        pattern="many_to_many",
        input_size=vocab,
        output_size=n_symbols + 1,
        loss="xent",
        sample=sample,
        eval_batch=_fixed(sample, seed, eval_size),
        baseline_loss=n_copy * math.log(n_symbols) / length,
        info={"seq_len": T, "total_length": length, "n_symbols": n_symbols, "n_copy": n_copy,
              "blank": 0, "delimiter": n_symbols + 1,
              "baseline": f"memoryless: blanks then a uniform guess, {n_copy} log {n_symbols} / (T + {2 * n_copy})"},
    )


# ---------------------------------------------------------------------------------------------- sines
@_cached_sampler
def _sines_sampler(T, n_waves, noise, min_freq, max_freq):
    def sample(key: jax.Array, batch_size: int) -> Batch:
        k_a, k_w, k_p, k_n = jax.random.split(key, 4)
        shape = (batch_size, 1, n_waves)
        amp = jax.random.uniform(k_a, shape, jnp.float32, 0.2, 1.0)
        freq = jax.random.uniform(k_w, shape, jnp.float32, min_freq, max_freq)
        phase = jax.random.uniform(k_p, shape, jnp.float32, 0.0, 2 * math.pi)
        t = jnp.arange(T + 1, dtype=jnp.float32)[None, :, None]
        clean = jnp.sum(amp * jnp.sin(freq * t + phase), axis=-1)  # (B, T + 1)
        observed = clean[:, :T] + noise * jax.random.normal(k_n, (batch_size, T), jnp.float32)
        return Batch(observed[..., None], clean[:, 1:, None])

    return sample


def sines(seq_len: int | None = None, seed: int = 0, *, n_waves: int = 3, noise: float = 0.1,
          min_freq: float = 0.05, max_freq: float = 0.5, eval_size: int = 500) -> Task:
    """One-step forecasting of a noisy sum of sines (many-to-many regression).

    Each sequence has its own ``n_waves`` components,
    ``s_t = sum_k a_k sin(w_k t + phi_k)`` with ``a_k ~ U(0.2, 1)``,
    ``w_k ~ U(min_freq, max_freq)`` rad/step, ``phi_k ~ U(0, 2 pi)``; the input is the
    noisy observation ``x_t = s_t + noise * eps_t`` and the target is the clean next
    value ``s_{t+1}``. The baseline is "predict the last observation", in closed form
    ``E[(x_t - s_{t+1})^2] = noise^2 + n_waves E[a^2] (1 - E[cos w])`` with
    ``E[a^2] = 31/75`` and ``E[cos w] = (sin max_freq - sin min_freq) / (max_freq - min_freq)``
    (as ``E_phi[(sin(wt + w + phi) - sin(wt + phi))^2] = 1 - cos w``);
    ``info["zero_baseline"]`` is the zero predictor's ``E[s^2] = n_waves * 31/150``.

    Args:
      seq_len: T (default 100).
      seed: fixes the evaluation set.
      n_waves: sinusoids per sequence.
      noise: observation noise standard deviation.
      min_freq, max_freq: angular-frequency range in radians per step.
      eval_size: number of evaluation sequences.

    Returns:
      A ``Task``: ``inputs (B, T, 1)``, ``targets (B, T, 1)`` float32, loss ``"mse"``.
    """
    T = check_positive_int("seq_len", 100 if seq_len is None else seq_len)
    n_waves = check_positive_int("n_waves", n_waves)
    eval_size = check_positive_int("eval_size", eval_size)
    if not noise >= 0:
        raise ValueError(f"noise: expected a non-negative number, got {noise!r}")
    if not 0 < min_freq <= max_freq:
        raise ValueError(f"min_freq, max_freq: expected 0 < min_freq <= max_freq, got {min_freq!r}, {max_freq!r}")

    mean_sq_amp = (1 - 0.2**3) / (3 * 0.8)  # E[a^2] for a ~ U(0.2, 1) = 31/75
    if max_freq > min_freq:  # E[cos w] for w ~ U(min_freq, max_freq)
        mean_cos = (math.sin(max_freq) - math.sin(min_freq)) / (max_freq - min_freq)
    else:
        mean_cos = math.cos(min_freq)
    last_value = noise**2 + n_waves * mean_sq_amp * (1 - mean_cos)
    sample = _sines_sampler(T, n_waves, noise, min_freq, max_freq)
    return Task(
        name="sines",
        pattern="many_to_many",
        input_size=1,
        output_size=1,
        loss="mse",
        sample=sample,
        eval_batch=_fixed(sample, seed, eval_size),
        baseline_loss=last_value,
        info={"seq_len": T, "n_waves": n_waves, "noise": noise, "min_freq": min_freq, "max_freq": max_freq,
              "zero_baseline": n_waves * 31.0 / 150.0,
              "baseline": "predict the last observation x_t for s_{t+1} (closed form)"},
    )


# -------------------------------------------------------------------------------------------- reverse
@_cached_sampler
def _reverse_sampler(T, vocab_size, min_len):
    def sample(key: jax.Array, batch_size: int) -> Batch:
        k_tok, k_len = jax.random.split(key)
        tokens = jax.random.randint(k_tok, (batch_size, T), 0, vocab_size, dtype=jnp.int32)
        lengths = jax.random.randint(k_len, (batch_size,), min_len, T + 1, dtype=jnp.int32)
        t = jnp.arange(T)
        valid = t < lengths[:, None]
        tokens = jnp.where(valid, tokens, 0)
        src = jnp.clip(lengths[:, None] - 1 - t, 0, T - 1)
        targets = jnp.where(valid, jnp.take_along_axis(tokens, src, axis=1), 0)
        inputs = jax.nn.one_hot(tokens, vocab_size, dtype=jnp.float32) * valid[..., None]
        return Batch(inputs, targets, lengths, lengths)

    return sample


def reverse(seq_len: int | None = None, seed: int = 0, *, vocab_size: int = 8, min_len: int = 2,
            eval_size: int = 500) -> Task:
    """Reverse a random token sequence of variable length (encoder–decoder).

    Each sequence has ``L ~ U{min_len, ..., T}`` tokens drawn uniformly from
    ``vocab_size`` symbols; the target is the same tokens in reverse order. Steps at or
    beyond ``L`` are padding (zero input vectors, target token 0) and are masked by
    ``input_lengths``/``target_lengths`` (both equal ``L``). Baseline: a uniform guess,
    cross-entropy ``log(vocab_size)`` (accuracy ``1 / vocab_size``).

    Args:
      seq_len: T, the longest sequence (default 10).
      seed: fixes the evaluation set.
      vocab_size: number of symbols V.
      min_len: shortest sequence.
      eval_size: number of evaluation sequences.

    Returns:
      A ``Task`` with pattern ``"seq2seq"``: ``inputs (B, T, V)`` one-hot float32,
      ``targets (B, T)`` int32, ``input_lengths = target_lengths (B,)`` int32.
    """
    T = check_positive_int("seq_len", 10 if seq_len is None else seq_len)
    vocab_size = check_positive_int("vocab_size", vocab_size, 2)
    min_len = check_positive_int("min_len", min_len)
    eval_size = check_positive_int("eval_size", eval_size)
    if min_len > T:
        raise ValueError(f"min_len: expected at most seq_len={T}, got {min_len}")

    sample = _reverse_sampler(T, vocab_size, min_len)
    return Task(
        name="reverse",
        pattern="seq2seq",
        input_size=vocab_size,
        output_size=vocab_size,
        loss="xent",
        sample=sample,
        eval_batch=_fixed(sample, seed, eval_size),
        baseline_loss=math.log(vocab_size),
        info={"seq_len": T, "vocab_size": vocab_size, "min_len": min_len, "pad_target": 0,
              "baseline": "uniform guess: log(vocab_size)"},
    )


# ------------------------------------------------------------------------------------------- sinegen
@_cached_sampler
def _sinegen_sampler(T, min_freq, max_freq):
    def sample(key: jax.Array, batch_size: int) -> Batch:
        k_w, k_p = jax.random.split(key)
        freq = jax.random.uniform(k_w, (batch_size,), jnp.float32, min_freq, max_freq)
        phase = jax.random.uniform(k_p, (batch_size,), jnp.float32, 0.0, 2 * math.pi)
        code = 2 * (freq - min_freq) / (max_freq - min_freq) - 1
        inputs = jnp.stack([code, jnp.sin(phase), jnp.cos(phase)], axis=-1)
        t = jnp.arange(T, dtype=jnp.float32)
        targets = jnp.sin(freq[:, None] * t + phase[:, None])[..., None]
        return Batch(inputs, targets)

    return sample


def sinegen(seq_len: int | None = None, seed: int = 0, *, min_freq: float = 0.1, max_freq: float = 0.5,
            eval_size: int = 500) -> Task:
    """Generate a sine wave from one vector (one-to-many regression).

    The input vector is ``(2 (w - min_freq) / (max_freq - min_freq) - 1, sin phi, cos phi)``
    for ``w ~ U(min_freq, max_freq)`` rad/step and ``phi ~ U(0, 2 pi)``; the target is
    ``y_t = sin(w t + phi)``, ``t = 0..T-1``. Predicting zero scores the baseline MSE
    ``E[sin^2] = 1/2`` (exact for every t, as the phase is uniform).

    Args:
      seq_len: T, steps to generate (default 50).
      seed: fixes the evaluation set.
      min_freq, max_freq: angular-frequency range in radians per step.
      eval_size: number of evaluation sequences.

    Returns:
      A ``Task`` with pattern ``"one_to_many"``: ``inputs (B, 3)``, ``targets (B, T, 1)`` float32.
    """
    T = check_positive_int("seq_len", 50 if seq_len is None else seq_len)
    eval_size = check_positive_int("eval_size", eval_size)
    if not 0 < min_freq < max_freq:
        raise ValueError(f"min_freq, max_freq: expected 0 < min_freq < max_freq, got {min_freq!r}, {max_freq!r}")

    sample = _sinegen_sampler(T, min_freq, max_freq)
    return Task(
        name="sinegen",
        pattern="one_to_many",
        input_size=3,
        output_size=1,
        loss="mse",
        sample=sample,
        eval_batch=_fixed(sample, seed, eval_size),
        baseline_loss=0.5,
        info={"seq_len": T, "min_freq": min_freq, "max_freq": max_freq,
              "baseline": "predict zero: E[sin^2(w t + phi)] = 1/2"},
    )
