"""Classification tasks on data shipped inside installed packages (no download).

- ``digits``: scikit-learn's 8x8 handwritten digits (1797 images) read as sequences.
- ``mnist1d``: the MNIST-1D data set, generated from the templates inside the
  ``mnist1d`` package with its ``make_dataset`` (never its downloader).

The data live as device arrays inside the task's closures; ``sample`` draws a
random mini-batch (with replacement) from the training split and ``eval_batch``
returns the whole fixed test split.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._batch import Batch
from rnnjax.tasks._base import Task


def _classification_task(name, x_train, y_train, x_test, y_test, info) -> Task:
    """A many-to-one task over fixed arrays ``x: (N, T, I)``, ``y: (N,)``."""
    x_train = jnp.asarray(x_train, jnp.float32)
    y_train = jnp.asarray(y_train, jnp.int32)
    test = Batch(jnp.asarray(x_test, jnp.float32), jnp.asarray(y_test, jnp.int32))
    n_train = x_train.shape[0]
    n_classes = int(max(y_train.max(), test.targets.max())) + 1

    def sample(key: jax.Array, batch_size: int) -> Batch:
        idx = jax.random.randint(key, (batch_size,), 0, n_train)
        return Batch(x_train[idx], y_train[idx])

    sample = jax.jit(sample, static_argnums=1)

    def eval_batch() -> Batch:
        return test

    def train_batch() -> Batch:
        return Batch(x_train, y_train)

    return Task(
        name=name,
        pattern="many_to_one",
        input_size=x_train.shape[2],
        output_size=n_classes,
        loss="xent",
        sample=sample,
        eval_batch=eval_batch,
        baseline_loss=math.log(n_classes),
        info={**info, "seq_len": x_train.shape[1], "train_size": n_train, "test_size": test.inputs.shape[0],
              "train_batch": train_batch, "baseline": f"uniform guess: log({n_classes})"},
    )


# --------------------------------------------------------------------------------------------- digits
@functools.lru_cache(maxsize=1)
def _load_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float32) / 16.0, d.target.astype(np.int32)


def digits(seq_len: int | None = None, seed: int = 0, *, test_fraction: float = 0.2) -> Task:
    """scikit-learn's handwritten digits as sequences (many-to-one, 10 classes).

    The 1797 8x8 images (pixel values 0..16, scaled to [0, 1]) are read either row by
    row (``seq_len=8``: 8 steps of 8 pixels) or pixel by pixel (``seq_len=64``: 64
    steps of 1 pixel). The train/test split is a fixed random permutation
    (``numpy.random.default_rng(0)``), the same for every ``seed``, so results are
    comparable across seeds; ``test_fraction`` of the images (360 by default) form
    the test set. Baseline: a uniform guess, ``log 10``.

    Args:
      seq_len: 8 (rows, the default) or 64 (pixels).
      seed: unused (the split is fixed); accepted for a uniform interface.
      test_fraction: share of images held out for testing, in (0, 1).

    Returns:
      A ``Task``: ``inputs (B, 8, 8)`` or ``(B, 64, 1)`` float32, ``targets (B,)`` int32.
    """
    del seed
    if seq_len not in (None, 8, 64):
        raise ValueError(f"seq_len: digits has 8 steps (rows) or 64 steps (pixels), got {seq_len!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
    x, y = _load_digits()
    T = 8 if seq_len is None else seq_len
    x = x.reshape(-1, T, 64 // T)
    perm = np.random.default_rng(0).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    test, train = perm[:n_test], perm[n_test:]
    return _classification_task(
        "digits", x[train], y[train], x[test], y[test],
        {"layout": "rows" if T == 8 else "pixels", "source": "sklearn.datasets.load_digits"},
    )


# -------------------------------------------------------------------------------------------- mnist1d
@functools.lru_cache(maxsize=4)
def _make_mnist1d(data_seed: int):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = data_seed
    state = np.random.get_state()  # make_dataset seeds NumPy's global RNG; leave it as we found it
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    return (d["x"].astype(np.float32), d["y"].astype(np.int32), d["x_test"].astype(np.float32),
            d["y_test"].astype(np.int32))


def mnist1d(seq_len: int | None = None, seed: int = 0, *, data_seed: int = 42) -> Task:
    """MNIST-1D (many-to-one, 10 classes): 4000 training and 1000 test sequences of length 40.

    Generated in-process from the templates inside the ``mnist1d`` package with
    ``make_dataset(get_dataset_args())`` (a few seconds, memoised per process; NumPy's
    global RNG state is restored afterwards). ``data_seed=42`` is the package default,
    i.e. the published data set. Baseline: a uniform guess, ``log 10``.

    Args:
      seq_len: must be None or 40.
      seed: unused (the data set is fixed by ``data_seed``); accepted for a uniform interface.
      data_seed: the generator seed of ``make_dataset``.

    Returns:
      A ``Task``: ``inputs (B, 40, 1)`` float32, ``targets (B,)`` int32.

    References:
      Greydanus (2020), Scaling down deep learning (MNIST-1D).
    """
    del seed
    if seq_len not in (None, 40):
        raise ValueError(f"seq_len: mnist1d sequences have 40 steps, got {seq_len!r}")
    x, y, x_test, y_test = _make_mnist1d(int(data_seed))
    return _classification_task("mnist1d", x[..., None], y, x_test[..., None], y_test,
                                {"data_seed": data_seed, "source": "mnist1d.data.make_dataset"})
