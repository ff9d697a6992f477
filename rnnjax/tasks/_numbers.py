"""Translation of numbers written in digits into words (English or French), with ``num2words``.

A small machine-translation problem whose source and target have different lengths and
orders (``4021`` -> ``quatre mille vingt et un``, ``71`` -> ``soixante et onze``), generated
by the PyPI package ``num2words``; nothing is downloaded.
"""

from __future__ import annotations

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._batch import Batch
from rnnjax.tasks._base import Task
from rnnjax.tasks._synthetic import check_positive_int

LANGUAGES = ("en", "fr")
EOS, UNK = 0, 1
_WORD = re.compile(r"[^\s,-]+|[,-]")


def number_words(n: int, lang: str) -> list[str]:
    """``num2words(n, lang=lang)`` split into words, hyphens and commas: ``21, "en"`` -> ``["twenty", "-", "one"]``."""
    from num2words import num2words

    return _WORD.findall(num2words(int(n), lang=lang))


@functools.lru_cache(maxsize=8)
def _words(numbers: tuple[int, ...], lang: str) -> dict:
    return {n: tuple(number_words(n, lang)) for n in numbers}


def draw_numbers(max_number: int, count: int | None, seed: int) -> np.ndarray:
    """The sorted numbers of the task: all of ``0..max_number`` (``count`` None), or ``count`` distinct ones.

    With a ``count``, each draw picks a digit count ``d`` uniformly from ``1..len(str(max_number))``
    and then a number with ``d`` digits uniformly (at most ``max_number``), repeated until
    ``count`` distinct numbers are drawn, so every input length is about equally represented
    (lengths with fewer numbers than their share, such as the ten one-digit numbers, are all taken).
    """
    if count is None:
        return np.arange(max_number + 1)
    rng = np.random.default_rng([seed, 1])
    top = len(str(max_number))
    chosen: set[int] = set()
    capacity = max_number + 1
    while len(chosen) < min(count, capacity):
        d = rng.integers(1, top + 1, size=count)
        low = np.where(d == 1, 0, 10 ** (d - 1))
        high = np.minimum(10**d, max_number + 1)
        chosen.update((low + (rng.random(count) * (high - low)).astype(np.int64)).tolist())
    out = np.array(sorted(chosen), np.int64)
    if len(out) > count:  # trim at random, keeping the drawn length mix
        out = np.sort(rng.choice(out, count, replace=False))
    return out


def split_numbers(numbers: np.ndarray, eval_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, eval)``: sorted disjoint parts of ``numbers``, a seeded random ``eval_fraction`` held out."""
    order = np.random.default_rng(seed).permutation(len(numbers))
    n_eval = max(1, int(round(eval_fraction * len(numbers))))
    return np.sort(numbers[order[n_eval:]]), np.sort(numbers[order[:n_eval]])


def numbers(seq_len: int | None = None, seed: int = 0, *, lang: str = "en", max_number: int = 9999,
            count: int | None = None, eval_fraction: float = 0.2) -> Task:
    """Numbers in digits -> the same numbers in words (encoder–decoder, different lengths).

    The numbers ``0..max_number`` (or ``count`` of them with uniformly distributed digit
    counts, ``draw_numbers``) are split at random (``seed``) into evaluation numbers
    (``eval_fraction`` of them) and training numbers, so every evaluated number is unseen in
    training. The source is the decimal digits (one-hot, width 10, ``input_lengths`` = number of
    digits); the target is ``num2words(n, lang)`` split into words, hyphens and commas
    (``number_words``), then ``<eos>``: ``target_lengths`` = words + 1, so a decoding is right
    only if it also stops. Target vocabulary: ``<eos>`` (id 0, also the padding), ``<unk>``
    (id 1), then the words of the training targets, sorted. ``sample`` draws training numbers
    uniformly (without ``count``: mostly the longest); the evaluation set is every evaluation number.
    Baseline: ``log`` of the target vocabulary size (a uniform guess).

    Args:
      seq_len: T_in, digits of the longest number; must be None or ``len(str(max_number))``.
      seed: fixes the split of the numbers.
      lang: ``"en"`` or ``"fr"``.
      max_number: largest number (``num2words`` takes about 0.25 ms a number; the word lists are cached).
      count: how many distinct numbers to use (``draw_numbers``), or None for all of ``0..max_number``.
      eval_fraction: share of the numbers held out, in (0, 1).

    Returns:
      A ``Task`` with pattern ``"seq2seq"``: ``inputs (B, T_in, 10)`` one-hot float32 (zeros
      after the last digit), ``targets (B, T_out)`` int32, ``input_lengths``,
      ``target_lengths (B,)`` int32. ``info``: ``vocab``, ``decode(ids) -> str`` (up to
      ``<eos>``), ``train_numbers``, ``eval_numbers``, ``eval_digits (N,)`` (digits of each
      evaluation number, to score by input length), ``max_target_len``.
    """
    if lang not in LANGUAGES:
        raise ValueError(f"lang: expected one of {LANGUAGES}, got {lang!r}")
    max_number = check_positive_int("max_number", max_number, 9)
    digits = len(str(max_number))
    if seq_len is not None and seq_len != digits:
        raise ValueError(f"seq_len: numbers up to {max_number} have {digits} digits; pass None or {digits}, "
                         f"got {seq_len!r}")
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction: expected a number in (0, 1), got {eval_fraction!r}")
    if count is not None:
        count = check_positive_int("count", count, 2)
    elif max_number > 999_999:
        raise ValueError(f"count: numbers up to {max_number} need a count (how many to draw), got None")
    pool = draw_numbers(max_number, count, seed)
    words = _words(tuple(pool.tolist()), lang)
    train_n, eval_n = split_numbers(pool, eval_fraction, seed)
    vocab = ("<eos>", "<unk>") + tuple(sorted({w for n in train_n for w in words[n]}))
    index = {w: i for i, w in enumerate(vocab)}
    T_out = max(len(w) for w in words.values()) + 1

    def arrays(ns):
        src = np.zeros((len(ns), digits), np.int32)
        src_len = np.zeros(len(ns), np.int32)
        tgt = np.full((len(ns), T_out), EOS, np.int32)
        tgt_len = np.zeros(len(ns), np.int32)
        for row, n in enumerate(ns):
            d = [int(c) for c in str(int(n))]
            src[row, : len(d)] = d
            src_len[row] = len(d)
            ids = [index.get(w, UNK) for w in words[n]]
            tgt[row, : len(ids)] = ids
            tgt_len[row] = len(ids) + 1  # the <eos> after the last word
        return src, src_len, tgt, tgt_len

    def one_hot(src, src_len):
        valid = jnp.arange(digits)[None, :] < src_len[:, None]
        return jax.nn.one_hot(src, 10, dtype=jnp.float32) * valid[..., None]

    s, sl, t, tl = (jnp.asarray(a) for a in arrays(train_n))
    es, esl, et, etl = arrays(eval_n)
    eval_set = Batch(one_hot(jnp.asarray(es), jnp.asarray(esl)), jnp.asarray(et), jnp.asarray(esl),
                     jnp.asarray(etl))
    n_train = len(train_n)

    def sample(key: jax.Array, batch_size: int) -> Batch:
        i = jax.random.randint(key, (batch_size,), 0, n_train)
        return Batch(one_hot(s[i], sl[i]), t[i], sl[i], tl[i])

    sample = jax.jit(sample, static_argnums=1)

    def decode(ids) -> str:
        out = []
        for i in np.asarray(ids).reshape(-1):
            if int(i) == EOS:
                break
            out.append(vocab[int(i)])
        return " ".join(out).replace(" - ", "-").replace(" ,", ",")

    return Task(
        name="numbers",
        pattern="seq2seq",
        input_size=10,
        output_size=len(vocab),
        loss="xent",
        sample=sample,
        eval_batch=lambda: eval_set,
        baseline_loss=math.log(len(vocab)),
        info={"seq_len": digits, "lang": lang, "vocab": vocab, "vocab_size": len(vocab), "eos": EOS, "unk": UNK,
              "decode": decode, "train_numbers": train_n, "eval_numbers": eval_n, "eval_digits": esl,
              "max_target_len": T_out, "pad_target": EOS,
              "baseline": "uniform guess: log(target vocabulary size)"},
    )


__all__ = ["LANGUAGES", "draw_numbers", "number_words", "numbers", "split_numbers"]
