"""The task interface: data generated from explicit keys or shipped in packages."""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax

PATTERNS = ("many_to_one", "many_to_many", "one_to_many", "seq2seq")


class Batch(NamedTuple):
    """One batch. Shapes by ``Task.pattern`` (B batch, T time, I input_size, O output_size):

    - many_to_one: ``inputs (B, T, I)``; ``targets (B,)`` int class or ``(B, O)`` float.
    - many_to_many: ``inputs (B, T, I)``; ``targets (B, T)`` int or ``(B, T, O)`` float.
    - one_to_many: ``inputs (B, I)`` one vector; ``targets (B, T)`` int or ``(B, T, O)``.
    - seq2seq: ``inputs (B, T_in, I)``; ``targets (B, T_out)`` int tokens or ``(B, T_out, O)``.

    ``input_lengths``/``target_lengths`` are ``(B,)`` int valid steps, or None
    when every sequence uses the full length. Padded steps are masked in losses.
    """

    inputs: jax.Array
    targets: jax.Array
    input_lengths: jax.Array | None = None
    target_lengths: jax.Array | None = None


class Task(NamedTuple):
    """A learning problem.

    Attributes:
      name: registry name (``"adding"``, ``"copy"``, ...).
      pattern: one of ``PATTERNS``.
      input_size: I, width of each input step (vocabulary size for one-hot tokens).
      output_size: O, regression width or number of classes.
      loss: ``"mse"`` (float targets) or ``"xent"`` (int class targets).
      sample: ``sample(key, batch_size) -> Batch``, pure and jittable
        (``batch_size`` static): a fresh training batch.
      eval_batch: ``eval_batch() -> Batch``, the fixed evaluation set (test split).
      baseline_loss: loss of the trivial predictor (e.g. 1/6 for adding), or None.
      info: extra facts (vocabulary, sequence length, decode function...).
      stream: optional, for contiguous streams (char-LM with truncated BPTT
        across batches): ``stream(key, batch_size) -> (init_state, next)``,
        with ``next(state) -> (state, Batch)`` pure and jittable; consecutive
        batches continue each row's text where the previous batch stopped.
    """

    name: str
    pattern: str
    input_size: int
    output_size: int
    loss: str
    sample: Callable[[jax.Array, int], Batch]
    eval_batch: Callable[[], Batch]
    baseline_loss: float | None = None
    info: Mapping[str, Any] = {}
    stream: Callable | None = None
