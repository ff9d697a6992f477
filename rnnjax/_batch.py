"""The batch type shared by tasks (which produce batches) and models (which consume them)."""

from __future__ import annotations

from typing import NamedTuple

import jax

PATTERNS = ("many_to_one", "many_to_many", "one_to_many", "seq2seq")


class Batch(NamedTuple):
    """One batch. Shapes by ``Task.pattern`` (B batch, T time, I input_size, O output_size):

    - many_to_one: ``inputs (B, T, I)``; ``targets (B,)`` int class or ``(B, O)`` float.
    - many_to_many: ``inputs (B, T, I)``; ``targets (B, T)`` int or ``(B, T, O)`` float.
    - token tasks (``sentiment``, ``wordlm``): ``inputs (B, T)`` int32 ids in ``[0, V)`` instead of
      ``(B, T, I)`` vectors (``rnnjax.models.read_tokens``).
    - one_to_many: ``inputs (B, I)`` one vector; ``targets (B, T)`` int or ``(B, T, O)``.
    - seq2seq: ``inputs (B, T_in, I)``; ``targets (B, T_out)`` int tokens or ``(B, T_out, O)``.

    ``input_lengths``/``target_lengths`` are ``(B,)`` int valid steps, or None
    when every sequence uses the full length. Padded steps are masked in losses.
    """

    inputs: jax.Array
    targets: jax.Array
    input_lengths: jax.Array | None = None
    target_lengths: jax.Array | None = None


__all__ = ["PATTERNS", "Batch"]
