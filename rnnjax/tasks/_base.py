"""The task interface: data generated from explicit keys or shipped in packages.

A task yields ``Batch`` values (``rnnjax._batch``, re-exported as ``rnnjax.tasks.Batch``)
for one of the model patterns ``rnnjax.tasks.PATTERNS``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax

from rnnjax._batch import Batch


class Task(NamedTuple):
    """A learning problem.

    Attributes:
      name: registry name (``"adding"``, ``"copy"``, ...).
      pattern: one of ``rnnjax.tasks.PATTERNS``.
      input_size: I, width of each input step (vocabulary size V for token tasks,
        whose inputs are ``(B, T)`` int32 ids read one-hot or through an embedding).
      output_size: O, regression width or number of classes.
      loss: ``"mse"`` (float targets), ``"xent"`` (int class targets) or ``"bce"``
        (0/1 float targets, independent Bernoulli outputs, e.g. piano-roll pitches).
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
